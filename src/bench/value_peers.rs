//! Shared-counter workloads: shmkit's [`Value`] incremented by two processes at once, under
//! its lock and lock-free, beside a `PTHREAD_PROCESS_SHARED` mutex around a `u64`.
//!
//! | scenario | one iteration | peers |
//! |---|---|---|
//! | [`value_incr_2proc`] | one `+1`, by either process (the iterations are split between them) | [`ValuePeer::ALL`] |
//!
//! The two processes are the parent and a forked child pinned to the other core, released
//! together by the start line of [`lock_contended_2proc`](super::lock_contended_2proc); the
//! final value is checked to be the number of increments.

use std::io;
use std::time::Duration;

use super::other;
use super::sync_peers::{bump, check_count, race_2proc, shared_counter};
use super::PthreadMutex;
use crate::primitive::atomic::{AtomicU64, Ordering};
use crate::value::Value;

/// An implementation of the shared counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValuePeer {
    /// `*v.lock()? += 1` on a shmkit [`Value<u64>`]: its robust lock, a copy of the value
    /// in the guard, written back when the guard drops (Python's `with v.get_lock(): v.value += 1`).
    ShmkitLocked,
    /// [`Value::fetch_add`] on the same `Value<u64>`: one `lock xadd`, no lock.
    ShmkitAtomic,
    /// A [`PthreadMutex`] (`PTHREAD_PROCESS_SHARED`, not robust) in a mapping of its own
    /// around a `u64` on a cache line of its own, incremented by a plain load and store.
    /// Like shmkit's `Value`, whose data sits 128 bytes after its lock, the lock and the
    /// counter are on different cache lines.
    PthreadLocked,
}

impl ValuePeer {
    /// Every implementation, shmkit first.
    pub const ALL: [ValuePeer; 3] =
        [ValuePeer::ShmkitLocked, ValuePeer::ShmkitAtomic, ValuePeer::PthreadLocked];

    /// The benchmark id (`value_incr_2proc/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            ValuePeer::ShmkitLocked => "shmkit_locked",
            ValuePeer::ShmkitAtomic => "shmkit_atomic",
            ValuePeer::PthreadLocked => "pthread_locked",
        }
    }
}

/// Times `incrs` increments of one shared counter made by two processes at once: the parent
/// makes `incrs - incrs / 2` of them and a forked child pinned to the other core
/// `incrs / 2`, both started together. Returns the parent's wall time from the start
/// signal until both are done, so time / `incrs` is the time per increment with both
/// processes hammering the counter (the inverse of the pair's combined rate; a process
/// sees each of its own increments take about twice that). The final value must be `incrs`.
///
/// # Errors
/// An OS error, `TimedOut` if the child stops, a lock that reported a dead owner, or a
/// final value other than `incrs`.
pub fn value_incr_2proc(peer: ValuePeer, incrs: u64) -> io::Result<Duration> {
    let (parent_ops, child_ops) = (incrs - incrs / 2, incrs / 2);
    match peer {
        ValuePeer::ShmkitLocked | ValuePeer::ShmkitAtomic => {
            let v = Value::new(0u64).map_err(other)?;
            let d = if peer == ValuePeer::ShmkitLocked {
                race_2proc(parent_ops, child_ops, || match v.lock() {
                    Ok(mut g) => {
                        *g += 1;
                        true
                    }
                    Err(_) => false,
                })
            } else {
                race_2proc(parent_ops, child_ops, || {
                    v.fetch_add(1);
                    true
                })
            }?;
            check_count(v.get(), incrs)?;
            Ok(d)
        }
        ValuePeer::PthreadLocked => {
            let m = PthreadMutex::new(false)?;
            let counter = shared_counter()?;
            let counter: &AtomicU64 = &counter;
            let d = race_2proc(parent_ops, child_ops, || match m.lock() {
                Ok(_g) => {
                    bump(counter);
                    true
                }
                Err(_) => false,
            })?;
            // Relaxed: `race_2proc` ordered the child's increments before its return.
            check_count(counter.load(Ordering::Relaxed), incrs)?;
            Ok(d)
        }
    }
}
