//! Segments across real processes: forked children, exec'd processes that open by name or
//! by fd, hostile files in /dev/shm, and a creator killed with SIGKILL.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{role, role_command, run_with_timeout, shm_path, shmkit, unique_name, watchdog};
use shmkit::shm::header::{HEADER_SIZE, LAYOUT_VERSION, MAGIC};
use shmkit::shm::{
    Backing, Header, Kind, Layout, NameError, Offset, Segment, ShmCreateError, ShmOpenError, SliceOffset,
};
use shmkit::util::child::fork;

/// Two u64 slots at the start of the payload, used by most tests here.
fn two_slots() -> (Layout, Offset<AtomicU64>, Offset<AtomicU64>) {
    let mut l = Layout::new();
    let a = l.push::<AtomicU64>();
    let b = l.push::<AtomicU64>();
    (l, a, b)
}

/// Entry point of the exec'd role processes (does nothing as a normal test).
#[test]
#[ignore = "helper: run by other tests as a separate process"]
fn role_entry() {
    let Some((role, args)) = role() else { return };
    let (_, a, b) = two_slots();
    let code = match role.as_str() {
        // Open by name, check the parent's value, answer in the second slot.
        "open-write" => match Segment::open(&args[0], Kind::RAW) {
            Ok(seg) if seg.get(a).unwrap().load(Ordering::Acquire) == 7 => {
                seg.get(b).unwrap().store(99, Ordering::Release);
                0
            }
            Ok(_) => 3,
            Err(e) => {
                eprintln!("open failed: {e}");
                4
            }
        },
        // Open an inherited memfd by number.
        "fd-write" => {
            let fd: i32 = args[0].parse().unwrap();
            // SAFETY: the parent passed this fd to us without CLOEXEC; nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            match Segment::open_fd(fd, Kind::RAW) {
                Ok(seg) if seg.backing() == Backing::Memfd => {
                    seg.get(b)
                        .unwrap()
                        .store(seg.get(a).unwrap().load(Ordering::Acquire) + 1, Ordering::Release);
                    0
                }
                Ok(_) => 5,
                Err(e) => {
                    eprintln!("open_fd failed: {e}");
                    4
                }
            }
        }
        // Create a segment, say so, then wait to be killed.
        "create-and-hang" => {
            let persist = args.get(1).is_some_and(|a| a == "persist");
            let seg = Segment::builder(Kind::RAW, 64).persist(persist).named(&args[0]).unwrap().publish();
            println!("ready");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(60));
            drop(seg);
            6
        }
        other => panic!("unknown role {other}"),
    };
    std::process::exit(code);
}

#[test]
fn anonymous_fork_child_writes_parent_sees() {
    let _w = watchdog(30);
    let (layout, a, _) = two_slots();
    let seg = Segment::anonymous(Kind::RAW, layout.size()).unwrap();
    assert_eq!(seg.backing(), Backing::Anonymous);
    let slot = seg.get(a).unwrap();
    // SAFETY: the child only stores to an atomic and exits.
    let mut child = unsafe {
        fork(|| {
            slot.store(42, Ordering::Release);
            0
        })
    }
    .unwrap();
    let st = child.wait_timeout(Duration::from_secs(20)).unwrap().expect("child finished");
    assert!(st.success());
    assert_eq!(slot.load(Ordering::Acquire), 42);
}

#[test]
fn named_fork_child_writes_parent_sees() {
    let _w = watchdog(30);
    let name = unique_name("fork");
    let (layout, a, _) = two_slots();
    let seg = Segment::create(&name, Kind::RAW, layout.size()).unwrap();
    let slot = seg.get(a).unwrap();
    // SAFETY: the child only stores to an atomic and exits.
    let mut child = unsafe { fork(|| i32::from(slot.fetch_add(5, Ordering::AcqRel) != 0)) }.unwrap();
    assert!(child.wait_timeout(Duration::from_secs(20)).unwrap().unwrap().success());
    assert_eq!(slot.load(Ordering::Acquire), 5);
}

