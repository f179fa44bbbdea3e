//! [`UtpSocket`]: one UDP socket, its driver task, dialing and accepting.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::net::{ToSocketAddrs, UdpSocket};
use tokio::sync::Notify;
use tracing::{debug, Instrument};
use utp_proto::{ConnectError, Endpoint, EndpointStats, TransportConfig};

use crate::config::Config;
use crate::driver;
use crate::shared::{Inner, Shared};
use crate::stream::{StreamShared, UtpStream};
use crate::udp;

/// A UDP socket carrying uTP connections, dialed and accepted.
///
/// One background task (spawned on the current tokio runtime) drives all
/// connections of the socket: it receives datagrams, runs the timers and
/// sends what the connections produce. A socket holds any number of
/// connections, accepted and dialed at once (NAT traversal needs both on
/// one port), to IPv4 or IPv6 peers (an IPv6 socket also reaches IPv4 peers
/// unless the system makes it IPv6-only).
///
/// `UtpSocket` is a cheap handle: clones share the socket. The UDP port stays
/// bound while any handle or any [`UtpStream`] of the socket lives, and
/// after that until every connection closed gracefully.
///
/// Datagrams that are not uTP (a DHT sharing the port) are kept in a bounded
/// queue for [`UtpSocket::recv_non_utp`].
#[derive(Clone)]
pub struct UtpSocket {
    handle: Arc<SocketHandle>,
}

/// Owned by every clone of a [`UtpSocket`]; dropping the last one stops
/// listening.
struct SocketHandle {
    shared: Arc<Shared>,
}

impl Drop for SocketHandle {
    fn drop(&mut self) {
        let mut wakers = Vec::new();
        {
            let mut inner = self.shared.inner.lock();
            inner.socket_dropped = true;
            inner.stop_listening(&mut wakers);
            inner.non_utp.clear();
            inner.non_utp_wakers.drain_into(&mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
        self.shared.wake_driver();
    }
}

impl fmt::Debug for UtpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UtpSocket").field("local_addr", &self.handle.shared.local_addr).finish()
    }
}

