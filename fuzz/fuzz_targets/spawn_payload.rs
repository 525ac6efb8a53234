//! Body: `shmkit::__fuzz::spawn_payload` (also run on stable by `tests/fuzz_bodies.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::spawn_payload(data);
});
