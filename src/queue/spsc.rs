//! `SpscSender<T>` / `SpscReceiver<T>`: the single-producer single-consumer ring, the
//! fastest path between two processes.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use super::core::Wait;
use super::error::{QueueCreateError, QueueOpenError, RecvError, SendError};
use super::raw::spsc::{self, Cursor, Stop};
use super::raw::{Geometry, Member, FLAVOR_SPSC};
use super::ring::{block, Patience, Ring};
use super::{kind_for, KIND_SPSC};
use crate::primitive::atomic::Ordering;
use crate::shm::Segment;
use crate::util::proc::{Liveness, ProcessToken};

/// Polls of an empty ring on `recv`'s inline path before the blocking path.
const FAST_POLLS: u32 = 32;

/// Owner value of an end whose holder dropped it after use.
const DROPPED: u32 = u32::MAX;

/// Which member record holds each end's owner.
const SENDER_END: usize = 0;
const RECEIVER_END: usize = 1;

/// State of an end as seen by the other end.
#[derive(PartialEq, Eq)]
enum EndState {
    /// Held by a live process, or not claimed yet.
    Open,
    /// Dropped after use, or its holder died.
    Gone,
}

fn end_state(m: &Member) -> EndState {
    // Acquire: pairs with the Release stores of `claim`/`release`.
    match m.pid.load(Ordering::Acquire) {
        0 => EndState::Open,
        DROPPED => EndState::Gone,
        pid => {
            let start = m.start.load(Ordering::Acquire);
            match (ProcessToken { pid, start }).liveness() {
                Liveness::Dead => EndState::Gone,
                _ => EndState::Open,
            }
        }
    }
}

/// Who holds the end recorded in `m`, for [`crate::inspect`] (Relaxed loads: a snapshot,
/// maybe of read-only memory; nothing is claimed).
pub(crate) fn end_view(m: &Member) -> crate::inspect::SpscEnd {
    use crate::inspect::{Holder, SpscEnd};
    // Relaxed: a snapshot for display.
    match m.pid.load(Ordering::Relaxed) {
        0 => SpscEnd::Unclaimed,
        DROPPED => SpscEnd::Dropped,
        pid => SpscEnd::Held(Holder::check(pid, m.start.load(Ordering::Relaxed))),
    }
}

