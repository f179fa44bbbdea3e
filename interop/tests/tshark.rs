//! Wireshark's uTP dissector as a judge: capture real transfers on `lo`
//! (ours against libutp, ours against libtorrent) and require that every
//! datagram decodes as uTP and none is malformed.
//!
//! Our side runs with `batched_io = false`: with UDP GSO a loopback capture
//! shows several uTP packets glued into one datagram.
//!
//! tshark 4.0 does not decode a uTP packet whose first extension is 3
//! (libtorrent's close reason, on its FIN and RESET); those, and only those,
//! are tolerated as undecoded (checked by their first bytes: version 1,
//! byte 1 == 3).
//!
//! `UTP_INTEROP_KEEP_PCAP=DIR` keeps the capture files in DIR.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_utp::UtpSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_interop::bittorrent::{self, Metainfo, Options, ScratchDir};
use utp_interop::tshark::{self, Analysis, Capture};
use utp_interop::{require, seeded_bytes, sha256_hex, Peer, PeerProcess};

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(60);
/// utp-proto's cap on the advertised window (Wireshark rejects larger).
const WND_CAP: u64 = 0x38_0000;

async fn unbatched_socket() -> UtpSocket {
    let mut config = utp_interop::config();
    config.batched_io = false;
    UtpSocket::bind_with_config("127.0.0.1:0".parse::<SocketAddr>().unwrap(), config)
        .await
        .expect("bind")
}

/// Decodes the capture, prints the counts and fails on anything Wireshark
/// did not accept. `ours` are the ports of our sockets.
fn judge(what: &str, file: &Path, ports: &[u16], ours: &[u16], cap: &tshark::CaptureSummary) {
    if let Ok(keep) = std::env::var("UTP_INTEROP_KEEP_PCAP") {
        let to = Path::new(&keep).join(file.file_name().unwrap());
        match std::fs::create_dir_all(&keep).and_then(|()| std::fs::copy(file, &to)) {
            Ok(_) => eprintln!("capture kept as {}", to.display()),
            Err(e) => eprintln!("could not keep the capture in {keep}: {e}"),
        }
    }
    let a: Analysis = tshark::analyze(file, ports).expect("tshark -r");
    eprintln!(
        "tshark [{what}]: capture said captured={:?} dropped={:?}; {}",
        cap.captured,
        cap.dropped,
        a.summary()
    );
    for u in &a.undecoded {
        eprintln!(
            "  undecoded frame {} from port {} ({} bytes): {}{}",
            u.frame,
            u.src_port,
            u.len,
            u.head.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            if u.is_close_reason() { "  [ext 3 first: close reason, tolerated]" } else { "" }
        );
    }
    assert!(a.frames > 0, "{what}: empty capture");
    if !a.malformed.is_empty() {
        let frames: Vec<u64> = a
            .malformed
            .iter()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .take(5)
            .collect();
        let detail = tshark::decode_frames(file, ports, &frames).unwrap_or_default();
        panic!(
            "{what}: {} malformed packets:\n{}\n{detail}",
            a.malformed.len(),
            a.malformed.join("\n")
        );
    }
    let bad = a.unexplained();
    if !bad.is_empty() {
        let frames: Vec<u64> = bad.iter().map(|u| u.frame).take(5).collect();
        let detail = tshark::decode_frames(file, ports, &frames).unwrap_or_default();
        panic!("{what}: {} datagrams not decoded as bt-utp: {bad:?}\n{detail}", bad.len());
    }
    assert_eq!(a.utp + a.undecoded.len() as u64, a.frames);
    for port in ours {
        if let Some(&w) = a.max_wnd_by_port.get(port) {
            assert!(w <= WND_CAP, "{what}: port {port} advertised wnd_size {w:#x} > {WND_CAP:#x}");
        }
        // Several uTP packets glued into one datagram (GSO) would still
        // "decode", as one packet with a huge payload: catch them by size.
        if let Some(&n) = a.max_udp_payload_by_port.get(port) {
            assert!(n <= 1500, "{what}: port {port} sent a {n}-byte datagram (GSO on?)");
        }
    }
}

/// Our client echoes 1 MiB through libutp's echo server, captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_our_client_against_libutp_1_mib() {
    if !require(Peer::Tshark) || !require(Peer::Libutp) {
        return;
    }
    let dir = ScratchDir::new("tshark-libutp").unwrap();
    let pcap = dir.path().join("libutp.pcapng");
    let mut peer =
        PeerProcess::libutp(&["echo-server", "0", "--bufsize", "4194304", "--conns", "1"]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap() as u16;
    let sock = unbatched_socket().await;
    let ours = sock.local_addr().unwrap().port();
    let cap = Capture::start(&[port], &pcap, Duration::from_secs(20)).await.unwrap();

    let t0 = Instant::now();
    let stream =
        tokio::time::timeout(LIMIT, sock.connect(format!("127.0.0.1:{port}").parse().unwrap()))
            .await
            .unwrap()
            .unwrap();
    let data = seeded_bytes(9, MIB);
    let (mut rd, mut wr) = stream.into_split();
    let sender = {
        let data = data.clone();
        tokio::spawn(async move {
            wr.write_all(&data).await.unwrap();
            wr.shutdown().await.unwrap();
            wr
        })
    };
    let mut back = Vec::with_capacity(MIB);
    tokio::time::timeout(LIMIT, rd.read_to_end(&mut back)).await.expect("echo in time").unwrap();
    let wr = sender.await.unwrap();
    assert_eq!(sha256_hex(&back), sha256_hex(&data));
    let elapsed = t0.elapsed();
    let mut stream = rd.reunite(wr).unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");

    let summary = cap.stop(Duration::from_secs(1)).await.unwrap();
    eprintln!("libutp echo of 1 MiB in {elapsed:.2?} (our port {ours}, libutp port {port})");
    judge("our client <-> libutp echo, 1 MiB", &pcap, &[port], &[ours], &summary);
}

