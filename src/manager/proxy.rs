//! Proxies: typed handles on the server's objects. Every method is one round trip.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::primitive::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{current_pid, decode, encode, unexpected, Client, Conn};
use super::proto::{ObjectKind, Op, Request, Response, Wait};
use super::ManagerError;

/// A reference to one object of one server, shared by a proxy's clones: the server keeps
/// an unnamed object while references to it exist. The last clone's drop gives it back.
#[derive(Clone)]
pub(crate) struct ObjRef(Arc<Handle>);

pub(crate) struct Handle {
    pub client: Client,
    pub id: u64,
    pub kind: ObjectKind,
    pub name: Option<String>,
    /// The process whose home connection holds the reference (a forked child takes one of
    /// its own on first use).
    holder: AtomicU32,
}

impl std::ops::Deref for ObjRef {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if *self.holder.get_mut() == current_pid() {
            let (client, id) = (self.client.clone(), self.id);
            // Failing means the server or our connection to it is gone, and with it the
            // reference.
            let release: Box<dyn FnOnce() + Send> = Box::new(move || client.inner.release(id));
            // Moved into a forked child's closure, this is the parent's copy going right
            // after the fork: the child has not taken its own reference yet, so release
            // once it has ended.
            if let Err(release) = crate::process::defer_until_child_exits(release) {
                release();
            }
        }
    }
}

impl ObjRef {
    pub(crate) fn new(client: Client, id: u64, kind: ObjectKind, name: Option<String>) -> ObjRef {
        ObjRef(Arc::new(Handle { client, id, kind, name, holder: AtomicU32::new(current_pid()) }))
    }

