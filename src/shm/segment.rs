//! Segments: one mapping of shared memory that starts with a [`Header`].

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use super::error::{NameError, OffsetError, ShmCreateError, ShmOpenError};
use super::header::{Backing, Header, Kind, HEADER_SIZE, LAYOUT_VERSION, PAYLOAD_OFFSET, VERSION_OFFSET};
use super::offset::{Offset, Shareable, SliceOffset};
use crate::primitive::atomic::{AtomicU32, Ordering};

/// Longest name `shm_open` accepts (`NAME_MAX`), without the leading `/`.
pub const NAME_MAX: usize = 255;
/// How long [`Segment::open`] waits for a creator that is still initialising.
pub const DEFAULT_INIT_WAIT: Duration = Duration::from_millis(250);

/// Checks a segment name and returns it as `shm_open` wants it: `/name`, NUL-terminated.
///
/// # Errors
/// A [`NameError`] for empty names, names with `/` or NUL inside, `.`/`..`, or names over
/// [`NAME_MAX`] bytes.
///
/// # Examples
/// ```
/// use shmkit::shm::{shm_name, NameError};
/// assert_eq!(shm_name("jobs").unwrap().to_bytes(), b"/jobs");
/// assert_eq!(shm_name("/jobs").unwrap().to_bytes(), b"/jobs");
/// assert_eq!(shm_name("a/b"), Err(NameError::ContainsSlash));
/// ```
pub fn shm_name(name: &str) -> Result<CString, NameError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(NameError::Empty);
    }
    if bare.contains('/') {
        return Err(NameError::ContainsSlash);
    }
    if bare.contains('\0') {
        return Err(NameError::ContainsNul);
    }
    if bare.len() > NAME_MAX {
        return Err(NameError::TooLong { len: bare.len(), max: NAME_MAX });
    }
    if bare == "." || bare == ".." {
        return Err(NameError::Reserved(bare.to_owned()));
    }
    CString::new(format!("/{bare}")).map_err(|_| NameError::ContainsNul)
}

/// A `MAP_SHARED` mapping, unmapped on drop.
///
/// memmap2 would do for the fd-backed kinds, but its anonymous maps are `MAP_PRIVATE`
/// (copy-on-write across fork), which is exactly what a fork-inherited segment must not be;
/// one small type serves all three kinds.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize, fd: Option<BorrowedFd<'_>>) -> io::Result<Mapping> {
        // Every process that maps shared memory joins the asymmetric-fence scheme that
        // wait cells rely on (see `util::membarrier`).
        crate::util::membarrier::init();
        let (flags, raw_fd) = match fd {
            Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
            None => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping at an address the kernel picks; no existing memory is
        // affected. `fd` is open for the duration of the call.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, raw_fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Mapping {
    /// A `PROT_READ` shared mapping of `fd` (for inspection): any write through it faults, so
    /// a reader built on it cannot change a byte. It does not join the membarrier scheme: a
    /// reader never waits or notifies.
    fn read_only(len: usize, fd: BorrowedFd<'_>) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping at an address the kernel picks; no existing memory is
        // affected. `fd` is open for the duration of the call.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, fd.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly one mapping we own; every reference handed out
        // borrows the owning `Segment`, so none outlives this.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A mapped shared-memory segment: a validated [`Header`] followed by the payload.
///
/// - [`Segment::anonymous`]: shared with children forked afterwards.
/// - [`Segment::create`] / [`Segment::open`]: named, under `/dev/shm`, mode 0600 by default.
///   The creating process unlinks the name when its `Segment` drops (a forked child's copy
///   does not), unless built with [`SegmentBuilder::persist`].
/// - [`Segment::memfd`] / [`Segment::open_fd`]: a sealed memfd, shared by passing the fd.
///
/// Objects are placed at payload offsets from a [`Layout`](super::Layout) and reached with
/// [`Segment::get`], which checks bounds and alignment.
///
/// A peer with write access can still truncate a named segment's file, after which touching
/// the lost pages raises SIGBUS; memfd segments are sealed against that. Opening checks the
/// file's size against the header, so a file truncated *before* the open is an error.
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use shmkit::shm::{Kind, Layout, Segment};
///
/// let mut layout = Layout::new();
/// let hits = layout.push::<AtomicU64>();
/// let name = format!("shmkit-doc-{}", std::process::id());
/// let seg = Segment::create(&name, Kind::RAW, layout.size())?;
/// seg.get(hits)?.fetch_add(1, Ordering::Relaxed);
///
/// let other = Segment::open(&name, Kind::RAW)?; // as another process would
/// assert_eq!(other.get(hits)?.load(Ordering::Relaxed), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    map: Mapping,
    backing: Backing,
    fd: Option<OwnedFd>,
    /// `/name` for named segments.
    name: Option<CString>,
    /// The pid that unlinks the name on drop, if any (the creator, unless persistent).
    unlink_by: Option<u32>,
}

// SAFETY: the mapping is shared memory that every process may change at any time; Segment
// only hands out `&T` for `T: Shareable` (atomics only) and raw pointers, so sharing or
// moving it between threads adds nothing a peer process cannot already do.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

/// Options for a new segment; finish with [`anonymous`](Self::anonymous),
/// [`named`](Self::named) or [`memfd`](Self::memfd), then
/// [`publish`](NewSegment::publish).
///
/// # Examples
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use shmkit::shm::{Kind, Offset, Segment};
///
/// let seg = Segment::builder(Kind::RAW, 64).memfd()?;
/// // Initialise before anyone can open it...
/// seg.get(Offset::<AtomicU32>::new(0))?.store(5, Ordering::Relaxed);
/// let seg = seg.publish(); // ...then publish the header.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct SegmentBuilder {
    kind: Kind,
    payload_len: usize,
    mode: libc::mode_t,
    persist: bool,
}

