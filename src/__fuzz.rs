//! Fuzz bodies: plain `fn(&[u8])`, run by the cargo-fuzz targets in `fuzz/` (nightly) and by
//! `tests/fuzz_bodies.rs` on stable. Not part of the API.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::shm::header::{Header, HEADER_SIZE, MAGIC};
use crate::shm::{Kind, Segment, ShmOpenError};

/// Makes fuzz inputs reach the deeper checks: bit 0 of the first byte asks for the right magic,
/// bit 1 for a correct checksum over the rest.
fn fix_up(data: &[u8]) -> Vec<u8> {
    let mut bytes = data.to_vec();
    let flags = bytes.first().copied().unwrap_or(0);
    if bytes.len() >= HEADER_SIZE {
        if flags & 1 != 0 {
            bytes[..8].copy_from_slice(&MAGIC.to_le_bytes());
        }
        if flags & 2 != 0 {
            let h: Header = bytemuck::pod_read_unaligned(&bytes[..HEADER_SIZE]);
            bytes[60..64].copy_from_slice(&h.compute_checksum().to_le_bytes());
        }
    }
    bytes
}

/// Header decoding never panics, and what it accepts re-encodes to the same bytes.
pub fn header(data: &[u8]) {
    let bytes = fix_up(data);
    if let Ok(h) = Header::decode(&bytes) {
        assert_eq!(h.encode()[..], bytes[..HEADER_SIZE]);
        assert_eq!(h.magic, MAGIC);
        let size = h.total_size;
        assert!(h.check(h.kind(), size).is_ok());
        assert!(matches!(h.check(h.kind(), size ^ 1), Err(ShmOpenError::SizeMismatch { .. })));
    }
}

/// The bytes as a whole segment file, opened through `Segment::open_fd`: an error or a
/// segment whose every reported size is consistent, never a crash.
pub fn segment_file(data: &[u8]) {
    let bytes = fix_up(data);
    // SAFETY: valid C string; memfd_create returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"shmkit-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes).expect("write to memfd");
    let fd = OwnedFd::from(file);
    let kind = Header::decode(&bytes).map_or(Kind::RAW, |h| h.kind());
    let raw_fd = fd.as_raw_fd();
    if let Ok(seg) = Segment::open_fd_timeout(fd, kind, Duration::ZERO) {
        assert_eq!(seg.len(), bytes.len());
        assert!(seg.fd().is_some_and(|f| f.as_raw_fd() == raw_fd));
        let h = seg.header().expect("header validated on open");
        assert_eq!(h.total_size as usize, seg.len());
        assert_eq!(seg.payload_len() as u64, h.payload_len());
    }
}

/// Arbitrary bytes as the shared state of a lock, a semaphore, an event and a barrier (as a
/// hostile peer could leave them): every operation returns an error, a recovered lock or a
/// result, never a panic or an out-of-bounds access, and a lock that was acquired works.
pub fn sync_state(data: &[u8]) {
    use std::sync::Arc;

    use crate::shm::Layout;
    use crate::sync::{Barrier, Event, Lock, RawBarrier, RawEvent, RawLock, RawSemaphore, Semaphore};

    let mut layout = Layout::new();
    let lock_at = layout.push::<RawLock>();
    let sem_at = layout.push::<RawSemaphore>();
    let ev_at = layout.push::<RawEvent>();
    let bar_at = layout.push::<RawBarrier>();
    let seg = Arc::new(Segment::anonymous(Kind::RAW, layout.size()).expect("anonymous segment"));
    let n = data.len().min(layout.size());
    // SAFETY: `n` bytes fit the payload; nobody else maps this fresh segment yet.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.payload_ptr().as_ptr(), n) };

    let lock = Lock::at(seg.clone(), lock_at).expect("fits");
    let acquired = match lock.lock_timeout(Duration::from_millis(1)) {
        Ok(g) => Some(g),
        Err(e) => e.into_inner(),
    };
    if let Some(g) = acquired {
        crate::sync::LockGuard::mark_consistent(&g);
        drop(g);
        let again = lock.try_lock();
        assert!(again.is_ok(), "a lock recovered from hostile bytes must work afterwards");
    }

    let sem = Semaphore::at(seg.clone(), sem_at).expect("fits");
    let before = sem.value();
    if sem.try_acquire() {
        assert_eq!(sem.value(), before - 1);
        let _ = sem.release(1);
    }
    let _ = sem.release(3);
    let _ = sem.acquire_timeout(Duration::ZERO);

    let ev = Event::at(seg.clone(), ev_at).expect("fits");
    let _ = ev.wait_timeout(Duration::ZERO);
    ev.set();
    assert!(ev.is_set());

    let bar = Barrier::at(seg, bar_at).expect("fits");
    assert!((1..=crate::sync::MAX_PARTIES).contains(&bar.parties()));
    let _ = bar.wait_timeout(Duration::ZERO);
    bar.reset();
    assert!(!bar.is_broken());
}

