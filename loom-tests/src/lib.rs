//! Loom models of shmkit; see `tests/`. Build with `RUSTFLAGS="--cfg loom"`.
