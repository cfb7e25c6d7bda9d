//! Chain verification of a certificate blob: ARK -> ASK (or ASVK) -> VCEK (or VLEK).
//!
//! AMD's chain, as its Key Distribution Service (KDS) serves it and as the
//! VCEK specification (AMD 57230) describes it:
//!
//! * the ARK (AMD Root Key) is self-signed;
//! * the ASK (AMD SEV Key) signs VCEKs, the ASVK (AMD SEV VLEK Key) signs
//!   VLEKs; both are signed by the ARK and sit in the table's ASK entry (the
//!   GHCB specification has no separate ASVK GUID), so the intermediate is
//!   called ASVK when the leaf is a VLEK;
//! * the VCEK or VLEK holds an ECDSA P-384 key (the firmware signs attestation
//!   reports with it) and carries the TCB it was issued for in AMD extensions
//!   (`1.3.6.1.4.1.3704.1.3.x`) and, for a VCEK, the chip's hwID
//!   (`1.3.6.1.4.1.3704.1.4`);
//! * all three are signed with RSASSA-PSS, SHA-384, MGF1 with SHA-384, a
//!   48-byte salt and trailer field 1 (the parameters in AMD's certificates;
//!   the signer keys are RSA 4096).
//!
//! X.509 and DER are decoded with RustCrypto's `x509-cert`/`der`, signatures
//! checked with `rsa` (PSS, exact salt length) and the leaf key with `p384`:
//! no hand-written ASN.1. A blob without an ARK or without an ASK/ASVK (for
//! example a VCEK-only blob) does not verify: there is nothing to anchor the
//! leaf to.

use std::fmt;
use std::time::Duration;

use rsa::pkcs1::RsaPssParams;
use rsa::signature::Verifier;
use x509_cert::der::asn1::{Ia5StringRef, ObjectIdentifier};
use x509_cert::der::oid::db::rfc5912::{
    ID_CE_BASIC_CONSTRAINTS, ID_CE_KEY_USAGE, ID_EC_PUBLIC_KEY, ID_MGF_1, ID_RSASSA_PSS, ID_SHA_1,
    ID_SHA_384, SECP_384_R_1,
};
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::Certificate;

use crate::table::{self, CertKind};

/// Salt length of AMD's RSASSA-PSS signatures (the SHA-384 output size).
pub const PSS_SALT_LEN: u8 = 48;

/// AMD's arc for SEV-SNP certificate extensions.
const AMD_SNP: &str = "1.3.6.1.4.1.3704.1";

/// Bits of the RSA keys of AMD's ARK, ASK and ASVK.
pub const AMD_RSA_BITS: usize = 4096;

/// AMD's public certificates built in (see `src/amd/README.md` for where they
/// come from): per product, the ARK and the ASK, PEM.
const AMD_BUILTIN: [(&str, &[u8], &[u8]); 3] = [
    (
        "Milan",
        include_bytes!("amd/milan-ark.pem"),
        include_bytes!("amd/milan-ask.pem"),
    ),
    (
        "Genoa",
        include_bytes!("amd/genoa-ark.pem"),
        include_bytes!("amd/genoa-ask.pem"),
    ),
    (
        "Turin",
        include_bytes!("amd/turin-ark.pem"),
        include_bytes!("amd/turin-ask.pem"),
    ),
];

/// AMD's ASK for `product` (`Milan`, `Genoa`, `Turin`), DER, as built in.
pub fn amd_ask(product: &str) -> Option<Vec<u8>> {
    AMD_BUILTIN
        .iter()
        .find(|(p, _, _)| p.eq_ignore_ascii_case(product))
        .and_then(|(_, _, ask)| crate::pem::to_der(ask).ok())
}

/// AMD's ARK for `product`, DER, as built in.
pub fn amd_ark(product: &str) -> Option<Vec<u8>> {
    AMD_BUILTIN
        .iter()
        .find(|(p, _, _)| p.eq_ignore_ascii_case(product))
        .and_then(|(_, ark, _)| crate::pem::to_der(ark).ok())
}

/// A root a chain may end in: a certificate whose subject and public key an
/// ARK must carry (the ARK must also be self-signed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    name: String,
    /// For AMD's: the product whose VCEKs/VLEKs it signs (the leaf's product
    /// extension must name it).
    product: Option<String>,
    subject: Vec<u8>,
    spki: Vec<u8>,
    der: Vec<u8>,
}

