//! The server: a listener, one thread per connection, and the objects.
//!
//! Each object has its own mutex and condition variable; the registry (ids and names) has
//! one more. A connection thread never holds an object's mutex while it reads or writes
//! the socket, so a slow or dead client stalls nobody else. Blocking operations wait on the
//! object's condition variable in slices of [`SLICE`], checking between slices whether the
//! server is stopping or the client has gone.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use super::auth;
use super::net::{Address, BufStream, Listener, Stream};
use super::proto::{
    self, FrameError, Init, ObjectKind, Op, Remote, Request, Response, ServerHello, Wait, HANDSHAKE_MAX,
};
use super::ManagerError;
use crate::primitive::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How long a blocked operation sleeps between checks for a stopping server or a vanished
/// client.
const SLICE: Duration = Duration::from_millis(100);

/// How long a new connection has to pass the handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default largest message (request or response body): 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// Default most connections open at once (each has a thread).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Largest read or write buffer a connection keeps between requests.
pub(crate) const BUF_KEEP: usize = 1 << 20;

/// Most connections in the handshake at once (beyond `max_connections`).
const MAX_PENDING: usize = 64;

/// Most objects a server holds.
const MAX_OBJECTS: usize = 1 << 20;

/// Longest object name, in bytes.
pub(crate) const MAX_NAME: usize = 256;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these is a bug, but the data is still consistent enough
    // to serve: every update is a single collection operation.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum State {
    Dict(IndexMap<Vec<u8>, Vec<u8>>),
    List(Vec<Vec<u8>>),
    Queue { items: VecDeque<Vec<u8>>, maxsize: usize, unfinished: u64 },
    Value(Vec<u8>),
    Lock { owner: Option<u64>, owner_died: bool },
    Event(bool),
    Semaphore { value: u64, bound: Option<u64> },
}

struct Object {
    kind: ObjectKind,
    state: Mutex<State>,
    cond: Condvar,
}

struct Entry {
    obj: Arc<Object>,
    named: bool,
    /// References held (by proxies, through their client's connection); an unnamed object
    /// is dropped when the last goes.
    refs: u64,
}

#[derive(Default)]
struct Registry {
    objects: HashMap<u64, Entry>,
    names: HashMap<String, u64>,
    next_id: u64,
}

/// Limits and the key, fixed when the server starts.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub authkey: Vec<u8>,
    pub max_message: usize,
    pub max_connections: usize,
    /// Blocking operations never wait (the fuzz body's server).
    pub no_wait: bool,
}

pub(crate) struct Shared {
    config: Config,
    /// Random per run: see `Welcome`.
    server_id: u64,
    registry: Mutex<Registry>,
    stopping: AtomicBool,
    /// Connections still in the handshake (a count only: no ordering with other data).
    pending: AtomicUsize,
    /// A clone of every open connection's stream, to shut them down when stopping.
    conns: Mutex<HashMap<u64, Stream>>,
}

impl Shared {
    fn new(config: Config) -> Shared {
        let mut id = [0u8; 8];
        // Without randomness (getrandom failing), the pid and the time: unlikely to repeat.
        if auth::random_bytes(&mut id).is_err() {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            id = (t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
        }
        Shared {
            config,
            server_id: u64::from_le_bytes(id),
            registry: Mutex::new(Registry::default()),
            stopping: AtomicBool::new(false),
            pending: AtomicUsize::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn stop(&self) {
        // Release pairs with the Acquire loads of the waiting and accepting threads, which
        // then see everything done before the stop.
        self.stopping.store(true, Ordering::Release);
        for s in lock(&self.conns).values() {
            s.shutdown();
        }
        let objs: Vec<Arc<Object>> = lock(&self.registry).objects.values().map(|e| e.obj.clone()).collect();
        for o in objs {
            // Taking the mutex first: a waiter between its check and its wait still wakes.
            drop(lock(&o.state));
            o.cond.notify_all();
        }
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }
}

/// Stops a running [`Server`] from another thread: every connection is closed (clients get
/// `Disconnected`) and [`Server::serve`] returns.
#[derive(Clone)]
pub struct Stopper(Arc<Shared>);

impl Stopper {
    /// Stops the server (idempotent).
    pub fn stop(&self) {
        self.0.stop();
    }
}

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopper").field("stopping", &self.0.stopping()).finish()
    }
}

/// A bound manager server, not yet serving. [`serve`](Server::serve) runs it in the calling
/// thread until a client asks for shutdown or a [`Stopper`] stops it.
///
/// # Examples
/// ```
/// use shmkit::manager::{Manager, Server};
/// let server: Server = Manager::builder().address("127.0.0.1:0").authkey(b"key").bind()?;
/// let address = server.address().clone();
/// let stopper = server.stopper();
/// let t = std::thread::spawn(move || server.serve());
///
/// let client = Manager::connect(&address, b"key")?;
/// let d = client.dict::<String, u32>()?;
/// d.insert("a", 1)?;
/// assert_eq!(d.get("a")?, Some(1));
///
/// stopper.stop();
/// t.join().unwrap()?;
/// assert!(d.get("a").unwrap_err().is_disconnected());
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
pub struct Server {
    listener: Listener,
    address: Address,
    shared: Arc<Shared>,
    parent: Option<u32>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("address", &self.address).finish()
    }
}

