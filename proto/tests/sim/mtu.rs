//! Path MTU discovery: probes with don't-fragment, the search, what it costs
//! and that no byte is lost on the way.
//!
//! The simulated link's `mtu` is the largest UDP payload it carries (a
//! 1300-byte IPv4 path carries 1272 bytes of UDP payload). Datagrams over it
//! are dropped when sent with don't-fragment (probes) and fragmented
//! otherwise, as an IPv4 router does.

use std::time::Duration;

use utp_proto::wire::ExtFlags;
use utp_proto::{EndpointConfig, Stats, TransportConfig};

use crate::common::link::{LinkConfig, UNLIMITED};
use crate::common::sim::{pattern, Sim, Transfer};

const MIB: usize = 1 << 20;
const RTT: Duration = Duration::from_millis(20);

fn path(mtu: usize) -> LinkConfig {
    LinkConfig::ideal()
        .with_latency(RTT / 2)
        .with_bandwidth(12_500_000)
        .with_queue_packets(200)
        .with_mtu(mtu)
}

fn config(t: TransportConfig) -> EndpointConfig {
    EndpointConfig { transport: t.into(), ..EndpointConfig::default() }
}

#[derive(Debug)]
struct Outcome {
    /// The size the search settled on.
    found: usize,
    /// Time from the handshake to the end of the search, in round trips.
    rtts: f64,
    /// Of which the search itself (first probe to the end), in round trips.
    search_rtts: f64,
    /// The sender's statistics at the end.
    stats: Stats,
    /// A -> B datagrams fragmented by the path.
    fragmented: u64,
}

/// Sends `len` bytes from A to B over `link` (both ways) and checks they
/// all arrive intact; reports the search.
fn transfer(sim: &mut Sim, len: usize) -> Outcome {
    let data = pattern(len, 7);
    let conn = sim.connect(b"");
    let mut ta = Transfer::new(conn, data.clone());
    let mut tb: Option<Transfer> = None;
    let mut connected_at = None;
    let mut first_probe_at = None;
    let mut found_at = None;
    let b_addr = sim.b.addr;
    let accepted_before = sim.b.accepted.len();
    let ok = sim.run(Duration::from_secs(120), |sim| {
        ta.pump(&mut sim.a.endpoint);
        if connected_at.is_none()
            && sim.a.endpoint.connection(conn).is_some_and(|c| c.is_connected())
        {
            connected_at = Some(sim.elapsed());
        }
        let probes = sim.a.endpoint.connection(conn).map_or(0, |c| c.stats().mtu_probes);
        if first_probe_at.is_none() && probes > 0 {
            first_probe_at = Some(sim.elapsed());
        }
        if found_at.is_none() && sim.a.endpoint.path_mtu(sim.now, b_addr).is_some() {
            found_at = Some(sim.elapsed());
        }
        if tb.is_none() {
            tb = sim.b.accepted.get(accepted_before).map(|&h| Transfer::new(h, Vec::new()));
        }
        let Some(tb) = tb.as_mut() else { return false };
        tb.pump(&mut sim.b.endpoint);
        tb.eof
    });
    let tb = tb.expect("B accepted");
    let stats = sim.a.endpoint.connection(conn).unwrap().stats();
    assert!(ok, "transfer did not finish: B got {} of {len}; A {stats:?}", tb.received.len());
    assert!(tb.received == data, "B received different bytes than A sent");
    let found = sim.a.endpoint.path_mtu(sim.now, b_addr).unwrap_or(stats.packet_size);
    let in_rtts = |from: Option<Duration>| match (from, found_at) {
        (Some(from), Some(to)) => to.saturating_sub(from).as_secs_f64() / RTT.as_secs_f64(),
        _ => f64::INFINITY,
    };
    let rtts = in_rtts(connected_at);
    let search_rtts = in_rtts(first_probe_at);
    Outcome { found, rtts, search_rtts, stats, fragmented: sim.ab.stats().fragmented }
}

