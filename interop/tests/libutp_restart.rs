//! A libutp peer that dies without closing and is started again on the same
//! port redials us (open issue: "a restarted libutp peer redialling from its
//! fixed port (id 17767) is routed to the stale connection and cannot
//! reconnect while it retries").
//!
//! libutp (utp-native 2.5.3) draws connection ids and sequence numbers from
//! an unseeded `rand()`: the first connection of every process has id 17767
//! and seq 9158 (see WIRE.md). A restarted process bound to the same port
//! therefore sends the very SYN (same address, id and seq) of the
//! connection our side still holds from its previous life.
//!
//! Each test:
//! 1. our `UtpSocket` listens (idle timeout [`IDLE`], shorter than the
//!    test's bound so that the stale connection's fate shows);
//! 2. libutp process 1, bound to local port P (`--local-port`), dials us,
//!    transfers and exits abruptly (`--crash-after`: nothing more is sent)
//!    while our side still holds the connection open (reading; in (b) also
//!    writing);
//! 3. libutp process 2, bound to the same port P, dials us again and
//!    transfers 1 MiB of another seeded stream (sha256-checked by both
//!    sides);
//! 4. asserts that the second connection is accepted and its data intact,
//!    and prints how long the redial took (process 2's start to our accept,
//!    and libutp's own `connect_ms`) and what became of the stale
//!    connection (its read/write result, error kind, and when, after the
//!    crash).
//!
//! (a) [`peer_was_sending`]: libutp's `send` client crashes mid-stream;
//! (b) [`we_were_sending`]: libutp's `recv` client crashes while our server
//!     has data in flight to it.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p_utp::{UtpSocket, UtpStream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use utp_interop::{loopback_socket, require, seeded_bytes, sha256_hex, Peer, PeerProcess};

const MIB: usize = 1 << 20;
/// Bound of every test.
const LIMIT: Duration = Duration::from_secs(60);
/// Bound of one step of the first life (dial, transfer, crash).
const STEP: Duration = Duration::from_secs(10);
/// How long libutp process 2 may try (its `--timeout`), from its start.
const REDIAL: Duration = Duration::from_secs(30);
/// Our idle timeout (default 120 s).
const IDLE: Duration = Duration::from_secs(20);
/// What process 1 transfers before it crashes (received plus written).
const CRASH_AFTER: usize = MIB;
/// Payload of the second connection, and the seeds of each side's stream.
const SECOND_BYTES: usize = MIB;
const PEER_SEED_1: u32 = 1;
const PEER_SEED_2: u32 = 2;
const OUR_SEED: u32 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// libutp's `send` client crashes while sending; our server only reads.
    PeerWasSending,
    /// libutp's `recv` client (one hello byte, no FIN) crashes while our
    /// server writes 64 MiB to it.
    WeWereSending,
}

/// What our server saw on connection `conn` (numbered in accept order).
#[derive(Debug)]
enum Ours {
    Accepted {
        remote: SocketAddr,
    },
    /// The read side ended: `Ok(n)` at the end of the stream, or the error;
    /// with every byte received.
    ReadEnded {
        result: io::Result<usize>,
        got: Vec<u8>,
    },
    /// Our writes finished (`Ok(bytes)` once written and shut down).
    WriteEnded {
        result: io::Result<usize>,
    },
    /// Our `close()` returned.
    Closed {
        result: io::Result<()>,
    },
}

type Report = (usize, Instant, Ours);

/// How many bytes our server writes on connection `conn` in (b): enough
/// for the first to have data in flight when the peer dies.
fn our_bytes(conn: usize) -> usize {
    if conn == 0 {
        64 * MIB
    } else {
        SECOND_BYTES
    }
}

async fn read_all(rd: &mut (impl AsyncReadExt + Unpin), got: &mut Vec<u8>) -> io::Result<usize> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => return Ok(got.len()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e),
        }
    }
}

async fn serve(kind: Kind, conn: usize, stream: UtpStream, tx: UnboundedSender<Report>) {
    let send = |ev: Ours| {
        let _ = tx.send((conn, Instant::now(), ev));
    };
    let (mut rd, mut wr) = stream.into_split();
    match kind {
        Kind::PeerWasSending => {
            let mut got = Vec::new();
            let result = read_all(&mut rd, &mut got).await;
            let ok = result.is_ok();
            send(Ours::ReadEnded { result, got });
            if ok {
                let _ = wr.shutdown().await;
                send(Ours::Closed { result: wr.close().await });
            }
        }
        Kind::WeWereSending => {
            let data = seeded_bytes(OUR_SEED + conn as u32, our_bytes(conn));
            let reader = async {
                let mut got = Vec::new();
                let result = read_all(&mut rd, &mut got).await;
                send(Ours::ReadEnded { result, got });
            };
            let writer = async {
                let result = async {
                    wr.write_all(&data).await?;
                    wr.shutdown().await?;
                    Ok(data.len())
                }
                .await;
                let ok = result.is_ok();
                send(Ours::WriteEnded { result });
                ok
            };
            let ((), wrote) = tokio::join!(reader, writer);
            if wrote {
                send(Ours::Closed { result: wr.close().await });
            }
        }
    }
}

