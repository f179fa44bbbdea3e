//! The interop matrix: whole transfers between this project and a real peer
//! (libutp, libtorrent or librqbit-utp), optionally through the impairing
//! [relay](crate::relay), as functions that return a measurement or the
//! reason of a failure instead of panicking. `interop-matrix` runs them and
//! prints a table.
//!
//! Every transfer is checked byte for byte: sha256 of the whole stream on
//! both sides (libutp), SHA-1 of every piece plus the file's sha256
//! (libtorrent).
//!
//! | peer | [`Direction`] | [`Dialer`] | what runs |
//! |---|---|---|---|
//! | libutp | ours->peer | ours | our client writes into libutp's `sink` |
//! | libutp | peer->ours | peer | libutp's `send` client writes into our server |
//! | libutp | echo | ours | our client through libutp's `echo-server` |
//! | libutp | echo | peer | libutp's `echo-client` through our echo server |
//! | libtorrent | ours->peer | peer | libtorrent downloads a torrent from our seeder |
//! | libtorrent | peer->ours | ours | our downloader takes a torrent libtorrent seeds |
//! | librqbit-utp | ours->peer | ours | our client writes into its sink (framed, see [`librqbit`]) |
//! | librqbit-utp | peer->ours | peer | its client writes into our sink |
//! | librqbit-utp | echo | ours | our client through its echo server |
//! | librqbit-utp | echo | peer | its client through our echo server |
//!
//! libtorrent and librqbit-utp run over IPv4 and IPv6 loopback ([`Case::ip`]);
//! libutp (utp-native) is IPv4 only.
//!
//! With loss, the relay stands in front of the accepting side and drops
//! that share of the datagrams both ways (seeded).
//!
//! libtorrent under heavy loss: libtorrent 2.x closes a uTP connection
//! when a packet it has already sent `utp_num_resends` (3) times times out
//! once more, and says nothing to the other side (its `tick()` in
//! `utp_stream.cpp`). At 10 % loss each way that happens now and then
//! (a packet lost twice, then the ACK of its third copy lost): the
//! libtorrent seeder goes quiet and our downloader stops after its idle
//! timeout. Relay logs of such runs show libtorrent's third copy arriving
//! and our ACK of it being dropped by the relay; libtorrent's alert says
//! "Connection timed out". That row then fails for a reason that is not
//! ours; the sizes at 10 % are small to make it rare.
//!
//! The time of a transfer runs from the dial (or, where the peer dials,
//! from what the peer measured or from our accept) to the moment the
//! receiving side has everything: the peer's process start-up and the
//! preparation of files are not counted. MB/s is the payload of one
//! direction (for an echo: the bytes sent, which also come back) over that
//! time, in 10^6 bytes per second.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_utp::{Config, Stats, UtpSocket, UtpStream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bittorrent::{self, Metainfo, Options, ScratchDir};
use crate::relay::{Impairment, Relay, RelayConfig, RelayStats};
use crate::{interop_dir, seeded_bytes, sha256_hex, Peer, PeerProcess};

pub mod librqbit;

/// Socket buffers asked of the peers (`--bufsize`): 4 MiB, like ours.
pub const PEER_BUFSIZE: &str = "4194304";

/// Which way the payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// This project sends, the peer receives.
    OursToPeer,
    /// The peer sends, this project receives.
    PeerToOurs,
    /// One side sends, the other sends every byte back.
    Echo,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::OursToPeer => "ours->peer",
            Direction::PeerToOurs => "peer->ours",
            Direction::Echo => "echo",
        })
    }
}

/// Which side opens the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialer {
    /// This project connects; the peer accepts.
    Ours,
    /// The peer connects; this project accepts.
    Peer,
}

