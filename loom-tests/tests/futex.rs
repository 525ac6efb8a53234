//! Loom models of the park/wake handshake. The loom futex (`src/futex/loom.rs`) really
//! blocks when no deadline is given, so a lost wake-up ends the model in a deadlock, which
//! loom reports as a failure (a panic starting with "deadlock").
//!
//! Each model also counts its executions and records, across executions, whether the
//! interesting path (a waiter really asleep in the futex, a notifier finding a sleeper) was
//! reached, and asserts it was (from preemption bound 2 up): a model that never parks would
//! pass vacuously. Loom's spin/yield semantics make that easy to get wrong; see `handoff`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`
//! (add `-- --nocapture` to see the execution counts).
#![cfg(loom)]

mod common;

use common::{model, Seen};

use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use shmkit::futex::{self, WaitCell, WaitOutcome, WaitStrategy};

/// Budgets small enough for loom to reach the park path quickly, but with one spin and one
/// yield so those phases are explored too.
const SHORT: WaitStrategy = WaitStrategy { spins: 1, yields: 1, ..WaitStrategy::SLEEP };

#[test]
fn raw_futex_no_lost_wakeup() {
    let slept = Seen::default();
    let s = slept.clone();
    let explored = model("raw_futex_no_lost_wakeup", move || {
        let word = Arc::new(AtomicU32::new(0));
        let w2 = word.clone();
        let waker = thread::spawn(move || {
            w2.store(1, Ordering::Release);
            futex::wake(&w2, 1);
        });
        while word.load(Ordering::Acquire) == 0 {
            if futex::wait(&word, 0, None) == WaitOutcome::Woken {
                s.mark();
            }
        }
        assert_eq!(word.load(Ordering::Acquire), 1);
        waker.join().unwrap();
    });
    explored.reached(&slept, "the waiter asleep in the futex and woken");
}

