//! Python's `multiprocessing` as a peer: the workloads of `python_peers.py` (queue
//! throughput, pipe round trip, an uncontended `Lock`, two processes incrementing a `Value`,
//! process start, `Pool.map` and `Pool.apply`), run by `python3` when it is on the `PATH`.
//!
//! Each run starts a fresh interpreter on a copy of the script in the temporary directory
//! (the spawn start method re-imports the main script by path, so `python3 -c` would not do)
//! and reads the one figure it prints; the interpreter's own start is not timed.

use std::io;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("python_peers.py");

/// How long one Python run may take before it is killed.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The interpreter's version (`Ok("3.11.7")`), or why there is none; probed once.
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
    let dir = std::env::temp_dir();
    let path = dir.join(format!("shmkit-bench-python-{}.py", std::process::id()));
    std::fs::write(&path, SCRIPT)?;
    let result = (|| {
        let mut child = Command::new("python3")
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("python3 {args:?} took over 120 s"),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // The figure is one short line and errors a short traceback: the pipes cannot fill.
        let out = child.wait_with_output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").to_owned();
            return Err(io::Error::other(format!("python3 {args:?} failed ({}): {last}", out.status)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })();
    let _ = std::fs::remove_file(&path);
    result
}
