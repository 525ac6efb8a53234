//! Queues across real processes: N×M delivery exactly once in per-producer order (forked and
//! by name), SPSC with batches and end ownership, disconnection when every peer process dies,
//! `close`, timeouts, `JoinableQueue`, frames (sizes, limits, corrupted lengths), corrupted
//! ring indices and stamps, producers and consumers killed mid-operation (simulated exactly
//! through the raw stamp encoding), and a SIGKILL chaos loop.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::{role, role_command, run_with_timeout, unique_name, watchdog};
use shmkit::queue::raw::mpmc::{self, EMPTY, FULL, READING, WRITING};
use shmkit::queue::raw::{GeometryError, RingCtl};
use shmkit::queue::{
    spsc_channel, FrameQueue, JoinableQueue, Queue, QueueOpenError, RecvError, SendError, SimpleQueue, Stats,
    TaskDoneError,
};
use shmkit::shm::{Kind, Layout, Offset, Segment, SliceOffset};
use shmkit::util::child::{fork, ForkedChild};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Shared counters (anonymous: inherited by forked children).
struct Area {
    seg: Arc<Segment>,
    at: SliceOffset<AtomicU64>,
}

impl Area {
    fn new(n: usize) -> Self {
        let mut l = Layout::new();
        let at = l.push_slice::<AtomicU64>(n);
        Area { seg: Arc::new(Segment::anonymous(Kind::RAW, l.size()).unwrap()), at }
    }
    fn all(&self) -> &[AtomicU64] {
        self.seg.get_slice(self.at).unwrap()
    }
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Every test here that forks holds `shared()`; the tests that need disconnection by death
/// hold `exclusive()`. Under `cargo test` all tests share one process, and the queue's fork
/// handler gives every child forked by *any* thread a member record in *every* MPMC ring the
/// process holds: another test's forks would add holders to this test's rings (alive for a
/// while, which only delays disconnection; with more than 64 live at once, the sticky
/// `overflow` that turns disconnection off: see `disconnection_survives_many_short_lived_forks`).
/// Under nextest each test has its process.
static GATE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(PoisonError::into_inner)
}

/// In a child: waits (bounded) for `flag` to become non-zero.
fn child_wait_for(flag: &AtomicU64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while flag.load(Ordering::Acquire) == 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn expect_exit(child: &mut ForkedChild, what: &str, secs: u64) {
    let st = child
        .wait_timeout(Duration::from_secs(secs))
        .unwrap()
        .unwrap_or_else(|| panic!("{what} did not finish within {secs} s"));
    assert_eq!(st.code(), Some(0), "{what} failed: {st:?}");
}

/// A child that exited at once and is left unreaped: a zombie, which counts as dead, and whose
/// pid cannot be reused while we hold it.
fn zombie() -> ForkedChild {
    // SAFETY: the child only exits.
    let child = unsafe { fork(|| 0) }.unwrap();
    // SAFETY: siginfo_t is plain data filled in by waitid; WNOWAIT leaves the child unreaped.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, child.pid() as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
    child
}

/// A child that sleeps until killed (a live process to name in a stamp).
fn sleeper() -> ForkedChild {
    // SAFETY: the child only sleeps.
    unsafe {
        fork(|| loop {
            std::thread::sleep(Duration::from_secs(1));
        })
    }
    .unwrap()
}

/// SIGKILLs `child` and waits (without reaping) until it is a zombie.
fn kill_leaving_zombie(child: &ForkedChild) {
    child.signal(libc::SIGKILL).unwrap();
    // SAFETY: as in `zombie`.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, child.pid() as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    assert_eq!(r, 0, "waitid: {}", std::io::Error::last_os_error());
}

/// The documented layout of a ring at payload offset 0 of its segment (raw.rs, ring.rs): the
/// control block, then the slots from the next 128-aligned offset after it; an MPMC slot is an
/// 8-byte stamp followed by the payload, an SPSC slot only the payload, strides rounded up to 8.
struct RawView<'a> {
    seg: &'a Segment,
    stride: usize,
    stamp: usize,
}

impl<'a> RawView<'a> {
    fn mpmc(seg: &'a Segment, payload: usize) -> Self {
        let v = RawView { seg, stride: (8 + payload).div_ceil(8) * 8, stamp: 8 };
        // The layout is what we think it is: a fresh ring's stamps are EMPTY(index).
        assert_eq!(v.ctl().elem_size.load(Ordering::Relaxed) as usize, payload);
        v
    }
    fn spsc(seg: &'a Segment, payload: usize) -> Self {
        let v = RawView { seg, stride: payload.div_ceil(8) * 8, stamp: 0 };
        assert_eq!(v.ctl().elem_size.load(Ordering::Relaxed) as usize, payload);
        v
    }
    fn slots_at() -> usize {
        std::mem::size_of::<RingCtl>().next_multiple_of(128)
    }
    fn ctl(&self) -> &'a RingCtl {
        self.seg.get(Offset::<RingCtl>::new(0)).unwrap()
    }
    fn slots(&self) -> usize {
        self.ctl().slots.load(Ordering::Relaxed) as usize
    }
    fn stamp(&self, idx: usize) -> &'a AtomicU64 {
        assert_eq!(self.stamp, 8, "SPSC slots have no stamp");
        self.seg.get(Offset::<AtomicU64>::new(Self::slots_at() + idx * self.stride)).unwrap()
    }
    /// Start of slot `idx`'s payload.
    fn payload(&self, idx: usize) -> *mut u8 {
        let off = Self::slots_at() + idx * self.stride + self.stamp;
        assert!(off + self.stride - self.stamp <= self.seg.payload_len());
        // SAFETY: in bounds (checked above).
        unsafe { self.seg.payload_ptr().as_ptr().add(off) }
    }
}

fn check_fresh_stamps(v: &RawView<'_>) {
    for i in 0..v.slots() {
        assert_eq!(v.stamp(i).load(Ordering::Relaxed), mpmc::encode(i as u64, EMPTY, 0), "slot {i}");
    }
}

/// A producer's message: its id and its sequence number.
fn msg(producer: u64, seq: u64) -> u64 {
    producer << 32 | seq
}

const SENTINEL: u64 = u64::MAX;

/// Checks that `per_consumer` (what each consumer got, in its order) holds every message of
/// `producers` × `per` exactly once, each producer's messages in increasing order per consumer.
fn check_delivery(per_consumer: &[Vec<u64>], producers: u64, per: u64) {
    let mut seen = vec![false; (producers * per) as usize];
    for (c, got) in per_consumer.iter().enumerate() {
        let mut last = vec![None::<u64>; producers as usize];
        for &v in got {
            let (p, s) = (v >> 32, v & 0xffff_ffff);
            assert!(p < producers && s < per, "consumer {c} got a message nobody sent: {v:#x}");
            assert!(last[p as usize].is_none_or(|l| l < s), "consumer {c}: producer {p} out of order at {s}");
            last[p as usize] = Some(s);
            let i = (p * per + s) as usize;
            assert!(!seen[i], "message {v:#x} delivered twice");
            seen[i] = true;
        }
    }
    let missing = seen.iter().filter(|&&s| !s).count();
    assert_eq!(missing, 0, "{missing} messages never delivered");
}

// ---------------------------------------------------------------------------------------------
// Role processes (unrelated processes opening queues by name)
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let long = Duration::from_secs(60);
    let code = match role.as_str() {
        "produce" => {
            let q = Queue::<u64>::open(&args[0]).expect("open queue");
            let (p, n): (u64, u64) = (args[1].parse().unwrap(), args[2].parse().unwrap());
            match (0..n).try_for_each(|s| q.send_timeout(msg(p, s), long)) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        }
        "consume" => {
            let q = Queue::<u64>::open(&args[0]).expect("open queue");
            let results = Queue::<u64>::open(&args[1]).expect("open result queue");
            let c: u64 = args[2].parse().unwrap();
            loop {
                match q.recv_timeout(long) {
                    Ok(SENTINEL) => break 0,
                    // Tag each message with the consumer (bits 56..) so the parent can check
                    // each consumer's order.
                    Ok(v) => {
                        if results.send_timeout(v | (c + 1) << 56, long).is_err() {
                            break 3;
                        }
                    }
                    Err(_) => break 2,
                }
            }
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// N producers × M consumers
// ---------------------------------------------------------------------------------------------

#[test]
fn mpmc_three_producers_two_consumers_across_fork_exactly_once_in_order() {
    let _g = shared();
    let _w = watchdog(180);
    const P: u64 = 3;
    const C: usize = 2;
    const PER: u64 = 20_000;
    let total = (P * PER) as usize;
    let q = Queue::<u64>::new(64).unwrap();
    // Per consumer: [count, values...].
    let area = Area::new(C * (1 + total));
    let a = area.all();
    let long = Duration::from_secs(100);
    let mut consumers: Vec<ForkedChild> = (0..C)
        .map(|c| {
            // SAFETY: the child uses the queue and shared atomics, then exits.
            unsafe {
                fork(|| {
                    let base = c * (1 + total);
                    let mut n = 0;
                    loop {
                        match q.recv_timeout(long) {
                            Ok(SENTINEL) => break,
                            Ok(_) if n == total => return 3,
                            Ok(v) => {
                                a[base + 1 + n].store(v, Ordering::Relaxed);
                                n += 1;
                            }
                            Err(_) => return 2,
                        }
                    }
                    a[base].store(n as u64, Ordering::Release);
                    0
                })
            }
            .unwrap()
        })
        .collect();
    let mut producers: Vec<ForkedChild> = (0..P)
        .map(|p| {
            // SAFETY: as above.
            unsafe {
                fork(|| match (0..PER).try_for_each(|s| q.send_timeout(msg(p, s), long)) {
                    Ok(()) => 0,
                    Err(_) => 2,
                })
            }
            .unwrap()
        })
        .collect();
    for (i, p) in producers.iter_mut().enumerate() {
        expect_exit(p, &format!("producer {i}"), 150);
    }
    // Every producer is done, so the sentinels queue after every message.
    for _ in 0..C {
        q.send_timeout(SENTINEL, Duration::from_secs(100)).unwrap();
    }
    for (i, c) in consumers.iter_mut().enumerate() {
        expect_exit(c, &format!("consumer {i}"), 150);
    }
    let got: Vec<Vec<u64>> = (0..C)
        .map(|c| {
            let base = c * (1 + total);
            let n = a[base].load(Ordering::Acquire) as usize;
            (0..n).map(|k| a[base + 1 + k].load(Ordering::Relaxed)).collect()
        })
        .collect();
    check_delivery(&got, P, PER);
    assert!(q.is_empty());
    assert_eq!(q.stats(), Stats::default());
}

#[test]
fn mpmc_by_name_unrelated_processes_exactly_once_in_order() {
    let _g = shared();
    let _w = watchdog(240);
    const P: u64 = 3;
    const C: u64 = 2;
    const PER: u64 = 5_000;
    let (name, rname) = (unique_name("q"), unique_name("qres"));
    let q = Queue::<u64>::create(&name, 32).unwrap();
    let results = Queue::<u64>::create(&rname, (P * PER) as usize).unwrap();
    // Opening checks kind and element type.
    assert!(Queue::<u32>::open(&name).is_err(), "opened a Queue<u64> as a Queue<u32>");
    assert!(JoinableQueue::<u64>::open(&name).is_err(), "opened a Queue as a JoinableQueue");
    assert!(FrameQueue::open(&name).is_err(), "opened a Queue as a FrameQueue");
    assert!(Queue::<u64>::open(&unique_name("missing")).is_err());

    let consumers: Vec<_> = (0..C)
        .map(|c| {
            let cmd = role_command("role_entry", "consume", &[name.clone(), rname.clone(), c.to_string()]);
            std::thread::spawn(move || run_with_timeout(cmd, 200))
        })
        .collect();
    let producers: Vec<_> = (0..P)
        .map(|p| {
            let cmd = role_command("role_entry", "produce", &[name.clone(), p.to_string(), PER.to_string()]);
            std::thread::spawn(move || run_with_timeout(cmd, 200))
        })
        .collect();
    for (i, h) in producers.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().code(), Some(0), "producer {i}");
    }
    for _ in 0..C {
        q.send_timeout(SENTINEL, Duration::from_secs(100)).unwrap();
    }
    for (i, h) in consumers.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().code(), Some(0), "consumer {i}");
    }
    let mut got = vec![Vec::new(); C as usize];
    while let Ok(v) = results.try_recv() {
        let c = (v >> 56) as usize;
        assert!((1..=C as usize).contains(&c), "untagged result {v:#x}");
        got[c - 1].push(v & ((1 << 56) - 1));
    }
    check_delivery(&got, P, PER);
    assert!(q.is_empty());
}

