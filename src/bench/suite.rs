//! The runner behind `shmkit bench`: every headline comparison in one run, each figure the
//! median of several runs, next to its peers and its ratio to a reference peer.
//!
//! [`plan`] builds the groups (all of [`GROUPS`], or the ones asked for), [`Plan::run`]
//! measures them in order, reporting each step and each finished group to a callback, and
//! returns a [`GroupResult`] per group. A group's rows say what each implementation
//! measured ([`Outcome`]); [`GroupResult::ratio`] compares a row with the group's reference
//! and [`GroupResult::json_lines`] writes the machine-readable form.
//!
//! Every workload forks: call [`Plan::run`] from a process with a single thread.
//!
//! ```no_run
//! use shmkit::bench::suite::{plan, Event, Options};
//!
//! let plan = plan(&Options { quick: true, ..Options::default() })?;
//! let results = plan.run(|e| {
//!     if let Event::GroupDone(g) = e {
//!         print!("{}", g.json_lines());
//!     }
//!     std::ops::ControlFlow::Continue(())
//! });
//! assert!(results.iter().all(|g| g.failures().is_empty()));
//! # Ok::<(), String>(())
//! ```

use std::fmt::Write as _;
use std::io;
use std::ops::ControlFlow;
use std::process::Command;
use std::time::{Duration, Instant};

use super::python::{python_run, python_version};
use super::{
    bulk, crossbeam_threads_tput, idle_cpu, ipc_channel_tput, lock_contended_2proc, lock_uncontended,
    manager_dict, oversubscribed, pipe_bulk, pipe_rtt, pipe_tput, posix_mq_tput, rtt, rtt_queue, socket_echo,
    tput, value_incr_2proc, BulkPeer, EchoPeer, IdlePeer, LockPeer, ManagerPeer, OversubPeer, PipeBulkPeer,
    PipeRttPeer, PipeTputPeer, RttPeer, TputPeer, ValuePeer, BULK_BYTES, INSERT_FRAME,
};
use crate::process::{Pool, Process, StartMethod};

/// The groups, in the order they run.
pub const GROUPS: [&str; 12] = [
    "tput_8B",
    "rtt_8B",
    "lock_uncontended",
    "lock_contended_2proc",
    "bulk_64KiB",
    "oversubscribed",
    "value_incr_2proc",
    "idle_cpu",
    "process_start_join",
    "pool_map_trivial",
    "pool_apply_rtt",
    "manager_dict_op",
];

/// Which way a group's unit is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// A rate: more is better.
    Higher,
    /// A time or a cost: less is better.
    Lower,
}

/// What one implementation's runs came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Every run finished: the median, the lowest and the highest figure.
    Measured {
        /// The median over the runs (the figure reported).
        median: f64,
        /// The lowest figure of a run.
        min: f64,
        /// The highest figure of a run.
        max: f64,
        /// How many runs.
        runs: usize,
    },
    /// Not available on this machine (no POSIX message queues, ...): why.
    Skipped(String),
    /// A run failed: the error.
    Failed(String),
}

/// One implementation of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The implementation, e.g. `shmkit_spsc` or `pipe`.
    pub name: &'static str,
    /// What its runs came to.
    pub outcome: Outcome,
}

impl Row {
    /// Whether this is one of shmkit's own implementations.
    pub fn is_shmkit(&self) -> bool {
        self.name.starts_with("shmkit")
    }

    /// The median, if every run finished.
    pub fn median(&self) -> Option<f64> {
        match self.outcome {
            Outcome::Measured { median, .. } => Some(median),
            _ => None,
        }
    }
}

/// A group's description, without its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its id, one of [`GROUPS`].
    pub group: &'static str,
    /// What one operation is.
    pub what: &'static str,
    /// The unit of every figure, e.g. `M msg/s` or `ns/round trip`.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// The reference peers, by preference: ratios are to the first one measured.
    pub reference: &'static [&'static str],
    /// shmkit's row for the headline: the one doing the same job as the reference and Python
    /// (e.g. `shmkit_mpmc`, a `Queue`, against Python's `Queue`, not the batched SPSC ring).
    pub headline: &'static str,
    /// Python's row doing the same job, if the group has one.
    pub python: Option<&'static str>,
}

