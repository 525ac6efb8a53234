//! `Value`, `RawValue`, `Array` and `RawArray` across real processes: Python's docs example,
//! exact counters under contention, bounds, holders killed with SIGKILL, names shared with an
//! unrelated process, hostile headers, placement in a caller's segment, untorn large values,
//! and the lock-free integer operations against a plain-integer model.
//!
//! Forked children do simple work and report failure through their exit code (no panics, no
//! printing: under `cargo test` another thread may hold stderr's lock at the fork).

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use common::{role, role_command, run_with_timeout, shm_path, unique_name, watchdog};
use proptest::prelude::*;
use shmkit::shm::{Kind, Offset, Segment, ShmCreateError, ShmOpenError, SliceOffset};
use shmkit::util::child::{fork, ForkedChild};
use shmkit::value::cells::{check_header, CellsFields};
use shmkit::value::{Array, ArrayGuard, OutOfRange, RawArray, RawValue, Value, ValueError, ValueGuard};

const INCREMENTS: u64 = 20_000;

/// A 32-byte element: four words, which a `Value` reads under its lock (a `RawValue` word by word).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct Quad(u64, u64, u64, u64);

impl Quad {
    fn splat(v: u64) -> Self {
        Quad(v, v, v, v)
    }
    /// `Some(v)` if every field is `v` (not torn).
    fn whole(self) -> Option<u64> {
        (self.0 == self.1 && self.1 == self.2 && self.2 == self.3).then_some(self.0)
    }
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn expect_exit(child: &mut ForkedChild, what: &str) {
    let st = child
        .wait_timeout(Duration::from_secs(60))
        .unwrap()
        .unwrap_or_else(|| panic!("{what} did not finish within 60 s"));
    assert_eq!(st.code(), Some(0), "{what} failed: {st:?}");
}

/// Forks `n` children running `f(i)`; each must exit 0.
fn run_children(n: usize, f: impl Fn(usize) -> i32 + Sync) {
    // SAFETY: the children only use shmkit values (atomics, futexes, /proc reads) and exit.
    let mut kids: Vec<ForkedChild> = (0..n).map(|i| unsafe { fork(|| f(i)) }.unwrap()).collect();
    for (i, k) in kids.iter_mut().enumerate() {
        expect_exit(k, &format!("child {i}"));
    }
}

/// A child that runs `take` (which takes a lock and changes the protected data), raises a
/// flag, and sleeps until killed; returned once the flag is up.
fn holder(take: impl FnOnce()) -> ForkedChild {
    let flag = RawValue::new(0u8).unwrap();
    // SAFETY: the child takes a lock, flags it, and sleeps.
    let child = unsafe {
        fork(|| {
            take();
            flag.set(1);
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    }
    .unwrap();
    until("the holder to lock", || flag.get() == 1);
    child
}

#[test]
fn smoke_python_docs_example() {
    let _w = watchdog(60);
    let num = Value::new(0.0f64).unwrap();
    let arr = Array::from_items(0..10i32).unwrap();
    // SAFETY: the child sets shared values and exits.
    let mut child = unsafe {
        fork(|| {
            num.set(std::f64::consts::PI);
            let Ok(mut g) = arr.lock() else { return 2 };
            for x in g.iter_mut() {
                *x = -*x;
            }
            0
        })
    }
    .unwrap();
    expect_exit(&mut child, "child");
    assert_eq!(format!("{:.5}", num.get()), "3.14159");
    assert_eq!(num.get(), std::f64::consts::PI);
    assert_eq!(arr.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]);
    assert!(!arr.get_lock().is_locked() && !num.get_lock().is_locked());
}

#[test]
fn counter_exact_under_the_guard_with_2_3_4_processes() {
    let _w = watchdog(180);
    for n in 2..=4u64 {
        let v = Value::new(0u64).unwrap();
        run_children(n as usize, |_| {
            for _ in 0..INCREMENTS {
                let Ok(mut g) = v.lock() else { return 2 };
                *g += 1;
            }
            0
        });
        assert_eq!(v.get(), n * INCREMENTS, "{n} processes");
        assert!(!v.get_lock().is_locked());
    }
}

#[test]
fn counter_exact_with_fetch_add_and_cas_loops() {
    let _w = watchdog(180);
    for n in 2..=4u64 {
        let v = Value::new(0u64).unwrap();
        let raw = RawValue::new(0u32).unwrap();
        run_children(n as usize, |_| {
            let mut last = None;
            for _ in 0..INCREMENTS {
                // The counter only grows, so one process's results strictly increase.
                let prev = v.fetch_add(1);
                if last.is_some_and(|l| prev <= l) {
                    return 3;
                }
                last = Some(prev);
                let mut cur = raw.get();
                while let Err(actual) = raw.compare_exchange(cur, cur + 1) {
                    cur = actual;
                }
            }
            0
        });
        assert_eq!(v.get(), n * INCREMENTS, "fetch_add, {n} processes");
        assert_eq!(u64::from(raw.get()), n * INCREMENTS, "CAS loop, {n} processes");
    }
}

#[test]
fn array_of_counters_exact_under_the_guard() {
    let _w = watchdog(120);
    let a = Array::<u64>::zeroed(8).unwrap();
    run_children(3, |i| {
        for k in 0..INCREMENTS {
            let Ok(mut g) = a.lock() else { return 2 };
            for x in g.iter_mut() {
                *x += 1;
            }
            g[(k as usize + i) % 8] += 1;
        }
        0
    });
    // Every element: one per iteration of each child, plus every eighth iteration's extra.
    assert_eq!(a.to_vec(), [3 * INCREMENTS + 3 * INCREMENTS / 8; 8]);
}

#[test]
fn out_of_range_is_an_error_and_writes_nothing() {
    let init: Vec<i32> = (0..5).collect();
    let a = Array::from_slice(&init).unwrap();
    let r = RawArray::from_slice(&init).unwrap();
    for i in [5, 6, usize::MAX] {
        assert_eq!(a.get(i), None);
        assert_eq!(r.get(i), None);
        assert_eq!(a.set(i, 99), Err(OutOfRange { index: i, len: 5 }));
        assert_eq!(r.set(i, 99), Err(OutOfRange { index: i, len: 5 }));
    }
    assert_eq!(a.copy_from_slice(&[1, 2, 3]), Err(OutOfRange { index: 3, len: 5 }));
    assert_eq!(a.copy_from_slice(&[7; 6]), Err(OutOfRange { index: 6, len: 5 }));
    assert_eq!(a.to_vec(), init);
    assert_eq!(r.to_vec(), init);
    assert_eq!(a.get(4), Some(4));
    assert_eq!(OutOfRange { index: 5, len: 5 }.to_string(), "index 5 out of range for an array of 5");

    let e = Array::<u64>::zeroed(0).unwrap();
    assert!(e.is_empty() && e.get(0).is_none() && e.to_vec().is_empty());
    assert_eq!(e.set(0, 1), Err(OutOfRange { index: 0, len: 0 }));
    assert_eq!(e.copy_from_slice(&[]), Ok(()));
    assert!(e.lock().unwrap().is_empty());

    // In a caller's segment, the bytes after each array's last element stay zero.
    let n = Array::<u16>::size_for(3).unwrap();
    let seg = Arc::new(Segment::anonymous(Kind::RAW, 256 + n + 256).unwrap());
    let a = Array::create_at(seg.clone(), 0, &[1u16, 2, 3]).unwrap();
    let r = RawArray::create_at(seg.clone(), 256, &[4u16, 5, 6]).unwrap();
    for i in (3..200).chain([usize::MAX]) {
        assert!(a.set(i, 0xffff).is_err() && r.set(i, 0xffff).is_err());
    }
    for (at, len) in [(n, 256 - n), (256 + n, 256)] {
        let bytes = seg.get_slice(SliceOffset::<AtomicU8>::new(at, len)).unwrap();
        assert!(bytes.iter().all(|b| b.load(Ordering::Relaxed) == 0), "bytes from {at}");
    }
    assert_eq!((a.to_vec(), r.to_vec()), (vec![1, 2, 3], vec![4, 5, 6]));
}

#[test]
fn value_holder_killed_leaves_the_old_value() {
    let _w = watchdog(120);
    let v = Value::new(5u64).unwrap();
    let child = holder(|| {
        let mut g = v.lock().unwrap_or_else(|d| d.into_inner());
        *g = 999;
        std::mem::forget(g);
    });
    // A waiter parked before the kill is told too, with the old value.
    std::thread::scope(|s| {
        let h = s.spawn(|| match v.lock_timeout(Duration::from_secs(30)) {
            Err(shmkit::sync::LockTimeoutError::OwnerDied(g)) => Some(*g),
            _ => None,
        });
        until("the waiter to park", || v.get_lock().raw().has_waiters());
        assert_eq!(v.get(), 5, "the holder's copy is not visible");
        let mut child = child;
        child.kill().unwrap();
        assert_eq!(h.join().unwrap(), Some(5));
    });
    // Never marked consistent: the next locker is told as well.
    let g = v.lock().expect_err("still inconsistent").into_inner();
    assert_eq!(*g, 5);
    ValueGuard::mark_consistent(&g);
    drop(g);
    let mut g = v.lock().expect("consistent again");
    *g += 1;
    drop(g);
    assert_eq!(v.get(), 6);

    // A multi-word value: `get` locks, and must pass the dead holder instead of hanging.
    let q = Value::new(Quad::splat(1)).unwrap();
    let mut child = holder(|| {
        let mut g = q.lock().unwrap_or_else(|d| d.into_inner());
        *g = Quad::splat(999);
        std::mem::forget(g);
    });
    child.kill().unwrap();
    assert_eq!(q.get(), Quad::splat(1));
    assert!(q.lock().is_err(), "get() repairs nothing: still inconsistent");
    q.set(Quad::splat(2)); // proceeds past the dead holder, and replacing the whole value repairs it
    assert_eq!(*q.lock().expect("consistent again after set"), Quad::splat(2));
}

#[test]
fn array_holder_killed_gives_owner_died() {
    let _w = watchdog(60);
    let a = Array::from_slice(&[0u32, 1, 2, 3]).unwrap();
    let mut child = holder(|| {
        let mut g = a.lock().unwrap_or_else(|d| d.into_inner());
        g[0] = 100;
        g[1] = 101;
        std::mem::forget(g);
    });
    child.kill().unwrap();
    // Written in place: the dead holder's partial update is there (as documented).
    assert_eq!(a.to_vec(), [100, 101, 2, 3]);
    assert_eq!(a.get(1), Some(101));
    let mut g = a.lock().expect_err("the holder died").into_inner();
    g[2] = 102;
    g[3] = 103;
    ArrayGuard::mark_consistent(&g);
    drop(g);
    assert_eq!(*a.lock().expect("consistent again"), [100, 101, 102, 103]);
}

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let code = match role.as_str() {
        "value-increment" => {
            let v = Value::<u64>::open(&args[0]).expect("open value");
            // Only under the guard: a guard's write-back would replace a concurrent fetch_add.
            for _ in 0..INCREMENTS {
                *v.lock().expect("nobody dies") += 1;
            }
            0
        }
        "array-negate" => {
            let a = Array::<i32>::open(&args[0]).expect("open array");
            assert_eq!(a.len(), 10);
            for x in a.lock().expect("nobody dies").iter_mut() {
                *x = -*x;
            }
            a.set(9, 77).unwrap();
            let r = RawArray::<Quad>::open(&args[1]).expect("open raw array");
            r.set(1, Quad::splat(r.get(0).unwrap().0 + 1)).unwrap();
            0
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

#[test]
fn by_name_shared_with_an_unrelated_process() {
    let _w = watchdog(120);
    let (vname, aname, rname) = (unique_name("val"), unique_name("arr"), unique_name("raw"));
    let v = Value::create(&vname, 0u64).unwrap();
    let a = Array::create(&aname, &(0..10).collect::<Vec<i32>>()).unwrap();
    let r = RawArray::create(&rname, &[Quad::splat(41), Quad::zeroed()]).unwrap();
    let cmd = role_command("role_entry", "value-increment", std::slice::from_ref(&vname));
    let other = std::thread::spawn(move || run_with_timeout(cmd, 100));
    for _ in 0..INCREMENTS {
        *v.lock().unwrap() += 1;
    }
    assert_eq!(other.join().unwrap().code(), Some(0));
    assert_eq!(v.get(), 2 * INCREMENTS);
    let st =
        run_with_timeout(role_command("role_entry", "array-negate", &[aname.clone(), rname.clone()]), 60);
    assert_eq!(st.code(), Some(0));
    assert_eq!(a.to_vec(), [0, -1, -2, -3, -4, -5, -6, -7, -8, 77]);
    assert_eq!(r.to_vec(), [Quad::splat(41), Quad::splat(42)]);

    // Another element type, another object, or no object under the name is refused.
    let wrong_kind =
        |r: Result<(), ValueError>| matches!(r, Err(ValueError::Open(ShmOpenError::WrongKind { .. })));
    assert!(wrong_kind(Value::<u32>::open(&vname).map(drop)));
    assert!(wrong_kind(Value::<i64>::open(&vname).map(drop)), "same size, another type");
    assert!(wrong_kind(RawValue::<u64>::open(&vname).map(drop)));
    assert!(wrong_kind(Array::<u64>::open(&vname).map(drop)));
    assert!(wrong_kind(Array::<u32>::open(&aname).map(drop)), "same size, another type");
    assert!(wrong_kind(RawArray::<i32>::open(&aname).map(drop)));
    assert!(wrong_kind(Value::<i32>::open(&aname).map(drop)));
    assert!(wrong_kind(RawArray::<[u64; 4]>::open(&rname).map(drop)), "same layout, another type");
    let missing = unique_name("missing");
    assert!(matches!(Value::<u64>::open(&missing), Err(ValueError::Open(ShmOpenError::DoesNotExist(_)))));
    assert!(matches!(Array::<u64>::open(&missing), Err(ValueError::Open(ShmOpenError::DoesNotExist(_)))));
    assert!(matches!(Value::create(&vname, 1u64), Err(ValueError::Create(ShmCreateError::AlreadyExists(_)))));
    assert_eq!(Value::<u64>::open(&vname).unwrap().get(), 2 * INCREMENTS);

    drop((v, a, r));
    for n in [&vname, &aname, &rname] {
        assert!(!std::path::Path::new(&shm_path(n)).exists(), "{n} left behind");
    }
}

/// Writes `v` at payload offset `at` of the named segment's file.
fn poke(name: &str, at: u64, v: u64) {
    let f = OpenOptions::new().write(true).open(shm_path(name)).unwrap();
    f.write_all_at(&v.to_ne_bytes(), 128 + at).unwrap();
}

const ELEM_SIZE: u64 = 24;
const ELEM_ALIGN: u64 = 32;
const LEN: u64 = 40;
const KIND: u64 = 48;
const TAG: u64 = 56;
/// The object kind an `Array` records in its header.
const KIND_ARRAY: u64 = 15;

#[test]
fn hostile_header_in_a_named_segment_is_refused() {
    let _w = watchdog(60);
    let name = unique_name("hostile");
    let a = Array::create(&name, &[7u32; 10]).unwrap();
    let corrupted = |what: &str| match Array::<u32>::open(&name) {
        Err(ValueError::Corrupted(_)) => {}
        other => panic!("{what}: expected Corrupted, got {other:?}"),
    };
    for (len, what) in [
        (u64::MAX, "u64::MAX"),
        (u64::MAX / 4 + 1, "len × 4 overflows"),
        (u64::MAX / 4, "len × 4 + 128 overflows"),
        (1 << 40, "huge"),
        (11, "one past the segment"),
    ] {
        poke(&name, LEN, len);
        corrupted(what);
    }
    poke(&name, LEN, 10);
    assert_eq!(Array::<u32>::open(&name).unwrap().to_vec(), [7; 10]);
    for (at, v) in [(ELEM_SIZE, 8), (ELEM_SIZE, 0), (ELEM_SIZE, u64::MAX), (ELEM_ALIGN, 8), (ELEM_ALIGN, 0)] {
        poke(&name, at, v);
        assert!(matches!(Array::<u32>::open(&name), Err(ValueError::Mismatch { .. })), "field {at} = {v}");
        poke(&name, at, 4);
    }
    poke(&name, ELEM_SIZE, 8);
    assert!(matches!(
        Array::<u32>::open(&name),
        Err(ValueError::Mismatch { found_size: 8, found_align: 4, .. })
    ));
    poke(&name, ELEM_SIZE, 4);

    // An attached process keeps the count it checked: a rewrite changes nothing for it.
    let b = Array::<u32>::open(&name).unwrap();
    for len in [1_000_000, 3, 0] {
        poke(&name, LEN, len);
        for h in [&a, &b] {
            assert_eq!(h.len(), 10);
            assert_eq!((h.get(10), h.get(9)), (None, Some(7)));
            assert_eq!(h.set(10, 1), Err(OutOfRange { index: 10, len: 10 }));
            assert_eq!(h.lock().unwrap().len(), 10);
        }
    }
    poke(&name, LEN, 1_000_000);
    corrupted("rewritten after attach");

    // A garbage lock word names no live process: the lock is recovered, not waited for.
    poke(&name, LEN, 10);
    poke(&name, 0, u64::from((1u32 << 31) | 0x3fff_fff0));
    let c = Array::<u32>::open(&name).unwrap();
    assert!(c.lock_timeout(Duration::from_secs(30)).is_err_and(|e| e.is_owner_died()));

    let vname = unique_name("hostile-val");
    let _v = Value::create(&vname, 1u64).unwrap();
    for len in [0, 2, u64::MAX] {
        poke(&vname, LEN, len);
        assert!(matches!(Value::<u64>::open(&vname), Err(ValueError::Corrupted(_))), "value len {len}");
    }
}

/// A tiny deterministic generator for garbage bytes.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

#[test]
fn garbage_in_a_callers_segment_is_refused() {
    let _w = watchdog(60);
    let room = Array::<u32>::size_for(16).unwrap();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..300 {
        let seg = Arc::new(Segment::anonymous(Kind::RAW, room).unwrap());
        for b in seg.get_slice(SliceOffset::<AtomicU8>::new(0, room)).unwrap() {
            b.store(xorshift(&mut s) as u8, Ordering::Relaxed);
        }
        let word = |at: usize| seg.get(Offset::<AtomicU64>::new(at)).unwrap();
        if round % 2 == 1 {
            // A plausible header: right sizes and a free lock, any count.
            word(0).store(0, Ordering::Relaxed);
            word(ELEM_SIZE as usize).store(4, Ordering::Relaxed);
            word(ELEM_ALIGN as usize).store(4, Ordering::Relaxed);
            word(KIND as usize).store(KIND_ARRAY, Ordering::Relaxed);
            word(TAG as usize).store(Kind::tag_of::<u32>(), Ordering::Relaxed);
            let len = if round % 4 == 1 { xorshift(&mut s) % 18 } else { xorshift(&mut s) >> (round % 64) };
            word(LEN as usize).store(len, Ordering::Relaxed);
        }
        let len = word(LEN as usize).load(Ordering::Relaxed);
        match Array::<u32>::open_at(seg.clone(), 0) {
            Ok(a) => {
                assert!(round % 2 == 1 && len <= 16 && a.len() as u64 == len, "round {round}: len {len}");
                assert_eq!(a.lock().unwrap().len(), a.len());
                assert_eq!(a.get(a.len()), None);
            }
            Err(ValueError::Mismatch { .. }) => assert_eq!(round % 2, 0),
            Err(ValueError::Corrupted(_)) => assert!(len > 16, "round {round}: len {len}"),
            Err(e) => panic!("round {round}: {e:?}"),
        }
        // The header names an array: a value of the same type is refused whatever the count.
        let v = Value::<u32>::open_at(seg.clone(), 0);
        assert!(v.is_err(), "round {round}: {v:?}");
        assert!(RawValue::<u64>::open_at(seg, 0).is_err());
    }
    // Offsets and segments that cannot hold a header or the elements.
    let seg = Arc::new(Segment::anonymous(Kind::RAW, room).unwrap());
    for at in [8, 64, 100, 256, 1 << 20, usize::MAX & !127] {
        let e = Array::<u32>::open_at(seg.clone(), at).unwrap_err();
        assert!(matches!(e, ValueError::Placement(_)), "at {at}: {e:?}");
    }
    for size in [0, 32, 100] {
        let seg = Arc::new(Segment::anonymous(Kind::RAW, size).unwrap());
        assert!(Array::<u32>::open_at(seg.clone(), 0).is_err(), "payload of {size}");
        assert!(Value::<u32>::open_at(seg, 0).is_err(), "payload of {size}");
    }
    let want = CellsFields { elem_size: 4, elem_align: 4, len: 0, kind: 15, tag: 1 };
    let found = |len| CellsFields { len, ..want };
    assert!(matches!(check_header(found(u64::MAX), want, usize::MAX), Err(ValueError::Corrupted(_))));
    assert!(matches!(check_header(found(2), want, 136), Ok(2)));
    assert!(matches!(check_header(found(3), want, 136), Err(ValueError::Corrupted(_))));
}

fn align128(n: usize) -> usize {
    (n + 127) & !127
}

#[test]
fn placed_in_a_callers_segment_and_opened_by_a_child() {
    let _w = watchdog(60);
    let (at_a, at_b) = (0, align128(Value::<u64>::size_for()));
    let at_arr = align128(at_b + Value::<f64>::size_for());
    let size = at_arr + Array::<u32>::size_for(16).unwrap();
    let seg = Arc::new(Segment::anonymous(Kind::RAW, size).unwrap());
    let a = Value::create_at(seg.clone(), at_a, 7u64).unwrap();
    let b = Value::create_at(seg.clone(), at_b, 1.5f64).unwrap();
    let arr = Array::create_at(seg.clone(), at_arr, &(0..16).collect::<Vec<u32>>()).unwrap();
    // SAFETY: the child opens the placed values in the inherited segment, changes them, exits.
    let mut child = unsafe {
        fork(|| {
            let (Ok(a), Ok(b), Ok(arr)) = (
                Value::<u64>::open_at(seg.clone(), at_a),
                Value::<f64>::open_at(seg.clone(), at_b),
                Array::<u32>::open_at(seg.clone(), at_arr),
            ) else {
                return 2;
            };
            if a.get() != 7 || b.get() != 1.5 || arr.len() != 16 || arr.get(15) != Some(15) {
                return 3;
            }
            a.fetch_add(10);
            b.set(b.get() * 2.0);
            let Ok(mut g) = arr.lock() else { return 4 };
            g.reverse();
            0
        })
    }
    .unwrap();
    expect_exit(&mut child, "child");
    assert_eq!((a.get(), b.get()), (17, 3.0));
    assert_eq!(arr.to_vec(), (0..16).rev().collect::<Vec<u32>>());
    assert_eq!(Value::<u64>::open_at(seg.clone(), at_a).unwrap().get(), 17);

    let placement = |r: Result<(), ValueError>| matches!(r, Err(ValueError::Placement(_)));
    assert!(placement(Value::create_at(seg.clone(), 64, 1u64).map(drop)), "misaligned");
    assert!(placement(Value::<u64>::open_at(seg.clone(), 8).map(drop)), "misaligned");
    assert!(placement(Array::create_at(seg.clone(), at_arr + 128, &[0u32; 16]).map(drop)), "does not fit");
    assert!(placement(RawValue::create_at(seg.clone(), align128(size), 1u8).map(drop)), "past the end");
    assert!(matches!(
        Value::<u32>::open_at(seg.clone(), at_a),
        Err(ValueError::Mismatch { found_size: 8, found_align: 8, .. })
    ));
    assert!(matches!(Array::<u32>::open_at(seg.clone(), at_b), Err(ValueError::Mismatch { .. })));
    // An array of u32 is not a value of u32, even with one element: the header names its kind.
    assert!(
        matches!(Value::<u32>::open_at(seg.clone(), at_arr), Err(ValueError::Mismatch { .. })),
        "array as value"
    );
    assert!(
        matches!(RawArray::<u32>::open_at(seg.clone(), at_arr), Err(ValueError::Mismatch { .. })),
        "locked as raw"
    );
    assert!(matches!(Value::<i64>::open_at(seg, at_a), Err(ValueError::Mismatch { .. })), "u64 as i64");
}

#[test]
fn raw_values_and_arrays_across_fork() {
    let _w = watchdog(60);
    let v = RawValue::new([0u64; 4]).unwrap();
    let a = RawArray::<[u64; 4]>::zeroed(3).unwrap();
    let b = RawArray::from_items(1..=5u8).unwrap();
    // SAFETY: the child stores into shared values and exits.
    let mut child = unsafe {
        fork(|| {
            v.set([1, 2, 3, u64::MAX]);
            for i in 0..3 {
                if a.set(i, [i as u64; 4]).is_err() {
                    return 2;
                }
            }
            let sum: u8 = (0..5).filter_map(|i| b.get(i)).sum();
            i32::from(b.set(4, sum).is_err() || b.set(5, 0).is_ok())
        })
    }
    .unwrap();
    expect_exit(&mut child, "child");
    assert_eq!(v.get(), [1, 2, 3, u64::MAX]);
    assert_eq!(a.to_vec(), [[0; 4], [1; 4], [2; 4]]);
    assert_eq!(b.to_vec(), [1, 2, 3, 4, 15]);
}

#[test]
fn locked_large_value_is_never_torn() {
    let _w = watchdog(120);
    const N: u64 = 20_000;
    let v = Value::new(Quad::splat(0)).unwrap();
    let done = RawValue::new(0u8).unwrap();
    let reader = |deadline: Instant| -> i32 {
        let mut last = 0;
        loop {
            let finished = done.get() == 1;
            let Some(x) = v.get().whole() else { return 3 };
            let Ok(g) = v.lock() else { return 2 };
            let Some(y) = g.whole() else { return 4 };
            drop(g);
            // Each read is linearizable, and the writer only counts up.
            if x < last || y < x {
                return 5;
            }
            last = y;
            if finished {
                return if last == N { 0 } else { 6 };
            }
            if Instant::now() > deadline {
                return 7;
            }
        }
    };
    // SAFETY: both children use the value and flags, then exit.
    let mut writer = unsafe {
        fork(|| {
            for i in 1..=N {
                if i % 2 == 0 {
                    v.set(Quad::splat(i));
                } else {
                    let Ok(mut g) = v.lock() else { break };
                    *g = Quad::splat(i);
                }
            }
            done.set(1);
            0
        })
    }
    .unwrap();
    // SAFETY: as above.
    let mut other = unsafe { fork(|| reader(Instant::now() + Duration::from_secs(60))) }.unwrap();
    assert_eq!(reader(Instant::now() + Duration::from_secs(60)), 0, "parent saw a torn or stale value");
    expect_exit(&mut writer, "writer");
    expect_exit(&mut other, "reader");
    assert_eq!(v.get(), Quad::splat(N));
}

#[test]
fn guard_dropped_by_a_panic_writes_nothing() {
    let v = Value::new(Quad::splat(3)).unwrap();
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            let mut g = v.lock().unwrap();
            *g = Quad::splat(999);
            panic!("mid-update (expected)");
        })
        .join()
    });
    assert!(r.is_err());
    assert_eq!(v.get(), Quad::splat(3));
    assert!(!v.get_lock().is_locked());
}

