//! Queue workloads beside `peers.rs`: POSIX message queues, producers oversubscribing the
//! cores, 64 KiB messages, a round trip through two queues, the CPU an idle blocked receiver
//! burns, ipc-channel between processes and crossbeam-channel between threads, and the
//! fork/pin plumbing that `benches/queue.rs` uses for its serde peers.
//!
//! Every child is forked with `PDEATHSIG` (it dies with the parent) and an `alarm` of 65 s,
//! the 60 s peer timeout plus 5 (it dies on its own if it hangs), and is reaped with a
//! timeout. So a parent blocked in a pipe read or a `Queue` receive always returns: a dead writer
//! closes its end of the pipe, and a queue whose every sender process died reports
//! `Disconnected`. Where neither holds (a `FrameQueue` handle counts as a sender in the
//! parent too, a POSIX message queue has no end-of-file), the parent waits with a timeout.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::other;
use super::{available_cpus, pin_to, pipe, restore_affinity, timeout_err, PEER_TIMEOUT};
use crate::futex::WaitCell;
use crate::primitive::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::queue::{FrameQueue, Queue, RecvError, Sender};
use crate::shm::{Kind, Layout, Offset, Segment, Shareable};
use crate::util::backoff::Backoff;
use crate::util::child::ForkedChild;

/// Bytes of one `bulk_64KiB` message.
pub const BULK_BYTES: usize = 64 * 1024;
/// Slots of the bulk queues (shmkit's `FrameQueue` and the hand-written ring).
pub const BULK_SLOTS: usize = 16;
/// Producer processes of the `oversubscribed` workloads (plus one consumer).
pub const OVERSUB_PRODUCERS: usize = 3;
/// Capacity of the 8-byte queues, as in `tput_8B`.
const QUEUE_CAP: usize = 4096;

/// Where a forked child runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cpus {
    /// CPU 1 (the parent takes CPU 0), like `spawn_pinned`.
    Second,
    /// CPUs 0 and 1 together, shared with the other processes of the workload.
    FirstTwo,
}

/// Restricts the calling thread to CPUs 0 and 1 when both exist; returns the previous mask.
fn pin_first_two() -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; the calls only read/write the sets we pass.
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
            return None;
        }
        if !libc::CPU_ISSET(0, &old) || !libc::CPU_ISSET(1, &old) {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::CPU_SET(1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        Some(old)
    }
}

/// Pins the parent for a workload whose children run on `cpus`.
fn pin_parent(cpus: Cpus) -> Option<libc::cpu_set_t> {
    match cpus {
        Cpus::Second if available_cpus() >= 2 => pin_to(0),
        Cpus::Second => None,
        Cpus::FirstTwo => pin_first_two(),
    }
}

/// Forks a child running `f` on `cpus`, with PDEATHSIG and a self-destruct alarm.
fn fork_child(cpus: Cpus, f: impl FnOnce() -> i32) -> io::Result<ForkedChild> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let alarm = libc::c_uint::try_from(PEER_TIMEOUT.as_secs() + 5).unwrap_or(libc::c_uint::MAX);
    let two = available_cpus() >= 2;
    // SAFETY: the workloads fork from single-threaded bench processes (the criterion benches
    // and `shmkit bench`; `run_pair`'s callers promise the same). The children set
    // PDEATHSIG, leave if the parent died before that, arm an alarm so a hung child ends,
    // then only use queues, pipes and plain syscalls before `_exit`.
    unsafe {
        crate::util::child::fork(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                return 120;
            }
            libc::alarm(alarm);
            match cpus {
                Cpus::Second if two => {
                    pin_to(1);
                }
                Cpus::Second => {}
                Cpus::FirstTwo => {
                    pin_first_two();
                }
            }
            f()
        })
    }
}