/// A segment created but not yet published: openers wait for it (or get
/// [`ShmOpenError::NotReady`]). Initialise the payload through `Deref<Target = Segment>`, then
/// call [`publish`](Self::publish). Dropped unpublished, a named segment is unlinked.
#[derive(Debug)]
#[must_use = "a segment is invisible to openers until published"]
pub struct NewSegment {
    seg: Option<Segment>,
}

impl SegmentBuilder {
    /// File mode of a named segment (default 0600), set with `fchmod` so the umask does not
    /// change it.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = (mode & 0o777) as libc::mode_t;
        self
    }

    /// Keep a named segment after its creator's `Segment` drops (and after the creator dies:
    /// `shmkit clean` skips it unless `--all`). Remove it with [`Segment::unlink`].
    pub fn persist(mut self, persist: bool) -> Self {
        self.persist = persist;
        self
    }

    fn total_size(&self) -> Result<usize, ShmCreateError> {
        PAYLOAD_OFFSET
            .checked_add(self.payload_len)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(ShmCreateError::InvalidSize { requested: self.payload_len })
    }

    /// Writes every header field but `version`, which [`NewSegment::publish`] stores last.
    fn finish(
        &self,
        map: Mapping,
        backing: Backing,
        fd: Option<OwnedFd>,
        name: Option<CString>,
    ) -> NewSegment {
        let header = Header::new(self.kind, backing, map.len as u64, self.persist).encode();
        let base = map.ptr.as_ptr();
        // SAFETY: the mapping is at least PAYLOAD_OFFSET >= HEADER_SIZE bytes long and not
        // yet published, so no opener reads these bytes except `version`, which we skip
        // (it is still 0 from the fresh mapping and is only written atomically).
        unsafe {
            std::ptr::copy_nonoverlapping(header.as_ptr(), base, VERSION_OFFSET);
            std::ptr::copy_nonoverlapping(
                header.as_ptr().add(VERSION_OFFSET + 4),
                base.add(VERSION_OFFSET + 4),
                HEADER_SIZE - VERSION_OFFSET - 4,
            );
        }
        let unlink_by = (name.is_some() && !self.persist).then(std::process::id);
        NewSegment { seg: Some(Segment { map, backing, fd, name, unlink_by }) }
    }

    /// A `MAP_SHARED | MAP_ANONYMOUS` segment, shared with children forked after this call.
    ///
    /// # Errors
    /// [`ShmCreateError::InvalidSize`] or an OS error.
    pub fn anonymous(self) -> Result<NewSegment, ShmCreateError> {
        let total = self.total_size()?;
        let map = Mapping::new(total, None)?;
        Ok(self.finish(map, Backing::Anonymous, None, None))
    }

    /// A named segment: `shm_open(O_CREAT | O_EXCL)`, `fchmod`, `ftruncate`, `mmap`.
    ///
    /// # Errors
    /// [`ShmCreateError::AlreadyExists`], [`PermissionDenied`](ShmCreateError::PermissionDenied),
    /// [`InvalidName`](ShmCreateError::InvalidName), [`InvalidSize`](ShmCreateError::InvalidSize)
    /// or another OS error. On error nothing is left in `/dev/shm`.
    pub fn named(self, name: &str) -> Result<NewSegment, ShmCreateError> {
        let cname = shm_name(name)?;
        let total = self.total_size()?;
        // SAFETY: `cname` is a valid C string; shm_open returns a new fd or -1.
        let raw = unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                self.mode,
            )
        };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EEXIST) => ShmCreateError::AlreadyExists(name.to_owned()),
                Some(libc::EACCES | libc::EPERM) => ShmCreateError::PermissionDenied(name.to_owned()),
                Some(libc::ENAMETOOLONG) => {
                    ShmCreateError::InvalidName(NameError::TooLong { len: name.len(), max: NAME_MAX })
                }
                _ => ShmCreateError::Io(err),
            });
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let setup = || -> io::Result<Mapping> {
            // SAFETY: plain syscalls on an fd we own.
            if unsafe { libc::fchmod(fd.as_raw_fd(), self.mode) } != 0 {
                return Err(io::Error::last_os_error());
            }
            ftruncate(fd.as_fd(), total)?;
            Mapping::new(total, Some(fd.as_fd()))
        };
        match setup() {
            Ok(map) => Ok(self.finish(map, Backing::Named, Some(fd), Some(cname))),
            Err(e) => {
                // SAFETY: `cname` is valid; we created this name a moment ago.
                unsafe { libc::shm_unlink(cname.as_ptr()) };
                Err(ShmCreateError::Io(e))
            }
        }
    }

    /// A memfd segment, sealed against shrinking (so no peer can make it SIGBUS us) and
    /// against growing. Share it by passing [`Segment::fd`] to a child.
    ///
    /// # Errors
    /// [`ShmCreateError::InvalidSize`] or an OS error.
    pub fn memfd(self) -> Result<NewSegment, ShmCreateError> {
        let total = self.total_size()?;
        let label: &CStr = c"shmkit";
        // SAFETY: `label` is a valid C string; memfd_create returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        ftruncate(fd.as_fd(), total)?;
        // SAFETY: fcntl on an fd we own; the seals only restrict later size changes.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW) }
            != 0
        {
            return Err(io::Error::last_os_error().into());
        }
        let map = Mapping::new(total, Some(fd.as_fd()))?;
        Ok(self.finish(map, Backing::Memfd, Some(fd), None))
    }
}