/// Probing waits for a window of 16 packets (slow start's first round
/// trips); the search itself takes a few round trips.
fn assert_converged(o: &Outcome) {
    assert!(o.search_rtts <= 8.0, "the search took {:.1} RTTs", o.search_rtts);
    assert!(o.rtts <= 15.0, "found {:.1} RTTs after the handshake", o.rtts);
}

fn report(name: &str, o: &Outcome) {
    println!(
        "{name}: found {} B {:.1} RTTs after the handshake ({:.1} from the first probe), {} probes ({} lost), {} fragmented, {} retransmits, {} timeouts",
        o.found,
        o.rtts,
        o.search_rtts,
        o.stats.mtu_probes,
        o.stats.mtu_probes_lost,
        o.fragmented,
        o.stats.retransmits,
        o.stats.timeouts
    );
}

/// A 1300-byte path: smaller than the 1402-byte initial packets, which the
/// path fragments until the search finds the size that fits.
#[test]
fn path_mtu_1300_converges_below_the_initial_size() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), path(1272), 1);
    let o = transfer(&mut sim, 8 * MIB);
    report("path MTU 1300", &o);
    assert!((1272 - 1272 / 64..=1272).contains(&o.found), "{o:?}");
    assert_eq!(o.stats.packet_size, o.found);
    assert_converged(&o);
    assert_eq!(o.stats.timeouts, 0, "{o:?}");
}

/// Jumbo frames: 9000 bytes.
#[test]
fn path_mtu_9000_converges_to_jumbo_packets() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), path(8972), 2);
    let o = transfer(&mut sim, 16 * MIB);
    report("path MTU 9000", &o);
    assert!((8972 - 8972 / 64..=8972).contains(&o.found), "{o:?}");
    assert_eq!(o.stats.packet_size, o.found);
    assert_converged(&o);
    assert_eq!(o.stats.timeouts, 0, "{o:?}");
    // Padded probes go again as ordinary packets: nothing is fragmented.
    assert_eq!(o.fragmented, 0);
}

/// A 1500-byte path, the common case.
#[test]
fn path_mtu_1500_converges() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), path(1472), 3);
    let o = transfer(&mut sim, 8 * MIB);
    report("path MTU 1500", &o);
    assert!((1472 - 1472 / 64..=1472).contains(&o.found), "{o:?}");
    assert_converged(&o);
    assert_eq!(o.fragmented, 0);
}

/// No limit on the path (loopback): one round finds the largest datagram.
#[test]
fn unlimited_path_reaches_the_largest_datagram() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), path(UNLIMITED), 4);
    let o = transfer(&mut sim, 16 * MIB);
    report("no path limit", &o);
    assert_eq!(o.found, 65_507);
    assert_eq!(o.stats.mtu_probes_lost, 0);
}

/// The sender's interface is smaller than the path: EMSGSIZE fails the
/// probe at once, and the packet it carried goes again.
#[test]
fn emsgsize_fails_a_probe_without_a_loss() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), path(UNLIMITED), 5);
    sim.a.interface_mtu = 8972;
    let o = transfer(&mut sim, 8 * MIB);
    report("interface MTU 9000", &o);
    assert!(sim.a.emsgsize > 0);
    assert!((8972 - 8972 / 64..=8972).contains(&o.found), "{o:?}");
    assert_eq!(o.stats.timeouts, 0);
}

/// Lost probes are not congestion: with and without a search, the same
/// transfer over a 1500-byte path takes about as long.
#[test]
fn lost_probes_cost_no_throughput() {
    let run = |probing: bool| {
        let t = TransportConfig { mtu_probing: probing, ..TransportConfig::default() };
        let mut sim = Sim::symmetric(config(t), path(1472), 6);
        let o = transfer(&mut sim, 16 * MIB);
        (16.0 * MIB as f64 / sim.elapsed().as_secs_f64() / 1e6, o)
    };
    let (with, o) = run(true);
    let (without, _) = run(false);
    println!("16 MiB over a 1500-byte path: {with:.2} MB/s probing, {without:.2} MB/s not");
    assert!(o.stats.mtu_probes_lost > 0, "{o:?}");
    assert!(with >= without * 0.97, "probing cost throughput: {with} vs {without}");
}

