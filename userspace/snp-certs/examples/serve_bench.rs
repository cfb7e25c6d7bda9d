//! Benchmark: serving a 16 KiB certificate blob into guest memory.
//!
//! Variants, measured interleaved in the same run on the same file:
//! * `baseline`: per request open + fstat + shared OFD lock + read into guest
//!   memory + unlock + close (what a VMM without a cache does);
//! * `floor`: shared OFD lock + copy of a cached blob into guest memory + unlock
//!   on an already open descriptor (no freshness check at all: the least any
//!   correct locked server can do);
//! * `stat-check`: the floor plus the classic re-check `stat(path)` + `fstat(fd)`;
//! * `server`: `BlobServer::acquire` (lock + inotify freshness check) + copy +
//!   `release`, i.e. what `snp-certs` does per request;
//! * `handler`: `ReqCertsHandler::after_run` on a simulated PENDING exit (lock,
//!   checks, copy, answer) and then on the DONE exit that NOTIFY_DONE asks for
//!   (unlock), i.e. what a VMM does per request.
//!
//! Prints p50/p99 per variant and the ratios. Timings are printed, never asserted.
//! Usage: cargo run --release --example serve_bench [ROUNDS] [ITERS_PER_ROUND]

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use snp_certs::kvm::{self, kvm_run};
use snp_certs::store::{self, BlobServer, LockKind};
use snp_certs::table::{Builder, CertKind};
use snp_certs::vmgexit::{
    Answer, FlatMemory, GuestMemory, ReqCertsHandler, Step, STATUS_DONE, STATUS_PENDING,
};

const GPA: u64 = 0x10_0000;

fn blob_16k() -> Vec<u8> {
    let data = 16384 - 4 * 24;
    Builder::new()
        .add_kind(CertKind::Ark, vec![1; data / 3])
        .add_kind(CertKind::Ask, vec![2; data / 3])
        .add_kind(CertKind::Vcek, vec![3; data - 2 * (data / 3)])
        .build()
        .unwrap()
}

fn baseline(path: &Path, mem: &mut FlatMemory) {
    let mut f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    assert!(store::try_lock(f.as_fd(), LockKind::Shared).unwrap());
    f.read_exact(&mut mem.bytes[..len]).unwrap();
    store::unlock(f.as_fd()).unwrap();
}

fn floor(f: &File, cache: &[u8], mem: &mut FlatMemory) {
    assert!(store::try_lock(f.as_fd(), LockKind::Shared).unwrap());
    mem.write(GPA, cache).unwrap();
    store::unlock(f.as_fd()).unwrap();
}

fn stat_check(f: &File, path: &Path, cache: &[u8], mem: &mut FlatMemory) {
    assert!(store::try_lock(f.as_fd(), LockKind::Shared).unwrap());
    let a = f.metadata().unwrap();
    let b = std::fs::metadata(path).unwrap();
    assert!(a.ino() == b.ino() && a.dev() == b.dev());
    mem.write(GPA, cache).unwrap();
    store::unlock(f.as_fd()).unwrap();
}

fn server(s: &mut BlobServer, mem: &mut FlatMemory) {
    let b = s.acquire().unwrap();
    mem.write(GPA, b).unwrap();
    s.release();
}

fn pending(run: &mut kvm_run) {
    run.exit_reason = kvm::KVM_EXIT_VMGEXIT;
    run.__bindgen_anon_1.vmgexit.type_ = kvm::KVM_USER_VMGEXIT_REQ_CERTS;
    // SAFETY: plain integer fields of the REQ_CERTS member just selected.
    let rc = unsafe { &mut run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs };
    rc.data_gpa = GPA;
    rc.data_npages = 4;
    rc.ret = 0;
    rc.flags = 0;
    rc.status = STATUS_PENDING;
}

