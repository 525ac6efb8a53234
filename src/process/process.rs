//! [`Process`]: a child process running a closure (fork) or a registered function (spawn).

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use super::spawn::{self, Payload};
use super::wire::{Call, Wire, WireError};
use super::ProcessInfo;
use crate::primitive::atomic::{AtomicBool, Ordering};

/// How a [`Process`] starts.
///
/// | | fork | spawn |
/// |---|---|---|
/// | start-to-join | ~0.1–0.5 ms | a few ms (a new program image) |
/// | target | any `FnOnce` closure | a `fn(A)` plus an argument `A: Wire` |
/// | parent with threads | the child inherits only the forking thread: a lock another thread held stays locked (e.g. stdout while it printed: a `println!` in the child would hang). shmkit's own exit path avoids such locks, and after [`init`](super::init) a panic in a forked child is written straight to fd 2 | safe |
/// | needs | nothing | [`init`](super::init) first in `main` |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartMethod {
    /// `fork(2)`: the child is a copy of the parent and runs the target at once.
    #[default]
    Fork,
    /// Re-execute the current binary (`/proc/self/exe`); [`init`](super::init) at the top
    /// of its `main` runs the target instead of the program.
    Spawn,
}

/// Errors of [`Process`] operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// `start` was called twice.
    #[error("process already started")]
    AlreadyStarted,
    /// The operation needs a started process.
    #[error("process not started")]
    NotStarted,
    /// A closure can only be started with [`StartMethod::Fork`].
    #[error("a closure target needs the fork start method (spawn takes a fn and an argument)")]
    ClosureNeedsFork,
    /// The argument of a spawned function could not be encoded.
    #[error("argument: {0}")]
    Wire(#[from] WireError),
    /// This process was started by the spawn method but did not call
    /// [`init`](super::init) before starting processes of its own (it would run `main`
    /// again in every generation).
    #[error("spawned process did not call shmkit::process::init() at the top of main")]
    SpawnNotInitialised,
    /// The spawn start method re-executes this program, which must call
    /// [`init`](super::init) at the top of `main`; this process has not called it (nor
    /// [`set_spawn_args`], for a binary whose entry point does).
    #[error("call shmkit::process::init() at the top of main before using the spawn start method")]
    InitNotCalled,
    /// The child was reaped by someone else (a `waitpid(-1)` elsewhere, or SIGCHLD ignored).
    #[error("child was reaped outside shmkit")]
    ReapedElsewhere,
    /// fork, exec, pipe or memfd failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

type Closure = Box<dyn FnOnce() + Send + 'static>;

enum Target {
    Closure(Closure),
    Call { call: Call, arg: Result<Vec<u8>, WireError> },
}

/// A child process, as Python's `multiprocessing.Process`: made with a target, started
/// once, then joined, signalled or polled.
///
/// - Exit code: the code passed to `exit`, 0 when the target returns, 1 when it panics
///   (the panic message is kept: [`Process::panic_message`]), `-N` when signal `N` ended
///   it (Python's convention).
/// - A daemon child gets `PR_SET_PDEATHSIG(SIGKILL)`: it dies with its parent, even if the
///   parent is SIGKILLed (the signal fires when the *thread* that started it ends: start
///   daemons from a thread that outlives them). At the parent's normal exit, daemon
///   children are sent SIGTERM and non-daemon children are joined, as Python does.
/// - Dropping a `Process` neither kills nor waits for it; [`active_children`](super::active_children)
///   and the exit handler still see it.
///
/// # Examples
/// ```
/// use shmkit::process::Process;
/// let v = shmkit::value::Value::new(0u64)?;
/// let w = v.clone();
/// let mut p = Process::new(move || { w.set(42); });
/// p.start()?;
/// assert_eq!(p.join()?, 0);
/// assert_eq!(v.get(), 42);
///
/// let mut bad = Process::new(|| panic!("boom"));
/// bad.start()?;
/// assert_eq!(bad.join()?, 1);
/// assert!(bad.panic_message().unwrap().contains("boom"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Process {
    name: Option<String>,
    daemon: bool,
    method: StartMethod,
    fds: Vec<RawFd>,
    target: Option<Target>,
    child: Option<Arc<ChildState>>,
    /// Flush stdout before starting (Python does); off for pool workers, which a manager
    /// thread starts while a caller may hold stdout's lock.
    flush: bool,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name())
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("method", &self.method)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

