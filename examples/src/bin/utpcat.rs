//! utpcat: netcat over uTP.
//!
//! ```text
//! utpcat listen 127.0.0.1:9000            # accept one connection: stdin -> peer -> stdout
//! utpcat connect 127.0.0.1:9000           # the same from the dialing side
//! utpcat send FILE 127.0.0.1:9000         # send a file (progress bar, sha256)
//! utpcat recv 127.0.0.1:9000 -o FILE      # receive one (progress bar, sha256)
//! utpcat bench                            # loopback benchmark in one process
//! ```

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p_utp::{Config, UtpSocket, UtpStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// netcat over uTP, the Micro Transport Protocol of BitTorrent (BEP 29).
///
/// Exit status: 0 success, 1 I/O or usage error, 3 connection refused,
/// 4 timed out, 5 connection reset by the peer.
#[derive(Parser, Debug)]
#[command(name = "utpcat", version)]
struct Cli {
    /// Log what the protocol does (-v: debug, -vv: trace) to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Give up dialing after this many seconds.
    #[arg(long, default_value_t = 10, global = true, value_name = "SECS")]
    connect_timeout: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept one connection on HOST:PORT; copy it to stdout and stdin to it.
    /// Exits when both directions are done.
    Listen {
        /// Address to listen on, e.g. `127.0.0.1:9000` or `[::1]:9000`.
        addr: SocketAddr,
    },
    /// Connect to HOST:PORT; copy stdin to it and it to stdout. End of
    /// stdin half-closes the connection (sends FIN); reading goes on.
    Connect {
        /// Address to connect to.
        addr: SocketAddr,
    },
    /// Send FILE to a `utpcat recv` (or any uTP listener) at HOST:PORT.
    Send {
        /// File to send.
        file: PathBuf,
        /// Address to connect to.
        addr: SocketAddr,
    },
    /// Accept one connection on HOST:PORT and save what it sends.
    Recv {
        /// Address to listen on.
        addr: SocketAddr,
        /// Write the data here instead of to stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Loopback benchmark: a listener and a client in this process move
    /// data over uTP and print throughput, CPU time per GB and statistics.
    Bench {
        /// Bytes to transfer in all, e.g. 256M, 1G, 1048576.
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        size: u64,
        /// Connections to spread the bytes over (all on one socket each side).
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Also run the same transfer over TCP on loopback, for comparison.
        #[arg(long)]
        tcp: bool,
        /// Use IPv6 (::1) instead of 127.0.0.1.
        #[arg(long)]
        ipv6: bool,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix {c:?}: use K, M or G")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n: u64 =
        num.parse().map_err(|_| format!("{s:?} is not a size (examples: 512K, 64M, 1G)"))?;
    n.checked_mul(mult).filter(|&n| n > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

fn exit_code(e: &io::Error) -> ExitCode {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ExitCode::from(3),
        io::ErrorKind::TimedOut => ExitCode::from(4),
        io::ErrorKind::ConnectionReset => ExitCode::from(5),
        _ => ExitCode::from(1),
    }
}

fn describe(e: &io::Error, what: &str) -> String {
    let hint = match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            " (the peer answered with a RESET: is anything listening there?)"
        }
        io::ErrorKind::TimedOut => " (no answer: wrong address, a firewall, or nothing listening)",
        io::ErrorKind::ConnectionReset => " (the peer aborted the connection)",
        io::ErrorKind::AddrInUse => " (another program uses that port)",
        _ => "",
    };
    format!("utpcat: {what}: {e}{hint}")
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.verbose > 0 {
        let level = if cli.verbose == 1 { "debug" } else { "trace" };
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "utp_proto={level},libp2p_utp={level}"
            )))
            .init();
    }
    let mut config = Config::default();
    config.transport_mut().connect_timeout = Duration::from_secs(cli.connect_timeout);
    let result = match cli.command {
        Command::Listen { addr } => listen(addr, config).await,
        Command::Connect { addr } => connect(addr, config).await,
        Command::Send { file, addr } => send(file, addr, config).await,
        Command::Recv { addr, output } => recv(addr, output, config).await,
        Command::Bench { size, connections, tcp, ipv6 } => {
            bench(size, connections.max(1), tcp, ipv6, config).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, what)) => {
            eprintln!("{}", describe(&e, &what));
            exit_code(&e)
        }
    }
}

type CatResult = Result<(), (io::Error, String)>;

fn ctx<T>(r: io::Result<T>, what: impl Into<String>) -> Result<T, (io::Error, String)> {
    r.map_err(|e| (e, what.into()))
}

async fn bind(addr: SocketAddr, config: Config) -> Result<UtpSocket, (io::Error, String)> {
    ctx(UtpSocket::bind_with_config(addr, config).await, format!("cannot listen on {addr}"))
}

