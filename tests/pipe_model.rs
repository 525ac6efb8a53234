//! A duplex `Pipe` against a model (proptest), in one process: per direction a `VecDeque` of
//! messages in the ring plus the message a failed receive kept (`BufferTooSmall`,
//! `WrongSize`), which is received first and no longer takes a slot. Random sends of lengths
//! up to past a small maximum (`TooLarge`), non-blocking sends into a full pipe (`Timeout`),
//! receives with random buffer sizes, `poll`, `wait`, and at the end `close` and end-of-file.
//! Capacities include 1, 2, 3 and 7 (rounded up to a power of two).

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use shmkit::pipe::{wait, Connection, ConnectionError, Pipe};
use shmkit::queue::raw::GeometryError;
use shmkit::queue::QueueCreateError;

use ConnectionError::{BufferTooSmall, Closed, Disconnected, Timeout, TooLarge, WrongSize};

/// One direction of the pipe.
#[derive(Debug, Default)]
struct Dir {
    ring: VecDeque<Vec<u8>>,
    /// Taken out of the ring by a receive that could not hand it over.
    kept: Option<Vec<u8>>,
}

impl Dir {
    fn front(&self) -> Option<&Vec<u8>> {
        self.kept.as_ref().or(self.ring.front())
    }
    fn take(&mut self) -> Option<Vec<u8>> {
        self.kept.take().or_else(|| self.ring.pop_front())
    }
    /// A receive failed on the front message: it is kept (and leaves the ring).
    fn keep(&mut self) {
        if self.kept.is_none() {
            self.kept = self.ring.pop_front();
        }
    }
    fn is_empty(&self) -> bool {
        self.front().is_none()
    }
}

/// `side` 0 is end `a`, 1 is end `b`. A send on `side` goes into direction `side`; a receive
/// on `side` takes from direction `1 - side`.
#[derive(Clone, Debug)]
enum Op {
    /// `send_bytes_timeout(msg, ZERO)`.
    Send {
        side: usize,
        len: usize,
        salt: u8,
    },
    /// `send_bytes`, issued only when it cannot block (else skipped).
    SendBlocking {
        side: usize,
        len: usize,
        salt: u8,
    },
    /// `send(&u32)`: four bytes.
    SendPod {
        side: usize,
        v: u32,
    },
    /// `recv_bytes_timeout(ZERO)`.
    Recv {
        side: usize,
    },
    /// `recv_bytes`, issued only when a message waits (else skipped).
    RecvBlocking {
        side: usize,
    },
    /// `recv_bytes_into_timeout(buf, ZERO)`, or `recv_bytes_into` when a message waits.
    RecvInto {
        side: usize,
        buf: usize,
        blocking: bool,
    },
    /// `recv_timeout::<u32>(ZERO)`.
    RecvPod {
        side: usize,
    },
    Poll {
        side: usize,
    },
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    let side = 0usize..2;
    let len = 0usize..=26;
    prop_oneof![
        6 => (side.clone(), len.clone(), any::<u8>()).prop_map(|(side, len, salt)| Op::Send { side, len, salt }),
        2 => (side.clone(), len, any::<u8>()).prop_map(|(side, len, salt)| Op::SendBlocking { side, len, salt }),
        1 => (side.clone(), any::<u32>()).prop_map(|(side, v)| Op::SendPod { side, v }),
        4 => side.clone().prop_map(|side| Op::Recv { side }),
        1 => side.clone().prop_map(|side| Op::RecvBlocking { side }),
        4 => (side.clone(), 0usize..=26, any::<bool>())
            .prop_map(|(side, buf, blocking)| Op::RecvInto { side, buf, blocking }),
        2 => side.clone().prop_map(|side| Op::RecvPod { side }),
        1 => side.prop_map(|side| Op::Poll { side }),
        1 => Just(Op::Wait),
    ]
}

fn msg(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| salt.wrapping_add((i as u8).wrapping_mul(37))).collect()
}

fn send_expect(dir: &Dir, len: usize, max: usize, cap: usize) -> Result<(), ConnectionError> {
    if len > max {
        Err(TooLarge { len, max })
    } else if dir.ring.len() < cap {
        Ok(())
    } else {
        Err(Timeout)
    }
}

