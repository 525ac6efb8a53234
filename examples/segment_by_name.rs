//! Two unrelated processes share a named segment: the parent creates it, re-runs this
//! program as a child that opens it by name, and waits (parked on a futex, no CPU) until the
//! child has published its work.
//!
//! ```text
//! cargo run --example segment_by_name
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmkit::futex::WaitCell;
use shmkit::shm::{Kind, Layout, Offset, Segment};

struct Places {
    layout: Layout,
    total: Offset<AtomicU64>,
    done: Offset<AtomicU64>,
    cell: Offset<WaitCell>,
}

fn places() -> Places {
    let mut layout = Layout::new();
    let total = layout.push();
    let done = layout.push();
    let cell = layout.push();
    Places { layout, total, done, cell }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let p = places();
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, name] = &args[..] {
        if role == "child" {
            let seg = Segment::open(name, Kind::RAW)?;
            println!("child  (pid {}): opened {name}", std::process::id());
            for i in 1..=1000u64 {
                seg.get(p.total)?.fetch_add(i, Ordering::Relaxed);
            }
            // Release: the sum is visible to whoever sees `done`.
            seg.get(p.done)?.store(1, Ordering::Release);
            seg.get(p.cell)?.notify_all();
            return Ok(());
        }
    }

    let name = format!("shmkit-example-{}", std::process::id());
    let seg = Segment::create(&name, Kind::RAW, p.layout.size())?;
    println!("parent (pid {}): created /dev/shm/{name}", std::process::id());
    let mut child = std::process::Command::new(std::env::current_exe()?).args(["child", &name]).spawn()?;

    let done = seg.get(p.done)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let waited =
        seg.get(p.cell)?.wait_for(|| (done.load(Ordering::Acquire) == 1).then_some(()), Some(deadline));
    child.wait()?;
    waited.map_err(|e| format!("child did not finish: {e}"))?;
    println!("parent: the child summed 1..=1000 = {}", seg.get(p.total)?.load(Ordering::Relaxed));
    Ok(()) // dropping `seg` unlinks the name
}
