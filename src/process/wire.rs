//! How arguments and results cross a process boundary: the [`Wire`] encoding, and
//! references to functions that stay valid in a re-executed copy of the binary.

use std::fmt;

/// A value that can travel to another process as bytes: a task argument, a result, the
/// argument of a spawned entry point.
///
/// Implemented for every [`bytemuck::Pod`] type (its bytes, copied) and, with the `serde`
/// feature, for [`Serde<T>`] (postcard).
///
/// # Examples
/// ```
/// use shmkit::process::Wire;
/// let mut buf = Vec::new();
/// 7u64.encode(&mut buf).unwrap();
/// assert_eq!(u64::decode(&buf).unwrap(), 7);
/// assert!(u32::decode(&buf).is_err()); // wrong size: a typed error
/// ```
pub trait Wire: Sized {
    /// Appends the encoding of `self` to `out`.
    ///
    /// # Errors
    /// [`WireError::Encode`] if the value cannot be encoded (serde only).
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError>;

    /// Decodes a value from exactly `bytes`.
    ///
    /// # Errors
    /// [`WireError`] if the bytes are not a valid encoding.
    fn decode(bytes: &[u8]) -> Result<Self, WireError>;
}

/// A value could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A Pod value got the wrong number of bytes.
    #[error("expected {expected} bytes, got {got}")]
    Size {
        /// Bytes the type has.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Encoding failed (serde).
    #[error("encoding failed: {0}")]
    Encode(String),
    /// Decoding failed (serde).
    #[error("decoding failed: {0}")]
    Decode(String),
}

impl<T: bytemuck::Pod> Wire for T {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.extend_from_slice(bytemuck::bytes_of(self));
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != std::mem::size_of::<T>() {
            return Err(WireError::Size { expected: std::mem::size_of::<T>(), got: bytes.len() });
        }
        Ok(bytemuck::pod_read_unaligned(bytes))
    }
}

/// Any serde value as a [`Wire`] value (postcard encoding): `Serde(String::from("x"))`.
///
/// # Examples
/// ```
/// # #[cfg(feature = "serde")] {
/// use shmkit::process::{Serde, Wire};
/// let mut buf = Vec::new();
/// Serde(vec!["a".to_string()]).encode(&mut buf).unwrap();
/// assert_eq!(Serde::<Vec<String>>::decode(&buf).unwrap().0, ["a"]);
/// # }
/// ```
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
impl<T> Serde<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

#[cfg(feature = "serde")]
impl<T: fmt::Debug> fmt::Debug for Serde<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(feature = "serde")]
impl<T> std::ops::Deref for Serde<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Wire for Serde<T> {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        // Into a buffer of its own: on failure `out` is left as it was.
        let v = postcard::to_allocvec(&self.0).map_err(|e| WireError::Encode(e.to_string()))?;
        out.extend_from_slice(&v);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(WireError::Decode("trailing bytes".into()));
        }
        Ok(Serde(v))
    }
}

/// A function of this binary, as an offset from a fixed function of shmkit: the same in
/// every process running the same executable, whatever address it was loaded at (ASLR),
/// so it survives both `fork` and the re-exec of the spawn start method.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FnRef(pub(crate) u64);

impl fmt::Debug for FnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FnRef({:#x})", self.0)
    }
}

#[inline(never)]
fn anchor() {}

/// The load address of the object (executable or shared library) holding `addr`.
fn object_base(addr: usize) -> Option<usize> {
    // SAFETY: `info` is plain data that dladdr fills in; dladdr only reads the loader's
    // tables for the address.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above; any address is accepted (0 is returned for unknown ones).
    if unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) } == 0 {
        return None;
    }
    Some(info.dli_fbase as usize)
}

/// The error for a function the spawn start method cannot name.
pub(crate) fn not_local() -> WireError {
    WireError::Encode("the function is not in the executable (a dlopen'ed library?): the spawn start method cannot name it; use fork".into())
}

impl FnRef {
    pub(crate) fn from_addr(addr: usize) -> FnRef {
        FnRef((addr as u64).wrapping_sub(anchor as fn() as usize as u64))
    }

    pub(crate) fn addr(self) -> usize {
        (anchor as fn() as usize as u64).wrapping_add(self.0) as usize
    }
}

/// Runs an encoded call: `f` is the function, `input` its encoded arguments; the encoded
/// result is appended to `out`.
pub(crate) type Trampoline = fn(f: usize, input: &[u8], out: &mut Vec<u8>) -> Result<(), WireError>;

