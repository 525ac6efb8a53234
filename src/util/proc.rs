//! Process identity that survives pid reuse: a pid plus its start time.

use std::cell::Cell;
use std::sync::Once;

use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};

/// This process's pid, 0 until computed and again in a freshly forked child.
static PID: AtomicU32 = AtomicU32::new(0);
static START: AtomicU64 = AtomicU64::new(0);
/// Bumped in every forked child, so per-thread caches know to refresh.
static FORKS: AtomicU32 = AtomicU32::new(0);
/// Bumped in the parent by every `fork` it makes.
static CHILDREN_FORKED: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn after_fork_in_child() {
    // Only atomic stores: async-signal-safe, as a fork handler must be.
    PID.store(0, Ordering::Relaxed);
    FORKS.fetch_add(1, Ordering::Relaxed);
}

extern "C" fn after_fork_in_parent() {
    CHILDREN_FORKED.fetch_add(1, Ordering::Relaxed);
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registers plain extern "C" handlers that only touch atomics.
        unsafe { libc::pthread_atfork(None, Some(after_fork_in_parent), Some(after_fork_in_child)) };
    });
}

/// A stamp that changes whenever this process forks (and differs in every child): objects
/// that remember it know whether a child may hold a copy of them.
pub fn fork_epoch() -> u64 {
    register_atfork();
    // Relaxed: the handlers run in the forking thread itself (parent) or before anything else
    // (child); other threads only need an eventually-fresh value.
    let parent = CHILDREN_FORKED.load(Ordering::Relaxed) as u64;
    let child = FORKS.load(Ordering::Relaxed) as u64;
    (parent << 32) | child
}

thread_local! {
    /// (fork generation, tid) of this thread.
    static TID: Cell<(u32, u32)> = const { Cell::new((u32::MAX, 0)) };
}

/// The calling thread's kernel thread id, cached per thread and refreshed after `fork`.
pub fn current_tid() -> u32 {
    register_atfork();
    let gen = FORKS.load(Ordering::Relaxed);
    TID.with(|c| {
        let (g, t) = c.get();
        if g == gen {
            return t;
        }
        // SAFETY: gettid has no preconditions.
        let t = unsafe { libc::gettid() } as u32;
        c.set((gen, t));
        t
    })
}

/// A process, identified by pid and start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`), so that a recycled pid is not mistaken for the original process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessToken {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot; 0 if `/proc` could not be read.
    pub start: u64,
}

/// Whether a recorded process still runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process exists and started at the recorded time.
    Alive,
    /// No such process, a different process with the same pid, or a zombie.
    Dead,
    /// It exists but its start time could not be read (a different pid namespace, say).
    Unknown,
}

impl std::fmt::Display for Liveness {
    /// `alive`, `dead` or `unknown`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Unknown => "unknown",
        })
    }
}

/// Whether no process has this pid at all: one `kill(pid, 0)`, no allocation, so a fork
/// handler may call it. A zombie still counts as present (see [`ProcessToken::liveness`]);
/// pid 0 is never gone, and a pid no process can have always is.
pub fn pid_gone(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    if pid > i32::MAX as u32 {
        return true;
    }
    // SAFETY: signal 0 only checks existence and permission.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Reads (state, start time) from a `stat` file of procfs (a process's or a thread's).
///
/// One `open`, one `read` into a stack buffer and one `close`: `std::fs::read` would add a
/// `statx` and grow its buffer from 32 bytes over six reads (procfs reports size 0), and
/// the peer checks of a blocked queue run this ten times a second.
fn read_stat(path: &std::ffi::CStr) -> Option<(u8, u64)> {
    // Field 22 ends within the first ~600 bytes even with a 64-byte name and every earlier
    // number at its widest; a line cut before it fails to parse below.
    let mut buf = [0u8; 1024];
    let interrupted = || std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR);
    let fd = loop {
        // SAFETY: a NUL-terminated path; the flags ask for nothing that outlives the call.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            break fd;
        }
        if !interrupted() {
            return None;
        }
    };
    let n = loop {
        // SAFETY: reads at most `buf.len()` bytes into our buffer from the fd we just opened.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 || !interrupted() {
            break n;
        }
    };
    // SAFETY: closes the fd we opened, once.
    unsafe { libc::close(fd) };
    let text = buf.get(..usize::try_from(n).ok()?)?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // `state` is field 3; starttime is field 22, i.e. 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    // A field after it: the start time was not cut short by the buffer's end.
    fields.next()?;
    Some((state, start))
}