impl TrustAnchor {
    /// An anchor from a DER certificate. `product`: the leaf's product
    /// extension must start with it (None: not checked).
    pub fn from_der(der: &[u8], name: &str, product: Option<&str>) -> Result<TrustAnchor, String> {
        let c = Certificate::from_der(der).map_err(|e| format!("not a DER certificate: {e}"))?;
        let subject = c
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| format!("subject: {e}"))?;
        let spki = c
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("public key: {e}"))?;
        Ok(TrustAnchor {
            name: name.to_string(),
            product: product.map(str::to_string),
            subject,
            spki,
            der: der.to_vec(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn product(&self) -> Option<&str> {
        self.product.as_deref()
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    fn matches(&self, c: &Certificate) -> bool {
        c.tbs_certificate.subject.to_der().ok().as_deref() == Some(self.subject.as_slice())
            && c.tbs_certificate
                .subject_public_key_info
                .to_der()
                .ok()
                .as_deref()
                == Some(self.spki.as_slice())
    }
}

/// The roots a chain may end in: by default AMD's ARKs for Milan, Genoa and
/// Turin (built in), plus any the caller adds (`--trust-anchor FILE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchors {
    list: Vec<TrustAnchor>,
}

impl Default for TrustAnchors {
    fn default() -> Self {
        TrustAnchors::amd()
    }
}

impl TrustAnchors {
    /// AMD's Milan, Genoa and Turin ARKs.
    pub fn amd() -> TrustAnchors {
        let list = AMD_BUILTIN
            .iter()
            .filter_map(|(p, ark, _)| {
                let der = crate::pem::to_der(ark).ok()?;
                TrustAnchor::from_der(&der, &format!("AMD {p} ARK (built in)"), Some(p)).ok()
            })
            .collect();
        TrustAnchors { list }
    }

    /// No anchor at all: nothing verifies.
    pub fn empty() -> TrustAnchors {
        TrustAnchors { list: Vec::new() }
    }

    pub fn push(&mut self, a: TrustAnchor) {
        self.list.push(a);
    }

    /// Adds the certificate in `raw` (PEM or DER, one certificate) read from
    /// `name` (a file name, for messages).
    pub fn add_cert(&mut self, raw: &[u8], name: &str) -> Result<(), String> {
        let der = crate::pem::to_der_labeled(raw, crate::pem::LABEL_CERTIFICATE)
            .map_err(|e| format!("{name}: {e}"))?;
        let a = TrustAnchor::from_der(&der, &format!("{name} (--trust-anchor)"), None)
            .map_err(|e| format!("{name}: {e}"))?;
        self.push(a);
        Ok(())
    }

    pub fn anchors(&self) -> &[TrustAnchor] {
        &self.list
    }

    fn find(&self, ark: &Certificate) -> Option<&TrustAnchor> {
        self.list.iter().find(|a| a.matches(ark))
    }
}

/// A certificate's place in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Ark,
    Ask,
    Asvk,
    Vcek,
    Vlek,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Ark => "ARK",
            Role::Ask => "ASK",
            Role::Asvk => "ASVK",
            Role::Vcek => "VCEK",
            Role::Vlek => "VLEK",
        }
    }
}

/// The TCB a VCEK/VLEK was issued for (AMD extensions `1.3.6.1.4.1.3704.1.3.x`:
/// .1 bootloader, .2 TEE, .3 SNP firmware, .8 microcode, .9 FMC on Turin).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tcb {
    pub bootloader: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub microcode: Option<u8>,
    pub fmc: Option<u8>,
}

/// What AMD's extensions say about the chip and firmware a leaf was issued for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endorsement {
    /// `1.3.6.1.4.1.3704.1.2`, e.g. `Milan-B0`, `Turin`.
    pub product: Option<String>,
    pub tcb: Tcb,
    /// `1.3.6.1.4.1.3704.1.4`: the chip ID (64 bytes on Milan/Genoa, 8 on
    /// Turin). AMD puts the raw bytes in `extnValue`, not a DER OCTET STRING.
    pub hwid: Option<Vec<u8>>,
    /// Extensions under AMD's arc that could not be decoded (OID, reason).
    pub undecoded: Vec<(String, String)>,
}

/// One check and its outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub what: String,
    pub result: Result<(), String>,
}

/// One certificate of the chain, as decoded, with the checks made on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertReport {
    pub role: Role,
    pub subject: String,
    pub issuer: String,
    /// Serial number in hex, as encoded (big-endian).
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// For a VCEK or VLEK.
    pub endorsement: Option<Endorsement>,
    pub checks: Vec<Check>,
}

