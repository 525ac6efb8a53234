//! Spin-then-yield waiting budget for the adaptive waiter.
//!
//! Shaped like crossbeam's `Backoff` (`snooze` / `is_completed`), with two differences: it goes
//! through [`crate::primitive`] so loom sees the yields, and the spin phase pauses once per
//! step instead of doubling bursts. Doubling suits CAS contention; a waiter polling for a peer's
//! store wants to notice it within one pause, since the hand-off it is waiting for takes about
//! 0.1 µs when the peer is running.

use crate::primitive::{hint, thread};

/// `spins` single-pause steps, then `yields` rounds of `sched_yield`, after which
/// [`Backoff::is_completed`] says "park now".
#[derive(Debug)]
pub(crate) struct Backoff {
    step: u32,
    spins: u32,
    yields: u32,
}

impl Backoff {
    /// A fresh budget.
    pub(crate) fn new(spins: u32, yields: u32) -> Self {
        Backoff { step: 0, spins, yields: yields.min(u32::MAX - spins) }
    }

    /// Waits a little while another process makes progress: one pause while the spin budget
    /// lasts, then a yield of the core (the other process may be waiting for it).
    pub(crate) fn snooze(&mut self) {
        if self.step < self.spins {
            hint::spin_loop();
        } else {
            thread::yield_now();
        }
        if !self.is_completed() {
            self.step += 1;
        }
    }

    /// True once spinning and yielding are used up and the caller should block.
    pub(crate) fn is_completed(&self) -> bool {
        self.step >= self.spins + self.yields
    }

    /// True while still in the spinning phase (no syscall made yet).
    pub(crate) fn is_spinning(&self) -> bool {
        self.step < self.spins
    }
}