/// A measured group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupResult {
    /// What the group measures.
    pub info: GroupInfo,
    /// One row per implementation, shmkit's first.
    pub rows: Vec<Row>,
}

impl GroupResult {
    /// The reference row's name and median: the first of `info.reference` that was measured.
    pub fn reference(&self) -> Option<(&'static str, f64)> {
        self.info.reference.iter().find_map(|r| {
            self.rows.iter().find(|row| row.name == *r).and_then(|row| row.median().map(|m| (row.name, m)))
        })
    }

    /// How many times better than the reference `value` is (above 1: better; the reference
    /// itself is 1): `value / reference` for rates, `reference / value` for times.
    pub fn ratio(&self, value: f64) -> Option<f64> {
        let (_, r) = self.reference()?;
        self.times_better(value, r)
    }

    /// How many times better figure `a` is than figure `b` in this group's unit.
    pub fn times_better(&self, a: f64, b: f64) -> Option<f64> {
        let q = match self.info.better {
            Better::Higher => a / b,
            Better::Lower => b / a,
        };
        q.is_finite().then_some(q)
    }

    /// The median of row `name`, if it was measured.
    pub fn figure(&self, name: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.name == name).and_then(Row::median)
    }

    /// The rows whose runs failed: `(name, error)`.
    pub fn failures(&self) -> Vec<(&'static str, &str)> {
        self.rows
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Failed(e) => Some((r.name, e.as_str())),
                _ => None,
            })
            .collect()
    }

    /// One JSON object per measured row, each on its own line:
    /// `{"group": "...", "impl": "...", "value": N, "unit": "...", "ratio_to": "...", "ratio": N}`
    /// (`ratio_to` and `ratio` are `null` when no reference was measured). Rows that were
    /// skipped or failed are left out.
    pub fn json_lines(&self) -> String {
        let reference = self.reference();
        let mut out = String::new();
        for row in &self.rows {
            let Some(v) = row.median() else { continue };
            let (to, ratio) = match (reference, self.ratio(v)) {
                (Some((name, _)), Some(q)) => (json_str(name), json_num(q)),
                _ => ("null".to_owned(), "null".to_owned()),
            };
            let _ = writeln!(
                out,
                r#"{{"group": {}, "impl": {}, "value": {}, "unit": {}, "ratio_to": {to}, "ratio": {ratio}}}"#,
                json_str(self.info.group),
                json_str(row.name),
                json_num(v),
                json_str(self.info.unit),
            );
        }
        out
    }
}

/// `s` as a JSON string.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `v` as a JSON number (`null` if it is not finite, which JSON cannot hold).
fn json_num(v: f64) -> String {
    if v.is_finite() {
        // Rust prints the shortest form that reads back as `v`, never with an exponent,
        // which is valid JSON.
        format!("{v}")
    } else {
        "null".to_owned()
    }
}

/// The most runs per implementation [`plan`] accepts.
pub const MAX_RUNS: usize = 1000;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Smaller workloads and fewer runs: the whole suite in well under 30 s.
    pub quick: bool,
    /// Runs per implementation (the median is reported); default 3 (quick) or 5.
    pub runs: Option<usize>,
    /// Only these groups (ids from [`GROUPS`]); default all.
    pub groups: Option<Vec<String>>,
}

/// What [`Plan::run`] reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A run is about to start.
    Step {
        /// The group.
        group: &'static str,
        /// The implementation.
        imp: &'static str,
        /// Which run (from 1).
        run: usize,
        /// Of how many.
        runs: usize,
    },
    /// A group is finished.
    GroupDone(&'a GroupResult),
}

/// One run of an implementation: the figure in the group's unit.
type Runner = Box<dyn FnMut() -> io::Result<f64>>;

/// An implementation to measure.
struct Imp {
    name: &'static str,
    runs: usize,
    /// `Err(reason)` when it cannot run here.
    available: Result<(), String>,
    run: Runner,
}

/// A group to measure.
struct GroupPlan {
    info: GroupInfo,
    imps: Vec<Imp>,
}

