//! Arbitrary bytes as a segment header: a typed error or a header that re-encodes to the
//! same bytes, never a panic. Body: `shmkit::__fuzz::header` (also run on stable by
//! `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmkit::__fuzz::header(data));
