//! utpcat: netcat over uTP.
//!
//! ```text
//! utpcat -l 9000                          # listen on port 9000: peer -> stdout, stdin -> peer
//! utpcat localhost 9000                   # connect (host names work)
//! utpcat -l -k 9000                       # keep listening: one connection after another
//! utpcat send FILE 127.0.0.1:9000         # send a file (progress bar, sha256)
//! utpcat recv 127.0.0.1:9000 -o FILE      # receive one (progress bar, sha256)
//! utpcat bench                            # loopback benchmark in one process
//! ```

use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::FutureExt;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p_utp::{AbortHandle, Config, UtpSocket, UtpStream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use utp_examples::stdio::{StdinBlocks, StdoutBlocks};
use utp_examples::{fill, parse_size};

/// netcat over uTP, the Micro Transport Protocol of BitTorrent (BEP 29).
///
/// Connect to HOST PORT, or listen with -l, and copy stdin to the peer and
/// the peer to stdout. End of stdin half-closes the connection (the peer
/// reads the end of the stream; reading goes on). Ctrl-C resets the
/// connection, so the peer sees an abort rather than a clean end.
///
/// Exit status: 0 success, 1 I/O or usage error, 3 connection refused,
/// 4 timed out, 5 connection reset by the peer, 130 interrupted (Ctrl-C).
#[derive(Parser, Debug)]
#[command(
    name = "utpcat",
    version,
    override_usage = "utpcat [OPTIONS] HOST PORT\n       utpcat -l [OPTIONS] [HOST] PORT\n       \
                      utpcat -l [OPTIONS] -p PORT\n       utpcat [OPTIONS] <COMMAND>"
)]
struct Cli {
    /// Listen for a connection instead of connecting.
    #[arg(short = 'l', long)]
    listen: bool,

    /// With -l: the port to listen on. Without: the local port to dial
    /// from.
    #[arg(short = 'p', long, value_name = "PORT")]
    port: Option<u16>,

    /// With -l: after a connection ends, accept another (one at a time).
    #[arg(short = 'k', long)]
    keep_open: bool,

    /// Give up on a dial, and on a connection that is silent, after SECS
    /// seconds (default: dial 10 s, silence 120 s).
    #[arg(short = 'w', long = "wait", value_name = "SECS")]
    wait: Option<u64>,

    /// No status lines ("listening on", "connection from") and no progress
    /// bars; errors are still reported.
    #[arg(short, long, global = true)]
    quiet: bool,

    /// Log what the protocol does (-v: debug, -vv: trace) to stderr.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    /// Give up dialing after this many seconds (as -w).
    #[arg(long, default_value_t = 10, global = true, value_name = "SECS")]
    connect_timeout: u64,