/// The groups to measure, made by [`plan`].
pub struct Plan {
    groups: Vec<GroupPlan>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<_> = self.groups.iter().map(|g| g.info.group).collect();
        f.debug_struct("Plan").field("groups", &groups).field("steps", &self.steps()).finish()
    }
}

/// Workload sizes.
#[derive(Clone, Copy)]
struct Sizes {
    rtt: u64,
    tput: u64,
    bulk: u64,
    lock: u64,
    contended: u64,
    idle: Duration,
    idle_runs: usize,
    starts: u64,
    /// Whole maps of [`MAP_ITEMS`] per run of `pool_map_trivial`.
    maps: u64,
    applies: u64,
    /// Dict inserts per run of `manager_dict_op` (and echoes of its reference).
    manager_ops: u64,
    /// Python is slower: its workloads are this many times smaller.
    python_div: u64,
}

/// Items of one `pool_map_trivial` map (as in `benches/pool.rs`).
pub const MAP_ITEMS: u64 = 10_000;

const QUICK: Sizes = Sizes {
    rtt: 20_000,
    tput: 200_000,
    bulk: 5_000,
    lock: 2_000_000,
    contended: 200_000,
    idle: Duration::from_millis(500),
    idle_runs: 1,
    starts: 20,
    maps: 10,
    applies: 2_000,
    manager_ops: 5_000,
    python_div: 10,
};

const FULL: Sizes = Sizes {
    rtt: 200_000,
    tput: 2_000_000,
    bulk: 20_000,
    lock: 20_000_000,
    contended: 2_000_000,
    idle: Duration::from_secs(1),
    idle_runs: 3,
    starts: 200,
    maps: 50,
    applies: 20_000,
    manager_ops: 20_000,
    python_div: 10,
};

/// Millions of operations per second.
fn mops(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64() / 1e6
}

/// Nanoseconds per operation.
fn ns_per(n: u64, d: Duration) -> f64 {
    d.as_secs_f64() * 1e9 / n.max(1) as f64
}

/// Microseconds per operation.
fn us_per(n: u64, d: Duration) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// GiB/s of `n` [`BULK_BYTES`] messages.
fn gib_s(n: u64, d: Duration) -> f64 {
    (n * BULK_BYTES as u64) as f64 / d.as_secs_f64() / (1u64 << 30) as f64
}

fn imp(name: &'static str, runs: usize, run: impl FnMut() -> io::Result<f64> + 'static) -> Imp {
    Imp { name, runs, available: Ok(()), run: Box::new(run) }
}

/// A row of Python's `multiprocessing` running `python_peers.py WORKLOAD N [ARG]`; skipped
/// when there is no `python3`.
fn python(name: &'static str, runs: usize, work: &'static str, n: u64, arg: Option<&'static str>) -> Imp {
    let available = python_version().map(drop);
    let n = n.max(1).to_string();
    imp(name, runs, move || match arg {
        Some(a) => python_run(&[work, &n, a]),
        None => python_run(&[work, &n]),
    })
    .with_availability(available)
}

impl Imp {
    fn with_availability(mut self, available: Result<(), String>) -> Imp {
        self.available = available;
        self
    }
}

/// `pool_map_trivial`'s function.
fn inc(x: u64) -> u64 {
    x + 1
}

/// Nanoseconds per item of `maps` maps of `inc` over `0..MAP_ITEMS` on a fresh 2-worker
/// pool (made, and warmed up by one small map, outside the timing), with `chunk` items per
/// task (`None`: the default, Python's rule). Every result is checked.
fn shmkit_pool_map(maps: u64, chunk: Option<usize>) -> io::Result<f64> {
    let pool = Pool::new(2).map_err(super::other)?;
    let map = |items: std::ops::Range<u64>| match chunk {
        Some(c) => pool.chunksize(c).map(inc, items),
        None => pool.map(inc, items),
    };
    map(0..100).map_err(super::other)?;
    let start = Instant::now();
    for _ in 0..maps {
        let out = map(0..MAP_ITEMS).map_err(super::other)?;
        if out.len() as u64 != MAP_ITEMS || out.iter().enumerate().any(|(i, &r)| r != i as u64 + 1) {
            return Err(io::Error::other("pool map: wrong results"));
        }
    }
    Ok(ns_per(maps * MAP_ITEMS, start.elapsed()))
}

