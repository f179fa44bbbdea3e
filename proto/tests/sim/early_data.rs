//! Early-data dials (`Endpoint::connect_early`): the SYN waits for the
//! application's first bytes and carries them when SYN data is offered.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use utp_proto::wire::{ExtFlags, PacketType, Repr};
use utp_proto::{ConnectionHandle, EndpointConfig, TransportConfig};

use crate::common::link::LinkConfig;
use crate::common::sim::{one_way, pattern, Side, Sim};

const BOTH: ExtFlags = ExtFlags(ExtFlags::METADATA.0 | ExtFlags::SYN_DATA.0);
const HOLD: Duration = Duration::from_millis(50);

fn config(flags: ExtFlags) -> EndpointConfig {
    let transport = TransportConfig { extensions: flags, ..TransportConfig::default() };
    EndpointConfig { transport: Arc::new(transport), ..EndpointConfig::default() }
}

fn lan() -> LinkConfig {
    LinkConfig::ideal().with_latency(Duration::from_millis(10))
}

/// Every datagram sent: (side, type, payload length, datagram length).
type Log = Rc<RefCell<Vec<(Side, PacketType, usize, usize)>>>;

fn record(sim: &mut Sim) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sim.filter = Some(Box::new(move |side, d| {
        let r = Repr::parse_bytes(d).expect("we send valid packets");
        l.borrow_mut().push((side, r.packet_type, r.payload.len(), d.len()));
        false
    }));
    log
}

fn syns(log: &Log) -> Vec<usize> {
    log.borrow().iter().filter(|e| e.1 == PacketType::Syn).map(|e| e.2).collect()
}

fn dial_early(sim: &mut Sim, hold: Duration) -> ConnectionHandle {
    let (now, b) = (sim.now, sim.b.addr);
    let config = sim.a.endpoint.config().transport.clone();
    sim.a.endpoint.connect_early(now, b, config, hold).expect("dial")
}

/// A sends `data` after the dial and shuts down; returns what B read.
fn finish(sim: &mut Sim, dial: ConnectionHandle, data: Vec<u8>) -> Vec<u8> {
    one_way(sim, dial, data, Duration::from_secs(30))
}

/// Nothing leaves before the application's bytes; a flush (here:
/// `release_syn`, what the runtime calls on flush) sends them on the SYN,
/// and B reads them half a round trip after the SYN left.
#[test]
fn the_syn_waits_for_the_first_bytes_and_carries_them() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 1);
    let log = record(&mut sim);
    let dial = dial_early(&mut sim, HOLD);
    sim.run_for(Duration::from_millis(20));
    assert!(log.borrow().is_empty(), "nothing sent while held: {:?}", log.borrow());
    let c = sim.a.endpoint.connection_mut(dial).unwrap();
    assert!(c.is_syn_held());
    assert_eq!(c.write(b"/multistream/1.0.0\n").unwrap(), 19);
    assert_eq!(c.write(b"/noise\n").unwrap(), 7);
    sim.run_for(Duration::from_millis(5));
    assert!(log.borrow().is_empty(), "writes alone do not release a short SYN");
    sim.a.endpoint.connection_mut(dial).unwrap().release_syn();
    let released = sim.elapsed();
    let got = RefCell::new(Vec::new());
    sim.run_until(
        Duration::from_secs(1),
        |sim| {
            if let Some(&h) = sim.b.accepted.first() {
                let mut buf = [0u8; 64];
                if let Ok(n) = sim.b.endpoint.connection_mut(h).unwrap().read(&mut buf) {
                    got.borrow_mut().extend_from_slice(&buf[..n]);
                }
            }
        },
        |_| got.borrow().len() == 26,
    );
    assert_eq!(got.into_inner(), b"/multistream/1.0.0\n/noise\n");
    let took = sim.elapsed() - released;
    println!("early data: B read 26 bytes {took:?} after the release (one-way delay 10 ms)");
    assert!(took < Duration::from_millis(15), "{took:?}");
    assert_eq!(syns(&log), vec![26], "one SYN, carrying the bytes");
    let syn_len = log.borrow().iter().find(|e| e.1 == PacketType::Syn).map(|e| e.3);
    assert_eq!(syn_len, Some(600), "a SYN with data is padded to 600 bytes");
}

/// The acceptor answers the SYN's data at once with 1000 bytes (a noise
/// handshake's second message is about 230): the padded SYN gives it room
/// for all of it before the initiator confirms, so the answer is complete
/// one round trip after the dial. A bare SYN would allow 3 x 92 bytes.
/// (One packet: with Nagle on, the rest of a longer answer would wait for
/// the first packet's acknowledgement, as in TCP.)
#[test]
fn the_answer_arrives_in_one_round_trip() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 6);
    let log = record(&mut sim);
    let dial = dial_early(&mut sim, HOLD);
    let c = sim.a.endpoint.connection_mut(dial).unwrap();
    c.write(&[7u8; 62]).unwrap();
    c.release_syn();
    let answer = pattern(1000, 6);
    let mut answered = false;
    let got = RefCell::new(Vec::new());
    sim.run_until(
        Duration::from_secs(2),
        |sim| {
            if let Some(&h) = sim.b.accepted.first() {
                let c = sim.b.endpoint.connection_mut(h).unwrap();
                let mut buf = [0u8; 62];
                if !answered && c.read(&mut buf).is_ok_and(|n| n == 62) {
                    assert_eq!(c.write(&answer).unwrap(), 1000);
                    answered = true;
                }
            }
            let mut buf = [0u8; 2000];
            if let Ok(n) = sim.a.endpoint.connection_mut(dial).unwrap().read(&mut buf) {
                got.borrow_mut().extend_from_slice(&buf[..n]);
            }
        },
        |_| got.borrow().len() == 1000,
    );
    assert_eq!(got.into_inner(), answer);
    let rtt = Duration::from_millis(20);
    println!("1000-byte answer complete {:?} after the dial (RTT {rtt:?})", sim.elapsed());
    assert!(sim.elapsed() < rtt + rtt / 2, "{:?}", sim.elapsed());
    let before_confirmation: usize = log
        .borrow()
        .iter()
        .filter(|e| e.0 == Side::B)
        .take_while(|e| e.1 != PacketType::State || e.2 == 0)
        .map(|e| e.3)
        .sum();
    assert!(before_confirmation <= 3 * 600, "{before_confirmation} bytes before confirmation");
}

