//! Round-trip and throughput workloads, one per implementation.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::{finish, pipe, socketpair, spawn_pinned, timeout_err, PEER_TIMEOUT};
use crate::futex::{WaitCell, WaitStrategy};
use crate::primitive::atomic::{AtomicU64, Ordering};
use crate::primitive::hint;
use crate::shm::{Kind, Layout, Offset, Segment, Shareable};

/// An implementation of the 8-byte round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RttPeer {
    /// shmkit: a counter per direction and a `WaitCell` with [`WaitStrategy::ADAPTIVE`].
    ShmkitAdaptive,
    /// The same with [`WaitStrategy::SLEEP`]: every wait parks on the futex.
    FutexAlwaysSleep,
    /// A hand-written pure spin on the counters (no yield, no futex).
    Spin,
    /// Two pipes, 8-byte `write`/`read`.
    Pipe,
    /// One Unix stream socketpair, 8-byte `write`/`read`.
    Socketpair,
}

impl RttPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [RttPeer; 5] = [
        RttPeer::ShmkitAdaptive,
        RttPeer::FutexAlwaysSleep,
        RttPeer::Spin,
        RttPeer::Pipe,
        RttPeer::Socketpair,
    ];

    /// The benchmark id (`rtt_8B/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            RttPeer::ShmkitAdaptive => "shmkit_futex_adaptive",
            RttPeer::FutexAlwaysSleep => "futex_always_sleep",
            RttPeer::Spin => "spin",
            RttPeer::Pipe => "pipe",
            RttPeer::Socketpair => "socketpair",
        }
    }
}

/// An implementation of one-way 8-byte message throughput.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TputPeer {
    /// shmkit's SPSC queue, one `send`/`recv` per message.
    ShmkitSpsc,
    /// shmkit's SPSC queue, `try_send_slice`/`recv_into` in batches of up to 64.
    ShmkitSpscBatch,
    /// shmkit's MPMC `Queue`, one `send`/`recv` per message.
    ShmkitMpmc,
    /// A hand-written SPSC ring of u64 in shared memory, spinning when full/empty.
    HandSpinRing,
    /// A pipe, one 8-byte `write` per message.
    Pipe,
    /// A Unix stream socketpair, one 8-byte `write` per message.
    Socketpair,
}

impl TputPeer {
    /// Every implementation.
    pub const ALL: [TputPeer; 6] = [
        TputPeer::ShmkitSpsc,
        TputPeer::ShmkitSpscBatch,
        TputPeer::ShmkitMpmc,
        TputPeer::HandSpinRing,
        TputPeer::Pipe,
        TputPeer::Socketpair,
    ];

    /// The benchmark id (`tput_8B/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            TputPeer::ShmkitSpsc => "shmkit_spsc",
            TputPeer::ShmkitSpscBatch => "shmkit_spsc_batch",
            TputPeer::ShmkitMpmc => "shmkit_mpmc",
            TputPeer::HandSpinRing => "hand_spin_ring",
            TputPeer::Pipe => "pipe",
            TputPeer::Socketpair => "socketpair",
        }
    }
}

/// The ping-pong state: one counter and one wait cell per direction, each on its own line.
#[repr(C)]
#[derive(Debug)]
pub struct PingPong {
    ping: CachePadded<AtomicU64>,
    pong: CachePadded<AtomicU64>,
    ping_cell: CachePadded<WaitCell>,
    pong_cell: CachePadded<WaitCell>,
}

// SAFETY: atomics and WaitCells only, `#[repr(C)]`; zero is the initial state.
unsafe impl Shareable for PingPong {}

