//! `Semaphore` and `BoundedSemaphore`: a shared count with blocking acquire.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::SemaphoreError;
use super::raw::RawSemaphore;
use crate::futex::TimedOut;
use crate::shm::{Kind, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError};

// SAFETY: u32 atomics and a WaitCell, `#[repr(C)]`; any count/bound is a valid state.
unsafe impl Shareable for RawSemaphore {}

pub(crate) const SEMAPHORE_KIND: Kind = Kind::new(5, std::mem::size_of::<RawSemaphore>() as u64);

/// A counting semaphore shared between processes (`multiprocessing.Semaphore`).
///
/// Permits have no owner: a process killed while "holding" permits takes them with it, and
/// the count stays lower until some process calls [`Semaphore::release`] for it. This is
/// Python's behaviour too; use a [`Lock`](super::Lock) where a dead holder must be recovered.
///
/// # Examples
/// ```
/// use shmkit::sync::Semaphore;
///
/// let sem = Semaphore::new(2)?;
/// assert!(sem.try_acquire());
/// assert!(sem.try_acquire());
/// assert!(!sem.try_acquire());
/// sem.release(1).unwrap();
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    raw: Shared<RawSemaphore>,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore").field("value", &self.value()).field("bound", &self.raw.bound()).finish()
    }
}

impl Semaphore {
    /// A semaphore with `value` permits in a new anonymous segment (shared with children
    /// forked afterwards).
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new(value: u32) -> Result<Semaphore, ShmCreateError> {
        Ok(Semaphore { raw: Shared::anonymous(SEMAPHORE_KIND, |r: &RawSemaphore| r.init(value, 0))? })
    }

    /// A semaphore in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str, value: u32) -> Result<Semaphore, ShmCreateError> {
        Ok(Semaphore { raw: Shared::create(name, SEMAPHORE_KIND, |r: &RawSemaphore| r.init(value, 0))? })
    }

    /// Opens a semaphore made by [`Semaphore::create`] or [`BoundedSemaphore::create`].
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<Semaphore, ShmOpenError> {
        Ok(Semaphore { raw: Shared::open(name, SEMAPHORE_KIND)? })
    }

    /// The semaphore at `at` inside a caller's segment, initialised by the caller with
    /// [`RawSemaphore::init`] (zeroed memory is a semaphore with no permits).
    ///
    /// # Errors
    /// [`OffsetError`] if it does not fit.
    pub fn at(seg: Arc<Segment>, at: Offset<RawSemaphore>) -> Result<Semaphore, OffsetError> {
        Ok(Semaphore { raw: Shared::at(seg, at)? })
    }

    /// Takes a permit, blocking until one is available.
    pub fn acquire(&self) {
        let _ = self.raw.acquire_until(None);
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> bool {
        self.raw.try_acquire()
    }

    /// Takes a permit, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`TimedOut`] (never before the timeout).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), TimedOut> {
        self.raw.acquire_until(crate::futex::deadline_after(timeout))
    }

    /// Returns `n` permits.
    ///
    /// # Errors
    /// [`SemaphoreError::Overflow`], or [`SemaphoreError::AboveBound`] for a bounded one.
    pub fn release(&self, n: u32) -> Result<(), SemaphoreError> {
        self.raw.release(n)
    }

    /// Permits available now (a snapshot; Python's `get_value`).
    #[doc(alias = "get_value")]
    pub fn value(&self) -> u32 {
        self.raw.value()
    }

    /// The segment holding the semaphore.
    pub fn segment(&self) -> &Arc<Segment> {
        self.raw.segment()
    }
}

/// A [`Semaphore`] that refuses to be released above its initial value
/// (`multiprocessing.BoundedSemaphore`).
///
/// # Examples
/// ```
/// use shmkit::sync::{BoundedSemaphore, SemaphoreError};
///
/// let sem = BoundedSemaphore::new(1)?;
/// assert_eq!(sem.release(1), Err(SemaphoreError::AboveBound { bound: 1 }));
/// sem.acquire();
/// assert_eq!(sem.release(1), Ok(()));
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BoundedSemaphore(Semaphore);

impl BoundedSemaphore {
    /// A bounded semaphore with `value` permits (and bound `value`), anonymous.
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new(value: u32) -> Result<BoundedSemaphore, ShmCreateError> {
        let raw = Shared::anonymous(SEMAPHORE_KIND, |r: &RawSemaphore| r.init(value, value.max(1)))?;
        Ok(BoundedSemaphore(Semaphore { raw }))
    }

    /// A bounded semaphore in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str, value: u32) -> Result<BoundedSemaphore, ShmCreateError> {
        let raw = Shared::create(name, SEMAPHORE_KIND, |r: &RawSemaphore| r.init(value, value.max(1)))?;
        Ok(BoundedSemaphore(Semaphore { raw }))
    }

    /// Opens a bounded semaphore made by [`BoundedSemaphore::create`].
    ///
    /// # Errors
    /// As [`Segment::open`]; [`ShmOpenError::WrongKind`] if it is unbounded.
    pub fn open(name: &str) -> Result<BoundedSemaphore, ShmOpenError> {
        let s = Semaphore::open(name)?;
        if s.raw.bound() == 0 {
            return Err(ShmOpenError::WrongKind { found: SEMAPHORE_KIND, expected: SEMAPHORE_KIND });
        }
        Ok(BoundedSemaphore(s))
    }
}

impl std::ops::Deref for BoundedSemaphore {
    type Target = Semaphore;
    fn deref(&self) -> &Semaphore {
        &self.0
    }
}
