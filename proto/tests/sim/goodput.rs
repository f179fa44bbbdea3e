//! Goodput against loss rate, kept as a snapshot (`tests/snapshots/goodput.txt`)
//! so that every change to the engine shows its effect. Run with
//! `UPDATE_SNAPSHOTS=1` to accept a new table.

use std::fmt::Write as _;
use std::time::Duration;

use utp_proto::EndpointConfig;

use crate::common::link::LinkConfig;
use crate::common::sim::{pattern, Sim, Transfer};

const SIZE: usize = 4 << 20;

fn goodput(loss: f64, seed: u64) -> (f64, u64, u64) {
    let link = LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_bandwidth(12_500_000)
        .with_queue_packets(100)
        .with_loss(loss);
    let mut sim = Sim::symmetric(EndpointConfig::default(), link, seed);
    let a = sim.connect(b"");
    let mut ta = Transfer::new(a, pattern(SIZE, seed));
    let mut tb: Option<Transfer> = None;
    let ok = sim.run(Duration::from_secs(600), |sim| {
        ta.pump(&mut sim.a.endpoint);
        if tb.is_none() {
            tb = sim.b.accepted.first().map(|&h| Transfer::new(h, Vec::new()));
        }
        let Some(tb) = tb.as_mut() else { return false };
        tb.pump(&mut sim.b.endpoint);
        tb.eof
    });
    assert!(
        ok,
        "transfer at {loss} loss did not finish: {:?} {:?} got {}",
        sim.a.endpoint.connection(a).map(|c| c.stats()),
        sim.a.endpoint.connection(a).map(|c| c.error()),
        tb.as_ref().map_or(0, |t| t.received.len())
    );
    assert!(tb.unwrap().received == ta.to_send);
    let stats = sim.a.endpoint.connection(a).unwrap().stats();
    if std::env::var_os("GOODPUT_DEBUG").is_some() {
        eprintln!("loss {loss}: {stats:?}\n  link {:?}", sim.ab.stats());
    }
    (SIZE as f64 / sim.elapsed().as_secs_f64() / 1e6, stats.retransmits, stats.timeouts)
}

#[test]
fn goodput_table() {
    let mut table = String::from(
        "# 4 MiB one way, 100 Mbit/s bottleneck, 100-packet queue, 20 ms RTT, random loss\n\
         # loss%  goodput MB/s  retransmits  timeouts\n",
    );
    for (i, loss) in [0.0, 0.01, 0.02, 0.05, 0.10, 0.15].into_iter().enumerate() {
        let (mbps, retransmits, timeouts) = goodput(loss, 60 + i as u64);
        writeln!(table, "{:>6.1} {:>13.2} {:>12} {:>9}", loss * 100.0, mbps, retransmits, timeouts)
            .unwrap();
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/goodput.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !std::path::Path::new(path).exists() {
        std::fs::write(path, &table).unwrap();
    }
    let expected = std::fs::read_to_string(path).unwrap();
    println!("{table}");
    assert_eq!(
        table, expected,
        "goodput changed: if intended, run with UPDATE_SNAPSHOTS=1 and commit the new table"
    );
}

/// Pacing spreads a window over the RTT: fewer bottleneck drops on a
/// shallow queue, and no throughput lost on a clean path.
#[test]
fn pacing_costs_no_throughput_on_a_clean_path() {
    let run = |pacing: bool| {
        let t = utp_proto::TransportConfig { pacing, ..Default::default() };
        let config = EndpointConfig { transport: t.into(), ..EndpointConfig::default() };
        let link = LinkConfig::ideal()
            .with_latency(Duration::from_millis(10))
            .with_bandwidth(12_500_000)
            .with_queue_packets(100);
        let mut sim = Sim::symmetric(config, link, 90);
        let a = sim.connect(b"");
        let mut ta = Transfer::new(a, pattern(32 << 20, 90));
        let mut tb: Option<Transfer> = None;
        assert!(sim.run(Duration::from_secs(120), |sim| {
            ta.pump(&mut sim.a.endpoint);
            if tb.is_none() {
                tb = sim.b.accepted.first().map(|&h| Transfer::new(h, Vec::new()));
            }
            let Some(tb) = tb.as_mut() else { return false };
            tb.pump(&mut sim.b.endpoint);
            tb.received.clear();
            tb.eof
        }));
        let stats = sim.a.endpoint.connection(a).unwrap().stats();
        ((32 << 20) as f64 / sim.elapsed().as_secs_f64() / 1e6, stats.retransmits)
    };
    let (paced, paced_rtx) = run(true);
    let (bursty, bursty_rtx) = run(false);
    println!("32 MiB at 100 Mbit/s: paced {paced:.2} MB/s ({paced_rtx} retransmits), unpaced {bursty:.2} MB/s ({bursty_rtx} retransmits)");
    assert!(paced >= bursty * 0.97, "pacing cost throughput: {paced} vs {bursty}");
    assert!(paced_rtx <= bursty_rtx, "pacing caused more losses: {paced_rtx} vs {bursty_rtx}");
}
