//! Bounds and timers an attacker (or a broken peer) could otherwise stretch
//! without end: packets in flight, released connections, timers refreshed by
//! forged packets, sequence-number wrap, the timer heap, the path-MTU memory.

use std::time::Duration;

use utp_proto::wire::{PacketType, Repr};
use utp_proto::{ConnectionError, ConnectionHandle, Endpoint, EndpointConfig, TransportConfig};

use crate::common::link::LinkConfig;
use crate::common::sim::{exchange, pattern, Side, Sim, Transfer};
use crate::packet;

fn lan() -> LinkConfig {
    LinkConfig::ideal().with_latency(Duration::from_millis(10))
}

/// A connection that exchanged a little data each way and stays open (no
/// FIN): returns (A's handle, B's handle).
fn open_idle(sim: &mut Sim) -> (ConnectionHandle, ConnectionHandle) {
    let ha = sim.connect(b"");
    let mut hb = None;
    let ok = sim.run(Duration::from_secs(5), |sim| {
        if hb.is_none() {
            hb = sim.b.accepted.first().copied();
            if let Some(h) = hb {
                sim.b.endpoint.connection_mut(h).unwrap().write(b"hello").unwrap();
            }
        }
        let a = sim.a.endpoint.connection_mut(ha).unwrap();
        if a.is_connected() && a.stats().bytes_written == 0 {
            a.write(b"world").unwrap();
        }
        hb.is_some_and(|h| sim.b.endpoint.connection(h).unwrap().readable_bytes() == 5)
            && a.readable_bytes() == 5
    });
    assert!(ok, "no connection");
    sim.run_for(Duration::from_millis(100));
    (ha, hb.unwrap())
}

fn config(f: impl FnOnce(&mut TransportConfig)) -> EndpointConfig {
    let mut t = TransportConfig::default();
    f(&mut t);
    EndpointConfig { transport: t.into(), ..EndpointConfig::default() }
}

/// With Nagle off, 1-byte writes become 1-byte packets: no more than
/// `max_packets_in_flight` (1024, libutp's limit) are ever outstanding,
/// however large the windows (before: more than 32,768, and sequence
/// numbers aliased).
#[test]
fn packets_in_flight_are_capped() {
    let cfg = config(|t| {
        t.nagle = false;
        t.pacing = false;
        t.congestion =
            std::sync::Arc::new(utp_proto::congestion::FixedWindowConfig { window: 64 << 20 });
    });
    let mut sim = Sim::symmetric(cfg, lan(), 21);
    let h = sim.connect(b"");
    sim.run_for(Duration::from_millis(100));
    // From now on the peer's acknowledgements are lost.
    let sent = std::rc::Rc::new(std::cell::RefCell::new(std::collections::HashSet::new()));
    let s = sent.clone();
    sim.filter = Some(Box::new(move |side, d| {
        let r = Repr::parse_bytes(d).unwrap();
        if side == Side::A && r.packet_type == PacketType::Data {
            s.borrow_mut().insert(r.seq_nr.0);
        }
        side == Side::B
    }));
    // One byte a step: every write becomes a packet of its own.
    let mut written = 0;
    sim.run_until(
        Duration::from_millis(200),
        |sim| {
            let c = sim.a.endpoint.connection_mut(h).unwrap();
            if written < 50_000 && c.write(b"x").is_ok() {
                written += 1;
            }
        },
        |_| false,
    );
    let outstanding = sent.borrow().len();
    println!("1-byte writes, Nagle off, no ACKs: {outstanding} packets outstanding (cap 1024)");
    assert!(written > 1024, "{written}");
    assert_eq!(outstanding, 1024);
}

