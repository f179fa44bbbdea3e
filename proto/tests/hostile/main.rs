//! The attack catalogue: every attack on a public uTP port that we defend
//! against, as a test that prints its figure next to libutp's.
//!
//! The attacker can send any datagram from any source address (spoofing)
//! and, unless a test says otherwise, never sees our answers (blind). Run
//! with `cargo test -p utp-proto --test hostile -- --nocapture` to read the
//! figures.
//!
//! This is a test binary of its own because it counts heap bytes (per
//! thread, so tests running side by side do not disturb each other).

#[path = "../common/mod.rs"]
mod common;

mod amplification;
mod blind;
mod bounds;
mod flood;
mod icmp;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Instant;

use utp_proto::wire::{PacketType, Repr, SeqNr};
use utp_proto::{ConnectionHandle, DatagramEvent, Endpoint};

/// The system allocator, counting the bytes each thread holds.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call forwards to the system allocator unchanged; the
// counting touches only a const-initialised thread-local without a
// destructor, which allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = HELD.try_with(|h| h.set(h.get() + layout.size() as isize));
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = HELD.try_with(|h| h.set(h.get() - layout.size() as isize));
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = HELD.try_with(|h| h.set(h.get() + new_size as isize - layout.size() as isize));
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes this thread holds now (allocated by it and not yet freed).
fn heap_held() -> isize {
    HELD.with(Cell::get)
}

/// A packet as an attacker forges it.
fn packet(kind: PacketType, id: u16, seq: u16, ack: u16, payload: &[u8]) -> Vec<u8> {
    let mut repr = Repr::new(kind, id, SeqNr(seq), SeqNr(ack));
    repr.wnd_size = 1 << 20;
    repr.payload = payload;
    repr.to_vec().expect("emit")
}

/// Hands a datagram to `ep`, accepting a new connection the way the
/// runtime does (every SYN at once); returns the accepted handle, if any.
fn deliver(
    ep: &mut Endpoint,
    now: Instant,
    from: SocketAddr,
    data: &[u8],
) -> Option<ConnectionHandle> {
    match ep.handle_datagram(now, from, data) {
        DatagramEvent::Incoming(incoming) => ep.accept(now, incoming).ok(),
        _ => None,
    }
}

/// Every datagram `ep` sends now: (destination, bytes).
fn drain(ep: &mut Endpoint, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Some(t) = ep.poll_transmit(now, &mut buf) {
        out.push((t.destination, buf[..t.size].to_vec()));
    }
    while ep.poll_event().is_some() {}
    out
}
