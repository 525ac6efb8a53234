//! What a named segment holds, read without touching it: the engine of `shmkit inspect NAME`.
//!
//! [`inspect`] opens `/dev/shm/NAME` read-only (`O_RDONLY`, a `PROT_READ` mapping), decodes its
//! [`Header`], and then, by the header's [`Kind`], the object in its payload:
//!
//! | kind | [`Contents`] | what it shows |
//! |---|---|---|
//! | lock, rlock | [`Lock`](Contents::Lock), [`RLock`](Contents::RLock) | owner pid and whether it runs, waiters flag, inconsistent (`OwnerDied`) mark; thread and depth for an RLock |
//! | semaphore, event | [`Semaphore`](Contents::Semaphore), [`Event`](Contents::Event) | value and bound, set or not; parked waiters |
//! | condition | [`Condition`](Contents::Condition) | its lock, parked waiters |
//! | barrier | [`Barrier`](Contents::Barrier) | parties, generation, broken, who waits and whether they run |
//! | queue, joinable-queue, frame-queue, serde-queue, spsc-queue | [`Queue`](Contents::Queue) | capacity, frame size, depth, closed, holders and whether they run, parked peers, slots claimed by dead processes, `abandoned`/`lost`, unfinished tasks |
//! | pipe | [`Pipe`](Contents::Pipe) | sizes, whether the second end was opened, each direction as a queue |
//! | value, array, raw-value, raw-array | [`Cells`](Contents::Cells) | element size, alignment, count, type tag, the bytes of a small value, the lock |
//! | raw, ping-pong, pool, user kinds, unknown | [`NotInterpreted`](Contents::NotInterpreted) | the header only |
//!
//! # Read-only, and safe on hostile bytes
//! The segment is memory another process may write at any time, so this module never takes a
//! lock, registers as a queue member, wakes a waiter, repairs a slot or unlinks a name: it only
//! loads. The mapping is `PROT_READ`, so a store would fault instead of changing a byte, and
//! every load is a `Relaxed` atomic load (the only atomic access Rust guarantees to work on
//! read-only memory) or a volatile byte copy. The layouts are read by the modules that own
//! them (`RawLock`, the ring control block, the value header, the pipe header), which bound
//! every count, index and length before using it: garbage gives a
//! [`Corrupted`](Contents::Corrupted) contents or a line naming the inconsistency, never a
//! panic, an out-of-bounds read, a large allocation or a long loop.
//!
//! What a report says is a snapshot: the object may change while it is read, and a process
//! reported alive may die a moment later. A peer that truncates a named segment's file while it
//! is being read raises SIGBUS here, as in any process that maps it.
//!
//! # Which segments
//! Only named segments (in `/dev/shm`) can be reached by name. Anonymous and memfd segments
//! (a [`Pool`](crate::process::Pool)'s, for instance) have none; a process that holds one can
//! still report on it with [`inspect_segment`].

use std::fmt::{self, Write as _};

use crate::queue::Stats;
use crate::shm::{Header, Kind, Segment, ShmOpenError};
use crate::util::proc::{Liveness, ProcessToken};

/// Why a segment could not be inspected.
///
/// A payload that does not decode is not an error: the [`Report`] says so in its
/// [`Contents`].
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, InspectError};
/// use shmkit::shm::ShmOpenError;
///
/// let name = format!("shmkit-doc-missing-{}", std::process::id());
/// match inspect(&name) {
///     Err(InspectError::Open { source: ShmOpenError::DoesNotExist(_), .. }) => {}
///     other => panic!("expected DoesNotExist, got {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The name could not be opened, or its header was refused (missing, permission denied,
    /// not a shmkit segment, not published yet, another layout version, corrupted, or a size
    /// that disagrees with the file).
    #[error("{name}: {source}")]
    Open {
        /// The name asked for, without a leading `/`.
        name: String,
        /// Why it was refused.
        #[source]
        source: ShmOpenError,
    },
    /// The header of a segment passed to [`inspect_segment`] no longer decodes (a peer
    /// overwrote it after it was mapped).
    #[error("segment header: {0}")]
    Header(#[source] ShmOpenError),
}

