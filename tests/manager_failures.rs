//! Failure semantics of `shmkit::manager` with real processes: wrong keys and raw sockets that
//! skip or botch the handshake, frame limits (announced, sent and replied), clients SIGKILLed
//! mid-call or while blocked, servers shut down, SIGKILLed, stopped or replaced, timeouts that
//! never return early, `max_connections`, address errors and socket files. Every test ends by
//! checking that the server still serves (`assert_serves`). The functional API tests are in
//! `tests/manager.rs`.
//!
//! Raw connections speak the documented wire format by hand (a `u32` LE length, then one
//! postcard message; the HMAC-SHA256 challenge of `src/manager/auth.rs`), through mirrors of
//! the protocol's enums below: a change of the wire format breaks these tests on purpose.
//!
//! Fork hygiene: tests run as threads of one process, and a forked child inherits every fd
//! open at that moment, other tests' sockets included. Every fork of this file (server
//! processes and children) goes through [`FORK`], so no child inherits a listener between
//! `bind` and the parent closing its copy; a client whose *close* a test relies on lives in
//! a child process (only it holds the socket); raw sockets are shut down, not just dropped.
#![cfg(feature = "manager")]

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{sigkill, wait_for, watchdog};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use shmkit::manager::{Address, Client, Manager, ManagerBuilder, ManagerError, ManagerHandle, ObjectKind};
use shmkit::process::Process;
use shmkit::sync::Event;

// ---------------------------------------------------------------------------------------------
// Processes and servers
// ---------------------------------------------------------------------------------------------

/// Held across every fork of this file (see the module docs).
static FORK: Mutex<()> = Mutex::new(());

