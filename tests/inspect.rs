//! `shmkit::inspect` and `shmkit inspect NAME` on real objects held, used and abandoned by real
//! processes: lock owners alive and SIGKILLed, queue depth, holders and slots left by a killed
//! producer, joinable tasks, semaphores, events, barriers, conditions, values and pipes; that
//! inspecting changes no byte, registers as no holder and takes over no lock; the CLI's text
//! and its errors; and hostile segment files.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::{role, role_command, shm_path, shmkit, unique_name, wait_for, watchdog};
use shmkit::inspect::{inspect, inspect_segment, Contents, InspectError, LockView, RingView, SpscEnd};
use shmkit::pipe::Pipe;
use shmkit::queue::raw::{mpmc, RingCtl};
use shmkit::queue::{JoinableQueue, Queue, RecvError, SpscQueue};
use shmkit::shm::{Backing, Header, Kind, Layout, Offset, Segment, ShmOpenError};
use shmkit::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, LockTimeoutError, RLock, Semaphore};
use shmkit::util::child::{fork, ForkedChild};
use shmkit::util::proc::Liveness;
use shmkit::value::{Array, RawArray, RawValue, Value};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// One test at a time: a queue's fork handler gives every child forked by any thread a member
/// record in every queue of the process, which would put other tests' children in the holder
/// lists checked here.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A flag in an anonymous segment, shared with forked children.
struct Flag {
    seg: Arc<Segment>,
}

impl Flag {
    fn new() -> Flag {
        let mut l = Layout::new();
        l.push::<AtomicU64>();
        Flag { seg: Arc::new(Segment::anonymous(Kind::RAW, l.size()).unwrap()) }
    }
    fn word(&self) -> &AtomicU64 {
        self.seg.get(Offset::new(0)).unwrap()
    }
    fn set(&self, v: u64) {
        self.word().store(v, Ordering::SeqCst);
    }
    fn get(&self) -> u64 {
        self.word().load(Ordering::SeqCst)
    }
    /// Waits (bounded) until the flag is at least `v`.
    fn wait(&self, what: &str, v: u64) {
        wait_for(what, 30, || self.get() >= v);
    }
}