/// Options for a [`Process`]: name, daemon flag, start method, inherited fds.
///
/// # Examples
/// ```
/// use shmkit::process::{Process, StartMethod};
/// let mut p = Process::builder().name("worker").daemon(true).target(|| {});
/// assert_eq!(p.name(), "worker");
/// p.start()?;
/// p.join()?;
/// # Ok::<(), shmkit::process::ProcessError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProcessBuilder {
    name: Option<String>,
    daemon: bool,
    method: Option<StartMethod>,
    fds: Vec<RawFd>,
}

impl ProcessBuilder {
    /// The process name (default `Process-N`, or `PARENT:N` in a child).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Whether the child dies with its parent (default false).
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// The start method (default: fork for closures, spawn for functions).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// Keeps `fd` open, under the same number, in a spawned child (fork children inherit
    /// every fd anyway). The fd must stay open until [`Process::start`] returns.
    pub fn inherit_fd(mut self, fd: BorrowedFd<'_>) -> Self {
        self.fds.push(fd.as_raw_fd());
        self
    }

    /// A process that will run `f` (fork start method).
    pub fn target(self, f: impl FnOnce() + Send + 'static) -> Process {
        self.build(StartMethod::Fork, Target::Closure(Box::new(f)))
    }

    /// A process that will run `f(arg)` (spawn start method unless set otherwise). `f` must
    /// be a function of this binary (not a capturing closure); `arg` is encoded now.
    pub fn target_fn<A: Wire>(self, f: fn(A), arg: A) -> Process {
        let mut bytes = Vec::new();
        let arg = arg.encode(&mut bytes).map(|()| bytes);
        self.build(StartMethod::Spawn, Target::Call { call: Call::unary::<A, ()>(f), arg })
    }

    fn build(self, default: StartMethod, target: Target) -> Process {
        Process {
            name: self.name,
            daemon: self.daemon,
            method: self.method.unwrap_or(default),
            fds: self.fds,
            target: Some(target),
            child: None,
            flush: true,
        }
    }
}

impl Process {
    /// A process that will run the closure `f` (fork start method). Call [`start`](Self::start).
    pub fn new(f: impl FnOnce() + Send + 'static) -> Process {
        ProcessBuilder::default().target(f)
    }

    /// A process that will run `f(arg)`, by default with the spawn start method (the child
    /// must call [`init`](super::init) at the top of `main`).
    ///
    /// # Examples
    /// ```no_run
    /// fn work(n: u64) { println!("{n}") }
    /// fn main() -> Result<(), shmkit::process::ProcessError> {
    ///     shmkit::process::init(); // a spawned child runs `work` here and exits
    ///     let mut p = shmkit::process::Process::new_fn(work, 7);
    ///     p.start()?;
    ///     p.join()?;
    ///     Ok(())
    /// }
    /// ```
    pub fn new_fn<A: Wire>(f: fn(A), arg: A) -> Process {
        ProcessBuilder::default().target_fn(f, arg)
    }

    /// Options: name, daemon, start method.
    pub fn builder() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// The process name (assigned at start if none was given).
    pub fn name(&self) -> &str {
        match (&self.child, &self.name) {
            (Some(c), _) => &c.name,
            (None, Some(n)) => n,
            (None, None) => "",
        }
    }

    /// Whether the process is a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The start method.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Starts the child.
    ///
    /// # Errors
    /// [`ProcessError::AlreadyStarted`]; [`ProcessError::ClosureNeedsFork`];
    /// [`ProcessError::Wire`] if the argument did not encode; [`ProcessError::Io`] if fork or
    /// exec failed; [`ProcessError::SpawnNotInitialised`].
    pub fn start(&mut self) -> Result<(), ProcessError> {
        let target = self.target.take().ok_or(ProcessError::AlreadyStarted)?;
        let r = match (target, self.method) {
            (Target::Closure(f), StartMethod::Fork) => self.start_fork(ChildRun::Closure(f)),
            (t @ Target::Closure(_), StartMethod::Spawn) => {
                self.target = Some(t);
                return Err(ProcessError::ClosureNeedsFork);
            }
            (Target::Call { call, arg }, method) => match arg {
                Err(e) => Err(ProcessError::Wire(e)),
                Ok(arg) if method == StartMethod::Fork => self.start_fork(ChildRun::Call(call, arg)),
                Ok(_) if !call.is_local() => Err(ProcessError::Wire(super::wire::not_local())),
                Ok(arg) => self.start_spawn(call, arg),
            },
        };
        self.child = Some(r?);
        Ok(())
    }

