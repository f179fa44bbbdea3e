//! Half-close, graceful close and abort between this project and libutp
//! (utp-native 2.5.3), each way, as libutp really behaves:
//!
//! - Half-close: the side that shut down its write side still receives
//!   everything the other side sends afterwards (1 MiB, sha256-checked).
//! - Graceful close: the other side reads to the end (libutp: `end`, then
//!   `close` with no error) and our `close().await` returns `Ok`.
//! - Our `reset()`: libutp reports `UTP_ECONNRESET` and closes.
//! - libutp's `destroy()` (`utp_close`) is NOT an abort: libutp queues a FIN
//!   after the data it already holds (what utp-native still buffers in
//!   JavaScript is dropped), stops delivering what it receives, and once
//!   its FIN is acknowledged forgets the connection; every later packet of
//!   ours is answered with a RESET (carrying our send id, with `ack_nr` the
//!   seq_nr of the packet it answers). So our read ends cleanly (possibly
//!   short), and our next write or close fails with `ConnectionReset`.
//! - A libutp that vanishes (the process exits) sends nothing: our side
//!   fails with `TimedOut` after the configured idle timeout.
//!
//! The peer script's `--lifecycle`, `--tail`, `--destroy-after` and
//! `--crash-after` options drive these (see `peers/libutp-peer.js`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libp2p_utp::{UtpSocket, UtpStream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_interop::{loopback_socket, require, seeded_bytes, sha256_hex, Peer, PeerProcess};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Bound of every test (each takes a few seconds).
const LIMIT: Duration = Duration::from_secs(25);
/// Bound of one step inside a test.
const STEP: Duration = Duration::from_secs(10);

async fn socket_with_idle(idle: Duration) -> UtpSocket {
    let mut config = utp_interop::config();
    config.transport_mut().idle_timeout = idle;
    loopback_socket(config).await
}

async fn socket() -> UtpSocket {
    socket_with_idle(Duration::from_secs(20)).await
}

/// A libutp peer and every event it printed so far.
struct Libutp {
    proc: PeerProcess,
    seen: Vec<Value>,
    t0: Instant,
}

impl Libutp {
    fn start(args: &[&str]) -> Libutp {
        Libutp { proc: PeerProcess::libutp(args).unwrap(), seen: Vec::new(), t0: Instant::now() }
    }

    /// Starts a libutp server; returns it and its address.
    async fn server(args: &[&str]) -> (Libutp, SocketAddr) {
        let mut peer = Libutp::start(args);
        let port = peer.until("listening").await["port"].as_u64().unwrap();
        (peer, format!("127.0.0.1:{port}").parse().unwrap())
    }

    /// Waits for the next event named `name` (recording every event).
    async fn until(&mut self, name: &str) -> Value {
        let fut = async {
            while let Some(ev) = self.proc.next_event().await {
                eprintln!("[{:>7.3?}] libutp: {ev}", self.t0.elapsed());
                self.seen.push(ev.clone());
                if ev["event"] == name {
                    return ev;
                }
            }
            panic!("libutp exited before a {name:?} event; saw {:?}", self.seen);
        };
        match tokio::time::timeout(STEP, fut).await {
            Ok(ev) => ev,
            Err(_) => panic!("no {name:?} event from libutp within {STEP:?}; saw {:?}", self.seen),
        }
    }

    /// The events named `name` seen so far.
    fn seen(&self, name: &str) -> Vec<&Value> {
        self.seen.iter().filter(|e| e["event"] == name).collect()
    }

    /// Reads events to the end of its output; returns the exit code.
    async fn finish(&mut self) -> Option<i32> {
        let fut = async {
            while let Some(ev) = self.proc.next_event().await {
                eprintln!("[{:>7.3?}] libutp: {ev}", self.t0.elapsed());
                self.seen.push(ev);
            }
        };
        tokio::time::timeout(STEP, fut).await.expect("libutp ends its output");
        self.proc.wait(STEP).await
    }
}

async fn connect(sock: &UtpSocket, addr: SocketAddr) -> UtpStream {
    tokio::time::timeout(STEP, sock.connect(addr)).await.expect("connect in time").expect("connect")
}

