//! Handshake: losses, duplicates, timeouts, refusal.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use utp_proto::wire::{PacketType, Repr};
use utp_proto::{ConnectionError, EndpointConfig, Event};

use crate::common::link::LinkConfig;
use crate::common::sim::{exchange, Side, Sim};

fn lan() -> LinkConfig {
    LinkConfig::ideal().with_latency(Duration::from_millis(10))
}

fn kind(d: &[u8]) -> Option<PacketType> {
    Repr::parse_bytes(d).ok().map(|r| r.packet_type)
}

type Log = Rc<RefCell<Vec<(Side, Vec<u8>)>>>;

/// Records every datagram; drops the `nth` (0-based) one of `drop_kind` sent by `drop_side`.
fn drop_nth(sim: &mut Sim, drop_side: Side, drop_kind: PacketType, nth: usize) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    let mut seen = 0;
    sim.filter = Some(Box::new(move |side, d| {
        l.borrow_mut().push((side, d.to_vec()));
        if side == drop_side && kind(d) == Some(drop_kind) {
            seen += 1;
            return seen == nth + 1;
        }
        false
    }));
    log
}

fn connected(sim: &mut Sim, limit: Duration) -> bool {
    sim.run_until(limit, |_| {}, |sim| sim.a.events.iter().any(|&(_, e)| e == Event::Connected))
}

#[test]
fn syn_lost_is_retransmitted() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 10);
    drop_nth(&mut sim, Side::A, PacketType::Syn, 0);
    sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(10)));
    // SYN RTO is one second, then one round trip.
    assert_eq!(sim.elapsed(), Duration::from_millis(1020));
    assert_eq!(sim.b.accepted.len(), 1);
}

#[test]
fn syn_ack_lost_gets_identical_answer() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 11);
    let log = drop_nth(&mut sim, Side::B, PacketType::State, 0);
    sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(10)));
    assert_eq!(sim.b.accepted.len(), 1, "a retransmitted SYN must not open a second connection");
    let syn_acks: Vec<Repr<'_>> = Vec::new();
    let log = log.borrow();
    let mut syn_acks = syn_acks;
    for (side, d) in log.iter() {
        if *side == Side::B {
            let r = Repr::parse_bytes(d).unwrap();
            if r.packet_type == PacketType::State {
                syn_acks.push(r);
            }
        }
    }
    assert!(syn_acks.len() >= 2);
    assert_eq!(syn_acks[0].seq_nr, syn_acks[1].seq_nr);
    assert_eq!(syn_acks[0].ack_nr, syn_acks[1].ack_nr);
    assert_eq!(syn_acks[0].connection_id, syn_acks[1].connection_id);
}

/// A dialer that sends its SYN once and never again (librqbit-utp does):
/// when the SYN-ACK is lost, the acceptor sends it again after the SYN
/// timeout, within the anti-amplification limit (a bare 20-byte SYN earns
/// three times its bytes: the SYN-ACK and two copies).
#[test]
fn syn_ack_lost_dialer_that_never_resends_its_syn() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 12);
    let log: Log = Rc::default();
    let l = log.clone();
    let (mut syns, mut states) = (0, 0);
    sim.filter = Some(Box::new(move |side, d| {
        l.borrow_mut().push((side, d.to_vec()));
        match (side, kind(d)) {
            (Side::A, Some(PacketType::Syn)) => {
                syns += 1;
                syns > 1
            }
            (Side::B, Some(PacketType::State)) => {
                states += 1;
                states == 1
            }
            _ => false,
        }
    }));
    sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(10)));
    // The SYN-ACK went at 10 ms; its copy one second later, then 10 ms.
    assert_eq!(sim.elapsed(), Duration::from_millis(1020));
    assert_eq!(sim.b.accepted.len(), 1);
}

