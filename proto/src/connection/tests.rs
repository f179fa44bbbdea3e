//! Per-state unit tests of one connection, without an endpoint: packets in
//! (`recv`), packets out (`send`), in the manner of smoltcp's TCP tests.
//! Templates keep each packet to its type and numbers.
//!
//! The dialer receives on id 100 (sends on 101) and its SYN is sequence
//! 1000. The peer's SYN-ACK carries 5000, which is also the sequence number
//! of its first DATA (libutp's convention): until then we acknowledge 4999.
//! A STATE carries the sequence number of the sender's next packet.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::TransportConfig;
use crate::wire::{PacketType, Repr, SeqNr};

use super::{Connection, ConnectionError, Event, PacketVerdict, State};

const PEER: &str = "10.0.0.2:6000";
const RECV_ID: u16 = 100;
const OUR_SEQ: u16 = 1000;
const PEER_SEQ: u16 = 5000;

fn peer() -> SocketAddr {
    PEER.parse().expect("address")
}

/// A packet from the peer: type, sequence and ack numbers, payload.
fn packet(kind: PacketType, id: u16, seq: u16, ack: u16, payload: &[u8]) -> Vec<u8> {
    let mut repr = Repr::new(kind, id, SeqNr(seq), SeqNr(ack));
    repr.wnd_size = 1 << 20;
    repr.payload = payload;
    repr.to_vec().expect("emit")
}

/// Hands the connection a packet from the peer.
fn recv(conn: &mut Connection, now: Instant, bytes: &[u8]) -> PacketVerdict {
    let repr = Repr::parse_bytes(bytes).expect("parse");
    conn.handle_packet(now, &repr, bytes.len())
}

/// What the connection sends now: (type, connection id, seq, ack, payload
/// length), one entry per datagram.
fn send(conn: &mut Connection, now: Instant) -> Vec<(PacketType, u16, u16, u16, usize)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Some(n) = conn.poll_transmit(now, &mut buf) {
        let r = Repr::parse_bytes(&buf[..n]).expect("our packet parses");
        out.push((r.packet_type, r.connection_id, r.seq_nr.0, r.ack_nr.0, r.payload.len()));
    }
    out
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn config() -> Arc<TransportConfig> {
    // No pacing or Nagle: every packet leaves at once.
    Arc::new(TransportConfig { pacing: false, nagle: false, ..TransportConfig::default() })
}

/// A dial in SYN-SENT whose SYN went out.
fn syn_sent(now: Instant) -> Connection {
    let mut c = Connection::new_outgoing(config(), now, now, peer(), RECV_ID, SeqNr(OUR_SEQ), b"");
    assert_eq!(send(&mut c, now), vec![(PacketType::Syn, RECV_ID, OUR_SEQ, 0, 0)]);
    c
}

/// An established dialer (SYN acknowledged by the peer's STATE).
fn established(now: Instant) -> Connection {
    let mut c = syn_sent(now);
    let syn_ack = packet(PacketType::State, RECV_ID, PEER_SEQ, OUR_SEQ, b"");
    assert_eq!(recv(&mut c, now, &syn_ack), PacketVerdict::Accepted);
    assert!(c.is_connected());
    events(&mut c);
    c
}

/// The id the dialer sends on.
const SEND_ID: u16 = RECV_ID + 1;

// --- SYN-SENT ---------------------------------------------------------

#[test]
fn syn_sent_takes_only_an_ack_of_its_syn() {
    let now = Instant::now();
    let mut c = syn_sent(now);
    // An ack of anything else is dropped unseen.
    let wrong = packet(PacketType::State, RECV_ID, PEER_SEQ, OUR_SEQ + 1, b"");
    assert_eq!(recv(&mut c, now, &wrong), PacketVerdict::BadAck);
    assert_eq!(c.state, State::SynSent);
    let right = packet(PacketType::State, RECV_ID, PEER_SEQ, OUR_SEQ, b"");
    assert_eq!(recv(&mut c, now, &right), PacketVerdict::Accepted);
    assert_eq!(c.state, State::Established);
    assert!(events(&mut c).contains(&Event::Connected));
}

#[test]
fn syn_sent_reset_is_a_refusal() {
    let now = Instant::now();
    let mut c = syn_sent(now);
    recv(&mut c, now, &packet(PacketType::Reset, RECV_ID, PEER_SEQ, OUR_SEQ, b""));
    assert_eq!(c.error(), Some(ConnectionError::Refused));
    assert!(c.is_closed());
    assert!(send(&mut c, now).is_empty(), "nothing answers a refusal");
}

#[test]
fn syn_sent_retransmits_then_times_out() {
    let now = Instant::now();
    let mut c = syn_sent(now);
    let cfg = config();
    let t = now + cfg.syn_rto;
    c.handle_timeout(t);
    assert_eq!(send(&mut c, t), vec![(PacketType::Syn, RECV_ID, OUR_SEQ, 0, 0)], "same SYN");
    let end = now + cfg.connect_timeout;
    c.handle_timeout(end);
    assert_eq!(c.error(), Some(ConnectionError::TimedOut));
}

// --- SYN-RECV ---------------------------------------------------------

