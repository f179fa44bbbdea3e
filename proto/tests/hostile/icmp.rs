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

/// The FIN among the datagrams `out`.
fn our_fin(out: &[(SocketAddr, Vec<u8>)]) -> Vec<u8> {
    out.iter()
        .map(|(_, d)| d.clone())
        .find(|d| Repr::parse_bytes(d).is_ok_and(|r| r.packet_type == PacketType::Fin))
        .expect("our FIN")
}

/// Whether `event` of connection `h` is among the events `ep` holds (all
/// of them are taken).
fn saw(ep: &mut Endpoint, h: ConnectionHandle, event: Event) -> bool {
    let mut seen = false;
    while let Some((handle, e)) = ep.poll_event() {
        seen |= handle == h && e == event;
    }
    seen
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
    assert!(saw(&mut ep, h, Event::Closed), "the application hears of it");
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

/// address).
fn connected(now: Instant) -> (Endpoint, ConnectionHandle, Endpoint, ConnectionHandle) {
    let (mut client, h, syn) = dialing(6, now);
    let config = EndpointConfig { rng_seed: Some(7), ..EndpointConfig::default() };
    let mut server = Endpoint::new(config, now);
    let s = deliver(&mut server, now, addr(CLIENT), &syn).expect("accepted");
    for (_, syn_ack) in drain(&mut server, now) {
        client.handle_datagram(now, addr(PEER), &syn_ack);
    }
    // The client's first packet confirms the handshake.
    client.connection_mut(h).unwrap().write(b"hello").unwrap();
    shuttle(&mut client, &mut server, now);
    (client, h, server, s)
}

const CLIENT: &str = "10.0.0.1:5000";

/// Delivers what each side sends to the other until both are quiet.
fn shuttle(client: &mut Endpoint, server: &mut Endpoint, now: Instant) {
    for _ in 0..10 {
        let to_server = drain(client, now);
        let to_client = drain(server, now);
        if to_server.is_empty() && to_client.is_empty() {
            return;
        }
        for (_, d) in to_server {
            server.handle_datagram(now, addr(CLIENT), &d);
        }
        for (_, d) in to_client {
            client.handle_datagram(now, addr(PEER), &d);
        }
    }
}

/// The peer sent its FIN and has every byte we wrote; our FIN's ACK is
/// lost and the peer's socket is gone: the port unreachable that answers
/// our FIN's retransmission completes the close cleanly (it used to time
/// out after `close_timeout`). Only a quote of that FIN does it; before
/// the peer's FIN, or with data unacknowledged, nothing happens.
#[test]
fn port_unreachable_completes_a_finished_close() {
    let now = Instant::now();
    let (mut client, h, mut server, s) = connected(now);
    // The server finishes first; the client reads its end.
    server.connection_mut(s).unwrap().shutdown();
    shuttle(&mut client, &mut server, now);
    let mut buf = [0u8; 64];
    while client.connection_mut(h).unwrap().read(&mut buf).is_ok_and(|n| n > 0) {}
    // The client's FIN leaves; the server's ACK of it is lost, and the
    // server's program exits.
    client.connection_mut(h).unwrap().shutdown();
    let out = drain(&mut client, now);
    let fin = our_fin(&out);
    let repr = Repr::parse_bytes(&fin).unwrap();
    // Wrong sequence number, wrong id, a SYN's type: ignored.
    let mut forged = fin.clone();
    forged[16..18].copy_from_slice(&repr.seq_nr.0.wrapping_add(1).to_be_bytes());
    assert!(!client.handle_port_unreachable(now, addr(PEER), &forged));
    let mut forged = fin.clone();
    forged[2..4].copy_from_slice(&repr.connection_id.wrapping_add(2).to_be_bytes());
    assert!(!client.handle_port_unreachable(now, addr(PEER), &forged));
    let mut forged = fin.clone();
    forged[0] = 0x41;
    assert!(!client.handle_port_unreachable(now, addr(PEER), &forged));
    assert!(client.connection(h).unwrap().error().is_none());
    assert!(!client.connection(h).unwrap().is_closed());
    // The genuine one.
    assert!(client.handle_port_unreachable(now, addr(PEER), &fin));
    let conn = client.connection(h).unwrap();
    assert!(conn.is_closed() && conn.error().is_none(), "closed cleanly");
    assert!(saw(&mut client, h, Event::Finished), "the application hears that the close completed");
    assert_eq!(client.stats().closes_completed_by_icmp, 1);
}

/// Our FIN is out but the peer has not finished (no FIN from it), or bytes
/// are unacknowledged: a port unreachable, even quoting our FIN, changes
/// nothing (the close times out as before if the peer is really gone).
#[test]
fn port_unreachable_spares_an_unfinished_close() {
    let now = Instant::now();
    let (mut client, h, mut server, _) = connected(now);
    client.connection_mut(h).unwrap().write(&[5u8; 3000]).unwrap();
    client.connection_mut(h).unwrap().shutdown();
    let out = drain(&mut client, now);
    let fin = our_fin(&out);
    // Data and FIN unacknowledged, no FIN from the peer.
    assert!(!client.handle_port_unreachable(now, addr(PEER), &fin));
    // Everything acknowledged, but still no FIN from the peer.
    for (_, d) in out {
        server.handle_datagram(now, addr(CLIENT), &d);
    }
    for (_, d) in drain(&mut server, now) {
        client.handle_datagram(now, addr(PEER), &d);
    }
    assert!(!client.handle_port_unreachable(now, addr(PEER), &fin));
    assert!(client.connection(h).unwrap().error().is_none());
    assert_eq!(client.stats().closes_completed_by_icmp, 0);
}
