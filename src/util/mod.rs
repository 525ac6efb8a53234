//! Small helpers shared by the layers: backoff, process identity, forking, times as text.

pub(crate) mod backoff;
#[cfg(not(loom))]
pub mod child;
pub(crate) mod membarrier;
#[cfg(not(loom))]
pub mod proc;
pub mod time;