/// A process recorded in shared memory — a lock's owner, a queue's member, a barrier's
/// waiter — and whether it still runs.
///
/// Liveness is checked as the primitives check it: the pid and, where one was recorded, its
/// start time (so a recycled pid reads as dead); a zombie is dead.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::sync::Lock;
/// use shmkit::util::proc::Liveness;
///
/// let name = format!("shmkit-doc-holder-{}", std::process::id());
/// let lock = Lock::create(&name)?;
/// let _held = lock.lock().unwrap();
/// let Contents::Lock(view) = inspect(&name)?.contents else { panic!("a lock") };
/// let owner = view.owner.expect("held");
/// assert_eq!(owner.pid, std::process::id());
/// assert_eq!(owner.liveness, Liveness::Alive);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// The recorded pid.
    pub pid: u32,
    /// The start time recorded with it (clock ticks after boot); 0 if none was recorded.
    pub start: u64,
    /// Whether that process runs now.
    pub liveness: Liveness,
}

impl Holder {
    /// Checks the process now (reads `/proc`).
    pub(crate) fn check(pid: u32, start: u64) -> Holder {
        Holder { pid, start, liveness: ProcessToken { pid, start }.liveness() }
    }
}

/// What a robust lock's shared state records: a [`Lock`](crate::sync::Lock), the lock of an
/// [`RLock`](crate::sync::RLock), of a [`Condition`](crate::sync::Condition) or of a
/// [`Value`](crate::value::Value) / [`Array`](crate::value::Array).
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::sync::Lock;
///
/// let name = format!("shmkit-doc-lockview-{}", std::process::id());
/// let _lock = Lock::create(&name)?;
/// let Contents::Lock(view) = inspect(&name)?.contents else { panic!("a lock") };
/// assert!(view.owner.is_none() && !view.waiters_flagged && !view.inconsistent);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockView {
    /// The holder named by the lock word; `None` if the lock is free.
    pub owner: Option<Holder>,
    /// Whether a waiter announced itself (the word's WAITERS bit: someone is or may be parked;
    /// how many is not recorded).
    pub waiters_flagged: bool,
    /// Whether the lock was taken over from a dead owner and not yet marked consistent: every
    /// acquisition reports `OwnerDied` until then.
    pub inconsistent: bool,
    /// The raw state word (owner pid in bits 0..=29, WAITERS in bit 31).
    pub word: u32,
    /// For an RLock: the owning thread (`gettid`) as recorded, 0 when free.
    pub owner_tid: Option<u32>,
    /// For an RLock: the recursion depth as recorded.
    pub depth: Option<u32>,
}

/// What a [`Barrier`](crate::sync::Barrier) records.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::sync::Barrier;
///
/// let name = format!("shmkit-doc-barrier-{}", std::process::id());
/// let _b = Barrier::create(&name, 3)?;
/// let Contents::Barrier(view) = inspect(&name)?.contents else { panic!("a barrier") };
/// assert_eq!((view.parties, view.waiting, view.broken), (3, 0, false));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BarrierView {
    /// The number of parties, kept in `1..=MAX_PARTIES` as the barrier itself uses it (a
    /// recorded value outside is also listed in `problems`).
    pub parties: u32,
    /// The generation (how many times the barrier passed, plus two per reset).
    pub generation: u32,
    /// Whether the barrier is broken (waiters get `Broken` until `reset`).
    pub broken: bool,
    /// Arrivals counted in the current generation.
    pub waiting: u32,
    /// The processes recorded as waiting in the current generation (at most
    /// [`MAX_PARTIES`](crate::sync::MAX_PARTIES)).
    pub waiters: Vec<Holder>,
    /// Inconsistencies found in the state (empty when it makes sense).
    pub problems: Vec<&'static str>,
}

/// A process holding handles of a multi-producer queue (one of the ring's member records).
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::queue::Queue;
///
/// let name = format!("shmkit-doc-member-{}", std::process::id());
/// let (tx, _rx) = Queue::<u64>::create(&name, 4)?.split();
/// let Contents::Queue(ring) = inspect(&name)?.contents else { panic!("a queue") };
/// let me = ring.members.iter().find(|m| m.holder.pid == std::process::id()).unwrap();
/// assert!(me.sender && me.receiver);
/// drop(tx);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberView {
    /// The process.
    pub holder: Holder,
    /// Whether it holds sender handles.
    pub sender: bool,
    /// Whether it holds receiver handles.
    pub receiver: bool,
}

