//! The `shmkit` command: demo, bench, ls, inspect, clean.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shmkit::bench::{
    self, BulkPeer, IdlePeer, OversubPeer, PipeBulkPeer, PipeRttPeer, PipeTputPeer, RttPeer, TputPeer,
    ValuePeer,
};
use shmkit::shm::{self, Header, ShmOpenError};
use shmkit::util::proc::Liveness;

#[derive(Parser)]
#[command(name = "shmkit", version, about = "Shared-memory multiprocessing toolkit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cooks and eaters: 3 producer processes and 2 consumer processes on a JoinableQueue,
    /// then an 8-byte ping-pong; prints throughput and latency next to a pipe's.
    Demo {
        /// Dishes each cook puts on the queue.
        #[arg(long, default_value_t = 1_000_000)]
        dishes: u32,
        /// Ping-pong round trips.
        #[arg(long, default_value_t = 200_000)]
        rounds: u64,
    },
    /// Runs the headline comparisons against pipes, sockets and spinning; prints a table.
    Bench {
        /// A shorter run.
        #[arg(long)]
        quick: bool,
    },
    /// Lists shmkit segments in /dev/shm: name, kind, size, creator and whether it is alive.
    Ls,
    /// Shows the header of one named segment.
    Inspect {
        /// The segment's name (with or without the leading '/').
        name: String,
    },
    /// Unlinks segments whose creator is dead (persistent ones only with --all).
    Clean {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Also remove segments created as persistent.
        #[arg(long)]
        all: bool,
        /// Only consider names starting with this prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
}

fn liveness(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::Dead => "dead",
        Liveness::Unknown => "unknown",
    }
}

fn per_op(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e9 / n.max(1) as f64
}

fn demo(dishes: u32, rounds: u64) -> Result<(), String> {
    println!("shmkit demo 1: cooks and eaters. 3 cook processes put dishes on a JoinableQueue in");
    println!("shared memory, 2 daemon eater processes take them and call task_done(), and this");
    println!("process waits in join().\n");
    let r =
        bench::demo::cooks_and_eaters(3, 2, dishes.max(1)).map_err(|e| format!("cooks and eaters: {e}"))?;
    println!(
        "  {} dishes in {:.3} s: {:.2} M dishes/s, every one eaten exactly once (count and checksum)",
        r.dishes,
        r.elapsed.as_secs_f64(),
        r.dishes as f64 / r.elapsed.as_secs_f64() / 1e6
    );
    let msgs = 200_000;
    let p = bench::tput(TputPeer::Pipe, msgs).map_err(|e| format!("pipe throughput: {e}"))?;
    println!(
        "  for scale: one pipe between two processes carries {:.2} M 8-byte messages/s here\n",
        msgs as f64 / p.as_secs_f64() / 1e6
    );

    println!("shmkit demo 2: Pool.map. A pool of 2 worker processes maps a function over a list;");
    println!("tasks and results travel through shared-memory rings.\n");
    let r = bench::demo::pool_map(2, 100_000).map_err(|e| format!("Pool.map: {e}"))?;
    println!(
        "  pool.map(square, [1, 2, 3]) = {:?}   (workers started in {:.1} ms)",
        r.squares,
        r.startup.as_secs_f64() * 1e3
    );
    println!(
        "  pool.map(square, 0..{}) in {:.1} ms: {:.0} ns per task, every result checked\n",
        r.tasks,
        r.elapsed.as_secs_f64() * 1e3,
        per_op(r.elapsed, r.tasks)
    );

    println!("shmkit demo 3: a parent and a forked child ping-pong an 8-byte counter, waiting with");
    println!("the adaptive futex helper.\n");
    let rounds = rounds.max(1);
    let d = bench::rtt(RttPeer::ShmkitAdaptive, rounds).map_err(|e| format!("shmkit ping-pong: {e}"))?;
    let ns = per_op(d, rounds);
    println!(
        "  shmkit      {rounds:>9} round trips in {:>8.3} s  {:>11.0} round trips/s  {:>8.2} µs each",
        d.as_secs_f64(),
        1e9 / ns,
        ns / 1e3
    );
    let pipe_rounds = (rounds / 10).max(1);
    let p = bench::rtt(RttPeer::Pipe, pipe_rounds).map_err(|e| format!("pipe ping-pong: {e}"))?;
    let pns = per_op(p, pipe_rounds);
    println!(
        "  pipe        {pipe_rounds:>9} round trips in {:>8.3} s  {:>11.0} round trips/s  {:>8.2} µs each",
        p.as_secs_f64(),
        1e9 / pns,
        pns / 1e3
    );
    println!("\n  shmkit is {:.1}x faster than a pipe here.", pns / ns);
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over `runs` calls of `f`, which returns one figure or an error naming the peer.
fn sample(runs: usize, name: &str, mut f: impl FnMut() -> std::io::Result<f64>) -> Result<f64, String> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        samples.push(f().map_err(|e| format!("{name}: {e}"))?);
    }
    Ok(median(samples))
}

