//! End-to-end tests of the handler on mainline Linux 7.0's
//! `KVM_EXIT_SNP_REQ_CERTS` (`Abi::SnpReqCerts`): a real certificate file and
//! `BlobServer`, KVM simulated from 7.0's api.rst (`common::FakeKvm7`), guest
//! memory that records the handler's writes. Expected values are 7.0's
//! (api.rst, uapi headers), written out as literals in `tests/common`.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use snp_certs::store::{self, BlobServer, LockKind, StoreError};
use snp_certs::vmgexit::*;
use support::{chain_blob, tmpdir};

const BASE: u64 = 0x10_0000;
const FILL: u8 = 0xee;

type Handler = ReqCertsHandler<BlobServer>;

fn setup_with(tag: &str, b: &[u8]) -> (PathBuf, PathBuf, Handler) {
    let d = tmpdir(tag);
    let p = d.join("certs");
    store::install(&p, b, None).unwrap();
    let s = BlobServer::new(&p)
        .unwrap()
        .with_wait(Duration::from_millis(50));
    (d, p, ReqCertsHandler::new(s).abi(Abi::SnpReqCerts))
}

fn kvm(pages: usize) -> FakeKvm7 {
    FakeKvm7::new(RecordingMemory::new(BASE, pages * 4096, FILL))
}

fn lock_held(path: &Path) -> bool {
    match store::open_locked(path, LockKind::Exclusive, Some(Duration::ZERO)) {
        Err(StoreError::Busy) => true,
        Ok(_) => false,
        Err(e) => panic!("probing the lock: {e}"),
    }
}

fn after(h: &mut Handler, k: &mut FakeKvm7, r: Result<(), Errno>) -> Result<Step, ExitError> {
    k.mem.writes.clear();
    h.after_run(&mut k.run, r, &mut k.mem)
}

fn run(k: &mut FakeKvm7, p: &Path, inject: Inject, next: Guest) -> Result<(), Errno> {
    let held = lock_held(p);
    k.kvm_run(inject, held, next)
}

#[test]
fn constants_are_mainline_7_0s() {
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
    // The member is read where 7.0 puts it: the exit union at offset 32.
    let mut r = snp_certs::kvm::kvm_run::default();
    let raw: *mut u8 = std::ptr::addr_of_mut!(r).cast();
    unsafe {
        raw.add(32).cast::<u64>().write_unaligned(0x1234_5000);
        raw.add(40).cast::<u64>().write_unaligned(3);
    }
    assert_eq!(snp_fields(&r), (0x1234_5000, 3, 0));
}

