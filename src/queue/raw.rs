//! The ring algorithms over a control block and an array of slots, independent of where the
//! memory lives (a segment, or plain Rust values in the loom models).
//!
//! # Control block
//! ```text
//! line 0    flavor, elem_size, capacity, slots, closed, overflow     (set once by init)
//! line 1    tail      next position a producer claims                (producers write)
//! line 2    head      next position a consumer claims                (consumers write)
//! line 3    not_empty, not_full wait cells; abandoned, lost counters (written rarely)
//! line 4    unfinished tasks and all_done cell                      (JoinableQueue)
//! then      MEMBERS member records (pid, start, sender and receiver handle counts)
//! ```
//! Positions are u64 counters that never wrap in practice; a slot is `position & mask`,
//! with `mask` taken from the handle's own validated copy of the geometry, never re-read
//! from shared memory, so a corrupted index can pick a wrong slot but never leave the array.
//!
//! # SPSC
//! The hand-written ring's algorithm: the producer owns `tail`, the consumer `head`; each
//! caches the other's index and re-reads it only when the ring looks full (empty). One
//! Release store publishes a slot or a batch of slots.
//!
//! # MPMC: per-slot stamps that name their owner
//! Each slot starts with a 64-bit stamp `position:40 | phase:2 | pid:22`:
//! ```text
//! EMPTY(p)  ──producer CAS──▶ WRITING(p, pid) ──store──▶ FULL(p)
//!    ▲                                                      │ consumer CAS
//!    └──────────── store ◀─────────── READING(p, pid) ◀─────┘
//!   EMPTY(p + slots)
//! ```
//! Unlike Vyukov's ring, a producer claims a slot with a CAS on the slot's stamp (which
//! records its pid), not on `tail`; `tail` and `head` are hints that claimers and helpers
//! advance with a CAS afterwards. So a process SIGKILLed at any instruction leaves either
//! nothing claimed or a stamp naming it: a survivor that finds `WRITING(p, dead)` can skip
//! the slot ([`mpmc::recover_writer`], counted as abandoned) and one that finds
//! `READING(p, dead)` can free it ([`mpmc::recover_reader`], counted as lost). A message is
//! delivered only from `FULL`, which its producer stores after the whole copy, and only to
//! the one consumer whose CAS moved it to `READING`: never torn, never twice.

use crossbeam_utils::CachePadded;

use crate::futex::WaitCell;
use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};

/// Member records per queue: processes holding handles, for disconnection on death.
pub const MEMBERS: usize = if cfg!(loom) { 2 } else { 64 };

/// Ring flavour codes stored in the control block.
pub const FLAVOR_SPSC: u32 = 1;
/// See [`FLAVOR_SPSC`].
pub const FLAVOR_MPMC: u32 = 2;

/// Largest number of slots (the stamp's position field must tell laps apart).
pub const MAX_SLOTS: u64 = 1 << 30;

/// One process holding handles of a queue.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Member {
    /// Process id; 0 marks a free record.
    pub pid: AtomicU32,
    /// Sender handles this process holds.
    pub senders: AtomicU32,
    /// Receiver handles this process holds.
    pub receivers: AtomicU32,
    _reserved: AtomicU32,
    /// Start time of the process (clock ticks), 0 while being written.
    pub start: AtomicU64,
}

