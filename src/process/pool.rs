//! [`Pool`]: worker processes fed through shared-memory frame rings.
//!
//! ## Design
//! One memfd segment holds a control block, one slot per worker, the result ring (workers →
//! parent) and one inbox ring per worker (parent → that worker):
//!
//! ```text
//! 0        PoolCtl (128 B): worker count, frame size, ring sizes, initializer
//! 128      WorkerSlot × n (128 B each): `started` task id, `ready` flag
//! ...      initializer argument bytes
//! ...      result ring (MPMC frames), then n inbox rings
//! ```
//!
//! A manager thread in the parent receives results, watches the workers (every 20 ms while
//! tasks are out), replaces dead or retired ones and feeds inboxes; callers' threads feed
//! them too when they submit. The parent addresses each chunk of tasks to one worker, at
//! most two chunks ahead, so it always knows which tasks a worker held. A worker sends its
//! results in batches (at the end of a chunk, when a frame is full, or after 1 ms by the
//! coarse clock, i.e. at the next timer tick), and
//! marks each task `started` before running it. When a worker dies, the tasks of its
//! current chunk from the first unreported one to the one marked `started` ran in it and
//! lost their results: they fail with [`PoolError::WorkerDied`] (never run twice). The tasks
//! after it, and its other chunks, never started: they go back to the queue for other
//! workers.
//!
//! Frames (little-endian):
//!
//! ```text
//! task:   op u8 (1 run, 2 stop) | trampoline u64 | function u64 | count u32 | count × (id u64 | len u32 | bytes)
//! result: worker u32 | count u32 | count × (id u64 | status u8 | len u32 | bytes)
//!         status: 0 ok (bytes: the result), 1 panicked (the message), 2 result too large
//!         (its length, u64), 3 argument or result did not decode (the message)
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{FromRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};

use super::process::{panic_text, run_call, Process, StartMethod};
use super::wire::{encode_pair, Call, FnRef, Wire, WireError};
use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::queue::core::Wait;
use crate::queue::frames::{frame_geometry, recv_frame, send_frame};
use crate::queue::raw::FLAVOR_MPMC;
use crate::queue::ring::{Ring, Role};
use crate::queue::{FrameQueue, RecvError};
use crate::shm::{Kind, Offset, Segment, Shareable};

const KIND_POOL: u32 = 19;
/// Chunks addressed to one worker at a time (one running, one ready).
const PREFETCH: usize = 2;
/// How often the manager looks for dead workers while tasks are out.
const CHECK: Duration = Duration::from_millis(20);
/// How long an idle manager sleeps between looks at the workers.
const IDLE_CHECK: Duration = Duration::from_millis(200);
const INBOX_CAP: usize = 4;
const RESULTS_CAP: usize = 128;
const TASK_HEADER: usize = 21;
const ITEM_HEADER: usize = 12;
const RESULT_HEADER: usize = 8;
const ENTRY_HEADER: usize = 13;
/// A worker sends the results it has after this long, even mid-chunk.
const RESULT_FLUSH: Duration = Duration::from_millis(1);
/// A worker polls for its parent's death this often while idle.
const PARENT_CHECK: Duration = Duration::from_secs(1);
/// Consecutive workers that die before finishing the initializer before the pool gives up.
const MAX_INIT_FAILURES: u32 = 3;
/// Most workers a pool may have (a bound on what a worker reads from the segment, too).
pub const MAX_WORKERS: usize = 1024;

/// Why a pool operation or a task failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The task panicked in its worker; the message. The worker lives on.
    #[error("task panicked: {0}")]
    TaskPanicked(String),
    /// The worker running the task died (killed, or exited inside the task). It was replaced.
    #[error("worker {pid} died running the task (exit code {exitcode})")]
    WorkerDied {
        /// The dead worker's pid.
        pid: u32,
        /// Its exit code (`-9` for SIGKILL).
        exitcode: i32,
    },
    /// The timeout passed before the result was ready (the task goes on).
    #[error("timed out waiting for the result")]
    Timeout,
    /// The pool was terminated (or dropped) before the task finished.
    #[error("the pool was terminated")]
    Terminated,
    /// The pool is closed: no new tasks.
    #[error("the pool is closed")]
    Closed,
    /// The pool was made by another process (this is a forked child's copy of it).
    #[error("a pool works only in the process that made it")]
    WrongProcess,
    /// [`Pool::join`] before [`Pool::close`] or [`Pool::terminate`].
    #[error("join needs close or terminate first")]
    StillRunning,
    /// A pool needs at least one worker.
    #[error("a pool needs at least one worker")]
    NoWorkers,
    /// An argument or result is larger than the pool's message size.
    #[error("{len} bytes exceed the pool's message size {max}")]
    TooLarge {
        /// Encoded size.
        len: usize,
        /// The largest size that fits: [`PoolBuilder::max_message`] less the frame's
        /// headers (33 bytes for an argument, 21 for a result).
        max: usize,
    },
    /// An argument or result could not be encoded or decoded.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// Workers keep dying in the initializer; its last panic message.
    #[error("the pool initializer failed: {0}")]
    InitializerFailed(String),
    /// Creating the pool's shared memory or starting a worker failed.
    #[error("pool setup: {0}")]
    Setup(String),
}

// ---------------------------------------------------------------- shared layout

#[repr(C)]
struct PoolCtl {
    workers: AtomicU32,
    max_frame: AtomicU32,
    init_len: AtomicU32,
    has_init: AtomicU32,
    init_tramp: AtomicU64,
    init_f: AtomicU64,
    maxtasks: AtomicU64,
}

// SAFETY: `#[repr(C)]` integer atomics, valid for any bits. Sizes are bounded before use;
// the initializer's function references are trusted like task frames (see the module doc).
unsafe impl Shareable for PoolCtl {}

#[repr(C, align(128))]
struct WorkerSlot {
    /// The id of the task the worker is running or ran last (0: none yet).
    started: AtomicU64,
    /// 1 once the worker finished its initializer.
    ready: AtomicU32,
    /// Result entries the worker has put in the result ring.
    reported: AtomicU64,
}

// SAFETY: as PoolCtl.
unsafe impl Shareable for WorkerSlot {}

struct Layout {
    slots_at: usize,
    init_at: usize,
    results_at: usize,
    inbox_at: Vec<usize>,
    total: usize,
}

fn layout(workers: usize, ring_bytes: usize, inbox_bytes: usize, init_len: usize) -> Option<Layout> {
    let slots_at = 128usize;
    let init_at = slots_at.checked_add(workers.checked_mul(128)?)?;
    let results_at = init_at.checked_add(init_len)?.checked_next_multiple_of(128)?;
    let mut at = results_at.checked_add(ring_bytes.checked_next_multiple_of(128)?)?;
    let mut inbox_at = Vec::with_capacity(workers);
    for _ in 0..workers {
        inbox_at.push(at);
        at = at.checked_add(inbox_bytes.checked_next_multiple_of(128)?)?;
    }
    Some(Layout { slots_at, init_at, results_at, inbox_at, total: at })
}

/// The pool's rings as seen by one process.
struct Rings {
    seg: Arc<Segment>,
    results: Arc<Ring>,
    inboxes: Vec<Arc<Ring>>,
    slots_at: usize,
}

impl Rings {
    fn slot(&self, w: usize) -> &WorkerSlot {
        self.seg.get(Offset::new(self.slots_at + w * 128)).expect("slot bounds checked at attach")
    }
}

fn setup_err(e: impl fmt::Display) -> PoolError {
    PoolError::Setup(e.to_string())
}

/// Creates the segment and its rings.
fn create_rings(
    workers: usize,
    max_frame: usize,
    init: Option<&(Call, Vec<u8>)>,
    maxtasks: u64,
) -> Result<Rings, PoolError> {
    let rgeo = frame_geometry(RESULTS_CAP, max_frame).map_err(setup_err)?;
    let igeo = frame_geometry(INBOX_CAP, max_frame).map_err(setup_err)?;
    let rbytes = Ring::size_for(&rgeo).map_err(setup_err)?;
    let ibytes = Ring::size_for(&igeo).map_err(setup_err)?;
    let init_len = init.map_or(0, |(_, a)| a.len());
    let l = layout(workers, rbytes, ibytes, init_len).ok_or_else(|| setup_err("pool too large"))?;
    let seg = Segment::builder(Kind::new(KIND_POOL, 0), l.total).memfd().map_err(setup_err)?;
    let ctl: &PoolCtl = seg.get(Offset::new(0)).map_err(setup_err)?;
    // Relaxed: the segment's publication orders these before any worker reads them.
    ctl.workers.store(workers as u32, Ordering::Relaxed);
    ctl.max_frame.store(max_frame as u32, Ordering::Relaxed);
    ctl.maxtasks.store(maxtasks, Ordering::Relaxed);
    if let Some((call, arg)) = init {
        ctl.has_init.store(1, Ordering::Relaxed);
        ctl.init_tramp.store(call.tramp.0, Ordering::Relaxed);
        ctl.init_f.store(call.f.0, Ordering::Relaxed);
        ctl.init_len.store(arg.len() as u32, Ordering::Relaxed);
        // SAFETY: `init_at + len` is inside the unpublished payload (layout), which nobody
        // else maps yet.
        unsafe {
            std::ptr::copy_nonoverlapping(arg.as_ptr(), seg.payload_ptr().as_ptr().add(l.init_at), arg.len())
        };
    }
    Ring::prepare(&seg, l.results_at, &rgeo).map_err(setup_err)?;
    for &at in &l.inbox_at {
        Ring::prepare(&seg, at, &igeo).map_err(setup_err)?;
    }
    attach_rings(Arc::new(seg.publish()))
}