/// A frame slot's bytes as a hostile peer could leave them: the first two bytes choose the
/// queue's maximum frame size, the rest is the slot. Decoding gives an error or exactly the
/// declared number of bytes, never more than the maximum and never a read past the slot.
pub fn queue_frame(data: &[u8]) {
    let (max, slot) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]) as usize, rest),
        _ => (0, data),
    };
    if let Ok(msg) = crate::queue::decode_frame(slot, max) {
        assert!(msg.len() <= max);
        let declared = u32::from_le_bytes(slot[..4].try_into().expect("4-byte prefix")) as usize;
        assert_eq!(msg.len(), declared);
        assert_eq!(msg, &slot[4..4 + declared]);
    }
}

/// Arbitrary bytes as the shared memory of an MPMC queue, an SPSC queue and a frame queue
/// (control block, member records, stamps, lengths): opening validates the geometry, and
/// every operation afterwards returns a value or a typed error within its timeout, never a
/// panic, a hang or an out-of-bounds access. Bit 0 of the first byte writes a valid
/// geometry over the garbage so the fuzzer reaches the ring algorithms.
pub fn queue_state(data: &[u8]) {
    use std::sync::Arc;

    use crate::queue::raw::{Geometry, FLAVOR_MPMC, FLAVOR_SPSC};
    use crate::queue::ring::Ring;
    use crate::queue::{FrameQueue, Queue};

    let fix = data.first().is_some_and(|b| b & 1 != 0);
    let load = |geo: Geometry| -> Option<Arc<Segment>> {
        let size = Ring::size_for(&geo).ok()?;
        let seg = Arc::new(Segment::anonymous(Kind::RAW, size).expect("anonymous segment"));
        let n = data.len().min(size);
        // SAFETY: `n` bytes fit the payload; nobody else maps this fresh segment.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.payload_ptr().as_ptr(), n) };
        if fix {
            let ctl = seg.get(crate::shm::Offset::new(0)).expect("control block fits");
            geo.init(ctl);
        }
        Some(seg)
    };
    let zero = Duration::ZERO;

    let geo = Geometry::new(FLAVOR_MPMC, 8, 4).expect("geometry");
    if let Ok(q) = Queue::<u64>::open_at(load(geo).expect("segment"), 0) {
        for i in 0..6u64 {
            let _ = q.try_send(i);
            let _ = q.try_recv();
        }
        let _ = q.send_timeout(7, zero);
        let _ = q.recv_timeout(zero);
        assert!(q.len() <= q.capacity());
        let _ = q.stats();
    }

    let geo = Geometry::new(FLAVOR_SPSC, 8, 3).expect("geometry");
    let seg = load(geo).expect("segment");
    if let Ok(ring) = Ring::at_existing(seg, 0, FLAVOR_SPSC, 8) {
        let (tx, rx) = crate::queue::spsc::ends::<u64>(Arc::new(ring));
        let _ = tx.try_send_slice(&[1, 2, 3, 4]);
        let mut buf = [0u64; 5];
        if let Ok(n) = rx.try_recv_into(&mut buf) {
            assert!(n <= 5);
        }
        let _ = tx.send_timeout(9, zero);
        let _ = rx.recv_timeout(zero);
        assert!(tx.len() <= tx.capacity());
    }

    let geo = Geometry::new(FLAVOR_MPMC, 4 + 16, 2).expect("geometry");
    let seg = load(geo).expect("segment");
    if let Ok(ring) = Ring::at_existing(seg, 0, FLAVOR_MPMC, 4 + 16) {
        let q = FrameQueue::from_arc(Arc::new(ring));
        let _ = q.try_send_bytes(b"frame");
        for _ in 0..3 {
            if let Ok(m) = q.try_recv_bytes() {
                assert!(m.len() <= 16);
            }
        }
        let mut buf = [0u8; 16];
        let _ = q.recv_with(crate::queue::core::Wait::Until(Some(std::time::Instant::now())), |m| {
            buf[..m.len()].copy_from_slice(m)
        });
    }
}

