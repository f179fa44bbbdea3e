//! The two processes of a run, for uTP (this project's runtime, default
//! configuration) and TCP (tokio): a receiver that reads every connection
//! to its end, and a sender that writes its bytes on each of its
//! connections, half-closes, and waits for the receiver's end. Both print
//! one line on stdout: the receiver `ready PORT` once it listens and
//! `done BYTES` at the end; the sender `done BYTES`.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use clap::{Subcommand, ValueEnum};
use libp2p_utp::{Config, UtpSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Bytes per write and per read.
const BLOCK: usize = 256 * 1024;

#[derive(Subcommand, Debug)]
pub(crate) enum Role {
    /// Accept CONNS connections and read each to its end.
    Recv {
        #[arg(long, value_enum)]
        proto: Proto,
        #[arg(long)]
        conns: usize,
    },
    /// Open CONNS connections to TO (WINDOW at a time) and send SIZE bytes
    /// on each.
    Send {
        #[arg(long, value_enum)]
        proto: Proto,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        conns: usize,
        #[arg(long)]
        size: u64,
        #[arg(long)]
        window: usize,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Utp,
    Tcp,
}

pub(crate) fn run(role: Role) -> io::Result<()> {
    // `UTP_BENCH_LOG=libp2p_utp=debug,utp_proto=debug` (a tracing filter):
    // both processes log to stderr, to see what a failed run did.
    if let Ok(filter) = std::env::var("UTP_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .init();
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match role {
            Role::Recv { proto, conns } => recv(proto, conns).await,
            Role::Send { proto, to, conns, size, window } => {
                send(proto, to, conns, size, window).await
            }
        }
    })
}

async fn recv(proto: Proto, conns: usize) -> io::Result<()> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut tasks = JoinSet::new();
    let mut socket = None;
    match proto {
        Proto::Utp => {
            let utp = UtpSocket::bind_with_config(any, Config::default()).await?;
            socket = Some(utp.clone());
            println!("ready {}", utp.local_addr()?.port());
            for _ in 0..conns {
                let mut s = utp.accept().await?;
                tasks.spawn(async move {
                    let n = drain(&mut s).await?;
                    s.close().await?;
                    Ok::<_, io::Error>(n)
                });
            }
        }
        Proto::Tcp => {
            let listener = tokio::net::TcpListener::bind(any).await?;
            println!("ready {}", listener.local_addr()?.port());
            for _ in 0..conns {
                let (mut s, _) = listener.accept().await?;
                tasks.spawn(async move {
                    let n = drain(&mut s).await?;
                    s.shutdown().await?;
                    Ok::<_, io::Error>(n)
                });
            }
        }
    }
    let total = sum(tasks).await;
    report("receiver", socket.as_ref());
    println!("done {}", total?);
    Ok(())
}

/// With `UTP_BENCH_STATS` set, the socket's counters on stderr.
fn report(side: &str, socket: Option<&UtpSocket>) {
    if let (Some(socket), Some(_)) = (socket, std::env::var_os("UTP_BENCH_STATS")) {
        let s = socket.socket_stats();
        eprintln!(
            "{side}: {:?}\n{side}: {:?}\n{side}: {} datagrams dropped by the kernel (receive \
             buffer full)",
            s.traffic, s.endpoint, s.kernel_receive_drops
        );
    }
}

async fn send(
    proto: Proto,
    to: SocketAddr,
    conns: usize,
    size: u64,
    window: usize,
) -> io::Result<()> {
    let mut data = vec![0u8; BLOCK];
    utp_examples::fill(&mut data, 7);
    let data: Arc<[u8]> = data.into();
    let window = Arc::new(Semaphore::new(window.max(1)));
    let socket = match proto {
        Proto::Utp => Some(UtpSocket::bind_with_config("127.0.0.1:0", Config::default()).await?),
        Proto::Tcp => None,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..conns {
        let (data, window, socket) = (data.clone(), window.clone(), socket.clone());
        tasks.spawn(async move {
            let _permit = window.acquire().await.map_err(io::Error::other)?;
            match socket {
                Some(socket) => {
                    let mut s = socket.connect(to).await?;
                    pump(&mut s, &data, size).await?;
                    drain(&mut s).await?;
                }
                None => {
                    let mut s = tokio::net::TcpStream::connect(to).await?;
                    pump(&mut s, &data, size).await?;
                    drain(&mut s).await?;
                }
            }
            Ok::<_, io::Error>(size)
        });
    }
    let total = sum(tasks).await;
    report("sender", socket.as_ref());
    println!("done {}", total?);
    Ok(())
}

/// Waits for every task; the sum of their byte counts.
async fn sum(mut tasks: JoinSet<io::Result<u64>>) -> io::Result<u64> {
    let mut total = 0;
    while let Some(n) = tasks.join_next().await {
        total += n.map_err(io::Error::other)??;
    }
    Ok(total)
}

/// Writes `size` bytes (the block over and over), then half-closes.
async fn pump<W: AsyncWrite + Unpin>(w: &mut W, block: &[u8], size: u64) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    w.shutdown().await
}

/// Reads to the end; returns the byte count. The read buffers go round
/// through a pool: a fresh 256 KiB per connection would cost page faults
/// that belong to the bench, not to the transport measured.
async fn drain<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<u64> {
    static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let mut buf =
        POOL.lock().map(|mut p| p.pop()).ok().flatten().unwrap_or_else(|| vec![0u8; BLOCK]);
    let mut total = 0;
    let result = loop {
        match r.read(&mut buf).await {
            Ok(0) => break Ok(total),
            Ok(n) => total += n as u64,
            Err(e) => break Err(e),
        }
    };
    if let Ok(mut pool) = POOL.lock() {
        pool.push(buf);
    }
    result
}
