//! `snp-certs refresh` and `hold --refresh` against a KDS stand-in on
//! 127.0.0.1 (a small HTTP server thread started by each test), serving an
//! ARK/ASK/VCEK chain made here with the `openssl` command line the way AMD
//! makes its own (RSASSA-PSS SHA-384 salt 48; a P-384 VCEK with AMD's TCB and
//! hwID extensions), as `tests/verify.rs` does. No network beyond loopback.
//! Attestation reports are built here from the SEV-SNP ABI's layout.

#![cfg(feature = "kds")]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use snp_certs::table::{self, CertKind};
use support::{bin, ec_key, issue, openssl, out, rsa_key, s, tmpdir, AMD_SIG, ARK_CN, ASK_CN};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ------------------------------------------------------------ certificates

struct Ca {
    dir: PathBuf,
    n: AtomicUsize,
    /// VCEKs made so far, by (product name, hwid hex, tcb extension text).
    made: Mutex<HashMap<String, Vec<u8>>>,
}

/// The test's ARK and ASK (made once per test binary), and VCEKs on demand.
fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tmpdir("ca");
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        for k in ["ark", "ask"] {
            rsa_key(&dir, k);
        }
        support::root(&dir, "ark", ARK_CN, "1", &AMD_SIG);
        issue(&dir, "ask", ASK_CN, "ark", "2", ("ca.cnf", "ca"), &AMD_SIG);
        // CRLs signed by the ARK as AMD signs them: one revoking nothing,
        // then one revoking the ASK.
        support::crl_authority(&dir, "");
        let gencrl = |out: &str| {
            let mut a = vec!["ca", "-config", "crl.cnf", "-gencrl", "-out", out];
            a.extend(&AMD_SIG[1..]);
            openssl(&dir, &a);
        };
        gencrl("crl-none.pem");
        openssl(&dir, &["ca", "-config", "crl.cnf", "-revoke", "ask.pem"]);
        gencrl("crl-ask.pem");
        // An ARK-issued certificate with serial 0, the serial the test VCEKs
        // (issued by the ASK) carry, revoked in a CRL of its own: the ARK's
        // CRL covers what the ARK signs, so it says nothing about a VCEK.
        ec_key(&dir, "twin", "P-384");
        issue(
            &dir,
            "twin",
            "/CN=ARK-issued twin",
            "ark",
            "0",
            ("ca.cnf", "ca"),
            &AMD_SIG,
        );
        support::crl_authority(&dir, "2");
        openssl(&dir, &["ca", "-config", "crl2.cnf", "-revoke", "twin.pem"]);
        let mut a = vec![
            "ca",
            "-config",
            "crl2.cnf",
            "-gencrl",
            "-out",
            "crl-serial0.pem",
        ];
        a.extend(&AMD_SIG[1..]);
        openssl(&dir, &a);
        for c in ["crl-none", "crl-ask", "crl-serial0"] {
            openssl(
                &dir,
                &[
                    "crl",
                    "-in",
                    &format!("{c}.pem"),
                    "-outform",
                    "DER",
                    "-out",
                    &format!("{c}.der"),
                ],
            );
        }
        Ca {
            dir,
            n: AtomicUsize::new(0),
            made: Mutex::new(HashMap::new()),
        }
    })
}

impl Ca {
    /// KDS's cert_chain: the ASK, then the ARK.
    fn cert_chain(&self) -> Vec<u8> {
        let mut v = std::fs::read(self.dir.join("ask.pem")).unwrap();
        v.extend(std::fs::read(self.dir.join("ark.pem")).unwrap());
        v
    }

    fn der(&self, name: &str) -> Vec<u8> {
        snp_certs::pem::to_der(&std::fs::read(self.dir.join(name)).unwrap()).unwrap()
    }

    /// A DER VCEK signed by the ASK with AMD's extensions: product name
    /// (e.g. `Milan-B0`), hwID bytes, and SPLs (bl, tee, snp, ucode, fmc).
    fn vcek(&self, product: &str, hwid: &[u8], spl: (u8, u8, u8, u8, Option<u8>)) -> Vec<u8> {
        let (bl, tee, snp, ucode, fmc) = spl;
        let mut ext = format!(
            "[leaf]\n1.3.6.1.4.1.3704.1.1 = ASN1:INTEGER:0\n\
             1.3.6.1.4.1.3704.1.2 = ASN1:IA5STRING:{product}\n\
             1.3.6.1.4.1.3704.1.3.1 = ASN1:INTEGER:{bl}\n\
             1.3.6.1.4.1.3704.1.3.2 = ASN1:INTEGER:{tee}\n\
             1.3.6.1.4.1.3704.1.3.3 = ASN1:INTEGER:{snp}\n\
             1.3.6.1.4.1.3704.1.3.8 = ASN1:INTEGER:{ucode}\n"
        );
        if let Some(f) = fmc {
            ext.push_str(&format!("1.3.6.1.4.1.3704.1.3.9 = ASN1:INTEGER:{f}\n"));
        }
        let hw: Vec<String> = hwid.iter().map(|b| format!("{b:02X}")).collect();
        ext.push_str(&format!("1.3.6.1.4.1.3704.1.4 = DER:{}\n", hw.join(":")));
        if let Some(v) = self.made.lock().unwrap().get(&ext) {
            return v.clone();
        }
        let n = self.n.fetch_add(1, Ordering::SeqCst);
        let name = format!("vcek{n}");
        let cnf = format!("{name}.cnf");
        std::fs::write(self.dir.join(&cnf), &ext).unwrap();
        ec_key(&self.dir, &name, "P-384");
        issue(
            &self.dir,
            &name,
            "/CN=SEV-VCEK",
            "ask",
            "0",
            (&cnf, "leaf"),
            &AMD_SIG,
        );
        let der = self.der(&format!("{name}.pem"));
        self.made.lock().unwrap().insert(ext, der.clone());
        der
    }
}

// ------------------------------------------------------------ KDS stand-in

/// One answer of the stand-in.
#[derive(Clone)]
enum Reply {
    Ok(Vec<u8>),
    Status(u16),
    /// 429 with this Retry-After value.
    TooMany(&'static str),
    /// Sleeps this long before answering 200 with the body.
    Slow(Duration, Vec<u8>),
    /// Announces the whole body's length, sends half of it, closes.
    Truncated(Vec<u8>),
    /// 302 to this Location.
    Redirect(String),
}

type Script = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 answering each request by `script(path
/// and query, how many requests that path had before)`. Records every
/// request. Stops when dropped (and never outlives the test process).
struct Kds {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl Kds {
    fn start(script: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Kds {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (log, script) = (log2.clone(), script.clone());
                std::thread::spawn(move || serve(conn, &log, &*script));
            }
        });
        Kds {
            url: format!("http://{addr}"),
            log,
            stop,
            addr,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Kds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes accept()
    }
}

fn serve(conn: TcpStream, log: &Mutex<Vec<String>>, script: &Script) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    let n = {
        let mut l = log.lock().unwrap();
        let n = l.iter().filter(|p| **p == path).count();
        l.push(path.clone());
        n
    };
    let mut w = conn;
    let head = |code: u16, reason: &str, len: usize, extra: &str| {
        format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n"
        )
    };
    let _ = match script(&path, n) {
        Reply::Ok(b) => w
            .write_all(head(200, "OK", b.len(), "").as_bytes())
            .and_then(|()| w.write_all(&b)),
        Reply::Status(c) => w.write_all(head(c, "Status", 0, "").as_bytes()),
        Reply::TooMany(ra) => w.write_all(
            head(
                429,
                "Too Many Requests",
                0,
                &format!("Retry-After: {ra}\r\n"),
            )
            .as_bytes(),
        ),
        Reply::Slow(d, b) => {
            std::thread::sleep(d);
            w.write_all(head(200, "OK", b.len(), "").as_bytes())
                .and_then(|()| w.write_all(&b))
        }
        Reply::Redirect(to) => {
            w.write_all(head(302, "Found", 0, &format!("Location: {to}\r\n")).as_bytes())
        }
        Reply::Truncated(b) => w
            .write_all(head(200, "OK", b.len(), "").as_bytes())
            .and_then(|()| w.write_all(&b[..b.len() / 2])),
    };
    let _ = w.flush();
}

