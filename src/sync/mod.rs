//! Synchronization primitives shared between processes, robust to a dead holder.
//!
//! | type | like | dead participant |
//! |---|---|---|
//! | [`Lock`] | `multiprocessing.Lock` | next acquirer takes it over, gets [`OwnerDied`] |
//! | [`RLock`] | `multiprocessing.RLock` | as `Lock` |
//! | [`Semaphore`], [`BoundedSemaphore`] | same names | permits it held are lost (as in Python) |
//! | [`Event`] | `multiprocessing.Event` | no owner: unaffected |
//! | [`Condition`] | `multiprocessing.Condition` | its lock reports `OwnerDied` |
//! | [`Barrier`] | `multiprocessing.Barrier` | a participant dying while waiting breaks it |
//!
//! Each can be created anonymously (`new`, shared with children forked afterwards), by name
//! (`create`/`open`, mode 0600, kind and version checked on open), or placed inside a
//! caller's segment (`at`, from a [`Layout`](crate::shm::Layout) offset of its `Raw*` state).

//!
//! The `Raw*` types in [`raw`](RawLock) hold the state words and algorithms; they compile
//! under loom (`loom-tests/tests/sync.rs`), the handle types do not.

mod error;
mod raw;

#[cfg(not(loom))]
mod barrier;
#[cfg(not(loom))]
mod condition;
#[cfg(not(loom))]
mod event;
#[cfg(not(loom))]
mod lock;
#[cfg(not(loom))]
mod rlock;
#[cfg(not(loom))]
mod semaphore;

pub use error::{BarrierError, LockTimeoutError, NotOwner, OwnerDied, SemaphoreError, TryLockError};
pub use raw::{
    Acquired, BarrierWaitResult, RawBarrier, RawEvent, RawLock, RawSemaphore, LIVENESS_INTERVAL, MAX_PARTIES,
};

#[cfg(not(loom))]
pub use barrier::Barrier;
#[cfg(not(loom))]
pub use condition::{CondLock, Condition};
#[cfg(not(loom))]
pub use event::Event;
#[cfg(not(loom))]
pub use lock::{Lock, LockGuard, LockResult};
#[cfg(not(loom))]
pub use rlock::{RLock, RLockGuard, RawRLock};
#[cfg(not(loom))]
pub use semaphore::{BoundedSemaphore, Semaphore};
