//! Early-data dials (`UtpSocket::connect_early`) on loopback: the stream
//! comes back at once, the first bytes ride on the SYN when the SYN-data
//! extension is on, and failures surface on the next read or write.

mod common;

use std::io;
use std::time::Duration;

use common::*;
use libp2p_utp::{ExtFlags, UtpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(ext: ExtFlags) -> libp2p_utp::Config {
    let mut config = test_config();
    config.transport_mut().extensions = ext;
    config
}

/// A request-response over an early dial: the server has the request in
/// the SYN (the accepted connection received nothing but the SYN when it
/// is handed out) and answers; without the extension the request follows
/// the handshake. Both give the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rides_on_the_syn() {
    init_tracing();
    for ext in [ExtFlags::SYN_DATA, ExtFlags::NONE] {
        let server = socket(config(ext)).await;
        let client = socket(config(ext)).await;
        let addr = server.local_addr().unwrap();
        let test = async move {
            let mut s = client.connect_early(addr).expect("dial");
            s.write_all(b"/multistream/1.0.0\n").await.unwrap();
            s.write_all(b"/echo\n").await.unwrap();
            s.flush().await.unwrap();
            let mut peer = server.accept().await.unwrap();
            let received_at_accept = peer.stats().packets_received;
            let mut req = [0u8; 25];
            peer.read_exact(&mut req).await.unwrap();
            assert_eq!(&req, b"/multistream/1.0.0\n/echo\n");
            peer.write_all(b"answer").await.unwrap();
            peer.shutdown().await.unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"answer");
            s.shutdown().await.unwrap();
            let syn_data = s.negotiated().contains(ExtFlags::SYN_DATA);
            println!(
                "extensions {ext:?}: the server's connection had {received_at_accept} packet(s) \
                 when accepted; SYN data negotiated: {syn_data}"
            );
            // The counters leave the SYN out: 0 means the SYN alone.
            if ext == ExtFlags::SYN_DATA {
                assert_eq!(received_at_accept, 0, "accepted on the SYN alone");
                assert!(syn_data);
            } else {
                assert!(received_at_accept >= 1, "accepted on the confirmation");
            }
        };
        bounded(10, "early request", test).await;
    }
}

/// Nothing written: the SYN goes bare after the hold and the stream works
/// as an ordinary one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_written_still_connects() {
    init_tracing();
    let mut cfg = config(ExtFlags::SYN_DATA);
    cfg.transport_mut().syn_hold = Duration::from_millis(30);
    let server = socket(cfg.clone()).await;
    let client = socket(cfg).await;
    let addr = server.local_addr().unwrap();
    let test = async move {
        let s = client.connect_early(addr).expect("dial");
        let mut peer = server.accept().await.unwrap();
        peer.write_all(b"server speaks first").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut s = s;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"server speaks first");
    };
    bounded(10, "bare early dial", test).await;
}

/// A dial to a socket that refuses: the stream is handed out, and the
/// refusal is the error of the next read (and write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_surfaces_on_read_and_write() {
    init_tracing();
    let server = socket(config(ExtFlags::SYN_DATA)).await;
    let client: UtpSocket = socket(config(ExtFlags::SYN_DATA)).await;
    let addr = server.local_addr().unwrap();
    server.close();
    let test = async move {
        let mut s = client.connect_early(addr).expect("dial");
        s.write_all(b"hello?").await.unwrap();
        s.flush().await.unwrap();
        let err = s.read(&mut [0u8; 8]).await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let err = s.write_all(b"more").await.expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    };
    bounded(10, "refused early dial", test).await;
}
