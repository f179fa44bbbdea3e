//! An impairing UDP relay for tests: loss, duplication, reordering, delay,
//! jitter and a rate limit between one client and one upstream address,
//! decided by a seeded random generator, plus a filter hook that can drop
//! chosen datagrams (for example exactly the first SYN-ACK).
//!
//! ```text
//!   client ──► relay.local_addr() ─┐            ┌─► upstream
//!                                  │ impair per │
//!   client ◄── (same socket)  ◄────┘ direction  └── (second socket)
//! ```
//!
//! The relay listens on one UDP socket (by default `127.0.0.1:0`); the first
//! address that sends to it becomes THE client, and datagrams from any other
//! address are ignored (counted in [`RelayStats::ignored`]). Everything the
//! client sends goes out of a second socket to the fixed upstream address;
//! everything that socket receives from upstream goes back to the client.
//!
//! Per datagram and direction, in this order:
//! 1. the [`Filter`] hook (if any) may drop it;
//! 2. random loss;
//! 3. random duplication (the copy follows the original);
//! 4. the rate limiter: a token bucket (bytes per second, with a burst) in
//!    front of a bounded FIFO queue; a datagram that does not fit in the
//!    queue is dropped;
//! 5. once it leaves the bucket: the fixed delay, plus a uniform jitter in
//!    `-jitter..=+jitter` (a jitter larger than the spacing of datagrams
//!    reorders them too), plus, for a random share of datagrams, the extra
//!    `reorder_delay` (the "reordered" ones: they are held back while later
//!    ones pass).
//!
//! Delays never block other datagrams: every datagram waits in one timer
//! queue (a binary heap ordered by due time) served by the relay's task.
//!
//! Deterministic: each direction has its own generator seeded from
//! [`RelayConfig::seed`], and every datagram received draws the same number
//! of values whatever happens to it (even when the filter drops it), so the
//! decisions for the n-th datagram of a direction depend only on the seed and
//! n. Only the rate limiter's queue drops depend on timing.
//!
//! Dropping the [`Relay`] stops it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use utp_proto::wire::{PacketType, Repr};

/// Which way a datagram travels through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the upstream address.
    ToUpstream,
    /// From the upstream address back to the client.
    ToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToUpstream => 0,
            Direction::ToClient => 1,
        }
    }
}

/// What a [`Filter`] decides for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on: the random impairments of the direction apply.
    Pass,
    /// Drop it (counted in [`DirectionStats::filtered`]).
    Drop,
}

/// The impairments of one direction. [`Impairment::default`] is none at all.
#[derive(Debug, Clone, PartialEq)]
pub struct Impairment {
    /// Probability (0..=1) that a datagram is lost.
    pub loss: f64,
    /// Probability (0..=1) that a datagram is sent twice.
    pub duplicate: f64,
    /// Probability (0..=1) that a datagram is held back by `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of the datagrams picked for reordering. Default 10 ms.
    pub reorder_delay: Duration,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Uniform jitter added to `delay`, in `-jitter..=+jitter` (the total is
    /// never below zero).
    pub jitter: Duration,
    /// Rate limit in bytes per second (UDP payload bytes). `None`: unlimited.
    pub rate: Option<u64>,
    /// Burst of the token bucket, bytes. 0 = automatic: 10 ms of `rate`, at
    /// least 16 KiB.
    pub burst: usize,
    /// Most bytes waiting for the rate limiter; a datagram that does not fit
    /// is dropped (counted in [`DirectionStats::queue_drops`]). Default
    /// 256 000 bytes (256K).
    pub queue_limit: usize,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(10),
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            rate: None,
            burst: 0,
            queue_limit: 256_000,
        }
    }
}

impl Impairment {
    /// No impairment.
    #[must_use]
    pub fn none() -> Self {
        Impairment::default()
    }

    /// Sets the loss probability.
    #[must_use]
    pub fn with_loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets the duplication probability.
    #[must_use]
    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Sets the reordering probability and the extra delay of reordered
    /// datagrams.
    #[must_use]
    pub fn with_reorder(mut self, p: f64, extra: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = extra;
        self
    }