impl Server {
    pub(crate) fn new(listener: Listener, config: Config) -> Result<Server, ManagerError> {
        let address = listener.address().map_err(ManagerError::Io)?;
        Ok(Server { listener, address, shared: Arc::new(Shared::new(config)), parent: None })
    }

    /// The address clients connect to (for TCP port 0, with the port the kernel chose).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The key clients must prove they know.
    pub fn authkey(&self) -> &[u8] {
        &self.shared.config.authkey
    }

    /// [`serve`](Self::serve) returns when process `parent` is no longer this process's
    /// parent (checked every 100 ms).
    pub(crate) fn leave_with(&mut self, parent: u32) {
        self.parent = Some(parent);
    }

    /// A handle that stops the server from another thread.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.shared.clone())
    }

    /// Accepts and serves connections until stopped; then closes every connection, waits
    /// for their threads, and (Unix) removes the socket file. (A server bound and never
    /// served leaves its socket file; the next bind of that path replaces it.)
    pub fn serve(mut self) -> Result<(), ManagerError> {
        self.listener.set_unlink_pid(std::process::id());
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let mut next_conn = 0u64;
        let result = loop {
            if self.shared.stopping() {
                break Ok(());
            }
            // SAFETY: getppid has no preconditions.
            if self.parent.is_some_and(|p| unsafe { libc::getppid() } as u32 != p) {
                break Ok(());
            }
            if !self.listener.ready(SLICE) {
                continue;
            }
            let stream = match self.listener.accept() {
                Ok(s) => s,
                Err(e) => match e.raw_os_error() {
                    // The client gave up before we took it; or out of fds for a moment.
                    Some(libc::ECONNABORTED | libc::EINTR | libc::EAGAIN | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        std::thread::sleep(SLICE);
                        continue;
                    }
                    _ => break Err(ManagerError::Io(e)),
                },
            };
            threads.retain(|t| !t.is_finished());
            next_conn += 1;
            let id = next_conn;
            {
                let mut conns = lock(&self.shared.conns);
                // Peers that have not proven the key have their own small quota, so they
                // cannot crowd out clients that have.
                let pending = self.shared.pending.load(Ordering::Relaxed);
                let authenticated = conns.len().saturating_sub(pending);
                if pending >= MAX_PENDING || authenticated >= self.shared.config.max_connections {
                    drop(conns);
                    let mut s = stream;
                    let _ = s.set_timeouts(Some(Duration::from_secs(1)));
                    let _ = proto::write_msg(&mut s, &ServerHello::Busy, HANDSHAKE_MAX, &mut Vec::new());
                    continue;
                }
                match stream.try_clone() {
                    Ok(c) => conns.insert(id, c),
                    Err(_) => continue,
                };
                self.shared.pending.fetch_add(1, Ordering::Relaxed);
            }
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("shmkit-manager-conn-{id}"))
                .stack_size(256 << 10)
                .spawn(move || {
                    Connection {
                        shared: shared.clone(),
                        id,
                        stream: BufStream::new(stream),
                        refs: HashMap::new(),
                        locks: HashSet::new(),
                    }
                    .run();
                    lock(&shared.conns).remove(&id);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => {
                    // No thread for it: the connection closes (its stream clone too).
                    let mut conns = lock(&self.shared.conns);
                    conns.remove(&id);
                    self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                }
            }
        };
        self.shared.stop();
        for t in threads {
            let _ = t.join();
        }
        result
    }
}