#[test]
fn raw_futex_wake_all_wakes_two_sleepers() {
    let both_slept = Seen::default();
    let s = both_slept.clone();
    let explored = model("raw_futex_wake_all_wakes_two_sleepers", move || {
        let word = Arc::new(AtomicU32::new(0));
        let woken = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (w, k) = (word.clone(), woken.clone());
                thread::spawn(move || {
                    while w.load(Ordering::Acquire) == 0 {
                        if futex::wait(&w, 0, None) == WaitOutcome::Woken {
                            k.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        word.store(1, Ordering::Release);
        futex::wake(&word, u32::MAX);
        for w in waiters {
            w.join().unwrap();
        }
        if woken.load(Ordering::Relaxed) == 2 {
            s.mark();
        }
    });
    explored.reached(&both_slept, "both waiters asleep and woken by one wake(u32::MAX)");
}

/// One thread publishes a value in three steps (a progress counter it bumps with Release)
/// and then calls `notify_one`; the other waits with `strategy` until the counter is
/// complete, then reads the payload written before the first step.
///
/// The steps matter for coverage: loom runs a thread that snoozed (spin or yield phase)
/// again only after another thread took a step its poll depends on, so with a single store
/// the waiter would always see it after its first snooze and never park. Three steps let
/// it fail one poll per snooze and still park before the last one.
fn handoff(name: &'static str, strategy: WaitStrategy) {
    const STEPS: u32 = 3;
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model(name, move || {
        let cell = Arc::new(WaitCell::new());
        let payload = Arc::new(AtomicU64::new(0));
        let progress = Arc::new(AtomicU32::new(0));
        let (c2, p2, g2, f2) = (cell.clone(), payload.clone(), progress.clone(), f.clone());
        let notifier = thread::spawn(move || {
            p2.store(42, Ordering::Relaxed);
            for _ in 0..STEPS {
                g2.fetch_add(1, Ordering::Release);
            }
            if c2.sleepers() != 0 {
                f2.mark();
            }
            c2.notify_one();
        });
        let poll = || (progress.load(Ordering::Acquire) == STEPS).then(|| payload.load(Ordering::Relaxed));
        assert_eq!(cell.wait_with(strategy, poll, None), Ok(42));
        notifier.join().unwrap();
        assert_eq!(cell.sleepers(), 0, "a returned waiter left its sleeper count");
    });
    explored.reached(&found_sleeper, "the notifier finding an announced sleeper");
}

#[test]
fn waitcell_handoff_parking_at_once() {
    handoff("waitcell_handoff_parking_at_once", WaitStrategy::SLEEP);
}

#[test]
fn waitcell_handoff_after_spin_and_yield() {
    handoff("waitcell_handoff_after_spin_and_yield", SHORT);
}

#[test]
fn waitcell_two_waiters_notify_all() {
    let two_sleepers = Seen::default();
    let t = two_sleepers.clone();
    let explored = model("waitcell_two_waiters_notify_all", move || {
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
        if cell.sleepers() == 2 {
            t.mark();
        }
        cell.notify_all();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(cell.sleepers(), 0);
    });
    explored.reached(&two_sleepers, "the notifier finding both waiters announced");
}

#[test]
fn waitcell_tickets_notify_all() {
    // Two waiters wait for different values of one counter (tickets 1 and 2); the notifier
    // bumps it twice, with notify_all each time, since waiters with different conditions
    // need all of them woken (notify_one could wake the one whose ticket is not up yet).
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model("waitcell_tickets_notify_all", move || {
        let cell = Arc::new(WaitCell::new());
        let count = Arc::new(AtomicU64::new(0));
        let waiters: Vec<_> = (1..=2u64)
            .map(|ticket| {
                let (c, n) = (cell.clone(), count.clone());
                thread::spawn(move || {
                    let poll = || Some(n.load(Ordering::Acquire)).filter(|&v| v >= ticket);
                    let v = c.wait_with(WaitStrategy::SLEEP, poll, None).unwrap();
                    assert!(v >= ticket);
                })
            })
            .collect();
        for _ in 0..2 {
            count.fetch_add(1, Ordering::Release);
            if cell.sleepers() != 0 {
                f.mark();
            }
            cell.notify_all();
        }
        for w in waiters {
            w.join().unwrap();
        }
    });
    explored.reached(&found_sleeper, "the notifier finding an announced sleeper");
}

#[test]
fn waitcell_one_waiter_two_rounds_notify_one() {
    // The waiter needs two successive values; each is published with its own notify_one.
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model("waitcell_one_waiter_two_rounds_notify_one", move || {
        let cell = Arc::new(WaitCell::new());
        let count = Arc::new(AtomicU64::new(0));
        let (c2, n2, f2) = (cell.clone(), count.clone(), f.clone());
        let producer = thread::spawn(move || {
            for _ in 0..2 {
                n2.fetch_add(1, Ordering::Release);
                if c2.sleepers() != 0 {
                    f2.mark();
                }
                c2.notify_one();
            }
        });
        for want in 1..=2u64 {
            let poll = || (count.load(Ordering::Acquire) >= want).then_some(());
            cell.wait_with(WaitStrategy::SLEEP, poll, None).unwrap();
        }
        producer.join().unwrap();
    });
    explored.reached(&found_sleeper, "the producer finding an announced sleeper");
}

#[test]
fn waitcell_semaphore_notify_one() {
    // Two consumers each take one token; the producer releases two tokens with one
    // notify_one each. Every release either wakes a parked consumer or is seen by one that
    // has not parked yet, so both consumers must return.
    let two_sleepers = Seen::default();
    let t = two_sleepers.clone();
    let explored = model("waitcell_semaphore_notify_one", move || {
        let cell = Arc::new(WaitCell::new());
        let tokens = Arc::new(AtomicU32::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (c, k) = (cell.clone(), tokens.clone());
                thread::spawn(move || {
                    let take =
                        || k.fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| n.checked_sub(1)).ok();
                    c.wait_with(WaitStrategy::SLEEP, take, None).unwrap();
                })
            })
            .collect();
        for _ in 0..2 {
            tokens.fetch_add(1, Ordering::Release);
            if cell.sleepers() == 2 {
                t.mark();
            }
            cell.notify_one();
        }
        for c in consumers {
            c.join().unwrap();
        }
        assert_eq!(tokens.load(Ordering::Relaxed), 0, "a token was taken twice or not at all");
    });
    explored.reached(&two_sleepers, "the producer finding both consumers announced");
}

/// `WaitCell`'s handshake written out by hand, with the same orderings, and with its two
/// `fence(SeqCst)`s present or not.
fn inline_handshake(fenced: bool) {
    let seq = Arc::new(AtomicU32::new(0));
    let sleepers = Arc::new(AtomicU32::new(0));
    let data = Arc::new(AtomicU32::new(0));
    let (s2, sl2, d2) = (seq.clone(), sleepers.clone(), data.clone());
    let notifier = thread::spawn(move || {
        d2.store(1, Ordering::Release);
        if fenced {
            fence(Ordering::SeqCst);
        }
        if sl2.load(Ordering::Relaxed) != 0 {
            s2.fetch_add(1, Ordering::Release);
            futex::wake(&s2, 1);
        }
    });
    while data.load(Ordering::Acquire) == 0 {
        let s = seq.load(Ordering::Relaxed);
        sleepers.fetch_add(1, Ordering::Relaxed);
        if fenced {
            fence(Ordering::SeqCst);
        }
        if data.load(Ordering::Acquire) == 1 {
            break;
        }
        futex::wait(&seq, s, None);
        sleepers.fetch_sub(1, Ordering::Relaxed);
    }
    notifier.join().unwrap();
}

/// Control for the test below: the hand-written handshake passes with its fences.
#[test]
fn inline_handshake_with_fences_passes() {
    model("inline_handshake_with_fences_passes", || inline_handshake(true));
}

/// Without the fences, the store→load pairs on `data` and `sleepers` may both read the old
/// value: the notifier misses the sleeper and the waiter's re-check misses the data, so the
/// waiter sleeps forever. Loom must find that interleaving and report a deadlock, which
/// shows the models above can fail.
#[test]
#[should_panic(expected = "deadlock")]
fn inline_handshake_without_fences_deadlocks() {
    model("inline_handshake_without_fences_deadlocks", || inline_handshake(false));
}