/// Forks a child that runs `f`, sets `flag` to 1 and sleeps until killed.
fn hold(flag: &Flag, f: impl FnOnce()) -> ForkedChild {
    flag.set(0);
    // SAFETY: the child uses shmkit primitives, flags, and sleeps until killed.
    let child = unsafe {
        fork(|| {
            f();
            flag.set(1);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    }
    .unwrap();
    flag.wait("the child to be ready", 1);
    child
}

fn expect_exit(child: &mut ForkedChild, what: &str) {
    let st = child
        .wait_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap_or_else(|| panic!("{what} did not finish within 30 s"));
    assert_eq!(st.code(), Some(0), "{what} failed: {st:?}");
}

/// The segment file's bytes, header included.
fn file_bytes(name: &str) -> Vec<u8> {
    std::fs::read(shm_path(name)).unwrap()
}

/// The report's text as `shmkit inspect NAME` prints it (checked to start with the same header
/// facts as the library's report; what follows may change between the two reads).
fn text(name: &str) -> String {
    let lib = inspect(name).unwrap().to_string();
    let out = shmkit(&["inspect", name]);
    assert!(out.status.success(), "shmkit inspect {name}: {}", String::from_utf8_lossy(&out.stderr));
    let cli = String::from_utf8(out.stdout).unwrap();
    let header = |t: &str| t.split("\n\n").next().unwrap_or_default().to_owned();
    assert_eq!(header(&lib), header(&cli), "library and CLI headers differ");
    cli
}

/// Asserts that inspecting `name` (library and CLI, several times) changes no byte of it.
fn inspect_changes_nothing(name: &str) {
    let before = file_bytes(name);
    for _ in 0..5 {
        inspect(name).unwrap();
    }
    let out = shmkit(&["inspect", name]);
    assert!(out.status.success());
    assert_eq!(file_bytes(name), before, "inspecting {name} changed its bytes");
}

fn assert_gone(name: &str) {
    assert!(!std::path::Path::new(&shm_path(name)).exists(), "{name} left in /dev/shm");
}

fn lock_of(c: Contents) -> LockView {
    match c {
        Contents::Lock(l) | Contents::RLock(l) => l,
        other => panic!("expected a lock, got {other:?}"),
    }
}

fn ring_of(c: Contents) -> RingView {
    match c {
        Contents::Queue(r) => r,
        other => panic!("expected a queue, got {other:?}"),
    }
}

/// Members as (pid, sender, receiver).
fn members(r: &RingView) -> BTreeSet<(u32, bool, bool)> {
    r.members.iter().map(|m| (m.holder.pid, m.sender, m.receiver)).collect()
}

fn me() -> u32 {
    std::process::id()
}

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let code = match role.as_str() {
        "recv-42-then-eof" => {
            let (tx, rx) = Queue::<u64>::open(&args[0]).expect("open queue").split();
            drop(tx);
            let got = rx.recv_timeout(Duration::from_secs(30));
            let end = rx.recv_timeout(Duration::from_secs(30));
            i32::from(got != Ok(42)) | i32::from(end != Err(RecvError::Disconnected)) << 1
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------------

#[test]
fn lock_held_by_a_live_child_then_sigkilled_shows_the_owner_alive_then_dead() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("lock");
    let lock = Lock::create(&name).unwrap();
    let flag = Flag::new();
    let mut child = hold(&flag, || std::mem::forget(lock.lock().unwrap()));
    let pid = child.pid();

    let l = lock_of(inspect(&name).unwrap().contents);
    let owner = l.owner.expect("held");
    assert_eq!((owner.pid, owner.liveness), (pid, Liveness::Alive));
    assert!(owner.start != 0, "the owner's start time is recorded");
    assert!(!l.inconsistent);
    let t = text(&name);
    assert!(t.contains("\nlock\n"), "{t}");
    assert!(t.contains(&format!("owner:            pid {pid} (alive)")), "{t}");
    inspect_changes_nothing(&name);

    // A parked waiter sets the WAITERS bit.
    let mut waiter = hold(&flag, || {
        let _ = lock.lock_timeout(Duration::from_millis(200));
    });
    waiter.kill().unwrap();
    assert!(lock_of(inspect(&name).unwrap().contents).waiters_flagged);

    child.kill().unwrap();
    let l = lock_of(inspect(&name).unwrap().contents);
    let owner = l.owner.expect("still named by the word");
    assert_eq!((owner.pid, owner.liveness), (pid, Liveness::Dead));
    let t = text(&name);
    assert!(
        t.contains(&format!("pid {pid} (dead): the next lock() takes it over and gets OwnerDied")),
        "{t}"
    );
    assert!(t.contains("consistent:       yes"), "{t}");
    inspect_changes_nothing(&name);

    // Inspecting took nothing over: the next acquirer still recovers the lock.
    match lock.lock_timeout(Duration::from_secs(10)) {
        Err(LockTimeoutError::OwnerDied(g)) => {
            let l = lock_of(inspect(&name).unwrap().contents);
            assert_eq!(l.owner.map(|o| (o.pid, o.liveness)), Some((me(), Liveness::Alive)));
            assert!(l.inconsistent, "taken over, not yet marked consistent");
            assert!(text(&name).contains("consistent:       no: taken over from a dead owner"));
            shmkit::sync::LockGuard::mark_consistent(&g);
        }
        Ok(_) => panic!("inspect took the dead owner's lock over"),
        Err(e) => panic!("expected OwnerDied, got {e:?}"),
    }
    let l = lock_of(inspect(&name).unwrap().contents);
    assert!(l.owner.is_none() && !l.inconsistent);
    drop(lock);
    assert_gone(&name);
}

#[test]
fn rlock_shows_owner_thread_and_depth_and_condition_its_lock_and_waiters() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("rlock");
    let rlock = RLock::create(&name).unwrap();
    let flag = Flag::new();
    let mut child = hold(&flag, || {
        std::mem::forget(rlock.lock().unwrap());
        std::mem::forget(rlock.lock().unwrap());
    });
    let pid = child.pid();
    let l = lock_of(inspect(&name).unwrap().contents);
    assert_eq!(l.owner.map(|o| (o.pid, o.liveness)), Some((pid, Liveness::Alive)));
    // The child's only thread: its tid is its pid.
    assert_eq!((l.owner_tid, l.depth), (Some(pid), Some(2)));
    let t = text(&name);
    assert!(t.contains("\nrlock\n") && t.contains("depth:            2"), "{t}");
    inspect_changes_nothing(&name);
    child.kill().unwrap();
    let l = lock_of(inspect(&name).unwrap().contents);
    assert_eq!(l.owner.map(|o| o.liveness), Some(Liveness::Dead));
    assert!(rlock.lock().is_err(), "the dead owner's RLock is recovered with OwnerDied");

    let cname = unique_name("cond");
    let cond: Condition = Condition::create(&cname).unwrap();
    // SAFETY: the child waits on the condition and exits.
    let mut waiter = unsafe {
        fork(|| {
            let g = cond.lock().unwrap();
            let (_g, timed_out) = cond.wait_timeout(g, Duration::from_secs(30)).unwrap();
            i32::from(timed_out)
        })
    }
    .unwrap();
    wait_for("the waiter to park", 30, || {
        matches!(inspect(&cname).unwrap().contents, Contents::Condition { waiters: 1, .. })
    });
    match inspect(&cname).unwrap().contents {
        Contents::Condition { lock, waiters } => {
            assert_eq!(waiters, 1);
            assert!(lock.owner.is_none(), "a waiter releases the lock");
            assert_eq!(lock.depth, None, "over a Lock");
        }
        other => panic!("expected a condition, got {other:?}"),
    }
    let t = text(&cname);
    assert!(t.contains("condition (over a Lock)") && t.contains("1 parked in wait()"), "{t}");
    {
        let _g = cond.lock().unwrap();
        cond.notify_all();
    }
    expect_exit(&mut waiter, "condition waiter");
    let rname = unique_name("rcond");
    let rc: Condition<RLock> = Condition::create(&rname).unwrap();
    {
        let _g = rc.lock().unwrap();
        let r = inspect(&rname).unwrap();
        let Contents::Condition { lock, .. } = &r.contents else { panic!("a condition: {r:?}") };
        assert_eq!((lock.owner.map(|o| o.pid), lock.depth), (Some(me()), Some(1)));
        assert!(r.to_string().contains("condition (over an RLock)"), "{r}");
    }
    drop((rlock, cond, rc));
    for n in [&name, &cname, &rname] {
        assert_gone(n);
    }
}

// ---------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------

/// Where slot `idx`'s stamp sits in a ring of `u64` at payload offset 0: the control block
/// rounded up to 128 bytes, then 16-byte slots (an 8-byte stamp, then the payload).
fn stamp_at(idx: usize) -> Offset<AtomicU64> {
    Offset::new(std::mem::size_of::<RingCtl>().next_multiple_of(128) + idx * 16)
}

#[test]
fn queue_shows_capacity_depth_and_holders_and_inspecting_registers_nothing() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("queue");
    let (tx, rx) = Queue::<u64>::create(&name, 8).unwrap().split();
    for i in 0..5 {
        tx.send(i).unwrap();
    }
    let r = ring_of(inspect(&name).unwrap().contents);
    assert_eq!((r.capacity, r.slots, r.slot_bytes, r.depth, r.closed), (8, 8, 8, 5, false));
    assert_eq!((r.head, r.tail), (0, 5));
    assert_eq!(members(&r), BTreeSet::from([(me(), true, true)]));
    assert!(r.members.iter().all(|m| m.holder.liveness == Liveness::Alive));
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let t = text(&name);
    assert!(t.contains("queue (multi-producer ring)"), "{t}");
    assert!(t.contains("capacity:         8 messages of 8 bytes (8 slots)"), "{t}");
    assert!(t.contains("depth:            5 of 8 (head 0, tail 5)"), "{t}");
    assert!(t.contains(&format!("pid {} (alive): sender, receiver", me())), "{t}");
    inspect_changes_nothing(&name);
    for i in 0..5 {
        assert_eq!(rx.recv(), Ok(i));
    }

    // Another program receives (opened by name: a forked child would inherit this process's
    // sender role); this process only sends. The receiver parks in `recv` meanwhile.
    drop(rx);
    let mut receiver = role_command("role_entry", "recv-42-then-eof", std::slice::from_ref(&name))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = receiver.id();
    wait_for("the receiver to park in recv", 30, || {
        let r = ring_of(inspect(&name).unwrap().contents);
        r.receivers_waiting >= 1 && members(&r).contains(&(pid, false, true))
    });
    let before = members(&ring_of(inspect(&name).unwrap().contents));
    assert_eq!(before, BTreeSet::from([(me(), true, false), (pid, false, true)]));
    for _ in 0..20 {
        inspect(&name).unwrap();
    }
    for _ in 0..3 {
        assert!(shmkit(&["inspect", &name]).status.success());
    }
    let after = ring_of(inspect(&name).unwrap().contents);
    assert_eq!(members(&after), before, "inspecting added or changed a member record");
    assert!(!after.members_overflow);
    assert_eq!(after.depth, 0);
    assert!(receiver.try_wait().unwrap().is_none(), "the blocked receiver was disturbed");
    tx.send(42).unwrap();
    drop(tx); // the last sender anywhere: the receiver must now see Disconnected
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = receiver.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the receiver did not finish");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "receiver: {status:?}");
    assert_gone_after_drop(&name);
}

/// Every handle was dropped: the creator's segment is gone.
fn assert_gone_after_drop(name: &str) {
    assert_gone(name);
}

#[test]
fn producer_killed_between_claim_and_publish_shows_a_dead_writer_then_an_abandoned_slot() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("abandon");
    let q = Queue::<u64>::create(&name, 4).unwrap();
    q.send(10).unwrap(); // position 0
    let flag = Flag::new();
    // A producer claims position 1 exactly as `send` does (its pid in a WRITING stamp, then
    // `tail` moved past it) and is SIGKILLed before it publishes.
    let seg = q.segment().clone();
    let mut producer = hold(&flag, || {
        let pid = std::process::id();
        let stamp = seg.get(stamp_at(1)).unwrap();
        let ctl: &RingCtl = seg.get(Offset::new(0)).unwrap();
        stamp
            .compare_exchange(
                mpmc::encode(1, mpmc::EMPTY, 0),
                mpmc::encode(1, mpmc::WRITING, pid),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .unwrap();
        ctl.tail.compare_exchange(1, 2, Ordering::AcqRel, Ordering::Relaxed).unwrap();
    });
    let pid = producer.pid();

    let r = ring_of(inspect(&name).unwrap().contents);
    let claims = r.claims.clone().unwrap();
    assert_eq!((claims.writing, claims.reading), (1, 0));
    assert_eq!((claims.listed[0].position, claims.listed[0].writing), (1, true));
    // Alive, or Unknown: the child never used the queue, so its member record (made by the
    // fork handler) has no start time yet.
    assert_eq!(claims.listed[0].holder.pid, pid);
    assert_ne!(claims.listed[0].holder.liveness, Liveness::Dead);
    assert_eq!((r.depth, r.stats.abandoned), (2, 0));
    inspect_changes_nothing(&name);

    producer.kill().unwrap();
    let r = ring_of(inspect(&name).unwrap().contents);
    assert_eq!(r.claims.as_ref().unwrap().listed[0].holder.liveness, Liveness::Dead);
    let t = text(&name);
    assert!(t.contains("in flight:        1 being written, 0 being read (4 slots scanned)"), "{t}");
    assert!(
        t.contains(&format!("position 1 written by pid {pid} (dead): a consumer skips it (abandoned)")),
        "{t}"
    );
    inspect_changes_nothing(&name);

    // A consumer skips the dead producer's slot; the count appears in the report.
    q.send(12).unwrap();
    assert_eq!(q.recv_timeout(Duration::from_secs(10)), Ok(10));
    assert_eq!(q.recv_timeout(Duration::from_secs(10)), Ok(12));
    let r = ring_of(inspect(&name).unwrap().contents);
    assert_eq!((r.stats.abandoned, r.stats.lost, r.depth), (1, 0, 0));
    assert_eq!(r.claims.unwrap().writing, 0);
    let t = text(&name);
    assert!(t.contains("abandoned slots:  1 (skipped: their producer died mid-send)"), "{t}");
    drop((q, seg));
    assert_gone(&name);
}

#[test]
fn joinable_queue_shows_unfinished_tasks_and_spsc_its_ends() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("joinable");
    let q = JoinableQueue::<u32>::create(&name, 8).unwrap();
    for i in 0..3 {
        q.put(i).unwrap();
    }
    // SAFETY: the child takes two tasks, marks them done and exits.
    let mut worker = unsafe {
        fork(|| {
            for _ in 0..2 {
                if q.get().is_err() || q.task_done().is_err() {
                    return 1;
                }
            }
            0
        })
    }
    .unwrap();
    expect_exit(&mut worker, "worker");
    let r = ring_of(inspect(&name).unwrap().contents);
    assert_eq!((r.unfinished, r.depth, r.joiners_waiting), (Some(1), 1, Some(0)));
    let t = text(&name);
    assert!(t.contains("joinable queue (multi-producer ring)"), "{t}");
    assert!(t.contains("unfinished tasks: 1 (put and not yet task_done)"), "{t}");
    let dead = worker.pid();
    assert!(r.members.iter().all(|m| m.holder.pid != dead || m.holder.liveness == Liveness::Dead));

    let sname = unique_name("spsc");
    let (tx, rx) = SpscQueue::<u16>::create(&sname, 3).unwrap().split();
    let r = ring_of(inspect(&sname).unwrap().contents);
    assert!(r.spsc && r.members.is_empty() && r.claims.is_none());
    assert_eq!(r.ends, Some([SpscEnd::Unclaimed, SpscEnd::Unclaimed]));
    assert_eq!((r.capacity, r.slot_bytes), (3, 2));
    // SAFETY: the child sends two values through the end it claims, and exits.
    let mut producer = unsafe { fork(|| i32::from(tx.send(1).is_err() || tx.send(2).is_err())) }.unwrap();
    expect_exit(&mut producer, "spsc producer");
    let r = ring_of(inspect(&sname).unwrap().contents);
    assert_eq!(r.depth, 2);
    match r.ends {
        Some([SpscEnd::Held(h), SpscEnd::Unclaimed]) => {
            assert_eq!((h.pid, h.liveness), (producer.pid(), Liveness::Dead))
        }
        other => panic!("expected a dead sender and an unclaimed receiver, got {other:?}"),
    }
    assert_eq!(rx.recv(), Ok(1));
    let t = text(&sname);
    assert!(t.contains("spsc queue (single producer and consumer)"), "{t}");
    assert!(t.contains(&format!("receiver end:     pid {} (alive)", me())), "{t}");
    assert!(t.contains("depth:            1 of 3"), "{t}");
    inspect_changes_nothing(&sname);
    drop((q, tx, rx));
    assert_gone(&name);
    assert_gone(&sname);
}

