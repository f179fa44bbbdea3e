//! Early-data dials: the SYN waits a moment for the application's first
//! bytes so that they ride on it (with the SYN-data extension offered).
//!
//! The connection is created in SYN-SENT with its SYN held back. Bytes
//! written meanwhile go to the send buffer as usual. The SYN leaves, with
//! as many of them as fit (`TransportConfig::max_syn_data`), when the
//! application flushes or shuts down (`Connection::release_syn`), when the
//! buffer holds `max_syn_data` bytes, or when the hold expires. A read does
//! not let it go: a reader started beside the writer (a split stream) would
//! otherwise send the SYN before the writer had its turn.
//! From then on the dial is an ordinary one: a SYN that carried data and
//! went unanswered is sent again bare (`withdraw_syn_data`).

use std::time::Instant;

use super::timer::Timer;
use super::{send_buffer, Connection, State};
use crate::wire::ExtFlags;

impl Connection {
    /// Holds the SYN of a new dial until `until` at the latest (see the
    /// module documentation). Only before the SYN was first sent.
    pub(crate) fn hold_syn(&mut self, until: Instant) {
        let fresh = self.state == State::SynSent
            && self.sent.get(self.syn_seq).is_some_and(|p| p.transmissions == 0 && p.len == 0);
        if fresh {
            self.syn_held = true;
            self.timers.set(Timer::SynHold, until);
        }
    }

    /// `true` while the SYN of an early-data dial waits for the
    /// application's first bytes.
    #[must_use]
    pub fn is_syn_held(&self) -> bool {
        self.syn_held
    }

    /// Lets a held SYN go now, carrying as many of the bytes written so far
    /// as fit when SYN data is offered; the rest follows as DATA once
    /// connected. Does nothing when the SYN is not held.
    pub fn release_syn(&mut self) {
        if !self.syn_held {
            return;
        }
        self.syn_held = false;
        self.timers.stop(Timer::SynHold);
        if !self.offered.contains(ExtFlags::SYN_DATA) {
            return;
        }
        let room = self.max_payload(2 + crate::wire::EXTENSION_BITS_LEN);
        let len = self.send_buf.unsent_len().min(self.config.max_syn_data).min(room);
        if len == 0 {
            return;
        }
        if self.sent.set_lost_payload(self.syn_seq, len) {
            let seg = send_buffer::Segment { offset: 0, len, ends_message: false, end_cost: 0 };
            self.send_buf.take_segment(seg);
        }
    }
}