/// 200,000 loss-free packets (past six wraps of the 16-bit sequence
/// space), then one loss: it is repaired by fast retransmit, not by a
/// timeout (before: markers left behind compared as ahead after ~32,769
/// packets and the loss waited for the RTO, with the window cut to 4
/// packets).
#[test]
fn a_loss_after_200_000_clean_packets_is_fast_retransmitted() {
    let cfg = config(|t| {
        t.initial_packet_size_v4 = 150;
        t.min_packet_size = 150;
        t.mtu_probing = false;
    });
    let link = LinkConfig::ideal().with_latency(Duration::from_millis(1));
    let mut sim = Sim::symmetric(cfg, link, 22);
    let packets = 200_000usize;
    let drop_at = packets as u64;
    let mut seen = 0u64;
    sim.filter = Some(Box::new(move |side, d| {
        if side == Side::A && Repr::parse_bytes(d).is_ok_and(|r| r.packet_type == PacketType::Data)
        {
            seen += 1;
            return seen == drop_at + 1;
        }
        false
    }));
    let len = (packets + 100) * 130;
    let h = sim.connect(b"");
    let mut ta = Transfer::new(h, pattern(len, 3));
    let mut tb: Option<Transfer> = None;
    let mut heap_max = 0;
    let done = sim.run(Duration::from_secs(600), |sim| {
        ta.pump(&mut sim.a.endpoint);
        if tb.is_none() {
            tb = sim.b.accepted.first().map(|&h| Transfer::new(h, Vec::new()));
        }
        if let Some(tb) = tb.as_mut() {
            tb.pump(&mut sim.b.endpoint);
        }
        heap_max = heap_max.max(sim.a.endpoint.timer_heap_len());
        tb.as_ref().is_some_and(|t| t.eof)
    });
    assert!(done, "transfer did not finish");
    assert!(tb.unwrap().received == ta.to_send);
    let stats = sim.a.endpoint.connection(h).unwrap().stats();
    println!(
        "{} packets, one lost after {packets}: fast retransmits {}, timeouts {}; timer heap at \
         most {heap_max} entries",
        stats.packets_sent, stats.fast_retransmits, stats.timeouts
    );
    assert!(stats.packets_sent > packets as u64);
    assert_eq!(stats.timeouts, 0, "repaired by a timeout");
    assert!(stats.fast_retransmits >= 1);
    // The timer heap stays bounded (4 entries a connection and 64).
    assert!(heap_max <= 4 + 64, "{heap_max}");
}

/// A connection the application let go of whose peer never sends a FIN,
/// and keeps sending something every 119 s (just inside the idle timeout):
/// it is reset `close_timeout` after our FIN was acknowledged and freed
/// (before: held forever, with its receive buffer).
#[test]
fn a_released_connection_is_freed_whatever_the_peer_does() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 23);
    let h = sim.connect(b"");
    sim.run_for(Duration::from_millis(100));
    let hb = sim.b.accepted[0];
    let now = sim.now;
    sim.b.endpoint.release(now, hb);
    let released_at = sim.elapsed();
    let mut freed_at = None;
    for _ in 0..10 {
        let c = sim.a.endpoint.connection_mut(h).unwrap();
        let _ = c.write(b"still here");
        sim.run_for(Duration::from_secs(119));
        if freed_at.is_none() && sim.b.endpoint.connection_count() == 0 {
            freed_at = Some(sim.elapsed());
        }
    }
    let a = sim.a.endpoint.connection(h).unwrap();
    println!(
        "released connection, peer sends every 119 s and never FINs: freed by {:?} after release; \
         the peer sees {:?}",
        freed_at.map(|t| t - released_at),
        a.error()
    );
    assert_eq!(sim.b.endpoint.connection_count(), 0);
    assert!(freed_at.unwrap() - released_at <= Duration::from_secs(119));
    assert_eq!(a.error(), Some(ConnectionError::Reset));
}

