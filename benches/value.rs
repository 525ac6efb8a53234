//! shmkit's `Value<u64>` incremented by two processes at once (parent and forked child
//! pinned to different cores, released together), beside a process-shared pthread mutex
//! around a `u64`. Workloads in `src/bench/value_peers.rs`.
//!
//! - `value_incr_2proc/*`: one iteration = one increment of the shared counter, by either
//!   process: for `iters`, the parent makes `iters - iters / 2` increments and the child
//!   `iters / 2`, and the time is the parent's wall time from the start signal until both
//!   are done. So the figure is wall time / total increments (both processes together),
//!   the same for all three; each process sees its own increments take about twice as
//!   long. (`lock_contended_2proc` in `benches/sync.rs` counts per process instead.) The
//!   final value is checked.
//!   - `shmkit_locked`: `*v.lock()? += 1` (robust lock, the guard's copy written back on
//!     drop), Python's `with v.get_lock(): v.value += 1`;
//!   - `shmkit_atomic`: `v.fetch_add(1)`, no lock;
//!   - `pthread_locked`: a `PTHREAD_PROCESS_SHARED` `pthread_mutex_t` (the `sync` benches'
//!     `PthreadMutex`) around a plain `u64` load and store, lock and counter on separate
//!     cache lines as in shmkit's `Value`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shmkit::bench::{value_incr_2proc, ValuePeer};

fn value_incr(c: &mut Criterion) {
    let mut g = c.benchmark_group("value_incr_2proc");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for peer in ValuePeer::ALL {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|n| value_incr_2proc(peer, n).unwrap_or_else(|e| panic!("{}: {e}", peer.name())))
        });
    }
    g.finish();
}

criterion_group!(benches, value_incr);
criterion_main!(benches);
