//! Runs the cargo-fuzz bodies (`shmkit::__fuzz`, see `fuzz/`) on stable: random inputs from
//! proptest, hand-made seeds around a valid segment file, and `Segment::open_fd` checked
//! against a model built from `Header::decode` and `Header::check`.
//!
//! The bodies "fix up" their input: bit 0 of the first byte asks for the right magic, bit 1 for
//! a re-sealed checksum. A valid file starts with `b'S'` (0x53), which has both bits set, so a
//! flipped creator field in a seed is re-sealed by the body and the file opens; a flip of the
//! first byte changes which fix-ups run.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use proptest::prelude::*;
use shmkit::shm::header::{HEADER_SIZE, PAYLOAD_OFFSET};
use shmkit::shm::{Backing, Header, Kind, Segment, ShmOpenError};

/// A user kind with a tag, so a seed that opens must carry both through the body.
const SEED_KIND: Kind = Kind::user(5, 0x1234_5678_9abc_def0);

/// A valid memfd-segment file: the header, then zeros up to `total_size`.
fn valid_file(kind: Kind, payload: usize) -> Vec<u8> {
    let total = PAYLOAD_OFFSET + payload;
    let mut bytes = vec![0u8; total];
    bytes[..HEADER_SIZE].copy_from_slice(&Header::new(kind, Backing::Memfd, total as u64, false).encode());
    bytes
}

/// A memfd holding exactly `bytes`.
fn memfd_with(bytes: &[u8]) -> OwnedFd {
    // SAFETY: valid C string; memfd_create returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"shmkit-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.write_all(bytes).unwrap();
    file.into()
}

/// What `Segment::open_fd` must answer for a file holding `bytes`, from the header checks
/// alone (`Err` as its `Debug` text, since `ShmOpenError` is not `PartialEq`).
fn model(bytes: &[u8], kind: Kind) -> Result<(), String> {
    let answer = if bytes.len() < PAYLOAD_OFFSET {
        Err(ShmOpenError::TooSmall { size: bytes.len() as u64 })
    } else {
        Header::decode(bytes).and_then(|h| h.check(kind, bytes.len() as u64))
    };
    answer.map_err(|e| format!("{e:?}"))
}

/// Opens `bytes` as a segment file (without waiting for publication) and compares the
/// outcome with [`model`].
fn open_matches_model(bytes: &[u8], kind: Kind) -> Result<(), TestCaseError> {
    let got = Segment::open_fd_timeout(memfd_with(bytes), kind, Duration::ZERO);
    let want = model(bytes, kind);
    match (&got, &want) {
        (Ok(seg), Ok(())) => {
            prop_assert_eq!(seg.len(), bytes.len());
            prop_assert_eq!(seg.payload_len(), bytes.len() - PAYLOAD_OFFSET);
            let h = seg.header().unwrap();
            prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_SIZE]);
            prop_assert_eq!(seg.backing(), h.backing());
        }
        (Err(e), Err(w)) => prop_assert_eq!(&format!("{e:?}"), w),
        _ => prop_assert!(false, "open_fd gave {:?}, model says {:?}", got.as_ref().map(|_| ()), want),
    }
    Ok(())
}

/// Seeds: the valid file, each header byte flipped three ways, truncated copies and one
/// byte too long.
fn seeds() -> Vec<Vec<u8>> {
    let good = valid_file(SEED_KIND, 72);
    let mut out = vec![good.clone()];
    for at in 0..HEADER_SIZE {
        for mask in [0x01, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= mask;
            out.push(b);
        }
    }
    out.extend(truncations(&good));
    let mut longer = good.clone();
    longer.push(0);
    out.push(longer);
    out
}

/// Every prefix up to one byte past the header, then every 8th length short of the whole.
fn truncations(good: &[u8]) -> Vec<Vec<u8>> {
    (0..=HEADER_SIZE + 1)
        .chain((HEADER_SIZE + 8..good.len()).step_by(8))
        .map(|len| good[..len].to_vec())
        .collect()
}

#[test]
fn smoke() {
    for kind in [Kind::RAW, SEED_KIND] {
        let good = valid_file(kind, 72);
        let seg = Segment::open_fd(memfd_with(&good), kind).expect("the valid file opens");
        assert_eq!(seg.len(), good.len());
        assert_eq!(seg.payload_len(), 72);
        assert_eq!(seg.backing(), Backing::Memfd);
        assert_eq!(seg.header().unwrap().kind(), kind);
        // The body must reach its success path on this file: it fixes up nothing (the first
        // byte's fix-up bits only re-apply what is there) and expects the header's kind.
        assert_eq!(good[0] & 0b11, 0b11);
        shmkit::__fuzz::header(&good);
        shmkit::__fuzz::segment_file(&good);
    }
}

#[test]
fn header_seeds() {
    for s in seeds() {
        shmkit::__fuzz::header(&s);
    }
}

#[test]
fn segment_file_seeds() {
    for s in seeds() {
        shmkit::__fuzz::segment_file(&s);
    }
}

#[test]
fn flipped_bytes() {
    // Unlike the bodies, no fix-up: every single-byte flip of the header must be refused, for
    // the reason the model gives.
    let good = valid_file(SEED_KIND, 72);
    for at in 0..HEADER_SIZE {
        for mask in [0x01, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= mask;
            assert!(model(&b, SEED_KIND).is_err(), "flip {mask:#04x} at byte {at} accepted by the model");
            open_matches_model(&b, SEED_KIND).unwrap_or_else(|e| panic!("flip {mask:#04x} at {at}: {e}"));
        }
    }
}

