//! A dict and a list held by a manager server process, changed by another process — the
//! `Manager` seed program of Python's multiprocessing docs:
//!
//! ```python
//! def f(d, l):
//!     d[1] = '1'
//!     d['2'] = 2
//!     d[0.25] = None
//!     l.reverse()
//!
//! with Manager() as manager:
//!     d = manager.dict()
//!     l = manager.list(range(10))
//!     p = Process(target=f, args=(d, l)); p.start(); p.join()
//!     print(d)           # {1: '1', '2': 2, 0.25: None}
//!     print(l)           # [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
//! ```
//!
//! `Obj` is a Python-like dynamic value, for a dict mixing key and value types; its
//! `Display` is Python's `repr`. The list holds plain `i64`s.
//!
//! Run: `cargo run --example manager_dict`

use shmkit::manager::{DictProxy, ListProxy, Manager, ManagerError, Obj};
use shmkit::process::Process;

fn f(d: &DictProxy<Obj, Obj>, l: &ListProxy<i64>) -> Result<(), ManagerError> {
    d.insert(1, "1".into())?;
    d.insert("2", 2.into())?;
    d.insert(0.25, Obj::None)?;
    l.reverse()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    shmkit::process::init();
    // The server process; dropping the handle (at the end of main) shuts it down.
    let manager = Manager::start()?;
    let d = manager.dict::<Obj, Obj>()?;
    let l = manager.list_from(0..10i64)?;

    // The child gets copies of the proxies; its calls go through connections of its own.
    let (d2, l2) = (d.clone(), l.clone());
    let mut p = Process::new(move || f(&d2, &l2).expect("f failed in the child"));
    p.start()?;
    let code = p.join()?;
    if code != 0 {
        return Err(format!("the child exited with {code}: {:?}", p.panic_message()).into());
    }

    // print(d): the entries in insertion order, each side in Python's repr.
    let entries: Vec<String> = d.items()?.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("{{{}}}", entries.join(", "));
    println!("{:?}", l.snapshot()?);
    manager.shutdown()?;
    Ok(())
}