    /// Sets the fixed delay and the jitter.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration, jitter: Duration) -> Self {
        self.delay = delay;
        self.jitter = jitter;
        self
    }

    /// Sets the rate limit (bytes per second).
    #[must_use]
    pub fn with_rate(mut self, bytes_per_second: u64) -> Self {
        self.rate = Some(bytes_per_second);
        self
    }

    /// Sets the rate limiter's queue limit (bytes).
    #[must_use]
    pub fn with_queue_limit(mut self, bytes: usize) -> Self {
        self.queue_limit = bytes;
        self
    }

    fn check(&self) -> io::Result<()> {
        for (name, p) in
            [("loss", self.loss), ("duplicate", self.duplicate), ("reorder", self.reorder)]
        {
            if !(0.0..=1.0).contains(&p) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name} probability {p} is not in 0..=1"),
                ));
            }
        }
        if self.rate == Some(0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "rate 0"));
        }
        Ok(())
    }

    fn burst_bytes(&self) -> f64 {
        match (self.burst, self.rate) {
            (0, Some(rate)) => (rate as f64 / 100.0).max(16384.0),
            (0, None) => 16384.0,
            (b, _) => b as f64,
        }
    }
}

type FilterFn = dyn FnMut(Direction, &[u8]) -> Action + Send;

/// A programmable hook that sees every datagram (before any random
/// impairment) and may drop it. It runs on the relay's task, in arrival order,
/// so it may keep state.
pub struct Filter(Box<FilterFn>);

impl fmt::Debug for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Filter(..)")
    }
}

impl Filter {
    /// A filter from a closure.
    pub fn new(f: impl FnMut(Direction, &[u8]) -> Action + Send + 'static) -> Self {
        Filter(Box::new(f))
    }

    /// What the filter decides for one datagram (the relay calls this; a
    /// filter may also call another one).
    pub fn decide(&mut self, dir: Direction, bytes: &[u8]) -> Action {
        (self.0)(dir, bytes)
    }

    /// Drops the first `n` datagrams for which `predicate` is true, then
    /// lets everything pass.
    pub fn drop_first(
        n: usize,
        mut predicate: impl FnMut(Direction, &[u8]) -> bool + Send + 'static,
    ) -> Self {
        let mut dropped = 0;
        Filter::new(move |dir, bytes| {
            if dropped < n && predicate(dir, bytes) {
                dropped += 1;
                Action::Drop
            } else {
                Action::Pass
            }
        })
    }

    /// Drops the first `n` SYN-ACKs from upstream: uTP STATE packets that
    /// answer a SYN the client sent (same connection id, `ack_nr` = the SYN's
    /// `seq_nr`) while that connection is new (the client has sent nothing
    /// but SYNs on it). A retransmitted SYN's answer counts as another
    /// SYN-ACK.
    #[must_use]
    pub fn drop_syn_acks(n: usize) -> Self {
        // (connection id of the SYN, its seq_nr) of connections not yet
        // confirmed by the client.
        let mut new_conns: Vec<(u16, u16)> = Vec::new();
        let mut dropped = 0;
        Filter::new(move |dir, bytes| {
            let Ok(repr) = Repr::parse_bytes(bytes) else { return Action::Pass };
            match (dir, repr.packet_type) {
                (Direction::ToUpstream, PacketType::Syn) => {
                    let key = (repr.connection_id, repr.seq_nr.0);
                    if !new_conns.contains(&key) {
                        new_conns.push(key);
                    }
                }
                (Direction::ToUpstream, _) => {
                    // The initiator sends on SYN id + 1: the connection is
                    // confirmed.
                    new_conns.retain(|&(id, _)| id.wrapping_add(1) != repr.connection_id);
                }
                (Direction::ToClient, PacketType::State) => {
                    let key = (repr.connection_id, repr.ack_nr.0);
                    if dropped < n && new_conns.contains(&key) {
                        dropped += 1;
                        return Action::Drop;
                    }
                }
                (Direction::ToClient, _) => {}
            }
            Action::Pass
        })
    }
}

/// The uTP packet type of a datagram, if it parses as uTP.
#[must_use]
pub fn utp_packet_type(bytes: &[u8]) -> Option<PacketType> {
    Repr::parse_bytes(bytes).ok().map(|r| r.packet_type)
}

/// Settings of a [`Relay`].
#[derive(Debug)]
pub struct RelayConfig {
    /// Where the relay listens for its client. Default: port 0 on the
    /// loopback address of the upstream's family.
    pub listen: SocketAddr,
    /// Where the client's datagrams go.
    pub upstream: SocketAddr,
    /// Seed of the random decisions.
    pub seed: u64,
    /// Impairments from the client to upstream.
    pub to_upstream: Impairment,
    /// Impairments from upstream to the client.
    pub to_client: Impairment,
    /// Hook that may drop chosen datagrams.
    pub filter: Option<Filter>,
    /// `SO_RCVBUF`/`SO_SNDBUF` of both sockets (`None`: the system's
    /// default). Default 4 MiB, so that the relay itself does not drop
    /// bursts on loopback.
    pub socket_buffer_size: Option<usize>,
}

