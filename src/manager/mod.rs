//! Managers: a server process holding shared objects — dicts, lists, queues, values, locks,
//! events, semaphores — that other processes use through proxies, over a Unix socket or
//! TCP, on this machine or another (Python's `multiprocessing.Manager` and `BaseManager`).
//!
//! The rest of shmkit shares memory, which is faster by orders of magnitude; a manager is
//! for what memory cannot do: objects of any size and shape (a growing dict of serde
//! values), and processes on other hosts.
//!
//! | | |
//! |---|---|
//! | start a server process and connect to it | [`Manager::start`] → [`ManagerHandle`] (derefs to [`Client`]) |
//! | run a server in this process | [`Manager::serve`], or [`ManagerBuilder::bind`] → [`Server`] |
//! | connect from anywhere | [`Manager::connect`] → [`Client`] |
//! | objects | [`Client::dict`], [`list`](Client::list), [`queue`](Client::queue), [`joinable_queue`](Client::joinable_queue), [`value`](Client::value), [`lock`](Client::lock), [`event`](Client::event), [`semaphore`](Client::semaphore) |
//! | objects every client finds by name | [`Client::named`]`("tasks").queue()` |
//!
//! ```
//! use shmkit::manager::{Manager, Obj};
//! use shmkit::process::Process;
//!
//! let mgr = Manager::start()?;
//! let d = mgr.dict::<Obj, Obj>()?;
//! let l = mgr.list_from(0..10i64)?;
//! let (d2, l2) = (d.clone(), l.clone());
//! let mut p = Process::new(move || {
//!     d2.insert(1, "1".into()).unwrap();
//!     d2.insert("2", 2.into()).unwrap();
//!     d2.insert(0.25, Obj::None).unwrap();
//!     l2.reverse().unwrap();
//! });
//! p.start()?;
//! assert_eq!(p.join()?, 0);
//! assert_eq!(d.get(&Obj::Int(1))?, Some(Obj::from("1")));
//! assert_eq!(d.get(&Obj::Float(0.25))?, Some(Obj::None));
//! assert_eq!(l.snapshot()?, (0..10).rev().collect::<Vec<i64>>());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Addresses and keys
//! An [`Address`] is a Unix socket path (the server makes it mode 0600 and removes it when
//! it stops) or a TCP `host:port`. A server binds loopback addresses only, unless
//! [`ManagerBuilder::allow_remote`] says otherwise. [`Manager::start`] picks a fresh socket
//! in a private directory (mode 0700) and a random 32-byte key.
//!
//! Every connection proves both ways that its ends know the same key before anything else
//! (HMAC-SHA256 over random challenges, RustCrypto's `hmac` and `sha2`); a wrong key is
//! [`ManagerError::AuthenticationFailed`] and no access. The key authenticates; it does not
//! encrypt: across a network, use a trusted network or a tunnel. As with any HMAC key, a
//! key shorter than 64 bytes is zero-padded, so `b"key"` and `b"key\0"` are the same key.
//!
//! # Wire format
//! Both directions are a sequence of frames: a little-endian `u32` length, then that many
//! bytes holding exactly one message encoded with `postcard`. The handshake (frames of at
//! most 256 bytes, 10 s to complete):
//! 1. server: `Challenge { magic: b"shmkmgr\0", version: 1, nonce: [u8; 32] }` (or `Busy`
//!    when it has `max_connections` open);
//! 2. client: `ClientAnswer { mac: HMAC(key, "shmkit-manager-v1 client answer" ‖ nonce),
//!    nonce: [u8; 32] }`;
//! 3. server: `Welcome { mac: HMAC(key, "shmkit-manager-v1 server answer" ‖ client nonce ‖
//!    server nonce ‖ server_id as 8 LE bytes), max_message, server_id }`; or `Rejected` (wrong
//!    key) or `Busy` (`max_connections` authenticated clients already), and the connection
//!    closes. `server_id` is random per server run: a client whose server
//!    restarted at the same address gets `Disconnected` rather than the new server's
//!    objects under its old ids.
//!
//! Then the client sends requests (`Create`, `Open`, `Forget`, `Call { id, op }`, `Ping`,
//! `Shutdown`) and the server answers each with one response, in order. Keys, values and
//! items inside are the postcard bytes of the caller's types; the server stores them as
//! they are, so any serde type works and the server needs none of them. A frame body is
//! at most `max_message` bytes (16 MiB by default; replies 64 bytes more); the length is
//! checked before the body is read, and an oversized or undecodable frame gets an error
//! reply and closes that connection, nothing else.
//!
//! # Failure semantics
//! - A client that dies (or is SIGKILLed mid-call) only closes its connections (a request
//!   it had written in full before it died may still be carried out): the server
//!   and other clients go on. A lock it held is released, and the next holder's guard says
//!   [`previous_owner_died`](LockProxyGuard::previous_owner_died). A queue item taken by a
//!   `get` whose reply could not be written goes back to the front of the queue (an item
//!   already written to a socket its reader never read is lost, as in Python).
//! - Server gone (shut down, killed): every call, including ones blocked in `get`, returns
//!   [`ManagerError::Disconnected`]; nothing hangs.
//! - Blocking calls (`get`, `put` on a bounded queue, `join`, `lock`, `wait`, `acquire`)
//!   wait on the server; their `*_timeout` forms return [`ManagerError::Timeout`] (or
//!   `Ok(false)`: `EventProxy::wait_timeout`, `SemaphoreProxy::acquire_timeout`), never
//!   before the timeout — and, should the server hang (stopped, not dead), at most 5 s
//!   after it. Untimed calls wait for the server as long as it lives.
//! - An unnamed object lives while a proxy of it exists (clones share one reference; the
//!   last drop gives it back, as Python's proxies do). References are held by each
//!   process's *home* connection (object creation and release go through it): a client
//!   that dies, or whose home connection breaks, gives all of its back. A named object
//!   lives until the server stops, or until [`Client::forget`] and its last proxy.
//! - A forked child uses its parent's proxies through connections of its own (opened on
//!   first use, when it also takes its own reference; if the parent dropped its last proxy
//!   before that, the object is gone: [`ManagerError::NoSuchObject`]), as Python's proxies
//!   do. Until that first use (or its exit) it holds copies
//!   of the parent's connections, so the server sees a parent that dies meanwhile only
//!   when the child lets go of them too.
//! - The server keeps what it is given: there is a limit per message, not on the total a
//!   client stores.

