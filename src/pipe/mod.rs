//! `Pipe` and `Connection`: Python's `multiprocessing.Pipe` on shared-memory frame rings.
//!
//! A duplex pipe is two MPMC rings of byte frames (see [`queue`](crate::queue)) in one
//! segment; each [`Connection`] sends on one and receives from the other. A simplex pipe
//! has one ring, a receiving end and a sending end. Nothing goes through the kernel unless
//! a side has to sleep (a futex).
//!
//! | call | Python |
//! |---|---|
//! | [`Pipe::new`] → `(a, b)` | `Pipe()` |
//! | [`Pipe::simplex`] → `(reader, writer)` | `Pipe(duplex=False)` |
//! | [`Pipe::create`] / [`Pipe::open`] | a pipe between unrelated processes, by name |
//! | [`send_bytes`](Connection::send_bytes) / [`recv_bytes`](Connection::recv_bytes) / [`recv_bytes_into`](Connection::recv_bytes_into) | same names |
//! | [`send`](Connection::send) / [`recv`](Connection::recv) | `send`/`recv` of `Pod` values |
//! | `send_serde` / `recv_serde` (feature `serde`) | `send`/`recv` of any object (postcard, not pickle) |
//! | [`poll`](Connection::poll), [`wait`] | `poll`, `multiprocessing.connection.wait` |
//! | [`close`](Connection::close) | `close` |
//!
//! # Messages
//! Each message is at most [`max_message`](Connection::max_message) bytes (64 KiB by
//! default, set with [`PipeBuilder::max_message`]); a longer one is
//! [`ConnectionError::TooLarge`] and nothing is sent. At most
//! [`capacity`](PipeBuilder::capacity) messages wait in each direction (64 by default);
//! a sender then blocks. Memory: `capacity × (max_message + 12)` bytes per direction, of
//! which only the touched pages are ever resident.
//!
//! A receive that cannot hand a message over — `recv_bytes_into` with a buffer too small
//! ([`ConnectionError::BufferTooSmall`], which reports the size needed), `recv` of a message
//! of another size, `recv_serde` of bytes that do not decode — keeps the message: the next
//! receive on this connection in this process returns it.
//!
//! # End of file
//! As with an OS pipe, an end is alive while some process holds a handle to it: made,
//! opened, or inherited through `fork` (drop the end you do not use after forking, as in
//! Python; a child counts as a holder from the moment `fork` is called, even before it first
//! runs — for up to 2 s, and for the first 128 duplex pipes and queues of a process, whose
//! rings a fork handler can list). When every holder of the other end has closed or dropped it, or died — even by
//! SIGKILL — a receiver drains what was sent, then gets [`ConnectionError::Disconnected`];
//! it never hangs. A close is noticed at once (tens of microseconds); a death within
//! 10 ms of blocking, then within 100 ms. A send to such an end fails with
//! `Disconnected` too: at once when the pipe is full, otherwise on the first send and then
//! at the first send after each 64 that finds 10 ms passed since the last check; in an
//! anonymous pipe, every send after that fails as well. A named
//! pipe's first end waits for its peer: until [`Pipe::open`] was called once, nothing is
//! reported missing.
//!
//! # Examples
//! ```
//! use shmkit::pipe::Pipe;
//!
//! let (a, b) = Pipe::new()?;
//! a.send_bytes(b"ping")?;
//! assert_eq!(b.recv_bytes()?, b"ping");
//! b.send(&42u64)?;
//! assert_eq!(a.recv::<u64>()?, 42);
//! let mut small = [0u8; 2];
//! a.send_bytes(b"too long")?;
//! assert!(b.recv_bytes_into(&mut small).is_err()); // reports 8 bytes needed, keeps it
//! assert_eq!(b.recv_bytes()?, b"too long");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::futex::WaitCell;
use crate::primitive::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use crate::queue::core::Wait;
use crate::queue::frames::{frame_geometry, max_frame, recv_frame, send_frame};
use crate::queue::raw::{mpmc, Geometry, GeometryError, FLAVOR_MPMC};
use crate::queue::ring::{block_with, Patience, Ring, Role};
use crate::queue::{QueueCreateError, QueueOpenError, RecvError, SendError};
use crate::shm::{Kind, Offset, Segment, Shareable};

pub(crate) const KIND_PIPE: u32 = 18;

fn pipe_kind() -> Kind {
    Kind::new(KIND_PIPE, 0)
}

/// Default messages waiting per direction.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default largest message, in bytes (an OS pipe's buffer on Linux).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// The pipe's own header at payload offset 0; the rings follow at 128-aligned offsets.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PipeHeader {
    /// 2 for a duplex pipe (two rings), 1 for a simplex one.
    rings: AtomicU32,
    /// Non-zero once the second end of a named pipe was opened (anonymous pipes: at once).
    peer_attached: AtomicU32,
    capacity: AtomicU64,
    max_message: AtomicU64,
}

// SAFETY: u32/u64 atomics, `#[repr(C)]`; every value is validated before use.
unsafe impl Shareable for PipeHeader {}

