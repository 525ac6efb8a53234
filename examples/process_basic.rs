//! Two processes running a task, each printing its name, pid and parent pid — one started
//! with fork (a closure), one with spawn (a function and its argument, in a re-executed
//! copy of this program).
//!
//! ```text
//! cargo run --example process_basic
//! ```

use shmkit::process::{current_process, parent_process, Process, StartMethod};

fn info(title: u64) {
    let me = current_process();
    let parent = parent_process().map_or(0, |p| p.pid);
    println!("task {title}: {} pid {} parent pid {parent}", me.name, me.pid);
}

fn main() -> Result<(), shmkit::process::ProcessError> {
    // In the spawned child this runs `info` and exits; here it returns at once.
    shmkit::process::init();
    info(0);
    let mut forked = Process::builder().name("forked").target(|| info(1));
    let mut spawned = Process::builder().name("spawned").start_method(StartMethod::Spawn).target_fn(info, 2);
    forked.start()?;
    forked.join()?;
    spawned.start()?;
    spawned.join()?;
    println!("exit codes: {:?} {:?}", forked.exitcode(), spawned.exitcode());
    Ok(())
}
