//! The spawn start method: how a re-executed binary finds the function it must run.
//!
//! The parent writes a [`Payload`] into a memfd and passes two inherited fds and its pid in
//! the `SHMKIT_SPAWN` environment variable (`1:PPID:PAYLOAD_FD:REPORT_FD`). [`init`], first
//! in the child's `main`, reads the payload and runs the target instead of the program. A
//! process whose `PAYLOAD_FD` is not an open `shmkit-spawn` memfd (checked in
//! `/proc/self/fd`) ignores the variable: it was inherited by a descendant that did not get
//! the fds. The parent may have died meanwhile; the child still runs its target.
//!
//! Payload layout (little-endian):
//!
//! ```text
//! 0   8  magic "SHMKSPN1"
//! 8   4  parent pid
//! 12  1  daemon (0/1)
//! 13  8  trampoline (FnRef)
//! 21  8  function (FnRef)
//! 29  4+n  name, 4+n parent name, 4+n argument (each a u32 length, then the bytes)
//! ```

use crate::primitive::atomic::{AtomicBool, Ordering};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::process::{child_main, registry, run_call, set_parent_death_signal, ProcessError};
use super::wire::{Call, FnRef};
use super::ProcessInfo;

pub(crate) const ENV: &str = "SHMKIT_SPAWN";
const MAGIC: &[u8; 8] = b"SHMKSPN1";
/// Largest payload read (the argument is limited by this too).
pub const MAX_PAYLOAD: usize = 256 << 20;

/// What a spawned child needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    pub(crate) call: Call,
    pub(crate) arg: Vec<u8>,
}

impl Payload {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.arg.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.parent_pid.to_le_bytes());
        out.push(self.daemon as u8);
        out.extend_from_slice(&self.call.tramp.0.to_le_bytes());
        out.extend_from_slice(&self.call.f.0.to_le_bytes());
        for part in [self.name.as_bytes(), self.parent_name.as_bytes(), &self.arg] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Decodes a payload; every length is checked against the bytes present.
    ///
    /// # Errors
    /// A description of the first defect.
    pub fn decode(bytes: &[u8]) -> Result<Payload, &'static str> {
        let mut r = Reader(bytes);
        if r.take(8)? != MAGIC {
            return Err("bad magic");
        }
        let parent_pid = u32::from_le_bytes(r.array()?);
        let daemon = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err("bad daemon flag"),
        };
        let tramp = FnRef(u64::from_le_bytes(r.array()?));
        let f = FnRef(u64::from_le_bytes(r.array()?));
        let name = String::from_utf8(r.part()?.to_vec()).map_err(|_| "name is not UTF-8")?;
        let parent_name = String::from_utf8(r.part()?.to_vec()).map_err(|_| "parent name is not UTF-8")?;
        let arg = r.part()?.to_vec();
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        Ok(Payload { parent_pid, parent_name, name, daemon, call: Call { tramp, f }, arg })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        self.take(N)?.try_into().map_err(|_| "truncated")
    }

    fn part(&mut self) -> Result<&'a [u8], &'static str> {
        let n = u32::from_le_bytes(self.array()?) as usize;
        self.take(n)
    }
}

/// The payload in a fresh close-on-exec memfd (the child gets it via `pre_exec`).
pub(crate) fn payload_fd(p: &Payload) -> io::Result<OwnedFd> {
    let bytes = p.encode();
    if bytes.len() > MAX_PAYLOAD {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "spawn argument above 256 MiB"));
    }
    // SAFETY: a valid C string; memfd_create returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"shmkit-spawn".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes)?;
    Ok(file.into())
}

pub(crate) fn env_value(ppid: u32, payload: RawFd, report: RawFd) -> String {
    format!("1:{ppid}:{payload}:{report}")
}

fn parse_env(v: &str) -> Option<(u32, RawFd, RawFd)> {
    let mut it = v.split(':');
    if it.next()? != "1" {
        return None;
    }
    let ppid = it.next()?.parse().ok()?;
    let payload = it.next()?.parse().ok()?;
    let report = it.next()?.parse().ok()?;
    if it.next().is_some() || payload < 0 || report < 0 {
        return None;
    }
    Some((ppid, payload, report))
}

static INITIALISED: AtomicBool = AtomicBool::new(false);
/// `init` looked at the variable once already (a second call must not read it again).
static INITIALISED_RAN: AtomicBool = AtomicBool::new(false);