#[test]
fn unrelated_process_opens_by_name() {
    let _w = watchdog(60);
    let name = unique_name("byname");
    let (layout, a, b) = two_slots();
    let seg = Segment::create(&name, Kind::RAW, layout.size()).unwrap();
    seg.get(a).unwrap().store(7, Ordering::Release);
    let st = run_with_timeout(role_command("role_entry", "open-write", std::slice::from_ref(&name)), 50);
    assert_eq!(st.code(), Some(0), "role process failed: {st:?}");
    assert_eq!(seg.get(b).unwrap().load(Ordering::Acquire), 99);

    // The CLI is another unrelated process: it reads the header by name.
    let out = shmkit(&["inspect", &name]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("kind:           raw"), "{text}");
    assert!(text.contains(&format!("pid {} (alive)", std::process::id())), "{text}");
    assert!(text.contains("Named"), "{text}");
}

#[test]
fn memfd_passed_by_fd_to_exec_child() {
    let _w = watchdog(60);
    let (layout, a, b) = two_slots();
    let seg = Segment::memfd(Kind::RAW, layout.size()).unwrap();
    assert_eq!(seg.backing(), Backing::Memfd);
    seg.get(a).unwrap().store(41, Ordering::Release);
    // dup() gives a descriptor without FD_CLOEXEC, so the exec'd child inherits it.
    // SAFETY: dup of a valid fd we own.
    let raw = unsafe { libc::dup(seg.fd().unwrap().as_raw_fd()) };
    assert!(raw >= 0);
    // SAFETY: fresh fd from dup.
    let inherit = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = run_with_timeout(role_command("role_entry", "fd-write", &[raw.to_string()]), 50);
    drop(inherit);
    assert_eq!(st.code(), Some(0), "role process failed: {st:?}");
    assert_eq!(seg.get(b).unwrap().load(Ordering::Acquire), 42);
}

#[test]
fn memfd_is_sealed_against_shrinking() {
    let seg = Segment::memfd(Kind::RAW, 4096).unwrap();
    // SAFETY: ftruncate on a valid fd; the seal must refuse it.
    let r = unsafe { libc::ftruncate(seg.fd().unwrap().as_raw_fd(), 64) };
    assert_eq!(r, -1);
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
}

