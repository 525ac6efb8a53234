//! `Pipe` and `Connection` across real processes: duplex traffic both ways at once across a
//! fork, messages at and near a large maximum, end-of-file after the peer closes, exits or is
//! SIGKILLed (receives drain first; sends fail), `poll` and `wait`, kept messages
//! (`BufferTooSmall`, `WrongSize`, `Decode`), simplex ends, named pipes opened by an unrelated
//! process, and `close`.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use common::{role, role_command, run_with_timeout, unique_name, watchdog};
use shmkit::pipe::{wait, Connection, ConnectionError, Pipe};
use shmkit::queue::{FrameQueue, QueueOpenError};
use shmkit::shm::{Kind, Layout, Segment, ShmOpenError, SliceOffset};
use shmkit::sync::Lock;
use shmkit::util::child::{fork, ForkedChild};

use ConnectionError::{BufferTooSmall, Closed, Disconnected, NotReadable, NotWritable, Timeout, WrongSize};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Every test here that forks holds `shared()`; the tests that need end-of-file hold
/// `exclusive()`. Under `cargo test` all tests share one process, and the rings' fork handler
/// gives a child forked by *any* thread a member record, with the parent's roles, in every
/// ring the process holds: another test's children would hold this test's ends for a while,
/// delaying the end-of-file it waits for. Under nextest each test has its process.
static GATE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(PoisonError::into_inner)
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(PoisonError::into_inner)
}

const LONG: Duration = Duration::from_secs(30);

/// Flags shared with forked children (an anonymous segment, inherited by `fork`).
struct Flags {
    seg: Arc<Segment>,
    at: SliceOffset<AtomicU64>,
}

