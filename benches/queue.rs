//! shmkit's queues beside their peers, between two processes (parent and forked child
//! pinned to different cores) unless said otherwise. Workloads in `src/bench/peers.rs` and
//! `src/bench/queue_peers.rs`; the serde ones (ipc-channel, `SerdeQueue`) live here. Needs `--features serde` (for `SerdeQueue`).
//!
//! - `tput_8B/*`: one iteration = one 8-byte message, one way. Adds to the `tput_8B` of
//!   `benches/rtt.rs`: `posix_mq` (`mq_timedsend`/`mq_timedreceive`, as deep as
//!   `/proc/sys/fs/mqueue/msg_max` allows, usually 10), `ipc_channel` (between processes:
//!   the channel is made, then the child forked) and `crossbeam_threads` (a bounded
//!   crossbeam channel of 4096 between two threads of one process, for scale).
//! - `serde_small_struct/*`: one iteration = one `Reading` (a u64, a 16-byte `String`,
//!   four f32s) serialized, sent, received and deserialized: shmkit's `SerdeQueue` (postcard
//!   into a shared ring) vs an ipc-channel `IpcSender<Reading>` (0.23 encodes with postcard
//!   too, over a Unix seqpacket socket).
//! - `rtt_8B/*`: one iteration = one round trip: `shmkit_queue` over two `Queue<u64>` (ping
//!   and pong, both sides blocking in `recv`) vs the pipe and pure-spin ping-pongs of
//!   `benches/rtt.rs`.
//! - `oversubscribed/*`: one iteration = one 8-byte message from one of 3 producer processes
//!   to 1 consumer, all 4 on CPUs 0–1.
//! - `bulk_64KiB/*`: one iteration = one 64 KiB message, stamped and checked at both ends.
//! - idle CPU (printed first, not a timing loop): CPU time a child uses while blocked for 1 s
//!   in `Queue::recv`, vs a blocking pipe `read` and a plain sleep.
//!
//! Each `iter_custom` call forks fresh children; the fork and a warm-up message are not timed.

use std::io;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use shmkit::bench::queue_peers::{check_seq as check, ipc_err, posix_mq_available, posix_mq_depth, run_pair};
use shmkit::bench::{
    bulk, crossbeam_threads_tput, idle_cpu, ipc_channel_tput, oversubscribed, posix_mq_tput, rtt, rtt_queue,
    tput, BulkPeer, IdlePeer, OversubPeer, RttPeer, TputPeer, BULK_BYTES,
};
use shmkit::queue::{RecvError, SerdeQueue};

/// How long the parent waits for a message before calling the child dead.
const TIMEOUT: Duration = Duration::from_secs(60);

fn group_times(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_millis(500)).sample_size(20);
}

fn timed(name: &str, r: io::Result<Duration>) -> Duration {
    r.unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn tput_8b(c: &mut Criterion) {
    let mut g = c.benchmark_group("tput_8B");
    g.throughput(Throughput::Elements(1));
    group_times(&mut g);
    for peer in TputPeer::ALL {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), tput(peer, n))));
    }
    match posix_mq_available() {
        Ok(()) => g.bench_function("posix_mq", |b| b.iter_custom(|n| timed("posix_mq", posix_mq_tput(n)))),
        Err(e) => {
            eprintln!("tput_8B/posix_mq skipped: no POSIX message queue here ({e})");
            &mut g
        }
    };
    g.bench_function("ipc_channel", |b| b.iter_custom(|n| timed("ipc_channel", ipc_channel_tput(n))));
    g.bench_function("crossbeam_threads", |b| {
        b.iter_custom(|n| timed("crossbeam_threads", crossbeam_threads_tput(n)))
    });
    g.finish();
}

/// The small struct of `serde_small_struct`: 8 + 16 + 16 bytes of payload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Reading {
    id: u64,
    name: String,
    values: [f32; 4],
}

/// A 16-byte name.
const NAME: &str = "sensor-0042/west";

fn reading(id: u64) -> Reading {
    Reading { id, name: NAME.to_owned(), values: [id as f32, 0.5, 1.5, 2.5] }
}

fn check_reading(id: u64, r: &Reading) -> io::Result<()> {
    check(id, r.id)?;
    if r.name != NAME || r.values[1] != 0.5 {
        return Err(io::Error::other(format!("reading {id} garbled: {r:?}")));
    }
    Ok(())
}

