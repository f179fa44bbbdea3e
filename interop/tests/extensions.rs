//! This project's extensions (SYN data, metadata-framed messages; WIRE.md,
//! "The two extensions of this project") against peers that do not know
//! them, and what SYN data buys.
//!
//! - With both extensions enabled on our side, transfers with libutp (both
//!   directions, our SYN data included: libutp ignores it, we send it again,
//!   the stream is identical) and libtorrent downloads (both directions)
//!   pass byte for byte. Every datagram from us goes through the relay
//!   (`utp_interop::relay`, no impairment) whose filter audits it: the only
//!   ext 2 record that may reach them is the 8-byte `UTPX` record on a SYN.
//! - Wireshark still decodes every packet of such a transfer.
//! - Time to the first response, request on the SYN against connect then
//!   request, on loopback and through the relay with 50 ms each way:
//!   `cargo test -p utp-interop --test extensions time_to_first -- --nocapture`
//!   prints the figures.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p_utp::{Config, ExtFlags, UtpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_interop::bittorrent::{self, Metainfo, Options, ScratchDir};
use utp_interop::relay::{Action, Direction, Filter, Impairment, Relay, RelayConfig};
use utp_interop::tshark::{self, Capture};
use utp_interop::{require, seeded_bytes, sha256_hex, Peer, PeerProcess};
use utp_proto::wire::{PacketType, Repr, EXT_BITS};

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(100);
const BOTH: ExtFlags = ExtFlags(ExtFlags::METADATA.0 | ExtFlags::SYN_DATA.0);

fn ext_config() -> Config {
    let mut config = utp_interop::config();
    config.transport_mut().extensions = BOTH;
    config
}

async fn ext_socket() -> UtpSocket {
    UtpSocket::bind_with_config("127.0.0.1:0".parse::<SocketAddr>().unwrap(), ext_config())
        .await
        .expect("bind")
}

fn addr(port: u64) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

// ------------------------------------------------------------ ext 2 audit

/// What our datagrams to a foreign peer carried in extension type 2.
#[derive(Debug, Default)]
struct Audit {
    /// Our datagrams seen.
    datagrams: u64,
    /// SYNs with the 8-byte `UTPX` record.
    utpx_syns: u64,
    /// Largest payload on such a SYN (SYN data).
    syn_payload: usize,
    /// Largest such SYN datagram (a SYN with data is padded to 600 bytes).
    syn_datagram: usize,
    /// Every other ext 2 record (or unparsable datagram): must stay empty.
    violations: Vec<String>,
}

/// A relay filter that audits the datagrams travelling `ours` and passes
/// everything.
fn audit_filter(ours: Direction, audit: Arc<Mutex<Audit>>) -> Filter {
    Filter::new(move |dir, bytes| {
        if dir == ours {
            let mut a = audit.lock().unwrap();
            a.datagrams += 1;
            match Repr::parse_bytes(bytes) {
                Ok(r) => {
                    for e in r.extensions.iter().filter(|e| e.kind() == EXT_BITS) {
                        let utpx = r.packet_type == PacketType::Syn
                            && e.data_len() == 8
                            && r.extensions.negotiation().is_some();
                        if utpx {
                            a.utpx_syns += 1;
                            a.syn_payload = a.syn_payload.max(r.payload.len());
                            a.syn_datagram = a.syn_datagram.max(bytes.len());
                        } else {
                            a.violations.push(format!("{r}"));
                        }
                    }
                }
                Err(e) => a.violations.push(format!("not uTP: {e}")),
            }
        }
        Action::Pass
    })
}

/// A relay to `upstream` that audits the datagrams going `ours`.
async fn audit_relay(upstream: SocketAddr, ours: Direction) -> (Relay, Arc<Mutex<Audit>>) {
    let audit = Arc::new(Mutex::new(Audit::default()));
    let config = RelayConfig::new(upstream).with_filter(audit_filter(ours, audit.clone()));
    (Relay::start(config).await.expect("relay"), audit)
}

