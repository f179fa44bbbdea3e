//! Configuration of the engine. Every setting has a default that works for
//! bulk transfers with real peers; the runtime exposes all of them.

use std::sync::Arc;
use std::time::Duration;

use crate::congestion::{ControllerFactory, LedbatConfig};

/// Settings of one connection. Shared by all connections of an endpoint
/// unless a dial overrides them.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// UDP payload of a packet to an IPv4 peer before path MTU discovery
    /// finds more (libutp's default, which fits a 1500-byte link behind
    /// PPPoE and a VPN).
    pub initial_packet_size_v4: usize,
    /// UDP payload of a packet to an IPv6 peer before path MTU discovery
    /// finds more (fits IPv6's 1280-byte minimum MTU).
    pub initial_packet_size_v6: usize,
    /// Probe the path for larger packets (see the `connection::mtu` module
    /// docs). Off: every packet has the initial size.
    pub mtu_probing: bool,
    /// Packets of this size are assumed to pass any path: the search never
    /// goes below it.
    pub min_packet_size: usize,
    /// Largest UDP payload probing may reach with a peer that negotiated
    /// `ExtFlags::LARGE_PACKETS`. Other peers are probed up to 1472 bytes
    /// over IPv4 (libtorrent cuts longer datagrams) and not at all over
    /// IPv6.
    pub max_packet_size: usize,
    /// How long a discovered path MTU is trusted (per connection and in the
    /// endpoint's per-destination memory) before it is probed again.
    pub mtu_probe_interval: Duration,
    /// Most bytes the application may have written but not yet had
    /// acknowledged. The buffer holds four congestion windows of them (at
    /// least 64 KiB), up to this size: a writer faster than the network
    /// waits with a few windows queued, as with TCP's send buffer, instead
    /// of filling this much memory per connection.
    pub send_buffer_size: usize,
    /// Bytes of received data buffered for the application (in order and out
    /// of order together); the advertised window is what is left of it.
    pub receive_buffer_size: usize,
    /// Lower bound of the retransmission timeout.
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout (after backoff).
    pub max_rto: Duration,
    /// Retransmission timeout before the first RTT sample.
    pub initial_rto: Duration,
    /// Consecutive retransmission timeouts after which the connection is
    /// declared dead.
    pub max_retransmissions: u32,
    /// First SYN retransmission interval; doubles on each retry.
    pub syn_rto: Duration,
    /// How long a dial may take before failing.
    pub connect_timeout: Duration,
    /// How long an accepted connection waits for the initiator to
    /// acknowledge the SYN-ACK (half-open) before it is dropped, counted
    /// from the initiator's latest SYN. Shorter than `connect_timeout`: a
    /// spoofed SYN never completes. The endpoint also bounds how many
    /// connections are half-open (`EndpointConfig::max_half_open`).
    pub half_open_timeout: Duration,
    /// A connection that receives nothing for this long is closed with
    /// `TimedOut`.
    pub idle_timeout: Duration,
    /// After this long without sending anything, send a keepalive (a
    /// duplicate ACK, as libutp does). `None` disables keepalives.
    pub keepalive_interval: Option<Duration>,
    /// Spread each window's packets over the round trip (on paths with an
    /// RTT of 2 ms or more) instead of sending them in one burst.
    pub pacing: bool,
    /// Coalesce small writes while data is in flight (like TCP's Nagle).
    /// Turn off for latency-sensitive request/response traffic.
    pub nagle: bool,
    /// How long the connection lingers after a graceful close to answer a
    /// retransmitted FIN, and how long a close waits for the peer's ack of
    /// our FIN before giving up.
    pub close_timeout: Duration,
    /// Most packets in flight (sent and not yet acknowledged) at once,
    /// whatever their size: libutp's limit. It bounds the work of an ACK
    /// and keeps sequence numbers from aliasing; at most 16,384.
    pub max_packets_in_flight: usize,
    /// Offer and accept this project's extensions (see `wire::ExtFlags`).
    /// The default offers `LARGE_PACKETS` only (it lets path MTU probing go
    /// past 1500 bytes between peers of this library); metadata records and
    /// SYN data are opt-in.
    pub extensions: crate::wire::ExtFlags,
    /// Largest payload carried on a SYN (when SYN data is negotiated).
    pub max_syn_data: usize,
    /// How long an early-data dial (`Endpoint::connect_early`) holds its SYN
    /// at most, waiting for the application's first bytes. The
    /// application's flush or shutdown sends it earlier.
    pub syn_hold: Duration,
    /// The congestion controller: classic LEDBAT by default (RFC 6817, as
    /// libutp runs it: 100 ms target), or
    /// [`LedbatPlusPlusConfig`](crate::congestion::LedbatPlusPlusConfig)
    /// for LEDBAT++ (fair between flows, 60 ms of queuing delay, yields
    /// more to TCP, but far slower under random loss; the README's
    /// congestion control section has the figures of both).
    pub congestion: Arc<dyn ControllerFactory>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            initial_packet_size_v4: 1402,
            initial_packet_size_v6: 1232,
            mtu_probing: true,
            min_packet_size: 1232,
            max_packet_size: crate::connection::MAX_UDP_PAYLOAD_V4,
            mtu_probe_interval: Duration::from_secs(600),
            send_buffer_size: 4 << 20,
            receive_buffer_size: 4 << 20,
            min_rto: Duration::from_millis(250),
            max_rto: Duration::from_secs(30),
            initial_rto: Duration::from_secs(1),
            max_retransmissions: 8,
            syn_rto: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(15),
            half_open_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive_interval: Some(Duration::from_secs(29)),
            pacing: true,
            nagle: true,
            close_timeout: Duration::from_secs(10),
            max_packets_in_flight: 1024,
            extensions: crate::wire::ExtFlags::LARGE_PACKETS,
            max_syn_data: 1024,
            syn_hold: Duration::from_millis(10),
            congestion: Arc::new(LedbatConfig::default()),
        }
    }
}

