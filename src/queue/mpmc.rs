//! `Queue<T>`, its `Sender`/`Receiver` halves, `SimpleQueue<T>` and `JoinableQueue<T>`:
//! bounded MPMC queues of plain-old-data values.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use super::core::{self, RecvFail, SendFail, Wait};
use super::error::{QueueCreateError, QueueOpenError, RecvError, SendError, TaskDoneError};
use super::raw::{Geometry, FLAVOR_MPMC};
use super::ring::{Ring, Role};
use super::{kind_for, Stats, KIND_JOINABLE, KIND_QUEUE};
use crate::futex::TimedOut;
use crate::shm::Segment;

fn send_error<T>(f: SendFail, v: T) -> SendError<T> {
    match f {
        SendFail::Full => SendError::Full(v),
        SendFail::Timeout => SendError::Timeout(v),
        SendFail::Disconnected => SendError::Disconnected(v),
        SendFail::Corrupted => SendError::Corrupted(v),
    }
}

/// Shared plumbing of the typed handles: the ring and the role this handle counts as.
struct Handle<T> {
    ring: Arc<Ring>,
    role: Role,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Handle<T> {
    fn new(ring: Arc<Ring>, role: Role) -> Self {
        ring.add_handle(role);
        Handle { ring, role, _t: PhantomData }
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle::new(self.ring.clone(), self.role)
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        self.ring.drop_handle(self.role);
    }
}

fn geometry<T>(capacity: usize) -> Result<Geometry, QueueCreateError> {
    const { assert!(std::mem::align_of::<T>() <= 64, "queue elements must be at most 64-aligned") };
    Ok(Geometry::new(FLAVOR_MPMC, std::mem::size_of::<T>(), capacity)?)
}

/// The sending half of a [`Queue`]. Cheap to clone; each process holding one counts as a
/// live sender until it drops its last one or dies.
///
/// # Examples
/// ```
/// let (tx, rx) = shmkit::queue::Queue::<u64>::new(8)?.split();
/// tx.send(7).unwrap();
/// drop(tx);
/// assert_eq!(rx.recv(), Ok(7));
/// assert_eq!(rx.recv(), Err(shmkit::queue::RecvError::Disconnected));
/// # Ok::<(), shmkit::queue::QueueCreateError>(())
/// ```
pub struct Sender<T> {
    h: Handle<T>,
}

/// The receiving half of a [`Queue`]. Cheap to clone; each process holding one counts as a
/// live receiver until it drops its last one or dies.
pub struct Receiver<T> {
    h: Handle<T>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender { h: self.h.clone() }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver { h: self.h.clone() }
    }
}

impl<T: Pod> Sender<T> {
    fn send_with(&self, v: T, wait: Wait) -> Result<(), SendError<T>> {
        core::send(&self.h.ring, wait, |p| {
            // SAFETY: the slot holds `size_of::<T>()` payload bytes and we own it.
            unsafe { p.cast::<T>().write_unaligned(v) }
        })
        .map_err(|f| send_error(f, v))
    }

    /// Sends `v`, blocking while the queue is full.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] if the queue is closed or every receiver process is gone;
    /// [`SendError::Corrupted`] if a peer corrupted the ring.
    #[inline]
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.send_with(v, Wait::Until(None))
    }

    /// Sends `v` if there is room now.
    ///
    /// # Errors
    /// [`SendError::Full`], [`SendError::Disconnected`], [`SendError::Corrupted`].
    #[inline]
    pub fn try_send(&self, v: T) -> Result<(), SendError<T>> {
        self.send_with(v, Wait::No)
    }

    /// Sends `v`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendError::Timeout`], [`SendError::Disconnected`], [`SendError::Corrupted`].
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.send_with(v, Wait::timeout(timeout))
    }
}

impl<T: Pod> Receiver<T> {
    fn recv_with(&self, wait: Wait) -> Result<T, RecvError> {
        core::recv(&self.h.ring, wait, |p| {
            // SAFETY: the slot holds `size_of::<T>()` bytes and we own it; any bytes are a T.
            unsafe { p.cast::<T>().read_unaligned() }
        })
        .map_err(RecvFail::into)
    }

