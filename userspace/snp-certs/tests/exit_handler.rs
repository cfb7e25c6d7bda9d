//! End-to-end test of the KVM_EXIT_VMGEXIT handler on a simulated kvm_run and
//! guest memory, with a real certificate file and BlobServer: every ret path,
//! NOTIFY_DONE and the DONE exit, and hostile inputs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use snp_certs::kvm::{self, kvm_run};
use snp_certs::store::{self, BlobServer, LockKind};
use snp_certs::table::{self, Builder, CertKind};
use snp_certs::vmgexit::*;

const BASE: u64 = 0x10_0000;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("snp-certs-exit-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn blob(size: usize) -> Vec<u8> {
    // ARK+ASK+VCEK totalling `size` bytes
    let data = size - 4 * 24;
    let a = data / 3;
    Builder::new()
        .allow_oversize(true)
        .add_kind(CertKind::Ark, vec![0xa1; a])
        .add_kind(CertKind::Ask, vec![0xa2; a])
        .add_kind(CertKind::Vcek, vec![0xa3; data - 2 * a])
        .build()
        .unwrap()
}

/// What KVM writes before exiting.
fn pending_exit(gpa: u64, npages: u64) -> kvm_run {
    let mut run = kvm_run {
        exit_reason: kvm::KVM_EXIT_VMGEXIT,
        ..Default::default()
    };
    // SAFETY: writing integer fields of a zeroed plain-data union.
    unsafe {
        run.__bindgen_anon_1.vmgexit.type_ = kvm::KVM_USER_VMGEXIT_REQ_CERTS;
        let rc = &mut run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs;
        rc.data_gpa = gpa;
        rc.data_npages = npages;
        rc.flags = 0;
        rc.status = STATUS_PENDING;
        rc.ret = 0xdead_beef; // KVM leaves garbage: the handler must overwrite it
    }
    run
}

fn rc(run: &kvm_run) -> (u64, u64, u32, u8, u8) {
    // SAFETY: reading integer fields.
    let r = unsafe { run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs };
    (r.data_gpa, r.data_npages, r.ret, r.flags, r.status)
}

/// KVM's DONE exit after a NOTIFY_DONE answer.
fn to_done(run: &mut kvm_run) {
    // SAFETY: integer fields.
    unsafe {
        let rc = &mut run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs;
        rc.status = STATUS_DONE;
        rc.flags = 0;
    }
}

fn setup(tag: &str, size: usize) -> (PathBuf, PathBuf, Vec<u8>, ReqCertsHandler<BlobServer>) {
    let d = dir(tag);
    let p = d.join("certs");
    let b = blob(size);
    store::install(&p, &b, None).unwrap();
    let s = BlobServer::new(&p)
        .unwrap()
        .with_wait(Duration::from_millis(50));
    (d, p, b, ReqCertsHandler::new(s))
}

