//! A parent and a child talking both ways over a `Pipe` — the seed program of Python's
//! multiprocessing docs, extended:
//!
//! ```python
//! def f(conn):
//!     conn.send([42, None, 'hello'])
//!     conn.close()
//!
//! parent_conn, child_conn = Pipe()
//! p = Process(target=f, args=(child_conn,)); p.start()
//! print(parent_conn.recv())   # [42, None, 'hello']
//! p.join()
//! ```
//!
//! Here the child also squares the numbers the parent sends until a sentinel, says goodbye
//! and exits; the parent then gets end-of-file (`Disconnected`), not a hang.
//!
//! Run: `cargo run --example pipe`

use std::time::Duration;

use shmkit::pipe::{ConnectionError, Pipe};
use shmkit::util::child::fork;

const DONE: u64 = u64::MAX;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (parent_conn, child_conn) = Pipe::new()?;

    // SAFETY: single-threaded when forking; the child uses the pipe and exits.
    let mut child = unsafe {
        fork(|| {
            parent_conn.close(); // the child uses only its own end
            if child_conn.send_bytes(b"[42, None, 'hello']").is_err() {
                return 1;
            }
            loop {
                match child_conn.recv::<u64>() {
                    Ok(DONE) => break,
                    Ok(n) if child_conn.send(&(n * n)).is_ok() => {}
                    _ => return 2,
                }
            }
            child_conn.send_bytes(b"bye").map_or(3, |()| 0)
        })
    }?;
    child_conn.close(); // as in Python: the parent closes the child's end

    println!("{}", String::from_utf8_lossy(&parent_conn.recv_bytes()?));
    for n in 1..=5u64 {
        parent_conn.send(&n)?;
        let square: u64 = parent_conn.recv()?;
        println!("{n}^2 = {square} (from pid {})", child.pid());
    }
    parent_conn.send(&DONE)?;
    println!("{}", String::from_utf8_lossy(&parent_conn.recv_bytes()?));
    // The child has exited (or is about to): its end is gone, so the next receive reports
    // end-of-file once everything it sent was read.
    match parent_conn.recv_bytes() {
        Err(ConnectionError::Disconnected) => println!("end of file: the child closed its end"),
        other => return Err(format!("expected end of file, got {other:?}").into()),
    }
    let status = child.wait_timeout(Duration::from_secs(30))?.ok_or("the child hung")?;
    println!("child exited: {status}");
    Ok(())
}
