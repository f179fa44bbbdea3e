//! A deterministic two-endpoint simulator with a virtual clock.
//!
//! Two [`Endpoint`]s joined by two [`Link`]s (one per direction). The clock
//! jumps to the next instant anything can happen: a datagram arriving or a
//! timer of either endpoint. Applications are closures run at every step.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use utp_proto::{ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Event, Incoming};

use super::link::{Link, LinkConfig};

/// One side of the simulation.
pub struct Node {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    /// Events seen so far, in order.
    pub events: Vec<(ConnectionHandle, Event)>,
    /// Incoming connections not yet decided (when `auto_accept` is off).
    pub incoming: VecDeque<Incoming>,
    /// Accept every incoming connection at once.
    pub auto_accept: bool,
    /// Connections accepted so far.
    pub accepted: Vec<ConnectionHandle>,
    /// Datagrams that were not uTP.
    pub not_utp: usize,
    pub sent_datagrams: usize,
    /// FNV-1a over every datagram sent, in order (to compare two runs).
    pub sent_hash: u64,
    /// Segmented transmits of more than one datagram
    /// (`Endpoint::poll_transmit_run`, with `Sim::gso_segments` > 1).
    pub runs: usize,
    /// The node's own interface MTU (UDP payload): a datagram sent with
    /// don't-fragment above it is refused with EMSGSIZE, as a kernel does.
    pub interface_mtu: usize,
    /// Datagrams refused that way.
    pub emsgsize: usize,
}

impl Node {
    fn new(config: EndpointConfig, addr: SocketAddr, now: Instant) -> Self {
        Node {
            endpoint: Endpoint::new(config, now),
            addr,
            events: Vec::new(),
            incoming: VecDeque::new(),
            auto_accept: true,
            accepted: Vec::new(),
            not_utp: 0,
            sent_datagrams: 0,
            sent_hash: 0xcbf2_9ce4_8422_2325,
            runs: 0,
            interface_mtu: usize::MAX,
            emsgsize: 0,
        }
    }

    pub fn saw(&self, handle: ConnectionHandle, event: Event) -> bool {
        self.events.iter().any(|&(h, e)| h == handle && e == event)
    }
}

/// Which node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// Sees every datagram sent (from which side); returning `true` drops it.
pub type Filter = Box<dyn FnMut(Side, &[u8]) -> bool>;

/// Extra delay for a datagram of flow 0 that arrived at a side, after its
/// link (propagation past the bottleneck, per connection for example).
pub type ArrivalDelay = Box<dyn FnMut(Side, &[u8]) -> Duration>;

pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    pub a: Node,
    pub b: Node,
    /// A -> B.
    pub ab: Link,
    /// B -> A.
    pub ba: Link,
    /// Sees every datagram sent (from which side); returning `true` drops it.
    pub filter: Option<Filter>,
    /// B's clock runs this much faster than A's (1.01: 1 % fast).
    pub b_clock_rate: f64,
    /// Other traffic sharing the links (flow tag 1).
    pub cross: Option<Box<dyn CrossTraffic>>,
    /// Holds arriving datagrams this much longer (see [`ArrivalDelay`]).
    pub arrival_delay: Option<ArrivalDelay>,
    /// Datagrams held by `arrival_delay`: (due, order, to, bytes).
    held: std::collections::BTreeMap<(Instant, u64), (Side, Vec<u8>)>,
    held_seq: u64,
    epoch: Instant,
    buf: Vec<u8>,
    /// Datagrams one transmit may carry: above 1 the endpoints are polled
    /// with `poll_transmit_run` (runs of up to 64,000 bytes) and the runs
    /// split here, as a runtime without segmentation offload would. Default
    /// 1 (`poll_transmit`).
    pub gso_segments: usize,
}

/// A flow that shares the simulated links with the uTP endpoints: its
/// datagrams carry flow tag 1; A -> B on `ab`, B -> A on `ba`.
pub trait CrossTraffic {
    /// A datagram of the flow arrived at `to`.
    fn on_recv(&mut self, now: Instant, to: Side, datagram: Vec<u8>);
    /// The next datagram the flow sends now, and from which side.
    fn poll_send(&mut self, now: Instant) -> Option<(Side, Vec<u8>)>;
    /// When the flow next wants to act (a timer).
    fn next_wakeup(&self) -> Option<Instant>;
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

impl Sim {
    /// Two endpoints with the given configs and links.
    pub fn new(
        a_config: EndpointConfig,
        b_config: EndpointConfig,
        ab: LinkConfig,
        ba: LinkConfig,
        seed: u64,
    ) -> Self {
        Self::new_at(a_config, b_config, ab, ba, seed, Duration::ZERO)
    }

