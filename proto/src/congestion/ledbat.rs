//! LEDBAT (RFC 6817) with what libutp and libtorrent learned in the field.
//!
//! - Queuing delay from the one-way delay samples uTP carries (see the
//!   `delay` module: base over two to three minutes, drift compensation).
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

use super::delay::DelayEstimator;
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

/// The LEDBAT controller.
#[derive(Debug, Clone)]
pub struct Ledbat {
    config: LedbatConfig,
    mss: usize,
    cwnd: usize,
    ssthresh: usize,
    slow_start: bool,
    delay: DelayEstimator,
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
            delay: DelayEstimator::new(config.current_filter),
            last_rtt: None,
            config,
        }
    }

    fn min_window(&self) -> usize {
        self.config.min_packets * self.mss
    }
}

impl Controller for Ledbat {
    fn on_ack(&mut self, now: Instant, ack: &AckInfo) {
        if let Some(rtt) = ack.rtt {
            self.last_rtt = Some(rtt);
        }
        if let Some(sample) = ack.one_way_delay {
            self.delay.record(now, sample, ack.reverse_delay, self.last_rtt);
        }
        let Some(delay) = self.delay.queuing_delay() else {
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
        let queue_small = self.delay.queuing_delay().is_some_and(|d| d * 4 < self.config.target);
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
        self.delay.queuing_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::congestion::test_ack as ack;

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
