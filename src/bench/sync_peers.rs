//! Lock and event workloads: shmkit's [`Lock`] and [`Event`] beside the peers they are held
//! to. One function per scenario, each taking a peer and `iters` and returning the elapsed
//! time of those `iters` operations, so `benches/sync.rs` and `shmkit bench` share them.
//!
//! | scenario | one iteration | peers |
//! |---|---|---|
//! | [`lock_uncontended`] | lock + unlock, one thread, nobody else | [`LockPeer::ALL`] |
//! | [`lock_contended_2proc`] | lock, `+1`, unlock in *each* of two pinned processes | [`LockPeer::CONTENDED`] |
//! | [`event_wake_rtt`] | set, wake the peer, its answer back | [`EventPeer::ALL`] |
//! | [`owner_died_recovery`] | SIGKILL a holder until `lock()` reports the death | [`OwnerDiedPeer::ALL`] |
//!
//! The peers live beside shmkit's objects in anonymous shared mappings, each on its own
//! cache line ([`CachePadded`], or a mapping of its own):
//! - [`FutexMutex`]: std's three-state futex mutex (`0` unlocked, `1` locked, `2` contended;
//!   `library/std/src/sys/sync/mutex/futex.rs`) on shmkit's cross-process [`futex`]. It
//!   records no owner, so it is the floor a robust lock is measured against.
//! - [`PthreadMutex`]: glibc's `pthread_mutex_t` with `PTHREAD_PROCESS_SHARED`, plain or
//!   `PTHREAD_MUTEX_ROBUST` (the kernel walks a dead thread's robust list and the next
//!   `lock` returns `EOWNERDEAD`).
//! - `std::sync::Mutex`, process-local, for scale only.
//!
//! - [`RawSyncMutex`]: the `raw_sync` crate's `Mutex` (0.1.5, the last release, October
//!   2020) in shared memory: a `PTHREAD_PROCESS_SHARED` `pthread_mutex_t` (not robust)
//!   reached through a `Box<dyn LockImpl>`.
//!
//! [`futex`]: crate::futex

use std::io;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::other;
use super::{finish, restore_affinity, spawn_pinned, timeout_err, PEER_TIMEOUT};
use crate::futex;
use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::primitive::{hint, thread};
use crate::shm::{Kind, Segment, Shareable, Shared};
use crate::sync::{Event, Lock, LockGuard};

/// Polls `done` until it holds: spinning at first, then yielding the core, so a peer sharing
/// it still runs. `false` if `deadline` passed first.
fn spin_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    let mut n = 0u32;
    while !done() {
        if n < 1_000 {
            hint::spin_loop();
            n += 1;
        } else {
            thread::yield_now();
            if Instant::now() >= deadline {
                return false;
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------

/// Unlocked.
const UNLOCKED: u32 = 0;
/// Locked, nobody parked.
const LOCKED: u32 = 1;
/// Locked, someone may be parked: unlock must wake one.
const CONTENDED: u32 = 2;

/// std's futex mutex (`library/std/src/sys/sync/mutex/futex.rs`), process-shared: the
/// baseline for shmkit's [`Lock`], which runs the same algorithm with the owner's pid in
/// place of `1` and adds dead-owner detection.
///
/// ```text
/// state (u32, the futex word)
///   0  unlocked
///   1  locked, no waiters
///   2  locked, maybe waiters (unlock wakes one)
/// ```
/// `#[repr(C)]`, 4 bytes, valid when zeroed. Not robust: a holder that dies leaves it
/// locked for good.
///
/// # Examples
/// ```
/// use shmkit::bench::FutexMutex;
///
/// let m = FutexMutex::anonymous()?; // in a shared mapping, on its own cache line
/// let g = m.lock();
/// drop(g);
/// # Ok::<(), std::io::Error>(())
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct FutexMutex {
    state: AtomicU32,
}

// SAFETY: one AtomicU32, `#[repr(C)]`; any value other than 0 reads as locked, so any bytes
// are a valid (possibly stuck) state.
unsafe impl Shareable for FutexMutex {}

/// Holds a [`FutexMutex`]; unlocks on drop.
#[must_use = "if unused the FutexMutex will immediately unlock"]
#[derive(Debug)]
pub struct FutexMutexGuard<'a> {
    m: &'a FutexMutex,
}

impl FutexMutex {
    /// A new unlocked mutex alone on its cache line in a new anonymous shared mapping,
    /// shared with children forked afterwards.
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn anonymous() -> io::Result<Shared<CachePadded<FutexMutex>>> {
        Shared::anonymous(Kind::RAW, |_| {}).map_err(other)
    }

    /// Blocks until the mutex is held.
    #[inline]
    pub fn lock(&self) -> FutexMutexGuard<'_> {
        // SYNC(state): Acquire pairs with the Release swap in `unlock`.
        if self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        FutexMutexGuard { m: self }
    }

    #[cold]
    fn lock_contended(&self) {
        let mut state = self.spin();
        if state == UNLOCKED {
            match self.state.compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return,
                Err(s) => state = s,
            }
        }
        loop {
            // Take it as CONTENDED: we cannot know whether others still sleep.
            if state != CONTENDED && self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
                return;
            }
            futex::wait(&self.state, CONTENDED, None);
            state = self.spin();
        }
    }

    /// Polls (plain loads, easier on the cache line than CAS) while the lock is held without
    /// waiters, at most 100 times, as std does.
    fn spin(&self) -> u32 {
        let mut spins = 100;
        loop {
            // Relaxed: a hint; the CAS or swap that follows re-checks with Acquire.
            let state = self.state.load(Ordering::Relaxed);
            if state != LOCKED || spins == 0 {
                return state;
            }
            hint::spin_loop();
            spins -= 1;
        }
    }
}