/// Returns whether the array opened (so tests can check that seeds reach the accessors).
///
/// Arbitrary bytes as the shared memory of an `Array<u32>` of up to 16 elements, a
/// `Value<[u8; 24]>` and a `RawValue<u64>` (header, lock word, count, elements): opening
/// validates the header, and every later access stays in bounds and returns within its
/// timeout. Bit 0 of the first byte writes a valid element size and alignment over the
/// garbage so the fuzzer reaches the count check and the accessors.
pub fn value_state(data: &[u8]) -> bool {
    use std::sync::Arc;

    use crate::value::{Array, RawValue, Value};

    let fix = data.first().is_some_and(|b| b & 1 != 0);
    // A segment holding the bytes; with `fix`, the element size, alignment, object kind and
    // type tag of `T` as object `code` written over them.
    fn load<T>(data: &[u8], fix: bool, size: usize, code: u32) -> Arc<Segment> {
        let seg = Arc::new(Segment::anonymous(Kind::RAW, size).expect("anonymous segment"));
        let n = data.len().min(size);
        // SAFETY: `n` bytes fit the payload; nobody else maps this fresh segment.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.payload_ptr().as_ptr(), n) };
        if fix {
            let fields = [
                std::mem::size_of::<T>() as u64,
                std::mem::align_of::<T>() as u64,
                0,
                u64::from(code),
                Kind::tag_of::<T>(),
            ];
            for (i, f) in fields.iter().enumerate() {
                if i != 2 {
                    // SAFETY: offsets 24..64 are inside the 128-byte header region.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            f.to_ne_bytes().as_ptr(),
                            seg.payload_ptr().as_ptr().add(24 + 8 * i),
                            8,
                        )
                    };
                }
            }
        }
        seg
    }
    let zero = Duration::ZERO;

    let size = Array::<u32>::size_for(16).expect("size");
    let seg = load::<u32>(data, fix, size, crate::value::KIND_ARRAY);
    let opened = Array::<u32>::open_at(seg.clone(), 0);
    let reached = opened.is_ok();
    if let Ok(a) = opened {
        let len = a.len();
        assert!(Array::<u32>::size_for(len).expect("size") <= seg.payload_len());
        if let Ok(mut g) = a.lock_timeout(zero) {
            assert_eq!(g.len(), len);
            for x in g.iter_mut() {
                *x = x.wrapping_add(1);
            }
        }
        assert!(a.set(len, 1).is_err());
    }
    let seg = load::<u32>(data, fix, size, crate::value::KIND_RAW_ARRAY);
    if let Ok(a) = crate::value::RawArray::<u32>::open_at(seg, 0) {
        let len = a.len();
        assert_eq!(a.get(len), None);
        assert!(a.set(len, 7).is_err());
        if len > 0 {
            a.set(len - 1, 7).expect("in range");
            assert_eq!(a.get(len - 1), Some(7));
        }
        assert_eq!(a.to_vec().len(), len);
    }

    let seg = load::<[u8; 24]>(data, fix, Value::<[u8; 24]>::size_for(), crate::value::KIND_VALUE);
    if let Ok(v) = Value::<[u8; 24]>::open_at(seg, 0) {
        if let Ok(mut g) = v.lock_timeout(zero) {
            g[0] ^= 1;
        }
    }
    let seg = load::<u64>(data, fix, RawValue::<u64>::size_for(), crate::value::KIND_RAW_VALUE);
    if let Ok(v) = RawValue::<u64>::open_at(seg, 0) {
        v.fetch_add(1);
        v.set(v.get().wrapping_mul(3));
    }
    reached
}