/// The variable names this process as a spawned child: its payload fd is open and is the
/// memfd the parent made. (A descendant that inherited the variable but not the fds, or
/// has another file under that number, is not one; the parent may have died since, which
/// does not matter.)
fn spawned_by_parent() -> Option<(u32, RawFd, RawFd)> {
    let v = std::env::var(ENV).ok()?;
    let (ppid, payload, report) = parse_env(&v)?;
    let target = std::fs::read_link(format!("/proc/self/fd/{payload}")).ok()?;
    target.to_str()?.starts_with("/memfd:shmkit-spawn").then_some((ppid, payload, report))
}

/// Whether this process called [`init`].
pub(crate) fn init_called() -> bool {
    // Relaxed: see check_initialised.
    INITIALISED.load(Ordering::Relaxed)
}

/// Errors if this is a spawned child that skipped [`init`].
pub(crate) fn check_initialised() -> Result<(), ProcessError> {
    // Relaxed: the flag is set by this process's own main thread before it starts anything.
    if !INITIALISED.load(Ordering::Relaxed) && spawned_by_parent().is_some() {
        return Err(ProcessError::SpawnNotInitialised);
    }
    Ok(())
}

/// Entry point of the spawn start method: call it first in `main`. (It also readies forked
/// children for panics: see [`StartMethod`](super::StartMethod).)
///
/// In a process started by [`StartMethod::Spawn`](super::StartMethod::Spawn) it runs the
/// target and exits (0, or 1 after a panic); it never returns there. Anywhere else it
/// returns at once (cost: one environment lookup).
///
/// # Examples
/// ```no_run
/// // First thing in `main`:
/// shmkit::process::init();
/// // ... the program, which may start processes with the spawn method
/// ```
pub fn init() {
    super::process::install_fork_panic_hook();
    // Relaxed: see check_initialised.
    INITIALISED.store(true, Ordering::Relaxed);
    if INITIALISED_RAN.swap(true, Ordering::Relaxed) {
        return;
    }
    let Some((ppid, payload_fd, report)) = spawned_by_parent() else { return };
    let Some(bytes) = read_payload(payload_fd) else { return };
    let p = match Payload::decode(&bytes) {
        Ok(p) if p.parent_pid == ppid => p,
        // Not our payload: an unrelated fd got this number.
        _ => return,
    };
    // SAFETY: the fd was passed to us for this purpose and is not used elsewhere.
    unsafe { libc::close(payload_fd) };
    // SAFETY: sets FD_CLOEXEC on our report fd so this child's own children don't get it.
    unsafe { libc::fcntl(report, libc::F_SETFD, libc::FD_CLOEXEC) };
    {
        let mut reg = registry();
        let me = ProcessInfo { name: p.name.clone(), pid: std::process::id(), daemon: p.daemon };
        reg.become_child(me, ProcessInfo { name: p.parent_name.clone(), pid: ppid, daemon: false });
    }
    if p.daemon {
        set_parent_death_signal(ppid);
    }
    super::process::FRESH_PROCESS.store(true, Ordering::Relaxed);
    // This process was started with the spawn arguments: its own children get the same.
    super::process::inherit_spawn_args(std::env::args_os().skip(1).collect());
    child_main(report, move || run_call(p.call, &p.arg))
}

fn read_payload(fd: RawFd) -> Option<Vec<u8>> {
    // SAFETY: `st` is plain data filled by fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd number with a valid out pointer; a closed fd just fails.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_size < 8 || st.st_size as usize > MAX_PAYLOAD {
        return None;
    }
    let mut buf = vec![0u8; st.st_size as usize];
    let mut at = 0;
    while at < buf.len() {
        // SAFETY: reads into the unfilled tail of `buf` at file offset `at`.
        let n = unsafe { libc::pread(fd, buf[at..].as_mut_ptr().cast(), buf.len() - at, at as libc::off_t) };
        if n <= 0 {
            return None;
        }
        at += n as usize;
    }
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_rejects() {
        let p = Payload {
            parent_pid: 7,
            parent_name: "MainProcess".into(),
            name: "Process-1".into(),
            daemon: true,
            call: Call { tramp: FnRef(1), f: FnRef(u64::MAX) },
            arg: vec![1, 2, 3],
        };
        let b = p.encode();
        assert_eq!(Payload::decode(&b), Ok(p));
        for cut in 0..b.len() {
            assert!(Payload::decode(&b[..cut]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Payload::decode(&long), Err("trailing bytes"));
        assert_eq!(parse_env("1:5:6:7"), Some((5, 6, 7)));
        assert_eq!(parse_env("1:5:6"), None);
        assert_eq!(parse_env("2:5:6:7"), None);
        assert_eq!(parse_env("1:5:-1:7"), None);
    }
}
