//! Ten processes take turns printing under one shared `Lock` — the classic "the lock only
//! protects the screen" program from Python's multiprocessing docs:
//!
//! ```python
//! def f(l, i):
//!     l.acquire()
//!     try:
//!         print('hello world', i)
//!     finally:
//!         l.release()
//! ```
//!
//! Run: `cargo run --example lock_print`

use std::io::Write;
use std::time::Duration;

use shmkit::sync::Lock;
use shmkit::util::child::fork;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lock = Lock::new()?; // anonymous: every child forked below shares it
    let mut children = Vec::new();
    for i in 0..10 {
        // SAFETY: this program is single-threaded when it forks; the child prints and exits.
        let child = unsafe {
            fork(|| {
                // A previous holder that died would be reported here; the screen is fine
                // either way, so take the guard regardless.
                let _guard = lock.lock().unwrap_or_else(|died| died.into_inner());
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "hello world {i} (pid {})", std::process::id());
                let _ = out.flush();
                0
            })
        }?;
        children.push(child);
    }
    for mut child in children {
        let status = child.wait_timeout(Duration::from_secs(30))?.ok_or("a child hung")?;
        if !status.success() {
            return Err(format!("child {} failed: {status}", child.pid()).into());
        }
    }
    Ok(())
}