impl fmt::Display for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialer::Ours => "ours",
            Dialer::Peer => "peer",
        })
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone)]
pub struct Case {
    /// [`Peer::Libutp`], [`Peer::Libtorrent`] or [`Peer::Librqbit`].
    pub peer: Peer,
    /// The loopback address both sides use (`127.0.0.1` or `::1`).
    pub ip: IpAddr,
    /// Which way the payload goes.
    pub direction: Direction,
    /// Who dials.
    pub dialer: Dialer,
    /// Payload bytes (one direction).
    pub size: usize,
    /// Share of datagrams the relay drops, each way (0 = no relay at all).
    pub loss: f64,
    /// Seed of the relay's random decisions.
    pub seed: u64,
}

impl Case {
    /// The cases run for `peer`: every (direction, dialer) pair of the
    /// table in the module documentation.
    #[must_use]
    pub fn kinds(peer: Peer) -> &'static [(Direction, Dialer)] {
        match peer {
            Peer::Libutp => &[
                (Direction::OursToPeer, Dialer::Ours),
                (Direction::PeerToOurs, Dialer::Peer),
                (Direction::Echo, Dialer::Ours),
                (Direction::Echo, Dialer::Peer),
            ],
            Peer::Libtorrent => {
                &[(Direction::OursToPeer, Dialer::Peer), (Direction::PeerToOurs, Dialer::Ours)]
            }
            Peer::Librqbit => &[
                (Direction::OursToPeer, Dialer::Ours),
                (Direction::PeerToOurs, Dialer::Peer),
                (Direction::Echo, Dialer::Ours),
                (Direction::Echo, Dialer::Peer),
            ],
            Peer::Tshark => &[],
        }
    }
}

/// What a successful case measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Payload bytes of one direction, all verified.
    pub bytes: u64,
    /// See the module documentation.
    pub elapsed: Duration,
    /// The relay's counters, when there was one.
    pub relay: Option<RelayStats>,
    /// The counters of our side's connection (the sending one for an
    /// echo), when known.
    pub ours: Option<Stats>,
}

impl Outcome {
    /// Payload rate, 10^6 bytes per second.
    #[must_use]
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Why `peer` cannot run here (with the fix), or `None` when it can.
/// Installs nothing.
#[must_use]
pub fn missing(peer: Peer) -> Option<String> {
    match peer {
        Peer::Libutp => {
            let module = interop_dir().join("node_modules/utp-native/package.json");
            if !module.exists() {
                Some(format!("{} is missing", module.display()))
            } else if std::process::Command::new("node")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
            {
                Some("node is not installed".to_string())
            } else {
                None
            }
        }
        Peer::Libtorrent => {
            let python = interop_dir().join(".venv/bin/python");
            let ok = std::process::Command::new(&python)
                .args(["-c", "import libtorrent"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (!ok).then(|| format!("{} cannot import libtorrent", python.display()))
        }
        Peer::Tshark => crate::tshark::unavailable(),
        Peer::Librqbit => None,
    }
}

/// Runs `case`; gives up after `limit`.
pub async fn run(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let fut = async {
        match (case.peer, case.direction, case.dialer) {
            (Peer::Libutp, Direction::OursToPeer, Dialer::Ours) => libutp_sink(case, limit).await,
            (Peer::Libutp, Direction::PeerToOurs, Dialer::Peer) => libutp_send(case, limit).await,
            (Peer::Libutp, Direction::Echo, Dialer::Ours) => libutp_echo_server(case, limit).await,
            (Peer::Libutp, Direction::Echo, Dialer::Peer) => libutp_echo_client(case, limit).await,
            (Peer::Libtorrent, Direction::OursToPeer, Dialer::Peer) => {
                libtorrent_downloads(case, limit).await
            }
            (Peer::Libtorrent, Direction::PeerToOurs, Dialer::Ours) => {
                libtorrent_seeds(case, limit).await
            }
            (Peer::Librqbit, _, _) => librqbit::run(case, limit).await,
            (peer, dir, dialer) => {
                Err(format!("no such case: {peer:?} {dir} with the {dialer} side dialing"))
            }
        }
    };
    match tokio::time::timeout(limit + Duration::from_secs(5), fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("not done within {limit:?}")),
    }
}

// ------------------------------------------------------------------ helpers

/// Our socket: default settings, but a graceful close may take a minute
/// (the last packets can need many retransmissions at 10 % loss).
async fn our_socket(ip: IpAddr) -> Result<UtpSocket, String> {
    let mut config = Config::default();
    config.transport_mut().close_timeout = Duration::from_secs(60);
    UtpSocket::bind_with_config(SocketAddr::new(ip, 0), config)
        .await
        .map_err(|e| format!("bind: {e}"))
}

/// A relay in front of `upstream` when the case has loss.
async fn relay_for(case: &Case, upstream: SocketAddr) -> Result<Option<Relay>, String> {
    if case.loss <= 0.0 {
        return Ok(None);
    }
    let config = RelayConfig::new(upstream)
        .with_seed(case.seed)
        .with_impairment(Impairment::none().with_loss(case.loss));
    Relay::start(config).await.map(Some).map_err(|e| format!("relay: {e}"))
}

fn target(relay: Option<&Relay>, direct: SocketAddr) -> SocketAddr {
    relay.map_or(direct, Relay::local_addr)
}

async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = std::io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e} ({:?})", e.kind())),
        Err(_) => Err(format!("{what}: not done within {limit:?}")),
    }
}

