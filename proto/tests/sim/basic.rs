use std::time::Duration;

use utp_proto::{EndpointConfig, Event};

use crate::common::link::LinkConfig;
use crate::common::sim::{exchange, Sim};

fn lan() -> LinkConfig {
    LinkConfig::ideal().with_latency(Duration::from_millis(10))
}

#[test]
fn handshake_completes() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 1);
    let c = sim.connect(b"");
    let ok = sim.run_until(
        Duration::from_secs(5),
        |_| {},
        |sim| sim.a.endpoint.connection(c).is_some_and(|c| c.is_connected()),
    );
    assert!(ok);
    assert!(sim.a.saw(c, Event::Connected));
    assert_eq!(sim.b.accepted.len(), 1);
    // One round trip.
    assert_eq!(sim.elapsed(), Duration::from_millis(20));
}

#[test]
fn small_transfer_both_ways() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 2);
    exchange(&mut sim, 10_000, 5_000, Duration::from_secs(10));
}

#[test]
fn one_mib_clean() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 3);
    exchange(&mut sim, 1 << 20, 0, Duration::from_secs(30));
}