impl Flags {
    fn new(n: usize) -> Self {
        let mut l = Layout::new();
        let at = l.push_slice::<AtomicU64>(n);
        Flags { seg: Arc::new(Segment::anonymous(Kind::RAW, l.size()).unwrap()), at }
    }
    fn get(&self) -> &[AtomicU64] {
        self.seg.get_slice(self.at).unwrap()
    }
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// In a child: waits (bounded) for `flag` to become non-zero.
fn child_wait_for(flag: &AtomicU64) -> bool {
    let deadline = Instant::now() + LONG;
    while flag.load(Ordering::Acquire) == 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// In a child: lives until killed.
fn sleep_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Forks a child running `f` and returns once the child runs. A forked child is listed as a
/// holder of the pipe's ends by a fork handler that runs *in the child*, so until it first
/// runs, a parent that closed its copy of the child's end relies on the fork-in-flight count
/// (tested on its own below); the tests about other things wait for the child.
///
/// # Safety
/// As [`fork`]: the child only does simple work (the pipe, atomics) and exits.
unsafe fn fork_started(f: impl FnOnce() -> i32) -> ForkedChild {
    let started = Flags::new(1);
    let s = started.get();
    // SAFETY: the caller's promise; before `f` the child only stores a flag.
    let child = unsafe {
        fork(move || {
            s[0].store(1, Ordering::Release);
            f()
        })
    }
    .unwrap();
    until("the child to start", || s[0].load(Ordering::Acquire) == 1);
    child
}

fn expect_exit(child: &mut ForkedChild, what: &str, secs: u64) {
    let st = child
        .wait_timeout(Duration::from_secs(secs))
        .unwrap()
        .unwrap_or_else(|| panic!("{what} did not finish within {secs} s"));
    assert_eq!(st.code(), Some(0), "{what} failed: {st:?}");
}

/// `len` bytes that differ with `salt` and with their position.
fn pattern(len: usize, salt: u64) -> Vec<u8> {
    (0..len as u64).map(|i| ((i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
}

/// Message `i` in direction `dir`: its number, then 0..28 more bytes.
fn numbered(dir: u64, i: u64) -> Vec<u8> {
    let mut m = (dir << 32 | i).to_le_bytes().to_vec();
    m.extend(pattern((i % 29) as usize, i));
    m
}

/// Receives until an error; returns what came and the error.
fn drain(c: &Connection) -> (Vec<Vec<u8>>, ConnectionError) {
    let mut got = Vec::new();
    loop {
        match c.recv_bytes_timeout(LONG) {
            Ok(m) => got.push(m),
            Err(e) => return (got, e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Role processes (unrelated processes opening pipes by name)
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let code = match role.as_str() {
        // Opens the pipe, says hello, echoes every message until "stop".
        "echo" => match Pipe::open(&args[0]) {
            Err(_) => 2,
            Ok(c) if c.max_message() != args[1].parse::<usize>().unwrap() => 3,
            Ok(c) if c.send_bytes(b"hello").is_err() => 4,
            Ok(c) => loop {
                match c.recv_bytes_timeout(LONG) {
                    Ok(m) if m == b"stop" => break 0,
                    Ok(m) if c.send_bytes(&m).is_err() => break 5,
                    Ok(_) => {}
                    Err(_) => break 6,
                }
            },
        },
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------------------------
// Traffic across fork
// ---------------------------------------------------------------------------------------------

#[test]
fn duplex_across_fork_both_directions_at_once_complete_and_in_order() {
    let _g = shared();
    let _w = watchdog(120);
    const N: u64 = 20_000;
    // A small capacity, so both sides often find the pipe full or empty.
    let (a, b) = Pipe::builder().capacity(8).build().unwrap();
    // SAFETY: the child uses its end of the pipe and exits.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            // One thread, both directions: never block on one while the other could move.
            let (mut sent, mut got) = (0, 0);
            while sent < N || got < N {
                let mut moved = false;
                if sent < N {
                    match b.send_bytes_timeout(&numbered(1, sent), Duration::ZERO) {
                        Ok(()) => (sent, moved) = (sent + 1, true),
                        Err(Timeout) => {}
                        Err(_) => return 2,
                    }
                }
                if got < N {
                    match b.recv_bytes_timeout(Duration::ZERO) {
                        Ok(m) if m == numbered(0, got) => (got, moved) = (got + 1, true),
                        Ok(_) => return 3, // out of order, lost or damaged
                        Err(Timeout) => {}
                        Err(_) => return 4,
                    }
                }
                if !moved && got < N && b.poll(Duration::from_millis(1)).is_err() {
                    return 5;
                }
                if !moved && got == N {
                    std::thread::yield_now();
                }
            }
            0
        })
    };
    b.close();
    std::thread::scope(|s| {
        let tx = s.spawn(|| (0..N).try_for_each(|i| a.send_bytes(&numbered(0, i))));
        for i in 0..N {
            let m = a.recv_bytes_timeout(LONG).unwrap();
            assert!(m == numbered(1, i), "message {i} from the child: got {m:?}");
        }
        assert_eq!(tx.join().unwrap(), Ok(()));
    });
    expect_exit(&mut child, "duplex child (2 send error, 3 wrong message, 4 recv error)", 60);
}

#[test]
fn messages_at_and_near_a_1_mib_maximum_cross_fork_and_too_large_sends_nothing() {
    let _g = shared();
    let _w = watchdog(120);
    const MAX: usize = 1 << 20;
    const SIZES: [usize; 6] = [MAX, MAX - 1, 0, 1, MAX, 4097];
    let too_large = vec![0xaa; MAX + 1];
    let refused = Err(ConnectionError::TooLarge { len: MAX + 1, max: MAX });
    let (a, b) = Pipe::builder().capacity(2).max_message(MAX).build().unwrap();
    assert_eq!((a.max_message(), b.max_message()), (MAX, MAX));
    // SAFETY: the child uses its end of the pipe and exits.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            for (i, &len) in SIZES.iter().enumerate() {
                match b.recv_bytes_timeout(LONG) {
                    Ok(m) if m == pattern(len, i as u64) => {}
                    Ok(_) => return 2,
                    Err(_) => return 3,
                }
            }
            for (i, &len) in SIZES.iter().enumerate() {
                if i == 2 && b.send_bytes(&too_large) != refused {
                    return 4;
                }
                if b.send_bytes(&pattern(len, 100 + i as u64)).is_err() {
                    return 5;
                }
            }
            0
        })
    };
    b.close();
    for (i, &len) in SIZES.iter().enumerate() {
        if i == 2 {
            // Refused, and nothing sent: the child sees exactly SIZES.
            assert_eq!(a.send_bytes(&too_large), refused);
            assert_eq!(a.send_bytes_timeout(&too_large, LONG), refused);
        }
        a.send_bytes(&pattern(len, i as u64)).unwrap();
    }
    // A buffer of exactly the maximum takes every message.
    let mut buf = vec![0u8; MAX];
    for (i, &len) in SIZES.iter().enumerate() {
        let n = a.recv_bytes_into_timeout(&mut buf, LONG).unwrap();
        assert_eq!(n, len, "message {i} from the child");
        assert!(buf[..n] == pattern(len, 100 + i as u64)[..], "message {i} from the child differs");
    }
    expect_exit(&mut child, "child (2 wrong message, 3 recv error, 4 no TooLarge, 5 send error)", 60);
}

// ---------------------------------------------------------------------------------------------
// End of file
// ---------------------------------------------------------------------------------------------

#[test]
fn end_of_file_after_the_child_closes_its_end_while_it_lives() {
    let _g = exclusive();
    let _w = watchdog(60);
    const K: u64 = 10;
    let flags = Flags::new(2);
    let f = flags.get();
    let (a, b) = Pipe::new().unwrap();
    // SAFETY: the child uses its end of the pipe and the flags, then exits.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            if (0..K).any(|i| b.send_bytes(&numbered(1, i)).is_err()) {
                return 2;
            }
            b.close();
            if b.send_bytes(b"after close") != Err(Closed) {
                return 3;
            }
            f[0].store(1, Ordering::Release);
            // Stay alive: the parent must learn from the close, not from our death.
            if !child_wait_for(&f[1]) {
                return 4;
            }
            0
        })
    };
    b.close(); // as in Python: the parent closes the child's end after the fork
    let (got, err) = drain(&a);
    assert_eq!(got, (0..K).map(|i| numbered(1, i)).collect::<Vec<_>>());
    assert_eq!(err, Disconnected);
    assert_eq!(a.recv_bytes(), Err(Disconnected), "blocking recv after end-of-file");
    assert_eq!(a.recv::<u64>(), Err(Disconnected));
    assert!(child.try_wait().unwrap().is_none(), "the child must still be alive");
    assert_eq!(f[0].load(Ordering::Acquire), 1);
    f[1].store(1, Ordering::Release);
    expect_exit(&mut child, "child (2 send error, 3 send after close, 4 flag)", 30);
}