const RINGS_AT: usize = 128;

/// Where the rings of a pipe with this geometry live, and the bytes it needs.
pub(crate) fn layout(geo: &Geometry, rings: usize) -> Result<([usize; 2], usize), GeometryError> {
    let ring = Ring::size_for(geo)?.checked_next_multiple_of(128).ok_or(GeometryError::TooLarge)?;
    let second = RINGS_AT.checked_add(ring).ok_or(GeometryError::TooLarge)?;
    let total = RINGS_AT.checked_add(ring.checked_mul(rings).ok_or(GeometryError::TooLarge)?);
    Ok(([RINGS_AT, second], total.ok_or(GeometryError::TooLarge)?))
}

/// Why a connection operation failed. Nothing is lost: a message that could not be
/// delivered stays queued or is kept for the next receive.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// Every holder of the other end closed it or died, and nothing is left to receive (or,
    /// for a send, nobody is left to receive it). Python's `EOFError` / `BrokenPipeError`.
    #[error("the other end of the pipe is closed or gone")]
    Disconnected,
    /// The timeout passed first.
    #[error("timed out")]
    Timeout,
    /// A `try_*` call found the pipe full (send) or empty (receive).
    #[error("the operation would block")]
    WouldBlock,
    /// This connection was closed by [`Connection::close`].
    #[error("this connection is closed")]
    Closed,
    /// A send on the receiving end of a simplex pipe.
    #[error("this end of the pipe only receives")]
    NotWritable,
    /// A receive on the sending end of a simplex pipe.
    #[error("this end of the pipe only sends")]
    NotReadable,
    /// The message is longer than the pipe's maximum; nothing was sent.
    #[error("message of {len} bytes above the pipe's maximum of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The pipe's largest message.
        max: usize,
    },
    /// The buffer given to `recv_bytes_into` is shorter than the message, which is kept for
    /// the next receive (Python's `BufferTooShort`).
    #[error("buffer too small: the message has {needed} bytes")]
    BufferTooSmall {
        /// The message's length.
        needed: usize,
    },
    /// `recv::<T>` found a message that is not `size_of::<T>()` bytes long; it is kept.
    #[error("message of {len} bytes where {expected} were expected")]
    WrongSize {
        /// The message's length.
        len: usize,
        /// `size_of::<T>()`.
        expected: usize,
    },
    /// A value could not be encoded (feature `serde`).
    #[error("encode: {0}")]
    Encode(String),
    /// A message did not decode as the requested type (feature `serde`); it is kept.
    #[error("decode: {0}")]
    Decode(String),
    /// The shared ring holds impossible state (a peer wrote garbage).
    #[error("corrupted pipe: {0}")]
    Corrupted(&'static str),
}

impl From<RecvError> for ConnectionError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Empty => ConnectionError::WouldBlock,
            RecvError::Timeout => ConnectionError::Timeout,
            RecvError::Disconnected => ConnectionError::Disconnected,
            RecvError::Corrupted(w) | RecvError::Decode(w) => ConnectionError::Corrupted(w),
            _ => ConnectionError::Corrupted("unexpected receive failure"),
        }
    }
}

impl<T> From<SendError<T>> for ConnectionError {
    fn from(e: SendError<T>) -> Self {
        match e {
            SendError::Full(_) => ConnectionError::WouldBlock,
            SendError::Timeout(_) => ConnectionError::Timeout,
            SendError::Disconnected(_) => ConnectionError::Disconnected,
            SendError::TooLarge { len, max, .. } => ConnectionError::TooLarge { len, max },
            SendError::Encode(_) => ConnectionError::Encode("value could not be encoded".into()),
            _ => ConnectionError::Corrupted("ring stamps contradict head or tail"),
        }
    }
}

/// Options for a new pipe.
///
/// # Examples
/// ```
/// let (a, b) = shmkit::pipe::Pipe::builder().capacity(8).max_message(1 << 20).build()?;
/// a.send_bytes(&vec![7u8; 1 << 20])?;
/// assert_eq!(b.recv_bytes()?.len(), 1 << 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct PipeBuilder {
    capacity: usize,
    max_message: usize,
}

impl Default for PipeBuilder {
    fn default() -> Self {
        PipeBuilder { capacity: DEFAULT_CAPACITY, max_message: DEFAULT_MAX_MESSAGE }
    }
}

