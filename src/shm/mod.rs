//! Shared-memory segments: anonymous (fork), named (`/dev/shm`) and memfd.
//!
//! A segment is a file format (see [`header`] for the byte table): a 64-byte versioned
//! header at offset 0, the payload from offset 128. Objects in the payload are `#[repr(C)]`,
//! fixed-size, [`Shareable`], and found by [`Offset`], never by pointer, because each
//! process maps the segment at its own address.
//!
//! The creator writes the header and initialises the payload, then publishes the header's
//! version (Release). An opener checks the file's real size with `fstat` before mapping,
//! waits a bounded time for the version, then validates magic, version, checksum, kind and
//! size, each with its own [`ShmOpenError`].

mod error;
pub mod header;
mod offset;
mod segment;
mod shared;

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

pub use error::{NameError, OffsetError, ShmCreateError, ShmOpenError};
pub use header::{Backing, Header, Kind};
pub use offset::{Layout, Offset, Shareable, SliceOffset};
pub use segment::{shm_name, NewSegment, Segment, SegmentBuilder, DEFAULT_INIT_WAIT, NAME_MAX};
pub use shared::Shared;

use crate::util::proc::Liveness;

/// Where Linux keeps named POSIX shared memory.
pub const SHM_DIR: &str = "/dev/shm";

/// Reads the header of the named segment without mapping it (for tools such as `shmkit ls`).
///
/// # Errors
/// [`ShmOpenError::DoesNotExist`], [`PermissionDenied`](ShmOpenError::PermissionDenied),
/// [`InvalidName`](ShmOpenError::InvalidName), or a header error from [`Header::decode`]
/// (the size is checked too: [`ShmOpenError::SizeMismatch`]).
pub fn read_header(name: &str) -> Result<Header, ShmOpenError> {
    let cname = shm_name(name)?;
    let path = format!("{SHM_DIR}{}", cname.to_string_lossy());
    // O_NOFOLLOW | O_NONBLOCK: a symlink or FIFO planted in /dev/shm is refused, never
    // followed or waited on (`shmkit ls` and `clean` may run as root).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ShmOpenError::DoesNotExist(name.to_owned()),
            std::io::ErrorKind::PermissionDenied => ShmOpenError::PermissionDenied(name.to_owned()),
            _ => ShmOpenError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ShmOpenError::NotShmkit);
    }
    let size = meta.len();
    let mut buf = [0u8; header::HEADER_SIZE];
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let h = Header::decode(&buf[..got])?;
    if h.total_size != size {
        return Err(ShmOpenError::SizeMismatch { header: h.total_size, actual: size });
    }
    Ok(h)
}

/// A file in `/dev/shm` that carries shmkit's magic number.
#[derive(Debug)]
pub struct ListedSegment {
    /// The name, without the leading `/`.
    pub name: String,
    /// The file's size.
    pub size: u64,
    /// The validated header, or why it was refused.
    pub header: Result<Header, ShmOpenError>,
    /// Whether the creator still runs ([`Liveness::Unknown`] if the header is unusable).
    pub creator: Liveness,
}

/// Lists shmkit segments in [`SHM_DIR`] that this user can read, sorted by name. Files
/// without shmkit's magic are skipped.
///
/// # Errors
/// Only if `/dev/shm` itself cannot be read.
pub fn list() -> std::io::Result<Vec<ListedSegment>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let Ok(entry) = entry else { continue };
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_file() || ft.is_fifo() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else { continue };
        let size = entry.metadata().map_or(0, |m| m.len());
        let header = read_header(&name);
        if matches!(
            header,
            Err(ShmOpenError::NotShmkit
                | ShmOpenError::TooSmall { .. }
                | ShmOpenError::PermissionDenied(_)
                | ShmOpenError::DoesNotExist(_)
                | ShmOpenError::InvalidName(_)
                | ShmOpenError::Io(_))
        ) {
            continue;
        }
        let creator = header.as_ref().map_or(Liveness::Unknown, |h| h.creator().liveness());
        out.push(ListedSegment { name, size, header, creator });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}
