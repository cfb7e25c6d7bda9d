//! End-to-end tests of the exit handler on both kernel interfaces of the
//! series: the seed's `KVM_EXIT_VMGEXIT` (`Abi::Vmgexit`) and mainline 7.0's
//! `KVM_EXIT_SNP_REQ_CERTS` (`Abi::SnpReqCerts`). Every test runs once per
//! ABI (`common::ABIS`), with a real certificate file and `BlobServer`, a
//! simulated KVM that follows that ABI's contract (`common::FakeKvm`: the
//! series' api.rst, and for 7.0 mainline's text with what the series adds),
//! and guest memory that records the handler's writes. Expected values are
//! the contracts', written out as literals in `tests/common` (`Spec`); where
//! the two contracts differ, the test says which one it follows.
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
/// A hostile exit: how to make it in `kvm_run`, and what the handler returns.
type HostileExit = (Box<dyn Fn(&mut FakeKvm)>, Result<Step, ExitError>);

fn name(spec: &Spec) -> &'static str {
    match spec.abi {
        Abi::Vmgexit => "vmgexit",
        Abi::SnpReqCerts => "snp",
    }
}

fn setup_with(spec: &Spec, tag: &str, b: &[u8]) -> (PathBuf, PathBuf, Handler) {
    let d = tmpdir(&format!("{tag}-{}", name(spec)));
    let p = d.join("certs");
    store::install(&p, b, None).unwrap();
    let s = BlobServer::new(&p)
        .unwrap()
        .with_wait(Duration::from_millis(50));
    (d, p, ReqCertsHandler::new(s).abi(spec.abi))
}

fn setup(spec: &Spec, tag: &str, size: usize) -> (PathBuf, PathBuf, Vec<u8>, Handler) {
    let b = chain_blob(size);
    let (d, p, h) = setup_with(spec, tag, &b);
    (d, p, b, h)
}

fn kvm(spec: &Spec, pages: usize) -> FakeKvm {
    FakeKvm::new(spec.abi, RecordingMemory::new(BASE, pages * 4096, FILL))
}

/// Whether a VMM holds the shared lock: an updater cannot get the exclusive one.
fn lock_held(path: &Path) -> bool {
    match store::open_locked(path, LockKind::Exclusive, Some(Duration::ZERO)) {
        Err(StoreError::Busy) => true,
        Ok(_) => false,
        Err(e) => panic!("probing the lock: {e}"),
    }
}