impl Drop for FutexMutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SYNC(state): Release publishes the critical section to the next owner.
        if self.m.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake(&self.m.state, 1);
        }
    }
}

/// A glibc `pthread_mutex_t` initialised with `PTHREAD_PROCESS_SHARED` (and, if asked,
/// `PTHREAD_MUTEX_ROBUST`) in an anonymous shared mapping of its own, shared with children
/// forked afterwards. The mapping's payload holds one `CachePadded<pthread_mutex_t>`.
///
/// # Examples
/// ```
/// use shmkit::bench::PthreadMutex;
///
/// let m = PthreadMutex::new(true)?;
/// let g = m.lock()?;
/// assert!(!g.owner_died());
/// drop(g);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct PthreadMutex {
    /// Keeps the mapping that `m` points into.
    _seg: Segment,
    m: NonNull<libc::pthread_mutex_t>,
    robust: bool,
}

/// Holds a [`PthreadMutex`]; unlocks on drop.
#[must_use = "if unused the PthreadMutex will immediately unlock"]
#[derive(Debug)]
pub struct PthreadMutexGuard<'a> {
    m: &'a PthreadMutex,
    owner_died: bool,
}

/// Turns a pthread return value (0 or an errno) into a `Result`.
fn check(r: libc::c_int) -> io::Result<()> {
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

impl PthreadMutex {
    /// A new unlocked process-shared mutex; `robust` adds `PTHREAD_MUTEX_ROBUST`.
    ///
    /// # Errors
    /// As [`Segment::anonymous`], or the errno of a failed `pthread_mutexattr_*` or
    /// `pthread_mutex_init` call.
    pub fn new(robust: bool) -> io::Result<PthreadMutex> {
        let seg = Segment::anonymous(Kind::RAW, std::mem::size_of::<CachePadded<libc::pthread_mutex_t>>())
            .map_err(other)?;
        let m = seg.payload_ptr().cast::<libc::pthread_mutex_t>();
        // The payload starts 128-aligned (PAYLOAD_OFFSET), as CachePadded wants.
        debug_assert_eq!(m.as_ptr() as usize % std::mem::align_of::<CachePadded<libc::pthread_mutex_t>>(), 0);
        // SAFETY:
        // - `attr` is a local that pthread_mutexattr_init initialises before any other use;
        // - `m` points to a zeroed, aligned pthread_mutex_t in the mapping we own, which no
        //   other thread or process can see yet (nothing has been forked since).
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            check(libc::pthread_mutexattr_init(&mut attr))?;
            let mut r = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            if r == 0 && robust {
                r = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if r == 0 {
                r = libc::pthread_mutex_init(m.as_ptr(), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            check(r)?;
        }
        Ok(PthreadMutex { _seg: seg, m, robust })
    }

    /// Whether it was made with `PTHREAD_MUTEX_ROBUST`.
    pub fn is_robust(&self) -> bool {
        self.robust
    }

    /// Blocks until the mutex is held (`pthread_mutex_lock`). `EOWNERDEAD` from a robust
    /// mutex is a success: the guard's [`owner_died`](PthreadMutexGuard::owner_died) is set.
    ///
    /// # Errors
    /// Any other errno, e.g. `ENOTRECOVERABLE` after an owner death that was never marked
    /// consistent.
    #[inline]
    pub fn lock(&self) -> io::Result<PthreadMutexGuard<'_>> {
        // SAFETY: `m` is an initialised pthread mutex in a mapping `self` keeps alive.
        match unsafe { libc::pthread_mutex_lock(self.m.as_ptr()) } {
            0 => Ok(PthreadMutexGuard { m: self, owner_died: false }),
            libc::EOWNERDEAD => Ok(PthreadMutexGuard { m: self, owner_died: true }),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }
}

impl PthreadMutexGuard<'_> {
    /// Whether the lock was taken from a holder that died (`EOWNERDEAD`).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// `pthread_mutex_consistent`: declares the state repaired after an owner death.
    ///
    /// # Errors
    /// `EINVAL` if the mutex is not robust or not in the owner-died state.
    pub fn mark_consistent(&mut self) -> io::Result<()> {
        // SAFETY: the guard proves this thread holds the initialised mutex.
        check(unsafe { libc::pthread_mutex_consistent(self.m.m.as_ptr()) })?;
        self.owner_died = false;
        Ok(())
    }
}

impl Drop for PthreadMutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard proves this thread holds the initialised mutex.
        unsafe { libc::pthread_mutex_unlock(self.m.m.as_ptr()) };
    }
}

