//! `Condition`: a condition variable over a [`Lock`] or an [`RLock`], across processes.
//!
//! A waiter, holding the lock, registers on a [`WaitCell`] (reading its sequence number),
//! releases the lock (every level, for an RLock), parks until the sequence moves, then
//! re-takes the lock. A notifier that holds the lock bumps the sequence and wakes `n`
//! sleepers; a notify that lands between the release and the park moves the sequence, so the
//! park returns at once: no lost wake-ups. Waits may also return spuriously (Rust's `Condvar`
//! contract): use [`Condition::wait_while`] with a predicate.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::OwnerDied;
use super::lock::{Lock, LockGuard, LockResult};
use super::raw::{Acquired, RawLock};
use super::rlock::{RLock, RLockGuard, RawRLock};
use crate::futex::{self, WaitCell};
use crate::shm::{
    Kind, Layout, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError,
};

mod sealed {
    pub trait Sealed {}
}

/// A lock a [`Condition`] can wait on: [`Lock`] or [`RLock`].
pub trait CondLock: sealed::Sealed + Clone + Sized {
    /// The raw state in shared memory.
    type Raw: Shareable;
    /// The guard type.
    type Guard<'a>
    where
        Self: 'a;
    #[doc(hidden)]
    const KIND: Kind;
    #[doc(hidden)]
    fn at_offset(seg: Arc<Segment>, at: Offset<Self::Raw>) -> Result<Self, OffsetError>;
    #[doc(hidden)]
    fn lock_guard(&self) -> LockResult<Self::Guard<'_>>;
    #[doc(hidden)]
    fn raw_lock(&self) -> &RawLock;
    /// The raw lock a guard holds.
    #[doc(hidden)]
    fn guard_raw(guard: &Self::Guard<'_>) -> *const RawLock;
    /// Releases the lock fully; returns what [`CondLock::restore`] needs.
    #[doc(hidden)]
    fn release_all(&self) -> u32;
    /// Re-takes the lock released by [`CondLock::release_all`]; true if its holder died.
    #[doc(hidden)]
    fn restore(&self, saved: u32) -> bool;
}

impl sealed::Sealed for Lock {}
impl CondLock for Lock {
    type Raw = RawLock;
    type Guard<'a> = LockGuard<'a>;
    const KIND: Kind = Kind::new(KIND_CONDITION, 1);
    fn at_offset(seg: Arc<Segment>, at: Offset<RawLock>) -> Result<Self, OffsetError> {
        Lock::at(seg, at)
    }
    fn lock_guard(&self) -> LockResult<LockGuard<'_>> {
        self.lock()
    }
    fn raw_lock(&self) -> &RawLock {
        self.raw()
    }
    fn guard_raw(guard: &LockGuard<'_>) -> *const RawLock {
        guard.lock.raw()
    }
    fn release_all(&self) -> u32 {
        // SAFETY: called by `Condition::wait` while its guard proves we hold the lock.
        unsafe { self.raw().unlock() };
        1
    }
    fn restore(&self, _saved: u32) -> bool {
        self.raw().lock_until(None) == Ok(Acquired::OwnerDied)
    }
}

impl sealed::Sealed for RLock {}
impl CondLock for RLock {
    type Raw = RawRLock;
    type Guard<'a> = RLockGuard<'a>;
    const KIND: Kind = Kind::new(KIND_CONDITION, 2);
    fn at_offset(seg: Arc<Segment>, at: Offset<RawRLock>) -> Result<Self, OffsetError> {
        RLock::at(seg, at)
    }
    fn lock_guard(&self) -> LockResult<RLockGuard<'_>> {
        self.lock()
    }
    fn raw_lock(&self) -> &RawLock {
        &self.raw().lock
    }
    fn guard_raw(guard: &RLockGuard<'_>) -> *const RawLock {
        &guard.rlock.raw().lock
    }
    fn release_all(&self) -> u32 {
        self.raw().release_all()
    }
    fn restore(&self, saved: u32) -> bool {
        self.raw().acquire_restore(saved) == Acquired::OwnerDied
    }
}

