//! Pipe workloads: shmkit's [`Pipe`] / [`Connection`](crate::pipe::Connection) beside an OS
//! pipe and a Unix socketpair, between the parent and a forked child pinned to another core.
//!
//! | scenario | one iteration | peers |
//! |---|---|---|
//! | [`pipe_tput`] | one 8-byte message, child to parent | [`PipeTputPeer::ALL`] (+ `ipc_channel` in `benches/pipe.rs`) |
//! | [`pipe_rtt`] | one 8-byte round trip (ping, then pong) | [`PipeRttPeer::ALL`] |
//! | [`pipe_bulk`] | one [`BULK_BYTES`] message, child to parent | [`PipeBulkPeer::ALL`] |
//!
//! The shmkit side uses duplex pipes, as Python's `Pipe()` does: [`Pipe::new`] (64 messages
//! of up to 64 KiB per direction) for 8-byte messages, and
//! `Pipe::builder().capacity(BULK_SLOTS).max_message(BULK_BYTES)` for 64 KiB ones, the
//! geometry of `bulk_64KiB/shmkit_frames`. Messages go through `send` / `recv::<u64>` and
//! `send_bytes` / `recv_bytes_into` (no allocation on either side).
//!
//! The OS peers of the 8-byte scenarios are the ones of `tput_8B` and `rtt_8B`
//! ([`TputPeer::Pipe`], [`TputPeer::Socketpair`], [`RttPeer::Pipe`]): one plain 8-byte
//! `write` and `read` per message, no length prefix. A fixed-size message needs none, and
//! it keeps the peer at its cheapest; Python's `Connection` would add a 4-byte header to
//! the write and a second `read`. The 64 KiB peer frames each message as Python's
//! `Connection._send_bytes` does for messages above 16 KiB: a 4-byte big-endian length
//! `write`, then the payload `write`; the reader `read`s the length, then the payload.
//!
//! A dead child cannot hang the parent: the pipe's receivers report `Disconnected` within
//! about 100 ms of every sender's death, and an OS pipe's read end sees end-of-file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::other;
use super::peers::receive_in_order;
use super::queue_peers::{bulk_run, check_seq, run_pair, BULK_BYTES, BULK_SLOTS};
use super::{pipe, rtt, tput, RttPeer, TputPeer};
use crate::pipe::Pipe;

/// An implementation of one-way 8-byte message throughput (`pipe_tput_8B/<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeTputPeer {
    /// shmkit [`Pipe::new`]: the child `send`s `u64`s on one end, the parent `recv`s them on
    /// the other.
    ShmkitPipe,
    /// An OS pipe, one 8-byte `write` / `read` per message ([`TputPeer::Pipe`]).
    OsPipe,
    /// A Unix stream socketpair, one 8-byte `write` / `read` per message
    /// ([`TputPeer::Socketpair`]).
    Socketpair,
}

impl PipeTputPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [PipeTputPeer; 3] =
        [PipeTputPeer::ShmkitPipe, PipeTputPeer::OsPipe, PipeTputPeer::Socketpair];

    /// The benchmark id (`pipe_tput_8B/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            PipeTputPeer::ShmkitPipe => "shmkit_pipe",
            PipeTputPeer::OsPipe => "os_pipe",
            PipeTputPeer::Socketpair => "socketpair",
        }
    }
}

/// An implementation of the 8-byte round trip (`pipe_rtt/<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeRttPeer {
    /// One shmkit [`Pipe::new`]: the parent sends on its end and receives the echo on the
    /// same end; the child receives and echoes on the other. Both sides block in `recv`.
    ShmkitPipe,
    /// Two OS pipes, 8-byte `write` / `read` each way ([`RttPeer::Pipe`]).
    OsPipe,
}

impl PipeRttPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [PipeRttPeer; 2] = [PipeRttPeer::ShmkitPipe, PipeRttPeer::OsPipe];

    /// The benchmark id (`pipe_rtt/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            PipeRttPeer::ShmkitPipe => "shmkit_pipe",
            PipeRttPeer::OsPipe => "os_pipe",
        }
    }
}

/// An implementation of one-way 64 KiB messages (`pipe_bulk_64KiB/<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeBulkPeer {
    /// shmkit `Pipe::builder().capacity(16).max_message(64 KiB)`: `send_bytes` in the child,
    /// `recv_bytes_into` in the parent.
    ShmkitPipe,
    /// An OS pipe (64 KiB of kernel buffer) with Python's framing: a 4-byte length, then
    /// the payload.
    OsPipe,
}

