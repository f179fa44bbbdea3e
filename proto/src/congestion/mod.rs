//! Congestion control behind a small trait.
//!
//! The connection tells its controller what happened (bytes acknowledged
//! with the delay and RTT samples that came with them, a loss, a timeout);
//! the controller answers with a congestion window in bytes. Every hook
//! takes `now` so that controllers stay deterministic.

mod delay;
mod fixed;
mod ledbat;
mod ledbat_pp;

pub use fixed::{FixedWindow, FixedWindowConfig};
pub use ledbat::{Ledbat, LedbatConfig};
pub use ledbat_pp::{LedbatPlusPlus, LedbatPlusPlusConfig};

use std::fmt;
use std::time::{Duration, Instant};

/// What one incoming acknowledgement told the sender.
#[derive(Debug, Clone, Copy)]
pub struct AckInfo {
    /// Payload bytes newly acknowledged (cumulatively or selectively).
    pub bytes_acked: usize,
    /// Bytes in flight before this acknowledgement.
    pub bytes_in_flight: usize,
    /// An RTT sample, from a packet that was sent only once.
    pub rtt: Option<Duration>,
    /// The smallest RTT seen on the connection.
    pub min_rtt: Option<Duration>,
    /// The peer's measurement of our packets' one-way delay
    /// (`timestamp_difference_microseconds`), already clamped; `None` when
    /// the packet carried none.
    pub one_way_delay: Option<u32>,
    /// Our measurement of the peer's packets' one-way delay (our clock
    /// minus theirs) from the packet that carried this ACK: lets a
    /// controller compensate clock drift between the peers.
    pub reverse_delay: Option<u32>,
    /// Whether the sender was limited by the congestion window (rather than
    /// by the application or the peer's receive window) when the
    /// acknowledged data was sent.
    pub window_limited: bool,
    /// The largest payload of one packet, for controllers that count in
    /// packets.
    pub mss: usize,
}

/// A congestion controller of one connection.
pub trait Controller: Send + fmt::Debug {
    /// Data was acknowledged.
    fn on_ack(&mut self, now: Instant, ack: &AckInfo);
    /// A packet was found lost by duplicate or selective ACKs. Called at most
    /// once per round trip by the connection.
    fn on_loss(&mut self, now: Instant, bytes_in_flight: usize);
    /// The retransmission timer fired.
    fn on_timeout(&mut self, now: Instant);
    /// The current congestion window in bytes.
    fn window(&self) -> usize;
    /// The queuing delay the controller currently measures, if it measures
    /// one (for statistics).
    fn queuing_delay(&self) -> Option<Duration> {
        None
    }
}

/// Builds a controller for each new connection.
pub trait ControllerFactory: Send + Sync + fmt::Debug {
    /// A controller for a connection whose packets carry at most `mss`
    /// payload bytes.
    fn build(&self, now: Instant, mss: usize) -> Box<dyn Controller>;
}

/// An acknowledgement for the controllers' unit tests: `bytes` acked, our
/// packets' delay sample `delay_us`, an RTT sample of `rtt_ms`.
#[cfg(test)]
pub(crate) fn test_ack(bytes: usize, delay_us: u32, rtt_ms: u64) -> AckInfo {
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
