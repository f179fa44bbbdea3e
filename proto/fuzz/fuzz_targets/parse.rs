//! Fuzzes the packet parser: `Packet::new_checked`, every accessor,
//! `Repr::parse`, `Display`, and re-emission, which must reproduce the input
//! byte for byte. The checks live in `../check.rs`, which
//! `proto/tests/fuzz_corpus.rs` replays over the seed corpus on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../check.rs");

fuzz_target!(|data: &[u8]| check_parse(data));