/// One client connection, served by its own thread.
struct Connection {
    shared: Arc<Shared>,
    id: u64,
    stream: BufStream,
    /// References this connection holds, per object: given back when it ends (a client
    /// that dies without releasing them).
    refs: HashMap<u64, u64>,
    /// Locks this connection holds: released when it ends.
    locks: HashSet<u64>,
}

/// What to undo if the response could not be delivered.
enum Undo {
    None,
    /// A queue item was taken: put it back at the front.
    Requeue(Arc<Object>, Vec<u8>),
    /// The lock was granted: release it (its holder never knew it held it).
    Unlock(u64, Arc<Object>),
    /// A semaphore permit was taken: give it back.
    Repermit(Arc<Object>),
}

impl Connection {
    fn run(mut self) {
        let max = self.shared.config.max_message;
        // The whole handshake within HANDSHAKE_TIMEOUT, however slowly the bytes come.
        let _ = self.stream.get_ref().set_timeouts(Some(HANDSHAKE_TIMEOUT));
        self.stream.set_deadline(Some(Instant::now() + HANDSHAKE_TIMEOUT));
        // A slot is taken when the key is proven, under the conns lock (the accept loop
        // counts there too), so concurrent handshakes cannot overshoot `max_connections`.
        let shared = self.shared.clone();
        let mut admitted = false;
        let admit = || {
            let conns = lock(&shared.conns);
            let pending = shared.pending.load(Ordering::Relaxed);
            if conns.len().saturating_sub(pending) < shared.config.max_connections {
                shared.pending.fetch_sub(1, Ordering::Relaxed);
                admitted = true;
            }
            admitted
        };
        let passed =
            auth::serve(&mut self.stream, &self.shared.config.authkey, max, self.shared.server_id, admit);
        self.stream.set_deadline(None);
        if !admitted {
            // Leaves both counts at once, so it never looks like an authenticated client.
            let mut conns = lock(&self.shared.conns);
            conns.remove(&self.id);
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
        }
        if passed.is_err() || self.stream.get_ref().set_timeouts(None).is_err() {
            return self.close();
        }
        self.serve_requests();
    }

    /// Answers requests until the client goes, sends something bad, or asks for shutdown.
    fn serve_requests(mut self) {
        let max = self.shared.config.max_message;
        let mut rbuf = Vec::new();
        let mut wbuf = Vec::new();
        loop {
            let (response, undo, last) = match proto::read_msg::<Request>(&mut self.stream, max, &mut rbuf) {
                Ok(Request::Shutdown) => (Response::Unit, Undo::None, true),
                Ok(req) => match self.handle(req) {
                    Ok((r, undo)) => (r, undo, false),
                    Err(Stop::Hangup) => break,
                    Err(Stop::ShuttingDown) => (Response::Err(Remote::ShuttingDown), Undo::None, true),
                },
                Err(FrameError::Io(_)) => break,
                Err(FrameError::TooLarge { len, max }) => {
                    (Response::Err(Remote::TooLarge { len, max: max as u64 }), Undo::None, true)
                }
                Err(FrameError::Malformed(why)) => (Response::Err(Remote::Malformed(why)), Undo::None, true),
            };
            let limit = max + proto::RESPONSE_SLACK;
            let written = match proto::write_msg(&mut self.stream, &response, limit, &mut wbuf) {
                // A reply too large for the client (`items()` of a huge dict): an error
                // instead; a taken queue item goes back.
                Err(FrameError::TooLarge { len, .. }) => {
                    let r = Response::Err(Remote::ReplyTooLarge { len, max: limit as u64 });
                    proto::write_msg(&mut self.stream, &r, limit, &mut wbuf).map(|_| false)
                }
                other => other.map(|_| true),
            };
            let delivered = matches!(written, Ok(true));
            if !delivered {
                self.undo(undo);
            }
            if written.is_err() {
                break;
            }
            // One huge message must not pin its buffers' memory for the connection's life.
            for b in [&mut rbuf, &mut wbuf] {
                if b.capacity() > BUF_KEEP {
                    *b = Vec::new();
                }
            }
            if last {
                if matches!(response, Response::Unit) {
                    // A shutdown request: answered, now stop everything.
                    self.shared.stop();
                }
                break;
            }
        }
        self.close();
    }

