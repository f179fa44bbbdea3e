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
const LEDBAT: u8 = Setup::LEDBAT;
/// Large packets negotiated and probed for; the packet size index of
/// `sizes` picks the path (`LARGE_PATHS`).
const LARGE: u8 = Setup::LARGE;

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
    seeds.push(("clean_transfer_close", setup(AUTO | NAGLE, BULK, GENEROUS), ops.clone()));
    seeds.push(("ledbat_transfer_close", setup(AUTO | NAGLE, BULK, GENEROUS | LEDBAT), ops));

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
    seeds.push(("lossy_transfer", setup(AUTO | NAGLE, BULK, GENEROUS), ops.clone()));
    seeds.push(("ledbat_lossy_transfer", setup(AUTO | NAGLE, BULK, GENEROUS | LEDBAT), ops));

    let mut ops = handshake();
    ops.push(Op::Write { ep: 0, conn: 0, len: 30_000 });
    ops.push(Op::DeliverAll);
    ops.push(Op::Read { ep: 1, conn: 0, len: 65_000 });
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

    // A half-closes; B's data is lost, B gets A's FIN, its ACK is lost, and
    // B aborts: A must not read a clean end of stream (a bug, fixed: see
    // `TOLERATE_RESET_AS_END_OF_STREAM`).
    let mut ops = handshake();
    ops.push(Op::Write { ep: 1, conn: 0, len: 3000 });
    for _ in 0..3 {
        ops.push(Op::Drop { dir: 0, idx: 0 });
    }
    ops.push(Op::Shutdown { ep: 0, conn: 0 });
    ops.push(Op::Deliver { dir: 1, idx: 0 });
    ops.push(Op::Drop { dir: 0, idx: 0 });
    ops.push(Op::Reset { ep: 1, conn: 0 });
    ops.push(Op::DeliverAll);
    ops.push(Op::Read { ep: 0, conn: 0, len: 4096 });
    ops.push(Op::Run { steps: 10 });
    seeds.push(("reset_after_fin", setup(AUTO, BULK, GENEROUS), ops));

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
    seeds.push(("connection_limit", setup(AUTO, BULK, limits(1, 1, 1)), ops));

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

    // B half-reads nothing of A's SYN data, gets A's FIN and resets: its
    // reads must fail with `LocallyReset`, never end the stream (the
    // reproducer of the issue, byte for byte).
    let ops = vec![
        Op::Connect { ep: 0, syn_len: 47_104 },
        Op::Quiesce,
        Op::Shutdown { ep: 0, conn: 0 },
        Op::Deliver { dir: 1, idx: 0 },
        Op::Reset { ep: 1, conn: 16 },
        Op::Run { steps: 10 },
    ];
    seeds.push(("read_after_own_reset", setup(AUTO, BULK, GENEROUS), ops));

    // Large packets over a jumbo path: padded probes pass up to the
    // 8972-byte ceiling and data flows in packets over 1500 bytes.
    let mut ops = handshake();
    for _ in 0..4 {
        ops.push(Op::Write { ep: 0, conn: 0, len: 60_000 });
        ops.push(Op::Write { ep: 1, conn: 0, len: 30_000 });
        ops.push(Op::Run { steps: 30 });
    }
    ops.extend(transfer_and_close());
    seeds.push(("large_packets", setup(AUTO | NAGLE, sizes(3, 3, 3, 0), GENEROUS | LARGE), ops));

    // Large packets where the sender's stack refuses probes over 16 KiB
    // (EMSGSIZE) and a router drops those over 4000 bytes; the application
    // also reports some probes as refused while they are queued.
    let mut ops = handshake();
    for i in 0..6u8 {
        ops.push(Op::Write { ep: 0, conn: 0, len: 60_000 });
        ops.push(Op::Run { steps: 2 });
        ops.push(Op::PacketTooBig { ep: 0, idx: i });
        ops.push(Op::PacketTooBig { ep: 1, idx: i });
        ops.push(Op::Run { steps: 20 });
    }
    ops.push(Op::Write { ep: 1, conn: 0, len: 20_000 });
    ops.extend(lossy_steps());
    ops.push(Op::Run { steps: 200 });
    ops.extend(transfer_and_close());
    seeds.push((
        "large_packets_black_hole",
        setup(AUTO | NAGLE | Setup::KEEPALIVE, sizes(3, 3, 3, 1), GENEROUS | LARGE),
        ops,
    ));

    // Large packets over IPv6 on a lossy path whose MTU is Ethernet's
    // behind a jumbo link: probes over 1472 bytes vanish.
    let mut ops = handshake();
    for _ in 0..3 {
        ops.push(Op::Write { ep: 0, conn: 0, len: 60_000 });
        ops.push(Op::Write { ep: 1, conn: 0, len: 20_000 });
    }
    // A third of the lossy steps: later ones only drop keepalives.
    ops.extend(lossy_steps().into_iter().take(66));
    ops.push(Op::Run { steps: 200 });
    ops.extend(transfer_and_close());
    let flags = AUTO | NAGLE | Setup::IPV6 | Setup::KEEPALIVE;
    seeds.push(("large_packets_lossy_v6", setup(flags, sizes(3, 3, 3, 2), GENEROUS | LARGE), ops));

    // A legacy peer (no large packets): data probes up to 1472 bytes, some
    // refused by the stack.
    let mut ops = handshake();
    for i in 0..4u8 {
        ops.push(Op::Write { ep: 0, conn: 0, len: 60_000 });
        ops.push(Op::Run { steps: 3 });
        ops.push(Op::PacketTooBig { ep: 0, idx: i });
        ops.push(Op::Run { steps: 30 });
    }
    ops.extend(transfer_and_close());
    seeds.push(("data_probes_too_big", setup(AUTO | NAGLE, sizes(3, 3, 3, 0), GENEROUS), ops));

    // Packets whose ack cannot be valid, injected into the handshake (to
    // the half-open acceptor and the dialing initiator) and all through a
    // lossy transfer and its close: each is dropped and changes nothing.
    let mut ops = vec![
        Op::Connect { ep: 0, syn_len: 0 },
        Op::Deliver { dir: 1, idx: 0 },
        Op::InjectBadAck { ep: 1, template: 0, offset: 0 },
        Op::InjectBadAck { ep: 0, template: 0, offset: 1 },
        Op::InjectBadAck { ep: 0, template: 0, offset: 61_439 },
        Op::Quiesce,
        Op::Write { ep: 0, conn: 0, len: 60_000 },
        Op::Write { ep: 1, conn: 0, len: 9_000 },
    ];
    let offsets = [0u16, 1, 2, 100, 1023, 30_000, 60_000, 61_439];
    let inject = |i: usize| {
        let i = i as u8;
        let offset = offsets[usize::from(i) % offsets.len()];
        Op::InjectBadAck { ep: i & 1, template: i.wrapping_mul(7), offset }
    };
    // The first lossy steps (the later ones would only lose keepalives
    // until the connection times out).
    for (i, op) in lossy_steps().into_iter().take(100).enumerate() {
        ops.push(op);
        if i % 2 == 0 {
            ops.push(inject(i / 2));
        }
    }
    ops.push(Op::Run { steps: 100 });
    ops.push(Op::Shutdown { ep: 0, conn: 0 });
    ops.push(Op::InjectBadAck { ep: 1, template: 0, offset: 7 });
    for (i, op) in transfer_and_close().into_iter().enumerate() {
        ops.push(op);
        ops.push(inject(i + 3));
    }
    let flags = AUTO | NAGLE | Setup::KEEPALIVE;
    seeds.push(("bad_ack_injection", setup(flags, BULK, GENEROUS), ops));

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
                | "reset_after_fin"
                | "read_after_own_reset"
        );
        // Bad-ack injections do not taint the run: they must change nothing.
        let injected = name.starts_with("inject") || name == "corrupted";
        assert_eq!(driver.tainted(), injected, "{name}");
        if expect_data {
            assert!(driver.delivered > 0, "{name}: no data was read");
            if !injected {
                assert_eq!(driver.verified, driver.delivered, "{name}");
            }
        }
        assert!(driver.opened > 0, "{name}: no connection opened");
        let d = &driver;
        let counters = format!(
            "probes {}, oversized {}, too big {}, black holed {}, bad acks {}, reset reads {}",
            d.probes, d.oversized, d.too_big, d.black_holed, d.bad_acks, d.reset_reads
        );
        eprintln!("{name}: read {} (checked {}); {counters}", d.delivered, d.verified);
        if name.starts_with("large_packets") || name == "data_probes_too_big" {
            assert!(d.probes > 0, "{name}: no path MTU probe ({counters})");
        }
        if name == "large_packets" {
            assert!(d.oversized > 0, "{name}: no datagram over 1500 bytes ({counters})");
        }
        if name == "large_packets_black_hole" {
            assert!(d.too_big > 0 && d.black_holed > 0, "{name}: {counters}");
        }
        if name == "large_packets_lossy_v6" {
            assert!(d.black_holed > 0, "{name}: {counters}");
        }
        if name == "data_probes_too_big" {
            assert!(d.too_big > 0, "{name}: {counters}");
        }
        if name == "bad_ack_injection" {
            assert!(d.bad_acks >= 60, "{name}: {counters}");
        }
        if matches!(name, "read_after_own_reset" | "reset_mid_transfer") {
            assert!(d.reset_reads > 0, "{name}: {counters}");
        }
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

