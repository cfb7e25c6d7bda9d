//! Certificate input: DER as is, or a single PEM block decoded to DER.

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

/// Returns the DER bytes of a PEM or DER certificate (or CRL) file.
pub fn to_der(input: &[u8]) -> Result<Vec<u8>, CertInputError> {
    let trimmed = trim_ascii_start(input);
    if trimmed.is_empty() {
        return Err(CertInputError::Empty);
    }
    let der = if trimmed.starts_with(b"-----BEGIN ") {
        pem_decode(trimmed)?
    } else {
        input.to_vec()
    };
    check_der_sequence(&der)?;
    Ok(der)
}

fn trim_ascii_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    b.get(n..).unwrap_or(&[])
}

fn pem_decode(text: &[u8]) -> Result<Vec<u8>, CertInputError> {
    let text = std::str::from_utf8(text).map_err(|_| CertInputError::BadBase64)?;
    let mut blocks = 0usize;
    let mut label: Option<&str> = None;
    let mut body = String::new();
    let mut out = None;
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
            blocks = blocks.saturating_add(1);
            if out.is_none() {
                out = Some(base64_decode(&body)?);
            }
        } else if label.is_some() {
            if line.contains(':') {
                continue; // RFC 1421 headers (Proc-Type etc.): skip
            }
            body.push_str(line);
        }
    }
    if label.is_some() {
        return Err(CertInputError::NoPemBlock);
    }
    match (blocks, out) {
        (1, Some(d)) => Ok(d),
        (0, _) | (_, None) => Err(CertInputError::NoPemBlock),
        (n, _) => Err(CertInputError::MultiplePemBlocks(n)),
    }
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