fn check_audit(what: &str, audit: &Mutex<Audit>, relay: &Relay, expect_utpx: bool) {
    let a = audit.lock().unwrap();
    eprintln!(
        "{what}: {} datagrams from us audited, {} SYNs with UTPX (SYN payload {} bytes, \
         datagram {} bytes), {} violations\n{}",
        a.datagrams,
        a.utpx_syns,
        a.syn_payload,
        a.syn_datagram,
        a.violations.len(),
        relay.stats()
    );
    assert!(a.datagrams > 0, "{what}: nothing audited");
    assert!(
        a.violations.is_empty(),
        "{what}: ext 2 records other than the 8-byte UTPX on a SYN reached the peer: {:?}",
        &a.violations[..a.violations.len().min(5)]
    );
    if a.syn_payload > 0 {
        // The padded SYN with data was answered the first time: one SYN.
        assert!(a.syn_datagram >= 600, "{what}: a SYN with data is padded to 600 bytes");
        assert_eq!(a.utpx_syns, 1, "{what}: the padded SYN was answered, not sent again");
    }
    if expect_utpx {
        assert!(a.utpx_syns > 0, "{what}: our SYN carried no UTPX record");
    } else {
        assert_eq!(a.utpx_syns, 0, "{what}: as acceptor we never send a SYN");
    }
}

// ------------------------------------------------------------ libutp

/// Our client (extensions on, 1000 bytes of the stream on the SYN) echoes
/// 1 MiB through libutp: libutp ignores the SYN payload and the UTPX
/// record, we send the bytes again, and the echo is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_data_to_libutp_echo_is_resent_and_identical() {
    if !require(Peer::Libutp) {
        return;
    }
    let mut peer = PeerProcess::libutp(&["echo-server", "0", "--bufsize", "4194304"]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let (relay, audit) = audit_relay(addr(port), Direction::ToUpstream).await;
    let sock = ext_socket().await;
    let data = seeded_bytes(21, MIB);
    let stream =
        tokio::time::timeout(LIMIT, sock.connect_with_data(relay.local_addr(), &data[..1000]))
            .await
            .expect("connect in time")
            .expect("connect");
    assert_eq!(stream.negotiated(), ExtFlags::NONE, "libutp negotiates nothing");
    let (mut rd, mut wr) = stream.into_split();
    let rest = data[1000..].to_vec();
    let sender = tokio::spawn(async move {
        wr.write_all(&rest).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    let mut back = Vec::with_capacity(MIB);
    tokio::time::timeout(LIMIT, rd.read_to_end(&mut back)).await.expect("echo in time").unwrap();
    let wr = sender.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let mut stream = rd.reunite(wr).unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    // libutp's own count: every byte once, the first 1000 included.
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["bytes"].as_u64(), Some(MIB as u64), "{result}");
    assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&data).as_str()), "{result}");
    check_audit("our client -> libutp echo, SYN data", &audit, &relay, true);
    assert_eq!(audit.lock().unwrap().syn_payload, 1000, "the SYN carried the first 1000 bytes");
}

/// An early-data dial (`connect_early`) echoes 1 MiB through libutp: the
/// first 1024 bytes written ride on the padded SYN, libutp ignores them and
/// the padding, and they follow as DATA: the echo is identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_dial_to_libutp_echo() {
    if !require(Peer::Libutp) {
        return;
    }
    let mut peer = PeerProcess::libutp(&["echo-server", "0", "--bufsize", "4194304"]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let (relay, audit) = audit_relay(addr(port), Direction::ToUpstream).await;
    let sock = ext_socket().await;
    let data = seeded_bytes(22, MIB);
    let stream = sock.connect_early(relay.local_addr()).expect("dial");
    let (mut rd, mut wr) = stream.into_split();
    let sent = data.clone();
    let sender = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    let mut back = Vec::with_capacity(MIB);
    tokio::time::timeout(LIMIT, rd.read_to_end(&mut back)).await.expect("echo in time").unwrap();
    let wr = sender.await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let mut stream = rd.reunite(wr).unwrap();
    assert_eq!(stream.negotiated(), ExtFlags::NONE, "libutp negotiates nothing");
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&data).as_str()), "{result}");
    check_audit("early dial -> libutp echo", &audit, &relay, true);
    assert_eq!(audit.lock().unwrap().syn_payload, 1024, "the SYN carried max_syn_data bytes");
}