/// The next event named `name` (others are skipped; an `error` event is
/// remembered for the message).
async fn event(peer: &mut PeerProcess, name: &str, limit: Duration) -> Result<Value, String> {
    let mut last_error = None;
    let fut = async {
        while let Some(ev) = peer.next_event().await {
            if ev["event"] == name {
                return Ok(ev);
            }
            if ev["event"] == "error" {
                last_error = Some(ev);
            }
        }
        Err(format!("the peer exited before a {name:?} event"))
    };
    let r = match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no {name:?} event from the peer within {limit:?}")),
    };
    r.map_err(|e| match last_error {
        Some(err) => format!("{e}; peer error: {}", err["message"]),
        None => e,
    })
}

fn check(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

async fn libutp_server(
    args: &[&str],
    limit: Duration,
) -> Result<(PeerProcess, SocketAddr), String> {
    let mut peer = PeerProcess::libutp(args).map_err(|e| format!("starting node: {e}"))?;
    let port = event(&mut peer, "listening", limit).await?["port"]
        .as_u64()
        .ok_or("no port in the listening event")?;
    Ok((peer, SocketAddr::from(([127, 0, 0, 1], port as u16))))
}

async fn dial(sock: &UtpSocket, to: SocketAddr, limit: Duration) -> Result<UtpStream, String> {
    within(limit, "connect", sock.connect(to)).await
}

/// Our echo server on `sock`: echoes each connection to its end, then
/// closes; sends the sha256 and length of what it echoed and the stream's
/// counters on the channel.
fn spawn_our_echo(sock: &UtpSocket) -> tokio::sync::mpsc::UnboundedReceiver<(String, u64, Stats)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = sock.clone();
    tokio::spawn(async move {
        while let Ok(stream) = server.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.into_split();
                let mut all = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match rd.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            all.extend_from_slice(&buf[..n]);
                            if wr.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = wr.shutdown().await;
                let _ = wr.close().await;
                let _ = tx.send((sha256_hex(&all), all.len() as u64, wr.stats()));
            });
        }
    });
    rx
}

// ------------------------------------------------------------------ libutp

/// Our client writes `size` bytes into libutp's sink.
async fn libutp_sink(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let (mut peer, addr) =
        libutp_server(&["sink", "0", "--bufsize", PEER_BUFSIZE, "--conns", "1"], limit).await?;
    let relay = relay_for(case, addr).await?;
    let sock = our_socket(case.ip).await?;
    let data = seeded_bytes(3, case.size);
    let t0 = Instant::now();
    let mut stream = dial(&sock, target(relay.as_ref(), addr), limit).await?;
    within(limit, "write", async {
        stream.write_all(&data).await?;
        stream.shutdown().await
    })
    .await?;
    let result = event(&mut peer, "result", limit).await?;
    let elapsed = t0.elapsed();
    check(result["ok"] == true, || format!("libutp sink: {result}"))?;
    check(result["bytes"].as_u64() == Some(data.len() as u64), || {
        format!("libutp received {} of {} bytes", result["bytes"], data.len())
    })?;
    check(result["sha256"].as_str() == Some(sha256_hex(&data).as_str()), || {
        "libutp received other bytes (sha256 differs)".to_string()
    })?;
    Ok(Outcome {
        bytes: data.len() as u64,
        elapsed,
        relay: relay.map(|r| r.stats()),
        ours: Some(stream.stats()),
    })
}

