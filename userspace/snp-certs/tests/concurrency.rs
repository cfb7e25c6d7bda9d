//! Crash/concurrency test of the blob store.
//!
//! Reader processes serve the certificate file in a loop (the cached
//! `BlobServer` a VMM uses, and the one-shot `read_locked`), sometimes holding
//! the shared lock for a while as a VMM does until NOTIFY_DONE. Meanwhile the
//! parent runs `snp-certs install` processes, one after another, each with a new
//! generation of the blob, and SIGKILLs about half of them at random moments.
//!
//! Checked: every blob any reader gets is a complete, valid table of one single
//! generation (no torn or mixed blob); generations seen by a reader never go
//! back; a reader that starts a request after an install completed sees that
//! generation or a later one (no completed update lost); after every completed
//! install the file holds exactly that generation; no temporary file survives
//! the next completed install.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snp_certs::store::{self, BlobServer};
use snp_certs::table::{self, Builder, CertKind};

const CHILD_ENV: &str = "SNP_CERTS_STRESS_DIR";

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 32)
}

/// The blob of generation `gen`: three entries whose bytes all encode `gen`, with
/// a size that changes from one generation to the next.
fn gen_blob(gen: u32) -> Vec<u8> {
    let sizes = [
        200 + (gen as usize * 131) % 1500,
        300 + (gen as usize * 71) % 1700,
        400 + (gen as usize * 197) % 9000,
    ];
    let mut b = Builder::new();
    for (i, (k, n)) in [CertKind::Ark, CertKind::Ask, CertKind::Vcek]
        .into_iter()
        .zip(sizes)
        .enumerate()
    {
        let mut d = Vec::with_capacity(n);
        while d.len() < n {
            d.extend_from_slice(&gen.to_le_bytes());
            d.push(i as u8);
        }
        d.truncate(n);
        b = b.add_kind(k, d);
    }
    b.build().unwrap()
}

/// Generation of a served blob, or why it is torn/mixed.
fn check_blob(blob: &[u8]) -> Result<u32, String> {
    let t = table::parse(blob).map_err(|e| format!("invalid table: {e}"))?;
    let first = t.entries().first().ok_or("empty table")?;
    let d = t.data(first).ok_or("no data")?;
    let gen = u32::from_le_bytes(d[..4].try_into().unwrap());
    let want = gen_blob(gen);
    if blob != want.as_slice() {
        return Err(format!(
            "blob of {} bytes is not exactly generation {gen}",
            blob.len()
        ));
    }
    Ok(gen)
}

