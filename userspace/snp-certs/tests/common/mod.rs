//! Shared by the exit-handler tests, and included by the `exit_handler` fuzz
//! target: the contracts' values written out as literals (per ABI: [`Spec`]),
//! a simulated KVM that follows the contract of either ABI ([`FakeKvm`]), a
//! mock certificate source, guest memory that records the handler's writes,
//! and [`check_after_run`], which checks one call of
//! `ReqCertsHandler::after_run` against the series' contract.
#![allow(dead_code)]

use snp_certs::kvm::kvm_run;
use snp_certs::vmgexit::{
    Abi, Answer, CertSource, Errno, ExitError, FaultPolicy, FlatMemory, GuestMemory,
    GuestMemoryError, SourceError, Step,
};

// The contract's numbers, from the series' Documentation/virt/kvm/api.rst and
// include/uapi/linux/kvm.h, written out here rather than taken from the crate.
pub const EXIT_VMGEXIT: u32 = 40;
/// KVM_EXIT_HLT, standing for "any other exit".
pub const EXIT_HLT: u32 = 5;
/// KVM_EXIT_INTR: what a signal leaves in `exit_reason`, also on the path
/// where `KVM_RUN` fails before KVM acted on the answer (the vCPU waits for
/// INIT).
pub const EXIT_INTR: u32 = 10;
pub const TYPE_REQ_CERTS: u32 = 1;
pub const RET_0: u32 = 0;
/// SW_EXITINFO2 0x0000000100000000: VMM error 1.
pub const INVALID_LEN: u32 = 1;
/// SW_EXITINFO2 0x0000000200000000: VMM error 2.
pub const BUSY: u32 = 2;
/// SW_EXITINFO2 0x8000000000000000: VMM error 1 << 31.
pub const GENERIC: u32 = 0x8000_0000;
pub const NOTIFY_DONE: u8 = 1;
pub const PENDING: u8 = 0;
pub const DONE: u8 = 1;
pub const CAP_EXIT_VMGEXIT: u32 = 1024;
pub const PAGE: u64 = 4096;

/// The `req_certs` view of `kvm_run`, plus the exit reason and type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    pub exit_reason: u32,
    pub ty: u32,
    pub gpa: u64,
    pub npages: u64,
    pub ret: u32,
    pub flags: u8,
    pub status: u8,
}

impl Fields {
    /// What KVM writes at the exit for a request with a buffer of `npages`
    /// pages at `gpa` (api.rst: ret 0, flags 0, status PENDING).
    pub fn request(gpa: u64, npages: u64) -> Fields {
        Fields {
            exit_reason: EXIT_VMGEXIT,
            ty: TYPE_REQ_CERTS,
            gpa,
            npages,
            ret: RET_0,
            flags: 0,
            status: PENDING,
        }
    }
}

pub fn fields(run: &kvm_run) -> Fields {
    // SAFETY: the vmgexit member and its req_certs member hold only integers,
    // for which every bit pattern is valid.
    let (ty, r) = unsafe {
        (
            run.__bindgen_anon_1.vmgexit.type_,
            run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs,
        )
    };
    Fields {
        exit_reason: run.exit_reason,
        ty,
        gpa: r.data_gpa,
        npages: r.data_npages,
        ret: r.ret,
        flags: r.flags,
        status: r.status,
    }
}

pub fn set_fields(run: &mut kvm_run, f: Fields) {
    run.exit_reason = f.exit_reason;
    run.__bindgen_anon_1.vmgexit.type_ = f.ty;
    // Plain assignments to integer union fields are safe; whole-struct write.
    run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs = ReqCerts {
        data_gpa: f.gpa,
        data_npages: f.npages,
        ret: f.ret,
        flags: f.flags,
        status: f.status,
        pad: [0; 2],
    };
}

type ReqCerts = snp_certs::kvm::kvm_user_vmgexit__bindgen_ty_1__bindgen_ty_1;

/// One write the handler attempted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub gpa: u64,
    pub len: usize,
    pub ok: bool,
}

