//! The certificate blob file: OFD-locked readers, atomic locked updates.
//!
//! # Locking design
//!
//! All locks are Linux open-file-description locks (`fcntl(F_OFD_SETLK[W])`) on the
//! whole certificate file, taken on **the inode that the certificate path names at
//! the time**. This is the scheme the kernel documentation of the series asks for
//! ("take a shared/exclusive lock on the certificate blob path"): a firmware-update
//! tool that only knows the documentation opens the path and takes an exclusive OFD
//! lock, and it excludes our readers. (OFD locks and `flock()` locks do not
//! exclude each other on Linux, so every party must use OFD locks.)
//!
//! Replacing the file by `rename()` moves the path to a new inode, and a lock on the
//! old inode says nothing about the new one. Two rules make the scheme sound anyway:
//!
//! 1. **Readers re-check.** A reader opens the path, takes the shared lock, then
//!    compares `fstat(fd)` with `stat(path)` (device and inode). If the path now
//!    names another inode, the file was replaced while it waited: it closes and
//!    starts again.
//! 2. **Updaters lock both inodes across the rename.** An updater takes the
//!    exclusive lock on the current inode (and re-checks it like a reader), writes
//!    the new blob to a temporary file in the same directory, `fsync`s it, takes
//!    the exclusive lock on the *new* inode too (uncontended: nobody else knows
//!    it yet), `rename`s it over the path, `fsync`s the directory, and only then
//!    releases both locks.
//!
//! Invariant: the path can change inode only while someone holds the exclusive
//! lock on both the old and the new inode. Hence a reader that holds a shared
//! lock on inode X and has seen the path name X keeps seeing X until it unlocks,
//! and an updater or `snp-certs hold` that holds the exclusive lock on the current
//! inode excludes every reader that passed its re-check. Readers that opened the
//! old inode and were waiting get the lock after the updater finishes, fail the
//! re-check and retry on the new inode, which they can lock only once the updater
//! released it.
//!
//! Crash safety: before the rename the path still names the old, complete blob;
//! the rename is atomic; the temporary file was `fsync`ed before it and the
//! directory after it, so after a crash the path names either the old or the new
//! blob. Temporaries are named `.NAME.snp-certs-tmp.PID.N.NANOS` (unique, created
//! with `O_EXCL`), and each updater holds the exclusive lock on its own
//! temporary from right after creating it until the rename: the next updater
//! removes a temporary only if it can take that lock (its updater died) and the
//! name still names the inode it locked. A first install (no file to lock yet)
//! running beside another updater therefore keeps its temporary.
//!
//! Bounded waits: `F_OFD_SETLKW` has no timeout, so a contended lock is waited for
//! on a helper thread that owns its own open file description; if the caller gives
//! up, the helper later gets the lock, finds nobody listening and closes the
//! descriptor, which drops the lock. No polling.

use std::ffi::OsString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

use crate::table::{self, TableError};
use crate::watch::{self, Watch};

/// How often a reader or updater restarts because the path changed under it
/// before giving up (a path replaced this often is being abused).
const MAX_ATTEMPTS: u32 = 32;

/// Largest blob a reader accepts from disk (far above the 16 KiB a Linux guest
/// takes, well below anything that could hurt the VMM).
pub const MAX_BLOB_FILE: u64 = 1 << 20;

/// Kind of OFD lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// Errors of the blob store.
#[derive(Debug)]
pub enum StoreError {
    /// An I/O call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The lock could not be had within the allowed wait.
    Busy,
    /// The path kept being replaced while we tried to lock it.
    Unstable(PathBuf),
    /// The blob is not a valid certificate table.
    Table(TableError),
    /// The blob on disk is larger than [`MAX_BLOB_FILE`].
    TooLarge(u64),
    /// A lock on this handle is already held.
    AlreadyHeld,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { op, path, err } => write!(f, "{op} {}: {err}", path.display()),
            StoreError::Busy => write!(f, "lock not available within the allowed wait"),
            StoreError::Unstable(p) => {
                write!(f, "{} kept being replaced while locking it", p.display())
            }
            StoreError::Table(e) => write!(f, "invalid certificate table: {e}"),
            StoreError::TooLarge(n) => {
                write!(
                    f,
                    "certificate file is {n} bytes, over the {MAX_BLOB_FILE}-byte limit"
                )
            }
            StoreError::AlreadyHeld => write!(f, "lock already held by this handle"),
        }
    }
}

impl std::error::Error for StoreError {}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |err| StoreError::Io { op, path, err }
}

fn flock_arg(l_type: libc::c_int) -> libc::flock {
    libc::flock {
        // F_RDLCK/F_WRLCK/F_UNLCK (0..=2) and SEEK_SET (0) fit a c_short.
        l_type: libc::c_short::try_from(l_type).unwrap_or(-1),
        l_whence: libc::c_short::try_from(libc::SEEK_SET).unwrap_or(-1),
        l_start: 0,
        l_len: 0, // whole file, however it grows
        l_pid: 0, // must be 0 for OFD locks
    }
}

fn lock_type(kind: LockKind) -> libc::c_int {
    match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    }
}

