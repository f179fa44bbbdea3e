//! This project's two extensions in the simulator: negotiation (the 8-byte
//! `UTPX` record), data on the SYN, and metadata-framed messages (ext 2 on
//! DATA), under loss, reordering and duplication.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use utp_proto::wire::{ExtFlags, Extension, Negotiation, PacketType, Repr, EXT_BITS};
use utp_proto::{
    Connection, ConnectionHandle, Endpoint, EndpointConfig, Event, TransportConfig, WriteError,
};

use crate::common::link::LinkConfig;
use crate::common::sim::{one_way, pattern, Side, Sim, Transfer};

const BOTH: ExtFlags = ExtFlags(ExtFlags::METADATA.0 | ExtFlags::SYN_DATA.0);

fn config(flags: ExtFlags) -> EndpointConfig {
    config_with(flags, |_| {})
}

fn config_with(flags: ExtFlags, f: impl FnOnce(&mut TransportConfig)) -> EndpointConfig {
    let mut transport = TransportConfig { extensions: flags, ..TransportConfig::default() };
    f(&mut transport);
    EndpointConfig { transport: Arc::new(transport), ..EndpointConfig::default() }
}

fn lan() -> LinkConfig {
    LinkConfig::ideal().with_latency(Duration::from_millis(10))
}

/// 5 % loss, 5 % of packets held back 8 ms (reordered), 1 % duplicated.
fn lossy() -> LinkConfig {
    LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_jitter(Duration::from_millis(1))
        .with_bandwidth(12_500_000)
        .with_queue_packets(400)
        .with_loss(0.05)
        .with_reorder(0.05, Duration::from_millis(8))
        .with_duplicate(0.01)
}

type Log = Rc<RefCell<Vec<(Side, Vec<u8>)>>>;

/// Records every datagram sent (before the link's impairments).
fn record(sim: &mut Sim) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sim.filter = Some(Box::new(move |side, d| {
        l.borrow_mut().push((side, d.to_vec()));
        false
    }));
    log
}

/// Records every datagram; drops the first `drop_kind` sent by `drop_side`.
fn record_dropping_first(sim: &mut Sim, drop_side: Side, drop_kind: PacketType) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    let mut dropped = false;
    sim.filter = Some(Box::new(move |side, d| {
        l.borrow_mut().push((side, d.to_vec()));
        let kind = Repr::parse_bytes(d).ok().map(|r| r.packet_type);
        if !dropped && side == drop_side && kind == Some(drop_kind) {
            dropped = true;
            return true;
        }
        false
    }));
    log
}

/// Every ext 2 record in the datagrams `side` sent: (packet type, length).
fn ext2_records(log: &Log, side: Side) -> Vec<(PacketType, usize)> {
    let mut out = Vec::new();
    for (s, d) in log.borrow().iter() {
        if *s != side {
            continue;
        }
        let r = Repr::parse_bytes(d).expect("we send valid packets");
        for e in r.extensions.iter() {
            if e.kind() == EXT_BITS {
                out.push((r.packet_type, e.data_len()));
            }
        }
    }
    out
}

fn negotiation_on(log: &Log, side: Side, kind: PacketType) -> Option<Option<Negotiation>> {
    log.borrow().iter().find_map(|(s, d)| {
        let r = Repr::parse_bytes(d).ok()?;
        (*s == side && r.packet_type == kind).then(|| r.extensions.negotiation())
    })
}

fn connected(sim: &mut Sim, limit: Duration) -> bool {
    sim.run_until(limit, |_| {}, |sim| sim.a.events.iter().any(|&(_, e)| e == Event::Connected))
}

fn conn(ep: &Endpoint, h: ConnectionHandle) -> &Connection {
    ep.connection(h).expect("connection")
}

/// Dials with `syn_data`, then A writes nothing more and shuts down; B
/// reads everything. Returns what B read and A's handle.
fn syn_data_transfer(
    sim: &mut Sim,
    syn_data: &[u8],
    limit: Duration,
) -> (Vec<u8>, ConnectionHandle) {
    let dial = sim.connect(syn_data);
    (one_way(sim, dial, Vec::new(), limit), dial)
}