async fn dial(
    addr: SocketAddr,
    config: Config,
) -> Result<(UtpSocket, UtpStream), (io::Error, String)> {
    let local: SocketAddr =
        if addr.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let socket = bind(local, config).await?;
    let stream = ctx(socket.connect(addr).await, format!("cannot connect to {addr}"))?;
    Ok((socket, stream))
}

/// Copies stdin to the stream (then half-closes) and the stream to stdout.
async fn pipe_stdio(stream: UtpStream) -> CatResult {
    let (mut rd, mut wr) = stream.into_split();
    let upload = async move {
        let mut stdin = tokio::io::stdin();
        ctx(tokio::io::copy(&mut stdin, &mut wr).await, "sending")?;
        ctx(wr.shutdown().await, "closing the sending side")?;
        ctx(wr.close().await, "waiting for the peer to take the last bytes")
    };
    let download = async move {
        let mut stdout = tokio::io::stdout();
        ctx(tokio::io::copy(&mut rd, &mut stdout).await, "receiving")?;
        ctx(stdout.flush().await, "writing to stdout")
    };
    let (up, down) = tokio::join!(upload, download);
    up.and(down)
}

async fn listen(addr: SocketAddr, config: Config) -> CatResult {
    let socket = bind(addr, config).await?;
    eprintln!("utpcat: listening on {}", socket.local_addr().map_or(addr, |a| a));
    let stream = ctx(socket.accept().await, "accepting")?;
    eprintln!("utpcat: connection from {}", stream.peer_addr());
    pipe_stdio(stream).await
}

async fn connect(addr: SocketAddr, config: Config) -> CatResult {
    let (_socket, stream) = dial(addr, config).await?;
    pipe_stdio(stream).await
}

fn progress(len: Option<u64>, quiet: bool) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn summary(bytes: u64, elapsed: Duration, hash: Sha256) -> String {
    format!(
        "{} bytes in {:.2} s ({:.1} MB/s), sha256 {:x}",
        bytes,
        elapsed.as_secs_f64(),
        bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6,
        hash.finalize()
    )
}

/// Copies `from` to `to` until end of stream, hashing and counting the
/// bytes and moving the progress bar; errors name the side that failed.
async fn copy_hashing<R, W>(
    from: &mut R,
    to: &mut W,
    bar: &ProgressBar,
    reading: &str,
    writing: &str,
) -> Result<(u64, Sha256), (io::Error, String)>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = ctx(from.read(&mut buf).await, reading)?;
        if n == 0 {
            return Ok((total, hash));
        }
        hash.update(&buf[..n]);
        ctx(to.write_all(&buf[..n]).await, writing)?;
        total += n as u64;
        bar.set_position(total);
    }
}

async fn send(file: PathBuf, addr: SocketAddr, config: Config) -> CatResult {
    let mut f = ctx(tokio::fs::File::open(&file).await, format!("cannot open {}", file.display()))?;
    let len = f.metadata().await.ok().map(|m| m.len());
    let (_socket, mut stream) = dial(addr, config).await?;
    let bar = progress(len, false);
    let start = Instant::now();
    let reading = format!("reading {}", file.display());
    let (total, hash) = copy_hashing(&mut f, &mut stream, &bar, &reading, "sending").await?;
    ctx(stream.close().await, "waiting for the receiver to take the last bytes")?;
    bar.finish_and_clear();
    eprintln!("utpcat: sent {}", summary(total, start.elapsed(), hash));
    Ok(())
}

async fn recv(addr: SocketAddr, output: Option<PathBuf>, config: Config) -> CatResult {
    let socket = bind(addr, config).await?;
    eprintln!("utpcat: listening on {}", socket.local_addr().map_or(addr, |a| a));
    let mut stream = ctx(socket.accept().await, "accepting")?;
    eprintln!("utpcat: connection from {}", stream.peer_addr());
    let mut out: Box<dyn AsyncWrite + Unpin + Send> = match &output {
        Some(path) => Box::new(ctx(
            tokio::fs::File::create(path).await,
            format!("cannot create {}", path.display()),
        )?),
        None => Box::new(tokio::io::stdout()),
    };
    let bar = progress(None, output.is_none());
    let start = Instant::now();
    let (total, hash) =
        copy_hashing(&mut stream, &mut out, &bar, "receiving", "writing the output").await?;
    ctx(out.flush().await, "writing the output")?;
    bar.finish_and_clear();
    eprintln!("utpcat: received {}", summary(total, start.elapsed(), hash));
    Ok(())
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to an rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Deterministic bytes, cheap to make: the bench measures the transport.
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

async fn pump_out<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: u64,
    bar: &ProgressBar,
) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    fill(&mut buf, 7);
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
        bar.inc(n as u64);
    }
    w.flush().await
}

