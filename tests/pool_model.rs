//! `Pool` against a sequential model: random sequences of `map` / `starmap` (random chunk
//! sizes), `imap`, `imap_unordered`, abandoned `imap`s and batches of `apply_async`, with
//! tasks that panic for some inputs, compared with a plain iterator map in which a panic is
//! an `Err`. Two pools live across all cases (created once): a plain one, and one whose
//! workers are replaced every few chunks.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::watchdog;
use proptest::prelude::*;
use shmkit::process::{Pool, PoolError};

/// The marker of the panics the tasks raise on purpose (kept out of the test output).
const BOOM: &str = "model-boom";

/// The task: panics for inputs that are 7 modulo 23.
fn f(x: u32) -> u64 {
    if x % 23 == 7 {
        panic!("{BOOM} {x}");
    }
    u64::from(x).wrapping_mul(2_654_435_761) % 1_000_003
}

/// The pair task: panics when the first item does.
fn g(a: u32, b: u16) -> u64 {
    f(a) ^ u64::from(b) << 20
}

/// The model of one task.
fn model(x: u32) -> Result<u64, String> {
    if x % 23 == 7 {
        Err(format!("{BOOM} {x}"))
    } else {
        Ok(f(x))
    }
}

fn model_pair(a: u32, b: u16) -> Result<u64, String> {
    model(a).map(|v| v ^ u64::from(b) << 20)
}

/// The model of a whole `map`: the first error in item order.
fn model_all(r: Vec<Result<u64, String>>) -> Result<Vec<u64>, String> {
    r.into_iter().collect()
}

/// A pool result with a panic turned into its message (any other error fails the test).
fn seen<T>(r: Result<T, PoolError>) -> Result<T, String> {
    r.map_err(|e| match e {
        PoolError::TaskPanicked(m) => m,
        other => panic!("unexpected pool error {other:?}"),
    })
}

#[derive(Clone, Debug)]
enum Op {
    Map {
        items: Vec<u32>,
        chunk: Option<usize>,
    },
    Starmap {
        items: Vec<(u32, u16)>,
        chunk: Option<usize>,
    },
    Imap {
        items: Vec<u32>,
        chunk: Option<usize>,
    },
    ImapUnordered {
        items: Vec<u32>,
        chunk: Option<usize>,
    },
    /// Takes `take` results of an imap, then drops it.
    ImapAbandoned {
        items: Vec<u32>,
        take: usize,
    },
    Apply {
        items: Vec<u32>,
    },
}

/// Items that panic only when `panics` is set.
fn items(max_len: usize) -> impl Strategy<Value = Vec<u32>> {
    (prop::collection::vec(0u32..5000, 0..max_len), any::<bool>()).prop_map(|(v, panics)| {
        if panics {
            v
        } else {
            v.into_iter().map(|x| if x % 23 == 7 { x + 1 } else { x }).collect()
        }
    })
}

fn chunk() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), (1usize..40).prop_map(Some), Just(Some(1000))]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (items(300), chunk()).prop_map(|(items, chunk)| Op::Map { items, chunk }),
        (items(200), any::<u16>(), chunk()).prop_map(|(items, b, chunk)| Op::Starmap {
            items: items.into_iter().map(|a| (a, b.wrapping_add(a as u16))).collect(),
            chunk
        }),
        (items(300), chunk()).prop_map(|(items, chunk)| Op::Imap { items, chunk }),
        (items(300), chunk()).prop_map(|(items, chunk)| Op::ImapUnordered { items, chunk }),
        (items(300), 0usize..20).prop_map(|(items, take)| Op::ImapAbandoned { items, take }),
        items(40).prop_map(|items| Op::Apply { items }),
    ]
}

fn sorted(mut v: Vec<Result<u64, String>>) -> Vec<Result<u64, String>> {
    v.sort();
    v
}

fn run(pool: &Pool, op: &Op) {
    match op {
        Op::Map { items, chunk } => {
            let got = match chunk {
                None => pool.map(f, items.iter().copied()),
                Some(c) => pool.chunksize(*c).map(f, items.iter().copied()),
            };
            assert_eq!(seen(got), model_all(items.iter().map(|&x| model(x)).collect()), "{op:?}");
        }
        Op::Starmap { items, chunk } => {
            let got = match chunk {
                None => pool.starmap(g, items.iter().copied()),
                Some(c) => pool.chunksize(*c).starmap(g, items.iter().copied()),
            };
            assert_eq!(
                seen(got),
                model_all(items.iter().map(|&(a, b)| model_pair(a, b)).collect()),
                "{op:?}"
            );
        }
        Op::Imap { items, chunk } => {
            let got: Vec<_> = match chunk {
                None => pool.imap(f, items.clone()).map(seen).collect(),
                Some(c) => pool.chunksize(*c).imap(f, items.clone()).map(seen).collect(),
            };
            assert_eq!(got, items.iter().map(|&x| model(x)).collect::<Vec<_>>(), "{op:?}");
        }
        Op::ImapUnordered { items, chunk } => {
            let got: Vec<_> = match chunk {
                None => pool.imap_unordered(f, items.clone()).map(seen).collect(),
                Some(c) => pool.chunksize(*c).imap_unordered(f, items.clone()).map(seen).collect(),
            };
            assert_eq!(sorted(got), sorted(items.iter().map(|&x| model(x)).collect()), "{op:?}");
        }
        Op::ImapAbandoned { items, take } => {
            let got: Vec<_> = pool.imap(f, items.clone()).take(*take).map(seen).collect();
            assert_eq!(got, items.iter().take(*take).map(|&x| model(x)).collect::<Vec<_>>(), "{op:?}");
        }
        Op::Apply { items } => {
            let rs: Vec<_> = items.iter().map(|&x| pool.apply_async(f, x)).collect();
            // Collected back to front: the order of waiting does not matter.
            for (r, &x) in rs.iter().zip(items).rev() {
                assert_eq!(seen(r.get_timeout(Duration::from_secs(60))), model(x), "apply_async({x})");
            }
        }
    }
}

/// Keeps the deliberate panics of the tasks (raised in the workers, which inherit the hook
/// through fork) out of the output.
fn quiet_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let p = info.payload();
            let msg =
                p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied());
            if !msg.is_some_and(|m| m.starts_with(BOOM)) {
                prev(info);
            }
        }));
    });
}

fn plain_pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        quiet_hook();
        Pool::new(2).expect("pool")
    })
}

fn recycling_pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        quiet_hook();
        Pool::builder().processes(2).maxtasksperchild(5).build().expect("pool")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn pool_matches_a_sequential_map(ops in prop::collection::vec(op(), 1..8)) {
        let _w = watchdog(90);
        let pool = plain_pool();
        for op in &ops {
            run(pool, op);
        }
        // Nothing is left behind by any of them (abandoned imaps included).
        prop_assert_eq!(pool.apply(f, 1), Ok(f(1)));
    }

    #[test]
    fn pool_with_maxtasksperchild_matches_a_sequential_map(ops in prop::collection::vec(op(), 1..6)) {
        let _w = watchdog(90);
        let pool = recycling_pool();
        for op in &ops {
            run(pool, op);
        }
        prop_assert_eq!(pool.apply(f, 1), Ok(f(1)));
    }
}
