//! Arbitrary bytes as the payload of a segment of any kind, reported on by `shmkit inspect`.
//! Body: `shmkit::__fuzz::inspect_state` (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::inspect_state(data);
});
