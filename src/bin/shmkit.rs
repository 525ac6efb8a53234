//! The `shmkit` command: demo, bench, ls, inspect, clean.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shmkit::bench::{self, RttPeer, TputPeer};
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
    /// Two processes ping-pong through a shared-memory segment; prints round trips per second.
    Demo {
        /// Round trips to run.
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

fn demo(rounds: u64) -> Result<(), String> {
    println!("shmkit demo: a parent and a forked child ping-pong an 8-byte counter through an");
    println!("anonymous shared-memory segment, waiting with the adaptive futex helper.\n");
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

fn run_bench(quick: bool) -> Result<(), String> {
    let (rtt_iters, tput_msgs, runs) = if quick { (20_000, 200_000, 3) } else { (200_000, 2_000_000, 5) };
    println!("shmkit bench ({} cpus, median of {runs} runs)\n", bench::available_cpus());
    println!("{:<32} {:>14} {:>10}", "rtt_8B (round trip)", "ns/round trip", "vs shmkit");
    let mut base = None;
    for peer in RttPeer::ALL {
        let iters = if matches!(peer, RttPeer::Pipe | RttPeer::Socketpair | RttPeer::FutexAlwaysSleep) {
            rtt_iters / 4
        } else {
            rtt_iters
        };
        let mut samples = Vec::new();
        for _ in 0..runs {
            let d = bench::rtt(peer, iters).map_err(|e| format!("{}: {e}", peer.name()))?;
            samples.push(per_op(d, iters));
        }
        let ns = median(samples);
        let b = *base.get_or_insert(ns);
        println!("{:<32} {:>14.1} {:>9.2}x", peer.name(), ns, ns / b);
    }
    println!("\n{:<32} {:>14} {:>10}", "tput_8B (one way)", "M msg/s", "");
    for peer in TputPeer::ALL {
        let fast = matches!(
            peer,
            TputPeer::HandSpinRing | TputPeer::ShmkitSpsc | TputPeer::ShmkitSpscBatch | TputPeer::ShmkitMpmc
        );
        let msgs = if fast { tput_msgs * 10 } else { tput_msgs };
        let mut samples = Vec::new();
        for _ in 0..runs {
            let d = bench::tput(peer, msgs).map_err(|e| format!("{}: {e}", peer.name()))?;
            samples.push(msgs as f64 / d.as_secs_f64() / 1e6);
        }
        println!("{:<32} {:>14.2}", peer.name(), median(samples));
    }
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { rounds } => demo(rounds),
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