    // (A help attribute, not a doc comment: rustdoc would take `[HOST]`
    // for a link.)
    #[arg(
        value_name = "HOST PORT",
        num_args = 0..=2,
        help = "HOST PORT (or HOST:PORT) to connect to; with -l, [HOST] PORT to listen on \
                (HOST defaults to every address, 0.0.0.0)"
    )]
    target: Vec<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept one connection on HOST:PORT; copy it to stdout and stdin to it.
    /// Exits when both directions are done. (As `utpcat -l HOST PORT`.)
    Listen {
        /// Address to listen on, e.g. `127.0.0.1:9000`, `[::1]:9000`,
        /// `localhost:9000`.
        addr: String,
    },
    /// Connect to HOST:PORT; copy stdin to it and it to stdout. End of
    /// stdin half-closes the connection (sends FIN); reading goes on. (As
    /// `utpcat HOST PORT`.)
    Connect {
        /// Address to connect to (host names work).
        addr: String,
    },
    /// Send FILE to a `utpcat recv` (or any uTP listener) at HOST:PORT.
    Send {
        /// File to send.
        file: PathBuf,
        /// Address to connect to.
        addr: String,
    },
    /// Accept one connection on HOST:PORT and save what it sends.
    Recv {
        /// Address to listen on.
        addr: String,
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

/// Streams that Ctrl-C resets.
fn live_streams() -> &'static Mutex<Vec<AbortHandle>> {
    static LIVE: OnceLock<Mutex<Vec<AbortHandle>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

fn track(stream: &UtpStream) {
    if let Ok(mut live) = live_streams().lock() {
        live.retain(AbortHandle::is_alive);
        live.push(stream.abort_handle());
    }
}

/// Status lines go to stderr unless `-q`.
static QUIET: OnceLock<bool> = OnceLock::new();

fn status(line: std::fmt::Arguments<'_>) {
    if !QUIET.get().copied().unwrap_or(false) {
        eprintln!("utpcat: {line}");
    }
}

fn exit_code(e: &io::Error) -> ExitCode {
    match e.kind() {
        io::ErrorKind::Interrupted => ExitCode::from(130),
        io::ErrorKind::ConnectionRefused => ExitCode::from(3),
        io::ErrorKind::TimedOut => ExitCode::from(4),
        io::ErrorKind::ConnectionReset => ExitCode::from(5),
        _ => ExitCode::from(1),
    }
}

fn describe(e: &io::Error, what: &str) -> String {
    let hint = match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            " (nothing listens there: the peer answered with a RESET or its host with ICMP port \
             unreachable)"
        }
        io::ErrorKind::TimedOut => " (no answer: wrong address, a firewall, or nothing listening)",
        io::ErrorKind::ConnectionReset => " (the peer aborted the connection)",
        io::ErrorKind::AddrInUse => " (another program uses that port)",
        io::ErrorKind::Interrupted => " (Ctrl-C: the peer sees a RESET)",
        _ => "",
    };
    format!("utpcat: {what}: {e}{hint}")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("utpcat: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli));
    // Not a plain drop: that would wait for a blocking read of stdin that may
    // never end. The sockets' tasks go now, sending the FINs and RESETs
    // still queued.
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

async fn run(cli: Cli) -> ExitCode {
    if cli.verbose > 0 {
        let level = if cli.verbose == 1 { "debug" } else { "trace" };
        tracing_subscriber::fmt()
            .with_writer(io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "utp_proto={level},libp2p_utp={level}"
            )))
            .init();
    }
    let _ = QUIET.set(cli.quiet);
    let mut config = Config::default();
    let dial_secs = cli.wait.unwrap_or(cli.connect_timeout);
    config.transport_mut().connect_timeout = Duration::from_secs(dial_secs);
    if let Some(secs) = cli.wait {
        config.transport_mut().idle_timeout = Duration::from_secs(secs.max(1));
    }
    let run = async {
        match cli.command {
            Some(command) => run_command(command, cli.quiet, config).await,
            None => run_netcat(cli.listen, cli.port, cli.keep_open, &cli.target, config).await,
        }
    };
    // On Ctrl-C: an abort, not a clean end: the peer must not take a partial
    // transfer for a whole one. The streams are reset while they still
    // exist (before `run` is dropped, which would close them gracefully);
    // the RESETs leave as the runtime goes down.
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
        live_streams().lock().map_or(0, |live| live.iter().filter(|h| h.reset()).count())
    };
    let result = tokio::select! {
        r = run => r,
        reset = interrupted => Err((
            io::Error::new(io::ErrorKind::Interrupted, format!("{reset} connection(s) reset")),
            "interrupted".to_string(),
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, what)) => {
            eprintln!("{}", describe(&e, &what));
            exit_code(&e)
        }
    }
}

async fn run_command(command: Command, quiet: bool, config: Config) -> CatResult {
    match command {
        Command::Listen { addr } => listen(resolve(&addr).await?, false, config).await,
        Command::Connect { addr } => connect(resolve(&addr).await?, None, config).await,
        Command::Send { file, addr } => send(file, resolve(&addr).await?, quiet, config).await,
        Command::Recv { addr, output } => recv(resolve(&addr).await?, output, quiet, config).await,
        Command::Bench { size, connections, tcp, ipv6 } => {
            bench(size, connections.max(1), tcp, ipv6, config).await
        }
    }
}

/// netcat's own syntax: `HOST PORT`, `-l [HOST] PORT`, `-l -p PORT`.
async fn run_netcat(
    listen_mode: bool,
    port: Option<u16>,
    keep_open: bool,
    target: &[String],
    config: Config,
) -> CatResult {
    let usage = |msg: &str| {
        Err((io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()), "usage".to_string()))
    };
    if listen_mode {
        let (host, port) = match (target, port) {
            ([], Some(p)) => ("0.0.0.0".to_string(), p.to_string()),
            ([p], None) => ("0.0.0.0".to_string(), p.clone()),
            ([h], Some(p)) => (h.clone(), p.to_string()),
            ([h, p], None) => (h.clone(), p.clone()),
            _ => return usage("listen with `utpcat -l PORT`, `-l -p PORT` or `-l HOST PORT`"),
        };
        let addr = resolve(&join_host_port(&host, &port)).await?;
        return listen(addr, keep_open, config).await;
    }
    if keep_open {
        return usage("-k keeps a listener open: use it with -l");
    }
    let addr = match target {
        [hp] if hp.contains(':') => hp.clone(),
        [h, p] => join_host_port(h, p),
        _ => return usage("connect with `utpcat HOST PORT` (see --help)"),
    };
    connect(resolve(&addr).await?, port, config).await
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves `HOST:PORT` (a name, an IPv4 address or a bracketed IPv6 one),
/// IPv4 first.
async fn resolve(addr: &str) -> Result<SocketAddr, (io::Error, String)> {
    let what = || format!("cannot resolve {addr}");
    let mut addrs: Vec<SocketAddr> = ctx(tokio::net::lookup_host(addr).await, what())?.collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs
        .into_iter()
        .next()
        .ok_or_else(|| (io::Error::new(io::ErrorKind::NotFound, "no address"), what()))
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
    local_port: Option<u16>,
    config: Config,
) -> Result<(UtpSocket, UtpStream), (io::Error, String)> {
    let mut local: SocketAddr =
        if addr.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    local.set_port(local_port.unwrap_or(0));
    let socket = bind(local, config).await?;
    let stream = ctx(socket.connect(addr).await, format!("cannot connect to {addr}"))?;
    track(&stream);
    Ok((socket, stream))
}