/// libutp's source waits for the client to speak: our one byte of SYN data
/// is ignored by libutp, sent again as DATA, and releases its 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_data_hello_to_libutp_source() {
    if !require(Peer::Libutp) {
        return;
    }
    let len = MIB;
    let len_s = len.to_string();
    let mut peer =
        PeerProcess::libutp(&["source", "0", &len_s, "--bufsize", "4194304", "--conns", "1"])
            .unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let (relay, audit) = audit_relay(addr(port), Direction::ToUpstream).await;
    let sock = ext_socket().await;
    let mut stream = sock.connect_with_data(relay.local_addr(), b"h").await.unwrap();
    let mut got = Vec::with_capacity(len);
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut got)).await.expect("in time").unwrap();
    assert_eq!(got.len(), len);
    assert_eq!(sha256_hex(&got), sha256_hex(&seeded_bytes(1, len)));
    // The source reports once the connection closed.
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["client_bytes"], 1, "libutp read our byte exactly once: {result}");
    assert_eq!(result["released_on_fin"], false, "our byte released its writes: {result}");
    check_audit("our client <- libutp source", &audit, &relay, true);
}

/// Our sender (extensions on, SYN data) into libutp's sink, 8 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_sender_with_syn_data_libutp_sink() {
    if !require(Peer::Libutp) {
        return;
    }
    let mut peer =
        PeerProcess::libutp(&["sink", "0", "--bufsize", "4194304", "--conns", "1"]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let (relay, audit) = audit_relay(addr(port), Direction::ToUpstream).await;
    let sock = ext_socket().await;
    let data = seeded_bytes(3, 8 * MIB);
    let mut stream = sock.connect_with_data(relay.local_addr(), &data[..1024]).await.unwrap();
    tokio::time::timeout(LIMIT, async {
        stream.write_all(&data[1024..]).await.unwrap();
        stream.close().await.unwrap();
    })
    .await
    .expect("sent in time");
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&data).as_str()));
    check_audit("our sender -> libutp sink", &audit, &relay, true);
}

/// libutp's client against our echo server with extensions on: its SYN
/// offers nothing, so we answer with no record and send no ext 2 at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_client_our_echo_server_with_extensions() {
    if !require(Peer::Libutp) {
        return;
    }
    let sock = ext_socket().await;
    let server = sock.clone();
    tokio::spawn(async move {
        while let Ok(stream) = server.accept().await {
            tokio::spawn(async move {
                assert_eq!(stream.negotiated(), ExtFlags::NONE);
                let (mut rd, mut wr) = stream.into_split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
                let _ = wr.close().await;
            });
        }
    });
    let (relay, audit) = audit_relay(sock.local_addr().unwrap(), Direction::ToClient).await;
    let port = relay.local_addr().port().to_string();
    let bytes = MIB.to_string();
    let mut peer =
        PeerProcess::libutp(&["echo-client", "127.0.0.1", &port, &bytes, "--bufsize", "4194304"])
            .unwrap();
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "libutp client: {result}");
    assert_eq!(result["recv_sha256"], result["sent_sha256"], "echo differs: {result}");
    assert_eq!(result["recv_bytes"].as_u64(), Some(MIB as u64), "{result}");
    check_audit("libutp client -> our echo server", &audit, &relay, false);
}

// ------------------------------------------------------------ libtorrent

fn lt_opts() -> Options {
    Options { total_timeout: LIMIT, ..Options::default() }
}