/// Attaches to a pool segment, checking everything a worker reads from it.
fn attach_rings(seg: Arc<Segment>) -> Result<Rings, PoolError> {
    let ctl: &PoolCtl = seg.get(Offset::new(0)).map_err(setup_err)?;
    // Relaxed: published with the segment.
    let workers = ctl.workers.load(Ordering::Relaxed) as usize;
    let max_frame = ctl.max_frame.load(Ordering::Relaxed) as usize;
    let init_len = ctl.init_len.load(Ordering::Relaxed) as usize;
    // Bound the count before anything is sized by it.
    if workers == 0 || workers > MAX_WORKERS {
        return Err(setup_err("pool header: worker count out of range"));
    }
    let rgeo = frame_geometry(RESULTS_CAP, max_frame).map_err(setup_err)?;
    let igeo = frame_geometry(INBOX_CAP, max_frame).map_err(setup_err)?;
    let rbytes = Ring::size_for(&rgeo).map_err(setup_err)?;
    let ibytes = Ring::size_for(&igeo).map_err(setup_err)?;
    let l = layout(workers, rbytes, ibytes, init_len).ok_or_else(|| setup_err("pool header"))?;
    if l.total > seg.payload_len() {
        return Err(setup_err("pool header does not fit its segment"));
    }
    let ring = |at: usize, geo| -> Result<Arc<Ring>, PoolError> {
        let r = Ring::at_existing(
            seg.clone(),
            at,
            FLAVOR_MPMC,
            frame_geometry(1, max_frame).map_err(setup_err)?.elem_size,
        )
        .map_err(setup_err)?;
        if r.geo != geo {
            return Err(setup_err("pool ring differs from the pool header"));
        }
        Ok(Arc::new(r))
    };
    let results = ring(l.results_at, rgeo)?;
    let inboxes = l.inbox_at.iter().map(|&at| ring(at, igeo)).collect::<Result<_, _>>()?;
    Ok(Rings { seg, results, inboxes, slots_at: l.slots_at })
}

// ---------------------------------------------------------------- frames

/// A decoded task frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TaskFrame<'a> {
    Run { call: Call, items: Vec<(u64, &'a [u8])> },
    Stop,
}

fn encode_task(call: Call, items: &[(u64, &[u8])], out: &mut Vec<u8>) {
    out.clear();
    out.push(1);
    out.extend_from_slice(&call.tramp.0.to_le_bytes());
    out.extend_from_slice(&call.f.0.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    for (id, input) in items {
        push_task_item(out, *id, input);
    }
}

/// Appends one item to a task frame made by `encode_task` and counts it.
fn push_task_item(out: &mut Vec<u8>, id: u64, input: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&(input.len() as u32).to_le_bytes());
    out.extend_from_slice(input);
    let count = le_u32(out, 17).unwrap_or(0) + 1;
    out[17..21].copy_from_slice(&count.to_le_bytes());
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Decodes a task frame; every length is checked against the frame.
pub(crate) fn decode_task(b: &[u8]) -> Option<TaskFrame<'_>> {
    match *b.first()? {
        2 if b.len() == 1 => return Some(TaskFrame::Stop),
        1 => {}
        _ => return None,
    }
    let call = Call { tramp: FnRef(le_u64(b, 1)?), f: FnRef(le_u64(b, 9)?) };
    let count = le_u32(b, 17)? as usize;
    let mut at = TASK_HEADER;
    // Each item takes at least ITEM_HEADER bytes: bound the allocation by the frame.
    let mut items = Vec::with_capacity(count.min(b.len() / ITEM_HEADER));
    for _ in 0..count {
        let id = le_u64(b, at)?;
        let len = le_u32(b, at + 8)? as usize;
        let start = at + ITEM_HEADER;
        let end = start.checked_add(len)?;
        items.push((id, b.get(start..end)?));
        at = end;
    }
    (at == b.len()).then_some(TaskFrame::Run { call, items })
}

const ST_OK: u8 = 0;
const ST_PANICKED: u8 = 1;
const ST_TOO_LARGE: u8 = 2;
const ST_WIRE: u8 = 3;

/// Appends one result entry to a result frame being built (`out` starts with the header).
fn push_result(id: u64, status: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&id.to_le_bytes());
    out.push(status);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let count = le_u32(out, 4).unwrap_or(0) + 1;
    out[4..8].copy_from_slice(&count.to_le_bytes());
}

fn start_results(worker: u32, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&worker.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
}

/// One decoded result entry.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResultEntry<'a> {
    id: u64,
    status: u8,
    payload: &'a [u8],
}

impl<'a> ResultEntry<'a> {
    /// The task's outcome; `None` for an unknown status.
    fn outcome(&self, max: usize) -> Option<Result<&'a [u8], PoolError>> {
        let text = || String::from_utf8_lossy(self.payload).into_owned();
        Some(match self.status {
            ST_OK => Ok(self.payload),
            ST_PANICKED => Err(PoolError::TaskPanicked(text())),
            ST_TOO_LARGE => Err(PoolError::TooLarge { len: le_u64(self.payload, 0)? as usize, max }),
            ST_WIRE => Err(PoolError::Wire(WireError::Decode(text()))),
            _ => Err(PoolError::Wire(WireError::Decode("result with an unknown status".into()))),
        })
    }
}

/// Decodes a result frame into (worker index, entries); every length is checked.
pub(crate) fn decode_results(b: &[u8]) -> Option<(u32, Vec<ResultEntry<'_>>)> {
    let worker = le_u32(b, 0)?;
    let count = le_u32(b, 4)? as usize;
    let mut entries = Vec::with_capacity(count.min(b.len() / ENTRY_HEADER));
    let mut at = RESULT_HEADER;
    for _ in 0..count {
        let id = le_u64(b, at)?;
        let status = *b.get(at + 8)?;
        let len = le_u32(b, at + 9)? as usize;
        let start = at + ENTRY_HEADER;
        let end = start.checked_add(len)?;
        entries.push(ResultEntry { id, status, payload: b.get(start..end)? });
        at = end;
    }
    (at == b.len()).then_some((worker, entries))
}

/// Fuzz body: the worker's and the parent's frame decoders on arbitrary bytes, plus an
/// encode/decode round trip built from the input. Returns whether a frame decoded.
#[doc(hidden)]
pub fn fuzz_frames(data: &[u8]) -> bool {
    let mut ok = false;
    match decode_task(data) {
        Some(TaskFrame::Run { call, items }) => {
            let mut again = Vec::new();
            encode_task(call, &items, &mut again);
            assert_eq!(again, data, "a decoded task frame re-encodes to itself");
            ok = true;
        }
        Some(TaskFrame::Stop) => ok = true,
        None => {}
    }
    if let Some((worker, entries)) = decode_results(data) {
        let mut again = Vec::new();
        start_results(worker, &mut again);
        for e in &entries {
            push_result(e.id, e.status, e.payload, &mut again);
            let _ = e.outcome(1 << 20);
        }
        assert_eq!(again, data, "a decoded result frame re-encodes to itself");
        ok = true;
    }
    ok
}

/// Fuzz body: arbitrary bytes as the start of a pool segment (control block, worker slots,
/// rings), attached as a worker attaches. Bit 0 of the first byte writes a plausible control
/// block and ring geometries over the garbage. Returns whether it attached.
#[doc(hidden)]
pub fn fuzz_state(data: &[u8]) -> bool {
    const SIZE: usize = 64 << 10;
    let seg = Segment::anonymous(Kind::new(KIND_POOL, 0), SIZE).expect("segment");
    let n = data.len().min(SIZE);
    // SAFETY: `n` bytes fit the payload; nobody else maps this fresh segment.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.payload_ptr().as_ptr(), n) };
    if data.first().is_some_and(|b| b & 1 != 0) {
        let workers = 1 + data.get(1).map_or(0, |b| b % 4) as usize;
        let init_len = data.get(2).copied().unwrap_or(0) as usize;
        let max_frame = 64;
        let ctl: &PoolCtl = seg.get(Offset::new(0)).expect("ctl");
        // Relaxed: single-threaded setup.
        ctl.workers.store(workers as u32, Ordering::Relaxed);
        ctl.max_frame.store(max_frame as u32, Ordering::Relaxed);
        ctl.init_len.store(init_len as u32, Ordering::Relaxed);
        let rgeo = frame_geometry(RESULTS_CAP, max_frame).expect("geometry");
        let igeo = frame_geometry(INBOX_CAP, max_frame).expect("geometry");
        let l = layout(
            workers,
            Ring::size_for(&rgeo).expect("size"),
            Ring::size_for(&igeo).expect("size"),
            init_len,
        )
        .expect("layout");
        if l.total <= SIZE {
            let _ = Ring::prepare(&seg, l.results_at, &rgeo);
            for at in l.inbox_at {
                let _ = Ring::prepare(&seg, at, &igeo);
            }
        }
    }
    let Ok(rings) = attach_rings(Arc::new(seg)) else { return false };
    // Relaxed: a probe.
    let max =
        rings.seg.get::<PoolCtl>(Offset::new(0)).expect("ctl").max_frame.load(Ordering::Relaxed) as usize;
    for w in 0..rings.inboxes.len() {
        let _ = rings.slot(w).started.load(Ordering::Relaxed);
        let count = |b: &[u8]| match decode_task(b) {
            Some(TaskFrame::Run { items, .. }) => items.len(),
            _ => 0,
        };
        if let Ok(items) = recv_frame(&rings.inboxes[w], Wait::No, count) {
            assert!(items <= max);
        }
    }
    let sizes = |b: &[u8]| decode_results(b).map(|(_, es)| es.iter().map(|e| e.payload.len()).sum::<usize>());
    if let Ok(Some(total)) = recv_frame(&rings.results, Wait::No, sizes) {
        assert!(total <= max);
    }
    true
}