    /// Receives a message, blocking while the queue is empty.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once the queue is closed (or every sender process is
    /// gone) and drained; [`RecvError::Corrupted`].
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::Until(None))
    }

    /// Receives a message if one is ready now.
    ///
    /// # Errors
    /// [`RecvError::Empty`], [`RecvError::Disconnected`] (closed and drained),
    /// [`RecvError::Corrupted`].
    #[inline]
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.recv_with(Wait::No)
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvError::Timeout`], [`RecvError::Disconnected`], [`RecvError::Corrupted`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.recv_with(Wait::timeout(timeout))
    }

    /// A blocking iterator that ends when the queue is disconnected (or corrupted).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    /// An iterator over the messages ready now.
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.try_recv().ok())
    }
}

macro_rules! common_methods {
    ($t:ident, $h:ident) => {
        impl<T> $t<T> {
            /// Messages in the queue now (approximate while others run; Python's `qsize`).
            #[doc(alias = "qsize")]
            pub fn len(&self) -> usize {
                self.$h.ring.len()
            }

            /// Whether the queue holds no message now (Python's `empty`).
            #[doc(alias = "empty")]
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Whether the queue is at capacity now (Python's `full`).
            #[doc(alias = "full")]
            pub fn is_full(&self) -> bool {
                self.len() >= self.capacity()
            }

            /// Messages the queue holds at most (the requested capacity rounded up to a
            /// power of two).
            pub fn capacity(&self) -> usize {
                self.$h.ring.geo.capacity as usize
            }

            /// Closes the queue for every process: sends fail with `Disconnected`, receivers
            /// drain what is queued and then get `Disconnected`.
            pub fn close(&self) {
                self.$h.ring.close();
            }

            /// Whether [`close`](Self::close) was called.
            pub fn is_closed(&self) -> bool {
                self.$h.ring.is_closed()
            }

            /// Counters of crash recovery (slots skipped or freed after a process died).
            pub fn stats(&self) -> Stats {
                Stats::of(&self.$h.ring)
            }

            /// The segment holding the queue.
            pub fn segment(&self) -> &Arc<Segment> {
                self.$h.ring.segment()
            }
        }

        impl<T> fmt::Debug for $t<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("len", &self.len())
                    .field("capacity", &self.capacity())
                    .field("closed", &self.is_closed())
                    .finish()
            }
        }
    };
}

common_methods!(Sender, h);
common_methods!(Receiver, h);
common_methods!(Queue, tx_h);

/// A bounded multi-producer multi-consumer queue of `T: Pod` in shared memory
/// (`multiprocessing.Queue`), with crossbeam's method names and Python's as aliases.
///
/// Values are copied into the ring, never serialized. A handle counts as both a sender and a
/// receiver; [`Queue::split`] gives separate halves, so that a receiver can learn that every
/// sender is gone.
///
/// Crash safety: a producer killed mid-send leaves a slot that consumers skip after its
/// death is seen (counted in [`Stats::abandoned`]); a consumer killed mid-receive loses the
/// one message it was copying (counted in [`Stats::lost`]). No message is delivered torn or
/// twice.
///
/// # Examples
/// ```
/// use shmkit::queue::Queue;
///
/// let q = Queue::<u64>::new(16)?;
/// let child = q.clone();
/// std::thread::spawn(move || for i in 0..3 { child.put(i).unwrap() });
/// let got: Vec<u64> = (0..3).map(|_| q.get().unwrap()).collect();
/// assert_eq!(got, [0, 1, 2]);
/// # Ok::<(), shmkit::queue::QueueCreateError>(())
/// ```
pub struct Queue<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    tx_h: HandleRef,
}

/// Access to the ring for the shared methods of `Queue` (which has two handles).
struct HandleRef {
    ring: Arc<Ring>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { tx: self.tx.clone(), rx: self.rx.clone(), tx_h: HandleRef { ring: self.tx_h.ring.clone() } }
    }
}

impl<T: Pod> Queue<T> {
    fn from_ring(ring: Ring) -> Self {
        let ring = Arc::new(ring);
        Queue {
            tx: Sender { h: Handle::new(ring.clone(), Role::Sender) },
            rx: Receiver { h: Handle::new(ring.clone(), Role::Receiver) },
            tx_h: HandleRef { ring },
        }
    }

    /// A queue of `capacity` messages in a new anonymous segment (shared with children
    /// forked afterwards).
    ///
    /// # Errors
    /// [`QueueCreateError::Geometry`] for zero or too large a capacity, or a segment error.
    pub fn new(capacity: usize) -> Result<Self, QueueCreateError> {
        Ok(Self::from_ring(Ring::create(kind_for::<T>(KIND_QUEUE), geometry::<T>(capacity)?, None)?))
    }