#[test]
fn end_of_file_after_the_child_exits_without_closing() {
    let _g = exclusive();
    let _w = watchdog(60);
    const K: u64 = 100; // more than the capacity: the child blocks until the parent drains
    let (a, b) = Pipe::builder().capacity(4).build().unwrap();
    let a_ref = &a;
    // The closure owns `b`: the parent drops it when `fork` returns (Python's idiom); the
    // child exits through `_exit` without dropping anything. (The parent receives only once
    // the child runs: see `fork_started`.)
    // SAFETY: the child uses its end of the pipe and exits.
    let mut child = unsafe {
        fork_started(move || {
            a_ref.close();
            match (0..K).try_for_each(|i| b.send_bytes(&numbered(1, i))) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        })
    };
    let (got, err) = drain(&a);
    assert_eq!(got.len() as u64, K);
    assert!(got.iter().zip(0..).all(|(m, i)| *m == numbered(1, i)), "out of order or damaged");
    assert_eq!(err, Disconnected);
    expect_exit(&mut child, "child", 30);
    assert_eq!(a.send_bytes(b"nobody listens"), Err(Disconnected), "first send checks the peer");
}

#[test]
fn sigkilled_sender_blocked_receiver_drains_then_disconnected() {
    let _g = exclusive();
    let _w = watchdog(60);
    const K: u64 = 5;
    let (a, b) = Pipe::new().unwrap();
    // SAFETY: the child uses its end of the pipe and sleeps until killed.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            if (0..K).any(|i| b.send_bytes(&numbered(1, i)).is_err()) {
                return 2;
            }
            sleep_forever()
        })
    };
    b.close();
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut got = Vec::new();
            loop {
                match a.recv_bytes() {
                    Ok(m) => {
                        got.push(m);
                        count.fetch_add(1, Ordering::Release);
                    }
                    Err(e) => return (got, e),
                }
            }
        });
        until("the receiver to drain", || count.load(Ordering::Acquire) == K);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!h.is_finished(), "recv returned while the sender lived");
        let t = Instant::now();
        child.signal(libc::SIGKILL).unwrap(); // left a zombie: that counts as dead too
        let (got, err) = h.join().unwrap();
        eprintln!("end-of-file {:?} after SIGKILL", t.elapsed());
        assert_eq!(got, (0..K).map(|i| numbered(1, i)).collect::<Vec<_>>());
        assert_eq!(err, Disconnected);
    });
    assert_eq!(a.recv_bytes_timeout(LONG), Err(Disconnected));
    assert_eq!(child.kill().unwrap().signal(), Some(libc::SIGKILL));
}

