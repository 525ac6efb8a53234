//! The segment header as a file format: round trips, and every way a header can be wrong
//! mapped to its own typed error.

use proptest::prelude::*;
use shmkit::shm::header::{HEADER_SIZE, LAYOUT_VERSION, MAGIC, PAYLOAD_OFFSET};
use shmkit::shm::{Backing, Header, Kind, ShmOpenError};

fn backing() -> impl Strategy<Value = Backing> {
    prop_oneof![Just(Backing::Anonymous), Just(Backing::Named), Just(Backing::Memfd)]
}

fn valid() -> Header {
    Header::new(Kind::RAW, Backing::Named, 4096, false)
}

/// Applies `f` to a copy of a valid header's bytes and re-seals the checksum.
fn with_fixed_checksum(f: impl FnOnce(&mut Header)) -> [u8; HEADER_SIZE] {
    let mut h = valid();
    f(&mut h);
    h.checksum = h.compute_checksum();
    h.encode()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(
        code in 1u32..,
        tag in any::<u64>(),
        total in (PAYLOAD_OFFSET as u64)..=(isize::MAX as u64),
        persistent in any::<bool>(),
        backing in backing(),
    ) {
        let kind = Kind::new(code, tag);
        let h = Header::new(kind, backing, total, persistent);
        let decoded = Header::decode(&h.encode()).unwrap();
        prop_assert_eq!(decoded, h);
        prop_assert_eq!(decoded.kind(), kind);
        prop_assert_eq!(decoded.backing(), backing);
        prop_assert_eq!(decoded.is_persistent(), persistent);
        prop_assert_eq!(decoded.total_size, total);
        prop_assert_eq!(decoded.creator_pid, std::process::id());
        prop_assert!(decoded.check(kind, total).is_ok());
        prop_assert!(
            matches!(decoded.check(Kind::new(code, tag ^ 1), total), Err(ShmOpenError::WrongKind { .. })),
            "a different tag must be a different kind"
        );
    }

    #[test]
    fn arbitrary_bytes_decode_to_a_typed_error_or_re_encode_exactly(bytes in proptest::collection::vec(any::<u8>(), 0..160)) {
        match Header::decode(&bytes) {
            Ok(h) => prop_assert_eq!(&h.encode()[..], &bytes[..HEADER_SIZE]),
            Err(
                ShmOpenError::TooSmall { .. }
                | ShmOpenError::NotShmkit
                | ShmOpenError::NotReady
                | ShmOpenError::VersionMismatch { .. }
                | ShmOpenError::Corrupted(_),
            ) => {}
            Err(other) => prop_assert!(false, "unexpected error from decode: {other:?}"),
        }
    }

    #[test]
    fn any_single_byte_flip_is_rejected(at in 0usize..HEADER_SIZE, mask in 1u8..) {
        let mut bytes = valid().encode();
        bytes[at] ^= mask;
        prop_assert!(Header::decode(&bytes).is_err(), "flip at byte {} accepted", at);
    }
}

#[test]
fn valid_header_decodes() {
    let h = valid();
    assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    assert_eq!(h.magic, MAGIC);
    assert_eq!(h.version, LAYOUT_VERSION);
    assert_eq!(h.payload_len(), 4096 - PAYLOAD_OFFSET as u64);
}

#[test]
fn wrong_magic_is_not_shmkit() {
    let mut b = valid().encode();
    b[3] ^= 0x20;
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::NotShmkit)));
}

#[test]
fn version_zero_is_not_ready() {
    let b = with_fixed_checksum(|h| h.version = 0);
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::NotReady)));
}

#[test]
fn another_version_is_version_mismatch() {
    let b = with_fixed_checksum(|h| h.version = 2);
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::VersionMismatch { found: 2, expected: 1 })));
}

#[test]
fn flipped_tag_byte_fails_the_checksum() {
    let mut b = valid().encode();
    b[17] ^= 0x01; // inside kind_tag
    assert!(matches!(Header::decode(&b), Err(ShmOpenError::Corrupted("checksum mismatch"))));
}

#[test]
fn short_slice_is_too_small() {
    let b = valid().encode();
    assert!(matches!(Header::decode(&b[..63]), Err(ShmOpenError::TooSmall { size: 63 })));
    assert!(matches!(Header::decode(&[]), Err(ShmOpenError::TooSmall { size: 0 })));
}

#[test]
fn impossible_fields_are_corrupted_even_with_a_good_checksum() {
    let cases: [(&str, [u8; HEADER_SIZE]); 5] = [
        ("payload offset", with_fixed_checksum(|h| h.payload_offset = 64)),
        ("total size", with_fixed_checksum(|h| h.total_size = 100)),
        ("total size", with_fixed_checksum(|h| h.total_size = u64::MAX)),
        ("unknown flags", with_fixed_checksum(|h| h.flags |= 1 << 7)),
        ("kind 0", with_fixed_checksum(|h| h.kind = 0)),
    ];
    for (want, bytes) in cases {
        match Header::decode(&bytes) {
            Err(ShmOpenError::Corrupted(why)) => assert_eq!(why, want),
            other => panic!("{want}: {other:?}"),
        }
    }
    let backing_3 = with_fixed_checksum(|h| h.flags |= 0b110);
    assert!(matches!(Header::decode(&backing_3), Err(ShmOpenError::Corrupted("unknown flags"))));
}

#[test]
fn check_rejects_wrong_kind_and_wrong_size() {
    let h = valid();
    assert!(matches!(
        h.check(Kind::PING_PONG, 4096),
        Err(ShmOpenError::WrongKind { found, expected }) if found == Kind::RAW && expected == Kind::PING_PONG
    ));
    assert!(matches!(
        h.check(Kind::RAW, 4095),
        Err(ShmOpenError::SizeMismatch { header: 4096, actual: 4095 })
    ));
    assert!(matches!(h.check(Kind::new(Kind::RAW.code, 1), 4096), Err(ShmOpenError::WrongKind { .. })));
}

#[test]
fn type_tags_tell_element_types_apart() {
    assert_ne!(Kind::tag_of::<u64>(), Kind::tag_of::<f64>());
    assert_ne!(Kind::tag_of::<u32>(), Kind::tag_of::<u64>());
    assert_eq!(Kind::tag_of::<[u8; 3]>(), Kind::tag_of::<[u8; 3]>());
    assert_ne!(Kind::user(1, 0), Kind::new(1, 0));
}
