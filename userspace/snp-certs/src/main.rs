//! `snp-certs`: build, inspect and install SEV-SNP certificate blobs, and hold the
//! certificate lock around firmware updates.

#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects,
    clippy::cast_possible_truncation,
    clippy::undocumented_unsafe_blocks
)]

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::libc;
use snp_certs::pem;
use snp_certs::store::{self, LockKind, StoreError};
use snp_certs::table::{self, Builder, CertKind};
use snp_certs::verify;

/// Environment variable `hold` sets for its command: the held path.
const HOLD_ENV: &str = "SNP_CERTS_HOLD";
/// Environment variable `hold` sets for its command: the descriptor, which
/// the command inherits, whose open file description holds the lock.
const HOLD_FD_ENV: &str = "SNP_CERTS_HOLD_FD";
/// Largest input file read (certificates, blobs).
const MAX_INPUT: u64 = 1 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
snp-certs: SEV-SNP certificate blobs for KVM_EXIT_VMGEXIT (REQ_CERTS)

Usage:
  snp-certs build [--ark F --ask F] (--vcek F | --vlek F) [--crl F] [--dir DIR]
                  [--entry GUID=FILE]... [--allow-oversize] [--no-verify] -o BLOB
  snp-certs inspect [--json] BLOB
  snp-certs verify [--at TIME] [--trust-anchor FILE]... [--report REPORT] BLOB
  snp-certs export BLOB DIR
  snp-certs install [--timeout SECS] [--in-place] [--no-verify] [--mode M] [--group G] BLOB PATH
  snp-certs hold [--timeout SECS] [--install BLOB [--no-verify]] PATH -- CMD [ARGS...]
  snp-certs refresh [SOURCE] [KDS OPTIONS] [--timeout SECS] PATH
  snp-certs hold [--timeout SECS] --refresh [SOURCE] [KDS OPTIONS] PATH -- CMD [ARGS...]
  snp-certs help [COMMAND]

Every command takes --help. Exit status 0 on success, 1 on failure, 2 on a
usage error; `hold` exits with the status of CMD.
";

const BUILD_HELP: &str = "\
snp-certs build [--ark F --ask F] (--vcek F | --vlek F) [--crl F] [--dir DIR]
                [--entry GUID=FILE]... [--allow-oversize] [--no-verify] -o BLOB

Builds a GHCB certificate table and writes it to BLOB: entries ARK, ASK,
VCEK or VLEK, CRL, then the --entry ones in the order given. Certificates are
DER files or PEM files with CERTIFICATE blocks (decoded to DER); a CRL is DER
or an X509 CRL PEM block. Private keys and other PEM blocks are refused, and
one certificate may not fill two entries.

--dir DIR reads a directory as snphost `fetch ca`/`fetch vcek`/`export` and
AMD's KDS leave it: ark, ask or asvk (the VLEK chain's ASK), vcek, vlek, each
with .pem, .der, .crt, .cer or no extension; cert_chain[.pem] (from KDS: the
ASK or ASVK, then the ARK, in one PEM file); crl or NAME.crl (snphost `fetch
crl`: e.g. Milan.crl). Any other file (dot-files aside) is an error, so a
misspelt name cannot leave a certificate out. --dir combines with the other
options; a role given twice is an error.

The ARK and ASK come together or not at all: without them the blob holds only
the VCEK or VLEK (the guest fetches the rest from AMD). --entry GUID=FILE adds
an entry of another type (FILE must be a certificate too; the five known GUIDs
have their own options). Tables over 16 KiB, which a Linux guest cannot
receive, are refused unless --allow-oversize is given. BLOB is written
directly (use `install` to replace a certificate file that a VMM is serving).

The chain is verified as `verify` does, and a table whose chain does not
verify is refused (nothing written) unless --no-verify is given. A blob
without the ARK and ASK (VCEK or VLEK only) cannot verify, so it needs
--no-verify: a guest must then fetch the rest itself.
";

const INSPECT_HELP: &str = "\
snp-certs inspect [--json] BLOB

Validates BLOB as a certificate table and lists each entry (index, type, GUID,
offset, length), then the size and the number of 4 KiB guest pages it needs.
Exits 0 for a valid table (the empty 24-byte table included), 1 with a
one-line reason on stderr otherwise.

--json prints one JSON object instead: {\"file\", \"size\", \"pages\",
\"over_linux_guest_max\", \"entries\": [{\"index\", \"type\" (ARK, ASK, VCEK,
VLEK, CRL or OTHER), \"guid\", \"offset\", \"length\", \"mixed_endian_of\" (the
type whose GUID this is in EFI byte order, or null)}]}. A file name that is
not UTF-8 is shown with U+FFFD in place of the bad bytes.
";

const VERIFY_HELP: &str = "\
snp-certs verify [--at TIME] [--trust-anchor FILE]... [--report REPORT] BLOB

Checks the X.509 chain in the certificate table BLOB: the ARK is self-signed,
the ASK (or, for a VLEK, the ASVK, which sits in the ASK entry) is signed by
the ARK, the VCEK or VLEK holds an ECDSA P-384 key and is signed by the
ASK/ASVK; every signature is RSASSA-PSS with SHA-384, MGF1-SHA-384 and a
48-byte salt, as AMD signs; every certificate is valid now (or at TIME:
YYYY-MM-DDTHH:MM:SSZ, or @SECONDS since the epoch). Prints each certificate's
subject, issuer, serial, validity and checks, and for the VCEK/VLEK the TCB
(bootloader, tee, snp, microcode; fmc on Turin) and hwID from AMD's
extensions. A blob without an ARK or an ASK (e.g. VCEK only) does not verify.
The ARK must be AMD's Milan, Genoa or Turin ARK (built in) or a root given
with --trust-anchor FILE (PEM or DER); with AMD's, the VCEK's product must be
that ARK's. ARK and ASK must say CA (basicConstraints) and keyCertSign
(keyUsage) and hold RSA-4096 keys; an unknown critical extension fails. A CRL
entry must be signed by the ARK and must not revoke the ASK. The last line
names the anchor the chain ends in.
--report REPORT also checks an attestation report (1184 bytes, as snpguest
writes it): its ECDSA P-384 signature with the table's VCEK (or VLEK), and
that its CHIP_ID is the VCEK's hwID.
Exits 0 when the chain (and report) verifies, 1 when not (or BLOB is not a
valid table), 2 on a usage error.
";

const EXPORT_HELP: &str = "\
snp-certs export BLOB DIR

Writes each certificate of the table BLOB to DIR as DER, named as snphost
`export` and `build --dir` name them: ark.der, ask.der (asvk.der when the
table holds a VLEK), vcek.der or vlek.der, crl.der, and GUID.der for other
entries. DIR is created if missing; existing files are not overwritten
(exit 1), and no symbolic link is followed.
";

const INSTALL_HELP: &str = "\
snp-certs install [--timeout SECS] [--in-place] [--no-verify] [--mode M] [--group G] BLOB PATH

Validates BLOB and verifies its chain as `verify` does (a chain that does not
verify is refused unless --no-verify is given; the empty table, which serves
no certificates, needs no chain), then replaces PATH atomically: takes the exclusive OFD lock on
the file PATH names (waiting at most SECS, default 30; 0 = do not wait),
writes a temporary file next to it, fsyncs it, locks it too, renames it over
PATH, fsyncs the directory and releases both locks. Readers (VMMs) see either
the old or the new blob, never a mix. Fails inside `snp-certs hold PATH`
(that already holds the lock; use `hold --install`).

--in-place: for VMMs that lock the path but do not re-check its inode after
locking (or keep the file open): takes the exclusive lock on the existing
file and rewrites it in place (write, truncate, fsync) before unlocking; the
inode stays the same. Locking readers still see the old or the new blob; a
reader that takes no lock can see a torn file meanwhile, and a crash during
the rewrite can leave one. PATH must exist.

