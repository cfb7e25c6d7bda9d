//! The VMM's side of `KVM_EXIT_VMGEXIT` / `KVM_USER_VMGEXIT_REQ_CERTS` (our
//! 6.12 series) and of mainline Linux 7.0's `KVM_EXIT_SNP_REQ_CERTS`: one
//! handler type for both, chosen with [`Abi`] (see "Mainline 7.0" below).
//!
//! # The contract (the series' `Documentation/virt/kvm/api.rst`)
//!
//! When an SEV-SNP guest asks for an attestation report with certificates, KVM
//! writes an empty certificate table (24 zero bytes) at the guest's buffer if
//! the guest gave one (`data_npages != 0`), then exits with
//! `exit_reason = KVM_EXIT_VMGEXIT`, `type = REQ_CERTS`, `data_gpa` and
//! `data_npages` (the guest's RAX and RBX, untrusted), `ret = 0`, `flags = 0`,
//! `status = PENDING`. The VMM answers in `ret` and `flags` (and, for
//! INVALID_LEN only, `data_npages`), never in `type` or `status`, and runs the
//! vCPU again:
//!
//! * `ret` is one of 0, INVALID_LEN (1), BUSY (2), GENERIC (1 << 31); `flags` is
//!   0 or NOTIFY_DONE (bit 0); INVALID_LEN needs a `data_npages` larger than the
//!   guest's. Anything else makes `KVM_RUN` fail with `-EINVAL` and the request
//!   stays pending. This handler writes only 0, INVALID_LEN or BUSY, and never
//!   GENERIC: a Linux guest takes GENERIC as final and stops using its key to
//!   the firmware until it reboots.
//! * `ret = 0` means the buffer holds the certificate table: the VMM wrote the
//!   whole table, or wrote nothing and left KVM's empty table. A host without
//!   certificates answers 0 and writes nothing.
//! * The VMM holds a shared lock on the certificate file from before it reads
//!   it until KVM has finished with the request. After **every** return from
//!   `KVM_RUN`: if `status` reads DONE, or `KVM_RUN` returned 0 with an
//!   `exit_reason` other than `KVM_EXIT_VMGEXIT` (the guest ran again, so KVM
//!   acted on the answer before, and the new exit may have overwritten
//!   `vmgexit`), KVM has finished with the request and the lock is released;
//!   otherwise the request is still pending: `KVM_RUN` failed before it acted
//!   on the answer (for example on an invalid `kvm_dirty_regs`, or on a signal
//!   while the vCPU waits for INIT, which sets `exit_reason` to
//!   `KVM_EXIT_INTR`), or refused the answer; the lock is kept and the next
//!   `KVM_RUN` acts on the answer. If `KVM_RUN` returned 0 with
//!   `KVM_EXIT_VMGEXIT` and `status` PENDING, this is a new request. So a
//!   failed `KVM_RUN` is judged by `status` alone, whatever `exit_reason`
//!   says ([`request_pending`]).
//! * KVM acts on the answer at the start of the next `KVM_RUN`, before it
//!   enters the guest and before it checks `immediate_exit`: setting
//!   `immediate_exit` does not postpone an answered request (after that
//!   return `status` reads DONE). KVM writes `status = DONE` once it acted on
//!   the answer, also when `KVM_RUN` then fails. With NOTIFY_DONE in
//!   `flags`, KVM exits once more, right after acting (`status` DONE, `flags`
//!   0); that exit is completed by simply running the vCPU again, and KVM
//!   reads nothing from `vmgexit` then.
//!
//! # Using it
//!
//! One [`ReqCertsHandler`] per vCPU thread, each with its own [`CertSource`]
//! (normally a [`BlobServer`]). The VMM passes every return of `KVM_RUN` to
//! [`ReqCertsHandler::after_run`], which applies the lock rule, answers a new
//! request, and says what to do next ([`Step`]). The rule speaks of *the*
//! request, the one the VMM answered: the handler remembers whether KVM has
//! finished with the request it answered last
//! ([`ReqCertsHandler::has_request`]), so a failed `KVM_RUN` with no answered
//! request outstanding is [`Step::RunFailed`] whatever `kvm_run` holds. If the
//! VMM stops running the vCPU (an error path), it calls
//! [`ReqCertsHandler::release`] (dropping the handler does the same), so that
//! the lock is never held forever.
//!
//! ```no_run
//! use snp_certs::store::BlobServer;
//! use snp_certs::vmgexit::{Errno, FlatMemory, ReqCertsHandler, Step};
//! # fn kvm_run_ioctl() -> Result<(), Errno> { Ok(()) }
//! # fn handle_other_exit(_: &mut snp_certs::kvm::kvm_run) {}
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let mut run = snp_certs::kvm::kvm_run::default();
//! # let mut guest = FlatMemory::new(0, 4096);
//! let mut certs = ReqCertsHandler::new(BlobServer::new("/var/lib/snp/certs".as_ref())?);
//! // On a mainline 7.0 kernel: `.abi(Abi::SnpReqCerts)`; the loop is the same.
//! loop {
//!     let result = kvm_run_ioctl(); // ioctl(vcpu_fd, KVM_RUN, 0), errno on failure
//!     match certs.after_run(&mut run, result, &mut guest) {
//!         Ok(Step::Answered(_) | Step::Done) => {}
//!         Ok(Step::NotOurs) => handle_other_exit(&mut run),
//!         // A signal or `immediate_exit`: run again. While the request is
//!         // still pending its lock stays held, and that run acts on the answer.
//!         Ok(Step::StillPending { errno: Errno::EINTR })
//!         | Ok(Step::RunFailed { errno: Errno::EINTR }) => {}
//!         Ok(Step::StillPending { .. } | Step::RunFailed { .. }) | Err(_) => {
//!             certs.release(); // this vCPU will not run again
//!             break;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Answers
//!
//! For a new request ([`Answer`]):
//!
//! * the certificate file could be read and holds certificates, the buffer is
//!   large enough and writable: the table is written at `data_gpa`, `ret = 0`,
//!   `flags = NOTIFY_DONE` (or 0 with [`ReqCertsHandler::notify_done`]`(false)`),
//!   and the lock is kept until KVM has finished with the request;
//! * the file holds an empty table (no certificates): `ret = 0`, nothing written;
//! * the table needs more than `data_npages` pages: `ret = INVALID_LEN`,
//!   `data_npages` = the exact number of pages needed (always larger);
//! * the lock is held by an updater past the bounded wait (or the path kept
//!   being replaced): `ret = BUSY`, the guest retries;
//! * the file cannot be used (missing, invalid table, I/O error): a **host
//!   fault**, answered by the [`FaultPolicy`] (default: `ret = 0`, nothing
//!   written, so the guest gets KVM's empty table), counted in
//!   [`ReqCertsHandler::host_faults`] and returned with its reason for the log;
//! * the guest's buffer cannot take the table (`data_gpa` not page aligned, or
//!   the range past 2^64, or the guest-memory write failed, e.g. private memory
//!   or outside every slot): `ret = 0`; after a failed write the empty table is
//!   written back at `data_gpa` (best effort), in case the write got part of
//!   the way.
//!
//! `data_gpa` and `data_npages` are untrusted: nothing is written beyond the
//! table, nor beyond `data_npages` pages (checked arithmetic).
//!
//! The lock is held only for a request answered with certificates: the other
//! answers give the firmware no certificates, so nothing can get out of step.
//! On a new request the lock of the previous one (which KVM has finished with,
//! since `KVM_RUN` returned a new exit) is released before it is taken anew for
//! the new request, so that a guest that asks back to back cannot starve a
//! waiting updater.
//!
//! # Mainline 7.0: `KVM_EXIT_SNP_REQ_CERTS` ([`Abi::SnpReqCerts`])
//!
//! Mainline took another exit (kvm-x86 commits fa9893fadbc2 "KVM: Introduce
//! KVM_EXIT_SNP_REQ_CERTS for SNP certificate-fetching" and 20c3c4108d58 "KVM:
//! SEV: Add KVM_SEV_SNP_ENABLE_REQ_CERTS command", in 7.0; exit number 43 in
//! the final header). Our series carries it too, with mainline's names and
//! numbers, beside `KVM_EXIT_VMGEXIT` (a VM enables one of the two), and the
//! bindings of both come from the series' header. Its api.rst: `kvm_run.snp_req_certs` is `{gpa, npages,
//! ret}` (u64 each); `gpa` and `npages` are the guest's RAX and RBX (KVM has
//! checked that `gpa` is 4 KiB aligned, nothing else); `ret` is 0 on exit. The
//! VMM answers in `ret` with an errno: 0 (the buffer holds the table; KVM then
//! sends the request to the firmware), `ENOSPC` (too small; KVM passes
//! `npages` to the guest in RBX), `EAGAIN` (busy, the guest retries), `EIO`
//! (generic error); any other value makes `KVM_RUN` fail with `EINVAL`. The
//! VM opts in with `KVM_MEMORY_ENCRYPT_OP` / `KVM_SEV_SNP_ENABLE_REQ_CERTS`
//! before creating vCPUs ([`enable_req_certs_cmd`]); a kernel that has the
//! exit reports 1 for `KVM_X86_GRP_SEV` / `KVM_X86_SEV_SNP_REQ_CERTS` through
//! `KVM_HAS_DEVICE_ATTR`/`KVM_GET_DEVICE_ATTR` on `/dev/kvm`
//! ([`req_certs_device_attr`]). The lock: api.rst recommends holding it until
//! KVM has sent the request to the firmware, by setting `immediate_exit` after
//! answering, so that the vCPU "will exit again to userspace with `-EINTR`"
//! once that is done.
//!
//! Differences the handler takes care of:
//!
//! * KVM does **not** write an empty table before this exit, so for "no
//!   certificates" (and a host fault under [`FaultPolicy::EmptyTable`]) the
//!   handler writes the 24-byte empty table itself when `npages` is not 0;
//! * answers are `0`/`ENOSPC`/`EAGAIN`, never `EIO` (it is the GENERIC error
//!   a Linux guest takes as final);
//! * with [`ReqCertsHandler::notify_done`] on (the default), the handler sets
//!   `immediate_exit` when it answers with certificates under the lock, and
//!   after a `KVM_RUN` that failed with `EINTR` while `exit_reason` still reads
//!   `KVM_EXIT_SNP_REQ_CERTS` (the `immediate_exit` return, which KVM makes
//!   only after acting on the answer) it releases the lock, clears
//!   `immediate_exit` and returns [`Step::Done`];
//! * there is no `status` field, so the lock rule reads the return: KVM has
//!   acted on the answer if `KVM_RUN` returned 0, or failed with `EINTR` and
//!   left `exit_reason` as it was. Any other failure (`EINTR` with
//!   `KVM_EXIT_INTR`, which a signal during the INIT wait sets before KVM
//!   looks at the answer; `EINVAL` on invalid `kvm_dirty_regs`; ...) keeps the
//!   request pending and the lock held ([`Step::StillPending`]); the handler
//!   then writes `KVM_EXIT_SNP_REQ_CERTS` back to `exit_reason` (KVM does not
//!   read it), because the later `immediate_exit` return leaves it as it
//!   finds it, and after the INIT-wait signal it would read `KVM_EXIT_INTR`.
//!   This errs on
//!   the side of holding: 7.0's `KVM_RUN` also fails *after* acting when the
//!   firmware call itself fails, and then the lock is kept until the next
//!   return or [`ReqCertsHandler::release`]; an updater waits, but never
//!   races a request. (Read from mainline's `kvm_arch_vcpu_ioctl_run()`: the
//!   INIT wait and register sync come before `complete_userspace_io`, the
//!   `immediate_exit` check after it, and it leaves `exit_reason` alone.)
//!
//! A VMM that uses `immediate_exit` itself (to kick a vCPU) should set it
//! again after a [`Step::Done`], which clears it.
//!
//! Inputs a correct KVM never produces (a buggy or hostile kernel): a
//! successful return with `KVM_EXIT_VMGEXIT` of an unknown `type`, or with a
//! `status` that is neither PENDING nor DONE, is refused with [`ExitError`],
//! nothing is written, and the lock is released (`KVM_RUN` returned a new
//! exit, so the guest ran again and KVM had acted on any earlier answer). A
//! failed return is judged by `status` alone, as the rule says. The handler
//! never panics.