/// Receives and checks everything left in direction `d` at `end`.
fn drain(end: &Connection, d: &mut Dir) -> Result<(), TestCaseError> {
    while let Some(m) = d.take() {
        prop_assert_eq!(end.recv_bytes_timeout(Duration::ZERO), Ok(m));
    }
    prop_assert_eq!(end.recv_bytes_timeout(Duration::ZERO), Err(Timeout));
    Ok(())
}

/// Runs `ops`, then closes the end `close_side`. `blocking_eof`: finish with a blocking receive
/// that must report end-of-file (it takes about 100 ms: the waiter's park before its peer check).
fn run(
    requested: usize,
    max: usize,
    ops: &[Op],
    close_side: usize,
    blocking_eof: bool,
) -> Result<(), TestCaseError> {
    // Blocking calls are issued only when the model says they return at once: if the pipe
    // disagrees, they would hang.
    let _w = common::watchdog(60);
    let (a, b) = Pipe::builder().capacity(requested).max_message(max).build().unwrap();
    let cap = requested.next_power_of_two();
    let ends = [&a, &b];
    prop_assert_eq!((a.max_message(), b.max_message()), (max, max));
    let mut dirs = [Dir::default(), Dir::default()];
    for op in ops {
        match *op {
            Op::Send { side, len, salt } => {
                let m = msg(len, salt);
                let want = send_expect(&dirs[side], len, max, cap);
                prop_assert_eq!(ends[side].send_bytes_timeout(&m, Duration::ZERO), want.clone());
                if want.is_ok() {
                    dirs[side].ring.push_back(m);
                }
            }
            Op::SendBlocking { side, len, salt } => {
                if send_expect(&dirs[side], len, max, cap) != Err(Timeout) {
                    let m = msg(len, salt);
                    let want = send_expect(&dirs[side], len, max, cap);
                    prop_assert_eq!(ends[side].send_bytes(&m), want.clone());
                    if want.is_ok() {
                        dirs[side].ring.push_back(m);
                    }
                }
            }
            Op::SendPod { side, v } => {
                let want = send_expect(&dirs[side], 4, max, cap);
                let got = if want == Err(Timeout) {
                    ends[side].send_bytes_timeout(&v.to_ne_bytes(), Duration::ZERO)
                } else {
                    ends[side].send(&v)
                };
                prop_assert_eq!(got, want.clone());
                if want.is_ok() {
                    dirs[side].ring.push_back(v.to_ne_bytes().to_vec());
                }
            }
            Op::Recv { side } => {
                let want = dirs[1 - side].take().ok_or(Timeout);
                prop_assert_eq!(ends[side].recv_bytes_timeout(Duration::ZERO), want);
            }
            Op::RecvBlocking { side } => {
                if let Some(m) = dirs[1 - side].take() {
                    prop_assert_eq!(ends[side].recv_bytes(), Ok(m));
                }
            }
            Op::RecvInto { side, buf, blocking } => {
                let d = &mut dirs[1 - side];
                if blocking && d.is_empty() {
                    continue;
                }
                let mut space = vec![0xeeu8; buf];
                let got = if blocking {
                    ends[side].recv_bytes_into(&mut space)
                } else {
                    ends[side].recv_bytes_into_timeout(&mut space, Duration::ZERO)
                };
                match d.front().map(Vec::len) {
                    None => prop_assert_eq!(got, Err(Timeout)),
                    Some(needed) if needed > buf => {
                        prop_assert_eq!(got, Err(BufferTooSmall { needed }));
                        d.keep();
                    }
                    Some(n) => {
                        prop_assert_eq!(got, Ok(n));
                        let m = d.take().unwrap();
                        prop_assert_eq!(&space[..n], &m[..]);
                        prop_assert!(space[n..].iter().all(|&x| x == 0xee), "wrote past the message");
                    }
                }
            }
            Op::RecvPod { side } => {
                let d = &mut dirs[1 - side];
                let got = ends[side].recv_timeout::<u32>(Duration::ZERO);
                match d.front().map(Vec::len) {
                    None => prop_assert_eq!(got, Err(Timeout)),
                    Some(4) => {
                        let m = d.take().unwrap();
                        prop_assert_eq!(got, Ok(u32::from_ne_bytes(m[..].try_into().unwrap())));
                    }
                    Some(len) => {
                        prop_assert_eq!(got, Err(WrongSize { len, expected: 4 }));
                        d.keep();
                    }
                }
            }
            Op::Poll { side } => {
                prop_assert_eq!(ends[side].poll(Duration::ZERO), Ok(!dirs[1 - side].is_empty()));
            }
            Op::Wait => {
                let ready = wait(&ends, Some(Duration::ZERO));
                let want: Vec<usize> = (0..2).filter(|&s| !dirs[1 - s].is_empty()).collect();
                let got: Vec<usize> =
                    ready.iter().map(|&c| if std::ptr::eq(c, &a) { 0 } else { 1 }).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
    // Close one end: the other still receives what is queued (and what this end had sent),
    // then end-of-file; the closed end refuses everything.
    let (closed, open) = (ends[close_side], ends[1 - close_side]);
    closed.close();
    prop_assert_eq!(closed.recv_bytes_timeout(Duration::ZERO), Err(Closed));
    prop_assert_eq!(closed.send_bytes(b""), Err(Closed));
    drain_then_eof(open, &mut dirs[close_side], blocking_eof)
}

fn drain_then_eof(end: &Connection, d: &mut Dir, blocking: bool) -> Result<(), TestCaseError> {
    while let Some(m) = d.take() {
        prop_assert_eq!(end.poll(Duration::ZERO), Ok(true));
        prop_assert_eq!(end.recv_bytes_timeout(Duration::ZERO), Ok(m));
    }
    // A zero-timeout poll looks for the peer at once: end-of-file is readable.
    prop_assert_eq!(end.poll(Duration::ZERO), Ok(true), "end-of-file is readable");
    prop_assert_eq!(wait(&[end], Some(Duration::ZERO)).len(), 1);
    if blocking {
        prop_assert_eq!(end.recv_bytes_timeout(Duration::from_secs(10)), Err(Disconnected));
        prop_assert_eq!(end.recv_bytes(), Err(Disconnected));
    }
    Ok(())
}

fn capacity() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(2), Just(3), Just(7), 1usize..=9]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn duplex_pipe_matches_two_fifos_with_kept_messages(
        cap in capacity(),
        max in 0usize..=24,
        ops in proptest::collection::vec(op(), 0..150),
        close_side in 0usize..2,
    ) {
        run(cap, max, &ops, close_side, false)?;
    }

    /// Without closing: both directions drain to exactly the model.
    #[test]
    fn both_directions_drain_to_the_model(
        cap in capacity(),
        ops in proptest::collection::vec(op(), 0..80),
    ) {
        let (a, b) = Pipe::builder().capacity(cap).max_message(16).build().unwrap();
        let cap = cap.next_power_of_two();
        let mut dirs = [Dir::default(), Dir::default()];
        for op in &ops {
            if let Op::Send { side, len, salt } = *op {
                let end = if side == 0 { &a } else { &b };
                let want = send_expect(&dirs[side], len, 16, cap);
                prop_assert_eq!(end.send_bytes_timeout(&msg(len, salt), Duration::ZERO), want.clone());
                if want.is_ok() {
                    dirs[side].ring.push_back(msg(len, salt));
                }
            }
        }
        let [d0, d1] = &mut dirs;
        drain(&b, d0)?;
        drain(&a, d1)?;
    }
}

proptest! {
    // Few cases: each blocking end-of-file takes about 100 ms.
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn after_close_the_other_end_drains_then_gets_end_of_file(
        cap in capacity(),
        max in 0usize..=24,
        ops in proptest::collection::vec(op(), 0..60),
        close_side in 0usize..2,
    ) {
        run(cap, max, &ops, close_side, true)?;
    }
}

#[test]
fn zero_capacity_is_a_geometry_error() {
    assert!(matches!(
        Pipe::builder().capacity(0).build(),
        Err(QueueCreateError::Geometry(GeometryError::ZeroCapacity))
    ));
    assert!(Pipe::builder().capacity(0).simplex().is_err());
}
