//! `FrameQueue`: variable-size byte messages up to a fixed maximum, and (feature `serde`)
//! `SerdeQueue<T>` carrying any serde value through it, encoded with postcard.
//!
//! Each slot holds a 4-byte little-endian length and up to `max_frame` bytes. The length
//! is read back from shared memory, so it is checked against `max_frame` before any copy:
//! a corrupted length gives [`RecvError::Corrupted`], never an out-of-bounds read.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::core::{self, SendFail, Wait};
use super::error::{QueueCreateError, QueueOpenError, RecvError, SendError};
use super::raw::{Geometry, FLAVOR_MPMC};
use super::ring::{Ring, Role};
use super::{Stats, KIND_FRAMES};
use crate::shm::{Kind, Segment};

/// Bytes of the length prefix in each slot.
const LEN_BYTES: usize = 4;

/// Decodes a frame's length prefix and checks it against `max` (the fuzzed decoder).
///
/// # Errors
/// [`RecvError::Corrupted`] if the length exceeds `max` or `slot` is shorter than it claims.
pub fn decode_frame(slot: &[u8], max: usize) -> Result<&[u8], RecvError> {
    let len_bytes: [u8; LEN_BYTES] = slot
        .get(..LEN_BYTES)
        .and_then(|b| b.try_into().ok())
        .ok_or(RecvError::Corrupted("frame slot too short"))?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > max {
        return Err(RecvError::Corrupted("frame length above the queue's maximum"));
    }
    slot.get(LEN_BYTES..LEN_BYTES + len).ok_or(RecvError::Corrupted("frame length beyond its slot"))
}

/// The largest frame a ring of frames carries.
pub(crate) fn max_frame(ring: &Ring) -> usize {
    ring.geo.elem_size - LEN_BYTES
}

/// Adds the largest frame to a ring's view (for [`crate::inspect`]): the slot less its length
/// prefix.
pub(crate) fn describe(ring: &mut crate::inspect::RingView) {
    match ring.slot_bytes.checked_sub(LEN_BYTES) {
        Some(max) => ring.max_frame = Some(max),
        None => ring.problems.push("slots smaller than a frame's length prefix"),
    }
}

/// Sends one frame over a ring of frames (shared by [`FrameQueue`] and the pipe).
pub(crate) fn send_frame<'a>(ring: &Ring, msg: &'a [u8], wait: Wait) -> Result<(), SendError<&'a [u8]>> {
    let max = max_frame(ring);
    if msg.len() > max {
        return Err(SendError::TooLarge { value: msg, len: msg.len(), max });
    }
    let r = core::send(ring, wait, |p| {
        // SAFETY: the slot holds LEN_BYTES + max_frame bytes and msg.len() <= max_frame.
        unsafe {
            p.cast::<[u8; LEN_BYTES]>().write_unaligned((msg.len() as u32).to_le_bytes());
            std::ptr::copy_nonoverlapping(msg.as_ptr(), p.add(LEN_BYTES), msg.len());
        }
    });
    r.map_err(|f| match f {
        SendFail::Full => SendError::Full(msg),
        SendFail::Timeout => SendError::Timeout(msg),
        SendFail::Disconnected => SendError::Disconnected(msg),
        SendFail::Corrupted => SendError::Corrupted(msg),
    })
}

/// Receives one frame from a ring of frames into `f`, which gets the message bytes while
/// they are still in the slot (no intermediate copy).
pub(crate) fn recv_frame<R>(ring: &Ring, wait: Wait, mut f: impl FnMut(&[u8]) -> R) -> Result<R, RecvError> {
    let elem = ring.geo.elem_size;
    let max = max_frame(ring);
    let r = core::recv(ring, wait, |p| {
        // SAFETY: we hold the slot (READING); it has `elem` payload bytes that nobody
        // writes meanwhile.
        let slot = unsafe { std::slice::from_raw_parts(p, elem) };
        decode_frame(slot, max).map(&mut f)
    });
    match r {
        Ok(inner) => inner,
        Err(e) => Err(e.into()),
    }
}

/// A bounded MPMC queue of byte messages of at most `max_frame` bytes each.
///
/// # Examples
/// ```
/// let q = shmkit::queue::FrameQueue::new(8, 64)?;
/// q.send_bytes(b"hello").unwrap();
/// assert_eq!(q.recv_bytes().unwrap(), b"hello");
/// assert!(q.send_bytes(&[0; 65]).is_err()); // above the maximum: a typed error
/// # Ok::<(), shmkit::queue::QueueCreateError>(())
/// ```
pub struct FrameQueue {
    ring: Arc<Ring>,
}

