//! One-way queuing delay from uTP's timestamps, shared by the LEDBAT
//! controllers.
//!
//! - Samples come from the peer (`timestamp_difference` on its packets: its
//!   receive clock minus our send clock). Only differences between samples
//!   matter, so the clock offset between peers cancels out.
//! - Base delay: the minimum over three one-minute buckets (two to three
//!   minutes). Current delay: the minimum of the last few samples. Queuing
//!   delay = current - base, clamped to the latest RTT (a one-way queue
//!   cannot exceed the round trip).
//! - Clock drift: when the delay we measure on the peer's packets gets a
//!   new, lower base, our clock runs slow relative to theirs by that much,
//!   and the base of our samples is shifted up by the same amount (as libutp
//!   does), so a drifting peer clock does not read as a growing queue.

use std::time::{Duration, Instant};

/// One-minute buckets of base-delay history: the base is the minimum over the
/// last two to three minutes, so a route change to a longer path is
/// absorbed within three minutes.
const BUCKETS: usize = 3;
const BUCKET_LEN: Duration = Duration::from_secs(60);

/// Most samples the current-delay filter may hold.
const MAX_FILTER: usize = 8;

/// `a < b` on the wrapping 32-bit microsecond clock.
fn wrapping_lt(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
}

fn wrapping_min(a: u32, b: u32) -> u32 {
    if wrapping_lt(b, a) {
        b
    } else {
        a
    }
}

/// Minimum of delay samples over one-minute buckets.
#[derive(Debug, Clone)]
struct DelayHistory {
    buckets: [Option<u32>; BUCKETS],
    current: usize,
    bucket_start: Option<Instant>,
}

impl DelayHistory {
    fn new() -> Self {
        DelayHistory { buckets: [None; BUCKETS], current: 0, bucket_start: None }
    }

    fn add(&mut self, now: Instant, sample: u32) {
        let start = *self.bucket_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= BUCKET_LEN {
            self.current = (self.current + 1) % BUCKETS;
            self.buckets[self.current] = None;
            self.bucket_start = Some(now);
        }
        let slot = &mut self.buckets[self.current];
        *slot = Some(slot.map_or(sample, |b| wrapping_min(b, sample)));
    }

    fn base(&self) -> Option<u32> {
        self.buckets.iter().flatten().copied().reduce(wrapping_min)
    }

    fn shift(&mut self, by: u32) {
        for b in self.buckets.iter_mut().flatten() {
            *b = b.wrapping_add(by);
        }
    }
}

/// The queuing delay our packets meet, from the peer's delay samples.
#[derive(Debug, Clone)]
pub(super) struct DelayEstimator {
    ours: DelayHistory,
    theirs: DelayHistory,
    recent: [u32; MAX_FILTER],
    recent_len: usize,
    recent_at: usize,
    filter: usize,
    queuing_delay: Option<Duration>,
}

impl DelayEstimator {
    /// An estimator whose current delay is the minimum of the last
    /// `filter` samples (1 to 8).
    pub(super) fn new(filter: usize) -> Self {
        DelayEstimator {
            ours: DelayHistory::new(),
            theirs: DelayHistory::new(),
            recent: [0; MAX_FILTER],
            recent_len: 0,
            recent_at: 0,
            filter: filter.clamp(1, MAX_FILTER),
            queuing_delay: None,
        }
    }

    /// Takes a sample of our packets' delay (and, when the packet carried a
    /// timestamp, our measurement of the peer's packets' delay, for drift);
    /// `rtt` caps the result.
    pub(super) fn record(
        &mut self,
        now: Instant,
        sample: u32,
        reverse: Option<u32>,
        rtt: Option<Duration>,
    ) {
        if let Some(rev) = reverse {
            let before = self.theirs.base();
            self.theirs.add(now, rev);
            if let (Some(before), Some(after)) = (before, self.theirs.base()) {
                if wrapping_lt(after, before) {
                    let drift = before.wrapping_sub(after);
                    // Clamp what one sample may shift (libutp: 10 ms).
                    if drift <= 10_000 {
                        self.ours.shift(drift);
                    }
                }
            }
        }
        self.ours.add(now, sample);
        self.recent[self.recent_at] = sample;
        self.recent_at = (self.recent_at + 1) % self.filter;
        self.recent_len = (self.recent_len + 1).min(self.filter);
        let current =
            self.recent[..self.recent_len].iter().copied().reduce(wrapping_min).unwrap_or(sample);
        let base = self.ours.base().unwrap_or(current);
        // After a base shift the current sample may sit below the base.
        let queued = current.wrapping_sub(base) as i32;
        let mut delay = Duration::from_micros(queued.max(0) as u64);
        if let Some(rtt) = rtt {
            delay = delay.min(rtt);
        }
        self.queuing_delay = Some(delay);
    }

    /// The latest queuing delay, once a sample arrived.
    pub(super) fn queuing_delay(&self) -> Option<Duration> {
        self.queuing_delay
    }
}
