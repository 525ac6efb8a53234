//! The wire format: length-prefixed frames of postcard-encoded messages (see the module docs
//! of [`crate::manager`] for the whole protocol).
//!
//! Nothing here trusts the peer: a length prefix is checked against the limit before a byte
//! of the body is read or allocated, and a body that does not decode to exactly one message
//! is an error, never a panic.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Bytes of the length prefix.
pub(crate) const PREFIX: usize = 4;

/// The largest frame before authentication (the handshake messages are < 100 bytes).
pub(crate) const HANDSHAKE_MAX: usize = 256;

/// How much larger than the request limit a response may be: a reply wraps an item in a
/// few bytes fewer than the request that carried it, so whatever went in comes back out.
pub(crate) const RESPONSE_SLACK: usize = 64;

/// Protocol version, sent in the server's challenge.
pub(crate) const VERSION: u16 = 1;

/// The first bytes of the server's challenge.
pub(crate) const MAGIC: [u8; 8] = *b"shmkmgr\0";

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed or ended (`UnexpectedEof` when it ended mid-frame or before one).
    Io(io::Error),
    /// The length prefix announces more than the limit; nothing of the body was read.
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The body is not one valid message.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLarge { len, max } => write!(f, "frame of {len} bytes exceeds the limit of {max}"),
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Encodes `msg` as one frame (prefix and body) into `buf`, replacing its contents. Fails
/// with `TooLarge` if the body exceeds `max`.
pub(crate) fn encode<T: Serialize>(msg: &T, max: usize, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    buf.clear();
    buf.extend_from_slice(&[0; PREFIX]);
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(msg, taken).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = buf.len() - PREFIX;
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    buf[..PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Writes `msg` as one frame with a single `write_all` (so a frame is one segment on TCP).
pub(crate) fn write_msg<T: Serialize>(
    w: &mut impl Write,
    msg: &T,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<(), FrameError> {
    encode(msg, max, buf)?;
    w.write_all(buf)?;
    Ok(())
}

/// Reads one frame's body into `buf` (its length checked against `max` first).
pub(crate) fn read_frame(r: &mut impl Read, max: usize, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut prefix = [0u8; PREFIX];
    r.read_exact(&mut prefix)?;
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    buf.clear();
    // Grows with what actually arrives, so a peer announcing `max` and sending nothing does
    // not make us allocate `max`.
    let got = r.take(len as u64).read_to_end(buf)?;
    if got != len {
        return Err(FrameError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection ended mid-frame",
        )));
    }
    Ok(())
}

/// Decodes a frame body that must hold exactly one `T`.
pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(body).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok(msg)
}

/// Reads and decodes one message.
pub(crate) fn read_msg<T: DeserializeOwned>(
    r: &mut impl Read,
    max: usize,
    buf: &mut Vec<u8>,
) -> Result<T, FrameError> {
    read_frame(r, max, buf)?;
    decode(buf)
}

// ---- handshake ----

/// Server → client, first message of a connection.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) enum ServerHello {
    /// Prove you know the key: HMAC(key, CLIENT_TAG ‖ nonce).
    Challenge { magic: [u8; 8], version: u16, nonce: [u8; 32] },
    /// The server has as many connections as it takes; try later.
    Busy,
}

/// Client → server: the answer, and the client's own challenge.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) struct ClientAnswer {
    pub mac: [u8; 32],
    pub nonce: [u8; 32],
}

/// Server → client: the verdict.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub(crate) enum ServerVerdict {
    /// Accepted; the server proves it knows the key: HMAC(key, SERVER_TAG ‖ client nonce ‖
    /// server nonce ‖ server id). `max_message` is the server's frame limit; `server_id`
    /// is random per server run (a client that reconnects to a restarted server at the same
    /// address sees another id, and does not mistake the new server's objects for its own).
    Welcome { mac: [u8; 32], max_message: u64, server_id: u64 },
    /// Wrong key.
    Rejected,
    /// Right key, but the server has `max_connections` authenticated clients.
    Busy,
}

// ---- requests ----

/// The kinds of object a server holds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// [`DictProxy`](super::DictProxy).
    Dict,
    /// [`ListProxy`](super::ListProxy).
    List,
    /// [`QueueProxy`](super::QueueProxy).
    Queue,
    /// [`JoinableQueueProxy`](super::JoinableQueueProxy).
    JoinableQueue,
    /// [`ValueProxy`](super::ValueProxy).
    Value,
    /// [`LockProxy`](super::LockProxy).
    Lock,
    /// [`EventProxy`](super::EventProxy).
    Event,
    /// [`SemaphoreProxy`](super::SemaphoreProxy).
    Semaphore,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What a new object starts with.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Init {
    /// Dict, list (empty), lock (free), event (clear).
    Empty,
    /// Queue / JoinableQueue: at most this many items (0: unbounded).
    Queue { maxsize: u64 },
    /// Value: its encoded value.
    Value(Vec<u8>),
    /// Semaphore: initial value, and the bound of a bounded semaphore.
    Semaphore { value: u64, bound: Option<u64> },
    /// List: these items.
    List(Vec<Vec<u8>>),
}