// ---------------------------------------------------------------------------------------------
// SPSC
// ---------------------------------------------------------------------------------------------

#[test]
fn spsc_across_fork_keeps_order_with_batches() {
    let _g = shared();
    let _w = watchdog(120);
    const N: u64 = 50_000;
    // A capacity that is not a power of two: SPSC holds exactly that many.
    let (tx, rx) = spsc_channel::<u64>(37).unwrap();
    assert_eq!(tx.capacity(), 37);
    // The child takes the sending end, which the parent never used.
    // SAFETY: the child uses the queue and exits.
    let mut child = unsafe {
        fork(|| {
            let mut next = 0u64;
            let mut batch = [0u64; 16];
            while next < N {
                if next % 3 == 0 {
                    if tx.send_timeout(next, Duration::from_secs(60)).is_err() {
                        return 2;
                    }
                    next += 1;
                } else {
                    let k = ((next % 16) + 1).min(N - next) as usize;
                    for (i, b) in batch[..k].iter_mut().enumerate() {
                        *b = next + i as u64;
                    }
                    match tx.try_send_slice(&batch[..k]) {
                        Ok(0) => std::thread::yield_now(),
                        Ok(n) if n <= k => next += n as u64,
                        _ => return 3,
                    }
                }
            }
            0
        })
    }
    .unwrap();
    let mut buf = [0u64; 24];
    let mut expect = 0u64;
    let mut batches = 0u64;
    while expect < N {
        let got = if expect % 2 == 0 {
            let n = rx.recv_into(&mut buf).unwrap();
            assert!(n >= 1 && n <= buf.len());
            batches += u64::from(n > 1);
            &buf[..n]
        } else {
            buf[0] = rx.recv_timeout(Duration::from_secs(60)).unwrap();
            &buf[..1]
        };
        for &v in got {
            assert_eq!(v, expect, "out of order");
            expect += 1;
        }
    }
    expect_exit(&mut child, "sender", 60);
    // The sender's process is gone and the queue is drained.
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Err(RecvError::Disconnected));
    assert!(matches!(rx.try_recv_into(&mut buf), Err(RecvError::Empty | RecvError::Disconnected)));
    eprintln!("spsc: {batches} multi-message recv_into batches");
}

#[test]
fn spsc_end_held_by_another_live_process_is_in_use() {
    let _g = shared();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let (tx, rx) = spsc_channel::<u64>(8).unwrap();
    // The parent claims the receiving end by using it.
    assert_eq!(rx.try_recv(), Err(RecvError::Empty));
    // Child A takes the sending end (never used by the parent) and holds it until told.
    // SAFETY: the child uses the queue and shared atomics, then exits.
    let mut holder = unsafe {
        fork(|| {
            if tx.send(1).is_err() {
                return 2;
            }
            a[0].store(1, Ordering::Release);
            if !child_wait_for(&a[1]) {
                return 3;
            }
            0
        })
    }
    .unwrap();
    until("the child to send", || a[0].load(Ordering::Acquire) == 1);
    // Another live process using either claimed end: InUse, the value handed back.
    // SAFETY: as above.
    let mut intruder = unsafe {
        fork(|| {
            if tx.try_send(7) != Err(SendError::InUse(7)) {
                return 2;
            }
            if tx.try_send_slice(&[1, 2]) != Err(SendError::InUse(())) {
                return 3;
            }
            if rx.try_recv() != Err(RecvError::InUse) {
                return 4;
            }
            let mut buf = [0u64; 2];
            if rx.try_recv_into(&mut buf) != Err(RecvError::InUse) {
                return 5;
            }
            0
        })
    }
    .unwrap();
    expect_exit(&mut intruder, "intruder", 30);
    // The parent too: the sending end belongs to the live child.
    assert_eq!(tx.try_send(8), Err(SendError::InUse(8)));
    assert_eq!(tx.send_timeout(8, Duration::from_millis(5)), Err(SendError::InUse(8)));
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(1));
    a[1].store(1, Ordering::Release);
    expect_exit(&mut holder, "holder", 30);
    // Its holder is dead: the end is free again, and the ring continues where it left off.
    tx.send_timeout(9, Duration::from_secs(10)).unwrap();
    assert_eq!(tx.try_send_slice(&[10, 11]), Ok(2));
    let mut buf = [0u64; 4];
    assert_eq!(rx.try_recv_into(&mut buf), Ok(3));
    assert_eq!(&buf[..3], &[9, 10, 11]);
}

#[test]
fn spsc_sender_dropped_by_its_live_process_receiver_drains_then_disconnected() {
    let _g = shared();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let (tx, rx) = spsc_channel::<u64>(16).unwrap();
    // SAFETY: the child uses the queue and shared atomics, then exits.
    let mut child = unsafe {
        fork(move || {
            for i in 0..10 {
                if tx.send_timeout(i, Duration::from_secs(30)).is_err() {
                    return 2;
                }
            }
            drop(tx);
            a[0].store(1, Ordering::Release);
            // Stay alive: the receiver must learn from the drop, not from our death.
            if !child_wait_for(&a[1]) {
                return 3;
            }
            0
        })
    }
    .unwrap();
    until("the child to drop its end", || a[0].load(Ordering::Acquire) == 1);
    let mut got = Vec::new();
    let err = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(v) => got.push(v),
            Err(e) => break e,
        }
    };
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(err, RecvError::Disconnected);
    assert_eq!(rx.recv(), Err(RecvError::Disconnected), "blocking recv after the drop");
    a[1].store(1, Ordering::Release);
    expect_exit(&mut child, "sender", 30);
}

#[test]
fn spsc_receiver_dropped_by_its_process_blocked_sender_gets_disconnected() {
    let _g = shared();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let (tx, rx) = spsc_channel::<u64>(4).unwrap();
    // SAFETY: the child uses the queue and shared atomics, then exits.
    let mut child = unsafe {
        fork(move || {
            if rx.recv_timeout(Duration::from_secs(30)) != Ok(100) {
                return 2;
            }
            drop(rx);
            a[0].store(1, Ordering::Release);
            if !child_wait_for(&a[1]) {
                return 3;
            }
            0
        })
    }
    .unwrap();
    tx.send(100).unwrap();
    until("the child to drop its end", || a[0].load(Ordering::Acquire) == 1);
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(tx.try_send(5), Err(SendError::Full(5)));
    assert_eq!(tx.send_timeout(6, Duration::from_secs(30)), Err(SendError::Disconnected(6)));
    assert_eq!(tx.send(7), Err(SendError::Disconnected(7)), "blocking send after the drop");
    a[1].store(1, Ordering::Release);
    expect_exit(&mut child, "receiver", 30);
}

// ---------------------------------------------------------------------------------------------
// Disconnection by death
// ---------------------------------------------------------------------------------------------