/// A peer without this library's extensions (libutp, libtorrent) gets data
/// probes up to 1472 bytes: over a 1300-byte path the initial size fails
/// and the search goes below it; the packets sent before were fragmented
/// and arrived.
#[test]
fn legacy_peer_is_probed_with_data_up_to_1472() {
    let legacy = TransportConfig { extensions: ExtFlags::NONE, ..TransportConfig::default() };
    let mut sim = Sim::new(EndpointConfig::default(), config(legacy), path(1272), path(1272), 7);
    let o = transfer(&mut sim, 8 * MIB);
    report("legacy peer, path MTU 1300", &o);
    assert!((1272 - 1272 / 64..=1272).contains(&o.found), "{o:?}");

    let legacy = TransportConfig { extensions: ExtFlags::NONE, ..TransportConfig::default() };
    let mut sim =
        Sim::new(EndpointConfig::default(), config(legacy), path(UNLIMITED), path(UNLIMITED), 8);
    let o = transfer(&mut sim, 8 * MIB);
    report("legacy peer, no path limit", &o);
    // libtorrent cuts datagrams over 1500 bytes: never more than 1472.
    assert_eq!(o.found, 1472);
    assert!(sim.ab.stats().sent_bytes > 0);
}

/// The endpoint remembers the path MTU of a destination: the next
/// connection confirms it with a single probe instead of a search.
#[test]
fn second_connection_reuses_the_path_mtu() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), path(8972), 9);
    let first = transfer(&mut sim, 8 * MIB);
    let second = transfer(&mut sim, 2 * MIB);
    report("first connection", &first);
    report("second connection", &second);
    assert_eq!(second.stats.mtu_probes, 1);
    assert_eq!(second.stats.packet_size, first.found);
}

/// The search runs again after `mtu_probe_interval`: a path that grew
/// (a route change to jumbo frames) is found.
#[test]
fn periodic_search_finds_a_larger_path() {
    let t = TransportConfig { mtu_probe_interval: Duration::from_secs(3), ..Default::default() };
    let slow = path(1472).with_bandwidth(2_500_000);
    let mut sim = Sim::symmetric(config(t), slow, 10);
    let data = pattern(24 * MIB, 11);
    let conn = sim.connect(b"");
    let mut ta = Transfer::new(conn, data);
    let mut tb: Option<Transfer> = None;
    let mut sizes = Vec::new();
    let mut grown = false;
    sim.run(Duration::from_secs(30), |sim| {
        ta.pump(&mut sim.a.endpoint);
        if !grown && sim.elapsed() > Duration::from_secs(2) {
            grown = true;
            let jumbo = path(8972).with_bandwidth(2_500_000);
            sim.ab.set_config(jumbo.clone());
            sim.ba.set_config(jumbo);
        }
        let size = sim.a.endpoint.connection(conn).unwrap().stats().packet_size;
        if sizes.last() != Some(&size) {
            sizes.push(size);
        }
        if tb.is_none() {
            tb = sim.b.accepted.first().map(|&h| Transfer::new(h, Vec::new()));
        }
        let Some(tb) = tb.as_mut() else { return false };
        tb.pump(&mut sim.b.endpoint);
        tb.received.clear();
        tb.eof
    });
    println!("packet sizes over time: {sizes:?}");
    assert_eq!(sizes.first(), Some(&1402));
    assert!(sizes.contains(&1472), "{sizes:?}");
    let last = *sizes.last().unwrap();
    assert!((8972 - 8972 / 64..=8972).contains(&last), "{sizes:?}");
}
