//! Runs the manager examples as a user would: `manager_dict` prints Python's output; a
//! `distributed_master` and two `distributed_worker`s over TCP on loopback share out every
//! task; a worker with the wrong key fails with a clear message; a worker waits for a
//! master that starts after it; a public address needs `--public` and a key of one's own.
//!
//! `cargo test` builds the examples, but `cargo test --test examples_manager` does not, so
//! each test process first runs `cargo build --example ...` with this test binary's target
//! directory, profile and features (a no-op when they are fresh). Every child process has a
//! deadline and is killed if the test fails early.
#![cfg(feature = "manager")]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use common::watchdog;

const EXAMPLES: [&str; 3] = ["manager_dict", "distributed_master", "distributed_worker"];
const KEY: &str = "examples-manager-test-key";

/// Where this test binary's build put the examples, after building them.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // <target>/[<triple>/]<profile>/deps/<this test binary>
        let exe = std::env::current_exe().expect("current test binary");
        let profile_dir = exe.parent().and_then(Path::parent).expect("a profile directory").to_path_buf();
        let profile = profile_dir.file_name().and_then(|s| s.to_str()).expect("profile name").to_string();
        let above = profile_dir.parent().expect("a target directory");
        let (target_dir, triple) = if above.join("CACHEDIR.TAG").exists() {
            (above.to_path_buf(), None)
        } else {
            let root = above.parent().expect("a target directory");
            (root.to_path_buf(), above.file_name().and_then(|s| s.to_str()).map(str::to_string))
        };
        let features: Vec<&str> = [
            (cfg!(feature = "cli"), "cli"),
            (cfg!(feature = "bench"), "bench"),
            (cfg!(feature = "serde"), "serde"),
            (cfg!(feature = "manager"), "manager"),
        ]
        .into_iter()
        .filter_map(|(on, f)| on.then_some(f))
        .collect();

        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build")
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .args(["--no-default-features", "--features", &features.join(",")]);
        match profile.as_str() {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        if let Some(t) = &triple {
            cmd.args(["--target", t]);
        }
        for e in EXAMPLES {
            cmd.args(["--example", e]);
        }
        let out = cmd.output().expect("run cargo build for the examples");
        assert!(
            out.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("examples")
    })
}

fn example(name: &str) -> Command {
    let mut cmd = Command::new(examples_dir().join(name));
    cmd.env("SHMKIT_AUTHKEY", KEY);
    cmd
}