/// The outcome of [`verify_table`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainReport {
    pub certs: Vec<CertReport>,
    /// Problems that belong to no single check (a missing or undecodable
    /// certificate, two leaves).
    pub problems: Vec<String>,
    /// The trust anchor the chain ends in (None: none of them).
    pub anchor: Option<String>,
}

impl ChainReport {
    /// True when every certificate is present, decodes, and passed every check.
    pub fn verified(&self) -> bool {
        self.problems.is_empty()
            && self
                .certs
                .iter()
                .all(|c| c.checks.iter().all(|k| k.result.is_ok()))
    }

    /// Every failure, one line each (`ROLE: what: why`).
    pub fn failures(&self) -> Vec<String> {
        let mut out = self.problems.clone();
        for c in &self.certs {
            for k in &c.checks {
                if let Err(e) = &k.result {
                    out.push(format!("{}: {}: {e}", c.role.name(), k.what));
                }
            }
        }
        out
    }
}

/// Verifies the chain in a certificate table at `at` (time since the Unix
/// epoch) against AMD's built-in ARKs. `Err` only if the blob is not a valid
/// table.
pub fn verify_table(blob: &[u8], at: Duration) -> Result<ChainReport, table::TableError> {
    verify_table_with(blob, at, &TrustAnchors::amd())
}