/// Restores the parent's mask, then reaps every child (SIGKILLing them at once if `result`
/// is already an error) and merges their exit statuses into `result`.
fn finish_all(
    children: Vec<ForkedChild>,
    old: Option<libc::cpu_set_t>,
    result: io::Result<Duration>,
) -> io::Result<Duration> {
    restore_affinity(old);
    let d = result?; // on error, dropping `children` kills and reaps them
    let mut failed = None;
    for mut c in children {
        match c.wait_timeout(PEER_TIMEOUT)? {
            Some(st) if st.success() => {}
            st => failed = Some(st),
        }
    }
    match failed {
        None => Ok(d),
        Some(st) => Err(io::Error::other(format!("benchmark child failed: {st:?}"))),
    }
}

/// Forks `child` pinned to CPU 1 (when there are two CPUs) with PDEATHSIG and a
/// self-destruct alarm of 65 s (the 60 s peer timeout + 5 s), runs `parent` here pinned to
/// CPU 0, then restores this thread's mask and reaps the child (within 60 s; at once with
/// SIGKILL if `parent` failed). Returns `parent`'s duration, or an error if either side
/// failed (the child's nonzero exit code included).
///
/// `child`'s captures are dropped in the parent before `parent` runs (fork semantics), so a
/// sender moved into `child` leaves the parent holding only the receiving end: a blocking
/// receive then ends with end-of-file or `Disconnected` if the child dies or its alarm fires.
///
/// # Safety
/// This forks: the calling process must be single-threaded (no other thread may hold a lock
/// the child needs), or `child` must only do async-signal-safe work.
///
/// # Errors
/// The fork, `parent`'s error, or the child's failure.
pub unsafe fn run_pair(
    child: impl FnOnce() -> i32,
    parent: impl FnOnce() -> io::Result<Duration>,
) -> io::Result<Duration> {
    let c = fork_child(Cpus::Second, child)?;
    let old = pin_parent(Cpus::Second);
    let r = parent();
    finish_all(vec![c], old, r)
}

/// Pins the calling thread to one CPU until dropped, then restores its previous mask. A
/// no-op when that CPU is not available.
pub struct PinGuard(Option<libc::cpu_set_t>);

impl std::fmt::Debug for PinGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PinGuard").field(&self.0.is_some()).finish()
    }
}

/// Pins the calling thread to `cpu` for the guard's lifetime (for thread-based peers).
pub fn pin_thread(cpu: usize) -> PinGuard {
    PinGuard(pin_to(cpu))
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        restore_affinity(self.0.take());
    }
}

/// `Ok` if `got` is the `expected` sequence number.
///
/// # Errors
/// An error naming both numbers.
pub fn check_seq(expected: u64, got: u64) -> io::Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(io::Error::other(format!("expected {expected}, got {got}")))
    }
}

/// Receives from a split `Queue` half with no clock read on the fast path: bounded because
/// a dead sender process makes it return `Disconnected`.
fn recv_or_err(rx: &crate::queue::Receiver<u64>) -> io::Result<u64> {
    rx.recv().map_err(other)
}

// ---------------------------------------------------------------------------------------
// POSIX message queue
// ---------------------------------------------------------------------------------------

/// An open POSIX message queue descriptor, closed on drop.
struct Mq(libc::mqd_t);

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: closing a descriptor we own.
        unsafe { libc::mq_close(self.0) };
    }
}

/// The per-queue message limit an unprivileged process may ask for
/// (`/proc/sys/fs/mqueue/msg_max`, 10 by default).
pub fn posix_mq_depth() -> usize {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msg_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10)
}

/// Creates an anonymous-by-unlink POSIX message queue of `depth` 8-byte messages. Falls
/// back to depth 10 if `depth` is refused (EINVAL above `msg_max` without privilege).
fn mq_create(depth: usize) -> io::Result<Mq> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    // Relaxed: a unique counter within this process.
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let name = CString::new(format!("/shmkit-bench-mq-{}-{n}", std::process::id())).map_err(other)?;
    let mut last = io::Error::other("mq_open not tried");
    for depth in [depth, 10] {
        // SAFETY: mq_attr is plain data; all-zero is a valid value before we set fields.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        attr.mq_maxmsg = depth as _;
        attr.mq_msgsize = 8;
        // SAFETY: `name` is NUL-terminated; with O_CREAT, mq_open reads a mode and a pointer
        // to a valid mq_attr, both passed.
        let mqd = unsafe {
            libc::mq_open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
                &attr as *const libc::mq_attr,
            )
        };
        if mqd != -1 {
            // SAFETY: `name` is NUL-terminated. The open descriptor stays valid (and is
            // inherited by fork) after the name is gone, so nothing is left behind.
            unsafe { libc::mq_unlink(name.as_ptr()) };
            return Ok(Mq(mqd));
        }
        last = io::Error::last_os_error();
        if last.raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    Err(last)
}