use std::fmt;

use crate::kvm;
use crate::store::{BlobServer, StoreError};
use crate::table::{self, ENTRY_SIZE, PAGE_SIZE};

pub use nix::errno::Errno;

/// `ret`: the buffer holds the certificate table.
pub const RET_OK: u32 = 0;
/// `ret`: the buffer is too small; `data_npages` says how many pages are needed.
pub const RET_INVALID_LEN: u32 = kvm::KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN;
/// `ret`: the VMM cannot answer now; the guest may retry.
pub const RET_BUSY: u32 = kvm::KVM_USER_VMGEXIT_REQ_CERTS_ERROR_BUSY;
/// `ret`: the request failed for good. Part of the uapi; this handler never
/// writes it (a Linux guest then disables its key to the firmware).
pub const RET_GENERIC: u32 = kvm::KVM_USER_VMGEXIT_REQ_CERTS_ERROR_GENERIC;
/// Narrows a uapi `#define` (bindgen makes them u32) for a `__u8` field; a value
/// that does not fit is a compile-time error.
const fn u8_const(v: u32) -> u8 {
    assert!(v <= 0xff, "uapi constant does not fit the u8 field");
    v.to_le_bytes()[0]
}
/// `flags` bit asking KVM for the second (DONE) exit.
pub const FLAG_NOTIFY_DONE: u8 = u8_const(kvm::KVM_USER_VMGEXIT_REQ_CERTS_FLAGS_NOTIFY_DONE);
pub const STATUS_PENDING: u8 = u8_const(kvm::KVM_USER_VMGEXIT_REQ_CERTS_STATUS_PENDING);
pub const STATUS_DONE: u8 = u8_const(kvm::KVM_USER_VMGEXIT_REQ_CERTS_STATUS_DONE);