impl RelayConfig {
    /// A relay to `upstream` without impairments, seed 1, listening on the
    /// loopback address of `upstream`'s family (`127.0.0.1:0` or `[::1]:0`).
    #[must_use]
    pub fn new(upstream: SocketAddr) -> Self {
        let loopback = match upstream {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        RelayConfig {
            listen: SocketAddr::new(loopback, 0),
            upstream,
            seed: 1,
            to_upstream: Impairment::default(),
            to_client: Impairment::default(),
            filter: None,
            socket_buffer_size: Some(4 << 20),
        }
    }

    /// The same impairments in both directions.
    #[must_use]
    pub fn with_impairment(mut self, both: Impairment) -> Self {
        self.to_upstream = both.clone();
        self.to_client = both;
        self
    }

    /// Impairments from the client to upstream.
    #[must_use]
    pub fn with_to_upstream(mut self, imp: Impairment) -> Self {
        self.to_upstream = imp;
        self
    }

    /// Impairments from upstream to the client.
    #[must_use]
    pub fn with_to_client(mut self, imp: Impairment) -> Self {
        self.to_client = imp;
        self
    }

    /// The seed of the random decisions.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The filter hook.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Where to listen.
    #[must_use]
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
}

/// Counters of one direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that entered this direction.
    pub received: u64,
    /// Datagrams sent on (duplicates included).
    pub forwarded: u64,
    /// Bytes sent on (duplicates included).
    pub forwarded_bytes: u64,
    /// Datagrams dropped by the random loss.
    pub lost: u64,
    /// Datagrams dropped by the filter hook.
    pub filtered: u64,
    /// Datagrams dropped because the rate limiter's queue was full.
    pub queue_drops: u64,
    /// Extra copies made by the random duplication.
    pub duplicated: u64,
    /// Datagrams held back by `reorder_delay`.
    pub reordered: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
}

impl DirectionStats {
    /// Every datagram dropped: lost, filtered and queue drops.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.lost + self.filtered + self.queue_drops
    }
}

impl fmt::Display for DirectionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {} forwarded {} ({} bytes) dropped {} (lost {}, filtered {}, queue full {}) \
             duplicated {} reordered {}",
            self.received,
            self.forwarded,
            self.forwarded_bytes,
            self.dropped(),
            self.lost,
            self.filtered,
            self.queue_drops,
            self.duplicated,
            self.reordered,
        )?;
        if self.send_errors > 0 {
            write!(f, " send errors {}", self.send_errors)?;
        }
        Ok(())
    }
}

/// Counters of a relay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to upstream.
    pub to_upstream: DirectionStats,
    /// Upstream to client.
    pub to_client: DirectionStats,
    /// Datagrams from addresses that are neither the client nor upstream
    /// (or from upstream before any client).
    pub ignored: u64,
}

impl RelayStats {
    /// The counters of one direction.
    #[must_use]
    pub fn direction(&self, dir: Direction) -> &DirectionStats {
        match dir {
            Direction::ToUpstream => &self.to_upstream,
            Direction::ToClient => &self.to_client,
        }
    }

    fn direction_mut(&mut self, dir: Direction) -> &mut DirectionStats {
        match dir {
            Direction::ToUpstream => &mut self.to_upstream,
            Direction::ToClient => &mut self.to_client,
        }
    }
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "client -> upstream: {}", self.to_upstream)?;
        write!(f, "upstream -> client: {}", self.to_client)?;
        if self.ignored > 0 {
            write!(f, "\nignored (strangers): {}", self.ignored)?;
        }
        Ok(())
    }
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    upstream_side: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    stats: RelayStats,
    client: Option<SocketAddr>,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Relay {
    /// Binds the relay's two sockets and starts its task on the current
    /// tokio runtime.
    pub async fn start(config: RelayConfig) -> io::Result<Relay> {
        config.to_upstream.check()?;
        config.to_client.check()?;
        let listen = bind_udp(config.listen, config.socket_buffer_size)?;
        let upstream_bind = match config.upstream.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let up = bind_udp(SocketAddr::new(upstream_bind, 0), config.socket_buffer_size)?;
        let local_addr = listen.local_addr()?;
        let upstream_side = up.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let now = Instant::now();
        let lanes = [
            Lane::new(config.to_upstream, lane_seed(config.seed, Direction::ToUpstream), now),
            Lane::new(config.to_client, lane_seed(config.seed, Direction::ToClient), now),
        ];
        let worker = Worker {
            listen,
            up,
            upstream: config.upstream,
            client: None,
            filter: config.filter,
            lanes,
            timers: BinaryHeap::new(),
            order: 0,
            shared: shared.clone(),
        };
        let task = tokio::spawn(worker.run());
        Ok(Relay { local_addr, upstream_side, shared, task })
    }

    /// The address the client dials.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address upstream sees the client's datagrams come from.
    #[must_use]
    pub fn upstream_side_addr(&self) -> SocketAddr {
        self.upstream_side
    }

    /// The client, once it has sent something.
    #[must_use]
    pub fn client_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared).client
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> RelayStats {
        lock(&self.shared).stats
    }

    /// Whether the relay's task is still running (it stops only on drop, or
    /// when a socket fails for good).
    #[must_use]
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bind_udp(addr: SocketAddr, buffer: Option<usize>) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(size) = buffer {
        // Best effort: the kernel caps these at rmem_max/wmem_max.
        let _ = socket.set_recv_buffer_size(size);
        let _ = socket.set_send_buffer_size(size);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

// ------------------------------------------------------------ randomness

/// splitmix64: tiny, and the same numbers on every platform and build.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..1`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn lane_seed(seed: u64, dir: Direction) -> u64 {
    let mut r = Rng(seed ^ (0xA5A5_0000_0000_0000 + dir.index() as u64));
    r.next_u64()
}

