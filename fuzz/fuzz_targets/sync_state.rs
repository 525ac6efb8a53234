//! Arbitrary bytes as the shared state of Lock, Semaphore, Event and Barrier. Body:
//! `shmkit::__fuzz::sync_state` (also run on stable by `tests/sync_model.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shmkit::__fuzz::sync_state(data));
