//! Certificate input: DER as is, or PEM `CERTIFICATE` blocks decoded to DER.

use std::fmt;

/// Why a certificate file was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertInputError {
    Empty,
    /// PEM text with no complete BEGIN/END block.
    NoPemBlock,
    /// More than one PEM block (e.g. an ASK+ARK chain file): pass each alone.
    MultiplePemBlocks(usize),
    /// END label differs from BEGIN label.
    LabelMismatch,
    /// Invalid base64 in the PEM body.
    BadBase64,
    /// Not DER: does not start with a SEQUENCE whose length covers the input.
    NotDer,
    /// A PEM block with another label than the one expected (e.g. `EC PRIVATE
    /// KEY` where a `CERTIFICATE` is needed): (found, expected).
    WrongLabel(String, &'static str),
    /// DER that is a private key (a SEQUENCE starting with a version INTEGER
    /// 0 or 1: PKCS#1, SEC1, PKCS#8), not a certificate or CRL.
    PrivateKey,
}

impl fmt::Display for CertInputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertInputError::Empty => write!(f, "file is empty"),
            CertInputError::NoPemBlock => write!(f, "PEM text without a complete BEGIN/END block"),
            CertInputError::MultiplePemBlocks(n) => {
                write!(
                    f,
                    "{n} PEM blocks in one file; give one certificate per option"
                )
            }
            CertInputError::LabelMismatch => write!(f, "PEM END label does not match BEGIN"),
            CertInputError::BadBase64 => write!(f, "invalid base64 in PEM body"),
            CertInputError::WrongLabel(found, want) => {
                write!(f, "PEM block is \"{found}\", expected \"{want}\"")
            }
            CertInputError::PrivateKey => {
                write!(f, "DER is a private key, not a certificate; refusing it")
            }
            CertInputError::NotDer => {
                write!(
                    f,
                    "not DER: expected one ASN.1 SEQUENCE spanning the whole input"
                )
            }
        }
    }
}

impl std::error::Error for CertInputError {}

/// PEM label of a certificate.
pub const LABEL_CERTIFICATE: &str = "CERTIFICATE";
/// PEM label of a certificate revocation list.
pub const LABEL_CRL: &str = "X509 CRL";

/// Returns the DER bytes of a PEM or DER certificate file: a PEM block must be
/// labelled `CERTIFICATE`.
pub fn to_der(input: &[u8]) -> Result<Vec<u8>, CertInputError> {
    to_der_labeled(input, LABEL_CERTIFICATE)
}

/// Returns the DER bytes of a PEM or DER file whose PEM block must carry
/// `label` (e.g. [`LABEL_CERTIFICATE`], [`LABEL_CRL`]). Any other label, and
/// DER that is a private key, is refused.
pub fn to_der_labeled(input: &[u8], label: &'static str) -> Result<Vec<u8>, CertInputError> {
    let trimmed = trim_ascii_start(input);
    if trimmed.is_empty() {
        return Err(CertInputError::Empty);
    }
    let der = if trimmed.starts_with(b"-----BEGIN ") {
        let mut blocks = pem_blocks(trimmed)?;
        if blocks.len() > 1 {
            return Err(CertInputError::MultiplePemBlocks(blocks.len()));
        }
        let (found, der) = blocks.pop().ok_or(CertInputError::NoPemBlock)?;
        if found != label {
            return Err(CertInputError::WrongLabel(found, label));
        }
        der
    } else {
        input.to_vec()
    };
    check_cert_der(&der)?;
    Ok(der)
}

/// A certificate or CRL starts with a SEQUENCE (tbsCertificate/tbsCertList);
/// PKCS#1, SEC1 and PKCS#8 private keys start with a version INTEGER 0 or 1.
fn looks_like_private_key(der: &[u8]) -> bool {
    let hdr = match der.get(1) {
        Some(&l) if l < 0x80 => 2usize,
        Some(&l) => usize::from(l & 0x7f).saturating_add(2),
        None => return false,
    };
    matches!(
        der.get(hdr..hdr.saturating_add(3)),
        Some([0x02, 0x01, 0x00 | 0x01])
    )
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    b.get(n..).unwrap_or(&[])
}

