//! The `snp-certs` command line: exit codes, messages, hostile input.

mod support;

use std::path::Path;
use std::process::Command;

use snp_certs::table::{self, Builder, CertKind};
use support::{bin, der, pem, run, s, tmpdir};

#[test]
fn help_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["help"],
        vec!["build", "--help"],
        vec!["inspect", "--help"],
        vec!["install", "--help"],
        vec!["help", "install"],
        vec!["hold", "--help"],
        vec!["help", "hold"],
    ] {
        let o = run(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("snp-certs"),
            "{args:?}"
        );
        assert!(o.stderr.is_empty());
    }
}

#[test]
fn usage_errors_exit_2_on_stderr() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["inspect"],
        vec!["inspect", "a", "b"],
        vec!["build", "--ark"],
        vec!["build", "--ark", "a", "--ask", "b", "-o", "c"],
        vec![
            "build", "--ark", "a", "--ask", "b", "--vcek", "c", "--vlek", "d", "-o", "e",
        ],
        vec!["install", "onlyone"],
        vec!["install", "--timeout", "-1", "a", "b"],
        vec!["install", "--timeout", "nan", "a", "b"],
        vec!["hold", "p"],
        vec!["hold", "p", "--"],
        vec!["hold", "--bogus", "p", "--", "true"],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.starts_with("snp-certs: "), "{args:?}: {e}");
        assert!(!e.contains("panicked"));
    }
}

