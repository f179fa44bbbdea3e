//! Byte-for-byte transfers between this project and librqbit-utp 0.7, the
//! uTP stack of the rqbit BitTorrent client (the most used pure-Rust one:
//! CUBIC, its own SACK and MTU probing). It runs in this process as a peer:
//! its crate is pinned in the lock file, so it is never missing.
//!
//! librqbit-utp has no half-close: its FIN ends the connection both ways
//! (see `interop/QUIRKS.md`). The echo here is therefore framed: the
//! client sends an 8-byte length and that many bytes, the server sends the
//! bytes back, and only then does the client close; the server closes when
//! it reads the end. What happens on a half-close has tests of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_utp::ExtFlags;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use utp_interop::relay::{Action, Direction, Filter, Impairment, Relay, RelayConfig};
use utp_interop::{loopback_socket, loopback_socket_on, seeded_bytes, sha256_hex};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);

fn with_extensions() -> libp2p_utp::Config {
    let mut config = utp_interop::config();
    let t = config.transport_mut();
    t.extensions = ExtFlags(t.extensions.0 | ExtFlags::METADATA.0 | ExtFlags::SYN_DATA.0);
    config
}

/// `RUST_LOG=librqbit_utp=trace,libp2p_utp=debug` shows both stacks.
fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

type Rqbit = Arc<librqbit_utp::UtpSocketUdp>;

async fn rqbit_socket(ip: IpAddr, opts: librqbit_utp::SocketOpts) -> Rqbit {
    let addr = SocketAddr::new(ip, 0);
    librqbit_utp::UtpSocket::new_udp_with_opts(addr, opts, Default::default())
        .await
        .expect("librqbit-utp binds")
}

/// librqbit-utp as it can survive 10 % loss, whoever the peer is (see
/// `interop/QUIRKS.md`): a 60 s inactivity timeout instead of its 10 s (its
/// retransmission timeout grows past 10 s and it gives up on a healthy
/// peer), and an MTU probe given up only after 4 retransmissions instead of
/// 1 (when it gives a probe up it drops the probe's bytes from the stream;
/// `rqbit_mtu_probe_lost_twice_loses_its_bytes` shows it). Without MTU
/// probing (a link MTU of 576) it survives too, but its 528-byte segments
/// make a 256 KiB echo at 10 % loss take over a minute.
fn rqbit_patient() -> librqbit_utp::SocketOpts {
    librqbit_utp::SocketOpts {
        remote_inactivity_timeout: Some(Duration::from_secs(60)),
        mtu_probe_max_retransmissions: Some(4),
        ..Default::default()
    }
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// Serves one framed echo on `stream`: reads the length and sends that many
/// bytes back as they come, then reads to the client's end of stream and
/// shuts down. Returns the length.
async fn framed_echo_serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
) -> std::io::Result<u64> {
    let len = stream.read_u64().await?;
    let mut left = len;
    let mut buf = vec![0u8; 64 * KIB];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = stream.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        stream.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    stream.flush().await?;
    let extra = stream.read(&mut buf).await?;
    if extra != 0 {
        return Err(std::io::Error::other(format!("{extra} bytes past the echo")));
    }
    stream.shutdown().await?;
    Ok(len)
}

/// The client of a framed echo: sends `len` seeded bytes and checks what
/// comes back (sha256). Returns the stream, open.
async fn framed_echo_client<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    len: usize,
    seed: u32,
) -> S {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let data = seeded_bytes(seed, len);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_u64(sent.len() as u64).await.unwrap();
        wr.write_all(&sent).await.unwrap();
        wr.flush().await.unwrap();
        wr
    });
    let mut back = vec![0u8; len];
    tokio::time::timeout(LIMIT, rd.read_exact(&mut back))
        .await
        .unwrap_or_else(|_| panic!("echo of {len} bytes in time"))
        .unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data), "echo of {len} bytes");
    let wr = writer.await.unwrap();
    rd.unsplit(wr)
}

/// Serves framed echoes on every connection `accept` yields; every
/// connection's result goes to the receiver.
fn spawn_echo_server<S, F, Fut>(accept: F) -> UnboundedReceiver<std::io::Result<u64>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<S>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut accept = accept;
    tokio::spawn(async move {
        while let Some(stream) = accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(framed_echo_serve(stream).await);
            });
        }
    });
    rx
}

