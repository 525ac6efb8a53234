//! Errors of the synchronization primitives, one enum per method family. Those that hand a
//! guard back do so without requiring `G: Debug`.

use std::fmt;

/// The previous holder died while holding the lock; the lock is now held by the caller.
///
/// The data the lock protects may be half-updated. The guard works normally; call its
/// `mark_consistent` once the data is repaired, or every later acquisition reports
/// `OwnerDied` as well (like pthread's `EOWNERDEAD`, but recoverable).
pub struct OwnerDied<G>(pub G);

impl<G> OwnerDied<G> {
    /// The guard: the lock is held.
    pub fn into_inner(self) -> G {
        self.0
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied(..)")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous holder of the lock died while holding it")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// Why `try_lock` did not return a clean guard.
pub enum TryLockError<G> {
    /// Another live process or thread holds the lock.
    WouldBlock,
    /// Acquired, but the previous holder died (see [`OwnerDied`]).
    OwnerDied(G),
}

/// Why `lock_timeout` did not return a clean guard.
pub enum LockTimeoutError<G> {
    /// The deadline passed with the lock still held by another.
    Timeout,
    /// Acquired, but the previous holder died (see [`OwnerDied`]).
    OwnerDied(G),
}

macro_rules! guard_error_impls {
    ($name:ident, $other:ident, $other_msg:literal) => {
        impl<G> $name<G> {
            /// The guard, if the lock was acquired (after its holder died).
            pub fn into_inner(self) -> Option<G> {
                match self {
                    $name::OwnerDied(g) => Some(g),
                    $name::$other => None,
                }
            }

            /// Whether the lock was acquired from a dead holder.
            pub fn is_owner_died(&self) -> bool {
                matches!(self, $name::OwnerDied(_))
            }
        }

        impl<G> fmt::Debug for $name<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$other => f.write_str(stringify!($other)),
                    $name::OwnerDied(_) => f.write_str("OwnerDied(..)"),
                }
            }
        }

        impl<G> fmt::Display for $name<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$other => f.write_str($other_msg),
                    $name::OwnerDied(_) => {
                        f.write_str("the previous holder of the lock died while holding it")
                    }
                }
            }
        }

        impl<G> std::error::Error for $name<G> {}

        impl<G> From<OwnerDied<G>> for $name<G> {
            fn from(e: OwnerDied<G>) -> Self {
                $name::OwnerDied(e.0)
            }
        }
    };
}

guard_error_impls!(TryLockError, WouldBlock, "the lock is held by another");
guard_error_impls!(LockTimeoutError, Timeout, "timed out waiting for the lock");

/// Releasing an `RLock` the calling thread does not hold (Python's `RuntimeError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot release an RLock this thread does not hold")]
pub struct NotOwner;

/// A semaphore's value would leave its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SemaphoreError {
    /// `BoundedSemaphore::release` above the initial value (Python's `ValueError`).
    #[error("semaphore released too many times (above its bound {bound})")]
    AboveBound {
        /// The bound.
        bound: u32,
    },
    /// The count would overflow `u32`.
    #[error("semaphore count overflow")]
    Overflow,
}

/// A barrier wait that did not complete (Python's `BrokenBarrierError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// The barrier was aborted, reset, or a participant died or timed out while waiting.
    #[error("the barrier is broken")]
    Broken,
    /// This wait timed out; the barrier is now broken for the others as well.
    #[error("timed out waiting at the barrier (the barrier is now broken)")]
    Timeout,
}
