//! Bulk throughput on loopback: one uTP connection against one TCP
//! connection moving the same bytes.
//!
//! `cargo bench -p libp2p-utp --bench throughput` moves 256 MiB each way;
//! set `UTP_BENCH_MIB` to change the size. Prints MB/s of both and their
//! ratio, and the uTP sender's statistics. uTP runs twice: with one system
//! call per datagram (skipped with `UTP_BENCH_PLAIN=0`), and with batched
//! I/O (GRO/GSO), the default. `UTP_BENCH_TCP=0` skips TCP (to profile uTP
//! alone).

use std::io;
use std::time::{Duration, Instant};

use libp2p_utp::{Config, UtpSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHUNK: usize = 64 * 1024;

async fn send<W: AsyncWrite + Unpin>(w: &mut W, total: u64) -> io::Result<()> {
    let buf = vec![0x5au8; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

async fn recv<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

async fn utp(total: u64, batched_io: bool) -> io::Result<f64> {
    let mut config = Config::default();
    config.batched_io = batched_io;
    let server = UtpSocket::bind_with_config("127.0.0.1:0", config.clone()).await?;
    let client = UtpSocket::bind_with_config("127.0.0.1:0", config).await?;
    let addr = server.local_addr()?;
    let rx = tokio::spawn(async move {
        let mut s = server.accept().await?;
        let n = recv(&mut s).await?;
        io::Result::Ok((n, Instant::now()))
    });
    let mut s = client.connect(addr).await?;
    let start = Instant::now();
    send(&mut s, total).await?;
    s.close().await?;
    let (n, end) = rx.await.expect("receiver")?;
    assert_eq!(n, total);
    let elapsed = end - start;
    let stats = s.stats();
    println!(
        "uTP (batched I/O {batched_io}): {total} bytes in {elapsed:.2?}; packets sent {}, retransmits {} (fast {}), \
         timeouts {}, rtt {:?}, cwnd {}",
        stats.packets_sent,
        stats.retransmits,
        stats.fast_retransmits,
        stats.timeouts,
        stats.rtt,
        stats.cwnd
    );
    Ok(mb_per_s(total, elapsed))
}

async fn tcp(total: u64) -> io::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let rx = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let n = recv(&mut s).await?;
        io::Result::Ok((n, Instant::now()))
    });
    let mut s = TcpStream::connect(addr).await?;
    let start = Instant::now();
    send(&mut s, total).await?;
    s.shutdown().await?;
    let (n, end) = rx.await.expect("receiver")?;
    assert_eq!(n, total);
    Ok(mb_per_s(total, end - start))
}

fn main() -> io::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too:
    // keep that run short.
    let testing = std::env::args().any(|a| a == "--test") || cfg!(debug_assertions);
    let mib: u64 = std::env::var("UTP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if testing { 4 } else { 256 });
    let total = mib << 20;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let plain = if std::env::var("UTP_BENCH_PLAIN").as_deref() == Ok("0") {
            f64::NAN
        } else {
            utp(total, false).await?
        };
        let utp = utp(total, true).await?;
        let tcp = if std::env::var("UTP_BENCH_TCP").as_deref() == Ok("0") {
            f64::NAN
        } else {
            tcp(total).await?
        };
        println!("uTP, one syscall per datagram: {plain:.1} MB/s");
        println!("uTP: {utp:.1} MB/s");
        println!("TCP: {tcp:.1} MB/s");
        println!("uTP/TCP: {:.3}", utp / tcp);
        Ok(())
    })
}