/// Microseconds per `pool.apply(inc, 1)` round trip on a fresh 2-worker pool.
fn shmkit_pool_apply(n: u64) -> io::Result<f64> {
    let pool = Pool::new(2).map_err(super::other)?;
    pool.apply(inc, 1).map_err(super::other)?;
    us_each(n, || match pool.apply(inc, 1) {
        Ok(2) => Ok(()),
        Ok(r) => Err(io::Error::other(format!("apply gave {r}"))),
        Err(e) => Err(super::other(e)),
    })
}

/// The target of `shmkit_spawn` in `process_start_join`: nothing.
fn noop(_: u32) {}

/// Starts `p` and joins it; an error unless it exits with 0.
fn start_join(mut p: Process) -> io::Result<()> {
    p.start().map_err(super::other)?;
    match p.join().map_err(super::other)? {
        0 => Ok(()),
        code => Err(io::Error::other(format!("child exited with {code}"))),
    }
}

/// `fork`, `_exit(0)` in the child, `waitpid`: the floor under any process start.
fn raw_fork_waitpid() -> io::Result<()> {
    // SAFETY: the suite runs on the process's only thread; the child only calls `_exit`,
    // the parent waits for its own child with a valid status pointer.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            libc::_exit(0);
        }
        let mut status = 0;
        if libc::waitpid(pid, &mut status, 0) != pid {
            return Err(io::Error::last_os_error());
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            return Err(io::Error::other(format!("child status {status:#x}")));
        }
    }
    Ok(())
}

/// Microseconds per call of `f` over `n` calls.
fn us_each(n: u64, mut f: impl FnMut() -> io::Result<()>) -> io::Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}

/// What each group measures, in [`GROUPS`] order.
pub fn infos() -> Vec<GroupInfo> {
    GROUPS.into_iter().map(info).collect()
}

/// The description of group `id` (one of [`GROUPS`]).
fn info(id: &'static str) -> GroupInfo {
    let (what, unit, better, reference, headline, python): (_, _, _, &'static [&'static str], _, _) = match id
    {
        "tput_8B" => (
            "one 8-byte message, one way, between two processes (crossbeam: two threads)",
            "M msg/s",
            Better::Higher,
            &["pipe"],
            "shmkit_mpmc",
            Some("python_queue"),
        ),
        "rtt_8B" => (
            "one 8-byte ping-pong round trip between two processes",
            "ns/round trip",
            Better::Lower,
            &["pipe"],
            "shmkit_pipe",
            Some("python_pipe"),
        ),
        "lock_uncontended" => (
            "lock + unlock in one thread, nobody else touching the lock",
            "ns/lock+unlock",
            Better::Lower,
            &["pthread_pshared"],
            "shmkit",
            Some("python_lock"),
        ),
        "lock_contended_2proc" => (
            "lock, +1, unlock in a loop in each of two processes at once: wall time / iterations of one",
            "ns/critical section",
            Better::Lower,
            &["pthread_pshared"],
            "shmkit",
            None,
        ),
        "bulk_64KiB" => (
            "one 64 KiB message, one way, between two processes (written and checked at both ends)",
            "GiB/s",
            Better::Higher,
            &["pipe"],
            "shmkit_pipe",
            None,
        ),
        "oversubscribed" => (
            "one 8-byte message from 3 producer processes to 1 consumer, all 4 on 2 CPUs",
            "M msg/s",
            Better::Higher,
            &["pipe"],
            "shmkit_mpmc",
            None,
        ),
        "value_incr_2proc" => (
            "two processes incrementing one shared u64: wall time / increments of both",
            "ns/increment",
            Better::Lower,
            &["pthread_locked"],
            "shmkit_locked",
            Some("python_value"),
        ),
        "idle_cpu" => (
            "CPU a child uses while blocked with nothing to receive, from blocking to its wake-up",
            "µs CPU/s blocked",
            Better::Lower,
            &["pipe_read"],
            "shmkit_queue_recv",
            None,
        ),
        "process_start_join" => (
            "start a child process that does nothing and wait for it",
            "µs",
            Better::Lower,
            &["command_true"],
            "shmkit_fork",
            Some("python_fork"),
        ),
        "pool_map_trivial" => (
            "pool.map(x + 1) over 10,000 u64s on a pool of 2 worker processes (default chunks: 1,250 items)",
            "ns/item",
            Better::Lower,
            &["python_pool"],
            "shmkit_pool",
            Some("python_pool"),
        ),
        "pool_apply_rtt" => (
            "pool.apply(x + 1): one task to a worker process of a pool of 2 and its result back",
            "µs",
            Better::Lower,
            &["python_pool"],
            "shmkit_pool",
            Some("python_pool"),
        ),
        "manager_dict_op" => (
            "one dict insert through a Manager: a request and its reply over a socket to the server process",
            "µs/op",
            Better::Lower,
            &["unix_socket_echo"],
            "shmkit_unix",
            Some("python_manager"),
        ),
        _ => unreachable!("group ids come from GROUPS"),
    };
    GroupInfo { group: id, what, unit, better, reference, headline, python }
}

