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
