//! Replays the seed corpus of the `connection` fuzz target
//! (`proto/fuzz/corpus/connection/`) on the stable toolchain, through the
//! same driver and invariants as the fuzz target
//! (`proto/fuzz/connection_check.rs`).
//!
//! The hand-written seeds are defined below as operation lists; the corpus
//! files must be their encodings. After changing a seed or the input format,
//! regenerate them with
//! `UTP_REGEN_FUZZ_CORPUS=1 cargo test -p utp-proto --test fuzz_connection_corpus`.
//! Other files in the directory (inputs the fuzzer found) are replayed too.

use std::fs;
use std::path::{Path, PathBuf};

include!("../fuzz/connection_check.rs");

use connection_check::{check_connection, encode, Op, Setup};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/connection")
}

/// Sizes byte of `Setup`: send, receive buffer, window, packet size indexes.
const fn sizes(send: u8, recv: u8, window: u8, packet: u8) -> u8 {
    send | recv << 2 | window << 4 | packet << 6
}

/// Limits byte of `Setup`: max connections, max half open, reset rate indexes.
const fn limits(conns: u8, half_open: u8, reset_rate: u8) -> u8 {
    conns | half_open << 2 | reset_rate << 4
}

const AUTO: u8 = Setup::AUTO_ACCEPT;
const NAGLE: u8 = Setup::NAGLE;
/// 64 KiB buffers, a 256 KiB window, 1402-byte packets.
const BULK: u8 = sizes(2, 2, 3, 0);
const GENEROUS: u8 = limits(3, 3, 3);

fn setup(flags: u8, sizes: u8, limits: u8) -> Setup {
    Setup { flags, sizes, limits, seed: 7 }
}

/// Extension flags of endpoint A (`a`) and B (`b`) in the setup flags:
/// 1 = SYN data, 2 = metadata, 3 = both.
const fn ext(a: u8, b: u8) -> u8 {
    a << 4 | b << 6
}

fn secs(s: u16) -> Op {
    Op::Advance { code: 0x8000 | s }
}

/// Dials from A and completes the handshake losslessly.
fn handshake() -> Vec<Op> {
    vec![Op::Connect { ep: 0, syn_len: 0 }, Op::Quiesce]
}

/// Both sides write, read, shut down and release.
fn transfer_and_close() -> Vec<Op> {
    vec![
        Op::Write { ep: 0, conn: 0, len: 20_000 },
        Op::Run { steps: 40 },
        Op::Write { ep: 1, conn: 0, len: 5_000 },
        Op::Run { steps: 40 },
        Op::Shutdown { ep: 0, conn: 0 },
        Op::Run { steps: 10 },
        Op::Write { ep: 1, conn: 0, len: 3_000 },
        Op::Shutdown { ep: 1, conn: 0 },
        Op::Run { steps: 40 },
        Op::Read { ep: 0, conn: 0, len: 100 },
        Op::Read { ep: 1, conn: 0, len: 100 },
        Op::Release { ep: 0, conn: 0 },
        Op::Release { ep: 1, conn: 0 },
        Op::Run { steps: 100 },
    ]
}

fn lossy_steps() -> Vec<Op> {
    let mut ops = Vec::new();
    for i in 0..24u8 {
        ops.push(Op::Drop { dir: 1, idx: i.wrapping_mul(7) });
        ops.push(Op::Reorder { dir: 1, idx: i });
        ops.push(Op::Duplicate { dir: 1, idx: i.wrapping_mul(3) });
        ops.push(Op::Deliver { dir: 1, idx: i.wrapping_mul(5) });
        ops.push(Op::Deliver { dir: 0, idx: i });
        ops.push(Op::Drop { dir: 0, idx: i.wrapping_mul(11) });
        ops.push(Op::DeliverAll);
        ops.push(Op::ReadAll);
        if i % 4 == 3 {
            ops.push(Op::AdvanceToTimeout);
        }
    }
    ops
}

