//! Fuzz the KVM_EXIT_VMGEXIT handler: arbitrary kvm_run bytes (exit reason,
//! type, status, flags, gpa, npages, everything else) and source behaviour, a few
//! exits in a row. It must never panic, and each answer must be the defined one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snp_certs::kvm::kvm_run;
use snp_certs::table::{self, Builder, CertKind};
use snp_certs::vmgexit::*;

struct Mock {
    blob: Vec<u8>,
    mode: u8,
    held: bool,
}

impl CertSource for Mock {
    fn acquire(&mut self) -> Result<&[u8], SourceError> {
        assert!(!self.held, "handler acquired twice without release");
        match self.mode % 4 {
            1 => Err(SourceError::Busy),
            2 => Err(SourceError::Failed("injected".into())),
            _ => {
                self.held = true;
                Ok(&self.blob)
            }
        }
    }
    fn release(&mut self) {
        self.held = false;
    }
}

const RUN: usize = std::mem::size_of::<kvm_run>();

fn load_run(bytes: &[u8]) -> kvm_run {
    let mut run = kvm_run::default();
    let n = bytes.len().min(RUN);
    // SAFETY: kvm_run is a repr(C) plain-data struct made only of integers,
    // integer arrays and unions of those (uapi: addresses are __u64), so any
    // byte pattern is a valid value; we copy at most size_of::<kvm_run>() bytes
    // into it from a slice at least that long.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&mut run as *mut kvm_run).cast::<u8>(), n);
    }
    run
}

fn req(run: &kvm_run) -> (u64, u64, u32, u8, u8) {
    // SAFETY: integer-only union fields.
    let r = unsafe { run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs };
    (r.data_gpa, r.data_npages, r.ret, r.flags, r.status)
}

fuzz_target!(|data: &[u8]| {
    // Layout: [ctl: 8 bytes][kvm_run bytes for each exit, 64 bytes each]
    // (the first 64 bytes of kvm_run cover exit_reason at 8 and the whole
    // vmgexit member at 32..64; the rest stays zero).
    if data.len() < 8 {
        return;
    }
    let (ctl, rest) = data.split_at(8);
    let mode = ctl[0];
    let data_len = 1 + (u16::from_le_bytes([ctl[1], ctl[2]]) as usize % 20000);
    let notify = ctl[3] & 1 == 1;
    let base = u64::from(ctl[4]) << 12;
    let blob = Builder::new()
        .allow_oversize(true)
        .add_kind(CertKind::Vcek, vec![0x5c; data_len])
        .build()
        .unwrap();
    let need = table::pages_needed(blob.len());
    let mut h = ReqCertsHandler::new(Mock {
        blob: blob.clone(),
        mode,
        held: false,
    })
    .notify_done(notify);
    let mut mem = FlatMemory::new(base, 8 * 4096);
    for chunk in rest.chunks(64).take(4) {
        let mut run = load_run(chunk);
        let before = req(&run);
        let was_holding = h.is_holding();
        let out = h.handle(&mut run, &mut mem);
        let after = req(&run);
        match out {
            Err(ExitError::NotVmgexit(_))
            | Err(ExitError::UnknownType(_))
            | Err(ExitError::DoneWithoutLock) => {
                assert_eq!(after, before)
            }
            Err(ExitError::BadStatus(_)) => assert_eq!((after.2, after.3), (RET_GENERIC, 0)),
            Ok(Outcome::Released) => assert!(was_holding && !h.is_holding()),
            Ok(Outcome::Served { len, .. }) => {
                assert_eq!(after.2, RET_OK);
                assert!(before.1 >= need && before.0 % 4096 == 0);
                assert_eq!(mem.read(before.0, len), Some(blob.as_slice()));
            }
            Ok(Outcome::TooSmall { needed, .. }) => {
                assert_eq!((after.1, after.2, needed), (need, RET_INVALID_LEN, need));
            }
            Ok(Outcome::Busy) => assert_eq!(after.2, RET_BUSY),
            Ok(Outcome::Failed(_)) => assert_eq!(after.2, RET_GENERIC),
        }
        assert_eq!(h.source().held, h.is_holding());
    }
});