/// Copies stdin to the stream (then half-closes) and the stream to stdout.
/// stdin and stdout are served by threads of their own in 1 MiB blocks
/// (`utp_examples::stdio`): tokio's stdin and stdout take a trip through
/// its blocking pool per call.
async fn pipe_stdio(stream: UtpStream) -> CatResult {
    let (mut rd, mut wr) = stream.into_split();
    let mut stdin = ctx(StdinBlocks::spawn(), "starting the stdin thread")?;
    let mut stdout = ctx(StdoutBlocks::spawn(), "starting the stdout thread")?;
    let upload = async move {
        while let Some(block) = stdin.next().await {
            let (block, len) = ctx(block, "reading stdin")?;
            ctx(wr.write_all(&block[..len]).await, "sending")?;
            stdin.recycle(block);
        }
        ctx(wr.shutdown().await, "closing the sending side")?;
        ctx(wr.close().await, "waiting for the peer to take the last bytes")
    };
    let download = async move {
        loop {
            let mut block = stdout.block();
            // One read that waits, then whatever else is there already:
            // a block per hand-over to the stdout thread, not a packet.
            let mut len = ctx(rd.read(&mut block).await, "receiving")?;
            if len == 0 {
                break;
            }
            while len < block.len() {
                match rd.read(&mut block[len..]).now_or_never() {
                    Some(Ok(n)) if n > 0 => len += n,
                    Some(Err(e)) => return ctx(Err(e), "receiving"),
                    _ => break,
                }
            }
            ctx(stdout.write(block, len).await, "writing to stdout")?;
        }
        ctx(stdout.finish().await, "writing to stdout")
    };
    // A failure either way (a reset, a timeout) ends both: the other
    // direction would otherwise wait on stdin or the socket for nothing.
    tokio::try_join!(upload, download).map(|_| ())
}

async fn listen(addr: SocketAddr, keep_open: bool, config: Config) -> CatResult {
    let socket = bind(addr, config).await?;
    status(format_args!("listening on {}", socket.local_addr().map_or(addr, |a| a)));
    loop {
        let stream = ctx(socket.accept().await, "accepting")?;
        track(&stream);
        status(format_args!("connection from {}", stream.peer_addr()));
        let result = pipe_stdio(stream).await;
        if !keep_open {
            return result;
        }
        if let Err((e, what)) = result {
            eprintln!("{}", describe(&e, &what));
        }
    }
}

async fn connect(addr: SocketAddr, local_port: Option<u16>, config: Config) -> CatResult {
    let (_socket, stream) = dial(addr, local_port, config).await?;
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

async fn send(file: PathBuf, addr: SocketAddr, quiet: bool, config: Config) -> CatResult {
    let mut f = ctx(tokio::fs::File::open(&file).await, format!("cannot open {}", file.display()))?;
    let len = f.metadata().await.ok().map(|m| m.len());
    let (_socket, mut stream) = dial(addr, None, config).await?;
    let bar = progress(len, quiet);
    let start = Instant::now();
    let reading = format!("reading {}", file.display());
    let (total, hash) = copy_hashing(&mut f, &mut stream, &bar, &reading, "sending").await?;
    ctx(stream.close().await, "waiting for the receiver to take the last bytes")?;
    bar.finish_and_clear();
    status(format_args!("sent {}", summary(total, start.elapsed(), hash)));
    Ok(())
}

async fn recv(addr: SocketAddr, output: Option<PathBuf>, quiet: bool, config: Config) -> CatResult {
    let socket = bind(addr, config).await?;
    status(format_args!("listening on {}", socket.local_addr().map_or(addr, |a| a)));
    let mut stream = ctx(socket.accept().await, "accepting")?;
    track(&stream);
    status(format_args!("connection from {}", stream.peer_addr()));
    let mut out: Box<dyn AsyncWrite + Unpin + Send> = match &output {
        Some(path) => Box::new(ctx(
            tokio::fs::File::create(path).await,
            format!("cannot create {}", path.display()),
        )?),
        None => Box::new(tokio::io::stdout()),
    };
    // Progress on stderr whether the data goes to a file or to stdout.
    let bar = progress(None, quiet);
    let start = Instant::now();
    let (total, hash) =
        copy_hashing(&mut stream, &mut out, &bar, "receiving", "writing the output").await?;
    ctx(out.flush().await, "writing the output")?;
    bar.finish_and_clear();
    status(format_args!("received {}", summary(total, start.elapsed(), hash)));
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