async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {LIMIT:?}"),
    }
}

// ------------------------------------------------------------ (a) half-close

/// Our client sends 1 MiB and shuts down its write side; libutp's echo
/// server echoes it and, after our FIN, sends 1 MiB more (`--tail`). We
/// receive all 2 MiB on the half-closed connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_our_client_first_libutp_keeps_sending() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("half-close, ours first", async {
        let tail = MIB.to_string();
        let (mut peer, addr) =
            Libutp::server(&["echo-server", "0", "--tail", &tail, "--lifecycle", "--conns", "1"])
                .await;
        let sock = socket().await;
        let mut stream = connect(&sock, addr).await;
        let ours = seeded_bytes(21, MIB);
        let (mut rd, mut wr) = stream.split();
        let write = async {
            wr.write_all(&ours).await.expect("write 1 MiB");
            wr.shutdown().await.expect("shutdown");
        };
        let mut got = Vec::with_capacity(2 * MIB);
        let read = rd.read_to_end(&mut got);
        let ((), n) = tokio::join!(write, read);
        assert_eq!(n.expect("read to the end"), 2 * MIB);
        assert_eq!(sha256_hex(&got[..MIB]), sha256_hex(&ours), "the echo");
        assert_eq!(sha256_hex(&got[MIB..]), sha256_hex(&seeded_bytes(1, MIB)), "the tail");
        stream.close().await.expect("our close");

        let result = peer.until("result").await;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["bytes"].as_u64(), Some(MIB as u64), "{result}");
        assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&ours).as_str()), "{result}");
        assert_eq!(result["tail_bytes"].as_u64(), Some(MIB as u64), "{result}");
        // libutp saw our FIN before it wrote the tail.
        assert_eq!(peer.seen("peer-end").len(), 1, "{:?}", peer.seen);
        assert_eq!(peer.finish().await, Some(0));
        assert_eq!(peer.seen("closed")[0]["error"], Value::Null);
    })
    .await;
}

/// Mirror: libutp's client sends 1 MiB and half-closes; our server reads to
/// the end, then sends 1 MiB, which libutp receives on its half-closed
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_libutp_client_first_our_server_keeps_sending() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("half-close, libutp first", async {
        let sock = socket().await;
        let port = sock.local_addr().unwrap().port().to_string();
        let bytes = MIB.to_string();
        let mut peer = Libutp::start(&["send", "127.0.0.1", &port, &bytes, "--lifecycle"]);
        let mut stream = tokio::time::timeout(STEP, sock.accept()).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&seeded_bytes(1, MIB)), "libutp's 1 MiB");
        // libutp's FIN is in; now we send.
        let ours = seeded_bytes(22, MIB);
        stream.write_all(&ours).await.expect("write after the peer's FIN");
        tokio::time::timeout(STEP, stream.close()).await.unwrap().expect("our close");

        let result = peer.until("result").await;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["peer_bytes"].as_u64(), Some(MIB as u64), "{result}");
        assert_eq!(result["peer_sha256"].as_str(), Some(sha256_hex(&ours).as_str()), "{result}");
        assert_eq!(peer.finish().await, Some(0));
        assert_eq!(peer.seen("closed")[0]["error"], Value::Null);
    })
    .await;
}

// ------------------------------------------------------- (b) graceful close

/// We close first: libutp's sink sees the end of our stream, ends its own,
/// and closes without error; our `close()` is `Ok` and our read sees the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_ours_first() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("graceful close, ours first", async {
        // No --conns: the sink would exit on its result, maybe before its
        // connection closed.
        let (mut peer, addr) = Libutp::server(&["sink", "0", "--lifecycle"]).await;
        let sock = socket().await;
        let mut stream = connect(&sock, addr).await;
        let data = seeded_bytes(23, 64 * KIB);
        stream.write_all(&data).await.unwrap();
        tokio::time::timeout(STEP, stream.close()).await.expect("close in time").expect("close");
        let end = peer.until("peer-end").await;
        assert_eq!(end["conn"], 0);
        let mut rest = Vec::new();
        let n = tokio::time::timeout(STEP, stream.read_to_end(&mut rest)).await.unwrap();
        assert_eq!(n.expect("our read ends cleanly"), 0, "libutp's sink sends nothing");
        assert_eq!(stream.read(&mut [0u8; 16]).await.expect("read after the end"), 0);

        let result = peer.until("result").await;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&data).as_str()));
        let closed = peer.until("closed").await;
        assert_eq!(closed["error"], Value::Null, "libutp closed without error");
        assert!(peer.seen("error").is_empty(), "{:?}", peer.seen);
    })
    .await;
}

