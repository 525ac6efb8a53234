//! Loom models of the ring algorithms in `shmkit::queue::raw`: SPSC and MPMC transfers,
//! recovery of slots held by dead claimers, and the blocking hand-off over the rings'
//! `not_empty` / `not_full` wait cells.
//!
//! The slot array here is a loom `AtomicU64` stamp plus a `loom::cell::UnsafeCell<u64>`
//! payload per slot, so loom also checks every payload copy for data races: a slot written
//! while a consumer still reads it (or read before its producer published it) fails the model.
//! The model futex really blocks, so a lost wake-up is a reported deadlock.
//!
//! A thread that finds the ring full or empty (or the slot it needs held by a live peer
//! mid-copy) retries with `loom::thread::yield_now` where at most one thread can be waiting
//! at a time, and otherwise blocks on the ring's wait cells as the queues do: loom's
//! scheduler is not fair, so two threads yielding to each other in turn starve the third
//! one they wait for (see [`Retry`]).
//!
//! Each model asserts, across its executions, that the interesting interleavings were
//! reached (a waiter really parked, a recovery by either racer, ...), as `futex.rs` does,
//! so that none passes vacuously; and two control models at the end show that a lost
//! wake-up and an unsynchronised payload access do fail.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`
//! (add `-- --nocapture` to see the execution counts and times).
#![cfg(loom)]

mod common;

use common::{model, Seen};

use std::sync::atomic::{AtomicU32 as StdU32, AtomicUsize as StdUsize, Ordering::Relaxed as StdRelaxed};
use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::thread;
use shmkit::futex::{WaitCell, WaitStrategy};
use shmkit::queue::raw::mpmc::{self, PopStop, PushStop};
use shmkit::queue::raw::spsc::{self, Stop};
use shmkit::queue::raw::{Geometry, RingCtl, SlotArray, FLAVOR_MPMC, FLAVOR_SPSC};

/// Pid of the process that "died" holding a slot in the recovery models (no live thread
/// uses it).
const DEAD: u32 = 99;

// ---------------------------------------------------------------------------------------
// The ring under test: a control block and loom-checked slots
// ---------------------------------------------------------------------------------------

/// One slot per element: the MPMC stamp (unused by SPSC) and the 8-byte payload.
struct Slots {
    stamps: Vec<AtomicU64>,
    payload: Vec<UnsafeCell<u64>>,
}

impl SlotArray for Slots {
    fn stamp(&self, idx: usize) -> &AtomicU64 {
        &self.stamps[idx]
    }

    unsafe fn write(&self, idx: usize, f: impl FnOnce(*mut u8)) {
        // `with_mut` records a write access: loom fails the model if it races with any
        // other access to this payload.
        self.payload[idx].with_mut(|p| f(p.cast()))
    }

    unsafe fn read<R>(&self, idx: usize, f: impl FnOnce(*const u8) -> R) -> R {
        self.payload[idx].with(|p| f(p.cast()))
    }
}

/// A ring as a queue handle sees it: the shared control block and slots, and the geometry
/// (process-local in the real queue; immutable here).
struct Ring {
    ctl: RingCtl,
    slots: Slots,
    geo: Geometry,
    /// What happened in this execution, for the coverage checks (std atomics: invisible
    /// to loom, so they add no interleavings; fresh with each execution's ring).
    stats: Stats,
    /// Whether `push`/`pop` pass a wake-up on as `core::send`/`core::recv` do (false only
    /// in the control models that show why they must).
    baton: bool,
}

#[derive(Default)]
struct Stats {
    /// Pushes whose first attempt failed (they waited).
    push_waits: StdUsize,
    /// Pops whose first attempt failed.
    pop_waits: StdUsize,
    /// Pid of the last successful `recover_reader` / `recover_writer` caller.
    recovered_by: StdU32,
    /// Most messages one SPSC pop returned.
    max_popped: StdUsize,
}

// SAFETY: the payload cells are only accessed through the ring algorithms, whose ownership
// rules are exactly what these models check (loom reports any racing access).
unsafe impl Sync for Ring {}
// SAFETY: as above; the cells hold plain u64s.
unsafe impl Send for Ring {}

/// A fresh ring of `capacity` 8-byte messages, shared.
///
/// The `Arc` is std's, not loom's: loom's makes each clone and drop a scheduling point
/// (more interleavings, none of interest: the ring outlives every use), and a deadlock
/// detected inside a thread's final `Arc` drop unwinds through that drop and aborts the
/// whole test binary instead of failing one test.
fn ring(flavor: u32, capacity: usize) -> Arc<Ring> {
    Arc::new(new_ring(flavor, capacity))
}

/// A fresh ring of `capacity` 8-byte messages.
fn new_ring(flavor: u32, capacity: usize) -> Ring {
    let geo = Geometry::new(flavor, 8, capacity).unwrap();
    let ctl = RingCtl::default();
    geo.init(&ctl);
    let slots = Slots {
        stamps: (0..geo.slots).map(|_| AtomicU64::new(0)).collect(),
        payload: (0..geo.slots).map(|_| UnsafeCell::new(0)).collect(),
    };
    if flavor == FLAVOR_MPMC {
        mpmc::init(&slots, &geo);
    }
    assert_eq!(Geometry::read(&ctl, flavor, 8), Ok(geo));
    Ring { ctl, slots, geo, stats: Stats::default(), baton: true }
}

/// Writes `v` into a slot payload.
fn put(v: u64) -> impl FnOnce(*mut u8) {
    move |p: *mut u8| {
        // SAFETY: the ring hands us the slot's 8-byte, u64-aligned payload (a loom cell).
        unsafe { p.cast::<u64>().write(v) }
    }
}

/// Reads a slot payload.
fn get(p: *const u8) -> u64 {
    // SAFETY: as in `put`.
    unsafe { p.cast::<u64>().read() }
}

impl Ring {
    fn stamp(&self, idx: usize) -> u64 {
        self.slots.stamps[idx].load(Ordering::SeqCst)
    }

    // ---- SPSC --------------------------------------------------------------------------