/// Who holds one end of an SPSC queue.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents, SpscEnd};
/// use shmkit::queue::SpscQueue;
///
/// let name = format!("shmkit-doc-spsc-{}", std::process::id());
/// let q = SpscQueue::<u32>::create(&name, 4)?;
/// let Contents::Queue(ring) = inspect(&name)?.contents else { panic!("a queue") };
/// assert_eq!(ring.ends, Some([SpscEnd::Unclaimed, SpscEnd::Unclaimed]));
/// let (tx, _rx) = q.split();
/// tx.send(1).unwrap(); // the first use claims the end
/// let Contents::Queue(ring) = inspect(&name)?.contents else { panic!("a queue") };
/// assert!(matches!(ring.ends, Some([SpscEnd::Held(h), SpscEnd::Unclaimed]) if h.pid == std::process::id()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpscEnd {
    /// No process has used the end yet.
    Unclaimed,
    /// Its holder dropped it after use.
    Dropped,
    /// Claimed by this process.
    Held(Holder),
}

/// One slot of a multi-producer ring claimed by a process that has not finished with it.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::queue::raw::{mpmc, RingCtl};
/// use shmkit::queue::Queue;
/// use shmkit::shm::Offset;
///
/// let name = format!("shmkit-doc-claim-{}", std::process::id());
/// let q = Queue::<u64>::create(&name, 4)?;
/// // Play a producer stopped between claiming slot 0 and publishing it: the slot's stamp names
/// // it (the slots follow the control block; each is an 8-byte stamp, then the message).
/// let slot0 = std::mem::size_of::<RingCtl>().next_multiple_of(128);
/// let stamp = q.segment().get(Offset::<AtomicU64>::new(slot0))?;
/// stamp.store(mpmc::encode(0, mpmc::WRITING, std::process::id()), Ordering::SeqCst);
/// let Contents::Queue(ring) = inspect(&name)?.contents else { panic!("a queue") };
/// let claim = ring.claims.expect("an MPMC ring").listed[0];
/// assert!(claim.writing && claim.position == 0 && claim.holder.pid == std::process::id());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotClaim {
    /// The low 40 bits of the slot's position.
    pub position: u64,
    /// `true`: a producer is writing a message in (if it is dead, the next consumer skips
    /// the slot and counts it in `abandoned`); `false`: a consumer is copying one out (if it is
    /// dead, the next producer frees the slot and counts the message in `lost`).
    pub writing: bool,
    /// The claiming process.
    pub holder: Holder,
}

/// The in-flight slots of a multi-producer ring, from a bounded scan of its slot stamps.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::queue::Queue;
///
/// let name = format!("shmkit-doc-claims-{}", std::process::id());
/// let q = Queue::<u64>::create(&name, 8)?;
/// q.send(1)?;
/// let Contents::Queue(ring) = inspect(&name)?.contents else { panic!("a queue") };
/// let claims = ring.claims.expect("an MPMC ring");
/// assert_eq!((claims.scanned, claims.writing, claims.reading), (8, 0, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlotClaims {
    /// Slots whose stamps were read (all of them, up to a bound; a larger ring is scanned
    /// from its head).
    pub scanned: u64,
    /// Slots being written.
    pub writing: u64,
    /// Slots being read.
    pub reading: u64,
    /// The first claims found (at most 16), each with its process's liveness.
    pub listed: Vec<SlotClaim>,
}

/// What a queue's ring records: any of the queue kinds, or one direction of a pipe.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::queue::Queue;
///
/// let name = format!("shmkit-doc-ring-{}", std::process::id());
/// let q = Queue::<u64>::create(&name, 8)?;
/// for i in 0..3 {
///     q.send(i)?;
/// }
/// let Contents::Queue(ring) = inspect(&name)?.contents else { panic!("a queue") };
/// assert_eq!((ring.capacity, ring.depth, ring.closed), (8, 3, false));
/// assert_eq!(ring.stats.abandoned, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingView {
    /// Where the ring's control block sits in the payload.
    pub at: usize,
    /// Single producer and consumer (else multi-producer, multi-consumer).
    pub spsc: bool,
    /// Messages the ring holds at most.
    pub capacity: u64,
    /// Slots in the ring (a power of two for a multi-producer ring).
    pub slots: u64,
    /// Payload bytes per slot.
    pub slot_bytes: usize,
    /// The largest message of a frame queue, serde queue or pipe (the slot less its length
    /// prefix).
    pub max_frame: Option<usize>,
    /// Consumers' position.
    pub head: u64,
    /// Producers' position.
    pub tail: u64,
    /// Messages in the ring: `tail - head`, clamped to `0..=capacity`.
    pub depth: u64,
    /// Whether `close()` was called.
    pub closed: bool,
    /// Slots skipped because their producer died (`abandoned`), messages lost with their
    /// consumer (`lost`).
    pub stats: Stats,
    /// A `JoinableQueue`'s messages put and not yet marked done.
    pub unfinished: Option<u64>,
    /// Receivers parked (or about to park) waiting for a message.
    pub receivers_waiting: u32,
    /// Senders parked (or about to park) waiting for room.
    pub senders_waiting: u32,
    /// A `JoinableQueue`'s processes parked in `join()`.
    pub joiners_waiting: Option<u32>,
    /// A multi-producer ring's member records: the processes holding handles.
    pub members: Vec<MemberView>,
    /// Whether some process found no free member record (death then no longer disconnects
    /// this ring).
    pub members_overflow: bool,
    /// Forked children that will hold sender and receiver handles and have not registered yet.
    pub forks_in_flight: (u32, u32),
    /// An SPSC ring's ends: sender, then receiver.
    pub ends: Option<[SpscEnd; 2]>,
    /// A multi-producer ring's slots claimed now.
    pub claims: Option<SlotClaims>,
    /// Inconsistencies found in the state (empty when it makes sense).
    pub problems: Vec<&'static str>,
}

