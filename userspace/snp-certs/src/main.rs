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
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use nix::libc;
use snp_certs::pem;
use snp_certs::store::{self, LockKind, StoreError};
use snp_certs::table::{self, Builder, CertKind};

/// Environment variable `hold` sets for its command: the held path.
const HOLD_ENV: &str = "SNP_CERTS_HOLD";
/// Largest input file read (certificates, blobs).
const MAX_INPUT: u64 = 1 << 20;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const USAGE: &str = "\
snp-certs: SEV-SNP certificate blobs for KVM_EXIT_VMGEXIT (REQ_CERTS)

Usage:
  snp-certs build --ark F --ask F (--vcek F | --vlek F) [--crl F] [--allow-oversize] -o BLOB
  snp-certs inspect BLOB
  snp-certs install [--timeout SECS] [--in-place] BLOB PATH
  snp-certs hold [--timeout SECS] [--install BLOB] PATH -- CMD [ARGS...]
  snp-certs help [COMMAND]

Every command takes --help. Exit status 0 on success, 1 on failure, 2 on a
usage error; `hold` exits with the status of CMD.
";

const BUILD_HELP: &str = "\
snp-certs build --ark F --ask F (--vcek F | --vlek F) [--crl F] [--allow-oversize] -o BLOB

Builds a GHCB certificate table (entries ARK, ASK, VCEK or VLEK, then CRL) from
certificate files in PEM (one block per file, decoded to DER) or DER, and writes
it to BLOB. Tables over 16 KiB, which a Linux guest cannot receive, are refused
unless --allow-oversize is given. BLOB is written directly (use `install` to
replace a certificate file that a VMM is serving).
";

const INSPECT_HELP: &str = "\
snp-certs inspect BLOB

Validates BLOB as a certificate table and lists each entry (index, type, GUID,
offset, length), then the size and the number of 4 KiB guest pages it needs.
Exits 0 for a valid table (the empty 24-byte table included), 1 with a
one-line reason on stderr otherwise.
";

const INSTALL_HELP: &str = "\
snp-certs install [--timeout SECS] [--in-place] BLOB PATH

Validates BLOB, then replaces PATH atomically: takes the exclusive OFD lock on
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
";

const HOLD_HELP: &str = "\
snp-certs hold [--timeout SECS] [--install BLOB] PATH -- CMD [ARGS...]

Takes the exclusive OFD lock on the certificate file PATH (waiting at most SECS,
default 30) and runs CMD while holding it, e.g. a firmware update (SNP_COMMIT,
SNP_SET_CONFIG, SNP_VLEK_LOAD), so no VMM serves certificates out of step with
firmware. With --install BLOB (validated before CMD runs), BLOB replaces PATH
after CMD succeeds, before the lock is released. Exits with CMD's status
(128+N if CMD was killed by signal N, 127 if it could not be started).
CMD gets SNP_CERTS_HOLD=PATH in its environment. SIGTERM, SIGINT and SIGHUP
sent to hold are passed on to CMD; hold keeps the lock until CMD has ended.
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
                Some("install") => INSTALL_HELP,
                Some("hold") => HOLD_HELP,
                _ => USAGE,
            };
            print(page)
        }
        "-V" | "--version" => print(concat!("snp-certs ", env!("CARGO_PKG_VERSION"), "\n")),
        "build" => cmd_build(rest),
        "inspect" => cmd_inspect(rest),
        "install" => cmd_install(rest),
        "hold" => cmd_hold(rest),
        _ => usage(format!(
            "unknown command {:?}",
            args.first()
                .map(|a| a.to_string_lossy())
                .unwrap_or_default()
        )),
    }
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

