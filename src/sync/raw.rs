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
//! [`LIVENESS_INTERVAL`] (and make a cheap `kill(pid, 0)` check before first parking) to see
//! whether the owner is dead; if so one of them takes the lock over by CAS and reports `OwnerDied`, and the lock is
//! marked inconsistent until someone calls `mark_consistent` (pthread's `EOWNERDEAD`, but
//! recoverable).
//!
//! Hostile bytes: any state word is handled. A pid of no running process is a dead owner (the
//! lock is recovered); a live unrelated pid blocks until the caller's deadline.

use std::time::{Duration, Instant};

use super::error::{BarrierError, SemaphoreError};
use crate::futex::{self, earliest, TimedOut, WaitCell};
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

/// How an acquisition of a [`RawLock`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquired {
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

// The shared layout (loom's atomics are bigger, so not under loom).
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RawLock>() == 24);

/// Whether the process (pid, start time) is known to be dead; never under loom.
fn is_dead(pid: u32, start: u64) -> bool {
    #[cfg(not(loom))]
    {
        crate::util::proc::ProcessToken { pid, start }.liveness() == crate::util::proc::Liveness::Dead
    }
    #[cfg(loom)]
    {
        let _ = (pid, start);
        false
    }
}

/// Whether no process has this pid at all (one `kill(pid, 0)`; a zombie still counts as
/// present, which the full check in [`is_dead`] catches).
fn pid_gone(pid: u32) -> bool {
    #[cfg(not(loom))]
    {
        crate::util::proc::pid_gone(pid)
    }
    #[cfg(loom)]
    {
        let _ = pid;
        false
    }
}

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

    /// Takes the lock if it is free, or held by a pid that no longer exists (one
    /// `kill(pid, 0)` on failure). A holder left as an unreaped zombie is only recovered by the
    /// blocking calls, whose periodic check reads `/proc`.
    pub fn try_lock(&self) -> Option<Acquired> {
        let (pid, start) = me();
        // SYNC(state): Acquire pairs with the Release swap in `unlock`.
        match self.state.compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Some(self.acquired(pid, start, false)),
            Err(s) if s & PID_MASK == 0 => self
                .state
                .compare_exchange(s, pid | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| self.acquired(pid, start, false)),
            Err(s) if self.owner_gone(s) => self
                .state
                .compare_exchange(s, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| self.acquired(pid, start, true)),
            Err(_) => None,
        }
    }

    /// Takes the lock, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// [`TimedOut`] once the deadline passes (never with `None`).
    pub fn lock_until(&self, deadline: Option<Instant>) -> Result<Acquired, TimedOut> {
        let (pid, start) = me();
        // SYNC(state): Acquire pairs with the Release swap in `unlock`.
        if self.state.compare_exchange(0, pid, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            return Ok(self.acquired(pid, start, false));
        }
        self.lock_contended(pid, start, deadline)
    }

    /// Polls with plain loads (easier on the cache line than CAS, as std's futex mutex does)
    /// while the lock is held by a running owner and nobody is parked; returns the last state.
    fn spin(&self) -> u32 {
        let mut spins = SPINS;
        loop {
            // Relaxed: a hint; the CAS that follows re-checks with Acquire.
            let s = self.state.load(Ordering::Relaxed);
            if s & PID_MASK == 0 || s & WAITERS != 0 || spins == 0 {
                return s;
            }
            hint::spin_loop();
            spins -= 1;
        }
    }

    #[cold]
    fn lock_contended(&self, pid: u32, start: u64, deadline: Option<Instant>) -> Result<Acquired, TimedOut> {
        let mut s = self.spin();
        if s & PID_MASK == 0 {
            match self.state.compare_exchange(s, pid | (s & WAITERS), Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return Ok(self.acquired(pid, start, false)),
                Err(now) => s = now,
            }
        }
        let mut next_check = None::<Instant>;
        // Full checks start 1 ms after the cheap one and back off to LIVENESS_INTERVAL: a
        // holder killed a moment ago is often still exiting at the first check.
        let mut interval = Duration::from_millis(1);
        loop {
            if s & PID_MASK == 0 {
                // Take it marked contended: others may still be parked.
                match self.state.compare_exchange(s, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => return Ok(self.acquired(pid, start, false)),
                    Err(now) => {
                        s = now;
                        continue;
                    }
                }
            }
            // Liveness: on first contention only the cheap `kill(pid, 0)` (no such process);
            // the full check (start time, zombie state from /proc, ~10 µs) only while parked,
            // at 1, 2, 4, 8 ms and then every LIVENESS_INTERVAL, so a busy lock does not pay
            // for /proc reads.
            let first = next_check.is_none();
            let due = next_check.is_some_and(|t| Instant::now() >= t);
            if !cfg!(loom) && (first || due) {
                let dead = if first { self.owner_gone(s) } else { self.owner_dead(s) };
                if dead {
                    if self
                        .state
                        .compare_exchange(s, pid | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return Ok(self.acquired(pid, start, true));
                    }
                    s = self.state.load(Ordering::Relaxed);
                    continue;
                }
                next_check = Instant::now().checked_add(interval);
                interval = (interval * 2).min(LIVENESS_INTERVAL);
            }
            if s & WAITERS == 0 {
                if let Err(now) =
                    self.state.compare_exchange(s, s | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                {
                    s = now;
                    continue;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(TimedOut);
            }
            let park_until = earliest(deadline, next_check);
            // `next_check` stays `None` under loom (no liveness checks), so the wait is uncapped.
            futex::wait(&self.state, s | WAITERS, park_until);
            s = self.spin();
        }
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// Only while held by this process, by the caller's acquisition.
    pub unsafe fn unlock(&self) {
        // Relaxed: only a hint for liveness checks; the swap below publishes.
        self.owner_pid.store(0, Ordering::Relaxed);
        // SYNC(state): Release publishes the critical section to the next owner.
        let old = self.state.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            futex::wake(&self.state, 1);
        }
    }

    /// The recorded start time of `pid` if the owner record is tagged with it, else 0.
    fn recorded_start(&self, pid: u32) -> u64 {
        // Acquire: pairs with `record_owner`'s Release, so `owner_start` belongs to it.
        let tagged = self.owner_pid.load(Ordering::Acquire);
        let start = self.owner_start.load(Ordering::Relaxed);
        if tagged == pid && self.owner_pid.load(Ordering::Acquire) == pid {
            start
        } else {
            0
        }
    }

    /// The word names *our* pid, but the record says an earlier process with that pid (a
    /// recycled pid, or a restarted pid namespace where the worker is pid 1 again) took it.
    /// An untagged record counts as ours: another thread of this process may be between its
    /// CAS and `record_owner`.
    fn stale_self(&self, s: u32) -> bool {
        let (pid, my_start) = me();
        if s & PID_MASK != pid || my_start == 0 {
            return false;
        }
        let start = self.recorded_start(pid);
        start != 0 && start != my_start
    }

    /// Cheap check: the owner's pid no longer exists, or it is a stale record of our own pid.
    fn owner_gone(&self, s: u32) -> bool {
        pid_gone(s & PID_MASK) || self.stale_self(s)
    }

    /// Full check (reads `/proc`): whether the owner named in `s` is known to be dead.
    fn owner_dead(&self, s: u32) -> bool {
        let pid = s & PID_MASK;
        if pid == 0 {
            return false;
        }
        if pid == me().0 {
            return self.stale_self(s);
        }
        is_dead(pid, self.recorded_start(pid))
    }

    /// Clears the inconsistent mark left by a takeover from a dead owner.
    ///
    /// # Safety
    /// Only while held by this process.
    pub unsafe fn mark_consistent(&self) {
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

    /// Whether a waiter has announced itself parked (or about to park) on the word.
    pub fn has_waiters(&self) -> bool {
        self.state.load(Ordering::Relaxed) & WAITERS != 0
    }

    /// The raw state word (for `shmkit inspect` and tests).
    pub fn state_word(&self) -> u32 {
        self.state.load(Ordering::Relaxed)
    }
}

// ---- Semaphore ----

/// A semaphore's shared state. `#[repr(C)]`, 16 bytes.
///
/// ```text
/// count  u32  permits available
/// bound  u32  0: unbounded; otherwise the most `count` may reach (BoundedSemaphore)
/// cell   WaitCell (8 bytes): where acquirers park
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawSemaphore {
    count: AtomicU32,
    bound: AtomicU32,
    cell: WaitCell,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RawSemaphore>() == 16);

impl RawSemaphore {
    /// A semaphore holding `value` permits, bounded at `bound` (0: unbounded).
    pub fn new(value: u32, bound: u32) -> Self {
        let s = Self::default();
        s.init(value, bound);
        s
    }

    /// Sets the initial state; call before others can see it.
    pub fn init(&self, value: u32, bound: u32) {
        self.count.store(value, Ordering::Relaxed);
        self.bound.store(bound, Ordering::Relaxed);
    }

    /// Takes a permit if one is available.
    pub fn try_acquire(&self) -> bool {
        // Acquire: pairs with the Release in `release`, so what the releaser did before
        // giving the permit back is visible to the new holder.
        self.count.fetch_update(Ordering::Acquire, Ordering::Relaxed, |c| c.checked_sub(1)).is_ok()
    }

    /// Takes a permit, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// [`TimedOut`].
    pub fn acquire_until(&self, deadline: Option<Instant>) -> Result<(), TimedOut> {
        // `wait_for` polls before anything else, so a free permit costs no wait setup.
        self.cell.wait_for(|| self.try_acquire().then_some(()), deadline)
    }

    /// Returns `n` permits and wakes as many waiters.
    ///
    /// # Errors
    /// [`SemaphoreError::AboveBound`] or [`SemaphoreError::Overflow`]; the count is unchanged.
    pub fn release(&self, n: u32) -> Result<(), SemaphoreError> {
        // Relaxed: the bound is written once before the semaphore is shared.
        let bound = self.bound.load(Ordering::Relaxed);
        // SYNC(count): Release publishes the releaser's work to the next acquirer.
        self.count
            .fetch_update(Ordering::Release, Ordering::Relaxed, |c| {
                let next = c.checked_add(n)?;
                (bound == 0 || next <= bound).then_some(next)
            })
            .map_err(|c| {
                if c.checked_add(n).is_none() {
                    SemaphoreError::Overflow
                } else {
                    SemaphoreError::AboveBound { bound }
                }
            })?;
        match n {
            0 => {}
            1 => self.cell.notify_one(),
            n => self.cell.notify(n),
        }
        Ok(())
    }

    /// Permits available now (a snapshot).
    pub fn value(&self) -> u32 {
        self.count.load(Ordering::Relaxed)
    }

    /// The bound (0: unbounded).
    pub fn bound(&self) -> u32 {
        self.bound.load(Ordering::Relaxed)
    }
}

// ---- Event ----

/// An event's shared state: a flag and the cell its waiters park on. `#[repr(C)]`, 12 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawEvent {
    flag: AtomicU32,
    cell: WaitCell,
}

impl RawEvent {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        // SYNC(flag): Release publishes what the setter did before; pairs with `is_set`.
        self.flag.store(1, Ordering::Release);
        self.cell.notify_all();
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.flag.store(0, Ordering::Relaxed);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        // SYNC(flag): pairs with the Release in `set`.
        self.flag.load(Ordering::Acquire) != 0
    }

    /// Waits until set or until `deadline`; returns whether it is set.
    pub fn wait_until(&self, deadline: Option<Instant>) -> bool {
        self.cell.wait_for(|| self.is_set().then_some(()), deadline).is_ok()
    }
}

