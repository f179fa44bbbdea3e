//! LEDBAT in the simulator: utilisation and queuing delay at a bottleneck,
//! yielding to a loss-based flow, clock drift, route changes.

use std::time::Duration;

use utp_proto::EndpointConfig;

use crate::common::link::LinkConfig;
use crate::common::sim::{pattern, Sim, Transfer};

/// 10 Mbit/s, 100-packet queue, 10 ms each way (20 ms base RTT).
pub(crate) fn bottleneck() -> LinkConfig {
    LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_bandwidth(1_250_000)
        .with_queue_packets(100)
}

pub(crate) struct Measure {
    pub(crate) goodput: f64,
    pub(crate) utilisation: f64,
    pub(crate) mean_queue_delay: Duration,
}

/// A sends `secs` worth of data to B; measures the second half (steady state).
pub(crate) fn single_flow(link: LinkConfig, secs: u64, seed: u64) -> Measure {
    let mut sim = Sim::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        link,
        LinkConfig::ideal().with_latency(Duration::from_millis(10)),
        seed,
    );
    let a = sim.connect(b"");
    let total = (1_250_000 * secs) as usize;
    let mut ta = Transfer::new(a, pattern(total, seed));
    ta.shutdown_when_done = false;
    let mut tb: Option<Transfer> = None;
    let half = Duration::from_secs(secs / 2);
    let mut mark: Option<(Duration, usize, crate::common::link::LinkStats)> = None;
    sim.run(Duration::from_secs(secs), |sim| {
        ta.pump(&mut sim.a.endpoint);
        if tb.is_none() {
            tb = sim.b.accepted.first().map(|&h| Transfer::new(h, Vec::new()));
        }
        if let Some(tb) = tb.as_mut() {
            tb.pump(&mut sim.b.endpoint);
            if mark.is_none() && sim.elapsed() >= half {
                mark = Some((sim.elapsed(), tb.received.len(), sim.ab.stats()));
            }
        }
        false
    });
    let (t0, bytes0, s0) = mark.expect("ran past half time");
    let got = tb.unwrap().received.len() - bytes0;
    let secs = (sim.elapsed() - t0).as_secs_f64();
    let s1 = sim.ab.stats();
    let delivered = s1.delivered - s0.delivered;
    let qdelay = (s1.total_queue_delay - s0.total_queue_delay) / (s1.sent - s0.sent).max(1) as u32;
    let wire = (s1.delivered_bytes - s0.delivered_bytes) as f64 / secs;
    let _ = delivered;
    Measure {
        goodput: got as f64 / secs,
        utilisation: wire / 1_250_000.0,
        mean_queue_delay: qdelay,
    }
}

#[test]
fn single_flow_fills_the_link_near_the_target_delay() {
    let m = single_flow(bottleneck(), 30, 70);
    println!(
        "goodput {:.0} B/s, utilisation {:.1} %, mean queuing delay {:?}",
        m.goodput,
        m.utilisation * 100.0,
        m.mean_queue_delay
    );
    assert!(m.utilisation >= 0.90, "utilisation {:.3}", m.utilisation);
    let q = m.mean_queue_delay.as_secs_f64();
    assert!((0.075..=0.125).contains(&q), "mean queuing delay {:?}", m.mean_queue_delay);
}