/// A relay in front of `upstream`, if asked for.
async fn via(relay: Option<RelayConfig>) -> Option<Relay> {
    match relay {
        Some(config) => Some(Relay::start(config).await.unwrap()),
        None => None,
    }
}

fn lossy(upstream: SocketAddr, p: f64, seed: u64) -> Option<RelayConfig> {
    Some(
        RelayConfig::new(upstream).with_impairment(Impairment::none().with_loss(p)).with_seed(seed),
    )
}

/// Waits for `n` echo results from a server and asserts each served `len`.
/// With `close_may_be_lost`, a server whose close did not end cleanly in
/// that time (librqbit-utp's lost FIN, see `Run`) is counted instead: the
/// client has checked the echo's bytes already. Returns the clean ends.
async fn served(
    rx: &mut UnboundedReceiver<std::io::Result<u64>>,
    n: usize,
    len: usize,
    who: &str,
    close_may_be_lost: Option<Duration>,
) -> usize {
    let mut clean = 0;
    for i in 0..n {
        let r = tokio::time::timeout(close_may_be_lost.unwrap_or(LIMIT), rx.recv()).await;
        match (r, close_may_be_lost) {
            (Ok(Some(Ok(served))), _) => {
                assert_eq!(served, len as u64, "{who}: echo {i}");
                clean += 1;
            }
            (Ok(Some(Err(e))), Some(_)) => eprintln!("{who}: echo {i} ended with {e}"),
            (Err(_), Some(_)) => {
                eprintln!("{who}: {} echoes did not end in time", n - i);
                break;
            }
            (Ok(Some(Err(e))), None) => panic!("{who}: echo {i}: {e}"),
            (Ok(None), _) => panic!("{who}: the server stopped"),
            (Err(_), None) => panic!("{who}: echo {i} of {n} ended in time"),
        }
    }
    clean
}

/// One interop run: `conns` connections at once on one socket each side,
/// each a framed echo of `len` bytes, through a relay in front of the
/// accepting side when `relay` gives one.
struct Run {
    len: usize,
    conns: usize,
    relay: fn(SocketAddr) -> Option<RelayConfig>,
    ours: libp2p_utp::Config,
    rqbit: librqbit_utp::SocketOpts,
    ip: IpAddr,
    /// Through loss librqbit-utp's FIN may be lost for good: it waits 1 s
    /// for the answer to its FIN and then drops the connection without
    /// resending it. With this set, our dial waits this long for the
    /// close and counts the ones it saw instead of requiring all.
    close_may_be_lost: Option<Duration>,
}

fn run(len: usize) -> Run {
    Run {
        len,
        conns: 1,
        relay: |_| None,
        ours: utp_interop::config(),
        rqbit: librqbit_utp::SocketOpts::default(),
        ip: V4,
        close_may_be_lost: None,
    }
}

impl Run {
    fn conns(self, conns: usize) -> Self {
        Run { conns, ..self }
    }
    fn relay(self, relay: fn(SocketAddr) -> Option<RelayConfig>) -> Self {
        Run { relay, ..self }
    }
    fn ours(self, ours: libp2p_utp::Config) -> Self {
        Run { ours, ..self }
    }
    fn rqbit(self, rqbit: librqbit_utp::SocketOpts) -> Self {
        Run { rqbit, ..self }
    }
    fn ip(self, ip: IpAddr) -> Self {
        Run { ip, ..self }
    }
    fn close_may_be_lost(self, wait: Duration) -> Self {
        Run { close_may_be_lost: Some(wait), ..self }
    }