// ---------------------------------------------------------------------------
// Engine bugs found by the fuzzer and the property tests, kept as plain
// regression tests on the public API once fixed (the corpus also holds inputs
// that reached them: `crash_*`, `reset_after_fin`).
// ---------------------------------------------------------------------------

mod known_bugs {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use utp_proto::wire::ExtFlags;
    use utp_proto::{ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, TransportConfig};

    fn endpoint(now: Instant, seed: u64, transport: TransportConfig) -> Endpoint {
        let config = EndpointConfig {
            transport: Arc::new(transport),
            rng_seed: Some(seed),
            ..EndpointConfig::default()
        };
        Endpoint::new(config, now)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    /// Every datagram `from` wants to send now.
    fn transmits(from: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
        let mut buf = [0u8; 1500];
        let mut out = Vec::new();
        while let Some(t) = from.poll_transmit(now, &mut buf) {
            out.push(buf[..t.size].to_vec());
        }
        out
    }

    /// SYN data longer than the send buffer: `connect` keeps what fits, but
    /// the SYN is sized from the caller's slice, and the first
    /// `poll_transmit` panics in `SendBuffer::copy_out` (index out of range).
    #[test]
    fn syn_data_larger_than_send_buffer() {
        let now = Instant::now();
        let transport = TransportConfig {
            send_buffer_size: 512,
            extensions: ExtFlags::SYN_DATA,
            ..TransportConfig::default()
        };
        let mut a = endpoint(now, 1, transport);
        // Refused with a clear error rather than truncated or a panic.
        let err = a.connect(now, addr("10.0.0.2:2000"), &[7u8; 1000]).unwrap_err();
        assert!(matches!(
            err,
            utp_proto::ConnectError::InitialDataTooLarge { len: 1000, capacity: 512 }
        ));
        // What fits goes out on the SYN (at most one packet).
        a.connect(now, addr("10.0.0.2:2000"), &[7u8; 500]).expect("dial");
        let _ = transmits(&mut a, now);
    }

    /// With SYN data negotiated, the SYN-ACK is lost; the acceptor's
    /// application reads the SYN data, which sends a window update (a STATE
    /// without the negotiation record, because `advertised_wnd` was never set
    /// by the SYN-ACK). The initiator takes that STATE for the SYN-ACK,
    /// concludes that the SYN data was refused and sends it again as DATA:
    /// the acceptor's application reads it twice.
    #[test]
    fn syn_data_delivered_twice_after_lost_syn_ack() {
        let now = Instant::now();
        let transport =
            || TransportConfig { extensions: ExtFlags::SYN_DATA, ..TransportConfig::default() };
        let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
        let mut a = endpoint(now, 1, transport());
        let mut b = endpoint(now, 2, transport());
        let dial = a.connect(now, b_addr, b"hello").expect("dial");
        let syn = transmits(&mut a, now);
        let DatagramEvent::Incoming(incoming) = b.handle_datagram(now, a_addr, &syn[0]) else {
            panic!("the SYN is an incoming connection");
        };
        let accepted = b.accept(now, incoming).expect("accept");
        let syn_ack = transmits(&mut b, now);
        assert_eq!(syn_ack.len(), 1);
        // The SYN-ACK is lost. B's application reads the SYN data.
        let mut buf = [0u8; 64];
        let n = b.connection_mut(accepted).expect("accepted").read(&mut buf).expect("data");
        assert_eq!(&buf[..n], b"hello");
        // Whatever B sends while A has not confirmed is the SYN-ACK again
        // (record included); here B has nothing to say, and A's SYN
        // retransmission gets the SYN-ACK a second time.
        let later = now + Duration::from_millis(1100);
        for d in transmits(&mut b, later) {
            a.handle_datagram(later, b_addr, &d);
        }
        a.handle_timeout(later);
        for d in transmits(&mut a, later) {
            b.handle_datagram(later, a_addr, &d);
        }
        for d in transmits(&mut b, later) {
            a.handle_datagram(later, b_addr, &d);
        }
        assert!(a.connection(dial).expect("dial").is_connected());
        assert!(a.connection(dial).expect("dial").negotiated().contains(ExtFlags::SYN_DATA));
        for d in transmits(&mut a, later) {
            b.handle_datagram(later, a_addr, &d);
        }
        let _ = transmits(&mut b, later);
        let conn = b.connection_mut(accepted).expect("accepted");
        let again = conn.read(&mut buf);
        assert!(again.is_err(), "the SYN data arrived twice: {:?}", again.map(|n| &buf[..n]));
    }

    /// A dials B with default settings and gets the SYN-ACK: (now, A's
    /// address, B's, A, B, A's handle, B's handle).
    fn dialed(
    ) -> (Instant, SocketAddr, SocketAddr, Endpoint, Endpoint, ConnectionHandle, ConnectionHandle)
    {
        let now = Instant::now();
        let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
        let mut a = endpoint(now, 1, TransportConfig::default());
        let mut b = endpoint(now, 2, TransportConfig::default());
        let dial = a.connect(now, b_addr, b"").expect("dial");
        let syn = transmits(&mut a, now);
        let DatagramEvent::Incoming(incoming) = b.handle_datagram(now, a_addr, &syn[0]) else {
            panic!("the SYN is an incoming connection");
        };
        let accepted = b.accept(now, incoming).expect("accept");
        for d in transmits(&mut b, now) {
            a.handle_datagram(now, b_addr, &d);
        }
        (now, a_addr, b_addr, a, b, dial, accepted)
    }

    /// A half-closed connection (our FIN sent, the peer's data still
    /// arriving) receives a RESET whose ack number is our FIN, before the
    /// peer's plain ACK of it: `handle_reset` takes it for a clean close, and
    /// `read` returns `Ok(0)`, the end of the stream, although the peer
    /// aborted and its data never arrived: a silent truncation.
    #[test]
    fn reset_after_our_fin_reads_as_end_of_stream() {
        let (now, a_addr, b_addr, mut a, mut b, dial, accepted) = dialed();
        for d in transmits(&mut a, now) {
            b.handle_datagram(now, a_addr, &d);
        }
        // B writes; its data is lost. A shuts down; B gets the FIN, acks it
        // (lost too) and aborts.
        b.connection_mut(accepted).expect("accepted").write(&[1u8; 3000]).expect("write");
        let _lost = transmits(&mut b, now);
        a.connection_mut(dial).expect("dial").shutdown();
        for d in transmits(&mut a, now) {
            b.handle_datagram(now, a_addr, &d);
        }
        let _lost_ack = transmits(&mut b, now);
        b.connection_mut(accepted).expect("accepted").reset();
        for d in transmits(&mut b, now) {
            a.handle_datagram(now, b_addr, &d);
        }
        let conn = a.connection_mut(dial).expect("dial");
        let read = conn.read(&mut [0u8; 4096]);
        assert!(read.is_err(), "A reads {read:?} though B aborted before its data arrived");
    }

    /// After the application's own `reset`, `read` returned `Ok(0)` (a
    /// clean end of the stream) once the unread data was discarded; it
    /// must fail with `LocallyReset` (`ConnectionAborted`). The fuzz corpus
    /// holds the input that found it (`read_after_own_reset`).
    #[test]
    fn read_after_own_reset_is_an_error() {
        let (now, a_addr, _, mut a, mut b, dial, accepted) = dialed();
        let conn = a.connection_mut(dial).expect("dial");
        conn.write(&[3u8; 5000]).expect("write");
        conn.shutdown();
        for d in transmits(&mut a, now) {
            b.handle_datagram(now, a_addr, &d);
        }
        let conn = b.connection_mut(accepted).expect("accepted");
        assert!(conn.readable_bytes() > 0, "B holds unread data");
        conn.reset();
        for _ in 0..2 {
            let read = conn.read(&mut [0u8; 4096]);
            assert!(
                matches!(
                    read,
                    Err(utp_proto::ReadError::Connection(utp_proto::ConnectionError::LocallyReset))
                ),
                "read after our own reset: {read:?}"
            );
        }
        let err = std::io::Error::from(utp_proto::ConnectionError::LocallyReset);
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted);
    }