/// Returns whether the pipe attached.
///
/// Arbitrary bytes as the shared memory of a duplex pipe of 2 messages of up to 16 bytes
/// per direction (pipe header, two rings with member records, stamps and lengths):
/// attaching validates the header and both rings, and every operation afterwards returns a
/// value or a typed error within its timeout. Bit 0 of the first byte writes a valid pipe
/// header and ring geometries over the garbage.
pub fn pipe_state(data: &[u8]) -> bool {
    use std::sync::Arc;

    use crate::pipe::{wait, ConnectionError, Pipe};
    use crate::queue::raw::{Geometry, RingCtl, FLAVOR_MPMC};

    let (capacity, max) = (2usize, 16usize);
    // The layout a real pipe of these sizes has: made once, then overwritten.
    let (good, _) = Pipe::builder().capacity(capacity).max_message(max).build().expect("pipe");
    let size = good.segment().payload_len();
    let seg = Arc::new(Segment::anonymous(Kind::new(crate::pipe::KIND_PIPE, 0), size).expect("segment"));
    let n = data.len().min(size);
    // SAFETY: `n` bytes fit the payload; nobody else maps this fresh segment.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), seg.payload_ptr().as_ptr(), n) };
    if data.first().is_some_and(|b| b & 1 != 0) {
        // SAFETY: the first 128 payload bytes are the pipe header region.
        unsafe {
            let p = seg.payload_ptr().as_ptr();
            std::ptr::copy_nonoverlapping(2u32.to_ne_bytes().as_ptr(), p, 4);
            std::ptr::copy_nonoverlapping((capacity as u64).to_ne_bytes().as_ptr(), p.add(8), 8);
            std::ptr::copy_nonoverlapping((max as u64).to_ne_bytes().as_ptr(), p.add(16), 8);
        }
        let geo = Geometry::new(FLAVOR_MPMC, max + 4, capacity).expect("geometry");
        let ring_size = crate::queue::ring::Ring::size_for(&geo).expect("size").next_multiple_of(128);
        for at in [128, 128 + ring_size] {
            if let Ok(ctl) = seg.get::<RingCtl>(crate::shm::Offset::new(at)) {
                geo.init(ctl);
            }
        }
    }
    let zero = Duration::ZERO;
    let attached = crate::pipe::attach_both(seg);
    let reached = attached.is_ok();
    if let Ok((a, b)) = attached {
        assert!(a.max_message() <= size);
        let _ = a.send_bytes_timeout(b"hello", zero);
        let _ = b.send_bytes_timeout(&[7; 16], zero);
        for c in [&a, &b] {
            let _ = c.poll(zero);
            let mut buf = [0u8; 4];
            match c.recv_bytes_into_timeout(&mut buf, zero) {
                Ok(n) => assert!(n <= 4),
                Err(ConnectionError::BufferTooSmall { needed }) => {
                    assert!(needed > 4 && needed <= c.max_message());
                    let m = c.recv_bytes_timeout(zero).expect("the kept message");
                    assert_eq!(m.len(), needed);
                }
                Err(_) => {}
            }
            if let Ok(m) = c.recv_bytes_timeout(zero) {
                assert!(m.len() <= c.max_message());
            }
        }
        let ready = wait(&[&a, &b], Some(zero));
        assert!(ready.len() <= 2);
    }
    reached
}

/// Task and result frames of a pool (the worker's and the parent's decoders): never a
/// panic, and a decoded task frame re-encodes to the same bytes. Returns whether a frame
/// decoded.
pub fn pool_frames(data: &[u8]) -> bool {
    crate::process::pool::fuzz_frames(data)
}

/// Arbitrary bytes as a pool segment, attached as a worker does: every size read from it is
/// bounded before use. Returns whether it attached.
pub fn pool_state(data: &[u8]) -> bool {
    crate::process::pool::fuzz_state(data)
}

/// The spawn start method's payload decoder: never a panic; what it accepts re-encodes to
/// the same bytes. Returns whether it decoded.
pub fn spawn_payload(data: &[u8]) -> bool {
    match crate::process::spawn::Payload::decode(data) {
        Ok(p) => {
            assert_eq!(p.encode(), data, "a decoded payload re-encodes to itself");
            true
        }
        Err(_) => false,
    }
}

/// The kinds [`inspect_state`] builds segments of: the kind, the payload size of a small real
/// object of it, and a fix-up that writes a valid geometry or header over the garbage.
type InspectKind = (Kind, usize, fn(&Segment));

