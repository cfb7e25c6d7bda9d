//! Fuzz the KVM_EXIT_VMGEXIT handler (`ReqCertsHandler::after_run`) against
//! the contract, with the checks of `tests/common` (shared with the property
//! tests). Two kinds of input, chosen by the first byte:
//!
//! * raw: a few returns of `KVM_RUN`, each with its result (success, EINTR,
//!   EINVAL, EFAULT), the source's behaviour, and the first 64 bytes of
//!   `kvm_run` (exit reason at 8, the whole `vmgexit` member at 32..64) from
//!   the fuzzer, as a buggy or hostile kernel might leave them;
//! * model: a simulated KVM that follows the contract, with failures injected
//!   before it acts on the answer (among them a signal while the vCPU waits
//!   for INIT, which sets `exit_reason` to KVM_EXIT_INTR), at
//!   `immediate_exit`, after it acts, and in the firmware call (KVM_RUN fails
//!   and the guest gets the generic error); every firmware call that gets
//!   certificates must happen under the lock, the lock must never be held
//!   when KVM has no pending request, the handler must have a request pending
//!   exactly when KVM has, and KVM must never refuse an answer.
//!
//! * raw 7.0 and model 7.0 (kind 2 and 3): the same for mainline 7.0's
//!   `KVM_EXIT_SNP_REQ_CERTS` (`Abi::SnpReqCerts`, `common::FakeKvm`): raw
//!   returns must never panic, and a new request gets only `ret` 0, ENOSPC
//!   (with a larger page count) or EAGAIN and no write beyond `npages`
//!   pages; the model must see every firmware call that gets certificates
//!   under the lock, a lock only while KVM has a request (or after a failure
//!   that may have come after KVM acted, which the handler errs on holding
//!   through), and no refused answer.
//!
//! Any broken rule or panic is a crash.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use libfuzzer_sys::fuzz_target;
use snp_certs::kvm::kvm_run;
use snp_certs::table::{Builder, CertKind};
use snp_certs::vmgexit::*;

const RUN: usize = std::mem::size_of::<kvm_run>();
const MEM_PAGES: u64 = 8;

fn load_run(bytes: &[u8]) -> kvm_run {
    let mut run = kvm_run::default();
    let n = bytes.len().min(RUN);
    // SAFETY: kvm_run is a repr(C) plain-data struct made only of integers,
    // integer arrays and unions of those (uapi: addresses are __u64), so any
    // byte pattern is a valid value; at most size_of::<kvm_run>() bytes are
    // copied into it, from a slice at least `n` bytes long.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut run as *mut kvm_run).cast::<u8>(), n);
    }
    run
}

fn result(sel: u8) -> Result<(), Errno> {
    match sel % 5 {
        2 => Err(Errno::EINTR),
        3 => Err(Errno::EINVAL),
        4 => Err(Errno::EFAULT),
        _ => Ok(()),
    }
}

fn mode(sel: u8) -> Mode {
    match sel % 4 {
        1 => Mode::Busy,
        2 => Mode::Unavailable,
        _ => Mode::Serve,
    }
}

