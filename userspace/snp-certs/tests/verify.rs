//! Chain verification (`snp-certs verify`, `snp_certs::verify`), on AMD's real
//! Milan/Genoa/Turin certificates (tests/data/amd) and on chains made here with
//! the `openssl` command line the way AMD makes its own (RSASSA-PSS, SHA-384,
//! MGF1-SHA-384, salt 48; a P-384 leaf with AMD's extensions), plus chains
//! that break one rule each.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use snp_certs::table::{Builder, CertKind};
use snp_certs::verify::{verify_table, verify_table_with, ChainReport, Role, Tcb, TrustAnchors};
use support::{run, s, tmpdir, AMD_SIG, ARK_CN, ASK_CN};

/// AMD's anchors plus this file's test ARK (made with openssl here, so not
/// AMD's: without it the chains made here must not verify).
fn anchors() -> TrustAnchors {
    let mut a = TrustAnchors::amd();
    a.add_cert(&std::fs::read(ca().path("ark")).unwrap(), "test ARK")
        .unwrap();
    a
}

/// `verify_table` trusting the test ARK too.
fn vt(blob: &[u8], at: Duration) -> ChainReport {
    verify_table_with(blob, at, &anchors()).unwrap()
}

/// `snp-certs ARGS` with `--trust-anchor` (the test ARK) after the subcommand.
fn trun(args: &[&str]) -> std::process::Output {
    let ark = ca().path("ark");
    let mut v: Vec<&str> = args.to_vec();
    if !v.is_empty() {
        v.insert(1, "--trust-anchor");
        v.insert(2, s(&ark));
    }
    run(&v)
}

fn amd(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/amd")
        .join(name);
    let raw = std::fs::read(&p).unwrap();
    snp_certs::pem::to_der(&raw).unwrap()
}

fn table(certs: &[(CertKind, Vec<u8>)]) -> Vec<u8> {
    let mut b = Builder::new();
    for (k, d) in certs {
        b = b.add_kind(*k, d.clone());
    }
    b.build().unwrap()
}

/// Seconds since the epoch of a UTC date (test-side, via the `date` tool, so
/// not the parser under test).
fn epoch(utc: &str) -> Duration {
    let o = Command::new("date")
        .args(["-u", "-d", utc, "+%s"])
        .output()
        .unwrap();
    assert!(o.status.success(), "date -d {utc}");
    Duration::from_secs(String::from_utf8(o.stdout).unwrap().trim().parse().unwrap())
}

fn failures(r: &ChainReport) -> String {
    r.failures().join("\n")
}

// ---------------------------------------------------------------- AMD's own

#[test]
fn amd_milan_chain_verifies_with_its_tcb_and_hwid() {
    let blob = table(&[
        (CertKind::Ark, amd("milan-ark.pem")),
        (CertKind::Ask, amd("milan-ask.pem")),
        (CertKind::Vcek, amd("vcek-milan.der")),
    ]);
    let r = verify_table(&blob, epoch("2026-01-01T00:00:00Z")).unwrap();
    assert!(r.verified(), "{}", failures(&r));
    let roles: Vec<Role> = r.certs.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Role::Ark, Role::Ask, Role::Vcek]);
    // Values as `openssl x509 -text` / `openssl asn1parse` print them.
    assert_eq!(r.certs[0].serial, "010000");
    assert!(r.certs[0].subject.contains("CN=ARK-Milan"));
    assert_eq!(r.certs[0].not_before, "2020-10-22T17:23:05Z");
    assert_eq!(r.certs[0].not_after, "2045-10-22T17:23:05Z");
    assert!(r.certs[1].subject.contains("CN=SEV-Milan"));
    let v = &r.certs[2];
    assert!(v.subject.contains("CN=SEV-VCEK"));
    assert_eq!(v.serial, "00");
    let e = v.endorsement.as_ref().unwrap();
    assert_eq!(e.product.as_deref(), Some("Milan-B0"));
    assert_eq!(
        e.tcb,
        Tcb {
            bootloader: Some(3),
            tee: Some(0),
            snp: Some(8),
            microcode: Some(0x73),
            fmc: None
        }
    );
    let hwid = "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc\
                15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6";
    let got: String = e
        .hwid
        .as_ref()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(got, hwid);
    assert!(e.undecoded.is_empty());
}

#[test]
fn amd_turin_chain_verifies_with_fmc_and_8_byte_hwid() {
    let blob = table(&[
        (CertKind::Ark, amd("turin-ark.pem")),
        (CertKind::Ask, amd("turin-ask.pem")),
        (CertKind::Vcek, amd("vcek-turin.der")),
    ]);
    let r = verify_table(&blob, epoch("2026-01-01T00:00:00Z")).unwrap();
    assert!(r.verified(), "{}", failures(&r));
    let e = r.certs[2].endorsement.as_ref().unwrap();
    assert_eq!(e.product.as_deref(), Some("Turin"));
    assert_eq!(
        e.tcb,
        Tcb {
            bootloader: Some(0),
            tee: Some(0),
            snp: Some(0),
            microcode: Some(9),
            fmc: Some(0)
        }
    );
    assert_eq!(
        e.hwid.as_deref(),
        Some(&[0x1e, 0x55, 0x0a, 0x8e, 0xe5, 0xcf, 0x9f, 0x4d][..])
    );
}

#[test]
fn amd_validity_bounds_are_inclusive_and_checked() {
    // VCEK Milan: Not Before Apr 3 19:23:43 2023 GMT, Not After Apr 3 19:23:43 2030 GMT.
    let blob = table(&[
        (CertKind::Ark, amd("milan-ark.pem")),
        (CertKind::Ask, amd("milan-ask.pem")),
        (CertKind::Vcek, amd("vcek-milan.der")),
    ]);
    for (at, ok) in [
        ("2023-04-03T19:23:42Z", false),
        ("2023-04-03T19:23:43Z", true),
        ("2030-04-03T19:23:43Z", true),
        ("2030-04-03T19:23:44Z", false),
    ] {
        let r = verify_table(&blob, epoch(at)).unwrap();
        assert_eq!(r.verified(), ok, "{at}: {}", failures(&r));
        if !ok {
            let f = failures(&r);
            assert!(
                f.starts_with("VCEK: within its validity period"),
                "{at}: {f}"
            );
            assert_eq!(r.failures().len(), 1, "{at}: {f}");
        }
    }
}

