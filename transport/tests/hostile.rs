//! A live transfer under a flood of hostile datagrams: random bytes of
//! random lengths, and well-formed uTP packets (DATA, STATE, FIN, RESET,
//! SYN) with random sequence and ack numbers, sent from a stranger's
//! address and, blindly spoofed, from each peer's own address, every
//! connection id in turn. Both directions must arrive byte-exact, without
//! an error on either stream, and the sockets' counters must show the drops.
//!
//! Spoofing without raw sockets: each peer's socket is bound with
//! `SO_REUSEPORT`, and the attacker binds a second member of the same group
//! (the same address and port) and connects it to an unrelated sink. Linux
//! hands a datagram to a connected member only if it comes from that
//! member's peer, and never picks a connected member by hash, so the peer's
//! own socket still receives everything; the attacker only sends (with
//! `send_to`, which a connected UDP socket allows). Probes check this
//! before the attack; if they fail, the test goes on without spoofing.

mod common;

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use libp2p_utp::utp_proto::wire::{Extension, PacketType, Repr, SeqNr, Timestamp};
use libp2p_utp::{EndpointStats, UtpSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Bytes from the dialer to the listener, at least; the writer goes on
/// while the attack lasts, up to the cap.
const UP: (u64, u64) = (16 << 20, 256 << 20);
/// Bytes from the listener back to the dialer, at least and at most.
const DOWN: (u64, u64) = (1 << 20, 32 << 20);
/// The attack stops after this many datagrams, or this long.
const ATTACK_BUDGET: u64 = 400_000;
const ATTACK_TIME: Duration = Duration::from_secs(10);

/// xorshift64*: enough randomness for an attacker, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A UDP socket with `SO_REUSEPORT`, bound to `addr`.
fn reuseport_socket(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let one: libc::c_int = 1;
    // SAFETY: a valid descriptor, and a pointer to a c_int with its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A uTP socket on 127.0.0.1 whose address others may share.
fn victim() -> UtpSocket {
    let socket = reuseport_socket("127.0.0.1:0".parse().unwrap()).expect("bind");
    UtpSocket::from_std(socket, test_config()).expect("uTP socket")
}

/// A socket that sends from `victim`'s address but receives none of its
/// datagrams (see the module comment).
fn spoofer(victim: SocketAddr, sink: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = reuseport_socket(victim)?;
    socket.connect(sink)?;
    Ok(socket)
}

/// Whether a datagram sent by `from` reaches `to`'s uTP socket, with the
/// source address `from` claims.
async fn spoof_works(from: &StdUdpSocket, to: &UtpSocket, claimed: SocketAddr) -> bool {
    let probe = b"probe";
    if from.send_to(probe, to.local_addr().unwrap()).is_err() {
        return false;
    }
    match tokio::time::timeout(Duration::from_secs(2), to.recv_non_utp()).await {
        Ok(Ok((data, src))) => data == probe && src == claimed,
        _ => false,
    }
}

/// The attacker's sockets and its victims.
struct Attacker {
    /// Bound to another loopback address (127.0.0.2 if possible).
    stranger: StdUdpSocket,
    /// Sending as the dialer (to the listener) and as the listener (to the
    /// dialer), if spoofing works here.
    spoof: Option<(StdUdpSocket, StdUdpSocket)>,
    listener: SocketAddr,
    dialer: SocketAddr,
    seed: u64,
}

/// What the attacker sent.
#[derive(Debug, Default)]
struct AttackReport {
    /// Random bytes from the stranger's address.
    garbage: u64,
    /// Well-formed packets from the stranger's address.
    stranger_packets: u64,
    /// Well-formed packets with the dialer's address, to the listener.
    as_dialer: u64,
    /// Well-formed packets with the listener's address, to the dialer.
    as_listener: u64,
    /// Sends that failed (a full socket buffer and the like).
    send_errors: u64,
    elapsed: Duration,
}

impl AttackReport {
    fn total(&self) -> u64 {
        self.garbage + self.stranger_packets + self.as_dialer + self.as_listener
    }
}

const TYPES: [PacketType; 5] =
    [PacketType::Data, PacketType::State, PacketType::Fin, PacketType::Reset, PacketType::Syn];

/// A well-formed packet of type `ty` for connection `id`, with random
/// sequence and ack numbers, timestamps and window, a random payload on
/// DATA and sometimes a selective ACK on STATE.
fn forge(rng: &mut Rng, ty: PacketType, id: u16, buf: &mut [u8]) -> usize {
    let mut payload = [0u8; 1200];
    let mut sack = [0u8; 4];
    let mut repr = Repr::new(ty, id, SeqNr(rng.next() as u16), SeqNr(rng.next() as u16));
    repr.timestamp = Timestamp(rng.next() as u32);
    repr.timestamp_diff = rng.next() as u32;
    repr.wnd_size = rng.next() as u32;
    if ty == PacketType::Data {
        let n = rng.below(payload.len() as u64 + 1) as usize;
        rng.fill(&mut payload[..n]);
        repr.payload = &payload[..n];
    }
    if ty == PacketType::State && rng.below(2) == 0 {
        rng.fill(&mut sack);
        repr.extensions.push(Extension::SelectiveAck(&sack)).unwrap();
    }
    repr.emit(buf).expect("a forged packet fits")
}

/// Sends until the budget, the time limit or `stop`. Out of every 8
/// datagrams: 1 of random bytes (0..2000 of them) and 1 well-formed packet
/// with a random id from the stranger's address, to either peer; 3
/// spoofed as the dialer to the listener and 3 as the listener to the
/// dialer, each stream sweeping all 65 536 connection ids in turn (the
/// packet type shifting by one each sweep, so that within two sweeps the
/// real ids get non-SYN packets). Without spoofing, those 6 come from the
/// stranger's address too.
fn attack(a: Attacker, stop: &AtomicBool) -> AttackReport {
    let mut rng = Rng(a.seed | 1);
    let mut buf = [0u8; 2048];
    let mut report = AttackReport::default();
    let mut sweep = [0u64; 2];
    let start = Instant::now();
    for i in 0..ATTACK_BUDGET {
        if i % 1024 == 0 && (stop.load(Ordering::Relaxed) || start.elapsed() >= ATTACK_TIME) {
            break;
        }
        let either = if rng.below(2) == 0 { a.listener } else { a.dialer };
        let (socket, to, len, count) = match i % 8 {
            0 => {
                let len = rng.below(2000) as usize;
                rng.fill(&mut buf[..len]);
                (&a.stranger, either, len, &mut report.garbage)
            }
            1 => {
                let (id, ty) = (rng.next() as u16, TYPES[rng.below(5) as usize]);
                (
                    &a.stranger,
                    either,
                    forge(&mut rng, ty, id, &mut buf),
                    &mut report.stranger_packets,
                )
            }
            j => {
                let side = usize::from(j >= 5);
                let n = sweep[side];
                sweep[side] += 1;
                let id = n as u16;
                let ty = TYPES[((n & 0xffff) + (n >> 16)) as usize % TYPES.len()];
                let len = forge(&mut rng, ty, id, &mut buf);
                match (&a.spoof, side) {
                    (Some((as_dialer, _)), 0) => {
                        (as_dialer, a.listener, len, &mut report.as_dialer)
                    }
                    (Some((_, as_listener)), _) => {
                        (as_listener, a.dialer, len, &mut report.as_listener)
                    }
                    (None, _) => (&a.stranger, either, len, &mut report.stranger_packets),
                }
            }
        };
        match socket.send_to(&buf[..len], to) {
            Ok(_) => *count += 1,
            Err(_) => report.send_errors += 1,
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// Writes stream `seed` until at least `min` bytes are written and the
/// attack is over (or `cap` bytes are; then a little more now and then
/// until it is over): the connection carries data through the whole attack.
async fn write_through<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    (min, cap): (u64, u64),
    mut attack_over: watch::Receiver<bool>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0;
    while off < min || (off < cap && !*attack_over.borrow()) {
        pattern(seed, off, &mut buf);
        w.write_all(&buf).await?;
        off += buf.len() as u64;
    }
    // Past the cap, a trickle: a peer silent for 2 s may be replaced by a
    // SYN with its id and address (as a restarted peer is), which a blind
    // spoofer sends too.
    while !*attack_over.borrow() {
        pattern(seed, off, &mut buf[..1024]);
        w.write_all(&buf[..1024]).await?;
        off += 1024;
        let _ = tokio::time::timeout(Duration::from_millis(100), attack_over.changed()).await;
    }
    Ok(off)
}

/// Reads to the end, checking every byte against stream `seed`; returns
/// the byte count and when the last byte came.
async fn read_checked<R: AsyncRead + Unpin>(r: &mut R, seed: u64) -> io::Result<(u64, Instant)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let (mut total, mut last) = (0u64, Instant::now());
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, last));
        }
        pattern(seed, total, &mut want[..n]);
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            panic!("stream {seed}: byte {} differs", total + i as u64);
        }
        total += n as u64;
        last = Instant::now();
    }
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn print_stats(who: &str, before: &EndpointStats, after: &EndpointStats, non_utp_dropped: u64) {
    eprintln!(
        "{who}: {} uTP datagrams received during the test; dropped: {} malformed, {} unknown \
         connection, {} bad ack, {} stale SYN; {} SYNs refused, {} half-open evicted; {} RESETs \
         sent, {} rate-limited; {non_utp_dropped} non-uTP dropped",
        after.datagrams_received - before.datagrams_received,
        after.dropped_malformed - before.dropped_malformed,
        after.dropped_unknown_connection - before.dropped_unknown_connection,
        after.dropped_bad_ack - before.dropped_bad_ack,
        after.dropped_stale_syn - before.dropped_stale_syn,
        after.syns_refused - before.syns_refused,
        after.half_open_evicted - before.half_open_evicted,
        after.resets_sent - before.resets_sent,
        after.resets_rate_limited - before.resets_rate_limited,
    );
}

