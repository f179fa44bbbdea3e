//! Round-trip time estimation (Jacobson/Karels, RFC 6298).

use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    smoothed: Option<Duration>,
    var: Duration,
    latest: Duration,
    min: Duration,
}

impl RttEstimator {
    pub(crate) fn new() -> Self {
        RttEstimator {
            smoothed: None,
            var: Duration::ZERO,
            latest: Duration::ZERO,
            min: Duration::MAX,
        }
    }

    /// Adds a sample, taken only from packets sent once (Karn's rule).
    pub(crate) fn update(&mut self, sample: Duration) {
        self.latest = sample;
        self.min = self.min.min(sample);
        match self.smoothed {
            None => {
                self.smoothed = Some(sample);
                self.var = sample / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(sample);
                self.var = (self.var * 3 + delta) / 4;
                self.smoothed = Some((srtt * 7 + sample) / 8);
            }
        }
    }

    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.smoothed
    }

    pub(crate) fn min(&self) -> Option<Duration> {
        self.smoothed.map(|_| self.min)
    }

    /// The retransmission timeout before backoff, within `[min, max]`; the
    /// initial value until the first sample.
    pub(crate) fn rto(&self, initial: Duration, min: Duration, max: Duration) -> Duration {
        match self.smoothed {
            None => initial.clamp(min, max),
            Some(srtt) => (srtt + 4 * self.var).clamp(min, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_and_clamps() {
        let mut rtt = RttEstimator::new();
        let ms = Duration::from_millis;
        assert_eq!(rtt.rto(ms(1000), ms(200), ms(60_000)), ms(1000));
        rtt.update(ms(100));
        assert_eq!(rtt.smoothed(), Some(ms(100)));
        assert_eq!(rtt.rto(ms(1000), ms(200), ms(60_000)), ms(300));
        for _ in 0..100 {
            rtt.update(ms(10));
        }
        assert!(rtt.smoothed().unwrap() < ms(11));
        assert_eq!(rtt.rto(ms(1000), ms(200), ms(60_000)), ms(200));
        assert_eq!(rtt.min(), Some(ms(10)));
    }
}
