//! A constant congestion window: deterministic, for tests and for links
//! whose capacity is known.

use std::time::Instant;

use super::{AckInfo, Controller, ControllerFactory};

/// Builds [`FixedWindow`] controllers.
#[derive(Debug, Clone)]
pub struct FixedWindowConfig {
    /// The window in bytes.
    pub window: usize,
}

impl Default for FixedWindowConfig {
    fn default() -> Self {
        FixedWindowConfig { window: 256 * 1024 }
    }
}

impl ControllerFactory for FixedWindowConfig {
    fn build(&self, _now: Instant, mss: usize) -> Box<dyn Controller> {
        Box::new(FixedWindow { window: self.window.max(mss) })
    }
}

/// A controller whose window never changes.
#[derive(Debug, Clone)]
pub struct FixedWindow {
    window: usize,
}

impl Controller for FixedWindow {
    fn on_ack(&mut self, _now: Instant, _ack: &AckInfo) {}
    fn on_loss(&mut self, _now: Instant, _bytes_in_flight: usize) {}
    fn on_timeout(&mut self, _now: Instant) {}
    fn window(&self) -> usize {
        self.window
    }
}
