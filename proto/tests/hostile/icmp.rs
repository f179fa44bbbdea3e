//! Forged ICMP port unreachables: they end a dial in SYN-SENT (that is
//! their purpose: a dial to a closed port fails at once) and nothing else.
//! A blind attacker must name the dial's destination and quote its SYN's
//! connection id and sequence number; libutp checks the address only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use utp_proto::wire::{PacketType, Repr};
use utp_proto::{ConnectionError, ConnectionHandle, Endpoint, EndpointConfig, Event};

use crate::{deliver, drain};

const PEER: &str = "10.0.0.2:6000";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

/// A dialer that sent its SYN to `PEER`: the endpoint, the dial and the
/// SYN's bytes.
fn dialing(seed: u64, now: Instant) -> (Endpoint, ConnectionHandle, Vec<u8>) {
    let config = EndpointConfig { rng_seed: Some(seed), ..EndpointConfig::default() };
    let mut ep = Endpoint::new(config, now);
    let h = ep.connect(now, addr(PEER), b"").expect("dial");
    let out = drain(&mut ep, now);
    assert_eq!(out.len(), 1);
    (ep, h, out[0].1.clone())
}

fn refused(ep: &Endpoint, h: ConnectionHandle) -> bool {
    ep.connection(h).and_then(|c| c.error()) == Some(ConnectionError::Refused)
}

/// The genuine error (the whole SYN quoted, as Linux quotes it, or its
/// first 18 bytes) refuses the dial at once; one quoting less (RFC 792's
/// minimum covers the UDP header only) cannot be told from a forgery and is
/// ignored.
#[test]
fn port_unreachable_refuses_a_dial_at_once() {
    let now = Instant::now();
    let (mut ep, h, syn) = dialing(1, now);
    assert!(ep.handle_port_unreachable(now, addr(PEER), &syn));
    assert!(refused(&ep, h));
    let mut closed = false;
    while let Some((handle, event)) = ep.poll_event() {
        closed |= handle == h && event == Event::Closed;
    }
    assert!(closed, "the application hears of it");
    assert_eq!(ep.stats().dials_refused_by_icmp, 1);
    // Nothing goes out any more (no SYN retransmission).
    assert!(drain(&mut ep, now + Duration::from_secs(5)).is_empty());

    let (mut ep, h, syn) = dialing(2, now);
    assert!(!ep.handle_port_unreachable(now, addr(PEER), &[]));
    assert!(!ep.handle_port_unreachable(now, addr(PEER), &syn[..17]));
    assert!(!refused(&ep, h));
    assert!(ep.handle_port_unreachable(now, addr(PEER), &syn[..18]));
    assert!(refused(&ep, h));
}

/// What a forged error must get right: every wrong guess is ignored and
/// counted. Prints the guesses a blind attacker needs.
#[test]
fn forged_port_unreachable_needs_the_syn() {
    let now = Instant::now();
    let (mut ep, h, syn) = dialing(3, now);
    let repr = Repr::parse_bytes(&syn).expect("our SYN");
    assert_eq!(repr.packet_type, PacketType::Syn);
    // Another port of the peer, another host.
    assert!(!ep.handle_port_unreachable(now, addr("10.0.0.2:6001"), &syn));
    assert!(!ep.handle_port_unreachable(now, addr("10.0.0.3:6000"), &syn));
    // Every other connection id, then every other sequence number, quoted.
    let mut ids = 0;
    for id in 0..=u16::MAX {
        let mut forged = syn.clone();
        forged[2..4].copy_from_slice(&id.to_be_bytes());
        if id != repr.connection_id && ep.handle_port_unreachable(now, addr(PEER), &forged) {
            ids += 1;
        }
    }
    let mut seqs = 0;
    for seq in 0..=u16::MAX {
        let mut forged = syn.clone();
        forged[16..18].copy_from_slice(&seq.to_be_bytes());
        if seq != repr.seq_nr.0 && ep.handle_port_unreachable(now, addr(PEER), &forged) {
            seqs += 1;
        }
    }
    // A DATA packet's quote; quotes too short to show the SYN.
    let mut data = syn.clone();
    data[0] = 0x01;
    assert!(!ep.handle_port_unreachable(now, addr(PEER), &data));
    for len in 0..18 {
        assert!(!ep.handle_port_unreachable(now, addr(PEER), &syn[..len]));
    }
    assert_eq!((ids, seqs), (0, 0));
    assert!(!refused(&ep, h), "the dial lives on");
    assert_eq!(ep.stats().icmp_ignored, 2 + 2 * 65_535 + 1 + 18);
    assert_eq!(ep.stats().dials_refused_by_icmp, 0);
    println!(
        "forged ICMP port unreachable: ends a dial only with its destination, our port and its \
         SYN's connection id and sequence number quoted: 1 in 2^32 per forgery (libutp: the \
         address alone); established connections ignore them all"
    );
}

/// An established connection ignores port unreachables, whatever they
/// quote; so does a dial whose SYN has not left yet (an early-data dial
/// holding it).
#[test]
fn port_unreachable_spares_established_connections() {
    let now = Instant::now();
    let (mut client, h, syn) = dialing(4, now);
    let config = EndpointConfig { rng_seed: Some(5), ..EndpointConfig::default() };
    let mut server = Endpoint::new(config, now);
    let client_addr = addr("10.0.0.1:5000");
    deliver(&mut server, now, client_addr, &syn).expect("accepted");
    for (_, syn_ack) in drain(&mut server, now) {
        client.handle_datagram(now, addr(PEER), &syn_ack);
    }
    assert!(client.connection(h).unwrap().is_connected());
    assert!(!client.handle_port_unreachable(now, addr(PEER), &syn));
    assert!(!client.handle_port_unreachable(now, addr(PEER), &[]));
    assert!(client.connection(h).unwrap().error().is_none());

    let held = client
        .connect_early(
            now,
            addr("10.0.0.7:1"),
            client.config().transport.clone(),
            Duration::from_secs(1),
        )
        .expect("dial");
    assert!(drain(&mut client, now).iter().all(|(to, _)| *to != addr("10.0.0.7:1")));
    assert!(!client.handle_port_unreachable(now, addr("10.0.0.7:1"), &[]));
    assert!(client.connection(held).unwrap().error().is_none());
}
