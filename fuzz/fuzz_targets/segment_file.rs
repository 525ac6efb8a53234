//! Arbitrary bytes as a whole segment file, opened through `Segment::open_fd`. Body:
//! `shmkit::__fuzz::segment_file` (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmkit::__fuzz::segment_file(data));
