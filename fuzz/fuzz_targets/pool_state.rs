//! Body: `shmkit::__fuzz::pool_state` (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::pool_state(data);
});
