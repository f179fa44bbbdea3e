//! Byte-for-byte transfers between this project and libutp (utp-native).

use std::net::SocketAddr;
use std::time::Duration;

use libp2p_utp::UtpSocket;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use utp_interop::{
    assert_echo, loopback_socket, require, seeded_bytes, sha256_hex, Peer, PeerProcess,
};

const MIB: usize = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);

async fn socket() -> UtpSocket {
    loopback_socket(utp_interop::config()).await
}

/// Our client, libutp's echo server: what comes back is what we sent.
async fn echo_through_libutp(len: usize, bufsize: &str) {
    if !require(Peer::Libutp) {
        return;
    }
    let mut peer = PeerProcess::libutp(&["echo-server", "0", "--bufsize", bufsize]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sock = socket().await;
    let stream = tokio::time::timeout(LIMIT, sock.connect(addr)).await.unwrap().unwrap();
    assert_echo(stream, len, LIMIT, || format!("libutp echo server on {addr}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_libutp_echo_1_byte() {
    echo_through_libutp(1, "4194304").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_libutp_echo_1_mib() {
    echo_through_libutp(MIB, "4194304").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_libutp_echo_1_mib_default_buffers() {
    echo_through_libutp(MIB, "0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_libutp_echo_64_mib() {
    echo_through_libutp(64 * MIB, "4194304").await;
}

/// libutp's client, our echo server.
async fn libutp_client_our_echo(len: usize, conns: usize) {
    if !require(Peer::Libutp) {
        return;
    }
    let sock = socket().await;
    let port = sock.local_addr().unwrap().port().to_string();
    let server = sock.clone();
    tokio::spawn(async move {
        loop {
            let Ok(stream) = server.accept().await else { return };
            tokio::spawn(async move {
                let (mut rd, mut wr) = stream.into_split();
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
                let _ = wr.shutdown().await;
                let _ = wr.close().await;
            });
        }
    });
    let bytes = len.to_string();
    let conns_s = conns.to_string();
    let mut args = vec!["echo-client", "127.0.0.1", &port, &bytes, "--bufsize", "4194304"];
    if conns > 1 {
        args.extend(["--conns", &conns_s, "--shared-socket"]);
    }
    let mut peer = PeerProcess::libutp(&args).unwrap();
    let mut results = 0;
    let fut = async {
        while let Some(ev) = peer.next_event().await {
            if ev["event"] == "result" {
                assert_eq!(ev["ok"], true, "libutp client: {ev}");
                assert_eq!(ev["recv_sha256"], ev["sent_sha256"], "echo differs: {ev}");
                assert_eq!(ev["recv_bytes"].as_u64(), Some(len as u64), "{ev}");
                results += 1;
            }
            if ev["event"] == "done" {
                assert_eq!(ev["ok"], true, "{ev}");
                break;
            }
        }
    };
    tokio::time::timeout(LIMIT, fut).await.expect("libutp client finished in time");
    assert_eq!(results, conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_client_our_echo_1_mib() {
    libutp_client_our_echo(MIB, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_client_our_echo_64_mib() {
    libutp_client_our_echo(64 * MIB, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_100_concurrent_clients_on_one_socket() {
    libutp_client_our_echo(64 * 1024, 100).await;
}

/// One-way 64 MiB each way: our sender into libutp's sink, libutp's source
/// into our receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_sender_libutp_sink_64_mib() {
    if !require(Peer::Libutp) {
        return;
    }
    let mut peer =
        PeerProcess::libutp(&["sink", "0", "--bufsize", "4194304", "--conns", "1"]).unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let sock = socket().await;
    let mut stream = sock.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let data = seeded_bytes(3, 64 * MIB);
    tokio::time::timeout(LIMIT, async {
        stream.write_all(&data).await.unwrap();
        stream.close().await.unwrap();
    })
    .await
    .expect("sent in time");
    let result = peer.wait_for("result", LIMIT).await;
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["sha256"].as_str(), Some(sha256_hex(&data).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libutp_source_our_receiver_64_mib() {
    if !require(Peer::Libutp) {
        return;
    }
    let len = 64 * MIB;
    let len_s = len.to_string();
    let mut peer =
        PeerProcess::libutp(&["source", "0", &len_s, "--bufsize", "4194304", "--conns", "1"])
            .unwrap();
    let port = peer.wait_for("listening", LIMIT).await["port"].as_u64().unwrap();
    let sock = socket().await;
    let mut stream = sock.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    // utp-native holds an accepted connection's writes until the client
    // sends data: say hello first (see peers/README.md).
    stream.write_all(b"h").await.unwrap();
    let mut got = Vec::with_capacity(len);
    tokio::time::timeout(LIMIT, stream.read_to_end(&mut got)).await.expect("in time").unwrap();
    assert_eq!(got.len(), len);
    assert_eq!(sha256_hex(&got), sha256_hex(&seeded_bytes(1, len)));
}