--mode OCTAL, --group NAME|GID: the blob file's permission bits and group.
Default: those of the file replaced; a first install gets mode 0640 (never
the umask's) and the caller's group. Give the VMMs' group (e.g. --group kvm)
and nothing to others: whoever can read the blob can take a shared lock on
it and stall every update. Temporaries are created 0600. A symbolic link at
PATH is refused (updaters never follow one): give the path it points to.
Also on `hold` and `refresh`. --trust-anchor FILE (also on build, verify,
hold, refresh) trusts another root besides AMD's built-in ARKs.
";

const HOLD_HELP: &str = "\
snp-certs hold [--timeout SECS] [--install BLOB [--no-verify]] PATH -- CMD [ARGS...]
snp-certs hold [--timeout SECS] --refresh [SOURCE] [KDS OPTIONS] PATH -- CMD [ARGS...]

Takes the exclusive OFD lock on the certificate file PATH (waiting at most SECS,
default 30) and runs CMD while holding it, e.g. a firmware update (SNP_COMMIT,
SNP_SET_CONFIG, SNP_VLEK_LOAD), so no VMM serves certificates out of step with
firmware. With --install BLOB (validated before CMD runs), BLOB replaces PATH
after CMD succeeds, before the lock is released; its chain is verified before
CMD runs, as for `install`. Exits with CMD's status
(128+N if CMD was killed by signal N, 127 if it could not be started).
CMD gets SNP_CERTS_HOLD=PATH in its environment. SIGTERM, SIGINT and SIGHUP
sent to hold are passed on to CMD; hold keeps the lock until CMD has ended.
CMD inherits the locked descriptor (its number in SNP_CERTS_HOLD_FD), so the
lock outlives a SIGKILLed hold for as long as CMD (or anything that inherited
the descriptor from it) runs; CMD must not close it early.

With --refresh (and the SOURCE and KDS options of `refresh`), after CMD
succeeds hold refreshes the VCEK as `refresh` does, still under the same lock
(the TCB is read after CMD, so /dev/sev gives the new one). If the refresh
fails after CMD succeeded, the installed VCEK may be for the old TCB: hold
withdraws it under the same lock (PATH then serves its ARK and ASK only, or
the empty table if it had no ARK and ASK) and exits 75; if even that fails
it exits 76 (PATH may still serve the old VCEK). A blob serving a VLEK is
never touched (exit 1). VMMs get BUSY for the whole
window, fetch included, and a Linux guest gives up after 60 s of BUSY: so
all of KDS's requests and waits are bounded by --total-timeout, 30 s by
default here (the cache avoids the fetch when the VCEK was fetched before,
e.g. by a `refresh --product --chip-id --tcb` for the new TCB ahead of the
update).
";

#[derive(Debug)]
enum Fail {
    /// Usage error: message, exit 2.
    Usage(String),
    /// Runtime failure: message, exit 1.
    Run(String),
    /// Exit with this status, no message (hold propagating CMD's status).
    Status(u8),
}

fn usage<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Usage(msg.into()))
}

fn run_err<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Run(msg.into()))
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(m)) => {
            let _ = writeln!(std::io::stderr(), "snp-certs: {m}\n(see snp-certs --help)");
            ExitCode::from(2)
        }
        Err(Fail::Run(m)) => {
            let _ = writeln!(std::io::stderr(), "snp-certs: {m}");
            ExitCode::from(1)
        }
        Err(Fail::Status(s)) => ExitCode::from(s),
    }
}

fn print(s: &str) -> Result<(), Fail> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| Fail::Run(format!("writing output: {e}")))
}

fn is_help(a: &OsStr) -> bool {
    a == "--help" || a == "-h"
}

fn dispatch(args: &[OsString]) -> Result<(), Fail> {
    let Some((cmd, rest)) = args.split_first() else {
        return usage("no command given");
    };
    let cmd = cmd.to_str().unwrap_or("");
    match cmd {
        "-h" | "--help" | "help" => {
            let page = match rest.first().and_then(|a| a.to_str()) {
                Some("build") => BUILD_HELP,
                Some("inspect") => INSPECT_HELP,
                Some("verify") => VERIFY_HELP,
                Some("install") => INSTALL_HELP,
                Some("hold") => HOLD_HELP,
                Some("refresh") => REFRESH_HELP,
                Some("export") => EXPORT_HELP,
                _ => USAGE,
            };
            print(page)
        }
        "-V" | "--version" => print(concat!("snp-certs ", env!("CARGO_PKG_VERSION"), "\n")),
        "build" => cmd_build(rest),
        "inspect" => cmd_inspect(rest),
        "verify" => cmd_verify(rest),
        "install" => cmd_install(rest),
        "hold" => cmd_hold(rest),
        "refresh" => cmd_refresh(rest),
        "export" => cmd_export(rest),
        _ => usage(format!(
            "unknown command {:?}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        )),
    }
}

/// `--trust-anchor FILE`: trusts FILE's certificate (PEM or DER) as a root
/// besides AMD's built-in ARKs.
fn add_anchor(anchors: &mut verify::TrustAnchors, v: &OsString) -> Result<(), Fail> {
    let p = PathBuf::from(v);
    let raw = read_input(&p)?;
    anchors
        .add_cert(&raw, &p.display().to_string())
        .map_err(|e| Fail::Run(format!("--trust-anchor {e}")))
}

/// `--mode OCTAL`: permission bits of the installed blob.
fn parse_mode(v: &OsStr) -> Result<u32, Fail> {
    let t = v.to_str().unwrap_or("");
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 && !t.is_empty() => Ok(m),
        _ => usage(format!(
            "--mode wants octal permission bits (e.g. 0640), got {t:?}"
        )),
    }
}

/// `--group NAME|GID`: group of the installed blob (names from /etc/group).
fn parse_group(v: &OsStr) -> Result<u32, Fail> {
    let t = v.to_str().unwrap_or("");
    if let Ok(g) = t.parse::<u32>() {
        return Ok(g);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse::<u32>().ok()?;
            (name == t && !t.is_empty()).then_some(gid)
        })
        .next()
        .ok_or_else(|| Fail::Usage(format!("--group: no group {t:?} in /etc/group")))
}

/// `--mode` and `--group` of the updating commands; returns whether `opt` was one.
fn take_perms(
    perms: &mut store::Perms,
    opt: &str,
    it: &mut std::slice::Iter<'_, OsString>,
) -> Result<bool, Fail> {
    match opt {
        "--mode" => perms.mode = Some(parse_mode(value(it, opt)?)?),
        "--group" => perms.gid = Some(parse_group(value(it, opt)?)?),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Takes the value after option `name`.
fn value<'a>(it: &mut std::slice::Iter<'a, OsString>, name: &str) -> Result<&'a OsString, Fail> {
    match it.next() {
        Some(v) => Ok(v),
        None => usage(format!("{name} needs a value")),
    }
}

fn set_once(slot: &mut Option<PathBuf>, v: &OsString, name: &str) -> Result<(), Fail> {
    if slot.is_some() {
        return usage(format!("{name} given twice"));
    }
    *slot = Some(PathBuf::from(v));
    Ok(())
}

fn parse_timeout(v: &OsStr) -> Result<Duration, Fail> {
    let s = v.to_str().unwrap_or("");
    match s
        .parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
    {
        Some(d) if d <= Duration::from_secs(24 * 3600) => Ok(d),
        _ => usage(format!(
            "--timeout wants seconds between 0 and 86400, got {:?}",
            v.to_string_lossy()
        )),
    }
}

fn read_input(path: &Path) -> Result<Vec<u8>, Fail> {
    let f = std::fs::File::open(path).map_err(|e| Fail::Run(format!("{}: {e}", path.display())))?;
    let mut buf = Vec::new();
    f.take(MAX_INPUT.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Fail::Run(format!("{}: {e}", path.display())))?;
    if buf.len() as u64 > MAX_INPUT {
        return run_err(format!("{}: larger than {MAX_INPUT} bytes", path.display()));
    }
    Ok(buf)
}

/// One certificate for the table: its entry type, where it came from (for
/// messages) and its DER bytes.
struct Cert {
    kind: CertKind,
    from: String,
    der: Vec<u8>,
}

fn role(kind: CertKind) -> String {
    match kind {
        CertKind::Other(g) => format!("entry {g}"),
        k => k.name().to_string(),
    }
}

/// What a file in a `build --dir` directory holds, from its name.
#[derive(Debug, PartialEq, Eq)]
enum DirFile {
    One(CertKind),
    /// AMD KDS's `cert_chain`: ASK (or ASVK), then ARK, in one PEM file.
    Chain,
    Crl,
}

