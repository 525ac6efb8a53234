//! Queue errors. A failed send always hands the value back.

use std::fmt;

use thiserror::Error;

use super::raw::GeometryError;
use crate::shm::{OffsetError, ShmCreateError, ShmOpenError};

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::ZeroCapacity => write!(f, "a queue needs a capacity of at least 1"),
            GeometryError::TooLarge => write!(f, "queue capacity or message size too large"),
            GeometryError::Mismatch(what) => write!(f, "queue layout mismatch: {what}"),
        }
    }
}

impl std::error::Error for GeometryError {}

/// Why a queue could not be created.
#[derive(Debug, Error)]
pub enum QueueCreateError {
    /// Zero capacity, or a size that cannot be represented.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// The segment could not be created.
    #[error(transparent)]
    Shm(#[from] ShmCreateError),
    /// The queue does not fit the caller's segment at that offset.
    #[error(transparent)]
    Offset(#[from] OffsetError),
}

/// Why a queue could not be opened.
#[derive(Debug, Error)]
pub enum QueueOpenError {
    /// The segment could not be opened (missing, wrong kind or element type, corrupted
    /// header, ...).
    #[error(transparent)]
    Shm(#[from] ShmOpenError),
    /// The ring's geometry disagrees with the segment or with the opener's type.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
}

/// Why a send failed. Every variant hands the value back.
#[derive(Clone, Copy, PartialEq, Eq, Error)]
pub enum SendError<T> {
    /// The queue is full (`try_send`; Python's `queue.Full`).
    #[error("queue is full")]
    Full(T),
    /// The queue stayed full until the timeout.
    #[error("timed out waiting for room in the queue")]
    Timeout(T),
    /// The queue was closed, or every receiver process is gone.
    #[error("queue is closed or has no receiver left")]
    Disconnected(T),
    /// The encoded message is longer than the queue's frame size.
    #[error("message of {len} bytes exceeds the queue's maximum of {max}")]
    TooLarge {
        /// The value.
        value: T,
        /// Its encoded length.
        len: usize,
        /// The largest message the queue takes.
        max: usize,
    },
    /// The value could not be serialized.
    #[error("message could not be encoded")]
    Encode(T),
    /// Another live process holds this end of a single-producer queue.
    #[error("another live process holds the sending end of this single-producer queue")]
    InUse(T),
    /// The queue's shared state is impossible: a peer wrote garbage into it.
    #[error("queue state is corrupted")]
    Corrupted(T),
}

impl<T> SendError<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Full(v)
            | SendError::Timeout(v)
            | SendError::Disconnected(v)
            | SendError::TooLarge { value: v, .. }
            | SendError::Encode(v)
            | SendError::InUse(v)
            | SendError::Corrupted(v) => v,
        }
    }

    /// Whether this is [`SendError::Full`] or [`SendError::Timeout`] (try again later).
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_) | SendError::Timeout(_))
    }

    /// Whether this is [`SendError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, SendError::Disconnected(_))
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            SendError::Full(_) => "Full",
            SendError::Timeout(_) => "Timeout",
            SendError::Disconnected(_) => "Disconnected",
            SendError::TooLarge { len, max, .. } => {
                return write!(f, "TooLarge {{ len: {len}, max: {max}, .. }}")
            }
            SendError::Encode(_) => "Encode",
            SendError::InUse(_) => "InUse",
            SendError::Corrupted(_) => "Corrupted",
        };
        write!(f, "{name}(..)")
    }
}

/// Why a receive returned no message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum RecvError {
    /// Nothing to receive now (`try_recv`; Python's `queue.Empty`).
    #[error("queue is empty")]
    Empty,
    /// Nothing arrived before the timeout.
    #[error("timed out waiting for a message")]
    Timeout,
    /// The queue is closed (or every sender process is gone) and drained.
    #[error("queue is closed or has no sender left, and is drained")]
    Disconnected,
    /// A message could not be decoded; it was consumed (counted, not redelivered).
    #[error("message could not be decoded: {0}")]
    Decode(&'static str),
    /// Another live process holds this end of a single-consumer queue.
    #[error("another live process holds the receiving end of this single-consumer queue")]
    InUse,
    /// The queue's shared state is impossible: a peer wrote garbage into it.
    #[error("queue state is corrupted: {0}")]
    Corrupted(&'static str),
}

impl RecvError {
    /// Whether this is [`RecvError::Empty`] or [`RecvError::Timeout`].
    pub fn is_empty(&self) -> bool {
        matches!(self, RecvError::Empty | RecvError::Timeout)
    }

    /// Whether this is [`RecvError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvError::Disconnected)
    }
}

/// `task_done()` was called more times than items were put (Python's `ValueError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("task_done() called more times than there were items")]
pub struct TaskDoneError;
