//! The segment header: 64 bytes at offset 0 of every segment, validated on open.
//!
//! ```text
//! offset size field           meaning
//!  0      8   magic           b"SHMKITsg" (little-endian u64)
//!  8      4   version         layout version; 0 until the creator publishes the segment
//! 12      4   kind            what the payload holds (`Kind::code`)
//! 16      8   kind_tag        kind-specific type descriptor (`Kind::tag`), e.g. element layout
//! 24      8   total_size      bytes in the whole segment, header included
//! 32      8   creator_start   creator's start time (clock ticks after boot)
//! 40      8   created_ns      creation time, ns since the Unix epoch
//! 48      4   creator_pid     creator's pid
//! 52      4   payload_offset  where the payload starts (128)
//! 56      4   flags           PERSISTENT, backing (see `Header::flags`)
//! 60      4   checksum        FNV-1a of bytes 0..60, `version` as published
//! ```
//! The creator writes every field but `version`, initialises the payload, then stores
//! `version` with Release; openers Acquire-load it. The header is memory a peer can write, so
//! openers copy it out once and validate the copy ([`Header::decode`], [`Header::check`]).

use std::fmt;

use bytemuck::{Pod, Zeroable};

use super::error::ShmOpenError;
use crate::util::proc::ProcessToken;

/// `b"SHMKITsg"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMKITsg");
/// The layout version this build writes and accepts.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes in the header struct.
pub const HEADER_SIZE: usize = 64;
/// Where the payload starts: the header rounded up to two cache lines, so payload objects
/// may be 128-byte aligned (`CachePadded`).
pub const PAYLOAD_OFFSET: usize = 128;
/// Byte offset of the `version` word inside the header.
pub(crate) const VERSION_OFFSET: usize = 8;

/// What a segment's payload holds: a kind code plus a kind-specific tag (for typed objects,
/// a digest of the element type), both checked on open so that a `Value<u64>` never opens a
/// `Value<f32>`.
///
/// Codes below `0x8000_0000` belong to shmkit; [`Kind::user`] makes codes for embedders.
///
/// # Examples
/// ```
/// use shmkit::shm::Kind;
/// const MY_TABLE: Kind = Kind::user(7, 0);
/// assert_ne!(MY_TABLE, Kind::RAW);
/// assert_eq!(Kind::RAW.name(), "raw");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kind {
    /// The object kind.
    pub code: u32,
    /// Kind-specific descriptor (0 when unused).
    pub tag: u64,
}

const USER_BIT: u32 = 0x8000_0000;

impl Kind {
    /// Untyped bytes: the caller places its own objects.
    pub const RAW: Kind = Kind::new(1, 0);
    /// The two-process ping-pong of `shmkit demo` and the round-trip benchmark.
    pub const PING_PONG: Kind = Kind::new(2, 0);

    /// A kind from its parts.
    pub const fn new(code: u32, tag: u64) -> Kind {
        Kind { code, tag }
    }

    /// A kind for an embedder's own objects; `code` is taken modulo 2³¹.
    pub const fn user(code: u32, tag: u64) -> Kind {
        Kind { code: code | USER_BIT, tag }
    }

    /// A tag describing `T`'s size, alignment and type name, for typed segments.
    ///
    /// The type name comes from `std::any::type_name`, which may differ between compiler
    /// versions: processes sharing a typed segment should run the same build.
    pub fn tag_of<T>() -> u64 {
        let mut h = Fnv64::new();
        h.write(&(std::mem::size_of::<T>() as u64).to_le_bytes());
        h.write(&(std::mem::align_of::<T>() as u64).to_le_bytes());
        h.write(std::any::type_name::<T>().as_bytes());
        h.finish()
    }

    /// A short name for listings.
    pub fn name(&self) -> &'static str {
        match self.code {
            1 => "raw",
            2 => "ping-pong",
            3 => "lock",
            4 => "rlock",
            5 => "semaphore",
            6 => "event",
            7 => "condition",
            8 => "barrier",
            9 => "queue",
            10 => "joinable-queue",
            11 => "frame-queue",
            12 => "serde-queue",
            13 => "spsc-queue",
            14 => "value",
            15 => "array",
            16 => "raw-value",
            17 => "raw-array",
            18 => "pipe",
            19 => "pool",
            c if c & USER_BIT != 0 => "user",
            _ => "unknown",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kind {} ({}, tag {:#x})", self.code, self.name(), self.tag)
    }
}

/// How a segment is backed, as recorded in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// `mmap(MAP_SHARED | MAP_ANONYMOUS)`: shared with children forked after creation.
    Anonymous,
    /// `shm_open` under `/dev/shm`: opened by name from any process of the same user.
    Named,
    /// `memfd_create`, sealed against shrinking: shared by passing the fd.
    Memfd,
}

/// The segment outlives its creator: `shmkit clean` leaves it unless asked for `--all`.
pub const FLAG_PERSISTENT: u32 = 1;
const BACKING_SHIFT: u32 = 1;
const BACKING_MASK: u32 = 0b11 << BACKING_SHIFT;
const KNOWN_FLAGS: u32 = FLAG_PERSISTENT | BACKING_MASK;

/// A decoded segment header (see the module docs for the byte layout).
///
/// # Examples
/// ```
/// use shmkit::shm::{Backing, Header, Kind};
/// let h = Header::new(Kind::RAW, Backing::Named, 4096, false);
/// let bytes = h.encode();
/// assert_eq!(Header::decode(&bytes).unwrap(), h);
/// assert!(h.check(Kind::RAW, 4096).is_ok());
/// assert!(h.check(Kind::PING_PONG, 4096).is_err());
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`LAYOUT_VERSION`] once published; 0 while the creator initialises.
    pub version: u32,
    /// [`Kind::code`].
    pub kind: u32,
    /// [`Kind::tag`].
    pub kind_tag: u64,
    /// Size of the whole segment in bytes.
    pub total_size: u64,
    /// Creator's start time (see [`ProcessToken`]).
    pub creator_start: u64,
    /// Creation time in nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// Creator's pid.
    pub creator_pid: u32,
    /// [`PAYLOAD_OFFSET`].
    pub payload_offset: u32,
    /// [`FLAG_PERSISTENT`] and the [`Backing`].
    pub flags: u32,
    /// FNV-1a over bytes 0..60 with `version` as published.
    pub checksum: u32,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(std::mem::offset_of!(Header, version) == VERSION_OFFSET);