// ---------------------------------------------------------------------------------------------
// Semaphores, events, barriers
// ---------------------------------------------------------------------------------------------

#[test]
fn semaphore_event_and_barrier() {
    let _s = serial();
    let _w = watchdog(60);
    let sname = unique_name("sem");
    let sem = Semaphore::create(&sname, 3).unwrap();
    // SAFETY: the child takes a permit and exits with it (a dead process's permits are lost).
    let mut taker = unsafe { fork(|| i32::from(!sem.try_acquire())) }.unwrap();
    expect_exit(&mut taker, "taker");
    assert_eq!(inspect(&sname).unwrap().contents, Contents::Semaphore { value: 2, bound: None, waiters: 0 });
    let t = text(&sname);
    assert!(t.contains("\nsemaphore\n") && t.contains("value:            2"), "{t}");
    inspect_changes_nothing(&sname);
    let bname = unique_name("bsem");
    let bsem = BoundedSemaphore::create(&bname, 2).unwrap();
    bsem.acquire();
    assert_eq!(
        inspect(&bname).unwrap().contents,
        Contents::Semaphore { value: 1, bound: Some(2), waiters: 0 }
    );
    assert!(text(&bname).contains("bounded semaphore"));

    let ename = unique_name("event");
    let ev = Event::create(&ename).unwrap();
    assert_eq!(inspect(&ename).unwrap().contents, Contents::Event { set: false, waiters: 0 });
    // SAFETY: the child sets the event and exits.
    let mut setter = unsafe {
        fork(|| {
            ev.set();
            0
        })
    }
    .unwrap();
    expect_exit(&mut setter, "setter");
    assert_eq!(inspect(&ename).unwrap().contents, Contents::Event { set: true, waiters: 0 });
    assert!(text(&ename).contains("set:              yes"));

    let name = unique_name("barrier");
    let b = Barrier::create(&name, 3).unwrap();
    let waiter = || {
        // SAFETY: the child waits at the barrier and exits.
        unsafe { fork(|| i32::from(b.wait_timeout(Duration::from_secs(30)).is_err())) }.unwrap()
    };
    let mut kids = [waiter(), waiter()];
    let barrier_of = || match inspect(&name).unwrap().contents {
        Contents::Barrier(v) => v,
        other => panic!("expected a barrier, got {other:?}"),
    };
    // Counted first, then the slot records the pid: wait for both records.
    wait_for("two recorded waiters", 30, || barrier_of().waiters.len() == 2);
    let v = barrier_of();
    assert_eq!((v.parties, v.waiting, v.generation, v.broken), (3, 2, 0, false));
    let pids: BTreeSet<u32> = v.waiters.iter().map(|h| h.pid).collect();
    assert_eq!(pids, kids.iter().map(ForkedChild::pid).collect());
    assert!(v.waiters.iter().all(|h| h.liveness == Liveness::Alive));
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let t = text(&name);
    assert!(t.contains("parties:          3") && t.contains("waiting:          2 of 3"), "{t}");
    assert!(b.wait_timeout(Duration::from_secs(30)).is_ok());
    for k in &mut kids {
        expect_exit(k, "barrier waiter");
    }
    let v = barrier_of();
    assert_eq!((v.waiting, v.generation, v.broken), (0, 1, false));
    drop((sem, bsem, ev, b));
    for n in [&sname, &bname, &ename, &name] {
        assert_gone(n);
    }
}