/// The `raw_sync` crate's `Mutex` in an anonymous shared mapping (inherited by `fork`).
///
/// ```
/// use shmkit::bench::RawSyncMutex;
///
/// let m = RawSyncMutex::new()?;
/// drop(m.lock()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RawSyncMutex {
    // Declared before `_seg`, so dropped while the memory it points into is still mapped.
    m: Box<dyn raw_sync::locks::LockImpl>,
    _seg: Segment,
}

impl std::fmt::Debug for RawSyncMutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSyncMutex").field("at", &self.m.as_raw()).finish()
    }
}

/// Bytes for the mutex (`Mutex::size_of` is 40 on x86-64 glibc) and its empty data area.
const RAW_SYNC_BYTES: usize = 128;

impl RawSyncMutex {
    /// A new unlocked mutex, made by `raw_sync::locks::Mutex::new` in a fresh mapping.
    ///
    /// # Errors
    /// As [`Segment::anonymous`], or raw_sync's error.
    pub fn new() -> io::Result<RawSyncMutex> {
        use raw_sync::locks::{LockInit, Mutex};
        let seg = Segment::anonymous(Kind::RAW, RAW_SYNC_BYTES).map_err(other)?;
        if Mutex::size_of(None) > RAW_SYNC_BYTES {
            return Err(other("raw_sync's Mutex does not fit its slot"));
        }
        let base = seg.payload_ptr().cast::<u8>().as_ptr();
        // SAFETY: `base` starts RAW_SYNC_BYTES of zeroed memory in a mapping `seg` owns and
        // nothing else sees yet; raw_sync initialises a pthread mutex at `base` (its size
        // checked above) and records `base + size` as the (unused, empty) data pointer.
        let (m, _) = unsafe { Mutex::new(base, base.add(Mutex::size_of(None))) }.map_err(other)?;
        Ok(RawSyncMutex { m, _seg: seg })
    }

    /// Blocks until held; the guard unlocks on drop.
    ///
    /// # Errors
    /// raw_sync's error (a failed `pthread_mutex_lock`).
    #[inline]
    pub fn lock(&self) -> io::Result<raw_sync::locks::LockGuard<'_>> {
        self.m.lock().map_err(other)
    }
}

// ---------------------------------------------------------------------------------------
// Locks: uncontended and contended
// ---------------------------------------------------------------------------------------

