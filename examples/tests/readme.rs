//! The README's libp2p example is `src/bin/readme-libp2p.rs`, compiled with
//! the crate: this test keeps the README's copy identical, so the snippet a
//! newcomer pastes is one that builds and runs.

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README")
}

/// The body of the first fenced block of `lang` after `heading`.
fn block_after(text: &str, heading: &str, lang: &str) -> String {
    let at = text.find(heading).unwrap_or_else(|| panic!("no {heading:?} in the README"));
    let fence = format!("```{lang}\n");
    let start = text[at..].find(&fence).expect("a code block") + at + fence.len();
    let len = text[start..].find("```\n").expect("the block's end");
    text[start..start + len].to_string()
}

#[test]
fn readme_libp2p_snippet_is_the_compiled_example() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/bin/readme-libp2p.rs"))
            .expect("the example");
    assert_eq!(
        block_after(&readme(), "## libp2p", "rust"),
        example,
        "README.md's libp2p snippet differs from examples/src/bin/readme-libp2p.rs"
    );
}

/// The dependency lines name every libp2p feature the snippet uses, and a
/// tokio with the runtime and `#[tokio::main]`.
#[test]
fn readme_libp2p_dependencies_cover_the_snippet() {
    let toml = block_after(&readme(), "## libp2p", "toml");
    let libp2p = toml.lines().find(|l| l.starts_with("libp2p =")).expect("a libp2p line");
    for feature in ["\"tokio\"", "\"noise\"", "\"yamux\"", "\"ping\""] {
        assert!(libp2p.contains(feature), "{feature} missing from {libp2p}");
    }
    let tokio = toml.lines().find(|l| l.starts_with("tokio =")).expect("a tokio line");
    assert!(tokio.contains("rt-multi-thread") && tokio.contains("macros"), "{tokio}");
    assert!(toml.contains("libp2p-utp = { path"), "how to depend on an unpublished crate");
}