/// One end of the SPSC ring: the ring, this end's cursor, and which process claimed it.
struct End<T> {
    ring: Arc<Ring>,
    which: usize,
    /// Pid of the process whose claim `cursor` belongs to (0: not claimed here).
    owner: Cell<u32>,
    cursor: Cell<Cursor>,
    /// `fork_epoch` when this handle was made: if it is unchanged at drop, no child can
    /// hold a copy, so an end never used may be marked dropped too.
    epoch: u64,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> End<T> {
    fn new(ring: Arc<Ring>, which: usize) -> Self {
        let epoch = crate::util::proc::fork_epoch();
        End { ring, which, owner: Cell::new(0), cursor: Cell::new(Cursor::default()), epoch, _t: PhantomData }
    }

    fn record(&self) -> &Member {
        &self.ring.ctl().members[self.which]
    }

    fn other(&self) -> &Member {
        &self.ring.ctl().members[1 - self.which]
    }

    /// Makes sure this process owns the end: one load and compare when it already does.
    #[inline(always)]
    fn own(&self) -> bool {
        let me = ProcessToken::current();
        self.owner.get() == me.pid || self.claim(me)
    }

    #[cold]
    fn claim(&self, me: ProcessToken) -> bool {
        let m = self.record();
        // Acquire: the previous owner's ring writes (and its final cursor) are visible.
        let cur = m.pid.load(Ordering::Acquire);
        let free = cur == 0
            || cur == DROPPED
            || (cur != me.pid
                && (ProcessToken { pid: cur, start: m.start.load(Ordering::Acquire) }).liveness()
                    == Liveness::Dead);
        let mine_stale = cur == me.pid && m.start.load(Ordering::Acquire) != me.start;
        // AcqRel: as the load above, and publishes our claim.
        if !(free || mine_stale)
            || m.pid.compare_exchange(cur, me.pid, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return cur == me.pid && self.owner.get() == me.pid;
        }
        m.start.store(me.start, Ordering::Release);
        let ctl = self.ring.ctl();
        let cursor =
            if self.which == SENDER_END { spsc::producer_cursor(ctl) } else { spsc::consumer_cursor(ctl) };
        self.cursor.set(cursor);
        self.owner.set(me.pid);
        true
    }
}

impl<T> Drop for End<T> {
    fn drop(&mut self) {
        let m = self.record();
        let held = self.owner.get() != 0 && self.owner.get() == ProcessToken::current().pid;
        // An end nobody ever used, dropped where it was made with no fork since: no other
        // copy exists (unless another process opened it by name, which may still claim it).
        let unused = !held && self.epoch == crate::util::proc::fork_epoch();
        let from = if held { self.owner.get() } else { 0 };
        // AcqRel/Relaxed: only release the end if it is still ours (or still unclaimed).
        if (held || unused)
            && m.pid.compare_exchange(from, DROPPED, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            let ctl = self.ring.ctl();
            ctl.not_empty.notify_all();
            ctl.not_full.notify_all();
        }
    }
}

fn geometry<T>(capacity: usize) -> Result<Geometry, QueueCreateError> {
    const { assert!(std::mem::align_of::<T>() <= 64, "queue elements must be at most 64-aligned") };
    Ok(Geometry::new(FLAVOR_SPSC, std::mem::size_of::<T>(), capacity)?)
}

/// A single-producer single-consumer queue of `T: Pod`: [`spsc_channel`] and friends give
/// its two ends.
///
/// Each end is claimed by the first process that uses it and released when that process
/// drops it; another live process using the same end gets `InUse` (a forked child may take
/// an end its parent never used, or one its parent dropped). Dropping the sending end, or
/// its process dying, lets the receiver drain and then get `Disconnected`, and vice versa.
///
/// # Examples
/// ```
/// let (tx, rx) = shmkit::queue::spsc_channel::<u64>(1024)?;
/// tx.send(1).unwrap();
/// assert_eq!(tx.try_send_slice(&[2, 3, 4]), Ok(3));
/// let mut buf = [0u64; 8];
/// assert_eq!(rx.recv_into(&mut buf), Ok(4));
/// assert_eq!(&buf[..4], &[1, 2, 3, 4]);
/// # Ok::<(), shmkit::queue::QueueCreateError>(())
/// ```
pub fn spsc_channel<T: Pod>(capacity: usize) -> Result<(SpscSender<T>, SpscReceiver<T>), QueueCreateError> {
    let ring = Arc::new(Ring::create(kind_for::<T>(KIND_SPSC), geometry::<T>(capacity)?, None)?);
    Ok(ends(ring))
}

pub(crate) fn ends<T>(ring: Arc<Ring>) -> (SpscSender<T>, SpscReceiver<T>) {
    (
        SpscSender { end: End::new(ring.clone(), SENDER_END) },
        SpscReceiver { end: End::new(ring, RECEIVER_END) },
    )
}

/// The producing end of an SPSC queue. Not `Clone` (there is one producer) and not `Sync`.
pub struct SpscSender<T> {
    end: End<T>,
}

/// The consuming end of an SPSC queue. Not `Clone` (there is one consumer) and not `Sync`.
pub struct SpscReceiver<T> {
    end: End<T>,
}

// SAFETY: the Cells are this handle's private cursor; moving the handle to another thread
// moves them with it (the claim is per process, not per thread).
unsafe impl<T: Send> Send for SpscSender<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SpscReceiver<T> {}

/// A named SPSC queue: create it once, then open either end by name from any process.
#[derive(Debug)]
pub struct SpscQueue<T> {
    ring: Arc<Ring>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> SpscQueue<T> {
    /// A queue of exactly `capacity` messages in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Queue::create`](super::Queue::create).
    pub fn create(name: &str, capacity: usize) -> Result<Self, QueueCreateError> {
        let ring = Ring::create(kind_for::<T>(KIND_SPSC), geometry::<T>(capacity)?, Some(name))?;
        Ok(SpscQueue { ring: Arc::new(ring), _t: PhantomData })
    }

    /// Opens the queue made by [`SpscQueue::create`].
    ///
    /// # Errors
    /// [`QueueOpenError`].
    pub fn open(name: &str) -> Result<Self, QueueOpenError> {
        let ring = Ring::open(name, kind_for::<T>(KIND_SPSC), FLAVOR_SPSC, std::mem::size_of::<T>(), None)?;
        Ok(SpscQueue { ring: Arc::new(ring), _t: PhantomData })
    }

    /// Both ends (each claimed on first use).
    pub fn split(self) -> (SpscSender<T>, SpscReceiver<T>) {
        ends(self.ring)
    }

    /// The sending end.
    pub fn sender(self) -> SpscSender<T> {
        self.split().0
    }

    /// The receiving end.
    pub fn receiver(self) -> SpscReceiver<T> {
        self.split().1
    }
}

impl<T: Pod> SpscSender<T> {
    /// Writes as many of `items` as fit now, publishes them with one store and wakes the
    /// receiver once. Returns how many were sent (0: full).
    ///
    /// # Errors
    /// `InUse`, `Disconnected` (closed) or `Corrupted`, holding `()`.
    #[inline]
    pub fn try_send_slice(&self, items: &[T]) -> Result<usize, SendError<()>> {
        if !self.end.own() {
            return Err(SendError::InUse(()));
        }
        match self.push(items) {
            Ok(n) => Ok(n),
            Err(Stop::Blocked) => Ok(0),
            Err(Stop::Corrupted) => Err(SendError::Corrupted(())),
        }
        .and_then(|n| {
            if n == 0 && self.end.ring.is_closed() {
                Err(SendError::Disconnected(()))
            } else {
                Ok(n)
            }
        })
    }