/// The empty certificate table KVM writes at `data_gpa` before the exit.
const EMPTY_TABLE: [u8; ENTRY_SIZE] = [0; ENTRY_SIZE];

/// Which kernel interface the handler speaks. The VMM picks it from what the
/// kernel offers: `KVM_CHECK_EXTENSION(KVM_CAP_EXIT_VMGEXIT)` for our series,
/// `KVM_HAS_DEVICE_ATTR` with [`req_certs_device_attr`] for mainline 7.0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Abi {
    /// Our 6.12 series: `KVM_EXIT_VMGEXIT` / `KVM_USER_VMGEXIT_REQ_CERTS`,
    /// GHCB error codes, `status` and NOTIFY_DONE ([`enable_cap_args`]).
    #[default]
    Vmgexit,
    /// Mainline 7.0: `KVM_EXIT_SNP_REQ_CERTS`, errno answers, the lock
    /// released through `immediate_exit` ([`enable_req_certs_cmd`]).
    SnpReqCerts,
}

/// 7.0 `ret`: the buffer holds the table.
pub const SNP_RET_OK: u64 = 0;
/// 7.0 `ret`: the buffer is too small; `npages` says how many pages are needed.
pub const SNP_RET_ENOSPC: u64 = libc::ENOSPC as u64;
/// 7.0 `ret`: busy, the guest may retry.
pub const SNP_RET_EAGAIN: u64 = libc::EAGAIN as u64;
/// 7.0 `ret`: generic error. Part of the uapi; this handler never writes it.
pub const SNP_RET_EIO: u64 = libc::EIO as u64;

use nix::libc;

/// The `KVM_HAS_DEVICE_ATTR` / `KVM_GET_DEVICE_ATTR` argument (on `/dev/kvm`)
/// that asks a 7.0 kernel whether it has `KVM_EXIT_SNP_REQ_CERTS` (the value
/// read is 1 if so).
pub fn req_certs_device_attr() -> kvm::kvm_device_attr {
    kvm::kvm_device_attr {
        group: kvm::KVM_X86_GRP_SEV,
        attr: u64::from(kvm::KVM_X86_SEV_SNP_REQ_CERTS),
        ..Default::default()
    }
}

/// The `KVM_MEMORY_ENCRYPT_OP` argument (VM ioctl, before any vCPU is
/// created) that opts an SNP VM in to `KVM_EXIT_SNP_REQ_CERTS` on 7.0.
pub fn enable_req_certs_cmd(sev_fd: u32) -> kvm::kvm_sev_cmd {
    kvm::kvm_sev_cmd {
        id: kvm::sev_cmd_id_KVM_SEV_SNP_ENABLE_REQ_CERTS,
        sev_fd,
        ..Default::default()
    }
}

/// The `snp_req_certs` member of `kvm_run`'s exit union (the series' header
/// has both exits' members).
fn snp_req_certs(run: &mut kvm::kvm_run) -> &mut kvm::kvm_exit_snp_req_certs {
    // SAFETY: `snp_req_certs` consists only of u64s, for which every bit
    // pattern is valid, so the access is sound whatever the bytes of the
    // union are; the borrow of `run` is exclusive for the returned lifetime.
    unsafe { &mut run.__bindgen_anon_1.snp_req_certs }
}

/// The `req_certs` member of `kvm_run.vmgexit`.
type ReqCerts = kvm::kvm_user_vmgexit__bindgen_ty_1__bindgen_ty_1;

