//! Path MTU discovery (packetization-layer, in the spirit of RFC 8899).
//!
//! Sizes here are UDP payload bytes: a whole uTP packet, header included.
//!
//! A connection starts sending at its initial size (1402 bytes for IPv4,
//! 1232 for IPv6). Once established it sends probes: DATA packets of a size
//! under test, with don't-fragment set. An acknowledged probe proves its
//! size; a lost one (or one the sender's own stack refuses with EMSGSIZE)
//! bounds the search from above. The loss of a probe is not congestion.
//!
//! The search runs in rounds of several probes at once, so that it takes a
//! few round trips rather than one per halving: the first round tries the
//! common link MTUs (1500, 9000, 16384, 65535; 1280 if the initial size
//! fails) and the initial size itself; each following round tries the smallest step
//! worth taking above the largest size that passed (paths usually sit at a
//! common MTU, and then this ends the search) and splits the rest of the
//! interval into four. It stops when the interval is narrower than
//! 1/64 of the size found (16 bytes at least), and starts again after
//! `mtu_probe_interval`.
//!
//! A probe takes one of two forms:
//! - *padded* (peers that negotiated `LARGE_PACKETS`): an ordinary DATA
//!   packet grown to the probe's size with padding records. Lost, it goes
//!   again as the ordinary packet it is, so nothing depends on
//!   fragmentation.
//! - *data* (other peers, IPv4 only): a DATA packet whose payload fills the
//!   probe's size, as libutp and libtorrent probe. Lost, it goes again
//!   without don't-fragment and IPv4 routers fragment it. Capped at 1472
//!   bytes, the largest datagram libtorrent receives intact (it cuts
//!   anything over 1500 bytes without telling). Over IPv6 routers never
//!   fragment, so legacy peers are not probed there.
//!
//! If the initial size itself fails, new packets drop to the largest size
//! known to pass while the search goes on (packets already sent go again at
//! their size, fragmented).

use std::time::{Duration, Instant};

use crate::wire::SeqNr;

/// Link MTUs worth trying first: IPv6's minimum (and Teredo), Ethernet,
/// jumbo frames, 16 KiB and loopback.
const COMMON_MTUS: [usize; 5] = [1280, 1500, 9000, 16384, 65535];

/// Probes of a round after the first: they split the interval into this
/// many plus one parts.
const SPLIT_PROBES: usize = 3;

/// Most probes in flight at once.
const MAX_PROBES: usize = 10;

/// Largest probe for a peer that did not negotiate large packets: 1500 bytes
/// of Ethernet MTU minus the IPv4 and UDP headers.
pub(crate) const LEGACY_CEILING_V4: usize = 1472;

/// Largest UDP payload of an IPv4 datagram (65 535 - 20 - 8).
pub(crate) const MAX_UDP_PAYLOAD_V4: usize = 65_507;

/// Largest UDP payload over IPv6 without jumbograms (65 535 - 8).
pub(crate) const MAX_UDP_PAYLOAD_V6: usize = 65_527;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not probing (not established yet, disabled, or nothing to find).
    Idle,
    /// Rounds of probes under way.
    Searching,
    /// Found; search again at the instant given.
    Done(Instant),
}

/// How probes are made (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeForm {
    /// An ordinary packet grown with padding records.
    Padded,
    /// A packet whose payload fills the probe.
    Data,
}

#[derive(Debug)]
pub(crate) struct PathMtu {
    /// Size of new packets.
    current: usize,
    /// The initial size (not proven until a probe of it is acknowledged).
    initial: usize,
    /// Largest size known to pass (or assumed to: the floor).
    lo: usize,
    /// Largest size not known to fail.
    hi: usize,
    /// Largest size probing may reach.
    ceiling: usize,
    /// IP and UDP header bytes (28 for IPv4, 48 for IPv6).
    ip_overhead: usize,
    form: ProbeForm,
    interval: Duration,
    state: State,
    /// Sizes still to send in this round, largest last.
    round: Vec<usize>,
    /// Probes sent and not yet resolved.
    in_flight: Vec<(SeqNr, usize)>,
    /// The size the connection was configured to start at: where a
    /// suspected black hole sends it back.
    base: usize,
    /// A search ended (or a black hole lowered the size): the endpoint may
    /// remember the result.
    result: Option<usize>,
    /// A size remembered for this destination and until when it holds:
    /// probed first (alone) when the search would start.
    known: Option<(usize, Instant)>,
}

