//! [`Transport`]: uTP as a libp2p transport, for
//! `/ip4|ip6/<ip>/udp/<port>/utp` addresses.
//!
//! The transport yields raw [`UtpStream`]s (reliable, ordered byte streams);
//! a libp2p application upgrades them with noise and yamux exactly like TCP
//! streams, and stacks the transport with TCP and QUIC in one Swarm:
//!
//! ```no_run
//! use libp2p::{core::upgrade::Version, noise, ping, yamux, Transport as _};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let swarm = libp2p::SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_other_transport(|key| {
//!         Ok(libp2p_utp::Transport::default()
//!             // V1Lazy: noise starts without waiting for multistream-select's
//!             // answer, one round trip less (as SwarmBuilder's TCP does).
//!             .upgrade(Version::V1Lazy)
//!             .authenticate(noise::Config::new(key)?)
//!             .multiplex(yamux::Config::default()))
//!     })?
//!     .with_behaviour(|_| ping::Behaviour::default())?
//!     .build();
//! # drop(swarm);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - Each listener is a [`UtpSocket`] of its own, with its own background
//!   task: handshakes, retransmissions and timers run there, whether or not
//!   the Swarm polls the transport. [`Transport::poll`](libp2p_core::Transport::poll)
//!   only hands out connections the socket already accepted, and address
//!   changes.
//! - Listening on `0.0.0.0` or `::` announces one address per interface of
//!   that family and follows interface changes (`if-watch`); the wildcard
//!   itself is never announced. IPv6 sockets are IPv6-only, so an IPv4 and
//!   an IPv6 listener share a port.
//! - Dialing with [`PortUse::Reuse`] (libp2p's default) sends from a
//!   listening socket of the same address family, so the peer sees the
//!   advertised port and NAT mappings match it; without a usable listener,
//!   and with [`PortUse::New`], dials share one socket per address family
//!   (bound on the first such dial, accepting nothing), as libp2p-quic
//!   does: 200 dials cost one socket, and peers see one NAT mapping.
//! - A dial with `role = Listener` (DCUtR hole punching) does not dial:
//!   uTP has no simultaneous open. It sends punch datagrams from a listening
//!   socket to the peer and returns the peer's incoming connection (the peer
//!   dials normally); see [`Config::punch_interval`].
//! - Dial futures do nothing until polled; dropping one abandons the dial
//!   (its SYN is not sent again). Dials fail after the connect timeout
//!   ([`Config::connect_timeout`]).
//! - With the SYN-data extension offered (`ExtFlags::SYN_DATA` in the
//!   socket's `TransportConfig::extensions`, as `utp_ext::enable` sets it)
//!   a dial is an early-data dial ([`UtpSocket::connect_early`]): the
//!   stream is handed to the upgrade at once and the upgrade's first
//!   flight rides on the SYN, which saves a round trip with a listener that
//!   takes it. A refused or timed-out dial then fails the upgrade (the
//!   first read or write) instead of the dial future.
//! - Needs a tokio runtime: `listen_on` must be called within one, and dial
//!   futures must be polled on one (`SwarmBuilder::with_tokio`).
//!
//! [`PortUse::Reuse`]: libp2p_core::transport::PortUse::Reuse
//! [`PortUse::New`]: libp2p_core::transport::PortUse::New

mod addr;
mod hole_punch;
mod listener;

use std::future::Ready;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::SelectAll;
use futures::{FutureExt, StreamExt};
use libp2p_core::multiaddr::Multiaddr;
use libp2p_core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p_core::Endpoint;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use self::hole_punch::HolePunches;
use self::listener::Listener;
use crate::socket::UtpSocket;
use crate::stream::UtpStream;

/// Settings of a [`Transport`].
///
/// [`Config::default`] differs from the plain socket defaults where libp2p
/// needs it: Nagle's algorithm is off (a muxer's small frames, a ping or a
/// request, go out at once instead of waiting for the data in flight to be
/// acknowledged), the connect timeout is 8 s (under the 10 s that
/// `SwarmBuilder` gives a whole dial and upgrade, so that a peer that does
/// not answer fails with our `TimedOut` error, which names the address,
/// rather than libp2p's generic timeout), and datagrams that are not uTP
/// are dropped (nothing reads them).
///
/// ```
/// use std::time::Duration;
/// use libp2p_utp::transport::Config;
///
/// let mut config = Config::default();
/// assert!(!config.socket.transport().nagle);
/// config.socket.transport_mut().connect_timeout = Duration::from_secs(5);
/// assert_eq!(config.connect_timeout(), Duration::from_secs(5));
/// let transport = libp2p_utp::Transport::new(config);
/// # drop(transport);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Settings of every socket the transport binds, listening or dialing,
    /// and of every connection (through
    /// [`Config::transport`](crate::Config::transport)).
    pub socket: crate::Config,
    /// How often a hole-punching dial (`role = Listener`) sends a punch
    /// datagram to the peer while it waits for the peer's connection.
    /// Default 100 ms.
    pub punch_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let mut socket = crate::Config { non_utp_queue_len: 0, ..crate::Config::default() };
        let transport = socket.transport_mut();
        transport.nagle = false;
        transport.connect_timeout = Duration::from_secs(8);
        Config { socket, punch_interval: Duration::from_millis(100) }
    }
}

