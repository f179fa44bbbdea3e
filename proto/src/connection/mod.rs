//! One uTP connection as a pure state machine.

mod early;
mod mtu;
mod pacer;
mod recv_buffer;
mod rtt;
mod send_buffer;
mod sent_packets;
mod stats;
mod timer;
mod unreachable;

pub use stats::Stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::config::TransportConfig;
use crate::congestion::{AckInfo, Controller};
use crate::wire::{
    ExtFlags, Extension, Extensions, Negotiation, PacketType, Repr, SackIter, SeqNr, Timestamp,
    HEADER_LEN,
};
pub(crate) use mtu::MAX_UDP_PAYLOAD_V4;
use mtu::{PathMtu, ProbeForm, LEGACY_CEILING_V4, MAX_UDP_PAYLOAD_V6};
use pacer::Pacer;
use recv_buffer::{Arrival, RecvBuffer, MAX_SACK_BYTES};
use rtt::RttEstimator;
use send_buffer::SendBuffer;
use sent_packets::{SentPacket, SentPackets};
use timer::{Timer, TimerTable};

/// How far behind the oldest unacknowledged packet an acknowledgement may
/// be and still be taken as genuine (a reordered ACK, libutp's keepalive):
/// libutp's `ACK_NR_ALLOWED_WINDOW`. Everything older, and anything newer
/// than the last packet sent, is dropped before its type is looked at, so a
/// blind attacker must guess an ack within the packets actually in flight
/// plus this slack.
const ACK_SLACK: u16 = 3;

/// Before the initiator has proven that it receives our packets, an
/// acceptor sends at most this many times the bytes it received from it
/// (QUIC's anti-amplification rule, RFC 9000 section 8.1).
const AMPLIFICATION_FACTOR: usize = 3;

/// A SYN that carries data (and offers SYN data) is padded to this many
/// bytes: the acceptor may then answer with up to three times as much
/// before the handshake is confirmed (QUIC pads its first datagram to 1200
/// bytes for the same reason). 600 bytes let an answer of about 1.7 kB
/// through, a libp2p noise handshake's second message with room to spare.
pub(crate) const SYN_DATA_DATAGRAM: usize = 600;

/// A connection that received nothing valid for this long may be replaced
/// by a new SYN with its id: the peer most likely restarted (libutp's ids
/// and sequence numbers repeat from process to process). Shorter than
/// libutp's SYN retry (3 s), so its second SYN gets through.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// Shortest linger after both FINs are acknowledged.
const TIME_WAIT_MIN: Duration = Duration::from_secs(4);

/// Largest receive window we advertise. Wireshark's uTP dissector (and so,
/// plausibly, other traffic classifiers) takes a packet whose `wnd_size`
/// exceeds 0x380000 for something other than uTP; libutp advertises 1 MiB.
/// Advertising less than the buffer holds is always safe.
pub(crate) const MAX_ADVERTISED_WINDOW: usize = 0x38_0000;

/// Packets selectively acknowledged after an unacknowledged one before it is
/// declared lost (as libutp and TCP do with three duplicate ACKs).
const REORDER_THRESHOLD: usize = 3;

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// We sent the SYN.
    Initiator,
    /// We answered a SYN.
    Acceptor,
}

/// Why a connection ended other than by a graceful close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer answered our SYN with a RESET (or the endpoint refused it).
    #[error("connection refused by the peer")]
    Refused,
    /// The peer sent a RESET.
    #[error("connection reset by the peer")]
    Reset,
    /// The peer stopped answering: handshake, retransmission, idle or close
    /// timeout.
    #[error("connection timed out")]
    TimedOut,
    /// This side reset the connection.
    #[error("connection reset locally")]
    LocallyReset,
}

impl From<ConnectionError> for std::io::Error {
    fn from(e: ConnectionError) -> Self {
        use std::io::ErrorKind;
        let kind = match e {
            ConnectionError::Refused => ErrorKind::ConnectionRefused,
            ConnectionError::Reset => ErrorKind::ConnectionReset,
            ConnectionError::TimedOut => ErrorKind::TimedOut,
            ConnectionError::LocallyReset => ErrorKind::ConnectionAborted,
        };
        std::io::Error::new(kind, e)
    }
}

/// Why a write did not take bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The send buffer is full; wait for [`Event::Writable`].
    #[error("send buffer full")]
    Blocked,
    /// The write side was shut down.
    #[error("the write side of the connection is shut down")]
    Finished,
    /// The connection is gone.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The peer did not negotiate metadata records.
    #[error("the peer did not negotiate metadata-framed messages")]
    MessagesNotNegotiated,
    /// Metadata longer than 253 bytes cannot be carried.
    #[error("message metadata of {0} bytes is longer than the 253 that fit in a record")]
    MetadataTooLong(usize),
}

