//! Benchmark workloads and the peers shmkit is measured against, shared by the criterion
//! benches (`benches/`) and `shmkit demo`/`shmkit bench`. Not part of the stable API.
//!
//! Every function forks one child, runs `iters` operations after a warm-up round that
//! absorbs the fork, and returns the parent's elapsed time for those `iters`. Parent and
//! child are pinned to different cores when there are two or more.

pub mod demo;
pub mod machine;
mod manager_peers;
mod peers;
mod pipe_peers;
mod python;
pub mod queue_peers;
pub mod suite;
mod sync_peers;
mod value_peers;

pub use manager_peers::{manager_dict, socket_echo, EchoPeer, ManagerPeer, INSERT_FRAME};
pub use peers::{rtt, rtt_shm, tput, RttPeer, TputPeer};
pub use pipe_peers::{pipe_bulk, pipe_rtt, pipe_tput, PipeBulkPeer, PipeRttPeer, PipeTputPeer};
pub use python::{python_run, python_version};
pub use queue_peers::{
    bulk, crossbeam_threads_tput, idle_cpu, ipc_channel_tput, oversubscribed, posix_mq_tput, rtt_queue,
    BulkPeer, IdlePeer, OversubPeer, BULK_BYTES,
};
pub use sync_peers::{
    event_wake_rtt, lock_contended_2proc, lock_uncontended, owner_died_recovery, EventPeer, FutexMutex,
    FutexMutexGuard, LockPeer, OwnerDiedPeer, PthreadMutex, PthreadMutexGuard, RawSyncMutex,
};
pub use value_peers::{value_incr_2proc, ValuePeer};

use std::io;

/// Pins the calling thread to `cpu`; returns the previous mask for [`restore_affinity`].
pub(crate) fn pin_to(cpu: usize) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; the calls only read/write the sets we pass.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
            return None;
        }
        if !libc::CPU_ISSET(cpu, &old) {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        Some(old)
    }
}

/// Restores a mask saved by [`pin_to`].
pub(crate) fn restore_affinity(old: Option<libc::cpu_set_t>) {
    if let Some(old) = old {
        // SAFETY: `old` is a mask sched_getaffinity filled in.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &old) };
    }
}

/// Number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A pipe pair: (read end, write end), both close-on-exec.
pub(crate) fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) })
}

/// A connected `AF_UNIX` `SOCK_STREAM` pair, close-on-exec.
pub(crate) fn socketpair() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let (a, b) = std::os::unix::net::UnixStream::pair()?;
    Ok((a.into(), b.into()))
}

/// How long either side waits for the other before giving up (a dead peer, not a slow one).
pub(crate) const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) fn timeout_err(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("peer did not answer: {what}"))
}

/// Forks the child side of a two-process workload, pinned to CPU 1 when it exists and with
/// PDEATHSIG set; the parent is pinned to CPU 0 until [`finish`] restores its mask.
pub(crate) fn spawn_pinned(
    child: impl FnOnce() -> i32,
) -> io::Result<(crate::util::child::ForkedChild, Option<libc::cpu_set_t>)> {
    let two = available_cpus() >= 2;
    // SAFETY: benchmark children only touch atomics, futexes, pthread mutexes in shared
    // memory and plain syscalls, then `_exit`; they set PDEATHSIG so they never outlive the
    // parent. The workloads fork from single-threaded bench processes.
    let child = unsafe {
        crate::util::child::fork(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if two {
                pin_to(1);
            }
            child()
        })
    }?;
    let old = if two { pin_to(0) } else { None };
    Ok((child, old))
}

/// Restores the parent's mask, reaps the child and merges its exit status into `result`.
pub(crate) fn finish(
    mut child: crate::util::child::ForkedChild,
    old: Option<libc::cpu_set_t>,
    result: io::Result<std::time::Duration>,
) -> io::Result<std::time::Duration> {
    restore_affinity(old);
    let status = child.wait_timeout(PEER_TIMEOUT)?;
    match (result, status) {
        (Err(e), _) => Err(e),
        (Ok(d), Some(st)) if st.success() => Ok(d),
        (Ok(_), st) => Err(io::Error::other(format!("benchmark child failed: {st:?}"))),
    }
}

/// Any displayable error as an `io::Error` (the peers' error type).
pub(crate) fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}