fn forking<R>(f: impl FnOnce() -> R) -> R {
    let _g = FORK.lock().unwrap_or_else(|p| p.into_inner());
    f()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Net {
    Unix,
    Tcp,
}

/// A builder on a private Unix socket (`Manager::start`'s default) or loopback TCP.
fn builder(net: Net) -> ManagerBuilder {
    match net {
        Net::Unix => Manager::builder(),
        Net::Tcp => Manager::builder().address("127.0.0.1:0"),
    }
}

fn start(b: ManagerBuilder) -> ManagerHandle {
    forking(|| b.start()).expect("start a manager server process")
}

/// Forks a child running `f` (a panic in it is exit code 1 and its message).
fn spawn(f: impl FnOnce() + Send + 'static) -> Process {
    let mut p = Process::new(f);
    forking(|| p.start()).expect("fork a child");
    p
}

/// Joins a child that must have exited with 0.
fn join_ok(p: &Process) {
    let code = p.join().expect("join child");
    assert_eq!(code, 0, "child failed: {:?}", p.panic_message());
}

/// SIGKILLs a child and reaps it.
fn kill_and_reap(p: &Process) {
    sigkill(p.pid().expect("started"));
    let code = p.join().expect("join killed child");
    assert_eq!(code, -9, "the child should have died of SIGKILL: {:?}", p.panic_message());
}

/// The server is up and correct: a fresh dict round trip on `c`.
fn assert_serves(c: &Client) {
    let d = c.dict::<String, u64>().expect("the server still makes objects");
    assert_eq!(d.insert("k", 42).expect("insert"), None);
    assert_eq!(d.get("k").expect("get"), Some(42));
    assert_eq!(d.len().expect("len"), 1);
}

/// A new client of the same server (its own connections).
fn other_client(h: &ManagerHandle) -> Client {
    Manager::connect(h.address(), h.authkey()).expect("a second client connects")
}

/// A fresh directory for a test's socket files (short path: sockets take 107 bytes),
/// removed on drop, failed test or not.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::os::unix::fs::DirBuilderExt;
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = PathBuf::from(format!("/tmp/shmkit-mf-{}-{tag}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&d).expect("create temp dir");
        TempDir(d)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unix_path(a: &Address) -> &Path {
    match a {
        Address::Unix(p) => p,
        Address::Tcp(t) => panic!("expected a Unix socket, got {t}"),
    }
}

/// Memory of `pid` in KiB: (resident, data), from `/proc/PID/status`. `VmData` counts
/// what was allocated even if never touched (a `Vec::with_capacity` of the announced
/// length would show there, not in `VmRSS`).
fn mem_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let field = |name: &str| -> u64 {
        let line = s.lines().find(|l| l.starts_with(name)).expect("a /proc/PID/status field");
        line.split_whitespace().nth(1).expect("its value").parse().expect("a number")
    };
    (field("VmRSS:"), field("VmData:"))
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", io::Error::last_os_error());
}

/// A small xorshift generator (seeded per test and printed, to replay a failure).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let seed = t ^ (u64::from(std::process::id()) << 32) | 1;
        eprintln!("rng seed {seed:#x}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Time enough for a child that announced it is about to block in a call to be blocked on
/// the server. Nothing is asserted on it: a child killed earlier still makes a valid test.
const SETTLE: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// The wire, by hand: mirrors of src/manager/proto.rs (same variants, same order)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum ServerHello {
    Challenge { magic: [u8; 8], version: u16, nonce: [u8; 32] },
    Busy,
}

#[derive(Serialize, Deserialize, Debug)]
struct ClientAnswer {
    mac: [u8; 32],
    nonce: [u8; 32],
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum ServerVerdict {
    Welcome { mac: [u8; 32], max_message: u64, server_id: u64 },
    Rejected,
}

// Only some variants are ever built here; the rest keep the indices of the real enum.
#[allow(dead_code)]
#[derive(Serialize, Debug)]
enum Init {
    Empty,
    Queue { maxsize: u64 },
    Value(Vec<u8>),
    Semaphore { value: u64, bound: Option<u64> },
    List(Vec<Vec<u8>>),
}

#[allow(dead_code)]
#[derive(Serialize, Debug)]
enum Request {
    Create { kind: ObjectKind, name: Option<String>, init: Init },
    Open { kind: ObjectKind, name: String },
    Forget { name: String },
    Retain { id: u64 },
    Release { id: u64 },
    Call { id: u64, op: Op },
    Ping,
    Stats,
    Shutdown,
}

/// The first operations of the real `Op` (postcard numbers variants in order).
#[derive(Serialize, Debug)]
enum Op {
    DictGet(Vec<u8>),
    DictInsert(Vec<u8>, Vec<u8>),
}

#[allow(dead_code)]
#[derive(Deserialize, Debug, PartialEq)]
enum Response {
    Unit,
    Bool(bool),
    Len(u64),
    Item(Option<Vec<u8>>),
    Items(Vec<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    Object { id: u64, kind: ObjectKind, created: bool },
    Stats { objects: u64, named: u64, connections: u64 },
    Acquired { owner_died: bool },
    Err(Remote),
}

#[allow(dead_code)]
#[derive(Deserialize, Debug, PartialEq)]
enum Remote {
    NoSuchObject(String),
    WrongKind { expected: ObjectKind, found: ObjectKind },
    Index { index: u64, len: u64 },
    Empty,
    Full,
    Timeout,
    WouldBlock,
    TooLarge { len: u64, max: u64 },
    ReplyTooLarge { len: u64, max: u64 },
    BadRequest(String),
    TaskDoneTooMany,
    ReleasedTooMany,
    NotOwner,
    TooManyObjects,
    Malformed(String),
    ShuttingDown,
}

const CLIENT_TAG: &[u8] = b"shmkit-manager-v1 client answer";
const SERVER_TAG: &[u8] = b"shmkit-manager-v1 server answer";

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// A raw socket to a server, of either family.
enum Raw {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Raw {
    fn connect(a: &Address) -> Raw {
        let r = match a {
            Address::Unix(p) => Raw::Unix(UnixStream::connect(p).expect("raw connect")),
            Address::Tcp(t) => {
                let s = TcpStream::connect(t.as_str()).expect("raw connect");
                s.set_nodelay(true).unwrap();
                Raw::Tcp(s)
            }
        };
        // Nothing a test waits for takes this long; a test never hangs on a raw read.
        r.set_read_timeout(Some(Duration::from_secs(30)));
        r
    }

    fn set_read_timeout(&self, t: Option<Duration>) {
        match self {
            Raw::Unix(s) => s.set_read_timeout(t).unwrap(),
            Raw::Tcp(s) => s.set_read_timeout(t).unwrap(),
        }
    }

    /// Closes this end for real (a forked copy of the fd elsewhere would keep a plain close
    /// from reaching the server).
    fn shutdown(&self) {
        let _ = match self {
            Raw::Unix(s) => s.shutdown(Shutdown::Both),
            Raw::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn send_frame(&mut self, body: &[u8]) -> io::Result<()> {
        let mut f = (body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(body);
        self.write_all(&f)
    }

    fn send<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        self.send_frame(&postcard::to_allocvec(msg).unwrap())
    }

    fn recv_frame(&mut self) -> io::Result<Vec<u8>> {
        let mut p = [0u8; 4];
        self.read_exact(&mut p)?;
        let len = u32::from_le_bytes(p) as usize;
        assert!(len <= 64 << 20, "the server announced a frame of {len} bytes");
        let mut body = vec![0u8; len];
        self.read_exact(&mut body)?;
        Ok(body)
    }

    fn recv<T: DeserializeOwned>(&mut self) -> T {
        let body = self.recv_frame().expect("a frame from the server");
        let (msg, rest) = postcard::take_from_bytes::<T>(&body).expect("the server's frame decodes");
        assert!(rest.is_empty(), "{} bytes after the server's message", rest.len());
        msg
    }

    /// Runs the client's side of the handshake with `key`; the server's limit.
    fn handshake(&mut self, key: &[u8]) -> u64 {
        let ServerHello::Challenge { magic, version, nonce } = self.recv() else { panic!("server busy") };
        assert_eq!(&magic, b"shmkmgr\0");
        assert_eq!(version, 1);
        let mine = [0x5a; 32];
        self.send(&ClientAnswer { mac: mac(key, &[CLIENT_TAG, &nonce]), nonce: mine }).unwrap();
        match self.recv() {
            ServerVerdict::Welcome { mac: proof, max_message, server_id } => {
                let id = server_id.to_le_bytes();
                assert_eq!(proof, mac(key, &[SERVER_TAG, &mine, &nonce, &id]), "the server proves the key");
                max_message
            }
            ServerVerdict::Rejected => panic!("rejected"),
        }
    }

    /// The connection ends (EOF or reset) after at most `max_bytes` more bytes: the server
    /// closed it. Fails if it is still open after the read timeout.
    fn expect_closed(&mut self, max_bytes: usize) {
        let mut seen = 0;
        let mut b = [0u8; 4096];
        loop {
            match self.read(&mut b) {
                Ok(0) => return,
                Ok(n) => {
                    seen += n;
                    assert!(seen <= max_bytes, "{seen} bytes from a connection that should be closed");
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
                    return
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("the server kept the connection open ({e})"),
            }
        }
    }
}

impl Read for Raw {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Raw::Unix(s) => s.read(buf),
            Raw::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Raw {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Raw::Unix(s) => s.write(buf),
            Raw::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An authenticated raw connection.
fn raw_authed(h: &ManagerHandle) -> (Raw, u64) {
    let mut r = Raw::connect(h.address());
    let max = r.handshake(h.authkey());
    (r, max)
}

/// Makes an unnamed (or named) dict over a raw connection; its id.
fn raw_create_dict(r: &mut Raw, name: Option<&str>) -> u64 {
    r.send(&Request::Create { kind: ObjectKind::Dict, name: name.map(str::to_string), init: Init::Empty })
        .unwrap();
    match r.recv() {
        Response::Object { id, kind: ObjectKind::Dict, .. } => id,
        other => panic!("create: {other:?}"),
    }
}

/// Both transports as two tests: `both!(name)` runs `name(Net::Unix)` and `name(Net::Tcp)`.
macro_rules! both {
    ($f:ident) => {
        mod $f {
            #[test]
            fn unix() {
                super::$f(super::Net::Unix)
            }
            #[test]
            fn tcp() {
                super::$f(super::Net::Tcp)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// 1. Authentication
// ---------------------------------------------------------------------------------------------

fn wrong_authkey_gets_no_access(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net).authkey(b"the right key"));
    let a = h.address().clone();

    // The real client.
    // (Not "the right key\0": HMAC pads short keys with zeros, so that is the same key.)
    for bad in [&b"the wrong key"[..], b"", b"the right ke", b"the right keyy"] {
        let r = Manager::connect(&a, bad);
        assert!(matches!(r, Err(ManagerError::AuthenticationFailed)), "key {bad:?}: {r:?}");
    }

    // Positive control: the raw path works with the key, so the refusals below mean something.
    let (mut good, max) = raw_authed(&h);
    assert_eq!(max, shmkit::manager::DEFAULT_MAX_MESSAGE as u64);
    raw_create_dict(&mut good, Some("made-by-raw"));
    assert!(h.named("made-by-raw").open_dict::<u8, u8>().is_ok());

    let evil = |r: &mut Raw, name: &str| {
        let req = Request::Create { kind: ObjectKind::Dict, name: Some(name.into()), init: Init::Empty };
        // The server may have closed already: a failed write is fine.
        let _ = r.send(&req);
        let _ = r.send(&Request::Call { id: 1, op: Op::DictInsert(vec![1], vec![2]) });
    };

    // A wrong MAC: told Rejected, then closed; requests after it do nothing.
    let mut r = Raw::connect(&a);
    let ServerHello::Challenge { nonce, .. } = r.recv() else { panic!("busy") };
    r.send(&ClientAnswer { mac: mac(b"guess", &[CLIENT_TAG, &nonce]), nonce: [1; 32] }).unwrap();
    assert_eq!(r.recv::<ServerVerdict>(), ServerVerdict::Rejected);
    evil(&mut r, "evil-after-reject");
    r.expect_closed(0);

    // A replayed answer: the right key's MAC, but for another connection's challenge.
    let mut r1 = Raw::connect(&a);
    let ServerHello::Challenge { nonce: n1, .. } = r1.recv() else { panic!("busy") };
    let mut r2 = Raw::connect(&a);
    let ServerHello::Challenge { nonce: n2, .. } = r2.recv() else { panic!("busy") };
    assert_ne!(n1, n2, "challenges are fresh");
    r2.send(&ClientAnswer { mac: mac(b"the right key", &[CLIENT_TAG, &n1]), nonce: [2; 32] }).unwrap();
    assert_eq!(r2.recv::<ServerVerdict>(), ServerVerdict::Rejected);
    evil(&mut r2, "evil-replay");
    r2.expect_closed(0);
    drop(r1);

    // Skipping the handshake: requests where the answer should be, after reading the
    // challenge or without reading it at all.
    let mut r = Raw::connect(&a);
    let _: ServerHello = r.recv();
    evil(&mut r, "evil-skip");
    r.expect_closed(64);
    let mut r = Raw::connect(&a);
    evil(&mut r, "evil-no-read");
    r.expect_closed(128);

    // None of them made anything; the server serves on.
    for name in ["evil-after-reject", "evil-replay", "evil-skip", "evil-no-read"] {
        let r = h.named(name).open_dict::<u8, u8>();
        assert!(matches!(r, Err(ManagerError::NoSuchObject(_))), "{name}: {r:?}");
    }
    drop(good);
    assert_serves(&h);
    assert_serves(&other_client(&h));
}
both!(wrong_authkey_gets_no_access);

fn bad_frames_before_authentication_close_only_that_connection(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let a = h.address().clone();
    let bystander = other_client(&h);
    let q = bystander.queue::<u32>().unwrap();
    q.put(7).unwrap();

    // A frame over the 256-byte pre-auth limit (announced only, and announced and sent).
    for send_body in [false, true] {
        let mut r = Raw::connect(&a);
        let _: ServerHello = r.recv();
        if send_body {
            let _ = r.send_frame(&[0u8; 257]);
        } else {
            r.write_all(&257u32.to_le_bytes()).unwrap();
        }
        r.expect_closed(0);
    }
    // 1 GiB announced before authentication.
    let mut r = Raw::connect(&a);
    let _: ServerHello = r.recv();
    r.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    r.expect_closed(0);
    // Garbage without reading the challenge; a short garbage frame; a frame the size of an
    // answer holding noise (decodes as a wrong MAC: Rejected).
    let mut r = Raw::connect(&a);
    let _ = r.write_all(&[0xa5; 300]);
    r.expect_closed(128);
    let mut r = Raw::connect(&a);
    let _: ServerHello = r.recv();
    r.send_frame(&[0xff; 10]).unwrap();
    r.expect_closed(0);
    let mut r = Raw::connect(&a);
    let _: ServerHello = r.recv();
    r.send_frame(&[0x3c; 64]).unwrap();
    assert_eq!(r.recv::<ServerVerdict>(), ServerVerdict::Rejected);
    r.expect_closed(0);
    // Half a prefix, then gone.
    let mut r = Raw::connect(&a);
    r.write_all(&[1, 0]).unwrap();
    drop(r);

    assert_eq!(q.get().unwrap(), 7, "the bystander's connection and objects are untouched");
    assert_serves(&bystander);
    assert_serves(&h);
}
both!(bad_frames_before_authentication_close_only_that_connection);

/// Connects a trickler: a client that sends one byte of its answer's length prefix every
/// 2.75 s (each read well within 10 s, the last byte after 11 s). `Err` if, past the
/// handshake's 10 s, it still holds its connection.
fn trickle(h: &ManagerHandle) -> Result<(), String> {
    let mut r = Raw::connect(h.address());
    let _: ServerHello = r.recv();
    let t0 = Instant::now();
    for i in 0..4 {
        thread::sleep(Duration::from_millis(2750));
        if r.write_all(&[[64, 0, 0, 0][i]]).is_err() {
            return Ok(());
        }
    }
    r.set_read_timeout(Some(Duration::from_millis(500)));
    let mut b = [0u8; 16];
    match r.read(&mut b) {
        Ok(0) => return Ok(()),
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
            return Ok(())
        }
        Ok(n) => return Err(format!("{n} unexpected bytes to the trickler")),
        Err(_) => {}
    }
    let busy = matches!(Manager::connect(h.address(), h.authkey()), Err(ManagerError::Busy));
    Err(format!(
        "after {:?} an unauthenticated trickler still holds its connection (server full: {busy}): \
         the 10 s handshake timeout is per read, not a deadline",
        t0.elapsed()
    ))
}

/// The 10 s handshake timeout ("10 s to complete", module docs), on both sides, in one test
/// as each part takes that long:
/// - a client that connects and says nothing is cut then, never sooner, and blocks nobody
///   meanwhile;
/// - so is a client trickling its answer a byte every few seconds (on a server with
///   `max_connections(2)`, it would otherwise hold the one free slot for ever);
/// - `Manager::connect` to an address where something listens but never answers (a hung
///   server, or a dead server's listener inherited by a forked child) fails, not hangs.
#[test]
fn handshake_timeout_cuts_silent_and_trickling_clients_and_mute_servers() {
    let _w = watchdog(60);
    let trickler = thread::spawn(|| {
        let h = start(builder(Net::Unix).max_connections(2));
        let r = trickle(&h);
        assert_serves(&h);
        r
    });

    let dir = TempDir::new("mute");
    let path = dir.join("mute.sock");
    let mute = UnixListener::bind(&path).unwrap();
    let p = path.to_str().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    let client = thread::spawn(move || {
        let r = Manager::connect(p.as_str(), b"k").map(drop);
        let _ = tx.send(format!("{r:?}"));
    });

    let h = start(builder(Net::Unix));
    let t0 = Instant::now();
    let mut r = Raw::connect(h.address());
    let _: ServerHello = r.recv();
    // Others come and go while it sits there.
    for _ in 0..3 {
        assert_serves(&other_client(&h));
    }
    r.expect_closed(0);
    let took = t0.elapsed();
    // SO_RCVTIMEO rounds up to whole ticks, and our clock started before the server's.
    assert!(
        took >= Duration::from_millis(9_900),
        "silent client cut after {took:?}, before the 10 s timeout"
    );
    assert_serves(&h);

    let got = rx.recv_timeout(Duration::from_secs(15).saturating_sub(t0.elapsed()));
    // Closing the listener resets its queued connection, which ends a stuck client thread
    // (unless a child forked meanwhile holds a copy of the listener: then it stays stuck,
    // harmlessly, so it is joined only if it finished).
    drop(mute);
    if got.is_ok() {
        client.join().unwrap();
    }
    let got = got.expect("Manager::connect hung for 15 s on a listener that never answers");
    assert!(got.starts_with("Err("), "{got}");
    trickler.join().unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// 2. Message size limits
// ---------------------------------------------------------------------------------------------

fn too_large_values_fail_client_side_and_keep_the_connection(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net).max_message(4096));
    let d = h.dict::<u32, Vec<u8>>().unwrap();
    let q = h.queue::<Vec<u8>>().unwrap();
    let big = vec![7u8; 5000];
    let r = d.insert(1u32, big.clone());
    assert!(matches!(r, Err(ManagerError::TooLarge { max: 4096, .. })), "{r:?}");
    let r = q.put(&big);
    assert!(matches!(r, Err(ManagerError::TooLarge { max: 4096, .. })), "{r:?}");
    let r = h.value(big.clone());
    assert!(matches!(r, Err(ManagerError::TooLarge { max: 4096, .. })), "{r:?}");
    // Nothing changed, and the same (only) connection goes on.
    assert_eq!(d.len().unwrap(), 0);
    assert_eq!(q.len().unwrap(), 0);
    d.insert(2u32, vec![1; 3000]).unwrap();
    assert_eq!(d.get(&2).unwrap().map(|v| v.len()), Some(3000));

    // A reply over the limit (a snapshot of items that each fit): an error, nothing lost.
    let l = h.list::<Vec<u8>>().unwrap();
    for i in 0..4u8 {
        l.push(vec![i; 3000]).unwrap();
    }
    let r = l.snapshot();
    assert!(matches!(r, Err(ManagerError::TooLarge { .. })), "{r:?}");
    assert_eq!(l.len().unwrap(), 4);
    assert_eq!(l.pop().unwrap(), Some(vec![3; 3000]));
    assert_serves(&h);
}
both!(too_large_values_fail_client_side_and_keep_the_connection);

fn oversized_frames_get_an_error_and_a_close_without_allocation(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net).max_message(4096));
    let pid = h.pid();
    let bystander = other_client(&h);
    let d = bystander.dict::<u32, u32>().unwrap();
    d.insert(1u32, 1).unwrap();

    // The limit is exact: a body of 4096 bytes passes, 4097 does not.
    let (mut r, max) = raw_authed(&h);
    assert_eq!(max, 4096);
    let id = raw_create_dict(&mut r, None);
    let insert = |n: usize| {
        postcard::to_allocvec(&Request::Call { id, op: Op::DictInsert(vec![1], vec![9; n]) }).unwrap()
    };
    let n = (0..4096).rev().find(|&n| insert(n).len() == 4096).expect("a value size giving a 4096-byte body");
    r.send_frame(&insert(n)).unwrap();
    assert_eq!(r.recv::<Response>(), Response::Item(None));
    r.send(&Request::Call { id, op: Op::DictGet(vec![1]) }).unwrap();
    assert_eq!(r.recv::<Response>(), Response::Item(Some(vec![9; n])));
    let body = insert(n + 1);
    assert_eq!(body.len(), 4097);
    r.send_frame(&body).unwrap();
    assert_eq!(r.recv::<Response>(), Response::Err(Remote::TooLarge { len: 4097, max: 4096 }));
    r.expect_closed(0);

    // 1 GiB and 4 GiB - 1 announced: an error and a close, and the server did not allocate.
    let before = mem_kib(pid);
    for len in [1u32 << 30, u32::MAX] {
        let (mut r, _) = raw_authed(&h);
        r.write_all(&len.to_le_bytes()).unwrap();
        assert_eq!(r.recv::<Response>(), Response::Err(Remote::TooLarge { len: u64::from(len), max: 4096 }));
        r.expect_closed(0);
    }
    let after = mem_kib(pid);
    eprintln!("server (VmRSS, VmData) KiB: {before:?} -> {after:?}");
    assert!(after.0 < before.0 + 16 * 1024, "server RSS grew from {before:?} KiB to {after:?} KiB");
    assert!(after.1 < before.1 + 64 * 1024, "server data grew from {before:?} KiB to {after:?} KiB");

    assert_eq!(d.get(&1).unwrap(), Some(1), "the bystander is unaffected");
    assert_serves(&bystander);
    assert_serves(&h);
}
both!(oversized_frames_get_an_error_and_a_close_without_allocation);

/// Announcing frames within the (default, 16 MiB) limit and sending a few bytes of them
/// costs the server what arrived, not what was announced.
fn announced_frames_cost_what_arrives(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let pid = h.pid();
    let before = mem_kib(pid);
    let mut raws = Vec::new();
    for _ in 0..8 {
        let (mut r, max) = raw_authed(&h);
        r.write_all(&(max as u32).to_le_bytes()).unwrap();
        r.write_all(&[0u8; 100]).unwrap();
        raws.push(r);
    }
    assert_serves(&h); // a round trip after them: every connection thread has read its bytes
    thread::sleep(Duration::from_millis(50));
    let after = mem_kib(pid);
    eprintln!("server (VmRSS, VmData) KiB: {before:?} -> {after:?}");
    assert!(
        after.0 < before.0 + 32 * 1024,
        "8 announced 16 MiB frames: server RSS {before:?} -> {after:?} KiB"
    );
    assert!(
        after.1 < before.1 + 64 * 1024,
        "8 announced 16 MiB frames: server data {before:?} -> {after:?} KiB"
    );
    drop(raws);
    assert_serves(&other_client(&h));
}
both!(announced_frames_cost_what_arrives);

fn malformed_bodies_get_an_error_and_a_close(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let bystander = other_client(&h);
    let ping = postcard::to_allocvec(&Request::Ping).unwrap();
    let mut trailing = ping.clone();
    trailing.push(0);
    let bodies: [&[u8]; 5] = [
        &[0xff, 0xff, 0xff],          // a varint that never ends
        &[99],                        // no such request
        &trailing,                    // a Ping and a byte more
        &[],                          // nothing
        &[3, 0xff, 0xff, 0xff, 0xff], // Call with a bad id
    ];
    for body in bodies {
        let (mut r, _) = raw_authed(&h);
        r.send(&Request::Ping).unwrap();
        assert_eq!(r.recv::<Response>(), Response::Unit);
        r.send_frame(body).unwrap();
        match r.recv::<Response>() {
            Response::Err(Remote::Malformed(_)) => {}
            other => panic!("body {body:?}: {other:?}"),
        }
        r.expect_closed(0);
    }
    assert_serves(&bystander);
    assert_serves(&h);
}
both!(malformed_bodies_get_an_error_and_a_close);

// ---------------------------------------------------------------------------------------------
// 3. Clients SIGKILLed mid-call
// ---------------------------------------------------------------------------------------------

/// The value stored under a key by the inserting child: its sequence number and a body of a
/// size and content derived from it (up to 96 KiB, so kills land mid-frame too).
type Entry = (u64, Vec<u8>);

fn entry(i: u64) -> Entry {
    (i, vec![(i % 251) as u8; (i % 4) as usize * 32 * 1024])
}

/// A child looping on inserts (and reads) of values up to 96 KiB is SIGKILLed at random
/// points, six times: the server and the parent's client go on, and every entry is whole
/// and under its own key. (Each round has its own keys: a request the child wrote whole
/// before it died may still be executed after it was reaped.)
fn client_killed_mid_insert_leaves_server_and_dict_consistent(net: Net) {
    let _w = watchdog(120);
    const KEYS: u64 = 16;
    const ROUNDS: u64 = 6;
    let h = start(builder(net));
    let d = h.dict::<u64, Entry>().unwrap();
    let mut rng = Rng::new();
    let check = |items: &[(u64, Entry)]| {
        for (k, (i, body)) in items.iter().filter(|(k, _)| *k < 1_000_000) {
            assert_eq!(k % 1000, i % KEYS, "entry {i} under key {k}");
            assert_eq!(body, &entry(*i).1, "entry {i} torn");
        }
    };
    for round in 0..ROUNDS {
        let base = round * 1000;
        let d2 = d.clone();
        let p = spawn(move || {
            let mut i = 0u64;
            loop {
                d2.insert(base + i % KEYS, entry(i)).expect("insert in the child");
                // And a read of a (up to 96 KiB) value: kills land mid-reply too.
                if let Some((j, body)) = d2.get(&(base + (i + 1) % KEYS)).expect("get in the child") {
                    assert_eq!(body, entry(j).1, "the child read a torn entry");
                }
                i += 1;
            }
        });
        wait_for("the child's first insert", 30, || d.contains_key(&base).unwrap());
        thread::sleep(Duration::from_micros(rng.below(20_000)));
        kill_and_reap(&p);

        // The parent's client goes on, and every entry is whole and where it belongs.
        d.insert(1_000_000 + round, entry(round)).unwrap();
        let items = d.items().unwrap();
        assert!(items.iter().any(|(k, _)| (base..base + KEYS).contains(k)));
        check(&items);
    }
    let items = d.items().unwrap();
    check(&items);
    let parent: Vec<u64> = items.iter().map(|(k, _)| *k).filter(|k| *k >= 1_000_000).collect();
    assert_eq!(parent, (0..ROUNDS).map(|r| 1_000_000 + r).collect::<Vec<_>>());
    assert!(items.len() as u64 <= ROUNDS * (KEYS + 1));
    assert_serves(&h);
}
both!(client_killed_mid_insert_leaves_server_and_dict_consistent);

/// A child blocked in `get()` is killed; the item put afterwards is not swallowed by its
/// dead call: the parent gets it back itself.
fn item_put_after_a_killed_getter_is_not_swallowed(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let q = h.queue::<u64>().unwrap();
    for round in 0..3u64 {
        let ready = Event::new().unwrap();
        let (q2, ready2) = (q.clone(), ready.clone());
        let p = spawn(move || {
            ready2.set();
            let r = q2.get();
            panic!("get returned {r:?} in a child that should be blocked");
        });
        ready.wait();
        thread::sleep(SETTLE);
        kill_and_reap(&p);
        q.put(round).unwrap();
        let r = q.get_timeout(Duration::from_secs(3));
        assert!(
            matches!(r, Ok(x) if x == round),
            "round {round}: the item was swallowed by the dead getter: {r:?}"
        );
        assert_eq!(q.len().unwrap(), 0);
    }
    assert_serves(&h);
}
both!(item_put_after_a_killed_getter_is_not_swallowed);

/// A getter SIGKILLed at random points while it drains big items: each kill costs at most
/// the one item in flight (its reply written but never read), and no item is delivered
/// twice (a requeued item was never received).
fn getter_killed_mid_reply_loses_at_most_one_item_and_duplicates_none(net: Net) {
    let _w = watchdog(120);
    const N: u64 = 16;
    let h = start(builder(net));
    let q = h.queue::<(u64, Vec<u8>)>().unwrap();
    let mut rng = Rng::new();
    let body = |i: u64| vec![(i % 251) as u8; 32 * 1024];
    for round in 0..5u64 {
        for i in 0..N {
            q.put((i, body(i))).unwrap();
        }
        // Slot i: 1 once the child has received item i (and checked it).
        let got = shmkit::value::RawArray::<u64>::zeroed(N as usize).unwrap();
        let (q2, got2) = (q.clone(), got.clone());
        let p = spawn(move || loop {
            let (i, b) = q2.get().expect("get in the child");
            assert_eq!(b, body(i), "torn item {i}");
            assert_eq!(got2.get(i as usize), Some(0), "item {i} delivered twice");
            got2.set(i as usize, 1).unwrap();
        });
        wait_for("the child's first item", 30, || got.to_vec().contains(&1));
        thread::sleep(Duration::from_micros(rng.below(10_000)));
        kill_and_reap(&p);
        let mut left = Vec::new();
        while let Ok((i, b)) = q.try_get() {
            assert_eq!(b, body(i), "torn item {i} left in the queue");
            left.push(i);
        }
        let received: Vec<u64> = (0..N).filter(|&i| got.get(i as usize) == Some(1)).collect();
        for i in &left {
            assert!(!received.contains(i), "round {round}: item {i} was received and is still queued");
        }
        let mut sorted = left.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), left.len(), "round {round}: duplicates left in the queue: {left:?}");
        let lost = N as usize - received.len() - left.len();
        assert!(
            lost <= 1,
            "round {round}: {lost} items lost by one kill (received {received:?}, left {left:?})"
        );
    }
    assert_serves(&h);
}
both!(getter_killed_mid_reply_loses_at_most_one_item_and_duplicates_none);

/// A child holding the lock is killed: the next locker (a thread already waiting, then the
/// main thread) gets it, told once that the previous owner died.
fn lock_of_a_killed_holder_passes_on_with_owner_died(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let l = h.lock().unwrap();
    for _ in 0..2 {
        let held = Event::new().unwrap();
        let (l2, held2) = (l.clone(), held.clone());
        let p = spawn(move || {
            let _g = l2.lock().expect("lock in the child");
            held2.set();
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        });
        held.wait();
        let l3 = l.clone();
        let waiter = thread::spawn(move || l3.lock().map(|g| g.previous_owner_died()));
        thread::sleep(SETTLE);
        assert!(matches!(l.try_lock(), Err(ManagerError::WouldBlock)), "the child holds it");
        kill_and_reap(&p);
        let died = waiter.join().unwrap().expect("the waiting thread gets the lock");
        assert!(died, "the waiter is told the previous owner died");
        let g = l.lock_timeout(Duration::from_secs(5)).unwrap();
        assert!(!g.previous_owner_died(), "told once only");
        drop(g);
    }
    assert_serves(&h);
}
both!(lock_of_a_killed_holder_passes_on_with_owner_died);

/// Runs `block` (a call expected to block) in a child, and SIGKILLs and reaps the child
/// while it is (most likely) blocked in it on the server.
fn kill_blocked_child(block: impl FnOnce() + Send + 'static) {
    let ready = Event::new().unwrap();
    let ready2 = ready.clone();
    let p = spawn(move || {
        ready2.set();
        block();
        panic!("the blocking call returned in a child that should be blocked");
    });
    ready.wait();
    thread::sleep(SETTLE);
    kill_and_reap(&p);
}

fn killed_lock_waiter_has_no_effect(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let l = h.lock().unwrap();
    for round in 0..3 {
        let g = l.lock().unwrap();
        let l2 = l.clone();
        kill_blocked_child(move || drop(l2.lock()));
        drop(g);
        let g = l.lock_timeout(Duration::from_secs(5)).expect("the lock is free for the parent");
        assert!(
            !g.previous_owner_died(),
            "round {round}: a waiter killed before it got the lock is reported as a holder that died"
        );
    }
    assert_serves(&h);
}
both!(killed_lock_waiter_has_no_effect);

fn killed_event_waiter_has_no_effect(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let e = h.event().unwrap();
    let e2 = e.clone();
    let live = thread::spawn(move || e2.wait_timeout(Duration::from_secs(20)));
    let e3 = e.clone();
    kill_blocked_child(move || drop(e3.wait()));
    e.set().unwrap();
    assert!(live.join().unwrap().unwrap(), "the live waiter wakes");
    assert!(e.is_set().unwrap());
    assert!(e.wait_timeout(Duration::ZERO).unwrap());
    assert_serves(&h);
}
both!(killed_event_waiter_has_no_effect);

fn killed_join_waiter_has_no_effect(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let q = h.joinable_queue::<u32>().unwrap();
    q.put(1).unwrap();
    let q2 = q.clone();
    kill_blocked_child(move || drop(q2.join()));
    assert_eq!(q.unfinished().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 1);
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(5)).expect("join returns once the task is done");
    assert_eq!(q.unfinished().unwrap(), 0);
    assert_serves(&h);
}
both!(killed_join_waiter_has_no_effect);

fn killed_semaphore_waiter_takes_no_permit(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let s = h.semaphore(0).unwrap();
    for round in 0..3 {
        let s2 = s.clone();
        kill_blocked_child(move || drop(s2.acquire()));
        s.release().unwrap();
        let got = s.acquire_timeout(Duration::from_secs(2)).unwrap();
        assert!(got, "round {round}: the permit released after the waiter died went to the dead waiter");
    }
    assert_serves(&h);
}
both!(killed_semaphore_waiter_takes_no_permit);

// ---------------------------------------------------------------------------------------------
// 4. Server shutdown, death, socket files
// ---------------------------------------------------------------------------------------------

fn is_disconnected<T: std::fmt::Debug>(r: &Result<T, ManagerError>) -> bool {
    matches!(r, Err(ManagerError::Disconnected))
}

fn shutdown_disconnects_blocked_and_later_calls(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let c = h.client().clone();
    let q = c.queue::<u32>().unwrap();
    let e = c.event().unwrap();
    let s = c.semaphore(0).unwrap();
    let jq = c.joinable_queue::<u32>().unwrap();
    jq.put(1).unwrap();
    let d = c.dict::<u32, u32>().unwrap();
    let l = c.lock().unwrap();
    let g = l.lock().unwrap();

    // (A lock() blocked behind a holder has its own test below: the shutdown frees the lock.)
    let mut threads: Vec<thread::JoinHandle<Result<(), ManagerError>>> = Vec::new();
    let q2 = q.clone();
    threads.push(thread::spawn(move || q2.get().map(drop)));
    let e2 = e.clone();
    threads.push(thread::spawn(move || e2.wait()));
    let s2 = s.clone();
    threads.push(thread::spawn(move || s2.acquire()));
    let jq2 = jq.clone();
    threads.push(thread::spawn(move || jq2.join()));
    let (q3, e3, s3) = (q.clone(), e.clone(), s.clone());
    let children = [
        spawn(move || {
            let r = q3.get();
            assert!(is_disconnected(&r), "child get: {r:?}");
        }),
        spawn(move || {
            let r = e3.wait();
            assert!(is_disconnected(&r), "child wait: {r:?}");
        }),
        spawn(move || {
            let r = s3.acquire();
            assert!(is_disconnected(&r), "child acquire: {r:?}");
        }),
    ];
    thread::sleep(3 * SETTLE);
    let address = h.address().clone();
    let key = h.authkey().to_vec();
    h.shutdown().expect("clean shutdown");

    for t in threads {
        let r = t.join().unwrap();
        assert!(is_disconnected(&r), "blocked thread: {r:?}");
    }
    for p in &children {
        join_ok(p);
    }
    // Every later call, on old connections and new ones.
    for _ in 0..3 {
        assert!(is_disconnected(&c.ping()));
        assert!(is_disconnected(&d.get(&1)));
        assert!(is_disconnected(&q.put(1)));
        assert!(is_disconnected(&c.dict::<u8, u8>()));
        assert!(is_disconnected(&l.try_lock().map(drop)));
    }
    drop(g); // releasing on a dead server neither hangs nor panics
    assert!(matches!(Manager::connect(&address, &key), Err(ManagerError::Connect(..))));
    if let Address::Unix(p) = &address {
        assert!(!p.exists(), "the socket file is removed");
    }
}
both!(shutdown_disconnects_blocked_and_later_calls);

/// A `lock()` blocked behind a holder when the server shuts down gets `Disconnected`, not
/// the lock the shutdown freed by closing the holder's connection. The server closes
/// connections in hash order and a waiter's must come after its holder's: six locks with a
/// holder and a waiter each, six rounds.
fn lock_waiter_at_shutdown_is_disconnected_not_given_the_lock(net: Net) {
    let _w = watchdog(60);
    for round in 0..6 {
        let h = start(builder(net));
        let locks: Vec<_> = (0..6).map(|_| h.lock().unwrap()).collect();
        let guards: Vec<_> = locks.iter().map(|l| l.lock().unwrap()).collect();
        let waiters: Vec<_> = locks
            .iter()
            .map(|l| {
                let l = l.clone();
                thread::spawn(move || l.lock().map(|g| g.previous_owner_died()))
            })
            .collect();
        thread::sleep(SETTLE);
        h.shutdown().unwrap();
        for (i, w) in waiters.into_iter().enumerate() {
            let r = w.join().unwrap();
            assert!(
                is_disconnected(&r),
                "round {round}, lock {i}: a lock() blocked at shutdown returned {r:?}"
            );
        }
        drop(guards);
    }
}
both!(lock_waiter_at_shutdown_is_disconnected_not_given_the_lock);

fn killed_server_disconnects_everyone_and_drop_cleans_up(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let c = h.client().clone();
    let q = c.queue::<u32>().unwrap();
    let e = c.event().unwrap();
    let d = c.dict::<u32, u32>().unwrap();
    d.insert(1u32, 1).unwrap();
    let (q2, e2, q3) = (q.clone(), e.clone(), q.clone());
    let t1 = thread::spawn(move || q2.get());
    let t2 = thread::spawn(move || e2.wait());
    let child = spawn(move || {
        let r = q3.get();
        assert!(is_disconnected(&r), "child get: {r:?}");
    });
    thread::sleep(3 * SETTLE);
    sigkill(h.pid());
    let r1 = t1.join().unwrap();
    assert!(is_disconnected(&r1), "{r1:?}");
    let r2 = t2.join().unwrap();
    assert!(is_disconnected(&r2), "{r2:?}");
    join_ok(&child);
    wait_for("the server process to be gone", 10, || !h.is_alive());
    for _ in 0..3 {
        assert!(is_disconnected(&c.ping()));
        assert!(is_disconnected(&d.get(&1)));
        assert!(is_disconnected(&c.queue::<u8>()));
    }
    let dir = match net {
        Net::Unix => Some(unix_path(h.address()).parent().unwrap().to_path_buf()),
        Net::Tcp => None,
    };
    if let Some(dir) = &dir {
        assert!(dir.exists());
        assert!(dir.file_name().unwrap().to_str().unwrap().starts_with("shmkit-manager-"));
    }
    drop(h); // neither hangs nor panics
    if let Some(dir) = &dir {
        assert!(!dir.exists(), "the private socket dir {} outlived the handle", dir.display());
    }
}
both!(killed_server_disconnects_everyone_and_drop_cleans_up);

#[test]
fn user_socket_path_is_0600_and_removed_on_clean_shutdown() {
    let _w = watchdog(60);
    let dir = TempDir::new("path");
    let path = dir.join("m.sock");
    let h = start(Manager::builder().address(path.to_str().unwrap()).authkey(b"k"));
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_serves(&Manager::connect(path.to_str().unwrap(), b"k").unwrap());
    h.shutdown().unwrap();
    assert!(!path.exists(), "the socket file outlived a clean shutdown");

    // A server in a thread of this process (held under FORK: its listener must not leak
    // into a child), stopped by its Stopper.
    forking(|| {
        let srv = Manager::builder().address(path.to_str().unwrap()).authkey(b"k").bind().unwrap();
        let stopper = srv.stopper();
        let t = thread::spawn(move || srv.serve());
        let c = Manager::connect(path.to_str().unwrap(), b"k").unwrap();
        assert_serves(&c);
        stopper.stop();
        t.join().unwrap().unwrap();
        assert!(!path.exists(), "the socket file outlived Server::serve");
        assert!(is_disconnected(&c.ping()));
    });
}

#[test]
fn stale_socket_is_replaced_and_a_live_one_refused() {
    let _w = watchdog(60);
    let dir = TempDir::new("stale");
    let path = dir.join("m.sock");
    let p = path.to_str().unwrap();
    let h1 = start(Manager::builder().address(p).authkey(b"one"));
    sigkill(h1.pid());
    wait_for("the first server to die", 10, || !h1.is_alive());
    assert!(path.exists(), "a SIGKILLed server leaves its socket file");

    let h2 = start(Manager::builder().address(p).authkey(b"two"));
    assert_serves(&Manager::connect(p, b"two").unwrap());
    let r = Manager::builder().address(p).authkey(b"three").bind();
    assert!(matches!(r, Err(ManagerError::Bind(..))), "{r:?}");
    let r = forking(|| Manager::builder().address(p).authkey(b"three").start());
    assert!(matches!(r, Err(ManagerError::Bind(..))), "{r:?}");
    drop(h1);
    assert_serves(&h2);
    h2.shutdown().unwrap();
    assert!(!path.exists());
}

/// A handle whose server was SIGKILLed and replaced at the same path (same key: the usual
/// configured address and key) must not reach the new server: not through its stale
/// proxies (object ids of another server), not by shutting the new one down on drop.
#[test]
fn replaced_server_is_not_reached_by_the_old_handle() {
    let _w = watchdog(60);
    let dir = TempDir::new("replace");
    let path = dir.join("m.sock");
    let p = path.to_str().unwrap();
    let h1 = start(Manager::builder().address(p).authkey(b"k"));
    let d1 = h1.dict::<String, u32>().unwrap();
    d1.insert("old", 1).unwrap();
    sigkill(h1.pid());
    wait_for("the first server to die", 10, || !h1.is_alive());
    // The pooled connection is dead: the first call says so.
    assert!(is_disconnected(&d1.get("old")));

    let h2 = start(Manager::builder().address(p).authkey(b"k"));
    let d2 = h2.dict::<String, u32>().unwrap();
    d2.insert("new", 2).unwrap();

    let stale_get = d1.get("new");
    let stale_insert = d1.insert("intruder", 9);
    let intruded = d2.get("intruder").unwrap();
    drop(h1);
    let h2_alive = h2.ping();
    assert!(
        is_disconnected(&stale_get)
            && is_disconnected(&stale_insert)
            && intruded.is_none()
            && h2_alive.is_ok(),
        "the old handle reached the new server: stale get {stale_get:?}, stale insert {stale_insert:?}, \
         new dict now has intruder={intruded:?}; new server after the old handle's drop: {h2_alive:?}"
    );
    assert_serves(&h2);
    drop(h2);
}

/// Docs of `ManagerHandle::shutdown`: it kills the server if it has not ended within 5 s. A
/// server that does not answer at all (stopped here) must not make it hang.
#[test]
fn handle_shutdown_returns_when_the_server_does_not_answer() {
    let _w = watchdog(90);
    let h = start(builder(Net::Unix));
    let pid = h.pid();
    assert_serves(&h);
    signal(pid, libc::SIGSTOP);
    // kill() returns before the stop: wait until every thread of the server is stopped.
    wait_for("the server to stop", 10, || {
        std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().all(|t| {
            let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("T")
        })
    });
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let r = h.shutdown();
        let _ = tx.send(format!("{r:?}"));
    });
    let got = rx.recv_timeout(Duration::from_secs(8));
    if got.is_err() {
        // Unstick it: a killed server ends the blocked request.
        signal(pid, libc::SIGKILL);
    }
    t.join().unwrap();
    assert!(got.is_ok(), "ManagerHandle::shutdown hung on a server that does not answer (8 s; the docs say it kills after 5 s)");
}

/// Role of [`killed_starter_takes_its_server_along_and_the_next_start_cleans_up`]: start a
/// manager, say where, wait to be killed.
#[test]
#[ignore = "a role process of another test"]
fn role_entry() {
    let Some((role, _)) = common::role() else { return };
    assert_eq!(role, "start-and-wait");
    let h = Manager::start().unwrap();
    println!("READY {} {}", h.pid(), h.address());
    io::stdout().flush().unwrap();
    // Killed long before this; if the test failed, do not linger.
    thread::sleep(Duration::from_secs(60));
}

/// The process that started a manager is SIGKILLed: its server dies with it (a daemon),
/// and its private socket directory does not outlive the next `Manager::start`.
#[test]
fn killed_starter_takes_its_server_along_and_the_next_start_cleans_up() {
    use std::io::BufRead;
    let _w = watchdog(60);
    let mut cmd = common::role_command("role_entry", "start-and-wait", &[]);
    cmd.stdout(std::process::Stdio::piped());
    let mut starter = forking(|| cmd.spawn()).expect("run the starter");
    let out = io::BufReader::new(starter.stdout.take().unwrap());
    // libtest prints "test role_entry ... " first, on the same line.
    let line = out.lines().map(Result::unwrap).find_map(|l| Some(l.split_once("READY ")?.1.to_string()));
    let line = line.expect("the starter's READY line");
    let mut words = line.split_whitespace();
    let server: u32 = words.next().unwrap().parse().unwrap();
    let sock = PathBuf::from(words.next().unwrap());
    let dir = sock.parent().unwrap().to_path_buf();
    assert!(sock.exists());

    sigkill(starter.id());
    starter.wait().unwrap();
    // Gone, or a zombie nobody reaps (PID 1 of a container may not).
    wait_for(
        "the server to die with its starter",
        10,
        || !matches!(common::proc_state(server), Some(s) if s != 'Z'),
    );
    // The server removes the directory as it leaves, or (if it could not) the next
    // Manager::start does.
    let h = start(Manager::builder());
    assert!(!dir.exists(), "the dead starter's directory {} is still there", dir.display());
    assert_serves(&h);
}

/// A handle started in a thread that then exits (a lazily started manager, a worker
/// thread's) keeps its server: the process lives on, so must its daemon server.
#[test]
fn manager_started_in_a_thread_that_exits_keeps_serving() {
    let _w = watchdog(60);
    let h = thread::spawn(|| start(builder(Net::Unix))).join().unwrap();
    thread::sleep(Duration::from_millis(200));
    assert!(h.is_alive(), "the server process died with the thread that started it");
    assert_serves(&h);
}

// ---------------------------------------------------------------------------------------------
// 5. Timeouts: honoured, never early
// ---------------------------------------------------------------------------------------------

fn timeouts_are_honoured_never_early(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net));
    let q = h.queue::<u32>().unwrap();
    let full = h.queue_bounded::<u32>(1).unwrap();
    full.put(1).unwrap();
    let l = h.lock().unwrap();
    let g = l.lock().unwrap();
    let e = h.event().unwrap();
    let s = h.semaphore(0).unwrap();
    let jq = h.joinable_queue::<u32>().unwrap();
    jq.put(1).unwrap();

    for t in [Duration::from_millis(1), Duration::from_millis(30), Duration::from_millis(150)] {
        let timed = |what: &str, f: &dyn Fn() -> bool| {
            let t0 = Instant::now();
            assert!(f(), "{what}({t:?}) did not time out as it should");
            let took = t0.elapsed();
            assert!(took >= t, "{what}({t:?}) returned after {took:?}, before its timeout");
        };
        timed("get_timeout", &|| matches!(q.get_timeout(t), Err(ManagerError::Timeout)));
        timed("put_timeout", &|| matches!(full.put_timeout(2, t), Err(ManagerError::Timeout)));
        timed("lock_timeout", &|| matches!(l.lock_timeout(t), Err(ManagerError::Timeout)));
        timed("wait_timeout", &|| matches!(e.wait_timeout(t), Ok(false)));
        timed("acquire_timeout", &|| matches!(s.acquire_timeout(t), Ok(false)));
        timed("join_timeout", &|| matches!(jq.join_timeout(t), Err(ManagerError::Timeout)));
    }
    // A timeout too large for the clock means no timeout (no overflow, no panic).
    q.put(5).unwrap();
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 5);
    let l2 = h.lock().unwrap();
    drop(l2.lock_timeout(Duration::MAX).unwrap());
    let e2 = h.event().unwrap();
    e2.set().unwrap();
    assert!(e2.wait_timeout(Duration::MAX).unwrap());
    let s2 = h.semaphore(1).unwrap();
    assert!(s2.acquire_timeout(Duration::MAX).unwrap());
    let jq2 = h.joinable_queue::<u32>().unwrap();
    jq2.join_timeout(Duration::MAX).unwrap();
    // Nothing happened on the way.
    assert_eq!(full.len().unwrap(), 1);
    assert_eq!(full.get().unwrap(), 1);
    assert_eq!(s.value().unwrap(), 0);
    assert_eq!(jq.unfinished().unwrap(), 1);
    drop(g);
    assert!(!l.try_lock().unwrap().previous_owner_died());
    assert_serves(&h);
}
both!(timeouts_are_honoured_never_early);