/// Times `iters` 8-byte round trips (after one warm-up round) with `peer`.
///
/// # Errors
/// An OS error, or `TimedOut` if the child stops answering.
pub fn rtt(peer: RttPeer, iters: u64) -> io::Result<Duration> {
    match peer {
        RttPeer::ShmkitAdaptive => rtt_shm(iters, Some(WaitStrategy::ADAPTIVE)),
        RttPeer::FutexAlwaysSleep => rtt_shm(iters, Some(WaitStrategy::SLEEP)),
        RttPeer::Spin => rtt_shm(iters, None),
        RttPeer::Pipe => {
            let (a_r, a_w) = pipe()?;
            let (b_r, b_w) = pipe()?;
            rtt_fd(iters, (b_r, a_w), (a_r, b_w))
        }
        RttPeer::Socketpair => {
            let (a, b) = socketpair()?;
            let (a2, b2) = (a.try_clone()?, b.try_clone()?);
            rtt_fd(iters, (a, a2), (b, b2))
        }
    }
}

/// Waits until `counter >= target`: with a `WaitCell` strategy, or by pure spinning.
fn await_count(
    counter: &AtomicU64,
    cell: &WaitCell,
    strategy: Option<WaitStrategy>,
    target: u64,
    deadline: Instant,
) -> bool {
    // Acquire: pairs with the peer's Release store of the counter.
    let poll = || (counter.load(Ordering::Acquire) >= target).then_some(());
    match strategy {
        Some(s) => cell.wait_with(s, poll, Some(deadline)).is_ok(),
        None => {
            let mut n = 0u32;
            while poll().is_none() {
                hint::spin_loop();
                n = n.wrapping_add(1);
                if n % 4096 == 0 && Instant::now() >= deadline {
                    return false;
                }
            }
            true
        }
    }
}

/// Times `iters` shared-memory round trips waiting with `strategy` (`None`: pure spinning).
///
/// # Errors
/// An OS error, or `TimedOut` if the child stops answering.
pub fn rtt_shm(iters: u64, strategy: Option<WaitStrategy>) -> io::Result<Duration> {
    let mut layout = Layout::new();
    let at: Offset<PingPong> = layout.push();
    let seg = Segment::anonymous(Kind::PING_PONG, layout.size()).map_err(io::Error::other)?;
    let pp = seg.get(at).map_err(io::Error::other)?;
    let rounds = iters + 1;
    let (child, old) = spawn_pinned(|| {
        let deadline = Instant::now() + PEER_TIMEOUT;
        for i in 1..=rounds {
            if !await_count(&pp.ping, &pp.ping_cell, strategy, i, deadline) {
                return 2;
            }
            pp.pong.store(i, Ordering::Release);
            if strategy.is_some() {
                pp.pong_cell.notify_one();
            }
        }
        0
    })?;
    let deadline = Instant::now() + PEER_TIMEOUT;
    let mut start = Instant::now();
    let mut result = Ok(());
    for i in 1..=rounds {
        if i == 2 {
            start = Instant::now();
        }
        // SYNC(ping): Release publishes the round; pairs with the child's Acquire poll.
        pp.ping.store(i, Ordering::Release);
        if strategy.is_some() {
            pp.ping_cell.notify_one();
        }
        if !await_count(&pp.pong, &pp.pong_cell, strategy, i, deadline) {
            result = Err(timeout_err("shm pong"));
            break;
        }
    }
    let elapsed = start.elapsed();
    finish(child, old, result.map(|()| elapsed))
}

fn write_u64(fd: &OwnedFd, v: u64) -> io::Result<()> {
    let buf = v.to_ne_bytes();
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writing from a live buffer of the given length.
        let n = unsafe { libc::write(fd.as_raw_fd(), buf[done..].as_ptr().cast(), buf.len() - done) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

fn read_u64(fd: &OwnedFd) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n as usize;
    }
    Ok(u64::from_ne_bytes(buf))
}