/// Nothing written: the hold expires and the SYN goes bare; the dial is
/// an ordinary one from then on.
#[test]
fn an_expired_hold_sends_a_bare_syn() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 2);
    let log = record(&mut sim);
    let dial = dial_early(&mut sim, HOLD);
    sim.run_until(
        Duration::from_secs(1),
        |_| {},
        |sim| !sim.a.endpoint.connection(dial).unwrap().is_syn_held(),
    );
    assert_eq!(sim.elapsed(), HOLD, "released at the hold's deadline");
    let data = pattern(10_000, 2);
    assert_eq!(finish(&mut sim, dial, data.clone()), data);
    assert_eq!(syns(&log), vec![0]);
}

/// `max_syn_data` bytes buffered release the SYN at once; the rest of a
/// larger write follows as DATA.
#[test]
fn a_full_syn_leaves_at_once() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 3);
    let log = record(&mut sim);
    let max = sim.a.endpoint.config().transport.max_syn_data;
    let dial = dial_early(&mut sim, HOLD);
    let data = pattern(max + 3000, 3);
    let c = sim.a.endpoint.connection_mut(dial).unwrap();
    assert_eq!(c.write(&data).unwrap(), data.len());
    assert!(!c.is_syn_held());
    assert_eq!(finish(&mut sim, dial, Vec::new()), data);
    assert_eq!(syns(&log), vec![max]);
}

/// A shutdown releases the SYN too; a read does not (a reader beside the
/// writer would send the SYN before the writer's turn).
#[test]
fn shutdown_releases_the_syn_and_a_read_does_not() {
    let mut sim = Sim::symmetric(config(BOTH), lan(), 4);
    let log = record(&mut sim);
    let dial = dial_early(&mut sim, Duration::from_secs(5));
    let c = sim.a.endpoint.connection_mut(dial).unwrap();
    assert!(c.read(&mut [0u8; 8]).is_err(), "nothing to read yet");
    assert!(c.is_syn_held(), "a read leaves the SYN held");
    c.write(b"request").unwrap();
    c.shutdown();
    assert!(!c.is_syn_held());
    assert_eq!(finish(&mut sim, dial, Vec::new()), b"request");
    assert_eq!(syns(&log), vec![7]);
}

/// A peer without the extension (libutp, libtorrent, librqbit-utp, older
/// versions of this library): the SYN offers it and carries the bytes,
/// the peer ignores both, and the bytes follow as DATA: the stream is
/// intact. Without the extension offered the SYN goes bare.
#[test]
fn without_the_extension_the_bytes_follow_the_handshake() {
    for (ours, theirs) in [(BOTH, ExtFlags::NONE), (ExtFlags::NONE, BOTH)] {
        let mut sim = Sim::new(config(ours), config(theirs), lan(), lan(), 5);
        let log = record(&mut sim);
        let dial = dial_early(&mut sim, HOLD);
        let data = pattern(5000, 5);
        let c = sim.a.endpoint.connection_mut(dial).unwrap();
        c.write(&data[..300]).unwrap();
        c.release_syn();
        assert_eq!(finish(&mut sim, dial, data[300..].to_vec()), data, "{ours:?} -> {theirs:?}");
        let expected = if ours == BOTH { 300 } else { 0 };
        assert_eq!(syns(&log)[0], expected, "{ours:?} -> {theirs:?}");
    }
}

/// Loss, reordering and duplication on a lossy link over many seeds: an
/// early dial always delivers its stream intact.
#[test]
fn early_dials_under_loss_many_seeds() {
    let link = LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_loss(0.2)
        .with_reorder(0.05, Duration::from_millis(8))
        .with_duplicate(0.02);
    let mut syn_data_taken = 0;
    for seed in 0..40 {
        let mut sim = Sim::symmetric(config(BOTH), link.clone(), 100 + seed);
        let dial = dial_early(&mut sim, HOLD);
        let data = pattern(20_000, seed);
        let c = sim.a.endpoint.connection_mut(dial).unwrap();
        c.write(&data[..200]).unwrap();
        c.release_syn();
        assert_eq!(finish(&mut sim, dial, data[200..].to_vec()), data, "seed {seed}");
        let negotiated = sim.a.endpoint.connection(dial).map(|c| c.negotiated());
        syn_data_taken += usize::from(negotiated.is_some_and(|n| n.contains(ExtFlags::SYN_DATA)));
    }
    println!("early dials at 20 % loss: 40 of 40 intact, SYN data negotiated on {syn_data_taken}");
}
