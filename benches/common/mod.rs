//! Workloads shared by several benches whose peers live in dev-dependencies, so they
//! cannot sit in `src/bench/` (used by `benches/queue.rs` and `benches/pipe.rs`).

use std::io;
use std::time::{Duration, Instant};

use shmkit::bench::queue_peers::run_pair;

/// `Ok` if `got` is the `expected` sequence number.
pub fn check(expected: u64, got: u64) -> io::Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(io::Error::other(format!("expected {expected}, got {got}")))
    }
}

/// An ipc-channel error as an `io::Error`.
pub fn ipc_err(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("ipc-channel: {e:?}"))
}

/// 8-byte messages over an ipc-channel made before the fork: the child sends, the parent
/// receives (a blocking `recv`, which ends with `Disconnected` if the child dies).
/// `tput_8B/ipc_channel` and `pipe_tput_8B/ipc_channel`.
pub fn ipc_channel_tput(msgs: u64) -> io::Result<Duration> {
    let (tx, rx) = ipc_channel::ipc::channel::<u64>()?;
    let total = msgs + 1;
    let child = move || {
        for i in 1..=total {
            if tx.send(i).is_err() {
                return 2;
            }
        }
        0
    };
    let parent = move || {
        let mut start = Instant::now();
        for i in 1..=total {
            check(i, rx.recv().map_err(ipc_err)?)?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    };
    // SAFETY: criterion runs every benchmark on the bench process's only thread (the
    // crossbeam peer of `benches/queue.rs` joins its thread before returning), so the fork
    // copies no lock held elsewhere.
    unsafe { run_pair(child, parent) }
}