#[test]
fn receiver_blocked_on_queue_whose_sender_processes_were_killed_drains_then_disconnected() {
    let _g = exclusive();
    let _w = watchdog(60);
    const K: u64 = 3;
    let area = Area::new(2);
    let a = area.all();
    let (tx, rx) = Queue::<u64>::new(16).unwrap().split();
    // Children inherit the sender (a child counts as a sender from the fork on); each sends,
    // as the docs ask of a child that is to count, and then waits to die.
    let mut kids: Vec<ForkedChild> = (0..2u64)
        .map(|i| {
            // SAFETY: the child uses the queue and shared atomics, and sleeps until killed.
            unsafe {
                fork(|| {
                    for s in 0..K {
                        if tx.send(msg(i, s)).is_err() {
                            return 2;
                        }
                    }
                    a[i as usize].store(1, Ordering::Release);
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
            }
            .unwrap()
        })
        .collect();
    drop(tx); // the parent keeps only the receiver
    until("both senders to send", || a.iter().all(|f| f.load(Ordering::Acquire) == 1));
    // One sender dies before anything is received...
    kids[0].kill().unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut got = Vec::new();
            loop {
                match rx.recv() {
                    Ok(v) => got.push(v),
                    Err(e) => return (got, e),
                }
            }
        });
        // ...the receiver drains and blocks while the other one lives...
        until("the receiver to drain", || rx.is_empty());
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "recv returned while a sender process lived");
        // ...and learns that it died (left a zombie: that counts as dead too).
        kids[1].signal(libc::SIGKILL).unwrap();
        let (mut got, err) = h.join().unwrap();
        got.sort_unstable();
        let want: Vec<u64> = (0..2).flat_map(|i| (0..K).map(move |s| msg(i, s))).collect();
        assert_eq!(got, want);
        assert_eq!(err, RecvError::Disconnected);
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Err(RecvError::Disconnected));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn sender_blocked_on_full_queue_whose_receiver_processes_were_killed_gets_disconnected() {
    let _g = exclusive();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let (tx, rx) = Queue::<u64>::new(4).unwrap().split();
    let mut kids: Vec<ForkedChild> = (0..2)
        .map(|i| {
            // SAFETY: the child uses the queue and shared atomics, and sleeps until killed.
            unsafe {
                fork(|| {
                    // A child counts as a receiver from the fork on; it uses the receiver once
                    // too, as the docs ask.
                    if rx.try_recv() != Err(RecvError::Empty) {
                        return 2;
                    }
                    a[i].store(1, Ordering::Release);
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                })
            }
            .unwrap()
        })
        .collect();
    until("both receivers to register", || a.iter().all(|f| f.load(Ordering::Acquire) == 1));
    drop(rx); // the parent keeps only the sender
    let mut n = 0;
    while tx.try_send(n).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4);
    std::thread::scope(|s| {
        let h = s.spawn(|| tx.send(99));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "send returned while receiver processes lived");
        kids[0].kill().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "send returned while a receiver process lived");
        kids[1].signal(libc::SIGKILL).unwrap(); // a zombie
        assert_eq!(h.join().unwrap(), Err(SendError::Disconnected(99)));
    });
    assert_eq!(tx.send_timeout(5, Duration::from_secs(30)), Err(SendError::Disconnected(5)));
}

#[test]
fn disconnection_survives_many_short_lived_forks() {
    let _g = exclusive();
    let _w = watchdog(120);
    let area = Area::new(1);
    let a = area.all();
    let (tx, rx) = Queue::<u64>::new(4).unwrap().split();
    // SAFETY: the child sends, flags, and sleeps until killed.
    let mut sender = unsafe {
        fork(|| {
            if tx.send(1).is_err() {
                return 2;
            }
            a[0].store(1, Ordering::Release);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    }
    .unwrap();
    drop(tx); // the parent keeps only the receiver
    until("the sender to send", || a[0].load(Ordering::Acquire) == 1);
    // Work unrelated to the queue: 70 children that exit at once and are reaped. None is
    // alive afterwards, so none can hold a handle.
    for i in 0..70 {
        // SAFETY: the child exits at once.
        let mut c = unsafe { fork(|| 0) }.unwrap();
        expect_exit(&mut c, &format!("short-lived child {i}"), 30);
    }
    sender.kill().unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(1));
    let overflow = RawView::mpmc(rx.segment(), 8).ctl().overflow.load(Ordering::Relaxed);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Err(RecvError::Disconnected),
        "every sender is dead (member table overflow flag: {overflow})"
    );
}

// ---------------------------------------------------------------------------------------------
// close, timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn close_fails_blocked_senders_and_lets_receivers_drain() {
    let _g = shared();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let full = Queue::<u64>::new(2).unwrap();
    full.send(0).unwrap();
    full.send(1).unwrap();
    let empty = Queue::<u64>::new(2).unwrap();
    // SAFETY: the children block on the queues and exit.
    let mut sender = unsafe {
        fork(|| {
            a[0].store(1, Ordering::Release);
            match full.send(5) {
                Err(SendError::Disconnected(5)) => 0,
                _ => 2,
            }
        })
    }
    .unwrap();
    // SAFETY: as above.
    let mut receiver = unsafe {
        fork(|| {
            a[1].store(1, Ordering::Release);
            match empty.recv() {
                Err(RecvError::Disconnected) => 0,
                _ => 2,
            }
        })
    }
    .unwrap();
    until("both to block", || a.iter().all(|f| f.load(Ordering::Acquire) == 1));
    std::thread::sleep(Duration::from_millis(50)); // let them park
    assert!(!full.is_closed());
    full.close();
    empty.close();
    expect_exit(&mut sender, "blocked sender", 30);
    expect_exit(&mut receiver, "blocked receiver", 30);
    assert!(full.is_closed() && empty.is_closed());
    // Sends fail, every flavour.
    assert_eq!(full.try_send(3), Err(SendError::Disconnected(3)));
    assert_eq!(full.send(3), Err(SendError::Disconnected(3)));
    assert_eq!(full.send_timeout(3, Duration::from_millis(5)), Err(SendError::Disconnected(3)));
    assert_eq!(full.sender().try_send(3), Err(SendError::Disconnected(3)));
    // Receivers drain what was queued, then get Disconnected without blocking.
    assert_eq!(full.try_recv(), Ok(0));
    assert_eq!(full.recv(), Ok(1));
    assert_eq!(full.try_recv(), Err(RecvError::Disconnected));
    assert_eq!(full.recv(), Err(RecvError::Disconnected));
    assert_eq!(full.recv_timeout(Duration::from_secs(30)), Err(RecvError::Disconnected));
    assert_eq!(full.iter().count(), 0);

    // A child closes; the parent sees it.
    let q = Queue::<u64>::new(4).unwrap();
    q.send(1).unwrap();
    // SAFETY: the child closes the queue and exits.
    let mut closer = unsafe {
        fork(|| {
            q.close();
            0
        })
    }
    .unwrap();
    expect_exit(&mut closer, "closer", 30);
    assert!(q.is_closed());
    assert_eq!(q.try_send(2), Err(SendError::Disconnected(2)));
    assert_eq!(q.recv(), Ok(1));
    assert_eq!(q.recv(), Err(RecvError::Disconnected));

    // SPSC and frames behave the same.
    let (tx, rx) = spsc_channel::<u64>(4).unwrap();
    tx.send(1).unwrap();
    rx.close();
    assert_eq!(tx.try_send(2), Err(SendError::Disconnected(2)));
    assert_eq!(tx.send(2), Err(SendError::Disconnected(2)));
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
    assert_eq!(rx.try_recv(), Err(RecvError::Disconnected));
    let f = FrameQueue::new(4, 8).unwrap();
    f.send_bytes(b"x").unwrap();
    f.close();
    assert!(matches!(f.try_send_bytes(b"y"), Err(SendError::Disconnected(m)) if m == b"y"));
    assert_eq!(f.recv_bytes().unwrap(), b"x");
    assert_eq!(f.recv_bytes(), Err(RecvError::Disconnected));
    let sq = SimpleQueue::<u32>::new(2).unwrap();
    sq.put(4).unwrap();
    sq.close();
    assert_eq!(sq.put(5), Err(SendError::Disconnected(5)));
    assert_eq!(sq.get(), Ok(4));
    assert_eq!(sq.get(), Err(RecvError::Disconnected));
}

#[test]
fn timeouts_return_after_at_least_the_timeout() {
    let _g = shared();
    let _w = watchdog(60);
    let t = Duration::from_millis(30);
    let timed = |f: &dyn Fn() -> bool| {
        let start = Instant::now();
        assert!(f());
        assert!(start.elapsed() >= t, "returned before the timeout");
    };
    let q = Queue::<u64>::new(2).unwrap();
    timed(&|| q.recv_timeout(t) == Err(RecvError::Timeout));
    timed(&|| q.receiver().recv_timeout(t) == Err(RecvError::Timeout));
    q.send(1).unwrap();
    q.send(2).unwrap();
    timed(&|| q.send_timeout(77, t) == Err(SendError::Timeout(77)));
    timed(&|| q.sender().send_timeout(78, t) == Err(SendError::Timeout(78)));
    assert_eq!(q.try_send(79), Err(SendError::Full(79)));
    assert_eq!((q.recv(), q.recv()), (Ok(1), Ok(2)), "timeouts changed nothing");
    assert_eq!(q.try_recv(), Err(RecvError::Empty));

    let (tx, rx) = spsc_channel::<u64>(1).unwrap();
    timed(&|| rx.recv_timeout(t) == Err(RecvError::Timeout));
    tx.send(1).unwrap();
    timed(&|| tx.send_timeout(2, t) == Err(SendError::Timeout(2)));
    assert_eq!(rx.recv(), Ok(1));

    let f = FrameQueue::new(1, 8).unwrap();
    timed(&|| f.recv_bytes_timeout(t) == Err(RecvError::Timeout));
    f.send_bytes(b"ab").unwrap();
    let cd = b"cd".as_slice();
    timed(&|| matches!(f.send_bytes_timeout(cd, t), Err(SendError::Timeout(m)) if std::ptr::eq(m, cd)));

    let j = JoinableQueue::<u64>::new(2).unwrap();
    j.put(1).unwrap();
    timed(&|| j.join_timeout(t).is_err());
    assert_eq!(j.get(), Ok(1));
    j.task_done().unwrap();
    assert!(j.join_timeout(Duration::from_secs(10)).is_ok());

    // Across processes: a child's timeouts while the parent holds the other side.
    // SAFETY: the child uses the queue and exits.
    let mut child = unsafe {
        fork(|| {
            let Ok(q) = Queue::<u64>::new(1) else { return 2 };
            let start = Instant::now();
            i32::from(q.recv_timeout(t) != Err(RecvError::Timeout) || start.elapsed() < t)
        })
    }
    .unwrap();
    expect_exit(&mut child, "timing child", 30);
}

// ---------------------------------------------------------------------------------------------
// JoinableQueue
// ---------------------------------------------------------------------------------------------

