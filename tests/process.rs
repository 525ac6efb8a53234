//! `shmkit::process::Process` with real processes and real signals: exit codes (return, `exit`,
//! panic, SIGTERM, SIGKILL, other signals), the errors of a misused handle, `join_timeout`,
//! the pidfd sentinel, `current_process`/`parent_process` as seen by children and
//! grandchildren, `active_children`, daemon children (killed with a SIGKILLed parent, sent
//! SIGTERM at its normal exit) and non-daemon children (joined at the parent's normal exit),
//! processes forked behind shmkit's back (`libc::fork`), children forked while another thread
//! held stdout's lock, and the spawn start method: arguments, panics, daemons, nested spawns,
//! orphans, `init` detection, a multi-threaded parent, `inherit_fd`, fn targets run through
//! fork, and (with the `serde` feature) `Serde<String>` and unencodable arguments.
//!
//! The `bug_*` tests (ignored) reproduce bugs of `src/process`; each says what it shows.
//!
//! Children report through shared memory: a `RawArray<u64>` (anonymous for forked children,
//! named for spawned ones, which do not inherit mappings). Every test filters
//! `active_children()` by the pids it started (under `cargo test` the tests share one process),
//! and every started child is killed and reaped if its test fails (`Child`'s drop), so a
//! failing test cannot leave a child that the exit handler would then join forever.

mod common;

use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use common::{role, role_command, run_with_timeout, watchdog};
use shmkit::process::{
    active_children, current_process, parent_process, set_spawn_args, Process, ProcessError, ProcessInfo,
    StartMethod,
};
use shmkit::shm::{Kind, Offset, Segment};
use shmkit::sync::Event;
use shmkit::value::RawArray;

/// Upper bound for anything that should take milliseconds (a hang guard, not a timing claim).
const LONG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A started process that is SIGKILLed and reaped if the test fails before joining it.
struct Child(Process);

impl Child {
    fn start(mut p: Process) -> Child {
        p.start().expect("start");
        Child(p)
    }

    /// Joins with a hang guard; the exit code.
    fn join_code(&self) -> i32 {
        match self.0.join_timeout(LONG).expect("join") {
            Some(code) => code,
            None => panic!("{} (pid {:?}) did not end within {LONG:?}", self.0.name(), self.0.pid()),
        }
    }
}

impl Deref for Child {
    type Target = Process;
    fn deref(&self) -> &Process {
        &self.0
    }
}

impl DerefMut for Child {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.0
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.0.pid().is_some() && self.0.exitcode().is_none() {
            let _ = self.0.kill();
            let _ = self.0.join_timeout(LONG);
        }
    }
}

fn start(p: Process) -> Child {
    Child::start(p)
}

/// The arguments a spawned child is re-executed with: this binary's `spawn_entry` test.
fn use_spawn_entry() {
    set_spawn_args(["spawn_entry", "--exact", "--nocapture", "--test-threads=1"]);
}

/// In a child started with the spawn method, runs the target and exits; elsewhere returns.
#[test]
fn spawn_entry() {
    shmkit::process::init();
}

// Word layout of a report.
const W_PID: usize = 0;
const W_PPID: usize = 1;
const W_DAEMON: usize = 2;
const W_A: usize = 3;
const W_B: usize = 4;
const W_C: usize = 5;
const W_D: usize = 6;
const W_DONE: usize = 7;
/// String slots: 16 words each (a length, then up to 120 bytes), from word 8.
const S_NAME: usize = 0;
const S_PARENT_NAME: usize = 1;
const S_TEXT: usize = 2;
const SLOT_WORDS: usize = 16;
const WORDS: usize = 8 + 3 * SLOT_WORDS;
const NO_PARENT: u64 = u64::MAX;

/// What a child writes back: numbers and short strings in a `RawArray<u64>`.
#[derive(Clone)]
struct Report(RawArray<u64>);

fn report_name(key: u64) -> String {
    format!("shmkit-test-proc-{key:016x}")
}

/// A key for a named report, unique to this process and call.
fn new_key() -> u64 {
    static N: AtomicU32 = AtomicU32::new(0);
    (u64::from(std::process::id()) << 32) | u64::from(N.fetch_add(1, Ordering::Relaxed))
}

impl Report {
    /// Shared with forked children.
    fn anon() -> Report {
        Report(RawArray::zeroed(WORDS).unwrap())
    }

    /// Shared by name (with spawned children): the key to pass them.
    fn named() -> (Report, u64) {
        let key = new_key();
        (Report(RawArray::create(&report_name(key), &[0u64; WORDS]).unwrap()), key)
    }

    fn open(key: u64) -> Report {
        Report(RawArray::open(&report_name(key)).expect("open the report"))
    }

    fn set(&self, i: usize, v: u64) {
        self.0.set(i, v).unwrap();
    }

    fn get(&self, i: usize) -> u64 {
        self.0.get(i).unwrap()
    }

    fn set_str(&self, slot: usize, s: &str) {
        let base = 8 + slot * SLOT_WORDS;
        let bytes = &s.as_bytes()[..s.len().min((SLOT_WORDS - 1) * 8)];
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.set(base + 1 + i, u64::from_le_bytes(w));
        }
        self.set(base, bytes.len() as u64);
    }

    fn get_str(&self, slot: usize) -> String {
        let base = 8 + slot * SLOT_WORDS;
        let len = self.get(base) as usize;
        assert!(len <= (SLOT_WORDS - 1) * 8, "bad string length {len}");
        let mut bytes: Vec<u8> =
            (0..SLOT_WORDS - 1).flat_map(|i| self.get(base + 1 + i).to_le_bytes()).collect();
        bytes.truncate(len);
        String::from_utf8(bytes).unwrap()
    }

    /// Records who the calling process is (`current_process`, `parent_process`).
    fn record_identity(&self) {
        let me = current_process();
        self.set(W_PID, u64::from(me.pid));
        self.set(W_DAEMON, u64::from(me.daemon));
        self.set_str(S_NAME, &me.name);
        match parent_process() {
            Some(p) => {
                self.set(W_PPID, u64::from(p.pid));
                self.set_str(S_PARENT_NAME, &p.name);
            }
            None => self.set(W_PPID, NO_PARENT),
        }
    }

    fn pid(&self) -> u32 {
        self.get(W_PID) as u32
    }

    fn ppid(&self) -> u64 {
        self.get(W_PPID)
    }
}

/// `poll` on one fd: the number of ready fds (0 or 1) and the revents.
fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> (i32, i16) {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        assert!(r >= 0, "poll: {}", std::io::Error::last_os_error());
        return (r, p.revents);
    }
}

