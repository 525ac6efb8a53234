//! The HMAC-SHA256 challenge both ends of a connection pass before anything else.
//!
//! 1. server → client: `Challenge { magic, version, nonce_s }` (32 random bytes);
//! 2. client → server: `ClientAnswer { mac: HMAC(key, CLIENT_TAG ‖ nonce_s), nonce: nonce_c }`;
//! 3. server → client: `Welcome { mac: HMAC(key, SERVER_TAG ‖ nonce_c ‖ nonce_s ‖ server id),
//!    max_message, server_id }` if the
//!    client's MAC verifies, else `Rejected` and the connection closes.
//!
//! Both directions are proven (a client does not talk to a server that does not know the
//! key either); the tags keep one direction's MAC from answering the other's challenge.
//! MACs are compared in constant time (`Mac::verify_slice`). Frames are limited to
//! [`HANDSHAKE_MAX`](super::proto::HANDSHAKE_MAX) bytes until the client is accepted.

use std::io::{self, Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::proto::{
    self, ClientAnswer, FrameError, ServerHello, ServerVerdict, HANDSHAKE_MAX, MAGIC, VERSION,
};

type HmacSha256 = Hmac<Sha256>;

const CLIENT_TAG: &[u8] = b"shmkit-manager-v1 client answer";
const SERVER_TAG: &[u8] = b"shmkit-manager-v1 server answer";

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a valid writable buffer of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    for p in parts {
        m.update(p);
    }
    m
}

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The peer does not know the key.
    BadKey,
    /// The server has no room for another connection.
    Busy,
    /// Not a shmkit manager, or another protocol version.
    Protocol(String),
    /// Reading or writing failed.
    Frame(FrameError),
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Frame(e)
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Frame(FrameError::Io(e))
    }
}

/// The server's side; `Ok` once the client has proven it knows `key`.
pub(crate) fn serve<S: Read + Write>(
    s: &mut S,
    key: &[u8],
    max_message: usize,
    server_id: u64,
    admit: impl FnOnce() -> bool,
) -> Result<(), HandshakeError> {
    let mut buf = Vec::with_capacity(128);
    let mut nonce = [0u8; 32];
    random_bytes(&mut nonce)?;
    proto::write_msg(
        s,
        &ServerHello::Challenge { magic: MAGIC, version: VERSION, nonce },
        HANDSHAKE_MAX,
        &mut buf,
    )?;
    let answer: ClientAnswer = proto::read_msg(s, HANDSHAKE_MAX, &mut buf)?;
    if mac(key, &[CLIENT_TAG, &nonce]).verify_slice(&answer.mac).is_err() {
        // Best effort: the client learns why before the connection closes.
        let _ = proto::write_msg(s, &ServerVerdict::Rejected, HANDSHAKE_MAX, &mut buf);
        return Err(HandshakeError::BadKey);
    }
    if !admit() {
        let _ = proto::write_msg(s, &ServerVerdict::Busy, HANDSHAKE_MAX, &mut buf);
        return Err(HandshakeError::Busy);
    }
    let id = server_id.to_le_bytes();
    let proof: [u8; 32] = mac(key, &[SERVER_TAG, &answer.nonce, &nonce, &id]).finalize().into_bytes().into();
    let verdict = ServerVerdict::Welcome { mac: proof, max_message: max_message as u64, server_id };
    proto::write_msg(s, &verdict, HANDSHAKE_MAX, &mut buf)?;
    Ok(())
}

/// The client's side; returns the server's message limit and id.
pub(crate) fn client<S: Read + Write>(s: &mut S, key: &[u8]) -> Result<(u64, u64), HandshakeError> {
    let mut buf = Vec::with_capacity(128);
    let server_nonce = match proto::read_msg::<ServerHello>(s, HANDSHAKE_MAX, &mut buf) {
        Ok(ServerHello::Challenge { magic, version, nonce }) => {
            if magic != MAGIC {
                return Err(HandshakeError::Protocol("not a shmkit manager".into()));
            }
            if version != VERSION {
                return Err(HandshakeError::Protocol(format!(
                    "manager protocol version {version}, this client speaks {VERSION}"
                )));
            }
            nonce
        }
        Ok(ServerHello::Busy) => return Err(HandshakeError::Busy),
        Err(FrameError::Malformed(_) | FrameError::TooLarge { .. }) => {
            return Err(HandshakeError::Protocol("not a shmkit manager".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let mut nonce = [0u8; 32];
    random_bytes(&mut nonce)?;
    let answer: [u8; 32] = mac(key, &[CLIENT_TAG, &server_nonce]).finalize().into_bytes().into();
    proto::write_msg(s, &ClientAnswer { mac: answer, nonce }, HANDSHAKE_MAX, &mut buf)?;
    match proto::read_msg::<ServerVerdict>(s, HANDSHAKE_MAX, &mut buf) {
        Ok(ServerVerdict::Welcome { mac: proof, max_message, server_id }) => {
            let id = server_id.to_le_bytes();
            if mac(key, &[SERVER_TAG, &nonce, &server_nonce, &id]).verify_slice(&proof).is_err() {
                return Err(HandshakeError::Protocol("the server does not know the authkey".into()));
            }
            Ok((max_message, server_id))
        }
        Ok(ServerVerdict::Rejected) => Err(HandshakeError::BadKey),
        Ok(ServerVerdict::Busy) => Err(HandshakeError::Busy),
        // A server closes right after rejecting; if the verdict got lost, that is still it.
        Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(HandshakeError::BadKey),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair(
        server_key: &'static [u8],
        client_key: &'static [u8],
    ) -> (Result<(), HandshakeError>, Result<(u64, u64), HandshakeError>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || serve(&mut a, server_key, 1234, 77, || true));
        let c = client(&mut b, client_key);
        drop(b);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_key_passes_both_ways() {
        let (s, c) = pair(b"secret", b"secret");
        assert!(s.is_ok());
        assert_eq!(c.unwrap(), (1234, 77));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let (s, c) = pair(b"secret", b"guess");
        assert!(matches!(s, Err(HandshakeError::BadKey)));
        assert!(matches!(c, Err(HandshakeError::BadKey)));
    }

    #[test]
    fn random_bytes_are_not_all_zero() {
        let mut a = [0u8; 32];
        random_bytes(&mut a).unwrap();
        assert_ne!(a, [0u8; 32]);
    }
}