#[test]
fn mode_is_0600_by_default_and_settable() {
    let name = unique_name("mode");
    let _seg = Segment::create(&name, Kind::RAW, 16).unwrap();
    let mode = std::fs::metadata(shm_path(&name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let name2 = unique_name("mode");
    let _seg2 = Segment::builder(Kind::RAW, 16).mode(0o640).named(&name2).unwrap().publish();
    let mode = std::fs::metadata(shm_path(&name2)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn double_create_fails_with_already_exists_and_keeps_the_first() {
    let name = unique_name("twice");
    let (layout, a, _) = two_slots();
    let seg = Segment::create(&name, Kind::RAW, layout.size()).unwrap();
    seg.get(a).unwrap().store(3, Ordering::Relaxed);
    match Segment::create(&name, Kind::RAW, layout.size()) {
        Err(ShmCreateError::AlreadyExists(n)) => assert_eq!(n, name),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let again = Segment::open(&name, Kind::RAW).unwrap();
    assert_eq!(again.get(a).unwrap().load(Ordering::Relaxed), 3);
}

#[test]
fn no_dev_shm_entry_left_after_drop() {
    let name = unique_name("drop");
    let seg = Segment::create(&name, Kind::RAW, 16).unwrap();
    let opener = Segment::open(&name, Kind::RAW).unwrap();
    assert!(std::path::Path::new(&shm_path(&name)).exists());
    drop(opener); // an opener never unlinks
    assert!(std::path::Path::new(&shm_path(&name)).exists());
    drop(seg);
    assert!(!std::path::Path::new(&shm_path(&name)).exists());
    assert!(matches!(Segment::open(&name, Kind::RAW), Err(ShmOpenError::DoesNotExist(_))));
}

#[test]
fn unpublished_segment_is_removed_on_drop_even_if_persistent() {
    let name = unique_name("unpub");
    let new = Segment::builder(Kind::RAW, 16).persist(true).named(&name).unwrap();
    assert!(matches!(Segment::open_timeout(&name, Kind::RAW, Duration::ZERO), Err(ShmOpenError::NotReady)));
    drop(new);
    assert!(!std::path::Path::new(&shm_path(&name)).exists());
}

#[test]
fn persistent_segment_survives_drop_until_removed() {
    let name = unique_name("persist");
    let seg = Segment::builder(Kind::RAW, 16).persist(true).named(&name).unwrap().publish();
    assert!(seg.header().unwrap().is_persistent());
    drop(seg);
    let again = Segment::open(&name, Kind::RAW).unwrap();
    again.unlink().unwrap();
    assert!(matches!(Segment::remove(&name), Err(ShmOpenError::DoesNotExist(_))));
}

#[test]
fn forked_child_dropping_the_creator_handle_does_not_unlink() {
    let _w = watchdog(30);
    let name = unique_name("childdrop");
    let seg = Segment::create(&name, Kind::RAW, 16).unwrap();
    let opener = Segment::open(&name, Kind::RAW).unwrap();
    // The closure owns the creator handle; ManuallyDrop keeps the parent's copy of the
    // closure (dropped uncalled when fork returns) from dropping it here.
    let seg = std::mem::ManuallyDrop::new(seg);
    // SAFETY: the child drops a segment (getpid, munmap, close) and exits.
    let mut child = unsafe {
        fork(move || {
            drop(std::mem::ManuallyDrop::into_inner(seg));
            0
        })
    }
    .unwrap();
    assert!(child.wait_timeout(Duration::from_secs(20)).unwrap().unwrap().success());
    assert!(std::path::Path::new(&shm_path(&name)).exists(), "a child's drop removed the parent's segment");
    opener.unlink().unwrap();
}

#[test]
fn open_waits_for_the_creator_to_publish() {
    let _w = watchdog(30);
    let name = unique_name("publish");
    let (layout, a, _) = two_slots();
    let new = Segment::builder(Kind::RAW, layout.size()).named(&name).unwrap();
    new.get(a).unwrap().store(11, Ordering::Relaxed);
    assert!(matches!(
        Segment::open_timeout(&name, Kind::RAW, Duration::from_millis(5)),
        Err(ShmOpenError::NotReady)
    ));
    let opened = std::thread::scope(|s| {
        let h = s.spawn(|| Segment::open_timeout(&name, Kind::RAW, Duration::from_secs(20)));
        std::thread::sleep(Duration::from_millis(20));
        let seg = new.publish();
        let opened = h.join().unwrap().expect("open after publish");
        drop(seg);
        opened
    });
    // Everything written before publish is visible to the opener.
    assert_eq!(opened.get(a).unwrap().load(Ordering::Relaxed), 11);
}

#[test]
fn invalid_names_are_typed_errors() {
    let long = "x".repeat(256);
    let cases: [(&str, NameError); 5] = [
        ("", NameError::Empty),
        ("/", NameError::Empty),
        ("a/b", NameError::ContainsSlash),
        ("a\0b", NameError::ContainsNul),
        ("..", NameError::Reserved("..".into())),
    ];
    for (name, want) in cases {
        match Segment::create(name, Kind::RAW, 8) {
            Err(ShmCreateError::InvalidName(e)) => assert_eq!(e, want, "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        }
        match Segment::open(name, Kind::RAW) {
            Err(ShmOpenError::InvalidName(e)) => assert_eq!(e, want, "{name:?}"),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    assert!(matches!(
        Segment::create(&long, Kind::RAW, 8),
        Err(ShmCreateError::InvalidName(NameError::TooLong { len: 256, max: 255 }))
    ));
    assert!(matches!(Segment::create(&long[..255], Kind::RAW, 8), Ok(_) | Err(ShmCreateError::Io(_))));
}

#[test]
fn oversized_payload_is_invalid_size() {
    assert!(matches!(
        Segment::anonymous(Kind::RAW, usize::MAX),
        Err(ShmCreateError::InvalidSize { requested: usize::MAX })
    ));
    let mut l = Layout::new();
    l.push_slice::<AtomicU64>(usize::MAX / 4);
    assert_eq!(l.size(), usize::MAX);
    assert!(matches!(Segment::anonymous(Kind::RAW, l.size()), Err(ShmCreateError::InvalidSize { .. })));
}

#[test]
fn offsets_are_bounds_and_alignment_checked() {
    let seg = Segment::anonymous(Kind::RAW, 64).unwrap();
    assert!(seg.get(Offset::<AtomicU64>::new(56)).is_ok());
    assert!(seg.get(Offset::<AtomicU64>::new(57)).is_err(), "misaligned");
    assert!(seg.get(Offset::<AtomicU64>::new(64)).is_err(), "past the end");
    assert!(seg.get(Offset::<AtomicU64>::new(usize::MAX)).is_err(), "overflow");
    assert!(seg.get_slice(SliceOffset::<AtomicU64>::new(0, 8)).is_ok());
    assert!(seg.get_slice(SliceOffset::<AtomicU64>::new(0, 9)).is_err());
    assert!(seg.get_slice(SliceOffset::<AtomicU64>::new(0, usize::MAX)).is_err());
}

/// Writes `bytes` as a file in /dev/shm (mode 0600), as a hostile or broken peer might.
fn plant(name: &str, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(shm_path(name)).unwrap();
    f.write_all(bytes).unwrap();
}

fn valid_file(kind: Kind, payload: usize) -> Vec<u8> {
    let total = 128 + payload;
    let mut bytes = vec![0u8; total];
    bytes[..HEADER_SIZE].copy_from_slice(&Header::new(kind, Backing::Named, total as u64, false).encode());
    bytes
}

fn open_planted(bytes: &[u8]) -> Result<Segment, ShmOpenError> {
    let name = unique_name("planted");
    plant(&name, bytes);
    let r = Segment::open_timeout(&name, Kind::RAW, Duration::from_millis(5));
    Segment::remove(&name).unwrap();
    r
}

#[test]
fn hostile_files_give_typed_errors() {
    let good = valid_file(Kind::RAW, 64);
    assert!(open_planted(&good).is_ok(), "the control case must open");

    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    assert!(matches!(open_planted(&bad_magic), Err(ShmOpenError::NotShmkit)));

    let mut v2 = good.clone();
    v2[8..12].copy_from_slice(&(LAYOUT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        open_planted(&v2),
        Err(ShmOpenError::VersionMismatch { found, expected }) if found == LAYOUT_VERSION + 1 && expected == LAYOUT_VERSION
    ));

    let mut unpublished = good.clone();
    unpublished[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(open_planted(&unpublished), Err(ShmOpenError::NotReady)));

    let wrong_kind = valid_file(Kind::PING_PONG, 64);
    assert!(matches!(
        open_planted(&wrong_kind),
        Err(ShmOpenError::WrongKind { found, expected }) if found == Kind::PING_PONG && expected == Kind::RAW
    ));

    let mut corrupted = good.clone();
    corrupted[20] ^= 1; // inside kind_tag: the checksum catches it
    assert!(matches!(open_planted(&corrupted), Err(ShmOpenError::Corrupted(_))));

    // Shorter than the header, and empty.
    assert!(matches!(open_planted(&good[..40]), Err(ShmOpenError::TooSmall { size: 40 })));
    assert!(matches!(open_planted(&[]), Err(ShmOpenError::TooSmall { size: 0 })));

    // A whole header but a file shorter than it claims: an error, not a SIGBUS later.
    assert!(matches!(
        open_planted(&good[..150]),
        Err(ShmOpenError::SizeMismatch { header: 192, actual: 150 })
    ));
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4096]);
    assert!(matches!(open_planted(&longer), Err(ShmOpenError::SizeMismatch { .. })));

    // Not ours at all.
    assert!(matches!(open_planted(&[0x41; 4096]), Err(ShmOpenError::NotShmkit)));
    assert_eq!(u64::from_le_bytes(good[..8].try_into().unwrap()), MAGIC);
}

#[test]
fn segment_truncated_behind_our_back_fails_to_open() {
    let name = unique_name("trunc");
    let seg = Segment::create(&name, Kind::RAW, 8192).unwrap();
    std::fs::OpenOptions::new().write(true).open(shm_path(&name)).unwrap().set_len(4096).unwrap();
    assert!(matches!(
        Segment::open(&name, Kind::RAW),
        Err(ShmOpenError::SizeMismatch { header, actual: 4096 }) if header == 8192 + 128
    ));
    assert!(matches!(shmkit::shm::read_header(&name), Err(ShmOpenError::SizeMismatch { .. })));
    drop(seg); // unmapping a partly truncated mapping without touching it is fine
}

#[test]
fn open_missing_is_does_not_exist() {
    let name = unique_name("missing");
    assert!(matches!(Segment::open(&name, Kind::RAW), Err(ShmOpenError::DoesNotExist(n)) if n == name));
}

#[test]
fn killed_creator_leaves_an_entry_that_clean_removes() {
    let _w = watchdog(90);
    let name = unique_name("killed");
    let pname = unique_name("killedpersist");
    let mut pids = Vec::new();
    for (n, extra) in [(&name, "-"), (&pname, "persist")] {
        let mut child = role_command("role_entry", "create-and-hang", &[n.clone(), extra.to_owned()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // libtest may print its own lines first; the role prints "ready" once created. One
        // reader for the whole stream: a second BufReader would lose what the first buffered.
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "role exited before creating");
        }
        assert!(std::path::Path::new(&shm_path(n)).exists());
        child.kill().unwrap(); // SIGKILL: no destructor runs
        child.wait().unwrap();
        pids.push(child.id());
    }
    assert!(std::path::Path::new(&shm_path(&name)).exists(), "SIGKILL cannot unlink");

    let ls = shmkit(&["ls"]);
    let text = String::from_utf8_lossy(&ls.stdout);
    let row =
        text.lines().find(|l| l.starts_with(&name)).unwrap_or_else(|| panic!("{name} not listed:\n{text}"));
    assert!(row.contains("dead") && row.contains(&pids[0].to_string()), "{row}");

    let prefix = format!("shmkit-test-{}-killed", std::process::id());
    let dry = shmkit(&["clean", "--dry-run", "--prefix", &prefix]);
    let dry_text = String::from_utf8_lossy(&dry.stdout);
    assert!(dry_text.contains(&format!("would remove {name}")), "{dry_text}");
    assert!(!dry_text.contains(&pname), "persistent segment offered without --all: {dry_text}");
    assert!(std::path::Path::new(&shm_path(&name)).exists(), "dry run removed something");

    let out = shmkit(&["clean", "--prefix", &prefix]);
    assert!(out.status.success());
    assert!(!std::path::Path::new(&shm_path(&name)).exists(), "clean left the dead creator's segment");
    assert!(std::path::Path::new(&shm_path(&pname)).exists(), "clean removed a persistent segment");

    let out = shmkit(&["clean", "--all", "--prefix", &prefix]);
    assert!(out.status.success());
    assert!(!std::path::Path::new(&shm_path(&pname)).exists());
}

#[test]
fn clean_keeps_segments_of_live_creators() {
    let name = unique_name("live");
    let _seg = Segment::create(&name, Kind::RAW, 8).unwrap();
    let out = shmkit(&["clean", "--prefix", &name]);
    assert!(out.status.success());
    assert!(std::path::Path::new(&shm_path(&name)).exists());
    let listed = shmkit::shm::list().unwrap();
    let me = listed.iter().find(|s| s.name == name).expect("listed");
    assert_eq!(me.creator, shmkit::util::proc::Liveness::Alive);
}

#[test]
fn open_with_an_endless_wait_does_not_overflow() {
    let name = unique_name("maxwait");
    let _seg = Segment::create(&name, Kind::RAW, 8).unwrap();
    assert!(Segment::open_timeout(&name, Kind::RAW, Duration::MAX).is_ok());
    let fd = _seg.fd().unwrap().try_clone_to_owned().unwrap();
    assert!(Segment::open_fd_timeout(fd, Kind::RAW, Duration::MAX).is_ok());
}

/// Regression: dropping a creator whose name was removed and re-created by someone else must
/// not delete the newcomer.
#[test]
fn drop_does_not_unlink_a_segment_recreated_under_the_same_name() {
    let name = unique_name("recreated");
    let first = Segment::create(&name, Kind::RAW, 8).unwrap();
    Segment::remove(&name).unwrap();
    let second = Segment::create(&name, Kind::RAW, 16).unwrap();
    drop(first);
    assert!(Segment::open(&name, Kind::RAW).is_ok(), "the first creator's drop removed the second segment");
    drop(second);
    assert!(!std::path::Path::new(&shm_path(&name)).exists());
}

#[test]
fn read_header_refuses_fifos_and_symlinks() {
    let _w = watchdog(30);
    let fifo = unique_name("fifo");
    let path = std::ffi::CString::new(shm_path(&fifo)).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    assert!(shmkit::shm::read_header(&fifo).is_err(), "must not block on a FIFO");
    std::fs::remove_file(shm_path(&fifo)).unwrap();

    let target = unique_name("target");
    let _seg = Segment::create(&target, Kind::RAW, 8).unwrap();
    let link = unique_name("link");
    std::os::unix::fs::symlink(shm_path(&target), shm_path(&link)).unwrap();
    assert!(shmkit::shm::read_header(&link).is_err(), "must not follow a symlink");
    std::fs::remove_file(shm_path(&link)).unwrap();
}