impl PipeBuilder {
    /// Messages waiting per direction before a sender blocks (rounded up to a power of two;
    /// 0 is an error at build time).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages;
        self
    }

    /// The largest message, in bytes.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    fn make(
        self,
        rings: usize,
        name: Option<&str>,
    ) -> Result<(Arc<Segment>, [Arc<Ring>; 2]), QueueCreateError> {
        let geo = frame_geometry(self.capacity, self.max_message)?;
        let (at, total) = layout(&geo, rings)?;
        let builder = Segment::builder(pipe_kind(), total);
        let seg = match name {
            Some(n) => builder.named(n)?,
            None => builder.anonymous()?,
        };
        let h: &PipeHeader = seg.get(Offset::new(0))?;
        // Relaxed: the segment's publication orders these before any opener reads them.
        h.rings.store(rings as u32, Ordering::Relaxed);
        h.capacity.store(self.capacity as u64, Ordering::Relaxed);
        h.max_message.store(self.max_message as u64, Ordering::Relaxed);
        h.peer_attached.store(u32::from(name.is_none()), Ordering::Relaxed);
        for &a in &at[..rings] {
            Ring::prepare(&seg, a, &geo)?;
        }
        let seg = Arc::new(seg.publish());
        let attach = |a: usize| {
            Ring::at_existing(seg.clone(), a, FLAVOR_MPMC, geo.elem_size).map(Arc::new).map_err(|e| match e {
                QueueOpenError::Geometry(g) => QueueCreateError::Geometry(g),
                QueueOpenError::Shm(_) => QueueCreateError::Geometry(GeometryError::Mismatch("pipe ring")),
            })
        };
        let r0 = attach(at[0])?;
        let r1 = if rings == 2 { attach(at[1])? } else { r0.clone() };
        Ok((seg, [r0, r1]))
    }

    /// A duplex pipe in a new anonymous segment (inherited by `fork`).
    ///
    /// # Errors
    /// [`QueueCreateError`] for a zero capacity, sizes too large, or a segment error.
    pub fn build(self) -> Result<(Connection, Connection), QueueCreateError> {
        let (seg, [r0, r1]) = self.make(2, None)?;
        let a = Connection::new(seg.clone(), Some(r1.clone()), Some(r0.clone()));
        let b = Connection::new(seg, Some(r0), Some(r1));
        Ok((a, b))
    }

    /// A simplex pipe: `(reader, writer)`.
    ///
    /// # Errors
    /// As [`PipeBuilder::build`].
    pub fn simplex(self) -> Result<(Connection, Connection), QueueCreateError> {
        let (seg, [r0, _]) = self.make(1, None)?;
        let reader = Connection::new(seg.clone(), Some(r0.clone()), None);
        let writer = Connection::new(seg, None, Some(r0));
        Ok((reader, writer))
    }

    /// A duplex pipe in a new named segment: returns the first end; another process gets
    /// the second with [`Pipe::open`]. Until then, the first end's receives wait (they do
    /// not report a missing peer).
    ///
    /// # Errors
    /// As [`PipeBuilder::build`], or the name is taken or invalid.
    pub fn create(self, name: &str) -> Result<Connection, QueueCreateError> {
        let (seg, [r0, r1]) = self.make(2, Some(name))?;
        let h: &PipeHeader = seg.get(Offset::new(0))?;
        // Until the other end is first opened, nobody is missing: blocked sends and
        // receives wait instead of reporting a disconnection.
        r0.set_gate(&h.peer_attached);
        r1.set_gate(&h.peer_attached);
        Ok(Connection::new(seg, Some(r1), Some(r0)))
    }
}

/// Creates pipes: see the [module docs](self).
#[derive(Debug)]
pub struct Pipe;

impl Pipe {
    /// A duplex pipe with the default sizes: two connected [`Connection`]s.
    ///
    /// # Errors
    /// As [`PipeBuilder::build`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Result<(Connection, Connection), QueueCreateError> {
        PipeBuilder::default().build()
    }

    /// A simplex pipe with the default sizes: `(reader, writer)`.
    ///
    /// # Errors
    /// As [`PipeBuilder::build`].
    pub fn simplex() -> Result<(Connection, Connection), QueueCreateError> {
        PipeBuilder::default().simplex()
    }

    /// Options: capacity and largest message.
    pub fn builder() -> PipeBuilder {
        PipeBuilder::default()
    }

    /// A named duplex pipe with the default sizes; see [`PipeBuilder::create`].
    ///
    /// # Errors
    /// As [`PipeBuilder::create`].
    pub fn create(name: &str) -> Result<Connection, QueueCreateError> {
        PipeBuilder::default().create(name)
    }

    /// The second end of a pipe made by [`Pipe::create`] (sizes are read from the segment
    /// and checked).
    ///
    /// # Errors
    /// [`QueueOpenError`]: missing, not a pipe, or a header or ring that disagrees with the
    /// segment.
    pub fn open(name: &str) -> Result<Connection, QueueOpenError> {
        let seg = Arc::new(Segment::open(name, pipe_kind())?);
        let (rings, [r0, r1]) = attach(&seg)?;
        if rings != 2 {
            return Err(GeometryError::Mismatch("a named pipe has two rings").into());
        }
        let h: &PipeHeader = seg.get(Offset::new(0)).map_err(|_| GeometryError::Mismatch("pipe header"))?;
        let conn = Connection::new(seg.clone(), Some(r0), Some(r1));
        // Release: our member records (made above) are visible before the flag.
        h.peer_attached.store(1, Ordering::Release);
        Ok(conn)
    }
}