    /// Makes sure this process holds a reference (after a fork, the parent's does not
    /// count for the child: it takes its own, or finds the object gone).
    pub(crate) fn hold(&self) -> Result<(), ManagerError> {
        // An atomic, not a mutex: a fork must not copy it locked. Relaxed: it only guards
        // this process's own reference count on the server (the calls order the rest).
        let pid = current_pid();
        if self.holder.load(Ordering::Relaxed) != pid {
            match self.client.inner.home_request(&Request::Retain { id: self.id })? {
                Response::Object { .. } => {
                    // Two threads of the child raced to take it: one reference is enough.
                    if self.holder.swap(pid, Ordering::Relaxed) == pid {
                        self.client.inner.release(self.id);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    fn op(&self, op: Op) -> Result<Response, ManagerError> {
        self.hold()?;
        self.client.inner.op(self.id, op)
    }

    fn unit(&self, op: Op) -> Result<(), ManagerError> {
        match self.op(op)? {
            Response::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn boolean(&self, op: Op) -> Result<bool, ManagerError> {
        match self.op(op)? {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    fn len(&self, op: Op) -> Result<u64, ManagerError> {
        match self.op(op)? {
            Response::Len(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    fn item<T: DeserializeOwned>(&self, op: Op) -> Result<Option<T>, ManagerError> {
        match self.op(op)? {
            Response::Item(Some(b)) => decode(&b).map(Some),
            Response::Item(None) => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    fn items<T: DeserializeOwned>(&self, op: Op) -> Result<Vec<T>, ManagerError> {
        match self.op(op)? {
            Response::Items(v) => v.iter().map(|b| decode(b)).collect(),
            other => Err(unexpected(other)),
        }
    }
}

impl fmt::Debug for ObjRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.kind, self.id)?;
        if let Some(n) = &self.name {
            write!(f, " {n:?}")?;
        }
        write!(f, " at {}", self.client.address())
    }
}

fn wait_for(timeout: Duration) -> Wait {
    Wait::Micros(u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX))
}

macro_rules! proxy_common {
    ($name:ident $(<$($t:ident),*>)?) => {
        impl$(<$($t),*>)? $name$(<$($t),*>)? {
            pub(crate) fn new(obj: ObjRef) -> Self {
                $name { obj $(, _t: PhantomData::<fn() -> ($($t,)*)>)? }
            }

            /// The name it is registered under, if it was got through [`Client::named`].
            pub fn name(&self) -> Option<&str> {
                self.obj.name.as_deref()
            }

            /// The client its calls go through.
            pub fn client(&self) -> &Client {
                &self.obj.client
            }
        }

        impl$(<$($t),*>)? Clone for $name$(<$($t),*>)? {
            fn clone(&self) -> Self {
                $name { obj: self.obj.clone() $(, _t: PhantomData::<fn() -> ($($t,)*)>)? }
            }
        }

        impl$(<$($t),*>)? fmt::Debug for $name$(<$($t),*>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.obj)
            }
        }
    };
}

/// A dict on the server (Python's `DictProxy`): keys and values of any serde types,
/// insertion-ordered like Python's. Keys compare by their postcard encoding.
///
/// `insert` takes `impl Into<K>` (so `&str` for `String` keys); an integer literal key
/// then needs its type (`d.insert(1u32, v)` for a `DictProxy<u32, _>`).
///
/// # Examples
/// ```
/// use shmkit::manager::{Manager, Obj};
/// let mgr = Manager::start()?;
/// let d = mgr.dict::<Obj, Obj>()?;
/// d.insert(1, "1".into())?;
/// d.insert("2", 2.into())?;
/// d.insert(0.25, Obj::None)?;
/// assert_eq!(d.get(&Obj::from("2"))?, Some(Obj::Int(2)));
/// assert_eq!(d.len()?, 3);
/// assert_eq!(d.remove(&Obj::Int(1))?, Some(Obj::from("1")));
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct DictProxy<K, V> {
    obj: ObjRef,
    _t: PhantomData<fn() -> (K, V)>,
}
proxy_common!(DictProxy<K, V>);

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The value of `key`, if any.
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: Borrow<Q>,
    {
        self.obj.item(Op::DictGet(encode(key)?))
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&self, key: impl Into<K>, value: V) -> Result<Option<V>, ManagerError> {
        self.obj.item(Op::DictInsert(encode(&key.into())?, encode(&value)?))
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>, ManagerError>
    where
        K: Borrow<Q>,
    {
        self.obj.item(Op::DictRemove(encode(key)?))
    }

    /// Whether `key` is in the dict.
    pub fn contains_key<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool, ManagerError>
    where
        K: Borrow<Q>,
    {
        self.obj.boolean(Op::DictContains(encode(key)?))
    }

    /// The value of `key`, after setting it to `default` if it had none (Python's `setdefault`).
    pub fn get_or_insert(&self, key: impl Into<K>, default: V) -> Result<V, ManagerError> {
        let v = self.obj.item(Op::DictSetDefault(encode(&key.into())?, encode(&default)?))?;
        v.ok_or_else(|| ManagerError::Protocol("setdefault returned nothing".into()))
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.len(Op::DictLen).map(|n| n as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        self.len().map(|n| n == 0)
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>, ManagerError> {
        self.obj.items(Op::DictKeys)
    }

    /// The values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>, ManagerError> {
        self.obj.items(Op::DictValues)
    }

    /// A snapshot of the entries, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>, ManagerError> {
        match self.obj.op(Op::DictItems)? {
            Response::Pairs(p) => p.iter().map(|(k, v)| Ok((decode(k)?, decode(v)?))).collect(),
            other => Err(unexpected(other)),
        }
    }

    /// Inserts every pair (one round trip).
    pub fn update<I, KK>(&self, pairs: I) -> Result<(), ManagerError>
    where
        I: IntoIterator<Item = (KK, V)>,
        KK: Into<K>,
    {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((encode(&k.into())?, encode(&v)?)))
            .collect::<Result<_, ManagerError>>()?;
        self.obj.unit(Op::DictUpdate(pairs))
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.unit(Op::DictClear)
    }
}

/// A list on the server (Python's `ListProxy`).
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let l = mgr.list_from(0..5i64)?;
/// l.reverse()?;
/// l.push(-1)?;
/// assert_eq!(l.snapshot()?, vec![4, 3, 2, 1, 0, -1]);
/// assert_eq!(l.get(0)?, 4);
/// assert!(l.get(99).is_err());
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct ListProxy<T> {
    obj: ObjRef,
    _t: PhantomData<fn() -> (T,)>,
}
proxy_common!(ListProxy<T>);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `item`.
    pub fn push(&self, item: T) -> Result<(), ManagerError> {
        self.obj.unit(Op::ListPush(encode(&item)?))
    }

    /// Removes and returns the last item.
    pub fn pop(&self) -> Result<Option<T>, ManagerError> {
        self.obj.item(Op::ListPop)
    }

    /// The item at `index` ([`ManagerError::IndexOutOfRange`] past the end).
    pub fn get(&self, index: usize) -> Result<T, ManagerError> {
        let v = self.obj.item(Op::ListGet(index as u64))?;
        v.ok_or_else(|| ManagerError::Protocol("get returned nothing".into()))
    }

    /// Replaces the item at `index`; returns the old one.
    pub fn set(&self, index: usize, item: T) -> Result<T, ManagerError> {
        let v = self.obj.item(Op::ListSet(index as u64, encode(&item)?))?;
        v.ok_or_else(|| ManagerError::Protocol("set returned nothing".into()))
    }

    /// Inserts `item` before `index` (`index == len` appends).
    pub fn insert(&self, index: usize, item: T) -> Result<(), ManagerError> {
        self.obj.unit(Op::ListInsert(index as u64, encode(&item)?))
    }

    /// Removes and returns the item at `index`.
    pub fn remove(&self, index: usize) -> Result<T, ManagerError> {
        let v = self.obj.item(Op::ListRemove(index as u64))?;
        v.ok_or_else(|| ManagerError::Protocol("remove returned nothing".into()))
    }

    /// Number of items.
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.len(Op::ListLen).map(|n| n as usize)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        self.len().map(|n| n == 0)
    }

    /// Reverses the list in place.
    pub fn reverse(&self) -> Result<(), ManagerError> {
        self.obj.unit(Op::ListReverse)
    }

    /// Appends every item (one round trip).
    pub fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<(), ManagerError> {
        let items = items.into_iter().map(|i| encode(&i)).collect::<Result<_, _>>()?;
        self.obj.unit(Op::ListExtend(items))
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.unit(Op::ListClear)
    }

    /// A copy of the whole list, taken at one instant.
    pub fn snapshot(&self) -> Result<Vec<T>, ManagerError> {
        self.obj.items(Op::ListSnapshot)
    }

    /// Iterates over a [`snapshot`](Self::snapshot).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>, ManagerError> {
        self.snapshot().map(Vec::into_iter)
    }
}

/// A FIFO queue on the server (Python's `manager.Queue()`), for any serde type. Blocking
/// calls wait on the server; a timeout is honoured there (never early) and a vanished
/// server ends them with [`ManagerError::Disconnected`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmkit::manager::{Manager, ManagerError};
/// let mgr = Manager::start()?;
/// let q = mgr.queue_bounded::<String>(1)?;
/// q.put("a".to_string())?;
/// assert!(matches!(q.try_put("b".to_string()), Err(ManagerError::Full)));
/// assert_eq!(q.get()?, "a");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(ManagerError::Timeout)));
/// # Ok::<(), ManagerError>(())
/// ```
pub struct QueueProxy<T> {
    obj: ObjRef,
    _t: PhantomData<fn() -> (T,)>,
}
proxy_common!(QueueProxy<T>);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_wait(&self, item: &T, wait: Wait) -> Result<(), ManagerError> {
        self.obj.unit(Op::QueuePut(encode(item)?, wait))
    }

    fn get_wait(&self, wait: Wait) -> Result<T, ManagerError> {
        let v = self.obj.item(Op::QueueGet(wait))?;
        v.ok_or_else(|| ManagerError::Protocol("get returned nothing".into()))
    }

    /// Puts `item`, waiting for room in a bounded queue. Pass a reference to keep the
    /// item for a retry.
    pub fn put(&self, item: impl Borrow<T>) -> Result<(), ManagerError> {
        self.put_wait(item.borrow(), Wait::Forever)
    }

    /// Puts `item` if there is room now ([`ManagerError::Full`] otherwise).
    pub fn try_put(&self, item: impl Borrow<T>) -> Result<(), ManagerError> {
        self.put_wait(item.borrow(), Wait::No)
    }

    /// Puts `item`, waiting at most `timeout` for room ([`ManagerError::Timeout`]).
    pub fn put_timeout(&self, item: impl Borrow<T>, timeout: Duration) -> Result<(), ManagerError> {
        self.put_wait(item.borrow(), wait_for(timeout))
    }

    /// Takes the oldest item, waiting for one.
    pub fn get(&self) -> Result<T, ManagerError> {
        self.get_wait(Wait::Forever)
    }

    /// Takes the oldest item if there is one ([`ManagerError::Empty`] otherwise).
    pub fn try_get(&self) -> Result<T, ManagerError> {
        self.get_wait(Wait::No)
    }

    /// Takes the oldest item, waiting at most `timeout` ([`ManagerError::Timeout`]).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, ManagerError> {
        self.get_wait(wait_for(timeout))
    }

    /// Same as [`put`](Self::put) (the shared-memory queues' name).
    pub fn send(&self, item: impl Borrow<T>) -> Result<(), ManagerError> {
        self.put(item)
    }

    /// Same as [`get`](Self::get).
    pub fn recv(&self) -> Result<T, ManagerError> {
        self.get()
    }

    /// Same as [`get_timeout`](Self::get_timeout).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, ManagerError> {
        self.get_timeout(timeout)
    }

    /// Number of items in the queue now (Python's `qsize`).
    pub fn len(&self) -> Result<usize, ManagerError> {
        self.obj.len(Op::QueueLen).map(|n| n as usize)
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> Result<bool, ManagerError> {
        self.len().map(|n| n == 0)
    }
}

/// A [`QueueProxy`] that counts unfinished tasks (Python's `manager.JoinableQueue()`):
/// every `put` adds one, every [`task_done`](Self::task_done) removes one, and
/// [`join`](Self::join) waits for none to be left.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let q = mgr.joinable_queue::<u32>()?;
/// q.put(1)?;
/// assert_eq!(q.unfinished()?, 1);
/// let job = q.get()?;
/// q.task_done()?;
/// q.join()?;
/// assert!(q.task_done().is_err()); // more task_done() calls than items
/// # let _ = job;
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct JoinableQueueProxy<T> {
    queue: QueueProxy<T>,
}

impl<T> JoinableQueueProxy<T> {
    pub(crate) fn new(obj: ObjRef) -> Self {
        JoinableQueueProxy { queue: QueueProxy::new(obj) }
    }
}

impl<T> Clone for JoinableQueueProxy<T> {
    fn clone(&self) -> Self {
        JoinableQueueProxy { queue: self.queue.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueueProxy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinableQueueProxy({:?})", self.queue.obj)
    }
}

/// `put`, `get` and the rest of the queue's methods.
impl<T> std::ops::Deref for JoinableQueueProxy<T> {
    type Target = QueueProxy<T>;
    fn deref(&self) -> &QueueProxy<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueueProxy<T> {
    /// Marks one item taken from the queue as processed
    /// ([`ManagerError::TaskDoneTooMany`] if every item already was).
    pub fn task_done(&self) -> Result<(), ManagerError> {
        self.queue.obj.unit(Op::TaskDone)
    }

    /// Waits until every item put has been marked done.
    pub fn join(&self) -> Result<(), ManagerError> {
        self.queue.obj.unit(Op::QueueJoin(Wait::Forever))
    }

    /// Waits at most `timeout` for every item to be marked done ([`ManagerError::Timeout`]).
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), ManagerError> {
        self.queue.obj.unit(Op::QueueJoin(wait_for(timeout)))
    }

    /// Items put and not yet marked done.
    pub fn unfinished(&self) -> Result<u64, ManagerError> {
        self.queue.obj.len(Op::Unfinished)
    }
}

/// A single value on the server (Python's `manager.Value`): get, set, swap.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let v = mgr.value(1.5f64)?;
/// v.set(2.5)?;
/// assert_eq!(v.swap(3.5)?, 2.5);
/// assert_eq!(v.get()?, 3.5);
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct ValueProxy<T> {
    obj: ObjRef,
    _t: PhantomData<fn() -> (T,)>,
}
proxy_common!(ValueProxy<T>);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value.
    pub fn get(&self) -> Result<T, ManagerError> {
        let v = self.obj.item(Op::ValueGet)?;
        v.ok_or_else(|| ManagerError::Protocol("value returned nothing".into()))
    }

    /// Sets the value.
    pub fn set(&self, v: T) -> Result<(), ManagerError> {
        self.obj.unit(Op::ValueSet(encode(&v)?))
    }

    /// Sets the value and returns the old one, in one step.
    pub fn swap(&self, v: T) -> Result<T, ManagerError> {
        let old = self.obj.item(Op::ValueSwap(encode(&v)?))?;
        old.ok_or_else(|| ManagerError::Protocol("swap returned nothing".into()))
    }
}

/// A lock on the server. Unlike Python's manager lock, a holder whose connection ends (the
/// process died or was killed) releases it: the next holder's guard reports
/// [`previous_owner_died`](LockProxyGuard::previous_owner_died).
///
/// A guard keeps the connection it acquired the lock on (the server knows holders by
/// connection) and releases through it when dropped.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let lock = mgr.lock()?;
/// let g = lock.lock()?;
/// assert!(lock.try_lock().is_err()); // held (by this client's other connection)
/// drop(g);
/// assert!(!lock.try_lock()?.previous_owner_died());
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct LockProxy {
    obj: ObjRef,
}
proxy_common!(LockProxy);

/// A held [`LockProxy`]; dropping it releases the lock.
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
    conn: Option<Conn>,
    /// The process that acquired it (a forked child's copy of the guard does not release).
    pid: u32,
    owner_died: bool,
}

impl LockProxy {
    fn acquire(&self, wait: Wait) -> Result<LockProxyGuard<'_>, ManagerError> {
        self.obj.hold()?;
        let inner = &self.obj.client.inner;
        let mut conn = inner.checkout()?;
        match conn.call(&Request::Call { id: self.obj.id, op: Op::LockAcquire(wait) }) {
            Ok(Response::Acquired { owner_died }) => {
                Ok(LockProxyGuard { lock: self, conn: Some(conn), pid: current_pid(), owner_died })
            }
            Ok(Response::Err(e)) => {
                if !e.closes_connection() {
                    inner.checkin(conn);
                }
                Err(e.into())
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// Takes the lock, waiting as long as it takes.
    pub fn lock(&self) -> Result<LockProxyGuard<'_>, ManagerError> {
        self.acquire(Wait::Forever)
    }

    /// Takes the lock if it is free ([`ManagerError::WouldBlock`] otherwise).
    pub fn try_lock(&self) -> Result<LockProxyGuard<'_>, ManagerError> {
        self.acquire(Wait::No)
    }