/// Flat guest memory that records every write the handler attempts. KVM's
/// own writes go to `inner` directly and are not recorded.
pub struct RecordingMemory {
    pub inner: FlatMemory,
    pub writes: Vec<Write>,
}

impl RecordingMemory {
    pub fn new(base: u64, len: usize, fill: u8) -> RecordingMemory {
        let mut inner = FlatMemory::new(base, len);
        inner.bytes.fill(fill);
        RecordingMemory {
            inner,
            writes: Vec::new(),
        }
    }

    /// Whether `[gpa, gpa + len)` lies inside the memory.
    pub fn backs(&self, gpa: u64, len: u64) -> bool {
        let base = u128::from(self.inner.base);
        let end = base + self.inner.bytes.len() as u128;
        u128::from(gpa) >= base && u128::from(gpa) + u128::from(len) <= end
    }
}

impl GuestMemory for RecordingMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemoryError> {
        let r = self.inner.write(gpa, data);
        self.writes.push(Write {
            gpa,
            len: data.len(),
            ok: r.is_ok(),
        });
        r
    }
}

/// What the mock source does on `acquire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Serve,
    Busy,
    Unavailable,
}

/// A certificate source that serves `blob` (or fails as told) and tracks its
/// lock; acquiring twice without a release is a bug it reports by panicking.
pub struct Mock {
    pub blob: Vec<u8>,
    pub mode: Mode,
    pub held: bool,
    pub acquires: u64,
}

impl Mock {
    pub fn new(blob: Vec<u8>) -> Mock {
        Mock {
            blob,
            mode: Mode::Serve,
            held: false,
            acquires: 0,
        }
    }
}

