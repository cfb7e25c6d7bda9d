//! `snp-certs refresh`: the VCEK for this chip and TCB, fetched (once, thanks
//! to the cache), verified against AMD's chain, and installed under the
//! store's exclusive lock.
//!
//! What "verified" means here: the table ARK, ASK, VCEK verifies as
//! [`crate::verify`] checks it, and the VCEK's AMD extensions say it is for
//! the product, chip (hwID) and TCB asked for. Anything else is refused and
//! the installed blob is left alone.
//!
//! VLEK: a VLEK is issued to a cloud provider for its own hosts and loaded
//! into the firmware with SNP_VLEK_LOAD; KDS does not hand it out per chip,
//! so refresh cannot fetch one. It refuses to run on a host whose reports are
//! signed with a VLEK (report SIGNING_KEY, or `vlek_en` in the platform
//! status) and to replace an installed blob that holds a VLEK: such hosts
//! build their blob with `build --vlek` and install it with `install` or
//! `hold --install`.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::kds::{self, CacheKey, Kds, KdsError, Source};
use crate::report::{Product, ReportInfo, SigningKey, TcbVersion, CHIP_ID_SIZE};
use crate::store::{self, LockedFile, StoreError};
use crate::table::{self, Builder, CertKind};
use crate::verify;

/// The VCEK to have: product, chip and TCB.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub product: Product,
    /// The chip ID as KDS and the VCEK's hwID know it ([`Product::hwid_len`] bytes).
    hwid: Vec<u8>,
    pub tcb: TcbVersion,
    /// Serve AMD's CRL too (fetched from KDS each time, checked, and refused
    /// if it revokes the ASK: the ARK's CRL covers the ASK, not VCEKs).
    pub crl: bool,
    /// The roots the chain must end in (AMD's built-in ARKs by default).
    pub anchors: verify::TrustAnchors,
    /// Replace an installed VCEK for this chip whose TCB is newer in some
    /// component (`--force`); otherwise such a refresh is refused, so an
    /// older refresh that finishes last cannot downgrade the blob.
    pub allow_older: bool,
}

/// Why a refresh failed. The installed blob is unchanged in every case.
#[derive(Debug)]
pub enum RefreshError {
    /// The product, chip ID or TCB given or read is unusable.
    Input(String),
    /// VLEK host or blob.
    Vlek(String),
    Kds(KdsError),
    /// What KDS served does not verify, or is not for this chip and TCB.
    Verify(Vec<String>),
    Store(StoreError),
    /// The installed VCEK is for a newer TCB.
    Older(String),
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefreshError::Input(s) | RefreshError::Vlek(s) | RefreshError::Older(s) => {
                f.write_str(s)
            }
            RefreshError::Kds(e) => write!(f, "{e}"),
            RefreshError::Verify(p) => write!(
                f,
                "the certificates from KDS do not verify or are not for this chip and TCB; nothing installed:\n  {}",
                p.join("\n  ")
            ),
            RefreshError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RefreshError {}

impl From<KdsError> for RefreshError {
    fn from(e: KdsError) -> Self {
        RefreshError::Kds(e)
    }
}

impl From<StoreError> for RefreshError {
    fn from(e: StoreError) -> Self {
        RefreshError::Store(e)
    }
}

const VLEK_HELP: &str = "KDS serves VLEKs only to the cloud provider that registered them, so refresh (VCEK only) cannot fetch one; build the blob with `snp-certs build --vlek` and install it with `install` or `hold --install`";

impl Target {
    /// Checks and keeps a target. `chip_id` is the 64-byte chip ID, or on
    /// Turin also its 8-byte hwID; a Turin chip ID must be zero after byte 8.
    pub fn new(product: Product, chip_id: &[u8], tcb: TcbVersion) -> Result<Target, RefreshError> {
        tcb.check_for(product).map_err(RefreshError::Input)?;
        let n = product.hwid_len();
        if chip_id.len() != CHIP_ID_SIZE && chip_id.len() != n {
            return Err(RefreshError::Input(format!(
                "chip ID of {} bytes: {product} wants {n}{}",
                chip_id.len(),
                if n == CHIP_ID_SIZE {
                    String::new()
                } else {
                    format!(" (or {CHIP_ID_SIZE}, zero after byte {n})")
                }
            )));
        }
        let (hwid, tail) = chip_id.split_at(n.min(chip_id.len()));
        if tail.iter().any(|&b| b != 0) {
            return Err(RefreshError::Input(format!(
                "chip ID has non-zero bytes after byte {n}: not a {product} chip ID (wrong --product?)"
            )));
        }
        if hwid.iter().all(|&b| b == 0) {
            return Err(RefreshError::Input(
                "chip ID is all zero: the host masks it (MASK_CHIP_ID), so no VCEK can be looked up for it".into(),
            ));
        }
        Ok(Target {
            product,
            hwid: hwid.to_vec(),
            tcb,
            crl: false,
            anchors: verify::TrustAnchors::amd(),
            allow_older: false,
        })
    }

