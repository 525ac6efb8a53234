//! The shared layout under every value type: a 64-byte header (a robust lock, the element
//! size, alignment and count), then the elements from a 128-aligned offset.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 24 | [`RawLock`] (unused by the raw types) |
//! | 24 | 8 | element size |
//! | 32 | 8 | element alignment |
//! | 40 | 8 | element count |
//! | 48 | 8 | object kind (the segment kind code: value, array, raw value, raw array) |
//! | 56 | 8 | element type tag ([`Kind::tag_of`]) |
//! | 128 | size × count | the elements |
//!
//! The element count is read once, when a process attaches, checked against the segment,
//! and never re-read: a peer that rewrites it later changes nothing.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

use bytemuck::Pod;

use super::ValueError;
use crate::primitive::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use crate::shm::{Kind, Offset, Segment, Shareable};
use crate::sync::Lock;
use crate::sync::RawLock;

/// The header of a value or array in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct CellsHeader {
    pub(crate) lock: RawLock,
    elem_size: AtomicU64,
    elem_align: AtomicU64,
    len: AtomicU64,
    kind: AtomicU64,
    tag: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<CellsHeader>() == 64);

// SAFETY: a RawLock and u64 atomics, `#[repr(C)]`; any bytes are either a lock state the lock
// handles or sizes that `attach` validates before use.
unsafe impl Shareable for CellsHeader {}

/// Where the elements start, relative to the header.
pub(crate) const DATA_AT: usize = 128;

/// The largest element alignment supported (the data offset's alignment).
pub(crate) const MAX_ALIGN: usize = DATA_AT;

/// Payload bytes for `len` elements of `T` after the header.
pub(crate) fn size_for<T>(len: usize) -> Result<usize, ValueError> {
    std::mem::size_of::<T>().checked_mul(len).and_then(|b| b.checked_add(DATA_AT)).ok_or(ValueError::TooLarge)
}

/// The fields of a [`CellsHeader`], as read from shared memory or as an opener expects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellsFields {
    /// Element size in bytes.
    pub elem_size: u64,
    /// Element alignment in bytes.
    pub elem_align: u64,
    /// Element count (ignored in the expected fields).
    pub len: u64,
    /// Object kind: the segment kind code of a value, array, raw value or raw array.
    pub kind: u64,
    /// Element type tag ([`Kind::tag_of`]).
    pub tag: u64,
}

/// Checks header fields read from shared memory against what the opener expects and the
/// `room` in bytes from the header to the end of the segment; returns the element count.
/// This is the decoder the fuzz target drives.
///
/// # Errors
/// [`ValueError::Mismatch`] for another object kind, element type, size or alignment;
/// [`ValueError::Corrupted`] for a count that does not fit `room` bytes.
///
/// # Examples
/// ```
/// use shmkit::value::cells::{check_header, CellsFields};
///
/// let want = CellsFields { elem_size: 4, elem_align: 4, len: 0, kind: 15, tag: 7 };
/// assert_eq!(check_header(CellsFields { len: 3, ..want }, want, 128 + 12).unwrap(), 3);
/// assert!(check_header(CellsFields { len: 4, ..want }, want, 128 + 12).is_err()); // too long
/// assert!(check_header(CellsFields { len: u64::MAX, ..want }, want, 1 << 20).is_err());
/// assert!(check_header(CellsFields { len: 1, tag: 8, ..want }, want, 1 << 20).is_err());
/// ```
pub fn check_header(found: CellsFields, want: CellsFields, room: usize) -> Result<usize, ValueError> {
    if found.kind != want.kind || found.tag != want.tag {
        return Err(ValueError::Mismatch {
            what: "object kind or element type",
            found_size: found.elem_size,
            found_align: found.elem_align,
        });
    }
    if found.elem_size != want.elem_size || found.elem_align != want.elem_align {
        return Err(ValueError::Mismatch {
            what: "element size or alignment",
            found_size: found.elem_size,
            found_align: found.elem_align,
        });
    }
    let corrupted = || ValueError::Corrupted("element count larger than the segment");
    let len = usize::try_from(found.len).map_err(|_| corrupted())?;
    let size = usize::try_from(want.elem_size).map_err(|_| corrupted())?;
    let end = size.checked_mul(len).and_then(|b| b.checked_add(DATA_AT)).ok_or_else(corrupted)?;
    if end > room {
        return Err(corrupted());
    }
    Ok(len)
}

