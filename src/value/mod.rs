//! Shared values and arrays: `multiprocessing.Value`, `Array`, `RawValue` and `RawArray`.
//!
//! | type | holds | synchronisation |
//! |---|---|---|
//! | [`Value<T>`] | one `T: Pod` | its own robust [`Lock`]; `lock()` gives a guard for read-modify-write |
//! | [`RawValue<T>`] | one `T: Pod` | none: each access is atomic per 8-byte word |
//! | [`Array<T>`] | `len` `T`s, fixed | its own robust [`Lock`]; `lock()` gives `&mut [T]` |
//! | [`RawArray<T>`] | `len` `T`s, fixed | none, as [`RawValue`] |
//!
//! Integer values ([`Integer`]: `u8`…`u64`, `i8`…`i64`, `usize`, `isize`) also offer
//! lock-free `fetch_add`, `fetch_sub`, `swap`, `compare_exchange` and friends.
//!
//! Each lives in a segment: anonymous (`new`: shared with children forked afterwards), named
//! (`create` / `open`: the kind carries the element type, and the header's element size,
//! alignment and count are checked against the segment), or at an offset of a caller's
//! segment (`create_at` / `open_at`, `size_for`). See [`cells`] for the byte layout.
//!
//! # Failure
//! - A [`Value`] guard works on a copy and writes it back when dropped, so a holder killed
//!   mid-update leaves the old value (the next holder gets [`OwnerDied`]), and a guard
//!   dropped by a panic writes nothing (the lock is released normally). Only a holder killed
//!   during the write-back itself (a few stores, for a `T` above 8 bytes) can leave a
//!   half-written value; `OwnerDied` reports it too.
//! - Placing objects with `create_at` at overlapping offsets of one segment is a caller
//!   error that shmkit does not detect (as for every placed object). An [`Array`] guard writes in place: after `OwnerDied`, the array may
//!   be half-updated, as in any locked data structure.
//! - A placed object's header names its kind and element type too, so `open_at` refuses a
//!   `RawArray` where an `Array` was made, or `i64` where `u64` was.
//! - The element count is read and checked once per process; an index is checked against
//!   that copy, so a peer scribbling on the header cannot cause an out-of-bounds access.

pub mod cells;

mod array;
mod scalar;

use std::fmt;

pub use array::{Array, ArrayGuard, RawArray};
pub use scalar::{RawValue, Value, ValueGuard};

#[cfg(doc)]
use crate::sync::{Lock, OwnerDied};

use crate::shm::{ShmCreateError, ShmOpenError};

pub(crate) const KIND_VALUE: u32 = 14;
pub(crate) const KIND_ARRAY: u32 = 15;
pub(crate) const KIND_RAW_VALUE: u32 = 16;
pub(crate) const KIND_RAW_ARRAY: u32 = 17;

/// What a value or array segment holds, for [`crate::inspect`]: the header and lock at
/// payload offset 0 (see [`cells`]), read without being used.
pub(crate) fn inspect(seg: &crate::shm::Segment, kind: crate::shm::Kind) -> crate::inspect::Contents {
    cells::view(seg, 0, kind)
}

/// Why a value or array could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Creating the segment failed.
    #[error(transparent)]
    Create(#[from] ShmCreateError),
    /// Opening the segment failed (including a segment of another kind or element type).
    #[error(transparent)]
    Open(#[from] ShmOpenError),
    /// The header names another object kind, element type, size or alignment than the
    /// opener's.
    #[error("{what} differs: the header holds {found_size}-byte elements aligned to {found_align}")]
    Mismatch {
        /// What differs.
        what: &'static str,
        /// Element size found in the header.
        found_size: u64,
        /// Element alignment found in the header.
        found_align: u64,
    },
    /// The header is impossible (a count that does not fit its segment).
    #[error("corrupted value header: {0}")]
    Corrupted(&'static str),
    /// `len × size_of::<T>()` overflows.
    #[error("array too large")]
    TooLarge,
    /// The element type's alignment is above 128 bytes.
    #[error("element alignment {0} above the supported 128")]
    Alignment(usize),
    /// A placement in a caller's segment that does not fit or is misaligned.
    #[error("bad placement: {0}")]
    Placement(&'static str),
}

/// An index at or past the end of an array; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("index {index} out of range for an array of {len}")]
pub struct OutOfRange {
    /// The index asked for.
    pub index: usize,
    /// The array's length.
    pub len: usize,
}

/// Integer types with lock-free read-modify-write operations on shared values.
///
/// Sealed: implemented for `u8`, `u16`, `u32`, `u64`, `usize`, `i8`, `i16`, `i32`, `i64`
/// and `isize`.
pub trait Integer: bytemuck::Pod + fmt::Debug + PartialEq + private::Sealed {}

pub(crate) use private::Rmw;

mod private {
    /// The read-modify-write operations, in one place for the value types.
    #[derive(Clone, Copy, Debug)]
    pub enum Rmw {
        Add,
        Sub,
        And,
        Or,
        Xor,
        Max,
        Min,
        Swap,
    }

    pub trait Sealed: Sized {
        /// # Safety
        /// `p` is aligned, valid and only accessed atomically while this runs.
        unsafe fn rmw(p: *mut Self, op: Rmw, v: Self) -> Self;
        /// # Safety
        /// As for `rmw`.
        unsafe fn cas(p: *mut Self, current: Self, new: Self) -> Result<Self, Self>;
    }
}

macro_rules! integer {
    ($($int:ty => $atomic:ident),* $(,)?) => {$(
        impl private::Sealed for $int {
            #[inline]
            unsafe fn rmw(p: *mut Self, op: Rmw, v: Self) -> Self {
                use crate::primitive::atomic::{$atomic, Ordering::SeqCst};
                // SAFETY: the caller guarantees alignment and validity; `$atomic` has the
                // size and alignment of `$int`.
                let a = unsafe { &*p.cast::<$atomic>() };
                // SeqCst: these stand in for Python's locked `+=`; one total order is the
                // least surprising, and costs nothing more than AcqRel for an RMW on x86.
                match op {
                    Rmw::Add => a.fetch_add(v, SeqCst),
                    Rmw::Sub => a.fetch_sub(v, SeqCst),
                    Rmw::And => a.fetch_and(v, SeqCst),
                    Rmw::Or => a.fetch_or(v, SeqCst),
                    Rmw::Xor => a.fetch_xor(v, SeqCst),
                    Rmw::Max => a.fetch_max(v, SeqCst),
                    Rmw::Min => a.fetch_min(v, SeqCst),
                    Rmw::Swap => a.swap(v, SeqCst),
                }
            }
            #[inline]
            unsafe fn cas(p: *mut Self, current: Self, new: Self) -> Result<Self, Self> {
                use crate::primitive::atomic::{$atomic, Ordering::SeqCst};
                // SAFETY: as in `rmw`.
                let a = unsafe { &*p.cast::<$atomic>() };
                // SeqCst: as in `rmw`.
                a.compare_exchange(current, new, SeqCst, SeqCst)
            }
        }
        impl Integer for $int {}
    )*};
}

integer!(
    u8 => AtomicU8, u16 => AtomicU16, u32 => AtomicU32, u64 => AtomicU64, usize => AtomicUsize,
    i8 => AtomicI8, i16 => AtomicI16, i32 => AtomicI32, i64 => AtomicI64, isize => AtomicIsize,
);
