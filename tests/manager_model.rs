//! Manager proxies against models (proptest): random operation sequences run on a real server
//! and on a plain model, compared after every operation.
//!
//! - `DictProxy` against a `Vec<(K, V)>` with Python's dict order (an insert of an existing key
//!   keeps its place; a removed and re-inserted key goes to the end), for `u8` and short
//!   `String` keys;
//! - `ListProxy` against a `Vec`, out-of-range indices included (`IndexOutOfRange`, no change);
//! - bounded `QueueProxy` against a `VecDeque` (`Full`, `Empty`, zero timeouts);
//! - `JoinableQueueProxy` against a `VecDeque` and an unfinished-task counter
//!   (`TaskDoneTooMany`, `join_timeout`);
//! - `SemaphoreProxy`, bounded and not, against a counter (`ReleasedTooManyTimes`).
//!
//! The per-type tests use a server in this process (`bind` + `serve` on a thread, stopped at
//! the end); one test runs every type at once on named objects, each operation through one of
//! two clients, against a forked `Manager::start` server over TCP loopback.
#![cfg(feature = "manager")]

mod common;

use std::collections::VecDeque;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::watchdog;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::de::DeserializeOwned;
use serde::Serialize;
use shmkit::manager::{
    Client, DictProxy, JoinableQueueProxy, ListProxy, Manager, ManagerError, QueueProxy, SemaphoreProxy,
    Stopper,
};

// ---------------------------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------------------------

/// A server in this process on a Unix socket in a fresh directory, served by a thread;
/// stopped (and its directory removed) by [`InProcess::stop`].
struct InProcess {
    client: Client,
    stopper: Stopper,
    thread: Option<JoinHandle<Result<(), ManagerError>>>,
    dir: PathBuf,
}

impl InProcess {
    fn start() -> InProcess {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "shmkit-model-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("mgr.sock").to_str().expect("utf-8 temp dir").to_string();
        let server = Manager::builder().address(path.as_str()).authkey(b"model").bind().expect("bind");
        let stopper = server.stopper();
        let thread = std::thread::spawn(move || server.serve());
        let client = Manager::connect(path.as_str(), b"model").expect("connect");
        InProcess { client, stopper, thread: Some(thread), dir }
    }

    /// Stops the server; every proxy reports `Disconnected` from then on.
    fn stop(mut self) {
        self.stopper.stop();
        self.thread.take().expect("serving").join().expect("server thread").expect("serve");
        assert!(self.client.ping().unwrap_err().is_disconnected());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `test` on `cases` values of `strategy` (proptest's shrinking and reporting), panicking
/// with the minimal failing input.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: Debug,
{
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{e}");
    }
}

/// The error of `r`, failing the case on `Ok`.
fn err_of<T: Debug>(r: Result<T, ManagerError>, what: &str) -> Result<ManagerError, TestCaseError> {
    match r {
        Ok(v) => Err(TestCaseError::fail(format!("{what}: expected an error, got Ok({v:?})"))),
        Err(e) => Ok(e),
    }
}

/// `r`, failing the case on `Err`.
fn ok_of<T>(r: Result<T, ManagerError>, what: &str) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what}: unexpected error {e:?}")))
}

/// An index: mostly near the list's length (in range or just past it), sometimes huge.
fn index() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0usize..10, 1 => Just(usize::MAX), 1 => any::<usize>()]
}

// ---------------------------------------------------------------------------------------------
// Dict
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum DictOp<K> {
    Insert(K, i32),
    Remove(K),
    Get(K),
    Contains(K),
    SetDefault(K, i32),
    Update(Vec<(K, i32)>),
    Clear,
    Len,
    Keys,
    Values,
}

fn dict_op<K: Clone + Debug>(key: impl Strategy<Value = K> + Clone) -> impl Strategy<Value = DictOp<K>> {
    prop_oneof![
        6 => (key.clone(), any::<i32>()).prop_map(|(k, v)| DictOp::Insert(k, v)),
        3 => key.clone().prop_map(DictOp::Remove),
        2 => key.clone().prop_map(DictOp::Get),
        1 => key.clone().prop_map(DictOp::Contains),
        2 => (key.clone(), any::<i32>()).prop_map(|(k, v)| DictOp::SetDefault(k, v)),
        1 => prop::collection::vec((key, any::<i32>()), 0..5).prop_map(DictOp::Update),
        1 => Just(DictOp::Clear),
        1 => Just(DictOp::Len),
        1 => Just(DictOp::Keys),
        1 => Just(DictOp::Values),
    ]
}