/// The implementations of group `id`, in the order they run (shmkit's first).
fn imps(id: &'static str, sz: Sizes, runs: usize) -> Vec<Imp> {
    match id {
        "tput_8B" => {
            let n = sz.tput;
            let fast = n * 10;
            let tp = |peer: TputPeer, n: u64| imp(peer.name(), runs, move || Ok(mops(n, tput(peer, n)?)));
            let mq = imp("posix_mq", runs, move || Ok(mops(n / 4, posix_mq_tput(n / 4)?)))
                .with_availability(super::queue_peers::posix_mq_available().map_err(|e| e.to_string()));
            vec![
                tp(TputPeer::ShmkitSpsc, fast),
                tp(TputPeer::ShmkitSpscBatch, fast),
                tp(TputPeer::ShmkitMpmc, fast),
                imp("shmkit_pipe", runs, move || Ok(mops(fast, pipe_tput(PipeTputPeer::ShmkitPipe, fast)?))),
                tp(TputPeer::HandSpinRing, fast),
                imp("crossbeam_threads", runs, move || Ok(mops(fast, crossbeam_threads_tput(fast)?))),
                tp(TputPeer::Pipe, n),
                tp(TputPeer::Socketpair, n),
                mq,
                imp("ipc_channel", runs, move || Ok(mops(n / 4, ipc_channel_tput(n / 4)?))),
                python("python_queue", runs, "queue_tput", n / sz.python_div, None),
            ]
        }
        "rtt_8B" => {
            let n = sz.rtt;
            let rt = |peer: RttPeer, n: u64| imp(peer.name(), runs, move || Ok(ns_per(n, rtt(peer, n)?)));
            vec![
                imp("shmkit_queue", runs, move || Ok(ns_per(n, rtt_queue(n)?))),
                imp("shmkit_pipe", runs, move || Ok(ns_per(n, pipe_rtt(PipeRttPeer::ShmkitPipe, n)?))),
                rt(RttPeer::ShmkitAdaptive, n),
                rt(RttPeer::Spin, n),
                rt(RttPeer::FutexAlwaysSleep, n / 4),
                rt(RttPeer::Pipe, n / 4),
                rt(RttPeer::Socketpair, n / 4),
                python("python_pipe", runs, "pipe_rtt", n / sz.python_div, None),
            ]
        }
        "lock_uncontended" => {
            let n = sz.lock;
            LockPeer::ALL
                .into_iter()
                .map(|peer| imp(peer.name(), runs, move || Ok(ns_per(n, lock_uncontended(peer, n)?))))
                .chain([python("python_lock", runs, "lock_uncontended", n / sz.python_div, None)])
                .collect()
        }
        "lock_contended_2proc" => {
            let n = sz.contended;
            LockPeer::CONTENDED
                .into_iter()
                .map(|peer| imp(peer.name(), runs, move || Ok(ns_per(n, lock_contended_2proc(peer, n)?))))
                .collect()
        }
        "bulk_64KiB" => {
            let n = sz.bulk;
            let bk = |peer: BulkPeer| imp(peer.name(), runs, move || Ok(gib_s(n, bulk(peer, n)?)));
            vec![
                bk(BulkPeer::ShmkitFrames),
                imp("shmkit_pipe", runs, move || Ok(gib_s(n, pipe_bulk(PipeBulkPeer::ShmkitPipe, n)?))),
                bk(BulkPeer::HandMemcpyRing),
                bk(BulkPeer::Pipe),
            ]
        }
        "oversubscribed" => {
            let n = sz.tput;
            OversubPeer::ALL
                .into_iter()
                .map(|peer| imp(peer.name(), runs, move || Ok(mops(n, oversubscribed(peer, n)?))))
                .collect()
        }
        "value_incr_2proc" => {
            let n = sz.tput;
            ValuePeer::ALL
                .into_iter()
                .map(|peer| imp(peer.name(), runs, move || Ok(ns_per(n, value_incr_2proc(peer, n)?))))
                .chain([python("python_value", runs, "value_incr", n / sz.python_div, None)])
                .collect()
        }
        "idle_cpu" => {
            let idle = sz.idle;
            IdlePeer::ALL
                .into_iter()
                .map(|peer| {
                    imp(peer.name(), sz.idle_runs, move || {
                        Ok(idle_cpu(peer, idle)?.as_secs_f64() * 1e6 / idle.as_secs_f64())
                    })
                })
                .collect()
        }
        "process_start_join" => {
            let n = sz.starts;
            vec![
                imp("shmkit_fork", runs, move || us_each(n, || start_join(Process::new(|| {})))),
                imp("shmkit_spawn", runs, move || {
                    us_each(n / 4, || {
                        start_join(Process::builder().start_method(StartMethod::Spawn).target_fn(noop, 0u32))
                    })
                }),
                imp("raw_fork_waitpid", runs, move || us_each(n, raw_fork_waitpid)),
                imp("command_true", runs, move || {
                    us_each(n, || match Command::new("/bin/true").status()? {
                        st if st.success() => Ok(()),
                        st => Err(io::Error::other(format!("/bin/true: {st}"))),
                    })
                }),
                python("python_fork", runs, "start_join", n / 2, Some("fork")),
                python("python_spawn", runs, "start_join", n / sz.python_div, Some("spawn")),
            ]
        }
        "pool_map_trivial" => {
            let maps = sz.maps;
            vec![
                imp("shmkit_pool", runs, move || shmkit_pool_map(maps, None)),
                imp("shmkit_pool_chunk1", runs, move || shmkit_pool_map(1, Some(1))),
                python("python_pool", runs, "pool_map", MAP_ITEMS, Some("0")),
                python("python_pool_chunk1", runs, "pool_map", MAP_ITEMS, Some("1")),
            ]
        }
        "pool_apply_rtt" => {
            let n = sz.applies;
            vec![
                imp("shmkit_pool", runs, move || shmkit_pool_apply(n)),
                python("python_pool", runs, "pool_apply", n / sz.python_div, None),
            ]
        }
        "manager_dict_op" => {
            let n = sz.manager_ops;
            let available = if cfg!(feature = "manager") {
                Ok(())
            } else {
                Err("built without feature `manager`".to_owned())
            };
            let mgr = |peer: ManagerPeer| {
                imp(peer.name(), runs, move || Ok(us_per(n, manager_dict(peer, n)?)))
                    .with_availability(available.clone())
            };
            let echo = |peer: EchoPeer| {
                imp(peer.name(), runs, move || Ok(us_per(n, socket_echo(peer, n, INSERT_FRAME)?)))
            };
            vec![
                mgr(ManagerPeer::Unix),
                mgr(ManagerPeer::TcpLoopback),
                echo(EchoPeer::UnixSocket),
                python("python_manager", runs, "manager_dict", n / sz.python_div, None),
            ]
        }
        _ => unreachable!("group ids come from GROUPS"),
    }
}