/// What a [`Pipe`](crate::pipe::Pipe)'s segment records.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::pipe::Pipe;
///
/// let name = format!("shmkit-doc-pipe-{}", std::process::id());
/// let first = Pipe::create(&name)?;
/// first.send_bytes(b"hi")?;
/// let Contents::Pipe(pipe) = inspect(&name)?.contents else { panic!("a pipe") };
/// assert!(pipe.duplex && !pipe.peer_attached);
/// let to_second = pipe.rings[0].as_ref().unwrap();
/// assert_eq!(to_second.depth, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipeView {
    /// Two rings (duplex) or one (simplex).
    pub duplex: bool,
    /// Whether a named pipe's second end was opened (always true for anonymous pipes).
    pub peer_attached: bool,
    /// The capacity requested at creation; each ring rounds it up to a power of two (its
    /// [`RingView::capacity`] is what it holds).
    pub capacity: u64,
    /// The largest message, in bytes.
    pub max_message: u64,
    /// Ring 0 carries the first end's (duplex) or the writer's (simplex) messages to the
    /// other end; ring 1, of a duplex pipe, the second end's to the first. A ring that does
    /// not decode is `Err` with the reason.
    pub rings: Vec<Result<RingView, &'static str>>,
}

/// What a [`Value`](crate::value::Value), [`Array`](crate::value::Array),
/// [`RawValue`](crate::value::RawValue) or [`RawArray`](crate::value::RawArray) records.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::value::Value;
///
/// let name = format!("shmkit-doc-value-{}", std::process::id());
/// let _v = Value::create(&name, 0x2au32)?;
/// let Contents::Cells(cells) = inspect(&name)?.contents else { panic!("a value") };
/// assert_eq!((cells.elem_size, cells.len), (4, 1));
/// assert_eq!(cells.bytes.as_deref(), Some(&42u32.to_ne_bytes()[..]));
/// assert!(cells.lock.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CellsView {
    /// The object kind recorded in the value header (the segment kind code of a value, array,
    /// raw value or raw array).
    pub object: u64,
    /// Element size in bytes.
    pub elem_size: u64,
    /// Element alignment in bytes.
    pub elem_align: u64,
    /// Element count.
    pub len: u64,
    /// The element type's tag ([`Kind::tag_of`]).
    pub tag: u64,
    /// The lock of a `Value` or `Array` (the raw kinds have none).
    pub lock: Option<LockView>,
    /// The bytes of a value of at most 8 bytes (native byte order).
    pub bytes: Option<Vec<u8>>,
    /// Inconsistencies found in the header (empty when it makes sense).
    pub problems: Vec<&'static str>,
}

