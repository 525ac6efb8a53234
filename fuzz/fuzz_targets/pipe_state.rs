//! Arbitrary bytes as the shared memory of a duplex pipe. Body: `shmkit::__fuzz::pipe_state`
//! (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::pipe_state(data);
});