/// The groups `opts` asks for, in [`GROUPS`] order.
///
/// # Errors
/// A group name that is not in [`GROUPS`], or zero runs.
pub fn plan(opts: &Options) -> Result<Plan, String> {
    let sizes = if opts.quick { QUICK } else { FULL };
    let runs = opts.runs.unwrap_or(if opts.quick { 3 } else { 5 });
    if !(1..=MAX_RUNS).contains(&runs) {
        return Err(format!("--runs must be from 1 to {MAX_RUNS}"));
    }
    if let Some(wanted) = &opts.groups {
        if let Some(bad) = wanted.iter().find(|w| !GROUPS.contains(&w.as_str())) {
            return Err(format!("no group {bad:?}; the groups are {}", GROUPS.join(", ")));
        }
    }
    let mut sizes_runs = sizes;
    if opts.runs.is_some() {
        sizes_runs.idle_runs = runs;
    }
    let groups = GROUPS
        .into_iter()
        .filter(|g| opts.groups.as_ref().is_none_or(|w| w.iter().any(|w| w == g)))
        .map(|g| GroupPlan { info: info(g), imps: imps(g, sizes_runs, runs) })
        .collect();
    Ok(Plan { groups })
}

impl Plan {
    /// How many runs [`run`](Plan::run) will make (for a progress bar).
    pub fn steps(&self) -> u64 {
        self.groups.iter().flat_map(|g| &g.imps).filter(|i| i.available.is_ok()).map(|i| i.runs as u64).sum()
    }