    /// From an attestation report: REPORTED_TCB and CHIP_ID, the product from
    /// the report's CPUID fields (version 3 and later) or `product`.
    pub fn from_report(r: &ReportInfo, product: Option<Product>) -> Result<Target, RefreshError> {
        match r.signing_key {
            SigningKey::Vcek => {}
            SigningKey::Vlek => {
                return Err(RefreshError::Vlek(format!(
                    "the report is signed with a VLEK: {VLEK_HELP}"
                )))
            }
            SigningKey::None => {
                return Err(RefreshError::Input(
                    "the report is unsigned (SIGNING_KEY none, MASK_CHIP_KEY): no VCEK signs it"
                        .into(),
                ))
            }
            SigningKey::Reserved(n) => {
                return Err(RefreshError::Input(format!(
                    "the report's SIGNING_KEY is {n}, a reserved value"
                )))
            }
        }
        let product = match (r.cpuid_product, r.cpuid, product) {
            (Some(p), _, None) => p,
            (Some(p), _, Some(q)) if p == q => p,
            (Some(p), _, Some(q)) => {
                return Err(RefreshError::Input(format!(
                    "--product {q}, but the report's CPUID fields say {p}"
                )))
            }
            (None, Some((f, m)), _) => {
                return Err(RefreshError::Input(format!(
                    "the report's CPUID family {f:#x} model {m:#x} is no product this tool knows (Milan, Genoa, Turin)"
                )))
            }
            (None, None, Some(q)) => q,
            (None, None, None) => {
                return Err(RefreshError::Input(format!(
                    "report version {} has no CPUID fields (version 3 and later have them): give --product",
                    r.version
                )))
            }
        };
        Target::new(
            product,
            &r.chip_id,
            TcbVersion::from_bytes(product, r.reported_tcb),
        )
    }

    /// From the host's firmware (`/dev/sev`).
    pub fn from_host(h: &crate::sevdev::HostInfo) -> Result<Target, RefreshError> {
        if h.vlek_loaded {
            return Err(RefreshError::Vlek(format!(
                "a VLEK is loaded in the firmware (it signs the reports, not the VCEK): {VLEK_HELP}"
            )));
        }
        Target::new(h.product, &h.chip_id, h.reported_tcb)
    }

    pub fn hwid(&self) -> &[u8] {
        &self.hwid
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} chip {}, TCB {}",
            self.product,
            kds::hex(&self.hwid),
            self.tcb
        )
    }
}

/// Why the leaf of a verified report is not the VCEK for `t`, if it is not.
fn leaf_mismatch(report: &verify::ChainReport, t: &Target) -> Vec<String> {
    let Some(leaf) = report.certs.iter().find(|c| c.role == verify::Role::Vcek) else {
        return vec!["no VCEK in the table".into()];
    };
    let Some(e) = &leaf.endorsement else {
        return vec!["the VCEK carries no AMD extensions".into()];
    };
    let mut out = Vec::new();
    match &e.product {
        Some(p)
            if p.to_ascii_lowercase()
                .starts_with(&t.product.name().to_ascii_lowercase()) => {}
        p => out.push(format!(
            "VCEK product is {}, not {}",
            p.as_deref().unwrap_or("(none)"),
            t.product
        )),
    }
    if e.hwid.as_deref() != Some(t.hwid.as_slice()) {
        out.push(format!(
            "VCEK hwID is {}, not the chip's {}",
            e.hwid.as_deref().map_or("(none)".into(), kds::hex),
            kds::hex(&t.hwid)
        ));
    }
    if e.tcb != t.tcb.to_extensions() {
        out.push(format!(
            "VCEK TCB is {}, not the TCB asked for ({})",
            e.tcb,
            t.tcb.to_extensions()
        ));
    }
    out
}