/// A lock implementation under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockPeer {
    /// shmkit's robust [`Lock`] (from [`Lock::new`], alone in its mapping).
    Shmkit,
    /// [`FutexMutex`]: std's three-state futex mutex in shared memory.
    BareFutex3State,
    /// [`PthreadMutex`] with `PTHREAD_PROCESS_SHARED`.
    PthreadPshared,
    /// [`PthreadMutex`] with `PTHREAD_PROCESS_SHARED` and `PTHREAD_MUTEX_ROBUST`.
    PthreadPsharedRobust,
    /// [`RawSyncMutex`]: the `raw_sync` crate's `Mutex`.
    RawSync,
    /// `std::sync::Mutex<()>`, process-local (scale only).
    StdMutex,
}

impl LockPeer {
    /// Every implementation, shmkit first (`lock_uncontended/*`).
    pub const ALL: [LockPeer; 6] = [
        LockPeer::Shmkit,
        LockPeer::BareFutex3State,
        LockPeer::PthreadPshared,
        LockPeer::PthreadPsharedRobust,
        LockPeer::RawSync,
        LockPeer::StdMutex,
    ];

    /// The process-shared ones measured between two processes (`lock_contended_2proc/*`).
    pub const CONTENDED: [LockPeer; 4] =
        [LockPeer::Shmkit, LockPeer::BareFutex3State, LockPeer::PthreadPshared, LockPeer::RawSync];

    /// The benchmark id (`lock_uncontended/<name>`, `lock_contended_2proc/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            LockPeer::Shmkit => "shmkit",
            LockPeer::BareFutex3State => "bare_futex_3state",
            LockPeer::PthreadPshared => "pthread_pshared",
            LockPeer::PthreadPsharedRobust => "pthread_pshared_robust",
            LockPeer::RawSync => "raw_sync",
            LockPeer::StdMutex => "std_mutex",
        }
    }
}

