//! Loom models of the park/wake handshake: the raw futex, `WaitCell::wait_for` and
//! `WaitCell::wait_any`, and hand-written copies that must fail. The loom futex (`src/futex/loom.rs`) really
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

use std::sync::Arc as StdArc;

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

// ---------------------------------------------------------------------------------------
// WaitCell::wait_any: one waiter on several cells
// ---------------------------------------------------------------------------------------

/// Two cells and a flag for each, shared by the `wait_any` models. A flag is set once it
/// holds `steps`: its notifier bumps it `steps` times with Release, so that (as in
/// `handoff`) the `wait_any` waiter, which always runs `WaitStrategy::ADAPTIVE`, can fail a
/// poll after each snooze and still park before the last bump.
///
/// The notifier also yields between its bumps. Loom resumes a snoozing waiter only after
/// another thread's step, and switching back to it from a notifier that could go on costs
/// a preemption; with the yields those switches are free, so that a bound of 2 still
/// reaches the last bump and the notify landing between the waiter's re-poll and its
/// futex wait (without them, a `wait_any` that loaded `seq` after its re-poll passed the
/// one-waiter models).
struct TwoCells {
    cells: [WaitCell; 2],
    flags: [AtomicU32; 2],
    steps: u32,
}

impl TwoCells {
    /// In `std`'s Arc, not loom's: if a waiter parks for good after the other threads
    /// ended, loom reports the deadlock by panicking on that waiter's stack, and a loom `Arc`
    /// dropped during that unwinding panics again (no active thread), which aborts the whole
    /// test binary instead of failing one test. The loom atomics inside need no drop.
    fn new(steps: u32) -> StdArc<Self> {
        StdArc::new(TwoCells {
            cells: [WaitCell::new(), WaitCell::new()],
            flags: [AtomicU32::new(0), AtomicU32::new(0)],
            steps,
        })
    }

    /// The poll of the `wait_any` waiters: the first cell whose flag is set.
    fn ready(&self) -> Option<usize> {
        self.flags.iter().position(|f| f.load(Ordering::Acquire) == self.steps)
    }

    /// Sets flag `i`, then notifies cell `i` with `notify`; marks `found` if it finds at
    /// least `sleepers` waiters announced on that cell.
    fn publish(&self, i: usize, notify: Notify, sleepers: u32, found: &Seen) {
        for step in 1..=self.steps {
            self.flags[i].fetch_add(1, Ordering::Release);
            if step < self.steps {
                thread::yield_now();
            }
        }
        if self.cells[i].sleepers() >= sleepers {
            found.mark();
        }
        match notify {
            Notify::One => self.cells[i].notify_one(),
            Notify::All => self.cells[i].notify_all(),
        }
    }

    fn wait_any(&self) -> usize {
        WaitCell::wait_any(&[&self.cells[0], &self.cells[1]], || self.ready(), None).unwrap()
    }

    fn assert_no_sleepers(&self) {
        let left = [self.cells[0].sleepers(), self.cells[1].sleepers()];
        assert_eq!(left, [0, 0], "a returned waiter left its sleeper counts");
    }
}

#[derive(Clone, Copy, Debug)]
enum Notify {
    One,
    All,
}

/// One thread in `WaitCell::wait_any` on both cells; one notifier thread per entry of
/// `notifiers` (a cell index), which sets that cell's flag and notifies that cell. The
/// waiter must return (a lost wake-up leaves it asleep in the model futex: a deadlock) with
/// the index of a flag that was set.
fn wait_any_model(name: &'static str, notifiers: &'static [usize], notify: Notify, steps: u32) {
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model(name, move || {
        let t = TwoCells::new(steps);
        let handles: Vec<_> = notifiers
            .iter()
            .map(|&i| {
                let (t, f) = (t.clone(), f.clone());
                thread::spawn(move || t.publish(i, notify, 1, &f))
            })
            .collect();
        let got = t.wait_any();
        assert!(notifiers.contains(&got), "wait_any returned cell {got}, whose flag nobody set");
        for h in handles {
            h.join().unwrap();
        }
        t.assert_no_sleepers();
    });
    explored.reached(&found_sleeper, "a notifier finding the wait_any waiter announced on its cell");
}