mod auth;
mod client;
mod net;
mod obj;
mod proto;
mod proxy;
mod server;

use std::io;
use std::net::IpAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use client::{Client, Named, ServerStats};
pub use net::{Address, IntoAddress};
pub use obj::Obj;
pub use proto::{FrameError, ObjectKind};
pub use proxy::{
    DictProxy, EventProxy, JoinableQueueProxy, ListProxy, LockProxy, LockProxyGuard, QueueProxy,
    SemaphoreProxy, ValueProxy,
};
pub use server::{Server, Stopper, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MESSAGE};

use crate::process::{Process, ProcessError};
use net::Listener;
use proto::Remote;
use server::Config;

#[doc(hidden)]
pub mod __fuzz {
    pub use super::proto::fuzz_decode;
    pub use super::server::fuzz_session;
}

/// Errors of managers, clients and proxies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The address could not be parsed or resolved.
    #[error("bad address {0}")]
    Address(String),
    /// A TCP address that is not loopback, without [`ManagerBuilder::allow_remote`].
    #[error("{0} is not a loopback address: binding it serves other hosts; say so with allow_remote(true)")]
    NotLoopback(IpAddr),
    /// The server could not listen there.
    #[error("cannot listen on {0}: {1}")]
    Bind(Address, #[source] io::Error),
    /// No server could be reached there.
    #[error("cannot connect to {0}: {1}")]
    Connect(Address, #[source] io::Error),
    /// The server rejected the authkey (or, on the server's side, the client's).
    #[error("authentication failed: the server does not accept this authkey")]
    AuthenticationFailed,
    /// The server has as many connections as it takes.
    #[error("the server has no room for another connection")]
    Busy,
    /// The server is gone (shut down, killed, or the connection was cut).
    #[error("disconnected from the manager server")]
    Disconnected,
    /// The other end does not speak this protocol, or sent something impossible.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Another I/O error.
    #[error(transparent)]
    Io(io::Error),
    /// The server process could not be started.
    #[error("cannot start the server process: {0}")]
    Start(#[from] ProcessError),
    /// The timeout passed first.
    #[error("timed out")]
    Timeout,
    /// `try_get` on an empty queue (Python's `queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// `try_put` on a full queue (Python's `queue.Full`).
    #[error("queue is full")]
    Full,
    /// `try_lock` / `try_acquire` on a held lock.
    #[error("held by another")]
    WouldBlock,
    /// No object of that name (or id: it was dropped with its last user).
    #[error("no such object: {0}")]
    NoSuchObject(String),
    /// The name belongs to an object of another kind.
    #[error("the object is a {found}, not a {expected}")]
    WrongKind {
        /// The kind asked for.
        expected: ObjectKind,
        /// The kind it is.
        found: ObjectKind,
    },
    /// A list index past the end.
    #[error("index {index} out of range for a list of {len}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The list's length.
        len: u64,
    },
    /// A request or reply larger than the server's limit; nothing was changed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// `task_done()` called more times than items were put.
    #[error("task_done() called more times than there were items")]
    TaskDoneTooMany,
    /// A bounded semaphore released more times than acquired.
    #[error("semaphore released too many times")]
    ReleasedTooManyTimes,
    /// The server holds as many objects as it takes (2^20).
    #[error("the server holds too many objects")]
    TooManyObjects,
    /// A bounded queue of size 0.
    #[error("a bounded queue needs a maxsize of at least 1")]
    ZeroCapacity,
    /// A name that is empty or longer than 256 bytes.
    #[error("bad name {0}")]
    BadName(String),
    /// A value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A stored value is not of the proxy's type.
    #[error("cannot decode (a value of another type?): {0}")]
    Decode(String),
    /// Release of a lock this connection does not hold.
    #[error("the lock is not held by this connection")]
    NotOwner,
}

impl ManagerError {
    /// Whether the server is gone ([`ManagerError::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, ManagerError::Disconnected)
    }

    /// Whether a timeout or a `try_*` found nothing to do (`Timeout`, `Empty`, `Full`,
    /// `WouldBlock`).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ManagerError::Timeout | ManagerError::Empty | ManagerError::Full | ManagerError::WouldBlock
        )
    }
}

