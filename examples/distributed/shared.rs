//! What `distributed_master.rs` and `distributed_worker.rs` share: the key's environment
//! variable and the two message types (postcard encodes fields by position, so both sides
//! must use these very definitions). Included by both with `#[path]`; not an example itself.

use serde::{Deserialize, Serialize};

/// The environment variable holding the key; the demo key when it is unset.
pub const KEY_ENV: &str = "SHMKIT_AUTHKEY";
/// The key used when `KEY_ENV` is unset (loopback only: anyone can read it here).
pub const DEMO_KEY: &str = "shmkit-demo-key";

/// What the master puts on `tasks`.
#[derive(Serialize, Deserialize, Debug)]
pub enum Task {
    /// Count the Collatz steps of `n` down to 1.
    Work { id: u32, n: u64 },
    /// No more work for you: stop.
    Stop,
}

/// What a worker puts on `results`.
#[derive(Serialize, Deserialize, Debug)]
pub struct Done {
    pub id: u32,
    pub n: u64,
    pub steps: u32,
    pub worker: String,
}

/// The task: how many Collatz steps take `n` down to 1.
pub fn collatz_steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n > 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}
