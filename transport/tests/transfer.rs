//! Data transfer over loopback: echo of several sizes, both directions at
//! once, many streams on one socket, flow control against a slow reader.

mod common;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use libp2p_utp::UtpSocket;
use tokio::io::AsyncWriteExt;

/// The server echoes one connection; the client writes `len` bytes of a
/// pattern while reading the echo back, and checks its sha256.
async fn echo(server: UtpSocket, client: UtpSocket, len: u64) {
    let addr = server.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        let mut stream = server.accept().await?;
        let (mut r, mut w) = stream.split();
        let n = tokio::io::copy(&mut r, &mut w).await?;
        w.shutdown().await?;
        stream.close().await?;
        io::Result::Ok(n)
    });
    let stream = client.connect(addr).await.expect("connect");
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        write_pattern(&mut w, 7, len, 64 * 1024).await?;
        w.close().await
    });
    let (n, sha) = read_sha(&mut r).await.expect("read echo");
    eprintln!("client stats after {len} bytes: {:?}", r.stats());
    assert_eq!(n, len, "echoed length");
    assert_eq!(sha, expected_sha(7, len), "echoed data");
    writer.await.unwrap().expect("writer");
    assert_eq!(srv.await.unwrap().expect("server"), len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_one_byte() {
    init_tracing();
    let (server, client) = pair().await;
    bounded(10, "1-byte echo", echo(server, client, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_one_mib() {
    init_tracing();
    let (server, client) = pair().await;
    bounded(30, "1 MiB echo", echo(server, client, 1 << 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_one_mib_without_batched_io() {
    init_tracing();
    let mut config = test_config();
    config.batched_io = false;
    let (server, client) = (socket(config.clone()).await, socket(config).await);
    bounded(30, "1 MiB echo, plain I/O", echo(server, client, 1 << 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_64_mib() {
    init_tracing();
    let (server, client) = pair().await;
    let start = Instant::now();
    bounded(240, "64 MiB echo", echo(server, client, 64 << 20)).await;
    eprintln!("64 MiB echo took {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_at_once() {
    init_tracing();
    let (server, client) = pair().await;
    let addr = server.local_addr().unwrap();
    const UP: u64 = 3 << 20;
    const DOWN: u64 = 5 << 20;
    let test = async move {
        let srv = tokio::spawn(async move {
            let stream = server.accept().await?;
            let (mut r, mut w) = stream.into_split();
            let writer = tokio::spawn(async move {
                write_pattern(&mut w, 2, DOWN, 50_000).await?;
                w.close().await
            });
            let got = read_sha(&mut r).await?;
            writer.await.unwrap()?;
            io::Result::Ok(got)
        });
        let stream = client.connect(addr).await.expect("connect");
        let (mut r, mut w) = stream.into_split();
        let writer = tokio::spawn(async move {
            write_pattern(&mut w, 1, UP, 30_000).await?;
            w.close().await
        });
        let (n, sha) = read_sha(&mut r).await.expect("client read");
        assert_eq!((n, sha), (DOWN, expected_sha(2, DOWN)));
        writer.await.unwrap().expect("client writer");
        let (n, sha) = srv.await.unwrap().expect("server");
        assert_eq!((n, sha), (UP, expected_sha(1, UP)));
    };
    bounded(60, "bidirectional transfer", test).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_streams_on_one_socket() {
    init_tracing();
    const STREAMS: u64 = 500;
    const LEN: u64 = 10_000;
    let (server, client) = pair().await;
    let addr = server.local_addr().unwrap();
    let test = async move {
        let srv = tokio::spawn(async move {
            let mut handlers = Vec::new();
            for _ in 0..STREAMS {
                let mut stream = server.accept().await?;
                handlers.push(tokio::spawn(async move {
                    let (mut r, mut w) = stream.split();
                    tokio::io::copy(&mut r, &mut w).await?;
                    w.shutdown().await?;
                    stream.close().await
                }));
            }
            for h in handlers {
                h.await.unwrap()?;
            }
            io::Result::Ok(server)
        });
        let mut clients = Vec::new();
        for i in 0..STREAMS {
            let client = client.clone();
            clients.push(tokio::spawn(async move {
                let stream = client.connect(addr).await?;
                let (mut r, mut w) = stream.into_split();
                let writer = tokio::spawn(async move {
                    write_pattern(&mut w, i, LEN, 4096).await?;
                    w.close().await
                });
                let got = read_sha(&mut r).await?;
                writer.await.unwrap()?;
                assert_eq!(got, (LEN, expected_sha(i, LEN)), "stream {i}");
                io::Result::Ok(())
            }));
        }
        for c in clients {
            c.await.unwrap().expect("client stream");
        }
        let server = srv.await.unwrap().expect("server");
        // Every connection closes and is freed.
        let start = Instant::now();
        while client.connection_count() + server.connection_count() > 0 {
            assert!(start.elapsed() < Duration::from_secs(30), "connections not freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    bounded(120, "500 streams", test).await;
}

const SLOW_BUF: usize = 256 * 1024;
const SLOW_LEN: u64 = 8 << 20;

/// What a writer did while its peer did not read.
#[derive(Debug)]
struct Stall {
    /// Bytes written after the first pause.
    written: u64,
    /// Bytes written after the second pause.
    written_later: u64,
}

/// A writer to a peer that does not read for `pause`, then `more`; then the
/// peer reads everything and checks it.
async fn slow_reader(pause: Duration, more: Duration, batched_io: bool) -> Stall {
    let mut config = test_config();
    config.batched_io = batched_io;
    config.transport_mut().send_buffer_size = SLOW_BUF;
    config.transport_mut().receive_buffer_size = SLOW_BUF;
    let server = socket(config.clone()).await;
    let client = socket(config).await;
    let addr = server.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let writer = tokio::spawn(async move {
        let mut stream = client.connect(addr).await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut off = 0u64;
        while off < SLOW_LEN {
            let n = (SLOW_LEN - off).min(buf.len() as u64) as usize;
            pattern(3, off, &mut buf[..n]);
            let w = stream.write(&buf[..n]).await?;
            off += w as u64;
            counter.store(off, Ordering::SeqCst);
        }
        stream.close().await?;
        io::Result::Ok(stream.stats())
    });
    let mut stream = server.accept().await.expect("accept");
    // Nobody reads for a while: the writer must stall.
    tokio::time::sleep(pause).await;
    let first = (written.load(Ordering::SeqCst), stream.stats());
    // Closed but for less than one of the sender's packets (which path MTU
    // discovery makes up to 64 KiB on loopback).
    assert!(first.1.recv_window < SLOW_BUF / 4, "receive window still open: {:?}", first.1);
    tokio::time::sleep(more).await;
    let later = (written.load(Ordering::SeqCst), stream.stats());
    let stall = Stall { written: first.0, written_later: later.0 };
    eprintln!("{stall:?}; receiver {:?}", later.1);
    let (n, sha) = read_sha(&mut stream).await.expect("read");
    assert_eq!((n, sha), (SLOW_LEN, expected_sha(3, SLOW_LEN)));
    let stats = writer.await.unwrap().expect("writer");
    assert_eq!(stats.bytes_written, SLOW_LEN);
    stall
}

/// A reader that sleeps stalls the writer: nothing is written past the
/// send buffer + the receive window (+ one packet of slack: the receiver
/// takes one packet of any size while its window is open, and path MTU
/// discovery makes them up to 64 KiB on loopback), however long the reader
/// sleeps, with either kind of socket I/O; then everything arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_blocks_the_writer() {
    init_tracing();
    for batched_io in [true, false] {
        let (pause, more) = (Duration::from_millis(1000), Duration::from_millis(1500));
        let stall = bounded(60, "slow reader", slow_reader(pause, more, batched_io)).await;
        let bound = (2 * SLOW_BUF + 65_536) as u64;
        assert!(stall.written >= SLOW_BUF as u64, "{stall:?}: wrote too little");
        assert!(stall.written <= bound, "{stall:?}: wrote past the bound {bound}");
        assert_eq!(stall.written_later, stall.written, "the writer went on without a reader");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_io_traits_and_reunite() {
    init_tracing();
    const LEN: u64 = 300_000;
    let (server, client) = pair().await;
    let addr = server.local_addr().unwrap();
    let test = async move {
        let srv = tokio::spawn(async move {
            let mut s = server.accept().await?;
            let mut buf = Vec::new();
            futures::io::AsyncReadExt::read_to_end(&mut s, &mut buf).await?;
            // futures' close is a half-close: we can still write after the
            // peer's, and the peer reads our end of stream after it.
            futures::io::AsyncWriteExt::write_all(&mut s, &buf).await?;
            futures::io::AsyncWriteExt::close(&mut s).await?;
            io::Result::Ok(())
        });
        let s = client.connect(addr).await.expect("connect");
        let (r, w) = s.into_split();
        let mut s = r.reunite(w).expect("same stream");
        let mut data = vec![0u8; LEN as usize];
        pattern(11, 0, &mut data);
        futures::io::AsyncWriteExt::write_all(&mut s, &data).await.unwrap();
        futures::io::AsyncWriteExt::close(&mut s).await.unwrap();
        let mut back = Vec::new();
        futures::io::AsyncReadExt::read_to_end(&mut s, &mut back).await.unwrap();
        assert!(back == data, "echo differs");
        srv.await.unwrap().unwrap();
    };
    bounded(30, "futures io", test).await;
}

/// Path MTU discovery on loopback: the search finds datagrams of (nearly)
/// 64 KiB, over IPv4 and IPv6, and the data arrives intact.
async fn loopback_path_mtu(bind: &str) -> libp2p_utp::Stats {
    let config = test_config();
    let server = UtpSocket::bind_with_config(bind, config.clone()).await.unwrap();
    let client = UtpSocket::bind_with_config(bind, config).await.unwrap();
    let addr = server.local_addr().unwrap();
    const LEN: u64 = 32 << 20;
    let srv = tokio::spawn(async move {
        let mut stream = server.accept().await?;
        let got = read_sha(&mut stream).await?;
        io::Result::Ok(got)
    });
    let mut stream = client.connect(addr).await.expect("connect");
    write_pattern(&mut stream, 5, LEN, 256 * 1024).await.expect("write");
    stream.close().await.expect("close");
    let stats = stream.stats();
    assert_eq!(srv.await.unwrap().expect("read"), (LEN, expected_sha(5, LEN)));
    eprintln!("{bind}: {stats:?}");
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_mtu_discovery_finds_the_loopback_mtu() {
    let v4 = bounded(60, "IPv4 transfer", loopback_path_mtu("127.0.0.1:0")).await;
    // 65 536-byte loopback MTU: 65 507 bytes of UDP payload at most.
    assert!(v4.packet_size >= 65_507 - 65_507 / 64, "{v4:?}");
    assert!(v4.mtu_probes > 0);
    if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        let v6 = bounded(60, "IPv6 transfer", loopback_path_mtu("[::1]:0")).await;
        // 65 536 - 40 - 8 bytes; the first probe (65 507) is refused with EMSGSIZE.
        assert!((65_488 - 65_488 / 64..=65_488).contains(&v6.packet_size), "{v6:?}");
    }
}

/// `read_buf` into a `Vec`'s spare capacity (uninitialised memory: the
/// stream initialises only what each read fills) gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_buf_into_spare_capacity() {
    use tokio::io::AsyncReadExt;
    init_tracing();
    let server = socket(test_config()).await;
    let client = socket(test_config()).await;
    let addr = server.local_addr().unwrap();
    let test = async move {
        let mut s = client.connect(addr).await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            s.write_all(&sent).await.unwrap();
            s.shutdown().await.unwrap();
            s
        });
        let mut peer = server.accept().await.unwrap();
        let mut got = Vec::with_capacity(1 << 20);
        let mut calls = 0;
        while peer.read_buf(&mut got).await.unwrap() > 0 {
            calls += 1;
            if got.capacity() - got.len() < 1024 {
                got.reserve(1 << 20);
            }
        }
        assert!(got == data, "{} of {} bytes, or out of order", got.len(), data.len());
        assert!(calls >= 1);
        drop(writer.await.unwrap());
    };
    bounded(30, "read_buf", test).await;
}