impl CertSource for Mock {
    fn acquire(&mut self) -> Result<&[u8], SourceError> {
        assert!(!self.held, "acquire while held: the handler leaked a lock");
        match self.mode {
            Mode::Busy => Err(SourceError::Busy),
            Mode::Unavailable => Err(SourceError::Unavailable("injected".into())),
            Mode::Serve => {
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

// ---------------------------------------------------------------------------
// Mainline Linux 7.0: KVM_EXIT_SNP_REQ_CERTS. The numbers of 7.0's
// include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h and api.rst, which
// the series carries unchanged beside KVM_EXIT_VMGEXIT, written out here
// rather than taken from the crate.

pub const EXIT_SNP_REQ_CERTS: u32 = 43;
/// `ret` values (positive errnos, x86 Linux numbering).
pub const SNP_OK: u64 = 0;
pub const ENOSPC: u64 = 28;
pub const EAGAIN: u64 = 11;
pub const EIO: u64 = 5;
/// What the guest sees in SW_EXITINFO2 bits 63:32 for each (api.rst's table):
/// ENOSPC 0x0000000100000000, EAGAIN 0x0000000200000000, EIO 0xffffffff00000000.
pub const GUEST_INVALID_LEN: u32 = 1;
pub const GUEST_BUSY: u32 = 2;
pub const GUEST_GENERIC_7_0: u32 = 0xffff_ffff;
pub const GRP_SEV: u32 = 1;
pub const ATTR_SNP_REQ_CERTS: u64 = 2;
pub const SEV_SNP_ENABLE_REQ_CERTS: u32 = 103;

/// `{gpa, npages, ret}` of `kvm_run.snp_req_certs` (at the union, offset 32).
pub fn snp_fields(run: &kvm_run) -> (u64, u64, u64) {
    // SAFETY: reading 24 bytes at the start of the 256-byte exit union, which
    // holds only plain data; read_unaligned needs no alignment.
    let p = std::ptr::addr_of!(run.__bindgen_anon_1).cast::<[u64; 3]>();
    let v = unsafe { p.read_unaligned() };
    (v[0], v[1], v[2])
}

pub fn set_snp_fields(run: &mut kvm_run, gpa: u64, npages: u64, ret: u64) {
    let p = std::ptr::addr_of_mut!(run.__bindgen_anon_1).cast::<[u64; 3]>();
    // SAFETY: as in snp_fields.
    unsafe { p.write_unaligned([gpa, npages, ret]) };
}

/// The values a test expects from one ABI, from its contract: the series'
/// api.rst for `KVM_EXIT_VMGEXIT`, mainline 7.0's api.rst (as the series
/// carries it, with what the series adds) for `KVM_EXIT_SNP_REQ_CERTS`.
/// Written out here rather than taken from the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    pub abi: Abi,
    /// `exit_reason` of a request.
    pub exit: u32,
    /// `ret` for: the buffer holds the table; too small; busy; generic error.
    pub ok: u64,
    pub too_small: u64,
    pub busy: u64,
    pub generic: u64,
    /// What the guest sees in SW_EXITINFO2 bits 63:32 for the generic error.
    pub guest_generic: u32,
    /// KVM writes an empty table at `gpa` before the exit (when `npages` is
    /// not 0).
    pub kvm_writes_empty_table: bool,
}

/// The series' `KVM_EXIT_VMGEXIT` / `KVM_USER_VMGEXIT_REQ_CERTS`.
pub const SERIES: Spec = Spec {
    abi: Abi::Vmgexit,
    exit: EXIT_VMGEXIT,
    ok: RET_0 as u64,
    too_small: INVALID_LEN as u64,
    busy: BUSY as u64,
    generic: GENERIC as u64,
    guest_generic: GENERIC,
    kvm_writes_empty_table: true,
};

/// Mainline 7.0's `KVM_EXIT_SNP_REQ_CERTS`, as the series has it.
pub const MAINLINE_7_0: Spec = Spec {
    abi: Abi::SnpReqCerts,
    exit: EXIT_SNP_REQ_CERTS,
    ok: SNP_OK,
    too_small: ENOSPC,
    busy: EAGAIN,
    generic: EIO,
    guest_generic: GUEST_GENERIC_7_0,
    kvm_writes_empty_table: false,
};

/// Both ABIs, for tests that run against each.
pub const ABIS: [Spec; 2] = [SERIES, MAINLINE_7_0];

/// A failure injected into the next `KVM_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    None,
    /// Fails before acting on the answer (e.g. `EINVAL` on an invalid
    /// `kvm_dirty_regs`): nothing in `kvm_run` changes.
    FailBefore(Errno),
    /// Userspace set the vCPU's MP state, so `KVM_RUN` waits for INIT, and a
    /// signal ends the wait: `KVM_RUN` fails with `EINTR` before KVM acted on
    /// the answer and sets `exit_reason` to `KVM_EXIT_INTR`; the rest of
    /// `kvm_run` (the request and its answer) stays as it was.
    InitWaitSignal,
    /// `immediate_exit` is set for this `KVM_RUN` (besides the one in
    /// `kvm_run`, which is read too): KVM acts on an answered request first
    /// (it does not postpone it), then fails with `EINTR` instead of entering
    /// the guest, leaving `exit_reason` alone; on the series, with
    /// NOTIFY_DONE in the answer, it makes the DONE exit instead.
    ImmediateExit,
    /// Fails after acting on the answer (the firmware call made, or the
    /// guest given the VMM's error), e.g. in the guest run that follows; on
    /// the series `status` is DONE already. `EINTR` stands for a signal
    /// there, which sets `exit_reason` to `KVM_EXIT_INTR`.
    FailAfter(Errno),
    /// For an answer of `ret` 0: KVM cannot send the request to the firmware
    /// and `KVM_RUN` fails with this error, after giving the guest the
    /// generic error's answer (both api.rst texts; on the series `status`
    /// reads DONE). For any other state, the same as `None`.
    FirmwareFails(Errno),
}

/// What the guest does once it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guest {
    /// Something KVM exits to userspace for that is not ours.
    Halt,
    /// A new certificate request (RAX, RBX).
    Request { gpa: u64, npages: u64 },
}

/// KVM sent (or tried to send) a request to the firmware (answer `ret` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareCall {
    /// The certificate lock was held at that moment.
    pub lock_held: bool,
    /// The guest's buffer held a table with certificates.
    pub certs: bool,
}

