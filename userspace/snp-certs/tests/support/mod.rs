//! Helpers shared by the integration tests: running the CLI, temporary
//! directories, placeholder certificates and blobs, PEM text, and the
//! `openssl` command line used to make test chains the way AMD makes its own.
//! (`tests/common` is the simulated KVM; this module is everything else.)

// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use snp_certs::table::{Builder, CertKind};

/// The `snp-certs` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_snp-certs"))
}

/// Runs the CLI with `args` and waits for it.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// A path as a CLI argument (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An exit status with both output streams, for assertion messages.
pub fn out(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A fresh, empty temporary directory for `tag`. The name carries the test
/// binary's name and process id, so test binaries running in parallel (and
/// tests of one binary using distinct tags) never share one.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "snp-certs-{}-{tag}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Minimal DER SEQUENCE of n content bytes (the CLI checks DER framing only,
/// not X.509 contents).
pub fn der(fill: u8, n: usize) -> Vec<u8> {
    assert!(n < 0x10000);
    let mut v = vec![0x30, 0x82, (n >> 8) as u8, n as u8];
    v.extend(std::iter::repeat(fill).take(n));
    v
}

/// A certificate blob holding one VCEK entry of n bytes of `fill`.
pub fn blob(fill: u8, n: usize) -> Vec<u8> {
    Builder::new()
        .add_kind(CertKind::Vcek, vec![fill; n])
        .build()
        .unwrap()
}

/// An ARK+ASK+VCEK table of exactly `size` bytes (the exit-handler tests
/// need blobs of chosen sizes around page boundaries).
pub fn chain_blob(size: usize) -> Vec<u8> {
    let data = size - 4 * 24;
    let a = data / 3;
    let b = Builder::new()
        .allow_oversize(true)
        .add_kind(CertKind::Ark, vec![0xa1; a])
        .add_kind(CertKind::Ask, vec![0xa2; a])
        .add_kind(CertKind::Vcek, vec![0xa3; data - 2 * a])
        .build()
        .unwrap();
    assert_eq!(b.len(), size);
    b
}

/// Base64 (RFC 4648, padded) in lines of 64 characters, as in PEM (written
/// here so the tests do not depend on the decoder under test).
pub fn b64(d: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b = String::new();
    for c in d.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                b.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b.push('=');
            }
        }
    }
    b.as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8(l.to_vec()).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A PEM block of `d` with `label` (e.g. `CERTIFICATE`).
pub fn pem_block(label: &str, d: &[u8]) -> String {
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        b64(d)
    )
}

/// `d` as a PEM CERTIFICATE.
pub fn pem(d: &[u8]) -> String {
    pem_block("CERTIFICATE", d)
}

// ------------------------------------------------------- openssl test chains

/// Runs the `openssl` command line in `dir`; fails the test if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command line (Debian package openssl)");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// How AMD signs its ARK, ASK and VCEKs: RSASSA-PSS, SHA-384, MGF1-SHA-384,
/// salt 48 (`openssl req`/`x509` digest and `-sigopt` arguments).
pub const AMD_SIG: [&str; 7] = [
    "-sha384",
    "-sigopt",
    "rsa_padding_mode:pss",
    "-sigopt",
    "rsa_pss_saltlen:48",
    "-sigopt",
    "rsa_mgf1_md:sha384",
];

