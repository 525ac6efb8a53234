//! Blocking, non-blocking and timed send/receive over an MPMC [`Ring`], shared by every
//! multi-producer queue type (Pod values, byte frames, serde values, joinable).

use std::time::Instant;

use super::raw::mpmc::{self, PopStop, PushStop};
use super::ring::{block, Patience, Ring, Role};
use crate::primitive::atomic::Ordering;

/// How long an operation may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    /// Not at all (`try_*`).
    No,
    /// Until the deadline (`None`: forever).
    Until(Option<Instant>),
}

impl Wait {
    pub(crate) fn timeout(t: std::time::Duration) -> Wait {
        Wait::Until(crate::futex::deadline_after(t))
    }
}

/// Why a raw send failed (the caller maps it to a `SendError` holding its value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendFail {
    Full,
    Timeout,
    Disconnected,
    Corrupted,
}

/// Why a raw receive failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvFail {
    Empty,
    Timeout,
    Disconnected,
    Corrupted,
}

impl From<RecvFail> for super::RecvError {
    fn from(f: RecvFail) -> Self {
        match f {
            RecvFail::Empty => super::RecvError::Empty,
            RecvFail::Timeout => super::RecvError::Timeout,
            RecvFail::Disconnected => super::RecvError::Disconnected,
            RecvFail::Corrupted => super::RecvError::Corrupted("ring stamps contradict head or tail"),
        }
    }
}

/// One attempt to push: `Ok(true)` pushed, `Ok(false)` full (after recovering a slot held by
/// a dead reader, if that is what blocked it).
#[inline(always)]
fn attempt_push(
    ring: &Ring,
    me: u32,
    blind: bool,
    write: &mut impl FnMut(*mut u8),
) -> Result<bool, SendFail> {
    let ctl = ring.ctl();
    // SAFETY: the callers' `write` closures write at most `elem_size` bytes.
    match unsafe { mpmc::push(ctl, &ring.slots, &ring.geo, me, blind, &mut *write) } {
        Ok(()) => Ok(true),
        Err(PushStop::Full) => Ok(false),
        Err(PushStop::Reader { idx, stamp, pid }) => {
            if ring.claimer_dead(stamp, pid)
                && mpmc::recover_reader(ctl, &ring.slots, &ring.geo, idx, stamp, me)
            {
                settle_lost(ring);
            }
            Ok(false)
        }
        Err(PushStop::Corrupted) => Err(SendFail::Corrupted),
    }
}

/// A recovered slot's message will never be marked done: settle it for `join`.
fn settle_lost(ring: &Ring) {
    if ring.joinable {
        let _ = task_done(ring);
    }
}

/// Sends one message; `write` fills the slot and is called exactly once, on success.
#[inline(always)]
pub(crate) fn send(ring: &Ring, wait: Wait, mut write: impl FnMut(*mut u8)) -> Result<(), SendFail> {
    let me = ring.me();
    if ring.is_closed() {
        return Err(SendFail::Disconnected);
    }
    let ctl = ring.ctl();
    if ring.joinable {
        // Counted before the message is visible, so `join` cannot return while it is queued.
        // Relaxed: `join` reads it with the all_done cell's fences.
        ctl.unfinished.fetch_add(1, Ordering::Relaxed);
    }
    let r = send_inner(ring, me, wait, &mut write);
    match r {
        Ok(()) => {
            ctl.not_empty.notify_one();
            // Pass a wake-up on: a producer woken by a freed slot may have found the slot
            // still held by its (live) reader and parked again, spending that wake-up; if the
            // next slot is free now, another sleeping producer could use it.
            ctl.not_full.notify_one_if(|| mpmc::tail_free(ctl, &ring.slots, &ring.geo));
        }
        Err(_) if ring.joinable => {
            let _ = task_done(ring);
        }
        Err(_) => {}
    }
    r
}

#[inline(always)]
fn send_inner(ring: &Ring, me: u32, wait: Wait, write: &mut impl FnMut(*mut u8)) -> Result<(), SendFail> {
    if attempt_push(ring, me, true, write)? {
        return Ok(());
    }
    let Wait::Until(deadline) = wait else { return Err(SendFail::Full) };
    let patience = Patience::new();
    let r = block(&ring.ctl().not_full, deadline, &patience, || {
        if ring.is_closed() {
            return Some(Err(SendFail::Disconnected));
        }
        match attempt_push(ring, me, false, write) {
            Ok(true) => Some(Ok(())),
            Ok(false) => {
                if patience.peer_check_due(ring.departures()) && !ring.peers_alive(Role::Receiver) {
                    return Some(Err(SendFail::Disconnected));
                }
                None
            }
            Err(e) => Some(Err(e)),
        }
    });
    r.unwrap_or(Err(SendFail::Timeout))
}