impl From<Remote> for ManagerError {
    fn from(r: Remote) -> ManagerError {
        match r {
            Remote::NoSuchObject(n) => ManagerError::NoSuchObject(n),
            Remote::WrongKind { expected, found } => ManagerError::WrongKind { expected, found },
            Remote::Index { index, len } => ManagerError::IndexOutOfRange { index, len },
            Remote::Empty => ManagerError::Empty,
            Remote::Full => ManagerError::Full,
            Remote::Timeout => ManagerError::Timeout,
            Remote::WouldBlock => ManagerError::WouldBlock,
            Remote::TooLarge { len, max } | Remote::ReplyTooLarge { len, max } => {
                ManagerError::TooLarge { len, max }
            }
            Remote::BadRequest(why) => {
                ManagerError::Protocol(format!("the server refused the request: {why}"))
            }
            Remote::TaskDoneTooMany => ManagerError::TaskDoneTooMany,
            Remote::ReleasedTooMany => ManagerError::ReleasedTooManyTimes,
            Remote::NotOwner => ManagerError::NotOwner,
            Remote::TooManyObjects => ManagerError::TooManyObjects,
            Remote::Malformed(why) => {
                ManagerError::Protocol(format!("the server could not decode a request: {why}"))
            }
            Remote::ShuttingDown => ManagerError::Disconnected,
        }
    }
}