// ---------------------------------------------------------------------------------------------
// 6. max_connections
// ---------------------------------------------------------------------------------------------

/// Authenticated raw connections, opened one after the other until the server says Busy
/// (at most `n`).
fn fill_with_raws(h: &ManagerHandle, n: usize) -> Vec<Raw> {
    let mut raws = Vec::new();
    for _ in 0..n {
        let mut r = Raw::connect(h.address());
        let ServerHello::Challenge { nonce, .. } = r.recv() else { break };
        let mine = [3u8; 32];
        r.send(&ClientAnswer { mac: mac(h.authkey(), &[CLIENT_TAG, nonce.as_slice()]), nonce: mine })
            .unwrap();
        match r.recv_frame().ok().and_then(|b| postcard::from_bytes::<ServerVerdict>(&b).ok()) {
            Some(ServerVerdict::Welcome { .. }) => {
                // A round trip: the server has counted this one in before the next comes.
                r.send(&Request::Ping).unwrap();
                assert_eq!(r.recv::<Response>(), Response::Unit);
                raws.push(r);
            }
            _ => break,
        }
    }
    raws
}

/// A full server tells the next client `Busy`; once a connection closes, a new client
/// gets in. (Filled with raw connections: however many connections a client keeps, the
/// server is full when a raw handshake is refused.)
fn max_connections_says_busy_then_makes_room(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net).max_connections(4));
    // Round trips on whatever connections the handle keeps, so they are all counted in.
    assert_serves(&h);
    let mut raws = fill_with_raws(&h, 8);
    assert!(!raws.is_empty(), "no room on a server of 4");
    let r = raws.last_mut().unwrap();
    r.send(&Request::Stats).unwrap();
    let Response::Stats { connections, .. } = r.recv() else { panic!("stats") };
    assert_eq!(connections, 4, "a full server of max_connections(4)");
    for _ in 0..3 {
        let r = Manager::connect(h.address(), h.authkey());
        assert!(matches!(r, Err(ManagerError::Busy)), "a client of a full server: {r:?}");
    }
    // The full server still serves the connections it has.
    let r = raws.last_mut().unwrap();
    r.send(&Request::Ping).unwrap();
    assert_eq!(r.recv::<Response>(), Response::Unit);
    raws.pop().unwrap().shutdown();
    // The server notices the closed connection in its own time: retry while Busy.
    let deadline = Instant::now() + Duration::from_secs(20);
    let c = loop {
        match Manager::connect(h.address(), h.authkey()) {
            Ok(c) => break c,
            Err(ManagerError::Busy) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("no room after a connection closed: {e}"),
        }
    };
    drop(raws);
    wait_for("room for the handle's calls", 20, || !matches!(h.ping(), Err(ManagerError::Busy)));
    assert_serves(&h);
    assert_serves(&c);
}
both!(max_connections_says_busy_then_makes_room);