/// Python's dict: insertion-ordered; replacing a value keeps the key's place.
#[derive(Debug, Default)]
struct DictModel<K>(Vec<(K, i32)>);

impl<K: PartialEq + Clone> DictModel<K> {
    fn find(&self, k: &K) -> Option<usize> {
        self.0.iter().position(|(x, _)| x == k)
    }

    fn get(&self, k: &K) -> Option<i32> {
        self.find(k).map(|i| self.0[i].1)
    }

    fn insert(&mut self, k: K, v: i32) -> Option<i32> {
        match self.find(&k) {
            Some(i) => Some(std::mem::replace(&mut self.0[i].1, v)),
            None => {
                self.0.push((k, v));
                None
            }
        }
    }

    fn remove(&mut self, k: &K) -> Option<i32> {
        self.find(k).map(|i| self.0.remove(i).1)
    }
}

trait Key: Clone + Debug + PartialEq + Serialize + DeserializeOwned {}
impl<K: Clone + Debug + PartialEq + Serialize + DeserializeOwned> Key for K {}

fn dict_step<K: Key>(
    d: &DictProxy<K, i32>,
    model: &mut DictModel<K>,
    op: &DictOp<K>,
) -> Result<(), TestCaseError> {
    match op {
        DictOp::Insert(k, v) => {
            prop_assert_eq!(ok_of(d.insert(k.clone(), *v), "insert")?, model.insert(k.clone(), *v))
        }
        DictOp::Remove(k) => prop_assert_eq!(ok_of(d.remove(k), "remove")?, model.remove(k)),
        DictOp::Get(k) => prop_assert_eq!(ok_of(d.get(k), "get")?, model.get(k)),
        DictOp::Contains(k) => {
            prop_assert_eq!(ok_of(d.contains_key(k), "contains_key")?, model.find(k).is_some())
        }
        DictOp::SetDefault(k, v) => {
            let want = match model.get(k) {
                Some(old) => old,
                None => {
                    model.insert(k.clone(), *v);
                    *v
                }
            };
            prop_assert_eq!(ok_of(d.get_or_insert(k.clone(), *v), "get_or_insert")?, want);
        }
        DictOp::Update(pairs) => {
            ok_of(d.update(pairs.iter().cloned()), "update")?;
            for (k, v) in pairs {
                model.insert(k.clone(), *v);
            }
        }
        DictOp::Clear => {
            ok_of(d.clear(), "clear")?;
            model.0.clear();
        }
        DictOp::Len => prop_assert_eq!(ok_of(d.is_empty(), "is_empty")?, model.0.is_empty()),
        DictOp::Keys => {
            let want: Vec<K> = model.0.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(ok_of(d.keys(), "keys")?, want);
        }
        DictOp::Values => {
            let want: Vec<i32> = model.0.iter().map(|(_, v)| *v).collect();
            prop_assert_eq!(ok_of(d.values(), "values")?, want);
        }
    }
    Ok(())
}

/// The whole dict, in order, equals the model.
fn dict_check<K: Key>(d: &DictProxy<K, i32>, model: &DictModel<K>) -> Result<(), TestCaseError> {
    prop_assert_eq!(ok_of(d.items(), "items")?, model.0.clone());
    prop_assert_eq!(ok_of(d.len(), "len")?, model.0.len());
    Ok(())
}

fn run_dict<K: Key>(d: &DictProxy<K, i32>, ops: &[DictOp<K>]) -> Result<(), TestCaseError> {
    let mut model = DictModel(Vec::new());
    dict_check(d, &model)?;
    for op in ops {
        dict_step(d, &mut model, op)?;
        dict_check(d, &model)?;
    }
    Ok(())
}

fn small_string() -> impl Strategy<Value = String> + Clone {
    "[a-c]{0,2}"
}

fn small_u8() -> impl Strategy<Value = u8> + Clone {
    prop_oneof![8 => 0u8..6, 1 => any::<u8>()]
}

#[test]
fn dict_matches_an_insertion_ordered_model() {
    let _w = watchdog(120);
    let srv = InProcess::start();
    check(128, prop::collection::vec(dict_op(small_u8()), 0..60), |ops| {
        run_dict(&srv.client.dict::<u8, i32>().unwrap(), &ops)
    });
    check(128, prop::collection::vec(dict_op(small_string()), 0..60), |ops| {
        run_dict(&srv.client.dict::<String, i32>().unwrap(), &ops)
    });
    srv.stop();
}