/// Guest memory as the handler needs it.
pub trait GuestMemory {
    /// Writes `data` at guest physical address `gpa`. Must fail (not panic) for
    /// any range that is not wholly backed, shared guest RAM, and should then
    /// write nothing. (If an implementation can fail part-way, the handler
    /// writes the empty table back at `gpa`; see the module documentation.)
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemoryError>;
}

/// A failed guest-memory write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestMemoryError {
    pub gpa: u64,
    pub len: usize,
}

impl fmt::Display for GuestMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest range {:#x}+{:#x} is not backed memory",
            self.gpa, self.len
        )
    }
}

impl std::error::Error for GuestMemoryError {}

/// A flat guest RAM region `[base, base + len)`, as in tests and simple VMMs.
/// Writes are all or nothing.
#[derive(Clone, Debug)]
pub struct FlatMemory {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl FlatMemory {
    pub fn new(base: u64, len: usize) -> FlatMemory {
        FlatMemory {
            base,
            bytes: vec![0; len],
        }
    }

    /// The bytes at `[gpa, gpa+len)`, if inside the region.
    pub fn read(&self, gpa: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(gpa.checked_sub(self.base)?).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
}

impl GuestMemory for FlatMemory {
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemoryError> {
        let err = GuestMemoryError {
            gpa,
            len: data.len(),
        };
        let start = gpa
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| err.clone())?;
        let end = start.checked_add(data.len()).ok_or_else(|| err.clone())?;
        let dst = self.bytes.get_mut(start..end).ok_or(err)?;
        dst.copy_from_slice(data);
        Ok(())
    }
}

/// Where the certificate blob comes from.
pub trait CertSource {
    /// Takes the (shared) lock and returns the current blob, which must be a
    /// valid table. The lock stays held until [`release`](Self::release). On
    /// error no lock is held.
    fn acquire(&mut self) -> Result<&[u8], SourceError>;
    /// Releases the lock, if held. Must not fail.
    fn release(&mut self);
}

/// Why a source could not give the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceError {
    /// A transient condition: the lock was held by an updater past the bounded
    /// wait, or the path kept being replaced. Answered BUSY.
    Busy,
    /// The certificate file cannot be used (missing, invalid table, I/O
    /// error): a host fault, answered by the handler's [`FaultPolicy`].
    Unavailable(String),
}

impl CertSource for BlobServer {
    fn acquire(&mut self) -> Result<&[u8], SourceError> {
        BlobServer::acquire(self).map_err(|e| match e {
            StoreError::Busy | StoreError::Unstable(_) => SourceError::Busy,
            e => SourceError::Unavailable(e.to_string()),
        })
    }
    fn release(&mut self) {
        BlobServer::release(self)
    }
}

/// How the handler answers a host fault ([`SourceError::Unavailable`]: the
/// certificate file is missing, not a valid table, or cannot be read).
///
/// Never GENERIC: a Linux guest takes every error but INVALID_LEN and BUSY as
/// final and stops using its key to the firmware until it reboots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FaultPolicy {
    /// `ret = 0` and nothing written: the guest gets KVM's empty table and an
    /// attestation report without certificates, as from a host that has none.
    /// The default: the guest keeps working, and the fault is reported to the
    /// VMM ([`Answer::HostFault`], [`ReqCertsHandler::host_faults`]).
    #[default]
    EmptyTable,
    /// `ret = BUSY`: the guest retries. Only for faults the operator expects to
    /// clear within the guest's patience: a Linux guest retries every 2 s for
    /// up to 60 s and then treats the request as failed for good.
    Busy,
}

impl FaultPolicy {
    /// The `ret` this policy answers.
    pub fn ret(self) -> u32 {
        match self {
            FaultPolicy::EmptyTable => RET_OK,
            FaultPolicy::Busy => RET_BUSY,
        }
    }
}

/// The answer the handler wrote for a new request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ret = 0`, the `len`-byte table written at `data_gpa`, `flags` =
    /// NOTIFY_DONE if `notify_done`. The lock is held until KVM has finished
    /// with the request.
    Certificates { len: usize, notify_done: bool },
    /// `ret = 0`, nothing written: the certificate file holds an empty table.
    NoCertificates,
    /// `ret = INVALID_LEN`, `data_npages = needed` (> `given`), nothing written.
    TooSmall { needed: u64, given: u64 },
    /// `ret = BUSY`: the lock was not had within the bounded wait.
    Busy,
    /// The certificate file cannot be used; answered by `policy` (`ret = 0`
    /// and nothing written, or `ret = BUSY`). `reason` is for the VMM's log.
    HostFault { reason: String, policy: FaultPolicy },
    /// The guest's buffer cannot take the table: `ret = 0`; at most KVM's empty
    /// table was written back. `reason` is for the VMM's log.
    BadBuffer { reason: String },
}

impl Answer {
    /// The `ret` value this answer wrote.
    pub fn ret(&self) -> u32 {
        match self {
            Answer::Certificates { .. } | Answer::NoCertificates | Answer::BadBuffer { .. } => {
                RET_OK
            }
            Answer::TooSmall { .. } => RET_INVALID_LEN,
            Answer::Busy => RET_BUSY,
            Answer::HostFault { policy, .. } => policy.ret(),
        }
    }

    /// The `ret` this answer wrote on 7.0's `KVM_EXIT_SNP_REQ_CERTS` (an errno).
    pub fn snp_ret(&self) -> u64 {
        match self.ret() {
            RET_INVALID_LEN => SNP_RET_ENOSPC,
            RET_BUSY => SNP_RET_EAGAIN,
            _ => SNP_RET_OK,
        }
    }
}