#[test]
fn sigkilled_receiver_blocked_sender_gets_disconnected_once_the_pipe_is_full() {
    let _g = exclusive();
    let _w = watchdog(60);
    const CAP: usize = 2;
    let flags = Flags::new(1);
    let f = flags.get();
    let (a, b) = Pipe::builder().capacity(CAP).build().unwrap();
    // SAFETY: the child uses its end of the pipe and the flags, and sleeps until killed.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            if b.recv_bytes_timeout(LONG).as_deref() != Ok(b"hello") {
                return 2;
            }
            f[0].store(1, Ordering::Release);
            sleep_forever()
        })
    };
    b.close();
    a.send_bytes(b"hello").unwrap();
    until("the child to receive", || f[0].load(Ordering::Acquire) == 1);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut accepted = 0;
            loop {
                match a.send_bytes(b"into the void") {
                    Ok(()) => accepted += 1,
                    Err(e) => return (accepted, e),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(150));
        assert!(!h.is_finished(), "send returned while the receiver lived");
        child.kill().unwrap();
        assert_eq!(h.join().unwrap(), (CAP, Disconnected), "(messages accepted, error)");
    });
    // Full: at once, and every time.
    assert_eq!(a.send_bytes_timeout(b"x", LONG), Err(Disconnected));
    assert_eq!(a.send_bytes(b"x"), Err(Disconnected));
    assert_eq!(a.send(&7u64), Err(Disconnected));
    // The killed child held the other direction's sending end too.
    assert_eq!(a.recv_bytes_timeout(LONG), Err(Disconnected));
}

// ---------------------------------------------------------------------------------------------
// poll, wait, timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn timeouts_on_an_empty_or_full_pipe_last_at_least_the_timeout() {
    let _w = watchdog(60);
    let t50 = Duration::from_millis(50);
    let (a, b) = Pipe::builder().capacity(1).build().unwrap();
    assert_eq!(a.poll(Duration::ZERO), Ok(false));
    let at_least = |what: &str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        assert!(t.elapsed() >= t50, "{what} returned after {:?}", t.elapsed());
    };
    at_least("poll", &mut || assert_eq!(a.poll(t50), Ok(false)));
    at_least("recv_bytes_timeout", &mut || assert_eq!(a.recv_bytes_timeout(t50), Err(Timeout)));
    at_least("recv_timeout", &mut || assert_eq!(a.recv_timeout::<u32>(t50), Err(Timeout)));
    let mut buf = [0u8; 8];
    at_least("recv_bytes_into_timeout", &mut || {
        assert_eq!(a.recv_bytes_into_timeout(&mut buf, t50), Err(Timeout));
    });
    at_least("wait", &mut || assert!(wait(&[&a, &b], Some(t50)).is_empty()));
    b.send_bytes(b"fills it").unwrap();
    assert_eq!(b.send_bytes_timeout(b"no room", Duration::ZERO), Err(Timeout));
    at_least("send_bytes_timeout", &mut || assert_eq!(b.send_bytes_timeout(b"no room", t50), Err(Timeout)));
    // Nothing extra was queued by the timed-out sends.
    assert_eq!(a.recv_bytes(), Ok(b"fills it".to_vec()));
    assert_eq!(a.recv_bytes_timeout(Duration::ZERO), Err(Timeout));
}

#[test]
fn poll_sees_a_message_from_a_child_and_does_not_consume_it() {
    let _g = shared();
    let _w = watchdog(60);
    let (a, b) = Pipe::new().unwrap();
    // SAFETY: the child uses the pipe and exits.
    let mut child = unsafe {
        fork_started(|| {
            std::thread::sleep(Duration::from_millis(50));
            match b.send_bytes(b"ready") {
                Ok(()) => 0,
                Err(_) => 2,
            }
        })
    };
    // The parent keeps `b`: only the message can make `a` ready.
    assert_eq!(a.poll(LONG), Ok(true));
    assert_eq!(a.poll(Duration::ZERO), Ok(true), "poll consumed the message");
    assert_eq!(wait(&[&a], Some(Duration::ZERO)).len(), 1);
    assert_eq!(a.recv_bytes(), Ok(b"ready".to_vec()));
    assert_eq!(a.poll(Duration::ZERO), Ok(false));
    expect_exit(&mut child, "child", 30);
    assert_eq!(a.poll(Duration::from_millis(20)), Ok(false), "b is still held here");
}

#[test]
fn poll_is_true_once_the_peer_is_sigkilled() {
    let _g = exclusive();
    let _w = watchdog(60);
    let (a, b) = Pipe::new().unwrap();
    // SAFETY: the child holds its end of the pipe and sleeps until killed.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            sleep_forever()
        })
    };
    b.close();
    assert_eq!(a.poll(Duration::ZERO), Ok(false));
    let t = Instant::now();
    assert_eq!(a.poll(Duration::from_millis(100)), Ok(false), "the peer lives");
    assert!(t.elapsed() >= Duration::from_millis(100));
    child.kill().unwrap();
    assert_eq!(a.poll(LONG), Ok(true));
    assert_eq!(a.poll(Duration::ZERO), Ok(true), "end-of-file stays readable");
    assert_eq!(a.recv_bytes(), Err(Disconnected));
    assert_eq!(a.poll(Duration::ZERO), Ok(true));
}