/// libutp's `send` client writes `size` bytes into our server.
async fn libutp_send(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let sock = our_socket(case.ip).await?;
    let relay = relay_for(case, sock.local_addr().map_err(|e| e.to_string())?).await?;
    let to = target(relay.as_ref(), sock.local_addr().map_err(|e| e.to_string())?);
    let port = to.port().to_string();
    let bytes = case.size.to_string();
    let mut peer =
        PeerProcess::libutp(&["send", "127.0.0.1", &port, &bytes, "--bufsize", PEER_BUFSIZE])
            .map_err(|e| format!("starting node: {e}"))?;
    let mut stream = within(limit, "accept", sock.accept()).await?;
    let t0 = Instant::now();
    let mut got = Vec::with_capacity(case.size);
    within(limit, "read", stream.read_to_end(&mut got)).await?;
    let elapsed = t0.elapsed();
    let expected = seeded_bytes(1, case.size);
    check(got.len() == expected.len(), || {
        format!("we received {} of {} bytes", got.len(), expected.len())
    })?;
    check(sha256_hex(&got) == sha256_hex(&expected), || "we received other bytes".to_string())?;
    within(limit, "our close", stream.close()).await?;
    let result = event(&mut peer, "result", limit).await?;
    check(result["ok"] == true, || format!("libutp send client: {result}"))?;
    Ok(Outcome {
        bytes: got.len() as u64,
        elapsed,
        relay: relay.map(|r| r.stats()),
        ours: Some(stream.stats()),
    })
}

/// Our client through libutp's echo server.
async fn libutp_echo_server(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let (_peer, addr) =
        libutp_server(&["echo-server", "0", "--bufsize", PEER_BUFSIZE], limit).await?;
    let relay = relay_for(case, addr).await?;
    let sock = our_socket(case.ip).await?;
    let data = Arc::new(seeded_bytes(7, case.size));
    let t0 = Instant::now();
    let stream = dial(&sock, target(relay.as_ref(), addr), limit).await?;
    let (mut rd, mut wr) = stream.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&to_send).await?;
        wr.shutdown().await?;
        Ok::<_, std::io::Error>(wr)
    });
    let mut back = Vec::with_capacity(case.size);
    let read = within(limit, "read the echo", rd.read_to_end(&mut back)).await;
    let elapsed = t0.elapsed();
    let wr = match writer.await {
        Ok(Ok(wr)) => wr,
        Ok(Err(e)) => return Err(format!("write: {e} ({:?})", e.kind())),
        Err(e) => return Err(format!("writer task: {e}")),
    };
    read?;
    check(back.len() == data.len(), || {
        format!("{} of {} bytes came back", back.len(), data.len())
    })?;
    check(sha256_hex(&back) == sha256_hex(&data), || "the echo differs".to_string())?;
    Ok(Outcome {
        bytes: data.len() as u64,
        elapsed,
        relay: relay.map(|r| r.stats()),
        ours: Some(wr.stats()),
    })
}