// -------------------------------------------------------------------
// Negotiation
// -------------------------------------------------------------------

#[test]
fn negotiation_on_both_sides() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 1);
    let log = record(&mut sim);
    let dial = sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(2)));
    let acc = sim.b.accepted[0];
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), BOTH);
    assert_eq!(conn(&sim.b.endpoint, acc).negotiated(), BOTH);
    let syn = negotiation_on(&log, Side::A, PacketType::Syn).unwrap().expect("UTPX on the SYN");
    assert_eq!((syn.version, syn.flags), (1, BOTH));
    let ack = negotiation_on(&log, Side::B, PacketType::State).unwrap().expect("UTPX answer");
    assert_eq!(ack.flags, BOTH);
    // The records are the 8-byte form.
    assert!(ext2_records(&log, Side::A).iter().all(|&(k, n)| k == PacketType::Syn && n == 8));
}

#[test]
fn negotiation_off_sends_no_record() {
    let mut sim = Sim::symmetric(config(ExtFlags::NONE), lan(), 2);
    let log = record(&mut sim);
    let dial = sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(2)));
    let acc = sim.b.accepted[0];
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), ExtFlags::NONE);
    assert_eq!(conn(&sim.b.endpoint, acc).negotiated(), ExtFlags::NONE);
    let c = sim.a.endpoint.connection_mut(dial).unwrap();
    assert_eq!(c.end_message(b"x"), Err(WriteError::MessagesNotNegotiated));
    sim.run_for(Duration::from_millis(100));
    assert!(ext2_records(&log, Side::A).is_empty());
    assert!(ext2_records(&log, Side::B).is_empty());
}

/// The initiator offers, the acceptor knows nothing of it (like libutp or
/// libtorrent): no answer, nothing negotiated, and the only ext 2 record
/// that ever reaches the acceptor is the 8-byte one on the SYN.
#[test]
fn negotiation_offered_but_not_supported() {
    let mut sim = Sim::new(config(BOTH), config(ExtFlags::NONE), lan(), lan(), 3);
    let log = record(&mut sim);
    let data = pattern(50_000, 3);
    let dial = sim.connect(&data[..600]);
    let mut ta = Transfer::new(dial, data[600..].to_vec());
    // Shut down only after trying to end a message.
    ta.shutdown_when_done = false;
    let mut tb: Option<Transfer> = None;
    let mut refused = None;
    sim.run_until(
        Duration::from_secs(10),
        |sim| {
            if refused.is_none() && conn(&sim.a.endpoint, dial).is_connected() {
                let c = sim.a.endpoint.connection_mut(dial).unwrap();
                refused = Some(c.end_message(b"meta"));
                ta.shutdown_when_done = true;
            }
            ta.pump(&mut sim.a.endpoint);
            if tb.is_none() {
                if let Some(&h) = sim.b.accepted.first() {
                    tb = Some(Transfer::new(h, Vec::new()));
                }
            }
            if let Some(tb) = tb.as_mut() {
                tb.pump(&mut sim.b.endpoint);
            }
        },
        |_| false,
    );
    assert_eq!(refused, Some(Err(WriteError::MessagesNotNegotiated)));
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), ExtFlags::NONE);
    assert_eq!(conn(&sim.b.endpoint, sim.b.accepted[0]).negotiated(), ExtFlags::NONE);
    assert_eq!(negotiation_on(&log, Side::B, PacketType::State), Some(None), "no answer");
    let records = ext2_records(&log, Side::A);
    assert!(!records.is_empty());
    assert!(records.iter().all(|&r| r == (PacketType::Syn, 8)), "{records:?}");
    // The SYN payload was ignored and sent again: the stream is intact.
    assert!(tb.expect("accepted").received == data);
}

/// The acceptor supports the extensions, the initiator does not offer them.
#[test]
fn negotiation_supported_but_not_offered() {
    let mut sim = Sim::new(config(ExtFlags::NONE), config(BOTH), lan(), lan(), 4);
    let log = record(&mut sim);
    let dial = sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(2)));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), ExtFlags::NONE);
    assert_eq!(conn(&sim.b.endpoint, sim.b.accepted[0]).negotiated(), ExtFlags::NONE);
    assert!(ext2_records(&log, Side::A).is_empty());
    assert!(ext2_records(&log, Side::B).is_empty(), "no answer to an offer never made");
    let c = sim.b.endpoint.connection_mut(sim.b.accepted[0]).unwrap();
    assert_eq!(c.end_message(b""), Err(WriteError::MessagesNotNegotiated));
}

