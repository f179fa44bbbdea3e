//! LEDBAT (RFC 6817) with what libutp and libtorrent learned in the field.
//!
//! - One-way delay samples come from the peer (`timestamp_difference` on
//!   its packets: its receive clock minus our send clock). Only differences
//!   between samples matter, so the clock offset between peers cancels out.
//! - Base delay: the minimum over three one-minute buckets (two to three minutes). Current delay: the
//!   minimum of the last few samples. Queuing delay = current - base,
//!   clamped to the latest RTT (a one-way queue cannot exceed the round trip).
//! - Clock drift: when the delay we measure on the peer's packets gets a
//!   new, lower base, our clock runs slow relative to theirs by that much,
//!   and the base of our samples is shifted up by the same amount (as libutp
//!   does), so a drifting peer clock does not read as a growing queue.
//! - Slow start until the queuing delay reaches half the target, a loss, or
//!   `ssthresh`; then the LEDBAT controller: the window moves by
//!   `gain * off_target * bytes_acked / cwnd` bytes per ACK, at most
//!   `max_increase_per_rtt` bytes per RTT upwards, and grows only while the
//!   window is what limits sending.
//! - Above target the window shrinks faster than the RFC's symmetric gain
//!   (up to an eighth of the window per RTT), so that uTP yields to
//!   loss-based flows even when the bottleneck queue holds barely more than
//!   the target.
//! - A loss halves the window (the connection reports at most one loss
//!   event per RTT); a timeout drops it to one packet and restarts slow
//!   start up to half the old window. The window never falls below
//!   `min_packets` packets.

use std::time::{Duration, Instant};

use super::{AckInfo, Controller, ControllerFactory};

/// Settings of the LEDBAT controller.
#[derive(Debug, Clone)]
pub struct LedbatConfig {
    /// Queuing delay the controller aims at (BEP 29 and libutp: 100 ms).
    pub target: Duration,
    /// Most the window grows per round trip in congestion avoidance.
    pub max_increase_per_rtt: usize,
    /// Window at the start, in packets.
    pub initial_packets: usize,
    /// Smallest window, in packets.
    pub min_packets: usize,
    /// Largest window in bytes.
    pub max_window: usize,
    /// Delay samples the current-delay filter takes the minimum of.
    pub current_filter: usize,
}

impl Default for LedbatConfig {
    fn default() -> Self {
        LedbatConfig {
            target: Duration::from_millis(100),
            max_increase_per_rtt: 3000,
            initial_packets: 4,
            min_packets: 4,
            max_window: 16 << 20,
            current_filter: 4,
        }
    }
}

impl ControllerFactory for LedbatConfig {
    fn build(&self, now: Instant, mss: usize) -> Box<dyn Controller> {
        Box::new(Ledbat::new(self.clone(), now, mss))
    }
}

/// Above target the window shrinks by up to `cwnd / YIELD_DIVISOR` per RTT.
const YIELD_DIVISOR: f64 = 2.0;

/// One-minute buckets of base-delay history: the base is the minimum over the
/// last two to three minutes, so a route change to a longer path is
/// absorbed within three minutes.
const BUCKETS: usize = 3;
const BUCKET_LEN: Duration = Duration::from_secs(60);

/// `a < b` on the wrapping 32-bit microsecond clock.
fn wrapping_lt(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) > 0
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
        if slot.is_none_or(|b| wrapping_lt(sample, b)) {
            *slot = Some(sample);
        }
    }

    fn base(&self) -> Option<u32> {
        self.buckets.iter().flatten().copied().reduce(|a, b| if wrapping_lt(b, a) { b } else { a })
    }

    fn shift(&mut self, by: u32) {
        for b in self.buckets.iter_mut().flatten() {
            *b = b.wrapping_add(by);
        }
    }
}

/// The LEDBAT controller.
#[derive(Debug, Clone)]
pub struct Ledbat {
    config: LedbatConfig,
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    slow_start: bool,
    ours: DelayHistory,
    theirs: DelayHistory,
    recent: [u32; 8],
    recent_len: usize,
    recent_at: usize,
    queuing_delay: Option<Duration>,
    last_rtt: Option<Duration>,
}

impl Ledbat {
    /// A controller for packets of `mss` payload bytes.
    #[must_use]
    pub fn new(config: LedbatConfig, _now: Instant, mss: usize) -> Self {
        let cwnd = config.initial_packets.max(config.min_packets) * mss;
        Ledbat {
            mss,
            cwnd,
            ssthresh: config.max_window,
            slow_start: true,
            ours: DelayHistory::new(),
            theirs: DelayHistory::new(),
            recent: [0; 8],
            recent_len: 0,
            recent_at: 0,
            queuing_delay: None,
            last_rtt: None,
            config,
        }
    }

    fn min_window(&self) -> usize {
        self.config.min_packets * self.mss
    }

    fn record(&mut self, now: Instant, sample: u32, reverse: Option<u32>) {
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
        let filter = self.config.current_filter.clamp(1, self.recent.len());
        self.recent[self.recent_at] = sample;
        self.recent_at = (self.recent_at + 1) % filter;
        self.recent_len = (self.recent_len + 1).min(filter);
        let current = self.recent[..self.recent_len]
            .iter()
            .copied()
            .reduce(|a, b| if wrapping_lt(b, a) { b } else { a })
            .unwrap_or(sample);
        let base = self.ours.base().unwrap_or(current);
        // After a base shift the current sample may sit below the base.
        let queued = current.wrapping_sub(base) as i32;
        let mut delay = Duration::from_micros(queued.max(0) as u64);
        if let Some(rtt) = self.last_rtt {
            delay = delay.min(rtt);
        }
        self.queuing_delay = Some(delay);
    }
}