/// Why the CRL `crl` (DER) is unusable with `ark`, or revokes `ask` (the
/// ARK's CRL covers the ASK only, not the VCEK). Past its nextUpdate, an installed CRL is out of date (a problem:
/// refresh fetches a new one); a CRL just fetched is the newest AMD
/// publishes, so that is only a warning.
fn crl_problems(crl: &[u8], [ark, ask]: [&[u8]; 2], at: Duration, installed: bool) -> Vec<String> {
    match verify::check_crl(crl, ark, at) {
        Err(e) => vec![format!("CRL: {e}")],
        Ok((revoked, next)) => {
            let mut p = Vec::new();
            if next.is_some_and(|n| n < at) {
                if installed {
                    p.push("the CRL is past its nextUpdate".into());
                } else {
                    let _ = std::io::Write::write_all(
                        &mut std::io::stderr(),
                        b"snp-certs: warning: AMD's CRL is past its nextUpdate\n",
                    );
                }
            }
            // The ARK's CRL lists certificates the ARK issued: the ASK. A
            // VCEK is issued by the ASK, and its serial number means
            // nothing in the ARK's list (serials are per issuer).
            if let Some(sn) = verify::serial_of(ask).filter(|sn| revoked.contains(sn)) {
                p.push(format!(
                    "the ASK (serial {}) is revoked by AMD's CRL",
                    kds::hex(&sn)
                ));
            }
            p
        }
    }
}

/// Every reason `blob` is not a verified ARK/ASK/VCEK chain for `t` at `at`,
/// with a usable CRL entry when `t.crl` (empty: it is). `installed`: the blob
/// is the one served now (a CRL past its nextUpdate makes it out of date).
pub fn problems_for(blob: &[u8], t: &Target, at: Duration, installed: bool) -> Vec<String> {
    let r = match verify::verify_table_with(blob, at, &t.anchors) {
        Err(e) => return vec![format!("invalid certificate table: {e}")],
        Ok(r) => r,
    };
    let mut p = r.failures();
    p.extend(leaf_mismatch(&r, t));
    if t.crl && p.is_empty() {
        let tb = table::parse(blob);
        let get = |k| tb.as_ref().ok().and_then(|tb| tb.find(k)).unwrap_or(&[]);
        match tb.as_ref().ok().and_then(|tb| tb.find(CertKind::Crl)) {
            None => p.push("no CRL entry".into()),
            Some(crl) => p.extend(crl_problems(
                crl,
                [get(CertKind::Ark), get(CertKind::Ask)],
                at,
                installed,
            )),
        }
    }
    p
}

/// If `installed` is a verified chain whose VCEK is for `t`'s product and
/// chip with a TCB newer than `t`'s in some component, why (installing `t`
/// would serve an older TCB's VCEK).
pub fn newer_installed(installed: &[u8], t: &Target, at: Duration) -> Option<String> {
    let r = verify::verify_table_with(installed, at, &t.anchors).ok()?;
    if !r.verified() {
        return None;
    }
    let leaf = r.certs.iter().find(|c| c.role == verify::Role::Vcek)?;
    let e = leaf.endorsement.as_ref()?;
    if e.hwid.as_deref() != Some(t.hwid.as_slice()) {
        return None;
    }
    let want = t.tcb.to_extensions();
    let pairs = [
        (want.bootloader, e.tcb.bootloader),
        (want.tee, e.tcb.tee),
        (want.snp, e.tcb.snp),
        (want.microcode, e.tcb.microcode),
        (want.fmc, e.tcb.fmc),
    ];
    let older = pairs
        .iter()
        .any(|p| matches!(p, (Some(w), Some(i)) if w < i));
    older.then(|| {
        format!(
            "the installed VCEK is for a newer TCB ({}) than the one asked for ({want}); refusing to go back (--force to override)",
            e.tcb
        )
    })
}