/// Each side gets the intersection: the acceptor takes messages only.
#[test]
fn negotiation_takes_the_intersection() {
    let mut sim = Sim::new(config(BOTH), config(ExtFlags::METADATA), lan(), lan(), 5);
    let log = record(&mut sim);
    let (got, dial) = syn_data_transfer(&mut sim, b"early bytes", Duration::from_secs(10));
    assert_eq!(got, b"early bytes");
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), ExtFlags::METADATA);
    let ack = negotiation_on(&log, Side::B, PacketType::State).unwrap().expect("answer");
    assert_eq!(ack.flags, ExtFlags::METADATA);
}

// -------------------------------------------------------------------
// SYN data
// -------------------------------------------------------------------

/// The acceptor's application reads the SYN data half a round trip after
/// the dial, before the initiator even knows it is connected.
#[test]
fn syn_data_is_readable_before_the_initiator_is_connected() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 10);
    let dial = sim.connect(b"GET /");
    let mut got = Vec::new();
    let mut initiator_connected_when_read = None;
    sim.run(Duration::from_secs(1), |sim| {
        if let Some(&h) = sim.b.accepted.first() {
            let mut buf = [0u8; 64];
            if let Ok(n) = sim.b.endpoint.connection_mut(h).unwrap().read(&mut buf) {
                if got.is_empty() && n > 0 {
                    initiator_connected_when_read =
                        Some(conn(&sim.a.endpoint, dial).is_connected());
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        !got.is_empty()
    });
    assert_eq!(got, b"GET /");
    assert_eq!(sim.elapsed(), Duration::from_millis(10), "one-way delay, not a round trip");
    assert_eq!(initiator_connected_when_read, Some(false));
}

/// The SYNs A sent: (payload length, SYN data offered).
fn syns_sent(log: &Log) -> Vec<(usize, bool)> {
    log.borrow()
        .iter()
        .filter(|(s, _)| *s == Side::A)
        .filter_map(|(_, d)| Repr::parse_bytes(d).ok())
        .filter(|r| r.packet_type == PacketType::Syn)
        .map(|r| {
            let offers =
                r.extensions.negotiation().is_some_and(|n| n.flags.contains(ExtFlags::SYN_DATA));
            (r.payload.len(), offers)
        })
        .collect()
}

/// The first SYN is lost: the second goes without the data (and without
/// offering SYN data, see the next test), which follows as DATA.
#[test]
fn syn_data_survives_a_lost_syn() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 11);
    let log = record_dropping_first(&mut sim, Side::A, PacketType::Syn);
    let data = pattern(1000, 11);
    let (got, dial) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data, "delivered exactly once");
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), ExtFlags::METADATA);
    assert_eq!(syns_sent(&log), [(1000, true), (0, false)]);
    assert_eq!(sim.b.accepted.len(), 1);
}

/// A peer that drops every SYN carrying a payload, unanswered (as
/// librqbit-utp does): the dial connects with the SYN sent again bare one
/// SYN timeout later, and the bytes arrive once, as DATA.
#[test]
fn syn_data_dropped_by_the_peer_goes_as_data() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 15);
    let log: Log = Rc::default();
    let l = log.clone();
    sim.filter = Some(Box::new(move |side, d| {
        l.borrow_mut().push((side, d.to_vec()));
        Repr::parse_bytes(d)
            .is_ok_and(|r| r.packet_type == PacketType::Syn && !r.payload.is_empty())
    }));
    let data = pattern(700, 15);
    let (got, dial) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data, "delivered exactly once");
    assert_eq!(syns_sent(&log), [(700, true), (0, false)]);
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), ExtFlags::METADATA);
    let connected_at = sim.a.events.iter().position(|&(_, e)| e == Event::Connected);
    assert!(connected_at.is_some());
    eprintln!("SYN data dropped by the peer: connected and delivered in {:?}", sim.elapsed());
}