#[test]
fn joinable_queue_join_returns_once_consumer_processes_marked_every_task_done() {
    let _g = shared();
    let _w = watchdog(120);
    const P: u64 = 2;
    const PER: u64 = 2_000;
    let q = JoinableQueue::<u64>::new(8).unwrap();
    let area = Area::new(2); // 0: processed, 1: sum
    let a = area.all();
    let mut consumers: Vec<ForkedChild> = (0..2)
        .map(|_| {
            // SAFETY: the children use the queue and shared atomics, then exit.
            unsafe {
                fork(|| loop {
                    match q.get() {
                        Ok(v) => {
                            a[1].fetch_add(v, Ordering::Relaxed);
                            a[0].fetch_add(1, Ordering::Release);
                            if q.task_done().is_err() {
                                return 3;
                            }
                        }
                        Err(RecvError::Disconnected) => return 0,
                        Err(_) => return 2,
                    }
                })
            }
            .unwrap()
        })
        .collect();
    let mut producers: Vec<ForkedChild> = (0..P)
        .map(|p| {
            // SAFETY: as above.
            unsafe {
                fork(|| match (0..PER).try_for_each(|s| q.put(p * PER + s)) {
                    Ok(()) => 0,
                    Err(_) => 2,
                })
            }
            .unwrap()
        })
        .collect();
    for (i, p) in producers.iter_mut().enumerate() {
        expect_exit(p, &format!("producer {i}"), 100);
    }
    // Every put happened; join waits for every task_done (the watchdog guards the wait).
    q.join();
    assert_eq!(a[0].load(Ordering::Acquire), P * PER, "join returned before every task was done");
    let n = P * PER;
    assert_eq!(a[1].load(Ordering::Relaxed), n * (n - 1) / 2);
    assert_eq!(q.unfinished(), 0);
    // More task_done than items: an error, in this process and in another.
    assert_eq!(q.task_done(), Err(TaskDoneError));
    // SAFETY: the child calls task_done and exits.
    let mut extra = unsafe { fork(|| i32::from(q.task_done() != Err(TaskDoneError))) }.unwrap();
    expect_exit(&mut extra, "extra task_done", 30);
    assert_eq!(q.unfinished(), 0);
    q.close();
    for (i, c) in consumers.iter_mut().enumerate() {
        expect_exit(c, &format!("consumer {i}"), 30);
    }
    q.join();
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt)).collect()
}

