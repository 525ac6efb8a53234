//! The segment header as a file format: round trips, arbitrary bytes checked against a model of
//! `Header::decode`, and every way a header can be wrong mapped to its own typed error.

use proptest::prelude::*;
use shmkit::shm::header::{FLAG_PERSISTENT, HEADER_SIZE, LAYOUT_VERSION, MAGIC, PAYLOAD_OFFSET};
use shmkit::shm::{Backing, Header, Kind, ShmOpenError};
use shmkit::util::proc::ProcessToken;

/// Bits 1..=2 of `flags` hold the backing (0 anonymous, 1 named, 2 memfd; 3 is invalid).
const BACKING_BITS: u32 = 0b110;

fn backing() -> impl Strategy<Value = Backing> {
    prop_oneof![Just(Backing::Anonymous), Just(Backing::Named), Just(Backing::Memfd)]
}

fn valid() -> Header {
    Header::new(Kind::RAW, Backing::Named, 4096, false)
}

/// Applies `f` to a valid header and re-seals the checksum, so that only `f`'s change is wrong.
fn sealed_with(f: impl FnOnce(&mut Header)) -> [u8; HEADER_SIZE] {
    let mut h = valid();
    f(&mut h);
    h.checksum = h.compute_checksum();
    h.encode()
}

/// Gives `bytes` the right magic, the published version and a matching checksum, so that
/// decoding gets past the framing checks to the field checks.
fn seal(bytes: &mut [u8; HEADER_SIZE]) {
    bytes[..8].copy_from_slice(&MAGIC.to_le_bytes());
    bytes[8..12].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
    let h: Header = bytemuck::pod_read_unaligned(&bytes[..]);
    bytes[60..].copy_from_slice(&h.compute_checksum().to_le_bytes());
}

/// The model of `decode`'s field checks for a header whose magic, version and checksum are
/// right: every reason it may give for refusing it (empty: it must be accepted). A set, so the
/// test does not pin the order in which `decode` checks fields.
fn refusals(h: &Header) -> Vec<&'static str> {
    let mut why = Vec::new();
    if h.payload_offset as usize != PAYLOAD_OFFSET {
        why.push("payload offset");
    }
    if !(PAYLOAD_OFFSET as u64..=isize::MAX as u64).contains(&h.total_size) {
        why.push("total size");
    }
    if h.flags & !(FLAG_PERSISTENT | BACKING_BITS) != 0 || h.flags & BACKING_BITS == BACKING_BITS {
        why.push("unknown flags");
    }
    if h.kind == 0 {
        why.push("kind 0");
    }
    why
}

/// Checks `decode(bytes)` against [`refusals`]; `bytes` must be sealed.
fn check_against_model(bytes: &[u8; HEADER_SIZE]) -> Result<(), TestCaseError> {
    let h: Header = bytemuck::pod_read_unaligned(&bytes[..]);
    let why = refusals(&h);
    match Header::decode(bytes) {
        Ok(decoded) => {
            prop_assert!(why.is_empty(), "accepted a header the model refuses for {:?}: {:?}", why, h);
            prop_assert_eq!(decoded, h);
            prop_assert_eq!(&decoded.encode(), bytes);
        }
        Err(ShmOpenError::Corrupted(reason)) => {
            prop_assert!(why.contains(&reason), "refused for {:?}, model says {:?}: {:?}", reason, why, h);
        }
        Err(other) => prop_assert!(false, "sealed header refused with {:?}: {:?}", other, h),
    }
    Ok(())
}

