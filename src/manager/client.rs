//! The client: authenticated connections to one server, pooled per process.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, Once, RwLock, RwLockWriteGuard};
use std::time::Duration;

use crate::primitive::atomic::{AtomicU32, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::{self, HandshakeError};
use super::net::{Address, BufStream, IntoAddress, Stream};
use super::proto::{self, FrameError, Init, ObjectKind, Op, Request, Response, RESPONSE_SLACK};
use super::proxy::{
    DictProxy, EventProxy, JoinableQueueProxy, ListProxy, LockProxy, ObjRef, QueueProxy, SemaphoreProxy,
    ValueProxy,
};
use super::server::{BUF_KEEP, HANDSHAKE_TIMEOUT, MAX_NAME};
use super::ManagerError;

/// Held for reading around every use of a client's mutexes (none is held across a call);
/// a fork takes it for writing first (`pthread_atfork`), so a child never inherits one of
/// them locked by a thread it does not have.
static FORK_GUARD: RwLock<()> = RwLock::new(());

thread_local! {
    static FORK_HELD: RefCell<Option<RwLockWriteGuard<'static, ()>>> = const { RefCell::new(None) };
}

extern "C" fn before_fork() {
    let g = FORK_GUARD.write().unwrap_or_else(|p| p.into_inner());
    FORK_HELD.with(|h| *h.borrow_mut() = Some(g));
}

extern "C" fn after_fork_parent() {
    FORK_HELD.with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn after_fork_child() {
    // SAFETY: getpid has no preconditions.
    PID.store(unsafe { libc::getpid() } as u32, Ordering::Relaxed);
    // The child's only thread is the forking one: it holds the guard, and lets go.
    FORK_HELD.with(|h| drop(h.borrow_mut().take()));
}

/// This process's pid, kept by the fork handler: every call checks it (a forked child
/// must not use its parent's connections), and `getpid` is a syscall each time (it cost a
/// dict insert ~3 µs of ~14). Forks go through `fork(2)` (libc runs the handlers); a raw
/// `clone` that runs Rust code in the child without exec would keep the parent's value.
static PID: AtomicU32 = AtomicU32::new(0);

/// This process's pid (see [`PID`]).
pub(crate) fn current_pid() -> u32 {
    // Relaxed: the value is this process's own, written before any thread of it reads it
    // (at registration, or by the child handler before the child runs anything else).
    match PID.load(Ordering::Relaxed) {
        0 => std::process::id(),
        pid => pid,
    }
}

fn register_fork_guard() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        PID.store(std::process::id(), Ordering::Relaxed);
        // SAFETY: the handlers are plain functions that take and drop the guard and store
        // the pid.
        unsafe { libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child)) };
    });
}

/// Runs `f` (a short section under one of the client's mutexes; it must not nest another
/// `fork_safe` nor fork) with the fork guard held.
fn fork_safe<R>(f: impl FnOnce() -> R) -> R {
    let _g = FORK_GUARD.read().unwrap_or_else(|p| p.into_inner());
    f()
}

/// One authenticated connection.
pub(crate) struct Conn {
    stream: BufStream,
    buf: Vec<u8>,
    /// The server's message limit.
    max: usize,
    /// The server's run (see `Welcome`).
    server_id: u64,
}