/// The orders `dict_matches_an_insertion_ordered_model` must get right, spelled out.
#[test]
fn dict_order_is_pythons() {
    let _w = watchdog(60);
    let srv = InProcess::start();
    let d = srv.client.dict::<String, i32>().unwrap();
    d.update([("a", 1), ("b", 2), ("c", 3)]).unwrap();
    assert_eq!(d.insert("a", 10).unwrap(), Some(1)); // replaced in place
    assert_eq!(d.keys().unwrap(), ["a", "b", "c"]);
    assert_eq!(d.remove("b").unwrap(), Some(2));
    assert_eq!(d.insert("b", 20).unwrap(), None); // back at the end
    assert_eq!(d.get_or_insert("c", 99).unwrap(), 3);
    assert_eq!(d.get_or_insert("d", 4).unwrap(), 4);
    let items: Vec<(String, i32)> = d.items().unwrap();
    let want = [("a", 10), ("c", 3), ("b", 20), ("d", 4)].map(|(k, v)| (k.to_string(), v));
    assert_eq!(items, want);
    assert_eq!(d.values().unwrap(), [10, 3, 20, 4]);
    srv.stop();
}

// ---------------------------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum ListOp {
    Push(i32),
    Pop,
    Get(usize),
    Set(usize, i32),
    Insert(usize, i32),
    Remove(usize),
    Reverse,
    Extend(Vec<i32>),
    Clear,
    Len,
    Snapshot,
}

fn list_op() -> impl Strategy<Value = ListOp> {
    prop_oneof![
        5 => any::<i32>().prop_map(ListOp::Push),
        2 => Just(ListOp::Pop),
        3 => index().prop_map(ListOp::Get),
        3 => (index(), any::<i32>()).prop_map(|(i, v)| ListOp::Set(i, v)),
        3 => (index(), any::<i32>()).prop_map(|(i, v)| ListOp::Insert(i, v)),
        3 => index().prop_map(ListOp::Remove),
        1 => Just(ListOp::Reverse),
        1 => prop::collection::vec(any::<i32>(), 0..5).prop_map(ListOp::Extend),
        1 => Just(ListOp::Clear),
        1 => Just(ListOp::Len),
        1 => Just(ListOp::Snapshot),
    ]
}

/// `r` is `IndexOutOfRange` for `index` in a list of `len`.
fn out_of_range<T: Debug>(r: Result<T, ManagerError>, index: usize, len: usize) -> Result<(), TestCaseError> {
    match err_of(r, "out-of-range index")? {
        ManagerError::IndexOutOfRange { index: i, len: n } => {
            prop_assert_eq!((i, n), (index as u64, len as u64));
        }
        e => prop_assert!(false, "expected IndexOutOfRange, got {:?}", e),
    }
    Ok(())
}

fn list_step(l: &ListProxy<i32>, model: &mut Vec<i32>, op: &ListOp) -> Result<(), TestCaseError> {
    let len = model.len();
    match *op {
        ListOp::Push(v) => {
            ok_of(l.push(v), "push")?;
            model.push(v);
        }
        ListOp::Pop => prop_assert_eq!(ok_of(l.pop(), "pop")?, model.pop()),
        ListOp::Get(i) if i < len => prop_assert_eq!(ok_of(l.get(i), "get")?, model[i]),
        ListOp::Get(i) => out_of_range(l.get(i), i, len)?,
        ListOp::Set(i, v) if i < len => {
            prop_assert_eq!(ok_of(l.set(i, v), "set")?, std::mem::replace(&mut model[i], v));
        }
        ListOp::Set(i, v) => out_of_range(l.set(i, v), i, len)?,
        ListOp::Insert(i, v) if i <= len => {
            ok_of(l.insert(i, v), "insert")?;
            model.insert(i, v);
        }
        ListOp::Insert(i, v) => out_of_range(l.insert(i, v), i, len)?,
        ListOp::Remove(i) if i < len => prop_assert_eq!(ok_of(l.remove(i), "remove")?, model.remove(i)),
        ListOp::Remove(i) => out_of_range(l.remove(i), i, len)?,
        ListOp::Reverse => {
            ok_of(l.reverse(), "reverse")?;
            model.reverse();
        }
        ListOp::Extend(ref items) => {
            ok_of(l.extend(items.iter().copied()), "extend")?;
            model.extend(items);
        }
        ListOp::Clear => {
            ok_of(l.clear(), "clear")?;
            model.clear();
        }
        ListOp::Len => prop_assert_eq!(ok_of(l.is_empty(), "is_empty")?, model.is_empty()),
        ListOp::Snapshot => prop_assert_eq!(ok_of(l.iter(), "iter")?.collect::<Vec<_>>(), model.clone()),
    }
    Ok(())
}

