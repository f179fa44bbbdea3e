//! utp-bench: uTP between two processes, side by side with TCP and libutp.
//!
//! ```text
//! cargo build --release -p utp-examples
//! sudo target/release/utp-bench                 # the default cases, 3 rounds
//! target/release/utp-bench --cases 1x64M --rounds 1 --peers utp,tcp
//! ```
//!
//! Each run starts a receiver and a sender as two processes, as users run
//! them, and measures the wall time from the sender's start to the
//! receiver's exit (every byte read, every connection closed) and the CPU
//! time of both processes. The peers alternate within each round, so that
//! a noisy machine spreads its noise over all of them. As root the whole
//! bench runs in a network namespace made for it, whose loopback has a
//! 1500-byte MTU (`--mtu`).
//!
//! Peers: `utp` (this project's runtime, default configuration, a plain
//! sender and receiver), `tcp` (tokio, the same program), `libutp` (libutp
//! through utp-native and node, `interop/peers/libutp-peer.js`, 4 MiB
//! socket buffers; its CPU includes node and the script's seeded bytes and
//! sha256; run `bash interop/setup.sh` to install it), `utpcat` (the
//! netcat path: `utpcat HOST PORT < FILE` to `utpcat -l HOST PORT`, one
//! connection only) and `utpcat-file` (`utpcat send` to `utpcat recv -o
//! /dev/null`, which hash with sha256).

mod child;
mod measure;
mod netns;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use measure::{Measured, Pair};

/// uTP between two processes against TCP and libutp: MB/s, CPU seconds per
/// GB of both processes, and the ratios. As root it runs in a network
/// namespace of its own with a 1500-byte MTU.
#[derive(Parser, Debug)]
#[command(
    name = "utp-bench",
    version,
    after_help = "Environment: UTP_BENCH_STATS=1 prints each uTP process's socket counters \
                  (datagrams, retransmissions, drops) to stderr; UTP_BENCH_LOG=FILTER (for \
                  example libp2p_utp=debug,utp_proto=debug) makes both processes log to stderr."
)]
struct Cli {
    /// Cases as CONNECTIONSxSIZE (size per connection), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1x256M,200x1M,10000x64K")]
    cases: Vec<Case>,
    /// Rounds; each runs every case with every peer in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Peers to compare, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_enum,
        default_value = "utp,tcp,libutp,utpcat,utpcat-file"
    )]
    peers: Vec<Peer>,
    /// Connections open at once at most (the sender dials the next when
    /// one ends).
    #[arg(long, default_value_t = 500)]
    window: usize,
    /// libutp only for cases of at most this many connections (its sender
    /// opens all of them at once).
    #[arg(long, default_value_t = 1000)]
    libutp_max_conns: usize,
    /// Loopback MTU inside the namespace.
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Run on the host's loopback even as root.
    #[arg(long)]
    no_netns: bool,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// The processes of a run (used by the bench itself).
    #[command(subcommand)]
    child: Option<ChildCmd>,
}

#[derive(clap::Subcommand, Debug)]
enum ChildCmd {
    /// One process of a run.
    #[command(hide = true)]
    Child {
        #[command(subcommand)]
        role: child::Role,
    },
}

#[derive(Clone, Copy, Debug)]
struct Case {
    conns: usize,
    size: u64,
}

impl std::str::FromStr for Case {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (conns, size) = s.split_once('x').ok_or_else(|| format!("{s:?}: use CONNSxSIZE"))?;
        let conns = conns.parse().map_err(|_| format!("{conns:?} is not a count"))?;
        Ok(Case { conns, size: utp_examples::parse_size(size)? })
    }
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} x {}", self.conns, human(self.size))
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    Utp,
    Tcp,
    Libutp,
    Utpcat,
    UtpcatFile,
}