/// Entry points: [`start`](Manager::start) a server process, [`serve`](Manager::serve) in
/// this one, [`connect`](Manager::connect) to one; [`builder`](Manager::builder) for options.
#[derive(Debug)]
pub struct Manager(());

impl Manager {
    /// Starts a server process (forked, a daemon: it dies with this process) on a private
    /// Unix socket with a random key, and connects to it (Python's `Manager()`).
    pub fn start() -> Result<ManagerHandle, ManagerError> {
        Manager::builder().start()
    }

    /// Runs a server in this thread at `address` until a client asks it to shut down.
    pub fn serve(address: impl IntoAddress, authkey: &[u8]) -> Result<(), ManagerError> {
        Manager::builder().address(address).authkey(authkey).serve()
    }

    /// Connects to the server at `address` with `authkey` (Python's `BaseManager(address,
    /// authkey).connect()`).
    pub fn connect(address: impl IntoAddress, authkey: &[u8]) -> Result<Client, ManagerError> {
        Client::connect(address, authkey)
    }

    /// Options: address, key, limits.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder {
            address: None,
            authkey: None,
            allow_remote: false,
            max_message: DEFAULT_MAX_MESSAGE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Options of a manager server.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::builder().address("127.0.0.1:0").authkey(b"secret").max_message(1 << 20).start()?;
/// let q = mgr.named("jobs").queue::<String>()?;
/// q.put("hello".to_string())?;
/// assert!(mgr.address().to_string().starts_with("127.0.0.1:"));
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
#[derive(Debug)]
pub struct ManagerBuilder {
    address: Option<Result<Address, ManagerError>>,
    authkey: Option<Vec<u8>>,
    allow_remote: bool,
    max_message: usize,
    max_connections: usize,
}

impl ManagerBuilder {
    /// Where to listen (default for [`start`](Self::start): a fresh socket in a private
    /// directory; [`bind`](Self::bind) and [`serve`](Self::serve) need one).
    pub fn address(mut self, address: impl IntoAddress) -> Self {
        self.address = Some(address.into_address());
        self
    }

    /// The key clients must prove they know (default: 32 random bytes; see
    /// [`Client::authkey`] / [`Server::authkey`]).
    pub fn authkey(mut self, key: &[u8]) -> Self {
        self.authkey = Some(key.to_vec());
        self
    }

    /// Allow binding a TCP address that is not loopback (serving other hosts).
    pub fn allow_remote(mut self, allow: bool) -> Self {
        self.allow_remote = allow;
        self
    }

    /// The largest message body in either direction (default 16 MiB, at least 1 KiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes.clamp(1024, u32::MAX as usize - proto_slack());
        self
    }