/// [`verify_table`] with the given trust anchors: the ARK must be one of
/// them (same subject and public key), and with an AMD anchor the leaf's
/// product must be that anchor's.
pub fn verify_table_with(
    blob: &[u8],
    at: Duration,
    anchors: &TrustAnchors,
) -> Result<ChainReport, table::TableError> {
    let t = table::parse(blob)?;
    let mut report = ChainReport::default();
    let mut get = |kind: CertKind| -> Option<&[u8]> {
        let mut found = t
            .entries()
            .iter()
            .filter(|e| e.kind() == kind)
            .filter_map(|e| t.data(e));
        let first = found.next();
        if found.next().is_some() {
            report
                .problems
                .push(format!("more than one {} entry", kind.name()));
        }
        first
    };
    let ark = get(CertKind::Ark);
    let ask = get(CertKind::Ask);
    let vcek = get(CertKind::Vcek);
    let vlek = get(CertKind::Vlek);
    let crl = get(CertKind::Crl);
    let (leaf, leaf_role, mid_role) = match (vcek, vlek) {
        (Some(v), None) => (Some(v), Role::Vcek, Role::Ask),
        (None, Some(v)) => (Some(v), Role::Vlek, Role::Asvk),
        (Some(v), Some(_)) => {
            report.problems.push(
                "both a VCEK and a VLEK: one ASK/ASVK entry cannot sign both; checked the VCEK only"
                    .into(),
            );
            (Some(v), Role::Vcek, Role::Ask)
        }
        (None, None) => {
            report.problems.push(
                "no VCEK or VLEK entry: nothing for a guest's report to be checked against".into(),
            );
            (None, Role::Vcek, Role::Ask)
        }
    };
    if ark.is_none() {
        report.problems.push(
            "no ARK entry: the chain has no root (a VCEK-only blob cannot be verified; build with --ark and --ask)"
                .into(),
        );
    }
    if ask.is_none() {
        report.problems.push(format!(
            "no ASK entry: nothing links the {} to the ARK",
            leaf_role.name()
        ));
    }
    let mut decode = |role: Role, der: Option<&[u8]>| -> Option<Certificate> {
        let der = der?;
        match Certificate::from_der(der) {
            Ok(c) => Some(c),
            Err(e) => {
                report
                    .problems
                    .push(format!("{}: not a DER X.509 certificate: {e}", role.name()));
                None
            }
        }
    };
    let ark = decode(Role::Ark, ark);
    let mid = decode(mid_role, ask);
    let leaf = decode(leaf_role, leaf);

    let mut anchor = None;
    if let Some(c) = &ark {
        let mut r = describe(Role::Ark, c, at);
        r.checks.push(ca_check(c));
        r.checks.push(rsa_bits_check(c));
        r.checks.push(critical_check(c));
        r.checks.push(Check {
            what: "self-signed (issuer = subject, RSASSA-PSS SHA-384 by its own key)".into(),
            result: signed_by(c, c),
        });
        anchor = anchors.find(c);
        r.checks.push(Check {
            what: "a trust anchor (AMD's ARK, or one given with --trust-anchor)".into(),
            result: match anchor {
                Some(a) => {
                    report.anchor = Some(a.name().to_string());
                    Ok(())
                }
                None => Err(format!(
                    "\"{}\" is not AMD's Milan, Genoa or Turin ARK nor a given trust anchor: anyone can make a self-signed root (--trust-anchor FILE trusts another root)",
                    c.tbs_certificate.subject
                )),
            },
        });
        report.certs.push(r);
    }
    if let Some(c) = &mid {
        let mut r = describe(mid_role, c, at);
        r.checks.push(ca_check(c));
        r.checks.push(rsa_bits_check(c));
        r.checks.push(critical_check(c));
        if let Some(a) = &ark {
            r.checks.push(Check {
                what: "signed by the ARK (RSASSA-PSS SHA-384)".into(),
                result: signed_by(c, a),
            });
        }
        if let Some(crl) = crl {
            r.checks.push(Check {
                what: "not revoked by the table's CRL (issued and signed by the ARK)".into(),
                result: match (&ark, get_der(c)) {
                    (Some(a), Some(mid_der)) => crl_check(crl, a, &mid_der, at),
                    _ => Err("no ARK to check the CRL with".into()),
                },
            });
        }
        report.certs.push(r);
    }
    if let Some(c) = &leaf {
        let mut r = describe(leaf_role, c, at);
        r.checks.push(Check {
            what: "ECDSA P-384 public key".into(),
            result: p384_key(c),
        });
        r.checks.push(Check {
            what: "not a CA".into(),
            result: match basic_constraints(c) {
                Ok(Some(true)) => Err("basicConstraints says cA".into()),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
        });
        r.checks.push(critical_check(c));
        if let Some(m) = &mid {
            r.checks.push(Check {
                what: format!("signed by the {} (RSASSA-PSS SHA-384)", mid_role.name()),
                result: signed_by(c, m),
            });
        }
        let e = endorsement(c);
        if let Some(want) = anchor.and_then(TrustAnchor::product) {
            r.checks.push(Check {
                what: format!("for a {want} chip (product extension, as the anchor)"),
                result: match &e.product {
                    Some(p)
                        if p.to_ascii_lowercase()
                            .starts_with(&want.to_ascii_lowercase()) =>
                    {
                        Ok(())
                    }
                    p => Err(format!(
                        "product is {}, but the chain ends in AMD's {want} ARK",
                        p.as_deref().unwrap_or("(none)")
                    )),
                },
            });
        }
        r.endorsement = Some(e);
        report.certs.push(r);
    }
    Ok(report)
}

fn get_der(c: &Certificate) -> Option<Vec<u8>> {
    c.to_der().ok()
}

/// The table's CRL: issued and signed by the ARK, in force at `at`, and not
/// revoking `cert` (an ASK/ASVK: the ARK's CRL covers what the ARK signs).
fn crl_check(crl: &[u8], ark: &Certificate, cert: &[u8], at: Duration) -> Result<(), String> {
    let ark_der = ark.to_der().map_err(|e| format!("ARK: {e}"))?;
    let (revoked, _) = check_crl(crl, &ark_der, at)?;
    match serial_of(cert) {
        Some(sn) if revoked.contains(&sn) => Err(format!("serial {} is revoked", hex(&sn))),
        Some(_) => Ok(()),
        None => Err("undecodable certificate".into()),
    }
}

/// ARK, ASK and ASVK hold AMD's RSA-4096 keys.
fn rsa_bits_check(c: &Certificate) -> Check {
    use rsa::traits::PublicKeyParts;
    Check {
        what: format!("an RSA-{AMD_RSA_BITS} key"),
        result: rsa::RsaPublicKey::try_from(
            c.tbs_certificate.subject_public_key_info.owned_to_ref(),
        )
        .map_err(|e| format!("not a usable RSA key: {e}"))
        .and_then(|k| {
            let bits = k.n().bits();
            if bits == AMD_RSA_BITS {
                Ok(())
            } else {
                Err(format!("RSA key of {bits} bits"))
            }
        }),
    }
}

/// RFC 5280 4.2: a certificate with a critical extension the verifier does
/// not process must be rejected. Processed here: basicConstraints and
/// keyUsage.
fn critical_check(c: &Certificate) -> Check {
    let unknown: Vec<String> = extensions(c)
        .filter(|e| e.critical)
        .filter(|e| e.extn_id != ID_CE_BASIC_CONSTRAINTS && e.extn_id != ID_CE_KEY_USAGE)
        .map(|e| e.extn_id.to_string())
        .collect();
    Check {
        what: "no unknown critical extension".into(),
        result: if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!("critical extension(s) {}", unknown.join(", ")))
        },
    }
}