fn list_check(l: &ListProxy<i32>, model: &[i32]) -> Result<(), TestCaseError> {
    prop_assert_eq!(ok_of(l.snapshot(), "snapshot")?, model.to_vec());
    prop_assert_eq!(ok_of(l.len(), "len")?, model.len());
    Ok(())
}

fn run_list(l: &ListProxy<i32>, mut model: Vec<i32>, ops: &[ListOp]) -> Result<(), TestCaseError> {
    list_check(l, &model)?;
    for op in ops {
        list_step(l, &mut model, op)?;
        list_check(l, &model)?;
    }
    Ok(())
}

#[test]
fn list_matches_a_vec() {
    let _w = watchdog(120);
    let srv = InProcess::start();
    let initial = prop::collection::vec(any::<i32>(), 0..6);
    check(128, (initial, prop::collection::vec(list_op(), 0..60)), |(initial, ops)| {
        let l = if initial.is_empty() {
            srv.client.list::<i32>().unwrap()
        } else {
            srv.client.list_from(initial.iter().copied()).unwrap()
        };
        run_list(&l, initial, &ops)
    });
    srv.stop();
}

// ---------------------------------------------------------------------------------------------
// Queues
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum QueueOp {
    TryPut(i32),
    /// `put_timeout(0)`: `Timeout` when full.
    PutNow(i32),
    /// Blocking `put`, only issued when the model has room.
    Put(i32),
    TryGet,
    /// `get_timeout(0)`: `Timeout` when empty.
    GetNow,
    /// Blocking `get`, only issued when the model is not empty.
    Get,
    Len,
}

fn queue_op() -> impl Strategy<Value = QueueOp> {
    prop_oneof![
        4 => any::<i32>().prop_map(QueueOp::TryPut),
        1 => any::<i32>().prop_map(QueueOp::PutNow),
        1 => any::<i32>().prop_map(QueueOp::Put),
        4 => Just(QueueOp::TryGet),
        1 => Just(QueueOp::GetNow),
        1 => Just(QueueOp::Get),
        1 => Just(QueueOp::Len),
    ]
}

/// A FIFO of at most `maxsize` items (`None`: unbounded).
#[derive(Debug)]
struct QueueModel {
    items: VecDeque<i32>,
    maxsize: Option<usize>,
}

impl QueueModel {
    fn new(maxsize: Option<usize>) -> QueueModel {
        QueueModel { items: VecDeque::new(), maxsize }
    }

    fn room(&self) -> bool {
        self.maxsize.is_none_or(|m| self.items.len() < m)
    }
}

fn queue_step(q: &QueueProxy<i32>, model: &mut QueueModel, op: &QueueOp) -> Result<(), TestCaseError> {
    let room = model.room();
    match *op {
        QueueOp::TryPut(v) | QueueOp::PutNow(v) | QueueOp::Put(v) => {
            let r = match op {
                QueueOp::TryPut(_) => q.try_put(v),
                QueueOp::PutNow(_) => q.put_timeout(v, Duration::ZERO),
                _ if room => q.put(v),
                _ => return Ok(()),
            };
            if room {
                ok_of(r, "put")?;
                model.items.push_back(v);
            } else {
                let e = err_of(r, "put on a full queue")?;
                match op {
                    QueueOp::TryPut(_) => prop_assert!(matches!(e, ManagerError::Full), "try_put: {:?}", e),
                    _ => prop_assert!(matches!(e, ManagerError::Timeout), "put_timeout(0): {:?}", e),
                }
            }
        }
        QueueOp::TryGet | QueueOp::GetNow | QueueOp::Get => {
            let r = match op {
                QueueOp::TryGet => q.try_get(),
                QueueOp::GetNow => q.get_timeout(Duration::ZERO),
                _ if !model.items.is_empty() => q.get(),
                _ => return Ok(()),
            };
            match model.items.pop_front() {
                Some(want) => prop_assert_eq!(ok_of(r, "get")?, want),
                None => {
                    let e = err_of(r, "get on an empty queue")?;
                    match op {
                        QueueOp::TryGet => prop_assert!(matches!(e, ManagerError::Empty), "try_get: {:?}", e),
                        _ => prop_assert!(matches!(e, ManagerError::Timeout), "get_timeout(0): {:?}", e),
                    }
                }
            }
        }
        QueueOp::Len => prop_assert_eq!(ok_of(q.is_empty(), "is_empty")?, model.items.is_empty()),
    }
    Ok(())
}

