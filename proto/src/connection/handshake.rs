//! The handshake: the two constructors, the SYN-SENT state and the
//! initiator's half-open checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::debug;

use crate::config::TransportConfig;
use crate::wire::{ExtFlags, PacketType, Repr, SeqNr};

use super::pending::Pending;
use super::sent_packets::SentPacket;
use super::timer::Timer;
use super::{
    send_buffer, Connection, ConnectionError, Event, PacketVerdict, Side, State, STALE_AFTER,
};

impl Connection {
    /// A connection that sends a SYN to `remote`, receiving on `recv_id`.
    /// `syn_data` is carried on the SYN when SYN data is enabled; otherwise
    /// it simply becomes the first bytes of the stream.
    pub(crate) fn new_outgoing(
        config: Arc<TransportConfig>,
        epoch: Instant,
        now: Instant,
        remote: SocketAddr,
        recv_id: u16,
        syn_seq: SeqNr,
        syn_data: &[u8],
    ) -> Self {
        let mut conn = Self::new(config, epoch, now, remote, Side::Initiator, recv_id, syn_seq);
        conn.send_id = recv_id.wrapping_add(1);
        conn.state = State::SynSent;
        conn.offered = conn.config.extensions;
        conn.syn_seq = syn_seq;
        // The endpoint refuses initial data larger than the send buffer.
        // The initial data is taken whole (the endpoint checked it against
        // the capacity); the limit of a few windows applies from the first
        // acknowledgement on.
        conn.send_buf.set_limit(usize::MAX);
        let written = conn.send_buf.write(syn_data);
        conn.stats.bytes_written += written as u64;
        let syn_len = if conn.offered.contains(ExtFlags::SYN_DATA) {
            // The SYN also carries the 8-byte negotiation record.
            let room = conn.max_payload(2 + crate::wire::EXTENSION_BITS_LEN);
            written.min(conn.config.max_syn_data).min(room)
        } else {
            0
        };
        if syn_len > 0 {
            let seg =
                send_buffer::Segment { offset: 0, len: syn_len, ends_message: false, end_cost: 0 };
            conn.send_buf.take_segment(seg);
        }
        // Queued as lost, never sent: the first poll sends it.
        conn.sent.push(SentPacket {
            transmissions: 0,
            lost: true,
            ..SentPacket::new(PacketType::Syn, 0, syn_len, now)
        });
        conn.timers.set(Timer::Connect, now + conn.config.connect_timeout);
        debug!(remote = %remote, recv_id, "dialing");
        conn
    }

    /// A connection answering the SYN `syn` from `remote`; the SYN-ACK
    /// carries `syn_ack_seq`.
    pub(crate) fn new_incoming(
        config: Arc<TransportConfig>,
        epoch: Instant,
        now: Instant,
        remote: SocketAddr,
        syn: &Repr<'_>,
        syn_len: usize,
        syn_ack_seq: SeqNr,
    ) -> Self {
        let recv_id = syn.connection_id.wrapping_add(1);
        let mut conn = Self::new(config, epoch, now, remote, Side::Acceptor, recv_id, syn_ack_seq);
        conn.send_id = syn.connection_id;
        conn.state = State::SynRecv;
        conn.syn_seq = syn.seq_nr;
        conn.syn_ack_seq = syn_ack_seq;
        conn.pending.insert(Pending::SYN_ACK);
        conn.unconfirmed_received = syn_len;
        conn.recv.set_ack_nr(syn.seq_nr);
        conn.peer_wnd = syn.wnd_size as usize;
        conn.max_peer_wnd = conn.peer_wnd;
        conn.offered = syn.extensions.negotiation().map_or(ExtFlags::NONE, |n| n.flags);
        conn.negotiated = conn.offered.intersection(conn.config.extensions);
        if conn.negotiated.contains(ExtFlags::SYN_DATA) && !syn.payload.is_empty() {
            if syn.payload.len() <= conn.config.max_syn_data {
                conn.recv.deliver_syn_data(syn.payload);
                conn.stats.bytes_received += syn.payload.len() as u64;
                conn.set_event(Event::Readable);
            } else {
                // Refuse oversized SYN data: the initiator sends it again as DATA.
                conn.negotiated = ExtFlags(conn.negotiated.0 & !ExtFlags::SYN_DATA.0);
            }
        }
        conn.on_timestamp(now, syn.timestamp);
        // Half-open: a short life (the endpoint also bounds how many).
        conn.timers.set(Timer::Connect, now + conn.config.half_open_timeout);
        debug!(remote = %remote, recv_id, negotiated = conn.negotiated.0, "accepted SYN");
        conn
    }

