//! Managers between real processes: the seed program, master/worker queues with forked and
//! exec'd workers, 100 concurrent clients, the proxies' API against Python's behaviour,
//! forked children using proxies they inherited, and servers run in a thread of this process
//! or in a forked one. Each runs over a Unix socket and over loopback TCP where both apply
//! (`name::unix`, `name::tcp`).
//!
//! Failures (authentication, killed peers, shutdown, timeouts, limits, malformed frames) are
//! in tests/manager_failures.rs.
#![cfg(feature = "manager")]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shmkit::manager::{
    Address, Client, LockProxy, LockProxyGuard, Manager, ManagerError, ManagerHandle, Obj, ObjectKind, Server,
};
use shmkit::process::Process;

use common::{role, role_command, run_with_timeout, watchdog};

/// Bound on every wait that should end at once: long enough for a loaded 2-CPU VM, short
/// enough that a bug fails the test well within the watchdog.
const LONG: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Unix,
    Tcp,
}

/// Generates `mod name { fn unix(); fn tcp(); }` running `name(Transport)` over each.
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn unix() {
                super::$name(super::Transport::Unix)
            }
            #[test]
            fn tcp() {
                super::$name(super::Transport::Tcp)
            }
        }
    )*};
}

/// `Err` matching the pattern (the `Ok` type need not be `Debug`).
macro_rules! assert_err {
    ($e:expr, $p:pat) => {
        match $e {
            Err($p) => {}
            Err(other) => panic!("expected {}, got Err({other:?})", stringify!($p)),
            Ok(_) => panic!("expected {}, got Ok", stringify!($p)),
        }
    };
}

/// Starts a server process: `Manager::start()` (private Unix socket, random key) or the
/// builder on a loopback TCP port.
fn start(t: Transport) -> ManagerHandle {
    let mgr = match t {
        Transport::Unix => Manager::start(),
        Transport::Tcp => Manager::builder().address("127.0.0.1:0").start(),
    }
    .expect("start a manager");
    match (t, mgr.address()) {
        (Transport::Unix, Address::Unix(_)) | (Transport::Tcp, Address::Tcp(_)) => {}
        (t, a) => panic!("a {t:?} manager at {a}"),
    }
    mgr
}

/// Forks a child running `f`: a daemon, so that a test failing before it joins the child
/// (a forked server serves forever) does not leave it running.
fn fork(f: impl FnOnce() + Send + 'static) -> Process {
    let mut p = Process::builder().daemon(true).target(f);
    p.start().expect("fork");
    p
}

/// Waits (bounded) for `p` and checks it exited with 0, showing its panic otherwise.
fn join_ok(p: &Process, what: &str) {
    let code = match p.join_timeout(LONG).expect("join") {
        Some(c) => c,
        None => {
            let _ = p.kill();
            panic!("{what} still running after {LONG:?}");
        }
    };
    assert_eq!(code, 0, "{what} exited with {code}: {:?}", p.panic_message());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex key")).collect()
}