    fn start_fork(&mut self, run: ChildRun) -> Result<Arc<ChildState>, ProcessError> {
        let (rd, wr) = report_pipe()?;
        install_fork_panic_hook();
        // Python flushes too: bytes buffered now would be written by both processes.
        if self.flush {
            let _ = io::stdout().flush();
        }
        let mut reg = registry();
        let name = self.name.clone().unwrap_or_else(|| reg.next_name());
        let parent = reg.me.clone();
        // SAFETY: fork has no memory-safety preconditions; the child continues on this
        // thread only and ends in `_exit` (see `child_main`). The registry lock is held
        // across the fork so the child's copy is consistent and owned by this thread.
        let pid = unsafe { libc::fork() };
        if pid == -1 {
            return Err(io::Error::last_os_error().into());
        }
        if pid == 0 {
            IN_FORKED_CHILD.store(true, Ordering::Relaxed);
            drop(rd);
            reg.become_child(
                ProcessInfo { name, pid: std::process::id(), daemon: self.daemon },
                parent.clone(),
            );
            drop(reg);
            if self.daemon {
                set_parent_death_signal(parent.pid);
            }
            let report = wr.as_raw_fd();
            std::mem::forget(wr);
            match run {
                ChildRun::Closure(f) => child_main(report, move || {
                    f();
                    Ok(())
                }),
                ChildRun::Call(call, arg) => child_main(report, move || run_call(call, &arg)),
            }
        }
        drop(wr);
        // The parent's copy of the target goes now; what its drop asks to defer (a manager
        // proxy's release: the child may not have taken its own reference yet) waits until
        // the child is reaped.
        let after_exit = collect_deferred(|| drop(run));
        let state = Arc::new(ChildState::new(pid, name, self.daemon, rd));
        state.status().after_exit = after_exit;
        reg.push_child(state.clone());
        ensure_exit_handler();
        Ok(state)
    }

