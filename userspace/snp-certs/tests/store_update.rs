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
