//! Helpers for the process tests: a watchdog, unique names, and re-running this test binary
//! as a separate (exec'd, unrelated) process that plays a role.
#![allow(dead_code)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Aborts the whole test process if the guard is still alive after `secs`: a hang becomes a
/// loud failure under plain `cargo test` as well as under nextest.
pub struct Watchdog(Option<mpsc::Sender<()>>);

pub fn watchdog(secs: u64) -> Watchdog {
    let (tx, rx) = mpsc::channel::<()>();
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(secs)) {
            eprintln!("watchdog: test {name} still running after {secs} s; aborting");
            std::process::abort();
        }
    });
    Watchdog(Some(tx))
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A segment name unique to this process and call.
pub fn unique_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("shmkit-test-{}-{}-{}", std::process::id(), tag, N.fetch_add(1, Ordering::Relaxed))
}

pub fn shm_path(name: &str) -> String {
    format!("/dev/shm/{}", name.trim_start_matches('/'))
}

/// The environment variable that selects a role in a re-executed test binary.
pub const ROLE_ENV: &str = "SHMKIT_TEST_ROLE";

/// A command that re-runs this test binary as another process, running only the ignored
/// test `entry` with `role` and `args` in the environment.
pub fn role_command(entry: &str, role: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current test binary"));
    cmd.args(["--exact", entry, "--ignored", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env("SHMKIT_TEST_ARGS", args.join("\u{1f}"));
    cmd
}

/// In a role process: (role, args), or `None` when run as a normal test.
pub fn role() -> Option<(String, Vec<String>)> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let args = std::env::var("SHMKIT_TEST_ARGS").unwrap_or_default();
    let args = if args.is_empty() { Vec::new() } else { args.split('\u{1f}').map(str::to_owned).collect() };
    Some((role, args))
}

/// Runs the `shmkit` CLI built for these tests.
pub fn shmkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shmkit")).args(args).output().expect("run shmkit")
}

/// Runs `cmd` to completion within `secs`, killing it on timeout (then panicking).
pub fn run_with_timeout(mut cmd: Command, secs: u64) -> std::process::ExitStatus {
    let mut child = cmd.spawn().expect("spawn role process");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("role process did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