/// How long a blocking operation may wait.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Do not wait (`try_*`).
    No,
    /// Wait at most this many microseconds.
    Micros(u64),
    /// Wait until it succeeds (or the connection or server ends).
    Forever,
}

/// One request; each gets exactly one [`Response`].
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// Make an object; with a name, get the object of that name if there is one (of the
    /// same kind), or make and register it.
    Create { kind: ObjectKind, name: Option<String>, init: Init },
    /// The object registered under `name` (no creation).
    Open { kind: ObjectKind, name: String },
    /// Drop a name (the object lives on while references to it are held).
    Forget { name: String },
    /// One more reference to object `id` for this connection (a forked child's proxy).
    Retain { id: u64 },
    /// Give back one reference this connection holds (a proxy dropped).
    Release { id: u64 },
    /// An operation on object `id`.
    Call { id: u64, op: Op },
    /// Check the server is there.
    Ping,
    /// Counts of what the server holds.
    Stats,
    /// Stop the server: every connection is closed.
    Shutdown,
}

impl Request {
    /// Whether the server answers at once (no waiting on the server, no client-side
    /// timeout that could abandon the connection).
    pub(crate) fn is_quick(&self) -> bool {
        match self {
            Request::Call { op, .. } => op.wait().is_none_or(|w| w == Wait::No),
            Request::Create { .. }
            | Request::Open { .. }
            | Request::Forget { .. }
            | Request::Retain { .. } => true,
            Request::Ping | Request::Stats | Request::Shutdown | Request::Release { .. } => false,
        }
    }

    /// How long the server may take to answer beyond the grace period: the timeout of a
    /// timed blocking call, zero for `Ping` and `Shutdown`; `None`: no limit.
    pub(crate) fn timeout(&self) -> Option<std::time::Duration> {
        let op = match self {
            // Answered at once by a live server; bounded so a hung one cannot hang the caller
            // (`ManagerHandle::shutdown` then kills it).
            Request::Ping | Request::Stats | Request::Shutdown | Request::Release { .. } => {
                return Some(std::time::Duration::ZERO)
            }
            Request::Call { op, .. } => op,
            _ => return None,
        };
        match op.wait() {
            Some(Wait::Micros(us)) => Some(std::time::Duration::from_micros(us)),
            _ => None,
        }
    }
}

impl Op {
    /// How long a blocking operation may wait; `None` for the others.
    pub(crate) fn wait(&self) -> Option<Wait> {
        match self {
            Op::QueuePut(_, w)
            | Op::QueueGet(w)
            | Op::QueueJoin(w)
            | Op::LockAcquire(w)
            | Op::EventWait(w)
            | Op::SemAcquire(w) => Some(*w),
            _ => None,
        }
    }
}

/// The operations; keys, values and items are postcard bytes the server stores as they are.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Op {
    DictGet(Vec<u8>),
    DictInsert(Vec<u8>, Vec<u8>),
    DictRemove(Vec<u8>),
    DictContains(Vec<u8>),
    DictSetDefault(Vec<u8>, Vec<u8>),
    DictLen,
    DictKeys,
    DictValues,
    DictItems,
    DictUpdate(Vec<(Vec<u8>, Vec<u8>)>),
    DictClear,
    ListPush(Vec<u8>),
    ListPop,
    ListGet(u64),
    ListSet(u64, Vec<u8>),
    ListInsert(u64, Vec<u8>),
    ListRemove(u64),
    ListLen,
    ListReverse,
    ListExtend(Vec<Vec<u8>>),
    ListSnapshot,
    ListClear,
    QueuePut(Vec<u8>, Wait),
    QueueGet(Wait),
    QueueLen,
    TaskDone,
    QueueJoin(Wait),
    Unfinished,
    ValueGet,
    ValueSet(Vec<u8>),
    ValueSwap(Vec<u8>),
    LockAcquire(Wait),
    LockRelease,
    LockIsLocked,
    EventSet,
    EventClear,
    EventIsSet,
    EventWait(Wait),
    SemAcquire(Wait),
    SemRelease,
    SemValue,
}