#[test]
fn build_inspect_install_hold() {
    let d = tmpdir("flow");
    let (ark, ask, vcek, crl) = (
        d.join("ark.pem"),
        d.join("ask.der"),
        d.join("vcek.pem"),
        d.join("crl.der"),
    );
    std::fs::write(&ark, pem(&der(1, 500))).unwrap();
    std::fs::write(&ask, der(2, 600)).unwrap();
    std::fs::write(&vcek, pem(&der(3, 700))).unwrap();
    std::fs::write(&crl, der(4, 100)).unwrap();
    let blob = d.join("blob.bin");
    let o = run(&[
        "build",
        "--no-verify",
        "--ark",
        s(&ark),
        "--ask",
        s(&ask),
        "--vcek",
        s(&vcek),
        "--crl",
        s(&crl),
        "-o",
        s(&blob),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = std::fs::read(&blob).unwrap();
    let t = table::parse(&b).unwrap();
    assert_eq!(t.find(CertKind::Ark).unwrap(), der(1, 500).as_slice());
    assert_eq!(t.find(CertKind::Ask).unwrap(), der(2, 600).as_slice());
    assert_eq!(t.find(CertKind::Vcek).unwrap(), der(3, 700).as_slice());
    assert_eq!(t.find(CertKind::Crl).unwrap(), der(4, 100).as_slice());

    let o = run(&["inspect", s(&blob)]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for k in [
        "ARK",
        "ASK",
        "VCEK",
        "CRL",
        "c0b406a4-a803-4952-9743-3fb6014cd0ae",
        "4 entries",
    ] {
        assert!(out.contains(k), "{out}");
    }

    // install, then hold propagates CMD's exit status
    let certs = d.join("certs");
    assert!(run(&["install", "--no-verify", s(&blob), s(&certs)])
        .status
        .success());
    assert_eq!(std::fs::read(&certs).unwrap(), b);
    assert_eq!(
        run(&["hold", s(&certs), "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    assert_eq!(
        run(&["hold", s(&certs), "--", "true"]).status.code(),
        Some(0)
    );
    assert_eq!(
        run(&["hold", s(&certs), "--", "sh", "-c", "kill -9 $$"])
            .status
            .code(),
        Some(137)
    );
    assert_eq!(
        run(&["hold", s(&certs), "--", "/nonexistent/cmd"])
            .status
            .code(),
        Some(127)
    );
    // a nested install would deadlock on the held lock: refused with a hint
    let o = run(&[
        "hold",
        s(&certs),
        "--",
        env!("CARGO_BIN_EXE_snp-certs"),
        "install",
        "--no-verify",
        s(&blob),
        s(&certs),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("hold --install"));
    // while held, an install from outside times out
    let o = bin()
        .args([
            "hold",
            s(&certs),
            "--",
            env!("CARGO_BIN_EXE_snp-certs"),
            "inspect",
            s(&certs),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let small = Builder::new()
        .add_kind(CertKind::Vlek, der(9, 50))
        .build()
        .unwrap();
    let small_p = d.join("small.bin");
    std::fs::write(&small_p, &small).unwrap();
    let mut holder = bin()
        .args(["hold", s(&certs), "--", "sleep", "2"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = run(&[
        "install",
        "--no-verify",
        "--timeout",
        "0.2",
        s(&small_p),
        s(&certs),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lock busy"));
    assert!(holder.wait().unwrap().success());
    // hold --install replaces the blob after CMD succeeds ...
    assert!(run(&[
        "hold",
        "--install",
        s(&small_p),
        "--no-verify",
        s(&certs),
        "--",
        "true"
    ])
    .status
    .success());
    assert_eq!(std::fs::read(&certs).unwrap(), small);
    // ... and not when it fails
    assert_eq!(
        run(&[
            "hold",
            "--install",
            s(&blob),
            "--no-verify",
            s(&certs),
            "--",
            "false"
        ])
        .status
        .code(),
        Some(1)
    );
    assert_eq!(std::fs::read(&certs).unwrap(), small);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let d = tmpdir("hostile");
    let w = |name: &str, data: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let empty_table = w("empty", &[0u8; 24]);
    let o = run(&["inspect", s(&empty_table)]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 entries"));

    let mut overflow = vec![1u8; 16];
    overflow.extend_from_slice(&48u32.to_le_bytes());
    overflow.extend_from_slice(&u32::MAX.to_le_bytes());
    overflow.extend_from_slice(&[0u8; 24]);
    for (name, data) in [
        ("zero", vec![]),
        ("short", vec![0u8; 23]),
        ("noterm", vec![7u8; 24]),
        ("overflow", overflow),
        (
            "random",
            (0..5000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
    ] {
        let p = w(name, &data);
        let o = run(&["inspect", s(&p)]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(e.lines().count(), 1, "{name}: one-line reason: {e}");
        assert!(e.contains("invalid certificate table"), "{name}: {e}");
        // install refuses it too, and creates nothing
        let target = d.join(format!("{name}.target"));
        assert_eq!(run(&["install", s(&p), s(&target)]).status.code(), Some(1));
        assert!(!target.exists());
    }
    assert_eq!(
        run(&["inspect", s(&d.join("missing"))]).status.code(),
        Some(1)
    );
    // build: bad PEM, chain file with two certs, oversize
    let bad = w(
        "bad.pem",
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let good = w("good.der", &der(1, 100));
    let good2 = w("good2.der", &der(2, 100));
    let chain = w(
        "chain.pem",
        format!("{}{}", pem(&der(1, 10)), pem(&der(2, 10))).as_bytes(),
    );
    let big = w("big.der", &der(5, 17000));
    let out = d.join("out");
    for (ark, why) in [(&bad, "base64"), (&chain, "2 PEM blocks"), (&big, "16384")] {
        let o = run(&[
            "build",
            "--ark",
            s(ark),
            "--ask",
            s(&good),
            "--vlek",
            s(&good2),
            "-o",
            s(&out),
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        // good/good2 are fine, but big/bad/chain must fail
        assert_eq!(o.status.code(), Some(1), "{why}: {e}");
        assert!(e.contains(why), "{why}: {e}");
    }
    let o = run(&[
        "build",
        "--ark",
        s(&big),
        "--ask",
        s(&good),
        "--vlek",
        s(&good2),
        "--allow-oversize",
        "--no-verify",
        "-o",
        s(&out),
    ]);
    assert!(o.status.success());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn build_refuses_keys_and_one_certificate_in_two_roles() {
    let d = tmpdir("keys");
    let w = |name: &str, data: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, data).unwrap();
        p
    };
    let ark = w("ark.pem", pem(&der(1, 50)).as_bytes());
    let ask = w("ask.pem", pem(&der(3, 60)).as_bytes());
    let vcek = w("vcek.pem", pem(&der(4, 70)).as_bytes());
    // SEC1 EC private key 30 07 02 01 01 04 02 aa bb, PEM and DER.
    let key_pem = w(
        "key.pem",
        b"-----BEGIN EC PRIVATE KEY-----\nMAcCAQEEAqq7\n-----END EC PRIVATE KEY-----\n",
    );
    let key_der = w(
        "key.der",
        &[0x30, 0x07, 0x02, 0x01, 0x01, 0x04, 0x02, 0xaa, 0xbb],
    );
    let crl_as_cert = w(
        "crl.pem",
        pem(&der(5, 30))
            .replace("CERTIFICATE", "X509 CRL")
            .as_bytes(),
    );
    let out = d.join("out");
    let build = |ark: &Path, ask: &Path, vcek: &Path| {
        run(&[
            "build",
            "--ark",
            s(ark),
            "--ask",
            s(ask),
            "--vcek",
            s(vcek),
            "--no-verify",
            "-o",
            s(&out),
        ])
    };
    for (a, b, c, why) in [
        (&ark, &ask, &key_pem, "EC PRIVATE KEY"),
        (&ark, &ask, &key_der, "private key"),
        (&ark, &ask, &crl_as_cert, "X509 CRL"),
        (&ark, &ark, &vcek, "already given as ARK"),
        (&ark, &ask, &ask, "already given as ASK"),
    ] {
        let o = build(a, b, c);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{why}: {e}");
        assert!(e.contains(why), "{why}: {e}");
        assert!(!out.exists(), "{why}");
    }
    assert!(build(&ark, &ask, &vcek).status.success());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hold_forwards_sigterm_and_keeps_the_lock_until_cmd_ends() {
    let d = tmpdir("holdsig");
    let certs = d.join("certs");
    let blob = Builder::new()
        .add_kind(CertKind::Vlek, der(7, 40))
        .build()
        .unwrap();
    snp_certs::store::install(&certs, &blob, None).unwrap();
    let newp = d.join("new.bin");
    std::fs::write(
        &newp,
        Builder::new()
            .add_kind(CertKind::Vlek, der(8, 40))
            .build()
            .unwrap(),
    )
    .unwrap();
    let (started, log, done) = (d.join("started"), d.join("log"), d.join("done"));
    // A firmware update that must not be cut short: it notes SIGTERM and goes on.
    let script = format!(
        "trap 'echo term >> {log}' TERM; echo x > {started}; i=0; \
         while [ $i -lt 15 ]; do sleep 0.1; i=$((i+1)); done; echo x > {done}",
        log = s(&log),
        started = s(&started),
        done = s(&done)
    );
    let mut holder = bin()
        .args(["hold", s(&certs), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !started.exists() {
        assert!(t0.elapsed().as_secs() < 10, "command did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let k = Command::new("kill")
        .args(["-TERM", &holder.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The command still runs, so the lock must still be held.
    assert!(!done.exists());
    let o = run(&[
        "install",
        "--no-verify",
        "--timeout",
        "0",
        s(&newp),
        s(&certs),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "install succeeded while the held command still ran: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("lock busy"));
    // hold ends with its command, with the command's status.
    let st = holder.wait().unwrap();
    assert!(done.exists());
    assert_eq!(st.code(), Some(0));
    assert!(std::fs::read_to_string(&log).unwrap().contains("term"));
    assert_eq!(std::fs::read(&certs).unwrap(), blob);
    // Now the lock is free.
    assert!(run(&[
        "install",
        "--no-verify",
        "--timeout",
        "0",
        s(&newp),
        s(&certs),
    ])
    .status
    .success());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn install_in_place() {
    use std::os::unix::fs::MetadataExt;
    let d = tmpdir("inplace");
    let p = d.join("certs");
    let b1 = Builder::new()
        .add_kind(CertKind::Vcek, der(1, 100))
        .build()
        .unwrap();
    let b2 = Builder::new()
        .add_kind(CertKind::Vcek, der(2, 50))
        .build()
        .unwrap();
    let (f1, f2) = (d.join("b1"), d.join("b2"));
    std::fs::write(&f1, &b1).unwrap();
    std::fs::write(&f2, &b2).unwrap();
    // Missing PATH: refused with a reason, nothing created.
    let o = run(&["install", "--in-place", "--no-verify", s(&f1), s(&p)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("does not exist") && err.contains("--in-place"),
        "{err}"
    );
    assert!(!p.exists());
    let o = run(&["install", "--no-verify", s(&f1), s(&p)]);
    assert!(o.status.success());
    let ino = std::fs::metadata(&p).unwrap().ino();
    let o = run(&[
        "install",
        "--in-place",
        "--no-verify",
        "--timeout",
        "1",
        s(&f2),
        s(&p),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(in place)"));
    assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
    assert_eq!(std::fs::read(&p).unwrap(), b2);
    // Busy lock: exit 1, file unchanged.
    let held = snp_certs::store::open_locked(&p, snp_certs::store::LockKind::Shared, None).unwrap();
    let o = run(&[
        "install",
        "--in-place",
        "--no-verify",
        "--timeout",
        "0",
        s(&f1),
        s(&p),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lock busy"));
    drop(held);
    assert_eq!(std::fs::read(&p).unwrap(), b2);
    // An invalid blob is refused before PATH is touched.
    std::fs::write(d.join("bad"), b"garbage").unwrap();
    let o = run(&["install", "--in-place", s(&d.join("bad")), s(&p)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&p).unwrap(), b2);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Issue 22: the first install inherited the umask (world-readable under
/// 022: any local user could take a shared lock and stall every install);
/// `install --in-place` followed a symbolic link at PATH.
#[test]
fn blob_mode_and_group_are_set_explicitly_and_links_are_not_followed() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = tmpdir("perms");
    let b = d.join("new.bin");
    std::fs::write(&b, [0u8; 24]).unwrap();
    let p = d.join("certs.bin");
    let o = Command::new("sh")
        .args([
            "-c",
            &format!(
                "umask 000; exec {} install {} {}",
                env!("CARGO_BIN_EXE_snp-certs"),
                s(&b),
                s(&p)
            ),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&p), 0o640, "documented default, not the umask's 0666");
    // Replacing keeps the mode; --mode sets it; --group sets the group.
    assert!(run(&["install", s(&b), s(&p)]).status.success());
    assert_eq!(mode(&p), 0o640);
    assert!(run(&["install", "--mode", "0604", s(&b), s(&p)])
        .status
        .success());
    assert_eq!(mode(&p), 0o604);
    // Only root may give the file any group.
    if std::fs::metadata(&d).unwrap().uid() == 0 && nix_is_root() {
        let o = run(&["install", "--group", "4321", "--in-place", s(&b), s(&p)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::metadata(&p).unwrap().gid(), 4321);
        assert!(run(&["install", s(&b), s(&p)]).status.success());
        assert_eq!(
            std::fs::metadata(&p).unwrap().gid(),
            4321,
            "kept on replace"
        );
    }
    for bad in ["999", "rw", ""] {
        assert_eq!(
            run(&["install", "--mode", bad, s(&b), s(&p)]).status.code(),
            Some(2)
        );
    }
    assert_eq!(
        run(&["install", "--group", "no-such-group-x", s(&b), s(&p)])
            .status
            .code(),
        Some(2)
    );
    // A symbolic link at PATH: refused, its target untouched.
    let target = d.join("passwd-like");
    std::fs::write(&target, b"do not overwrite").unwrap();
    let link = d.join("link.bin");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for extra in [&["--in-place"][..], &[][..]] {
        let mut a = vec!["install"];
        a.extend_from_slice(extra);
        a.extend([s(&b), s(&link)]);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(1), "{a:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("symbolic link"),
            "{a:?}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"do not overwrite");
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// Issue 22: when `hold` was SIGKILLed while its command ran, `install` got
/// the lock at once (the command did not inherit the locked descriptor).
/// Now the lock lasts as long as the command.
#[test]
fn the_lock_outlives_a_sigkilled_hold_while_its_command_runs() {
    let d = tmpdir("holdkill");
    let b = d.join("new.bin");
    std::fs::write(&b, [0u8; 24]).unwrap();
    let p = d.join("certs.bin");
    assert!(run(&["install", s(&b), s(&p)]).status.success());
    let started = d.join("started");
    let script = format!("touch {}; sleep 3", s(&started));
    let mut hold = bin()
        .args(["hold", s(&p), "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !started.exists() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(10));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    hold.kill().unwrap(); // SIGKILL
    hold.wait().unwrap();
    let o = run(&["install", "--timeout", "0.3", s(&b), s(&p)]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the lock went with hold: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("lock busy"));
    // Once the command has ended, the lock is free.
    let o = run(&["install", "--timeout", "10", s(&b), s(&p)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(t0.elapsed() >= std::time::Duration::from_secs(2));
}

#[test]
fn install_and_inspect_a_path_without_a_directory_part() {
    // PATH may be a bare file name, relative to the current directory: its
    // directory is ".", where the temporary is made and the rename happens.
    let d = tmpdir("barename");
    let blob = Builder::new()
        .add_kind(CertKind::Vcek, der(3, 40))
        .build()
        .unwrap();
    std::fs::write(d.join("new.blob"), &blob).unwrap();
    for round in 0..2 {
        // First install, then a replacement of the file it made.
        let o = bin()
            .current_dir(&d)
            .args(["install", "--no-verify", "new.blob", "certs"])
            .output()
            .unwrap();
        assert!(o.status.success(), "round {round}: {}", support::out(&o));
        assert_eq!(std::fs::read(d.join("certs")).unwrap(), blob);
    }
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "left behind: {names:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// An updater that may not give the new file the old one's owner (not root):
/// the install still succeeds (the VMMs read it through its mode), unless a
/// group was asked for explicitly, which it then cannot set: an error.
#[test]
fn an_unprivileged_install_keeps_going_without_the_old_owner_but_not_without_the_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    if !nix_is_root() {
        eprintln!("skipped: needs root to run the CLI as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    let d = tmpdir("unprivileged");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
    // The binary may sit in a directory only root can enter (cargo-mutants'
    // scratch copy is 0700): run a copy.
    let exe = d.join("snp-certs");
    std::fs::copy(env!("CARGO_BIN_EXE_snp-certs"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let blob = |fill| {
        Builder::new()
            .add_kind(CertKind::Vcek, der(fill, 40))
            .build()
            .unwrap()
    };
    let new = d.join("new.blob");
    std::fs::write(&new, blob(2)).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = d.join("certs");
    std::fs::write(&p, blob(1)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    let as_nobody = |extra: &[&str]| {
        // ETXTBSY: a child that another test thread forks while the copy's
        // write descriptor is open keeps it open until it execs; wait for it.
        let mut tries = 0;
        loop {
            let r = Command::new(&exe)
                .uid(NOBODY)
                .gid(NOBODY)
                .arg("install")
                .args(extra)
                .args(["--no-verify", s(&new), s(&p)])
                .output();
            match r {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r.unwrap(),
            }
        }
    };
    // Root's file: nobody cannot chown the new one to root, and need not.
    let o = as_nobody(&[]);
    assert!(o.status.success(), "{}", support::out(&o));
    assert_eq!(std::fs::read(&p).unwrap(), blob(2));
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY));
    assert_eq!(m.permissions().mode() & 0o7777, 0o666, "the old mode kept");
    // Group 0 asked for, and nobody is not in it: refused, blob unchanged.
    std::fs::write(&new, blob(3)).unwrap();
    let o = as_nobody(&["--group", "0"]);
    assert_eq!(o.status.code(), Some(1), "{}", support::out(&o));
    assert_eq!(std::fs::read(&p).unwrap(), blob(2));
    std::fs::remove_dir_all(&d).unwrap();
}