// ---------------------------------------------------------------- worker side

/// A worker's handle on one role of a ring (a worker only receives from its inbox and only
/// sends results, so the parent's death is visible to it as `Disconnected`).
struct End {
    ring: Arc<Ring>,
    role: Role,
}

impl End {
    fn new(ring: Arc<Ring>, role: Role) -> End {
        ring.add_handle(role);
        End { ring, role }
    }
}

impl Drop for End {
    fn drop(&mut self) {
        self.ring.drop_handle(self.role);
    }
}

/// What a spawned worker gets as its argument.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct WorkerArgs {
    fd: i32,
    index: u32,
    parent: u32,
    _pad: u32,
}

fn spawned_worker(args: WorkerArgs) {
    // SAFETY: fcntl on an fd number; the pool's memfd must not reach programs a task execs.
    unsafe { libc::fcntl(args.fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the parent passed this fd (the pool's memfd) to this process for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(args.fd) };
    let seg = match Segment::open_fd(fd, Kind::new(KIND_POOL, 0)) {
        Ok(s) => Arc::new(s),
        Err(e) => panic!("pool worker: {e}"),
    };
    if let Err(e) = worker_main(seg, args.index as usize, args.parent) {
        panic!("pool worker: {e}");
    }
}

/// The worker loop: initializer, then tasks until a stop frame, `maxtasks` chunks, or the
/// parent's death.
fn worker_main(seg: Arc<Segment>, index: usize, parent: u32) -> Result<(), String> {
    let rings = attach_rings(seg).map_err(|e| e.to_string())?;
    if index >= rings.inboxes.len() {
        return Err("worker index out of range".into());
    }
    let inbox = End::new(rings.inboxes[index].clone(), Role::Receiver);
    let results = End::new(rings.results.clone(), Role::Sender);
    let slot = rings.slot(index);
    let ctl: &PoolCtl = rings.seg.get(Offset::new(0)).map_err(|e| e.to_string())?;
    // Relaxed: published with the segment.
    let max_frame = ctl.max_frame.load(Ordering::Relaxed) as usize;
    let maxtasks = ctl.maxtasks.load(Ordering::Relaxed);
    if ctl.has_init.load(Ordering::Relaxed) == 1 {
        let call = Call {
            tramp: FnRef(ctl.init_tramp.load(Ordering::Relaxed)),
            f: FnRef(ctl.init_f.load(Ordering::Relaxed)),
        };
        let len = ctl.init_len.load(Ordering::Relaxed) as usize;
        let l = layout(rings.inboxes.len(), 0, 0, len).ok_or("initializer argument")?;
        if l.init_at + len > rings.seg.payload_len() {
            return Err("initializer argument beyond the segment".into());
        }
        let mut arg = vec![0u8; len];
        // SAFETY: `init_at + len` is inside the payload (checked); a byte copy from shared
        // memory, whose content is only decoded after the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(
                rings.seg.payload_ptr().as_ptr().add(l.init_at),
                arg.as_mut_ptr(),
                len,
            )
        };
        run_call(call, &arg)?;
    }
    // Release: orders nothing the parent reads; it only learns the initializer finished.
    slot.ready.store(1, Ordering::Release);
    let mut done = 0u64;
    let mut out = Vec::new();
    let mut frame = Vec::new();
    loop {
        let msg = match recv_frame(&inbox.ring, Wait::timeout(PARENT_CHECK), <[u8]>::to_vec) {
            Ok(m) => m,
            Err(RecvError::Timeout) => {
                // SAFETY: getppid has no preconditions.
                if unsafe { libc::getppid() } as u32 != parent {
                    return Ok(());
                }
                continue;
            }
            Err(RecvError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let (call, items) = match decode_task(&msg) {
            Some(TaskFrame::Run { call, items }) => (call, items),
            Some(TaskFrame::Stop) => return Ok(()),
            None => return Err("corrupt task frame".into()),
        };
        // Results go back in batches: at the end of the chunk, when the frame is full, and
        // once the batch is RESULT_FLUSH old by the coarse clock (~5 ns a read, ticks of a
        // few ms): a slow task is reported as soon as it ends.
        start_results(index as u32, &mut frame);
        let mut batch_start: Option<u64> = None;
        let last = items.len().saturating_sub(1);
        for (n, (id, input)) in items.into_iter().enumerate() {
            let since = *batch_start.get_or_insert_with(coarse_ns);
            // Release: a parent that reaps this worker after its death reads `started`
            // (Acquire) to learn which task it was running.
            slot.started.store(id, Ordering::Release);
            out.clear();
            // SAFETY: task frames come from the pool's parent, a process of this executable
            // whose Call values were made by Call::unary/binary (see `Call::run`).
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| unsafe { call.run(input, &mut out) }));
            let room = max_frame.saturating_sub(RESULT_HEADER + ENTRY_HEADER);
            let (status, payload): (u8, std::borrow::Cow<'_, [u8]>) = match r {
                Ok(Ok(())) if out.len() <= room => (ST_OK, out.as_slice().into()),
                Ok(Ok(())) => (ST_TOO_LARGE, (out.len() as u64).to_le_bytes().to_vec().into()),
                Ok(Err(e)) => (ST_WIRE, cut_text(e.to_string(), room).into_bytes().into()),
                Err(p) => (ST_PANICKED, cut_text(panic_text(p.as_ref()), room).into_bytes().into()),
            };
            if frame.len() + ENTRY_HEADER + payload.len() > max_frame {
                send_results(&results.ring, slot, &mut frame, index)?;
            }
            push_result(id, status, &payload, &mut frame);
            if n == last || coarse_ns().saturating_sub(since) >= RESULT_FLUSH.as_nanos() as u64 {
                send_results(&results.ring, slot, &mut frame, index)?;
                batch_start = None;
            }
        }
        done += 1;
        if maxtasks != 0 && done >= maxtasks {
            return Ok(());
        }
    }
}

/// CLOCK_MONOTONIC_COARSE in nanoseconds: a vDSO read of the last tick, ~5 ns.
fn coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec we own; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A message cut to fit `room` bytes (and 4 KiB) at a character boundary.
fn cut_text(mut msg: String, room: usize) -> String {
    let mut cut = room.min(4096).min(msg.len());
    while !msg.is_char_boundary(cut) {
        cut -= 1;
    }
    msg.truncate(cut);
    msg
}

/// Sends a result frame (if it holds any entry) and starts the next one.
fn send_results(ring: &Ring, slot: &WorkerSlot, frame: &mut Vec<u8>, index: usize) -> Result<(), String> {
    let count = le_u32(frame, 4).unwrap_or(0);
    if count != 0 {
        match send_frame(ring, frame, Wait::Until(None)) {
            // Release: the parent settles this worker's death only once it has applied this
            // many entries (its Acquire load); the frame is in the ring before the count.
            Ok(()) => {
                slot.reported.fetch_add(u64::from(count), Ordering::Release);
            }
            // The parent is gone: nothing left to do.
            Err(crate::queue::SendError::Disconnected(_)) => exit_quietly(),
            Err(e) => return Err(e.to_string()),
        }
    }
    start_results(index as u32, frame);
    Ok(())
}

fn exit_quietly() -> ! {
    super::process::exit_child(0)
}

// ---------------------------------------------------------------- parent side

/// The results of one submission (one `apply`, one `map`, one `imap`).
struct Job {
    st: Mutex<JobState>,
    cv: Condvar,
}

/// A task's place in its job.
enum Slot {
    Waiting,
    /// The encoded result: `data[at..at + len]`.
    Ok(usize, usize),
    Err(PoolError),
    /// Handed out by an `imap` iterator.
    Taken,
}

#[derive(Default)]
struct JobState {
    /// Slots of tasks `base..base + slots.len()` (an `imap` drops the ones it handed out).
    slots: VecDeque<Slot>,
    base: usize,
    /// Encoded results, back to back (one allocation per job, not one per task); cleared
    /// when no slot refers to it any more.
    data: Vec<u8>,
    live_ok: usize,
    /// Bytes of `data` still referred to by a slot.
    live_bytes: usize,
    done: usize,
    /// Tasks in the job so far.
    total: usize,
    /// Indices in completion order (for `imap_unordered`).
    arrivals: VecDeque<usize>,
    /// No more items will be added.
    sealed: bool,
    /// Wake waiters at every result (`imap`), not only when all are in.
    eager: bool,
}

impl JobState {
    /// Stores the outcome of task `index`; returns whether waiters must be woken.
    fn record(&mut self, index: usize, r: Result<&[u8], PoolError>) -> bool {
        let Some(i) = index.checked_sub(self.base) else { return false };
        let Some(slot @ Slot::Waiting) = self.slots.get_mut(i) else { return false };
        *slot = match r {
            Ok(b) => {
                self.data.extend_from_slice(b);
                self.live_ok += 1;
                self.live_bytes += b.len();
                Slot::Ok(self.data.len() - b.len(), b.len())
            }
            Err(e) => Slot::Err(e),
        };
        self.done += 1;
        if self.eager {
            self.arrivals.push_back(index);
        }
        self.eager || self.done == self.total
    }

    fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index.checked_sub(self.base)?)
    }

    fn add(&mut self, n: usize) {
        self.slots.extend((0..n).map(|_| Slot::Waiting));
        self.total += n;
    }

    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        &self.data[at..at + len]
    }

    /// Hands out the outcome of task `index` (an `imap` iterator).
    fn take(&mut self, index: usize) -> Option<Result<Vec<u8>, PoolError>> {
        let i = index.checked_sub(self.base)?;
        let r = match std::mem::replace(self.slots.get_mut(i)?, Slot::Taken) {
            Slot::Ok(at, len) => {
                self.live_ok -= 1;
                self.live_bytes -= len;
                Ok(self.bytes(at, len).to_vec())
            }
            Slot::Err(e) => Err(e),
            s @ (Slot::Waiting | Slot::Taken) => {
                self.slots[i] = s;
                return None;
            }
        };
        while let Some(Slot::Taken) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        if self.live_ok == 0 {
            self.data.clear();
        } else if self.data.len() > (64 << 10).max(2 * self.live_bytes) {
            // A consumer slower than the workers never sees the buffer empty: keep only
            // what is still referred to.
            let mut data = Vec::with_capacity(2 * self.live_bytes);
            for slot in &mut self.slots {
                if let Slot::Ok(at, len) = slot {
                    data.extend_from_slice(&self.data[*at..*at + *len]);
                    *at = data.len() - *len;
                }
            }
            self.data = data;
        }
        Some(r)
    }

    fn outcome<R: Wire>(&self, s: &Slot) -> Result<R, PoolError> {
        match s {
            Slot::Ok(at, len) => Ok(R::decode(self.bytes(*at, *len))?),
            Slot::Err(e) => Err(e.clone()),
            Slot::Waiting | Slot::Taken => Err(PoolError::Setup("result missing".into())),
        }
    }
}

