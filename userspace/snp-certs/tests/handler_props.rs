//! Property tests of the exit handler.
//!
//! 1. Any `kvm_run` contents (exit reason, among them KVM_EXIT_INTR, type,
//!    status, flags, ret, gpa, npages), any `KVM_RUN` result and any source
//!    behaviour, several returns in a row: no panic, and every call does what
//!    the contract says (`common::check_after_run`: the lock rule, judged on
//!    a failed `KVM_RUN` by `status` alone, the closed set of answers,
//!    nothing written but the answer, nothing beyond the table or the guest's
//!    pages).
//! 2. Against a simulated KVM that follows the contract of either ABI (one
//!    property, the ABI a parameter: the series' `KVM_EXIT_VMGEXIT` and
//!    mainline 7.0's `KVM_EXIT_SNP_REQ_CERTS` as the series has it), with
//!    failures injected before KVM acts (among them a signal while the vCPU
//!    waits for INIT, `exit_reason` KVM_EXIT_INTR), at `immediate_exit`,
//!    after it acts, and in the firmware call: every firmware call that gets
//!    certificates happens under the lock, the lock is never held when KVM
//!    has no pending request, the handler has a request pending exactly when
//!    KVM has, and KVM never refuses an answer of the handler; every call is
//!    checked against the ABI's contract (the series' in full with
//!    `check_after_run`; on 7.0 `ret` only 0/ENOSPC/EAGAIN, ENOSPC only with
//!    a larger page count, no write past `npages` pages). On 7.0 a failure
//!    that may have come after KVM acted looks like one before it, so there
//!    the lock and pending checks wait for the next return that settles it
//!    (the handler keeps the lock meanwhile, by design).

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
        spec in prop_oneof![Just(SERIES), Just(MAINLINE_7_0)],
        data_len in data_len_strategy(),
        notify in any::<bool>(),
        policy in policy_strategy(),
        first in (0u64..MEM_PAGES + 2, 0u64..5),
        ops in prop::collection::vec((
            prop_oneof![
                4 => Just(Inject::None),
                1 => Just(Inject::FailBefore(Errno::EINTR)),
                1 => Just(Inject::FailBefore(Errno::EINVAL)),
                1 => Just(Inject::FailBefore(Errno::EAGAIN)),
                2 => Just(Inject::InitWaitSignal),
                1 => Just(Inject::ImmediateExit),
                1 => Just(Inject::FailAfter(Errno::EFAULT)),
                1 => Just(Inject::FailAfter(Errno::EINTR)),
                1 => Just(Inject::FirmwareFails(Errno::EIO)),
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
            .abi(spec.abi)
            .notify_done(notify)
            .fault_policy(policy);
        let mut kvm = FakeKvm::new(spec.abi, memory());
        let mut r = kvm.request(BASE + first.0 * PAGE, first.1);
        // The series: whether, by the contract, a request the handler
        // answered is pending (check_after_run).
        let mut pending = false;
        // 7.0: whether the last failure may have come after KVM acted; it
        // looks like one before, and the handler keeps the request (and
        // lock) until a return that settles it.
        let mut unsure = false;
        for (inject, next, mode, vmm_clears_ie) in ops {
            h.source_mut().mode = mode;
            let step = checked_call(&spec, &mut h, &mut kvm, r, (policy, notify), &mut pending)?;
            if !matches!(step, Ok(Step::StillPending { .. })) {
                unsure = false;
            }
            if !unsure {
                // Never holding a lock KVM has no request for, and a request
                // pending exactly when KVM has one it has not acted on.
                prop_assert!(!h.is_holding() || kvm.has_pending());
                prop_assert_eq!(h.has_request(), kvm.has_pending());
            }
            // A VMM that uses immediate_exit itself may clear it.
            if vmm_clears_ie && !h.is_holding() {
                kvm.run.immediate_exit = 0;
            }
            // 7.0: EINTR with exit_reason left alone is the immediate_exit
            // return, after KVM acted (api.rst); before acting, EINTR comes
            // with KVM_EXIT_INTR (InitWaitSignal).
            let inject = match (spec.abi, inject) {
                (Abi::SnpReqCerts, Inject::FailBefore(Errno::EINTR)) => Inject::InitWaitSignal,
                (_, i) => i,
            };
            let next = match next {
                None => Guest::Halt,
                Some((page, npages)) => Guest::Request { gpa: BASE + page * PAGE, npages },
            };
            let had = kvm.has_pending();
            r = kvm.kvm_run(inject, h.source().held, next);
            unsure |= spec.abi == Abi::SnpReqCerts
                && had
                && matches!(inject, Inject::FailAfter(_) | Inject::FirmwareFails(_));
        }
        let step = checked_call(&spec, &mut h, &mut kvm, r, (policy, notify), &mut pending)?;
        prop_assert!(step.is_ok(), "{step:?}");
        if !unsure || !matches!(step, Ok(Step::StillPending { .. })) {
            prop_assert_eq!(h.has_request(), kvm.has_pending());
        }
        for fw in &kvm.firmware_calls {
            prop_assert!(fw.lock_held || !fw.certs, "firmware got certificates without the lock");
        }
        prop_assert_eq!(kvm.refused, 0, "KVM refused an answer of the handler");
        h.release();
        prop_assert!(!h.source().held);
    }
}

/// One `after_run` call on the simulated KVM, checked against the ABI's
/// contract: the series' in full (`check_after_run`); 7.0's answers (a new
/// request gets only `ret` 0, ENOSPC with a larger page count, or EAGAIN,
/// and no write past `npages` pages; no `ExitError` from a correct KVM).
fn checked_call(
    spec: &Spec,
    h: &mut ReqCertsHandler<Mock>,
    kvm: &mut FakeKvm,
    result: Result<(), Errno>,
    opts: (FaultPolicy, bool),
    pending: &mut bool,
) -> Result<Result<Step, ExitError>, TestCaseError> {
    if spec.abi == Abi::Vmgexit {
        return call(h, &mut kvm.run, &mut kvm.mem, result, opts, pending)
            .map_err(TestCaseError::fail);
    }
    let new_request = result.is_ok() && kvm.run.exit_reason == EXIT_SNP_REQ_CERTS;
    let (gpa, given, _) = snp_fields(&kvm.run);
    kvm.mem.writes.clear();
    let step = h.after_run(&mut kvm.run, result, &mut kvm.mem);
    prop_assert!(step.is_ok(), "{step:?}");
    if new_request {
        let (_, npages, ret) = snp_fields(&kvm.run);
        prop_assert!(matches!(step, Ok(Step::Answered(_))), "{step:?}");
        prop_assert!(matches!(ret, SNP_OK | ENOSPC | EAGAIN), "ret {ret}");
        prop_assert!(ret != ENOSPC || npages > given, "ENOSPC without more pages");
        let room = u128::from(given) * u128::from(PAGE);
        for w in &kvm.mem.writes {
            prop_assert!(
                w.gpa == gpa && w.len as u128 <= room,
                "write {w:?} past npages {given}"
            );
        }
    }
    Ok(step)
}