impl Clone for FrameQueue {
    fn clone(&self) -> Self {
        FrameQueue::from_arc(self.ring.clone())
    }
}

impl Drop for FrameQueue {
    fn drop(&mut self) {
        self.ring.drop_handle(Role::Sender);
        self.ring.drop_handle(Role::Receiver);
    }
}

impl fmt::Debug for FrameQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameQueue").field("len", &self.len()).field("max_frame", &self.max_frame()).finish()
    }
}

pub(crate) fn frame_geometry(capacity: usize, max_frame: usize) -> Result<Geometry, QueueCreateError> {
    let elem = max_frame.checked_add(LEN_BYTES).ok_or(super::raw::GeometryError::TooLarge)?;
    Ok(Geometry::new(FLAVOR_MPMC, elem, capacity)?)
}

impl FrameQueue {
    pub(crate) fn from_arc(ring: Arc<Ring>) -> Self {
        ring.add_handle(Role::Sender);
        ring.add_handle(Role::Receiver);
        FrameQueue { ring }
    }

    pub(crate) fn with_kind(
        kind: Kind,
        capacity: usize,
        max_frame: usize,
        name: Option<&str>,
    ) -> Result<Self, QueueCreateError> {
        Ok(Self::from_arc(Arc::new(Ring::create(kind, frame_geometry(capacity, max_frame)?, name)?)))
    }

    pub(crate) fn open_kind(kind: Kind, name: &str) -> Result<Self, QueueOpenError> {
        let seg = Arc::new(Segment::open(name, kind)?);
        let ctl: &super::raw::RingCtl = seg
            .get(crate::shm::Offset::new(0))
            .map_err(|_| super::raw::GeometryError::Mismatch("segment too small for a ring"))?;
        // Relaxed: publication of the segment orders the geometry; it is validated below.
        let elem = ctl.elem_size.load(crate::primitive::atomic::Ordering::Relaxed) as usize;
        if elem < LEN_BYTES {
            return Err(super::raw::GeometryError::Mismatch("frame size").into());
        }
        Ok(Self::from_arc(Arc::new(Ring::at_existing(seg, 0, FLAVOR_MPMC, elem)?)))
    }

    /// A queue of `capacity` frames (rounded up to a power of two) of up to `max_frame`
    /// bytes, anonymous (inherited by `fork`). It takes `capacity × (max_frame + 12)` bytes.
    ///
    /// # Errors
    /// [`QueueCreateError::Geometry`] for zero or too large sizes, or a segment error.
    pub fn new(capacity: usize, max_frame: usize) -> Result<Self, QueueCreateError> {
        Self::with_kind(Kind::new(KIND_FRAMES, 0), capacity, max_frame, None)
    }

    /// A frame queue in a new named segment.
    ///
    /// # Errors
    /// As [`FrameQueue::new`], or the name is taken.
    pub fn create(name: &str, capacity: usize, max_frame: usize) -> Result<Self, QueueCreateError> {
        Self::with_kind(Kind::new(KIND_FRAMES, 0), capacity, max_frame, Some(name))
    }

    /// Opens a frame queue made by [`FrameQueue::create`] (its sizes are read and checked).
    ///
    /// # Errors
    /// [`QueueOpenError`].
    pub fn open(name: &str) -> Result<Self, QueueOpenError> {
        Self::open_kind(Kind::new(KIND_FRAMES, 0), name)
    }

    /// The largest message accepted, in bytes.
    pub fn max_frame(&self) -> usize {
        max_frame(&self.ring)
    }