/// Decodes every PEM block of `text`, in order, as (label, bytes). Text
/// outside the blocks is ignored (openssl writes `subject=` lines there).
fn pem_blocks(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, CertInputError> {
    let text = std::str::from_utf8(text).map_err(|_| CertInputError::BadBase64)?;
    let mut label: Option<&str> = None;
    let mut body = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("-----BEGIN ") {
            if label.is_some() {
                return Err(CertInputError::NoPemBlock);
            }
            label = Some(
                rest.strip_suffix("-----")
                    .ok_or(CertInputError::NoPemBlock)?,
            );
            body.clear();
        } else if let Some(rest) = line.strip_prefix("-----END ") {
            let l = label.take().ok_or(CertInputError::NoPemBlock)?;
            if rest.strip_suffix("-----") != Some(l) {
                return Err(CertInputError::LabelMismatch);
            }
            out.push((l.to_string(), base64_decode(&body)?));
        } else if label.is_some() {
            if line.contains(':') {
                continue; // RFC 1421 headers (Proc-Type etc.): skip
            }
            body.push_str(line);
        }
    }
    if label.is_some() || out.is_empty() {
        return Err(CertInputError::NoPemBlock);
    }
    Ok(out)
}

/// Checks one decoded block or DER input: one DER SEQUENCE, not a private key.
fn check_cert_der(der: &[u8]) -> Result<(), CertInputError> {
    check_der_sequence(der)?;
    if looks_like_private_key(der) {
        return Err(CertInputError::PrivateKey);
    }
    Ok(())
}

/// Returns the DER certificates of a chain file, in file order: PEM text
/// with one or more `CERTIFICATE` blocks (AMD KDS's `cert_chain`: ASK or
/// ASVK, then ARK), or one DER certificate. Any other label, and a private
/// key, is refused.
pub fn chain_to_der(input: &[u8]) -> Result<Vec<Vec<u8>>, CertInputError> {
    let trimmed = trim_ascii_start(input);
    if trimmed.is_empty() {
        return Err(CertInputError::Empty);
    }
    // DER starts with a SEQUENCE tag; PEM text may have lines before its
    // first block (openssl's `subject=`/`issuer=` lines).
    let is_pem = trimmed.first() != Some(&0x30) && trimmed.windows(11).any(|w| w == b"-----BEGIN ");
    if !is_pem {
        check_cert_der(input)?;
        return Ok(vec![input.to_vec()]);
    }
    let mut out = Vec::new();
    for (found, der) in pem_blocks(trimmed)? {
        if found != LABEL_CERTIFICATE {
            return Err(CertInputError::WrongLabel(found, LABEL_CERTIFICATE));
        }
        check_cert_der(&der)?;
        out.push(der);
    }
    Ok(out)
}

fn b64_val(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c.wrapping_sub(b'A'),
        b'a'..=b'z' => c.wrapping_sub(b'a').wrapping_add(26),
        b'0'..=b'9' => c.wrapping_sub(b'0').wrapping_add(52),
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Strict standard base64 (padding required to a multiple of 4).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, CertInputError> {
    let b = s.as_bytes();
    if b.len() % 4 != 0 || b.is_empty() {
        return Err(CertInputError::BadBase64);
    }
    let mut out = Vec::with_capacity(b.len());
    let n_chunks = b.len() / 4;
    for (i, ch) in b.chunks_exact(4).enumerate() {
        let last = i.checked_add(1) == Some(n_chunks);
        let pad = ch.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(CertInputError::BadBase64);
        }
        let data_chars = 4usize.saturating_sub(pad); // pad <= 2 here
        let mut acc: u32 = 0;
        for (j, &c) in ch.iter().enumerate() {
            let v = if j >= data_chars {
                0
            } else {
                b64_val(c).ok_or(CertInputError::BadBase64)?
            };
            acc = acc.wrapping_shl(6) | v; // 4 x 6 bits: never exceeds 24 bits
        }
        let bytes = acc.to_be_bytes(); // [0, b0, b1, b2]
        let keep = 3usize.saturating_sub(pad);
        out.extend_from_slice(
            bytes
                .get(1..keep.saturating_add(1))
                .ok_or(CertInputError::BadBase64)?,
        );
    }
    Ok(out)
}

