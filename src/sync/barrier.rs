//! `Barrier`: `n` processes wait until all have arrived (`multiprocessing.Barrier`); the
//! algorithm is on [`RawBarrier`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::error::BarrierError;
use super::raw::{BarrierWaitResult, RawBarrier};
use crate::futex;
use crate::shm::{Kind, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError};

// SAFETY: u32/u64 atomics only, `#[repr(C)]`; every value is handled (parties is validated
// when opened, indices are bounded before use).
unsafe impl Shareable for RawBarrier {}

pub(crate) const BARRIER_KIND: Kind = Kind::new(8, std::mem::size_of::<RawBarrier>() as u64);

/// A barrier for `parties` processes (or threads), like `multiprocessing.Barrier`, that breaks
/// instead of hanging when a waiting participant dies.
///
/// A participant killed in the few instructions between being counted and recording its pid
/// is not seen as dead; the others then wait until their timeout (use `wait_timeout`).
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