// ---- Barrier ----

/// The most parties a barrier may have (4 under loom, to keep models small).
pub const MAX_PARTIES: u32 = if cfg!(loom) { 4 } else { 64 };
const BROKEN: u32 = 1 << 31;
/// How long an arrival waits for a generation change whose tag is already written before it
/// calls the barrier broken (see `RawBarrier::arrive`).
const TAG_PATIENCE: Duration = Duration::from_secs(1);
const GEN_MASK: u32 = BROKEN - 1;

#[repr(C)]
#[derive(Debug, Default)]
struct Slot {
    pid: AtomicU32,
    /// The generation the slot was written in: slots of older generations are ignored.
    gen: AtomicU32,
    start: AtomicU64,
}

/// `arrived` holds the low 16 bits of its generation above the count, so an arrival that
/// raced with a reset or a completed generation fails its CAS instead of counting there.
const TAG_SHIFT: u32 = 16;
const COUNT_MASK: u32 = (1 << TAG_SHIFT) - 1;

fn arrived_tag(g: u32) -> u32 {
    (g & COUNT_MASK) << TAG_SHIFT
}

/// `Barrier`: `n` processes wait until all have arrived (`multiprocessing.Barrier`).
///
/// ```text
/// gen       u32  futex word: bits 0..=30 generation, bit 31 BROKEN
/// parties   u32  fixed at creation (1..=MAX_PARTIES)
/// arrived   u32  bits 16..=31 low bits of the generation, bits 0..=15 arrivals in it
/// slots     [pid u32, gen u32, start u64] × MAX_PARTIES: who waits in which generation
/// ```
/// An arrival takes an index by CAS on `arrived`, which only succeeds while the word is
/// tagged with the generation the arrival read, so an arrival racing with `reset` or with
/// the generation's completion is never counted in the wrong one. The last arrival re-tags
/// `arrived` for the next generation, then moves `gen` on by one (Release), waking all. Others park on `gen` and pass when it reads
/// `generation + 1`. `abort` (and a wait that times out, or finds a waiting participant dead)
/// sets BROKEN; `reset` moves the generation on by two, so waiters of the old generation see
/// neither `g + 1` nor a clean word and report `Broken`.
///
/// A participant that dies *before* arriving cannot be told from a slow one: waiters then
/// wait until their deadline, as in Python. One that dies while waiting is noticed within
/// [`LIVENESS_INTERVAL`] and breaks the barrier.
#[repr(C)]
#[derive(Debug)]
pub struct RawBarrier {
    gen: AtomicU32,
    parties: AtomicU32,
    arrived: AtomicU32,
    _pad: AtomicU32,
    slots: [Slot; MAX_PARTIES as usize],
}