/// Tries to take an OFD lock without waiting. `Ok(false)` means contended.
pub fn try_lock(fd: BorrowedFd<'_>, kind: LockKind) -> io::Result<bool> {
    let fl = flock_arg(lock_type(kind));
    match fcntl(fd, FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Takes an OFD lock, waiting as long as it takes (restarts on EINTR).
pub fn lock_wait(fd: BorrowedFd<'_>, kind: LockKind) -> io::Result<()> {
    let fl = flock_arg(lock_type(kind));
    loop {
        match fcntl(fd, FcntlArg::F_OFD_SETLKW(&fl)) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Releases this open file description's lock.
pub fn unlock(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fl = flock_arg(libc::F_UNLCK);
    fcntl(fd, FcntlArg::F_OFD_SETLK(&fl))
        .map(drop)
        .map_err(Into::into)
}

/// Waits for the lock on `file` for at most `wait` (forever if `None`). On time-out
/// the file is handed to a helper thread that keeps waiting and then closes it,
/// which releases the lock it got: the caller never ends up holding a lock late.
fn lock_bounded(
    file: File,
    kind: LockKind,
    wait: Option<Duration>,
    path: &Path,
) -> Result<File, StoreError> {
    if try_lock(file.as_fd(), kind).map_err(io_err("lock", path))? {
        return Ok(file);
    }
    let wait = match wait {
        None => {
            lock_wait(file.as_fd(), kind).map_err(io_err("lock", path))?;
            return Ok(file);
        }
        Some(w) => w,
    };
    if wait.is_zero() {
        return Err(StoreError::Busy);
    }
    let (tx, rx) = mpsc::sync_channel::<io::Result<File>>(1);
    std::thread::Builder::new()
        .name("snp-certs-lock".into())
        .spawn(move || {
            let r = lock_wait(file.as_fd(), kind).map(|()| file);
            // If the receiver is gone the caller timed out; dropping the File
            // closes the descriptor and releases the lock we just got.
            let _ = tx.send(r);
        })
        .map_err(io_err("spawn lock waiter for", path))?;
    match rx.recv_timeout(wait) {
        Ok(Ok(f)) => Ok(f),
        Ok(Err(e)) => Err(StoreError::Io {
            op: "lock",
            path: path.to_path_buf(),
            err: e,
        }),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(StoreError::Busy),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(StoreError::Io {
            op: "lock",
            path: path.to_path_buf(),
            err: io::Error::other("lock waiter thread ended"),
        }),
    }
}

/// An open certificate file whose lock this handle holds; closing it (drop)
/// releases the lock.
#[derive(Debug)]
pub struct LockedFile {
    file: File,
    kind: LockKind,
    dev: u64,
    ino: u64,
}

impl LockedFile {
    pub fn file(&self) -> &File {
        &self.file
    }
    pub fn kind(&self) -> LockKind {
        self.kind
    }
    /// (device, inode) of the locked file.
    pub fn id(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
    /// Reads the whole file from offset 0.
    pub fn read_all(&mut self) -> Result<Vec<u8>, StoreError> {
        read_whole(&mut self.file, Path::new("<locked file>"))
    }
}

fn read_whole(file: &mut File, path: &Path) -> Result<Vec<u8>, StoreError> {
    let len = file.metadata().map_err(io_err("fstat", path))?.len();
    if len > MAX_BLOB_FILE {
        return Err(StoreError::TooLarge(len));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("seek", path))?;
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(MAX_BLOB_FILE.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(io_err("read", path))?;
    if buf.len() as u64 > MAX_BLOB_FILE {
        return Err(StoreError::TooLarge(buf.len() as u64));
    }
    Ok(buf)
}

/// Does `path` still name the inode `file` is open on? A missing path is "no".
fn names_same_inode(file: &File, path: &Path) -> Result<Option<(u64, u64)>, StoreError> {
    let fm = file.metadata().map_err(io_err("fstat", path))?;
    match std::fs::metadata(path) {
        Ok(pm) if pm.dev() == fm.dev() && pm.ino() == fm.ino() => Ok(Some((fm.dev(), fm.ino()))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("stat", path)(e)),
    }
}

/// Opens `path` and takes `kind` lock on the inode it names, waiting at most
/// `wait` in total, and re-checks that the path still names that inode (retrying
/// if it was replaced meanwhile). A missing file is an `Io` error of kind NotFound.
pub fn open_locked(
    path: &Path,
    kind: LockKind,
    wait: Option<Duration>,
) -> Result<LockedFile, StoreError> {
    let deadline = wait.and_then(|w| Instant::now().checked_add(w));
    for _ in 0..MAX_ATTEMPTS {
        let mut oo = OpenOptions::new();
        // O_NONBLOCK: opening a FIFO (or a device) must not block the caller (a
        // vCPU thread); anything but a regular file is refused just below. On a
        // regular file O_NONBLOCK changes nothing.
        oo.read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK);
        if kind == LockKind::Exclusive {
            oo.write(true); // F_WRLCK needs a writable descriptor
                            // Updaters never follow a symbolic link at the final component:
                            // whoever can write the directory could otherwise point the
                            // path at any file the updater (root) can write.
            oo.custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_NOFOLLOW);
        }
        let file = match oo.open(path) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(io_err("open", path)(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a symbolic link: updaters do not follow one at the final component (give the path it points to)",
                )))
            }
            r => r.map_err(io_err("open", path))?,
        };
        let ft = file.metadata().map_err(io_err("fstat", path))?.file_type();
        if !ft.is_file() {
            return Err(io_err("open", path)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let left = match (wait, deadline) {
            (None, _) => None,
            (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
            (Some(w), None) => Some(w),
        };
        let file = lock_bounded(file, kind, left, path)?;
        if let Some((dev, ino)) = names_same_inode(&file, path)? {
            return Ok(LockedFile {
                file,
                kind,
                dev,
                ino,
            });
        }
        // Replaced while we waited: drop (unlock) and try the new inode.
    }
    Err(StoreError::Unstable(path.to_path_buf()))
}

/// One-shot reader: open, shared lock (bounded), re-check, read, validate.
/// The returned lock is held until the `LockedFile` is dropped.
pub fn read_locked(
    path: &Path,
    wait: Option<Duration>,
) -> Result<(LockedFile, Vec<u8>), StoreError> {
    let mut lf = open_locked(path, LockKind::Shared, wait)?;
    let blob = read_whole(&mut lf.file, path)?;
    table::parse(&blob).map_err(StoreError::Table)?;
    Ok((lf, blob))
}

fn split_path(path: &Path) -> Result<(PathBuf, OsString), StoreError> {
    let name = path.file_name().ok_or_else(|| StoreError::Io {
        op: "use",
        path: path.to_path_buf(),
        err: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_os_string()))
}

fn tmp_prefix(name: &OsString) -> Vec<u8> {
    let mut p = b".".to_vec();
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b".snp-certs-tmp.");
    p
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates this updater's temporary file in `dir`, named `PREFIX` + pid +
/// counter + clock (unique; `O_EXCL` guarantees it), and takes the exclusive
/// lock on it. The lock, held until the temporary is renamed or removed, is
/// what marks it live: [`remove_stale_temporaries`] leaves locked ones alone.
/// A cleaner may open and remove the file between its creation and our lock;
/// then the name no longer names our inode, and we start again with a new
/// name.
fn create_locked_temporary(dir: &Path, prefix: &[u8]) -> Result<(File, Vec<u8>), StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let mut name = prefix.to_vec();
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        name.extend_from_slice(format!("{}.{n}.{nanos}", std::process::id()).as_bytes());
        let path = dir.join(std::ffi::OsStr::from_bytes(&name));
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            // Owner-only until it gets its final mode just before the rename:
            // never readable (or lockable) by others meanwhile.
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &path)(e)),
        };
        lock_wait(file.as_fd(), LockKind::Exclusive).map_err(io_err("lock", &path))?;
        if names_same_inode(&file, &path)?.is_some() {
            return Ok((file, name));
        }
    }
    Err(StoreError::Unstable(dir.to_path_buf()))
}

