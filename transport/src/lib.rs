//! libp2p-utp: uTP (the Micro Transport Protocol of BitTorrent, BEP 29) on
//! tokio.
//!
//! This crate runs the sans-IO engine of [`utp_proto`] over a UDP socket:
//!
//! - [`UtpSocket`] owns one UDP socket and a background task that drives
//!   every connection over it: dial with [`UtpSocket::connect`], accept with
//!   [`UtpSocket::accept`] (or [`UtpSocket::incoming`]), both on one socket;
//!   datagrams that are not uTP go to [`UtpSocket::recv_non_utp`].
//! - [`UtpStream`] is one connection: tokio's and the `futures` crate's
//!   `AsyncRead`/`AsyncWrite`, half-close with `shutdown`, graceful
//!   [`close`](UtpStream::close), [`reset`](UtpStream::reset), statistics.
//! - [`Config`] holds every engine setting and the runtime's own (accept
//!   backlog, kernel socket buffers, the non-uTP queue).
//! - [`Transport`] (feature `libp2p`, on by default) is uTP as a libp2p
//!   transport for `/ip4|ip6/<ip>/udp/<port>/utp` addresses: add it to a
//!   Swarm and upgrade it with noise and yamux like TCP (see
//!   [`transport`]).
//!
//! Errors are [`std::io::Error`]s whose kinds say what happened:
//! `TimedOut` (the peer stopped answering, or a dial or close took longer
//! than configured), `ConnectionRefused` (the peer does not accept, or,
//! on Linux, its host answered a dial with ICMP port unreachable: nothing
//! listens on that port),
//! `ConnectionReset` (the peer aborted), `ConnectionAborted` (this side
//! aborted), `BrokenPipe` (writing after a shutdown, or the socket's
//! background task is gone). When a connection failed, the error (or its
//! [`source`](std::error::Error::source) for dials) is a
//! [`utp_proto::ConnectionError`].
//!
//! # How it runs
//!
//! Each socket spawns one task that owns the receive path and the timers.
//! The engine, the wakers of every connection and the accept queue sit
//! behind one mutex shared with the streams: a stream locks it to read or
//! write and wakes the task when it produced something to send. The task
//! receives a batch of datagrams, feeds them to the engine under one lock,
//! takes a batch of datagrams to send and the events, then sends and wakes
//! without the lock. On Linux it receives with `recvmmsg` and UDP GRO and
//! sends runs of datagrams to one peer with UDP GSO (through `quinn-udp`),
//! several times faster on loopback than one system call per datagram.
//! Nothing grows without bound: a reader that does not keep up closes the
//! receive window and the writer waits.
//!
//! # Example
//!
//! ```
//! use libp2p_utp::UtpSocket;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let server = UtpSocket::bind("127.0.0.1:0").await?;
//! let client = UtpSocket::bind("127.0.0.1:0").await?;
//! let server_addr = server.local_addr()?;
//!
//! let echo = tokio::spawn(async move {
//!     let mut stream = server.accept().await?;
//!     let mut buf = Vec::new();
//!     stream.read_to_end(&mut buf).await?; // until the client shuts down
//!     stream.write_all(&buf).await?;
//!     stream.close().await // waits until the client got everything
//! });
//!
//! let mut stream = client.connect(server_addr).await?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?; // half-close: we are done writing
//! let mut reply = Vec::new();
//! stream.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"hello");
//! echo.await.unwrap()?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod config;
mod driver;
mod icmp;
#[cfg(feature = "metrics")]
pub mod metrics;
mod shared;
mod socket;
mod stream;
#[cfg(feature = "libp2p")]
pub mod transport;
mod udp;

pub use config::{AcceptDecision, AcceptFilter, Config, DEFAULT_SOCKET_BUFFER_SIZE};
pub use socket::{IncomingStreams, SocketStats, UtpSocket};
pub use stream::{
    AbortHandle, MessageRead, OwnedReadHalf, OwnedWriteHalf, ReadHalf, ReuniteError, UtpStream,
    WriteHalf, MAX_METADATA_LEN,
};
#[cfg(feature = "libp2p")]
pub use transport::Transport;
pub use utp_proto::wire::ExtFlags;
pub use utp_proto::{self, EndpointStats, Stats};