/// libtorrent seeds 8 MiB; our downloader (extensions on) takes it through
/// the auditing relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeds_our_downloader_with_extensions() {
    if !require(Peer::Libtorrent) {
        return;
    }
    let dir = ScratchDir::new("ext-lt-seed").unwrap();
    let file = dir.path().join("lt-8mib.bin");
    let file_s = file.to_str().unwrap();
    let bytes = (8 * MIB).to_string();
    let mut mk =
        PeerProcess::libtorrent(&["make-file", "--out", file_s, "--bytes", &bytes, "--seed", "6"])
            .unwrap();
    assert_eq!(mk.wait_for("result", LIMIT).await["ok"], true);
    let mut seed = PeerProcess::libtorrent(&[
        "seed",
        "--file",
        file_s,
        "--bufsize",
        "4194304",
        "--timeout",
        "110",
    ])
    .unwrap();
    let port = seed.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let seeding = seed.wait_for("seeding", LIMIT).await;
    let meta = Metainfo::from_file(seeding["torrent"].as_str().unwrap().as_ref()).unwrap();

    let (relay, audit) = audit_relay(addr(port), Direction::ToUpstream).await;
    let sock = ext_socket().await;
    let out = ScratchDir::new("ext-lt-seed-out").unwrap();
    let mut stream =
        tokio::time::timeout(LIMIT, sock.connect(relay.local_addr())).await.unwrap().unwrap();
    assert_eq!(stream.negotiated(), ExtFlags::NONE, "libtorrent negotiates nothing");
    let (path, report) =
        bittorrent::download_to_dir(&mut stream, &meta, out.path(), &lt_opts()).await.unwrap();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len() as u64, meta.length);
    assert!(meta.verify(&got).is_ok(), "every piece's SHA-1");
    assert_eq!(Some(sha256_hex(&got).as_str()), seeding["sha256"].as_str(), "file sha256");
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    eprintln!("libtorrent -> our downloader: {} bytes in {:.2?}", report.bytes, report.elapsed);
    check_audit("our downloader -> libtorrent seed", &audit, &relay, true);
}

/// Our BitTorrent handshake on the SYN to libtorrent: libtorrent ignores
/// the SYN payload, we send it again as DATA, and libtorrent answers the
/// handshake (once: a second copy would be garbage to it) and its bitfield.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syn_data_handshake_to_libtorrent() {
    if !require(Peer::Libtorrent) {
        return;
    }
    let dir = ScratchDir::new("ext-lt-hs").unwrap();
    let file = dir.path().join("lt-1mib.bin");
    let file_s = file.to_str().unwrap();
    let mut mk =
        PeerProcess::libtorrent(&["make-file", "--out", file_s, "--bytes", "1048576"]).unwrap();
    assert_eq!(mk.wait_for("result", LIMIT).await["ok"], true);
    let mut seed = PeerProcess::libtorrent(&["seed", "--file", file_s, "--timeout", "60"]).unwrap();
    let port = seed.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let seeding = seed.wait_for("seeding", LIMIT).await;
    let meta = Metainfo::from_file(seeding["torrent"].as_str().unwrap().as_ref()).unwrap();

    let (relay, audit) = audit_relay(addr(port), Direction::ToUpstream).await;
    let sock = ext_socket().await;
    let ours = bittorrent::Handshake::new(meta.info_hash, bittorrent::make_peer_id());
    let mut stream = sock.connect_with_data(relay.local_addr(), &ours.to_bytes()).await.unwrap();
    assert_eq!(stream.negotiated(), ExtFlags::NONE);
    let theirs = tokio::time::timeout(LIMIT, bittorrent::Handshake::read(&mut stream))
        .await
        .expect("handshake in time")
        .expect("a BitTorrent handshake");
    assert_eq!(theirs.info_hash, meta.info_hash);
    let first = tokio::time::timeout(LIMIT, bittorrent::Message::read(&mut stream))
        .await
        .expect("in time")
        .expect("a message");
    eprintln!("libtorrent answered our handshake from the SYN; then {first:?}");
    assert!(first.is_some(), "libtorrent kept the connection");
    stream.reset();
    check_audit("our handshake on the SYN -> libtorrent", &audit, &relay, true);
    assert_eq!(audit.lock().unwrap().syn_payload, 68, "the SYN carried the handshake");
}

