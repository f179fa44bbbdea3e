//! Wrapping sequence numbers and microsecond timestamps.
//!
//! Both wrap around (`u16` and `u32`); every ordering question in the engine
//! goes through the helpers here so that there is exactly one definition of
//! "before" and "after".

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A uTP sequence or acknowledgement number: a `u16` that wraps.
///
/// Ordering is modular: `a` is before `b` when `b - a` (wrapping) lies in
/// `1..=0x7fff`. This is not a total order over all 65536 values (two numbers
/// exactly `0x8000` apart are neither before nor after each other), which is
/// why it does not implement `Ord`; the engine never keeps more than a few
/// thousand numbers in flight, far below that ambiguity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeqNr(pub u16);

impl SeqNr {
    /// The signed distance from `other` to `self` (`self - other`), in
    /// `-32768..=32767`.
    #[inline]
    #[must_use]
    pub fn diff(self, other: SeqNr) -> i16 {
        self.0.wrapping_sub(other.0) as i16
    }

    /// How many steps forward it takes to go from `self` to `later`
    /// (wrapping, `0..=65535`).
    #[inline]
    #[must_use]
    pub fn distance_to(self, later: SeqNr) -> u16 {
        later.0.wrapping_sub(self.0)
    }

    /// `true` when `self` comes strictly before `other`.
    #[inline]
    #[must_use]
    pub fn is_before(self, other: SeqNr) -> bool {
        // Not `self.diff(other) < 0`: that also holds for numbers exactly
        // 0x8000 apart, in both directions, and disagrees with `is_after`.
        other.is_after(self)
    }

    /// `true` when `self` comes strictly after `other`.
    #[inline]
    #[must_use]
    pub fn is_after(self, other: SeqNr) -> bool {
        self.diff(other) > 0
    }

    /// `true` when `self` lies in the half-open range `start..end` (modular).
    #[inline]
    #[must_use]
    pub fn in_range(self, start: SeqNr, end: SeqNr) -> bool {
        start.distance_to(self) < start.distance_to(end)
    }

    /// The next sequence number.
    #[inline]
    #[must_use]
    pub fn next(self) -> SeqNr {
        SeqNr(self.0.wrapping_add(1))
    }

    /// The previous sequence number.
    #[inline]
    #[must_use]
    pub fn prev(self) -> SeqNr {
        SeqNr(self.0.wrapping_sub(1))
    }
}

impl Add<u16> for SeqNr {
    type Output = SeqNr;
    #[inline]
    fn add(self, rhs: u16) -> SeqNr {
        SeqNr(self.0.wrapping_add(rhs))
    }
}

impl AddAssign<u16> for SeqNr {
    #[inline]
    fn add_assign(&mut self, rhs: u16) {
        self.0 = self.0.wrapping_add(rhs);
    }
}

impl Sub<u16> for SeqNr {
    type Output = SeqNr;
    #[inline]
    fn sub(self, rhs: u16) -> SeqNr {
        SeqNr(self.0.wrapping_sub(rhs))
    }
}

impl fmt::Display for SeqNr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A uTP timestamp: microseconds on the sender's clock, truncated to `u32`
/// (it wraps every 71.6 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timestamp(pub u32);

impl Timestamp {
    /// The wrapping difference `self - earlier` in microseconds.
    ///
    /// This is how `timestamp_difference_microseconds` is computed when a
    /// packet arrives: `now.wrapping_since(packet.timestamp)`. It is never an
    /// absolute value: a peer whose clock is ahead of ours yields a large
    /// number, which the delay-based controller treats consistently because
    /// it only ever compares such differences with each other.
    #[inline]
    #[must_use]
    pub fn wrapping_since(self, earlier: Timestamp) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }

    /// `true` when `self` is later than `other` on the wrapping clock.
    #[inline]
    #[must_use]
    pub fn is_after(self, other: Timestamp) -> bool {
        (self.0.wrapping_sub(other.0) as i32) > 0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_wraps_forward() {
        let a = SeqNr(0xffff);
        assert_eq!(a.next(), SeqNr(0));
        assert!(a.is_before(SeqNr(0)));
        assert!(SeqNr(0).is_after(a));
        assert_eq!(a.distance_to(SeqNr(2)), 3);
        assert_eq!(SeqNr(2).diff(a), 3);
        assert_eq!(a.diff(SeqNr(2)), -3);
        assert_eq!(SeqNr(0) - 1, SeqNr(0xffff));
        assert_eq!(SeqNr(0xfffe) + 5, SeqNr(3));
    }

    #[test]
    fn seq_half_range_boundary() {
        let a = SeqNr(10);
        assert!(a.is_before(a + 0x7fff));
        assert!(!a.is_before(a + 0x8000));
        assert!(!a.is_after(a + 0x8000));
        assert!(!a.is_before(a));
    }

    #[test]
    fn seq_in_range_across_wrap() {
        let start = SeqNr(0xfff0);
        let end = SeqNr(0x0010);
        assert!(SeqNr(0xfff0).in_range(start, end));
        assert!(SeqNr(0xffff).in_range(start, end));
        assert!(SeqNr(0).in_range(start, end));
        assert!(SeqNr(0x000f).in_range(start, end));
        assert!(!SeqNr(0x0010).in_range(start, end));
        assert!(!SeqNr(0xffef).in_range(start, end));
        assert!(!SeqNr(5).in_range(SeqNr(5), SeqNr(5)));
    }

    #[test]
    fn timestamp_wraps() {
        let before = Timestamp(u32::MAX - 99);
        let after = Timestamp(100);
        assert_eq!(after.wrapping_since(before), 200);
        assert!(after.is_after(before));
        assert!(!before.is_after(after));
        // A peer clock ahead of ours gives a huge difference, not a negative one.
        assert_eq!(Timestamp(5).wrapping_since(Timestamp(10)), u32::MAX - 4);
    }
}