/// The shared control block of a ring (see the module docs for the layout).
#[repr(C)]
#[derive(Debug)]
pub struct RingCtl {
    /// [`FLAVOR_SPSC`] or [`FLAVOR_MPMC`].
    pub flavor: AtomicU32,
    /// Payload bytes per slot.
    pub elem_size: AtomicU32,
    /// Messages the ring holds at most.
    pub capacity: AtomicU64,
    /// Slots in the array, a power of two `>= capacity`.
    pub slots: AtomicU64,
    /// Non-zero once `close()` was called.
    pub closed: AtomicU32,
    /// Non-zero if some process could not get a member record: disconnection by death is
    /// then never reported (it could not be told apart from an untracked live sender).
    pub overflow: AtomicU32,
    /// Producers' position.
    pub tail: CachePadded<AtomicU64>,
    /// Consumers' position.
    pub head: CachePadded<AtomicU64>,
    /// Signalled after a message is published; consumers wait here.
    pub not_empty: WaitCell,
    /// Signalled after a slot is freed; producers wait here.
    pub not_full: WaitCell,
    /// Slots skipped because their producer died mid-write.
    pub abandoned: AtomicU64,
    /// Messages lost because their consumer died mid-read (MPMC), or taken by a consumer
    /// that died before acknowledging them.
    pub lost: AtomicU64,
    /// Messages put and not yet marked done (`JoinableQueue`).
    pub unfinished: CachePadded<AtomicU64>,
    /// Signalled when `unfinished` drops to zero.
    pub all_done: WaitCell,
    /// Processes holding handles.
    pub members: [Member; MEMBERS],
    /// Forks in flight: children that will hold sender handles but have not yet written
    /// their member record (counted by the parent before `fork`, uncounted by the child).
    pub forking_senders: AtomicU32,
    /// The same for receiver handles.
    pub forking_receivers: AtomicU32,
    /// Until when (`CLOCK_MONOTONIC`, ns) forks in flight count as sender holders: a fork
    /// that failed, or a child killed before it first ran, never uncounts itself.
    pub forking_senders_until: AtomicU64,
    /// The same for receiver holders.
    pub forking_receivers_until: AtomicU64,
    /// Bumped whenever a process drops its last handle of a role (before its flag is
    /// cleared): blocked peers re-check who is left at once instead of at their next timed
    /// check, and a check that saw it move while it scanned answers "alive" (its snapshot may
    /// mix states from before and after a fork).
    pub departures: AtomicU32,
}

impl Default for RingCtl {
    fn default() -> Self {
        RingCtl {
            flavor: AtomicU32::new(0),
            elem_size: AtomicU32::new(0),
            capacity: AtomicU64::new(0),
            slots: AtomicU64::new(0),
            closed: AtomicU32::new(0),
            overflow: AtomicU32::new(0),
            tail: CachePadded::new(AtomicU64::new(0)),
            head: CachePadded::new(AtomicU64::new(0)),
            not_empty: WaitCell::new(),
            not_full: WaitCell::new(),
            abandoned: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            unfinished: CachePadded::new(AtomicU64::new(0)),
            all_done: WaitCell::new(),
            members: std::array::from_fn(|_| Member::default()),
            forking_senders: AtomicU32::new(0),
            forking_receivers: AtomicU32::new(0),
            forking_senders_until: AtomicU64::new(0),
            forking_receivers_until: AtomicU64::new(0),
            departures: AtomicU32::new(0),
        }
    }
}

/// Why a ring's geometry is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// Capacity 0.
    ZeroCapacity,
    /// Capacity above [`MAX_SLOTS`], or a total size that does not fit `usize`.
    TooLarge,
    /// The control block disagrees with itself or with what the opener expects.
    Mismatch(&'static str),
}

/// A ring's shape, validated once and then kept in the process (never re-read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// [`FLAVOR_SPSC`] or [`FLAVOR_MPMC`].
    pub flavor: u32,
    /// Payload bytes per slot.
    pub elem_size: usize,
    /// Messages held at most.
    pub capacity: u64,
    /// Slots (a power of two).
    pub slots: u64,
}

