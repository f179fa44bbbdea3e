//! Deterministic model of one direction of a network path, for simulation tests.
//!
//! In the style of quinn-proto's `tests/util.rs` and smoltcp's netsim test: a [`Link`] carries
//! datagrams from one endpoint to another with configurable propagation delay, jitter, a
//! bottleneck of finite bandwidth with a tail-drop queue, MTU limit, random loss, duplication,
//! reordering and corruption (see [`LinkConfig`]).
//!
//! There is no real clock. Every method that needs the time takes a `now: Instant` chosen by
//! the caller: a test harness picks an arbitrary base `Instant` and advances it by `Duration`s
//! (a virtual clock), typically jumping straight to the earliest of [`Link::next_delivery`] and
//! the endpoints' own timers. All randomness comes from a `SmallRng` seeded by the caller, so
//! the same seed and the same sequence of calls always give the same result (for a given build:
//! `SmallRng`'s algorithm may change between `rand` versions and platforms).
//!
//! # Model
//!
//! For each datagram passed to [`Link::send`] at time `now`, in this order:
//!
//! 1. **MTU**: a datagram longer than [`LinkConfig::mtu`] is dropped (`dropped_mtu`) when it is
//!    sent with don't-fragment (every datagram of [`Link::send`]; see [`Link::send_df`]).
//!    Without don't-fragment it is fragmented as an IPv4 router would (`fragmented`): it
//!    crosses as one unit that takes `k` times as many header bytes and arrives only if all its
//!    `k = ceil(len / (mtu - 8))` fragments do, i.e. its loss probability is
//!    `1 - (1 - loss)^k`.
//! 2. **Bottleneck**: a FIFO serializer. Transmission starts at `max(now, end of previous
//!    transmission)` and lasts `len / bandwidth`. A datagram that cannot start at once waits in
//!    the queue; if the datagrams already waiting (not yet started) plus this one would exceed
//!    [`LinkConfig::queue_bytes`] or [`LinkConfig::queue_packets`], it is tail-dropped
//!    (`dropped_queue`). The datagram being transmitted does not count towards the queue, so an
//!    idle link always accepts a datagram, even with a queue of 0. The wait before the start of
//!    transmission is the datagram's *queueing delay* (recorded in the stats). With
//!    `bandwidth: None` transmission is instantaneous and nothing ever queues.
//! 3. **Loss**: with probability [`LinkConfig::loss`] the datagram is lost on the wire after
//!    the bottleneck (`dropped_loss`); it still used its share of the bandwidth.
//! 4. **Corruption**: with probability [`LinkConfig::corrupt`] exactly one byte, at a uniformly
//!    random position, is XORed with a random non-zero mask (`corrupted`; empty datagrams are
//!    never corrupted).
//! 5. **Duplication**: with probability [`LinkConfig::duplicate`] a second, byte-identical copy
//!    is delivered too (`duplicated`). The copy is made after the bottleneck: it uses no
//!    bandwidth or queue space, and it gets its own jitter and reorder draws.
//! 6. **Delivery time** of each copy: `end of transmission + latency + U(0..=jitter)`, plus
//!    [`LinkConfig::reorder_delay`] with probability [`LinkConfig::reorder`] (`reordered`).
//!
//! Datagrams come out of [`Link::poll_recv`] in delivery-time order; equal times come out in the
//! order they were sent. Every datagram consumes the same number of random draws whatever
//! happens to it, so changing e.g. the queue size does not change the loss pattern of the other
//! datagrams.
//!
//! # Cross traffic
//!
//! Several flows can share one link (and so one bottleneck): send with [`Link::send_tagged`]
//! and receive with [`Link::poll_recv_tagged`], which returns the tag with each datagram. Per
//! flow counters are kept by [`Link::flow_stats`]. Untagged calls use tag 0.
//!
//! # Cost
//!
//! `send` and `poll_recv` are O(log n) in the number of datagrams in flight (a `BinaryHeap`
//! keyed by `(delivery time, sequence number)`) plus O(log f) in the number of flow tags.

#![allow(dead_code, unreachable_pub)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Value of [`LinkConfig::queue_bytes`], [`LinkConfig::queue_packets`] or [`LinkConfig::mtu`]
/// that means "no limit".
pub const UNLIMITED: usize = usize::MAX;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parameters of one direction of a path. Start from [`LinkConfig::ideal`] and adjust with the
/// `with_*` helpers, or set the public fields directly.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way propagation delay, added after the datagram has left the bottleneck.
    pub latency: Duration,
    /// Uniform extra delay in `0..=jitter` drawn per datagram; it can reorder datagrams.
    pub jitter: Duration,
    /// Bottleneck rate in bytes per second; `None` means infinite (no serialization delay).
    pub bandwidth: Option<u64>,
    /// Bottleneck queue capacity in bytes, excluding the datagram being transmitted; a datagram
    /// that does not fit is tail-dropped. [`UNLIMITED`] for no limit.
    pub queue_bytes: usize,
    /// Bottleneck queue capacity in datagrams, excluding the one being transmitted.
    /// [`UNLIMITED`] for no limit.
    pub queue_packets: usize,
    /// Largest datagram (UDP payload) carried: 1472 by default, what a 1500-byte IPv4 path
    /// carries; longer ones are dropped or fragmented. [`UNLIMITED`] for no limit.
    pub mtu: usize,
    /// Probability in `[0, 1]` that a datagram is lost.
    pub loss: f64,
    /// Probability in `[0, 1]` that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability in `[0, 1]` that a datagram is held back by an extra `reorder_delay`.
    pub reorder: f64,
    /// Extra delay of the datagrams selected by `reorder`.
    pub reorder_delay: Duration,
    /// Probability in `[0, 1]` that one random byte of a datagram is flipped.
    pub corrupt: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self::ideal()
    }
}