/// A running example: its stdout line by line as it comes, its stderr at the end. Killed on
/// drop if still running, so a failing test leaves nothing behind.
struct Running {
    what: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Running {
    fn spawn(what: &str, mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (etx, stderr) = mpsc::channel();
        let mut err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            let _ = etx.send(s);
        });
        Running { what: what.to_string(), child, lines, stderr, seen: Vec::new() }
    }

    /// The first stdout line starting with `prefix`, waiting at most `secs`.
    fn wait_line(&mut self, prefix: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no line {prefix:?} within {secs} s ({e:?}); so far: {:#?}",
                    self.what, self.seen
                ),
            }
        }
    }

    /// Waits at most `secs` for the process to exit (killing it and failing otherwise).
    fn finish(mut self, secs: u64) -> Finished {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not finish within {secs} s; its output: {:#?}", self.what, self.seen);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The pipes close once every process holding them is gone; do not wait forever for it.
        let drain = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self.lines.recv_timeout(drain.saturating_duration_since(Instant::now())) {
            self.seen.push(line);
        }
        let stderr =
            self.stderr.recv_timeout(drain.saturating_duration_since(Instant::now())).unwrap_or_default();
        let mut stdout = self.seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        Finished { status, stdout, stderr }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts a master on a port the kernel picks; returns it and the address it serves.
fn start_master(tasks: u32, timeout_secs: u64) -> (Running, String) {
    let mut cmd = example("distributed_master");
    cmd.args(["127.0.0.1:0", "--tasks", &tasks.to_string(), "--timeout", &timeout_secs.to_string()]);
    let mut master = Running::spawn("distributed_master", cmd);
    let line = master.wait_line("master: serving on ", 30);
    let address = line["master: serving on ".len()..].split(' ').next().expect("an address").to_string();
    (master, address)
}

fn worker(name: &str, address: &str, extra: &[&str]) -> Command {
    let mut cmd = example("distributed_worker");
    cmd.args([address, "--name", name]).args(extra);
    cmd
}

/// The task ids in the master's `result N: ...` lines.
fn result_ids(master_stdout: &str) -> Vec<u32> {
    master_stdout
        .lines()
        .filter_map(|l| l.strip_prefix("result "))
        .map(|l| l.split(':').next().unwrap().trim().parse().expect("a task id"))
        .collect()
}

/// K in a worker's `did K tasks` line.
fn tasks_done(worker_stdout: &str) -> usize {
    let line = worker_stdout.lines().find(|l| l.contains(": did ")).expect("a summary line");
    line.split(": did ").nth(1).unwrap().split(' ').next().unwrap().parse().expect("a count")
}

#[test]
fn manager_dict_prints_pythons_output() {
    let _w = watchdog(300);
    let run = Running::spawn("manager_dict", example("manager_dict")).finish(60);
    assert!(run.status.success(), "manager_dict failed: {:?}\n{}", run.status, run.stderr);
    assert_eq!(
        run.stdout, "{1: '1', '2': 2, 0.25: None}\n[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]\n",
        "stderr: {}",
        run.stderr
    );
}

#[test]
fn master_and_two_workers_share_every_task() {
    let _w = watchdog(300);
    let (master, address) = start_master(40, 60);
    // 50 ms of simulated work per task: one worker alone would need 2 s, so both get some.
    let w1 = Running::spawn("worker w1", worker("w1", &address, &["--idle", "30", "--delay", "50"]));
    let w2 = Running::spawn("worker w2", worker("w2", &address, &["--idle", "30", "--delay", "50"]));

    let m = master.finish(90);
    assert!(m.status.success(), "master failed: {:?}\n{}\n{}", m.status, m.stdout, m.stderr);
    assert!(m.stdout.contains("master: 40/40 results in "), "{}", m.stdout);
    assert!(m.stdout.contains(" from 2 workers (w1 "), "{}", m.stdout);
    assert!(m.stdout.contains("; 0 wrong"), "{}", m.stdout);
    assert!(m.stdout.contains("master: server shut down"), "{}", m.stdout);
    let ids: BTreeSet<u32> = result_ids(&m.stdout).into_iter().collect();
    assert_eq!(ids, (0..40).collect(), "{}", m.stdout);
    assert_eq!(result_ids(&m.stdout).len(), 40, "a result came twice:\n{}", m.stdout);

    // Each worker stops on its sentinel or, if it never got a task, on the shutdown.
    let mut total = 0;
    for w in [w1, w2] {
        let what = w.what.clone();
        let f = w.finish(30);
        assert!(f.status.success(), "{what} failed: {:?}\n{}\n{}", f.status, f.stdout, f.stderr);
        assert!(
            f.stdout.contains("stopping: got the stop sentinel")
                || f.stdout.contains("stopping: the master's server is gone"),
            "{what}:\n{}",
            f.stdout
        );
        let did = tasks_done(&f.stdout);
        assert!(did > 0, "{what} got no task:\n{}", f.stdout);
        total += did;
    }
    assert_eq!(total, 40);
}

#[test]
fn worker_with_a_wrong_key_fails_clearly() {
    let _w = watchdog(300);
    let (master, address) = start_master(1, 60);

    let mut bad = worker("intruder", &address, &["--wait", "5"]);
    bad.env("SHMKIT_AUTHKEY", "not-the-key");
    let f = Running::spawn("worker with a wrong key", bad).finish(30);
    assert!(!f.status.success(), "a wrong key was accepted:\n{}", f.stdout);
    assert!(f.stderr.contains("authentication failed"), "stderr: {}", f.stderr);
    assert!(f.stderr.contains("SHMKIT_AUTHKEY"), "stderr: {}", f.stderr);
    assert!(!f.stdout.contains("connected"), "{}", f.stdout);
    // At once: a wrong key is not retried like a master that is not up yet.
    assert!(!f.stderr.contains("retrying"), "a wrong key was retried: {}", f.stderr);

    // The server is unharmed: a worker with the right key finishes the job.
    let good = Running::spawn("worker", worker("good", &address, &["--idle", "30"])).finish(60);
    assert!(good.status.success(), "{}\n{}", good.stdout, good.stderr);
    let m = master.finish(60);
    assert!(m.status.success(), "{}\n{}", m.stdout, m.stderr);
    assert!(m.stdout.contains("master: 1/1 results"), "{}", m.stdout);
}

#[test]
fn worker_waits_for_a_master_started_after_it() {
    let _w = watchdog(300);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    let w = Running::spawn("worker", worker("early", &address, &["--wait", "30", "--idle", "30"]));
    std::thread::sleep(Duration::from_millis(700));
    let mut cmd = example("distributed_master");
    cmd.args([address.as_str(), "--tasks", "5", "--timeout", "60"]);
    let m = Running::spawn("distributed_master", cmd).finish(90);
    assert!(m.status.success(), "{}\n{}", m.stdout, m.stderr);
    assert!(m.stdout.contains("master: 5/5 results"), "{}", m.stdout);
    let f = w.finish(30);
    assert!(f.status.success(), "{}\n{}", f.stdout, f.stderr);
    // (Whether it had to retry depends on how fast it started; the next part does not.)
    assert_eq!(tasks_done(&f.stdout), 5);

    // With no master at all, the worker retries, then gives up (within `finish`'s limit).
    let f = Running::spawn("worker", worker("alone", &address, &["--wait", "1"])).finish(30);
    assert!(!f.status.success());
    assert!(f.stderr.contains("retrying"), "{}", f.stderr);
    assert!(f.stderr.contains("cannot connect"), "{}", f.stderr);
}

#[test]
fn public_address_needs_the_flag_and_a_key() {
    let _w = watchdog(300);
    let mut cmd = example("distributed_master");
    cmd.args(["0.0.0.0:0", "--tasks", "1"]);
    let f = Running::spawn("master on 0.0.0.0", cmd).finish(30);
    assert!(!f.status.success());
    assert!(f.stderr.contains("add --public"), "{}", f.stderr);

    let mut cmd = example("distributed_master");
    cmd.args(["0.0.0.0:0", "--public", "--tasks", "1"]).env_remove("SHMKIT_AUTHKEY");
    let f = Running::spawn("public master without a key", cmd).finish(30);
    assert!(!f.status.success());
    assert!(f.stderr.contains("set SHMKIT_AUTHKEY"), "{}", f.stderr);
}
