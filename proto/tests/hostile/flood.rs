//! SYN flood: spoofed SYNs from many addresses while honest peers connect.
//! Half-open connections have a bound of their own (`max_half_open`) and a
//! short life; when the bound is reached the oldest half-open connection
//! goes, never an established one or a dial.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use utp_proto::wire::{PacketType, Repr};
use utp_proto::{ConnectionHandle, EndpointConfig, Event};

use crate::common::link::LinkConfig;
use crate::common::sim::{pattern, Side, Sim, Transfer};
use crate::{heap_held, packet};

const FLOOD_SYNS: usize = 100_000;
const FLOOD_ADDRESSES: usize = 50_000;
/// Spoofed SYNs per millisecond (10,000 a second, for 10 s).
const SYNS_PER_MS: usize = 10;
const HONEST_DIALS: usize = 100;
const HONEST_BYTES: usize = 1000;

fn spoofed(i: usize) -> SocketAddr {
    let a = i % FLOOD_ADDRESSES;
    SocketAddr::from(([10, 100 + (a >> 16) as u8, (a >> 8) as u8, a as u8], 6881))
}

/// Honest dials while the flood runs; returns (succeeded, peak heap bytes
/// held by the simulation above its start, peak half-open count).
fn flood(rtt: Duration) -> (usize, isize, usize) {
    let link = LinkConfig::ideal().with_latency(rtt / 2);
    let mut sim = Sim::symmetric(EndpointConfig::default(), link, 9);
    sim.b.auto_accept = false;
    // B's answers to the spoofed addresses never reach A: only packets of
    // A's own connections pass.
    let a_ids: Rc<RefCell<HashSet<u16>>> = Rc::default();
    let ids = a_ids.clone();
    sim.filter = Some(Box::new(move |side, d| {
        side == Side::B
            && Repr::parse_bytes(d).is_ok_and(|r| !ids.borrow().contains(&r.connection_id))
    }));
    let a_addr = sim.a.addr;
    let base = heap_held();
    let mut peak = 0isize;
    let mut peak_half_open = 0;
    let mut honest_a: Vec<Transfer> = Vec::new();
    let mut honest_b: HashMap<ConnectionHandle, Transfer> = HashMap::new();
    let mut flooders: HashSet<ConnectionHandle> = HashSet::new();
    let mut sent_syns = 0;
    let ms = Duration::from_millis(1);
    let total_ms = FLOOD_SYNS / SYNS_PER_MS + 2000;
    for tick in 0..total_ms {
        let now = sim.now;
        for _ in 0..SYNS_PER_MS {
            if sent_syns == FLOOD_SYNS {
                break;
            }
            let from = spoofed(sent_syns);
            let syn = packet(PacketType::Syn, (sent_syns * 7919) as u16, sent_syns as u16, 0, b"");
            sent_syns += 1;
            if let utp_proto::DatagramEvent::Incoming(inc) =
                sim.b.endpoint.handle_datagram(now, from, &syn)
            {
                sim.b.incoming.push_back(inc);
            }
        }
        if tick % 100 == 50 && honest_a.len() < HONEST_DIALS {
            let h = sim.connect(b"");
            a_ids.borrow_mut().insert(sim.a.endpoint.connection(h).unwrap().recv_id());
            honest_a.push(Transfer::new(h, pattern(HONEST_BYTES, honest_a.len() as u64)));
        }
        sim.run_until(
            ms,
            |sim| {
                while let Some(inc) = sim.b.incoming.pop_front() {
                    let remote = inc.remote();
                    let Ok(h) = sim.b.endpoint.accept(sim.now, inc) else { continue };
                    if remote == a_addr {
                        honest_b.insert(h, Transfer::new(h, Vec::new()));
                    } else {
                        flooders.insert(h);
                    }
                }
                // Let go of what the engine evicted or expired (as the
                // runtime does with connections nobody accepted yet).
                for (h, e) in std::mem::take(&mut sim.b.events) {
                    if e == Event::Closed && flooders.remove(&h) {
                        sim.b.endpoint.release(sim.now, h);
                    }
                }
                sim.a.events.clear();
                for t in &mut honest_a {
                    t.pump(&mut sim.a.endpoint);
                }
                for t in honest_b.values_mut() {
                    t.pump(&mut sim.b.endpoint);
                }
            },
            |_| false,
        );
        peak = peak.max(heap_held() - base);
        peak_half_open = peak_half_open.max(sim.b.endpoint.half_open_count());
        assert!(sim.b.endpoint.half_open_count() <= EndpointConfig::default().max_half_open);
    }
    let ok = honest_b.values().filter(|t| t.eof && t.received.len() == HONEST_BYTES).count();
    let stats = sim.b.endpoint.stats().clone();
    println!(
        "  rtt {:>4} ms: {ok}/{HONEST_DIALS} honest transfers completed; evicted {}, expired {}, \
         refused {}; peak {peak_half_open} half-open, {} KiB of heap",
        rtt.as_millis(),
        stats.half_open_evicted,
        stats.half_open_expired,
        stats.syns_refused,
        peak / 1024
    );
    (ok, peak, peak_half_open)
}

#[test]
fn honest_peers_connect_through_a_syn_flood() {
    println!(
        "SYN flood: {FLOOD_SYNS} spoofed SYNs from {FLOOD_ADDRESSES} addresses, \
         {} per second, and {HONEST_DIALS} honest dials (1000 B each) to a default endpoint:",
        SYNS_PER_MS * 1000
    );
    for rtt in [Duration::from_millis(20), Duration::from_millis(100)] {
        let (ok, peak, half_open) = flood(rtt);
        // Target: at least 99 % of honest connects succeed.
        assert!(ok * 100 >= HONEST_DIALS * 99, "{ok} of {HONEST_DIALS}");
        assert_eq!(half_open, EndpointConfig::default().max_half_open);
        // The bound holds in bytes too: a half-open connection holds no
        // buffers, a few KiB at most (all the simulation's own state
        // included).
        assert!(peak < 16 << 20, "{peak} bytes");
    }
    println!("  (before: ~1,100 spoofed SYN/s kept all 16,384 slots full and refused everyone)");
}
