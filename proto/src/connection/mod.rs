//! One uTP connection as a pure state machine.
//!
//! This file holds the connection's state, its queries, the application's
//! reads and writes, the timer dispatch and the routing of incoming
//! packets. The rest lives beside it, each an `impl Connection` of its own:
//! `handshake` (constructors, SYN-SENT), `recovery` (ACKs, loss, the
//! retransmission timer), `transmit` (which packet goes next and how it is
//! written), `close` (FIN, reset, TIME-WAIT), `path_mtu`, `early` (early
//! data) and `unreachable` (ICMP). The buffers, RTT estimator, pacer,
//! timers and path MTU search are types of their own.

mod close;
mod early;
mod handshake;
mod in_order;
mod mtu;
mod pacer;
mod path_mtu;
mod pending;
mod recovery;
mod recv_buffer;
mod rtt;
mod send_buffer;
mod send_share;
mod sent_packets;
mod stats;
#[cfg(test)]
mod tests;
mod timer;
mod transmit;
mod unreachable;
mod window;

pub use stats::Stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::config::TransportConfig;
use crate::congestion::Controller;
use crate::wire::{ExtFlags, PacketType, Repr, SeqNr, Timestamp, HEADER_LEN};
use mtu::PathMtu;
pub(crate) use mtu::MAX_UDP_PAYLOAD_V4;
use pacer::Pacer;
use pending::Pending;
use recv_buffer::{Arrival, RecvBuffer};
use rtt::RttEstimator;
use send_buffer::SendBuffer;
pub(crate) use send_share::SendShare;
use sent_packets::SentPackets;
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
    /// This connection's part in the endpoint's send budget.
    send_share: SendShare,
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
    write_blocked: bool,

    recv: RecvBuffer,
    /// Output due besides data: ACK, keepalive, SYN-ACK, RESET, the FIN
    /// ACK's echo, a zero-window probe.
    pending: Pending,
    /// Window we last advertised.
    advertised_wnd: usize,
    /// We reopened a window that had (nearly) closed and the peer has sent
    /// nothing since: how often the update was sent again (see
    /// `window.rs`).
    reopened: Option<u32>,
    /// The largest DATA packet the peer sent (header and payload).
    peer_packet: usize,
    /// Our latest measurement of the peer's packets' delay, echoed in
    /// `timestamp_difference` of everything we send.
    reply_micro: u32,

    /// Sequence number of the SYN (ours as initiator, the peer's as acceptor).
    syn_seq: SeqNr,
    /// Acceptor: the sequence number of our SYN-ACK.
    syn_ack_seq: SeqNr,
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
    /// Bytes of SYN data taken off the SYN after it went unanswered (see
    /// `withdraw_syn_data`); 0 when none were.
    syn_data_withdrawn: usize,
    /// An early-data dial holds its SYN until the application's first
    /// bytes are written and flushed, or `Timer::SynHold` fires (see
    /// `early.rs`).
    syn_held: bool,
    /// SYN-ACKs sent so far (the backoff of sending it again).
    syn_acks_sent: u32,
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
            send_share: SendShare::default(),
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
            write_blocked: false,
            recv: RecvBuffer::new(SeqNr(0), config.receive_buffer_size),
            advertised_wnd: 0,
            reopened: None,
            peer_packet: 0,
            reply_micro: 0,
            syn_seq: SeqNr(0),
            syn_ack_seq: SeqNr(0),
            unconfirmed_received: 0,
            unconfirmed_sent: 0,
            released: false,
            offered: ExtFlags::NONE,
            negotiated: ExtFlags::NONE,
            fin_seq: None,
            syn_data_withdrawn: 0,
            syn_held: false,
            syn_acks_sent: 0,
            pending: Pending::default(),
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
    /// `send_buffer_size`, and at most an even share of the endpoint's
    /// `send_budget` among the connections with data to send).
    #[must_use]
    pub fn send_buffer_free(&self) -> usize {
        self.send_buf.free()
    }

    /// Lets the send buffer hold four congestion windows (see
    /// `SendBuffer::set_limit`), within its share of the endpoint's budget.
    fn update_send_limit(&mut self) {
        let limit = self.cc.window().saturating_mul(4).min(self.send_share.limit());
        self.send_buf.set_limit(limit);
    }

    /// Before a write: the connection counts as a sender from here until
    /// its buffer is empty again ([`Connection::sync_send_share`]).
    fn prepare_write(&mut self) {
        self.send_share.set_sending(true);
        self.update_send_limit();
    }

    /// Counts the connection among the endpoint's senders exactly while its
    /// send buffer holds something (and it is not closed).
    pub(super) fn sync_send_share(&mut self) {
        let sending = !self.send_buf.is_empty() && self.state != State::Closed;
        self.send_share.set_sending(sending);
    }

    /// Joins the endpoint's send budget.
    pub(crate) fn set_send_share(&mut self, share: SendShare) {
        self.send_share = share;
        self.sync_send_share();
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
        self.prepare_write();
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
        self.prepare_write();
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
        self.pending.contains(Pending::ACK)
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
                        self.pending.insert(Pending::KEEPALIVE);
                    }
                }
                Timer::Persist => {
                    self.pending.insert(Pending::WINDOW_PROBE);
                }
                Timer::WindowUpdate => self.on_window_update_timer(),
                // Only wakes the connection: the pacer allows the next packet.
                Timer::Pace => {}
                Timer::Close => match self.state {
                    State::TimeWait => self.close(None),
                    State::Closed => {}
                    _ => {
                        debug!(remote = %self.remote, "close timed out waiting for the peer");
                        if self.released && self.state == State::Established {
                            // Tell a peer that still sends that nobody reads.
                            self.pending.insert(Pending::RESET);
                        }
                        self.close(Some(ConnectionError::TimedOut));
                    }
                },
            }
        }
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
                self.pending.insert(Pending::SYN_ACK);
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
            self.pending.remove(Pending::SYN_ACK);
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
                self.peer_used_window();
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
                self.pending.insert(Pending::ACK);
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
}
