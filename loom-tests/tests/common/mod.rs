//! The loom harness shared by the model files: run a model under a preemption bound, count
//! its executions, and check that the interleavings a model is about were reached.

use std::sync::atomic::{AtomicBool as StdBool, AtomicUsize as StdUsize, Ordering::Relaxed as StdRelaxed};
use std::sync::Arc;
use std::time::Instant;

/// From this preemption bound up (and when unbounded) every model reaches the paths its
/// `Seen` flags record; below it some cannot, so those checks only print.
pub const COVERAGE_BOUND: usize = 2;

/// What a finished model explored.
pub struct Explored {
    name: String,
    /// The preemption bound reaches every path the models check for.
    deep: bool,
}

impl Explored {
    /// Asserts that some execution marked `seen` (when the bound was deep enough).
    pub fn reached(&self, seen: &Seen, what: &str) {
        if self.deep {
            assert!(seen.0.load(StdRelaxed), "{}: no execution reached {what}", self.name);
        } else if !seen.0.load(StdRelaxed) {
            eprintln!("{}: preemption bound below {COVERAGE_BOUND}; did not reach {what}", self.name);
        }
    }
}

/// Runs `f` under loom with the preemption bound `LOOM_MAX_PREEMPTIONS`, else
/// `COVERAGE_BOUND`, and reports how many executions it explored and how long it took.
pub fn model(name: impl Into<String>, f: impl Fn() + Sync + Send + 'static) -> Explored {
    let name = name.into();
    let runs = Arc::new(StdUsize::new(0));
    let counted = runs.clone();
    let mut b = loom::model::Builder::new();
    let bound = *b.preemption_bound.get_or_insert(COVERAGE_BOUND);
    // Three threads with retry loops, plus the model futex's Mutex/Condvar, take more than
    // loom's default 1,000 branches in one execution.
    b.max_branches = 20_000;
    let start = Instant::now();
    b.check(move || {
        counted.fetch_add(1, StdRelaxed);
        f();
    });
    let n = runs.load(StdRelaxed);
    eprintln!("{name}: {n} executions in {:.2?} (preemption bound {bound})", start.elapsed());
    let deep = bound >= COVERAGE_BOUND;
    assert!(!deep || n > 1, "{name}: loom explored a single execution; the model has no concurrency");
    Explored { name, deep }
}

/// A flag set from inside some execution and checked once the model has finished
/// (a std atomic: loom neither sees nor resets it between executions).
#[derive(Clone, Default)]
pub struct Seen(Arc<StdBool>);

impl Seen {
    pub fn mark(&self) {
        self.0.store(true, StdRelaxed);
    }
}