/// Subject, serial, validity, and the validity check at `at`.
fn describe(role: Role, c: &Certificate, at: Duration) -> CertReport {
    let tbs = &c.tbs_certificate;
    let nb = tbs.validity.not_before;
    let na = tbs.validity.not_after;
    let validity = if at < nb.to_unix_duration() {
        Err(format!("not valid before {nb}"))
    } else if at > na.to_unix_duration() {
        Err(format!("expired at {na}"))
    } else {
        Ok(())
    };
    CertReport {
        role,
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        serial: hex(tbs.serial_number.as_bytes()),
        not_before: nb.to_string(),
        not_after: na.to_string(),
        endorsement: None,
        checks: vec![Check {
            what: "within its validity period".into(),
            result: validity,
        }],
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The `cA` flag of basicConstraints, if the extension is there.
fn basic_constraints(c: &Certificate) -> Result<Option<bool>, String> {
    let Some(ext) = extensions(c).find(|e| e.extn_id == ID_CE_BASIC_CONSTRAINTS) else {
        return Ok(None);
    };
    BasicConstraints::from_der(ext.extn_value.as_bytes())
        .map(|bc| Some(bc.ca))
        .map_err(|e| format!("undecodable basicConstraints: {e}"))
}

/// ARK and ASK/ASVK sign certificates: basicConstraints must say CA and
/// keyUsage must allow keyCertSign (RFC 5280 4.2.1.3, 4.2.1.9; AMD's carry
/// both, critical).
fn ca_check(c: &Certificate) -> Check {
    let ku = extensions(c)
        .find(|e| e.extn_id == ID_CE_KEY_USAGE)
        .map(|e| KeyUsage::from_der(e.extn_value.as_bytes()));
    Check {
        what: "a CA (basicConstraints cA, keyUsage keyCertSign)".into(),
        result: match (basic_constraints(c), ku) {
            (Err(e), _) => Err(e),
            (Ok(None), _) => Err("no basicConstraints extension".into()),
            (Ok(Some(false)), _) => Err("basicConstraints says not a CA".into()),
            (_, None) => Err("no keyUsage extension".into()),
            (_, Some(Err(e))) => Err(format!("undecodable keyUsage: {e}")),
            (_, Some(Ok(k))) if !k.0.contains(KeyUsages::KeyCertSign) => {
                Err("keyUsage does not allow keyCertSign".into())
            }
            _ => Ok(()),
        },
    }
}

fn extensions(c: &Certificate) -> impl Iterator<Item = &x509_cert::ext::Extension> {
    c.tbs_certificate.extensions.iter().flatten()
}

/// Checks that `signer`'s RSA key signed `cert` with AMD's RSASSA-PSS
/// parameters, and that the names chain.
fn signed_by(cert: &Certificate, signer: &Certificate) -> Result<(), String> {
    if cert.tbs_certificate.issuer != signer.tbs_certificate.subject {
        return Err(format!(
            "issuer \"{}\" is not the signer's subject \"{}\"",
            cert.tbs_certificate.issuer, signer.tbs_certificate.subject
        ));
    }
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err("signatureAlgorithm differs from the algorithm inside the signed part".into());
    }
    let msg = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| format!("cannot re-encode the signed part: {e}"))?;
    pss_signed(&msg, &cert.signature_algorithm, &cert.signature, signer)
}

/// Checks that `signer`'s RSA key made `sig` over `msg` with AMD's
/// RSASSA-PSS parameters (`alg`).
fn pss_signed(
    msg: &[u8],
    alg: &x509_cert::spki::AlgorithmIdentifierOwned,
    sig: &x509_cert::der::asn1::BitString,
    signer: &Certificate,
) -> Result<(), String> {
    check_pss_params(alg)?;
    let key = rsa::RsaPublicKey::try_from(
        signer
            .tbs_certificate
            .subject_public_key_info
            .owned_to_ref(),
    )
    .map_err(|e| format!("the signer's key is not a usable RSA key: {e}"))?;
    let sig_bytes = sig
        .as_bytes()
        .ok_or("signature BIT STRING has unused bits")?;
    let sig = rsa::pss::Signature::try_from(sig_bytes)
        .map_err(|e| format!("malformed RSA signature: {e}"))?;
    rsa::pss::VerifyingKey::<sha2::Sha384>::new_with_salt_len(key, usize::from(PSS_SALT_LEN))
        .verify(msg, &sig)
        .map_err(|_| "signature does not verify with the signer's key".to_string())
}