/// libutp closes first, as a client (`send`) and as a server (`source`):
/// our read returns the whole stream then 0, our `close()` is `Ok`, and
/// libutp sees our end and closes without error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_libutp_first() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("graceful close, libutp first", async {
        let len = 64 * KIB;
        let len_s = len.to_string();
        // libutp client.
        let sock = socket().await;
        let port = sock.local_addr().unwrap().port().to_string();
        let mut peer = Libutp::start(&["send", "127.0.0.1", &port, &len_s, "--lifecycle"]);
        let mut stream = tokio::time::timeout(STEP, sock.accept()).await.unwrap().unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&seeded_bytes(1, len)));
        assert_eq!(stream.read(&mut [0u8; 16]).await.unwrap(), 0);
        tokio::time::timeout(STEP, stream.close()).await.unwrap().expect("our close");
        peer.until("peer-end").await;
        let result = peer.until("result").await;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(peer.finish().await, Some(0));
        assert_eq!(peer.seen("closed")[0]["error"], Value::Null);
        assert!(peer.seen("error").is_empty(), "{:?}", peer.seen);

        // libutp server.
        let (mut peer, addr) =
            Libutp::server(&["source", "0", &len_s, "--lifecycle", "--conns", "1"]).await;
        let mut stream = connect(&sock, addr).await;
        stream.write_all(b"h").await.unwrap(); // releases utp-native's writes
        let mut got = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(sha256_hex(&got), sha256_hex(&seeded_bytes(1, len)));
        tokio::time::timeout(STEP, stream.close()).await.unwrap().expect("our close");
        let result = peer.until("result").await;
        assert_eq!(result["ok"], true, "{result}");
        assert_eq!(result["client_bytes"].as_u64(), Some(1), "{result}");
        assert_eq!(peer.finish().await, Some(0));
        assert_eq!(peer.seen("peer-end").len(), 1, "libutp saw our FIN");
        assert_eq!(peer.seen("closed")[0]["error"], Value::Null);
    })
    .await;
}

// ------------------------------------------------------------- (c) reset

/// Our `reset()` in the middle of an echo: libutp's server reports
/// `UTP_ECONNRESET` and closes; our own side then fails with
/// `ConnectionAborted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_seen_by_libutp_server() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("our reset, libutp server", async {
        let (mut peer, addr) =
            Libutp::server(&["echo-server", "0", "--lifecycle", "--conns", "1"]).await;
        let sock = socket().await;
        let mut stream = connect(&sock, addr).await;
        let data = seeded_bytes(24, 64 * KIB);
        stream.write_all(&data).await.unwrap();
        let mut back = vec![0u8; data.len()];
        tokio::time::timeout(STEP, stream.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(back, data);
        stream.reset();
        let err = peer.until("error").await;
        assert_eq!(err["code"], "UTP_ECONNRESET", "{err}");
        let closed = peer.until("closed").await;
        assert_eq!(closed["error"], "UTP_ECONNRESET", "{closed}");
        let result = peer.until("result").await;
        assert_eq!(result["ok"], false, "{result}");
        assert!(peer.seen("peer-end").is_empty(), "a reset is no end of stream");
        assert_eq!(peer.finish().await, Some(1), "libutp counts the connection as failed");
        let e = stream.read(&mut [0u8; 16]).await.expect_err("read after our reset");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
        let e = stream.write_all(b"x").await.expect_err("write after our reset");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
    })
    .await;
}

