//! A ring mapped in this process: the segment, the validated geometry, this process's
//! member record, and the waiting and liveness logic shared by every queue type.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{QueueCreateError, QueueOpenError};
use super::raw::{mpmc, spsc, Geometry, GeometryError, RingCtl, SlotArray, FLAVOR_MPMC, MEMBERS};
use crate::futex::{TimedOut, WaitCell};
use crate::primitive::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::shm::{Kind, Layout, Offset, Segment, Shareable};
use crate::util::proc::{pid_gone, Liveness, ProcessToken};

// SAFETY: atomics, WaitCells and cache padding, `#[repr(C)]`; every bit pattern is a state
// the algorithms either use or report as corrupted.
unsafe impl Shareable for RingCtl {}

/// How long a slot may stay claimed by a writer (reader) before the survivors ask whether
/// that process still lives. A live one is never skipped, however slow.
pub(crate) const STUCK_CHECK: Duration = Duration::from_millis(2);

/// How often a blocked side re-checks whether its peers still live.
/// (A blocked side wakes for it: 100 ms keeps an idle receiver well under 1 ms of CPU per
/// second on the 2-core VM: ten timed futex wake-ups, ~35 µs each, and a `/proc` read per peer,
/// ~8 µs. Departures that close or drop handles are seen at once.)
pub(crate) const PEER_CHECK: Duration = Duration::from_millis(100);

/// Slots over raw segment memory.
pub(crate) struct ShmSlots {
    base: NonNull<u8>,
    stride: usize,
    stamp: usize,
}

impl SlotArray for ShmSlots {
    #[inline(always)]
    fn stamp(&self, idx: usize) -> &AtomicU64 {
        // SAFETY: `idx` is masked below `slots`, the array was bounds-checked at attach, the
        // stride is a multiple of 8 and the base 64-aligned; the stamp is only accessed
        // atomically, and the mapping outlives `&self`.
        unsafe { &*self.base.as_ptr().add(idx * self.stride).cast::<AtomicU64>() }
    }

    #[inline(always)]
    unsafe fn write(&self, idx: usize, f: impl FnOnce(*mut u8)) {
        // SAFETY: in bounds as in `stamp`; the caller owns the slot.
        f(unsafe { self.base.as_ptr().add(idx * self.stride + self.stamp) })
    }

    #[inline(always)]
    unsafe fn read<R>(&self, idx: usize, f: impl FnOnce(*const u8) -> R) -> R {
        // SAFETY: in bounds as in `stamp`; the caller owns the slot.
        f(unsafe { self.base.as_ptr().add(idx * self.stride + self.stamp) })
    }
}

/// Which handles a process holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Sender,
    Receiver,
}

/// A ring in this process. Shared (`Arc`) by every handle of the ring in the process, and
/// copied into children by `fork`.
pub(crate) struct Ring {
    seg: Arc<Segment>,
    ctl: NonNull<RingCtl>,
    pub(crate) slots: ShmSlots,
    pub(crate) geo: Geometry,
    /// `pid << 32 | member index + 1` once this process has a member record; other values
    /// (another pid: inherited by fork) mean "not yet in this process".
    reg: AtomicU64,
    /// Handles of each role alive in this process.
    senders: AtomicUsize,
    receivers: AtomicUsize,
    /// The slot stamp this process last found stuck, and since when (ns after `EPOCH`).
    stuck_stamp: AtomicU64,
    stuck_since: AtomicU64,
    /// Whether recovered slots also settle `unfinished` (a JoinableQueue).
    pub(crate) joinable: bool,
    /// Whether this ring is in `LIVE` (so forked children register at once).
    listed: AtomicBool,
    /// See [`Ring::set_gate`]; null when unused.
    gate: AtomicPtr<AtomicU32>,
    /// Roles counted by this process's last `fork_begins` (bit 0 sender, bit 1 receiver).
    forked_roles: crate::primitive::atomic::AtomicU8,
    /// Which ring this is, the same for every `Ring` of it in this process.
    id: RingId,
}

/// Identifies a ring's memory within this process, whichever mapping of it a `Ring` uses (a
/// process may map one ring twice: opened by name twice, or inherited by `fork` and opened
/// again): the segment's file (device and inode; an anonymous segment, which nothing can map
/// a second time, by its address) and the ring's offset in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingId {
    dev: u64,
    ino: u64,
    at: usize,
}