#[repr(C, align(256))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Big([u8; 256]);

#[test]
fn refused_at_creation() {
    assert!(matches!(Value::new(Big([0; 256])), Err(ValueError::Alignment(256))));
    assert!(matches!(RawArray::from_slice(&[Big([1; 256])]), Err(ValueError::Alignment(256))));
    assert!(matches!(Array::<u64>::size_for(usize::MAX), Err(ValueError::TooLarge)));
    let bad = Value::create("bad/name", 0u8);
    assert!(matches!(bad, Err(ValueError::Create(ShmCreateError::InvalidName(_)))));
}

#[test]
fn zeroed_too_large_is_an_error_not_a_panic() {
    assert!(matches!(Array::<u64>::zeroed(usize::MAX / 4), Err(ValueError::TooLarge)));
    assert!(matches!(RawArray::<u64>::zeroed(usize::MAX / 4), Err(ValueError::TooLarge)));
}

/// A proptest running `(op, x, y)` triples on a `Value<$t>`, a `RawValue<$t>` and a plain
/// `$t`, comparing every result and the value after each step.
macro_rules! integer_ops_match_a_model {
    ($name:ident, $t:ty) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]
            #[test]
            fn $name(init: $t, ops in prop::collection::vec(any::<(u8, $t, $t)>(), 0..40)) {
                let (v, r, mut m) = (Value::new(init).unwrap(), RawValue::new(init).unwrap(), init);
                for (op, x, y) in ops {
                    let cas = |c: $t| if m == c { Ok(m) } else { Err(m) };
                    let (want, next, got, got_raw): (Result<$t, $t>, $t, _, _) = match op % 10 {
                        0 => (Ok(m), m.wrapping_add(x), Ok(v.fetch_add(x)), Ok(r.fetch_add(x))),
                        1 => (Ok(m), m.wrapping_sub(x), Ok(v.fetch_sub(x)), Ok(r.fetch_sub(x))),
                        2 => (Ok(m), m & x, Ok(v.fetch_and(x)), Ok(r.fetch_and(x))),
                        3 => (Ok(m), m | x, Ok(v.fetch_or(x)), Ok(r.fetch_or(x))),
                        4 => (Ok(m), m ^ x, Ok(v.fetch_xor(x)), Ok(r.fetch_xor(x))),
                        5 => (Ok(m), m.max(x), Ok(v.fetch_max(x)), Ok(r.fetch_max(x))),
                        6 => (Ok(m), m.min(x), Ok(v.fetch_min(x)), Ok(r.fetch_min(x))),
                        7 => (Ok(m), x, Ok(v.swap(x)), Ok(r.swap(x))),
                        // The right current value, or (mostly) a wrong guess.
                        8 => (Ok(m), y, v.compare_exchange(m, y), r.compare_exchange(m, y)),
                        _ => {
                            let next = if m == x { y } else { m };
                            (cas(x), next, v.compare_exchange(x, y), r.compare_exchange(x, y))
                        }
                    };
                    prop_assert_eq!(got, want, "op {} ({:?}, {:?}) on {:?}", op % 10, x, y, m);
                    prop_assert_eq!(got_raw, want);
                    m = next;
                    prop_assert_eq!((v.get(), r.get()), (m, m));
                }
            }
        }
    };
}

integer_ops_match_a_model!(integer_ops_match_a_model_u8, u8);
integer_ops_match_a_model!(integer_ops_match_a_model_i32, i32);
integer_ops_match_a_model!(integer_ops_match_a_model_u64, u64);

#[test]
fn integer_edges() {
    let v = Value::new(i32::MAX).unwrap();
    assert_eq!((v.fetch_add(1), v.get()), (i32::MAX, i32::MIN), "wrapping");
    assert_eq!((v.fetch_sub(1), v.get()), (i32::MIN, i32::MAX));
    let u = RawValue::new(0u8).unwrap();
    assert_eq!((u.fetch_sub(1), u.get(), u.fetch_min(3), u.get()), (0, 255, 255, 3));
    assert_eq!((u.compare_exchange(4, 9), u.compare_exchange(3, 9), u.get()), (Err(3), Ok(3), 9));

    // Documented: lock-free operations are not ordered with guards, whose write-back wins.
    let v = Value::new(10u32).unwrap();
    let mut g = v.lock().unwrap();
    assert_eq!((v.fetch_add(5), v.get()), (10, 15));
    *g += 1;
    drop(g);
    assert_eq!(v.get(), 11);
}
