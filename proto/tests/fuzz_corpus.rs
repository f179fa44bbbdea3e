//! Replays the seed corpus of the `parse` fuzz target (`proto/fuzz/corpus/parse/`)
//! on the stable toolchain, through the same checks as the fuzz target
//! (`proto/fuzz/check.rs`).

use std::fs;
use std::path::Path;

use utp_proto::wire::{Error, Repr};

include!("../fuzz/check.rs");

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/parse");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("file name").to_string_lossy().into_owned();
            let bytes =
                fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn seed_corpus_passes_the_fuzz_checks() {
    let files = corpus();
    assert!(files.len() >= 15, "seed corpus has only {} files", files.len());
    for (name, bytes) in &files {
        let outcome = std::panic::catch_unwind(|| check_parse(bytes));
        assert!(outcome.is_ok(), "corpus file {name} failed the fuzz checks");
    }
}

/// The corpus holds what its names say: `bad_*` files are rejected, with the
/// error the name describes, and all others parse.
#[test]
fn seed_corpus_files_are_what_their_names_say() {
    for (name, bytes) in corpus() {
        let result = Repr::parse_bytes(&bytes);
        let expected = match name.as_str() {
            "bad_nine_extensions" => Some(Error::TooManyExtensions),
            "bad_truncated_header" => Some(Error::Truncated { len: 19 }),
            "bad_version_2" => Some(Error::BadVersion(2)),
            "bad_type_5" => Some(Error::BadType(5)),
            "bad_ext_header_truncated" | "bad_ext_data_truncated" => {
                Some(Error::ExtensionTruncated { kind: 1 })
            }
            other => {
                assert!(!other.starts_with("bad_"), "{other}: no expected error listed");
                None
            }
        };
        match expected {
            Some(err) => assert_eq!(result, Err(err), "{name}"),
            None => assert!(result.is_ok(), "{name}: {result:?}"),
        }
    }
}
