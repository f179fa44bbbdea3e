//! Packets larger than most of the peer's window: a path MTU remembered from
//! an earlier connection (jumbo packets) meets a receiver with a small
//! receive buffer.

use std::time::Duration;

use utp_proto::{Endpoint, EndpointConfig, TransportConfig};

use crate::common::link::LinkConfig;
use crate::common::sim::{pattern, Sim, Transfer};

const JUMBO: usize = 8972;

fn path() -> LinkConfig {
    LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_bandwidth(12_500_000)
        .with_queue_packets(200)
        .with_mtu(JUMBO)
}

fn config(receive_buffer_size: usize) -> EndpointConfig {
    let t = TransportConfig { receive_buffer_size, ..Default::default() };
    EndpointConfig { transport: t.into(), ..Default::default() }
}

/// Sends `len` bytes A -> B; returns the virtual time it took, or `None`
/// (with what B got) after `limit`.
fn transfer(sim: &mut Sim, len: usize, limit: Duration) -> Result<Duration, usize> {
    let data = pattern(len, 7);
    let conn = sim.connect(b"");
    let mut ta = Transfer::new(conn, data.clone());
    let mut tb: Option<Transfer> = None;
    let before = sim.b.accepted.len();
    let start = sim.elapsed();
    let ok = sim.run(limit, |sim| {
        ta.pump(&mut sim.a.endpoint);
        if tb.is_none() {
            tb = sim.b.accepted.get(before).map(|&h| Transfer::new(h, Vec::new()));
        }
        let Some(tb) = tb.as_mut() else { return false };
        tb.pump(&mut sim.b.endpoint);
        tb.eof
    });
    let got = tb.map_or(Vec::new(), |t| t.received);
    if !ok {
        return Err(got.len());
    }
    assert!(got == data, "B received different bytes than A sent");
    Ok(sim.elapsed() - start)
}

/// A learns the jumbo path MTU on a first connection (B with a large
/// buffer), then connects again to B restarted with `buf` bytes of receive
/// buffer: its packets are jumbo from the start.
fn second_connection(buf: usize, len: usize, limit: Duration) -> Result<Duration, usize> {
    let mut sim = Sim::new(config(4 << 20), config(64 << 10), path(), path(), 5);
    transfer(&mut sim, 1 << 20, Duration::from_secs(10)).expect("first connection");
    assert_eq!(sim.a.endpoint.path_mtu(sim.now, sim.b.addr), Some(JUMBO));
    sim.b.endpoint = Endpoint::new(EndpointConfig { rng_seed: Some(9), ..config(buf) }, sim.now);
    sim.b.accepted.clear();
    transfer(&mut sim, len, limit)
}

/// The receive buffer (2000 bytes) is smaller than one packet's payload
/// (8952) by more than the 1500 bytes a buffer may overrun: B dropped
/// the zero-window probe, and each retransmission of it, and acknowledged
/// every copy, so that the connection neither progressed nor timed out.
#[test]
fn packet_larger_than_the_whole_receive_buffer_gets_through() {
    let took = second_connection(2000, 200_000, Duration::from_secs(30));
    assert!(took.is_ok(), "stalled: B got {} of 200000 bytes", took.unwrap_err());
}

/// B's window (12000) holds one of A's jumbo packets but not two: once B's
/// application reads, B must say that the window reopened, even though B's
/// own packets (1402 bytes) would have fit in what it advertised before.
#[test]
fn window_update_for_the_peers_packet_size() {
    let took = second_connection(12_000, 200_000, Duration::from_secs(30)).expect("finishes");
    // 23 jumbo packets, one round trip (20 ms) each at most; the persist
    // timer instead took one retransmission timeout for each.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}
