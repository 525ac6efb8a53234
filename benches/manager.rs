//! One dict insert through shmkit's `Manager`, beside a raw socket echo of the same size:
//! the transport's floor. Python's peer: `manager_dict` in `src/bench/python_peers.py`
//! (`shmkit bench --groups manager_dict_op` runs it).
//!
//! `manager_dict_op/*`: one iteration = one request and its reply.
//! - `shmkit_unix`: `d.insert("k", i)` on a `DictProxy<String, u64>` of a `Manager::start()`
//!   (its server process listens on a private Unix socket);
//! - `shmkit_tcp_loopback`: the same through `Manager::builder().address("127.0.0.1:0")`;
//! - `unix_socket_echo`, `tcp_echo`: a length-prefixed frame of `INSERT_FRAME` bytes (about
//!   what the insert writes) to a forked child over a Unix stream socket or a loopback TCP
//!   connection (`TCP_NODELAY` on both ends, as the manager's), echoed whole.
//!
//! The two managers are started once, before the group (their start and shutdown are not
//! timed); each `iter_custom` call of an echo peer forks a fresh child, and the fork and a
//! warm-up echo are not timed. Nothing is pinned: the manager's server runs where the
//! scheduler puts it, and so does the echo child.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use shmkit::bench::{socket_echo, EchoPeer, ManagerPeer, INSERT_FRAME};
use shmkit::manager::{DictProxy, Manager, ManagerHandle};

fn start(peer: ManagerPeer) -> ManagerHandle {
    match peer {
        ManagerPeer::Unix => Manager::start(),
        ManagerPeer::TcpLoopback => Manager::builder().address("127.0.0.1:0").start(),
    }
    .unwrap_or_else(|e| panic!("{}: start: {e}", peer.name()))
}

fn dict_op(c: &mut Criterion) {
    // Both servers are forked here, before criterion runs anything.
    let managers = ManagerPeer::ALL.map(|peer| (peer, start(peer)));
    let mut g = c.benchmark_group("manager_dict_op");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for (peer, mgr) in &managers {
        let d: DictProxy<String, u64> = mgr.dict().expect("dict");
        assert_eq!(d.insert("k", 0u64).expect("insert"), None);
        let mut i = 0u64;
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let old = d.insert("k", black_box(i + 1)).expect("insert");
                    assert_eq!(old, Some(i));
                    i += 1;
                }
                start.elapsed()
            })
        });
        assert_eq!(d.get("k").expect("get"), Some(i));
    }
    for peer in EchoPeer::ALL {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| {
                socket_echo(peer, iters, INSERT_FRAME).unwrap_or_else(|e| panic!("{}: {e}", peer.name()))
            })
        });
    }
    g.finish();
    for (peer, mgr) in managers {
        mgr.shutdown().unwrap_or_else(|e| panic!("{}: shutdown: {e}", peer.name()));
    }
}

criterion_group!(benches, dict_op);

// `criterion_main!` with `shmkit::process::init()` first: the Manager's server is a shmkit
// `Process` (fork start method), and `init` readies forked children for panics.
fn main() {
    shmkit::process::init();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