    /// Pushes what fits. The caller made sure this process owns the end.
    #[inline(always)]
    fn push(&self, items: &[T]) -> Result<usize, Stop> {
        let ring = &self.end.ring;
        let ctl = ring.ctl();
        let mut c = self.end.cursor.get();
        // SAFETY: we own the producer end (claimed above) and write one T per slot, whose
        // payload is `size_of::<T>()` bytes.
        let r = unsafe {
            spsc::push(ctl, &ring.slots, &ring.geo, &mut c, items.len(), |i, p| {
                p.cast::<T>().write_unaligned(items[i]);
            })
        };
        self.end.cursor.set(c);
        if r.is_ok() {
            ctl.not_empty.notify_one();
        }
        r
    }

    /// The fast path: this process owns the end, the queue is open and there is room.
    #[inline(always)]
    fn send_fast(&self, v: T) -> Result<(), T> {
        if self.end.owner.get() != ProcessToken::current().pid || self.end.ring.is_closed() {
            return Err(v);
        }
        match self.push(std::slice::from_ref(&v)) {
            Ok(_) => Ok(()),
            Err(_) => Err(v),
        }
    }

    #[inline(always)]
    fn send_with(&self, v: T, wait: Wait) -> Result<(), SendError<T>> {
        match self.send_fast(v) {
            Ok(()) => Ok(()),
            Err(v) => self.send_slow(v, wait),
        }
    }

    #[cold]
    #[inline(never)]
    fn send_slow(&self, v: T, wait: Wait) -> Result<(), SendError<T>> {
        if !self.end.own() {
            return Err(SendError::InUse(v));
        }
        let ring = &self.end.ring;
        if ring.is_closed() {
            return Err(SendError::Disconnected(v));
        }
        match self.push(std::slice::from_ref(&v)) {
            Ok(_) => return Ok(()),
            Err(Stop::Corrupted) => return Err(SendError::Corrupted(v)),
            Err(Stop::Blocked) => {}
        }
        let Wait::Until(deadline) = wait else { return Err(SendError::Full(v)) };
        let patience = Patience::new();
        let r = block(&ring.ctl().not_full, deadline, &patience, || {
            if ring.is_closed() {
                return Some(Err(SendError::Disconnected(v)));
            }
            match self.push(std::slice::from_ref(&v)) {
                Ok(_) => Some(Ok(())),
                Err(Stop::Corrupted) => Some(Err(SendError::Corrupted(v))),
                Err(Stop::Blocked) => {
                    if patience.peer_check_due(0) && end_state(self.end.other()) == EndState::Gone {
                        return Some(Err(SendError::Disconnected(v)));
                    }
                    None
                }
            }
        });
        r.unwrap_or(Err(SendError::Timeout(v)))
    }

    /// Sends `v`, blocking while the queue is full.
    ///
    /// # Errors
    /// `Disconnected` (closed, or the receiver dropped its end or died), `InUse`, `Corrupted`.
    #[inline]
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.send_with(v, Wait::Until(None))
    }

    /// Sends `v` if there is room now.
    ///
    /// # Errors
    /// `Full`, `Disconnected`, `InUse`, `Corrupted`.
    #[inline]
    pub fn try_send(&self, v: T) -> Result<(), SendError<T>> {
        self.send_with(v, Wait::No)
    }

    /// Sends `v`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// `Timeout`, `Disconnected`, `InUse`, `Corrupted`.
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_with(v, Wait::timeout(timeout))
    }

    /// Closes the queue: see [`Queue::close`](super::Queue::close).
    pub fn close(&self) {
        self.end.ring.close();
    }

    /// Messages queued now (approximate while the receiver runs).
    pub fn len(&self) -> usize {
        self.end.ring.len()
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.end.ring.geo.capacity as usize
    }

    /// The segment holding the queue.
    pub fn segment(&self) -> &Arc<Segment> {
        self.end.ring.segment()
    }
}