impl PathMtu {
    /// A path whose packets start at `initial` bytes; `floor` is assumed to
    /// pass.
    pub(crate) fn new(initial: usize, floor: usize, ipv6: bool) -> Self {
        let floor = floor.min(initial);
        PathMtu {
            current: initial,
            initial,
            lo: floor,
            hi: initial,
            ceiling: initial,
            ip_overhead: if ipv6 { 48 } else { 28 },
            form: ProbeForm::Padded,
            interval: Duration::from_secs(600),
            state: State::Idle,
            round: Vec::new(),
            in_flight: Vec::new(),
            base: initial,
            result: None,
            known: None,
        }
    }

    /// Size of new packets.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// A size remembered for this destination, valid until `until`:
    /// [`PathMtu::start`] confirms it with a single probe instead of a
    /// search.
    pub(crate) fn set_known(&mut self, size: usize, until: Instant) {
        self.known = Some((size, until));
    }

    /// Starts searching up to `ceiling` with probes of the given form,
    /// again every `interval`, unless a known size was set; returns whether
    /// a known size was taken.
    pub(crate) fn start(
        &mut self,
        now: Instant,
        ceiling: usize,
        form: ProbeForm,
        interval: Duration,
    ) -> bool {
        self.form = form;
        self.interval = interval;
        let ceiling = ceiling.max(self.lo);
        self.ceiling = ceiling;
        if let Some((size, until)) = self.known.take() {
            let size = size.clamp(self.lo, ceiling);
            if size <= self.current {
                // Nothing to gain above the starting size: no search.
                self.current = size;
                self.lo = self.lo.min(size);
                self.initial = size;
                self.hi = ceiling;
                self.state = State::Done(until.max(now));
                return true;
            }
            // A larger size remembered for this destination is confirmed
            // by one probe before packets take it: the path may have shrunk
            // since, and packets already sent at a size that no longer
            // passes could only get through fragmented. Lost, the probe
            // starts an ordinary search below it.
            self.hi = size;
            self.state = State::Searching;
            self.round = vec![size];
            return false;
        }
        self.hi = ceiling;
        self.begin_search(now);
        false
    }

    fn begin_search(&mut self, now: Instant) {
        self.state = State::Searching;
        self.round.clear();
        self.plan_round(now);
    }

    /// Fills `round` with the next probe sizes, or ends the search.
    fn plan_round(&mut self, now: Instant) {
        let gap = (self.lo / 64).max(16);
        if self.hi <= self.lo + gap {
            self.finish(now);
            return;
        }
        let (lo, hi) = (self.lo, self.hi);
        let mut sizes: Vec<usize> = COMMON_MTUS
            .iter()
            .filter_map(|m| m.checked_sub(self.ip_overhead))
            .chain([self.initial])
            // Below the size in use only once that size failed.
            .filter(|&s| s > lo && s <= hi && s >= self.current)
            .collect();
        if sizes.is_empty() {
            // The smallest step worth taking (paths often sit exactly at a
            // common MTU, which this settles at once), and an even split.
            let step = (hi - lo) / (SPLIT_PROBES + 1);
            sizes.push(lo + gap + 1);
            sizes.extend((1..=SPLIT_PROBES).map(|i| lo + step * i).filter(|&s| s > lo));
        }
        sizes.sort_unstable();
        sizes.dedup();
        sizes.truncate(MAX_PROBES);
        // Sent smallest first: `round` pops from the end.
        sizes.reverse();
        self.round = sizes;
        if self.round.is_empty() {
            self.finish(now);
        }
    }

    fn finish(&mut self, now: Instant) {
        self.round.clear();
        self.current = self.lo;
        self.state = State::Done(now + self.interval);
        self.result = Some(self.lo);
    }

    /// The size of the probe to send next, if one is due.
    pub(crate) fn next_probe(&mut self, now: Instant) -> Option<usize> {
        match self.state {
            State::Idle => return None,
            State::Done(at) => {
                if now < at {
                    return None;
                }
                // Time to search again, above what we have, up to the
                // ceiling (a path may have grown).
                self.lo = self.current;
                self.initial = self.current;
                self.hi = self.ceiling;
                self.begin_search(now);
            }
            State::Searching => {}
        }
        if self.in_flight.len() >= MAX_PROBES {
            return None;
        }
        self.round.last().copied()
    }