/// What a return of `KVM_RUN` meant, and what the VMM does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `KVM_RUN` returned a new certificate request; the answer is in
    /// `kvm_run`. Run the vCPU again.
    Answered(Answer),
    /// The DONE exit (`status` DONE), or on 7.0 the `EINTR` return that
    /// `immediate_exit` makes after KVM acted: KVM has finished with the
    /// request and the lock is released (on 7.0 `immediate_exit` is cleared
    /// again). Nothing else was written; run the vCPU again.
    Done,
    /// `KVM_RUN` failed with `errno` and the request the handler answered is
    /// still pending: `status` does not read DONE, whatever `exit_reason` says
    /// (KVM failed before it acted on the answer, e.g. on an invalid
    /// `kvm_dirty_regs`, or with `EINTR` and `exit_reason` `KVM_EXIT_INTR` on
    /// a signal while the vCPU waits for INIT; or it refused the answer with
    /// `EINVAL`). Nothing was written (on 7.0, but `exit_reason`: see the
    /// module documentation): the answer stays in `kvm_run` and the
    /// lock, if held, is kept, and the next `KVM_RUN` acts on the answer. Run
    /// the vCPU again (e.g. after `EINTR`), or, if it will not run again, call
    /// [`ReqCertsHandler::release`].
    StillPending { errno: Errno },
    /// `KVM_RUN` failed with `errno` and no request is pending: `status` reads
    /// DONE (KVM acted on the answer, then failed, e.g. on `immediate_exit`),
    /// or the handler had no answered request outstanding. The lock is
    /// released; nothing was written.
    RunFailed { errno: Errno },
    /// Another exit (`KVM_RUN` returned 0 with an `exit_reason` other than
    /// `KVM_EXIT_VMGEXIT`): KVM has finished with any earlier request, the
    /// lock is released, and the VMM handles the exit as usual.
    NotOurs,
}

/// Successful returns of `KVM_RUN` a correct KVM never produces. Nothing was
/// written; the lock is released (a new exit: the guest ran again, so KVM had
/// acted on any earlier answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitError {
    /// `KVM_EXIT_VMGEXIT` with a `type` other than REQ_CERTS.
    UnknownType(u32),
    /// REQ_CERTS with a `status` that is neither PENDING nor DONE.
    BadStatus(u8),
    /// 7.0: `KVM_EXIT_SNP_REQ_CERTS` with a `ret` other than 0.
    BadRet(u64),
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitError::UnknownType(t) => write!(f, "unknown KVM_EXIT_VMGEXIT type {t}"),
            ExitError::BadStatus(s) => write!(f, "invalid REQ_CERTS status {s}"),
            ExitError::BadRet(r) => write!(f, "KVM_EXIT_SNP_REQ_CERTS with ret {r}, not 0"),
        }
    }
}

impl std::error::Error for ExitError {}

/// The `KVM_ENABLE_CAP` argument (VM ioctl) that opts the VM in to certificate
/// exits: `cap = KVM_CAP_EXIT_VMGEXIT`, `args[0] = 1 << KVM_USER_VMGEXIT_REQ_CERTS`.
pub fn enable_cap_args() -> kvm::kvm_enable_cap {
    let mut cap = kvm::kvm_enable_cap {
        cap: kvm::KVM_CAP_EXIT_VMGEXIT,
        ..Default::default()
    };
    cap.args[0] = 1u64 << kvm::KVM_USER_VMGEXIT_REQ_CERTS;
    cap
}

/// What `kvm_run` shows.
enum View<'a> {
    /// Not `KVM_EXIT_VMGEXIT`.
    Other,
    /// `KVM_EXIT_VMGEXIT` of another type.
    UnknownType(u32),
    /// A certificate request (PENDING, DONE, or an invalid status).
    ReqCerts(&'a mut ReqCerts),
}

fn view(run: &mut kvm::kvm_run) -> View<'_> {
    if run.exit_reason != kvm::KVM_EXIT_VMGEXIT {
        return View::Other;
    }
    // SAFETY: exit_reason is KVM_EXIT_VMGEXIT, so `vmgexit` is the union member
    // KVM wrote; it consists only of integer fields, for which every bit
    // pattern is valid, so the access is sound whatever the bytes are.
    let vg = unsafe { &mut run.__bindgen_anon_1.vmgexit };
    if vg.type_ != kvm::KVM_USER_VMGEXIT_REQ_CERTS {
        return View::UnknownType(vg.type_);
    }
    // SAFETY: type is REQ_CERTS, so `req_certs` is the active member; integer
    // fields only, every bit pattern valid.
    View::ReqCerts(unsafe { &mut vg.__bindgen_anon_1.req_certs })
}

/// `status` as `kvm_run` shows it in the `req_certs` member of `vmgexit`,
/// whatever `exit_reason` and `type` say (a failed `KVM_RUN` may have set
/// `exit_reason` to `KVM_EXIT_INTR` and left `vmgexit` as it was).
fn status(run: &kvm::kvm_run) -> u8 {
    // SAFETY: the `vmgexit` member and its `req_certs` member consist only of
    // integer fields, for which every bit pattern is valid, so reading them is
    // sound whatever the bytes of the union are.
    unsafe {
        run.__bindgen_anon_1
            .vmgexit
            .__bindgen_anon_1
            .req_certs
            .status
    }
}

/// The contract's lock rule after a return of `KVM_RUN` (`result`: `Err(errno)`
/// if it failed), for a VMM that answered a certificate request: is a request
/// still pending, so that the VMM keeps its lock?
///
/// * `false` if `status` reads DONE, or `KVM_RUN` returned 0 with an
///   `exit_reason` other than `KVM_EXIT_VMGEXIT`: KVM has finished with the
///   request, the VMM releases the lock;
/// * `true` otherwise: `KVM_RUN` failed before it acted on the answer (also
///   with `exit_reason` `KVM_EXIT_INTR`, on a signal while the vCPU waits for
///   INIT) or refused it, and the next `KVM_RUN` acts on the answer; or
///   `KVM_RUN` returned 0 with `KVM_EXIT_VMGEXIT` and `status` PENDING, a new
///   request.
///
/// A failed `KVM_RUN` is judged by `status` alone. The rule is about a request
/// the VMM answered; [`ReqCertsHandler::after_run`] applies it only while it
/// has one outstanding.
pub fn request_pending(run: &kvm::kvm_run, result: Result<(), Errno>) -> bool {
    if status(run) == STATUS_DONE {
        return false;
    }
    result.is_err() || run.exit_reason == kvm::KVM_EXIT_VMGEXIT
}

