//! `snp-certs build` inputs (`--dir` as snphost and AMD KDS leave it, a
//! VCEK-only blob, `--entry GUID=FILE`) and `inspect --json`.
//!
//! Certificates here are minimal DER SEQUENCEs (the CLI checks DER framing,
//! not X.509 contents); expected table contents are written out from the
//! GHCB layout (24-byte entries, string-order GUIDs, data after the
//! terminator).

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use snp_certs::table;
use support::{der, pem, pem_block, s, tmpdir};

const ARK_GUID: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
const ASK_GUID: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const VCEK_GUID: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const VLEK_GUID: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
const CRL_GUID: &str = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea";
const OTHER_GUID: &str = "11223344-5566-7788-99aa-bbccddeeff00";

/// Runs the CLI. The certificates here are placeholders, not a chain, so
/// `build` runs with `--no-verify` (chain verification, also of `--dir` and
/// VCEK-only input, is tested in tests/verify.rs).
fn run(args: &[&str]) -> Output {
    let mut args = args.to_vec();
    if args.first() == Some(&"build") {
        args.insert(1, "--no-verify");
    }
    support::run(&args)
}

/// The blob's entries as (GUID string, data).
fn entries(blob_path: &Path) -> Vec<(String, Vec<u8>)> {
    let blob = std::fs::read(blob_path).unwrap();
    let t = table::parse(&blob).unwrap();
    t.entries()
        .iter()
        .map(|e| {
            let (o, l) = (e.offset as usize, e.length as usize);
            (e.guid.to_string(), blob[o..o + l].to_vec())
        })
        .collect()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}, stderr {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Exit 1 with a one-line message on stderr containing `want`.
fn fails_with(o: &Output, code: i32, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(want), "expected {want:?} in: {err}");
    assert!(o.stdout.is_empty());
    assert!(!err.contains("panicked"));
}

