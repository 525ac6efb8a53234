//! `SerdeQueue` (feature `serde`): any serde value between processes, postcard-encoded into
//! byte frames; oversize values and undecodable frames give typed errors.
#![cfg(feature = "serde")]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::watchdog;
use serde::{Deserialize, Serialize};
use shmkit::queue::{RecvError, SendError, SerdeQueue};
use shmkit::util::child::fork;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    dish: String,
    extras: Vec<String>,
    prices: BTreeMap<String, f64>,
    urgent: Option<bool>,
}

fn order(id: u64) -> Order {
    Order {
        id,
        dish: format!("dish #{id}"),
        extras: (0..id % 4).map(|i| format!("extra {i}")).collect(),
        prices: [("base".to_string(), id as f64 * 1.5)].into_iter().collect(),
        urgent: (id % 3 == 0).then_some(id % 2 == 0),
    }
}

#[test]
fn serde_values_cross_a_fork_in_order() {
    let _w = watchdog(60);
    let q = SerdeQueue::<Order>::new(16, 256).unwrap();
    // SAFETY: the child only encodes values into shared memory and exits through `_exit`.
    let mut child = unsafe {
        fork(|| {
            for id in 0..500 {
                if q.send(order(id)).is_err() {
                    return 2;
                }
            }
            0
        })
    }
    .unwrap();
    for id in 0..500 {
        assert_eq!(q.recv_timeout(Duration::from_secs(20)).unwrap(), order(id));
    }
    assert_eq!(child.wait_timeout(Duration::from_secs(20)).unwrap().unwrap().code(), Some(0));
}

#[test]
fn oversize_value_is_handed_back_and_nothing_is_queued() {
    let q = SerdeQueue::<Vec<u8>>::new(4, 32).unwrap();
    let big = vec![7u8; 100];
    match q.try_send(big.clone()) {
        Err(SendError::TooLarge { value, len, max }) => {
            assert_eq!(value, big);
            assert!(len > max);
            assert_eq!(max, 32);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(q.try_recv(), Err(RecvError::Empty));
    q.send(vec![1, 2, 3]).unwrap();
    assert_eq!(q.recv().unwrap(), vec![1, 2, 3]);
}

#[test]
fn a_frame_that_does_not_decode_is_a_typed_error() {
    // The same named segment seen as a queue of bytes and as a queue of another type is
    // refused at open (the kind tag names the type) ...
    let name = common::unique_name("serde-kind");
    let q = SerdeQueue::<Order>::create(&name, 4, 128).unwrap();
    assert!(SerdeQueue::<String>::open(&name).is_err());
    // ... and garbage in a frame is a Decode error for that message only.
    q.frames().try_send_bytes(&[0xff; 20]).unwrap();
    q.send(order(1)).unwrap();
    assert!(matches!(q.try_recv(), Err(RecvError::Decode(_))));
    assert_eq!(q.try_recv().unwrap(), order(1));
}