/// The figure measured for `peer` in `rows` (NaN if it is missing).
fn of<P: PartialEq + Copy>(rows: &[(P, f64)], peer: P) -> f64 {
    rows.iter().find(|(p, _)| *p == peer).map_or(f64::NAN, |&(_, v)| v)
}

/// Prints one row of a table whose last column says how many times faster than the pipe a
/// row is (`speedup`, higher is better).
fn row(name: &str, value: f64, decimals: usize, speedup: f64) {
    println!("{name:<32} {value:>14.decimals$} {speedup:>9.2}x");
}

fn run_bench(quick: bool) -> Result<(), String> {
    let (rtt_iters, tput_msgs, runs) = if quick { (20_000, 200_000, 3) } else { (200_000, 2_000_000, 5) };
    let (bulk_msgs, idle_runs) = if quick { (5_000, 1) } else { (20_000, 3) };
    // The 1-minute load average: other work on the machine skews every figure.
    let load = std::fs::read_to_string("/proc/loadavg").ok();
    let load = load.as_deref().and_then(|s| s.split_whitespace().next()).unwrap_or("?");
    println!("shmkit bench ({} cpus, load average {load}, median of {runs} runs)\n", bench::available_cpus());
    println!("{:<32} {:>14} {:>10}", "rtt_8B (round trip)", "ns/round trip", "vs shmkit");
    let mut base = None;
    let mut rtt_ns = Vec::new();
    for peer in RttPeer::ALL {
        let iters = if matches!(peer, RttPeer::Pipe | RttPeer::Socketpair | RttPeer::FutexAlwaysSleep) {
            rtt_iters / 4
        } else {
            rtt_iters
        };
        let ns = sample(runs, peer.name(), || bench::rtt(peer, iters).map(|d| per_op(d, iters)))?;
        let b = *base.get_or_insert(ns);
        println!("{:<32} {:>14.1} {:>9.2}x", peer.name(), ns, ns / b);
        rtt_ns.push((peer, ns));
    }
    let rtt_of = |p: RttPeer| rtt_ns.iter().find(|(q, _)| *q == p).map_or(f64::NAN, |&(_, ns)| ns);

    println!("\n{:<32} {:>14} {:>10}", "tput_8B (one way)", "M msg/s", "vs pipe");
    let mut rates = Vec::new();
    for peer in TputPeer::ALL {
        let fast = matches!(
            peer,
            TputPeer::HandSpinRing | TputPeer::ShmkitSpsc | TputPeer::ShmkitSpscBatch | TputPeer::ShmkitMpmc
        );
        let msgs = if fast { tput_msgs * 10 } else { tput_msgs };
        let rate = sample(runs, peer.name(), || {
            bench::tput(peer, msgs).map(|d| msgs as f64 / d.as_secs_f64() / 1e6)
        })?;
        rates.push((peer.name(), rate));
    }
    let mq_msgs = tput_msgs / 4;
    let mq = match bench::queue_peers::posix_mq_available() {
        Ok(()) => Some(sample(runs, "posix_mq", || {
            bench::posix_mq_tput(mq_msgs).map(|d| mq_msgs as f64 / d.as_secs_f64() / 1e6)
        })?),
        Err(e) => {
            println!("(posix_mq skipped: no POSIX message queue here: {e})");
            None
        }
    };
    rates.extend(mq.map(|r| ("posix_mq", r)));
    let pipe_rate = rates.iter().find(|(n, _)| *n == TputPeer::Pipe.name()).map_or(f64::NAN, |&(_, r)| r);
    for (name, rate) in rates {
        row(name, rate, 2, rate / pipe_rate);
    }

    println!("\n{:<32} {:>14} {:>10}", "rtt_8B over two Queue<u64>", "ns/round trip", "vs pipe");
    let q = sample(runs, "shmkit_queue", || bench::rtt_queue(rtt_iters).map(|d| per_op(d, rtt_iters)))?;
    let pipe_ns = rtt_of(RttPeer::Pipe);
    for (name, ns) in [("shmkit_queue", q), ("pipe", pipe_ns), ("spin", rtt_of(RttPeer::Spin))] {
        row(name, ns, 1, pipe_ns / ns);
    }

    println!(
        "\n{:<32} {:>14} {:>10}",
        format!("oversubscribed ({}P+1C, 2 cpus)", bench::queue_peers::OVERSUB_PRODUCERS),
        "M msg/s",
        "vs pipe"
    );
    let mut over = Vec::new();
    for peer in OversubPeer::ALL {
        let r = sample(runs, peer.name(), || {
            bench::oversubscribed(peer, tput_msgs).map(|d| tput_msgs as f64 / d.as_secs_f64() / 1e6)
        })?;
        over.push((peer, r));
    }
    let over_pipe = over.iter().find(|(p, _)| *p == OversubPeer::Pipe).map_or(f64::NAN, |&(_, r)| r);
    for (peer, r) in over {
        row(peer.name(), r, 2, r / over_pipe);
    }

    println!("\n{:<32} {:>14} {:>10} {:>10}", "bulk_64KiB (one way)", "GiB/s", "vs pipe", "µs/msg");
    let mut bulk = Vec::new();
    for peer in BulkPeer::ALL {
        let secs = sample(runs, peer.name(), || bench::bulk(peer, bulk_msgs).map(|d| d.as_secs_f64()))?;
        bulk.push((peer, bulk_msgs as f64 * bench::BULK_BYTES as f64 / secs / (1u64 << 30) as f64));
    }
    let bulk_pipe = bulk.iter().find(|(p, _)| *p == BulkPeer::Pipe).map_or(f64::NAN, |&(_, r)| r);
    for (peer, gib) in bulk {
        let us = bench::BULK_BYTES as f64 / (gib * (1u64 << 30) as f64) * 1e6;
        println!("{:<32} {:>14.2} {:>9.2}x {:>10.2}", peer.name(), gib, gib / bulk_pipe, us);
    }

    println!(
        "\n{:<32} {:>14} {:>10} {:>12}",
        "pipe_tput_8B (Pipe, one way)", "M msg/s", "vs os_pipe", "vs sockpair"
    );
    let mut ptput = Vec::new();
    for peer in PipeTputPeer::ALL {
        let msgs = if peer == PipeTputPeer::ShmkitPipe { tput_msgs * 10 } else { tput_msgs };
        let rate = sample(runs, peer.name(), || {
            bench::pipe_tput(peer, msgs).map(|d| msgs as f64 / d.as_secs_f64() / 1e6)
        })?;
        ptput.push((peer, rate));
    }
    let (os, sp) = (of(&ptput, PipeTputPeer::OsPipe), of(&ptput, PipeTputPeer::Socketpair));
    for (peer, rate) in ptput {
        println!("{:<32} {:>14.2} {:>9.2}x {:>11.2}x", peer.name(), rate, rate / os, rate / sp);
    }

    println!("\n{:<32} {:>14} {:>10}", "pipe_rtt (Pipe, ping-pong)", "ns/round trip", "vs os_pipe");
    let mut prtt = Vec::new();
    for peer in PipeRttPeer::ALL {
        let iters = if peer == PipeRttPeer::OsPipe { rtt_iters / 4 } else { rtt_iters };
        let ns = sample(runs, peer.name(), || bench::pipe_rtt(peer, iters).map(|d| per_op(d, iters)))?;
        prtt.push((peer.name(), ns));
    }
    // For scale: the round trip over two Queue<u64>, from the table above.
    prtt.push(("two Queue<u64> (above)", q));
    let os_rtt = prtt.iter().find(|(n, _)| *n == PipeRttPeer::OsPipe.name()).map_or(f64::NAN, |&(_, ns)| ns);
    for (name, ns) in prtt {
        row(name, ns, 1, os_rtt / ns);
    }

    println!(
        "\n{:<32} {:>14} {:>10} {:>10}",
        "pipe_bulk_64KiB (Pipe, one way)", "GiB/s", "vs os_pipe", "µs/msg"
    );
    let mut pbulk = Vec::new();
    for peer in PipeBulkPeer::ALL {
        let secs = sample(runs, peer.name(), || bench::pipe_bulk(peer, bulk_msgs).map(|d| d.as_secs_f64()))?;
        pbulk.push((peer, bulk_msgs as f64 * bench::BULK_BYTES as f64 / secs / (1u64 << 30) as f64));
    }
    let os_bulk = of(&pbulk, PipeBulkPeer::OsPipe);
    for (peer, gib) in pbulk {
        let us = bench::BULK_BYTES as f64 / (gib * (1u64 << 30) as f64) * 1e6;
        println!("{:<32} {:>14.2} {:>9.2}x {:>10.2}", peer.name(), gib, gib / os_bulk, us);
    }

    println!("\n{:<32} {:>14} {:>10}", "value_incr_2proc (2 processes)", "ns/increment", "vs pthread");
    let mut incr = Vec::new();
    for peer in ValuePeer::ALL {
        // Increments by both processes together: ns per increment of the shared counter.
        let ns = sample(runs, peer.name(), || {
            bench::value_incr_2proc(peer, tput_msgs).map(|d| per_op(d, tput_msgs))
        })?;
        incr.push((peer, ns));
    }
    let pthread = of(&incr, ValuePeer::PthreadLocked);
    for (peer, ns) in incr {
        row(peer.name(), ns, 1, pthread / ns);
    }

    println!("\n{:<32} {:>14} {:>10}", "idle_cpu (child blocked 1 s)", "µs CPU", "vs pipe");
    let mut idle = Vec::new();
    for peer in IdlePeer::ALL {
        let us = sample(idle_runs, peer.name(), || {
            bench::idle_cpu(peer, Duration::from_secs(1)).map(|d| d.as_secs_f64() * 1e6)
        })?;
        idle.push((peer, us));
    }
    let idle_pipe = idle.iter().find(|(p, _)| *p == IdlePeer::Pipe).map_or(f64::NAN, |&(_, u)| u);
    for (peer, us) in idle {
        // Here the ratio is CPU used relative to the pipe's: lower is better.
        println!("{:<32} {:>14.1} {:>9.2}x", peer.name(), us, us / idle_pipe);
    }
    println!(
        "\nvs shmkit: time relative to shmkit (lower is faster). vs pipe, vs os_pipe, vs sockpair (socketpair),\n\
         vs pthread: times faster than that peer (higher is better), except idle_cpu: CPU used relative\n\
         to a pipe reader (lower is better). value_incr_2proc: wall time / increments made by both\n\
         processes together."
    );
    Ok(())
}

