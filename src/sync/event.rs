//! `Event`: a flag processes can wait for.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::raw::RawEvent;
use crate::shm::{Kind, Offset, OffsetError, Segment, Shareable, Shared, ShmCreateError, ShmOpenError};

// SAFETY: u32 atomics, `#[repr(C)]`; any non-zero flag means "set".
unsafe impl Shareable for RawEvent {}

pub(crate) const EVENT_KIND: Kind = Kind::new(6, std::mem::size_of::<RawEvent>() as u64);

/// A flag shared between processes (`multiprocessing.Event`): `set` wakes every process
/// waiting in [`Event::wait`].
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use shmkit::sync::Event;
///
/// let ev = Event::new()?;
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// assert!(ev.is_set());
/// ev.wait();
/// # Ok::<(), shmkit::shm::ShmCreateError>(())
/// ```
#[derive(Clone)]
pub struct Event {
    raw: Shared<RawEvent>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event").field("set", &self.is_set()).finish()
    }
}

impl Event {
    /// A cleared event in a new anonymous segment (shared with children forked afterwards).
    ///
    /// # Errors
    /// As [`Segment::anonymous`].
    pub fn new() -> Result<Event, ShmCreateError> {
        Ok(Event { raw: Shared::anonymous(EVENT_KIND, |_| {})? })
    }

    /// A cleared event in a new named segment (mode 0600).
    ///
    /// # Errors
    /// As [`Segment::create`].
    pub fn create(name: &str) -> Result<Event, ShmCreateError> {
        Ok(Event { raw: Shared::create(name, EVENT_KIND, |_| {})? })
    }

    /// Opens an event made by [`Event::create`].
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open(name: &str) -> Result<Event, ShmOpenError> {
        Ok(Event { raw: Shared::open(name, EVENT_KIND)? })
    }

    /// The event at `at` inside a caller's segment (zeroed memory is a cleared event).
    ///
    /// # Errors
    /// [`OffsetError`] if it does not fit.
    pub fn at(seg: Arc<Segment>, at: Offset<RawEvent>) -> Result<Event, OffsetError> {
        Ok(Event { raw: Shared::at(seg, at)? })
    }

    /// Sets the flag and wakes every waiter in every process.
    pub fn set(&self) {
        self.raw.set()
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.raw.clear()
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.raw.is_set()
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        self.raw.wait_until(None);
    }

    /// Blocks until the flag is set or `timeout` passes; returns whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.raw.wait_until(crate::futex::deadline_after(timeout))
    }
}