/// File names `build --dir` knows: what snphost `fetch ca`/`fetch vcek`/
/// `export` write (`ark`, `ask` or `asvk` (VLEK chain), `vcek`, `vlek`, each
/// `.pem` or `.der`; `fetch crl` writes `<Generation>.crl`), and what is
/// saved from AMD's KDS (`cert_chain`, `crl`, the VCEK as `vcek.der`).
fn classify(name: &str) -> Option<DirFile> {
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) => (s, Some(e)),
        None => (name, None),
    };
    if name == "crl" || (ext == Some("crl") && !stem.is_empty()) {
        return Some(DirFile::Crl);
    }
    if !matches!(ext, None | Some("pem" | "der" | "crt" | "cer")) {
        return None;
    }
    Some(match stem {
        "ark" => DirFile::One(CertKind::Ark),
        "ask" | "asvk" => DirFile::One(CertKind::Ask),
        "vcek" => DirFile::One(CertKind::Vcek),
        "vlek" => DirFile::One(CertKind::Vlek),
        "cert_chain" => DirFile::Chain,
        _ => return None,
    })
}

const DIR_NAMES: &str = "ark, ask or asvk, vcek, vlek (each with .pem, .der, .crt, .cer or no extension), cert_chain[.pem], crl or NAME.crl";

/// Reads the certificates of a directory as snphost or AMD KDS write it.
/// Every file (except dot-files) must be one `build` knows: a misspelt
/// name would otherwise silently leave a certificate out.
fn read_cert_dir(dir: &Path) -> Result<Vec<Cert>, Fail> {
    let rd = std::fs::read_dir(dir).map_err(|e| Fail::Run(format!("{}: {e}", dir.display())))?;
    let mut names = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Fail::Run(format!("{}: {e}", dir.display())))?;
        names.push(ent.file_name());
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        if name.as_bytes().starts_with(b".") {
            continue;
        }
        let path = dir.join(&name);
        let Some(what) = name.to_str().and_then(classify) else {
            return run_err(format!(
                "{}: unknown file in --dir (expected {DIR_NAMES})",
                path.display()
            ));
        };
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            return run_err(format!("{}: not a regular file", path.display()));
        }
        let raw = read_input(&path)?;
        let bad = |kind: &str, e: pem::CertInputError| {
            Fail::Run(format!("{} ({kind}): {e}", path.display()))
        };
        match what {
            DirFile::One(kind) => out.push(Cert {
                kind,
                from: path.display().to_string(),
                der: pem::to_der(&raw).map_err(|e| bad(kind.name(), e))?,
            }),
            DirFile::Crl => out.push(Cert {
                kind: CertKind::Crl,
                from: path.display().to_string(),
                der: pem::to_der_labeled(&raw, pem::LABEL_CRL).map_err(|e| bad("CRL", e))?,
            }),
            DirFile::Chain => {
                let certs = pem::chain_to_der(&raw).map_err(|e| bad("ASK and ARK", e))?;
                let [ask, ark]: [Vec<u8>; 2] = certs.try_into().map_err(|c: Vec<Vec<u8>>| {
                    Fail::Run(format!(
                        "{}: {} certificate(s); a cert_chain holds two, the ASK (or ASVK) then the ARK",
                        path.display(),
                        c.len()
                    ))
                })?;
                let from = path.display().to_string();
                out.push(Cert {
                    kind: CertKind::Ask,
                    from: format!("{from} (first certificate)"),
                    der: ask,
                });
                out.push(Cert {
                    kind: CertKind::Ark,
                    from: format!("{from} (second certificate)"),
                    der: ark,
                });
            }
        }
    }
    if out.is_empty() {
        return run_err(format!(
            "{}: no certificates in --dir (expected {DIR_NAMES})",
            dir.display()
        ));
    }
    Ok(out)
}

/// Parses `--entry GUID=FILE`.
fn parse_entry(v: &OsStr) -> Result<(table::Guid, PathBuf), Fail> {
    let bytes = v.as_bytes();
    let Some(eq) = bytes.iter().position(|&b| b == b'=') else {
        return usage(format!(
            "--entry wants GUID=FILE, got {:?}",
            v.to_string_lossy()
        ));
    };
    let (g, file) = (
        bytes.get(..eq).unwrap_or(&[]),
        bytes.get(eq.saturating_add(1)..).unwrap_or(&[]),
    );
    let Some(guid) = std::str::from_utf8(g).ok().and_then(table::Guid::parse) else {
        return usage(format!(
            "--entry: bad GUID {:?}; expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
            String::from_utf8_lossy(g)
        ));
    };
    if guid.is_zero() {
        return usage("--entry: the all-zero GUID ends the table; it cannot name an entry");
    }
    if let k @ (CertKind::Ark | CertKind::Ask | CertKind::Vcek | CertKind::Vlek | CertKind::Crl) =
        CertKind::from_guid(guid)
    {
        return usage(format!(
            "--entry: {guid} is the {} GUID; use --{} (or --dir)",
            k.name(),
            k.name().to_ascii_lowercase()
        ));
    }
    if file.is_empty() {
        return usage("--entry wants GUID=FILE, FILE is empty");
    }
    Ok((guid, PathBuf::from(OsStr::from_bytes(file))))
}

fn cmd_build(args: &[OsString]) -> Result<(), Fail> {
    let (mut ark, mut ask, mut vcek, mut vlek, mut crl, mut out, mut dir) =
        (None, None, None, None, None, None, None);
    let mut entries: Vec<(table::Guid, PathBuf)> = Vec::new();
    let mut oversize = false;
    let mut no_verify = false;
    let mut anchors = verify::TrustAnchors::amd();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str().unwrap_or("") {
            "-h" | "--help" => return print(BUILD_HELP),
            "--trust-anchor" => add_anchor(&mut anchors, value(&mut it, "--trust-anchor")?)?,
            "--ark" => set_once(&mut ark, value(&mut it, "--ark")?, "--ark")?,
            "--ask" => set_once(&mut ask, value(&mut it, "--ask")?, "--ask")?,
            "--vcek" => set_once(&mut vcek, value(&mut it, "--vcek")?, "--vcek")?,
            "--vlek" => set_once(&mut vlek, value(&mut it, "--vlek")?, "--vlek")?,
            "--crl" => set_once(&mut crl, value(&mut it, "--crl")?, "--crl")?,
            "--dir" => set_once(&mut dir, value(&mut it, "--dir")?, "--dir")?,
            "--entry" => {
                let (g, f) = parse_entry(value(&mut it, "--entry")?)?;
                if entries.iter().any(|(h, _)| *h == g) {
                    return usage(format!("--entry {g} given twice"));
                }
                entries.push((g, f));
            }
            "-o" | "--output" => set_once(&mut out, value(&mut it, "-o")?, "-o")?,
            "--allow-oversize" => oversize = true,
            "--no-verify" => no_verify = true,
            _ => {
                return usage(format!(
                    "build: unexpected argument {:?}",
                    a.to_string_lossy()
                ))
            }
        }
    }
    let Some(out) = out else {
        return usage("build needs -o BLOB");
    };
    if vcek.is_some() && vlek.is_some() {
        return usage("build takes --vcek or --vlek, not both");
    }
    if vcek.is_none() && vlek.is_none() && dir.is_none() {
        return usage("build needs --vcek or --vlek (with --ark and --ask), or --dir");
    }
    let mut certs = match &dir {
        Some(d) => read_cert_dir(d)?,
        None => Vec::new(),
    };
    let files = [
        (CertKind::Ark, ark),
        (CertKind::Ask, ask),
        (CertKind::Vcek, vcek),
        (CertKind::Vlek, vlek),
        (CertKind::Crl, crl),
    ];
    let files = files
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| (k, p)))
        .chain(entries.into_iter().map(|(g, p)| (CertKind::Other(g), p)));
    for (kind, path) in files {
        let raw = read_input(&path)?;
        let label = if kind == CertKind::Crl {
            pem::LABEL_CRL
        } else {
            pem::LABEL_CERTIFICATE
        };
        let der = pem::to_der_labeled(&raw, label)
            .map_err(|e| Fail::Run(format!("{} ({}): {e}", path.display(), role(kind))))?;
        certs.push(Cert {
            kind,
            from: path.display().to_string(),
            der,
        });
    }
    // One certificate per role, one role per certificate.
    for (i, c) in certs.iter().enumerate() {
        for prev in certs.iter().take(i) {
            if prev.kind == c.kind {
                return run_err(format!(
                    "{}: a second {} (the first is {})",
                    c.from,
                    role(c.kind),
                    prev.from
                ));
            }
            if prev.der == c.der {
                return run_err(format!(
                    "{} ({}): the same certificate is already given as {} ({})",
                    c.from,
                    role(c.kind),
                    role(prev.kind),
                    prev.from
                ));
            }
        }
    }
    let has = |k: CertKind| certs.iter().any(|c| c.kind == k);
    match (has(CertKind::Vcek), has(CertKind::Vlek)) {
        (true, true) => return run_err("build takes a VCEK or a VLEK, not both"),
        (false, false) => {
            return run_err(
                "build needs a VCEK or a VLEK (--vcek, --vlek, or vcek.*/vlek.* in --dir)",
            )
        }
        _ => {}
    }
    if has(CertKind::Ark) != has(CertKind::Ask) {
        return run_err(format!(
            "build got an {} without an {}: give both, or neither for a blob with only the VCEK/VLEK",
            if has(CertKind::Ark) { "ARK" } else { "ASK" },
            if has(CertKind::Ark) { "ASK" } else { "ARK" },
        ));
    }
    // Table order: ARK, ASK, VCEK/VLEK, CRL, then other entries as given.
    let rank = |k: CertKind| match k {
        CertKind::Ark => 0,
        CertKind::Ask => 1,
        CertKind::Vcek | CertKind::Vlek => 2,
        CertKind::Crl => 3,
        CertKind::Other(_) => 4,
    };
    certs.sort_by_key(|c| rank(c.kind)); // stable: entries keep their order
    let mut b = Builder::new().allow_oversize(oversize);
    for c in certs {
        b = b.add_kind(c.kind, c.der);
    }
    let blob = b.build().map_err(|e| Fail::Run(format!("build: {e}")))?;
    check_chain(&blob, no_verify, &out, &anchors)?;
    std::fs::write(&out, &blob).map_err(|e| Fail::Run(format!("{}: {e}", out.display())))?;
    print(&format!(
        "wrote {} ({} bytes, {} page(s))\n",
        out.display(),
        blob.len(),
        table::pages_needed(blob.len())
    ))
}