// ------------------------------------------------------------ fixtures

const MILAN_TCB: (u8, u8, u8, u8, Option<u8>) = (3, 0, 8, 115, None);

fn milan_chip() -> Vec<u8> {
    (0..64u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(1))
        .collect()
}

/// An attestation report (SEV-SNP ABI 56860, ATTESTATION_REPORT, 0x4A0
/// bytes) with VERSION, SIGNING_KEY, REPORTED_TCB (0x180), CPUID_FAM_ID and
/// CPUID_MOD_ID (0x188, 0x189) and CHIP_ID (0x1A0) set.
fn report(version: u32, signing_key: u32, tcb: [u8; 8], fam_mod: (u8, u8), chip: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 0x4A0];
    r[0..4].copy_from_slice(&version.to_le_bytes());
    r[0x48..0x4C].copy_from_slice(&(signing_key << 2).to_le_bytes());
    r[0x180..0x188].copy_from_slice(&tcb);
    r[0x188] = fam_mod.0;
    r[0x189] = fam_mod.1;
    r[0x1A0..0x1A0 + chip.len()].copy_from_slice(chip);
    r
}

/// Milan TCB_VERSION bytes: [bootloader, tee, 0, 0, 0, 0, snp, microcode].
fn milan_tcb_bytes(t: (u8, u8, u8, u8, Option<u8>)) -> [u8; 8] {
    [t.0, t.1, 0, 0, 0, 0, t.2, t.3]
}

/// A stand-in that serves the chain and the VCEKs `vceks` by path.
fn good_kds(vceks: Vec<(String, Vec<u8>)>) -> Kds {
    let chain = ca().cert_chain();
    Kds::start(move |path, _| {
        if path.ends_with("/cert_chain") {
            return Reply::Ok(chain.clone());
        }
        match vceks.iter().find(|(p, _)| p == path) {
            Some((_, v)) => Reply::Ok(v.clone()),
            None => Reply::Status(404),
        }
    })
}

fn milan_vcek_path() -> String {
    format!(
        "/vcek/v1/Milan/{}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115",
        hex(&milan_chip())
    )
}

/// The test ARK: the root these tests' chains end in, trusted with
/// `--trust-anchor` (it is not AMD's, so without it nothing verifies).
fn test_anchor() -> PathBuf {
    ca().dir.join("ark.pem")
}

/// `snp-certs ARGS` with `--trust-anchor` [`test_anchor`] right after the
/// subcommand.
fn tbin<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> std::process::Command {
    let mut v: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().into()).collect();
    if !v.is_empty() {
        v.insert(1, "--trust-anchor".into());
        v.insert(2, test_anchor().into());
    }
    let mut c = bin();
    c.args(v);
    c
}

fn refresh(kds: &Kds, dir: &Path, extra: &[&str]) -> Output {
    refresh_with(kds, dir, extra, true)
}

/// `refresh` against the stand-in; `anchored`: trust the test ARK.
fn refresh_with(kds: &Kds, dir: &Path, extra: &[&str], anchored: bool) -> Output {
    let cache = dir.join("cache");
    let mut args = vec![
        "refresh",
        "--kds-url",
        &kds.url,
        "--cache-dir",
        s(&cache),
        "--retry-delay",
        "0.05",
    ];
    args.extend_from_slice(extra);
    if anchored {
        tbin(&args).output().unwrap()
    } else {
        bin().args(&args).output().unwrap()
    }
}

fn vcek_of(blob: &[u8]) -> Vec<u8> {
    table::parse(blob)
        .unwrap()
        .find(CertKind::Vcek)
        .unwrap()
        .to_vec()
}

// ------------------------------------------------------------ tests

#[test]
fn from_report_fetches_verifies_installs_then_is_a_no_op() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let d = tmpdir("report");
    let rep = d.join("report.bin");
    std::fs::write(
        &rep,
        report(3, 0, milan_tcb_bytes(MILAN_TCB), (0x19, 0x01), &chip),
    )
    .unwrap();
    let certs = d.join("certs.bin");
    let o = refresh(&kds, &d, &["--from-report", s(&rep), s(&certs)]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("installed the VCEK for Milan chip"));
    // The URLs as snphost/virtee build them.
    assert_eq!(
        kds.requests(),
        ["/vcek/v1/Milan/cert_chain".to_string(), milan_vcek_path()]
    );
    let blob = std::fs::read(&certs).unwrap();
    let t = table::parse(&blob).unwrap();
    let kinds: Vec<CertKind> = t.entries().iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, [CertKind::Ark, CertKind::Ask, CertKind::Vcek]);
    assert_eq!(t.find(CertKind::Ark).unwrap(), ca().der("ark.pem"));
    assert_eq!(t.find(CertKind::Ask).unwrap(), ca().der("ask.pem"));
    assert_eq!(vcek_of(&blob), vcek);
    assert_eq!(
        tbin(["verify", s(&certs)]).output().unwrap().status.code(),
        Some(0)
    );

    // Again: up to date, KDS not asked, file not rewritten.
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&certs).unwrap());
    let o = refresh(&kds, &d, &["--from-report", s(&rep), s(&certs)]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("up to date"),
        "{}",
        out(&o)
    );
    assert_eq!(kds.requests().len(), 2);
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&certs).unwrap()),
        ino
    );

    // Another file, same chip and TCB: from the cache, no request.
    let other = d.join("other.bin");
    let o = refresh(&kds, &d, &["--from-report", s(&rep), s(&other)]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("VCEK from cache, ARK/ASK from cache, 0 KDS request(s)"),
        "{}",
        out(&o)
    );
    assert_eq!(kds.requests().len(), 2);
    assert_eq!(std::fs::read(&other).unwrap(), blob);

    // A new TCB (after a firmware update): the new VCEK is fetched. This
    // stand-in listens on another port, so it is another KDS origin: the
    // cache (per origin) has nothing of it and the chain is fetched too.
    let tcb2 = (3, 0, 9, 115, None);
    let vcek2 = ca().vcek("Milan-B0", &chip, tcb2);
    let path2 = format!(
        "/vcek/v1/Milan/{}?blSPL=03&teeSPL=00&snpSPL=09&ucodeSPL=115",
        hex(&chip)
    );
    let kds2 = good_kds(vec![(path2.clone(), vcek2.clone())]);
    std::fs::write(
        &rep,
        report(3, 0, milan_tcb_bytes(tcb2), (0x19, 0x01), &chip),
    )
    .unwrap();
    let o = refresh(&kds2, &d, &["--from-report", s(&rep), s(&certs)]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(
        kds2.requests(),
        ["/vcek/v1/Milan/cert_chain".to_string(), path2]
    );
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek2);
}

