//! utp-proto: a sans-IO implementation of uTP, the Micro Transport Protocol
//! of BitTorrent (BEP 29).
//!
//! This crate knows nothing of sockets, tasks or the wall clock: the caller
//! feeds it datagrams and the current time, and polls it for datagrams to
//! send, for events, and for the next instant it wants to be woken.
//!
//! - [`wire`]: the packet codec (zero-copy views, parsed representations,
//!   wrapping sequence numbers and timestamps).
//! - [`Endpoint`]: all connections of one UDP socket: demultiplexing,
//!   incoming connections, RESETs for unknown connections.
//! - [`Connection`]: one connection's state machine: handshake, reliable
//!   ordered delivery with selective ACKs, flow and congestion control,
//!   keepalive, timeouts, FIN and RESET.
//! - [`congestion`]: the [`Controller`](congestion::Controller) trait and
//!   its implementations.
#![warn(missing_docs)]

mod config;
pub mod congestion;
mod connection;
mod endpoint;
pub mod wire;

pub use config::{EndpointConfig, TransportConfig};
pub use connection::{Connection, ConnectionError, Event, ReadError, Side, Stats, WriteError};
pub use endpoint::{
    AcceptError, ConnectError, ConnectionCounts, ConnectionHandle, DatagramEvent, Endpoint,
    EndpointStats, Incoming, TrafficTotals, Transmit,
};