fn cmd_build(args: &[OsString]) -> Result<(), Fail> {
    let (mut ark, mut ask, mut vcek, mut vlek, mut crl, mut out) =
        (None, None, None, None, None, None);
    let mut oversize = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str().unwrap_or("") {
            "-h" | "--help" => return print(BUILD_HELP),
            "--ark" => set_once(&mut ark, value(&mut it, "--ark")?, "--ark")?,
            "--ask" => set_once(&mut ask, value(&mut it, "--ask")?, "--ask")?,
            "--vcek" => set_once(&mut vcek, value(&mut it, "--vcek")?, "--vcek")?,
            "--vlek" => set_once(&mut vlek, value(&mut it, "--vlek")?, "--vlek")?,
            "--crl" => set_once(&mut crl, value(&mut it, "--crl")?, "--crl")?,
            "-o" | "--output" => set_once(&mut out, value(&mut it, "-o")?, "-o")?,
            "--allow-oversize" => oversize = true,
            _ => {
                return usage(format!(
                    "build: unexpected argument {:?}",
                    a.to_string_lossy()
                ))
            }
        }
    }
    let (Some(ark), Some(ask), Some(out)) = (ark, ask, out) else {
        return usage("build needs --ark, --ask and -o");
    };
    let vek = match (vcek, vlek) {
        (Some(v), None) => (CertKind::Vcek, v),
        (None, Some(v)) => (CertKind::Vlek, v),
        (Some(_), Some(_)) => return usage("build takes --vcek or --vlek, not both"),
        (None, None) => return usage("build needs --vcek or --vlek"),
    };
    let mut inputs = vec![(CertKind::Ark, ark), (CertKind::Ask, ask), vek];
    if let Some(c) = crl {
        inputs.push((CertKind::Crl, c));
    }
    let mut b = Builder::new().allow_oversize(oversize);
    let mut seen: Vec<(CertKind, Vec<u8>)> = Vec::new();
    for (kind, path) in inputs {
        let raw = read_input(&path)?;
        let label = if kind == CertKind::Crl {
            pem::LABEL_CRL
        } else {
            pem::LABEL_CERTIFICATE
        };
        let der = pem::to_der_labeled(&raw, label)
            .map_err(|e| Fail::Run(format!("{} ({}): {e}", path.display(), kind.name())))?;
        if let Some((other, _)) = seen.iter().find(|(_, d)| *d == der) {
            return run_err(format!(
                "{} ({}): the same certificate is already given as {}",
                path.display(),
                kind.name(),
                other.name()
            ));
        }
        seen.push((kind, der.clone()));
        b = b.add_kind(kind, der);
    }
    let blob = b.build().map_err(|e| Fail::Run(format!("build: {e}")))?;
    std::fs::write(&out, &blob).map_err(|e| Fail::Run(format!("{}: {e}", out.display())))?;
    print(&format!(
        "wrote {} ({} bytes, {} page(s))\n",
        out.display(),
        blob.len(),
        table::pages_needed(blob.len())
    ))
}

fn cmd_inspect(args: &[OsString]) -> Result<(), Fail> {
    let mut path = None;
    for a in args {
        if is_help(a) {
            return print(INSPECT_HELP);
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
    let mut pos = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-h" | "--help") => return print(INSTALL_HELP),
            Some("--timeout") => timeout = parse_timeout(value(&mut it, "--timeout")?)?,
            Some("--in-place") => in_place = true,
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
    if held_by_parent(path) {
        return run_err(format!(
            "{}: held by an enclosing `snp-certs hold` (it has the exclusive lock); use `snp-certs hold --install BLOB PATH -- CMD`",
            path.display()
        ));
    }
    if in_place {
        store::install_in_place(path, &blob, Some(timeout)).map_err(|e| match e {
            StoreError::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => {
                Fail::Run(format!(
                    "{}: does not exist; --in-place rewrites an existing file (install without --in-place creates it)",
                    path.display()
                ))
            }
            e => store_err(path, e),
        })?;
    } else {
        store::install(path, &blob, Some(timeout)).map_err(|e| store_err(path, e))?;
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
    let mut install: Option<PathBuf> = None;
    let mut path: Option<PathBuf> = None;
    let mut it = args.iter();
    let mut cmd: Option<&[OsString]> = None;
    let mut idx = 0usize;
    while let Some(a) = it.next() {
        idx = idx.saturating_add(1);
        match a.to_str() {
            Some("-h" | "--help") => return print(HOLD_HELP),
            Some("--timeout") => {
                timeout = parse_timeout(value(&mut it, "--timeout")?)?;
                idx = idx.saturating_add(1);
            }
            Some("--install") => {
                set_once(&mut install, value(&mut it, "--install")?, "--install")?;
                idx = idx.saturating_add(1);
            }
            Some("--") => {
                cmd = args.get(idx..);
                break;
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
    let new_blob = match &install {
        Some(p) => {
            let b = read_input(p)?;
            table::parse(&b).map_err(|e| {
                Fail::Run(format!("{}: invalid certificate table: {e}", p.display()))
            })?;
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
    let lock = if new_blob.is_some() {
        // The file may not exist yet when --install creates it.
        store::lock_for_update(&path, Some(timeout)).map_err(|e| store_err(&path, e))?
    } else {
        Some(
            store::open_locked(&path, LockKind::Exclusive, Some(timeout))
                .map_err(|e| store_err(&path, e))?,
        )
    };
    let status = run_forwarding_signals(
        Command::new(prog)
            .args(prog_args)
            .env(HOLD_ENV, path.as_os_str()),
    );
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
        if let Some(b) = new_blob {
            let newf =
                store::replace_locked(&path, lock.as_ref(), &b).map_err(|e| store_err(&path, e))?;
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