/// Whether this kernel lets us create a POSIX message queue (`CONFIG_POSIX_MQUEUE`, limits).
///
/// # Errors
/// Why `mq_open` failed.
pub fn posix_mq_available() -> io::Result<()> {
    mq_create(posix_mq_depth()).map(drop)
}

/// An absolute `CLOCK_REALTIME` deadline 60 s (the peer timeout) from now, for `mq_timed*`.
fn mq_deadline() -> libc::timespec {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let d = now + PEER_TIMEOUT;
    libc::timespec { tv_sec: d.as_secs() as libc::time_t, tv_nsec: d.subsec_nanos() as _ }
}

/// Times `msgs` 8-byte messages from a child to the parent through a POSIX message queue
/// (`mq_timedsend` / `mq_timedreceive`, one syscall per message each side) of
/// [`posix_mq_depth`] messages, after a warm-up message. The parent checks every value.
///
/// # Errors
/// An OS error (no mqueue support, queue limits), `TimedOut`, or a corrupted sequence.
pub fn posix_mq_tput(msgs: u64) -> io::Result<Duration> {
    let mq = mq_create(posix_mq_depth())?;
    let total = msgs + 1;
    let mqd = mq.0;
    let child = move || {
        let deadline = mq_deadline();
        for i in 1..=total {
            let buf = i.to_ne_bytes();
            loop {
                // SAFETY: sending 8 bytes from a live buffer; `deadline` is a valid timespec.
                let r = unsafe { libc::mq_timedsend(mqd, buf.as_ptr().cast(), 8, 0, &deadline) };
                if r == 0 {
                    break;
                }
                if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    return 2;
                }
            }
        }
        0
    };
    let parent = move || {
        let deadline = mq_deadline();
        let mut start = Instant::now();
        for i in 1..=total {
            let mut buf = [0u8; 8];
            let n = loop {
                // SAFETY: receiving at most 8 bytes (the queue's message size) into a live
                // buffer; `deadline` is a valid timespec; prio may be null.
                let n = unsafe {
                    libc::mq_timedreceive(mqd, buf.as_mut_ptr().cast(), 8, std::ptr::null_mut(), &deadline)
                };
                if n >= 0 {
                    break n;
                }
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ETIMEDOUT) => return Err(timeout_err("posix mq")),
                    _ => return Err(e),
                }
            };
            if n != 8 {
                return Err(io::Error::other(format!("mq message of {n} bytes")));
            }
            check_seq(i, u64::from_ne_bytes(buf))?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    };
    // SAFETY: called from the single-threaded bench processes, like every workload here.
    let r = unsafe { run_pair(child, parent) };
    drop(mq);
    r
}

/// An ipc-channel error as an `io::Error`.
pub fn ipc_err(e: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("ipc-channel: {e:?}"))
}