#[test]
fn syn_data_survives_a_lost_syn_ack() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 12);
    record_dropping_first(&mut sim, Side::B, PacketType::State);
    let data = pattern(1000, 12);
    let (got, dial) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data, "the retransmitted SYN must not deliver the bytes again");
    assert_eq!(conn(&sim.a.endpoint, dial).negotiated(), BOTH);
    assert_eq!(sim.b.accepted.len(), 1);
}

#[test]
fn duplicated_syns_deliver_the_data_once() {
    let link = lan().with_duplicate(1.0);
    let mut sim = Sim::symmetric(config(BOTH), link, 13);
    let data = pattern(900, 13);
    let (got, _) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data);
    assert_eq!(sim.b.accepted.len(), 1, "one SYN, one connection");
}

/// A copy of the SYN delayed past the handshake (and past the first data)
/// is answered or dropped, never delivered again.
#[test]
fn late_duplicate_syn_is_not_delivered_again() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 14);
    let syn: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let s = syn.clone();
    sim.filter = Some(Box::new(move |side, d| {
        let kind = Repr::parse_bytes(d).ok().map(|r| r.packet_type);
        if side == Side::A && kind == Some(PacketType::Syn) && s.borrow().is_none() {
            *s.borrow_mut() = Some(d.to_vec());
        }
        false
    }));
    let dial = sim.connect(b"hello");
    let mut ta = Transfer::new(dial, b" world".to_vec());
    // Established and open while the duplicates arrive.
    ta.shutdown_when_done = false;
    let mut tb: Option<Transfer> = None;
    fn app(sim: &mut Sim, ta: &mut Transfer, tb: &mut Option<Transfer>) {
        ta.pump(&mut sim.a.endpoint);
        if tb.is_none() {
            if let Some(&h) = sim.b.accepted.first() {
                *tb = Some(Transfer::new(h, Vec::new()));
            }
        }
        if let Some(tb) = tb.as_mut() {
            tb.pump(&mut sim.b.endpoint);
        }
    }
    let mut injected = 0;
    // The old SYN arrives again 100 ms and 500 ms in.
    for at in [100, 500] {
        let until = Duration::from_millis(at) - sim.elapsed();
        sim.run_until(until, |sim| app(sim, &mut ta, &mut tb), |_| false);
        let now = sim.now;
        let d = syn.borrow().clone().expect("SYN seen");
        sim.ab.send(now, d);
        injected += 1;
    }
    ta.shutdown_when_done = true;
    sim.run_until(Duration::from_secs(3), |sim| app(sim, &mut ta, &mut tb), |_| false);
    assert_eq!(injected, 2);
    assert_eq!(tb.expect("accepted").received, b"hello world");
    assert_eq!(sim.b.accepted.len(), 1);
}

/// The acceptor does not enable SYN data: the bytes come again as DATA.
#[test]
fn acceptor_refuses_syn_data_by_config() {
    let mut sim = Sim::new(config(BOTH), config(ExtFlags::METADATA), lan(), lan(), 15);
    let log = record(&mut sim);
    let data = pattern(1000, 15);
    let (got, dial) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data);
    assert!(!conn(&sim.a.endpoint, dial).negotiated().contains(ExtFlags::SYN_DATA));
    // The bytes went out twice: on the SYN (ignored) and as DATA.
    let data_payload: usize = log
        .borrow()
        .iter()
        .filter(|(s, _)| *s == Side::A)
        .filter_map(|(_, d)| Repr::parse_bytes(d).ok().map(|r| r.payload.len()))
        .sum();
    assert_eq!(data_payload, 2 * data.len());
}

/// The acceptor caps SYN data smaller than the initiator sends: refused,
/// sent again as DATA.
#[test]
fn acceptor_refuses_syn_data_over_its_cap() {
    let small = config_with(BOTH, |t| t.max_syn_data = 100);
    let mut sim = Sim::new(config(BOTH), small, lan(), lan(), 16);
    let data = pattern(500, 16);
    let (got, dial) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data);
    assert!(!conn(&sim.a.endpoint, dial).negotiated().contains(ExtFlags::SYN_DATA));
    assert!(conn(&sim.a.endpoint, dial).negotiated().contains(ExtFlags::METADATA));
}

