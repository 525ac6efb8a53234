//! `Barrier`: `n` processes wait until all have arrived (`multiprocessing.Barrier`).
//!
//! ```text
//! gen       u32  futex word: bits 0..=30 generation, bit 31 BROKEN
//! parties   u32  fixed at creation (1..=MAX_PARTIES)
//! arrived   u32  arrivals in the current generation
//! slots     [pid u32, start u64] × MAX_PARTIES: who is waiting, for liveness checks
//! ```
//! An arrival takes an index with `fetch_add`; the last one resets `arrived` and then moves
//! `gen` on by one (Release), waking all. Others park on `gen` and pass when it reads
//! `generation + 1`. `abort` (and a wait that times out, or finds a waiting participant dead)
//! sets BROKEN; `reset` moves the generation on by two, so waiters of the old generation see
//! neither `g + 1` nor a clean word and report `Broken`.
//!
//! A participant that dies *before* arriving cannot be told from a slow one: waiters then
//! wait until their deadline, as in Python. One that dies while waiting is noticed within
//! [`LIVENESS_INTERVAL`](super::LIVENESS_INTERVAL) and breaks the barrier.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::BarrierError;
use super::raw::LIVENESS_INTERVAL;
use crate::futex;
use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::shm::{Kind, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError};
use crate::util::proc::{Liveness, ProcessToken};

/// The most parties a barrier may have.
pub const MAX_PARTIES: u32 = 64;
const BROKEN: u32 = 1 << 31;
const GEN_MASK: u32 = BROKEN - 1;

#[repr(C)]
#[derive(Debug, Default)]
struct Slot {
    pid: AtomicU32,
    _pad: AtomicU32,
    start: AtomicU64,
}

/// A barrier's shared state. `#[repr(C)]`, valid when zeroed (then given its parties with
/// [`RawBarrier::init`]).
#[repr(C)]
#[derive(Debug)]
pub struct RawBarrier {
    gen: AtomicU32,
    parties: AtomicU32,
    arrived: AtomicU32,
    _pad: AtomicU32,
    slots: [Slot; MAX_PARTIES as usize],
}

// SAFETY: u32/u64 atomics only, `#[repr(C)]`; every value is handled (parties is validated
// when opened, indices are bounded before use).
unsafe impl Shareable for RawBarrier {}

pub(crate) const BARRIER_KIND: Kind = Kind::new(8, std::mem::size_of::<RawBarrier>() as u64);

/// What a successful [`Barrier::wait`] returns.
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
    /// Sets the number of parties; call before sharing. `parties` is clamped to
    /// `1..=MAX_PARTIES`.
    pub fn init(&self, parties: u32) {
        self.parties.store(parties.clamp(1, MAX_PARTIES), Ordering::Relaxed);
    }

    fn parties(&self) -> u32 {
        // A peer may have scribbled on it: keep it in range so slot indices stay in bounds.
        self.parties.load(Ordering::Relaxed).clamp(1, MAX_PARTIES)
    }

    fn break_from(&self, g: u32) {
        // Only the generation we waited in may be broken by us.
        let _ = self.gen.compare_exchange(g, g | BROKEN, Ordering::AcqRel, Ordering::Relaxed);
        futex::wake(&self.gen, u32::MAX);
    }

    /// Breaks the barrier: current and future waiters get `Broken` until [`RawBarrier::reset`].
    pub fn abort(&self) {
        self.gen.fetch_or(BROKEN, Ordering::AcqRel);
        futex::wake(&self.gen, u32::MAX);
    }

    /// Back to the empty state; waiters of the current generation get `Broken`.
    pub fn reset(&self) {
        let g = self.gen.load(Ordering::Relaxed);
        self.arrived.store(0, Ordering::Relaxed);
        // Release: the reset count is visible to whoever sees the new generation.
        self.gen.store((g & GEN_MASK).wrapping_add(2) & GEN_MASK, Ordering::Release);
        futex::wake(&self.gen, u32::MAX);
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.gen.load(Ordering::Relaxed) & BROKEN != 0
    }

    /// How many have arrived in the current generation (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        self.arrived.load(Ordering::Relaxed).min(self.parties())
    }

    fn someone_waiting_died(&self, upto: u32) -> bool {
        (0..upto.min(MAX_PARTIES)).any(|i| {
            let slot = &self.slots[i as usize];
            let pid = slot.pid.load(Ordering::Acquire);
            pid != 0
                && ProcessToken { pid, start: slot.start.load(Ordering::Relaxed) }.liveness()
                    == Liveness::Dead
        })
    }

    /// Arrives and waits for the others until `deadline`.
    ///
    /// # Errors
    /// [`BarrierError::Broken`] or [`BarrierError::Timeout`].
    pub fn wait_until(&self, deadline: Option<Instant>) -> Result<BarrierWaitResult, BarrierError> {
        // Acquire: pairs with the Release that published this generation.
        let g = self.gen.load(Ordering::Acquire);
        if g & BROKEN != 0 {
            return Err(BarrierError::Broken);
        }
        let parties = self.parties();
        let idx = self.arrived.fetch_add(1, Ordering::AcqRel);
        if idx >= parties {
            // More arrivals than parties in one generation: misuse or corruption.
            self.break_from(g);
            return Err(BarrierError::Broken);
        }
        let me = ProcessToken::current();
        let slot = &self.slots[idx as usize];
        slot.start.store(me.start, Ordering::Relaxed);
        slot.pid.store(me.pid, Ordering::Release);
        let index = parties - 1 - idx;
        if idx + 1 == parties {
            for s in &self.slots[..parties as usize] {
                s.pid.store(0, Ordering::Relaxed);
            }
            self.arrived.store(0, Ordering::Relaxed);
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
            if deadline.is_some_and(|d| now >= d) {
                self.break_from(g);
                return Err(BarrierError::Timeout);
            }
            if self.someone_waiting_died(parties) {
                self.break_from(g);
                return Err(BarrierError::Broken);
            }
            let check = now.checked_add(LIVENESS_INTERVAL);
            let until = match (deadline, check) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            };
            futex::wait(&self.gen, g, until);
        }
    }
}

