//! `RLock`: a re-entrant cross-process lock (Python's `multiprocessing.RLock`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{LockTimeoutError, NotOwner, OwnerDied, TryLockError};
use super::lock::LockResult;
use super::raw::{Acquired, RawLock};
use crate::primitive::atomic::{AtomicU32, Ordering};
use crate::shm::{Kind, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError};

/// An [`RLock`]'s shared state: a robust raw lock plus the owning thread and the depth.
/// `#[repr(C)]`, 32 bytes, valid when zeroed.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawRLock {
    pub(crate) lock: RawLock,
    /// Thread id (`gettid`) of the owner inside the owning process; written only by the owner.
    owner_tid: AtomicU32,
    /// Recursion depth; only the owner touches it.
    count: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RawRLock>() == 32);

// SAFETY: a RawLock and two u32 atomics, `#[repr(C)]`; any bytes are handled (a corrupted
// count or tid can at worst make the owner release early or refuse a release).
unsafe impl Shareable for RawRLock {}

pub(crate) const RLOCK_KIND: Kind = Kind::new(4, std::mem::size_of::<RawRLock>() as u64);

use crate::util::proc::current_tid as tid;

impl RawRLock {
    fn owned_by_me(&self) -> bool {
        // Relaxed: `owner_tid` equals our tid only if we wrote it, while holding the lock.
        self.lock.owner() == Some(crate::util::proc::ProcessToken::current().pid)
            && self.owner_tid.load(Ordering::Relaxed) == tid()
    }

    fn enter(&self, how: Acquired) -> Acquired {
        self.owner_tid.store(tid(), Ordering::Relaxed);
        self.count.store(1, Ordering::Relaxed);
        how
    }

    /// Re-enters if owned by this thread; `None` otherwise.
    fn reenter(&self) -> Option<Acquired> {
        if self.owned_by_me() {
            let c = self.count.load(Ordering::Relaxed);
            self.count.store(c.saturating_add(1), Ordering::Relaxed);
            Some(if self.lock.is_inconsistent() { Acquired::OwnerDied } else { Acquired::Clean })
        } else {
            None
        }
    }

    pub(crate) fn lock_until(&self, deadline: Option<Instant>) -> Result<Acquired, crate::futex::TimedOut> {
        if let Some(how) = self.reenter() {
            return Ok(how);
        }
        self.lock.lock_until(deadline).map(|how| self.enter(how))
    }

    fn try_lock(&self) -> Option<Acquired> {
        self.reenter().or_else(|| self.lock.try_lock().map(|how| self.enter(how)))
    }

    /// Drops one level; unlocks at depth 0.
    pub(crate) fn release(&self) -> Result<(), NotOwner> {
        if !self.owned_by_me() {
            return Err(NotOwner);
        }
        let c = self.count.load(Ordering::Relaxed);
        if c > 1 {
            self.count.store(c - 1, Ordering::Relaxed);
        } else {
            self.count.store(0, Ordering::Relaxed);
            self.owner_tid.store(0, Ordering::Relaxed);
            // SAFETY: `owned_by_me` says this process's thread holds it.
            unsafe { self.lock.unlock() };
        }
        Ok(())
    }

    /// Releases every level at once (for a condition wait); returns the depth to restore.
    pub(crate) fn release_all(&self) -> u32 {
        let c = self.count.load(Ordering::Relaxed).max(1);
        self.count.store(0, Ordering::Relaxed);
        self.owner_tid.store(0, Ordering::Relaxed);
        // SAFETY: called only with a guard held by this thread.
        unsafe { self.lock.unlock() };
        c
    }

    /// Re-takes the lock after [`RawRLock::release_all`] at the saved depth.
    pub(crate) fn acquire_restore(&self, depth: u32) -> Acquired {
        let how = self.lock.lock_until(None).unwrap_or(Acquired::Clean);
        self.owner_tid.store(tid(), Ordering::Relaxed);
        self.count.store(depth, Ordering::Relaxed);
        how
    }

    /// The lock's view with the owning thread and depth, for [`crate::inspect`] (Relaxed
    /// loads only, as in `RawLock::view`).
    pub(crate) fn view(&self) -> crate::inspect::LockView {
        let mut v = self.lock.view();
        // Relaxed: a snapshot for display, maybe of read-only memory.
        v.owner_tid = Some(self.owner_tid.load(Ordering::Relaxed));
        v.depth = Some(self.count.load(Ordering::Relaxed));
        v
    }