/// Initial data larger than `max_syn_data`: the first part rides the SYN,
/// the rest follows as DATA; the SYN fits the packet size with its record.
#[test]
fn syn_data_larger_than_one_packet() {
    let big = config_with(BOTH, |t| t.max_syn_data = 4000);
    let mut sim = Sim::symmetric(big, lan(), 17);
    let log = record(&mut sim);
    let data = pattern(20_000, 17);
    let (got, _) = syn_data_transfer(&mut sim, &data, Duration::from_secs(10));
    assert!(got == data);
    let syn = log.borrow().iter().find(|(s, _)| *s == Side::A).unwrap().1.clone();
    assert_eq!(syn.len(), 1402, "a full packet: header, 8-byte record, payload");
    let r = Repr::parse_bytes(&syn).unwrap();
    assert_eq!(r.payload, &data[..1402 - 20 - 10]);
}

#[test]
fn syn_data_under_loss_many_seeds() {
    // A patient dialer, and an acceptor that waits out its longest SYN
    // interval (16 s): at 20 % loss the four SYN exchanges of a default
    // 15 s dial all fail now and then (seed 6, since the acceptor stopped
    // retransmitting before confirmation), and giving up is not what is
    // tested here.
    let cfg = config_with(BOTH, |t| {
        t.connect_timeout = Duration::from_secs(40);
        t.half_open_timeout = Duration::from_secs(20);
    });
    for seed in 0..20 {
        let mut sim = Sim::symmetric(cfg.clone(), lossy().with_loss(0.2), 200 + seed);
        let data = pattern(3000, seed);
        let (got, _) = syn_data_transfer(&mut sim, &data, Duration::from_secs(60));
        assert!(got == data, "seed {seed}");
        assert_eq!(sim.b.accepted.len(), 1, "seed {seed}");
    }
}

// -------------------------------------------------------------------
// Framed messages
// -------------------------------------------------------------------

type Msg = (Vec<u8>, Vec<u8>);

/// Writes messages (body, then the end with its metadata), as far as the
/// send buffer takes them; then shuts down.
struct MsgSender {
    conn: ConnectionHandle,
    msgs: Vec<Msg>,
    next: usize,
    offset: usize,
    blocked_ends: usize,
    shut: bool,
}

impl MsgSender {
    fn new(conn: ConnectionHandle, msgs: Vec<Msg>) -> Self {
        MsgSender { conn, msgs, next: 0, offset: 0, blocked_ends: 0, shut: false }
    }

    fn pump(&mut self, ep: &mut Endpoint) {
        let Some(c) = ep.connection_mut(self.conn) else { return };
        if !c.is_connected() {
            return;
        }
        while let Some((meta, body)) = self.msgs.get(self.next) {
            while self.offset < body.len() {
                match c.write(&body[self.offset..]) {
                    Ok(n) => self.offset += n,
                    Err(_) => return,
                }
            }
            match c.end_message(meta) {
                Ok(()) => {
                    self.next += 1;
                    self.offset = 0;
                }
                Err(WriteError::Blocked) => {
                    self.blocked_ends += 1;
                    return;
                }
                Err(e) => panic!("end_message: {e}"),
            }
        }
        if !self.shut {
            c.shutdown();
            self.shut = true;
        }
    }
}

/// Reads whole messages with the engine's boundary API.
#[derive(Default)]
struct MsgReceiver {
    conn: Option<ConnectionHandle>,
    body: Vec<u8>,
    msgs: Vec<Msg>,
    eof: bool,
    /// Stop reading (to test backpressure).
    paused: bool,
}