/// A condition variable shared between processes (`multiprocessing.Condition`), with its own
/// lock (`L` = [`Lock`] by default, or [`RLock`]).
///
/// If a process dies holding the lock, the next waiter to re-take it gets [`OwnerDied`].
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use shmkit::sync::Condition;
///
/// let cond: Condition = Condition::new()?;
/// let ready = AtomicU32::new(0); // in real use: in shared memory
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         let _g = cond.lock().unwrap();
///         ready.store(1, Ordering::Relaxed);
///         cond.notify_all();
///     });
///     let g = cond.lock().unwrap();
///     let _g = cond.wait_while(g, || ready.load(Ordering::Relaxed) == 0).unwrap();
/// });
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone)]
pub struct Condition<L: CondLock = Lock> {
    lock: L,
    cell: Shared<WaitCell>,
}

impl<L: CondLock> fmt::Debug for Condition<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").field("owner", &self.lock.raw_lock().owner()).finish()
    }
}

/// Segment kind code of a condition; the tag says which lock (1: `Lock`, 2: `RLock`).
pub(crate) const KIND_CONDITION: u32 = 7;

/// What a condition's segment holds, for [`crate::inspect`]: its lock and its cell's parked
/// waiters, read without being used.
pub(crate) fn inspect(seg: &Segment, kind: Kind) -> crate::inspect::Contents {
    use crate::inspect::{Contents, LockView, OTHER_LAYOUT};

    fn view<L: CondLock>(seg: &Segment, lock_view: fn(&L::Raw) -> LockView) -> Contents {
        let (_, lock_at, cell_at) = layout::<L>();
        match (seg.get(lock_at), seg.get(cell_at)) {
            (Ok(lock), Ok(cell)) => Contents::Condition { lock: lock_view(lock), waiters: cell.sleepers() },
            _ => Contents::Corrupted("payload too small for a condition"),
        }
    }
    if kind == <Lock as CondLock>::KIND {
        view::<Lock>(seg, RawLock::view)
    } else if kind == <RLock as CondLock>::KIND {
        view::<RLock>(seg, RawRLock::view)
    } else {
        OTHER_LAYOUT
    }
}

/// The offsets of a condition's lock and cell in its segment.
fn layout<L: CondLock>() -> (Layout, Offset<L::Raw>, Offset<WaitCell>) {
    let mut l = Layout::new();
    let lock = l.push::<L::Raw>();
    let cell = l.push::<WaitCell>();
    (l, lock, cell)
}

impl<L: CondLock> Condition<L> {
    fn from_segment(seg: Segment) -> Result<Self, OffsetError> {
        let (_, lock_at, cell) = layout::<L>();
        let seg = Arc::new(seg);
        Ok(Condition { lock: L::at_offset(seg.clone(), lock_at)?, cell: Shared::at(seg, cell)? })
    }

    /// A condition and its lock in a new anonymous segment (shared with children forked
    /// afterwards).
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new() -> Result<Self, ShmCreateError> {
        let seg = Segment::anonymous(L::KIND, layout::<L>().0.size())?;
        Ok(Self::from_segment(seg)?)
    }