/// Round trips over fds: the parent writes on `parent.1` and reads `parent.0`; the child
/// echoes from `child.0` to `child.1`.
fn rtt_fd(iters: u64, parent: (OwnedFd, OwnedFd), child_fds: (OwnedFd, OwnedFd)) -> io::Result<Duration> {
    let rounds = iters + 1;
    let (child, old) = spawn_pinned(|| {
        for _ in 0..rounds {
            let Ok(v) = read_u64(&child_fds.0) else { return 2 };
            if write_u64(&child_fds.1, v).is_err() {
                return 3;
            }
        }
        0
    })?;
    drop(child_fds);
    let mut start = Instant::now();
    let mut result = Ok(());
    for i in 1..=rounds {
        if i == 2 {
            start = Instant::now();
        }
        let r = write_u64(&parent.1, i).and_then(|()| read_u64(&parent.0));
        match r {
            Ok(v) if v == i => {}
            Ok(v) => {
                result = Err(io::Error::other(format!("echo mismatch: sent {i}, got {v}")));
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    drop(parent);
    finish(child, old, result.map(|()| elapsed))
}

/// Capacity of the hand spin ring, in messages.
const RING_CAP: usize = 4096;

/// Times `msgs` 8-byte messages from a child to the parent with `peer`, after a warm-up
/// message. The parent checks every value.
///
/// # Errors
/// An OS error, `TimedOut` if the child stops sending, or a corrupted sequence.
pub fn tput(peer: TputPeer, msgs: u64) -> io::Result<Duration> {
    match peer {
        TputPeer::ShmkitSpsc => tput_spsc(msgs, false),
        TputPeer::ShmkitSpscBatch => tput_spsc(msgs, true),
        TputPeer::ShmkitMpmc => tput_mpmc(msgs),
        TputPeer::HandSpinRing => tput_ring(msgs),
        TputPeer::Pipe => {
            let (r, w) = pipe()?;
            tput_fd(msgs, r, w)
        }
        TputPeer::Socketpair => {
            let (a, b) = socketpair()?;
            tput_fd(msgs, a, b)
        }
    }
}

fn tput_fd(msgs: u64, rx: OwnedFd, tx: OwnedFd) -> io::Result<Duration> {
    let total = msgs + 1;
    let (child, old) = spawn_pinned(|| {
        for i in 1..=total {
            if write_u64(&tx, i).is_err() {
                return 2;
            }
        }
        0
    })?;
    drop(tx);
    let result = receive_in_order(total, || read_u64(&rx));
    drop(rx);
    finish(child, old, result)
}

/// The hand-written ring: head and tail on their own cache lines, each side caching the
/// other's index, pure spinning. The baseline a shared-memory queue is held to.
#[repr(C)]
struct SpinRing {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    slots: [AtomicU64; RING_CAP],
}

// SAFETY: atomics only, `#[repr(C)]`, zero is empty.
unsafe impl Shareable for SpinRing {}

fn tput_ring(msgs: u64) -> io::Result<Duration> {
    let mut layout = Layout::new();
    let at: Offset<SpinRing> = layout.push();
    let seg = Segment::anonymous(Kind::RAW, layout.size()).map_err(io::Error::other)?;
    let ring = seg.get(at).map_err(io::Error::other)?;
    let total = msgs + 1;
    let cap = RING_CAP as u64;
    let (child, old) = spawn_pinned(|| {
        let deadline = Instant::now() + PEER_TIMEOUT;
        let mut tail = 0u64;
        let mut head_cache = 0u64;
        for i in 1..=total {
            let mut n = 0u32;
            while tail - head_cache == cap {
                // Acquire: the consumer finished reading the slot before moving head.
                head_cache = ring.head.load(Ordering::Acquire);
                hint::spin_loop();
                n = n.wrapping_add(1);
                if n % 4096 == 0 && Instant::now() >= deadline {
                    return 2;
                }
            }
            ring.slots[(tail % cap) as usize].store(i, Ordering::Relaxed);
            tail += 1;
            // SYNC(tail): publishes the slot; pairs with the consumer's Acquire load.
            ring.tail.store(tail, Ordering::Release);
        }
        0
    })?;
    let deadline = Instant::now() + PEER_TIMEOUT;
    let mut head = 0u64;
    let mut tail_cache = 0u64;
    let mut start = Instant::now();
    let mut result = Ok(());
    'outer: for i in 1..=total {
        let mut n = 0u32;
        while head == tail_cache {
            // SYNC(tail): pairs with the producer's Release store.
            tail_cache = ring.tail.load(Ordering::Acquire);
            hint::spin_loop();
            n = n.wrapping_add(1);
            if n % 4096 == 0 && Instant::now() >= deadline {
                result = Err(timeout_err("spin ring"));
                break 'outer;
            }
        }
        let v = ring.slots[(head % cap) as usize].load(Ordering::Relaxed);
        head += 1;
        // Release: our slot read happens before the producer reuses the slot.
        ring.head.store(head, Ordering::Release);
        if v != i {
            result = Err(io::Error::other(format!("expected {i}, got {v}")));
            break;
        }
        if i == 1 {
            start = Instant::now();
        }
    }
    let elapsed = start.elapsed();
    finish(child, old, result.map(|()| elapsed))
}

/// Receives `1..=total` one message at a time with `recv`, checking the order, and times
/// everything after the first (warm-up) message.
pub(crate) fn receive_in_order(
    total: u64,
    mut recv: impl FnMut() -> io::Result<u64>,
) -> io::Result<Duration> {
    let mut start = Instant::now();
    for i in 1..=total {
        let v = recv()?;
        if v != i {
            return Err(io::Error::other(format!("expected {i}, got {v}")));
        }
        if i == 1 {
            start = Instant::now();
        }
    }
    Ok(start.elapsed())
}

fn tput_spsc(msgs: u64, batch: bool) -> io::Result<Duration> {
    let total = msgs + 1;
    let (tx, rx) = crate::queue::spsc_channel::<u64>(RING_CAP).map_err(io::Error::other)?;
    let (child, old) = spawn_pinned(move || {
        if batch {
            let mut buf = [0u64; 64];
            let mut next = 1u64;
            while next <= total {
                let n = ((total - next + 1) as usize).min(buf.len());
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = next + i as u64;
                }
                let mut sent = 0;
                while sent < n {
                    match tx.try_send_slice(&buf[sent..n]) {
                        Ok(0) => {
                            if tx.send(buf[sent]).is_err() {
                                return 2;
                            }
                            sent += 1;
                        }
                        Ok(k) => sent += k,
                        Err(_) => return 2,
                    }
                }
                next += n as u64;
            }
        } else {
            for i in 1..=total {
                if tx.send(i).is_err() {
                    return 2;
                }
            }
        }
        0
    })?;
    let result = if batch {
        // Batches of up to 64: `recv_into` blocks for the first message, then takes what is
        // ready; values are handed out one by one to the in-order check.
        let mut buf = [0u64; 64];
        let (mut have, mut next) = (0usize, 0usize);
        receive_in_order(total, || {
            if next == have {
                have = rx.recv_into(&mut buf).map_err(io::Error::other)?;
                next = 0;
            }
            next += 1;
            Ok(buf[next - 1])
        })
    } else {
        receive_in_order(total, || rx.recv().map_err(io::Error::other))
    };
    drop(rx);
    finish(child, old, result)
}

fn tput_mpmc(msgs: u64) -> io::Result<Duration> {
    let total = msgs + 1;
    let (tx, rx) = crate::queue::Queue::<u64>::new(RING_CAP).map_err(io::Error::other)?.split();
    let (child, old) = spawn_pinned(move || {
        for i in 1..=total {
            if tx.send(i).is_err() {
                return 2;
            }
        }
        0
    })?;
    let result = receive_in_order(total, || rx.recv().map_err(io::Error::other));
    drop(rx);
    finish(child, old, result)
}