    /// Stale window updates (a duplicated SYN-ACK arriving late, as a
    /// network may do) make the sender overrun the receive buffer with data
    /// after a lost packet. The receiver holds that data out of order up to
    /// `receive_buffer_size + 1500`, and then drops the retransmission of the
    /// lost packet, the only one that could drain it, for lack of room. The
    /// connection never recovers: the sender retransmits forever, the
    /// receiver keeps answering (so it never times out), nothing is
    /// readable.
    #[test]
    fn out_of_order_data_fills_the_receive_buffer_for_good() {
        let now = Instant::now();
        let transport = || TransportConfig {
            receive_buffer_size: 4096,
            nagle: false,
            ..TransportConfig::default()
        };
        let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
        let mut a = endpoint(now, 1, transport());
        let mut b = endpoint(now, 2, transport());
        let dial = a.connect(now, b_addr, b"").expect("dial");
        let syn = transmits(&mut a, now);
        let DatagramEvent::Incoming(incoming) = b.handle_datagram(now, a_addr, &syn[0]) else {
            panic!("the SYN is an incoming connection");
        };
        let accepted = b.accept(now, incoming).expect("accept");
        let syn_ack = transmits(&mut b, now).remove(0);
        a.handle_datagram(now, b_addr, &syn_ack);
        for d in transmits(&mut a, now) {
            b.handle_datagram(now, a_addr, &d);
        }
        let _ = transmits(&mut b, now);

        a.connection_mut(dial).expect("dial").write(&[5u8; 100_000]).expect("write");
        let data = transmits(&mut a, now);
        assert_eq!(data.len(), 2, "a 4096-byte window takes two full packets");
        let lost_seq = utp_proto::wire::Repr::parse_bytes(&data[0]).expect("parses").seq_nr;
        let mut next = data;
        for _ in 0..4 {
            // The data reaches B (except the first packet, lost every time it
            // is sent), B's ACK (with its shrinking window) reaches A, then a
            // late copy of the SYN-ACK reopens the window.
            for d in next.drain(..) {
                if utp_proto::wire::Repr::parse_bytes(&d).expect("parses").seq_nr != lost_seq {
                    b.handle_datagram(now, a_addr, &d);
                }
            }
            for d in transmits(&mut b, now) {
                a.handle_datagram(now, b_addr, &d);
            }
            a.handle_datagram(now, b_addr, &syn_ack);
            next = transmits(&mut a, now);
        }
        // From now on the network is perfect.
        let mut now = now;
        for _ in 0..50 {
            for d in next.drain(..) {
                b.handle_datagram(now, a_addr, &d);
            }
            let conn = b.connection_mut(accepted).expect("accepted");
            if conn.readable_bytes() > 0 {
                return;
            }
            for d in transmits(&mut b, now) {
                a.handle_datagram(now, b_addr, &d);
            }
            next = transmits(&mut a, now);
            if next.is_empty() {
                now = a.poll_timeout().expect("a timer").max(now);
                a.handle_timeout(now);
                b.handle_timeout(now);
                next = transmits(&mut a, now);
            }
        }
        let stats = b.connection(accepted).expect("accepted").stats();
        panic!(
            "nothing readable after 50 rounds on a perfect network: {} retransmissions, \
             B's window {}",
            a.connection(dial).expect("dial").stats().retransmits,
            stats.recv_window
        );
    }
}