fn ls() -> Result<(), String> {
    let segs = shm::list().map_err(|e| format!("reading {}: {e}", shm::SHM_DIR))?;
    println!("{:<40} {:<10} {:>12} {:>8} {:<8} {:<10}", "NAME", "KIND", "SIZE", "PID", "CREATOR", "FLAGS");
    for s in segs {
        match &s.header {
            Ok(h) => println!(
                "{:<40} {:<10} {:>12} {:>8} {:<8} {:<10}",
                s.name,
                h.kind().name(),
                s.size,
                h.creator_pid,
                liveness(s.creator),
                if h.is_persistent() { "persistent" } else { "-" }
            ),
            Err(e) => println!("{:<40} {:<10} {:>12} {:>8} {:<8} {e}", s.name, "?", s.size, "?", "?"),
        }
    }
    Ok(())
}

fn inspect(name: &str) -> Result<(), String> {
    let h: Header = shm::read_header(name).map_err(|e| format!("{name}: {e}"))?;
    println!("name:           {name}");
    println!("kind:           {} ({})", h.kind().name(), h.kind);
    println!("kind tag:       {:#018x}", h.kind_tag);
    println!("layout version: {}", h.version);
    println!("backing:        {:?}", h.backing());
    println!("total size:     {} bytes", h.total_size);
    println!("payload:        {} bytes", h.payload_len());
    println!("creator:        pid {} ({})", h.creator_pid, liveness(h.creator().liveness()));
    println!("created:        {} ns after the Unix epoch", h.created_ns);
    println!("persistent:     {}", h.is_persistent());
    Ok(())
}