/// A server's answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Response {
    Unit,
    Bool(bool),
    Len(u64),
    Item(Option<Vec<u8>>),
    Items(Vec<Vec<u8>>),
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    Object {
        id: u64,
        kind: ObjectKind,
        created: bool,
    },
    /// Objects held, of which named, and connections open.
    Stats {
        objects: u64,
        named: u64,
        connections: u64,
    },
    /// A lock was acquired; `owner_died`: its previous holder's connection ended while holding it.
    Acquired {
        owner_died: bool,
    },
    Err(Remote),
}

impl Remote {
    /// Whether the server closes the connection after sending this.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(self, Remote::Malformed(_) | Remote::ShuttingDown | Remote::TooLarge { .. })
    }
}

/// Errors the server reports for one request (the connection stays usable unless said).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) enum Remote {
    NoSuchObject(String),
    WrongKind {
        expected: ObjectKind,
        found: ObjectKind,
    },
    Index {
        index: u64,
        len: u64,
    },
    Empty,
    Full,
    Timeout,
    WouldBlock,
    /// The request frame was over the limit; the server closes the connection after this.
    TooLarge {
        len: u64,
        max: u64,
    },
    /// The reply would be over the limit (e.g. `items()` of a huge dict); nothing changed
    /// and the connection stays open.
    ReplyTooLarge {
        len: u64,
        max: u64,
    },
    /// A well-formed request the server cannot do (e.g. a name of 300 bytes).
    BadRequest(String),
    TaskDoneTooMany,
    ReleasedTooMany,
    NotOwner,
    TooManyObjects,
    /// The frame could not be decoded; the server closes the connection after this.
    Malformed(String),
    /// The server is shutting down; the connection closes after this.
    ShuttingDown,
}

/// Fuzz body: reads frames from `data` as a server and a client would, decoding each as
/// every message type. Must never panic, nor allocate past the limit.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let max = 4096;
    let mut r = data;
    let mut buf = Vec::new();
    while !r.is_empty() {
        match read_frame(&mut r, max, &mut buf) {
            Ok(()) => {
                assert!(buf.len() <= max);
                if let Ok(req) = decode::<Request>(&buf) {
                    // What decodes re-encodes to the same bytes (postcard is canonical up to
                    // varint padding, which it rejects).
                    let mut again = Vec::new();
                    encode(&req, usize::MAX, &mut again).expect("a decoded request encodes");
                    assert_eq!(decode::<Request>(&again[PREFIX..]).ok(), Some(req));
                }
                let _ = decode::<Response>(&buf);
                let _ = decode::<ServerHello>(&buf);
                let _ = decode::<ClientAnswer>(&buf);
                let _ = decode::<ServerVerdict>(&buf);
            }
            Err(FrameError::TooLarge { len, .. }) => {
                assert!(len > max as u64);
                break;
            }
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_check_their_length() {
        let req = Request::Call { id: 7, op: Op::DictInsert(vec![1, 2], vec![3; 100]) };
        let mut buf = Vec::new();
        encode(&req, 1 << 20, &mut buf).unwrap();
        assert_eq!(u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize, buf.len() - 4);
        let mut body = Vec::new();
        let back: Request = read_msg(&mut &buf[..], 1 << 20, &mut body).unwrap();
        assert_eq!(back, req);
        // Over the limit on either side.
        assert!(matches!(encode(&req, 10, &mut buf), Err(FrameError::TooLarge { max: 10, .. })));
        encode(&req, 1 << 20, &mut buf).unwrap();
        assert!(matches!(
            read_msg::<Request>(&mut &buf[..], 10, &mut body),
            Err(FrameError::TooLarge { max: 10, .. })
        ));
        // Cut short, trailing bytes, garbage.
        assert!(matches!(
            read_msg::<Request>(&mut &buf[..buf.len() - 1], 1 << 20, &mut body),
            Err(FrameError::Io(_))
        ));
        let mut extra = buf.clone();
        extra.push(0);
        let n = (extra.len() - 4) as u32;
        extra[..4].copy_from_slice(&n.to_le_bytes());
        assert!(matches!(
            read_msg::<Request>(&mut &extra[..], 1 << 20, &mut body),
            Err(FrameError::Malformed(_))
        ));
        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_msg::<Request>(&mut &garbage[..], 1 << 20, &mut body),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn a_huge_announced_length_allocates_nothing_up_front() {
        let frame = [0xff, 0xff, 0xff, 0x0f, 1, 2, 3];
        let mut body = Vec::new();
        let r = read_frame(&mut &frame[..], usize::MAX, &mut body);
        assert!(matches!(r, Err(FrameError::Io(_))));
        assert!(body.capacity() < 1 << 20, "{}", body.capacity());
    }
}
