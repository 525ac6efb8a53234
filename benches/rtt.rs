//! Round-trip latency and one-way throughput of 8-byte messages between two processes
//! (parent and forked child, pinned to different cores), shmkit beside its peers.
//!
//! `rtt_8B/*`: one iteration = one round trip. `tput_8B/*`: one iteration = one message.
//! Each `iter_custom` call forks a fresh child; the fork and a warm-up round are not timed.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shmkit::bench::{rtt, tput, RttPeer, TputPeer};

fn rtt_8b(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtt_8B");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for peer in RttPeer::ALL {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| rtt(peer, iters).unwrap_or_else(|e| panic!("{}: {e}", peer.name())))
        });
    }
    g.finish();
}

fn tput_8b(c: &mut Criterion) {
    let mut g = c.benchmark_group("tput_8B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for peer in TputPeer::ALL {
        g.bench_function(peer.name(), |b| {
            b.iter_custom(|iters| tput(peer, iters).unwrap_or_else(|e| panic!("{}: {e}", peer.name())))
        });
    }
    g.finish();
}

criterion_group!(benches, rtt_8b, tput_8b);
criterion_main!(benches);
