//! A frame slot as a hostile peer could leave it. Body: `shmkit::__fuzz::queue_frame` (also
//! run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmkit::__fuzz::queue_frame(data));