/// Why a read returned no bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// No data yet; wait for [`Event::Readable`].
    #[error("no data available yet")]
    Blocked,
    /// The connection is gone (data that arrived before remains readable
    /// until this is returned).
    #[error(transparent)]
    Connection(#[from] ConnectionError),
}

/// Something the application may want to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// The handshake completed: the initiator received the SYN-ACK, or the
    /// acceptor received the initiator's acknowledgement of it (until then
    /// an acceptor sends at most three times what it received).
    Connected,
    /// Data (or the end of the stream) can be read.
    Readable,
    /// Space freed in the send buffer.
    Writable,
    /// Our FIN was acknowledged: everything we wrote was received.
    Finished,
    /// The connection ended; see [`Connection::error`].
    Closed,
}

const EVENTS: [Event; 5] =
    [Event::Connected, Event::Readable, Event::Writable, Event::Finished, Event::Closed];

/// What a connection made of a packet routed to it (for the endpoint's
/// counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketVerdict {
    /// Taken (it may have changed state).
    Accepted,
    /// Its ack number is out of range: dropped, nothing changed.
    BadAck,
    /// A SYN that is not this connection's handshake: nothing changed.
    StaleSyn,
    /// The connection is closed: nothing changed.
    Closed,
}

/// The connection's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// SYN sent, waiting for the SYN-ACK.
    SynSent,
    /// SYN answered, waiting for the initiator's first packet.
    SynRecv,
    /// Handshake done; FINs may be under way in either direction.
    Established,
    /// Both FINs exchanged and acknowledged: lingering to answer a
    /// retransmitted FIN.
    TimeWait,
    /// Nothing more will be sent (but buffered data stays readable).
    Closed,
}

/// Our side's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalFin {
    None,
    /// The application shut down writing; the FIN follows the data.
    Requested,
    Sent(SeqNr),
    Acked,
}

/// A uTP connection: a sans-IO state machine.
///
/// # Contract
/// Inputs (all take `now`, which must never go backwards):
/// - datagrams for this connection (through the [`Endpoint`](crate::Endpoint),
///   which demultiplexes them);
/// - [`Connection::handle_timeout`] when [`Connection::poll_timeout`]'s instant
///   has passed;
/// - application commands: [`write`](Connection::write),
///   [`read`](Connection::read), [`shutdown`](Connection::shutdown) (FIN after
///   the data), [`reset`](Connection::reset).
///
/// Outputs, to poll after any input until they return `None`:
/// - datagrams to send (through the endpoint's `poll_transmit`);
/// - [`Connection::poll_timeout`]: when to call `handle_timeout` next;
/// - [`Connection::poll_event`]: what the application should know.
///
/// ACKs are sent when the caller polls for transmits, so a caller that
/// handles every datagram it has received before polling (as the runtime
/// does) sends one ACK per batch: delayed ACKs come from the batching.
#[derive(Debug)]
pub struct Connection {
    config: Arc<TransportConfig>,
    remote: SocketAddr,
    side: Side,
    recv_id: u16,
    send_id: u16,
    state: State,
    epoch: Instant,
    timers: TimerTable,

    send_buf: SendBuffer,
    sent: SentPackets,
    local_fin: LocalFin,
    cc: Box<dyn Controller>,
    pacer: Pacer,
    rtt: RttEstimator,
    /// Consecutive retransmission timeouts (drives the backoff).
    timeouts_in_row: u32,
    /// Retransmission timeouts since anything arrived from the peer (drives
    /// giving up: a peer that answers with a zero window is alive).
    timeouts_unanswered: u32,
    peer_wnd: usize,
    /// The largest window the peer has advertised: no packet carries more
    /// (a packet larger than the peer's whole window would only ever go as
    /// a zero-window probe, one per retransmission timeout).
    max_peer_wnd: usize,
    dup_acks: u32,
    /// Losses of packets before this number belong to a loss event already
    /// reported to the controller.
    recovery_end: Option<SeqNr>,
    /// Packets before this one were fast-retransmitted already: selective
    /// ACKs do not declare them lost again (only a timeout does).
    fast_resend_from: SeqNr,
    /// Path MTU discovery: the size of new packets and the probes.
    mtu: PathMtu,
    /// The datagram just emitted is a path MTU probe: send it with
    /// don't-fragment set.
    dont_fragment: bool,
    /// The tail loss probe of this episode went out (reset by progress).
    tail_probed: bool,
    /// A zero-window probe may go out regardless of the peer's window.
    probe_allowed: bool,
    write_blocked: bool,

    recv: RecvBuffer,
    ack_pending: bool,
    keepalive_pending: bool,
    /// Window we last advertised.
    advertised_wnd: usize,
    /// The largest DATA packet the peer sent (header and payload).
    peer_packet: usize,
    /// Our latest measurement of the peer's packets' delay, echoed in
    /// `timestamp_difference` of everything we send.
    reply_micro: u32,