    /// A condition and its lock in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str) -> Result<Self, ShmCreateError> {
        let seg = Segment::create(name, L::KIND, layout::<L>().0.size())?;
        Ok(Self::from_segment(seg)?)
    }

    /// Opens a condition made by [`Condition::create`] with the same lock type.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<Self, ShmOpenError> {
        let seg = Segment::open(name, L::KIND)?;
        Self::from_segment(seg).map_err(|_| ShmOpenError::Corrupted("payload too small for a condition"))
    }

    /// The condition whose lock is at `lock` and cell at `cell` inside a caller's segment
    /// (zeroed memory is an unlocked lock and an idle cell).
    ///
    /// # Errors
    /// [`OffsetError`] if either does not fit.
    pub fn at(seg: Arc<Segment>, lock: Offset<L::Raw>, cell: Offset<WaitCell>) -> Result<Self, OffsetError> {
        Ok(Condition { lock: L::at_offset(seg.clone(), lock)?, cell: Shared::at(seg, cell)? })
    }

    fn cell(&self) -> &WaitCell {
        &self.cell
    }

    /// The condition's lock.
    pub fn lock_handle(&self) -> &L {
        &self.lock
    }

    /// Takes the condition's lock.
    ///
    /// # Errors
    /// [`OwnerDied`] (holding the guard) if the previous holder died holding it.
    pub fn lock(&self) -> LockResult<L::Guard<'_>> {
        self.lock.lock_guard()
    }

    /// Releases the lock held by `guard`, waits for a notify (or a spurious wake-up), and
    /// re-takes the lock.
    ///
    /// `guard` must come from this condition's [`lock`](Self::lock).
    ///
    /// # Errors
    /// [`OwnerDied`] (holding the guard) if a process died holding the lock meanwhile.
    ///
    /// # Panics
    /// If `guard` holds another lock than this condition's (a programming error, as with
    /// std's `Condvar` used with two mutexes): releasing the wrong lock would break mutual
    /// exclusion.
    pub fn wait<'a>(&'a self, guard: L::Guard<'a>) -> LockResult<L::Guard<'a>> {
        match self.wait_deadline(guard, None) {
            Ok((g, _)) => Ok(g),
            Err(OwnerDied((g, _))) => Err(OwnerDied(g)),
        }
    }

    /// [`Condition::wait`] for at most `timeout`; the `bool` is true if it timed out.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait_timeout<'a>(
        &'a self,
        guard: L::Guard<'a>,
        timeout: Duration,
    ) -> LockResult<(L::Guard<'a>, bool)> {
        self.wait_deadline(guard, futex::deadline_after(timeout))
    }

    /// [`Condition::wait`] until `deadline` (`None`: forever); the `bool` is true if it
    /// timed out.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    ///
    /// # Panics
    /// As [`Condition::wait`].
    pub fn wait_deadline<'a>(
        &'a self,
        guard: L::Guard<'a>,
        deadline: Option<Instant>,
    ) -> LockResult<(L::Guard<'a>, bool)> {
        assert!(
            std::ptr::eq(L::guard_raw(&guard), self.lock.raw_lock()),
            "Condition::wait with a guard of another lock"
        );
        let cell = self.cell();
        let seq = cell.register();
        let saved = self.lock.release_all();
        let timed_out = !cell.park(seq, deadline);
        cell.unregister();
        if self.lock.restore(saved) {
            Err(OwnerDied((guard, timed_out)))
        } else {
            Ok((guard, timed_out))
        }
    }

    /// Waits while `condition` returns true, re-checking after every wake-up.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait_while<'a>(
        &'a self,
        mut guard: L::Guard<'a>,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<L::Guard<'a>> {
        while condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Python's `wait_for(predicate, timeout)`: waits until `predicate` holds or the timeout
    /// passes; the `bool` is the predicate's last value.
    ///
    /// # Errors
    /// As [`Condition::wait`].
    pub fn wait_for<'a>(
        &'a self,
        mut guard: L::Guard<'a>,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> LockResult<(L::Guard<'a>, bool)> {
        let deadline = timeout.and_then(futex::deadline_after);
        loop {
            if predicate() {
                return Ok((guard, true));
            }
            let (g, timed_out) = self.wait_deadline(guard, deadline)?;
            guard = g;
            if timed_out {
                let ok = predicate();
                return Ok((guard, ok));
            }
        }
    }

    /// Wakes up to `n` waiters. Call while holding the lock, as Python requires: a notify
    /// without it can miss a waiter that is between its check and its wait.
    pub fn notify(&self, n: u32) {
        self.cell().notify(n)
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.cell().notify_one()
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.cell().notify_all()
    }
}