/// The hand-written seeds: name, setup, operations.
fn seeds() -> Vec<(&'static str, Setup, Vec<Op>)> {
    let mut seeds = Vec::new();

    let mut ops = handshake();
    ops.extend(transfer_and_close());
    seeds.push(("clean_transfer_close", setup(AUTO | NAGLE, BULK, GENEROUS), ops));

    let mut ops = vec![
        Op::Connect { ep: 1, syn_len: 0 },
        Op::Deliver { dir: 0, idx: 0 },
        Op::Decide { ep: 0, which: 0, how: 0 },
        Op::Quiesce,
    ];
    ops.extend(transfer_and_close());
    seeds.push(("manual_accept_transfer", setup(0, BULK, GENEROUS), ops));

    let ops = vec![
        Op::Connect { ep: 0, syn_len: 0 },
        Op::DeliverAll,
        Op::Decide { ep: 1, which: 0, how: 1 },
        Op::Quiesce,
        Op::Write { ep: 0, conn: 0, len: 10 },
        Op::Read { ep: 0, conn: 0, len: 10 },
        Op::Release { ep: 0, conn: 0 },
        Op::Run { steps: 10 },
    ];
    seeds.push(("refused", setup(NAGLE, BULK, GENEROUS), ops));

    let ops = vec![
        Op::Connect { ep: 0, syn_len: 0 },
        Op::DeliverAll,
        Op::Decide { ep: 1, which: 0, how: 2 },
        Op::Run { steps: 20 },
        Op::Connect { ep: 0, syn_len: 0 },
        Op::DeliverAll,
        secs(20),
        Op::Decide { ep: 1, which: 0, how: 0 },
        Op::Run { steps: 20 },
    ];
    seeds.push(("ignored_then_expired", setup(NAGLE, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 60_000 });
    ops.push(Op::Write { ep: 1, conn: 0, len: 9_000 });
    ops.extend(lossy_steps());
    ops.push(Op::Shutdown { ep: 0, conn: 0 });
    ops.extend(lossy_steps());
    ops.push(Op::Run { steps: 200 });
    seeds.push(("lossy_transfer", setup(AUTO | NAGLE, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 30_000 });
    ops.push(Op::DeliverAll);
    ops.push(Op::Reset { ep: 1, conn: 0 });
    ops.push(Op::Run { steps: 20 });
    ops.push(Op::Read { ep: 1, conn: 0, len: 65_000 });
    ops.push(Op::Write { ep: 0, conn: 0, len: 10 });
    ops.push(Op::Release { ep: 0, conn: 0 });
    ops.push(Op::Release { ep: 1, conn: 0 });
    ops.push(Op::Run { steps: 20 });
    seeds.push(("reset_mid_transfer", setup(AUTO, BULK, GENEROUS), ops));

    let mut ops = vec![Op::Connect { ep: 0, syn_len: 500 }, Op::Quiesce, Op::ReadAll];
    ops.extend(transfer_and_close());
    seeds.push(("syn_data", setup(AUTO | ext(1, 3), BULK, GENEROUS), ops.clone()));
    seeds.push(("syn_data_refused", setup(AUTO | ext(1, 0), BULK, GENEROUS), ops));

    let mut ops = handshake();
    for i in 0..6u8 {
        ops.push(Op::Write { ep: 0, conn: 0, len: 700 * u16::from(i) });
        ops.push(Op::EndMessage { ep: 0, conn: 0, meta_len: i * 50 });
        ops.push(Op::Run { steps: 4 });
    }
    ops.push(Op::EndMessage { ep: 1, conn: 0, meta_len: 3 });
    ops.extend(transfer_and_close());
    seeds.push(("metadata_messages", setup(AUTO | NAGLE | ext(2, 2), BULK, GENEROUS), ops));

    // An 8 KiB receive buffer that the application leaves full: the window
    // closes, then reopens as the application reads; the first window
    // update is lost.
    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 50_000 });
    ops.push(Op::Quiesce);
    ops.push(Op::Read { ep: 1, conn: 0, len: 8_000 });
    ops.push(Op::Drop { dir: 0, idx: 0 });
    ops.push(Op::Quiesce);
    for _ in 0..4 {
        ops.push(Op::Read { ep: 1, conn: 0, len: 3_000 });
        ops.push(Op::Quiesce);
        ops.push(Op::AdvanceToTimeout);
        ops.push(Op::Quiesce);
    }
    ops.push(Op::Run { steps: 250 });
    let flags = AUTO | NAGLE | Setup::KEEPALIVE;
    seeds.push(("zero_window", setup(flags, sizes(2, 1, 3, 0), GENEROUS), ops.clone()));
    // A receive buffer (1 KiB) smaller than a packet.
    seeds.push(("window_below_packet", setup(flags, sizes(2, 0, 3, 0), GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 8_000 });
    ops.push(Op::InjectRaw {
        ep: 1,
        from: 0,
        data: b"d1:ad2:id20:abcdefghij0123456789e1:q4:pinge".to_vec(),
    });
    ops.push(Op::InjectRaw {
        ep: 1,
        from: 1,
        data: vec![0x41, 0, 0x30, 0x39, 1, 2, 3, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0],
    });
    ops.push(Op::InjectRaw {
        ep: 0,
        from: 0,
        data: vec![0x01, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0],
    });
    ops.push(Op::Run { steps: 30 });
    seeds.push(("inject_raw", setup(AUTO | NAGLE, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 8_000 });
    ops.push(Op::DeliverAll);
    let mutations: [[u8; 16]; 6] = [
        // A RESET with the peer's numbers.
        [3, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // DATA one ahead with a payload of 40 bytes.
        [0, 1, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 40, 0, 0x55],
        // A FIN far ahead.
        [1, 100, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // STATE with a wild ack, zero window and a selective ACK.
        [2, 0, 0x80, 2, 0x09, 0, 0, 0, 0, 0xff, 0xff, 0, 0x0f, 0x40, 0x77, 0],
        // A SYN from a stranger, with extension bits.
        [4, 0, 0, 2, 0x40, b'U', b'T', b'P', b'X', 0, 1, 0, 3, 0, 0, 0],
        // Huge timestamp difference and window.
        [5, 0, 0, 2, 0x03, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0],
    ];
    for (i, m) in mutations.into_iter().enumerate() {
        let i = i as u8;
        ops.push(Op::InjectMutated { ep: i & 1, from: u8::from(i == 4), template: i, mutation: m });
        ops.push(Op::Run { steps: 5 });
    }
    ops.push(Op::Run { steps: 50 });
    seeds.push(("inject_mutated", setup(AUTO | NAGLE, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 8_000 });
    ops.push(Op::Corrupt { dir: 1, idx: 0, pos: 1, mask: 0x40 });
    ops.push(Op::Corrupt { dir: 1, idx: 1, pos: 30, mask: 0x01 });
    ops.push(Op::Corrupt { dir: 1, idx: 2, pos: 7, mask: 0xff });
    ops.push(Op::Run { steps: 60 });
    seeds.push(("corrupted", setup(AUTO | NAGLE, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 1, conn: 0, len: 100 });
    ops.push(Op::Quiesce);
    ops.push(secs(200));
    ops.push(Op::HandleTimeout { ep: 2 });
    ops.push(Op::Read { ep: 0, conn: 0, len: 1000 });
    ops.push(Op::Read { ep: 0, conn: 0, len: 1000 });
    ops.push(Op::Write { ep: 0, conn: 0, len: 100 });
    seeds.push(("idle_timeout", setup(AUTO, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 3 });
    for _ in 0..12 {
        ops.push(Op::AdvanceToTimeout);
        ops.push(Op::Quiesce);
    }
    seeds.push(("keepalive", setup(AUTO | Setup::KEEPALIVE, BULK, GENEROUS), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 12_000 });
    ops.push(Op::Write { ep: 0, conn: 0, len: 12_000 });
    ops.extend(lossy_steps());
    ops.extend(transfer_and_close());
    seeds.push(("ipv6_small_packets", setup(AUTO | Setup::IPV6, sizes(1, 1, 1, 3), GENEROUS), ops));

    let ops = vec![
        Op::Connect { ep: 0, syn_len: 0 },
        Op::Connect { ep: 1, syn_len: 0 },
        Op::Connect { ep: 0, syn_len: 0 },
        Op::DeliverAll,
        Op::Connect { ep: 1, syn_len: 0 },
        Op::Quiesce,
        Op::Write { ep: 0, conn: 0, len: 1000 },
        Op::Write { ep: 1, conn: 1, len: 1000 },
        Op::Release { ep: 1, conn: 0 },
        Op::Run { steps: 30 },
        Op::Connect { ep: 0, syn_len: 0 },
        Op::Run { steps: 30 },
    ];
    seeds.push(("connection_limit", setup(AUTO, BULK, limits(1, 0, 1)), ops));

    let mut ops =
        vec![Op::Connect { ep: 0, syn_len: 0 }, Op::Connect { ep: 1, syn_len: 0 }, Op::Quiesce];
    for conn in 0..2 {
        ops.push(Op::Write { ep: 0, conn, len: 4_000 });
        ops.push(Op::Write { ep: 1, conn, len: 4_000 });
    }
    ops.push(Op::Run { steps: 50 });
    ops.push(Op::Shutdown { ep: 0, conn: 0 });
    ops.push(Op::Reset { ep: 1, conn: 1 });
    ops.push(Op::Run { steps: 50 });
    seeds.push(("crossed_dials", setup(AUTO | NAGLE, BULK, GENEROUS), ops));

    // Everything the handshake sends is lost: SYN retransmissions, then the
    // dial times out.
    let mut ops = vec![Op::Connect { ep: 0, syn_len: 0 }];
    for _ in 0..8 {
        ops.push(Op::Drop { dir: 1, idx: 0 });
        ops.push(Op::AdvanceToTimeout);
    }
    ops.push(Op::Write { ep: 0, conn: 0, len: 10 });
    seeds.push(("dial_timeout", setup(AUTO, BULK, GENEROUS), ops));

    seeds
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir();
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
fn seed_files_match_their_definitions() {
    let regen = std::env::var_os("UTP_REGEN_FUZZ_CORPUS").is_some();
    let dir = corpus_dir();
    for (name, setup, ops) in seeds() {
        let bytes = encode(setup, &ops);
        let path = dir.join(name);
        if regen {
            fs::create_dir_all(&dir).expect("creating the corpus directory");
            fs::write(&path, &bytes).expect("writing a seed");
        }
        let on_disk = fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is out of date: regenerate with UTP_REGEN_FUZZ_CORPUS=1",
            path.display()
        );
    }
}

#[test]
fn corpus_passes_the_fuzz_checks() {
    let files = corpus();
    assert!(files.len() >= 15, "seed corpus has only {} files", files.len());
    for (name, bytes) in &files {
        let outcome = std::panic::catch_unwind(|| {
            check_connection(bytes);
        });
        assert!(outcome.is_ok(), "corpus file {name} failed the fuzz checks");
    }
}

/// The seeds do what their names say, so that the fuzzer starts from deep
/// states: data flows and is checked where a transfer is meant to happen.
#[test]
fn seeds_reach_their_states() {
    for (name, setup, ops) in seeds() {
        let driver = check_connection(&encode(setup, &ops));
        let expect_data = !matches!(
            name,
            "refused"
                | "dial_timeout"
                | "ignored_then_expired"
                | "keepalive"
                | "idle_timeout"
                // Known stall: a receive window smaller than a packet lets no
                // data through (the persist timer is never armed).
                | "window_below_packet"
        );
        let injected = name.starts_with("inject") || name == "corrupted";
        assert_eq!(driver.tainted(), injected, "{name}");
        if expect_data {
            assert!(driver.delivered > 0, "{name}: no data was read");
            if !injected {
                assert_eq!(driver.verified, driver.delivered, "{name}");
            }
        }
        assert!(driver.opened > 0, "{name}: no connection opened");
    }
}

/// Replays the corpus file named by `UTP_FUZZ_TRACE` (a path, or a name in
/// the corpus directory) printing every step: `cargo test -p utp-proto --test
/// fuzz_connection_corpus trace -- --nocapture`.
#[test]
fn trace() {
    let Some(name) = std::env::var_os("UTP_FUZZ_TRACE") else { return };
    let path = Path::new(&name);
    let path = if path.exists() { path.to_path_buf() } else { corpus_dir().join(path) };
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    connection_check::check_connection_traced(&bytes);
}
