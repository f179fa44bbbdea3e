//! The driver task: one per socket. It owns the receive path and the timers.
//!
//! Each turn of its loop:
//! 1. receives up to a batch of datagrams without waiting;
//! 2. under one lock: feeds them to the engine, runs expired timers, takes a
//!    batch of datagrams to send and the events (collecting the wakers to
//!    wake);
//! 3. without the lock: wakes the tasks and sends the batch (a datagram the
//!    socket cannot take now is kept for when it becomes writable);
//! 4. if nothing is left to do at once, sleeps until the socket is readable
//!    (or writable, when a send was refused), a stream notifies it, or the
//!    engine's next timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use tokio::io::Interest;
use tokio::time::{sleep_until, Instant as TokioInstant};
use tracing::{debug, trace};
use utp_proto::DatagramEvent;

use crate::config::AcceptDecision;
use crate::icmp;
use crate::shared::{Inner, Shared, Stopped};
use crate::udp::{Io, Queued, RecvBatch, SendBatch};

/// Runs the driver of `shared` until nothing uses the socket any more.
pub(crate) async fn run(shared: Arc<Shared>) {
    let guard = StopGuard { shared: shared.clone() };
    Driver::new(shared).run().await;
    drop(guard);
}

/// Marks the socket stopped however the driver ends (returned, cancelled by
/// a runtime shutdown, or panicked), so that no stream waits forever.
struct StopGuard {
    shared: Arc<Shared>,
}