    /// Takes back what a request took whose reply did not reach the client.
    fn undo(&mut self, undo: Undo) {
        let obj = match undo {
            Undo::None => return,
            Undo::Requeue(obj, item) => {
                if let State::Queue { items, .. } = &mut *lock(&obj.state) {
                    items.push_front(item);
                }
                obj
            }
            Undo::Unlock(id, obj) => {
                if let State::Lock { owner, .. } = &mut *lock(&obj.state) {
                    if *owner == Some(self.id) {
                        *owner = None;
                    }
                }
                self.locks.remove(&id);
                obj
            }
            Undo::Repermit(obj) => {
                if let State::Semaphore { value, .. } = &mut *lock(&obj.state) {
                    *value = value.saturating_add(1);
                }
                obj
            }
        };
        obj.cond.notify_all();
    }

    /// Releases what this connection held: its locks and its references.
    fn close(self) {
        let mut reg = lock(&self.shared.registry);
        for id in &self.locks {
            if let Some(e) = reg.objects.get(id) {
                let mut st = lock(&e.obj.state);
                if let State::Lock { owner, owner_died } = &mut *st {
                    if *owner == Some(self.id) {
                        *owner = None;
                        *owner_died = true;
                    }
                }
                drop(st);
                e.obj.cond.notify_all();
            }
        }
        for (&id, &n) in &self.refs {
            unref(&mut reg, id, n);
        }
        drop(reg);
        self.stream.get_ref().shutdown();
    }