/// (state, start time) of a process from `/proc/PID/stat`, `None` if there is none.
fn proc_stat(pid: u32) -> Option<(u8, u64)> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&text[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.bytes().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether the process `pid` that started at `start` still runs (not a zombie, not gone, not
/// replaced by a new process under the same pid).
fn running(pid: u32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != b'Z' && state != b'X')
}

/// Polls `cond` every 2 ms until it holds; false if `within` passed first.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGKILLs the process `pid` (started at `start`) on drop if it still runs: for grandchildren
/// a failing test would otherwise leave behind.
struct KillOnDrop(u32, u64);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if running(self.0, self.1) {
            // SAFETY: plain syscall; the start time identifies the process.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
            // Until it is dead (its fds, e.g. a test runner's output pipe, closed).
            eventually(LONG, || !running(self.0, self.1));
        }
    }
}

fn temp_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{}", common::unique_name(tag), new_key()))
}

/// Removes a file on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("tmp"));
    }
}

/// Writes `text` to `path` atomically (a temporary file, then a rename).
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A child that waits for `go` (at most `LONG`), then runs `then`.
fn waits_for(go: &Event, then: impl FnOnce() + Send + 'static) -> Process {
    let go = go.clone();
    Process::new(move || {
        go.wait_timeout(LONG);
        then();
    })
}

fn ours(pid: Option<u32>) -> Vec<ProcessInfo> {
    active_children().into_iter().filter(|c| Some(c.pid) == pid).collect()
}

// ---------------------------------------------------------------------------------------------
// Lifecycle and exit codes
// ---------------------------------------------------------------------------------------------

#[test]
fn returning_closure_exits_0_and_ran_in_another_process() {
    let _w = watchdog(60);
    let r = Report::anon();
    let w = r.clone();
    let p = start(Process::new(move || {
        w.set(W_PID, u64::from(std::process::id()));
        w.set(W_DONE, 42);
    }));
    assert_eq!(p.join_code(), 0);
    assert_eq!(r.get(W_DONE), 42, "the closure ran");
    assert_eq!(r.pid(), p.pid().unwrap(), "in the child, whose pid pid() reports");
    assert_ne!(r.pid(), std::process::id());
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(p.panic_message(), None);
    assert!(!p.is_alive());
    assert_eq!(p.start_method(), StartMethod::Fork);
    // Joining again gives the same code.
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn exit_code_of_process_exit_passes_through() {
    let _w = watchdog(60);
    let p = start(Process::new(|| std::process::exit(7)));
    assert_eq!(p.join_code(), 7);
    assert_eq!(p.exitcode(), Some(7));
    assert_eq!(p.panic_message(), None);
    let p = start(Process::new(|| std::process::exit(0)));
    assert_eq!(p.join_code(), 0);
    // Any fatal signal: -N (SIGUSR1 rather than an abort: no core dump).
    let p = start(Process::new(|| {
        // SAFETY: raise has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGUSR1) };
        std::process::exit(0);
    }));
    assert_eq!(p.join_code(), -libc::SIGUSR1);
    assert_eq!(p.panic_message(), None);
}

#[test]
fn panic_gives_exit_code_1_and_the_message() {
    let _w = watchdog(60);
    let n = 17;
    let p = start(Process::new(move || panic!("boom number {n}")));
    assert_eq!(p.join_code(), 1);
    let msg = p.panic_message().expect("a panic message");
    assert!(msg.contains("boom number 17"), "{msg:?}");
    // A &'static str payload too.
    let p = start(Process::new(|| panic!("static boom")));
    assert_eq!(p.join_code(), 1);
    assert!(p.panic_message().unwrap().contains("static boom"));
    // Non-panicking children have none.
    let p = start(Process::new(|| std::process::exit(1)));
    assert_eq!(p.join_code(), 1);
    assert_eq!(p.panic_message(), None);
}

#[test]
fn terminate_gives_minus_15_and_kill_minus_9() {
    let _w = watchdog(60);
    for (sig, expect) in [(libc::SIGTERM, -15), (libc::SIGKILL, -9)] {
        let go = Event::new().unwrap();
        // If the signal were lost the child would end normally (0) once released.
        let p = start(waits_for(&go, || {}));
        let pid = p.pid().expect("pid once started");
        assert_ne!(pid, std::process::id());
        assert!(proc_stat(pid).is_some(), "/proc/{pid} exists");
        assert_eq!(p.exitcode(), None, "no exit code while it runs");
        assert!(p.is_alive());
        assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), None);
        if sig == libc::SIGTERM {
            p.terminate().unwrap();
        } else {
            p.kill().unwrap();
        }
        assert_eq!(p.join_code(), expect);
        go.set();
        assert_eq!(p.exitcode(), Some(expect));
        assert!(!p.is_alive());
        assert_eq!(p.panic_message(), None);
        // Signalling a reaped child is a no-op, not an error (and cannot hit a recycled pid).
        p.terminate().unwrap();
        p.kill().unwrap();
        assert_eq!(p.exitcode(), Some(expect));
    }
}

#[test]
fn misuse_gives_typed_errors() {
    let _w = watchdog(60);
    let p = Process::new(|| {});
    assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.join_timeout(Duration::from_millis(1)), Err(ProcessError::NotStarted)));
    assert!(matches!(p.terminate(), Err(ProcessError::NotStarted)));
    assert!(matches!(p.kill(), Err(ProcessError::NotStarted)));
    assert_eq!(p.pid(), None);
    assert_eq!(p.exitcode(), None);
    assert!(!p.is_alive());
    assert!(p.sentinel().is_none());
    assert!(p.info().is_none());

    let mut p = Child(p);
    p.start().unwrap();
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));
    assert_eq!(p.join_code(), 0);
    assert!(matches!(p.start(), Err(ProcessError::AlreadyStarted)));

    // A closure cannot be spawned; the process stays unstarted (and the error repeats).
    let mut p = Process::builder().start_method(StartMethod::Spawn).target(|| {});
    assert_eq!(p.start_method(), StartMethod::Spawn);
    assert!(matches!(p.start(), Err(ProcessError::ClosureNeedsFork)));
    assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
    assert_eq!(p.pid(), None);
    assert!(matches!(p.start(), Err(ProcessError::ClosureNeedsFork)));
}

#[test]
fn join_timeout_waits_the_whole_timeout_then_join_returns() {
    let _w = watchdog(60);
    let go = Event::new().unwrap();
    let p = start(waits_for(&go, || std::process::exit(3)));
    for timeout in [Duration::from_millis(300), Duration::from_millis(1), Duration::ZERO] {
        let t = Instant::now();
        assert_eq!(p.join_timeout(timeout).unwrap(), None, "still running");
        let took = t.elapsed();
        assert!(took >= timeout, "join_timeout({timeout:?}) returned after {took:?}");
    }
    assert!(p.is_alive());
    go.set();
    assert_eq!(p.join_code(), 3);
    // Once ended, a timed join returns the code at once.
    assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), Some(3));
    assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(3));
}

#[test]
fn join_timeout_max_means_forever() {
    let _w = watchdog(60);
    let go = Event::new().unwrap();
    let p = start(waits_for(&go, || {}));
    let setter = {
        let go = go.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            go.set();
        })
    };
    assert_eq!(p.join_timeout(Duration::MAX).unwrap(), Some(0));
    setter.join().unwrap();
}