/// Times `msgs` 8-byte messages over an ipc-channel (0.23: a Unix socket, postcard frames)
/// made before the fork: the child sends, the parent receives with a blocking `recv`, which
/// ends with `Disconnected` if the child dies. After a warm-up message; every value checked.
///
/// # Errors
/// An OS or ipc-channel error, or a corrupted sequence.
pub fn ipc_channel_tput(msgs: u64) -> io::Result<Duration> {
    let (tx, rx) = ipc_channel::ipc::channel::<u64>()?;
    let total = msgs + 1;
    let child = move || {
        for i in 1..=total {
            if tx.send(i).is_err() {
                return 2;
            }
        }
        0
    };
    let parent = move || {
        let mut start = Instant::now();
        for i in 1..=total {
            check_seq(i, rx.recv().map_err(ipc_err)?)?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    };
    // SAFETY: called from the single-threaded bench processes, like every workload here
    // (ipc-channel starts no thread of its own for a channel).
    unsafe { run_pair(child, parent) }
}

/// Times `msgs` 8-byte messages through a bounded crossbeam channel (4096) between two
/// threads of this process, pinned to CPUs 1 (sender) and 0 (receiver): the in-process
/// scale for the queues. After a warm-up message; every value checked.
///
/// # Errors
/// A corrupted sequence, or the sender thread died.
pub fn crossbeam_threads_tput(msgs: u64) -> io::Result<Duration> {
    let (tx, rx) = crossbeam_channel::bounded::<u64>(4096);
    let total = msgs + 1;
    std::thread::scope(|s| {
        s.spawn(move || {
            let _pin = pin_thread(1);
            for i in 1..=total {
                if tx.send(i).is_err() {
                    return;
                }
            }
        });
        let _pin = pin_thread(0);
        let mut start = Instant::now();
        for i in 1..=total {
            // A panicked sender drops `tx`, so this cannot block forever.
            check_seq(i, rx.recv().map_err(io::Error::other)?)?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    })
}

// ---------------------------------------------------------------------------------------
// Oversubscribed: 3 producers + 1 consumer on 2 cores
// ---------------------------------------------------------------------------------------

/// An implementation of the many-producers-one-consumer workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OversubPeer {
    /// shmkit's MPMC `Queue<u64>` (capacity 4096), one `send`/`recv` per message.
    ShmkitMpmc,
    /// One pipe, every producer making 8-byte (atomic) writes, the consumer 8-byte reads.
    Pipe,
}

impl OversubPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [OversubPeer; 2] = [OversubPeer::ShmkitMpmc, OversubPeer::Pipe];

    /// The benchmark id (`oversubscribed/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            OversubPeer::ShmkitMpmc => "shmkit_mpmc",
            OversubPeer::Pipe => "pipe",
        }
    }
}

/// A start line in shared memory: producers wait on it after their warm-up message.
#[repr(C)]
struct Gate {
    go: CachePadded<AtomicU32>,
    cell: CachePadded<WaitCell>,
}

// SAFETY: atomics and a WaitCell only, `#[repr(C)]`; zero is "closed".
unsafe impl Shareable for Gate {}

impl Gate {
    fn wait(&self) -> bool {
        let deadline = Instant::now() + PEER_TIMEOUT;
        // Acquire: pairs with `open`'s Release (nothing is published through it, but it is
        // what WaitCell polls require).
        self.cell.wait_for(|| (self.go.load(Ordering::Acquire) != 0).then_some(()), Some(deadline)).is_ok()
    }

    fn open(&self) {
        self.go.store(1, Ordering::Release);
        self.cell.notify_all();
    }
}

const TAG_SHIFT: u32 = 56;

fn tag(producer: usize, seq: u64) -> u64 {
    ((producer as u64) << TAG_SHIFT) | seq
}

/// Messages producer `p` sends out of `msgs` in all.
fn share(msgs: u64, p: usize) -> u64 {
    let n = OVERSUB_PRODUCERS as u64;
    msgs / n + u64::from((p as u64) < msgs % n)
}

/// Times `msgs` 8-byte messages from [`OVERSUB_PRODUCERS`] producer processes to the parent,
/// all four processes restricted to CPUs 0 and 1 (oversubscribed two to one). Each producer
/// first sends one warm-up message and waits at a start line; the clock runs from the line
/// opening until the parent has received all `msgs`, checking each producer's order.
///
/// # Errors
/// An OS error, `TimedOut`, a dead producer, or a message out of order.
pub fn oversubscribed(peer: OversubPeer, msgs: u64) -> io::Result<Duration> {
    match peer {
        OversubPeer::ShmkitMpmc => {
            let (tx, rx) = Queue::<u64>::new(QUEUE_CAP).map_err(other)?.split();
            oversub_run(msgs, tx, |tx: &Sender<u64>, v| tx.send(v).is_ok(), move || recv_or_err(&rx))
        }
        OversubPeer::Pipe => {
            let (r, w) = pipe()?;
            let (r, w) = (File::from(r), File::from(w));
            oversub_run(
                msgs,
                w,
                |w: &File, v: u64| (&*w).write_all(&v.to_ne_bytes()).is_ok(),
                move || {
                    let mut b = [0u8; 8];
                    (&r).read_exact(&mut b)?;
                    Ok(u64::from_ne_bytes(b))
                },
            )
        }
    }
}

