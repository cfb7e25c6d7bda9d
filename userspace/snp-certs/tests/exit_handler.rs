//! End-to-end tests of the KVM_EXIT_VMGEXIT handler: a real certificate file
//! and `BlobServer`, a simulated KVM that follows the series' api.rst
//! (`common::FakeKvm`), and guest memory that records the handler's writes.
//! Expected values are the contract's, written out as literals.
//!
//! The lock rule is checked on every path of a `KVM_RUN` return, by looking at
//! the real file lock: whether an exclusive lock (an updater) can be had.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use snp_certs::kvm::kvm_run;
use snp_certs::store::{self, BlobServer, LockKind, StoreError};
use snp_certs::vmgexit::*;
use support::{chain_blob, tmpdir};

const BASE: u64 = 0x10_0000;
/// Guest memory is filled with this, so that any write shows.
const FILL: u8 = 0xee;

type Handler = ReqCertsHandler<BlobServer>;
/// A host fault: its name and how to make it.
type Fault = (&'static str, fn(&Path));

fn setup(tag: &str, size: usize) -> (PathBuf, PathBuf, Vec<u8>, Handler) {
    let d = tmpdir(tag);
    let p = d.join("certs");
    let b = chain_blob(size);
    store::install(&p, &b, None).unwrap();
    let s = BlobServer::new(&p)
        .unwrap()
        .with_wait(Duration::from_millis(50));
    (d, p, b, ReqCertsHandler::new(s))
}

fn kvm(pages: usize) -> FakeKvm {
    FakeKvm::new(RecordingMemory::new(BASE, pages * 4096, FILL))
}

/// Whether a VMM holds the shared lock: an updater cannot get the exclusive one.
fn lock_held(path: &Path) -> bool {
    match store::open_locked(path, LockKind::Exclusive, Some(Duration::ZERO)) {
        Err(StoreError::Busy) => true,
        Ok(_) => false,
        Err(e) => panic!("probing the lock: {e}"),
    }
}

/// (data_gpa, data_npages, ret, flags, status)
fn rc(k: &FakeKvm) -> (u64, u64, u32, u8, u8) {
    let f = fields(&k.run);
    (f.gpa, f.npages, f.ret, f.flags, f.status)
}

fn after(h: &mut Handler, k: &mut FakeKvm, r: Result<(), Errno>) -> Result<Step, ExitError> {
    k.mem.writes.clear();
    h.after_run(&mut k.run, r, &mut k.mem)
}

/// The next KVM_RUN, with the VMM's lock as it is now.
fn run(k: &mut FakeKvm, p: &Path, inject: Inject, next: Guest) -> Result<(), Errno> {
    let held = lock_held(p);
    k.kvm_run(inject, held, next)
}

fn certificates(len: usize, notify_done: bool) -> Result<Step, ExitError> {
    Ok(Step::Answered(Answer::Certificates { len, notify_done }))
}

fn empty_table_at(k: &FakeKvm, gpa: u64) -> bool {
    k.mem.inner.read(gpa, 24) == Some(&[0u8; 24][..])
}

#[test]
fn constants_are_the_contracts() {
    assert_eq!(snp_certs::kvm::KVM_EXIT_VMGEXIT, EXIT_VMGEXIT);
    assert_eq!(snp_certs::kvm::KVM_USER_VMGEXIT_REQ_CERTS, TYPE_REQ_CERTS);
    assert_eq!(RET_OK, 0);
    assert_eq!(RET_INVALID_LEN, 1);
    assert_eq!(RET_BUSY, 2);
    assert_eq!(RET_GENERIC, 0x8000_0000);
    assert_eq!(FLAG_NOTIFY_DONE, 1);
    assert_eq!((STATUS_PENDING, STATUS_DONE), (0, 1));
    assert_eq!(snp_certs::kvm::KVM_CAP_EXIT_VMGEXIT, CAP_EXIT_VMGEXIT);
    let cap = enable_cap_args();
    assert_eq!(cap.cap, 1024);
    assert_eq!(cap.args, [1 << 1, 0, 0, 0]);
    assert_eq!(cap.flags, 0);
    // The lock rule's test: "if 'status' reads DONE, or KVM_RUN returned 0
    // with an 'exit_reason' other than KVM_EXIT_VMGEXIT [...], KVM has
    // finished with the request [...]; otherwise the request is still
    // pending". (exit_reason, type, status, KVM_RUN result) -> pending
    let mut run = kvm_run::default();
    let ok = Ok(());
    let eintr = Err(Errno::EINTR);
    let einval = Err(Errno::EINVAL);
    for (exit_reason, ty, status, result, pending) in [
        (40, 1, 0, ok, true),     // a new request
        (40, 1, 1, ok, false),    // the DONE exit
        (5, 1, 0, ok, false),     // another exit: the guest ran again
        (10, 1, 0, ok, false),    // KVM_EXIT_INTR, returned 0
        (40, 1, 0, einval, true), // failed before acting, or refused
        (40, 1, 0, eintr, true),
        (10, 1, 0, eintr, true), // a signal while the vCPU waits for INIT
        (5, 1, 0, eintr, true),  // status alone decides on a failure
        (40, 2, 0, eintr, true),
        (40, 1, 1, einval, false), // acted, then failed
        (40, 1, 1, eintr, false),  // immediate_exit after acting
        (10, 1, 1, eintr, false),  // a signal after acting
    ] {
        let f = Fields {
            exit_reason,
            ty,
            gpa: 0,
            npages: 0,
            ret: 0,
            flags: 0,
            status,
        };
        set_fields(&mut run, f);
        assert_eq!(request_pending(&run, result), pending, "{f:?} {result:?}");
    }
}

#[test]
fn notify_done_keeps_the_lock_until_the_done_exit() {
    let (d, p, b, mut h) = setup("notify", 9000);
    let mut k = kvm(4);
    let r = k.request(BASE + 4096, 3);
    assert_eq!(r, Ok(()));
    assert_eq!(after(&mut h, &mut k, r), certificates(9000, true));
    assert_eq!(rc(&k), (BASE + 4096, 3, 0, 1, 0));
    assert_eq!(k.mem.inner.read(BASE + 4096, 9000), Some(b.as_slice()));
    assert!(k.mem.inner.bytes[..4096].iter().all(|&x| x == FILL));
    assert!(k.mem.inner.bytes[4096 + 9000..].iter().all(|&x| x == FILL));
    assert!(h.is_holding() && lock_held(&p));

    // KVM acts on the answer under the lock, then makes the DONE exit.
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(r, Ok(()));
    assert_eq!(
        k.firmware_calls,
        [FirmwareCall {
            lock_held: true,
            certs: true
        }]
    );
    assert_eq!(
        k.guest_results,
        [GuestResult {
            vmm_error: 0,
            rbx: 3
        }]
    );
    assert_eq!(fields(&k.run).exit_reason, 40);
    assert_eq!(rc(&k), (BASE + 4096, 3, 0, 0, 1));
    // The DONE exit: nothing written, lock released, resume.
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
    assert_eq!(rc(&k), (BASE + 4096, 3, 0, 0, 1));
    assert!(k.mem.writes.is_empty());
    assert!(!h.is_holding() && !lock_held(&p));
    // The guest runs on.
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    assert_eq!(k.refused, 0);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn without_notify_done_the_lock_is_kept_until_the_next_return() {
    let (d, p, b, h) = setup("nonotify", 5000);
    let mut h = h.notify_done(false);
    let mut k = kvm(2);
    let r = k.request(BASE, 2);
    assert_eq!(after(&mut h, &mut k, r), certificates(5000, false));
    assert_eq!(rc(&k), (BASE, 2, 0, 0, 0));
    assert_eq!(k.mem.inner.read(BASE, 5000), Some(b.as_slice()));
    assert!(h.is_holding() && lock_held(&p));
    // KVM acts, the guest runs, the next exit is another one.
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(
        k.firmware_calls,
        [FirmwareCall {
            lock_held: true,
            certs: true
        }]
    );
    assert_eq!(fields(&k.run).exit_reason, 5);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    assert!(!h.is_holding() && !lock_held(&p));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn failed_run_before_acting_keeps_the_lock() {
    for (notify, errno) in [
        (true, Errno::EINTR),
        (false, Errno::EINTR),
        (true, Errno::EINVAL), // e.g. an invalid kvm_dirty_regs
        (true, Errno::EFAULT),
    ] {
        let (d, p, _b, h) = setup(&format!("before-{notify}-{errno:?}"), 3000);
        let mut h = h.notify_done(notify);
        let mut k = kvm(1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
        let answer = rc(&k);
        // KVM_RUN fails before acting: the request stays pending, twice.
        for _ in 0..2 {
            let r = run(&mut k, &p, Inject::FailBefore(errno), Guest::Halt);
            assert_eq!(r, Err(errno));
            assert_eq!(after(&mut h, &mut k, r), Ok(Step::StillPending { errno }));
            assert_eq!(rc(&k), answer, "the answer stays as it was");
            assert!(k.mem.writes.is_empty());
            assert!(h.is_holding() && lock_held(&p));
            assert!(k.firmware_calls.is_empty());
        }
        // The next KVM_RUN acts on the answer, under the lock.
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }]
        );
        let want = if notify { Step::Done } else { Step::NotOurs };
        assert_eq!(after(&mut h, &mut k, r), Ok(want));
        assert!(!h.is_holding() && !lock_held(&p));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn signal_while_waiting_for_init_keeps_the_lock() {
    // The path the review found: userspace set the vCPU's MP state, KVM_RUN
    // waits for INIT, a signal ends the wait. KVM_RUN fails with EINTR before
    // KVM acted on the answer, with exit_reason KVM_EXIT_INTR and status
    // still PENDING: the request is still pending, the lock is kept.
    for notify in [true, false] {
        let (d, p, b, h) = setup(&format!("initwait-{notify}"), 3000);
        let mut h = h.notify_done(notify);
        let mut k = kvm(1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
        let answer = rc(&k);
        assert_eq!(answer, (BASE, 1, 0, u8::from(notify), 0));
        for _ in 0..2 {
            let r = run(&mut k, &p, Inject::InitWaitSignal, Guest::Halt);
            assert_eq!(r, Err(Errno::EINTR));
            assert_eq!(fields(&k.run).exit_reason, 10, "KVM_EXIT_INTR");
            assert_eq!(rc(&k), answer, "status PENDING, the answer as it was");
            assert_eq!(
                after(&mut h, &mut k, r),
                Ok(Step::StillPending {
                    errno: Errno::EINTR
                })
            );
            assert_eq!(fields(&k.run).exit_reason, 10, "nothing written");
            assert_eq!(rc(&k), answer, "nothing written");
            assert!(k.mem.writes.is_empty());
            assert!(h.is_holding() && lock_held(&p));
            assert!(h.has_request());
            assert!(k.firmware_calls.is_empty() && k.guest_results.is_empty());
        }
        assert_eq!(k.mem.inner.read(BASE, 3000), Some(b.as_slice()));
        // The next KVM_RUN acts on the answer, under the lock, and returns 0:
        // KVM has finished with the request, the lock is released.
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(r, Ok(()));
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }]
        );
        assert_eq!(
            k.guest_results,
            [GuestResult {
                vmm_error: 0,
                rbx: 1
            }]
        );
        assert_eq!(k.refused, 0);
        let want = if notify {
            assert_eq!(fields(&k.run).exit_reason, 40);
            assert_eq!(rc(&k), (BASE, 1, 0, 0, 1));
            Step::Done
        } else {
            assert_eq!(fields(&k.run).exit_reason, 5);
            Step::NotOurs
        };
        let before = fields(&k.run);
        assert_eq!(after(&mut h, &mut k, r), Ok(want));
        assert_eq!(fields(&k.run), before, "nothing written");
        assert!(k.mem.writes.is_empty());
        assert!(!h.is_holding() && !lock_held(&p));
        assert!(!h.has_request());
        std::fs::remove_dir_all(d).unwrap();
    }

    // A signal after KVM acted: KVM_EXIT_INTR again, but status DONE, so KVM
    // has finished with the request and the lock is released.
    let (d, p, _b, h) = setup("initwait-after", 3000);
    let mut h = h.notify_done(false);
    let mut k = kvm(1);
    let r = k.request(BASE, 1);
    assert_eq!(after(&mut h, &mut k, r), certificates(3000, false));
    let r = run(&mut k, &p, Inject::FailAfter(Errno::EINTR), Guest::Halt);
    k.run.exit_reason = 10; // KVM_EXIT_INTR, from the signal
    assert_eq!(rc(&k), (BASE, 1, 0, 0, 1));
    assert_eq!(
        after(&mut h, &mut k, r),
        Ok(Step::RunFailed {
            errno: Errno::EINTR
        })
    );
    assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());

    // No request answered: the INIT wait's EINTR leaves nothing pending,
    // whatever the rest of kvm_run holds (status PENDING here).
    let mut k = kvm(1);
    let r = run(&mut k, &p, Inject::InitWaitSignal, Guest::Halt);
    assert_eq!(fields(&k.run).status, 0);
    assert_eq!(
        after(&mut h, &mut k, r),
        Ok(Step::RunFailed {
            errno: Errno::EINTR
        })
    );
    assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn immediate_exit_does_not_postpone_the_answer() {
    // "KVM acts on the answer at the start of the next KVM_RUN, before it
    // enters the guest and before it checks 'immediate_exit'".
    for notify in [true, false] {
        let (d, p, _b, h) = setup(&format!("immediate-{notify}"), 3000);
        let mut h = h.notify_done(notify);
        let mut k = kvm(1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
        let r = run(&mut k, &p, Inject::ImmediateExit, Guest::Halt);
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }]
        );
        assert_eq!(rc(&k).4, 1, "status DONE");
        let want = if notify {
            assert_eq!(r, Ok(())); // the DONE exit
            Step::Done
        } else {
            assert_eq!(r, Err(Errno::EINTR));
            Step::RunFailed {
                errno: Errno::EINTR,
            }
        };
        assert_eq!(after(&mut h, &mut k, r), Ok(want));
        assert!(k.mem.writes.is_empty());
        assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn refused_answer_stays_pending_and_is_read_again() {
    let (d, p, _b, mut h) = setup("refused", 3000);
    let mut k = kvm(1);
    let r = k.request(BASE, 1);
    assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
    let good = fields(&k.run);
    // Answers outside the contract (written by something else than the
    // handler) are refused with -EINVAL and change nothing.
    for (ret, flags, npages) in [
        (3, 1, 1),           // ret outside the closed set
        (0, 2, 1),           // unknown flag
        (0, 0x81, 1),        // unknown flag next to NOTIFY_DONE
        (1, 0, 1),           // INVALID_LEN, data_npages not larger
        (0x8000_0001, 0, 1), // GENERIC with a low bit
    ] {
        let mut bad = good;
        (bad.ret, bad.flags, bad.npages) = (ret, flags, npages);
        set_fields(&mut k.run, bad);
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(r, Err(Errno::EINVAL));
        assert_eq!(
            after(&mut h, &mut k, r),
            Ok(Step::StillPending {
                errno: Errno::EINVAL
            })
        );
        assert_eq!(
            fields(&k.run),
            bad,
            "after_run leaves a pending answer alone"
        );
        assert!(h.is_holding() && lock_held(&p));
    }
    assert_eq!(k.refused, 5);
    assert!(k.firmware_calls.is_empty());
    // The next KVM_RUN reads the answer again.
    set_fields(&mut k.run, good);
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(r, Ok(()));
    assert_eq!(k.refused, 5);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
    assert!(!lock_held(&p));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn failed_run_after_acting_releases() {
    for notify in [true, false] {
        let (d, p, _b, h) = setup(&format!("after-{notify}"), 3000);
        let mut h = h.notify_done(notify);
        let mut k = kvm(1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
        let r = run(&mut k, &p, Inject::FailAfter(Errno::EFAULT), Guest::Halt);
        assert_eq!(r, Err(Errno::EFAULT));
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }]
        );
        // status DONE although KVM_RUN failed: KVM has finished with it.
        assert_eq!(rc(&k).4, 1);
        assert_eq!(
            after(&mut h, &mut k, r),
            Ok(Step::RunFailed {
                errno: Errno::EFAULT
            })
        );
        assert!(k.mem.writes.is_empty());
        assert!(!h.is_holding() && !lock_held(&p));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn new_request_is_answered_under_a_fresh_lock() {
    for notify in [false, true] {
        let (d, p, b, h) = setup(&format!("new-{notify}"), 3000);
        let mut h = h.notify_done(notify);
        let mut k = kvm(2);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
        let next = Guest::Request {
            gpa: BASE + 4096,
            npages: 1,
        };
        let mut r = run(&mut k, &p, Inject::None, next);
        if notify {
            assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
            assert!(!lock_held(&p));
            r = run(&mut k, &p, Inject::None, next);
        }
        // KVM_RUN returned the guest's next request: a new PENDING exit.
        assert_eq!(r, Ok(()));
        assert_eq!(rc(&k), (BASE + 4096, 1, 0, 0, 0));
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
        assert_eq!(k.mem.inner.read(BASE + 4096, 3000), Some(b.as_slice()));
        assert!(h.is_holding() && lock_held(&p));
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }; 2]
        );
        let want = if notify { Step::Done } else { Step::NotOurs };
        assert_eq!(after(&mut h, &mut k, r), Ok(want));
        assert!(!lock_held(&p));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn explicit_release_and_drop_free_the_lock() {
    let (d, p, _b, mut h) = setup("release", 3000);
    let mut k = kvm(1);
    let r = k.request(BASE, 1);
    assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
    let r = run(&mut k, &p, Inject::FailBefore(Errno::EINVAL), Guest::Halt);
    assert_eq!(
        after(&mut h, &mut k, r),
        Ok(Step::StillPending {
            errno: Errno::EINVAL
        })
    );
    assert!(lock_held(&p));
    // The VMM gives up on this vCPU.
    h.release();
    assert!(!h.is_holding() && !lock_held(&p));
    assert!(h.has_request(), "KVM still has the request");
    h.release();
    assert!(!lock_held(&p));
    // A later DONE exit finds nothing to release and writes nothing.
    let mut done = fields(&k.run);
    (done.flags, done.status) = (0, 1);
    set_fields(&mut k.run, done);
    assert_eq!(after(&mut h, &mut k, Ok(())), Ok(Step::Done));
    assert_eq!(fields(&k.run), done);
    assert!(!h.has_request());
    // Dropping a handler that holds the lock releases it.
    let r = k.request(BASE, 1);
    assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
    assert!(lock_held(&p));
    drop(h);
    assert!(!lock_held(&p));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn too_small_reports_the_exact_page_count() {
    // table size -> pages needed (4 KiB pages, no off-by-one at multiples)
    for (size, need) in [
        (120usize, 1u64),
        (4096, 1),
        (4097, 2),
        (8192, 2),
        (8193, 3),
        (16384, 4),
    ] {
        let (d, p, b, mut h) = setup(&format!("len{size}"), size);
        for given in [0, need - 1] {
            let mut k = kvm(4);
            let r = k.request(BASE, given);
            assert_eq!(
                after(&mut h, &mut k, r),
                Ok(Step::Answered(Answer::TooSmall {
                    needed: need,
                    given
                }))
            );
            assert_eq!(rc(&k), (BASE, need, 1, 0, 0));
            assert!(k.mem.writes.is_empty());
            assert_eq!(empty_table_at(&k, BASE), given != 0);
            assert!(!h.is_holding() && !lock_held(&p));
            // KVM accepts it and gives the guest the page count.
            let r = run(&mut k, &p, Inject::None, Guest::Halt);
            assert_eq!(r, Ok(()));
            assert_eq!(k.refused, 0);
            assert_eq!(
                k.guest_results,
                [GuestResult {
                    vmm_error: 1,
                    rbx: need
                }]
            );
            assert!(k.firmware_calls.is_empty());
            assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
            // The guest retries with the count it was told.
            let r = k.request(BASE, need);
            assert_eq!(after(&mut h, &mut k, r), certificates(size, true));
            assert_eq!(k.mem.inner.read(BASE, size), Some(b.as_slice()));
            h.release();
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn no_certificates_answers_zero_and_writes_nothing() {
    let (d, p, _b, mut h) = setup("none", 3000);
    // A table with no entries: the host has no certificates.
    store::install(&p, &[0; 24], None).unwrap();
    for npages in [0, 1, 5] {
        let mut k = kvm(1);
        let r = k.request(BASE, npages);
        assert_eq!(
            after(&mut h, &mut k, r),
            Ok(Step::Answered(Answer::NoCertificates))
        );
        assert_eq!(rc(&k), (BASE, npages, 0, 0, 0));
        assert!(k.mem.writes.is_empty());
        assert!(!h.is_holding() && !lock_held(&p));
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: false,
                certs: false
            }]
        );
        assert_eq!(k.guest_results[0].vmm_error, 0);
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn busy_within_the_bounded_wait() {
    let (d, p, _b, mut h) = setup("busy", 3000);
    let mut k = kvm(1);
    let updater = store::open_locked(&p, LockKind::Exclusive, None).unwrap();
    let r = k.request(BASE, 1);
    let t = Instant::now();
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::Answered(Answer::Busy)));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(40) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(rc(&k), (BASE, 1, 2, 0, 0));
    assert!(k.mem.writes.is_empty() && empty_table_at(&k, BASE));
    assert!(!h.is_holding());
    let r = k.kvm_run(Inject::None, false, Guest::Halt);
    assert_eq!(k.guest_results[0].vmm_error, 2);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    drop(updater);
    // The guest retries. (The helper thread of the timed-out wait may hold the
    // lock for a moment; the bounded wait covers that.)
    let r = k.request(BASE, 1);
    assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn host_faults_follow_the_policy_and_are_never_generic() {
    for policy in [FaultPolicy::EmptyTable, FaultPolicy::Busy] {
        let want_ret = match policy {
            FaultPolicy::EmptyTable => 0,
            FaultPolicy::Busy => 2,
        };
        let (d, p, _b, h) = setup(&format!("fault-{policy:?}"), 3000);
        let mut h = h.fault_policy(policy);
        let faults: [Fault; 3] = [
            ("invalid table", |p| {
                std::fs::write(p, b"not a table").unwrap()
            }),
            ("oversized file", |p| {
                std::fs::write(p, vec![1u8; 2 << 20]).unwrap()
            }),
            ("missing file", |p| std::fs::remove_file(p).unwrap()),
        ];
        for (i, (what, make)) in faults.iter().enumerate() {
            make(&p);
            let mut k = kvm(1);
            let r = k.request(BASE, 1);
            let step = after(&mut h, &mut k, r);
            let Ok(Step::Answered(Answer::HostFault {
                reason,
                policy: answered,
            })) = step
            else {
                panic!("{what}: {step:?}");
            };
            assert_eq!(answered, policy);
            assert!(!reason.is_empty());
            assert_eq!(rc(&k), (BASE, 1, want_ret, 0, 0), "{what}");
            assert!(k.mem.writes.is_empty(), "{what}");
            assert!(empty_table_at(&k, BASE), "KVM's empty table stays");
            assert!(!h.is_holding());
            assert_eq!(h.host_faults(), i as u64 + 1);
            let r = k.kvm_run(Inject::None, false, Guest::Halt);
            assert_eq!(r, Ok(()));
            assert_eq!(k.refused, 0);
            assert_eq!(k.guest_results[0].vmm_error, want_ret);
            if want_ret == 0 {
                assert_eq!(
                    k.firmware_calls,
                    [FirmwareCall {
                        lock_held: false,
                        certs: false
                    }]
                );
            }
            assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
        }
        // Certificates again: served.
        let b = chain_blob(3000);
        store::install(&p, &b, None).unwrap();
        let mut k = kvm(1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn hostile_guest_buffers() {
    let (d, p, b, mut h) = setup("guest", 9000);
    // The buffer starts in the last page of memory and runs past its end: KVM
    // could write its empty table, the VMM cannot write the table.
    let mut k = kvm(2);
    let r = k.request(BASE + 4096, 3);
    let step = after(&mut h, &mut k, r);
    assert!(
        matches!(step, Ok(Step::Answered(Answer::BadBuffer { .. }))),
        "{step:?}"
    );
    assert_eq!(rc(&k), (BASE + 4096, 3, 0, 0, 0));
    assert!(empty_table_at(&k, BASE + 4096));
    assert!(k.mem.inner.bytes[..4096].iter().all(|&x| x == FILL));
    assert!(k.mem.inner.bytes[4096 + 24..].iter().all(|&x| x == FILL));
    assert!(!h.is_holding() && !lock_held(&p));
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(k.guest_results[0].vmm_error, 0);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));

    // Values KVM should never pass on, straight in kvm_run.
    let hostile = |gpa: u64, npages: u64| Fields {
        exit_reason: 40,
        ty: 1,
        gpa,
        npages,
        ret: 0,
        flags: 0,
        status: 0,
    };
    for (gpa, npages) in [
        (BASE + 8, 3),                 // not page aligned
        (u64::MAX - 4095, u64::MAX),   // past 2^64
        (0, 3),                        // outside memory
        (BASE + 0x100_0000, u64::MAX), // outside memory, huge buffer
    ] {
        let mut k = kvm(4);
        set_fields(&mut k.run, hostile(gpa, npages));
        let step = after(&mut h, &mut k, Ok(()));
        assert!(
            matches!(step, Ok(Step::Answered(Answer::BadBuffer { .. }))),
            "{gpa:#x}: {step:?}"
        );
        assert_eq!(rc(&k), (gpa, npages, 0, 0, 0));
        assert!(k.mem.inner.bytes.iter().all(|&x| x == FILL));
        assert!(k.mem.writes.iter().all(|w| !w.ok));
        assert!(!h.is_holding());
    }
    // A huge data_npages on valid memory (2^52 pages is 2^64 bytes, 2^52 + 1
    // pages is 2^64 + 4096 bytes): only the table is written.
    for npages in [u64::MAX, 1 << 52, (1 << 52) + 1] {
        let mut k = kvm(4);
        set_fields(&mut k.run, hostile(BASE, npages));
        assert_eq!(after(&mut h, &mut k, Ok(())), certificates(9000, true));
        assert_eq!(
            k.mem.writes,
            [Write {
                gpa: BASE,
                len: 9000,
                ok: true
            }]
        );
        assert_eq!(k.mem.inner.read(BASE, 9000), Some(b.as_slice()));
        assert!(k.mem.inner.bytes[9000..].iter().all(|&x| x == FILL));
        h.release();
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn hostile_kernel_exits() {
    let (d, p, _b, mut h) = setup("kernel", 3000);
    let mut k = kvm(1);
    let pending = Fields {
        exit_reason: 40,
        ty: 1,
        gpa: BASE,
        npages: 1,
        ret: 0xdead_beef,
        flags: 0xfe,
        status: 0,
    };
    // ret and flags garbage on a PENDING exit: overwritten.
    set_fields(&mut k.run, pending);
    assert_eq!(after(&mut h, &mut k, Ok(())), certificates(3000, true));
    assert_eq!(rc(&k), (BASE, 1, 0, 1, 0));
    assert!(lock_held(&p));
    // Unknown type, bad status: refused, nothing written, lock rule applied.
    let mut unknown = pending;
    unknown.ty = 7;
    let mut cases = vec![(unknown, Err(ExitError::UnknownType(7)))];
    for s in [2u8, 0x80, 0xff] {
        let mut bad = pending;
        bad.status = s;
        cases.push((bad, Err(ExitError::BadStatus(s))));
    }
    let mut other = pending;
    other.exit_reason = 2;
    cases.push((other, Ok(Step::NotOurs)));
    for (f, want) in cases {
        // hold the lock first
        set_fields(&mut k.run, pending);
        assert_eq!(after(&mut h, &mut k, Ok(())), certificates(3000, true));
        set_fields(&mut k.run, f);
        assert_eq!(after(&mut h, &mut k, Ok(())), want);
        assert_eq!(fields(&k.run), f, "nothing written");
        assert!(k.mem.writes.is_empty());
        assert!(!h.is_holding() && !lock_held(&p));
    }
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn update_between_requests_is_served() {
    let (d, p, _b, mut h) = setup("update", 3000);
    let mut k = kvm(2);
    let r = k.request(BASE, 2);
    assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
    let nb = chain_blob(6000);
    store::install(&p, &nb, Some(Duration::from_secs(5))).unwrap();
    let r = run(
        &mut k,
        &p,
        Inject::None,
        Guest::Request {
            gpa: BASE,
            npages: 2,
        },
    );
    assert_eq!(after(&mut h, &mut k, r), certificates(6000, true));
    assert_eq!(k.mem.inner.read(BASE, 6000), Some(nb.as_slice()));
    std::fs::remove_dir_all(d).unwrap();
}

/// A source whose lock state outlives it, to see what the handler does with
/// the lock when it is dropped.
struct SharedFlagSource {
    blob: Vec<u8>,
    held: std::rc::Rc<std::cell::Cell<bool>>,
}

impl CertSource for SharedFlagSource {
    fn acquire(&mut self) -> Result<&[u8], SourceError> {
        self.held.set(true);
        Ok(&self.blob)
    }
    fn release(&mut self) {
        self.held.set(false);
    }
}

#[test]
fn dropping_the_handler_releases_the_lock() {
    // "If the VMM stops running the vCPU (an error path), it calls release
    // (dropping the handler does the same), so that the lock is never held
    // forever."
    let held = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut h = ReqCertsHandler::new(SharedFlagSource {
        blob: chain_blob(3000),
        held: held.clone(),
    });
    let mut run = kvm_run::default();
    set_fields(&mut run, Fields::request(0x1000, 1));
    let mut mem = FlatMemory::new(0x1000, 0x1000);
    let step = h.after_run(&mut run, Ok(()), &mut mem).unwrap();
    assert!(
        matches!(step, Step::Answered(Answer::Certificates { .. })),
        "{step:?}"
    );
    assert!(held.get(), "the lock is kept until KVM has finished");
    drop(h);
    assert!(!held.get(), "dropped with the lock still held");
}

#[test]
fn errors_name_what_was_wrong() {
    // For the VMM's log: the guest range that could not be written, and the
    // value KVM showed that no correct KVM shows.
    let e = GuestMemoryError {
        gpa: 0x7000,
        len: 0x30,
    };
    let t = e.to_string();
    assert!(t.contains("0x7000") && t.contains("0x30"), "{t}");
    for (e, v) in [
        (ExitError::UnknownType(77), "77"),
        (ExitError::BadStatus(9), "9"),
        (ExitError::BadRet(123), "123"),
    ] {
        assert!(e.to_string().contains(v), "{e:?}: {e}");
    }
    // A buffer outside guest memory: the BadBuffer reason names its address.
    let mut h = ReqCertsHandler::new(SharedFlagSource {
        blob: chain_blob(3000),
        held: Default::default(),
    });
    let mut run = kvm_run::default();
    set_fields(&mut run, Fields::request(0x9000, 1));
    let mut mem = FlatMemory::new(0x1000, 0x1000);
    match h.after_run(&mut run, Ok(()), &mut mem).unwrap() {
        Step::Answered(Answer::BadBuffer { reason }) => {
            assert!(reason.contains("0x9000"), "{reason}")
        }
        s => panic!("{s:?}"),
    }
}