/// Our seeder (extensions on) serves 8 MiB; libtorrent downloads it through
/// the auditing relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_seeder_with_extensions_libtorrent_downloads() {
    if !require(Peer::Libtorrent) {
        return;
    }
    let dir = ScratchDir::new("ext-our-seed").unwrap();
    let data = Arc::new(seeded_bytes(12, 8 * MIB));
    let sha = sha256_hex(&data);
    let (meta, torrent) = Metainfo::create("ext-ours-8mib.bin", &data, 256 * 1024);
    let meta = Arc::new(meta);
    let torrent_path = dir.path().join("ours.torrent");
    std::fs::write(&torrent_path, &torrent).unwrap();

    let sock = ext_socket().await;
    let server = sock.clone();
    let (m2, d2) = (meta.clone(), data.clone());
    tokio::spawn(async move {
        while let Ok(mut stream) = server.accept().await {
            let (meta, data) = (m2.clone(), d2.clone());
            tokio::spawn(async move {
                assert_eq!(stream.negotiated(), ExtFlags::NONE);
                let peer_id = bittorrent::make_peer_id();
                let _ = bittorrent::seed(&mut stream, &meta, &data, peer_id, &lt_opts()).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.close()).await;
            });
        }
    });
    let (relay, audit) = audit_relay(sock.local_addr().unwrap(), Direction::ToClient).await;
    let peer_arg = relay.local_addr().to_string();
    let out = dir.path().join("out");
    let mut lt = PeerProcess::libtorrent(&[
        "download",
        "--torrent",
        torrent_path.to_str().unwrap(),
        "--peer",
        &peer_arg,
        "--out",
        out.to_str().unwrap(),
        "--bufsize",
        "4194304",
        "--timeout",
        "100",
        "--expect-sha256",
        &sha,
    ])
    .unwrap();
    let result = lt.wait_for("result", LIMIT + Duration::from_secs(10)).await;
    assert_eq!(result["ok"], true, "libtorrent download: {result}");
    assert_eq!(result["finished"], true, "{result}");
    assert_eq!(result["all_utp"], true, "{result}");
    assert_eq!(result["sha256"].as_str(), Some(sha.as_str()), "{result}");
    assert_eq!(lt.wait(Duration::from_secs(30)).await, Some(0), "lt_peer exit code");
    check_audit("libtorrent downloader -> our seeder", &audit, &relay, false);
}

// ------------------------------------------------------------ Wireshark

/// Our client with both extensions and SYN data against libutp, captured
/// on `lo`: every datagram decodes as uTP, none malformed (the SYN with its
/// UTPX record and payload included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_syn_data_and_utpx_record() {
    if !require(Peer::Tshark) || !require(Peer::Libutp) {
        return;
    }
    let dir = ScratchDir::new("ext-tshark").unwrap();
    let pcap = dir.path().join("ext-libutp.pcapng");
    let mut peer =
        PeerProcess::libutp(&["echo-server", "0", "--bufsize", "4194304", "--conns", "1"]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap() as u16;
    let mut config = ext_config();
    // One uTP packet per datagram, as Wireshark sees them (no GSO).
    config.batched_io = false;
    let sock = UtpSocket::bind_with_config("127.0.0.1:0", config).await.unwrap();
    let cap = Capture::start(&[port], &pcap, Duration::from_secs(20)).await.unwrap();
    let data = seeded_bytes(5, 256 * 1024);
    let stream = sock.connect_with_data(addr(u64::from(port)), &data[..800]).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let rest = data[800..].to_vec();
    let sender = tokio::spawn(async move {
        wr.write_all(&rest).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    });
    let mut back = Vec::new();
    tokio::time::timeout(LIMIT, rd.read_to_end(&mut back)).await.expect("in time").unwrap();
    let wr = sender.await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let mut stream = rd.reunite(wr).unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    let _ = peer.wait_for("result", LIMIT).await;
    let _summary = cap.stop(Duration::from_secs(1)).await.unwrap();
    let a = tshark::analyze(&pcap, &[port]).expect("tshark -r");
    eprintln!("tshark [SYN data + UTPX against libutp]: {}", a.summary());
    assert!(a.frames > 0, "empty capture");
    assert!(a.malformed.is_empty(), "malformed: {:?}", a.malformed);
    let bad = a.unexplained();
    assert!(bad.is_empty(), "not decoded as uTP: {bad:?}");
    assert!(a.by_type.get("SYN").is_some_and(|&n| n >= 1), "no SYN decoded: {}", a.summary());
}