/// Times `iters` lock + unlock pairs in one thread with `f`.
#[inline]
fn time_loop(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

/// Times `iters` uncontended lock + unlock pairs of `peer` in the calling thread.
///
/// # Errors
/// Creating the lock failed, or a lock call returned an error (or `OwnerDied`).
pub fn lock_uncontended(peer: LockPeer, iters: u64) -> io::Result<Duration> {
    use std::hint::black_box;
    let mut failed = false;
    let d = match peer {
        LockPeer::Shmkit => {
            let lock = Lock::new().map_err(other)?;
            time_loop(iters, || {
                let g = lock.lock();
                failed |= g.is_err();
                black_box(&g);
            })
        }
        LockPeer::BareFutex3State => {
            let m = FutexMutex::anonymous()?;
            time_loop(iters, || {
                let g = m.lock();
                black_box(&g);
            })
        }
        LockPeer::PthreadPshared | LockPeer::PthreadPsharedRobust => {
            let m = PthreadMutex::new(peer == LockPeer::PthreadPsharedRobust)?;
            time_loop(iters, || {
                let g = m.lock();
                failed |= !matches!(g, Ok(ref g) if !g.owner_died());
                black_box(&g);
            })
        }
        LockPeer::RawSync => {
            let m = RawSyncMutex::new()?;
            time_loop(iters, || {
                let g = m.lock();
                failed |= g.is_err();
                black_box(&g);
            })
        }
        LockPeer::StdMutex => {
            let m = CachePadded::new(std::sync::Mutex::new(()));
            time_loop(iters, || {
                let g = m.lock();
                failed |= g.is_err();
                black_box(&g);
            })
        }
    };
    if failed {
        return Err(other(format!("{}: a lock call failed", peer.name())));
    }
    Ok(d)
}

/// The child's progress in a two-process run.
const READY: u32 = 1;
const DONE: u32 = 2;

/// The start line of a two-process run ([`race_2proc`]), each word on its own cache line.
#[repr(C)]
#[derive(Debug, Default)]
struct Handshake {
    /// 0, then READY, then DONE, written by the child.
    child: CachePadded<AtomicU32>,
    /// Set by the parent to start both loops together.
    go: CachePadded<AtomicU32>,
}

// SAFETY: atomics only, `#[repr(C)]`; zero is the initial state.
unsafe impl Shareable for Handshake {}

/// The critical section: a non-atomic increment.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    // Relaxed: the lock orders critical sections. A load and a store rather than a
    // `fetch_add`, so that two processes inside at once would lose an increment.
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// A zeroed `u64` counter alone on its cache line in a new anonymous shared mapping.
pub(crate) fn shared_counter() -> io::Result<Shared<CachePadded<AtomicU64>>> {
    Shared::anonymous(Kind::RAW, |_| {}).map_err(other)
}

/// Times two processes (parent and a forked child, pinned to different cores) each running
/// `iters` lock / increment / unlock rounds on `peer`, started together. The result is the
/// parent's wall time from the start signal until both are done, so one iteration is one
/// critical section in *each* process. The final count must be `2 * iters`.
///
/// # Errors
/// An OS error, `TimedOut` if the child stops, a lock error, or a final count other than
/// `2 * iters` (mutual exclusion broken).
///
/// # Panics
/// If `peer` is [`LockPeer::StdMutex`] or [`LockPeer::PthreadPsharedRobust`] (use
/// [`LockPeer::CONTENDED`]); the latter only because it adds nothing here.
pub fn lock_contended_2proc(peer: LockPeer, iters: u64) -> io::Result<Duration> {
    let counter = shared_counter()?;
    let counter: &AtomicU64 = &counter;
    let elapsed = match peer {
        LockPeer::Shmkit => {
            let lock = Lock::new().map_err(other)?;
            race_2proc(iters, iters, || match lock.lock() {
                Ok(_g) => {
                    bump(counter);
                    true
                }
                Err(_) => false,
            })
        }
        LockPeer::BareFutex3State => {
            let m = FutexMutex::anonymous()?;
            race_2proc(iters, iters, || {
                let _g = m.lock();
                bump(counter);
                true
            })
        }
        LockPeer::PthreadPshared => {
            let m = PthreadMutex::new(false)?;
            race_2proc(iters, iters, || match m.lock() {
                Ok(_g) => {
                    bump(counter);
                    true
                }
                Err(_) => false,
            })
        }
        LockPeer::RawSync => {
            let m = RawSyncMutex::new()?;
            race_2proc(iters, iters, || match m.lock() {
                Ok(_g) => {
                    bump(counter);
                    true
                }
                Err(_) => false,
            })
        }
        LockPeer::PthreadPsharedRobust | LockPeer::StdMutex => {
            panic!("lock_contended_2proc: {} is not in LockPeer::CONTENDED", peer.name())
        }
    }?;
    // Relaxed: `race_2proc` Acquire-loaded the child's DONE, which follows its increments.
    check_count(counter.load(Ordering::Relaxed), 2 * iters)?;
    Ok(elapsed)
}

/// `Ok` if a shared counter ended at `expected`; otherwise mutual exclusion (or atomicity)
/// was broken.
pub(crate) fn check_count(count: u64, expected: u64) -> io::Result<()> {
    if count != expected {
        return Err(other(format!("counter is {count}, expected {expected}: mutual exclusion broken")));
    }
    Ok(())
}

/// Runs `op` `parent_ops` times here and `child_ops` times in a forked child pinned to the
/// other core, both loops released by one start signal; returns the parent's wall time from
/// that signal until both loops are done. `op` returning `false` is a failure. Once this
/// returns `Ok`, everything the child wrote before finishing is visible here.
///
/// The child computes its cached process identity before it reports ready, so the first
/// lock call on its side does not read `/proc` inside the timed interval.
pub(crate) fn race_2proc(parent_ops: u64, child_ops: u64, op: impl Fn() -> bool) -> io::Result<Duration> {
    let st = Shared::<Handshake>::anonymous(Kind::RAW, |_| {}).map_err(other)?;
    let st: &Handshake = &st;
    let (child, old) = spawn_pinned(|| {
        let _ = crate::util::proc::ProcessToken::current();
        // SYNC(child): Release/Acquire hand-shakes; they also order the child's writes
        // before the parent's final reads.
        st.child.store(READY, Ordering::Release);
        if !spin_until(Instant::now() + PEER_TIMEOUT, || st.go.load(Ordering::Acquire) != 0) {
            return 2;
        }
        for _ in 0..child_ops {
            if !op() {
                return 3;
            }
        }
        st.child.store(DONE, Ordering::Release);
        0
    })?;
    let result = (|| {
        let deadline = Instant::now() + PEER_TIMEOUT;
        if !spin_until(deadline, || st.child.load(Ordering::Acquire) == READY) {
            return Err(timeout_err("two-process child start"));
        }
        let start = Instant::now();
        st.go.store(1, Ordering::Release);
        for _ in 0..parent_ops {
            if !op() {
                return Err(other("an operation failed in the parent"));
            }
        }
        // SYNC(child): Acquire pairs with the child's DONE store, so its writes are visible
        // to the caller's check.
        if !spin_until(deadline, || st.child.load(Ordering::Acquire) == DONE) {
            return Err(timeout_err("two-process child finish"));
        }
        Ok(start.elapsed())
    })();
    finish(child, old, result)
}

// ---------------------------------------------------------------------------------------
// Event round trip
// ---------------------------------------------------------------------------------------

/// An implementation of the event wake-up round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventPeer {
    /// Two shmkit [`Event`]s: the parent sets `ping` and waits for `pong`, the child waits
    /// for `ping`, clears it and sets `pong`.
    Shmkit,
    /// Two pipes, 8-byte `write`/`read` ([`RttPeer::Pipe`](super::RttPeer::Pipe)).
    Pipe,
}