/// libutp's echo client through our echo server.
async fn libutp_echo_client(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let sock = our_socket(case.ip).await?;
    let mut echoed = spawn_our_echo(&sock);
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let relay = relay_for(case, local).await?;
    let port = target(relay.as_ref(), local).port().to_string();
    let bytes = case.size.to_string();
    let mut peer = PeerProcess::libutp(&[
        "echo-client",
        "127.0.0.1",
        &port,
        &bytes,
        "--bufsize",
        PEER_BUFSIZE,
    ])
    .map_err(|e| format!("starting node: {e}"))?;
    let result = event(&mut peer, "result", limit).await?;
    check(result["ok"] == true, || format!("libutp echo client: {result}"))?;
    check(result["recv_bytes"].as_u64() == Some(case.size as u64), || format!("{result}"))?;
    check(result["recv_sha256"] == result["sent_sha256"], || format!("echo differs: {result}"))?;
    let ms = result["elapsed_ms"].as_u64().ok_or("no elapsed_ms")?;
    let (sha, n, ours) = match tokio::time::timeout(limit, echoed.recv()).await {
        Ok(Some(v)) => v,
        _ => return Err("our echo server did not finish".to_string()),
    };
    check(n == case.size as u64 && sha == sha256_hex(&seeded_bytes(1, case.size)), || {
        format!("our server echoed {n} bytes, not libutp's stream")
    })?;
    Ok(Outcome {
        bytes: case.size as u64,
        elapsed: Duration::from_millis(ms),
        relay: relay.map(|r| r.stats()),
        ours: Some(ours),
    })
}

// -------------------------------------------------------------- libtorrent

fn piece_size(size: usize) -> u64 {
    if size >= 4 << 20 {
        256 * 1024
    } else {
        16 * 1024
    }
}

fn bt_options(limit: Duration) -> Options {
    Options { total_timeout: limit, ..Options::default() }
}

/// libtorrent downloads a torrent from our seeder (it dials us).
async fn libtorrent_downloads(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let dir = ScratchDir::new("matrix-our-seed").map_err(|e| e.to_string())?;
    let data = Arc::new(seeded_bytes(11, case.size));
    let sha = sha256_hex(&data);
    let (meta, torrent) = Metainfo::create("ours.bin", &data, piece_size(case.size));
    let meta = Arc::new(meta);
    let torrent_path = dir.path().join("ours.torrent");
    std::fs::write(&torrent_path, &torrent).map_err(|e| e.to_string())?;

    let sock = our_socket(case.ip).await?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let relay = relay_for(case, local).await?;
    let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    let server = sock.clone();
    let opts = bt_options(limit);
    tokio::spawn(async move {
        while let Ok(mut stream) = server.accept().await {
            let (meta, data, tx, opts) = (meta.clone(), data.clone(), tx.clone(), opts.clone());
            tokio::spawn(async move {
                let r =
                    bittorrent::seed(&mut stream, &meta, &data, bittorrent::make_peer_id(), &opts)
                        .await;
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
                let _ = tx.send((r.map_err(|e| e.to_string()), stream.stats()));
            });
        }
    });
    let peer_arg = target(relay.as_ref(), local).to_string();
    let out = dir.path().join("out");
    let timeout = limit.as_secs().max(10).to_string();
    let host = case.ip.to_string();
    let mut lt = PeerProcess::libtorrent(&[
        "download",
        "--host",
        &host,
        "--torrent",
        &torrent_path.to_string_lossy(),
        "--peer",
        &peer_arg,
        "--out",
        &out.to_string_lossy(),
        "--bufsize",
        PEER_BUFSIZE,
        "--timeout",
        &timeout,
        "--expect-sha256",
        &sha,
    ])
    .map_err(|e| format!("starting python: {e}"))?;
    let result = event(&mut lt, "result", limit + Duration::from_secs(10)).await?;
    check(result["ok"] == true, || {
        format!(
            "libtorrent: finished={} all_utp={} sha256 {}",
            result["finished"],
            result["all_utp"],
            if result["sha256"].as_str() == Some(sha.as_str()) { "ok" } else { "differs" }
        )
    })?;
    check(result["total_bytes"].as_u64() == Some(case.size as u64), || format!("{result}"))?;
    let flags_ok = result["peers"].as_array().is_some_and(|ps| {
        !ps.is_empty() && ps.iter().all(|p| p["flags"].as_u64().unwrap_or(0) & 0x20000 != 0)
    });
    check(flags_ok, || format!("libtorrent peer without the uTP flag: {}", result["peers"]))?;
    let ms = result["elapsed_ms"].as_u64().ok_or("no elapsed_ms")?;
    // Our seeder's connection ends when libtorrent leaves; under loss its
    // FIN may be lost (libtorrent does not resend it once the process is
    // gone): then our counters stay unknown.
    let ours = match tokio::time::timeout(Duration::from_secs(3), served.recv()).await {
        Ok(Some((Ok(_report), stats))) => Some(stats),
        Ok(Some((Err(e), _))) => return Err(format!("our seeder: {e}")),
        _ => None,
    };
    Ok(Outcome {
        bytes: case.size as u64,
        elapsed: Duration::from_millis(ms),
        relay: relay.map(|r| r.stats()),
        ours,
    })
}

