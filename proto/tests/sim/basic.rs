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

fn small_writes(nagle: bool) -> usize {
    let t = utp_proto::TransportConfig { nagle, ..Default::default() };
    let config = EndpointConfig { transport: t.into(), ..EndpointConfig::default() };
    let mut sim = Sim::symmetric(config, lan(), 4);
    let c = sim.connect(b"");
    sim.run_until(
        Duration::from_secs(1),
        |_| {},
        |s| s.a.endpoint.connection(c).is_some_and(|c| c.is_connected()),
    );
    let before = sim.a.sent_datagrams;
    // 100 writes of 10 bytes, 1 ms apart.
    for _ in 0..100 {
        sim.a.endpoint.connection_mut(c).unwrap().write(&[7u8; 10]).unwrap();
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(Duration::from_millis(100));
    sim.a.sent_datagrams - before
}

#[test]
fn nagle_coalesces_small_writes_and_can_be_turned_off() {
    let with = small_writes(true);
    let without = small_writes(false);
    // With Nagle, at most one small packet per round trip (20 ms): ~5 data packets.
    assert!(with <= 10, "{with} datagrams with Nagle");
    // Without, every write leaves at once.
    assert!(without >= 100, "{without} datagrams without Nagle");
}

/// Wireshark's dissector refuses packets advertising more than 0x380000
/// bytes of window: never advertise more, whatever the buffer size.
#[test]
fn advertised_window_is_capped_for_classifiers() {
    let t = utp_proto::TransportConfig { receive_buffer_size: 16 << 20, ..Default::default() };
    let config = EndpointConfig { transport: t.into(), ..EndpointConfig::default() };
    let mut sim = Sim::symmetric(config, lan(), 5);
    let max = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let m = max.clone();
    sim.filter = Some(Box::new(move |_, d| {
        let r = utp_proto::wire::Repr::parse_bytes(d).unwrap();
        m.set(m.get().max(r.wnd_size));
        false
    }));
    exchange(&mut sim, 100_000, 100_000, Duration::from_secs(10));
    assert_eq!(max.get(), 0x38_0000);
}