fn oversub_run<S>(
    msgs: u64,
    tx: S,
    send: impl Fn(&S, u64) -> bool,
    mut recv: impl FnMut() -> io::Result<u64>,
) -> io::Result<Duration> {
    let mut layout = Layout::new();
    let at: Offset<Gate> = layout.push();
    let seg = Segment::anonymous(Kind::RAW, layout.size()).map_err(other)?;
    let gate = seg.get(at).map_err(other)?;
    let mut children = Vec::with_capacity(OVERSUB_PRODUCERS);
    for p in 0..OVERSUB_PRODUCERS {
        let (tx, send) = (&tx, &send);
        let count = share(msgs, p);
        children.push(fork_child(Cpus::FirstTwo, move || {
            if !send(tx, tag(p, 0)) {
                return 2;
            }
            if !gate.wait() {
                return 3;
            }
            for s in 1..=count {
                if !send(tx, tag(p, s)) {
                    return 2;
                }
            }
            0
        })?);
    }
    // The parent keeps only the receiving end: a dead producer shows as EOF/Disconnected.
    drop(tx);
    let old = pin_parent(Cpus::FirstTwo);
    let result = (|| {
        let mut warm = [false; OVERSUB_PRODUCERS];
        for _ in 0..OVERSUB_PRODUCERS {
            let v = recv()?;
            let p = (v >> TAG_SHIFT) as usize;
            if p >= OVERSUB_PRODUCERS || v & ((1 << TAG_SHIFT) - 1) != 0 || warm[p] {
                return Err(io::Error::other(format!("bad warm-up message {v:#x}")));
            }
            warm[p] = true;
        }
        gate.open();
        let start = Instant::now();
        let mut next = [1u64; OVERSUB_PRODUCERS];
        for _ in 0..msgs {
            let v = recv()?;
            let p = (v >> TAG_SHIFT) as usize;
            let s = v & ((1 << TAG_SHIFT) - 1);
            match next.get_mut(p) {
                Some(n) if *n == s => *n += 1,
                _ => return Err(io::Error::other(format!("message {v:#x} out of order"))),
            }
        }
        Ok(start.elapsed())
    })();
    drop(recv);
    finish_all(children, old, result)
}

// ---------------------------------------------------------------------------------------
// Bulk: 64 KiB messages
// ---------------------------------------------------------------------------------------

/// An implementation of one-way 64 KiB message throughput.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BulkPeer {
    /// shmkit's `FrameQueue` (16 slots of 64 KiB): `send_bytes`, `recv_bytes_timeout`.
    ShmkitFrames,
    /// A hand-written SPSC ring of 16 × 64 KiB slots in an anonymous segment, head and tail
    /// counters, `memcpy` in and out, spinning with a spin-then-yield backoff.
    HandMemcpyRing,
    /// A pipe (default 64 KiB capacity): `write_all` / `read_exact` of 64 KiB.
    Pipe,
}

impl BulkPeer {
    /// Every implementation, shmkit first.
    pub const ALL: [BulkPeer; 3] = [BulkPeer::ShmkitFrames, BulkPeer::HandMemcpyRing, BulkPeer::Pipe];

    /// The benchmark id (`bulk_64KiB/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            BulkPeer::ShmkitFrames => "shmkit_frames",
            BulkPeer::HandMemcpyRing => "hand_memcpy_ring",
            BulkPeer::Pipe => "pipe",
        }
    }
}