/// Sealed headers whose fields are mostly plausible, so that both acceptance and each
/// refusal are common (uniform random fields would almost always fail `payload_offset`).
fn sealed_header() -> impl Strategy<Value = [u8; HEADER_SIZE]> {
    let kind = prop_oneof![4 => 1u32.., 1 => Just(0u32)];
    let total = prop_oneof![
        4 => PAYLOAD_OFFSET as u64..=isize::MAX as u64,
        1 => 0u64..=PAYLOAD_OFFSET as u64,
        1 => isize::MAX as u64..,
    ];
    let payload_offset = prop_oneof![4 => Just(PAYLOAD_OFFSET as u32), 1 => any::<u32>()];
    let flags = prop_oneof![4 => 0u32..8, 1 => any::<u32>()];
    let creator = (any::<u32>(), any::<u64>(), any::<u64>());
    (kind, any::<u64>(), total, payload_offset, flags, creator).prop_map(
        |(kind, kind_tag, total_size, payload_offset, flags, (creator_pid, creator_start, created_ns))| {
            let mut h = Header {
                magic: MAGIC,
                version: LAYOUT_VERSION,
                kind,
                kind_tag,
                total_size,
                creator_start,
                created_ns,
                creator_pid,
                payload_offset,
                flags,
                checksum: 0,
            };
            h.checksum = h.compute_checksum();
            h.encode()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(
        code in 1u32..,
        tag in any::<u64>(),
        total in PAYLOAD_OFFSET as u64..=isize::MAX as u64,
        persistent in any::<bool>(),
        backing in backing(),
        creator in proptest::option::of((any::<u32>(), any::<u64>(), any::<u64>())),
    ) {
        let kind = Kind::new(code, tag);
        let mut h = Header::new(kind, backing, total, persistent);
        // The creator fields are not validated: any values must survive the trip.
        if let Some((pid, start, created_ns)) = creator {
            h.creator_pid = pid;
            h.creator_start = start;
            h.created_ns = created_ns;
            h.checksum = h.compute_checksum();
        }
        let bytes = h.encode();
        let decoded = Header::decode(&bytes).unwrap();
        prop_assert_eq!(decoded, h);
        prop_assert_eq!(decoded.encode(), bytes);
        prop_assert_eq!(decoded.magic, MAGIC);
        prop_assert_eq!(decoded.version, LAYOUT_VERSION);
        prop_assert_eq!(decoded.kind(), kind);
        prop_assert_eq!(decoded.backing(), backing);
        prop_assert_eq!(decoded.is_persistent(), persistent);
        prop_assert_eq!(decoded.total_size, total);
        prop_assert_eq!(decoded.payload_len(), total - PAYLOAD_OFFSET as u64);
        match creator {
            Some((pid, start, _)) => prop_assert_eq!(decoded.creator(), ProcessToken { pid, start }),
            None => prop_assert_eq!(decoded.creator_pid, std::process::id()),
        }
        prop_assert!(decoded.check(kind, total).is_ok());
        prop_assert!(
            matches!(decoded.check(Kind::new(code, tag ^ 1), total), Err(ShmOpenError::WrongKind { .. })),
            "a different tag must be a different kind"
        );
        prop_assert!(
            matches!(decoded.check(kind, total ^ 1), Err(ShmOpenError::SizeMismatch { .. })),
            "a different file size must be refused"
        );
    }

    #[test]
    fn arbitrary_bytes(bytes in any::<[u8; HEADER_SIZE]>()) {
        match Header::decode(&bytes) {
            Ok(h) => prop_assert_eq!(h.encode(), bytes),
            Err(
                ShmOpenError::NotShmkit
                | ShmOpenError::NotReady
                | ShmOpenError::VersionMismatch { .. }
                | ShmOpenError::Corrupted(_),
            ) => {}
            Err(other) => prop_assert!(false, "unexpected error from decode: {:?}", other),
        }
    }

    #[test]
    fn arbitrary_bytes_sealed(mut bytes in any::<[u8; HEADER_SIZE]>()) {
        seal(&mut bytes);
        check_against_model(&bytes)?;
    }

    #[test]
    fn arbitrary_fields_sealed(bytes in sealed_header()) {
        check_against_model(&bytes)?;
    }

    #[test]
    fn arbitrary_lengths(bytes in proptest::collection::vec(any::<u8>(), 0..2 * HEADER_SIZE)) {
        match Header::decode(&bytes) {
            Ok(h) => prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_SIZE]),
            Err(ShmOpenError::TooSmall { size }) => {
                prop_assert!(bytes.len() < HEADER_SIZE);
                prop_assert_eq!(size, bytes.len() as u64);
            }
            Err(
                ShmOpenError::NotShmkit
                | ShmOpenError::NotReady
                | ShmOpenError::VersionMismatch { .. }
                | ShmOpenError::Corrupted(_),
            ) => prop_assert!(bytes.len() >= HEADER_SIZE),
            Err(other) => prop_assert!(false, "unexpected error from decode: {:?}", other),
        }
    }

    #[test]
    fn single_byte_flip(at in 0usize..HEADER_SIZE, mask in 1u8..) {
        // FNV-1a changes with any single byte, so no flip can slip through unsealed.
        let mut bytes = valid().encode();
        bytes[at] ^= mask;
        prop_assert!(Header::decode(&bytes).is_err(), "flip {:#04x} at byte {} accepted", mask, at);
    }
}