impl Drop for StopGuard {
    fn drop(&mut self) {
        // What streams already let go of (their FINs and RESETs) leaves
        // now: the driver will not send it any more.
        let flushed = self.shared.flush_now();
        let mut wakers = Vec::new();
        {
            let mut inner = self.shared.inner.lock();
            let stopped = Stopped {
                kind: io::ErrorKind::BrokenPipe,
                reason: "the uTP socket's background task stopped (was its tokio runtime shut \
                         down?)"
                    .into(),
            };
            inner.stop(stopped, &mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
        debug!(local = %self.shared.local_addr, flushed, "driver stopped");
    }
}

struct Driver {
    shared: Arc<Shared>,
    io: Io,
    rx: RecvBatch,
    tx: SendBatch,
    wakers: Vec<Waker>,
    /// The kernel queues ICMP errors for this socket (see `icmp.rs`).
    icmp_errors: bool,
    /// Port unreachables read from the error queue: (destination, quote,
    /// its length); no allocation per error.
    unreachable: Vec<(SocketAddr, [u8; icmp::QUOTE], usize)>,
}

impl Driver {
    fn new(shared: Arc<Shared>) -> Self {
        let transport = shared.config.transport();
        // Room for the largest packet path MTU discovery may reach.
        let mut slot = transport.initial_packet_size_v4.max(transport.initial_packet_size_v6);
        if transport.mtu_probing {
            slot = slot.max(transport.max_packet_size);
        }
        let slot = slot.clamp(1500, 65_535);
        let io = Io::new(&shared.socket, shared.config.batched_io);
        let rx = RecvBatch::new();
        let icmp_errors = match icmp::enable(&shared.socket) {
            Ok(()) => cfg!(target_os = "linux"),
            Err(e) => {
                debug!(error = %e, "ICMP errors unavailable: dials to closed ports time out");
                false
            }
        };
        Driver {
            shared,
            io,
            rx,
            tx: SendBatch::new(slot),
            wakers: Vec::new(),
            icmp_errors,
            unreachable: Vec::new(),
        }
    }

    async fn run(&mut self) {
        let shared = self.shared.clone();
        let socket = &shared.socket;
        let sleep = sleep_until(TokioInstant::now());
        tokio::pin!(sleep);
        let mut tx_blocked = false;
        loop {
            let now = Instant::now();
            let rx_more = self.rx.recv(socket, &self.io);
            let icmp_more = self.icmp_errors && {
                let unreachable = &mut self.unreachable;
                let keep = |to, quote: &[u8]| {
                    let mut kept = [0u8; icmp::QUOTE];
                    let len = quote.len().min(icmp::QUOTE);
                    kept[..len].copy_from_slice(&quote[..len]);
                    unreachable.push((to, kept, len));
                };
                match icmp::drain(socket, keep) {
                    Ok(more) => more,
                    Err(e) => {
                        // Its readiness would stay set: stop reading it.
                        debug!(error = %e, "reading the error queue failed: ICMP errors ignored");
                        self.icmp_errors = false;
                        false
                    }
                }
            };
            let mut tx_more = false;
            let (timeout, unused) = {
                let mut guard = shared.inner.lock();
                let inner = &mut *guard;
                self.handle_datagrams(inner, now);
                for (to, quote, len) in self.unreachable.drain(..) {
                    // (A dual-stack socket dials IPv4 peers by their mapped
                    // address, and the kernel reports their errors so.)
                    inner.endpoint.handle_port_unreachable(now, to, &quote[..len]);
                }
                for (to, size) in self.tx.take_too_big() {
                    inner.endpoint.handle_packet_too_big(now, to, size);
                }
                if inner.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                    inner.endpoint.handle_timeout(now);
                }
                if self.tx.is_empty() {
                    let endpoint = &mut inner.endpoint;
                    let reply_from = &inner.reply_from;
                    tx_more = self.tx.fill(self.io.max_segments(), |buf, segments, max_run| {
                        endpoint.poll_transmit_run(now, buf, segments, max_run).map(|t| {
                            // (Empty unless a wildcard socket accepted: no
                            // hashing per datagram then.)
                            let src = if reply_from.is_empty() {
                                None
                            } else {
                                reply_from.get(&t.destination).map(|&(ip, _)| ip)
                            };
                            Queued {
                                destination: t.destination,
                                len: t.size,
                                segment_size: t.segment_size,
                                dont_fragment: t.dont_fragment,
                                src,
                            }
                        })
                    });
                }
                while let Some((handle, event)) = inner.endpoint.poll_event() {
                    trace!(?handle, ?event, "event");
                    inner.on_event(handle, event, &mut self.wakers);
                }
                (inner.endpoint.poll_timeout(), inner.is_unused())
            };
            self.wakers.drain(..).for_each(Waker::wake);
            if !self.tx.is_empty() {
                tx_blocked = !self.tx.send(socket, &self.io);
            }
            if unused && self.tx.is_empty() {
                debug!(local = %shared.local_addr, "socket unused: driver exits");
                return;
            }
            if rx_more || icmp_more || (tx_more && !tx_blocked) {
                // More is waiting: go on, but let other tasks run from time
                // to time.
                tokio::task::consume_budget().await;
                continue;
            }
            if let Some(t) = timeout {
                sleep.as_mut().reset(TokioInstant::from_std(t));
            }
            tokio::select! {
                biased;
                _ = shared.notify.notified() => {}
                r = socket.readable() => {
                    if let Err(e) = r {
                        debug!(error = %e, "waiting for the socket failed");
                    }
                }
                r = socket.ready(Interest::ERROR), if self.icmp_errors => {
                    if let Err(e) = r {
                        debug!(error = %e, "waiting for the socket failed");
                    }
                }
                r = socket.writable(), if tx_blocked => {
                    tx_blocked = false;
                    if let Err(e) = r {
                        debug!(error = %e, "waiting for the socket failed");
                    }
                }
                () = &mut sleep, if timeout.is_some() => {}
            }
        }
    }

    /// Feeds the received batch to the engine.
    fn handle_datagrams(&mut self, inner: &mut Inner, now: Instant) {
        let config = &self.shared.config;
        for (from, dst, data) in self.rx.iter() {
            match inner.endpoint.handle_datagram(now, from, data) {
                DatagramEvent::Connection(handle) => {
                    inner.on_datagram(handle, config.accept_backlog, &mut self.wakers);
                }
                DatagramEvent::Dropped => {}
                DatagramEvent::Incoming(incoming) => {
                    if !inner.listening || inner.accept_queue.len() >= config.accept_backlog {
                        debug!(remote = %from, listening = inner.listening, "refusing connection");
                        inner.endpoint.refuse(incoming);
                        continue;
                    }
                    match config.accept_filter.as_ref().map(|f| f.decide(from)) {
                        None | Some(AcceptDecision::Accept) => {}
                        Some(AcceptDecision::Refuse) => {
                            debug!(remote = %from, "accept filter: refused");
                            inner.endpoint.refuse(incoming);
                            continue;
                        }
                        Some(AcceptDecision::Ignore) => {
                            debug!(remote = %from, "accept filter: ignored");
                            inner.endpoint.ignore(incoming);
                            continue;
                        }
                    }
                    match inner.endpoint.accept(now, incoming) {
                        Ok(handle) => {
                            debug!(remote = %from, ?handle, "accepted SYN");
                            if let Some(ip) = dst.filter(|_| shared_is_wildcard(&self.shared)) {
                                inner.local_ips.insert(handle, ip);
                                inner.reply_from.entry(from).or_insert((ip, 0)).1 += 1;
                            }
                            inner.on_accepted(handle, config.accept_backlog, &mut self.wakers);
                        }
                        Err(e) => debug!(remote = %from, error = %e, "could not accept"),
                    }
                }
                DatagramEvent::NotUtp => {
                    if inner.socket_dropped || inner.non_utp.len() >= config.non_utp_queue_len {
                        inner.non_utp_dropped += 1;
                    } else {
                        inner.non_utp.push_back((data.to_vec(), from));
                        inner.non_utp_wakers.drain_into(&mut self.wakers);
                    }
                }
            }
        }
    }
}

/// A socket bound to the unspecified address: its connections' local
/// address is the destination their peer used.
fn shared_is_wildcard(shared: &Shared) -> bool {
    shared.local_addr.ip().is_unspecified()
}
