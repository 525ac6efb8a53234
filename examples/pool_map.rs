//! The classic `multiprocessing.Pool` program: squares of [1, 2, 3] with 5 workers.
//!
//! ```text
//! cargo run --example pool_map
//! ```

use shmkit::process::Pool;

fn f(x: u64) -> u64 {
    x * x
}

fn main() -> Result<(), shmkit::process::PoolError> {
    shmkit::process::init();
    let pool = Pool::new(5)?;
    println!("{:?}", pool.map(f, [1, 2, 3])?);
    Ok(())
}