/// Packets with the right connection id but a forged ack keep nothing
/// alive: the connection still times out when its real peer goes silent
/// (before: any packet with the id refreshed the idle timer).
#[test]
fn forged_packets_do_not_keep_a_dead_connection_alive() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 24);
    let (_, hb) = open_idle(&mut sim);
    let id = sim.b.endpoint.connection(hb).unwrap().recv_id();
    // The real peer goes silent; an attacker sends in its name every 10 s.
    sim.filter = Some(Box::new(|side, _| side == Side::A));
    let a_addr = sim.a.addr;
    let start = sim.elapsed();
    let mut closed_at = None;
    for i in 0..30u16 {
        let now = sim.now;
        let forged = packet(PacketType::State, id, i, 30_000u16.wrapping_add(i), b"");
        sim.b.endpoint.handle_datagram(now, a_addr, &forged);
        sim.run_for(Duration::from_secs(10));
        let c = sim.b.endpoint.connection(hb).unwrap();
        if closed_at.is_none() && c.is_closed() {
            closed_at = Some(sim.elapsed() - start);
        }
    }
    let c = sim.b.endpoint.connection(hb).unwrap();
    println!(
        "dead peer, forged packets every 10 s: closed after {closed_at:?} with {:?}; {} forged \
         packets dropped",
        c.error(),
        sim.b.endpoint.stats().dropped_bad_ack
    );
    assert_eq!(c.error(), Some(ConnectionError::TimedOut));
    assert!(closed_at.unwrap() <= Duration::from_secs(130));
}

/// A peer that lost its state answers our keepalive with a RESET whose ack
/// is the keepalive's sequence number (our next one): that ends the
/// connection at once (before: ignored, the dead peer was noticed after the
/// 120 s idle timeout).
#[test]
fn a_reset_answering_our_keepalive_ends_the_connection() {
    let mut sim = Sim::symmetric(EndpointConfig::default(), lan(), 25);
    let (_, hb) = open_idle(&mut sim);
    // A restarts: a fresh endpoint at the same address knows nothing.
    let now = sim.now;
    sim.a.endpoint = Endpoint::new(EndpointConfig::default(), now);
    let start = sim.elapsed();
    sim.run_for(Duration::from_secs(60));
    let c = sim.b.endpoint.connection(hb).unwrap();
    let closed = c.is_closed();
    println!("peer restarted: our keepalive met its RESET; closed {closed} with {:?}", c.error());
    assert!(closed, "still open {:?} after the restart", sim.elapsed() - start);
    assert_eq!(c.error(), Some(ConnectionError::Reset));
}

/// A peer that restarts and dials again from the same port with the same
/// connection id and sequence number (libutp's unseeded `rand()` does
/// exactly that) replaces its stale connection once the old one has been
/// silent for 2 s: libutp's second SYN, 3 s after the first, gets through.
/// A SYN with the id of a connection whose peer is alive changes nothing,
/// nor does one with another sequence number (a blind attacker must guess
/// it: found by review, one forged SYN killed any connection silent for
/// 2 s).
#[test]
fn a_restarted_peer_redials_with_the_same_id() {
    let seeded = || EndpointConfig { rng_seed: Some(77), ..EndpointConfig::default() };
    let mut sim = Sim::new(seeded(), EndpointConfig::default(), lan(), lan(), 26);
    let (_, old) = open_idle(&mut sim);
    let a_addr = sim.a.addr;
    let id = sim.b.endpoint.connection(old).unwrap().send_id();
    // A forged SYN with the id while the peer is alive: nothing happens.
    let now = sim.now;
    sim.b.endpoint.handle_datagram(now, a_addr, &packet(PacketType::Syn, id, 1, 0, b""));
    assert!(!sim.b.endpoint.connection(old).unwrap().is_closed());
    assert_eq!(sim.b.endpoint.stats().dropped_stale_syn, 1);
    // Silent for 3 s, and a forged SYN with the id but not the sequence
    // number of the SYN that opened the connection: still nothing.
    sim.filter = Some(Box::new(|side, _| side == Side::A));
    sim.run_for(Duration::from_secs(3));
    sim.filter = None;
    let now = sim.now;
    sim.b.endpoint.handle_datagram(now, a_addr, &packet(PacketType::Syn, id, 2, 0, b""));
    assert!(!sim.b.endpoint.connection(old).unwrap().is_closed());
    assert_eq!(sim.b.endpoint.stats().dropped_stale_syn, 2);
    // A restarts with the same seed: same id, same sequence number.
    let now = sim.now;
    sim.a.endpoint = Endpoint::new(seeded(), now);
    let start = sim.elapsed();
    let h = sim.connect(b"");
    let connected = sim.run_until(
        Duration::from_secs(20),
        |_| {},
        |sim| sim.a.endpoint.connection(h).is_some_and(|c| c.is_connected()),
    );
    let took = sim.elapsed() - start;
    println!(
        "restarted peer, same id and sequence number: connected {connected} after {took:?}; \
         the stale connection ended with {:?}",
        sim.b.endpoint.connection(old).unwrap().error()
    );
    assert!(connected);
    assert!(took <= Duration::from_secs(4), "{took:?}");
    assert_eq!(sim.b.endpoint.stats().connections_replaced, 1);
    assert_eq!(sim.b.endpoint.connection(old).unwrap().error(), Some(ConnectionError::Reset));
}

