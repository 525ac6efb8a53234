//! Addresses, and one stream/listener type over Unix sockets and TCP.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::ManagerError;

/// Where a manager listens: a Unix socket path, or a TCP `host:port`.
///
/// Parsed from text: `unix:PATH` or anything containing a `/` is a Unix socket path;
/// `tcp:HOST:PORT` or `HOST:PORT` (`127.0.0.1:5000`, `[::1]:0`, `localhost:5000`) is TCP.
/// Port 0 lets the kernel pick one; the server's [`address`](super::Server::address) tells
/// which.
///
/// # Examples
/// ```
/// use shmkit::manager::Address;
/// let a: Address = "/tmp/app.sock".parse()?;
/// assert!(matches!(a, Address::Unix(_)));
/// let t: Address = "127.0.0.1:5000".parse()?;
/// assert_eq!(t.to_string(), "127.0.0.1:5000");
/// assert!("no-port".parse::<Address>().is_err());
/// # Ok::<(), shmkit::manager::ManagerError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A Unix stream socket at this path (the server creates it with mode 0600).
    Unix(PathBuf),
    /// TCP `host:port` (host a name or an IP address).
    Tcp(String),
}

/// The longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const UNIX_PATH_MAX: usize = 107;

impl FromStr for Address {
    type Err = ManagerError;