#[test]
fn sentinel_is_readable_once_the_child_ends_and_not_before() {
    let _w = watchdog(60);
    let go = Event::new().unwrap();
    let p = start(waits_for(&go, || {}));
    let fd = p.sentinel().expect("a pidfd (Linux >= 5.3)");
    for _ in 0..3 {
        assert_eq!(poll_in(fd, 0).0, 0, "readable while the child is blocked");
    }
    assert_eq!(poll_in(fd, 50).0, 0, "readable while the child is blocked");
    assert!(p.is_alive());
    go.set();
    let (n, revents) = poll_in(fd, 10_000);
    assert_eq!(n, 1, "not readable within 10 s of the child's release");
    assert_ne!(revents & libc::POLLIN, 0);
    assert_eq!(p.join_code(), 0);
    // Still readable after the reap, as Python's sentinel.
    assert_eq!(poll_in(p.sentinel().unwrap(), 0).0, 1);

    // Killed children too.
    let never = Event::new().unwrap();
    let p = start(waits_for(&never, || {}));
    let fd = p.sentinel().unwrap().try_clone_to_owned().unwrap();
    assert_eq!(poll_in(fd.as_fd(), 0).0, 0);
    p.kill().unwrap();
    assert_eq!(poll_in(fd.as_fd(), 10_000).0, 1);
    assert_eq!(p.join_code(), -9);
}

// ---------------------------------------------------------------------------------------------
// Identity: current_process, parent_process, names, active_children
// ---------------------------------------------------------------------------------------------

#[test]
fn the_main_process_has_no_parent() {
    let me = current_process();
    assert_eq!(me.pid, std::process::id());
    assert_eq!(me.name, "MainProcess");
    assert!(!me.daemon);
    assert_eq!(parent_process(), None);
}

#[test]
fn child_sees_its_name_pid_and_parent() {
    let _w = watchdog(60);
    let me = current_process();
    for daemon in [false, true] {
        let r = Report::anon();
        let w = r.clone();
        let name = format!("worker-{daemon}");
        let p = start(Process::builder().name(&name).daemon(daemon).target(move || w.record_identity()));
        assert_eq!(p.name(), name);
        assert_eq!(p.is_daemon(), daemon);
        assert_eq!(p.join_code(), 0);
        assert_eq!(r.pid(), p.pid().unwrap());
        assert_eq!(r.get_str(S_NAME), name);
        assert_eq!(r.get(W_DAEMON), u64::from(daemon));
        assert_eq!(r.ppid(), u64::from(std::process::id()));
        assert_eq!(r.get_str(S_PARENT_NAME), me.name);
        assert_eq!(p.info(), Some(ProcessInfo { name: name.clone(), pid: r.pid(), daemon }));
    }
}

fn process_number(name: &str) -> u32 {
    name.strip_prefix("Process-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{name:?} is not Process-N"))
}

#[test]
fn default_names_are_process_n_and_nested_names_extend_them() {
    let _w = watchdog(60);
    let first = start(Process::new(|| {}));
    let second = start(Process::new(|| {}));
    // Other tests of this process may take numbers in between: only the order is fixed.
    assert!(process_number(second.name()) > process_number(first.name()));
    assert_eq!(first.join_code(), 0);
    assert_eq!(second.join_code(), 0);

    // A child's own children are CHILD:1, CHILD:2; explicit names are kept.
    let reports: Vec<Report> = (0..4).map(|_| Report::anon()).collect();
    let rs = reports.clone();
    let p = start(Process::new(move || {
        rs[0].record_identity();
        let mut codes = 0u64;
        for (i, name) in [None, None, Some("grandchild-x")].into_iter().enumerate() {
            let w = rs[i + 1].clone();
            let b = Process::builder();
            let b = match name {
                Some(n) => b.name(n),
                None => b,
            };
            let mut g = b.target(move || w.record_identity());
            if g.start().is_err() {
                std::process::exit(10);
            }
            codes = codes * 10 + g.join().map_or(9, |c| c as u64);
        }
        rs[0].set(W_A, codes + 1000);
    }));
    assert_eq!(p.join_code(), 0);
    let name = p.name().to_owned();
    process_number(&name);
    assert_eq!(reports[0].get_str(S_NAME), name);
    assert_eq!(reports[0].get(W_A), 1000, "grandchildren exit codes");
    for (r, want) in
        reports[1..].iter().zip([format!("{name}:1"), format!("{name}:2"), "grandchild-x".into()])
    {
        assert_eq!(r.get_str(S_NAME), want);
        assert_eq!(r.ppid(), u64::from(p.pid().unwrap()));
        assert_eq!(r.get_str(S_PARENT_NAME), name);
        assert_ne!(r.pid(), 0);
        assert_ne!(r.pid(), p.pid().unwrap());
    }
}

#[test]
fn active_children_lists_a_running_child_and_drops_it_once_ended() {
    let _w = watchdog(60);
    let go = Event::new().unwrap();
    let p = start(waits_for(&go, || {}));
    let mut d = Process::builder().daemon(true).name("active-daemon").target({
        let go = go.clone();
        move || {
            go.wait_timeout(LONG);
        }
    });
    d.start().unwrap();
    let d = Child(d);
    assert_eq!(
        ours(p.pid()),
        [ProcessInfo { name: p.name().to_owned(), pid: p.pid().unwrap(), daemon: false }]
    );
    assert_eq!(
        ours(d.pid()),
        [ProcessInfo { name: "active-daemon".into(), pid: d.pid().unwrap(), daemon: true }]
    );
    go.set();
    // Without a join: active_children reaps it...
    assert!(eventually(LONG, || ours(p.pid()).is_empty() && ours(d.pid()).is_empty()), "still listed");
    // ...and the handles still report the exit codes.
    assert_eq!(p.exitcode(), Some(0));
    assert_eq!(d.exitcode(), Some(0));
    assert!(!p.is_alive());
    assert_eq!(p.join_code(), 0);
}

#[test]
fn a_dropped_handles_child_is_still_listed_until_it_ends() {
    let _w = watchdog(60);
    let go = Event::new().unwrap();
    let mut p = waits_for(&go, || {});
    p.start().unwrap();
    let pid = p.pid();
    let (_, started) = proc_stat(pid.unwrap()).unwrap();
    let _cleanup = KillOnDrop(pid.unwrap(), started);
    drop(p);
    assert!(running(pid.unwrap(), started), "dropping the handle killed the child");
    assert_eq!(ours(pid).len(), 1);
    go.set();
    // active_children reaps it: no zombie is left behind.
    assert!(eventually(LONG, || ours(pid).is_empty()), "still listed");
    assert!(!matches!(proc_stat(pid.unwrap()), Some((_, s)) if s == started), "not reaped");
}

// ---------------------------------------------------------------------------------------------
// Daemons and the exit handler, through a separate parent process
// ---------------------------------------------------------------------------------------------