/// Writes `seq` into the first and last 8 bytes of `buf`.
fn stamp(buf: &mut [u8], seq: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&seq.to_ne_bytes());
    buf[n - 8..].copy_from_slice(&seq.to_ne_bytes());
}

/// Checks a received message: full length, `seq` in its first and last 8 bytes.
fn check_stamp(buf: &[u8], len: usize, seq: u64) -> io::Result<()> {
    if len != BULK_BYTES {
        return Err(io::Error::other(format!("message {seq}: {len} bytes")));
    }
    let first = u64::from_ne_bytes(buf[..8].try_into().map_err(other)?);
    let last = u64::from_ne_bytes(buf[len - 8..len].try_into().map_err(other)?);
    if first != seq || last != seq {
        return Err(io::Error::other(format!("message {seq}: stamped {first} / {last}")));
    }
    Ok(())
}

/// Times `msgs` messages of [`BULK_BYTES`] from a child to the parent with `peer`, after a
/// warm-up message. The child stamps the sequence number into the first and last 8 bytes of
/// each message; the parent copies each one out of the channel into its own buffer and checks
/// both stamps. Every peer thus copies each message twice (in and out).
///
/// # Errors
/// An OS error, `TimedOut`, or a corrupted message.
pub fn bulk(peer: BulkPeer, msgs: u64) -> io::Result<Duration> {
    match peer {
        BulkPeer::ShmkitFrames => {
            let q = FrameQueue::new(BULK_SLOTS, BULK_BYTES).map_err(other)?;
            let rq = q.clone();
            bulk_run(
                msgs,
                move |m| q.send_bytes(m).is_ok(),
                move |buf| {
                    // The parent's handle counts as a sender too, so a dead child would not
                    // disconnect it: wait with a timeout (which allocates the message).
                    let m = rq.recv_bytes_timeout(PEER_TIMEOUT).map_err(|e| match e {
                        RecvError::Timeout => timeout_err("frame queue"),
                        e => other(e),
                    })?;
                    if m.len() == buf.len() {
                        // The one copy out of the slot was `m` itself: bring the stamps over.
                        let n = m.len();
                        buf[..8].copy_from_slice(&m[..8]);
                        buf[n - 8..].copy_from_slice(&m[n - 8..]);
                    }
                    Ok(m.len())
                },
            )
        }
        BulkPeer::HandMemcpyRing => hand_ring(msgs),
        BulkPeer::Pipe => {
            let (r, w) = pipe()?;
            let (r, w) = (File::from(r), File::from(w));
            bulk_run(
                msgs,
                move |m| (&w).write_all(m).is_ok(),
                move |buf| {
                    (&r).read_exact(buf)?;
                    Ok(buf.len())
                },
            )
        }
    }
}

/// `send` runs in the child (its captures are dropped in the parent at the fork), `recv`
/// fills the parent's buffer and returns the message length.
pub(crate) fn bulk_run(
    msgs: u64,
    mut send: impl FnMut(&[u8]) -> bool,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<Duration> {
    let total = msgs + 1;
    let child = move || {
        let mut buf = vec![0x5au8; BULK_BYTES];
        for i in 1..=total {
            stamp(&mut buf, i);
            if !send(&buf) {
                return 2;
            }
        }
        0
    };
    let parent = move || {
        let mut buf = vec![0u8; BULK_BYTES];
        let mut start = Instant::now();
        for i in 1..=total {
            let n = recv(&mut buf)?;
            check_stamp(&buf, n, i)?;
            if i == 1 {
                start = Instant::now();
            }
        }
        Ok(start.elapsed())
    };
    // SAFETY: called from the single-threaded bench processes, like every workload here.
    unsafe { run_pair(child, parent) }
}

/// The hand ring's counters: slots `head..tail` are full; each on its own cache line.
#[repr(C)]
struct BulkRing {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
}

// SAFETY: atomics only, `#[repr(C)]`; zero is an empty ring.
unsafe impl Shareable for BulkRing {}

/// Spins (then yields) until `ready` holds; false after the 60 s peer timeout.
fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    if ready() {
        return true;
    }
    let mut backoff = Backoff::new(2048, 0);
    let mut deadline = None;
    loop {
        backoff.snooze();
        if ready() {
            return true;
        }
        if !backoff.is_spinning() {
            let d = *deadline.get_or_insert_with(|| Instant::now() + PEER_TIMEOUT);
            if Instant::now() >= d {
                return false;
            }
        }
    }
}