    /// Pushes `values` in order, at most `batch` per call, yielding while full.
    fn spsc_push_all(&self, values: &[u64], batch: usize) {
        let mut c = spsc::producer_cursor(&self.ctl);
        let mut done = 0;
        while done < values.len() {
            let want = batch.min(values.len() - done);
            let chunk = &values[done..done + want];
            // SAFETY: the only producer; `put` writes 8 bytes.
            match unsafe {
                spsc::push(&self.ctl, &self.slots, &self.geo, &mut c, want, |i, p| put(chunk[i])(p))
            } {
                Ok(n) => {
                    assert!((1..=want).contains(&n), "push reported {n} of {want}");
                    done += n;
                }
                Err(Stop::Blocked) => {
                    self.stats.push_waits.fetch_add(1, StdRelaxed);
                    thread::yield_now();
                }
                Err(Stop::Corrupted) => panic!("SPSC push: head reported corrupted"),
            }
        }
    }

    /// Pops `count` values, at most `batch` per call, yielding while empty.
    fn spsc_pop_all(&self, count: usize, batch: usize) -> Vec<u64> {
        let mut c = spsc::consumer_cursor(&self.ctl);
        let mut got = Vec::with_capacity(count);
        while got.len() < count {
            let want = batch.min(count - got.len());
            let before = got.len();
            // SAFETY: the only consumer; `get` reads 8 bytes.
            match unsafe {
                spsc::pop(&self.ctl, &self.slots, &self.geo, &mut c, want, |i, p| {
                    assert_eq!(i, got.len() - before, "read callbacks out of order");
                    got.push(get(p));
                })
            } {
                Ok(n) => {
                    assert_eq!(n, got.len() - before, "pop count differs from reads");
                    self.stats.max_popped.fetch_max(n, StdRelaxed);
                }
                Err(Stop::Blocked) => {
                    self.stats.pop_waits.fetch_add(1, StdRelaxed);
                    thread::yield_now();
                }
                Err(Stop::Corrupted) => panic!("SPSC pop: tail reported corrupted"),
            }
        }
        got
    }

    // ---- MPMC --------------------------------------------------------------------------

    /// One push attempt.
    fn try_push(&self, me: u32, blind: bool, v: u64) -> Result<(), PushStop> {
        // SAFETY: `put` writes 8 bytes.
        unsafe { mpmc::push(&self.ctl, &self.slots, &self.geo, me, blind, put(v)) }
    }

    /// One pop attempt.
    fn try_pop(&self, me: u32, blind: bool) -> Result<u64, PopStop> {
        // SAFETY: `get` reads 8 bytes.
        unsafe { mpmc::pop(&self.ctl, &self.slots, &self.geo, me, blind, get) }
    }

    /// One push attempt as `core::attempt_push` makes it: true if pushed. A slot held in
    /// READING by `DEAD` is freed with `recover_reader` (and the caller polls again); a live
    /// reader or a full ring is "not now".
    fn attempt_push(&self, me: u32, blind: bool, v: u64) -> bool {
        match self.try_push(me, blind, v) {
            Ok(()) => true,
            Err(PushStop::Full) => false,
            Err(PushStop::Reader { idx, stamp, pid }) => {
                let st = mpmc::decode(stamp);
                assert_eq!((st.phase, st.pid), (mpmc::READING, pid), "Reader stop with a non-READING stamp");
                if pid == DEAD && mpmc::recover_reader(&self.ctl, &self.slots, &self.geo, idx, stamp, me) {
                    self.stats.recovered_by.store(me, StdRelaxed);
                }
                false
            }
            Err(PushStop::Corrupted) => panic!(
                "MPMC push by {me} of {v}: Corrupted (tail {}, head {}, stamps {:?})",
                self.ctl.tail.load(Ordering::SeqCst),
                self.ctl.head.load(Ordering::SeqCst),
                self.stamps(),
            ),
        }
    }

    /// One pop attempt as `core::attempt_pop` makes it: a slot held in WRITING by `DEAD`
    /// is skipped with `recover_writer` (which frees a slot: `not_full` is notified) and
    /// the pop goes on; a live writer mid-copy or an empty ring is "not now".
    fn attempt_pop(&self, me: u32, blind: bool) -> Option<u64> {
        loop {
            match self.try_pop(me, blind) {
                Ok(v) => return Some(v),
                Err(PopStop::Empty) => return None,
                Err(PopStop::Writer { pos, stamp, pid }) => {
                    let st = mpmc::decode(stamp);
                    assert_eq!(
                        (st.phase, st.pid),
                        (mpmc::WRITING, pid),
                        "Writer stop with a non-WRITING stamp"
                    );
                    if pid == DEAD && mpmc::recover_writer(&self.ctl, &self.slots, &self.geo, pos, stamp, me)
                    {
                        self.stats.recovered_by.store(me, StdRelaxed);
                        self.ctl.not_full.notify_one();
                        continue;
                    }
                    return None;
                }
                Err(PopStop::Corrupted) => panic!(
                    "MPMC pop by {me}: Corrupted (tail {}, head {}, stamps {:?})",
                    self.ctl.tail.load(Ordering::SeqCst),
                    self.ctl.head.load(Ordering::SeqCst),
                    self.stamps(),
                ),
            }
        }
    }

    /// Pushes `v`, waiting as `retry` says while the ring is full: the first attempt
    /// `blind`, the retries loading first (as `core::send`). Notifies `not_empty` after.
    fn push(&self, retry: Retry, me: u32, blind: bool, v: u64) {
        if !self.attempt_push(me, blind, v) {
            self.stats.push_waits.fetch_add(1, StdRelaxed);
            match retry {
                Retry::Yield => {
                    while !self.attempt_push(me, false, v) {
                        thread::yield_now();
                    }
                }
                Retry::Block => {
                    let poll = || self.attempt_push(me, false, v).then_some(());
                    self.ctl.not_full.wait_for(poll, None).unwrap();
                }
                Retry::Park => {
                    let poll = || self.attempt_push(me, false, v).then_some(());
                    self.ctl.not_full.wait_with(WaitStrategy::SLEEP, poll, None).unwrap();
                }
            }
        }
        self.ctl.not_empty.notify_one();
        if self.baton {
            self.ctl.not_full.notify_one_if(|| mpmc::tail_free(&self.ctl, &self.slots, &self.geo));
        }
    }

