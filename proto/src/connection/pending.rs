//! The output a connection owes outside its data flow, as one set: what
//! `poll_transmit` sends before new data, each at most once.

/// Packets due besides data and retransmissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pending(u8);

impl Pending {
    /// An ACK (STATE) for data received, or a window update.
    pub(crate) const ACK: Pending = Pending(1);
    /// A keepalive: an ACK sent because the line was idle.
    pub(crate) const KEEPALIVE: Pending = Pending(1 << 1);
    /// Acceptor: the SYN-ACK (again).
    pub(crate) const SYN_ACK: Pending = Pending(1 << 2);
    /// A RESET.
    pub(crate) const RESET: Pending = Pending(1 << 3);
    /// The ACK of the peer's FIN once more, with seq = our FIN (libtorrent
    /// drops a STATE past our FIN; libutp one not past its ack).
    pub(crate) const FIN_ACK_ECHO: Pending = Pending(1 << 4);
    /// A zero-window probe, which may go out whatever the peer's window.
    pub(crate) const WINDOW_PROBE: Pending = Pending(1 << 5);

    pub(crate) fn contains(self, other: Pending) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any of `other` is set.
    pub(crate) fn intersects(self, other: Pending) -> bool {
        self.0 & other.0 != 0
    }

    pub(crate) fn insert(&mut self, other: Pending) {
        self.0 |= other.0;
    }

    pub(crate) fn remove(&mut self, other: Pending) {
        self.0 &= !other.0;
    }

    /// Sets or clears `other`.
    pub(crate) fn set(&mut self, other: Pending, on: bool) {
        if on {
            self.insert(other);
        } else {
            self.remove(other);
        }
    }

    /// Whether `other` was set; clears it.
    pub(crate) fn take(&mut self, other: Pending) -> bool {
        let was = self.contains(other);
        self.remove(other);
        was
    }
}

impl std::ops::BitOr for Pending {
    type Output = Pending;
    fn bitor(self, other: Pending) -> Pending {
        Pending(self.0 | other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Pending;

    #[test]
    fn insert_take_and_set() {
        let mut p = Pending::default();
        p.insert(Pending::ACK);
        p.insert(Pending::RESET);
        assert!(p.contains(Pending::ACK) && p.contains(Pending::RESET));
        assert!(!p.contains(Pending::SYN_ACK));
        assert!(p.take(Pending::ACK));
        assert!(!p.take(Pending::ACK));
        p.set(Pending::KEEPALIVE, true);
        p.set(Pending::RESET, false);
        assert_eq!(p, Pending::KEEPALIVE);
        assert!(p.intersects(Pending::ACK | Pending::KEEPALIVE));
        p.remove(Pending::ACK | Pending::KEEPALIVE);
        assert_eq!(p, Pending::default());
    }
}