/// What the cells at payload offset `at` of `seg` record, for [`crate::inspect`]: the header's
/// fields, each checked as [`check_header`] checks them against the segment's `kind`; the lock
/// of the locked kinds; and the bytes of a value of at most 8 bytes. Relaxed loads only (the
/// segment may be mapped read-only); nothing is locked. A count is never used to read
/// elements: only a single value's bytes are read, after its size was bounded.
pub(crate) fn view(seg: &Segment, at: usize, kind: Kind) -> crate::inspect::Contents {
    use super::{KIND_ARRAY, KIND_RAW_VALUE, KIND_VALUE};
    use crate::inspect::{CellsView, Contents};

    let Ok(h) = seg.get::<CellsHeader>(Offset::new(at)) else {
        return Contents::Corrupted("payload too small for a value header");
    };
    // Relaxed (every load here): a snapshot for display, maybe of read-only memory.
    let object = h.kind.load(Ordering::Relaxed);
    let elem_size = h.elem_size.load(Ordering::Relaxed);
    let elem_align = h.elem_align.load(Ordering::Relaxed);
    let len = h.len.load(Ordering::Relaxed);
    let tag = h.tag.load(Ordering::Relaxed);
    let mut problems = Vec::new();
    if object != u64::from(kind.code) {
        problems.push("the header names another object kind than the segment");
    }
    if tag != kind.tag {
        problems.push("the header names another element type than the segment");
    }
    let sane_align = elem_align.is_power_of_two() && elem_align <= MAX_ALIGN as u64;
    if !sane_align || elem_size % elem_align.max(1) != 0 {
        problems.push("impossible element size or alignment");
    }
    let room = seg.payload_len().saturating_sub(at) as u64;
    let fits =
        elem_size.checked_mul(len).and_then(|b| b.checked_add(DATA_AT as u64)).is_some_and(|end| end <= room);
    if !fits {
        problems.push("element count larger than the segment");
    }
    let single = kind.code == KIND_VALUE || kind.code == KIND_RAW_VALUE;
    if single && len != 1 {
        problems.push("a value's element count is not 1");
    }
    let small = (1..=8).contains(&elem_size) && sane_align && elem_size % elem_align == 0;
    let bytes = (single && fits && len == 1 && small)
        .then(|| view_bytes(seg, at + DATA_AT, elem_size as usize, elem_align as usize))
        .flatten();
    let locked = kind.code == KIND_VALUE || kind.code == KIND_ARRAY;
    Contents::Cells(CellsView {
        object,
        elem_size,
        elem_align,
        len,
        tag,
        lock: locked.then(|| h.lock.view()),
        bytes,
        problems,
    })
}

/// The `size` bytes (at most 8) of one element at payload offset `off`, read with Relaxed
/// atomic loads of the width the writers use (see [`chunk`]: the alignment, at most 8 bytes).
fn view_bytes(seg: &Segment, off: usize, size: usize, align: usize) -> Option<Vec<u8>> {
    fn words<A: Shareable, const W: usize>(
        seg: &Segment,
        off: usize,
        size: usize,
        load: impl Fn(&A) -> [u8; W],
    ) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(size);
        for i in 0..size / W {
            // Bounds and alignment checked by `get`.
            out.extend_from_slice(&load(seg.get(Offset::<A>::new(off + i * W)).ok()?));
        }
        Some(out)
    }
    // Relaxed (all): a snapshot for display.
    match align.min(8) {
        8 => words::<AtomicU64, 8>(seg, off, size, |a| a.load(Ordering::Relaxed).to_ne_bytes()),
        4 => words::<AtomicU32, 4>(seg, off, size, |a| a.load(Ordering::Relaxed).to_ne_bytes()),
        2 => words::<AtomicU16, 2>(seg, off, size, |a| a.load(Ordering::Relaxed).to_ne_bytes()),
        _ => words::<AtomicU8, 1>(seg, off, size, |a| a.load(Ordering::Relaxed).to_ne_bytes()),
    }
}

/// How new cells are filled.
pub(crate) enum Init<'a, T> {
    /// A copy of these elements.
    Copy(&'a [T]),
    /// This many zeroed elements (fresh memory is zero: nothing to write).
    Zeroed(usize),
}

impl<T> Init<'_, T> {
    fn len(&self) -> usize {
        match self {
            Init::Copy(v) => v.len(),
            Init::Zeroed(n) => *n,
        }
    }
}

/// `len` elements of `T` in a segment, plus the lock of their header.
pub(crate) struct Cells<T> {
    seg: Arc<Segment>,
    data: NonNull<T>,
    len: usize,
    pub(crate) lock: Lock,
    _t: PhantomData<T>,
}

// SAFETY: the pointers refer into the segment `seg` keeps mapped; element access goes
// through atomics (or `&mut` under the lock), and T: Pod is Send + Sync.
unsafe impl<T: Pod> Send for Cells<T> {}
// SAFETY: as above.
unsafe impl<T: Pod> Sync for Cells<T> {}