#[test]
fn explicit_turin_target_uses_the_8_byte_hwid_and_fmc() {
    let hwid = [0x1e, 0x55, 0x0a, 0x8e, 0xe5, 0xcf, 0x9f, 0x4d];
    // Turin TCB_VERSION: fmc 1, bl 2, tee 3, snp 4, ucode 9.
    let vcek = ca().vcek("Turin-B0", &hwid, (2, 3, 4, 9, Some(1)));
    let path = format!(
        "/vcek/v1/Turin/{}?fmcSPL=01&blSPL=02&teeSPL=03&snpSPL=04&ucodeSPL=09",
        hex(&hwid)
    );
    let kds = good_kds(vec![(path.clone(), vcek.clone())]);
    let d = tmpdir("turin");
    let certs = d.join("certs.bin");
    let o = refresh(
        &kds,
        &d,
        &[
            "--product",
            "turin",
            "--chip-id",
            &hex(&hwid),
            "--tcb",
            "bl=2,tee=3,snp=4,ucode=9,fmc=1",
            "--no-cache",
            s(&certs),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(
        kds.requests(),
        ["/vcek/v1/Turin/cert_chain".to_string(), path.clone()]
    );
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
    assert!(!d.join("cache").exists(), "--no-cache wrote a cache");

    // The same from a version 3 Turin report (family 1Ah model 02h, a
    // 64-byte CHIP_ID whose bytes after the 8th are zero, Turin's TCB layout
    // [fmc, bl, tee, snp, 0, 0, 0, ucode]).
    let rep = d.join("report.bin");
    std::fs::write(
        &rep,
        report(3, 0, [1, 2, 3, 4, 0, 0, 0, 9], (0x1A, 0x02), &hwid),
    )
    .unwrap();
    let fresh = d.join("fresh.bin");
    let o = refresh(
        &kds,
        &d,
        &["--from-report", s(&rep), "--no-cache", s(&fresh)],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(kds.requests().last(), Some(&path));

    // Turin without fmc, Milan with fmc: usage errors caught before KDS.
    let before = kds.requests().len();
    for (p, tcb) in [
        ("turin", "bl=2,tee=3,snp=4,ucode=9"),
        ("milan", "bl=2,tee=3,snp=4,ucode=9,fmc=1"),
    ] {
        let o = refresh(
            &kds,
            &d,
            &[
                "--product",
                p,
                "--chip-id",
                &hex(&milan_chip()),
                "--tcb",
                tcb,
                s(&fresh),
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("fmc"),
            "{}",
            out(&o)
        );
    }
    assert_eq!(kds.requests().len(), before);
}

#[test]
fn report_inputs_that_cannot_name_a_vcek_are_refused() {
    let chip = milan_chip();
    let kds = good_kds(vec![]);
    let d = tmpdir("badreport");
    let certs = d.join("certs.bin");
    let tcb = milan_tcb_bytes(MILAN_TCB);
    let cases: [(&str, Vec<u8>, Vec<&str>, &str); 9] = [
        (
            "VLEK-signed",
            report(3, 1, tcb, (0x19, 1), &chip),
            vec![],
            "VLEK",
        ),
        (
            "unsigned",
            report(3, 7, tcb, (0x19, 1), &chip),
            vec![],
            "unsigned",
        ),
        (
            "masked chip ID",
            report(3, 0, tcb, (0x19, 1), &[0; 64]),
            vec![],
            "all zero",
        ),
        (
            "short file",
            report(3, 0, tcb, (0x19, 1), &chip)[..1000].to_vec(),
            vec![],
            "1184 bytes",
        ),
        (
            "version 1",
            report(1, 0, tcb, (0x19, 1), &chip),
            vec![],
            "version 1",
        ),
        (
            "unknown CPU",
            report(3, 0, tcb, (0x17, 0x31), &chip),
            vec![],
            "family 0x17",
        ),
        (
            "v2 without --product",
            report(2, 0, tcb, (0, 0), &chip),
            vec![],
            "give --product",
        ),
        (
            "CPUID disagrees",
            report(3, 0, tcb, (0x19, 1), &chip),
            vec!["--product", "genoa"],
            "CPUID fields say Milan",
        ),
        (
            "Turin with a 64-byte ID",
            report(3, 0, tcb, (0x1A, 2), &chip),
            vec![],
            "after byte 8",
        ),
    ];
    // Each refused with exit 1, before any request.
    for (what, bytes, extra, msg) in cases {
        let rep = d.join("r.bin");
        std::fs::write(&rep, bytes).unwrap();
        let mut args = vec!["--from-report", s(&rep)];
        args.extend(extra);
        args.push(s(&certs));
        let o = refresh(&kds, &d, &args);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", out(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(msg),
            "{what}: {}",
            out(&o)
        );
        assert!(!certs.exists(), "{what}");
    }
    assert!(kds.requests().is_empty(), "{:?}", kds.requests());
    // A version 2 report with --product works.
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let kds = good_kds(vec![(milan_vcek_path(), vcek)]);
    let rep = d.join("v2.bin");
    std::fs::write(&rep, report(2, 0, tcb, (0, 0), &chip)).unwrap();
    let o = refresh(
        &kds,
        &d,
        &[
            "--from-report",
            s(&rep),
            "--product",
            "Milan",
            "--no-cache",
            s(&certs),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

fn explicit_milan<'a>(extra: &[&'a str], path: &'a str) -> Vec<&'a str> {
    static CHIP: OnceLock<String> = OnceLock::new();
    let chip = CHIP.get_or_init(|| hex(&milan_chip()));
    let mut v = vec![
        "--product",
        "Milan",
        "--chip-id",
        chip.as_str(),
        "--tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        "--no-cache",
    ];
    v.extend_from_slice(extra);
    v.push(path);
    v
}

/// Installs a known blob at `certs` and returns it.
fn preinstall(certs: &Path) -> Vec<u8> {
    let blob = vec![0u8; 24];
    std::fs::write(certs, &blob).unwrap();
    blob
}

#[test]
fn kds_failures_leave_the_blob_alone() {
    let vcek = ca().vcek("Milan-B0", &milan_chip(), MILAN_TCB);
    let chain = ca().cert_chain();
    let d = tmpdir("failures");
    let certs = d.join("certs.bin");
    let vp = milan_vcek_path();

    // 404: final, one request for the VCEK, clear message.
    let chain2 = chain.clone();
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(chain2.clone())
        } else {
            Reply::Status(404)
        }
    });
    let old = preinstall(&certs);
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 404"),
        "{}",
        out(&o)
    );
    assert_eq!(kds.requests().len(), 2);
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // 500 twice, then 200: retried with backoff, installed.
    let (c, v) = (chain.clone(), vcek.clone());
    let kds = Kds::start(move |p, n| {
        if p.ends_with("cert_chain") {
            Reply::Ok(c.clone())
        } else if n < 2 {
            Reply::Status(500)
        } else {
            Reply::Ok(v.clone())
        }
    });
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(kds.requests().iter().filter(|p| **p == vp).count(), 3);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 500; retrying in 0.1 s"),
        "{}",
        out(&o)
    );
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);

    // 503 always: gives up after 5 requests, bounded.
    let c = chain.clone();
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(c.clone())
        } else {
            Reply::Status(503)
        }
    });
    let old = preinstall(&certs);
    let t = Instant::now();
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        e.contains("kept refusing") && e.contains("HTTP 503; 5 attempts"),
        "{e}"
    );
    assert_eq!(kds.requests().iter().filter(|p| **p == vp).count(), 5);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // 429 with Retry-After: 1 then 200: waits the second it was told (the
    // backoff alone would be 0.05 s).
    let (c, v) = (chain.clone(), vcek.clone());
    let kds = Kds::start(move |p, n| {
        if p.ends_with("cert_chain") {
            Reply::Ok(c.clone())
        } else if n == 0 {
            Reply::TooMany("1")
        } else {
            Reply::Ok(v.clone())
        }
    });
    preinstall(&certs);
    let t = Instant::now();
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("HTTP 429; retrying in 1.0 s"),
        "{}",
        out(&o)
    );
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);

    // 429 asking for an hour, budget 5 s: no wait at all, clear error.
    let c = chain.clone();
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(c.clone())
        } else {
            Reply::TooMany("3600")
        }
    });
    let old = preinstall(&certs);
    let t = Instant::now();
    let o = refresh(&kds, &d, &explicit_milan(&["--max-wait", "5"], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("Retry-After 3600 s exceeds"), "{e}");
    assert_eq!(kds.requests().len(), 2);
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // A reply slower than --http-timeout: the timeout fires on each try.
    let c = chain.clone();
    let v = vcek.clone();
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(c.clone())
        } else {
            Reply::Slow(Duration::from_secs(4), v.clone())
        }
    });
    let old = preinstall(&certs);
    let t = Instant::now();
    let o = refresh(
        &kds,
        &d,
        &explicit_milan(&["--http-timeout", "0.5", "--max-wait", "0.2"], s(&certs)),
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        e.contains("cannot reach KDS") && e.to_lowercase().contains("timed out"),
        "{e}"
    );
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // A body cut short: retried, then refused.
    let c = chain.clone();
    let v = vcek.clone();
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(c.clone())
        } else {
            Reply::Truncated(v.clone())
        }
    });
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("reading the body"), "{e}");
    assert_eq!(kds.requests().iter().filter(|p| **p == vp).count(), 5);
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // A cert_chain cut short: refused.
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Truncated(chain.clone())
        } else {
            Reply::Ok(vcek.clone())
        }
    });
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // Nothing listening: a clear error, quickly.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut args = vec!["refresh", "--kds-url", &url, "--retry-delay", "0.01"];
    let rest = explicit_milan(&[], s(&certs));
    args.extend(rest);
    let o = tbin(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("cannot reach KDS at"), "{e}");
    assert_eq!(std::fs::read(&certs).unwrap(), old);
}

