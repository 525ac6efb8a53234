//! Queues in shared memory: lock-free rings between processes.
//!
//! | type | producers × consumers | carries | notes |
//! |---|---|---|---|
//! | [`spsc_channel`] / [`SpscQueue`] | 1 × 1 | `T: Pod` | fastest; batch `try_send_slice` / `recv_into` |
//! | [`Queue`] ([`Sender`], [`Receiver`]) | N × M | `T: Pod` | `multiprocessing.Queue` |
//! | [`SimpleQueue`], [`JoinableQueue`] | N × M | `T: Pod` | Python's variants; `task_done` / `join` |
//! | [`FrameQueue`] | N × M | byte messages ≤ `max_frame` | for serialized data |
//! | `SerdeQueue` (feature `serde`) | N × M | any serde value | postcard-encoded frames |
//!
//! Every queue is bounded (capacity fixed at creation; 0 is an error) and lives in a
//! segment: anonymous (shared with children forked afterwards), named (`create`/`open`,
//! with kind, element type and geometry checked), or at an offset of a caller's segment.
//!
//! # Blocking
//! A blocked send or receive polls, yields, then parks on a futex through the
//! [`WaitCell`](crate::futex::WaitCell) of its side; the other side's fast path only loads
//! the sleeper count after a compiler fence (the waiter issues the heavy half of an
//! asymmetric fence), so nobody makes a syscall while nobody sleeps, and an idle blocked
//! receiver uses no CPU beyond a re-check every 100 ms.
//!
//! # Failure
//! See [`raw`] for the algorithms. In short:
//! - A message is never delivered torn or twice.
//! - A producer killed between claiming a slot and publishing it leaves a slot that
//!   consumers skip once they see its process is dead (within milliseconds of looking),
//!   counted in [`Stats::abandoned`].
//! - A consumer killed while copying a message out loses that one message, counted in
//!   [`Stats::lost`]; the slot is freed by the next producer that needs it.
//! - Receivers blocked on a queue whose every sender process has died (or dropped its
//!   handles) drain it and get [`RecvError::Disconnected`]; senders blocked on a full queue
//!   whose every receiver died get [`SendError::Disconnected`]. A process counts as a sender
//!   or receiver from the moment it holds a handle: made, opened, cloned, or inherited
//!   through `fork` (`pthread_atfork` handlers count the child as coming before the fork, and
//!   give it its own member record when it first runs; a count that no child takes back —
//!   a failed fork — expires after 2 s). A process dropping its last handle of a role wakes
//!   the blocked peers, which re-check at once. A queue has 64 member records; when they run out, death no longer
//!   disconnects that queue (a live holder could not be told apart from a dead one).
//! - Impossible indices or stamps (a peer wrote garbage) give `Corrupted`; every index is
//!   masked with the process's own copy of the geometry and every frame length is checked,
//!   so corruption can never cause an out-of-bounds access.

#[cfg(not(loom))]
pub(crate) mod core;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
pub(crate) mod frames;
#[cfg(not(loom))]
mod mpmc;
pub mod raw;
#[cfg(not(loom))]
pub(crate) mod ring;
#[cfg(not(loom))]
pub(crate) mod spsc;

#[cfg(not(loom))]
pub use error::{QueueCreateError, QueueOpenError, RecvError, SendError, TaskDoneError};
#[cfg(feature = "serde")]
#[cfg(not(loom))]
pub use frames::SerdeQueue;
#[cfg(not(loom))]
pub use frames::{decode_frame, FrameQueue};
#[cfg(not(loom))]
pub use mpmc::{JoinableQueue, Queue, Receiver, Sender, SimpleQueue};
#[cfg(not(loom))]
pub use spsc::{spsc_channel, SpscQueue, SpscReceiver, SpscSender};

/// Segment kind code of a [`Queue`] (tagged with the element type).
pub const KIND_QUEUE: u32 = 9;
/// Segment kind code of a [`JoinableQueue`].
pub const KIND_JOINABLE: u32 = 10;
/// Segment kind code of a [`FrameQueue`].
pub const KIND_FRAMES: u32 = 11;
/// Segment kind code of a `SerdeQueue` (tagged with the value type).
pub const KIND_SERDE: u32 = 12;
/// Segment kind code of an SPSC queue.
pub const KIND_SPSC: u32 = 13;

#[cfg(not(loom))]
pub(crate) fn kind_for<T>(code: u32) -> crate::shm::Kind {
    crate::shm::Kind::new(code, crate::shm::Kind::tag_of::<T>())
}

/// What a queue segment holds, for [`crate::inspect`]: the ring at payload offset 0, read
/// without being used (see [`ring::view`]).
#[cfg(not(loom))]
pub(crate) fn inspect(seg: &crate::shm::Segment, kind: crate::shm::Kind) -> crate::inspect::Contents {
    use crate::inspect::{Contents, OTHER_LAYOUT};
    use raw::{FLAVOR_MPMC, FLAVOR_SPSC};

    let (flavor, joinable, frames) = match kind.code {
        KIND_QUEUE => (FLAVOR_MPMC, false, false),
        KIND_JOINABLE => (FLAVOR_MPMC, true, false),
        // A frame queue's tag is 0; a serde queue's names its value type.
        KIND_FRAMES if kind.tag != 0 => return OTHER_LAYOUT,
        KIND_FRAMES | KIND_SERDE => (FLAVOR_MPMC, false, true),
        KIND_SPSC => (FLAVOR_SPSC, false, false),
        _ => return OTHER_LAYOUT,
    };
    match ring::view(seg, 0, flavor, joinable) {
        Ok(mut r) => {
            if frames {
                frames::describe(&mut r);
            }
            Contents::Queue(r)
        }
        Err(why) => Contents::Corrupted(why),
    }
}

/// Crash-recovery counters of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Slots skipped because their producer died between claiming and publishing them.
    pub abandoned: u64,
    /// Messages lost because their consumer died while copying them out.
    pub lost: u64,
}

#[cfg(not(loom))]
impl Stats {
    pub(crate) fn of(ring: &ring::Ring) -> Stats {
        use crate::primitive::atomic::Ordering;
        let ctl = ring.ctl();
        // Relaxed: counters for display.
        Stats { abandoned: ctl.abandoned.load(Ordering::Relaxed), lost: ctl.lost.load(Ordering::Relaxed) }
    }
}
