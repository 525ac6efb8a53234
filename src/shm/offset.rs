//! Placing objects in a segment: typed offsets, never pointers.
//!
//! Each process maps a segment at its own address, so objects are found by their offset
//! from the start of the payload. A [`Layout`] hands out aligned offsets in order; the
//! creator and every opener build the same layout and get the same offsets.

use std::marker::PhantomData;

use crossbeam_utils::CachePadded;

use crate::primitive::atomic::{
    AtomicI32, AtomicI64, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize,
};

/// Types that may live in shared memory and be used through `&T` by several processes.
///
/// # Safety
/// Implementors guarantee that:
/// - every bit pattern is a valid value (a fresh segment is all zeros, and a peer may write
///   anything), so no `bool`, `char`, enums or references, only integers and atomics;
/// - the type holds no pointers or file descriptors (they mean nothing in another process);
/// - every mutation through `&T` goes through atomics, so concurrent use from several
///   processes is not a data race.
///
/// # Examples
/// ```
/// use std::sync::atomic::AtomicU64;
/// use shmkit::shm::Shareable;
///
/// #[repr(C)]
/// struct Counters { hits: AtomicU64, misses: AtomicU64 }
/// // SAFETY: two atomics; any bits are valid counts; no pointers.
/// unsafe impl Shareable for Counters {}
/// ```
pub unsafe trait Shareable: Sync {}

// SAFETY: integer atomics accept any bit pattern and synchronise all their mutations.
unsafe impl Shareable for AtomicU8 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicU16 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicU32 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicU64 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicI32 {}
// SAFETY: as above.
unsafe impl Shareable for AtomicI64 {}
// SAFETY: as above; all processes on one machine agree on usize's width.
unsafe impl Shareable for AtomicUsize {}
// SAFETY: CachePadded is `#[repr(C)]`-like padding around T with the value at offset 0;
// padding bytes are never read.
unsafe impl<T: Shareable> Shareable for CachePadded<T> {}
// SAFETY: an array of Shareable elements is Shareable element-wise.
unsafe impl<T: Shareable, const N: usize> Shareable for [T; N] {}
// SAFETY: WaitCell is two AtomicU32 words, `#[repr(C)]`.
unsafe impl Shareable for crate::futex::WaitCell {}

/// Where one `T` sits, relative to the start of a segment's payload.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Offset<T> {
    pub(crate) offset: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Offset<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Offset<T> {}

impl<T> Offset<T> {
    /// An offset from a raw byte count; [`Segment::get`](super::Segment::get) checks bounds and
    /// alignment before use.
    pub const fn new(offset: usize) -> Self {
        Offset { offset, _type: PhantomData }
    }

    /// The byte offset from the start of the payload.
    pub const fn get(self) -> usize {
        self.offset
    }
}

/// Where `len` consecutive `T`s sit, relative to the start of a segment's payload.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SliceOffset<T> {
    pub(crate) offset: usize,
    pub(crate) len: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for SliceOffset<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SliceOffset<T> {}

impl<T> SliceOffset<T> {
    /// A slice position from raw parts; checked when used.
    pub const fn new(offset: usize, len: usize) -> Self {
        SliceOffset { offset, len, _type: PhantomData }
    }

    /// The byte offset of the first element from the start of the payload.
    pub const fn get(self) -> usize {
        self.offset
    }

    /// The number of elements.
    pub const fn len(self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub const fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// Hands out aligned payload offsets for a sequence of objects.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU32, AtomicU64};
/// use shmkit::shm::{Kind, Layout, Segment};
///
/// let mut layout = Layout::new();
/// let count = layout.push::<AtomicU64>();
/// let flags = layout.push_slice::<AtomicU32>(16);
/// let seg = Segment::anonymous(Kind::RAW, layout.size())?;
/// seg.get(count)?.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
/// assert_eq!(seg.get_slice(flags)?.len(), 16);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Layout {
    size: usize,
}

impl Layout {
    /// An empty layout.
    pub const fn new() -> Self {
        Layout { size: 0 }
    }

    /// Reserves `size` bytes at the next multiple of `align`. On overflow the layout's size
    /// sticks at `usize::MAX`, which no segment accepts, so creation fails with
    /// `InvalidSize` instead of anything panicking here.
    fn reserve(&mut self, size: Option<usize>, align: usize) -> usize {
        let start = self.size.checked_next_multiple_of(align);
        match (start, size) {
            (Some(start), Some(size)) if self.size != usize::MAX => {
                self.size = start.saturating_add(size);
                start
            }
            _ => {
                self.size = usize::MAX;
                usize::MAX
            }
        }
    }

    /// Reserves room for one `T`.
    pub fn push<T: Shareable>(&mut self) -> Offset<T> {
        Offset::new(self.reserve(Some(std::mem::size_of::<T>()), std::mem::align_of::<T>()))
    }

    /// Reserves room for `len` consecutive `T`s.
    pub fn push_slice<T: Shareable>(&mut self, len: usize) -> SliceOffset<T> {
        let bytes = std::mem::size_of::<T>().checked_mul(len);
        SliceOffset::new(self.reserve(bytes, std::mem::align_of::<T>()), len)
    }

    /// Payload bytes needed so far; `usize::MAX` once the layout has overflowed.
    pub const fn size(&self) -> usize {
        self.size
    }
}