fn sleep_secs(secs: u64) {
    std::thread::sleep(Duration::from_secs(secs));
}

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    match role.as_str() {
        // args: pid file, "fork"|"spawn", report key. Starts a daemon and a non-daemon child
        // with that method, both raising a flag in the report once their target runs and then
        // sleeping; writes "DAEMON_PID SLEEPER_PID" and sleeps until SIGKILLed (this thread must
        // live on: a daemon's death signal fires when the thread that started it ends).
        "daemon-and-sleeper" => {
            use_spawn_entry();
            let key = u64::from_str_radix(&args[2], 16).unwrap();
            let (da, sa) = (SleepArg { key, flag: W_DONE as u64 }, SleepArg { key, flag: W_A as u64 });
            let (mut d, mut s) = match args[1].as_str() {
                "fork" => (
                    Process::builder().daemon(true).target(move || flag_then_sleep(da)),
                    Process::new(move || flag_then_sleep(sa)),
                ),
                "spawn" => (
                    Process::builder().daemon(true).target_fn(flag_then_sleep, da),
                    Process::new_fn(flag_then_sleep, sa),
                ),
                other => panic!("unknown method {other}"),
            };
            d.start().expect("start the daemon");
            s.start().expect("start the sleeper");
            write_atomically(Path::new(&args[0]), &format!("{} {}", d.pid().unwrap(), s.pid().unwrap()));
            sleep_secs(60);
            std::process::exit(3);
        }
        // args: marker file. A non-daemon child, released just before this test function
        // returns, writes the marker 300 ms later: it exists only if the exit handler joined it.
        "nondaemon-joined-at-exit" => {
            let go = Event::new().unwrap();
            let marker = args[0].clone();
            let mut c = waits_for(&go, move || {
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(&marker, "done").unwrap();
            });
            c.start().expect("start");
            go.set();
            // Returns: the harness finishes and `main` returns normally.
        }
        // args: marker file. A daemon child that waits for SIGTERM and records it; this process
        // exits normally (from this thread, so the daemon's death signal does not fire first).
        "daemon-terminated-at-exit" => {
            let ready = Event::new().unwrap();
            let marker = args[0].clone();
            let r = ready.clone();
            let mut d = Process::builder().daemon(true).target(move || {
                // SAFETY: plain signal-mask calls on a local set.
                let got = unsafe {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGTERM);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                    r.set();
                    let ts = libc::timespec { tv_sec: 20, tv_nsec: 0 };
                    libc::sigtimedwait(&set, std::ptr::null_mut(), &ts)
                };
                std::fs::write(&marker, if got == libc::SIGTERM { "sigterm" } else { "no signal" }).unwrap();
            });
            d.start().expect("start");
            assert!(ready.wait_timeout(LONG), "the daemon never got ready");
            std::process::exit(0);
        }
        "spawn-env" => {
            // SHMKIT_SPAWN set by the test: args[0] says whether it names this process's parent.
            use_spawn_entry();
            let mut p = Process::new_fn(exits_with, 0);
            let r = p.start();
            let code = match (args[0].as_str(), r) {
                ("refused", Err(ProcessError::SpawnNotInitialised)) => 0,
                ("accepted", Ok(())) => p.join_timeout(LONG).expect("join").expect("ended"),
                (_, r) => {
                    eprintln!("unexpected start result {r:?}");
                    1
                }
            };
            // The fork start method needs no init.
            let mut f = Process::new(|| std::process::exit(5));
            f.start().unwrap();
            let fcode = f.join_timeout(LONG).expect("join").expect("ended");
            std::process::exit(if fcode == 5 { code } else { 2 });
        }
        "plain-fork-identity" => plain_fork_identity(),
        "plain-fork-daemon" => plain_fork_daemon(),
        "plain-fork-exit-spares-daemons" => plain_fork_exit_spares_daemons(),
        "stdout-held-at-fork" => stdout_held_at_fork(),
        "dropped-children" => dropped_children(),
        "panic-while-another-thread-panics-at-fork" => panic_while_another_thread_panics_at_fork(),
        "orphaned-spawn" => {
            // args: marker file, pid file. Spawns a non-daemon child whose entry point waits
            // for this process to die before calling init(), then dies at once.
            set_spawn_args(["orphan_spawn_entry", "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
            let mut p = Process::new_fn(write_target_marker, 0u64);
            p.start().unwrap();
            write_atomically(Path::new(&args[1]), &p.pid().unwrap().to_string());
            // SAFETY: ends this process at once, as a SIGKILL would (no exit handler).
            unsafe { libc::_exit(0) };
        }
        other => panic!("unknown role {other}"),
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SleepArg {
    key: u64,
    flag: u64,
}

/// Raises word `flag` of the report named by `key`, then sleeps a minute.
fn flag_then_sleep(arg: SleepArg) {
    Report::open(arg.key).set(arg.flag as usize, 1);
    sleep_secs(60);
}

/// A parent process is SIGKILLed once its children's targets run: its daemon child dies, its
/// non-daemon child does not.
fn daemon_dies_with_sigkilled_parent(method: &str) {
    let _w = watchdog(60);
    use_spawn_entry();
    let (report, key) = Report::named();
    let pidfile = TempFile(temp_path("pids"));
    let mut cmd = role_command(
        "role_entry",
        "daemon-and-sleeper",
        &[pidfile.0.to_str().unwrap().to_owned(), method.to_owned(), format!("{key:x}")],
    );
    cmd.stdout(Stdio::null());
    let mut parent = cmd.spawn().expect("start the parent role");
    let mut text = String::new();
    let ok = eventually(LONG, || {
        if let Some(st) = parent.try_wait().unwrap() {
            panic!("the parent role ended early: {st:?}");
        }
        text = std::fs::read_to_string(&pidfile.0).unwrap_or_default();
        !text.is_empty() && report.get(W_DONE) == 1 && report.get(W_A) == 1
    });
    if !ok {
        let _ = parent.kill();
        let _ = parent.wait();
        panic!("no pids from the parent role, or children not running, within {LONG:?} ({text:?})");
    }
    let pids: Vec<u32> = text.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let [daemon, sleeper] = pids[..] else { panic!("bad pid file {text:?}") };
    let (_, dstart) = proc_stat(daemon).expect("the daemon runs");
    let (_, sstart) = proc_stat(sleeper).expect("the sleeper runs");
    let _cleanup = (KillOnDrop(daemon, dstart), KillOnDrop(sleeper, sstart));
    assert!(running(daemon, dstart) && running(sleeper, sstart));

    parent.kill().unwrap();
    let st = parent.wait().unwrap();
    assert!(!st.success());
    assert!(
        eventually(Duration::from_secs(10), || !running(daemon, dstart)),
        "the {method} daemon {daemon} outlived its SIGKILLed parent by 10 s"
    );
    assert!(running(sleeper, sstart), "the non-daemon {method} child died with its parent");
}

#[test]
fn fork_daemon_dies_when_its_parent_is_sigkilled() {
    daemon_dies_with_sigkilled_parent("fork");
}

#[test]
fn spawn_daemon_dies_when_its_parent_is_sigkilled() {
    daemon_dies_with_sigkilled_parent("spawn");
}

#[test]
fn non_daemon_child_is_joined_at_the_parents_normal_exit() {
    let _w = watchdog(60);
    let marker = TempFile(temp_path("marker"));
    let mut cmd =
        role_command("role_entry", "nondaemon-joined-at-exit", &[marker.0.to_str().unwrap().to_owned()]);
    cmd.stdout(Stdio::null());
    let st = run_with_timeout(cmd, 30);
    assert_eq!(st.code(), Some(0));
    // The parent has exited: its child must already have written the marker.
    assert_eq!(std::fs::read_to_string(&marker.0).ok().as_deref(), Some("done"));
}

#[test]
fn daemon_child_gets_sigterm_at_the_parents_normal_exit() {
    let _w = watchdog(60);
    let marker = TempFile(temp_path("marker"));
    let mut cmd =
        role_command("role_entry", "daemon-terminated-at-exit", &[marker.0.to_str().unwrap().to_owned()]);
    cmd.stdout(Stdio::null());
    let st = run_with_timeout(cmd, 40);
    assert_eq!(st.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&marker.0).ok().as_deref(), Some("sigterm"));
}

#[test]
fn spawn_needs_init_only_where_the_spawn_variable_names_a_payload_memfd() {
    let _w = watchdog(60);
    // A memfd named as the spawn payload, at fd 100 in the role process: the variable names a
    // spawned child that skipped init(), which may not spawn (it would run main again in
    // every generation).
    // SAFETY: a valid C string; memfd_create returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"shmkit-spawn".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd owned by nobody else.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cmd = role_command("role_entry", "spawn-env", &["refused".into()]);
    cmd.env("SHMKIT_SPAWN", format!("1:{}:100:101", std::process::id())).stdout(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; `raw` stays open until spawn returns.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(raw, 100) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    assert_eq!(run_with_timeout(cmd, 40).code(), Some(0));
    drop(memfd);
    // Inherited without the fds (or with another file under that number): ignored.
    let mut cmd = role_command("role_entry", "spawn-env", &["accepted".into()]);
    cmd.env("SHMKIT_SPAWN", format!("1:{}:1000:2", std::process::id())).stdout(Stdio::null());
    assert_eq!(run_with_timeout(cmd, 40).code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Plain forks, orphans and locks held by vanished threads. Each case runs in its own role
// process (they fork behind shmkit's back or make a thread hold a lock across a fork, which
// would disturb the other tests of a shared test process) and exits 0 when shmkit behaves.
// ---------------------------------------------------------------------------------------------

fn run_role(role: &str) {
    let _w = watchdog(60);
    let mut cmd = role_command("role_entry", role, &[]);
    cmd.stdout(Stdio::null());
    assert_eq!(run_with_timeout(cmd, 40).code(), Some(0), "role {role}: see its message above");
}

fn fail(msg: &str) -> ! {
    eprintln!("FAILED: {msg}");
    std::process::exit(1);
}

/// A process forked by other means than `Process` (`libc::fork`, here through shmkit's own
/// `util::child::fork`) after the registry was made: `current_process().pid` is its own pid,
/// `parent_process()` is the process that forked it, and children it starts are told its pid.
fn plain_fork_identity() {
    let _ = current_process();
    let (me, child) = (Report::anon(), Report::anon());
    let (m, c) = (me.clone(), child.clone());
    // SAFETY: the only other thread (libtest's main) waits for this test without holding locks.
    let mut plain = unsafe {
        shmkit::util::child::fork(|| {
            m.record_identity();
            m.set(W_A, u64::from(std::process::id()));
            let mut p = Process::new(move || c.record_identity());
            match p.start().and_then(|()| p.join()) {
                Ok(0) => 0,
                _ => 3,
            }
        })
    }
    .unwrap();
    let st = plain.wait_timeout(LONG).unwrap().expect("the plain child ended");
    let (reported, real) = (me.get(W_PID), me.get(W_A));
    let (parent, grandchilds_parent) = (me.ppid(), child.ppid());
    if st.code() != Some(0)
        || reported != real
        || parent != u64::from(std::process::id())
        || grandchilds_parent != real
    {
        fail(&format!(
            "in a plain fork child (pid {real}; exit {st:?}), current_process().pid = {reported}, \
             parent_process().pid = {parent} (should be {}); its own child's parent_process().pid \
             = {grandchilds_parent}",
            std::process::id()
        ));
    }
    std::process::exit(0);
}

/// A daemon started by a plain fork child runs its target (its death-signal check compares
/// `getppid()` with the plain child's own pid, not the registry's first owner's).
fn plain_fork_daemon() {
    let _ = current_process();
    let r = Report::anon();
    let w = r.clone();
    // SAFETY: as in plain_fork_identity.
    let mut plain = unsafe {
        shmkit::util::child::fork(|| {
            let mut d = Process::builder().daemon(true).target(move || w.set(W_DONE, 1));
            if d.start().is_err() {
                return 100;
            }
            d.join().unwrap_or(101)
        })
    }
    .unwrap();
    let st = plain.wait_timeout(LONG).unwrap().expect("the plain child ended");
    if st.code() != Some(0) || r.get(W_DONE) != 1 {
        fail(&format!(
            "a daemon started from a plain fork child exited {:?} and its target {}",
            st.code(),
            if r.get(W_DONE) == 1 { "ran" } else { "never ran" }
        ));
    }
    std::process::exit(0);
}

/// A plain fork child that leaves through `exit` (running the inherited exit handler) leaves
/// its parent's daemons alone: they are not its children.
fn plain_fork_exit_spares_daemons() {
    let go = Event::new().unwrap();
    let mut d = Process::builder().daemon(true).target({
        let go = go.clone();
        move || {
            go.wait_timeout(LONG);
        }
    });
    d.start().unwrap();
    // SAFETY: as in plain_fork_identity; the child leaves through exit(3) (atexit handlers).
    let mut plain = unsafe { shmkit::util::child::fork(|| libc::exit(0)) }.unwrap();
    let st = plain.wait_timeout(LONG).unwrap().expect("the plain child ended");
    assert_eq!(st.code(), Some(0));
    go.set();
    match d.join_timeout(LONG).unwrap() {
        Some(0) => std::process::exit(0),
        code => fail(&format!(
            "our daemon ended with {code:?} after an unrelated plain fork child called exit(0)"
        )),
    }
}

static GRAB: AtomicBool = AtomicBool::new(false);
static ARMED: AtomicBool = AtomicBool::new(false);
static HELD: AtomicBool = AtomicBool::new(false);
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Fork handler (prepare): once armed, has the other thread take stdout's lock before the fork.
extern "C" fn grab_stdout_before_fork() {
    if ARMED.swap(false, Ordering::SeqCst) {
        GRAB.store(true, Ordering::SeqCst);
        while !HELD.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
    }
}

/// Fork handler (parent): lets the other thread go.
extern "C" fn release_stdout_after_fork() {
    if HELD.load(Ordering::SeqCst) {
        RELEASE.store(true, Ordering::SeqCst);
    }
}

/// A forked child exits although another thread of the parent held stdout's lock at the fork
/// (a copy of the lock, held for ever in the child). A `pthread_atfork` prepare handler makes
/// the timing deterministic: it has a second thread take the lock after `start`'s own flush
/// and before `fork`.
fn stdout_held_at_fork() {
    // SAFETY: registers two extern "C" functions that only use atomics.
    unsafe { libc::pthread_atfork(Some(grab_stdout_before_fork), Some(release_stdout_after_fork), None) };
    let holder = std::thread::spawn(|| {
        while !GRAB.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let out = std::io::stdout().lock();
        HELD.store(true, Ordering::SeqCst);
        while !RELEASE.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        drop(out);
    });
    ARMED.store(true, Ordering::SeqCst);
    let mut p = Process::new(|| {});
    p.start().unwrap();
    holder.join().unwrap();
    // The child ends within milliseconds unless it is stuck.
    match p.join_timeout(Duration::from_secs(10)).unwrap() {
        Some(0) => std::process::exit(0),
        code => {
            let _ = p.kill();
            let _ = p.join_timeout(LONG);
            fail(&format!("a forked child that never printed did not exit ({code:?} after 10 s)"))
        }
    }
}

/// A forked child that panics while another thread of the parent was inside std's default
/// panic hook at the fork: the hook holds std's (private) backtrace lock while it writes the
/// message, the child's copy of that lock is never released, and the child's own panic hook
/// blocks on it for ever instead of letting the child exit 1. Seen under
/// `cargo test --test-threads=8`, when one failing test's panic (printing a backtrace) made
/// another test's panicking child hang.
///
/// Made deterministic here: this process's stderr is a pipe nobody reads (see the test); a
/// thread fills it, so a second thread's panic blocks in the hook's write, lock held; then a
/// child is forked whose closure points its own stderr at /dev/null and panics.
/// Exit codes: 0 the child exited 1, 1 it hung, 2 setup failed (nothing is printed: stderr
/// is full).
fn panic_while_another_thread_panics_at_fork() {
    // As a program does first in main: installs the panic hook forked children use.
    shmkit::process::init();
    // SAFETY: fcntl/ioctl on fd 2 with valid out pointers.
    let full = || unsafe {
        let mut queued: libc::c_int = 0;
        let cap = libc::fcntl(2, libc::F_GETPIPE_SZ);
        cap > 0 && libc::ioctl(2, libc::FIONREAD, &mut queued) == 0 && queued >= cap
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(2, libc::F_GETPIPE_SZ) } <= 0 {
        std::process::exit(2);
    }
    std::thread::spawn(|| {
        let junk = vec![b'.'; 1 << 20];
        // SAFETY: writes initialized bytes; blocks once the pipe is full.
        unsafe { libc::write(2, junk.as_ptr().cast(), junk.len()) };
    });
    if !eventually(LONG, full) {
        std::process::exit(2);
    }
    static PANICKER: AtomicU32 = AtomicU32::new(0);
    std::thread::spawn(|| {
        // SAFETY: gettid has no preconditions.
        PANICKER.store(unsafe { libc::gettid() } as u32, Ordering::SeqCst);
        panic!("a parent thread panicking at the fork");
    });
    // Until the panicking thread blocks in write(2, ...) inside the hook.
    let in_hook = eventually(LONG, || {
        let tid = PANICKER.load(Ordering::SeqCst);
        tid != 0
            && std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                .is_ok_and(|s| s.starts_with("1 0x2 "))
    });
    if !in_hook {
        std::process::exit(2);
    }
    let mut p = Process::new(|| {
        // SAFETY: plain syscalls on a path literal and fd 2.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            libc::dup2(null, 2);
        }
        panic!("child panic");
    });
    p.start().unwrap();
    match p.join_timeout(Duration::from_secs(10)).unwrap() {
        Some(1) => std::process::exit(0),
        _ => {
            let _ = p.kill();
            let _ = p.join_timeout(LONG);
            std::process::exit(1);
        }
    }
}

/// Spawned by the "orphaned-spawn" role: the target it should run.
fn write_target_marker(_: u64) {
    let (_, args) = role().expect("the role's variables, inherited");
    std::fs::write(&args[0], "target ran").unwrap();
}

/// The entry point of the "orphaned-spawn" role's spawned child: waits until its parent has
/// died, then calls init(). Elsewhere (no SHMKIT_SPAWN variable) it returns at once.
#[test]
#[ignore = "helper: entry point of a spawned child of the orphaned-spawn role"]
fn orphan_spawn_entry() {
    let parent = std::env::var("SHMKIT_SPAWN").ok().and_then(|v| v.split(':').nth(1)?.parse::<i32>().ok());
    let Some(parent) = parent else { return };
    // SAFETY: getppid has no preconditions.
    eventually(LONG, || unsafe { libc::getppid() } != parent);
    shmkit::process::init();
    // init() returned: a real program would now run its `main` a second time.
    if let Some((_, args)) = role() {
        std::fs::write(&args[0], "init returned").unwrap();
    }
}

/// A non-daemon spawned child whose parent died before the child reached `init()` still runs
/// its target (its payload is in the inherited memfd), and does not go on to run `main`.
#[test]
fn spawned_child_orphaned_before_init_still_runs_its_target() {
    let _w = watchdog(60);
    let marker = TempFile(temp_path("marker"));
    let pidfile = TempFile(temp_path("pid"));
    let mut cmd = role_command(
        "role_entry",
        "orphaned-spawn",
        &[marker.0.to_str().unwrap().to_owned(), pidfile.0.to_str().unwrap().to_owned()],
    );
    cmd.stdout(Stdio::null());
    assert_eq!(run_with_timeout(cmd, 40).code(), Some(0));
    let pid: u32 = std::fs::read_to_string(&pidfile.0).unwrap().parse().unwrap();
    // The orphan ends on its own (its target or its main is quick); a zombie counts as ended.
    if let Some((_, start)) = proc_stat(pid) {
        let _cleanup = KillOnDrop(pid, start);
        assert!(eventually(LONG, || !running(pid, start)), "the orphaned child {pid} still runs");
    }
    assert_eq!(std::fs::read_to_string(&marker.0).ok().as_deref(), Some("target ran"));
}

/// Open fds of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Zombie children of this process.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let Some(close) = stat.rfind(')') else { return false };
            let mut fields = stat[close + 1..].split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(me.as_str())
        })
        .count()
}