/// Removes the temporaries of updaters that died (`PREFIX*` in `dir`) and
/// only those: a live updater holds the exclusive lock on its temporary from
/// right after creating it until it is renamed or removed, and the lock
/// goes when its process dies. A temporary is removed only while we hold its
/// lock and its name still names the inode we locked (a live updater renames
/// it only while holding that lock, and the names are unique, so it cannot
/// change meanwhile). Best effort: errors leave the file for the next updater.
fn remove_stale_temporaries(dir: &Path, prefix: &[u8]) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        if !ent.file_name().as_bytes().starts_with(prefix) {
            continue;
        }
        let path = ent.path();
        let Ok(f) = OpenOptions::new()
            .read(true)
            .write(true) // F_WRLCK needs a writable descriptor
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
        else {
            continue;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            continue;
        }
        if !matches!(try_lock(f.as_fd(), LockKind::Exclusive), Ok(true)) {
            continue; // a live updater's
        }
        if matches!(names_same_inode(&f, &path), Ok(Some(_))) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Takes the exclusive lock for an update of `path`. `Ok(None)` if the file does
/// not exist yet (the first install then creates it without replacing anything).
pub fn lock_for_update(
    path: &Path,
    wait: Option<Duration>,
) -> Result<Option<LockedFile>, StoreError> {
    match open_locked(path, LockKind::Exclusive, wait) {
        Ok(l) => Ok(Some(l)),
        Err(StoreError::Io { err, .. }) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Mode of a blob file created by a first install, when no mode is given:
/// owner read-write, group read (the VMMs' group, set with [`Perms::gid`]),
/// nothing for others. Whoever can read the blob can take a shared lock on
/// it and so stall every update; only the VMMs should be able to.
pub const DEFAULT_MODE: u32 = 0o640;

/// Mode and group of the installed blob file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perms {
    /// Permission bits; `None`: the replaced file's, or [`DEFAULT_MODE`] for
    /// a first install (never the umask's).
    pub mode: Option<u32>,
    /// Group; `None`: the replaced file's, or the process's for a first
    /// install.
    pub gid: Option<u32>,
}

/// Replaces `path` with `blob` (already validated by the caller or not: this
/// Replaces `path` with `blob` (already validated by the caller or not: this
/// validates again). `old` must be the exclusive lock on the inode `path` names
/// (from [`lock_for_update`]) or `None` if the path does not exist. Returns the
/// new file, exclusively locked: keep it to extend the critical section (as
/// `hold --install` does), drop it to let readers in.
pub fn replace_locked(
    path: &Path,
    old: Option<&LockedFile>,
    blob: &[u8],
) -> Result<LockedFile, StoreError> {
    replace_locked_perms(path, old, blob, Perms::default())
}

/// [`replace_locked`] with the new file's mode and group set as `perms`
/// says. The temporary is created 0600 and gets its final owner and mode
/// right before the rename.
pub fn replace_locked_perms(
    path: &Path,
    old: Option<&LockedFile>,
    blob: &[u8],
    perms: Perms,
) -> Result<LockedFile, StoreError> {
    table::parse(blob).map_err(StoreError::Table)?;
    if let Some(o) = old {
        if o.kind != LockKind::Exclusive || names_same_inode(&o.file, path)?.is_none() {
            return Err(StoreError::Unstable(path.to_path_buf()));
        }
    }
    let (dir, name) = split_path(path)?;
    let dirf = File::open(&dir).map_err(io_err("open directory", &dir))?;
    let prefix = tmp_prefix(&name);
    remove_stale_temporaries(&dir, &prefix);
    let (mut tmp, tmp_name) = create_locked_temporary(&dir, &prefix)?;
    let tmp_path = dir.join(std::ffi::OsStr::from_bytes(&tmp_name));
    #[cfg(test)]
    AFTER_TMP_LOCKED.with(|h| {
        if let Some(mut f) = h.take() {
            f()
        }
    });
    let res = (|| {
        tmp.write_all(blob).map_err(io_err("write", &tmp_path))?;
        // Keep the old file's mode and, where permitted, its owner, so a
        // VMM running as another user can still read the new blob; a
        // given mode or group wins; a first install gets DEFAULT_MODE.
        let (mut mode, mut owner) = (DEFAULT_MODE, None);
        if let Some(o) = old {
            let m = o.file.metadata().map_err(io_err("fstat", path))?;
            mode = m.mode() & 0o7777;
            owner = Some((m.uid(), m.gid()));
        }
        let mode = perms.mode.unwrap_or(mode);
        let (uid, gid) = match (owner, perms.gid) {
            (Some((u, g)), want) => (Some(u), Some(want.unwrap_or(g))),
            (None, want) => (None, want),
        };
        if uid.is_some() || gid.is_some() {
            match std::os::unix::fs::fchown(&tmp, uid, gid) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EPERM) && perms.gid.is_none() => {}
                Err(e) => return Err(io_err("chown", &tmp_path)(e)),
            }
        }
        tmp.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(io_err("chmod", &tmp_path))?;
        tmp.sync_all().map_err(io_err("fsync", &tmp_path))?;
        let flags = if old.is_some() {
            nix::fcntl::RenameFlags::empty()
        } else {
            // First install: never clobber a file someone else created meanwhile.
            nix::fcntl::RenameFlags::RENAME_NOREPLACE
        };
        nix::fcntl::renameat2(
            dirf.as_fd(),
            tmp_name.as_slice(),
            dirf.as_fd(),
            name.as_bytes(),
            flags,
        )
        .map_err(|e| io_err("rename over", path)(e.into()))?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(e);
    }
    // The rename is done: from here on the new blob is the blob (readers see
    // it), so the install succeeded. Make it durable; if the directory fsync
    // fails, the new file is still in place: warn, do not report a failure
    // (the caller would believe the old blob is still there).
    if let Err(e) = fsync_dir(&dirf) {
        let _ = writeln!(
            io::stderr(),
            "snp-certs: warning: {} installed, but fsync of directory {} failed: {}; \
             the replacement may not survive a crash",
            path.display(),
            dir.display(),
            io::Error::from(e)
        );
    }
    let m = tmp.metadata().map_err(io_err("fstat", path))?;
    Ok(LockedFile {
        file: tmp,
        kind: LockKind::Exclusive,
        dev: m.dev(),
        ino: m.ino(),
    })
}