    /// The most authenticated connections open at once (default 1024, at least 1); one more
    /// is told [`ManagerError::Busy`]. A client uses one connection for its references and
    /// quick calls, plus one for each blocking or timed call (`get`, `lock`, `wait`, `ping`,
    /// ...) and each call made while another thread has the first: count two or more per
    /// client process. Up to 64 more may be in the handshake (10 s at most
    /// each); past that, new ones are told `Busy` too.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    fn key(&mut self) -> Result<Vec<u8>, ManagerError> {
        match self.authkey.take() {
            Some(k) => Ok(k),
            None => {
                let mut k = vec![0u8; 32];
                auth::random_bytes(&mut k).map_err(ManagerError::Io)?;
                Ok(k)
            }
        }
    }

    /// Binds the address: a server in this process, to [`serve`](Server::serve) in a
    /// thread of your choice.
    pub fn bind(mut self) -> Result<Server, ManagerError> {
        let address = self
            .address
            .take()
            .ok_or_else(|| ManagerError::Address("bind and serve need an address".into()))??;
        let authkey = self.key()?;
        let listener = Listener::bind(&address, self.allow_remote)?;
        let config = Config {
            authkey,
            max_message: self.max_message,
            max_connections: self.max_connections,
            no_wait: false,
        };
        Server::new(listener, config)
    }

    /// Binds and serves in this thread until a client asks the server to shut down.
    pub fn serve(self) -> Result<(), ManagerError> {
        self.bind()?.serve()
    }

    /// Starts a server process and connects to it.
    pub fn start(mut self) -> Result<ManagerHandle, ManagerError> {
        let mut private_dir = None;
        if self.address.is_none() {
            let dir = private_socket_dir().map_err(ManagerError::Io)?;
            self.address = Some(Ok(Address::Unix(dir.join("manager.sock"))));
            private_dir = Some(dir);
        }
        let result = self.start_in(private_dir.clone());
        if result.is_err() {
            if let Some(d) = &private_dir {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        result
    }

    fn start_in(self, private_dir: Option<PathBuf>) -> Result<ManagerHandle, ManagerError> {
        let mut server = self.bind()?;
        let address = server.address().clone();
        let authkey = server.authkey().to_vec();
        server.leave_with(std::process::id());
        let dir = private_dir.clone();
        // A daemon: SIGTERMed at this process's normal exit (see `server_process`).
        let mut process =
            Process::builder().name("SyncManager").daemon(true).target(move || server_process(server, dir));
        process.start()?;
        let client = match Client::connect(&address, &authkey) {
            Ok(c) => c,
            Err(e) => {
                let _ = process.kill();
                let _ = process.join();
                return Err(e);
            }
        };
        Ok(ManagerHandle { client, process, private_dir, shut_down: false, owner_pid: std::process::id() })
    }
}

/// The life of a server process started by [`Manager::start`].
///
/// - It leaves with its starter *process*, checked every 100 ms (`getppid`), not through
///   `PR_SET_PDEATHSIG`, which fires when the starting *thread* ends.
/// - SIGTERM (sent to daemon children at the starter's normal exit) stops it cleanly: a
///   thread takes the signal (blocked everywhere else) and stops the server.
/// - SIGINT is ignored, as Python's manager does: Ctrl-C reaches the whole process group,
///   and the server should outlive its starter's handler and go with it.
/// - When it stops it removes its socket file and private directory.
fn server_process(server: Server, private_dir: Option<PathBuf>) {
    // SAFETY: prctl/signal/sigset calls with valid arguments; no memory is shared.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        // Before any thread exists: every thread inherits the mask.
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let stopper = server.stopper();
    let _ = std::thread::Builder::new().name("shmkit-manager-sigterm".into()).spawn(move || {
        // SAFETY: as above; sigwait writes the signal number to `sig`.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let mut sig = 0;
            while libc::sigwait(&set, &mut sig) != 0 {}
        }
        stopper.stop();
    });
    let result = server.serve();
    if let Some(d) = private_dir {
        let _ = std::fs::remove_dir_all(d);
    }
    if let Err(e) = result {
        let line = format!("shmkit manager server: {e}\n");
        // SAFETY: writes initialized bytes to fd 2 (stderr's lock may be held by a thread
        // the fork left behind).
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
        std::process::exit(1);
    }
}

fn proto_slack() -> usize {
    proto::RESPONSE_SLACK + proto::PREFIX
}

/// Where [`Manager::start`] makes its private socket directories.
fn socket_base() -> PathBuf {
    let base = std::env::temp_dir();
    // Socket paths are short (107 bytes): fall back to /tmp for a long TMPDIR.
    if base.as_os_str().len() > 60 {
        PathBuf::from("/tmp")
    } else {
        base
    }
}

const DIR_PREFIX: &str = "shmkit-manager-";