#[test]
fn wait_any_notify_one_on_second_cell() {
    wait_any_model("wait_any_notify_one_on_second_cell", &[1], Notify::One, 3);
}

#[test]
fn wait_any_notify_all_on_second_cell() {
    wait_any_model("wait_any_notify_all_on_second_cell", &[1], Notify::All, 3);
}

#[test]
fn wait_any_notify_one_on_first_cell() {
    wait_any_model("wait_any_notify_one_on_first_cell", &[0], Notify::One, 3);
}

/// Both cells notified by their own thread: the first notify wakes the waiter, and the
/// second may find it still announced (its sleeper count, or its entry still queued in the
/// model futex after the first wake, as `futex_waitv` leaves it until the waiter runs).
///
/// Two bumps per flag in the three-thread models: the waiters' snoozes also resume on the
/// other notifier's (or waiter's) steps. Three bumps here take ~120,000 executions (9 s)
/// instead of ~5,000, and two already made these models fail against every broken
/// `wait_any` tried (no re-poll, no fence, `seq` loaded after the re-poll).
#[test]
fn wait_any_two_notifiers_one_per_cell() {
    wait_any_model("wait_any_two_notifiers_one_per_cell", &[0, 1], Notify::One, 2);
}

/// A `wait_for` waiter on cell 0 and a `wait_any` waiter on cells 0 and 1 share cell 0's
/// sleeper count and futex word; the notifier sets flag 0, which both polls accept, and
/// calls `notify_all` on cell 0: both must return (`wait_any` with index 0).
#[test]
fn wait_any_beside_wait_for_notify_all() {
    let both_announced = Seen::default();
    let b = both_announced.clone();
    let explored = model("wait_any_beside_wait_for_notify_all", move || {
        let t = TwoCells::new(2);
        let t1 = t.clone();
        let single = thread::spawn(move || {
            let poll = || (t1.flags[0].load(Ordering::Acquire) == t1.steps).then_some(());
            t1.cells[0].wait_for(poll, None).unwrap();
        });
        let t2 = t.clone();
        let any = thread::spawn(move || t2.wait_any());
        t.publish(0, Notify::All, 2, &b);
        single.join().unwrap();
        assert_eq!(any.join().unwrap(), 0);
        t.assert_no_sleepers();
    });
    explored.reached(&both_announced, "the notifier finding both waiters announced on cell 0");
}

/// The waiter needs two events on cell 1 (its flag at 2), each published with its own
/// `notify_one`: the first wakes it (or lands between its re-poll and its park) too early,
/// and it must go round `wait_any`'s loop, register on both cells again with fresh `seq`s
/// and park until the second.
#[test]
fn wait_any_woken_early_parks_again() {
    let found_twice = Seen::default();
    let f = found_twice.clone();
    let explored = model("wait_any_woken_early_parks_again", move || {
        let t = TwoCells::new(2);
        let (t2, f2) = (t.clone(), f.clone());
        let notifier = thread::spawn(move || {
            let mut found = 0;
            for _ in 0..2 {
                t2.flags[1].fetch_add(1, Ordering::Release);
                found += u32::from(t2.cells[1].sleepers() != 0);
                t2.cells[1].notify_one();
                thread::yield_now();
            }
            if found == 2 {
                f2.mark();
            }
        });
        assert_eq!(t.wait_any(), 1);
        notifier.join().unwrap();
        t.assert_no_sleepers();
    });
    explored.reached(&found_twice, "both notifies finding the waiter announced");
}

// ---------------------------------------------------------------------------------------
// Controls: wait_any's handshake written out by hand, whole or broken
// ---------------------------------------------------------------------------------------

/// A `WaitCell`'s two words, for the hand-written `wait_any` below.
#[derive(Default)]
struct HandCell {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl HandCell {
    /// `WaitCell::notify_all`, with `membarrier::light` as under loom (`fence(SeqCst)`).
    fn notify_all(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.seq.fetch_add(1, Ordering::Release);
            futex::wake(&self.seq, u32::MAX);
        }
    }
}