/// What a segment's payload holds, by its kind.
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::sync::Semaphore;
///
/// let name = format!("shmkit-doc-contents-{}", std::process::id());
/// let sem = Semaphore::create(&name, 2)?;
/// assert!(sem.try_acquire());
/// match inspect(&name)?.contents {
///     Contents::Semaphore { value, bound, waiters } => assert_eq!((value, bound, waiters), (1, None, 0)),
///     other => panic!("expected a semaphore, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Contents {
    /// A [`Lock`](crate::sync::Lock).
    Lock(LockView),
    /// An [`RLock`](crate::sync::RLock) (with `owner_tid` and `depth`).
    RLock(LockView),
    /// A [`Semaphore`](crate::sync::Semaphore) or
    /// [`BoundedSemaphore`](crate::sync::BoundedSemaphore).
    Semaphore {
        /// Permits available.
        value: u32,
        /// The bound of a `BoundedSemaphore`.
        bound: Option<u32>,
        /// Processes parked (or about to park) in `acquire`.
        waiters: u32,
    },
    /// An [`Event`](crate::sync::Event).
    Event {
        /// Whether the flag is set.
        set: bool,
        /// Processes parked (or about to park) in `wait`.
        waiters: u32,
    },
    /// A [`Condition`](crate::sync::Condition) and its lock (an RLock's view has a depth).
    Condition {
        /// The condition's lock.
        lock: LockView,
        /// Processes parked in `wait` (registered, lock released, not yet woken).
        waiters: u32,
    },
    /// A [`Barrier`](crate::sync::Barrier).
    Barrier(BarrierView),
    /// Any queue: `Queue`, `SimpleQueue`, `JoinableQueue`, `FrameQueue`, `SerdeQueue`, SPSC.
    Queue(RingView),
    /// A [`Pipe`](crate::pipe::Pipe).
    Pipe(PipeView),
    /// A value or an array.
    Cells(CellsView),
    /// A kind whose payload this module does not decode: raw bytes, the benchmark's
    /// ping-pong, a pool (never named), an embedder's own kind, or an unknown code.
    NotInterpreted(&'static str),
    /// The payload cannot hold the object its kind names, or holds impossible state.
    Corrupted(&'static str),
}

/// A segment's header facts and what its payload holds. `Display` gives the readable text of
/// `shmkit inspect`.
///
/// # Examples
/// ```
/// use shmkit::inspect::inspect;
/// use shmkit::queue::Queue;
///
/// let name = format!("shmkit-doc-report-{}", std::process::id());
/// let q = Queue::<u64>::create(&name, 4)?;
/// q.send(7)?;
/// let report = inspect(&name)?;
/// assert_eq!(report.header.creator_pid, std::process::id());
/// let text = report.to_string();
/// assert!(text.contains("kind:") && text.contains("queue"));
/// assert!(text.contains("depth:") && text.contains("1 of 4"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The segment's name, without its leading `/` (`None` for anonymous and memfd segments).
    pub name: Option<String>,
    /// The validated header.
    pub header: Header,
    /// Whether the creator still runs.
    pub creator: Liveness,
    /// What the payload holds.
    pub contents: Contents,
}

/// Reports on the named segment in `/dev/shm`, without changing a byte of it.
///
/// Opening it read-only does not count as a holder of anything: no queue member record, no
/// pipe end, no waiter.
///
/// # Errors
/// [`InspectError::Open`]: the name is invalid or missing, permission is denied, or the
/// header is refused (see [`ShmOpenError`]).
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect, Contents};
/// use shmkit::sync::Event;
///
/// let name = format!("shmkit-doc-inspect-{}", std::process::id());
/// let ev = Event::create(&name)?;
/// ev.set();
/// let report = inspect(&name)?;
/// assert_eq!(report.contents, Contents::Event { set: true, waiters: 0 });
/// println!("{report}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect(name: &str) -> Result<Report, InspectError> {
    let bare = name.strip_prefix('/').unwrap_or(name).to_owned();
    let seg =
        Segment::open_read_only(name).map_err(|source| InspectError::Open { name: bare.clone(), source })?;
    inspect_segment(&seg).map_err(|e| match e {
        InspectError::Header(source) => InspectError::Open { name: bare, source },
        other => other,
    })
}

/// Reports on a segment this process has mapped: a named one, or an anonymous or memfd segment
/// (which have no name to [`inspect`] them by). Only loads, as [`inspect`] does.
///
/// # Errors
/// [`InspectError::Header`] if the header no longer decodes or disagrees with the mapping's
/// size (a peer overwrote it).
///
/// # Examples
/// ```
/// use shmkit::inspect::{inspect_segment, Contents};
/// use shmkit::sync::Lock;
///
/// let lock = Lock::new()?; // anonymous: no name to inspect it by
/// let report = inspect_segment(lock.segment())?;
/// assert!(report.name.is_none());
/// assert!(matches!(report.contents, Contents::Lock(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect_segment(seg: &Segment) -> Result<Report, InspectError> {
    let header = seg.header().map_err(InspectError::Header)?;
    if header.total_size != seg.len() as u64 {
        return Err(InspectError::Header(ShmOpenError::SizeMismatch {
            header: header.total_size,
            actual: seg.len() as u64,
        }));
    }
    let contents = contents(seg, &header);
    Ok(Report {
        name: seg.name().map(|n| n.strip_prefix('/').unwrap_or(n).to_owned()),
        header,
        creator: header.creator().liveness(),
        contents,
    })
}