    /// Our connections to a librqbit-utp echo server: each sends `len`
    /// bytes, reads them back, closes and reads librqbit-utp's close; the
    /// server must see every close.
    async fn ours_to_rqbit(self) {
        trace();
        let Run { len, conns, relay, ours, rqbit, ip, close_may_be_lost } = self;
        let server = rqbit_socket(ip, rqbit).await;
        let addr = server.bind_addr();
        let mut results = spawn_echo_server({
            let server = server.clone();
            move || {
                let server = server.clone();
                async move { server.accept().await.ok() }
            }
        });
        let relay = via(relay(addr)).await;
        let to = relay.as_ref().map_or(addr, Relay::local_addr);
        let sock = loopback_socket_on(ip, ours).await;
        // librqbit-utp keeps at most 32 SYNs waiting for accept() and
        // resets the rest: at most 16 of our dials are in their handshake
        // at once.
        let handshakes = Arc::new(tokio::sync::Semaphore::new(16));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..conns)
            .map(|i| {
                let sock = sock.clone();
                let handshakes = handshakes.clone();
                tokio::spawn(async move {
                    let permit = handshakes.acquire_owned().await.unwrap();
                    let stream =
                        tokio::time::timeout(LIMIT, sock.connect(to)).await.unwrap().unwrap();
                    drop(permit);
                    let mut stream = framed_echo_client(stream, len, i as u32 + 1).await;
                    stream.shutdown().await.unwrap();
                    let echoed = t0.elapsed();
                    let wait = close_may_be_lost.unwrap_or(LIMIT);
                    let end = tokio::time::timeout(wait, stream.read(&mut [0u8; 16])).await;
                    let closed = match end {
                        Ok(end) => {
                            assert_eq!(end.unwrap(), 0, "librqbit-utp's close");
                            true
                        }
                        Err(_) if close_may_be_lost.is_some() => false,
                        Err(_) => panic!("librqbit-utp's close in time"),
                    };
                    (stream.stats(), echoed, closed)
                })
            })
            .collect();
        let mut rexmits = 0;
        let mut timeouts = 0;
        let mut echoed = Duration::ZERO;
        let mut closes = 0;
        for t in tasks {
            let (stats, at, closed) = t.await.unwrap();
            rexmits += stats.retransmits;
            timeouts += stats.timeouts;
            echoed = echoed.max(at);
            closes += usize::from(closed);
        }
        let clean =
            served(&mut results, conns, len, "librqbit-utp's server", close_may_be_lost).await;
        let closed = t0.elapsed();
        eprintln!(
            "ours -> librqbit-utp over {ip}: {conns} x {len} B echoed in {:.2} s \
             ({:.1} MB/s each way), closed at {:.2} s, its close seen on {closes} of \
             {conns} (its server ended cleanly on {clean}), our retransmissions {rexmits} (timeouts {timeouts}), relay {:?}",
            echoed.as_secs_f64(),
            (conns * len) as f64 / 1e6 / echoed.as_secs_f64(),
            closed.as_secs_f64(),
            relay.map(|r| r.stats())
        );
    }

    /// librqbit-utp's connections to our echo server.
    async fn rqbit_to_ours(self) {
        trace();
        let Run { len, conns, relay, ours, rqbit, ip, close_may_be_lost } = self;
        let server = loopback_socket_on(ip, ours).await;
        let addr = server.local_addr().unwrap();
        let mut results = spawn_echo_server({
            let server = server.clone();
            move || {
                let server = server.clone();
                async move { server.accept().await.ok() }
            }
        });
        let relay = via(relay(addr)).await;
        let to = relay.as_ref().map_or(addr, Relay::local_addr);
        let client = rqbit_socket(ip, rqbit).await;
        // librqbit-utp allows at most 4 of its dials to one address in
        // their handshake at once (the fifth fails at once).
        let handshakes = Arc::new(tokio::sync::Semaphore::new(4));
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..conns)
            .map(|i| {
                let client = client.clone();
                let handshakes = handshakes.clone();
                tokio::spawn(async move {
                    let permit = handshakes.acquire_owned().await.unwrap();
                    let stream =
                        tokio::time::timeout(LIMIT, client.connect(to)).await.unwrap().unwrap();
                    drop(permit);
                    let stream = framed_echo_client(stream, len, i as u32 + 1).await;
                    let echoed = t0.elapsed();
                    // Its shutdown returns once the connection is closed;
                    // the stream is kept until our server saw the end.
                    let (rd, mut wr) = stream.split();
                    tokio::spawn(async move {
                        let _ = wr.shutdown().await;
                        wr
                    });
                    (rd, echoed)
                })
            })
            .collect();
        let mut streams = Vec::new();
        let mut echoed = Duration::ZERO;
        for t in tasks {
            let (rd, at) = t.await.unwrap();
            streams.push(rd);
            echoed = echoed.max(at);
        }
        let clean = served(&mut results, conns, len, "our server", close_may_be_lost).await;
        let closed = t0.elapsed();
        eprintln!(
            "librqbit-utp -> ours over {ip}: {conns} x {len} B echoed in {:.2} s \
             ({:.1} MB/s each way), our server saw {clean} of {conns} closes by {:.2} s, \
             relay {:?}",
            echoed.as_secs_f64(),
            (conns * len) as f64 / 1e6 / echoed.as_secs_f64(),
            closed.as_secs_f64(),
            relay.map(|r| r.stats())
        );
    }
}