#[test]
fn a_vcek_for_another_chip_or_tcb_or_a_bad_chain_is_refused() {
    let chip = milan_chip();
    let d = tmpdir("mismatch");
    let certs = d.join("certs.bin");
    let vp = milan_vcek_path();
    let mut other_chip = chip.clone();
    other_chip[0] ^= 1;
    for (what, vcek, want) in [
        (
            "other TCB",
            ca().vcek("Milan-B0", &chip, (3, 0, 7, 115, None)),
            "VCEK TCB is bootloader 3, tee 0, snp 7",
        ),
        (
            "other chip",
            ca().vcek("Milan-B0", &other_chip, MILAN_TCB),
            "VCEK hwID is",
        ),
        (
            "other product",
            ca().vcek("Genoa-B1", &chip, MILAN_TCB),
            "VCEK product is Genoa-B1, not Milan",
        ),
    ] {
        let kds = good_kds(vec![(vp.clone(), vcek)]);
        let old = preinstall(&certs);
        let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
        assert_eq!(o.status.code(), Some(1), "{what}: {}", out(&o));
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            e.contains("nothing installed") && e.contains(want),
            "{what}: {e}"
        );
        assert_eq!(std::fs::read(&certs).unwrap(), old, "{what}");
    }
    // A chain whose ARK and ASK are swapped.
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let mut swapped = std::fs::read(ca().dir.join("ark.pem")).unwrap();
    swapped.extend(std::fs::read(ca().dir.join("ask.pem")).unwrap());
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(swapped.clone())
        } else {
            Reply::Ok(vcek.clone())
        }
    });
    let old = preinstall(&certs);
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("ARK: self-signed"),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::read(&certs).unwrap(), old);
}

#[test]
fn a_corrupt_cache_entry_is_fetched_again() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let d = tmpdir("cache");
    let certs = d.join("certs.bin");
    let mut args = explicit_milan(&[], s(&certs));
    args.retain(|a| *a != "--no-cache");
    let o = refresh(&kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    // Entries live under the KDS origin: "http_127.0.0.1_PORT".
    let origin = d
        .join("cache")
        .join(format!("http_127.0.0.1_{}", kds.addr.port()));
    let entry = origin
        .join("vcek/Milan")
        .join(hex(&chip))
        .join("bl=3,tee=0,snp=8,ucode=115.der");
    assert_eq!(std::fs::read(&entry).unwrap(), vcek);
    assert!(origin.join("cert_chain/Milan.pem").exists());
    // Corrupt it with another chip's VCEK, and make the blob stale.
    let mut other = chip.clone();
    other[5] ^= 0x80;
    std::fs::write(&entry, ca().vcek("Milan-B0", &other, MILAN_TCB)).unwrap();
    preinstall(&certs);
    let o = refresh(&kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("some came from the cache; fetching all of them from KDS again"),
        "{}",
        out(&o)
    );
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
    assert_eq!(std::fs::read(&entry).unwrap(), vcek);
}

/// Issue 22: a `refresh --kds-url` test run filled the cache that a later
/// refresh against another KDS then installed from ("0 KDS requests"). The
/// cache is now kept per KDS origin; a cache directory others can write is
/// not used; planted symbolic links are not followed.
#[test]
fn the_cache_is_per_kds_origin_and_refused_when_others_can_write_it() {
    use std::os::unix::fs::PermissionsExt;
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let test_kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let other_kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let d = tmpdir("origin");
    let blob_a = d.join("a.bin");
    let mut args = explicit_milan(&[], s(&blob_a));
    args.retain(|a| *a != "--no-cache");
    let o = refresh(&test_kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(test_kds.requests().len(), 2);
    // Another KDS, another blob: its cache is empty, so it is asked.
    let blob_b = d.join("b.bin");
    let mut args = explicit_milan(&[], s(&blob_b));
    args.retain(|a| *a != "--no-cache");
    let o = refresh(&other_kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(other_kds.requests().len(), 2, "{}", out(&o));
    // The same KDS again: from its cache, no request.
    let blob_c = d.join("c.bin");
    let mut args = explicit_milan(&[], s(&blob_c));
    args.retain(|a| *a != "--no-cache");
    let o = refresh(&test_kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(test_kds.requests().len(), 2, "{}", out(&o));
    // A cache directory anyone can write: not used (warned), KDS asked.
    let cache = d.join("cache");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let blob_e = d.join("e.bin");
    let mut args = explicit_milan(&[], s(&blob_e));
    args.retain(|a| *a != "--no-cache");
    let o = refresh(&test_kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("not using the cache"), "{}", out(&o));
    assert!(
        out(&o).contains("writable by group or others"),
        "{}",
        out(&o)
    );
    assert_eq!(test_kds.requests().len(), 4, "{}", out(&o));
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A symbolic link planted at an entry: never followed (read or write).
    let origin = cache.join(format!("http_127.0.0.1_{}", other_kds.addr.port()));
    let entry = origin.join("cert_chain/Milan.pem");
    let victim = d.join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&victim, &entry).unwrap();
    let blob_f = d.join("f.bin");
    let mut args = explicit_milan(&[], s(&blob_f));
    args.retain(|a| *a != "--no-cache");
    let o = refresh(&other_kds, &d, &args);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(
        other_kds.requests().len(),
        3,
        "chain fetched again: {}",
        out(&o)
    );
}

#[test]
fn vlek_blob_is_not_replaced() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let d = tmpdir("vlek");
    let certs = d.join("certs.bin");
    let blob = snp_certs::table::Builder::new()
        .add_kind(CertKind::Vlek, vcek)
        .build()
        .unwrap();
    std::fs::write(&certs, &blob).unwrap();
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("serves a VLEK"),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::read(&certs).unwrap(), blob);
    assert!(kds.requests().is_empty());
}