// ---------------------------------------------------------------------------------------------
// Values and arrays
// ---------------------------------------------------------------------------------------------

#[test]
fn values_and_arrays_show_elements_bytes_and_locks() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("value");
    let v = Value::create(&name, 0x0102_0304_0506_0708u64).unwrap();
    let cells = match inspect(&name).unwrap().contents {
        Contents::Cells(c) => c,
        other => panic!("expected cells, got {other:?}"),
    };
    assert_eq!((cells.object, cells.elem_size, cells.elem_align, cells.len), (14, 8, 8, 1));
    assert_eq!(cells.bytes, Some(0x0102_0304_0506_0708u64.to_ne_bytes().to_vec()));
    assert!(cells.lock.as_ref().is_some_and(|l| l.owner.is_none()));
    assert!(cells.problems.is_empty(), "{:?}", cells.problems);
    let t = text(&name);
    assert!(
        t.contains("value (with a lock)") && t.contains("elements:         1 of 8 bytes, align 8"),
        "{t}"
    );
    assert!(t.contains("bytes:            08 07 06 05 04 03 02 01"), "{t}");
    // A holder SIGKILLed mid-update: the lock names it, dead; the value is the old one.
    let flag = Flag::new();
    let mut holder = hold(&flag, || {
        let mut g = v.lock().unwrap();
        *g = 99;
        std::mem::forget(g);
    });
    holder.kill().unwrap();
    let t = text(&name);
    assert!(t.contains(&format!("pid {} (dead): the next lock() takes it over", holder.pid())), "{t}");
    assert!(t.contains("bytes:            08 07 06 05 04 03 02 01"), "{t}");
    inspect_changes_nothing(&name);
    assert!(v.lock().is_err(), "still OwnerDied for the next holder");

    let aname = unique_name("array");
    let _a = Array::create(&aname, &[7u32; 16]).unwrap();
    let t = text(&aname);
    assert!(
        t.contains("array (with a lock)") && t.contains("elements:         16 of 4 bytes, align 4"),
        "{t}"
    );
    assert!(!t.contains("bytes:"), "{t}");
    let rname = unique_name("rawvalue");
    let _rv = RawValue::create(&rname, -2i16).unwrap();
    match inspect(&rname).unwrap().contents {
        Contents::Cells(c) => {
            assert_eq!((c.object, c.lock, c.bytes), (16, None, Some((-2i16).to_ne_bytes().to_vec())))
        }
        other => panic!("expected cells, got {other:?}"),
    }
    let raname = unique_name("rawarray");
    let _ra = RawArray::create(&raname, &[1u8, 2, 3]).unwrap();
    let t = text(&raname);
    assert!(t.contains("raw array (no lock)") && t.contains("3 of 1 bytes") && !t.contains("lock:"), "{t}");
    drop(v);
    assert_gone(&name);
}