    fn start_spawn(&mut self, call: Call, arg: Vec<u8>) -> Result<Arc<ChildState>, ProcessError> {
        spawn::check_initialised()?;
        if !spawn::init_called() && spawn_args().is_empty() {
            return Err(ProcessError::InitNotCalled);
        }
        let (name, parent) = {
            let mut reg = registry();
            (self.name.clone().unwrap_or_else(|| reg.next_name()), reg.me.clone())
        };
        let payload = Payload {
            parent_pid: parent.pid,
            parent_name: parent.name.clone(),
            name: name.clone(),
            daemon: self.daemon,
            call,
            arg,
        };
        let memfd = spawn::payload_fd(&payload)?;
        let (rd, wr) = report_pipe()?;
        let mut cmd = std::process::Command::new("/proc/self/exe");
        if let Some(arg0) = std::env::args_os().next() {
            cmd.arg0(arg0);
        }
        cmd.args(spawn_args());
        cmd.env(spawn::ENV, spawn::env_value(parent.pid, memfd.as_raw_fd(), wr.as_raw_fd()));
        let mut keep = self.fds.clone();
        keep.push(memfd.as_raw_fd());
        keep.push(wr.as_raw_fd());
        let daemon = self.daemon;
        let ppid = parent.pid;
        if self.flush {
            let _ = io::stdout().flush();
        }
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (fcntl, prctl, getppid) on fds and values it captured.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &keep {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                if daemon {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    if libc::getppid() as u32 != ppid {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                }
                Ok(())
            })
        };
        let child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        // std's Child neither waits nor kills on drop; this module reaps the pid.
        drop(child);
        drop((memfd, wr));
        let state = Arc::new(ChildState::new(pid, name, daemon, rd));
        registry().push_child(state.clone());
        ensure_exit_handler();
        Ok(state)
    }

    /// The exit code once ended, [`EXIT_UNKNOWN`] if someone else reaped it; `None` while
    /// it runs.
    pub(crate) fn end_code(&self) -> Option<i32> {
        match self.child.as_ref()?.try_reap() {
            Ok(code) => code,
            Err(_) => Some(EXIT_UNKNOWN),
        }
    }

    /// Starts without flushing stdout first (pool workers).
    pub(crate) fn no_flush(mut self) -> Self {
        self.flush = false;
        self
    }

    fn state(&self) -> Result<&Arc<ChildState>, ProcessError> {
        self.child.as_ref().ok_or(ProcessError::NotStarted)
    }

    /// The child's pid, once started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid as u32)
    }

    /// Waits for the child to end and returns its exit code (see [`Process`]).
    ///
    /// # Errors
    /// [`ProcessError::NotStarted`], [`ProcessError::ReapedElsewhere`], [`ProcessError::Io`].
    pub fn join(&self) -> Result<i32, ProcessError> {
        loop {
            if let Some(code) = self.state()?.wait(None)? {
                return Ok(code);
            }
        }
    }

    /// Waits up to `timeout`; `Ok(None)` if the child still runs.
    ///
    /// # Errors
    /// As [`Process::join`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<Option<i32>, ProcessError> {
        self.state()?.wait(crate::futex::deadline_after(timeout))
    }

    /// Whether the child was started and has not ended (reaps it if it has). A child reaped
    /// outside shmkit counts as ended.
    pub fn is_alive(&self) -> bool {
        self.child.as_ref().is_some_and(|c| matches!(c.try_reap(), Ok(None)))
    }

    /// The exit code once the child has ended (reaps it if it has): its `exit` code, 1 after
    /// a panic, `-N` after signal `N`. `None` while it runs, before it starts, or if someone
    /// else reaped it (SIGCHLD ignored: then [`Process::join`] says
    /// [`ProcessError::ReapedElsewhere`]).
    pub fn exitcode(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| c.try_reap().ok().flatten())
    }

    /// The message of the panic that ended the child, once it has been reaped.
    pub fn panic_message(&self) -> Option<String> {
        let c = self.child.as_ref()?;
        let _ = c.try_reap();
        c.status().panic.clone()
    }

    /// Sends SIGTERM (nothing once the child has been reaped).
    ///
    /// # Errors
    /// [`ProcessError::NotStarted`] or the `kill(2)` error.
    pub fn terminate(&self) -> Result<(), ProcessError> {
        self.state()?.signal(libc::SIGTERM)
    }

    /// Sends SIGKILL (nothing once the child has been reaped).
    ///
    /// # Errors
    /// As [`Process::terminate`].
    pub fn kill(&self) -> Result<(), ProcessError> {
        self.state()?.signal(libc::SIGKILL)
    }

    /// A pidfd that becomes readable (`poll`) when the child ends, as Python's `sentinel`.
    /// `None` before start or if the kernel has no `pidfd_open` (Linux < 5.3).
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.child.as_ref()?.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// What [`current_process`](super::current_process) reports in the child.
    pub fn info(&self) -> Option<ProcessInfo> {
        self.child.as_ref().map(|c| c.info())
    }
}

enum ChildRun {
    Closure(Closure),
    Call(Call, Vec<u8>),
}

pub(crate) fn run_call(call: Call, arg: &[u8]) -> Result<(), String> {
    let mut out = Vec::new();
    // SAFETY: `call` was made by `Call::unary` in the parent, a process of this executable.
    unsafe { call.run(arg, &mut out) }.map_err(|e| format!("bad argument for the process target: {e}"))
}

/// The rest of a child's life: runs `run`, reports a panic or an error through `report`,
/// joins its own children, flushes stdout and leaves with `_exit`.
pub(crate) fn child_main(report: RawFd, run: impl FnOnce() -> Result<(), String>) -> ! {
    let code = match std::panic::catch_unwind(AssertUnwindSafe(run)) {
        Ok(Ok(())) => 0,
        Ok(Err(msg)) => {
            // Straight to fd 2: stderr's lock may be held by a thread the fork left behind.
            let line = format!("{msg}\n");
            // SAFETY: writes initialized bytes to fd 2; errors are ignored.
            unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            write_report(report, &msg);
            1
        }
        Err(payload) => {
            write_report(report, &panic_text(payload.as_ref()));
            1
        }
    };
    exit_child(code)
}

