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

/// Bytes A's applications wrote that B's have not read yet, at most, over
/// `secs` seconds of `n` connections each writing 4 MiB as fast as their
/// send buffers take it (B reads everything at once), with an endpoint
/// send budget of `budget`. `idle` more connections send 1000 bytes each
/// and stay open.
fn most_buffered(n: usize, idle: usize, budget: usize, secs: u64) -> usize {
    let link = LinkConfig::ideal()
        .with_latency(Duration::from_millis(25))
        .with_bandwidth(10_000_000)
        .with_queue_time(Duration::from_millis(200));
    let config = EndpointConfig { send_budget: budget, ..EndpointConfig::default() };
    let mut sim = Sim::symmetric(config, link, 51);
    let mut a_side: Vec<Transfer> = (0..idle)
        .map(|i| {
            let mut t = Transfer::new(sim.connect(b""), pattern(1000, 100 + i as u64));
            t.shutdown_when_done = false;
            t
        })
        .collect();
    // The idle ones first: their data is acknowledged before the rest start.
    sim.run(Duration::from_secs(1), |sim| {
        for t in a_side.iter_mut() {
            t.pump(&mut sim.a.endpoint);
        }
        false
    });
    a_side.extend((0..n).map(|i| Transfer::new(sim.connect(b""), pattern(4 << 20, i as u64))));
    let mut b_side: Vec<Transfer> = Vec::new();
    let mut most = 0;
    sim.run(Duration::from_secs(secs), |sim| {
        for t in a_side.iter_mut() {
            t.pump(&mut sim.a.endpoint);
        }
        while b_side.len() < sim.b.accepted.len() {
            b_side.push(Transfer::new(sim.b.accepted[b_side.len()], Vec::new()));
        }
        for t in b_side.iter_mut() {
            t.pump(&mut sim.b.endpoint);
        }
        let written: usize = a_side.iter().map(|t| t.sent).sum();
        let read: usize = b_side.iter().map(|t| t.received.len()).sum();
        most = most.max(written - read);
        false
    });
    most
}

/// Many busy connections share the endpoint's send budget instead of
/// buffering four congestion windows each; one connection alone still gets
/// its four windows.
#[test]
fn busy_connections_share_the_send_budget() {
    const BUDGET: usize = 2 << 20;
    const N: usize = 20;
    let shared = most_buffered(N, 0, BUDGET, 2);
    let unbounded = most_buffered(N, 0, usize::MAX, 2);
    let alone = most_buffered(1, 0, BUDGET, 2);
    // Connections that sent once and wait do not count: the busy one among
    // them is alone. (Regression: every connection that ever had an ACK
    // stayed counted.)
    let among_idle = most_buffered(1, N - 1, BUDGET, 2);
    eprintln!(
        "{N} connections, 10 MB/s, 50 ms: at most {} KiB buffered with a {} KiB budget, {} KiB \
         without; one connection alone buffered {} KiB, among {} idle ones {} KiB",
        shared >> 10,
        BUDGET >> 10,
        unbounded >> 10,
        alone >> 10,
        N - 1,
        among_idle >> 10,
    );
    // The budget, and the 64 KiB floor of each connection.
    assert!(shared <= BUDGET + N * (64 << 10), "{shared} bytes buffered");
    assert!(unbounded > 2 * shared, "without a budget: {unbounded}");
    assert!(alone > 2 * BUDGET / N, "alone, a connection takes more than a share: {alone}");
    assert!(among_idle > 2 * BUDGET / N, "idle connections took shares: {among_idle}");
}
