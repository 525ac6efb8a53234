//! Shared `Value` and `Array` — the seed program of Python's multiprocessing docs:
//!
//! ```python
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! num = Value('d', 0.0)
//! arr = Array('i', range(10))
//! p = Process(target=f, args=(num, arr)); p.start(); p.join()
//! print(num.value)   # 3.1415927
//! print(arr[:])      # [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
//! ```
//!
//! Then four processes count to 40,000 together, under the value's lock and lock-free.
//!
//! Run: `cargo run --example value_array`

use std::time::Duration;

use shmkit::util::child::fork;
use shmkit::value::{Array, Value};

fn join(children: Vec<shmkit::util::child::ForkedChild>) -> Result<(), Box<dyn std::error::Error>> {
    for mut child in children {
        let status = child.wait_timeout(Duration::from_secs(30))?.ok_or("a child hung")?;
        if !status.success() {
            return Err(format!("child {} failed: {status}", child.pid()).into());
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let num = Value::new(0.0f64)?; // anonymous: shared with the children forked below
    let arr = Array::from_items(0..10i32)?;

    // SAFETY: single-threaded when forking; the child only touches shared memory and exits.
    let child = unsafe {
        fork(|| {
            num.set(std::f64::consts::PI);
            let mut a = arr.lock().unwrap_or_else(|died| died.into_inner());
            for x in a.iter_mut() {
                *x = -*x;
            }
            0
        })
    }?;
    join(vec![child])?;
    println!("{}", num.get());
    println!("{:?}", arr.to_vec());

    let locked = Value::new(0u64)?;
    let atomic = Value::new(0u64)?;
    let mut children = Vec::new();
    for _ in 0..4 {
        // SAFETY: as above.
        children.push(unsafe {
            fork(|| {
                for _ in 0..10_000 {
                    *locked.lock().unwrap_or_else(|died| died.into_inner()) += 1;
                    atomic.fetch_add(1);
                }
                0
            })
        }?);
    }
    join(children)?;
    println!("4 processes x 10000 increments: locked {}, fetch_add {}", locked.get(), atomic.get());
    assert_eq!((locked.get(), atomic.get()), (40_000, 40_000));
    Ok(())
}