/// Leaves a child: joins its non-daemon children, flushes stdout, `_exit(code)`.
pub(crate) fn exit_child(code: i32) -> ! {
    at_exit();
    // Only where no other thread can hold stdout's lock: a forked child's copy of the lock
    // may be held by a thread of the parent that does not exist here (then it would hang).
    // Rust's stdout is line-buffered, so a forked child loses at most a last partial line.
    // Relaxed: set by this thread at start-up.
    if FRESH_PROCESS.load(Ordering::Relaxed) {
        let _ = io::stdout().flush();
    }
    // SAFETY: ends the process without running the parent's destructors or atexit handlers
    // a second time.
    unsafe { libc::_exit(code) }
}

/// Set in a child made by `fork` (its copies of std's locks may be held by threads that
/// did not follow it).
static IN_FORKED_CHILD: AtomicBool = AtomicBool::new(false);

/// Wraps the panic hook, once ([`init`](super::init) does it first thing; otherwise the
/// first fork): in a forked child a panic is written straight to fd 2. std's default hook
/// takes a process-wide lock to print a backtrace; if another thread of the parent held it at
/// the fork, the child's copy stays locked and the panicking child would hang instead of
/// exiting 1. (Installing the hook waits for panics in progress in other threads, so do it
/// early: call `init()` at the top of `main`.)
pub(crate) fn install_fork_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Relaxed: set by this thread before the child runs anything else.
            if IN_FORKED_CHILD.load(Ordering::Relaxed) {
                let line = format!("process {} {info}\n", std::process::id());
                // SAFETY: writes initialized bytes to fd 2; errors are ignored.
                unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
            } else {
                previous(info);
            }
        }));
    });
}

/// Set by a spawned child (a fresh image: stdout's lock is its own).
pub(crate) static FRESH_PROCESS: AtomicBool = AtomicBool::new(false);

/// The exit code reported for a child reaped outside shmkit (e.g. with SIGCHLD ignored).
pub const EXIT_UNKNOWN: i32 = i32::MIN;

/// A panic payload as text.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// Largest panic message kept (a pipe write of at most `PIPE_BUF` never blocks on an empty
/// pipe and is atomic).
const REPORT_MAX: usize = 4000;

fn write_report(fd: RawFd, msg: &str) {
    let mut end = msg.len().min(REPORT_MAX);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    // SAFETY: writes initialized bytes to our own pipe end; errors are ignored (the
    // parent may be gone).
    unsafe { libc::write(fd, msg.as_ptr().cast(), end) };
}

fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Kills this process when its parent (the thread that forked it) ends; exits at once if
/// the parent is already gone.
pub(crate) fn set_parent_death_signal(parent: u32) {
    // SAFETY: prctl/getppid/_exit are plain syscalls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() as u32 != parent {
            libc::_exit(1);
        }
    }
}

type Deferred = Box<dyn FnOnce() + Send>;

