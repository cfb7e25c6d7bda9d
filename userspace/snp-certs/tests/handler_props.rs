//! Property tests of the exit handler.
//!
//! 1. Any `kvm_run` contents (exit reason, among them KVM_EXIT_INTR, type,
//!    status, flags, ret, gpa, npages), any `KVM_RUN` result and any source
//!    behaviour, several returns in a row: no panic, and every call does what
//!    the contract says (`common::check_after_run`: the lock rule, judged on
//!    a failed `KVM_RUN` by `status` alone, the closed set of answers,
//!    nothing written but the answer, nothing beyond the table or the guest's
//!    pages).
//! 2. Against a simulated KVM that follows the contract, with failures
//!    injected before KVM acts (among them a signal while the vCPU waits for
//!    INIT, `exit_reason` KVM_EXIT_INTR), at `immediate_exit`, and after it
//!    acts: every firmware call that gets certificates happens under the lock,
//!    the lock is never held when KVM has no pending request, the handler
//!    has a request pending exactly when KVM has, and KVM never refuses an
//!    answer of the handler.
//! 3. The same against a simulated mainline 7.0 KVM (`KVM_EXIT_SNP_REQ_CERTS`,
//!    `Abi::SnpReqCerts`): firmware calls with certificates under the lock,
//!    `ret` only 0/ENOSPC/EAGAIN, ENOSPC only with a larger page count, no
//!    lock while KVM has no pending request except after a failure that may
//!    have come after KVM acted (the handler keeps it then, by design), and
//!    KVM never refuses an answer.

mod common;

use common::*;
use proptest::prelude::*;
use snp_certs::kvm::kvm_run;
use snp_certs::table::{Builder, CertKind};
use snp_certs::vmgexit::*;

const BASE: u64 = 0x4000_0000;
const MEM_PAGES: u64 = 6;
const FILL: u8 = 0x5a;

fn table(data_len: usize) -> Vec<u8> {
    if data_len == 0 {
        return vec![0; 24]; // no certificates
    }
    Builder::new()
        .add_kind(CertKind::Vcek, vec![0xc3; data_len])
        .build()
        .unwrap()
}

/// Certificate bytes: none (an empty table), any, or a table of one page
/// multiple and a byte either side (the table has two 24-byte entries).
fn data_len_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        4 => 1usize..12000,
        2 => (1usize..4, 0usize..3).prop_map(|(pages, d)| pages * 4096 - 48 - 1 + d),
    ]
}

fn memory() -> RecordingMemory {
    RecordingMemory::new(BASE, (MEM_PAGES * PAGE) as usize, FILL)
}

fn gpa_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0u64..MEM_PAGES + 2).prop_map(|p| BASE + p * PAGE),
        1 => any::<u64>(),
        1 => (0u64..16).prop_map(|k| u64::MAX - k * PAGE - (PAGE - 1)),
        1 => Just(0),
        1 => Just(BASE + 12),
    ]
}

/// Page counts: small, any, and ones whose size in bytes is 2^64 or more
/// (2^52 + k pages: a 64-bit multiplication by 4096 wraps to k pages).
fn npages_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..8,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
        1 => (0u64..4).prop_map(|k| (1u64 << 52) + k),
    ]
}

fn result_strategy() -> impl Strategy<Value = Result<(), Errno>> {
    prop_oneof![
        4 => Just(Ok(())),
        1 => Just(Err(Errno::EINTR)),
        1 => Just(Err(Errno::EINVAL)),
        1 => Just(Err(Errno::EFAULT)),
    ]
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        4 => Just(Mode::Serve),
        1 => Just(Mode::Busy),
        1 => Just(Mode::Unavailable),
    ]
}

fn policy_strategy() -> impl Strategy<Value = FaultPolicy> {
    prop_oneof![Just(FaultPolicy::EmptyTable), Just(FaultPolicy::Busy)]
}

