//! Asynchronous results with a timeout, Python's `pool.apply_async(f, (x,)).get(timeout=1)`:
//! a fast task arrives in time, a slow one times out (and can still be waited for), a task
//! that panics and one whose worker is killed come back as errors instead of hanging the pool.
//!
//! ```text
//! cargo run --example apply_async
//! ```

use std::time::Duration;

use shmkit::process::{Pool, PoolError};

fn square(x: u64) -> u64 {
    x * x
}

fn slow(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn fail(x: u64) -> u64 {
    panic!("no good: {x}")
}

fn die(code: i32) -> u64 {
    std::process::exit(code)
}

fn main() -> Result<(), PoolError> {
    shmkit::process::init();
    let pool = Pool::new(4)?;

    let quick = pool.apply_async(square, 20);
    println!("square(20) = {}", quick.get_timeout(Duration::from_secs(1))?);

    let late = pool.apply_async(slow, 1500);
    match late.get_timeout(Duration::from_millis(100)) {
        Err(PoolError::Timeout) => println!("slow(1500): not ready after 100 ms (TimeoutError)"),
        other => println!("slow(1500): {other:?}"),
    }

    let results: Vec<_> = (0..4).map(|i| pool.apply_async(square, i)).collect();
    let squares: Result<Vec<u64>, _> =
        results.iter().map(|r| r.get_timeout(Duration::from_secs(5))).collect();
    println!("four async squares: {:?}", squares?);

    println!("a task that panics: {:?}", pool.apply_async(fail, 7).get_timeout(Duration::from_secs(5)));
    println!("a task whose worker exits: {:?}", pool.apply_async(die, 3).get_timeout(Duration::from_secs(5)));
    println!("the pool goes on: square(9) = {}", pool.apply(square, 9)?);

    println!("slow(1500) after all: {}", late.get()?);
    Ok(())
}
