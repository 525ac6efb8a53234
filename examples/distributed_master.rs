//! The master of Python's distributed-processes pattern: a manager server with a task queue
//! and a result queue registered by name; workers on this or other hosts connect with the
//! address and the key, take tasks and put results; the master collects them.
//!
//! ```python
//! class QueueManager(BaseManager): pass
//! QueueManager.register('get_task_queue', callable=lambda: task_queue)
//! QueueManager.register('get_result_queue', callable=lambda: result_queue)
//! m = QueueManager(address=('127.0.0.1', 50000), authkey=b'...'); m.start()
//! tasks, results = m.get_task_queue(), m.get_result_queue()
//! for n in numbers: tasks.put(n)
//! for _ in numbers: print(results.get(timeout=60))
//! m.shutdown()
//! ```
//!
//! Here every side calls `client.named("tasks").queue()`: the first call makes the queue,
//! the others find it.
//!
//! # Two terminals, one host
//!
//! ```text
//! terminal 1:  cargo run --example distributed_master -- 127.0.0.1:50000 --tasks 20
//! terminal 2:  cargo run --example distributed_worker -- 127.0.0.1:50000
//! ```
//!
//! Start as many workers as you like, before or after the master (a worker retries the
//! connection for a while). The master prints each result, a summary, sends each worker it
//! heard from a stop sentinel and shuts the server down; a worker still waiting then gets
//! `Disconnected` and ends too.
//!
//! # Two hosts
//!
//! The key authenticates both ends (HMAC-SHA256); it does not encrypt. Use a trusted network
//! or a tunnel, and a key of your own:
//!
//! ```text
//! host A:  export SHMKIT_AUTHKEY=$(head -c 24 /dev/urandom | base64)
//!          cargo run --example distributed_master -- 0.0.0.0:50000 --public
//! host B:  SHMKIT_AUTHKEY=<the same key> cargo run --example distributed_worker -- hostA:50000
//! ```
//!
//! A non-loopback address needs `--public` (the server refuses it otherwise), and `--public`
//! needs `SHMKIT_AUTHKEY` (the demo key is printed right here, so it protects nothing).
//!
//! Usage: `distributed_master [ADDRESS] [--public] [--tasks N] [--timeout SECS]`
//! (defaults: `127.0.0.1:50000`, 20 tasks, 60 s to collect the results; port 0 lets the
//! kernel pick one, and the master prints which).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmkit::manager::{Manager, ManagerError};

#[path = "distributed/shared.rs"]
mod shared;
use shared::{collatz_steps, Done, Task, DEMO_KEY, KEY_ENV};

struct Args {
    address: String,
    public: bool,
    tasks: u32,
    timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        address: "127.0.0.1:50000".into(),
        public: false,
        tasks: 20,
        timeout: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--public" => args.public = true,
            "--tasks" => args.tasks = value("--tasks")?.parse().map_err(|e| format!("--tasks: {e}"))?,
            "--timeout" => {
                let secs: u64 = value("--timeout")?.parse().map_err(|e| format!("--timeout: {e}"))?;
                args.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: distributed_master [ADDRESS] [--public] [--tasks N] [--timeout SECS]".into()
                )
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => args.address = s.to_string(),
        }
    }
    Ok(args)
}

fn authkey(public: bool) -> Result<Vec<u8>, String> {
    match std::env::var(KEY_ENV) {
        Ok(k) if !k.is_empty() => Ok(k.into_bytes()),
        _ if public => Err(format!("--public serves other hosts: set {KEY_ENV} to a key of your own")),
        _ => {
            eprintln!(
                "warning: {KEY_ENV} is not set; using the demo key {DEMO_KEY:?}, which anyone can read here"
            );
            Ok(DEMO_KEY.as_bytes().to_vec())
        }
    }
}

fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let key = authkey(args.public)?;
    // The server runs in a child process; dropping `mgr` (or `shutdown`) stops it.
    let mgr = match Manager::builder()
        .address(args.address.as_str())
        .authkey(&key)
        .allow_remote(args.public)
        .start()
    {
        Err(ManagerError::NotLoopback(ip)) => {
            return Err(format!("{ip} is not a loopback address: add --public to serve other hosts").into())
        }
        r => r?,
    };
    println!("master: serving on {} (server pid {})", mgr.address(), mgr.pid());

    let tasks = mgr.named("tasks").queue::<Task>()?;
    let results = mgr.named("results").queue::<Done>()?;
    for id in 0..args.tasks {
        let n = 1_000_000 + u64::from(id) * 7_919;
        tasks.put(Task::Work { id, n })?;
    }
    println!("master: put {} tasks; waiting up to {} s for the results", args.tasks, args.timeout.as_secs());

    let start = Instant::now();
    let deadline = start + args.timeout;
    let mut per_worker: BTreeMap<String, u32> = BTreeMap::new();
    let mut wrong = 0;
    let mut got = 0;
    while got < args.tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        let done = match results.get_timeout(left) {
            Ok(d) => d,
            Err(ManagerError::Timeout) => break,
            Err(e) => return Err(e.into()),
        };
        got += 1;
        let ok = done.steps == collatz_steps(done.n);
        if !ok {
            wrong += 1;
        }
        println!(
            "result {:>3}: collatz({}) = {} steps, by {}{}",
            done.id,
            done.n,
            done.steps,
            done.worker,
            if ok { "" } else { "  WRONG" }
        );
        *per_worker.entry(done.worker).or_default() += 1;
    }

    let by: Vec<String> = per_worker.iter().map(|(w, n)| format!("{w} {n}")).collect();
    println!(
        "master: {got}/{} results in {:.2} s from {} worker{} ({}); {wrong} wrong",
        args.tasks,
        start.elapsed().as_secs_f64(),
        per_worker.len(),
        if per_worker.len() == 1 { "" } else { "s" },
        by.join(", ")
    );

    // One stop sentinel per worker heard from; give them a moment to take theirs. Workers
    // still waiting after the shutdown get `Disconnected`.
    for _ in 0..per_worker.len() {
        tasks.put(Task::Stop)?;
    }
    let grace = Instant::now() + Duration::from_secs(2);
    while tasks.len()? > 0 && Instant::now() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    mgr.shutdown()?;
    println!("master: server shut down");
    Ok(got == args.tasks && wrong == 0)
}

fn main() -> ExitCode {
    shmkit::process::init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("master: some results are missing or wrong");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("master: {e}");
            ExitCode::FAILURE
        }
    }
}