/// 200 children started and dropped without a join: later starts reap those that ended (as
/// Python's `start` does), leaving neither zombies nor their fds (pidfd, report pipe) behind.
/// `active_children` (which reaps too) is not called.
fn dropped_children() {
    let before = open_fds();
    for i in 0..200 {
        let mut p = Process::new(|| {});
        if let Err(e) = p.start() {
            fail(&format!("start #{i}: {e}"));
        }
        drop(p);
    }
    // Once they have all ended, one more start reaps them (and is joined itself).
    let clean = eventually(LONG, || {
        let mut p = Process::new(|| {});
        p.start().unwrap();
        assert_eq!(p.join_timeout(LONG).unwrap(), Some(0));
        drop(p);
        zombies() == 0 && open_fds() <= before + 4
    });
    if !clean {
        fail(&format!(
            "after 200 dropped children: {} fds (before: {before}), {} zombies",
            open_fds(),
            zombies()
        ));
    }
    std::process::exit(0);
}

/// Regression: children started and dropped without a join were never reaped by later
/// starts: each left a zombie, a pidfd and a pipe's read end (300 of them exhausted
/// `ulimit -n 256`). In a role process: the fds of the other tests' children would count.
#[test]
fn dropped_processes_leave_no_zombies_or_fds() {
    run_role("dropped-children");
}

