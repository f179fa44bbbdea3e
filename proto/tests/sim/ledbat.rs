//! Classic LEDBAT (RFC 6817, as libutp runs it; the default) in the
//! simulator: utilisation and queuing delay at a bottleneck, yielding to a
//! loss-based flow, clock drift, route changes. LEDBAT++ and the
//! comparison of both: `fairness.rs`.

use std::time::Duration;

use std::sync::Arc;

use utp_proto::congestion::LedbatConfig;
use utp_proto::{EndpointConfig, TransportConfig};

/// An endpoint running classic LEDBAT.
pub(crate) fn classic() -> EndpointConfig {
    let transport =
        TransportConfig { congestion: Arc::new(LedbatConfig::default()), ..Default::default() };
    EndpointConfig { transport: transport.into(), ..Default::default() }
}

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
        classic(),
        classic(),
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

type Reno = std::rc::Rc<std::cell::RefCell<crate::common::newreno::NewReno>>;

/// What a test varies in [`shared_run`].
#[derive(Default)]
struct Scenario {
    /// B's clock runs this much faster (1.01: 1 % fast); 0 means 1.
    b_rate: f64,
    /// A NewReno flow active from/to these seconds.
    tcp: Option<(u64, u64)>,
    /// At this second, the forward link becomes this.
    route_change: Option<(u64, LinkConfig)>,
}

/// A bulk uTP flow A -> B over the bottleneck for `secs`; returns the uTP
/// bytes delivered in each 0.5 s slot, the NewReno flow if any, and the
/// simulator.
fn shared_run(secs: u64, scenario: Scenario, seed: u64) -> (Vec<u64>, Option<Reno>, Sim) {
    let back = LinkConfig::ideal().with_latency(Duration::from_millis(10));
    let mut sim = Sim::new(classic(), classic(), bottleneck(), back, seed);
    if scenario.b_rate > 0.0 {
        sim.b_clock_rate = scenario.b_rate;
    }
    let start = sim.now;
    let reno = scenario.tcp.map(|(from, to)| {
        let flow = crate::common::newreno::NewReno::new(
            start + Duration::from_secs(from),
            start + Duration::from_secs(to),
        );
        Reno::new(std::cell::RefCell::new(flow))
    });
    if let Some(r) = &reno {
        sim.cross = Some(Box::new(r.clone()));
    }
    let a = sim.connect(b"");
    let mut ta = Transfer::new(a, pattern((1_250_000 * secs) as usize, seed));
    ta.shutdown_when_done = false;
    let mut tb: Option<Transfer> = None;
    let mut slots = vec![0u64; (secs * 2) as usize];
    let mut route_change = scenario.route_change;
    sim.run(Duration::from_secs(secs), |sim| {
        if route_change.as_ref().is_some_and(|(at, _)| sim.elapsed() >= Duration::from_secs(*at)) {
            let (_, cfg) = route_change.take().unwrap();
            sim.ab.set_config(cfg);
        }
        ta.pump(&mut sim.a.endpoint);
        if tb.is_none() {
            tb = sim.b.accepted.first().map(|&h| Transfer::new(h, Vec::new()));
        }
        if let Some(tb) = tb.as_mut() {
            tb.pump(&mut sim.b.endpoint);
            let slot = (sim.elapsed().as_millis() / 500) as usize;
            if let Some(s) = slots.get_mut(slot) {
                *s += tb.received.len() as u64;
            }
            // Only the count matters: keep memory flat.
            tb.received.clear();
        }
        false
    });
    (slots, reno, sim)
}

/// Share of the bottleneck in `[from_s, to_s)` taken by bytes in `slots`.
fn share(slots: &[u64], from_s: f64, to_s: f64) -> f64 {
    let (a, b) = ((from_s * 2.0) as usize, (to_s * 2.0) as usize);
    slots[a..b].iter().sum::<u64>() as f64 / (to_s - from_s) / 1_250_000.0
}

#[test]
fn yields_to_a_loss_based_flow_and_recovers() {
    // uTP alone for 10 s, NewReno joins from 10 s to 40 s, uTP alone again.
    let (slots, reno, sim) =
        shared_run(45, Scenario { tcp: Some((10, 40)), ..Default::default() }, 71);
    let reno = reno.unwrap();
    let start = sim.start;
    let s = |x: u64| start + Duration::from_secs(x);
    let utp_alone = share(&slots, 5.0, 10.0);
    let utp_shared = share(&slots, 15.0, 40.0);
    let tcp_shared = reno.borrow().bytes_between(s(15), s(40)) as f64 / 25.0 / 1_250_000.0;
    let utp_after = share(&slots, 41.5, 42.0);
    println!(
        "uTP alone {:.1} %, while shared: uTP {:.1} % TCP {:.1} %, 1.5-2 s after TCP stops: uTP {:.1} %",
        utp_alone * 100.0,
        utp_shared * 100.0,
        tcp_shared * 100.0,
        utp_after * 100.0
    );
    assert!(utp_alone >= 0.9, "alone {utp_alone}");
    assert!(utp_shared <= 0.25, "uTP took {utp_shared} of the link next to TCP");
    assert!(tcp_shared >= 0.6, "TCP got only {tcp_shared}");
    assert!(utp_after >= 0.9, "uTP recovered to only {utp_after} within 2 s");
}

#[test]
fn survives_clock_drift_either_way() {
    for rate in [1.01, 1.0 / 1.01] {
        let (slots, _, sim) = shared_run(60, Scenario { b_rate: rate, ..Default::default() }, 72);
        let utilisation = share(&slots, 10.0, 60.0);
        let s = sim.ab.stats();
        let qdelay = s.total_queue_delay / s.sent.max(1) as u32;
        println!(
            "B clock x{rate:.4}: utilisation {:.1} %, mean queuing delay {qdelay:?}",
            utilisation * 100.0
        );
        assert!(utilisation >= 0.9, "clock rate {rate}: utilisation {utilisation}");
        assert!(
            qdelay <= Duration::from_millis(125),
            "clock rate {rate}: queuing delay {qdelay:?}"
        );
    }
}

#[test]
fn survives_route_changes() {
    // The one-way delay grows by 30 ms, or shrinks by 5 ms, at 20 s.
    for latency in [40, 5] {
        let changed = bottleneck().with_latency(Duration::from_millis(latency));
        let scenario = Scenario { route_change: Some((20, changed)), ..Default::default() };
        let (slots, _, sim) = shared_run(40, scenario, 73);
        let before = share(&slots, 10.0, 20.0);
        let after = share(&slots, 22.0, 40.0);
        let s = sim.ab.stats();
        let qdelay = s.total_queue_delay / s.sent.max(1) as u32;
        println!(
            "route to {latency} ms: utilisation before {:.1} %, after {:.1} %, mean queuing delay {qdelay:?}",
            before * 100.0,
            after * 100.0
        );
        assert!(after >= 0.9, "after the route change: {after}");
        assert!(qdelay <= Duration::from_millis(125), "queuing delay {qdelay:?}");
    }
}
