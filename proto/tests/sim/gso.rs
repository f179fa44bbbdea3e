//! Segmented runs (`Endpoint::poll_transmit_run`): the engine hands the
//! runtime runs of equal-size datagrams to one destination for one GSO
//! send. Split again, they are exactly the datagrams `poll_transmit`
//! sends, in the same order, with one connection or many.

use std::time::Duration;

use utp_proto::EndpointConfig;

use crate::common::link::LinkConfig;
use crate::common::sim::{exchange, Sim, Transfer};

const MIB: usize = 1 << 20;

fn link(loss: f64) -> LinkConfig {
    LinkConfig::ideal()
        .with_latency(Duration::from_millis(5))
        .with_bandwidth(50_000_000)
        .with_queue_packets(400)
        .with_loss(loss)
}

/// (A's datagram hash, A's datagram count, B's hash, A's runs) of a run of
/// `scenario` with `gso` segments per transmit.
fn fingerprint(
    gso: usize,
    seed: u64,
    loss: f64,
    scenario: fn(&mut Sim),
) -> (u64, usize, u64, usize) {
    let mut sim = Sim::symmetric(EndpointConfig::default(), link(loss), seed);
    sim.gso_segments = gso;
    scenario(&mut sim);
    (sim.a.sent_hash, sim.a.sent_datagrams, sim.b.sent_hash, sim.a.runs)
}

fn same_datagrams(what: &str, seed: u64, loss: f64, scenario: fn(&mut Sim)) {
    let plain = fingerprint(1, seed, loss, scenario);
    let runs = fingerprint(16, seed, loss, scenario);
    assert_eq!((plain.0, plain.1, plain.2), (runs.0, runs.1, runs.2), "{what}");
    assert_eq!(plain.3, 0);
    assert!(runs.3 > 50, "{what}: runs happened: {}", runs.3);
    println!(
        "{what}: {} datagrams from A, {} runs of more than one, identical to one at a time",
        runs.1, runs.3
    );
}

fn one_connection(sim: &mut Sim) {
    exchange(sim, 4 * MIB, MIB, Duration::from_secs(120));
}

/// Eight connections from A to B at once, 512 KiB each.
fn eight_connections(sim: &mut Sim) {
    let dials: Vec<_> = (0..8).map(|_| sim.connect(b"")).collect();
    let mut transfers: Vec<Transfer> = dials
        .iter()
        .enumerate()
        .map(|(i, &h)| {
            let mut t = Transfer::new(h, crate::common::sim::pattern(512 * 1024, i as u64));
            t.shutdown_when_done = true;
            t
        })
        .collect();
    let done = sim.run(Duration::from_secs(120), |sim| {
        for t in &mut transfers {
            t.pump(&mut sim.a.endpoint);
        }
        for &h in &sim.b.accepted.clone() {
            if let Some(c) = sim.b.endpoint.connection_mut(h) {
                let mut buf = [0u8; 65536];
                while c.read(&mut buf).is_ok_and(|n| n > 0) {}
            }
        }
        sim.b.accepted.len() == 8
            && sim.b.accepted.iter().all(|&h| {
                sim.b.endpoint.connection(h).is_some_and(|c| c.stats().bytes_read == 512 * 1024)
            })
    });
    assert!(done, "eight transfers complete");
}

#[test]
fn runs_are_the_datagrams_poll_transmit_sends() {
    same_datagrams("one connection", 60, 0.0, one_connection);
}

#[test]
fn runs_are_the_datagrams_poll_transmit_sends_under_loss() {
    same_datagrams("one connection, 2 % loss", 61, 0.02, one_connection);
}

#[test]
fn runs_interleave_many_connections_as_poll_transmit_does() {
    same_datagrams("eight connections", 62, 0.0, eight_connections);
}
