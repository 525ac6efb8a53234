//! Cross-process wait and wake, and the adaptive waiting every blocking primitive shares.
//!
//! # The raw futex
//! [`wait`] sleeps while a `u32` word holds an expected value, until an absolute deadline;
//! [`wake`] wakes sleepers on that word. Both work *between processes*: the word may live in
//! a [`Segment`](crate::shm::Segment) mapped at different addresses, because shmkit never
//! passes `FUTEX_PRIVATE_FLAG` (a private futex is keyed by the address space and never
//! wakes another process; the `atomic-wait` crate passes it and has no timeout, which is
//! why it is not used here). Deadlines are absolute `CLOCK_MONOTONIC` times
//! (`FUTEX_WAIT_BITSET`), so retrying after `EINTR` never stretches them.
//!
//! # Adaptive waiting
//! A sleeping wake-up costs tens of microseconds on a small VM, a spinning hand-off a tenth
//! of one, and spinning is wasted when the peer is descheduled. [`WaitCell`] therefore polls
//! a condition while spinning briefly, then while yielding the core, and only then parks on
//! its futex word; its notifier makes no syscall while nobody is parked. Its waits are
//! [`WaitStrategy`]-driven so benchmarks can compare the policies.
//!
//! ```text
//! waiter                                   notifier
//! poll() ─ no ─ snooze (spin → yield) ─┐   make the condition true (Release)
//!   ▲                                  │   light fence            ── SYNC(sleepers)
//!   └──────────────────────────────────┘   if sleepers > 0:
//! s = seq; sleepers += 1; heavy fence          seq += 1; futex_wake(seq)
//! poll() ─ yes → sleepers -= 1, done
//!   no → futex_wait(seq, s, deadline)      (returns at once if seq != s)
//! ```
//! Either the notifier sees `sleepers > 0` and bumps `seq` (so the wait returns), or the
//! waiter's second poll sees the condition: the two fences forbid both missing. The fences
//! are asymmetric: the notifier, which runs once per message, issues only a compiler fence,
//! and the waiter, about to sleep anyway, issues `membarrier(GLOBAL_EXPEDITED)`, which runs
//! a full barrier on every CPU where a shmkit process runs (see `util/membarrier.rs`; where
//! the kernel lacks it, both are `fence(SeqCst)` and parks re-check every millisecond).
//! `loom-tests/tests/futex.rs` checks this against a futex model that really blocks.
//!
//! # Dead and hostile peers
//! The words live in memory a peer can write. A corrupted `sleepers` count costs either
//! useless wake syscalls or a missed wake-up; a notifier killed between its store and its
//! wake also misses one. Parked waiters therefore re-poll at least every
//! [`WaitStrategy::max_park`], so neither can hang a waiter forever.

#[cfg(all(target_os = "linux", not(loom)))]
#[path = "linux.rs"]
mod platform;
#[cfg(loom)]
#[path = "loom.rs"]
mod platform;

use std::fmt;
use std::time::{Duration, Instant};

use crate::primitive::atomic::{AtomicU32, Ordering};
use crate::util::backoff::Backoff;
use crate::util::membarrier;

/// Whether this process's notifiers use the cheap half of the asymmetric fence (it registered
/// for `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` when it first mapped a segment). False on
/// kernels without it (then both sides use `fence(SeqCst)`), and before any mapping.
pub fn asymmetric_fence() -> bool {
    membarrier::registered()
}

/// How long a waiter parks at most when the membarrier is unavailable, since a notifier in a
/// registered process may then skip the fence that would have made it see the waiter.
const FALLBACK_PARK: Duration = Duration::from_millis(1);

/// How a [`wait`] ended. Any of them may be followed by a re-check of the word: a wake-up can
/// be spurious, and the value may change again right after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The thread slept and was woken (or woke spuriously).
    Woken,
    /// The word did not hold `expected` when the call began; no sleep happened.
    Mismatch,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, until woken or until `deadline` (`None`: no deadline).
