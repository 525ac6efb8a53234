//! `Array<T>` (locked) and `RawArray<T>` (unlocked): a fixed number of `T`s in shared memory.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use super::cells::{self, Cells, Init};
use super::{OutOfRange, ValueError, KIND_ARRAY, KIND_RAW_ARRAY};
use crate::shm::Segment;
use crate::sync::{Lock, LockGuard, LockResult, LockTimeoutError, OwnerDied};

/// A fixed-length array of `T` in shared memory with its own robust lock, like
/// `multiprocessing.Array`.
///
/// Every method takes the lock; [`lock`](Array::lock) gives a guard that derefs to
/// `&mut [T]` for several reads and writes at once. Indices are checked against the length
/// this process read when it attached: out of range is an [`OutOfRange`] error (or `None`),
/// never a write. Not re-entrant (see [`Value`](super::Value)).
///
/// # Examples
/// ```
/// use shmkit::value::Array;
///
/// let a = Array::from_slice(&[0i32, 1, 2, 3, 4])?; // anonymous: inherited by fork
/// a.set(0, 10).unwrap();
/// assert!(a.set(5, 1).is_err()); // out of range: nothing written
/// {
///     let mut g = a.lock().unwrap_or_else(|died| died.into_inner());
///     for x in g.iter_mut() {
///         *x = -*x;
///     }
/// }
/// assert_eq!(a.to_vec(), [-10, -1, -2, -3, -4]);
/// assert_eq!(a.get(1), Some(-1));
/// # Ok::<(), shmkit::value::ValueError>(())
/// ```
pub struct Array<T> {
    cells: Cells<T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array { cells: self.cells.clone() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("len", &self.len())
            .field("locked_by", &self.cells.lock.owner())
            .finish()
    }
}