fn read_completed(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join("completed"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Reader process body (run by the parent as a child of this test binary).
#[test]
#[ignore = "child process of store_survives_sigkilled_updaters"]
fn stress_reader_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let path = dir.join("certs.bin");
    let cached = std::env::var("SNP_CERTS_STRESS_MODE").as_deref() == Ok("cached");
    let mut rng = Rng::new(seed());
    let mut server = BlobServer::new(&path)
        .unwrap()
        .with_wait(Duration::from_secs(10));
    let mut guest = vec![0u8; 16384];
    let (mut reads, mut last, mut busy) = (0u64, 0u32, 0u64);
    while !dir.join("stop").exists() {
        if rng.below(4) == 0 {
            // Idle between requests, as a real guest is: a reader that only ever
            // polls would always run into the updater's lock and never exercise
            // the cached path's change detection.
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
        }
        let completed = read_completed(&dir);
        let gen = if cached {
            let blob = match server.acquire() {
                Ok(b) => b,
                Err(store::StoreError::Busy) => {
                    busy += 1;
                    continue;
                }
                Err(e) => panic!("reader: {e}"),
            };
            guest[..blob.len()].copy_from_slice(blob);
            let n = blob.len();
            if rng.below(8) == 0 {
                // hold the lock as a VMM does until the DONE exit
                std::thread::sleep(Duration::from_micros(rng.below(300)));
            }
            let g = check_blob(&guest[..n]);
            server.release();
            g
        } else {
            let (lock, blob) = store::read_locked(&path, Some(Duration::from_secs(10))).unwrap();
            if rng.below(8) == 0 {
                std::thread::sleep(Duration::from_micros(rng.below(300)));
            }
            drop(lock);
            check_blob(&blob)
        };
        let gen = gen.unwrap_or_else(|e| panic!("reader got a torn or mixed blob: {e}"));
        assert!(gen >= last, "generation went back from {last} to {gen}");
        assert!(
            gen >= completed,
            "completed update {completed} lost: served generation {gen}"
        );
        last = gen;
        reads += 1;
    }
    println!(
        "STRESS reader mode={} reads={reads} reloads={} busy={busy} last_gen={last}",
        if cached { "cached" } else { "oneshot" },
        server.reloads()
    );
}

#[test]
fn store_survives_sigkilled_updaters() {
    let dir = std::env::temp_dir().join(format!("snp-certs-stress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    let path = dir.join("certs.bin");
    let iterations: u32 = std::env::var("SNP_CERTS_STRESS_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    for g in 0..=iterations {
        std::fs::write(dir.join("blobs").join(g.to_string()), gen_blob(g)).unwrap();
    }
    store::install(&path, &gen_blob(0), None).unwrap();
    std::fs::write(dir.join("completed"), "0").unwrap();

    let me = std::env::current_exe().unwrap();
    let mut readers = Vec::new();
    for mode in ["cached", "cached", "oneshot"] {
        readers.push(
            Command::new(&me)
                .args([
                    "stress_reader_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, &dir)
                .env("SNP_CERTS_STRESS_MODE", mode)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(100));

    let bin = env!("CARGO_BIN_EXE_snp-certs");
    let mut rng = Rng::new(seed());
    let (mut completed, mut killed, mut killed_after_done, mut killed_mid_write) =
        (0u32, 0u32, 0u32, 0u32);
    let start = Instant::now();
    for g in 1..=iterations {
        let blob_file = dir.join("blobs").join(g.to_string());
        let mut child = Command::new(bin)
            .arg("install")
            .arg("--no-verify") // generated blobs, not a certificate chain
            .arg("--timeout")
            .arg("20")
            .arg(&blob_file)
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let kill = rng.below(2) == 0;
        if kill {
            std::thread::sleep(Duration::from_micros(rng.below(2000)));
            let _ = child.kill(); // SIGKILL
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            if kill {
                killed_after_done += 1;
            }
            completed = g;
            // Atomically publish "generation g is complete" for the readers.
            let tmp = dir.join("completed.tmp");
            std::fs::write(&tmp, g.to_string()).unwrap();
            std::fs::rename(&tmp, dir.join("completed")).unwrap();
            let (_l, now) = store::read_locked(&path, Some(Duration::from_secs(10))).unwrap();
            assert_eq!(
                check_blob(&now),
                Ok(g),
                "completed install {g} not in the file"
            );
        } else {
            assert!(
                kill,
                "install {g} failed without being killed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            killed += 1;
            // A temporary file means it died between creating it and the rename.
            let tmp_left = std::fs::read_dir(&dir).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("snp-certs-tmp")
            });
            if tmp_left {
                killed_mid_write += 1;
            }
            // Whatever was interrupted, the file is a whole blob of some generation.
            let (_l, now) = store::read_locked(&path, Some(Duration::from_secs(10))).unwrap();
            let got = check_blob(&now).unwrap_or_else(|e| panic!("after killed install {g}: {e}"));
            assert!(
                got == g || got == completed.max(got.min(g)),
                "after killed install {g}: generation {got}"
            );
            assert!(got >= completed);
        }
    }
    let elapsed = start.elapsed();
    // One last clean install must remove any temporary a killed one left.
    store::install(&path, &gen_blob(iterations), None).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("snp-certs-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    std::fs::write(dir.join("stop"), "").unwrap();
    let mut total_reads = 0u64;
    for r in readers {
        let out = r.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "reader failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // libtest may print "test stress_reader_child ... " before it on the line
        let line = stdout
            .lines()
            .find_map(|l| l.find("STRESS reader").map(|i| &l[i..]))
            .expect("reader printed no stats");
        println!("{line}");
        let reads: u64 = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("reads="))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(reads > 0, "a reader never read");
        total_reads += reads;
    }
    println!(
        "STRESS updates={iterations} completed={} killed={killed} (of which left a half-done temporary: {killed_mid_write}; kills that came after the install finished: {killed_after_done}) reads={total_reads} in {:.2?}",
        iterations - killed,
        elapsed
    );
    assert!(
        killed > 0,
        "no updater was killed mid-way; the test did not test anything"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