// ---------------------------------------------------------------------------------------------
// Pipes
// ---------------------------------------------------------------------------------------------

#[test]
fn pipe_shows_both_directions_as_queues() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("pipe");
    let first = Pipe::builder().capacity(4).max_message(32).create(&name).unwrap();
    first.send_bytes(b"ping").unwrap();
    first.send_bytes(b"pong").unwrap();
    let pipe = match inspect(&name).unwrap().contents {
        Contents::Pipe(p) => p,
        other => panic!("expected a pipe, got {other:?}"),
    };
    assert!(pipe.duplex && !pipe.peer_attached);
    assert_eq!((pipe.capacity, pipe.max_message, pipe.rings.len()), (4, 32, 2));
    let (out, back) = (pipe.rings[0].as_ref().unwrap(), pipe.rings[1].as_ref().unwrap());
    assert_eq!((out.depth, out.max_frame, back.depth), (2, Some(32), 0));
    assert_eq!(members(out), BTreeSet::from([(me(), true, false)]));
    assert_eq!(members(back), BTreeSet::from([(me(), false, true)]));
    let t = text(&name);
    assert!(t.contains("pipe (duplex)") && t.contains("second end:       not opened yet"), "{t}");
    assert!(t.contains("first end -> second end (ring at payload offset 128):"), "{t}");
    assert!(t.contains("capacity:         4 messages of up to 32 bytes (4 slots)"), "{t}");
    inspect_changes_nothing(&name);

    // The second end, in another process: it reads both messages and answers once.
    // SAFETY: the child opens the pipe by name, talks, and exits.
    let mut second = unsafe {
        fork(|| {
            let Ok(c) = Pipe::open(&name) else { return 1 };
            let ok = c.recv_bytes().is_ok_and(|m| m == b"ping") && c.send_bytes(b"back").is_ok();
            i32::from(!ok)
        })
    }
    .unwrap();
    expect_exit(&mut second, "second end");
    let pipe = match inspect(&name).unwrap().contents {
        Contents::Pipe(p) => p,
        other => panic!("expected a pipe, got {other:?}"),
    };
    assert!(pipe.peer_attached);
    let (out, back) = (pipe.rings[0].as_ref().unwrap(), pipe.rings[1].as_ref().unwrap());
    assert_eq!((out.depth, back.depth), (1, 1));
    let t = text(&name);
    assert!(t.contains("second end:       opened") && t.contains("second end -> first end"), "{t}");
    assert_eq!(first.recv_bytes().unwrap(), b"back");
    drop(first);
    assert_gone(&name);
}

