//! The raw, robust lock word shared by [`Lock`](super::Lock), [`RLock`](super::RLock) and
//! [`Condition`](super::Condition).
//!
//! ```text
//! state (u32, the futex word)
//!   bit 31       WAITERS  someone may be parked; unlock must wake one
//!   bit 30       reserved (ignored)
//!   bits 0..=29  owner pid; 0 = unlocked
//! ```
//! Locking is one CAS `0 → pid`, so the owner is recorded in the same instruction that takes
//! the lock: a holder killed at any instruction leaves a word that names it. The owner's start
//! time (`owner_start`, tagged by `owner_pid`) tells a recycled pid from the original.
//!
//! The contended path is std's futex mutex with the pid in place of `1`: a waiter sets WAITERS
//! and parks; unlock swaps in 0 and wakes one if WAITERS was set; a woken waiter takes the
//! lock *with* WAITERS, since others may still sleep. Parked waiters wake every
//! [`LIVENESS_INTERVAL`] (and check once before first parking) to see whether the owner is
//! dead; if so one of them takes the lock over by CAS and reports `OwnerDied`, and the lock is
//! marked inconsistent until someone calls `mark_consistent` (pthread's `EOWNERDEAD`, but
//! recoverable).
//!
//! Hostile bytes: any state word is handled. A pid of no running process is a dead owner (the
//! lock is recovered); a live unrelated pid blocks until the caller's deadline.

use std::time::{Duration, Instant};

use crate::futex;
use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::primitive::hint;

/// Someone may be parked on the state word.
pub(crate) const WAITERS: u32 = 1 << 31;
/// The owner pid bits. Linux pids are at most 2²² (`pid_max`).
pub(crate) const PID_MASK: u32 = (1 << 30) - 1;
/// How often a parked waiter checks whether the owner still lives.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(10);
/// Polls of the state word before parking (a few µs): critical sections are short.
const SPINS: u32 = if cfg!(loom) { 1 } else { 100 };

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// Taken normally, state consistent.
    Clean,
    /// Taken from a dead owner now, or earlier and never marked consistent.
    OwnerDied,
}

/// The lock state in shared memory. `#[repr(C)]`, 24 bytes, valid when zeroed (unlocked).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawLock {
    state: AtomicU32,
    /// Non-zero after a takeover from a dead owner until `mark_consistent`.
    inconsistent: AtomicU32,
    /// The pid whose start time `owner_start` holds (written after `owner_start`).
    owner_pid: AtomicU32,
    _reserved: AtomicU32,
    owner_start: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<RawLock>() == 24);

/// This process's pid as stored in the state word (a constant stand-in under loom).
fn me() -> (u32, u64) {
    #[cfg(not(loom))]
    {
        let t = crate::util::proc::ProcessToken::current();
        (t.pid & PID_MASK, t.start)
    }
    #[cfg(loom)]
    {
        (1, 0)
    }
}

impl RawLock {
    /// An unlocked lock (all zeros).
    pub fn new() -> Self {
        Self::default()
    }

    fn record_owner(&self, pid: u32, start: u64) {
        // Relaxed: readers validate the pair by re-reading `owner_pid` (see `owner_dead`).
        self.owner_start.store(start, Ordering::Relaxed);
        // Release: orders the start time before the pid that tags it.
        self.owner_pid.store(pid, Ordering::Release);
    }

    fn acquired(&self, pid: u32, start: u64, took_over: bool) -> Acquired {
        self.record_owner(pid, start);
        if took_over {
            self.inconsistent.store(1, Ordering::Relaxed);
            return Acquired::OwnerDied;
        }
        // Relaxed: we hold the lock; the flag is only written under it.
        if self.inconsistent.load(Ordering::Relaxed) != 0 {
            Acquired::OwnerDied
        } else {
            Acquired::Clean
        }
    }