impl Conn {
    fn open(address: &Address, key: &[u8]) -> Result<Conn, ManagerError> {
        let stream = Stream::connect(address).map_err(|e| ManagerError::Connect(address.clone(), e))?;
        // A server that never answers (e.g. a forked copy of a listening socket whose
        // server has stopped) must not hang the client: the server side gives 10 s too.
        stream.set_timeouts(Some(HANDSHAKE_TIMEOUT)).map_err(ManagerError::Io)?;
        let mut stream = BufStream::new(stream);
        let (max, server_id) = match auth::client(&mut stream, key) {
            Ok((max, id)) => (usize::try_from(max).unwrap_or(usize::MAX), id),
            Err(HandshakeError::BadKey) => return Err(ManagerError::AuthenticationFailed),
            Err(HandshakeError::Busy) => return Err(ManagerError::Busy),
            Err(HandshakeError::Protocol(why)) => return Err(ManagerError::Protocol(why)),
            Err(HandshakeError::Frame(FrameError::Io(e)))
                if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
            {
                return Err(ManagerError::Protocol(format!(
                    "no handshake from {address} within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            Err(HandshakeError::Frame(e)) => return Err(frame_error(e)),
        };
        stream.get_ref().set_timeouts(None).map_err(ManagerError::Io)?;
        Ok(Conn { stream, buf: Vec::new(), max, server_id })
    }

    /// One request and its response. `Err` with the connection unusable, unless the error
    /// is `TooLarge` from encoding (nothing was sent).
    pub(crate) fn call(&mut self, req: &Request) -> Result<Response, ManagerError> {
        match proto::write_msg(&mut self.stream, req, self.max, &mut self.buf) {
            Ok(()) => {}
            Err(FrameError::TooLarge { len, max }) => {
                return Err(ManagerError::TooLarge { len, max: max as u64 })
            }
            Err(e) => return Err(frame_error(e)),
        }
        // A timed call returns even if the server hangs: its reply is due by the timeout
        // (the server gives up then), so wait that long plus a grace period, then give up
        // on the connection.
        let timed = req.timeout().map(|t| t.saturating_add(REPLY_GRACE));
        if timed.is_some() && self.stream.get_ref().set_read_timeout(timed).is_err() {
            return Err(ManagerError::Disconnected);
        }
        let r = proto::read_msg::<Response>(
            &mut self.stream,
            self.max.saturating_add(RESPONSE_SLACK),
            &mut self.buf,
        );
        if timed.is_some() && r.is_ok() && self.stream.get_ref().set_read_timeout(None).is_err() {
            return Err(ManagerError::Disconnected);
        }
        if self.buf.capacity() > BUF_KEEP {
            self.buf = Vec::new();
        }
        r.map_err(|e| match e {
            FrameError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                ManagerError::Timeout
            }
            e => frame_error(e),
        })
    }
}

/// How long past a timed call's timeout a client waits for the reply of a server that may
/// hang before it gives up with [`ManagerError::Timeout`] (and drops the connection).
const REPLY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn frame_error(e: FrameError) -> ManagerError {
    match e {
        FrameError::Io(e) => match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected => ManagerError::Disconnected,
            _ => ManagerError::Io(e),
        },
        FrameError::TooLarge { len, max } => {
            ManagerError::Protocol(format!("reply of {len} bytes (limit {max})"))
        }
        FrameError::Malformed(why) => ManagerError::Protocol(why),
    }
}

/// Whether a failed call leaves the connection in step (a whole response was read, or
/// nothing was sent).
fn keeps_connection(r: &Result<Response, ManagerError>) -> bool {
    match r {
        Ok(Response::Err(e)) => !e.closes_connection(),
        Ok(_) => true,
        Err(ManagerError::TooLarge { .. }) => true,
        Err(_) => false,
    }
}

struct Idle {
    pid: u32,
    conns: Vec<Conn>,
}

pub(crate) struct Inner {
    address: Address,
    authkey: Vec<u8>,
    /// The run of the server this client connected to first.
    server_id: u64,
    idle: Mutex<Idle>,
    home: Mutex<Home>,
}

impl Inner {
    /// An idle connection of this process, or a new one. Connections inherited through
    /// `fork` are the parent's: a child never uses them (it closes its copies).
    pub(crate) fn checkout(&self) -> Result<Conn, ManagerError> {
        let pid = current_pid();
        let pooled = fork_safe(|| {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.pid != pid {
                idle.conns.clear();
                idle.pid = pid;
            }
            idle.conns.pop()
        });
        match pooled {
            Some(c) => Ok(c),
            None => self.open_conn(),
        }
    }

    /// A new connection to the same server run.
    fn open_conn(&self) -> Result<Conn, ManagerError> {
        let conn = Conn::open(&self.address, &self.authkey).map_err(|e| match e {
            // The server was there when this client connected: it is gone now.
            ManagerError::Connect(_, e)
                if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) =>
            {
                ManagerError::Disconnected
            }
            e => e,
        })?;
        // Another server at the same address (a restart): this client's objects are gone.
        if conn.server_id != self.server_id {
            return Err(ManagerError::Disconnected);
        }
        Ok(conn)
    }

    pub(crate) fn checkin(&self, conn: Conn) {
        fork_safe(|| {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            // No cap: the pool is as large as the most calls this process had in flight.
            if idle.pid == current_pid() {
                idle.conns.push(conn);
            }
        })
    }

    /// Sends `req` on a pooled connection and returns the response, remote errors turned
    /// into [`ManagerError`]s.
    pub(crate) fn request(&self, req: &Request) -> Result<Response, ManagerError> {
        // A call that cannot block or time out may use the home connection when no other
        // thread has it: a client making one call at a time then needs one connection.
        // (A blocking call there would hold up object creation and releases; one that
        // timed out would take the client's references down with the connection.)
        if req.is_quick() {
            if let Some(r) = self.with_home(HomeUse::IfFree, req) {
                return r;
            }
        }
        let mut conn = self.checkout()?;
        let r = conn.call(req);
        if keeps_connection(&r) {
            self.checkin(conn);
        }
        match r? {
            Response::Err(e) => Err(e.into()),
            ok => Ok(ok),
        }
    }

    pub(crate) fn op(&self, id: u64, op: Op) -> Result<Response, ManagerError> {
        self.request(&Request::Call { id, op })
    }

    /// Sends `req` on this process's home connection: the one that holds its references
    /// to objects (`Create`, `Open`, `Retain`, `Release` go through it, so a reference is
    /// given back on the connection that took it). It lives as long as the client; if it
    /// breaks (the server is gone, or hung past a timeout) the server drops its references.
    pub(crate) fn home_request(&self, req: &Request) -> Result<Response, ManagerError> {
        self.with_home(HomeUse::Wait, req).expect("waiting for the home connection always gets it")
    }

    /// Gives back a reference, if the home connection that holds it is still open (a
    /// broken one took its references with it; opening another just to release would
    /// only wait on a server that is gone or hung).
    pub(crate) fn release(&self, id: u64) {
        let _ = self.with_home(HomeUse::WaitIfOpen, &Request::Release { id });
    }

    /// One call on the home connection. The mutex is held only to take the connection and
    /// to put it back, never across the call: a fork while another thread is mid-call must
    /// not leave the child a mutex locked forever. `None` when `mode` says not to wait or
    /// not to open.
    fn with_home(&self, mode: HomeUse, req: &Request) -> Option<Result<Response, ManagerError>> {
        let pid = current_pid();
        let mut nap = Duration::from_micros(20);
        let taken = loop {
            let got = fork_safe(|| {
                let mut home = self.home.lock().unwrap_or_else(|p| p.into_inner());
                if home.pid != pid {
                    // A forked child: the connection, and any call in flight on it, are the
                    // parent's (dropping our copy closes only our descriptor).
                    home.conn = None;
                    home.busy = false;
                    home.pid = pid;
                }
                if home.busy {
                    return None;
                }
                home.busy = true;
                Some(home.conn.take())
            });
            match got {
                Some(taken) => break taken,
                None if mode == HomeUse::IfFree => return None,
                // Another thread's call (answered at once, or within its timeout): nap
                // outside every lock, so a fork meanwhile is not held up by this wait.
                None => {
                    std::thread::sleep(nap);
                    nap = (nap * 2).min(Duration::from_millis(5));
                }
            }
        };
        if mode != HomeUse::Wait && taken.is_none() {
            self.put_home(None);
            return None;
        }
        let mut conn = match taken {
            Some(c) => c,
            None => match self.open_conn() {
                Ok(c) => c,
                Err(e) => {
                    self.put_home(None);
                    return Some(Err(e));
                }
            },
        };
        let r = conn.call(req);
        self.put_home(keeps_connection(&r).then_some(conn));
        Some(match r {
            Ok(Response::Err(e)) => Err(e.into()),
            Ok(ok) => Ok(ok),
            Err(e) => Err(e),
        })
    }

    /// Ends a call on the home connection: puts it back (`None`: it broke; the next call
    /// opens another, and the server has dropped the references the broken one held).
    fn put_home(&self, conn: Option<Conn>) {
        fork_safe(|| {
            let mut home = self.home.lock().unwrap_or_else(|p| p.into_inner());
            if home.pid == current_pid() {
                home.conn = conn;
                home.busy = false;
            }
        })
    }
}

/// How a call takes the home connection.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HomeUse {
    /// Only if no other call has it and it is open.
    IfFree,
    /// Wait for it; open it if it is not.
    Wait,
    /// Wait for it; nothing if it is not open.
    WaitIfOpen,
}