/// What the guest got back: the VMM error (bits 63:32 of SW_EXITINFO2) and RBX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestResult {
    pub vmm_error: u32,
    pub rbx: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Pending {
        guest_npages: u64,
    },
    /// The series' DONE exit (NOTIFY_DONE).
    DoneExit,
}

/// KVM as the contract of `abi` describes it, for one vCPU.
///
/// The series ([`Abi::Vmgexit`], its api.rst): KVM writes the empty table
/// before the exit, acts on the answer at the start of the next `KVM_RUN`
/// (refusing one outside the closed set with `EINVAL`, the request kept),
/// writes `status` DONE, and makes the DONE exit for NOTIFY_DONE.
///
/// Mainline 7.0 ([`Abi::SnpReqCerts`], its api.rst with what the series adds,
/// and `kvm_arch_vcpu_ioctl_run()`'s order): KVM writes nothing at `gpa`
/// before the exit; on the next `KVM_RUN` it first fails on an INIT wait
/// (signal: `EINTR`, `exit_reason` = `KVM_EXIT_INTR`) or invalid registers
/// (`EINVAL`) without looking at the answer; otherwise it runs the completion:
/// `ret` 0 is the firmware call, ENOSPC gives the guest `npages` in RBX,
/// EAGAIN and EIO their answers, and any other value fails with `EINVAL`
/// and changes nothing (the request stays pending and `ret` is read again);
/// then it returns `EINTR` if `immediate_exit` is set (leaving `exit_reason`
/// alone), else runs the guest.
pub struct FakeKvm {
    pub abi: Abi,
    pub run: kvm_run,
    pub mem: RecordingMemory,
    state: State,
    pub firmware_calls: Vec<FirmwareCall>,
    pub guest_results: Vec<GuestResult>,
    /// Answers refused with `-EINVAL`.
    pub refused: u32,
}

impl FakeKvm {
    pub fn new(abi: Abi, mem: RecordingMemory) -> FakeKvm {
        FakeKvm {
            abi,
            run: kvm_run::default(),
            mem,
            state: State::Idle,
            firmware_calls: Vec::new(),
            guest_results: Vec::new(),
            refused: 0,
        }
    }

    /// Whether KVM holds a request it has not acted on.
    pub fn has_pending(&self) -> bool {
        matches!(self.state, State::Pending { .. })
    }

    /// `(gpa, npages, ret)` of the request as `kvm_run` shows it in this
    /// ABI's member (`data_gpa`, `data_npages`, `ret` on the series).
    pub fn answer(&self) -> (u64, u64, u64) {
        match self.abi {
            Abi::Vmgexit => {
                let f = fields(&self.run);
                (f.gpa, f.npages, u64::from(f.ret))
            }
            Abi::SnpReqCerts => snp_fields(&self.run),
        }
    }

    /// Writes `(gpa, npages, ret)` into this ABI's member, as a VMM other
    /// than the handler might (on the series `ret` is truncated to its u32
    /// field; `flags` and `status` are left as they are).
    pub fn set_answer(&mut self, gpa: u64, npages: u64, ret: u64) {
        match self.abi {
            Abi::Vmgexit => {
                let mut f = fields(&self.run);
                (f.gpa, f.npages, f.ret) = (gpa, npages, ret as u32);
                set_fields(&mut self.run, f);
            }
            Abi::SnpReqCerts => set_snp_fields(&mut self.run, gpa, npages, ret),
        }
    }

    /// Whether the answer asks KVM to come back once it acted: NOTIFY_DONE
    /// in `flags` on the series, `immediate_exit` on 7.0.
    pub fn notify_requested(&self) -> bool {
        match self.abi {
            Abi::Vmgexit => fields(&self.run).flags == NOTIFY_DONE,
            Abi::SnpReqCerts => self.run.immediate_exit != 0,
        }
    }