/// One checked `after_run` call. `pending`: whether, by the contract, a
/// request the handler answered is pending (updated).
fn call(
    h: &mut ReqCertsHandler<Mock>,
    run: &mut kvm_run,
    mem: &mut RecordingMemory,
    result: Result<(), Errno>,
    (policy, notify): (FaultPolicy, bool),
    pending: &mut bool,
) {
    let before = fields(run);
    let held_before = h.is_holding();
    mem.writes.clear();
    let step = h.after_run(run, result, mem);
    let blob = h.source().blob.clone();
    let checked = check_after_run(&Call {
        pending_before: *pending,
        before,
        after: fields(run),
        result,
        step: &step,
        held_before,
        held_after: h.is_holding(),
        has_request: h.has_request(),
        source_held: h.source().held,
        blob: &blob,
        mode: h.source().mode,
        notify,
        policy,
        mem,
        writes: &mem.writes,
    });
    match checked {
        Ok(p) => *pending = p,
        Err(e) => panic!("contract broken: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    // [kind][len lo][len hi][options][base page] then steps
    let Some((ctl, steps)) = data.split_first_chunk::<5>() else {
        return;
    };
    let data_len = usize::from(u16::from_le_bytes([ctl[1], ctl[2]])) % 20000;
    let notify = ctl[3] & 1 == 1;
    let policy = if ctl[3] & 2 == 0 {
        FaultPolicy::EmptyTable
    } else {
        FaultPolicy::Busy
    };
    let base = u64::from(ctl[4]) << 12;
    let blob = if data_len == 0 {
        vec![0; 24] // no certificates
    } else {
        Builder::new()
            .allow_oversize(true)
            .add_kind(CertKind::Vcek, vec![0x5c; data_len])
            .build()
            .unwrap()
    };
    let mut h = ReqCertsHandler::new(Mock::new(blob))
        .notify_done(notify)
        .fault_policy(policy);
    let mem = RecordingMemory::new(base, (MEM_PAGES * PAGE) as usize, 0x5a);

    if ctl[0] % 4 >= 2 {
        snp_7_0(h.abi(Abi::SnpReqCerts), mem, ctl[0] % 4 == 3, base, steps);
        return;
    }
    if ctl[0] & 1 == 0 {
        // raw: [result][mode][64 bytes of kvm_run] per return of KVM_RUN
        let mut mem = mem;
        let mut pending = false;
        for chunk in steps.chunks(66).take(6) {
            let [r, m, run_bytes @ ..] = chunk else {
                break;
            };
            let mut run = load_run(run_bytes);
            h.source_mut().mode = mode(*m);
            let result = result(*r);
            call(
                &mut h,
                &mut run,
                &mut mem,
                result,
                (policy, notify),
                &mut pending,
            );
        }
    } else {
        // model: [inject][guest page][guest npages][mode] per KVM_RUN
        let mut kvm = FakeKvm::new(Abi::Vmgexit, mem);
        let mut r = kvm.request(base, 1);
        let mut pending = false;
        let opts = (policy, notify);
        for chunk in steps.chunks(4).take(24) {
            let &[inject, page, npages, m] = chunk else {
                break;
            };
            h.source_mut().mode = mode(m);
            call(&mut h, &mut kvm.run, &mut kvm.mem, r, opts, &mut pending);
            assert!(
                !h.is_holding() || kvm.has_pending(),
                "lock held without a request"
            );
            assert_eq!(h.has_request(), kvm.has_pending(), "pending request");
            let inject = match inject % 9 {
                1 => Inject::FailBefore(Errno::EINTR),
                2 => Inject::FailBefore(Errno::EINVAL),
                3 => Inject::FailAfter(Errno::EFAULT),
                4 => Inject::InitWaitSignal,
                5 => Inject::ImmediateExit,
                6 => Inject::FailAfter(Errno::EINTR),
                7 => Inject::FirmwareFails(Errno::EIO),
                _ => Inject::None,
            };
            let next = if page == 0 {
                Guest::Halt
            } else {
                Guest::Request {
                    gpa: base + u64::from(page % 10) * PAGE,
                    npages: u64::from(npages % 6),
                }
            };
            r = kvm.kvm_run(inject, h.source().held, next);
        }
        call(&mut h, &mut kvm.run, &mut kvm.mem, r, opts, &mut pending);
        assert_eq!(h.has_request(), kvm.has_pending(), "pending request");
        for fw in &kvm.firmware_calls {
            assert!(
                fw.lock_held || !fw.certs,
                "firmware got certificates without the lock"
            );
        }
        assert_eq!(kvm.refused, 0, "KVM refused an answer of the handler");
    }
    h.release();
    assert!(!h.source().held);
});

/// Kinds 2 (raw) and 3 (model): mainline 7.0's `KVM_EXIT_SNP_REQ_CERTS`.
fn snp_7_0(
    mut h: ReqCertsHandler<Mock>,
    mem: RecordingMemory,
    model: bool,
    base: u64,
    steps: &[u8],
) {
    if !model {
        // [result][mode][64 bytes of kvm_run] per return of KVM_RUN
        let mut mem = mem;
        for chunk in steps.chunks(66).take(6) {
            let [r, m, run_bytes @ ..] = chunk else {
                break;
            };
            let mut run = load_run(run_bytes);
            h.source_mut().mode = mode(*m);
            let new_request = result(*r).is_ok() && run.exit_reason == EXIT_SNP_REQ_CERTS;
            let (gpa, given, ret0) = snp_fields(&run);
            mem.writes.clear();
            let step = h.after_run(&mut run, result(*r), &mut mem);
            let (_, npages, ret) = snp_fields(&run);
            if new_request && ret0 == 0 {
                assert!(matches!(step, Ok(Step::Answered(_))), "{step:?}");
                assert!(matches!(ret, SNP_OK | ENOSPC | EAGAIN), "ret {ret}");
                assert!(ret != ENOSPC || npages > given, "ENOSPC without more pages");
                let room = given.saturating_mul(PAGE);
                for w in &mem.writes {
                    assert!(
                        w.gpa >= gpa && w.gpa - gpa + w.len as u64 <= room,
                        "write {w:?} past npages"
                    );
                }
            }
        }
    } else {
        // [inject][guest page][guest npages][mode] per KVM_RUN
        let mut kvm = FakeKvm::new(Abi::SnpReqCerts, mem);
        let mut r = kvm.request(base, 1);
        let mut unsure = false;
        for chunk in steps.chunks(4).take(24) {
            let &[inject, page, npages, m] = chunk else {
                break;
            };
            h.source_mut().mode = mode(m);
            let step = h.after_run(&mut kvm.run, r, &mut kvm.mem);
            assert!(step.is_ok(), "{step:?}");
            if !matches!(step, Ok(Step::StillPending { .. })) {
                unsure = false;
            }
            if !unsure {
                assert!(
                    !h.is_holding() || kvm.has_pending(),
                    "lock held without a request"
                );
                assert_eq!(h.has_request(), kvm.has_pending(), "pending request");
            }
            let inject = match inject % 5 {
                1 => Inject::FailBefore(Errno::EINVAL),
                2 => Inject::InitWaitSignal,
                3 => Inject::FailAfter(Errno::EIO),
                4 => Inject::FirmwareFails(Errno::EIO),
                _ => Inject::None,
            };
            let next = if page == 0 {
                Guest::Halt
            } else {
                Guest::Request {
                    gpa: base + u64::from(page % 10) * PAGE,
                    npages: u64::from(npages % 6),
                }
            };
            let had = kvm.has_pending();
            r = kvm.kvm_run(inject, h.source().held, next);
            unsure |= had && matches!(inject, Inject::FailAfter(_) | Inject::FirmwareFails(_));
        }
        assert!(h.after_run(&mut kvm.run, r, &mut kvm.mem).is_ok());
        for fw in &kvm.firmware_calls {
            assert!(
                fw.lock_held || !fw.certs,
                "firmware got certificates without the lock"
            );
        }
        assert_eq!(kvm.refused, 0, "KVM refused an answer of the handler");
    }
    h.release();
    assert!(!h.source().held);
}