#[test]
fn smoke() {
    let h = valid();
    assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    assert_eq!(h.magic, MAGIC);
    assert_eq!(h.version, LAYOUT_VERSION);
    assert_eq!(h.payload_offset as usize, PAYLOAD_OFFSET);
    assert_eq!(h.kind(), Kind::RAW);
    assert_eq!(h.backing(), Backing::Named);
    assert!(!h.is_persistent());
    assert_eq!(h.payload_len(), 4096 - PAYLOAD_OFFSET as u64);
    assert!(h.check(Kind::RAW, 4096).is_ok());
}

#[test]
fn unaligned_and_longer_slices() {
    let h = valid();
    let mut buf = [0xeeu8; 1 + HEADER_SIZE + 100];
    buf[1..=HEADER_SIZE].copy_from_slice(&h.encode());
    assert_eq!(Header::decode(&buf[1..]).unwrap(), h);
    assert_eq!(Header::decode(&buf[1..=HEADER_SIZE]).unwrap(), h);
}

#[test]
fn wrong_magic() {
    let mut b = valid().encode();
    b[3] ^= 0x20;
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::NotShmkit)));
    assert!(matches!(Header::decode(&[0u8; HEADER_SIZE]), Err(ShmOpenError::NotShmkit)));
    let b = sealed_with(|h| h.magic = u64::from_le_bytes(*b"SHMKITsG"));
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::NotShmkit)));
}

#[test]
fn version_zero() {
    // What an opener sees before publication: the checksum covers the version as it will be
    // published, so it does not match yet, and NotReady must win over Corrupted.
    let mut b = valid().encode();
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::NotReady)));
    let b = sealed_with(|h| h.version = 0);
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::NotReady)));
}

#[test]
fn version_mismatch() {
    let b = sealed_with(|h| h.version = 2);
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::VersionMismatch { found: 2, expected: 1 })));
    // Another version may checksum differently: the version is reported, not the checksum.
    let mut b = valid().encode();
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::VersionMismatch { found: 2, expected: 1 })));
    let b = sealed_with(|h| h.version = u32::MAX);
    assert!(matches!(
        Header::decode(&b),
        Err(ShmOpenError::VersionMismatch { found: u32::MAX, expected: LAYOUT_VERSION })
    ));
}

#[test]
fn checksum() {
    for at in 16..24 {
        let mut b = valid().encode();
        b[at] ^= 0x01; // inside kind_tag
        assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("checksum mismatch"))), "byte {at}");
    }
    let mut b = valid().encode();
    b[63] ^= 0x80; // the checksum itself
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("checksum mismatch"))));
}