impl MsgReceiver {
    fn pump(&mut self, ep: &mut Endpoint) {
        let Some(h) = self.conn else { return };
        let Some(c) = ep.connection_mut(h) else { return };
        let mut buf = [0u8; 16384];
        while !self.paused {
            let want = match c.next_message_end() {
                Some((0, _)) => {
                    let meta = c.take_message_end().expect("an end at the read position");
                    self.msgs.push((meta.into_vec(), std::mem::take(&mut self.body)));
                    continue;
                }
                Some((k, _)) => k.min(buf.len()),
                None => buf.len(),
            };
            match c.read(&mut buf[..want]) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => self.body.extend_from_slice(&buf[..n]),
                Err(_) => return,
            }
        }
    }
}

/// A sends `msgs` to B and B sends `back` to A at once; both are checked
/// message by message, metadata and body. Returns A's statistics.
fn exchange_messages(
    sim: &mut Sim,
    msgs: Vec<Msg>,
    back: Vec<Msg>,
    limit: Duration,
) -> utp_proto::Stats {
    let dial = sim.connect(b"");
    let mut sa = MsgSender::new(dial, msgs.clone());
    let mut ra = MsgReceiver { conn: Some(dial), ..MsgReceiver::default() };
    let mut sb: Option<MsgSender> = None;
    let mut rb = MsgReceiver::default();
    let ok = sim.run(limit, |sim| {
        sa.pump(&mut sim.a.endpoint);
        ra.pump(&mut sim.a.endpoint);
        if sb.is_none() {
            if let Some(&h) = sim.b.accepted.first() {
                sb = Some(MsgSender::new(h, back.clone()));
                rb.conn = Some(h);
            }
        }
        if let Some(sb) = sb.as_mut() {
            sb.pump(&mut sim.b.endpoint);
        }
        rb.pump(&mut sim.b.endpoint);
        ra.eof
            && rb.eof
            && conn(&sim.a.endpoint, dial).is_finished()
            && sim.b.accepted.first().is_some_and(|&h| conn(&sim.b.endpoint, h).is_finished())
    });
    assert!(
        ok,
        "not done in {limit:?}: B got {}/{} messages (eof {}), A got {}/{} (eof {})",
        rb.msgs.len(),
        msgs.len(),
        rb.eof,
        ra.msgs.len(),
        back.len(),
        ra.eof
    );
    assert_messages(&rb, &msgs, "A -> B");
    assert_messages(&ra, &back, "B -> A");
    conn(&sim.a.endpoint, dial).stats()
}

fn assert_messages(r: &MsgReceiver, sent: &[Msg], what: &str) {
    assert!(r.body.is_empty(), "{what}: {} bytes after the last message end", r.body.len());
    assert_eq!(r.msgs.len(), sent.len(), "{what}: message count");
    for (i, (got, want)) in r.msgs.iter().zip(sent).enumerate() {
        assert!(got.0 == want.0, "{what}: metadata of message {i} differs");
        assert!(
            got.1 == want.1,
            "{what}: body of message {i} differs ({} vs {} bytes)",
            got.1.len(),
            want.1.len()
        );
    }
}

/// Metadata of `len` bytes derived from `i`.
fn meta(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 7 + j) as u8).collect()
}

/// The largest body that fits one packet with `meta_len` bytes of metadata.
fn one_packet_body(meta_len: usize) -> usize {
    1402 - 20 - 2 - meta_len
}

#[test]
fn messages_of_every_edge_size_under_loss() {
    let mut msgs = Vec::new();
    let sizes = [
        0,
        1,
        0,
        one_packet_body(0),
        one_packet_body(4),
        one_packet_body(4) + 1,
        one_packet_body(253),
        1402 - 20,
        1402 - 20 + 1,
        2 * (1402 - 20),
        100_000,
        0,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let meta_len = [0, 1, 4, 253][i % 4];
        msgs.push((meta(i, meta_len), pattern(size, i as u64)));
    }
    // Metadata of every length 0..=253 on tiny bodies.
    for len in 0..=253 {
        msgs.push((meta(len, len), pattern(len % 3, len as u64)));
    }
    let back: Vec<Msg> = msgs.iter().rev().cloned().collect();
    let mut sim = Sim::symmetric(config(BOTH), lossy(), 30);
    let log = record(&mut sim);
    let stats = exchange_messages(&mut sim, msgs.clone(), back, Duration::from_secs(60));
    assert!(stats.retransmits > 0, "lossy enough: {stats:?}");
    assert_packets_never_mix_messages(&log, Side::A, &msgs);
}