/// What a pipe segment holds, for [`crate::inspect`]: its header and each direction's ring,
/// validated as [`attach`] validates them but read without being used (no end is opened, no
/// member registered: see `Ring`'s `view`).
pub(crate) fn inspect(seg: &Segment, kind: Kind) -> crate::inspect::Contents {
    use crate::inspect::{Contents, PipeView, OTHER_LAYOUT};
    use crate::queue::frames::describe;
    use crate::queue::ring::view;

    if kind != pipe_kind() {
        return OTHER_LAYOUT;
    }
    let Ok(h) = seg.get::<PipeHeader>(Offset::new(0)) else {
        return Contents::Corrupted("payload too small for a pipe header");
    };
    // Relaxed (every load here): a snapshot for display, maybe of read-only memory.
    let rings = h.rings.load(Ordering::Relaxed);
    let capacity = h.capacity.load(Ordering::Relaxed);
    let max_message = h.max_message.load(Ordering::Relaxed);
    if rings != 1 && rings != 2 {
        return Contents::Corrupted("pipe ring count neither 1 nor 2");
    }
    let geo = usize::try_from(capacity)
        .ok()
        .zip(usize::try_from(max_message).ok())
        .and_then(|(c, m)| frame_geometry(c, m).ok());
    let Some(geo) = geo else { return Contents::Corrupted("impossible pipe capacity or message size") };
    let Ok((at, total)) = layout(&geo, rings as usize) else {
        return Contents::Corrupted("impossible pipe capacity or message size");
    };
    if total > seg.payload_len() {
        return Contents::Corrupted("pipe larger than its segment");
    }
    let ring = |a: usize| {
        let mut r = view(seg, a, FLAVOR_MPMC, false)?;
        // Each ring must have the header's shape: a larger one would reach into the next.
        if (r.capacity, r.slots, r.slot_bytes) != (geo.capacity, geo.slots, geo.elem_size) {
            return Err("ring differs from the pipe header");
        }
        describe(&mut r);
        Ok(r)
    };
    Contents::Pipe(PipeView {
        duplex: rings == 2,
        peer_attached: h.peer_attached.load(Ordering::Relaxed) != 0,
        capacity,
        max_message,
        rings: at[..rings as usize].iter().map(|&a| ring(a)).collect(),
    })
}

/// Attaches the rings of a pipe segment, validating its header (the fuzzed decoder).
pub(crate) fn attach(seg: &Arc<Segment>) -> Result<(usize, [Arc<Ring>; 2]), QueueOpenError> {
    let h: &PipeHeader = seg.get(Offset::new(0)).map_err(|_| GeometryError::Mismatch("pipe header"))?;
    // Relaxed: the segment's publication ordered the header.
    let rings = h.rings.load(Ordering::Relaxed) as usize;
    if rings != 1 && rings != 2 {
        return Err(GeometryError::Mismatch("pipe ring count").into());
    }
    let capacity =
        usize::try_from(h.capacity.load(Ordering::Relaxed)).map_err(|_| GeometryError::TooLarge)?;
    let max = usize::try_from(h.max_message.load(Ordering::Relaxed)).map_err(|_| GeometryError::TooLarge)?;
    let geo = frame_geometry(capacity, max).map_err(|e| match e {
        QueueCreateError::Geometry(g) => g,
        _ => GeometryError::Mismatch("pipe geometry"),
    })?;
    let (at, total) = layout(&geo, rings)?;
    if total > seg.payload_len() {
        return Err(GeometryError::Mismatch("pipe larger than its segment").into());
    }
    let ring = |a: usize| -> Result<Arc<Ring>, QueueOpenError> {
        let r = Ring::at_existing(seg.clone(), a, FLAVOR_MPMC, geo.elem_size)?;
        // Each ring must have the header's shape: a larger one would reach into the next.
        if r.geo != geo {
            return Err(GeometryError::Mismatch("pipe ring differs from the pipe header").into());
        }
        Ok(Arc::new(r))
    };
    let r0 = ring(at[0])?;
    let r1 = if rings == 2 { ring(at[1])? } else { r0.clone() };
    Ok((rings, [r0, r1]))
}

/// A message kept after a receive could not hand it over, tagged with the process that
/// kept it (a forked child does not inherit it: its parent delivers it).
type Stash = Mutex<Option<(u32, Vec<u8>)>>;

/// One end of a [`Pipe`]: see the [module docs](self).
///
/// Safe to share between threads (`&Connection`) and, unlike Python's, between processes
/// using the same end at once: each message is delivered whole to exactly one receiver.
pub struct Connection {
    seg: Arc<Segment>,
    rx: Option<Arc<Ring>>,
    tx: Option<Arc<Ring>>,
    closed: AtomicBool,
    stash: Stash,
    /// Whether `stash` may hold a message (checked before taking its lock).
    kept: AtomicBool,
    /// Whether the other end was seen attached (cached: it never goes back).
    attached: AtomicBool,
    /// Whether a send found nobody left to receive, in an anonymous pipe (final: nobody can
    /// get hold of that end again).
    peer_lost: AtomicBool,
    /// Whether a receive found the other end gone and nothing left, in an anonymous pipe
    /// (final, as `peer_lost`).
    eof: AtomicBool,
    /// Whether the pipe is anonymous.
    anonymous: bool,
    /// Sends since the connection was made, and when the last peer check ran (ns).
    sends: AtomicU64,
    last_check: AtomicU64,
    /// When a receive that found nothing last checked the other end (ns; 0: never).
    last_eof_check: AtomicU64,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("readable", &self.rx.is_some())
            .field("writable", &self.tx.is_some())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.release();
    }
}