/// Checks that `der` is exactly one DER SEQUENCE (tag 0x30) with a definite
/// length that covers the whole input.
fn check_der_sequence(der: &[u8]) -> Result<(), CertInputError> {
    if der.first() != Some(&0x30) {
        return Err(CertInputError::NotDer);
    }
    let l0 = *der.get(1).ok_or(CertInputError::NotDer)?;
    let (len, hdr) = if l0 < 0x80 {
        (u64::from(l0), 2u64)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 8 {
            return Err(CertInputError::NotDer);
        }
        let bytes = der
            .get(2..n.saturating_add(2))
            .ok_or(CertInputError::NotDer)?;
        // n <= 8 bytes: the value fits a u64 exactly.
        let len = bytes
            .iter()
            .fold(0u64, |a, &b| a.wrapping_shl(8) | u64::from(b));
        (len, u64::from(l0 & 0x7f).saturating_add(2))
    };
    if hdr.checked_add(len) != Some(der.len() as u64) {
        return Err(CertInputError::NotDer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert!(base64_decode("TQ=").is_err());
        assert!(base64_decode("T===").is_err());
        assert!(base64_decode("TQ==TWFu").is_err());
        assert!(base64_decode("TW!u").is_err());
        assert!(base64_decode("").is_err());
    }

    #[test]
    fn keys_and_other_labels_are_refused() {
        // An EC private key (SEC1), PEM and DER: 30 07 02 01 01 04 02 aa bb.
        let key_der = [0x30, 0x07, 0x02, 0x01, 0x01, 0x04, 0x02, 0xaa, 0xbb];
        let key_pem =
            "-----BEGIN EC PRIVATE KEY-----\nMAcCAQEEAqq7\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(
            to_der(key_pem.as_bytes()),
            Err(CertInputError::WrongLabel(
                "EC PRIVATE KEY".into(),
                LABEL_CERTIFICATE
            ))
        );
        assert_eq!(to_der(&key_der), Err(CertInputError::PrivateKey));
        let crl = "-----BEGIN X509 CRL-----\nMAMCAQU=\n-----END X509 CRL-----\n";
        assert!(matches!(
            to_der(crl.as_bytes()),
            Err(CertInputError::WrongLabel(..))
        ));
        let cert = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            to_der_labeled(cert.as_bytes(), LABEL_CRL),
            Err(CertInputError::WrongLabel(..))
        ));
        assert!(to_der(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_ok());
    }

    #[test]
    fn chain_files() {
        let der_a = [0x30, 0x03, 0x02, 0x01, 0x05];
        let der_b = [0x30, 0x03, 0x02, 0x01, 0x07];
        let a = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
        let b = "-----BEGIN CERTIFICATE-----\nMAMCAQc=\n-----END CERTIFICATE-----\n";
        let chain = format!("subject=ASK\n{a}\nsubject=ARK\n{b}");
        assert_eq!(
            chain_to_der(chain.as_bytes()).unwrap(),
            vec![der_a.to_vec(), der_b.to_vec()]
        );
        assert_eq!(chain_to_der(&der_a).unwrap(), vec![der_a.to_vec()]);
        let key = "-----BEGIN PRIVATE KEY-----\nMAMCAQU=\n-----END PRIVATE KEY-----\n";
        assert!(matches!(
            chain_to_der(format!("{a}{key}").as_bytes()),
            Err(CertInputError::WrongLabel(..))
        ));
        let key_block = "-----BEGIN CERTIFICATE-----\nMAcCAQEEAqq7\n-----END CERTIFICATE-----\n";
        assert_eq!(
            chain_to_der(format!("{a}{key_block}").as_bytes()),
            Err(CertInputError::PrivateKey)
        );
        assert_eq!(
            chain_to_der(format!("{a}-----BEGIN CERTIFICATE-----\nMAMC").as_bytes()),
            Err(CertInputError::NoPemBlock)
        );
        assert_eq!(chain_to_der(b"  \n"), Err(CertInputError::Empty));
        assert_eq!(chain_to_der(b"junk"), Err(CertInputError::NotDer));
    }

    #[test]
    fn pem_and_der() {
        let der = [0x30, 0x03, 0x02, 0x01, 0x05];
        assert_eq!(to_der(&der).unwrap(), der);
        let pem = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END CERTIFICATE-----\n";
        assert_eq!(to_der(pem.as_bytes()).unwrap(), der);
        let two = format!("{pem}{pem}");
        assert_eq!(
            to_der(two.as_bytes()),
            Err(CertInputError::MultiplePemBlocks(2))
        );
        let crl = "-----BEGIN X509 CRL-----\nMAMCAQU=\n-----END X509 CRL-----\n";
        assert_eq!(to_der_labeled(crl.as_bytes(), LABEL_CRL).unwrap(), der);
        let bad = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n-----END X509 CRL-----\n";
        assert_eq!(to_der(bad.as_bytes()), Err(CertInputError::LabelMismatch));
        let open = "-----BEGIN CERTIFICATE-----\nMAMCAQU=\n";
        assert_eq!(to_der(open.as_bytes()), Err(CertInputError::NoPemBlock));
        assert_eq!(to_der(b""), Err(CertInputError::Empty));
        assert_eq!(to_der(b"hello"), Err(CertInputError::NotDer));
        assert_eq!(to_der(&[0x30, 0x05, 0x01]), Err(CertInputError::NotDer));
        // long-form length
        let mut long = vec![0x30, 0x81, 0x80];
        long.extend_from_slice(&[0u8; 0x80]);
        assert!(to_der(&long).is_ok());
        assert_eq!(
            to_der(&[0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            Err(CertInputError::NotDer)
        );
    }
}
