//! Helpers for the process tests: a watchdog, unique names, and re-running this test binary
//! as a separate (exec'd, unrelated) process that plays a role.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Aborts the whole test process if the guard is still alive after `secs`: a hang becomes a
/// loud failure under plain `cargo test` as well as under nextest.
pub struct Watchdog(Option<mpsc::Sender<()>>);

pub fn watchdog(secs: u64) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("watchdog: test {name} still running after {secs} s; aborting");
            std::process::abort();
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A segment name unique to this process and call.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("shmkit-test-{}-{}-{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

pub fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}", name.trim_start_matches('/'))
}

/// The environment variable that selects a role in a re-executed test binary.
pub const ROLE_ENV: &str = "SHMKIT_TEST_ROLE";

/// A command that re-runs this test binary as another process, running only the ignored
/// test `entry` with `role` and `args` in the environment.
pub fn role_command(entry: &str, role: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current test binary"));
    cmd.args(["--exact", entry, "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env("SHMKIT_TEST_ARGS", args.join("\u{1f}"));
    cmd
}

/// In a role process: (role, args), or `None` when run as a normal test.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var("SHMKIT_TEST_ARGS").unwrap_or_default();
    let args = if args.is_empty() { Vec::new() } else { args.split('\u{1f}').map(str::to_owned).collect() };
    Some((role, args))
}

/// Runs the `shmkit` CLI built for these tests.
pub fn shmkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmkit")).args(args).output().expect("run shmkit")
}

/// Runs `cmd` to completion within `secs`, killing it on timeout (then panicking).
pub fn run_with_timeout(mut cmd: Command, secs: u64) -> std::process::ExitStatus {
    let mut child = cmd.spawn().expect("spawn role process");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("role process did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------------------------
// Pool helpers: a named board of counters that worker processes (forked or spawned) open by
// name, and checks that a pid is gone.
// ---------------------------------------------------------------------------------------------

/// A segment name as a `Pod` value that a task or an initializer can take as its argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Name(pub [u8; 64]);

impl Name {
    pub fn new(s: &str) -> Name {
        let mut b = [0u8; 64];
        assert!(s.len() < b.len(), "name {s} too long");
        b[..s.len()].copy_from_slice(s.as_bytes());
        Name(b)
    }

    pub fn as_str(&self) -> &str {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(self.0.len());
        std::str::from_utf8(&self.0[..end]).expect("name is UTF-8")
    }
}

/// Slots of a [`Board`].
pub const BOARD_SLOTS: usize = 64;

fn board_layout() -> (usize, shmkit::shm::SliceOffset<std::sync::atomic::AtomicU64>) {
    let mut l = shmkit::shm::Layout::new();
    let at = l.push_slice::<std::sync::atomic::AtomicU64>(BOARD_SLOTS);
    (l.size(), at)
}

/// `BOARD_SLOTS` shared `AtomicU64`s in a named segment (unlinked when the creator drops it).
pub struct Board {
    seg: shmkit::shm::Segment,
    at: shmkit::shm::SliceOffset<std::sync::atomic::AtomicU64>,
    name: Name,
}

impl Board {
    /// A new zeroed board (in the test process).
    pub fn new() -> Board {
        let s = unique_name("board");
        let (size, at) = board_layout();
        let seg = shmkit::shm::Segment::create(&s, shmkit::shm::Kind::RAW, size).expect("create board");
        Board { seg, at, name: Name::new(&s) }
    }

    /// Opens the board called `name` (in a worker).
    pub fn open(name: Name) -> Board {
        let (_, at) = board_layout();
        let seg = shmkit::shm::Segment::open(name.as_str(), shmkit::shm::Kind::RAW).expect("open board");
        Board { seg, at, name }
    }

    pub fn name(&self) -> Name {
        self.name
    }

    pub fn slots(&self) -> &[std::sync::atomic::AtomicU64] {
        self.seg.get_slice(self.at).expect("board slots")
    }

    pub fn get(&self, i: usize) -> u64 {
        self.slots()[i].load(Ordering::SeqCst)
    }

    pub fn set(&self, i: usize, v: u64) {
        self.slots()[i].store(v, Ordering::SeqCst)
    }

    pub fn add(&self, i: usize, v: u64) -> u64 {
        self.slots()[i].fetch_add(v, Ordering::SeqCst)
    }
}

/// Polls `cond` every millisecond; panics naming `what` if it is still false after `secs`.
pub fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The start time (clock ticks after boot) of `pid` from `/proc`, `None` if there is no such
/// process. A zombie still has one: only a reaped process is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 (starttime) is the 20th after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that was `pid` with start time `start` has ended and been reaped (a
/// recycled pid, with another start time, counts as gone).
pub fn gone(pid: u32, start: u64) -> bool {
    start_time(pid) != Some(start)
}

/// Sends SIGKILL to `pid`.
pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(r, 0, "kill({pid}, SIGKILL): {}", std::io::Error::last_os_error());
}

/// The state letter of `pid` from `/proc` (`R`, `S`, `Z`, ...), `None` if there is no such
/// process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}