impl Job {
    fn new(len: usize, sealed: bool) -> Arc<Job> {
        let mut st = JobState { sealed, ..Default::default() };
        st.add(len);
        Arc::new(Job { st: Mutex::new(st), cv: Condvar::new() })
    }

    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, index: usize, r: Result<&[u8], PoolError>) {
        let mut st = self.lock();
        if st.record(index, r) {
            self.cv.notify_all();
        }
    }

    /// Waits until `ready(state)` or the deadline; false on timeout.
    fn wait_until(
        &self,
        deadline: Option<Instant>,
        ready: impl Fn(&JobState) -> bool,
    ) -> (MutexGuard<'_, JobState>, bool) {
        let mut st = self.lock();
        loop {
            if ready(&st) {
                return (st, true);
            }
            match deadline {
                None => st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return (st, false);
                    }
                    st = self.cv.wait_timeout(st, d - now).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
    }
}

/// Records outcomes of one job under one lock, waking its waiters once if needed.
fn record_all(job: Option<&Job>, outcomes: &mut Vec<(usize, Result<&[u8], PoolError>)>) {
    let Some(job) = job else { return };
    let mut st = job.lock();
    let mut wake = false;
    for (index, r) in outcomes.drain(..) {
        wake |= st.record(index, r);
    }
    drop(st);
    if wake {
        job.cv.notify_all();
    }
}

fn all_done(st: &JobState) -> bool {
    st.sealed && st.done == st.total
}

struct Pending {
    job: Arc<Job>,
    index: usize,
}

/// Unfinished tasks by id. Ids are handed out in order, so this is a window starting at the
/// oldest unfinished id: O(1) insert, lookup and removal.
#[derive(Default)]
struct PendingTable {
    base: u64,
    slots: VecDeque<Option<Pending>>,
    live: usize,
}

impl PendingTable {
    /// Records the next task; returns its id.
    fn push(&mut self, p: Pending) -> u64 {
        if self.slots.is_empty() {
            self.base = self.base.max(1);
        }
        self.slots.push_back(Some(p));
        self.live += 1;
        self.base + self.slots.len() as u64 - 1
    }

    fn slot(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        (i < self.slots.len()).then_some(i)
    }

    fn contains(&self, id: u64) -> bool {
        self.slot(id).is_some_and(|i| self.slots[i].is_some())
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let i = self.slot(id)?;
        let p = self.slots[i].take()?;
        self.live -= 1;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(p)
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn len(&self) -> usize {
        self.live
    }

    fn drain(&mut self) -> impl Iterator<Item = Pending> + '_ {
        self.base += self.slots.len() as u64;
        self.live = 0;
        self.slots.drain(..).flatten()
    }

    fn forget_job(&mut self, job: &Arc<Job>) {
        let ids: Vec<u64> = (0..self.slots.len())
            .filter(|&i| self.slots[i].as_ref().is_some_and(|p| Arc::ptr_eq(&p.job, job)))
            .map(|i| self.base + i as u64)
            .collect();
        for id in ids {
            self.remove(id);
        }
    }
}

struct Chunk {
    /// The task frame, encoded once at submission.
    frame: Vec<u8>,
    ids: Vec<u64>,
    /// Results received for `ids[..pos]` (a worker runs its chunks in order).
    pos: usize,
}

#[derive(Default)]
struct Worker {
    proc: Option<Process>,
    inflight: VecDeque<Chunk>,
    dispatched: u64,
    stopping: bool,
    /// Result entries of this worker applied (compared with its slot's `reported`).
    applied: u64,
}

struct State {
    pending: PendingTable,
    backlog: VecDeque<Chunk>,
    workers: Vec<Worker>,
    closed: bool,
    terminated: bool,
    broken: Option<PoolError>,
    init_failures: u32,
    /// Set by the manager thread when it has stopped.
    finished: bool,
}

struct Config {
    workers: usize,
    max_frame: usize,
    maxtasks: u64,
    method: StartMethod,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes an idle manager (new tasks, close, terminate).
    wake: Condvar,
    /// Signalled when the manager thread finishes.
    finished: Condvar,
    rings: Rings,
    results: FrameQueue,
    inboxes: Vec<FrameQueue>,
    cfg: Config,
    parent: u32,
    has_init: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawned workers can run only functions of the executable.
    fn check_call(&self, call: Call) -> Result<(), PoolError> {
        if self.cfg.method == StartMethod::Spawn && !call.is_local() {
            return Err(PoolError::Wire(super::wire::not_local()));
        }
        Ok(())
    }

    /// A pool works only in the process that made it (a forked child has a copy of the
    /// handle but neither the manager thread nor the workers).
    fn check_owner(&self) -> Result<(), PoolError> {
        if std::process::id() == self.parent {
            Ok(())
        } else {
            Err(PoolError::WrongProcess)
        }
    }

    fn max_item(&self) -> usize {
        self.cfg.max_frame.saturating_sub(TASK_HEADER + ITEM_HEADER)
    }

    /// Queues `items` of `job` (index, encoded argument) in chunks of `chunksize`.
    fn submit(&self, st: &mut State, job: &Arc<Job>, call: Call, batch: Batch, chunksize: usize) {
        if let Some(e) = st.broken.clone().or_else(|| st.terminated.then_some(PoolError::Terminated)) {
            for (i, _) in batch.items {
                job.set(i, Err(e.clone()));
            }
            return;
        }
        let max_item = self.max_item();
        let new_chunk = || {
            let mut frame = Vec::new();
            encode_task(call, &[], &mut frame);
            Chunk { frame, ids: Vec::new(), pos: 0 }
        };
        let mut chunk = new_chunk();
        for (index, span) in batch.items {
            let input = match span {
                Ok((at, len)) => &batch.buf[at..at + len], // spans made by Batch::push
                Err(e) => {
                    job.set(index, Err(PoolError::Wire(e)));
                    continue;
                }
            };
            let input = match input {
                b if b.len() > max_item => {
                    job.set(index, Err(PoolError::TooLarge { len: b.len(), max: max_item }));
                    continue;
                }
                b => b,
            };
            let size = ITEM_HEADER + input.len();
            if !chunk.ids.is_empty()
                && (chunk.ids.len() >= chunksize || chunk.frame.len() + size > self.cfg.max_frame)
            {
                st.backlog.push_back(std::mem::replace(&mut chunk, new_chunk()));
            }
            let id = st.pending.push(Pending { job: job.clone(), index });
            push_task_item(&mut chunk.frame, id, input);
            chunk.ids.push(id);
        }
        if !chunk.ids.is_empty() {
            st.backlog.push_back(chunk);
        }
        self.dispatch(st);
        self.wake.notify_all();
    }