/// Checks a certificate revocation list as AMD's KDS serves it
/// (`/vcek/v1/{product}/crl`, DER): issued and signed by the ARK `ark_der`
/// (RSASSA-PSS with AMD's parameters), `thisUpdate` not after `at`. Returns
/// the serial numbers it revokes (big-endian bytes as encoded) and its
/// `nextUpdate`, if any, as time since the epoch.
pub fn check_crl(
    crl_der: &[u8],
    ark_der: &[u8],
    at: Duration,
) -> Result<(Vec<Vec<u8>>, Option<Duration>), String> {
    let crl = x509_cert::crl::CertificateList::from_der(crl_der)
        .map_err(|e| format!("not a DER certificate revocation list: {e}"))?;
    let ark = Certificate::from_der(ark_der).map_err(|e| format!("ARK: {e}"))?;
    let tbs = &crl.tbs_cert_list;
    if tbs.issuer != ark.tbs_certificate.subject {
        return Err(format!(
            "CRL issuer \"{}\" is not the ARK \"{}\"",
            tbs.issuer, ark.tbs_certificate.subject
        ));
    }
    if crl.signature_algorithm != tbs.signature {
        return Err("CRL signatureAlgorithm differs from the one inside the signed part".into());
    }
    let msg = tbs
        .to_der()
        .map_err(|e| format!("cannot re-encode the CRL's signed part: {e}"))?;
    pss_signed(&msg, &crl.signature_algorithm, &crl.signature, &ark)
        .map_err(|e| format!("CRL signed by the ARK: {e}"))?;
    if tbs.this_update.to_unix_duration() > at {
        return Err(format!("CRL not valid before {}", tbs.this_update));
    }
    let revoked = tbs
        .revoked_certificates
        .iter()
        .flatten()
        .map(|r| r.serial_number.as_bytes().to_vec())
        .collect();
    Ok((revoked, tbs.next_update.map(|t| t.to_unix_duration())))
}

/// The serial number of a DER certificate, as encoded.
pub fn serial_of(der: &[u8]) -> Option<Vec<u8>> {
    Certificate::from_der(der)
        .ok()
        .map(|c| c.tbs_certificate.serial_number.as_bytes().to_vec())
}

/// The signature algorithm must be id-RSASSA-PSS with SHA-384, MGF1-SHA-384,
/// salt 48, trailer field 1: the only parameters AMD uses.
fn check_pss_params(alg: &x509_cert::spki::AlgorithmIdentifierOwned) -> Result<(), String> {
    if alg.oid != ID_RSASSA_PSS {
        return Err(format!(
            "signature algorithm {} is not RSASSA-PSS ({ID_RSASSA_PSS})",
            alg.oid
        ));
    }
    let params = alg
        .parameters
        .as_ref()
        .ok_or("RSASSA-PSS without parameters (the defaults are SHA-1)")?;
    let der = params
        .to_der()
        .map_err(|e| format!("RSASSA-PSS parameters: {e}"))?;
    let p = RsaPssParams::from_der(&der).map_err(|e| format!("RSASSA-PSS parameters: {e}"))?;
    if p.hash.oid != ID_SHA_384 {
        return Err(format!("RSASSA-PSS hash {} is not SHA-384", p.hash.oid));
    }
    let mgf_hash = p
        .mask_gen
        .parameters
        .as_ref()
        .map(|h| h.oid)
        .unwrap_or(ID_SHA_1); // absent: the default, SHA-1
    if p.mask_gen.oid != ID_MGF_1 || mgf_hash != ID_SHA_384 {
        return Err(format!(
            "RSASSA-PSS mask generation {} with {mgf_hash} is not MGF1 with SHA-384",
            p.mask_gen.oid
        ));
    }
    if p.salt_len != PSS_SALT_LEN {
        return Err(format!(
            "RSASSA-PSS salt length {} is not {PSS_SALT_LEN}",
            p.salt_len
        ));
    }
    Ok(()) // trailer field: the decoder accepts only 1 (trailerFieldBC)
}