#[test]
fn amd_generations_do_not_mix_and_incomplete_blobs_do_not_verify() {
    let at = epoch("2026-01-01T00:00:00Z");
    // Milan VCEK under Genoa's ASK: names differ, refused.
    let r = verify_table(
        &table(&[
            (CertKind::Ark, amd("genoa-ark.pem")),
            (CertKind::Ask, amd("genoa-ask.pem")),
            (CertKind::Vcek, amd("vcek-milan.der")),
        ]),
        at,
    )
    .unwrap();
    assert!(!r.verified());
    assert!(
        failures(&r).contains("VCEK: signed by the ASK"),
        "{}",
        failures(&r)
    );
    // Genoa's ASK under Milan's ARK.
    let r = verify_table(
        &table(&[
            (CertKind::Ark, amd("milan-ark.pem")),
            (CertKind::Ask, amd("genoa-ask.pem")),
            (CertKind::Vcek, amd("vcek-milan.der")),
        ]),
        at,
    )
    .unwrap();
    assert!(
        failures(&r).contains("ASK: signed by the ARK"),
        "{}",
        failures(&r)
    );
    // Genoa ARK + ASK alone: their checks pass, but there is no leaf.
    let r = verify_table(
        &table(&[
            (CertKind::Ark, amd("genoa-ark.pem")),
            (CertKind::Ask, amd("genoa-ask.pem")),
        ]),
        at,
    )
    .unwrap();
    assert!(!r.verified());
    assert!(r
        .certs
        .iter()
        .all(|c| c.checks.iter().all(|k| k.result.is_ok())));
    assert_eq!(r.problems.len(), 1, "{}", failures(&r));
    assert!(r.problems[0].contains("no VCEK or VLEK"));
    // VCEK only (what a host serves when the guest fetches ARK/ASK itself).
    let r = verify_table(&table(&[(CertKind::Vcek, amd("vcek-milan.der"))]), at).unwrap();
    assert!(!r.verified());
    let f = failures(&r);
    assert!(
        f.contains("no ARK entry") && f.contains("no ASK entry"),
        "{f}"
    );
    // Swapped roles: ASK in the ARK entry and ARK in the ASK entry.
    let r = verify_table(
        &table(&[
            (CertKind::Ark, amd("milan-ask.pem")),
            (CertKind::Ask, amd("milan-ark.pem")),
            (CertKind::Vcek, amd("vcek-milan.der")),
        ]),
        at,
    )
    .unwrap();
    let f = failures(&r);
    assert!(f.contains("ARK: self-signed"), "{f}");
    // ASK in the VCEK entry: an RSA key, not P-384.
    let r = verify_table(
        &table(&[
            (CertKind::Ark, amd("milan-ark.pem")),
            (CertKind::Ask, amd("vcek-milan.der")),
            (CertKind::Vcek, amd("milan-ask.pem")),
        ]),
        at,
    )
    .unwrap();
    let f = failures(&r);
    assert!(f.contains("VCEK: ECDSA P-384 public key"), "{f}");
    assert!(f.contains("ASK: signed by the ARK"), "{f}");
    // Not a certificate at all.
    let r = verify_table(
        &table(&[
            (CertKind::Ark, amd("milan-ark.pem")),
            (CertKind::Ask, amd("milan-ask.pem")),
            (CertKind::Vcek, vec![0x30, 0x03, 0x02, 0x01, 0x05]),
        ]),
        at,
    )
    .unwrap();
    assert!(failures(&r).contains("VCEK: not a DER X.509 certificate"));
}

// ---------------------------------------------------------------- made here

/// A signature scheme for `openssl x509 -req`.
#[derive(Clone, Copy)]
enum Sig {
    /// AMD's: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48.
    Amd,
    Pkcs1v15,
    PssSalt32,
    PssSha256,
    /// PSS with SHA-384 but MGF1-SHA-256.
    PssMgf256,
}

struct Ca {
    dir: PathBuf,
}

const EXT: &str = "\
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
[ca_false]
basicConstraints = critical,CA:FALSE
keyUsage = critical,keyCertSign,cRLSign
[ca_noku]
basicConstraints = critical,CA:TRUE
[ca_badbc]
2.5.29.19 = critical,DER:05:00
keyUsage = critical,keyCertSign,cRLSign
[ca_badku]
basicConstraints = critical,CA:TRUE
2.5.29.15 = critical,DER:05:00
[leaf_rawlike]
1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Milan-B0
1.3.6.1.4.1.3704.1.4 = DER:04:3e:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a:5a
[leaf]
1.3.6.1.4.1.3704.1.1 = ASN1:INTEGER:0
1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Milan-B0
1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:4
1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:1
1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:22
1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:213
1.3.6.1.4.1.3704.1.4 = DER:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff
[turin]
1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Turin
1.3.6.1.4.1.3704.1.3.9 = ASN1:INTEGER:2
1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:5
1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:6
1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:7
1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:8
1.3.6.1.4.1.3704.1.4 = DER:01:02:03:04:05:06:07:08
[leafca]
basicConstraints = critical,CA:TRUE
1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:22
[ca_digsig]
basicConstraints = critical,CA:TRUE
keyUsage = critical,digitalSignature
[ca_nobc]
keyUsage = critical,keyCertSign,cRLSign
[ca_crit]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
1.2.3.4.5 = critical,ASN1:NULL
[leaf_octet]
1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:Milan-B0
1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:4
1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:1
1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:22
1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:213
1.3.6.1.4.1.3704.1.4 = ASN1:FORMAT:HEX,OCTETSTRING:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
";

impl Ca {
    fn rsa_key(&self, name: &str) {
        support::rsa_key(&self.dir, name);
    }

    fn ec_key(&self, name: &str, curve: &str) {
        support::ec_key(&self.dir, name, curve);
    }