async fn drain<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

struct Run {
    label: &'static str,
    bytes: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Run {
    fn row(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        let gb = self.bytes as f64 / 1e9;
        format!(
            "{:<6} {:>10.1} MiB {:>9.2} s {:>10.1} MB/s {:>10.2} s",
            self.label,
            self.bytes as f64 / (1 << 20) as f64,
            secs,
            self.bytes as f64 / secs / 1e6,
            self.cpu.as_secs_f64() / gb,
        )
    }
}

async fn bench(size: u64, connections: usize, tcp: bool, ipv6: bool, config: Config) -> CatResult {
    let ip = if ipv6 { "[::1]:0" } else { "127.0.0.1:0" };
    let any: SocketAddr = ip.parse().unwrap();
    let server = bind(any, config.clone()).await?;
    let client = bind(any, config).await?;
    let server_addr = ctx(server.local_addr(), "local address")?;
    let per_conn = size / connections as u64;
    let total = per_conn * connections as u64;
    eprintln!(
        "utpcat bench: {} over {} uTP connection(s) on {} (sender and receiver in this process)",
        indicatif::HumanBytes(total),
        connections,
        server_addr.ip()
    );
    let bar = progress(Some(total), false);
    let cpu0 = cpu_time();
    let start = Instant::now();
    let receivers = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let mut s = server.accept().await?;
            tasks.push(tokio::spawn(async move {
                let n = drain(&mut s).await?;
                Ok::<_, io::Error>((n, s.stats()))
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.map_err(io::Error::other)??);
        }
        Ok::<_, io::Error>(results)
    });
    let mut senders = Vec::new();
    for _ in 0..connections {
        let mut s = ctx(client.connect(server_addr).await, "connecting on loopback")?;
        let bar = bar.clone();
        senders.push(tokio::spawn(async move {
            pump_out(&mut s, per_conn, &bar).await?;
            s.close().await?;
            Ok::<_, io::Error>(s.stats())
        }));
    }
    let mut sender_stats = Vec::new();
    for t in senders {
        sender_stats.push(ctx(t.await.map_err(io::Error::other).and_then(|r| r), "sending")?);
    }
    let received = ctx(receivers.await.map_err(io::Error::other).and_then(|r| r), "receiving")?;
    let elapsed = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    bar.finish_and_clear();
    let got: u64 = received.iter().map(|(n, _)| n).sum();
    if got != total {
        return Err((io::Error::other(format!("received {got} of {total} bytes")), "bench".into()));
    }
    let mut runs = vec![Run { label: "uTP", bytes: total, elapsed, cpu }];
    if tcp {
        runs.push(ctx(bench_tcp(total, ipv6).await, "TCP comparison")?);
    }
    println!(
        "{:<6} {:>14} {:>11} {:>15} {:>12}",
        "", "transferred", "time", "throughput", "CPU s/GB"
    );
    for r in &runs {
        println!("{}", r.row());
    }
    if let [utp, tcp] = &runs[..] {
        println!(
            "uTP/TCP throughput ratio: {:.2}",
            tcp.elapsed.as_secs_f64() / utp.elapsed.as_secs_f64()
        );
    }
    println!();
    println!("per connection (sender side):");
    println!(
        "{:>4} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10}",
        "#", "packets", "retrans", "timeouts", "rtt ms", "cwnd KiB", "pkt size"
    );
    for (i, s) in sender_stats.iter().enumerate().take(10) {
        println!(
            "{:>4} {:>9} {:>9} {:>10} {:>9.2} {:>9} {:>10}",
            i,
            s.packets_sent,
            s.retransmits,
            s.timeouts,
            s.rtt.map_or(0.0, |r| r.as_secs_f64() * 1e3),
            s.cwnd / 1024,
            s.packet_size
        );
    }
    if sender_stats.len() > 10 {
        println!("  ({} more)", sender_stats.len() - 10);
    }
    Ok(())
}

async fn bench_tcp(total: u64, ipv6: bool) -> io::Result<Run> {
    let listener =
        tokio::net::TcpListener::bind(if ipv6 { "[::1]:0" } else { "127.0.0.1:0" }).await?;
    let addr = listener.local_addr()?;
    let cpu0 = cpu_time();
    let start = Instant::now();
    let rx = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        drain(&mut s).await
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    pump_out(&mut s, total, &ProgressBar::hidden()).await?;
    s.shutdown().await?;
    let got = rx.await.map_err(io::Error::other)??;
    if got != total {
        return Err(io::Error::other("TCP transfer incomplete"));
    }
    Ok(Run {
        label: "TCP",
        bytes: total,
        elapsed: start.elapsed(),
        cpu: cpu_time().saturating_sub(cpu0),
    })
}
