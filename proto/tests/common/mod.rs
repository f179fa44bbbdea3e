//! Shared test support: a network link model and a two-endpoint simulator.

pub mod flows;
pub mod link;
pub mod newreno;
pub mod sim;