/// The blob that withdraws the VCEK of `installed`: its ARK and ASK alone
/// if it has both, else the empty table (no certificates). Served while
/// the VCEK for the new TCB cannot be had: a guest then gets no VCEK (and
/// fetches it from AMD itself) rather than one for the old TCB.
pub fn withdrawn(installed: &[u8]) -> Vec<u8> {
    let empty = vec![0u8; table::ENTRY_SIZE];
    let Ok(t) = table::parse(installed) else {
        return empty;
    };
    match (t.find(CertKind::Ark), t.find(CertKind::Ask)) {
        (Some(ark), Some(ask)) => Builder::new()
            .add_kind(CertKind::Ark, ark.to_vec())
            .add_kind(CertKind::Ask, ask.to_vec())
            .build()
            .unwrap_or(empty),
        _ => empty,
    }
}

/// Refuses to replace a blob that serves a VLEK.
pub fn refuse_vlek_blob(installed: &[u8]) -> Result<(), RefreshError> {
    match table::parse(installed) {
        Ok(tb) if tb.entries().iter().any(|e| e.kind() == CertKind::Vlek) => {
            Err(RefreshError::Vlek(format!(
                "the installed blob serves a VLEK; refresh would replace it with a VCEK. {VLEK_HELP}"
            )))
        }
        _ => Ok(()),
    }
}

/// A verified blob for the target.
pub struct Fetched {
    pub blob: Vec<u8>,
    /// Whether the VCEK came from the cache.
    pub vcek_from: Source,
    pub chain_from: Source,
}

fn build(ark: &[u8], ask: &[u8], vcek: &[u8], crl: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut b = Builder::new()
        .add_kind(CertKind::Ark, ark.to_vec())
        .add_kind(CertKind::Ask, ask.to_vec())
        .add_kind(CertKind::Vcek, vcek.to_vec());
    if let Some(c) = crl {
        b = b.add_kind(CertKind::Crl, c.to_vec());
    }
    b.build()
        .map_err(|e| format!("cannot build the table: {e}"))
}

/// Gets the product's chain and the target's VCEK (cache first, then KDS),
/// (and, with `t.crl`, the CRL from KDS), builds the ARK, ASK, VCEK[, CRL]
/// table and verifies it for the target at `at`.
/// What came from KDS is cached once it verified; a cached entry that does
/// not verify is dropped and fetched again.
pub fn fetch_verified(kds: &mut Kds, t: &Target, at: Duration) -> Result<Fetched, RefreshError> {
    let crl = if t.crl {
        Some(kds.crl(t.product)?)
    } else {
        None
    };
    let mut use_cache = true;
    loop {
        let chain = kds.cert_chain(t.product, use_cache)?;
        let (vcek, vcek_from) = kds.vcek(t.product, &t.hwid, &t.tcb, use_cache)?;
        let problems = match build(&chain.ark, &chain.ask, &vcek, crl.as_deref()) {
            Ok(blob) => {
                let p = problems_for(&blob, t, at, false);
                if p.is_empty() {
                    if chain.source == Source::Kds {
                        kds.remember(CacheKey::Chain(t.product), &chain.pem);
                    }
                    if vcek_from == Source::Kds {
                        kds.remember(CacheKey::Vcek(t.product, &t.hwid, &t.tcb), &vcek);
                    }
                    return Ok(Fetched {
                        blob,
                        vcek_from,
                        chain_from: chain.source,
                    });
                }
                p
            }
            Err(e) => vec![e],
        };
        let cached = chain.source == Source::Cache || vcek_from == Source::Cache;
        if use_cache && cached {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!(
                    "snp-certs: warning: the certificates do not verify ({}) and some came from the cache; fetching all of them from KDS again\n",
                    problems.join("; ")
                )
                .as_bytes(),
            );
            kds.forget(CacheKey::Chain(t.product));
            kds.forget(CacheKey::Vcek(t.product, &t.hwid, &t.tcb));
            use_cache = false;
            continue;
        }
        return Err(RefreshError::Verify(problems));
    }
}

/// What [`install_locked`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The installed blob already is a verified chain for the target.
    UpToDate,
    Installed,
}

/// Reads what `lock` holds (nothing if the file does not exist yet).
pub fn read_held(lock: &mut Option<LockedFile>) -> Result<Option<Vec<u8>>, RefreshError> {
    match lock {
        Some(l) => Ok(Some(l.read_all()?)),
        None => Ok(None),
    }
}