impl Geometry {
    /// The geometry for `capacity` messages of `elem_size` bytes. An SPSC ring holds exactly
    /// `capacity`; an MPMC ring rounds it up to a power of two (its stamps need one).
    ///
    /// # Errors
    /// [`GeometryError::ZeroCapacity`] or [`GeometryError::TooLarge`].
    pub fn new(flavor: u32, elem_size: usize, capacity: usize) -> Result<Geometry, GeometryError> {
        if capacity == 0 {
            return Err(GeometryError::ZeroCapacity);
        }
        let slots = (capacity as u64).checked_next_power_of_two().ok_or(GeometryError::TooLarge)?;
        if slots > MAX_SLOTS || elem_size > u32::MAX as usize / 2 {
            return Err(GeometryError::TooLarge);
        }
        let capacity = if flavor == FLAVOR_MPMC { slots } else { capacity as u64 };
        let g = Geometry { flavor, elem_size, capacity, slots };
        g.slots_bytes().ok_or(GeometryError::TooLarge)?;
        Ok(g)
    }

    /// Bytes between consecutive slots: the payload, plus an 8-byte stamp for MPMC, rounded
    /// up to 8.
    pub fn stride(&self) -> usize {
        let stamp = if self.flavor == FLAVOR_MPMC { 8 } else { 0 };
        (stamp + self.elem_size).div_ceil(8) * 8
    }

    /// Bytes of the slot array, if representable.
    pub fn slots_bytes(&self) -> Option<usize> {
        (self.slots as usize).checked_mul(self.stride()).filter(|&b| b <= isize::MAX as usize / 2)
    }

    /// `position & mask` picks the slot.
    #[inline(always)]
    pub fn mask(&self) -> u64 {
        self.slots - 1
    }

    /// Writes this geometry into a fresh control block (before anyone else sees it).
    pub fn init(&self, ctl: &RingCtl) {
        ctl.flavor.store(self.flavor, Ordering::Relaxed);
        ctl.elem_size.store(self.elem_size as u32, Ordering::Relaxed);
        ctl.capacity.store(self.capacity, Ordering::Relaxed);
        ctl.slots.store(self.slots, Ordering::Relaxed);
    }

    /// Reads the geometry back from a control block written by another process and checks
    /// it against what the opener expects (`elem_size`, `flavor`) and against itself.
    ///
    /// # Errors
    /// [`GeometryError::Mismatch`].
    pub fn read(ctl: &RingCtl, flavor: u32, elem_size: usize) -> Result<Geometry, GeometryError> {
        // Relaxed: the segment's publication (Release/Acquire on its header) orders these.
        let f = ctl.flavor.load(Ordering::Relaxed);
        let e = ctl.elem_size.load(Ordering::Relaxed) as usize;
        let capacity = ctl.capacity.load(Ordering::Relaxed);
        let slots = ctl.slots.load(Ordering::Relaxed);
        if f != flavor {
            return Err(GeometryError::Mismatch("ring flavour"));
        }
        if e != elem_size {
            return Err(GeometryError::Mismatch("element size"));
        }
        let expect = Geometry::new(flavor, elem_size, capacity.min(MAX_SLOTS + 1) as usize)
            .map_err(|_| GeometryError::Mismatch("capacity"))?;
        if expect.slots != slots || expect.capacity != capacity {
            return Err(GeometryError::Mismatch("slot count"));
        }
        Ok(expect)
    }
}

/// Access to a ring's slots. Implemented over raw segment memory and, in the loom models,
/// over loom cells (which also check the payload accesses for data races).
pub trait SlotArray {
    /// The stamp of slot `idx` (MPMC only). `idx` is already masked.
    fn stamp(&self, idx: usize) -> &AtomicU64;

    /// Gives `f` the payload bytes of slot `idx` to fill.
    ///
    /// # Safety
    /// The caller owns the slot (SPSC: between the consumer's release and its own publish;
    /// MPMC: holds it in `WRITING`), and `f` writes at most the ring's `elem_size` bytes.
    unsafe fn write(&self, idx: usize, f: impl FnOnce(*mut u8));

    /// Gives `f` the payload bytes of slot `idx` to read.
    ///
    /// # Safety
    /// The caller owns the slot (published to it, or held in `READING`), and `f` reads at
    /// most the ring's `elem_size` bytes.
    unsafe fn read<R>(&self, idx: usize, f: impl FnOnce(*const u8) -> R) -> R;
}