fn spawn_server(kind: Kind, sock: &UtpSocket) -> UnboundedReceiver<Report> {
    let (tx, rx) = unbounded_channel();
    let server = sock.clone();
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok(stream) = server.accept().await {
            let _ = tx.send((conn, Instant::now(), Ours::Accepted { remote: stream.peer_addr() }));
            tokio::spawn(serve(kind, conn, stream, tx.clone()));
            conn += 1;
        }
    });
    rx
}

/// A UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
    s.local_addr().expect("its address").port()
}

fn libutp(args: &[String]) -> PeerProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    PeerProcess::libutp(&args).expect("start node")
}

/// Everything seen, stamped with the time since the test began.
struct Log {
    t0: Instant,
    ours: Vec<(usize, Instant, Ours)>,
    peer: [Vec<(Instant, Value)>; 2],
}

impl Log {
    fn ours(&mut self, (conn, at, ev): Report) {
        match &ev {
            Ours::ReadEnded { result, got } => eprintln!(
                "[{:>8.3?}] ours: conn {conn} read ended {result:?} ({} bytes)",
                at - self.t0,
                got.len()
            ),
            other => eprintln!("[{:>8.3?}] ours: conn {conn} {other:?}", at - self.t0),
        }
        self.ours.push((conn, at, ev));
    }

    fn peer(&mut self, life: usize, ev: Value) {
        let at = Instant::now();
        eprintln!("[{:>8.3?}] libutp {}: {ev}", at - self.t0, life + 1);
        self.peer[life].push((at, ev));
    }

    fn find(&self, conn: usize, pred: impl Fn(&Ours) -> bool) -> Option<&(usize, Instant, Ours)> {
        self.ours.iter().find(|(c, _, ev)| *c == conn && pred(ev))
    }

    fn accepted(&self, conn: usize) -> Option<Instant> {
        self.find(conn, |e| matches!(e, Ours::Accepted { .. })).map(|(_, at, _)| *at)
    }

    fn read_end(&self, conn: usize) -> Option<(Instant, &io::Result<usize>, &[u8])> {
        self.ours.iter().find_map(|(c, at, ev)| match ev {
            Ours::ReadEnded { result, got } if *c == conn => Some((*at, result, got.as_slice())),
            _ => None,
        })
    }

    fn write_end(&self, conn: usize) -> Option<(Instant, &io::Result<usize>)> {
        self.ours.iter().find_map(|(c, at, ev)| match ev {
            Ours::WriteEnded { result } if *c == conn => Some((*at, result)),
            _ => None,
        })
    }

    fn remote(&self, conn: usize) -> Option<SocketAddr> {
        self.ours.iter().find_map(|(c, _, ev)| match ev {
            Ours::Accepted { remote } if *c == conn => Some(*remote),
            _ => None,
        })
    }

    fn close_result(&self, conn: usize) -> Option<(Instant, &io::Result<()>)> {
        self.ours.iter().find_map(|(c, at, ev)| match ev {
            Ours::Closed { result } if *c == conn => Some((*at, result)),
            _ => None,
        })
    }

    fn closed(&self, conn: usize) -> bool {
        self.close_result(conn).is_some()
    }

    fn peer_event(&self, life: usize, name: &str) -> Option<&(Instant, Value)> {
        self.peer[life].iter().find(|(_, ev)| ev["event"] == name)
    }

    /// Is our side done with connection `conn` (everything it will report)?
    fn settled(&self, kind: Kind, conn: usize) -> bool {
        match kind {
            Kind::PeerWasSending => {
                self.closed(conn) || self.read_end(conn).is_some_and(|(_, r, _)| r.is_err())
            }
            Kind::WeWereSending => {
                self.read_end(conn).is_some()
                    && (self.closed(conn) || self.write_end(conn).is_some_and(|(_, r)| r.is_err()))
            }
        }
    }
}

fn describe<T: std::fmt::Debug>(r: &io::Result<T>) -> String {
    match r {
        Ok(v) => format!("Ok({v:?})"),
        Err(e) => format!("Err({:?}: {e})", e.kind()),
    }
}

/// How many leading bytes of `got` are the stream `seed`.
fn matching_prefix(got: &[u8], seed: u32) -> usize {
    let want = seeded_bytes(seed, got.len());
    got.iter().zip(&want).take_while(|(a, b)| a == b).count()
}

