//! `Value<T>` (locked) and `RawValue<T>` (unlocked): one `T` in shared memory.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use super::cells::{self, Cells, Init};
use super::{Integer, Rmw, ValueError, KIND_RAW_VALUE, KIND_VALUE};
use crate::shm::Segment;
use crate::sync::{Lock, LockGuard, LockResult, LockTimeoutError, OwnerDied};

/// One `T` in shared memory with its own robust lock, like `multiprocessing.Value`.
///
/// - [`get`](Value::get) / [`set`](Value::set) are each atomic with respect to every other
///   operation on the value.
/// - [`lock`](Value::lock) gives a guard for read-modify-write: it derefs to a copy of the
///   value that is written back when the guard drops (not when a panic drops it), so a
///   process killed mid-update leaves the previous value intact.
/// - For integers, [`fetch_add`](Value::fetch_add) and friends work without the lock.
///
/// Not re-entrant: calling `get`, `set` or `lock` while holding this value's guard in the
/// same thread waits for itself. Inside a guard, read and write through the guard.
///
/// # Examples
/// ```
/// use shmkit::value::Value;
///
/// let v = Value::new(0.0f64)?; // anonymous: shared with children forked from here
/// v.set(std::f64::consts::PI);
/// {
///     let mut g = v.lock().unwrap_or_else(|died| died.into_inner());
///     *g = -*g; // read-modify-write under the lock
/// }
/// assert_eq!(v.get(), -std::f64::consts::PI);
///
/// let n = Value::new(0u64)?;
/// n.fetch_add(5); // lock-free for integers
/// assert_eq!(n.get(), 5);
/// # Ok::<(), shmkit::value::ValueError>(())
/// ```
pub struct Value<T> {
    cells: Cells<T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value { cells: self.cells.clone() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: element 0 exists (len 1 checked at attach); read atomically.
        let v = unsafe { cells::load(self.cells.ptr(0)) };
        f.debug_struct("Value").field("value", &v).field("locked_by", &self.cells.lock.owner()).finish()
    }
}

/// Holds a [`Value`]'s lock; derefs to a copy of the value, written back on drop.
#[must_use = "if unused the value's lock is released at once"]
pub struct ValueGuard<'a, T: Pod> {
    value: &'a Value<T>,
    copy: T,
    _lock: LockGuard<'a>,
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.copy).finish()
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.copy
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.copy
    }
}

impl<T: Pod> ValueGuard<'_, T> {
    /// Declares the value consistent after an [`OwnerDied`] (see [`Lock`]).
    pub fn mark_consistent(this: &Self) {
        LockGuard::mark_consistent(&this._lock);
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: element 0 exists; we hold the lock, and every writer of a Value
            // writes with atomic stores.
            unsafe { cells::store(self.value.cells.ptr(0), self.copy) };
        }
    }
}

fn one<T: Pod>(v: T) -> [T; 1] {
    [v]
}

fn check_one<T: Pod>(cells: Cells<T>) -> Result<Cells<T>, ValueError> {
    if cells.len() != 1 {
        return Err(ValueError::Corrupted("a value's element count is not 1"));
    }
    Ok(cells)
}

impl<T: Pod> Value<T> {
    /// A value in a new anonymous segment, shared with children forked afterwards.
    ///
    /// # Errors
    /// [`ValueError::Create`], or [`ValueError::Alignment`] for `T` aligned above 128.
    pub fn new(v: T) -> Result<Self, ValueError> {
        Ok(Value { cells: Cells::create(KIND_VALUE, None, Init::Copy(&one(v)))? })
    }

    /// A value in a new named segment, for unrelated processes to [`open`](Value::open).
    ///
    /// # Errors
    /// As [`Value::new`], or the name is taken or invalid.
    pub fn create(name: &str, v: T) -> Result<Self, ValueError> {
        Ok(Value { cells: Cells::create(KIND_VALUE, Some(name), Init::Copy(&one(v)))? })
    }

    /// Opens a value made by [`Value::create`] with the same `T`.
    ///
    /// # Errors
    /// [`ValueError::Open`] (missing, or `WrongKind` for another element type or object),
    /// [`ValueError::Mismatch`] / [`ValueError::Corrupted`] for a header that disagrees.
    pub fn open(name: &str) -> Result<Self, ValueError> {
        Ok(Value { cells: check_one(Cells::open(KIND_VALUE, name)?)? })
    }

    /// Payload bytes a value takes in a caller's segment.
    pub fn size_for() -> usize {
        cells::DATA_AT + std::mem::size_of::<T>()
    }