/// The leaf's key must be an EC key on P-384 (a valid point).
fn p384_key(c: &Certificate) -> Result<(), String> {
    let spki = &c.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
        return Err(format!(
            "public key algorithm {} is not id-ecPublicKey",
            spki.algorithm.oid
        ));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if curve != Some(SECP_384_R_1) {
        return Err("EC key is not on secp384r1 (P-384)".into());
    }
    let point = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key BIT STRING has unused bits")?;
    p384::PublicKey::from_sec1_bytes(point)
        .map(|_| ())
        .map_err(|_| "not a valid P-384 point".into())
}

/// The hwID from its extension's value: KDS puts the raw bytes in
/// `extnValue` (64 bytes, 8 on Turin); AMD's specification (57230) writes it
/// as a DER OCTET STRING, as snpguest also reads it. A value that is exactly
/// one DER OCTET STRING of 8 or 64 bytes is taken as that encoding; raw bytes
/// never are one (their first two bytes would have to announce 62 or 6
/// bytes).
fn hwid_value(value: &[u8]) -> Vec<u8> {
    match x509_cert::der::asn1::OctetStringRef::from_der(value) {
        Ok(o) if matches!(o.as_bytes().len(), 8 | 64) => o.as_bytes().to_vec(),
        _ => value.to_vec(),
    }
}

/// Decodes AMD's extensions of a VCEK/VLEK.
fn endorsement(c: &Certificate) -> Endorsement {
    let mut out = Endorsement::default();
    for ext in extensions(c) {
        let oid = ext.extn_id.to_string();
        let Some(sub) = oid.strip_prefix(AMD_SNP) else {
            continue;
        };
        let value = ext.extn_value.as_bytes();
        let spl = |slot: &mut Option<u8>, undecoded: &mut Vec<(String, String)>| match u8::from_der(
            value,
        ) {
            Ok(v) => *slot = Some(v),
            Err(e) => undecoded.push((oid.clone(), format!("not an INTEGER 0..255: {e}"))),
        };
        match sub {
            ".2" => match Ia5StringRef::from_der(value) {
                Ok(s) => out.product = Some(s.as_str().to_string()),
                Err(e) => out
                    .undecoded
                    .push((oid.clone(), format!("not an IA5String: {e}"))),
            },
            ".3.1" => spl(&mut out.tcb.bootloader, &mut out.undecoded),
            ".3.2" => spl(&mut out.tcb.tee, &mut out.undecoded),
            ".3.3" => spl(&mut out.tcb.snp, &mut out.undecoded),
            ".3.8" => spl(&mut out.tcb.microcode, &mut out.undecoded),
            ".3.9" => spl(&mut out.tcb.fmc, &mut out.undecoded),
            ".4" => out.hwid = Some(hwid_value(value)),
            _ => {}
        }
    }
    out
}

impl fmt::Display for Tcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |x: Option<u8>| x.map_or_else(|| "-".to_string(), |v| v.to_string());
        write!(
            f,
            "bootloader {}, tee {}, snp {}, microcode {}",
            v(self.bootloader),
            v(self.tee),
            v(self.snp),
            v(self.microcode)
        )?;
        if let Some(fmc) = self.fmc {
            write!(f, ", fmc {fmc}")?;
        }
        Ok(())
    }
}

/// The report as `snp-certs verify` prints it.
impl fmt::Display for ChainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.certs {
            writeln!(f, "{}", c.role.name())?;
            writeln!(f, "  subject:  {}", c.subject)?;
            writeln!(f, "  issuer:   {}", c.issuer)?;
            writeln!(f, "  serial:   {}", c.serial)?;
            writeln!(f, "  validity: {} .. {}", c.not_before, c.not_after)?;
            if let Some(e) = &c.endorsement {
                if let Some(p) = &e.product {
                    writeln!(f, "  product:  {p}")?;
                }
                writeln!(f, "  TCB:      {}", e.tcb)?;
                match &e.hwid {
                    Some(h) => writeln!(f, "  hwID:     {} ({} bytes)", hex(h), h.len())?,
                    None => writeln!(f, "  hwID:     (none)")?,
                }
                for (oid, why) in &e.undecoded {
                    writeln!(f, "  warning:  extension {oid}: {why}")?;
                }
            }
            for k in &c.checks {
                match &k.result {
                    Ok(()) => writeln!(f, "  ok:       {}", k.what)?,
                    Err(e) => writeln!(f, "  FAIL:     {}: {e}", k.what)?,
                }
            }
        }
        for p in &self.problems {
            writeln!(f, "FAIL: {p}")?;
        }
        match &self.anchor {
            Some(a) => writeln!(f, "anchor:     {a}")?,
            None => writeln!(f, "anchor:     none (the ARK is no trust anchor)")?,
        }
        Ok(())
    }
}

