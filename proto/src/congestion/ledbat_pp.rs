//! LEDBAT++ (draft-irtf-iccrg-ledbat-plus-plus): LEDBAT with the faults that
//! matter when many flows share a link fixed.
//!
//! - **Target 60 ms** of queuing delay (RFC 6817 and libutp: 100 ms).
//! - **Gain** `1 / min(16, ceil(2 * target / base))`, `base` the smallest
//!   RTT seen: a flow on a short path, which gets many more round trips per
//!   second, grows as fast per second as one on a long path, not faster.
//! - **Slow start** grows by `gain` times the bytes acknowledged and ends
//!   at 3/4 of the target (or a loss).
//! - **Congestion avoidance**, per round trip and in packets: `gain` below
//!   the target; above it a multiplicative decrease, `max(gain - W * (delay
//!   / target - 1), -W / 2)`, so a window that overshoots comes down within
//!   a few round trips, the larger windows by more.
//!
//!   One change from the draft, which grows by `gain * (1 - delay / target)`
//!   below the target: that increase vanishes as the queue nears the
//!   target, the windows stop just under it and the multiplicative
//!   decrease, which is what evens them out, never runs. In the simulator
//!   two flows then kept the split they had (66 % / 34 % 30 s after a
//!   latecomer joined); with the constant `gain` the queue reaches the
//!   target, the decrease takes more from the larger window, and they meet
//!   (52 % / 48 %) with the same mean queuing delay
//!   (`proto/tests/sim/fairness.rs`).
//! - **Periodic slowdowns**: two round trips after the first slow start
//!   ends, the window drops to 2 packets for 2 round trips and slow start
//!   takes it back to where it was; the next slowdown comes 9 times the
//!   length of this one later (about 10 % of the time). With the queue
//!   drained every flow measures the true base delay, so a flow that
//!   started late does not take a standing queue for base delay and keep
//!   the link from the others (RFC 6817's latecomer advantage).
//!
//! The delay itself is measured as classic LEDBAT does it (one-way samples
//! from uTP's timestamps, see the `delay` module): the draft measures
//! round trips because TCP has no one-way timestamps; uTP has them, and
//! they leave out the queue of the reverse path.

use std::time::{Duration, Instant};

use super::delay::DelayEstimator;
use super::{AckInfo, Controller, ControllerFactory};

/// Settings of the LEDBAT++ controller.
#[derive(Debug, Clone)]
pub struct LedbatPlusPlusConfig {
    /// Queuing delay aimed at (the draft: 60 ms).
    pub target: Duration,
    /// Window at the start, in packets.
    pub initial_packets: usize,
    /// Smallest window outside a slowdown, in packets.
    pub min_packets: usize,
    /// Largest window in bytes.
    pub max_window: usize,
    /// Delay samples the current-delay filter takes the minimum of.
    pub current_filter: usize,
    /// Periodic slowdowns (off: LEDBAT++ without its fairness mechanism,
    /// for experiments).
    pub slowdowns: bool,
}

impl Default for LedbatPlusPlusConfig {
    fn default() -> Self {
        LedbatPlusPlusConfig {
            target: Duration::from_millis(60),
            initial_packets: 4,
            min_packets: 2,
            max_window: 16 << 20,
            current_filter: 4,
            slowdowns: true,
        }
    }
}

impl ControllerFactory for LedbatPlusPlusConfig {
    fn build(&self, now: Instant, mss: usize) -> Box<dyn Controller> {
        Box::new(LedbatPlusPlus::new(self.clone(), now, mss))
    }
}

/// Most the gain divides by.
const MAX_GAIN_DIVISOR: f64 = 16.0;
/// Window during a slowdown, in packets.
const SLOWDOWN_PACKETS: usize = 2;
/// Round trips the window stays down in a slowdown, and between the end of
/// the first slow start and the first slowdown.
const SLOWDOWN_RTTS: u32 = 2;
/// The next slowdown comes this many times the last one's length later.
const SLOWDOWN_SPACING: u32 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The first slow start, or one after a timeout.
    SlowStart,
    /// Congestion avoidance.
    Avoidance,
    /// A slowdown: the window is held at 2 packets until `until`.
    Frozen { until: Instant },
    /// Slow start back to the window before the slowdown.
    Regrowing,
}