#[test]
fn dev_sev_missing_is_a_clear_error() {
    let d = tmpdir("devsev");
    let certs = d.join("certs.bin");
    let kds = good_kds(vec![]);
    let missing = d.join("no-such-sev");
    let o = refresh(&kds, &d, &["--sev-device", s(&missing), s(&certs)]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        e.contains("no-such-sev") && e.contains("not an SEV host") && e.contains("--from-report"),
        "{e}"
    );
    // The default device, where this machine has none.
    if !Path::new("/dev/sev").exists() {
        let o = refresh(&kds, &d, &[s(&certs)]);
        assert_eq!(o.status.code(), Some(1), "{}", out(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("/dev/sev: No such file"),
            "{}",
            out(&o)
        );
    }
    assert!(!certs.exists());
    assert!(kds.requests().is_empty());
}

#[test]
fn usage_errors() {
    let d = tmpdir("usage");
    let p = d.join("c");
    for args in [
        vec!["refresh"],
        vec!["refresh", "--product", "milan", s(&p)],
        vec![
            "refresh",
            "--product",
            "rome",
            "--chip-id",
            "00",
            "--tcb",
            "bl=1,tee=1,snp=1,ucode=1",
            s(&p),
        ],
        vec![
            "refresh",
            "--product",
            "milan",
            "--chip-id",
            "xyz",
            "--tcb",
            "bl=1,tee=1,snp=1,ucode=1",
            s(&p),
        ],
        vec!["refresh", "--product", "milan", "--chip-id", "00", s(&p)],
        vec!["refresh", "--tcb", "bl=1", s(&p)],
        vec![
            "refresh",
            "--from-report",
            "r",
            "--tcb",
            "bl=1,tee=1,snp=1,ucode=1",
            s(&p),
        ],
        vec!["refresh", "--kds-url", "ftp://x", s(&p)],
        vec!["refresh", "--proxy", "ftp://x:1", s(&p)],
        vec![
            "hold",
            "--refresh",
            "--proxy",
            "ftp://x:1",
            s(&p),
            "--",
            "true",
        ],
        vec!["refresh", "--max-wait", "-1", s(&p)],
        vec!["refresh", "--http-timeout", "0", s(&p)],
        vec!["refresh", "--bogus", s(&p)],
        vec!["refresh", s(&p), s(&p)],
        vec!["hold", "--refresh", "--install", "x", s(&p), "--", "true"],
    ] {
        let o = tbin(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", out(&o));
    }
    let o = tbin(["refresh", "--help"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("VLEK hosts are not supported"));
}

#[test]
fn hold_refresh_updates_in_the_same_lock_window() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let d = tmpdir("hold");
    let certs = d.join("certs.bin");
    let empty = d.join("empty.bin");
    std::fs::write(&empty, [0u8; 24]).unwrap();
    std::fs::write(&certs, [0u8; 24]).unwrap();
    // The command proves the lock is held while it runs: an install from
    // outside hold's knowledge (SNP_CERTS_HOLD unset) finds the lock busy.
    let probe = format!(
        "env -u SNP_CERTS_HOLD {} install --timeout 0 {} {}; echo $? > {}",
        env!("CARGO_BIN_EXE_snp-certs"),
        s(&empty),
        s(&certs),
        s(&d.join("probe"))
    );
    let chipx = hex(&chip);
    let cache = d.join("cache");
    let t = Instant::now();
    let o = tbin([
        "hold",
        "--timeout",
        "5",
        "--refresh",
        "--kds-url",
        &kds.url,
        "--cache-dir",
        s(&cache),
        "--product",
        "milan",
        "--chip-id",
        &chipx,
        "--tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        s(&certs),
        "--",
        "sh",
        "-c",
        &probe,
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "deadlock? {:?}",
        t.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(d.join("probe")).unwrap().trim(),
        "1",
        "lock not held during CMD"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("hold: installed the VCEK for Milan"),
        "{}",
        out(&o)
    );
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
    // After hold the lock is free again.
    let o2 = tbin(["install", "--timeout", "2", s(&empty), s(&certs)])
        .output()
        .unwrap();
    assert_eq!(o2.status.code(), Some(0), "{}", out(&o2));

    // A failing command: no refresh, no request, its status.
    let n = kds.requests().len();
    let o = tbin([
        "hold",
        "--refresh",
        "--kds-url",
        &kds.url,
        "--no-cache",
        "--product",
        "milan",
        "--chip-id",
        &chipx,
        "--tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        s(&certs),
        "--",
        "sh",
        "-c",
        "exit 3",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", out(&o));
    assert_eq!(kds.requests().len(), n);
    assert_eq!(std::fs::read(&certs).unwrap(), [0u8; 24]);

    // KDS refusing after the command: exit 75 (withdrawn); the empty table
    // stays the empty table.
    let o = tbin([
        "hold",
        "--refresh",
        "--kds-url",
        &kds.url,
        "--no-cache",
        "--product",
        "milan",
        "--chip-id",
        &chipx,
        "--tcb",
        "bl=3,tee=0,snp=9,ucode=115",
        s(&certs),
        "--",
        "true",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("refresh after the command failed"),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::read(&certs).unwrap(), [0u8; 24]);

    // refresh inside hold of the same file: refused with a hint, no deadlock.
    let inner = format!(
        "{} refresh --kds-url {} --no-cache --product milan --chip-id {chipx} --tcb bl=3,tee=0,snp=8,ucode=115 {}",
        env!("CARGO_BIN_EXE_snp-certs"),
        kds.url,
        s(&certs)
    );
    let o = tbin(["hold", s(&certs), "--", "sh", "-c", &inner])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("hold --refresh"),
        "{}",
        out(&o)
    );
}

/// Issue 22: a KDS (or a stand-in, or an attacker on the path) serving a
/// chain anyone can make with openssl: refresh and hold --refresh refuse it
/// unless its root is given with --trust-anchor.
#[test]
fn a_self_made_chain_is_refused_without_its_trust_anchor() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let d = tmpdir("noanchor");
    let certs = d.join("certs.bin");
    let o = refresh_with(&kds, &d, &explicit_milan(&[], s(&certs)), false);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("ARK: a trust anchor"), "{}", out(&o));
    assert!(!certs.exists());
    let chipx = hex(&chip);
    let o = bin()
        .args([
            "hold",
            "--refresh",
            "--kds-url",
            &kds.url,
            "--no-cache",
            "--product",
            "milan",
            "--chip-id",
            &chipx,
            "--tcb",
            "bl=3,tee=0,snp=8,ucode=115",
            s(&certs),
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", out(&o));
    assert!(out(&o).contains("ARK: a trust anchor"), "{}", out(&o));
    assert!(!certs.exists());
    let o = refresh_with(&kds, &d, &explicit_milan(&[], s(&certs)), true);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
}

/// Issue 22: `hold --refresh -- <firmware update>` with KDS unreachable
/// used to exit 1 (like a failed command) with the previous TCB's VCEK still
/// installed. Now the VCEK is withdrawn under the same lock (ARK and ASK
/// stay) and hold exits 75.
#[test]
fn hold_refresh_failure_withdraws_the_old_vcek() {
    let chip = milan_chip();
    let chipx = hex(&chip);
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let d = tmpdir("withdraw");
    let certs = d.join("certs.bin");
    let kds = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
    // A port nobody listens on: KDS unreachable.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let o = tbin([
        "hold",
        "--refresh",
        "--kds-url",
        &url,
        "--no-cache",
        "--max-wait",
        "0",
        "--product",
        "milan",
        "--chip-id",
        &chipx,
        "--tcb",
        "bl=3,tee=0,snp=9,ucode=115",
        s(&certs),
        "--",
        "true",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", out(&o));
    assert!(out(&o).contains("withdrew the VCEK"), "{}", out(&o));
    let blob = std::fs::read(&certs).unwrap();
    let t = table::parse(&blob).unwrap();
    let kinds: Vec<CertKind> = t.entries().iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, [CertKind::Ark, CertKind::Ask]);
    assert_eq!(t.find(CertKind::Ark).unwrap(), ca().der("ark.pem"));
    assert_eq!(t.find(CertKind::Ask).unwrap(), ca().der("ask.pem"));
    // The lock is free again, and a later refresh serves the VCEK again.
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
    // A command that fails keeps its own status and nothing is withdrawn.
    let o = tbin([
        "hold",
        "--refresh",
        "--kds-url",
        &url,
        "--no-cache",
        "--product",
        "milan",
        "--chip-id",
        &chipx,
        "--tcb",
        "bl=3,tee=0,snp=9,ucode=115",
        s(&certs),
        "--",
        "sh",
        "-c",
        "exit 1",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
}

/// Issue 22: an older refresh that finishes last must not downgrade the
/// blob: a VCEK for a newer TCB stays unless --force.
#[test]
fn refresh_never_installs_an_older_tcb_without_force() {
    let chip = milan_chip();
    let newer = (3, 0, 9, 115, None);
    let v8 = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let v9 = ca().vcek("Milan-B0", &chip, newer);
    let p9 = format!(
        "/vcek/v1/Milan/{}?blSPL=03&teeSPL=00&snpSPL=09&ucodeSPL=115",
        hex(&chip)
    );
    let kds = good_kds(vec![(milan_vcek_path(), v8.clone()), (p9, v9.clone())]);
    let d = tmpdir("older");
    let certs = d.join("certs.bin");
    let chipx = hex(&chip);
    let at = |tcb: &'static str, extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|x| x.to_string()).collect();
        a.extend(
            [
                "--product",
                "milan",
                "--chip-id",
                &chipx,
                "--tcb",
                tcb,
                s(&certs),
            ]
            .iter()
            .map(|x| x.to_string()),
        );
        a
    };
    let run = |args: Vec<String>| {
        let v: Vec<&str> = args.iter().map(String::as_str).collect();
        refresh(&kds, &d, &v)
    };
    let o = run(at("bl=3,tee=0,snp=9,ucode=115", &[]));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), v9);
    let o = run(at("bl=3,tee=0,snp=8,ucode=115", &[]));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("newer TCB"), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), v9);
    let o = run(at("bl=3,tee=0,snp=8,ucode=115", &["--force"]));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), v8);
}

