//! Settings of a [`UtpSocket`](crate::UtpSocket): the engine's and the
//! runtime's own.

use std::sync::Arc;
use std::time::Duration;

use utp_proto::{EndpointConfig, TransportConfig};

/// Default size of the kernel's UDP receive and send buffers (4 MiB).
///
/// libutp-style bursts overflow the kernel default (208 KiB on Linux) even on
/// loopback, and a uTP connection then crawls on retransmissions.
pub const DEFAULT_SOCKET_BUFFER_SIZE: usize = 4 << 20;

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
