//! Manager workloads: one dict insert through a [`Manager`](crate::manager::Manager) over
//! its Unix socket or over TCP loopback, beside the floor under it, a raw length-prefixed
//! echo over the same kind of socket to a forked child.
//!
//! | scenario | one iteration | implementations |
//! |---|---|---|
//! | [`manager_dict`] | `d.insert("k", i)` on a `DictProxy<String, u64>` | [`ManagerPeer::ALL`] |
//! | [`socket_echo`] | one [`INSERT_FRAME`]-byte frame to the child and back | [`EchoPeer::ALL`] |
//!
//! A dict insert is one request and one reply: the client writes a postcard frame with a
//! 4-byte length prefix, the server process reads it, updates the dict and writes its reply.
//! The echo peer does the least a server can do with such a frame: the parent writes it in
//! one `write`, the child reads it (the prefix says how much) and writes it back in one
//! `write`, the parent reads it whole. No encoding, no lookup, no authentication: the
//! transport's own cost, and what the manager adds is the difference.
//!
//! Neither side is pinned: the manager's server process is an ordinary child that runs
//! where the scheduler puts it, and the echo child gets the same treatment. TCP sockets have
//! `TCP_NODELAY` on both ends, as the manager's do. A dead child cannot hang the parent: its
//! reads time out after [`PEER_TIMEOUT`](super::PEER_TIMEOUT), and the child, which has
//! `PR_SET_PDEATHSIG`, dies with the parent.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::{finish, socketpair, PEER_TIMEOUT};

/// Bytes of the echo peers' frame, the 4-byte length prefix included: what the client
/// writes for one `d.insert("k", i)` on a `DictProxy<String, u64>` (a 4-byte prefix and a
/// postcard `Call { id, op: DictInsert(key, value) }` of 8 to 10 bytes, as `i`'s varint
/// grows; the reply, `Item(Some(old))`, is 8 to 10 bytes with its prefix). The echo sends
/// the same 14 bytes both ways.
pub const INSERT_FRAME: usize = 14;

/// A transport for the Manager's dict insert (`manager_dict_op/<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagerPeer {
    /// `Manager::start()`: the server listens on a private Unix socket.
    Unix,
    /// `Manager::builder().address("127.0.0.1:0").start()`: TCP over loopback.
    TcpLoopback,
}

impl ManagerPeer {
    /// Every transport, the default (Unix) first.
    pub const ALL: [ManagerPeer; 2] = [ManagerPeer::Unix, ManagerPeer::TcpLoopback];

    /// The benchmark id (`manager_dict_op/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            ManagerPeer::Unix => "shmkit_unix",
            ManagerPeer::TcpLoopback => "shmkit_tcp_loopback",
        }
    }
}

/// A raw socket echo of length-prefixed frames (`manager_dict_op/<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EchoPeer {
    /// A connected `AF_UNIX` stream pair.
    UnixSocket,
    /// A TCP connection over 127.0.0.1, `TCP_NODELAY` on both ends.
    Tcp,
}

impl EchoPeer {
    /// Every implementation.
    pub const ALL: [EchoPeer; 2] = [EchoPeer::UnixSocket, EchoPeer::Tcp];

    /// The benchmark id (`manager_dict_op/<name>`).
    pub fn name(self) -> &'static str {
        match self {
            EchoPeer::UnixSocket => "unix_socket_echo",
            EchoPeer::Tcp => "tcp_echo",
        }
    }
}

/// Starts a Manager on `peer`'s transport, makes a `DictProxy<String, u64>`, inserts key
/// `"k"` once (the warm-up, which also makes the server's first allocations), then times
/// `iters` inserts of `1..=iters` under that key. Each insert's returned old value is
/// checked, and the last value read back, before the Manager is shut down. The server's
/// start and shutdown are not timed.
///
/// # Errors
/// The Manager's error as an `io::Error`, or a wrong old value.
#[cfg(feature = "manager")]
pub fn manager_dict(peer: ManagerPeer, iters: u64) -> io::Result<Duration> {
    use super::other;
    use crate::manager::{DictProxy, Manager};

    let mgr = match peer {
        ManagerPeer::Unix => Manager::start(),
        ManagerPeer::TcpLoopback => Manager::builder().address("127.0.0.1:0").start(),
    }
    .map_err(other)?;
    let d: DictProxy<String, u64> = mgr.dict().map_err(other)?;
    d.insert("k", 0u64).map_err(other)?;
    let start = Instant::now();
    for i in 1..=iters {
        match d.insert("k", i).map_err(other)? {
            Some(old) if old == i - 1 => {}
            old => return Err(io::Error::other(format!("insert {i}: old value {old:?}"))),
        }
    }
    let elapsed = start.elapsed();
    match d.get("k").map_err(other)? {
        Some(v) if v == iters => {}
        v => return Err(io::Error::other(format!("after {iters} inserts the dict holds {v:?}"))),
    }
    drop(d);
    mgr.shutdown().map_err(other)?;
    Ok(elapsed)
}