// ---------------------------------------------------------------------------------------------
// The CLI, other segments, hostile files
// ---------------------------------------------------------------------------------------------

#[test]
fn cli_reports_errors_for_missing_and_invalid_names() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("missing");
    let out = shmkit(&["inspect", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("shmkit: {name}: no segment named")), "{err}");
    assert!(out.stdout.is_empty());
    assert!(matches!(inspect(&name), Err(InspectError::Open { source: ShmOpenError::DoesNotExist(_), .. })));
    let out = shmkit(&["inspect", "a/b"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid segment name"));
    assert_gone(&name);
}

/// Writes a segment file by hand (header, then `payload`), as a hostile peer could.
fn plant(name: &str, kind: Kind, payload: &[u8]) {
    let total = 128 + payload.len();
    let mut bytes = vec![0u8; total];
    bytes[..64].copy_from_slice(&Header::new(kind, Backing::Named, total as u64, false).encode());
    bytes[128..].copy_from_slice(payload);
    std::fs::write(shm_path(name), &bytes).unwrap();
}

/// Removes a planted file even if the test fails.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(shm_path(&self.0));
    }
}

#[test]
fn hostile_payloads_give_corrupted_lines_never_a_crash() {
    let _s = serial();
    let _w = watchdog(60);
    let name = unique_name("hostile");
    let _cleanup = RemoveOnDrop(name.clone());
    // A queue whose control block claims 2^40 slots in a small file.
    let mut ctl = vec![0u8; std::mem::size_of::<RingCtl>() + 256];
    ctl[0..4].copy_from_slice(&2u32.to_ne_bytes());
    ctl[4..8].copy_from_slice(&8u32.to_ne_bytes());
    ctl[8..16].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    ctl[16..24].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    plant(&name, Kind::new(9, 0), &ctl);
    let r = inspect(&name).unwrap();
    assert!(matches!(r.contents, Contents::Corrupted(_)), "{r:?}");
    let t = text(&name);
    assert!(t.contains("payload:          corrupted: "), "{t}");
    // A plausible geometry with impossible positions: reported, and the depth clamped.
    ctl[8..16].copy_from_slice(&1u64.to_ne_bytes());
    ctl[16..24].copy_from_slice(&1u64.to_ne_bytes());
    let total = std::mem::size_of::<RingCtl>().next_multiple_of(128) + 16;
    let mut payload = vec![0xffu8; total];
    payload[..ctl.len().min(total)].copy_from_slice(&ctl[..ctl.len().min(total)]);
    payload[128..136].copy_from_slice(&5u64.to_ne_bytes()); // tail
    payload[256..264].copy_from_slice(&1u64.to_ne_bytes()); // head
    std::fs::remove_file(shm_path(&name)).unwrap();
    plant(&name, Kind::new(9, 0), &payload);
    let r = ring_of(inspect(&name).unwrap().contents);
    assert_eq!(r.depth, 1);
    assert!(r.problems.contains(&"head and tail more than the capacity apart"), "{:?}", r.problems);
    assert!(text(&name).contains("corrupted:        head and tail more than the capacity apart"));
    // Kinds that are not decoded, a lock whose payload is too small, and garbage everywhere.
    for (kind, len) in [
        (Kind::RAW, 64),
        (Kind::user(3, 9), 64),
        (Kind::new(4242, 0), 64),
        (Kind::new(19, 0), 64),
        (Kind::new(3, 24), 8),
        (Kind::new(3, 99), 24),
        (Kind::new(7, 5), 64),
        (Kind::new(18, 0), 4096),
        (Kind::new(14, 7), 200),
        (Kind::new(8, 1064), 1064),
        (Kind::new(13, 0), 4096),
    ] {
        std::fs::remove_file(shm_path(&name)).unwrap();
        plant(&name, kind, &vec![0xa5; len]);
        let t = text(&name);
        assert!(t.contains("kind:"), "{t}");
    }
    // Not a segment at all.
    std::fs::write(shm_path(&name), b"hello").unwrap();
    let out = shmkit(&["inspect", &name]);
    assert!(!out.status.success());
    assert!(matches!(inspect(&name), Err(InspectError::Open { source: ShmOpenError::TooSmall { .. }, .. })));
    std::fs::remove_file(shm_path(&name)).unwrap();
    assert_gone(&name);
}

#[test]
fn anonymous_and_memfd_segments_are_inspected_through_their_mapping() {
    let _s = serial();
    let _w = watchdog(60);
    let lock = Lock::new().unwrap();
    let _g = lock.lock().unwrap();
    let r = inspect_segment(lock.segment()).unwrap();
    assert!(r.name.is_none());
    assert_eq!(lock_of(r.contents.clone()).owner.map(|o| o.pid), Some(me()));
    assert!(r.to_string().starts_with("name:           none (Anonymous segment)\n"), "{r}");
    let seg = Segment::memfd(Kind::user(1, 2), 64).unwrap();
    let r = inspect_segment(&seg).unwrap();
    assert!(
        r.to_string().contains("none (Memfd segment)") && r.to_string().contains("an embedder's own kind")
    );
    let (a, _b) = Pipe::new().unwrap();
    a.send_bytes(b"x").unwrap();
    let r = inspect_segment(a.segment()).unwrap();
    let Contents::Pipe(p) = r.contents else { panic!("a pipe") };
    assert!(p.peer_attached, "anonymous pipes are attached at once");
    assert_eq!(p.rings[0].as_ref().map(|r| r.depth), Ok(1));
}
