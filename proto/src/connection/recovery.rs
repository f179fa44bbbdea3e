//! Acknowledgements and loss: what an ACK acknowledges (cumulative and
//! selective), the retransmission timeout and its backoff, tail loss probes,
//! and loss detection by reordering.

use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::congestion::AckInfo;
use crate::wire::{PacketType, Repr, SackIter, SeqNr, HEADER_LEN};

use super::pending::Pending;
use super::timer::Timer;
use super::{Connection, ConnectionError, Event, LocalFin, State, REORDER_THRESHOLD};

impl Connection {
    pub(super) fn rto(&self) -> Duration {
        let c = &self.config;
        let base = if self.state == State::SynSent {
            c.syn_rto
        } else {
            self.rtt.rto(c.initial_rto, c.min_rto, c.max_rto)
        };
        (base * 2u32.saturating_pow(self.timeouts_in_row.min(16))).min(c.max_rto)
    }

    pub(super) fn on_retransmit_timeout(&mut self, now: Instant) {
        // Before the initiator is confirmed only the SYN-ACK is sent again
        // (some dialers never resend their SYN: librqbit-utp), and only
        // within the anti-amplification limit, which its emission checks.
        // Data waits: the initiator's address may be a victim's (the timer
        // restarts on confirmation).
        if self.state == State::SynRecv {
            self.pending.insert(Pending::SYN_ACK);
            return;
        }
        if self.sent.is_empty() || self.state == State::Closed {
            return;
        }
        self.timeouts_in_row += 1;
        self.timeouts_unanswered += 1;
        self.stats.timeouts += 1;
        if self.state != State::SynSent
            && self.timeouts_unanswered > self.config.max_retransmissions
        {
            debug!(remote = %self.remote, "too many retransmission timeouts");
            self.close(Some(ConnectionError::TimedOut));
            return;
        }
        trace!(remote = %self.remote, n = self.timeouts_in_row, "retransmission timeout");
        self.stats.mtu_probes_lost += u64::from(self.mtu.on_timeout(now));
        if self.timeouts_in_row >= 2 && self.mtu.on_black_hole(now) {
            debug!(remote = %self.remote, size = self.packet_size(), "path MTU black hole?");
        }
        self.sent.mark_all_lost();
        self.fast_resend_from = self.sent.first_seq();
        self.cc.on_timeout(now);
        self.recovery_end = Some(self.sent.next_seq());
        self.dup_acks = 0;
        if self.state == State::SynSent {
            self.withdraw_syn_data();
        }
    }

    /// The SYN carried data and went unanswered: it goes again bare, and
    /// without offering SYN data. Some peers drop a SYN with a payload
    /// unanswered (librqbit-utp drops any non-DATA packet that has one), so
    /// a SYN that always carried its data would never connect to them. The
    /// bytes follow as DATA once connected, unless the SYN-ACK negotiates
    /// SYN data: only the first SYN offered it, so the peer took that SYN
    /// and delivered its data (its SYN-ACK was lost), and the bytes count
    /// as acknowledged.
    pub(super) fn withdraw_syn_data(&mut self) {
        let len = self.sent.strip_lost_payload(self.syn_seq);
        if len > 0 {
            debug!(remote = %self.remote, len, "SYN data unanswered: the SYN goes again without it");
            self.syn_data_withdrawn = len;
            self.send_buf.rewind(0);
        }
    }

    /// A round trip and a half without an acknowledgement while packets are in
    /// flight: the newest one goes again (without touching the window), so
    /// that a lost tail is reported by a selective ACK rather than found by
    /// the retransmission timeout (RFC 8985's probe timeout, once per
    /// episode).
    pub(super) fn on_tail_probe(&mut self) {
        if self.state != State::Established || self.tail_probed {
            return;
        }
        let Some(seq) = self.sent.last_in_flight() else { return };
        trace!(remote = %self.remote, seq = %seq, "tail loss probe");
        self.tail_probed = true;
        self.stats.tail_probes += 1;
        self.sent.mark_lost(seq);
    }