fn ftruncate(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    // SAFETY: plain syscall on a borrowed, open fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn file_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: `st` is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size.max(0) as u64)
}

impl NewSegment {
    /// Stores the header's version (Release): from now on openers accept the segment and see
    /// everything written to it before this call.
    pub fn publish(mut self) -> Segment {
        let seg = self.seg.take().expect("NewSegment holds its segment until published");
        // SYNC(version): publishes the header and the initialised payload; pairs with the
        // Acquire load in `Segment::from_fd`.
        seg.version_word().store(LAYOUT_VERSION, Ordering::Release);
        seg
    }
}

impl std::ops::Deref for NewSegment {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        self.seg.as_ref().expect("NewSegment holds its segment until published")
    }
}

impl Drop for NewSegment {
    fn drop(&mut self) {
        if let Some(seg) = self.seg.take() {
            // Never published: half-initialised, so remove the name even if persistent.
            if seg.unlink_by.is_none() {
                seg.unlink_if_still_ours();
            }
        }
    }
}

impl Segment {
    /// Starts building a segment with `payload_len` bytes of payload holding `kind`.
    pub fn builder(kind: Kind, payload_len: usize) -> SegmentBuilder {
        SegmentBuilder { kind, payload_len, mode: 0o600, persist: false }
    }

    /// A published anonymous segment with a zeroed payload; see [`SegmentBuilder::anonymous`].
    ///
    /// # Errors
    /// As [`SegmentBuilder::anonymous`].
    pub fn anonymous(kind: Kind, payload_len: usize) -> Result<Segment, ShmCreateError> {
        Ok(Self::builder(kind, payload_len).anonymous()?.publish())
    }

