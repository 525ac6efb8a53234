//! Python's `multiprocessing` as a peer: the workloads of `python_peers.py` (queue
//! throughput, pipe round trip, an uncontended `Lock`, two processes incrementing a `Value`,
//! process start, `Pool.map`, `Pool.apply` and a `Manager().dict()` insert), run by `python3`
//! when it is on the `PATH`.
//!
//! Each run starts a fresh interpreter (`python3 -c SCRIPT WORKLOAD N [ARG]`, in a process
//! group of its own) and reads the one figure it prints; the interpreter's own start is not
//! timed. A run that takes over 120 s is killed with its whole group.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

const SCRIPT: &str = include_str!("python_peers.py");

/// How long one Python run may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The interpreter's version (`Ok("3.11.7")`), or why there is none; probed once (the probe
/// also checks that multiprocessing's locks and queues work here).
pub fn python_version() -> Result<String, String> {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| match run_script(&["version", "0"]) {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err("no python3 on the PATH".to_owned()),
            Err(e) => Err(format!("python3 cannot run the peers: {e}")),
        })
        .clone()
}

/// Runs `python_peers.py WORKLOAD ARGS...` and returns its figure.
///
/// # Errors
/// No interpreter, a failed or timed-out run, or output that is not one number.
pub fn python_run(args: &[&str]) -> io::Result<f64> {
    let out = run_script(args)?;
    out.trim().parse().map_err(|_| io::Error::other(format!("python printed {out:?}, not a number")))
}

/// Runs the script with `args` and returns its stdout.
fn run_script(args: &[&str]) -> io::Result<String> {
    let child = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so that a timeout kills Python's children too.
        .process_group(0)
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    // Waited for by a thread that drains both pipes meanwhile (a chatty stderr cannot block
    // the run); it returns at the end of the run, or at its kill.
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out?,
        Err(_) => {
            // SAFETY: signalling the process group we created; its leader is our child, not
            // reaped until the waiter returns, so the group id cannot have been reused.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = waiter.join();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("python3 {args:?} took over 120 s")));
        }
    };
    let _ = waiter.join();
    let status = out.status;
    if !status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("").to_owned();
        return Err(io::Error::other(format!("python3 {args:?} failed ({status}): {last}")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