    /// Addresses backlog chunks to workers with room, least loaded first.
    fn dispatch(&self, st: &mut State) {
        let mut full = vec![false; st.workers.len()];
        while !st.backlog.is_empty() {
            let maxtasks = self.cfg.maxtasks;
            let pick = (0..st.workers.len())
                .filter(|&w| {
                    let k = &st.workers[w];
                    !full[w]
                        && k.proc.is_some()
                        && !k.stopping
                        && k.inflight.len() < PREFETCH
                        && (maxtasks == 0 || k.dispatched < maxtasks)
                })
                .min_by_key(|&w| st.workers[w].inflight.len());
            let Some(w) = pick else { break };
            let chunk = st.backlog.pop_front().expect("not empty");
            // Nobody waits for these any more (a dropped `imap`, a failed pool).
            if !chunk.ids.iter().any(|&id| st.pending.contains(id)) {
                continue;
            }
            match self.inboxes[w].try_send_bytes(&chunk.frame) {
                Ok(()) => {
                    let k = &mut st.workers[w];
                    k.inflight.push_back(chunk);
                    k.dispatched += 1;
                }
                Err(_) => {
                    // The inbox is full of frames the manager has not yet taken back from a
                    // dead worker: leave the chunk for another worker or later.
                    st.backlog.push_front(chunk);
                    full[w] = true;
                }
            }
        }
        if st.closed && st.pending.is_empty() {
            for (w, k) in st.workers.iter_mut().enumerate() {
                if k.proc.is_some() && !k.stopping && self.inboxes[w].try_send_bytes(&[2]).is_ok() {
                    k.stopping = true;
                }
            }
        }
    }

    /// Records one result frame.
    fn apply(&self, st: &mut State, frame: &[u8]) {
        let Some((w, entries)) = decode_results(frame) else { return };
        if let Some(k) = st.workers.get_mut(w as usize) {
            k.applied += entries.len() as u64;
        }
        let max = self.cfg.max_frame.saturating_sub(RESULT_HEADER + ENTRY_HEADER);
        // Consecutive results mostly belong to one job: lock it once per run of them.
        let mut run: Option<Arc<Job>> = None;
        let mut outcomes: Vec<(usize, Result<&[u8], PoolError>)> = Vec::new();
        for e in entries {
            let Some(r) = e.outcome(max) else { continue };
            if let Some(p) = st.pending.remove(e.id) {
                if run.as_ref().is_some_and(|j| !Arc::ptr_eq(j, &p.job)) {
                    record_all(run.take().as_deref(), &mut outcomes);
                }
                run.get_or_insert(p.job);
                outcomes.push((p.index, r));
            }
            // Chunk accounting even for a task nobody waits for any more (a dropped `imap`).
            if let Some(k) = st.workers.get_mut(w as usize) {
                if let Some(front) = k.inflight.front_mut() {
                    if front.ids.get(front.pos) == Some(&e.id) {
                        front.pos += 1;
                        if front.pos == front.ids.len() {
                            k.inflight.pop_front();
                        }
                    }
                }
            }
        }
        record_all(run.as_deref(), &mut outcomes);
    }

    fn drain_results(&self, st: &mut State) {
        while let Ok(frame) = self.results.try_recv_bytes() {
            self.apply(st, &frame);
        }
    }

    /// Reaps ended workers: fails the task each was running, requeues the rest of its
    /// chunks, starts a replacement.
    fn check_workers(&self, st: &mut State) {
        for w in 0..st.workers.len() {
            let code = match &st.workers[w].proc {
                Some(p) => match p.end_code() {
                    Some(code) => (code, p.pid().unwrap_or(0), p.panic_message()),
                    None => continue,
                },
                None => {
                    self.start_worker(st, w);
                    continue;
                }
            };
            // Results it sent before dying are in the ring: take them first. Some may sit
            // behind a slot another worker is still writing: settle the death once all it
            // reported are applied (else a task that ran would look unstarted and run twice).
            self.drain_results(st);
            // Acquire: pairs with the worker's Release count after each result frame.
            if self.rings.slot(w).reported.load(Ordering::Acquire) > st.workers[w].applied {
                continue;
            }
            self.worker_ended(st, w, code);
            self.start_worker(st, w);
        }
        self.dispatch(st);
    }

    fn worker_ended(&self, st: &mut State, w: usize, (code, pid, panic): (i32, u32, Option<String>)) {
        let slot = self.rings.slot(w);
        // Acquire: pairs with the worker's Release store of `started`.
        let started = slot.started.load(Ordering::Acquire);
        let ready = slot.ready.load(Ordering::Acquire) == 1;
        let k = std::mem::take(&mut st.workers[w]);
        // Frames it never took: their tasks are requeued below from `inflight`.
        while self.inboxes[w].try_recv_bytes().is_ok() {}
        let mut requeue = Vec::new();
        for (n, chunk) in k.inflight.into_iter().enumerate() {
            // In the chunk it was running (the first), the tasks from the first unreported
            // one to `started` ran in the dead worker and lost their results: they fail.
            // The others never started: they go back to the queue.
            let ran = match chunk.ids.get(chunk.pos..) {
                Some(rest) if n == 0 => {
                    rest.iter().position(|&id| id == started).map_or(0, |i| chunk.pos + i + 1)
                }
                _ => 0,
            };
            let Some(TaskFrame::Run { call, items }) = decode_task(&chunk.frame) else { continue };
            let mut rest = Vec::new();
            for (i, (id, input)) in items.into_iter().enumerate() {
                if !st.pending.contains(id) {
                    continue;
                }
                if i < ran {
                    let p = st.pending.remove(id).expect("checked");
                    p.job.set(p.index, Err(PoolError::WorkerDied { pid, exitcode: code }));
                } else {
                    rest.push((id, input));
                }
            }
            if !rest.is_empty() {
                let mut frame = Vec::new();
                encode_task(call, &rest, &mut frame);
                requeue.push(Chunk { frame, ids: rest.iter().map(|&(id, _)| id).collect(), pos: 0 });
            }
        }
        for chunk in requeue.into_iter().rev() {
            st.backlog.push_front(chunk);
        }
        // A worker that fails on its own before its first task (its initializer panicked,
        // or it could not attach) would fail again in every replacement: after a few in a
        // row the pool gives up. One killed from outside (SIGKILL, SIGTERM) says nothing.
        let killed = code == -libc::SIGKILL || code == -libc::SIGTERM;
        if ready {
            st.init_failures = 0;
        } else if !k.stopping && !st.terminated && !killed {
            st.init_failures += 1;
            if st.init_failures >= MAX_INIT_FAILURES {
                let msg =
                    panic.unwrap_or_else(|| format!("worker exited with code {code} before its first task"));
                let e = if self.has_init { PoolError::InitializerFailed(msg) } else { PoolError::Setup(msg) };
                self.fail_all(st, e);
            }
        }
    }

    /// Starts a worker in slot `w` unless the pool is winding down.
    fn start_worker(&self, st: &mut State, w: usize) {
        if st.terminated || st.broken.is_some() || (st.closed && st.pending.is_empty()) {
            return;
        }
        let slot = self.rings.slot(w);
        // Relaxed: the fork/exec that starts the worker orders these before it runs.
        slot.started.store(0, Ordering::Relaxed);
        slot.ready.store(0, Ordering::Relaxed);
        slot.reported.store(0, Ordering::Relaxed);
        st.workers[w].applied = 0;
        let name = format!("PoolWorker-{}", w + 1);
        let parent = self.parent;
        let mut p = match self.cfg.method {
            StartMethod::Fork => {
                let seg = self.rings.seg.clone();
                Process::builder().name(name).daemon(true).target(move || {
                    if let Err(e) = worker_main(seg, w, parent) {
                        panic!("pool worker: {e}");
                    }
                })
            }
            StartMethod::Spawn => {
                let fd = self.rings.seg.fd().expect("the pool segment is a memfd");
                let args =
                    WorkerArgs { fd: std::os::fd::AsRawFd::as_raw_fd(&fd), index: w as u32, parent, _pad: 0 };
                Process::builder().name(name).daemon(true).inherit_fd(fd).target_fn(spawned_worker, args)
            }
        };
        p = p.no_flush();
        match p.start() {
            Ok(()) => st.workers[w].proc = Some(p),
            Err(e) => {
                // Retried at the next check; with no worker at all the tasks fail now.
                if st.workers.iter().all(|k| k.proc.is_none()) {
                    self.fail_all(st, PoolError::Setup(format!("starting a worker: {e}")));
                }
            }
        }
    }

    fn fail_all(&self, st: &mut State, e: PoolError) {
        if !matches!(e, PoolError::Terminated) {
            st.broken = Some(e.clone());
        }
        for p in st.pending.drain() {
            p.job.set(p.index, Err(e.clone()));
        }
        st.backlog.clear();
        for k in &mut st.workers {
            k.inflight.clear();
        }
    }