///
/// Works across processes when `word` is in shared memory. Retries `EINTR` internally with
/// the same absolute deadline.
///
/// # Examples
/// ```
/// use std::sync::atomic::AtomicU32;
/// use std::time::{Duration, Instant};
/// use shmkit::futex::{wait, WaitOutcome};
///
/// let word = AtomicU32::new(7);
/// assert_eq!(wait(&word, 8, None), WaitOutcome::Mismatch);
/// let soon = Instant::now() + Duration::from_millis(5);
/// assert_eq!(wait(&word, 7, Some(soon)), WaitOutcome::TimedOut);
/// ```
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    platform::wait(word, expected, deadline)
}

/// Wakes up to `n` threads (in any process) sleeping in [`wait`] on `word`; returns how many.
///
/// # Examples
/// ```
/// use std::sync::atomic::AtomicU32;
/// assert_eq!(shmkit::futex::wake(&AtomicU32::new(0), 1), 0);
/// ```
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    platform::wake(word, n)
}

/// Sleeps while every `word` holds its `expected` value, until one is woken or `deadline`
/// passes: `futex_waitv(2)`, shared between processes like [`wait`]. With more than 128
/// words, or on a kernel without `futex_waitv`, it parks on the first word for at most a
/// millisecond (the caller re-polls, as after any wake-up).
///
/// # Examples
/// ```
/// use std::sync::atomic::AtomicU32;
/// use std::time::{Duration, Instant};
/// use shmkit::futex::{wait_any, WaitOutcome};
///
/// let (a, b) = (AtomicU32::new(1), AtomicU32::new(2));
/// assert_eq!(wait_any(&[(&a, 1), (&b, 3)], None), WaitOutcome::Mismatch);
/// let soon = Instant::now() + Duration::from_millis(5);
/// assert_ne!(wait_any(&[(&a, 1), (&b, 2)], Some(soon)), WaitOutcome::Mismatch);
/// ```
pub fn wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> WaitOutcome {
    platform::wait_any(words, deadline)
}

/// When a parked waiter should wake to re-check for dead or silent peers: `after` from now.
/// Never under loom: loom kills no peers, and an uncapped wait really blocks in the model
/// futex, so a lost wake-up shows up as a deadlock instead of being papered over.
pub(crate) fn recheck_after(after: Duration) -> Option<Instant> {
    if cfg!(loom) {
        None
    } else {
        Instant::now().checked_add(after)
    }
}

/// The earlier of two optional deadlines (`None` is "never").
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Turns a timeout into a deadline; `None` (wait forever) if `now + timeout` overflows, as
/// crossbeam's `send_timeout` does.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// assert!(shmkit::futex::deadline_after(Duration::MAX).is_none());
/// assert!(shmkit::futex::deadline_after(Duration::from_secs(1)).is_some());
/// ```
pub fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The deadline passed before the awaited condition held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedOut;

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting")
    }
}

impl std::error::Error for TimedOut {}

/// How a [`WaitCell`] waiter spends its time before sleeping.
///
/// # Examples
/// ```
/// use shmkit::futex::WaitStrategy;
/// let patient = WaitStrategy { yields: 50, ..WaitStrategy::ADAPTIVE };
/// assert!(patient.park);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitStrategy {
    /// Polls separated by one `spin_loop` pause each, before yielding.
    pub spins: u32,
    /// Polls separated by one `sched_yield` each, after spinning.
    pub yields: u32,
    /// Whether to park on the futex afterwards; `false` keeps yielding forever.
    pub park: bool,
    /// Longest single futex sleep before polling again, so that a peer killed between its
    /// store and its wake, or a corrupted waiter count, cannot hang the waiter.
    pub max_park: Duration,
}

/// Measured on the 2-core VM (rtt_8B ping-pong): 200 polls (~5 µs of pauses) catch a running
/// peer's reply (81 ns round trip vs 79 ns for a pure spin); more spinning gained nothing.
/// With a CPU hog sharing a core, each extra `sched_yield` hands the hog a time slice: 3 to 10
/// yields cost 5–150 µs per round trip where 0–1 cost 45–85 ns, so the yield phase is short.
/// Under loom each pause is a scheduling point, so the budgets shrink to keep models small.
const SPINS: u32 = if cfg!(loom) { 1 } else { 200 };
const YIELDS: u32 = if cfg!(loom) { 1 } else { 2 };