/// Which part of `WaitCell::wait_any`'s park path the hand-written copy keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandWaitAny {
    /// The whole handshake, with `src/futex`'s orderings.
    Whole,
    /// No `sleepers += 1` on any cell: notifiers never see the waiter.
    NoSleepers,
    /// `sleepers += 1` on the first cell only: the second cell's notifier never sees it.
    FirstCellOnly,
    /// No poll between registering and parking.
    NoRepoll,
}

/// The park path of `WaitCell::wait_any` written out (it parks at once: the spin and yield
/// phases take no part in the handshake), with `membarrier::heavy` as under loom.
fn hand_wait_any<R>(cells: &[&HandCell], mut poll: impl FnMut() -> Option<R>, copy: HandWaitAny) -> R {
    let registered = match copy {
        HandWaitAny::NoSleepers => 0,
        HandWaitAny::FirstCellOnly => 1,
        HandWaitAny::Whole | HandWaitAny::NoRepoll => cells.len(),
    };
    let mut words = Vec::with_capacity(cells.len());
    loop {
        if let Some(r) = poll() {
            return r;
        }
        words.clear();
        for (i, c) in cells.iter().enumerate() {
            words.push((&c.seq, c.seq.load(Ordering::Relaxed)));
            if i < registered {
                c.sleepers.fetch_add(1, Ordering::Relaxed);
            }
        }
        fence(Ordering::SeqCst);
        let r = if copy == HandWaitAny::NoRepoll { None } else { poll() };
        if r.is_none() {
            futex::wait_any(&words, None);
        }
        for c in &cells[..registered] {
            c.sleepers.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(r) = r {
            return r;
        }
    }
}

/// A waiter in the hand-written `wait_any` on two cells; a notifier sets flag 1 and calls
/// `notify_all` on cell 1.
fn hand_wait_any_model(name: &'static str, copy: HandWaitAny) {
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model(name, move || {
        // `std`'s Arc, as in `TwoCells::new`: these models end in a deadlock on purpose.
        let cells = StdArc::new([HandCell::default(), HandCell::default()]);
        let flags = StdArc::new([AtomicU32::new(0), AtomicU32::new(0)]);
        let (c2, fl2, f2) = (cells.clone(), flags.clone(), f.clone());
        let notifier = thread::spawn(move || {
            fl2[1].store(1, Ordering::Release);
            if c2[1].sleepers.load(Ordering::Relaxed) != 0 {
                f2.mark();
            }
            c2[1].notify_all();
        });
        let poll = || flags.iter().position(|f| f.load(Ordering::Acquire) != 0);
        assert_eq!(hand_wait_any(&[&cells[0], &cells[1]], poll, copy), 1);
        notifier.join().unwrap();
    });
    explored.reached(&found_sleeper, "the notifier finding the waiter announced");
}

/// Control for the tests below: the hand-written copy passes when whole.
#[test]
fn hand_wait_any_whole_passes() {
    hand_wait_any_model("hand_wait_any_whole_passes", HandWaitAny::Whole);
}

/// Without the sleeper registration the notifier never wakes the parked waiter.
#[test]
#[should_panic(expected = "deadlock")]
fn hand_wait_any_without_sleepers_deadlocks() {
    hand_wait_any_model("hand_wait_any_without_sleepers_deadlocks", HandWaitAny::NoSleepers);
}

/// Registered on cell 0 only, the waiter misses cell 1's notify.
#[test]
#[should_panic(expected = "deadlock")]
fn hand_wait_any_registered_on_first_cell_only_deadlocks() {
    hand_wait_any_model("hand_wait_any_registered_on_first_cell_only_deadlocks", HandWaitAny::FirstCellOnly);
}

/// Without the re-poll after registering, the notifier can set the flag and load
/// `sleepers` (still 0) between the waiter's first poll and its registration: nobody wakes
/// the waiter, and nothing re-checks the flag before it parks.
#[test]
#[should_panic(expected = "deadlock")]
fn hand_wait_any_without_repoll_deadlocks() {
    hand_wait_any_model("hand_wait_any_without_repoll_deadlocks", HandWaitAny::NoRepoll);
}