/// Size of an SEV-SNP attestation report (ABI 56860, `ATTESTATION_REPORT`).
pub const REPORT_SIZE: usize = 0x4A0;
/// The signed part of a report: bytes 0 to 0x29F.
const REPORT_SIGNED: usize = 0x2A0;

/// Checks an attestation report's signature with the VCEK or VLEK `leaf_der`
/// (SEV-SNP ABI 56860: SIGNATURE_ALGO at 0x34 must be 1, ECDSA P-384 with
/// SHA-384, over bytes 0..0x2A0; the signature's R and S at 0x2A0 and 0x2E8,
/// 72 bytes each, little-endian, zero above their 48 bytes), as snpguest
/// `verify attestation` does. Also checks that the report's CHIP_ID (0x1A0)
/// starts with the leaf's hwID, when it has one.
pub fn verify_report(report: &[u8], leaf_der: &[u8]) -> Result<(), String> {
    use p384::elliptic_curve::ops::Reduce;
    use p384::elliptic_curve::point::AffineCoordinates;
    use p384::elliptic_curve::sec1::ToEncodedPoint;
    use sha2::Digest;

    if report.len() != REPORT_SIZE {
        return Err(format!(
            "a report is {REPORT_SIZE} bytes, this is {}",
            report.len()
        ));
    }
    let field = |at: usize, len: usize| {
        report
            .get(at..at.saturating_add(len))
            .ok_or_else(|| "report too short".to_string())
    };
    let algo = field(0x34, 4)?;
    if algo != [1, 0, 0, 0] {
        return Err(format!(
            "SIGNATURE_ALGO {algo:02x?} is not 1 (ECDSA P-384 with SHA-384)"
        ));
    }
    let leaf = Certificate::from_der(leaf_der).map_err(|e| format!("VCEK: {e}"))?;
    p384_key(&leaf)?;
    let point = leaf
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .ok_or("VCEK key BIT STRING has unused bits")?;
    let key = p384::PublicKey::from_sec1_bytes(point).map_err(|_| "VCEK key not on P-384")?;
    // R and S: 72-byte little-endian fields; P-384 values fill 48 bytes.
    let scalar = |at: usize, name: &str| -> Result<p384::Scalar, String> {
        let le = field(at, 72)?;
        if le.iter().skip(48).any(|&b| b != 0) {
            return Err(format!("signature {name} has bits above 384"));
        }
        let mut be = p384::FieldBytes::default();
        for (d, s) in be.iter_mut().zip(le.iter().take(48).rev()) {
            *d = *s;
        }
        let v: Option<p384::Scalar> = p384::elliptic_curve::PrimeField::from_repr(be).into();
        match v {
            Some(v) if !bool::from(v.is_zero()) => Ok(v),
            _ => Err(format!(
                "signature {name} is 0 or not below the group order"
            )),
        }
    };
    let r = scalar(0x2A0, "R")?;
    let s = scalar(0x2E8, "S")?;
    let digest = sha2::Sha384::digest(field(0, REPORT_SIGNED)?);
    let z = <p384::Scalar as Reduce<p384::U384>>::reduce_bytes(&digest);
    let w: Option<p384::Scalar> = s.invert().into();
    let w = w.ok_or("signature S has no inverse")?;
    let q = key.to_projective();
    // Scalar and point arithmetic is modular (mod n, on the curve): it
    // cannot overflow or panic.
    #[allow(clippy::arithmetic_side_effects)]
    let point = (p384::ProjectivePoint::GENERATOR * (z * w) + q * (r * w)).to_affine();
    if point.to_encoded_point(false).is_identity() {
        return Err("signature does not verify with the VCEK".into());
    }
    let x = <p384::Scalar as Reduce<p384::U384>>::reduce_bytes(&point.x());
    if x != r {
        return Err("signature does not verify with the VCEK".into());
    }
    if let Some(hwid) = endorsement(&leaf).hwid {
        let chip = field(0x1A0, 64)?;
        if chip.get(..hwid.len()) != Some(hwid.as_slice()) {
            return Err(format!(
                "the report's CHIP_ID {} is not the VCEK's hwID {}",
                hex(chip),
                hex(&hwid)
            ));
        }
    }
    Ok(())
}