impl<T> Clone for Cells<T> {
    fn clone(&self) -> Self {
        Cells {
            seg: self.seg.clone(),
            data: self.data,
            len: self.len,
            lock: self.lock.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod> Cells<T> {
    fn check_type() -> Result<(), ValueError> {
        if std::mem::align_of::<T>() > MAX_ALIGN {
            return Err(ValueError::Alignment(std::mem::align_of::<T>()));
        }
        Ok(())
    }

    /// The typed segment kind for `code`.
    pub(crate) fn kind(code: u32) -> Kind {
        Kind::new(code, Kind::tag_of::<T>())
    }

    fn want(code: u32) -> CellsFields {
        CellsFields {
            elem_size: std::mem::size_of::<T>() as u64,
            elem_align: std::mem::align_of::<T>() as u64,
            len: 0,
            kind: u64::from(code),
            tag: Kind::tag_of::<T>(),
        }
    }

    /// New cells in a new segment (named or anonymous), filled from `init`.
    pub(crate) fn create(code: u32, name: Option<&str>, init: Init<'_, T>) -> Result<Self, ValueError> {
        Self::check_type()?;
        let builder = Segment::builder(Self::kind(code), size_for::<T>(init.len())?);
        let seg = match name {
            Some(n) => builder.named(n)?,
            None => builder.anonymous()?,
        };
        // Fill before publishing: openers wait for publication, then see the values.
        Self::init_at(&seg, 0, code, init)?;
        Self::attach(Arc::new(seg.publish()), 0, code)
    }

    /// Writes a header and the elements at payload offset `at` of fresh (zeroed) memory.
    fn init_at(seg: &Segment, at: usize, code: u32, init: Init<'_, T>) -> Result<(), ValueError> {
        if at % DATA_AT != 0 {
            return Err(ValueError::Placement("offset not 128-aligned"));
        }
        let need = size_for::<T>(init.len())?;
        if at.checked_add(need).is_none_or(|end| end > seg.payload_len()) {
            return Err(ValueError::Placement("does not fit the segment"));
        }
        let h: &CellsHeader = seg.get(Offset::new(at)).map_err(|_| ValueError::Placement("header"))?;
        let len = init.len();
        if let Init::Copy(values) = init {
            // SAFETY: `at + DATA_AT + size × len <= payload_len` (checked above) and the
            // payload is 128-aligned, so the elements are in bounds and aligned.
            let data = unsafe { seg.payload_ptr().add(at + DATA_AT).cast::<T>() };
            for (i, v) in values.iter().enumerate() {
                // SAFETY: i < len, in bounds as above; nobody else sees this memory yet.
                unsafe { store(data.as_ptr().add(i), *v) };
            }
        }
        let want = Self::want(code);
        // Relaxed: publication of the segment (or the caller's own protocol for a placed
        // value) orders these before any opener reads them.
        h.elem_size.store(want.elem_size, Ordering::Relaxed);
        h.elem_align.store(want.elem_align, Ordering::Relaxed);
        h.kind.store(want.kind, Ordering::Relaxed);
        h.tag.store(want.tag, Ordering::Relaxed);
        // Release: an opener that sees the count (Acquire) sees the sizes and elements.
        h.len.store(len as u64, Ordering::Release);
        Ok(())
    }

    /// New cells at payload offset `at` of a caller's segment (zeroed, unused memory).
    pub(crate) fn create_at(
        seg: Arc<Segment>,
        at: usize,
        code: u32,
        init: Init<'_, T>,
    ) -> Result<Self, ValueError> {
        Self::check_type()?;
        Self::init_at(&seg, at, code, init)?;
        Self::attach(seg, at, code)
    }

    /// Cells of object kind `code` written earlier at payload offset `at`, with the header
    /// validated.
    pub(crate) fn attach(seg: Arc<Segment>, at: usize, code: u32) -> Result<Self, ValueError> {
        Self::check_type()?;
        if at % DATA_AT != 0 {
            return Err(ValueError::Placement("offset not 128-aligned"));
        }
        let room =
            seg.payload_len().checked_sub(at).ok_or(ValueError::Placement("offset past the segment"))?;
        let h: &CellsHeader = seg.get(Offset::new(at)).map_err(|_| ValueError::Placement("header"))?;
        // Acquire: pairs with the Release store of the count in `init_at`.
        let len = h.len.load(Ordering::Acquire);
        // Relaxed: ordered by the count's Acquire load.
        let found = CellsFields {
            elem_size: h.elem_size.load(Ordering::Relaxed),
            elem_align: h.elem_align.load(Ordering::Relaxed),
            len,
            kind: h.kind.load(Ordering::Relaxed),
            tag: h.tag.load(Ordering::Relaxed),
        };
        let len = check_header(found, Self::want(code), room)?;
        let lock = Lock::at(seg.clone(), Offset::new(at)).map_err(|_| ValueError::Placement("lock"))?;
        // SAFETY: `at + DATA_AT + size × len <= payload_len` (checked by `check_header`
        // against `room`), aligned as in `init_at`.
        let data = unsafe { seg.payload_ptr().add(at + DATA_AT).cast::<T>() };
        Ok(Cells { seg, data, len, lock, _t: PhantomData })
    }

    /// Opens named cells, checking kind (element type) and header.
    pub(crate) fn open(code: u32, name: &str) -> Result<Self, ValueError> {
        Self::check_type()?;
        let seg = Segment::open(name, Self::kind(code))?;
        Self::attach(Arc::new(seg), 0, code)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    /// The element pointer for index `i < len`.
    #[inline(always)]
    pub(crate) fn ptr(&self, i: usize) -> *mut T {
        debug_assert!(i < self.len.max(1));
        // SAFETY: callers pass i < len (or 0 for a Value, whose len is 1); in bounds.
        unsafe { self.data.as_ptr().add(i) }
    }

    pub(crate) fn data(&self) -> NonNull<T> {
        self.data
    }
}

/// The widest atomic access that tiles a `T`: its alignment, at most 8 bytes (sizes are
/// multiples of alignments in Rust).
#[inline(always)]
pub(crate) const fn chunk<T>() -> usize {
    let a = std::mem::align_of::<T>();
    if a >= 8 {
        8
    } else {
        a
    }
}

/// Whether one atomic access covers a whole `T`, so loads and stores are never torn.
#[inline(always)]
pub(crate) const fn single_access<T>() -> bool {
    std::mem::size_of::<T>() <= chunk::<T>()
}

macro_rules! tiled {
    ($src:expr, $dst:expr, $n:expr, $atomic:ty, $int:ty, load $ord:expr) => {{
        const W: usize = std::mem::size_of::<$int>();
        for i in 0..$n / W {
            // SAFETY: the caller guarantees `src` points to `n` readable bytes aligned to W
            // that are only accessed atomically or under a lock.
            let w = unsafe { (*$src.cast::<$atomic>().add(i)).load($ord) };
            $dst[i * W..(i + 1) * W].copy_from_slice(&w.to_ne_bytes());
        }
    }};
    ($src:expr, $dst:expr, $n:expr, $atomic:ty, $int:ty, store $ord:expr) => {{
        const W: usize = std::mem::size_of::<$int>();
        for i in 0..$n / W {
            let mut b = [0u8; W];
            b.copy_from_slice(&$src[i * W..(i + 1) * W]);
            // SAFETY: as for loads, writable.
            unsafe { (*$dst.cast::<$atomic>().add(i)).store(<$int>::from_ne_bytes(b), $ord) };
        }
    }};
}

/// Reads a `T` from shared memory with atomic accesses of [`chunk`] bytes (Acquire).
///
/// # Safety
/// `src` is valid for reads of a `T`, aligned, inside a live mapping.
#[inline(always)]
pub(crate) unsafe fn load<T: Pod>(src: *const T) -> T {
    let mut out = T::zeroed();
    let n = std::mem::size_of::<T>();
    let dst = bytemuck::bytes_of_mut(&mut out);
    let src = src.cast::<u8>();
    // Acquire: a value stored with Release publishes the writer's earlier writes (useful for
    // the unlocked raw types; free on x86).
    match chunk::<T>() {
        8 => tiled!(src, dst, n, AtomicU64, u64, load Ordering::Acquire),
        4 => tiled!(src, dst, n, AtomicU32, u32, load Ordering::Acquire),
        2 => tiled!(src, dst, n, AtomicU16, u16, load Ordering::Acquire),
        _ => tiled!(src, dst, n, AtomicU8, u8, load Ordering::Acquire),
    }
    out
}

/// Writes a `T` to shared memory with atomic accesses of [`chunk`] bytes (Release).
///
/// # Safety
/// `dst` is valid for writes of a `T`, aligned, inside a live mapping.
#[inline(always)]
pub(crate) unsafe fn store<T: Pod>(dst: *mut T, v: T) {
    let n = std::mem::size_of::<T>();
    let src = bytemuck::bytes_of(&v);
    let dst = dst.cast::<u8>();
    // Release: pairs with the Acquire in `load`.
    match chunk::<T>() {
        8 => tiled!(src, dst, n, AtomicU64, u64, store Ordering::Release),
        4 => tiled!(src, dst, n, AtomicU32, u32, store Ordering::Release),
        2 => tiled!(src, dst, n, AtomicU16, u16, store Ordering::Release),
        _ => tiled!(src, dst, n, AtomicU8, u8, store Ordering::Release),
    }
}
