//! [`Obj`]: a dynamically typed value, for dicts and lists that mix types the way Python's do.

use std::fmt;

use std::cell::Cell;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// A value of one of Python's basic types, for a [`DictProxy<Obj, Obj>`](super::DictProxy)
/// or [`ListProxy<Obj>`](super::ListProxy) holding mixed keys and values (`d[1] = "1"`,
/// `d["2"] = 2`, `d[0.25] = None`).
///
/// Keys are compared by their encoded bytes: `Obj::Int(1)` and `Obj::Float(1.0)` are two
/// different keys (in Python they are one), and so are `Obj::Str("a")` and a plain `String`
/// key `"a"` written through a `DictProxy<String, _>`.
///
/// # Examples
/// ```
/// use shmkit::manager::Obj;
/// let k = Obj::from(0.25);
/// assert_eq!(k, Obj::Float(0.25));
/// assert_eq!(Obj::from("1").to_string(), "'1'");
/// assert_eq!(Obj::from(vec![Obj::from(1), Obj::None]).to_string(), "[1, None]");
/// assert_eq!(Obj::from(2).as_int(), Some(2));
/// assert_eq!(Obj::from(1e16).to_string(), "1e+16");
/// assert_eq!(Obj::from(0.00001).to_string(), "1e-05");
/// assert_eq!(Obj::from(2.0).to_string(), "2.0");
/// assert_eq!(Obj::from("it's").to_string(), "\"it's\"");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Default)]
pub enum Obj {
    /// Python's `None`.
    #[default]
    None,
    /// `bool`.
    Bool(bool),
    /// `int` (64-bit here).
    Int(i64),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<Obj>),
}

/// `Obj`'s wire form: the same variants in the same order, decoded by serde's derive.
#[derive(Deserialize)]
#[serde(rename = "Obj")]
enum ObjRepr {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Obj>),
}

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Decodes like a derived `Deserialize`, refusing nesting deeper than [`Obj::MAX_DEPTH`].
impl<'de> Deserialize<'de> for Obj {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Obj, D::Error> {
        struct Level;
        impl Drop for Level {
            fn drop(&mut self) {
                DEPTH.with(|c| c.set(c.get() - 1));
            }
        }
        let depth = DEPTH.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        let _level = Level;
        if depth > Obj::MAX_DEPTH {
            return Err(D::Error::custom(format_args!("Obj nested deeper than {} levels", Obj::MAX_DEPTH)));
        }
        Ok(match ObjRepr::deserialize(d)? {
            ObjRepr::None => Obj::None,
            ObjRepr::Bool(b) => Obj::Bool(b),
            ObjRepr::Int(i) => Obj::Int(i),
            ObjRepr::Float(f) => Obj::Float(f),
            ObjRepr::Str(s) => Obj::Str(s),
            ObjRepr::Bytes(b) => Obj::Bytes(b),
            ObjRepr::List(l) => Obj::List(l),
        })
    }
}

impl Obj {
    /// The deepest nesting an `Obj` decodes, counting itself: bytes from another process
    /// could otherwise nest lists deep enough (2 bytes a level) to overflow the decoding
    /// thread's stack.
    pub const MAX_DEPTH: u32 = 128;

    /// The integer, if this is an `Int`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Obj::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The float, if this is a `Float`.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Obj::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        matches!(self, Obj::None)
    }
}

/// Python's `repr`: `None`, `True`, `1`, `0.25`, `'text'`, `b'\x00'`, `[1, 'a']`.
impl fmt::Display for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obj::None => f.write_str("None"),
            Obj::Bool(true) => f.write_str("True"),
            Obj::Bool(false) => f.write_str("False"),
            Obj::Int(i) => write!(f, "{i}"),
            Obj::Float(x) => float_repr(*x, f),
            Obj::Str(s) => {
                // Python quotes with ' unless the text has a ' and no ".
                let q = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
                write!(f, "{q}")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        c if c == q => write!(f, "\\{c}")?,
                        '\t' => f.write_str("\\t")?,
                        '\r' => f.write_str("\\r")?,
                        '\n' => f.write_str("\\n")?,
                        c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                write!(f, "{q}")
            }
            Obj::Bytes(b) => {
                f.write_str("b'")?;
                for &c in b {
                    if c.is_ascii_graphic() && c != b'\'' && c != b'\\' || c == b' ' {
                        write!(f, "{}", c as char)?;
                    } else {
                        write!(f, "\\x{c:02x}")?;
                    }
                }
                f.write_str("'")
            }
            Obj::List(items) => {
                f.write_str("[")?;
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{it}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Python's `repr(float)`: the shortest text that reads back the same, in exponent form
/// below 1e-4 and from 1e16 up (`1e-05`, `1e+16`), else with a `.0` when integral.
fn float_repr(x: f64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if x.is_nan() {
        return f.write_str("nan");
    }
    if x.is_infinite() {
        return f.write_str(if x > 0.0 { "inf" } else { "-inf" });
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let e = format!("{x:e}");
        let (mantissa, exp) = e.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("{:e} has an integer exponent");
        let sign = if exp < 0 { '-' } else { '+' };
        return write!(f, "{mantissa}e{sign}{:02}", exp.abs());
    }
    if x.fract() == 0.0 {
        write!(f, "{x:.1}")
    } else {
        write!(f, "{x}")
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Obj {
            fn from(v: $t) -> Obj {
                Obj::Int(v.into())
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Obj {
    fn from(v: bool) -> Obj {
        Obj::Bool(v)
    }
}

impl From<f64> for Obj {
    fn from(v: f64) -> Obj {
        Obj::Float(v)
    }
}

impl From<f32> for Obj {
    fn from(v: f32) -> Obj {
        Obj::Float(v.into())
    }
}

impl From<&str> for Obj {
    fn from(v: &str) -> Obj {
        Obj::Str(v.to_string())
    }
}

impl From<String> for Obj {
    fn from(v: String) -> Obj {
        Obj::Str(v)
    }
}

impl From<()> for Obj {
    fn from(_: ()) -> Obj {
        Obj::None
    }
}

impl From<&[u8]> for Obj {
    fn from(v: &[u8]) -> Obj {
        Obj::Bytes(v.to_vec())
    }
}

impl From<Vec<Obj>> for Obj {
    fn from(v: Vec<Obj>) -> Obj {
        Obj::List(v)
    }
}

impl<T: Into<Obj>> From<Option<T>> for Obj {
    fn from(v: Option<T>) -> Obj {
        v.map_or(Obj::None, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_deep_nesting() {
        let v = Obj::List(vec![Obj::None, Obj::Int(-3), Obj::from("x"), Obj::List(vec![Obj::Float(0.5)])]);
        let b = postcard::to_allocvec(&v).unwrap();
        assert_eq!(postcard::from_bytes::<Obj>(&b).unwrap(), v);
        // [List, len 1] × n, then None: n levels of lists.
        let nested = |n: usize| {
            let mut b = [6u8, 1].repeat(n);
            b.push(0);
            b
        };
        assert!(postcard::from_bytes::<Obj>(&nested(Obj::MAX_DEPTH as usize - 1)).is_ok());
        assert!(postcard::from_bytes::<Obj>(&nested(Obj::MAX_DEPTH as usize)).is_err());
        // Deep enough to overflow any stack if it recursed all the way; refused at 128.
        assert!(postcard::from_bytes::<Obj>(&nested(1_000_000)).is_err());
        // The depth count is back to zero after an error.
        assert_eq!(postcard::from_bytes::<Obj>(&b).unwrap(), v);
    }
}