    fn handle(&mut self, req: Request) -> Result<(Response, Undo), Stop> {
        let r = match req {
            Request::Ping => Response::Unit,
            Request::Stats => {
                let connections = lock(&self.shared.conns).len() as u64;
                let reg = lock(&self.shared.registry);
                Response::Stats {
                    objects: reg.objects.len() as u64,
                    named: reg.names.len() as u64,
                    connections,
                }
            }
            Request::Shutdown => Response::Unit,
            Request::Create { kind, name, init } => self.create(kind, name, init),
            Request::Open { kind, name } => self.open(kind, &name),
            Request::Forget { name } => {
                let mut reg = lock(&self.shared.registry);
                match reg.names.remove(&name) {
                    Some(id) => {
                        if let Some(e) = reg.objects.get_mut(&id) {
                            e.named = false;
                        }
                        unref(&mut reg, id, 0);
                        Response::Bool(true)
                    }
                    None => Response::Bool(false),
                }
            }
            Request::Retain { id } => {
                let mut reg = lock(&self.shared.registry);
                match reg.objects.get_mut(&id) {
                    Some(e) => {
                        let kind = e.obj.kind;
                        take_ref(&mut self.refs, e, id);
                        Response::Object { id, kind, created: false }
                    }
                    None => Response::Err(Remote::NoSuchObject(format!("id {id}"))),
                }
            }
            Request::Release { id } => {
                // Only what this connection holds: a client cannot drop others' references.
                match self.refs.get_mut(&id) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        if *n == 0 {
                            self.refs.remove(&id);
                        }
                        unref(&mut lock(&self.shared.registry), id, 1);
                        Response::Bool(true)
                    }
                    _ => Response::Bool(false),
                }
            }
            Request::Call { id, op } => {
                let obj = match lock(&self.shared.registry).objects.get(&id) {
                    Some(e) => e.obj.clone(),
                    None => return Ok((Response::Err(Remote::NoSuchObject(format!("id {id}"))), Undo::None)),
                };
                return self.call(id, &obj, op);
            }
        };
        Ok((r, Undo::None))
    }

    fn create(&mut self, kind: ObjectKind, name: Option<String>, init: Init) -> Response {
        let state = match (kind, init) {
            (ObjectKind::Dict, Init::Empty) => State::Dict(IndexMap::new()),
            (ObjectKind::List, Init::Empty) => State::List(Vec::new()),
            (ObjectKind::List, Init::List(items)) => State::List(items),
            (ObjectKind::Queue | ObjectKind::JoinableQueue, Init::Queue { maxsize }) => State::Queue {
                items: VecDeque::new(),
                maxsize: usize::try_from(maxsize).unwrap_or(usize::MAX),
                unfinished: 0,
            },
            (ObjectKind::Value, Init::Value(v)) => State::Value(v),
            (ObjectKind::Lock, Init::Empty) => State::Lock { owner: None, owner_died: false },
            (ObjectKind::Event, Init::Empty) => State::Event(false),
            (ObjectKind::Semaphore, Init::Semaphore { value, bound }) => {
                if bound.is_some_and(|b| value > b) {
                    return Response::Err(Remote::ReleasedTooMany);
                }
                State::Semaphore { value, bound }
            }
            (kind, init) => {
                return Response::Err(Remote::BadRequest(format!("{kind} cannot start from {init:?}")))
            }
        };
        if name.as_ref().is_some_and(|n| n.is_empty() || n.len() > MAX_NAME) {
            return Response::Err(Remote::BadRequest(format!("names are 1 to {MAX_NAME} bytes")));
        }
        let mut reg = lock(&self.shared.registry);
        if let Some(n) = &name {
            if let Some(&id) = reg.names.get(n) {
                let e = reg.objects.get_mut(&id).expect("every name points at a live object");
                if e.obj.kind != kind {
                    return Response::Err(Remote::WrongKind { expected: kind, found: e.obj.kind });
                }
                take_ref(&mut self.refs, e, id);
                return Response::Object { id, kind, created: false };
            }
        }
        if reg.objects.len() >= MAX_OBJECTS {
            return Response::Err(Remote::TooManyObjects);
        }
        reg.next_id += 1;
        let id = reg.next_id;
        let obj = Arc::new(Object { kind, state: Mutex::new(state), cond: Condvar::new() });
        let mut e = Entry { obj, named: name.is_some(), refs: 0 };
        take_ref(&mut self.refs, &mut e, id);
        reg.objects.insert(id, e);
        if let Some(n) = name {
            reg.names.insert(n, id);
        }
        Response::Object { id, kind, created: true }
    }

    fn open(&mut self, kind: ObjectKind, name: &str) -> Response {
        let mut reg = lock(&self.shared.registry);
        let Some(&id) = reg.names.get(name) else {
            return Response::Err(Remote::NoSuchObject(name.to_string()));
        };
        let e = reg.objects.get_mut(&id).expect("every name points at a live object");
        if e.obj.kind != kind {
            return Response::Err(Remote::WrongKind { expected: kind, found: e.obj.kind });
        }
        take_ref(&mut self.refs, e, id);
        Response::Object { id, kind, created: false }
    }

    /// Waits (per `wait`) until `attempt` succeeds on the object's state.
    fn block<R>(
        &self,
        obj: &Object,
        wait: Wait,
        on_no: Remote,
        mut attempt: impl FnMut(&mut State) -> Option<R>,
    ) -> Result<Result<R, Remote>, Stop> {
        let wait = if self.shared.config.no_wait { Wait::No } else { wait };
        let deadline = match wait {
            Wait::Micros(us) => Some(Instant::now() + Duration::from_micros(us.min(1 << 50))),
            _ => None,
        };
        let mut st = lock(&obj.state);
        loop {
            // Before each attempt: a client that died while it waited must not take an
            // item, a permit or the lock it can no longer be told about (on TCP, writing
            // the reply to a closed peer may even succeed, so the undo would not run).
            if !self.shared.config.no_wait && self.stream.get_ref().peer_gone() {
                return Err(Stop::Hangup);
            }
            // Nor does a waiter at shutdown (a lock its holder's closing connection released).
            if self.shared.stopping() {
                return Err(Stop::ShuttingDown);
            }
            if let Some(r) = attempt(&mut st) {
                drop(st);
                obj.cond.notify_all();
                return Ok(Ok(r));
            }
            let slice = match (wait, deadline) {
                (Wait::No, _) => return Ok(Err(on_no)),
                (_, Some(d)) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Err(Remote::Timeout));
                    }
                    left.min(SLICE)
                }
                _ => SLICE,
            };
            st = obj.cond.wait_timeout(st, slice).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn call(&mut self, id: u64, obj: &Arc<Object>, op: Op) -> Result<(Response, Undo), Stop> {
        // One kind check for every operation (a joinable queue is a queue too), so the
        // arms below only see state of their kind.
        let expected = expected_kind(&op);
        let fits =
            expected == obj.kind || (expected == ObjectKind::Queue && obj.kind == ObjectKind::JoinableQueue);
        if !fits {
            return Ok((Response::Err(Remote::WrongKind { expected, found: obj.kind }), Undo::None));
        }
        let ok = |r| Ok((r, Undo::None));
        use Op::*;
        match op {
            QueuePut(item, wait) => {
                let joinable = obj.kind == ObjectKind::JoinableQueue;
                let mut item = Some(item);
                let r = self.block(obj, wait, Remote::Full, |st| match st {
                    State::Queue { items, maxsize, unfinished }
                        if *maxsize == 0 || items.len() < *maxsize =>
                    {
                        items.push_back(item.take().expect("pushed once"));
                        if joinable {
                            *unfinished += 1;
                        }
                        Some(())
                    }
                    _ => None,
                })?;
                return ok(r.map_or_else(Response::Err, |()| Response::Unit));
            }
            QueueGet(wait) => {
                let r = self.block(obj, wait, Remote::Empty, |st| match st {
                    State::Queue { items, .. } => items.pop_front(),
                    _ => None,
                })?;
                return Ok(match r {
                    Ok(item) => (Response::Item(Some(item.clone())), Undo::Requeue(obj.clone(), item)),
                    Err(e) => (Response::Err(e), Undo::None),
                });
            }
            QueueJoin(wait) => {
                let r = self.block(obj, wait, Remote::Timeout, |st| match st {
                    State::Queue { unfinished: 0, .. } => Some(()),
                    _ => None,
                })?;
                return ok(r.map_or_else(Response::Err, |()| Response::Unit));
            }
            LockAcquire(wait) => {
                let me = self.id;
                let r = self.block(obj, wait, Remote::WouldBlock, |st| match st {
                    State::Lock { owner: owner @ None, owner_died } => {
                        *owner = Some(me);
                        Some(std::mem::take(owner_died))
                    }
                    _ => None,
                })?;
                return Ok(match r {
                    Ok(owner_died) => {
                        self.locks.insert(id);
                        (Response::Acquired { owner_died }, Undo::Unlock(id, obj.clone()))
                    }
                    Err(e) => (Response::Err(e), Undo::None),
                });
            }
            EventWait(wait) => {
                let r = self
                    .block(obj, wait, Remote::Timeout, |st| matches!(st, State::Event(true)).then_some(()))?;
                return ok(Response::Bool(r.is_ok()));
            }
            SemAcquire(wait) => {
                let r = self.block(obj, wait, Remote::WouldBlock, |st| match st {
                    State::Semaphore { value, .. } if *value > 0 => {
                        *value -= 1;
                        Some(())
                    }
                    _ => None,
                })?;
                return Ok(match r {
                    Ok(()) => (Response::Bool(true), Undo::Repermit(obj.clone())),
                    Err(_) => (Response::Bool(false), Undo::None),
                });
            }
            _ => {}
        }
        // Non-blocking operations: one step under the object's mutex.
        let mut st = lock(&obj.state);
        let mut changed = true;
        let response = match (&mut *st, op) {
            (State::Dict(d), DictGet(k)) => {
                changed = false;
                Response::Item(d.get(&k).cloned())
            }
            (State::Dict(d), DictInsert(k, v)) => Response::Item(d.insert(k, v)),
            (State::Dict(d), DictRemove(k)) => Response::Item(d.shift_remove(&k)),
            (State::Dict(d), DictContains(k)) => Response::Bool(d.contains_key(&k)),
            (State::Dict(d), DictSetDefault(k, v)) => Response::Item(Some(d.entry(k).or_insert(v).clone())),
            (State::Dict(d), DictLen) => Response::Len(d.len() as u64),
            (State::Dict(d), DictKeys) => Response::Items(d.keys().cloned().collect()),
            (State::Dict(d), DictValues) => Response::Items(d.values().cloned().collect()),
            (State::Dict(d), DictItems) => {
                Response::Pairs(d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            }
            (State::Dict(d), DictUpdate(pairs)) => {
                d.extend(pairs);
                Response::Unit
            }
            (State::Dict(d), DictClear) => {
                d.clear();
                Response::Unit
            }
            (State::List(l), ListPush(v)) => {
                l.push(v);
                Response::Unit
            }
            (State::List(l), ListPop) => Response::Item(l.pop()),
            (State::List(l), ListGet(i)) => match usize::try_from(i).ok().and_then(|i| l.get(i)) {
                Some(v) => Response::Item(Some(v.clone())),
                None => Response::Err(Remote::Index { index: i, len: l.len() as u64 }),
            },
            (State::List(l), ListSet(i, v)) => match usize::try_from(i).ok().and_then(|i| l.get_mut(i)) {
                Some(slot) => Response::Item(Some(std::mem::replace(slot, v))),
                None => Response::Err(Remote::Index { index: i, len: l.len() as u64 }),
            },
            (State::List(l), ListInsert(i, v)) => match usize::try_from(i) {
                Ok(i) if i <= l.len() => {
                    l.insert(i, v);
                    Response::Unit
                }
                _ => Response::Err(Remote::Index { index: i, len: l.len() as u64 }),
            },
            (State::List(l), ListRemove(i)) => match usize::try_from(i) {
                Ok(i) if i < l.len() => Response::Item(Some(l.remove(i))),
                _ => Response::Err(Remote::Index { index: i, len: l.len() as u64 }),
            },
            (State::List(l), ListLen) => Response::Len(l.len() as u64),
            (State::List(l), ListReverse) => {
                l.reverse();
                Response::Unit
            }
            (State::List(l), ListExtend(items)) => {
                l.extend(items);
                Response::Unit
            }
            (State::List(l), ListSnapshot) => Response::Items(l.clone()),
            (State::List(l), ListClear) => {
                l.clear();
                Response::Unit
            }
            (State::Queue { items, .. }, QueueLen) => Response::Len(items.len() as u64),
            (State::Queue { unfinished, .. }, TaskDone) => {
                if *unfinished == 0 {
                    Response::Err(Remote::TaskDoneTooMany)
                } else {
                    *unfinished -= 1;
                    Response::Unit
                }
            }
            (State::Queue { unfinished, .. }, Unfinished) => Response::Len(*unfinished),
            (State::Value(v), ValueGet) => Response::Item(Some(v.clone())),
            (State::Value(v), ValueSet(n)) => {
                *v = n;
                Response::Unit
            }
            (State::Value(v), ValueSwap(n)) => Response::Item(Some(std::mem::replace(v, n))),
            (State::Lock { owner, .. }, LockRelease) => {
                if *owner == Some(self.id) {
                    *owner = None;
                    self.locks.remove(&id);
                    Response::Unit
                } else {
                    Response::Err(Remote::NotOwner)
                }
            }
            (State::Lock { owner, .. }, LockIsLocked) => {
                changed = false;
                Response::Bool(owner.is_some())
            }
            (State::Event(e), EventSet) => {
                *e = true;
                Response::Unit
            }
            (State::Event(e), EventClear) => {
                *e = false;
                Response::Unit
            }
            (State::Event(e), EventIsSet) => Response::Bool(*e),
            (State::Semaphore { value, bound }, SemRelease) => {
                if bound.is_some_and(|b| *value >= b) || *value == u64::MAX {
                    Response::Err(Remote::ReleasedTooMany)
                } else {
                    *value += 1;
                    Response::Unit
                }
            }
            (State::Semaphore { value, .. }, SemValue) => Response::Len(*value),
            // Not reached: an object's state is of its kind, checked above.
            _ => {
                drop(st);
                return Ok((Response::Err(Remote::WrongKind { expected, found: obj.kind }), Undo::None));
            }
        };
        drop(st);
        if changed {
            obj.cond.notify_all();
        }
        ok(response)
    }
}

