//! `Lock`: a cross-process mutual-exclusion lock that survives its holder's death.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{LockTimeoutError, OwnerDied, TryLockError};
use super::raw::{Acquired, RawLock};
use crate::shm::{Kind, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError};

// SAFETY: three u32 words and a u64, `#[repr(C)]`; any bytes are a valid (possibly odd) state
// that the lock algorithm handles.
unsafe impl Shareable for RawLock {}

/// The result of [`Lock::lock`]: the guard, or the guard wrapped in [`OwnerDied`].
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// A lock shared between processes, like `multiprocessing.Lock`, that never deadlocks on a
/// dead holder.
///
/// The holder's pid sits in the lock word itself; a waiter that finds the holder dead (checked
/// before parking and every [`LIVENESS_INTERVAL`](super::LIVENESS_INTERVAL)) takes the lock
/// over and gets [`OwnerDied`]. Uncontended, `lock` + unlock is one CAS and one swap.
///
/// Not re-entrant: a thread locking twice waits for itself (use [`RLock`](super::RLock)).
///
/// # Examples
/// ```
/// use shmkit::sync::Lock;
///
/// let lock = Lock::new()?; // anonymous: shared with children forked from here
/// {
///     let _guard = lock.lock().unwrap_or_else(|died| died.into_inner());
///     // ... critical section ...
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    raw: Shared<RawLock>,
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("owner", &self.raw.owner()).finish()
    }
}

/// Holds a [`Lock`]; unlocks on drop.
#[must_use = "if unused the Lock will immediately unlock"]
pub struct LockGuard<'a> {
    pub(crate) lock: &'a Lock,
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockGuard { .. }")
    }
}

pub(crate) const LOCK_KIND: Kind = Kind::new(3, std::mem::size_of::<RawLock>() as u64);

impl Lock {
    /// A lock in a new anonymous segment, shared with children forked afterwards.
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new() -> Result<Lock, ShmCreateError> {
        Ok(Lock { raw: Shared::anonymous(LOCK_KIND, |_| {})? })
    }

    /// A lock in a new named segment (mode 0600), for unrelated processes to [`open`](Self::open).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str) -> Result<Lock, ShmCreateError> {
        Ok(Lock { raw: Shared::create(name, LOCK_KIND, |_| {})? })
    }

    /// Opens a lock made by [`Lock::create`].
    ///
    /// # Errors
    /// As [`Segment::open`], including `WrongKind` for a segment holding something else.
    pub fn open(name: &str) -> Result<Lock, ShmOpenError> {
        Ok(Lock { raw: Shared::open(name, LOCK_KIND)? })
    }

    /// The lock at `at` inside a caller's segment (zeroed memory is an unlocked lock).
    ///
    /// # Errors
    /// [`OffsetError`] if it does not fit.
    pub fn at(seg: Arc<Segment>, at: Offset<RawLock>) -> Result<Lock, OffsetError> {
        Ok(Lock { raw: Shared::at(seg, at)? })
    }

    /// The raw lock state in shared memory (for inspection, e.g. whether waiters are parked).
    pub fn raw(&self) -> &RawLock {
        &self.raw
    }

    fn guard(&self, how: Acquired) -> LockResult<LockGuard<'_>> {
        let g = LockGuard { lock: self };
        match how {
            Acquired::Clean => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied(g)),
        }
    }

    /// Blocks until the lock is held.
    ///
    /// # Errors
    /// [`OwnerDied`] (holding the guard) if the previous holder died holding it.
    #[doc(alias = "acquire")]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        match self.raw.lock_until(None) {
            Ok(how) => self.guard(how),
            Err(_) => unreachable!("a wait without deadline does not time out"),
        }
    }

    /// Takes the lock if free.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] if held by another (an unreaped zombie counts until a
    /// blocking call checks `/proc`), [`TryLockError::OwnerDied`] if taken over from a holder
    /// that no longer exists.
    pub fn try_lock(&self) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        match self.raw.try_lock() {
            Some(how) => self.guard(how).map_err(Into::into),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Blocks until the lock is held or `timeout` passes.
    ///
    /// # Errors
    /// [`LockTimeoutError::Timeout`] (never before the timeout), or `OwnerDied`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>, LockTimeoutError<LockGuard<'_>>> {
        self.lock_deadline(crate::futex::deadline_after(timeout))
    }

    /// Blocks until the lock is held or `deadline` passes (`None`: forever).
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`].
    pub fn lock_deadline(
        &self,
        deadline: Option<Instant>,
    ) -> Result<LockGuard<'_>, LockTimeoutError<LockGuard<'_>>> {
        match self.raw.lock_until(deadline) {
            Ok(how) => self.guard(how).map_err(Into::into),
            Err(_) => Err(LockTimeoutError::Timeout),
        }
    }

    /// Python's `acquire(block, timeout)`: `Some(guard)` if acquired (also after a dead
    /// holder; see [`Lock::lock`] to tell), `None` if not.
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> Option<LockGuard<'_>> {
        if !block {
            return match self.try_lock() {
                Ok(g) => Some(g),
                Err(e) => e.into_inner(),
            };
        }
        match timeout {
            None => Some(self.lock().unwrap_or_else(OwnerDied::into_inner)),
            Some(t) => match self.lock_timeout(t) {
                Ok(g) => Some(g),
                Err(e) => e.into_inner(),
            },
        }
    }

    /// The pid of the current holder (a snapshot).
    pub fn owner(&self) -> Option<u32> {
        self.raw.owner()
    }

    /// Whether the lock is held (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw.owner().is_some()
    }

    /// The segment holding the lock.
    pub fn segment(&self) -> &Arc<Segment> {
        self.raw.segment()
    }
}

impl LockGuard<'_> {
    /// Declares the protected state repaired after an [`OwnerDied`].
    pub fn mark_consistent(this: &Self) {
        // SAFETY: the guard proves this process holds the lock.
        unsafe { this.lock.raw().mark_consistent() }
    }

    /// Runs `f` with the lock released, then takes it again (any `OwnerDied` on re-locking
    /// is reported as the return value's `Err`).
    ///
    /// # Errors
    /// [`OwnerDied`] if another process died holding the lock meanwhile.
    pub fn unlocked<R>(this: &mut Self, f: impl FnOnce() -> R) -> Result<R, OwnerDied<R>> {
        // SAFETY: the guard proves we hold it; we retake it before returning.
        unsafe { this.lock.raw().unlock() };
        let r = f();
        match this.lock.raw().lock_until(None) {
            Ok(Acquired::Clean) => Ok(r),
            _ => Err(OwnerDied(r)),
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: the guard proves this process holds the lock.
        unsafe { self.lock.raw().unlock() }
    }
}
