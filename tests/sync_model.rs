//! Semaphores against a counter model (proptest), and hostile shared state for every
//! primitive (the `sync_state` fuzz body on stable).

use std::time::Duration;

use proptest::prelude::*;
use shmkit::sync::{BoundedSemaphore, Semaphore, SemaphoreError};

#[derive(Clone, Debug)]
enum Op {
    TryAcquire,
    AcquireTimeout,
    Release(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![Just(Op::TryAcquire), Just(Op::AcquireTimeout), (0u32..4).prop_map(Op::Release)]
}

/// The model: a count and an optional bound.
struct Model {
    count: u32,
    bound: Option<u32>,
}

impl Model {
    fn acquire(&mut self) -> bool {
        if self.count > 0 {
            self.count -= 1;
            true
        } else {
            false
        }
    }
    fn release(&mut self, n: u32) -> Result<(), SemaphoreError> {
        let next = self.count.checked_add(n).ok_or(SemaphoreError::Overflow)?;
        match self.bound {
            Some(b) if next > b => Err(SemaphoreError::AboveBound { bound: b }),
            _ => {
                self.count = next;
                Ok(())
            }
        }
    }
}

fn run(sem: &Semaphore, mut model: Model, ops: &[Op]) -> Result<(), TestCaseError> {
    for op in ops {
        match op {
            Op::TryAcquire => prop_assert_eq!(sem.try_acquire(), model.acquire()),
            Op::AcquireTimeout => {
                prop_assert_eq!(sem.acquire_timeout(Duration::ZERO).is_ok(), model.acquire())
            }
            Op::Release(n) => prop_assert_eq!(sem.release(*n), model.release(*n)),
        }
        prop_assert_eq!(sem.value(), model.count);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn semaphore_matches_a_counter(initial in 0u32..5, ops in proptest::collection::vec(op(), 0..60)) {
        let sem = Semaphore::new(initial).unwrap();
        run(&sem, Model { count: initial, bound: None }, &ops)?;
    }

    #[test]
    fn bounded_semaphore_matches_a_bounded_counter(initial in 1u32..5, ops in proptest::collection::vec(op(), 0..60)) {
        let sem = BoundedSemaphore::new(initial).unwrap();
        run(&sem, Model { count: initial, bound: Some(initial) }, &ops)?;
    }

    #[test]
    fn hostile_sync_state_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        shmkit::__fuzz::sync_state(&bytes);
    }
}

#[test]
fn semaphore_near_overflow_matches_the_model() {
    let sem = Semaphore::new(u32::MAX - 1).unwrap();
    run(&sem, Model { count: u32::MAX - 1, bound: None }, &[Op::Release(1), Op::Release(1), Op::TryAcquire])
        .unwrap();
}

/// Hand-made hostile states: a lock "held" by a pid that cannot exist, by this very
/// process, with every bit set; barriers with absurd party and arrival counts.
#[test]
fn hostile_sync_state_seeds() {
    let mut seeds: Vec<Vec<u8>> = vec![vec![], vec![0xff; 700], vec![0; 700]];
    for state in [0x3fff_ffffu32, 0x8000_0000, 0xc000_0001, std::process::id(), 1] {
        let mut b = vec![0u8; 700];
        b[..4].copy_from_slice(&state.to_le_bytes());
        seeds.push(b);
    }
    for s in seeds {
        shmkit::__fuzz::sync_state(&s);
    }
}
