//! Hole punching for a dial with `role = Listener` (DCUtR).
//!
//! uTP has no simultaneous open: when both peers dial each other, each gets
//! a connection of its own, and a libp2p upgrade run as listener on both
//! ends of one of them waits forever. So the peer that must end up the
//! listener does not dial at all: it sends punch datagrams (which open its
//! NAT towards the peer) from its listening socket and waits for the peer's
//! uTP connection to arrive on that socket, which the dial then returns.
//! Meanwhile the listener of the transport leaves connections from that
//! address alone.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use futures::future::{self, Either};
use parking_lot::Mutex;
use tracing::debug;

use crate::socket::UtpSocket;
use crate::stream::UtpStream;

/// A punch datagram. It is not uTP (version 0, shorter than a header), so
/// the peer's endpoint hands it to its non-uTP queue (the transport's
/// sockets keep none) and never mistakes it for a connection.
pub(crate) const PUNCH: &[u8] = b"\0libp2p-utp punch";

/// The addresses hole-punching dials are waiting for, shared by a
/// transport, its listeners and its dials.
#[derive(Debug, Default)]
pub(crate) struct HolePunches {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Dials waiting for a connection from each address.
    waiting: HashMap<SocketAddr, usize>,
    /// The task polling the transport (and so its listeners), woken when a
    /// dial stops waiting: a connection it left in the accept queue is
    /// then the listener's.
    transport: Option<Waker>,
}

impl HolePunches {
    /// Reserves connections from `remote` for a dial until the returned
    /// guard is dropped.
    pub(crate) fn register(self: &Arc<Self>, remote: SocketAddr) -> Registration {
        let remote = canonical(remote);
        *self.inner.lock().waiting.entry(remote).or_default() += 1;
        Registration { punches: self.clone(), remote }
    }

    /// Whether a dial is waiting for a connection from `remote`.
    pub(crate) fn is_awaited(&self, remote: SocketAddr) -> bool {
        self.inner.lock().waiting.contains_key(&canonical(remote))
    }

    /// Remembers the task polling the transport.
    pub(crate) fn set_transport_waker(&self, waker: &Waker) {
        let mut inner = self.inner.lock();
        match &inner.transport {
            Some(w) if w.will_wake(waker) => {}
            _ => inner.transport = Some(waker.clone()),
        }
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A dial's reservation of the connections from one address.
#[derive(Debug)]
pub(crate) struct Registration {
    punches: Arc<HolePunches>,
    remote: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let waker = {
            let mut inner = self.punches.inner.lock();
            if let Some(n) = inner.waiting.get_mut(&self.remote) {
                *n -= 1;
                if *n == 0 {
                    inner.waiting.remove(&self.remote);
                }
            }
            inner.transport.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Punches towards `remote` from `socket` every `interval` and returns the
/// first connection from `remote` that `socket` accepts; fails after
/// `timeout`.
pub(crate) async fn hole_punch(
    socket: UtpSocket,
    remote: SocketAddr,
    registration: Registration,
    interval: Duration,
    timeout: Duration,
) -> io::Result<UtpStream> {
    debug!(%remote, "hole punching: waiting for the peer's connection");
    let punch = async {
        loop {
            // The peer may not be up yet, or an ICMP error of an earlier
            // punch surfaces here: go on until the timeout.
            if let Err(e) = socket.send_non_utp(PUNCH, remote).await {
                debug!(%remote, error = %e, "sending a punch datagram failed");
            }
            tokio::time::sleep(interval).await;
        }
    };
    let accept =
        poll_fn(|cx| socket.poll_accept_matching(cx, |a| super::addr::same_peer(a, remote)));
    let result = tokio::time::timeout(timeout, async {
        futures::pin_mut!(punch, accept);
        match future::select(accept, punch).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(((), _)) => unreachable!("punching goes on until the timeout"),
        }
    })
    .await;
    drop(registration);
    match result {
        Ok(Ok(stream)) => {
            debug!(%remote, "hole punching: connected");
            Ok(stream)
        }
        Ok(Err(e)) => {
            debug!(%remote, error = %e, "hole punching failed");
            Err(e)
        }
        Err(_) => {
            debug!(%remote, "hole punching timed out");
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("hole punching to {remote}: no uTP connection from it within {timeout:?}"),
            ))
        }
    }
}