impl UtpSocket {
    /// Binds a socket to `addr` with the default [`Config`].
    ///
    /// Must be called within a tokio runtime (the socket's driver task is
    /// spawned on it).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<UtpSocket> {
        Self::bind_with_config(addr, Config::default()).await
    }

    /// Binds a socket to `addr` (the first of its addresses that binds).
    pub async fn bind_with_config(
        addr: impl ToSocketAddrs,
        config: Config,
    ) -> io::Result<UtpSocket> {
        let mut last_err = None;
        for addr in tokio::net::lookup_host(addr).await? {
            match udp::bind(addr) {
                Ok(socket) => return Self::from_std(socket, config),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no address to bind the uTP socket to")
        }))
    }

    /// Wraps a bound standard UDP socket. Applies the configured kernel
    /// buffer sizes and makes it non-blocking; with
    /// [`Config::batched_io`] it also turns on UDP GRO and packet-info
    /// reception and sets "don't fragment" (as `quinn-udp` does), which
    /// suits uTP's fixed packet sizes.
    ///
    /// Fails if not called within a tokio runtime.
    pub fn from_std(socket: StdUdpSocket, config: Config) -> io::Result<UtpSocket> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| io::Error::other("a uTP socket must be created within a tokio runtime"))?;
        udp::configure(&socket, &config)?;
        let local_addr = socket.local_addr()?;
        let socket = {
            let _enter = runtime.enter();
            UdpSocket::from_std(socket)?
        };
        let endpoint = Endpoint::new(config.endpoint.clone(), Instant::now());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::new(endpoint)),
            socket,
            notify: Notify::new(),
            local_addr,
            config,
        });
        let span = tracing::debug_span!("utp_socket", local = %local_addr);
        runtime.spawn(driver::run(shared.clone()).instrument(span));
        debug!(local = %local_addr, "uTP socket bound");
        Ok(UtpSocket { handle: Arc::new(SocketHandle { shared }) })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// Whether the socket's background task still runs (it stops with its
    /// tokio runtime).
    pub(crate) fn is_running(&self) -> bool {
        self.shared().inner.lock().stopped.is_none()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.shared().local_addr)
    }

    /// The socket's configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.shared().config
    }

    /// Opens a connection to `addr`.
    ///
    /// Fails with [`io::ErrorKind::TimedOut`] when the peer does not answer
    /// within the configured connect timeout
    /// ([`TransportConfig::connect_timeout`]), and with
    /// [`io::ErrorKind::ConnectionRefused`] when it answers with a RESET (it
    /// is not accepting connections).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        self.connect_inner(addr, &[], None).await
    }

    /// Opens a connection whose stream starts with `data`.
    ///
    /// With the SYN-data extension negotiated (see
    /// [`TransportConfig::extensions`]) the bytes ride on the SYN and reach
    /// the peer one round trip earlier; otherwise they are sent as ordinary
    /// data once connected. Either way the peer reads them first.
    pub async fn connect_with_data(&self, addr: SocketAddr, data: &[u8]) -> io::Result<UtpStream> {
        self.connect_inner(addr, data, None).await
    }

    /// Opens a connection for early data: returns the stream at once, and
    /// the SYN waits for what is written first, so that it rides on the SYN
    /// and reaches the peer one round trip earlier (as
    /// [`UtpSocket::connect_with_data`], without knowing the bytes in
    /// advance).
    ///
    /// The SYN leaves on the stream's first flush or shutdown, once
    /// [`TransportConfig::max_syn_data`] bytes are written, or after
    /// [`TransportConfig::syn_hold`] (10 ms by default) at the latest (a
    /// read does not send it: flush after the first write, or a protocol
    /// where the server speaks first waits out the hold). The
    /// bytes ride on the SYN only with the SYN-data extension offered
    /// ([`TransportConfig::extensions`]); a peer that does not take them
    /// (libutp, libtorrent, librqbit-utp) gets them as ordinary data after
    /// the handshake. Reads wait for the peer as usual; a failed dial
    /// (refused, timed out after [`TransportConfig::connect_timeout`])
    /// surfaces as the error of the next read or write.
    ///
    /// ```no_run
    /// # async fn demo(socket: libp2p_utp::UtpSocket, addr: std::net::SocketAddr) -> std::io::Result<()> {
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// let mut stream = socket.connect_early(addr)?;
    /// stream.write_all(b"GET /\n").await?;
    /// stream.flush().await?; // the SYN leaves now, with the request
    /// let mut answer = Vec::new();
    /// stream.read_to_end(&mut answer).await?;
    /// # Ok(()) }
    /// ```
    pub fn connect_early(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        let shared = self.shared();
        let remote = self.dialable(addr)?;
        let stream = {
            let mut inner = shared.inner.lock();
            inner.check_running()?;
            let config = shared.config.endpoint.transport.clone();
            let hold = config.syn_hold;
            let handle = inner
                .endpoint
                .connect_early(Instant::now(), remote, config.clone(), hold)
                .map_err(|e| connect_error(e, remote))?;
            inner.track(handle);
            StreamShared::new(shared.clone(), &mut inner, handle, remote, config)
        };
        shared.wake_driver();
        debug!(%remote, "dialing with early data");
        Ok(UtpStream::new(stream))
    }

    /// Opens a connection with settings of its own instead of the socket's
    /// [`TransportConfig`].
    pub async fn connect_with_config(
        &self,
        addr: SocketAddr,
        data: &[u8],
        config: Arc<TransportConfig>,
    ) -> io::Result<UtpStream> {
        self.connect_inner(addr, data, Some(config)).await
    }

    async fn connect_inner(
        &self,
        addr: SocketAddr,
        data: &[u8],
        config: Option<Arc<TransportConfig>>,
    ) -> io::Result<UtpStream> {
        let shared = self.shared();
        let remote = self.dialable(addr)?;
        let timeout =
            config.as_ref().map_or(shared.config.connect_timeout(), |c| c.connect_timeout);
        let span = tracing::debug_span!("utp_connect", %remote);
        async move {
            let stream = {
                let mut inner = shared.inner.lock();
                inner.check_running()?;
                let now = Instant::now();
                let config = config.unwrap_or_else(|| shared.config.endpoint.transport.clone());
                let handle = inner
                    .endpoint
                    .connect_with(now, remote, data, config.clone())
                    .map_err(|e| connect_error(e, remote))?;
                inner.track(handle);
                StreamShared::new(shared.clone(), &mut inner, handle, remote, config)
            };
            shared.wake_driver();
            debug!("dialing");
            // One timer: the engine's handshake deadline (`connect_timeout`)
            // ends the dial, so the error is the same whoever looks.
            match poll_fn(|cx| stream.poll_connected(cx)).await {
                Ok(()) => {
                    debug!("connected");
                    Ok(UtpStream::new(stream))
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    debug!("dial timed out");
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "uTP connect to {remote} timed out after {timeout:?}: no answer to \
                             the SYN"
                        ),
                    ))
                }
                Err(e) => {
                    debug!(error = %e, "dial failed");
                    Err(with_context(e, format!("uTP connect to {remote} failed")))
                }
            }
            // On failure `stream` is dropped here: the connection is released.
        }
        .instrument(span)
        .await
    }

    /// Checks that the socket can reach `addr`, mapping an IPv4 address to
    /// IPv6 for an IPv6 socket.
    fn dialable(&self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let local = self.shared().local_addr;
        match (local, addr) {
            (SocketAddr::V4(_), SocketAddr::V6(v6)) => match v6.ip().to_ipv4_mapped() {
                Some(v4) => Ok(SocketAddr::new(v4.into(), v6.port())),
                None => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("cannot reach the IPv6 address {addr} from the IPv4 socket {local}"),
                )),
            },
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                Ok(SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()))
            }
            _ => Ok(addr),
        }
    }

    /// Waits for the next incoming connection.
    ///
    /// The socket completes handshakes on its own, up to
    /// [`Config::accept_backlog`] connections ahead of the application; a
    /// stream returned here may already hold data. Fails once the socket was
    /// closed ([`UtpSocket::close`]).
    pub async fn accept(&self) -> io::Result<UtpStream> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next incoming connection (see [`UtpSocket::accept`]).
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<UtpStream>> {
        let shared = self.shared();
        let mut inner = shared.inner.lock();
        inner.check_running()?;
        if let Some(handle) = inner.accept_queue.pop_front() {
            let remote = inner.endpoint.connection(handle).map(|c| c.remote());
            let Some(remote) = remote else {
                // Cannot happen: queued connections are tracked, not released.
                return Poll::Ready(Err(io::Error::other("accepted connection vanished")));
            };
            let config = shared.config.endpoint.transport.clone();
            let stream = StreamShared::new(shared.clone(), &mut inner, handle, remote, config);
            drop(inner);
            debug!(%remote, local = %shared.local_addr, "accept");
            return Poll::Ready(Ok(UtpStream::new(stream)));
        }
        if !inner.listening {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the uTP socket was closed: it accepts no more connections",
            )));
        }
        inner.accept_wakers.register(cx.waker());
        Poll::Pending
    }

    /// Like [`UtpSocket::poll_accept`], but takes the first waiting
    /// connection whose peer address passes `wanted` and leaves the others
    /// queued, in order.
    ///
    /// Used by the libp2p transport: a hole-punching dial takes the
    /// connection of the peer it punches to, and the listener takes every
    /// other one. A task waiting here is woken by every new connection, so
    /// one that skips connections must be woken again (by whoever changes
    /// what it wants) to pick them up. Keep in step with `poll_accept`.
    #[cfg(feature = "libp2p")]
    pub(crate) fn poll_accept_matching(
        &self,
        cx: &mut Context<'_>,
        mut wanted: impl FnMut(SocketAddr) -> bool,
    ) -> Poll<io::Result<UtpStream>> {
        let shared = self.shared();
        let mut inner = shared.inner.lock();
        inner.check_running()?;
        let found = inner.accept_queue.iter().enumerate().find_map(|(i, &handle)| {
            let remote = inner.endpoint.connection(handle).map(|c| c.remote())?;
            wanted(remote).then_some((i, handle, remote))
        });
        if let Some((i, handle, remote)) = found {
            inner.accept_queue.remove(i);
            let config = shared.config.endpoint.transport.clone();
            let stream = StreamShared::new(shared.clone(), &mut inner, handle, remote, config);
            drop(inner);
            debug!(%remote, local = %shared.local_addr, "accept");
            return Poll::Ready(Ok(UtpStream::new(stream)));
        }
        if !inner.listening {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the uTP socket was closed: it accepts no more connections",
            )));
        }
        inner.accept_wakers.register(cx.waker());
        Poll::Pending
    }

    /// The incoming connections as a [`Stream`](futures_core::Stream), which
    /// ends when the socket is closed.
    #[must_use]
    pub fn incoming(&self) -> IncomingStreams {
        IncomingStreams { socket: self.clone(), done: false }
    }

    /// Stops accepting connections: new SYNs are refused with a RESET (the
    /// dialer sees `ConnectionRefused`), connections accepted but not yet
    /// taken by [`UtpSocket::accept`] are reset, and `accept` fails from now
    /// on. Established connections go on, and dialing from this socket still
    /// works. Affects every clone of the socket.
    pub fn close(&self) {
        let mut wakers = Vec::new();
        {
            let mut inner = self.shared().inner.lock();
            inner.stop_listening(&mut wakers);
        }
        debug!(local = %self.shared().local_addr, "socket closed: accepting no more connections");
        wakers.into_iter().for_each(Waker::wake);
        self.shared().wake_driver();
    }

    /// Number of connections of the socket, accepted and dialed, including
    /// those still closing.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.shared().inner.lock().endpoint.connection_count()
    }

    /// The socket's counters: datagrams dropped and why (malformed, unknown
    /// connection, a forged or stale ack number, a SYN that did not match
    /// its connection), SYN-flood defence (half-open connections evicted
    /// and expired, SYNs refused) and RESETs sent or held back by the rate
    /// limit.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let socket = libp2p_utp::UtpSocket::bind("0.0.0.0:6881").await?;
    /// let stats = socket.endpoint_stats();
    /// println!("{} forged acks dropped", stats.dropped_bad_ack);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn endpoint_stats(&self) -> EndpointStats {
        self.shared().inner.lock().endpoint.stats().clone()
    }

    /// Socket-wide counters in one read: the traffic of every connection
    /// (closed ones included), the connections by state, the drops and
    /// refusals of [`UtpSocket::endpoint_stats`], and the non-uTP datagrams
    /// dropped.
    ///
    /// ```no_run
    /// # async fn f() -> std::io::Result<()> {
    /// let socket = libp2p_utp::UtpSocket::bind("0.0.0.0:6881").await?;
    /// let s = socket.socket_stats();
    /// println!(
    ///     "{} B sent, {} retransmissions, {} open connections, {} SYNs refused",
    ///     s.traffic.bytes_sent, s.traffic.retransmits, s.connections.open,
    ///     s.endpoint.syns_refused_by_app
    /// );
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn socket_stats(&self) -> SocketStats {
        socket_stats_of(self.shared())
    }

    /// The counters of the connections with `remote` on this socket (the
    /// uTP view of a connection that something else owns, such as a libp2p
    /// connection behind noise and yamux; see also
    /// `Transport::connection_stats`).
    #[must_use]
    pub fn stats_for(&self, remote: SocketAddr) -> Vec<utp_proto::Stats> {
        let remote = self.dialable(remote).unwrap_or(remote);
        let inner = self.shared().inner.lock();
        inner.endpoint.connections_to(remote).map(|c| c.stats()).collect()
    }

    /// The socket's state without keeping the socket open (metrics).
    #[cfg(feature = "metrics")]
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(self.shared())
    }

    /// Waits for the next datagram that is not uTP; returns its bytes and
    /// sender.
    ///
    /// Such datagrams are kept in a queue of
    /// [`Config::non_utp_queue_len`] entries; when it is full new ones are
    /// dropped (see [`UtpSocket::non_utp_dropped`]).
    pub async fn recv_non_utp(&self) -> io::Result<(Vec<u8>, SocketAddr)> {
        poll_fn(|cx| self.poll_recv_non_utp(cx)).await
    }

    /// Polls for the next datagram that is not uTP (see
    /// [`UtpSocket::recv_non_utp`]).
    pub fn poll_recv_non_utp(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<(Vec<u8>, SocketAddr)>> {
        let mut inner = self.shared().inner.lock();
        if let Some(d) = inner.non_utp.pop_front() {
            return Poll::Ready(Ok(d));
        }
        inner.check_running()?;
        inner.non_utp_wakers.register(cx.waker());
        Poll::Pending
    }

    /// Datagrams that were not uTP and were dropped because the queue for
    /// [`UtpSocket::recv_non_utp`] was full.
    #[must_use]
    pub fn non_utp_dropped(&self) -> u64 {
        self.shared().inner.lock().non_utp_dropped
    }

    /// Sends a datagram that is not uTP from this socket.
    pub async fn send_non_utp(&self, buf: &[u8], addr: SocketAddr) -> io::Result<usize> {
        let addr = self.dialable(addr)?;
        self.shared().socket.send_to(buf, addr).await
    }
}