#[test]
fn frame_queue_sizes_zero_one_and_max_across_fork_and_too_large_is_refused() {
    let _g = shared();
    let _w = watchdog(60);
    const MAX: usize = 300;
    let q = FrameQueue::new(4, MAX).unwrap();
    assert_eq!(q.max_frame(), MAX);
    let sizes = [0usize, 1, 2, 7, 8, 150, MAX - 1, MAX, 0, MAX];
    // SAFETY: the child uses the queue and exits.
    let mut child = unsafe {
        fork(|| {
            for (i, &len) in sizes.iter().enumerate() {
                if q.send_bytes_timeout(&pattern(len, i as u8), Duration::from_secs(30)).is_err() {
                    return 2;
                }
            }
            let big = [7u8; MAX + 1];
            match q.try_send_bytes(&big) {
                Err(SendError::TooLarge { value, len, max })
                    if len == MAX + 1 && max == MAX && std::ptr::eq(value, big.as_slice()) => {}
                _ => return 3,
            }
            0
        })
    }
    .unwrap();
    for (i, &len) in sizes.iter().enumerate() {
        let got = q.recv_bytes_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(got, pattern(len, i as u8), "frame {i} of {len} bytes");
    }
    expect_exit(&mut child, "frame sender", 30);
    // Above the maximum: refused before anything is queued, the message handed back.
    let big = vec![1u8; MAX + 1];
    match q.send_bytes(&big) {
        Err(SendError::TooLarge { value, len, max }) => {
            assert!(std::ptr::eq(value, big.as_slice()));
            assert_eq!((len, max), (MAX + 1, MAX));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(matches!(q.send_bytes_timeout(&big, Duration::ZERO), Err(SendError::TooLarge { .. })));
    assert!(q.is_empty());
    // recv_bytes_into: a short buffer is refused before anything is taken.
    q.send_bytes(&pattern(MAX, 9)).unwrap();
    let mut short = vec![0u8; MAX - 1];
    assert!(matches!(q.recv_bytes_into(&mut short), Err(RecvError::Decode(_))));
    assert_eq!(q.len(), 1);
    let mut buf = vec![0u8; MAX];
    assert_eq!(q.recv_bytes_into(&mut buf), Ok(MAX));
    assert_eq!(buf, pattern(MAX, 9));
    // A zero maximum carries only empty frames.
    let z = FrameQueue::new(2, 0).unwrap();
    z.send_bytes(&[]).unwrap();
    assert!(matches!(z.try_send_bytes(&[1]), Err(SendError::TooLarge { len: 1, max: 0, .. })));
    assert_eq!(z.recv_bytes().unwrap(), Vec::<u8>::new());
}

#[test]
fn frame_with_corrupted_length_prefix_is_reported_not_read() {
    let _g = shared();
    let _w = watchdog(60);
    const MAX: usize = 16;
    let q = FrameQueue::new(4, MAX).unwrap();
    let seg = q.segment().clone();
    let raw = RawView::mpmc(&seg, MAX + 4);
    check_fresh_stamps(&raw);
    // The slot of the message sent last, checked to hold it published.
    let last_sent = || {
        let pos = raw.ctl().tail.load(Ordering::SeqCst) - 1;
        let idx = pos as usize % raw.slots();
        assert_eq!(raw.stamp(idx).load(Ordering::SeqCst), mpmc::encode(pos, FULL, 0));
        idx
    };
    let write_len = |idx: usize, len: u32| {
        // SAFETY: the length prefix (4 bytes) of a slot inside the payload; the slot holds a
        // published message nobody is reading.
        unsafe { std::ptr::write_volatile(raw.payload(idx).cast::<[u8; 4]>(), len.to_le_bytes()) }
    };
    // Each garbage length above the maximum: Corrupted, the frame consumed, the next one fine.
    for garbage in [MAX as u32 + 1, MAX as u32 + 4, 1 << 20, u32::MAX - 3, u32::MAX] {
        q.send_bytes(b"hello").unwrap();
        let idx = last_sent();
        q.send_bytes(b"world").unwrap();
        write_len(idx, garbage);
        assert!(
            matches!(q.try_recv_bytes(), Err(RecvError::Corrupted(_))),
            "length {garbage} was not refused"
        );
        assert_eq!(q.try_recv_bytes().unwrap(), b"world");
    }
    // Into a caller's buffer, the same.
    q.send_bytes(b"abc").unwrap();
    write_len(last_sent(), u32::MAX);
    let mut buf = [0u8; MAX];
    assert!(matches!(q.recv_bytes_into(&mut buf), Err(RecvError::Corrupted(_))));
    // A length that is wrong but within the maximum reads the slot's bytes: no error, no
    // out-of-bounds access.
    q.send_bytes(b"xy").unwrap();
    write_len(last_sent(), MAX as u32);
    assert_eq!(q.try_recv_bytes().unwrap().len(), MAX);
    // The queue works on, for laps.
    for i in 0..20u8 {
        q.send_bytes(&[i; 3]).unwrap();
        assert_eq!(q.recv_bytes().unwrap(), [i; 3]);
    }
    assert_eq!(q.stats(), Stats::default());
    // A peer process corrupts; this one is told.
    q.send_bytes(b"z").unwrap();
    let idx = last_sent();
    // SAFETY: the child writes a slot's length prefix and exits.
    let mut child = unsafe {
        fork(|| {
            write_len(idx, u32::MAX);
            0
        })
    }
    .unwrap();
    expect_exit(&mut child, "corrupter", 30);
    assert!(matches!(q.recv_bytes_timeout(Duration::from_secs(10)), Err(RecvError::Corrupted(_))));
    q.send_bytes(b"ok").unwrap();
    assert_eq!(q.recv_bytes().unwrap(), b"ok");
}

// ---------------------------------------------------------------------------------------------
// Corrupted ring state
// ---------------------------------------------------------------------------------------------

/// Runs `f` in a forked child and requires it to exit 0 within `secs`: an operation that spins
/// forever on corrupted state becomes a test failure instead of a hung test binary.
fn in_child_bounded(what: &str, secs: u64, f: impl FnOnce() -> i32) {
    // SAFETY: the bodies use queues and shared memory, then exit.
    let mut child = unsafe { fork(f) }.unwrap();
    match child.wait_timeout(Duration::from_secs(secs)).unwrap() {
        Some(st) => assert_eq!(st.code(), Some(0), "{what}: child failed: {st:?}"),
        None => panic!("{what}: an operation on corrupted state did not return within {secs} s"),
    }
}

#[test]
fn corrupted_mpmc_indices_give_corrupted_or_empty_or_full_never_a_hang() {
    let _g = shared();
    let _w = watchdog(120);
    let short = Duration::from_millis(5);
    // (a) tail exactly one lap ahead of an empty ring: the slot serves an older lap.
    let q = Queue::<u64>::new(8).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    check_fresh_stamps(&raw);
    raw.ctl().tail.store(8, Ordering::SeqCst);
    assert_eq!(q.try_send(1), Err(SendError::Corrupted(1)));
    assert_eq!(q.send_timeout(2, short), Err(SendError::Corrupted(2)));
    assert_eq!(q.try_recv(), Err(RecvError::Empty));
    assert!(matches!(q.recv_timeout(short), Err(RecvError::Timeout)));

    // (b) head far ahead of tail: the head slot holds an older lap's EMPTY stamp.
    let q = Queue::<u64>::new(8).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    q.send(5).unwrap();
    raw.ctl().head.store(1000, Ordering::SeqCst);
    assert!(matches!(q.try_recv(), Err(RecvError::Corrupted(_))));
    assert!(matches!(q.recv_timeout(short), Err(RecvError::Corrupted(_))));
    assert_eq!(q.len(), 0, "head after tail reads as empty");
    assert!(matches!(q.recv(), Err(RecvError::Corrupted(_))), "blocking recv must not wait on garbage");

    // (c) a stamp from a later lap at the head: Corrupted.
    let q = Queue::<u64>::new(8).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    q.send(5).unwrap();
    raw.stamp(0).store(mpmc::encode(3, FULL, 0), Ordering::SeqCst);
    assert!(matches!(q.try_recv(), Err(RecvError::Corrupted(_))));

    // (d) tail behind head on a full ring, garbage payload-free: never a value nobody sent.
    let q = Queue::<u64>::new(4).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    for i in 0..4 {
        q.send(100 + i).unwrap();
    }
    raw.ctl().tail.store(1, Ordering::SeqCst);
    let r = q.try_send(9);
    assert!(matches!(r, Err(SendError::Corrupted(9) | SendError::Full(9))), "{r:?}");
    let mut got = Vec::new();
    while let Ok(v) = q.recv_timeout(short) {
        got.push(v);
        assert!(got.len() <= 4);
    }
    assert_eq!(got, [100, 101, 102, 103]);

    // (e) random garbage in head and tail (stamps intact): whatever happens, operations
    // return, and every value received was sent, at most once.
    let mut rng = Rng::new(0x5eed);
    for round in 0..300 {
        let cap = [1, 2, 4, 8][round % 4];
        let q = Queue::<u64>::new(cap).unwrap();
        let raw = RawView::mpmc(q.segment(), 8);
        let mut sent = Vec::new();
        for i in 0..rng.below(cap as u64 + 1) {
            q.send(1000 * round as u64 + i).unwrap();
            sent.push(1000 * round as u64 + i);
        }
        let slots = cap as u64;
        let garbage = |rng: &mut Rng, cur: u64| match rng.below(4) {
            0 => rng.next(),
            1 => cur.wrapping_add(rng.below(3 * slots)).wrapping_sub(slots),
            2 => cur.wrapping_add(slots),
            _ => cur ^ (1 << rng.below(64)),
        };
        let ctl = raw.ctl();
        if rng.below(2) == 0 {
            ctl.head.store(garbage(&mut rng, ctl.head.load(Ordering::Relaxed)), Ordering::SeqCst);
        } else {
            ctl.tail.store(garbage(&mut rng, ctl.tail.load(Ordering::Relaxed)), Ordering::SeqCst);
        }
        let mut got = Vec::new();
        let mut next = 7_000_000 + 1000 * round as u64;
        for _ in 0..(3 * cap) {
            next += 1;
            match rng.below(6) {
                0 => {
                    if q.try_send(next).is_ok() {
                        sent.push(next);
                    }
                }
                1 => {
                    if q.send_timeout(next, Duration::from_millis(1)).is_ok() {
                        sent.push(next);
                    }
                }
                2 => got.extend(q.try_recv().ok()),
                3 => got.extend(q.recv_timeout(Duration::from_millis(1)).ok()),
                4 => assert!(q.len() <= q.capacity()),
                _ => {
                    let _ = (q.is_full(), q.is_empty(), q.stats());
                }
            }
        }
        let mut uniq = got.clone();
        uniq.sort_unstable();
        uniq.dedup();
        assert_eq!(uniq.len(), got.len(), "round {round}: a value delivered twice: {got:?}");
        for v in &got {
            assert!(sent.contains(v), "round {round}: received {v}, never sent");
        }
    }
}

#[test]
fn corrupted_mpmc_stamps_never_crash_or_hang() {
    let _g = shared();
    let _w = watchdog(240);
    // Garbage in stamps and head, in a child bounded in time: every operation must return
    // (with a value, an error or a timeout), and lengths stay within capacity.
    let zombie = zombie();
    let dead = zombie.pid();
    in_child_bounded("random stamps", 120, || {
        let me = std::process::id();
        let mut rng = Rng::new(0xbad_5eed);
        for round in 0..400u64 {
            let cap = [1usize, 2, 4, 8][round as usize % 4];
            let Ok(q) = Queue::<u64>::new(cap) else { return 2 };
            let raw = RawView::mpmc(q.segment(), 8);
            for i in 0..rng.below(cap as u64 + 1) {
                if q.try_send(i).is_err() {
                    return 3;
                }
            }
            let base = raw.ctl().tail.load(Ordering::Relaxed);
            for _ in 0..=rng.below(cap as u64) {
                let idx = rng.below(cap as u64) as usize;
                let pos = base.wrapping_add(rng.below(4 * cap as u64)).wrapping_sub(2 * cap as u64);
                let pid = [0, me, dead, 1, rng.next() as u32][rng.below(5) as usize];
                let phase = rng.below(4);
                let s = match rng.below(4) {
                    0 => rng.next(),
                    1 => mpmc::encode(pos, phase, pid),
                    _ => mpmc::encode(pos, phase, if phase == EMPTY || phase == FULL { 0 } else { pid }),
                };
                raw.stamp(idx).store(s, Ordering::SeqCst);
            }
            if rng.below(4) == 0 {
                raw.ctl().head.store(base.wrapping_add(rng.below(8)).wrapping_sub(4), Ordering::SeqCst);
            }
            for _ in 0..(2 * cap) {
                match rng.below(5) {
                    0 => drop(q.try_send(1)),
                    1 => drop(q.send_timeout(2, Duration::from_millis(3))),
                    2 => drop(q.try_recv()),
                    3 => drop(q.recv_timeout(Duration::from_millis(3))),
                    _ => {
                        if q.len() > q.capacity() {
                            return 4;
                        }
                    }
                }
            }
        }
        0
    });
    drop(zombie);
}

/// Regression (fixed in 3aac508): a stamp in the EMPTY or FULL phase that also names a pid
/// made `mpmc::push`/`pop` retry the same position forever.
#[test]
fn stamp_naming_a_pid_in_empty_or_full_phase_is_corrupted_not_a_hang() {
    let _g = shared();
    let _w = watchdog(60);
    // push: the tail slot reads EMPTY(tail) but with pid bits set.
    in_child_bounded("try_send on EMPTY stamp with pid bits", 20, || {
        let Ok(q) = Queue::<u64>::new(4) else { return 2 };
        let raw = RawView::mpmc(q.segment(), 8);
        raw.stamp(0).store(mpmc::encode(0, EMPTY, 1234), Ordering::SeqCst);
        if q.try_send(1) != Err(SendError::Corrupted(1)) {
            return 3;
        }
        i32::from(q.send_timeout(2, Duration::from_millis(5)) != Err(SendError::Corrupted(2))) * 4
    });
    // pop: the head slot reads FULL(head) but with pid bits set.
    in_child_bounded("try_recv on FULL stamp with pid bits", 20, || {
        let Ok(q) = Queue::<u64>::new(4) else { return 2 };
        let raw = RawView::mpmc(q.segment(), 8);
        raw.stamp(0).store(mpmc::encode(0, FULL, 1234), Ordering::SeqCst);
        raw.ctl().tail.store(1, Ordering::SeqCst);
        if !matches!(q.try_recv(), Err(RecvError::Corrupted(_))) {
            return 3;
        }
        i32::from(!matches!(q.recv(), Err(RecvError::Corrupted(_)))) * 4
    });
}

#[test]
fn corrupted_spsc_indices_give_corrupted_never_a_hang() {
    let _g = shared();
    let _w = watchdog(60);
    let short = Duration::from_millis(5);
    // head beyond tail: the producer sees more than capacity used.
    let (tx, rx) = spsc_channel::<u64>(4).unwrap();
    tx.send(1).unwrap();
    let seg = tx.segment().clone();
    let raw = RawView::spsc(&seg, 8);
    for _ in 0..3 {
        tx.send(2).unwrap(); // full: the next push re-reads head
    }
    raw.ctl().head.store(u64::MAX - 5, Ordering::SeqCst);
    assert_eq!(tx.try_send(3), Err(SendError::Corrupted(3)));
    assert_eq!(tx.send_timeout(3, short), Err(SendError::Corrupted(3)));
    assert_eq!(tx.try_send_slice(&[3, 4]), Err(SendError::Corrupted(())));
    assert_eq!(tx.len(), 0, "impossible distance reads as empty");
    // tail far beyond head: the consumer sees more than capacity ready.
    let (tx2, rx2) = spsc_channel::<u64>(4).unwrap();
    let seg = tx2.segment().clone();
    let raw = RawView::spsc(&seg, 8);
    raw.ctl().tail.store(1 << 40, Ordering::SeqCst);
    assert!(matches!(rx2.try_recv(), Err(RecvError::Corrupted(_))));
    assert!(matches!(rx2.recv_timeout(short), Err(RecvError::Corrupted(_))));
    let mut buf = [0u64; 4];
    assert!(matches!(rx2.recv_into(&mut buf), Err(RecvError::Corrupted(_))));
    // tail within capacity of head: garbage "messages" of plain data, never out of bounds.
    raw.ctl().tail.store(3, Ordering::SeqCst);
    assert_eq!(rx2.try_recv_into(&mut buf), Ok(3));
    drop((tx, rx, tx2, rx2));
    // Random garbage in both indices, in a bounded child.
    in_child_bounded("random spsc indices", 60, || {
        let mut rng = Rng::new(77);
        for _ in 0..500 {
            let cap = 1 + rng.below(7) as usize;
            let Ok((tx, rx)) = spsc_channel::<u64>(cap) else { return 2 };
            let seg = tx.segment().clone();
            let raw = RawView::spsc(&seg, 8);
            for _ in 0..rng.below(cap as u64 + 1) {
                let _ = tx.try_send(1);
            }
            let f = if rng.below(2) == 0 { &raw.ctl().head } else { &raw.ctl().tail };
            f.store(if rng.below(2) == 0 { rng.next() } else { rng.below(16) }, Ordering::SeqCst);
            let mut buf = [0u64; 5];
            for _ in 0..10 {
                match rng.below(6) {
                    0 => drop(tx.try_send(1)),
                    1 => drop(tx.send_timeout(1, Duration::from_millis(1))),
                    2 => drop(tx.try_send_slice(&[1, 2, 3])),
                    3 => drop(rx.try_recv()),
                    4 => drop(rx.recv_timeout(Duration::from_millis(1))),
                    _ => drop(rx.try_recv_into(&mut buf)),
                }
                if tx.len() > cap {
                    return 3;
                }
            }
        }
        0
    });
}

#[test]
fn named_queue_with_corrupted_geometry_is_refused_on_open() {
    let _g = shared();
    let name = unique_name("qgeo");
    let q = Queue::<u64>::create(&name, 8).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    raw.ctl().capacity.store(1 << 50, Ordering::SeqCst);
    assert!(matches!(Queue::<u64>::open(&name), Err(QueueOpenError::Geometry(GeometryError::Mismatch(_)))));
    raw.ctl().capacity.store(8, Ordering::SeqCst);
    raw.ctl().slots.store(16, Ordering::SeqCst);
    assert!(matches!(Queue::<u64>::open(&name), Err(QueueOpenError::Geometry(GeometryError::Mismatch(_)))));
    raw.ctl().slots.store(8, Ordering::SeqCst);
    raw.ctl().elem_size.store(4, Ordering::SeqCst);
    assert!(Queue::<u64>::open(&name).is_err());
    raw.ctl().elem_size.store(8, Ordering::SeqCst);
    // Restored: it opens, and this process keeps using its own copy of the geometry throughout.
    let other = Queue::<u64>::open(&name).unwrap();
    other.send(3).unwrap();
    assert_eq!(q.recv(), Ok(3));
}

// ---------------------------------------------------------------------------------------------
// Processes killed mid-operation (simulated exactly with the raw stamp encoding)
// ---------------------------------------------------------------------------------------------

#[test]
fn dead_producer_mid_write_is_skipped_and_counted_abandoned() {
    let _g = shared();
    let _w = watchdog(60);
    let long = Duration::from_secs(30);
    let q = Queue::<u64>::new(4).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    check_fresh_stamps(&raw);
    // Position 0 holds a message; a producer claimed position 1 and moved tail past it, then
    // died before publishing.
    q.send(10).unwrap();
    let dead = zombie();
    raw.stamp(1).store(mpmc::encode(1, WRITING, dead.pid()), Ordering::SeqCst);
    raw.ctl().tail.store(2, Ordering::SeqCst);
    q.send(12).unwrap(); // position 2
    assert_eq!(q.recv_timeout(long), Ok(10));
    assert_eq!(q.recv_timeout(long), Ok(12), "the dead producer's slot was not skipped");
    assert_eq!(q.stats(), Stats { abandoned: 1, lost: 0 });
    assert_eq!(
        raw.stamp(1).load(Ordering::SeqCst),
        mpmc::encode(1 + 4, EMPTY, 0),
        "slot freed for the next lap"
    );
    for i in 0..12 {
        q.send(i).unwrap();
        assert_eq!(q.recv(), Ok(i));
    }

    // A live claimer is never skipped, however long it takes; once it dies, it is.
    let live = sleeper();
    let pos = raw.ctl().tail.load(Ordering::SeqCst);
    let idx = (pos % 4) as usize;
    raw.stamp(idx).store(mpmc::encode(pos, WRITING, live.pid()), Ordering::SeqCst);
    raw.ctl().tail.store(pos + 1, Ordering::SeqCst);
    q.send(99).unwrap();
    assert_eq!(
        q.recv_timeout(Duration::from_millis(100)),
        Err(RecvError::Timeout),
        "a live claimer was skipped"
    );
    assert_eq!(q.stats().abandoned, 1);
    kill_leaving_zombie(&live);
    assert_eq!(q.recv_timeout(long), Ok(99));
    assert_eq!(q.stats(), Stats { abandoned: 2, lost: 0 });

    // A consumer in another process skips it too.
    let dead2 = zombie();
    let pos = raw.ctl().tail.load(Ordering::SeqCst);
    raw.stamp((pos % 4) as usize).store(mpmc::encode(pos, WRITING, dead2.pid()), Ordering::SeqCst);
    raw.ctl().tail.store(pos + 1, Ordering::SeqCst);
    q.send(55).unwrap();
    // SAFETY: the child receives and exits.
    let mut child = unsafe { fork(|| i32::from(q.recv_timeout(Duration::from_secs(30)) != Ok(55))) }.unwrap();
    expect_exit(&mut child, "consumer", 60);
    assert_eq!(q.stats(), Stats { abandoned: 3, lost: 0 });
    drop((dead, dead2, live));
}

/// Regression (fixed in 211afe7): the skipped slot's stamp moved a lap ahead of the unmoved
/// `tail`, and every later send returned `Corrupted`.
#[test]
fn dead_producer_killed_before_advancing_tail_leaves_the_queue_usable() {
    let _g = shared();
    let _w = watchdog(60);
    let long = Duration::from_secs(30);
    let q = Queue::<u64>::new(4).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    // Position 0 holds a message; a producer won the CAS on position 1's stamp and was killed
    // before `tail` moved (the next instruction of mpmc::push): tail still reads 1.
    q.send(10).unwrap();
    let dead = zombie();
    raw.stamp(1).store(mpmc::encode(1, WRITING, dead.pid()), Ordering::SeqCst);
    assert_eq!(q.recv_timeout(long), Ok(10));
    // The consumer reaches the dead slot before any producer helps tail past it, and skips it.
    assert_eq!(q.recv_timeout(Duration::from_millis(200)), Err(RecvError::Timeout));
    assert_eq!(q.stats().abandoned, 1, "the dead producer's slot was not skipped");
    // The queue must still work.
    assert_eq!(q.send_timeout(11, long), Ok(()), "send after the skip");
    assert_eq!(q.recv_timeout(long), Ok(11));
    for i in 0..12 {
        q.send(i).unwrap();
        assert_eq!(q.recv(), Ok(i));
    }
    assert_eq!(q.stats(), Stats { abandoned: 1, lost: 0 });
}

#[test]
fn dead_consumer_mid_read_on_full_queue_is_freed_by_a_producer_and_counted_lost() {
    let _g = shared();
    let _w = watchdog(60);
    let long = Duration::from_secs(30);
    let q = JoinableQueue::<u64>::new(4).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    check_fresh_stamps(&raw);
    for i in 0..4 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished(), 4);
    // A consumer claimed position 0 (and head moved past it), then died copying it out.
    let dead = zombie();
    raw.stamp(0).store(mpmc::encode(0, READING, dead.pid()), Ordering::SeqCst);
    raw.ctl().head.store(1, Ordering::SeqCst);
    assert_eq!(q.try_send(4), Err(SendError::Full(4)));
    assert_eq!(q.send_timeout(4, long), Ok(()), "the dead consumer's slot was not freed");
    assert_eq!(q.stats(), Stats { abandoned: 0, lost: 1 });
    // The lost message is settled for join: 4 put + 1 put - 1 lost.
    assert_eq!(q.unfinished(), 4);
    let got: Vec<u64> = (0..4).map(|_| q.recv_timeout(long).unwrap()).collect();
    assert_eq!(got, [1, 2, 3, 4]);
    for _ in 0..4 {
        q.task_done().unwrap();
    }
    assert!(q.join_timeout(long).is_ok());

    // A live reader's slot is never taken, however long it takes; once it dies, it is.
    let live = sleeper();
    for i in 0..4 {
        q.put(10 + i).unwrap();
    }
    let head = raw.ctl().head.load(Ordering::SeqCst);
    raw.stamp((head % 4) as usize).store(mpmc::encode(head, READING, live.pid()), Ordering::SeqCst);
    raw.ctl().head.store(head + 1, Ordering::SeqCst);
    assert_eq!(q.send_timeout(20, Duration::from_millis(100)), Err(SendError::Timeout(20)));
    assert_eq!(q.stats().lost, 1, "a live reader's slot was taken");
    kill_leaving_zombie(&live);
    // A producer in another process frees it.
    // SAFETY: the child sends and exits.
    let mut child =
        unsafe { fork(|| i32::from(q.send_timeout(21, Duration::from_secs(30)).is_err())) }.unwrap();
    expect_exit(&mut child, "producer", 60);
    assert_eq!(q.stats(), Stats { abandoned: 0, lost: 2 });
    let got: Vec<u64> = (0..4).map(|_| q.recv_timeout(long).unwrap()).collect();
    assert_eq!(got, [11, 12, 13, 21]);
    drop((dead, live));
}

/// Regression (fixed in 211afe7): the freed slot's stamp moved a lap ahead of the unmoved
/// `head`, and every later recv returned `Corrupted`.
#[test]
fn dead_consumer_killed_before_advancing_head_leaves_the_queue_usable() {
    let _g = shared();
    let _w = watchdog(60);
    let long = Duration::from_secs(30);
    let q = Queue::<u64>::new(4).unwrap();
    let raw = RawView::mpmc(q.segment(), 8);
    for i in 0..4 {
        q.send(i).unwrap();
    }
    // A consumer won the CAS on position 0's stamp and was killed before `head` moved (the
    // next instruction of mpmc::pop): head still reads 0.
    let dead = zombie();
    raw.stamp(0).store(mpmc::encode(0, READING, dead.pid()), Ordering::SeqCst);
    // The queue is full; a producer frees the dead reader's slot before any consumer helped
    // head past it.
    assert_eq!(q.send_timeout(4, long), Ok(()));
    assert_eq!(q.stats().lost, 1);
    // Messages 1..=4 must still be receivable.
    let got: Vec<_> = (0..4).map(|_| q.recv_timeout(long)).collect();
    assert_eq!(got, [Ok(1), Ok(2), Ok(3), Ok(4)]);
    for i in 0..12 {
        q.send(i).unwrap();
        assert_eq!(q.recv(), Ok(i));
    }
    assert_eq!(q.stats(), Stats { abandoned: 0, lost: 1 });
}

// ---------------------------------------------------------------------------------------------
// Chaos: producers and consumers SIGKILLed at random moments
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, seedable, no dependencies.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Sequence numbers per producer (the low 13 bits of a value's low word).
const SEQ_BITS: u32 = 13;
const MAX_SEQ: usize = 1 << SEQ_BITS;
/// The tag of the values the parent sends itself after the chaos.
const FILLER_TAG: usize = 0;

/// A value: low word `tag << 13 | seq`, high word a hash of the low word (never 0), so a torn
/// or invented value is recognised.
fn chaos_value(tag: usize, seq: usize) -> u64 {
    let low = (tag << SEQ_BITS | seq) as u32;
    u64::from(check_word(low)) << 32 | u64::from(low)
}

fn check_word(low: u32) -> u32 {
    let mut x = u64::from(low) ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((x ^ (x >> 31)) as u32) | 1
}

/// (tag, seq) of a well-formed value.
fn chaos_decode(v: u64) -> Option<(usize, usize)> {
    let low = v as u32;
    ((v >> 32) as u32 == check_word(low))
        .then_some(((low >> SEQ_BITS) as usize, (low as usize) & (MAX_SEQ - 1)))
}

// Flags and counters in `ChaosArea::flags`.
const STOP_PRODUCERS: usize = 0;
const STOP_CONSUMERS: usize = 1;
const TORN: usize = 2;
const INVALID: usize = 3;
const DUPLICATES: usize = 4;
const OUT_OF_ORDER: usize = 5;
const CHILD_ERRORS: usize = 6;

struct ChaosArea {
    seg: Arc<Segment>,
    flags: SliceOffset<AtomicU64>,
    /// Per producer tag: how many of its values it saw `send` accept (written after the send).
    acked: SliceOffset<AtomicU64>,
    /// Per consumer: non-zero while it may hold a message it has not recorded yet.
    pending: SliceOffset<AtomicU64>,
    /// Per (tag, seq): 1 once received.
    got: SliceOffset<AtomicU8>,
}

struct Chaos<'a> {
    flags: &'a [AtomicU64],
    acked: &'a [AtomicU64],
    pending: &'a [AtomicU64],
    got: &'a [AtomicU8],
}

impl ChaosArea {
    fn new(tags: usize, consumers: usize) -> Self {
        let mut l = Layout::new();
        let flags = l.push_slice(8);
        let acked = l.push_slice(tags);
        let pending = l.push_slice(consumers);
        let got = l.push_slice(tags * MAX_SEQ);
        let seg = Arc::new(Segment::anonymous(Kind::RAW, l.size()).unwrap());
        ChaosArea { seg, flags, acked, pending, got }
    }
    fn view(&self) -> Chaos<'_> {
        Chaos {
            flags: self.seg.get_slice(self.flags).unwrap(),
            acked: self.seg.get_slice(self.acked).unwrap(),
            pending: self.seg.get_slice(self.pending).unwrap(),
            got: self.seg.get_slice(self.got).unwrap(),
        }
    }
}