/// The LEDBAT++ controller.
#[derive(Debug, Clone)]
pub struct LedbatPlusPlus {
    config: LedbatPlusPlusConfig,
    mss: usize,
    /// The window in bytes, with fractions: near the target a window grows
    /// by a small fraction of a byte per acknowledgement, which rounding
    /// would lose every time.
    cwnd: f64,
    ssthresh: usize,
    phase: Phase,
    delay: DelayEstimator,
    last_rtt: Option<Duration>,
    min_rtt: Option<Duration>,
    /// When the next slowdown starts (scheduled once the first slow start
    /// has ended).
    next_slowdown: Option<Instant>,
    /// When the slowdown under way started, and the window it saved.
    slowdown: Option<(Instant, usize)>,
    slowdowns: u64,
}

impl LedbatPlusPlus {
    /// A controller for packets of `mss` payload bytes.
    #[must_use]
    pub fn new(config: LedbatPlusPlusConfig, _now: Instant, mss: usize) -> Self {
        let cwnd = (config.initial_packets.max(config.min_packets) * mss) as f64;
        LedbatPlusPlus {
            mss,
            cwnd,
            ssthresh: config.max_window,
            phase: Phase::SlowStart,
            delay: DelayEstimator::new(config.current_filter),
            last_rtt: None,
            min_rtt: None,
            next_slowdown: None,
            slowdown: None,
            slowdowns: 0,
            config,
        }
    }

    /// Slowdowns so far.
    #[must_use]
    pub fn slowdowns(&self) -> u64 {
        self.slowdowns
    }

    fn min_window(&self) -> f64 {
        (self.config.min_packets * self.mss) as f64
    }

    /// `1 / min(16, ceil(2 * target / base))`.
    fn gain(&self) -> f64 {
        let Some(base) = self.min_rtt.filter(|b| !b.is_zero()) else {
            return 1.0 / MAX_GAIN_DIVISOR;
        };
        let ratio = (2.0 * self.config.target.as_secs_f64() / base.as_secs_f64()).ceil();
        1.0 / ratio.clamp(1.0, MAX_GAIN_DIVISOR)
    }

    fn rtt(&self) -> Duration {
        self.last_rtt.or(self.min_rtt).unwrap_or(Duration::from_millis(100))
    }

    /// Slow start (the first, or back after a slowdown) is over.
    fn end_slow_start(&mut self, now: Instant) {
        match self.phase {
            Phase::SlowStart if self.next_slowdown.is_none() && self.config.slowdowns => {
                self.next_slowdown = Some(now + self.rtt() * SLOWDOWN_RTTS);
            }
            Phase::Regrowing => {
                if let Some((start, _)) = self.slowdown.take() {
                    let length = now.saturating_duration_since(start);
                    self.next_slowdown = Some(now + length * SLOWDOWN_SPACING);
                }
            }
            _ => {}
        }
        self.phase = Phase::Avoidance;
    }

    fn start_slowdown(&mut self, now: Instant) {
        self.slowdowns += 1;
        self.slowdown = Some((now, self.window()));
        self.ssthresh = self.window();
        self.cwnd = (SLOWDOWN_PACKETS * self.mss) as f64;
        self.phase = Phase::Frozen { until: now + self.rtt() * SLOWDOWN_RTTS };
        self.next_slowdown = None;
    }
}

impl Controller for LedbatPlusPlus {
    fn on_ack(&mut self, now: Instant, ack: &AckInfo) {
        if let Some(rtt) = ack.rtt {
            self.last_rtt = Some(rtt);
            self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        }
        if let Some(sample) = ack.one_way_delay {
            self.delay.record(now, sample, ack.reverse_delay, self.last_rtt);
        }
        if let Phase::Frozen { until } = self.phase {
            if now < until {
                return;
            }
            self.phase = Phase::Regrowing;
        }
        if self.phase == Phase::Avoidance && self.next_slowdown.is_some_and(|t| now >= t) {
            self.start_slowdown(now);
            return;
        }
        let gain = self.gain();
        // Without delay samples (a peer that sends none) the controller
        // sees no queue: it grows slowly, and losses hold it back.
        let delay = self.delay.queuing_delay().unwrap_or(Duration::ZERO);
        let ratio = delay.as_secs_f64() / self.config.target.as_secs_f64();
        let mss = self.mss as f64;
        match self.phase {
            Phase::SlowStart | Phase::Regrowing => {
                if ratio > 0.75 || self.window() >= self.ssthresh {
                    self.end_slow_start(now);
                } else if ack.window_limited {
                    self.cwnd += gain * ack.bytes_acked as f64;
                }
            }
            Phase::Avoidance | Phase::Frozen { .. } => {
                let window = self.cwnd / mss;
                // The change over one round trip, in packets (see the module
                // docs for the constant increase).
                let per_rtt = if ratio <= 1.0 {
                    gain
                } else {
                    (gain - window * (ratio - 1.0)).max(-window / 2.0)
                };
                let fraction = ack.bytes_acked as f64 / self.cwnd.max(ack.bytes_acked as f64);
                let change = per_rtt * fraction * mss;
                if change < 0.0 || ack.window_limited {
                    self.cwnd += change;
                }
            }
        }
        self.cwnd = self.cwnd.clamp(self.min_window(), self.config.max_window as f64);
    }