/// What a successful barrier wait returns (`Barrier::wait`, [`RawBarrier::wait_until`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    /// Arrival order in this generation, `0..parties` (Python's return value).
    pub index: u32,
}

impl BarrierWaitResult {
    /// True for exactly one waiter per generation: the last to arrive.
    pub fn is_leader(&self) -> bool {
        self.index == 0
    }
}

impl RawBarrier {
    /// A process-local barrier for `parties` (for tests and models; shared ones live in a
    /// segment, zeroed, then [`RawBarrier::init`]).
    pub fn new(parties: u32) -> Self {
        let b = RawBarrier {
            gen: AtomicU32::new(0),
            parties: AtomicU32::new(0),
            arrived: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
            slots: std::array::from_fn(|_| Slot::default()),
        };
        b.init(parties);
        b
    }

    /// Sets the number of parties; call before sharing. `parties` is clamped to
    /// `1..=MAX_PARTIES`.
    pub fn init(&self, parties: u32) {
        self.parties.store(parties.clamp(1, MAX_PARTIES), Ordering::Relaxed);
    }

    /// The number of parties (kept in `1..=MAX_PARTIES` whatever a peer wrote).
    pub fn parties(&self) -> u32 {
        // A peer may have scribbled on it: keep it in range so slot indices stay in bounds.
        self.parties.load(Ordering::Relaxed).clamp(1, MAX_PARTIES)
    }