/// What KVM writes for the DONE exit after acting on a NOTIFY_DONE answer.
fn done(run: &mut kvm_run) {
    // SAFETY: plain integer fields of the REQ_CERTS member `pending` selected.
    let rc = unsafe { &mut run.__bindgen_anon_1.vmgexit.__bindgen_anon_1.req_certs };
    rc.flags = 0;
    rc.status = STATUS_DONE;
}

fn handler(h: &mut ReqCertsHandler<BlobServer>, run: &mut kvm_run, mem: &mut FlatMemory) {
    let s = h.after_run(run, Ok(()), mem).unwrap();
    debug_assert!(matches!(s, Step::Answered(Answer::Certificates { .. })));
    done(run);
    let s = h.after_run(run, Ok(()), mem).unwrap();
    debug_assert_eq!(s, Step::Done);
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);

    let dir = std::env::temp_dir().join(format!("snp-certs-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("certs.bin");
    let blob = blob_16k();
    assert_eq!(blob.len(), 16384);
    store::install(&path, &blob, None).unwrap();

    let mut mem = FlatMemory::new(GPA, 4 * 4096);
    let cached_file = File::open(&path).unwrap();
    let cache = std::fs::read(&path).unwrap();
    let mut srv = BlobServer::new(&path).unwrap();
    let mut certs = ReqCertsHandler::new(BlobServer::new(&path).unwrap());
    let mut run = kvm_run::default();

    let names = ["baseline", "floor", "stat-check", "server", "handler"];
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(rounds * iters); names.len()];
    // warm-up
    for _ in 0..2000 {
        baseline(&path, &mut mem);
        floor(&cached_file, &cache, &mut mem);
        server(&mut srv, &mut mem);
    }
    for _ in 0..rounds {
        for (v, out) in samples.iter_mut().enumerate() {
            for _ in 0..iters {
                if v == 4 {
                    pending(&mut run);
                }
                let t = Instant::now();
                match v {
                    0 => baseline(&path, &mut mem),
                    1 => floor(&cached_file, &cache, &mut mem),
                    2 => stat_check(&cached_file, &path, &cache, &mut mem),
                    3 => server(&mut srv, &mut mem),
                    _ => handler(&mut certs, &mut run, &mut mem),
                }
                out.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    assert_eq!(mem.read(GPA, blob.len()).unwrap(), blob.as_slice());
    assert!(!certs.is_holding(), "the DONE exit releases the lock");
    assert_eq!(
        srv.reloads(),
        1,
        "the cached server should not have reloaded"
    );

    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    println!(
        "serve_bench: 16 KiB blob, {} rounds x {} requests per variant, interleaved",
        rounds, iters
    );
    println!("{:<11} {:>9} {:>9}", "variant", "p50 (us)", "p99 (us)");
    for (n, s) in names.iter().zip(samples.iter_mut()) {
        s.sort_unstable();
        let (a, b) = (pct(s, 0.50), pct(s, 0.99));
        p50.push(a as f64);
        p99.push(b as f64);
        println!(
            "{:<11} {:>9.3} {:>9.3}",
            n,
            a as f64 / 1000.0,
            b as f64 / 1000.0
        );
    }
    let r = |x: f64, y: f64| x / y;
    println!(
        "RATIO baseline/server: p50 {:.2}x  p99 {:.2}x   (goal >= 2x faster than baseline)",
        r(p50[0], p50[3]),
        r(p99[0], p99[3])
    );
    println!(
        "RATIO server/floor:    p50 {:.2}x  p99 {:.2}x   (goal <= 1.5x of floor)",
        r(p50[3], p50[1]),
        r(p99[3], p99[1])
    );
    println!(
        "RATIO stat-check/floor: p50 {:.2}x  p99 {:.2}x; handler/floor: p50 {:.2}x  p99 {:.2}x",
        r(p50[2], p50[1]),
        r(p99[2], p99[1]),
        r(p50[4], p50[1]),
        r(p99[4], p99[1])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