const _: () = assert!(HEADER_SIZE <= PAYLOAD_OFFSET);

impl Header {
    /// A published header for a segment of `total_size` bytes created now by this process.
    pub fn new(kind: Kind, backing: Backing, total_size: u64, persistent: bool) -> Header {
        let me = ProcessToken::current();
        let created_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
        let backing_bits = match backing {
            Backing::Anonymous => 0,
            Backing::Named => 1,
            Backing::Memfd => 2,
        } << BACKING_SHIFT;
        let mut h = Header {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            kind: kind.code,
            kind_tag: kind.tag,
            total_size,
            creator_start: me.start,
            created_ns,
            creator_pid: me.pid,
            payload_offset: PAYLOAD_OFFSET as u32,
            flags: backing_bits | if persistent { FLAG_PERSISTENT } else { 0 },
            checksum: 0,
        };
        h.checksum = h.compute_checksum();
        h
    }

    /// FNV-1a (32-bit) over the first 60 bytes, which is everything but the checksum.
    pub fn compute_checksum(&self) -> u32 {
        let bytes = bytemuck::bytes_of(self);
        let mut hash: u32 = 0x811c_9dc5;
        for &b in &bytes[..HEADER_SIZE - 4] {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash
    }

    /// The header's 64 bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        bytemuck::cast(*self)
    }

    /// Decodes and checks everything that does not depend on the caller's expectations.
    ///
    /// # Errors
    /// [`ShmOpenError::TooSmall`], [`NotShmkit`](ShmOpenError::NotShmkit),
    /// [`NotReady`](ShmOpenError::NotReady) (version 0),
    /// [`VersionMismatch`](ShmOpenError::VersionMismatch) or
    /// [`Corrupted`](ShmOpenError::Corrupted). Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Header, ShmOpenError> {
        let Some(raw) = bytes.get(..HEADER_SIZE) else {
            return Err(ShmOpenError::TooSmall { size: bytes.len() as u64 });
        };
        let h: Header = bytemuck::pod_read_unaligned(raw);
        if h.magic != MAGIC {
            return Err(ShmOpenError::NotShmkit);
        }
        if h.version == 0 {
            return Err(ShmOpenError::NotReady);
        }
        if h.version != LAYOUT_VERSION {
            return Err(ShmOpenError::VersionMismatch { found: h.version, expected: LAYOUT_VERSION });
        }
        if h.checksum != h.compute_checksum() {
            return Err(ShmOpenError::Corrupted("checksum mismatch"));
        }
        if h.payload_offset as usize != PAYLOAD_OFFSET {
            return Err(ShmOpenError::Corrupted("payload offset"));
        }
        if h.total_size < PAYLOAD_OFFSET as u64 || h.total_size > isize::MAX as u64 {
            return Err(ShmOpenError::Corrupted("total size"));
        }
        if h.flags & !KNOWN_FLAGS != 0 || (h.flags & BACKING_MASK) == BACKING_MASK {
            return Err(ShmOpenError::Corrupted("unknown flags"));
        }
        if h.kind == 0 {
            return Err(ShmOpenError::Corrupted("kind 0"));
        }
        Ok(h)
    }

    /// Checks a decoded header against what the opener expects.
    ///
    /// # Errors
    /// [`ShmOpenError::SizeMismatch`] if `actual_size` (the file's size) differs from
    /// `total_size`; [`ShmOpenError::WrongKind`] if the kind or its tag differ.
    pub fn check(&self, expected: Kind, actual_size: u64) -> Result<(), ShmOpenError> {
        if self.total_size != actual_size {
            return Err(ShmOpenError::SizeMismatch { header: self.total_size, actual: actual_size });
        }
        if self.kind() != expected {
            return Err(ShmOpenError::WrongKind { found: self.kind(), expected });
        }
        Ok(())
    }

    /// The recorded kind.
    pub fn kind(&self) -> Kind {
        Kind::new(self.kind, self.kind_tag)
    }

    /// The recorded creator.
    pub fn creator(&self) -> ProcessToken {
        ProcessToken { pid: self.creator_pid, start: self.creator_start }
    }

    /// Whether the segment was created to outlive its creator.
    pub fn is_persistent(&self) -> bool {
        self.flags & FLAG_PERSISTENT != 0
    }

    /// How the segment is backed.
    pub fn backing(&self) -> Backing {
        match (self.flags & BACKING_MASK) >> BACKING_SHIFT {
            1 => Backing::Named,
            2 => Backing::Memfd,
            _ => Backing::Anonymous,
        }
    }

    /// Payload bytes (total size less the header region).
    pub fn payload_len(&self) -> u64 {
        self.total_size.saturating_sub(PAYLOAD_OFFSET as u64)
    }
}

/// FNV-1a, 64-bit: a few lines, no dependency; used for type tags, not for security.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}