async fn transfer_under_attack() {
    let listener = victim();
    let dialer = victim();
    let (laddr, daddr) = (listener.local_addr().unwrap(), dialer.local_addr().unwrap());

    let sink = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let mut spoof = match (spoofer(daddr, sink_addr), spoofer(laddr, sink_addr)) {
        (Ok(as_dialer), Ok(as_listener)) => Some((as_dialer, as_listener)),
        (a, b) => {
            eprintln!("NOTE: no spoofing, SO_REUSEPORT failed: {:?}", a.err().or(b.err()));
            None
        }
    };
    if let Some((as_dialer, as_listener)) = &spoof {
        if !(spoof_works(as_dialer, &listener, daddr).await
            && spoof_works(as_listener, &dialer, laddr).await)
        {
            eprintln!("NOTE: no spoofing, the SO_REUSEPORT probes did not arrive as expected");
            spoof = None;
        }
    }
    let spoofing = spoof.is_some();
    let stranger = StdUdpSocket::bind("127.0.0.2:0")
        .or_else(|_| StdUdpSocket::bind("127.0.0.1:0"))
        .expect("attacker socket");
    let stranger_addr = stranger.local_addr().unwrap();

    let accept = {
        let listener = listener.clone();
        tokio::spawn(async move { listener.accept().await })
    };
    let client = dialer.connect(laddr).await.expect("connect");
    let server = accept.await.unwrap().expect("accept");
    let before = (listener.endpoint_stats(), dialer.endpoint_stats());

    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64);
    eprintln!(
        "attacker at {stranger_addr}, spoofing {}; listener {laddr}, dialer {daddr}; \
         HOSTILE_SEED={seed}",
        if spoofing { "both peers' addresses" } else { "nothing" }
    );
    let (over_tx, over_rx) = watch::channel(false);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = Attacker { stranger, spoof, listener: laddr, dialer: daddr, seed };
    let attack_task = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            let report = attack(attacker, &stop);
            let _ = over_tx.send(true);
            report
        })
    };
    let start = Instant::now();

    let srv = {
        let over = over_rx.clone();
        tokio::spawn(async move {
            let (mut r, mut w) = server.into_split();
            let writer = tokio::spawn(async move {
                let n = write_through(&mut w, 2, DOWN, over).await?;
                w.close().await?;
                io::Result::Ok(n)
            });
            let got = read_checked(&mut r, 1).await?;
            let written = writer.await.unwrap()?;
            io::Result::Ok((got, written, r.stats()))
        })
    };
    let (mut r, mut w) = client.into_split();
    let writer = tokio::spawn(async move {
        let n = write_through(&mut w, 1, UP, over_rx).await?;
        w.close().await?;
        io::Result::Ok(n)
    });
    let (down, down_last) = read_checked(&mut r, 2).await.expect("dialer read");
    let up_written = writer.await.unwrap().expect("dialer write");
    let ((up, up_last), down_written, server_stats) = srv.await.unwrap().expect("listener");
    stop.store(true, Ordering::Relaxed);
    let report = attack_task.await.unwrap();

    eprintln!("attack: {} datagrams in {:?}: {report:?}", report.total(), report.elapsed);
    eprintln!(
        "up {up} bytes at {:.0} MiB/s, down {down} bytes at {:.0} MiB/s (last byte after \
         {:?} / {:?})",
        mib_per_s(up, up_last - start),
        mib_per_s(down, down_last - start),
        up_last - start,
        down_last - start,
    );
    eprintln!("listener stream: {server_stats:?}");
    eprintln!("dialer stream: {:?}", r.stats());
    let after = (listener.endpoint_stats(), dialer.endpoint_stats());
    print_stats("listener", &before.0, &after.0, listener.non_utp_dropped());
    print_stats("dialer", &before.1, &after.1, dialer.non_utp_dropped());

    // Byte-exact (read_checked compared every byte) and complete.
    assert_eq!(up, up_written, "dialer to listener: length");
    assert_eq!(down, down_written, "listener to dialer: length");
    assert!(up >= UP.0 && down >= DOWN.0);
    assert!(report.total() >= 10_000, "the attack hardly ran: {report:?}");
    // The flood showed in the counters.
    for (who, b, a) in [("listener", &before.0, &after.0), ("dialer", &before.1, &after.1)] {
        assert!(
            a.dropped_unknown_connection > b.dropped_unknown_connection,
            "{who}: no packet for an unknown connection dropped"
        );
    }
    // Every id was tried with the peer's address: the forged acks of the
    // real connection were dropped (at least one per full sweep with a
    // non-SYN type; the sweeps shift the type, and the budget gives each
    // target more than two).
    let sweeps = report.as_dialer.min(report.as_listener) / 65_536;
    if sweeps >= 2 {
        let bad_acks = (after.0.dropped_bad_ack - before.0.dropped_bad_ack)
            + (after.1.dropped_bad_ack - before.1.dropped_bad_ack);
        assert!(bad_acks > 0, "{sweeps} sweeps of spoofed packets and no forged ack dropped");
        // Not only the half-open connections the spoofed SYNs opened: the
        // real connection's own ids were hit, and the packets refused.
        let invalid = server_stats.invalid_packets + r.stats().invalid_packets;
        assert!(invalid > 0, "{sweeps} sweeps and no forged packet refused by the connection");
    } else {
        eprintln!("NOTE: {sweeps} complete sweeps of spoofed ids: bad-ack counters not checked");
    }
}

/// A blind forged packet that hits a real connection id still passes the
/// ack check with probability (packets in flight + 3) / 65536, as in
/// libutp: a few such hits per run make a failure by pure chance about one
/// run in a thousand (`proto/tests/hostile` measures the odds exactly). So
/// a failed run is tried once more with fresh sockets and a fresh seed: a
/// real bug fails both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_stays_exact_under_random_and_spoofed_datagrams() {
    init_tracing();
    let first = tokio::spawn(bounded(120, "transfer under attack", transfer_under_attack())).await;
    if let Err(e) = first {
        eprintln!("NOTE: the first run failed ({e}); trying once more");
        bounded(120, "transfer under attack (second try)", transfer_under_attack()).await;
    }
}