/// Formats `/proc/{a}/stat` or `/proc/{a}/task/{b}/stat` into `buf`, NUL-terminated.
fn stat_path(buf: &mut [u8; 64], pid: u32, tid: Option<u32>) -> &std::ffi::CStr {
    use std::io::Write;
    let mut w = &mut buf[..];
    let _ = match tid {
        None => write!(w, "/proc/{pid}/stat\0"),
        Some(tid) => write!(w, "/proc/{pid}/task/{tid}/stat\0"),
    };
    // Two u32s and the fixed parts take at most 46 bytes: the NUL is always written.
    std::ffi::CStr::from_bytes_until_nul(&buf[..]).unwrap_or_default()
}

/// Reads (state, start time) of `pid` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u8, u64)> {
    read_stat(stat_path(&mut [0; 64], pid, None))
}

/// Whether some thread of `pid` is neither a zombie nor dead.
fn any_live_task(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|t| {
        let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { return false };
        read_stat(stat_path(&mut [0; 64], pid, Some(tid)))
            .is_some_and(|(state, _)| state != b'Z' && state != b'X')
    })
}

impl ProcessToken {
    /// The calling process. Cached, so it costs two loads on lock fast paths; a
    /// `pthread_atfork` handler clears the cache in a forked child, which then computes its own.
    #[inline]
    pub fn current() -> ProcessToken {
        // Acquire: pairs with the Release below, so START belongs to this PID.
        let pid = PID.load(Ordering::Acquire);
        if pid != 0 {
            return ProcessToken { pid, start: START.load(Ordering::Relaxed) };
        }
        Self::current_slow()
    }

    #[cold]
    fn current_slow() -> ProcessToken {
        register_atfork();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let start = stat(pid).map_or(0, |s| s.1);
        START.store(start, Ordering::Relaxed);
        PID.store(pid, Ordering::Release);
        ProcessToken { pid, start }
    }

    /// Checks whether this process still runs (our own pid without a syscall; any other by
    /// one read of `/proc/PID/stat`, about 8 µs).
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return Liveness::Dead;
        }
        // Our own pid needs no syscall: we run, so a record with our start time is us, and
        // one with another start time is a dead process whose pid we were given.
        let me = Self::current();
        if self.pid == me.pid && me.start != 0 {
            return match self.start {
                0 => Liveness::Unknown,
                s if s == me.start => Liveness::Alive,
                _ => Liveness::Dead,
            };
        }
        self.liveness_by_proc()
    }

    /// [`ProcessToken::liveness`] from `/proc` alone.
    fn liveness_by_proc(&self) -> Liveness {
        match stat(self.pid) {
            // A zombie leader may still have live threads (its main thread called
            // `pthread_exit`): only dead if every task is.
            Some((b'Z' | b'X', start)) if self.start == 0 || start == self.start => {
                if any_live_task(self.pid) {
                    Liveness::Alive
                } else {
                    Liveness::Dead
                }
            }
            Some((b'Z' | b'X', _)) => Liveness::Dead,
            Some((_, start)) if self.start != 0 => {
                if start == self.start {
                    Liveness::Alive
                } else {
                    Liveness::Dead
                }
            }
            Some(_) => Liveness::Unknown,
            None => {
                // SAFETY: kill with signal 0 only checks for existence and permission.
                let r = unsafe { libc::kill(self.pid as i32, 0) };
                if r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
                    Liveness::Unknown
                } else {
                    Liveness::Dead
                }
            }
        }
    }
}