// ---------------------------------------------------------------------
// Sizes, both ways
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_1_byte() {
    run(1).ours_to_rqbit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_1_mib() {
    run(MIB).ours_to_rqbit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_64_mib() {
    run(64 * MIB).ours_to_rqbit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_1_byte() {
    run(1).rqbit_to_ours().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_1_mib() {
    run(MIB).rqbit_to_ours().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_64_mib() {
    run(64 * MIB).rqbit_to_ours().await;
}

// ---------------------------------------------------------------------
// IPv6
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_over_ipv6() {
    run(MIB).ip(V6).ours_to_rqbit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_over_ipv6() {
    run(MIB).ip(V6).rqbit_to_ours().await;
}

/// The relay on `::1`, 2 % loss each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_over_ipv6_with_loss() {
    run(MIB).ip(V6).relay(|up| lossy(up, 0.02, 20)).rqbit(rqbit_patient()).ours_to_rqbit().await;
}

// ---------------------------------------------------------------------
// Many connections on one socket each side
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_100_connections() {
    run(64 * KIB).conns(100).ours_to_rqbit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_100_connections() {
    run(64 * KIB).conns(100).rqbit_to_ours().await;
}

// ---------------------------------------------------------------------
// Loss through our relay (in front of the accepting side, both ways).
// librqbit-utp runs as `rqbit_patient`: with its defaults loss can make it
// drop a healthy connection or lose a probe's bytes (QUIRKS.md).
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_2_percent_loss() {
    run(MIB).relay(|up| lossy(up, 0.02, 16)).rqbit(rqbit_patient()).ours_to_rqbit().await;
}

/// 64 KiB: with librqbit-utp's echo server the echo back waits on its
/// retransmission timeouts, which grow with every loss (it samples the RTT
/// of retransmitted segments); 256 KiB took 6 to 58 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_10_percent_loss() {
    run(64 * KIB)
        .relay(|up| lossy(up, 0.10, 17))
        .rqbit(rqbit_patient())
        .close_may_be_lost(Duration::from_secs(15))
        .ours_to_rqbit()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_2_percent_loss() {
    run(MIB).relay(|up| lossy(up, 0.02, 18)).rqbit(rqbit_patient()).rqbit_to_ours().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_10_percent_loss() {
    run(256 * KIB)
        .relay(|up| lossy(up, 0.10, 19))
        .rqbit(rqbit_patient())
        .close_may_be_lost(Duration::from_secs(15))
        .rqbit_to_ours()
        .await;
}

fn drop_first_syn_ack(up: SocketAddr) -> Option<RelayConfig> {
    Some(RelayConfig::new(up).with_filter(Filter::drop_syn_acks(1)))
}

/// librqbit-utp's SYN-ACK is lost: our SYN goes again and gets an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_syn_ack_lost() {
    run(64 * KIB).relay(drop_first_syn_ack).ours_to_rqbit().await;
}

/// Our SYN-ACK is lost. librqbit-utp never sends its SYN again: our
/// SYN-ACK goes again after 1 s and the dial connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_syn_ack_lost() {
    run(64 * KIB).relay(drop_first_syn_ack).rqbit_to_ours().await;
}

/// librqbit-utp 0.7.0 loses data when an MTU probe and its retransmission
/// both go unacknowledged: it pops the probe from its send queue without
/// taking the probe's bytes back, so the segments sent after it start past
/// them. Every sequence number arrives and is acknowledged, yet the stream
/// is short by the probe's payload. Nothing a receiver can detect at the
/// uTP layer; this test fails (and QUIRKS.md needs an update) once a
/// librqbit-utp release fixes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_mtu_probe_lost_twice_loses_its_bytes() {
    trace();
    let sock = loopback_socket(utp_interop::config()).await;
    let server = sock.clone();
    // Reads until the end of the stream or until nothing came for 3 s.
    let reader = tokio::spawn(async move {
        let mut stream = server.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * KIB];
        loop {
            match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
                Ok(Ok(0)) => return (got, "the end of the stream".to_string()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return (got, format!("error {e}")),
                Err(_) => return (got, "3 s of silence".to_string()),
            }
        }
    });
    // The first DATA datagram from librqbit-utp larger than every one
    // before it is an MTU probe: drop it and its retransmission (same
    // seq_nr).
    let mut largest = 0usize;
    let mut probe: Option<(u16, usize)> = None;
    let mut dropped = 0;
    let filter = Filter::new(move |dir, bytes| {
        let data = bytes.len() > 20 && bytes[0] >> 4 == 0 && bytes[0] & 0xf == 1;
        if dir != Direction::ToUpstream || !data || dropped == 2 {
            return Action::Pass;
        }
        let seq = u16::from_be_bytes([bytes[16], bytes[17]]);
        match probe {
            Some((s, _)) if s == seq => {
                dropped += 1;
                Action::Drop
            }
            None if largest > 0 && bytes.len() > largest => {
                probe = Some((seq, bytes.len()));
                dropped += 1;
                Action::Drop
            }
            _ => {
                largest = largest.max(bytes.len());
                Action::Pass
            }
        }
    });
    let relay = Relay::start(RelayConfig::new(sock.local_addr().unwrap()).with_filter(filter))
        .await
        .unwrap();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let mut stream = rqbit.connect(relay.local_addr()).await.unwrap();
    let data = seeded_bytes(5, 256 * KIB);
    stream.write_all(&data).await.unwrap();
    let (rd, mut wr) = stream.split();
    tokio::spawn(async move {
        let _ = wr.shutdown().await;
        (rd, wr)
    });
    let (got, end) = tokio::time::timeout(LIMIT, reader).await.expect("the read ends").unwrap();
    let filtered = relay.stats().to_upstream.filtered;
    eprintln!(
        "librqbit-utp's MTU probe and its retransmission dropped ({filtered} datagrams): \
         we read {} of {} bytes, then {end}; sha256 {}",
        got.len(),
        data.len(),
        if got == data { "matches" } else { "differs" }
    );
    assert_eq!(filtered, 2, "the probe and its retransmission");
    assert!(got.len() < data.len(), "librqbit-utp delivered every byte: fixed upstream?");
    // The stream is the data with one hole the size of the probe's payload.
    let hole = data.len() - got.len();
    let at = got.iter().zip(&data).position(|(a, b)| a != b).unwrap_or(got.len());
    assert_eq!(got[at..], data[at + hole..], "one hole of {hole} bytes at offset {at}");
    eprintln!("the hole: {hole} bytes at offset {at}");
}

// ---------------------------------------------------------------------
// Close, reset, half-close
// ---------------------------------------------------------------------

/// Reads `stream` to its end; returns the bytes and how it ended.
async fn read_to_end<S: AsyncRead + Unpin>(stream: &mut S) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// Our RESET: librqbit-utp's next read fails (not a clean end), and our own
/// stream says it was aborted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_seen_by_rqbit() {
    trace();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let addr = rqbit.bind_addr();
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let mut stream = rqbit.accept().await.unwrap();
        let mut first = vec![0u8; 64 * KIB];
        stream.read_exact(&mut first).await.unwrap();
        got_tx.send(()).unwrap();
        read_to_end(&mut stream).await
    });
    let sock = loopback_socket(utp_interop::config()).await;
    let mut stream = sock.connect(addr).await.unwrap();
    stream.write_all(&seeded_bytes(3, 64 * KIB)).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::timeout(LIMIT, got_rx).await.unwrap().unwrap();
    stream.reset();
    let (rest, end) = tokio::time::timeout(LIMIT, server).await.expect("reset seen").unwrap();
    let err = end.expect_err("a reset is not a clean end of stream");
    eprintln!(
        "our reset: librqbit-utp's read failed with {err} ({} bytes after the first)",
        rest.len()
    );
    assert!(rest.is_empty());
    let ours = stream.write_all(b"x").await.expect_err("written after our reset");
    assert_eq!(ours.kind(), std::io::ErrorKind::ConnectionAborted);
}