    /// Takes the lock, waiting at most `timeout` ([`ManagerError::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockProxyGuard<'_>, ManagerError> {
        self.acquire(wait_for(timeout))
    }

    /// Whether anyone holds the lock now (Python's `locked()`).
    pub fn is_locked(&self) -> Result<bool, ManagerError> {
        self.obj.boolean(Op::LockIsLocked)
    }
}

impl LockProxyGuard<'_> {
    /// Whether the previous holder's connection ended while it held the lock (the data it
    /// protects may be half-updated).
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }

    /// Releases the lock, reporting a failure (dropping the guard releases it silently).
    pub fn unlock(mut self) -> Result<(), ManagerError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), ManagerError> {
        let Some(mut conn) = self.conn.take() else { return Ok(()) };
        let inner = &self.lock.obj.client.inner;
        // A guard carried into a forked child holds the parent's connection: only the
        // parent may use it. The child just closes its copy of the socket.
        if self.pid != current_pid() {
            return Ok(());
        }
        match conn.call(&Request::Call { id: self.lock.obj.id, op: Op::LockRelease }) {
            Ok(Response::Unit) => {
                inner.checkin(conn);
                Ok(())
            }
            Ok(Response::Err(e)) => Err(e.into()),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        // Failing means the connection is gone, and with it the lock: nothing to do.
        let _ = self.release();
    }
}