async fn restart(kind: Kind) {
    if !require(Peer::Libutp) {
        return;
    }
    let mut config = utp_interop::config();
    config.transport_mut().idle_timeout = IDLE;
    let sock = loopback_socket(config).await;
    let port = sock.local_addr().unwrap().port().to_string();
    let local_port = free_udp_port().to_string();
    let mut rx = spawn_server(kind, &sock);
    let mut log = Log { t0: Instant::now(), ours: Vec::new(), peer: [Vec::new(), Vec::new()] };
    eprintln!("{kind:?}: our socket 127.0.0.1:{port}, libutp's fixed port {local_port}");

    let s = |x: &str| x.to_string();
    let crash_after = CRASH_AFTER.to_string();
    let (first_args, second_args): (Vec<String>, Vec<String>) = match kind {
        Kind::PeerWasSending => (
            vec![s("send"), s("127.0.0.1"), port.clone(), (64 * MIB).to_string()],
            vec![s("send"), s("127.0.0.1"), port.clone(), SECOND_BYTES.to_string()],
        ),
        Kind::WeWereSending => (
            vec![
                s("recv"),
                s("127.0.0.1"),
                port.clone(),
                s("--hello"),
                s("1"),
                s("--no-half-close"),
            ],
            vec![s("recv"), s("127.0.0.1"), port.clone(), s("--hello"), s("1")],
        ),
    };
    let common = ["--local-port", &local_port, "--bufsize", "4194304", "--lifecycle"].map(s);
    let first_args: Vec<String> = first_args
        .into_iter()
        .chain(common.clone())
        .chain(["--seed", &PEER_SEED_1.to_string(), "--crash-after", &crash_after].map(s))
        .collect();
    let timeout_ms = REDIAL.as_millis().to_string();
    let second_args: Vec<String> = second_args
        .into_iter()
        .chain(common)
        .chain(["--seed", &PEER_SEED_2.to_string(), "--timeout", &timeout_ms].map(s))
        .collect();

    // ---- first life: dial, transfer, crash.
    let mut first = libutp(&first_args);
    let first_life = async {
        loop {
            tokio::select! {
                ev = first.next_event() => match ev {
                    Some(ev) => log.peer(0, ev),
                    None => break,
                },
                Some(r) = rx.recv() => log.ours(r),
            }
        }
    };
    tokio::time::timeout(STEP, first_life).await.expect("libutp process 1 ends in time");
    let code = first.wait(STEP).await;
    let crashed_at = log
        .peer_event(0, "crash")
        .unwrap_or_else(|| panic!("libutp process 1 did not crash (exit {code:?})"))
        .0;
    assert_eq!(code, Some(4), "libutp process 1 exits on --crash-after");
    let connected = log.peer_event(0, "connected").map(|(_, e)| e["connect_ms"].clone());
    eprintln!("process 1: connected in {connected:?} ms, crashed; exit code {code:?}");
    while let Ok(r) = rx.try_recv() {
        log.ours(r);
    }
    let first_remote = log.remote(0).expect("we accepted process 1's connection");
    assert_eq!(first_remote.port().to_string(), local_port, "process 1 dialled from its port");
    assert!(
        log.read_end(0).is_none() && log.write_end(0).is_none(),
        "our side must still hold the first connection open when process 2 starts"
    );

    // ---- second life, same port (same address, id 17767, seq 9158).
    let restarted_at = Instant::now();
    eprintln!("[{:>8.3?}] starting libutp process 2 on port {local_port}", restarted_at - log.t0);
    let mut second = libutp(&second_args);
    let mut second_out = true;
    let deadline = tokio::time::Instant::from_std(restarted_at + REDIAL + Duration::from_secs(3));
    loop {
        tokio::select! {
            ev = second.next_event(), if second_out => match ev {
                Some(ev) => log.peer(1, ev),
                None => second_out = false,
            },
            Some(r) = rx.recv() => log.ours(r),
            () = tokio::time::sleep_until(deadline) => break,
        }
        if !second_out && (log.accepted(1).is_none() || log.settled(kind, 1)) {
            break;
        }
    }
    let second_code = if second_out { None } else { second.wait(STEP).await };

    // ---- the stale connection: wait (bounded) for what becomes of it
    // (libutp's redial attempts may keep it alive past our idle timeout).
    let stale_deadline = (crashed_at + REDIAL + IDLE + Duration::from_secs(5))
        .min(log.t0 + LIMIT - Duration::from_secs(3));
    let stale_deadline = tokio::time::Instant::from_std(stale_deadline);
    while !log.settled(kind, 0) {
        tokio::select! {
            Some(r) = rx.recv() => log.ours(r),
            () = tokio::time::sleep_until(stale_deadline) => break,
        }
    }

    // ---- report.
    let after_crash = |at: Instant| at.saturating_duration_since(crashed_at);
    eprintln!("======== {kind:?}: summary (times after process 1 crashed unless said)");
    eprintln!(
        "process 2 started {:?} after the crash; exit code {second_code:?}{}",
        after_crash(restarted_at),
        if second_out { " (still running at the deadline)" } else { "" }
    );
    let redial = log.accepted(1).map(|at| at - restarted_at);
    eprintln!("redial: our accept {redial:?} after process 2 started (from {:?})", log.remote(1));
    if let Some((at, r)) = log.close_result(1) {
        eprintln!(
            "our close of the second connection: {} at +{:?}",
            describe(r),
            at - restarted_at
        );
    }
    for name in ["socket", "connected", "error", "result", "closed", "done"] {
        for (at, ev) in log.peer[1].iter().filter(|(_, e)| e["event"] == name) {
            eprintln!("  libutp 2 {name} at +{:?} from its start: {ev}", *at - restarted_at);
        }
    }
    match log.read_end(0) {
        Some((at, r, got)) => eprintln!(
            "stale connection read: {} after {:?}; {} bytes, {} of them process 1's stream",
            describe(r),
            after_crash(at),
            got.len(),
            matching_prefix(got, PEER_SEED_1),
        ),
        None => eprintln!(
            "stale connection read: still pending after {:?}",
            after_crash(Instant::now())
        ),
    }
    if kind == Kind::WeWereSending {
        match log.write_end(0) {
            Some((at, r)) => {
                eprintln!("stale connection write: {} after {:?}", describe(r), after_crash(at))
            }
            None => eprintln!(
                "stale connection write: still pending after {:?}",
                after_crash(Instant::now())
            ),
        }
    }
    if kind == Kind::PeerWasSending {
        if let Some((_, _, got)) = log.read_end(0) {
            let k = matching_prefix(got, PEER_SEED_1);
            if k < got.len() {
                eprintln!(
                    "!! the stale connection delivered {} bytes that are not process 1's stream \
                     (process 2's stream at their start: {})",
                    got.len() - k,
                    matching_prefix(&got[k..], PEER_SEED_2) > 0
                );
            }
        }
    }
    eprintln!("========");

    // ---- assertions: the second connection works and its data is intact.
    let redial = redial.unwrap_or_else(|| {
        panic!("{kind:?}: our side never accepted the restarted libutp's connection (waited {REDIAL:?})")
    });
    assert_eq!(log.remote(1), Some(first_remote), "process 2 dialled from the same address");
    let result = log
        .peer_event(1, "result")
        .unwrap_or_else(|| panic!("{kind:?}: libutp process 2 printed no result"))
        .1
        .clone();
    assert_eq!(result["ok"], true, "{kind:?}: libutp process 2: {result}");
    match kind {
        Kind::PeerWasSending => {
            let (_, r, got) = log.read_end(1).expect("our read of the second connection ended");
            assert!(r.is_ok(), "our read of the second connection: {}", describe(r));
            assert_eq!(got.len(), SECOND_BYTES, "bytes of the second connection");
            assert_eq!(
                sha256_hex(got),
                sha256_hex(&seeded_bytes(PEER_SEED_2, SECOND_BYTES)),
                "data of the second connection"
            );
            assert_eq!(result["sha256"], sha256_hex(&seeded_bytes(PEER_SEED_2, SECOND_BYTES)));
        }
        Kind::WeWereSending => {
            let (_, r, got) = log.read_end(1).expect("our read of the second connection ended");
            assert!(r.is_ok(), "our read of the second connection: {}", describe(r));
            assert_eq!(got, seeded_bytes(PEER_SEED_2, 1), "process 2's hello byte");
            let (_, w) = log.write_end(1).expect("our write of the second connection ended");
            assert!(w.is_ok(), "our write of the second connection: {}", describe(w));
            assert_eq!(result["bytes"].as_u64(), Some(SECOND_BYTES as u64), "{result}");
            assert_eq!(
                result["sha256"],
                sha256_hex(&seeded_bytes(OUR_SEED + 1, SECOND_BYTES)),
                "what libutp process 2 received"
            );
        }
    }
    assert_eq!(second_code, Some(0), "libutp process 2's exit code");
    eprintln!("{kind:?}: redial took {redial:?}");
}

async fn bounded(what: &str, fut: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(LIMIT, fut).await.is_err() {
        panic!("{what}: not done within {LIMIT:?}");
    }
}

/// (a) The peer was sending to us when it died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_was_sending() {
    bounded("restart, peer sending", restart(Kind::PeerWasSending)).await;
}

/// (b) We were sending to the peer (data in flight) when it died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_were_sending() {
    bounded("restart, we sending", restart(Kind::WeWereSending)).await;
}