/// A barrier for `parties` processes (or threads), like `multiprocessing.Barrier`, that breaks
/// instead of hanging when a waiting participant dies.
///
/// # Examples
/// ```
/// use shmkit::sync::Barrier;
///
/// let b = Barrier::new(2)?;
/// let leaders = std::thread::scope(|s| {
///     let h = s.spawn(|| b.wait().unwrap().is_leader());
///     let me = b.wait().unwrap().is_leader();
///     u32::from(me) + u32::from(h.join().unwrap())
/// });
/// assert_eq!(leaders, 1);
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    raw: Shared<RawBarrier>,
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

impl Barrier {
    /// A barrier for `parties` (clamped to `1..=MAX_PARTIES`) in a new anonymous segment.
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new(parties: u32) -> Result<Barrier, ShmCreateError> {
        Ok(Barrier { raw: Shared::anonymous(BARRIER_KIND, |r: &RawBarrier| r.init(parties))? })
    }

    /// A barrier in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str, parties: u32) -> Result<Barrier, ShmCreateError> {
        Ok(Barrier { raw: Shared::create(name, BARRIER_KIND, |r: &RawBarrier| r.init(parties))? })
    }

    /// Opens a barrier made by [`Barrier::create`].
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<Barrier, ShmOpenError> {
        Ok(Barrier { raw: Shared::open(name, BARRIER_KIND)? })
    }

    /// The barrier at `at` in a caller's segment, initialised there with [`RawBarrier::init`].
    ///
    /// # Errors
    /// [`OffsetError`] if it does not fit.
    pub fn at(seg: Arc<Segment>, at: Offset<RawBarrier>) -> Result<Barrier, OffsetError> {
        Ok(Barrier { raw: Shared::at(seg, at)? })
    }

    /// Waits until all parties have arrived.
    ///
    /// # Errors
    /// [`BarrierError::Broken`] if aborted, reset, or a waiting participant died or timed out.
    pub fn wait(&self) -> Result<BarrierWaitResult, BarrierError> {
        self.raw.wait_until(None)
    }

    /// Waits at most `timeout`; on timeout the barrier breaks for everyone (as in Python).
    ///
    /// # Errors
    /// [`BarrierError::Timeout`] or [`BarrierError::Broken`].
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BarrierError> {
        self.raw.wait_until(futex::deadline_after(timeout))
    }

    /// Breaks the barrier: waiters now and later get `Broken` until [`Barrier::reset`].
    pub fn abort(&self) {
        self.raw.abort()
    }

    /// Returns the barrier to its empty state; current waiters get `Broken`.
    pub fn reset(&self) {
        self.raw.reset()
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.raw.parties()
    }

    /// How many are waiting now (a snapshot).
    pub fn n_waiting(&self) -> u32 {
        self.raw.n_waiting()
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.raw.is_broken()
    }
}