/// The random draws of one datagram, always all taken.
struct Draws {
    loss: f64,
    dup: f64,
    reorder: f64,
    jitter: f64,
    dup_jitter: f64,
}

// ------------------------------------------------------------ the task

/// One direction's state: its generator and its rate limiter.
struct Lane {
    imp: Impairment,
    rng: Rng,
    tokens: f64,
    burst: f64,
    refilled: Instant,
    queue: VecDeque<(Vec<u8>, Duration)>,
    queued_bytes: usize,
}

impl Lane {
    fn new(imp: Impairment, seed: u64, now: Instant) -> Self {
        let burst = imp.burst_bytes();
        Lane {
            imp,
            rng: Rng(seed),
            tokens: burst,
            burst,
            refilled: now,
            queue: VecDeque::new(),
            queued_bytes: 0,
        }
    }

    fn draws(&mut self) -> Draws {
        Draws {
            loss: self.rng.unit(),
            dup: self.rng.unit(),
            reorder: self.rng.unit(),
            jitter: self.rng.unit(),
            dup_jitter: self.rng.unit(),
        }
    }

    /// Fixed delay plus jitter for a uniform draw `u`.
    fn delay(&self, u: f64) -> Duration {
        let base = self.imp.delay.as_secs_f64();
        let jitter = self.imp.jitter.as_secs_f64() * (2.0 * u - 1.0);
        Duration::from_secs_f64((base + jitter).max(0.0))
    }

    fn refill(&mut self, now: Instant) {
        if let Some(rate) = self.imp.rate {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate as f64).min(self.burst);
        }
        self.refilled = now;
    }

    /// When the head of the queue may leave, if it cannot now.
    fn next_ready(&self) -> Option<Instant> {
        let (head, _) = self.queue.front()?;
        let rate = self.imp.rate? as f64;
        let need = (head.len() as f64).min(self.burst) - self.tokens;
        let wait = Duration::from_secs_f64((need / rate).max(0.0) + 1e-6);
        Some(self.refilled + wait)
    }
}

