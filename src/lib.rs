//! # shmkit
//!
//! Python's `multiprocessing`, rebuilt in Rust on shared memory: primitives that work between
//! forked children and unrelated processes, an order of magnitude faster than pipes and
//! sockets, and robust to a peer that is killed mid-operation or scribbles on shared memory.
//!
//! ## Contents, bottom-up (each layer uses only those above it in this list)
//!
//! | layer | items |
//! |---|---|
//! | [`shm`] — segments | [`Segment`](shm::Segment) (anonymous, named, memfd), [`SegmentBuilder`](shm::SegmentBuilder), [`Header`](shm::Header), [`Kind`](shm::Kind), [`Layout`](shm::Layout), [`Offset`](shm::Offset), [`Shareable`](shm::Shareable), [`list`](shm::list) |
//! | [`futex`] — waiting | [`wait`](futex::wait), [`wake`](futex::wake), [`WaitCell`](futex::WaitCell), [`WaitStrategy`](futex::WaitStrategy) |
//! | [`sync`] — synchronization | [`Lock`](sync::Lock), [`RLock`](sync::RLock), [`Semaphore`](sync::Semaphore), [`BoundedSemaphore`](sync::BoundedSemaphore), [`Event`](sync::Event), [`Condition`](sync::Condition), [`Barrier`](sync::Barrier) — robust to a dead holder |
//! | [`value`] — shared data | [`Value`](value::Value), [`RawValue`](value::RawValue), [`Array`](value::Array), [`RawArray`](value::RawArray) |
//! | [`pipe`] — connections | [`Pipe`](pipe::Pipe), [`Connection`](pipe::Connection), [`wait`](pipe::wait) — on shared-memory frame rings, end-of-file on close or death |
//! | [`process`] — processes | [`Process`](process::Process) (fork and spawn start methods, [`init`](process::init)), [`Pool`](process::Pool) (`map`, `imap`, `imap_unordered`, `starmap`, `apply_async` → [`AsyncResult`](process::AsyncResult)), [`current_process`](process::current_process), [`active_children`](process::active_children), [`cpu_count`](process::cpu_count), [`Wire`](process::Wire) — a killed worker gives `WorkerDied`, never a hang |
//! | [`manager`] — served objects (feature `manager`, default) | [`Manager`](manager::Manager) (`start` a server process, `serve`, `connect`), [`Client`](manager::Client), proxies [`DictProxy`](manager::DictProxy), [`ListProxy`](manager::ListProxy), [`QueueProxy`](manager::QueueProxy), [`JoinableQueueProxy`](manager::JoinableQueueProxy), [`ValueProxy`](manager::ValueProxy), [`LockProxy`](manager::LockProxy), [`EventProxy`](manager::EventProxy), [`SemaphoreProxy`](manager::SemaphoreProxy), [`Obj`](manager::Obj) — over a Unix socket or TCP, HMAC-SHA256 authenticated, for objects of any shape and processes on other hosts |
//! | [`inspect`] — diagnostics | [`inspect`](inspect::inspect), [`inspect_segment`](inspect::inspect_segment) → [`Report`](inspect::Report) (what a segment holds, read without touching it: `shmkit inspect NAME`) |
//! | [`util`] — helpers | [`ProcessToken`](util::proc::ProcessToken) (pid + start time), [`Liveness`](util::proc::Liveness) |
//! | `bench` (feature) | the workloads and peers of the benchmarks and `shmkit bench` (pipe, socketpair, POSIX mq, ipc-channel, crossbeam, pthread mutexes, raw_sync, Python's multiprocessing, spin rings), the suite runner and machine facts |
//!
//! Everything is Linux-only: futexes, `memfd_create`, `/dev/shm`, `/proc`.
//!
//! ## Errors, not panics
//! Anything a caller or another process can cause — a bad name, a segment of the wrong kind,
//! version or size, a corrupted header — is a typed error ([`shm::ShmOpenError`], …).
//! Memory a peer can write is treated as untrusted input.

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmkit supports Linux only (futexes, memfd, /dev/shm)");

mod primitive;

pub mod futex;
#[cfg(not(loom))]
pub mod pipe;
pub mod queue;
#[cfg(not(loom))]
pub mod shm;
pub mod sync;
pub mod util;
#[cfg(not(loom))]
pub mod value;

#[cfg(not(loom))]
pub mod process;

#[cfg(not(loom))]
pub mod inspect;

#[cfg(all(feature = "manager", not(loom)))]
pub mod manager;

#[cfg(all(feature = "bench", not(loom)))]
pub mod bench;

#[cfg(not(loom))]
#[doc(hidden)]
pub mod __fuzz;
