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

mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod raw;
mod rlock;
mod semaphore;

pub use barrier::{Barrier, BarrierWaitResult, RawBarrier, MAX_PARTIES};
pub use condition::{CondLock, Condition};
pub use error::{BarrierError, LockTimeoutError, NotOwner, OwnerDied, SemaphoreError, TryLockError};
pub use event::{Event, RawEvent};
pub use lock::{Lock, LockGuard, LockResult};
pub use raw::{RawLock, LIVENESS_INTERVAL};
pub use rlock::{RLock, RLockGuard, RawRLock};
pub use semaphore::{BoundedSemaphore, RawSemaphore, Semaphore};