/// Nobody answers the SYN-ACK (a spoofed SYN): it goes three times in
/// all, three times the SYN's bytes, then the half-open connection expires.
#[test]
fn unanswered_syn_ack_stops_at_the_amplification_limit() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 13);
    let log: Log = Rc::default();
    let l = log.clone();
    let mut syns = 0;
    sim.filter = Some(Box::new(move |side, d| {
        l.borrow_mut().push((side, d.to_vec()));
        if side == Side::A {
            syns += usize::from(kind(d) == Some(PacketType::Syn));
            // A's first SYN goes through; nothing else of A's does.
            return syns > 1 || kind(d) != Some(PacketType::Syn);
        }
        false
    }));
    sim.connect(b"");
    sim.run_for(Duration::from_secs(30));
    let sizes = |side| -> Vec<usize> {
        log.borrow().iter().filter(|(s, _)| *s == side).map(|(_, d)| d.len()).collect()
    };
    let (syn, sent) = (sizes(Side::A)[0], sizes(Side::B));
    eprintln!("acceptor's answers to one unconfirmed {syn}-byte SYN: {sent:?}");
    assert_eq!(sent, [syn, syn, syn]);
}

#[test]
fn duplicated_syn_opens_one_connection() {
    let link = lan().with_duplicate(1.0);
    let mut sim = Sim::symmetric(EndpointConfig::default(), link, 12);
    exchange(&mut sim, 50_000, 50_000, Duration::from_secs(30));
    assert_eq!(sim.b.accepted.len(), 1);
}

#[test]
fn handshake_survives_heavy_loss() {
    for seed in 0..20 {
        let link = lan().with_loss(0.5);
        let mut sim = Sim::symmetric(EndpointConfig::default(), link, 100 + seed);
        let c = sim.connect(b"");
        let ok = connected(&mut sim, Duration::from_secs(15));
        let conn = sim.a.endpoint.connection(c).unwrap();
        // Either connected, or failed cleanly with a timeout.
        assert!(ok || conn.error() == Some(ConnectionError::TimedOut), "seed {seed}");
        assert!(sim.b.accepted.len() <= 1, "seed {seed}: one SYN, one connection");
    }
}

#[test]
fn connect_times_out() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 13);
    sim.filter = Some(Box::new(|side, _| side == Side::A));
    let c = sim.connect(b"");
    let done = sim.run_until(
        Duration::from_secs(60),
        |_| {},
        |sim| sim.a.events.iter().any(|&(_, e)| e == Event::Closed),
    );
    assert!(done);
    let conn = sim.a.endpoint.connection(c).unwrap();
    assert_eq!(conn.error(), Some(ConnectionError::TimedOut));
    // The default connect timeout.
    assert_eq!(sim.elapsed(), Duration::from_secs(15));
    assert!(sim.a.sent_datagrams >= 4, "SYN retransmitted with backoff");
    assert!(sim.a.sent_datagrams <= 6, "but not flooded: {}", sim.a.sent_datagrams);
}

#[test]
fn refused_connection() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 14);
    sim.b.auto_accept = false;
    let c = sim.connect(b"");
    let done = sim.run_until(
        Duration::from_secs(5),
        |sim| {
            while let Some(inc) = sim.b.incoming.pop_front() {
                sim.b.endpoint.refuse(inc);
            }
        },
        |sim| sim.a.events.iter().any(|&(_, e)| e == Event::Closed),
    );
    assert!(done);
    assert_eq!(sim.a.endpoint.connection(c).unwrap().error(), Some(ConnectionError::Refused));
    assert_eq!(sim.elapsed(), Duration::from_millis(20));
}

#[test]
fn unknown_connection_gets_reset() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 15);
    let (ta, tb) = exchange(&mut sim, 1000, 1000, Duration::from_secs(5));
    // B forgets the connection entirely once released and drained.
    let now = sim.now;
    sim.b.endpoint.release(now, tb.conn);
    sim.a.endpoint.release(now, ta.conn);
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.b.endpoint.connection_count(), 0);
    assert_eq!(sim.a.endpoint.connection_count(), 0);
}

