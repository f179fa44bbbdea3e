//! Counters a user can read at any time.

use std::time::Duration;

/// Statistics of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams sent, retransmissions and ACKs included.
    pub packets_sent: u64,
    /// Datagrams received for this connection.
    pub packets_received: u64,
    /// Payload bytes sent, retransmissions included.
    pub bytes_sent: u64,
    /// Payload bytes received, duplicates included.
    pub bytes_received: u64,
    /// Bytes the application wrote.
    pub bytes_written: u64,
    /// Bytes the application read.
    pub bytes_read: u64,
    /// Packets sent again (timeout, duplicate ACKs or selective ACKs).
    pub retransmits: u64,
    /// Retransmissions triggered by duplicate or selective ACKs.
    pub fast_retransmits: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Duplicate ACKs received.
    pub duplicate_acks: u64,
    /// Packets received twice (or older than what was already delivered).
    pub duplicate_packets: u64,
    /// Packets dropped because they were out of window or carried an
    /// acknowledgement of something never sent.
    pub invalid_packets: u64,
    /// Smoothed round-trip time.
    pub rtt: Option<Duration>,
    /// Smallest round-trip time seen.
    pub min_rtt: Option<Duration>,
    /// Congestion window in bytes.
    pub cwnd: usize,
    /// Bytes in flight.
    pub bytes_in_flight: usize,
    /// The peer's last advertised receive window.
    pub peer_window: usize,
    /// Our advertised receive window.
    pub recv_window: usize,
    /// Largest UDP payload this connection sends.
    pub packet_size: usize,
    /// Tail loss probes: the newest packet sent again after two round trips
    /// without an acknowledgement.
    pub tail_probes: u64,
    /// Path MTU probes sent.
    pub mtu_probes: u64,
    /// Path MTU probes lost (or refused by the sender's stack).
    pub mtu_probes_lost: u64,
}