/// libtorrent seeds a file; our downloader dials it and takes the torrent.
async fn libtorrent_seeds(case: &Case, limit: Duration) -> Result<Outcome, String> {
    let dir = ScratchDir::new("matrix-lt-seed").map_err(|e| e.to_string())?;
    let file = dir.path().join("lt.bin");
    let file_s = file.to_string_lossy().into_owned();
    let bytes = case.size.to_string();
    let mut mk = PeerProcess::libtorrent(&["make-file", "--out", &file_s, "--bytes", &bytes])
        .map_err(|e| format!("starting python: {e}"))?;
    let made = event(&mut mk, "result", limit).await?;
    check(made["ok"] == true, || format!("make-file: {made}"))?;
    let piece = piece_size(case.size).to_string();
    let timeout = (limit.as_secs() + 30).to_string();
    let host = case.ip.to_string();
    let mut seed = PeerProcess::libtorrent(&[
        "seed",
        "--host",
        &host,
        "--file",
        &file_s,
        "--piece-size",
        &piece,
        "--bufsize",
        PEER_BUFSIZE,
        "--timeout",
        &timeout,
    ])
    .map_err(|e| format!("starting python: {e}"))?;
    let port = event(&mut seed, "listening", limit).await?["port"]
        .as_u64()
        .ok_or("no port in the listening event")?;
    let seeding = event(&mut seed, "seeding", limit).await?;
    let torrent = seeding["torrent"].as_str().ok_or("no torrent in the seeding event")?;
    let meta = Metainfo::from_file(torrent.as_ref()).map_err(|e| format!("torrent: {e}"))?;
    let addr = SocketAddr::new(case.ip, port as u16);
    let relay = relay_for(case, addr).await?;
    let sock = our_socket(case.ip).await?;
    let t0 = Instant::now();
    let mut stream = dial(&sock, target(relay.as_ref(), addr), limit).await?;
    let (got, report) =
        bittorrent::download(&mut stream, &meta, bittorrent::make_peer_id(), &bt_options(limit))
            .await
            .map_err(|e| {
                let hint = if case.loss > 0.0 && e.kind() == std::io::ErrorKind::TimedOut {
                    " (under loss most likely libtorrent's own limit: it drops a uTP connection, \
             silently, when a packet that was sent 3 times times out again; see the \
             scenarios module)"
                } else {
                    ""
                };
                format!("our downloader: {e}{hint}")
            })?;
    let elapsed = t0.elapsed();
    check(report.pieces_verified == meta.num_pieces(), || {
        format!("{} of {} pieces verified", report.pieces_verified, meta.num_pieces())
    })?;
    check(got.len() == case.size, || format!("{} of {} bytes", got.len(), case.size))?;
    check(seeding["sha256"].as_str() == Some(sha256_hex(&got).as_str()), || {
        "the file's sha256 differs".to_string()
    })?;
    let ours = stream.stats();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
    Ok(Outcome {
        bytes: got.len() as u64,
        elapsed,
        relay: relay.map(|r| r.stats()),
        ours: Some(ours),
    })
}