    fn sig_args(sig: Sig) -> Vec<&'static str> {
        let pss = |md: &'static str, salt: &'static str, mgf: &'static str| {
            vec![
                md,
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                salt,
                "-sigopt",
                mgf,
            ]
        };
        match sig {
            Sig::Amd => AMD_SIG.to_vec(),
            Sig::PssSalt32 => pss("-sha384", "rsa_pss_saltlen:32", "rsa_mgf1_md:sha384"),
            Sig::PssSha256 => pss("-sha256", "rsa_pss_saltlen:48", "rsa_mgf1_md:sha256"),
            Sig::PssMgf256 => pss("-sha384", "rsa_pss_saltlen:48", "rsa_mgf1_md:sha256"),
            Sig::Pkcs1v15 => vec!["-sha384"],
        }
    }

    /// Self-signed root `name` with subject `cn`.
    fn root(&self, name: &str, cn: &str) {
        self.rsa_key(name);
        support::root(&self.dir, name, cn, "65536", &AMD_SIG);
    }

    /// Certificate `name` for key `name.key`, subject `cn`, signed by `signer`
    /// with `sig`, extensions from section `ext` of [`EXT`].
    fn issue(&self, name: &str, cn: &str, signer: &str, sig: Sig, ext: &str) {
        let sig = Self::sig_args(sig);
        support::issue(&self.dir, name, cn, signer, "7", ("ext.cnf", ext), &sig);
    }

    fn der(&self, name: &str) -> Vec<u8> {
        snp_certs::pem::to_der(&std::fs::read(self.dir.join(format!("{name}.pem"))).unwrap())
            .unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
}

/// All test chains, made once per test binary.
fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tmpdir("ca");
        std::fs::write(dir.join("ext.cnf"), EXT).unwrap();
        let c = Ca { dir };
        c.root("ark", ARK_CN);
        for k in ["ask", "asvk", "ask_other", "ark_fake"] {
            c.rsa_key(k);
        }
        c.issue("ask", ASK_CN, "ark", Sig::Amd, "ca");
        c.issue(
            "asvk",
            "/CN=SEV-VLEK-Test/O=snp-certs tests",
            "ark",
            Sig::Amd,
            "ca",
        );
        // Same subject as the ASK, another key: names chain, signatures do not.
        c.issue("ask_other", ASK_CN, "ark", Sig::Amd, "ca");
        // Subject = issuer = the ARK's name, but signed by the ARK's key, not its own.
        c.issue("ark_fake", ARK_CN, "ark", Sig::Amd, "ca");
        // The ASK (same key, so it still signs the VCEK) signed by the ARK
        // otherwise than AMD signs.
        for (name, sig) in [
            ("ask_v15", Sig::Pkcs1v15),
            ("ask_salt32", Sig::PssSalt32),
            ("ask_sha256", Sig::PssSha256),
            ("ask_mgf256", Sig::PssMgf256),
        ] {
            std::fs::copy(c.dir.join("ask.key"), c.dir.join(format!("{name}.key"))).unwrap();
            c.issue(name, ASK_CN, "ark", sig, "ca");
        }
        // Leaves.
        c.ec_key("vcek", "P-384");
        c.issue("vcek", "/CN=SEV-VCEK", "ask", Sig::Amd, "leaf");
        c.ec_key("vcek_turin", "P-384");
        c.issue("vcek_turin", "/CN=SEV-VCEK", "ask", Sig::Amd, "turin");
        c.ec_key("vlek", "P-384");
        c.issue("vlek", "/CN=SEV-VLEK", "asvk", Sig::Amd, "leaf");
        c.ec_key("vcek_by_other", "P-384");
        c.issue(
            "vcek_by_other",
            "/CN=SEV-VCEK",
            "ask_other",
            Sig::Amd,
            "leaf",
        );
        // ASKs (same key as the ASK, so the VCEK still verifies under them)
        // that break one X.509 rule each.
        for (name, ext) in [
            ("ask_digsig", "ca_digsig"),
            ("ask_nobc", "ca_nobc"),
            ("ask_crit", "ca_crit"),
            ("ask_false", "ca_false"),
            ("ask_noku", "ca_noku"),
            ("ask_badbc", "ca_badbc"),
            ("ask_badku", "ca_badku"),
        ] {
            std::fs::copy(c.dir.join("ask.key"), c.dir.join(format!("{name}.key"))).unwrap();
            c.issue(name, ASK_CN, "ark", Sig::Amd, ext);
        }
        // An ASK with a 1024-bit key, and a VCEK it signs.
        support::openssl(
            &c.dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:1024",
                "-out",
                "ask_1024.key",
            ],
        );
        c.issue("ask_1024", ASK_CN, "ark", Sig::Amd, "ca");
        c.ec_key("vcek_by_1024", "P-384");
        c.issue("vcek_by_1024", "/CN=SEV-VCEK", "ask_1024", Sig::Amd, "leaf");
        // hwID as the specification writes it: a DER OCTET STRING.
        c.ec_key("vcek_octet", "P-384");
        c.issue("vcek_octet", "/CN=SEV-VCEK", "ask", Sig::Amd, "leaf_octet");
        // A raw 64-byte hwID whose first bytes (04 3e) read as the header
        // of a 62-byte DER OCTET STRING.
        c.ec_key("vcek_rawlike", "P-384");
        c.issue(
            "vcek_rawlike",
            "/CN=SEV-VCEK",
            "ask",
            Sig::Amd,
            "leaf_rawlike",
        );
        c.rsa_key("vcek_rsa");
        c.issue("vcek_rsa", "/CN=SEV-VCEK", "ask", Sig::Amd, "leaf");
        c.ec_key("vcek_p256", "P-256");
        c.issue("vcek_p256", "/CN=SEV-VCEK", "ask", Sig::Amd, "leaf");
        c.ec_key("vcek_ca", "P-384");
        c.issue("vcek_ca", "/CN=SEV-VCEK", "ask", Sig::Amd, "leafca");
        c
    })
}

fn chain(ark: &str, ask: &str, leaf: (CertKind, &str)) -> Vec<u8> {
    let c = ca();
    table(&[
        (CertKind::Ark, c.der(ark)),
        (CertKind::Ask, c.der(ask)),
        (leaf.0, c.der(leaf.1)),
    ])
}

fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

#[test]
fn generated_chains_verify_vcek_vlek_and_turin_layout() {
    let r = vt(&chain("ark", "ask", (CertKind::Vcek, "vcek")), now());
    assert!(r.verified(), "{}", failures(&r));
    let e = r.certs[2].endorsement.as_ref().unwrap();
    // The values written in EXT's [leaf] section.
    assert_eq!(
        e.tcb,
        Tcb {
            bootloader: Some(4),
            tee: Some(1),
            snp: Some(22),
            microcode: Some(213),
            fmc: None
        }
    );
    assert_eq!(e.hwid.as_ref().map(Vec::len), Some(64));
    assert_eq!(e.hwid.as_ref().unwrap()[..4], [0x00, 0x11, 0x22, 0x33]);
    assert_eq!(r.certs[2].serial, "07");

    let r = vt(&chain("ark", "ask", (CertKind::Vcek, "vcek_turin")), now());
    assert!(r.verified(), "{}", failures(&r));
    let e = r.certs[2].endorsement.as_ref().unwrap();
    assert_eq!(e.product.as_deref(), Some("Turin"));
    assert_eq!(
        e.tcb,
        Tcb {
            bootloader: Some(5),
            tee: Some(6),
            snp: Some(7),
            microcode: Some(8),
            fmc: Some(2)
        }
    );
    assert_eq!(e.hwid.as_deref(), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));

    let r = vt(&chain("ark", "asvk", (CertKind::Vlek, "vlek")), now());
    assert!(r.verified(), "{}", failures(&r));
    let roles: Vec<Role> = r.certs.iter().map(|c| c.role).collect();
    assert_eq!(roles, [Role::Ark, Role::Asvk, Role::Vlek]);
}

/// Each broken chain, the one failure line it must give (`ROLE: check`).
#[test]
fn broken_chains_fail_for_the_right_reason() {
    let cases: [(&str, Vec<u8>, &[&str]); 9] = [
        (
            "VCEK signed by another key with the ASK's name",
            chain("ark", "ask", (CertKind::Vcek, "vcek_by_other")),
            &["VCEK: signed by the ASK (RSASSA-PSS SHA-384): signature does not verify"],
        ),
        (
            "VLEK under the ASK instead of the ASVK",
            chain("ark", "ask", (CertKind::Vlek, "vlek")),
            &["VLEK: signed by the ASVK (RSASSA-PSS SHA-384): issuer"],
        ),
        (
            "ASK signed with PKCS#1 v1.5",
            chain("ark", "ask_v15", (CertKind::Vcek, "vcek")),
            &["ASK: signed by the ARK (RSASSA-PSS SHA-384): signature algorithm 1.2.840.113549.1.1.12 is not RSASSA-PSS"],
        ),
        (
            "ASK signed with PSS salt 32",
            chain("ark", "ask_salt32", (CertKind::Vcek, "vcek")),
            &["ASK: signed by the ARK (RSASSA-PSS SHA-384): RSASSA-PSS salt length 32 is not 48"],
        ),
        (
            "ASK signed with PSS SHA-256",
            chain("ark", "ask_sha256", (CertKind::Vcek, "vcek")),
            &["ASK: signed by the ARK (RSASSA-PSS SHA-384): RSASSA-PSS hash 2.16.840.1.101.3.4.2.1 is not SHA-384"],
        ),
        (
            "VCEK with an RSA key",
            chain("ark", "ask", (CertKind::Vcek, "vcek_rsa")),
            &["VCEK: ECDSA P-384 public key: public key algorithm 1.2.840.113549.1.1.1 is not id-ecPublicKey"],
        ),
        (
            "VCEK with a P-256 key",
            chain("ark", "ask", (CertKind::Vcek, "vcek_p256")),
            &["VCEK: ECDSA P-384 public key: EC key is not on secp384r1"],
        ),
        (
            "VCEK that says it is a CA",
            chain("ark", "ask", (CertKind::Vcek, "vcek_ca")),
            &["VCEK: not a CA: basicConstraints says cA"],
        ),
        (
            "ARK not signed by its own key",
            chain("ark_fake", "ask", (CertKind::Vcek, "vcek")),
            &[
                "ARK: self-signed (issuer = subject, RSASSA-PSS SHA-384 by its own key): signature does not verify",
                "ARK: a trust anchor",
                "ASK: signed by the ARK (RSASSA-PSS SHA-384): signature does not verify",
            ],
        ),
    ];
    for (what, blob, want) in cases {
        let r = vt(&blob, now());
        let got = r.failures();
        assert!(!r.verified(), "{what}: verified");
        assert_eq!(got.len(), want.len(), "{what}: {got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{what}: got {g:?}, want {w:?}");
        }
    }
    // Swapped roles: the ASK as ARK and the ARK as ASK.
    let r = vt(&chain("ask", "ark", (CertKind::Vcek, "vcek")), now());
    let f = failures(&r);
    assert!(f.contains("ARK: self-signed"), "{f}");
    assert!(f.contains("ASK: signed by the ARK"), "{f}");
    assert!(f.contains("VCEK: signed by the ASK"), "{f}");
}