impl Peer {
    fn label(self) -> &'static str {
        match self {
            Peer::Utp => "uTP",
            Peer::Tcp => "TCP",
            Peer::Libutp => "libutp",
            Peer::Utpcat => "utpcat (netcat)",
            Peer::UtpcatFile => "utpcat send/recv",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(ChildCmd::Child { role }) = cli.child {
        return match child::run(role) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("utp-bench child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if !cli.no_netns {
        if let Some(code) = netns::reexec(cli.mtu) {
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    }
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("utp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What can run here: a reason for every peer that cannot.
fn unavailable(peer: Peer, case: Case, cli: &Cli) -> Option<String> {
    match peer {
        Peer::Utp | Peer::Tcp => None,
        Peer::Libutp if case.conns > cli.libutp_max_conns => {
            Some(format!("more than --libutp-max-conns {}", cli.libutp_max_conns))
        }
        Peer::Libutp => (!libutp_installed())
            .then(|| "not installed (bash interop/setup.sh; node needed)".into()),
        Peer::Utpcat | Peer::UtpcatFile if case.conns != 1 => Some("one connection only".into()),
        Peer::Utpcat | Peer::UtpcatFile => (!utpcat().exists()).then(|| {
            format!("{} not built (cargo build --release -p utp-examples)", utpcat().display())
        }),
    }
}

fn bench(cli: &Cli) -> std::io::Result<()> {
    let where_ = if netns::inside() { "a network namespace of its own" } else { "the host" };
    eprintln!(
        "utp-bench: {} round(s), loopback MTU {} in {where_}, {} cores",
        cli.rounds,
        netns::loopback_mtu().map_or_else(|| "?".into(), |m| m.to_string()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let timeout = Duration::from_secs(cli.timeout);
    let mut results: Vec<Vec<Vec<Result<Measured, String>>>> =
        vec![vec![Vec::new(); cli.peers.len()]; cli.cases.len()];
    let mut files = Files::default();
    for round in 0..cli.rounds {
        for (c, &case) in cli.cases.iter().enumerate() {
            for (p, &peer) in cli.peers.iter().enumerate() {
                if unavailable(peer, case, cli).is_some() {
                    continue;
                }
                let pair = pair(peer, case, cli, &mut files)?;
                let r = measure::run(pair, timeout).map_err(|e| e.to_string());
                match &r {
                    Ok(m) => eprintln!(
                        "round {} {case} {:<17} {:>8.1} MB/s {:>6.2} CPU s/GB",
                        round + 1,
                        peer.label(),
                        m.mb_per_s(),
                        m.cpu_per_gb()
                    ),
                    Err(e) => eprintln!("round {} {case} {}: FAILED: {e}", round + 1, peer.label()),
                }
                results[c][p].push(r);
            }
        }
    }
    for (c, &case) in cli.cases.iter().enumerate() {
        print!("{}", table(case, cli, &results[c]));
    }
    Ok(())
}

/// Files holding the bytes utpcat sends, one per size, made on demand and
/// removed at the end.
#[derive(Default)]
struct Files(Vec<(u64, PathBuf)>);

impl Files {
    fn get(&mut self, size: u64) -> std::io::Result<PathBuf> {
        if let Some((_, p)) = self.0.iter().find(|(s, _)| *s == size) {
            return Ok(p.clone());
        }
        let path = std::env::temp_dir().join(format!("utp-bench-{}-{size}", std::process::id()));
        let mut block = vec![0u8; 1 << 20];
        utp_examples::fill(&mut block, 7);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &block[..n])?;
            left -= n as u64;
        }
        std::io::Write::flush(&mut f)?;
        self.0.push((size, path.clone()));
        Ok(path)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for (_, p) in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn this_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("utp-bench"))
}

fn utpcat() -> PathBuf {
    this_exe().with_file_name("utpcat")
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop")
}

fn libutp_installed() -> bool {
    interop_dir().join("node_modules/utp-native/package.json").exists()
        && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn ready_word(line: &str) -> Option<u16> {
    line.strip_prefix("ready ")?.trim().parse().ok()
}

fn ready_json(line: &str) -> Option<u16> {
    let rest = line.split("\"port\":").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
}

fn ready_utpcat(line: &str) -> Option<u16> {
    line.split("listening on ").nth(1)?.trim().rsplit(':').next()?.parse().ok()
}

/// The two processes of one run.
fn pair(peer: Peer, case: Case, cli: &Cli, files: &mut Files) -> std::io::Result<Pair> {
    let bytes = case.size * case.conns as u64;
    let (conns, size, window) = (case.conns, case.size, cli.window);
    Ok(match peer {
        Peer::Utp | Peer::Tcp => {
            let proto = if peer == Peer::Utp { "utp" } else { "tcp" };
            let mut receiver = Command::new(this_exe());
            receiver.args(["child", "recv", "--proto", proto, "--conns", &conns.to_string()]);
            Pair::new(receiver, ready_word, bytes, move |port| {
                let mut c = Command::new(this_exe());
                c.args(["child", "send", "--proto", proto])
                    .args(["--to", &format!("127.0.0.1:{port}")])
                    .args(["--conns", &conns.to_string(), "--size", &size.to_string()])
                    .args(["--window", &window.to_string()]);
                c
            })
            .done_when(move |l| l == format!("done {bytes}"))
        }
        Peer::Libutp => {
            let script = interop_dir().join("peers/libutp-peer.js");
            let buf = (4 << 20).to_string();
            let mut receiver = Command::new("node");
            receiver.arg(&script).args(["sink", "0", "--conns", &conns.to_string()]);
            receiver.args(["--bufsize", &buf]);
            Pair::new(receiver, ready_json, bytes, move |port| {
                let mut c = Command::new("node");
                c.arg(&script)
                    .args(["send", "127.0.0.1", &port.to_string(), &size.to_string()])
                    .args(["--conns", &conns.to_string(), "--shared-socket"])
                    .args(["--bufsize", &buf, "--exit-grace", "0"]);
                c
            })
            .done_when(|l| l.contains("\"event\":\"done\"") && l.contains("\"ok\":true"))
        }
        Peer::Utpcat => {
            let file = files.get(size)?;
            let mut receiver = Command::new(utpcat());
            receiver.args(["-l", "127.0.0.1", "0"]);
            Pair::new(receiver, ready_utpcat, bytes, move |port| {
                let mut c = Command::new(utpcat());
                c.args(["-q", "127.0.0.1", &port.to_string()]);
                if let Ok(f) = std::fs::File::open(&file) {
                    c.stdin(f);
                }
                c
            })
            .ready_on_stderr()
        }
        Peer::UtpcatFile => {
            let file = files.get(size)?;
            let mut receiver = Command::new(utpcat());
            receiver.args(["recv", "127.0.0.1:0", "-o", "/dev/null"]);
            Pair::new(receiver, ready_utpcat, bytes, move |port| {
                let mut c = Command::new(utpcat());
                c.arg("-q").arg("send").arg(&file).arg(format!("127.0.0.1:{port}"));
                c
            })
            .ready_on_stderr()
        }
    })
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians of one peer's successful runs: (MB/s, min, max, CPU s/GB,
/// sender's and receiver's share of it, wall seconds).
struct Summary {
    mb_s: f64,
    min: f64,
    max: f64,
    cpu: f64,
    cpu_send: f64,
    cpu_recv: f64,
    wall: f64,
}

fn summarise(runs: &[Result<Measured, String>]) -> Option<Summary> {
    let ok: Vec<&Measured> = runs.iter().filter_map(|r| r.as_ref().ok()).collect();
    if ok.is_empty() {
        return None;
    }
    let of = |f: &dyn Fn(&Measured) -> f64| ok.iter().map(|m| f(m)).collect::<Vec<f64>>();
    let rates = of(&Measured::mb_per_s);
    let per_gb = |m: &Measured, i: usize| m.cpu[i].as_secs_f64() / (m.bytes as f64 / 1e9);
    Some(Summary {
        mb_s: median(rates.clone()),
        min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max: rates.iter().copied().fold(0.0, f64::max),
        cpu: median(of(&Measured::cpu_per_gb)),
        cpu_send: median(of(&|m| per_gb(m, 0))),
        cpu_recv: median(of(&|m| per_gb(m, 1))),
        wall: median(of(&|m| m.wall.as_secs_f64())),
    })
}

fn table(case: Case, cli: &Cli, runs: &[Vec<Result<Measured, String>>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n{case} ({} in all)", human(case.size * case.conns as u64));
    let _ = writeln!(
        out,
        "| peer | MB/s median (min-max) | wall s | CPU s/GB both (send + recv) | speed vs TCP | \
         CPU vs TCP | speed vs libutp | runs ok |"
    );
    let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|");
    let summary: Vec<Option<Summary>> = runs.iter().map(|r| summarise(r)).collect();
    let find =
        |peer: Peer| cli.peers.iter().position(|&p| p == peer).and_then(|i| summary[i].as_ref());
    let (tcp, libutp) = (find(Peer::Tcp), find(Peer::Libutp));
    for (p, &peer) in cli.peers.iter().enumerate() {
        if let Some(why) = unavailable(peer, case, cli) {
            let _ = writeln!(out, "| {} | skipped: {why} | | | | | | |", peer.label());
            continue;
        }
        let ok = runs[p].iter().filter(|r| r.is_ok()).count();
        let Some(s) = &summary[p] else {
            let err = runs[p].iter().find_map(|r| r.as_ref().err()).cloned().unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | failed: {err} | | | | | | 0/{} |",
                peer.label(),
                runs[p].len()
            );
            continue;
        };
        let ratio = |other: Option<&Summary>, f: fn(&Summary) -> f64| {
            other.map_or_else(|| "-".into(), |o| format!("{:.2}", f(s) / f(o)))
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} ({:.0}-{:.0}) | {:.2} | {:.2} ({:.2} + {:.2}) | {} | {} | {} | {ok}/{} |",
            peer.label(),
            s.mb_s,
            s.min,
            s.max,
            s.wall,
            s.cpu,
            s.cpu_send,
            s.cpu_recv,
            ratio(tcp, |s| s.mb_s),
            ratio(tcp, |s| s.cpu),
            ratio(libutp, |s| s.mb_s),
            runs[p].len(),
        );
    }
    out
}