    /// Like [`Sim::new`], with the virtual clock starting `offset` after the
    /// endpoints' epoch (to test timestamps near their wrap point).
    pub fn new_at(
        a_config: EndpointConfig,
        b_config: EndpointConfig,
        ab: LinkConfig,
        ba: LinkConfig,
        seed: u64,
        offset: Duration,
    ) -> Self {
        let epoch = Instant::now();
        let start = epoch + offset;
        let mut a_config = a_config;
        let mut b_config = b_config;
        a_config.rng_seed.get_or_insert(seed.wrapping_mul(31).wrapping_add(1));
        b_config.rng_seed.get_or_insert(seed.wrapping_mul(37).wrapping_add(2));
        Sim {
            now: start,
            start,
            a: Node::new(a_config, addr("10.0.0.1:5000"), epoch),
            b: Node::new(b_config, addr("10.0.0.2:6000"), epoch),
            ab: Link::new(ab, seed.wrapping_mul(41).wrapping_add(3)),
            ba: Link::new(ba, seed.wrapping_mul(43).wrapping_add(4)),
            filter: None,
            b_clock_rate: 1.0,
            cross: None,
            arrival_delay: None,
            held: std::collections::BTreeMap::new(),
            held_seq: 0,
            epoch,
            buf: vec![0u8; 65536 + 64_000],
            gso_segments: 1,
        }
    }

    /// Same config and link both ways.
    pub fn symmetric(config: EndpointConfig, link: LinkConfig, seed: u64) -> Self {
        Self::new(config.clone(), config, link.clone(), link, seed)
    }

    pub fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A dials B.
    pub fn connect(&mut self, syn_data: &[u8]) -> ConnectionHandle {
        let b = self.b.addr;
        self.a.endpoint.connect(self.now, b, syn_data).expect("connect")
    }

    /// Processes everything due now: arrivals, timers, transmits, events.
    /// Returns `true` if anything happened.
    pub fn step_now(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        let b_now = self.local(Side::B, now);
        // Arrivals.
        let mut arrived = Vec::new();
        while let Some((tag, d)) = self.ab.poll_recv_tagged(now) {
            progress = true;
            if tag == 0 {
                arrived.push((Side::B, d));
            } else if let Some(cross) = self.cross.as_mut() {
                cross.on_recv(now, Side::B, d);
            }
        }
        while let Some((tag, d)) = self.ba.poll_recv_tagged(now) {
            progress = true;
            if tag == 0 {
                arrived.push((Side::A, d));
            } else if let Some(cross) = self.cross.as_mut() {
                cross.on_recv(now, Side::A, d);
            }
        }
        for (to, d) in arrived {
            let Some(delay) = self.arrival_delay.as_mut() else {
                match to {
                    Side::B => deliver(&mut self.b, self.a.addr, b_now, &d),
                    Side::A => deliver(&mut self.a, self.b.addr, now, &d),
                }
                continue;
            };
            let extra = delay(to, &d);
            self.held_seq += 1;
            self.held.insert((now + extra, self.held_seq), (to, d));
        }
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (to, d) = entry.remove();
            match to {
                Side::B => deliver(&mut self.b, self.a.addr, b_now, &d),
                Side::A => deliver(&mut self.a, self.b.addr, now, &d),
            }
        }
        if let Some(cross) = self.cross.as_mut() {
            while let Some((side, d)) = cross.poll_send(now) {
                progress = true;
                match side {
                    Side::A => self.ab.send_tagged(now, 1, d),
                    Side::B => self.ba.send_tagged(now, 1, d),
                }
            }
        }
        for (side, node, link, t) in
            [(Side::A, &mut self.a, &mut self.ab, now), (Side::B, &mut self.b, &mut self.ba, b_now)]
        {
            if node.endpoint.poll_timeout().is_some_and(|x| x <= t) {
                node.endpoint.handle_timeout(t);
                progress = true;
            }
            let mut burst = 0usize;
            let gso = self.gso_segments;
            loop {
                let tr = if gso > 1 {
                    node.endpoint.poll_transmit_run(t, &mut self.buf, gso, 64_000)
                } else {
                    node.endpoint.poll_transmit(t, &mut self.buf[..65536])
                };
                let Some(tr) = tr else { break };
                if tr.segment_size.is_some() {
                    node.runs += 1;
                }
                let segment = tr.segment_size.unwrap_or(tr.size).max(1);
                for datagram in self.buf[..tr.size].chunks(segment) {
                    burst += 1;
                    assert!(
                        burst < 100_000,
                        "{side:?} sent 100000 datagrams at one instant; last: {}",
                        utp_proto::wire::Repr::parse_bytes(datagram)
                            .map(|r| r.to_string())
                            .unwrap_or_default()
                    );
                    node.sent_datagrams += 1;
                    for &b in datagram {
                        node.sent_hash =
                            (node.sent_hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                    }
                    progress = true;
                    let size = datagram.len();
                    if tr.dont_fragment && size > node.interface_mtu {
                        node.emsgsize += 1;
                        node.endpoint.handle_packet_too_big(t, tr.destination, size);
                        continue;
                    }
                    if let Some(filter) = self.filter.as_mut() {
                        if filter(side, datagram) {
                            continue;
                        }
                    }
                    link.send_df(now, datagram.to_vec(), tr.dont_fragment);
                }
            }
            while let Some(ev) = node.endpoint.poll_event() {
                node.events.push(ev);
                progress = true;
            }
        }
        progress
    }