impl EventPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [EventPeer; 2] = [EventPeer::Shmkit, EventPeer::Pipe];

    /// The benchmark id (`event_wake_rtt/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            EventPeer::Shmkit => "shmkit",
            EventPeer::Pipe => "pipe",
        }
    }
}

/// Times `iters` wake-up round trips (after one warm-up round) between the parent and a
/// child pinned to another core.
///
/// With [`EventPeer::Shmkit`] the child waits with [`Event::wait`] and the parent with
/// [`Event::wait_timeout`] (a 60 s bound, one clock read per round), so a dead child cannot
/// hang the run.
///
/// # Errors
/// An OS error, or `TimedOut` if the child stops answering.
pub fn event_wake_rtt(peer: EventPeer, iters: u64) -> io::Result<Duration> {
    match peer {
        EventPeer::Pipe => super::rtt(super::RttPeer::Pipe, iters),
        EventPeer::Shmkit => {
            let ping = Event::new().map_err(other)?;
            let pong = Event::new().map_err(other)?;
            let rounds = iters + 1;
            let (child, old) = spawn_pinned(|| {
                for _ in 0..rounds {
                    ping.wait();
                    // Cleared before answering: the parent sets `ping` again only after
                    // seeing `pong`, so this never erases the next round's set.
                    ping.clear();
                    pong.set();
                }
                0
            })?;
            let mut start = Instant::now();
            let mut result = Ok(());
            for i in 1..=rounds {
                if i == 2 {
                    start = Instant::now();
                }
                ping.set();
                if !pong.wait_timeout(PEER_TIMEOUT) {
                    result = Err(timeout_err("event pong"));
                    break;
                }
                pong.clear();
            }
            let elapsed = start.elapsed();
            finish(child, old, result.map(|()| elapsed))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Owner-died recovery
// ---------------------------------------------------------------------------------------

/// How the holder dies and who recovers the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerDiedPeer {
    /// shmkit [`Lock`]; the parent calls `lock()` right after `kill`, while the child is
    /// still dying and then a zombie (not reaped). A waiter that finds the owner alive
    /// parks and re-checks every [`LIVENESS_INTERVAL`](crate::sync::LIVENESS_INTERVAL).
    ShmkitZombie,
    /// shmkit [`Lock`]; the parent waits for the child's exit and reaps it (`waitpid`)
    /// before `lock()`. The time includes the wait and the reap.
    ShmkitReaped,
    /// A robust process-shared [`PthreadMutex`]; the parent calls `pthread_mutex_lock` right
    /// after `kill` and is woken by the kernel's robust-list walk at the child's exit.
    PthreadRobust,
}

impl OwnerDiedPeer {
    /// Every variant, shmkit first.
    pub const ALL: [OwnerDiedPeer; 3] =
        [OwnerDiedPeer::ShmkitZombie, OwnerDiedPeer::ShmkitReaped, OwnerDiedPeer::PthreadRobust];

    /// The benchmark id (`owner_died_recovery/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            OwnerDiedPeer::ShmkitZombie => "shmkit_zombie",
            OwnerDiedPeer::ShmkitReaped => "shmkit_reaped",
            OwnerDiedPeer::PthreadRobust => "pthread_robust",
        }
    }
}

