//! The endpoint's send budget, shared by its connections.
//!
//! Each connection's send buffer holds up to four congestion windows (see
//! `SendBuffer::set_limit`), as much as `send_buffer_size`: alone, one
//! connection may buffer 4 MiB. Two hundred connections doing that at once
//! buffered 800 MiB of the application's data, every page of it touched
//! fresh (page faults were a fifth of the sender's CPU in the cross-process
//! bench). With a budget, a connection whose buffer holds data may fill at
//! most its share of it: the budget divided among the connections that
//! have data to send. One connection still gets its whole buffer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The budget and how many connections have data queued.
#[derive(Debug)]
struct Budget {
    total: usize,
    senders: AtomicUsize,
}

/// One connection's part in its endpoint's budget: counted among the
/// senders while its send buffer holds data. A connection without an
/// endpoint (unit tests) has no budget.
#[derive(Debug, Default)]
pub(crate) struct SendShare {
    budget: Option<Arc<Budget>>,
    counted: bool,
}

impl SendShare {
    /// A budget of `total` bytes for an endpoint's connections to share:
    /// the first member; [`SendShare::member`] makes the others.
    pub(crate) fn budget(total: usize) -> Self {
        SendShare {
            budget: Some(Arc::new(Budget { total, senders: AtomicUsize::new(0) })),
            counted: false,
        }
    }

    /// Another connection sharing this budget.
    pub(crate) fn member(&self) -> Self {
        SendShare { budget: self.budget.clone(), counted: false }
    }

    /// Counts this connection among the senders (its buffer holds data) or
    /// not.
    pub(crate) fn set_sending(&mut self, sending: bool) {
        if sending == self.counted {
            return;
        }
        if let Some(b) = &self.budget {
            if sending {
                b.senders.fetch_add(1, Ordering::Relaxed);
            } else {
                b.senders.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.counted = sending;
    }

    /// What this connection may buffer: its share of the budget.
    pub(crate) fn limit(&self) -> usize {
        match &self.budget {
            Some(b) => b.total / b.senders.load(Ordering::Relaxed).max(1),
            None => usize::MAX,
        }
    }

    /// Connections counted as senders now (for tests).
    #[cfg(test)]
    pub(crate) fn senders(&self) -> usize {
        self.budget.as_ref().map_or(0, |b| b.senders.load(Ordering::Relaxed))
    }
}

impl Drop for SendShare {
    fn drop(&mut self) {
        self.set_sending(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_divided_among_senders() {
        let endpoint = SendShare::budget(32 << 20);
        let mut a = endpoint.member();
        let mut b = endpoint.member();
        assert_eq!(a.limit(), 32 << 20, "nobody sends: all of it");
        a.set_sending(true);
        a.set_sending(true);
        assert_eq!(a.limit(), 32 << 20, "counted once");
        b.set_sending(true);
        assert_eq!(a.limit(), 16 << 20);
        drop(b);
        assert_eq!(endpoint.senders(), 1, "a dropped sender leaves");
        a.set_sending(false);
        assert_eq!(endpoint.senders(), 0);
        assert_eq!(SendShare::default().limit(), usize::MAX);
    }
}
