//! Process identity that survives pid reuse: a pid plus its start time.

use std::sync::OnceLock;

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

/// Reads (state, start time) of `pid` from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u8, u64)> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    // `state` is field 3; starttime is field 22, i.e. 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcessToken {
    /// The calling process (cached per process: a forked child computes its own).
    pub fn current() -> ProcessToken {
        static CACHE: OnceLock<ProcessToken> = OnceLock::new();
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let cached = CACHE.get_or_init(|| ProcessToken { pid, start: stat(pid).map_or(0, |s| s.1) });
        if cached.pid == pid {
            *cached
        } else {
            ProcessToken { pid, start: stat(pid).map_or(0, |s| s.1) }
        }
    }

    /// Checks whether this process still runs.
    pub fn liveness(&self) -> Liveness {
        if self.pid == 0 || self.pid > i32::MAX as u32 {
            return Liveness::Dead;
        }
        match stat(self.pid) {
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