    /// Whether a row of Python's runs (or is skipped) in this plan.
    pub fn uses_python(&self) -> bool {
        self.groups.iter().flat_map(|g| &g.imps).any(|i| i.name.starts_with("python"))
    }

    /// The groups' descriptions, in the order they will run.
    pub fn groups(&self) -> Vec<GroupInfo> {
        self.groups.iter().map(|g| g.info).collect()
    }

    /// Measures every group in order, calling `on` before each run and after each group.
    /// A failing run marks its row [`Outcome::Failed`] and the suite goes on; `on` returning
    /// `Break` stops it (the groups finished so far are returned).
    pub fn run(self, mut on: impl FnMut(Event<'_>) -> ControlFlow<()>) -> Vec<GroupResult> {
        let mut results = Vec::with_capacity(self.groups.len());
        for g in self.groups {
            let mut rows = Vec::with_capacity(g.imps.len());
            for mut i in g.imps {
                let outcome = match i.available {
                    Err(why) => Outcome::Skipped(why),
                    Ok(()) => {
                        let mut figures = Vec::new();
                        let mut failed = None;
                        for run in 1..=i.runs {
                            if on(Event::Step { group: g.info.group, imp: i.name, run, runs: i.runs })
                                .is_break()
                            {
                                return results;
                            }
                            match (i.run)() {
                                Ok(v) if v.is_finite() => figures.push(v),
                                Ok(v) => {
                                    failed = Some(format!("run {run} gave {v}"));
                                    break;
                                }
                                Err(e) => {
                                    failed = Some(format!("run {run}: {e}"));
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(e) => Outcome::Failed(e),
                            None => summarize(figures),
                        }
                    }
                };
                rows.push(Row { name: i.name, outcome });
            }
            let result = GroupResult { info: g.info, rows };
            let flow = on(Event::GroupDone(&result));
            results.push(result);
            if flow.is_break() {
                break;
            }
        }
        results
    }
}

/// The median (the mean of the middle two of an even count), min and max of at least one
/// figure.
fn summarize(mut v: Vec<f64>) -> Outcome {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 0 { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
    Outcome::Measured { median, min: v[0], max: v[v.len() - 1], runs: v.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(better: Better, rows: &[(&'static str, Option<f64>)]) -> GroupResult {
        GroupResult {
            info: GroupInfo {
                group: "g",
                what: "w",
                unit: "u\"nit",
                better,
                reference: &["ref", "alt"],
                headline: "shmkit_x",
                python: None,
            },
            rows: rows
                .iter()
                .map(|&(name, v)| Row {
                    name,
                    outcome: match v {
                        Some(v) => Outcome::Measured { median: v, min: v, max: v, runs: 1 },
                        None => Outcome::Failed("boom".into()),
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn ratios_say_how_many_times_better() {
        let rate = result(Better::Higher, &[("shmkit_x", Some(50.0)), ("ref", Some(2.0))]);
        assert_eq!(rate.ratio(50.0), Some(25.0));
        assert_eq!(rate.ratio(2.0), Some(1.0));
        let time = result(Better::Lower, &[("shmkit_x", Some(50.0)), ("ref", Some(2.0))]);
        assert_eq!(time.ratio(50.0), Some(0.04));
    }

    #[test]
    fn figures_by_name_and_times_better_either_way() {
        let rows = [("shmkit_a", Some(3.0)), ("python_x", Some(9.0)), ("ref", None)];
        assert_eq!(result(Better::Lower, &rows).figure("python_x"), Some(9.0));
        assert_eq!(result(Better::Lower, &rows).figure("ref"), None);
        assert_eq!(result(Better::Lower, &rows).figure("nope"), None);
        assert_eq!(result(Better::Lower, &rows).times_better(3.0, 9.0), Some(3.0));
        assert_eq!(result(Better::Higher, &rows).times_better(3.0, 9.0), Some(1.0 / 3.0));
    }

    #[test]
    fn reference_falls_back_and_can_be_missing() {
        let g = result(Better::Higher, &[("shmkit_x", Some(8.0)), ("ref", None), ("alt", Some(4.0))]);
        assert_eq!(g.reference(), Some(("alt", 4.0)));
        assert_eq!(g.ratio(8.0), Some(2.0));
        assert_eq!(g.failures(), vec![("ref", "boom")]);
        let none = result(Better::Higher, &[("shmkit_x", Some(8.0)), ("ref", None)]);
        assert_eq!(none.ratio(8.0), None);
        assert_eq!(
            none.json_lines(),
            "{\"group\": \"g\", \"impl\": \"shmkit_x\", \"value\": 8, \"unit\": \"u\\\"nit\", \"ratio_to\": null, \"ratio\": null}\n"
        );
    }

    #[test]
    fn json_lines_one_object_per_measured_row() {
        let g = result(Better::Lower, &[("shmkit_x", Some(0.5)), ("ref", Some(1.25)), ("broken", None)]);
        let lines: Vec<_> = g.json_lines().lines().map(str::to_owned).collect();
        assert_eq!(
            lines,
            [
                r#"{"group": "g", "impl": "shmkit_x", "value": 0.5, "unit": "u\"nit", "ratio_to": "ref", "ratio": 2.5}"#,
                r#"{"group": "g", "impl": "ref", "value": 1.25, "unit": "u\"nit", "ratio_to": "ref", "ratio": 1}"#,
            ]
        );
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(1e-7), "0.0000001");
        assert_eq!(json_str("a\nb\\"), "\"a\\u000ab\\\\\"");
    }

    #[test]
    fn summarize_takes_the_median() {
        assert_eq!(
            summarize(vec![3.0, 1.0, 2.0]),
            Outcome::Measured { median: 2.0, min: 1.0, max: 3.0, runs: 3 }
        );
        assert_eq!(summarize(vec![4.0, 1.0]), Outcome::Measured { median: 2.5, min: 1.0, max: 4.0, runs: 2 });
    }

    #[test]
    fn plan_checks_its_options() {
        assert!(plan(&Options { groups: Some(vec!["nope".into()]), ..Options::default() }).is_err());
        assert!(plan(&Options { runs: Some(0), ..Options::default() }).is_err());
        assert!(plan(&Options { runs: Some(MAX_RUNS + 1), ..Options::default() }).is_err());
        let p = plan(&Options { quick: true, groups: Some(vec!["rtt_8B".into()]), runs: Some(2) }).unwrap();
        assert_eq!(p.groups().len(), 1);
        assert_eq!(p.steps(), 2 * if python_version().is_ok() { 8 } else { 7 });
        let all = plan(&Options::default()).unwrap();
        assert_eq!(all.groups(), infos());
        assert_eq!(infos().iter().map(|g| g.group).collect::<Vec<_>>(), GROUPS);
        // Every group's headline, reference and Python rows are rows of that group.
        for g in all.groups {
            let names: Vec<_> = g.imps.iter().map(|i| i.name).collect();
            assert!(names.contains(&g.info.headline), "{}: {}", g.info.group, g.info.headline);
            assert!(g.info.headline.starts_with("shmkit"), "{}", g.info.headline);
            assert!(g.info.reference.iter().all(|r| names.contains(r)), "{}", g.info.group);
            assert!(g.info.python.is_none_or(|p| names.contains(&p)), "{}", g.info.group);
        }
    }
}