    /// Takes the lock if it is free (or held by a dead process that this call recovers).
    pub(crate) fn try_lock(&self) -> Option<Acquired> {
        let (pid, start) = me();
        // SYNC(state): Acquire pairs with the Release swap in `unlock`.
        match self.state.compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(self.acquired(pid, start, false)),
            Err(s) if s & PID_MASK == 0 => self
                .state
                .compare_exchange(s, pid | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| self.acquired(pid, start, false)),
            Err(s) if self.owner_dead(s) => self
                .state
                .compare_exchange(s, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| self.acquired(pid, start, true)),
            Err(_) => None,
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: forever).
    pub(crate) fn lock_until(&self, deadline: Option<Instant>) -> Result<Acquired, futex::TimedOut> {
        let (pid, start) = me();
        // SYNC(state): Acquire pairs with the Release swap in `unlock`.
        if self.state.compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(self.acquired(pid, start, false));
        }
        self.lock_contended(pid, start, deadline)
    }

    #[cold]
    fn lock_contended(
        &self,
        pid: u32,
        start: u64,
        deadline: Option<Instant>,
    ) -> Result<Acquired, futex::TimedOut> {
        // Spin with plain loads (easier on the cache line than CAS) while a running owner
        // finishes a short critical section.
        for _ in 0..SPINS {
            let s = self.state.load(Ordering::Relaxed);
            if s & PID_MASK == 0
                && self
                    .state
                    .compare_exchange(s, pid | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok(self.acquired(pid, start, false));
            }
            hint::spin_loop();
        }
        let mut next_check = None::<Instant>;
        loop {
            let s = self.state.load(Ordering::Relaxed);
            if s & PID_MASK == 0 {
                // Take it marked contended: others may still be parked.
                if self.state.compare_exchange(s, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    return Ok(self.acquired(pid, start, false));
                }
                continue;
            }
            if !cfg!(loom) && next_check.is_none_or(|t| Instant::now() >= t) {
                if self.owner_dead(s) {
                    if self
                        .state
                        .compare_exchange(s, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Ok(self.acquired(pid, start, true));
                    }
                    continue;
                }
                next_check = Instant::now().checked_add(LIVENESS_INTERVAL);
            }
            if s & WAITERS == 0
                && self.state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(futex::TimedOut);
            }
            let park_until = match (deadline, next_check) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            };
            futex::wait(&self.state, s | WAITERS, if cfg!(loom) { deadline } else { park_until });
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// Only while held by this process, by the caller's acquisition.
    pub(crate) unsafe fn unlock(&self) {
        // Relaxed: only a hint for liveness checks; the swap below publishes.
        self.owner_pid.store(0, Ordering::Relaxed);
        // SYNC(state): Release publishes the critical section to the next owner.
        let old = self.state.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            futex::wake(&self.state, 1);
        }
    }

    /// Whether the owner named in `s` is known to be dead.
    fn owner_dead(&self, s: u32) -> bool {
        #[cfg(loom)]
        {
            let _ = s;
            false
        }
        #[cfg(not(loom))]
        {
            let pid = s & PID_MASK;
            if pid == 0 || pid == me().0 {
                return false;
            }
            // Acquire: pairs with `record_owner`'s Release, so `owner_start` belongs to it.
            let tagged = self.owner_pid.load(Ordering::Acquire);
            let start = self.owner_start.load(Ordering::Relaxed);
            let start =
                if tagged == pid && self.owner_pid.load(Ordering::Acquire) == pid { start } else { 0 };
            crate::util::proc::ProcessToken { pid, start }.liveness() == crate::util::proc::Liveness::Dead
        }
    }

    /// Clears the inconsistent mark left by a takeover from a dead owner.
    ///
    /// # Safety
    /// Only while held by this process.
    pub(crate) unsafe fn mark_consistent(&self) {
        self.inconsistent.store(0, Ordering::Relaxed);
    }

    /// The pid of the current holder, if any (a snapshot).
    pub fn owner(&self) -> Option<u32> {
        match self.state.load(Ordering::Relaxed) & PID_MASK {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Whether a takeover from a dead owner has not been marked consistent yet.
    pub fn is_inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Relaxed) != 0
    }

    /// The raw state word (for `shmkit inspect` and tests).
    pub fn state_word(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }
}
