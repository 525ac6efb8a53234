//! Bytes as a stream of manager frames, each decoded as every message type.
//! Body: `shmkit::__fuzz::manager_frames` (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::manager_frames(data);
});