    /// Pops a value, as `push` waits (`core::recv`). Notifies `not_full` after, and passes a
    /// wake-up on to another consumer if the next message is ready (as `core::recv`).
    fn pop(&self, retry: Retry, me: u32, blind: bool) -> u64 {
        let v = match self.attempt_pop(me, blind) {
            Some(v) => v,
            None => {
                self.stats.pop_waits.fetch_add(1, StdRelaxed);
                let poll = || self.attempt_pop(me, false);
                match retry {
                    Retry::Yield => loop {
                        if let Some(v) = poll() {
                            break v;
                        }
                        thread::yield_now();
                    },
                    Retry::Block => self.ctl.not_empty.wait_for(poll, None).unwrap(),
                    Retry::Park => self.ctl.not_empty.wait_with(WaitStrategy::SLEEP, poll, None).unwrap(),
                }
            }
        };
        self.ctl.not_full.notify_one();
        if self.baton {
            self.ctl.not_empty.notify_one_if(|| mpmc::head_ready(&self.ctl, &self.slots, &self.geo));
        }
        v
    }

    /// The decoded stamps, for failure messages.
    fn stamps(&self) -> Vec<mpmc::Stamp> {
        (0..self.geo.slots as usize).map(|i| mpmc::decode(self.stamp(i))).collect()
    }

    /// Checks a quiescent MPMC ring that transferred `n` positions: both hints caught up,
    /// every slot free for its next lap, and nothing left to pop.
    fn assert_drained(&self, n: u64) {
        assert_eq!(self.ctl.tail.load(Ordering::SeqCst), n, "tail");
        assert_eq!(self.ctl.head.load(Ordering::SeqCst), n, "head");
        for pos in n..n + self.geo.slots {
            let idx = (pos & self.geo.mask()) as usize;
            assert_eq!(self.stamp(idx), mpmc::encode(pos, mpmc::EMPTY, 0), "slot {idx} not free for {pos}");
        }
        assert_eq!(self.try_pop(1000, false), Err(PopStop::Empty));
    }
}

/// How an MPMC model waits while the ring is full or empty.
#[derive(Clone, Copy, Debug)]
enum Retry {
    /// Retry with `loom::thread::yield_now` between attempts. Only for models where at most
    /// one thread can be waiting at a time: loom's scheduler is not fair, and two threads
    /// that yield to each other in turn make an endless execution that starves the third
    /// (the one they wait for), which ends the model with "Model exceeded maximum number of
    /// branches". Seen with 2 producers and a consumer on a ring of capacity 1.
    Yield,
    /// Block on the ring's wait cells (`not_full` / `not_empty`), as `core::send` and
    /// `core::recv` do. A parked thread is not runnable, so the thread it waits for runs.
    Block,
    /// As `Block`, but parking at once (`WaitStrategy::SLEEP`): fewer polls to interleave,
    /// for the larger models (`wait_for`'s spin and yield polls are covered by `Block` and
    /// the hand-off models).
    Park,
}

/// The `i`-th value of producer `k` (never 0, so an unwritten payload shows).
fn value(k: u64, i: u64) -> u64 {
    100 * (k + 1) + i
}

/// The values from producer `k` in `got`, in the order received.
fn from_producer(got: &[u64], k: u64) -> Vec<u64> {
    got.iter().copied().filter(|&v| v / 100 == k + 1).collect()
}

// ---------------------------------------------------------------------------------------
// 1. SPSC
// ---------------------------------------------------------------------------------------

/// One producer pushes 1, 2, 3, 4 (up to `push_batch` per call), one consumer pops them
/// (up to `pop_batch` per call): in order, exactly once, and no payload race, through a
/// ring that wraps at least twice.
fn spsc_transfer(capacity: usize, push_batch: usize, pop_batch: usize) {
    const VALUES: [u64; 4] = [1, 2, 3, 4];
    let (producer_waited, consumer_waited, popped_pair) = (Seen::default(), Seen::default(), Seen::default());
    let (pw, cw, pp) = (producer_waited.clone(), consumer_waited.clone(), popped_pair.clone());
    let name = format!("spsc cap {capacity} push_batch {push_batch} pop_batch {pop_batch}");
    let explored = model(name, move || {
        let r = ring(FLAVOR_SPSC, capacity);
        let r2 = r.clone();
        let producer = thread::spawn(move || r2.spsc_push_all(&VALUES, push_batch));
        let got = r.spsc_pop_all(VALUES.len(), pop_batch);
        producer.join().unwrap();
        assert_eq!(got, VALUES);
        assert_eq!(spsc::len(&r.ctl, &r.geo), 0);
        assert_eq!(r.ctl.tail.load(Ordering::SeqCst), 4);
        assert_eq!(r.ctl.head.load(Ordering::SeqCst), 4);
        if r.stats.push_waits.load(StdRelaxed) != 0 {
            pw.mark();
        }
        if r.stats.pop_waits.load(StdRelaxed) != 0 {
            cw.mark();
        }
        if r.stats.max_popped.load(StdRelaxed) >= 2 {
            pp.mark();
        }
    });
    explored.reached(&producer_waited, "the producer finding the ring full");
    explored.reached(&consumer_waited, "the consumer finding the ring empty");
    if pop_batch >= 2 && capacity >= 2 {
        explored.reached(&popped_pair, "one pop taking two messages");
    }
}

#[test]
fn spsc_in_order_exactly_once_cap1() {
    spsc_transfer(1, 1, 1);
}

#[test]
fn spsc_in_order_exactly_once_cap2() {
    spsc_transfer(2, 1, 1);
}

#[test]
fn spsc_batch_push_of_two_cap1() {
    spsc_transfer(1, 2, 1);
}

#[test]
fn spsc_batch_push_and_pop_of_two_cap2() {
    spsc_transfer(2, 2, 2);
}