/// Hands the payload to the module that owns the kind's layout.
fn contents(seg: &Segment, header: &Header) -> Contents {
    let kind = header.kind();
    match kind.code {
        1 => Contents::NotInterpreted("raw bytes: the creator places its own objects"),
        2 => Contents::NotInterpreted("the ping-pong benchmark's state"),
        3..=8 => crate::sync::inspect(seg, kind),
        crate::queue::KIND_QUEUE..=crate::queue::KIND_SPSC => crate::queue::inspect(seg, kind),
        crate::value::KIND_VALUE..=crate::value::KIND_RAW_ARRAY => crate::value::inspect(seg, kind),
        crate::pipe::KIND_PIPE => crate::pipe::inspect(seg, kind),
        19 => Contents::NotInterpreted("a process pool's state (pools live in memfds, never named)"),
        c if c & 0x8000_0000 != 0 => Contents::NotInterpreted("an embedder's own kind"),
        _ => Contents::NotInterpreted("a kind this build does not know"),
    }
}

/// What a kind whose tag describes its layout (not an element type) gets when the tag is not
/// this build's: another build's layout is not decoded.
pub(crate) const OTHER_LAYOUT: Contents =
    Contents::NotInterpreted("the kind tag differs from this build's layout of the object");

// ---- Display ----

/// Label column width of the header facts (as `shmkit inspect` always printed them).
const HEADER_W: usize = 15;
/// Label column width of the contents (labels are at most this long, so a space follows).
const W: usize = 17;

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.liveness == Liveness::Unknown && self.start == 0 {
            // `ProcessToken::liveness` found the pid running, but without a recorded start
            // time it cannot rule out a recycled pid.
            return write!(f, "pid {} (running; no start time recorded to rule out pid reuse)", self.pid);
        }
        write!(f, "pid {} ({})", self.pid, self.liveness)
    }
}

/// Writes labelled lines at an indentation.
struct Out<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    indent: usize,
    width: usize,
}

impl Out<'_, '_> {
    fn line(&mut self, label: &str, value: impl fmt::Display) -> fmt::Result {
        let (indent, width) = (self.indent, self.width);
        writeln!(self.f, "{:indent$}{:<width$} {value}", "", format!("{label}:"))
    }

    fn text(&mut self, text: impl fmt::Display) -> fmt::Result {
        writeln!(self.f, "{:indent$}{text}", "", indent = self.indent)
    }

