//! The VMM's answer to `KVM_EXIT_VMGEXIT` / `KVM_USER_VMGEXIT_REQ_CERTS`.
//!
//! Protocol (the series' `Documentation/virt/kvm/api.rst`): KVM fills
//! `vmgexit.type = REQ_CERTS`, `req_certs.data_gpa` (guest RAX, page aligned),
//! `req_certs.data_npages` (guest RBX), `flags = 0`, `status = PENDING` and exits.
//! The VMM answers, before the next `KVM_RUN`, with one of
//!
//! * blob written at `data_gpa`, `ret = 0`, optionally `flags |= NOTIFY_DONE` (keep
//!   the certificate lock until KVM exits again with `status = DONE`);
//! * `ret = INVALID_LEN` and `data_npages` = the exact number of pages needed;
//! * `ret = BUSY`: the lock was not available in time, the guest retries in 2 s;
//! * `ret = GENERIC`: anything else.
//!
//! [`ReqCertsHandler::handle`] implements that over the bindgen-generated
//! [`kvm_run`](crate::kvm::kvm_run), a [`CertSource`] (normally a
//! [`BlobServer`]) and a [`GuestMemory`].
//!
//! Policy for inputs KVM should never produce (a buggy or hostile kernel, or a
//! VMM bug): the handler never panics and never writes outside the documented
//! fields. Unknown `type`: nothing is written, `Err(UnknownType)` (the layout of
//! an unknown type is unknown). Unknown `status`: `ret = GENERIC`, `flags = 0`,
//! `Err(BadStatus)`. `DONE` with no lock held: nothing to release,
//! `Err(DoneWithoutLock)`. A new `PENDING` while a lock is still held for an
//! earlier request (its `DONE` was lost): the old lock is released first and
//! counted in [`ReqCertsHandler::stale_releases`]. `data_gpa` not page aligned,
//! or `data_gpa + blob length` past 2^64, or a guest-memory write that fails:
//! `ret = GENERIC`. A `data_npages` larger than needed (even `u64::MAX`) is fine:
//! only the blob's bytes are written.

use std::fmt;

use crate::kvm;
use crate::store::{BlobServer, StoreError};
use crate::table::{self, PAGE_SIZE};

/// `ret` values.
pub const RET_OK: u32 = 0;
pub const RET_INVALID_LEN: u32 = kvm::KVM_USER_VMGEXIT_REQ_CERTS_ERROR_INVALID_LEN;
pub const RET_BUSY: u32 = kvm::KVM_USER_VMGEXIT_REQ_CERTS_ERROR_BUSY;
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

/// Guest memory as the handler needs it.
pub trait GuestMemory {
    /// Writes `data` at guest physical address `gpa`. Must fail (not panic) for
    /// any range that is not wholly backed guest RAM.
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
    /// valid table. The lock stays held until [`release`](Self::release).
    fn acquire(&mut self) -> Result<&[u8], SourceError>;
    /// Releases the lock, if held. Must not fail.
    fn release(&mut self);
}

/// Why a source could not give the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceError {
    /// The lock could not be had within the bounded wait: answer BUSY.
    Busy,
    /// Anything else (missing file, invalid table, I/O error): answer GENERIC.
    Failed(String),
}

impl CertSource for BlobServer {
    fn acquire(&mut self) -> Result<&[u8], SourceError> {
        BlobServer::acquire(self).map_err(|e| match e {
            StoreError::Busy => SourceError::Busy,
            e => SourceError::Failed(e.to_string()),
        })
    }
    fn release(&mut self) {
        BlobServer::release(self)
    }
}

/// What the handler answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Blob written, `ret = 0`; `holding` if NOTIFY_DONE was set and the lock is
    /// kept until the DONE exit.
    Served { len: usize, holding: bool },
    /// `ret = INVALID_LEN`, `data_npages = needed`.
    TooSmall { needed: u64, given: u64 },
    /// `ret = BUSY`.
    Busy,
    /// `ret = GENERIC`, with the reason.
    Failed(String),
    /// DONE exit: the lock held since the PENDING exit was released.
    Released,
}

/// Exits the handler refuses (see the module documentation for what it wrote).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitError {
    /// `exit_reason` is not `KVM_EXIT_VMGEXIT`; `kvm_run` untouched.
    NotVmgexit(u32),
    /// `vmgexit.type` is not REQ_CERTS; `kvm_run` untouched.
    UnknownType(u32),
    /// `status` is neither PENDING nor DONE; answered GENERIC.
    BadStatus(u8),
    /// DONE exit with no lock held; `kvm_run` untouched.
    DoneWithoutLock,
}

impl fmt::Display for ExitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitError::NotVmgexit(r) => write!(f, "exit reason {r} is not KVM_EXIT_VMGEXIT"),
            ExitError::UnknownType(t) => write!(f, "unknown KVM_EXIT_VMGEXIT type {t}"),
            ExitError::BadStatus(s) => write!(f, "invalid REQ_CERTS status {s}"),
            ExitError::DoneWithoutLock => {
                write!(f, "REQ_CERTS DONE exit without a pending request")
            }
        }
    }
}

impl std::error::Error for ExitError {}