/// Whether the table needs no space: a valid table whose first entry is the
/// all-zero terminator has no certificates.
fn is_empty_table(blob: &[u8]) -> bool {
    blob.get(..ENTRY_SIZE)
        .is_some_and(|first| first.iter().all(|&b| b == 0))
}

/// Where the blob went.
enum Placed {
    Written(usize),
    Empty,
    TooSmall(u64),
    Bad(String),
}

/// Writes `blob` into the guest's buffer if it is a table with certificates,
/// fits in `npages` pages and the buffer is writable.
fn place(blob: &[u8], gpa: u64, npages: u64, mem: &mut dyn GuestMemory) -> Placed {
    if is_empty_table(blob) {
        return Placed::Empty;
    }
    let len = blob.len();
    let Ok(len64) = u64::try_from(len) else {
        return Placed::Bad(format!("a {len}-byte table cannot be placed"));
    };
    // The buffer's size in bytes; past u64::MAX any table fits.
    let fits = match npages.checked_mul(PAGE_SIZE) {
        Some(cap) => len64 <= cap,
        None => true,
    };
    if !fits {
        // len > npages * 4096, so the page count needed is larger than npages.
        return Placed::TooSmall(table::pages_needed(len));
    }
    if gpa % PAGE_SIZE != 0 {
        return Placed::Bad(format!("data_gpa {gpa:#x} is not page aligned"));
    }
    if gpa.checked_add(len64).is_none() {
        return Placed::Bad(format!("data_gpa {gpa:#x} + {len} bytes is past 2^64"));
    }
    match mem.write(gpa, blob) {
        Ok(()) => Placed::Written(len),
        Err(e) => {
            // The table fits, so npages >= 1 and KVM wrote its empty table
            // here: put it back in case the write got part of the way (24
            // bytes, inside the first page). Best effort.
            let _ = mem.write(gpa, &EMPTY_TABLE);
            Placed::Bad(e.to_string())
        }
    }
}

/// Per-vCPU handler state (one per vCPU thread, each with its own source).
pub struct ReqCertsHandler<S: CertSource> {
    source: S,
    abi: Abi,
    /// 7.0: the handler set `kvm_run.immediate_exit` for the request it holds
    /// the lock for, and clears it once KVM has acted.
    armed_immediate_exit: bool,
    notify_done: bool,
    policy: FaultPolicy,
    holding: bool,
    /// A request this handler answered that KVM has not finished with.
    pending: bool,
    host_faults: u64,
}

impl<S: CertSource> ReqCertsHandler<S> {
    /// A handler that asks for NOTIFY_DONE, so that the lock is released as soon
    /// as KVM has acted on the answer, and answers host faults with
    /// [`FaultPolicy::EmptyTable`].
    pub fn new(source: S) -> Self {
        ReqCertsHandler {
            source,
            abi: Abi::default(),
            armed_immediate_exit: false,
            notify_done: true,
            policy: FaultPolicy::default(),
            holding: false,
            pending: false,
            host_faults: 0,
        }
    }

    /// The kernel interface to speak (default [`Abi::Vmgexit`], our series).
    pub fn abi(mut self, abi: Abi) -> Self {
        self.abi = abi;
        self
    }

    /// Whether to set NOTIFY_DONE (default true); on 7.0, whether to set
    /// `immediate_exit` after answering with certificates. Without it the lock is held
    /// until the vCPU's next return from `KVM_RUN`, which may come much later
    /// (most exits are handled inside KVM): updaters wait that long.
    pub fn notify_done(mut self, on: bool) -> Self {
        self.notify_done = on;
        self
    }

