//! Errors of the segment layer: one enum per operation.

use std::io;

use thiserror::Error;

use super::header::Kind;

/// Why a segment name was refused.
///
/// Names follow `shm_open(3)`: an optional leading `/`, then 1 to 255 bytes without `/` or NUL.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty (or only `/`).
    #[error("segment name is empty")]
    Empty,
    /// A `/` after the optional leading one.
    #[error("segment name contains '/' after its first byte")]
    ContainsSlash,
    /// An interior NUL byte.
    #[error("segment name contains a NUL byte")]
    ContainsNul,
    /// Longer than `NAME_MAX` (255) bytes.
    #[error("segment name is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The name's length without the leading `/`.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `.` or `..`.
    #[error("segment name {0:?} is reserved")]
    Reserved(String),
}

/// Why a segment could not be created.
#[derive(Debug, Error)]
pub enum ShmCreateError {
    /// A segment with this name exists already (creation uses `O_EXCL`).
    #[error("a segment named {0:?} already exists")]
    AlreadyExists(String),
    /// The OS refused access (`EACCES`/`EPERM`).
    #[error("permission denied creating segment {0:?}")]
    PermissionDenied(String),
    /// The name is not a valid segment name.
    #[error("invalid segment name: {0}")]
    InvalidName(#[from] NameError),
    /// The payload size overflows what can be mapped.
    #[error("segment payload of {requested} bytes is too large")]
    InvalidSize {
        /// The payload size asked for.
        requested: usize,
    },
    /// Any other OS error (out of memory, out of file descriptors, ...).
    #[error("creating segment: {0}")]
    Io(#[from] io::Error),
}

/// Why a segment could not be opened, or why its header was refused.
#[derive(Debug, Error)]
pub enum ShmOpenError {
    /// No segment has this name.
    #[error("no segment named {0:?}")]
    DoesNotExist(String),
    /// The OS refused access (`EACCES`/`EPERM`), e.g. another user's 0600 segment.
    #[error("permission denied opening segment {0:?}")]
    PermissionDenied(String),
    /// The name is not a valid segment name.
    #[error("invalid segment name: {0}")]
    InvalidName(#[from] NameError),
    /// The file is smaller than a segment's header region (128 bytes): not a segment, or
    /// truncated.
    #[error("file of {size} bytes is too small to hold a segment header")]
    TooSmall {
        /// The file's size.
        size: u64,
    },
    /// The header does not start with shmkit's magic number.
    #[error("not a shmkit segment (bad magic)")]
    NotShmkit,
    /// The creator has not published the header yet (it may still be initialising, or it
    /// died while doing so).
    #[error("segment header not published yet (creator still initialising, or died)")]
    NotReady,
    /// The segment was written by an incompatible layout version of shmkit.
    #[error("segment layout version {found}, this build reads version {expected}")]
    VersionMismatch {
        /// The version in the header.
        found: u32,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// The segment holds another kind of object (or another element type).
    #[error("segment holds {found}, expected {expected}")]
    WrongKind {
        /// The kind in the header.
        found: Kind,
        /// The kind asked for.
        expected: Kind,
    },
    /// The size recorded in the header differs from the file's real size (it was truncated
    /// or extended behind shmkit's back).
    #[error("header says {header} bytes but the file has {actual}")]
    SizeMismatch {
        /// The size recorded in the header.
        header: u64,
        /// The file's size from `fstat`.
        actual: u64,
    },
    /// The header fails its checksum or holds impossible values.
    #[error("corrupted segment header: {0}")]
    Corrupted(&'static str),
    /// Any other OS error.
    #[error("opening segment: {0}")]
    Io(#[from] io::Error),
}

/// An [`Offset`](super::Offset) does not fit the segment's payload.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("object at payload offset {offset} ({size} bytes, align {align}) does not fit a payload of {payload_len} bytes")]
pub struct OffsetError {
    /// The offset asked for, relative to the payload.
    pub offset: usize,
    /// The object's size in bytes.
    pub size: usize,
    /// The object's alignment.
    pub align: usize,
    /// The payload's length.
    pub payload_len: usize,
}

/// A layout that does not fit the segment just sized for it is an internal error; it is
/// reported as an I/O-style error rather than a panic.
impl From<OffsetError> for ShmCreateError {
    fn from(e: OffsetError) -> Self {
        ShmCreateError::Io(io::Error::other(e))
    }
}