impl WaitStrategy {
    /// Poll 200 times between pauses (a few µs), yield twice, then park: near-spin latency
    /// while the peer is running, no CPU while it is idle. The default.
    pub const ADAPTIVE: WaitStrategy =
        WaitStrategy { spins: SPINS, yields: YIELDS, park: true, max_park: Duration::from_millis(100) };
    /// Park at once on every wait (the "always sleep" baseline in benchmarks).
    pub const SLEEP: WaitStrategy = WaitStrategy { spins: 0, yields: 0, ..Self::ADAPTIVE };
    /// Never park: spin, then yield forever. Burns a core; for latency benchmarks.
    pub const SPIN: WaitStrategy = WaitStrategy { park: false, ..Self::ADAPTIVE };
}

impl Default for WaitStrategy {
    fn default() -> Self {
        Self::ADAPTIVE
    }
}

/// A place for processes to wait for a condition that other processes make true.
///
/// Eight bytes, `#[repr(C)]`, valid when zeroed: put it in a [`Segment`](crate::shm::Segment)
/// next to the data it guards. Waiters call [`WaitCell::wait_for`] with a poll closure; whoever
/// changes the data calls [`WaitCell::notify_one`] or [`WaitCell::notify_all`] afterwards,
/// which costs a compiler fence and a load while nobody is parked.
///
/// ```text
/// offset 0  seq       u32  bumped by each notify that finds sleepers; the futex word
/// offset 4  sleepers  u32  waiters parked or about to park
/// ```
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmkit::futex::WaitCell;
///
/// let cell = WaitCell::new();
/// let data = AtomicU64::new(0);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         data.store(42, Ordering::Release);
///         cell.notify_all();
///     });
///     let v = cell.wait_for(|| match data.load(Ordering::Acquire) { 0 => None, v => Some(v) }, None);
///     assert_eq!(v, Ok(42));
/// });
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct WaitCell {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl WaitCell {
    /// A cell with nobody waiting (all zeros, like a fresh segment).
    pub fn new() -> Self {
        WaitCell { seq: AtomicU32::new(0), sleepers: AtomicU32::new(0) }
    }

    /// Waits with [`WaitStrategy::ADAPTIVE`] until `poll` returns `Some`, or until `deadline`.
    ///
    /// `poll` must read the shared state with Acquire (or stronger) loads.
    ///
    /// # Errors
    /// [`TimedOut`] if `deadline` passed while `poll` kept returning `None`.
    pub fn wait_for<R>(
        &self,
        poll: impl FnMut() -> Option<R>,
        deadline: Option<Instant>,
    ) -> Result<R, TimedOut> {
        self.wait_with(WaitStrategy::ADAPTIVE, poll, deadline)
    }

    /// [`WaitCell::wait_for`] with an explicit strategy.
    ///
    /// # Errors
    /// [`TimedOut`] if `deadline` passed while `poll` kept returning `None`.
    pub fn wait_with<R>(
        &self,
        strategy: WaitStrategy,
        poll: impl FnMut() -> Option<R>,
        deadline: Option<Instant>,
    ) -> Result<R, TimedOut> {
        adaptive(strategy, poll, deadline, |poll, max_park| {
            // Relaxed: a stale `seq` only makes the futex wait return at once (Mismatch).
            let seq = self.seq.load(Ordering::Relaxed);
            self.sleepers.fetch_add(1, Ordering::Relaxed);
            // SYNC(sleepers): orders our `sleepers += 1` before the re-poll below; pairs with
            // the light fence in `notify`. Of the two store→load pairs, at least one observes
            // the other's store: we see the condition, or the notifier sees us and bumps `seq`.
            let max_park = max_park(membarrier::heavy());
            let r = poll();
            if r.is_none() {
                wait(&self.seq, seq, earliest(deadline, recheck_after(max_park)));
            }
            // Relaxed: the count is only a hint for notifiers; wrapping after a corruption
            // costs spare wake syscalls, never a lost wake-up (see the module docs).
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            r
        })
    }

    /// Waits on several cells at once (Python's `multiprocessing.connection.wait`): polls,
    /// spins and yields like [`WaitCell::wait_for`], then registers as a sleeper on every
    /// cell and parks in [`wait_any`] until one is notified. `poll` must read the shared
    /// state with Acquire loads; each cell's notifier must notify after making its part of
    /// the condition true.
    ///
    /// A `notify_one` on a cell that other threads also wait on may wake this waiter instead
    /// of them; a caller that returns without consuming what it was woken for should pass
    /// the wake-up on (as [`pipe::wait`](crate::pipe::wait) does).
    ///
    /// # Errors
    /// [`TimedOut`] if `deadline` passed while `poll` kept returning `None`.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use shmkit::futex::WaitCell;
    ///
    /// let (cells, flags) = ([WaitCell::new(), WaitCell::new()], [AtomicU32::new(0), AtomicU32::new(0)]);
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         flags[1].store(1, Ordering::Release);
    ///         cells[1].notify_all();
    ///     });
    ///     let ready = WaitCell::wait_any(&[&cells[0], &cells[1]], || {
    ///         flags.iter().position(|f| f.load(Ordering::Acquire) != 0)
    ///     }, None);
    ///     assert_eq!(ready, Ok(1));
    /// });
    /// ```
    pub fn wait_any<R>(
        cells: &[&WaitCell],
        poll: impl FnMut() -> Option<R>,
        deadline: Option<Instant>,
    ) -> Result<R, TimedOut> {
        Self::wait_any_with(cells, WaitStrategy::ADAPTIVE, poll, deadline)
    }

    /// [`WaitCell::wait_any`] with an explicit strategy.
    pub(crate) fn wait_any_with<R>(
        cells: &[&WaitCell],
        strategy: WaitStrategy,
        mut poll: impl FnMut() -> Option<R>,
        deadline: Option<Instant>,
    ) -> Result<R, TimedOut> {
        let mut words: Vec<(&AtomicU32, u32)> = Vec::with_capacity(cells.len());
        if cells.is_empty() {
            // Nothing can notify: poll at the fallback interval until the deadline.
            loop {
                if let Some(r) = poll() {
                    return Ok(r);
                }
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    return Err(TimedOut);
                }
                let nap = deadline.map_or(FALLBACK_PARK, |d| (d - now).min(FALLBACK_PARK));
                std::thread::sleep(nap);
            }
        }
        adaptive(strategy, poll, deadline, |poll, max_park| {
            words.clear();
            for c in cells {
                // Relaxed: a stale `seq` only makes the wait return at once.
                words.push((&c.seq, c.seq.load(Ordering::Relaxed)));
                c.sleepers.fetch_add(1, Ordering::Relaxed);
            }
            // SYNC(sleepers): as in `wait_with`, for every cell at once.
            let max_park = max_park(membarrier::heavy());
            let r = poll();
            if r.is_none() {
                wait_any(&words, earliest(deadline, recheck_after(max_park)));
            }
            for c in cells {
                // Relaxed: as in `wait_with`.
                c.sleepers.fetch_sub(1, Ordering::Relaxed);
            }
            r
        })
    }

    /// Wakes one parked waiter, if any. Call after making the condition true.
    #[inline]
    pub fn notify_one(&self) {
        self.notify(1);
    }

    /// Two-phase waiting, for a condition checked under a lock (a condition variable): call
    /// `register` while the condition is still protected, release the lock, [`park`], then
    /// [`unregister`]. A notify between `register` and `park` is not lost: it moves the
    /// sequence number, so `park` returns at once.
    ///
    /// [`park`]: WaitCell::park
    /// [`unregister`]: WaitCell::unregister
    ///
    /// # Examples
    /// ```
    /// use std::time::{Duration, Instant};
    /// use shmkit::futex::WaitCell;
    ///
    /// let cell = WaitCell::new();
    /// let seq = cell.register();
    /// cell.notify_all(); // e.g. from another process, before we park
    /// assert!(cell.park(seq, Some(Instant::now() + Duration::from_secs(5))));
    /// cell.unregister();
    /// ```
    pub fn register(&self) -> u32 {
        // Relaxed: a stale `seq` only makes the futex wait return at once.
        let seq = self.seq.load(Ordering::Relaxed);
        self.sleepers.fetch_add(1, Ordering::Relaxed);
        // SYNC(sleepers): as in `wait_with`; if the membarrier is unavailable, `park`
        // re-checks every FALLBACK_PARK instead of trusting the notifier's light fence.
        membarrier::heavy();
        seq
    }

    /// Parks until a notify moves the sequence past `seq` (true; possibly spurious) or until
    /// `deadline` (false). Re-checks at least every [`WaitStrategy::ADAPTIVE`]`.max_park`, so a
    /// notifier killed between its bump and its wake costs at most that long.
    pub fn park(&self, seq: u32, deadline: Option<Instant>) -> bool {
        loop {
            let cap = if membarrier::registered() { WaitStrategy::ADAPTIVE.max_park } else { FALLBACK_PARK };
            let until = earliest(deadline, recheck_after(cap));
            let out = wait(&self.seq, seq, until);
            // Relaxed: whoever acts on the notification re-checks under its own lock.
            if out != WaitOutcome::TimedOut || self.seq.load(Ordering::Relaxed) != seq {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            // Only the cap expired: park again.
        }
    }

    /// Ends a wait announced by [`WaitCell::register`].
    pub fn unregister(&self) {
        self.sleepers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Wakes every parked waiter. Call after making the condition true.
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Wakes up to `n` parked waiters. Call after making the condition true.
    #[inline]
    pub fn notify(&self, n: u32) {
        // SYNC(sleepers): orders the caller's condition store before the `sleepers` load;
        // pairs with the waiter's heavy fence (a membarrier, or a SeqCst fence).
        membarrier::light();
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake_sleepers(n);
        }
    }

    /// Wakes one parked waiter if there is one and `cond()` holds (checked only then, so an
    /// expensive condition costs nothing while nobody sleeps). For passing a wake-up on: a
    /// consumer that took a message and sees the next one ready wakes another consumer.
    #[inline]
    pub fn notify_one_if(&self, cond: impl FnOnce() -> bool) {
        // SYNC(sleepers): as in `notify`.
        membarrier::light();
        if self.sleepers.load(Ordering::Relaxed) != 0 && cond() {
            self.wake_sleepers(1);
        }
    }

    #[cold]
    fn wake_sleepers(&self, n: u32) {
        // Release is enough: the waiter's futex compares the value, not the data.
        self.seq.fetch_add(1, Ordering::Release);
        wake(&self.seq, n);
    }

    /// How many waiters are parked or about to park (a hint: it may change at once).
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::Relaxed)
    }
}

