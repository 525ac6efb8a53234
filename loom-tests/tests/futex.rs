//! Loom models of the park/wake handshake. The loom futex (`src/futex/loom.rs`) really
//! blocks when no deadline is given, so a lost wake-up ends the model in a deadlock, which
//! loom reports as a failure.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`
#![cfg(loom)]

use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use shmkit::futex::{self, WaitCell, WaitStrategy};

/// Budgets small enough for loom to reach the park path quickly, but with one spin and one
/// yield so those phases are explored too.
const SHORT: WaitStrategy = WaitStrategy { spins: 1, yields: 1, ..WaitStrategy::SLEEP };

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    // Three threads around the model futex's Mutex/Condvar take more than loom's default
    // 1,000 branches in one execution.
    b.max_branches = 20_000;
    b.check(f);
}

#[test]
fn raw_futex_no_lost_wakeup() {
    model(|| {
        let word = Arc::new(AtomicU32::new(0));
        let w2 = word.clone();
        let waker = thread::spawn(move || {
            w2.store(1, Ordering::Release);
            futex::wake(&w2, 1);
        });
        while word.load(Ordering::Acquire) == 0 {
            futex::wait(&word, 0, None);
        }
        assert_eq!(word.load(Ordering::Acquire), 1);
        waker.join().unwrap();
    });
}

fn handoff(strategy: WaitStrategy) {
    model(move || {
        let cell = Arc::new(WaitCell::new());
        let data = Arc::new(AtomicU64::new(0));
        let (c2, d2) = (cell.clone(), data.clone());
        let notifier = thread::spawn(move || {
            d2.store(42, Ordering::Release);
            c2.notify_one();
        });
        let got = cell.wait_with(
            strategy,
            || match data.load(Ordering::Acquire) {
                0 => None,
                v => Some(v),
            },
            None,
        );
        assert_eq!(got, Ok(42));
        notifier.join().unwrap();
        assert_eq!(cell.sleepers(), 0, "a returned waiter left its sleeper count");
    });
}

#[test]
fn waitcell_handoff_parking_at_once() {
    handoff(WaitStrategy::SLEEP);
}

#[test]
fn waitcell_handoff_after_spin_and_yield() {
    handoff(SHORT);
}

#[test]
fn waitcell_notify_all_wakes_two_waiters() {
    model(|| {
        let cell = Arc::new(WaitCell::new());
        let flag = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (c, f) = (cell.clone(), flag.clone());
                thread::spawn(move || {
                    let poll = || (f.load(Ordering::Acquire) == 1).then_some(());
                    c.wait_with(WaitStrategy::SLEEP, poll, None).unwrap();
                })
            })
            .collect();
        flag.store(1, Ordering::Release);
        cell.notify_all();
        for w in waiters {
            w.join().unwrap();
        }
    });
}

#[test]
fn waitcell_two_rounds_each_seen() {
    // The waiter needs two successive values; each is published with its own notify_one.
    model(|| {
        let cell = Arc::new(WaitCell::new());
        let count = Arc::new(AtomicU64::new(0));
        let (c2, n2) = (cell.clone(), count.clone());
        let producer = thread::spawn(move || {
            for _ in 0..2 {
                n2.fetch_add(1, Ordering::Release);
                c2.notify_one();
            }
        });
        for want in 1..=2u64 {
            let poll = || (count.load(Ordering::Acquire) >= want).then_some(());
            cell.wait_with(WaitStrategy::SLEEP, poll, None).unwrap();
        }
        producer.join().unwrap();
    });
}

/// The same handshake with the notifier's fence removed and its `sleepers` check Relaxed:
/// loom must find the interleaving where the notifier misses the sleeper and the waiter
/// sleeps forever. Shows that the models above can fail.
#[test]
#[should_panic]
fn broken_handshake_without_fences_is_caught() {
    model(|| {
        let seq = Arc::new(AtomicU32::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let data = Arc::new(AtomicU32::new(0));
        let (s2, sl2, d2) = (seq.clone(), sleepers.clone(), data.clone());
        let notifier = thread::spawn(move || {
            d2.store(1, Ordering::Relaxed);
            // BUG (deliberate): no fence(SeqCst) between the store and this load.
            if sl2.load(Ordering::Relaxed) != 0 {
                s2.fetch_add(1, Ordering::Relaxed);
                futex::wake(&s2, 1);
            }
        });
        loop {
            if data.load(Ordering::Relaxed) == 1 {
                break;
            }
            let s = seq.load(Ordering::Relaxed);
            sleepers.fetch_add(1, Ordering::Relaxed);
            // BUG (deliberate): no fence(SeqCst) here either.
            if data.load(Ordering::Relaxed) == 1 {
                break;
            }
            futex::wait(&seq, s, None);
            sleepers.fetch_sub(1, Ordering::Relaxed);
        }
        notifier.join().unwrap();
        let _ = fence; // the correct protocol's fences live in WaitCell
    });
}