    fn busy(st: &State) -> bool {
        !st.pending.is_empty()
    }

    /// Whether the manager is done: terminated, or closed with every task finished and
    /// every worker gone.
    fn over(st: &State) -> bool {
        st.terminated || (st.closed && st.pending.is_empty() && st.workers.iter().all(|k| k.proc.is_none()))
    }
}

/// The manager thread.
fn manage(inner: Arc<Inner>, started: std::sync::mpsc::Sender<Result<(), PoolError>>) {
    // However the manager ends (a panic included), waiters in `join` learn of it.
    struct Finish<'a>(&'a Inner);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            finish(self.0);
        }
    }
    let _finish = Finish(&inner);
    {
        let mut st = inner.lock();
        for w in 0..inner.cfg.workers {
            inner.start_worker(&mut st, w);
            if st.workers[w].proc.is_none() {
                let e =
                    st.broken.clone().unwrap_or_else(|| PoolError::Setup("could not start a worker".into()));
                st.terminated = true;
                drop(st);
                shutdown_workers(&inner);
                let _ = started.send(Err(e));

                return;
            }
        }
    }
    let _ = started.send(Ok(()));
    let mut next_check = Instant::now() + CHECK;
    loop {
        {
            let mut st = inner.lock();
            if Inner::over(&st) {
                break;
            }
            if !Inner::busy(&st) && !st.closed {
                st = inner.wake.wait_timeout(st, IDLE_CHECK).unwrap_or_else(|e| e.into_inner()).0;
                inner.check_workers(&mut st);
                next_check = Instant::now() + CHECK;
                continue;
            }
        }
        let wait = next_check.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let got = inner.results.recv_bytes_timeout(wait);
        if let Err(RecvError::Corrupted(_) | RecvError::Decode(_)) = got {
            // A scribbled ring answers at once: do not spin on it.
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Ok(frame) = got {
            let mut st = inner.lock();
            inner.apply(&mut st, &frame);
            // Take what else is there while holding the lock once.
            for _ in 0..256 {
                match inner.results.try_recv_bytes() {
                    Ok(f) => inner.apply(&mut st, &f),
                    Err(_) => break,
                }
            }
            inner.dispatch(&mut st);
        }
        if Instant::now() >= next_check {
            let mut st = inner.lock();
            inner.check_workers(&mut st);
            next_check = Instant::now() + CHECK;
        }
    }
    shutdown_workers(&inner);
}

fn finish(inner: &Inner) {
    inner.lock().finished = true;
    inner.finished.notify_all();
}

/// Stops every worker: SIGTERM, a grace period, then SIGKILL; reaps them all.
fn shutdown_workers(inner: &Inner) {
    let procs: Vec<Process> = {
        let mut st = inner.lock();
        st.workers.iter_mut().filter_map(|k| k.proc.take()).collect()
    };
    let terminated = inner.lock().terminated;
    if terminated {
        for p in &procs {
            let _ = p.terminate();
        }
    }
    let grace = Instant::now() + Duration::from_secs(2);
    for p in &procs {
        let left = grace.saturating_duration_since(Instant::now());
        if !matches!(p.join_timeout(left), Ok(Some(_))) {
            let _ = p.kill();
            let _ = p.join();
        }
    }
}

/// Options for a [`Pool`].
///
/// # Examples
/// ```
/// use shmkit::process::Pool;
/// fn seed(_: ()) { /* per-worker setup */ }
/// fn double(x: u32) -> u32 { 2 * x }
/// let pool = Pool::builder().processes(2).initializer(seed, ()).maxtasksperchild(100).build()?;
/// assert_eq!(pool.map(double, [1, 2, 3])?, [2, 4, 6]);
/// # Ok::<(), shmkit::process::PoolError>(())
/// ```
#[derive(Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<(Call, Result<Vec<u8>, WireError>)>,
    maxtasks: u64,
    method: StartMethod,
    max_message: Option<usize>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.initializer.is_some())
            .field("maxtasks", &self.maxtasks)
            .field("method", &self.method)
            .finish()
    }
}

impl PoolBuilder {
    /// Number of workers (default [`cpu_count`](super::cpu_count)).
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(arg)` once in each worker before its first task. A worker whose initializer
    /// panics exits; after three in a row the pool fails its tasks with
    /// [`PoolError::InitializerFailed`].
    pub fn initializer<A: Wire>(mut self, f: fn(A), arg: A) -> Self {
        let mut bytes = Vec::new();
        let arg = arg.encode(&mut bytes).map(|()| bytes);
        self.initializer = Some((Call::unary::<A, ()>(f), arg));
        self
    }

    /// Replaces each worker after it has run `n` chunks of tasks (0: never, the default).
    pub fn maxtasksperchild(mut self, n: u64) -> Self {
        self.maxtasks = n;
        self
    }

    /// How workers start (default fork; spawn needs [`init`](super::init) in `main`).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// Largest encoded chunk of arguments or single result, in bytes (default 256 KiB;
    /// clamped to 64 bytes … 2 GiB).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = Some(bytes);
        self
    }

    /// Creates the pool and starts its workers.
    ///
    /// # Errors
    /// [`PoolError::NoWorkers`], [`PoolError::Wire`] (initializer argument),
    /// [`PoolError::Setup`] (shared memory, fork or exec failed).
    pub fn build(self) -> Result<Pool, PoolError> {
        let workers = self.processes.unwrap_or_else(super::cpu_count);
        if workers == 0 {
            return Err(PoolError::NoWorkers);
        }
        if workers > MAX_WORKERS {
            return Err(PoolError::Setup(format!("at most {MAX_WORKERS} workers")));
        }
        let max_frame = self.max_message.unwrap_or(256 << 10).clamp(64, u32::MAX as usize / 2);
        let init = match self.initializer {
            Some((call, _)) if self.method == StartMethod::Spawn && !call.is_local() => {
                return Err(PoolError::Wire(super::wire::not_local()))
            }
            Some((call, arg)) => Some((call, arg?)),
            None => None,
        };
        let init_given = init.is_some();
        let rings = create_rings(workers, max_frame, init.as_ref(), self.maxtasks)?;
        let results = FrameQueue::from_arc(rings.results.clone());
        let inboxes = rings.inboxes.iter().map(|r| FrameQueue::from_arc(r.clone())).collect();
        let state = State {
            pending: PendingTable::default(),
            backlog: VecDeque::new(),
            workers: (0..workers).map(|_| Worker::default()).collect(),
            closed: false,
            terminated: false,
            broken: None,
            init_failures: 0,
            finished: false,
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            wake: Condvar::new(),
            finished: Condvar::new(),
            rings,
            results,
            inboxes,
            cfg: Config { workers, max_frame, maxtasks: self.maxtasks, method: self.method },
            parent: std::process::id(),
            has_init: init_given,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let m = inner.clone();
        let handle = std::thread::Builder::new()
            .name("shmkit-pool".into())
            .spawn(move || manage(m, tx))
            .map_err(|e| PoolError::Setup(e.to_string()))?;
        match rx.recv() {
            Ok(Ok(())) => Ok(Pool { inner, manager: Mutex::new(Some(handle)) }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(PoolError::Setup("the pool manager thread failed".into())),
        }
    }
}

/// A pool of worker processes, as Python's `multiprocessing.Pool`.
///
/// Tasks are functions of this binary (`fn(A) -> R`, not capturing closures) with
/// [`Wire`] arguments and results. Each result is a `Result`: a task that panics gives
/// [`PoolError::TaskPanicked`], one whose worker dies gives [`PoolError::WorkerDied`] (the
/// worker is replaced and the other tasks go on). `map`, `starmap` and `apply` return the
/// first error, as Python raises it; `imap` and `imap_unordered` yield one `Result` per
/// item.
///
/// Workers are daemon processes started from the pool's manager thread (fork by default:
/// see [`StartMethod`] for the hazards of forking a process that has other threads).
/// Dropping the pool terminates it (Python's `with Pool() as p`); [`Pool::close`] then
/// [`Pool::join`] lets queued tasks finish first.
///
/// # Examples
/// ```
/// use shmkit::process::Pool;
/// fn square(x: u64) -> u64 { x * x }
/// let pool = Pool::new(2)?;
/// assert_eq!(pool.map(square, [1, 2, 3])?, [1, 4, 9]);
/// let r = pool.apply_async(square, 12);
/// assert_eq!(r.get_timeout(std::time::Duration::from_secs(10))?, 144);
/// # Ok::<(), shmkit::process::PoolError>(())
/// ```
pub struct Pool {
    inner: Arc<Inner>,
    manager: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Pool")
            .field("workers", &self.inner.cfg.workers)
            .field("pending", &st.pending.len())
            .field("closed", &st.closed)
            .field("terminated", &st.terminated)
            .finish()
    }
}

/// A view of a pool that cuts work into chunks of a given size: [`Pool::chunksize`].
#[derive(Debug, Clone, Copy)]
pub struct Chunked<'a> {
    pool: &'a Pool,
    size: usize,
}

/// Encoded arguments of a submission, back to back in one buffer: (index, span or error).
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    items: Vec<(usize, Span)>,
}