struct Timer {
    due: Instant,
    order: u64,
    dir: Direction,
    data: Vec<u8>,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

struct Worker {
    listen: UdpSocket,
    up: UdpSocket,
    upstream: SocketAddr,
    client: Option<SocketAddr>,
    filter: Option<Filter>,
    lanes: [Lane; 2],
    timers: BinaryHeap<Reverse<Timer>>,
    order: u64,
    shared: Arc<Mutex<Shared>>,
}

const FAR: Duration = Duration::from_secs(3600);

impl Worker {
    async fn run(mut self) {
        let mut buf_client = vec![0u8; 65536];
        let mut buf_up = vec![0u8; 65536];
        loop {
            let now = Instant::now();
            self.pump(now);
            self.flush(now).await;
            let wake = [
                self.timers.peek().map(|t| t.0.due),
                self.lanes[0].next_ready(),
                self.lanes[1].next_ready(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + FAR);
            tokio::select! {
                r = self.listen.recv_from(&mut buf_client) => match r {
                    Ok((n, from)) => self.on_client_datagram(&buf_client[..n], from),
                    Err(e) if transient(&e) => {}
                    Err(_) => return,
                },
                r = self.up.recv_from(&mut buf_up) => match r {
                    Ok((n, from)) => self.on_upstream_datagram(&buf_up[..n], from),
                    Err(e) if transient(&e) => {}
                    Err(_) => return,
                },
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn on_client_datagram(&mut self, data: &[u8], from: SocketAddr) {
        match self.client {
            Some(client) if client != from => {
                lock(&self.shared).stats.ignored += 1;
            }
            Some(_) => self.arrive(Direction::ToUpstream, data),
            None => {
                self.client = Some(from);
                lock(&self.shared).client = Some(from);
                self.arrive(Direction::ToUpstream, data);
            }
        }
    }

    fn on_upstream_datagram(&mut self, data: &[u8], from: SocketAddr) {
        if from != self.upstream || self.client.is_none() {
            lock(&self.shared).stats.ignored += 1;
            return;
        }
        self.arrive(Direction::ToClient, data);
    }

    /// Decides the fate of one datagram.
    fn arrive(&mut self, dir: Direction, data: &[u8]) {
        let now = Instant::now();
        let lane = &mut self.lanes[dir.index()];
        let draws = lane.draws();
        let mut shared = lock(&self.shared);
        let stats = shared.stats.direction_mut(dir);
        stats.received += 1;
        if let Some(filter) = &mut self.filter {
            if filter.decide(dir, data) == Action::Drop {
                stats.filtered += 1;
                return;
            }
        }
        if draws.loss < lane.imp.loss {
            stats.lost += 1;
            return;
        }
        let mut delay = lane.delay(draws.jitter);
        if draws.reorder < lane.imp.reorder {
            stats.reordered += 1;
            delay += lane.imp.reorder_delay;
        }
        let mut copies = vec![delay];
        if draws.dup < lane.imp.duplicate {
            stats.duplicated += 1;
            copies.push(lane.delay(draws.dup_jitter));
        }
        for delay in copies {
            if lane.imp.rate.is_some() {
                if lane.queued_bytes + data.len() > lane.imp.queue_limit {
                    stats.queue_drops += 1;
                    continue;
                }
                lane.queued_bytes += data.len();
                lane.queue.push_back((data.to_vec(), delay));
            } else {
                self.order += 1;
                self.timers.push(Reverse(Timer {
                    due: now + delay,
                    order: self.order,
                    dir,
                    data: data.to_vec(),
                }));
            }
        }
    }

    /// Lets datagrams out of the rate limiters into the timer queue.
    fn pump(&mut self, now: Instant) {
        for (i, dir) in [Direction::ToUpstream, Direction::ToClient].into_iter().enumerate() {
            let lane = &mut self.lanes[i];
            if lane.imp.rate.is_none() {
                continue;
            }
            lane.refill(now);
            while let Some((head, _)) = lane.queue.front() {
                let len = head.len() as f64;
                if lane.tokens < len.min(lane.burst) {
                    break;
                }
                lane.tokens -= len;
                let (data, delay) = lane.queue.pop_front().expect("front exists");
                lane.queued_bytes -= data.len();
                self.order += 1;
                self.timers.push(Reverse(Timer { due: now + delay, order: self.order, dir, data }));
            }
        }
    }

    /// Sends every datagram that is due.
    async fn flush(&mut self, now: Instant) {
        while self.timers.peek().is_some_and(|t| t.0.due <= now) {
            let Reverse(timer) = self.timers.pop().expect("peeked");
            let sent = match timer.dir {
                Direction::ToUpstream => self.up.send_to(&timer.data, self.upstream).await,
                Direction::ToClient => {
                    let client = self.client.expect("a client sent first");
                    self.listen.send_to(&timer.data, client).await
                }
            };
            let mut shared = lock(&self.shared);
            let stats = shared.stats.direction_mut(timer.dir);
            match sent {
                Ok(n) => {
                    stats.forwarded += 1;
                    stats.forwarded_bytes += n as u64;
                }
                Err(_) => stats.send_errors += 1,
            }
        }
    }
}

/// Errors after which the socket still works (ICMP reports and the like).
fn transient(e: &io::Error) -> bool {
    !matches!(e.kind(), io::ErrorKind::NotConnected | io::ErrorKind::InvalidInput)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_stable() {
        // Reference values of splitmix64 with seed 0.
        let mut r = Rng(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn delay_with_jitter_stays_in_range() {
        let imp =
            Impairment::none().with_delay(Duration::from_millis(20), Duration::from_millis(5));
        let lane = Lane::new(imp, 1, Instant::now());
        assert_eq!(lane.delay(0.0), Duration::from_millis(15));
        assert_eq!(lane.delay(0.5), Duration::from_millis(20));
        assert!(lane.delay(0.999_999) <= Duration::from_millis(25));
    }
}