    /// Whether a SYN (with sequence number `syn_seq`) with this
    /// connection's ids may replace it: it is lingering after a complete
    /// close, or the peer sent nothing valid for [`STALE_AFTER`] and the SYN
    /// repeats the one that opened this connection, as a restarted libutp
    /// peer does (its unseeded `rand()` gives the same ids and sequence
    /// numbers in every process). A blind attacker must guess that sequence
    /// number too, as hard as a RESET's ack; a libutp peer's numbers are
    /// predictable, but then so is everything that kills libutp's own side.
    pub(crate) fn is_replaceable(&self, now: Instant, syn_seq: SeqNr) -> bool {
        self.state == State::TimeWait
            || (syn_seq == self.syn_seq
                && now.saturating_duration_since(self.last_recv) >= STALE_AFTER)
    }

    /// Ends the connection silently: a new connection from the same peer
    /// and id takes its place (a RESET would reach the new one).
    pub(crate) fn replace(&mut self) {
        debug!(remote = %self.remote, "replaced by a new SYN with the same id");
        self.pending.remove(Pending::RESET);
        self.close(Some(ConnectionError::Reset));
    }

    pub(super) fn handle_syn_sent(&mut self, now: Instant, pkt: &Repr<'_>) -> PacketVerdict {
        // Only an acknowledgement of our SYN counts.
        if pkt.ack_nr != self.syn_seq {
            self.stats.invalid_packets += 1;
            return PacketVerdict::BadAck;
        }
        self.stats.packets_received += 1;
        self.last_recv = now;
        self.timers.set(Timer::Idle, now + self.config.idle_timeout);
        match pkt.packet_type {
            PacketType::State => {}
            PacketType::Reset => {
                debug!(remote = %self.remote, "connection refused");
                self.close(Some(ConnectionError::Refused));
                return PacketVerdict::Accepted;
            }
            _ => return PacketVerdict::Accepted,
        }
        self.negotiated = if self.offered.is_empty() {
            ExtFlags::NONE
        } else {
            pkt.extensions
                .negotiation()
                .map_or(ExtFlags::NONE, |n| n.flags.intersection(self.offered))
        };
        // The SYN is acknowledged.
        let mut syn_len = 0;
        let mut sample = None;
        self.sent.ack_cumulative(self.syn_seq, |_, p| {
            syn_len = p.len;
            if p.transmissions == 1 {
                sample = Some(now.saturating_duration_since(p.time_sent));
            }
        });
        if let Some(s) = sample {
            self.rtt.update(s);
        }
        if self.syn_data_withdrawn > 0 && self.negotiated.contains(ExtFlags::SYN_DATA) {
            // The peer took the first SYN, data and all.
            self.send_buf.ack_to(self.syn_data_withdrawn as u64);
        }
        if syn_len > 0 {
            if self.negotiated.contains(ExtFlags::SYN_DATA) {
                self.send_buf.ack_to(syn_len as u64);
            } else {
                // The peer ignored the SYN's payload: send it again as DATA.
                self.send_buf.rewind(0);
            }
        }
        self.sync_send_share();
        self.timeouts_in_row = 0;
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::Connect);
        self.recv.set_ack_nr(pkt.seq_nr - 1);
        self.peer_wnd = pkt.wnd_size as usize;
        self.max_peer_wnd = self.max_peer_wnd.max(self.peer_wnd);
        self.on_timestamp(now, pkt.timestamp);
        self.state = State::Established;
        self.start_mtu(now);
        self.pending.insert(Pending::ACK);
        self.set_event(Event::Connected);
        self.set_event(Event::Writable);
        debug!(remote = %self.remote, negotiated = self.negotiated.0, "connected");
        PacketVerdict::Accepted
    }
}