/// A batch push into an empty ring of 2 publishes both slots with one store of `tail`: a
/// consumer asking for two gets both in one pop, never the first alone.
#[test]
fn spsc_batch_publish_is_atomic_cap2() {
    let saw_pair = Seen::default();
    let s = saw_pair.clone();
    let explored = model("spsc batch publish cap 2", move || {
        let r = ring(FLAVOR_SPSC, 2);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            let mut c = spsc::producer_cursor(&r2.ctl);
            // SAFETY: the only producer; `put` writes 8 bytes.
            let n =
                unsafe { spsc::push(&r2.ctl, &r2.slots, &r2.geo, &mut c, 2, |i, p| put(7 + i as u64)(p)) };
            assert_eq!(n, Ok(2), "an empty ring of 2 takes a batch of 2");
        });
        let mut c = spsc::consumer_cursor(&r.ctl);
        let mut got = Vec::new();
        loop {
            // SAFETY: the only consumer; `get` reads 8 bytes.
            match unsafe { spsc::pop(&r.ctl, &r.slots, &r.geo, &mut c, 2, |_, p| got.push(get(p))) } {
                Ok(n) => {
                    assert_eq!(n, 2, "a batch published with one store is seen whole");
                    s.mark();
                    break;
                }
                Err(Stop::Blocked) => thread::yield_now(),
                Err(Stop::Corrupted) => panic!("corrupted"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got, [7, 8]);
    });
    explored.reached(&saw_pair, "the consumer popping the pair");
}

// ---------------------------------------------------------------------------------------
// 2. MPMC
// ---------------------------------------------------------------------------------------

/// An MPMC transfer: producer `k` (pid `k + 1`) pushes `pushes[k]` values, consumer `c`
/// (pid `11 + c`; the first on the model's main thread) pops `pops[c]`. Every value arrives
/// exactly once, and every consumer receives each producer's values in the order pushed.
struct Transfer {
    capacity: usize,
    /// Values each producer pushes.
    pushes: &'static [u64],
    /// Values each consumer pops.
    pops: &'static [u64],
    /// The `blind` flag of every push's and pop's first attempt.
    blind: bool,
    retry: Retry,
}

impl Transfer {
    fn run(self) {
        let Transfer { capacity, pushes, pops, blind, retry } = self;
        let total: u64 = pushes.iter().sum();
        assert_eq!(pops.iter().sum::<u64>(), total);
        let interleaved = Seen::default();
        let seen = interleaved.clone();
        let name = format!(
            "mpmc {}P {pushes:?} -> {}C {pops:?} cap {capacity} blind {blind} {retry:?}",
            pushes.len(),
            pops.len()
        );
        let explored = model(name, move || {
            let r = ring(FLAVOR_MPMC, capacity);
            let producer_threads: Vec<_> = (0..pushes.len() as u64)
                .map(|k| {
                    let r = r.clone();
                    thread::spawn(move || {
                        for i in 0..pushes[k as usize] {
                            r.push(retry, k as u32 + 1, blind, value(k, i));
                        }
                    })
                })
                .collect();
            let consumer = move |r: &Ring, c: usize| -> Vec<u64> {
                (0..pops[c]).map(|_| r.pop(retry, 11 + c as u32, blind)).collect()
            };
            let consumer_threads: Vec<_> = (1..pops.len())
                .map(|c| {
                    let r = r.clone();
                    thread::spawn(move || consumer(&r, c))
                })
                .collect();
            let mut per = vec![consumer(&r, 0)];
            per.extend(consumer_threads.into_iter().map(|t| t.join().unwrap()));
            for p in producer_threads {
                p.join().unwrap();
            }
            for got in &per {
                for k in 0..pushes.len() as u64 {
                    let mine = from_producer(got, k);
                    assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {k}'s order broken: {per:?}");
                }
            }
            let mut all = per.concat();
            all.sort_unstable();
            let want: Vec<u64> = (0..pushes.len() as u64)
                .flat_map(|k| (0..pushes[k as usize]).map(move |i| value(k, i)))
                .collect();
            assert_eq!(all, want, "not exactly once: {per:?}");
            // Some execution reorders: the main thread's consumer does not receive producer
            // 0's first value first (another producer or another consumer got ahead).
            if per[0][0] != value(0, 0) {
                seen.mark();
            }
            r.assert_drained(total);
        });
        explored.reached(&interleaved, "an interleaving of the transfers");
    }
}

// Two producers, one consumer. At capacity 1 each producer sends one value (a second one
// from producer 0 makes 1.4 million executions, two minutes); at capacity 2 producer 0
// sends two, so its order is checked against producer 1's value arriving in between.

#[test]
fn mpmc_two_producers_cap1() {
    Transfer { capacity: 1, pushes: &[1, 1], pops: &[2], blind: false, retry: Retry::Park }.run();
}

#[test]
fn mpmc_two_producers_cap1_blind() {
    Transfer { capacity: 1, pushes: &[1, 1], pops: &[2], blind: true, retry: Retry::Park }.run();
}

#[test]
fn mpmc_two_producers_cap2() {
    Transfer { capacity: 2, pushes: &[2, 1], pops: &[3], blind: false, retry: Retry::Block }.run();
}

#[test]
fn mpmc_two_producers_cap2_blind() {
    Transfer { capacity: 2, pushes: &[2, 1], pops: &[3], blind: true, retry: Retry::Block }.run();
}

#[test]
fn mpmc_two_producers_cap2_yield() {
    // The ring never fills, so only the consumer ever waits: retrying with yields ends.
    for blind in [false, true] {
        Transfer { capacity: 2, pushes: &[1, 1], pops: &[2], blind, retry: Retry::Yield }.run();
    }
}

// One producer sends two values, two consumers take one each. (Capacity 1 with loading
// first attempts is left out: 120,000 executions, 10 to 30 s; its pops and pushes are
// covered by `mpmc_two_producers_cap1` and its two consumers by `mpmc_two_consumers_cap2`.)

#[test]
fn mpmc_two_consumers_cap1_blind() {
    Transfer { capacity: 1, pushes: &[2], pops: &[1, 1], blind: true, retry: Retry::Park }.run();
}

#[test]
fn mpmc_two_consumers_cap2() {
    Transfer { capacity: 2, pushes: &[2], pops: &[1, 1], blind: false, retry: Retry::Block }.run();
}

#[test]
fn mpmc_two_consumers_cap2_blind() {
    Transfer { capacity: 2, pushes: &[2], pops: &[1, 1], blind: true, retry: Retry::Block }.run();
}

