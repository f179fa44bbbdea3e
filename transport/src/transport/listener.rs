//! One listener of the transport: a socket that accepts connections, the
//! addresses it announces, and their changes (if-watch) when it is bound to
//! a wildcard address.

use std::collections::{HashSet, VecDeque};
use std::future::Ready;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::Stream;
use if_watch::tokio::IfWatcher;
use if_watch::IfEvent;
use libp2p_core::transport::{ListenerId, TransportEvent};
use tracing::debug;

use super::addr::to_multiaddr;
use super::hole_punch::HolePunches;
use super::Error;
use crate::socket::UtpSocket;
use crate::stream::UtpStream;

/// What a listener yields.
pub(crate) type Event = TransportEvent<Ready<Result<UtpStream, Error>>, Error>;

/// A listening socket as a stream of transport events. It ends after
/// yielding [`TransportEvent::ListenerClosed`].
pub(crate) struct Listener {
    pub(crate) id: ListenerId,
    pub(crate) socket: UtpSocket,
    /// The address the socket is bound to (maybe a wildcard).
    pub(crate) bound: SocketAddr,
    /// The IPs announced so far (the bound one, or those of the interfaces).
    pub(crate) ips: HashSet<IpAddr>,
    /// Follows the interfaces when bound to a wildcard address.
    if_watcher: Option<IfWatcher>,
    pending: VecDeque<Event>,
    pub(crate) closed: bool,
    /// Set once `ListenerClosed` was yielded: the stream is over.
    done: bool,
    /// The task polling the listener, woken when it is closed.
    waker: Option<Waker>,
    punches: Arc<HolePunches>,
}

impl Listener {
    pub(crate) fn new(
        id: ListenerId,
        socket: UtpSocket,
        punches: Arc<HolePunches>,
    ) -> io::Result<Self> {
        let bound = socket.local_addr()?;
        let mut listener = Listener {
            id,
            socket,
            bound,
            ips: HashSet::new(),
            if_watcher: None,
            pending: VecDeque::new(),
            closed: false,
            done: false,
            waker: None,
            punches,
        };
        if bound.ip().is_unspecified() {
            listener.if_watcher = Some(IfWatcher::new()?);
        } else {
            listener.ips.insert(bound.ip());
            listener.pending.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: to_multiaddr(bound),
            });
        }
        debug!(listener = %id, local = %bound, "uTP listener up");
        Ok(listener)
    }

    /// Stops accepting and queues `ListenerClosed` with `reason`.
    pub(crate) fn close(&mut self, reason: Result<(), Error>) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.socket.close();
        debug!(listener = %self.id, local = %self.bound, ok = reason.is_ok(), "uTP listener closed");
        self.pending.push_back(TransportEvent::ListenerClosed { listener_id: self.id, reason });
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether the socket can send to `remote`: the same address family,
    /// and a loopback socket for a loopback peer and only for one (a
    /// wildcard socket reaches both).
    pub(crate) fn can_reach(&self, remote: SocketAddr) -> bool {
        if self.closed || self.bound.is_ipv4() != remote.is_ipv4() {
            return false;
        }
        let ip = self.bound.ip();
        ip.is_unspecified() || ip.is_loopback() == remote.ip().is_loopback()
    }

    /// The local address to report for a connection from `remote`.
    fn local_addr_for(&self, remote: SocketAddr) -> SocketAddr {
        if self.bound.ip().is_unspecified() && remote.ip().is_loopback() {
            // The connection came over the loopback interface.
            return SocketAddr::new(remote.ip(), self.bound.port());
        }
        self.bound
    }

    /// The next address change of the interfaces, if any.
    fn poll_if_watcher(&mut self, cx: &mut Context<'_>) -> Option<Event> {
        let watcher = self.if_watcher.as_mut()?;
        loop {
            match watcher.poll_if_event(cx) {
                Poll::Pending => return None,
                Poll::Ready(Ok(IfEvent::Up(net))) => {
                    let ip = net.addr();
                    if ip.is_ipv4() == self.bound.is_ipv4()
                        && announceable(ip)
                        && self.ips.insert(ip)
                    {
                        let listen_addr = to_multiaddr(SocketAddr::new(ip, self.bound.port()));
                        debug!(listener = %self.id, %listen_addr, "new listen address");
                        return Some(TransportEvent::NewAddress {
                            listener_id: self.id,
                            listen_addr,
                        });
                    }
                }
                Poll::Ready(Ok(IfEvent::Down(net))) => {
                    let ip = net.addr();
                    if self.ips.remove(&ip) {
                        let listen_addr = to_multiaddr(SocketAddr::new(ip, self.bound.port()));
                        debug!(listener = %self.id, %listen_addr, "listen address expired");
                        return Some(TransportEvent::AddressExpired {
                            listener_id: self.id,
                            listen_addr,
                        });
                    }
                }
                Poll::Ready(Err(e)) => {
                    debug!(listener = %self.id, error = %e, "watching the interfaces failed");
                    return Some(TransportEvent::ListenerError {
                        listener_id: self.id,
                        error: Error::Io(e),
                    });
                }
            }
        }
    }
}

/// Whether a wildcard listener announces an interface's address. Not an
/// IPv6 link-local one (fe80::/10): a multiaddr has no room for the zone
/// (interface) such an address needs, so nobody could dial it.
fn announceable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => !v6.is_unicast_link_local(),
    }
}

impl Stream for Listener {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.pending.pop_front() {
                if matches!(event, TransportEvent::ListenerClosed { .. }) {
                    this.done = true;
                }
                return Poll::Ready(Some(event));
            }
            if this.done || this.closed {
                return Poll::Ready(None);
            }
            if let Some(event) = this.poll_if_watcher(cx) {
                return Poll::Ready(Some(event));
            }
            // Connections a hole-punching dial waits for are the dial's.
            let punches = &this.punches;
            match this.socket.poll_accept_matching(cx, |remote| !punches.is_awaited(remote)) {
                Poll::Ready(Ok(stream)) => {
                    let remote = stream.peer_addr();
                    // The address the peer reached (known on a wildcard
                    // socket with batched I/O), else the best guess.
                    let local = stream.local_addr();
                    let local = if local.ip().is_unspecified() {
                        this.local_addr_for(remote)
                    } else {
                        local
                    };
                    return Poll::Ready(Some(TransportEvent::Incoming {
                        listener_id: this.id,
                        upgrade: std::future::ready(Ok(stream)),
                        local_addr: to_multiaddr(local),
                        send_back_addr: to_multiaddr(remote),
                    }));
                }
                Poll::Ready(Err(e)) => {
                    // The socket's task stopped: nothing more to accept.
                    this.close(Err(Error::Io(e)));
                    continue;
                }
                Poll::Pending => {}
            }
            this.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_ipv6_is_not_announced() {
        assert!(!announceable("fe80::1".parse().unwrap()));
        assert!(!announceable("fe80::abcd:1234".parse().unwrap()));
        assert!(announceable("2001:db8::1".parse().unwrap()));
        assert!(announceable("::1".parse().unwrap()));
        assert!(announceable("169.254.1.1".parse().unwrap()));
        assert!(announceable("192.168.1.2".parse().unwrap()));
    }
}