/// One attempt to pop: `Ok(Some)` popped, `Ok(None)` empty (after skipping a slot whose
/// writer died, if that is what blocked it).
#[inline(always)]
fn attempt_pop<R>(
    ring: &Ring,
    me: u32,
    blind: bool,
    read: &mut impl FnMut(*const u8) -> R,
) -> Result<Option<R>, RecvFail> {
    let ctl = ring.ctl();
    loop {
        // SAFETY: the callers' `read` closures read at most `elem_size` bytes.
        match unsafe { mpmc::pop(ctl, &ring.slots, &ring.geo, me, blind, &mut *read) } {
            Ok(r) => return Ok(Some(r)),
            Err(PopStop::Empty) => return Ok(None),
            Err(PopStop::Writer { pos, stamp, pid }) => {
                if ring.claimer_dead(stamp, pid)
                    && mpmc::recover_writer(ctl, &ring.slots, &ring.geo, pos, stamp, me)
                {
                    settle_lost(ring);
                    ctl.not_full.notify_one();
                    continue;
                }
                return Ok(None);
            }
            Err(PopStop::Corrupted) => return Err(RecvFail::Corrupted),
        }
    }
}

/// Receives one message; `read` copies it out of the slot and is called once, on success.
#[inline(always)]
pub(crate) fn recv<R>(ring: &Ring, wait: Wait, mut read: impl FnMut(*const u8) -> R) -> Result<R, RecvFail> {
    let me = ring.me();
    let ctl = ring.ctl();
    if let Some(r) = attempt_pop(ring, me, true, &mut read)? {
        after_pop(ring);
        return Ok(r);
    }
    let Wait::Until(deadline) = wait else {
        return Err(if ring.is_closed() { RecvFail::Disconnected } else { RecvFail::Empty });
    };
    let patience = Patience::new();
    let r = block(&ctl.not_empty, deadline, &patience, || match attempt_pop(ring, me, false, &mut read) {
        Ok(Some(r)) => Some(Ok(r)),
        Ok(None) => {
            if ring.is_closed()
                || (patience.peer_check_due(ring.departures()) && !ring.peers_alive(Role::Sender))
            {
                // A last message may have landed between our pop and the check.
                return match attempt_pop(ring, me, false, &mut read) {
                    Ok(Some(r)) => Some(Ok(r)),
                    Ok(None) => Some(Err(RecvFail::Disconnected)),
                    Err(e) => Some(Err(e)),
                };
            }
            None
        }
        Err(e) => Some(Err(e)),
    });
    let r = r.unwrap_or(Err(RecvFail::Timeout));
    if r.is_ok() {
        after_pop(ring);
    }
    r
}

/// Wakes a producer for the freed slot, and passes a wake-up on to another consumer if the
/// next message is already published: a consumer woken for it may have found the head slot
/// still being written by a live producer and parked again, spending its wake-up (found by
/// the loom model `writer_blocked_head`).
#[inline(always)]
fn after_pop(ring: &Ring) {
    let ctl = ring.ctl();
    ctl.not_full.notify_one();
    ctl.not_empty.notify_one_if(|| mpmc::head_ready(ctl, &ring.slots, &ring.geo));
}

/// Marks one message done (`JoinableQueue::task_done`). Err if none is outstanding.
pub(crate) fn task_done(ring: &Ring) -> Result<(), super::TaskDoneError> {
    let ctl = ring.ctl();
    // Relaxed: the count itself is the only shared state; `all_done` orders the wake-up.
    let mut cur = ctl.unfinished.load(Ordering::Relaxed);
    loop {
        if cur == 0 {
            return Err(super::TaskDoneError);
        }
        // AcqRel: work done before task_done happens before a joiner returns.
        match ctl.unfinished.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => break,
            Err(now) => cur = now,
        }
    }
    if cur == 1 {
        ctl.all_done.notify_all();
    }
    Ok(())
}

/// Waits until no message is outstanding (`JoinableQueue::join`).
pub(crate) fn join(ring: &Ring, deadline: Option<Instant>) -> Result<(), crate::futex::TimedOut> {
    let ctl = ring.ctl();
    // Acquire: pairs with task_done's AcqRel, so the consumers' work is visible.
    block(&ctl.all_done, deadline, &Patience::new(), || {
        (ctl.unfinished.load(Ordering::Acquire) == 0).then_some(())
    })
}
