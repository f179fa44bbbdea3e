//! Endpoint-wide counters: what arrived that did not become connection
//! data, and why.

/// Counters of one endpoint (all connections of a socket), cumulative since
/// it started. Every datagram that was dropped is counted under exactly one
/// reason; see also each connection's [`Stats`](crate::Stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// uTP datagrams received (SYNs, packets of connections, strays).
    pub datagrams_received: u64,
    /// Malformed uTP packets (bad extension chain and the like).
    pub dropped_malformed: u64,
    /// Packets for no connection of ours (answered with a rate-limited
    /// RESET, unless they were RESETs).
    pub dropped_unknown_connection: u64,
    /// Packets of a connection whose ack number acknowledges something
    /// never sent or long acknowledged: forged, or very stale.
    pub dropped_bad_ack: u64,
    /// SYNs that matched a live connection but not its handshake (a
    /// forgery, or a restarted peer reusing an id before the old connection
    /// fell silent).
    pub dropped_stale_syn: u64,
    /// Connections replaced by a SYN with the same peer and id after the
    /// peer had been silent for 2 s (a restarted peer redialling).
    pub connections_replaced: u64,
    /// SYNs refused because the endpoint was full of established
    /// connections and dials (no half-open connection left to evict).
    pub syns_refused: u64,
    /// Half-open connections evicted to make room for a newer SYN (SYN
    /// flood defence: the oldest unconfirmed one goes).
    pub half_open_evicted: u64,
    /// Half-open connections dropped because the initiator never confirmed
    /// the handshake in time.
    pub half_open_expired: u64,
    /// SYNs the application refused with a RESET ([`Endpoint::refuse`]:
    /// an accept filter, a full accept queue, a closed listener).
    ///
    /// [`Endpoint::refuse`]: crate::Endpoint::refuse
    pub syns_refused_by_app: u64,
    /// SYNs the application dropped unanswered ([`Endpoint::ignore`]).
    ///
    /// [`Endpoint::ignore`]: crate::Endpoint::ignore
    pub syns_ignored_by_app: u64,
    /// RESETs sent for unknown connections and refused SYNs.
    pub resets_sent: u64,
    /// RESETs not sent because of the rate limit (`reset_rate`).
    pub resets_rate_limited: u64,
    /// Dials ended as refused by an ICMP port unreachable
    /// ([`Endpoint::handle_port_unreachable`]).
    ///
    /// [`Endpoint::handle_port_unreachable`]: crate::Endpoint::handle_port_unreachable
    pub dials_refused_by_icmp: u64,
    /// Closes completed by an ICMP port unreachable quoting our FIN, after
    /// every byte was acknowledged and the peer's FIN arrived (the peer's
    /// socket is gone; its last ACK was lost).
    pub closes_completed_by_icmp: u64,
    /// ICMP port unreachables that matched no dial in SYN-SENT and no
    /// finished close (for an open stream, late, or forged): ignored.
    pub icmp_ignored: u64,
}

/// Traffic of every connection of an endpoint, the closed ones included:
/// the sums of their [`Stats`](crate::Stats) counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrafficTotals {
    /// Datagrams sent by connections (handshakes, data, ACKs, FINs).
    pub packets_sent: u64,
    /// Datagrams received by connections.
    pub packets_received: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Payload bytes received, duplicates included.
    pub bytes_received: u64,
    /// Packets sent again.
    pub retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
}

impl TrafficTotals {
    pub(crate) fn add(&mut self, s: &crate::Stats) {
        self.packets_sent += s.packets_sent;
        self.packets_received += s.packets_received;
        self.bytes_sent += s.bytes_sent;
        self.bytes_received += s.bytes_received;
        self.retransmits += s.retransmits;
        self.timeouts += s.timeouts;
    }
}

/// The connections an endpoint holds, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionCounts {
    /// Dials waiting for their SYN-ACK, and accepted connections whose
    /// initiator has not confirmed the handshake.
    pub handshaking: usize,
    /// Connected, including half-closed ones.
    pub open: usize,
    /// Closed (finished, reset or timed out) and lingering until the
    /// application lets go and the last packets are answered.
    pub draining: usize,
}
