//! utp-relay: an impairing UDP relay (loss, duplication, reordering, delay,
//! jitter, rate limit) between one client and one upstream address. See
//! `utp_interop::relay`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use utp_interop::relay::{Impairment, Relay, RelayConfig};

/// An impairing UDP relay for uTP tests (or any UDP protocol).
///
/// The first address that sends to --listen becomes the client; its
/// datagrams go to --upstream and the answers come back to it. Every
/// impairment applies to each direction separately (--loss 0.02 loses 2 % of
/// the datagrams each way), decided by a random generator seeded with --seed:
/// the same seed makes the same decisions for the n-th datagram of a
/// direction. Order per datagram: loss, duplication, rate limiter (token
/// bucket in front of a bounded queue), then delay + jitter (+ the reorder
/// hold-back).
#[derive(Debug, Parser)]
#[command(
    name = "utp-relay",
    version,
    after_help = "Examples:\n  \
utp-relay --listen 127.0.0.1:9001 --upstream 127.0.0.1:9000 --loss 0.02 --dup 0.01 \\\n    \
--reorder 0.05 --delay 20ms --jitter 5ms --rate 10M --seed 1\n  \
utp-relay --upstream 127.0.0.1:9000 --loss 5% --loss-down 0 -v\n\n\
Sizes and rates: plain bytes, or with a decimal suffix k/K, M, G (10M = 10 000 000 \
bytes/s); a rate may also be given in bits: 80Mbit.\n\
Durations: 20ms, 1.5s, 250us; a plain number is milliseconds.\n\
Probabilities: 0.02 or 2%.\n\n\
Counters are printed on Ctrl-C (and SIGTERM), and every --interval with -v."
)]
struct Args {
    /// Address to listen on for the client.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Address to forward the client's datagrams to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Probability that a datagram is lost (each direction).
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    loss: f64,
    /// Loss from the client to upstream only (overrides --loss).
    #[arg(long, value_parser = parse_probability)]
    loss_up: Option<f64>,
    /// Loss from upstream to the client only (overrides --loss).
    #[arg(long, value_parser = parse_probability)]
    loss_down: Option<f64>,
    /// Probability that a datagram is sent twice.
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    dup: f64,
    /// Probability that a datagram is held back by --reorder-delay, letting
    /// later ones pass.
    #[arg(long, default_value = "0", value_parser = parse_probability)]
    reorder: f64,
    /// Extra delay of the datagrams picked by --reorder.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    reorder_delay: Duration,
    /// Fixed one-way delay (each direction).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    delay: Duration,
    /// Uniform jitter added to the delay, in -JITTER..=+JITTER.
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    jitter: Duration,
    /// Rate limit in bytes per second (each direction); none by default.
    #[arg(long, value_parser = parse_rate)]
    rate: Option<u64>,
    /// Burst of the rate limiter's token bucket, bytes (default: 10 ms of
    /// --rate, at least 16K).
    #[arg(long, value_parser = parse_size)]
    burst: Option<u64>,
    /// Most bytes waiting for the rate limiter; more are dropped.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    queue: u64,
    /// Seed of the random decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the counters every --interval.
    #[arg(short, long)]
    verbose: bool,
    /// How often -v prints the counters.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    interval: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let both = Impairment {
        loss: args.loss,
        duplicate: args.dup,
        reorder: args.reorder,
        reorder_delay: args.reorder_delay,
        delay: args.delay,
        jitter: args.jitter,
        rate: args.rate,
        burst: args.burst.map_or(0, |b| usize::try_from(b).unwrap_or(usize::MAX)),
        queue_limit: usize::try_from(args.queue).unwrap_or(usize::MAX),
    };
    let mut config = RelayConfig::new(args.upstream)
        .with_listen(args.listen)
        .with_seed(args.seed)
        .with_impairment(both);
    if let Some(p) = args.loss_up {
        config.to_upstream.loss = p;
    }
    if let Some(p) = args.loss_down {
        config.to_client.loss = p;
    }
    let relay = match Relay::start(config).await {
        Ok(relay) => relay,
        Err(e) => {
            eprintln!("utp-relay: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "utp-relay: listening on {}, forwarding to {} from {} (seed {})",
        relay.local_addr(),
        args.upstream,
        relay.upstream_side_addr(),
        args.seed
    );
    let mut tick = tokio::time::interval(args.interval.max(Duration::from_millis(100)));
    tick.tick().await;
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick(), if args.verbose => {
                if !relay.is_running() {
                    eprintln!("utp-relay: the relay stopped (socket error)");
                    println!("{}", relay.stats());
                    return ExitCode::FAILURE;
                }
                print_stats(&relay);
            }
        }
    }
    print_stats(&relay);
    ExitCode::SUCCESS
}

fn print_stats(relay: &Relay) {
    let client = relay.client_addr().map_or_else(|| "none yet".to_string(), |c| c.to_string());
    println!("client {client}\n{}", relay.stats());
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let p = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"))? / 100.0,
        None => s.parse::<f64>().map_err(|e| format!("{s:?}: {e}"))?,
    };
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s:?} is not a probability (0..=1 or 0%..=100%)"))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let secs = match unit.trim() {
        "" | "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "s" => value,
        "m" | "min" => value * 60.0,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use us, ms, s)")),
    };
    if secs.is_finite() && secs >= 0.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!("{s:?}: not a duration"))
    }
}

/// Bytes with an optional decimal suffix: 1500, 16K, 10M, 1G.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
    let mult = match unit.trim().trim_end_matches("/s").trim_end_matches('B') {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" | "m" => 1e6,
        "G" | "g" => 1e9,
        other => return Err(format!("{s:?}: unknown suffix {other:?} (use K, M, G)")),
    };
    let bytes = value * mult;
    if bytes.is_finite() && bytes >= 0.0 {
        Ok(bytes.round() as u64)
    } else {
        Err(format!("{s:?}: not a size"))
    }
}

/// A rate: bytes per second like a size, or bits per second with `bit` /
/// `bps` (80Mbit = 10M).
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bits = ["bit/s", "bit", "bps"].iter().find_map(|suffix| t.strip_suffix(suffix));
    let rate = match bits {
        Some(num) => parse_size(num)? / 8,
        None => parse_size(t)?,
    };
    if rate == 0 {
        Err(format!("{s:?}: the rate must be above 0"))
    } else {
        Ok(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_rate("10M"), Ok(10_000_000));
        assert_eq!(parse_rate("80Mbit"), Ok(10_000_000));
        assert_eq!(parse_rate("1.5KB/s"), Ok(1500));
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_size("256K"), Ok(256_000));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_millis(7)));
        assert_eq!(parse_probability("2%"), Ok(0.02));
        assert_eq!(parse_probability("0.05"), Ok(0.05));
        assert!(parse_probability("1.5").is_err());
        Args::try_parse_from([
            "utp-relay",
            "--listen",
            "127.0.0.1:9001",
            "--upstream",
            "127.0.0.1:9000",
            "--loss",
            "0.02",
            "--dup",
            "0.01",
            "--reorder",
            "0.05",
            "--delay",
            "20ms",
            "--jitter",
            "5ms",
            "--rate",
            "10M",
            "--seed",
            "1",
        ])
        .unwrap();
    }
}
