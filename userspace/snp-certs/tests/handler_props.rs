//! Property test of the exit handler: arbitrary kvm_run contents (exit reason,
//! type, status, flags, gpa, npages) and source behaviour never make it panic,
//! and every answer is the one the protocol defines.

use proptest::prelude::*;
use snp_certs::kvm::{self, kvm_run};
use snp_certs::table::{self, Builder, CertKind};
use snp_certs::vmgexit::*;

/// A source that serves a fixed blob, or fails as told, and tracks the lock.
struct Mock {
    blob: Vec<u8>,
    mode: u8, // 0 ok, 1 busy, 2 failed
    held: bool,
    acquires: u32,
}

impl CertSource for Mock {
    fn acquire(&mut self) -> Result<&[u8], SourceError> {
        assert!(!self.held, "acquire while held: the handler leaked a lock");
        match self.mode {
            1 => Err(SourceError::Busy),
            2 => Err(SourceError::Failed("injected".into())),
            _ => {
                self.held = true;
                self.acquires += 1;
                Ok(&self.blob)
            }
        }
    }
    fn release(&mut self) {
        self.held = false;
    }
}

const BASE: u64 = 0x4000_0000;
const MEM: usize = 6 * 4096;

fn run_with(reason: u32, ty: u32, status: u8, flags: u8, gpa: u64, npages: u64) -> kvm_run {
    let mut run = kvm_run {
        exit_reason: reason,
        ..Default::default()
    };
    run.__bindgen_anon_1.vmgexit.type_ = ty;
    run.__bindgen_anon_1
        .vmgexit
        .__bindgen_anon_1
        .req_certs
        .data_gpa = gpa;
    run.__bindgen_anon_1
        .vmgexit
        .__bindgen_anon_1
        .req_certs
        .data_npages = npages;
    run.__bindgen_anon_1
        .vmgexit
        .__bindgen_anon_1
        .req_certs
        .status = status;
    run.__bindgen_anon_1
        .vmgexit
        .__bindgen_anon_1
        .req_certs
        .flags = flags;
    run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs.ret = 0x5a5a_5a5a;
    run
}

fn fields(run: &kvm_run) -> (u64, u64, u32, u8, u8) {
    // SAFETY: integer-only union fields, any bit pattern is valid.
    let r = unsafe { run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs };
    (r.data_gpa, r.data_npages, r.ret, r.flags, r.status)
}

fn gpa_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..6).prop_map(|p| BASE + p * 4096),
        any::<u64>(),
        (0u64..16).prop_map(|k| u64::MAX - k * 4096 - 4095),
        Just(BASE + 12),
    ]
}

fn npages_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..8, any::<u64>(), Just(u64::MAX)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_exit_gets_a_defined_answer(
        reason in prop_oneof![Just(kvm::KVM_EXIT_VMGEXIT), any::<u32>()],
        ty in prop_oneof![Just(kvm::KVM_USER_VMGEXIT_REQ_CERTS), any::<u32>()],
        status in prop_oneof![Just(STATUS_PENDING), Just(STATUS_DONE), any::<u8>()],
        flags in any::<u8>(),
        gpa in gpa_strategy(),
        npages in npages_strategy(),
        mode in 0u8..3,
        data_len in 1usize..12000,
        notify in any::<bool>(),
        steps in 1usize..4,
    ) {
        let blob = Builder::new().add_kind(CertKind::Vcek, vec![0xc3; data_len]).build().unwrap();
        let need = table::pages_needed(blob.len());
        let mut h = ReqCertsHandler::new(Mock { blob: blob.clone(), mode, held: false, acquires: 0 }).notify_done(notify);
        let mut mem = FlatMemory::new(BASE, MEM);
        for _ in 0..steps {
            let mut run = run_with(reason, ty, status, flags, gpa, npages);
            let before = fields(&run);
            let was_holding = h.is_holding();
            let out = h.handle(&mut run, &mut mem);
            let after = fields(&run);
            match out {
                Err(ExitError::NotVmgexit(_)) | Err(ExitError::UnknownType(_)) | Err(ExitError::DoneWithoutLock) => {
                    prop_assert_eq!(after, before);
                }
                Err(ExitError::BadStatus(s)) => {
                    prop_assert!(s != STATUS_PENDING && s != STATUS_DONE);
                    prop_assert_eq!(after.2, RET_GENERIC);
                    prop_assert_eq!(after.3, 0);
                }
                Ok(Outcome::Released) => {
                    prop_assert!(was_holding);
                    prop_assert!(!h.is_holding());
                    prop_assert_eq!(after, before);
                }
                Ok(Outcome::Served { len, holding }) => {
                    prop_assert_eq!(after.2, RET_OK);
                    prop_assert_eq!(len, blob.len());
                    prop_assert!(npages >= need);
                    prop_assert_eq!(gpa % 4096, 0);
                    prop_assert_eq!(mem.read(gpa, len), Some(blob.as_slice()));
                    prop_assert_eq!(holding, notify);
                    prop_assert_eq!(after.3, if notify { FLAG_NOTIFY_DONE } else { 0 });
                }
                Ok(Outcome::TooSmall { needed, given }) => {
                    prop_assert_eq!(after.2, RET_INVALID_LEN);
                    prop_assert_eq!(needed, need);
                    prop_assert_eq!(given, npages);
                    prop_assert_eq!(after.1, need);
                    prop_assert!(npages < need);
                }
                Ok(Outcome::Busy) => {
                    prop_assert_eq!(mode, 1);
                    prop_assert_eq!(after.2, RET_BUSY);
                }
                Ok(Outcome::Failed(_)) => prop_assert_eq!(after.2, RET_GENERIC),
            }
            // The source's lock is held exactly when the handler says so.
            prop_assert_eq!(h.source().held, h.is_holding());
        }
    }
}