impl fmt::Debug for LockProxyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockProxyGuard")
            .field("lock", &self.lock)
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

/// An event on the server (Python's `manager.Event()`).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let e = mgr.event()?;
/// assert!(!e.wait_timeout(Duration::from_millis(10))?);
/// e.set()?;
/// assert!(e.is_set()?);
/// e.wait()?;
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct EventProxy {
    obj: ObjRef,
}
proxy_common!(EventProxy);

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<(), ManagerError> {
        self.obj.unit(Op::EventSet)
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<(), ManagerError> {
        self.obj.unit(Op::EventClear)
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool, ManagerError> {
        self.obj.boolean(Op::EventIsSet)
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<(), ManagerError> {
        self.obj.boolean(Op::EventWait(Wait::Forever)).map(drop)
    }

    /// Waits at most `timeout`; whether the flag was set.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        self.obj.boolean(Op::EventWait(wait_for(timeout)))
    }
}

/// A counting semaphore on the server (Python's `manager.Semaphore()` /
/// `BoundedSemaphore()`). Permits are not owned: one a dead process took stays taken.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let s = mgr.bounded_semaphore(1)?;
/// assert!(s.try_acquire()?);
/// assert!(!s.try_acquire()?);
/// s.release()?;
/// assert!(s.release().is_err()); // past the bound
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct SemaphoreProxy {
    obj: ObjRef,
}
proxy_common!(SemaphoreProxy);

impl SemaphoreProxy {
    /// Takes a permit, waiting for one.
    pub fn acquire(&self) -> Result<(), ManagerError> {
        self.obj.boolean(Op::SemAcquire(Wait::Forever)).map(drop)
    }

    /// Takes a permit if one is free; whether it did.
    pub fn try_acquire(&self) -> Result<bool, ManagerError> {
        self.obj.boolean(Op::SemAcquire(Wait::No))
    }

    /// Takes a permit, waiting at most `timeout`; whether it did.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<bool, ManagerError> {
        self.obj.boolean(Op::SemAcquire(wait_for(timeout)))
    }

    /// Returns a permit ([`ManagerError::ReleasedTooManyTimes`] past a bounded semaphore's bound).
    pub fn release(&self) -> Result<(), ManagerError> {
        self.obj.unit(Op::SemRelease)
    }

    /// Free permits now.
    pub fn value(&self) -> Result<u64, ManagerError> {
        self.obj.len(Op::SemValue)
    }
}
