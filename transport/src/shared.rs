//! State shared by a socket's handles, its streams and its driver task.
//!
//! Everything lives behind one mutex: the engine, the wakers of every
//! connection, the accept queue and the queue of datagrams that are not uTP.
//! Streams lock it to read and write, the driver locks it once per batch of
//! datagrams. Nobody holds it across a system call or an `.await`.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::task::Waker;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tracing::debug;
use utp_proto::{ConnectionHandle, Endpoint, Event};

use crate::config::Config;

/// Everything a socket's handles, streams and driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) inner: Mutex<Inner>,
    pub(crate) socket: UdpSocket,
    /// Wakes the driver: a stream produced work to send (or let go of a
    /// connection), the socket handle was dropped.
    pub(crate) notify: Notify,
    pub(crate) local_addr: SocketAddr,
    pub(crate) config: Config,
}

/// Most datagrams [`Shared::flush_now`] sends in one call.
const FLUSH_LIMIT: usize = 256;

impl Shared {
    /// Tells the driver to poll the engine for output.
    pub(crate) fn wake_driver(&self) {
        self.notify.notify_one();
    }

    /// Sends what the engine has queued (FINs and RESETs of streams let go,
    /// their last data) right now, without the driver: for when the driver
    /// is gone or going (its runtime shut down), so that a program that
    /// closes its streams and exits does not leave its peers waiting for
    /// their idle timeout. Best effort: non-blocking sends straight on the
    /// socket, at most `FLUSH_LIMIT` datagrams, errors ignored, nothing
    /// retransmitted later.
    pub(crate) fn flush_now(&self) -> usize {
        let sock = socket2::SockRef::from(&self.socket);
        let mut buf = vec![0u8; 65_536];
        let mut sent = 0;
        let mut inner = self.inner.lock();
        let now = Instant::now();
        while sent < FLUSH_LIMIT {
            let Some(t) = inner.endpoint.poll_transmit(now, &mut buf) else { break };
            let _ = sock.send_to(&buf[..t.size], &t.destination.into());
            sent += 1;
        }
        sent
    }
}

/// A small set of wakers for operations several tasks may wait on at once
/// (accept, non-uTP receive): all are woken, the losers register again.
#[derive(Debug, Default)]
pub(crate) struct WakerSet(Vec<Waker>);

impl WakerSet {
    pub(crate) fn register(&mut self, waker: &Waker) {
        if !self.0.iter().any(|w| w.will_wake(waker)) {
            self.0.push(waker.clone());
        }
    }

    pub(crate) fn drain_into(&mut self, out: &mut Vec<Waker>) {
        out.append(&mut self.0);
    }
}

/// Stores `waker` in `slot` unless an equivalent one is already there.
pub(crate) fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// The tasks waiting on one connection.
#[derive(Debug, Default)]
pub(crate) struct ConnWakers {
    pub(crate) read: Option<Waker>,
    pub(crate) write: Option<Waker>,
    pub(crate) connect: Option<Waker>,
    pub(crate) close: Option<Waker>,
}

impl ConnWakers {
    fn take_all(&mut self, out: &mut Vec<Waker>) {
        out.extend(
            [self.read.take(), self.write.take(), self.connect.take(), self.close.take()]
                .into_iter()
                .flatten(),
        );
    }
}

/// Why the driver task is no longer running.
#[derive(Debug, Clone)]
pub(crate) struct Stopped {
    pub(crate) kind: io::ErrorKind,
    pub(crate) reason: String,
}

