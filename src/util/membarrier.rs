//! An asymmetric fence: cheap for the side that runs on every message, expensive for the
//! side that is about to sleep anyway.
//!
//! A waiter that parks and a notifier that wakes it each make a store and then load the
//! other's word (Dekker's pattern), which needs a full fence on both sides. A full fence
//! costs the notifier ~10 ns per message, more than a whole 8-byte queue transfer. With
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` the waiter instead forces a full barrier
//! on every CPU that runs a registered process, so the notifier needs only a compiler
//! fence ([`light`]) while the waiter pays one syscall (~0.3–3 µs) before it parks.
//!
//! The contract has three parts:
//! - [`light`] is a compiler fence only once this process registered
//!   (`MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, done by [`init`]); before that, or where
//!   the kernel lacks membarrier, it is a real `fence(SeqCst)`.
//! - [`heavy`] issues the membarrier, or a `fence(SeqCst)` when it cannot. It then
//!   returns false: a notifier in another, registered process may be relying on the
//!   membarrier, so the caller must bound its sleep (it re-checks every millisecond).
//! - Registration is kept by `fork` (the kernel copies it with the address space, and the
//!   flag below is copied with memory) and dropped by `exec` (the flag is reset too).
//!
//! Under loom both sides are `fence(SeqCst)`, which is what loom can model.

#[cfg(not(loom))]
use crate::primitive::atomic::{compiler_fence, AtomicU8};
use crate::primitive::atomic::{fence, Ordering};

/// 0: not tried; 1: registered; 2: unavailable.
#[cfg(not(loom))]
static STATE: AtomicU8 = AtomicU8::new(0);

#[cfg(not(loom))]
const REGISTERED: u8 = 1;
#[cfg(not(loom))]
const UNAVAILABLE: u8 = 2;

#[cfg(not(loom))]
fn membarrier(cmd: libc::c_int) -> bool {
    // SAFETY: membarrier takes (cmd, flags, cpu_id) and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) == 0 }
}

/// Registers this process for expedited global barriers, once. Called whenever a segment
/// is mapped, so every process sharing memory with shmkit takes part.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn init() {
    #[cfg(not(loom))]
    {
        // Relaxed: the worst a stale read does is register twice (idempotent).
        if STATE.load(Ordering::Relaxed) != 0 {
            return;
        }
        const REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;
        let ok = membarrier(REGISTER_GLOBAL_EXPEDITED);
        STATE.store(if ok { REGISTERED } else { UNAVAILABLE }, Ordering::Relaxed);
    }
}

/// The cheap half: orders this thread's earlier stores before its later loads, provided
/// the other side uses [`heavy`].
#[inline(always)]
pub(crate) fn light() {
    #[cfg(not(loom))]
    {
        // Relaxed: the flag only goes from "fence" to "compiler fence" after the kernel
        // registration finished, and the registration itself is a full barrier.
        if STATE.load(Ordering::Relaxed) == REGISTERED {
            compiler_fence(Ordering::SeqCst);
            return;
        }
    }
    fence(Ordering::SeqCst);
}

/// The expensive half. Returns false if it fell back to a plain fence: the caller must
/// then not sleep unboundedly (a [`light`] notifier elsewhere may miss it).
pub(crate) fn heavy() -> bool {
    #[cfg(not(loom))]
    {
        const GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
        init();
        fence(Ordering::SeqCst);
        if STATE.load(Ordering::Relaxed) == REGISTERED && membarrier(GLOBAL_EXPEDITED) {
            return true;
        }
        false
    }
    #[cfg(loom)]
    {
        fence(Ordering::SeqCst);
        true
    }
}

/// Whether this process uses the cheap path (for tests and `shmkit bench` notes).
pub(crate) fn registered() -> bool {
    #[cfg(not(loom))]
    {
        STATE.load(Ordering::Relaxed) == REGISTERED
    }
    #[cfg(loom)]
    {
        false
    }
}