#[test]
fn wait_returns_exactly_the_connection_a_child_wrote_to() {
    let _g = shared();
    let _w = watchdog(60);
    let pipes: Vec<(Connection, Connection)> = (0..3).map(|_| Pipe::new().unwrap()).collect();
    let ends: Vec<&Connection> = pipes.iter().map(|p| &p.0).collect();
    // SAFETY: the child uses a pipe and exits.
    let mut child = unsafe {
        fork_started(|| {
            std::thread::sleep(Duration::from_millis(50));
            match pipes[1].1.send_bytes(b"x") {
                Ok(()) => 0,
                Err(_) => 2,
            }
        })
    };
    // The parent keeps every `b` end: only messages can make an end ready.
    let ready = wait(&ends, Some(LONG));
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert!(std::ptr::eq(ready[0], ends[1]), "the wrong connection is ready");
    assert_eq!(ends[1].recv_bytes(), Ok(b"x".to_vec()));
    expect_exit(&mut child, "child", 30);
    let t = Instant::now();
    assert!(wait(&ends, Some(Duration::from_millis(50))).is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Several ready: in the order given.
    pipes[2].1.send_bytes(b"y").unwrap();
    pipes[0].1.send_bytes(b"z").unwrap();
    let ready = wait(&ends, Some(Duration::ZERO));
    assert_eq!(ready.len(), 2, "{ready:?}");
    assert!(std::ptr::eq(ready[0], ends[0]) && std::ptr::eq(ready[1], ends[2]));
    // wait does not consume.
    assert_eq!(ends[2].recv_bytes(), Ok(b"y".to_vec()));
    assert_eq!(ends[0].recv_bytes(), Ok(b"z".to_vec()));
}

#[test]
fn wait_reports_the_connection_whose_peer_died() {
    let _g = exclusive();
    let _w = watchdog(60);
    let pipes: Vec<(Connection, Connection)> = (0..3).map(|_| Pipe::new().unwrap()).collect();
    let ends: Vec<&Connection> = pipes.iter().map(|p| &p.0).collect();
    // SAFETY: the child holds one end and sleeps until killed.
    let mut child = unsafe {
        fork_started(|| {
            for (i, (a, b)) in pipes.iter().enumerate() {
                a.close();
                if i != 1 {
                    b.close();
                }
            }
            sleep_forever()
        })
    };
    pipes[1].1.close();
    assert!(wait(&ends, Some(Duration::ZERO)).is_empty());
    assert!(wait(&ends, Some(Duration::from_millis(100))).is_empty(), "the peer lives");
    child.kill().unwrap();
    let ready = wait(&ends, Some(LONG));
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert!(std::ptr::eq(ready[0], ends[1]), "the wrong connection is ready");
    assert_eq!(ends[1].recv_bytes(), Err(Disconnected));
    assert_eq!(ends[0].poll(Duration::ZERO), Ok(false));
}

// ---------------------------------------------------------------------------------------------
// Kept messages
// ---------------------------------------------------------------------------------------------

#[test]
fn too_small_buffer_and_wrong_size_keep_the_message() {
    let _w = watchdog(60);
    let (a, b) = Pipe::new().unwrap();
    let big = pattern(100, 7);
    a.send_bytes(&big).unwrap();
    a.send_bytes(b"abc").unwrap();
    a.send_bytes(b"next").unwrap();
    let mut small = [0u8; 10];
    assert_eq!(b.recv_bytes_into(&mut small), Err(BufferTooSmall { needed: 100 }));
    assert_eq!(
        b.recv_bytes_into_timeout(&mut [0u8; 99], Duration::ZERO),
        Err(BufferTooSmall { needed: 100 })
    );
    assert_eq!(b.recv_bytes_into(&mut []), Err(BufferTooSmall { needed: 100 }));
    assert_eq!(b.poll(Duration::ZERO), Ok(true), "a kept message is ready");
    assert_eq!(wait(&[&b], Some(Duration::ZERO)).len(), 1);
    let mut buf = [0u8; 128];
    assert_eq!(b.recv_bytes_into(&mut buf), Ok(100));
    assert_eq!(&buf[..100], &big[..]);
    assert_eq!(b.recv::<u64>(), Err(WrongSize { len: 3, expected: 8 }));
    assert_eq!(b.recv_timeout::<u64>(Duration::ZERO), Err(WrongSize { len: 3, expected: 8 }));
    assert_eq!(b.recv_bytes(), Ok(b"abc".to_vec()));
    let mut exact = [0u8; 4];
    assert_eq!(b.recv_bytes_into(&mut exact), Ok(4));
    assert_eq!(&exact, b"next");
    assert_eq!(b.poll(Duration::ZERO), Ok(false));
    b.send(&0xdead_beef_u64).unwrap();
    assert_eq!(a.recv::<u64>(), Ok(0xdead_beef));
}

#[test]
fn kept_message_stays_with_the_process_that_kept_it() {
    let _g = shared();
    let _w = watchdog(60);
    let (a, b) = Pipe::new().unwrap();
    let first = pattern(100, 1);
    a.send_bytes(&first).unwrap();
    a.send_bytes(b"second").unwrap();
    assert_eq!(b.recv_bytes_into(&mut [0u8; 10]), Err(BufferTooSmall { needed: 100 }));
    // SAFETY: the child uses the pipe and exits.
    let mut child = unsafe {
        fork_started(|| match b.recv_bytes_timeout(LONG) {
            Ok(m) if m == b"second" => 0,
            Ok(m) if m == first => 2, // the parent's kept message leaked into the child
            Ok(_) => 3,
            Err(_) => 4,
        })
    };
    expect_exit(&mut child, "child (2 got the parent's kept message)", 30);
    assert_eq!(b.recv_bytes(), Ok(first));
    assert_eq!(b.recv_bytes_timeout(Duration::ZERO), Err(Timeout));
}

// ---------------------------------------------------------------------------------------------
// Simplex, named, close
// ---------------------------------------------------------------------------------------------

#[test]
fn simplex_ends_refuse_the_other_direction_and_carry_data_across_fork() {
    let _g = exclusive();
    let _w = watchdog(60);
    const N: u64 = 2_000;
    let (reader, writer) = Pipe::simplex().unwrap();
    assert!(reader.readable() && !reader.writable());
    assert!(!writer.readable() && writer.writable());
    assert_eq!(reader.max_message(), writer.max_message());
    assert_eq!(reader.send_bytes(b"x"), Err(NotWritable));
    assert_eq!(reader.send_bytes_timeout(b"x", Duration::ZERO), Err(NotWritable));
    assert_eq!(reader.send(&1u32), Err(NotWritable));
    assert_eq!(writer.recv_bytes(), Err(NotReadable));
    assert_eq!(writer.recv_bytes_timeout(Duration::ZERO), Err(NotReadable));
    assert_eq!(writer.recv_bytes_into(&mut [0u8; 8]), Err(NotReadable));
    assert_eq!(writer.recv::<u32>(), Err(NotReadable));
    assert_eq!(writer.poll(Duration::ZERO), Err(NotReadable));
    // SAFETY: the child uses the sending end and exits.
    let mut child = unsafe {
        fork_started(|| {
            reader.close();
            match (0..N).try_for_each(|i| writer.send_bytes(&numbered(0, i))) {
                Ok(()) => 0,
                Err(_) => 2,
            }
        })
    };
    writer.close();
    let (got, err) = drain(&reader);
    assert_eq!(got.len() as u64, N);
    assert!(got.iter().zip(0..).all(|(m, i)| *m == numbered(0, i)), "out of order or damaged");
    assert_eq!(err, Disconnected);
    expect_exit(&mut child, "writer child", 30);
}

#[test]
fn named_pipe_echoed_by_an_unrelated_process() {
    let _g = shared();
    let _w = watchdog(120);
    const MAX: usize = 4096;
    let name = unique_name("pipe");
    let creator = Pipe::builder().capacity(4).max_message(MAX).create(&name).unwrap();
    assert!(Pipe::create(&name).is_err(), "the name is taken");
    // Nobody opened it yet: receives wait, they do not report a missing peer.
    assert_eq!(creator.poll(Duration::ZERO), Ok(false));
    let t = Instant::now();
    assert_eq!(creator.recv_bytes_timeout(Duration::from_millis(100)), Err(Timeout));
    assert!(t.elapsed() >= Duration::from_millis(100));
    let cmd = role_command("role_entry", "echo", &[name.clone(), MAX.to_string()]);
    let role = std::thread::spawn(move || run_with_timeout(cmd, 100));
    // Most likely waiting before the opener attaches.
    assert_eq!(creator.recv_bytes_timeout(Duration::from_secs(60)), Ok(b"hello".to_vec()));
    let msgs: Vec<Vec<u8>> =
        (0..500usize).map(|i| pattern([0, 1, MAX, MAX - 1, 17 + i % 300][i % 5], i as u64)).collect();
    std::thread::scope(|s| {
        s.spawn(|| msgs.iter().try_for_each(|m| creator.send_bytes(m)).unwrap());
        for (i, m) in msgs.iter().enumerate() {
            assert!(creator.recv_bytes_timeout(LONG).as_ref() == Ok(m), "echo {i} differs");
        }
    });
    creator.send_bytes(b"stop").unwrap();
    let st = role.join().unwrap();
    assert_eq!(st.code(), Some(0), "echo role (2 open, 3 max_message, 4..6 send/recv): {st:?}");
    // The opener is gone: end-of-file (no other process ever held the opener's end).
    assert_eq!(creator.recv_bytes_timeout(LONG), Err(Disconnected));
}

#[test]
fn open_of_a_missing_name_or_another_kind_is_an_error() {
    let _w = watchdog(60);
    let missing = unique_name("missing");
    assert!(
        matches!(Pipe::open(&missing), Err(QueueOpenError::Shm(ShmOpenError::DoesNotExist(_)))),
        "{:?}",
        Pipe::open(&missing)
    );
    assert!(Pipe::open("").is_err());
    let lname = unique_name("lock");
    let _lock = Lock::create(&lname).unwrap();
    let r = Pipe::open(&lname);
    assert!(matches!(r, Err(QueueOpenError::Shm(ShmOpenError::WrongKind { .. }))), "{r:?}");
    let qname = unique_name("frames");
    let _q = FrameQueue::create(&qname, 4, 64).unwrap();
    let r = Pipe::open(&qname);
    assert!(matches!(r, Err(QueueOpenError::Shm(ShmOpenError::WrongKind { .. }))), "{r:?}");
    let pname = unique_name("pipe");
    let _p = Pipe::create(&pname).unwrap();
    assert!(FrameQueue::open(&pname).is_err(), "opened a pipe as a FrameQueue");
    assert!(Lock::open(&pname).is_err(), "opened a pipe as a Lock");
}

#[test]
fn close_makes_later_calls_fail_with_closed_and_the_peer_drains_then_eof() {
    let _g = exclusive();
    let _w = watchdog(60);
    let (a, b) = Pipe::new().unwrap();
    a.send_bytes(b"before close").unwrap();
    assert!(!a.is_closed());
    a.close();
    a.close(); // again: a no-op
    assert!(a.is_closed() && !b.is_closed());
    assert_eq!(a.send_bytes(b"x"), Err(Closed));
    assert_eq!(a.send_bytes_timeout(b"x", Duration::ZERO), Err(Closed));
    assert_eq!(a.send(&1u8), Err(Closed));
    assert_eq!(a.recv_bytes(), Err(Closed));
    assert_eq!(a.recv_bytes_timeout(LONG), Err(Closed));
    assert_eq!(a.recv_bytes_into(&mut [0u8; 8]), Err(Closed));
    assert_eq!(a.recv::<u8>(), Err(Closed));
    assert_eq!(a.poll(Duration::ZERO), Err(Closed));
    // wait counts a closed connection as ready: its receive returns at once (Closed).
    assert_eq!(wait(&[&a], Some(LONG)).len(), 1);
    assert_eq!(b.recv_bytes_timeout(LONG), Ok(b"before close".to_vec()));
    assert_eq!(b.recv_bytes_timeout(LONG), Err(Disconnected));
    assert_eq!(b.poll(Duration::ZERO), Ok(true));
    assert_eq!(b.send_bytes(b"nobody"), Err(Disconnected), "first send checks the peer");
}

#[test]
fn parent_dropping_the_childs_end_right_after_fork_does_not_break_the_child() {
    let _g = exclusive();
    let _w = watchdog(60);
    const N: u64 = 200;
    let (parent_conn, child_conn) = Pipe::builder().capacity(2).build().unwrap();
    // SAFETY: the child uses its end of the pipe and exits.
    let mut child = unsafe {
        fork_started(|| {
            parent_conn.close();
            for i in 0..N {
                match child_conn.recv_bytes_timeout(LONG) {
                    Ok(m) if m == numbered(0, i) => {}
                    Ok(_) => return 2,
                    Err(_) => return 3,
                }
                if child_conn.is_closed() || child_conn.send_bytes(&numbered(1, i)).is_err() {
                    return 4;
                }
            }
            0
        })
    };
    // Its end lives on in the child (see `fork_started` for why this waits until it runs).
    drop(child_conn);
    for i in 0..N {
        parent_conn.send_bytes(&numbered(0, i)).unwrap();
        assert_eq!(parent_conn.recv_bytes_timeout(LONG), Ok(numbered(1, i)));
    }
    expect_exit(&mut child, "child (2 wrong message, 3 recv error, 4 send error)", 30);
    assert_eq!(parent_conn.recv_bytes_timeout(LONG), Err(Disconnected));
}

/// A child forked to hold `b` (it closes `a` and sleeps until killed); the parent closes `b`
/// at once, as Python's idiom does. Returns the child and the parent's `a`.
fn fork_holder_and_close_its_end() -> (ForkedChild, Connection) {
    let (a, b) = Pipe::new().unwrap();
    // SAFETY: the child closes one end and sleeps until killed.
    let child = unsafe {
        fork(|| {
            a.close();
            sleep_forever()
        })
    }
    .unwrap();
    b.close();
    (child, a)
}

/// The fork handler that lists a child as a holder of its ends runs in the child; before
/// `fork`, the parent counts the child as coming, so a parent that closes the child's end
/// and sends at once (the first send checks for a receiver) must not get `Disconnected`.
#[test]
fn first_send_right_after_fork_and_close_of_the_childs_end_is_delivered() {
    let _g = exclusive();
    let _w = watchdog(60);
    for i in 0..20 {
        let (mut child, a) = fork_holder_and_close_its_end();
        assert_eq!(a.send_bytes(b"hello"), Ok(()), "iteration {i}: the child holds the other end");
        child.kill().unwrap();
    }
}

/// As above: `poll(Duration::ZERO)` (and `wait` with a zero timeout) checks for a dead peer
/// at once, and must not report end-of-file while the child (not yet run) lives.
#[test]
fn poll_zero_right_after_fork_and_close_of_the_childs_end_is_not_end_of_file() {
    let _g = exclusive();
    let _w = watchdog(60);
    for i in 0..20 {
        let (mut child, a) = fork_holder_and_close_its_end();
        assert_eq!(a.poll(Duration::ZERO), Ok(false), "iteration {i}: the child holds the other end");
        assert_eq!(a.recv_bytes_timeout(Duration::from_millis(20)), Err(Timeout));
        child.kill().unwrap();
    }
}

/// A named pipe's creator that fills the pipe before the other end is opened waits (and
/// times out) instead of reporting `Disconnected`: the opener attaches afterwards and
/// receives what was sent.
#[test]
fn send_on_full_named_pipe_before_open_times_out_not_disconnected() {
    let _w = watchdog(60);
    let name = unique_name("early");
    let creator = Pipe::builder().capacity(1).create(&name).unwrap();
    creator.send_bytes(b"early").unwrap();
    assert_eq!(creator.send_bytes_timeout(b"late", Duration::from_millis(300)), Err(Timeout));
    let opener = Pipe::open(&name).unwrap();
    assert_eq!(opener.recv_bytes_timeout(LONG), Ok(b"early".to_vec()));
}

// ---------------------------------------------------------------------------------------------
// Serde
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "serde")]
#[test]
fn serde_values_cross_fork_and_undecodable_bytes_are_kept() {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct Record {
        id: u64,
        name: String,
        values: Vec<i32>,
    }
    fn record(id: u64) -> Record {
        Record { id, name: format!("record #{id}"), values: (0..id as i32 % 20).map(|v| v * -7).collect() }
    }

    let _g = shared();
    let _w = watchdog(60);
    const N: u64 = 200;
    let garbage = [0xffu8; 16]; // an unterminated varint: not a Record
    let (a, b) = Pipe::builder().capacity(4).max_message(256).build().unwrap();
    // SAFETY: the child uses its end of the pipe and exits.
    let mut child = unsafe {
        fork_started(|| {
            a.close();
            if (0..N).any(|i| b.send_serde(&record(i)).is_err()) || b.send_bytes(&garbage).is_err() {
                return 2;
            }
            match b.recv_serde::<Record>() {
                Ok(r) if r == record(999) => 0,
                _ => 3,
            }
        })
    };
    b.close();
    for i in 0..N {
        assert_eq!(a.recv_serde_timeout::<Record>(LONG), Ok(record(i)));
    }
    assert!(matches!(a.recv_serde::<Record>(), Err(ConnectionError::Decode(_))));
    assert!(matches!(a.recv_serde_timeout::<Record>(Duration::ZERO), Err(ConnectionError::Decode(_))));
    assert_eq!(a.recv_bytes(), Ok(garbage.to_vec()), "the undecodable message was kept");
    let huge = Record { id: 1, name: "x".repeat(300), values: vec![] };
    assert!(matches!(a.send_serde(&huge), Err(ConnectionError::TooLarge { max: 256, .. })));
    a.send_serde(&record(999)).unwrap();
    expect_exit(&mut child, "child (2 send error, 3 wrong record)", 30);
}