impl Chaos<'_> {
    /// Records a received value; false if it is torn, invented or a duplicate.
    fn record(&self, v: u64, last: &mut [u16]) {
        let Some((tag, seq)) = chaos_decode(v) else {
            self.flags[TORN].fetch_add(1, Ordering::Relaxed);
            return;
        };
        if tag >= self.acked.len() {
            self.flags[INVALID].fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Per consumer, one producer's values arrive in the order it sent them.
        if tag < last.len() {
            if last[tag] != u16::MAX && last[tag] as usize >= seq {
                self.flags[OUT_OF_ORDER].fetch_add(1, Ordering::Relaxed);
            }
            last[tag] = seq as u16;
        }
        if self.got[tag * MAX_SEQ + seq].swap(1, Ordering::Relaxed) != 0 {
            self.flags[DUPLICATES].fetch_add(1, Ordering::Relaxed);
        }
    }
}

const LAST_CAP: usize = 8192;

fn chaos_producer(q: &Queue<u64>, c: &Chaos<'_>, tag: usize) -> i32 {
    for seq in 0..MAX_SEQ {
        loop {
            if c.flags[STOP_PRODUCERS].load(Ordering::Acquire) != 0 {
                return 0;
            }
            match q.send_timeout(chaos_value(tag, seq), Duration::from_millis(20)) {
                Ok(()) => break,
                Err(SendError::Timeout(_)) => {}
                Err(SendError::Corrupted(_)) => {
                    c.flags[CHILD_ERRORS].fetch_add(1 << 32, Ordering::Relaxed);
                    return 3;
                }
                Err(_) => {
                    c.flags[CHILD_ERRORS].fetch_add(1, Ordering::Relaxed);
                    return 2;
                }
            }
        }
        // Acknowledged after `send` returned: a kill in between leaves one value sent but not
        // acknowledged, which the checks allow.
        c.acked[tag].store(seq as u64 + 1, Ordering::Release);
    }
    0
}