/// `s` as a JSON string literal (RFC 8259: quote, backslash and control
/// characters escaped).
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len().saturating_add(2));
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if u32::from(c) < 0x20 => o.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn inspect_json(path: &Path, blob: &[u8], t: &table::Table<'_>) -> String {
    let entries: Vec<String> = t
        .entries()
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "{{\"index\":{i},\"type\":{},\"guid\":{},\"offset\":{},\"length\":{},\"mixed_endian_of\":{}}}",
                json_str(e.kind().name()),
                json_str(&e.guid.to_string()),
                e.offset,
                e.length,
                e.guid
                    .mixed_endian_known()
                    .map_or("null".to_string(), |k| json_str(k.name()))
            )
        })
        .collect();
    format!(
        "{{\"file\":{},\"size\":{},\"pages\":{},\"over_linux_guest_max\":{},\"entries\":[{}]}}\n",
        json_str(&path.to_string_lossy()),
        blob.len(),
        table::pages_needed(blob.len()),
        blob.len() > table::LINUX_GUEST_MAX,
        entries.join(",")
    )
}

fn cmd_inspect(args: &[OsString]) -> Result<(), Fail> {
    let mut path = None;
    let mut json = false;
    for a in args {
        if is_help(a) {
            return print(INSPECT_HELP);
        }
        if a == "--json" {
            json = true;
            continue;
        }
        if path.is_some() {
            return usage("inspect takes one BLOB");
        }
        path = Some(PathBuf::from(a));
    }
    let Some(path) = path else {
        return usage("inspect needs a BLOB");
    };
    let blob = read_input(&path)?;
    let t = table::parse(&blob).map_err(|e| {
        Fail::Run(format!(
            "{}: invalid certificate table: {e}",
            path.display()
        ))
    })?;
    if json {
        return print(&inspect_json(&path, &blob, &t));
    }
    let mut s = String::new();
    s.push_str("index  type   guid                                  offset  length\n");
    for (i, e) in t.entries().iter().enumerate() {
        s.push_str(&format!(
            "{i:<6} {:<6} {}  {:>6}  {:>6}\n",
            e.kind().name(),
            e.guid,
            e.offset,
            e.length
        ));
        if let Some(k) = e.guid.mixed_endian_known() {
            s.push_str(&format!(
                "       warning: this is the {} GUID in EFI mixed-endian byte order; guests expect string order\n",
                k.name()
            ));
        }
    }
    s.push_str(&format!(
        "{} entr{}, {} bytes, {} page(s) of 4 KiB{}\n",
        t.entries().len(),
        if t.entries().len() == 1 { "y" } else { "ies" },
        blob.len(),
        table::pages_needed(blob.len()),
        if blob.len() > table::LINUX_GUEST_MAX {
            " (over the 16 KiB a Linux guest accepts)"
        } else {
            ""
        }
    ));
    print(&s)
}

/// Refuses a table whose chain does not verify now, unless `no_verify`. The
/// empty table passes: it serves no certificates, so it claims no chain (a host
/// without certificates installs it on purpose).
fn check_chain(
    blob: &[u8],
    no_verify: bool,
    what: &Path,
    anchors: &verify::TrustAnchors,
) -> Result<(), Fail> {
    if no_verify || table::parse(blob).is_ok_and(|t| t.entries().is_empty()) {
        return Ok(());
    }
    let report = verify::verify_table_with(blob, now()?, anchors).map_err(|e| {
        Fail::Run(format!(
            "{}: invalid certificate table: {e}",
            what.display()
        ))
    })?;
    if report.verified() {
        return Ok(());
    }
    run_err(format!(
        "{}: the certificate chain does not verify, refusing it (--no-verify to override; `snp-certs verify` shows the chain):\n  {}",
        what.display(),
        report.failures().join("\n  ")
    ))
}

fn now() -> Result<Duration, Fail> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Fail::Run(format!("system clock before 1970: {e}")))
}

/// `--at`: `YYYY-MM-DDTHH:MM:SSZ` (UTC) or `@SECONDS` since the epoch.
fn parse_at(v: &OsStr) -> Result<Duration, Fail> {
    let s = v.to_str().unwrap_or("");
    let bad = || {
        Fail::Usage(format!(
            "--at wants YYYY-MM-DDTHH:MM:SSZ or @SECONDS, got {:?}",
            v.to_string_lossy()
        ))
    };
    if let Some(secs) = s.strip_prefix('@') {
        return secs
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| bad());
    }
    let b = s.as_bytes();
    let fixed = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !fixed {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u16>().ok());
    let field = |r| num(r).and_then(|n| u8::try_from(n).ok());
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        num(0..4),
        field(5..7),
        field(8..10),
        field(11..13),
        field(14..16),
        field(17..19),
    ) else {
        return Err(bad());
    };
    x509_cert::der::DateTime::new(y, mo, d, h, mi, se)
        .map(|t| t.unix_duration())
        .map_err(|_| bad())
}