/// Holds an [`Array`]'s lock; derefs to its elements.
#[must_use = "if unused the array's lock is released at once"]
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    _lock: LockGuard<'a>,
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` elements from `data` are in the mapping (checked at attach),
        // aligned; we hold the lock, and every other access to a locked array's elements
        // happens under it, so nothing writes them while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.array.cells.data().as_ptr(), self.array.len()) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow in this process,
        // and the lock excludes other processes.
        unsafe { std::slice::from_raw_parts_mut(self.array.cells.data().as_ptr(), self.array.len()) }
    }
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// Declares the array consistent after an [`OwnerDied`] (see [`Lock`]).
    pub fn mark_consistent(this: &Self) {
        LockGuard::mark_consistent(&this._lock);
    }
}

impl<T: Pod> Array<T> {
    /// An array holding a copy of `init`, in a new anonymous segment.
    ///
    /// # Errors
    /// [`ValueError::Create`], [`ValueError::TooLarge`], [`ValueError::Alignment`].
    pub fn from_slice(init: &[T]) -> Result<Self, ValueError> {
        Ok(Array { cells: Cells::create(KIND_ARRAY, None, Init::Copy(init))? })
    }

    /// An array of `len` zeroed elements (Python's `Array('i', 10)`).
    ///
    /// # Errors
    /// As [`Array::from_slice`].
    pub fn zeroed(len: usize) -> Result<Self, ValueError> {
        Ok(Self { cells: Cells::create(KIND_ARRAY, None, Init::Zeroed(len))? })
    }

    /// An array of the items of `iter` (Python's `Array('i', range(10))`).
    ///
    /// # Errors
    /// As [`Array::from_slice`].
    pub fn from_items(iter: impl IntoIterator<Item = T>) -> Result<Self, ValueError> {
        Self::from_slice(&iter.into_iter().collect::<Vec<T>>())
    }

    /// An array holding a copy of `init` in a new named segment.
    ///
    /// # Errors
    /// As [`Array::from_slice`], or the name is taken or invalid.
    pub fn create(name: &str, init: &[T]) -> Result<Self, ValueError> {
        Ok(Array { cells: Cells::create(KIND_ARRAY, Some(name), Init::Copy(init))? })
    }

    /// Opens an array made by [`Array::create`] with the same `T`; its length is read from
    /// the segment and checked against the segment's size.
    ///
    /// # Errors
    /// [`ValueError::Open`] (including `WrongKind` for another element type),
    /// [`ValueError::Mismatch`], [`ValueError::Corrupted`].
    pub fn open(name: &str) -> Result<Self, ValueError> {
        Ok(Array { cells: Cells::open(KIND_ARRAY, name)? })
    }

    /// Payload bytes an array of `len` elements takes in a caller's segment.
    ///
    /// # Errors
    /// [`ValueError::TooLarge`] on overflow.
    pub fn size_for(len: usize) -> Result<usize, ValueError> {
        cells::size_for::<T>(len)
    }

    /// A new array holding `init` at payload offset `at` (128-aligned, zeroed, unused).
    ///
    /// # Errors
    /// [`ValueError::Placement`] if it does not fit or `at` is misaligned.
    pub fn create_at(seg: Arc<Segment>, at: usize, init: &[T]) -> Result<Self, ValueError> {
        Ok(Array { cells: Cells::create_at(seg, at, KIND_ARRAY, Init::Copy(init))? })
    }

    /// The array made by [`Array::create_at`] at `at` in `seg`.
    ///
    /// # Errors
    /// As [`Array::open`].
    pub fn open_at(seg: Arc<Segment>, at: usize) -> Result<Self, ValueError> {
        Ok(Array { cells: Cells::attach(seg, at, KIND_ARRAY)? })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn locked(&self) -> ArrayGuard<'_, T> {
        self.lock().unwrap_or_else(OwnerDied::into_inner)
    }

    /// Element `i` (under the lock), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        if i >= self.len() {
            return None;
        }
        Some(self.locked()[i])
    }

    /// Sets element `i` (under the lock).
    ///
    /// # Errors
    /// [`OutOfRange`] if `i >= len`; nothing is written.
    pub fn set(&self, i: usize, v: T) -> Result<(), OutOfRange> {
        if i >= self.len() {
            return Err(OutOfRange { index: i, len: self.len() });
        }
        self.locked()[i] = v;
        Ok(())
    }

    /// A copy of every element, taken under the lock.
    pub fn to_vec(&self) -> Vec<T> {
        self.locked().to_vec()
    }

    /// Overwrites every element from `src` (under the lock).
    ///
    /// # Errors
    /// [`OutOfRange`] (index = `src.len()`) if the lengths differ; nothing is written.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), OutOfRange> {
        if src.len() != self.len() {
            return Err(OutOfRange { index: src.len(), len: self.len() });
        }
        self.locked().copy_from_slice(src);
        Ok(())
    }

    /// Takes the lock; the guard derefs to `&mut [T]`.
    ///
    /// # Errors
    /// [`OwnerDied`] (holding the guard) if a holder died: the elements may be half-updated.
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        match self.cells.lock.lock() {
            Ok(g) => Ok(ArrayGuard { array: self, _lock: g }),
            Err(OwnerDied(g)) => Err(OwnerDied(ArrayGuard { array: self, _lock: g })),
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockTimeoutError::Timeout`], or `OwnerDied` holding the guard.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ArrayGuard<'_, T>, LockTimeoutError<ArrayGuard<'_, T>>> {
        match self.cells.lock.lock_timeout(timeout) {
            Ok(g) => Ok(ArrayGuard { array: self, _lock: g }),
            Err(LockTimeoutError::OwnerDied(g)) => {
                Err(LockTimeoutError::OwnerDied(ArrayGuard { array: self, _lock: g }))
            }
            Err(LockTimeoutError::Timeout) => Err(LockTimeoutError::Timeout),
        }
    }

    /// The array's lock (Python's `get_lock()`); see [`Value::get_lock`](super::Value::get_lock).
    pub fn get_lock(&self) -> &Lock {
        &self.cells.lock
    }

    /// The segment holding the array.
    pub fn segment(&self) -> &Arc<Segment> {
        self.cells.segment()
    }
}

/// A fixed-length array of `T` in shared memory without a lock, like
/// `multiprocessing.RawArray`. Each element access is atomic per aligned word, as for
/// [`RawValue`](super::RawValue).
///
/// # Examples
/// ```
/// use shmkit::value::RawArray;
///
/// let a = RawArray::<u64>::zeroed(4)?;
/// a.set(3, 7).unwrap();
/// assert_eq!(a.get(3), Some(7));
/// assert_eq!(a.get(4), None);
/// assert_eq!(a.to_vec(), [0, 0, 0, 7]);
/// # Ok::<(), shmkit::value::ValueError>(())
/// ```
pub struct RawArray<T> {
    cells: Cells<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray { cells: self.cells.clone() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray").field("len", &self.len()).finish()
    }
}