    /// How to answer host faults (default [`FaultPolicy::EmptyTable`]).
    pub fn fault_policy(mut self, policy: FaultPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Whether the lock is held for a request KVM has not finished with.
    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// Whether the request this handler answered last is still pending: KVM
    /// has not finished with it by the lock rule (the lock, if one is held for
    /// it, is kept).
    pub fn has_request(&self) -> bool {
        self.pending
    }

    /// Requests answered by the [`FaultPolicy`] so far.
    pub fn host_faults(&self) -> u64 {
        self.host_faults
    }

    /// Releases the lock, if held. For a VMM that stops running the vCPU (an
    /// error path): the request can then no longer reach the firmware. Do not
    /// run the vCPU again with a request pending after this
    /// ([`has_request`](Self::has_request), which `release` leaves as it is).
    /// Dropping the handler does the same.
    pub fn release(&mut self) {
        if self.holding {
            self.holding = false;
            self.source.release();
        }
    }

    /// To be called after **every** return of `KVM_RUN` on this vCPU, with its
    /// result (`Err(errno)` if the ioctl failed). Applies the lock rule, answers
    /// a new certificate request in `run` (writing the table through `mem`), and
    /// says what to do next. See the module documentation.
    pub fn after_run(
        &mut self,
        run: &mut kvm::kvm_run,
        result: Result<(), Errno>,
        mem: &mut dyn GuestMemory,
    ) -> Result<Step, ExitError> {
        match self.abi {
            Abi::Vmgexit => self.after_run_vmgexit(run, result, mem),
            Abi::SnpReqCerts => self.after_run_snp(run, result, mem),
        }
    }

    fn after_run_vmgexit(
        &mut self,
        run: &mut kvm::kvm_run,
        result: Result<(), Errno>,
        mem: &mut dyn GuestMemory,
    ) -> Result<Step, ExitError> {
        if let Err(errno) = result {
            // A failed KVM_RUN: `status` alone says whether KVM has finished
            // with the request (KVM_EXIT_INTR may have replaced the exit
            // reason of a request KVM has not acted on).
            if self.pending && request_pending(run, result) {
                return Ok(Step::StillPending { errno });
            }
            self.pending = false;
            self.release();
            return Ok(Step::RunFailed { errno });
        }
        // A successful return is a new exit: KVM has finished with any earlier
        // request (it acted on the answer before the guest could run again, or
        // this is its DONE exit).
        self.pending = false;
        self.release();
        match view(run) {
            View::Other => Ok(Step::NotOurs),
            View::UnknownType(t) => Err(ExitError::UnknownType(t)),
            View::ReqCerts(rc) => match rc.status {
                STATUS_PENDING => {
                    // A new request: pending until KVM has finished with it,
                    // whichever answer it gets.
                    self.pending = true;
                    Ok(Step::Answered(self.answer(rc, mem)))
                }
                STATUS_DONE => Ok(Step::Done),
                s => Err(ExitError::BadStatus(s)),
            },
        }
    }

    /// 7.0's `KVM_EXIT_SNP_REQ_CERTS`; see "Mainline 7.0" in the module
    /// documentation for the rule.
    fn after_run_snp(
        &mut self,
        run: &mut kvm::kvm_run,
        result: Result<(), Errno>,
        mem: &mut dyn GuestMemory,
    ) -> Result<Step, ExitError> {
        if let Err(errno) = result {
            // KVM acted on the answer and then saw immediate_exit: EINTR with
            // exit_reason left alone. Every other failure may have come
            // before KVM looked at the answer.
            let acted = errno == Errno::EINTR && run.exit_reason == kvm::KVM_EXIT_SNP_REQ_CERTS;
            if self.pending && !acted {
                // KVM reads nothing from exit_reason; a signal during the
                // INIT wait set it to KVM_EXIT_INTR, and the immediate_exit
                // return after KVM acts leaves it as it is: put it back so
                // that that return is recognised.
                run.exit_reason = kvm::KVM_EXIT_SNP_REQ_CERTS;
                return Ok(Step::StillPending { errno });
            }
            let was_pending = std::mem::replace(&mut self.pending, false);
            self.disarm(run);
            self.release();
            return Ok(if was_pending {
                Step::Done
            } else {
                Step::RunFailed { errno }
            });
        }
        // A new exit: KVM has acted on any earlier answer.
        self.pending = false;
        self.disarm(run);
        self.release();
        if run.exit_reason != kvm::KVM_EXIT_SNP_REQ_CERTS {
            return Ok(Step::NotOurs);
        }
        let ret = snp_req_certs(run).ret;
        if ret != 0 {
            return Err(ExitError::BadRet(ret));
        }
        self.pending = true;
        Ok(Step::Answered(self.answer_snp(run, mem)))
    }

    /// Clears `immediate_exit` if this handler set it.
    fn disarm(&mut self, run: &mut kvm::kvm_run) {
        if std::mem::replace(&mut self.armed_immediate_exit, false) {
            run.immediate_exit = 0;
        }
    }

    /// Answers a new 7.0 request: writes `ret` (and `npages` for ENOSPC), and
    /// `immediate_exit` when it keeps the lock with NOTIFY_DONE on.
    fn answer_snp(&mut self, run: &mut kvm::kvm_run, mem: &mut dyn GuestMemory) -> Answer {
        let rc = snp_req_certs(run);
        let (gpa, given) = (rc.gpa, rc.npages);
        // KVM wrote nothing at `gpa` for this exit: an answer of 0 without
        // certificates must put the empty table there itself.
        let empty_table = |mem: &mut dyn GuestMemory| {
            if given != 0 && gpa % PAGE_SIZE == 0 {
                let _ = mem.write(gpa, &EMPTY_TABLE); // best effort, as for the series
            }
        };
        let placed = match self.source.acquire() {
            Ok(blob) => place(blob, gpa, given, mem),
            Err(SourceError::Busy) => {
                rc.ret = SNP_RET_EAGAIN;
                return Answer::Busy;
            }
            Err(SourceError::Unavailable(reason)) => {
                self.host_faults = self.host_faults.saturating_add(1);
                if self.policy == FaultPolicy::EmptyTable {
                    empty_table(mem);
                }
                let answer = Answer::HostFault {
                    reason,
                    policy: self.policy,
                };
                rc.ret = answer.snp_ret();
                return answer;
            }
        };
        self.holding = true;
        let answer = match placed {
            Placed::Written(len) => Answer::Certificates {
                len,
                notify_done: self.notify_done,
            },
            Placed::Empty => {
                empty_table(mem);
                Answer::NoCertificates
            }
            Placed::TooSmall(needed) => {
                rc.npages = needed;
                Answer::TooSmall { needed, given }
            }
            Placed::Bad(reason) => Answer::BadBuffer { reason },
        };
        rc.ret = answer.snp_ret();
        if let Answer::Certificates { notify_done, .. } = answer {
            if notify_done {
                run.immediate_exit = 1;
                self.armed_immediate_exit = true;
            }
        } else {
            self.release();
        }
        answer
    }

    /// Answers a new PENDING request. Writes `ret` and `flags` (and
    /// `data_npages` for INVALID_LEN) only.
    fn answer(&mut self, rc: &mut ReqCerts, mem: &mut dyn GuestMemory) -> Answer {
        let gpa = rc.data_gpa;
        let given = rc.data_npages;
        rc.flags = 0;
        let placed = match self.source.acquire() {
            Ok(blob) => place(blob, gpa, given, mem),
            Err(SourceError::Busy) => {
                rc.ret = RET_BUSY;
                return Answer::Busy;
            }
            Err(SourceError::Unavailable(reason)) => {
                self.host_faults = self.host_faults.saturating_add(1);
                rc.ret = self.policy.ret();
                return Answer::HostFault {
                    reason,
                    policy: self.policy,
                };
            }
        };
        // The source holds the lock now.
        self.holding = true;
        match placed {
            Placed::Written(len) => {
                rc.ret = RET_OK;
                if self.notify_done {
                    rc.flags = FLAG_NOTIFY_DONE;
                }
                Answer::Certificates {
                    len,
                    notify_done: self.notify_done,
                }
            }
            Placed::Empty => {
                self.release();
                rc.ret = RET_OK;
                Answer::NoCertificates
            }
            Placed::TooSmall(needed) => {
                self.release();
                rc.data_npages = needed;
                rc.ret = RET_INVALID_LEN;
                Answer::TooSmall { needed, given }
            }
            Placed::Bad(reason) => {
                self.release();
                rc.ret = RET_OK;
                Answer::BadBuffer { reason }
            }
        }
    }
}

impl<S: CertSource> Drop for ReqCertsHandler<S> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::kvm_run;
    use std::mem::{offset_of, size_of};

