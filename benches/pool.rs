//! shmkit's process `Pool` and `Process` beside rayon threads, `std::process::Command` and a
//! raw `fork`. Python's peers: `benches/python_pool_map.py`.
//!
//! - `process_start_join/*`: one iteration = start one child that does nothing and join it
//!   (reaped, exit code checked).
//!   - `fork`: `Process::new(|| {})` (fork start method), `start`, `join`;
//!   - `spawn`: `Process::new_fn(noop, 0u32)` with `StartMethod::Spawn`: the bench binary is
//!     re-executed and `shmkit::process::init()`, first in `main` below, runs `noop` there;
//!   - `std_command_true`: `Command::new("/bin/true").status()` (fork/vfork + exec of a tiny
//!     program, std's own wait);
//!   - `raw_fork_waitpid`: `libc::fork`, `_exit(0)` in the child, `waitpid` in the parent:
//!     the floor under `fork`.
//!
//!   This group runs first, while the bench process has a single thread (no pool or rayon
//!   thread yet), so forking copies no lock held elsewhere.
//! - `pool_map_trivial/*`: one iteration = one whole `map` of `inc` (`x + 1`) over
//!   `0..N` (`N` = 10,000 `u64`s) into a `Vec` of the `N` results; the throughput is
//!   `Elements(N)`, so criterion's `thrpt` is items per second and time / `N` is the
//!   per-item cost. The pools are made once, outside the timing; the results are checked
//!   once before timing.
//!   - `shmkit_pool`: `Pool::new(2)` (2 forked workers), `pool.map(inc, 0..N)` with the
//!     default chunksize (`N / (4 × 2)` = 1,250 items per chunk, Python's rule);
//!   - `shmkit_pool_chunk1`: the same pool, `pool.chunksize(1).map(inc, 0..N)`: one task
//!     per frame, the per-task overhead;
//!   - `rayon_threads`: a 2-thread rayon pool, `install(|| (0..N).into_par_iter().map(inc)
//!     .collect())`: threads of one process, nothing crosses a process boundary;
//!   - `sequential`: `(0..N).map(inc).collect()` on the bench thread.
//! - `pool_apply_rtt/*`: one iteration = one `inc(1)` sent to a worker and its result back,
//!   waited for: `shmkit_pool`: `pool.apply(inc, 1)` on a `Pool::new(2)`; `rayon_install`:
//!   `install(|| inc(1))` on a 2-thread rayon pool (the job is injected into the pool and
//!   the caller blocks on its latch).

use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, BenchmarkGroup, Criterion, Throughput};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use rayon::{ThreadPool, ThreadPoolBuilder};
use shmkit::process::{Pool, Process, StartMethod};

/// Items per `map` in `pool_map_trivial`.
const N: u64 = 10_000;
/// Workers of every pool (the VM has 2 cores).
const WORKERS: usize = 2;

fn inc(x: u64) -> u64 {
    x + 1
}

fn noop(_: u32) {}

fn group_times(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(20);
}

fn rayon_pool() -> ThreadPool {
    ThreadPoolBuilder::new().num_threads(WORKERS).build().expect("rayon pool")
}

fn start_join(mut p: Process) {
    p.start().expect("start");
    assert_eq!(p.join().expect("join"), 0);
}

fn raw_fork_waitpid() {
    // SAFETY: the bench process has one thread while this group runs (see the module doc);
    // the child only calls `_exit`, the parent waits for its own child with a valid pointer.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            libc::_exit(0);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}

fn process_start_join(c: &mut Criterion) {
    let mut g = c.benchmark_group("process_start_join");
    group_times(&mut g);
    g.bench_function("fork", |b| b.iter(|| start_join(Process::new(|| {}))));
    g.bench_function("spawn", |b| {
        b.iter(|| start_join(Process::builder().start_method(StartMethod::Spawn).target_fn(noop, 0u32)))
    });
    g.bench_function("std_command_true", |b| {
        b.iter(|| assert!(Command::new("/bin/true").status().expect("/bin/true").success()))
    });
    g.bench_function("raw_fork_waitpid", |b| b.iter(raw_fork_waitpid));
    g.finish();
}

fn map_trivial(c: &mut Criterion) {
    let want: Vec<u64> = (1..=N).collect();
    let pool = Pool::new(WORKERS).expect("pool");
    let threads = rayon_pool();
    let shmkit_pool = || pool.map(inc, black_box(0..N)).expect("map");
    let shmkit_chunk1 = || pool.chunksize(1).map(inc, black_box(0..N)).expect("map");
    let rayon = || threads.install(|| black_box(0..N).into_par_iter().map(inc).collect::<Vec<u64>>());
    let sequential = || black_box(0..N).map(inc).collect::<Vec<u64>>();
    assert_eq!(shmkit_pool(), want);
    assert_eq!(shmkit_chunk1(), want);
    assert_eq!(rayon(), want);
    assert_eq!(sequential(), want);

    let mut g = c.benchmark_group("pool_map_trivial");
    g.throughput(Throughput::Elements(N));
    group_times(&mut g);
    g.bench_function("shmkit_pool", |b| b.iter(shmkit_pool));
    g.bench_function("shmkit_pool_chunk1", |b| b.iter(shmkit_chunk1));
    g.bench_function("rayon_threads", |b| b.iter(rayon));
    g.bench_function("sequential", |b| b.iter(sequential));
    g.finish();
}

fn apply_rtt(c: &mut Criterion) {
    let pool = Pool::new(WORKERS).expect("pool");
    let threads = rayon_pool();
    assert_eq!(pool.apply(inc, 1).expect("apply"), 2);
    let mut g = c.benchmark_group("pool_apply_rtt");
    group_times(&mut g);
    g.bench_function("shmkit_pool", |b| b.iter(|| pool.apply(inc, black_box(1u64)).expect("apply")));
    g.bench_function("rayon_install", |b| b.iter(|| threads.install(|| inc(black_box(1u64)))));
    g.finish();
}

criterion_group!(benches, process_start_join, map_trivial, apply_rtt);

// `criterion_main!` with `shmkit::process::init()` first: a child started with the spawn
// method re-executes this binary, runs its target inside `init` and exits there.
fn main() {
    shmkit::process::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