    /// A queue in a new named segment (mode 0600), for unrelated processes to [`open`].
    ///
    /// [`open`]: Queue::open
    ///
    /// # Errors
    /// As [`Queue::new`], or [`ShmCreateError::AlreadyExists`](crate::shm::ShmCreateError).
    pub fn create(name: &str, capacity: usize) -> Result<Self, QueueCreateError> {
        Ok(Self::from_ring(Ring::create(kind_for::<T>(KIND_QUEUE), geometry::<T>(capacity)?, Some(name))?))
    }

    /// Opens a queue made by [`Queue::create`]; the element type must match (its size,
    /// alignment and type name are checked).
    ///
    /// # Errors
    /// [`QueueOpenError`]: missing, wrong kind or element type, inconsistent geometry.
    pub fn open(name: &str) -> Result<Self, QueueOpenError> {
        let kind = kind_for::<T>(KIND_QUEUE);
        Ok(Self::from_ring(Ring::open(name, kind, FLAVOR_MPMC, std::mem::size_of::<T>(), None)?))
    }

    /// Bytes a queue of `capacity` needs inside a caller's segment (see [`Queue::create_at`]).
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn size_for(capacity: usize) -> Result<usize, QueueCreateError> {
        Ok(Ring::size_for(&geometry::<T>(capacity)?)?)
    }

    /// A new queue at payload offset `at` (128-aligned, zeroed, `size_for(capacity)` bytes)
    /// of a caller's segment.
    ///
    /// # Errors
    /// As [`Queue::new`], or if it does not fit.
    pub fn create_at(seg: Arc<Segment>, at: usize, capacity: usize) -> Result<Self, QueueCreateError> {
        Ok(Self::from_ring(Ring::at_new(seg, at, geometry::<T>(capacity)?)?))
    }

    /// The queue another process placed with [`Queue::create_at`] at `at` of `seg`.
    ///
    /// # Errors
    /// [`QueueOpenError::Geometry`] if no valid queue of `T` is there.
    pub fn open_at(seg: Arc<Segment>, at: usize) -> Result<Self, QueueOpenError> {
        Ok(Self::from_ring(Ring::at_existing(seg, at, FLAVOR_MPMC, std::mem::size_of::<T>())?))
    }

    /// A sending handle for the same queue.
    pub fn sender(&self) -> Sender<T> {
        self.tx.clone()
    }

    /// A receiving handle for the same queue.
    pub fn receiver(&self) -> Receiver<T> {
        self.rx.clone()
    }

    /// The two halves.
    pub fn split(self) -> (Sender<T>, Receiver<T>) {
        (self.tx, self.rx)
    }

    /// [`Sender::send`] (Python's `put`).
    ///
    /// # Errors
    /// As [`Sender::send`].
    #[doc(alias = "put")]
    #[inline]
    pub fn send(&self, v: T) -> Result<(), SendError<T>> {
        self.tx.send(v)
    }

    /// [`Sender::try_send`] (Python's `put_nowait`).
    ///
    /// # Errors
    /// As [`Sender::try_send`].
    #[doc(alias = "put_nowait")]
    #[inline]
    pub fn try_send(&self, v: T) -> Result<(), SendError<T>> {
        self.tx.try_send(v)
    }

    /// [`Sender::send_timeout`].
    ///
    /// # Errors
    /// As [`Sender::send_timeout`].
    pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendError<T>> {
        self.tx.send_timeout(v, timeout)
    }

    /// [`Receiver::recv`] (Python's `get`).
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    #[doc(alias = "get")]
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.rx.recv()
    }

    /// [`Receiver::try_recv`] (Python's `get_nowait`).
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    #[doc(alias = "get_nowait")]
    #[inline]
    pub fn try_recv(&self) -> Result<T, RecvError> {
        self.rx.try_recv()
    }

    /// [`Receiver::recv_timeout`].
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
        self.rx.recv_timeout(timeout)
    }

    /// Python's `put(v)`: [`Queue::send`].
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn put(&self, v: T) -> Result<(), SendError<T>> {
        self.send(v)
    }

    /// Python's `put_nowait(v)`: [`Queue::try_send`].
    ///
    /// # Errors
    /// As [`Sender::try_send`].
    pub fn put_nowait(&self, v: T) -> Result<(), SendError<T>> {
        self.try_send(v)
    }

    /// Python's `get()`: [`Queue::recv`].
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn get(&self) -> Result<T, RecvError> {
        self.recv()
    }

    /// Python's `get_nowait()`: [`Queue::try_recv`].
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn get_nowait(&self) -> Result<T, RecvError> {
        self.try_recv()
    }

    /// A blocking iterator that ends when the queue is disconnected.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.iter()
    }

    /// An iterator over the messages ready now.
    pub fn try_iter(&self) -> impl Iterator<Item = T> + '_ {
        self.rx.try_iter()
    }
}