    fn send_with<'a>(&self, msg: &'a [u8], wait: Wait) -> Result<(), SendError<&'a [u8]>> {
        send_frame(&self.ring, msg, wait)
    }

    /// Sends `msg`, blocking while the queue is full.
    ///
    /// # Errors
    /// `TooLarge`, `Disconnected`, `Corrupted` (each holding `msg`).
    pub fn send_bytes<'a>(&self, msg: &'a [u8]) -> Result<(), SendError<&'a [u8]>> {
        self.send_with(msg, Wait::Until(None))
    }

    /// Sends `msg` if there is room now.
    ///
    /// # Errors
    /// `Full`, `TooLarge`, `Disconnected`, `Corrupted`.
    pub fn try_send_bytes<'a>(&self, msg: &'a [u8]) -> Result<(), SendError<&'a [u8]>> {
        self.send_with(msg, Wait::No)
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// `Timeout`, `TooLarge`, `Disconnected`, `Corrupted`.
    pub fn send_bytes_timeout<'a>(
        &self,
        msg: &'a [u8],
        timeout: Duration,
    ) -> Result<(), SendError<&'a [u8]>> {
        self.send_with(msg, Wait::timeout(timeout))
    }

    /// Receives a frame into `f`, which gets the message bytes while they are still in the
    /// slot (no intermediate copy).
    pub(crate) fn recv_with<R>(&self, wait: Wait, f: impl FnMut(&[u8]) -> R) -> Result<R, RecvError> {
        recv_frame(&self.ring, wait, f)
    }

    /// Receives a message, blocking while the queue is empty.
    ///
    /// # Errors
    /// `Disconnected` (closed and drained, or every sender gone), `Corrupted`.
    pub fn recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(Wait::Until(None), <[u8]>::to_vec)
    }

    /// Receives a message if one is ready now.
    ///
    /// # Errors
    /// `Empty`, `Disconnected`, `Corrupted`.
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>, RecvError> {
        self.recv_with(Wait::No, <[u8]>::to_vec)
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `Disconnected`, `Corrupted`.
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        self.recv_with(Wait::timeout(timeout), <[u8]>::to_vec)
    }

    /// Receives a message into `buf` (at least [`max_frame`](Self::max_frame) bytes, so that
    /// any message fits), returning its length.
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes); `Decode` if `buf` is shorter than `max_frame`
    /// (checked before anything is taken, so nothing is lost).
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        if buf.len() < self.max_frame() {
            return Err(RecvError::Decode("buffer shorter than the queue's maximum frame"));
        }
        self.recv_with(Wait::Until(None), |m| {
            buf[..m.len()].copy_from_slice(m);
            m.len()
        })
    }

    /// Messages queued now (approximate).
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frames the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.geo.capacity as usize
    }

    /// Closes the queue: see [`Queue::close`](super::Queue::close).
    pub fn close(&self) {
        self.ring.close()
    }

    /// Counters of crash recovery.
    pub fn stats(&self) -> Stats {
        Stats::of(&self.ring)
    }

    /// The segment holding the queue.
    pub fn segment(&self) -> &Arc<Segment> {
        self.ring.segment()
    }
}

#[cfg(feature = "serde")]
pub use serde_queue::SerdeQueue;

#[cfg(feature = "serde")]
mod serde_queue {
    use std::marker::PhantomData;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::*;
    use crate::queue::KIND_SERDE;

    /// A bounded MPMC queue of any serde value (Python's `Queue` of arbitrary objects):
    /// values are encoded with postcard into byte frames of at most `max_frame` bytes.
    ///
    /// # Examples
    /// ```
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Job { id: u32, name: String }
    ///
    /// let q = shmkit::queue::SerdeQueue::<Job>::new(8, 256)?;
    /// q.send(Job { id: 1, name: "bake".into() }).unwrap();
    /// assert_eq!(q.recv().unwrap(), Job { id: 1, name: "bake".into() });
    /// # Ok::<(), shmkit::queue::QueueCreateError>(())
    /// ```
    pub struct SerdeQueue<T> {
        frames: FrameQueue,
        _t: PhantomData<fn(T) -> T>,
    }

    impl<T> Clone for SerdeQueue<T> {
        fn clone(&self) -> Self {
            SerdeQueue { frames: self.frames.clone(), _t: PhantomData }
        }
    }