/// Under the caller's exclusive lock (`lock` from [`store::lock_for_update`],
/// `None` if `path` does not exist): installs `blob` unless the installed
/// blob already is a verified chain for `t`, or serves a VLEK.
pub fn install_locked(
    path: &Path,
    lock: &mut Option<LockedFile>,
    blob: &[u8],
    t: &Target,
    at: Duration,
    perms: store::Perms,
) -> Result<Outcome, RefreshError> {
    if let Some(cur) = read_held(lock)? {
        refuse_vlek_blob(&cur)?;
        if problems_for(&cur, t, at, true).is_empty() {
            return Ok(Outcome::UpToDate);
        }
        if !t.allow_older {
            if let Some(why) = newer_installed(&cur, t, at) {
                return Err(RefreshError::Older(why));
            }
        }
    }
    let new = store::replace_locked_perms(path, lock.as_ref(), blob, perms)?;
    drop(new);
    Ok(Outcome::Installed)
}

/// What [`fetch_and_install`] did.
pub struct Done {
    pub outcome: Outcome,
    /// The target installed for (the last one `current` gave).
    pub target: Target,
    pub fetched: Fetched,
}

/// `refresh`: fetches (before the lock: VMMs keep serving while KDS is
/// slow) and verifies the VCEK for `target`, takes the exclusive lock on
/// `path` (waiting at most `wait`) and installs it with [`install_locked`].
/// Under the lock, `current` gives the target again when it can change (the
/// host's /dev/sev: a `hold` running a firmware update holds this lock, so
/// the TCB may have moved during the fetch; `None` for a fixed target): if
/// it changed, the lock is dropped and the new target fetched (at most 3
/// times). A first install that loses the race to create `path` locks the
/// file the other installer created and looks again.
pub fn fetch_and_install(
    path: &Path,
    wait: Option<Duration>,
    kds: &mut Kds,
    mut target: Target,
    at: Duration,
    perms: store::Perms,
    mut current: impl FnMut() -> Option<Result<Target, RefreshError>>,
) -> Result<Done, RefreshError> {
    let mut fetched = fetch_verified(kds, &target, at)?;
    let (mut retargets, mut races) = (0u32, 0u32);
    loop {
        let mut lock = store::lock_for_update(path, wait)?;
        if let Some(now) = current() {
            let now = now?;
            if now != target && retargets < 3 {
                drop(lock);
                retargets = retargets.saturating_add(1);
                target = now;
                fetched = fetch_verified(kds, &target, at)?;
                continue;
            }
        }
        match install_locked(path, &mut lock, &fetched.blob, &target, at, perms) {
            Err(RefreshError::Store(StoreError::Io { err, .. }))
                if lock.is_none()
                    && err.kind() == std::io::ErrorKind::AlreadyExists
                    && races < 3 =>
            {
                races = races.saturating_add(1);
            }
            r => {
                return r.map(|outcome| Done {
                    outcome,
                    target,
                    fetched,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcb(fmc: Option<u8>) -> TcbVersion {
        TcbVersion {
            bootloader: 1,
            tee: 2,
            snp: 3,
            microcode: 4,
            fmc,
        }
    }

    #[test]
    fn chip_ids_per_product() {
        let mut id = [0u8; 64];
        id[0] = 9;
        // Milan: 64 bytes exactly.
        assert_eq!(
            Target::new(Product::Milan, &id, tcb(None))
                .unwrap()
                .hwid()
                .len(),
            64
        );
        assert!(Target::new(Product::Milan, &id[..8], tcb(None)).is_err());
        // Turin: 8 bytes, or 64 that are zero after the 8th.
        let t = Target::new(Product::Turin, &id, tcb(Some(0))).unwrap();
        assert_eq!(t.hwid(), &id[..8]);
        assert_eq!(
            Target::new(Product::Turin, &id[..8], tcb(Some(0))).unwrap(),
            t
        );
        id[8] = 1;
        assert!(Target::new(Product::Turin, &id, tcb(Some(0))).is_err());
        assert!(Target::new(Product::Turin, &id[..7], tcb(Some(0))).is_err());
        // fmc only on Turin; an all-zero ID is masked.
        assert!(Target::new(Product::Genoa, &[1; 64], tcb(Some(0))).is_err());
        assert!(Target::new(Product::Turin, &[1; 8], tcb(None)).is_err());
        assert!(Target::new(Product::Genoa, &[0; 64], tcb(None)).is_err());
    }
}
