//! interop-matrix: runs the interop matrix (this project against libutp,
//! libtorrent and librqbit-utp, each direction, several sizes, IPv4 and
//! IPv6, with and without loss through the impairing relay) and prints a
//! table with timings. See
//! `utp_interop::scenarios` for what each row does.
//!
//! ```text
//! cargo run --release -p utp-interop --bin interop-matrix [-- --quick] [-- --only libutp] [-- --loss 0,2] [-- --ip 4]
//! ```
//!
//! It installs nothing: a missing peer is reported with the command that
//! installs it (`bash interop/setup.sh`) and its rows are skipped.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use utp_interop::scenarios::{self, Case, Outcome};
use utp_interop::Peer;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Runs the interop matrix against libutp, libtorrent and librqbit-utp and
/// prints a table (peer, IP version, direction, dialer, size, loss, result,
/// MB/s, time).
///
/// Directions: ours->peer (we send), peer->ours (the peer sends), echo
/// (both). Loss goes through an impairing relay of ours in front of the
/// accepting side, the same share each way. Every byte is checked (sha256,
/// and each piece's SHA-1 for libtorrent).
///
/// Default sizes: libutp 1 MiB and 64 MiB without loss, 1 MiB and 8 MiB at
/// up to 5 % loss, 256 KiB above (libutp resends slowly under heavy loss);
/// libtorrent 32 MiB, 8 MiB and 256 KiB (libtorrent drops a connection
/// whose packet timed out after 3 sends, which heavy loss provokes);
/// librqbit-utp (in this process) 1 MiB and 64 MiB, 1 MiB, and 64 KiB (its
/// retransmission timeout grows with every loss). --quick: libutp and
/// librqbit-utp 1 MiB / 256 KiB / 64 KiB, libtorrent 4 MiB / 1 MiB /
/// 64 KiB. libutp runs over IPv4 only (utp-native has no IPv6).
#[derive(Debug, Parser)]
#[command(
    name = "interop-matrix",
    after_help = "Exit status: 0 every row ok, 1 a row failed, 2 usage, 3 a peer is not \
installed (run interop/setup.sh).\n\n\
Examples:\n  \
cargo run --release -p utp-interop --bin interop-matrix\n  \
cargo run --release -p utp-interop --bin interop-matrix -- --quick --only libutp --loss 0,10"
)]
struct Args {
    /// Small sizes only (a quick check).
    #[arg(long)]
    quick: bool,
    /// Run against this peer only.
    #[arg(long, value_enum)]
    only: Option<PeerArg>,
    /// IP versions, comma-separated ("4,6"): loopback 127.0.0.1 and ::1.
    #[arg(long, value_delimiter = ',', default_value = "4,6", value_parser = parse_ip_version)]
    ip: Vec<IpAddr>,
    /// Loss rates in percent, comma-separated ("0,2,10"; "2%" and "0.5" work
    /// too).
    #[arg(long, value_delimiter = ',', default_value = "0,2,10", value_parser = parse_percent)]
    loss: Vec<f64>,
    /// Sizes to use instead of the defaults, comma-separated (bytes, or with
    /// K / M for KiB / MiB: "64K,1M").
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    size: Option<Vec<usize>>,
    /// Give up on a row after this many seconds.
    #[arg(long, default_value_t = 90)]
    timeout: u64,
    /// Seed of the relay's random decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Let the peers' diagnostics through on stderr (by default they go to
    /// a log file whose path is printed).
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PeerArg {
    Libutp,
    Libtorrent,
    Librqbit,
}

fn parse_ip_version(s: &str) -> Result<IpAddr, String> {
    match s.trim().trim_start_matches(['v', 'V']) {
        "4" => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "6" => Ok(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        _ => Err(format!("not an IP version (4 or 6): {s:?}")),
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    let p: f64 = t.parse().map_err(|_| format!("not a percentage: {s:?}"))?;
    if !(0.0..=100.0).contains(&p) {
        return Err(format!("{s:?} is not within 0..=100 %"));
    }
    Ok(p / 100.0)
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], KIB),
        Some((i, 'm' | 'M')) => (&t[..i], MIB),
        _ => (t, 1),
    };
    let n: usize = num.trim().parse().map_err(|_| format!("not a size: {s:?}"))?;
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("bad size {s:?}")),
        Some(v) => Ok(v),
    }
}