/// Where one encoded argument is in a [`Batch`]'s buffer, or why it did not encode.
type Span = Result<(usize, usize), WireError>;

impl Batch {
    fn push(&mut self, index: usize, encode: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>) {
        // Each value encodes into a scratch buffer of its own: a `Wire` impl that fails
        // half-way, or rewrites its buffer, cannot touch the other arguments.
        self.scratch.clear();
        let r = encode(&mut self.scratch).map(|()| {
            self.buf.extend_from_slice(&self.scratch);
            (self.buf.len() - self.scratch.len(), self.scratch.len())
        });
        self.items.push((index, r));
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

fn encode_all<A: Wire>(items: impl IntoIterator<Item = A>) -> Batch {
    let mut b = Batch::default();
    for (i, a) in items.into_iter().enumerate() {
        b.push(i, |buf| a.encode(buf));
    }
    b
}

fn encode_pairs<A: Wire, B: Wire>(items: impl IntoIterator<Item = (A, B)>) -> Batch {
    let mut b = Batch::default();
    for (i, (x, y)) in items.into_iter().enumerate() {
        b.push(i, |buf| encode_pair(&x, &y, buf));
    }
    b
}

impl Pool {
    /// A pool of `processes` workers (fork start method, no initializer).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(processes: usize) -> Result<Pool, PoolError> {
        Pool::builder().processes(processes).build()
    }

    /// Options: size, initializer, maxtasksperchild, start method, message size.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// Number of worker slots.
    pub fn processes(&self) -> usize {
        self.inner.cfg.workers
    }

    /// The pids of the workers running now.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.lock().workers.iter().filter_map(|k| k.proc.as_ref()?.pid()).collect()
    }

    /// The same pool, cutting `map`, `starmap` and `imap` work into chunks of `size` tasks
    /// (Python's `chunksize`). Defaults: `len / (4 × workers)` rounded up for `map` and
    /// `starmap`, 1 for `imap`.
    pub fn chunksize(&self, size: usize) -> Chunked<'_> {
        Chunked { pool: self, size: size.max(1) }
    }

    fn default_chunks(&self, len: usize) -> usize {
        len.div_ceil(4 * self.inner.cfg.workers).max(1)
    }

    fn start_job<T>(
        &self,
        call: Call,
        items: Batch,
        chunksize: usize,
        decode: fn(&mut JobState) -> Result<T, PoolError>,
    ) -> Result<AsyncResult<T>, PoolError> {
        self.inner.check_owner()?;
        self.inner.check_call(call)?;
        let mut st = self.inner.lock();
        if st.closed {
            return Err(PoolError::Closed);
        }
        let job = Job::new(items.len(), true);
        self.inner.submit(&mut st, &job, call, items, chunksize);
        Ok(AsyncResult { job, decode, _t: PhantomData })
    }

    /// The job of a `map` or `starmap` (`chunks`: the chunk size, else the default for its
    /// length); a refused submission becomes an `AsyncResult` holding the error.
    fn map_job<R: Wire>(&self, call: Call, items: Batch, chunks: Option<usize>) -> AsyncResult<Vec<R>> {
        let chunks = chunks.unwrap_or_else(|| self.default_chunks(items.len()));
        self.start_job(call, items, chunks, decode_all::<R>).unwrap_or_else(AsyncResult::failed)
    }

    /// Runs `f(arg)` in a worker and waits for the result.
    ///
    /// # Errors
    /// The task's error ([`PoolError::TaskPanicked`], [`PoolError::WorkerDied`], …) or
    /// [`PoolError::Closed`].
    pub fn apply<A: Wire, R: Wire>(&self, f: fn(A) -> R, arg: A) -> Result<R, PoolError> {
        self.apply_async(f, arg).get()
    }

    /// Runs `f(arg)` in a worker; the result arrives in the [`AsyncResult`] (which reports
    /// [`PoolError::Closed`] if the pool was closed).
    pub fn apply_async<A: Wire, R: Wire>(&self, f: fn(A) -> R, arg: A) -> AsyncResult<R> {
        self.start_job(Call::unary(f), encode_all([arg]), 1, decode_one::<R>)
            .unwrap_or_else(AsyncResult::failed)
    }

    /// `f` over `items` in the workers, results in order; the first error fails the whole.
    ///
    /// # Errors
    /// As [`Pool::apply`].
    pub fn map<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_async(f, items).get()
    }

    /// [`Pool::map`] without waiting.
    pub fn map_async<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>> {
        self.map_job(Call::unary(f), encode_all(items), None)
    }

    /// `f(a, b)` for each pair, results in order (Python's `starmap` for two arguments).
    ///
    /// # Errors
    /// As [`Pool::apply`].
    pub fn starmap<A: Wire, B: Wire, R: Wire>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, PoolError> {
        self.starmap_async(f, items).get()
    }

    /// [`Pool::starmap`] without waiting.
    pub fn starmap_async<A: Wire, B: Wire, R: Wire>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> AsyncResult<Vec<R>> {
        self.map_job(Call::binary(f), encode_pairs(items), None)
    }

    /// `f` over `items`, lazily: items are taken from the iterator as results are consumed
    /// (a bounded number ahead) and results come in order, each a `Result`.
    pub fn imap<'a, A: Wire + 'a, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A> + 'a,
    ) -> IMap<'a, R> {
        IMap::new(self, Call::unary(f), items, 1, true)
    }

    /// As [`Pool::imap`], results in completion order.
    pub fn imap_unordered<'a, A: Wire + 'a, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A> + 'a,
    ) -> IMapUnordered<'a, R> {
        IMapUnordered(IMap::new(self, Call::unary(f), items, 1, false))
    }

    /// No new tasks; workers exit once the queued ones are done. Then [`Pool::join`].
    ///
    /// An [`IMap`] takes its input lazily: the items it has not taken by now (it runs a
    /// window of at least 64 ahead of what was consumed) come back as [`PoolError::Closed`],
    /// where Python's `imap` would still run them. Consume it before closing.
    pub fn close(&self) {
        if self.inner.check_owner().is_err() {
            return;
        }
        let mut st = self.inner.lock();
        st.closed = true;
        self.inner.dispatch(&mut st);
        self.inner.wake.notify_all();
    }

    /// Stops the workers now (SIGTERM, then SIGKILL after 2 s); unfinished tasks fail with
    /// [`PoolError::Terminated`]. Returns once every worker has been reaped.
    pub fn terminate(&self) {
        if self.inner.check_owner().is_err() {
            return;
        }
        {
            let mut st = self.inner.lock();
            st.closed = true;
            st.terminated = true;
            self.inner.fail_all(&mut st, PoolError::Terminated);
            self.inner.wake.notify_all();
        }
        let _ = self.join();
    }

    /// Waits until the manager and every worker have finished.
    ///
    /// # Errors
    /// [`PoolError::StillRunning`] unless [`Pool::close`] or [`Pool::terminate`] came first.
    pub fn join(&self) -> Result<(), PoolError> {
        self.inner.check_owner()?;
        if !self.inner.lock().closed {
            return Err(PoolError::StillRunning);
        }
        let handle = self.manager.lock().unwrap_or_else(|e| e.into_inner()).take();
        match handle {
            Some(h) => {
                let _ = h.join();
            }
            None => {
                let mut st = self.inner.lock();
                while !st.finished {
                    st = self.inner.finished.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if self.inner.check_owner().is_err() {
            // A copy in a forked child: the workers and the manager thread are the parent's.
            if let Some(h) = self.manager.lock().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(h);
            }
            return;
        }
        self.terminate();
    }
}

impl<'p> Chunked<'p> {
    /// [`Pool::map`] in chunks of this size.
    ///
    /// # Errors
    /// As [`Pool::map`].
    pub fn map<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>, PoolError> {
        self.map_async(f, items).get()
    }

    /// [`Pool::map_async`] in chunks of this size.
    pub fn map_async<A: Wire, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A>,
    ) -> AsyncResult<Vec<R>> {
        self.pool.map_job(Call::unary(f), encode_all(items), Some(self.size))
    }

    /// [`Pool::starmap`] in chunks of this size.
    ///
    /// # Errors
    /// As [`Pool::map`].
    pub fn starmap<A: Wire, B: Wire, R: Wire>(
        &self,
        f: fn(A, B) -> R,
        items: impl IntoIterator<Item = (A, B)>,
    ) -> Result<Vec<R>, PoolError> {
        self.pool.map_job(Call::binary(f), encode_pairs(items), Some(self.size)).get()
    }

    /// [`Pool::imap`] in chunks of this size.
    pub fn imap<'a, A: Wire + 'a, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A> + 'a,
    ) -> IMap<'a, R> {
        IMap::new(self.pool, Call::unary(f), items, self.size, true)
    }

    /// [`Pool::imap_unordered`] in chunks of this size.
    pub fn imap_unordered<'a, A: Wire + 'a, R: Wire>(
        &self,
        f: fn(A) -> R,
        items: impl IntoIterator<Item = A> + 'a,
    ) -> IMapUnordered<'a, R> {
        IMapUnordered(IMap::new(self.pool, Call::unary(f), items, self.size, false))
    }
}