struct Home {
    pid: u32,
    conn: Option<Conn>,
    /// A thread has the connection out for a call.
    busy: bool,
}

/// A connection to a manager server (Python's `BaseManager` after `connect()`): makes
/// objects and finds registered ones. Cheap to clone; usable from any thread (each call
/// takes a pooled connection, so a blocking `get` on one thread does not hold up another).
/// After `fork`, the child's calls open connections of its own.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?; // derefs to a Client
/// let d = mgr.dict::<String, i64>()?;
/// d.insert("x", 1)?;
/// let tasks = mgr.named("tasks").queue::<u32>()?; // the same queue for every client
/// tasks.put(7)?;
/// let other = shmkit::manager::Manager::connect(mgr.address(), mgr.authkey())?;
/// assert_eq!(other.named("tasks").queue::<u32>()?.get()?, 7);
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("address", &self.inner.address).finish_non_exhaustive()
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, ManagerError> {
    postcard::to_allocvec(v).map_err(|e| ManagerError::Encode(e.to_string()))
}

/// Decodes a stored value, which must be exactly one `T` (bytes left over mean it is of
/// another type; not every mismatch shows, e.g. a `0u64` reads as an empty `String`).
pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, ManagerError> {
    match postcard::take_from_bytes::<T>(b) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(ManagerError::Decode(format!(
            "{} of {} bytes left over: the value is of another type",
            rest.len(),
            b.len()
        ))),
        Err(e) => Err(ManagerError::Decode(e.to_string())),
    }
}