/// The default sizes of `peer` at `loss`.
fn sizes(peer: Peer, loss: f64, quick: bool) -> Vec<usize> {
    let heavy = loss > 0.05;
    match (peer, quick) {
        (Peer::Libutp, false) if loss == 0.0 => vec![MIB, 64 * MIB],
        (Peer::Libutp, false) if !heavy => vec![MIB, 8 * MIB],
        (Peer::Libutp, false) => vec![256 * KIB],
        (Peer::Libutp, true) if loss == 0.0 => vec![MIB],
        (Peer::Libutp, true) if !heavy => vec![256 * KIB],
        (Peer::Libutp, true) => vec![64 * KIB],
        (Peer::Librqbit, false) if loss == 0.0 => vec![MIB, 64 * MIB],
        (Peer::Librqbit, _) if loss == 0.0 => vec![MIB],
        (Peer::Librqbit, false) if !heavy => vec![MIB],
        (Peer::Librqbit, true) if !heavy => vec![256 * KIB],
        (Peer::Librqbit, _) => vec![64 * KIB],
        (_, false) if loss == 0.0 => vec![32 * MIB],
        (_, false) if !heavy => vec![8 * MIB],
        (_, false) => vec![256 * KIB],
        (_, true) if loss == 0.0 => vec![4 * MIB],
        (_, true) if !heavy => vec![MIB],
        (_, true) => vec![64 * KIB],
    }
}

fn size_label(n: usize) -> String {
    if n >= MIB && n % MIB == 0 {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

fn loss_label(p: f64) -> String {
    let pct = p * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{pct:.0} %")
    } else {
        format!("{pct} %")
    }
}

fn peer_label(p: Peer) -> &'static str {
    match p {
        Peer::Libutp => "libutp",
        Peer::Libtorrent => "libtorrent",
        Peer::Tshark => "tshark",
        Peer::Librqbit => "librqbit-utp",
    }
}

fn ip_label(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "v4"
    } else {
        "v6"
    }
}

struct Row {
    case: Case,
    result: Result<Outcome, String>,
    wall: Duration,
}

