//! Ending a connection: half-close (FIN), release by the application,
//! reset, RESETs from the peer, TIME-WAIT and the closed state.

use std::time::Instant;

use tracing::debug;

use crate::wire::Repr;

use super::pending::Pending;
use super::timer::Timer;
use super::{Connection, ConnectionError, Event, LocalFin, State, TIME_WAIT_MIN};

impl Connection {
    /// Half-closes: a FIN follows the data already written. Reading goes on.
    pub fn shutdown(&mut self) {
        self.release_syn();
        if self.local_fin == LocalFin::None && self.state != State::Closed {
            // The close timer starts when the FIN goes out.
            self.local_fin = LocalFin::Requested;
        }
    }

    /// The application let go of the connection: nothing will be read any
    /// more. What was written is still delivered (a FIN follows it); data
    /// that arrives is acknowledged and dropped, and once our FIN is
    /// acknowledged the peer has `close_timeout` to finish its side too
    /// before a RESET ends the connection. So a released connection holds no
    /// receive buffer and lives a bounded time, whatever the peer does.
    pub(crate) fn release(&mut self, now: Instant) {
        self.released = true;
        self.recv.drop_readable();
        self.shutdown();
        // Whatever is still unsent or unacknowledged gets `close_timeout`
        // from now, renewed only by progress: a peer that acknowledges
        // nothing cannot hold the connection with keepalives.
        if self.state == State::Established && self.timers.get(Timer::Close).is_none() {
            self.timers.set(Timer::Close, now + self.config.close_timeout);
        }
    }

    /// Drops a half-open connection to make room (SYN flood defence):
    /// nothing is sent to an address that never proved it receives.
    pub(crate) fn evict(&mut self) {
        debug!(remote = %self.remote, "half-open connection evicted");
        self.close(Some(ConnectionError::TimedOut));
    }

    /// Aborts: sends a RESET and closes at once.
    pub fn reset(&mut self) {
        if self.state == State::Closed {
            return;
        }
        if self.state != State::SynSent {
            self.pending.insert(Pending::RESET);
        }
        // An abort: unread data is discarded, the next read fails.
        self.recv.discard();
        self.close(Some(ConnectionError::LocallyReset));
    }

    pub(super) fn close(&mut self, error: Option<ConnectionError>) {
        if self.state == State::Closed {
            return;
        }
        if error.is_some() && self.error.is_none() {
            self.error = error;
        }
        debug!(remote = %self.remote, ?error, "closed");
        self.state = State::Closed;
        self.sync_send_share();
        self.timers.stop_all();
        self.set_event(Event::Closed);
        self.set_event(Event::Readable);
        self.set_event(Event::Writable);
    }

    /// `true` when the connection is closed and has nothing left to send: the
    /// endpoint may forget it once the application let go of it.
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && !self.pending.contains(Pending::RESET)
    }

    pub(super) fn handle_reset(&mut self, pkt: &Repr<'_>) {
        if let LocalFin::Sent(fin) = self.local_fin {
            if pkt.ack_nr == fin {
                // The peer acknowledged our FIN with a RESET: a clean close.
                // Everything we wrote arrived; whether the peer's stream is
                // complete depends on whether its FIN reached us.
                debug!(remote = %self.remote, "RESET acknowledging our FIN");
                self.local_fin = LocalFin::Acked;
                self.set_event(Event::Finished);
                let error = (!self.recv.is_eof()).then_some(ConnectionError::Reset);
                self.close(error);
                return;
            }
        }
        if self.local_fin == LocalFin::Acked && self.recv.is_eof() {
            self.close(None);
            return;
        }
        debug!(remote = %self.remote, "reset by peer");
        self.close(Some(ConnectionError::Reset));
    }

    pub(super) fn check_time_wait(&mut self, now: Instant) {
        if self.state == State::Established
            && self.local_fin == LocalFin::Acked
            && self.recv.is_eof()
        {
            debug!(remote = %self.remote, "both sides finished");
            self.state = State::TimeWait;
            // Long enough for the peer to retransmit its FIN if our ACK is
            // lost: libtorrent does after 0.5 s, libutp after 1 s then 2 s.
            let linger = (self.rto() * 2).max(TIME_WAIT_MIN).min(self.config.close_timeout);
            self.timers.stop_all();
            self.timers.set(Timer::Close, now + linger);
        }
    }
}