/// A 4096-bit RSA key `dir/name.key` (AMD's ARK and ASK keys are RSA-4096,
/// and `verify` requires it).
///
/// Generating one takes a second or more. With `SNP_CERTS_TEST_KEY_CACHE`
/// set to a directory (only `scripts/mutants.sh` sets it: hundreds of runs of
/// the same tests), a key made once is reused by later runs, under the test
/// binary's name, `dir`'s tag (its name without the process id) and `name`,
/// so distinct keys stay distinct within a run. Unset, every run makes fresh
/// keys.
pub fn rsa_key(dir: &Path, name: &str) {
    let cached = std::env::var_os("SNP_CERTS_TEST_KEY_CACHE").map(|c| {
        let tag = dir.file_name().unwrap().to_str().unwrap();
        let tag = tag
            .strip_suffix(&format!("-{}", std::process::id()))
            .unwrap_or(tag);
        PathBuf::from(c).join(format!("{tag}-{name}.rsa4096.key"))
    });
    if let Some(c) = &cached {
        if std::fs::copy(c, dir.join(format!("{name}.key"))).is_ok() {
            return;
        }
    }
    rsa_key_fresh(dir, name);
    if let Some(c) = &cached {
        // Written under a unique name, then renamed: a concurrent run sees a
        // whole key or none.
        let tmp = c.with_extension(format!("tmp.{}", std::process::id()));
        std::fs::create_dir_all(c.parent().unwrap()).unwrap();
        std::fs::copy(dir.join(format!("{name}.key")), &tmp).unwrap();
        std::fs::rename(&tmp, c).unwrap();
    }
}

fn rsa_key_fresh(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:4096",
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// An EC key `dir/name.key` on `curve` (e.g. `P-384`).
pub fn ec_key(dir: &Path, name: &str, curve: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-out",
            &format!("{name}.key"),
        ],
    );
}

/// Self-signed CA certificate `dir/name.pem` for key `name.key`, subject
/// `cn`, serial `serial`, signed with `sig` (e.g. [`AMD_SIG`]).
pub fn root(dir: &Path, name: &str, cn: &str, serial: &str, sig: &[&str]) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let mut a = vec![
        "req",
        "-x509",
        "-new",
        "-key",
        &key,
        "-subj",
        cn,
        "-days",
        "3650",
        "-set_serial",
        serial,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &pem,
    ];
    a.extend_from_slice(sig);
    openssl(dir, &a);
}

/// Certificate `dir/name.pem` for key `name.key`, subject `cn`, serial
/// `serial`, signed by `signer` (`signer.pem`, `signer.key`) with `sig`, with
/// the extensions of section `section` of the config file `extfile`.
pub fn issue(
    dir: &Path,
    name: &str,
    cn: &str,
    signer: &str,
    serial: &str,
    (extfile, section): (&str, &str),
    sig: &[&str],
) {
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &["req", "-new", "-key", &key, "-subj", cn, "-out", &csr],
    );
    let (ca, cakey) = (format!("{signer}.pem"), format!("{signer}.key"));
    let mut a = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &cakey,
        "-set_serial",
        serial,
        "-days",
        "3650",
        "-extfile",
        extfile,
        "-extensions",
        section,
        "-out",
        &pem,
    ];
    a.extend_from_slice(sig);
    openssl(dir, &a);
}

/// An `openssl ca` database and config (`crl{name}.cnf`, with
/// `index{name}.txt` and `crlnumber{name}`) in `dir` for CRLs that `ark`
/// (`ark.pem`, `ark.key`) signs with SHA-384, valid for 30 days: `openssl ca
/// -config crl{name}.cnf -gencrl` then issues them. `name` tells apart
/// databases that revoke different certificates in one directory.
pub fn crl_authority(dir: &Path, name: &str) {
    std::fs::write(dir.join(format!("index{name}.txt")), "").unwrap();
    std::fs::write(dir.join(format!("crlnumber{name}")), "01\n").unwrap();
    std::fs::write(
        dir.join(format!("crl{name}.cnf")),
        format!(
            "[ca]\ndefault_ca = amd\n[amd]\ndatabase = index{name}.txt\ncrlnumber = crlnumber{name}\n\
             default_md = sha384\ndefault_crl_days = 30\ncertificate = ark.pem\nprivate_key = ark.key\n"
        ),
    )
    .unwrap();
}

/// Subjects of the test ARK and ASK (AMD's are `CN=ARK-Milan`, `CN=SEV-Milan`).
pub const ARK_CN: &str = "/CN=ARK-Test/O=snp-certs tests";
pub const ASK_CN: &str = "/CN=SEV-Test/O=snp-certs tests";