/// The SPSC ring: see the module docs.
pub mod spsc {
    use super::*;

    /// A side's process-local positions: its own, and its cached copy of the other side's.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Cursor {
        /// This side's next position.
        pub own: u64,
        /// The other side's position, as last read.
        pub other: u64,
    }

    /// Why a push or pop did not happen.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Stop {
        /// Full (push) or empty (pop).
        Blocked,
        /// The other side's index is impossible: head after tail, or more than capacity apart.
        Corrupted,
    }

    /// The cursor a newly attached producer starts from.
    pub fn producer_cursor(ctl: &RingCtl) -> Cursor {
        // Acquire: a previous producer's slot writes happen before we continue after them.
        let own = ctl.tail.load(Ordering::Acquire);
        Cursor { own, other: ctl.head.load(Ordering::Acquire) }
    }

    /// The cursor a newly attached consumer starts from.
    pub fn consumer_cursor(ctl: &RingCtl) -> Cursor {
        // Acquire: as in `producer_cursor`.
        let own = ctl.head.load(Ordering::Acquire);
        Cursor { own, other: ctl.tail.load(Ordering::Acquire) }
    }

    /// Free slots for the producer, re-reading `head` only if the cache shows fewer than
    /// `want` (at most the capacity).
    #[inline(always)]
    fn room(ctl: &RingCtl, g: &Geometry, c: &mut Cursor, want: u64) -> Result<u64, Stop> {
        let used = c.own.wrapping_sub(c.other);
        if used <= g.capacity && g.capacity - used >= want {
            return Ok(g.capacity - used);
        }
        // SYNC(head): Acquire pairs with the consumer's Release store of `head`: its reads
        // of the slots it frees happen before we overwrite them.
        c.other = ctl.head.load(Ordering::Acquire);
        let used = c.own.wrapping_sub(c.other);
        if used > g.capacity {
            return Err(Stop::Corrupted);
        }
        match g.capacity - used {
            0 => Err(Stop::Blocked),
            n => Ok(n),
        }
    }

    /// Messages ready for the consumer, re-reading `tail` only if the cache shows fewer
    /// than `want`.
    #[inline(always)]
    fn ready(ctl: &RingCtl, g: &Geometry, c: &mut Cursor, want: u64) -> Result<u64, Stop> {
        let n = c.other.wrapping_sub(c.own);
        if n >= want.max(1) && n <= g.capacity {
            return Ok(n);
        }
        // SYNC(tail): Acquire pairs with the producer's Release store of `tail`: its slot
        // writes happen before our reads.
        c.other = ctl.tail.load(Ordering::Acquire);
        let n = c.other.wrapping_sub(c.own);
        if n > g.capacity {
            return Err(Stop::Corrupted);
        }
        if n == 0 {
            Err(Stop::Blocked)
        } else {
            Ok(n)
        }
    }

    /// Writes up to `n` messages (`write(i, slot)` fills the i-th), publishes them with one
    /// store and returns how many. Does not notify: the caller does, after.
    ///
    /// # Errors
    /// [`Stop::Blocked`] if the ring is full, [`Stop::Corrupted`] if `head` is impossible.
    ///
    /// # Safety
    /// The caller is the only producer, `c` is its cursor, and `write` writes at most
    /// `elem_size` bytes.
    #[inline(always)]
    pub unsafe fn push<S: SlotArray>(
        ctl: &RingCtl,
        slots: &S,
        g: &Geometry,
        c: &mut Cursor,
        n: usize,
        mut write: impl FnMut(usize, *mut u8),
    ) -> Result<usize, Stop> {
        let room = room(ctl, g, c, (n as u64).clamp(1, g.capacity))?;
        let n = (n as u64).min(room);
        for i in 0..n {
            let idx = (c.own.wrapping_add(i) & g.mask()) as usize;
            // SAFETY: the slot is free (fewer than `capacity` messages are outstanding)
            // and only this producer writes slots; the caller bounds the write.
            unsafe { slots.write(idx, |p| write(i as usize, p)) };
        }
        c.own = c.own.wrapping_add(n);
        // SYNC(tail): Release publishes the slot writes above; pairs with `ready`.
        ctl.tail.store(c.own, Ordering::Release);
        Ok(n as usize)
    }

    /// Reads up to `n` messages (`read(i, slot)` reads the i-th), frees their slots with
    /// one store and returns how many.
    ///
    /// # Errors
    /// [`Stop::Blocked`] if the ring is empty, [`Stop::Corrupted`] if `tail` is impossible.
    ///
    /// # Safety
    /// The caller is the only consumer, `c` is its cursor, and `read` reads at most
    /// `elem_size` bytes.
    #[inline(always)]
    pub unsafe fn pop<S: SlotArray>(
        ctl: &RingCtl,
        slots: &S,
        g: &Geometry,
        c: &mut Cursor,
        n: usize,
        mut read: impl FnMut(usize, *const u8),
    ) -> Result<usize, Stop> {
        let ready = ready(ctl, g, c, n as u64)?;
        let n = (n as u64).min(ready);
        for i in 0..n {
            let idx = (c.own.wrapping_add(i) & g.mask()) as usize;
            // SAFETY: the slot was published to us by `tail` and only this consumer reads
            // it until `head` moves past it.
            unsafe { slots.read(idx, |p| read(i as usize, p)) };
        }
        c.own = c.own.wrapping_add(n);
        // SYNC(head): Release orders our slot reads before the producer reuses the slots.
        ctl.head.store(c.own, Ordering::Release);
        Ok(n as usize)
    }

    /// Messages in the ring (approximate while the other side runs; 0 if corrupted).
    pub fn len(ctl: &RingCtl, g: &Geometry) -> u64 {
        // Relaxed: a snapshot for display.
        let head = ctl.head.load(Ordering::Relaxed);
        let tail = ctl.tail.load(Ordering::Relaxed);
        let n = tail.wrapping_sub(head);
        if n > g.capacity {
            0
        } else {
            n
        }
    }
}