    fn on_loss(&mut self, now: Instant, _bytes_in_flight: usize) {
        if matches!(self.phase, Phase::SlowStart | Phase::Regrowing) {
            self.end_slow_start(now);
        }
        if let Phase::Frozen { .. } = self.phase {
            return;
        }
        self.cwnd = (self.cwnd / 2.0).max(self.min_window());
        self.ssthresh = self.window();
        self.phase = Phase::Avoidance;
    }

    fn on_timeout(&mut self, now: Instant) {
        self.ssthresh = (self.cwnd / 2.0).max(self.min_window()) as usize;
        self.cwnd = self.min_window();
        self.phase = Phase::SlowStart;
        self.slowdown = None;
        // The next slowdown follows this slow start's end.
        if self.next_slowdown.is_some_and(|t| t <= now) {
            self.next_slowdown = None;
        }
    }

    fn window(&self) -> usize {
        self.cwnd as usize
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
    fn gain_follows_the_base_delay() {
        let now = Instant::now();
        let mut l = LedbatPlusPlus::new(LedbatPlusPlusConfig::default(), now, 1000);
        l.on_ack(now, &ack(1000, 1000, 20));
        // 2 * 60 / 20 = 6.
        assert!((l.gain() - 1.0 / 6.0).abs() < 1e-9);
        l.on_ack(now, &ack(1000, 1000, 2));
        assert!((l.gain() - 1.0 / 16.0).abs() < 1e-9, "capped at 1/16");
    }

    #[test]
    fn slow_start_ends_at_three_quarters_of_the_target_then_slows_down() {
        let mut now = Instant::now();
        let mut l = LedbatPlusPlus::new(LedbatPlusPlusConfig::default(), now, 1000);
        for _ in 0..60 {
            l.on_ack(now, &ack(1000, 10_000, 120));
        }
        assert_eq!(l.phase, Phase::SlowStart);
        let grown = l.window();
        assert!(grown > 4000 && grown <= 64_000, "{grown}");
        // 50 ms of queue: over 3/4 of 60 ms.
        for _ in 0..5 {
            l.on_ack(now, &ack(1000, 60_000, 170));
        }
        assert_eq!(l.phase, Phase::Avoidance);
        // Two round trips later the window drops to 2 packets for 2 RTTs.
        now += Duration::from_millis(400);
        l.on_ack(now, &ack(1000, 10_000, 120));
        assert_eq!(l.window(), 2000);
        assert_eq!(l.slowdowns(), 1);
        now += Duration::from_millis(100);
        l.on_ack(now, &ack(1000, 10_000, 120));
        assert_eq!(l.window(), 2000, "frozen for two round trips");
        now += Duration::from_millis(200);
        for _ in 0..2000 {
            l.on_ack(now, &ack(1000, 10_000, 120));
        }
        assert_eq!(l.phase, Phase::Avoidance, "back to the saved window");
        assert!(l.next_slowdown.is_some());
    }

    #[test]
    fn far_above_target_the_window_halves_per_round_trip_at_most() {
        let now = Instant::now();
        let mut l = LedbatPlusPlus::new(LedbatPlusPlusConfig::default(), now, 1000);
        l.cwnd = 100_000.0;
        l.phase = Phase::Avoidance;
        l.on_ack(now, &ack(1000, 10_000, 20));
        let before = l.window();
        // A whole window of ACKs at twice the target.
        for _ in 0..100 {
            l.on_ack(now, &ack(1000, 130_000, 140));
        }
        assert!(l.window() < before * 7 / 10, "{} from {before}", l.window());
        assert!(l.window() >= before / 2 - 2000, "{} from {before}", l.window());
    }
}