fn hand_ring(msgs: u64) -> io::Result<Duration> {
    let mut layout = Layout::new();
    let at: Offset<BulkRing> = layout.push();
    let data_at = layout.push_slice::<AtomicU64>(BULK_SLOTS * BULK_BYTES / 8);
    let seg = Segment::anonymous(Kind::RAW, layout.size()).map_err(other)?;
    let ring = seg.get(at).map_err(other)?;
    // The slots, as bytes. AtomicU64 is an UnsafeCell, so writing through a pointer derived
    // from the shared slice is allowed; the head/tail protocol keeps the two processes'
    // plain copies of a slot from overlapping in time.
    let data = seg.get_slice(data_at).map_err(other)?.as_ptr() as *mut u8;
    let slots = BULK_SLOTS as u64;
    let slot = |i: u64| {
        // SAFETY: (i % slots) * BULK_BYTES + BULK_BYTES <= the slice's byte length.
        unsafe { data.add((i % slots) as usize * BULK_BYTES) }
    };
    let mut tail = 0u64;
    let mut head_cache = 0u64;
    let send = move |m: &[u8]| {
        if tail - head_cache == slots {
            let ok = spin_until(|| {
                // Acquire: the consumer finished copying the slot out before moving head.
                head_cache = ring.head.load(Ordering::Acquire);
                tail - head_cache < slots
            });
            if !ok {
                return false;
            }
        }
        // SAFETY: the slot at `tail` is free (tail - head < slots) and only we write it
        // until we publish it below; `m` is BULK_BYTES long.
        unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), slot(tail), m.len().min(BULK_BYTES)) };
        tail += 1;
        // SYNC(tail): publishes the slot; pairs with the consumer's Acquire load.
        ring.tail.store(tail, Ordering::Release);
        true
    };
    let mut head = 0u64;
    let mut tail_cache = 0u64;
    let recv = move |buf: &mut [u8]| {
        if head == tail_cache {
            let ok = spin_until(|| {
                // SYNC(tail): pairs with the producer's Release store.
                tail_cache = ring.tail.load(Ordering::Acquire);
                head != tail_cache
            });
            if !ok {
                return Err(timeout_err("hand memcpy ring"));
            }
        }
        let n = buf.len().min(BULK_BYTES);
        // SAFETY: the slot at `head` is published (head < tail) and the producer does not
        // touch it until we move head below; `buf` has room for n bytes.
        unsafe { std::ptr::copy_nonoverlapping(slot(head), buf.as_mut_ptr(), n) };
        head += 1;
        // Release: our copy out happens before the producer reuses the slot.
        ring.head.store(head, Ordering::Release);
        Ok(n)
    };
    bulk_run(msgs, send, recv)
}

// ---------------------------------------------------------------------------------------
// Round trip over two queues
// ---------------------------------------------------------------------------------------

/// Times `iters` 8-byte round trips over two shmkit `Queue<u64>`s (ping and pong, split
/// halves, both sides blocking in `recv`), after one warm-up round.
///
/// # Errors
/// An OS error, a dead child (`Disconnected`), or an echo mismatch.
pub fn rtt_queue(iters: u64) -> io::Result<Duration> {
    let (ping_tx, ping_rx) = Queue::<u64>::new(64).map_err(other)?.split();
    let (pong_tx, pong_rx) = Queue::<u64>::new(64).map_err(other)?.split();
    let rounds = iters + 1;
    let child = move || {
        for i in 1..=rounds {
            match ping_rx.recv() {
                Ok(v) if v == i => {}
                _ => return 2,
            }
            if pong_tx.send(i).is_err() {
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
            ping_tx.send(i).map_err(other)?;
            check_seq(i, recv_or_err(&pong_rx)?)?;
        }
        Ok(start.elapsed())
    };
    // SAFETY: called from the single-threaded bench processes, like every workload here.
    unsafe { run_pair(child, parent) }
}

// ---------------------------------------------------------------------------------------
// Idle CPU
// ---------------------------------------------------------------------------------------

/// What the idle child blocks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdlePeer {
    /// `Queue::<u64>::recv()` on an empty queue.
    ShmkitQueue,
    /// A blocking 8-byte `read` on an empty pipe.
    Pipe,
    /// `std::thread::sleep` for the same time: the floor (timer wake-ups).
    Sleep,
}

