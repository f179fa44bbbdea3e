//! Whole torrents between this project and libtorrent-rasterbar 2.1.1, uTP
//! only: BitTorrent (our `utp_interop::bittorrent`) over our uTP, against
//! libtorrent's BitTorrent over its own uTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_utp::UtpSocket;
use utp_interop::bittorrent::{self, Metainfo, Options, ScratchDir};
use utp_interop::{loopback_socket, require, seeded_bytes, sha256_hex, Peer, PeerProcess};

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(100);
const BUFSIZE: &str = "4194304";

async fn socket() -> UtpSocket {
    loopback_socket(utp_interop::config()).await
}

fn opts() -> Options {
    Options { total_timeout: LIMIT, ..Options::default() }
}

/// libtorrent seeds a file made by `lt_peer.py make-file`; our downloader
/// takes the whole torrent over our uTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeds_our_downloader_32_mib() {
    if !require(Peer::Libtorrent) {
        return;
    }
    let dir = ScratchDir::new("lt-seed").unwrap();
    let file = dir.path().join("lt-32mib.bin");
    let file_s = file.to_str().unwrap();
    let bytes = (32 * MIB).to_string();
    let mut mk =
        PeerProcess::libtorrent(&["make-file", "--out", file_s, "--bytes", &bytes, "--seed", "5"])
            .unwrap();
    let made = mk.wait_for("result", LIMIT).await;
    assert_eq!(made["ok"], true, "{made}");

    let mut seed = PeerProcess::libtorrent(&[
        "seed",
        "--file",
        file_s,
        "--bufsize",
        BUFSIZE,
        "--timeout",
        "110",
    ])
    .unwrap();
    let port = seed.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let seeding = seed.wait_for("seeding", LIMIT).await;
    let meta = Metainfo::from_file(seeding["torrent"].as_str().unwrap().as_ref()).unwrap();
    assert_eq!(seeding["info_hash"].as_str(), Some(meta.info_hash_hex().as_str()), "info-hash");
    assert_eq!(meta.length, 32 * MIB as u64);
    assert_eq!(seeding["num_pieces"].as_u64(), Some(meta.num_pieces() as u64));

    let out = ScratchDir::new("lt-seed-out").unwrap();
    let sock = socket().await;
    let t0 = Instant::now();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut stream = tokio::time::timeout(LIMIT, sock.connect(addr)).await.unwrap().unwrap();
    let (path, report) =
        bittorrent::download_to_dir(&mut stream, &meta, out.path(), &opts()).await.unwrap();
    let elapsed = t0.elapsed();
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len() as u64, meta.length);
    assert!(meta.verify(&got).is_ok(), "every piece's SHA-1");
    assert_eq!(report.pieces_verified, meta.num_pieces());
    assert_eq!(Some(sha256_hex(&got).as_str()), seeding["sha256"].as_str(), "file sha256");
    let stats = stream.stats();
    tokio::time::timeout(Duration::from_secs(10), stream.close()).await.ok();
    let peer = seed.wait_for("peer", Duration::from_secs(10)).await;
    assert_eq!(peer["utp"], true, "libtorrent saw us over uTP: {peer}");
    eprintln!(
        "libtorrent -> our downloader: {} bytes, {} pieces verified in {:.2?} \
         ({:.1} MB/s payload, {:.2?} with connect), {} requests, max {} outstanding, \
         received {:?}, remote client {:?}; stats {stats:?}",
        report.bytes,
        report.pieces_verified,
        report.elapsed,
        report.mb_per_s(),
        elapsed,
        report.requests,
        report.max_outstanding,
        report.received,
        String::from_utf8_lossy(&report.remote.peer_id[..8]),
    );
}

/// Our seeder serves a torrent we made; libtorrent downloads it over uTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_seeder_libtorrent_downloads_32_mib() {
    if !require(Peer::Libtorrent) {
        return;
    }
    let dir = ScratchDir::new("our-seed").unwrap();
    let data = Arc::new(seeded_bytes(11, 32 * MIB));
    let sha = sha256_hex(&data);
    let (meta, torrent) = Metainfo::create("ours-32mib.bin", &data, 256 * 1024);
    let meta = Arc::new(meta);
    let torrent_path = dir.path().join("ours.torrent");
    std::fs::write(&torrent_path, &torrent).unwrap();

    let sock = socket().await;
    let port = sock.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = sock.clone();
    let (m2, d2) = (meta.clone(), data.clone());
    tokio::spawn(async move {
        // Every connection libtorrent makes gets served (it may retry).
        loop {
            let Ok(mut stream) = server.accept().await else { return };
            let (meta, data, tx) = (m2.clone(), d2.clone(), tx.clone());
            tokio::spawn(async move {
                let r = bittorrent::seed(
                    &mut stream,
                    &meta,
                    &data,
                    bittorrent::make_peer_id(),
                    &opts(),
                )
                .await;
                let stats = stream.stats();
                let _ = tokio::time::timeout(Duration::from_secs(10), stream.close()).await;
                let _ = tx.send((r, stats));
            });
        }
    });

    let peer_arg = format!("127.0.0.1:{port}");
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
        BUFSIZE,
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
    assert_eq!(result["total_bytes"].as_u64(), Some(data.len() as u64), "{result}");
    for p in result["peers"].as_array().unwrap() {
        assert_ne!(p["flags"].as_u64().unwrap() & 0x20000, 0, "uTP flag: {p}");
    }
    assert_eq!(lt.wait(Duration::from_secs(30)).await, Some(0), "lt_peer exit code");
    // libtorrent leaves when done: the seeder's connection ends.
    let (report, stats) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the seeder's connection ended")
        .unwrap();
    let report = report.expect("seeding");
    assert!(report.bytes >= data.len() as u64, "served {} bytes", report.bytes);
    eprintln!(
        "our seeder -> libtorrent: libtorrent reports {} bytes in {} ms ({} MB/s), peers {}; \
         we served {} blocks / {} bytes in {:.2?}, ended by {:?}, received {:?}, \
         remote client {:?}; stats {stats:?}",
        result["total_bytes"],
        result["elapsed_ms"],
        result["mb_per_s"],
        result["peers"],
        report.blocks,
        report.bytes,
        report.elapsed,
        report.end,
        report.received,
        String::from_utf8_lossy(&report.remote.peer_id[..8]),
    );
}