fn clean(dry_run: bool, all: bool, prefix: Option<&str>) -> Result<(), String> {
    let segs = shm::list().map_err(|e| format!("reading {}: {e}", shm::SHM_DIR))?;
    let mut removed = 0;
    for s in segs {
        if prefix.is_some_and(|p| !s.name.starts_with(p.trim_start_matches('/'))) {
            continue;
        }
        let h = match &s.header {
            Ok(h) => h,
            // A header that is not published yet belongs to a creator mid-initialisation,
            // or to one that died doing it; without a creator pid we cannot tell, so keep it.
            Err(ShmOpenError::NotReady) | Err(_) => continue,
        };
        if s.creator != Liveness::Dead || (h.is_persistent() && !all) {
            continue;
        }
        if dry_run {
            println!("would remove {} (creator pid {} is dead)", s.name, h.creator_pid);
        } else if shm::read_header(&s.name).ok().as_ref() != Some(h) {
            // Unlinking goes by name: re-read the header just before, so a segment re-created
            // under the same name since the listing is not removed (a narrow race remains).
            eprintln!("skipped {}: it changed since it was listed", s.name);
            continue;
        } else {
            match shm::Segment::remove(&s.name) {
                Ok(()) | Err(ShmOpenError::DoesNotExist(_)) => {
                    println!("removed {} (creator pid {} is dead)", s.name, h.creator_pid);
                }
                Err(e) => {
                    eprintln!("could not remove {}: {e}", s.name);
                    continue;
                }
            }
        }
        removed += 1;
    }
    println!("{removed} segment(s) {}", if dry_run { "to remove" } else { "removed" });
    Ok(())
}

fn main() -> ExitCode {
    // A process started by the spawn start method runs its target here and exits.
    shmkit::process::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { dishes, rounds } => demo(dishes, rounds),
        Command::Bench { quick } => run_bench(quick),
        Command::Ls => ls(),
        Command::Inspect { name } => inspect(&name),
        Command::Clean { dry_run, all, prefix } => clean(dry_run, all, prefix.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmkit: {e}");
            ExitCode::FAILURE
        }
    }
}
