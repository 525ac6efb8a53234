//! Bytes as an authenticated client's stream, served by a real manager connection handler.
//! Body: `shmkit::__fuzz::manager_session` (also run on stable by `tests/fuzz_bodies.rs`,
//! which also writes seeds recorded from a real client: see `manager_corpus` there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shmkit::__fuzz::manager_session(data);
});