impl Config {
    /// The default settings (see [`Config`]).
    ///
    /// ```
    /// let config = libp2p_utp::transport::Config::new();
    /// assert_eq!(config.punch_interval.as_millis(), 100);
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Config::default()
    }

    /// How long a dial may take: the uTP handshake, or a hole punch waiting
    /// for the peer's connection. Set it with
    /// `config.socket.transport_mut().connect_timeout`.
    ///
    /// ```
    /// let config = libp2p_utp::transport::Config::default();
    /// assert_eq!(config.connect_timeout().as_secs(), 8);
    /// ```
    #[must_use]
    pub fn connect_timeout(&self) -> Duration {
        self.socket.connect_timeout()
    }

    /// Sets how long a dial may take (see [`Config::connect_timeout`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use libp2p_utp::{transport::Config, ExtFlags};
    ///
    /// let config = Config::default()
    ///     .with_connect_timeout(Duration::from_secs(5))
    ///     .with_extensions(ExtFlags::SYN_DATA); // early-data dials
    /// assert_eq!(config.connect_timeout(), Duration::from_secs(5));
    /// let transport = libp2p_utp::Transport::new(config);
    /// # drop(transport);
    /// ```
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.socket = self.socket.with_connect_timeout(timeout);
        self
    }

    /// Adds `extensions` to those offered (see
    /// [`crate::Config::with_extensions`]).
    #[must_use]
    pub fn with_extensions(mut self, extensions: crate::ExtFlags) -> Self {
        self.socket = self.socket.with_extensions(extensions);
        self
    }

    /// Decides which dialers may connect to the listeners (see
    /// [`AcceptFilter`](crate::AcceptFilter)).
    #[must_use]
    pub fn with_accept_filter(mut self, filter: crate::AcceptFilter) -> Self {
        self.socket.accept_filter = Some(filter);
        self
    }
}

/// A transport configuration from a socket configuration, taken as it is
/// (the libp2p defaults of [`Config::default`], Nagle off and an 8 s
/// connect timeout, are not applied), so that
/// `Transport::new(libp2p_utp::Config::default())` works too.
impl From<crate::Config> for Config {
    fn from(socket: crate::Config) -> Self {
        Config { socket, ..Config::default() }
    }
}

/// Why a [`Transport`] operation failed.
///
/// ```
/// use std::io;
/// use libp2p_utp::transport::Error;
///
/// let e = Error::from(io::Error::from(io::ErrorKind::TimedOut));
/// assert!(matches!(e, Error::Io(ref e) if e.kind() == io::ErrorKind::TimedOut));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed: binding a socket, a dial (the kind is
    /// `TimedOut` when the peer did not answer within the connect timeout,
    /// `ConnectionRefused` when it does not accept connections), or the
    /// interface watcher of a wildcard listener.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A dial with `role = Listener` (hole punching) needs a listener that
    /// can reach the peer, to punch from and to accept its connection on.
    #[error("no uTP listener to hole-punch to {0} from (listen on its address family first)")]
    NoListenerForHolePunch(SocketAddr),
}