#[test]
fn crl_is_fetched_checked_and_served() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let none = std::fs::read(ca().dir.join("crl-none.der")).unwrap();
    let revoked = std::fs::read(ca().dir.join("crl-ask.der")).unwrap();
    let start = |crl: Vec<u8>| {
        let (chain, v, vp) = (ca().cert_chain(), vcek.clone(), milan_vcek_path());
        Kds::start(move |p, _| {
            if p.ends_with("/cert_chain") {
                Reply::Ok(chain.clone())
            } else if p.ends_with("/crl") {
                Reply::Ok(crl.clone())
            } else if p == vp {
                Reply::Ok(v.clone())
            } else {
                Reply::Status(404)
            }
        })
    };
    let d = tmpdir("crl");
    let certs = d.join("certs.bin");
    // Without --crl first: no CRL requested or served.
    let kds = start(none.clone());
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(!kds.requests().iter().any(|p| p.ends_with("/crl")));
    assert!(table::parse(&std::fs::read(&certs).unwrap())
        .unwrap()
        .find(CertKind::Crl)
        .is_none());
    // With --crl: that blob is not up to date; the CRL is fetched and served.
    let o = refresh(&kds, &d, &explicit_milan(&["--crl"], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(kds.requests().contains(&"/vcek/v1/Milan/crl".to_string()));
    let blob = std::fs::read(&certs).unwrap();
    let t = table::parse(&blob).unwrap();
    let kinds: Vec<CertKind> = t.entries().iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [CertKind::Ark, CertKind::Ask, CertKind::Vcek, CertKind::Crl]
    );
    assert_eq!(t.find(CertKind::Crl).unwrap(), none);
    // Up to date now: no request.
    let n = kds.requests().len();
    let o = refresh(&kds, &d, &explicit_milan(&["--crl"], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("up to date"),
        "{}",
        out(&o)
    );
    assert_eq!(kds.requests().len(), n);

    // A CRL that revokes the ASK: refused, blob unchanged.
    let kds = start(revoked.clone());
    let old = preinstall(&certs);
    let o = refresh(&kds, &d, &explicit_milan(&["--crl"], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        e.contains("ASK") && e.contains("serial 02 is revoked"),
        "{e}"
    );
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    // The ARK's CRL revoking serial 0 (an ARK-issued certificate) does not
    // revoke the VCEK that has serial 0 too: the VCEK is the ASK's.
    let kds = start(std::fs::read(ca().dir.join("crl-serial0.der")).unwrap());
    let o = refresh(&kds, &d, &explicit_milan(&["--crl"], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(
        vcek_of(&std::fs::read(&certs).unwrap()),
        vcek,
        "the VCEK must be served"
    );
    // And `verify` applies the served CRL: the same blob with the CRL that
    // revokes the ASK does not verify.
    let blob = std::fs::read(&certs).unwrap();
    let t = table::parse(&blob).unwrap();
    let with_revoking = table::Builder::new()
        .add_kind(CertKind::Ark, t.find(CertKind::Ark).unwrap().to_vec())
        .add_kind(CertKind::Ask, t.find(CertKind::Ask).unwrap().to_vec())
        .add_kind(CertKind::Vcek, t.find(CertKind::Vcek).unwrap().to_vec())
        .add_kind(CertKind::Crl, revoked.clone())
        .build()
        .unwrap();
    let rb = d.join("revoked.blob");
    std::fs::write(&rb, &with_revoking).unwrap();
    let o = tbin(["verify", s(&rb)]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("serial 02 is revoked"), "{}", out(&o));
    let o = tbin(["verify", s(&certs)]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));

    // Not a CRL signed by the ARK (here: the ASK certificate): refused.
    let old = preinstall(&certs);
    let kds = start(ca().der("ask.pem"));
    let o = refresh(&kds, &d, &explicit_milan(&["--crl"], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a DER certificate revocation list"),
        "{}",
        out(&o)
    );
    assert_eq!(std::fs::read(&certs).unwrap(), old);
}

fn amd_file(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/amd")
            .join(name),
    )
    .unwrap()
}

/// AMD's real Milan and Turin certificates (tests/data/amd, from virtee/sev)
/// served by the stand-in at the URLs KDS serves them: the reports name the
/// chips and TCBs those VCEKs were issued for (values read with `openssl
/// asn1parse`, as in tests/verify.rs), and refresh must ask for exactly
/// those URLs and accept exactly those certificates.
#[test]
fn amd_real_milan_and_turin_vceks() {
    let milan_hwid = "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc\
                      15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6";
    let turin_hwid = "1e550a8ee5cf9f4d";
    let milan_url =
        format!("/vcek/v1/Milan/{milan_hwid}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115");
    let turin_url =
        format!("/vcek/v1/Turin/{turin_hwid}?fmcSPL=00&blSPL=00&teeSPL=00&snpSPL=00&ucodeSPL=09");
    let mut milan_chain = amd_file("milan-ask.pem");
    milan_chain.extend(amd_file("milan-ark.pem"));
    let mut turin_chain = amd_file("turin-ask.pem");
    turin_chain.extend(amd_file("turin-ark.pem"));
    let (mu, tu) = (milan_url.clone(), turin_url.clone());
    let kds = Kds::start(move |p, _| match p {
        "/vcek/v1/Milan/cert_chain" => Reply::Ok(milan_chain.clone()),
        "/vcek/v1/Turin/cert_chain" => Reply::Ok(turin_chain.clone()),
        p if p == mu => Reply::Ok(amd_file("vcek-milan.der")),
        p if p == tu => Reply::Ok(amd_file("vcek-turin.der")),
        _ => Reply::Status(404),
    });
    let unhex = |h: &str| -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    };
    let d = tmpdir("amd");
    // Milan: version 3 report, family 19h model 01h.
    let rep = d.join("milan.bin");
    std::fs::write(
        &rep,
        report(
            3,
            0,
            milan_tcb_bytes((3, 0, 8, 115, None)),
            (0x19, 0x01),
            &unhex(milan_hwid),
        ),
    )
    .unwrap();
    let certs = d.join("milan.blob");
    let o = refresh_with(
        &kds,
        &d,
        &["--from-report", s(&rep), "--no-cache", s(&certs)],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(
        vcek_of(&std::fs::read(&certs).unwrap()),
        amd_file("vcek-milan.der")
    );
    // Turin: family 1Ah model 02h, TCB bytes [fmc, bl, tee, snp, 0, 0, 0, ucode].
    let rep = d.join("turin.bin");
    std::fs::write(
        &rep,
        report(
            3,
            0,
            [0, 0, 0, 0, 0, 0, 0, 9],
            (0x1A, 0x02),
            &unhex(turin_hwid),
        ),
    )
    .unwrap();
    let certs = d.join("turin.blob");
    let o = refresh_with(
        &kds,
        &d,
        &["--from-report", s(&rep), "--no-cache", s(&certs)],
        false,
    );
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(
        vcek_of(&std::fs::read(&certs).unwrap()),
        amd_file("vcek-turin.der")
    );
    assert_eq!(
        kds.requests(),
        [
            "/vcek/v1/Milan/cert_chain".to_string(),
            milan_url,
            "/vcek/v1/Turin/cert_chain".to_string(),
            turin_url
        ]
    );
    // Milan's VCEK asked for as Genoa's: KDS would not have it; a stand-in
    // that serves it anyway is refused (Genoa's chain does not sign it).
    let mut genoa_chain = amd_file("genoa-ask.pem");
    genoa_chain.extend(amd_file("genoa-ark.pem"));
    let kds = Kds::start(move |p, _| {
        if p.ends_with("/cert_chain") {
            Reply::Ok(genoa_chain.clone())
        } else {
            Reply::Ok(amd_file("vcek-milan.der"))
        }
    });
    let certs = d.join("genoa.blob");
    let o = refresh_with(
        &kds,
        &d,
        &[
            "--product",
            "genoa",
            "--chip-id",
            milan_hwid,
            "--tcb",
            "bl=3,tee=0,snp=8,ucode=115",
            "--no-cache",
            s(&certs),
        ],
        false,
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        e.contains("VCEK: signed by the ASK") && e.contains("VCEK product is Milan-B0, not Genoa"),
        "{e}"
    );
    assert!(!certs.exists());
}

#[test]
fn through_an_http_proxy() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let chain = ca().cert_chain();
    let vp = milan_vcek_path();
    // The stand-in as the proxy: requests arrive in absolute form (RFC 9112
    // 3.2.2) naming KDS's host, which is never resolved.
    let proxy = Kds::start(move |p, _| match p.strip_prefix("http://kds.test") {
        Some("/vcek/v1/Milan/cert_chain") => Reply::Ok(chain.clone()),
        Some(path) if path == vp => Reply::Ok(vcek.clone()),
        _ => Reply::Status(400),
    });
    let d = tmpdir("proxy");
    let certs = d.join("certs.bin");
    let mut args = vec![
        "refresh",
        "--kds-url",
        "http://kds.test",
        "--proxy",
        &proxy.url,
    ];
    args.extend(explicit_milan(&[], s(&certs)));
    let o = tbin(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(
        proxy.requests(),
        [
            "http://kds.test/vcek/v1/Milan/cert_chain".to_string(),
            format!("http://kds.test{}", milan_vcek_path())
        ]
    );
    // Issue 22: the proxy environment variables were ignored. Now
    // http_proxy is used, and NO_PROXY naming the host turns it off.
    let certs2 = d.join("certs2.bin");
    let mut args = vec![
        "refresh",
        "--kds-url",
        "http://kds.test",
        "--retry-delay",
        "0.01",
    ];
    args.extend(explicit_milan(&[], s(&certs2)));
    let o = tbin(&args)
        .env("http_proxy", &proxy.url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(proxy.requests().len(), 4);
    let o = tbin(&args)
        .env("http_proxy", &proxy.url)
        .env("NO_PROXY", "example.org,.test")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "up to date: {}", out(&o));
    std::fs::remove_file(&certs2).unwrap();
    let o = tbin(&args)
        .env("http_proxy", &proxy.url)
        .env("NO_PROXY", "example.org,.test")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "kds.test is not resolved without the proxy: {}",
        out(&o)
    );
    assert_eq!(proxy.requests().len(), 4);
}

/// Issue 22: redirects were followed to other hosts and from https to http.
/// Only same-origin redirects are followed now.
#[test]
fn redirects_are_followed_on_the_same_origin_only() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let other = good_kds(vec![(milan_vcek_path(), vcek.clone())]);
    let other_url = other.url.clone();
    let vp = milan_vcek_path();
    let chain = ca().cert_chain();
    let (v2, c2) = (vcek.clone(), chain.clone());
    // Redirects the VCEK elsewhere (another port: another origin).
    let kds = Kds::start(move |p, _| {
        if p.ends_with("/cert_chain") {
            Reply::Ok(c2.clone())
        } else if p == vp {
            Reply::Redirect(format!("{other_url}{p}"))
        } else {
            Reply::Status(404)
        }
    });
    let d = tmpdir("redirect");
    let certs = d.join("certs.bin");
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(out(&o).contains("redirect refused"), "{}", out(&o));
    assert!(
        other.requests().is_empty(),
        "followed: {:?}",
        other.requests()
    );
    assert!(!certs.exists());
    // Same origin: followed.
    let vp = milan_vcek_path();
    let kds = Kds::start(move |p, _| {
        if p.ends_with("/cert_chain") {
            Reply::Ok(chain.clone())
        } else if p == vp {
            Reply::Redirect("/moved/vcek.der".into())
        } else if p == "/moved/vcek.der" {
            Reply::Ok(v2.clone())
        } else {
            Reply::Status(404)
        }
    });
    let o = refresh(&kds, &d, &explicit_milan(&[], s(&certs)));
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), vcek);
}

