//! Settings of a [`UtpSocket`](crate::UtpSocket): the engine's and the
//! runtime's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use utp_proto::{EndpointConfig, TransportConfig};

/// Default size of the kernel's UDP receive and send buffers (4 MiB).
///
/// libutp-style bursts overflow the kernel default (208 KiB on Linux) even on
/// loopback, and a uTP connection then crawls on retransmissions.
pub const DEFAULT_SOCKET_BUFFER_SIZE: usize = 4 << 20;

/// What an [`AcceptFilter`] decides for an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptDecision {
    /// Accept it (it still needs room in the accept queue).
    Accept,
    /// Refuse it with a RESET: the dialer sees `ConnectionRefused` at once.
    Refuse,
    /// Drop its SYN unanswered: the dialer times out and learns nothing
    /// (what a BitTorrent blocklist wants).
    Ignore,
}

/// Decides, from the dialer's address alone, whether a SYN may become a
/// connection. It runs on the socket's driver for every new SYN before any
/// connection state is allocated (a blocklist, libp2p connection gating by
/// address): keep it cheap and non-blocking. Its decisions are counted in
/// [`EndpointStats::syns_refused_by_app`](utp_proto::EndpointStats) and
/// `syns_ignored_by_app`.
///
/// ```
/// use std::net::{IpAddr, Ipv4Addr};
/// use libp2p_utp::{AcceptDecision, AcceptFilter, Config};
///
/// let blocked: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();
/// let mut config = Config::default();
/// config.accept_filter = Some(AcceptFilter::new(move |remote| {
///     if remote.ip() == blocked {
///         AcceptDecision::Ignore
///     } else {
///         AcceptDecision::Accept
///     }
/// }));
/// ```
#[derive(Clone)]
pub struct AcceptFilter(Arc<dyn Fn(SocketAddr) -> AcceptDecision + Send + Sync>);

impl AcceptFilter {
    /// A filter that calls `f` with the dialer's address.
    pub fn new(f: impl Fn(SocketAddr) -> AcceptDecision + Send + Sync + 'static) -> Self {
        AcceptFilter(Arc::new(f))
    }

    /// The decision for a SYN from `remote`.
    #[must_use]
    pub fn decide(&self, remote: SocketAddr) -> AcceptDecision {
        (self.0)(remote)
    }
}

impl std::fmt::Debug for AcceptFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptFilter(..)")
    }
}

/// Settings of a [`UtpSocket`](crate::UtpSocket).
///
/// `endpoint` holds every setting of the sans-IO engine
/// ([`EndpointConfig`], and through it the per-connection
/// [`TransportConfig`]); the other fields belong to the runtime.
///
/// ```
/// use std::time::Duration;
/// use libp2p_utp::Config;
///
/// let mut config = Config::default();
/// config.accept_backlog = 64;
/// config.transport_mut().connect_timeout = Duration::from_secs(5);
/// assert_eq!(config.transport().connect_timeout, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The engine's settings: limits, RESET rate, seed, and the
    /// [`TransportConfig`] shared by every connection (see
    /// [`Config::transport_mut`]).
    pub endpoint: EndpointConfig,
    /// Most accepted connections waiting for [`UtpSocket::accept`]. A SYN that arrives while the queue is full
    /// is refused with a RESET, so the dialer sees `ConnectionRefused` at
    /// once instead of timing out. Default 1024.
    ///
    /// [`UtpSocket::accept`]: crate::UtpSocket::accept
    pub accept_backlog: usize,
    /// Kernel receive buffer of the UDP socket (`SO_RCVBUF`). `None` leaves
    /// the operating system's default. Default 4 MiB; Linux caps it at
    /// `net.core.rmem_max` (a warning is logged when it does).
    pub socket_recv_buffer_size: Option<usize>,
    /// Kernel send buffer of the UDP socket (`SO_SNDBUF`). `None` leaves the
    /// operating system's default. Default 4 MiB; Linux caps it at
    /// `net.core.wmem_max`.
    pub socket_send_buffer_size: Option<usize>,
    /// Most datagrams that are not uTP held for
    /// [`UtpSocket::recv_non_utp`](crate::UtpSocket::recv_non_utp). When the
    /// queue is full, new ones are dropped and counted
    /// ([`UtpSocket::non_utp_dropped`](crate::UtpSocket::non_utp_dropped)).
    /// 0 drops every one of them. Default 256.
    pub non_utp_queue_len: usize,
    /// Move datagrams in batches where the system supports it: `recvmmsg`
    /// with UDP GRO to receive, UDP GSO to send a run of datagrams to one
    /// peer in one system call (Linux), through the `quinn-udp` crate. Off:
    /// one system call per datagram. Default on.
    pub batched_io: bool,
    /// Decides which dialers may connect, before any state is allocated
    /// (see [`AcceptFilter`]). Default `None`: everyone.
    pub accept_filter: Option<AcceptFilter>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            endpoint: EndpointConfig::default(),
            accept_backlog: 1024,
            socket_recv_buffer_size: Some(DEFAULT_SOCKET_BUFFER_SIZE),
            socket_send_buffer_size: Some(DEFAULT_SOCKET_BUFFER_SIZE),
            non_utp_queue_len: 256,
            batched_io: true,
            accept_filter: None,
        }
    }
}

impl Config {
    /// A configuration whose engine settings are `endpoint`, with the
    /// runtime's defaults.
    #[must_use]
    pub fn with_endpoint(endpoint: EndpointConfig) -> Self {
        Config { endpoint, ..Config::default() }
    }

    /// The settings of every connection.
    #[must_use]
    pub fn transport(&self) -> &TransportConfig {
        &self.endpoint.transport
    }

    /// The settings of every connection, to change (copied on write if
    /// shared).
    pub fn transport_mut(&mut self) -> &mut TransportConfig {
        Arc::make_mut(&mut self.endpoint.transport)
    }

    /// Sets how long a dial may take ([`TransportConfig::connect_timeout`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use libp2p_utp::{Config, ExtFlags};
    ///
    /// let config = Config::default()
    ///     .with_connect_timeout(Duration::from_secs(5))
    ///     .with_extensions(ExtFlags::SYN_DATA);
    /// assert!(config.transport().extensions.contains(ExtFlags::SYN_DATA));
    /// assert!(config.transport().extensions.contains(ExtFlags::LARGE_PACKETS));
    /// ```
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.transport_mut().connect_timeout = timeout;
        self
    }

    /// Offers `extensions` as well as those already offered (the default
    /// `LARGE_PACKETS` stays): [`ExtFlags::SYN_DATA`](crate::ExtFlags) for
    /// data on the SYN and early-data dials, `METADATA` for framed
    /// messages.
    #[must_use]
    pub fn with_extensions(mut self, extensions: crate::ExtFlags) -> Self {
        let t = self.transport_mut();
        t.extensions = crate::ExtFlags(t.extensions.0 | extensions.0);
        self
    }

    /// Decides which dialers may connect (see [`AcceptFilter`]).
    #[must_use]
    pub fn with_accept_filter(mut self, filter: AcceptFilter) -> Self {
        self.accept_filter = Some(filter);
        self
    }

    /// How long [`UtpSocket::connect`](crate::UtpSocket::connect) may take.
    #[must_use]
    pub fn connect_timeout(&self) -> Duration {
        self.transport().connect_timeout
    }

    /// How long [`UtpStream::close`](crate::UtpStream::close) may take.
    #[must_use]
    pub fn close_timeout(&self) -> Duration {
        self.transport().close_timeout
    }
}