/// uTP as a [`libp2p_core::Transport`]: listens on and dials
/// `/ip4|ip6/<ip>/udp/<port>/utp` addresses (an optional trailing
/// `/p2p/<peer id>` is accepted and ignored), and yields [`UtpStream`]s.
///
/// Every other address (TCP, QUIC, a missing port; port 0 or an unspecified
/// IP on dial) is [`TransportError::MultiaddrNotSupported`], so the
/// transport stacks with others in a Swarm. See the [module
/// documentation](self) for the Swarm setup and how listening, port reuse
/// and hole punching work.
///
/// ```
/// use std::future::poll_fn;
/// use std::pin::Pin;
///
/// use futures::{AsyncReadExt, AsyncWriteExt};
/// use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
/// use libp2p::core::{Endpoint, Transport as _};
/// use libp2p_utp::Transport;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut server = Transport::default();
/// server.listen_on(ListenerId::next(), "/ip4/127.0.0.1/udp/0/utp".parse()?)?;
/// let TransportEvent::NewAddress { listen_addr, .. } =
///     poll_fn(|cx| Pin::new(&mut server).poll(cx)).await
/// else {
///     unreachable!("a listener on one IP first announces it")
/// };
///
/// let mut client = Transport::default();
/// let opts = DialOpts { role: Endpoint::Dialer, port_use: PortUse::Reuse };
/// let mut stream = client.dial(listen_addr, opts)?.await?;
/// stream.write_all(b"hello").await?;
///
/// let TransportEvent::Incoming { upgrade, .. } =
///     poll_fn(|cx| Pin::new(&mut server).poll(cx)).await
/// else {
///     unreachable!()
/// };
/// let mut accepted = upgrade.await?;
/// let mut buf = [0; 5];
/// accepted.read_exact(&mut buf).await?;
/// assert_eq!(&buf, b"hello");
/// # Ok(())
/// # }
/// ```
pub struct Transport {
    config: Config,
    listeners: SelectAll<Listener>,
    punches: Arc<HolePunches>,
    /// The sockets dials use when no listener's socket serves: one per
    /// address family ([IPv4, IPv6]), bound on the first such dial (so
    /// peers see one NAT mapping, and 200 dials cost one socket).
    dialers: Arc<std::sync::Mutex<[Option<UtpSocket>; 2]>>,
    /// The task polling the transport, woken when a listener is added.
    waker: Option<Waker>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let listeners: Vec<_> = self.listeners.iter().map(|l| (l.id, l.bound)).collect();
        f.debug_struct("Transport").field("listeners", &listeners).finish_non_exhaustive()
    }
}

impl Default for Transport {
    /// A transport with the default [`Config`].
    fn default() -> Self {
        Transport::new(Config::default())
    }
}

impl Transport {
    /// A transport with `config`. Binds nothing until asked to listen or
    /// dial.
    ///
    /// ```
    /// use libp2p_utp::transport::{Config, Transport};
    ///
    /// let mut config = Config::default();
    /// config.socket.accept_backlog = 64;
    /// let transport = Transport::new(config);
    /// # drop(transport);
    /// // A socket configuration works too (taken as it is).
    /// let transport = Transport::new(libp2p_utp::Config::default());
    /// # drop(transport);
    /// ```
    #[must_use]
    pub fn new(config: impl Into<Config>) -> Self {
        let config = config.into();
        Transport {
            config,
            listeners: SelectAll::new(),
            punches: Arc::new(HolePunches::default()),
            dialers: Arc::default(),
            waker: None,
        }
    }

    /// The counters of every socket the transport uses, listening and
    /// dialing: (local address, [`SocketStats`](crate::SocketStats)). The
    /// uTP view of a libp2p connection, which noise and yamux hide from
    /// the stream, is here (and per socket with the `metrics` feature).
    ///
    /// ```
    /// let transport = libp2p_utp::Transport::default();
    /// assert!(transport.socket_stats().is_empty(), "nothing bound yet");
    /// ```
    #[must_use]
    pub fn socket_stats(&self) -> Vec<(SocketAddr, crate::SocketStats)> {
        self.sockets()
            .iter()
            .filter_map(|s| Some((s.local_addr().ok()?, s.socket_stats())))
            .collect()
    }

    /// The uTP counters of the connections with the peer at `remote` (a
    /// `/ip4|ip6/../udp/../utp` address: a libp2p connection's
    /// `send_back_addr` or dialed `address`), on any socket of the
    /// transport: RTT, retransmissions, windows, bytes, which noise and
    /// yamux hide from the libp2p connection.
    ///
    /// ```
    /// let transport = libp2p_utp::Transport::default();
    /// let peer = "/ip4/127.0.0.1/udp/4001/utp".parse().unwrap();
    /// assert!(transport.connection_stats(&peer).is_empty());
    /// ```
    #[must_use]
    pub fn connection_stats(&self, remote: &Multiaddr) -> Vec<crate::Stats> {
        let Some(remote) = addr::to_socket_addr(remote) else { return Vec::new() };
        self.sockets().iter().flat_map(|s| s.stats_for(remote)).collect()
    }

    /// Every socket the transport uses: the listeners', then the dialers'.
    fn sockets(&self) -> Vec<UtpSocket> {
        let mut sockets: Vec<UtpSocket> = self.listeners.iter().map(|l| l.socket.clone()).collect();
        let dialers = self.dialers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sockets.extend(dialers.iter().flatten().cloned());
        sockets
    }