/// Built without feature `manager`: there is no Manager to measure.
///
/// # Errors
/// Always [`io::ErrorKind::Unsupported`].
#[cfg(not(feature = "manager"))]
pub fn manager_dict(_peer: ManagerPeer, _iters: u64) -> io::Result<Duration> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "built without feature `manager`"))
}

/// Times `iters` echoes of a `frame_len`-byte frame (a 4-byte little-endian length, then
/// the payload; at least 12 bytes) over `peer`, to a forked child and back, after one
/// warm-up echo that absorbs the fork. Every echo is checked (the payload carries the round's
/// number).
///
/// # Errors
/// An OS error, `TimedOut` if the child stops answering, a wrong echo, or the child failing.
///
/// # Panics
/// If `frame_len` is below 12.
pub fn socket_echo(peer: EchoPeer, iters: u64, frame_len: usize) -> io::Result<Duration> {
    assert!(frame_len >= 12, "an echo frame has a 4-byte length and an 8-byte round number");
    match peer {
        EchoPeer::UnixSocket => {
            let (a, b) = socketpair()?;
            echo_pair(
                UnixStream::from(a),
                UnixStream::from(b),
                iters,
                frame_len,
                UnixStream::set_read_timeout,
            )
        }
        EchoPeer::Tcp => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let client = TcpStream::connect(listener.local_addr()?)?;
            let (server, _) = listener.accept()?;
            drop(listener);
            client.set_nodelay(true)?;
            server.set_nodelay(true)?;
            echo_pair(client, server, iters, frame_len, TcpStream::set_read_timeout)
        }
    }
}

/// Forks the echo child on `server` and runs the timed rounds on `client`.
fn echo_pair<S: Read + Write>(
    mut client: S,
    server: S,
    iters: u64,
    frame_len: usize,
    set_read_timeout: fn(&S, Option<Duration>) -> io::Result<()>,
) -> io::Result<Duration> {
    set_read_timeout(&client, Some(PEER_TIMEOUT))?;
    // SAFETY: the bench processes fork from their only thread; the child reads and writes
    // its socket, then `_exit`s. It sets PDEATHSIG so it never outlives the parent.
    let child = unsafe {
        crate::util::child::fork(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            echo_child(server, iters + 1)
        })
    }?;
    let result = echo_rounds(&mut client, iters, frame_len);
    drop(client);
    finish(child, None, result)
}

/// The child: echoes `rounds` whole frames, then exits with 0. (It counts them rather than
/// waiting for end-of-file: it inherited the parent's end of the connection too.)
fn echo_child(mut s: impl Read + Write, rounds: u64) -> i32 {
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..rounds {
        match read_frame(&mut s, &mut buf) {
            Ok(Some(n)) => {
                if s.write_all(&buf[..n]).is_err() {
                    return 3;
                }
            }
            Ok(None) | Err(_) => return 2,
        }
    }
    0
}

/// Reads one frame into `buf` (as few `read`s as the socket allows: usually one) and
/// returns its length, prefix included; `None` at end-of-file before a frame starts.
fn read_frame(s: &mut impl Read, buf: &mut [u8]) -> io::Result<Option<usize>> {
    let mut have = 0;
    let mut want = 4;
    while have < want {
        let n = match s.read(&mut buf[have..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return if have == 0 { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        have += n;
        if want == 4 && have >= 4 {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            want = 4 + len;
            if want > buf.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {want} bytes")));
            }
        }
    }
    if have != want {
        // One request at a time: nothing may follow the frame.
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bytes after the frame"));
    }
    Ok(Some(have))
}

/// The parent's rounds: `iters + 1` echoes, the clock started after the first.
fn echo_rounds(s: &mut (impl Read + Write), iters: u64, frame_len: usize) -> io::Result<Duration> {
    let mut frame = vec![0xa5u8; frame_len];
    frame[..4].copy_from_slice(&((frame_len - 4) as u32).to_le_bytes());
    let mut back = vec![0u8; frame_len];
    let mut start = Instant::now();
    for i in 0..=iters {
        if i == 1 {
            start = Instant::now();
        }
        frame[4..12].copy_from_slice(&i.to_le_bytes());
        s.write_all(&frame)?;
        match read_frame(s, &mut back)? {
            Some(n) if back[..n] == frame[..] => {}
            Some(_) => return Err(io::Error::other(format!("echo {i}: wrong frame"))),
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_peers_run() {
        for peer in EchoPeer::ALL {
            socket_echo(peer, 50, INSERT_FRAME).unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
            socket_echo(peer, 3, 12).unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
        }
    }

    #[cfg(feature = "manager")]
    #[test]
    fn manager_dict_runs() {
        for peer in ManagerPeer::ALL {
            manager_dict(peer, 20).unwrap_or_else(|e| panic!("{}: {e}", peer.name()));
        }
    }
}