impl LinkConfig {
    /// A perfect link: no delay, infinite bandwidth, no limits, no impairments.
    pub fn ideal() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            bandwidth: None,
            queue_bytes: UNLIMITED,
            queue_packets: UNLIMITED,
            mtu: 1472,
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
            corrupt: 0.0,
        }
    }

    /// Sets the one-way propagation delay.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the maximum uniform extra delay per datagram.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the bottleneck rate in bytes per second (must be > 0).
    pub fn with_bandwidth(mut self, bytes_per_sec: u64) -> Self {
        self.bandwidth = Some(bytes_per_sec);
        self
    }

    /// Sets the bottleneck queue capacity in bytes.
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Sets the bottleneck queue capacity in datagrams.
    pub fn with_queue_packets(mut self, packets: usize) -> Self {
        self.queue_packets = packets;
        self
    }

    /// Sizes the queue in time: `queue_bytes = bandwidth * time` (e.g. "a 100 ms buffer").
    ///
    /// # Panics
    /// If no bandwidth has been set.
    pub fn with_queue_time(mut self, time: Duration) -> Self {
        let bw = self.bandwidth.expect("with_queue_time needs a bandwidth: call with_bandwidth");
        let bytes = u128::from(bw) * time.as_nanos() / NANOS_PER_SEC;
        self.queue_bytes = usize::try_from(bytes).unwrap_or(UNLIMITED);
        self
    }

    /// Sets the largest datagram carried.
    pub fn with_mtu(mut self, mtu: usize) -> Self {
        self.mtu = mtu;
        self
    }

    /// Sets the random loss probability.
    pub fn with_loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// Sets the duplication probability.
    pub fn with_duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }

    /// Holds back a fraction `p` of the datagrams by an extra `delay`.
    pub fn with_reorder(mut self, p: f64, delay: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = delay;
        self
    }

    /// Sets the corruption probability.
    pub fn with_corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }

    /// Time to serialize `len` bytes at the bottleneck, rounded down to whole nanoseconds
    /// (the link itself carries the remainder over, so long runs keep the exact rate).
    pub fn transmit_time(&self, len: usize) -> Duration {
        match self.bandwidth {
            None => Duration::ZERO,
            Some(bw) => nanos((len as u128 * NANOS_PER_SEC) / u128::from(bw)),
        }
    }

    /// Panics with a description if the configuration is not usable.
    pub fn validate(&self) {
        for (name, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ] {
            assert!((0.0..=1.0).contains(&p), "LinkConfig::{name} = {p} is not in [0, 1]");
        }
        assert!(self.bandwidth != Some(0), "LinkConfig::bandwidth must be > 0 (None = infinite)");
    }
}

/// Counters of a [`Link`] (or of one flow on it, see [`Link::flow_stats`]).
///
/// Accounting identity: `sent + duplicated == delivered + dropped() + in flight`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Datagrams passed to `send`.
    pub sent: u64,
    /// Bytes passed to `send`.
    pub sent_bytes: u64,
    /// Datagrams returned by `poll_recv` (duplicates included).
    pub delivered: u64,
    /// Bytes returned by `poll_recv` (duplicates included).
    pub delivered_bytes: u64,
    /// Datagrams dropped for exceeding the MTU with don't-fragment set.
    pub dropped_mtu: u64,
    /// Datagrams over the MTU fragmented (sent without don't-fragment).
    pub fragmented: u64,
    /// Datagrams tail-dropped by the full bottleneck queue.
    pub dropped_queue: u64,
    /// Datagrams lost at random.
    pub dropped_loss: u64,
    /// Extra copies created by duplication.
    pub duplicated: u64,
    /// Datagrams with one byte flipped.
    pub corrupted: u64,
    /// Copies held back by `reorder_delay`.
    pub reordered: u64,
    /// Datagrams accepted by the bottleneck (the denominator of the mean queueing delay).
    pub accepted: u64,
    /// Sum of the queueing delays of the accepted datagrams.
    pub total_queue_delay: Duration,
    /// Largest queueing delay of an accepted datagram.
    pub max_queue_delay: Duration,
}

impl LinkStats {
    /// All datagrams dropped, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_mtu + self.dropped_queue + self.dropped_loss
    }

    /// Mean queueing delay of the datagrams accepted by the bottleneck.
    pub fn mean_queue_delay(&self) -> Duration {
        if self.accepted == 0 {
            return Duration::ZERO;
        }
        nanos(self.total_queue_delay.as_nanos() / u128::from(self.accepted))
    }
}

/// One direction of a simulated path. See the [module documentation](self) for the model.
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    rng: SmallRng,
    /// Time of the latest `send`; sends must not go back in time.
    last_send: Option<Instant>,
    /// When the serializer finishes the last accepted datagram.
    busy_until: Option<Instant>,
    /// Remainder of the serialization time, in units of 1 / (bandwidth * 1e9) s.
    carry: u128,
    /// Accepted datagrams whose transmission has not started: (start, len), start ascending.
    waiting: VecDeque<(Instant, usize)>,
    waiting_bytes: usize,
    in_flight: BinaryHeap<InFlight>,
    next_seq: u64,
    stats: LinkStats,
    flows: BTreeMap<u32, LinkStats>,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    seq: u64,
    tag: u32,
    data: Vec<u8>,
}