fn cmd_verify(args: &[OsString]) -> Result<(), Fail> {
    let mut at = None;
    let mut report_path: Option<PathBuf> = None;
    let mut path = None;
    let mut anchors = verify::TrustAnchors::amd();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-h" | "--help") => return print(VERIFY_HELP),
            Some("--trust-anchor") => add_anchor(&mut anchors, value(&mut it, "--trust-anchor")?)?,
            Some("--at") => at = Some(parse_at(value(&mut it, "--at")?)?),
            Some("--report") => {
                set_once(&mut report_path, value(&mut it, "--report")?, "--report")?
            }
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return usage(format!("verify: unknown option {s}"))
            }
            _ if path.is_some() => return usage("verify takes one BLOB"),
            _ => path = Some(PathBuf::from(a)),
        }
    }
    let Some(path) = path else {
        return usage("verify needs a BLOB");
    };
    let at = match at {
        Some(t) => t,
        None => now()?,
    };
    let blob = read_input(&path)?;
    let report = verify::verify_table_with(&blob, at, &anchors).map_err(|e| {
        Fail::Run(format!(
            "{}: invalid certificate table: {e}",
            path.display()
        ))
    })?;
    print(&report.to_string())?;
    let report_ok = match &report_path {
        None => true,
        Some(rp) => {
            let raw = read_input(rp)?;
            let leaf = table::parse(&blob).ok().and_then(|t| {
                t.find(CertKind::Vcek)
                    .or_else(|| t.find(CertKind::Vlek))
                    .map(<[u8]>::to_vec)
            });
            let res = match leaf {
                Some(l) => verify::verify_report(&raw, &l),
                None => Err("the table has no VCEK or VLEK to check it with".into()),
            };
            match res {
                Ok(()) => {
                    print(&format!(
                        "report {}: signature verifies with the table's VCEK/VLEK (ECDSA P-384 SHA-384), CHIP_ID matches its hwID\n",
                        rp.display()
                    ))?;
                    true
                }
                Err(e) => {
                    print(&format!("FAIL: report {}: {e}\n", rp.display()))?;
                    false
                }
            }
        }
    };
    if report.verified() && report_ok {
        print(&format!(
            "chain verifies, ending in {}\n",
            report.anchor.as_deref().unwrap_or("?")
        ))
    } else if report.verified() {
        run_err(format!(
            "{}: the chain verifies, the attestation report does not",
            path.display()
        ))
    } else {
        run_err(format!(
            "{}: the certificate chain does not verify ({} problem(s))",
            path.display(),
            report.failures().len()
        ))
    }
}

fn cmd_export(args: &[OsString]) -> Result<(), Fail> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if args.iter().any(|a| is_help(a)) {
        return print(EXPORT_HELP);
    }
    let [blob_path, dir] = args else {
        return usage("export needs BLOB and DIR");
    };
    let (blob_path, dir) = (PathBuf::from(blob_path), PathBuf::from(dir));
    let blob = read_input(&blob_path)?;
    let t = table::parse(&blob).map_err(|e| {
        Fail::Run(format!(
            "{}: invalid certificate table: {e}",
            blob_path.display()
        ))
    })?;
    let vlek = t.entries().iter().any(|e| e.kind() == CertKind::Vlek);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(|e| Fail::Run(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    for e in t.entries() {
        let name = match e.kind() {
            CertKind::Ark => "ark.der".to_string(),
            CertKind::Ask if vlek => "asvk.der".to_string(),
            CertKind::Ask => "ask.der".to_string(),
            CertKind::Vcek => "vcek.der".to_string(),
            CertKind::Vlek => "vlek.der".to_string(),
            CertKind::Crl => "crl.der".to_string(),
            CertKind::Other(g) => format!("{g}.der"),
        };
        let Some(data) = t.data(e) else {
            return run_err(format!(
                "{}: entry {name} out of bounds",
                blob_path.display()
            ));
        };
        let p = dir.join(&name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
            .map_err(|e| Fail::Run(format!("{}: {e}", p.display())))?;
        written.push(name);
    }
    print(&format!(
        "wrote {} to {}\n",
        if written.is_empty() {
            "nothing (the table is empty)".to_string()
        } else {
            written.join(", ")
        },
        dir.display()
    ))
}

fn store_err(path: &Path, e: StoreError) -> Fail {
    match e {
        StoreError::Busy => Fail::Run(format!(
            "{}: lock busy (timed out waiting for the lock)",
            path.display()
        )),
        e => Fail::Run(format!("{}: {e}", path.display())),
    }
}

/// True if we run under `snp-certs hold` of the same file.
fn held_by_parent(path: &Path) -> bool {
    let Some(h) = std::env::var_os(HOLD_ENV) else {
        return false;
    };
    let a = std::fs::canonicalize(Path::new(&h));
    let b = std::fs::canonicalize(path);
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        _ => Path::new(&h) == path,
    }
}

fn cmd_install(args: &[OsString]) -> Result<(), Fail> {
    let mut timeout = DEFAULT_TIMEOUT;
    let mut in_place = false;
    let mut no_verify = false;
    let mut anchors = verify::TrustAnchors::amd();
    let mut perms = store::Perms::default();
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-h" | "--help") => return print(INSTALL_HELP),
            Some(o @ ("--mode" | "--group")) => {
                take_perms(&mut perms, o, &mut it)?;
            }
            Some("--trust-anchor") => add_anchor(&mut anchors, value(&mut it, "--trust-anchor")?)?,
            Some("--timeout") => timeout = parse_timeout(value(&mut it, "--timeout")?)?,
            Some("--in-place") => in_place = true,
            Some("--no-verify") => no_verify = true,
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return usage(format!("install: unknown option {s}"))
            }
            _ => pos.push(PathBuf::from(a)),
        }
    }
    let [blob_path, path] = pos.as_slice() else {
        return usage("install needs BLOB and PATH");
    };
    let blob = read_input(blob_path)?;
    table::parse(&blob).map_err(|e| {
        Fail::Run(format!(
            "{}: invalid certificate table: {e}",
            blob_path.display()
        ))
    })?;
    check_chain(&blob, no_verify, blob_path, &anchors)?;
    if held_by_parent(path) {
        return run_err(format!(
            "{}: held by an enclosing `snp-certs hold` (it has the exclusive lock); use `snp-certs hold --install BLOB PATH -- CMD`",
            path.display()
        ));
    }
    if in_place {
        store::install_in_place_perms(path, &blob, Some(timeout), perms).map_err(|e| match e {
            StoreError::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => {
                Fail::Run(format!(
                    "{}: does not exist; --in-place rewrites an existing file (install without --in-place creates it)",
                    path.display()
                ))
            }
            e => store_err(path, e),
        })?;
    } else {
        store::install_perms(path, &blob, Some(timeout), perms).map_err(|e| store_err(path, e))?;
    }
    print(&format!(
        "installed {} ({} bytes) at {}{}\n",
        blob_path.display(),
        blob.len(),
        path.display(),
        if in_place { " (in place)" } else { "" }
    ))
}

/// Pid of the command `hold` runs, while it runs (0 otherwise).
static HOLD_CHILD: AtomicI32 = AtomicI32::new(0);

/// Signals `hold` passes on to its command instead of dying of them.
const FORWARDED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = HOLD_CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe. pid is our child; it is
        // cleared (with the signals blocked) right after the child is reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

fn sigmask(how: libc::c_int) -> std::io::Result<()> {
    // SAFETY: set is a plain sigset_t initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(how, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs `cmd` and waits for it. While it runs, SIGTERM, SIGINT and SIGHUP sent
/// to `hold` are forwarded to it, and `hold` waits for it to end: the lock
/// (whose descriptor the command does not inherit) must outlive the firmware
/// update. The signals are blocked from before the spawn until the pid is
/// known, so none is lost; the child starts with an empty mask and default
/// handlers (std resets both).
fn run_forwarding_signals(cmd: &mut Command) -> std::io::Result<std::process::ExitStatus> {
    for sig in FORWARDED {
        // SAFETY: sa is zero-initialised then filled in; the handler only reads
        // an atomic and calls kill(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    sigmask(libc::SIG_BLOCK)?;
    let child = cmd.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let _ = sigmask(libc::SIG_UNBLOCK);
            return Err(e);
        }
    };
    HOLD_CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    let _ = sigmask(libc::SIG_UNBLOCK);
    // std's wait retries on EINTR, so a forwarded signal does not end it.
    let status = child.wait();
    // Reaped: forward nothing more (the pid could be reused).
    let _ = sigmask(libc::SIG_BLOCK);
    HOLD_CHILD.store(0, Ordering::SeqCst);
    status
}

