//! The workload of `shmkit demo`: cooks and eaters on a `JoinableQueue` (the program of
//! `examples/producer_consumer.rs`, sized for timing and checked end to end).

use std::io;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use super::PEER_TIMEOUT;
use crate::primitive::atomic::{AtomicU64, Ordering};
use crate::queue::JoinableQueue;
use crate::shm::{Kind, Shareable, Shared};
use crate::util::child::{fork, ForkedChild};

/// A dish: copied into the queue as it is.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Dish {
    cook: u32,
    number: u32,
}

/// Dishes eaten and the sum of their numbers, in shared memory.
#[repr(C)]
struct Tally {
    eaten: AtomicU64,
    checksum: AtomicU64,
}

// SAFETY: atomics only, `#[repr(C)]`; zero is the initial state.
unsafe impl Shareable for Tally {}

/// What a cooks-and-eaters run did.
#[derive(Clone, Copy, Debug)]
pub struct CooksReport {
    /// Dishes put by all cooks together.
    pub dishes: u64,
    /// From the first cook's start to `join()` returning.
    pub elapsed: Duration,
}

/// `cooks` producer processes put `per_cook` dishes each on a `JoinableQueue`, `eaters`
/// daemon consumer processes take them and call `task_done`, and this process waits in
/// `join()`. Checks that every dish was eaten exactly once (count and checksum).
///
/// # Errors
/// An OS error, a child that failed or hung, or a count/checksum mismatch.
pub fn cooks_and_eaters(cooks: u32, eaters: u32, per_cook: u32) -> io::Result<CooksReport> {
    let queue = JoinableQueue::<Dish>::new(1024).map_err(io::Error::other)?;
    let tally = Shared::<Tally>::anonymous(Kind::RAW, |_| {}).map_err(io::Error::other)?;
    let mut daemons: Vec<ForkedChild> = Vec::new();
    for _ in 0..eaters {
        // SAFETY: the child uses the queue (atomics, futexes) and exits through `_exit`;
        // callers fork from a single-threaded process (the CLI).
        daemons.push(unsafe {
            fork(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                while let Ok(dish) = queue.get() {
                    tally.eaten.fetch_add(1, Ordering::Relaxed);
                    tally.checksum.fetch_add(dish.number as u64, Ordering::Relaxed);
                    if queue.task_done().is_err() {
                        return 1;
                    }
                }
                0
            })
        }?);
    }
    let start = Instant::now();
    let mut producers = Vec::new();
    for cook in 0..cooks {
        // SAFETY: as above.
        producers.push(unsafe {
            fork(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                for number in 0..per_cook {
                    if queue.put(Dish { cook, number }).is_err() {
                        return 1;
                    }
                }
                0
            })
        }?);
    }
    for mut p in producers {
        match p.wait_timeout(PEER_TIMEOUT)? {
            Some(st) if st.success() => {}
            st => return Err(io::Error::other(format!("cook {} failed: {st:?}", p.pid()))),
        }
    }
    queue.join_timeout(PEER_TIMEOUT).map_err(|_| io::Error::other("the eaters did not finish"))?;
    let elapsed = start.elapsed();
    for mut d in daemons {
        d.kill()?;
    }
    let dishes = cooks as u64 * per_cook as u64;
    let expected = cooks as u64 * (per_cook as u64 * (per_cook as u64).saturating_sub(1) / 2);
    // Relaxed: the eaters are gone (killed and reaped).
    let (eaten, sum) = (tally.eaten.load(Ordering::Relaxed), tally.checksum.load(Ordering::Relaxed));
    if eaten != dishes || sum != expected {
        return Err(io::Error::other(format!(
            "{eaten} of {dishes} dishes eaten, checksum {sum} vs {expected}"
        )));
    }
    Ok(CooksReport { dishes, elapsed })
}

fn square(x: u64) -> u64 {
    x * x
}

/// What a Pool.map run did.
#[derive(Clone, Debug)]
pub struct PoolReport {
    /// The seed program's answer: squares of [1, 2, 3].
    pub squares: Vec<u64>,
    /// Tasks in the timed map.
    pub tasks: u64,
    /// Time of the timed map (default chunks), pool already started.
    pub elapsed: Duration,
    /// Time to start the pool's workers.
    pub startup: Duration,
}

/// Python's seed program (`Pool(5).map(f, [1, 2, 3])`) with `workers` workers, then a timed
/// `map` of `tasks` squares, checked against the sequential answer.
///
/// # Errors
/// A pool error, or a wrong result.
pub fn pool_map(workers: usize, tasks: u64) -> io::Result<PoolReport> {
    let t0 = Instant::now();
    let pool = crate::process::Pool::new(workers).map_err(io::Error::other)?;
    let startup = t0.elapsed();
    let squares = pool.map(square, [1u64, 2, 3]).map_err(io::Error::other)?;
    let t = Instant::now();
    let out = pool.map(square, 0..tasks).map_err(io::Error::other)?;
    let elapsed = t.elapsed();
    if squares != [1, 4, 9] || out.iter().enumerate().any(|(i, &v)| v != (i as u64) * (i as u64)) {
        return Err(io::Error::other("Pool.map returned a wrong result"));
    }
    Ok(PoolReport { squares, tasks, elapsed, startup })
}