// ---------------------------------------------------------------------------------------
// 3. Recovery from dead claimers
// ---------------------------------------------------------------------------------------

/// A producer `DEAD` claimed position 0 (stamp `WRITING(0, DEAD)`) and died before copying;
/// if `tail_moved`, it had also advanced `tail` to 1. A consumer that finds the slot skips
/// it with `recover_writer` while a live producer pushes the next message: that message
/// is delivered exactly once, and the skipped slot is counted once in `abandoned`.
fn recover_dead_writer(capacity: usize, tail_moved: bool) {
    let (consumer_waited, consumer_did_not_wait) = (Seen::default(), Seen::default());
    let (w, nw) = (consumer_waited.clone(), consumer_did_not_wait.clone());
    let name = format!("recover_writer cap {capacity} tail moved {tail_moved}");
    let explored = model(name, move || {
        let r = ring(FLAVOR_MPMC, capacity);
        r.slots.stamps[0].store(mpmc::encode(0, mpmc::WRITING, DEAD), Ordering::Relaxed);
        if tail_moved {
            r.ctl.tail.store(1, Ordering::Relaxed);
        }
        let r2 = r.clone();
        let producer = thread::spawn(move || r2.push(Retry::Yield, 1, true, 42));
        let got = r.pop(Retry::Yield, 11, true);
        producer.join().unwrap();
        assert_eq!(r.stats.recovered_by.load(StdRelaxed), 11);
        // The consumer skipped the dead slot before the live message was published (and
        // waited for it), or found it published right after the skip.
        match r.stats.pop_waits.load(StdRelaxed) {
            0 => nw.mark(),
            _ => w.mark(),
        }
        assert_eq!(got, 42);
        assert_eq!(r.ctl.abandoned.load(Ordering::SeqCst), 1, "the dead slot is skipped exactly once");
        assert_eq!(r.ctl.lost.load(Ordering::SeqCst), 0);
        r.assert_drained(2);
    });
    explored.reached(&consumer_waited, "the skip before the live message was published");
    explored.reached(&consumer_did_not_wait, "the live message found right after the skip");
}

#[test]
fn recover_writer_tail_moved_cap1() {
    recover_dead_writer(1, true);
}

#[test]
fn recover_writer_tail_moved_cap2() {
    recover_dead_writer(2, true);
}

/// The writer died between its stamp CAS and its `tail` CAS, and no producer helped
/// `tail` past it before the consumer skipped the slot. (Before commit 211afe7,
/// `recover_writer` left `tail` behind the freed stamp and the next push returned
/// `Corrupted` forever: these two models fail against that version.)
#[test]
fn recover_writer_tail_left_cap1() {
    recover_dead_writer(1, false);
}

#[test]
fn recover_writer_tail_left_cap2() {
    recover_dead_writer(2, false);
}

/// Two consumers find the dead writer's slot at once (one through `pop`, the other calling
/// `recover_writer` with the stamp it saw): exactly one wins, the slot is skipped once, and
/// the message behind it is delivered.
#[test]
fn recover_writer_two_consumers_race() {
    let won = [Seen::default(), Seen::default()];
    let won2 = won.clone();
    let explored = model("recover_writer two consumers", move || {
        let r = ring(FLAVOR_MPMC, 2);
        r.slots.stamps[0].store(mpmc::encode(0, mpmc::WRITING, DEAD), Ordering::Relaxed);
        r.ctl.tail.store(1, Ordering::Relaxed);
        // A message at position 1, published before the consumers start.
        r.push(Retry::Yield, 1, false, 42);
        let r2 = r.clone();
        let other = thread::spawn(move || {
            let stamp = mpmc::encode(0, mpmc::WRITING, DEAD);
            mpmc::recover_writer(&r2.ctl, &r2.slots, &r2.geo, 0, stamp, 12)
        });
        let got = r.pop(Retry::Yield, 11, false);
        let other_won = other.join().unwrap();
        assert_eq!(got, 42);
        assert_eq!(r.ctl.abandoned.load(Ordering::SeqCst), 1, "skipped once (other won: {other_won})");
        assert_eq!(r.stats.recovered_by.load(StdRelaxed) == 11, !other_won, "exactly one recovery");
        won2[other_won as usize].mark();
        r.assert_drained(2);
    });
    explored.reached(&won[0], "the popping consumer's recovery");
    explored.reached(&won[1], "the other consumer's recovery");
}

/// The writer of position 0 died before moving `tail`; a live producer sends two messages
/// while two consumers receive one each, both able to skip the dead slot: one skip, each
/// message delivered once.
fn recover_writer_two_consumers_full(capacity: usize) {
    let by = [Seen::default(), Seen::default()];
    let by2 = by.clone();
    let explored = model(format!("recover_writer 1P x 2C cap {capacity}"), move || {
        let r = ring(FLAVOR_MPMC, capacity);
        r.slots.stamps[0].store(mpmc::encode(0, mpmc::WRITING, DEAD), Ordering::Relaxed);
        let rp = r.clone();
        let producer = thread::spawn(move || {
            for i in 0..2 {
                rp.push(Retry::Park, 1, true, value(0, i));
            }
        });
        let rc = r.clone();
        let other = thread::spawn(move || rc.pop(Retry::Park, 12, true));
        let mut got = vec![r.pop(Retry::Park, 11, true), other.join().unwrap()];
        producer.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, [value(0, 0), value(0, 1)]);
        assert_eq!(r.ctl.abandoned.load(Ordering::SeqCst), 1, "the dead slot is skipped exactly once");
        r.assert_drained(3);
        by2[r.stats.recovered_by.load(StdRelaxed) as usize - 11].mark();
    });
    explored.reached(&by[0], "the recovery by consumer 11");
    explored.reached(&by[1], "the recovery by consumer 12");
}

/// Capacity 1: the dead slot fills the ring, so the producer waits for a skip. (Capacity 2
/// takes as long again and adds little: `recover_writer_tail_left_cap2` covers the skip
/// racing a push into the other slot.)
#[test]
fn recover_writer_two_consumers_cap1() {
    recover_writer_two_consumers_full(1);
}