/// The MPMC ring: see the module docs.
pub mod mpmc {
    use super::*;

    const PID_BITS: u32 = 22;
    const PHASE_SHIFT: u32 = PID_BITS;
    const POS_SHIFT: u32 = PID_BITS + 2;
    const PID_MASK: u64 = (1 << PID_BITS) - 1;
    const POS_MASK: u64 = (1 << (64 - POS_SHIFT)) - 1;

    /// Phase: the slot waits for the producer of its position.
    pub const EMPTY: u64 = 0;
    /// Phase: a producer (named by pid) is copying a message in.
    pub const WRITING: u64 = 1;
    /// Phase: a message waits for a consumer.
    pub const FULL: u64 = 2;
    /// Phase: a consumer (named by pid) is copying the message out.
    pub const READING: u64 = 3;

    /// A stamp decoded: `pos` holds the low 40 bits of the position.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Stamp {
        /// Low 40 bits of the position the stamp refers to.
        pub pos: u64,
        /// [`EMPTY`], [`WRITING`], [`FULL`] or [`READING`].
        pub phase: u64,
        /// The process in `WRITING`/`READING`.
        pub pid: u32,
    }

    /// Encodes a stamp. Pids are below 2^22 on Linux (`PID_MAX_LIMIT`).
    #[inline(always)]
    pub fn encode(pos: u64, phase: u64, pid: u32) -> u64 {
        (pos << POS_SHIFT) | (phase << PHASE_SHIFT) | (pid as u64 & PID_MASK)
    }

    /// Decodes a stamp.
    #[inline(always)]
    pub fn decode(s: u64) -> Stamp {
        Stamp { pos: s >> POS_SHIFT, phase: (s >> PHASE_SHIFT) & 3, pid: (s & PID_MASK) as u32 }
    }

    /// `stamp_pos - pos` as a signed distance, modulo 2^40.
    #[inline(always)]
    fn distance(stamp_pos: u64, pos: u64) -> i64 {
        ((stamp_pos.wrapping_sub(pos) << POS_SHIFT) as i64) >> POS_SHIFT
    }

    /// Sets every slot's stamp to `EMPTY(index)` (a fresh ring).
    pub fn init<S: SlotArray>(slots: &S, g: &Geometry) {
        for i in 0..g.slots {
            slots.stamp(i as usize).store(encode(i, EMPTY, 0), Ordering::Relaxed);
        }
    }

    /// Why a push did not happen.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum PushStop {
        /// Every slot holds a message (or is being read).
        Full,
        /// Full, and the slot we need is held in `READING` by `pid` (see
        /// [`recover_reader`]).
        Reader {
            /// The slot index.
            idx: usize,
            /// The raw stamp seen.
            stamp: u64,
            /// The reading process.
            pid: u32,
        },
        /// A stamp contradicts `tail`.
        Corrupted,
    }

    /// Why a pop did not happen.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum PopStop {
        /// No message is published at the head.
        Empty,
        /// The head slot is held in `WRITING` by `pid` (mid-copy, or dead: see
        /// [`recover_writer`]).
        Writer {
            /// The position.
            pos: u64,
            /// The raw stamp seen.
            stamp: u64,
            /// The writing process.
            pid: u32,
        },
        /// A stamp contradicts `head`.
        Corrupted,
    }

    /// Claims a slot, lets `write` fill it and publishes it.
    ///
    /// # Errors
    /// See [`PushStop`].
    ///
    /// # Safety
    /// `write` writes at most `elem_size` bytes.
    #[inline(always)]
    pub unsafe fn push<S: SlotArray>(
        ctl: &RingCtl,
        slots: &S,
        g: &Geometry,
        me: u32,
        blind: bool,
        write: impl FnOnce(*mut u8),
    ) -> Result<(), PushStop> {
        // Acquire: claims of earlier positions (whose helpers moved `tail`) are visible,
        // so their stamps do not look stale.
        let mut pos = ctl.tail.load(Ordering::Acquire);
        let mut blind = blind;
        loop {
            let idx = (pos & g.mask()) as usize;
            let cell = slots.stamp(idx);
            let empty = encode(pos, EMPTY, 0);
            // A blind CAS (expecting the slot free) fetches the line for writing at once,
            // saving the shared-then-exclusive transfer of a load first; pollers load
            // first instead, so that waiting does not steal the line from the other side.
            // Acquire (both): pairs with the Release that freed the slot, so the previous
            // reader's copy-out happens before our copy-in.
            let s = if blind { empty } else { cell.load(Ordering::Acquire) };
            blind = false;
            let seen = if s == empty {
                match cell.compare_exchange(
                    empty,
                    encode(pos, WRITING, me),
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        // AcqRel: a helper chain carries "stamp claimed" to later producers.
                        let _ = ctl.tail.compare_exchange(
                            pos,
                            pos.wrapping_add(1),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        // SAFETY: we hold the slot in WRITING; the caller bounds the write.
                        unsafe { slots.write(idx, write) };
                        // SYNC(stamp): Release publishes the payload; pairs with the
                        // consumer's Acquire CAS from FULL.
                        cell.store(encode(pos, FULL, 0), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => now,
                }
            } else {
                s
            };
            let st = decode(seen);
            let d = distance(st.pos, pos);
            if d == 0 && st.phase == EMPTY {
                // Not the exact EMPTY stamp (the CAS above fails only on a different value):
                // an EMPTY phase naming a process is never written.
                return Err(PushStop::Corrupted);
            } else if d == 0 {
                // Someone claimed `pos` and may have died before moving `tail`: help.
                let _ =
                    ctl.tail.compare_exchange(pos, pos.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
                pos = ctl.tail.load(Ordering::Acquire);
            } else if d < 0 {
                // The slot still serves the previous lap.
                let now = ctl.tail.load(Ordering::Acquire);
                if now != pos {
                    pos = now;
                    continue;
                }
                return Err(match st.phase {
                    EMPTY => PushStop::Corrupted,
                    READING if d == -(g.slots as i64) => PushStop::Reader { idx, stamp: seen, pid: st.pid },
                    _ if d == -(g.slots as i64) => PushStop::Full,
                    _ => PushStop::Corrupted,
                });
            } else {
                // Our `pos` is stale: the slot already serves a later lap.
                let now = ctl.tail.load(Ordering::Acquire);
                if now == pos {
                    return Err(PushStop::Corrupted);
                }
                pos = now;
            }
        }
    }

    /// Takes the message at the head, lets `read` copy it out and frees the slot.
    ///
    /// # Errors
    /// See [`PopStop`].
    ///
    /// # Safety
    /// `read` reads at most `elem_size` bytes.
    #[inline(always)]
    pub unsafe fn pop<S: SlotArray, R>(
        ctl: &RingCtl,
        slots: &S,
        g: &Geometry,
        me: u32,
        blind: bool,
        read: impl FnOnce(*const u8) -> R,
    ) -> Result<R, PopStop> {
        // Acquire: as in `push`, for `head`.
        let mut pos = ctl.head.load(Ordering::Acquire);
        let mut blind = blind;
        loop {
            let idx = (pos & g.mask()) as usize;
            let cell = slots.stamp(idx);
            let full = encode(pos, FULL, 0);
            // Blind CAS first, as in `push`. SYNC(stamp): Acquire (both) pairs with the
            // producer's Release store of FULL: the payload is complete.
            let s = if blind { full } else { cell.load(Ordering::Acquire) };
            blind = false;
            let seen = if s == full {
                match cell.compare_exchange(
                    full,
                    encode(pos, READING, me),
                    Ordering::Acquire,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        let _ = ctl.head.compare_exchange(
                            pos,
                            pos.wrapping_add(1),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        // SAFETY: we hold the slot in READING; the caller bounds the read.
                        let r = unsafe { slots.read(idx, read) };
                        // Release: our copy-out happens before a producer's copy-in.
                        cell.store(encode(pos.wrapping_add(g.slots), EMPTY, 0), Ordering::Release);
                        return Ok(r);
                    }
                    Err(now) => now,
                }
            } else {
                s
            };
            let st = decode(seen);
            let d = distance(st.pos, pos);
            if d == 0 {
                match st.phase {
                    // Not the exact FULL stamp: a FULL phase naming a process is never written.
                    FULL => return Err(PopStop::Corrupted),
                    EMPTY => {
                        let now = ctl.head.load(Ordering::Acquire);
                        if now != pos {
                            pos = now;
                            continue;
                        }
                        return Err(PopStop::Empty);
                    }
                    WRITING => return Err(PopStop::Writer { pos, stamp: seen, pid: st.pid }),
                    _ => {
                        // READING: another consumer took it; help `head` past it.
                        let _ = ctl.head.compare_exchange(
                            pos,
                            pos.wrapping_add(1),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        );
                        pos = ctl.head.load(Ordering::Acquire);
                    }
                }
            } else if d < 0 {
                let now = ctl.head.load(Ordering::Acquire);
                if now != pos {
                    pos = now;
                    continue;
                }
                // The previous lap's reader is still copying out (or died doing it): our
                // message is not written yet. FULL, WRITING or EMPTY of an older lap cannot be.
                return Err(match st.phase {
                    READING if d == -(g.slots as i64) => PopStop::Empty,
                    _ => PopStop::Corrupted,
                });
            } else {
                let now = ctl.head.load(Ordering::Acquire);
                if now == pos {
                    return Err(PopStop::Corrupted);
                }
                pos = now;
            }
        }
    }

    /// Whether the message at `head` is published (a consumer that just took one passes the
    /// wake-up on when it is: see `core::recv`).
    pub fn head_ready<S: SlotArray>(ctl: &RingCtl, slots: &S, g: &Geometry) -> bool {
        // Acquire: as in `pop`.
        let pos = ctl.head.load(Ordering::Acquire);
        slots.stamp((pos & g.mask()) as usize).load(Ordering::Acquire) == encode(pos, FULL, 0)
    }

    /// Whether the slot at `tail` is free (the producer-side mirror of [`head_ready`]).
    pub fn tail_free<S: SlotArray>(ctl: &RingCtl, slots: &S, g: &Geometry) -> bool {
        // Acquire: as in `push`.
        let pos = ctl.tail.load(Ordering::Acquire);
        slots.stamp((pos & g.mask()) as usize).load(Ordering::Acquire) == encode(pos, EMPTY, 0)
    }

    /// Skips the slot at `pos` whose producer (seen as `stamp`, `WRITING`) is dead: moves it
    /// to `READING` by `me`, then frees it for the next lap, and counts it in `abandoned`.
    /// Returns false if the stamp changed meanwhile (the producer finished after all, or
    /// another survivor recovered it).
    pub fn recover_writer<S: SlotArray>(
        ctl: &RingCtl,
        slots: &S,
        g: &Geometry,
        pos: u64,
        stamp: u64,
        me: u32,
    ) -> bool {
        let cell = slots.stamp((pos & g.mask()) as usize);
        // Acquire/Relaxed: nothing is read from the slot; the CAS only has to be atomic.
        if cell
            .compare_exchange(stamp, encode(pos, READING, me), Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // The dead producer may not have moved `tail` past its claim, and nobody may have
        // helped yet: do both hints now, before the slot's stamp moves a lap ahead (a stamp
        // ahead of an unmoved hint reads as corruption).
        let _ = ctl.tail.compare_exchange(pos, pos.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
        let _ = ctl.head.compare_exchange(pos, pos.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
        // Release: as a normal pop's free.
        cell.store(encode(pos.wrapping_add(g.slots), EMPTY, 0), Ordering::Release);
        ctl.abandoned.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Frees slot `idx` held in `READING` (seen as `stamp`) by a dead consumer, and counts
    /// its message in `lost`. Returns false if the stamp changed meanwhile.
    pub fn recover_reader<S: SlotArray>(
        ctl: &RingCtl,
        slots: &S,
        g: &Geometry,
        idx: usize,
        stamp: u64,
        me: u32,
    ) -> bool {
        let st = decode(stamp);
        let cell = slots.stamp(idx & g.mask() as usize);
        // Take the slot over first (as `recover_writer` does), so nothing moves unless the
        // stamp really was this READING. Acquire/Relaxed: nothing is read from the slot.
        let mine = encode(st.pos, READING, me);
        if st.phase != READING
            || cell.compare_exchange(stamp, mine, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            return false;
        }
        // The dead consumer may not have moved `head` past its claim: do it (see
        // `recover_writer`). `head` holds full positions; the stamp only their low 40 bits.
        // Acquire: as in `pop`.
        let head = ctl.head.load(Ordering::Acquire);
        if head & POS_MASK == st.pos {
            let _ =
                ctl.head.compare_exchange(head, head.wrapping_add(1), Ordering::AcqRel, Ordering::Relaxed);
        }
        // Release: the slot may be rewritten from here on.
        cell.store(encode(st.pos.wrapping_add(g.slots), EMPTY, 0), Ordering::Release);
        ctl.lost.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Messages in the ring (approximate while others run).
    pub fn len(ctl: &RingCtl, g: &Geometry) -> u64 {
        // Relaxed: a snapshot for display.
        let head = ctl.head.load(Ordering::Relaxed);
        let tail = ctl.tail.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(g.capacity).min(if tail < head { 0 } else { u64::MAX })
    }
}
