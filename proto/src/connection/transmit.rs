//! Packetisation: which packet goes next (ACK, retransmission, new data,
//! FIN, probe), within the congestion window, the peer's window, the pacer
//! and the anti-amplification limit, and how it is written.

use std::time::Instant;

use tracing::{debug, trace};

use crate::wire::{
    ExtFlags, Extension, Extensions, Negotiation, PacketType, Repr, SeqNr, HEADER_LEN,
};

use super::mtu::ProbeForm;
use super::pending::Pending;
use super::recv_buffer::MAX_SACK_BYTES;
use super::sent_packets::SentPacket;
use super::timer::Timer;
use super::{
    Connection, LocalFin, State, AMPLIFICATION_FACTOR, MAX_ADVERTISED_WINDOW, SYN_DATA_DATAGRAM,
};

impl Connection {
    pub(super) fn max_payload(&self, extra_header: usize) -> usize {
        self.packet_size() - HEADER_LEN - extra_header
    }

    /// Size of new packets (UDP payload).
    pub(super) fn packet_size(&self) -> usize {
        self.mtu.current()
    }

    /// Room for a packet of `payload` bytes (and, when `paced`, the pacer's
    /// leave to send it now): the congestion window counts
    /// whole packets, the peer's receive window only payload (and, before
    /// the initiator confirmed the handshake, our pre-confirmation cap).
    /// When the peer's window is closed with nothing in flight, arms the
    /// persist timer so that a probe goes out even if the window update is
    /// lost.
    pub(super) fn window_allows(&mut self, now: Instant, payload: usize, paced: bool) -> bool {
        let in_flight = self.sent.bytes_in_flight();
        if self.amplification_room().is_some_and(|room| payload + HEADER_LEN > room) {
            return false;
        }
        // One packet may always be in flight, however small the window is
        // next to the packet size (which path MTU discovery can raise).
        let cwnd_ok = in_flight == 0 || in_flight + payload + HEADER_LEN <= self.cc.window();
        let peer_ok = self.sent.payload_in_flight() + payload <= self.peer_wnd;
        if peer_ok {
            // Only a window that takes the packet ends the wait: ACKs with
            // a window open but too small for it (keepalives, say) would
            // otherwise push the probe back forever.
            self.timers.stop(Timer::Persist);
        }
        if cwnd_ok && peer_ok {
            if !paced || !self.config.pacing {
                // Retransmissions are not held back: recovery comes first.
                return true;
            }
            let mss = self.packet_size() - HEADER_LEN;
            let size = payload + HEADER_LEN;
            let rtt = self.rtt.smoothed();
            if let Some(at) = self.pacer.delay(now, size, self.cc.window(), rtt, mss) {
                self.timers.set(Timer::Pace, at);
                return false;
            }
            self.pacer.on_sent(size);
            return true;
        }
        if in_flight == 0 {
            if self.pending.take(Pending::WINDOW_PROBE) {
                return true;
            }
            if !peer_ok && self.timers.get(Timer::Persist).is_none() {
                self.timers.set(Timer::Persist, now + self.rto());
            }
        }
        false
    }

    /// Bytes that may still be sent before the initiator is confirmed
    /// (`None`: no limit, the peer proved its address).
    pub(super) fn amplification_room(&self) -> Option<usize> {
        (self.state == State::SynRecv).then(|| {
            (self.unconfirmed_received * AMPLIFICATION_FACTOR).saturating_sub(self.unconfirmed_sent)
        })
    }

