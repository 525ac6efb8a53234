//! `futex(2)` on Linux: shared (never `FUTEX_PRIVATE_FLAG`) waits on an absolute
//! `CLOCK_MONOTONIC` deadline.

use std::time::Instant;

use super::WaitOutcome;
use crate::primitive::atomic::AtomicU32;

/// Converts an `Instant` deadline into an absolute `CLOCK_MONOTONIC` timespec.
///
/// std's `Instant` reads `CLOCK_MONOTONIC` on Linux but does not expose the raw value, so
/// the remaining time is added to a fresh reading of the clock. Done once per wait, so a
/// retry after `EINTR` keeps the same absolute deadline.
fn monotonic_deadline(deadline: Instant) -> libc::timespec {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let mut sec = now.tv_sec.saturating_add(remaining.as_secs().min(i64::MAX as u64) as i64);
    let mut nsec = now.tv_nsec + i64::from(remaining.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    libc::timespec { tv_sec: sec as libc::time_t, tv_nsec: nsec as _ }
}

pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    let ts = deadline.map(monotonic_deadline);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word` is a live, aligned u32 for the duration of the call (it is borrowed);
        // `ts_ptr` is null or points at `ts`, which outlives the call. FUTEX_WAIT_BITSET
        // without FUTEX_CLOCK_REALTIME takes an absolute CLOCK_MONOTONIC time. No
        // FUTEX_PRIVATE_FLAG: the word may be mapped by other processes.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return WaitOutcome::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return WaitOutcome::Mismatch,
            Some(libc::ETIMEDOUT) => return WaitOutcome::TimedOut,
            Some(libc::EINTR) => continue,
            // EFAULT/EINVAL cannot happen for a borrowed word and a normalised timespec;
            // report a spurious wake-up so the caller re-checks rather than sleeping wrongly.
            _ => return WaitOutcome::Woken,
        }
    }
}

pub(super) fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as i32;
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE only reads its address.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n) };
    if r < 0 {
        0
    } else {
        r as usize
    }
}

/// `futex_waitv(2)` (Linux 5.16): the same number on every architecture that has it.
const SYS_FUTEX_WAITV: libc::c_long = 449;
/// Its limit on words per call.
const WAITV_MAX: usize = 128;
/// `FUTEX2_SIZE_U32`; no `FUTEX2_PRIVATE`, so the words may be shared between processes.
const FUTEX2_SIZE_U32: u32 = 0x02;

/// The kernel's `struct futex_waitv`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

/// Set once `futex_waitv` answered ENOSYS (an older kernel or a seccomp filter).
static NO_WAITV: crate::primitive::atomic::AtomicBool = crate::primitive::atomic::AtomicBool::new(false);

/// How long a waiter on several words parks on just the first when `futex_waitv` is
/// missing, before re-polling them all.
const WAITV_FALLBACK: std::time::Duration = std::time::Duration::from_millis(1);

pub(super) fn wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> WaitOutcome {
    let Some(&(first, first_expected)) = words.first() else { return WaitOutcome::Mismatch };
    // Relaxed: a cache of a kernel property.
    if words.len() > WAITV_MAX || NO_WAITV.load(crate::primitive::atomic::Ordering::Relaxed) {
        let cap = Instant::now() + WAITV_FALLBACK;
        let until = Some(deadline.map_or(cap, |d| d.min(cap)));
        return wait(first, first_expected, until);
    }
    let v: Vec<FutexWaitv> = words
        .iter()
        .map(|&(w, expected)| FutexWaitv {
            val: u64::from(expected),
            uaddr: w.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        })
        .collect();
    let ts = deadline.map(monotonic_deadline);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `v` holds live, aligned u32 addresses (borrowed for the call) and outlives
        // it; `ts_ptr` is null or points at `ts`; flags 0, absolute CLOCK_MONOTONIC time.
        let r = unsafe {
            libc::syscall(
                SYS_FUTEX_WAITV,
                v.as_ptr(),
                v.len() as libc::c_uint,
                0u32,
                ts_ptr,
                libc::CLOCK_MONOTONIC,
            )
        };
        if r >= 0 {
            return WaitOutcome::Woken;
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => return WaitOutcome::Mismatch,
            Some(libc::ETIMEDOUT) => return WaitOutcome::TimedOut,
            Some(libc::EINTR) => continue,
            // ENOSYS (an older kernel), EPERM (a seccomp filter) or anything else: use the
            // fallback from now on rather than spin on a failing call.
            _ => {
                NO_WAITV.store(true, crate::primitive::atomic::Ordering::Relaxed);
                return wait_any(words, deadline);
            }
        }
    }
}
