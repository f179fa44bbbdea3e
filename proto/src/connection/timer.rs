//! The connection's timers: a small table of deadlines.

use std::time::Instant;

/// Every timer a connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Retransmission of the oldest unacknowledged packet (SYN included).
    Retransmit = 0,
    /// Handshake deadline (dial or accept).
    Connect = 1,
    /// Nothing received for too long.
    Idle = 2,
    /// Nothing sent for a while: send a keepalive.
    KeepAlive = 3,
    /// The peer advertises a zero window: probe it.
    Persist = 4,
    /// Closing: how long we wait for our FIN to be acked, then how long we
    /// linger to answer retransmitted FINs.
    Close = 5,
    /// The pacer lets the next packet go.
    Pace = 6,
    /// No acknowledgement for two round trips with packets in flight: send
    /// the last one again to draw a selective ACK (a tail loss probe).
    TailProbe = 7,
    /// An early-data dial's SYN waits no longer for the application's
    /// first bytes.
    SynHold = 8,
    /// We reopened our receive window and the peer has sent nothing since:
    /// send the update again (the peer may not probe).
    WindowUpdate = 9,
}

const COUNT: usize = 10;

impl Timer {
    const ALL: [Timer; COUNT] = [
        Timer::Retransmit,
        Timer::Connect,
        Timer::Idle,
        Timer::KeepAlive,
        Timer::Persist,
        Timer::Close,
        Timer::Pace,
        Timer::TailProbe,
        Timer::SynHold,
        Timer::WindowUpdate,
    ];
}

/// Deadlines, one slot per [`Timer`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, deadline: Instant) {
        self.data[timer as usize] = Some(deadline);
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.data = [None; COUNT];
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }

    /// Removes and returns a timer that has expired at `now`, if any.
    pub(crate) fn take_expired(&mut self, now: Instant) -> Option<Timer> {
        for timer in Timer::ALL {
            if self.data[timer as usize].is_some_and(|t| t <= now) {
                self.data[timer as usize] = None;
                return Some(timer);
            }
        }
        None
    }
}