impl<T: Pod> RawArray<T> {
    /// A raw array holding a copy of `init`, in a new anonymous segment.
    ///
    /// # Errors
    /// As [`Array::from_slice`].
    pub fn from_slice(init: &[T]) -> Result<Self, ValueError> {
        Ok(RawArray { cells: Cells::create(KIND_RAW_ARRAY, None, Init::Copy(init))? })
    }

    /// A raw array of `len` zeroed elements.
    ///
    /// # Errors
    /// As [`Array::from_slice`].
    pub fn zeroed(len: usize) -> Result<Self, ValueError> {
        Ok(Self { cells: Cells::create(KIND_RAW_ARRAY, None, Init::Zeroed(len))? })
    }

    /// A raw array of the items of `iter`.
    ///
    /// # Errors
    /// As [`Array::from_slice`].
    pub fn from_items(iter: impl IntoIterator<Item = T>) -> Result<Self, ValueError> {
        Self::from_slice(&iter.into_iter().collect::<Vec<T>>())
    }

    /// A raw array holding `init` in a new named segment.
    ///
    /// # Errors
    /// As [`Array::create`].
    pub fn create(name: &str, init: &[T]) -> Result<Self, ValueError> {
        Ok(RawArray { cells: Cells::create(KIND_RAW_ARRAY, Some(name), Init::Copy(init))? })
    }

    /// Opens a raw array made by [`RawArray::create`] with the same `T`.
    ///
    /// # Errors
    /// As [`Array::open`].
    pub fn open(name: &str) -> Result<Self, ValueError> {
        Ok(RawArray { cells: Cells::open(KIND_RAW_ARRAY, name)? })
    }

    /// Payload bytes a raw array of `len` elements takes in a caller's segment.
    ///
    /// # Errors
    /// [`ValueError::TooLarge`] on overflow.
    pub fn size_for(len: usize) -> Result<usize, ValueError> {
        cells::size_for::<T>(len)
    }

    /// A new raw array holding `init` at payload offset `at` of `seg`.
    ///
    /// # Errors
    /// As [`Array::create_at`].
    pub fn create_at(seg: Arc<Segment>, at: usize, init: &[T]) -> Result<Self, ValueError> {
        Ok(RawArray { cells: Cells::create_at(seg, at, KIND_RAW_ARRAY, Init::Copy(init))? })
    }

    /// The raw array at `at` in `seg`.
    ///
    /// # Errors
    /// As [`Array::open`].
    pub fn open_at(seg: Arc<Segment>, at: usize) -> Result<Self, ValueError> {
        Ok(RawArray { cells: Cells::attach(seg, at, KIND_RAW_ARRAY)? })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` (Acquire, per word), or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        // SAFETY: i < len, checked; read with atomics.
        (i < self.len()).then(|| unsafe { cells::load(self.cells.ptr(i)) })
    }

    /// Sets element `i` (Release, per word).
    ///
    /// # Errors
    /// [`OutOfRange`] if `i >= len`; nothing is written.
    pub fn set(&self, i: usize, v: T) -> Result<(), OutOfRange> {
        if i >= self.len() {
            return Err(OutOfRange { index: i, len: self.len() });
        }
        // SAFETY: i < len, checked; written with atomics.
        unsafe { cells::store(self.cells.ptr(i), v) };
        Ok(())
    }

    /// Overwrites every element from `src` (each written atomically; not as one unit).
    ///
    /// # Errors
    /// [`OutOfRange`] (index = `src.len()`) if the lengths differ; nothing is written.
    pub fn copy_from_slice(&self, src: &[T]) -> Result<(), OutOfRange> {
        if src.len() != self.len() {
            return Err(OutOfRange { index: src.len(), len: self.len() });
        }
        for (i, v) in src.iter().enumerate() {
            // SAFETY: i < len; written with atomics.
            unsafe { cells::store(self.cells.ptr(i), *v) };
        }
        Ok(())
    }

    /// A copy of every element (each read atomically; the whole is not a snapshot).
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.len()).filter_map(|i| self.get(i)).collect()
    }

    /// The segment holding the array.
    pub fn segment(&self) -> &Arc<Segment> {
        self.cells.segment()
    }
}