/// `Reading`s through a `SerdeQueue` (1024 frames of at most 64 bytes; a `Reading` encodes
/// to about 35). The parent's handle counts as a sender too, so it waits with a timeout.
fn serde_shmkit(msgs: u64) -> io::Result<Duration> {
    let q = SerdeQueue::<Reading>::new(1024, 64).map_err(io::Error::other)?;
    let rq = q.clone();
    let total = msgs + 1;
    let child = move || {
        for i in 1..=total {
            if q.send(reading(i)).is_err() {
                return 2;
            }
        }
        0
    };
    let parent = move || {
        let mut start = Instant::now();
        for i in 1..=total {
            let r = match rq.try_recv() {
                Err(RecvError::Empty) => rq.recv_timeout(TIMEOUT),
                r => r,
            }
            .map_err(io::Error::other)?;
            check_reading(i, &r)?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    };
    // SAFETY: as in `shmkit::bench::ipc_channel_tput`: the bench runs on one thread.
    unsafe { run_pair(child, parent) }
}

/// `Reading`s through an ipc-channel made before the fork.
fn serde_ipc(msgs: u64) -> io::Result<Duration> {
    let (tx, rx) = ipc_channel::ipc::channel::<Reading>()?;
    let total = msgs + 1;
    let child = move || {
        for i in 1..=total {
            if tx.send(reading(i)).is_err() {
                return 2;
            }
        }
        0
    };
    let parent = move || {
        let mut start = Instant::now();
        for i in 1..=total {
            check_reading(i, &rx.recv().map_err(ipc_err)?)?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    };
    // SAFETY: as in `shmkit::bench::ipc_channel_tput`: the bench runs on one thread.
    unsafe { run_pair(child, parent) }
}

fn serde_small_struct(c: &mut Criterion) {
    let mut g = c.benchmark_group("serde_small_struct");
    g.throughput(Throughput::Elements(1));
    group_times(&mut g);
    g.bench_function("shmkit", |b| b.iter_custom(|n| timed("shmkit", serde_shmkit(n))));
    g.bench_function("ipc_channel", |b| b.iter_custom(|n| timed("ipc_channel", serde_ipc(n))));
    g.finish();
}

fn rtt_8b(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtt_8B");
    group_times(&mut g);
    g.bench_function("shmkit_queue", |b| b.iter_custom(|n| timed("shmkit_queue", rtt_queue(n))));
    for peer in [RttPeer::Pipe, RttPeer::Spin] {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), rtt(peer, n))));
    }
    g.finish();
}

fn oversubscribed_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("oversubscribed");
    g.throughput(Throughput::Elements(1));
    group_times(&mut g);
    for peer in OversubPeer::ALL {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), oversubscribed(peer, n))));
    }
    g.finish();
}

fn bulk_64kib(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk_64KiB");
    g.throughput(Throughput::Bytes(BULK_BYTES as u64));
    group_times(&mut g);
    for peer in BulkPeer::ALL {
        g.bench_function(peer.name(), |b| b.iter_custom(|n| timed(peer.name(), bulk(peer, n))));
    }
    g.finish();
}

/// Prints the idle-CPU comparison once (1 s per child under `cargo bench`, 50 ms in test
/// mode, skipped for `--list`).
fn idle_cpu_report(_: &mut Criterion) {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let idle =
        if args.iter().any(|a| a == "--bench") { Duration::from_secs(1) } else { Duration::from_millis(50) };
    eprintln!(
        "idle_cpu: CPU time (the child's own CLOCK_PROCESS_CPUTIME_ID from blocking to waking up) of a \
         child blocked {} ms with nothing to receive; posix_mq depth here: {}",
        idle.as_millis(),
        posix_mq_depth()
    );
    let mut got = Vec::new();
    for peer in IdlePeer::ALL {
        let d = timed(peer.name(), idle_cpu(peer, idle));
        eprintln!("  {:<20} {:>9.1} µs", peer.name(), d.as_secs_f64() * 1e6);
        got.push(d.as_secs_f64());
    }
    if let [shm, pipe, floor] = got[..] {
        eprintln!(
            "  shmkit / pipe: {:.2}x; above the sleep floor: shmkit {:.1} µs, pipe {:.1} µs\n",
            shm / pipe,
            (shm - floor) * 1e6,
            (pipe - floor) * 1e6
        );
    }
}

criterion_group!(
    benches,
    idle_cpu_report,
    tput_8b,
    serde_small_struct,
    rtt_8b,
    oversubscribed_group,
    bulk_64kib
);
criterion_main!(benches);