/// A consumer `DEAD` claimed position 0 (stamp `READING(0, DEAD)`) and died mid-read; if
/// `head_moved`, it had also advanced `head` to 1. Two live producers each push one value
/// into the ring of capacity 1 (both find the slot held, both may try `recover_reader`)
/// while a consumer pops two: the slot is freed once (`lost` == 1), and each value is
/// delivered exactly once.
fn recover_dead_reader(head_moved: bool) {
    let by = [Seen::default(), Seen::default()];
    let by2 = by.clone();
    let name = format!("recover_reader two producers cap 1 head moved {head_moved}");
    let explored = model(name, move || {
        let r = ring(FLAVOR_MPMC, 1);
        // Position 0 was published, then claimed by the dead consumer.
        r.push(Retry::Yield, 1, false, 41);
        r.slots.stamps[0].store(mpmc::encode(0, mpmc::READING, DEAD), Ordering::Relaxed);
        if head_moved {
            r.ctl.head.store(1, Ordering::Relaxed);
        }
        let producers: Vec<_> = (0..2u64)
            .map(|k| {
                let r = r.clone();
                thread::spawn(move || r.push(Retry::Park, k as u32 + 1, true, value(k, 0)))
            })
            .collect();
        let mut got = vec![r.pop(Retry::Park, 11, true), r.pop(Retry::Park, 11, true)];
        for p in producers {
            p.join().unwrap();
        }
        got.sort_unstable();
        assert_eq!(got, [value(0, 0), value(1, 0)]);
        assert_eq!(r.ctl.lost.load(Ordering::SeqCst), 1, "the dead reader's slot is freed exactly once");
        assert_eq!(r.ctl.abandoned.load(Ordering::SeqCst), 0);
        r.assert_drained(3);
        let recoverer = r.stats.recovered_by.load(StdRelaxed);
        assert!(recoverer == 1 || recoverer == 2, "recovered by {recoverer}");
        by2[recoverer as usize - 1].mark();
    });
    explored.reached(&by[0], "the recovery by producer 1");
    explored.reached(&by[1], "the recovery by producer 2");
}

#[test]
fn recover_reader_head_moved_two_producers() {
    recover_dead_reader(true);
}

/// The reader died between its stamp CAS and its `head` CAS. (Before commit 211afe7,
/// `recover_reader` left `head` behind the freed stamp and the next pop returned
/// `Corrupted` forever: this model fails against that version.)
#[test]
fn recover_reader_head_left_two_producers() {
    recover_dead_reader(false);
}

// ---------------------------------------------------------------------------------------
// 4. Blocking hand-off over the wait cells
// ---------------------------------------------------------------------------------------

impl Ring {
    /// One send attempt on either flavour (`c`: the SPSC producer's cursor; unused by
    /// MPMC, which sends as pid 1): true if sent.
    fn send_once(&self, c: &mut spsc::Cursor, v: u64) -> bool {
        if self.geo.flavor == FLAVOR_MPMC {
            return match self.try_push(1, false, v) {
                Ok(()) => true,
                Err(PushStop::Full | PushStop::Reader { .. }) => false,
                Err(PushStop::Corrupted) => panic!("MPMC push: Corrupted"),
            };
        }
        // SAFETY: the only producer, with its cursor; `put` writes 8 bytes.
        match unsafe { spsc::push(&self.ctl, &self.slots, &self.geo, c, 1, |_, p| put(v)(p)) } {
            Ok(n) => {
                assert_eq!(n, 1);
                true
            }
            Err(Stop::Blocked) => false,
            Err(Stop::Corrupted) => panic!("SPSC push: Corrupted"),
        }
    }

    /// One receive attempt on either flavour (`c`: the SPSC consumer's cursor; MPMC
    /// receives as pid 11).
    fn recv_once(&self, c: &mut spsc::Cursor) -> Option<u64> {
        if self.geo.flavor == FLAVOR_MPMC {
            return match self.try_pop(11, false) {
                Ok(v) => Some(v),
                Err(PopStop::Empty | PopStop::Writer { .. }) => None,
                Err(PopStop::Corrupted) => panic!("MPMC pop: Corrupted"),
            };
        }
        let mut v = None;
        // SAFETY: the only consumer, with its cursor; `get` reads 8 bytes.
        match unsafe { spsc::pop(&self.ctl, &self.slots, &self.geo, c, 1, |_, p| v = Some(get(p))) } {
            Ok(n) => {
                assert_eq!(n, 1);
                v
            }
            Err(Stop::Blocked) => None,
            Err(Stop::Corrupted) => panic!("SPSC pop: Corrupted"),
        }
    }
}

/// How a hand-off model's waiter waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    /// `WaitCell::wait_for`: the adaptive strategy (under loom one spin and one yield
    /// before parking), as the queues use it.
    WaitFor,
    /// `wait_with(WaitStrategy::SLEEP)`: parks at the first failed poll.
    Sleep,
}

impl Waiter {
    fn wait<R>(self, cell: &WaitCell, poll: impl FnMut() -> Option<R>) -> R {
        match self {
            Waiter::WaitFor => cell.wait_for(poll, None),
            Waiter::Sleep => cell.wait_with(WaitStrategy::SLEEP, poll, None),
        }
        .unwrap()
    }
}

fn flavor_name(flavor: u32) -> &'static str {
    if flavor == FLAVOR_MPMC {
        "mpmc"
    } else {
        "spsc"
    }
}

/// A consumer blocks in `not_empty` (polling a pop) until a producer pushes into the empty
/// ring of capacity 1 and calls `not_empty.notify_one()`. A lost wake-up leaves the
/// consumer asleep in the model futex: a loom deadlock. `park` says whether some execution
/// must find the consumer announced as a sleeper when the producer notifies.
fn blocking_pop(flavor: u32, waiter: Waiter, park: bool) {
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model(format!("not_empty hand-off {} {waiter:?}", flavor_name(flavor)), move || {
        let r = ring(flavor, 1);
        let (r2, f2) = (r.clone(), f.clone());
        let producer = thread::spawn(move || {
            let mut c = spsc::producer_cursor(&r2.ctl);
            assert!(r2.send_once(&mut c, 42), "an empty ring takes a message");
            if r2.ctl.not_empty.sleepers() != 0 {
                f2.mark();
            }
            r2.ctl.not_empty.notify_one();
        });
        let mut c = spsc::consumer_cursor(&r.ctl);
        assert_eq!(waiter.wait(&r.ctl.not_empty, || r.recv_once(&mut c)), 42);
        producer.join().unwrap();
        assert_eq!(r.ctl.not_empty.sleepers(), 0, "a returned waiter left its sleeper count");
    });
    if park {
        explored.reached(&found_sleeper, "the producer finding the consumer announced");
    }
}