fn chaos_consumer(q: &Queue<u64>, c: &Chaos<'_>, slot: usize) -> i32 {
    let mut last = [u16::MAX; LAST_CAP];
    let pending = &c.pending[slot];
    loop {
        // Set before the receive, cleared after the value is recorded: a consumer killed with
        // it set may have taken one message that it never recorded.
        pending.store(1, Ordering::SeqCst);
        match q.recv_timeout(Duration::from_millis(20)) {
            Ok(v) => {
                pending.store(2, Ordering::Relaxed);
                c.record(v, &mut last);
                pending.store(0, Ordering::SeqCst);
            }
            Err(RecvError::Timeout) => {
                pending.store(0, Ordering::SeqCst);
                if c.flags[STOP_CONSUMERS].load(Ordering::Acquire) != 0 {
                    return 0;
                }
            }
            Err(RecvError::Corrupted(_)) => {
                c.flags[CHILD_ERRORS].fetch_add(1 << 32, Ordering::Relaxed);
                return 5;
            }
            Err(_) => {
                c.flags[CHILD_ERRORS].fetch_add(1, Ordering::Relaxed);
                return 4;
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Part {
    Producer(usize),
    Consumer(usize),
}

struct Worker {
    child: ForkedChild,
    part: Part,
}

#[derive(Debug, Default)]
struct ChaosReport {
    kills: usize,
    producer_kills: usize,
    consumer_kills: usize,
    /// Consumers killed while they may have held an unrecorded message.
    consumer_kills_pending: usize,
    acked: u64,
    received: u64,
    missing: u64,
    extra: u64,
    stats: Stats,
}

fn chaos(target_kills: usize, seed: u64) -> ChaosReport {
    const PRODUCERS: usize = 2;
    const CONSUMERS: usize = 2;
    let tags = 4 * target_kills + 64;
    let consumer_slots = 4 * target_kills + 64;
    let area = ChaosArea::new(tags, consumer_slots);
    let c = area.view();
    let q = Queue::<u64>::new(8).unwrap();
    let mut rng = Rng::new(seed);
    let mut next_tag = FILLER_TAG + 1;
    let mut next_slot = 0;
    let mut killed_tags = vec![false; tags];
    let mut report = ChaosReport::default();

    // Forks a worker for the next unused tag (producer) or pending slot (consumer).
    let mut spawn = |producer: bool| -> Worker {
        let part = if producer {
            assert!(next_tag < tags, "out of producer tags");
            next_tag += 1;
            Part::Producer(next_tag - 1)
        } else {
            assert!(next_slot < consumer_slots, "out of consumer slots");
            next_slot += 1;
            Part::Consumer(next_slot - 1)
        };
        // SAFETY: the workers use the queue and shared atomics, then exit (or are killed).
        let child = unsafe {
            fork(|| match part {
                Part::Producer(tag) => chaos_producer(&q, &c, tag),
                Part::Consumer(slot) => chaos_consumer(&q, &c, slot),
            })
        }
        .unwrap();
        Worker { child, part }
    };
    let mut workers = Vec::new();
    for i in 0..PRODUCERS + CONSUMERS {
        workers.push(spawn(i < PRODUCERS));
    }
    let is_producer = |w: &Worker| matches!(w.part, Part::Producer(_));

    while report.kills < target_kills {
        std::thread::sleep(Duration::from_micros(rng.below(2_000)));
        // Usually one victim; sometimes every producer or every consumer at once, so that the
        // queue also runs with only one side alive for a while.
        let victims: Vec<usize> = match rng.below(16) {
            0 => (0..workers.len()).filter(|&i| is_producer(&workers[i])).collect(),
            1 => (0..workers.len()).filter(|&i| !is_producer(&workers[i])).collect(),
            _ => vec![rng.below(workers.len() as u64) as usize],
        };
        for &i in &victims {
            workers[i].child.signal(libc::SIGKILL).unwrap();
        }
        if victims.len() > 1 {
            std::thread::sleep(Duration::from_micros(rng.below(3_000)));
        }
        for &i in &victims {
            let w = &mut workers[i];
            let st = w.child.wait_timeout(Duration::from_secs(30)).unwrap().expect("killed worker reaped");
            if st.signal() == Some(libc::SIGKILL) {
                report.kills += 1;
                match w.part {
                    Part::Producer(tag) => {
                        report.producer_kills += 1;
                        killed_tags[tag] = true;
                    }
                    Part::Consumer(slot) => {
                        report.consumer_kills += 1;
                        // The child is dead: its flag is final.
                        if c.pending[slot].load(Ordering::SeqCst) != 0 {
                            report.consumer_kills_pending += 1;
                        }
                    }
                }
            } else {
                assert_eq!(st.code(), Some(0), "{:?} failed", w.part);
            }
            *w = spawn(is_producer(w));
        }
        // Producers that reached their last sequence number exit on their own.
        for w in workers.iter_mut() {
            if let Some(st) = w.child.try_wait().unwrap() {
                assert_eq!(st.code(), Some(0), "{:?} failed", w.part);
                *w = spawn(is_producer(w));
            }
        }
    }

    // Survivors finish: producers stop, consumers drain, and nobody hangs.
    c.flags[STOP_PRODUCERS].store(1, Ordering::Release);
    for w in workers.iter_mut().filter(|w| is_producer(w)) {
        expect_exit(&mut w.child, &format!("surviving {:?}", w.part), 60);
    }
    until("the surviving consumers to drain the queue", || q.is_empty());
    c.flags[STOP_CONSUMERS].store(1, Ordering::Release);
    for w in workers.iter_mut().filter(|w| !is_producer(w)) {
        expect_exit(&mut w.child, &format!("surviving {:?}", w.part), 60);
    }
    let errors = c.flags[CHILD_ERRORS].load(Ordering::Relaxed);
    assert_eq!(errors, 0, "workers saw errors ({} Corrupted, {} other)", errors >> 32, errors & 0xffff_ffff);

    // The parent drains what is left, then sends two laps of its own values through the ring,
    // so that every slot a killed consumer left in READING is reached by a producer and
    // recovered (counted in `lost`), and the ring is shown to work.
    let mut last = [u16::MAX; LAST_CAP];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match q.recv_timeout(Duration::from_millis(20)) {
            Ok(v) => c.record(v, &mut last),
            Err(RecvError::Timeout) if q.is_empty() => break,
            Err(RecvError::Timeout) => assert!(Instant::now() < deadline, "leftovers never drained"),
            Err(e) => panic!("parent drain: {e:?}"),
        }
    }
    let slots = q.capacity();
    for i in 0..2 * slots {
        let v = chaos_value(FILLER_TAG, i);
        q.send_timeout(v, Duration::from_secs(30)).unwrap_or_else(|e| panic!("filler {i}: {e:?}"));
        assert_eq!(q.recv_timeout(Duration::from_secs(30)), Ok(v), "filler {i}");
    }
    assert!(q.is_empty());

    // The checks.
    for (what, i) in
        [("torn", TORN), ("invented", INVALID), ("duplicate", DUPLICATES), ("out of order", OUT_OF_ORDER)]
    {
        assert_eq!(c.flags[i].load(Ordering::Relaxed), 0, "{what} values received");
    }
    report.stats = q.stats();
    for (tag, &killed) in killed_tags.iter().enumerate().take(next_tag).skip(FILLER_TAG + 1) {
        let acked = c.acked[tag].load(Ordering::Acquire) as usize;
        report.acked += acked as u64;
        for seq in 0..MAX_SEQ {
            let got = c.got[tag * MAX_SEQ + seq].load(Ordering::Relaxed) != 0;
            report.received += u64::from(got);
            if seq < acked && !got {
                report.missing += 1;
            } else if seq == acked && got {
                // Sent, and its producer killed before it acknowledged it.
                assert!(killed, "tag {tag}: value {seq} received but never acknowledged");
                report.extra += 1;
            } else if seq > acked {
                assert!(!got, "tag {tag}: value {seq} received, beyond what was sent");
            }
        }
    }
    // The accounting invariant. A value whose `send` returned (acknowledged) was published
    // (FULL), so it is received unless a consumer took it and died before recording it:
    // either while copying it out (the slot stays READING; the filler laps above make a
    // producer recover it, counted in `lost`), or after `recv` returned and before the record
    // (invisible to the queue: `received + lost + abandoned ≥ acknowledged` therefore does not
    // hold by itself, and `abandoned` counts only unpublished, so unacknowledged, values).
    // Each consumer kill loses at most one message, and only one killed with `pending` set:
    //   acknowledged - received-and-acknowledged ≤ consumer kills with `pending` set,
    // and `lost` (dead READING slots) and `abandoned` (dead WRITING slots) are bounded by the
    // kills of their side. A producer killed after `send` returned but before acknowledging
    // adds one received value beyond `acked`, at most one per killed producer (checked above).
    assert!(
        report.missing <= report.consumer_kills_pending as u64,
        "{} acknowledged values never received, but only {} consumers could have lost one: {report:?}",
        report.missing,
        report.consumer_kills_pending
    );
    assert!(report.stats.lost <= report.consumer_kills as u64, "{report:?}");
    assert!(report.stats.abandoned <= report.producer_kills as u64, "{report:?}");
    assert!(report.extra <= report.producer_kills as u64, "{report:?}");
    assert!(report.received > 0, "nothing was delivered: {report:?}");
    drop(area);
    report
}

fn chaos_seed() -> u64 {
    std::env::var("SHMKIT_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

#[test]
fn chaos_sigkilled_producers_and_consumers_lose_nothing_acknowledged_and_never_duplicate() {
    let _g = shared();
    let _w = watchdog(110);
    let seed = chaos_seed();
    eprintln!("chaos seed {seed} (set SHMKIT_CHAOS_SEED to replay the kill schedule)");
    let start = Instant::now();
    let r = chaos(150, seed);
    eprintln!("chaos: {r:?} in {:?}", start.elapsed());
    assert!(r.kills >= 150);
}

#[test]
#[ignore = "stress: thousands of SIGKILLs; run with --ignored"]
fn stress_chaos_many_kills() {
    let _g = shared();
    let _w = watchdog(1200);
    for round in 0..5 {
        let seed = chaos_seed().wrapping_add(round);
        eprintln!("stress chaos round {round}, seed {seed}");
        let start = Instant::now();
        let r = chaos(1000, seed);
        eprintln!("stress chaos: {r:?} in {:?}", start.elapsed());
    }
}

// ---------------------------------------------------------------------------------------------
// Member records of a process holding a queue through two mappings (regressions): a forked
// child's records have no start time yet, and another handle of the same queue in the same
// process must not mistake them for a stale record of its pid and take them over.
// ---------------------------------------------------------------------------------------------

/// The member table of an MPMC ring at offset 0 of `seg`: (pid, start, sender, receiver).
fn member_table(seg: &Segment) -> Vec<(u32, u64, bool, bool)> {
    RawView::mpmc(seg, 8)
        .ctl()
        .members
        .iter()
        .filter(|m| m.pid.load(Ordering::Relaxed) != 0)
        .map(|m| {
            (
                m.pid.load(Ordering::Relaxed),
                m.start.load(Ordering::Relaxed),
                m.senders.load(Ordering::Relaxed) != 0,
                m.receivers.load(Ordering::Relaxed) != 0,
            )
        })
        .collect()
}

/// The parent's half of the two regressions below: once the child has done its part (`a[0]`),
/// the parent drops its last sender; the child still holds its inherited one, so a receive
/// times out instead of reporting `Disconnected`. Then the child sends (`a[1]`) and exits.
fn inherited_sender_still_counts(
    rx: shmkit::queue::Receiver<u64>,
    tx: shmkit::queue::Sender<u64>,
    a: &[AtomicU64],
    child: &mut ForkedChild,
    before_drop: impl FnOnce(),
) {
    until("the child to drop its opened handle", || a[0].load(Ordering::Acquire) == 1);
    before_drop();
    drop(tx); // the parent keeps only the receiver
    let r = rx.recv_timeout(Duration::from_millis(500));
    assert_eq!(
        r,
        Err(RecvError::Timeout),
        "the child (pid {}) still holds its inherited sender; member table: {:?}",
        child.pid(),
        member_table(rx.segment())
    );
    a[1].store(1, Ordering::Release);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(77));
    expect_exit(child, "child", 30);
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Err(RecvError::Disconnected));
}

#[test]
fn forked_child_opening_its_queue_by_name_keeps_the_inherited_record() {
    let _g = exclusive();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let name = unique_name("reopen-in-child");
    let (tx, rx) = Queue::<u64>::create(&name, 4).unwrap().split();
    // SAFETY: the child opens the queue by name (malloc is reset after fork), uses the queue
    // and shared atomics, then exits.
    let mut child = unsafe {
        fork(|| {
            // Before any blocking call: the record the fork handler wrote still has start 0.
            let Ok(opened) = Queue::<u64>::open(&name) else { return 2 };
            drop(opened);
            a[0].store(1, Ordering::Release);
            if !child_wait_for(&a[1]) {
                return 3;
            }
            match tx.send_timeout(77, Duration::from_secs(30)) {
                Ok(()) => 0,
                Err(_) => 4,
            }
        })
    }
    .unwrap();
    inherited_sender_still_counts(rx, tx, a, &mut child, || {});
}

#[test]
fn queue_opened_twice_then_forked_child_gets_a_record_per_mapping() {
    let _g = exclusive();
    let _w = watchdog(60);
    let area = Area::new(2);
    let a = area.all();
    let name = unique_name("twice-then-fork");
    let (tx, rx) = Queue::<u64>::create(&name, 4).unwrap().split();
    // A second mapping of the same queue in this process; the child and the parent each drop
    // their copy.
    let second = std::cell::Cell::new(Some(Queue::<u64>::open(&name).unwrap()));
    // SAFETY: the child drops a queue handle, uses the queue and shared atomics, then exits.
    let mut child = unsafe {
        fork(|| {
            drop(second.take());
            a[0].store(1, Ordering::Release);
            if !child_wait_for(&a[1]) {
                return 3;
            }
            match tx.send_timeout(77, Duration::from_secs(30)) {
                Ok(()) => 0,
                Err(_) => 4,
            }
        })
    }
    .unwrap();
    inherited_sender_still_counts(rx, tx, a, &mut child, || drop(second.take()));
}

/// Entry of the exec'd process of the test below: opens the queue `args[0]`, sends 5, drops
/// the queue, flags board slot 0 and stays alive until board slot 1 is set.
#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn exec_reopen_role_entry() {
    let Some((_, args)) = role() else { return };
    let board = common::Board::open(common::Name::new(&args[1]));
    let code = match Queue::<u64>::open(&args[0]) {
        Ok(q) => {
            let sent = q.send_timeout(5, Duration::from_secs(30));
            drop(q);
            board.set(0, 1);
            let deadline = Instant::now() + Duration::from_secs(30);
            while board.get(1) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if sent.is_ok() && board.get(1) == 1 {
                0
            } else {
                3
            }
        }
        Err(_) => 2,
    };
    std::process::exit(code);
}

/// The parent's side of the exec'd cases below: the parent holds the queue (through `mappings`
/// mappings of it), starts the exec'd process, and once that process opened and dropped the
/// queue, drops its own senders: the receiver drains, then gets `Disconnected` while the exec'd
/// process still lives.
fn exec_d_child_reopens_and_drops(mappings: usize) {
    use std::os::unix::process::CommandExt;

    let name = unique_name("exec-reopen");
    let board = common::Board::new();
    let (tx, rx) = Queue::<u64>::create(&name, 4).unwrap().split();
    let others: Vec<Queue<u64>> = (1..mappings).map(|_| Queue::open(&name).unwrap()).collect();
    let mut cmd =
        role_command("exec_reopen_role_entry", "reopen", &[name.clone(), board.name().as_str().to_owned()]);
    // A `pre_exec` makes std fork (not posix_spawn), as `Process` spawn does: the fork
    // handler gives the child records (one per mapping), with our roles and no start time,
    // which the exec'd image (holding no inherited handle) takes over or frees when it opens
    // the queue.
    // SAFETY: the closure does nothing.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let mut child = cmd.spawn().expect("spawn role process");
    until("the exec'd process to drop its queue", || board.get(0) == 1);
    drop(others);
    drop(tx); // no sender left anywhere: the exec'd process dropped its only one
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(5));
    let r = rx.recv_timeout(Duration::from_secs(10));
    let table = member_table(rx.segment());
    assert!(child.try_wait().unwrap().is_none(), "the exec'd process exited early");
    assert_eq!(r, Err(RecvError::Disconnected), "exec'd pid {}; member table: {table:?}", child.id());
    board.set(1, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the exec'd process did not exit");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(st.code(), Some(0), "exec'd process failed: {st:?}");
}

#[test]
fn exec_d_child_reclaims_the_record_its_fork_left_and_frees_it_on_drop() {
    let _g = exclusive();
    let _w = watchdog(60);
    exec_d_child_reopens_and_drops(1);
}

#[test]
fn exec_d_child_of_a_process_mapping_the_queue_twice_frees_every_record_its_fork_left() {
    let _g = exclusive();
    let _w = watchdog(60);
    exec_d_child_reopens_and_drops(2);
}
