//! Loom models of the synchronization primitives' raw algorithms (`shmkit::sync::Raw*`). The
//! model futex really blocks, so a lost wake-up is a reported deadlock.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::sync::Arc;
use loom::thread;
use shmkit::sync::{Acquired, RawBarrier, RawEvent, RawLock, RawSemaphore};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.max_branches = 20_000;
    b.check(f);
}

/// A lock plus data that loom checks for unsynchronised access.
struct Guarded {
    lock: RawLock,
    data: UnsafeCell<u32>,
}

// SAFETY: `data` is only touched while `lock` is held (which is what the model checks).
unsafe impl Sync for Guarded {}

fn increment(g: &Guarded) {
    assert_eq!(g.lock.lock_until(None), Ok(Acquired::Clean));
    g.data.with_mut(|p| {
        // SAFETY: the lock is held; loom flags any overlapping access.
        unsafe { *p += 1 }
    });
    // SAFETY: acquired just above.
    unsafe { g.lock.unlock() };
}

#[test]
fn lock_mutual_exclusion_two_threads() {
    model(|| {
        let g = Arc::new(Guarded { lock: RawLock::new(), data: UnsafeCell::new(0) });
        let g2 = g.clone();
        let t = thread::spawn(move || increment(&g2));
        increment(&g);
        t.join().unwrap();
        // SAFETY: both threads are done.
        assert_eq!(g.data.with(|p| unsafe { *p }), 2);
        assert_eq!(g.lock.owner(), None);
    });
}

#[test]
fn lock_three_threads_no_lost_wakeup() {
    // Three contenders: the parked ones must all be woken in turn (else: loom deadlock).
    model(|| {
        let g = Arc::new(Guarded { lock: RawLock::new(), data: UnsafeCell::new(0) });
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let g = g.clone();
                thread::spawn(move || increment(&g))
            })
            .collect();
        increment(&g);
        for t in ts {
            t.join().unwrap();
        }
        // SAFETY: all threads are done.
        assert_eq!(g.data.with(|p| unsafe { *p }), 3);
        assert_eq!(g.lock.state_word(), 0, "unlocked with no stale WAITERS bit");
    });
}

#[test]
fn lock_try_lock_fails_while_held() {
    model(|| {
        let lock = Arc::new(RawLock::new());
        let held = Arc::new(AtomicU32::new(0));
        let (l2, h2) = (lock.clone(), held.clone());
        let t = thread::spawn(move || {
            if l2.try_lock().is_some() {
                h2.fetch_add(1, Ordering::SeqCst);
                // SAFETY: try_lock succeeded.
                unsafe { l2.unlock() };
            }
        });
        if lock.try_lock().is_some() {
            held.fetch_add(1, Ordering::SeqCst);
            // SAFETY: try_lock succeeded.
            unsafe { lock.unlock() };
        }
        t.join().unwrap();
        assert!((1..=2).contains(&held.load(Ordering::SeqCst)));
    });
}