/// Our server resets a libutp client in the middle of its upload: the
/// client reports `UTP_ECONNRESET` and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_seen_by_libutp_client() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("our reset, libutp client", async {
        let sock = socket().await;
        let port = sock.local_addr().unwrap().port().to_string();
        let bytes = (64 * MIB).to_string();
        let mut peer = Libutp::start(&["send", "127.0.0.1", &port, &bytes, "--lifecycle"]);
        let mut stream = tokio::time::timeout(STEP, sock.accept()).await.unwrap().unwrap();
        let mut first = vec![0u8; 256 * KIB];
        tokio::time::timeout(STEP, stream.read_exact(&mut first)).await.unwrap().unwrap();
        assert_eq!(first, seeded_bytes(1, first.len()));
        stream.reset();
        let err = peer.until("error").await;
        assert_eq!(err["code"], "UTP_ECONNRESET", "{err}");
        let result = peer.until("result").await;
        assert_eq!(result["ok"], false, "{result}");
        assert!(result["bytes"].as_u64().unwrap() < 64 * MIB as u64, "{result}");
        assert_eq!(peer.finish().await, Some(1));
        assert_eq!(peer.seen("closed")[0]["error"], "UTP_ECONNRESET");
        // Our side. NOTE: `UtpStream::reset` documents that unread data is
        // discarded, but `Connection::read` (utp-proto) hands out what is
        // already buffered before it reports the error: reads after our
        // reset return the rest of what had arrived (tens of KiB here),
        // then fail with `ConnectionAborted`. Checked as it is: the bytes
        // are the right continuation of what had arrived.
        let mut after = Vec::new();
        let mut buf = vec![0u8; 64 * KIB];
        let e = loop {
            match stream.read(&mut buf).await {
                Ok(0) => panic!("a reset connection does not end cleanly"),
                Ok(n) => after.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        let stats = stream.stats();
        eprintln!("after our reset: {} buffered bytes still read, then {e}", after.len());
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
        let total = first.len() + after.len();
        assert!(total as u64 <= stats.bytes_received, "only what had arrived: {stats:?}");
        assert_eq!(after, seeded_bytes(1, total)[first.len()..], "the right bytes");
        let e = stream.write_all(b"x").await.expect_err("write after our reset");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionAborted, "{e}");
    })
    .await;
}

/// libutp's sink destroys the connection after 256 KiB of our 8 MiB: its
/// FIN ends our read cleanly; once libutp has forgotten the connection it
/// answers our next packets with RESETs and our write fails with
/// `ConnectionReset`, long before the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_destroy_while_we_send() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("libutp destroys, we send", async {
        let idle = Duration::from_secs(8);
        // No --conns: the UDP socket stays open after the connection (a
        // libutp that exits sends nothing; see the crash test).
        let after = (256 * KIB).to_string();
        let (mut peer, addr) =
            Libutp::server(&["sink", "0", "--destroy-after", &after, "--lifecycle"]).await;
        let sock = socket_with_idle(idle).await;
        let stream = connect(&sock, addr).await;
        let t0 = Instant::now();
        let (mut rd, mut wr) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let r = rd.read_to_end(&mut got).await.map(|_| got.len());
            (r, t0.elapsed())
        });
        let data = seeded_bytes(25, 8 * MIB);
        let w = tokio::time::timeout(STEP, wr.write_all(&data)).await.expect("write ends");
        let write_failed_at = t0.elapsed();
        let (r, read_ended_at) = reader.await.unwrap();
        eprintln!(
            "read ended {r:?} at {read_ended_at:?}; write {w:?} at {write_failed_at:?}; {:?}",
            wr.stats()
        );
        assert_eq!(r.expect("libutp's FIN ends our read cleanly"), 0);
        let e = w.expect_err("libutp forgot the connection: the write fails");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert!(read_ended_at <= write_failed_at, "the FIN came first");
        assert!(write_failed_at < idle / 2, "a RESET, not a timeout: {write_failed_at:?}");
        let e = wr.close().await.expect_err("close after the reset");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");

        let destroyed = peer.until("destroyed").await;
        assert!(destroyed["received"].as_u64().unwrap() >= 256 * KIB as u64, "{destroyed}");
        let closed = peer.until("closed").await;
        assert_eq!(closed["error"], Value::Null, "destroy() is no error for libutp");
        let result = peer.until("result").await;
        assert_eq!(result["ok"], false, "{result}");
        let got = result["bytes"].as_u64().unwrap() as usize;
        assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&data[..got]).as_str()));
    })
    .await;
}

