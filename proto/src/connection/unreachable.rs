//! ICMP port unreachable: the peer's host says nothing listens on the port.
//!
//! Two cases change state, nothing else does:
//! - A dial in SYN-SENT whose SYN already left fails at once with
//!   `Refused` instead of waiting out the connect timeout (as TCP does,
//!   and as libutp does for a connection in SYN-SENT).
//! - A closing connection whose every byte was acknowledged and whose
//!   peer's FIN arrived, and which only waits for the acknowledgement of
//!   its own FIN, finishes cleanly: the peer finished, and its socket is
//!   gone (a program that exits right after reading our end takes its
//!   last ACK's retransmission with it). Without this, losing that one ACK
//!   made `close` time out after `close_timeout`.
//!
//! Data in flight and open streams ignore ICMP errors. The error must quote
//! the packet's header up to its sequence number (18 bytes; hosts quote the
//! whole datagram or 548 bytes of it, far more than RFC 792's 8): type,
//! connection id and sequence number must match our SYN or our FIN. To
//! forge one, a blind attacker must know the exact destination and our
//! port (the kernel matches the quoted UDP header to our socket) and guess
//! 32 bits, to end a dial or to complete a close whose data had all
//! arrived; libutp checks the address only (and resets any connection). An
//! error quoting less is ignored.

use super::{Connection, ConnectionError, Event, LocalFin, State};
use crate::wire::PacketType;

/// Offset of the connection id in a uTP header.
const CONNECTION_ID: usize = 2;
/// Offset of the sequence number in a uTP header.
const SEQ_NR: usize = 16;

impl Connection {
    /// An ICMP port unreachable arrived for a datagram this connection sent
    /// to its remote; `quoted` is the start of that datagram's payload as
    /// the error quotes it (possibly empty). Ends a dial in SYN-SENT with
    /// [`ConnectionError::Refused`] if the quote is consistent with its SYN
    /// and returns `true`; anything else is ignored.
    pub(crate) fn on_port_unreachable(&mut self, quoted: &[u8]) -> bool {
        if self.error.is_some() || self.state == State::Closed {
            return false;
        }
        if self.state == State::SynSent {
            // The SYN must have left: nothing else of ours can be quoted.
            if self.syn_held || self.sent.get(self.syn_seq).is_none_or(|p| p.transmissions == 0) {
                return false;
            }
            if !quote_matches(quoted, PacketType::Syn, self.recv_id, self.syn_seq.0) {
                return false;
            }
            tracing::debug!(remote = %self.remote, "dial refused (ICMP port unreachable)");
            self.close(Some(ConnectionError::Refused));
            return true;
        }
        // Only our FIN is unacknowledged, and the peer's FIN arrived.
        let LocalFin::Sent(fin) = self.local_fin else { return false };
        if self.sent.first_seq() != fin || !self.recv.is_eof() {
            return false;
        }
        if !quote_matches(quoted, PacketType::Fin, self.send_id, fin.0) {
            return false;
        }
        tracing::debug!(remote = %self.remote, "peer gone after both FINs: close complete");
        self.local_fin = LocalFin::Acked;
        self.set_event(Event::Finished);
        self.close(None);
        true
    }
}

/// Whether the quoted start of a datagram is our packet of type `kind`:
/// type and version, connection id and sequence number must all be there
/// and match.
fn quote_matches(quoted: &[u8], kind: PacketType, connection_id: u16, seq_nr: u16) -> bool {
    let field = |at: usize| quoted.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    quoted.first() == Some(&((kind as u8) << 4 | 1))
        && field(CONNECTION_ID) == Some(connection_id)
        && field(SEQ_NR) == Some(seq_nr)
}

#[cfg(test)]
mod tests {
    use super::quote_matches;
    use crate::wire::PacketType;

    fn quote_matches_syn(q: &[u8], id: u16, seq: u16) -> bool {
        quote_matches(q, PacketType::Syn, id, seq)
    }

    #[test]
    fn quote_checks_every_byte_it_holds() {
        let mut syn = [0u8; 20];
        syn[0] = 0x41;
        syn[2..4].copy_from_slice(&0x1234u16.to_be_bytes());
        syn[16..18].copy_from_slice(&7u16.to_be_bytes());
        assert!(quote_matches_syn(&syn, 0x1234, 7));
        assert!(quote_matches_syn(&syn[..18], 0x1234, 7));
        // A quote that stops short of the sequence number proves nothing.
        assert!(!quote_matches_syn(&[], 0x1234, 7));
        assert!(!quote_matches_syn(&syn[..17], 0x1234, 7));
        assert!(!quote_matches_syn(&syn[..1], 0x1234, 7));
        assert!(!quote_matches_syn(&syn, 0x1234, 8));
        // A DATA packet is not our SYN.
        let mut data = syn;
        data[0] = 0x01;
        assert!(!quote_matches_syn(&data, 0x1234, 7));
    }
}