/// (gpa, npages, ret) in the ABI's member of `kvm_run`.
fn rc(k: &FakeKvm) -> (u64, u64, u64) {
    k.answer()
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

/// The return of `KVM_RUN` after KVM acted on an answer with certificates
/// that asked to be told (notify on): the series' DONE exit (`KVM_RUN`
/// returns 0, `status` DONE); on 7.0 the `immediate_exit` return (`EINTR`,
/// `exit_reason` still `KVM_EXIT_SNP_REQ_CERTS`).
fn done_return(spec: &Spec) -> Result<(), Errno> {
    match spec.abi {
        Abi::Vmgexit => Ok(()),
        Abi::SnpReqCerts => Err(Errno::EINTR),
    }
}

/// Makes `kvm_run` show that KVM has finished with the request, as the
/// contract's KVM would after acting with notify on (see [`done_return`]),
/// and returns that `KVM_RUN` result.
fn show_done(k: &mut FakeKvm) -> Result<(), Errno> {
    match k.abi {
        Abi::Vmgexit => {
            let mut done = fields(&k.run);
            (done.flags, done.status) = (0, DONE);
            set_fields(&mut k.run, done);
            Ok(())
        }
        Abi::SnpReqCerts => Err(Errno::EINTR),
    }
}

#[test]
fn constants_are_the_contracts() {
    // The series' KVM_EXIT_VMGEXIT.
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

    // Mainline 7.0's KVM_EXIT_SNP_REQ_CERTS, as the series' header has it.
    assert_eq!(snp_certs::kvm::KVM_EXIT_SNP_REQ_CERTS, EXIT_SNP_REQ_CERTS);
    assert_eq!(snp_certs::kvm::KVM_EXIT_INTR, EXIT_INTR);
    assert_eq!(
        (SNP_RET_OK, SNP_RET_ENOSPC, SNP_RET_EAGAIN, SNP_RET_EIO),
        (SNP_OK, ENOSPC, EAGAIN, EIO)
    );
    assert_eq!(
        std::mem::size_of::<snp_certs::kvm::kvm_exit_snp_req_certs>(),
        24
    );
    // The opt-in: KVM_HAS_DEVICE_ATTR on /dev/kvm, KVM_MEMORY_ENCRYPT_OP.
    let a = req_certs_device_attr();
    assert_eq!(
        (a.flags, a.group, a.attr, a.addr),
        (0, GRP_SEV, ATTR_SNP_REQ_CERTS, 0)
    );
    let c = enable_req_certs_cmd(7);
    assert_eq!(
        (c.id, c.pad0, c.data, c.error, c.sev_fd),
        (SEV_SNP_ENABLE_REQ_CERTS, 0, 0, 0, 7)
    );
    // The member is where 7.0 puts it: the exit union at offset 32.
    let mut r = kvm_run::default();
    let raw: *mut u8 = std::ptr::addr_of_mut!(r).cast();
    unsafe {
        raw.add(32).cast::<u64>().write_unaligned(0x1234_5000);
        raw.add(40).cast::<u64>().write_unaligned(3);
        raw.add(48).cast::<u64>().write_unaligned(28);
    }
    assert_eq!(snp_fields(&r), (0x1234_5000, 3, 28));
    // SAFETY: integer fields only.
    let m = unsafe { r.__bindgen_anon_1.snp_req_certs };
    assert_eq!((m.gpa, m.npages, m.ret), (0x1234_5000, 3, 28));
}

#[test]
fn notify_keeps_the_lock_until_kvm_has_acted() {
    for spec in &ABIS {
        let (d, p, b, mut h) = setup(spec, "notify", 9000);
        let mut k = kvm(spec, 4);
        let gpa = BASE + 4096;
        let r = k.request(gpa, 3);
        assert_eq!(r, Ok(()));
        assert_eq!(after(&mut h, &mut k, r), certificates(9000, true));
        assert_eq!(rc(&k), (gpa, 3, spec.ok));
        assert!(k.notify_requested(), "{spec:?}");
        assert_eq!(k.mem.inner.read(gpa, 9000), Some(b.as_slice()));
        assert_eq!(k.mem.writes.len(), 1);
        assert!(k.mem.inner.bytes[..4096].iter().all(|&x| x == FILL));
        assert!(k.mem.inner.bytes[4096 + 9000..].iter().all(|&x| x == FILL));
        assert!(h.is_holding() && lock_held(&p));

        // KVM acts on the answer under the lock, then comes back.
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(r, done_return(spec));
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
        assert_eq!(k.run.exit_reason, spec.exit);
        if spec.abi == Abi::Vmgexit {
            // The DONE exit: status DONE, flags 0.
            assert_eq!((fields(&k.run).flags, fields(&k.run).status), (0, DONE));
        }
        let answer = rc(&k);
        // KVM has finished: nothing written, lock released, resume.
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
        assert_eq!(rc(&k), answer);
        assert!(k.mem.writes.is_empty());
        assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
        // 7.0: the handler clears the immediate_exit it set.
        assert_eq!(k.run.immediate_exit, 0);
        // The guest runs on.
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
        assert_eq!(k.refused, 0);
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn without_notify_the_lock_is_kept_until_the_next_return() {
    for spec in &ABIS {
        let (d, p, b, h) = setup(spec, "nonotify", 5000);
        let mut h = h.notify_done(false);
        let mut k = kvm(spec, 2);
        let r = k.request(BASE, 2);
        assert_eq!(after(&mut h, &mut k, r), certificates(5000, false));
        assert_eq!(rc(&k), (BASE, 2, spec.ok));
        assert!(!k.notify_requested());
        assert_eq!(k.run.immediate_exit, 0);
        assert_eq!(k.mem.inner.read(BASE, 5000), Some(b.as_slice()));
        assert!(h.is_holding() && lock_held(&p));
        // KVM acts, the guest runs, the next exit is another one.
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(r, Ok(()));
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }]
        );
        assert_eq!(k.run.exit_reason, EXIT_HLT);
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
        assert!(!h.is_holding() && !lock_held(&p));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn failed_run_before_acting_keeps_the_lock() {
    for spec in &ABIS {
        // EINVAL: e.g. an invalid kvm_dirty_regs; EAGAIN: the return after
        // an INIT wait that no signal ended. EINTR with exit_reason left
        // alone is a failure before acting on the series only: on 7.0 it is
        // the immediate_exit return, after acting (api.rst); there EINTR
        // before acting comes with KVM_EXIT_INTR (see the INIT-wait test).
        let mut cases = vec![
            (true, Errno::EINVAL),
            (false, Errno::EINVAL),
            (true, Errno::EFAULT),
            (true, Errno::EAGAIN),
        ];
        if spec.abi == Abi::Vmgexit {
            cases.extend([(true, Errno::EINTR), (false, Errno::EINTR)]);
        }
        for (notify, errno) in cases {
            let (d, p, _b, h) = setup(spec, &format!("before-{notify}-{errno:?}"), 3000);
            let mut h = h.notify_done(notify);
            let mut k = kvm(spec, 1);
            let r = k.request(BASE, 1);
            assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
            let answer = rc(&k);
            // KVM_RUN fails before acting: the request stays pending, twice.
            for _ in 0..2 {
                let r = run(&mut k, &p, Inject::FailBefore(errno), Guest::Halt);
                assert_eq!(r, Err(errno));
                assert_eq!(after(&mut h, &mut k, r), Ok(Step::StillPending { errno }));
                assert_eq!(rc(&k), answer, "the answer stays as it was");
                assert_eq!(k.notify_requested(), notify);
                assert!(k.mem.writes.is_empty());
                assert!(h.is_holding() && lock_held(&p));
                assert!(h.has_request() && k.has_pending());
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
            let want = if notify {
                assert_eq!(r, done_return(spec));
                Step::Done
            } else {
                assert_eq!(r, Ok(()));
                Step::NotOurs
            };
            assert_eq!(after(&mut h, &mut k, r), Ok(want));
            assert!(!h.is_holding() && !lock_held(&p));
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

#[test]
fn signal_while_waiting_for_init_keeps_the_lock() {
    // The path the review found: userspace set the vCPU's MP state, KVM_RUN
    // waits for INIT, a signal ends the wait. KVM_RUN fails with EINTR before
    // KVM acted on the answer, with exit_reason KVM_EXIT_INTR (and on the
    // series status still PENDING): the request is still pending, the lock
    // is kept.
    for spec in &ABIS {
        for notify in [true, false] {
            let (d, p, b, h) = setup(spec, &format!("initwait-{notify}"), 3000);
            let mut h = h.notify_done(notify);
            let mut k = kvm(spec, 1);
            let r = k.request(BASE, 1);
            assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
            let answer = rc(&k);
            assert_eq!(answer, (BASE, 1, spec.ok));
            for _ in 0..2 {
                let r = run(&mut k, &p, Inject::InitWaitSignal, Guest::Halt);
                assert_eq!(r, Err(Errno::EINTR));
                assert_eq!(k.run.exit_reason, EXIT_INTR);
                assert_eq!(rc(&k), answer, "the answer as it was");
                assert_eq!(
                    after(&mut h, &mut k, r),
                    Ok(Step::StillPending {
                        errno: Errno::EINTR
                    })
                );
                // Nothing written, but on 7.0 the exit reason, which the
                // handler puts back (documented: KVM does not read it, and
                // the immediate_exit return leaves it as it finds it).
                let want_exit = match spec.abi {
                    Abi::Vmgexit => EXIT_INTR,
                    Abi::SnpReqCerts => EXIT_SNP_REQ_CERTS,
                };
                assert_eq!(k.run.exit_reason, want_exit);
                assert_eq!(rc(&k), answer, "nothing written");
                assert_eq!(k.notify_requested(), notify);
                assert!(k.mem.writes.is_empty());
                assert!(h.is_holding() && lock_held(&p));
                assert!(h.has_request());
                assert!(k.firmware_calls.is_empty() && k.guest_results.is_empty());
            }
            assert_eq!(k.mem.inner.read(BASE, 3000), Some(b.as_slice()));
            // The next KVM_RUN acts on the answer, under the lock: KVM has
            // finished with the request, the lock is released.
            let r = run(&mut k, &p, Inject::None, Guest::Halt);
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
                assert_eq!(r, done_return(spec));
                assert_eq!(k.run.exit_reason, spec.exit);
                Step::Done
            } else {
                assert_eq!(r, Ok(()));
                assert_eq!(k.run.exit_reason, EXIT_HLT);
                Step::NotOurs
            };
            let before = rc(&k);
            assert_eq!(after(&mut h, &mut k, r), Ok(want));
            assert_eq!(rc(&k), before, "nothing written");
            assert!(k.mem.writes.is_empty());
            assert!(!h.is_holding() && !lock_held(&p));
            assert!(!h.has_request());
            std::fs::remove_dir_all(d).unwrap();
        }

        // A signal after KVM acted (in the guest run): KVM_EXIT_INTR again.
        // The series: status DONE, so KVM has finished with the request and
        // the lock is released. 7.0 has no status: "after a return [...]
        // with KVM_EXIT_INTR, the request is still pending" is all the VMM
        // can go by, so the handler keeps the lock until the next return.
        let (d, p, _b, h) = setup(spec, "initwait-after", 3000);
        let mut h = h.notify_done(false);
        let mut k = kvm(spec, 1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, false));
        let r = run(&mut k, &p, Inject::FailAfter(Errno::EINTR), Guest::Halt);
        assert_eq!(r, Err(Errno::EINTR));
        assert_eq!(k.run.exit_reason, EXIT_INTR);
        assert_eq!(k.firmware_calls.len(), 1);
        match spec.abi {
            Abi::Vmgexit => {
                assert_eq!(fields(&k.run).status, DONE);
                assert_eq!(
                    after(&mut h, &mut k, r),
                    Ok(Step::RunFailed {
                        errno: Errno::EINTR
                    })
                );
            }
            Abi::SnpReqCerts => {
                assert_eq!(
                    after(&mut h, &mut k, r),
                    Ok(Step::StillPending {
                        errno: Errno::EINTR
                    })
                );
                assert!(h.is_holding() && lock_held(&p));
                let r = run(&mut k, &p, Inject::None, Guest::Halt);
                assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
            }
        }
        assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
        assert_eq!(k.firmware_calls.len(), 1);

        // No request answered: the INIT wait's EINTR leaves nothing pending,
        // whatever the rest of kvm_run holds.
        let mut k = kvm(spec, 1);
        let r = run(&mut k, &p, Inject::InitWaitSignal, Guest::Halt);
        assert_eq!(
            after(&mut h, &mut k, r),
            Ok(Step::RunFailed {
                errno: Errno::EINTR
            })
        );
        assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn immediate_exit_does_not_postpone_the_answer() {
    // "KVM acts on the answer at the start of the next KVM_RUN, before it
    // enters the guest and before it checks 'immediate_exit'" (the series);
    // "The completion runs at the start of the next KVM_RUN, before
    // 'immediate_exit' is checked" (7.0, what the series adds). Here the VMM
    // sets immediate_exit itself, e.g. to kick the vCPU.
    for spec in &ABIS {
        for notify in [true, false] {
            let (d, p, _b, h) = setup(spec, &format!("immediate-{notify}"), 3000);
            let mut h = h.notify_done(notify);
            let mut k = kvm(spec, 1);
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
            let want = match (spec.abi, notify) {
                // NOTIFY_DONE: the DONE exit comes first.
                (Abi::Vmgexit, true) => {
                    assert_eq!(r, Ok(()));
                    Step::Done
                }
                // status DONE, then the immediate_exit failure.
                (Abi::Vmgexit, false) => {
                    assert_eq!(fields(&k.run).status, DONE);
                    assert_eq!(r, Err(Errno::EINTR));
                    Step::RunFailed {
                        errno: Errno::EINTR,
                    }
                }
                // EINTR with exit_reason still KVM_EXIT_SNP_REQ_CERTS: KVM
                // has finished with the request.
                (Abi::SnpReqCerts, _) => {
                    assert_eq!(r, Err(Errno::EINTR));
                    assert_eq!(k.run.exit_reason, EXIT_SNP_REQ_CERTS);
                    Step::Done
                }
            };
            assert_eq!(after(&mut h, &mut k, r), Ok(want));
            assert!(k.mem.writes.is_empty());
            assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

#[test]
fn refused_answer_stays_pending_and_is_read_again() {
    // Answers outside the contract (written by something else than the
    // handler) make KVM_RUN fail with -EINVAL and change nothing: "the guest
    // does not run, the request stays pending, and the next KVM_RUN reads
    // 'ret' [...] again" (the series' text for both ABIs; on 7.0 this is what
    // the series adds to mainline). (ret, flags, npages)
    for spec in &ABIS {
        let bad: &[(u64, u8, u64)] = match spec.abi {
            Abi::Vmgexit => &[
                (3, 1, 1),           // ret outside the closed set
                (0, 2, 1),           // unknown flag
                (0, 0x81, 1),        // unknown flag next to NOTIFY_DONE
                (1, 0, 1),           // INVALID_LEN, data_npages not larger
                (0x8000_0001, 0, 1), // GENERIC with a low bit
            ],
            Abi::SnpReqCerts => &[
                (1, 0, 1),           // EPERM
                (22, 0, 1),          // EINVAL
                (0x8000_0000, 0, 1), // the series' GENERIC
                (1 << 32, 0, 1),     // high bits
                (u64::MAX, 0, 1),    // -1
            ],
        };
        let (d, p, _b, mut h) = setup(spec, "refused", 3000);
        let mut k = kvm(spec, 1);
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
        let good = rc(&k);
        let good_flags = fields(&k.run).flags;
        for &(ret, flags, npages) in bad {
            k.set_answer(BASE, npages, ret);
            if spec.abi == Abi::Vmgexit {
                let mut f = fields(&k.run);
                f.flags = flags;
                set_fields(&mut k.run, f);
            }
            let shown = (rc(&k), fields(&k.run));
            let r = run(&mut k, &p, Inject::None, Guest::Halt);
            assert_eq!(r, Err(Errno::EINVAL), "ret {ret:#x}");
            assert!(k.has_pending());
            assert_eq!(
                after(&mut h, &mut k, r),
                Ok(Step::StillPending {
                    errno: Errno::EINVAL
                })
            );
            assert_eq!(
                (rc(&k), fields(&k.run)),
                shown,
                "after_run leaves a pending answer alone"
            );
            assert!(h.is_holding() && lock_held(&p));
        }
        assert_eq!(k.refused, bad.len() as u32);
        assert!(k.firmware_calls.is_empty() && k.guest_results.is_empty());
        // The next KVM_RUN reads the answer again.
        k.set_answer(good.0, good.1, good.2);
        if spec.abi == Abi::Vmgexit {
            let mut f = fields(&k.run);
            f.flags = good_flags;
            set_fields(&mut k.run, f);
        }
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(r, done_return(spec));
        assert_eq!(k.refused, bad.len() as u32);
        assert_eq!(
            k.firmware_calls,
            [FirmwareCall {
                lock_held: true,
                certs: true
            }]
        );
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
        assert!(!lock_held(&p));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn failed_run_after_acting_is_settled_by_the_lock_rule() {
    // KVM acted (the firmware call made, or tried and failed: "KVM_RUN fails
    // with that error, and KVM gives the guest the answer of GENERIC / EIO
    // first"), then KVM_RUN failed. The series writes status DONE, so the
    // lock is released at once. 7.0 gives no sign (a failure may have come
    // before KVM acted), so the handler keeps the lock until the next
    // return settles it: an updater waits longer, never races a request.
    for spec in &ABIS {
        for inject in [
            Inject::FailAfter(Errno::EFAULT),
            Inject::FirmwareFails(Errno::EIO),
        ] {
            for notify in [true, false] {
                let tag = format!(
                    "after-{notify}-{}",
                    inject == Inject::FailAfter(Errno::EFAULT)
                );
                let (d, p, _b, h) = setup(spec, &tag, 3000);
                let mut h = h.notify_done(notify);
                let mut k = kvm(spec, 1);
                let r = k.request(BASE, 1);
                assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
                let r = run(&mut k, &p, inject, Guest::Halt);
                let (Inject::FailAfter(errno) | Inject::FirmwareFails(errno)) = inject else {
                    unreachable!()
                };
                assert_eq!(r, Err(errno));
                assert_eq!(
                    k.firmware_calls,
                    [FirmwareCall {
                        lock_held: true,
                        certs: true
                    }]
                );
                let guest_error = match inject {
                    Inject::FirmwareFails(_) => spec.guest_generic,
                    _ => 0,
                };
                assert_eq!(
                    k.guest_results,
                    [GuestResult {
                        vmm_error: guest_error,
                        rbx: 1
                    }]
                );
                assert!(!k.has_pending());
                match spec.abi {
                    Abi::Vmgexit => {
                        assert_eq!(fields(&k.run).status, DONE);
                        assert_eq!(after(&mut h, &mut k, r), Ok(Step::RunFailed { errno }));
                    }
                    Abi::SnpReqCerts => {
                        assert_eq!(after(&mut h, &mut k, r), Ok(Step::StillPending { errno }));
                        assert!(h.is_holding() && lock_held(&p));
                        // The guest runs (and sees its answer); the next
                        // return releases: the immediate_exit one, or the
                        // next exit.
                        let r = run(&mut k, &p, Inject::None, Guest::Halt);
                        let want = if notify {
                            assert_eq!(r, Err(Errno::EINTR));
                            Step::Done
                        } else {
                            assert_eq!(r, Ok(()));
                            Step::NotOurs
                        };
                        assert_eq!(after(&mut h, &mut k, r), Ok(want));
                        assert_eq!(k.run.immediate_exit, 0);
                    }
                }
                assert!(k.mem.writes.is_empty());
                assert!(!h.is_holding() && !lock_held(&p) && !h.has_request());
                assert_eq!(k.firmware_calls.len(), 1, "no second firmware call");
                std::fs::remove_dir_all(d).unwrap();
            }
        }
    }
}

#[test]
fn new_request_is_answered_under_a_fresh_lock() {
    // With notify off, the guest's next request comes straight back: the
    // first lock is released before the second is taken.
    for spec in &ABIS {
        for notify in [false, true] {
            let (d, p, b, h) = setup(spec, &format!("new-{notify}"), 3000);
            let mut h = h.notify_done(notify);
            let mut k = kvm(spec, 2);
            let r = k.request(BASE, 1);
            assert_eq!(after(&mut h, &mut k, r), certificates(3000, notify));
            let next = Guest::Request {
                gpa: BASE + 4096,
                npages: 1,
            };
            let mut r = run(&mut k, &p, Inject::None, next);
            if notify {
                assert_eq!(r, done_return(spec));
                assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
                assert!(!lock_held(&p));
                r = run(&mut k, &p, Inject::None, next);
            }
            // KVM_RUN returned the guest's next request: a new exit.
            assert_eq!(r, Ok(()));
            assert_eq!(k.run.exit_reason, spec.exit);
            assert_eq!(rc(&k), (BASE + 4096, 1, 0));
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
}

#[test]
fn explicit_release_and_drop_free_the_lock() {
    for spec in &ABIS {
        let (d, p, _b, mut h) = setup(spec, "release", 3000);
        let mut k = kvm(spec, 1);
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
        // A later return that says KVM has finished finds nothing to release
        // and writes nothing.
        let r = show_done(&mut k);
        let shown = (rc(&k), fields(&k.run));
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
        assert_eq!((rc(&k), fields(&k.run)), shown);
        assert!(!h.has_request());
        // Dropping a handler that holds the lock releases it.
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
        assert!(lock_held(&p));
        drop(h);
        assert!(!lock_held(&p));
        // A failed run with no answered request outstanding.
        let mut h = ReqCertsHandler::new(BlobServer::new(&p).unwrap()).abi(spec.abi);
        k.run.exit_reason = EXIT_HLT;
        assert_eq!(
            after(&mut h, &mut k, Err(Errno::EINTR)),
            Ok(Step::RunFailed {
                errno: Errno::EINTR
            })
        );
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn too_small_reports_the_exact_page_count() {
    // table size -> pages needed (4 KiB pages, no off-by-one at multiples)
    for spec in &ABIS {
        for (size, need) in [
            (120usize, 1u64),
            (4096, 1),
            (4097, 2),
            (8192, 2),
            (8193, 3),
            (16384, 4),
        ] {
            let (d, p, b, mut h) = setup(spec, &format!("len{size}"), size);
            for given in [0, need - 1] {
                let mut k = kvm(spec, 4);
                let r = k.request(BASE, given);
                assert_eq!(
                    after(&mut h, &mut k, r),
                    Ok(Step::Answered(Answer::TooSmall {
                        needed: need,
                        given
                    }))
                );
                assert_eq!(rc(&k), (BASE, need, spec.too_small));
                assert!(!k.notify_requested());
                assert!(k.mem.writes.is_empty());
                assert_eq!(
                    empty_table_at(&k, BASE),
                    given != 0 && spec.kvm_writes_empty_table
                );
                assert!(!h.is_holding() && !lock_held(&p));
                // KVM accepts it and gives the guest the page count: VMM
                // error 1 (0x0000000100000000) in both ABIs' tables.
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
}

#[test]
fn no_certificates_answers_zero_over_an_empty_table() {
    // A host without certificates answers 0. The series: KVM wrote the
    // empty table before the exit and the VMM writes nothing. 7.0: KVM
    // writes nothing before this exit, so for 'ret' 0 "userspace writes
    // [...] at least its all-zero terminating entry, itself".
    for spec in &ABIS {
        let (d, p, _b, mut h) = setup(spec, "none", 3000);
        store::install(&p, &[0; 24], None).unwrap();
        for npages in [0, 1, 5] {
            let mut k = kvm(spec, 1);
            let r = k.request(BASE, npages);
            assert_eq!(
                after(&mut h, &mut k, r),
                Ok(Step::Answered(Answer::NoCertificates))
            );
            assert_eq!(rc(&k), (BASE, npages, spec.ok));
            assert!(!k.notify_requested());
            let handler_writes = !spec.kvm_writes_empty_table && npages != 0;
            let want: &[Write] = if handler_writes {
                &[Write {
                    gpa: BASE,
                    len: 24,
                    ok: true,
                }]
            } else {
                &[]
            };
            assert_eq!(k.mem.writes, want, "npages {npages}");
            assert_eq!(empty_table_at(&k, BASE), npages != 0);
            assert!(k.mem.inner.bytes[24..].iter().all(|&x| x == FILL));
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
}

#[test]
fn busy_within_the_bounded_wait() {
    for spec in &ABIS {
        let (d, p, _b, mut h) = setup(spec, "busy", 3000);
        let mut k = kvm(spec, 1);
        let updater = store::open_locked(&p, LockKind::Exclusive, None).unwrap();
        let r = k.request(BASE, 1);
        let t = Instant::now();
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::Answered(Answer::Busy)));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(rc(&k), (BASE, 1, spec.busy));
        assert!(k.mem.writes.is_empty());
        assert_eq!(empty_table_at(&k, BASE), spec.kvm_writes_empty_table);
        assert!(!h.is_holding() && !k.notify_requested());
        // VMM error 2 (0x0000000200000000) in both ABIs' tables.
        let r = k.kvm_run(Inject::None, false, Guest::Halt);
        assert_eq!(k.guest_results[0].vmm_error, 2);
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
        drop(updater);
        // The guest retries. (The helper thread of the timed-out wait may hold
        // the lock for a moment; the bounded wait covers that.)
        let r = k.request(BASE, 1);
        assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn host_faults_follow_the_policy_and_are_never_generic() {
    for spec in &ABIS {
        for policy in [FaultPolicy::EmptyTable, FaultPolicy::Busy] {
            let want_ret = match policy {
                FaultPolicy::EmptyTable => spec.ok,
                FaultPolicy::Busy => spec.busy,
            };
            let (d, p, _b, h) = setup(spec, &format!("fault-{policy:?}"), 3000);
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
                let mut k = kvm(spec, 1);
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
                assert_eq!(rc(&k), (BASE, 1, want_ret), "{what}");
                assert_ne!(want_ret, spec.generic);
                // An answer of 0 needs the empty table at the buffer: KVM's
                // on the series, the handler's own on 7.0.
                let handler_writes =
                    !spec.kvm_writes_empty_table && policy == FaultPolicy::EmptyTable;
                assert_eq!(k.mem.writes.len(), usize::from(handler_writes), "{what}");
                assert_eq!(
                    empty_table_at(&k, BASE),
                    spec.kvm_writes_empty_table || handler_writes
                );
                assert!(!h.is_holding());
                assert_eq!(h.host_faults(), i as u64 + 1);
                let r = k.kvm_run(Inject::None, false, Guest::Halt);
                assert_eq!(r, Ok(()));
                assert_eq!(k.refused, 0);
                let want_guest = if want_ret == spec.ok { 0 } else { 2 };
                assert_eq!(k.guest_results[0].vmm_error, want_guest);
                if want_ret == spec.ok {
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
            let mut k = kvm(spec, 1);
            let r = k.request(BASE, 1);
            assert_eq!(after(&mut h, &mut k, r), certificates(3000, true));
            std::fs::remove_dir_all(d).unwrap();
        }
    }
}

#[test]
fn hostile_guest_buffers() {
    for spec in &ABIS {
        let (d, p, b, mut h) = setup(spec, "guest", 9000);
        // The buffer starts in the last page of memory and runs past its end:
        // the VMM cannot write the table, and the empty table is (put back)
        // at the buffer, as the handler documents for a failed write.
        let mut k = kvm(spec, 2);
        let r = k.request(BASE + 4096, 3);
        let step = after(&mut h, &mut k, r);
        assert!(
            matches!(step, Ok(Step::Answered(Answer::BadBuffer { .. }))),
            "{step:?}"
        );
        assert_eq!(rc(&k), (BASE + 4096, 3, spec.ok));
        assert!(empty_table_at(&k, BASE + 4096));
        assert!(k.mem.inner.bytes[..4096].iter().all(|&x| x == FILL));
        assert!(k.mem.inner.bytes[4096 + 24..].iter().all(|&x| x == FILL));
        assert!(!h.is_holding() && !lock_held(&p) && !k.notify_requested());
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(k.guest_results[0].vmm_error, 0);
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));

        // Values KVM should never pass on, straight in kvm_run.
        for (gpa, npages) in [
            (BASE + 8, 3),                 // not page aligned
            (u64::MAX - 4095, u64::MAX),   // past 2^64
            (0, 3),                        // outside memory
            (BASE + 0x100_0000, u64::MAX), // outside memory, huge buffer
        ] {
            let mut k = kvm(spec, 4);
            k.exit_with(gpa, npages);
            let step = after(&mut h, &mut k, Ok(()));
            assert!(
                matches!(step, Ok(Step::Answered(Answer::BadBuffer { .. }))),
                "{gpa:#x}: {step:?}"
            );
            assert_eq!(rc(&k), (gpa, npages, spec.ok));
            assert!(k.mem.inner.bytes.iter().all(|&x| x == FILL));
            assert!(k.mem.writes.iter().all(|w| !w.ok));
            assert!(!h.is_holding() && !k.notify_requested());
        }
        // A huge npages on valid memory (2^52 pages is 2^64 bytes, 2^52 + 1
        // pages is 2^64 + 4096 bytes): only the table is written.
        for npages in [u64::MAX, 1 << 52, (1 << 52) + 1] {
            let mut k = kvm(spec, 4);
            k.exit_with(BASE, npages);
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
}

#[test]
fn hostile_kernel_exits() {
    // Successful returns a correct KVM never makes: refused, nothing
    // written, and the lock released (a new exit: the guest ran again).
    for spec in &ABIS {
        let (d, p, _b, mut h) = setup(spec, "kernel", 3000);
        let mut k = kvm(spec, 1);
        // A new request with garbage in the answer fields: overwritten.
        k.exit_with(BASE, 1);
        let garbage: Box<dyn Fn(&mut FakeKvm)> = match spec.abi {
            Abi::Vmgexit => Box::new(|k| {
                let mut f = fields(&k.run);
                (f.ret, f.flags) = (0xdead_beef, 0xfe);
                set_fields(&mut k.run, f);
            }),
            // 7.0: "'ret' [...] is always '0' on exit"; one that is not is
            // refused, not overwritten (cases below).
            Abi::SnpReqCerts => Box::new(|_| {}),
        };
        garbage(&mut k);
        assert_eq!(after(&mut h, &mut k, Ok(())), certificates(3000, true));
        assert_eq!(rc(&k), (BASE, 1, spec.ok));
        assert!(k.notify_requested());
        assert!(lock_held(&p));
        let mut cases: Vec<HostileExit> = Vec::new();
        match spec.abi {
            Abi::Vmgexit => {
                cases.push((
                    Box::new(|k| {
                        let mut f = fields(&k.run);
                        f.ty = 7;
                        set_fields(&mut k.run, f);
                    }),
                    Err(ExitError::UnknownType(7)),
                ));
                for s in [2u8, 0x80, 0xff] {
                    cases.push((
                        Box::new(move |k| {
                            let mut f = fields(&k.run);
                            f.status = s;
                            set_fields(&mut k.run, f);
                        }),
                        Err(ExitError::BadStatus(s)),
                    ));
                }
            }
            Abi::SnpReqCerts => {
                for ret in [7u64, ENOSPC, u64::MAX] {
                    cases.push((
                        Box::new(move |k| k.set_answer(BASE, 1, ret)),
                        Err(ExitError::BadRet(ret)),
                    ));
                }
            }
        }
        cases.push((Box::new(|k| k.run.exit_reason = 2), Ok(Step::NotOurs)));
        for (make, want) in cases {
            // hold the lock first
            k.exit_with(BASE, 1);
            assert_eq!(after(&mut h, &mut k, Ok(())), certificates(3000, true));
            k.exit_with(BASE, 1);
            make(&mut k);
            let shown = (k.run.exit_reason, rc(&k), fields(&k.run));
            assert_eq!(after(&mut h, &mut k, Ok(())), want);
            assert_eq!(
                (k.run.exit_reason, rc(&k), fields(&k.run)),
                shown,
                "nothing written"
            );
            assert!(k.mem.writes.is_empty());
            assert!(!h.is_holding() && !lock_held(&p));
            assert_eq!(k.run.immediate_exit, 0);
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn update_between_requests_is_served() {
    for spec in &ABIS {
        let (d, p, _b, mut h) = setup(spec, "update", 3000);
        let mut k = kvm(spec, 2);
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
    for spec in &ABIS {
        let held = std::rc::Rc::new(std::cell::Cell::new(false));
        let mut h = ReqCertsHandler::new(SharedFlagSource {
            blob: chain_blob(3000),
            held: held.clone(),
        })
        .abi(spec.abi);
        let mut k = FakeKvm::new(spec.abi, RecordingMemory::new(0x1000, 0x1000, FILL));
        k.request(0x1000, 1).unwrap();
        let step = h.after_run(&mut k.run, Ok(()), &mut k.mem).unwrap();
        assert!(
            matches!(step, Step::Answered(Answer::Certificates { .. })),
            "{step:?}"
        );
        assert!(held.get(), "the lock is kept until KVM has finished");
        drop(h);
        assert!(!held.get(), "dropped with the lock still held");
    }
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
    for spec in &ABIS {
        let mut h = ReqCertsHandler::new(SharedFlagSource {
            blob: chain_blob(3000),
            held: Default::default(),
        })
        .abi(spec.abi);
        let mut k = FakeKvm::new(spec.abi, RecordingMemory::new(0x1000, 0x1000, FILL));
        k.exit_with(0x9000, 1);
        match h.after_run(&mut k.run, Ok(()), &mut k.mem).unwrap() {
            Step::Answered(Answer::BadBuffer { reason }) => {
                assert!(reason.contains("0x9000"), "{reason}")
            }
            s => panic!("{s:?}"),
        }
    }
}