    /// `now` (the simulation's clock) as the node on `side` sees it.
    pub fn local(&self, side: Side, now: Instant) -> Instant {
        match side {
            Side::A => now,
            Side::B if self.b_clock_rate == 1.0 => now,
            Side::B => self.epoch + (now - self.epoch).mul_f64(self.b_clock_rate),
        }
    }

    /// A node's local instant on the simulation's clock (rounded up).
    fn global(&self, side: Side, t: Instant) -> Instant {
        match side {
            Side::A => t,
            Side::B if self.b_clock_rate == 1.0 => t,
            Side::B => {
                self.epoch
                    + (t.saturating_duration_since(self.epoch)).div_f64(self.b_clock_rate)
                    + Duration::from_nanos(1)
            }
        }
    }

    /// The next instant something is scheduled.
    pub fn next_wakeup(&mut self) -> Option<Instant> {
        let b_timeout = self.b.endpoint.poll_timeout().map(|t| self.global(Side::B, t));
        [
            self.ab.next_delivery(),
            self.ba.next_delivery(),
            self.a.endpoint.poll_timeout(),
            b_timeout,
            self.cross.as_ref().and_then(|c| c.next_wakeup()),
            self.held.keys().next().map(|&(t, _)| t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs `app` and the network until `done` holds or `limit` of virtual
    /// time has passed; returns whether `done` held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut app: impl FnMut(&mut Sim),
        mut done: impl FnMut(&mut Sim) -> bool,
    ) -> bool {
        self.run(limit, |sim| {
            app(sim);
            done(sim)
        })
    }

    /// Runs `step` (the application: it acts, then says whether it is done)
    /// and the network until `step` returns `true` or `limit` of virtual
    /// time has passed; returns whether it finished.
    pub fn run(&mut self, limit: Duration, mut step: impl FnMut(&mut Sim) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            // Settle everything due now (the application may produce more output).
            let mut done = false;
            for _ in 0..10_000 {
                done = step(self);
                if !self.step_now() {
                    break;
                }
            }
            if done || step(self) {
                return true;
            }
            let Some(next) = self.next_wakeup() else {
                // Nothing scheduled: the application had its chance.
                return false;
            };
            if next > deadline {
                self.now = deadline;
                self.step_now();
                return step(self);
            }
            self.now = self.now.max(next);
        }
    }

    /// Runs the network with no application for `d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| {}, |_| false);
    }
}

fn deliver(node: &mut Node, from: SocketAddr, now: Instant, data: &[u8]) {
    match node.endpoint.handle_datagram(now, from, data) {
        DatagramEvent::Incoming(inc) => {
            if node.auto_accept {
                let h = node.endpoint.accept(now, inc).expect("accept");
                node.accepted.push(h);
            } else {
                node.incoming.push_back(inc);
            }
        }
        DatagramEvent::NotUtp => node.not_utp += 1,
        DatagramEvent::Connection(_) | DatagramEvent::Dropped => {}
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A one-way or two-way bulk transfer driven through the endpoints' API.
pub struct Transfer {
    pub conn: ConnectionHandle,
    pub to_send: Vec<u8>,
    pub sent: usize,
    pub received: Vec<u8>,
    pub eof: bool,
    pub shutdown_when_done: bool,
    pub shut: bool,
}

impl Transfer {
    pub fn new(conn: ConnectionHandle, to_send: Vec<u8>) -> Self {
        Transfer {
            conn,
            to_send,
            sent: 0,
            received: Vec::new(),
            eof: false,
            shutdown_when_done: true,
            shut: false,
        }
    }

    /// Writes what fits, reads what is there.
    pub fn pump(&mut self, ep: &mut Endpoint) {
        let Some(c) = ep.connection_mut(self.conn) else { return };
        while self.sent < self.to_send.len() {
            match c.write(&self.to_send[self.sent..]) {
                Ok(n) => self.sent += n,
                Err(_) => break,
            }
        }
        if self.sent == self.to_send.len() && self.shutdown_when_done && !self.shut {
            c.shutdown();
            self.shut = true;
        }
        let mut buf = [0u8; 16384];
        loop {
            match c.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }
}

/// A sends `to_send` on the connection `dial` it already opened, then shuts
/// down; B accepts and reads. Runs the whole of `limit`, asserts that both
/// ends saw the other's end of stream, and returns what B read.
pub fn one_way(
    sim: &mut Sim,
    dial: ConnectionHandle,
    to_send: Vec<u8>,
    limit: Duration,
) -> Vec<u8> {
    let mut ta = Transfer::new(dial, to_send);
    let mut tb: Option<Transfer> = None;
    sim.run_until(
        limit,
        |sim| {
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
    let tb = tb.expect("B accepted");
    assert!(tb.eof, "B saw the end of A's stream");
    assert!(ta.eof, "A saw the end of B's stream");
    tb.received
}

/// Transfers `a_to_b` bytes from A to B and `b_to_a` from B to A over one
/// connection; returns the two transfers (A's, B's) once both have seen EOF
/// and both FINs are acknowledged, or panics after `limit`.
pub fn exchange(
    sim: &mut Sim,
    a_to_b: usize,
    b_to_a: usize,
    limit: Duration,
) -> (Transfer, Transfer) {
    use std::cell::RefCell;
    let conn = sim.connect(b"");
    let ta = RefCell::new(Transfer::new(conn, pattern(a_to_b, 1)));
    let tb: RefCell<Option<Transfer>> = RefCell::new(None);
    let b_data = pattern(b_to_a, 2);
    let ok = sim.run_until(
        limit,
        |sim| {
            ta.borrow_mut().pump(&mut sim.a.endpoint);
            let mut tb = tb.borrow_mut();
            if tb.is_none() {
                if let Some(&h) = sim.b.accepted.first() {
                    *tb = Some(Transfer::new(h, b_data.clone()));
                }
            }
            if let Some(tb) = tb.as_mut() {
                tb.pump(&mut sim.b.endpoint);
            }
        },
        |sim| {
            let a_done =
                ta.borrow().eof && sim.a.endpoint.connection(conn).is_some_and(|c| c.is_finished());
            let b_done = tb.borrow().as_ref().is_some_and(|tb| {
                tb.eof && sim.b.endpoint.connection(tb.conn).is_some_and(|c| c.is_finished())
            });
            a_done && b_done
        },
    );
    let ta = ta.into_inner();
    let tb = tb.into_inner().expect("B accepted a connection");
    assert!(
        ok,
        "transfer did not finish within {limit:?}: A sent {}/{} got {}/{} eof={}, B sent {}/{} got {}/{} eof={}\nA stats {:?}\nB stats {:?}",
        ta.sent,
        a_to_b,
        ta.received.len(),
        b_to_a,
        ta.eof,
        tb.sent,
        b_to_a,
        tb.received.len(),
        a_to_b,
        tb.eof,
        sim.a.endpoint.connection(conn).map(|c| c.stats()),
        sim.b.endpoint.connection(tb.conn).map(|c| c.stats()),
    );
    assert!(tb.received == ta.to_send, "B received different bytes than A sent");
    assert!(ta.received == tb.to_send, "A received different bytes than B sent");
    (ta, tb)
}
