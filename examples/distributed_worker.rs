//! A worker of Python's distributed-processes pattern: connects to the master's manager
//! server (see `distributed_master.rs` for how to run the two), takes tasks from the queue
//! registered as `tasks`, puts results on `results`.
//!
//! ```python
//! m = QueueManager(address=('127.0.0.1', 50000), authkey=b'...'); m.connect()
//! tasks, results = m.get_task_queue(), m.get_result_queue()
//! while True:
//!     try: n = tasks.get(timeout=10)
//!     except queue.Empty: break
//!     if n is None: break
//!     time.sleep(1)
//!     results.put((n, steps(n)))
//! ```
//!
//! It retries the connection while the master is not up yet (at most `--wait` seconds),
//! fails at once on a wrong key, and stops on a stop sentinel, after `--idle` seconds
//! without a task, or when the master's server is gone (shut down or killed: `Disconnected`).
//!
//! Usage: `distributed_worker [ADDRESS] [--name NAME] [--wait SECS] [--idle SECS] [--delay MS]`
//! (defaults: `127.0.0.1:50000`, `HOST:PID`, 30 s, 10 s, no delay; `--delay` is simulated
//! work per task, the `time.sleep` of Python's version); the key is `SHMKIT_AUTHKEY`, as
//! for the master.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use shmkit::manager::{Client, Manager, ManagerError};

#[path = "distributed/shared.rs"]
mod shared;
use shared::{collatz_steps, Done, Task, DEMO_KEY, KEY_ENV};

struct Args {
    address: String,
    name: String,
    wait: Duration,
    idle: Duration,
    delay: Duration,
}

fn parse_args() -> Result<Args, String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "localhost".into());
    let mut args = Args {
        address: "127.0.0.1:50000".into(),
        name: format!("{}:{}", host.trim(), std::process::id()),
        wait: Duration::from_secs(30),
        idle: Duration::from_secs(10),
        delay: Duration::ZERO,
    };
    let secs = |flag: &str, v: Option<String>| -> Result<Duration, String> {
        let v = v.ok_or(format!("{flag} needs a value"))?;
        v.parse().map(Duration::from_secs).map_err(|e| format!("{flag}: {e}"))
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--name" => args.name = it.next().ok_or("--name needs a value")?,
            "--wait" => args.wait = secs("--wait", it.next())?,
            "--idle" => args.idle = secs("--idle", it.next())?,
            "--delay" => {
                let ms = it.next().ok_or("--delay needs a value")?;
                args.delay = Duration::from_millis(ms.parse().map_err(|e| format!("--delay: {e}"))?);
            }
            "-h" | "--help" => return Err(
                "usage: distributed_worker [ADDRESS] [--name NAME] [--wait SECS] [--idle SECS] [--delay MS]"
                    .into(),
            ),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => args.address = s.to_string(),
        }
    }
    Ok(args)
}

fn authkey() -> Vec<u8> {
    match std::env::var(KEY_ENV) {
        Ok(k) if !k.is_empty() => k.into_bytes(),
        _ => {
            eprintln!("warning: {KEY_ENV} is not set; using the demo key {DEMO_KEY:?}");
            DEMO_KEY.as_bytes().to_vec()
        }
    }
}

/// Connects, retrying while nobody listens there yet (or the server is momentarily full),
/// for at most `wait`. Any other error — a wrong key above all — is returned at once.
fn connect(address: &str, key: &[u8], wait: Duration) -> Result<Client, ManagerError> {
    let deadline = Instant::now() + wait;
    let mut announced = false;
    loop {
        match Manager::connect(address, key) {
            Err(e @ (ManagerError::Connect(..) | ManagerError::Busy | ManagerError::Disconnected))
                if Instant::now() < deadline =>
            {
                if !announced {
                    eprintln!("worker: {e}; retrying for up to {} s", wait.as_secs());
                    announced = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

fn run(args: &Args) -> Result<(), ManagerError> {
    let client = connect(&args.address, &authkey(), args.wait)?;
    println!("worker {}: connected to {}", args.name, client.address());
    let tasks = client.named("tasks").queue::<Task>()?;
    let results = client.named("results").queue::<Done>()?;
    let mut did = 0;
    let why = loop {
        match tasks.get_timeout(args.idle) {
            Ok(Task::Work { id, n }) => {
                let steps = collatz_steps(n);
                std::thread::sleep(args.delay);
                match results.put(Done { id, n, steps, worker: args.name.clone() }) {
                    Ok(()) => {}
                    Err(ManagerError::Disconnected) => break "the master's server is gone".to_string(),
                    Err(e) => return Err(e),
                }
                println!("worker {}: task {id}: collatz({n}) = {steps} steps", args.name);
                did += 1;
            }
            Ok(Task::Stop) => break "got the stop sentinel".to_string(),
            Err(ManagerError::Timeout) => break format!("no task for {} s", args.idle.as_secs()),
            Err(ManagerError::Disconnected) => break "the master's server is gone".to_string(),
            Err(e) => return Err(e),
        }
    };
    println!("worker {}: did {did} tasks; stopping: {why}", args.name);
    Ok(())
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
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ManagerError::AuthenticationFailed) => {
            eprintln!(
                "worker {}: authentication failed: the master at {} does not accept this key \
                 (is {KEY_ENV} the same as the master's?)",
                args.name, args.address
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("worker {}: {e}", args.name);
            ExitCode::FAILURE
        }
    }
}