#[test]
fn not_utp_is_handed_back() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 16);
    let now = sim.now;
    let from = sim.a.addr;
    // A bencoded DHT query.
    let ev = sim.b.endpoint.handle_datagram(
        now,
        from,
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    );
    assert!(matches!(ev, utp_proto::DatagramEvent::NotUtp));
    let ev = sim.b.endpoint.handle_datagram(now, from, b"");
    assert!(matches!(ev, utp_proto::DatagramEvent::NotUtp));
}

#[test]
fn half_open_and_total_limits() {
    let limits =
        EndpointConfig { max_half_open: 5, max_connections: 8, ..EndpointConfig::default() };
    let mut sim = Sim::new(EndpointConfig::default(), limits, lan(), lan(), 17);
    sim.b.auto_accept = false;
    let dials: Vec<_> = (0..10).map(|_| sim.connect(b"")).collect();
    sim.run_for(Duration::from_millis(30));
    // Five wait for a decision; the others were refused at once.
    assert_eq!(sim.b.incoming.len(), 5);
    let refused = dials
        .iter()
        .filter(|&&h| {
            sim.a.endpoint.connection(h).unwrap().error() == Some(ConnectionError::Refused)
        })
        .count();
    assert_eq!(refused, 5);
    // Accept them: total connections are bounded too.
    while let Some(inc) = sim.b.incoming.pop_front() {
        let now = sim.now;
        sim.b.endpoint.accept(now, inc).unwrap();
    }
    let more: Vec<_> = (0..5).map(|_| sim.connect(b"")).collect();
    sim.run_for(Duration::from_millis(30));
    assert_eq!(sim.b.incoming.len() + sim.b.endpoint.connection_count(), 8);
    let refused = more
        .iter()
        .filter(|&&h| {
            sim.a.endpoint.connection(h).unwrap().error() == Some(ConnectionError::Refused)
        })
        .count();
    assert_eq!(refused, 2);
}

#[test]
fn resets_for_unknown_connections_are_rate_limited() {
    let config = EndpointConfig { reset_rate: 10, ..EndpointConfig::default() };
    let mut sim = Sim::new(EndpointConfig::default(), config, lan(), lan(), 18);
    let now = sim.now;
    let from = sim.a.addr;
    // 1000 DATA packets for a connection B never had.
    let mut repr =
        Repr::new(PacketType::Data, 999, utp_proto::wire::SeqNr(5), utp_proto::wire::SeqNr(7));
    repr.payload = b"hello";
    let mut buf = [0u8; 64];
    let n = repr.emit(&mut buf).unwrap();
    for _ in 0..1000 {
        let ev = sim.b.endpoint.handle_datagram(now, from, &buf[..n]);
        assert!(matches!(ev, utp_proto::DatagramEvent::Dropped));
    }
    let mut out = [0u8; 1500];
    let mut resets = 0;
    while let Some(t) = sim.b.endpoint.poll_transmit(now, &mut out) {
        let r = Repr::parse_bytes(&out[..t.size]).unwrap();
        assert_eq!(r.packet_type, PacketType::Reset);
        assert_eq!(r.connection_id, 999);
        assert_eq!(r.ack_nr, utp_proto::wire::SeqNr(5));
        resets += 1;
    }
    assert_eq!(resets, 10, "one second's worth of RESETs");
}

/// Initial data larger than the send buffer's running limit (four windows,
/// at least 64 KiB) is taken whole at the dial and arrives whole.
#[test]
fn large_initial_data_is_taken_whole() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 52);
    let data = crate::common::sim::pattern(300 * 1024, 52);
    let c = sim.connect(&data);
    assert_eq!(sim.a.endpoint.connection(c).unwrap().stats().bytes_written, data.len() as u64);
    let mut got = Vec::new();
    let ok = sim.run(Duration::from_secs(10), |sim| {
        if let Some(&h) = sim.b.accepted.first() {
            let conn = sim.b.endpoint.connection_mut(h).unwrap();
            let mut buf = [0u8; 65536];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        got.len() == data.len()
    });
    assert!(ok, "{} of {}", got.len(), data.len());
    assert_eq!(got, data);
}
