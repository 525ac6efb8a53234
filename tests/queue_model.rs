//! Queues against a `VecDeque` model (proptest), in one process: the MPMC `Queue<u64>` (through
//! the queue and through its split handles), odd-sized MPMC elements, `spsc_channel::<u64>`
//! with its batch API, and `FrameQueue` with random lengths up to (and past) its maximum.
//! Capacities include the edge cases 1, 2, 3 and 7; zero capacity is a geometry error.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use shmkit::queue::raw::GeometryError;
use shmkit::queue::{
    spsc_channel, FrameQueue, JoinableQueue, Queue, QueueCreateError, RecvError, SendError, SimpleQueue,
    SpscQueue, Stats,
};

fn capacity() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), Just(7), 1usize..=20]
}

// ---------------------------------------------------------------------------------------------
// MPMC
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum MpmcOp {
    TrySend(u64),
    SendTimeoutZero(u64),
    /// Blocking send, only issued when the model has room.
    Send(u64),
    SenderTrySend(u64),
    TryRecv,
    RecvTimeoutZero,
    /// Blocking receive, only issued when the model is not empty.
    Recv,
    ReceiverTryRecv,
    TryIter(usize),
    Len,
}

fn mpmc_op() -> impl Strategy<Value = MpmcOp> {
    prop_oneof![
        4 => any::<u64>().prop_map(MpmcOp::TrySend),
        1 => any::<u64>().prop_map(MpmcOp::SendTimeoutZero),
        1 => any::<u64>().prop_map(MpmcOp::Send),
        1 => any::<u64>().prop_map(MpmcOp::SenderTrySend),
        4 => Just(MpmcOp::TryRecv),
        1 => Just(MpmcOp::RecvTimeoutZero),
        1 => Just(MpmcOp::Recv),
        1 => Just(MpmcOp::ReceiverTryRecv),
        1 => (0usize..10).prop_map(MpmcOp::TryIter),
        1 => Just(MpmcOp::Len),
    ]
}

fn run_mpmc(requested: usize, ops: &[MpmcOp]) -> Result<(), TestCaseError> {
    let q = Queue::<u64>::new(requested).unwrap();
    let cap = requested.next_power_of_two();
    prop_assert_eq!(q.capacity(), cap, "MPMC capacity rounds up to a power of two");
    let (tx, rx) = (q.sender(), q.receiver());
    let mut model = VecDeque::new();
    for op in ops {
        let room = model.len() < cap;
        match *op {
            MpmcOp::TrySend(v) | MpmcOp::SenderTrySend(v) => {
                let r = if matches!(op, MpmcOp::TrySend(_)) { q.try_send(v) } else { tx.try_send(v) };
                if room {
                    prop_assert_eq!(r, Ok(()));
                    model.push_back(v);
                } else {
                    prop_assert_eq!(r, Err(SendError::Full(v)));
                }
            }
            MpmcOp::SendTimeoutZero(v) => {
                let r = q.send_timeout(v, Duration::ZERO);
                if room {
                    prop_assert_eq!(r, Ok(()));
                    model.push_back(v);
                } else {
                    prop_assert_eq!(r, Err(SendError::Timeout(v)));
                }
            }
            MpmcOp::Send(v) => {
                if room {
                    prop_assert_eq!(q.send(v), Ok(()));
                    model.push_back(v);
                }
            }
            MpmcOp::TryRecv | MpmcOp::ReceiverTryRecv => {
                let r = if matches!(op, MpmcOp::TryRecv) { q.try_recv() } else { rx.try_recv() };
                prop_assert_eq!(r, model.pop_front().ok_or(RecvError::Empty));
            }
            MpmcOp::RecvTimeoutZero => {
                prop_assert_eq!(q.recv_timeout(Duration::ZERO), model.pop_front().ok_or(RecvError::Timeout));
            }
            MpmcOp::Recv => {
                if let Some(want) = model.pop_front() {
                    prop_assert_eq!(rx.recv(), Ok(want));
                }
            }
            MpmcOp::TryIter(n) => {
                let got: Vec<u64> = q.try_iter().take(n).collect();
                let k = n.min(model.len());
                let want: Vec<u64> = model.drain(..k).collect();
                prop_assert_eq!(got, want);
            }
            MpmcOp::Len => {}
        }
        prop_assert_eq!(q.len(), model.len());
        prop_assert_eq!(tx.len(), model.len());
        prop_assert_eq!(q.is_empty(), model.is_empty());
        prop_assert_eq!(rx.is_full(), model.len() == cap);
    }
    // Draining gives the rest in order; nothing was recovered or lost.
    let rest: Vec<u64> = q.try_iter().collect();
    prop_assert_eq!(rest, Vec::from(model));
    prop_assert_eq!(q.try_recv(), Err(RecvError::Empty));
    prop_assert_eq!(q.stats(), Stats::default());
    Ok(())
}