    /// A new value at payload offset `at` (128-aligned, zeroed and unused) of `seg`.
    ///
    /// # Errors
    /// [`ValueError::Placement`] if it does not fit or `at` is misaligned.
    pub fn create_at(seg: Arc<Segment>, at: usize, v: T) -> Result<Self, ValueError> {
        Ok(Value { cells: Cells::create_at(seg, at, KIND_VALUE, Init::Copy(&one(v)))? })
    }

    /// The value made by [`Value::create_at`] at `at` in `seg`.
    ///
    /// # Errors
    /// As [`Value::open`].
    pub fn open_at(seg: Arc<Segment>, at: usize) -> Result<Self, ValueError> {
        Ok(Value { cells: check_one(Cells::attach(seg, at, KIND_VALUE)?)? })
    }

    /// The current value. One atomic load if `T` fits in one (up to 8 bytes, aligned to
    /// its size), otherwise a copy under the lock. Proceeds past a dead holder (whose
    /// update was never written).
    pub fn get(&self) -> T {
        if cells::single_access::<T>() {
            // SAFETY: element 0 exists; one atomic load can never see a torn value, and
            // guards write back with one atomic store.
            return unsafe { cells::load(self.cells.ptr(0)) };
        }
        *self.lock().unwrap_or_else(OwnerDied::into_inner)
    }

    /// Replaces the value under the lock. Proceeds past a dead holder, and since the whole
    /// value is replaced, marks it consistent again (later `lock()`s return `Ok`).
    pub fn set(&self, v: T) {
        match self.lock() {
            Ok(mut g) => *g = v,
            Err(OwnerDied(mut g)) => {
                *g = v;
                ValueGuard::mark_consistent(&g);
            }
        }
    }

    /// Takes the lock; the guard derefs to the value.
    ///
    /// # Errors
    /// [`OwnerDied`] (holding the guard) if a holder died: the value is the one before its
    /// update.
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        match self.cells.lock.lock() {
            Ok(g) => Ok(self.guard(g)),
            Err(OwnerDied(g)) => Err(OwnerDied(self.guard(g))),
        }
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`LockTimeoutError::Timeout`], or `OwnerDied` holding the guard.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<ValueGuard<'_, T>, LockTimeoutError<ValueGuard<'_, T>>> {
        match self.cells.lock.lock_timeout(timeout) {
            Ok(g) => Ok(self.guard(g)),
            Err(LockTimeoutError::OwnerDied(g)) => Err(LockTimeoutError::OwnerDied(self.guard(g))),
            Err(LockTimeoutError::Timeout) => Err(LockTimeoutError::Timeout),
        }
    }

    fn guard<'a>(&'a self, g: LockGuard<'a>) -> ValueGuard<'a, T> {
        // SAFETY: element 0 exists; we hold the lock.
        let copy = unsafe { cells::load(self.cells.ptr(0)) };
        ValueGuard { value: self, copy, _lock: g }
    }

    /// The value's lock (Python's `get_lock()`), e.g. to hold it while other processes must
    /// not change the value. Holding it and then calling `get`/`set`/`lock` on this value
    /// from the same thread waits for itself; use the guard from [`lock`](Value::lock).
    pub fn get_lock(&self) -> &Lock {
        &self.cells.lock
    }

    /// The segment holding the value.
    pub fn segment(&self) -> &Arc<Segment> {
        self.cells.segment()
    }
}