/// An error with a sentence of context in front of it; the original stays
/// reachable as the [`source`](std::error::Error::source) (a
/// [`utp_proto::ConnectionError`] for connection failures).
#[derive(Debug)]
struct WithContext {
    context: String,
    source: io::Error,
}

impl fmt::Display for WithContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for WithContext {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.source.get_ref() {
            Some(inner) => Some(inner),
            None => Some(&self.source),
        }
    }
}

/// `e` with `context` in front of its message, of the same kind.
fn with_context(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), WithContext { context, source: e })
}

/// Maps the engine's reasons a dial cannot start.
fn connect_error(e: ConnectError, remote: SocketAddr) -> io::Error {
    let kind = match e {
        ConnectError::InvalidRemote(_) => io::ErrorKind::InvalidInput,
        ConnectError::NoConnectionId => io::ErrorKind::AddrNotAvailable,
        ConnectError::InitialDataTooLarge { .. } => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("cannot dial {remote} over uTP: {e}"))
}

/// The incoming connections of a socket: a
/// [`Stream`](futures_core::Stream) of [`UtpStream`]s that ends when the
/// socket is closed (or, after yielding the error, when its background task
/// stopped). Made by [`UtpSocket::incoming`].
#[derive(Debug, Clone)]
pub struct IncomingStreams {
    socket: UtpSocket,
    done: bool,
}