impl PipeBulkPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [PipeBulkPeer; 2] = [PipeBulkPeer::ShmkitPipe, PipeBulkPeer::OsPipe];

    /// The benchmark id (`pipe_bulk_64KiB/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            PipeBulkPeer::ShmkitPipe => "shmkit_pipe",
            PipeBulkPeer::OsPipe => "os_pipe",
        }
    }
}

/// Times `msgs` 8-byte messages from a child to the parent with `peer`, after a warm-up
/// message. The parent checks every value.
///
/// # Errors
/// An OS error, a dead child, or a corrupted sequence.
pub fn pipe_tput(peer: PipeTputPeer, msgs: u64) -> io::Result<Duration> {
    match peer {
        PipeTputPeer::OsPipe => tput(TputPeer::Pipe, msgs),
        PipeTputPeer::Socketpair => tput(TputPeer::Socketpair, msgs),
        PipeTputPeer::ShmkitPipe => {
            let (tx, rx) = Pipe::new().map_err(other)?;
            let total = msgs + 1;
            let child = move || {
                for i in 1..=total {
                    if tx.send(&i).is_err() {
                        return 2;
                    }
                }
                0
            };
            let parent = move || receive_in_order(total, || rx.recv::<u64>().map_err(other));
            // SAFETY: called from the single-threaded bench processes, like every workload.
            unsafe { run_pair(child, parent) }
        }
    }
}

/// Times `iters` 8-byte round trips with `peer`, after one warm-up round.
///
/// # Errors
/// An OS error, a dead child, or an echo mismatch.
pub fn pipe_rtt(peer: PipeRttPeer, iters: u64) -> io::Result<Duration> {
    match peer {
        PipeRttPeer::OsPipe => rtt(RttPeer::Pipe, iters),
        PipeRttPeer::ShmkitPipe => {
            let (here, there) = Pipe::new().map_err(other)?;
            let rounds = iters + 1;
            let child = move || {
                for i in 1..=rounds {
                    match there.recv::<u64>() {
                        Ok(v) if v == i => {}
                        _ => return 2,
                    }
                    if there.send(&i).is_err() {
                        return 3;
                    }
                }
                0
            };
            let parent = move || {
                let mut start = Instant::now();
                for i in 1..=rounds {
                    if i == 2 {
                        start = Instant::now();
                    }
                    here.send(&i).map_err(other)?;
                    check_seq(i, here.recv::<u64>().map_err(other)?)?;
                }
                Ok(start.elapsed())
            };
            // SAFETY: called from the single-threaded bench processes, like every workload.
            unsafe { run_pair(child, parent) }
        }
    }
}

/// Times `msgs` messages of [`BULK_BYTES`] from a child to the parent with `peer`, after a
/// warm-up message, stamped and checked as in [`bulk`](super::bulk): each message is copied
/// into the channel by the child and out of it into the parent's buffer.
///
/// # Errors
/// An OS error, a dead child, or a corrupted message.
pub fn pipe_bulk(peer: PipeBulkPeer, msgs: u64) -> io::Result<Duration> {
    match peer {
        PipeBulkPeer::ShmkitPipe => {
            let (tx, rx) =
                Pipe::builder().capacity(BULK_SLOTS).max_message(BULK_BYTES).build().map_err(other)?;
            bulk_run(
                msgs,
                move |m| tx.send_bytes(m).is_ok(),
                move |buf| rx.recv_bytes_into(buf).map_err(other),
            )
        }
        PipeBulkPeer::OsPipe => {
            let (r, w) = pipe()?;
            let (r, w) = (File::from(r), File::from(w));
            bulk_run(
                msgs,
                move |m| {
                    // Python writes the header and a payload above 16 KiB separately.
                    let Ok(len) = u32::try_from(m.len()) else { return false };
                    (&w).write_all(&len.to_be_bytes()).is_ok() && (&w).write_all(m).is_ok()
                },
                move |buf| {
                    let mut len = [0u8; 4];
                    (&r).read_exact(&mut len)?;
                    let n = u32::from_be_bytes(len) as usize;
                    let dst = buf.get_mut(..n).ok_or_else(|| other(format!("message of {n} bytes")))?;
                    (&r).read_exact(dst)?;
                    Ok(n)
                },
            )
        }
    }
}