/// The `KVM_ENABLE_CAP` argument that opts the VM in to certificate exits.
pub fn enable_cap_args() -> kvm::kvm_enable_cap {
    let mut cap = kvm::kvm_enable_cap {
        cap: kvm::KVM_CAP_EXIT_VMGEXIT,
        ..Default::default()
    };
    cap.args[0] = 1u64 << kvm::KVM_USER_VMGEXIT_REQ_CERTS;
    cap
}

/// Per-vCPU handler state (one per vCPU thread, each with its own source).
pub struct ReqCertsHandler<S: CertSource> {
    source: S,
    notify_done: bool,
    holding: bool,
    stale_releases: u64,
}

impl<S: CertSource> ReqCertsHandler<S> {
    /// A handler that asks for NOTIFY_DONE (keeps the lock until firmware got
    /// the request), as the kernel documentation recommends.
    pub fn new(source: S) -> Self {
        ReqCertsHandler {
            source,
            notify_done: true,
            holding: false,
            stale_releases: 0,
        }
    }

    /// Whether to set NOTIFY_DONE (default true). Without it the lock is released
    /// as soon as the blob is copied.
    pub fn notify_done(mut self, on: bool) -> Self {
        self.notify_done = on;
        self
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// Lock held for an answered request whose DONE exit has not come yet.
    pub fn is_holding(&self) -> bool {
        self.holding
    }

    /// PENDING exits that arrived while a previous request still held the lock.
    pub fn stale_releases(&self) -> u64 {
        self.stale_releases
    }

    /// Handles one exit. See the module documentation.
    pub fn handle(
        &mut self,
        run: &mut kvm::kvm_run,
        mem: &mut dyn GuestMemory,
    ) -> Result<Outcome, ExitError> {
        if run.exit_reason != kvm::KVM_EXIT_VMGEXIT {
            return Err(ExitError::NotVmgexit(run.exit_reason));
        }
        // SAFETY: exit_reason is KVM_EXIT_VMGEXIT, so `vmgexit` is the union member
        // KVM wrote; it consists only of integer fields, for which every bit
        // pattern is valid, so the access is sound whatever the bytes are.
        let vg = unsafe { &mut run.__bindgen_anon_1.vmgexit };
        if vg.type_ != kvm::KVM_USER_VMGEXIT_REQ_CERTS {
            return Err(ExitError::UnknownType(vg.type_));
        }
        // SAFETY: type is REQ_CERTS, so `req_certs` is the active member; integer
        // fields only, every bit pattern valid.
        let rc = unsafe { &mut vg.__bindgen_anon_1.req_certs };
        match rc.status {
            STATUS_PENDING => {}
            STATUS_DONE => {
                if !self.holding {
                    return Err(ExitError::DoneWithoutLock);
                }
                self.holding = false;
                self.source.release();
                return Ok(Outcome::Released);
            }
            s => {
                rc.ret = RET_GENERIC;
                rc.flags = 0;
                return Err(ExitError::BadStatus(s));
            }
        }
        if self.holding {
            // The DONE exit for the previous request never came: do not leak it.
            self.holding = false;
            self.source.release();
            self.stale_releases = self.stale_releases.saturating_add(1);
        }
        rc.flags = 0;
        let gpa = rc.data_gpa;
        let given = rc.data_npages;
        if gpa % PAGE_SIZE != 0 {
            rc.ret = RET_GENERIC;
            return Ok(Outcome::Failed(format!(
                "data_gpa {gpa:#x} is not page aligned"
            )));
        }
        let blob = match self.source.acquire() {
            Ok(b) => b,
            Err(SourceError::Busy) => {
                rc.ret = RET_BUSY;
                return Ok(Outcome::Busy);
            }
            Err(SourceError::Failed(why)) => {
                rc.ret = RET_GENERIC;
                return Ok(Outcome::Failed(why));
            }
        };
        let len = blob.len();
        let needed = table::pages_needed(len);
        if given < needed {
            self.source.release();
            rc.data_npages = needed;
            rc.ret = RET_INVALID_LEN;
            return Ok(Outcome::TooSmall { needed, given });
        }
        let fits = u64::try_from(len)
            .ok()
            .and_then(|l| gpa.checked_add(l))
            .is_some();
        if !fits {
            self.source.release();
            rc.ret = RET_GENERIC;
            return Ok(Outcome::Failed(format!(
                "data_gpa {gpa:#x} + {len} bytes overflows"
            )));
        }
        if let Err(e) = mem.write(gpa, blob) {
            self.source.release();
            rc.ret = RET_GENERIC;
            return Ok(Outcome::Failed(e.to_string()));
        }
        rc.ret = RET_OK;
        if self.notify_done {
            rc.flags = FLAG_NOTIFY_DONE;
            self.holding = true;
        } else {
            self.source.release();
        }
        Ok(Outcome::Served {
            len,
            holding: self.holding,
        })
    }
}

impl<S: CertSource> Drop for ReqCertsHandler<S> {
    fn drop(&mut self) {
        if self.holding {
            self.source.release();
        }
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
        assert_eq!(kvm::KVM_EXIT_VMGEXIT, 40);
        assert_eq!(kvm::KVM_CAP_EXIT_VMGEXIT, 1024);
        assert_eq!(RET_GENERIC, 1 << 31);
        let cap = enable_cap_args();
        assert_eq!(cap.cap, 1024);
        assert_eq!(cap.args, [2, 0, 0, 0]);
        assert_eq!(cap.flags, 0);
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