impl<T: Pod> SpscReceiver<T> {
    /// Pops what is ready. The caller made sure this process owns the end.
    #[inline(always)]
    fn pop(&self, out: &mut [T]) -> Result<usize, Stop> {
        let ring = &self.end.ring;
        let ctl = ring.ctl();
        let mut c = self.end.cursor.get();
        // SAFETY: we own the consumer end and read one T per slot (any bytes are a T).
        let r = unsafe {
            spsc::pop(ctl, &ring.slots, &ring.geo, &mut c, out.len(), |i, p| {
                out[i] = p.cast::<T>().read_unaligned();
            })
        };
        self.end.cursor.set(c);
        if r.is_ok() {
            ctl.not_full.notify_one();
        }
        r
    }

    /// Moves as many messages as are ready (up to `out.len()`) into `out` with one store,
    /// returning how many (0: empty).
    ///
    /// # Errors
    /// `InUse`, `Disconnected` (closed or sender gone, and drained), `Corrupted`.
    #[inline]
    pub fn try_recv_into(&self, out: &mut [T]) -> Result<usize, RecvError> {
        self.recv_into_with(out, Wait::No)
    }

    /// Like [`try_recv_into`](Self::try_recv_into), but blocks until at least one message
    /// is ready.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&self, out: &mut [T]) -> Result<usize, RecvError> {
        self.recv_into_with(out, Wait::Until(None))
    }

    fn recv_into_with(&self, out: &mut [T], wait: Wait) -> Result<usize, RecvError> {
        if out.is_empty() {
            return Ok(0);
        }
        if !self.end.own() {
            return Err(RecvError::InUse);
        }
        let ring = &self.end.ring;
        match self.pop(out) {
            Ok(n) => return Ok(n),
            Err(Stop::Corrupted) => return Err(RecvError::Corrupted("spsc tail")),
            Err(Stop::Blocked) => {}
        }
        let gone = |end: &End<T>| ring.is_closed() || end_state(end.other()) == EndState::Gone;
        let Wait::Until(deadline) = wait else {
            return Err(if ring.is_closed() { RecvError::Disconnected } else { RecvError::Empty });
        };
        let patience = Patience::new();
        let r = block(&ring.ctl().not_empty, deadline, &patience, || match self.pop(out) {
            Ok(n) => Some(Ok(n)),
            Err(Stop::Corrupted) => Some(Err(RecvError::Corrupted("spsc tail"))),
            Err(Stop::Blocked) => {
                if ring.is_closed() || (patience.peer_check_due(0) && gone(&self.end)) {
                    return Some(match self.pop(out) {
                        Ok(n) => Ok(n),
                        Err(_) => Err(RecvError::Disconnected),
                    });
                }
                None
            }
        });
        r.unwrap_or(Err(RecvError::Timeout))
    }

    #[inline(always)]
    fn recv_with(&self, wait: Wait) -> Result<T, RecvError> {
        let mut v = [T::zeroed()];
        if self.end.owner.get() == ProcessToken::current().pid {
            // A producer that is running refills an empty ring within tens of nanoseconds:
            // poll `tail` a few times here, pausing between reads as a hand-written ring
            // does, before the blocking path's bookkeeping (which itself spins, then parks).
            for _ in 0..FAST_POLLS {
                if self.pop(&mut v).is_ok() {
                    return Ok(v[0]);
                }
                if matches!(wait, Wait::No) {
                    break;
                }
                crate::primitive::hint::spin_loop();
            }
        }
        self.recv_slow(wait)
    }

    #[cold]
    #[inline(never)]
    fn recv_slow(&self, wait: Wait) -> Result<T, RecvError> {
        let mut v = [T::zeroed()];
        self.recv_into_with(&mut v, wait).map(|_| v[0])
    }

    /// Receives a message, blocking while the queue is empty.
    ///
    /// # Errors
    /// `Disconnected` once the queue is closed or the sender dropped its end or died, and
    /// the queue is drained; `InUse`; `Corrupted`.
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::Until(None))
    }

    /// Receives a message if one is ready now.
    ///
    /// # Errors
    /// `Empty`, `Disconnected`, `InUse`, `Corrupted`.
    #[inline]
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::No)
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `Disconnected`, `InUse`, `Corrupted`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_with(Wait::timeout(timeout))
    }

    /// A blocking iterator that ends when the queue is disconnected.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// Closes the queue: see [`Queue::close`](super::Queue::close).
    pub fn close(&self) {
        self.end.ring.close();
    }

    /// Messages queued now (approximate while the sender runs).
    pub fn len(&self) -> usize {
        self.end.ring.len()
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.end.ring.geo.capacity as usize
    }
}

impl<T> fmt::Debug for SpscSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscSender").field("len", &self.end.ring.len()).finish()
    }
}

impl<T> fmt::Debug for SpscReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpscReceiver").field("len", &self.end.ring.len()).finish()
    }
}