impl IncomingStreams {
    /// The socket whose connections these are.
    #[must_use]
    pub fn socket(&self) -> &UtpSocket {
        &self.socket
    }
}

impl futures_core::FusedStream for IncomingStreams {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl futures_core::Stream for IncomingStreams {
    type Item = io::Result<UtpStream>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.socket.poll_accept(cx) {
            Poll::Ready(Ok(s)) => Poll::Ready(Some(Ok(s))),
            Poll::Ready(Err(e)) => {
                // Closed: the end of the stream; anything else: the error,
                // then the end (accepting cannot recover).
                self.done = true;
                if e.kind() == io::ErrorKind::NotConnected {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(e)))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

pub(crate) fn socket_stats_of(shared: &Shared) -> SocketStats {
    let inner = shared.inner.lock();
    SocketStats {
        traffic: inner.endpoint.traffic(),
        connections: inner.endpoint.connection_counts(),
        endpoint: inner.endpoint.stats().clone(),
        non_utp_dropped: inner.non_utp_dropped,
        kernel_receive_drops: crate::udp::kernel_drops(&shared.socket).map_or(0, u64::from),
    }
}

/// Socket-wide counters (see [`UtpSocket::socket_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStats {
    /// Packets, bytes, retransmissions and timeouts of every connection,
    /// closed ones included.
    pub traffic: utp_proto::TrafficTotals,
    /// The connections held now, by state.
    pub connections: utp_proto::ConnectionCounts,
    /// Datagrams dropped by reason, SYNs refused or ignored, RESETs sent.
    pub endpoint: EndpointStats,
    /// Datagrams that were not uTP, dropped because their queue was full
    /// (or nobody reads them).
    pub non_utp_dropped: u64,
    /// Datagrams the kernel dropped before we could read them, almost all
    /// because the socket's receive buffer was full: the socket's task did
    /// not keep up with the traffic (many connections receiving at once on
    /// a fast path). Raise [`Config::socket_recv_buffer_size`](crate::Config) (and
    /// the system's `net.core.rmem_max`, which caps it). Linux only (0
    /// elsewhere); it wraps at 2^32.
    pub kernel_receive_drops: u64,
}