// ------------------------------------------------------------ time to first response

const REQUEST: usize = 200;
/// A response that fits the anti-amplification limit: before the dialer
/// confirms the handshake the server sends at most three times what it
/// received (the 230-byte SYN: 690 bytes, 30 of them the SYN-ACK). A larger
/// response starts at once and finishes a round trip later
/// (`proto/tests/hostile`, `syn_data_keeps_its_round_trip_for_honest_peers`).
const RESPONSE: usize = 600;

/// A server (extensions on) that reads a request of `REQUEST` bytes and
/// answers `RESPONSE` bytes at once.
async fn response_server() -> SocketAddr {
    let sock = ext_socket().await;
    let local = sock.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok(mut stream) = sock.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; REQUEST];
                if stream.read_exact(&mut req).await.is_err() {
                    return;
                }
                let _ = stream.write_all(&[req[0]; RESPONSE]).await;
                let _ = stream.close().await;
            });
        }
    });
    local
}

/// From the dial to the whole response, with the request on the SYN
/// (`syn`) or written after `connect`.
async fn first_response(sock: &UtpSocket, to: SocketAddr, syn: bool, tag: u8) -> Duration {
    let request = [tag; REQUEST];
    let t0 = Instant::now();
    let mut stream = if syn {
        sock.connect_with_data(to, &request).await.unwrap()
    } else {
        let mut s = sock.connect(to).await.unwrap();
        s.write_all(&request).await.unwrap();
        s
    };
    let mut resp = [0u8; RESPONSE];
    stream.read_exact(&mut resp).await.unwrap();
    let elapsed = t0.elapsed();
    assert_eq!(resp, [tag; RESPONSE]);
    assert_eq!(stream.negotiated(), BOTH);
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `rounds` dials of each kind, alternating; returns the medians
/// (plain, SYN data) and prints everything.
async fn measure(
    what: &str,
    sock: &UtpSocket,
    to: SocketAddr,
    rounds: usize,
) -> (Duration, Duration) {
    let (mut plain, mut syn) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        plain.push(first_response(sock, to, false, i as u8).await);
        syn.push(first_response(sock, to, true, i as u8).await);
    }
    let (p, s) = (median(plain.clone()), median(syn.clone()));
    eprintln!(
        "time to first response, {what}: connect + request: median {p:.2?} \
         (min {:.2?}, max {:.2?}); request on the SYN: median {s:.2?} (min {:.2?}, max {:.2?}); \
         saved {:.2?} over {rounds} dials each",
        plain.iter().min().unwrap(),
        plain.iter().max().unwrap(),
        syn.iter().min().unwrap(),
        syn.iter().max().unwrap(),
        p.saturating_sub(s),
    );
    (p, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_response_loopback() {
    let server = response_server().await;
    let sock = ext_socket().await;
    // Warm up (first connection pays for lazy initialisation).
    first_response(&sock, server, false, 0).await;
    let (plain, syn) = measure("loopback", &sock, server, 30).await;
    assert!(syn < plain, "SYN data must not be slower: {syn:?} vs {plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_response_50ms_each_way() {
    const DELAY: Duration = Duration::from_millis(50);
    let server = response_server().await;
    let config = RelayConfig::new(server)
        .with_impairment(Impairment::none().with_delay(DELAY, Duration::ZERO));
    let relay = Relay::start(config).await.unwrap();
    let sock = ext_socket().await;
    let (plain, syn) =
        measure("relay, 50 ms each way (RTT 100 ms)", &sock, relay.local_addr(), 5).await;
    let rtt = 2 * DELAY;
    // Connect + request: two round trips. Request on the SYN: one.
    assert!(plain >= 2 * rtt, "{plain:?}");
    assert!(syn >= rtt, "{syn:?}");
    assert!(syn < rtt + rtt / 2, "the response comes one round trip after the dial: {syn:?}");
    assert!(plain - syn >= rtt * 8 / 10, "one round trip saved: {plain:?} -> {syn:?}");
}