fn cmd_hold(args: &[OsString]) -> Result<(), Fail> {
    let mut timeout = DEFAULT_TIMEOUT;
    let mut refresh: Option<RefreshArgs> = None;
    let mut install: Option<PathBuf> = None;
    let mut no_verify = false;
    let mut anchors = verify::TrustAnchors::amd();
    let mut perms = store::Perms::default();
    let mut path: Option<PathBuf> = None;
    let mut it = args.iter();
    let mut cmd: Option<&[OsString]> = None;
    let mut idx = 0usize;
    while let Some(a) = it.next() {
        idx = idx.saturating_add(1);
        match a.to_str() {
            Some("-h" | "--help") => return print(HOLD_HELP),
            Some("--trust-anchor") => {
                add_anchor(&mut anchors, value(&mut it, "--trust-anchor")?)?;
                idx = idx.saturating_add(1);
            }
            Some(o @ ("--mode" | "--group")) => {
                take_perms(&mut perms, o, &mut it)?;
                idx = idx.saturating_add(1);
            }
            Some("--timeout") => {
                timeout = parse_timeout(value(&mut it, "--timeout")?)?;
                idx = idx.saturating_add(1);
            }
            Some("--install") => {
                set_once(&mut install, value(&mut it, "--install")?, "--install")?;
                idx = idx.saturating_add(1);
            }
            Some("--no-verify") => no_verify = true,
            Some("--refresh") => refresh = Some(RefreshArgs::for_hold()),
            Some("--") => {
                cmd = args.get(idx..);
                break;
            }
            Some(s) if refresh.is_some() && RefreshArgs::takes(s) => {
                if let Some(r) = refresh.as_mut() {
                    idx = idx.saturating_add(r.take(s, &mut it)?);
                }
            }
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return usage(format!("hold: unknown option {s}"))
            }
            _ => {
                if path.is_some() {
                    return usage("hold takes one PATH before --");
                }
                path = Some(PathBuf::from(a));
            }
        }
    }
    let Some(path) = path else {
        return usage("hold needs PATH");
    };
    let Some((prog, prog_args)) = cmd.and_then(|c| c.split_first()) else {
        return usage("hold needs -- CMD [ARGS...]");
    };
    if refresh.is_some() && install.is_some() {
        return usage("hold takes --install or --refresh, not both");
    }
    if let Some(r) = refresh.as_mut() {
        r.anchors = anchors.clone();
        r.perms = perms;
        r.check()?;
    }
    let new_blob = match &install {
        Some(p) => {
            let b = read_input(p)?;
            table::parse(&b).map_err(|e| {
                Fail::Run(format!("{}: invalid certificate table: {e}", p.display()))
            })?;
            check_chain(&b, no_verify, p, &anchors)?;
            Some(b)
        }
        None => None,
    };
    if held_by_parent(&path) {
        return run_err(format!(
            "{}: already held by an enclosing `snp-certs hold`",
            path.display()
        ));
    }
    if no_verify && new_blob.is_none() {
        return usage("hold: --no-verify goes with --install");
    }
    let mut lock = if new_blob.is_some() || refresh.is_some() {
        // The file may not exist yet when --install creates it.
        store::lock_for_update(&path, Some(timeout)).map_err(|e| store_err(&path, e))?
    } else {
        Some(
            store::open_locked(&path, LockKind::Exclusive, Some(timeout))
                .map_err(|e| store_err(&path, e))?,
        )
    };
    let mut command = Command::new(prog);
    command.args(prog_args).env(HOLD_ENV, path.as_os_str());
    // CMD inherits the locked descriptor (its open file description, which
    // owns the OFD lock): if hold is SIGKILLed while CMD runs, the lock
    // stays until CMD (and whatever inherited it from CMD) has ended.
    if let Some(fd) = lock.as_ref().map(|l| l.file().as_raw_fd()) {
        command.env(HOLD_FD_ENV, fd.to_string());
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl(2), which is async-signal-safe; `fd` is a plain
        // integer copied in, open in the child as in the parent.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let status = run_forwarding_signals(&mut command);
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: hold: cannot run {:?}: {e}",
                String::from_utf8_lossy(prog.as_bytes())
            );
            return Err(Fail::Status(127));
        }
    };
    let code: u8 = match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128i32.saturating_add(sig) & 0xff).unwrap_or(1),
        (None, None) => 1,
    };
    if code == 0 {
        if let Some(r) = &refresh {
            let res = refresh_held(r, &path, &mut lock);
            drop(lock);
            return res;
        }
        if let Some(b) = new_blob {
            let newf = store::replace_locked_perms(&path, lock.as_ref(), &b, perms)
                .map_err(|e| store_err(&path, e))?;
            drop(newf);
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: hold: installed new blob at {}",
                path.display()
            );
        }
    } else if new_blob.is_some() {
        let _ = writeln!(
            std::io::stderr(),
            "snp-certs: hold: command failed (status {code}); blob not installed"
        );
    }
    drop(lock);
    if code == 0 {
        Ok(())
    } else {
        Err(Fail::Status(code))
    }
}

const REFRESH_HELP: &str = "\
snp-certs refresh [SOURCE] [KDS OPTIONS] [--timeout SECS] PATH

Makes PATH serve the VCEK for this chip and TCB: finds the product (Milan,
Genoa, Turin), chip ID and reported TCB, gets the product's ARK and ASK and
the VCEK from AMD's Key Distribution Service (KDS) or the cache, builds the
table ARK, ASK, VCEK, verifies it as `verify` does and checks that the VCEK's
product, hwID and TCB extensions are the ones asked for, then installs it as
`install` does (exclusive lock, atomic replacement). Nothing changes and KDS
is not asked when PATH already holds a verified chain whose VCEK is for this
chip and TCB (\"up to date\", exit 0). On any failure PATH is unchanged.

SOURCE (one of):
  --from-report FILE   a guest's attestation report (1184 bytes, as snpguest
                       writes it): REPORTED_TCB, CHIP_ID, and the product
                       from its CPUID fields (report version 3 and later;
                       give --product for version 2)
  --product P --chip-id HEX --tcb bl=N,tee=N,snp=N,ucode=N[,fmc=N]
                       given explicitly (HEX: 64 bytes, or 8 on Turin;
                       fmc on Turin only)
  (none)               this host's firmware: SNP_PLATFORM_STATUS and
                       SEV_GET_ID2 on /dev/sev (--sev-device PATH), the
                       product from CPUID
KDS OPTIONS:
  --kds-url URL        default https://kdsintf.amd.com
  --cache-dir DIR      default /var/cache/snp-certs: each VCEK (by product,
                       chip and TCB) and each product's chain is fetched once
                       and kept once it verified; --no-cache skips it
  --proxy URL          HTTP proxy, http://[user:password@]host:port (HTTPS
                       goes through it with CONNECT); without it,
                       HTTPS_PROXY/https_proxy (http_proxy for http://),
                       ALL_PROXY/all_proxy, and NO_PROXY/no_proxy, as curl
                       reads them. Redirects are followed only within
                       the same scheme, host and port.
  --ca-file FILE       also trust FILE's CA certificates (PEM) for HTTPS
                       (repeatable); Mozilla's roots (built in) and the
                       system's bundle (SSL_CERT_FILE, or
                       /etc/ssl/certs/ca-certificates.crt and the like)
                       are always trusted
  --http-timeout SECS  per request (connect, send, whole body); default 30
  --max-wait SECS      total wait between retries; default 60
  --total-timeout SECS all requests and waits together; default none (0),
                       30 for `hold --refresh`
  --retry-delay SECS   first backoff delay, doubled per retry; default 1
  --force              replace a VCEK for this chip whose TCB is newer in
                       some component (otherwise refused: an older refresh
                       finishing last must not downgrade the blob)
  --trust-anchor FILE  also trust this root (PEM or DER) besides AMD's
                       built-in Milan, Genoa and Turin ARKs
  --crl                also serve AMD's CRL for the product: fetched from
                       KDS on every refresh (never cached), checked (issued
                       and signed by the ARK, already in force) and refused
                       if it revokes the ASK or the VCEK; an installed CRL
                       past its nextUpdate makes the blob out of date
HTTP 429 and 5xx, timeouts and cut-short bodies are retried (5 requests at
most), waiting as Retry-After says or with the backoff, never more than
--max-wait in total; 404 and other statuses are final.
--timeout SECS: wait for the lock, as for `install` (default 30).