#[test]
fn build_dir_as_snphost_writes_it() {
    let d = tmpdir("snphost");
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ark, ask, vcek, crl) = (der(1, 300), der(2, 280), der(3, 200), der(4, 50));
    // snphost `fetch ca pem`, `fetch vcek der`, `fetch crl` (DER), mixed on
    // purpose; a dot-file (an editor's) is ignored.
    std::fs::write(certs.join("ark.pem"), pem(&ark)).unwrap();
    std::fs::write(certs.join("ask.pem"), pem(&ask)).unwrap();
    std::fs::write(certs.join("vcek.der"), &vcek).unwrap();
    std::fs::write(certs.join("Milan.crl"), &crl).unwrap();
    std::fs::write(certs.join(".ark.pem.swp"), b"junk").unwrap();
    let out = d.join("blob");
    ok(&run(&["build", "--dir", s(&certs), "-o", s(&out)]));
    assert_eq!(
        entries(&out),
        vec![
            (ARK_GUID.to_string(), ark),
            (ASK_GUID.to_string(), ask),
            (VCEK_GUID.to_string(), vcek),
            (CRL_GUID.to_string(), crl),
        ]
    );
    // A VLEK chain as snphost writes it: asvk + vlek.
    let vl = d.join("vlek");
    std::fs::create_dir_all(&vl).unwrap();
    let (ark2, asvk, vlek) = (der(5, 300), der(6, 290), der(7, 210));
    std::fs::write(vl.join("ark.der"), &ark2).unwrap();
    std::fs::write(vl.join("asvk.der"), &asvk).unwrap();
    std::fs::write(vl.join("vlek.pem"), pem(&vlek)).unwrap();
    ok(&run(&["build", "--dir", s(&vl), "-o", s(&out)]));
    assert_eq!(
        entries(&out),
        vec![
            (ARK_GUID.to_string(), ark2),
            (ASK_GUID.to_string(), asvk),
            (VLEK_GUID.to_string(), vlek),
        ]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn build_dir_as_amd_kds_serves_it() {
    let d = tmpdir("kds");
    let certs = d.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (ask, ark, vcek, crl) = (der(2, 280), der(1, 300), der(3, 200), der(4, 60));
    // KDS `cert_chain`: the ASK first, then the ARK, in one PEM file.
    std::fs::write(
        certs.join("cert_chain"),
        format!("{}{}", pem(&ask), pem(&ark)),
    )
    .unwrap();
    std::fs::write(certs.join("vcek.der"), &vcek).unwrap();
    std::fs::write(certs.join("crl"), &crl).unwrap();
    let out = d.join("blob");
    ok(&run(&["build", "--dir", s(&certs), "-o", s(&out)]));
    assert_eq!(
        entries(&out),
        vec![
            (ARK_GUID.to_string(), ark),
            (ASK_GUID.to_string(), ask),
            (VCEK_GUID.to_string(), vcek),
            (CRL_GUID.to_string(), crl),
        ]
    );
    // A directory with only the CA chain, the VCEK given as an option.
    std::fs::remove_file(certs.join("vcek.der")).unwrap();
    std::fs::remove_file(certs.join("crl")).unwrap();
    let v = d.join("v.pem");
    std::fs::write(&v, pem(&der(9, 100))).unwrap();
    ok(&run(&[
        "build",
        "--dir",
        s(&certs),
        "--vcek",
        s(&v),
        "-o",
        s(&out),
    ]));
    assert_eq!(entries(&out).len(), 3);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn vcek_only_blob_and_other_entries() {
    let d = tmpdir("vcekonly");
    let (v, e1, e2) = (d.join("vcek.pem"), d.join("e1.der"), d.join("e2.pem"));
    let (vcek, x1, x2) = (der(3, 200), der(0x11, 40), der(0x22, 30));
    std::fs::write(&v, pem(&vcek)).unwrap();
    std::fs::write(&e1, &x1).unwrap();
    std::fs::write(&e2, pem(&x2)).unwrap();
    let out = d.join("blob");
    ok(&run(&["build", "--vcek", s(&v), "-o", s(&out)]));
    assert_eq!(entries(&out), vec![(VCEK_GUID.to_string(), vcek.clone())]);
    // Two entries, two entries' terminator included: 2 * 24 + 24 bytes of
    // table, then the VCEK.
    let blob = std::fs::read(&out).unwrap();
    assert_eq!(blob.len(), 48 + vcek.len());
    // A VCEK-only directory too.
    let only = d.join("only");
    std::fs::create_dir_all(&only).unwrap();
    std::fs::write(only.join("vcek.der"), &vcek).unwrap();
    ok(&run(&["build", "--dir", s(&only), "-o", s(&out)]));
    assert_eq!(entries(&out), vec![(VCEK_GUID.to_string(), vcek.clone())]);

    // --entry: other GUIDs after the known entries, in the order given, the
    // GUID bytes in string order on the wire.
    let other2 = "99999999-0000-1111-2222-333333333333";
    ok(&run(&[
        "build",
        "--entry",
        &format!("{OTHER_GUID}={}", s(&e1)),
        "--vcek",
        s(&v),
        "--entry",
        &format!("{}={}", other2.to_uppercase(), s(&e2)),
        "-o",
        s(&out),
    ]));
    assert_eq!(
        entries(&out),
        vec![
            (VCEK_GUID.to_string(), vcek),
            (OTHER_GUID.to_string(), x1),
            (other2.to_string(), x2),
        ]
    );
    let blob = std::fs::read(&out).unwrap();
    assert_eq!(
        &blob[24..40],
        &[
            0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
            0xff, 0x00
        ]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn build_input_errors() {
    let d = tmpdir("errors");
    let out = d.join("blob");
    let mk = |name: &str, files: &[(&str, Vec<u8>)]| {
        let p = d.join(name);
        std::fs::create_dir_all(&p).unwrap();
        for (f, b) in files {
            std::fs::write(p.join(f), b).unwrap();
        }
        p
    };
    let (ark, ask, vcek) = (der(1, 300), der(2, 280), der(3, 200));
    let good = || {
        vec![
            ("ark.pem", pem(&ark).into_bytes()),
            ("ask.pem", pem(&ask).into_bytes()),
            ("vcek.der", vcek.clone()),
        ]
    };
    let build_dir = |p: &Path| run(&["build", "--dir", s(p), "-o", s(&out)]);

    // Missing directory.
    let missing = d.join("missing");
    fails_with(&build_dir(&missing), 1, "No such file or directory");
    // Empty directory.
    fails_with(&build_dir(&mk("empty", &[])), 1, "no certificates in --dir");
    // Unknown files: a misspelt name, a README, a wrong extension.
    for bad in ["vcek_milan.pem", "README", "vcek.txt", "ARK.pem"] {
        let mut files = good();
        files.push((bad, pem(&der(8, 10)).into_bytes()));
        let p = mk(&format!("unknown-{bad}"), &files);
        fails_with(&build_dir(&p), 1, "unknown file in --dir");
    }
    // Duplicate roles inside the directory.
    for (tag, extra, role) in [
        ("ark2", ("ark.der", der(9, 10)), "a second ARK"),
        (
            "asvk",
            ("asvk.pem", pem(&der(9, 10)).into_bytes()),
            "a second ASK",
        ),
        (
            "chain",
            (
                "cert_chain",
                format!("{}{}", pem(&der(9, 10)), pem(&der(10, 10))).into_bytes(),
            ),
            "a second",
        ),
        ("crl2", ("crl", der(9, 10)), ""),
    ] {
        let mut files = good();
        files.push((extra.0, extra.1));
        if tag == "crl2" {
            files.push(("Genoa.crl", der(11, 10)));
        }
        let p = mk(&format!("dup-{tag}"), &files);
        fails_with(
            &build_dir(&p),
            1,
            if role.is_empty() {
                "a second CRL"
            } else {
                role
            },
        );
    }
    // VCEK and VLEK together.
    let mut files = good();
    files.push(("vlek.der", der(12, 10)));
    fails_with(&build_dir(&mk("both", &files)), 1, "not both");
    // A role from the directory and from an option.
    let a2 = d.join("a2.pem");
    std::fs::write(&a2, pem(&der(13, 10))).unwrap();
    let p = mk("dup-opt", &good());
    fails_with(
        &run(&["build", "--dir", s(&p), "--ark", s(&a2), "-o", s(&out)]),
        1,
        "a second ARK",
    );
    // The same certificate in two roles across the directory.
    let mut files = vec![
        ("ark.pem", pem(&ark).into_bytes()),
        ("vcek.der", vcek.clone()),
    ];
    files.push(("ask.der", ark.clone()));
    fails_with(&build_dir(&mk("same", &files)), 1, "the same certificate");
    // A cert_chain that is not two certificates, or holds a key.
    let p = mk(
        "chain3",
        &[
            (
                "cert_chain",
                [pem(&ask), pem(&ark), pem(&der(14, 10))]
                    .concat()
                    .into_bytes(),
            ),
            ("vcek.der", vcek.clone()),
        ],
    );
    fails_with(&build_dir(&p), 1, "3 certificate(s)");
    let key = [0x30, 0x07, 0x02, 0x01, 0x01, 0x04, 0x02, 0xaa, 0xbb];
    let p = mk(
        "chainkey",
        &[
            (
                "cert_chain",
                format!("{}{}", pem(&ask), pem_block("EC PRIVATE KEY", &key)).into_bytes(),
            ),
            ("vcek.der", vcek.clone()),
        ],
    );
    fails_with(&build_dir(&p), 1, "EC PRIVATE KEY");
    // An ARK without an ASK.
    let p = mk(
        "noask",
        &[
            ("ark.pem", pem(&ark).into_bytes()),
            ("vcek.der", vcek.clone()),
        ],
    );
    fails_with(&build_dir(&p), 1, "an ARK without an ASK");
    // No VCEK or VLEK.
    let p = mk(
        "novek",
        &[(
            "cert_chain",
            format!("{}{}", pem(&ask), pem(&ark)).into_bytes(),
        )],
    );
    fails_with(&build_dir(&p), 1, "needs a VCEK or a VLEK");
    // A directory where a certificate file should be.
    let p = mk("subdir", &[("vcek.der", vcek.clone())]);
    std::fs::create_dir_all(p.join("ark.pem")).unwrap();
    fails_with(&build_dir(&p), 1, "not a regular file");
    assert!(!out.exists(), "nothing written on error");

    // --entry usage errors exit 2.
    let v = d.join("v.der");
    std::fs::write(&v, &vcek).unwrap();
    let e = format!("{OTHER_GUID}={}", s(&v));
    for (arg, want) in [
        ("not-a-guid=x".to_string(), "bad GUID"),
        (format!("{}={}", &OTHER_GUID[..35], s(&v)), "bad GUID"),
        (format!("{}g={}", &OTHER_GUID[..35], s(&v)), "bad GUID"),
        (OTHER_GUID.to_string(), "GUID=FILE"),
        (format!("{OTHER_GUID}="), "FILE is empty"),
        (
            "00000000-0000-0000-0000-000000000000=x".to_string(),
            "all-zero GUID",
        ),
        (format!("{ARK_GUID}=x"), "use --ark"),
        (format!("{CRL_GUID}=x"), "use --crl"),
    ] {
        fails_with(
            &run(&["build", "--vcek", s(&v), "--entry", &arg, "-o", s(&out)]),
            2,
            want,
        );
    }
    fails_with(
        &run(&[
            "build",
            "--entry",
            &e,
            "--entry",
            &e,
            "--vcek",
            s(&v),
            "-o",
            s(&out),
        ]),
        2,
        "given twice",
    );
    // An entry's file must be a certificate too.
    let k = d.join("key.der");
    std::fs::write(&k, key).unwrap();
    fails_with(
        &run(&[
            "build",
            "--vcek",
            s(&v),
            "--entry",
            &format!("{OTHER_GUID}={}", s(&k)),
            "-o",
            s(&out),
        ]),
        1,
        "private key",
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn inspect_json() {
    let d = tmpdir("json");
    // A file name that needs escaping: quote, backslash, tab, newline, a
    // control character, non-ASCII.
    let name = "blob \"q\" \\ \t\n\u{1} é";
    let out = d.join(name);
    let (v, e) = (d.join("v.der"), d.join("e.der"));
    let (vcek, x) = (der(3, 5000), der(0x11, 40));
    std::fs::write(&v, &vcek).unwrap();
    std::fs::write(&e, &x).unwrap();
    ok(&run(&[
        "build",
        "--vcek",
        s(&v),
        "--entry",
        &format!("{OTHER_GUID}={}", s(&e)),
        "-o",
        s(&out),
    ]));
    let o = run(&["inspect", "--json", s(&out)]);
    ok(&o);
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    let j: Value = serde_json::from_str(&text).unwrap();
    let size = 3 * 24 + vcek.len() + x.len();
    let expect = serde_json::json!({
        "file": s(&out),
        "size": size,
        "pages": 2,
        "over_linux_guest_max": false,
        "entries": [
            {"index": 0, "type": "VCEK", "guid": VCEK_GUID, "offset": 72,
             "length": vcek.len(), "mixed_endian_of": null},
            {"index": 1, "type": "OTHER", "guid": OTHER_GUID, "offset": 72 + vcek.len(),
             "length": x.len(), "mixed_endian_of": null},
        ]
    });
    assert_eq!(j, expect);

    // The VCEK GUID in EFI mixed-endian order is flagged; an oversized table
    // is marked; the empty table has no entries.
    let mixed = "8d75da63-64e6-6445-adc5-f4b93be8accd";
    let big = d.join("big.der");
    std::fs::write(&big, der(5, 17000)).unwrap();
    ok(&run(&[
        "build",
        "--vcek",
        s(&v),
        "--entry",
        &format!("{mixed}={}", s(&big)),
        "--allow-oversize",
        "-o",
        s(&out),
    ]));
    let j: Value = serde_json::from_slice(&run(&["inspect", "--json", s(&out)]).stdout).unwrap();
    assert_eq!(j["entries"][1]["mixed_endian_of"], "VCEK");
    assert_eq!(j["entries"][1]["type"], "OTHER");
    assert_eq!(j["over_linux_guest_max"], true);
    assert_eq!(j["pages"], 6); // 72 + 5004 + 17004 = 22080 bytes
    let empty = d.join("empty");
    std::fs::write(&empty, [0u8; 24]).unwrap();
    let j: Value = serde_json::from_slice(&run(&["inspect", "--json", s(&empty)]).stdout).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"file": s(&empty), "size": 24, "pages": 1,
                           "over_linux_guest_max": false, "entries": []})
    );
    // Invalid table: exit 1, the reason on stderr, nothing on stdout.
    std::fs::write(&empty, [1u8; 30]).unwrap();
    fails_with(
        &run(&["inspect", "--json", s(&empty)]),
        1,
        "invalid certificate table",
    );
    std::fs::remove_dir_all(&d).unwrap();
}