fn run_queue(q: &QueueProxy<i32>, maxsize: Option<usize>, ops: &[QueueOp]) -> Result<(), TestCaseError> {
    let mut model = QueueModel::new(maxsize);
    for op in ops {
        queue_step(q, &mut model, op)?;
        prop_assert_eq!(ok_of(q.len(), "len")?, model.items.len());
    }
    // What is left comes out in order.
    while let Some(want) = model.items.pop_front() {
        prop_assert_eq!(ok_of(q.try_get(), "drain")?, want);
    }
    prop_assert!(matches!(q.try_get(), Err(ManagerError::Empty)));
    Ok(())
}

fn maxsize() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), 1usize..=6]
}

#[test]
fn bounded_queue_matches_a_fifo() {
    let _w = watchdog(120);
    let srv = InProcess::start();
    check(128, (maxsize(), prop::collection::vec(queue_op(), 0..80)), |(maxsize, ops)| {
        run_queue(&srv.client.queue_bounded::<i32>(maxsize).unwrap(), Some(maxsize), &ops)
    });
    assert!(matches!(srv.client.queue_bounded::<i32>(0), Err(ManagerError::ZeroCapacity)));
    srv.stop();
}

#[derive(Clone, Debug)]
enum JoinableOp {
    Queue(QueueOp),
    TaskDone,
    Unfinished,
    /// `join_timeout(0)`: `Ok` with no unfinished task, else `Timeout`.
    JoinNow,
    /// Blocking `join`, only issued when nothing is unfinished.
    Join,
}

fn joinable_op() -> impl Strategy<Value = JoinableOp> {
    prop_oneof![
        6 => queue_op().prop_map(JoinableOp::Queue),
        4 => Just(JoinableOp::TaskDone),
        1 => Just(JoinableOp::Unfinished),
        1 => Just(JoinableOp::JoinNow),
        1 => Just(JoinableOp::Join),
    ]
}

/// A FIFO and Python's unfinished-task count.
#[derive(Debug)]
struct JoinableModel {
    queue: QueueModel,
    unfinished: u64,
}

fn joinable_step(
    q: &JoinableQueueProxy<i32>,
    model: &mut JoinableModel,
    op: &JoinableOp,
) -> Result<(), TestCaseError> {
    match op {
        JoinableOp::Queue(op) => {
            let before = model.queue.items.len();
            queue_step(q, &mut model.queue, op)?;
            // Every item put counts; a get does not finish it.
            if model.queue.items.len() > before {
                model.unfinished += 1;
            }
        }
        JoinableOp::TaskDone => {
            let r = q.task_done();
            if model.unfinished == 0 {
                let e = err_of(r, "task_done with nothing unfinished")?;
                prop_assert!(matches!(e, ManagerError::TaskDoneTooMany), "task_done: {:?}", e);
            } else {
                ok_of(r, "task_done")?;
                model.unfinished -= 1;
            }
        }
        JoinableOp::Unfinished => {}
        JoinableOp::JoinNow => {
            let r = q.join_timeout(Duration::ZERO);
            if model.unfinished == 0 {
                ok_of(r, "join_timeout(0)")?;
            } else {
                let e = err_of(r, "join_timeout(0) with unfinished tasks")?;
                prop_assert!(matches!(e, ManagerError::Timeout), "join_timeout(0): {:?}", e);
            }
        }
        JoinableOp::Join => {
            if model.unfinished == 0 {
                ok_of(q.join(), "join")?;
            }
        }
    }
    Ok(())
}

fn run_joinable(
    q: &JoinableQueueProxy<i32>,
    maxsize: Option<usize>,
    ops: &[JoinableOp],
) -> Result<(), TestCaseError> {
    let mut model = JoinableModel { queue: QueueModel::new(maxsize), unfinished: 0 };
    for op in ops {
        joinable_step(q, &mut model, op)?;
        prop_assert_eq!(ok_of(q.unfinished(), "unfinished")?, model.unfinished);
        prop_assert_eq!(ok_of(q.len(), "len")?, model.queue.items.len());
    }
    Ok(())
}