#[test]
fn plain_fork_child_gets_its_own_identity() {
    run_role("plain-fork-identity");
}

#[test]
fn daemon_started_after_a_plain_fork_runs() {
    run_role("plain-fork-daemon");
}

#[test]
fn plain_fork_childs_exit_leaves_the_parents_daemons_alone() {
    run_role("plain-fork-exit-spares-daemons");
}

#[test]
fn fork_child_exits_although_another_thread_held_stdout() {
    run_role("stdout-held-at-fork");
}

/// A forked child that panics exits 1 even if another thread of the parent was inside std's
/// panic hook (holding its backtrace lock) at the fork: `init()` installed a hook that writes
/// a forked child's panic straight to fd 2.
#[test]
fn fork_child_panicking_exits_although_another_thread_was_panicking() {
    let _w = watchdog(60);
    let mut cmd = role_command("role_entry", "panic-while-another-thread-panics-at-fork", &[]);
    // A pipe nobody reads until the role has ended (the role fills it).
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let code = run_with_timeout(cmd, 40).code();
    assert_ne!(code, Some(2), "setup failed");
    assert_eq!(code, Some(0), "the panicking forked child hung in the panic hook");
}

// ---------------------------------------------------------------------------------------------
// The spawn start method
// ---------------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct SpawnArg {
    key: u64,
    a: u64,
    b: i32,
    c: u32,
    text: [u8; 16],
}