/// One more reference to `e` (object `id`), held by the connection whose `held` this is.
fn take_ref(held: &mut HashMap<u64, u64>, e: &mut Entry, id: u64) {
    e.refs += 1;
    *held.entry(id).or_default() += 1;
}

/// Drops `n` references to object `id`; an unnamed object without references goes.
fn unref(reg: &mut Registry, id: u64, n: u64) {
    if let Some(e) = reg.objects.get_mut(&id) {
        e.refs = e.refs.saturating_sub(n);
        if e.refs == 0 && !e.named {
            reg.objects.remove(&id);
        }
    }
}

/// The kind an operation applies to (for `WrongKind`).
fn expected_kind(op: &Op) -> ObjectKind {
    use Op::*;
    match op {
        DictGet(_) | DictInsert(..) | DictRemove(_) | DictContains(_) | DictSetDefault(..) | DictLen
        | DictKeys | DictValues | DictItems | DictUpdate(_) | DictClear => ObjectKind::Dict,
        ListPush(_) | ListPop | ListGet(_) | ListSet(..) | ListInsert(..) | ListRemove(_) | ListLen
        | ListReverse | ListExtend(_) | ListSnapshot | ListClear => ObjectKind::List,
        QueuePut(..) | QueueGet(_) | QueueLen => ObjectKind::Queue,
        TaskDone | QueueJoin(_) | Unfinished => ObjectKind::JoinableQueue,
        ValueGet | ValueSet(_) | ValueSwap(_) => ObjectKind::Value,
        LockAcquire(_) | LockRelease | LockIsLocked => ObjectKind::Lock,
        EventSet | EventClear | EventIsSet | EventWait(_) => ObjectKind::Event,
        SemAcquire(_) | SemRelease | SemValue => ObjectKind::Semaphore,
    }
}