/// `max_connections` holds when clients authenticate at the same time: six handshakes
/// started together (all accepted while slots were free) must not take the server past
/// its limit (the slot must be taken when the key is proven, not when the connection is
/// accepted).
fn max_connections_holds_for_concurrent_handshakes(net: Net) {
    let _w = watchdog(60);
    let h = start(builder(net).max_connections(4));
    let mut raws: Vec<(Raw, [u8; 32])> = Vec::new();
    for _ in 0..6 {
        let mut r = Raw::connect(h.address());
        if let ServerHello::Challenge { nonce, .. } = r.recv() {
            raws.push((r, nonce));
        }
    }
    assert_eq!(raws.len(), 6, "every handshake started while the server had room");
    let mut admitted = Vec::new();
    for (mut r, nonce) in raws {
        let mine = [9u8; 32];
        r.send(&ClientAnswer { mac: mac(h.authkey(), &[CLIENT_TAG, nonce.as_slice()]), nonce: mine })
            .unwrap();
        // Welcome, or anything else (another verdict, a close): not admitted.
        let verdict = r.recv_frame().ok().and_then(|b| postcard::from_bytes::<ServerVerdict>(&b).ok());
        if matches!(verdict, Some(ServerVerdict::Welcome { .. })) {
            admitted.push(r);
        }
    }
    // The handle holds at least its home connection: at most three more fit.
    assert!(!admitted.is_empty(), "the server had room for at least one more");
    assert!(
        admitted.len() <= 3,
        "max_connections(4), the handle connected: {} of 6 concurrent handshakes were let in",
        admitted.len()
    );
    drop(admitted);
    wait_for("room for the handle's calls", 20, || !matches!(h.ping(), Err(ManagerError::Busy)));
    assert_serves(&h);
}
both!(max_connections_holds_for_concurrent_handshakes);