/// `--total-timeout` bounds all requests and waits together, whatever
/// `--http-timeout` and `--max-wait` allow: `hold --refresh` holds the lock
/// meanwhile (30 s by default there).
#[test]
fn total_timeout_bounds_the_fetch_and_the_lock_window() {
    let chain = ca().cert_chain();
    let vcek = ca().vcek("Milan-B0", &milan_chip(), MILAN_TCB);
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Ok(chain.clone())
        } else {
            Reply::Slow(Duration::from_secs(6), vcek.clone())
        }
    });
    let d = tmpdir("total");
    let certs = d.join("certs.bin");
    let old = preinstall(&certs);
    let t = Instant::now();
    let o = refresh(
        &kds,
        &d,
        &explicit_milan(
            &["--total-timeout", "1.5", "--http-timeout", "30"],
            s(&certs),
        ),
    );
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("time budget"), "{e}");
    assert_eq!(std::fs::read(&certs).unwrap(), old);

    let chipx = hex(&milan_chip());
    let t = Instant::now();
    let o = tbin([
        "hold",
        "--refresh",
        "--total-timeout",
        "1",
        "--kds-url",
        &kds.url,
        "--no-cache",
        "--product",
        "milan",
        "--chip-id",
        &chipx,
        "--tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        s(&certs),
        "--",
        "true",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", out(&o));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(
        std::fs::read(&certs).unwrap(),
        old,
        "the empty table withdrawn to itself"
    );
    // The lock is free again at once.
    let empty = d.join("empty.bin");
    std::fs::write(&empty, [0u8; 24]).unwrap();
    let o = tbin(["install", "--timeout", "0", s(&empty), s(&certs)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
}

/// https:// goes through TLS (rustls, webpki roots): a server that answers a
/// ClientHello with plain HTTP is a TLS failure, reported as such, retried,
/// and nothing is installed. (The real KDS over TLS is not reachable here.)
#[test]
fn https_is_tls() {
    let kds = Kds::start(|_, _| Reply::Status(200));
    let port = kds.url.rsplit(':').next().unwrap().to_string();
    let d = tmpdir("tls");
    let certs = d.join("certs.bin");
    let url = format!("https://127.0.0.1:{port}");
    let mut args = vec!["refresh", "--kds-url", &url, "--retry-delay", "0.01"];
    args.extend(explicit_milan(&[], s(&certs)));
    let o = tbin(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("cannot reach KDS at https://127.0.0.1"), "{e}");
    assert!(
        e.to_lowercase().contains("tls") || e.contains("corrupt"),
        "{e}"
    );
    assert!(!certs.exists());
}

/// Issue 22: only the built-in web roots were trusted. A KDS behind a
/// private CA (here: a TLS stand-in with a certificate made by openssl)
/// is reached with --ca-file, and refused without it.
#[test]
fn https_with_a_private_ca_needs_ca_file() {
    use std::sync::Arc;
    let d = tmpdir("cafile");
    // A CA and a server certificate for 127.0.0.1 it signs.
    ec_key(&d, "ca", "P-256");
    openssl(
        &d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=test CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-out",
            "ca.pem",
        ],
    );
    ec_key(&d, "srv", "P-256");
    std::fs::write(
        d.join("srv.cnf"),
        "[srv]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    issue(
        &d,
        "srv",
        "/CN=127.0.0.1",
        "ca",
        "5",
        ("srv.cnf", "srv"),
        &["-sha256"],
    );
    openssl(
        &d,
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "srv.key", "-outform", "DER", "-out", "srv.p8",
        ],
    );
    let cert = snp_certs::pem::to_der(&std::fs::read(d.join("srv.pem")).unwrap()).unwrap();
    let key = std::fs::read(d.join("srv.p8")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.into()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let chain = ca().cert_chain();
    let vp = milan_vcek_path();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let (config, chain, vcek, vp) =
                (config.clone(), chain.clone(), vcek.clone(), vp.clone());
            std::thread::spawn(move || {
                let Ok(sc) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(sc, conn);
                let mut r = BufReader::new(&mut tls);
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return; // the client refused our certificate
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let body = if path.ends_with("/cert_chain") {
                    chain
                } else if path == vp {
                    vcek
                } else {
                    Vec::new()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(&body);
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    let certs = d.join("certs.bin");
    let url = format!("https://127.0.0.1:{port}");
    let mut args = vec![
        "refresh",
        "--kds-url",
        &url,
        "--retry-delay",
        "0.01",
        "--max-wait",
        "0",
    ];
    args.extend(explicit_milan(&[], s(&certs)));
    let o = tbin(&args).env_remove("SSL_CERT_FILE").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).to_lowercase().contains("certificate"),
        "{}",
        out(&o)
    );
    assert!(!certs.exists());
    let ca_pem = d.join("ca.pem");
    args.extend(["--ca-file", s(&ca_pem)]);
    let o = tbin(&args).env_remove("SSL_CERT_FILE").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(certs.exists());
}

/// A URL that cannot be parsed is not retried.
#[test]
fn a_bad_kds_url_fails_at_once() {
    let d = tmpdir("badurl");
    let certs = d.join("certs.bin");
    let mut args = vec!["refresh", "--kds-url", "http://[::1"];
    args.extend(explicit_milan(&[], s(&certs)));
    test_anchor(); // the test chain is made before the clock starts
    let t = Instant::now();
    let o = tbin(&args).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(e.contains("Bad URL") && !e.contains("retrying"), "{e}");
}

/// Two refreshes of one path at once (e.g. a timer and an operator): both
/// succeed, exactly one installs, the other finds the blob up to date (before
/// fetching, or under the lock after fetching).
#[test]
fn concurrent_refreshes_install_once() {
    let chip = milan_chip();
    let vcek = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let chain = ca().cert_chain();
    let vp = milan_vcek_path();
    // Slow enough that both are usually fetching at the same time.
    let kds = Kds::start(move |p, _| {
        if p.ends_with("cert_chain") {
            Reply::Slow(Duration::from_millis(300), chain.clone())
        } else if p == vp {
            Reply::Slow(Duration::from_millis(300), vcek.clone())
        } else {
            Reply::Status(404)
        }
    });
    let d = tmpdir("concurrent");
    let certs = d.join("certs.bin");
    for round in 0..3 {
        preinstall(&certs);
        let spawn = || {
            let mut args = vec!["refresh", "--kds-url", kds.url.as_str()];
            args.extend(explicit_milan(&[], s(&certs)));
            tbin(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert_eq!(a.status.code(), Some(0), "{}", out(&a));
        assert_eq!(b.status.code(), Some(0), "{}", out(&b));
        let installed = [&a, &b]
            .iter()
            .filter(|o| String::from_utf8_lossy(&o.stdout).starts_with("installed"))
            .count();
        assert_eq!(installed, 1, "round {round}:\n{}\n{}", out(&a), out(&b));
        let blob = std::fs::read(&certs).unwrap();
        assert_eq!(
            tbin(["verify", s(&certs)]).output().unwrap().status.code(),
            Some(0)
        );
        assert_eq!(table::parse(&blob).unwrap().entries().len(), 3);
    }
}

/// Issue 22: refresh read the target before the fetch and took the lock
/// after it, so a TCB change meanwhile (a `hold` running a firmware update)
/// left the old TCB's VCEK installed. `fetch_and_install` asks for the
/// target again under the lock (what the CLI does for /dev/sev targets) and
/// fetches again if it moved.
#[test]
fn the_target_is_read_again_under_the_lock() {
    use snp_certs::refresh::{fetch_and_install, Outcome, Target};
    use snp_certs::report::{Product, TcbVersion};
    let chip = milan_chip();
    let v8 = ca().vcek("Milan-B0", &chip, MILAN_TCB);
    let v9 = ca().vcek("Milan-B0", &chip, (3, 0, 9, 115, None));
    let p9 = format!(
        "/vcek/v1/Milan/{}?blSPL=03&teeSPL=00&snpSPL=09&ucodeSPL=115",
        hex(&chip)
    );
    let kds = good_kds(vec![(milan_vcek_path(), v8), (p9.clone(), v9.clone())]);
    let tcb = |snp| TcbVersion {
        bootloader: 3,
        tee: 0,
        snp,
        microcode: 115,
        fmc: None,
    };
    let target = |snp| {
        let mut t = Target::new(Product::Milan, &chip, tcb(snp)).unwrap();
        t.anchors
            .add_cert(&std::fs::read(test_anchor()).unwrap(), "test ARK")
            .unwrap();
        t
    };
    let d = tmpdir("retarget");
    let certs = d.join("certs.bin");
    let policy = snp_certs::kds::RetryPolicy {
        base_delay: Duration::from_millis(10),
        ..Default::default()
    };
    let mut client = snp_certs::kds::Kds::new(&kds.url, policy, None, None).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    // The firmware moved to snp=9 while the snp=8 VCEK was being fetched.
    let done = fetch_and_install(
        &certs,
        Some(Duration::from_secs(5)),
        &mut client,
        target(8),
        now,
        Default::default(),
        || Some(Ok(target(9))),
    )
    .unwrap();
    assert_eq!(done.outcome, Outcome::Installed);
    assert_eq!(done.target.tcb, tcb(9));
    assert_eq!(vcek_of(&std::fs::read(&certs).unwrap()), v9);
    assert!(kds.requests().contains(&p9));
}