    /// A published named segment (mode 0600) with a zeroed payload; see
    /// [`SegmentBuilder::named`].
    ///
    /// # Errors
    /// As [`SegmentBuilder::named`].
    pub fn create(name: &str, kind: Kind, payload_len: usize) -> Result<Segment, ShmCreateError> {
        Ok(Self::builder(kind, payload_len).named(name)?.publish())
    }

    /// A published memfd segment with a zeroed payload; see [`SegmentBuilder::memfd`].
    ///
    /// # Errors
    /// As [`SegmentBuilder::memfd`].
    pub fn memfd(kind: Kind, payload_len: usize) -> Result<Segment, ShmCreateError> {
        Ok(Self::builder(kind, payload_len).memfd()?.publish())
    }

    /// Opens a named segment holding `kind`, waiting up to [`DEFAULT_INIT_WAIT`] for a
    /// creator that is still initialising it.
    ///
    /// # Errors
    /// [`ShmOpenError::DoesNotExist`], [`PermissionDenied`](ShmOpenError::PermissionDenied),
    /// [`InvalidName`](ShmOpenError::InvalidName), or any header error: not a segment, not
    /// published, another version, another kind, a size that disagrees with the file, a
    /// corrupted header.
    pub fn open(name: &str, kind: Kind) -> Result<Segment, ShmOpenError> {
        Self::open_timeout(name, kind, DEFAULT_INIT_WAIT)
    }