    /// The guest sends a request: the return of `KVM_RUN` that exits for it
    /// (on the series it fails with `EFAULT` if KVM cannot write its empty
    /// table). KVM exits only for a page-aligned RAX.
    pub fn request(&mut self, gpa: u64, npages: u64) -> Result<(), Errno> {
        assert_eq!(gpa % PAGE, 0, "KVM exits only for a page-aligned RAX");
        match self.abi {
            Abi::Vmgexit => {
                if npages != 0 && self.mem.inner.write(gpa, &[0; 24]).is_err() {
                    return Err(Errno::EFAULT);
                }
                set_fields(&mut self.run, Fields::request(gpa, npages));
            }
            Abi::SnpReqCerts => {
                self.run.exit_reason = EXIT_SNP_REQ_CERTS;
                set_snp_fields(&mut self.run, gpa, npages, 0);
            }
        }
        self.state = State::Pending {
            guest_npages: npages,
        };
        Ok(())
    }

    /// The exit for a request as a buggy or hostile KVM might make it: any
    /// `gpa` and `npages`, no checks, nothing written to guest memory, and
    /// nothing pending in the model (`ret` 0; on the series `flags` 0 and
    /// `status` PENDING).
    pub fn exit_with(&mut self, gpa: u64, npages: u64) {
        match self.abi {
            Abi::Vmgexit => set_fields(&mut self.run, Fields::request(gpa, npages)),
            Abi::SnpReqCerts => {
                self.run.exit_reason = EXIT_SNP_REQ_CERTS;
                set_snp_fields(&mut self.run, gpa, npages, 0);
            }
        }
    }

    /// The next `KVM_RUN`. `lock_held` is whether the VMM holds the
    /// certificate lock during it (it cannot change during the ioctl).
    pub fn kvm_run(&mut self, inject: Inject, lock_held: bool, next: Guest) -> Result<(), Errno> {
        if inject == Inject::InitWaitSignal {
            // Before anything else, and before KVM looks at the answer.
            self.run.exit_reason = EXIT_INTR;
            return Err(Errno::EINTR);
        }
        if let Inject::FailBefore(e) = inject {
            return Err(e);
        }
        let immediate_exit = inject == Inject::ImmediateExit || self.run.immediate_exit != 0;
        if let State::Pending { guest_npages } = self.state {
            let notify = match self.abi {
                Abi::Vmgexit => self.complete_series(guest_npages, lock_held, inject)?,
                Abi::SnpReqCerts => {
                    self.complete_7_0(guest_npages, lock_held, inject)?;
                    false
                }
            };
            if let Inject::FailAfter(e) = inject {
                return Err(self.fail_after(e));
            }
            if notify {
                // The DONE exit: KVM_EXIT_VMGEXIT, the same type, status
                // DONE, flags 0 (the exit reason also after an
                // InitWaitSignal replaced it).
                self.run.exit_reason = EXIT_VMGEXIT;
                self.run
                    .__bindgen_anon_1
                    .vmgexit
                    .__bindgen_anon_1
                    .req_certs
                    .flags = 0;
                self.state = State::DoneExit;
                return Ok(());
            }
        } else {
            self.state = State::Idle;
            if let Inject::FailAfter(e) = inject {
                return Err(self.fail_after(e));
            }
        }
        if immediate_exit {
            return Err(Errno::EINTR);
        }
        match next {
            Guest::Halt => {
                self.run.exit_reason = EXIT_HLT;
                Ok(())
            }
            Guest::Request { gpa, npages } => self.request(gpa, npages),
        }
    }

    /// A failure after KVM acted: a signal sets `KVM_EXIT_INTR`.
    fn fail_after(&mut self, e: Errno) -> Errno {
        if e == Errno::EINTR {
            self.run.exit_reason = EXIT_INTR;
        }
        e
    }

    /// The firmware call for an answer of `ret` 0: recorded, or, with
    /// `FirmwareFails`, the generic error's answer to the guest and `KVM_RUN`
    /// failing (after the request is finished).
    fn firmware(
        &mut self,
        gpa: u64,
        guest_npages: u64,
        lock_held: bool,
        inject: Inject,
        generic: u32,
    ) -> Result<GuestResult, Errno> {
        let certs = guest_npages != 0
            && self
                .mem
                .inner
                .read(gpa, 24)
                .is_some_and(|t| t.iter().any(|&b| b != 0));
        self.firmware_calls.push(FirmwareCall { lock_held, certs });
        if let Inject::FirmwareFails(e) = inject {
            self.guest_results.push(GuestResult {
                vmm_error: generic,
                rbx: guest_npages,
            });
            self.state = State::Idle;
            if self.abi == Abi::Vmgexit {
                self.set_status(DONE);
            }
            return Err(e);
        }
        Ok(GuestResult {
            vmm_error: 0,
            rbx: guest_npages,
        })
    }