#[test]
fn immediate_exit_keeps_the_lock_through_the_firmware_call() {
    let b = chain_blob(5000);
    let (d, p, mut h) = setup_with("ie", &b);
    let mut k = kvm(4);
    let gpa = BASE + 4096;
    k.request(gpa, 2).unwrap();
    let step = after(&mut h, &mut k, Ok(()));
    assert_eq!(
        step,
        Ok(Step::Answered(Answer::Certificates {
            len: 5000,
            notify_done: true
        }))
    );
    assert_eq!(snp_fields(&k.run), (gpa, 2, SNP_OK));
    assert_eq!(k.run.immediate_exit, 1);
    assert_eq!(k.mem.inner.read(gpa, 5000), Some(&b[..]));
    assert_eq!(k.mem.writes.len(), 1);
    assert!(lock_held(&p));
    // KVM acts (firmware call under the lock), then returns EINTR for
    // immediate_exit with exit_reason left alone.
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(r, Err(Errno::EINTR));
    assert_eq!(k.run.exit_reason, EXIT_SNP_REQ_CERTS);
    assert_eq!(
        k.firmware_calls,
        [FirmwareCall {
            lock_held: true,
            certs: true
        }]
    );
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
    assert!(!lock_held(&p));
    assert_eq!(k.run.immediate_exit, 0);
    assert!(!h.has_request());
    assert!(k.mem.writes.is_empty());
    // The guest runs on.
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    assert_eq!(
        k.guest_results,
        [GuestResult {
            vmm_error: 0,
            rbx: 2
        }]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn without_immediate_exit_the_lock_is_kept_until_the_next_return() {
    let b = chain_blob(3000);
    let (d, p, h) = setup_with("noie", &b);
    let mut h = h.notify_done(false);
    let mut k = kvm(2);
    k.request(BASE, 1).unwrap();
    let step = after(&mut h, &mut k, Ok(()));
    assert_eq!(
        step,
        Ok(Step::Answered(Answer::Certificates {
            len: 3000,
            notify_done: false
        }))
    );
    assert_eq!(k.run.immediate_exit, 0);
    assert!(lock_held(&p));
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(r, Ok(()));
    assert!(k.firmware_calls[0].lock_held);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    assert!(!lock_held(&p));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn failures_before_kvm_acts_keep_the_lock_and_the_answer() {
    let b = chain_blob(3000);
    let (d, p, mut h) = setup_with("before", &b);
    let mut k = kvm(2);
    k.request(BASE, 1).unwrap();
    assert!(matches!(
        after(&mut h, &mut k, Ok(())),
        Ok(Step::Answered(Answer::Certificates { .. }))
    ));
    // A signal while the vCPU waits for INIT: EINTR and KVM_EXIT_INTR, twice;
    // then an invalid kvm_dirty_regs: EINVAL. KVM has not looked at the answer.
    for inject in [
        Inject::InitWaitSignal,
        Inject::InitWaitSignal,
        Inject::FailBefore(Errno::EINVAL),
    ] {
        let r = run(&mut k, &p, inject, Guest::Halt);
        let errno = r.unwrap_err();
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::StillPending { errno }));
        assert!(lock_held(&p), "{inject:?}");
        assert!(h.has_request() && k.has_pending());
        assert_eq!(k.run.immediate_exit, 1, "{inject:?}");
        assert!(k.mem.writes.is_empty());
        assert!(k.firmware_calls.is_empty());
    }
    // The next KVM_RUN acts on the answer, under the lock.
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(r, Err(Errno::EINTR));
    assert_eq!(k.firmware_calls.len(), 1);
    assert!(k.firmware_calls[0].lock_held);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::Done));
    assert!(!lock_held(&p));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn too_small_answers_enospc_with_the_exact_page_count() {
    // (blob bytes, guest npages, pages needed)
    for (size, given, needed) in [(4097, 1, 2), (8192, 1, 2), (8193, 2, 3), (120, 0, 1)] {
        let b = chain_blob(size);
        let (d, p, mut h) = setup_with("small", &b);
        let mut k = kvm(4);
        k.request(BASE, given).unwrap();
        assert_eq!(
            after(&mut h, &mut k, Ok(())),
            Ok(Step::Answered(Answer::TooSmall { needed, given }))
        );
        assert_eq!(snp_fields(&k.run), (BASE, needed, ENOSPC));
        assert!(k.mem.writes.is_empty());
        assert!(!lock_held(&p));
        assert_eq!(k.run.immediate_exit, 0);
        let r = run(&mut k, &p, Inject::None, Guest::Halt);
        assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
        assert_eq!(
            k.guest_results,
            [GuestResult {
                vmm_error: GUEST_INVALID_LEN,
                rbx: needed
            }]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn no_certificates_writes_the_empty_table_itself() {
    // KVM 7.0 writes nothing before the exit: ret 0 needs a terminator there.
    let (d, p, mut h) = setup_with("none", &[0u8; 24]);
    let mut k = kvm(2);
    k.request(BASE, 1).unwrap();
    assert_eq!(
        after(&mut h, &mut k, Ok(())),
        Ok(Step::Answered(Answer::NoCertificates))
    );
    assert_eq!(snp_fields(&k.run).2, SNP_OK);
    assert_eq!(k.mem.inner.read(BASE, 24), Some(&[0u8; 24][..]));
    assert_eq!(k.mem.writes.len(), 1);
    assert!(k.mem.inner.bytes[24..].iter().all(|&x| x == FILL));
    assert!(!lock_held(&p));
    // npages 0: nothing to write into.
    k.run.exit_reason = EXIT_HLT;
    assert_eq!(after(&mut h, &mut k, Ok(())), Ok(Step::NotOurs));
    k.request(BASE + 4096, 0).unwrap();
    assert_eq!(
        after(&mut h, &mut k, Ok(())),
        Ok(Step::Answered(Answer::NoCertificates))
    );
    assert!(k.mem.writes.is_empty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn busy_and_host_faults_answer_eagain_or_an_empty_table_never_eio() {
    let b = chain_blob(3000);
    let (d, p, mut h) = setup_with("busy", &b);
    let mut k = kvm(2);
    // An updater holds the lock past the handler's bounded wait.
    let updater = store::open_locked(&p, LockKind::Exclusive, None).unwrap();
    k.request(BASE, 1).unwrap();
    assert_eq!(
        after(&mut h, &mut k, Ok(())),
        Ok(Step::Answered(Answer::Busy))
    );
    assert_eq!(snp_fields(&k.run).2, EAGAIN);
    drop(updater);
    let r = run(&mut k, &p, Inject::None, Guest::Halt);
    assert_eq!(after(&mut h, &mut k, r), Ok(Step::NotOurs));
    assert_eq!(k.guest_results[0].vmm_error, GUEST_BUSY);

    // Host fault: the file is gone.
    std::fs::remove_file(&p).unwrap();
    for (policy, ret) in [
        (FaultPolicy::EmptyTable, SNP_OK),
        (FaultPolicy::Busy, EAGAIN),
    ] {
        let mut h = ReqCertsHandler::new(BlobServer::new(&p).unwrap())
            .abi(Abi::SnpReqCerts)
            .fault_policy(policy);
        let mut k = kvm(2);
        k.request(BASE, 1).unwrap();
        let step = after(&mut h, &mut k, Ok(()));
        assert!(
            matches!(&step, Ok(Step::Answered(Answer::HostFault { policy: q, .. })) if *q == policy),
            "{step:?}"
        );
        assert_eq!(snp_fields(&k.run).2, ret, "{policy:?}");
        assert_ne!(snp_fields(&k.run).2, EIO);
        let wrote_empty = k.mem.inner.read(BASE, 24) == Some(&[0u8; 24][..]);
        assert_eq!(wrote_empty, policy == FaultPolicy::EmptyTable);
        assert_eq!(h.host_faults(), 1);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn back_to_back_requests_and_explicit_release() {
    let b = chain_blob(3000);
    let (d, p, mut h) = setup_with("b2b", &b);
    let mut k = kvm(4);
    k.request(BASE, 1).unwrap();
    assert!(matches!(
        after(&mut h, &mut k, Ok(())),
        Ok(Step::Answered(Answer::Certificates { .. }))
    ));
    // The VMM clears immediate_exit itself (its own choice) and the guest asks
    // again at once: the first lock is released before the second is taken.
    k.run.immediate_exit = 0;
    let r = run(
        &mut k,
        &p,
        Inject::None,
        Guest::Request {
            gpa: BASE + 8192,
            npages: 1,
        },
    );
    assert_eq!(r, Ok(()));
    assert!(matches!(
        after(&mut h, &mut k, r),
        Ok(Step::Answered(Answer::Certificates { .. }))
    ));
    assert_eq!(k.firmware_calls.len(), 1);
    assert!(lock_held(&p) && h.is_holding());
    // The VMM gives up on the vCPU: release frees the lock.
    h.release();
    assert!(!lock_held(&p));
    // A failed run with no answered request outstanding.
    let mut h2 = ReqCertsHandler::new(BlobServer::new(&p).unwrap()).abi(Abi::SnpReqCerts);
    k.run.exit_reason = EXIT_HLT;
    assert_eq!(
        after(&mut h2, &mut k, Err(Errno::EINTR)),
        Ok(Step::RunFailed {
            errno: Errno::EINTR
        })
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hostile_kernel_and_guest_values() {
    let b = chain_blob(3000);
    let (d, p, mut h) = setup_with("hostile", &b);
    let mut k = kvm(2);
    // ret not 0 on a new exit: refused, nothing written.
    k.request(BASE, 1).unwrap();
    let (gpa, n, _) = snp_fields(&k.run);
    let raw: *mut u8 = std::ptr::addr_of_mut!(k.run).cast();
    unsafe { raw.add(48).cast::<u64>().write_unaligned(7) };
    assert_eq!(after(&mut h, &mut k, Ok(())), Err(ExitError::BadRet(7)));
    assert!(k.mem.writes.is_empty() && !lock_held(&p));
    assert_eq!((gpa, n), (BASE, 1));
    // An unaligned gpa (KVM checks it; a buggy one might not), or a buffer
    // outside guest memory: ret 0, no certificates, no lock kept.
    for (gpa, npages) in [(BASE + 1, 1), (BASE + 0x10_0000, 1), (!0xfff, u64::MAX)] {
        k.run.exit_reason = EXIT_SNP_REQ_CERTS;
        unsafe {
            raw.add(32)
                .cast::<[u64; 3]>()
                .write_unaligned([gpa, npages, 0]);
        }
        let step = after(&mut h, &mut k, Ok(()));
        assert!(
            matches!(step, Ok(Step::Answered(Answer::BadBuffer { .. }))),
            "{gpa:#x}: {step:?}"
        );
        assert_eq!(snp_fields(&k.run).2, SNP_OK);
        assert!(!lock_held(&p));
        assert_eq!(k.run.immediate_exit, 0);
        assert!(
            k.mem.writes.iter().all(|w| !w.ok || w.gpa == BASE),
            "{:?}",
            k.mem.writes
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}