    fn problems(&mut self, problems: &[&'static str]) -> fmt::Result {
        for p in problems {
            self.line("corrupted", p)?;
        }
        Ok(())
    }

    fn nested(&mut self, by: usize, body: impl FnOnce(&mut Out<'_, '_>) -> fmt::Result) -> fmt::Result {
        let mut inner = Out { f: self.f, indent: self.indent + by, width: W };
        body(&mut inner)
    }
}

fn write_lock(out: &mut Out<'_, '_>, l: &LockView) -> fmt::Result {
    match l.owner {
        None => out.line("owner", "none (free)")?,
        Some(h) if h.liveness == Liveness::Dead => {
            out.line("owner", format!("{h}: the next lock() takes it over and gets OwnerDied"))?
        }
        Some(h) => out.line("owner", h)?,
    }
    if let (Some(tid), Some(depth)) = (l.owner_tid, l.depth) {
        if l.owner.is_some() {
            out.line("owner thread", tid)?;
        }
        out.line("depth", depth)?;
    }
    out.line(
        "waiters",
        if l.waiters_flagged {
            "flagged (someone is or may be parked; the count is not recorded)"
        } else {
            "none flagged"
        },
    )?;
    out.line(
        "consistent",
        if l.inconsistent {
            "no: taken over from a dead owner, not yet marked consistent (acquirers get OwnerDied)"
        } else {
            "yes"
        },
    )?;
    out.line("state word", format!("{:#010x}", l.word))
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn write_ring(out: &mut Out<'_, '_>, r: &RingView) -> fmt::Result {
    let what = match r.max_frame {
        Some(m) => format!("up to {m} bytes"),
        None => format!("{} bytes", r.slot_bytes),
    };
    out.line(
        "capacity",
        format!(
            "{} of {what} ({})",
            plural(r.capacity, "message", "messages"),
            plural(r.slots, "slot", "slots")
        ),
    )?;
    out.line("depth", format!("{} of {} (head {}, tail {})", r.depth, r.capacity, r.head, r.tail))?;
    out.line("closed", yes_no(r.closed))?;
    out.line(
        "waiting",
        format!(
            "{}, {} parked",
            plural(u64::from(r.receivers_waiting), "receiver", "receivers"),
            plural(u64::from(r.senders_waiting), "sender", "senders")
        ),
    )?;
    if let Some(u) = r.unfinished {
        out.line("unfinished tasks", format!("{u} (put and not yet task_done)"))?;
    }
    if let Some(j) = r.joiners_waiting {
        out.line("joiners", format!("{j} parked in join()"))?;
    }
    out.line("abandoned slots", format!("{} (skipped: their producer died mid-send)", r.stats.abandoned))?;
    out.line("lost messages", format!("{} (their consumer died mid-receive)", r.stats.lost))?;
    if let Some(c) = &r.claims {
        if c.writing == 0 && c.reading == 0 {
            out.line("in flight", format!("none ({} scanned)", plural(c.scanned, "slot", "slots")))?;
        } else {
            out.line(
                "in flight",
                format!(
                    "{} being written, {} being read ({} scanned)",
                    c.writing,
                    c.reading,
                    plural(c.scanned, "slot", "slots")
                ),
            )?;
            for claim in &c.listed {
                let dead = claim.holder.liveness == Liveness::Dead;
                let note = match (claim.writing, dead) {
                    (true, true) => ": a consumer skips it (abandoned)",
                    (false, true) => ": a producer frees it (lost)",
                    _ => "",
                };
                let verb = if claim.writing { "written" } else { "read" };
                out.nested(2, |o| {
                    o.text(format!("position {} {verb} by {}{note}", claim.position, claim.holder))
                })?;
            }
        }
    }
    if let Some([tx, rx]) = &r.ends {
        for (label, end) in [("sender end", tx), ("receiver end", rx)] {
            match end {
                SpscEnd::Unclaimed => out.line(label, "unclaimed")?,
                SpscEnd::Dropped => out.line(label, "dropped")?,
                SpscEnd::Held(h) => out.line(label, h)?,
            }
        }
    } else {
        out.line("holders", plural(r.members.len() as u64, "process", "processes"))?;
        for m in &r.members {
            let roles = match (m.sender, m.receiver) {
                (true, true) => "sender, receiver",
                (true, false) => "sender",
                (false, true) => "receiver",
                (false, false) => "no handles (leaving)",
            };
            out.nested(2, |o| o.text(format!("{}: {roles}", m.holder)))?;
        }
        if r.members_overflow {
            out.line("member table", "overflowed: death no longer disconnects this queue")?;
        }
        let (s, rx) = r.forks_in_flight;
        if s != 0 || rx != 0 {
            out.line("forks in flight", format!("{s} sender, {rx} receiver"))?;
        }
    }
    out.problems(&r.problems)
}

fn write_contents(out: &mut Out<'_, '_>, kind: Kind, c: &Contents) -> fmt::Result {
    match c {
        Contents::Lock(l) => {
            out.text("lock")?;
            out.nested(2, |o| write_lock(o, l))
        }
        Contents::RLock(l) => {
            out.text("rlock")?;
            out.nested(2, |o| write_lock(o, l))
        }
        Contents::Semaphore { value, bound, waiters } => {
            out.text(if bound.is_some() { "bounded semaphore" } else { "semaphore" })?;
            out.nested(2, |o| {
                o.line("value", value)?;
                match bound {
                    Some(b) => o.line("bound", b)?,
                    None => o.line("bound", "none")?,
                }
                o.line("waiters", format!("{waiters} parked"))
            })
        }
        Contents::Event { set, waiters } => {
            out.text("event")?;
            out.nested(2, |o| {
                o.line("set", yes_no(*set))?;
                o.line("waiters", format!("{waiters} parked"))
            })
        }
        Contents::Condition { lock, waiters } => {
            out.text(if lock.depth.is_some() {
                "condition (over an RLock)"
            } else {
                "condition (over a Lock)"
            })?;
            out.nested(2, |o| {
                o.line("waiters", format!("{waiters} parked in wait()"))?;
                o.text("lock:")?;
                o.nested(2, |o| write_lock(o, lock))
            })
        }
        Contents::Barrier(b) => {
            out.text("barrier")?;
            out.nested(2, |o| {
                o.line("parties", b.parties)?;
                o.line("generation", b.generation)?;
                o.line("broken", yes_no(b.broken))?;
                o.line("waiting", format!("{} of {}", b.waiting, b.parties))?;
                for h in &b.waiters {
                    let note = if h.liveness == Liveness::Dead {
                        ": the barrier breaks when a waiter sees it"
                    } else {
                        ""
                    };
                    o.nested(2, |o| o.text(format!("{h}{note}")))?;
                }
                o.problems(&b.problems)
            })
        }
        Contents::Queue(r) => {
            let title = match kind.code {
                crate::queue::KIND_JOINABLE => "joinable queue",
                crate::queue::KIND_FRAMES => "frame queue",
                crate::queue::KIND_SERDE => "serde queue",
                crate::queue::KIND_SPSC => "spsc queue",
                _ => "queue",
            };
            let flavor = if r.spsc { "single producer and consumer" } else { "multi-producer ring" };
            out.text(format!("{title} ({flavor})"))?;
            out.nested(2, |o| write_ring(o, r))
        }
        Contents::Pipe(p) => {
            out.text(if p.duplex { "pipe (duplex)" } else { "pipe (simplex)" })?;
            out.nested(2, |o| {
                // What a direction holds: its ring's capacity (the request rounded up).
                let holds =
                    p.rings.iter().find_map(|r| r.as_ref().ok().map(|r| r.capacity)).unwrap_or(p.capacity);
                o.line(
                    "capacity",
                    format!(
                        "{holds} messages per direction (asked for {}), up to {} bytes each",
                        p.capacity, p.max_message
                    ),
                )?;
                if p.duplex {
                    o.line("second end", if p.peer_attached { "opened" } else { "not opened yet" })?;
                }
                let labels: [&str; 2] = if p.duplex {
                    ["first end -> second end", "second end -> first end"]
                } else {
                    ["writer -> reader", "unused"]
                };
                for (label, ring) in labels.iter().zip(&p.rings) {
                    match ring {
                        Ok(r) => {
                            o.text(format!("{label} (ring at payload offset {}):", r.at))?;
                            o.nested(2, |o| write_ring(o, r))?;
                        }
                        Err(e) => o.line(label, format!("corrupted: {e}"))?,
                    }
                }
                Ok(())
            })
        }
        Contents::Cells(c) => {
            let title = match c.object {
                14 => "value (with a lock)",
                15 => "array (with a lock)",
                16 => "raw value (no lock)",
                17 => "raw array (no lock)",
                _ => "value or array",
            };
            out.text(title)?;
            out.nested(2, |o| {
                o.line(
                    "elements",
                    format!(
                        "{} of {} bytes, align {} (type tag {:#018x})",
                        c.len, c.elem_size, c.elem_align, c.tag
                    ),
                )?;
                if let Some(bytes) = &c.bytes {
                    let mut hex = String::new();
                    for (i, b) in bytes.iter().enumerate() {
                        let _ = write!(hex, "{}{b:02x}", if i == 0 { "" } else { " " });
                    }
                    o.line("bytes", hex)?;
                }
                o.problems(&c.problems)?;
                if let Some(l) = &c.lock {
                    o.text("lock:")?;
                    o.nested(2, |o| write_lock(o, l))?;
                }
                Ok(())
            })
        }
        Contents::NotInterpreted(why) => out.line("payload", format!("not interpreted ({why})")),
        Contents::Corrupted(why) => out.line("payload", format!("corrupted: {why}")),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let mut out = Out { f, indent: 0, width: HEADER_W };
        match &self.name {
            Some(n) => out.line("name", n)?,
            None => out.line("name", format!("none ({:?} segment)", h.backing()))?,
        }
        out.line("kind", format!("{} (code {}, tag {:#x})", h.kind().name(), h.kind, h.kind_tag))?;
        out.line("layout version", h.version)?;
        out.line("backing", format!("{:?}", h.backing()))?;
        out.line("size", format!("{} bytes (payload {})", h.total_size, h.payload_len()))?;
        out.line("creator", format!("pid {} ({})", h.creator_pid, self.creator))?;
        out.line("created", crate::util::time::utc(h.created_ns))?;
        out.line("persistent", yes_no(h.is_persistent()))?;
        out.text("")?;
        out.width = W;
        write_contents(&mut out, h.kind(), &self.contents)
    }
}