/// The private socket directories [`Manager::start`] left behind: this user's, made by a
/// process that is gone (its server left with it). A process that
/// started a manager and was killed (or exited without dropping the handle, its server then
/// ended by a signal) leaves one; each `Manager::start` removes them, and so does
/// `shmkit clean`.
///
/// With `remove`, removes them; returns the directories found (and removed).
pub fn stale_socket_dirs(remove: bool) -> io::Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let base = socket_base();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    for entry in std::fs::read_dir(&base)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()).filter(|&p| p > 0) else {
            continue;
        };
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() && m.uid() == uid => {}
            _ => continue,
        }
        // SAFETY: signal 0 only checks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        // A server leaves with its starter (it checks every 100 ms), so a dead starter means
        // a gone server. (No connect to make sure: a stopped server's full backlog would
        // block it.)
        if alive {
            continue;
        }
        // Gone meanwhile, or not ours to remove after all: not reported.
        if remove && std::fs::remove_dir_all(&path).is_err() {
            continue;
        }
        found.push(path);
    }
    Ok(found)
}

/// A fresh directory only this user can enter, for a server's socket.
fn private_socket_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    // Best effort: what crashed runs left behind.
    let _ = stale_socket_dirs(true);
    let base = socket_base();
    let mut r = [0u8; 8];
    auth::random_bytes(&mut r)?;
    let dir = base.join(format!("{DIR_PREFIX}{}-{:016x}", std::process::id(), u64::from_le_bytes(r)));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// A running server process and a [`Client`] connected to it (Python's `SyncManager` after
/// `start()`); derefs to the client. Dropping it shuts the server down.
///
/// # Examples
/// ```
/// use shmkit::manager::Manager;
/// let mgr = Manager::start()?;
/// let v = mgr.value(0u64)?;
/// v.set(5)?;
/// let pid = mgr.pid();
/// mgr.shutdown()?;
/// assert!(v.get().unwrap_err().is_disconnected());
/// # let _ = pid;
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
#[derive(Debug)]
pub struct ManagerHandle {
    client: Client,
    process: Process,
    private_dir: Option<PathBuf>,
    shut_down: bool,
    owner_pid: u32,
}

impl Deref for ManagerHandle {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl ManagerHandle {
    /// The client connected to the server (clone it to keep using the server's objects
    /// elsewhere; it stops working once the handle shuts the server down).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server process's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid().unwrap_or(0)
    }

    /// Whether the server process is running.
    pub fn is_alive(&self) -> bool {
        self.process.is_alive()
    }

    /// Asks the server to stop and waits for its process (killing it if it has not ended
    /// within 5 s, or at once if it does not answer). Every client gets
    /// [`ManagerError::Disconnected`] from then on. An error only if the server process
    /// exited with a failure of its own.
    pub fn shutdown(mut self) -> Result<(), ManagerError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), ManagerError> {
        if std::mem::replace(&mut self.shut_down, true) {
            return Ok(());
        }
        // Only the process that started the server stops it (a forked child dropping its
        // copy of the handle must not).
        if self.owner_pid != std::process::id() {
            return Ok(());
        }
        // Bounded even if the server is stopped or hung (the request's reply is awaited at
        // most 5 s; a new connection's handshake at most 10 s): then it is killed.
        let asked = self.client.shutdown_server();
        let grace = if asked.is_ok() { Duration::from_secs(5) } else { Duration::from_millis(500) };
        let deadline = Instant::now() + grace;
        let mut code = None;
        while Instant::now() < deadline {
            if let Some(c) = self.process.join_timeout(Duration::from_millis(50))? {
                code = Some(c);
                break;
            }
        }
        let killed = code.is_none();
        if killed {
            let _ = self.process.kill();
            code = Some(self.process.join()?);
        }
        if let Some(d) = self.private_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        match code {
            Some(c) if c != 0 && !killed => {
                Err(ManagerError::Io(io::Error::other(format!("the server process exited with {c}"))))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for ManagerHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
