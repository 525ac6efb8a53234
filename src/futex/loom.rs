//! A model futex for loom: a table of sleeping threads behind a loom `Mutex`/`Condvar`.
//!
//! It really blocks, so a lost wake-up shows up in loom as a deadlock. Waits with a
//! deadline yield once and report a spurious wake-up instead (loom has no clock); callers
//! must re-check their condition either way, as they must with the real futex.

use std::time::Instant;

use loom::sync::{Condvar, Mutex};

use super::WaitOutcome;
use crate::primitive::atomic::{AtomicU32, Ordering::SeqCst};

struct Table {
    /// (word address, ticket) of each sleeping thread.
    sleeping: Mutex<(Vec<(usize, u64)>, u64)>,
    cv: Condvar,
}

loom::lazy_static! {
    static ref TABLE: Table = Table { sleeping: Mutex::new((Vec::new(), 0)), cv: Condvar::new() };
}

pub(super) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    if deadline.is_some() {
        if word.load(SeqCst) != expected {
            return WaitOutcome::Mismatch;
        }
        loom::thread::yield_now();
        return WaitOutcome::Woken;
    }
    let addr = word as *const AtomicU32 as usize;
    let mut guard = TABLE.sleeping.lock().unwrap();
    // The kernel compares the word under its bucket lock; the table lock plays that role.
    if word.load(SeqCst) != expected {
        return WaitOutcome::Mismatch;
    }
    guard.1 += 1;
    let ticket = guard.1;
    guard.0.push((addr, ticket));
    while guard.0.iter().any(|&(a, t)| a == addr && t == ticket) {
        guard = TABLE.cv.wait(guard).unwrap();
    }
    WaitOutcome::Woken
}

pub(super) fn wake(word: &AtomicU32, n: u32) -> usize {
    let addr = word as *const AtomicU32 as usize;
    let mut guard = TABLE.sleeping.lock().unwrap();
    let mut woken = 0usize;
    guard.0.retain(|&(a, _)| {
        if a == addr && woken < n as usize {
            woken += 1;
            false
        } else {
            true
        }
    });
    if woken > 0 {
        TABLE.cv.notify_all();
    }
    woken
}

pub(super) fn wait_any(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> WaitOutcome {
    if deadline.is_some() {
        if words.iter().any(|&(w, e)| w.load(SeqCst) != e) {
            return WaitOutcome::Mismatch;
        }
        loom::thread::yield_now();
        return WaitOutcome::Woken;
    }
    let mut guard = TABLE.sleeping.lock().unwrap();
    if words.iter().any(|&(w, e)| w.load(SeqCst) != e) {
        return WaitOutcome::Mismatch;
    }
    guard.1 += 1;
    let ticket = guard.1;
    let addrs: Vec<usize> = words.iter().map(|&(w, _)| w as *const AtomicU32 as usize).collect();
    for &a in &addrs {
        guard.0.push((a, ticket));
    }
    // Woken when a wake removed any one of our entries; then withdraw the rest.
    while guard.0.iter().filter(|&&(_, t)| t == ticket).count() == addrs.len() {
        guard = TABLE.cv.wait(guard).unwrap();
    }
    guard.0.retain(|&(_, t)| t != ticket);
    WaitOutcome::Woken
}