    /// [`Segment::open`] with an explicit wait for an initialising creator.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_timeout(name: &str, kind: Kind, init_wait: Duration) -> Result<Segment, ShmOpenError> {
        let cname = shm_name(name)?;
        // SAFETY: `cname` is a valid C string; shm_open returns a new fd or -1.
        let raw = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) => ShmOpenError::DoesNotExist(name.to_owned()),
                Some(libc::EACCES | libc::EPERM) => ShmOpenError::PermissionDenied(name.to_owned()),
                _ => ShmOpenError::Io(err),
            });
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut seg = Self::from_fd(fd, kind, init_wait)?;
        seg.name = Some(cname);
        Ok(seg)
    }

    /// Opens a segment from a file descriptor: a memfd inherited by or passed to this
    /// process, or any fd of a segment file.
    ///
    /// The size is checked against the header, but an fd that is not sealed (shmkit's memfds
    /// are) can still be shrunk later by a peer that holds it, after which touching the lost
    /// pages raises SIGBUS: only open fds from peers you trust with the segment.
    ///
    /// # Errors
    /// Any header error, as for [`Segment::open`].
    ///
    /// # Examples
    /// ```
    /// use shmkit::shm::{Kind, Segment};
    /// let seg = Segment::memfd(Kind::RAW, 64)?;
    /// let fd = seg.fd().unwrap().try_clone_to_owned()?; // e.g. received over a socket
    /// let again = Segment::open_fd(fd, Kind::RAW)?;
    /// assert_eq!(again.payload_len(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_fd(fd: OwnedFd, kind: Kind) -> Result<Segment, ShmOpenError> {
        Self::from_fd(fd, kind, DEFAULT_INIT_WAIT)
    }

    /// [`Segment::open_fd`] with an explicit wait for an initialising creator.
    ///
    /// # Errors
    /// As [`Segment::open`].
    pub fn open_fd_timeout(fd: OwnedFd, kind: Kind, init_wait: Duration) -> Result<Segment, ShmOpenError> {
        Self::from_fd(fd, kind, init_wait)
    }

    fn from_fd(fd: OwnedFd, kind: Kind, init_wait: Duration) -> Result<Segment, ShmOpenError> {
        // An overflowing wait (Duration::MAX) means "wait as long as it takes".
        let deadline = Instant::now().checked_add(init_wait);
        let waiting = || deadline.is_none_or(|d| Instant::now() < d);
        let nap = Duration::from_millis(1);
        // A creator may sit between shm_open and ftruncate: wait a bounded time for the size.
        let mut size = file_size(fd.as_fd())?;
        while size < PAYLOAD_OFFSET as u64 && waiting() {
            std::thread::sleep(nap);
            size = file_size(fd.as_fd())?;
        }
        if size < PAYLOAD_OFFSET as u64 {
            return Err(ShmOpenError::TooSmall { size });
        }
        let len = usize::try_from(size).map_err(|_| ShmOpenError::Corrupted("file size"))?;
        let map = Mapping::new(len, Some(fd.as_fd()))?;
        let mut seg = Segment { map, backing: Backing::Anonymous, fd: Some(fd), name: None, unlink_by: None };
        // SYNC(version): pairs with the Release store in `NewSegment::publish`.
        while seg.version_word().load(Ordering::Acquire) == 0 && waiting() {
            std::thread::sleep(nap);
        }
        let header = Header::decode(&seg.header_bytes())?;
        header.check(kind, size)?;
        seg.backing = header.backing();
        Ok(seg)
    }

    /// Opens a named segment for reading only, whatever its kind (for `shmkit inspect`): the
    /// file is opened `O_RDONLY | O_NOFOLLOW | O_NONBLOCK` from `/dev/shm` (a symlink or FIFO
    /// planted there is refused, never followed or waited on), mapped `PROT_READ`, and its header
    /// decoded and checked against the file's size. Nothing waits for an unpublished header
    /// (that is `NotReady`), and the segment never unlinks its name.
    ///
    /// Every object reached through it lives in read-only memory: read it with `Relaxed` atomic
    /// loads only (the only atomic accesses Rust guarantees to work on read-only memory) and
    /// fences; any store faults.
    ///
    /// # Errors
    /// As [`Segment::open`], without `WrongKind`.
    pub(crate) fn open_read_only(name: &str) -> Result<Segment, ShmOpenError> {
        use std::os::unix::fs::OpenOptionsExt;

        let cname = shm_name(name)?;
        let path = format!("{}{}", super::SHM_DIR, cname.to_string_lossy());
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => ShmOpenError::DoesNotExist(name.to_owned()),
                io::ErrorKind::PermissionDenied => ShmOpenError::PermissionDenied(name.to_owned()),
                _ => ShmOpenError::Io(e),
            })?;
        if !file.metadata()?.is_file() {
            return Err(ShmOpenError::Io(io::Error::other(format!("{path} is not a regular file"))));
        }
        let fd = OwnedFd::from(file);
        let size = file_size(fd.as_fd())?;
        if size < PAYLOAD_OFFSET as u64 {
            return Err(ShmOpenError::TooSmall { size });
        }
        let len = usize::try_from(size)
            .ok()
            .filter(|&l| l <= isize::MAX as usize)
            .ok_or(ShmOpenError::Corrupted("file size"))?;
        let map = Mapping::read_only(len, fd.as_fd())?;
        let mut seg =
            Segment { map, backing: Backing::Anonymous, fd: Some(fd), name: Some(cname), unlink_by: None };
        let header = Header::decode(&seg.header_bytes())?;
        if header.total_size != size {
            return Err(ShmOpenError::SizeMismatch { header: header.total_size, actual: size });
        }
        seg.backing = header.backing();
        Ok(seg)
    }

    /// Removes a named segment's name from `/dev/shm` without opening it (mappings that exist
    /// stay valid).
    ///
    /// # Errors
    /// [`ShmOpenError::DoesNotExist`], [`PermissionDenied`](ShmOpenError::PermissionDenied),
    /// [`InvalidName`](ShmOpenError::InvalidName) or another OS error.
    pub fn remove(name: &str) -> Result<(), ShmOpenError> {
        let cname = shm_name(name)?;
        // SAFETY: `cname` is a valid C string.
        if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::ENOENT) => ShmOpenError::DoesNotExist(name.to_owned()),
                Some(libc::EACCES | libc::EPERM) => ShmOpenError::PermissionDenied(name.to_owned()),
                _ => ShmOpenError::Io(err),
            });
        }
        Ok(())
    }

    /// Removes this segment's name now (no-op for anonymous and memfd segments). This
    /// process's mapping, and every other process's, stays valid.
    ///
    /// # Errors
    /// As [`Segment::remove`]; `DoesNotExist` if someone removed it already.
    pub fn unlink(&self) -> Result<(), ShmOpenError> {
        match &self.name {
            Some(n) => Self::remove(&n.to_string_lossy()),
            None => Ok(()),
        }
    }

    /// Unlinks the name only if it still refers to this segment's file (same device and
    /// inode): if someone removed it and another segment was created under the same name,
    /// dropping this one must not delete that one. (A narrow race remains between the check
    /// and the unlink.)
    fn unlink_if_still_ours(&self) {
        let (Some(name), Some(fd)) = (&self.name, &self.fd) else { return };
        // SAFETY: `stat` is plain data filled in by the calls below.
        let (mut mine, mut theirs): (libc::stat, libc::stat) = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut mine) } != 0 {
            return;
        }
        let Ok(path) = CString::new(format!("{}{}", super::SHM_DIR, name.to_string_lossy())) else { return };
        // SAFETY: a valid C string and out-pointer; lstat does not follow a planted symlink.
        if unsafe { libc::lstat(path.as_ptr(), &mut theirs) } != 0 {
            return;
        }
        if mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino {
            let _ = self.unlink();
        }
    }

    fn version_word(&self) -> &AtomicU32 {
        // SAFETY: VERSION_OFFSET is 4-aligned inside the page-aligned mapping, which is at
        // least PAYLOAD_OFFSET bytes long and lives as long as `&self`; the word is only
        // accessed atomically.
        unsafe { AtomicU32::from_ptr(self.map.ptr.as_ptr().add(VERSION_OFFSET).cast()) }
    }

    fn header_bytes(&self) -> [u8; HEADER_SIZE] {
        // SAFETY: the mapping holds at least HEADER_SIZE bytes. A volatile copy: the bytes
        // are peer-writable, so they are read once and only the copy is validated.
        unsafe { std::ptr::read_volatile(self.map.ptr.as_ptr().cast::<[u8; HEADER_SIZE]>()) }
    }

    /// A copy of the header as it is now.
    ///
    /// # Errors
    /// A header error if a peer has overwritten it since this segment was opened.
    pub fn header(&self) -> Result<Header, ShmOpenError> {
        Header::decode(&self.header_bytes())
    }

    /// How the segment is backed.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The name of a named segment (with its leading `/`).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref().and_then(|n| n.to_str().ok())
    }

    /// The file descriptor of a named or memfd segment, e.g. to hand to a child.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    /// Whole segment size in bytes, header included.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Always false: a segment holds at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Payload size in bytes.
    pub fn payload_len(&self) -> usize {
        self.map.len - PAYLOAD_OFFSET
    }

    /// Start of the payload. Memory behind it may be written by other processes at any time:
    /// read it with atomics or volatile copies, and bound every index read from it.
    pub fn payload_ptr(&self) -> NonNull<u8> {
        // SAFETY: PAYLOAD_OFFSET < len, so the pointer stays inside the mapping.
        unsafe { self.map.ptr.add(PAYLOAD_OFFSET) }
    }

    fn check_fit(&self, offset: usize, size: usize, align: usize) -> Result<NonNull<u8>, OffsetError> {
        let payload_len = self.payload_len();
        let err = OffsetError { offset, size, align, payload_len };
        let end = offset.checked_add(size).ok_or(err)?;
        if end > payload_len {
            return Err(err);
        }
        // SAFETY: offset <= end <= payload_len, so the pointer stays in the mapping.
        let ptr = unsafe { self.payload_ptr().add(offset) };
        if ptr.as_ptr() as usize % align != 0 {
            return Err(err);
        }
        Ok(ptr)
    }

    /// The object at `offset`.
    ///
    /// # Errors
    /// [`OffsetError`] if it would reach past the payload or is misaligned.
    pub fn get<T: Shareable>(&self, offset: Offset<T>) -> Result<&T, OffsetError> {
        let ptr = self.check_fit(offset.offset, std::mem::size_of::<T>(), std::mem::align_of::<T>())?;
        // SAFETY: in bounds and aligned (checked above); T: Shareable accepts any bytes and
        // is mutated only through atomics; the mapping lives as long as `&self`.
        Ok(unsafe { ptr.cast::<T>().as_ref() })
    }

    /// The objects at `offset`.
    ///
    /// # Errors
    /// [`OffsetError`] if they would reach past the payload or are misaligned.
    pub fn get_slice<T: Shareable>(&self, offset: SliceOffset<T>) -> Result<&[T], OffsetError> {
        let size = std::mem::size_of::<T>().checked_mul(offset.len).ok_or(OffsetError {
            offset: offset.offset,
            size: usize::MAX,
            align: std::mem::align_of::<T>(),
            payload_len: self.payload_len(),
        })?;
        let ptr = self.check_fit(offset.offset, size, std::mem::align_of::<T>())?;
        // SAFETY: as in `get`, for `len` consecutive elements.
        Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<T>().as_ptr(), offset.len) })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Only the creating process unlinks: a forked child's copy must not remove the name
        // from under its parent.
        if self.unlink_by == Some(std::process::id()) {
            self.unlink_if_still_ours();
        }
    }
}