/// The mutable state behind [`Shared::inner`].
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) endpoint: Endpoint,
    /// Wakers of every connection the runtime tracks, indexed by handle.
    /// A connection has an entry from its creation (dial or accept) until a
    /// stream lets go of it ([`Inner::release`]).
    conns: Vec<Option<ConnWakers>>,
    /// Connections accepted by the driver, waiting for `accept()`.
    pub(crate) accept_queue: VecDeque<ConnectionHandle>,
    /// On a wildcard socket, the address each accepted connection was
    /// reached at (the destination of its SYN), until it is released.
    pub(crate) local_ips: std::collections::HashMap<ConnectionHandle, std::net::IpAddr>,
    /// On a wildcard socket, the source address for datagrams to a peer
    /// (the address it reached), so that replies leave from it and the
    /// peer recognises them; with the number of its connections holding
    /// the entry, removed when the last is released (its closing packets
    /// after that leave from the default address).
    pub(crate) reply_from: std::collections::HashMap<SocketAddr, (std::net::IpAddr, usize)>,
    /// Connections accepted by the driver whose initiator has not yet
    /// confirmed the handshake: they join `accept_queue` once it does (a
    /// spoofed SYN never reaches the application), and are let go if the
    /// engine evicts them or they expire.
    pub(crate) handshaking: HashSet<ConnectionHandle>,
    pub(crate) accept_wakers: WakerSet,
    /// New SYNs are accepted (until `close()` or the last socket handle is
    /// dropped).
    pub(crate) listening: bool,
    /// Every [`UtpSocket`](crate::UtpSocket) handle was dropped.
    pub(crate) socket_dropped: bool,
    /// Streams (and dials in progress) that still hold a connection.
    pub(crate) streams: usize,
    pub(crate) non_utp: VecDeque<(Vec<u8>, SocketAddr)>,
    pub(crate) non_utp_wakers: WakerSet,
    pub(crate) non_utp_dropped: u64,
    /// Set when the driver task ended (runtime shut down, or it panicked).
    pub(crate) stopped: Option<Stopped>,
}

