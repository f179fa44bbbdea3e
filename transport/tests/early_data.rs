//! Early-data dials (`UtpSocket::connect_early`) on loopback: the stream
//! comes back at once, the first bytes ride on the SYN when the SYN-data
//! extension is on, and failures surface on the next read or write.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use libp2p_utp::utp_proto::wire::{PacketType, Repr};
use libp2p_utp::{ExtFlags, UtpSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

fn config(ext: ExtFlags) -> libp2p_utp::Config {
    let mut config = test_config();
    config.transport_mut().extensions = ext;
    config
}

/// A UDP forwarder in front of `upstream` (one client) that records the
/// payload length of every SYN that passes.
async fn syn_recorder(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<usize>>>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let syns = Arc::new(Mutex::new(Vec::new()));
    let client = Arc::new(Mutex::new(None::<SocketAddr>));
    {
        let (front, back, syns, client) =
            (front.clone(), back.clone(), syns.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                if let Ok(r) = Repr::parse_bytes(&buf[..n]) {
                    if r.packet_type == PacketType::Syn {
                        syns.lock().unwrap().push(r.payload.len());
                    }
                }
                let _ = back.send_to(&buf[..n], upstream).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (addr, syns)
}

/// A request-response over an early dial: the request rides on the SYN
/// (the forwarder saw one SYN carrying all 25 bytes) and the server
/// answers; without the extension the SYN is bare and the request follows
/// the handshake. Both give the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_rides_on_the_syn() {
    init_tracing();
    for ext in [ExtFlags::SYN_DATA, ExtFlags::NONE] {
        let server = socket(config(ext)).await;
        let client = socket(config(ext)).await;
        let (addr, syns) = syn_recorder(server.local_addr().unwrap()).await;
        let test = async move {
            let mut s = client.connect_early(addr).expect("dial");
            s.write_all(b"/multistream/1.0.0\n").await.unwrap();
            s.write_all(b"/echo\n").await.unwrap();
            s.flush().await.unwrap();
            let mut peer = server.accept().await.unwrap();
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
            let syns = syns.lock().unwrap().clone();
            println!("extensions {ext:?}: SYN payloads {syns:?}; SYN data negotiated: {syn_data}");
            if ext == ExtFlags::SYN_DATA {
                assert_eq!(syns, vec![25], "one SYN, carrying the whole request");
                assert!(syn_data);
            } else {
                assert_eq!(syns, vec![0], "a bare SYN");
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