/// Blocks until `pid` (our child) has exited, without reaping it (`waitid` with `WNOWAIT`),
/// so [`ForkedChild::try_wait`] reaps it at once afterwards.
fn wait_exited(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data; all zeros is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own unreaped child with a valid siginfo pointer.
        let r =
            unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Times `iters` recoveries from a killed holder. Each iteration forks a child that takes
/// the lock, says so through an atomic and sleeps in `pause`; the parent then starts the
/// clock, SIGKILLs it and stops the clock when its own lock call returns the owner-died
/// result. Only that interval is summed; the fork, the hand-shake and the final reap are not.
///
/// # Errors
/// An OS error, `TimedOut` if a child never takes the lock, or a lock call that did not
/// report the owner's death.
pub fn owner_died_recovery(peer: OwnerDiedPeer, iters: u64) -> io::Result<Duration> {
    let held = Shared::<CachePadded<AtomicU32>>::anonymous(Kind::RAW, |_| {}).map_err(other)?;
    let mut total = Duration::ZERO;
    match peer {
        OwnerDiedPeer::ShmkitZombie | OwnerDiedPeer::ShmkitReaped => {
            let lock = Lock::new().map_err(other)?;
            let reap = peer == OwnerDiedPeer::ShmkitReaped;
            for _ in 0..iters {
                total += one_death(
                    &held,
                    || match lock.lock() {
                        // Never unlocked: the child dies holding it.
                        Ok(g) => {
                            std::mem::forget(g);
                            true
                        }
                        Err(_) => false,
                    },
                    reap,
                    || match lock.lock() {
                        Err(died) => {
                            let g: LockGuard<'_> = died.into_inner();
                            LockGuard::mark_consistent(&g);
                            Ok(())
                        }
                        Ok(_) => Err(other("shmkit lock() returned Ok after its holder was killed")),
                    },
                )?;
            }
        }
        OwnerDiedPeer::PthreadRobust => {
            let m = PthreadMutex::new(true)?;
            for _ in 0..iters {
                total += one_death(
                    &held,
                    || match m.lock() {
                        Ok(g) if !g.owner_died() => {
                            std::mem::forget(g);
                            true
                        }
                        _ => false,
                    },
                    false,
                    || {
                        let mut g = m.lock()?;
                        if !g.owner_died() {
                            return Err(other("pthread_mutex_lock did not return EOWNERDEAD"));
                        }
                        g.mark_consistent()
                    },
                )?;
            }
        }
    }
    Ok(total)
}

/// One iteration of [`owner_died_recovery`]: `take` runs in the child, `recover` in the
/// parent after the kill (and, if `reap`, after the child is reaped).
fn one_death(
    held: &AtomicU32,
    take: impl Fn() -> bool,
    reap: bool,
    recover: impl FnOnce() -> io::Result<()>,
) -> io::Result<Duration> {
    held.store(0, Ordering::Relaxed);
    let (mut child, old) = spawn_pinned(|| {
        if !take() {
            return 2;
        }
        // SYNC(held): Release after the lock is taken; pairs with the parent's Acquire.
        held.store(1, Ordering::Release);
        loop {
            // SAFETY: pause has no preconditions; SIGKILL ends it.
            unsafe { libc::pause() };
        }
    })?;
    let result = (|| {
        if !spin_until(Instant::now() + PEER_TIMEOUT, || held.load(Ordering::Acquire) == 1) {
            return Err(timeout_err("owner-died child never took the lock"));
        }
        let start = Instant::now();
        child.signal(libc::SIGKILL)?;
        if reap {
            wait_exited(child.pid())?;
            if child.try_wait()?.is_none() {
                return Err(other("child exited but could not be reaped"));
            }
        }
        recover()?;
        Ok(start.elapsed())
    })();
    restore_affinity(old);
    // Dropping an unreaped ForkedChild SIGKILLs (again) and reaps it.
    drop(child);
    result
}