impl Ord for InFlight {
    /// Reversed, so that the max-heap yields the earliest `(at, seq)` first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for InFlight {}

/// The random draws of one datagram, always taken in full so that every datagram consumes the
/// same amount of randomness.
struct Draws {
    loss: f64,
    corrupt: f64,
    corrupt_pos: u64,
    corrupt_mask: u64,
    duplicate: f64,
    jitter: [u64; 2],
    reorder: [f64; 2],
}

impl Draws {
    fn new(rng: &mut SmallRng) -> Self {
        let mut unit = || unit_f64(rng.gen());
        let loss = unit();
        let corrupt = unit();
        let duplicate = unit();
        let reorder = [unit(), unit()];
        Self {
            loss,
            corrupt,
            duplicate,
            reorder,
            corrupt_pos: rng.gen(),
            corrupt_mask: rng.gen(),
            jitter: [rng.gen(), rng.gen()],
        }
    }
}

impl Link {
    /// Creates an empty link; all its randomness derives from `seed`.
    ///
    /// # Panics
    /// If `config` is invalid (see [`LinkConfig::validate`]).
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        config.validate();
        Self {
            config,
            rng: SmallRng::seed_from_u64(seed),
            last_send: None,
            busy_until: None,
            carry: 0,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            in_flight: BinaryHeap::new(),
            next_seq: 0,
            stats: LinkStats::default(),
            flows: BTreeMap::new(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// Replaces the configuration (e.g. a route change mid-test). It applies to datagrams sent
    /// from now on; those already accepted keep their schedule. A lower latency can therefore
    /// make new datagrams overtake older ones, as on a real route change.
    ///
    /// # Panics
    /// If `config` is invalid (see [`LinkConfig::validate`]).
    pub fn set_config(&mut self, config: LinkConfig) {
        config.validate();
        self.config = config;
    }

    /// Sends a datagram of flow 0 at `now`. See [`Link::send_tagged`].
    pub fn send(&mut self, now: Instant, datagram: Vec<u8>) {
        self.send_tagged(now, 0, datagram);
    }

    /// Sends a datagram of flow 0 at `now`, with don't-fragment set or not: a datagram over
    /// the MTU is dropped with it and fragmented without it.
    pub fn send_df(&mut self, now: Instant, datagram: Vec<u8>, dont_fragment: bool) {
        self.send_inner(now, 0, datagram, dont_fragment);
    }

    /// Sends a datagram of flow `tag` at `now`: applies the MTU, the bottleneck queue, loss,
    /// corruption and duplication, and schedules the surviving copies for delivery.
    ///
    /// # Panics
    /// If `now` is earlier than the `now` of a previous send.
    pub fn send_tagged(&mut self, now: Instant, tag: u32, datagram: Vec<u8>) {
        self.send_inner(now, tag, datagram, true);
    }

    fn send_inner(&mut self, now: Instant, tag: u32, datagram: Vec<u8>, dont_fragment: bool) {
        if let Some(last) = self.last_send {
            assert!(now >= last, "Link::send: time went backwards ({now:?} < {last:?})");
        }
        self.last_send = Some(now);
        let draws = Draws::new(&mut self.rng);
        let len = datagram.len();
        self.count(tag, |s| {
            s.sent += 1;
            s.sent_bytes += len as u64;
        });

        let mut fragments = 1;
        if len > self.config.mtu {
            if dont_fragment || self.config.mtu <= 8 {
                self.count(tag, |s| s.dropped_mtu += 1);
                return;
            }
            // IPv4 fragments carry 8-byte-aligned data and repeat the 20-byte IP header.
            let per_fragment = (self.config.mtu - 8) / 8 * 8;
            fragments = len.div_ceil(per_fragment.max(8));
            self.count(tag, |s| s.fragmented += 1);
        }
        // Extra IP headers of the fragments take bandwidth and queue space.
        let len = len + (fragments - 1) * 20;

        // Bottleneck: FIFO serializer with a tail-drop queue.
        while self.waiting.front().is_some_and(|&(start, _)| start <= now) {
            let (_, l) = self.waiting.pop_front().expect("front exists");
            self.waiting_bytes -= l;
        }
        let start = match self.busy_until {
            Some(busy) if busy > now => busy,
            _ => {
                self.carry = 0;
                now
            }
        };
        if start > now {
            let too_many_bytes = self.waiting_bytes.saturating_add(len) > self.config.queue_bytes;
            let too_many_packets = self.waiting.len() >= self.config.queue_packets;
            if too_many_bytes || too_many_packets {
                self.count(tag, |s| s.dropped_queue += 1);
                return;
            }
            self.waiting.push_back((start, len));
            self.waiting_bytes += len;
        }
        let finish = match self.config.bandwidth {
            None => start,
            Some(bw) => {
                let num = len as u128 * NANOS_PER_SEC + self.carry;
                self.carry = num % u128::from(bw);
                start + nanos(num / u128::from(bw))
            }
        };
        self.busy_until = Some(finish);
        let queue_delay = start - now;
        self.count(tag, |s| {
            s.accepted += 1;
            s.total_queue_delay += queue_delay;
            s.max_queue_delay = s.max_queue_delay.max(queue_delay);
        });

        let loss = 1.0 - (1.0 - self.config.loss).powi(fragments as i32);
        if draws.loss < loss {
            self.count(tag, |s| s.dropped_loss += 1);
            return;
        }

        let mut data = datagram;
        if draws.corrupt < self.config.corrupt && !data.is_empty() {
            let pos = below(draws.corrupt_pos, data.len() as u64) as usize;
            let mask = 1 + below(draws.corrupt_mask, 255) as u8;
            data[pos] ^= mask;
            self.count(tag, |s| s.corrupted += 1);
        }

        let copies = if draws.duplicate < self.config.duplicate {
            self.count(tag, |s| s.duplicated += 1);
            2
        } else {
            1
        };
        let jitter = self.config.jitter.as_nanos();
        for copy in 0..copies {
            let mut at = finish + self.config.latency;
            if jitter > 0 {
                at += nanos(below_u128(draws.jitter[copy], jitter + 1));
            }
            if draws.reorder[copy] < self.config.reorder {
                at += self.config.reorder_delay;
                self.count(tag, |s| s.reordered += 1);
            }
            let data = if copy + 1 == copies { std::mem::take(&mut data) } else { data.clone() };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.in_flight.push(InFlight { at, seq, tag, data });
        }
    }

    /// Next datagram (of any flow) whose delivery time is `<= now`, earliest first. See
    /// [`Link::poll_recv_tagged`].
    pub fn poll_recv(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.poll_recv_tagged(now).map(|(_, data)| data)
    }

    /// Next datagram whose delivery time is `<= now`, with its flow tag: in delivery-time
    /// order, and in send order for equal delivery times. Unlike `send`, `now` may be earlier
    /// than in a previous call.
    pub fn poll_recv_tagged(&mut self, now: Instant) -> Option<(u32, Vec<u8>)> {
        if self.in_flight.peek()?.at > now {
            return None;
        }
        let InFlight { tag, data, .. } = self.in_flight.pop()?;
        let len = data.len() as u64;
        self.count(tag, |s| {
            s.delivered += 1;
            s.delivered_bytes += len;
        });
        Some((tag, data))
    }

    /// Delivery time of the next datagram, if any is in flight.
    pub fn next_delivery(&self) -> Option<Instant> {
        self.in_flight.peek().map(|d| d.at)
    }

    /// Number of datagram copies scheduled but not yet returned by `poll_recv`.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Counters over all flows.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Counters of flow `tag` (all zero if the tag was never used).
    pub fn flow_stats(&self, tag: u32) -> LinkStats {
        self.flows.get(&tag).copied().unwrap_or_default()
    }

    /// Current queueing delay at the bottleneck: how long a datagram sent at `now` would wait
    /// before its transmission starts.
    pub fn queue_delay(&self, now: Instant) -> Duration {
        self.busy_until.map_or(Duration::ZERO, |busy| busy.saturating_duration_since(now))
    }

    /// Bytes waiting in the bottleneck queue at `now` (excluding the datagram being
    /// transmitted). O(queue length).
    pub fn queued_bytes(&self, now: Instant) -> usize {
        self.queued(now).map(|&(_, len)| len).sum()
    }

    /// Datagrams waiting in the bottleneck queue at `now` (excluding the one being
    /// transmitted). O(queue length).
    pub fn queued_packets(&self, now: Instant) -> usize {
        self.queued(now).count()
    }

    fn queued(&self, now: Instant) -> impl Iterator<Item = &(Instant, usize)> {
        self.waiting.iter().rev().take_while(move |&&(start, _)| start > now)
    }

    fn count(&mut self, tag: u32, f: impl Fn(&mut LinkStats)) {
        f(&mut self.stats);
        f(self.flows.entry(tag).or_default());
    }
}

/// Uniform in `[0, 1)` from 64 random bits.
fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Maps 64 random bits to `0..n` (n > 0) by multiply-shift; the bias is at most n / 2^64.
fn below(bits: u64, n: u64) -> u64 {
    ((u128::from(bits) * u128::from(n)) >> 64) as u64
}

/// Like [`below`] for a `u128` bound; bounds above 2^64 are clamped (over 584 years in ns).
fn below_u128(bits: u64, n: u128) -> u128 {
    u128::from(below(bits, u64::try_from(n).unwrap_or(u64::MAX)))
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).expect("duration overflows u64 nanoseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Delivers everything due by `until`, returning `(delivery time, tag, data)`, by stepping
    /// the virtual clock from delivery to delivery as a harness would.
    fn drain(link: &mut Link, until: Instant) -> Vec<(Instant, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(at) = link.next_delivery().filter(|&at| at <= until) {
            let (tag, data) = link.poll_recv_tagged(at).expect("due datagram");
            out.push((at, tag, data));
        }
        out
    }

    fn numbered(i: u32, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len.max(4)];
        v[..4].copy_from_slice(&i.to_be_bytes());
        v
    }

    fn number(data: &[u8]) -> u32 {
        u32::from_be_bytes(data[..4].try_into().unwrap())
    }

    fn assert_accounting(link: &Link) {
        let s = link.stats();
        assert_eq!(
            s.sent + s.duplicated,
            s.delivered + s.dropped() + link.in_flight() as u64,
            "{s:?}"
        );
    }

    #[test]
    fn ideal_link_is_instantaneous() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(), 0);
        assert_eq!(link.next_delivery(), None);
        link.send(t0, vec![1, 2, 3]);
        assert_eq!(link.next_delivery(), Some(t0));
        assert_eq!(link.poll_recv(t0), Some(vec![1, 2, 3]));
        assert_eq!(link.poll_recv(t0), None);
        assert_eq!(link.queue_delay(t0), Duration::ZERO);
    }