#[test]
fn joinable_queue_counts_unfinished_tasks() {
    let _w = watchdog(120);
    let srv = InProcess::start();
    let maxsize = prop::option::weighted(0.7, maxsize());
    check(128, (maxsize, prop::collection::vec(joinable_op(), 0..80)), |(maxsize, ops)| {
        let q = match maxsize {
            Some(m) => srv.client.joinable_queue_bounded::<i32>(m).unwrap(),
            None => srv.client.joinable_queue::<i32>().unwrap(),
        };
        run_joinable(&q, maxsize, &ops)
    });
    srv.stop();
}

// ---------------------------------------------------------------------------------------------
// Semaphore
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum SemOp {
    TryAcquire,
    /// `acquire_timeout(0)`.
    AcquireNow,
    /// Blocking `acquire`, only issued when a permit is free.
    Acquire,
    Release,
    Value,
}

fn sem_op() -> impl Strategy<Value = SemOp> {
    prop_oneof![
        3 => Just(SemOp::TryAcquire),
        1 => Just(SemOp::AcquireNow),
        1 => Just(SemOp::Acquire),
        4 => Just(SemOp::Release),
        1 => Just(SemOp::Value),
    ]
}

/// Free permits, and the bound of a bounded semaphore.
#[derive(Debug)]
struct SemModel {
    value: u64,
    bound: Option<u64>,
}

fn sem_step(s: &SemaphoreProxy, model: &mut SemModel, op: &SemOp) -> Result<(), TestCaseError> {
    let free = model.value > 0;
    match op {
        SemOp::TryAcquire | SemOp::AcquireNow => {
            let got = match op {
                SemOp::TryAcquire => ok_of(s.try_acquire(), "try_acquire")?,
                _ => ok_of(s.acquire_timeout(Duration::ZERO), "acquire_timeout(0)")?,
            };
            prop_assert_eq!(got, free);
            if free {
                model.value -= 1;
            }
        }
        SemOp::Acquire => {
            if free {
                ok_of(s.acquire(), "acquire")?;
                model.value -= 1;
            }
        }
        SemOp::Release => {
            let r = s.release();
            if model.bound.is_some_and(|b| model.value >= b) {
                let e = err_of(r, "release past the bound")?;
                prop_assert!(matches!(e, ManagerError::ReleasedTooManyTimes), "release: {:?}", e);
            } else {
                ok_of(r, "release")?;
                model.value += 1;
            }
        }
        SemOp::Value => {}
    }
    Ok(())
}

fn run_sem(s: &SemaphoreProxy, mut model: SemModel, ops: &[SemOp]) -> Result<(), TestCaseError> {
    prop_assert_eq!(ok_of(s.value(), "value")?, model.value);
    for op in ops {
        sem_step(s, &mut model, op)?;
        prop_assert_eq!(ok_of(s.value(), "value")?, model.value);
    }
    Ok(())
}

#[test]
fn semaphore_matches_a_counter() {
    let _w = watchdog(120);
    let srv = InProcess::start();
    check(128, (0u64..4, any::<bool>(), prop::collection::vec(sem_op(), 0..60)), |(value, bounded, ops)| {
        let s = if bounded {
            srv.client.bounded_semaphore(value).unwrap()
        } else {
            srv.client.semaphore(value).unwrap()
        };
        run_sem(&s, SemModel { value, bound: bounded.then_some(value) }, &ops)
    });
    srv.stop();
}

// ---------------------------------------------------------------------------------------------
// Every type at once: named objects, two clients, a forked server over TCP
// ---------------------------------------------------------------------------------------------

/// One operation on one of the case's objects, through the first client's proxy or the
/// second's (`bool`).
#[derive(Clone, Debug)]
enum AnyOp {
    Dict(bool, DictOp<u8>),
    List(bool, ListOp),
    Queue(bool, QueueOp),
    Joinable(bool, JoinableOp),
    Sem(bool, SemOp),
}