    /// Arms the tail loss probe 1.5 round trips (and a little) from `now`,
    /// when that comes before the retransmission timeout.
    pub(super) fn arm_tail_probe(&mut self, now: Instant) {
        if self.tail_probed || self.sent.bytes_in_flight() == 0 {
            self.timers.stop(Timer::TailProbe);
            return;
        }
        let Some(srtt) = self.rtt.smoothed() else { return };
        // Our peers acknowledge at once (no delayed-ACK timer), so one and
        // a half round trips is already late.
        let pto = srtt * 3 / 2 + Duration::from_millis(2);
        if pto < self.rto() {
            self.timers.set(Timer::TailProbe, now + pto);
        } else {
            self.timers.stop(Timer::TailProbe);
        }
    }

    pub(super) fn process_ack(&mut self, now: Instant, pkt: &Repr<'_>) {
        let in_flight_before = self.sent.bytes_in_flight();
        let mut acked = 0usize;
        let mut sample = None;
        let mut window_limited = false;
        let mut fin_acked = false;
        let first = self.sent.first_seq();
        let progressed = !self.sent.is_empty() && pkt.ack_nr.in_range(first, self.sent.next_seq());

        if progressed {
            let mtu = &mut self.mtu;
            self.sent.ack_cumulative(pkt.ack_nr, |seq, p| {
                mtu.on_acked(now, seq);
                if p.fresh_ack() {
                    acked += p.size();
                    if p.transmissions == 1 {
                        sample = Some(now.saturating_duration_since(p.time_sent));
                    }
                }
                window_limited |= p.window_limited;
                fin_acked |= p.kind == PacketType::Fin;
            });
            let lowest_unacked = self.sent.front().map_or(self.send_buf.unsent(), |p| p.offset);
            self.send_buf.ack_to(lowest_unacked);
            self.sync_send_share();
            // Markers behind the cumulative ACK follow it: left behind, they
            // would compare as ahead once the sequence numbers wrap past them
            // (half the space, ~45 MB later) and disable fast retransmit.
            let first = self.sent.first_seq();
            if self.fast_resend_from.is_before(first) {
                self.fast_resend_from = first;
            }
            if self.recovery_end.is_some_and(|end| !first.is_before(end)) {
                self.recovery_end = None;
            }
            self.tail_probed = false;
            self.dup_acks = 0;
            self.timeouts_in_row = 0;
        } else if pkt.ack_nr == first - 1
            && pkt.packet_type == PacketType::State
            && pkt.payload.is_empty()
            && !self.sent.is_empty()
        {
            self.dup_acks += 1;
            self.stats.duplicate_acks += 1;
            if self.dup_acks as usize == self.reorder_threshold()
                && !first.is_before(self.fast_resend_from)
            {
                trace!(remote = %self.remote, seq = %first, "three duplicate ACKs");
                self.declare_lost(now, first);
                self.fast_resend_from = first.next();
            }
        }

        // The peer says the oldest packet is missing although it had
        // acknowledged it selectively: it reneged (see `renege_front`).
        if self.sent.first_seq() == pkt.ack_nr.next() && self.sent.renege_front() {
            trace!(remote = %self.remote, seq = %self.sent.first_seq(), "peer reneged on a SACK");
        }

        if let Some(bits) = pkt.extensions.sack() {
            let mut newest_sacked: Option<Instant> = None;
            for seq in SackIter::new(pkt.ack_nr, bits) {
                if let Some((p, first_time)) = self.sent.sack(seq) {
                    self.mtu.on_acked(now, seq);
                    newest_sacked = newest_sacked.max(Some(p.time_sent));
                    // Selectively acknowledged again after a renege: its
                    // bytes were credited to the window the first time.
                    if first_time {
                        acked += p.size();
                        if p.transmissions == 1 {
                            sample = Some(now.saturating_duration_since(p.time_sent));
                        }
                    }
                    window_limited |= p.window_limited;
                }
            }
            if let Some(horizon) = self.sent.sack_loss_horizon(self.reorder_threshold()) {
                let mut seq = self.sent.first_seq();
                if seq.is_before(self.fast_resend_from) {
                    seq = self.fast_resend_from;
                }
                if !horizon.is_before(seq) {
                    self.fast_resend_from = horizon.next();
                }
                while seq.is_before(horizon.next()) {
                    if self.sent.get(seq).is_some_and(|p| !p.sacked && !p.lost) {
                        self.declare_lost(now, seq);
                    }
                    seq = seq.next();
                }
            }
            // A retransmission can be lost too: when a packet sent well
            // after it is acknowledged first, send it again rather than
            // wait for a timeout (RACK's rule, for retransmissions only).
            if let Some(newest) = newest_sacked {
                let window = self.rtt.min().unwrap_or(Duration::ZERO) / 4;
                let mut lost = Vec::new();
                self.sent.lost_retransmissions(newest, window, &mut lost);
                for seq in lost {
                    trace!(remote = %self.remote, seq = %seq, "retransmission lost");
                    self.declare_lost(now, seq);
                }
            }
        }

        if let Some(s) = sample {
            self.rtt.update(s);
        }
        if acked > 0 {
            let delay = pkt.timestamp_diff;
            let info = AckInfo {
                bytes_acked: acked,
                bytes_in_flight: in_flight_before,
                rtt: sample,
                min_rtt: self.rtt.min(),
                one_way_delay: (delay != 0 && delay != i32::MAX as u32).then_some(delay),
                reverse_delay: (pkt.timestamp.0 != 0).then_some(self.reply_micro),
                window_limited,
                mss: self.packet_size() - HEADER_LEN,
            };
            self.cc.on_ack(now, &info);
            self.update_send_limit();
            if self.write_blocked && self.send_buf.free() > 0 {
                self.write_blocked = false;
                self.set_event(Event::Writable);
            }
        }
        if fin_acked {
            debug!(remote = %self.remote, "our FIN was acknowledged");
            self.local_fin = LocalFin::Acked;
            if self.released {
                // Nobody reads: the peer gets a bounded time to finish.
                self.timers.set(Timer::Close, now + self.config.close_timeout);
            } else {
                // Half-closed: the peer may go on sending for as long as it
                // likes.
                self.timers.stop(Timer::Close);
            }
            self.set_event(Event::Finished);
        }
        if progressed || acked > 0 {
            if matches!(self.local_fin, LocalFin::Sent(_))
                || (self.released && self.local_fin == LocalFin::Requested)
            {
                // Closing, but the peer still takes our data: the close
                // timeout counts from the last progress, not from the FIN.
                self.timers.set(Timer::Close, now + self.config.close_timeout);
            }
            self.arm_tail_probe(now);
            if self.sent.bytes_in_flight() > 0 {
                self.timers.set(Timer::Retransmit, now + self.rto());
            } else if self.sent.first_lost().is_none() {
                self.timers.stop(Timer::Retransmit);
            }
        }
    }

    /// Later packets acknowledged before an earlier one counts as lost: three
    /// as usual, fewer when fewer are in flight (early retransmit, RFC 5827),
    /// or a small window could never gather the evidence and would wait for
    /// a timeout instead.
    pub(super) fn reorder_threshold(&self) -> usize {
        let outstanding = self.sent.outstanding();
        if outstanding < REORDER_THRESHOLD + 1 {
            outstanding.saturating_sub(1).max(1)
        } else {
            REORDER_THRESHOLD
        }
    }

    pub(super) fn declare_lost(&mut self, now: Instant, seq: SeqNr) {
        if !self.sent.mark_lost(seq) {
            return;
        }
        if self.mtu.on_lost(now, seq) {
            // Too big for the path, most likely: not congestion.
            trace!(remote = %self.remote, seq = %seq, "path MTU probe lost");
            self.stats.mtu_probes_lost += 1;
            return;
        }
        self.stats.fast_retransmits += 1;
        let new_event = self.recovery_end.is_none_or(|end| !seq.is_before(end));
        if new_event {
            self.cc.on_loss(now, self.sent.bytes_in_flight());
            self.recovery_end = Some(self.sent.next_seq());
        }
    }
}
