//! The connection's side of path MTU discovery: what the endpoint learned,
//! probes refused by the stack, and starting a search.

use std::time::Instant;

use crate::wire::{ExtFlags, HEADER_LEN};

use super::mtu::{ProbeForm, LEGACY_CEILING_V4, MAX_UDP_PAYLOAD_V4, MAX_UDP_PAYLOAD_V6};
use super::Connection;

impl Connection {
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
    pub(super) fn start_mtu(&mut self, now: Instant) {
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
}