/// Why a connection stops serving in the middle of a request.
enum Stop {
    /// The client went away while we waited for it.
    Hangup,
    /// The server is stopping.
    ShuttingDown,
}

/// Fuzz body: `data` as the byte stream of an authenticated client, served by a real
/// connection handler over a socket pair (blocking operations do not wait). Must never
/// panic or hang; when the connection ends, every unnamed object it referenced is gone. Returns
/// how many replies were not errors (how deep the input got).
#[doc(hidden)]
pub fn fuzz_session(data: &[u8]) -> usize {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let config = Config { authkey: Vec::new(), max_message: 4096, max_connections: 1, no_wait: true };
    let shared = Arc::new(Shared::new(config));
    let (mut client, server) = UnixStream::pair().expect("socketpair");
    let mut reader = client.try_clone().expect("dup");
    let data = data[..data.len().min(64 << 10)].to_vec();
    let writer = std::thread::spawn(move || {
        // The server may close early (a bad frame): the rest is then refused.
        let _ = client.write_all(&data);
        let _ = client.shutdown(std::net::Shutdown::Write);
        client
    });
    let drain = std::thread::spawn(move || {
        let mut replies = Vec::new();
        let _ = reader.read_to_end(&mut replies);
        let (mut r, mut body, mut ok) = (&replies[..], Vec::new(), 0);
        while let Ok(reply) = proto::read_msg::<Response>(&mut r, usize::MAX, &mut body) {
            ok += usize::from(!matches!(reply, Response::Err(_)));
        }
        assert!(r.is_empty(), "the server wrote a reply that does not decode");
        ok
    });
    let conn = Connection {
        shared: shared.clone(),
        id: 1,
        stream: BufStream::new(Stream::Unix(server)),
        refs: HashMap::new(),
        locks: HashSet::new(),
    };
    conn.serve_requests();
    drop(writer.join().expect("writer"));
    let ok = drain.join().expect("drain");
    let reg = lock(&shared.registry);
    for (id, e) in &reg.objects {
        assert!(e.named, "unnamed object {id} outlived its only connection");
        assert_eq!(e.refs, 0, "object {id} still counts the closed connection's references");
    }
    for (name, id) in &reg.names {
        assert!(reg.objects.contains_key(id), "name {name:?} points at a dropped object");
    }
    ok
}