impl Controller for Ledbat {
    fn on_ack(&mut self, now: Instant, ack: &AckInfo) {
        if let Some(rtt) = ack.rtt {
            self.last_rtt = Some(rtt);
        }
        if let Some(sample) = ack.one_way_delay {
            self.record(now, sample, ack.reverse_delay);
        }
        let Some(delay) = self.queuing_delay else {
            // No delay information (a peer that sends none): grow like
            // congestion avoidance without the delay signal, gently.
            if ack.window_limited {
                self.cwnd +=
                    (self.config.max_increase_per_rtt * ack.bytes_acked / self.cwnd).max(1);
            }
            self.cwnd = self.cwnd.min(self.config.max_window);
            return;
        };
        let target = self.config.target.as_secs_f64();
        let off_target = (target - delay.as_secs_f64()) / target;

        if self.slow_start {
            if delay * 2 >= self.config.target || self.cwnd >= self.ssthresh {
                self.slow_start = false;
            } else if ack.window_limited {
                self.cwnd += ack.bytes_acked;
            }
        }
        if !self.slow_start {
            let fraction = ack.bytes_acked as f64 / self.cwnd.max(ack.bytes_acked) as f64;
            if off_target >= 0.0 {
                if ack.window_limited {
                    // At least 3000 bytes per RTT (libutp), more on large
                    // windows so that a fast path refills in a few dozen RTTs.
                    let per_rtt =
                        (self.config.max_increase_per_rtt as f64).max(self.cwnd as f64 / 16.0);
                    let gain = per_rtt * off_target * fraction;
                    self.cwnd += gain as usize;
                }
            } else {
                // Yield: up to half the window per RTT at -100 % off target.
                let per_rtt = (self.config.max_increase_per_rtt as f64)
                    .max(self.cwnd as f64 / YIELD_DIVISOR)
                    * (-off_target).min(1.0);
                let cut = (per_rtt * fraction) as usize;
                self.cwnd = self.cwnd.saturating_sub(cut);
            }
        }
        self.cwnd = self.cwnd.clamp(self.min_window(), self.config.max_window);
    }

    fn on_loss(&mut self, _now: Instant, _bytes_in_flight: usize) {
        // A loss while the queue we add is small says little about
        // congestion (random loss): back off less than when it is large.
        let queue_small = self.queuing_delay.is_some_and(|d| d * 4 < self.config.target);
        let keep = if queue_small { 0.75 } else { 0.5 };
        self.cwnd = ((self.cwnd as f64 * keep) as usize).max(self.min_window());
        self.ssthresh = self.cwnd;
        self.slow_start = false;
    }

    fn on_timeout(&mut self, _now: Instant) {
        self.ssthresh = (self.cwnd / 2).max(self.min_window());
        self.cwnd = self.min_window();
        self.slow_start = true;
    }

    fn window(&self) -> usize {
        self.cwnd
    }

    fn queuing_delay(&self) -> Option<Duration> {
        self.queuing_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(bytes: usize, delay_us: u32, rtt_ms: u64) -> AckInfo {
        AckInfo {
            bytes_acked: bytes,
            bytes_in_flight: bytes,
            rtt: Some(Duration::from_millis(rtt_ms)),
            min_rtt: Some(Duration::from_millis(rtt_ms)),
            one_way_delay: Some(delay_us),
            reverse_delay: None,
            window_limited: true,
            mss: 1000,
        }
    }

    #[test]
    fn grows_below_target_and_shrinks_above() {
        let now = Instant::now();
        let mut l = Ledbat::new(LedbatConfig::default(), now, 1000);
        let start = l.window();
        // Slow start with no queuing delay (offset 5 s between clocks).
        for _ in 0..10 {
            l.on_ack(now, &ack(1000, 5_000_000, 50));
        }
        assert_eq!(l.window(), start + 10_000);
        // Queue builds past target/2 (the current delay is the minimum of
        // the last four samples): slow start ends, growth continues slowly.
        for _ in 0..4 {
            l.on_ack(now, &ack(1000, 5_060_000, 200));
        }
        let w = l.window();
        l.on_ack(now, &ack(1000, 5_060_000, 200));
        assert!(l.window() > w && l.window() < w + 1000);
        // Far above target: shrinks.
        for _ in 0..8 {
            l.on_ack(now, &ack(1000, 5_250_000, 400));
        }
        assert!(l.window() < w);
    }

    #[test]
    fn wrapping_delay_samples() {
        let now = Instant::now();
        let mut l = Ledbat::new(LedbatConfig::default(), now, 1000);
        l.on_ack(now, &ack(1000, u32::MAX - 1000, 50));
        for _ in 0..4 {
            l.on_ack(now, &ack(1000, 30_000, 50));
        }
        // 31 ms of queuing across the wrap.
        assert_eq!(l.queuing_delay(), Some(Duration::from_micros(31_001)));
    }

    #[test]
    fn loss_and_timeout() {
        let now = Instant::now();
        let mut l = Ledbat::new(LedbatConfig::default(), now, 1000);
        for _ in 0..20 {
            l.on_ack(now, &ack(1000, 100, 50));
        }
        let w = l.window();
        l.on_loss(now, w);
        // Little queuing delay: a gentler cut than halving.
        assert_eq!(l.window(), w * 3 / 4);
        l.on_timeout(now);
        assert_eq!(l.window(), 4000);
    }
}