impl IdlePeer {
    /// Every variant, shmkit first.
    pub const ALL: [IdlePeer; 3] = [IdlePeer::ShmkitQueue, IdlePeer::Pipe, IdlePeer::Sleep];

    /// The row name.
    pub fn name(self) -> &'static str {
        match self {
            IdlePeer::ShmkitQueue => "shmkit_queue_recv",
            IdlePeer::Pipe => "pipe_read",
            IdlePeer::Sleep => "sleep (floor)",
        }
    }
}

/// This process's CPU time (user + system, all threads) so far.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and out pointer; async-signal-safe, so a forked child may call it.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Forks a child that blocks (with `peer`) for `idle` with nothing to receive, then sends it
/// one message to release it, reaps it and returns the CPU time it used from just before it
/// blocked until just after it woke up (its own `CLOCK_PROCESS_CPUTIME_ID`, reported through
/// shared memory): the cost of waiting, without the fork, the exit or the first touches of
/// the queue.
///
/// # Errors
/// An OS error, or the child failed or did not exit in time.
pub fn idle_cpu(peer: IdlePeer, idle: Duration) -> io::Result<Duration> {
    let used = super::sync_peers::shared_counter()?;
    let slot: &AtomicU64 = &used;
    // The child's report: nanoseconds of CPU between blocking and waking, plus one (so that
    // zero means "no report").
    let report = move |since: Duration| {
        let ns = process_cpu().saturating_sub(since).as_nanos() as u64;
        // Relaxed: the parent reads it after reaping the child.
        slot.store(ns + 1, Ordering::Relaxed);
    };
    let mut child = match peer {
        IdlePeer::ShmkitQueue => {
            let (tx, rx) = Queue::<u64>::new(8).map_err(other)?.split();
            let child = fork_child(Cpus::Second, move || {
                // A first empty poll outside the measured window: attaching is not waiting.
                if rx.try_recv().is_ok() {
                    return 2;
                }
                let since = process_cpu();
                let got = rx.recv();
                report(since);
                match got {
                    Ok(1) => 0,
                    _ => 2,
                }
            })?;
            std::thread::sleep(idle);
            tx.send(1).map_err(other)?;
            child
        }
        IdlePeer::Pipe => {
            let (r, w) = pipe()?;
            let r = File::from(r);
            let child = fork_child(Cpus::Second, move || {
                let mut b = [0u8; 8];
                let since = process_cpu();
                let got = (&r).read_exact(&mut b);
                report(since);
                match got {
                    Ok(()) if u64::from_ne_bytes(b) == 1 => 0,
                    _ => 2,
                }
            })?;
            std::thread::sleep(idle);
            File::from(w).write_all(&1u64.to_ne_bytes())?;
            child
        }
        IdlePeer::Sleep => fork_child(Cpus::Second, move || {
            let since = process_cpu();
            std::thread::sleep(idle);
            report(since);
            0
        })?,
    };
    match child.wait_timeout(PEER_TIMEOUT)? {
        Some(st) if st.success() => {}
        st => return Err(io::Error::other(format!("idle child failed: {st:?}"))),
    }
    // Relaxed: the child is reaped; its store happened before its exit.
    match slot.load(Ordering::Relaxed) {
        0 => Err(io::Error::other("idle child did not report its CPU time")),
        ns => Ok(Duration::from_nanos(ns - 1)),
    }
}