fn fields_strategy() -> impl Strategy<Value = Fields> {
    (
        prop_oneof![4 => Just(EXIT_VMGEXIT), 1 => Just(EXIT_INTR), 1 => any::<u32>()],
        prop_oneof![4 => Just(TYPE_REQ_CERTS), 1 => any::<u32>()],
        prop_oneof![3 => Just(PENDING), 2 => Just(DONE), 1 => any::<u8>()],
        any::<u8>(),
        any::<u32>(),
        gpa_strategy(),
        npages_strategy(),
    )
        .prop_map(
            |(exit_reason, ty, status, flags, ret, gpa, npages)| Fields {
                exit_reason,
                ty,
                gpa,
                npages,
                ret,
                flags,
                status,
            },
        )
}

/// One `after_run` call, checked. `pending`: whether, by the contract, a
/// request the handler answered is pending (updated).
fn call(
    h: &mut ReqCertsHandler<Mock>,
    run: &mut kvm_run,
    mem: &mut RecordingMemory,
    result: Result<(), Errno>,
    (policy, notify): (FaultPolicy, bool),
    pending: &mut bool,
) -> Result<Result<Step, ExitError>, String> {
    let before = fields(run);
    let held_before = h.is_holding();
    mem.writes.clear();
    let step = h.after_run(run, result, mem);
    let blob = h.source().blob.clone();
    *pending = check_after_run(&Call {
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
    })?;
    Ok(step)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_return_of_kvm_run_gets_the_contracts_answer(
        data_len in data_len_strategy(),
        notify in any::<bool>(),
        policy in policy_strategy(),
        steps in prop::collection::vec((fields_strategy(), result_strategy(), mode_strategy()), 1..6),
    ) {
        let mut h = ReqCertsHandler::new(Mock::new(table(data_len)))
            .notify_done(notify)
            .fault_policy(policy);
        let mut mem = memory();
        let mut run = kvm_run::default();
        let mut pending = false;
        for (f, result, mode) in steps {
            set_fields(&mut run, f);
            h.source_mut().mode = mode;
            let r = call(&mut h, &mut run, &mut mem, result, (policy, notify), &mut pending);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
        h.release();
        prop_assert!(!h.source().held);
    }

    #[test]
    fn lock_rule_holds_against_a_simulated_kvm(
        data_len in data_len_strategy(),
        notify in any::<bool>(),
        policy in policy_strategy(),
        first in (0u64..MEM_PAGES + 2, 0u64..5),
        ops in prop::collection::vec((
            prop_oneof![
                4 => Just(Inject::None),
                1 => Just(Inject::FailBefore(Errno::EINTR)),
                1 => Just(Inject::FailBefore(Errno::EINVAL)),
                2 => Just(Inject::InitWaitSignal),
                1 => Just(Inject::ImmediateExit),
                1 => Just(Inject::FailAfter(Errno::EFAULT)),
                1 => Just(Inject::FailAfter(Errno::EINTR)),
            ],
            prop_oneof![
                1 => Just(None),
                3 => (0u64..MEM_PAGES + 2, 0u64..5).prop_map(Some),
            ],
            mode_strategy(),
        ), 1..16),
    ) {
        let mut h = ReqCertsHandler::new(Mock::new(table(data_len)))
            .notify_done(notify)
            .fault_policy(policy);
        let mut kvm = FakeKvm::new(memory());
        let mut r = kvm.request(BASE + first.0 * PAGE, first.1);
        let mut pending = false;
        for (inject, next, mode) in ops {
            h.source_mut().mode = mode;
            let c = call(&mut h, &mut kvm.run, &mut kvm.mem, r, (policy, notify), &mut pending);
            prop_assert!(c.is_ok(), "{}", c.unwrap_err());
            // Never holding a lock KVM has no request for, and a request
            // pending exactly when KVM has one it has not acted on.
            prop_assert!(!h.is_holding() || kvm.has_pending());
            prop_assert_eq!(h.has_request(), kvm.has_pending());
            let next = match next {
                None => Guest::Halt,
                Some((page, npages)) => Guest::Request { gpa: BASE + page * PAGE, npages },
            };
            r = kvm.kvm_run(inject, h.source().held, next);
        }
        let c = call(&mut h, &mut kvm.run, &mut kvm.mem, r, (policy, notify), &mut pending);
        prop_assert!(c.is_ok(), "{}", c.unwrap_err());
        prop_assert_eq!(h.has_request(), kvm.has_pending());
        for fw in &kvm.firmware_calls {
            prop_assert!(fw.lock_held || !fw.certs, "firmware got certificates without the lock");
        }
        prop_assert_eq!(kvm.refused, 0, "KVM refused an answer of the handler");
        h.release();
        prop_assert!(!h.source().held);
    }

    #[test]
    fn lock_rule_holds_against_a_simulated_7_0_kvm(
        data_len in data_len_strategy(),
        notify in any::<bool>(),
        policy in policy_strategy(),
        first in (0u64..MEM_PAGES + 2, 0u64..5),
        ops in prop::collection::vec((
            prop_oneof![
                4 => Just(Inject::None),
                1 => Just(Inject::FailBefore(Errno::EINVAL)),
                2 => Just(Inject::InitWaitSignal),
                1 => Just(Inject::FailAfter(Errno::EIO)),
            ],
            prop_oneof![
                1 => Just(None),
                3 => (0u64..MEM_PAGES + 2, 0u64..5).prop_map(Some),
            ],
            mode_strategy(),
            any::<bool>(),
        ), 1..16),
    ) {
        let mut h = ReqCertsHandler::new(Mock::new(table(data_len)))
            .abi(Abi::SnpReqCerts)
            .notify_done(notify)
            .fault_policy(policy);
        let mut kvm = FakeKvm7::new(memory());
        let mut r = kvm.request(BASE + first.0 * PAGE, first.1);
        // Whether the last failure may have come after KVM acted.
        let mut failed_after = false;
        for (inject, next, mode, vmm_clears_ie) in ops {
            h.source_mut().mode = mode;
            let new_request = r.is_ok() && kvm.run.exit_reason == EXIT_SNP_REQ_CERTS;
            let guest_npages = snp_fields(&kvm.run).1;
            let step = h.after_run(&mut kvm.run, r, &mut kvm.mem);
            prop_assert!(step.is_ok(), "{step:?}");
            // A failure after KVM acted looks like one before it: the handler
            // keeps the request (and lock) until a return that settles it.
            if !matches!(step, Ok(Step::StillPending { .. })) {
                failed_after = false;
            }
            let (_, npages, ret) = snp_fields(&kvm.run);
            if new_request {
                prop_assert!(matches!(ret, SNP_OK | ENOSPC | EAGAIN), "ret {ret}");
                prop_assert!(ret != ENOSPC || npages > guest_npages);
            }
            if !failed_after {
                prop_assert!(!h.is_holding() || kvm.has_pending());
                prop_assert_eq!(h.has_request(), kvm.has_pending());
            }
            if vmm_clears_ie && !h.is_holding() {
                kvm.run.immediate_exit = 0;
            }
            let next = match next {
                None => Guest::Halt,
                Some((page, npages)) => Guest::Request { gpa: BASE + page * PAGE, npages },
            };
            let had = kvm.has_pending();
            r = kvm.kvm_run(inject, h.source().held, next);
            failed_after |= had && matches!(inject, Inject::FailAfter(_));
        }
        prop_assert!(h.after_run(&mut kvm.run, r, &mut kvm.mem).is_ok());
        for fw in &kvm.firmware_calls {
            prop_assert!(fw.lock_held || !fw.certs, "firmware got certificates without the lock");
        }
        prop_assert_eq!(kvm.refused, 0, "KVM refused an answer of the handler");
        h.release();
        prop_assert!(!h.source().held);
    }
}
