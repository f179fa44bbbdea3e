//! Packets sent and not yet acknowledged, indexed by sequence number.

use std::collections::VecDeque;
use std::time::Instant;

use super::send_buffer::message_end_cost;
use crate::wire::{PacketType, SeqNr, HEADER_LEN};

#[derive(Debug)]
pub(crate) struct SentPacket {
    pub(crate) kind: PacketType,
    /// Stream offset of the payload in the send buffer.
    pub(crate) offset: u64,
    pub(crate) len: usize,
    /// Metadata record of the message this packet ends.
    pub(crate) meta: Option<Box<[u8]>>,
    pub(crate) time_sent: Instant,
    pub(crate) transmissions: u32,
    /// Acknowledged by a selective ACK (kept until the cumulative ACK).
    pub(crate) sacked: bool,
    /// Was selectively acknowledged at some point (even if a timeout since
    /// discarded the SACK): its bytes were counted and its RTT taken then.
    pub(crate) sacked_once: bool,
    /// Declared lost: waiting to be sent again.
    pub(crate) lost: bool,
    /// Whether the congestion window limited sending when it went out.
    pub(crate) window_limited: bool,
}

impl SentPacket {
    /// A packet of `kind` carrying `len` bytes from stream offset `offset`,
    /// sent once at `now`, with no message end, not acknowledged, not lost.
    pub(crate) fn new(kind: PacketType, offset: u64, len: usize, now: Instant) -> Self {
        SentPacket {
            kind,
            offset,
            len,
            meta: None,
            time_sent: now,
            transmissions: 1,
            sacked: false,
            sacked_once: false,
            lost: false,
            window_limited: false,
        }
    }

    /// Whether acknowledging this packet now gives a true RTT sample and
    /// newly acknowledged bytes: sent once (Karn), not declared lost and
    /// waiting, and not already acknowledged selectively.
    pub(crate) fn fresh_ack(&self) -> bool {
        !self.sacked_once && !self.lost
    }

    /// Bytes this packet counts for in the window.
    pub(crate) fn size(&self) -> usize {
        self.len + HEADER_LEN
    }

    /// What this packet counts for in the peer's receive window: its
    /// payload and the message end it carries (as the receiver counts it).
    pub(crate) fn window_bytes(&self) -> usize {
        self.len + self.meta.as_ref().map_or(0, |m| message_end_cost(m.len()))
    }

    fn counts_in_flight(&self) -> bool {
        !self.sacked && !self.lost
    }
}

/// Packets in sequence order: `packets[i]` has sequence `first + i`.
#[derive(Debug)]
pub(crate) struct SentPackets {
    first: SeqNr,
    packets: VecDeque<SentPacket>,
    bytes_in_flight: usize,
    /// Payload bytes of the same packets and their message ends (what the
    /// peer's window counts).
    payload_in_flight: usize,
    /// Packets marked lost and not yet sent again.
    lost: usize,
}