    #[test]
    fn delivers_in_order_after_exactly_latency() {
        let t0 = Instant::now();
        let lat = ms(40);
        let mut link = Link::new(LinkConfig::ideal().with_latency(lat), 1);
        for i in 0..100u32 {
            link.send(t0 + i * MS, numbered(i, 100));
        }
        // Nothing arrives a nanosecond early.
        assert_eq!(link.poll_recv(t0 + lat - Duration::from_nanos(1)), None);
        let got = drain(&mut link, t0 + ms(1000));
        assert_eq!(got.len(), 100);
        for (i, (at, tag, data)) in got.iter().enumerate() {
            assert_eq!(*at, t0 + lat + i as u32 * MS);
            assert_eq!(*tag, 0);
            assert_eq!(*data, numbered(i as u32, 100));
        }
        let s = link.stats();
        assert_eq!((s.sent, s.delivered, s.dropped()), (100, 100, 0));
        assert_eq!((s.sent_bytes, s.delivered_bytes), (10_000, 10_000));
        assert_eq!(s.max_queue_delay, Duration::ZERO);
        assert_accounting(&link);
    }

    #[test]
    fn equal_delivery_times_keep_send_order() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_latency(ms(5)), 2);
        for i in 0..50u32 {
            link.send(t0, numbered(i, 8));
        }
        let later = t0 + ms(5);
        for i in 0..50u32 {
            assert_eq!(link.poll_recv(later).map(|d| number(&d)), Some(i));
        }
    }

    #[test]
    fn poll_recv_returns_only_due_datagrams() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_latency(ms(10)), 3);
        link.send(t0, vec![1]);
        link.send(t0 + ms(5), vec![2]);
        assert_eq!(link.poll_recv(t0 + ms(9)), None);
        assert_eq!(link.poll_recv(t0 + ms(12)), Some(vec![1]));
        assert_eq!(link.poll_recv(t0 + ms(12)), None);
        assert_eq!(link.next_delivery(), Some(t0 + ms(15)));
        // An overdue datagram comes out whenever polled.
        assert_eq!(link.poll_recv(t0 + ms(100)), Some(vec![2]));
        assert_eq!(link.next_delivery(), None);
    }

    #[test]
    fn bandwidth_serialization_timing_is_exact() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_latency(ms(10)).with_bandwidth(1_000_000);
        assert_eq!(cfg.transmit_time(1000), MS);
        let mut link = Link::new(cfg, 4);
        // A burst of 20 x 1000 bytes at 1 MB/s: 1 ms apart.
        for i in 0..20u32 {
            link.send(t0, numbered(i, 1000));
        }
        assert_eq!(link.queue_delay(t0), ms(20));
        assert_eq!(link.queued_packets(t0), 19);
        assert_eq!(link.queued_bytes(t0), 19_000);
        let got = drain(&mut link, t0 + ms(1000));
        assert_eq!(got.len(), 20);
        for (i, (at, _, data)) in got.iter().enumerate() {
            assert_eq!(*at, t0 + ms(10) + (i as u32 + 1) * MS, "datagram {i}");
            assert_eq!(number(data), i as u32);
        }
        let s = link.stats();
        assert_eq!(s.max_queue_delay, ms(19));
        // Mean of 0, 1, ..., 19 ms.
        assert_eq!(s.mean_queue_delay(), Duration::from_micros(9500));
    }

    #[test]
    fn idle_link_starts_transmission_at_send_time() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_latency(ms(10)).with_bandwidth(1_000_000);
        let mut link = Link::new(cfg, 5);
        link.send(t0, vec![0; 1000]);
        // Sent while the first is still being transmitted: waits 0.5 ms.
        link.send(t0 + Duration::from_micros(500), vec![0; 1000]);
        // Sent long after the link went idle: no wait.
        link.send(t0 + ms(50), vec![0; 1000]);
        let times: Vec<_> = drain(&mut link, t0 + ms(100)).into_iter().map(|d| d.0).collect();
        assert_eq!(times, vec![t0 + ms(11), t0 + ms(12), t0 + ms(61)]);
        assert_eq!(link.stats().max_queue_delay, Duration::from_micros(500));
    }

    #[test]
    fn fractional_rate_carries_remainder() {
        let t0 = Instant::now();
        // 3 bytes/s: each byte takes 333.33.. ms; three bytes take exactly 1 s.
        let mut link = Link::new(LinkConfig::ideal().with_bandwidth(3), 6);
        for _ in 0..3 {
            link.send(t0, vec![0]);
        }
        let times: Vec<_> = drain(&mut link, t0 + ms(2000)).into_iter().map(|d| d.0).collect();
        let ns = Duration::from_nanos;
        assert_eq!(times, vec![t0 + ns(333_333_333), t0 + ns(666_666_666), t0 + ns(1_000_000_000)]);
    }

    #[test]
    fn queue_delay_drains_over_time() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_bandwidth(1_000_000), 7);
        for _ in 0..10 {
            link.send(t0, vec![0; 1000]);
        }
        assert_eq!(link.queue_delay(t0), ms(10));
        assert_eq!(link.queue_delay(t0 + ms(4)), ms(6));
        assert_eq!(link.queued_packets(t0 + ms(4)), 5);
        assert_eq!(link.queued_packets(t0 + Duration::from_micros(4500)), 5);
        assert_eq!(link.queue_delay(t0 + ms(10)), Duration::ZERO);
        assert_eq!(link.queue_delay(t0 + ms(30)), Duration::ZERO);
        assert_eq!(link.queued_bytes(t0 + ms(30)), 0);
    }

    #[test]
    fn queue_overflow_drops_the_tail() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_bandwidth(1000).with_queue_bytes(2500);
        let mut link = Link::new(cfg, 8);
        for i in 0..10u32 {
            link.send(t0, numbered(i, 1000));
        }
        // One in transmission plus two waiting (2000 <= 2500); a third would make 3000.
        let s = link.stats();
        assert_eq!((s.accepted, s.dropped_queue), (3, 7));
        assert_eq!(link.queued_bytes(t0), 2000);
        let got: Vec<_> =
            drain(&mut link, t0 + ms(10_000)).into_iter().map(|d| number(&d.2)).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert_accounting(&link);

        // Once the first has left, there is room for exactly one more.
        let mut link =
            Link::new(LinkConfig::ideal().with_bandwidth(1000).with_queue_bytes(2500), 8);
        for i in 0..3u32 {
            link.send(t0, numbered(i, 1000));
        }
        link.send(t0 + ms(1000), numbered(3, 1000));
        link.send(t0 + ms(1000), numbered(4, 1000));
        assert_eq!(link.stats().dropped_queue, 1);
        let got: Vec<_> =
            drain(&mut link, t0 + ms(10_000)).into_iter().map(|d| number(&d.2)).collect();
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn zero_queue_accepts_only_when_idle() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_bandwidth(1000).with_queue_bytes(0);
        let mut link = Link::new(cfg, 9);
        link.send(t0, vec![0; 100]); // 100 ms of transmission
        link.send(t0 + ms(50), vec![0; 100]); // busy: dropped
        link.send(t0 + ms(100), vec![0; 100]); // idle again
        let s = link.stats();
        assert_eq!((s.accepted, s.dropped_queue), (2, 1));
    }

    #[test]
    fn packet_count_limit() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_bandwidth(1000).with_queue_packets(4);
        let mut link = Link::new(cfg, 10);
        for _ in 0..10 {
            link.send(t0, vec![0; 10]);
        }
        let s = link.stats();
        assert_eq!((s.accepted, s.dropped_queue), (5, 5));
        assert_eq!(link.queued_packets(t0), 4);
    }

    #[test]
    fn queue_time_sizes_buffer_from_bandwidth() {
        let cfg = LinkConfig::ideal().with_bandwidth(125_000).with_queue_time(ms(100));
        assert_eq!(cfg.queue_bytes, 12_500);
    }

    #[test]
    fn mtu_drops_oversized() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_mtu(1400), 11);
        link.send(t0, vec![0; 1400]);
        link.send(t0, vec![0; 1401]);
        link.send(t0, vec![0; 9000]);
        link.send(t0, vec![]);
        let got = drain(&mut link, t0);
        assert_eq!(got.iter().map(|d| d.2.len()).collect::<Vec<_>>(), vec![1400, 0]);
        let s = link.stats();
        assert_eq!((s.sent, s.dropped_mtu, s.delivered), (4, 2, 2));
        assert_accounting(&link);
    }

    #[test]
    fn oversized_datagram_does_not_occupy_bottleneck() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_mtu(1000).with_bandwidth(1_000_000);
        let mut link = Link::new(cfg, 12);
        link.send(t0, vec![0; 5000]);
        assert_eq!(link.queue_delay(t0), Duration::ZERO);
    }

    #[test]
    fn loss_rate_matches_probability() {
        let t0 = Instant::now();
        let n = 100_000u32;
        for (seed, p) in [(13, 0.01), (14, 0.1), (15, 0.5)] {
            let mut link = Link::new(LinkConfig::ideal().with_loss(p), seed);
            for i in 0..n {
                link.send(t0, numbered(i, 4));
                // Keep the heap small; loss does not depend on it.
                while link.poll_recv(t0).is_some() {}
            }
            let s = link.stats();
            let rate = s.dropped_loss as f64 / f64::from(n);
            // Standard deviation is at most 0.0016; allow about 4 of them.
            assert!((rate - p).abs() < 0.006, "p = {p}: measured {rate}");
            assert_eq!(s.delivered + s.dropped_loss, u64::from(n));
            assert_accounting(&link);
        }
    }

    #[test]
    fn loss_extremes() {
        let t0 = Instant::now();
        let mut all = Link::new(LinkConfig::ideal().with_loss(1.0), 16);
        let mut none = Link::new(LinkConfig::ideal().with_loss(0.0), 16);
        for _ in 0..1000 {
            all.send(t0, vec![1]);
            none.send(t0, vec![1]);
        }
        assert_eq!(all.stats().dropped_loss, 1000);
        assert_eq!(none.stats().dropped_loss, 0);
    }

    #[test]
    fn lost_datagrams_still_use_bandwidth() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_bandwidth(1_000_000).with_loss(1.0);
        let mut link = Link::new(cfg, 17);
        for _ in 0..5 {
            link.send(t0, vec![0; 1000]);
        }
        assert_eq!(link.queue_delay(t0), ms(5));
        assert_eq!(link.in_flight(), 0);
    }

    #[test]
    fn duplication_delivers_two_identical_copies() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_latency(ms(3)).with_duplicate(1.0), 18);
        for i in 0..10u32 {
            link.send(t0 + i * MS, numbered(i, 20));
        }
        let got = drain(&mut link, t0 + ms(100));
        assert_eq!(got.len(), 20);
        for (i, pair) in got.chunks(2).enumerate() {
            assert_eq!(pair[0].2, numbered(i as u32, 20));
            assert_eq!(pair[0].2, pair[1].2);
            assert_eq!(pair[0].0, pair[1].0);
        }
        let s = link.stats();
        assert_eq!((s.sent, s.duplicated, s.delivered), (10, 10, 20));
        assert_eq!(s.accepted, 10);
        assert_accounting(&link);
    }

    #[test]
    fn duplication_rate_and_no_extra_bandwidth() {
        let t0 = Instant::now();
        let n = 20_000u32;
        let cfg = LinkConfig::ideal().with_bandwidth(1_000_000).with_duplicate(0.25);
        let mut link = Link::new(cfg, 19);
        for i in 0..n {
            // Exactly at line rate: a duplicate would otherwise build a queue.
            link.send(t0 + i * MS, vec![0; 1000]);
        }
        let s = link.stats();
        let rate = s.duplicated as f64 / f64::from(n);
        assert!((rate - 0.25).abs() < 0.015, "measured {rate}");
        assert_eq!(s.max_queue_delay, Duration::ZERO);
        assert_eq!(link.in_flight() as u64, u64::from(n) + s.duplicated);
    }

    #[test]
    fn reordering_holds_back_selected_datagrams() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_latency(ms(20)).with_reorder(0.2, ms(10));
        let mut link = Link::new(cfg, 20);
        let n = 1000u32;
        for i in 0..n {
            link.send(t0 + i * MS, numbered(i, 8));
        }
        let got = drain(&mut link, t0 + ms(10_000));
        assert_eq!(got.len(), n as usize);
        let mut held = 0;
        for (at, _, data) in &got {
            let sent = t0 + number(data) * MS;
            let delay = *at - sent;
            assert!(delay == ms(20) || delay == ms(30), "delay {delay:?}");
            held += u64::from(delay == ms(30));
        }
        let s = link.stats();
        assert_eq!(s.reordered, held);
        assert!((150..250).contains(&held), "held back {held}");
        let order: Vec<u32> = got.iter().map(|d| number(&d.2)).collect();
        let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions > 50, "only {inversions} inversions");
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn jitter_stays_in_bounds_and_reorders() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_latency(ms(50)).with_jitter(ms(5));
        let mut link = Link::new(cfg, 21);
        let n = 2000u32;
        for i in 0..n {
            link.send(t0 + i * Duration::from_micros(500), numbered(i, 8));
        }
        let got = drain(&mut link, t0 + ms(10_000));
        let mut min = Duration::MAX;
        let mut max = Duration::ZERO;
        for (at, _, data) in &got {
            let delay = *at - (t0 + number(data) * Duration::from_micros(500));
            min = min.min(delay);
            max = max.max(delay);
        }
        assert!(min >= ms(50) && max <= ms(55), "{min:?}..{max:?}");
        // Spread over most of the range.
        assert!(min < ms(50) + Duration::from_micros(100), "{min:?}");
        assert!(max > ms(55) - Duration::from_micros(100), "{max:?}");
        let order: Vec<u32> = got.iter().map(|d| number(&d.2)).collect();
        assert!(order.windows(2).any(|w| w[0] > w[1]));
        assert_eq!(link.stats().reordered, 0);
    }

    #[test]
    fn corruption_flips_exactly_one_byte() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_corrupt(1.0), 22);
        let original: Vec<u8> = (0..200u8).collect();
        let mut positions = std::collections::HashSet::new();
        for _ in 0..500 {
            link.send(t0, original.clone());
            let got = link.poll_recv(t0).unwrap();
            assert_eq!(got.len(), original.len());
            let diff: Vec<usize> = (0..got.len()).filter(|&i| got[i] != original[i]).collect();
            assert_eq!(diff.len(), 1, "{diff:?}");
            positions.insert(diff[0]);
        }
        assert!(positions.len() > 100, "positions not spread: {}", positions.len());
        assert_eq!(link.stats().corrupted, 500);
        // An empty datagram cannot be corrupted.
        link.send(t0, vec![]);
        assert_eq!(link.poll_recv(t0), Some(vec![]));
        assert_eq!(link.stats().corrupted, 500);
    }

    #[test]
    fn corruption_rate() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_corrupt(0.05), 23);
        let mut changed = 0u64;
        for _ in 0..20_000 {
            link.send(t0, vec![0; 64]);
            changed += u64::from(link.poll_recv(t0).unwrap() != vec![0; 64]);
        }
        assert_eq!(link.stats().corrupted, changed);
        assert!((800..1200).contains(&changed), "{changed}");
    }

    fn messy() -> LinkConfig {
        LinkConfig::ideal()
            .with_latency(ms(30))
            .with_jitter(ms(4))
            .with_bandwidth(200_000)
            .with_queue_bytes(20_000)
            .with_mtu(1200)
            .with_loss(0.05)
            .with_duplicate(0.03)
            .with_reorder(0.05, ms(15))
            .with_corrupt(0.02)
    }

    /// Runs a mixed workload; delivery times are returned relative to the base instant.
    fn run_messy(seed: u64) -> (Vec<(Duration, u32, Vec<u8>)>, LinkStats) {
        let t0 = Instant::now();
        let mut link = Link::new(messy(), seed);
        let mut out = Vec::new();
        for i in 0..3000u32 {
            let now = t0 + i * Duration::from_micros(700);
            let len = 100 + (i as usize * 37) % 1200;
            link.send_tagged(now, i % 3, numbered(i, len));
            out.extend(drain(&mut link, now));
        }
        out.extend(drain(&mut link, t0 + ms(100_000)));
        assert_accounting(&link);
        (out.into_iter().map(|(at, tag, data)| (at - t0, tag, data)).collect(), link.stats())
    }

    #[test]
    fn deterministic_for_equal_seeds() {
        let a = run_messy(42);
        let b = run_messy(42);
        assert_eq!(a, b);
        let s = a.1;
        // Every impairment actually happened.
        assert!(s.dropped_loss > 0 && s.dropped_queue > 0 && s.dropped_mtu > 0, "{s:?}");
        assert!(s.duplicated > 0 && s.reordered > 0 && s.corrupted > 0, "{s:?}");
        assert_ne!(a, run_messy(43));
    }

    #[test]
    fn tagged_flows_share_the_bottleneck() {
        let t0 = Instant::now();
        let cfg = LinkConfig::ideal().with_latency(ms(10)).with_bandwidth(1_000_000);
        let mut link = Link::new(cfg, 24);
        // Cross traffic (flow 2) dumps a 50 ms burst; flow 1 then sees the queueing delay.
        for _ in 0..50 {
            link.send_tagged(t0, 2, vec![0; 1000]);
        }
        link.send_tagged(t0, 1, vec![7; 100]);
        let got = drain(&mut link, t0 + ms(1000));
        assert_eq!(got.len(), 51);
        let (at, tag, data) = got.last().unwrap();
        assert_eq!((*tag, data.as_slice()), (1, &[7u8; 100][..]));
        assert_eq!(*at, t0 + ms(10) + ms(50) + Duration::from_micros(100));
        let f1 = link.flow_stats(1);
        let f2 = link.flow_stats(2);
        assert_eq!((f1.sent, f1.delivered, f1.delivered_bytes), (1, 1, 100));
        assert_eq!((f2.sent, f2.delivered, f2.delivered_bytes), (50, 50, 50_000));
        assert_eq!(f1.max_queue_delay, ms(50));
        assert_eq!(f2.max_queue_delay, ms(49));
        assert_eq!(link.flow_stats(9), LinkStats::default());
        assert_eq!(link.stats().delivered, 51);
        // Untagged calls are flow 0.
        link.send(t0 + ms(1000), vec![1]);
        assert_eq!(link.poll_recv_tagged(t0 + ms(2000)), Some((0, vec![1])));
        assert_eq!(link.flow_stats(0).delivered, 1);
    }

    #[test]
    fn route_change_applies_to_new_datagrams() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_latency(ms(100)), 25);
        link.send(t0, vec![1]);
        link.set_config(LinkConfig::ideal().with_latency(ms(20)));
        link.send(t0 + ms(10), vec![2]);
        let got = drain(&mut link, t0 + ms(1000));
        assert_eq!(got, vec![(t0 + ms(30), 0, vec![2]), (t0 + ms(100), 0, vec![1])]);
        assert_eq!(link.config().latency, ms(20));
    }

    #[test]
    fn bandwidth_change_keeps_fifo_order() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal().with_bandwidth(1000), 26);
        link.send(t0, vec![1; 100]); // done at 100 ms
        link.set_config(LinkConfig::ideal());
        link.send(t0, vec![2; 100]); // infinite rate now, but behind the first
        let got = drain(&mut link, t0 + ms(1000));
        assert_eq!(got.iter().map(|d| (d.0, d.2[0])).collect::<Vec<_>>(), {
            vec![(t0 + ms(100), 1), (t0 + ms(100), 2)]
        });
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn send_back_in_time_panics() {
        let t0 = Instant::now();
        let mut link = Link::new(LinkConfig::ideal(), 27);
        link.send(t0 + ms(5), vec![]);
        link.send(t0, vec![]);
    }

    #[test]
    #[should_panic(expected = "not in [0, 1]")]
    fn invalid_probability_panics() {
        let _ = Link::new(LinkConfig::ideal().with_loss(1.5), 28);
    }

    #[test]
    #[should_panic(expected = "bandwidth must be > 0")]
    fn zero_bandwidth_panics() {
        let _ = Link::new(LinkConfig::ideal().with_bandwidth(0), 29);
    }

    #[test]
    fn helpers_are_sane() {
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f64(u64::MAX) < 1.0);
        assert_eq!(below(u64::MAX, 10), 9);
        assert_eq!(below(0, 10), 0);
        assert_eq!(below_u128(u64::MAX, 1), 0);
    }
}