impl Inner {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        Inner {
            endpoint,
            conns: Vec::new(),
            accept_queue: VecDeque::new(),
            local_ips: std::collections::HashMap::new(),
            reply_from: std::collections::HashMap::new(),
            handshaking: HashSet::new(),
            accept_wakers: WakerSet::default(),
            listening: true,
            socket_dropped: false,
            streams: 0,
            non_utp: VecDeque::new(),
            non_utp_wakers: WakerSet::default(),
            non_utp_dropped: 0,
            stopped: None,
        }
    }

    /// Starts tracking a new connection.
    pub(crate) fn track(&mut self, handle: ConnectionHandle) {
        if self.conns.len() <= handle.0 {
            self.conns.resize_with(handle.0 + 1, || None);
        }
        self.conns[handle.0] = Some(ConnWakers::default());
    }

    /// The wakers of a tracked connection.
    pub(crate) fn wakers(&mut self, handle: ConnectionHandle) -> Option<&mut ConnWakers> {
        self.conns.get_mut(handle.0)?.as_mut()
    }

    /// Stops tracking a connection and hands it back to the engine, which
    /// closes it gracefully (FIN after the data already written) and frees it
    /// once drained. A connection still dialing is abandoned at once.
    pub(crate) fn release(&mut self, handle: ConnectionHandle) {
        if let Some(slot) = self.conns.get_mut(handle.0) {
            *slot = None;
        }
        if self.local_ips.remove(&handle).is_some() {
            let remote = self.endpoint.connection(handle).map(|c| c.remote());
            if let Some(remote) = remote {
                if let Some(entry) = self.reply_from.get_mut(&remote) {
                    entry.1 = entry.1.saturating_sub(1);
                    if entry.1 == 0 {
                        self.reply_from.remove(&remote);
                    }
                }
            }
        }
        if let Some(conn) = self.endpoint.connection_mut(handle) {
            if !conn.is_connected() && !conn.is_closed() {
                // A dial nobody waits for any more: no FIN after a handshake.
                conn.reset();
            }
        }
        self.endpoint.release(Instant::now(), handle);
    }

    /// Resets and releases every connection still waiting to be accepted.
    pub(crate) fn stop_listening(&mut self, out: &mut Vec<Waker>) {
        self.listening = false;
        let handshaking: Vec<_> = self.handshaking.drain().collect();
        let queued: Vec<_> = self.accept_queue.drain(..).collect();
        for handle in queued.into_iter().chain(handshaking) {
            self.abort(handle);
        }
        self.accept_wakers.drain_into(out);
    }

    /// A connection waiting in the accept queue that timed out there (a
    /// SYN with data whose initiator never confirmed, evicted or expired):
    /// it leaves the queue unseen. Returns whether it did.
    fn drop_expired_queued(&mut self, handle: ConnectionHandle) -> bool {
        let Some(i) = self.accept_queue.iter().position(|&h| h == handle) else { return false };
        let expired = self
            .endpoint
            .connection(handle)
            .is_some_and(|c| c.error() == Some(utp_proto::ConnectionError::TimedOut));
        if expired {
            self.accept_queue.remove(i);
            self.release(handle);
        }
        expired
    }

    /// Resets a connection nobody took and lets go of it.
    fn abort(&mut self, handle: ConnectionHandle) {
        if let Some(conn) = self.endpoint.connection_mut(handle) {
            conn.reset();
        }
        self.release(handle);
    }

    /// A connection the driver accepted: to the application once the
    /// initiator has confirmed the handshake, or at once when the SYN
    /// brought data to answer (the answer stays within the engine's
    /// anti-amplification limit until confirmation; such a stream's peer
    /// address is unproven until then, as with any request on a SYN).
    pub(crate) fn on_accepted(
        &mut self,
        handle: ConnectionHandle,
        backlog: usize,
        out: &mut Vec<Waker>,
    ) {
        self.track(handle);
        let has_data = self.endpoint.connection(handle).is_some_and(|c| c.readable_bytes() > 0);
        if has_data {
            self.queue_accepted(handle, backlog, out);
        } else {
            self.handshaking.insert(handle);
        }
    }

    /// A datagram reached `handle`: if it confirmed a handshake, the
    /// connection joins the accept queue now, before the next datagram of
    /// the batch (a SYN right behind the confirmation sees the queue as it
    /// is).
    pub(crate) fn on_datagram(
        &mut self,
        handle: ConnectionHandle,
        backlog: usize,
        out: &mut Vec<Waker>,
    ) {
        if self.handshaking.is_empty() || !self.handshaking.contains(&handle) {
            return;
        }
        let confirmed =
            self.endpoint.connection(handle).is_some_and(|c| !c.is_half_open() && !c.is_closed());
        if confirmed {
            self.handshaking.remove(&handle);
            self.queue_accepted(handle, backlog, out);
        }
    }

    fn queue_accepted(&mut self, handle: ConnectionHandle, backlog: usize, out: &mut Vec<Waker>) {
        if self.accept_queue.len() >= backlog {
            debug!(?handle, "accept backlog full: resetting the new connection");
            self.abort(handle);
            return;
        }
        self.accept_queue.push_back(handle);
        self.accept_wakers.drain_into(out);
    }

    /// Routes an engine event to the tasks waiting for it.
    pub(crate) fn on_event(
        &mut self,
        handle: ConnectionHandle,
        event: Event,
        out: &mut Vec<Waker>,
    ) {
        // A confirmation leaves `handshaking` as its datagram arrives
        // (`on_datagram`); what remains there only ends.
        if self.handshaking.contains(&handle) {
            if event == Event::Closed {
                // Evicted (SYN flood), expired or reset before the handshake
                // completed: nobody ever saw it.
                self.handshaking.remove(&handle);
                self.release(handle);
            }
            return;
        }
        if event == Event::Closed && self.drop_expired_queued(handle) {
            return;
        }
        let Some(w) = self.wakers(handle) else { return };
        match event {
            Event::Connected => out.extend(w.connect.take()),
            Event::Readable => out.extend(w.read.take()),
            Event::Writable => out.extend(w.write.take()),
            Event::Finished => out.extend(w.close.take()),
            Event::Closed => w.take_all(out),
        }
    }

    /// The driver is gone: fail every pending operation.
    pub(crate) fn stop(&mut self, stopped: Stopped, out: &mut Vec<Waker>) {
        self.stopped = Some(stopped);
        for w in self.conns.iter_mut().flatten() {
            w.take_all(out);
        }
        self.accept_wakers.drain_into(out);
        self.non_utp_wakers.drain_into(out);
    }

    /// The error every operation returns once the driver is gone.
    pub(crate) fn check_running(&self) -> io::Result<()> {
        match &self.stopped {
            None => Ok(()),
            Some(s) => Err(io::Error::new(s.kind, s.reason.clone())),
        }
    }

    /// Nothing uses the socket any more: the driver may stop.
    pub(crate) fn is_unused(&self) -> bool {
        self.socket_dropped && self.streams == 0 && self.endpoint.connection_count() == 0
    }
}