/// An odd-sized element (13 bytes: the slot stride is rounded up, the copy is unaligned).
fn run_mpmc_odd(requested: usize, ops: &[(bool, u8)]) -> Result<(), TestCaseError> {
    let q = Queue::<[u8; 13]>::new(requested).unwrap();
    let cap = q.capacity();
    let mut model = VecDeque::new();
    for &(send, b) in ops {
        if send {
            let v = [b; 13];
            let mut v = v;
            v[12] = b.wrapping_add(1);
            if model.len() < cap {
                prop_assert_eq!(q.try_send(v), Ok(()));
                model.push_back(v);
            } else {
                prop_assert_eq!(q.try_send(v), Err(SendError::Full(v)));
            }
        } else {
            prop_assert_eq!(q.try_recv(), model.pop_front().ok_or(RecvError::Empty));
        }
        prop_assert_eq!(q.len(), model.len());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SPSC
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum SpscOp {
    TrySend(u64),
    SendTimeoutZero(u64),
    TrySendSlice(Vec<u64>),
    TryRecv,
    RecvTimeoutZero,
    TryRecvInto(usize),
    /// Blocking batch receive, only issued when the model is not empty.
    RecvInto(usize),
    Len,
}

fn spsc_op() -> impl Strategy<Value = SpscOp> {
    prop_oneof![
        3 => any::<u64>().prop_map(SpscOp::TrySend),
        1 => any::<u64>().prop_map(SpscOp::SendTimeoutZero),
        2 => proptest::collection::vec(any::<u64>(), 0..12).prop_map(SpscOp::TrySendSlice),
        3 => Just(SpscOp::TryRecv),
        1 => Just(SpscOp::RecvTimeoutZero),
        2 => (0usize..12).prop_map(SpscOp::TryRecvInto),
        1 => (1usize..12).prop_map(SpscOp::RecvInto),
        1 => Just(SpscOp::Len),
    ]
}

/// `exact`: batches move exactly as many messages as fit (are ready), as documented. Without it,
/// a batch may stop short (at least one message if any fits or is ready): the ends re-read the
/// other side's index only when their cached copy shows no room (nothing ready) at all.
fn run_spsc(cap: usize, ops: &[SpscOp], exact: bool) -> Result<(), TestCaseError> {
    let (tx, rx) = spsc_channel::<u64>(cap).unwrap();
    prop_assert_eq!(tx.capacity(), cap, "SPSC holds exactly its capacity");
    prop_assert_eq!(rx.capacity(), cap);
    let mut model = VecDeque::new();
    for op in ops {
        let room = cap - model.len();
        match op {
            &SpscOp::TrySend(v) => {
                if room > 0 {
                    prop_assert_eq!(tx.try_send(v), Ok(()));
                    model.push_back(v);
                } else {
                    prop_assert_eq!(tx.try_send(v), Err(SendError::Full(v)));
                }
            }
            &SpscOp::SendTimeoutZero(v) => {
                if room > 0 {
                    prop_assert_eq!(tx.send_timeout(v, Duration::ZERO), Ok(()));
                    model.push_back(v);
                } else {
                    prop_assert_eq!(tx.send_timeout(v, Duration::ZERO), Err(SendError::Timeout(v)));
                }
            }
            SpscOp::TrySendSlice(items) => {
                let most = items.len().min(room);
                let n = tx.try_send_slice(items);
                if exact || most == 0 {
                    prop_assert_eq!(n, Ok(most), "try_send_slice of {} with room {}", items.len(), room);
                }
                let n = n.unwrap();
                prop_assert!(
                    (1..=most).contains(&n) || most == 0,
                    "sent {} of {} with room {}",
                    n,
                    items.len(),
                    room
                );
                model.extend(&items[..n]);
            }
            SpscOp::TryRecv => prop_assert_eq!(rx.try_recv(), model.pop_front().ok_or(RecvError::Empty)),
            SpscOp::RecvTimeoutZero => {
                prop_assert_eq!(rx.recv_timeout(Duration::ZERO), model.pop_front().ok_or(RecvError::Timeout))
            }
            &SpscOp::TryRecvInto(n) | &SpscOp::RecvInto(n) => {
                let blocking = matches!(op, SpscOp::RecvInto(_));
                if blocking && model.is_empty() {
                    continue;
                }
                let mut buf = vec![u64::MAX; n];
                let r = if blocking { rx.recv_into(&mut buf) } else { rx.try_recv_into(&mut buf) };
                let most = n.min(model.len());
                // An empty buffer takes nothing (Ok(0)); an empty queue is Empty.
                if most == 0 && n > 0 {
                    prop_assert_eq!(r, Err(RecvError::Empty));
                    continue;
                }
                if exact || most == 0 {
                    prop_assert_eq!(r, Ok(most), "recv_into of {} with {} ready", n, model.len());
                }
                let k = r.unwrap();
                prop_assert!(
                    (1..=most).contains(&k) || most == 0,
                    "took {} of {} ready into {}",
                    k,
                    model.len(),
                    n
                );
                let want: Vec<u64> = model.drain(..k).collect();
                prop_assert_eq!(&buf[..k], &want[..]);
                prop_assert!(buf[k..].iter().all(|&x| x == u64::MAX), "wrote past what it returned");
            }
            SpscOp::Len => {}
        }
        prop_assert_eq!(tx.len(), model.len());
        prop_assert_eq!(rx.len(), model.len());
        prop_assert_eq!(rx.is_empty(), model.is_empty());
    }
    let rest: Vec<u64> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    prop_assert_eq!(rest, Vec::from(model));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum FrameOp {
    TrySend(usize, u8),
    SendTimeoutZero(usize, u8),
    TryRecv,
    RecvTimeoutZero,
    /// `recv_bytes_into` with a buffer of `max + extra` bytes (only when not empty).
    RecvInto(usize),
    /// `recv_bytes_into` with a buffer one byte short of the maximum.
    RecvIntoShort,
    Len,
}

fn frame_op(max: usize) -> impl Strategy<Value = FrameOp> {
    // Lengths up to three past the maximum, with the boundaries weighted up.
    let len = prop_oneof![Just(0usize), Just(max), Just(max + 1), 0..=max + 3];
    prop_oneof![
        4 => (len.clone(), any::<u8>()).prop_map(|(l, s)| FrameOp::TrySend(l, s)),
        1 => (len, any::<u8>()).prop_map(|(l, s)| FrameOp::SendTimeoutZero(l, s)),
        3 => Just(FrameOp::TryRecv),
        1 => Just(FrameOp::RecvTimeoutZero),
        1 => (0usize..4).prop_map(FrameOp::RecvInto),
        1 => Just(FrameOp::RecvIntoShort),
        1 => Just(FrameOp::Len),
    ]
}

fn bytes(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(salt)).collect()
}

fn run_frames(requested: usize, max: usize, ops: &[FrameOp]) -> Result<(), TestCaseError> {
    let q = FrameQueue::new(requested, max).unwrap();
    let cap = requested.next_power_of_two();
    prop_assert_eq!(q.capacity(), cap);
    prop_assert_eq!(q.max_frame(), max);
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    for op in ops {
        let room = model.len() < cap;
        match *op {
            FrameOp::TrySend(len, salt) | FrameOp::SendTimeoutZero(len, salt) => {
                let msg = bytes(len, salt);
                let timed = matches!(op, FrameOp::SendTimeoutZero(..));
                let r =
                    if timed { q.send_bytes_timeout(&msg, Duration::ZERO) } else { q.try_send_bytes(&msg) };
                match r {
                    Ok(()) => {
                        prop_assert!(
                            len <= max && room,
                            "accepted {} bytes (max {}, room {})",
                            len,
                            max,
                            room
                        );
                        model.push_back(msg.clone());
                    }
                    Err(SendError::TooLarge { value, len: l, max: m }) => {
                        prop_assert!(len > max);
                        prop_assert_eq!((l, m), (len, max));
                        prop_assert!(
                            std::ptr::eq(value, msg.as_slice()),
                            "TooLarge must hand the message back"
                        );
                    }
                    Err(SendError::Full(value)) if !timed => {
                        prop_assert!(len <= max && !room);
                        prop_assert!(std::ptr::eq(value, msg.as_slice()));
                    }
                    Err(SendError::Timeout(value)) if timed => {
                        prop_assert!(len <= max && !room);
                        prop_assert!(std::ptr::eq(value, msg.as_slice()));
                    }
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }
            FrameOp::TryRecv => {
                prop_assert_eq!(q.try_recv_bytes(), model.pop_front().ok_or(RecvError::Empty))
            }
            FrameOp::RecvTimeoutZero => {
                prop_assert_eq!(
                    q.recv_bytes_timeout(Duration::ZERO),
                    model.pop_front().ok_or(RecvError::Timeout)
                )
            }
            FrameOp::RecvInto(extra) => {
                if let Some(want) = model.pop_front() {
                    let mut buf = vec![0xAA; max + extra];
                    prop_assert_eq!(q.recv_bytes_into(&mut buf), Ok(want.len()));
                    prop_assert_eq!(&buf[..want.len()], &want[..]);
                }
            }
            FrameOp::RecvIntoShort => {
                if max > 0 {
                    let mut buf = vec![0u8; max - 1];
                    prop_assert!(matches!(q.recv_bytes_into(&mut buf), Err(RecvError::Decode(_))));
                }
            }
            FrameOp::Len => {}
        }
        prop_assert_eq!(q.len(), model.len());
        prop_assert_eq!(q.is_empty(), model.is_empty());
    }
    while let Some(want) = model.pop_front() {
        prop_assert_eq!(q.try_recv_bytes(), Ok(want));
    }
    prop_assert_eq!(q.try_recv_bytes(), Err(RecvError::Empty));
    prop_assert_eq!(q.stats(), Stats::default());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mpmc_queue_matches_a_fifo(cap in capacity(), ops in proptest::collection::vec(mpmc_op(), 0..120)) {
        run_mpmc(cap, &ops)?;
    }

    #[test]
    fn mpmc_queue_of_odd_sized_elements_matches_a_fifo(
        cap in capacity(),
        ops in proptest::collection::vec((any::<bool>(), any::<u8>()), 0..80),
    ) {
        run_mpmc_odd(cap, &ops)?;
    }

    #[test]
    fn spsc_queue_matches_a_fifo(cap in capacity(), ops in proptest::collection::vec(spsc_op(), 0..120)) {
        run_spsc(cap, &ops, false)?;
    }

    #[test]
    fn frame_queue_matches_a_fifo(
        (cap, max, ops) in (capacity(), 0usize..=48).prop_flat_map(|(cap, max)| {
            (Just(cap), Just(max), proptest::collection::vec(frame_op(max), 0..80))
        }),
    ) {
        run_frames(cap, max, &ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn spsc_batches_move_as_many_as_fit_or_are_ready(
        cap in capacity(),
        ops in proptest::collection::vec(spsc_op(), 0..120),
    ) {
        run_spsc(cap, &ops, true)?;
    }
}

/// The shortest cases of `spsc_batches_move_as_many_as_fit_or_are_ready`, one per end.
#[test]
fn spsc_batch_after_the_peer_moved_sees_all_room_and_all_messages() {
    let (tx, rx) = spsc_channel::<u64>(2).unwrap();
    tx.try_send(0).unwrap();
    assert_eq!(rx.try_recv(), Ok(0));
    // Both slots are free, but the producer's cached head still says one is taken.
    let sent = tx.try_send_slice(&[1, 2]);

    let (tx, rx) = spsc_channel::<u64>(4).unwrap();
    tx.try_send_slice(&[1, 2]).unwrap();
    let mut one = [0u64; 1];
    assert_eq!(rx.try_recv_into(&mut one), Ok(1));
    tx.try_send(3).unwrap();
    // Messages 2 and 3 are ready, but the consumer's cached tail still says only 2.
    let mut buf = [0u64; 4];
    let taken = rx.try_recv_into(&mut buf);
    assert_eq!(
        (sent, taken),
        (Ok(2), Ok(2)),
        "(try_send_slice with 2 slots free, try_recv_into with 2 messages ready)"
    );
}

/// Long runs on the smallest capacities: many laps of the ring, so that stamps and positions
/// wrap the slot array many times.
#[test]
fn many_laps_at_edge_capacities() {
    for cap in [1usize, 2, 3, 7] {
        let q = Queue::<u64>::new(cap).unwrap();
        let (tx, rx) = spsc_channel::<u64>(cap).unwrap();
        let f = FrameQueue::new(cap, 5).unwrap();
        let c = q.capacity();
        for lap in 0..1000u64 {
            for i in 0..c as u64 {
                q.try_send(lap * 10 + i).unwrap();
            }
            assert_eq!(q.try_send(0), Err(SendError::Full(0)));
            for i in 0..c as u64 {
                assert_eq!(q.try_recv(), Ok(lap * 10 + i));
            }
            let items: Vec<u64> = (0..cap as u64).map(|i| lap * 10 + i).collect();
            assert_eq!(tx.try_send_slice(&items), Ok(cap));
            assert_eq!(tx.try_send_slice(&items), Ok(0));
            let mut buf = vec![0; cap + 1];
            assert_eq!(rx.try_recv_into(&mut buf), Ok(cap));
            assert_eq!(&buf[..cap], &items[..]);
            let m = [(lap % 256) as u8; 5];
            let m = &m[..(lap % 6) as usize];
            f.try_send_bytes(m).unwrap();
            assert_eq!(f.try_recv_bytes().unwrap(), m);
        }
    }
}

#[test]
fn zero_capacity_is_a_geometry_error() {
    fn zero<T: std::fmt::Debug>(r: Result<T, QueueCreateError>) {
        match r {
            Err(QueueCreateError::Geometry(GeometryError::ZeroCapacity)) => {}
            other => panic!("expected ZeroCapacity, got {other:?}"),
        }
    }
    zero(Queue::<u64>::new(0));
    zero(Queue::<u64>::size_for(0));
    zero(spsc_channel::<u64>(0));
    zero(FrameQueue::new(0, 16));
    zero(FrameQueue::new(0, 0));
    zero(JoinableQueue::<u64>::new(0));
    zero(SimpleQueue::<u8>::new(0));
    // Named: refused before anything is created.
    let name = format!("shmkit-test-{}-zero", std::process::id());
    zero(Queue::<u64>::create(&name, 0));
    zero(SpscQueue::<u64>::create(&name, 0));
    zero(FrameQueue::create(&name, 0, 8));
    zero(JoinableQueue::<u64>::create(&name, 0));
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists(), "a segment was left behind");
    let msg = Queue::<u64>::new(0).unwrap_err().to_string();
    assert!(msg.contains("capacity"), "{msg}");
    // Too large is its own error.
    assert!(matches!(
        Queue::<u64>::new(usize::MAX),
        Err(QueueCreateError::Geometry(GeometryError::TooLarge))
    ));
    assert!(matches!(
        spsc_channel::<u64>(usize::MAX),
        Err(QueueCreateError::Geometry(GeometryError::TooLarge))
    ));
    assert!(matches!(
        FrameQueue::new(4, usize::MAX),
        Err(QueueCreateError::Geometry(GeometryError::TooLarge))
    ));
    // The smallest queue works.
    let q = Queue::<u64>::new(1).unwrap();
    assert_eq!(q.capacity(), 1);
    q.try_send(1).unwrap();
    assert_eq!(q.try_send(2), Err(SendError::Full(2)));
}