impl SentPackets {
    pub(crate) fn new(first: SeqNr) -> Self {
        SentPackets {
            first,
            packets: VecDeque::new(),
            bytes_in_flight: 0,
            payload_in_flight: 0,
            lost: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Sequence number of the oldest unacknowledged packet.
    pub(crate) fn first_seq(&self) -> SeqNr {
        self.first
    }

    /// Sequence number the next pushed packet gets.
    pub(crate) fn next_seq(&self) -> SeqNr {
        self.first + self.packets.len() as u16
    }

    /// Packets sent and not yet acknowledged (lost ones included).
    pub(crate) fn outstanding(&self) -> usize {
        self.packets.len()
    }

    pub(crate) fn bytes_in_flight(&self) -> usize {
        self.bytes_in_flight
    }

    /// Payload bytes in flight: what the peer's receive window counts.
    pub(crate) fn payload_in_flight(&self) -> usize {
        self.payload_in_flight
    }

    /// Records a new packet; returns its sequence number.
    pub(crate) fn push(&mut self, packet: SentPacket) -> SeqNr {
        let seq = self.next_seq();
        if packet.counts_in_flight() {
            self.bytes_in_flight += packet.size();
            self.payload_in_flight += packet.window_bytes();
        }
        self.lost += usize::from(packet.lost);
        self.packets.push_back(packet);
        seq
    }

    fn index(&self, seq: SeqNr) -> Option<usize> {
        let i = usize::from(self.first.distance_to(seq));
        (i < self.packets.len()).then_some(i)
    }

    pub(crate) fn get(&self, seq: SeqNr) -> Option<&SentPacket> {
        self.index(seq).map(|i| &self.packets[i])
    }

    pub(crate) fn front(&self) -> Option<&SentPacket> {
        self.packets.front()
    }

    /// Removes packets up to and including `ack_nr`; calls `f` on each.
    pub(crate) fn ack_cumulative(&mut self, ack_nr: SeqNr, mut f: impl FnMut(SeqNr, SentPacket)) {
        let Some(last) = self.index(ack_nr) else { return };
        for _ in 0..=last {
            let Some(p) = self.packets.pop_front() else { break };
            let seq = self.first;
            self.first = self.first.next();
            if p.counts_in_flight() {
                self.bytes_in_flight -= p.size();
                self.payload_in_flight -= p.window_bytes();
            }
            self.lost -= usize::from(p.lost);
            f(seq, p);
        }
    }

    /// Marks a packet selectively acknowledged; returns it if it was not
    /// already, and whether this is its first selective ACK ever (`false`
    /// after a renege).
    pub(crate) fn sack(&mut self, seq: SeqNr) -> Option<(&SentPacket, bool)> {
        let i = self.index(seq)?;
        let p = &mut self.packets[i];
        if p.sacked {
            return None;
        }
        let first_time = !p.sacked_once;
        if p.counts_in_flight() {
            self.bytes_in_flight -= p.size();
            self.payload_in_flight -= p.window_bytes();
        }
        p.sacked = true;
        p.sacked_once = true;
        if p.lost {
            p.lost = false;
            self.lost -= 1;
        }
        Some((&self.packets[i], first_time))
    }

    /// The receiver reneged on a selective ACK: its cumulative ACK stops
    /// right before the oldest packet, which we had as selectively
    /// acknowledged (our receiver drops far out-of-order data to make room
    /// for the packet that fills its gap). Forget that SACK and send the
    /// packet again. Returns whether it did.
    pub(crate) fn renege_front(&mut self) -> bool {
        let Some(p) = self.packets.front_mut() else { return false };
        if !p.sacked {
            return false;
        }
        p.sacked = false;
        p.lost = true;
        self.lost += 1;
        true
    }

    /// Declares a packet lost (it will be sent again). Returns `false` when it
    /// was already lost or acknowledged.
    pub(crate) fn mark_lost(&mut self, seq: SeqNr) -> bool {
        let Some(i) = self.index(seq) else { return false };
        let p = &mut self.packets[i];
        if !p.counts_in_flight() {
            return false;
        }
        self.bytes_in_flight -= p.size();
        self.payload_in_flight -= p.window_bytes();
        p.lost = true;
        self.lost += 1;
        true
    }

    /// The newest packet still counted in flight.
    pub(crate) fn last_in_flight(&self) -> Option<SeqNr> {
        let i = self.packets.iter().rposition(SentPacket::counts_in_flight)?;
        Some(self.first + i as u16)
    }

    /// Declares every packet in flight lost (retransmission timeout).
    pub(crate) fn mark_all_lost(&mut self) {
        for p in &mut self.packets {
            if !p.sacked && !p.lost {
                p.lost = true;
                self.lost += 1;
            }
        }
        self.bytes_in_flight = 0;
        self.payload_in_flight = 0;
    }

    /// Empties the payload of the lost packet `seq` (a SYN whose data is
    /// withdrawn); returns the length it had. A packet in flight is left
    /// alone (its bytes are counted), and so is an unknown one.
    pub(crate) fn strip_lost_payload(&mut self, seq: SeqNr) -> usize {
        match self.index(seq).map(|i| &mut self.packets[i]) {
            Some(p) if p.lost => std::mem::take(&mut p.len),
            _ => 0,
        }
    }

    /// Gives the unsent packet `seq` a payload of `len` bytes (a held SYN
    /// taking the application's first bytes); `false` if it was sent
    /// already.
    pub(crate) fn set_lost_payload(&mut self, seq: SeqNr, len: usize) -> bool {
        match self.index(seq).map(|i| &mut self.packets[i]) {
            Some(p) if p.lost && p.transmissions == 0 => {
                p.len = len;
                true
            }
            _ => false,
        }
    }

    /// The oldest packet waiting to be sent again.
    pub(crate) fn first_lost(&self) -> Option<SeqNr> {
        if self.lost == 0 {
            return None;
        }
        self.packets.iter().position(|p| p.lost).map(|i| self.first + i as u16)
    }

    /// Records a (re)transmission of a lost packet.
    pub(crate) fn on_resent(&mut self, seq: SeqNr, now: Instant, window_limited: bool) {
        if let Some(i) = self.index(seq) {
            let p = &mut self.packets[i];
            if p.lost {
                p.lost = false;
                self.lost -= 1;
                self.bytes_in_flight += p.size();
                self.payload_in_flight += p.window_bytes();
            }
            p.transmissions += 1;
            p.time_sent = now;
            p.window_limited = window_limited;
        }
    }

    /// Retransmitted packets still unacknowledged although a packet sent
    /// after them (at `newest_sent`, later than their own send by more than
    /// `window`) was acknowledged: the retransmission was lost too. Their
    /// sequence numbers go into `out`.
    pub(crate) fn lost_retransmissions(
        &self,
        newest_sent: Instant,
        window: std::time::Duration,
        out: &mut Vec<SeqNr>,
    ) {
        for (i, p) in self.packets.iter().enumerate() {
            if p.transmissions > 1 && p.counts_in_flight() && p.time_sent + window < newest_sent {
                out.push(self.first + i as u16);
            }
        }
    }

    /// Sequence numbers of packets not acknowledged with at least
    /// `threshold` selectively acknowledged packets after them: the
    /// candidates for loss by SACK evidence. Returns the newest such packet.
    pub(crate) fn sack_loss_horizon(&self, threshold: usize) -> Option<SeqNr> {
        let mut sacked_after = 0;
        for (i, p) in self.packets.iter().enumerate().rev() {
            if p.sacked {
                sacked_after += 1;
            } else if sacked_after >= threshold {
                return Some(self.first + i as u16);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(now: Instant) -> SentPacket {
        SentPacket::new(PacketType::Data, 0, 100, now)
    }

    /// A receiver that reneges on a selective ACK and then acknowledges the
    /// packet selectively again gets no second credit for it: the second
    /// SACK is not its first (a receiver could otherwise inflate our
    /// congestion window by reneging over and over).
    #[test]
    fn a_sack_after_a_renege_is_not_fresh() {
        let now = Instant::now();
        let mut sent = SentPackets::new(SeqNr(10));
        for _ in 0..3 {
            sent.push(data(now));
        }
        assert!(sent.sack(SeqNr(10)).is_some_and(|(_, first)| first));
        assert!(sent.sack(SeqNr(10)).is_none(), "already selectively acknowledged");
        assert!(sent.renege_front());
        sent.on_resent(SeqNr(10), now, false);
        let again = sent.sack(SeqNr(10)).map(|(_, first)| first);
        assert_eq!(again, Some(false));
        assert!(sent.sack(SeqNr(11)).is_some_and(|(_, first)| first));
    }
}