/// Process-local time origin for the send-side peer checks.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// How often a sender re-checks that someone can still receive, at most.
const SEND_CHECK: Duration = Duration::from_millis(10);
/// How often a receive that found nothing checks whether the other end is gone, at most.
const EOF_CHECK: Duration = Duration::from_millis(1);
/// Sends between clock readings for that check.
const SEND_CHECK_EVERY: u64 = 64;

impl Connection {
    fn new(seg: Arc<Segment>, rx: Option<Arc<Ring>>, tx: Option<Arc<Ring>>) -> Connection {
        let anonymous = seg.name().is_none();
        if let Some(r) = &rx {
            r.add_handle(Role::Receiver);
        }
        if let Some(t) = &tx {
            t.add_handle(Role::Sender);
        }
        Connection {
            seg,
            rx,
            tx,
            closed: AtomicBool::new(false),
            stash: Mutex::new(None),
            kept: AtomicBool::new(false),
            attached: AtomicBool::new(false),
            peer_lost: AtomicBool::new(false),
            eof: AtomicBool::new(false),
            anonymous,
            sends: AtomicU64::new(0),
            last_check: AtomicU64::new(0),
            last_eof_check: AtomicU64::new(0),
        }
    }

    fn release(&self) {
        // AcqRel: one caller releases the roles.
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(r) = &self.rx {
            r.drop_handle(Role::Receiver);
        }
        if let Some(t) = &self.tx {
            t.drop_handle(Role::Sender);
        }
    }

    /// Closes this end in this process (Python's `close`): later calls on it give
    /// [`ConnectionError::Closed`]. The other end sees end-of-file once no process holds
    /// this end any more. Dropping does the same.
    pub fn close(&self) {
        self.release();
    }

    /// Whether [`close`](Connection::close) was called.
    pub fn is_closed(&self) -> bool {
        // Acquire: pairs with the swap in `release`.
        self.closed.load(Ordering::Acquire)
    }

    /// Whether this end can receive (false for a simplex pipe's sending end).
    pub fn readable(&self) -> bool {
        self.rx.is_some()
    }

    /// Whether this end can send (false for a simplex pipe's receiving end).
    pub fn writable(&self) -> bool {
        self.tx.is_some()
    }

    /// The largest message, in bytes.
    pub fn max_message(&self) -> usize {
        self.tx.as_ref().or(self.rx.as_ref()).map_or(0, |r| max_frame(r))
    }