#[test]
fn too_small() {
    let b = valid().encode();
    for len in [0, 1, 8, 12, HEADER_SIZE - 1] {
        assert!(
            matches!(Header::decode(&b[..len]), Err(ShmOpenError::TooSmall { size }) if size == len as u64),
            "{len} bytes"
        );
    }
}

#[test]
fn wrong_kind() {
    let h = valid();
    assert!(matches!(
        h.check(Kind::PING_PONG, 4096),
        Err(ShmOpenError::WrongKind { found, expected }) if found == Kind::RAW && expected == Kind::PING_PONG
    ));
    assert!(matches!(
        h.check(Kind::new(Kind::RAW.code, 1), 4096),
        Err(ShmOpenError::WrongKind { found, expected })
            if found == Kind::RAW && expected == Kind::new(Kind::RAW.code, 1)
    ));
    assert!(matches!(h.check(Kind::user(Kind::RAW.code, 0), 4096), Err(ShmOpenError::WrongKind { .. })));
}

#[test]
fn size_mismatch() {
    let h = valid();
    assert!(matches!(
        h.check(Kind::RAW, 4095),
        Err(ShmOpenError::SizeMismatch { header: 4096, actual: 4095 })
    ));
    assert!(matches!(
        h.check(Kind::RAW, 8192),
        Err(ShmOpenError::SizeMismatch { header: 4096, actual: 8192 })
    ));
    assert!(matches!(h.check(Kind::RAW, 0), Err(ShmOpenError::SizeMismatch { header: 4096, actual: 0 })));
}

#[test]
fn payload_offset() {
    for off in [0, 64, PAYLOAD_OFFSET as u32 - 1, PAYLOAD_OFFSET as u32 + 1, 256, u32::MAX] {
        let b = sealed_with(|h| h.payload_offset = off);
        assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("payload offset"))), "offset {off}");
    }
}

#[test]
fn unknown_flags() {
    for bit in 3..32 {
        let b = sealed_with(|h| h.flags |= 1 << bit);
        assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("unknown flags"))), "bit {bit}");
    }
    // Backing 3 is not a backing.
    let b = sealed_with(|h| h.flags |= BACKING_BITS);
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("unknown flags"))));
    // Every known combination is accepted.
    for flags in [0, 1, 2, 3, 4, 5] {
        let b = sealed_with(|h| h.flags = flags);
        assert!(Header::decode(&b).is_ok(), "flags {flags:#b}");
    }
}

#[test]
fn total_size() {
    let refused = [0, 1, PAYLOAD_OFFSET as u64 - 1, isize::MAX as u64 + 1, u64::MAX];
    for total in refused {
        let b = sealed_with(|h| h.total_size = total);
        assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("total size"))), "total {total}");
    }
    for total in [PAYLOAD_OFFSET as u64, PAYLOAD_OFFSET as u64 + 1, isize::MAX as u64] {
        let b = sealed_with(|h| h.total_size = total);
        let h = Header::decode(&b).unwrap();
        assert_eq!(h.payload_len(), total - PAYLOAD_OFFSET as u64);
    }
}

#[test]
fn kind_zero() {
    let b = sealed_with(|h| h.kind = 0);
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("kind 0"))));
    // The tag alone does not make a kind.
    let b = sealed_with(|h| {
        h.kind = 0;
        h.kind_tag = 7;
    });
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("kind 0"))));
}

#[test]
fn type_tags() {
    assert_ne!(Kind::tag_of::<u64>(), Kind::tag_of::<f64>());
    assert_ne!(Kind::tag_of::<u32>(), Kind::tag_of::<u64>());
    assert_ne!(Kind::tag_of::<[u8; 3]>(), Kind::tag_of::<[u8; 4]>());
    assert_eq!(Kind::tag_of::<[u8; 3]>(), Kind::tag_of::<[u8; 3]>());
    assert_ne!(Kind::user(1, 0), Kind::new(1, 0));
    assert_eq!(Kind::user(1, 0).name(), "user");
}
