//! Many connections between two endpoints.

use std::time::Duration;

use utp_proto::EndpointConfig;

use crate::common::link::LinkConfig;
use crate::common::sim::{pattern, Sim, Transfer};

#[test]
fn thousand_connections_at_once() {
    let link = LinkConfig::ideal().with_latency(Duration::from_millis(5)).with_loss(0.01);
    let mut sim = Sim::symmetric(EndpointConfig::default(), link, 50);
    let mut a_side: Vec<Transfer> =
        (0..1000).map(|i| Transfer::new(sim.connect(b""), pattern(3000, i))).collect();
    let mut b_side: Vec<Transfer> = Vec::new();
    let ok = sim.run(Duration::from_secs(120), |sim| {
        for t in a_side.iter_mut() {
            t.pump(&mut sim.a.endpoint);
        }
        while b_side.len() < sim.b.accepted.len() {
            let h = sim.b.accepted[b_side.len()];
            b_side.push(Transfer::new(h, pattern(2000, 10_000 + h.0 as u64)));
        }
        for t in b_side.iter_mut() {
            t.pump(&mut sim.b.endpoint);
        }
        b_side.len() == 1000 && a_side.iter().all(|t| t.eof) && b_side.iter().all(|t| t.eof)
    });
    assert!(ok, "{} accepted", b_side.len());
    assert_eq!(sim.b.accepted.len(), 1000);
    // Every stream arrived intact: match them up by what B received.
    let mut sent: Vec<Vec<u8>> = a_side.iter().map(|t| t.to_send.clone()).collect();
    let mut received: Vec<Vec<u8>> = b_side.iter().map(|t| t.received.clone()).collect();
    sent.sort();
    received.sort();
    assert_eq!(sent, received);
    for t in &a_side {
        assert_eq!(t.received.len(), 2000);
    }
}