#[test]
fn semaphore_admits_at_most_its_count() {
    model(|| {
        let sem = Arc::new(RawSemaphore::new(1, 0));
        let inside = Arc::new(AtomicU32::new(0));
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let (s, i) = (sem.clone(), inside.clone());
                thread::spawn(move || {
                    s.acquire_until(None).unwrap();
                    assert_eq!(i.fetch_add(1, Ordering::SeqCst), 0, "two inside a count-1 semaphore");
                    i.fetch_sub(1, Ordering::SeqCst);
                    s.release(1).unwrap();
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(sem.value(), 1);
    });
}

#[test]
fn semaphore_release_wakes_a_parked_acquirer() {
    model(|| {
        let sem = Arc::new(RawSemaphore::new(0, 1));
        let s2 = sem.clone();
        let t = thread::spawn(move || s2.release(1).unwrap());
        sem.acquire_until(None).unwrap();
        t.join().unwrap();
        assert_eq!(sem.value(), 0);
        assert!(sem.release(2).is_err(), "bounded at 1");
    });
}

#[test]
fn event_set_wakes_every_waiter() {
    model(|| {
        let ev = Arc::new(RawEvent::default());
        let ts: Vec<_> = (0..2)
            .map(|_| {
                let e = ev.clone();
                thread::spawn(move || assert!(e.wait_until(None)))
            })
            .collect();
        ev.set();
        for t in ts {
            t.join().unwrap();
        }
    });
}

#[test]
fn barrier_generations_have_one_leader_each() {
    model(|| {
        let b = Arc::new(RawBarrier::new(2));
        let leaders = Arc::new(AtomicU32::new(0));
        let (b2, l2) = (b.clone(), leaders.clone());
        let t = thread::spawn(move || {
            for _ in 0..2 {
                if b2.wait_until(None).unwrap().is_leader() {
                    l2.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        for _ in 0..2 {
            if b.wait_until(None).unwrap().is_leader() {
                leaders.fetch_add(1, Ordering::SeqCst);
            }
        }
        t.join().unwrap();
        assert_eq!(leaders.load(Ordering::SeqCst), 2, "one leader per generation");
        assert!(!b.is_broken());
    });
}

#[test]
fn barrier_abort_releases_the_waiter() {
    model(|| {
        let b = Arc::new(RawBarrier::new(2));
        let b2 = b.clone();
        let t = thread::spawn(move || b2.abort());
        assert!(b.wait_until(None).is_err(), "the only waiter cannot pass a 2-party barrier");
        t.join().unwrap();
        assert!(b.is_broken());
    });
}

/// The `Condition` protocol (`WaitCell::register` under the lock, unlock, `park`, relock)
/// against a producer that sets the predicate and notifies under the lock: no lost wake-up.
fn condition_consumer(lock: &RawLock, cell: &shmkit::futex::WaitCell, ready: &AtomicU32) {
    assert_eq!(lock.lock_until(None), Ok(Acquired::Clean));
    while ready.load(Ordering::Relaxed) == 0 {
        let seq = cell.register();
        // SAFETY: held since the lock_until above (or the relock below).
        unsafe { lock.unlock() };
        cell.park(seq, None);
        cell.unregister();
        assert_eq!(lock.lock_until(None), Ok(Acquired::Clean));
    }
    // SAFETY: held.
    unsafe { lock.unlock() };
}

#[test]
fn condition_protocol_no_lost_wakeup() {
    model(|| {
        let lock = Arc::new(RawLock::new());
        let cell = Arc::new(shmkit::futex::WaitCell::new());
        let ready = Arc::new(AtomicU32::new(0));
        let (l2, c2, r2) = (lock.clone(), cell.clone(), ready.clone());
        let consumer = thread::spawn(move || condition_consumer(&l2, &c2, &r2));
        assert_eq!(lock.lock_until(None), Ok(Acquired::Clean));
        ready.store(1, Ordering::Relaxed);
        cell.notify_one();
        // SAFETY: held.
        unsafe { lock.unlock() };
        consumer.join().unwrap();
        assert_eq!(cell.sleepers(), 0);
    });
}

#[test]
fn condition_protocol_notify_all_two_consumers() {
    model(|| {
        let lock = Arc::new(RawLock::new());
        let cell = Arc::new(shmkit::futex::WaitCell::new());
        let ready = Arc::new(AtomicU32::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (l, c, r) = (lock.clone(), cell.clone(), ready.clone());
                thread::spawn(move || condition_consumer(&l, &c, &r))
            })
            .collect();
        assert_eq!(lock.lock_until(None), Ok(Acquired::Clean));
        ready.store(1, Ordering::Relaxed);
        cell.notify_all();
        // SAFETY: held.
        unsafe { lock.unlock() };
        for c in consumers {
            c.join().unwrap();
        }
    });
}