#[test]
fn served_with_notify_done_then_done_releases() {
    let (d, p, b, mut h) = setup("ok", 9000);
    let mut mem = FlatMemory::new(BASE, 4 * 4096);
    let mut run = pending_exit(BASE + 4096, 3);
    assert_eq!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Served {
            len: 9000,
            holding: true
        })
    );
    assert_eq!(
        rc(&run),
        (BASE + 4096, 3, RET_OK, FLAG_NOTIFY_DONE, STATUS_PENDING)
    );
    assert_eq!(mem.read(BASE + 4096, b.len()).unwrap(), b.as_slice());
    assert_eq!(
        table::parse(mem.read(BASE + 4096, b.len()).unwrap())
            .unwrap()
            .entries()
            .len(),
        3
    );
    // While the DONE exit is pending the shared lock excludes updaters.
    assert!(h.is_holding());
    assert!(matches!(
        store::open_locked(&p, LockKind::Exclusive, Some(Duration::from_millis(30))),
        Err(store::StoreError::Busy)
    ));
    to_done(&mut run);
    assert_eq!(h.handle(&mut run, &mut mem), Ok(Outcome::Released));
    assert!(!h.is_holding());
    store::open_locked(&p, LockKind::Exclusive, Some(Duration::from_secs(5))).unwrap();
    // A second DONE is refused and changes nothing.
    let before = rc(&run);
    assert_eq!(
        h.handle(&mut run, &mut mem),
        Err(ExitError::DoneWithoutLock)
    );
    assert_eq!(rc(&run), before);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn served_without_notify_done_releases_at_once() {
    let (d, p, b, h) = setup("nodone", 5000);
    let mut h = h.notify_done(false);
    let mut mem = FlatMemory::new(BASE, 2 * 4096);
    let mut run = pending_exit(BASE, 2);
    assert_eq!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Served {
            len: 5000,
            holding: false
        })
    );
    assert_eq!(rc(&run).2, RET_OK);
    assert_eq!(rc(&run).3, 0);
    assert_eq!(mem.read(BASE, b.len()).unwrap(), b.as_slice());
    store::open_locked(&p, LockKind::Exclusive, Some(Duration::ZERO)).unwrap();
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn invalid_len_reports_exact_pages() {
    // blob size -> exact pages (no off-by-one at multiples of 4096)
    for (size, need) in [
        (120usize, 1u64),
        (4096, 1),
        (4097, 2),
        (8192, 2),
        (8193, 3),
        (16384, 4),
    ] {
        let (d, p, _b, mut h) = setup(&format!("len{size}"), size);
        let mut mem = FlatMemory::new(BASE, 8 * 4096);
        let mut run = pending_exit(BASE, need - 1);
        assert_eq!(
            h.handle(&mut run, &mut mem),
            Ok(Outcome::TooSmall {
                needed: need,
                given: need - 1
            })
        );
        assert_eq!(rc(&run), (BASE, need, RET_INVALID_LEN, 0, STATUS_PENDING));
        assert!(mem.bytes.iter().all(|&x| x == 0), "nothing written");
        // lock not kept
        store::open_locked(&p, LockKind::Exclusive, Some(Duration::ZERO)).unwrap();
        // guest retries with the count it was told
        let mut run = pending_exit(BASE, need);
        assert!(matches!(
            h.handle(&mut run, &mut mem),
            Ok(Outcome::Served { .. })
        ));
        to_done(&mut run);
        assert_eq!(h.handle(&mut run, &mut mem), Ok(Outcome::Released));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn busy_within_bounded_wait() {
    let (d, p, _b, mut h) = setup("busy", 3000);
    let mut mem = FlatMemory::new(BASE, 4096);
    let w = store::open_locked(&p, LockKind::Exclusive, None).unwrap();
    let mut run = pending_exit(BASE, 1);
    let t = Instant::now();
    assert_eq!(h.handle(&mut run, &mut mem), Ok(Outcome::Busy));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(40) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(rc(&run).2, RET_BUSY);
    assert!(!h.is_holding());
    drop(w);
    let mut run = pending_exit(BASE, 1);
    // the helper thread of the timed-out wait may briefly hold the lock; the
    // bounded wait covers that
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Served { .. })
    ));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn generic_paths() {
    let (d, p, _b, mut h) = setup("generic", 3000);
    let mut mem = FlatMemory::new(BASE, 4096);
    // unaligned gpa
    let mut run = pending_exit(BASE + 8, 1);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Failed(_))
    ));
    assert_eq!(rc(&run).2, RET_GENERIC);
    // gpa + len overflows u64
    let mut run = pending_exit(u64::MAX - 4095, u64::MAX);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Failed(_))
    ));
    assert_eq!(rc(&run).2, RET_GENERIC);
    // gpa not backed by guest memory, huge npages
    let mut run = pending_exit(BASE + 0x100_0000, u64::MAX);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Failed(_))
    ));
    assert_eq!(rc(&run).2, RET_GENERIC);
    assert!(!h.is_holding());
    // huge npages but valid memory: served
    let mut run = pending_exit(BASE, u64::MAX);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Served { .. })
    ));
    to_done(&mut run);
    assert_eq!(h.handle(&mut run, &mut mem), Ok(Outcome::Released));
    // invalid blob on disk
    std::fs::write(&p, b"not a table").unwrap();
    let mut run = pending_exit(BASE, 1);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Failed(_))
    ));
    assert_eq!(rc(&run).2, RET_GENERIC);
    // missing file
    std::fs::remove_file(&p).unwrap();
    let mut run = pending_exit(BASE, 1);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Failed(_))
    ));
    assert_eq!(rc(&run).2, RET_GENERIC);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn hostile_exits() {
    let (d, p, _b, mut h) = setup("hostile", 3000);
    let mut mem = FlatMemory::new(BASE, 4096);
    // not our exit: untouched
    let mut run = pending_exit(BASE, 1);
    run.exit_reason = 2;
    let before = rc(&run);
    assert_eq!(h.handle(&mut run, &mut mem), Err(ExitError::NotVmgexit(2)));
    assert_eq!(rc(&run), before);
    // unknown type: untouched
    let mut run = pending_exit(BASE, 1);
    run.__bindgen_anon_1.vmgexit.type_ = 7; // writing a union field is safe
    let before = rc(&run);
    assert_eq!(h.handle(&mut run, &mut mem), Err(ExitError::UnknownType(7)));
    assert_eq!(rc(&run), before);
    // bad status: GENERIC, no lock taken
    for s in [2u8, 0x80, 0xff] {
        let mut run = pending_exit(BASE, 1);
        run.__bindgen_anon_1
            .vmgexit
            .__bindgen_anon_1
            .req_certs
            .status = s;
        assert_eq!(h.handle(&mut run, &mut mem), Err(ExitError::BadStatus(s)));
        assert_eq!(rc(&run).2, RET_GENERIC);
        assert!(!h.is_holding());
    }
    // DONE without a held lock
    let mut run = pending_exit(BASE, 1);
    to_done(&mut run);
    assert_eq!(
        h.handle(&mut run, &mut mem),
        Err(ExitError::DoneWithoutLock)
    );
    // flags set by a buggy KVM on the PENDING exit are cleared
    let mut run = pending_exit(BASE, 1);
    run.__bindgen_anon_1
        .vmgexit
        .__bindgen_anon_1
        .req_certs
        .flags = 0xfe;
    let h2 = &mut h;
    let out = h2.handle(&mut run, &mut mem);
    assert_eq!(
        out,
        Ok(Outcome::Served {
            len: 3000,
            holding: true
        })
    );
    assert_eq!(rc(&run).3, FLAG_NOTIFY_DONE);
    // lost DONE: the next PENDING releases the stale lock first
    let mut run = pending_exit(BASE, 1);
    assert!(matches!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Served { .. })
    ));
    assert_eq!(h.stale_releases(), 1);
    to_done(&mut run);
    assert_eq!(h.handle(&mut run, &mut mem), Ok(Outcome::Released));
    store::open_locked(&p, LockKind::Exclusive, Some(Duration::ZERO)).unwrap();
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn update_between_requests_is_served() {
    let (d, p, _b, mut h) = setup("update", 3000);
    let mut mem = FlatMemory::new(BASE, 2 * 4096);
    let mut run = pending_exit(BASE, 2);
    h.handle(&mut run, &mut mem).unwrap();
    to_done(&mut run);
    h.handle(&mut run, &mut mem).unwrap();
    let nb = blob(6000);
    store::install(&p, &nb, Some(Duration::from_secs(5))).unwrap();
    let mut run = pending_exit(BASE, 2);
    assert_eq!(
        h.handle(&mut run, &mut mem),
        Ok(Outcome::Served {
            len: 6000,
            holding: true
        })
    );
    assert_eq!(mem.read(BASE, 6000).unwrap(), nb.as_slice());
    std::fs::remove_dir_all(d).unwrap();
}
