//! `Array<T>` and `RawArray<T>` against a `Vec<T>` model (proptest), in one process: random
//! get / set / copy_from_slice / to_vec / lock-and-mutate sequences with indices in and out
//! of range, through three handles of one array (the creator, a clone, and a second
//! attachment with `open_at`), for `u16` and a 12-byte `Pod` struct.

use std::fmt::Debug;
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use proptest::prelude::*;
use shmkit::value::{Array, OutOfRange, RawArray};

/// 12 bytes, aligned to 4: three 4-byte atomic accesses per element.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
struct Rec12(u32, u16, u16, u32);

const _: () = assert!(std::mem::size_of::<Rec12>() == 12 && std::mem::align_of::<Rec12>() == 4);

impl Arbitrary for Rec12 {
    type Parameters = ();
    type Strategy = BoxedStrategy<Self>;
    fn arbitrary_with((): ()) -> Self::Strategy {
        any::<(u32, u16, u16, u32)>().prop_map(|(a, b, c, d)| Rec12(a, b, c, d)).boxed()
    }
}

#[derive(Clone, Debug)]
enum Op<T> {
    Get(usize),
    Set(usize, T),
    /// `copy_from_slice` with any length (raw: `set` of each index).
    CopyFrom(Vec<T>),
    /// `copy_from_slice` with the right length.
    Fill(T),
    ToVec,
    /// Through the guard (`lock`, or `lock_timeout(0)`): check all, then set one if in range.
    LockSet(usize, T),
    LockReverse,
}

fn index() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0usize..20, 1 => Just(usize::MAX)]
}

/// Operations, each on one of three handles.
fn ops<T: Arbitrary + Clone + Debug + 'static>() -> impl Strategy<Value = Vec<(usize, Op<T>)>> {
    let op = prop_oneof![
        3 => index().prop_map(Op::Get),
        3 => (index(), any::<T>()).prop_map(|(i, v)| Op::Set(i, v)),
        1 => prop::collection::vec(any::<T>(), 0..20).prop_map(Op::CopyFrom),
        1 => any::<T>().prop_map(Op::Fill),
        1 => Just(Op::ToVec),
        2 => (index(), any::<T>()).prop_map(|(i, v)| Op::LockSet(i, v)),
        1 => Just(Op::LockReverse),
    ];
    prop::collection::vec((0usize..3, op), 0..60)
}

/// What `set(i, _)` should answer for the model `m`, applying it there.
fn model_set<T: Copy>(m: &mut [T], i: usize, v: T) -> Result<(), OutOfRange> {
    let len = m.len();
    m.get_mut(i).map(|x| *x = v).ok_or(OutOfRange { index: i, len })
}

fn run_array<T: Pod + PartialEq + Debug>(
    mut m: Vec<T>,
    ops: Vec<(usize, Op<T>)>,
) -> Result<(), TestCaseError> {
    let a = Array::from_slice(&m).unwrap();
    let handles = [a.clone(), Array::<T>::open_at(a.segment().clone(), 0).unwrap(), a];
    let len = m.len();
    for (h, op) in ops {
        let a = &handles[h];
        match op {
            Op::Get(i) => prop_assert_eq!(a.get(i), m.get(i).copied()),
            Op::Set(i, v) => prop_assert_eq!(a.set(i, v), model_set(&mut m, i, v)),
            Op::CopyFrom(src) => {
                let want = if src.len() == len {
                    m.copy_from_slice(&src);
                    Ok(())
                } else {
                    Err(OutOfRange { index: src.len(), len })
                };
                prop_assert_eq!(a.copy_from_slice(&src), want);
            }
            Op::Fill(v) => {
                m.fill(v);
                prop_assert_eq!(a.copy_from_slice(&m), Ok(()));
            }
            Op::ToVec => prop_assert_eq!(a.to_vec(), m.clone()),
            Op::LockSet(i, v) => {
                let mut g = if h == 0 { a.lock().unwrap() } else { a.lock_timeout(Duration::ZERO).unwrap() };
                prop_assert_eq!(&*g, &m[..]);
                if let Some(x) = g.get_mut(i) {
                    *x = v;
                    m[i] = v;
                }
            }
            Op::LockReverse => {
                a.lock().unwrap().reverse();
                m.reverse();
            }
        }
        prop_assert_eq!((a.len(), a.is_empty()), (len, len == 0));
        prop_assert!(!a.get_lock().is_locked());
    }
    for h in &handles {
        prop_assert_eq!(h.to_vec(), m.clone());
    }
    Ok(())
}

fn run_raw_array<T: Pod + PartialEq + Debug>(
    mut m: Vec<T>,
    ops: Vec<(usize, Op<T>)>,
) -> Result<(), TestCaseError> {
    let r = RawArray::from_slice(&m).unwrap();
    let handles = [r.clone(), RawArray::<T>::open_at(r.segment().clone(), 0).unwrap(), r];
    let len = m.len();
    for (h, op) in ops {
        let r = &handles[h];
        match op {
            Op::Get(i) => prop_assert_eq!(r.get(i), m.get(i).copied()),
            Op::Set(i, v) | Op::LockSet(i, v) => prop_assert_eq!(r.set(i, v), model_set(&mut m, i, v)),
            Op::CopyFrom(src) => {
                for (i, v) in src.into_iter().enumerate() {
                    prop_assert_eq!(r.set(i, v), model_set(&mut m, i, v));
                }
            }
            Op::Fill(v) => {
                for i in 0..len {
                    prop_assert_eq!(r.set(i, v), model_set(&mut m, i, v));
                }
            }
            Op::ToVec => prop_assert_eq!(r.to_vec(), m.clone()),
            Op::LockReverse => {
                let mut all = r.to_vec();
                all.reverse();
                for (i, v) in all.into_iter().enumerate() {
                    prop_assert_eq!(r.set(i, v), Ok(()));
                }
                m.reverse();
            }
        }
        prop_assert_eq!((r.len(), r.is_empty()), (len, len == 0));
    }
    for h in &handles {
        prop_assert_eq!(h.to_vec(), m.clone());
    }
    Ok(())
}

proptest! {
    #[test]
    fn array_u16(init in prop::collection::vec(any::<u16>(), 0..16), ops in ops::<u16>()) {
        run_array(init, ops)?;
    }

    #[test]
    fn array_rec12(init in prop::collection::vec(any::<Rec12>(), 0..16), ops in ops::<Rec12>()) {
        run_array(init, ops)?;
    }

    #[test]
    fn raw_array_u16(init in prop::collection::vec(any::<u16>(), 0..16), ops in ops::<u16>()) {
        run_raw_array(init, ops)?;
    }

    #[test]
    fn raw_array_rec12(init in prop::collection::vec(any::<Rec12>(), 0..16), ops in ops::<Rec12>()) {
        run_raw_array(init, ops)?;
    }
}