    /// Breaks generation `g` if it is still current; false if it had moved on (passed,
    /// broken or reset by someone else), in which case the caller re-reads `gen`.
    fn break_from(&self, g: u32) -> bool {
        // Only the generation we waited in may be broken by us.
        let broke = self.gen.compare_exchange(g, g | BROKEN, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        futex::wake(&self.gen, u32::MAX);
        broke
    }

    /// Breaks the barrier: current and future waiters get `Broken` until [`RawBarrier::reset`].
    pub fn abort(&self) {
        self.gen.fetch_or(BROKEN, Ordering::AcqRel);
        futex::wake(&self.gen, u32::MAX);
    }

    /// Back to the empty state; waiters of the current generation get `Broken`.
    pub fn reset(&self) {
        let g = self.gen.load(Ordering::Relaxed);
        let next = (g & GEN_MASK).wrapping_add(2) & GEN_MASK;
        self.arrived.store(arrived_tag(next), Ordering::Relaxed);
        // Release: the re-tagged count is visible to whoever sees the new generation.
        self.gen.store(next, Ordering::Release);
        futex::wake(&self.gen, u32::MAX);
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.gen.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// How many have arrived in the current generation (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        (self.arrived.load(Ordering::Relaxed) & COUNT_MASK).min(self.parties())
    }

    fn someone_waiting_died(&self, g: u32, upto: u32) -> bool {
        (0..upto.min(MAX_PARTIES)).any(|i| {
            let slot = &self.slots[i as usize];
            // Acquire (all three): a value written by a later generation's arrival carries
            // that generation's `gen` with it, so `break_from` then fails (see `wait_until`).
            let pid = slot.pid.load(Ordering::Acquire);
            pid != 0
                && slot.gen.load(Ordering::Acquire) == g
                && is_dead(pid, slot.start.load(Ordering::Acquire))
        })
    }

    /// Counts this arrival in generation `g`; `Err(None)` if the generation moved on before
    /// it could (the caller starts over), `Err(Some(e))` to give up with `e`.
    fn arrive(&self, g: u32, parties: u32, deadline: Option<Instant>) -> Result<u32, Option<BarrierError>> {
        let tag = arrived_tag(g);
        let mut mismatches = 0u32;
        let mut since: Option<Instant> = None;
        loop {
            // Acquire: pairs with the re-tagging stores that precede a generation change.
            let a = self.arrived.load(Ordering::Acquire);
            if a & !COUNT_MASK != tag {
                if self.gen.load(Ordering::Acquire) != g {
                    return Err(None);
                }
                // The last arrival or a reset is between its two stores; wait for `gen`. That
                // process may be preempted right there for a whole time slice or more on a
                // busy machine, so only a tag that stays wrong for `TAG_PATIENCE` counts as
                // corruption (or a process killed between the stores): break rather than
                // spin forever. The clock is read every 256 yields, also for the caller's
                // deadline.
                mismatches = mismatches.wrapping_add(1);
                if mismatches % 256 == 0 {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        return Err(self.break_from(g).then_some(BarrierError::Timeout));
                    }
                    if now.duration_since(*since.get_or_insert(now)) >= TAG_PATIENCE {
                        return Err(self.break_from(g).then_some(BarrierError::Broken));
                    }
                }
                crate::primitive::thread::yield_now();
                continue;
            }
            let count = a & COUNT_MASK;
            if count >= parties {
                // More arrivals than parties in one generation: misuse or corruption (unless
                // the generation just moved on: then start over).
                return Err(self.break_from(g).then_some(BarrierError::Broken));
            }
            if self.arrived.compare_exchange(a, a + 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                return Ok(count);
            }
        }
    }

