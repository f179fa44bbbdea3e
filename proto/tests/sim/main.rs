//! Simulator tests of the connection engine: two endpoints over impaired
//! links, virtual time.

#[path = "../common/mod.rs"]
mod common;

mod basic;
mod close;
mod early_data;
mod extensions;
mod fairness;
mod goodput;
mod gso;
mod handshake;
mod ledbat;
mod livelock;
mod mtu;
mod scale;
mod transfer;
