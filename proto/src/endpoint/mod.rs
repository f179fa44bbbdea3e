//! All the connections of one UDP socket.

mod stats;

pub use stats::{ConnectionCounts, EndpointStats, TrafficTotals};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use crate::config::{EndpointConfig, TransportConfig};
use crate::connection::{Connection, Event, PacketVerdict, SendShare};
use crate::wire::{Error as WireError, PacketType, Repr, SeqNr, Timestamp, HEADER_LEN};

/// Identifies a connection of an [`Endpoint`]. Valid until the connection is
/// released with [`Endpoint::release`] and drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub usize);

/// A datagram the endpoint wants sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Bytes written at the start of the caller's buffer.
    pub size: usize,
    /// When set, the buffer holds several datagrams of this size (the last
    /// may be shorter) for segmentation offload: only
    /// [`Endpoint::poll_transmit_run`] produces such runs.
    pub segment_size: Option<usize>,
    /// A path MTU probe: send it with don't-fragment set, and report
    /// EMSGSIZE through [`Endpoint::handle_packet_too_big`]. Every other
    /// datagram may be fragmented (as libutp and libtorrent send them).
    pub dont_fragment: bool,
}

/// What became of an incoming datagram.
#[derive(Debug)]
pub enum DatagramEvent {
    /// It belonged to a connection (which may now have output or events).
    Connection(ConnectionHandle),
    /// A new connection wants to be accepted: call [`Endpoint::accept`],
    /// [`Endpoint::refuse`] or [`Endpoint::ignore`].
    Incoming(Incoming),
    /// A uTP packet that was dropped (unknown connection, malformed
    /// extensions, over a limit) or answered with a RESET.
    Dropped,
    /// Not uTP at all: hand it to whatever else shares the socket (a DHT).
    NotUtp,
}

/// A SYN waiting for the application's decision.
#[derive(Debug)]
pub struct Incoming {
    remote: SocketAddr,
    syn_id: u16,
    syn: Vec<u8>,
    received: Instant,
}

impl Incoming {
    /// Who is connecting.
    #[must_use]
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// When the SYN arrived.
    #[must_use]
    pub fn received(&self) -> Instant {
        self.received
    }
}

/// Why a dial could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint holds `max_connections` already.
    #[error("too many connections")]
    TooManyConnections,
    /// Port 0, or an unspecified or multicast address.
    #[error("invalid remote address {0}")]
    InvalidRemote(SocketAddr),
    /// No free connection id for this remote (65536 connections to it).
    #[error("no free connection id for this peer")]
    NoConnectionId,
    /// The initial data is larger than the connection's send buffer.
    #[error("{len} bytes of initial data do not fit the {capacity}-byte send buffer")]
    InitialDataTooLarge {
        /// Bytes offered.
        len: usize,
        /// The send buffer's size.
        capacity: usize,
    },
}

/// Why an incoming connection could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The endpoint holds `max_connections` already.
    #[error("too many connections")]
    TooManyConnections,
    /// Its connection id is now taken by another connection to that peer.
    #[error("connection id already in use")]
    IdInUse,
    /// The SYN waited longer than the connect timeout.
    #[error("the incoming connection expired before it was accepted")]
    Expired,
}

#[derive(Debug)]
struct Slot {
    conn: Connection,
    /// Tells this slot's connection from an earlier one in the same place.
    serial: u64,
    released: bool,
    queued_send: bool,
    queued_event: bool,
    timeout: Option<Instant>,
    /// Counted in [`Endpoint::half_open`] (an accepted connection whose
    /// initiator has not confirmed the handshake yet).
    half_open: bool,
    /// Routed to by its (remote, recv id) key. A closed connection keeps
    /// it (stray packets for it are dropped quietly, not answered with a
    /// RESET) until it is freed or a new SYN from the peer wants the id
    /// (libutp's ids repeat).
    keyed: bool,
}

/// Most RESETs queued for sending.
const MAX_QUEUED_RESETS: usize = 64;

/// Most destinations whose path MTU is remembered.
const MAX_PATH_MTUS: usize = 4096;

/// The timer heap is rebuilt without its stale entries once it holds more
/// than this many per connection (plus a constant).
const TIMER_HEAP_SLACK: usize = 4;