    /// Sequence number of the SYN (ours as initiator, the peer's as acceptor).
    syn_seq: SeqNr,
    /// Acceptor: the sequence number of our SYN-ACK, and whether one is due.
    syn_ack_seq: SeqNr,
    syn_ack_pending: bool,
    /// Acceptor before confirmation: bytes received from the peer (its SYNs)
    /// and bytes sent to it, for the anti-amplification limit.
    unconfirmed_received: usize,
    unconfirmed_sent: usize,
    /// The application let go of the connection: nobody reads any more.
    released: bool,
    /// Extensions offered (initiator) or requested by the peer (acceptor).
    offered: ExtFlags,
    negotiated: ExtFlags,

    /// Sequence number of our FIN once sent.
    fin_seq: Option<SeqNr>,
    /// The ACK of the peer's FIN must go out once more with seq = our FIN
    /// (libtorrent drops a STATE past our FIN; libutp one not past its ack).
    fin_ack_echo: bool,
    /// Bytes of SYN data taken off the SYN after it went unanswered (see
    /// `withdraw_syn_data`); 0 when none were.
    syn_data_withdrawn: usize,
    /// An early-data dial holds its SYN until the application's first
    /// bytes are written and flushed, or `Timer::SynHold` fires (see
    /// `early.rs`).
    syn_held: bool,
    /// SYN-ACKs sent so far (the backoff of sending it again).
    syn_acks_sent: u32,
    reset_pending: bool,
    error: Option<ConnectionError>,
    events: u8,
    last_send: Instant,
    /// When the last validated packet arrived.
    last_recv: Instant,
    /// When the connection was created: a half-open one lives at most
    /// `connect_timeout` from here, however often its SYN comes again.
    created: Instant,
    stats: Stats,
    /// `utp_conn{remote, id, side}`: the endpoint enters it around the
    /// connection's work, so every log line of a connection (accepted ones
    /// too) says which one it is.
    span: tracing::Span,
}

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
        conn.sent.push(SentPacket {
            kind: PacketType::Syn,
            offset: 0,
            len: syn_len,
            meta: None,
            time_sent: now,
            transmissions: 0,
            sacked: false,
            sacked_once: false,
            lost: true,
            window_limited: false,
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
        conn.syn_ack_pending = true;
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

    fn new(
        config: Arc<TransportConfig>,
        epoch: Instant,
        now: Instant,
        remote: SocketAddr,
        side: Side,
        recv_id: u16,
        first_seq: SeqNr,
    ) -> Self {
        let packet_size = if remote.is_ipv4() {
            config.initial_packet_size_v4
        } else {
            config.initial_packet_size_v6
        };
        let packet_size = packet_size.max(HEADER_LEN + 64);
        let mtu = PathMtu::new(packet_size, config.min_packet_size, remote.is_ipv6());
        let cc = config.congestion.build(now, packet_size - HEADER_LEN);
        let mut timers = TimerTable::default();
        timers.set(Timer::Idle, now + config.idle_timeout);
        Connection {
            remote,
            side,
            recv_id,
            send_id: recv_id,
            state: State::SynSent,
            epoch,
            timers,
            send_buf: SendBuffer::new(config.send_buffer_size),
            sent: SentPackets::new(first_seq),
            local_fin: LocalFin::None,
            cc,
            pacer: Pacer::new(),
            rtt: RttEstimator::new(),
            timeouts_in_row: 0,
            timeouts_unanswered: 0,
            peer_wnd: 0,
            max_peer_wnd: 0,
            dup_acks: 0,
            recovery_end: None,
            fast_resend_from: first_seq,
            mtu,
            dont_fragment: false,
            tail_probed: false,
            probe_allowed: false,
            write_blocked: false,
            recv: RecvBuffer::new(SeqNr(0), config.receive_buffer_size),
            ack_pending: false,
            keepalive_pending: false,
            advertised_wnd: 0,
            peer_packet: 0,
            reply_micro: 0,
            syn_seq: SeqNr(0),
            syn_ack_seq: SeqNr(0),
            syn_ack_pending: false,
            unconfirmed_received: 0,
            unconfirmed_sent: 0,
            released: false,
            offered: ExtFlags::NONE,
            negotiated: ExtFlags::NONE,
            fin_seq: None,
            fin_ack_echo: false,
            syn_data_withdrawn: 0,
            syn_held: false,
            syn_acks_sent: 0,
            reset_pending: false,
            error: None,
            events: 0,
            last_send: now,
            last_recv: now,
            created: now,
            span: tracing::debug_span!("utp_conn", %remote, id = recv_id, side = ?side),
            stats: Stats::default(),
            config,
        }
    }

    // ---------------------------------------------------------------
    // Queries
    // ---------------------------------------------------------------

    /// The peer's address.
    #[must_use]
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Which side opened the connection.
    #[must_use]
    pub fn side(&self) -> Side {
        self.side
    }

    /// The connection id we receive on.
    #[must_use]
    pub fn recv_id(&self) -> u16 {
        self.recv_id
    }

    /// The connection id we send with.
    #[must_use]
    pub fn send_id(&self) -> u16 {
        self.send_id
    }

    /// The connection's tracing span (`utp_conn{remote, id, side}`).
    #[must_use]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// `true` once the handshake has completed on this side.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        !matches!(self.state, State::SynSent) && self.error.is_none()
    }

    /// `true` while an accepted connection waits for the initiator to
    /// confirm the handshake (acknowledge the SYN-ACK). Until then it sends
    /// at most three times the bytes the initiator sent.
    #[must_use]
    pub fn is_half_open(&self) -> bool {
        self.state == State::SynRecv
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
        self.reset_pending = false;
        self.close(Some(ConnectionError::Reset));
    }

    /// `true` once nothing more will be sent or received.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// `true` once our FIN was acknowledged.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.local_fin == LocalFin::Acked
    }

    /// Why the connection ended, if it ended badly.
    #[must_use]
    pub fn error(&self) -> Option<ConnectionError> {
        self.error
    }

    /// The extensions both sides agreed on.
    #[must_use]
    pub fn negotiated(&self) -> ExtFlags {
        self.negotiated
    }

    /// Current statistics.
    #[must_use]
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.rtt = self.rtt.smoothed();
        s.min_rtt = self.rtt.min();
        s.cwnd = self.cc.window();
        s.bytes_in_flight = self.sent.bytes_in_flight();
        s.peer_window = self.peer_wnd;
        s.recv_window = self.recv.window();
        s.packet_size = self.packet_size();
        s
    }

    /// Bytes that can be written now without blocking: the send buffer
    /// holds up to four congestion windows (at least 64 KiB, at most
    /// `send_buffer_size`).
    #[must_use]
    pub fn send_buffer_free(&self) -> usize {
        self.send_buf.free()
    }

    /// Lets the send buffer hold four congestion windows (see
    /// `SendBuffer::set_limit`).
    fn update_send_limit(&mut self) {
        self.send_buf.set_limit(self.cc.window().saturating_mul(4));
    }

    /// Bytes waiting to be read.
    #[must_use]
    pub fn readable_bytes(&self) -> usize {
        self.recv.readable()
    }

    // ---------------------------------------------------------------
    // Application commands
    // ---------------------------------------------------------------

    /// Queues bytes for sending; returns how many were taken.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        self.check_writable()?;
        if data.is_empty() {
            return Ok(0);
        }
        self.update_send_limit();
        let n = self.send_buf.write(data);
        if n == 0 {
            self.write_blocked = true;
            return Err(WriteError::Blocked);
        }
        self.stats.bytes_written += n as u64;
        if self.syn_held && self.send_buf.unsent_len() >= self.config.max_syn_data {
            self.release_syn();
        }
        Ok(n)
    }

    /// Ends the current message with `meta` (framed messages; needs the
    /// metadata extension negotiated). The bytes written since the previous
    /// message end form the message body. A message end takes room in the
    /// send buffer (its metadata and a small overhead) until it is sent:
    /// [`WriteError::Blocked`] when there is none.
    pub fn end_message(&mut self, meta: &[u8]) -> Result<(), WriteError> {
        self.check_writable()?;
        if !self.negotiated.contains(ExtFlags::METADATA) {
            return Err(WriteError::MessagesNotNegotiated);
        }
        if meta.len() > 253 {
            return Err(WriteError::MetadataTooLong(meta.len()));
        }
        self.update_send_limit();
        if !self.send_buf.end_message(meta) {
            self.write_blocked = true;
            return Err(WriteError::Blocked);
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), WriteError> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        if self.local_fin != LocalFin::None || self.state == State::Closed {
            return Err(WriteError::Finished);
        }
        Ok(())
    }

    /// Reads in-order bytes. `Ok(0)` means the peer finished sending and
    /// everything was read. After [`Connection::reset`] it fails with
    /// [`ConnectionError::LocallyReset`] (unread data was discarded).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.recv.read(buf);
        if n > 0 {
            self.stats.bytes_read += n as u64;
            self.maybe_window_update();
            return Ok(n);
        }
        // After our own reset the truth is an error, never a clean end: the
        // unread data was discarded.
        if self.error == Some(ConnectionError::LocallyReset) {
            return Err(ConnectionError::LocallyReset.into());
        }
        if self.recv.is_eof() {
            return Ok(0);
        }
        match self.error {
            Some(e) => Err(e.into()),
            None if self.state == State::Closed => Ok(0),
            None => Err(ReadError::Blocked),
        }
    }

    /// Bytes readable before the next message end, and that message's
    /// metadata, when a complete message is buffered.
    #[must_use]
    pub fn next_message_end(&self) -> Option<(usize, &[u8])> {
        self.recv.next_message_end()
    }

    /// Consumes the message end at the read position (after its body was
    /// read); returns its metadata.
    pub fn take_message_end(&mut self) -> Option<Box<[u8]>> {
        let meta = self.recv.pop_message_end()?;
        // Message ends take room in the window: consuming one may reopen it.
        self.maybe_window_update();
        Some(meta)
    }

    /// An acknowledgement waits to be sent: after a read, a window update
    /// (the window had nearly closed and reopened). The runtime lets its
    /// I/O task poll for it; the rule is the engine's alone.
    #[must_use]
    pub fn ack_due(&self) -> bool {
        self.ack_pending
    }

    /// After a read, tell the peer that the window reopened if it had
    /// (nearly) closed.
    fn maybe_window_update(&mut self) {
        let wnd = self.recv.window();
        // Room for the peer's next packet: as large as ours or the largest
        // it sent (its path MTU may exceed ours), but at most half the
        // buffer, or a buffer smaller than a packet would never reopen and
        // the peer would wait for its persist timer each time.
        let size = self.packet_size().max(self.peer_packet).min(self.recv.capacity() / 2).max(1);
        if self.advertised_wnd < size && wnd >= size {
            self.ack_pending = true;
        }
    }

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
            self.reset_pending = true;
        }
        // An abort: unread data is discarded, the next read fails.
        self.recv.discard();
        self.close(Some(ConnectionError::LocallyReset));
    }

    // ---------------------------------------------------------------
    // Events and timers
    // ---------------------------------------------------------------

    fn set_event(&mut self, event: Event) {
        self.events |= 1 << event as u8;
    }

    /// The next event for the application.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        for event in EVENTS {
            let bit = 1 << event as u8;
            if self.events & bit != 0 {
                self.events &= !bit;
                return Some(event);
            }
        }
        None
    }

    /// When [`Connection::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Runs the timers that expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.take_expired(now) {
            match timer {
                Timer::Retransmit => self.on_retransmit_timeout(now),
                Timer::TailProbe => self.on_tail_probe(),
                Timer::SynHold => self.release_syn(),
                Timer::Connect => {
                    if matches!(self.state, State::SynSent | State::SynRecv) {
                        debug!(remote = %self.remote, "handshake timed out");
                        self.close(Some(ConnectionError::TimedOut));
                    }
                }
                Timer::Idle => {
                    if self.state != State::Closed {
                        debug!(remote = %self.remote, "idle timeout");
                        self.close(Some(ConnectionError::TimedOut));
                    }
                }
                Timer::KeepAlive => {
                    if self.state == State::Established {
                        self.keepalive_pending = true;
                    }
                }
                Timer::Persist => {
                    self.probe_allowed = true;
                }
                // Only wakes the connection: the pacer allows the next packet.
                Timer::Pace => {}
                Timer::Close => match self.state {
                    State::TimeWait => self.close(None),
                    State::Closed => {}
                    _ => {
                        debug!(remote = %self.remote, "close timed out waiting for the peer");
                        if self.released && self.state == State::Established {
                            // Tell a peer that still sends that nobody reads.
                            self.reset_pending = true;
                        }
                        self.close(Some(ConnectionError::TimedOut));
                    }
                },
            }
        }
    }

    fn rto(&self) -> Duration {
        let c = &self.config;
        let base = if self.state == State::SynSent {
            c.syn_rto
        } else {
            self.rtt.rto(c.initial_rto, c.min_rto, c.max_rto)
        };
        (base * 2u32.saturating_pow(self.timeouts_in_row.min(16))).min(c.max_rto)
    }

    fn on_retransmit_timeout(&mut self, now: Instant) {
        // Before the initiator is confirmed only the SYN-ACK is sent again
        // (some dialers never resend their SYN: librqbit-utp), and only
        // within the anti-amplification limit, which its emission checks.
        // Data waits: the initiator's address may be a victim's (the timer
        // restarts on confirmation).
        if self.state == State::SynRecv {
            self.syn_ack_pending = true;
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
    fn withdraw_syn_data(&mut self) {
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
    fn on_tail_probe(&mut self) {
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
    fn arm_tail_probe(&mut self, now: Instant) {
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

    fn close(&mut self, error: Option<ConnectionError>) {
        if self.state == State::Closed {
            return;
        }
        if error.is_some() && self.error.is_none() {
            self.error = error;
        }
        debug!(remote = %self.remote, ?error, "closed");
        self.state = State::Closed;
        self.timers.stop_all();
        self.set_event(Event::Closed);
        self.set_event(Event::Readable);
        self.set_event(Event::Writable);
    }

    /// `true` when the connection is closed and has nothing left to send: the
    /// endpoint may forget it once the application let go of it.
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && !self.reset_pending
    }

    // ---------------------------------------------------------------
    // Incoming packets
    // ---------------------------------------------------------------

    fn micros(&self, now: Instant) -> Timestamp {
        Timestamp(now.saturating_duration_since(self.epoch).as_micros() as u32)
    }

    fn on_timestamp(&mut self, now: Instant, ts: Timestamp) {
        if ts.0 != 0 {
            self.reply_micro = self.micros(now).wrapping_since(ts);
        }
    }

    /// Handles a packet the endpoint routed to this connection. `len` is
    /// the datagram's length (for the anti-amplification limit).
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        pkt: &Repr<'_>,
        len: usize,
    ) -> PacketVerdict {
        if self.state == State::Closed {
            return PacketVerdict::Closed;
        }

        if pkt.packet_type == PacketType::Syn {
            // A retransmitted SYN: answer with the identical SYN-ACK. It
            // proves nothing (whoever sent the first one knows its fields),
            // so it refreshes no timer; it does earn its answer's bytes.
            if self.state == State::SynRecv && pkt.seq_nr == self.syn_seq {
                self.unconfirmed_received += len;
                self.syn_ack_pending = true;
                // The initiator is still trying (its SYN-ACK was lost): the
                // half-open life runs from its latest SYN. The endpoint's
                // bound on half-open connections holds whatever SYNs come.
                let cap = self.created + self.config.connect_timeout;
                self.timers.set(Timer::Connect, (now + self.config.half_open_timeout).min(cap));
                return PacketVerdict::Accepted;
            }
            self.stats.invalid_packets += 1;
            return PacketVerdict::StaleSyn;
        }

        if self.state == State::SynSent {
            return self.handle_syn_sent(now, pkt);
        }

        // Validate the acknowledgement before looking at the type: a RESET
        // with a made-up ack number is ignored like anything else. Only a
        // validated packet refreshes a timer.
        if !self.ack_acceptable(pkt) {
            self.stats.invalid_packets += 1;
            trace!(remote = %self.remote, ack = %pkt.ack_nr, "ack out of range");
            return PacketVerdict::BadAck;
        }
        self.stats.packets_received += 1;
        self.last_recv = now;
        self.timers.set(Timer::Idle, now + self.config.idle_timeout);

        if pkt.packet_type == PacketType::Reset {
            self.handle_reset(pkt);
            return PacketVerdict::Accepted;
        }

        self.on_timestamp(now, pkt.timestamp);
        self.timeouts_unanswered = 0;
        // A window from an ACK older than the newest one we had is stale (a
        // delayed duplicate): trusting it lets the sender overrun the peer.
        if !pkt.ack_nr.is_before(self.sent.first_seq() - 1) {
            self.peer_wnd = pkt.wnd_size as usize;
            self.max_peer_wnd = self.max_peer_wnd.max(self.peer_wnd);
        }

        if self.state == State::SynRecv {
            // The initiator got our SYN-ACK: the handshake is confirmed, and
            // the anti-amplification limit lifts.
            debug!(remote = %self.remote, "handshake confirmed");
            self.state = State::Established;
            self.timers.stop(Timer::Connect);
            self.syn_ack_pending = false;
            self.set_event(Event::Connected);
            if !self.sent.is_empty() {
                // Data sent before confirmation was not retransmitted:
                // its timer runs from here, and so does a FIN's.
                self.timers.set(Timer::Retransmit, now + self.rto());
                if let LocalFin::Sent(_) = self.local_fin {
                    self.timers.set(Timer::Close, now + self.config.close_timeout);
                }
            }
            self.start_mtu(now);
        }

        self.process_ack(now, pkt);

        match pkt.packet_type {
            PacketType::Data | PacketType::Fin => {
                let fin = pkt.packet_type == PacketType::Fin;
                let meta = if self.negotiated.contains(ExtFlags::METADATA) && !fin {
                    pkt.extensions.metadata()
                } else {
                    None
                };
                let payload = if fin { &[][..] } else { pkt.payload };
                self.stats.bytes_received += payload.len() as u64;
                self.peer_packet = self.peer_packet.max(HEADER_LEN + payload.len());
                let was_eof = self.recv.is_eof();
                match self.recv.insert(pkt.seq_nr, payload, meta, fin) {
                    Arrival::InOrder => self.set_event(Event::Readable),
                    Arrival::Duplicate => self.stats.duplicate_packets += 1,
                    Arrival::OutOfOrder | Arrival::Dropped => {}
                }
                if self.released {
                    self.recv.drop_readable();
                }
                if !was_eof && self.recv.is_eof() {
                    debug!(remote = %self.remote, "peer finished sending");
                    self.set_event(Event::Readable);
                }
                self.ack_pending = true;
            }
            PacketType::State | PacketType::Syn | PacketType::Reset => {}
        }
        self.check_time_wait(now);
        PacketVerdict::Accepted
    }

    /// Whether `pkt`'s ack number is one the peer can truly have: the
    /// newest packet we sent, or older by at most the packets in flight and
    /// [`ACK_SLACK`] (libutp's rule). Before the initiator confirmed the
    /// handshake only an ack of our SYN-ACK (or of data sent since) counts.
    /// A RESET may also carry our next sequence number: that is how libutp
    /// and libtorrent answer a STATE or keepalive (which carries it) for a
    /// connection they no longer know.
    fn ack_acceptable(&self, pkt: &Repr<'_>) -> bool {
        let next = self.sent.next_seq();
        let slack = if self.state == State::SynRecv { 0 } else { ACK_SLACK };
        let oldest = self.sent.first_seq() - 1 - slack;
        pkt.ack_nr.in_range(oldest, next)
            || (pkt.packet_type == PacketType::Reset
                && self.state != State::SynRecv
                && pkt.ack_nr == next)
    }

    fn handle_syn_sent(&mut self, now: Instant, pkt: &Repr<'_>) -> PacketVerdict {
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
        self.timeouts_in_row = 0;
        self.timers.stop(Timer::Retransmit);
        self.timers.stop(Timer::Connect);
        self.recv.set_ack_nr(pkt.seq_nr - 1);
        self.peer_wnd = pkt.wnd_size as usize;
        self.max_peer_wnd = self.max_peer_wnd.max(self.peer_wnd);
        self.on_timestamp(now, pkt.timestamp);
        self.state = State::Established;
        self.start_mtu(now);
        self.ack_pending = true;
        self.set_event(Event::Connected);
        self.set_event(Event::Writable);
        debug!(remote = %self.remote, negotiated = self.negotiated.0, "connected");
        PacketVerdict::Accepted
    }

    fn handle_reset(&mut self, pkt: &Repr<'_>) {
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

    fn process_ack(&mut self, now: Instant, pkt: &Repr<'_>) {
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
    fn reorder_threshold(&self) -> usize {
        let outstanding = self.sent.outstanding();
        if outstanding < REORDER_THRESHOLD + 1 {
            outstanding.saturating_sub(1).max(1)
        } else {
            REORDER_THRESHOLD
        }
    }

    fn declare_lost(&mut self, now: Instant, seq: SeqNr) {
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

    fn check_time_wait(&mut self, now: Instant) {
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

    // ---------------------------------------------------------------
    // Outgoing packets
    // ---------------------------------------------------------------

    fn max_payload(&self, extra_header: usize) -> usize {
        self.packet_size() - HEADER_LEN - extra_header
    }

    /// Size of new packets (UDP payload).
    fn packet_size(&self) -> usize {
        self.mtu.current()
    }

    // ---------------------------------------------------------------
    // Path MTU
    // ---------------------------------------------------------------

    /// A path MTU the endpoint remembers for this destination, valid until
    /// `until`: taken instead of a search when the connection is
    /// established.
    pub(crate) fn set_known_path_mtu(&mut self, size: usize, until: Instant) {
        self.mtu.set_known(size, until);
    }

    /// The path MTU found by a search that just ended, or lowered after a
    /// suspected black hole (taken once).
    pub(crate) fn take_path_mtu(&mut self) -> Option<usize> {
        self.mtu.take_result()
    }

    /// Whether the datagram just emitted must go with don't-fragment set
    /// (a path MTU probe). Reset by the next `poll_transmit`.
    pub(crate) fn dont_fragment(&self) -> bool {
        self.dont_fragment
    }

    /// The sending stack refused a datagram of `size` bytes sent with
    /// don't-fragment (EMSGSIZE): if it was one of our probes, the search
    /// learns from it and the packet goes again (not as a probe).
    pub(crate) fn on_packet_too_big(&mut self, now: Instant, size: usize) {
        if let Some(seq) = self.mtu.on_too_big(now, size) {
            self.stats.mtu_probes_lost += 1;
            // Never left: not congestion, just send it again.
            self.sent.mark_lost(seq);
        }
    }

    /// Starts path MTU discovery once the handshake is done and the
    /// extensions are known.
    fn start_mtu(&mut self, now: Instant) {
        let c = &self.config;
        if !c.mtu_probing {
            return;
        }
        let (ceiling, form) = if self.negotiated.contains(ExtFlags::LARGE_PACKETS) {
            (c.max_packet_size, ProbeForm::Padded)
        } else if self.remote.is_ipv4() {
            (c.max_packet_size.min(LEGACY_CEILING_V4), ProbeForm::Data)
        } else {
            // Legacy peer over IPv6: a lost data probe could only go again
            // at its size, which routers never fragment.
            return;
        };
        // Never larger than an IP datagram can carry.
        let max = if self.remote.is_ipv4() { MAX_UDP_PAYLOAD_V4 } else { MAX_UDP_PAYLOAD_V6 };
        let known = self.mtu.start(now, ceiling.min(max), form, c.mtu_probe_interval);
        if known && self.sent.is_empty() {
            // Nothing sent yet: a controller sized for the known packets.
            self.cc = self.config.congestion.build(now, self.packet_size() - HEADER_LEN);
        }
    }

    /// Room for a packet of `payload` bytes (and, when `paced`, the pacer's
    /// leave to send it now): the congestion window counts
    /// whole packets, the peer's receive window only payload (and, before
    /// the initiator confirmed the handshake, our pre-confirmation cap).
    /// When the peer's window is closed with nothing in flight, arms the
    /// persist timer so that a probe goes out even if the window update is
    /// lost.
    fn window_allows(&mut self, now: Instant, payload: usize, paced: bool) -> bool {
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
            if self.probe_allowed {
                self.probe_allowed = false;
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
    fn amplification_room(&self) -> Option<usize> {
        (self.state == State::SynRecv).then(|| {
            (self.unconfirmed_received * AMPLIFICATION_FACTOR).saturating_sub(self.unconfirmed_sent)
        })
    }

    /// Writes the next datagram into `buf`; returns its length.
    pub(crate) fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        self.dont_fragment = false;
        if self.reset_pending {
            self.reset_pending = false;
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
        if self.syn_ack_pending
            || (self.state == State::SynRecv && (self.ack_pending || self.keepalive_pending))
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
            self.syn_ack_pending = false;
            self.ack_pending = false;
            self.keepalive_pending = false;
            self.advertised_wnd = repr.wnd_size as usize;
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

    fn header(&self, now: Instant, kind: PacketType, seq: SeqNr) -> Repr<'static> {
        let mut repr = Repr::new(kind, self.send_id, seq, self.recv.ack_nr());
        repr.timestamp = self.micros(now);
        repr.timestamp_diff = self.reply_micro;
        repr.wnd_size = self.recv.window().min(MAX_ADVERTISED_WINDOW) as u32;
        repr
    }

    fn transmit_ack(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
        if self.ack_pending {
            let repr = self.header(now, PacketType::State, self.sent.next_seq());
            // Acknowledging the peer's FIN after ours went out: echo it.
            self.fin_ack_echo = self.fin_seq.is_some() && self.recv.is_eof();
            return self.emit_with_sack_payload(now, repr, buf, self.send_buf.unsent(), 0);
        }
        if self.fin_ack_echo {
            self.fin_ack_echo = false;
            if let Some(fin) = self.fin_seq {
                let repr = self.header(now, PacketType::State, fin);
                return self.finish_emit(now, &repr, buf, 0);
            }
        }
        if self.keepalive_pending {
            self.keepalive_pending = false;
            let mut repr = self.header(now, PacketType::State, self.sent.next_seq());
            // libutp's keepalive: a duplicate ACK of the packet before the last.
            repr.ack_nr = self.recv.ack_nr() - 1;
            return self.finish_emit(now, &repr, buf, 0);
        }
        None
    }

    /// Sends again the oldest packet declared lost (or the SYN).
    fn transmit_lost(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
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
    fn probe_plan(&mut self, now: Instant, buf_len: usize) -> Option<(usize, bool)> {
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
    fn transmit_new(&mut self, now: Instant, buf: &mut [u8]) -> Option<usize> {
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
                kind: PacketType::Data,
                offset: seg.offset,
                len: seg.len,
                meta: meta.clone(),
                time_sent: now,
                transmissions: 1,
                sacked: false,
                sacked_once: false,
                lost: false,
                window_limited: limited,
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
            let seq = self.sent.push(SentPacket {
                kind: PacketType::Fin,
                offset: self.send_buf.end(),
                len: 0,
                meta: None,
                time_sent: now,
                transmissions: 1,
                sacked: false,
                sacked_once: false,
                lost: false,
                window_limited: false,
            });
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
    fn emit_data(
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
    fn emit_with_sack_payload(
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
        self.ack_pending = false;
        self.advertised_wnd = repr.wnd_size as usize;
        self.account_sent(now, at + len, len)
    }

    fn finish_emit(
        &mut self,
        now: Instant,
        repr: &Repr<'_>,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Option<usize> {
        let n = repr.emit(buf).ok()?;
        self.account_sent(now, n, payload_len)
    }

    fn account_sent(&mut self, now: Instant, size: usize, payload_len: usize) -> Option<usize> {
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