    /// A listener that can send to `remote`, if any; the same one for the
    /// same remote while the listeners do not change.
    fn listener_for(&self, remote: SocketAddr) -> Option<&Listener> {
        let mut eligible: Vec<&Listener> =
            self.listeners.iter().filter(|l| l.can_reach(remote)).collect();
        // Prefer a socket bound to a specific address (a loopback socket
        // for a loopback peer) over a wildcard one; then the lowest port.
        eligible.sort_by_key(|l| (l.bound.ip().is_unspecified(), l.bound.port()));
        eligible.into_iter().next()
    }

    /// A socket of `remote`'s family for one dial; it accepts nothing.
    /// The dialer socket of `remote`'s address family, bound (accepting
    /// nothing) on first use, and again if its runtime went away.
    fn dialer_for(
        dialers: &std::sync::Mutex<[Option<UtpSocket>; 2]>,
        remote: SocketAddr,
        config: crate::Config,
    ) -> io::Result<UtpSocket> {
        let mut dialers = dialers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = &mut dialers[usize::from(remote.is_ipv6())];
        if let Some(socket) = slot.as_ref().filter(|s| s.is_running()) {
            return Ok(socket.clone());
        }
        let local = if remote.is_ipv4() {
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
        } else {
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0)
        };
        let socket = UtpSocket::from_std(bind(local)?, config)?;
        socket.close();
        debug!(local = ?socket.local_addr().ok(), "dialer socket bound");
        *slot = Some(socket.clone());
        Ok(socket)
    }
}

/// A UDP socket bound to `addr`; IPv6 sockets are IPv6-only, so that IPv4
/// and IPv6 listeners can share a port.
fn bind(addr: SocketAddr) -> io::Result<StdUdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

impl libp2p_core::Transport for Transport {
    type Output = UtpStream;
    type Error = Error;
    type ListenerUpgrade = Ready<Result<UtpStream, Error>>;
    type Dial = BoxFuture<'static, Result<UtpStream, Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let socket_addr = addr::to_socket_addr(&addr)
            .ok_or_else(|| TransportError::MultiaddrNotSupported(addr.clone()))?;
        let socket = bind(socket_addr)
            .and_then(|s| UtpSocket::from_std(s, self.config.socket.clone()))
            .map_err(|e| TransportError::Other(Error::Io(e)))?;
        let listener = Listener::new(id, socket, self.punches.clone())
            .map_err(|e| TransportError::Other(Error::Io(e)))?;
        debug!(%addr, listener = %id, "listen_on");
        self.listeners.push(listener);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(listener) = self.listeners.iter_mut().find(|l| l.id == id && !l.closed) else {
            return false;
        };
        listener.close(Ok(()));
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let remote = match addr::to_socket_addr(&addr) {
            Some(a) if a.port() != 0 && !a.ip().is_unspecified() => a,
            _ => return Err(TransportError::MultiaddrNotSupported(addr)),
        };
        let listener = self.listener_for(remote);
        if opts.role == Endpoint::Listener {
            let socket = listener
                .ok_or(TransportError::Other(Error::NoListenerForHolePunch(remote)))?
                .socket
                .clone();
            debug!(%remote, local = ?socket.local_addr().ok(), "dial as listener: hole punching");
            // Reserved now, not when first polled, so that the listener does
            // not take a connection the peer opens before that.
            let registration = self.punches.register(remote);
            let interval = self.config.punch_interval;
            let timeout = self.config.connect_timeout();
            return Ok(async move {
                hole_punch::hole_punch(socket, remote, registration, interval, timeout)
                    .await
                    .map_err(Error::Io)
            }
            .boxed());
        }
        let reused = match (opts.port_use, listener) {
            (PortUse::Reuse, Some(l)) => Some(l.socket.clone()),
            _ => None,
        };
        debug!(%remote, reuse = reused.is_some(), "dial");
        let config = self.config.socket.clone();
        // With SYN data offered the dial hands the stream over at once: the
        // upgrade's first flight (multistream-select and noise's first
        // message) rides on the SYN, a round trip earlier.
        let early = config.transport().extensions.contains(crate::ExtFlags::SYN_DATA);
        let dialers = self.dialers.clone();
        Ok(async move {
            let socket = match reused {
                Some(socket) => socket,
                None => Transport::dialer_for(&dialers, remote, config)?,
            };
            if early {
                Ok(socket.connect_early(remote)?)
            } else {
                Ok(socket.connect(remote).await?)
            }
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        self.punches.set_transport_waker(cx.waker());
        match self.listeners.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(event),
            Poll::Ready(None) | Poll::Pending => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