/// The adaptive wait shared by [`WaitCell::wait_with`] and [`WaitCell::wait_any`]: poll,
/// spin, yield, then `sleep` — which registers as a sleeper, issues the heavy fence, re-polls
/// and parks — until `poll` gives a result or `deadline` passes. `sleep` gets the poll and a
/// function from "the heavy fence is a membarrier" to how long it may park, and returns the
/// re-poll's result.
fn adaptive<R, P: FnMut() -> Option<R>>(
    strategy: WaitStrategy,
    mut poll: P,
    deadline: Option<Instant>,
    mut sleep: impl FnMut(&mut P, &dyn Fn(bool) -> Duration) -> Option<R>,
) -> Result<R, TimedOut> {
    let mut backoff = Backoff::new(strategy.spins, strategy.yields);
    // Without the membarrier, a notifier's light fence may miss us: re-check sooner.
    let max_park = |heavy: bool| if heavy { strategy.max_park } else { FALLBACK_PARK.min(strategy.max_park) };
    loop {
        if let Some(r) = poll() {
            return Ok(r);
        }
        let expired = || deadline.is_some_and(|d| Instant::now() >= d);
        if !strategy.park || !backoff.is_completed() {
            // Reading the clock costs ~20 ns: skip it while spinning (the spin phase
            // lasts a few microseconds in all).
            if !backoff.is_spinning() && expired() {
                return Err(TimedOut);
            }
            backoff.snooze();
            continue;
        }
        if expired() {
            return Err(TimedOut);
        }
        if let Some(r) = sleep(&mut poll, &max_park) {
            return Ok(r);
        }
    }
}