/// On the wire: taking each DATA packet once (by sequence number), the
/// payload since the last packet with a record is exactly the body of the
/// message the record ends, and the record is its metadata.
fn assert_packets_never_mix_messages(log: &Log, side: Side, msgs: &[Msg]) {
    let mut syn_seq = None;
    let mut packets = std::collections::BTreeMap::new();
    for (s, d) in log.borrow().iter() {
        if *s != side {
            continue;
        }
        let r = Repr::parse_bytes(d).unwrap();
        match r.packet_type {
            PacketType::Syn => syn_seq = Some(r.seq_nr),
            PacketType::Data => {
                let key = r.seq_nr.0.wrapping_sub(syn_seq.expect("SYN first").0);
                let meta = r.extensions.iter().find_map(|e| match e {
                    Extension::Metadata(m) => Some(m.to_vec()),
                    _ => None,
                });
                let entry = (r.payload.to_vec(), meta);
                let prev = packets.insert(key, entry.clone());
                assert!(prev.is_none_or(|p| p == entry), "a retransmission differs");
            }
            _ => {}
        }
    }
    let mut body = Vec::new();
    let mut i = 0;
    for (payload, meta) in packets.into_values() {
        body.extend_from_slice(&payload);
        if let Some(meta) = meta {
            assert!(i < msgs.len(), "more message ends than messages");
            assert!(meta == msgs[i].0, "record {i} is not message {i}'s metadata");
            assert!(body == msgs[i].1, "packets before record {i} are not exactly its body");
            body.clear();
            i += 1;
        }
    }
    assert_eq!(i, msgs.len());
    assert!(body.is_empty());
}

#[test]
fn ten_mib_message_under_loss() {
    let msgs = vec![(b"big".to_vec(), pattern(10 << 20, 40)), (b"after".to_vec(), b"x".to_vec())];
    let back = vec![(b"ack".to_vec(), Vec::new())];
    let mut sim = Sim::symmetric(config(BOTH), lossy(), 40);
    let stats = exchange_messages(&mut sim, msgs, back, Duration::from_secs(300));
    assert!(stats.retransmits > 100, "lossy enough: {stats:?}");
}

#[test]
fn ten_thousand_small_messages_under_loss() {
    let msgs: Vec<Msg> = (0..10_000).map(|i| (meta(i, i % 9), pattern(i % 50, i as u64))).collect();
    let back: Vec<Msg> = (0..1000).map(|i| (meta(i, 2), pattern(i % 300, i as u64))).collect();
    let mut sim = Sim::symmetric(config(BOTH), lossy(), 50);
    let log = record(&mut sim);
    let stats = exchange_messages(&mut sim, msgs.clone(), back, Duration::from_secs(120));
    assert!(stats.retransmits > 10, "lossy enough: {stats:?}");
    assert_packets_never_mix_messages(&log, Side::A, &msgs);
}

#[test]
fn metadata_longer_than_253_bytes_is_refused() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 60);
    let dial = sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(2)));
    let c = sim.a.endpoint.connection_mut(dial).unwrap();
    assert_eq!(c.end_message(&[0; 254]), Err(WriteError::MetadataTooLong(254)));
    assert_eq!(c.end_message(&[0; 253]), Ok(()));
}

