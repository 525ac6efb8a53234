//! Processes and process pools: Python's `multiprocessing.Process` and `Pool`.
//!
//! - [`Process`]: a child running a closure ([`StartMethod::Fork`]) or a function with an
//!   argument ([`StartMethod::Spawn`]: the binary re-executes itself, and [`init`] at the top
//!   of `main` runs the function). Exit codes as Python's (`-N` for signal `N`), the panic
//!   message of a child that panicked, `join_timeout`, `terminate`, `kill`, a pidfd
//!   sentinel, daemon children that die with their parent.
//! - [`Pool`]: worker processes running functions over shmkit's own shared-memory queues:
//!   `map`, `imap`, `imap_unordered`, `starmap`, `apply`, `apply_async`, with chunks, an
//!   initializer and `maxtasksperchild`. Unlike Python's, a task whose worker panics gives
//!   [`PoolError::TaskPanicked`], a task whose worker is killed gives
//!   [`PoolError::WorkerDied`] and the worker is replaced; waits with a timeout always return.
//! - [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`].
//!
//! Arguments and results cross the process boundary as [`Wire`] values: any
//! [`bytemuck::Pod`] type, or with the `serde` feature any serde type wrapped in [`Serde`].
//! Functions travel as offsets from a fixed function of this crate: valid in a forked child,
//! and in a spawned one for functions of the executable itself (a function of a `dlopen`ed
//! library is refused with the spawn start method). Task frames are trusted: a pool's rings
//! live in an unnamed memfd that only the pool's own processes map (a spawned worker sets it
//! close-on-exec); a process that could write them could run any function of the program.

pub(crate) mod pool;
#[allow(clippy::module_inception)]
mod process;
pub(crate) mod spawn;
mod wire;

pub use pool::{AsyncResult, IMap, IMapUnordered, Pool, PoolBuilder, PoolError};
#[cfg(feature = "manager")]
pub(crate) use process::defer_until_child_exits;
pub use process::{set_spawn_args, Process, ProcessBuilder, ProcessError, StartMethod, EXIT_UNKNOWN};
pub use spawn::init;
#[doc(hidden)]
pub use spawn::Payload as __SpawnPayload;
#[cfg(feature = "serde")]
pub use wire::Serde;
pub use wire::{Wire, WireError};

/// Who a process is: what [`current_process`] and [`parent_process`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `MainProcess`, `Process-N`, or the name given at creation.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Whether it is a daemon (dies with its parent). Unknown, so false, for a parent.
    pub daemon: bool,
}

/// This process: `MainProcess` unless it was started by [`Process`].
///
/// # Examples
/// ```
/// let me = shmkit::process::current_process();
/// assert_eq!(me.pid, std::process::id());
/// ```
pub fn current_process() -> ProcessInfo {
    process::registry().me.clone()
}

/// The process that started this one with [`Process`]; `None` in the main process.
pub fn parent_process() -> Option<ProcessInfo> {
    process::registry().parent.clone()
}

/// The children this process started that are still running; ended ones are reaped (their
/// [`Process`] handles still report their exit codes).
///
/// # Examples
/// ```
/// let go = shmkit::sync::Event::new()?;
/// let wait = go.clone();
/// let mut p = shmkit::process::Process::new(move || wait.wait());
/// p.start()?;
/// assert!(shmkit::process::active_children().iter().any(|c| Some(c.pid) == p.pid()));
/// go.set();
/// p.join()?;
/// assert!(shmkit::process::active_children().iter().all(|c| Some(c.pid) != p.pid()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    process::registry().live_children()
}

/// CPUs this process may run on (affinity and cgroup quota included), at least 1. Python's
/// `os.process_cpu_count()`; the default size of a [`Pool`].
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
