//! What a VCEK is issued for: the product (Milan, Genoa, Turin), the chip ID
//! and the TCB version, and how to read them from an SEV-SNP attestation
//! report.
//!
//! Layout of the report (AMD SEV-SNP firmware ABI specification 56860,
//! `ATTESTATION_REPORT`; the same offsets as virtee/sev's `AttestationReport`),
//! 0x4A0 bytes, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0x000 | 4 | VERSION (2, 3, 4, 5 known) |
//! | 0x048 | 4 | bits 4:2 SIGNING_KEY (0 VCEK, 1 VLEK, 7 none) |
//! | 0x180 | 8 | REPORTED_TCB (TCB_VERSION) |
//! | 0x188 | 1 | CPUID_FAM_ID (version 3 and later) |
//! | 0x189 | 1 | CPUID_MOD_ID (version 3 and later) |
//! | 0x1A0 | 64 | CHIP_ID (zero when the host set MASK_CHIP_ID) |
//!
//! TCB_VERSION bytes: Milan and Genoa `[bootloader, tee, 0, 0, 0, 0, snp,
//! microcode]`; Turin `[fmc, bootloader, tee, snp, 0, 0, 0, microcode]`.

use std::fmt;

/// Size of an attestation report (`ATTESTATION_REPORT`, 1184 bytes).
pub const REPORT_SIZE: usize = 0x4A0;
const OFF_SIGNING: usize = 0x48;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID_FAM: usize = 0x188;
const OFF_CPUID_MOD: usize = 0x189;
const OFF_CHIP_ID: usize = 0x1A0;
/// Size of CHIP_ID in the report and of the ID `SEV_GET_ID2` returns.
pub const CHIP_ID_SIZE: usize = 64;

/// An SEV-SNP product line, as AMD's Key Distribution Service names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    /// The name in KDS URLs (`/vcek/v1/{name}/...`).
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Case-insensitive `milan`, `genoa`, `turin`.
    pub fn parse(s: &str) -> Option<Product> {
        [Product::Milan, Product::Genoa, Product::Turin]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// The product of a CPU family and model (combined extended + base
    /// values, as CPUID leaf 1 and the report's CPUID_FAM_ID/CPUID_MOD_ID give
    /// them): family 19h models 00h-0Fh Milan, 10h-1Fh and A0h-AFh Genoa
    /// (Genoa-X, Bergamo, Siena use Genoa's keys), family 1Ah models 00h-11h
    /// Turin; the table virtee/sev uses.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    /// Bytes of the chip ID that identify the chip to KDS (the `hwid` in the
    /// URL and the VCEK's hwID extension): all 64 before Turin, the first 8 on
    /// Turin (the rest are zero).
    pub fn hwid_len(self) -> usize {
        match self {
            Product::Turin => 8,
            Product::Milan | Product::Genoa => CHIP_ID_SIZE,
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A TCB version: the security patch levels (SPLs) a VCEK is issued for.
/// `fmc` exists on Turin only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcbVersion {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    pub fmc: Option<u8>,
}

impl TcbVersion {
    /// Decodes a TCB_VERSION (8 bytes, as in the report) for `product`.
    pub fn from_bytes(product: Product, b: [u8; 8]) -> TcbVersion {
        let [b0, b1, b2, b3, _, _, b6, b7] = b;
        match product {
            Product::Turin => TcbVersion {
                fmc: Some(b0),
                bootloader: b1,
                tee: b2,
                snp: b3,
                microcode: b7,
            },
            Product::Milan | Product::Genoa => TcbVersion {
                fmc: None,
                bootloader: b0,
                tee: b1,
                snp: b6,
                microcode: b7,
            },
        }
    }

    /// Parses `bl=N,tee=N,snp=N,ucode=N[,fmc=N]` (any order, each once).
    pub fn parse(s: &str) -> Result<TcbVersion, String> {
        let (mut bl, mut tee, mut snp, mut ucode, mut fmc) = (None, None, None, None, None);
        for part in s.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("{part:?} is not NAME=VALUE"));
            };
            let v: u8 = v
                .trim()
                .parse()
                .map_err(|_| format!("{k}: {v:?} is not a number 0..255"))?;
            let slot = match k.trim() {
                "bl" | "bootloader" => &mut bl,
                "tee" => &mut tee,
                "snp" => &mut snp,
                "ucode" | "microcode" => &mut ucode,
                "fmc" => &mut fmc,
                other => return Err(format!("unknown SPL {other:?} (bl, tee, snp, ucode, fmc)")),
            };
            if slot.replace(v).is_some() {
                return Err(format!("{k} given twice"));
            }
        }
        match (bl, tee, snp, ucode) {
            (Some(bootloader), Some(tee), Some(snp), Some(microcode)) => Ok(TcbVersion {
                bootloader,
                tee,
                snp,
                microcode,
                fmc,
            }),
            _ => Err("needs bl=, tee=, snp= and ucode= (and fmc= on Turin)".into()),
        }
    }

    /// Checks that the fields fit the product: fmc on Turin, none before.
    pub fn check_for(&self, product: Product) -> Result<(), String> {
        match (product, self.fmc) {
            (Product::Turin, None) => Err("a Turin TCB needs fmc=".into()),
            (Product::Milan | Product::Genoa, Some(_)) => {
                Err(format!("{product} has no FMC SPL; fmc= is for Turin"))
            }
            _ => Ok(()),
        }
    }

    /// As the VCEK's extensions would carry it (for comparison with
    /// [`crate::verify::Tcb`]).
    pub fn to_extensions(self) -> crate::verify::Tcb {
        crate::verify::Tcb {
            bootloader: Some(self.bootloader),
            tee: Some(self.tee),
            snp: Some(self.snp),
            microcode: Some(self.microcode),
            fmc: self.fmc,
        }
    }
}