fn any_op() -> impl Strategy<Value = AnyOp> {
    prop_oneof![
        (any::<bool>(), dict_op(small_u8())).prop_map(|(b, o)| AnyOp::Dict(b, o)),
        (any::<bool>(), list_op()).prop_map(|(b, o)| AnyOp::List(b, o)),
        (any::<bool>(), queue_op()).prop_map(|(b, o)| AnyOp::Queue(b, o)),
        (any::<bool>(), joinable_op()).prop_map(|(b, o)| AnyOp::Joinable(b, o)),
        (any::<bool>(), sem_op()).prop_map(|(b, o)| AnyOp::Sem(b, o)),
    ]
}

/// The same named objects as seen by one client.
struct Objects {
    dict: DictProxy<u8, i32>,
    list: ListProxy<i32>,
    queue: QueueProxy<i32>,
    joinable: JoinableQueueProxy<i32>,
    sem: SemaphoreProxy,
}

const QUEUE_MAX: usize = 3;
const PERMITS: u64 = 2;

impl Objects {
    fn named(c: &Client, case: u32) -> Result<Objects, ManagerError> {
        Ok(Objects {
            dict: c.named(&format!("dict-{case}")).dict()?,
            list: c.named(&format!("list-{case}")).list()?,
            queue: c.named(&format!("queue-{case}")).queue_bounded(QUEUE_MAX)?,
            joinable: c.named(&format!("joinable-{case}")).joinable_queue()?,
            sem: c.named(&format!("sem-{case}")).semaphore(PERMITS)?,
        })
    }
}

fn run_mixed(a: &Client, b: &Client, case: u32, ops: &[AnyOp]) -> Result<(), TestCaseError> {
    let sides = [ok_of(Objects::named(a, case), "named")?, ok_of(Objects::named(b, case), "named")?];
    let mut dict = DictModel(Vec::new());
    let mut list = Vec::new();
    let mut queue = QueueModel::new(Some(QUEUE_MAX));
    let mut joinable = JoinableModel { queue: QueueModel::new(None), unfinished: 0 };
    let mut sem = SemModel { value: PERMITS, bound: None };
    for op in ops {
        match op {
            AnyOp::Dict(s, op) => {
                let d = &sides[*s as usize].dict;
                dict_step(d, &mut dict, op)?;
                dict_check(d, &dict)?;
            }
            AnyOp::List(s, op) => {
                let l = &sides[*s as usize].list;
                list_step(l, &mut list, op)?;
                list_check(l, &list)?;
            }
            AnyOp::Queue(s, op) => {
                let q = &sides[*s as usize].queue;
                queue_step(q, &mut queue, op)?;
                prop_assert_eq!(ok_of(q.len(), "len")?, queue.items.len());
            }
            AnyOp::Joinable(s, op) => {
                let q = &sides[*s as usize].joinable;
                joinable_step(q, &mut joinable, op)?;
                prop_assert_eq!(ok_of(q.unfinished(), "unfinished")?, joinable.unfinished);
            }
            AnyOp::Sem(s, op) => {
                let sm = &sides[*s as usize].sem;
                sem_step(sm, &mut sem, op)?;
                prop_assert_eq!(ok_of(sm.value(), "value")?, sem.value);
            }
        }
    }
    // Forgetting the names leaves the objects to the proxies that use them.
    for kind in ["dict", "list", "queue", "joinable", "sem"] {
        let name = format!("{kind}-{case}");
        prop_assert!(ok_of(a.forget(&name), "forget")?, "{} was registered", name);
    }
    prop_assert_eq!(ok_of(sides[1].dict.items(), "items after forget")?, dict.0);
    prop_assert_eq!(ok_of(sides[0].list.snapshot(), "snapshot after forget")?, list);
    let gone = b.named(&format!("queue-{case}")).open_queue::<i32>();
    prop_assert!(matches!(gone, Err(ManagerError::NoSuchObject(_))), "open after forget: {:?}", gone);
    Ok(())
}

#[test]
fn every_type_through_two_clients_of_a_forked_tcp_server() {
    let _w = watchdog(120);
    let mgr = Manager::builder().address("127.0.0.1:0").start().expect("start a server process");
    let other = Manager::connect(mgr.address(), mgr.authkey()).expect("second client");
    let case = AtomicU32::new(0);
    check(48, prop::collection::vec(any_op(), 0..80), |ops| {
        run_mixed(mgr.client(), &other, case.fetch_add(1, Ordering::Relaxed), &ops)
    });
    let pid = mgr.pid();
    mgr.shutdown().expect("shutdown");
    assert!(other.ping().unwrap_err().is_disconnected(), "server {pid} still answers");
}