    /// Arrives and waits for the others until `deadline`.
    ///
    /// # Errors
    /// [`BarrierError::Broken`] or [`BarrierError::Timeout`].
    pub fn wait_until(&self, deadline: Option<Instant>) -> Result<BarrierWaitResult, BarrierError> {
        let parties = self.parties();
        let (g, idx) = loop {
            // Acquire: pairs with the Release that published this generation.
            let g = self.gen.load(Ordering::Acquire);
            if g & BROKEN != 0 {
                return Err(BarrierError::Broken);
            }
            match self.arrive(g, parties, deadline) {
                Ok(idx) => break (g, idx),
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        };
        let (pid, start) = me();
        let slot = &self.slots[idx as usize];
        // Release (all three): see `someone_waiting_died`.
        slot.start.store(start, Ordering::Release);
        slot.gen.store(g, Ordering::Release);
        slot.pid.store(pid, Ordering::Release);
        let index = parties - 1 - idx;
        if idx + 1 == parties {
            // The slots need no clearing: each is tagged with its generation, and
            // `someone_waiting_died` only reads those of the generation it waits in.
            let next_tag = arrived_tag((g + 1) & GEN_MASK);
            self.arrived.store(next_tag, Ordering::Relaxed);
            // SYNC(gen): Release publishes the reset; the CAS fails if someone broke the
            // barrier meanwhile.
            let next = (g + 1) & GEN_MASK;
            let r = self.gen.compare_exchange(g, next, Ordering::AcqRel, Ordering::Relaxed);
            futex::wake(&self.gen, u32::MAX);
            return r.map(|_| BarrierWaitResult { index }).map_err(|_| BarrierError::Broken);
        }
        let passed = (g + 1) & GEN_MASK;
        loop {
            let cur = self.gen.load(Ordering::Acquire);
            if cur == passed {
                return Ok(BarrierWaitResult { index });
            }
            if cur != g {
                return Err(BarrierError::Broken);
            }
            let now = Instant::now();
            // If the generation passed while we decided to break it, `break_from` fails and
            // the loop sees `passed`: in particular, the slots read by `someone_waiting_died`
            // may already be rewritten by the next generation (a pid of one arrival with the
            // start time of another reads as a dead process).
            if deadline.is_some_and(|d| now >= d) {
                if self.break_from(g) {
                    return Err(BarrierError::Timeout);
                }
                continue;
            }
            if self.someone_waiting_died(g, parties) {
                if self.break_from(g) {
                    return Err(BarrierError::Broken);
                }
                continue;
            }
            let until = earliest(deadline, futex::recheck_after(LIVENESS_INTERVAL));
            futex::wait(&self.gen, g, until);
        }
    }
}

// ---- Read-only views (`shmkit inspect`) ----

/// What the state words record, for [`crate::inspect`]. Only Relaxed loads and fences: the
/// state may sit in a read-only mapping, where Rust guarantees no other atomic access, and
/// nothing is written, taken over or woken. Indices are bounded as in the algorithms.
#[cfg(not(loom))]
mod view {
    use super::*;
    use crate::inspect::{BarrierView, Contents, Holder, LockView};
    use crate::primitive::atomic::fence;