/// Plain reads and message reads one after the other: plain bytes first
/// (read with `read`, stopping exactly where the messages start), then
/// messages, then plain bytes again after the last message end.
#[test]
fn plain_bytes_then_messages_then_plain_bytes() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 70);
    let dial = sim.connect(b"HELLO");
    assert!(connected(&mut sim, Duration::from_secs(2)));
    {
        let c = sim.a.endpoint.connection_mut(dial).unwrap();
        c.end_message(b"empty first").unwrap();
        c.write(b"body").unwrap();
        c.end_message(b"second").unwrap();
        c.write(b"tail bytes").unwrap();
        c.shutdown();
    }
    sim.run_for(Duration::from_millis(100));
    let h = sim.b.accepted[0];
    let c = sim.b.endpoint.connection_mut(h).unwrap();
    let mut buf = [0u8; 64];
    // Exactly the plain prefix: the empty message right after it survives.
    assert_eq!(c.read(&mut buf[..5]), Ok(5));
    assert_eq!(&buf[..5], b"HELLO");
    assert_eq!(c.next_message_end(), Some((0, &b"empty first"[..])));
    assert_eq!(c.take_message_end().as_deref(), Some(&b"empty first"[..]));
    assert_eq!(c.next_message_end(), Some((4, &b"second"[..])));
    assert_eq!(c.read(&mut buf[..4]), Ok(4));
    assert_eq!(c.take_message_end().as_deref(), Some(&b"second"[..]));
    assert_eq!(c.next_message_end(), None);
    assert_eq!(c.read(&mut buf), Ok(10));
    assert_eq!(&buf[..10], b"tail bytes");
    assert_eq!(c.read(&mut buf), Ok(0));
}

/// A plain read across message ends discards them (bytes stay exact).
#[test]
fn plain_read_across_message_ends() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 71);
    let dial = sim.connect(b"");
    assert!(connected(&mut sim, Duration::from_secs(2)));
    {
        let c = sim.a.endpoint.connection_mut(dial).unwrap();
        for part in [&b"ab"[..], b"", b"cd"] {
            c.write(part).unwrap();
            c.end_message(b"m").unwrap();
        }
        c.write(b"e").unwrap();
        c.shutdown();
    }
    sim.run_for(Duration::from_millis(100));
    let c = sim.b.endpoint.connection_mut(sim.b.accepted[0]).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(c.read(&mut buf[..3]), Ok(3));
    assert_eq!(c.next_message_end(), Some((1, &b"m"[..])), "the ends at offset 2 are gone");
    assert_eq!(c.read(&mut buf[3..]), Ok(2));
    assert_eq!(&buf[..5], b"abcde");
    assert_eq!(c.next_message_end(), None);
}

/// Empty messages take room: a sender of empty messages is held back by
/// its send buffer and the receiver's window like a sender of bytes, and
/// a receiver that stops reading holds a bounded number of them.
#[test]
fn empty_messages_are_flow_controlled() {
    const BUF: usize = 16 * 1024;
    let small = config_with(BOTH, |t| {
        t.send_buffer_size = BUF;
        t.receive_buffer_size = BUF;
    });
    let mut sim = Sim::symmetric(small, lan(), 80);
    let log = record(&mut sim);
    let msgs: Vec<Msg> = (0..20_000).map(|i| (meta(i, i % 3), Vec::new())).collect();
    let dial = sim.connect(b"");
    let mut sa = MsgSender::new(dial, msgs.clone());
    let mut rb = MsgReceiver { paused: true, ..MsgReceiver::default() };
    // B does not read for two seconds.
    sim.run_until(
        Duration::from_secs(2),
        |sim| {
            sa.pump(&mut sim.a.endpoint);
            rb.conn = sim.b.accepted.first().copied();
        },
        |_| false,
    );
    let h = rb.conn.expect("accepted");
    assert_eq!(conn(&sim.b.endpoint, h).stats().recv_window, 0, "the ends closed B's window");
    assert!(sa.blocked_ends > 0, "the sender was held back");
    let mut seqs = std::collections::HashSet::new();
    for (s, d) in log.borrow().iter() {
        let r = Repr::parse_bytes(d).unwrap();
        if *s == Side::A && r.packet_type == PacketType::Data {
            seqs.insert(r.seq_nr);
        }
    }
    // Each end counts for 32 + 0..=2 bytes: B's 16 KiB hold about 500.
    assert!(seqs.len() <= BUF / 32 + 1500 / 32 + 1, "{} message ends sent", seqs.len());
    assert!(seqs.len() >= BUF / 34 - 1, "{} message ends sent", seqs.len());
    rb.paused = false;
    let ok = sim.run(Duration::from_secs(120), |sim| {
        sa.pump(&mut sim.a.endpoint);
        rb.pump(&mut sim.b.endpoint);
        rb.eof
    });
    assert!(ok, "B got {}/{} messages", rb.msgs.len(), msgs.len());
    assert_messages(&rb, &msgs, "A -> B");
}