    /// Recursion depth as stored (a snapshot; meaningful to the owner).
    pub fn depth(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A re-entrant lock shared between processes: the thread that holds it may lock it again;
/// it is released when every guard is dropped. Robust to a dead holder like [`Lock`](super::Lock).
///
/// # Examples
/// ```
/// use shmkit::sync::RLock;
///
/// let rlock = RLock::new()?;
/// let outer = rlock.lock().unwrap();
/// let inner = rlock.lock().unwrap(); // same thread: no deadlock
/// assert_eq!(rlock.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!rlock.is_locked());
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    raw: Shared<RawRLock>,
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock").field("owner", &self.raw.lock.owner()).finish()
    }
}

/// One level of an [`RLock`]; releases that level on drop.
#[must_use = "if unused the RLock will immediately unlock"]
pub struct RLockGuard<'a> {
    pub(crate) rlock: &'a RLock,
    // Guards are tied to the owning thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RLockGuard { .. }")
    }
}

impl RLock {
    /// An RLock in a new anonymous segment, shared with children forked afterwards.
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new() -> Result<RLock, ShmCreateError> {
        Ok(RLock { raw: Shared::anonymous(RLOCK_KIND, |_| {})? })
    }

    /// An RLock in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str) -> Result<RLock, ShmCreateError> {
        Ok(RLock { raw: Shared::create(name, RLOCK_KIND, |_| {})? })
    }

    /// Opens an RLock made by [`RLock::create`].
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<RLock, ShmOpenError> {
        Ok(RLock { raw: Shared::open(name, RLOCK_KIND)? })
    }

    /// The RLock at `at` inside a caller's segment (zeroed memory is unlocked).
    ///
    /// # Errors
    /// [`OffsetError`] if it does not fit.
    pub fn at(seg: Arc<Segment>, at: Offset<RawRLock>) -> Result<RLock, OffsetError> {
        Ok(RLock { raw: Shared::at(seg, at)? })
    }

    pub(crate) fn raw(&self) -> &RawRLock {
        &self.raw
    }

    fn guard(&self, how: Acquired) -> LockResult<RLockGuard<'_>> {
        let g = RLockGuard { rlock: self, _not_send: std::marker::PhantomData };
        match how {
            Acquired::Clean => Ok(g),
            Acquired::OwnerDied => Err(OwnerDied(g)),
        }
    }

    /// Takes one level, blocking while another thread or process holds it.
    ///
    /// # Errors
    /// [`OwnerDied`] (holding the guard) if the previous holder died holding it.
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        match self.raw.lock_until(None) {
            Ok(how) => self.guard(how),
            Err(_) => unreachable!("a wait without deadline does not time out"),
        }
    }

    /// Takes one level if free or already held by this thread.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] or [`TryLockError::OwnerDied`].
    pub fn try_lock(&self) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
        match self.raw.try_lock() {
            Some(how) => self.guard(how).map_err(Into::into),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Takes one level, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockTimeoutError::Timeout`] or [`LockTimeoutError::OwnerDied`].
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<RLockGuard<'_>, LockTimeoutError<RLockGuard<'_>>> {
        match self.raw.lock_until(crate::futex::deadline_after(timeout)) {
            Ok(how) => self.guard(how).map_err(Into::into),
            Err(_) => Err(LockTimeoutError::Timeout),
        }
    }

    /// Python's `acquire()` without a guard: pair it with [`RLock::release`]. Returns whether
    /// the lock was acquired (also after a dead holder).
    pub fn acquire(&self, block: bool, timeout: Option<Duration>) -> bool {
        let r = match (block, timeout) {
            (false, _) => self.raw.try_lock().ok_or(crate::futex::TimedOut),
            (true, None) => self.raw.lock_until(None),
            (true, Some(t)) => self.raw.lock_until(crate::futex::deadline_after(t)),
        };
        r.is_ok()
    }

    /// Python's `release()`: drops one level taken with [`RLock::acquire`].
    ///
    /// # Errors
    /// [`NotOwner`] if this thread does not hold the lock (Python raises `RuntimeError`).
    pub fn release(&self) -> Result<(), NotOwner> {
        self.raw.release()
    }

    /// Whether some thread holds it (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.raw.lock.owner().is_some()
    }

    /// This thread's recursion depth (0 if it does not hold the lock).
    pub fn depth(&self) -> u32 {
        if self.raw.owned_by_me() {
            self.raw.depth()
        } else {
            0
        }
    }

    /// The pid of the holding process (a snapshot).
    pub fn owner(&self) -> Option<u32> {
        self.raw.lock.owner()
    }
}

impl RLockGuard<'_> {
    /// Declares the protected state repaired after an [`OwnerDied`].
    pub fn mark_consistent(this: &Self) {
        // SAFETY: the guard proves this thread holds the lock.
        unsafe { this.rlock.raw().lock.mark_consistent() }
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // The guard proves this thread holds a level; a corrupted owner record that makes
        // release refuse leaves the lock to the dead-owner recovery of other processes.
        let _ = self.rlock.raw().release();
    }
}