// ---------------------------------------------------------------------------------------------
// 7. Addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn address_errors() {
    let _w = watchdog(60);
    // Not loopback without allow_remote, for bind and start.
    let r = Manager::builder().address("0.0.0.0:0").bind();
    assert!(matches!(r, Err(ManagerError::NotLoopback(_))), "{r:?}");
    let r = forking(|| Manager::builder().address("0.0.0.0:0").start());
    assert!(matches!(r, Err(ManagerError::NotLoopback(_))), "{r:?}");
    forking(|| {
        let srv = Manager::builder().address("0.0.0.0:0").allow_remote(true).bind().expect("allowed");
        drop(srv);
        let srv = Manager::builder().address("localhost:0").bind().expect("localhost is loopback");
        drop(srv);
    });

    // Unparseable.
    for bad in ["nonsense", "host:", ":80", "host:99999", "unix:", "tcp:nohost"] {
        let r = Manager::connect(bad, b"k");
        assert!(matches!(r, Err(ManagerError::Address(_))), "{bad}: {r:?}");
        let r = Manager::builder().address(bad).bind();
        assert!(matches!(r, Err(ManagerError::Address(_))), "{bad}: {r:?}");
    }
    let r = Manager::builder().bind();
    assert!(matches!(r, Err(ManagerError::Address(_))), "bind needs an address: {r:?}");

    // Nothing there.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let r = Manager::connect(format!("127.0.0.1:{port}"), b"k");
    assert!(
        matches!(&r, Err(ManagerError::Connect(_, e)) if e.kind() == io::ErrorKind::ConnectionRefused),
        "{r:?}"
    );
    let dir = TempDir::new("nothing");
    let r = Manager::connect(dir.join("none.sock").to_str().unwrap(), b"k");
    assert!(matches!(&r, Err(ManagerError::Connect(_, e)) if e.kind() == io::ErrorKind::NotFound), "{r:?}");
    // A file that is not a socket is not replaced by a bind.
    let file = dir.join("plain");
    std::fs::write(&file, b"keep me").unwrap();
    let r = Manager::builder().address(file.to_str().unwrap()).bind();
    assert!(matches!(r, Err(ManagerError::Bind(..))), "{r:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // Manager::start's private socket: directory 0700, socket 0600.
    let h = start(Manager::builder());
    let sock = unix_path(h.address()).to_path_buf();
    assert_eq!(std::fs::metadata(sock.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_serves(&h);
    drop(h);
    assert!(!sock.parent().unwrap().exists(), "the private dir is removed on drop");
}
