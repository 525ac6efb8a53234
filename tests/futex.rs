//! The futex and the adaptive WaitCell across real processes: wake-ups between a parent and
//! a forked or exec'd process, deadlines that expire, and recovery from a lost notify.

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{role, role_command, run_with_timeout, unique_name, watchdog};
use shmkit::futex::{self, WaitCell, WaitOutcome, WaitStrategy};
use shmkit::shm::{Kind, Layout, Offset, Segment};
use shmkit::util::child::fork;

struct Slots {
    layout: Layout,
    word: Offset<AtomicU32>,
    data: Offset<AtomicU64>,
    cell: Offset<WaitCell>,
}

fn slots() -> Slots {
    let mut layout = Layout::new();
    let word = layout.push();
    let data = layout.push();
    let cell = layout.push();
    Slots { layout, word, data, cell }
}

/// Waits (bounded) until `cell` reports a parked waiter, so the wake that follows really
/// crosses a sleeping process rather than racing its spin phase.
fn until_parked(cell: &WaitCell) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while cell.sleepers() == 0 {
        assert!(Instant::now() < deadline, "waiter never parked");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let s = slots();
    let code = match role.as_str() {
        // Open by name and park until the parent publishes data.
        "cell-wait" => {
            let seg = Segment::open(&args[0], Kind::RAW).expect("open");
            let data = seg.get(s.data).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let got = seg.get(s.cell).unwrap().wait_with(
                WaitStrategy::SLEEP,
                || match data.load(Ordering::Acquire) {
                    0 => None,
                    v => Some(v),
                },
                Some(deadline),
            );
            if got == Ok(1234) {
                0
            } else {
                3
            }
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

#[test]
fn raw_futex_wakes_a_forked_process() {
    let _w = watchdog(60);
    let s = slots();
    let seg = Segment::anonymous(Kind::RAW, s.layout.size()).unwrap();
    let word = seg.get(s.word).unwrap();
    let parked = seg.get(s.cell).unwrap(); // used only as a "child is about to wait" flag
                                           // SAFETY: the child uses atomics and futex syscalls only.
    let mut child = unsafe {
        fork(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            parked.notify_all(); // harmless; keeps the cell's words in use
            while word.load(Ordering::Acquire) == 0 {
                if futex::wait(word, 0, Some(deadline)) == WaitOutcome::TimedOut {
                    return 3;
                }
            }
            0
        })
    }
    .unwrap();
    // Give the child time to block; a wake before it blocks is caught by the value check.
    std::thread::sleep(Duration::from_millis(50));
    word.store(1, Ordering::Release);
    futex::wake(word, 1);
    let st = child.wait_timeout(Duration::from_secs(40)).unwrap().expect("child finished");
    assert_eq!(st.code(), Some(0), "child timed out instead of being woken");
}

#[test]
fn waitcell_wakes_a_parked_forked_process() {
    let _w = watchdog(60);
    let s = slots();
    let seg = Segment::anonymous(Kind::RAW, s.layout.size()).unwrap();
    let (data, cell) = (seg.get(s.data).unwrap(), seg.get(s.cell).unwrap());
    // SAFETY: the child uses atomics and futex syscalls only.
    let mut child = unsafe {
        fork(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            let r = cell.wait_for(|| (data.load(Ordering::Acquire) == 77).then_some(()), Some(deadline));
            if r.is_ok() {
                0
            } else {
                3
            }
        })
    }
    .unwrap();
    until_parked(cell);
    data.store(77, Ordering::Release);
    cell.notify_one();
    let st = child.wait_timeout(Duration::from_secs(40)).unwrap().expect("child finished");
    assert_eq!(st.code(), Some(0));
    assert_eq!(cell.sleepers(), 0);
}

#[test]
fn waitcell_wakes_an_unrelated_process_that_opened_by_name() {
    let _w = watchdog(60);
    let name = unique_name("cellwait");
    let s = slots();
    let seg = Segment::create(&name, Kind::RAW, s.layout.size()).unwrap();
    let cell = seg.get(s.cell).unwrap();
    let handle =
        std::thread::spawn(move || run_with_timeout(role_command("role_entry", "cell-wait", &[name]), 50));
    until_parked(cell);
    seg.get(s.data).unwrap().store(1234, Ordering::Release);
    cell.notify_all();
    let st = handle.join().unwrap();
    assert_eq!(st.code(), Some(0), "exec'd waiter was not woken: {st:?}");
}

#[test]
fn notify_all_wakes_every_parked_process() {
    let _w = watchdog(60);
    let s = slots();
    let seg = Segment::anonymous(Kind::RAW, s.layout.size()).unwrap();
    let (data, cell) = (seg.get(s.data).unwrap(), seg.get(s.cell).unwrap());
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            // SAFETY: the child uses atomics and futex syscalls only.
            unsafe {
                fork(|| {
                    let deadline = Instant::now() + Duration::from_secs(30);
                    let poll = || (data.load(Ordering::Acquire) != 0).then_some(());
                    i32::from(cell.wait_with(WaitStrategy::SLEEP, poll, Some(deadline)).is_err())
                })
            }
            .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cell.sleepers() < 3 {
        assert!(Instant::now() < deadline, "only {} of 3 parked", cell.sleepers());
        std::thread::sleep(Duration::from_millis(1));
    }
    data.store(1, Ordering::Release);
    cell.notify_all();
    for c in &mut children {
        assert_eq!(c.wait_timeout(Duration::from_secs(40)).unwrap().expect("finished").code(), Some(0));
    }
}

#[test]
fn futex_wait_times_out_when_nobody_wakes() {
    let word = AtomicU32::new(5);
    for ms in [1u64, 20, 50] {
        let start = Instant::now();
        let deadline = start + Duration::from_millis(ms);
        assert_eq!(futex::wait(&word, 5, Some(deadline)), WaitOutcome::TimedOut);
        assert!(Instant::now() >= deadline, "returned before its deadline");
    }
    // A deadline already in the past times out at once.
    assert_eq!(futex::wait(&word, 5, Some(Instant::now())), WaitOutcome::TimedOut);
}

#[test]
fn futex_wait_with_stale_value_returns_mismatch() {
    let word = AtomicU32::new(5);
    assert_eq!(futex::wait(&word, 4, None), WaitOutcome::Mismatch);
    assert_eq!(futex::wake(&word, 1), 0, "nobody sleeps on it");
}

#[test]
fn waitcell_times_out_in_another_process_too() {
    let _w = watchdog(60);
    let s = slots();
    let seg = Segment::anonymous(Kind::RAW, s.layout.size()).unwrap();
    let cell = seg.get(s.cell).unwrap();
    let timeout = Duration::from_millis(30);
    // SAFETY: the child uses atomics, the clock and futex syscalls only.
    let mut child = unsafe {
        fork(|| {
            let start = Instant::now();
            match cell.wait_for(|| None::<()>, Some(start + timeout)) {
                Err(futex::TimedOut) if start.elapsed() >= timeout => 0,
                Err(_) => 4, // before the deadline
                Ok(()) => 5,
            }
        })
    }
    .unwrap();
    let st = child.wait_timeout(Duration::from_secs(40)).unwrap().expect("child finished");
    assert_eq!(st.code(), Some(0));
    assert_eq!(cell.sleepers(), 0, "a timed-out waiter left its count behind");
}

/// A notifier killed between its store and its wake (or one that never calls notify) must
/// not hang a parked waiter: `max_park` bounds each sleep and the waiter polls again.
#[test]
fn lost_notify_is_recovered_by_max_park() {
    let _w = watchdog(60);
    let s = slots();
    let seg = Segment::anonymous(Kind::RAW, s.layout.size()).unwrap();
    let (data, cell) = (seg.get(s.data).unwrap(), seg.get(s.cell).unwrap());
    let strategy = WaitStrategy { max_park: Duration::from_millis(10), ..WaitStrategy::SLEEP };
    std::thread::scope(|sc| {
        let waiter = sc.spawn(|| {
            let poll = || (data.load(Ordering::Acquire) == 9).then_some(());
            cell.wait_with(strategy, poll, Some(Instant::now() + Duration::from_secs(30)))
        });
        until_parked(cell);
        // SAFETY: the child stores, then dies by SIGKILL before it could notify.
        let mut child = unsafe {
            fork(|| {
                data.store(9, Ordering::Release);
                libc::raise(libc::SIGKILL);
                0
            })
        }
        .unwrap();
        let st = child.wait_timeout(Duration::from_secs(20)).unwrap().expect("child died");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
        assert_eq!(waiter.join().unwrap(), Ok(()), "the waiter missed the killed notifier's store");
    });
}

/// Whether the kernel offers `MEMBARRIER_CMD_GLOBAL_EXPEDITED` (bit 1 of the query).
fn kernel_has_global_expedited() -> bool {
    // SAFETY: MEMBARRIER_CMD_QUERY (0) only returns a bit mask.
    let mask = unsafe { libc::syscall(libc::SYS_membarrier, 0, 0, 0) };
    mask > 0 && mask & (1 << 1) != 0
}

#[test]
fn asymmetric_fence_is_on_once_a_segment_is_mapped() {
    let _seg = Segment::anonymous(Kind::RAW, 64).unwrap();
    assert_eq!(futex::asymmetric_fence(), kernel_has_global_expedited());
}

/// Ping-pong where both sides always park (no spinning) and may park for a minute: a wake-up
/// lost between the notifier's light fence and the waiter's membarrier would stall a round
/// for the whole minute and trip the deadline below, instead of being hidden by the usual
/// 100 ms re-check.
#[test]
fn asymmetric_fence_loses_no_wake_up_across_processes() {
    let _w = watchdog(120);
    let _seg = Segment::anonymous(Kind::RAW, 64).unwrap();
    let patient = WaitStrategy { spins: 0, yields: 0, park: true, max_park: Duration::from_secs(60) };
    let mut layout = Layout::new();
    let ping: Offset<AtomicU64> = layout.push();
    let pong: Offset<AtomicU64> = layout.push();
    let ping_cell: Offset<WaitCell> = layout.push();
    let pong_cell: Offset<WaitCell> = layout.push();
    let seg = Segment::anonymous(Kind::RAW, layout.size()).unwrap();
    let (ping, pong) = (seg.get(ping).unwrap(), seg.get(pong).unwrap());
    let (ping_cell, pong_cell) = (seg.get(ping_cell).unwrap(), seg.get(pong_cell).unwrap());
    const ROUNDS: u64 = 5_000;
    // SAFETY: the child uses atomics and futex syscalls only.
    let mut child = unsafe {
        fork(|| {
            for i in 1..=ROUNDS {
                let got =
                    ping_cell.wait_with(patient, || (ping.load(Ordering::Acquire) >= i).then_some(()), None);
                if got.is_err() {
                    return 3;
                }
                pong.store(i, Ordering::Release);
                pong_cell.notify_one();
            }
            0
        })
    }
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(50);
    for i in 1..=ROUNDS {
        ping.store(i, Ordering::Release);
        ping_cell.notify_one();
        let r = pong_cell.wait_with(
            patient,
            || (pong.load(Ordering::Acquire) >= i).then_some(()),
            Some(deadline),
        );
        assert!(r.is_ok(), "round {i}: a wake-up was lost (the child never answered)");
    }
    let st = child.wait_timeout(Duration::from_secs(30)).unwrap().expect("child finished");
    assert_eq!(st.code(), Some(0));
}