#[test]
fn not_empty_handoff_mpmc() {
    blocking_pop(FLAVOR_MPMC, Waiter::WaitFor, true);
}

/// The SPSC producer publishes with a single store of `tail`, after loads the consumer's
/// polls do not conflict with, so loom never preempts it before that store and the
/// `wait_for` consumer always sees the message after its first snooze: it never parks
/// here. The `Sleep` variant parks at once, and `duplex_spsc` parks with `wait_for`.
#[test]
fn not_empty_handoff_spsc() {
    blocking_pop(FLAVOR_SPSC, Waiter::WaitFor, false);
    blocking_pop(FLAVOR_SPSC, Waiter::Sleep, true);
}

/// A producer blocks in `not_full` (polling a push) on a full ring of capacity 1 until a
/// consumer pops and calls `not_full.notify_one()`.
fn blocking_push(flavor: u32, waiter: Waiter, park: bool) {
    let found_sleeper = Seen::default();
    let f = found_sleeper.clone();
    let explored = model(format!("not_full hand-off {} {waiter:?}", flavor_name(flavor)), move || {
        let r = ring(flavor, 1);
        let mut c = spsc::producer_cursor(&r.ctl);
        assert!(r.send_once(&mut c, 41));
        let (r2, f2) = (r.clone(), f.clone());
        let consumer = thread::spawn(move || {
            let mut c = spsc::consumer_cursor(&r2.ctl);
            assert_eq!(r2.recv_once(&mut c), Some(41), "a full ring has a message");
            if r2.ctl.not_full.sleepers() != 0 {
                f2.mark();
            }
            r2.ctl.not_full.notify_one();
        });
        waiter.wait(&r.ctl.not_full, || r.send_once(&mut c, 42).then_some(()));
        consumer.join().unwrap();
        assert_eq!(r.ctl.not_full.sleepers(), 0, "a returned waiter left its sleeper count");
        // The second message is in the ring (the consumer's cursor starts after the first).
        assert_eq!(r.recv_once(&mut spsc::consumer_cursor(&r.ctl)), Some(42));
    });
    if park {
        explored.reached(&found_sleeper, "the consumer finding the producer announced");
    }
}

#[test]
fn not_full_handoff_mpmc() {
    blocking_push(FLAVOR_MPMC, Waiter::WaitFor, true);
}

/// As `not_empty_handoff_spsc`: the consumer frees the slot with one store of `head`.
#[test]
fn not_full_handoff_spsc() {
    blocking_push(FLAVOR_SPSC, Waiter::WaitFor, false);
    blocking_push(FLAVOR_SPSC, Waiter::Sleep, true);
}

/// Both directions at once, as the blocking queues run: a producer sends `n` messages
/// through a ring of capacity 1, waiting on `not_full` and notifying `not_empty` after
/// each; the consumer receives them, waiting on `not_empty` and notifying `not_full`.
/// Both wait with `wait_for`.
fn duplex(flavor: u32, n: u64) {
    let (empty_sleeper, full_sleeper) = (Seen::default(), Seen::default());
    let (e, f) = (empty_sleeper.clone(), full_sleeper.clone());
    let explored = model(format!("duplex {} {n} messages cap 1", flavor_name(flavor)), move || {
        let r = ring(flavor, 1);
        let (r2, e2) = (r.clone(), e.clone());
        let producer = thread::spawn(move || {
            let mut c = spsc::producer_cursor(&r2.ctl);
            for i in 0..n {
                Waiter::WaitFor.wait(&r2.ctl.not_full, || r2.send_once(&mut c, value(0, i)).then_some(()));
                if r2.ctl.not_empty.sleepers() != 0 {
                    e2.mark();
                }
                r2.ctl.not_empty.notify_one();
            }
        });
        let mut c = spsc::consumer_cursor(&r.ctl);
        for i in 0..n {
            assert_eq!(Waiter::WaitFor.wait(&r.ctl.not_empty, || r.recv_once(&mut c)), value(0, i));
            if r.ctl.not_full.sleepers() != 0 {
                f.mark();
            }
            r.ctl.not_full.notify_one();
        }
        producer.join().unwrap();
        assert_eq!(r.ctl.not_empty.sleepers() + r.ctl.not_full.sleepers(), 0);
        assert_eq!(r.recv_once(&mut c), None);
    });
    explored.reached(&empty_sleeper, "the producer finding the consumer announced");
    explored.reached(&full_sleeper, "the consumer finding the producer announced");
}

#[test]
fn duplex_mpmc() {
    duplex(FLAVOR_MPMC, 2);
}

#[test]
fn duplex_spsc() {
    duplex(FLAVOR_SPSC, 3);
}

// ---------------------------------------------------------------------------------------
// 5. Controls: the models can fail
// ---------------------------------------------------------------------------------------

/// A producer that notifies *before* publishing loses the wake-up when the consumer parks
/// in between: loom must report the deadlock (so the hand-off models above are not
/// vacuous).
#[test]
#[should_panic(expected = "deadlock")]
fn control_notify_before_push_deadlocks() {
    model("control: notify before push", || {
        let r = ring(FLAVOR_MPMC, 1);
        let r2 = r.clone();
        let producer = thread::spawn(move || {
            r2.ctl.not_empty.notify_one();
            let mut c = spsc::producer_cursor(&r2.ctl);
            assert!(r2.send_once(&mut c, 42));
        });
        let mut c = spsc::consumer_cursor(&r.ctl);
        assert_eq!(Waiter::Sleep.wait(&r.ctl.not_empty, || r.recv_once(&mut c)), 42);
        producer.join().unwrap();
    });
}