impl fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc},")?;
        }
        write!(
            f,
            "bl={},tee={},snp={},ucode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// Who signed the report (SIGNING_KEY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningKey {
    Vcek,
    Vlek,
    None,
    Reserved(u8),
}

/// The fields of an attestation report that select a VCEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportInfo {
    pub version: u32,
    /// From CPUID_FAM_ID/CPUID_MOD_ID (report version 3 and later), if known.
    pub cpuid_product: Option<Product>,
    /// (family, model) as the report gives them (version 3 and later).
    pub cpuid: Option<(u8, u8)>,
    pub signing_key: SigningKey,
    pub reported_tcb: [u8; 8],
    pub chip_id: [u8; CHIP_ID_SIZE],
}

/// Why a report file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportError {
    Size(usize),
    Version(u32),
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Size(n) => write!(
                f,
                "{n} bytes: an SEV-SNP attestation report is {REPORT_SIZE} bytes (the report alone, as snpguest writes it)"
            ),
            ReportError::Version(v) => write!(
                f,
                "report version {v}: only versions 2 to 5 are known"
            ),
        }
    }
}

impl std::error::Error for ReportError {}

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = at.checked_add(N).and_then(|end| b.get(at..end)) {
        out.copy_from_slice(s);
    }
    out
}

/// Reads the fields that select a VCEK from a report (`REPORT_SIZE` bytes).
/// The signature is not checked: the report only says which VCEK to fetch,
/// and the VCEK is checked against AMD's chain.
pub fn parse_report(b: &[u8]) -> Result<ReportInfo, ReportError> {
    if b.len() != REPORT_SIZE {
        return Err(ReportError::Size(b.len()));
    }
    let version = u32::from_le_bytes(array(b, 0));
    if !(2..=5).contains(&version) {
        return Err(ReportError::Version(version));
    }
    let flags = u32::from_le_bytes(array(b, OFF_SIGNING));
    let signing_key = match (flags >> 2) & 7 {
        0 => SigningKey::Vcek,
        1 => SigningKey::Vlek,
        7 => SigningKey::None,
        // Three bits: the value fits a u8.
        n => SigningKey::Reserved(u8::try_from(n).unwrap_or(u8::MAX)),
    };
    let cpuid = if version >= 3 {
        let [fam] = array(b, OFF_CPUID_FAM);
        let [model] = array(b, OFF_CPUID_MOD);
        Some((fam, model))
    } else {
        None
    };
    Ok(ReportInfo {
        version,
        cpuid_product: cpuid.and_then(|(f, m)| Product::from_cpuid(f, m)),
        cpuid,
        signing_key,
        reported_tcb: array(b, OFF_REPORTED_TCB),
        chip_id: array(b, OFF_CHIP_ID),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcb_layouts_follow_the_abi() {
        let b = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            TcbVersion::from_bytes(Product::Milan, b),
            TcbVersion {
                bootloader: 1,
                tee: 2,
                snp: 7,
                microcode: 8,
                fmc: None
            }
        );
        assert_eq!(
            TcbVersion::from_bytes(Product::Turin, b),
            TcbVersion {
                fmc: Some(1),
                bootloader: 2,
                tee: 3,
                snp: 4,
                microcode: 8
            }
        );
    }

    #[test]
    fn tcb_text() {
        let t = TcbVersion::parse("bl=3,tee=0,snp=8,ucode=115").unwrap();
        assert_eq!(
            (t.bootloader, t.tee, t.snp, t.microcode, t.fmc),
            (3, 0, 8, 115, None)
        );
        assert!(t.check_for(Product::Milan).is_ok());
        assert!(t.check_for(Product::Turin).is_err());
        let t = TcbVersion::parse("fmc=1,snp=4,tee=3,bl=2,ucode=9").unwrap();
        assert_eq!(t.fmc, Some(1));
        assert!(t.check_for(Product::Genoa).is_err());
        for bad in [
            "",
            "bl=1",
            "bl=1,tee=2,snp=3",
            "bl=1,tee=2,snp=3,ucode=256",
            "bl=1,tee=2,snp=3,ucode=4,bl=1",
            "bl=1,tee=2,snp=3,ucode=4,x=1",
            "bl",
        ] {
            assert!(TcbVersion::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn products_from_cpuid() {
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x19, 0x21), None); // a client Zen 3
        assert_eq!(Product::from_cpuid(0x17, 0x31), None); // Rome: no SNP
        assert_eq!(Product::parse("GENOA"), Some(Product::Genoa));
        assert_eq!(Product::parse("rome"), None);
    }
}