#[test]
fn truncated() {
    let good = valid_file(SEED_KIND, 72);
    for short in truncations(&good) {
        let len = short.len();
        let got = Segment::open_fd_timeout(memfd_with(&short), SEED_KIND, Duration::ZERO);
        if len < PAYLOAD_OFFSET {
            assert!(matches!(got, Err(ShmOpenError::TooSmall { size }) if size == len as u64), "{len} bytes");
        } else {
            assert!(
                matches!(got, Err(ShmOpenError::SizeMismatch { header, actual })
                    if header == good.len() as u64 && actual == len as u64),
                "{len} bytes"
            );
        }
        open_matches_model(&short, SEED_KIND).unwrap_or_else(|e| panic!("{len} bytes: {e}"));
    }
}

/// A valid file, then up to three byte flips (mostly in the header) and maybe a new length.
fn mutated_file() -> impl Strategy<Value = Vec<u8>> {
    let flips =
        proptest::collection::vec((prop_oneof![3 => 0usize..HEADER_SIZE, 1 => any::<usize>()], 1u8..), 0..4);
    let resize = proptest::option::weighted(0.2, 0usize..400);
    (0usize..200, flips, resize).prop_map(|(payload, flips, resize)| {
        let mut b = valid_file(SEED_KIND, payload);
        for (at, mask) in flips {
            let at = at % b.len();
            b[at] ^= mask;
        }
        if let Some(len) = resize {
            b.resize(len, 0);
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn header_random(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        shmkit::__fuzz::header(&bytes);
    }

    #[test]
    fn header_mutated(bytes in mutated_file()) {
        shmkit::__fuzz::header(&bytes);
    }
}

proptest! {
    // Each case makes a memfd and maps it.
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn segment_file_random(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        shmkit::__fuzz::segment_file(&bytes);
    }

    #[test]
    fn segment_file_mutated(bytes in mutated_file()) {
        shmkit::__fuzz::segment_file(&bytes);
        open_matches_model(&bytes, SEED_KIND)?;
    }
}

/// The payload of a real MPMC queue of four u64 after a few operations: a starting point the
/// mutations below stay close to, so they reach the ring algorithms.
fn queue_snapshot() -> Vec<u8> {
    use std::sync::Arc;
    let size = shmkit::queue::Queue::<u64>::size_for(4).unwrap();
    let seg = Arc::new(Segment::anonymous(Kind::RAW, size).unwrap());
    let q = shmkit::queue::Queue::<u64>::create_at(seg.clone(), 0, 4).unwrap();
    for i in 0..3 {
        q.try_send(i).unwrap();
    }
    assert_eq!(q.try_recv(), Ok(0));
    // SAFETY: the payload is `payload_len` bytes of our own mapping; only atomics write it and
    // nobody else runs.
    unsafe { std::slice::from_raw_parts(seg.payload_ptr().as_ptr(), seg.payload_len()).to_vec() }
}

#[test]
fn queue_frame_seeds() {
    let max = 16u16.to_le_bytes();
    let frame = |len: u32, body: &[u8]| [&max[..], &len.to_le_bytes()[..], body].concat();
    for seed in [
        frame(5, b"hello"),
        frame(0, b""),
        frame(16, &[7; 16]),
        frame(17, &[7; 17]),
        frame(u32::MAX, &[1; 8]),
        frame(9, b"short"),
        vec![],
        vec![1, 2, 3],
    ] {
        shmkit::__fuzz::queue_frame(&seed);
    }
    assert_eq!(shmkit::queue::decode_frame(&frame(5, b"hello")[2..], 16), Ok(&b"hello"[..]));
    assert!(shmkit::queue::decode_frame(&frame(17, &[7; 17])[2..], 16).is_err());
    assert!(shmkit::queue::decode_frame(&frame(9, b"short")[2..], 16).is_err());
}

#[test]
fn queue_state_seeds() {
    let snap = queue_snapshot();
    {
        // The snapshot is a valid queue: the body's MPMC part opens it and reaches the rings.
        use std::sync::Arc;
        let seg = Arc::new(Segment::anonymous(Kind::RAW, snap.len()).unwrap());
        // SAFETY: `snap.len()` bytes fit the fresh payload; nobody else maps it.
        unsafe { std::ptr::copy_nonoverlapping(snap.as_ptr(), seg.payload_ptr().as_ptr(), snap.len()) };
        let q = shmkit::queue::Queue::<u64>::open_at(seg, 0).expect("snapshot opens");
        assert_eq!(q.try_recv(), Ok(1));
        assert_eq!(q.try_recv(), Ok(2));
        assert_eq!(q.try_recv(), Err(shmkit::queue::RecvError::Empty));
    }
    shmkit::__fuzz::queue_state(&snap);
    let mut fixed = snap.clone();
    fixed[0] |= 1;
    shmkit::__fuzz::queue_state(&fixed);
    shmkit::__fuzz::queue_state(&[]);
    shmkit::__fuzz::queue_state(&[0xff; 4096]);
    shmkit::__fuzz::queue_state(&[0x01; 4096]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn queue_frame_random(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        shmkit::__fuzz::queue_frame(&bytes);
    }
}

proptest! {
    // Each case maps three segments.
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn queue_state_random(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
        shmkit::__fuzz::queue_state(&bytes);
    }

    #[test]
    fn queue_state_mutated(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        fix in any::<bool>(),
    ) {
        let mut bytes = queue_snapshot();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if fix {
            bytes[0] |= 1;
        }
        shmkit::__fuzz::queue_state(&bytes);
    }
}

/// The payload of a real `Array<u32>` of 16 elements and of a real duplex pipe (2 × 16
/// bytes) after a few operations: starting points the mutations below stay close to.
fn array_snapshot() -> Vec<u8> {
    use std::sync::Arc;
    let size = shmkit::value::Array::<u32>::size_for(16).unwrap();
    let seg = Arc::new(Segment::anonymous(Kind::RAW, size).unwrap());
    let a = shmkit::value::Array::<u32>::create_at(seg.clone(), 0, &[5; 16]).unwrap();
    a.set(3, 9).unwrap();
    // SAFETY: the payload is `payload_len` bytes of our own mapping; nobody else runs.
    unsafe { std::slice::from_raw_parts(seg.payload_ptr().as_ptr(), seg.payload_len()).to_vec() }
}

fn pipe_snapshot() -> Vec<u8> {
    let (a, b) = shmkit::pipe::Pipe::builder().capacity(2).max_message(16).build().unwrap();
    a.send_bytes(b"hello").unwrap();
    b.send_bytes(&[7; 16]).unwrap();
    let seg = a.segment();
    // SAFETY: as in `array_snapshot`.
    unsafe { std::slice::from_raw_parts(seg.payload_ptr().as_ptr(), seg.payload_len()).to_vec() }
}

#[test]
fn value_state_seeds() {
    let snap = array_snapshot();
    {
        use std::sync::Arc;
        let seg = Arc::new(Segment::anonymous(Kind::RAW, snap.len()).unwrap());
        // SAFETY: `snap.len()` bytes fit the fresh payload; nobody else maps it.
        unsafe { std::ptr::copy_nonoverlapping(snap.as_ptr(), seg.payload_ptr().as_ptr(), snap.len()) };
        let a = shmkit::value::Array::<u32>::open_at(seg, 0).expect("snapshot opens");
        assert_eq!(a.len(), 16);
        assert_eq!(a.get(3), Some(9));
    }
    assert!(shmkit::__fuzz::value_state(&snap), "the snapshot reaches the accessors");
    let mut huge = snap.clone();
    huge[40..48].copy_from_slice(&u64::MAX.to_ne_bytes());
    assert!(!shmkit::__fuzz::value_state(&huge), "a huge count is refused");
    let mut one_past = snap.clone();
    one_past[40..48].copy_from_slice(&17u64.to_ne_bytes());
    assert!(!shmkit::__fuzz::value_state(&one_past), "a count one past the segment is refused");
    assert!(!shmkit::__fuzz::value_state(&[]));
    shmkit::__fuzz::value_state(&[0xff; 512]);
    shmkit::__fuzz::value_state(&[0x01; 512]);
}

#[test]
fn pipe_state_seeds() {
    let snap = pipe_snapshot();
    assert!(shmkit::__fuzz::pipe_state(&snap), "the snapshot attaches");
    let mut fixed = snap.clone();
    fixed[0] |= 1;
    assert!(shmkit::__fuzz::pipe_state(&fixed));
    let mut huge = snap.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_ne_bytes());
    assert!(!shmkit::__fuzz::pipe_state(&huge), "an impossible max_message is refused");
    // Ring 0 (at payload 128) claiming 4 slots where the header says 2: it would reach into
    // ring 1, so the pipe is refused although that ring alone fits the segment.
    let mut wide = snap.clone();
    wide[128 + 8..128 + 16].copy_from_slice(&4u64.to_ne_bytes());
    wide[128 + 16..128 + 24].copy_from_slice(&4u64.to_ne_bytes());
    assert!(!shmkit::__fuzz::pipe_state(&wide), "a ring larger than the header says is refused");
    shmkit::__fuzz::pipe_state(&[]);
    shmkit::__fuzz::pipe_state(&[0xff; 4096]);
    shmkit::__fuzz::pipe_state(&[0x01; 4096]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn value_state_random(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        shmkit::__fuzz::value_state(&bytes);
    }

    #[test]
    fn value_state_mutated(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        fix in any::<bool>(),
    ) {
        let mut bytes = array_snapshot();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if fix {
            bytes[0] |= 1;
        }
        shmkit::__fuzz::value_state(&bytes);
    }
}

proptest! {
    // Each case maps two pipes.
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn pipe_state_random(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        shmkit::__fuzz::pipe_state(&bytes);
    }

    #[test]
    fn pipe_state_mutated(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        fix in any::<bool>(),
    ) {
        let mut bytes = pipe_snapshot();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if fix {
            bytes[0] |= 1;
        }
        shmkit::__fuzz::pipe_state(&bytes);
    }
}

/// A real task frame, result frame and spawn payload (through their public fuzz bodies'
/// encoders): seeds that must decode, and mutations that must not panic.
fn pool_task_frame() -> Vec<u8> {
    // op 1, trampoline 3, function 4, two items: id 1 "ab", id 2 "".
    let mut f = vec![1u8];
    f.extend_from_slice(&3u64.to_le_bytes());
    f.extend_from_slice(&4u64.to_le_bytes());
    f.extend_from_slice(&2u32.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes());
    f.extend_from_slice(&2u32.to_le_bytes());
    f.extend_from_slice(b"ab");
    f.extend_from_slice(&2u64.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f
}

fn spawn_payload_seed() -> Vec<u8> {
    let mut p = b"SHMKSPN1".to_vec();
    p.extend_from_slice(&42u32.to_le_bytes());
    p.push(1);
    p.extend_from_slice(&7u64.to_le_bytes());
    p.extend_from_slice(&9u64.to_le_bytes());
    for part in [&b"Process-1"[..], b"MainProcess", &[1, 2, 3]] {
        p.extend_from_slice(&(part.len() as u32).to_le_bytes());
        p.extend_from_slice(part);
    }
    p
}

#[test]
fn pool_frames_seeds() {
    let task = pool_task_frame();
    assert!(shmkit::__fuzz::pool_frames(&task), "a real task frame decodes");
    assert!(shmkit::__fuzz::pool_frames(&[2]), "a stop frame decodes");
    // Worker 1, one entry: id 5, status ok, 7 bytes.
    let mut result = 1u32.to_le_bytes().to_vec();
    result.extend_from_slice(&1u32.to_le_bytes());
    result.extend_from_slice(&5u64.to_le_bytes());
    result.push(0);
    result.extend_from_slice(&7u32.to_le_bytes());
    result.extend_from_slice(b"payload");
    assert!(shmkit::__fuzz::pool_frames(&result), "a result frame decodes");
    for cut in 1..result.len() {
        assert!(!shmkit::__fuzz::pool_frames(&result[..cut]), "a truncated result frame is refused");
    }
    let mut long = result.clone();
    long[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(!shmkit::__fuzz::pool_frames(&long), "an entry longer than its frame is refused");
    let mut long_item = task.clone();
    long_item[21 + 8..21 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    shmkit::__fuzz::pool_frames(&long_item);
    let mut many = task.clone();
    many[17..21].copy_from_slice(&u32::MAX.to_le_bytes());
    shmkit::__fuzz::pool_frames(&many);
    shmkit::__fuzz::pool_frames(&[]);
}

#[test]
fn pool_state_seeds() {
    assert!(shmkit::__fuzz::pool_state(&[1, 2, 0]), "a plausible control block attaches");
    assert!(shmkit::__fuzz::pool_state(&[1, 3, 200]), "with an initializer argument too");
    assert!(!shmkit::__fuzz::pool_state(&[0; 64]), "zero workers is refused");
    let mut huge = vec![0u8; 64];
    // (Bit 0 of the first byte clear: no fix-up.)
    huge[0..4].copy_from_slice(&(u32::MAX - 1).to_ne_bytes());
    huge[4..8].copy_from_slice(&64u32.to_ne_bytes());
    assert!(!shmkit::__fuzz::pool_state(&huge), "four billion workers do not fit");
    let mut frame = vec![0u8; 64];
    frame[0..4].copy_from_slice(&2u32.to_ne_bytes());
    frame[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert!(!shmkit::__fuzz::pool_state(&frame), "a 4 GiB frame size is refused");
    shmkit::__fuzz::pool_state(&[0xff; 4096]);
}

#[test]
fn spawn_payload_seeds() {
    let seed = spawn_payload_seed();
    assert!(shmkit::__fuzz::spawn_payload(&seed), "a real payload decodes");
    for cut in 0..seed.len() {
        assert!(!shmkit::__fuzz::spawn_payload(&seed[..cut]), "a truncated payload is refused");
    }
    let mut bad_flag = seed.clone();
    bad_flag[12] = 2;
    assert!(!shmkit::__fuzz::spawn_payload(&bad_flag));
    let mut long = seed.clone();
    long[29..33].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(!shmkit::__fuzz::spawn_payload(&long), "a name longer than the payload is refused");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pool_frames_random(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        shmkit::__fuzz::pool_frames(&bytes);
    }

    #[test]
    fn pool_frames_mutated(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = pool_task_frame();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        shmkit::__fuzz::pool_frames(&bytes);
    }

    #[test]
    fn pool_state_random(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        shmkit::__fuzz::pool_state(&bytes);
    }

    #[test]
    fn spawn_payload_mutated(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = spawn_payload_seed();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        shmkit::__fuzz::spawn_payload(&bytes);
    }
}

/// The payloads of real named objects of every kind `inspect_state` builds (locks held, queues
/// and pipes with messages, a barrier, values), as read from their files in `/dev/shm`: starting
/// points the mutations below stay close to. Made once.
fn inspect_snapshots() -> &'static [(Kind, Vec<u8>)] {
    use shmkit::pipe::Pipe;
    use shmkit::queue::{FrameQueue, JoinableQueue, Queue, SpscQueue};
    use shmkit::sync::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
    use shmkit::value::{Array, RawArray, RawValue, Value};
    use std::sync::atomic::{AtomicU32, Ordering};

    static SNAPSHOTS: std::sync::OnceLock<Vec<(Kind, Vec<u8>)>> = std::sync::OnceLock::new();
    SNAPSHOTS.get_or_init(|| {
        static N: AtomicU32 = AtomicU32::new(0);
        let name =
            || format!("shmkit-fuzz-snap-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut out = Vec::new();
        let mut take = |name: &str| {
            let bytes = std::fs::read(format!("/dev/shm/{name}")).unwrap();
            let kind = Header::decode(&bytes).unwrap().kind();
            out.push((kind, bytes[PAYLOAD_OFFSET..].to_vec()));
        };
        let n = name();
        let raw = Segment::create(&n, Kind::RAW, 64).unwrap();
        take(&n);
        let n = name();
        let lock = Lock::create(&n).unwrap();
        let g = lock.lock().unwrap();
        take(&n);
        drop(g);
        let n = name();
        let rlock = RLock::create(&n).unwrap();
        let (g1, g2) = (rlock.lock().unwrap(), rlock.lock().unwrap());
        take(&n);
        drop((g2, g1));
        let n = name();
        let sem = Semaphore::create(&n, 2).unwrap();
        take(&n);
        let n = name();
        let bsem = BoundedSemaphore::create(&n, 3).unwrap();
        bsem.acquire();
        take(&n);
        let n = name();
        let ev = Event::create(&n).unwrap();
        ev.set();
        take(&n);
        let n = name();
        let cond: Condition = Condition::create(&n).unwrap();
        let g = cond.lock().unwrap();
        take(&n);
        drop(g);
        let n = name();
        let rcond: Condition<RLock> = Condition::create(&n).unwrap();
        take(&n);
        let n = name();
        let barrier = Barrier::create(&n, 3).unwrap();
        take(&n);
        let n = name();
        let q = Queue::<u64>::create(&n, 4).unwrap();
        for i in 0..3 {
            q.send(i).unwrap();
        }
        q.recv().unwrap();
        take(&n);
        let n = name();
        let jq = JoinableQueue::<u64>::create(&n, 4).unwrap();
        jq.put(1).unwrap();
        jq.put(2).unwrap();
        take(&n);
        let n = name();
        let fq = FrameQueue::create(&n, 2, 16).unwrap();
        fq.send_bytes(b"hello").unwrap();
        take(&n);
        let n = name();
        let (tx, rx) = SpscQueue::<u64>::create(&n, 3).unwrap().split();
        assert_eq!(tx.try_send_slice(&[1, 2]), Ok(2));
        take(&n);
        let n = name();
        let value = Value::create(&n, 42u64).unwrap();
        take(&n);
        let n = name();
        let array = Array::create(&n, &[5u32; 16]).unwrap();
        take(&n);
        let n = name();
        let raw_value = RawValue::create(&n, 7u64).unwrap();
        take(&n);
        let n = name();
        let raw_array = RawArray::create(&n, &[9u32; 16]).unwrap();
        take(&n);
        let n = name();
        let pipe = Pipe::builder().capacity(2).max_message(16).create(&n).unwrap();
        pipe.send_bytes(b"hi").unwrap();
        take(&n);
        drop((raw, lock, rlock, sem, bsem, ev, cond, rcond, barrier, q, jq, fq, tx, rx));
        drop((value, array, raw_value, raw_array, pipe));
        out
    })
}

#[test]
fn inspect_state_seeds() {
    let snaps = inspect_snapshots();
    assert_eq!(snaps.len(), 18);
    for (kind, payload) in snaps {
        let decoded =
            shmkit::__fuzz::inspect_state(&shmkit::__fuzz::inspect_input(*kind, false, true, payload));
        assert_eq!(decoded, *kind != Kind::RAW, "a real {kind} decodes (a raw segment is not interpreted)");
        // Truncated: never a panic, and nothing decodes from fewer bytes than a semaphore's.
        for cut in [0, 1, 15, 24, payload.len() / 2, payload.len().saturating_sub(1)] {
            let cut = &payload[..cut.min(payload.len())];
            let input = shmkit::__fuzz::inspect_input(*kind, false, true, cut);
            let decoded = shmkit::__fuzz::inspect_state(&input);
            assert!(!decoded || cut.len() >= 12, "{kind} decoded from {} bytes", cut.len());
        }
        // Garbage of the real size, with and without the fix-ups.
        for fill in [0x00, 0x01, 0x7f, 0xff] {
            for fix in [false, true] {
                shmkit::__fuzz::inspect_state(&shmkit::__fuzz::inspect_input(
                    *kind,
                    fix,
                    true,
                    &vec![fill; payload.len()],
                ));
            }
        }
    }
    shmkit::__fuzz::inspect_state(&[]);
    for pick in 0..=255u8 {
        shmkit::__fuzz::inspect_state(&[pick, 0]);
        shmkit::__fuzz::inspect_state(&[pick, 1]);
        shmkit::__fuzz::inspect_state(&[pick, 3]);
    }
}

proptest! {
    // Each case maps one segment and makes one report.
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn inspect_state_random(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        shmkit::__fuzz::inspect_state(&bytes);
    }

    #[test]
    fn inspect_state_mutated(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        fix in any::<bool>(),
    ) {
        let (kind, snap) = pick.get(inspect_snapshots());
        let mut bytes = snap.clone();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        shmkit::__fuzz::inspect_state(&shmkit::__fuzz::inspect_input(*kind, fix, true, &bytes));
    }
}

/// Seeds for the manager's fuzz bodies, recorded from a real client: a script of proxy calls
/// covering every request and operation runs against a real server through a relay that
/// keeps the bytes of both directions. The requests the client sent are a valid session
/// (`manager_session` replays it on a fresh server, which gives out the same object ids);
/// mutations of it at the frame level (dropped, repeated, swapped frames: calls then reach
/// objects of the wrong kind, ids that do not exist, locks left held) and at the byte level
/// reach the handler's deeper states and error paths. Recorded, not hand-encoded, so the
/// seeds follow the wire format wherever `proto.rs` takes it.
#[cfg(feature = "manager")]
mod manager {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use proptest::prelude::*;
    use shmkit::manager::{Client, Manager, ManagerError};

    const KEY: &[u8] = b"fuzz-seed";

    /// One recorded connection, split into frames (each with its length prefix).
    pub struct Recording {
        /// Client → server: the handshake answer.
        pub answer: Vec<u8>,
        /// Client → server: the requests, in order; the last is `Shutdown`.
        pub requests: Vec<Vec<u8>>,
        /// Server → client: a challenge and a welcome, then one reply per request.
        pub replies: Vec<Vec<u8>>,
    }

    /// Frames relayed so far, in the order they went through, from every connection: a
    /// client's requests go out one at a time (each waits for its reply), so their order
    /// across its connections is the order the server saw them in.
    type Log = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

    /// Copies `from` to `to` until `from` ends, logging each whole frame with the number of
    /// this connection (`conn`).
    fn relay(mut from: UnixStream, mut to: UnixStream, conn: usize, log: Log) {
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() >= 4 {
                        let len = u32::from_le_bytes(pending[..4].try_into().unwrap()) as usize;
                        if pending.len() < 4 + len {
                            break;
                        }
                        let frame: Vec<u8> = pending.drain(..4 + len).collect();
                        log.lock().unwrap().push((conn, frame));
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    }

    /// The calls whose requests become the seeds: every request kind and every operation,
    /// successes and the errors a well-formed request can get. All on one connection (no
    /// call while a lock guard holds one), so ids come out as a fresh server assigns them.
    fn script(c: &Client) -> Result<(), ManagerError> {
        let ms = Duration::from_millis(1);
        c.ping()?;
        let d = c.dict::<String, i64>()?;
        assert_eq!(d.insert("a", 1)?, None);
        d.insert("b", 2)?;
        assert_eq!(d.insert("a", 3)?, Some(1));
        assert_eq!(d.get("a")?, Some(3));
        assert!(d.contains_key("b")?);
        assert_eq!(d.get_or_insert("c", 4)?, 4);
        assert_eq!(d.remove("b")?, Some(2));
        assert_eq!(d.len()?, 2);
        assert_eq!(d.keys()?, ["a", "c"]);
        assert_eq!(d.values()?, [3, 4]);
        d.update([("x", 9), ("a", 5)])?;
        assert_eq!(d.items()?.len(), 3);
        let l = c.list_from([1i32, 2, 3])?;
        l.push(4)?;
        assert_eq!(l.pop()?, Some(4));
        assert_eq!(l.get(0)?, 1);
        assert!(matches!(l.get(99), Err(ManagerError::IndexOutOfRange { .. })));
        assert_eq!(l.set(1, 20)?, 2);
        l.insert(0, 0)?;
        assert!(matches!(l.insert(99, 0), Err(ManagerError::IndexOutOfRange { .. })));
        assert_eq!(l.remove(1)?, 1);
        l.reverse()?;
        l.extend([7, 8])?;
        assert_eq!(l.len()?, 5);
        assert_eq!(l.snapshot()?, [3, 20, 0, 7, 8]);
        let empty = c.list::<u8>()?;
        empty.clear()?;
        d.clear()?;
        let q = c.queue_bounded::<String>(2)?;
        q.put("j1".to_string())?;
        q.try_put("j2".to_string())?;
        assert!(matches!(q.try_put("j3".to_string()), Err(ManagerError::Full)));
        assert!(matches!(q.put_timeout("j3".to_string(), ms), Err(ManagerError::Timeout)));
        assert_eq!(q.len()?, 2);
        assert_eq!(q.get()?, "j1");
        assert_eq!(q.try_get()?, "j2");
        assert!(matches!(q.try_get(), Err(ManagerError::Empty)));
        assert!(matches!(q.get_timeout(ms), Err(ManagerError::Timeout)));
        let uq = c.queue::<u8>()?;
        uq.put(1)?;
        let jq = c.joinable_queue::<u32>()?;
        jq.put(1)?;
        jq.put(2)?;
        assert_eq!(jq.get()?, 1);
        jq.task_done()?;
        assert_eq!(jq.unfinished()?, 1);
        assert!(matches!(jq.join_timeout(ms), Err(ManagerError::Timeout)));
        jq.get()?;
        jq.task_done()?;
        jq.join()?;
        assert!(matches!(jq.task_done(), Err(ManagerError::TaskDoneTooMany)));
        let bjq = c.joinable_queue_bounded::<u32>(1)?;
        bjq.put(5)?;
        let v = c.value(1.5f64)?;
        assert_eq!(v.get()?, 1.5);
        v.set(2.5)?;
        assert_eq!(v.swap(3.5)?, 2.5);
        let lock = c.lock()?;
        assert!(!lock.is_locked()?);
        let g = lock.lock()?;
        g.unlock()?;
        let g = lock.lock_timeout(ms)?;
        g.unlock()?;
        let g = lock.try_lock()?;
        drop(g);
        let e = c.event()?;
        assert!(!e.is_set()?);
        assert!(!e.wait_timeout(ms)?);
        e.set()?;
        e.wait()?;
        assert!(e.wait_timeout(ms)?);
        e.clear()?;
        let s = c.bounded_semaphore(1)?;
        assert!(s.try_acquire()?);
        assert!(!s.try_acquire()?);
        assert!(!s.acquire_timeout(ms)?);
        s.release()?;
        assert!(matches!(s.release(), Err(ManagerError::ReleasedTooManyTimes)));
        s.acquire()?;
        assert_eq!(s.value()?, 0);
        let free = c.semaphore(3)?;
        free.release()?;
        let tasks = c.named("tasks").queue::<u32>()?;
        tasks.put(7)?;
        assert_eq!(c.named("tasks").queue::<u32>()?.len()?, 1);
        assert_eq!(c.named("tasks").open_queue::<u32>()?.try_get()?, 7);
        assert!(matches!(c.named("tasks").dict::<u8, u8>(), Err(ManagerError::WrongKind { .. })));
        assert!(matches!(c.named("nobody").open_dict::<u8, u8>(), Err(ManagerError::NoSuchObject(_))));
        c.named("cfg").dict::<String, String>()?.insert("k", "v".to_string())?;
        assert_eq!(c.named("cfg").open_dict::<String, String>()?.len()?, 1);
        c.named("log").list::<u8>()?.push(1)?;
        c.named("jobs").joinable_queue::<u8>()?.put(1)?;
        c.named("bounded").queue_bounded::<u8>(3)?.put(1)?;
        c.named("count").value(0u64)?.set(1)?;
        drop(c.named("mutex").lock()?.try_lock()?);
        c.named("go").event()?.set()?;
        c.named("slots").semaphore(2)?.release()?;
        assert!(c.forget("tasks")?);
        assert!(!c.forget("tasks")?);
        assert!(c.forget("log")?);
        // Still usable through the proxy after its name is gone.
        assert_eq!(tasks.len()?, 0);
        c.ping()
    }

    /// The recording, made once.
    pub fn recording() -> &'static Recording {
        static REC: OnceLock<Recording> = OnceLock::new();
        REC.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("shmkit-fuzz-rec-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let server_path = dir.join("server.sock").to_str().unwrap().to_string();
            let relay_path = dir.join("relay.sock");
            let server = Manager::builder().address(server_path.as_str()).authkey(KEY).bind().unwrap();
            let serving = std::thread::spawn(move || server.serve());
            let listener = UnixListener::bind(&relay_path).unwrap();
            listener.set_nonblocking(true).unwrap();
            let (up, down): (Log, Log) = Default::default();
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let relaying = {
                let (up, down, server_path, done) =
                    (up.clone(), down.clone(), server_path.clone(), done.clone());
                std::thread::spawn(move || {
                    // Every connection the client opens (its home connection holds its
                    // references; calls go through a pooled one).
                    let mut threads = Vec::new();
                    let mut conn = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let client_side = match listener.accept() {
                            Ok((c, _)) => c,
                            Err(_) => {
                                std::thread::sleep(Duration::from_millis(1));
                                continue;
                            }
                        };
                        client_side.set_nonblocking(false).unwrap();
                        conn += 1;
                        let server_side = UnixStream::connect(&server_path).unwrap();
                        let (c2, s2) = (client_side.try_clone().unwrap(), server_side.try_clone().unwrap());
                        let (up, down) = (up.clone(), down.clone());
                        threads.push(std::thread::spawn(move || relay(s2, c2, conn, down)));
                        threads.push(std::thread::spawn(move || relay(client_side, server_side, conn, up)));
                    }
                    for t in threads {
                        t.join().unwrap();
                    }
                })
            };
            let client = Manager::connect(relay_path.to_str().unwrap(), KEY).unwrap();
            script(&client).unwrap();
            // Every proxy of the script is dropped (their releases recorded); the last request.
            client.shutdown_server().unwrap();
            drop(client);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            relaying.join().unwrap();
            serving.join().unwrap().unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            // Each connection's first frame up is its handshake answer, its first two down
            // the challenge and the welcome; the rest are requests and replies.
            let split = |log: &Log, skip: usize| {
                let mut seen = std::collections::HashMap::new();
                let (mut handshake, mut rest) = (Vec::new(), Vec::new());
                for (conn, frame) in log.lock().unwrap().iter() {
                    let n = seen.entry(*conn).or_insert(0usize);
                    *n += 1;
                    if *n <= skip {
                        handshake.push(frame.clone())
                    } else {
                        rest.push(frame.clone())
                    }
                }
                (handshake, rest)
            };
            let (answers, requests) = split(&up, 1);
            let (hellos, mut replies) = split(&down, 2);
            assert_eq!(replies.len(), requests.len(), "one reply per request after the handshakes");
            // The first connection's challenge and welcome lead, as on a connection.
            replies.splice(0..0, hellos[..2].iter().cloned());
            let answer = answers[0].clone();
            Recording { answer, requests, replies }
        })
    }

    /// The recorded requests as one stream: the whole session.
    fn session() -> Vec<u8> {
        recording().requests.concat()
    }

    /// Frame-level mutations of the session, each still a stream of well-formed requests:
    /// every prefix, every frame dropped, doubled, or swapped with the next, the whole
    /// session twice, reversed, and rotated by each offset of a few.
    fn frame_mutations() -> Vec<Vec<u8>> {
        let reqs = &recording().requests;
        let n = reqs.len();
        let mut out = Vec::new();
        for k in 0..=n {
            out.push(reqs[..k].concat());
        }
        for k in 0..n {
            let mut dropped = reqs.clone();
            dropped.remove(k);
            out.push(dropped.concat());
            let mut doubled = reqs.clone();
            doubled.insert(k, reqs[k].clone());
            out.push(doubled.concat());
            if k + 1 < n {
                let mut swapped = reqs.clone();
                swapped.swap(k, k + 1);
                out.push(swapped.concat());
            }
        }
        out.push([reqs.concat(), reqs.concat()].concat());
        out.push(reqs.iter().rev().cloned().collect::<Vec<_>>().concat());
        for r in [1, 2, 3, 5, 8, 13, n / 2] {
            let mut rotated = reqs.clone();
            rotated.rotate_left(r.min(n));
            out.push(rotated.concat());
        }
        out
    }

    #[test]
    fn recorded_session_covers_the_protocol() {
        let r = recording();
        // One request per call of the script (117 when written).
        assert!(r.requests.len() > 100, "{} requests", r.requests.len());
        let bodies: std::collections::HashSet<&[u8]> = r.requests.iter().map(|f| &f[4..]).collect();
        assert!(bodies.len() > 90, "{} distinct requests", bodies.len());
        // The recorded session reaches deep: most of its requests succeed again when
        // replayed (the rest are the script's deliberate error cases and the two timed
        // calls, which do not wait in the fuzz server).
        let ok = shmkit::__fuzz::manager_session(&session());
        assert!(ok * 10 >= r.requests.len() * 7, "only {ok} of {} replies were not errors", r.requests.len());
        // The session without its final Shutdown: the connection ends with objects made.
        let ok_open = shmkit::__fuzz::manager_session(&r.requests[..r.requests.len() - 1].concat());
        assert_eq!(ok_open + 1, ok, "the same session less its Shutdown");
    }

    #[test]
    fn manager_session_frame_mutations() {
        for m in frame_mutations() {
            shmkit::__fuzz::manager_session(&m);
        }
    }

    #[test]
    fn manager_session_byte_mutations() {
        let good = session();
        // (Cuts at frame boundaries are among the frame mutations.)
        for cut in (1..good.len()).step_by(2) {
            shmkit::__fuzz::manager_session(&good[..cut]);
        }
        for (at, mask) in (0..good.len()).zip([0x01u8, 0x80, 0xff].into_iter().cycle()) {
            let mut b = good.clone();
            b[at] ^= mask;
            shmkit::__fuzz::manager_session(&b);
        }
        // Garbage and limits: empty, a prefix alone, a frame just over the limit (4096),
        // a huge announced length, a zero-length frame.
        shmkit::__fuzz::manager_session(&[]);
        shmkit::__fuzz::manager_session(&[0, 0]);
        shmkit::__fuzz::manager_session(&[0, 0, 0, 0]);
        shmkit::__fuzz::manager_session(&4097u32.to_le_bytes());
        shmkit::__fuzz::manager_session(&[0xff; 64]);
        let mut at_limit = 4096u32.to_le_bytes().to_vec();
        at_limit.extend_from_slice(&[0; 4096]);
        shmkit::__fuzz::manager_session(&at_limit);
    }

    #[test]
    fn manager_frames_seeds() {
        let r = recording();
        for f in r.requests.iter().chain(&r.replies).chain([&r.answer]) {
            shmkit::__fuzz::manager_frames(f);
            for cut in 0..f.len() {
                shmkit::__fuzz::manager_frames(&f[..cut]);
            }
            for at in 0..f.len() {
                for mask in [0x01, 0x80, 0xff] {
                    let mut b = f.clone();
                    b[at] ^= mask;
                    shmkit::__fuzz::manager_frames(&b);
                }
            }
        }
        shmkit::__fuzz::manager_frames(&session());
        shmkit::__fuzz::manager_frames(&r.replies.concat());
        shmkit::__fuzz::manager_frames(&[]);
        shmkit::__fuzz::manager_frames(&[0xff; 64]);
    }

    /// A session mutated: frames dropped or repeated, bytes replaced, a splice of two places.
    fn mutated_session() -> impl Strategy<Value = Vec<u8>> {
        let n = recording().requests.len();
        (
            proptest::collection::vec((0..n, 0u8..3), 0..6),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            proptest::option::weighted(0.3, (any::<prop::sample::Index>(), any::<prop::sample::Index>())),
        )
            .prop_map(|(frame_ops, flips, splice)| {
                let mut reqs = recording().requests.clone();
                for (k, what) in frame_ops {
                    let k = k.min(reqs.len().saturating_sub(1));
                    match what {
                        _ if reqs.is_empty() => {}
                        0 => drop(reqs.remove(k)),
                        1 => reqs.insert(k, reqs[k].clone()),
                        _ => {
                            let next = (k + 1) % reqs.len();
                            reqs.swap(k, next);
                        }
                    }
                }
                let mut bytes = reqs.concat();
                if !bytes.is_empty() {
                    for (at, v) in flips {
                        let i = at.index(bytes.len());
                        bytes[i] = v;
                    }
                }
                if let Some((a, b)) = splice {
                    let (a, b) = (a.index(bytes.len() + 1), b.index(bytes.len() + 1));
                    let (lo, hi) = (a.min(b), a.max(b));
                    let tail = bytes[lo..].to_vec();
                    bytes.truncate(hi);
                    bytes.extend_from_slice(&tail);
                }
                bytes
            })
    }

    proptest! {
        // Each case is a connection: a socket pair and two threads.
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn manager_session_random(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            shmkit::__fuzz::manager_session(&bytes);
        }

        #[test]
        fn manager_session_mutated(bytes in mutated_session()) {
            shmkit::__fuzz::manager_session(&bytes);
        }

        #[test]
        fn manager_frames_random(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            shmkit::__fuzz::manager_frames(&bytes);
        }

        #[test]
        fn manager_frames_mutated(bytes in mutated_session()) {
            shmkit::__fuzz::manager_frames(&bytes);
        }
    }

    /// Writes the seeds into `fuzz/corpus/manager_{session,frames}/` for `cargo fuzz run`
    /// (the corpora are not kept in git): the session, its frame-level mutations, and every
    /// recorded frame of both directions.
    #[test]
    #[ignore = "writes fuzz/corpus seeds; run with --ignored before cargo fuzz"]
    fn manager_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |target: &str, name: String, bytes: &[u8]| {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        };
        let r = recording();
        write("manager_session", "recorded-session".into(), &session());
        for (i, m) in frame_mutations().iter().enumerate() {
            write("manager_session", format!("recorded-mutation-{i:04}"), m);
        }
        for (i, f) in r.requests.iter().enumerate() {
            write("manager_frames", format!("recorded-request-{i:04}"), f);
        }
        for (i, f) in r.replies.iter().chain([&r.answer]).enumerate() {
            write("manager_frames", format!("recorded-reply-{i:04}"), f);
        }
        write("manager_frames", "recorded-session".into(), &session());
    }
}