/// Sends the peers' stderr (inherited from us) to a log file; our own
/// output goes to stdout. Returns the log's path.
fn divert_stderr() -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    let path = std::env::temp_dir().join(format!("interop-matrix-{}.log", std::process::id()));
    let file = std::fs::File::create(&path).ok()?;
    // SAFETY: dup2 on two valid descriptors; fd 2 then refers to the log
    // file (the File may close its own descriptor afterwards).
    let r = unsafe { libc::dup2(file.as_raw_fd(), 2) };
    (r == 2).then_some(path)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                println!("interop-matrix: cannot start the runtime: {e}");
                return ExitCode::from(1);
            }
        };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let peers: Vec<Peer> = match args.only {
        Some(PeerArg::Libutp) => vec![Peer::Libutp],
        Some(PeerArg::Libtorrent) => vec![Peer::Libtorrent],
        Some(PeerArg::Librqbit) => vec![Peer::Librqbit],
        None => vec![Peer::Libutp, Peer::Libtorrent, Peer::Librqbit],
    };
    let mut available = Vec::new();
    let mut any_missing = false;
    for &peer in &peers {
        match scenarios::missing(peer) {
            None => available.push(peer),
            Some(why) => {
                any_missing = true;
                println!(
                    "interop-matrix: {} is not installed ({why}); its rows are skipped. \
                     Run `bash interop/setup.sh` to install it (pinned).",
                    peer_label(peer)
                );
            }
        }
    }
    let mut cases = Vec::new();
    for &peer in &available {
        for &ip in &args.ip {
            if peer == Peer::Libutp && ip.is_ipv6() {
                continue;
            }
            for &loss in &args.loss {
                let sizes = args.size.clone().unwrap_or_else(|| sizes(peer, loss, args.quick));
                for size in sizes {
                    for &(direction, dialer) in Case::kinds(peer) {
                        let seed = args.seed;
                        cases.push(Case { peer, ip, direction, dialer, size, loss, seed });
                    }
                }
            }
        }
    }
    if !args.verbose && !cases.is_empty() {
        if let Some(log) = divert_stderr() {
            println!("interop-matrix: the peers' diagnostics go to {}", log.display());
        }
    }
    let limit = Duration::from_secs(args.timeout);
    println!("interop-matrix: {} rows, each limited to {limit:?}", cases.len());
    let started = Instant::now();
    let total = cases.len();
    let mut rows = Vec::new();
    for (i, case) in cases.into_iter().enumerate() {
        let t0 = Instant::now();
        let result = scenarios::run(&case, limit).await;
        let wall = t0.elapsed();
        println!(
            "[{:>3}/{}] {:<12} {} {:<10} dialer {:<4} {:>7} loss {:>4}: {} ({:.1} s)",
            i + 1,
            total,
            peer_label(case.peer),
            ip_label(case.ip),
            case.direction.to_string(),
            case.dialer.to_string(),
            size_label(case.size),
            loss_label(case.loss),
            match &result {
                Ok(o) => format!("ok, {:.2} MB/s", o.mb_per_s()),
                Err(e) => format!("FAIL: {e}"),
            },
            wall.as_secs_f64()
        );
        rows.push(Row { case, result, wall });
    }
    if !rows.is_empty() {
        println!("\n{}", render(&rows));
    }
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    println!(
        "{} rows, {} ok, {failed} failed, in {:.1} s",
        rows.len(),
        rows.len() - failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::from(1)
    } else if any_missing {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// The table, then the reasons of the failures.
fn render(rows: &[Row]) -> String {
    let header = [
        "peer",
        "ip",
        "direction",
        "dialer",
        "size",
        "loss",
        "result",
        "MB/s",
        "time",
        "our rexmits (RTOs)",
        "relay lost up/down",
    ];
    let mut reasons = Vec::new();
    let mut cells: Vec<Vec<String>> = Vec::new();
    for row in rows {
        let c = &row.case;
        let mut line = vec![
            peer_label(c.peer).to_string(),
            ip_label(c.ip).to_string(),
            c.direction.to_string(),
            c.dialer.to_string(),
            size_label(c.size),
            loss_label(c.loss),
        ];
        match &row.result {
            Ok(o) => {
                line.push("ok".to_string());
                line.push(format!("{:.2}", o.mb_per_s()));
                line.push(format!("{:.2} s", o.elapsed.as_secs_f64()));
                line.push(
                    o.ours
                        .as_ref()
                        .map_or("-".to_string(), |s| format!("{} ({})", s.retransmits, s.timeouts)),
                );
                line.push(o.relay.as_ref().map_or("-".to_string(), |s| {
                    format!("{}/{}", s.to_upstream.lost, s.to_client.lost)
                }));
            }
            Err(e) => {
                reasons.push(e.clone());
                line.push(format!("FAIL [{}]", reasons.len()));
                line.push("-".to_string());
                line.push(format!("({:.1} s)", row.wall.as_secs_f64()));
                line.push("-".to_string());
                line.push("-".to_string());
            }
        }
        cells.push(line);
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for line in &cells {
        for (w, c) in widths.iter_mut().zip(line) {
            *w = (*w).max(c.len());
        }
    }
    // Numbers right-aligned.
    let right = [false, false, false, false, true, true, false, true, true, true, true];
    let fmt_line = |line: &[String]| {
        let mut s = String::from("|");
        for ((c, w), r) in line.iter().zip(&widths).zip(right) {
            if r {
                let _ = write!(s, " {c:>w$} |");
            } else {
                let _ = write!(s, " {c:<w$} |");
            }
        }
        s
    };
    let mut out = fmt_line(&header.map(String::from));
    out.push('\n');
    out.push('|');
    for (w, r) in widths.iter().zip(right) {
        out.push_str(&"-".repeat(*w + 1));
        out.push(if r { ':' } else { '-' });
        out.push('|');
    }
    out.push('\n');
    for line in &cells {
        out.push_str(&fmt_line(line));
        out.push('\n');
    }
    for (i, r) in reasons.iter().enumerate() {
        let _ = writeln!(out, "[{}] {r}", i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_losses_and_sizes() {
        assert_eq!(parse_percent("2").unwrap(), 0.02);
        assert_eq!(parse_percent("10%").unwrap(), 0.1);
        assert_eq!(parse_percent("0.5").unwrap(), 0.005);
        assert!(parse_percent("101").is_err());
        assert_eq!(parse_size("64K").unwrap(), 64 * KIB);
        assert_eq!(parse_size("8M").unwrap(), 8 * MIB);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("0").is_err());
        assert_eq!(size_label(256 * KIB), "256 KiB");
        assert_eq!(loss_label(0.02), "2 %");
        assert_eq!(parse_ip_version("6").unwrap(), IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert!(parse_ip_version("5").is_err());
    }
}