impl Client {
    /// Connects to the server at `address` and proves the key (one connection is opened
    /// now, so a wrong address or key fails here).
    pub fn connect(address: impl IntoAddress, authkey: &[u8]) -> Result<Client, ManagerError> {
        let address = address.into_address()?;
        register_fork_guard();
        let conn = Conn::open(&address, authkey)?;
        let inner = Inner {
            address,
            authkey: authkey.to_vec(),
            server_id: conn.server_id,
            idle: Mutex::new(Idle { pid: current_pid(), conns: Vec::new() }),
            home: Mutex::new(Home { pid: current_pid(), conn: Some(conn), busy: false }),
        };
        Ok(Client { inner: Arc::new(inner) })
    }

    /// The server's address.
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    /// The key this client authenticates with.
    pub fn authkey(&self) -> &[u8] {
        &self.inner.authkey
    }

    /// One round trip to the server.
    pub fn ping(&self) -> Result<(), ManagerError> {
        self.inner.request(&Request::Ping).map(drop)
    }

    /// What the server holds now.
    pub fn server_stats(&self) -> Result<ServerStats, ManagerError> {
        match self.inner.request(&Request::Stats)? {
            Response::Stats { objects, named, connections } => {
                Ok(ServerStats { objects, named, connections })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Asks the server to stop: every connection (this client's and others') is closed,
    /// blocked calls return [`ManagerError::Disconnected`], and so does every later call.
    pub fn shutdown_server(&self) -> Result<(), ManagerError> {
        // On the home connection: no new handshake to wait for if the server hangs.
        match self.inner.home_request(&Request::Shutdown) {
            Ok(_) | Err(ManagerError::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn create(&self, kind: ObjectKind, name: Option<&str>, init: Init) -> Result<ObjRef, ManagerError> {
        if let Some(n) = name {
            check_name(n)?;
        }
        let req = Request::Create { kind, name: name.map(str::to_string), init };
        self.object(kind, name, &req)
    }

    fn object(&self, kind: ObjectKind, name: Option<&str>, req: &Request) -> Result<ObjRef, ManagerError> {
        match self.inner.home_request(req)? {
            Response::Object { id, kind: k, .. } if k == kind => {
                Ok(ObjRef::new(self.clone(), id, kind, name.map(str::to_string)))
            }
            // The server made or found it, so it counts our reference: give it back.
            Response::Object { id, .. } => {
                self.inner.release(id);
                Err(ManagerError::Protocol("reply for an object of another kind".into()))
            }
            other => Err(unexpected(other)),
        }
    }

    /// A new empty dict (Python's `manager.dict()`).
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        self.create(ObjectKind::Dict, None, Init::Empty).map(DictProxy::new)
    }

    /// A new empty list.
    pub fn list<T>(&self) -> Result<ListProxy<T>, ManagerError> {
        self.create(ObjectKind::List, None, Init::Empty).map(ListProxy::new)
    }

    /// A new list holding `items` (Python's `manager.list(range(10))`).
    pub fn list_from<T: Serialize>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>, ManagerError> {
        let items = items.into_iter().map(|i| encode(&i)).collect::<Result<_, _>>()?;
        self.create(ObjectKind::List, None, Init::List(items)).map(ListProxy::new)
    }

    /// A new unbounded queue (Python's `manager.Queue()`).
    pub fn queue<T>(&self) -> Result<QueueProxy<T>, ManagerError> {
        self.create(ObjectKind::Queue, None, Init::Queue { maxsize: 0 }).map(QueueProxy::new)
    }

    /// A new queue of at most `maxsize` items (0 is [`ManagerError::ZeroCapacity`]).
    pub fn queue_bounded<T>(&self, maxsize: usize) -> Result<QueueProxy<T>, ManagerError> {
        let init = queue_init(maxsize)?;
        self.create(ObjectKind::Queue, None, init).map(QueueProxy::new)
    }

    /// A new unbounded joinable queue (`task_done` / `join`).
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>, ManagerError> {
        self.create(ObjectKind::JoinableQueue, None, Init::Queue { maxsize: 0 }).map(JoinableQueueProxy::new)
    }

    /// A new joinable queue of at most `maxsize` items.
    pub fn joinable_queue_bounded<T>(&self, maxsize: usize) -> Result<JoinableQueueProxy<T>, ManagerError> {
        let init = queue_init(maxsize)?;
        self.create(ObjectKind::JoinableQueue, None, init).map(JoinableQueueProxy::new)
    }

    /// A new value holding `init` (Python's `manager.Value(typecode, init)`).
    pub fn value<T: Serialize>(&self, init: T) -> Result<ValueProxy<T>, ManagerError> {
        let v = encode(&init)?;
        self.create(ObjectKind::Value, None, Init::Value(v)).map(ValueProxy::new)
    }

    /// A new lock, free.
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        self.create(ObjectKind::Lock, None, Init::Empty).map(LockProxy::new)
    }

    /// A new event, clear.
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        self.create(ObjectKind::Event, None, Init::Empty).map(EventProxy::new)
    }

    /// A new semaphore with `value` permits.
    pub fn semaphore(&self, value: u64) -> Result<SemaphoreProxy, ManagerError> {
        self.create(ObjectKind::Semaphore, None, Init::Semaphore { value, bound: None })
            .map(SemaphoreProxy::new)
    }

    /// A new bounded semaphore: releasing past `value` is [`ManagerError::ReleasedTooManyTimes`].
    pub fn bounded_semaphore(&self, value: u64) -> Result<SemaphoreProxy, ManagerError> {
        let init = Init::Semaphore { value, bound: Some(value) };
        self.create(ObjectKind::Semaphore, None, init).map(SemaphoreProxy::new)
    }

    /// Objects registered under `name`, shared by every client of the server: each method
    /// returns the object of that name if there is one (of that kind; another kind is
    /// [`ManagerError::WrongKind`]), or makes and registers it. The master/worker pattern:
    /// every side calls `client.named("tasks").queue()`.
    ///
    /// Names are 1 to 256 bytes. A registered object lives until the server stops or
    /// [`forget`](Client::forget) drops the name.
    pub fn named<'a>(&'a self, name: &'a str) -> Named<'a> {
        Named { client: self, name }
    }

    /// Drops the registration of `name` (the object itself lives on while clients use it).
    /// Whether there was one.
    pub fn forget(&self, name: &str) -> Result<bool, ManagerError> {
        match self.inner.request(&Request::Forget { name: name.to_string() })? {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }
}

fn queue_init(maxsize: usize) -> Result<Init, ManagerError> {
    if maxsize == 0 {
        return Err(ManagerError::ZeroCapacity);
    }
    Ok(Init::Queue { maxsize: maxsize as u64 })
}

fn check_name(n: &str) -> Result<(), ManagerError> {
    if n.is_empty() || n.len() > MAX_NAME {
        return Err(ManagerError::BadName(format!("{n:?}: names are 1 to {MAX_NAME} bytes")));
    }
    Ok(())
}

pub(crate) fn unexpected(r: Response) -> ManagerError {
    ManagerError::Protocol(format!("unexpected reply {r:?}"))
}

/// Counts of what a server holds ([`Client::server_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Objects alive (named or referenced by a proxy somewhere).
    pub objects: u64,
    /// Names registered.
    pub named: u64,
    /// Connections open (each client has one to hold its references, plus one per call
    /// it had in flight at once).
    pub connections: u64,
}

/// Registered objects: see [`Client::named`].
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    client: &'a Client,
    name: &'a str,
}

impl Named<'_> {
    fn get(&self, kind: ObjectKind, init: Init) -> Result<ObjRef, ManagerError> {
        self.client.create(kind, Some(self.name), init)
    }

    /// The object registered under this name, which must exist (no creation):
    /// [`ManagerError::NoSuchObject`] otherwise.
    fn open(&self, kind: ObjectKind) -> Result<ObjRef, ManagerError> {
        check_name(self.name)?;
        let req = Request::Open { kind, name: self.name.to_string() };
        self.client.object(kind, Some(self.name), &req)
    }

    /// The dict of this name.
    pub fn dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        self.get(ObjectKind::Dict, Init::Empty).map(DictProxy::new)
    }