/// Lock-free read-modify-write operations on integer values (not ordered with guards: a
/// guard's write-back replaces whatever was added while it was held).
macro_rules! integer_ops {
    ($ty:ident) => {
        impl<T: Integer> $ty<T> {
            /// Adds `v` (wrapping) atomically without the lock; returns the previous value.
            pub fn fetch_add(&self, v: T) -> T {
                self.rmw(Rmw::Add, v)
            }
            /// Subtracts `v` (wrapping) atomically; returns the previous value.
            pub fn fetch_sub(&self, v: T) -> T {
                self.rmw(Rmw::Sub, v)
            }
            /// Bitwise-ands `v` atomically; returns the previous value.
            pub fn fetch_and(&self, v: T) -> T {
                self.rmw(Rmw::And, v)
            }
            /// Bitwise-ors `v` atomically; returns the previous value.
            pub fn fetch_or(&self, v: T) -> T {
                self.rmw(Rmw::Or, v)
            }
            /// Bitwise-xors `v` atomically; returns the previous value.
            pub fn fetch_xor(&self, v: T) -> T {
                self.rmw(Rmw::Xor, v)
            }
            /// Stores the maximum of the value and `v`; returns the previous value.
            pub fn fetch_max(&self, v: T) -> T {
                self.rmw(Rmw::Max, v)
            }
            /// Stores the minimum of the value and `v`; returns the previous value.
            pub fn fetch_min(&self, v: T) -> T {
                self.rmw(Rmw::Min, v)
            }
            /// Stores `v` atomically without the lock; returns the previous value.
            pub fn swap(&self, v: T) -> T {
                self.rmw(Rmw::Swap, v)
            }
            /// Stores `new` if the value is `current`; returns `Ok(previous)` or
            /// `Err(actual)`.
            ///
            /// # Errors
            /// The actual value, if it was not `current`.
            pub fn compare_exchange(&self, current: T, new: T) -> Result<T, T> {
                // SAFETY: element 0 exists and is aligned for T's atomic twin.
                unsafe { T::cas(self.cells.ptr(0), current, new) }
            }
            fn rmw(&self, op: Rmw, v: T) -> T {
                // SAFETY: element 0 exists and is aligned for T's atomic twin.
                unsafe { T::rmw(self.cells.ptr(0), op, v) }
            }
        }
    };
}

integer_ops!(Value);
integer_ops!(RawValue);

/// One `T` in shared memory without a lock, like `multiprocessing.RawValue`.
///
/// Each `get`/`set` is atomic per aligned word (up to 8 bytes): a `T` of one word is never
/// torn; a larger `T` may be read half-old, half-new while another process writes it.
/// `set` stores with Release and `get` loads with Acquire, so a value can publish data
/// written before it.
///
/// # Examples
/// ```
/// use shmkit::value::RawValue;
///
/// let hits = RawValue::new(0u32)?;
/// hits.fetch_add(1);
/// hits.set(hits.get() * 10);
/// assert_eq!(hits.get(), 10);
/// # Ok::<(), shmkit::value::ValueError>(())
/// ```
pub struct RawValue<T> {
    cells: Cells<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue { cells: self.cells.clone() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawValue").field(&self.get()).finish()
    }
}

impl<T: Pod> RawValue<T> {
    /// A raw value in a new anonymous segment.
    ///
    /// # Errors
    /// As [`Value::new`].
    pub fn new(v: T) -> Result<Self, ValueError> {
        Ok(RawValue { cells: Cells::create(KIND_RAW_VALUE, None, Init::Copy(&one(v)))? })
    }

    /// A raw value in a new named segment.
    ///
    /// # Errors
    /// As [`Value::create`].
    pub fn create(name: &str, v: T) -> Result<Self, ValueError> {
        Ok(RawValue { cells: Cells::create(KIND_RAW_VALUE, Some(name), Init::Copy(&one(v)))? })
    }

    /// Opens a raw value made by [`RawValue::create`] with the same `T`.
    ///
    /// # Errors
    /// As [`Value::open`].
    pub fn open(name: &str) -> Result<Self, ValueError> {
        Ok(RawValue { cells: check_one(Cells::open(KIND_RAW_VALUE, name)?)? })
    }

    /// Payload bytes a raw value takes in a caller's segment.
    pub fn size_for() -> usize {
        Value::<T>::size_for()
    }

    /// A new raw value at payload offset `at` of `seg` (see [`Value::create_at`]).
    ///
    /// # Errors
    /// As [`Value::create_at`].
    pub fn create_at(seg: Arc<Segment>, at: usize, v: T) -> Result<Self, ValueError> {
        Ok(RawValue { cells: Cells::create_at(seg, at, KIND_RAW_VALUE, Init::Copy(&one(v)))? })
    }

    /// The raw value at `at` in `seg`.
    ///
    /// # Errors
    /// As [`Value::open`].
    pub fn open_at(seg: Arc<Segment>, at: usize) -> Result<Self, ValueError> {
        Ok(RawValue { cells: check_one(Cells::attach(seg, at, KIND_RAW_VALUE)?)? })
    }

    /// The current value (Acquire, per word).
    pub fn get(&self) -> T {
        // SAFETY: element 0 exists; read with atomics.
        unsafe { cells::load(self.cells.ptr(0)) }
    }

    /// Stores `v` (Release, per word).
    pub fn set(&self, v: T) {
        // SAFETY: element 0 exists; written with atomics.
        unsafe { cells::store(self.cells.ptr(0), v) }
    }

    /// The segment holding the value.
    pub fn segment(&self) -> &Arc<Segment> {
        self.cells.segment()
    }
}