    fn set_status(&mut self, status: u8) {
        self.run
            .__bindgen_anon_1
            .vmgexit
            .__bindgen_anon_1
            .req_certs
            .status = status;
    }

    /// The series' completion; `Ok(notify)`: NOTIFY_DONE was asked for.
    fn complete_series(
        &mut self,
        guest_npages: u64,
        lock_held: bool,
        inject: Inject,
    ) -> Result<bool, Errno> {
        let f = fields(&self.run);
        let valid = matches!(f.ret, RET_0 | INVALID_LEN | BUSY | GENERIC)
            && (f.flags == 0 || f.flags == NOTIFY_DONE)
            && (f.ret != INVALID_LEN || f.npages > guest_npages);
        if !valid {
            self.refused += 1;
            return Err(Errno::EINVAL);
        }
        let result = match f.ret {
            RET_0 => self.firmware(f.gpa, guest_npages, lock_held, inject, GENERIC)?,
            INVALID_LEN => GuestResult {
                vmm_error: INVALID_LEN,
                rbx: f.npages,
            },
            r => GuestResult {
                vmm_error: r,
                rbx: guest_npages,
            },
        };
        self.guest_results.push(result);
        self.set_status(DONE);
        self.state = State::Idle;
        Ok(f.flags & NOTIFY_DONE != 0)
    }

    /// 7.0's completion.
    fn complete_7_0(
        &mut self,
        guest_npages: u64,
        lock_held: bool,
        inject: Inject,
    ) -> Result<(), Errno> {
        let (gpa, npages, ret) = snp_fields(&self.run);
        let result = match ret {
            SNP_OK => self.firmware(gpa, guest_npages, lock_held, inject, GUEST_GENERIC_7_0)?,
            ENOSPC => GuestResult {
                vmm_error: GUEST_INVALID_LEN,
                rbx: npages,
            },
            EAGAIN => GuestResult {
                vmm_error: GUEST_BUSY,
                rbx: guest_npages,
            },
            EIO => GuestResult {
                vmm_error: GUEST_GENERIC_7_0,
                rbx: guest_npages,
            },
            _ => {
                // This kernel: -EINVAL, nothing changed, the request stays
                // pending and the next KVM_RUN reads 'ret' again.
                self.refused += 1;
                return Err(Errno::EINVAL);
            }
        };
        self.guest_results.push(result);
        self.state = State::Idle;
        Ok(())
    }
}

/// Everything about one `after_run` call the check needs.
pub struct Call<'a> {
    /// Whether, by the contract, a request the handler answered was pending
    /// before this return of `KVM_RUN` (what the previous check returned;
    /// false for the first call).
    pub pending_before: bool,
    pub before: Fields,
    pub after: Fields,
    pub result: Result<(), Errno>,
    pub step: &'a Result<Step, ExitError>,
    pub held_before: bool,
    pub held_after: bool,
    /// The handler's `has_request()` after the call.
    pub has_request: bool,
    /// Whether the source's lock is held after the call.
    pub source_held: bool,
    pub blob: &'a [u8],
    pub mode: Mode,
    pub notify: bool,
    pub policy: FaultPolicy,
    pub mem: &'a RecordingMemory,
    /// The writes of this call.
    pub writes: &'a [Write],
}

macro_rules! ensure {
    ($c:expr, $($fmt:tt)+) => {
        if !$c {
            return Err(format!($($fmt)+));
        }
    };
}

