//! Many bulk flows from A to B through one bottleneck, and what each got:
//! the runner behind the congestion-control experiments
//! (`proto/tests/sim/fairness.rs`) and their plots
//! (`proto/examples/congestion_plots.rs`).

#![allow(dead_code, unreachable_pub)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use utp_proto::congestion::ControllerFactory;
use utp_proto::wire::Repr;
use utp_proto::{ConnectionHandle, EndpointConfig, ReadError, TransportConfig};

use super::link::LinkConfig;
use super::newreno::NewReno;
use super::sim::{Side, Sim};

/// One uTP flow: when it starts and how much longer its path is than the
/// others' (one way, after the bottleneck).
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowSpec {
    pub start: Duration,
    pub extra_delay: Duration,
}

/// An experiment: flows, the path, what else shares it.
pub struct Experiment {
    pub controller: Arc<dyn ControllerFactory>,
    /// The forward path (A -> B) with its bottleneck.
    pub forward: LinkConfig,
    /// Its capacity in bytes per second (for shares).
    pub capacity: f64,
    pub flows: Vec<FlowSpec>,
    /// A NewReno flow active from/to.
    pub tcp: Option<(Duration, Duration)>,
    pub duration: Duration,
    /// Length of a sample.
    pub slot: Duration,
    /// B's clock runs this much faster (1.0: in step).
    pub b_clock_rate: f64,
    /// At this time the forward path becomes this.
    pub route_change: Option<(Duration, LinkConfig)>,
    pub seed: u64,
}

/// 10 Mbit/s, 100-packet queue, 10 ms each way (20 ms base RTT).
pub fn bottleneck() -> LinkConfig {
    LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_bandwidth(1_250_000)
        .with_queue_packets(100)
}

impl Experiment {
    /// `flows` flows starting together on the 10 Mbit/s bottleneck.
    pub fn new(controller: Arc<dyn ControllerFactory>, flows: usize, secs: u64) -> Self {
        Experiment {
            controller,
            forward: bottleneck(),
            capacity: 1_250_000.0,
            flows: vec![FlowSpec::default(); flows],
            tcp: None,
            duration: Duration::from_secs(secs),
            slot: Duration::from_millis(500),
            b_clock_rate: 1.0,
            route_change: None,
            seed: 90,
        }
    }
}

/// Two flows, the second 20 s after the first: the latecomer experiment.
pub fn latecomer(controller: Arc<dyn ControllerFactory>) -> Experiment {
    let mut e = Experiment::new(controller, 2, 50);
    e.flows[1].start = Duration::from_secs(20);
    e
}

/// One NewReno flow (from 10 s) against `flows` uTP flows.
pub fn against_newreno(controller: Arc<dyn ControllerFactory>, flows: usize) -> Experiment {
    let mut e = Experiment::new(controller, flows, 40);
    e.tcp = Some((Duration::from_secs(10), Duration::from_secs(40)));
    e
}

/// What an experiment measured, per slot.
#[derive(Debug, Clone)]
pub struct Series {
    pub slot: Duration,
    pub capacity: f64,
    /// Bytes each uTP flow delivered in each slot.
    pub flows: Vec<Vec<u64>>,
    /// Each flow's congestion window at the end of each slot.
    pub cwnd: Vec<Vec<usize>>,
    /// Bytes of the NewReno flow that crossed the bottleneck in each slot.
    pub tcp: Vec<u64>,
    /// Mean queuing delay at the bottleneck in each slot, in milliseconds.
    pub queue_ms: Vec<f64>,
}

impl Series {
    fn range(&self, from: Duration, to: Duration) -> std::ops::Range<usize> {
        let n = self.queue_ms.len();
        let slot = |d: Duration| ((d.as_secs_f64() / self.slot.as_secs_f64()) as usize).min(n);
        slot(from)..slot(to)
    }

    fn secs(&self, r: &std::ops::Range<usize>) -> f64 {
        (r.end - r.start) as f64 * self.slot.as_secs_f64()
    }

    /// Share of the link capacity flow `i` took in `[from, to)`.
    pub fn share(&self, i: usize, from: Duration, to: Duration) -> f64 {
        let r = self.range(from, to);
        self.flows[i][r.clone()].iter().sum::<u64>() as f64 / self.secs(&r) / self.capacity
    }

    /// Share of the link capacity the NewReno flow took in `[from, to)`.
    pub fn tcp_share(&self, from: Duration, to: Duration) -> f64 {
        let r = self.range(from, to);
        self.tcp[r.clone()].iter().sum::<u64>() as f64 / self.secs(&r) / self.capacity
    }

    /// Share of the capacity all uTP flows took together.
    pub fn utp_share(&self, from: Duration, to: Duration) -> f64 {
        (0..self.flows.len()).map(|i| self.share(i, from, to)).sum()
    }

