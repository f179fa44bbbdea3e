//! utp-proto: a sans-IO implementation of uTP, the Micro Transport Protocol
//! of BitTorrent (BEP 29).
//!
//! This crate knows nothing of sockets, tasks or the wall clock: the caller
//! feeds it datagrams and the current time, and polls it for datagrams to
//! send and for the next instant it wants to be woken.
//!
//! - [`wire`]: the packet codec (zero-copy views, parsed representations,
//!   wrapping sequence numbers and timestamps).
#![warn(missing_docs)]

pub mod wire;