/// Checks one `after_run` call against the contract; `Err` says what broke.
/// `Ok(pending)`: whether a request the handler answered is pending after the
/// call, by the contract (pass it as the next call's `pending_before`).
pub fn check_after_run(c: &Call<'_>) -> Result<bool, String> {
    let b = c.before;
    let a = c.after;
    let ours = b.exit_reason == EXIT_VMGEXIT && b.ty == TYPE_REQ_CERTS;

    // The lock rule (api.rst): "After every return from KVM_RUN: if 'status'
    // reads DONE, or KVM_RUN returned 0 with an 'exit_reason' other than
    // KVM_EXIT_VMGEXIT [...], KVM has finished with the request, and the VMM
    // releases the lock; otherwise the request is still pending [...]. The
    // VMM keeps the lock [...]. If KVM_RUN returned 0 with KVM_EXIT_VMGEXIT
    // and 'status' PENDING, this is a new request." `status` is read whatever
    // `exit_reason` says. The rule is about a request the VMM answered: with
    // none outstanding, a failed KVM_RUN leaves nothing pending.
    let finished = b.status == DONE || (c.result.is_ok() && b.exit_reason != EXIT_VMGEXIT);
    ensure!(
        c.source_held == c.held_after,
        "source lock {} but handler says {}",
        c.source_held,
        c.held_after
    );
    let pending_after = match c.result {
        Err(errno) if c.pending_before && !finished => {
            ensure!(
                *c.step == Ok(Step::StillPending { errno }),
                "failed KVM_RUN, status {} (not DONE), exit_reason {}, a request pending: {:?}",
                b.status,
                b.exit_reason,
                c.step
            );
            ensure!(c.held_after == c.held_before, "lock changed while pending");
            true
        }
        Err(errno) => {
            ensure!(
                *c.step == Ok(Step::RunFailed { errno }),
                "failed KVM_RUN, status {}, request pending before: {}: {:?}",
                b.status,
                c.pending_before,
                c.step
            );
            ensure!(!c.held_after, "lock kept after KVM finished");
            false
        }
        Ok(()) if ours && b.status == PENDING => {
            let Ok(Step::Answered(ans)) = c.step else {
                return Err(format!("new request not answered: {:?}", c.step));
            };
            ensure!(
                c.held_after == matches!(ans, Answer::Certificates { .. }),
                "lock {} after {:?}",
                c.held_after,
                ans
            );
            true
        }
        Ok(()) => {
            // Another exit, the DONE exit, or (never from a correct KVM) a
            // VMGEXIT of another type or with an invalid status: a new exit,
            // so the guest ran again and KVM had acted on any earlier answer.
            let want = if b.exit_reason != EXIT_VMGEXIT {
                Ok(Step::NotOurs)
            } else if b.ty != TYPE_REQ_CERTS {
                Err(ExitError::UnknownType(b.ty))
            } else if b.status == DONE {
                Ok(Step::Done)
            } else {
                Err(ExitError::BadStatus(b.status))
            };
            ensure!(*c.step == want, "{:?}, want {:?}", c.step, want);
            ensure!(!c.held_after, "lock kept after KVM finished");
            false
        }
    };
    ensure!(
        c.has_request == pending_after,
        "has_request {} but the contract says {}",
        c.has_request,
        pending_after
    );

    // kvm_run: only a new request's answer writes, and only ret, flags and
    // (INVALID_LEN) data_npages, with values from the closed set.
    let Ok(Step::Answered(ans)) = c.step else {
        ensure!(a == b, "kvm_run changed: {b:?} -> {a:?}");
        ensure!(c.writes.is_empty(), "guest memory written: {:?}", c.writes);
        return Ok(pending_after);
    };
    ensure!(
        (a.exit_reason, a.ty, a.gpa, a.status) == (b.exit_reason, b.ty, b.gpa, b.status),
        "type/status/gpa changed: {b:?} -> {a:?}"
    );
    ensure!(
        a.ret == RET_0 || a.ret == INVALID_LEN || a.ret == BUSY,
        "ret {:#x} (GENERIC or outside the closed set)",
        a.ret
    );
    let want_flags = match ans {
        Answer::Certificates { notify_done, .. } => {
            ensure!(*notify_done == c.notify, "notify_done {notify_done}");
            if c.notify {
                NOTIFY_DONE
            } else {
                0
            }
        }
        _ => 0,
    };
    ensure!(a.flags == want_flags, "flags {:#x} for {:?}", a.flags, ans);
    let want_ret = match ans {
        Answer::Certificates { .. } | Answer::NoCertificates | Answer::BadBuffer { .. } => RET_0,
        Answer::TooSmall { .. } => INVALID_LEN,
        Answer::Busy => BUSY,
        Answer::HostFault { policy, .. } => {
            ensure!(*policy == c.policy, "policy {:?}", policy);
            match policy {
                FaultPolicy::EmptyTable => RET_0,
                FaultPolicy::Busy => BUSY,
            }
        }
    };
    ensure!(a.ret == want_ret, "ret {:#x} for {:?}", a.ret, ans);
    if let Answer::TooSmall { needed, given } = ans {
        ensure!(*given == b.npages, "given {given}, guest said {}", b.npages);
        ensure!(
            a.npages == *needed,
            "data_npages {} != needed {needed}",
            a.npages
        );
        ensure!(
            *needed > b.npages,
            "INVALID_LEN with {needed} <= {}",
            b.npages
        );
    } else {
        ensure!(a.npages == b.npages, "data_npages changed for {:?}", ans);
    }

    // Which answer, from the source's behaviour and the guest's buffer.
    let len = c.blob.len();
    let empty = c.blob.get(..24).is_some_and(|t| t.iter().all(|&x| x == 0));
    let capacity = u128::from(b.npages) * u128::from(PAGE);
    let pages_needed = (len as u64).div_ceil(PAGE);
    match c.mode {
        Mode::Busy => ensure!(*ans == Answer::Busy, "{ans:?} from a busy source"),
        Mode::Unavailable => ensure!(
            matches!(ans, Answer::HostFault { .. }),
            "{ans:?} from an unavailable source"
        ),
        Mode::Serve if empty => ensure!(*ans == Answer::NoCertificates, "{ans:?} for no certs"),
        Mode::Serve if len as u128 > capacity => ensure!(
            *ans == Answer::TooSmall {
                needed: pages_needed,
                given: b.npages
            },
            "{ans:?} for {len} bytes in {} pages",
            b.npages
        ),
        Mode::Serve => {
            let usable = b.gpa % PAGE == 0 && c.mem.backs(b.gpa, len as u64);
            if usable {
                ensure!(
                    *ans == Answer::Certificates {
                        len,
                        notify_done: c.notify
                    },
                    "{ans:?} for a usable buffer"
                );
            } else {
                ensure!(
                    matches!(ans, Answer::BadBuffer { .. }),
                    "{ans:?} for an unusable buffer"
                );
            }
        }
    }

    // Guest memory: nothing beyond the table or the guest's pages.
    for w in c.writes {
        ensure!(
            w.gpa == b.gpa,
            "write at {:#x}, buffer at {:#x}",
            w.gpa,
            b.gpa
        );
        ensure!(w.len <= len, "write of {} bytes, table {len}", w.len);
        ensure!(
            w.len as u128 <= capacity,
            "write of {} bytes past data_npages",
            w.len
        );
    }
    match ans {
        Answer::Certificates { .. } => {
            ensure!(
                c.writes
                    == [Write {
                        gpa: b.gpa,
                        len,
                        ok: true
                    }],
                "writes {:?}",
                c.writes
            );
            ensure!(
                c.mem.inner.read(b.gpa, len) == Some(c.blob),
                "the table is not in guest memory"
            );
        }
        Answer::BadBuffer { .. } => match c.writes {
            [] => {}
            [first, back] => {
                ensure!(!first.ok && first.len == len, "writes {:?}", c.writes);
                ensure!(back.len == 24, "restore of {} bytes", back.len);
            }
            _ => return Err(format!("writes {:?}", c.writes)),
        },
        _ => ensure!(c.writes.is_empty(), "writes {:?} for {:?}", c.writes, ans),
    }
    Ok(pending_after)
}