/// `multiprocessing.SimpleQueue`: a [`Queue`] reduced to `put`, `get`, `empty` and `close`.
///
/// # Examples
/// ```
/// let q = shmkit::queue::SimpleQueue::<i32>::new(4)?;
/// q.put(5).unwrap();
/// assert!(!q.empty());
/// assert_eq!(q.get(), Ok(5));
/// # Ok::<(), shmkit::queue::QueueCreateError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SimpleQueue<T>(Queue<T>);

impl<T: Pod> SimpleQueue<T> {
    /// A queue of `capacity` messages, anonymous (inherited by `fork`).
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new(capacity: usize) -> Result<Self, QueueCreateError> {
        Ok(SimpleQueue(Queue::new(capacity)?))
    }

    /// Sends `v`, blocking while full.
    ///
    /// # Errors
    /// As [`Queue::send`].
    pub fn put(&self, v: T) -> Result<(), SendError<T>> {
        self.0.send(v)
    }

    /// Receives, blocking while empty.
    ///
    /// # Errors
    /// As [`Queue::recv`].
    pub fn get(&self) -> Result<T, RecvError> {
        self.0.recv()
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Closes the queue (see [`Queue::close`]).
    pub fn close(&self) {
        self.0.close()
    }
}

/// `multiprocessing.JoinableQueue`: a [`Queue`] that counts unfinished messages. Every
/// `send` adds one, every [`task_done`](JoinableQueue::task_done) removes one, and
/// [`join`](JoinableQueue::join) waits for zero.
///
/// A message lost to a crash (its producer died mid-send, or its consumer mid-receive) is
/// settled automatically. A consumer that dies *after* receiving a message but before calling
/// `task_done` leaves it outstanding, as in Python: use [`join_timeout`](Self::join_timeout)
/// where that can happen.
///
/// # Examples
/// ```
/// let q = shmkit::queue::JoinableQueue::<u32>::new(8)?;
/// q.put(1).unwrap();
/// let v = q.get().unwrap();
/// q.task_done().unwrap();
/// q.join();
/// assert!(q.task_done().is_err()); // more task_done than items
/// # Ok::<(), shmkit::queue::QueueCreateError>(())
/// ```
#[derive(Clone, Debug)]
pub struct JoinableQueue<T>(Queue<T>);

impl<T: Pod> JoinableQueue<T> {
    fn joinable(mut ring: Ring) -> Self {
        ring.joinable = true;
        JoinableQueue(Queue::from_ring(ring))
    }

    /// A joinable queue of `capacity` messages, anonymous (inherited by `fork`).
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new(capacity: usize) -> Result<Self, QueueCreateError> {
        Ok(Self::joinable(Ring::create(kind_for::<T>(KIND_JOINABLE), geometry::<T>(capacity)?, None)?))
    }

    /// A joinable queue in a new named segment.
    ///
    /// # Errors
    /// As [`Queue::create`].
    pub fn create(name: &str, capacity: usize) -> Result<Self, QueueCreateError> {
        let kind = kind_for::<T>(KIND_JOINABLE);
        Ok(Self::joinable(Ring::create(kind, geometry::<T>(capacity)?, Some(name))?))
    }

    /// Opens a joinable queue made by [`JoinableQueue::create`].
    ///
    /// # Errors
    /// As [`Queue::open`].
    pub fn open(name: &str) -> Result<Self, QueueOpenError> {
        let kind = kind_for::<T>(KIND_JOINABLE);
        Ok(Self::joinable(Ring::open(name, kind, FLAVOR_MPMC, std::mem::size_of::<T>(), None)?))
    }

    /// Marks one received message as processed.
    ///
    /// # Errors
    /// [`TaskDoneError`] if every message put was already marked done.
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        core::task_done(&self.0.tx_h.ring)
    }

    /// Blocks until every message put has been marked done.
    pub fn join(&self) {
        let _ = core::join(&self.0.tx_h.ring, None);
    }

    /// [`join`](Self::join) for at most `timeout`.
    ///
    /// # Errors
    /// [`TimedOut`].
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), TimedOut> {
        core::join(&self.0.tx_h.ring, crate::futex::deadline_after(timeout))
    }

    /// Messages put and not yet marked done.
    pub fn unfinished(&self) -> u64 {
        // Relaxed: a snapshot.
        self.0.tx_h.ring.ctl().unfinished.load(crate::primitive::atomic::Ordering::Relaxed)
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.0
    }
}