impl SpawnArg {
    fn new(key: u64) -> SpawnArg {
        let mut text = [0u8; 16];
        text[..11].copy_from_slice(b"hello spawn");
        SpawnArg { key, a: 0xdead_beef_0bad_f00d, b: -12345, c: 777, text }
    }
}

/// Spawned: writes its argument and identity into the report named by `arg.key`.
fn report_arg(arg: SpawnArg) {
    let r = Report::open(arg.key);
    r.set(W_A, arg.a);
    r.set(W_B, arg.b as i64 as u64);
    r.set(W_C, u64::from(arg.c));
    let end = arg.text.iter().position(|&b| b == 0).unwrap_or(16);
    r.set_str(S_TEXT, std::str::from_utf8(&arg.text[..end]).unwrap_or("not utf-8"));
    r.set(W_D, MARK.load(Ordering::Relaxed));
    r.record_identity();
    r.set(W_DONE, 1);
}

/// Set by a parent before it forks a fn target: seen by fork children, not by spawned ones.
static MARK: AtomicU64 = AtomicU64::new(0);

fn check_report(r: &Report, p: &Process, arg: &SpawnArg) {
    assert_eq!(r.get(W_DONE), 1, "the target ran");
    assert_eq!(r.get(W_A), arg.a);
    assert_eq!(r.get(W_B) as i64, i64::from(arg.b));
    assert_eq!(r.get(W_C), u64::from(arg.c));
    assert_eq!(r.get_str(S_TEXT), "hello spawn");
    assert_eq!(r.pid(), p.pid().unwrap());
    assert_eq!(r.get_str(S_NAME), p.name());
    assert_eq!(r.ppid(), u64::from(std::process::id()));
    assert_eq!(r.get_str(S_PARENT_NAME), current_process().name);
}

#[test]
fn spawn_passes_the_argument_and_the_identity() {
    let _w = watchdog(60);
    use_spawn_entry();
    for daemon in [false, true] {
        let (r, key) = Report::named();
        let arg = SpawnArg::new(key);
        let p = start(Process::builder().daemon(daemon).target_fn(report_arg, arg));
        assert_eq!(p.start_method(), StartMethod::Spawn);
        assert_eq!(p.join_code(), 0);
        check_report(&r, &p, &arg);
        assert_eq!(r.get(W_DAEMON), u64::from(daemon));
        process_number(p.name());
    }
    let (r, key) = Report::named();
    let arg = SpawnArg::new(key);
    let p = start(Process::builder().name("spawned-one").target_fn(report_arg, arg));
    assert_eq!(p.join_code(), 0);
    check_report(&r, &p, &arg);
    assert_eq!(r.get_str(S_NAME), "spawned-one");
}

fn panics_with(n: u64) {
    panic!("spawned target panicked with {n}");
}

fn exits_with(code: i32) {
    std::process::exit(code);
}