/// A short-pathed private directory for socket files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = PathBuf::from(format!(
            "/tmp/shmkit-mgrtest-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&p).expect("create temp dir");
        TempDir(p)
    }

    fn sock(&self) -> String {
        self.0.join("m.sock").to_str().expect("UTF-8 path").to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The address a server of transport `t` binds in `dir`.
fn bind_address(t: Transport, dir: &TempDir) -> String {
    match t {
        Transport::Unix => dir.sock(),
        Transport::Tcp => "127.0.0.1:0".to_owned(),
    }
}

/// Connects, retrying while the server is not listening yet.
fn connect_retry(address: &str, key: &[u8]) -> Client {
    let deadline = Instant::now() + LONG;
    loop {
        match Manager::connect(address, key) {
            Ok(c) => return c,
            Err(ManagerError::Connect(..)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("connect to {address}: {e}"),
        }
    }
}

/// Python's `repr` of a dict's items.
fn py_dict(items: &[(Obj, Obj)]) -> String {
    let inner: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

// ---------------------------------------------------------------------------------------------
// 1. The seed program
// ---------------------------------------------------------------------------------------------

/// ```python
/// def f(d, l):
///     d[1] = '1'; d['2'] = 2; d[0.25] = None
///     l.reverse()
/// with Manager() as manager:
///     d = manager.dict(); l = manager.list(range(10))
///     p = Process(target=f, args=(d, l)); p.start(); p.join()
///     print(d)   # {1: '1', '2': 2, 0.25: None}
///     print(l)   # [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
/// ```
fn seed_program(t: Transport) {
    let _w = watchdog(60);
    let mgr = start(t);
    let d = mgr.dict::<Obj, Obj>().unwrap();
    let l = mgr.list_from(0..10i64).unwrap();
    let (d2, l2) = (d.clone(), l.clone());
    let p = fork(move || {
        d2.insert(1, "1".into()).unwrap();
        d2.insert("2", 2.into()).unwrap();
        d2.insert(0.25, Obj::None).unwrap();
        l2.reverse().unwrap();
    });
    join_ok(&p, "child");
    let items = d.items().unwrap();
    assert_eq!(
        items,
        [(Obj::Int(1), Obj::from("1")), (Obj::from("2"), Obj::Int(2)), (Obj::Float(0.25), Obj::None)]
    );
    assert_eq!(py_dict(&items), "{1: '1', '2': 2, 0.25: None}");
    assert_eq!(d.get(&Obj::Int(1)).unwrap(), Some(Obj::from("1")));
    assert_eq!(d.get(&Obj::from("2")).unwrap(), Some(Obj::Int(2)));
    assert_eq!(d.get(&Obj::Float(0.25)).unwrap(), Some(Obj::None));
    // Obj keys compare by encoding: 1 and 1.0 are two keys, "1" a third.
    assert_eq!(d.get(&Obj::Float(1.0)).unwrap(), None);
    assert_eq!(d.get(&Obj::from("1")).unwrap(), None);
    let reversed = l.snapshot().unwrap();
    assert_eq!(reversed, (0..10).rev().collect::<Vec<i64>>());
    assert_eq!(
        Obj::List(reversed.into_iter().map(Obj::Int).collect()).to_string(),
        "[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]"
    );
    mgr.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Master and workers
// ---------------------------------------------------------------------------------------------

fn work(task: u64) -> u64 {
    task * task + 1
}

/// A worker process: knows only the address and the key. Takes `Some(task)` from the named
/// queue "tasks" until `None`, puts `(worker, task, work(task))` on "results".
fn worker_main(address: &str, key: &[u8], me: u32) -> i32 {
    let c = match Manager::connect(address, key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("worker {me}: connect to {address}: {e}");
            return 2;
        }
    };
    let tasks = c.named("tasks").queue::<Option<u64>>().unwrap();
    let results = c.named("results").queue::<(u32, u64, u64)>().unwrap();
    loop {
        match tasks.get_timeout(LONG) {
            Ok(Some(task)) => results.put((me, task, work(task))).unwrap(),
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("worker {me}: get: {e}");
                return 3;
            }
        }
    }
}

#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let code = match role.as_str() {
        "worker" => worker_main(&args[0], &unhex(&args[1]), args[2].parse().unwrap()),
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

/// Checks that every task of `0..n` came back exactly once with the right result.
fn check_results(results: &[(u32, u64, u64)], n: u64, workers: u32) {
    let mut seen = vec![0u32; n as usize];
    for &(w, task, r) in results {
        assert!(w < workers, "result from unknown worker {w}");
        assert!(task < n, "unknown task {task}");
        assert_eq!(r, work(task), "wrong result for task {task}");
        seen[task as usize] += 1;
    }
    let wrong: Vec<_> = seen.iter().enumerate().filter(|(_, &c)| c != 1).collect();
    assert!(wrong.is_empty(), "tasks not seen exactly once (task, times): {wrong:?}");
}

/// The master serves, three unrelated (exec'd) processes connect with the address and the
/// hex key as arguments, and every task's result comes back exactly once.
fn master_exec_workers(t: Transport) {
    let _w = watchdog(90);
    const N: u64 = 300;
    const W: u32 = 3;
    let mgr = start(t);
    let tasks = mgr.named("tasks").queue::<Option<u64>>().unwrap();
    let results = mgr.named("results").queue::<(u32, u64, u64)>().unwrap();
    // Half the tasks before the workers exist, half while they run.
    for task in 0..N / 2 {
        tasks.put(Some(task)).unwrap();
    }
    let workers: Vec<_> = (0..W)
        .map(|w| {
            let args = [mgr.address().to_string(), hex(mgr.authkey()), w.to_string()];
            let cmd = role_command("role_entry", "worker", &args);
            std::thread::spawn(move || run_with_timeout(cmd, 60))
        })
        .collect();
    for task in N / 2..N {
        tasks.put(Some(task)).unwrap();
    }
    let got: Vec<_> = (0..N).map(|_| results.get_timeout(LONG).expect("a result")).collect();
    for _ in 0..W {
        tasks.put(None).unwrap();
    }
    for (w, h) in workers.into_iter().enumerate() {
        assert_eq!(h.join().unwrap().code(), Some(0), "worker {w}");
    }
    check_results(&got, N, W);
    assert_err!(results.try_get(), ManagerError::Empty);
    assert_eq!(tasks.len().unwrap(), 0);
    mgr.shutdown().unwrap();
}

/// Forked workers that each make a fresh `Manager::connect`, on a joinable queue: the master
/// `join`s, and by then every task is done exactly once.
fn master_forked_workers_joinable(t: Transport) {
    let _w = watchdog(90);
    const N: u64 = 200;
    const W: u32 = 3;
    let mgr = start(t);
    let jobs = mgr.named("jobs").joinable_queue::<Option<u64>>().unwrap();
    let done = mgr.named("done").list::<(u32, u64, u64)>().unwrap();
    let workers: Vec<_> = (0..W)
        .map(|w| {
            let (address, key) = (mgr.address().clone(), mgr.authkey().to_vec());
            fork(move || {
                let c = Manager::connect(&address, &key).expect("connect");
                let jobs = c.named("jobs").joinable_queue::<Option<u64>>().unwrap();
                let done = c.named("done").list::<(u32, u64, u64)>().unwrap();
                loop {
                    let job = jobs.get_timeout(LONG).expect("get");
                    if let Some(j) = job {
                        done.push((w, j, work(j))).unwrap();
                    }
                    jobs.task_done().unwrap();
                    if job.is_none() {
                        break;
                    }
                }
            })
        })
        .collect();
    for j in 0..N {
        jobs.put(Some(j)).unwrap();
    }
    jobs.join_timeout(LONG).expect("every job done");
    // join() returned: every task_done came after its push.
    assert_eq!(jobs.unfinished().unwrap(), 0);
    assert_eq!(done.len().unwrap(), N as usize);
    for _ in 0..W {
        jobs.put(None).unwrap();
    }
    jobs.join_timeout(LONG).expect("every sentinel taken");
    for (w, p) in workers.iter().enumerate() {
        join_ok(p, &format!("worker {w}"));
    }
    check_results(&done.snapshot().unwrap(), N, W);
    assert!(jobs.is_empty().unwrap());
    assert_err!(jobs.task_done(), ManagerError::TaskDoneTooMany);
    mgr.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 3. 100 concurrent clients
// ---------------------------------------------------------------------------------------------

/// 100 forked processes, each with its own `Client`, wait at a gate (a semaphore counts them
/// in, an event lets them go), then do 10 lock-protected read-modify-write increments of a
/// named value and 10 inserts of unique keys: the value ends at exactly 1000 and the dict
/// holds every key.
fn hundred_clients(t: Transport) {
    let _w = watchdog(120);
    const P: u32 = 100;
    const K: u32 = 10;
    let mgr = start(t);
    let n = mgr.named("n").value(0u64).unwrap();
    let lock = mgr.named("lock").lock().unwrap();
    let d = mgr.named("d").dict::<u32, u32>().unwrap();
    let ready = mgr.named("ready").semaphore(0).unwrap();
    let go = mgr.named("go").event().unwrap();
    let procs: Vec<_> = (0..P)
        .map(|i| {
            let (address, key) = (mgr.address().clone(), mgr.authkey().to_vec());
            fork(move || {
                let c = Manager::connect(&address, &key).expect("connect");
                let n = c.named("n").value(0u64).unwrap();
                let lock = c.named("lock").lock().unwrap();
                let d = c.named("d").dict::<u32, u32>().unwrap();
                let go = c.named("go").event().unwrap();
                c.named("ready").semaphore(0).unwrap().release().unwrap();
                assert!(go.wait_timeout(LONG).unwrap(), "the gate never opened");
                for j in 0..K {
                    let g = lock.lock_timeout(LONG).expect("lock");
                    assert!(!g.previous_owner_died());
                    let v = n.get().unwrap();
                    n.set(v + 1).unwrap();
                    g.unlock().unwrap();
                    assert_eq!(d.insert(i * K + j, i).unwrap(), None, "key {} taken twice", i * K + j);
                }
            })
        })
        .collect();
    for _ in 0..P {
        assert!(ready.acquire_timeout(LONG).unwrap(), "a client never reached the gate");
    }
    assert_eq!(ready.value().unwrap(), 0);
    assert_eq!(n.get().unwrap(), 0, "a client went past the gate");
    go.set().unwrap();
    for (i, p) in procs.iter().enumerate() {
        join_ok(p, &format!("client {i}"));
    }
    assert_eq!(n.get().unwrap(), u64::from(P * K));
    assert_eq!(d.len().unwrap(), (P * K) as usize);
    let items = d.items().unwrap();
    let keys: BTreeSet<u32> = items.iter().map(|&(k, _)| k).collect();
    assert_eq!(keys, (0..P * K).collect());
    assert!(items.iter().all(|&(k, v)| v == k / K), "a key written by the wrong client");
    let g = lock.try_lock().expect("the lock is free");
    assert!(!g.previous_owner_died());
    drop(g);
    mgr.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 4. The proxies' API
// ---------------------------------------------------------------------------------------------

fn dict_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let d = mgr.dict::<String, i64>().unwrap();
    assert_eq!(d.name(), None);
    assert!(d.is_empty().unwrap());
    assert_eq!(d.insert("a", 1).unwrap(), None);
    assert_eq!(d.insert("b", 2).unwrap(), None);
    assert_eq!(d.insert("c", 3).unwrap(), None);
    // Replacing returns the old value and keeps the key's place.
    assert_eq!(d.insert("a", 10).unwrap(), Some(1));
    assert_eq!(d.keys().unwrap(), ["a", "b", "c"]);
    assert_eq!(d.remove("b").unwrap(), Some(2));
    assert_eq!(d.remove("b").unwrap(), None);
    // A removed key inserted again goes to the end, as in Python.
    assert_eq!(d.insert("b".to_string(), 20).unwrap(), None);
    assert_eq!(d.keys().unwrap(), ["a", "c", "b"]);
    assert_eq!(d.values().unwrap(), [10, 3, 20]);
    assert!(d.contains_key("a").unwrap());
    assert!(!d.contains_key("zz").unwrap());
    assert_eq!(d.get("c").unwrap(), Some(3));
    assert_eq!(d.get("zz").unwrap(), None);
    // setdefault: the existing value, or the default inserted.
    assert_eq!(d.get_or_insert("a", 99).unwrap(), 10);
    assert_eq!(d.get_or_insert("d", 4).unwrap(), 4);
    assert_eq!(d.get("d").unwrap(), Some(4));
    assert_eq!(d.len().unwrap(), 4);
    // update: existing keys keep their place.
    d.update([("e", 5), ("a", 11)]).unwrap();
    d.update(Vec::<(String, i64)>::new()).unwrap();
    let items = d.items().unwrap();
    let expect: Vec<(String, i64)> = [("a", 11), ("c", 3), ("b", 20), ("d", 4), ("e", 5)]
        .iter()
        .map(|&(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(items, expect);
    d.clear().unwrap();
    assert_eq!(d.len().unwrap(), 0);
    assert!(d.keys().unwrap().is_empty());
    assert!(d.items().unwrap().is_empty());
    assert_eq!(d.remove("a").unwrap(), None);
    // Two dicts are two objects.
    let d2 = mgr.dict::<String, i64>().unwrap();
    d2.insert("x", 1).unwrap();
    assert_eq!(d.get("x").unwrap(), None);
}

fn list_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let l = mgr.list::<i32>().unwrap();
    assert!(l.is_empty().unwrap());
    assert_eq!(l.pop().unwrap(), None);
    assert_err!(l.get(0), ManagerError::IndexOutOfRange { index: 0, len: 0 });
    l.push(1).unwrap();
    l.push(2).unwrap();
    l.push(3).unwrap();
    assert_eq!(l.len().unwrap(), 3);
    assert_eq!(l.get(0).unwrap(), 1);
    assert_eq!(l.get(2).unwrap(), 3);
    assert_eq!(l.set(1, 20).unwrap(), 2);
    l.insert(0, 0).unwrap();
    // Inserting at len appends.
    l.insert(4, 4).unwrap();
    assert_eq!(l.snapshot().unwrap(), [0, 1, 20, 3, 4]);
    assert_err!(l.insert(6, 9), ManagerError::IndexOutOfRange { index: 6, len: 5 });
    assert_err!(l.get(5), ManagerError::IndexOutOfRange { index: 5, len: 5 });
    assert_err!(l.set(5, 9), ManagerError::IndexOutOfRange { index: 5, len: 5 });
    assert_err!(l.remove(5), ManagerError::IndexOutOfRange { index: 5, len: 5 });
    assert_err!(l.get(usize::MAX), ManagerError::IndexOutOfRange { len: 5, .. });
    // Nothing changed by the failures.
    assert_eq!(l.snapshot().unwrap(), [0, 1, 20, 3, 4]);
    assert_eq!(l.remove(2).unwrap(), 20);
    assert_eq!(l.pop().unwrap(), Some(4));
    assert_eq!(l.snapshot().unwrap(), [0, 1, 3]);
    l.reverse().unwrap();
    l.extend([7, 8]).unwrap();
    l.extend(std::iter::empty()).unwrap();
    assert_eq!(l.snapshot().unwrap(), [3, 1, 0, 7, 8]);
    assert_eq!(l.iter().unwrap().sum::<i32>(), 19);
    assert_eq!(l.iter().unwrap().collect::<Vec<_>>(), l.snapshot().unwrap());
    l.clear().unwrap();
    assert!(l.is_empty().unwrap());
    assert_eq!(l.pop().unwrap(), None);
    let from = mgr.list_from(["x", "y"].map(String::from)).unwrap();
    assert_eq!(from.snapshot().unwrap(), ["x", "y"]);
    let empty = mgr.list_from(Vec::<u8>::new()).unwrap();
    assert_eq!(empty.len().unwrap(), 0);
}

fn queue_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let q = mgr.queue::<u32>().unwrap();
    assert!(q.is_empty().unwrap());
    for i in 0..10 {
        q.put(i).unwrap();
    }
    q.send(10).unwrap();
    q.put(11).unwrap();
    assert_eq!(q.len().unwrap(), 12);
    // FIFO, through every way of taking.
    assert_eq!(q.get().unwrap(), 0);
    assert_eq!(q.try_get().unwrap(), 1);
    assert_eq!(q.get_timeout(LONG).unwrap(), 2);
    assert_eq!(q.recv().unwrap(), 3);
    assert_eq!(q.recv_timeout(LONG).unwrap(), 4);
    assert_eq!((5..12).map(|_| q.get().unwrap()).collect::<Vec<_>>(), (5..12).collect::<Vec<_>>());
    assert_err!(q.try_get(), ManagerError::Empty);
    assert_err!(q.get_timeout(Duration::from_millis(20)), ManagerError::Timeout);

    let b = mgr.queue_bounded::<String>(2).unwrap();
    b.try_put("a".to_string()).unwrap();
    b.put_timeout("b".to_string(), LONG).unwrap();
    let c = "c".to_string();
    assert_err!(b.try_put(&c), ManagerError::Full);
    assert_err!(b.put_timeout(&c, Duration::from_millis(20)), ManagerError::Timeout);
    assert_eq!(b.len().unwrap(), 2);
    assert_eq!(b.get().unwrap(), "a");
    b.try_put(&c).unwrap();
    assert_eq!([b.get().unwrap(), b.get().unwrap()], ["b", "c"]);
    assert_err!(mgr.queue_bounded::<u8>(0), ManagerError::ZeroCapacity);
    assert_err!(mgr.named("zero").queue_bounded::<u8>(0), ManagerError::ZeroCapacity);

    // A get blocked in this process is woken by a put from another process, and a put
    // blocked on a full queue by a get.
    let one = mgr.queue_bounded::<u32>(1).unwrap();
    let (q2, one2) = (q.clone(), one.clone());
    let p = fork(move || {
        std::thread::sleep(Duration::from_millis(50));
        q2.put(42).unwrap();
        assert_eq!(one2.get_timeout(LONG).unwrap(), 1);
        assert_eq!(one2.get_timeout(LONG).unwrap(), 2);
    });
    assert_eq!(q.get_timeout(LONG).unwrap(), 42);
    one.put(1).unwrap();
    one.put_timeout(2, LONG).unwrap();
    join_ok(&p, "child");
    assert!(one.is_empty().unwrap());
}

fn joinable_queue_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let q = mgr.joinable_queue::<u32>().unwrap();
    // join on an empty queue returns at once.
    q.join().unwrap();
    assert_err!(q.task_done(), ManagerError::TaskDoneTooMany);
    for i in 0..3 {
        q.put(i).unwrap();
    }
    assert_eq!(q.unfinished().unwrap(), 3);
    assert_eq!(q.len().unwrap(), 3);
    assert_err!(q.join_timeout(Duration::from_millis(20)), ManagerError::Timeout);
    assert_eq!(q.get().unwrap(), 0);
    // Taking does not finish a task.
    assert_eq!(q.unfinished().unwrap(), 3);
    q.task_done().unwrap();
    assert_eq!(q.unfinished().unwrap(), 2);
    // A join blocked in another thread returns once the last task is done.
    let q2 = q.clone();
    let joiner = std::thread::spawn(move || q2.join_timeout(LONG));
    assert_eq!(q.get().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
    q.task_done().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(!joiner.is_finished(), "join returned with a task unfinished");
    q.task_done().unwrap();
    joiner.join().unwrap().expect("join");
    assert_eq!(q.unfinished().unwrap(), 0);
    assert_err!(q.task_done(), ManagerError::TaskDoneTooMany);
    // A bounded one: put waits for room, not for task_done.
    let b = mgr.joinable_queue_bounded::<u8>(1).unwrap();
    b.put(1).unwrap();
    assert_err!(b.try_put(2), ManagerError::Full);
    assert_eq!(b.get().unwrap(), 1);
    b.try_put(2).unwrap();
    assert_eq!(b.unfinished().unwrap(), 2);
    assert_err!(mgr.joinable_queue_bounded::<u8>(0), ManagerError::ZeroCapacity);
}

fn value_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let v = mgr.value(7i64).unwrap();
    assert_eq!(v.get().unwrap(), 7);
    v.set(-3).unwrap();
    assert_eq!(v.get().unwrap(), -3);
    assert_eq!(v.swap(5).unwrap(), -3);
    assert_eq!(v.get().unwrap(), 5);
    let s = mgr.value(String::from("text")).unwrap();
    assert_eq!(s.swap("other".into()).unwrap(), "text");
    assert_eq!(s.get().unwrap(), "other");
    // A named value is made with the first init; later inits are ignored.
    let a = mgr.named("v").value(1.5f64).unwrap();
    let b = mgr.named("v").value(9.0f64).unwrap();
    assert_eq!(b.get().unwrap(), 1.5);
    a.set(2.5).unwrap();
    assert_eq!(b.get().unwrap(), 2.5);
    assert_eq!(b.name(), Some("v"));
}

fn event_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let e = mgr.event().unwrap();
    assert!(!e.is_set().unwrap());
    assert!(!e.wait_timeout(Duration::from_millis(20)).unwrap());
    e.set().unwrap();
    assert!(e.is_set().unwrap());
    e.wait().unwrap();
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    e.set().unwrap();
    e.clear().unwrap();
    assert!(!e.is_set().unwrap());
    e.clear().unwrap();
    // Every waiter, in other processes, wakes on one set.
    let children: Vec<_> = (0..3)
        .map(|_| {
            let e2 = e.clone();
            fork(move || assert!(e2.wait_timeout(LONG).unwrap(), "not woken"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    e.set().unwrap();
    for (i, p) in children.iter().enumerate() {
        join_ok(p, &format!("waiter {i}"));
    }
}

fn semaphore_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let s = mgr.semaphore(2).unwrap();
    assert_eq!(s.value().unwrap(), 2);
    assert!(s.try_acquire().unwrap());
    assert!(s.acquire_timeout(LONG).unwrap());
    assert!(!s.try_acquire().unwrap());
    assert!(!s.acquire_timeout(Duration::from_millis(20)).unwrap());
    assert_eq!(s.value().unwrap(), 0);
    s.release().unwrap();
    s.acquire().unwrap();
    // An unbounded semaphore goes past its initial value.
    for _ in 0..3 {
        s.release().unwrap();
    }
    assert_eq!(s.value().unwrap(), 3);
    // An acquire blocked in a child is woken by a release here.
    let z = mgr.semaphore(0).unwrap();
    let z2 = z.clone();
    let p = fork(move || assert!(z2.acquire_timeout(LONG).unwrap(), "never got the permit"));
    std::thread::sleep(Duration::from_millis(30));
    z.release().unwrap();
    join_ok(&p, "child");
    assert_eq!(z.value().unwrap(), 0);

    let b = mgr.bounded_semaphore(1).unwrap();
    assert_err!(b.release(), ManagerError::ReleasedTooManyTimes);
    assert!(b.try_acquire().unwrap());
    assert!(!b.try_acquire().unwrap());
    b.release().unwrap();
    assert_err!(b.release(), ManagerError::ReleasedTooManyTimes);
    assert_eq!(b.value().unwrap(), 1);
}

fn lock_api(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let other = Manager::connect(mgr.address(), mgr.authkey()).unwrap();
    let lock = mgr.named("l").lock().unwrap();
    let lock2 = other.named("l").lock().unwrap();
    assert!(!lock.is_locked().unwrap());
    let g = lock.lock().unwrap();
    assert!(!g.previous_owner_died());
    assert!(lock.is_locked().unwrap() && lock2.is_locked().unwrap());
    // Held: this client's other connections and other clients are refused.
    assert_err!(lock.try_lock(), ManagerError::WouldBlock);
    assert_err!(lock.lock_timeout(Duration::from_millis(20)), ManagerError::Timeout);
    assert_err!(lock2.try_lock(), ManagerError::WouldBlock);
    g.unlock().unwrap();
    let g2 = lock2.try_lock().unwrap();
    assert!(!g2.previous_owner_died(), "an unlock is not a death");
    assert_err!(lock.try_lock(), ManagerError::WouldBlock);
    // Dropping the guard releases.
    drop(g2);
    assert!(!lock.is_locked().unwrap());
    drop(lock.try_lock().unwrap());
    // A lock blocked in another thread gets it when the holder lets go.
    let g = lock.lock().unwrap();
    let lock3 = lock2.clone();
    let waiter = std::thread::spawn(move || {
        let g = lock3.lock_timeout(LONG)?;
        let died = g.previous_owner_died();
        g.unlock()?;
        Ok::<bool, ManagerError>(died)
    });
    std::thread::sleep(Duration::from_millis(30));
    assert!(!waiter.is_finished(), "locked while held");
    drop(g);
    assert!(!waiter.join().unwrap().unwrap());
    // Anonymous locks are independent of each other.
    let a = mgr.lock().unwrap();
    let b = mgr.lock().unwrap();
    let ga = a.lock().unwrap();
    drop(b.try_lock().unwrap());
    drop(ga);
}

/// Named objects are the same object for two clients that share nothing but the address
/// and key; names and kinds are checked.
fn named_objects(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let c1 = Manager::connect(mgr.address(), mgr.authkey()).unwrap();
    let c2 = Manager::connect(mgr.address().to_string(), mgr.authkey()).unwrap();
    assert_err!(c2.named("q").open_queue::<u8>(), ManagerError::NoSuchObject(_));
    assert_err!(c2.named("d").open_dict::<u8, u8>(), ManagerError::NoSuchObject(_));
    let d1 = c1.named("d").dict::<String, u32>().unwrap();
    d1.insert("from c1", 1).unwrap();
    let d2 = c2.named("d").open_dict::<String, u32>().unwrap();
    assert_eq!(d2.name(), Some("d"));
    assert_eq!(d2.get("from c1").unwrap(), Some(1));
    c2.named("d").dict::<String, u32>().unwrap().insert("from c2", 2).unwrap();
    assert_eq!(d1.keys().unwrap(), ["from c1", "from c2"]);
    let q1 = c1.named("q").queue::<u8>().unwrap();
    let q2 = c2.named("q").open_queue::<u8>().unwrap();
    q1.put(5).unwrap();
    assert_eq!(q2.get().unwrap(), 5);
    c2.named("l").list::<u8>().unwrap().push(1).unwrap();
    assert_eq!(c1.named("l").list::<u8>().unwrap().snapshot().unwrap(), [1]);
    c1.named("e").event().unwrap().set().unwrap();
    assert!(c2.named("e").event().unwrap().is_set().unwrap());
    assert!(c1.named("s").semaphore(1).unwrap().try_acquire().unwrap());
    assert!(!c2.named("s").semaphore(1).unwrap().try_acquire().unwrap());
    let jq = c1.named("jq").joinable_queue::<u8>().unwrap();
    jq.put(1).unwrap();
    assert_eq!(c2.named("jq").joinable_queue::<u8>().unwrap().unfinished().unwrap(), 1);

    // A name of another kind, for every kind.
    let wrong = |e: ManagerError, expected: ObjectKind| match e {
        ManagerError::WrongKind { expected: x, found: ObjectKind::Dict } if x == expected => {}
        e => panic!("expected WrongKind {{ {expected}, Dict }}, got {e:?}"),
    };
    wrong(c2.named("d").list::<u8>().unwrap_err(), ObjectKind::List);
    wrong(c2.named("d").queue::<u8>().unwrap_err(), ObjectKind::Queue);
    wrong(c2.named("d").queue_bounded::<u8>(3).unwrap_err(), ObjectKind::Queue);
    wrong(c2.named("d").open_queue::<u8>().unwrap_err(), ObjectKind::Queue);
    wrong(c2.named("d").joinable_queue::<u8>().unwrap_err(), ObjectKind::JoinableQueue);
    wrong(c2.named("d").value(0u8).unwrap_err(), ObjectKind::Value);
    wrong(c2.named("d").lock().unwrap_err(), ObjectKind::Lock);
    wrong(c2.named("d").event().unwrap_err(), ObjectKind::Event);
    wrong(c2.named("d").semaphore(1).unwrap_err(), ObjectKind::Semaphore);
    // A queue is not a joinable queue, nor the other way round.
    assert_err!(
        c2.named("q").joinable_queue::<u8>(),
        ManagerError::WrongKind { expected: ObjectKind::JoinableQueue, found: ObjectKind::Queue }
    );
    assert_err!(
        c2.named("jq").queue::<u8>(),
        ManagerError::WrongKind { expected: ObjectKind::Queue, found: ObjectKind::JoinableQueue }
    );
    assert_err!(
        c2.named("q").open_dict::<u8, u8>(),
        ManagerError::WrongKind { expected: ObjectKind::Dict, found: ObjectKind::Queue }
    );
    // Names: 1 to 256 bytes, any UTF-8.
    assert_err!(c1.named("").dict::<u8, u8>(), ManagerError::BadName(_));
    assert_err!(c1.named(&"x".repeat(257)).queue::<u8>(), ManagerError::BadName(_));
    assert_err!(c1.named("").open_queue::<u8>(), ManagerError::BadName(_));
    let long = "é".repeat(128);
    c1.named(&long).value(3u8).unwrap();
    assert_eq!(c2.named(&long).value(0u8).unwrap().get().unwrap(), 3);
    c1.named("with space/and\0nul").event().unwrap().set().unwrap();
    assert!(c2.named("with space/and\0nul").event().unwrap().is_set().unwrap());
}

/// `forget` drops the name, not the object: proxies already made keep working, the name can
/// be made again as a new object.
fn forget(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let other = Manager::connect(mgr.address(), mgr.authkey()).unwrap();
    let old = mgr.named("f").dict::<u8, u8>().unwrap();
    old.insert(1, 1).unwrap();
    let old_other = other.named("f").open_dict::<u8, u8>().unwrap();
    assert!(mgr.forget("f").unwrap());
    assert!(!other.forget("f").unwrap());
    assert!(!mgr.forget("never").unwrap());
    assert_err!(other.named("f").open_dict::<u8, u8>(), ManagerError::NoSuchObject(_));
    // The proxies made before still reach the old object.
    assert_eq!(old.get(&1).unwrap(), Some(1));
    old_other.insert(2, 2).unwrap();
    assert_eq!(old.len().unwrap(), 2);
    // The name is free: a new object, of any kind.
    let new = other.named("f").dict::<u8, u8>().unwrap();
    assert!(new.is_empty().unwrap());
    new.insert(3, 3).unwrap();
    assert_eq!(old.get(&3).unwrap(), None);
    assert!(mgr.forget("f").unwrap());
    let q = mgr.named("f").queue::<u8>().unwrap();
    q.put(1).unwrap();
    assert_eq!(other.named("f").open_queue::<u8>().unwrap().get().unwrap(), 1);
}

/// A stored value read through a proxy of another type is `Decode`, not a panic or garbage.
fn typed_decode_mismatch(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    // A u64 read as a String: the length prefix claims more bytes than there are.
    let dq = mgr.named("m1").dict::<String, u64>().unwrap();
    dq.insert("k", 5).unwrap();
    let ds = mgr.named("m1").dict::<String, String>().unwrap();
    assert_err!(ds.get("k"), ManagerError::Decode(_));
    assert_err!(ds.values(), ManagerError::Decode(_));
    assert_err!(ds.items(), ManagerError::Decode(_));
    // A string read as a bool.
    let v = mgr.named("m2").value(String::from("hello")).unwrap();
    assert_err!(mgr.named("m2").value(false).unwrap().get(), ManagerError::Decode(_));
    // A String read as a u64: the bytes are a length and text, not one varint.
    let ds = mgr.named("m3").dict::<String, String>().unwrap();
    ds.insert("k", "hello".into()).unwrap();
    let dq = mgr.named("m3").dict::<String, u64>().unwrap();
    assert_err!(dq.get("k"), ManagerError::Decode(_));
    // A failed decode leaves the object and the connection as they were.
    assert_eq!(ds.get("k").unwrap().as_deref(), Some("hello"));
    assert_eq!(v.get().unwrap(), "hello");
    mgr.ping().unwrap();
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<f32>,
    kind: JobKind,
    parent: Option<Box<Job>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
enum JobKind {
    Fetch { url: String },
    Sleep(u32),
    Stop,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Key {
    shard: u16,
    name: String,
}

fn job(id: u64) -> Job {
    Job {
        id,
        name: format!("job-{id}"),
        weights: vec![0.5; id as usize % 4],
        kind: match id % 3 {
            0 => JobKind::Fetch { url: format!("https://example.com/{id}") },
            1 => JobKind::Sleep(id as u32),
            _ => JobKind::Stop,
        },
        parent: (id > 0).then(|| Box::new(job(id - 1))),
    }
}

/// Serde structs and enums as values, keys, list items and queue items, across a process.
fn serde_structs(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let v = mgr.value(job(3)).unwrap();
    assert_eq!(v.get().unwrap(), job(3));
    assert_eq!(v.swap(job(4)).unwrap(), job(3));
    let d = mgr.dict::<Key, Job>().unwrap();
    let key = |i: u16| Key { shard: i % 2, name: format!("k{i}") };
    for i in 0..5 {
        d.insert(key(i), job(u64::from(i))).unwrap();
    }
    assert_eq!(d.get(&key(2)).unwrap(), Some(job(2)));
    assert!(d.contains_key(&key(4)).unwrap());
    assert_eq!(d.keys().unwrap(), (0..5).map(key).collect::<Vec<_>>());
    let l = mgr.list_from([JobKind::Stop, JobKind::Sleep(1)]).unwrap();
    l.push(JobKind::Fetch { url: "u".into() }).unwrap();
    assert_eq!(l.get(2).unwrap(), JobKind::Fetch { url: "u".into() });
    // A child takes jobs and sends back their parents.
    let (jobs, back) = (mgr.queue::<Job>().unwrap(), mgr.queue::<Option<Job>>().unwrap());
    let (jobs2, back2, d2) = (jobs.clone(), back.clone(), d.clone());
    let p = fork(move || {
        for _ in 0..5 {
            let j = jobs2.get_timeout(LONG).unwrap();
            back2.put(j.parent.map(|b| *b)).unwrap();
        }
        d2.insert(Key { shard: 9, name: "child".into() }, job(0)).unwrap();
    });
    for i in 0..5 {
        jobs.put(job(i)).unwrap();
    }
    for i in 0..5u64 {
        assert_eq!(back.get_timeout(LONG).unwrap(), i.checked_sub(1).map(job));
    }
    join_ok(&p, "child");
    assert_eq!(d.get(&Key { shard: 9, name: "child".into() }).unwrap(), Some(job(0)));
}

// ---------------------------------------------------------------------------------------------
// 5. Forked children and inherited proxies
// ---------------------------------------------------------------------------------------------

/// A child uses proxies made by its parent: its calls go through connections of its own, so
/// the parent's calls (even while the child is blocked in a `get`) and the parent's
/// connections after the child exits keep working. Twice, so that a second child finds
/// everything as the first left it.
fn child_uses_inherited_proxies(t: Transport) {
    let _w = watchdog(60);
    let mgr = start(t);
    let d = mgr.dict::<String, u64>().unwrap();
    let l = mgr.list::<u64>().unwrap();
    let q = mgr.queue::<u64>().unwrap();
    let back = mgr.queue::<u64>().unwrap();
    let v = mgr.value(0u64).unwrap();
    let e = mgr.event().unwrap();
    d.insert("parent", 1).unwrap();
    mgr.ping().unwrap();
    for round in 0..2u64 {
        let (d2, l2, q2, back2, v2, e2) =
            (d.clone(), l.clone(), q.clone(), back.clone(), v.clone(), e.clone());
        let client = mgr.client().clone();
        let p = fork(move || {
            client.ping().unwrap();
            assert_eq!(d2.get("parent").unwrap(), Some(1));
            d2.insert(format!("child{round}"), round).unwrap();
            l2.push(round).unwrap();
            e2.set().unwrap();
            let x = q2.get_timeout(LONG).unwrap();
            back2.put(x * 2).unwrap();
            v2.set(v2.get().unwrap() + 1).unwrap();
        });
        assert!(e.wait_timeout(LONG).unwrap());
        e.clear().unwrap();
        mgr.ping().unwrap();
        assert!(d.contains_key(&format!("child{round}")).unwrap());
        q.put(21 + round).unwrap();
        assert_eq!(back.get_timeout(LONG).unwrap(), (21 + round) * 2);
        join_ok(&p, &format!("child {round}"));
        // The child's exit closed only its own connections; the unnamed objects the child
        // used live on with the parent's.
        mgr.ping().unwrap();
        assert_eq!(d.len().unwrap() as u64, round + 2);
        assert_eq!(l.snapshot().unwrap(), (0..=round).collect::<Vec<_>>());
        assert_eq!(v.get().unwrap(), round + 1);
        assert!(q.is_empty().unwrap() && back.is_empty().unwrap());
    }
    mgr.shutdown().unwrap();
}

/// A forked child's copy of a held lock guard is not the lock: dropping it releases nothing,
/// the child cannot take the lock, and the parent still holds and releases it.
fn child_copy_of_lock_guard(t: Transport) {
    let _w = watchdog(30);
    let mgr = start(t);
    let other = Manager::connect(mgr.address(), mgr.authkey()).unwrap();
    // 'static so the guard can sit in a slot the child reaches.
    let lock: &'static LockProxy = Box::leak(Box::new(mgr.named("l").lock().unwrap()));
    let slot: Arc<Mutex<Option<LockProxyGuard<'static>>>> = Arc::new(Mutex::new(Some(lock.lock().unwrap())));
    let child_slot = slot.clone();
    let p = fork(move || {
        drop(child_slot.lock().unwrap().take().expect("the inherited guard"));
        assert_err!(lock.try_lock(), ManagerError::WouldBlock);
    });
    join_ok(&p, "child");
    let lock2 = other.named("l").lock().unwrap();
    assert_err!(lock2.try_lock(), ManagerError::WouldBlock);
    let g = slot.lock().unwrap().take().expect("the parent's guard");
    g.unlock().unwrap();
    let g2 = lock2.try_lock().unwrap();
    assert!(!g2.previous_owner_died());
}

/// The only proxy moved into a forked child's closure: the parent's copy goes right after
/// the fork, before the child has taken its own reference; its release waits until the
/// child has ended, so the child finds the object (it found it gone before).
fn proxy_moved_into_a_child(t: Transport) {
    let _w = watchdog(60);
    let mgr = start(t);
    let base = mgr.server_stats().unwrap().objects;
    for n in 0..10u32 {
        let d = mgr.dict::<u32, u32>().unwrap();
        let child = fork(move || {
            d.insert(n, n).unwrap();
            assert_eq!(d.get(&n).unwrap(), Some(n));
        });
        join_ok(&child, "child with the only proxy");
        // Joined: the parent's deferred release ran, and the child's reference went with
        // its connection (seen by the server a moment later).
        common::wait_for("the moved dict to go", 20, || mgr.server_stats().unwrap().objects == base);
    }
}

/// Forks while other threads are mid-call on the same client (its home connection and its
/// pool in use): each child makes objects and calls through inherited proxies at once.
/// The client's locks are never held across a call, so no child inherits one locked.
fn fork_while_threads_are_mid_call(t: Transport) {
    let _w = watchdog(120);
    let mgr = start(t);
    let c = mgr.client().clone();
    let d = c.dict::<u32, u32>().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..3u32)
        .map(|k| {
            let (c, d, stop) = (c.clone(), d.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    d.insert(k, i).unwrap(); // quick calls: on the home connection when free
                    drop(c.list::<u8>().unwrap()); // create and release: always home
                    i += 1;
                }
            })
        })
        .collect();
    for n in 0..20u32 {
        let (c2, d2) = (c.clone(), d.clone());
        let child = fork(move || {
            d2.insert(100 + n, n).unwrap();
            let mine = c2.dict::<u32, u32>().unwrap();
            mine.insert(0u32, n).unwrap();
            assert_eq!(d2.get(&(100 + n)).unwrap(), Some(n));
        });
        join_ok(&child, "child forked mid-call");
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    assert_eq!((100..120u32).filter(|k| d.contains_key(k).unwrap()).count(), 20);
}

/// A forked child dropping its copy of the `ManagerHandle` neither stops the server nor
/// removes its socket; the parent's handle shuts it down later.
fn child_drops_copy_of_handle(t: Transport) {
    let _w = watchdog(30);
    let slot = Arc::new(Mutex::new(Some(start(t))));
    let (address, key, pid) = {
        let g = slot.lock().unwrap();
        let mgr = g.as_ref().unwrap();
        (mgr.address().clone(), mgr.authkey().to_vec(), mgr.pid())
    };
    let d = slot.lock().unwrap().as_ref().unwrap().named("d").dict::<u8, u8>().unwrap();
    let child_slot = slot.clone();
    let p = fork(move || {
        let mgr = child_slot.lock().unwrap().take().expect("the inherited handle");
        mgr.named("d").dict::<u8, u8>().unwrap().insert(1, 1).unwrap();
        drop(mgr);
    });
    join_ok(&p, "child");
    let mgr = slot.lock().unwrap().take().expect("the parent's handle");
    assert!(mgr.is_alive());
    assert_eq!(mgr.pid(), pid);
    mgr.ping().unwrap();
    assert_eq!(d.get(&1).unwrap(), Some(1));
    if let Address::Unix(path) = &address {
        assert!(path.exists(), "the socket file went with the child's copy");
    }
    Manager::connect(&address, &key).expect("a new client").ping().unwrap();
    // Also a child that drops a Client clone: nothing of the parent's closes.
    let c = mgr.client().clone();
    join_ok(&fork(move || drop(c)), "child");
    mgr.ping().unwrap();
    mgr.shutdown().unwrap();
    if let Address::Unix(path) = &address {
        assert!(!path.exists(), "the socket file outlived shutdown");
        assert!(!path.parent().unwrap().exists(), "the private directory outlived shutdown");
    }
}

/// `Manager::start` from a thread that ends before the manager is used (a pool thread, a
/// lazily initialised static): the server belongs to the process, not to the thread.
fn started_in_a_thread_that_ends(t: Transport) {
    let _w = watchdog(30);
    let mgr = std::thread::spawn(move || start(t)).join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(mgr.is_alive(), "the server process died with the thread that started it");
    mgr.ping().unwrap();
    mgr.shutdown().unwrap();
}

/// An unnamed object lives while a proxy of it does (clones share one reference); a named
/// one until it is forgotten and its last proxy goes; a forked child that used a proxy
/// holds its own reference; a client that dies gives its references back. Also: objects
/// made and dropped in a loop do not pile up (they did when objects lived as long as the
/// connection that made them).
fn object_lifetime_follows_proxies(t: Transport) {
    let _w = watchdog(60);
    let mgr = start(t);
    let c = Manager::connect(mgr.address(), mgr.authkey()).unwrap();
    let objects = || c.server_stats().unwrap().objects;
    let base = objects();
    let d = c.dict::<u8, u8>().unwrap();
    let d2 = d.clone();
    assert_eq!(objects(), base + 1);
    drop(d);
    d2.insert(1, 1).unwrap();
    assert_eq!(objects(), base + 1, "a clone keeps the object");
    // Releases are answered before the drop returns: the count is exact at once.
    drop(d2);
    assert_eq!(objects(), base, "the last proxy's drop frees the object");
    for _ in 0..200 {
        let tmp = c.dict::<u32, Vec<u8>>().unwrap();
        tmp.insert(0u32, vec![7; 4096]).unwrap();
    }
    assert_eq!(objects(), base, "200 dropped dicts left objects behind");

    // Named: outlives its proxies until forgotten, then lives while a proxy does.
    let n = c.named("kept").dict::<u8, u8>().unwrap();
    drop(n);
    assert_eq!(objects(), base + 1);
    let n = c.named("kept").dict::<u8, u8>().unwrap();
    assert!(c.forget("kept").unwrap());
    assert_eq!(objects(), base + 1, "a forgotten object lives while its proxy does");
    drop(n);
    assert_eq!(objects(), base);

    // A forked child that used the parent's proxy keeps the object after the parent drops
    // its own: it took a reference of its own on first use.
    let q = c.queue::<u32>().unwrap();
    let (to_child, from_child) = (c.queue::<u32>().unwrap(), c.queue::<u32>().unwrap());
    let (q2, to2, from2) = (q.clone(), to_child.clone(), from_child.clone());
    let child = fork(move || {
        q2.put(1).unwrap(); // first use: the child's own reference
        from2.put(0).unwrap();
        to2.get().unwrap(); // the parent has dropped its proxy of `q` by now
        q2.put(2).unwrap();
        assert_eq!(q2.len().unwrap(), 2);
    });
    from_child.get().unwrap();
    drop(q);
    to_child.put(0).unwrap();
    join_ok(&child, "child using a proxy its parent dropped");
    // The child's exit closed its connections; its references go with them.
    common::wait_for("the child's references to go", 20, || objects() == base + 2);
    drop((to_child, from_child));
    assert_eq!(objects(), base);

    // A client killed with objects: they go when the server sees its connections close.
    let (address, key) = (mgr.address().clone(), mgr.authkey().to_vec());
    let made = c.queue::<u8>().unwrap();
    let made2 = made.clone();
    let victim = fork(move || {
        let own = Manager::connect(&address, &key).unwrap();
        let keep: Vec<_> = (0..5).map(|_| own.dict::<u8, u8>().unwrap()).collect();
        made2.put(keep.len() as u8).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    });
    assert_eq!(made.get().unwrap(), 5);
    assert!(objects() >= base + 6);
    victim.kill().unwrap();
    victim.join().unwrap();
    common::wait_for("a killed client's objects to go", 20, || objects() == base + 1);
    // The victim's reference to `made` went with another of its connections (its copy of
    // the parent's client had a home connection of its own), maybe not yet seen closed.
    drop(made);
    common::wait_for("the last object to go", 20, || objects() == base);
}

/// A reply too large for the client is an error, and the object stays.
fn unnamed_object_outlives_a_too_large_reply(t: Transport) {
    let _w = watchdog(30);
    let dir = TempDir::new();
    let server =
        Manager::builder().address(bind_address(t, &dir)).authkey(b"k").max_message(1024).bind().unwrap();
    let (address, stopper) = (server.address().clone(), server.stopper());
    let thread = std::thread::spawn(move || server.serve());
    let c = Manager::connect(&address, b"k").unwrap();
    let d = c.dict::<u8, Vec<u8>>().unwrap();
    d.insert(1, vec![1; 600]).unwrap();
    d.insert(2, vec![2; 600]).unwrap();
    assert_err!(d.items(), ManagerError::TooLarge { .. });
    let len = d.len();
    stopper.stop();
    thread.join().unwrap().unwrap();
    assert_eq!(len.expect("the dict went with the connection the reply failed on"), 2);
}

// ---------------------------------------------------------------------------------------------
// 6. Servers in this process and in forked ones
// ---------------------------------------------------------------------------------------------

/// `Manager::serve` in a thread of this process until a client asks it to shut down.
#[test]
fn serve_in_a_thread_until_shutdown() {
    let _w = watchdog(30);
    let dir = TempDir::new();
    let path = dir.sock();
    let p = path.clone();
    let server = std::thread::spawn(move || Manager::serve(p.as_str(), b"thread key"));
    let c = connect_retry(&path, b"thread key");
    let d = c.named("d").dict::<String, u32>().unwrap();
    d.insert("a", 1).unwrap();
    // A forked child of the serving process is a client like any other.
    let d2 = d.clone();
    join_ok(&fork(move || assert_eq!(d2.insert("b", 2).unwrap(), None)), "child");
    assert_eq!(d.len().unwrap(), 2);
    c.shutdown_server().unwrap();
    server.join().unwrap().expect("serve");
    assert!(!std::path::Path::new(&path).exists(), "socket file left behind");
    assert!(c.ping().unwrap_err().is_disconnected());
}

/// `builder().bind()`, then `Server::serve` in a thread; `Stopper::stop` ends it, ends a
/// call blocked in it, and is idempotent.
fn bind_and_serve_in_a_thread(t: Transport) {
    let _w = watchdog(30);
    let dir = TempDir::new();
    let server: Server = Manager::builder().address(bind_address(t, &dir)).authkey(b"bound").bind().unwrap();
    let address = server.address().clone();
    match (t, &address) {
        (Transport::Unix, Address::Unix(p)) => assert_eq!(p.to_str(), Some(dir.sock().as_str())),
        (Transport::Tcp, Address::Tcp(a)) => {
            assert!(a.starts_with("127.0.0.1:") && !a.ends_with(":0"), "{a}")
        }
        (t, a) => panic!("{t:?} server at {a}"),
    }
    assert_eq!(server.authkey(), b"bound");
    let stopper = server.stopper();
    // Bound: a client can connect (the backlog) before serving starts.
    let thread = std::thread::spawn(move || server.serve());
    let c = Manager::connect(&address, b"bound").unwrap();
    let v = c.named("v").value(1u32).unwrap();
    assert_eq!(v.swap(2).unwrap(), 1);
    let q = c.queue::<u8>().unwrap();
    let q2 = q.clone();
    let blocked = std::thread::spawn(move || q2.get());
    std::thread::sleep(Duration::from_millis(50));
    stopper.stop();
    thread.join().unwrap().expect("serve");
    stopper.stop();
    assert_err!(blocked.join().unwrap(), ManagerError::Disconnected);
    assert!(v.get().unwrap_err().is_disconnected());
    if let Address::Unix(p) = &address {
        assert!(!p.exists(), "socket file left behind");
    }
}

/// `builder().bind()` here, `Server::serve` in a forked child: the child serves until a
/// client asks it to shut down.
fn bind_here_serve_in_forked_child(t: Transport) {
    let _w = watchdog(30);
    let dir = TempDir::new();
    let server = Manager::builder().address(bind_address(t, &dir)).authkey(b"forked").bind().unwrap();
    let address = server.address().clone();
    let p = fork(move || server.serve().expect("serve"));
    if let Address::Unix(path) = &address {
        assert!(path.exists(), "the socket file went with this process's copy of the server");
    }
    let c = Manager::connect(&address, b"forked").expect("connect to the forked server");
    c.named("l").list::<u8>().unwrap().extend([1, 2]).unwrap();
    let c2 = Manager::connect(&address, b"forked").unwrap();
    assert_eq!(c2.named("l").list::<u8>().unwrap().snapshot().unwrap(), [1, 2]);
    c2.shutdown_server().unwrap();
    join_ok(&p, "server");
    assert!(c.ping().unwrap_err().is_disconnected());
}

/// `Manager::serve` (bind and serve) in a forked child, reached by address and key.
#[test]
fn serve_in_a_forked_child() {
    let _w = watchdog(30);
    let dir = TempDir::new();
    let path = dir.sock();
    let p = path.clone();
    let server = fork(move || Manager::serve(p.as_str(), b"child key").expect("serve"));
    let c = connect_retry(&path, b"child key");
    assert_err!(Manager::connect(path.as_str(), b"wrong"), ManagerError::AuthenticationFailed);
    let q = c.named("q").queue::<String>().unwrap();
    q.put("x".to_string()).unwrap();
    assert_eq!(
        connect_retry(&path, b"child key").named("q").open_queue::<String>().unwrap().get().unwrap(),
        "x"
    );
    c.shutdown_server().unwrap();
    join_ok(&server, "server");
    assert!(!std::path::Path::new(&path).exists(), "socket file left behind");
}

both_transports!(
    seed_program,
    master_exec_workers,
    master_forked_workers_joinable,
    hundred_clients,
    dict_api,
    list_api,
    queue_api,
    joinable_queue_api,
    value_api,
    event_api,
    semaphore_api,
    lock_api,
    named_objects,
    forget,
    typed_decode_mismatch,
    serde_structs,
    child_uses_inherited_proxies,
    child_copy_of_lock_guard,
    child_drops_copy_of_handle,
    started_in_a_thread_that_ends,
    bind_and_serve_in_a_thread,
    bind_here_serve_in_forked_child,
    object_lifetime_follows_proxies,
    fork_while_threads_are_mid_call,
    proxy_moved_into_a_child,
    unnamed_object_outlives_a_too_large_reply,
);
