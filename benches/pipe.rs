//! shmkit's `Pipe` beside an OS pipe, a socketpair and ipc-channel, between two processes
//! (parent and forked child pinned to different cores). Workloads in
//! `src/bench/pipe_peers.rs`; the ipc-channel one in `benches/common` (a dev-dependency).
//!
//! - `pipe_tput_8B/*`: one iteration = one 8-byte message, child to parent. shmkit:
//!   `Pipe::new()` (defaults: 64 messages of up to 64 KiB per direction), `send(&u64)` /
//!   `recv::<u64>()`. `os_pipe` and `socketpair`: one plain 8-byte `write` / `read` per
//!   message, no length prefix, exactly `tput_8B/pipe` and `tput_8B/socketpair` (a fixed
//!   size needs no header; Python's `Connection` would add a 4-byte one and a second `read`,
//!   so these are the cheapest form of the peer). `ipc_channel`: `tput_8B/ipc_channel`.
//! - `pipe_rtt/*`: one iteration = one round trip, both sides blocking in `recv`: shmkit
//!   over the two directions of one `Pipe::new()`; `os_pipe` over two pipes (`rtt_8B/pipe`).
//! - `pipe_bulk_64KiB/*`: one iteration = one 64 KiB message, stamped and checked at both
//!   ends, copied in and out once each. shmkit: `Pipe::builder().capacity(16)
//!   .max_message(64 KiB)`, `send_bytes` / `recv_bytes_into`. `os_pipe`: Python's framing,
//!   a 4-byte big-endian length `write`, then the payload `write`; `read` of the length,
//!   then of the payload.
//!
//! Each `iter_custom` call forks a fresh child; the fork and a warm-up message are not timed.

use std::io;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shmkit::bench::{
    ipc_channel_tput, pipe_bulk, pipe_rtt, pipe_tput, PipeBulkPeer, PipeRttPeer, PipeTputPeer, BULK_BYTES,
};

fn group_times(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
}

fn timed(name: &str, r: io::Result<Duration>) -> Duration {
    r.unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn tput_8b(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe_tput_8B");
    g.throughput(Throughput::Elements(1));
    group_times(&mut g);
    for peer in PipeTputPeer::ALL {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), pipe_tput(peer, n))));
    }
    g.bench_function("ipc_channel", |b| b.iter_custom(|n| timed("ipc_channel", ipc_channel_tput(n))));
    g.finish();
}

fn rtt(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe_rtt");
    group_times(&mut g);
    for peer in PipeRttPeer::ALL {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), pipe_rtt(peer, n))));
    }
    g.finish();
}

fn bulk_64kib(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipe_bulk_64KiB");
    g.throughput(Throughput::Bytes(BULK_BYTES as u64));
    group_times(&mut g);
    for peer in PipeBulkPeer::ALL {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), pipe_bulk(peer, n))));
    }
    g.finish();
}

criterion_group!(benches, tput_8b, rtt, bulk_64kib);
criterion_main!(benches);
