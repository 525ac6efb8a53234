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
