//! Locks and events, shmkit beside its peers (workloads in `src/bench/sync_peers.rs`).
//!
//! - `lock_uncontended/*`: one iteration = `lock()` + unlock in one thread, nobody else
//!   touching the lock. Every lock but `std_mutex` sits in an anonymous shared mapping, on a
//!   cache line of its own.
//! - `lock_contended_2proc/*`: parent and forked child (pinned to different cores) each run
//!   `iters` lock / non-atomic `+1` / unlock rounds, started together; one iteration = one
//!   critical section in *each* process (the parent's wall time / iters). The final count is
//!   checked to be `2 * iters`.
//! - `event_wake_rtt/*`: one iteration = one round trip: set the child's `Event`, wait for
//!   its answer on a second one (vs an 8-byte pipe ping-pong, the same as `rtt_8B/pipe`).
//! - `owner_died_recovery/*`: one iteration = SIGKILL of a child holding the lock until the
//!   parent's lock call returns the owner-died result. One fork per iteration, not timed.
//!
//! `raw_sync`: the crate's `Mutex` (0.1.5, October 2020), a `PTHREAD_PROCESS_SHARED`
//! `pthread_mutex_t` behind a `Box<dyn LockImpl>`, in both lock groups.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use crossbeam_utils::CachePadded;
use shmkit::bench::{
    event_wake_rtt, lock_contended_2proc, owner_died_recovery, EventPeer, FutexMutex, LockPeer,
    OwnerDiedPeer, PthreadMutex, RawSyncMutex,
};
use shmkit::sync::Lock;

fn lock_uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_uncontended");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(50);
    for peer in LockPeer::ALL {
        match peer {
            LockPeer::Shmkit => {
                // Alone in its own mapping, so on a cache line of its own.
                let lock = Lock::new().expect("Lock::new");
                g.bench_function(peer.name(), |b| {
                    b.iter(|| {
                        let g = lock.lock();
                        black_box(&g);
                    })
                });
            }
            LockPeer::BareFutex3State => {
                let lock = FutexMutex::anonymous().expect("FutexMutex::anonymous");
                g.bench_function(peer.name(), |b| {
                    b.iter(|| {
                        let g = lock.lock();
                        black_box(&g);
                    })
                });
            }
            LockPeer::PthreadPshared | LockPeer::PthreadPsharedRobust => {
                let lock =
                    PthreadMutex::new(peer == LockPeer::PthreadPsharedRobust).expect("PthreadMutex::new");
                g.bench_function(peer.name(), |b| {
                    b.iter(|| {
                        let g = lock.lock();
                        black_box(&g);
                    })
                });
            }
            LockPeer::RawSync => {
                let lock = RawSyncMutex::new().expect("RawSyncMutex::new");
                g.bench_function(peer.name(), |b| {
                    b.iter(|| {
                        let g = lock.lock();
                        black_box(&g);
                    })
                });
            }
            LockPeer::StdMutex => {
                let lock = CachePadded::new(std::sync::Mutex::new(()));
                g.bench_function(peer.name(), |b| {
                    b.iter(|| {
                        let g = lock.lock();
                        black_box(&g);
                    })
                });
            }
        }
    }
    g.finish();
}

fn lock_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("lock_contended_2proc");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for peer in LockPeer::CONTENDED {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                lock_contended_2proc(peer, iters).unwrap_or_else(|e| panic!("{}: {e}", peer.name()))
            })
        });
    }
    g.finish();
}

fn event_rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("event_wake_rtt");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for peer in EventPeer::ALL {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                event_wake_rtt(peer, iters).unwrap_or_else(|e| panic!("{}: {e}", peer.name()))
            })
        });
    }
    g.finish();
}

fn owner_died(c: &mut Criterion) {
    let mut g = c.benchmark_group("owner_died_recovery");
    // A fork and a kill per iteration: few, equally sized samples.
    g.sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10);
    for peer in OwnerDiedPeer::ALL {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                owner_died_recovery(peer, iters).unwrap_or_else(|e| panic!("{}: {e}", peer.name()))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lock_uncontended, lock_contended, event_rtt, owner_died);
criterion_main!(benches);