/// librqbit-utp's RESET: it keeps at most 32 SYNs waiting for accept() and
/// resets the others; our dial is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_reset_refuses_our_dial() {
    trace();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let addr = rqbit.bind_addr();
    let sock = loopback_socket(utp_interop::config()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = Instant::now();
    let dials: Vec<_> = (0..40)
        .map(|_| {
            let sock = sock.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(sock.connect(addr).await.map(|_| ()));
            })
        })
        .collect();
    let mut refused = 0;
    while refused < 8 {
        let r = tokio::time::timeout(LIMIT, rx.recv()).await.expect("refusals in time").unwrap();
        let err = r.expect_err("nobody accepts: no dial connects");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        refused += 1;
    }
    eprintln!("librqbit-utp's reset: 8 of 40 dials refused after {:.2?}", t0.elapsed());
    for d in dials {
        d.abort();
    }
    drop(rqbit);
}

/// librqbit-utp closes after sending: we read every byte and then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_close_seen_by_us() {
    trace();
    let sock = loopback_socket(utp_interop::config()).await;
    let addr = sock.local_addr().unwrap();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let data = seeded_bytes(4, MIB);
    let sent = data.clone();
    let client = tokio::spawn(async move {
        let mut stream = rqbit.connect(addr).await.unwrap();
        stream.write_all(&sent).await.unwrap();
        stream.shutdown().await
    });
    let mut stream = tokio::time::timeout(LIMIT, sock.accept()).await.unwrap().unwrap();
    let t0 = Instant::now();
    let (got, end) = tokio::time::timeout(LIMIT, read_to_end(&mut stream)).await.unwrap();
    end.expect("a clean end of stream");
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let read = t0.elapsed();
    tokio::time::timeout(LIMIT, stream.shutdown()).await.unwrap().unwrap();
    let shutdown = tokio::time::timeout(LIMIT, client).await.unwrap().unwrap();
    eprintln!(
        "librqbit-utp's close: we read {} B and the end after {read:.2?}; its shutdown \
         returned {shutdown:?} after {:.2?}",
        got.len(),
        t0.elapsed()
    );
}