/// An accepted connection: answers with a SYN-ACK and waits for the
/// initiator's first packet.
#[test]
fn syn_recv_answers_and_waits_for_confirmation() {
    let now = Instant::now();
    let syn = packet(PacketType::Syn, 40, 7000, 0, b"");
    let repr = Repr::parse_bytes(&syn).unwrap();
    let mut c = Connection::new_incoming(config(), now, now, peer(), &repr, syn.len(), SeqNr(300));
    assert_eq!(c.state, State::SynRecv);
    assert_eq!(send(&mut c, now), vec![(PacketType::State, 40, 300, 7000, 0)]);
    // The SYN again: the same SYN-ACK again.
    recv(&mut c, now, &syn);
    assert_eq!(send(&mut c, now), vec![(PacketType::State, 40, 300, 7000, 0)]);
    assert_eq!(c.state, State::SynRecv);
    // The initiator's first DATA (on id 41, acking the SYN-ACK) confirms.
    // (It acknowledges 299: the SYN-ACK's 300 is its first DATA's number.)
    recv(&mut c, now, &packet(PacketType::Data, 41, 7001, 299, b"hi"));
    assert_eq!(c.state, State::Established);
    assert_eq!(c.readable_bytes(), 2);
    assert_eq!(send(&mut c, now), vec![(PacketType::State, 40, 300, 7001, 0)], "its ACK");
}

// --- ESTABLISHED ------------------------------------------------------

#[test]
fn established_sends_data_and_takes_its_ack() {
    let now = Instant::now();
    let mut c = established(now);
    assert_eq!(c.write(b"hello").unwrap(), 5);
    assert_eq!(send(&mut c, now), vec![(PacketType::Data, SEND_ID, OUR_SEQ + 1, PEER_SEQ - 1, 5)]);
    assert!(c.stats().bytes_in_flight > 0);
    recv(&mut c, now, &packet(PacketType::State, RECV_ID, PEER_SEQ, OUR_SEQ + 1, b""));
    assert_eq!(c.stats().bytes_in_flight, 0);
}

#[test]
fn established_acks_data_and_holds_out_of_order() {
    let now = Instant::now();
    let mut c = established(now);
    let ack = |upto: u16| vec![(PacketType::State, SEND_ID, OUR_SEQ + 1, upto, 0)];
    recv(&mut c, now, &packet(PacketType::Data, RECV_ID, PEER_SEQ, OUR_SEQ, b"one"));
    assert_eq!(send(&mut c, now), ack(PEER_SEQ));
    // A gap: the next-but-one is held, the ACK stays before the gap.
    recv(&mut c, now, &packet(PacketType::Data, RECV_ID, PEER_SEQ + 2, OUR_SEQ, b"three"));
    assert_eq!(send(&mut c, now), ack(PEER_SEQ));
    assert_eq!(c.readable_bytes(), 3);
    // The gap fills: both become readable in order.
    recv(&mut c, now, &packet(PacketType::Data, RECV_ID, PEER_SEQ + 1, OUR_SEQ, b"two"));
    assert_eq!(send(&mut c, now), ack(PEER_SEQ + 2));
    let mut buf = [0u8; 32];
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"onetwothree");
}

#[test]
fn established_reset_ends_with_an_error() {
    let now = Instant::now();
    let mut c = established(now);
    recv(&mut c, now, &packet(PacketType::Reset, RECV_ID, PEER_SEQ, OUR_SEQ, b""));
    assert_eq!(c.error(), Some(ConnectionError::Reset));
    assert!(c.is_closed());
}

// --- closing, TIME-WAIT, CLOSED ----------------------------------------

/// Our FIN follows our data; the peer acks it and sends its own: both
/// sides finished, the connection lingers in TIME-WAIT (to ack a
/// retransmitted FIN), then closes cleanly and answers nothing more.
#[test]
fn close_goes_through_time_wait_to_closed() {
    let now = Instant::now();
    let mut c = established(now);
    c.write(b"bye").unwrap();
    c.shutdown();
    assert_eq!(
        send(&mut c, now),
        vec![
            (PacketType::Data, SEND_ID, OUR_SEQ + 1, PEER_SEQ - 1, 3),
            (PacketType::Fin, SEND_ID, OUR_SEQ + 2, PEER_SEQ - 1, 0),
        ]
    );
    recv(&mut c, now, &packet(PacketType::State, RECV_ID, PEER_SEQ, OUR_SEQ + 2, b""));
    assert!(events(&mut c).contains(&Event::Finished));
    recv(&mut c, now, &packet(PacketType::Fin, RECV_ID, PEER_SEQ, OUR_SEQ + 2, b""));
    assert_eq!(c.state, State::TimeWait);
    let acks = send(&mut c, now);
    assert!(
        !acks.is_empty()
            && acks.iter().all(|&(t, _, _, ack, _)| t == PacketType::State && ack == PEER_SEQ),
        "{acks:?}"
    );
    // A retransmitted FIN is acknowledged again.
    recv(&mut c, now, &packet(PacketType::Fin, RECV_ID, PEER_SEQ, OUR_SEQ + 2, b""));
    assert!(!send(&mut c, now).is_empty());
    let later = now + Duration::from_secs(60);
    c.handle_timeout(later);
    assert_eq!(c.state, State::Closed);
    assert_eq!(c.error(), None);
    let late = packet(PacketType::Data, RECV_ID, PEER_SEQ + 1, OUR_SEQ + 2, b"x");
    assert_eq!(recv(&mut c, later, &late), PacketVerdict::Closed);
    assert!(send(&mut c, later).is_empty());
}