    impl RawLock {
        /// The owner, flags and word as they are now.
        pub(crate) fn view(&self) -> LockView {
            // Relaxed (every load here): a snapshot for display, maybe of read-only memory.
            let word = self.state.load(Ordering::Relaxed);
            let pid = word & PID_MASK;
            LockView {
                // The same check as a waiter's `owner_dead`: the pid, with its start time if
                // the owner record is tagged with it.
                owner: (pid != 0).then(|| Holder::check(pid, self.view_start(pid))),
                waiters_flagged: word & WAITERS != 0,
                inconsistent: self.inconsistent.load(Ordering::Relaxed) != 0,
                word,
                owner_tid: None,
                depth: None,
            }
        }

        /// `recorded_start`, with Relaxed loads and fences in place of its Acquire loads.
        fn view_start(&self, pid: u32) -> u64 {
            let tagged = self.owner_pid.load(Ordering::Relaxed);
            // Acquire fence: the tag's load pairs with `record_owner`'s Release store, so the
            // start time read next is the tagged owner's (or newer, which the re-check catches).
            fence(Ordering::Acquire);
            let start = self.owner_start.load(Ordering::Relaxed);
            // Acquire fence: the start time is read before the tag's re-check.
            fence(Ordering::Acquire);
            if tagged == pid && self.owner_pid.load(Ordering::Relaxed) == pid {
                start
            } else {
                0
            }
        }
    }

    impl RawSemaphore {
        /// Permits, bound and parked waiters as they are now.
        pub(crate) fn view(&self) -> Contents {
            // Relaxed: a snapshot for display.
            let bound = self.bound.load(Ordering::Relaxed);
            Contents::Semaphore {
                value: self.count.load(Ordering::Relaxed),
                bound: (bound != 0).then_some(bound),
                waiters: self.cell.sleepers(),
            }
        }
    }

    impl RawEvent {
        /// The flag and parked waiters as they are now.
        pub(crate) fn view(&self) -> Contents {
            // Relaxed: a snapshot for display.
            Contents::Event { set: self.flag.load(Ordering::Relaxed) != 0, waiters: self.cell.sleepers() }
        }
    }

    impl RawBarrier {
        /// Parties, generation, arrivals and the waiting processes as they are now.
        pub(crate) fn view(&self) -> BarrierView {
            // Relaxed (every load here): a snapshot for display.
            let gen_word = self.gen.load(Ordering::Relaxed);
            let raw_parties = self.parties.load(Ordering::Relaxed);
            let arrived = self.arrived.load(Ordering::Relaxed);
            let generation = gen_word & GEN_MASK;
            let mut problems = Vec::new();
            if !(1..=MAX_PARTIES).contains(&raw_parties) {
                problems.push("parties outside 1..=64 (the barrier uses it clamped)");
            }
            let parties = raw_parties.clamp(1, MAX_PARTIES);
            let count = arrived & COUNT_MASK;
            if arrived & !COUNT_MASK != arrived_tag(generation) {
                problems.push(
                    "arrivals tagged with another generation (a pass or reset in progress, or garbage)",
                );
            }
            if count > parties {
                problems.push("more arrivals than parties");
            }
            let waiting = count.min(parties);
            // `waiting <= MAX_PARTIES`, the slot array's length; at most 64 liveness checks.
            let waiters = self.slots[..waiting as usize]
                .iter()
                .filter_map(|slot| {
                    let pid = slot.pid.load(Ordering::Relaxed);
                    let here = pid != 0 && slot.gen.load(Ordering::Relaxed) == generation;
                    here.then(|| Holder::check(pid, slot.start.load(Ordering::Relaxed)))
                })
                .collect();
            BarrierView { parties, generation, broken: gen_word & BROKEN != 0, waiting, waiters, problems }
        }
    }
}
