//! Runs the cargo-fuzz bodies (`shmkit::__fuzz`) on stable: random inputs from proptest plus
//! hand-made seeds around a valid segment file.

use proptest::prelude::*;
use shmkit::shm::header::HEADER_SIZE;
use shmkit::shm::{Backing, Header, Kind};

/// A valid named-segment file with `payload` bytes of zeros after the header region.
fn valid_file(payload: usize) -> Vec<u8> {
    let total = 128 + payload;
    let mut bytes = vec![0u8; total];
    bytes[..HEADER_SIZE]
        .copy_from_slice(&Header::new(Kind::RAW, Backing::Memfd, total as u64, false).encode());
    bytes
}

/// Seeds: the valid file, each header byte flipped, and truncated copies.
fn seeds() -> Vec<Vec<u8>> {
    let good = valid_file(72);
    let mut out = vec![good.clone()];
    for at in 0..HEADER_SIZE {
        let mut b = good.clone();
        b[at] ^= 0xa5;
        out.push(b);
    }
    for len in [0, 1, 8, 63, 64, 65, 127, 128, 129, good.len() - 1] {
        out.push(good[..len].to_vec());
    }
    out
}

#[test]
fn header_body_on_seeds() {
    for s in seeds() {
        shmkit::__fuzz::header(&s);
    }
}

#[test]
fn segment_file_body_on_seeds() {
    for s in seeds() {
        shmkit::__fuzz::segment_file(&s);
    }
}

#[test]
fn valid_file_opens_through_the_segment_file_body() {
    // The body asserts size consistency only when the open succeeds; make sure it does for
    // the control input, so the body is not vacuous.
    use std::io::Write;
    use std::os::fd::{FromRawFd, OwnedFd};
    let good = valid_file(72);
    // SAFETY: valid C string; returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"seed".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0);
    // SAFETY: fresh fd.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    f.write_all(&good).unwrap();
    let seg = shmkit::shm::Segment::open_fd(f.into(), Kind::RAW).expect("control file opens");
    assert_eq!(seg.payload_len(), 72);
    shmkit::__fuzz::segment_file(&good);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]
    #[test]
    fn header_body_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        shmkit::__fuzz::header(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn segment_file_body_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        shmkit::__fuzz::segment_file(&bytes);
    }
}