    /// Writes the next datagram into `buf`; returns its length.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.dont_fragment = false;
        if self.pending.take(Pending::RESET) {
            if self.amplification_room().is_some_and(|room| room < HEADER_LEN) {
                // Not even a RESET for an address that never confirmed.
                return None;
            }
            let mut repr = Repr::new(
                PacketType::Reset,
                self.send_id,
                self.sent.next_seq(),
                self.recv.ack_nr(),
            );
            repr.timestamp = self.micros(now);
            return self.finish_emit(now, &repr, buf, 0);
        }
        match self.state {
            State::Closed => return None,
            State::SynSent if self.syn_held => return None,
            State::SynSent => return self.transmit_lost(now, buf),
            _ => {}
        }
        // Until the initiator confirms the handshake, every ACK we send is
        // the SYN-ACK itself: an initiator still waiting for it takes any
        // STATE acknowledging its SYN for the SYN-ACK (its seq, its record).
        if self.pending.contains(Pending::SYN_ACK)
            || (self.state == State::SynRecv
                && self.pending.intersects(Pending::ACK | Pending::KEEPALIVE))
        {
            let mut repr = self.header(now, PacketType::State, self.syn_ack_seq);
            let mut exts = Extensions::new();
            if !self.offered.is_empty() && !self.config.extensions.is_empty() {
                let _ = exts
                    .push(Extension::ExtensionBits(Negotiation::new(self.negotiated).to_bits()));
            }
            repr.extensions = exts;
            if self.amplification_room().is_some_and(|room| repr.buffer_len() > room) {
                // Over the limit: wait for the initiator (a retransmitted
                // SYN earns another answer).
                return None;
            }
            self.pending.remove(Pending::SYN_ACK | Pending::ACK | Pending::KEEPALIVE);
            self.advertised(now, repr.wnd_size as usize);
            if self.state == State::SynRecv {
                let backoff = 2u32.saturating_pow(self.syn_acks_sent.min(16));
                self.syn_acks_sent += 1;
                let at = now + (self.config.syn_rto * backoff).min(self.config.max_rto);
                self.timers.set(Timer::Retransmit, at);
            }
            return self.finish_emit(now, &repr, buf, 0);
        }
        if self.state == State::TimeWait {
            return self.transmit_ack(now, buf);
        }
        if let Some(n) = self.transmit_lost(now, buf) {
            return Some(n);
        }
        if let Some(n) = self.transmit_new(now, buf) {
            return Some(n);
        }
        self.transmit_ack(now, buf)
    }

    pub(super) fn header(&self, now: Instant, kind: PacketType, seq: SeqNr) -> Repr<'static> {
        let mut repr = Repr::new(kind, self.send_id, seq, self.recv.ack_nr());
        repr.timestamp = self.micros(now);
        repr.timestamp_diff = self.reply_micro;
        repr.wnd_size = self.recv.window().min(MAX_ADVERTISED_WINDOW) as u32;
        repr
    }

    pub(super) fn transmit_ack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.pending.contains(Pending::ACK) {
            let repr = self.header(now, PacketType::State, self.sent.next_seq());
            // Acknowledging the peer's FIN after ours went out: echo it.
            self.pending.set(Pending::FIN_ACK_ECHO, self.fin_seq.is_some() && self.recv.is_eof());
            return self.emit_with_sack_payload(now, repr, buf, self.send_buf.unsent(), 0);
        }
        if self.pending.take(Pending::FIN_ACK_ECHO) {
            if let Some(fin) = self.fin_seq {
                let repr = self.header(now, PacketType::State, fin);
                return self.finish_emit(now, &repr, buf, 0);
            }
        }
        if self.pending.take(Pending::KEEPALIVE) {
            let mut repr = self.header(now, PacketType::State, self.sent.next_seq());
            // libutp's keepalive: a duplicate ACK of the packet before the last.
            repr.ack_nr = self.recv.ack_nr() - 1;
            return self.finish_emit(now, &repr, buf, 0);
        }
        None
    }

    /// Sends again the oldest packet declared lost (or the SYN).
    pub(super) fn transmit_lost(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        let seq = self.sent.first_lost()?;
        let p = self.sent.get(seq)?;
        let (kind, offset, len, size) = (p.kind, p.offset, p.len, p.size());
        let window_bytes = p.window_bytes();
        let meta = p.meta.clone();
        let resend = p.transmissions > 0;
        if kind != PacketType::Syn && !self.window_allows(now, window_bytes, false) {
            return None;
        }
        if resend {
            self.stats.retransmits += 1;
        }
        // A probe sent again (after a tail loss probe, say) goes as an
        // ordinary packet, unpadded and fragmentable: its acknowledgement
        // proves nothing about the probe's size.
        if self.mtu.on_lost(now, seq) {
            self.stats.mtu_probes_lost += 1;
        }
        let limited = self.sent.bytes_in_flight() + 2 * size > self.cc.window();
        self.sent.on_resent(seq, now, limited);
        self.emit_data(now, kind, seq, offset, len, meta.as_deref(), buf)
    }

    /// Whether the next new packet should be a path MTU probe: its size and
    /// whether it is padded (else its payload fills it).
    pub(super) fn probe_plan(&mut self, now: Instant, buf_len: usize) -> Option<(usize, bool)> {
        let size = self.mtu.next_probe(now)?;
        if size > buf_len {
            self.mtu.limit(now, buf_len);
            return None;
        }
        let mss = self.max_payload(0);
        // A window of at least 16 packets, and two packets of it per probe:
        // the others carry the evidence of a probe's loss (a window of lost
        // probes would end in a timeout), and slow start's first round
        // trips are left alone.
        // (Counted in the smallest packets: a search that raised the packet
        // size must not wait for the window to grow in proportion.)
        let (window, packet) = (self.cc.window(), self.config.min_packet_size.max(HEADER_LEN));
        if window < 16 * packet || (self.mtu.probes_in_flight() + 1) * 2 * packet > window {
            return None;
        }
        // Nor for a peer whose receive window holds only a few packets:
        // larger packets would gain nothing there.
        if self.max_peer_wnd < 16 * packet {
            return None;
        }
        let padded = self.mtu.form() == ProbeForm::Padded && size >= self.packet_size() + 2;
        let payload = if padded { mss } else { size.checked_sub(HEADER_LEN)? };
        // Packets follow the probe: their acknowledgements reveal its loss
        // within a round trip, without a timeout.
        if self.send_buf.unsent_len() < payload + 3 * mss {
            return None;
        }
        Some((size, padded))
    }

    /// Forms and sends a new DATA packet, or the FIN.
    pub(super) fn transmit_new(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.sent.outstanding() >= self.config.max_packets_in_flight.clamp(1, 16_384) {
            return None;
        }
        if self.send_buf.has_unsent() {
            let probe = self.probe_plan(now, buf.len());
            let limit = match probe {
                Some((size, false)) => size,
                _ => self.packet_size(),
            };
            let mut max_seg = limit - HEADER_LEN;
            if self.max_peer_wnd > 0 {
                max_seg = max_seg.min(self.max_peer_wnd);
            }
            if let Some(room) = self.amplification_room() {
                // Before confirmation: what fits the limit leaves now (the
                // start of a response to SYN data), the rest afterwards.
                max_seg = max_seg.min(room.saturating_sub(HEADER_LEN));
                if max_seg == 0 {
                    return None;
                }
            }
            let seg = self.send_buf.peek_segment(max_seg)?;
            let in_flight = self.sent.bytes_in_flight();
            if self.config.nagle
                && in_flight > 0
                && seg.len < max_seg
                && !seg.ends_message
                && self.local_fin == LocalFin::None
            {
                return None;
            }
            // A message end counts in the peer's window as it does there.
            if !self.window_allows(now, seg.len + seg.end_cost, true) {
                return None;
            }
            let meta = self.send_buf.take_segment(seg);
            let limited = in_flight + 2 * (seg.len + HEADER_LEN) > self.cc.window();
            let seq = self.sent.push(SentPacket {
                meta: meta.clone(),
                window_limited: limited,
                ..SentPacket::new(PacketType::Data, seg.offset, seg.len, now)
            });
            let n = self.emit_data(
                now,
                PacketType::Data,
                seq,
                seg.offset,
                seg.len,
                meta.as_deref(),
                buf,
            )?;
            let Some((size, padded)) = probe else { return Some(n) };
            let sent = if padded { crate::wire::pad(buf, n, size).unwrap_or(n) } else { n };
            if sent == size {
                trace!(remote = %self.remote, seq = %seq, size, "path MTU probe");
                self.mtu.on_probe_sent(seq, size);
                self.stats.mtu_probes += 1;
                self.dont_fragment = true;
            }
            return Some(sent);
        }
        if self.local_fin == LocalFin::Requested && self.window_allows(now, 0, true) {
            let seq = self.sent.push(SentPacket::new(PacketType::Fin, self.send_buf.end(), 0, now));
            self.local_fin = LocalFin::Sent(seq);
            self.fin_seq = Some(seq);
            // Before confirmation the half-open timer bounds the wait.
            if self.state != State::SynRecv {
                self.timers.set(Timer::Close, now + self.config.close_timeout);
            }
            debug!(remote = %self.remote, seq = %seq, "sending FIN");
            return self.emit_data(now, PacketType::Fin, seq, 0, 0, None, buf);
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_data(
        &mut self,
        now: Instant,
        kind: PacketType,
        seq: SeqNr,
        offset: u64,
        len: usize,
        meta: Option<&[u8]>,
        buf: &mut [u8],
    ) -> Option<usize> {
        let mut repr = self.header(now, kind, seq);
        let mut exts = Extensions::new();
        if kind == PacketType::Syn {
            repr.connection_id = self.recv_id;
            repr.ack_nr = SeqNr(0);
            let mut offer = self.offered;
            if self.syn_data_withdrawn > 0 {
                offer = ExtFlags(offer.0 & !ExtFlags::SYN_DATA.0);
            }
            if !offer.is_empty() {
                let _ = exts.push(Extension::ExtensionBits(Negotiation::new(offer).to_bits()));
            }
        }
        if let Some(meta) = meta {
            let _ = exts.push(Extension::Metadata(meta));
        }
        repr.extensions = exts;
        if self.timers.get(Timer::Retransmit).is_none_or(|t| t <= now) {
            self.timers.set(Timer::Retransmit, now + self.rto());
        }
        if kind != PacketType::Syn {
            self.arm_tail_probe(now);
        }
        if kind == PacketType::Syn {
            // Payload straight from the send buffer.
            let header_len = repr.header_len();
            let at = repr.emit_header(buf, len).ok()?;
            self.send_buf.copy_out(offset, &mut buf[at..at + len]);
            let mut size = header_len + len;
            let offers_data =
                repr.extensions.negotiation().is_some_and(|n| n.flags.contains(ExtFlags::SYN_DATA));
            if len > 0 && offers_data && size + 2 <= SYN_DATA_DATAGRAM {
                // QUIC's answer to the anti-amplification limit: the padded
                // SYN lets the acceptor answer the data with up to three
                // times as much before we confirm (a noise handshake's
                // second message, say).
                size = crate::wire::pad(buf, size, SYN_DATA_DATAGRAM).unwrap_or(size);
            }
            return self.account_sent(now, size, len);
        }
        self.emit_with_sack_payload(now, repr, buf, offset, len)
    }

    /// Emits `repr` with a selective ACK when data is held out of order and
    /// room is left, then `len` payload bytes from the send buffer.
    pub(super) fn emit_with_sack_payload(
        &mut self,
        now: Instant,
        repr: Repr<'_>,
        buf: &mut [u8],
        offset: u64,
        len: usize,
    ) -> Option<usize> {
        let mut repr = repr;
        let mut sack = [0u8; MAX_SACK_BYTES];
        let mut sack_len = if self.recv.has_gaps() { self.recv.sack(&mut sack) } else { 0 };
        let room = self.packet_size().max(HEADER_LEN + len).saturating_sub(repr.header_len() + len);
        if sack_len + 2 > room {
            sack_len = (room.saturating_sub(2) / 4 * 4).min(sack_len);
        }
        if sack_len > 0 {
            let mut exts = Extensions::new();
            let _ = exts.push(Extension::SelectiveAck(&sack[..sack_len]));
            for e in repr.extensions.iter() {
                let _ = exts.push(*e);
            }
            repr.extensions = exts;
        }
        let at = repr.emit_header(buf, len).ok()?;
        self.send_buf.copy_out(offset, &mut buf[at..at + len]);
        self.pending.remove(Pending::ACK);
        self.advertised(now, repr.wnd_size as usize);
        self.account_sent(now, at + len, len)
    }

    pub(super) fn finish_emit(
        &mut self,
        now: Instant,
        repr: &Repr<'_>,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Option<usize> {
        let n = repr.emit(buf).ok()?;
        self.account_sent(now, n, payload_len)
    }

    pub(super) fn account_sent(
        &mut self,
        now: Instant,
        size: usize,
        payload_len: usize,
    ) -> Option<usize> {
        if self.state == State::SynRecv {
            self.unconfirmed_sent += size;
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += payload_len as u64;
        self.last_send = now;
        if let Some(interval) = self.config.keepalive_interval {
            if matches!(self.state, State::SynRecv | State::Established) {
                self.timers.set(Timer::KeepAlive, now + interval);
            }
        }
        Some(size)
    }
}
