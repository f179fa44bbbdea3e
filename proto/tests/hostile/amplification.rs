//! Reflection: a spoofed SYN makes us send to the victim whose address it
//! carries. Until the initiator proves it receives our packets (by
//! acknowledging the SYN-ACK), an acceptor sends at most three times the
//! bytes it received (QUIC's rule) and resends only its SYN-ACK, within
//! that limit (`sim::handshake` shows the copies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use utp_proto::wire::{ExtFlags, Extension, Extensions, Negotiation, PacketType, Repr, SeqNr};
use utp_proto::{Endpoint, EndpointConfig, TransportConfig};

use crate::common::link::LinkConfig;
use crate::common::sim::Sim;
use crate::{deliver, drain};

fn config(extensions: ExtFlags) -> EndpointConfig {
    let transport = TransportConfig { extensions, ..TransportConfig::default() };
    EndpointConfig {
        transport: Arc::new(transport),
        rng_seed: Some(3),
        ..EndpointConfig::default()
    }
}

/// A SYN as an attacker forges it: bare, with our negotiation record, and
/// with a request riding on it.
fn syn(offer: Option<ExtFlags>, data: &[u8]) -> Vec<u8> {
    let mut repr = Repr::new(PacketType::Syn, 4242, SeqNr(77), SeqNr(0));
    repr.wnd_size = 1 << 20;
    let mut exts = Extensions::new();
    if let Some(flags) = offer {
        exts.push(Extension::ExtensionBits(Negotiation::new(flags).to_bits())).unwrap();
    }
    repr.extensions = exts;
    repr.payload = data;
    let mut buf = vec![0u8; repr.buffer_len()];
    let n = repr.emit(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Sends `syn` to a listener `copies` times, one second apart, from the
/// victim's address; the listener's application writes 64 KiB at once on
/// every connection. Returns (bytes received, bytes sent to the victim)
/// over a minute, with no answer from the victim.
fn reflect(listener: ExtFlags, syn: &[u8], copies: usize) -> (usize, usize) {
    let victim: SocketAddr = "10.9.9.9:7000".parse().unwrap();
    let start = Instant::now();
    let mut ep = Endpoint::new(config(listener), start);
    let (mut received, mut sent) = (0, 0);
    let mut now = start;
    let end = start + Duration::from_secs(60);
    let mut next_syn = (0..copies).map(|i| start + Duration::from_secs(i as u64)).peekable();
    while now < end {
        while next_syn.peek().is_some_and(|&t| t <= now) {
            next_syn.next();
            received += syn.len();
            if let Some(h) = deliver(&mut ep, now, victim, syn) {
                // A server that speaks first (or answers the SYN's request).
                let _ = ep.connection_mut(h).unwrap().write(&[7u8; 65536]);
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        for (to, d) in drain(&mut ep, now) {
            assert_eq!(to, victim);
            sent += d.len();
        }
        let next = [ep.poll_timeout(), next_syn.peek().copied()].into_iter().flatten().min();
        now = next.unwrap_or(end).max(now + Duration::from_millis(1)).min(end);
    }
    (received, sent)
}

#[test]
fn spoofed_syns_are_amplified_at_most_three_times() {
    let both = ExtFlags(ExtFlags::SYN_DATA.0 | ExtFlags::LARGE_PACKETS.0);
    let request = [1u8; 1000];
    let cases: [(&str, ExtFlags, Vec<u8>, usize); 4] = [
        ("bare SYN (libutp's)", ExtFlags::LARGE_PACKETS, syn(None, b""), 1),
        ("SYN offering extensions", ExtFlags::LARGE_PACKETS, syn(Some(both), b""), 1),
        ("SYN with 1000 B of SYN data", both, syn(Some(both), &request), 1),
        ("bare SYN, sent 10 times", ExtFlags::LARGE_PACKETS, syn(None, b""), 10),
    ];
    println!("reflection through a listener whose application writes 64 KiB at once:");
    println!("  attack                         received    sent to victim   factor");
    for (name, listener, syn, copies) in cases {
        let (received, sent) = reflect(listener, &syn, copies);
        let factor = sent as f64 / received as f64;
        println!("  {name:<30} {received:>8} B {sent:>12} B   {factor:>5.2}x");
        assert!(sent <= 3 * received, "{name}: {sent} bytes for {received}");
        assert!(sent > 0, "{name}: the SYN must still be answered");
    }
    println!("  (before: 358x, 17 KB for one 48-byte SYN; QUIC's limit: 3x; libutp sends one");
    println!("   20-byte STATE per SYN and no data before the initiator's first DATA)");
}

/// An honest dial with a request on its SYN (SYN data) still gets its
/// answer one round trip sooner than without: the part of the response
/// that fits three times the SYN leaves with the SYN-ACK, the rest after
/// the initiator's acknowledgement.
#[test]
fn syn_data_keeps_its_round_trip_for_honest_peers() {
    let rtt = Duration::from_millis(100);
    let link = LinkConfig::ideal().with_latency(rtt / 2);
    let both = ExtFlags(ExtFlags::SYN_DATA.0 | ExtFlags::LARGE_PACKETS.0);
    let request = [9u8; 100];
    println!("request of 100 B, response of N bytes, {} ms RTT, in round trips:", rtt.as_millis());
    println!("  response   SYN data: first byte / all   without: first byte / all");
    for response in [200usize, 1000, 20_000] {
        let mut row = Vec::new();
        for flags in [both, ExtFlags::LARGE_PACKETS] {
            let mut sim = Sim::symmetric(config(flags), link.clone(), 5);
            let h = sim.connect(&request);
            let mut answered = None;
            let (mut first, mut all) = (None, None);
            let mut got = 0;
            sim.run(Duration::from_secs(10), |sim| {
                if answered.is_none() {
                    if let Some(&hb) = sim.b.accepted.first() {
                        let c = sim.b.endpoint.connection_mut(hb).unwrap();
                        if c.readable_bytes() >= request.len() {
                            let mut buf = [0u8; 100];
                            assert_eq!(c.read(&mut buf).unwrap(), 100);
                            let n = c.write(&vec![5u8; response]).unwrap();
                            assert_eq!(n, response);
                            answered = Some(());
                        }
                    }
                }
                let c = sim.a.endpoint.connection_mut(h).unwrap();
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got += n;
                    first.get_or_insert(sim.now - sim.start);
                }
                if got == response {
                    all.get_or_insert(sim.now - sim.start);
                }
                all.is_some()
            });
            let rtts = |d: Option<Duration>| d.expect("answered").as_secs_f64() / rtt.as_secs_f64();
            row.push((rtts(first), rtts(all)));
        }
        println!(
            "  {response:>8}   {:>9.2} / {:<5.2}          {:>9.2} / {:.2}",
            row[0].0, row[0].1, row[1].0, row[1].1
        );
        // The saving holds for the first byte whatever the size.
        assert!(row[0].0 + 0.9 < row[1].0, "{response}: {row:?}");
        if response <= 200 {
            assert!(row[0].1 + 0.9 < row[1].1, "{response}: {row:?}");
        }
    }
}
