//! libp2p-utp: the tokio runtime for the uTP engine in `utp-proto`, and a
//! libp2p `Transport` for `/ip4|ip6/<ip>/udp/<port>/utp`.
//!
//! Not yet implemented: this crate is filled by the runtime and transport
//! issues. See the workspace README for the status of each part.
#![warn(missing_docs)]
