//! Cooks and eaters: three producer processes put dishes on a `JoinableQueue`, two daemon
//! consumer processes eat them and call `task_done`, and the main process waits on `join()`
//! — Python's classic
//!
//! ```python
//! def cook(q, name):
//!     for i in range(DISHES):
//!         q.put((name, i))
//!
//! def eater(q, tally):
//!     while True:
//!         name, i = q.get()
//!         tally[name] += 1
//!         q.task_done()
//!
//! q = JoinableQueue()
//! for e in range(2): Process(target=eater, args=(q, tally), daemon=True).start()
//! cooks = [Process(target=cook, args=(q, n)) for n in range(3)]
//! for c in cooks: c.start()
//! for c in cooks: c.join()
//! q.join()          # every dish eaten
//! ```
//!
//! Run: `cargo run --release --example producer_consumer [DISHES_PER_COOK]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use shmkit::queue::JoinableQueue;
use shmkit::shm::{Kind, Shared};
use shmkit::util::child::fork;

/// A dish: plain old data, copied into the queue's shared memory as it is.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
struct Dish {
    cook: u32,
    number: u32,
}

const COOKS: usize = 3;
const EATERS: usize = 2;

/// Dishes eaten, per cook, and a checksum of dish numbers, in shared memory.
#[repr(C)]
struct Tally {
    eaten: [AtomicU64; COOKS],
    checksum: AtomicU64,
}

// SAFETY: atomics only, `#[repr(C)]`; zero is the initial state.
unsafe impl shmkit::shm::Shareable for Tally {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dishes: u32 = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let queue = JoinableQueue::<Dish>::new(1024)?;
    let tally = Shared::<Tally>::anonymous(Kind::RAW, |_| {})?;

    // Daemon eaters: they loop forever; the main process kills them once the queue is joined
    // (and PDEATHSIG kills them should the main process die first).
    let mut eaters = Vec::new();
    for _ in 0..EATERS {
        // SAFETY: single-threaded here; the child only uses the queue and atomics, then exits.
        eaters.push(unsafe {
            fork(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                while let Ok(dish) = queue.get() {
                    if let Some(count) = tally.eaten.get(dish.cook as usize) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
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
    let mut cooks = Vec::new();
    for cook in 0..COOKS as u32 {
        // SAFETY: as above.
        cooks.push(unsafe {
            fork(|| {
                for number in 0..dishes {
                    if queue.put(Dish { cook, number }).is_err() {
                        return 1;
                    }
                }
                0
            })
        }?);
    }
    for mut c in cooks {
        let status = c.wait_timeout(Duration::from_secs(120))?.ok_or("a cook hung")?;
        if !status.success() {
            return Err(format!("cook {} failed: {status}", c.pid()).into());
        }
    }
    queue.join_timeout(Duration::from_secs(120)).map_err(|_| "the eaters did not finish")?;
    let elapsed = start.elapsed();
    for mut e in eaters {
        e.kill()?;
    }

    let total = COOKS as u64 * dishes as u64;
    for (cook, count) in tally.eaten.iter().enumerate() {
        println!("cook {cook}: {} dishes eaten", count.load(Ordering::Relaxed));
    }
    let expected_sum = COOKS as u64 * (dishes as u64 * dishes.saturating_sub(1) as u64 / 2);
    let sum = tally.checksum.load(Ordering::Relaxed);
    println!(
        "{total} dishes from {COOKS} cook processes to {EATERS} eater processes in {:.3} s: {:.2} M dishes/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64() / 1e6
    );
    if sum != expected_sum || queue.unfinished() != 0 {
        return Err(format!("lost or duplicated dishes: checksum {sum}, expected {expected_sum}").into());
    }
    println!("every dish eaten exactly once (checksum {sum})");
    Ok(())
}
