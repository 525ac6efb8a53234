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

/// What a segment of one of this module's kinds holds, for [`crate::inspect`]: the object at
/// payload offset 0, read without being used (see the `view` functions in `raw`).
#[cfg(not(loom))]
pub(crate) fn inspect(seg: &crate::shm::Segment, kind: crate::shm::Kind) -> crate::inspect::Contents {
    use crate::inspect::{Contents, OTHER_LAYOUT};
    use crate::shm::{Offset, Shareable};

    fn first<T: Shareable>(seg: &crate::shm::Segment) -> Option<&T> {
        seg.get(Offset::new(0)).ok()
    }
    let too_small = Contents::Corrupted("payload too small for the object its kind names");
    if kind == lock::LOCK_KIND {
        first::<RawLock>(seg).map_or(too_small, |l| Contents::Lock(l.view()))
    } else if kind == rlock::RLOCK_KIND {
        first::<RawRLock>(seg).map_or(too_small, |l| Contents::RLock(l.view()))
    } else if kind == semaphore::SEMAPHORE_KIND {
        first::<RawSemaphore>(seg).map_or(too_small, RawSemaphore::view)
    } else if kind == event::EVENT_KIND {
        first::<RawEvent>(seg).map_or(too_small, RawEvent::view)
    } else if kind == barrier::BARRIER_KIND {
        first::<RawBarrier>(seg).map_or(too_small, |b| Contents::Barrier(b.view()))
    } else if kind.code == condition::KIND_CONDITION {
        condition::inspect(seg, kind)
    } else {
        OTHER_LAYOUT
    }
}