    #[test]
    fn uapi_layout_matches_the_series() {
        assert_eq!(size_of::<kvm_run>(), 2352);
        assert_eq!(size_of::<kvm::kvm_user_vmgexit>(), 32);
        assert_eq!(offset_of!(kvm_run, __bindgen_anon_1), 32);
        type Rc = kvm::kvm_user_vmgexit__bindgen_ty_1__bindgen_ty_1;
        assert_eq!(offset_of!(kvm::kvm_user_vmgexit, type_), 0);
        assert_eq!(offset_of!(kvm::kvm_user_vmgexit, __bindgen_anon_1), 8);
        assert_eq!(offset_of!(Rc, data_gpa), 0);
        assert_eq!(offset_of!(Rc, data_npages), 8);
        assert_eq!(offset_of!(Rc, ret), 16);
        assert_eq!(offset_of!(Rc, flags), 20);
        assert_eq!(offset_of!(Rc, status), 21);
        assert_eq!(offset_of!(kvm::kvm_run__bindgen_ty_1, snp_req_certs), 0);
        assert_eq!(size_of::<kvm::kvm_exit_snp_req_certs>(), 24);
        assert_eq!(offset_of!(kvm::kvm_exit_snp_req_certs, gpa), 0);
        assert_eq!(offset_of!(kvm::kvm_exit_snp_req_certs, npages), 8);
        assert_eq!(offset_of!(kvm::kvm_exit_snp_req_certs, ret), 16);
        assert_eq!(kvm::KVM_EXIT_SNP_REQ_CERTS, 43);
        assert_eq!(kvm::KVM_EXIT_VMGEXIT, 40);
        assert_eq!(kvm::KVM_CAP_EXIT_VMGEXIT, 1024);
        assert_eq!(RET_GENERIC, 1 << 31);
        let cap = enable_cap_args();
        assert_eq!(cap.cap, 1024);
        assert_eq!(cap.args, [2, 0, 0, 0]);
        assert_eq!(cap.flags, 0);
    }

    /// Guest memory that writes the first `room` bytes of a write, then fails.
    struct PartialMemory {
        inner: FlatMemory,
        room: usize,
    }

    impl GuestMemory for PartialMemory {
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GuestMemoryError> {
            if data.len() <= self.room {
                return self.inner.write(gpa, data);
            }
            self.inner.write(gpa, &data[..self.room])?;
            Err(GuestMemoryError {
                gpa,
                len: data.len(),
            })
        }
    }

    #[test]
    fn failed_write_puts_the_empty_table_back() {
        let blob = crate::table::Builder::new()
            .add_kind(crate::table::CertKind::Vcek, vec![7; 3000])
            .build()
            .unwrap();
        let mut mem = PartialMemory {
            inner: FlatMemory::new(0x1000, 0x2000),
            room: 100,
        };
        mem.inner.bytes.fill(0xee);
        // KVM's empty table at the buffer
        mem.inner.bytes[..24].fill(0);
        assert!(matches!(place(&blob, 0x1000, 1, &mut mem), Placed::Bad(_)));
        assert_eq!(mem.inner.read(0x1000, 24), Some(&[0u8; 24][..]));
        // bytes 24..100 of the table stay behind the terminator; nothing past
        // the part written changed
        assert_eq!(mem.inner.read(0x1000 + 24, 76), Some(&blob[24..100]));
        assert!(mem.inner.bytes[100..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn empty_table_and_pending() {
        assert!(is_empty_table(&[0; 24]));
        assert!(is_empty_table(&[0; 4096]));
        let mut t = [0u8; 48];
        t[0] = 1;
        assert!(!is_empty_table(&t));
        assert!(!is_empty_table(&[0; 23]));

        let mut run = kvm_run::default();
        let (ok, eintr) = (Ok(()), Err(Errno::EINTR));
        // status PENDING (0)
        assert!(request_pending(&run, eintr)); // failed: pending
        assert!(!request_pending(&run, ok)); // exit 0, not VMGEXIT: finished
        run.exit_reason = 10; // KVM_EXIT_INTR
        assert!(request_pending(&run, eintr));
        assert!(!request_pending(&run, ok));
        run.exit_reason = 40;
        run.__bindgen_anon_1.vmgexit.type_ = 1;
        assert!(request_pending(&run, eintr));
        assert!(request_pending(&run, ok)); // a new request
        run.__bindgen_anon_1
            .vmgexit
            .__bindgen_anon_1
            .req_certs
            .status = 1; // DONE
        assert!(!request_pending(&run, ok));
        assert!(!request_pending(&run, eintr));
        run.exit_reason = 10;
        assert!(!request_pending(&run, eintr));
    }

    #[test]
    fn flat_memory_bounds() {
        let mut m = FlatMemory::new(0x1000, 0x2000);
        assert!(m.write(0x1000, &[1; 0x2000]).is_ok());
        assert!(m.write(0x0fff, &[1]).is_err());
        assert!(m.write(0x2fff, &[1, 2]).is_err());
        assert!(m.write(u64::MAX, &[1]).is_err());
        assert_eq!(m.read(0x2fff, 1), Some(&[1u8][..]));
        assert_eq!(m.read(u64::MAX, 2), None);
    }
}