fn encode_one<A: Wire>(a: A) -> Result<Vec<u8>, WireError> {
    let mut b = Vec::new();
    a.encode(&mut b).map(|()| b)
}

fn decode_one<R: Wire>(st: &mut JobState) -> Result<R, PoolError> {
    match st.slots.front() {
        Some(s) => st.outcome(s),
        None => Err(PoolError::Setup("result missing".into())),
    }
}

fn decode_all<R: Wire>(st: &mut JobState) -> Result<Vec<R>, PoolError> {
    st.slots.iter().map(|s| st.outcome(s)).collect()
}

/// The result of [`Pool::apply_async`] or [`Pool::map_async`] (Python's `AsyncResult`).
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmkit::process::{Pool, PoolError};
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
/// let pool = Pool::new(1)?;
/// let r = pool.apply_async(nap, 1000);
/// assert_eq!(r.get_timeout(Duration::from_millis(10)), Err(PoolError::Timeout));
/// assert_eq!(r.get()?, 1000);
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// # Ok::<(), PoolError>(())
/// ```
pub struct AsyncResult<T> {
    job: Arc<Job>,
    decode: fn(&mut JobState) -> Result<T, PoolError>,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncResult").field("ready", &self.ready()).finish()
    }
}

impl<T> AsyncResult<T> {
    fn failed(e: PoolError) -> AsyncResult<T> {
        let job = Job::new(1, true);
        job.set(0, Err(e));
        fn first_error<T>(st: &mut JobState) -> Result<T, PoolError> {
            match st.slots.front() {
                Some(Slot::Err(e)) => Err(e.clone()),
                _ => Err(PoolError::Setup("no result".into())),
            }
        }
        AsyncResult { job, decode: first_error::<T>, _t: PhantomData }
    }

    /// Whether every task of it has finished (successfully or not).
    pub fn ready(&self) -> bool {
        all_done(&self.job.lock())
    }

    /// Whether it finished without error; `None` while not ready.
    pub fn successful(&self) -> Option<bool> {
        let st = self.job.lock();
        all_done(&st).then(|| st.slots.iter().all(|s| matches!(s, Slot::Ok(..))))
    }

    /// Waits until ready.
    pub fn wait(&self) {
        let _ = self.job.wait_until(None, all_done);
    }

    /// Waits until ready or `timeout`; returns whether it is ready.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.job.wait_until(crate::futex::deadline_after(timeout), all_done).1
    }

    /// Waits for and returns the result (it stays available: `get` can be called again).
    ///
    /// # Errors
    /// The task's error ([`PoolError::TaskPanicked`], [`PoolError::WorkerDied`],
    /// [`PoolError::Terminated`], …), or the first one of a `map`.
    pub fn get(&self) -> Result<T, PoolError> {
        let (mut st, _) = self.job.wait_until(None, all_done);
        (self.decode)(&mut st)
    }

    /// As [`AsyncResult::get`], giving up after `timeout` with [`PoolError::Timeout`].
    ///
    /// # Errors
    /// As [`AsyncResult::get`], or [`PoolError::Timeout`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, PoolError> {
        let (mut st, ready) = self.job.wait_until(crate::futex::deadline_after(timeout), all_done);
        if !ready {
            return Err(PoolError::Timeout);
        }
        (self.decode)(&mut st)
    }
}

/// The lazy, ordered iterator of [`Pool::imap`]: one `Result` per item.
pub struct IMap<'a, R> {
    inner: Arc<Inner>,
    job: Arc<Job>,
    call: Call,
    input: Option<Box<dyn Iterator<Item = Result<Vec<u8>, WireError>> + 'a>>,
    chunksize: usize,
    window: usize,
    submitted: usize,
    yielded: usize,
    ordered: bool,
    _r: PhantomData<fn() -> R>,
}

/// The iterator of [`Pool::imap_unordered`]: results in completion order.
pub struct IMapUnordered<'a, R>(IMap<'a, R>);

impl<R> fmt::Debug for IMap<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMap").field("submitted", &self.submitted).field("yielded", &self.yielded).finish()
    }
}

impl<R> fmt::Debug for IMapUnordered<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'a, R: Wire> IMap<'a, R> {
    /// Results in input order (`ordered`) or in completion order.
    fn new<A: Wire + 'a>(
        pool: &Pool,
        call: Call,
        items: impl IntoIterator<Item = A> + 'a,
        chunksize: usize,
        ordered: bool,
    ) -> Self {
        let input: Box<dyn Iterator<Item = Result<Vec<u8>, WireError>> + 'a> =
            Box::new(items.into_iter().map(encode_one));
        let window = (4 * pool.inner.cfg.workers).saturating_mul(chunksize).clamp(64, 1 << 20);
        IMap {
            inner: pool.inner.clone(),
            job: {
                let job = Job::new(0, false);
                job.lock().eager = true;
                job
            },
            call,
            input: Some(input),
            chunksize,
            window,
            submitted: 0,
            yielded: 0,
            ordered,
            _r: PhantomData,
        }
    }

    /// Submits items until `window` are outstanding or the input ends.
    fn top_up(&mut self) {
        let Some(input) = self.input.as_mut() else { return };
        // Refill once half the window is free: submissions in batches, not one by one.
        if self.submitted - self.yielded > self.window / 2 {
            return;
        }
        let mut batch = Batch::default();
        let foreign = self.inner.check_owner().and_then(|()| self.inner.check_call(self.call)).err();
        while self.submitted - self.yielded + batch.len() < self.window {
            match input.next() {
                Some(item) => batch.push(self.submitted + batch.len(), |buf| {
                    buf.extend_from_slice(&item?);
                    Ok(())
                }),
                None => {
                    self.input = None;
                    break;
                }
            }
        }
        let mut st = self.inner.lock();
        {
            let mut js = self.job.lock();
            js.add(batch.len());
            js.sealed = self.input.is_none();
        }
        self.submitted += batch.len();
        if batch.len() == 0 {
            return;
        }
        if st.closed || foreign.is_some() {
            let e = foreign.unwrap_or(PoolError::Closed);
            for (i, _) in batch.items {
                self.job.set(i, Err(e.clone()));
            }
            return;
        }
        self.inner.submit(&mut st, &self.job, self.call, batch, self.chunksize);
    }

    /// The next result, waiting at most `timeout`: `None` at the end, `Some(Err(Timeout))`
    /// if nothing came in time (the iterator can be resumed).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, PoolError>> {
        self.next_until(crate::futex::deadline_after(timeout))
    }

    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Result<R, PoolError>> {
        self.top_up();
        if self.input.is_none() && self.yielded == self.submitted {
            return None;
        }
        let want = self.yielded;
        let ordered = self.ordered;
        let (mut st, ready) = self.job.wait_until(deadline, |s| {
            if ordered {
                matches!(s.slot(want), Some(Slot::Ok(..) | Slot::Err(_)))
            } else {
                !s.arrivals.is_empty()
            }
        });
        if !ready {
            return Some(Err(PoolError::Timeout));
        }
        let index = if ordered { want } else { st.arrivals.pop_front().expect("checked") };
        let r = st.take(index);
        drop(st);
        self.yielded += 1;
        Some(match r {
            Some(Ok(b)) => R::decode(&b).map_err(PoolError::from),
            Some(Err(e)) => Err(e),
            None => Err(PoolError::Setup("result missing".into())),
        })
    }
}

impl<R: Wire> Iterator for IMap<'_, R> {
    type Item = Result<R, PoolError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_until(None)
    }
}

impl<'a, R: Wire> IMapUnordered<'a, R> {
    /// As [`IMap::next_timeout`].
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R, PoolError>> {
        self.0.next_timeout(timeout)
    }
}

impl<R: Wire> Iterator for IMapUnordered<'_, R> {
    type Item = Result<R, PoolError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next_until(None)
    }
}

impl<R> Drop for IMap<'_, R> {
    fn drop(&mut self) {
        // Forget the tasks of an abandoned iterator that have not started.
        let mut st = self.inner.lock();
        st.pending.forget_job(&self.job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let call = Call { tramp: FnRef(3), f: FnRef(4) };
        let mut f = Vec::new();
        encode_task(call, &[(1, b"ab"), (2, b"")], &mut f);
        assert_eq!(
            decode_task(&f),
            Some(TaskFrame::Run { call, items: vec![(1, &b"ab"[..]), (2, &b""[..])] })
        );
        for cut in 0..f.len() {
            assert!(decode_task(&f[..cut]).is_none() || cut == 0 && f[..cut].is_empty());
        }
        assert_eq!(decode_task(&[2]), Some(TaskFrame::Stop));
        assert_eq!(decode_task(&[2, 0]), None);
        start_results(1, &mut f);
        push_result(9, ST_PANICKED, b"boom", &mut f);
        push_result(10, ST_OK, b"ok", &mut f);
        let (w, es) = decode_results(&f).unwrap();
        assert_eq!(w, 1);
        assert_eq!(es[0].outcome(100), Some(Err(PoolError::TaskPanicked("boom".into()))));
        assert_eq!(es[1].outcome(100), Some(Ok(&b"ok"[..])));
        for cut in 0..f.len() {
            assert!(decode_results(&f[..cut]).is_none());
        }
        assert!(fuzz_frames(&f));
    }
}