/// A function and the trampoline that decodes its arguments and encodes its result, both
/// as [`FnRef`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) tramp: FnRef,
    pub(crate) f: FnRef,
}

impl Call {
    /// `fn(A) -> R`.
    pub(crate) fn unary<A: Wire, R: Wire>(f: fn(A) -> R) -> Call {
        Call {
            tramp: FnRef::from_addr(call_unary::<A, R> as Trampoline as usize),
            f: FnRef::from_addr(f as usize),
        }
    }

    /// `fn(A, B) -> R`, arguments encoded by [`encode_pair`].
    pub(crate) fn binary<A: Wire, B: Wire, R: Wire>(f: fn(A, B) -> R) -> Call {
        Call {
            tramp: FnRef::from_addr(call_binary::<A, B, R> as Trampoline as usize),
            f: FnRef::from_addr(f as usize),
        }
    }

    /// Whether both functions are in the object that holds shmkit (normally the executable):
    /// only then do their offsets name the same functions in a re-executed copy (spawn). A
    /// function of a library loaded at another relative address (`dlopen`) is not.
    pub(crate) fn is_local(self) -> bool {
        let base = object_base(anchor as fn() as usize);
        base.is_some() && object_base(self.tramp.addr()) == base && object_base(self.f.addr()) == base
    }

    /// Runs the call.
    ///
    /// # Safety
    /// Both references must come from [`Call::unary`]/[`Call::binary`] in a process running
    /// this same executable (they are not checked: a wrong pair calls arbitrary code).
    pub(crate) unsafe fn run(self, input: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        // SAFETY: the caller guarantees `tramp` is the address of a `Trampoline` of this
        // executable; function pointers and usize have the same size.
        let tramp: Trampoline = unsafe { std::mem::transmute::<usize, Trampoline>(self.tramp.addr()) };
        tramp(self.f.addr(), input, out)
    }
}

fn call_unary<A: Wire, R: Wire>(f: usize, input: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    // SAFETY: `Call::unary::<A, R>` paired this trampoline with a `fn(A) -> R`.
    let f = unsafe { std::mem::transmute::<usize, fn(A) -> R>(f) };
    let a = A::decode(input)?;
    f(a).encode(out)
}

fn call_binary<A: Wire, B: Wire, R: Wire>(
    f: usize,
    input: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    // SAFETY: `Call::binary::<A, B, R>` paired this trampoline with a `fn(A, B) -> R`.
    let f = unsafe { std::mem::transmute::<usize, fn(A, B) -> R>(f) };
    let (a, b) = decode_pair(input)?;
    f(A::decode(a)?, B::decode(b)?).encode(out)
}

/// Encodes two arguments: the first one's length (u32 LE), then both.
pub(crate) fn encode_pair<A: Wire, B: Wire>(a: &A, b: &B, out: &mut Vec<u8>) -> Result<(), WireError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    a.encode(out)?;
    let len =
        u32::try_from(out.len() - at - 4).map_err(|_| WireError::Encode("argument above 4 GiB".into()))?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    b.encode(out)
}

fn decode_pair(input: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    let bad = || WireError::Decode("argument pair".into());
    let len = u32::from_le_bytes(input.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
    let rest = &input[4..];
    if len > rest.len() {
        return Err(bad());
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: u64) -> u64 {
        x * x
    }

    fn add(a: u32, b: u64) -> u64 {
        a as u64 + b
    }

    #[test]
    fn calls_round_trip() {
        let mut out = Vec::new();
        let c = Call::unary(square);
        // SAFETY: made by Call::unary in this process.
        unsafe { c.run(&9u64.to_ne_bytes(), &mut out) }.unwrap();
        assert_eq!(u64::decode(&out).unwrap(), 81);
        let mut input = Vec::new();
        encode_pair(&2u32, &40u64, &mut input).unwrap();
        out.clear();
        // SAFETY: made by Call::binary in this process.
        unsafe { Call::binary(add).run(&input, &mut out) }.unwrap();
        assert_eq!(u64::decode(&out).unwrap(), 42);
        // SAFETY: as above.
        assert!(unsafe { c.run(&[1, 2, 3], &mut out) }.is_err());
        assert!(decode_pair(&[9, 0, 0, 0, 1]).is_err());
        assert!(c.is_local(), "a function of this binary");
        let libc_fn = Call { tramp: c.tramp, f: FnRef::from_addr(libc::getpid as *const () as usize) };
        assert!(!libc_fn.is_local(), "a function of libc.so");
    }
}