    /// The segment holding the pipe.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    fn header(&self) -> Option<&PipeHeader> {
        self.seg.get(Offset::new(0)).ok()
    }

    /// Whether the other end was ever attached (always, for anonymous pipes).
    #[inline]
    fn peer_attached(&self) -> bool {
        // Relaxed: a process-local cache of a flag that never goes back to 0.
        if self.attached.load(Ordering::Relaxed) {
            return true;
        }
        // Acquire: pairs with the Release in `Pipe::open`.
        let seen = self.header().is_some_and(|h| h.peer_attached.load(Ordering::Acquire) != 0);
        if seen {
            self.attached.store(true, Ordering::Relaxed);
        }
        seen
    }

    fn tx(&self) -> Result<&Ring, ConnectionError> {
        if self.is_closed() {
            return Err(ConnectionError::Closed);
        }
        self.tx.as_deref().ok_or(ConnectionError::NotWritable)
    }

    fn rx(&self) -> Result<&Ring, ConnectionError> {
        if self.is_closed() {
            return Err(ConnectionError::Closed);
        }
        self.rx.as_deref().ok_or(ConnectionError::NotReadable)
    }

    /// Whether a send should first check that a receiver is left: on the first send, then
    /// at most every [`SEND_CHECK`] (the clock is read every [`SEND_CHECK_EVERY`] sends).
    #[inline]
    fn send_check_due(&self) -> bool {
        // Relaxed: a rate limiter; races only shift when a check runs.
        let n = self.sends.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            self.last_check.store(now_ns(), Ordering::Relaxed);
            return true;
        }
        if n % SEND_CHECK_EVERY != 0 {
            return false;
        }
        let now = now_ns();
        if now.saturating_sub(self.last_check.load(Ordering::Relaxed)) < SEND_CHECK.as_nanos() as u64 {
            return false;
        }
        self.last_check.store(now, Ordering::Relaxed);
        true
    }

    fn send_with(&self, msg: &[u8], wait: Wait) -> Result<(), ConnectionError> {
        let tx = self.tx()?;
        // Relaxed: a process-local, final flag.
        if self.peer_lost.load(Ordering::Relaxed)
            || (self.send_check_due() && self.peer_attached() && !tx.peers_alive(Role::Receiver))
        {
            return Err(self.lost());
        }
        match send_frame(tx, msg, wait) {
            Err(SendError::Disconnected(_)) => Err(self.lost()),
            r => r.map_err(Into::into),
        }
    }

    /// Whether a receive that found nothing should check the other end's liveness (reads
    /// `/proc`): at most every [`EOF_CHECK`], so a polling loop stays cheap.
    fn eof_check_due(&self) -> bool {
        let now = now_ns().max(1);
        // Relaxed: a rate limiter.
        let last = self.last_eof_check.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < EOF_CHECK.as_nanos() as u64 {
            return false;
        }
        self.last_eof_check.store(now, Ordering::Relaxed);
        true
    }

    /// Records that nobody is left to receive (for good, if the pipe is anonymous).
    fn lost(&self) -> ConnectionError {
        if self.anonymous {
            // Relaxed: process-local.
            self.peer_lost.store(true, Ordering::Relaxed);
        }
        ConnectionError::Disconnected
    }

    /// Sends `msg` as one message, blocking while the pipe is full.
    ///
    /// # Errors
    /// [`TooLarge`](ConnectionError::TooLarge), [`Disconnected`](ConnectionError::Disconnected),
    /// `Closed`, `NotWritable`, `Corrupted`.
    pub fn send_bytes(&self, msg: &[u8]) -> Result<(), ConnectionError> {
        self.send_with(msg, Wait::Until(None))
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`send_bytes`](Connection::send_bytes), and [`Timeout`](ConnectionError::Timeout).
    pub fn send_bytes_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), ConnectionError> {
        self.send_with(msg, Wait::timeout(timeout))
    }

    /// Sends `msg` if there is room now.
    ///
    /// # Errors
    /// [`WouldBlock`](ConnectionError::WouldBlock) if the pipe is full; otherwise as
    /// [`send_bytes`](Connection::send_bytes).
    pub fn try_send_bytes(&self, msg: &[u8]) -> Result<(), ConnectionError> {
        self.send_with(msg, Wait::No)
    }

    /// Messages that can wait in each direction (the builder's capacity rounded up to a
    /// power of two).
    pub fn capacity(&self) -> usize {
        self.tx.as_ref().or(self.rx.as_ref()).map_or(0, |r| r.geo.capacity as usize)
    }

    /// Sends a `Pod` value as its bytes.
    ///
    /// # Errors
    /// As [`send_bytes`](Connection::send_bytes).
    pub fn send<T: Pod>(&self, v: &T) -> Result<(), ConnectionError> {
        self.send_bytes(bytemuck::bytes_of(v))
    }

    #[inline]
    fn take_stash(&self) -> Option<Vec<u8>> {
        // Acquire: pairs with the Release in `keep` (the Mutex orders the message itself).
        if !self.kept.load(Ordering::Acquire) {
            return None;
        }
        let mut s = self.stash.lock().unwrap_or_else(|p| p.into_inner());
        self.kept.store(false, Ordering::Relaxed);
        match s.take() {
            Some((pid, v)) if pid == std::process::id() => Some(v),
            _ => None,
        }
    }

    fn has_stash(&self) -> bool {
        // Acquire: as in `take_stash`.
        if !self.kept.load(Ordering::Acquire) {
            return false;
        }
        let s = self.stash.lock().unwrap_or_else(|p| p.into_inner());
        s.as_ref().is_some_and(|(pid, _)| *pid == std::process::id())
    }

    fn keep(&self, v: Vec<u8>) {
        let mut s = self.stash.lock().unwrap_or_else(|p| p.into_inner());
        *s = Some((std::process::id(), v));
        // Release: set under the lock, after the message.
        self.kept.store(true, Ordering::Release);
    }

    /// Receives one message and hands its bytes to `f`; `Err(())` from `f` keeps the
    /// message (copied) for the next receive.
    fn recv_with<R>(
        &self,
        wait: Wait,
        mut f: impl FnMut(&[u8]) -> Result<R, ConnectionError>,
    ) -> Result<R, ConnectionError> {
        let rx = self.rx()?;
        if let Some(kept) = self.take_stash() {
            return match f(&kept) {
                Ok(r) => Ok(r),
                Err(e) => {
                    self.keep(kept);
                    Err(e)
                }
            };
        }
        // Relaxed: a process-local, final flag.
        if self.eof.load(Ordering::Relaxed) {
            return Err(ConnectionError::Disconnected);
        }
        let mut failed = None;
        let mut take = |m: &[u8]| match f(m) {
            Ok(r) => Some(r),
            Err(e) => {
                failed = Some((e, m.to_vec()));
                None
            }
        };
        let r = match recv_frame(rx, wait, &mut take) {
            // Nothing came in time: if the other end is gone, say so (a short or zero
            // timeout never reaches the blocked path's own check), after one last look.
            Err(RecvError::Timeout | RecvError::Empty) if self.eof_check_due() && self.peer_gone() => {
                recv_frame(rx, Wait::No, &mut take).map_err(|_| {
                    if self.anonymous {
                        // Relaxed: process-local.
                        self.eof.store(true, Ordering::Relaxed);
                    }
                    ConnectionError::Disconnected
                })?
            }
            Err(RecvError::Disconnected) => {
                if self.anonymous {
                    // Relaxed: process-local.
                    self.eof.store(true, Ordering::Relaxed);
                }
                return Err(ConnectionError::Disconnected);
            }
            r => r?,
        };
        match (r, failed) {
            (Some(r), _) => Ok(r),
            (None, Some((e, kept))) => {
                self.keep(kept);
                Err(e)
            }
            (None, None) => Err(ConnectionError::Corrupted("receive produced nothing")),
        }
    }

    /// Receives a message, blocking until one arrives.
    ///
    /// # Errors
    /// [`Disconnected`](ConnectionError::Disconnected) once the other end is gone and
    /// everything it sent was received; `Closed`, `NotReadable`, `Corrupted`.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
        self.recv_with(Wait::Until(None), |m| Ok(m.to_vec()))
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_bytes`](Connection::recv_bytes), and [`Timeout`](ConnectionError::Timeout).
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, ConnectionError> {
        self.recv_with(Wait::timeout(timeout), |m| Ok(m.to_vec()))
    }

    /// Receives a message if one is ready now.
    ///
    /// # Errors
    /// [`WouldBlock`](ConnectionError::WouldBlock) if none is; `Disconnected` if none is and
    /// the other end is gone; otherwise as [`recv_bytes`](Connection::recv_bytes).
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>, ConnectionError> {
        self.recv_with(Wait::No, |m| Ok(m.to_vec()))
    }

    /// Receives a message into `buf`, returning its length. No allocation.
    ///
    /// # Errors
    /// [`BufferTooSmall`](ConnectionError::BufferTooSmall) with the size needed if the
    /// message does not fit; it is kept for the next receive. Otherwise as
    /// [`recv_bytes`](Connection::recv_bytes).
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, ConnectionError> {
        self.recv_with(Wait::Until(None), |m| match buf.get_mut(..m.len()) {
            Some(dst) => {
                dst.copy_from_slice(m);
                Ok(m.len())
            }
            None => Err(ConnectionError::BufferTooSmall { needed: m.len() }),
        })
    }

    /// [`recv_bytes_into`](Connection::recv_bytes_into) waiting at most `timeout`.
    ///
    /// # Errors
    /// As `recv_bytes_into`, and [`Timeout`](ConnectionError::Timeout).
    pub fn recv_bytes_into_timeout(
        &self,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, ConnectionError> {
        self.recv_with(Wait::timeout(timeout), |m| match buf.get_mut(..m.len()) {
            Some(dst) => {
                dst.copy_from_slice(m);
                Ok(m.len())
            }
            None => Err(ConnectionError::BufferTooSmall { needed: m.len() }),
        })
    }

    /// Receives a `Pod` value sent with [`send`](Connection::send).
    ///
    /// # Errors
    /// [`WrongSize`](ConnectionError::WrongSize) if the message is not `size_of::<T>()`
    /// bytes (it is kept); otherwise as [`recv_bytes`](Connection::recv_bytes).
    pub fn recv<T: Pod>(&self) -> Result<T, ConnectionError> {
        self.recv_with(Wait::Until(None), decode_pod)
    }

    /// [`recv`](Connection::recv) waiting at most `timeout`.
    ///
    /// # Errors
    /// As `recv`, and [`Timeout`](ConnectionError::Timeout).
    pub fn recv_timeout<T: Pod>(&self, timeout: Duration) -> Result<T, ConnectionError> {
        self.recv_with(Wait::timeout(timeout), decode_pod)
    }

    /// Whether a receive would return without waiting: a message is ready, or the other end
    /// is gone (the receive then reports `Disconnected`). Waits at most `timeout`
    /// (`Duration::ZERO`: just looks).
    ///
    /// # Errors
    /// `Closed`, `NotReadable`.
    pub fn poll(&self, timeout: Duration) -> Result<bool, ConnectionError> {
        self.rx()?;
        Ok(!wait(&[self], Some(timeout)).is_empty())
    }

    /// Ready without the (expensive) check of the peer's liveness.
    fn ready_now(&self) -> bool {
        let rx = match self.rx() {
            Ok(rx) => rx,
            // A closed end is "ready": a receive fails at once. A sending end never is.
            Err(e) => return e == ConnectionError::Closed,
        };
        self.has_stash() || rx.is_closed() || mpmc::head_ready(rx.ctl(), &rx.slots, &rx.geo)
    }

    /// Whether every holder of the other end is gone (reads `/proc`).
    fn peer_gone(&self) -> bool {
        self.rx().is_ok_and(|rx| self.peer_attached() && !rx.peers_alive(Role::Sender))
    }
}

fn decode_pod<T: Pod>(m: &[u8]) -> Result<T, ConnectionError> {
    if m.len() != std::mem::size_of::<T>() {
        return Err(ConnectionError::WrongSize { len: m.len(), expected: std::mem::size_of::<T>() });
    }
    Ok(bytemuck::pod_read_unaligned(m))
}

#[cfg(feature = "serde")]
impl Connection {
    /// Sends any serde value, encoded with postcard (Python's `send` of an object).
    ///
    /// # Errors
    /// [`Encode`](ConnectionError::Encode), or as [`send_bytes`](Connection::send_bytes).
    ///
    /// # Examples
    /// ```
    /// let (a, b) = shmkit::pipe::Pipe::new()?;
    /// a.send_serde(&("hello", vec![1, 2, 3]))?;
    /// let (s, v): (String, Vec<i32>) = b.recv_serde()?;
    /// assert_eq!((s.as_str(), v), ("hello", vec![1, 2, 3]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_serde<T: serde::Serialize + ?Sized>(&self, v: &T) -> Result<(), ConnectionError> {
        let bytes = postcard::to_allocvec(v).map_err(|e| ConnectionError::Encode(e.to_string()))?;
        self.send_bytes(&bytes)
    }

    /// Receives a value sent with [`send_serde`](Connection::send_serde).
    ///
    /// # Errors
    /// [`Decode`](ConnectionError::Decode) (the message is kept), or as
    /// [`recv_bytes`](Connection::recv_bytes).
    pub fn recv_serde<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConnectionError> {
        self.recv_with(Wait::Until(None), |m| {
            postcard::from_bytes(m).map_err(|e| ConnectionError::Decode(e.to_string()))
        })
    }

    /// [`recv_serde`](Connection::recv_serde) waiting at most `timeout`.
    ///
    /// # Errors
    /// As `recv_serde`, and [`Timeout`](ConnectionError::Timeout).
    pub fn recv_serde_timeout<T: serde::de::DeserializeOwned>(
        &self,
        timeout: Duration,
    ) -> Result<T, ConnectionError> {
        self.recv_with(Wait::timeout(timeout), |m| {
            postcard::from_bytes(m).map_err(|e| ConnectionError::Decode(e.to_string()))
        })
    }
}