    /// Probes sent and not yet resolved.
    pub(crate) fn probes_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How probes are made.
    pub(crate) fn form(&self) -> ProbeForm {
        self.form
    }

    /// A probe of `size` bytes went out as `seq`.
    pub(crate) fn on_probe_sent(&mut self, seq: SeqNr, size: usize) {
        if let Some(i) = self.round.iter().position(|&s| s == size) {
            self.round.remove(i);
        }
        self.in_flight.push((seq, size));
    }

    /// A retransmission timeout: every probe in flight counts as failed
    /// (the timeout itself is congestion, the probes' sizes are suspect).
    /// Returns how many there were.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> u32 {
        let mut n = 0;
        while let Some((_, size)) = self.in_flight.pop() {
            n += 1;
            self.fail(now, size);
        }
        n
    }

    /// Retransmission timeouts in a row while packets were larger than the
    /// size the connection started at: the path may have shrunk (or a size
    /// remembered for the destination was wrong). New packets go back to
    /// the starting size, no search runs until the interval has passed, and
    /// the lowered size is reported so that the endpoint's memory of the
    /// destination comes down too. Returns whether it lowered anything.
    pub(crate) fn on_black_hole(&mut self, now: Instant) -> bool {
        if self.current <= self.base {
            return false;
        }
        self.round.clear();
        self.in_flight.clear();
        self.current = self.base;
        self.initial = self.base;
        self.lo = self.lo.min(self.base);
        self.hi = self.base;
        self.state = State::Done(now + self.interval);
        self.result = Some(self.base);
        true
    }

    /// Sizes above `max` cannot be sent (the caller's buffer is smaller).
    pub(crate) fn limit(&mut self, now: Instant, max: usize) {
        if max < self.hi {
            self.lower_hi(now, max);
        }
    }

    /// `seq` was acknowledged: if it was a probe, its size passes.
    pub(crate) fn on_acked(&mut self, now: Instant, seq: SeqNr) {
        if let Some(i) = self.in_flight.iter().position(|&(s, _)| s == seq) {
            let (_, size) = self.in_flight.swap_remove(i);
            self.lo = self.lo.max(size);
            self.hi = self.hi.max(self.lo);
            // Sizes at or below what passed need no probe any more.
            let lo = self.lo;
            self.round.retain(|&s| s > lo);
            self.update_current();
            self.round_done(now);
        }
    }

    /// `seq` was declared lost: returns whether it was a probe (whose loss
    /// says nothing about congestion).
    pub(crate) fn on_lost(&mut self, now: Instant, seq: SeqNr) -> bool {
        let Some(i) = self.in_flight.iter().position(|&(s, _)| s == seq) else { return false };
        let (_, size) = self.in_flight.swap_remove(i);
        self.fail(now, size);
        true
    }

    /// The sender's own stack refused a datagram of `size` bytes sent with
    /// don't-fragment (EMSGSIZE): returns the probe's sequence number, whose
    /// packet must go again.
    pub(crate) fn on_too_big(&mut self, now: Instant, size: usize) -> Option<SeqNr> {
        let i = self.in_flight.iter().position(|&(_, s)| s == size)?;
        let (seq, _) = self.in_flight.swap_remove(i);
        self.fail(now, size);
        Some(seq)
    }

    fn fail(&mut self, now: Instant, size: usize) {
        if size <= self.lo {
            // A random loss of a size that passed before: nothing learned.
            self.round_done(now);
            return;
        }
        self.lower_hi(now, size - 1);
    }

    /// Nothing above `hi` passes (never below what did pass).
    fn lower_hi(&mut self, now: Instant, hi: usize) {
        self.hi = self.hi.min(hi).max(self.lo);
        let hi = self.hi;
        self.round.retain(|&s| s <= hi);
        self.update_current();
        self.round_done(now);
    }

    /// New packets use the initial size until a larger one passes; if the
    /// initial size fails with don't-fragment, the largest size known to
    /// pass rather than rely on fragmentation.
    fn update_current(&mut self) {
        self.current = if self.hi < self.initial { self.lo } else { self.initial.max(self.lo) };
    }

    fn round_done(&mut self, now: Instant) {
        if self.state == State::Searching && self.round.is_empty() && self.in_flight.is_empty() {
            self.plan_round(now);
        }
    }

    /// The size found by a search that just ended (taken once).
    pub(crate) fn take_result(&mut self) -> Option<usize> {
        self.result.take()
    }
}