    /// The list of this name.
    pub fn list<T>(&self) -> Result<ListProxy<T>, ManagerError> {
        self.get(ObjectKind::List, Init::Empty).map(ListProxy::new)
    }

    /// The queue of this name (made unbounded if new).
    pub fn queue<T>(&self) -> Result<QueueProxy<T>, ManagerError> {
        self.get(ObjectKind::Queue, Init::Queue { maxsize: 0 }).map(QueueProxy::new)
    }

    /// The queue of this name (made with at most `maxsize` items if new).
    pub fn queue_bounded<T>(&self, maxsize: usize) -> Result<QueueProxy<T>, ManagerError> {
        self.get(ObjectKind::Queue, queue_init(maxsize)?).map(QueueProxy::new)
    }

    /// The joinable queue of this name (made unbounded if new).
    pub fn joinable_queue<T>(&self) -> Result<JoinableQueueProxy<T>, ManagerError> {
        self.get(ObjectKind::JoinableQueue, Init::Queue { maxsize: 0 }).map(JoinableQueueProxy::new)
    }

    /// The value of this name (made holding `init` if new).
    pub fn value<T: Serialize>(&self, init: T) -> Result<ValueProxy<T>, ManagerError> {
        self.get(ObjectKind::Value, Init::Value(encode(&init)?)).map(ValueProxy::new)
    }

    /// The lock of this name.
    pub fn lock(&self) -> Result<LockProxy, ManagerError> {
        self.get(ObjectKind::Lock, Init::Empty).map(LockProxy::new)
    }

    /// The event of this name.
    pub fn event(&self) -> Result<EventProxy, ManagerError> {
        self.get(ObjectKind::Event, Init::Empty).map(EventProxy::new)
    }

    /// The semaphore of this name (made with `value` permits if new).
    pub fn semaphore(&self, value: u64) -> Result<SemaphoreProxy, ManagerError> {
        self.get(ObjectKind::Semaphore, Init::Semaphore { value, bound: None }).map(SemaphoreProxy::new)
    }

    /// The existing queue of this name; [`ManagerError::NoSuchObject`] if nobody made it.
    pub fn open_queue<T>(&self) -> Result<QueueProxy<T>, ManagerError> {
        self.open(ObjectKind::Queue).map(QueueProxy::new)
    }

    /// The existing dict of this name; [`ManagerError::NoSuchObject`] if nobody made it.
    pub fn open_dict<K, V>(&self) -> Result<DictProxy<K, V>, ManagerError> {
        self.open(ObjectKind::Dict).map(DictProxy::new)
    }
}