fn inspect_kinds() -> Vec<InspectKind> {
    use crate::queue::raw::{Geometry, RingCtl, FLAVOR_MPMC, FLAVOR_SPSC};
    use crate::queue::ring::Ring;
    use crate::shm::{Layout, Offset};
    use crate::sync::{RawBarrier, RawEvent, RawLock, RawRLock, RawSemaphore};

    fn none(_: &Segment) {}
    fn ring_fix(seg: &Segment, geo: Geometry) {
        if let Ok(ctl) = seg.get::<RingCtl>(Offset::new(0)) {
            geo.init(ctl);
        }
    }
    fn mpmc_geo() -> Geometry {
        Geometry::new(FLAVOR_MPMC, 8, 4).expect("geometry")
    }
    fn frame_geo() -> Geometry {
        Geometry::new(FLAVOR_MPMC, 4 + 16, 2).expect("geometry")
    }
    fn spsc_geo() -> Geometry {
        Geometry::new(FLAVOR_SPSC, 8, 3).expect("geometry")
    }
    fn pipe_fix(seg: &Segment) {
        let geo = frame_geo();
        let mut header = [0u8; 24];
        header[..4].copy_from_slice(&2u32.to_ne_bytes());
        header[8..16].copy_from_slice(&(geo.capacity).to_ne_bytes());
        header[16..24].copy_from_slice(&16u64.to_ne_bytes());
        write(seg, 0, &header);
        if let Ok((at, _)) = crate::pipe::layout(&geo, 2) {
            for a in at {
                if let Ok(ctl) = seg.get::<RingCtl>(Offset::new(a)) {
                    geo.init(ctl);
                }
            }
        }
    }
    /// Writes `bytes` at payload offset `at`, as far as they fit.
    fn write(seg: &Segment, at: usize, bytes: &[u8]) {
        let n = bytes.len().min(seg.payload_len().saturating_sub(at));
        // SAFETY: `at + n <= payload_len`; nobody else maps this fresh segment.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), seg.payload_ptr().as_ptr().add(at), n) };
    }
    fn cells_fix<T>(seg: &Segment, code: u32) {
        let tag = seg.header().map_or(0, |h| h.kind_tag);
        let fields =
            [std::mem::size_of::<T>() as u64, std::mem::align_of::<T>() as u64, 0, u64::from(code), tag];
        for (i, f) in fields.iter().enumerate() {
            if i != 2 {
                write(seg, 24 + 8 * i, &f.to_ne_bytes());
            }
        }
    }
    fn cond_size<L: crate::shm::Shareable>() -> usize {
        let mut l = Layout::new();
        l.push::<L>();
        l.push::<crate::futex::WaitCell>();
        l.size()
    }
    let ring = |geo: Geometry| Ring::size_for(&geo).expect("size");
    let pipe = crate::pipe::layout(&frame_geo(), 2).expect("pipe layout").1;
    let tag = Kind::tag_of::<u64>;
    let cells = crate::value::cells::DATA_AT;
    use crate::value::{KIND_ARRAY, KIND_RAW_ARRAY, KIND_RAW_VALUE, KIND_VALUE};
    vec![
        (Kind::RAW, 256, none),
        (Kind::PING_PONG, 256, none),
        (Kind::new(3, std::mem::size_of::<RawLock>() as u64), std::mem::size_of::<RawLock>(), none),
        (Kind::new(4, std::mem::size_of::<RawRLock>() as u64), std::mem::size_of::<RawRLock>(), none),
        (Kind::new(5, std::mem::size_of::<RawSemaphore>() as u64), std::mem::size_of::<RawSemaphore>(), none),
        (Kind::new(6, std::mem::size_of::<RawEvent>() as u64), std::mem::size_of::<RawEvent>(), none),
        (Kind::new(7, 1), cond_size::<RawLock>(), none),
        (Kind::new(7, 2), cond_size::<RawRLock>(), none),
        (Kind::new(8, std::mem::size_of::<RawBarrier>() as u64), std::mem::size_of::<RawBarrier>(), none),
        (Kind::new(crate::queue::KIND_QUEUE, tag()), ring(mpmc_geo()), |s| ring_fix(s, mpmc_geo())),
        (Kind::new(crate::queue::KIND_JOINABLE, tag()), ring(mpmc_geo()), |s| ring_fix(s, mpmc_geo())),
        (Kind::new(crate::queue::KIND_FRAMES, 0), ring(frame_geo()), |s| ring_fix(s, frame_geo())),
        (Kind::new(crate::queue::KIND_SERDE, tag()), ring(frame_geo()), |s| ring_fix(s, frame_geo())),
        (Kind::new(crate::queue::KIND_SPSC, tag()), ring(spsc_geo()), |s| ring_fix(s, spsc_geo())),
        (Kind::new(KIND_VALUE, tag()), cells + 8, |s| cells_fix::<u64>(s, KIND_VALUE)),
        (Kind::new(KIND_ARRAY, Kind::tag_of::<u32>()), cells + 64, |s| cells_fix::<u32>(s, KIND_ARRAY)),
        (Kind::new(KIND_RAW_VALUE, tag()), cells + 8, |s| cells_fix::<u64>(s, KIND_RAW_VALUE)),
        (Kind::new(KIND_RAW_ARRAY, Kind::tag_of::<u32>()), cells + 64, |s| {
            cells_fix::<u32>(s, KIND_RAW_ARRAY)
        }),
        (Kind::new(crate::pipe::KIND_PIPE, 0), pipe, pipe_fix),
        (Kind::new(19, 0), 256, none),
        (Kind::user(7, 7), 256, none),
        (Kind::new(4242, 0), 256, none),
    ]
}