thread_local! {
    /// Set while the parent drops a just-forked child's target: see [`defer_until_child_exits`].
    static DEFERRING: std::cell::RefCell<Option<Vec<Deferred>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `drop_target`, collecting what [`defer_until_child_exits`] is handed meanwhile.
fn collect_deferred(drop_target: impl FnOnce()) -> Vec<Deferred> {
    DEFERRING.with(|d| *d.borrow_mut() = Some(Vec::new()));
    drop_target();
    DEFERRING.with(|d| d.borrow_mut().take()).unwrap_or_default()
}

/// Called from a `Drop` that may run as the parent drops its copy of a just-forked child's
/// target: then `f` is kept and run once that child has ended (when it is reaped), and this
/// returns `Ok`; otherwise `Err(f)`, for the caller to run now. A manager proxy moved into a
/// child's closure releases its reference this way, after the child has taken its own.
pub(crate) fn defer_until_child_exits(f: Deferred) -> Result<(), Deferred> {
    DEFERRING.with(|d| match d.borrow_mut().as_mut() {
        Some(list) => {
            list.push(f);
            Ok(())
        }
        None => Err(f),
    })
}

/// A started child, shared by its [`Process`] handle and the registry.
pub(crate) struct ChildState {
    pid: libc::pid_t,
    name: String,
    daemon: bool,
    pidfd: Option<OwnedFd>,
    status: Mutex<ChildStatus>,
}

struct ChildStatus {
    exit: Option<i32>,
    /// Reaped by someone else (SIGCHLD ignored, a `waitpid(-1)`): ended, code unknown, and
    /// its pid may belong to another process now.
    lost: bool,
    report: Option<OwnedFd>,
    panic: Option<String>,
    /// Run once the child has ended (see [`defer_until_child_exits`]).
    after_exit: Vec<Deferred>,
}

impl ChildState {
    fn new(pid: libc::pid_t, name: String, daemon: bool, report: OwnedFd) -> ChildState {
        ChildState {
            pid,
            name,
            daemon,
            pidfd: pidfd_open(pid),
            status: Mutex::new(ChildStatus {
                exit: None,
                lost: false,
                report: Some(report),
                panic: None,
                after_exit: Vec::new(),
            }),
        }
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo { name: self.name.clone(), pid: self.pid as u32, daemon: self.daemon }
    }

    fn status(&self) -> MutexGuard<'_, ChildStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps the child if it has ended: `Ok(Some(code))` once ended.
    fn try_reap(&self) -> Result<Option<i32>, ProcessError> {
        let mut st = self.status();
        if let Some(code) = st.exit {
            return Ok(Some(code));
        }
        if st.lost {
            return Err(ProcessError::ReapedElsewhere);
        }
        let mut raw = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            -1 => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ECHILD) => {
                        st.lost = true;
                        let after = std::mem::take(&mut st.after_exit);
                        drop(st);
                        after.into_iter().for_each(|f| f());
                        Err(ProcessError::ReapedElsewhere)
                    }
                    Some(libc::EINTR) => Ok(None),
                    _ => Err(e.into()),
                }
            }
            _ => {
                let code = if libc::WIFSIGNALED(raw) { -libc::WTERMSIG(raw) } else { libc::WEXITSTATUS(raw) };
                st.exit = Some(code);
                if let Some(fd) = st.report.take() {
                    let msg = read_report(fd.as_fd());
                    if !msg.is_empty() {
                        st.panic = Some(msg);
                    }
                }
                let after = std::mem::take(&mut st.after_exit);
                drop(st);
                after.into_iter().for_each(|f| f());
                Ok(Some(code))
            }
        }
    }

    /// Waits until the child ends or `deadline` passes (`None`: forever).
    fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>, ProcessError> {
        let mut nap = Duration::from_micros(50);
        loop {
            if let Some(code) = self.try_reap()? {
                return Ok(Some(code));
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return Ok(None),
                Some(d) => d - now,
                None => Duration::from_secs(1),
            };
            match &self.pidfd {
                // The pidfd is readable once the child has ended: no polling loop.
                Some(fd) => poll_readable(fd.as_fd(), left.min(Duration::from_secs(1))),
                None => {
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(10));
                }
            }
        }
    }

    fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        // Holding the status lock: the pid cannot be reaped (and recycled) meanwhile.
        let st = self.status();
        if st.exit.is_some() || st.lost {
            return Ok(());
        }
        // SAFETY: the pid is our unreaped child.
        if unsafe { libc::kill(self.pid, sig) } == -1 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }
}

