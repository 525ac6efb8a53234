//! A minimal forked child for tests, benchmarks and the demo (the `process` layer of a later
//! release builds the real `Process` API). Not part of the stable API.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// A forked child process. Dropping it without a successful wait SIGKILLs and reaps it, so a
/// failing test never leaves a child behind.
#[derive(Debug)]
pub struct ForkedChild {
    pid: libc::pid_t,
    reaped: bool,
}

/// Forks. The child runs `f` and leaves through `_exit` with its return value (101 if `f`
/// panics), so no destructor, atexit handler or test-harness code runs in it. In the parent,
/// `f` is dropped uncalled, together with whatever it captured by value.
///
/// # Safety
/// - If the calling process has other threads, the child must only do async-signal-safe
///   work in `f` (atomics, futexes, plain syscalls): a lock another thread held at the fork
///   stays locked forever in the child. glibc's `malloc` is reset after fork and is safe.
/// - `f` must not rely on anything the child does not inherit (other threads).
pub unsafe fn fork(f: impl FnOnce() -> i32) -> io::Result<ForkedChild> {
    // SAFETY: fork has no memory-safety preconditions of its own; the caller upholds the
    // restrictions on what the child does.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
            // SAFETY: _exit ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(ForkedChild { pid, reaped: false }),
    }
}

impl ForkedChild {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Reaps the child if it has ended.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.reaped {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "child already reaped"));
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            -1 => Err(io::Error::last_os_error()),
            0 => Ok(None),
            _ => {
                self.reaped = true;
                Ok(Some(ExitStatus::from_raw(status)))
            }
        }
    }

    /// Waits up to `timeout` for the child to end; `Ok(None)` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut nap = Duration::from_micros(100);
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(Some(st));
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            std::thread::sleep(deadline.map_or(nap, |d| nap.min(d - now)));
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the child (ignored once it has been reaped).
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        if self.reaped {
            return Ok(());
        }
        // SAFETY: the pid is our unreaped child, so it cannot have been recycled.
        if unsafe { libc::kill(self.pid, signal) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        self.signal(libc::SIGKILL)?;
        loop {
            if let Some(st) = self.wait_timeout(Duration::from_secs(10))? {
                return Ok(st);
            }
        }
    }
}

impl Drop for ForkedChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.kill();
        }
    }
}
