//! The host's chip ID and reported TCB from the SEV firmware device
//! (`/dev/sev`, the ccp driver), and its product from CPUID.
//!
//! Two `SEV_ISSUE_CMD` ioctls (include/uapi/linux/psp-sev.h):
//! `SNP_PLATFORM_STATUS` fills `struct sev_user_data_snp_status` (packed, 32
//! bytes: api_major, api_minor, state, is_rmp_initialized; build_id; bits
//! mask_chip_id, mask_chip_key, vlek_en; guest_count; current_tcb_version;
//! reported_tcb_version), and `SEV_GET_ID2` writes the chip ID (64 bytes) to
//! a buffer. Only the error paths are tested here: this machine has no SNP
//! host.

use std::fmt;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::libc;

use crate::report::{Product, TcbVersion, CHIP_ID_SIZE};

/// The default device.
pub const SEV_DEVICE: &str = "/dev/sev";

const SEV_GET_ID2: u32 = 8;
const SNP_PLATFORM_STATUS: u32 = 9;

/// `struct sev_issue_cmd` (packed).
#[repr(C, packed)]
struct SevIssueCmd {
    cmd: u32,
    data: u64,
    error: u32,
}

/// `struct sev_user_data_get_id2` (packed).
#[repr(C, packed)]
struct GetId2 {
    address: u64,
    length: u32,
}

/// `_IOWR('S', 0x0, struct sev_issue_cmd)`: dir 3 << 30, size << 16, type << 8, nr.
const SEV_ISSUE_CMD: u64 =
    (3 << 30) | ((std::mem::size_of::<SevIssueCmd>() as u64) << 16) | ((b'S' as u64) << 8);
const _: () = assert!(std::mem::size_of::<SevIssueCmd>() == 16);
const _: () = assert!(std::mem::size_of::<GetId2>() == 12);
const _: () = assert!(SEV_ISSUE_CMD == 0xC010_5300);

/// What the host's firmware says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    pub product: Product,
    pub chip_id: [u8; CHIP_ID_SIZE],
    pub reported_tcb: TcbVersion,
    /// A VLEK is loaded: the firmware signs reports with it, not the VCEK.
    pub vlek_loaded: bool,
    pub mask_chip_id: bool,
}

#[derive(Debug)]
pub struct SevDevError(pub String);

impl fmt::Display for SevDevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SevDevError {}

fn issue(fd: i32, cmd: u32, data: u64, what: &str, dev: &Path) -> Result<(), SevDevError> {
    let mut arg = SevIssueCmd {
        cmd,
        data,
        error: 0,
    };
    // SAFETY: SEV_ISSUE_CMD takes a pointer to a live struct sev_issue_cmd;
    // `data` points to a live, correctly sized structure of the command (the
    // callers keep it alive across the call).
    let rc = unsafe { libc::ioctl(fd, SEV_ISSUE_CMD as _, &mut arg as *mut SevIssueCmd) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let fw = arg.error;
        return Err(SevDevError(format!(
            "{}: {what} failed: {e} (firmware error {fw:#x})",
            dev.display()
        )));
    }
    Ok(())
}

/// The host's CPU family and model from CPUID leaf 1.
#[cfg(target_arch = "x86_64")]
fn cpu_family_model() -> (u8, u8) {
    // SAFETY: CPUID leaf 1 exists on every x86_64 CPU. (`__cpuid` is a safe
    // function on newer toolchains: hence the allow.)
    #[allow(unused_unsafe)]
    let eax = unsafe { std::arch::x86_64::__cpuid(1) }.eax;
    let base_family = (eax >> 8) & 0xf;
    let ext_family = (eax >> 20) & 0xff;
    let base_model = (eax >> 4) & 0xf;
    let ext_model = (eax >> 16) & 0xf;
    let family = if base_family == 0xf {
        base_family.saturating_add(ext_family)
    } else {
        base_family
    };
    let model = (ext_model << 4) | base_model;
    (
        u8::try_from(family).unwrap_or(u8::MAX),
        u8::try_from(model).unwrap_or(u8::MAX),
    )
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_family_model() -> (u8, u8) {
    (0, 0)
}

/// Queries the SEV firmware device `dev` (normally [`SEV_DEVICE`]).
pub fn query(dev: &Path) -> Result<HostInfo, SevDevError> {
    let f = OpenOptions::new().read(true).write(true).open(dev).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (not an SEV host, or the ccp driver is not loaded; give --from-report FILE, or --product, --chip-id and --tcb)"
        } else {
            ""
        };
        SevDevError(format!("{}: {e}{hint}", dev.display()))
    })?;
    let (family, model) = cpu_family_model();
    let product = Product::from_cpuid(family, model).ok_or_else(|| {
        SevDevError(format!(
            "CPU family {family:#x} model {model:#x} is not an SEV-SNP product this tool knows (Milan, Genoa, Turin); give --product"
        ))
    })?;
    let fd = f.as_raw_fd();
    let mut status = [0u8; 32];
    issue(
        fd,
        SNP_PLATFORM_STATUS,
        status.as_mut_ptr() as u64,
        "SNP_PLATFORM_STATUS",
        dev,
    )?;
    let mut id = [0u8; CHIP_ID_SIZE];
    let mut arg = GetId2 {
        address: id.as_mut_ptr() as u64,
        length: u32::try_from(CHIP_ID_SIZE).unwrap_or(0),
    };
    issue(
        fd,
        SEV_GET_ID2,
        &mut arg as *mut GetId2 as u64,
        "SEV_GET_ID2",
        dev,
    )?;
    let [_, _, _, _, _, _, _, _, f0, f1, f2, f3, _, _, _, _, _, _, _, _, _, _, _, _, t @ ..] =
        status;
    let flags = u32::from_le_bytes([f0, f1, f2, f3]);
    let tcb: [u8; 8] = t;
    Ok(HostInfo {
        product,
        chip_id: id,
        reported_tcb: TcbVersion::from_bytes(product, tcb),
        mask_chip_id: flags & 1 != 0,
        vlek_loaded: flags & 4 != 0,
    })
}