VLEK hosts are not supported: KDS gives VLEKs only to the cloud provider that
registered them. refresh refuses a report signed with a VLEK, a host whose
firmware has a VLEK loaded, and an installed blob that serves a VLEK; build
such blobs with `build --vlek` and install them with `install`.
Inside `snp-certs hold` of the same PATH use `hold --refresh`.
";

/// The SOURCE and KDS options of `refresh` and `hold --refresh`.
#[derive(Default)]
struct RefreshArgs {
    report: Option<PathBuf>,
    product: Option<snp_certs::report::Product>,
    chip_id: Option<Vec<u8>>,
    tcb: Option<snp_certs::report::TcbVersion>,
    sev_device: Option<PathBuf>,
    kds_url: Option<String>,
    cache_dir: Option<PathBuf>,
    no_cache: bool,
    crl: bool,
    force: bool,
    proxy: Option<String>,
    policy: snp_certs::kds::RetryPolicy,
    anchors: verify::TrustAnchors,
    perms: store::Perms,
    ca_files: Vec<PathBuf>,
}

fn parse_hex(v: &OsStr) -> Result<Vec<u8>, Fail> {
    let s = v.to_str().unwrap_or("");
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = s.as_bytes();
    if bytes.is_empty() || bytes.len() % 2 != 0 {
        return usage(format!("--chip-id wants hex bytes, got {s:?}"));
    }
    bytes
        .chunks_exact(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| Fail::Usage(format!("--chip-id wants hex bytes, got {s:?}")))
}

fn parse_secs(v: &OsStr, name: &str, max: u64) -> Result<Duration, Fail> {
    let s = v.to_str().unwrap_or("");
    match s
        .parse::<f64>()
        .ok()
        .and_then(|f| Duration::try_from_secs_f64(f).ok())
    {
        Some(d) if d <= Duration::from_secs(max) => Ok(d),
        _ => usage(format!(
            "{name} wants seconds between 0 and {max}, got {s:?}"
        )),
    }
}

/// `hold --refresh`'s default budget for everything KDS takes: VMMs answer
/// BUSY meanwhile, and a Linux guest gives up after 60 s of BUSY.
const HOLD_REFRESH_TOTAL: Duration = Duration::from_secs(30);

impl RefreshArgs {
    fn for_hold() -> RefreshArgs {
        let mut r = RefreshArgs::default();
        r.policy.total = Some(HOLD_REFRESH_TOTAL);
        r
    }

    fn takes(opt: &str) -> bool {
        matches!(
            opt,
            "--from-report"
                | "--product"
                | "--chip-id"
                | "--tcb"
                | "--sev-device"
                | "--kds-url"
                | "--cache-dir"
                | "--no-cache"
                | "--crl"
                | "--force"
                | "--proxy"
                | "--ca-file"
                | "--http-timeout"
                | "--total-timeout"
                | "--max-wait"
                | "--retry-delay"
        )
    }

    /// Takes option `opt` (and its value from `it`); returns how many values
    /// it consumed.
    fn take(&mut self, opt: &str, it: &mut std::slice::Iter<'_, OsString>) -> Result<usize, Fail> {
        match opt {
            "--no-cache" => self.no_cache = true,
            "--crl" => self.crl = true,
            "--force" => self.force = true,
            _ => {}
        }
        if matches!(opt, "--no-cache" | "--crl" | "--force") {
            return Ok(0);
        }
        let v = value(it, opt)?;
        let once = |set: bool| {
            if set {
                usage(format!("{opt} given twice"))
            } else {
                Ok(())
            }
        };
        match opt {
            "--from-report" => set_once(&mut self.report, v, opt)?,
            "--ca-file" => self.ca_files.push(PathBuf::from(v)),
            "--sev-device" => set_once(&mut self.sev_device, v, opt)?,
            "--cache-dir" => set_once(&mut self.cache_dir, v, opt)?,
            "--product" => {
                once(self.product.is_some())?;
                let s = v.to_str().unwrap_or("");
                self.product = Some(snp_certs::report::Product::parse(s).ok_or_else(|| {
                    Fail::Usage(format!("--product wants Milan, Genoa or Turin, got {s:?}"))
                })?);
            }
            "--chip-id" => {
                once(self.chip_id.is_some())?;
                self.chip_id = Some(parse_hex(v)?);
            }
            "--tcb" => {
                once(self.tcb.is_some())?;
                let t = snp_certs::report::TcbVersion::parse(v.to_str().unwrap_or(""))
                    .map_err(|e| Fail::Usage(format!("--tcb: {e}")))?;
                self.tcb = Some(t);
            }
            "--kds-url" => {
                once(self.kds_url.is_some())?;
                let u = v.to_str().unwrap_or("");
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return usage(format!("--kds-url wants an http(s):// URL, got {u:?}"));
                }
                self.kds_url = Some(u.to_string());
            }
            "--proxy" => {
                once(self.proxy.is_some())?;
                self.proxy = Some(v.to_str().unwrap_or("").to_string());
            }
            "--http-timeout" => {
                self.policy.request_timeout = parse_secs(v, opt, 600)?;
                if self.policy.request_timeout.is_zero() {
                    return usage("--http-timeout must be above 0");
                }
            }
            "--max-wait" => self.policy.max_wait = parse_secs(v, opt, 3600)?,
            "--total-timeout" => {
                let t = parse_secs(v, opt, 3600)?;
                self.policy.total = (!t.is_zero()).then_some(t);
            }
            "--retry-delay" => self.policy.base_delay = parse_secs(v, opt, 600)?,
            _ => return usage(format!("unknown option {opt}")),
        }
        Ok(1)
    }

    /// Usage checks that need all options.
    fn check(&self) -> Result<(), Fail> {
        let explicit = self.chip_id.is_some() || self.tcb.is_some();
        if self.report.is_some() && explicit {
            return usage("--from-report and --chip-id/--tcb exclude each other");
        }
        if explicit && (self.chip_id.is_none() || self.tcb.is_none() || self.product.is_none()) {
            return usage("an explicit target needs --product, --chip-id and --tcb");
        }
        if self.sev_device.is_some() && (explicit || self.report.is_some()) {
            return usage(
                "--sev-device is for reading /dev/sev; not with --from-report or --chip-id",
            );
        }
        if self.product.is_some() && !explicit && self.report.is_none() {
            return usage("--product goes with --from-report or --chip-id and --tcb");
        }
        self.kds().map(drop) // a bad --proxy is a usage error before anything runs
    }

    /// The VCEK to have, from the report, the options or /dev/sev.
    fn target(&self) -> Result<snp_certs::refresh::Target, Fail> {
        let mut t = self.vcek_target()?;
        t.crl = self.crl;
        t.anchors = self.anchors.clone();
        t.allow_older = self.force;
        Ok(t)
    }

    /// True when the target comes from this host's firmware (/dev/sev),
    /// which a firmware update can change at any moment.
    fn reads_host(&self) -> bool {
        self.report.is_none() && self.chip_id.is_none()
    }

    fn vcek_target(&self) -> Result<snp_certs::refresh::Target, Fail> {
        use snp_certs::refresh::Target;
        let run = |e: snp_certs::refresh::RefreshError| Fail::Run(e.to_string());
        if let Some(p) = &self.report {
            let raw = read_input(p)?;
            let info = snp_certs::report::parse_report(&raw)
                .map_err(|e| Fail::Run(format!("{}: {e}", p.display())))?;
            return Target::from_report(&info, self.product)
                .map_err(|e| Fail::Run(format!("{}: {e}", p.display())));
        }
        if let (Some(product), Some(chip), Some(tcb)) = (self.product, &self.chip_id, self.tcb) {
            return Target::new(product, chip, tcb).map_err(run);
        }
        let dev = self
            .sev_device
            .clone()
            .unwrap_or_else(|| PathBuf::from(snp_certs::sevdev::SEV_DEVICE));
        let host = snp_certs::sevdev::query(&dev).map_err(|e| Fail::Run(e.to_string()))?;
        Target::from_host(&host).map_err(run)
    }

    fn kds(&self) -> Result<snp_certs::kds::Kds, Fail> {
        let cache = if self.no_cache {
            None
        } else {
            Some(
                self.cache_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(snp_certs::kds::DEFAULT_CACHE_DIR)),
            )
        };
        snp_certs::kds::Kds::with_roots(
            self.kds_url
                .as_deref()
                .unwrap_or(snp_certs::kds::DEFAULT_KDS_URL),
            self.policy.clone(),
            cache,
            self.proxy.as_deref(),
            &self.ca_files,
        )
        .map_err(Fail::Usage)
    }
}