/// An input for [`inspect_state`] that builds a segment of `kind` (one of the kinds it knows:
/// the sync kinds with this build's tags; queues of `u64`, frames, SPSC of `u64`; `Value<u64>`,
/// `Array<u32>`, `RawValue<u64>`, `RawArray<u32>`; pipes; raw, user and unknown kinds) with
/// `payload`, of the payload's own length (`own_size`) or of a small real object's, with the
/// geometry fix-up if `fix`.
///
/// # Panics
/// If `kind` is not one of them.
pub fn inspect_input(kind: Kind, fix: bool, own_size: bool, payload: &[u8]) -> Vec<u8> {
    let pick = inspect_kinds().iter().position(|k| k.0 == kind).expect("a kind inspect_state builds");
    let mut input = vec![pick as u8, u8::from(fix) | u8::from(own_size) << 1];
    input.extend_from_slice(payload);
    input
}

/// Returns whether the payload was decoded as its kind's object (not corrupted, not left
/// uninterpreted).
///
/// Arbitrary bytes as the payload of a segment of each kind `shmkit inspect` decodes (byte 0
/// picks the kind, byte 1 the options: bit 0 writes a valid geometry or header over the garbage,
/// bit 1 sizes the payload by the input instead of as a small real object): the report is made
/// without a panic, an out-of-bounds read or a change to any byte, and its text is bounded and
/// names the kind.
pub fn inspect_state(data: &[u8]) -> bool {
    use crate::inspect::{inspect_segment, Contents};

    let (pick, flags, payload) = match data {
        [a, b, rest @ ..] => (*a, *b, rest),
        _ => (0, 0, data),
    };
    let kinds = inspect_kinds();
    let (kind, size, fix) = kinds[pick as usize % kinds.len()];
    let size = if flags & 2 != 0 { payload.len().min(1 << 16) } else { size };
    let seg = Segment::anonymous(kind, size).expect("anonymous segment");
    let n = payload.len().min(size);
    // SAFETY: `n` bytes fit the payload; nobody else maps this fresh segment.
    unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), seg.payload_ptr().as_ptr(), n) };
    if flags & 1 != 0 {
        fix(&seg);
    }
    // SAFETY: the payload is `payload_len` bytes of our own mapping; nobody else writes it.
    let bytes =
        || unsafe { std::slice::from_raw_parts(seg.payload_ptr().as_ptr(), seg.payload_len()).to_vec() };
    let before = bytes();
    let report = inspect_segment(&seg).expect("a header this process wrote decodes");
    let text = report.to_string();
    assert!(text.len() < 64 * 1024, "a report of {} bytes", text.len());
    assert!(text.contains(kind.name()), "{text}");
    assert_eq!(bytes(), before, "inspecting changed the segment");
    assert_eq!(report.header.kind(), kind);
    !matches!(report.contents, Contents::Corrupted(_) | Contents::NotInterpreted(_))
}

/// The manager's wire decoder: frames read from the bytes as a server and a client would,
/// each decoded as every message type; never a panic or an allocation past the limit, and a
/// decoded request re-encodes to itself.
#[cfg(feature = "manager")]
pub fn manager_frames(data: &[u8]) {
    crate::manager::__fuzz::fuzz_decode(data);
}

/// The bytes as an authenticated client's stream, served by a real manager connection
/// handler over a socket pair (blocking operations do not wait): never a panic or a hang,
/// and when the connection ends no unnamed object it made or used is left.
#[cfg(feature = "manager")]
pub fn manager_session(data: &[u8]) -> usize {
    crate::manager::__fuzz::fuzz_session(data)
}
