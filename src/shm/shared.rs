//! `Shared<T>`: one object in a segment, with the segment kept alive — the common handle
//! under every primitive (standalone, anonymous for fork, or inside a caller's segment).

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use super::error::{OffsetError, ShmCreateError, ShmOpenError};
use super::header::Kind;
use super::offset::{Layout, Offset, Shareable};
use super::segment::Segment;

/// A `T` living in a [`Segment`] that this handle keeps mapped. Cloning is cheap (an `Arc`).
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmkit::shm::{Kind, Shared};
///
/// let counter = Shared::<AtomicU64>::anonymous(Kind::RAW, |c| c.store(10, Ordering::Relaxed))?;
/// counter.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(counter.load(Ordering::Relaxed), 11);
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
pub struct Shared<T> {
    seg: Arc<Segment>,
    ptr: NonNull<T>,
}

// SAFETY: T is Shareable (atomics only, any bytes valid), so &T may be used from any thread;
// the Arc keeps the mapping alive.
unsafe impl<T: Shareable> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Shareable> Sync for Shared<T> {}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared { seg: self.seg.clone(), ptr: self.ptr }
    }
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("segment", &self.seg.name()).field("ptr", &self.ptr).finish()
    }
}

impl<T: Shareable> Shared<T> {
    fn first() -> Offset<T> {
        let mut l = Layout::new();
        l.push::<T>()
    }

    /// The object at `at` in `seg`.
    ///
    /// # Errors
    /// [`OffsetError`] if it does not fit the payload or is misaligned.
    pub fn at(seg: Arc<Segment>, at: Offset<T>) -> Result<Self, OffsetError> {
        let ptr = NonNull::from(seg.get(at)?);
        Ok(Shared { seg, ptr })
    }

    /// A new anonymous segment (shared with children forked later) holding one `T`,
    /// initialised by `init` before anyone can see it.
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn anonymous(kind: Kind, init: impl FnOnce(&T)) -> Result<Self, ShmCreateError> {
        let seg = Segment::builder(kind, std::mem::size_of::<T>()).anonymous()?;
        Self::init_and_publish(seg, init)
    }

    /// A new named segment (mode 0600, unlinked when this handle's segment drops in the
    /// creating process) holding one `T`, initialised by `init` before it is published.
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str, kind: Kind, init: impl FnOnce(&T)) -> Result<Self, ShmCreateError> {
        let seg = Segment::builder(kind, std::mem::size_of::<T>()).named(name)?;
        Self::init_and_publish(seg, init)
    }

    fn init_and_publish(seg: super::NewSegment, init: impl FnOnce(&T)) -> Result<Self, ShmCreateError> {
        let first = Self::first();
        // The payload was sized for one T and the payload start is 128-aligned.
        let obj = seg.get(first)?;
        init(obj);
        let seg = Arc::new(seg.publish());
        Ok(Self::at(seg, first)?)
    }

    /// Opens the named segment created by [`Shared::create`] with the same `kind`.
    ///
    /// # Errors
    /// As [`Segment::open`]; [`ShmOpenError::Corrupted`] if the payload is too small for `T`.
    pub fn open(name: &str, kind: Kind) -> Result<Self, ShmOpenError> {
        let seg = Arc::new(Segment::open(name, kind)?);
        Self::at(seg, Self::first()).map_err(|_| ShmOpenError::Corrupted("payload too small for the object"))
    }

    /// The segment holding the object.
    pub fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }
}

impl<T: Shareable> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `ptr` was checked in bounds and aligned by `Segment::get`; the Arc keeps the
        // mapping alive; T is Shareable.
        unsafe { self.ptr.as_ref() }
    }
}