/// Issue 22: a chain anyone can make with openssl (self-signed ARK) verifies
/// only when its root is given as a trust anchor; AMD's verify with the
/// built-in anchors alone and say so.
#[test]
fn a_self_made_chain_needs_its_anchor_and_amds_verify_as_built_in() {
    let blob = chain("ark", "ask", (CertKind::Vcek, "vcek"));
    let r = verify_table(&blob, now()).unwrap();
    assert!(!r.verified());
    assert_eq!(r.failures().len(), 1, "{}", failures(&r));
    assert!(
        failures(&r)
            .starts_with("ARK: a trust anchor (AMD's ARK, or one given with --trust-anchor): \""),
        "{}",
        failures(&r)
    );
    assert_eq!(r.anchor, None);
    let r = vt(&blob, now());
    assert!(r.verified(), "{}", failures(&r));
    assert_eq!(r.anchor.as_deref(), Some("test ARK (--trust-anchor)"));

    let at = epoch("2026-01-01T00:00:00Z");
    for (g, name) in [("milan", "Milan"), ("turin", "Turin")] {
        let blob = table(&[
            (CertKind::Ark, amd(&format!("{g}-ark.pem"))),
            (CertKind::Ask, amd(&format!("{g}-ask.pem"))),
            (CertKind::Vcek, amd(&format!("vcek-{g}.der"))),
        ]);
        let r = verify_table(&blob, at).unwrap();
        assert!(r.verified(), "{g}: {}", failures(&r));
        assert_eq!(r.anchor, Some(format!("AMD {name} ARK (built in)")));
    }
    // No anchor at all: AMD's own chain does not verify either.
    let blob = milan_blob();
    let r = verify_table_with(&blob, at, &TrustAnchors::empty()).unwrap();
    assert!(
        failures(&r).contains("ARK: a trust anchor"),
        "{}",
        failures(&r)
    );

    // An anchor for one product: the leaf's product must be that one.
    let mut turin_only = TrustAnchors::empty();
    turin_only.push(
        snp_certs::verify::TrustAnchor::from_der(
            &ca().der("ark"),
            "test ARK as Turin's",
            Some("Turin"),
        )
        .unwrap(),
    );
    let r = verify_table_with(
        &chain("ark", "ask", (CertKind::Vcek, "vcek")),
        now(),
        &turin_only,
    )
    .unwrap();
    assert_eq!(r.failures().len(), 1, "{}", failures(&r));
    assert!(
        failures(&r).starts_with(
            "VCEK: for a Turin chip (product extension, as the anchor): product is Milan-B0"
        ),
        "{}",
        failures(&r)
    );
    let r = verify_table_with(
        &chain("ark", "ask", (CertKind::Vcek, "vcek_turin")),
        now(),
        &turin_only,
    )
    .unwrap();
    assert!(r.verified(), "{}", failures(&r));

    // The CLI: verify, build, install and hold --install refuse it without
    // --trust-anchor, take it with; verify names the anchor.
    let d = ca().dir.join("anchor");
    std::fs::create_dir_all(&d).unwrap();
    let good = d.join("good.bin");
    std::fs::write(&good, chain("ark", "ask", (CertKind::Vcek, "vcek"))).unwrap();
    let o = run(&["verify", s(&good)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL:     a trust anchor"));
    let o = trun(&["verify", s(&good)]);
    assert_eq!(o.status.code(), Some(0));
    let ark = ca().path("ark");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!(
        "chain verifies, ending in {} (--trust-anchor)",
        ark.display()
    )));
    let (a, k, v) = (ca().path("ark"), ca().path("ask"), ca().path("vcek"));
    let out = d.join("out.bin");
    let build = [
        "build",
        "--ark",
        s(&a),
        "--ask",
        s(&k),
        "--vcek",
        s(&v),
        "-o",
        s(&out),
    ];
    let o = run(&build);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ARK: a trust anchor"));
    assert!(!out.exists());
    assert_eq!(trun(&build).status.code(), Some(0));
    let certs = d.join("certs");
    let o = run(&["install", s(&good), s(&certs)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!certs.exists());
    let o = run(&["hold", "--install", s(&good), s(&certs), "--", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!certs.exists());
    assert_eq!(
        trun(&["install", s(&good), s(&certs)]).status.code(),
        Some(0)
    );
    let o = trun(&["hold", "--install", s(&good), s(&certs), "--", "true"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // AMD's Milan chain: no option needed.
    let amd_blob = d.join("milan.bin");
    std::fs::write(&amd_blob, milan_blob()).unwrap();
    let o = run(&["verify", "--at", "2026-01-01T00:00:00Z", s(&amd_blob)]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("chain verifies, ending in AMD Milan ARK (built in)"));
}

/// Issue 22's X.509 strictness: each broken ASK gives exactly its failure;
/// the hwID reads the same in both encodings.
#[test]
fn x509_strictness_and_both_hwid_encodings() {
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "ASK with keyUsage digitalSignature only",
            chain("ark", "ask_digsig", (CertKind::Vcek, "vcek")),
            "ASK: a CA (basicConstraints cA, keyUsage keyCertSign): keyUsage does not allow keyCertSign",
        ),
        (
            "ASK without basicConstraints",
            chain("ark", "ask_nobc", (CertKind::Vcek, "vcek")),
            "ASK: a CA (basicConstraints cA, keyUsage keyCertSign): no basicConstraints extension",
        ),
        (
            "ASK with an unknown critical extension",
            chain("ark", "ask_crit", (CertKind::Vcek, "vcek")),
            "ASK: no unknown critical extension: critical extension(s) 1.2.3.4.5",
        ),
        (
            "ASK with a 1024-bit key",
            chain("ark", "ask_1024", (CertKind::Vcek, "vcek_by_1024")),
            "ASK: an RSA-4096 key: RSA key of 1024 bits",
        ),
    ];
    for (what, blob, want) in cases {
        let r = vt(&blob, now());
        assert!(!r.verified(), "{what}: verified");
        assert_eq!(r.failures(), [want.to_string()], "{what}");
    }
    let raw = vt(&chain("ark", "ask", (CertKind::Vcek, "vcek")), now());
    let octet = vt(&chain("ark", "ask", (CertKind::Vcek, "vcek_octet")), now());
    assert!(octet.verified(), "{}", failures(&octet));
    let hw = |r: &ChainReport| r.certs[2].endorsement.as_ref().unwrap().hwid.clone();
    assert_eq!(hw(&octet).map(|h| h.len()), Some(64));
    assert_eq!(hw(&octet), hw(&raw));
}

/// The CA check's other refusals (RFC 5280 4.2.1.9 and 4.2.1.3: a CA
/// certificate says cA in basicConstraints and keyCertSign in keyUsage; an
/// extension that cannot be decoded proves neither), the MGF1 hash of AMD's
/// PSS parameters, and a raw hwID that merely starts like an OCTET STRING.
#[test]
fn ca_check_mgf1_hash_and_raw_hwid() {
    let ca_check = "ASK: a CA (basicConstraints cA, keyUsage keyCertSign): ";
    let cases: [(&str, &str, &str); 5] = [
        (
            "ASK with basicConstraints cA false",
            "ask_false",
            "basicConstraints says not a CA",
        ),
        ("ASK without keyUsage", "ask_noku", "no keyUsage extension"),
        (
            "ASK with an undecodable basicConstraints",
            "ask_badbc",
            "undecodable basicConstraints",
        ),
        (
            "ASK with an undecodable keyUsage",
            "ask_badku",
            "undecodable keyUsage",
        ),
        (
            "ASK signed with PSS, SHA-384 but MGF1-SHA-256",
            "ask_mgf256",
            "RSASSA-PSS mask generation",
        ),
    ];
    for (what, ask, want) in cases {
        let r = vt(&chain("ark", ask, (CertKind::Vcek, "vcek")), now());
        assert!(!r.verified(), "{what}: verified");
        let f = r.failures();
        assert_eq!(f.len(), 1, "{what}: {f:#?}");
        if ask == "ask_mgf256" {
            let pre = "ASK: signed by the ARK (RSASSA-PSS SHA-384): ";
            assert!(f[0].starts_with(&format!("{pre}{want}")), "{what}: {f:?}");
        } else {
            assert!(
                f[0].starts_with(&format!("{ca_check}{want}")),
                "{what}: {f:?}"
            );
        }
    }
    // KDS puts the hwID's raw bytes in extnValue; these 64 bytes start 04 3e,
    // the header of a 62-byte OCTET STRING, which is no hwID length (8 or
    // 64): they are taken as they are.
    let r = vt(
        &chain("ark", "ask", (CertKind::Vcek, "vcek_rawlike")),
        now(),
    );
    assert!(r.verified(), "{}", failures(&r));
    let mut want = vec![0x04, 0x3e];
    want.extend([0x5a; 62]);
    assert_eq!(r.certs[2].endorsement.as_ref().unwrap().hwid, Some(want));
}

/// A CRL in the table (GHCB's CRL entry; KDS serves AMD's ARK-signed CRL):
/// issued and signed by the ARK, in force from its thisUpdate, and the
/// ASK/ASVK must not be on it. Made with `openssl ca -gencrl` the way the
/// refresh tests make AMD-like CRLs.
#[test]
fn a_crl_in_the_table_is_checked() {
    use snp_certs::verify::{check_crl, serial_of};
    let c = ca();
    let d = tmpdir("crl");
    for f in ["ark.pem", "ark.key", "ask.pem", "ask_other.pem"] {
        std::fs::copy(c.dir.join(f), d.join(f)).unwrap();
    }
    support::crl_authority(&d, "");
    let gencrl = |name: &str| -> Vec<u8> {
        let mut a = vec!["ca", "-config", "crl.cnf", "-gencrl", "-out"];
        let pem = format!("{name}.pem");
        a.push(&pem);
        a.extend(&AMD_SIG[1..]);
        support::openssl(&d, &a);
        let der = format!("{name}.der");
        support::openssl(&d, &["crl", "-in", &pem, "-outform", "DER", "-out", &der]);
        std::fs::read(d.join(der)).unwrap()
    };
    let date = |name: &str, which: &str| -> Duration {
        let o = Command::new("openssl")
            .current_dir(&d)
            .args(["crl", "-noout", which, "-in", &format!("{name}.pem")])
            .output()
            .unwrap();
        let t = String::from_utf8(o.stdout).unwrap();
        epoch(t.trim().split_once('=').unwrap().1)
    };
    let none = gencrl("crl-none");
    support::openssl(&d, &["ca", "-config", "crl.cnf", "-revoke", "ask.pem"]);
    let revoking = gencrl("crl-ask");
    let (ark, ask) = (c.der("ark"), c.der("ask"));
    // The ASK was issued with serial 7 (`-set_serial 7`): DER INTEGER 07.
    assert_eq!(serial_of(&ask), Some(vec![7]));
    assert_eq!(serial_of(&[0x30, 0x00]), None);

    let this = date("crl-ask", "-lastupdate");
    let next = date("crl-ask", "-nextupdate");
    assert_eq!(
        check_crl(&revoking, &ark, this),
        Ok((vec![vec![7]], Some(next)))
    );
    assert_eq!(
        check_crl(&none, &ark, now()),
        Ok((vec![], Some(date("crl-none", "-nextupdate"))))
    );
    // In force from thisUpdate on, not a second before.
    let e = check_crl(&revoking, &ark, this - Duration::from_secs(1)).unwrap_err();
    assert!(e.starts_with("CRL not valid before"), "{e}");
    // Issued by the ARK only: checked against the ASK as "ARK" it is refused
    // for its issuer.
    let e = check_crl(&revoking, &ask, now()).unwrap_err();
    assert!(e.starts_with("CRL issuer"), "{e}");

    let with_crl = |crl: &[u8]| {
        table(&[
            (CertKind::Ark, ark.clone()),
            (CertKind::Ask, ask.clone()),
            (CertKind::Vcek, c.der("vcek")),
            (CertKind::Crl, crl.to_vec()),
        ])
    };
    let check = "not revoked by the table's CRL (issued and signed by the ARK)";
    let r = vt(&with_crl(&none), now());
    assert!(r.verified(), "{}", failures(&r));
    let ask_checks = &r.certs[1].checks;
    assert!(
        ask_checks
            .iter()
            .any(|k| k.what == check && k.result.is_ok()),
        "{ask_checks:#?}"
    );
    let r = vt(&with_crl(&revoking), now());
    assert!(!r.verified());
    assert_eq!(
        r.failures(),
        [format!("ASK: {check}: serial 07 is revoked")],
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// The built-in AMD certificates are AMD's (tests/data/amd holds the same
/// certificates as KDS serves them), one ARK per product as the anchors.
#[test]
fn built_in_amd_certificates_and_anchors() {
    use snp_certs::verify::{amd_ark, amd_ask};
    for p in ["milan", "genoa", "turin"] {
        assert_eq!(amd_ark(p), Some(amd(&format!("{p}-ark.pem"))), "{p}");
        assert_eq!(amd_ask(p), Some(amd(&format!("{p}-ask.pem"))), "{p}");
    }
    assert_eq!(amd_ark("Milan"), Some(amd("milan-ark.pem")));
    assert_eq!(amd_ark("siena"), None);
    assert_eq!(amd_ask("siena"), None);
    let a = TrustAnchors::amd();
    let got: Vec<_> = a
        .anchors()
        .iter()
        .map(|t| (t.product().map(str::to_string), t.der().to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("Milan".to_string()), amd("milan-ark.pem")),
            (Some("Genoa".to_string()), amd("genoa-ark.pem")),
            (Some("Turin".to_string()), amd("turin-ark.pem")),
        ]
    );
}

// ---------------------------------------------------------------- the CLI

#[test]
fn cli_verify_exit_codes_and_output() {
    let c = ca();
    let d = c.dir.join("cli");
    std::fs::create_dir_all(&d).unwrap();
    let good = d.join("good.bin");
    std::fs::write(&good, chain("ark", "ask", (CertKind::Vcek, "vcek"))).unwrap();
    let o = trun(&["verify", s(&good)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "ARK\n",
        "ASK\n",
        "VCEK\n",
        "subject:  O=snp-certs tests,CN=ARK-Test",
        "serial:   07",
        "product:  Milan-B0",
        "TCB:      bootloader 4, tee 1, snp 22, microcode 213\n",
        "hwID:     00112233",
        "(64 bytes)",
        "chain verifies",
    ] {
        assert!(out.contains(want), "{want:?} not in\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");

    // Expired and not yet valid, through --at (the chain is valid for 10 years from now).
    for at in ["2100-01-01T00:00:00Z", "@0", "2000-02-29T12:00:00Z"] {
        let o = trun(&["verify", "--at", at, s(&good)]);
        assert_eq!(o.status.code(), Some(1), "{at}");
        let out = String::from_utf8_lossy(&o.stdout);
        let want = if at.starts_with("2100") {
            "FAIL:     within its validity period: expired at"
        } else {
            "FAIL:     within its validity period: not valid before"
        };
        assert_eq!(out.matches(want).count(), 3, "{at}: {out}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("does not verify"));
    }

    let bad = d.join("bad.bin");
    std::fs::write(&bad, chain("ark", "ask", (CertKind::Vcek, "vcek_by_other"))).unwrap();
    let o = trun(&["verify", s(&bad)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL:     signed by the ASK"));

    let notable = d.join("notable.bin");
    std::fs::write(&notable, b"not a table").unwrap();
    let o = trun(&["verify", s(&notable)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid certificate table"));

    for args in [
        vec!["verify"],
        vec!["verify", s(&good), s(&good)],
        vec!["verify", "--bogus", s(&good)],
        vec!["verify", "--at", "yesterday", s(&good)],
        vec!["verify", "--at", "2026-13-01T00:00:00Z", s(&good)],
        vec!["verify", "--at"],
        vec!["install", "--no-verify"],
    ] {
        let o = trun(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let o = trun(&["verify", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RSASSA-PSS"));
}

#[test]
fn build_and_install_refuse_a_chain_that_does_not_verify() {
    let c = ca();
    let d = c.dir.join("refuse");
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join("out.bin");
    let build = |ark: &str, ask: &str, vcek: &str, extra: &[&str]| {
        let (a, k, v) = (c.path(ark), c.path(ask), c.path(vcek));
        let mut args = vec!["build", "--ark", s(&a), "--ask", s(&k), "--vcek", s(&v)];
        args.extend_from_slice(extra);
        args.extend(["-o", s(&out)]);
        trun(&args)
    };
    let o = build("ark", "ask", "vcek_rsa", &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("does not verify") && e.contains("--no-verify"),
        "{e}"
    );
    assert!(e.contains("VCEK: ECDSA P-384 public key"), "{e}");
    assert!(!out.exists(), "nothing written for a refused chain");
    let o = build("ask", "ark", "vcek", &[]);
    assert_eq!(o.status.code(), Some(1), "swapped roles");
    assert!(!out.exists());
    let o = build("ark", "ask", "vcek_rsa", &["--no-verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(&out).unwrap();
    let o = build("ark", "ask", "vcek", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // install: a good chain goes in; a VCEK-only blob and a broken chain do
    // not, unless --no-verify; the file keeps the good blob.
    let certs = d.join("certs");
    assert!(trun(&["install", s(&out), s(&certs)]).status.success());
    let good = std::fs::read(&out).unwrap();
    let only = d.join("vcek-only.bin");
    std::fs::write(&only, table(&[(CertKind::Vcek, c.der("vcek"))])).unwrap();
    let broken = d.join("broken.bin");
    std::fs::write(
        &broken,
        chain("ark", "ask", (CertKind::Vcek, "vcek_by_other")),
    )
    .unwrap();
    for (p, why) in [
        (&only, "no ARK entry"),
        (&broken, "signature does not verify"),
    ] {
        let o = trun(&["install", s(p), s(&certs)]);
        assert_eq!(o.status.code(), Some(1), "{why}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(why) && e.contains("--no-verify"), "{why}: {e}");
        assert_eq!(std::fs::read(&certs).unwrap(), good, "{why}");
        // hold --install checks before it runs the command.
        let flag = d.join("ran");
        let o = trun(&[
            "hold",
            "--install",
            s(p),
            s(&certs),
            "--",
            "touch",
            s(&flag),
        ]);
        assert_eq!(o.status.code(), Some(1), "{why}");
        assert!(!flag.exists(), "{why}: command ran");
    }
    // The empty table serves no certificates and claims no chain: installed
    // without --no-verify; `verify` still says there is no chain.
    let empty = d.join("empty.bin");
    std::fs::write(&empty, [0u8; 24]).unwrap();
    let o = trun(&["install", s(&empty), s(&certs)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(trun(&["verify", s(&empty)]).status.code(), Some(1));
    let o = trun(&["install", "--no-verify", s(&only), s(&certs)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(&certs).unwrap(),
        std::fs::read(&only).unwrap()
    );
    let o = trun(&["hold", "--no-verify", s(&certs), "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "--no-verify without --install");
}

// ---------------------------------------------------------------- hostile input

use proptest::prelude::*;

fn milan_blob() -> Vec<u8> {
    table(&[
        (CertKind::Ark, amd("milan-ark.pem")),
        (CertKind::Ask, amd("milan-ask.pem")),
        (CertKind::Vcek, amd("vcek-milan.der")),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any one corrupted byte of a verified blob (table header, any field of
    /// any certificate, signed or not) is caught, and never panics.
    #[test]
    fn any_corrupted_byte_of_a_good_chain_is_caught(pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut b = milan_blob();
        let at = Duration::from_secs(1_767_225_600); // 2026-01-01T00:00:00Z
        let i = pos.index(b.len());
        b[i] ^= x;
        if let Ok(r) = verify_table(&b, at) {
            prop_assert!(!r.verified(), "byte {i} ^ {x:#x} still verifies");
        }
    }

    /// Arbitrary bytes in the certificate entries never panic.
    #[test]
    fn arbitrary_certificates_never_panic(
        ark in prop::collection::vec(any::<u8>(), 1..600),
        ask in prop::collection::vec(any::<u8>(), 1..600),
        leaf in prop::collection::vec(any::<u8>(), 1..600),
    ) {
        let b = table(&[(CertKind::Ark, ark), (CertKind::Ask, ask), (CertKind::Vcek, leaf)]);
        let r = verify_table(&b, Duration::from_secs(1_700_000_000)).unwrap();
        prop_assert!(!r.verified());
    }
}

/// `build --dir` (AMD KDS and snphost layouts) and VCEK-only input go through
/// the same chain check.
#[test]
fn build_dir_and_vcek_only_are_verified() {
    let c = ca();
    let d = c.dir.join("dir");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/amd");
    let out = d.join("out.bin");
    // KDS: cert_chain (ASK then ARK in one PEM) and the VCEK.
    let kds = d.join("kds");
    std::fs::create_dir_all(&kds).unwrap();
    let chain_pem = [
        std::fs::read_to_string(data.join("milan-ask.pem")).unwrap(),
        std::fs::read_to_string(data.join("milan-ark.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(kds.join("cert_chain.pem"), chain_pem).unwrap();
    std::fs::copy(data.join("vcek-milan.der"), kds.join("vcek.der")).unwrap();
    let o = run(&["build", "--dir", s(&kds), "-o", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        run(&["verify", "--at", "2026-01-01T00:00:00Z", s(&out)])
            .status
            .code(),
        Some(0)
    );
    // The same directory with Turin's VCEK: refused, nothing written.
    std::fs::remove_file(&out).unwrap();
    std::fs::copy(data.join("vcek-turin.der"), kds.join("vcek.der")).unwrap();
    let o = run(&["build", "--dir", s(&kds), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("VCEK: signed by the ASK"));
    assert!(!out.exists());
    // snphost layout with the chain made here.
    let sh = d.join("snphost");
    std::fs::create_dir_all(&sh).unwrap();
    for (from, to) in [("ark", "ark.pem"), ("ask", "ask.pem"), ("vcek", "vcek.pem")] {
        std::fs::copy(c.path(from), sh.join(to)).unwrap();
    }
    let o = trun(&["build", "--dir", s(&sh), "-o", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // VCEK only: no ARK to anchor it, refused unless --no-verify.
    std::fs::remove_file(&out).unwrap();
    let v = c.path("vcek");
    let o = trun(&["build", "--vcek", s(&v), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("no ARK entry") && e.contains("--no-verify"),
        "{e}"
    );
    assert!(!out.exists());
    let o = trun(&["build", "--vcek", s(&v), "--no-verify", "-o", s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 22 (peers): `verify --report` checks a real attestation report
/// (virtee/sev's Milan report) with the table's VCEK, as snpguest does;
/// any changed signed byte, the signature, or another VCEK fails.
#[test]
fn verify_report_with_amds_real_milan_report_and_vcek() {
    let rep = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/amd/report-milan.bin"),
    )
    .unwrap();
    let vcek = amd("vcek-milan.der");
    snp_certs::verify::verify_report(&rep, &vcek).unwrap();
    for i in [0x0, 0x50, 0x1A0, 0x29F, 0x2A0, 0x2E8] {
        let mut bad = rep.clone();
        bad[i] ^= 1;
        assert!(
            snp_certs::verify::verify_report(&bad, &vcek).is_err(),
            "byte {i:#x} changed"
        );
    }
    let turin = amd("vcek-turin.der");
    assert!(snp_certs::verify::verify_report(&rep, &turin).is_err());
    assert!(snp_certs::verify::verify_report(&rep[..100], &vcek).is_err());

    let d = tmpdir("report");
    let blob = d.join("milan.bin");
    std::fs::write(&blob, milan_blob()).unwrap();
    let r = d.join("report.bin");
    std::fs::write(&r, &rep).unwrap();
    let at = "2026-01-01T00:00:00Z";
    let o = run(&["verify", "--at", at, "--report", s(&r), s(&blob)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("signature verifies"), "{out}");
    let mut bad = rep.clone();
    bad[0x90] ^= 0x80;
    std::fs::write(&r, &bad).unwrap();
    let o = run(&["verify", "--at", at, "--report", s(&r), s(&blob)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL: report"));
}

/// `export BLOB DIR` writes snphost's names, which `build --dir` reads back
/// to the same table.
#[test]
fn export_round_trips_through_build_dir() {
    let d = tmpdir("export");
    let blob = d.join("milan.bin");
    std::fs::write(&blob, milan_blob()).unwrap();
    let out = d.join("certs");
    let o = run(&["export", s(&blob), s(&out)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ark.der", "ask.der", "vcek.der"]);
    assert_eq!(
        std::fs::read(out.join("vcek.der")).unwrap(),
        amd("vcek-milan.der")
    );
    let again = d.join("again.bin");
    let o = run(&["build", "--dir", s(&out), "-o", s(&again)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&again).unwrap(), milan_blob());
    // Existing files are not overwritten.
    assert_eq!(run(&["export", s(&blob), s(&out)]).status.code(), Some(1));
    assert_eq!(run(&["export", s(&blob)]).status.code(), Some(2));
}
