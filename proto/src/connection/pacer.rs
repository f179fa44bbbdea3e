//! Pacing: spreads a window's packets over the round trip instead of
//! sending them in one burst (none of libutp, libtorrent or librqbit-utp
//! does). A token bucket fills at 2 x cwnd / RTT (a window that doubles per RTT in slow start still fits) and holds at most a
//! small burst, so a clean path loses no throughput (the rate exceeds what
//! the window allows) while a slow start no longer dumps a whole window
//! into the bottleneck queue at once.

use std::time::{Duration, Instant};

/// The rate is this much above cwnd / RTT, so that pacing never becomes the
/// limit on its own.
const GAIN: f64 = 2.0;
/// Smallest burst, in packets.
const MIN_BURST_PACKETS: usize = 4;
/// Largest burst, in packets.
const MAX_BURST_PACKETS: usize = 64;
/// Below this RTT (loopback, a LAN) pacing is off: timers finer than this
/// cost more than bursts do.
const MIN_PACED_RTT: Duration = Duration::from_millis(2);

#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    tokens: f64,
    last: Option<Instant>,
    /// The last `delay` paced (a path with RTT >= 2 ms).
    active: bool,
    /// The burst of the last paced decision: tokens never fall below minus
    /// one burst, so a debt can never stall the sender for long.
    burst: f64,
}

impl Pacer {
    pub(crate) fn new() -> Self {
        Pacer { tokens: 0.0, last: None, active: false, burst: 0.0 }
    }

    /// When a packet of `size` bytes may go out: `None` now, or the
    /// instant to wait for.
    pub(crate) fn delay(
        &mut self,
        now: Instant,
        size: usize,
        cwnd: usize,
        rtt: Option<Duration>,
        mss: usize,
    ) -> Option<Instant> {
        let Some(rtt) = rtt.filter(|r| *r >= MIN_PACED_RTT) else {
            // Not pacing: nothing to account (`on_sent` is then a no-op), and
            // a later paced phase starts with a full burst.
            self.active = false;
            self.last = None;
            return None;
        };
        self.active = true;
        let rate = GAIN * cwnd as f64 / rtt.as_secs_f64();
        // A burst worth a tenth of the round trip, within bounds.
        let burst = (rate * rtt.as_secs_f64() / 10.0)
            .clamp((MIN_BURST_PACKETS * mss) as f64, (MAX_BURST_PACKETS * mss) as f64);
        self.burst = burst;
        let elapsed = self.last.map_or(Duration::MAX, |l| now.saturating_duration_since(l));
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64().min(1.0) * rate).min(burst);
        // A byte of slack: after waiting exactly the computed time, rounding
        // must not leave the bucket a hair short (and wait again, forever).
        if self.tokens + 1.0 >= size as f64 {
            return None;
        }
        let wait = ((size as f64 - self.tokens) / rate).max(1e-6);
        Some(now + Duration::from_secs_f64(wait))
    }

    /// A packet of `size` bytes went out.
    pub(crate) fn on_sent(&mut self, size: usize) {
        if self.active {
            self.tokens = (self.tokens - size as f64).max(-self.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_after_a_burst_and_not_on_loopback() {
        let now = Instant::now();
        let mut p = Pacer::new();
        let rtt = Some(Duration::from_millis(100));
        // cwnd 100 packets of 1000 bytes: rate 2 MB/s, burst 20 KB.
        let mut sent = 0;
        while p.delay(now, 1000, 100_000, rtt, 1000).is_none() {
            p.on_sent(1000);
            sent += 1;
        }
        assert_eq!(sent, 20);
        let next = p.delay(now, 1000, 100_000, rtt, 1000).unwrap();
        assert!(next > now && next <= now + Duration::from_millis(1));
        // Loopback RTTs are not paced.
        let mut q = Pacer::new();
        for _ in 0..1000 {
            assert!(q.delay(now, 1000, 100_000, Some(Duration::from_micros(200)), 1000).is_none());
            q.on_sent(1000);
        }
        // Regression: those unpaced packets left no debt behind; when the
        // RTT grows past the threshold, a full burst goes out at once.
        assert!(q.delay(now, 1000, 100_000, rtt, 1000).is_none());
    }
}