/// Waits until at least one of `conns` is ready to receive (a message waits, or its other
/// end is gone, or it was closed: a receive then returns at once), like
/// `multiprocessing.connection.wait` (an open sending end of a simplex pipe never is); returns the ready
/// ones in the order given. Returns an empty list if `timeout` passes first (`None`: wait
/// forever). Sleeps on all of them at once with `futex_waitv`.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmkit::pipe::{wait, Pipe};
///
/// let (a1, b1) = Pipe::new()?;
/// let (a2, b2) = Pipe::new()?;
/// b2.send_bytes(b"x")?;
/// let ready = wait(&[&a1, &a2], Some(Duration::from_secs(1)));
/// assert_eq!(ready.len(), 1);
/// assert!(std::ptr::eq(ready[0], &a2));
/// assert!(wait(&[&a1], Some(Duration::from_millis(10))).is_empty());
/// # drop(b1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn wait<'a>(conns: &[&'a Connection], timeout: Option<Duration>) -> Vec<&'a Connection> {
    let deadline = timeout.and_then(crate::futex::deadline_after);
    let cells: Vec<&WaitCell> =
        conns.iter().filter_map(|c| c.rx.as_ref()).map(|r| &r.ctl().not_empty).collect();
    let patience = Patience::new();
    let mut polled_once = false;
    let poll = || {
        let ready: Vec<&'a Connection> = conns.iter().copied().filter(|c| c.ready_now()).collect();
        if !ready.is_empty() {
            return Some(ready);
        }
        // A zero timeout still looks for a dead peer once.
        let zero = timeout == Some(Duration::ZERO) && !polled_once;
        polled_once = true;
        let departures =
            conns.iter().filter_map(|c| c.rx.as_ref()).fold(0u32, |n, r| n.wrapping_add(r.departures()));
        if zero || patience.peer_check_due(departures) {
            let gone: Vec<&'a Connection> = conns.iter().copied().filter(|c| c.peer_gone()).collect();
            if !gone.is_empty() {
                return Some(gone);
            }
        }
        None
    };
    // Parks end when the next peer check is due, as in `queue::ring::block`.
    let ready = block_with(&cells, deadline, &patience, poll).unwrap_or_default();
    for c in &ready {
        // A notify meant for a receiver blocked on the same ring may have woken us instead:
        // pass it on if the message is still there.
        if let Some(rx) = &c.rx {
            let ctl = rx.ctl();
            ctl.not_empty.notify_one_if(|| mpmc::head_ready(ctl, &rx.slots, &rx.geo));
        }
    }
    ready
}

/// Both ends of the pipe in `seg` (whose payload may be garbage): for the fuzz target.
pub(crate) fn attach_both(seg: Arc<Segment>) -> Result<(Connection, Connection), QueueOpenError> {
    let (_, [r0, r1]) = attach(&seg)?;
    Ok((
        Connection::new(seg.clone(), Some(r1.clone()), Some(r0.clone())),
        Connection::new(seg, Some(r0), Some(r1)),
    ))
}