#[cfg(test)]
thread_local! {
    /// Test hook: make the next directory fsync of this thread fail with EIO.
    static FAIL_DIR_FSYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Test hook: run once in this thread's next update, right after its
    /// temporary is created and locked.
    static AFTER_TMP_LOCKED: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
        const { std::cell::RefCell::new(None) };
}

fn fsync_dir(dirf: &File) -> nix::Result<()> {
    #[cfg(test)]
    if FAIL_DIR_FSYNC.with(|f| f.replace(false)) {
        return Err(Errno::EIO);
    }
    nix::unistd::fsync(dirf.as_fd())
}

/// Validates `blob` and atomically installs it at `path` under the exclusive lock.
pub fn install(path: &Path, blob: &[u8], wait: Option<Duration>) -> Result<(), StoreError> {
    install_perms(path, blob, wait, Perms::default())
}

/// [`install`] with the file's mode and group as `perms` says.
pub fn install_perms(
    path: &Path,
    blob: &[u8],
    wait: Option<Duration>,
    perms: Perms,
) -> Result<(), StoreError> {
    table::parse(blob).map_err(StoreError::Table)?;
    for _ in 0..MAX_ATTEMPTS {
        let old = lock_for_update(path, wait)?;
        match replace_locked_perms(path, old.as_ref(), blob, perms) {
            Ok(_new) => return Ok(()), // both locks dropped here, after the rename
            // The first install lost a race with another creator: lock theirs.
            Err(StoreError::Io { err, .. })
                if old.is_none() && err.kind() == io::ErrorKind::AlreadyExists =>
            {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unstable(path.to_path_buf()))
}

/// Validates `blob` and rewrites the existing file `path` names **in place**,
/// under its exclusive lock: write the new bytes from offset 0, truncate to
/// their length, `fsync`, unlock. The inode (and so its mode, owner, hard
/// links, and any descriptor a VMM keeps open) stays the same.
///
/// For hosts whose VMMs follow only the lock-on-path scheme of the kernel
/// documentation and do not re-check the inode after locking (or keep the
/// file open across requests): they never see a rename, only new bytes under
/// the lock. Trade-off against [`install`]: a reader that takes no lock can
/// see a torn file (part old, part new, or short) while the rewrite runs, and
/// a crash or I/O error during it can leave a torn file on disk. On a write
/// error the old bytes are written back (best effort) before the error is
/// returned. A missing file is an `Io` error of kind NotFound (nothing is
/// created: the first install is [`install`]'s job).
pub fn install_in_place(
    path: &Path,
    blob: &[u8],
    wait: Option<Duration>,
) -> Result<(), StoreError> {
    install_in_place_perms(path, blob, wait, Perms::default())
}

/// [`install_in_place`], then the mode and group `perms` gives (if any) set
/// on the file. A symbolic link at `path` is refused (never followed).
pub fn install_in_place_perms(
    path: &Path,
    blob: &[u8],
    wait: Option<Duration>,
    perms: Perms,
) -> Result<(), StoreError> {
    table::parse(blob).map_err(StoreError::Table)?;
    let mut lf = open_locked(path, LockKind::Exclusive, wait)?;
    if perms.gid.is_some() {
        std::os::unix::fs::fchown(&lf.file, None, perms.gid).map_err(io_err("chown", path))?;
    }
    if let Some(m) = perms.mode {
        lf.file
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(m))
            .map_err(io_err("chmod", path))?;
    }
    let old = read_whole(&mut lf.file, path).ok();
    rewrite(&mut lf.file, blob, path).inspect_err(|_| {
        if let Some(old) = &old {
            let _ = rewrite(&mut lf.file, old, path);
        }
    })
    // lf dropped here: the lock goes after the fsync.
}

fn rewrite(file: &mut File, bytes: &[u8], path: &Path) -> Result<(), StoreError> {
    // Writing before truncating overwrites blocks the file already has, so a
    // full file system fails the write less often than truncate-then-write.
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("seek", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.set_len(bytes.len() as u64)
        .map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// Default bounded wait of the VMM for the shared lock: well under the guest's
/// 2 s BUSY retry interval.
pub const DEFAULT_SERVE_WAIT: Duration = Duration::from_millis(100);

struct Current {
    file: File,
    blob: Vec<u8>,
    dev: u64,
    ino: u64,
    verified: Instant,
}

/// How often the cached server also re-checks `stat(path)` against its inode,
/// as a backstop for what a directory watch cannot see (an ancestor directory
/// of the certificate file being renamed or replaced).
pub const DEFAULT_REVALIDATE: Duration = Duration::from_secs(1);

/// A VMM-side reader that keeps the blob cached between requests.
///
/// Per request it takes the shared OFD lock on its open descriptor and checks
/// the inotify queue for any event naming the certificate file in its
/// directory (rename over it, write to it, delete, attribute change, queue
/// overflow). The inotify instance is one per process, shared by all servers
/// ([`crate::watch`]), so the number of servers is not bounded by
/// `fs.inotify.max_user_instances`. Events are
/// queued by the kernel inside the syscall that makes the change, and every change
/// to the file happens under the exclusive lock, so once the shared lock is ours,
/// an empty queue proves that the path still names our inode and that its bytes
/// are the ones cached: one `read()` that returns EAGAIN replaces the
/// `stat()` path walk and the re-read. Any event: drop the cache and reload the
/// slow way (open, lock, re-check inode, read, validate).
///
/// The file's own inode is watched too (written, attributes or link count
/// changed, closed after writing, deleted, moved), so a change made through
/// another name raises an event as well: a write to the target of a symbolic
/// link at the path, a write through another hard link, a rename over the
/// link's target (the old inode's link count drops). Both watches are re-armed
/// on every reload; the directory watch also sees a symbolic link at the path
/// being replaced.
///
/// If the watched directory itself goes away or moves, the watch is re-armed
/// on the directory the path names now. Renaming an *ancestor* directory raises
/// no event on the watch, so at most every [`DEFAULT_REVALIDATE`] the fast path
/// also compares `stat(path)` with the cached inode.
///
/// Limits: changes through a writable `mmap` of the file raise no inotify event;
/// tools must write with `write(2)` (as `snp-certs install` does) or replace by
/// rename. One `BlobServer` per vCPU thread: the lock belongs to its own open
/// file description, so vCPUs holding a lock until NOTIFY_DONE do not release each
/// other's locks.
pub struct BlobServer {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    /// The watch on the directory the path names, for events naming the file
    /// (re-armed on every reload).
    dir_watch: Watch,
    /// The watch on the file's own inode (re-armed on every reload): sees
    /// writes through a symbolic link's target or another hard link, which
    /// raise no event naming the file in its directory.
    file_watch: Option<Watch>,
    cur: Option<Current>,
    held: bool,
    wait: Duration,
    revalidate: Duration,
    reloads: u64,
}

fn watch_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    io_err("inotify_add_watch", path)
}

impl BlobServer {
    /// Watches the certificate file's directory. The file itself may not exist
    /// yet: requests fail until it does.
    pub fn new(path: &Path) -> Result<BlobServer, StoreError> {
        let (dir, name) = split_path(path)?;
        let dir_watch = Watch::new(&dir, Some(&name)).map_err(watch_err(&dir))?;
        Ok(BlobServer {
            path: path.to_path_buf(),
            dir,
            name,
            dir_watch,
            file_watch: None,
            cur: None,
            held: false,
            wait: DEFAULT_SERVE_WAIT,
            revalidate: DEFAULT_REVALIDATE,
            reloads: 0,
        })
    }

    /// Sets the interval of the backstop `stat(path)` re-check (see
    /// [`DEFAULT_REVALIDATE`]); `Duration::ZERO` re-checks on every request.
    pub fn with_revalidate(mut self, every: Duration) -> BlobServer {
        self.revalidate = every;
        self
    }

    /// Sets the bounded wait for a contended lock.
    pub fn with_wait(mut self, wait: Duration) -> BlobServer {
        self.wait = wait;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many times the blob was (re)loaded from disk.
    pub fn reloads(&self) -> u64 {
        self.reloads
    }

    pub fn is_held(&self) -> bool {
        self.held
    }

    /// True if an event that concerns our file was queued since the watches
    /// were armed, or events may have been lost (see [`crate::watch`]).
    fn changed(&self) -> bool {
        watch::drain();
        self.dir_watch.fired_no_drain()
            || self.file_watch.as_ref().map_or(true, Watch::fired_no_drain)
    }

    /// Takes the shared lock and returns the current, validated blob. The lock is
    /// held until [`release`](Self::release).
    pub fn acquire(&mut self) -> Result<&[u8], StoreError> {
        if self.held {
            return Err(StoreError::AlreadyHeld);
        }
        if self.cur.is_some() {
            let locked = self
                .cur
                .as_ref()
                .map(|c| try_lock(c.file.as_fd(), LockKind::Shared));
            if let Some(Ok(true)) = locked {
                if !self.changed() && self.still_current() {
                    self.held = true;
                    return self
                        .cur
                        .as_ref()
                        .map(|c| c.blob.as_slice())
                        .ok_or(StoreError::AlreadyHeld);
                }
                if let Some(c) = &self.cur {
                    let _ = unlock(c.file.as_fd());
                }
            }
            // Contended, changed, or failed: drop the cached descriptor.
            self.cur = None;
        }
        // Slow path. Re-arm the watch on every reload, on the directory the
        // path names now: the watched directory may have been removed or moved,
        // or (seen only by the stat backstop) an ancestor swapped, and then the
        // old watch would never report a change again. The new watch is armed
        // before the file is read, so a change after this point makes the next
        // request reload again, which is safe; the old one is dropped after it,
        // so a shared kernel watch is not removed and added again.
        self.dir_watch = Watch::new(&self.dir, Some(&self.name)).map_err(watch_err(&self.dir))?;
        // Keep the old inode watch until the new one is armed (dropped at
        // return): on the same inode, the shared kernel watch stays.
        let _old_file_watch = self.file_watch.take();
        let path = self.path.clone();
        let mut lf = open_locked(&path, LockKind::Shared, Some(self.wait))?;
        // Watch the inode too. We hold the shared lock and the path names the
        // locked inode (re-checked), so the path (symbolic links followed, as
        // open did) resolves to it here: it cannot be replaced while we hold
        // the lock, and a change of a symbolic link at the path is an event on
        // the directory watch armed above.
        self.file_watch = Some(Watch::new(&path, None).map_err(watch_err(&path))?);
        let blob = read_whole(&mut lf.file, &path)?;
        table::parse(&blob).map_err(StoreError::Table)?;
        self.reloads = self.reloads.saturating_add(1);
        self.held = true;
        let (dev, ino) = lf.id();
        let cur = self.cur.insert(Current {
            file: lf.file,
            blob,
            dev,
            ino,
            verified: Instant::now(),
        });
        Ok(cur.blob.as_slice())
    }

    /// Backstop: at most every `revalidate`, check with `stat(path)` that the
    /// path still names the cached inode.
    fn still_current(&mut self) -> bool {
        let path = &self.path;
        let every = self.revalidate;
        let Some(c) = self.cur.as_mut() else {
            return false;
        };
        if c.verified.elapsed() < every {
            return true;
        }
        match std::fs::metadata(path) {
            Ok(m) if m.dev() == c.dev && m.ino() == c.ino => {
                c.verified = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Releases the lock taken by [`acquire`](Self::acquire). Never fails: if the
    /// unlock call fails, the descriptor is closed, which releases the lock.
    pub fn release(&mut self) {
        if !self.held {
            return;
        }
        self.held = false;
        let ok = self
            .cur
            .as_ref()
            .map(|c| unlock(c.file.as_fd()).is_ok())
            .unwrap_or(false);
        if !ok {
            self.cur = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Builder, CertKind};

    fn blob(fill: u8, n: usize) -> Vec<u8> {
        Builder::new()
            .add_kind(CertKind::Vcek, vec![fill; n])
            .build()
            .unwrap()
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("snp-certs-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn install_and_read() {
        let d = tmpdir("basic");
        let p = d.join("certs.bin");
        install(&p, &blob(1, 100), None).unwrap();
        let (_l, b) = read_locked(&p, None).unwrap();
        assert_eq!(b, blob(1, 100));
        drop(_l);
        install(&p, &blob(2, 200), None).unwrap();
        assert_eq!(read_locked(&p, None).unwrap().1, blob(2, 200));
        // no temporaries left behind
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(matches!(
            install(&p, &[1, 2, 3], None),
            Err(StoreError::Table(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn shared_excludes_exclusive_across_descriptors() {
        let d = tmpdir("excl");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        let r = open_locked(&p, LockKind::Shared, None).unwrap();
        // Same process, another open file description: OFD locks conflict.
        assert!(matches!(
            open_locked(&p, LockKind::Exclusive, Some(Duration::from_millis(50))),
            Err(StoreError::Busy)
        ));
        assert!(matches!(
            install(&p, &blob(2, 10), Some(Duration::from_millis(50))),
            Err(StoreError::Busy)
        ));
        let r2 = open_locked(&p, LockKind::Shared, Some(Duration::ZERO)).unwrap();
        drop(r);
        drop(r2);
        // The helper threads of the two timed-out attempts above may still get
        // the lock for a moment (and drop it at once): allow a short wait.
        let w = open_locked(&p, LockKind::Exclusive, Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(
            read_locked(&p, Some(Duration::from_millis(30))),
            Err(StoreError::Busy)
        ));
        drop(w);
        read_locked(&p, Some(Duration::from_secs(5))).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn new_inode_is_locked_until_updater_releases() {
        let d = tmpdir("newlock");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        let old = lock_for_update(&p, None).unwrap().unwrap();
        let new = replace_locked(&p, Some(&old), &blob(2, 10)).unwrap();
        drop(old);
        // The path names the new inode, which is still exclusively locked.
        assert!(matches!(
            read_locked(&p, Some(Duration::from_millis(30))),
            Err(StoreError::Busy)
        ));
        drop(new);
        assert_eq!(read_locked(&p, None).unwrap().1, blob(2, 10));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn waiting_reader_follows_replacement() {
        let d = tmpdir("follow");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        let old = lock_for_update(&p, None).unwrap().unwrap();
        let p2 = p.clone();
        let h =
            std::thread::spawn(move || read_locked(&p2, Some(Duration::from_secs(5))).map(|x| x.1));
        std::thread::sleep(Duration::from_millis(50));
        let new = replace_locked(&p, Some(&old), &blob(3, 10)).unwrap();
        drop(old);
        std::thread::sleep(Duration::from_millis(20));
        drop(new);
        assert_eq!(h.join().unwrap().unwrap(), blob(3, 10));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn watch_is_rearmed_after_backstop_reload() {
        let every = Duration::from_millis(800);
        let top = tmpdir("rearm");
        let d = top.join("a").join("certdir");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        let mut s = BlobServer::new(&p).unwrap().with_revalidate(every);
        assert_eq!(s.acquire().unwrap(), &blob(1, 10)[..]);
        s.release();
        // Swap an ancestor of the watched directory.
        let d2 = top.join("a.new").join("certdir");
        std::fs::create_dir_all(&d2).unwrap();
        install(&d2.join("c"), &blob(2, 10), None).unwrap();
        std::fs::rename(top.join("a"), top.join("a.old")).unwrap();
        std::fs::rename(top.join("a.new"), top.join("a")).unwrap();
        // The backstop reloads once its interval has passed.
        std::thread::sleep(every + Duration::from_millis(100));
        assert_eq!(s.acquire().unwrap(), &blob(2, 10)[..]);
        s.release();
        let reloads = s.reloads();
        // Rewrite the file in place (same inode, under the exclusive lock), then
        // ask at once, well within the backstop interval: only the watch, which
        // must now be on the new directory, can report the change.
        let t0 = Instant::now();
        {
            let lf = open_locked(&p, LockKind::Exclusive, None).unwrap();
            let mut f = lf.file();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.write_all(&blob(3, 10)).unwrap();
        }
        assert_eq!(s.acquire().unwrap(), &blob(3, 10)[..]);
        s.release();
        assert!(t0.elapsed() < every, "took {:?}", t0.elapsed());
        assert_eq!(s.reloads(), reloads + 1);
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn directory_fsync_error_after_rename_is_not_a_failed_install() {
        let d = tmpdir("dirfsync");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        FAIL_DIR_FSYNC.with(|f| f.set(true));
        install(&p, &blob(2, 10), None).expect("the rename succeeded: install must succeed");
        assert!(!FAIL_DIR_FSYNC.with(|f| f.get()), "hook not reached");
        assert_eq!(std::fs::read(&p).unwrap(), blob(2, 10));
        // First install (RENAME_NOREPLACE path) too.
        let p2 = d.join("c2");
        FAIL_DIR_FSYNC.with(|f| f.set(true));
        install(&p2, &blob(3, 10), None).unwrap();
        assert_eq!(std::fs::read(&p2).unwrap(), blob(3, 10));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn fifo_or_directory_at_path_is_refused_without_blocking() {
        let d = tmpdir("fifo");
        let p = d.join("c");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        std::thread::spawn(move || {
            let r = read_locked(&p2, Some(Duration::from_millis(100))).map(|_| ());
            let mut s = BlobServer::new(&p2).unwrap();
            let r2 = s.acquire().map(|_| ());
            let _ = tx.send((r, r2));
        });
        let (r, r2) = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("opening a FIFO at the certificate path blocked");
        for r in [r, r2] {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        let e = read_locked(&p, None).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn server_follows_directory_swaps() {
        let top = tmpdir("dirswap");
        let d = top.join("certdir");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        let mut s = BlobServer::new(&p).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(1, 10)[..]);
        s.release();
        // Replace the certificate directory itself.
        let d2 = top.join("certdir.new");
        std::fs::create_dir_all(&d2).unwrap();
        install(&d2.join("c"), &blob(2, 10), None).unwrap();
        std::fs::rename(&d, top.join("certdir.old")).unwrap();
        std::fs::rename(&d2, &d).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(2, 10)[..]);
        s.release();
        // The watch now follows the new directory.
        install(&p, &blob(3, 10), None).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(3, 10)[..]);
        s.release();
        // An ancestor swap is invisible to the directory watch: the periodic
        // stat re-check catches it (immediately with a zero interval).
        let mut s = s.with_revalidate(Duration::ZERO);
        let top2 = tmpdir("dirswap2");
        let d3 = top2.join("certdir");
        std::fs::create_dir_all(&d3).unwrap();
        install(&d3.join("c"), &blob(4, 10), None).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(3, 10)[..]);
        s.release();
        std::fs::rename(
            &top,
            std::env::temp_dir().join(format!(
                "snp-certs-store-dirswap-old-{}",
                std::process::id()
            )),
        )
        .unwrap();
        std::fs::rename(&top2, &top).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(4, 10)[..]);
        s.release();
        std::fs::remove_dir_all(&top).unwrap();
        std::fs::remove_dir_all(std::env::temp_dir().join(format!(
            "snp-certs-store-dirswap-old-{}",
            std::process::id()
        )))
        .unwrap();
    }

    #[test]
    fn replacement_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir("mode");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        install(&p, &blob(2, 10), None).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temporaries_are_owner_only_and_first_install_ignores_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir("tmpmode");
        let p = d.join("c");
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let (d2, seen2) = (d.clone(), seen.clone());
        AFTER_TMP_LOCKED.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                for e in std::fs::read_dir(&d2).unwrap() {
                    let m = e.unwrap().metadata().unwrap().permissions().mode();
                    seen2.borrow_mut().push(m & 0o777);
                }
            }))
        });
        // SAFETY: umask(2) only sets the process's file mode mask.
        let old = unsafe { libc::umask(0) };
        let r = install(&p, &blob(1, 10), None);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        r.unwrap();
        assert_eq!(*seen.borrow(), [0o600], "the temporary while being written");
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, DEFAULT_MODE);
        install_perms(
            &p,
            &blob(2, 10),
            None,
            Perms {
                mode: Some(0o600),
                gid: None,
            },
        )
        .unwrap();
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn updaters_do_not_follow_a_symbolic_link_at_the_path() {
        let d = tmpdir("nofollow");
        let target = d.join("target");
        std::fs::write(&target, b"precious, not a blob").unwrap();
        let p = d.join("c");
        std::os::unix::fs::symlink(&target, &p).unwrap();
        let e = install_in_place(&p, &blob(1, 10), None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = install(&p, &blob(1, 10), None).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious, not a blob");
        assert!(std::fs::symlink_metadata(&p)
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let d = tmpdir("stale");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        std::fs::write(d.join(".c.snp-certs-tmp.999.0"), b"junk").unwrap();
        install(&p, &blob(2, 10), None).unwrap();
        assert!(!d.join(".c.snp-certs-tmp.999.0").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn cleanup_spares_a_concurrent_first_installers_temporary() {
        // A first install holds no lock on the (missing) file while it
        // writes its temporary; another updater's cleanup, under the lock of
        // a file created meanwhile, used to delete that temporary, and the
        // first installer's rename then failed (ENOENT).
        let d = tmpdir("tmprace");
        let p = d.join("c");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let p2 = p.clone();
        let first = std::thread::spawn(move || {
            AFTER_TMP_LOCKED.with(|h| {
                *h.borrow_mut() = Some(Box::new(move || {
                    ready_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }))
            });
            install(&p2, &blob(1, 10), None)
        });
        ready_rx.recv().unwrap();
        // The first installer's temporary exists, path does not.
        assert!(!p.exists());
        install(&p, &blob(2, 10), None).unwrap(); // creates the file
        install(&p, &blob(3, 10), None).unwrap(); // replaces it: cleans up
        let tmps = || {
            std::fs::read_dir(&d)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name() != "c")
                .count()
        };
        assert_eq!(tmps(), 1, "the live temporary was removed");
        go_tx.send(()).unwrap();
        first
            .join()
            .unwrap()
            .expect("the first installer must succeed");
        // It lost the race to create the file, so it replaced it instead.
        assert_eq!(std::fs::read(&p).unwrap(), blob(1, 10));
        assert_eq!(tmps(), 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn server_caches_and_sees_every_kind_of_change() {
        let d = tmpdir("server");
        let p = d.join("c");
        install(&p, &blob(1, 10), None).unwrap();
        let mut s = BlobServer::new(&p).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(1, 10)[..]);
        assert!(matches!(s.acquire(), Err(StoreError::AlreadyHeld)));
        s.release();
        for _ in 0..5 {
            assert_eq!(s.acquire().unwrap(), &blob(1, 10)[..]);
            s.release();
        }
        assert_eq!(s.reloads(), 1);
        // replacement by rename
        install(&p, &blob(2, 20), None).unwrap();
        assert_eq!(s.acquire().unwrap(), &blob(2, 20)[..]);
        s.release();
        assert_eq!(s.reloads(), 2);
        // in-place write under the exclusive lock (what a tool following only the
        // kernel documentation might do)
        {
            let mut w = open_locked(&p, LockKind::Exclusive, None).unwrap();
            w.file.set_len(0).unwrap();
            w.file.seek(SeekFrom::Start(0)).unwrap();
            w.file.write_all(&blob(4, 30)).unwrap();
        }
        assert_eq!(s.acquire().unwrap(), &blob(4, 30)[..]);
        s.release();
        // unrelated file in the directory does not force a reload
        std::fs::write(d.join("other"), b"x").unwrap();
        let before = s.reloads();
        assert_eq!(s.acquire().unwrap(), &blob(4, 30)[..]);
        s.release();
        assert_eq!(s.reloads(), before);
        // writer holds the lock: bounded wait then Busy
        let mut s = s.with_wait(Duration::from_millis(20));
        let w = open_locked(&p, LockKind::Exclusive, None).unwrap();
        let t = Instant::now();
        assert!(matches!(s.acquire(), Err(StoreError::Busy)));
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(w);
        assert_eq!(s.acquire().unwrap(), &blob(4, 30)[..]);
        s.release();
        // deleted file
        std::fs::remove_file(&p).unwrap();
        assert!(matches!(s.acquire(), Err(StoreError::Io { .. })));
        // invalid content
        std::fs::write(&p, b"garbage").unwrap();
        assert!(matches!(s.acquire(), Err(StoreError::Table(_))));
        assert!(!s.is_held());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
