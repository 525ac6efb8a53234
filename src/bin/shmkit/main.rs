//! The `shmkit` command: demo, bench, ls, inspect, clean.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod bench_cmd;
mod plot;

use bench_cmd::BenchArgs;
use shmkit::bench::{self, RttPeer, TputPeer};
use shmkit::shm::{self, ShmOpenError};
use shmkit::util::proc::Liveness;

#[derive(Parser)]
#[command(name = "shmkit", version, about = "Shared-memory multiprocessing toolkit")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cooks and eaters: 3 producer processes and 2 consumer processes on a JoinableQueue;
    /// a Pool.map of 100,000 checked tasks on 2 worker processes; then an 8-byte ping-pong;
    /// prints throughput and latency next to a pipe's.
    Demo {
        /// Dishes each cook puts on the queue.
        #[arg(long, default_value_t = 1_000_000)]
        dishes: u32,
        /// Ping-pong round trips.
        #[arg(long, default_value_t = 200_000)]
        rounds: u64,
    },
    /// Runs the headline comparisons (throughput, round trip, locks, bulk, oversubscribed,
    /// values, idle CPU, process start) against pipes, sockets, POSIX mq, ipc-channel,
    /// crossbeam, pthread mutexes, raw_sync and spinning; prints each group's table with
    /// every figure (the median of several runs), its range and its ratio to the reference.
    Bench(BenchArgs),
    /// Lists shmkit segments in /dev/shm: name, kind, size, creator and whether it is alive.
    Ls,
    /// Shows what one named segment holds: kind, size, depth, owners and if alive, waiters, lost slots.
    Inspect {
        /// The segment's name (with or without the leading '/').
        name: String,
    },
    /// Unlinks segments whose creator is dead (persistent ones only with --all), and removes
    /// the socket directories of Manager servers whose starter is gone.
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
                s.creator,
                if h.is_persistent() { "persistent" } else { "-" }
            ),
            Err(e) => println!("{:<40} {:<10} {:>12} {:>8} {:<8} {e}", s.name, "?", s.size, "?", "?"),
        }
    }
    Ok(())
}

fn inspect(name: &str) -> Result<(), String> {
    let report = shmkit::inspect::inspect(name).map_err(|e| e.to_string())?;
    print!("{report}");
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
    #[cfg(feature = "manager")]
    if prefix.is_none() {
        // Socket directories of Manager::start servers whose starter is gone.
        let dirs =
            shmkit::manager::stale_socket_dirs(!dry_run).map_err(|e| format!("manager sockets: {e}"))?;
        for d in &dirs {
            println!("{} {}", if dry_run { "would remove" } else { "removed" }, d.display());
        }
        println!("{} manager socket dir(s) {}", dirs.len(), if dry_run { "to remove" } else { "removed" });
    }
    Ok(())
}

fn main() -> ExitCode {
    // A process started by the spawn start method runs its target here and exits.
    shmkit::process::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { dishes, rounds } => demo(dishes, rounds),
        Command::Bench(args) => bench_cmd::run(&args),
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