/// A consumer whose cursor claims a message it never acquired through `tail` reads the
/// slot while the producer writes it: loom must report the payload race (so the slot
/// cells really check the rings' ownership hand-offs).
#[test]
#[should_panic(expected = "Causality violation")]
fn control_unsynchronised_payload_read_is_a_race() {
    model("control: unsynchronised read", || {
        let r = ring(FLAVOR_SPSC, 1);
        let r2 = r.clone();
        let producer = thread::spawn(move || r2.spsc_push_all(&[42], 1));
        // A cached `other` of 1: "one message ready", without having loaded `tail`.
        let mut c = spsc::Cursor { own: 0, other: 1 };
        // SAFETY: deliberately broken: the model must catch the race.
        let _ = unsafe {
            spsc::pop(&r.ctl, &r.slots, &r.geo, &mut c, 1, |_, p| {
                get(p);
            })
        };
        producer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------------------
// 6. Wake-ups consumed by a waiter blocked behind a slow claimer
// ---------------------------------------------------------------------------------------

/// A ring whose `push`/`pop` pass wake-ups on (`baton`, as `core` does) or not (the
/// control that shows why).
fn ring_with_baton(capacity: usize, baton: bool) -> Arc<Ring> {
    let mut r = new_ring(FLAVOR_MPMC, capacity);
    r.baton = baton;
    Arc::new(r)
}

/// Two consumers block in `recv` on an empty ring of 2. Producer 1 claims position 0 and is
/// slow to copy (it waits inside its write until producer 2 has published position 1).
/// Producer 2's `notify_one` can wake a consumer that finds position 0 still in WRITING
/// (`PopStop::Writer`, a live writer: "empty for now"), which parks again: that wake-up is
/// spent. Producer 1's publish then wakes one consumer, which takes position 0 and returns;
/// without `baton` nobody wakes the other for position 1. With it (as `core::recv`), a
/// consumer that pops passes a wake-up on when the next message is already published.
fn writer_blocked_head(baton: bool) {
    model(format!("writer-blocked head, baton {baton}"), move || {
        let r = ring_with_baton(2, baton);
        let published = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let consumers: Vec<_> = (0..2u32)
            .map(|k| {
                let r = r.clone();
                thread::spawn(move || r.pop(Retry::Park, 11 + k, false))
            })
            .collect();
        let (r1, p1) = (r.clone(), published.clone());
        let slow = thread::spawn(move || {
            let write = |p: *mut u8| {
                while !p1.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                put(value(0, 0))(p)
            };
            // SAFETY: `write` writes 8 bytes.
            let pushed = unsafe { mpmc::push(&r1.ctl, &r1.slots, &r1.geo, 1, false, write) };
            assert_eq!(pushed, Ok(()));
            r1.ctl.not_empty.notify_one();
        });
        // Producer 2 (this thread) claims position 1 once producer 1 holds position 0.
        while r.ctl.tail.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        r.push(Retry::Park, 2, false, value(1, 0));
        published.store(true, Ordering::Release);
        slow.join().unwrap();
        let mut got: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [value(0, 0), value(1, 0)]);
    });
}

/// Control: without the baton pass, loom finds the execution where one consumer sleeps
/// forever while position 1 holds a message (in production it would re-poll after
/// `WaitStrategy::max_park`, 100 ms: a stall, not a hang; loom has no such re-check).
#[test]
#[should_panic(expected = "deadlock")]
fn without_baton_a_consumer_wake_up_is_lost() {
    writer_blocked_head(false);
}

/// With the baton pass of `core::recv`: no lost wake-up.
#[test]
fn writer_blocked_head_passes_the_baton() {
    writer_blocked_head(true);
}

/// The mirror image on the producer side: a full ring of 2; two producers block in
/// `send`. Consumer 1 takes position 0 and is slow to copy out (it waits inside its read
/// until consumer 2 has freed position 1). Consumer 2's `notify_one` on `not_full` can
/// wake a producer that finds position 2's slot still in READING (`PushStop::Reader`, a
/// live reader: "full for now"), which parks again. Consumer 1's free then wakes one
/// producer, which takes position 2; nobody wakes the other for position 3.
fn reader_blocked_tail(baton: bool) {
    model(format!("reader-blocked tail, baton {baton}"), move || {
        let r = ring_with_baton(2, baton);
        r.push(Retry::Yield, 1, false, value(0, 0));
        r.push(Retry::Yield, 1, false, value(0, 1));
        let freed = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let producers: Vec<_> = (1..3u64)
            .map(|k| {
                let r = r.clone();
                thread::spawn(move || r.push(Retry::Park, k as u32 + 1, false, value(k, 0)))
            })
            .collect();
        let (r1, f1) = (r.clone(), freed.clone());
        let slow = thread::spawn(move || {
            let read = |p: *const u8| {
                while !f1.load(Ordering::Acquire) {
                    thread::yield_now();
                }
                get(p)
            };
            // SAFETY: `read` reads 8 bytes.
            let popped = unsafe { mpmc::pop(&r1.ctl, &r1.slots, &r1.geo, 11, false, read) };
            assert_eq!(popped, Ok(value(0, 0)));
            r1.ctl.not_full.notify_one();
        });
        // Consumer 2 (this thread) takes position 1 once consumer 1 holds position 0.
        while r.ctl.head.load(Ordering::Acquire) == 0 {
            thread::yield_now();
        }
        assert_eq!(r.pop(Retry::Park, 12, false), value(0, 1));
        freed.store(true, Ordering::Release);
        slow.join().unwrap();
        for p in producers {
            p.join().unwrap();
        }
        let mut rest = vec![r.pop(Retry::Yield, 12, false), r.pop(Retry::Yield, 12, false)];
        rest.sort_unstable();
        assert_eq!(rest, [value(1, 0), value(2, 0)]);
    });
}

/// Control: the producer-side mirror of `without_baton_a_consumer_wake_up_is_lost`.
#[test]
#[should_panic(expected = "deadlock")]
fn without_baton_a_producer_wake_up_is_lost() {
    reader_blocked_tail(false);
}

/// With the baton pass of `core::send`: no lost wake-up.
#[test]
fn reader_blocked_tail_passes_the_baton() {
    reader_blocked_tail(true);
}