    fn from_str(s: &str) -> Result<Address, ManagerError> {
        let bad = |why: &str| ManagerError::Address(format!("{s:?}: {why}"));
        if let Some(path) = s.strip_prefix("unix:") {
            return Address::unix(path);
        }
        let tcp = s.strip_prefix("tcp:");
        if tcp.is_none() && s.contains('/') {
            return Address::unix(s);
        }
        let hp = tcp.unwrap_or(s);
        let (host, port) =
            hp.rsplit_once(':').ok_or_else(|| bad("expected a path with a '/' or HOST:PORT"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        port.parse::<u16>().map_err(|_| bad("the port is not a number from 0 to 65535"))?;
        Ok(Address::Tcp(hp.to_string()))
    }
}

impl Address {
    fn unix(path: &str) -> Result<Address, ManagerError> {
        if path.is_empty() {
            return Err(ManagerError::Address("empty socket path".into()));
        }
        if path.len() > UNIX_PATH_MAX {
            return Err(ManagerError::Address(format!(
                "socket path of {} bytes; Unix sockets take at most {UNIX_PATH_MAX}",
                path.len()
            )));
        }
        if path.contains('\0') {
            return Err(ManagerError::Address("socket path contains a NUL byte".into()));
        }
        Ok(Address::Unix(PathBuf::from(path)))
    }

    fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match self {
            Address::Tcp(hp) => Ok(hp.to_socket_addrs()?.collect()),
            Address::Unix(_) => Ok(Vec::new()),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(hp) => f.write_str(hp),
        }
    }
}

/// What names an [`Address`]: text to parse (`&str`, `String`), an `Address`, a
/// `SocketAddr` (TCP) or a `&Path` / `PathBuf` (a Unix socket).
pub trait IntoAddress {
    /// The address, or why this is not one.
    fn into_address(self) -> Result<Address, ManagerError>;
}

impl IntoAddress for &str {
    fn into_address(self) -> Result<Address, ManagerError> {
        self.parse()
    }
}

impl IntoAddress for String {
    fn into_address(self) -> Result<Address, ManagerError> {
        self.parse()
    }
}

impl IntoAddress for &String {
    fn into_address(self) -> Result<Address, ManagerError> {
        self.parse()
    }
}

impl IntoAddress for Address {
    fn into_address(self) -> Result<Address, ManagerError> {
        Ok(self)
    }
}

impl IntoAddress for &Address {
    fn into_address(self) -> Result<Address, ManagerError> {
        Ok(self.clone())
    }
}

impl IntoAddress for SocketAddr {
    fn into_address(self) -> Result<Address, ManagerError> {
        Ok(Address::Tcp(self.to_string()))
    }
}

impl IntoAddress for &Path {
    fn into_address(self) -> Result<Address, ManagerError> {
        match self.to_str() {
            Some(s) => Address::unix(s),
            None => Err(ManagerError::Address(format!("{}: not UTF-8", self.display()))),
        }
    }
}

impl IntoAddress for PathBuf {
    fn into_address(self) -> Result<Address, ManagerError> {
        self.as_path().into_address()
    }
}

impl IntoAddress for &PathBuf {
    fn into_address(self) -> Result<Address, ManagerError> {
        self.as_path().into_address()
    }
}

/// A connected stream of either family.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub(crate) fn connect(address: &Address) -> io::Result<Stream> {
        match address {
            Address::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p)?)),
            Address::Tcp(_) => {
                let mut last =
                    io::Error::new(io::ErrorKind::NotFound, "the host name resolves to no address");
                for a in address.resolve()? {
                    match TcpStream::connect(a) {
                        Ok(s) => {
                            // Requests are single small frames, each written once: Nagle
                            // would hold every one back for the previous reply's ACK.
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    pub(crate) fn shutdown(&self) {
        // Errors mean it is already shut down or closed: nothing left to do.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }

    pub(crate) fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    /// Whether the peer has closed or reset the connection (a non-blocking `poll`).
    pub(crate) fn peer_gone(&self) -> bool {
        let mut p = libc::pollfd { fd: self.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    /// `send(MSG_NOSIGNAL)`: a closed peer is `EPIPE`, never a SIGPIPE that would kill a
    /// host program that has not ignored it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes; the fd is this stream's.
            let n =
                unsafe { libc::send(self.as_raw_fd(), buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A stream with a read buffer (one `recv` usually takes a frame's prefix and body
/// together); writes go straight to the socket.
///
/// Reads block at once: polling the socket for a few µs first (so a quick reply skips a
/// sleep and a wake-up) made round trips 3-4× slower on a busy 2-CPU machine, the poller
/// holding the CPU the other end needed.
#[derive(Debug)]
pub(crate) struct BufStream {
    stream: Stream,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    /// Reads past this instant fail with `TimedOut` (the handshake's whole budget, however
    /// slowly the peer trickles its bytes).
    deadline: Option<Instant>,
}

impl BufStream {
    pub(crate) fn new(stream: Stream) -> BufStream {
        BufStream { stream, buf: vec![0; 16 << 10].into_boxed_slice(), pos: 0, end: 0, deadline: None }
    }

    pub(crate) fn get_ref(&self) -> &Stream {
        &self.stream
    }

    /// Reads must complete by `deadline` (`None`: the socket's own read timeout, if any).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    fn recv_by_deadline(&self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        BufStream::recv(&self.stream, out)
    }

    /// One blocking `recv` (honouring the socket's read timeout).
    fn recv(stream: &Stream, out: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `out` is valid for writes of `out.len()` bytes; the fd is the stream's.
            let n = unsafe { libc::recv(stream.as_raw_fd(), out.as_mut_ptr().cast(), out.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Read for BufStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.end {
            if out.len() >= self.buf.len() {
                return self.recv_by_deadline(out);
            }
            let mut buf = std::mem::take(&mut self.buf);
            let r = self.recv_by_deadline(&mut buf);
            self.buf = buf;
            self.end = r?;
            self.pos = 0;
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for BufStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket of either family. A Unix listener removes its socket file when
/// dropped in process `unlink_pid` (if the file is still the one it made).
#[derive(Debug)]
pub(crate) enum Listener {
    Unix { listener: UnixListener, path: PathBuf, ino: u64, unlink_pid: u32 },
    Tcp(TcpListener),
}

fn same_socket_file(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| m.ino())
}

impl Listener {
    /// Binds `address`. TCP: every address the host resolves to must be a loopback address
    /// unless `allow_remote`. Unix: a socket file nobody listens on any more (a crashed
    /// server's) is replaced; a live one is `AddrInUse`; the new file gets mode 0600.
    pub(crate) fn bind(address: &Address, allow_remote: bool) -> Result<Listener, ManagerError> {
        match address {
            Address::Unix(path) => {
                let listener = match UnixListener::bind(path) {
                    Ok(l) => l,
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse && same_socket_file(path).is_some() => {
                        match UnixStream::connect(path) {
                            Err(c) if c.kind() == io::ErrorKind::ConnectionRefused => {
                                std::fs::remove_file(path)
                                    .map_err(|e| ManagerError::Bind(address.clone(), e))?;
                                UnixListener::bind(path)
                                    .map_err(|e| ManagerError::Bind(address.clone(), e))?
                            }
                            _ => return Err(ManagerError::Bind(address.clone(), e)),
                        }
                    }
                    Err(e) => return Err(ManagerError::Bind(address.clone(), e)),
                };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| ManagerError::Bind(address.clone(), e))?;
                let ino = same_socket_file(path).unwrap_or(0);
                // No process removes the file until one serves it: a copy of a bound server
                // that a parent drops after forking must not take the file from the child.
                Ok(Listener::Unix { listener, path: path.clone(), ino, unlink_pid: 0 })
            }
            Address::Tcp(_) => {
                let addrs = address.resolve().map_err(|e| ManagerError::Bind(address.clone(), e))?;
                if addrs.is_empty() {
                    return Err(ManagerError::Address(format!("{address}: resolves to no address")));
                }
                if !allow_remote {
                    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
                        return Err(ManagerError::NotLoopback(a.ip()));
                    }
                }
                let l = TcpListener::bind(&addrs[..]).map_err(|e| ManagerError::Bind(address.clone(), e))?;
                Ok(Listener::Tcp(l))
            }
        }
    }

    /// The bound address (with the real port for TCP port 0).
    pub(crate) fn address(&self) -> io::Result<Address> {
        Ok(match self {
            Listener::Unix { path, .. } => Address::Unix(path.clone()),
            Listener::Tcp(l) => Address::Tcp(l.local_addr()?.to_string()),
        })
    }

    pub(crate) fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix { listener, .. } => Ok(Stream::Unix(listener.accept()?.0)),
            Listener::Tcp(l) => {
                let s = l.accept()?.0;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// Makes the process `pid` (0: none) the one that removes the socket file on drop.
    pub(crate) fn set_unlink_pid(&mut self, pid: u32) {
        if let Listener::Unix { unlink_pid, .. } = self {
            *unlink_pid = pid;
        }
    }

    /// Waits up to `timeout` for a connection to accept.
    pub(crate) fn ready(&self, timeout: Duration) -> bool {
        let fd = match self {
            Listener::Unix { listener, .. } => listener.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        };
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n > 0
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, ino, unlink_pid, .. } = self {
            // Only our own file (another server may have replaced it since), and only in
            // the process that serves it (not in a parent's copy left over by fork).
            if *unlink_pid == std::process::id() && *ino != 0 && same_socket_file(path) == Some(*ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!("unix:rel.sock".parse::<Address>().unwrap(), Address::Unix("rel.sock".into()));
        assert_eq!("./a.sock".parse::<Address>().unwrap(), Address::Unix("./a.sock".into()));
        assert_eq!("tcp:localhost:0".parse::<Address>().unwrap(), Address::Tcp("localhost:0".into()));
        assert_eq!("[::1]:80".parse::<Address>().unwrap(), Address::Tcp("[::1]:80".into()));
        for bad in ["", "host", "host:", ":80", "h:70000", "h:x", "unix:"] {
            assert!(matches!(bad.parse::<Address>(), Err(ManagerError::Address(_))), "{bad:?}");
        }
        let long = format!("/tmp/{}", "x".repeat(200));
        assert!(matches!(long.parse::<Address>(), Err(ManagerError::Address(_))));
    }

    #[test]
    fn remote_binds_need_an_explicit_choice() {
        let a: Address = "0.0.0.0:0".parse().unwrap();
        assert!(matches!(Listener::bind(&a, false), Err(ManagerError::NotLoopback(_))));
        let l = Listener::bind(&"127.0.0.1:0".parse().unwrap(), false).unwrap();
        assert!(matches!(l.address().unwrap(), Address::Tcp(s) if !s.ends_with(":0")));
    }
}