#[test]
fn spawn_panic_gives_1_and_the_message_and_exit_codes_pass_through() {
    let _w = watchdog(60);
    use_spawn_entry();
    let p = start(Process::new_fn(panics_with, 4242));
    assert_eq!(p.join_code(), 1);
    let msg = p.panic_message().expect("a panic message");
    assert!(msg.contains("spawned target panicked with 4242"), "{msg:?}");
    let p = start(Process::new_fn(exits_with, 9));
    assert_eq!(p.join_code(), 9);
    assert_eq!(p.panic_message(), None);
    let p = start(Process::new_fn(sleep_secs, 60));
    assert!(p.is_alive());
    p.terminate().unwrap();
    assert_eq!(p.join_code(), -15);
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct NestArg {
    child_key: u64,
    grandchild_key: u64,
}

/// Spawned: records itself, then spawns a default-named grandchild that records itself.
fn spawn_a_grandchild(arg: NestArg) {
    // A fresh image: the spawn arguments are this process's to set too.
    use_spawn_entry();
    let r = Report::open(arg.child_key);
    r.record_identity();
    let mut g = Process::new_fn(report_arg, SpawnArg::new(arg.grandchild_key));
    let code = match g.start() {
        Ok(()) => g.join().map_or(-100, |c| c),
        Err(ProcessError::SpawnNotInitialised) => -101,
        Err(_) => -102,
    };
    r.set(W_A, code as i64 as u64);
    r.set(W_DONE, 1);
}

#[test]
fn spawned_child_spawns_a_grandchild_named_after_it() {
    let _w = watchdog(60);
    use_spawn_entry();
    let (child, child_key) = Report::named();
    let (grandchild, grandchild_key) = Report::named();
    let p = start(Process::new_fn(spawn_a_grandchild, NestArg { child_key, grandchild_key }));
    assert_eq!(p.join_code(), 0);
    assert_eq!(child.get(W_DONE), 1);
    assert_eq!(child.get(W_A) as i64, 0, "the grandchild's exit code");
    assert_eq!(child.pid(), p.pid().unwrap());
    assert_eq!(grandchild.get(W_DONE), 1);
    assert_eq!(grandchild.get_str(S_NAME), format!("{}:1", p.name()));
    assert_eq!(grandchild.ppid(), u64::from(p.pid().unwrap()));
    assert_eq!(grandchild.get_str(S_PARENT_NAME), p.name());
    assert_eq!(grandchild.get_str(S_TEXT), "hello spawn");
}

fn exits_with_its_argument(code: u32) {
    std::process::exit(code as i32);
}

#[test]
fn spawn_from_a_multithreaded_parent() {
    let _w = watchdog(120);
    use_spawn_entry();
    let stop = Arc::new(AtomicBool::new(false));
    let lock = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (stop, lock) = (stop.clone(), lock.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut g = lock.lock().unwrap();
                    *g += 1;
                    // Hold stdout's and malloc's locks too (writing nothing, to keep the output clean).
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(b"");
                    let _ = out.flush();
                    drop(out);
                    print!("");
                    let v = std::hint::black_box(vec![0u8; 256]);
                    drop(v);
                    drop(g);
                }
            })
        })
        .collect();
    for i in 0..20u32 {
        let p = start(Process::new_fn(exits_with_its_argument, 20 + i));
        assert_eq!(p.join_code(), 20 + i as i32, "child {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(*lock.lock().unwrap() > 0);
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct FdArg {
    fd: i32,
    _pad: u32,
    value: u64,
}

/// Spawned: stores `value` in the memfd segment at `fd`.
fn write_through_fd(arg: FdArg) {
    // SAFETY: fcntl on a number only queries it.
    if unsafe { libc::fcntl(arg.fd, libc::F_GETFD) } == -1 {
        panic!("fd {} is not open in the child", arg.fd);
    }
    // SAFETY: the parent passed this fd for us to own.
    let fd = unsafe { OwnedFd::from_raw_fd(arg.fd) };
    let seg = Segment::open_fd_timeout(fd, Kind::RAW, Duration::ZERO)
        .unwrap_or_else(|e| panic!("fd {} is not the segment: {e}", arg.fd));
    seg.get(Offset::<AtomicU64>::new(0)).unwrap().store(arg.value, Ordering::SeqCst);
}

#[test]
fn inherit_fd_passes_a_memfd_segment_to_a_spawned_child() {
    let _w = watchdog(60);
    use_spawn_entry();
    let seg = Segment::memfd(Kind::RAW, 64).unwrap();
    let word = seg.get(Offset::<AtomicU64>::new(0)).unwrap();
    let fd = seg.fd().unwrap();
    let arg = FdArg { fd: fd.as_raw_fd(), _pad: 0, value: 0x1234_5678_9abc };
    let p = start(Process::builder().inherit_fd(fd).target_fn(write_through_fd, arg));
    assert_eq!(p.join_code(), 0, "{:?}", p.panic_message());
    assert_eq!(word.load(Ordering::SeqCst), 0x1234_5678_9abc);

    // Without inherit_fd the (close-on-exec) fd does not reach the child.
    word.store(0, Ordering::SeqCst);
    let p = start(Process::new_fn(write_through_fd, arg));
    assert_eq!(p.join_code(), 1);
    assert!(p.panic_message().unwrap().contains(&format!("fd {}", arg.fd)));
    assert_eq!(word.load(Ordering::SeqCst), 0);
}

#[test]
fn fn_target_with_the_fork_start_method() {
    let _w = watchdog(60);
    use_spawn_entry();
    let mark = new_key() | 1;
    MARK.store(mark, Ordering::Relaxed);
    let (r, key) = Report::named();
    let arg = SpawnArg::new(key);
    let p = start(Process::builder().start_method(StartMethod::Fork).target_fn(report_arg, arg));
    assert_eq!(p.start_method(), StartMethod::Fork);
    assert_eq!(p.join_code(), 0);
    check_report(&r, &p, &arg);
    assert_eq!(r.get(W_D), mark, "a forked child sees the parent's memory");

    // The same target spawned runs in a fresh image.
    let (r, key) = Report::named();
    let arg = SpawnArg::new(key);
    let p = start(Process::new_fn(report_arg, arg));
    assert_eq!(p.join_code(), 0);
    check_report(&r, &p, &arg);
    assert_eq!(r.get(W_D), 0, "a spawned child starts from a fresh image");

    // A fn target through fork panics like any other child.
    let p = start(Process::builder().start_method(StartMethod::Fork).target_fn(panics_with, 5));
    assert_eq!(p.join_code(), 1);
    assert!(p.panic_message().unwrap().contains("panicked with 5"));
}

#[cfg(feature = "serde")]
mod serde_args {
    use super::*;
    use shmkit::process::Serde;

    /// Spawned: the text is "KEY|payload"; writes the payload's length, its char count and
    /// its first 120 bytes (cut at a char boundary).
    fn report_text(s: Serde<String>) {
        let (key, text) = s.split_once('|').expect("KEY|payload");
        let r = Report::open(u64::from_str_radix(key, 16).unwrap());
        r.set(W_A, text.len() as u64);
        r.set(W_B, text.chars().count() as u64);
        let mut end = text.len().min(120);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        r.set_str(S_TEXT, &text[..end]);
        r.set(W_DONE, 1);
    }

    /// A value whose serialization fails.
    #[derive(serde::Deserialize)]
    struct Unencodable;

    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refuses to encode"))
        }
    }

    fn never_runs(_: Serde<Unencodable>) {
        std::process::exit(99);
    }

    #[test]
    fn an_argument_that_does_not_encode_is_a_start_error() {
        use_spawn_entry();
        for method in [StartMethod::Spawn, StartMethod::Fork] {
            let mut p = Process::builder().start_method(method).target_fn(never_runs, Serde(Unencodable));
            match p.start() {
                // (postcard replaces the custom message by its own.)
                Err(ProcessError::Wire(shmkit::process::WireError::Encode(m))) => assert!(!m.is_empty()),
                other => panic!("{method:?}: expected an encode error, got {other:?}"),
            }
            assert_eq!(p.pid(), None, "nothing was started");
            assert!(matches!(p.join(), Err(ProcessError::NotStarted)));
        }
    }

    #[test]
    fn serde_string_arguments_through_spawn() {
        let _w = watchdog(60);
        use_spawn_entry();
        let big: String = (0..200_000u32).map(|i| char::from_u32(0x41 + i % 26).unwrap()).collect();
        for payload in [String::new(), "héllo, wörld ✓ 🦀".to_owned(), big] {
            let (r, key) = Report::named();
            let p = start(Process::new_fn(report_text, Serde(format!("{key:x}|{payload}"))));
            assert_eq!(p.join_code(), 0, "{:?}", p.panic_message());
            assert_eq!(r.get(W_DONE), 1);
            assert_eq!(r.get(W_A), payload.len() as u64);
            assert_eq!(r.get(W_B), payload.chars().count() as u64);
            let mut end = payload.len().min(120);
            while !payload.is_char_boundary(end) {
                end -= 1;
            }
            assert_eq!(r.get_str(S_TEXT), &payload[..end]);
        }
    }
}