/// libutp's source destroys the connection after handing 256 KiB of 8 MiB
/// to libutp: we read a clean, short stream (a prefix of the data), then,
/// once libutp has forgotten the connection, our next packets draw RESETs:
/// our close fails with `ConnectionReset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_destroy_while_it_sends() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("libutp destroys, it sends", async {
        let idle = Duration::from_secs(8);
        let len = 8 * MIB;
        let len_s = len.to_string();
        let after = (256 * KIB).to_string();
        let (mut peer, addr) =
            Libutp::server(&["source", "0", &len_s, "--destroy-after", &after, "--lifecycle"])
                .await;
        let sock = socket_with_idle(idle).await;
        let mut stream = connect(&sock, addr).await;
        stream.write_all(b"h").await.unwrap();
        let mut got = Vec::new();
        let n = tokio::time::timeout(STEP, stream.read_to_end(&mut got))
            .await
            .expect("read ends")
            .expect("libutp's FIN ends our read cleanly");
        assert!(n > 0 && n <= 256 * KIB, "a short stream: {n} bytes");
        assert_eq!(got, seeded_bytes(1, n), "a prefix of libutp's stream");
        // libutp forgets the connection once its FIN is acknowledged.
        let closed = peer.until("closed").await;
        assert_eq!(closed["error"], Value::Null);
        let t0 = Instant::now();
        stream.write_all(b"more").await.expect("queued");
        let e = tokio::time::timeout(STEP, stream.close())
            .await
            .expect("close ends")
            .expect_err("libutp answers with a RESET");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        assert!(t0.elapsed() < idle / 2, "a RESET, not a timeout: {:?}", t0.elapsed());
        let result = peer.until("result").await;
        assert_eq!(result["ok"], false, "{result}");
        assert_eq!(peer.seen("destroyed").len(), 1);
    })
    .await;
}

/// libutp's process exits in the middle of our upload without closing
/// anything: nothing more comes, and both our write and our read fail with
/// `TimedOut` after the idle timeout (2 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_vanishes_we_time_out() {
    if !require(Peer::Libutp) {
        return;
    }
    bounded("libutp vanishes", async {
        let idle = Duration::from_secs(2);
        let after = (256 * KIB).to_string();
        let (mut peer, addr) =
            Libutp::server(&["sink", "0", "--crash-after", &after, "--lifecycle"]).await;
        let sock = socket_with_idle(idle).await;
        let stream = connect(&sock, addr).await;
        let (mut rd, mut wr) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let r = rd.read_to_end(&mut got).await;
            (r, Instant::now())
        });
        let data = seeded_bytes(26, 8 * MIB);
        let write = tokio::spawn(async move {
            let r = wr.write_all(&data).await;
            (r, Instant::now(), wr)
        });
        peer.until("crash").await;
        let crashed_at = Instant::now();
        assert_eq!(peer.finish().await, Some(4), "the peer exited on purpose");
        assert!(peer.seen("closed").is_empty(), "libutp closed nothing");
        let (w, write_failed_at, wr) = write.await.unwrap();
        let (r, read_failed_at) = reader.await.unwrap();
        eprintln!(
            "write {w:?} after {:?}; read {r:?} after {:?}; {:?}",
            write_failed_at - crashed_at,
            read_failed_at - crashed_at,
            wr.stats()
        );
        for (what, res, at) in
            [("write", w.map(|()| 0), write_failed_at), ("read", r, read_failed_at)]
        {
            let e = res.expect_err(what);
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{what}: {e}");
            let after = at.saturating_duration_since(crashed_at);
            assert!(
                after >= idle - Duration::from_millis(300)
                    && after <= idle + Duration::from_secs(2),
                "{what} failed {after:?} after libutp vanished (idle timeout {idle:?})"
            );
        }
    })
    .await;
}