/// The uTP endpoint: every connection over one UDP socket.
///
/// # Contract
/// - Feed every received datagram to [`Endpoint::handle_datagram`]; it
///   returns what it was ([`DatagramEvent`]). Hand back `NotUtp` datagrams
///   to other protocols sharing the socket.
/// - After handling input (ideally a whole batch of datagrams), call
///   [`Endpoint::poll_transmit`] until it returns `None` and send each
///   datagram; then [`Endpoint::poll_event`] until `None`; then arm a timer
///   for [`Endpoint::poll_timeout`] and call [`Endpoint::handle_timeout`]
///   when it fires.
/// - Application commands go through [`Endpoint::connection_mut`]; poll
///   transmits afterwards.
/// - `now` must never go backwards.
///
/// ```
/// use std::time::Instant;
/// use utp_proto::{Endpoint, EndpointConfig};
///
/// let now = Instant::now();
/// let mut client = Endpoint::new(EndpointConfig::default(), now);
/// let server_addr = "127.0.0.1:4000".parse().unwrap();
/// let handle = client.connect(now, server_addr, b"").unwrap();
/// let mut buf = [0u8; 1500];
/// let syn = client.poll_transmit(now, &mut buf).unwrap();
/// assert_eq!(syn.destination, server_addr);
/// assert_eq!(buf[0] >> 4, 4); // a SYN
/// assert!(!client.connection(handle).unwrap().is_connected());
/// ```
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    epoch: Instant,
    rng: StdRng,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    live: usize,
    by_key: HashMap<(SocketAddr, u16), usize>,
    /// The last key found in `by_key` and its slot: a bulk transfer's
    /// datagrams skip the hashing (cleared whenever `by_key` changes).
    last_key: Option<((SocketAddr, u16), usize)>,
    /// SYNs handed out as `Incoming` and not yet decided: (remote, syn id).
    pending: HashMap<(SocketAddr, u16), Instant>,
    send_queue: VecDeque<usize>,
    event_queue: VecDeque<usize>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    resets: VecDeque<(SocketAddr, u16, SeqNr, SeqNr)>,
    reset_tokens: f64,
    reset_refill: Instant,
    stats: EndpointStats,
    /// A datagram formed while extending a segmented run that could not
    /// join it: the next transmit (its destination, don't-fragment). See
    /// [`Endpoint::poll_transmit_run`].
    stashed: Option<(SocketAddr, bool)>,
    /// The kept datagram's bytes (the buffer is reused).
    stash: Vec<u8>,
    /// The traffic of the connections already freed.
    closed_traffic: TrafficTotals,
    /// Path MTUs found, per destination (address and port), and until when
    /// they hold.
    path_mtus: HashMap<SocketAddr, (usize, Instant)>,
    /// Accepted connections still half-open, oldest first, by (slot,
    /// serial); entries that completed or closed are skipped when met.
    half_open_queue: VecDeque<(usize, u64)>,
    /// Connections in `half_open_queue` that are still half-open.
    half_open: usize,
    next_serial: u64,
    /// The send budget every connection takes its share of.
    send_budget: SendShare,
}

impl Endpoint {
    /// A new endpoint. `now` fixes the origin of the microsecond
    /// timestamps this endpoint sends.
    #[must_use]
    pub fn new(config: EndpointConfig, now: Instant) -> Self {
        let rng = match config.rng_seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let reset_tokens = f64::from(config.reset_rate);
        let send_budget = SendShare::budget(config.send_budget);
        Endpoint {
            config,
            epoch: now,
            rng,
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            by_key: HashMap::new(),
            last_key: None,
            pending: HashMap::new(),
            send_queue: VecDeque::new(),
            event_queue: VecDeque::new(),
            timers: BinaryHeap::new(),
            resets: VecDeque::new(),
            reset_tokens,
            reset_refill: now,
            stats: EndpointStats::default(),
            stashed: None,
            stash: Vec::new(),
            closed_traffic: TrafficTotals::default(),
            path_mtus: HashMap::new(),
            half_open_queue: VecDeque::new(),
            half_open: 0,
            next_serial: 0,
            send_budget,
        }
    }

    /// The endpoint's configuration.
    #[must_use]
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Number of connections held (of all states, released ones that are
    /// still closing included).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// uTP datagrams dropped so far, for any reason (see
    /// [`Endpoint::stats`] for the reasons).
    #[must_use]
    pub fn dropped_datagrams(&self) -> u64 {
        let s = &self.stats;
        s.dropped_malformed
            + s.dropped_unknown_connection
            + s.dropped_bad_ack
            + s.dropped_stale_syn
            + s.syns_refused
    }

    /// Endpoint-wide counters: drops by reason, SYN-flood defence, RESETs.
    #[must_use]
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    /// The connections with `remote` (several when it dialed more than
    /// once, or both ways).
    pub fn connections_to(&self, remote: SocketAddr) -> impl Iterator<Item = &Connection> + '_ {
        self.slots.iter().flatten().map(|slot| &slot.conn).filter(move |c| c.remote() == remote)
    }