/// Both directions with libtorrent (4 MiB each), one capture: libtorrent
/// seeds to our downloader, our seeder serves libtorrent's download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_decodes_libtorrent_both_ways_4_mib() {
    if !require(Peer::Tshark) || !require(Peer::Libtorrent) {
        return;
    }
    let dir = ScratchDir::new("tshark-lt").unwrap();
    let pcap = dir.path().join("libtorrent.pcapng");
    let opts = Options { total_timeout: LIMIT, ..Options::default() };

    // libtorrent's seed.
    let file = dir.path().join("lt-4mib.bin");
    let bytes = (4 * MIB).to_string();
    let mut mk =
        PeerProcess::libtorrent(&["make-file", "--out", file.to_str().unwrap(), "--bytes", &bytes])
            .unwrap();
    assert_eq!(mk.wait_for("result", LIMIT).await["ok"], true);
    let mut lt_seed = PeerProcess::libtorrent(&[
        "seed",
        "--file",
        file.to_str().unwrap(),
        "--bufsize",
        "4194304",
        "--timeout",
        "90",
    ])
    .unwrap();
    let lt_port = lt_seed.wait_for("listening", LIMIT).await["port"].as_u64().unwrap() as u16;
    let seeding = lt_seed.wait_for("seeding", LIMIT).await;
    let lt_meta = Metainfo::from_file(seeding["torrent"].as_str().unwrap().as_ref()).unwrap();

    // Our seed.
    let data = Arc::new(seeded_bytes(13, 4 * MIB));
    let sha = sha256_hex(&data);
    let (meta, torrent) = Metainfo::create("ours-4mib.bin", &data, 256 * 1024);
    let torrent_path = dir.path().join("ours.torrent");
    std::fs::write(&torrent_path, &torrent).unwrap();
    let seed_sock = unbatched_socket().await;
    let our_seed_port = seed_sock.local_addr().unwrap().port();
    let dl_sock = unbatched_socket().await;
    let our_dl_port = dl_sock.local_addr().unwrap().port();

    let cap =
        Capture::start(&[lt_port, our_seed_port], &pcap, Duration::from_secs(20)).await.unwrap();

    // 1. libtorrent -> our downloader.
    let t0 = Instant::now();
    let mut stream = tokio::time::timeout(
        LIMIT,
        dl_sock.connect(format!("127.0.0.1:{lt_port}").parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let (got, report) =
        bittorrent::download(&mut stream, &lt_meta, bittorrent::make_peer_id(), &opts)
            .await
            .unwrap();
    assert_eq!(Some(sha256_hex(&got).as_str()), seeding["sha256"].as_str());
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    eprintln!(
        "libtorrent -> us: 4 MiB, {} pieces verified, {:.2?} ({:.1} MB/s)",
        report.pieces_verified,
        t0.elapsed(),
        report.mb_per_s()
    );

    // 2. our seeder -> libtorrent.
    let seeder = {
        let meta = meta.clone();
        let data = data.clone();
        let opts = opts.clone();
        tokio::spawn(async move {
            let mut stream = seed_sock.accept().await.unwrap();
            let r = bittorrent::seed(&mut stream, &meta, &data, bittorrent::make_peer_id(), &opts)
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(10), stream.close()).await;
            r
        })
    };
    let peer_arg = format!("127.0.0.1:{our_seed_port}");
    let out = dir.path().join("out");
    let mut lt_dl = PeerProcess::libtorrent(&[
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
        "60",
        "--expect-sha256",
        &sha,
    ])
    .unwrap();
    let result = lt_dl.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["all_utp"], true, "{result}");
    assert_eq!(lt_dl.wait(Duration::from_secs(30)).await, Some(0));
    let served = tokio::time::timeout(LIMIT, seeder).await.expect("seeder ended").unwrap();
    let served = served.expect("seeding");
    eprintln!(
        "us -> libtorrent: {} bytes in {} ms ({} MB/s); we served {} bytes, ended by {:?}",
        result["total_bytes"], result["elapsed_ms"], result["mb_per_s"], served.bytes, served.end
    );
    let summary = cap.stop(Duration::from_secs(1)).await.unwrap();
    judge(
        "libtorrent <-> us, 4 MiB each way",
        &pcap,
        &[lt_port, our_seed_port],
        &[our_dl_port, our_seed_port],
        &summary,
    );
}