    /// Jain's fairness index of the uTP flows' throughputs in `[from, to)`.
    pub fn jain(&self, from: Duration, to: Duration) -> f64 {
        let x: Vec<f64> = (0..self.flows.len()).map(|i| self.share(i, from, to)).collect();
        let sum: f64 = x.iter().sum();
        let squares: f64 = x.iter().map(|v| v * v).sum();
        sum * sum / (x.len() as f64 * squares).max(f64::MIN_POSITIVE)
    }

    /// Mean queuing delay at the bottleneck in `[from, to)`.
    pub fn mean_queue(&self, from: Duration, to: Duration) -> Duration {
        let r = self.range(from, to);
        let v = &self.queue_ms[r.clone()];
        Duration::from_secs_f64(v.iter().sum::<f64>() / v.len().max(1) as f64 / 1000.0)
    }
}

/// A flow's two ends and what B read so far.
struct Flow {
    a: Option<ConnectionHandle>,
    b: Option<ConnectionHandle>,
}

/// Runs an experiment.
pub fn run(e: &Experiment) -> Series {
    let transport = TransportConfig { congestion: e.controller.clone(), ..Default::default() };
    let config = EndpointConfig { transport: transport.into(), ..Default::default() };
    let back = LinkConfig::ideal().with_latency(Duration::from_millis(10));
    let mut sim = Sim::new(config.clone(), config, e.forward.clone(), back, e.seed);
    sim.b_clock_rate = e.b_clock_rate;
    let start = sim.now;
    if let Some((from, to)) = e.tcp {
        sim.cross = Some(Box::new(NewReno::new(start + from, start + to)));
    }
    // Per-flow path length, by the connection id B receives on.
    let extra: Rc<RefCell<HashMap<u16, Duration>>> = Rc::default();
    if e.flows.iter().any(|f| !f.extra_delay.is_zero()) {
        let extra = extra.clone();
        sim.arrival_delay = Some(Box::new(move |to, d| {
            if to != Side::B {
                return Duration::ZERO;
            }
            let id = Repr::parse_bytes(d).map(|r| r.connection_id).unwrap_or(0);
            extra.borrow().get(&id).copied().unwrap_or_default()
        }));
    }
    let slots = (e.duration.as_secs_f64() / e.slot.as_secs_f64()).ceil() as usize;
    let n = e.flows.len();
    let mut series = Series {
        slot: e.slot,
        capacity: e.capacity,
        flows: vec![vec![0; slots]; n],
        cwnd: vec![vec![0; slots]; n],
        tcp: vec![0; slots],
        queue_ms: vec![0.0; slots],
    };
    let mut queue_samples = vec![0u32; slots];
    let mut flows: Vec<Flow> = (0..n).map(|_| Flow { a: None, b: None }).collect();
    let mut by_id: HashMap<u16, usize> = HashMap::new();
    let mut accepted_seen = 0;
    let mut route_change = e.route_change.clone();
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut buf = vec![0u8; 64 << 10];
    let mut tcp_seen = 0;
    sim.run(e.duration, |sim| {
        let t = sim.elapsed();
        let slot = ((t.as_secs_f64() / e.slot.as_secs_f64()) as usize).min(slots - 1);
        if route_change.as_ref().is_some_and(|(at, _)| t >= *at) {
            let (_, cfg) = route_change.take().unwrap();
            sim.ab.set_config(cfg);
        }
        for (i, spec) in e.flows.iter().enumerate() {
            if flows[i].a.is_none() && t >= spec.start {
                let h = sim.connect(b"");
                let id = sim.a.endpoint.connection(h).unwrap().send_id();
                extra.borrow_mut().insert(id, spec.extra_delay);
                by_id.insert(id, i);
                flows[i].a = Some(h);
            }
        }
        while let Some(&h) = sim.b.accepted.get(accepted_seen) {
            accepted_seen += 1;
            let id = sim.b.endpoint.connection(h).unwrap().recv_id();
            if let Some(&i) = by_id.get(&id) {
                flows[i].b = Some(h);
            }
        }
        sim.a.events.clear();
        sim.b.events.clear();
        for (i, f) in flows.iter().enumerate() {
            if let Some(c) = f.a.and_then(|h| sim.a.endpoint.connection_mut(h)) {
                while c.write(&chunk).is_ok_and(|w| w > 0) {}
                series.cwnd[i][slot] = c.stats().cwnd;
            }
            if let Some(c) = f.b.and_then(|h| sim.b.endpoint.connection_mut(h)) {
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(ReadError::Blocked) => break,
                        Ok(got) => series.flows[i][slot] += got as u64,
                        Err(_) => break,
                    }
                }
            }
        }
        // The NewReno flow's bytes that crossed the bottleneck.
        let tcp_now = sim.ab.flow_stats(1).delivered_bytes;
        series.tcp[slot] += tcp_now - tcp_seen;
        tcp_seen = tcp_now;
        series.queue_ms[slot] += sim.ab.queue_delay(sim.now).as_secs_f64() * 1000.0;
        queue_samples[slot] += 1;
        false
    });
    for (q, n) in series.queue_ms.iter_mut().zip(&queue_samples) {
        *q /= f64::from((*n).max(1));
    }
    series
}