    /// The traffic of every connection so far, closed ones included.
    #[must_use]
    pub fn traffic(&self) -> TrafficTotals {
        let mut t = self.closed_traffic.clone();
        for slot in self.slots.iter().flatten() {
            t.add(&slot.conn.stats());
        }
        t
    }

    /// The connections held now, by state.
    #[must_use]
    pub fn connection_counts(&self) -> ConnectionCounts {
        let mut c = ConnectionCounts::default();
        for slot in self.slots.iter().flatten() {
            let conn = &slot.conn;
            if conn.is_closed() {
                c.draining += 1;
            } else if conn.is_half_open() || !conn.is_connected() {
                c.handshaking += 1;
            } else {
                c.open += 1;
            }
        }
        c
    }

    /// Accepted connections whose initiator has not yet confirmed the
    /// handshake (bounded by `max_half_open`, together with SYNs handed out
    /// as [`Incoming`] and not yet decided).
    #[must_use]
    pub fn half_open_count(&self) -> usize {
        self.half_open
    }

    /// Starts a connection to `remote`. `syn_data` are the first bytes of
    /// the stream; with the SYN-data extension enabled they ride on the SYN.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        syn_data: &[u8],
    ) -> Result<ConnectionHandle, ConnectError> {
        self.connect_with(now, remote, syn_data, self.config.transport.clone())
    }

    /// Like [`Endpoint::connect`] with settings for this connection only.
    pub fn connect_with(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        syn_data: &[u8],
        config: Arc<TransportConfig>,
    ) -> Result<ConnectionHandle, ConnectError> {
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return Err(ConnectError::InvalidRemote(remote));
        }
        if self.live >= self.config.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        if syn_data.len() > config.send_buffer_size {
            return Err(ConnectError::InitialDataTooLarge {
                len: syn_data.len(),
                capacity: config.send_buffer_size,
            });
        }
        let mut recv_id = None;
        for _ in 0..64 {
            let id: u16 = self.rng.gen();
            if !self.by_key.contains_key(&(remote, id)) {
                recv_id = Some(id);
                break;
            }
        }
        let recv_id = recv_id.ok_or(ConnectError::NoConnectionId)?;
        let seq = SeqNr(self.rng.gen());
        let conn =
            Connection::new_outgoing(config, self.epoch, now, remote, recv_id, seq, syn_data);
        Ok(self.insert(conn))
    }

    /// Dials `remote` for early data: the SYN is held until the
    /// application's first bytes are written and the connection is told to
    /// let it go ([`Connection::release_syn`]: on a flush or a shutdown),
    /// until `max_syn_data` bytes are buffered, or for `hold` at most. With the SYN-data extension offered those bytes ride on the
    /// SYN; otherwise the SYN leaves bare and they follow as DATA.
    pub fn connect_early(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        config: Arc<TransportConfig>,
        hold: Duration,
    ) -> Result<ConnectionHandle, ConnectError> {
        let handle = self.connect_with(now, remote, &[], config)?;
        if let Some(conn) = self.connection_mut(handle) {
            conn.hold_syn(now + hold);
        }
        Ok(handle)
    }

    /// Accepts an incoming connection; its SYN-ACK goes out at the next
    /// `poll_transmit`.
    pub fn accept(
        &mut self,
        now: Instant,
        incoming: Incoming,
    ) -> Result<ConnectionHandle, AcceptError> {
        self.pending.remove(&(incoming.remote, incoming.syn_id));
        if now.saturating_duration_since(incoming.received) > self.config.transport.connect_timeout
        {
            return Err(AcceptError::Expired);
        }
        if self.live >= self.config.max_connections {
            self.queue_reset_for(&incoming);
            return Err(AcceptError::TooManyConnections);
        }
        while self.half_open + self.pending.len() >= self.config.max_half_open {
            if !self.evict_oldest_half_open() {
                break;
            }
        }
        if self.by_key.contains_key(&(incoming.remote, incoming.syn_id.wrapping_add(1))) {
            return Err(AcceptError::IdInUse);
        }
        let Ok(syn) = Repr::parse_bytes(&incoming.syn) else {
            // Parsed once already when it arrived.
            return Err(AcceptError::Expired);
        };
        let syn_ack_seq = SeqNr(self.rng.gen());
        let conn = Connection::new_incoming(
            self.config.transport.clone(),
            self.epoch,
            now,
            incoming.remote,
            &syn,
            incoming.syn.len(),
            syn_ack_seq,
        );
        let handle = self.insert(conn);
        if let Some(Some(slot)) = self.slots.get_mut(handle.0) {
            slot.half_open = true;
            self.half_open += 1;
            self.half_open_queue.push_back((handle.0, slot.serial));
        }
        Ok(handle)
    }

    /// Closes the oldest half-open connection (silently: its initiator,
    /// if real, sends its SYN again and gets a new one). Returns whether
    /// there was one.
    fn evict_oldest_half_open(&mut self) -> bool {
        while let Some((index, serial)) = self.half_open_queue.pop_front() {
            let Some(Some(slot)) = self.slots.get_mut(index) else { continue };
            if slot.serial != serial || !slot.half_open {
                continue;
            }
            slot.conn.evict();
            slot.half_open = false;
            self.half_open -= 1;
            self.stats.half_open_evicted += 1;
            trace!(remote = %slot.conn.remote(), "half-open connection evicted");
            self.touch(index);
            return true;
        }
        false
    }

    /// Stops routing packets to a connection (closed, or replaced).
    fn unkey(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get_mut(index) else { return };
        if slot.keyed {
            slot.keyed = false;
            let key = (slot.conn.remote(), slot.conn.recv_id());
            if self.by_key.get(&key) == Some(&index) {
                self.by_key.remove(&key);
                self.last_key = None;
            }
        }
    }

    /// Keeps the half-open count true once a connection left the handshake
    /// (confirmed, expired, reset).
    fn sync_slot(&mut self, index: usize) {
        let Some(Some(slot)) = self.slots.get_mut(index) else { return };
        if slot.half_open && !slot.conn.is_half_open() {
            slot.half_open = false;
            self.half_open -= 1;
            if slot.conn.error() == Some(crate::ConnectionError::TimedOut) {
                self.stats.half_open_expired += 1;
            }
        }
        // Forget completed entries at the front; and all of them when they
        // outnumber the half-open connections (one that stays half-open at
        // the front would otherwise keep every entry behind it).
        while let Some(&(i, serial)) = self.half_open_queue.front() {
            match self.slots.get(i) {
                Some(Some(s)) if s.serial == serial && s.half_open => break,
                _ => {
                    self.half_open_queue.pop_front();
                }
            }
        }
        if self.half_open_queue.len() > 2 * self.half_open + 64 {
            let slots = &self.slots;
            self.half_open_queue.retain(|&(i, serial)| {
                slots
                    .get(i)
                    .and_then(Option::as_ref)
                    .is_some_and(|s| s.serial == serial && s.half_open)
            });
        }
    }

    /// Refuses an incoming connection with a RESET.
    pub fn refuse(&mut self, incoming: Incoming) {
        self.pending.remove(&(incoming.remote, incoming.syn_id));
        self.stats.syns_refused_by_app += 1;
        self.queue_reset_for(&incoming);
    }

    /// Drops an incoming connection silently (the peer's dial times out).
    pub fn ignore(&mut self, incoming: Incoming) {
        self.pending.remove(&(incoming.remote, incoming.syn_id));
        self.stats.syns_ignored_by_app += 1;
    }

    fn queue_reset_for(&mut self, incoming: &Incoming) {
        if let Ok(syn) = Repr::parse_bytes(&incoming.syn) {
            self.queue_reset(incoming.received, incoming.remote, syn.connection_id, syn.seq_nr);
        }
    }

    fn insert(&mut self, conn: Connection) -> ConnectionHandle {
        let mut conn = conn;
        conn.set_send_share(self.send_budget.member());
        if let Some(&(size, until)) = self.path_mtus.get(&conn.remote()) {
            conn.set_known_path_mtu(size, until);
        }
        let key = (conn.remote(), conn.recv_id());
        self.next_serial += 1;
        let slot = Slot {
            conn,
            serial: self.next_serial,
            released: false,
            queued_send: false,
            queued_event: false,
            timeout: None,
            half_open: false,
            keyed: true,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.by_key.insert(key, index);
        self.last_key = None;
        self.live += 1;
        self.touch(index);
        ConnectionHandle(index)
    }

    /// A connection, to query.
    #[must_use]
    pub fn connection(&self, handle: ConnectionHandle) -> Option<&Connection> {
        self.slots.get(handle.0)?.as_ref().map(|s| &s.conn)
    }

    /// A connection, to command (write, read, shutdown, reset). Poll
    /// transmits and events afterwards.
    pub fn connection_mut(&mut self, handle: ConnectionHandle) -> Option<&mut Connection> {
        if self.slots.get(handle.0)?.is_none() {
            return None;
        }
        self.touch(handle.0);
        self.slots[handle.0].as_mut().map(|s| &mut s.conn)
    }

    /// The application is done with a connection. An open one is shut down
    /// gracefully (FIN after the data already written); what arrives from
    /// now on is acknowledged and dropped, and a peer that does not finish
    /// within `close_timeout` of our FIN's acknowledgement is reset. It is
    /// forgotten once closed.
    pub fn release(&mut self, now: Instant, handle: ConnectionHandle) {
        let Some(Some(slot)) = self.slots.get_mut(handle.0) else { return };
        slot.released = true;
        if !slot.conn.is_closed() {
            slot.conn.release(now);
        }
        self.touch(handle.0);
    }

    /// Queues a connection for transmit and event polling.
    fn touch(&mut self, index: usize) {
        self.sync_slot(index);
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            if !slot.queued_send {
                slot.queued_send = true;
                self.send_queue.push_back(index);
            }
            if !slot.queued_event {
                slot.queued_event = true;
                self.event_queue.push_back(index);
            }
        }
    }

    /// Re-reads a connection's timeout; frees it when drained and released.
    fn reschedule(&mut self, index: usize) {
        self.sync_slot(index);
        let Some(Some(slot)) = self.slots.get_mut(index) else { return };
        if slot.released && slot.conn.is_drained() && !slot.queued_send && !slot.queued_event {
            trace!(remote = %slot.conn.remote(), id = slot.conn.recv_id(), "connection freed");
            self.closed_traffic.add(&slot.conn.stats());
            self.unkey(index);
            self.slots[index] = None;
            self.free.push(index);
            self.live -= 1;
            return;
        }
        let t = slot.conn.poll_timeout();
        if t != slot.timeout {
            slot.timeout = t;
            if let Some(t) = t {
                self.timers.push(Reverse((t, index)));
                self.prune_timers();
            }
        }
    }

    /// Bounds the timer heap: every change of a connection's timeout pushes
    /// an entry and the old one stays until it surfaces, so a connection
    /// whose timeout keeps moving later would grow the heap without end.
    fn prune_timers(&mut self) {
        if self.timers.len() <= TIMER_HEAP_SLACK * self.live + 64 {
            return;
        }
        let slots = &self.slots;
        self.timers.retain(|&Reverse((t, i))| {
            slots.get(i).and_then(Option::as_ref).is_some_and(|s| s.timeout == Some(t))
        });
    }

    /// Entries in the timer heap (live and stale): bounded by
    /// `4 * connections + 64`.
    #[must_use]
    pub fn timer_heap_len(&self) -> usize {
        self.timers.len()
    }

    /// Handles one datagram received from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: &[u8],
    ) -> DatagramEvent {
        let repr = match Repr::parse_bytes(data) {
            Ok(r) => r,
            Err(WireError::Truncated { .. } | WireError::BadVersion(_) | WireError::BadType(_)) => {
                return DatagramEvent::NotUtp
            }
            Err(e) => {
                trace!(%remote, error = %e, "malformed uTP packet");
                self.stats.datagrams_received += 1;
                self.stats.dropped_malformed += 1;
                return DatagramEvent::Dropped;
            }
        };
        self.stats.datagrams_received += 1;
        let id = repr.connection_id;
        if repr.packet_type == PacketType::Syn {
            return self.handle_syn(now, remote, &repr, data);
        }
        let key = (remote, id);
        let cached = self.last_key.filter(|&(k, _)| k == key).map(|(_, i)| i);
        let index = match cached.or_else(|| self.by_key.get(&key).copied()) {
            Some(i) => {
                self.last_key = Some((key, i));
                Some(i)
            }
            None if repr.packet_type == PacketType::Reset => self.find_by_send_id(remote, id),
            None => None,
        };
        match index {
            Some(i) => {
                let Some(Some(slot)) = self.slots.get_mut(i) else { return DatagramEvent::Dropped };
                let span = slot.conn.span().clone();
                let _in_conn = span.enter();
                let verdict = slot.conn.handle_packet(now, &repr, data.len());
                if !self.count(verdict) {
                    // Changed nothing: no need to poll the connection.
                    return DatagramEvent::Dropped;
                }
                self.touch(i);
                DatagramEvent::Connection(ConnectionHandle(i))
            }
            None => {
                self.stats.dropped_unknown_connection += 1;
                if repr.packet_type != PacketType::Reset {
                    trace!(%remote, id, "packet for unknown connection");
                    self.queue_reset(now, remote, id, repr.seq_nr);
                }
                DatagramEvent::Dropped
            }
        }
    }

    /// Counts a connection's verdict on a packet; returns whether the
    /// packet was taken.
    fn count(&mut self, verdict: PacketVerdict) -> bool {
        match verdict {
            PacketVerdict::Accepted => return true,
            PacketVerdict::BadAck => self.stats.dropped_bad_ack += 1,
            PacketVerdict::StaleSyn => self.stats.dropped_stale_syn += 1,
            PacketVerdict::Closed => self.stats.dropped_unknown_connection += 1,
        }
        false
    }

    /// libutp accepts a RESET carrying either of a connection's ids.
    fn find_by_send_id(&self, remote: SocketAddr, id: u16) -> Option<usize> {
        [id.wrapping_add(1), id.wrapping_sub(1)].into_iter().find_map(|recv| {
            let &i = self.by_key.get(&(remote, recv))?;
            let slot = self.slots.get(i)?.as_ref()?;
            (slot.conn.send_id() == id).then_some(i)
        })
    }

    fn handle_syn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        syn: &Repr<'_>,
        data: &[u8],
    ) -> DatagramEvent {
        let id = syn.connection_id;
        if let Some(&i) = self.by_key.get(&(remote, id.wrapping_add(1))) {
            let Some(Some(slot)) = self.slots.get_mut(i) else { return DatagramEvent::Dropped };
            if slot.conn.is_closed() {
                // A connection that ended but is still held: the peer may
                // have its id again.
                self.unkey(i);
                return self.handle_new_syn(now, remote, syn, data);
            }
            if slot.conn.send_id() != id || slot.conn.side() != crate::Side::Acceptor {
                // The id collides with a dial of ours to that peer.
                self.stats.syns_refused += 1;
                self.queue_reset(now, remote, id, syn.seq_nr);
                return DatagramEvent::Dropped;
            }
            // A retransmitted SYN: the connection answers it again.
            let span = slot.conn.span().clone();
            let _in_conn = span.enter();
            let verdict = slot.conn.handle_packet(now, syn, data.len());
            if verdict == PacketVerdict::Accepted {
                self.touch(i);
                return DatagramEvent::Connection(ConnectionHandle(i));
            }
            // A SYN that does not match the handshake: a restarted peer
            // redialling with the same id (libutp's ids repeat), or a
            // forgery. It replaces the connection only if the peer has
            // been silent for a while; otherwise it changes nothing.
            if verdict != PacketVerdict::StaleSyn || !slot.conn.is_replaceable(now, syn.seq_nr) {
                self.count(verdict);
                return DatagramEvent::Dropped;
            }
            slot.conn.replace();
            self.stats.connections_replaced += 1;
            self.unkey(i);
            self.touch(i);
        }
        self.handle_new_syn(now, remote, syn, data)
    }

    /// A SYN for no connection of ours: hands it out as `Incoming`, within
    /// the bounds.
    fn handle_new_syn(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        syn: &Repr<'_>,
        data: &[u8],
    ) -> DatagramEvent {
        let id = syn.connection_id;
        let timeout = self.config.transport.connect_timeout;
        if let Some(&at) = self.pending.get(&(remote, id)) {
            if now.saturating_duration_since(at) <= timeout {
                // Retransmitted while the application decides.
                return DatagramEvent::Dropped;
            }
        }
        if self.pending.len() + self.half_open >= self.config.max_half_open
            || self.live + self.pending.len() >= self.config.max_connections
        {
            self.pending.retain(|_, at| now.saturating_duration_since(*at) <= timeout);
        }
        // Half-open connections are bounded on their own, below
        // `max_connections`: when full, the oldest one goes (never an
        // established connection or a dial), so spoofed SYNs can neither
        // fill the endpoint nor keep an honest handshake out for longer
        // than it takes `max_half_open` newer SYNs to arrive. SYNs handed
        // out and undecided count too; they cannot be evicted.
        if self.pending.len() + self.half_open >= self.config.max_half_open
            && !self.evict_oldest_half_open()
            || self.live + self.pending.len() >= self.config.max_connections
        {
            debug!(%remote, "refusing SYN: connection limit reached");
            self.stats.syns_refused += 1;
            self.queue_reset(now, remote, id, syn.seq_nr);
            return DatagramEvent::Dropped;
        }
        self.pending.insert((remote, id), now);
        DatagramEvent::Incoming(Incoming { remote, syn_id: id, syn: data.to_vec(), received: now })
    }

    fn queue_reset(&mut self, now: Instant, remote: SocketAddr, id: u16, their_seq: SeqNr) {
        let elapsed = now.saturating_duration_since(self.reset_refill).as_secs_f64();
        self.reset_refill = now;
        let rate = f64::from(self.config.reset_rate);
        self.reset_tokens = (self.reset_tokens + elapsed * rate).min(rate.max(1.0));
        if self.reset_tokens < 1.0 || self.resets.len() >= MAX_QUEUED_RESETS {
            self.stats.resets_rate_limited += 1;
            return;
        }
        self.reset_tokens -= 1.0;
        self.stats.resets_sent += 1;
        let seq = SeqNr(self.rng.gen());
        self.resets.push_back((remote, id, seq, their_seq));
    }

    /// The next datagram to send, written into `buf` (which should hold at
    /// least the configured packet size, 1500 bytes is always enough).
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.poll_one(now, buf)
    }

    /// Like [`Endpoint::poll_transmit`], but `buf` may receive a run of up
    /// to `max_segments` datagrams to one destination, all of
    /// `segment_size` bytes but the last (which may be shorter), for one
    /// segmented send (UDP GSO: [`Transmit::segment_size`] is set when the
    /// run holds more than one), of `max_run_bytes` at most. `buf` must
    /// hold `max_run_bytes` plus what `poll_transmit` would be given: every
    /// datagram is formed with at least that much room.
    ///
    /// The datagrams are those `poll_transmit` would return, in the same
    /// order (the usual round robin over connections, so many connections
    /// to one peer stay interleaved); the first that cannot join the run
    /// (another destination, a larger size, a path MTU probe, which goes
    /// alone with `dont_fragment`) is kept for the next call. The runtime
    /// only moves the bytes.
    pub fn poll_transmit_run(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
        max_run_bytes: usize,
    ) -> Option<Transmit> {
        let mut t = self.poll_one(now, buf)?;
        if t.dont_fragment || max_segments <= 1 {
            return Some(t);
        }
        let size = t.size;
        let mut used = size;
        let mut count = 1;
        while count < max_segments && used + size <= max_run_bytes.min(buf.len()) {
            // The next datagram's destination, when it is known before it is
            // formed: a datagram for another peer would only be formed here
            // to be kept (a copy out and back in) for the next call.
            let next_remote = match self.resets.front() {
                Some(&(remote, ..)) => Some(remote),
                None => self
                    .send_queue
                    .front()
                    .and_then(|&i| Some(self.slots.get(i)?.as_ref()?.conn.remote())),
            };
            if next_remote.is_some_and(|r| r != t.destination) {
                break;
            }
            let Some(next) = self.poll_one(now, &mut buf[used..]) else { break };
            if next.destination != t.destination || next.dont_fragment || next.size > size {
                self.stash.clear();
                self.stash.extend_from_slice(&buf[used..used + next.size]);
                self.stashed = Some((next.destination, next.dont_fragment));
                break;
            }
            used += next.size;
            count += 1;
            if next.size < size {
                break;
            }
        }
        if count > 1 {
            t.size = used;
            t.segment_size = Some(size);
        }
        Some(t)
    }

    /// One datagram: the one kept back from a run first, then the
    /// endpoint's RESETs, then the connections' in round robin.
    fn poll_one(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((destination, dont_fragment)) = self.stashed.take() {
            let size = self.stash.len();
            if let Some(room) = buf.get_mut(..size) {
                room.copy_from_slice(&self.stash);
                return Some(Transmit { destination, size, segment_size: None, dont_fragment });
            }
            // (A buffer too small for it: it is lost, as a datagram the
            // network drops; retransmission covers it.)
        }
        if let Some((remote, id, seq, ack)) = self.resets.pop_front() {
            let mut repr = Repr::new(PacketType::Reset, id, seq, ack);
            repr.timestamp =
                Timestamp(now.saturating_duration_since(self.epoch).as_micros() as u32);
            if let Ok(size) = repr.emit(buf) {
                return Some(Transmit {
                    destination: remote,
                    size,
                    segment_size: None,
                    dont_fragment: false,
                });
            }
        }
        while let Some(&index) = self.send_queue.front() {
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                self.send_queue.pop_front();
                continue;
            };
            if buf.len() < HEADER_LEN {
                return None;
            }
            let span = slot.conn.span().clone();
            let _in_conn = span.enter();
            let sent = slot.conn.poll_transmit(now, buf);
            let destination = slot.conn.remote();
            let dont_fragment = slot.conn.dont_fragment();
            let found = slot.conn.take_path_mtu();
            if sent.is_none() {
                slot.queued_send = false;
            }
            if let Some(size) = found {
                let until = now + self.config.transport.mtu_probe_interval;
                self.remember_path_mtu(now, destination, size, until);
            }
            let Some(size) = sent else {
                self.send_queue.pop_front();
                self.reschedule(index);
                continue;
            };
            // Round robin: the next packet comes from the next connection.
            self.send_queue.rotate_left(1);
            self.mark_events(index);
            return Some(Transmit { destination, size, segment_size: None, dont_fragment });
        }
        None
    }

    fn remember_path_mtu(&mut self, now: Instant, to: SocketAddr, size: usize, until: Instant) {
        if self.path_mtus.len() >= MAX_PATH_MTUS && !self.path_mtus.contains_key(&to) {
            self.path_mtus.retain(|_, &mut (_, t)| t > now);
            if self.path_mtus.len() >= MAX_PATH_MTUS {
                return;
            }
        }
        trace!(%to, size, "path MTU found");
        // The latest result wins, lower or higher: a connection that lost
        // packets at the remembered size brings it down.
        self.path_mtus.insert(to, (size, until));
    }

    /// The path MTU this endpoint remembers for `destination` (UDP payload
    /// bytes), if a connection to it found one that still holds at `now`.
    /// It is kept per address and port (another port of the same host may
    /// be another peer behind a NAT), and lowered by a connection that met
    /// repeated timeouts at that size.
    #[must_use]
    pub fn path_mtu(&self, now: Instant, destination: SocketAddr) -> Option<usize> {
        self.path_mtus.get(&destination).filter(|&&(_, until)| until > now).map(|&(size, _)| size)
    }

    /// The sending stack refused a datagram of `size` bytes to
    /// `destination` that was sent with don't-fragment (`EMSGSIZE`: larger
    /// than the interface's MTU, or than a path MTU the stack learned from
    /// ICMP). The probe that it was counts as failed and its packet goes
    /// again.
    pub fn handle_packet_too_big(&mut self, now: Instant, destination: SocketAddr, size: usize) {
        let mut touched = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(slot) = slot {
                if slot.conn.remote() == destination {
                    slot.conn.on_packet_too_big(now, size);
                    touched.push(index);
                }
            }
        }
        for index in touched {
            self.touch(index);
        }
    }

    /// An ICMP port unreachable (Linux: from the socket's error queue)
    /// for a datagram sent to `destination`; `quoted` is the start of that
    /// datagram's payload as the error quotes it, which must repeat the
    /// packet's header (type, connection id, sequence number: 18 bytes).
    /// Two things happen, nothing else:
    /// - a dial to exactly `destination` still in SYN-SENT, whose SYN is
    ///   quoted, ends with
    ///   [`ConnectionError::Refused`](crate::ConnectionError::Refused) at
    ///   once rather than after the connect timeout;
    /// - a connection that only waits for the acknowledgement of its FIN
    ///   (every byte acknowledged, the peer's FIN received), whose FIN is
    ///   quoted, closes cleanly: the peer finished and its socket is gone.
    ///
    /// Open streams ignore ICMP errors, so a forged one can at most end a
    /// dial or complete a close whose data all arrived, and it needs the
    /// destination, the socket's port, the connection id and the sequence
    /// number. Returns whether the error was taken.
    pub fn handle_port_unreachable(
        &mut self,
        now: Instant,
        destination: SocketAddr,
        quoted: &[u8],
    ) -> bool {
        let _ = now;
        // The quote names the packet's connection id: our receive id in a
        // SYN, our send id (one more or one less) in anything else.
        let taken = quoted.get(2..4).and_then(|id| {
            let id = u16::from_be_bytes([id[0], id[1]]);
            [id, id.wrapping_sub(1), id.wrapping_add(1)].into_iter().find_map(|recv_id| {
                let index = *self.by_key.get(&(destination, recv_id))?;
                let slot = self.slots[index].as_mut()?;
                slot.conn.on_port_unreachable(quoted).then_some((index, slot.conn.error()))
            })
        });
        match taken {
            Some((index, error)) => {
                if error.is_some() {
                    self.stats.dials_refused_by_icmp += 1;
                } else {
                    self.stats.closes_completed_by_icmp += 1;
                }
                self.touch(index);
                true
            }
            None => {
                self.stats.icmp_ignored += 1;
                false
            }
        }
    }

    fn mark_events(&mut self, index: usize) {
        if let Some(Some(slot)) = self.slots.get_mut(index) {
            if !slot.queued_event {
                slot.queued_event = true;
                self.event_queue.push_back(index);
            }
        }
    }

    /// The next application event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        while let Some(&index) = self.event_queue.front() {
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                self.event_queue.pop_front();
                continue;
            };
            if let Some(event) = slot.conn.poll_event() {
                return Some((ConnectionHandle(index), event));
            }
            slot.queued_event = false;
            self.event_queue.pop_front();
            self.reschedule(index);
        }
        None
    }

    /// When [`Endpoint::handle_timeout`] should be called next.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, index))) = self.timers.peek() {
            match self.slots.get(index) {
                Some(Some(slot)) if slot.timeout == Some(t) => return Some(t),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Runs every connection timer that expired at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((t, index))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(Some(slot)) = self.slots.get_mut(index) else { continue };
            if slot.timeout != Some(t) {
                continue;
            }
            slot.timeout = None;
            let span = slot.conn.span().clone();
            let _in_conn = span.enter();
            slot.conn.handle_timeout(now);
            self.touch(index);
        }
    }
}