/// The path MTU remembered for a destination is per address and port, a
/// new connection confirms it with one probe before its packets take it,
/// and it comes down when the path no longer carries it (before: per IP,
/// only ever raised, taken blindly: a path that shrank stalled the next
/// connection on packets that could never arrive).
#[test]
fn the_path_mtu_memory_is_per_port_and_comes_down() {
    const JUMBO: usize = 8972;
    let link = LinkConfig::ideal()
        .with_latency(Duration::from_millis(10))
        .with_bandwidth(12_500_000)
        .with_queue_packets(200)
        .with_mtu(JUMBO);
    let mut sim = Sim::symmetric(EndpointConfig::default(), link, 27);
    exchange(&mut sim, 4 << 20, 0, Duration::from_secs(20));
    let b = sim.b.addr;
    let other_port = std::net::SocketAddr::new(b.ip(), b.port() + 1);
    assert_eq!(sim.a.endpoint.path_mtu(sim.now, b), Some(JUMBO));
    assert_eq!(sim.a.endpoint.path_mtu(sim.now, other_port), None);
    // The path shrinks: nothing over 1500 bytes gets through any more.
    sim.filter = Some(Box::new(|_, d| d.len() > 1472));
    sim.b.accepted.clear();
    let (ta, _) = exchange(&mut sim, 1 << 20, 0, Duration::from_secs(30));
    let stats = sim.a.endpoint.connection(ta.conn).unwrap().stats();
    let remembered = sim.a.endpoint.path_mtu(sim.now, b);
    println!(
        "path MTU memory: {JUMBO} learned, then nothing over 1472 passes: the next connection sent {} probes, {} lost, {} timeouts; remembered now {remembered:?}",
        stats.mtu_probes, stats.mtu_probes_lost, stats.timeouts
    );
    assert!(remembered.is_some_and(|m| m <= 1472), "{remembered:?}");
    assert_eq!(stats.timeouts, 0);
}

/// One connection whose peer writes without end and never reads, over a
/// lossy path (data held out of order too): the heap the two endpoints hold
/// stays within the bound `TransportConfig::connection_memory_bound`
/// states, once for each side (the simulated network's copies of packets
/// in flight included).
#[test]
fn one_connection_at_its_limits_stays_within_its_bound() {
    let cfg = config(|t| {
        t.send_buffer_size = 1 << 20;
        t.receive_buffer_size = 1 << 20;
    });
    let bound = cfg.transport.connection_memory_bound();
    let link = LinkConfig::ideal().with_latency(Duration::from_millis(10)).with_loss(0.02);
    let mut sim = Sim::symmetric(cfg, link, 28);
    let base = crate::heap_held();
    let h = sim.connect(b"");
    let chunk = vec![1u8; 64 << 10];
    let mut peak = 0;
    sim.run_until(
        Duration::from_secs(20),
        |sim| {
            let c = sim.a.endpoint.connection_mut(h).unwrap();
            while c.write(&chunk).is_ok_and(|n| n > 0) {}
            sim.b.events.clear();
            sim.a.events.clear();
            peak = peak.max(crate::heap_held() - base);
        },
        |_| false,
    );
    let b = sim.b.endpoint.connection(sim.b.accepted[0]).unwrap().stats();
    println!(
        "one connection, 1 MiB buffers, reader asleep, 2 % loss: peak heap {} KiB for both \
         sides, bound {} KiB per side; receive window {}",
        peak / 1024,
        bound / 1024,
        b.recv_window
    );
    assert!(b.recv_window < 64 << 10, "the receive buffer did not fill: {b:?}");
    assert!(peak as usize <= 2 * bound, "{peak} > 2 x {bound}");
}

