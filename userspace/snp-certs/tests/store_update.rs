//! Updates of the certificate file: `install_in_place` (for VMMs that follow
//! only the lock-on-path scheme, without the inode re-check), and the
//! temporaries of concurrent updaters.

mod support;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use snp_certs::store::{self, BlobServer, LockKind, StoreError};
use support::{blob, tmpdir};

/// A VMM that follows only "take a shared OFD lock on the path" and keeps
/// its descriptor open between requests, without re-checking the inode.
struct LockOnPathVmm {
    file: File,
}

impl LockOnPathVmm {
    fn open(path: &Path) -> Self {
        LockOnPathVmm {
            file: File::open(path).unwrap(),
        }
    }
    fn serve(&mut self) -> Vec<u8> {
        store::lock_wait(self.file.as_fd(), LockKind::Shared).unwrap();
        let mut b = Vec::new();
        self.file.seek(SeekFrom::Start(0)).unwrap();
        self.file.read_to_end(&mut b).unwrap();
        store::unlock(self.file.as_fd()).unwrap();
        b
    }
}

#[test]
fn in_place_keeps_the_inode_and_reaches_lock_on_path_vmms() {
    let d = tmpdir("inplace");
    let p = d.join("c");
    store::install(&p, &blob(1, 40), None).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let ino = std::fs::metadata(&p).unwrap().ino();
    let mut vmm = LockOnPathVmm::open(&p);
    let mut server = BlobServer::new(&p).unwrap();
    assert_eq!(vmm.serve(), blob(1, 40));
    assert_eq!(server.acquire().unwrap(), &blob(1, 40)[..]);
    server.release();

    store::install_in_place(&p, &blob(2, 60), None).unwrap();
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.ino(), ino, "in place: same inode");
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert_eq!(std::fs::read(&p).unwrap(), blob(2, 60));
    assert_eq!(vmm.serve(), blob(2, 60));
    assert_eq!(server.acquire().unwrap(), &blob(2, 60)[..]);
    server.release();

    // Shorter than before: the old tail is cut off.
    store::install_in_place(&p, &blob(3, 10), None).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), blob(3, 10));
    assert_eq!(vmm.serve(), blob(3, 10));

    // Why the mode exists: after a replacement by rename, a VMM that does
    // not re-check the inode keeps serving the old file.
    store::install(&p, &blob(4, 10), None).unwrap();
    assert_eq!(vmm.serve(), blob(3, 10));
    assert_eq!(server.acquire().unwrap(), &blob(4, 10)[..]);
    server.release();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn in_place_waits_for_the_lock_and_refuses_bad_input() {
    let d = tmpdir("inplace-lock");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    let (reader, _) = store::read_locked(&p, None).unwrap();
    assert!(matches!(
        store::install_in_place(&p, &blob(2, 10), Some(Duration::from_millis(50))),
        Err(StoreError::Busy)
    ));
    assert_eq!(std::fs::read(&p).unwrap(), blob(1, 10));
    drop(reader);
    // The timed-out waiter may hold the lock for a moment: allow a wait.
    store::install_in_place(&p, &blob(2, 10), Some(Duration::from_secs(5))).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), blob(2, 10));

    // Not a certificate table: refused before the file is touched.
    assert!(matches!(
        store::install_in_place(&p, b"garbage", None),
        Err(StoreError::Table(_))
    ));
    assert_eq!(std::fs::read(&p).unwrap(), blob(2, 10));
    // Missing file: an error, nothing created.
    let missing = d.join("missing");
    match store::install_in_place(&missing, &blob(3, 10), None) {
        Err(StoreError::Io { err, .. }) => assert_eq!(err.kind(), std::io::ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert!(!missing.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn locking_readers_never_see_a_torn_in_place_rewrite() {
    let d = tmpdir("inplace-torn");
    let p = d.join("c");
    let (a, b) = (blob(0xaa, 3000), blob(0xbb, 100));
    store::install(&p, &a, None).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                sc.spawn(|| {
                    let mut vmm = LockOnPathVmm::open(&p);
                    let mut n = 0u32;
                    while !stop.load(Ordering::Relaxed) {
                        let got = vmm.serve();
                        assert!(got == a || got == b, "torn read of {} bytes", got.len());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for i in 0..200 {
            let next = if i % 2 == 0 { &b } else { &a };
            store::install_in_place(&p, next, None).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_live_updaters_temporary_survives_another_install() {
    // A live updater holds the exclusive lock on its temporary; one that died
    // does not. Before: every temporary was removed.
    let d = tmpdir("tmp-live");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    let live = d.join(".c.snp-certs-tmp.1.0.0");
    let dead = d.join(".c.snp-certs-tmp.2.0.0");
    std::fs::write(&live, b"half-written").unwrap();
    std::fs::write(&dead, b"half-written").unwrap();
    let live_lock = store::open_locked(&live, LockKind::Exclusive, None).unwrap();
    store::install(&p, &blob(2, 10), None).unwrap();
    assert!(live.exists(), "a live updater's temporary was removed");
    assert!(!dead.exists(), "a dead updater's temporary was kept");
    drop(live_lock);
    store::install(&p, &blob(3, 10), None).unwrap();
    assert!(!live.exists(), "its updater is gone now: stale");
    assert_eq!(std::fs::read(&p).unwrap(), blob(3, 10));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_locked_file_names_its_inode_and_reads_its_bytes() {
    // LockedFile::id is "(device, inode) of the locked file"; read_all "reads
    // the whole file from offset 0" (refresh compares the served blob with it).
    let d = tmpdir("lockedfile");
    let p = d.join("c");
    store::install(&p, &blob(5, 300), None).unwrap();
    let m = std::fs::metadata(&p).unwrap();
    for kind in [LockKind::Shared, LockKind::Exclusive] {
        let mut lf = store::open_locked(&p, kind, None).unwrap();
        assert_eq!(lf.kind(), kind);
        assert_eq!(lf.id(), (m.dev(), m.ino()));
        assert_eq!(lf.read_all().unwrap(), blob(5, 300));
        // From offset 0 again, whatever was read before.
        assert_eq!(lf.read_all().unwrap(), blob(5, 300));
    }
    // Another file: another inode, its own bytes.
    let q = d.join("other");
    store::install(&q, &blob(6, 20), None).unwrap();
    let mut lf = store::open_locked(&q, LockKind::Shared, None).unwrap();
    let mq = std::fs::metadata(&q).unwrap();
    assert_eq!(lf.id(), (mq.dev(), mq.ino()));
    assert_ne!(lf.id(), (m.dev(), m.ino()));
    assert_eq!(lf.read_all().unwrap(), blob(6, 20));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn readers_take_a_blob_of_exactly_the_size_limit_and_no_more() {
    // MAX_BLOB_FILE is the largest blob a reader accepts from disk: a file of
    // exactly that size is read, one byte more is TooLarge, for every reader.
    let max = usize::try_from(store::MAX_BLOB_FILE).unwrap();
    assert_eq!(max, 1 << 20);
    let d = tmpdir("sizelimit");
    let p = d.join("c");
    let exact = snp_certs::table::Builder::new()
        .allow_oversize(true)
        .add_kind(snp_certs::table::CertKind::Vcek, vec![0x5a; max - 48])
        .build()
        .unwrap();
    assert_eq!(exact.len(), max);
    store::install(&p, &exact, None).unwrap();
    let (mut lf, got) = store::read_locked(&p, None).unwrap();
    assert_eq!(got, exact);
    assert_eq!(lf.read_all().unwrap(), exact);
    drop(lf);
    let mut s = BlobServer::new(&p).unwrap();
    assert_eq!(s.acquire().unwrap(), &exact[..]);
    s.release();
    // One byte of padding more (trailing bytes are allowed in a table).
    let mut over = exact.clone();
    over.push(0);
    store::install(&p, &over, None).unwrap();
    let over_len = store::MAX_BLOB_FILE + 1;
    assert!(matches!(
        store::read_locked(&p, None),
        Err(StoreError::TooLarge(n)) if n == over_len
    ));
    let mut lf = store::open_locked(&p, LockKind::Shared, None).unwrap();
    assert!(matches!(lf.read_all(), Err(StoreError::TooLarge(n)) if n == over_len));
    drop(lf);
    assert!(matches!(s.acquire(), Err(StoreError::TooLarge(n)) if n == over_len));
    assert!(!s.is_held());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn lock_descriptors_are_close_on_exec() {
    // `hold -- CMD` runs a command while it holds the lock: a descriptor
    // inherited by CMD (or by anything a VMM execs) would keep the OFD lock
    // alive after its owner let go.
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let d = tmpdir("cloexec");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    for kind in [LockKind::Shared, LockKind::Exclusive] {
        let lf = store::open_locked(&p, kind, None).unwrap();
        let fl = FdFlag::from_bits_truncate(fcntl(lf.file().as_fd(), FcntlArg::F_GETFD).unwrap());
        assert!(fl.contains(FdFlag::FD_CLOEXEC), "{kind:?} lock: {fl:?}");
    }
    let held = store::lock_for_update(&p, None).unwrap().unwrap();
    let new = store::replace_locked(&p, Some(&held), &blob(2, 10)).unwrap();
    let fl = FdFlag::from_bits_truncate(fcntl(new.file().as_fd(), FcntlArg::F_GETFD).unwrap());
    assert!(fl.contains(FdFlag::FD_CLOEXEC), "new inode's lock: {fl:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_symbolic_link_is_refused_with_the_reason() {
    // Updaters never follow a symbolic link at PATH (README: "a symbolic link
    // at PATH is refused"); the error says so rather than passing on ELOOP's
    // "too many levels of symbolic links".
    let d = tmpdir("symlink-reason");
    let target = d.join("target");
    store::install(&target, &blob(1, 10), None).unwrap();
    let p = d.join("c");
    std::os::unix::fs::symlink(&target, &p).unwrap();
    for e in [
        store::install(&p, &blob(2, 10), None).unwrap_err(),
        store::lock_for_update(&p, None).unwrap_err(),
    ] {
        match &e {
            StoreError::Io { err, .. } => {
                assert_ne!(err.raw_os_error(), Some(nix::libc::ELOOP), "{e}");
                assert!(e.to_string().contains("do not follow"), "{e}");
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(std::fs::read(&target).unwrap(), blob(1, 10));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_temporary_that_cannot_be_created_is_an_io_error_not_unstable() {
    // The temporary's name is the file's name plus a prefix and suffix: a
    // 250-byte name is a valid path whose temporary cannot be created
    // (ENAMETOOLONG). That is an I/O error at once, not "the path kept being
    // replaced" (Unstable) after retries.
    let d = tmpdir("tmpname");
    let p = d.join("n".repeat(250));
    for old in [None, Some(())] {
        if old.is_some() {
            std::fs::write(&p, blob(1, 10)).unwrap();
        }
        match store::install(&p, &blob(2, 10), None) {
            Err(StoreError::Io { op, err, .. }) => {
                assert_eq!(
                    err.raw_os_error(),
                    Some(nix::libc::ENAMETOOLONG),
                    "{op}: {err}"
                )
            }
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(std::fs::read(&p).unwrap(), blob(1, 10));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn cleanup_removes_only_regular_temporaries() {
    // Temporaries are regular files an updater created itself (O_EXCL); a
    // symbolic link that merely has a temporary's name is not one of them:
    // the clean-up neither follows it nor removes it.
    let d = tmpdir("tmp-symlink");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    let elsewhere = d.join("elsewhere");
    std::fs::write(&elsewhere, b"not a temporary").unwrap();
    let link = d.join(".c.snp-certs-tmp.3.0.0");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let dead = d.join(".c.snp-certs-tmp.4.0.0");
    std::fs::write(&dead, b"half-written").unwrap();
    store::install(&p, &blob(2, 10), None).unwrap();
    assert!(!dead.exists(), "a dead updater's temporary was kept");
    assert!(
        std::fs::symlink_metadata(&link).is_ok(),
        "a symbolic link named like a temporary was removed"
    );
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not a temporary");
    assert_eq!(std::fs::read(&p).unwrap(), blob(2, 10));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn replace_locked_needs_the_exclusive_lock_on_the_current_inode() {
    // `old` "must be the exclusive lock on the inode `path` names": a shared
    // lock, or the exclusive lock on another file, is refused (Unstable) and
    // nothing is replaced.
    let d = tmpdir("needlock");
    let p = d.join("c");
    let q = d.join("other");
    store::install(&p, &blob(1, 10), None).unwrap();
    store::install(&q, &blob(9, 10), None).unwrap();
    let shared = store::open_locked(&p, LockKind::Shared, None).unwrap();
    assert!(matches!(
        store::replace_locked(&p, Some(&shared), &blob(2, 10)),
        Err(StoreError::Unstable(_))
    ));
    drop(shared);
    let other = store::open_locked(&q, LockKind::Exclusive, None).unwrap();
    assert!(matches!(
        store::replace_locked(&p, Some(&other), &blob(2, 10)),
        Err(StoreError::Unstable(_))
    ));
    drop(other);
    assert_eq!(std::fs::read(&p).unwrap(), blob(1, 10));
    let own = store::lock_for_update(&p, None).unwrap().unwrap();
    drop(store::replace_locked(&p, Some(&own), &blob(2, 10)).unwrap());
    assert_eq!(std::fs::read(&p).unwrap(), blob(2, 10));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_first_install_gets_the_group_asked_for() {
    // Perms::gid: "None: the replaced file's, or the process's for a first
    // install"; a given group is set on the first install too.
    // Only root may give a file any group.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: needs root to set an arbitrary group");
        return;
    }
    let want = 4321;
    let d = tmpdir("firstgroup");
    let p = d.join("c");
    let perms = store::Perms {
        mode: None,
        gid: Some(want),
    };
    store::install_perms(&p, &blob(1, 10), None, perms).unwrap();
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!(m.gid(), want);
    assert_eq!(m.permissions().mode() & 0o7777, store::DEFAULT_MODE);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_server_says_whether_it_holds_the_lock() {
    let d = tmpdir("isheld");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    let mut s = BlobServer::new(&p).unwrap();
    assert!(!s.is_held());
    assert_eq!(s.acquire().unwrap(), &blob(1, 10)[..]);
    assert!(s.is_held());
    // While it holds the shared lock, an updater cannot have the exclusive one.
    assert!(matches!(
        store::lock_for_update(&p, Some(Duration::ZERO)),
        Err(StoreError::Busy)
    ));
    s.release();
    assert!(!s.is_held());
    drop(store::lock_for_update(&p, Some(Duration::ZERO)).unwrap());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_stat_backstop_does_not_reload_an_unchanged_file() {
    // With a zero interval the server compares stat(path) with its inode on
    // every request (README: the backstop for what a directory watch cannot
    // see); while the path still names that inode it serves the cached blob:
    // one load in all.
    let d = tmpdir("backstop");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    let mut s = BlobServer::new(&p).unwrap().with_revalidate(Duration::ZERO);
    for _ in 0..5 {
        assert_eq!(s.acquire().unwrap(), &blob(1, 10)[..]);
        s.release();
    }
    assert_eq!(s.reloads(), 1, "reloaded an unchanged file");
    std::fs::remove_dir_all(&d).unwrap();
}