fn read_report(fd: BorrowedFd<'_>) -> String {
    let mut buf = vec![0u8; REPORT_MAX + 1];
    let mut len = 0;
    while len < buf.len() {
        // SAFETY: reads into the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf[len..].as_mut_ptr().cast(), buf.len() - len) };
        if n <= 0 {
            break;
        }
        len += n as usize;
    }
    buf.truncate(len);
    String::from_utf8_lossy(&buf).into_owned()
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(pid, 0) returns a new fd or -1; the pid is our unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd owned by nobody else (pidfds are close-on-exec).
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn poll_readable(fd: BorrowedFd<'_>, timeout: Duration) {
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd; EINTR just returns early.
    unsafe { libc::poll(&mut p, 1, ms) };
}

/// This process's identity and the children it started (process-local).
pub(crate) struct Registry {
    pub(crate) me: ProcessInfo,
    pub(crate) parent: Option<ProcessInfo>,
    children: Vec<Arc<ChildState>>,
    counter: u32,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

pub(crate) struct RegistryGuard(MutexGuard<'static, Option<Registry>>);

impl std::ops::Deref for RegistryGuard {
    type Target = Registry;
    fn deref(&self) -> &Registry {
        self.0.as_ref().expect("initialised by registry()")
    }
}

impl std::ops::DerefMut for RegistryGuard {
    fn deref_mut(&mut self) -> &mut Registry {
        self.0.as_mut().expect("initialised by registry()")
    }
}

pub(crate) fn registry() -> RegistryGuard {
    let mut g = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    adopt(&mut g);
    RegistryGuard(g)
}

/// Makes the registry this process's: creates it, or, in a child forked by something other
/// than [`Process`] (a plain `fork`), takes over the parent's identity as the parent and
/// forgets the parent's children (they are not ours to join or signal).
fn adopt(g: &mut Option<Registry>) {
    let pid = std::process::id();
    match g {
        None => {
            *g = Some(Registry {
                me: ProcessInfo { name: "MainProcess".into(), pid, daemon: false },
                parent: None,
                children: Vec::new(),
                counter: 0,
            })
        }
        Some(r) if r.me.pid != pid => {
            let parent = r.me.clone();
            let me = ProcessInfo { name: format!("{}:forked", parent.name), pid, daemon: false };
            r.become_child(me, parent);
        }
        Some(_) => {}
    }
}

impl Registry {
    fn next_name(&mut self) -> String {
        self.counter += 1;
        if self.parent.is_none() {
            format!("Process-{}", self.counter)
        } else {
            format!("{}:{}", self.me.name, self.counter)
        }
    }

    /// In a new child: its own identity, no children.
    pub(crate) fn become_child(&mut self, me: ProcessInfo, parent: ProcessInfo) {
        self.me = me;
        self.parent = Some(parent);
        // The parent's children are not ours: forget them without dropping their fds'
        // owners' state (closing our copies of their fds is harmless).
        self.children.clear();
        self.counter = 0;
    }

    /// Records a new child, forgetting those already reaped (their handles keep their state).
    fn push_child(&mut self, c: Arc<ChildState>) {
        // Reaps those that ended (Python's start() does too): no zombie, no fds left behind
        // for children nobody joins.
        self.children.retain(|c| matches!(c.try_reap(), Ok(None)));
        self.children.push(c);
    }

    /// Reaps ended children and returns the running ones.
    pub(crate) fn live_children(&mut self) -> Vec<ProcessInfo> {
        self.children.retain(|c| matches!(c.try_reap(), Ok(None)));
        self.children.iter().map(|c| c.info()).collect()
    }
}

/// Arguments given to this binary when the spawn start method re-executes it (default
/// none; a spawned child inherits its parent's). A test binary needs the name of a test that
/// calls [`init`](super::init), e.g. `["spawn_entry", "--exact", "--nocapture"]`.
pub fn set_spawn_args<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    *SPAWN_ARGS.lock().unwrap_or_else(|e| e.into_inner()) = args.into_iter().map(Into::into).collect();
}

static SPAWN_ARGS: Mutex<Vec<OsString>> = Mutex::new(Vec::new());

/// In a spawned child: the arguments it was started with become its own spawn arguments
/// (unless it set some already).
pub(crate) fn inherit_spawn_args(args: Vec<OsString>) {
    let mut a = SPAWN_ARGS.lock().unwrap_or_else(|e| e.into_inner());
    if a.is_empty() {
        *a = args;
    }
}

fn spawn_args() -> Vec<OsString> {
    SPAWN_ARGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn ensure_exit_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain extern "C" function.
        unsafe { libc::atexit(exit_handler) };
    });
}

extern "C" fn exit_handler() {
    at_exit();
}

/// Python's exit behaviour: SIGTERM to daemon children, then join every child.
fn at_exit() {
    let children: Vec<Arc<ChildState>> = {
        let Ok(mut g) = REGISTRY.try_lock() else { return };
        adopt(&mut g);
        match g.as_ref() {
            Some(r) => r.children.clone(),
            None => return,
        }
    };
    for c in children.iter().filter(|c| c.daemon) {
        let _ = c.signal(libc::SIGTERM);
    }
    for c in &children {
        while let Ok(None) = c.wait(None) {}
    }
}