/// Settings of an endpoint (all connections over one socket).
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Settings used for every connection.
    pub transport: Arc<TransportConfig>,
    /// Most connections (of all states) at once; a SYN past it is refused.
    pub max_connections: usize,
    /// Most connections half-open at once: SYNs handed out as `Incoming`
    /// and undecided, and accepted connections whose initiator has not yet
    /// acknowledged the SYN-ACK. When full, a new SYN evicts the oldest
    /// half-open connection (never an established one or a dial), so a SYN
    /// flood cannot fill `max_connections`.
    pub max_half_open: usize,
    /// RESETs sent for unknown connections per second, at most.
    pub reset_rate: u32,
    /// Seed of the endpoint's random numbers (connection ids, initial
    /// sequence numbers). `None` draws one from the operating system.
    pub rng_seed: Option<u64>,
    /// Bytes of unacknowledged application data all connections together
    /// should buffer: a connection with data queued may hold an even share
    /// of it among the connections with data queued (and always at least
    /// 64 KiB, at most [`TransportConfig::send_buffer_size`]). One
    /// connection alone keeps its whole buffer; 200 busy ones buffer about
    /// 160 KiB each by default instead of up to 4 MiB each, the memory a
    /// writer faster than the network would otherwise fill.
    pub send_budget: usize,
}

/// Heap held by one connection besides its buffers, at most: the state
/// machine, its controller, the records of packets in flight and of data
/// held out of order; payload buffers kept for reuse count within the
/// receive buffer's size (measured with every table full: see the test
/// `one_connection_at_its_limits_stays_within_its_bound` in
/// `proto/tests/hostile`).
const CONNECTION_OVERHEAD: usize = 256 << 10;

/// The largest UDP datagram: a receive buffer may overrun its size by one
/// packet, and a SYN waiting for the application's decision is kept whole.
const MAX_DATAGRAM: usize = 65_536;

/// The endpoint's tables of fixed size: remembered path MTUs, queued
/// RESETs, the routing table's entries.
const ENDPOINT_TABLES: usize = 1 << 20;

impl TransportConfig {
    /// Heap one connection can hold at most, whatever its peer does: both
    /// buffers full, a packet of slack, and its bookkeeping.
    #[must_use]
    pub fn connection_memory_bound(&self) -> usize {
        self.send_buffer_size + self.receive_buffer_size + MAX_DATAGRAM + CONNECTION_OVERHEAD
    }
}

impl EndpointConfig {
    /// Heap the whole endpoint can hold at most, whatever its peers do:
    /// `max_connections` connections at their bound (half-open ones among
    /// them; they hold far less), `max_half_open` SYNs awaiting a decision,
    /// and the fixed tables. With the defaults (16,384 connections of 4 MiB
    /// buffers each way) that is about 140 GB: lower `max_connections` or
    /// the buffers for a public port on a small machine. A SYN flood alone
    /// costs a few KiB per half-open connection (about 4 MiB at the default
    /// `max_half_open`), whatever its rate.
    #[must_use]
    pub fn memory_bound(&self) -> usize {
        self.max_connections * self.transport.connection_memory_bound()
            + self.max_half_open * MAX_DATAGRAM
            + ENDPOINT_TABLES
    }
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            transport: Arc::new(TransportConfig::default()),
            max_connections: 16 * 1024,
            max_half_open: 1024,
            reset_rate: 100,
            rng_seed: None,
            send_budget: 32 << 20,
        }
    }
}