    impl<T> fmt::Debug for SerdeQueue<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SerdeQueue").field("frames", &self.frames).finish()
        }
    }

    fn kind<T>() -> Kind {
        Kind::new(KIND_SERDE, Kind::tag_of::<T>())
    }

    impl<T: Serialize + DeserializeOwned> SerdeQueue<T> {
        /// A queue of `capacity` values encoded in at most `max_frame` bytes each, anonymous.
        ///
        /// # Errors
        /// As [`FrameQueue::new`].
        pub fn new(capacity: usize, max_frame: usize) -> Result<Self, QueueCreateError> {
            Ok(SerdeQueue {
                frames: FrameQueue::with_kind(kind::<T>(), capacity, max_frame, None)?,
                _t: PhantomData,
            })
        }

        /// A queue in a new named segment.
        ///
        /// # Errors
        /// As [`FrameQueue::create`].
        pub fn create(name: &str, capacity: usize, max_frame: usize) -> Result<Self, QueueCreateError> {
            let frames = FrameQueue::with_kind(kind::<T>(), capacity, max_frame, Some(name))?;
            Ok(SerdeQueue { frames, _t: PhantomData })
        }

        /// Opens a queue made by [`SerdeQueue::create`] for the same `T`.
        ///
        /// # Errors
        /// [`QueueOpenError`].
        pub fn open(name: &str) -> Result<Self, QueueOpenError> {
            Ok(SerdeQueue { frames: FrameQueue::open_kind(kind::<T>(), name)?, _t: PhantomData })
        }

        fn send_with(&self, v: T, wait: Wait) -> Result<(), SendError<T>> {
            let mut buf = [0u8; 512];
            let max = self.frames.max_frame();
            let heap;
            let bytes: &[u8] = match postcard::to_slice(&v, &mut buf) {
                Ok(b) => b,
                Err(postcard::Error::SerializeBufferFull) => match postcard::to_allocvec(&v) {
                    Ok(b) => {
                        heap = b;
                        &heap
                    }
                    Err(_) => return Err(SendError::Encode(v)),
                },
                Err(_) => return Err(SendError::Encode(v)),
            };
            if bytes.len() > max {
                return Err(SendError::TooLarge { len: bytes.len(), max, value: v });
            }
            match self.frames.send_with(bytes, wait) {
                Ok(()) => Ok(()),
                Err(e) => Err(match e {
                    SendError::Full(_) => SendError::Full(v),
                    SendError::Timeout(_) => SendError::Timeout(v),
                    SendError::Disconnected(_) => SendError::Disconnected(v),
                    _ => SendError::Corrupted(v),
                }),
            }
        }

        /// Encodes and sends `v`, blocking while full.
        ///
        /// # Errors
        /// `TooLarge` (encoded above `max_frame`), `Encode`, `Disconnected`, `Corrupted`.
        pub fn send(&self, v: T) -> Result<(), SendError<T>> {
            self.send_with(v, Wait::Until(None))
        }

        /// Sends `v` if there is room now.
        ///
        /// # Errors
        /// As [`send`](Self::send), or `Full`.
        pub fn try_send(&self, v: T) -> Result<(), SendError<T>> {
            self.send_with(v, Wait::No)
        }

        /// Sends `v`, waiting at most `timeout`.
        ///
        /// # Errors
        /// As [`send`](Self::send), or `Timeout`.
        pub fn send_timeout(&self, v: T, timeout: Duration) -> Result<(), SendError<T>> {
            self.send_with(v, Wait::timeout(timeout))
        }

        fn recv_with(&self, wait: Wait) -> Result<T, RecvError> {
            self.frames
                .recv_with(wait, |m| postcard::from_bytes(m).map_err(|_| RecvError::Decode("postcard")))?
        }

        /// Receives and decodes a value, blocking while empty.
        ///
        /// # Errors
        /// `Disconnected`, `Decode` (the message is consumed), `Corrupted`.
        pub fn recv(&self) -> Result<T, RecvError> {
            self.recv_with(Wait::Until(None))
        }

        /// Receives a value if one is ready now.
        ///
        /// # Errors
        /// As [`recv`](Self::recv), or `Empty`.
        pub fn try_recv(&self) -> Result<T, RecvError> {
            self.recv_with(Wait::No)
        }

        /// Receives a value, waiting at most `timeout`.
        ///
        /// # Errors
        /// As [`recv`](Self::recv), or `Timeout`.
        pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvError> {
            self.recv_with(Wait::timeout(timeout))
        }

        /// Python's `put`.
        ///
        /// # Errors
        /// As [`send`](Self::send).
        pub fn put(&self, v: T) -> Result<(), SendError<T>> {
            self.send(v)
        }

        /// Python's `get`.
        ///
        /// # Errors
        /// As [`recv`](Self::recv).
        pub fn get(&self) -> Result<T, RecvError> {
            self.recv()
        }

        /// The underlying frame queue (length, capacity, close, stats).
        pub fn frames(&self) -> &FrameQueue {
            &self.frames
        }
    }
}
