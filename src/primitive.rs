//! The loom switch: the only module that names atomics, `spin_loop` and `yield_now`.
//!
//! Everything else in the crate imports them from here, so building with
//! `RUSTFLAGS="--cfg loom"` swaps in loom's model-checked versions (see `loom-tests/`).
//! `.ci/run` greps the sources to keep it that way.

#[cfg(loom)]
pub(crate) use loom::{hint, sync::atomic, thread};

#[cfg(not(loom))]
pub(crate) use std::{hint, sync::atomic, thread};