/// We close after sending: librqbit-utp reads every byte and then the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_close_seen_by_rqbit() {
    trace();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let addr = rqbit.bind_addr();
    let server = tokio::spawn(async move {
        let mut stream = rqbit.accept().await.unwrap();
        read_to_end(&mut stream).await
    });
    let sock = loopback_socket(utp_interop::config()).await;
    let mut stream = sock.connect(addr).await.unwrap();
    let data = seeded_bytes(5, MIB);
    let t0 = Instant::now();
    stream.write_all(&data).await.unwrap();
    tokio::time::timeout(LIMIT, stream.close()).await.unwrap().unwrap();
    let (got, end) = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    end.expect("a clean end of stream");
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let (after, our_end) = tokio::time::timeout(LIMIT, read_to_end(&mut stream)).await.unwrap();
    eprintln!(
        "our close: librqbit-utp read {} B and the end; we read {} B and {our_end:?} \
         after {:.2?}",
        got.len(),
        after.len(),
        t0.elapsed()
    );
}

/// Our half-close while librqbit-utp still has bytes for us. It has no
/// half-close: our FIN ends its sending too, so we get a prefix of its
/// bytes (often none) and then the end, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_half_close_to_rqbit() {
    trace();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let addr = rqbit.bind_addr();
    let data = seeded_bytes(6, MIB);
    let sent = data.clone();
    let server = tokio::spawn(async move {
        let mut stream = rqbit.accept().await.unwrap();
        let n = stream.read_u64().await.unwrap();
        assert_eq!(n, sent.len() as u64);
        let wrote = stream.write_all(&sent).await;
        let flushed = stream.flush().await;
        (wrote, flushed)
    });
    let sock = loopback_socket(utp_interop::config()).await;
    let mut stream = sock.connect(addr).await.unwrap();
    stream.write_u64(data.len() as u64).await.unwrap();
    stream.shutdown().await.unwrap();
    let (got, end) = tokio::time::timeout(LIMIT, read_to_end(&mut stream))
        .await
        .expect("the connection ends after our half-close");
    assert!(data.starts_with(&got), "what arrived is a prefix of what was sent");
    let theirs = tokio::time::timeout(LIMIT, server).await.expect("its writer returns").unwrap();
    eprintln!(
        "our half-close: we read {} of {} B and then {end:?}; librqbit-utp's write and flush: \
         {theirs:?}",
        got.len(),
        data.len()
    );
}

