//! Our receive window as the peer sees it: telling it when the window
//! reopens, and telling it again when it does not react.
//!
//! A sender that sees a closed window has to learn that it reopened. Ours
//! probes (the persist timer), libutp too; libtorrent never does: if the
//! ACK that reopens the window is lost, it waits for our next packet. And
//! our keepalive does not count for it... nor for us: it acknowledges the
//! packet before the last, and a window from an older ACK is stale. So
//! after a window update we send it again, backed off like a
//! retransmission, until the peer sends something.

use std::time::Instant;

use super::pending::Pending;
use super::timer::Timer;
use super::{Connection, State};

/// Window updates sent again at most, backed off from one RTO: with the
/// minimum RTO this spans about 16 s, then the keepalive takes over.
const MAX_RESENDS: u32 = 6;

impl Connection {
    /// After a read, tell the peer that the window reopened if it had
    /// (nearly) closed.
    pub(super) fn maybe_window_update(&mut self) {
        let wnd = self.recv.window();
        // Room for the peer's next packet: as large as ours or the largest
        // it sent (its path MTU may exceed ours), but at most half the
        // buffer, or a buffer smaller than a packet would never reopen and
        // the peer would wait for its persist timer each time.
        let size = self.packet_size().max(self.peer_packet).min(self.recv.capacity() / 2).max(1);
        if self.advertised_wnd < size && wnd >= size {
            self.pending.insert(Pending::ACK);
            // Before the handshake is confirmed nothing was advertised yet
            // (SYN data read early): no window to reopen.
            if self.state == State::Established {
                self.reopened = Some(0);
            }
        }
    }

    /// A packet advertising `wnd` went out. While the peer has not reacted
    /// to a reopened window, the next update is due one backed-off RTO
    /// after the latest packet that carried it.
    pub(super) fn advertised(&mut self, now: Instant, wnd: usize) {
        self.advertised_wnd = wnd;
        if let Some(resends) = self.reopened {
            let wait = (self.rto() * 2u32.pow(resends)).min(self.config.max_rto);
            self.timers.set(Timer::WindowUpdate, now + wait);
        }
    }

    /// The peer sent data: it knows our window.
    pub(super) fn peer_used_window(&mut self) {
        if self.reopened.take().is_some() {
            self.timers.stop(Timer::WindowUpdate);
        }
    }

    pub(super) fn on_window_update_timer(&mut self) {
        let Some(resends) = self.reopened else { return };
        let peer_may_send = matches!(self.state, State::Established) && !self.recv.is_eof();
        if resends >= MAX_RESENDS || !peer_may_send {
            self.reopened = None;
            return;
        }
        self.reopened = Some(resends + 1);
        self.pending.insert(Pending::ACK);
    }
}
