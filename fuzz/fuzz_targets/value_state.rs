//! Arbitrary bytes as the shared memory of shared values and arrays. Body: `shmkit::__fuzz::value_state`
//! (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::value_state(data);
});