fn describe_fetch(f: &snp_certs::refresh::Fetched, kds: &snp_certs::kds::Kds) -> String {
    use snp_certs::kds::Source;
    let from = |s: Source| match s {
        Source::Kds => "KDS",
        Source::Cache => "cache",
    };
    format!(
        "VCEK from {}, ARK/ASK from {}, {} KDS request(s)",
        from(f.vcek_from),
        from(f.chain_from),
        kds.requests()
    )
}

fn cmd_refresh(args: &[OsString]) -> Result<(), Fail> {
    use snp_certs::refresh::{self, Outcome};
    let mut r = RefreshArgs::default();
    let mut timeout = DEFAULT_TIMEOUT;
    let mut path: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-h" | "--help") => return print(REFRESH_HELP),
            Some("--timeout") => timeout = parse_timeout(value(&mut it, "--timeout")?)?,
            Some("--trust-anchor") => {
                add_anchor(&mut r.anchors, value(&mut it, "--trust-anchor")?)?
            }
            Some(o @ ("--mode" | "--group")) => {
                take_perms(&mut r.perms, o, &mut it)?;
            }
            Some(s) if RefreshArgs::takes(s) => {
                r.take(s, &mut it)?;
            }
            Some(s) if s.starts_with('-') && s.len() > 1 => {
                return usage(format!("refresh: unknown option {s}"))
            }
            _ if path.is_some() => return usage("refresh takes one PATH"),
            _ => path = Some(PathBuf::from(a)),
        }
    }
    let Some(path) = path else {
        return usage("refresh needs PATH");
    };
    r.check()?;
    if held_by_parent(&path) {
        return run_err(format!(
            "{}: held by an enclosing `snp-certs hold` (it has the exclusive lock); use `snp-certs hold --refresh ... PATH -- CMD`",
            path.display()
        ));
    }
    let target = r.target()?;
    let at = now()?;
    let fail = |e: refresh::RefreshError| Fail::Run(format!("{}: {e}", path.display()));
    // Up to date already? Then KDS is not asked at all.
    match store::read_locked(&path, Some(timeout)) {
        Ok((l, cur)) => {
            drop(l);
            refresh::refuse_vlek_blob(&cur).map_err(fail)?;
            if refresh::problems_for(&cur, &target, at, true).is_empty() {
                return print(&format!(
                    "{} is up to date: it serves the VCEK for {target}; nothing fetched\n",
                    path.display()
                ));
            }
        }
        Err(StoreError::Io { err, .. }) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(StoreError::Table(_)) => {} // replaced below
        Err(e) => return Err(store_err(&path, e)),
    }
    // Fetch before taking the exclusive lock: VMMs keep serving meanwhile.
    let mut kds = r.kds()?;
    let reads_host = r.reads_host();
    let done =
        refresh::fetch_and_install(&path, Some(timeout), &mut kds, target, at, r.perms, || {
            reads_host.then(|| {
                r.target().map_err(|f| {
                    refresh::RefreshError::Input(match f {
                        Fail::Usage(m) | Fail::Run(m) => m,
                        Fail::Status(c) => format!("status {c}"),
                    })
                })
            })
        })
        .map_err(|e| match e {
            refresh::RefreshError::Store(e @ (StoreError::Busy | StoreError::Unstable(_))) => {
                store_err(&path, e)
            }
            e => fail(e),
        })?;
    let (outcome, target, fetched) = (done.outcome, done.target, done.fetched);
    match outcome {
        Outcome::UpToDate => print(&format!(
            "{} is up to date (installed meanwhile by someone else): it serves the VCEK for {target}\n",
            path.display()
        )),
        Outcome::Installed => print(&format!(
            "installed the VCEK for {target} at {} ({} bytes; {})\n",
            path.display(),
            fetched.blob.len(),
            describe_fetch(&fetched, &kds)
        )),
    }
}

/// `hold --refresh`'s status when CMD succeeded but the refresh failed and
/// the old VCEK was withdrawn (EX_TEMPFAIL: run `refresh` again).
const EXIT_WITHDRAWN: u8 = 75;
/// `hold --refresh`'s status when CMD succeeded, the refresh failed and
/// withdrawing the old VCEK failed too: PATH may still serve it.
const EXIT_STALE: u8 = 76;

/// `hold --refresh`: after CMD, under hold's exclusive lock (never taken
/// again here: the same lock handle is read and replaced). If the refresh
/// fails, the firmware may now report a TCB the installed VCEK is not for:
/// the VCEK is withdrawn under the same lock ([`refresh::withdrawn`]: ARK and
/// ASK only, or the empty table) and hold exits [`EXIT_WITHDRAWN`]. A VLEK
/// blob is never touched (exit 1).
fn refresh_held(
    r: &RefreshArgs,
    path: &Path,
    lock: &mut Option<store::LockedFile>,
) -> Result<(), Fail> {
    use snp_certs::refresh;
    let (msg, withdraw) = match refresh_held_inner(r, path, lock) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    let _ = writeln!(
        std::io::stderr(),
        "snp-certs: hold: refresh after the command failed: {msg}"
    );
    if !withdraw {
        return Err(Fail::Status(1));
    }
    let res = match refresh::read_held(lock) {
        Ok(None) => Ok("nothing (there is no file)".to_string()),
        Ok(Some(cur)) => {
            let new = refresh::withdrawn(&cur);
            let what = if new.len() > table::ENTRY_SIZE {
                "ARK and ASK only (no VCEK)"
            } else {
                "the empty table (no certificates)"
            };
            store::replace_locked_perms(path, lock.as_ref(), &new, r.perms)
                .map(|f| {
                    drop(f);
                    what.to_string()
                })
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match res {
        Ok(what) => {
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: hold: withdrew the VCEK of the previous TCB: {} now serves {what}; run `snp-certs refresh {}` once KDS can be reached (exit {EXIT_WITHDRAWN})",
                path.display(),
                path.display()
            );
            Err(Fail::Status(EXIT_WITHDRAWN))
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: hold: could not withdraw the VCEK of the previous TCB from {}: {e}; it may still be served (exit {EXIT_STALE})",
                path.display()
            );
            Err(Fail::Status(EXIT_STALE))
        }
    }
}

/// The refresh of `hold --refresh`; on failure, the message and whether the
/// installed VCEK must be withdrawn.
fn refresh_held_inner(
    r: &RefreshArgs,
    path: &Path,
    lock: &mut Option<store::LockedFile>,
) -> Result<(), (String, bool)> {
    use snp_certs::refresh::{self, Outcome, RefreshError};
    let fail = |e: RefreshError| {
        let withdraw = !matches!(e, RefreshError::Vlek(_));
        (e.to_string(), withdraw)
    };
    let msg = |f: Fail| match f {
        Fail::Usage(m) | Fail::Run(m) => (m, true),
        Fail::Status(c) => (format!("status {c}"), true),
    };
    let target = r.target().map_err(msg)?;
    let at = now().map_err(msg)?;
    if let Some(cur) = refresh::read_held(lock).map_err(fail)? {
        refresh::refuse_vlek_blob(&cur).map_err(fail)?;
        if refresh::problems_for(&cur, &target, at, true).is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: hold: {} is up to date: it serves the VCEK for {target}",
                path.display()
            );
            return Ok(());
        }
    }
    let mut kds = r.kds().map_err(msg)?;
    let fetched = refresh::fetch_verified(&mut kds, &target, at).map_err(fail)?;
    match refresh::install_locked(path, lock, &fetched.blob, &target, at, r.perms).map_err(fail)? {
        Outcome::UpToDate => {}
        Outcome::Installed => {
            let _ = writeln!(
                std::io::stderr(),
                "snp-certs: hold: installed the VCEK for {target} at {} ({})",
                path.display(),
                describe_fetch(&fetched, &kds)
            );
        }
    }
    Ok(())
}