/// A released connection whose peer stops taking data (its window closes,
/// it never reads) and keeps the connection alive with keepalives: our FIN
/// never leaves, and yet the connection is reset `close_timeout` after the
/// release (found by review: before, it was held forever with its send
/// buffer).
#[test]
fn a_released_connection_with_a_stuck_peer_is_freed() {
    let small = config(|t| t.receive_buffer_size = 64 << 10);
    let mut sim = Sim::new(small, EndpointConfig::default(), lan(), lan(), 29);
    let (_, hb) = open_idle(&mut sim);
    // B sends more than A's window; A never reads.
    let c = sim.b.endpoint.connection_mut(hb).unwrap();
    let mut written = 0;
    while let Ok(n) = c.write(&[1u8; 65536]) {
        if n == 0 || written > 1 << 20 {
            break;
        }
        written += n;
    }
    sim.run_for(Duration::from_secs(2));
    let now = sim.now;
    sim.b.endpoint.release(now, hb);
    let released = sim.elapsed();
    let mut freed_at = None;
    for _ in 0..40 {
        sim.run_for(Duration::from_secs(5));
        if freed_at.is_none() && sim.b.endpoint.connection_count() == 0 {
            freed_at = Some(sim.elapsed() - released);
        }
    }
    println!(
        "released with {written} bytes unsent to a peer that never reads: freed after {freed_at:?}"
    );
    assert!(freed_at.is_some_and(|t| t <= Duration::from_secs(20)), "{freed_at:?}");
}

/// A half-open connection kept alive by its SYN, sent again and again,
/// while handshakes complete behind it: the queue of half-open connections
/// stays bounded (found by review: it kept an entry for every connection
/// accepted after the pinned one), and the pinned one still expires after
/// `connect_timeout`.
#[test]
fn a_pinned_half_open_connection_bounds_nothing_behind_it() {
    use crate::{deliver, drain, heap_held};
    let mut now = std::time::Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), now);
    let victim: std::net::SocketAddr = "10.9.9.9:7000".parse().unwrap();
    let pinned_syn = packet(PacketType::Syn, 1, 1, 0, b"");
    let pinned = deliver(&mut ep, now, victim, &pinned_syn).expect("accepted");
    drain(&mut ep, now);
    let base = heap_held();
    let mut peak = 0;
    for i in 0..20_000u32 {
        let peer: std::net::SocketAddr =
            std::net::SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 5000));
        let h = deliver(&mut ep, now, peer, &packet(PacketType::Syn, 100, 1000, 0, b""))
            .expect("accepted");
        let syn_ack = drain(&mut ep, now).pop().expect("SYN-ACK").1;
        let s = Repr::parse_bytes(&syn_ack).unwrap().seq_nr.0;
        // The initiator confirms, then the connection is reset and freed.
        ep.handle_datagram(
            now,
            peer,
            &packet(PacketType::State, 101, 1001, s.wrapping_sub(1), b""),
        );
        assert!(!ep.connection(h).unwrap().is_half_open());
        ep.connection_mut(h).unwrap().reset();
        ep.release(now, h);
        drain(&mut ep, now);
        if i % 100 == 0 {
            // The pinned SYN again, every ~9 s of virtual time.
            now += Duration::from_millis(450);
            ep.handle_datagram(now, victim, &pinned_syn);
            drain(&mut ep, now);
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
            drain(&mut ep, now);
        }
        peak = peak.max(heap_held() - base);
    }
    println!(
        "20,000 handshakes behind a half-open connection pinned by its SYN: heap grew by at most \
         {} KiB; the pinned one expired: {}",
        peak / 1024,
        ep.connection(pinned).unwrap().is_closed()
    );
    assert!(peak < 256 << 10, "{peak} bytes");
    assert!(ep.connection(pinned).unwrap().is_closed(), "pinned forever");
}