/// librqbit-utp's half-close while we still send: we read its end at once
/// and go on sending; what it does with our bytes is its business, but our
/// side ends, without a hang, with every byte it acknowledged counted. We
/// send 64 KiB, what our send buffer takes at once: it stops acknowledging
/// soon after its FIN, so a larger write would wait for our retransmission
/// limit (about a minute) before failing, as a TCP write to a vanished
/// peer waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_half_close_to_us() {
    trace();
    let sock = loopback_socket(utp_interop::config()).await;
    let addr = sock.local_addr().unwrap();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let client = tokio::spawn(async move {
        let stream = rqbit.connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.split();
        wr.write_all(b"request").await.unwrap();
        tokio::spawn(async move {
            let _ = wr.shutdown().await;
        });
        read_to_end(&mut rd).await
    });
    let mut stream = tokio::time::timeout(LIMIT, sock.accept()).await.unwrap().unwrap();
    let (request, end) = tokio::time::timeout(LIMIT, read_to_end(&mut stream)).await.unwrap();
    end.expect("its FIN is a clean end");
    assert_eq!(request, b"request");
    let data = seeded_bytes(7, 64 * 1024);
    let wrote = tokio::time::timeout(LIMIT, async {
        stream.write_all(&data).await?;
        stream.close().await
    })
    .await
    .expect("our write and close end");
    let (got, theirs) =
        tokio::time::timeout(LIMIT, client).await.expect("its reader ends").unwrap();
    assert!(data.starts_with(&got), "what arrived is a prefix of what was sent");
    eprintln!(
        "librqbit-utp's half-close: our write and close {wrote:?}; it read {} of {} B and \
         then {theirs:?}; our stats {:?}",
        got.len(),
        data.len(),
        stream.stats()
    );
}

// ---------------------------------------------------------------------
// Our extensions
// ---------------------------------------------------------------------

/// Our extensions offered, with the first bytes on the SYN. librqbit-utp
/// drops a SYN that carries data, unanswered: the dial connects with the
/// SYN sent again without it, one SYN timeout later, nothing is negotiated
/// (the record is ignored), and every byte arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_syn_data_and_extensions_to_rqbit() {
    trace();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let addr = rqbit.bind_addr();
    let mut results = spawn_echo_server(move || {
        let rqbit = rqbit.clone();
        async move { rqbit.accept().await.ok() }
    });
    let sock = loopback_socket(with_extensions()).await;
    let len = 200 * KIB;
    let data = seeded_bytes(9, len);
    let mut first = (len as u64).to_be_bytes().to_vec();
    first.extend_from_slice(&data[..500]);
    let t0 = Instant::now();
    let stream =
        tokio::time::timeout(LIMIT, sock.connect_with_data(addr, &first)).await.unwrap().unwrap();
    let connected = t0.elapsed();
    assert_eq!(stream.negotiated(), ExtFlags::NONE);
    let (mut rd, mut wr) = stream.into_split();
    let rest = data[500..].to_vec();
    let writer = tokio::spawn(async move {
        wr.write_all(&rest).await.unwrap();
        wr
    });
    let mut back = vec![0u8; len];
    tokio::time::timeout(LIMIT, rd.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let mut wr = writer.await.unwrap();
    wr.shutdown().await.unwrap();
    served(&mut results, 1, len, "librqbit-utp's server", None).await;
    eprintln!("SYN data to librqbit-utp: connected after {connected:.2?}, {len} B echoed whole");
}

/// An early-data dial to librqbit-utp: it drops the padded SYN with data,
/// the SYN goes again bare after 1 s, and the bytes follow as DATA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_early_dial_to_rqbit() {
    trace();
    let rqbit = rqbit_socket(V4, Default::default()).await;
    let addr = rqbit.bind_addr();
    let mut results = spawn_echo_server(move || {
        let rqbit = rqbit.clone();
        async move { rqbit.accept().await.ok() }
    });
    let sock = loopback_socket(with_extensions()).await;
    let len = 200 * KIB;
    let t0 = Instant::now();
    let stream = sock.connect_early(addr).expect("dial");
    let stream = framed_echo_client(stream, len, 10).await;
    let echoed = t0.elapsed();
    assert_eq!(stream.negotiated(), ExtFlags::NONE);
    let mut stream = stream;
    stream.shutdown().await.unwrap();
    served(&mut results, 1, len, "librqbit-utp's server", None).await;
    eprintln!("early dial to librqbit-utp: {len} B echoed whole after {echoed:.2?}");
}

/// Our server with the extensions on: librqbit-utp offers none, and
/// nothing changes on the wire for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rqbit_to_ours_with_extensions_on() {
    run(MIB).ours(with_extensions()).rqbit_to_ours().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_rqbit_with_extensions_on() {
    run(MIB).ours(with_extensions()).ours_to_rqbit().await;
}