impl RingId {
    fn of(seg: &Segment, ctl: NonNull<RingCtl>) -> RingId {
        let base = seg.payload_ptr().as_ptr() as usize;
        let at = (ctl.as_ptr() as usize).wrapping_sub(base);
        let file = seg.fd().and_then(|fd| {
            // SAFETY: `stat` is plain data that fstat fills in.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: a valid fd and out-pointer.
            (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some((st.st_dev, st.st_ino))
        });
        // A file's device is never `u64::MAX`, so an address cannot pass for a file.
        let (dev, ino) = file.unwrap_or((u64::MAX, base as u64));
        RingId { dev, ino, at }
    }
}

/// The MPMC rings this process holds handles of. A `pthread_atfork` child handler walks it
/// so a forked child gets its own member record (as a sender and/or receiver, like its
/// parent) before it returns from `fork`: otherwise a parent that forks senders and drops its
/// own could see "no sender left" before the children first run. Lock-free, because a fork
/// handler must not take a lock another thread might have held at the fork.
static LIVE: [AtomicPtr<Ring>; LIVE_SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; LIVE_SLOTS];
const LIVE_SLOTS: usize = 256;
static ATFORK: std::sync::Once = std::sync::Once::new();

/// Set once a ring could not be listed (`LIVE` was full): its member record is then invisible
/// to [`Ring::held_by_siblings`], so from then on no claim of this process takes a record
/// naming our pid (sticky; inherited by `fork`, reset by `exec`).
static LIVE_FULL: AtomicBool = AtomicBool::new(false);

/// The claim lock: held while this process claims a member record and stores its index in
/// `reg`, and by `Ring::drop` after unlisting. So two `Ring`s of one ring in this process
/// (see [`RingId`]) claim one after the other, each seeing the record the other holds, and a
/// claim may read the other rings listed in `LIVE` without one being freed under it. A spin
/// lock (cold paths only) that the fork child handler resets: in the child no other thread
/// exists to release it, and the fork handler itself claims.
static CLAIMING: AtomicBool = AtomicBool::new(false);

struct ClaimLock;

impl ClaimLock {
    fn lock() -> ClaimLock {
        // Acquire: pairs with the Release in `drop`: we see the previous holder's `reg`
        // store and, after a `Ring::drop` held it, its cleared `LIVE` entry.
        while CLAIMING.swap(true, Ordering::Acquire) {
            crate::primitive::thread::yield_now();
        }
        ClaimLock
    }
}

impl Drop for ClaimLock {
    fn drop(&mut self) {
        // Release: see `lock`.
        CLAIMING.store(false, Ordering::Release);
    }
}

extern "C" fn register_rings_in_child() {
    // The parent's count of threads in the prepare handler, inherited: only this thread
    // exists here, and it has left the handler.
    IN_PREPARE.store(0, Ordering::SeqCst);
    // Likewise the claim lock, maybe held by a parent thread at the fork; this thread was not
    // claiming (it was in `fork`). Relaxed: no other thread exists to see it.
    CLAIMING.store(false, Ordering::Relaxed);
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    for slot in &LIVE {
        // Acquire: pairs with the Release that listed the ring.
        let ptr = slot.load(Ordering::Acquire);
        // SAFETY: a listed ring is unlisted before it is freed, and no other thread exists in
        // the child to free it; we only take a shared reference.
        if let Some(ring) = unsafe { ptr.as_ref() } {
            ring.register_as(pid, 0, false);
            ring.fork_done();
        }
    }
}

/// How long a fork in flight counts as a holder of the parent's roles (a child not yet
/// scheduled after this long is, in practice, one that will never run).
pub(crate) const FORK_GRACE: Duration = Duration::from_secs(2);

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process (vDSO; no syscall).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Before `fork`, in the parent: counts the child as a coming holder of every ring this
/// process holds handles of, so that until the child writes its own record (in
/// `register_rings_in_child`, when it first runs) the parent's peers do not see the roles
/// as gone — e.g. a parent that forks a receiver and drops its own receiving end at once.
/// Threads of this process inside `count_forks_in_flight` (between the prepare handler and
/// the parent or child handler). `Ring::drop` waits for 0 after unlisting, so the prepare
/// handler never touches a freed ring: unlike the child handler, it runs while the parent's
/// other threads go on.
static IN_PREPARE: AtomicUsize = AtomicUsize::new(0);

/// After `fork`, in the parent (success or failure).
extern "C" fn prepare_done() {
    // SeqCst: see `IN_PREPARE`.
    IN_PREPARE.fetch_sub(1, Ordering::SeqCst);
}

extern "C" fn count_forks_in_flight() {
    // SeqCst: with the SeqCst unlisting and load in `Ring::drop`, either we do not see the
    // ring in `LIVE`, or its drop sees us here and waits.
    IN_PREPARE.fetch_add(1, Ordering::SeqCst);
    let until = monotonic_ns().saturating_add(FORK_GRACE.as_nanos() as u64);
    for slot in &LIVE {
        // Acquire: as in `register_rings_in_child`.
        let ptr = slot.load(Ordering::Acquire);
        // SAFETY: a ring is freed only after its drop cleared its entry and then saw
        // `IN_PREPARE` at 0; we raised it before reading the entry, so this ring lives until
        // `prepare_done`. We only take a shared reference.
        if let Some(ring) = unsafe { ptr.as_ref() } {
            ring.fork_begins(until);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.listed.load(Ordering::Relaxed) {
            let me = self as *mut Ring;
            for slot in &LIVE {
                // SeqCst: see `IN_PREPARE`.
                if slot
                    .compare_exchange(me, std::ptr::null_mut(), Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
            // A thread forking right now may have read our entry before we cleared it.
            while IN_PREPARE.load(Ordering::SeqCst) != 0 {
                crate::primitive::thread::yield_now();
            }
            // So may a claim of another `Ring` of the same ring (`held_by_siblings`): it
            // holds the claim lock while it reads us.
            drop(ClaimLock::lock());
        }
    }
}

/// Process-local time origin for `stuck_since`.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// SAFETY: the pointers refer into the segment that `seg` keeps mapped; all shared state is
// atomic.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("geometry", &self.geo).field("len", &self.len()).finish()
    }
}

const REGISTERING: u64 = u32::MAX as u64;

impl Ring {
    /// The segment layout for a geometry: control block, then the slots at a 64-aligned offset.
    fn layout(geo: &Geometry) -> Result<(Offset<RingCtl>, usize, usize), GeometryError> {
        let mut l = Layout::new();
        let ctl = l.push::<RingCtl>();
        let slots_at = l.size().div_ceil(128) * 128;
        let total = slots_at.checked_add(geo.slots_bytes().ok_or(GeometryError::TooLarge)?);
        let total = total.ok_or(GeometryError::TooLarge)?;
        Ok((ctl, slots_at, total))
    }

    /// Bytes a ring of this geometry needs in a segment (for callers placing it themselves).
    pub(crate) fn size_for(geo: &Geometry) -> Result<usize, GeometryError> {
        Ok(Self::layout(geo)?.2)
    }

    /// A new ring in a new segment: `named` or anonymous.
    pub(crate) fn create(kind: Kind, geo: Geometry, named: Option<&str>) -> Result<Ring, QueueCreateError> {
        let (_, _, total) = Self::layout(&geo)?;
        let builder = Segment::builder(kind, total);
        let seg = match named {
            Some(name) => builder.named(name)?,
            None => builder.anonymous()?,
        };
        // The payload is fresh zeroed memory: initialise it before the segment is published
        // (openers wait for publication), then keep the same mapping.
        let (ctl, slots) = Self::pointers(&seg, &geo, 0)?;
        let ring = Ring::from_parts(Arc::new(seg.publish()), ctl, slots, geo);
        ring.init();
        Ok(ring)
    }

    /// Writes a fresh ring's geometry and stamps at payload offset `at` of a segment that is
    /// not yet published (so no opener can see it half-made); attach with `at_existing`.
    pub(crate) fn prepare(seg: &Segment, at: usize, geo: &Geometry) -> Result<(), QueueCreateError> {
        let (ctl, slots) = Self::pointers(seg, geo, at)?;
        // SAFETY: `pointers` checked the control block in bounds and aligned.
        geo.init(unsafe { ctl.as_ref() });
        if geo.flavor == FLAVOR_MPMC {
            mpmc::init(&slots, geo);
        }
        Ok(())
    }

    /// Finishes a ring whose memory is fresh: writes geometry and stamps.
    fn init(&self) {
        self.geo.init(self.ctl());
        if self.geo.flavor == FLAVOR_MPMC {
            mpmc::init(&self.slots, &self.geo);
        }
    }

    fn attach_unchecked(seg: Arc<Segment>, geo: Geometry, at: usize) -> Result<Ring, QueueCreateError> {
        let (ctl, slots) = Self::pointers(&seg, &geo, at)?;
        Ok(Ring::from_parts(seg, ctl, slots, geo))
    }

    fn from_parts(seg: Arc<Segment>, ctl: NonNull<RingCtl>, slots: ShmSlots, geo: Geometry) -> Ring {
        let id = RingId::of(&seg, ctl);
        Ring {
            id,
            seg,
            ctl,
            slots,
            geo,
            reg: AtomicU64::new(0),
            senders: AtomicUsize::new(0),
            receivers: AtomicUsize::new(0),
            stuck_stamp: AtomicU64::new(0),
            stuck_since: AtomicU64::new(0),
            joinable: false,
            listed: AtomicBool::new(false),
            gate: AtomicPtr::new(std::ptr::null_mut()),
            forked_roles: crate::primitive::atomic::AtomicU8::new(0),
        }
    }

    /// Lists the ring for the fork handler (once; silently skipped when the list is full:
    /// the child then registers on its first use instead).
    fn list(&self) {
        // AcqRel: one thread lists the ring.
        if self.listed.swap(true, Ordering::AcqRel) {
            return;
        }
        ATFORK.call_once(|| {
            // SAFETY: registers a plain extern "C" handler; it only uses atomics, shared
            // memory and getpid (no locks, no allocation).
            unsafe {
                libc::pthread_atfork(
                    Some(count_forks_in_flight),
                    Some(prepare_done),
                    Some(register_rings_in_child),
                )
            };
        });
        let me = self as *const Ring as *mut Ring;
        for slot in &LIVE {
            // Release: the ring is fully built before the fork handler can see it.
            if slot.compare_exchange(std::ptr::null_mut(), me, Ordering::Release, Ordering::Relaxed).is_ok() {
                return;
            }
        }
        // Relaxed: this ring claims its record afterwards, under the claim lock, whose release
        // publishes the flag to every later claim.
        LIVE_FULL.store(true, Ordering::Relaxed);
    }

    /// Whether the process named `pid` in slot stamp `stamp` is dead, asked only once the
    /// same stamp has been seen for [`STUCK_CHECK`] (by any thread of this process), and then
    /// at most every [`STUCK_CHECK`]: a live claimer is never skipped, however slow.
    pub(crate) fn claimer_dead(&self, stamp: u64, pid: u32) -> bool {
        // Relaxed: a per-process heuristic; races only shift when the check happens. A
        // claimer that is alive finishes within nanoseconds, so the first sightings of a
        // stamp only record it (no clock read on the hot path).
        if self.stuck_stamp.load(Ordering::Relaxed) != stamp {
            self.stuck_stamp.store(stamp, Ordering::Relaxed);
            self.stuck_since.store(0, Ordering::Relaxed);
            return false;
        }
        let now = now_ns().max(1);
        let since = self.stuck_since.load(Ordering::Relaxed);
        if since == 0 {
            self.stuck_since.store(now, Ordering::Relaxed);
            return false;
        }
        if now.saturating_sub(since) < STUCK_CHECK.as_nanos() as u64 {
            return false;
        }
        self.stuck_since.store(now, Ordering::Relaxed);
        self.pid_liveness(pid) == Liveness::Dead
    }

    /// The control block and slots of a ring at payload offset `at`, bounds-checked.
    fn pointers(
        seg: &Segment,
        geo: &Geometry,
        at: usize,
    ) -> Result<(NonNull<RingCtl>, ShmSlots), QueueCreateError> {
        let (ctl_off, slots_at, total) = Self::layout(geo)?;
        let end = at.checked_add(total).ok_or(GeometryError::TooLarge)?;
        if end > seg.payload_len() || at % 128 != 0 {
            return Err(QueueCreateError::Geometry(GeometryError::Mismatch("ring does not fit its segment")));
        }
        let ctl = NonNull::from(seg.get(Offset::<RingCtl>::new(at + ctl_off.get()))?);
        // SAFETY: `at + slots_at + slots_bytes <= payload_len` (checked above).
        let base = unsafe { seg.payload_ptr().add(at + slots_at) };
        let stamp = if geo.flavor == FLAVOR_MPMC { 8 } else { 0 };
        Ok((ctl, ShmSlots { base, stride: geo.stride(), stamp }))
    }

    /// Opens the ring of a named segment, checking kind (by `Segment::open`) and geometry.
    pub(crate) fn open(
        name: &str,
        kind: Kind,
        flavor: u32,
        elem_size: usize,
        timeout: Option<Duration>,
    ) -> Result<Ring, QueueOpenError> {
        let seg = match timeout {
            Some(t) => Segment::open_timeout(name, kind, t)?,
            None => Segment::open(name, kind)?,
        };
        Self::at_existing(Arc::new(seg), 0, flavor, elem_size)
    }

    /// The ring at payload offset `at` of `seg`, written earlier by [`Ring::at_new`].
    pub(crate) fn at_existing(
        seg: Arc<Segment>,
        at: usize,
        flavor: u32,
        elem_size: usize,
    ) -> Result<Ring, QueueOpenError> {
        if at % 128 != 0 {
            return Err(QueueOpenError::Geometry(GeometryError::Mismatch("ring offset not 128-aligned")));
        }
        let ctl_size = std::mem::size_of::<RingCtl>();
        if at.checked_add(ctl_size).is_none_or(|end| end > seg.payload_len()) {
            return Err(QueueOpenError::Geometry(GeometryError::Mismatch("segment too small for a ring")));
        }
        let ctl: &RingCtl = seg.get(Offset::new(at)).map_err(|_| GeometryError::Mismatch("ring offset"))?;
        let geo = Geometry::read(ctl, flavor, elem_size)?;
        Self::attach_unchecked(seg, geo, at).map_err(|e| match e {
            QueueCreateError::Geometry(g) => QueueOpenError::Geometry(g),
            _ => QueueOpenError::Geometry(GeometryError::Mismatch("ring does not fit its segment")),
        })
    }

    /// A fresh ring at payload offset `at` of a caller's segment (the memory must be zeroed
    /// and not yet used by anyone).
    pub(crate) fn at_new(seg: Arc<Segment>, at: usize, geo: Geometry) -> Result<Ring, QueueCreateError> {
        let ring = Self::attach_unchecked(seg, geo, at)?;
        ring.init();
        Ok(ring)
    }

    #[inline(always)]
    pub(crate) fn ctl(&self) -> &RingCtl {
        // SAFETY: checked in bounds and aligned at attach; the Arc keeps the mapping alive.
        unsafe { self.ctl.as_ref() }
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// This process's pid, registering a member record for it if it has none yet (the
    /// first use after `fork`). Costs one load and a compare on the hot path.
    #[inline(always)]
    pub(crate) fn me(&self) -> u32 {
        let pid = ProcessToken::current().pid;
        // Relaxed: `reg` is process-local bookkeeping; the member record it names is
        // written before `reg` is (by the same process).
        if (self.reg.load(Ordering::Relaxed) >> 32) as u32 != pid {
            self.register(pid);
        }
        pid
    }

    #[cold]
    fn register(&self, pid: u32) {
        // A ring holding a record is listed, so that another `Ring` of it in this process
        // sees the record (see `held_by_siblings`); `add_handle` has listed it already.
        if self.geo.flavor == FLAVOR_MPMC {
            self.list();
        }
        let start = ProcessToken::current().start;
        self.register_as(pid, start, true);
    }

    /// Gives this process (`pid`, started at `start`, 0 if unknown) a member record, unless
    /// it has one. `reap`: may free dead processes' records when the table is full (reads
    /// procfs, so not from a fork handler).
    fn register_as(&self, pid: u32, start: u64, reap: bool) {
        loop {
            // Acquire: see the record a sibling thread registered.
            let cur = self.reg.load(Ordering::Acquire);
            if (cur >> 32) as u32 == pid {
                if cur & 0xffff_ffff != REGISTERING {
                    return;
                }
                crate::primitive::thread::yield_now();
                continue;
            }
            let busy = (pid as u64) << 32 | REGISTERING;
            // Acquire/Relaxed: only one thread of the process registers.
            if self.reg.compare_exchange(cur, busy, Ordering::Acquire, Ordering::Relaxed).is_err() {
                continue;
            }
            let _claiming = ClaimLock::lock();
            let idx = self.claim_member(pid, start, reap);
            // Release: the record is written before other threads use `reg`. Under the claim
            // lock, so that the next claim of this process sees which record we hold.
            self.reg.store((pid as u64) << 32 | (idx.map_or(0, |i| i as u64 + 1)), Ordering::Release);
            return;
        }
    }

    /// Claims a member record for `pid` with our current role flags. `None` if the table is
    /// full (then `overflow` is set and death never disconnects this ring). Call under the
    /// claim lock.
    fn claim_member(&self, pid: u32, start: u64, reap: bool) -> Option<usize> {
        let ctl = self.ctl();
        let held = self.held_by_siblings(pid);
        // A record `i` naming our pid (`p`) that no other `Ring` of this ring in this process
        // holds is stale if it has another start time (an earlier process that had our pid)
        // or none: an earlier process that never recorded it, or the image we replaced by
        // `exec`, whose fork handler wrote it. One that another `Ring` holds is live whatever
        // its start time: a forked child's inherited `Ring` has start 0 until `fill_start`
        // (the fork handler cannot read procfs).
        let stale_ours = |i: usize, m: &super::raw::Member, p: u32| {
            // Relaxed: a claim re-writes the start after its CAS on the pid.
            p == pid
                && (start == 0 || m.start.load(Ordering::Relaxed) != start)
                && held.is_some_and(|held| held & 1 << i == 0)
        };
        for round in 0..2 {
            for (i, m) in ctl.members.iter().enumerate() {
                // Relaxed: a claimed record is re-validated by its start time below.
                let p = m.pid.load(Ordering::Relaxed);
                // Free: unused; a stale record of ours; or a process that no longer exists
                // (one `kill(pid, 0)`, which a fork handler may call). Zombies keep their
                // records until a reaper reads procfs.
                let free = p == 0 || stale_ours(i, m, p) || (p != pid && pid_gone(p));
                // AcqRel: the record's old fields are ours to overwrite after the claim.
                if free && m.pid.compare_exchange(p, pid, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    m.start.store(start, Ordering::Release);
                    m.senders.store(self.senders.load(Ordering::Relaxed).min(1) as u32, Ordering::Release);
                    m.receivers
                        .store(self.receivers.load(Ordering::Relaxed).min(1) as u32, Ordering::Release);
                    // Free our other stale records, as a reaper frees a dead process's: no
                    // reaper will (they name a live pid, ours), and their roles would count
                    // as ours until we exit. The image before an `exec` leaves one for each
                    // mapping of the ring its parent held.
                    for (j, m) in ctl.members.iter().enumerate().skip(i + 1) {
                        // Relaxed: as above.
                        let p = m.pid.load(Ordering::Relaxed);
                        if stale_ours(j, m, p) {
                            // AcqRel/Relaxed: as a reaper's.
                            let _ = m.pid.compare_exchange(p, 0, Ordering::AcqRel, Ordering::Relaxed);
                        }
                    }
                    return Some(i);
                }
            }
            // Full: free the records of dead processes and try once more.
            if !reap || round == 1 {
                break;
            }
            self.reap_members();
        }
        ctl.overflow.store(1, Ordering::Relaxed);
        None
    }

    /// Bit `i` set: member record `i` is held by this process through another `Ring` of the
    /// same ring (see [`RingId`]). `None` if this process cannot tell (`LIVE_FULL`). Call
    /// under the claim lock. Reads only process-local memory and atomics (a fork handler
    /// calls it).
    fn held_by_siblings(&self, pid: u32) -> Option<u64> {
        const { assert!(MEMBERS <= 64, "one bit per member record") };
        // Relaxed: see `list`.
        if LIVE_FULL.load(Ordering::Relaxed) {
            return None;
        }
        let me = self as *const Ring as *mut Ring;
        let mut held = 0u64;
        for slot in &LIVE {
            // Acquire: as in `register_rings_in_child`.
            let ptr = slot.load(Ordering::Acquire);
            if ptr == me {
                continue;
            }
            // SAFETY: a listed ring is freed only after its drop cleared its entry and then
            // took the claim lock, which we hold; we only take a shared reference.
            let Some(other) = (unsafe { ptr.as_ref() }) else { continue };
            if other.id != self.id {
                continue;
            }
            // Relaxed: rings of this process store a claimed index only under the claim lock
            // (ordered by it); `drop_handle` may clear `reg` concurrently, and a stale index
            // only keeps us from a record we could have taken.
            let reg = other.reg.load(Ordering::Relaxed);
            let idx = (reg & 0xffff_ffff) as usize;
            if (reg >> 32) as u32 == pid && (1..=MEMBERS).contains(&idx) {
                held |= 1 << (idx - 1);
            }
        }
        Some(held)
    }

    /// This process's member record, if it has one that still names it.
    fn member(&self) -> Option<&super::raw::Member> {
        // Relaxed: process-local bookkeeping (see `me`).
        let reg = self.reg.load(Ordering::Relaxed);
        let pid = ProcessToken::current().pid;
        let idx = (reg & 0xffff_ffff) as usize;
        if (reg >> 32) as u32 != pid || idx == 0 || idx > MEMBERS {
            return None;
        }
        let m = self.ctl().members.get(idx - 1)?;
        // A record that no longer names us (freed, and maybe reused by another process,
        // through a bug or a peer writing garbage) is not ours to change: its flags would be
        // another process's. Forget it, so that the next `me` claims a new one.
        // Relaxed: compared with our own pid, which this process wrote there; any other
        // value means "not ours".
        if m.pid.load(Ordering::Relaxed) != pid {
            let _ = self.reg.compare_exchange(reg, 0, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        Some(m)
    }

    /// Records this process's start time in its member record if a fork handler could not
    /// (it cannot read procfs), so that a recycled pid is not mistaken for us. Cheap when done.
    pub(crate) fn fill_start(&self) {
        if let Some(m) = self.member() {
            // Relaxed: only this process writes its record's start.
            if m.start.load(Ordering::Relaxed) == 0 {
                m.start.store(ProcessToken::current().start, Ordering::Release);
            }
        }
    }

    /// A handle of `role` was made in this process.
    pub(crate) fn add_handle(&self, role: Role) {
        let count = match role {
            Role::Sender => &self.senders,
            Role::Receiver => &self.receivers,
        };
        if self.geo.flavor == FLAVOR_MPMC {
            self.list();
        }
        // Relaxed: process-local counts; the member flag is what other processes read.
        if count.fetch_add(1, Ordering::Relaxed) == 0 {
            self.me();
            if let Some(m) = self.member() {
                let flag = if role == Role::Sender { &m.senders } else { &m.receivers };
                flag.store(1, Ordering::Release);
            }
        }
    }

    /// A handle of `role` was dropped in this process.
    pub(crate) fn drop_handle(&self, role: Role) -> bool {
        let count = match role {
            Role::Sender => &self.senders,
            Role::Receiver => &self.receivers,
        };
        // Relaxed: as in `add_handle`.
        let last = count.fetch_sub(1, Ordering::Relaxed) == 1;
        if last {
            if let Some(m) = self.member() {
                let flag = if role == Role::Sender { &m.senders } else { &m.receivers };
                // Before the flag: a checker that sees the cleared flag (Acquire) sees the
                // bump, so `peers_alive` can tell its snapshot changed under it.
                self.ctl().departures.fetch_add(1, Ordering::Relaxed);
                flag.store(0, Ordering::Release);
                if role == Role::Sender {
                    // Wake receivers so they notice there may be no sender left.
                    self.ctl().not_empty.notify_all();
                } else {
                    self.ctl().not_full.notify_all();
                }
                if m.senders.load(Ordering::Relaxed) == 0 && m.receivers.load(Ordering::Relaxed) == 0 {
                    // Release: our last writes to the ring happen before the record is reused.
                    m.pid.store(0, Ordering::Release);
                    self.reg.store(0, Ordering::Relaxed);
                }
            }
        }
        last
    }

    /// Frees member records of processes that died.
    fn reap_members(&self) {
        for m in &self.ctl().members {
            // Acquire: pairs with the Release stores when the record was claimed.
            let pid = m.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            let start = m.start.load(Ordering::Acquire);
            if (ProcessToken { pid, start }).liveness() == Liveness::Dead {
                // Relaxed/Relaxed: only the pid's owner or a reaper writes it.
                let _ = m.pid.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }

    /// The forks-in-flight counters and deadlines of the roles this process holds now.
    fn forking_roles(&self) -> u8 {
        // Relaxed: process-local counts.
        u8::from(self.senders.load(Ordering::Relaxed) > 0)
            | u8::from(self.receivers.load(Ordering::Relaxed) > 0) << 1
    }

    fn forking_fields(&self, role: Role) -> (&AtomicU32, &AtomicU64) {
        let ctl = self.ctl();
        match role {
            Role::Sender => (&ctl.forking_senders, &ctl.forking_senders_until),
            Role::Receiver => (&ctl.forking_receivers, &ctl.forking_receivers_until),
        }
    }

    /// In the parent, before `fork`: one more child will hold our roles. Remembers which
    /// (the child inherits the note and uncounts exactly those).
    fn fork_begins(&self, until: u64) {
        let roles = self.forking_roles();
        // Relaxed: process-local; the child reads its own copy.
        self.forked_roles.store(roles, Ordering::Relaxed);
        for (bit, role) in [(1, Role::Sender), (2, Role::Receiver)] {
            if roles & bit != 0 {
                let (count, deadline) = self.forking_fields(role);
                // Relaxed: ordered before the parent's later flag changes by their Release
                // stores; `peers_alive` also catches a race through the departure count.
                count.fetch_add(1, Ordering::Relaxed);
                deadline.fetch_max(until, Ordering::Release);
            }
        }
    }

    /// In the child, after writing its record: it no longer needs counting.
    fn fork_done(&self) {
        // Relaxed: our own copy of the parent's note.
        let roles = self.forked_roles.swap(0, Ordering::Relaxed);
        for (bit, role) in [(1, Role::Sender), (2, Role::Receiver)] {
            if roles & bit != 0 {
                // Release: our member record is visible before the count drops.
                let _ = self
                    .forking_fields(role)
                    .0
                    .fetch_update(Ordering::Release, Ordering::Relaxed, |n| n.checked_sub(1));
            }
        }
    }

    /// Whether a fork in flight will bring a holder of `role` (within [`FORK_GRACE`]; a
    /// deadline further ahead than that was not written by a fork and is ignored).
    fn forking(&self, role: Role) -> bool {
        let (count, deadline) = self.forking_fields(role);
        // Acquire: pairs with the child's Release in `fork_done`.
        if count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let until = deadline.load(Ordering::Acquire);
        let now = monotonic_ns();
        until > now && until - now <= FORK_GRACE.as_nanos() as u64
    }

    /// Whether some live process (other than a dead one) holds a handle of `role`. Dead
    /// processes' records are freed on the way. True if the table overflowed.
    pub(crate) fn peers_alive(&self, role: Role) -> bool {
        let ctl = self.ctl();
        self.fill_start();
        // A consistent snapshot: the departure count before and after. A parent that forks a
        // holder and drops its own role while we scan bumps it (before clearing its flag), so
        // a scan that missed both the count of the fork and the child's record sees the bump.
        let epoch = self.departures();
        // Before the records: a child that registers and then uncounts itself (Release)
        // between our two reads is seen either as counted here or in the records below.
        let forking = self.forking(role);
        let mut any = false;
        for m in &ctl.members {
            // Acquire: pairs with the Release stores when the record was claimed.
            let pid = m.pid.load(Ordering::Acquire);
            if pid == 0 {
                continue;
            }
            let flag = if role == Role::Sender { &m.senders } else { &m.receivers };
            let flagged = flag.load(Ordering::Acquire) != 0;
            // Records of dead processes are freed whatever their role, so that the table
            // does not fill with exited children.
            let start = m.start.load(Ordering::Acquire);
            match (ProcessToken { pid, start }).liveness() {
                Liveness::Dead => {
                    let _ = m.pid.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
                _ => any |= flagged,
            }
        }
        // Relaxed: overflow is sticky and only ever makes us more patient.
        any || ctl.overflow.load(Ordering::Relaxed) != 0
            || forking
            || self.gated()
            || self.departures() != epoch
    }

    /// Whether this ring waits for its first peer (a named pipe not yet opened).
    fn gated(&self) -> bool {
        // Acquire: pairs with the Release that set the gate.
        let gate = self.gate.load(Ordering::Acquire);
        // SAFETY: a gate points into our own segment (see `set_gate`), mapped while `self` is.
        !gate.is_null() && unsafe { &*gate }.load(Ordering::Acquire) == 0
    }

    /// Makes `peers_alive` report true while `*gate` is 0: for a named pipe whose other end
    /// was never opened yet. `gate` must live in this ring's segment.
    pub(crate) fn set_gate(&self, gate: &AtomicU32) {
        // Release: the gate's segment is ours; publishes the pointer.
        self.gate.store(gate as *const AtomicU32 as *mut AtomicU32, Ordering::Release);
    }

    /// Liveness of a process named in a stamp: by its member record's start time if it has
    /// one, else by pid alone.
    pub(crate) fn pid_liveness(&self, pid: u32) -> Liveness {
        for m in &self.ctl().members {
            // Acquire: see `peers_alive`.
            if m.pid.load(Ordering::Acquire) == pid {
                let start = m.start.load(Ordering::Acquire);
                return (ProcessToken { pid, start }).liveness();
            }
        }
        (ProcessToken { pid, start: 0 }).liveness()
    }

    /// How many times a process dropped its last handle of a role (see
    /// `RingCtl::departures`).
    pub(crate) fn departures(&self) -> u32 {
        // Acquire: pairs with the Release bump in `drop_handle`.
        self.ctl().departures.load(Ordering::Acquire)
    }

    /// Whether `close()` was called.
    #[inline(always)]
    pub(crate) fn is_closed(&self) -> bool {
        // Acquire: messages sent before close are visible to a receiver that drains after.
        self.ctl().closed.load(Ordering::Acquire) != 0
    }

    /// Closes the ring and wakes everyone.
    pub(crate) fn close(&self) {
        // Release: see `is_closed`.
        self.ctl().closed.store(1, Ordering::Release);
        self.ctl().not_empty.notify_all();
        self.ctl().not_full.notify_all();
        self.ctl().all_done.notify_all();
    }

    /// Messages in the ring now (approximate while others run).
    pub(crate) fn len(&self) -> usize {
        let n = if self.geo.flavor == FLAVOR_MPMC {
            mpmc::len(self.ctl(), &self.geo)
        } else {
            spsc::len(self.ctl(), &self.geo)
        };
        n as usize
    }
}

/// State a blocked operation keeps between polls: when it last checked its peers.
pub(crate) struct Patience {
    polls: std::cell::Cell<u32>,
    /// The departure count at the last check (see `RingCtl::departures`).
    departures: std::cell::Cell<Option<u32>>,
    started: std::cell::Cell<Option<Instant>>,
    last_peer_check: std::cell::Cell<Option<Instant>>,
}

/// Polls before a blocked operation starts reading the clock: the adaptive wait's spin
/// phase, after which polls come at most once per yield or park.
const QUIET_POLLS: u32 = crate::futex::WaitStrategy::ADAPTIVE.spins;

impl Patience {
    pub(crate) fn new() -> Self {
        Patience {
            polls: std::cell::Cell::new(0),
            departures: std::cell::Cell::new(None),
            started: std::cell::Cell::new(None),
            last_peer_check: std::cell::Cell::new(None),
        }
    }

    /// Counts a poll; true once it is time for the (expensive) peer check: after the spin
    /// phase, as soon as `departures` (the ring's count of dropped roles; 0 if untracked)
    /// moved since the last check, else `PEER_CHECK / 10` after the spin phase, then every
    /// [`PEER_CHECK`].
    pub(crate) fn peer_check_due(&self, departures: u32) -> bool {
        let polls = self.polls.get().saturating_add(1);
        self.polls.set(polls);
        // The count when blocking began, or at the last check: a departure during the spin
        // phase still makes the first check due at once.
        let seen = *self.departures.get().get_or_insert(departures);
        self.departures.set(Some(seen));
        if polls < QUIET_POLLS {
            return false;
        }
        let now = Instant::now();
        let start = *self.started.get().get_or_insert(now);
        self.started.set(Some(start));
        let departed = seen != departures;
        let due = departed
            || match self.last_peer_check.get() {
                None => now.duration_since(start) >= PEER_CHECK / 10,
                Some(t) => now.duration_since(t) >= PEER_CHECK,
            };
        if due {
            self.last_peer_check.set(Some(now));
            self.departures.set(Some(departures));
        }
        due
    }

    /// When the next peer check is due (`None` during the spin phase).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let start = self.started.get()?;
        Some(match self.last_peer_check.get() {
            None => start + PEER_CHECK / 10,
            Some(t) => t + PEER_CHECK,
        })
    }
}

/// Blocks on `cell` until `poll` gives a result or `deadline` passes. Parks end when the
/// next peer check of `patience` is due, so that a peer that closed or died (whose
/// notification may have come before we parked) is noticed within `PEER_CHECK / 10` of
/// blocking, then within [`PEER_CHECK`], instead of after a whole park.
pub(crate) fn block<R>(
    cell: &WaitCell,
    deadline: Option<Instant>,
    patience: &Patience,
    poll: impl FnMut() -> Option<R>,
) -> Result<R, TimedOut> {
    block_with(std::slice::from_ref(&cell), deadline, patience, poll)
}

/// [`block`] on several cells at once (with [`WaitCell::wait_any`]).
pub(crate) fn block_with<R>(
    cells: &[&WaitCell],
    deadline: Option<Instant>,
    patience: &Patience,
    mut poll: impl FnMut() -> Option<R>,
) -> Result<R, TimedOut> {
    // Spin and yield only before the first park: once a park has run into a peer check's
    // cap, nothing has been heard from the peers for a while, and re-spinning after every
    // check (200 polls, each reading the clock, and two yields) costs more than the check.
    let mut strategy = crate::futex::WaitStrategy::ADAPTIVE;
    loop {
        let cap = patience.next_due();
        let capped = cap.is_some();
        let capped_poll = || {
            if let Some(r) = poll() {
                return Some(Some(r));
            }
            // The spin phase just ended and scheduled the first check: come back to park
            // with the cap.
            if !capped && patience.next_due().is_some() {
                return Some(None);
            }
            None
        };
        let until = crate::futex::earliest(deadline, cap);
        let r = match cells {
            [one] => one.wait_with(strategy, capped_poll, until),
            many => WaitCell::wait_any_with(many, strategy, capped_poll, until),
        };
        match r {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(TimedOut) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(TimedOut);
                }
                strategy = crate::futex::WaitStrategy::SLEEP;
            }
        }
    }
}

// ---- Read-only view (`shmkit inspect`) ----

/// Stamps read at most by [`view`]: a larger ring is scanned from its head, where claims sit.
const SCAN_MAX: u64 = 1 << 16;
/// Claims listed (each with a liveness check) at most.
const CLAIMS_LISTED: usize = 16;
/// Reads of `head` and `tail` until a pair is taken while `head` stood still.
const POSITION_TRIES: usize = 4;

/// What the ring at payload offset `at` of `seg` records, for [`crate::inspect`]: geometry
/// (validated as an opener validates it), positions, flags, counters, member records, parked
/// peers and in-flight slots. Reads only, with Relaxed loads (the segment may be mapped
/// read-only): it registers no member, claims no slot and wakes nobody, so it does not count as
/// a holder of either role. Every index is masked by the validated geometry and every address
/// bounds-checked by `Segment::get`; the work is bounded (64 member records, [`SCAN_MAX`]
/// stamps, [`CLAIMS_LISTED`] liveness checks of claimers).
///
/// # Errors
/// Why the control block cannot be a ring of `flavor` in this segment.
pub(crate) fn view(
    seg: &Segment,
    at: usize,
    flavor: u32,
    joinable: bool,
) -> Result<crate::inspect::RingView, &'static str> {
    use crate::inspect::{Holder, MemberView, RingView, SlotClaim, SlotClaims};

    if at % 128 != 0 {
        return Err("ring offset not 128-aligned");
    }
    let ctl: &RingCtl =
        seg.get(Offset::new(at)).map_err(|_| "payload too small for a ring's control block")?;
    // Relaxed (every load below): a snapshot for display, maybe of read-only memory.
    let found = ctl.flavor.load(Ordering::Relaxed);
    if found != flavor {
        return Err(if found == FLAVOR_MPMC || found == super::raw::FLAVOR_SPSC {
            "the ring's flavour differs from the segment's kind"
        } else {
            "unknown ring flavour"
        });
    }
    let elem = ctl.elem_size.load(Ordering::Relaxed) as usize;
    let geo = Geometry::read(ctl, flavor, elem).map_err(|e| match e {
        GeometryError::Mismatch(what) => what,
        GeometryError::ZeroCapacity => "capacity 0",
        GeometryError::TooLarge => "ring geometry too large",
    })?;
    let (_, slots_at, total) = Ring::layout(&geo).map_err(|_| "ring geometry too large")?;
    if at.checked_add(total).is_none_or(|end| end > seg.payload_len()) {
        return Err("ring larger than its segment");
    }
    let mut problems = Vec::new();

    // `head` first: `tail` only grows, so a pair read in this order has `head <= tail` unless
    // the ring is corrupted. Retried while consumers move `head`, so that a busy SPSC ring is
    // not reported more than full.
    let (mut head, mut tail) = (0, 0);
    for _ in 0..POSITION_TRIES {
        head = ctl.head.load(Ordering::Relaxed);
        // Acquire: the consumer that wrote this `head` had seen a `tail` at least as large;
        // the fence makes that `tail` visible to the load below (relaxed loads of two
        // locations may otherwise be reordered).
        crate::primitive::atomic::fence(Ordering::Acquire);
        tail = ctl.tail.load(Ordering::Relaxed);
        if ctl.head.load(Ordering::Relaxed) == head {
            break;
        }
    }
    let used = tail.wrapping_sub(head);
    let depth = if tail < head {
        problems.push("head ahead of tail");
        0
    } else if used > geo.capacity {
        problems.push("head and tail more than the capacity apart");
        geo.capacity
    } else {
        used
    };

    let liveness_of = |pid: u32| {
        // A claimer's start time is in its member record, if it has one (as `pid_liveness`).
        let start = ctl
            .members
            .iter()
            .find(|m| m.pid.load(Ordering::Relaxed) == pid)
            .map_or(0, |m| m.start.load(Ordering::Relaxed));
        Holder::check(pid, start)
    };
    let (members, ends, claims) = if flavor == FLAVOR_MPMC {
        let members = ctl
            .members
            .iter()
            .filter_map(|m| {
                let pid = m.pid.load(Ordering::Relaxed);
                (pid != 0).then(|| MemberView {
                    holder: Holder::check(pid, m.start.load(Ordering::Relaxed)),
                    sender: m.senders.load(Ordering::Relaxed) != 0,
                    receiver: m.receivers.load(Ordering::Relaxed) != 0,
                })
            })
            .collect();
        let scanned = geo.slots.min(SCAN_MAX);
        let mut claims = SlotClaims { scanned, writing: 0, reading: 0, listed: Vec::new() };
        for k in 0..scanned {
            let idx = (head.wrapping_add(k) & geo.mask()) as usize;
            // In bounds: `idx < slots` and the slot array was checked to fit above.
            let Ok(cell) = seg.get(Offset::<AtomicU64>::new(at + slots_at + idx * geo.stride())) else {
                problems.push("slot stamp outside the segment");
                break;
            };
            let st = mpmc::decode(cell.load(Ordering::Relaxed));
            let writing = match st.phase {
                mpmc::WRITING => true,
                mpmc::READING => false,
                _ => continue,
            };
            if writing {
                claims.writing += 1;
            } else {
                claims.reading += 1;
            }
            if claims.listed.len() < CLAIMS_LISTED {
                claims.listed.push(SlotClaim { position: st.pos, writing, holder: liveness_of(st.pid) });
            }
        }
        (members, None, Some(claims))
    } else {
        let ends = [super::spsc::end_view(&ctl.members[0]), super::spsc::end_view(&ctl.members[1])];
        (Vec::new(), Some(ends), None)
    };

    // Forks in flight count only while their deadline is near (as in `Ring::forking`).
    let in_flight = |count: &AtomicU32, until: &AtomicU64| {
        let until = until.load(Ordering::Relaxed);
        let now = monotonic_ns();
        let live = until > now && until - now <= FORK_GRACE.as_nanos() as u64;
        if live {
            count.load(Ordering::Relaxed)
        } else {
            0
        }
    };
    Ok(RingView {
        at,
        spsc: flavor != FLAVOR_MPMC,
        capacity: geo.capacity,
        slots: geo.slots,
        slot_bytes: geo.elem_size,
        max_frame: None,
        head,
        tail,
        depth,
        closed: ctl.closed.load(Ordering::Relaxed) != 0,
        stats: super::Stats {
            abandoned: ctl.abandoned.load(Ordering::Relaxed),
            lost: ctl.lost.load(Ordering::Relaxed),
        },
        unfinished: joinable.then(|| ctl.unfinished.load(Ordering::Relaxed)),
        receivers_waiting: ctl.not_empty.sleepers(),
        senders_waiting: ctl.not_full.sleepers(),
        joiners_waiting: joinable.then(|| ctl.all_done.sleepers()),
        members,
        members_overflow: flavor == FLAVOR_MPMC && ctl.overflow.load(Ordering::Relaxed) != 0,
        forks_in_flight: (
            in_flight(&ctl.forking_senders, &ctl.forking_senders_until),
            in_flight(&ctl.forking_receivers, &ctl.forking_receivers_until),
        ),
        ends,
        claims,
        problems,
    })
}
