//! Python's `multiprocessing` as a peer: the workloads of `python_peers.py` (queue
//! throughput, pipe round trip, an uncontended `Lock`, two processes incrementing a `Value`,
//! process start, `Pool.map` and `Pool.apply`), run by `python3` when it is on the `PATH`.
//!
//! Each run starts a fresh interpreter (`python3 -c SCRIPT WORKLOAD N [ARG]`, in a process
//! group of its own) and reads the one figure it prints; the interpreter's own start is not
//! timed. A run that takes over 120 s is killed with its whole group.

use std::io::{self, Read};
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
    let mut child = Command::new("python3")
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
    // Both pipes are drained while the run goes on (a chatty stderr cannot block it), by a
    // thread that ends when every writer is gone: at the end of the run, or at its kill.
    let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let err_thread = std::thread::spawn(move || {
            if let Some(err) = err.as_mut() {
                let _ = err.read_to_end(&mut e);
            }
            e
        });
        if let Some(out) = out.as_mut() {
            let _ = out.read_to_end(&mut o);
        }
        let e = err_thread.join().unwrap_or_default();
        let _ = tx.send((o, e));
    });
    let (stdout, stderr) = match rx.recv_timeout(TIMEOUT) {
        Ok(pipes) => pipes,
        Err(_) => {
            // SAFETY: signalling the process group we created; its leader is our unreaped
            // child, so the group id cannot have been reused.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            let _ = reader.join();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("python3 {args:?} took over 120 s")));
        }
    };
    let _ = reader.join();
    let status = child.wait()?;
    if !status.success() {
        let err = String::from_utf8_lossy(&stderr);
        let last = err.lines().last().unwrap_or("").to_owned();
        return Err(io::Error::other(format!("python3 {args:?} failed ({status}): {last}")));
    }
    Ok(String::from_utf8_lossy(&stdout).trim().to_owned())
}
