//! How `BlobServer`s notice changes: one inotify instance per process shared
//! by all servers, and changes that do not go through the watched name.
//!
//! The tests of this file share the process-wide watch registry, so they run
//! one at a time (`SERIAL`) to make its watch count exact.

mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use snp_certs::store::{self, BlobServer, LockKind};
use snp_certs::watch;
use support::{blob, tmpdir};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Rewrites the file `path` names in place, under the exclusive lock, as a
/// tool following only the kernel documentation does.
fn write_in_place(path: &Path, b: &[u8]) {
    let lf = store::open_locked(path, LockKind::Exclusive, Some(Duration::from_secs(5))).unwrap();
    let mut f = lf.file();
    f.set_len(0).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b).unwrap();
}

fn serve(s: &mut BlobServer) -> Vec<u8> {
    let b = s.acquire().unwrap().to_vec();
    s.release();
    b
}

/// Inotify instances this process has open.
fn inotify_instances() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.as_os_str() == "anon_inode:inotify")
        .count()
}

/// A long backstop interval, so only inotify can report a change.
const NO_BACKSTOP: Duration = Duration::from_secs(3600);

#[test]
fn more_servers_than_the_inotify_instance_limit_each_see_their_own_file() {
    let _g = serial();
    // Before: one instance per server, and the 129th server got EMFILE.
    let limit: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(128);
    let n = (limit + 8).clamp(200, 2000);
    let dirs = 20;
    let top = tmpdir("many");
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let d = top.join(format!("d{}", i % dirs));
            std::fs::create_dir_all(&d).unwrap();
            d.join(format!("c{i}"))
        })
        .collect();
    for (i, p) in paths.iter().enumerate() {
        store::install(p, &blob(i as u8, 10 + i % 7), None).unwrap();
    }
    let base = watch::watch_count();
    let mut servers: Vec<BlobServer> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            BlobServer::new(p)
                .unwrap_or_else(|e| panic!("server {i} of {n} (limit {limit}): {e}"))
                .with_revalidate(NO_BACKSTOP)
        })
        .collect();
    for (i, s) in servers.iter_mut().enumerate() {
        assert_eq!(serve(s), blob(i as u8, 10 + i % 7));
    }
    assert_eq!(inotify_instances(), 1, "one inotify instance per process");
    let after_load = watch::watch_count();
    // Replace a third by rename, rewrite a third in place, leave a third.
    for (i, p) in paths.iter().enumerate() {
        match i % 3 {
            0 => store::install(p, &blob(0xf0 ^ i as u8, 20), None).unwrap(),
            1 => write_in_place(p, &blob(0x0f ^ i as u8, 30)),
            _ => {}
        }
    }
    for (i, s) in servers.iter_mut().enumerate() {
        let reloads = s.reloads();
        let got = serve(s);
        match i % 3 {
            0 => assert_eq!(got, blob(0xf0 ^ i as u8, 20), "server {i}"),
            1 => assert_eq!(got, blob(0x0f ^ i as u8, 30), "server {i}"),
            _ => {
                assert_eq!(got, blob(i as u8, 10 + i % 7), "server {i}");
                // Events about the other files in its directory are not its own.
                assert_eq!(s.reloads(), reloads, "server {i} reloaded for nothing");
            }
        }
    }
    // Servers on one directory share its kernel watch; each file has one.
    assert_eq!(
        after_load - base,
        dirs + n,
        "kernel watches for {n} servers"
    );
    drop(servers);
    assert_eq!(watch::watch_count(), base, "watches left after all servers");
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn shared_watch_survives_until_its_last_server() {
    let _g = serial();
    let d = tmpdir("shared");
    let p = d.join("c");
    store::install(&p, &blob(1, 10), None).unwrap();
    let base = watch::watch_count();
    let mut a = BlobServer::new(&p).unwrap().with_revalidate(NO_BACKSTOP);
    let mut b = BlobServer::new(&p).unwrap().with_revalidate(NO_BACKSTOP);
    assert_eq!(serve(&mut a), blob(1, 10));
    assert_eq!(serve(&mut b), blob(1, 10));
    let both = watch::watch_count();
    assert!(both > base);
    drop(a);
    // b's watches are still armed: an in-place write is seen at once.
    assert_eq!(watch::watch_count(), both);
    write_in_place(&p, &blob(2, 10));
    assert_eq!(serve(&mut b), blob(2, 10));
    drop(b);
    assert_eq!(watch::watch_count(), base);
    // A new server after all were dropped arms a fresh watch that works.
    let mut c = BlobServer::new(&p).unwrap().with_revalidate(NO_BACKSTOP);
    assert_eq!(serve(&mut c), blob(2, 10));
    write_in_place(&p, &blob(3, 10));
    assert_eq!(serve(&mut c), blob(3, 10));
    drop(c);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn servers_on_other_threads_see_updates_read_by_one_another() {
    // One thread may read the shared queue and count another server's event:
    // that server must still see it.
    let _g = serial();
    let d = tmpdir("threads");
    let paths: Vec<PathBuf> = (0..4).map(|i| d.join(format!("c{i}"))).collect();
    for p in &paths {
        store::install(p, &blob(1, 10), None).unwrap();
    }
    let mut servers: Vec<BlobServer> = paths
        .iter()
        .map(|p| BlobServer::new(p).unwrap().with_revalidate(NO_BACKSTOP))
        .collect();
    for s in &mut servers {
        assert_eq!(serve(s), blob(1, 10));
    }
    for (round, fill) in (2u8..12).enumerate() {
        let p = &paths[round % paths.len()];
        write_in_place(p, &blob(fill, 10));
        // Another server checks first (and drains the queue).
        let other = (round + 1) % servers.len();
        serve(&mut servers[other]);
        let mine = round % servers.len();
        let h = std::thread::scope(|sc| sc.spawn(|| serve(&mut servers[mine])).join().unwrap());
        assert_eq!(h, blob(fill, 10), "round {round}");
    }
    drop(servers);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Replaces the symbolic link `link` atomically with one pointing to `target`.
fn relink(target: &Path, link: &Path) {
    let tmp = link.with_extension("newlink");
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

#[test]
fn symlinked_final_component_changes_are_seen_at_once() {
    let _g = serial();
    let top = tmpdir("symlink");
    let (d, real) = (top.join("served"), top.join("real"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(&real).unwrap();
    let target = real.join("certs.bin");
    let p = d.join("c");
    store::install(&target, &blob(1, 10), None).unwrap();
    std::os::unix::fs::symlink(&target, &p).unwrap();
    let mut s = BlobServer::new(&p).unwrap().with_revalidate(NO_BACKSTOP);
    assert_eq!(serve(&mut s), blob(1, 10));
    // Written in place through the target's name: no event names "c" in the
    // watched directory, and the inode stays the same (before: served blob 1
    // forever).
    write_in_place(&target, &blob(2, 10));
    assert_eq!(serve(&mut s), blob(2, 10));
    // Replaced by rename at the target's name.
    store::install(&target, &blob(3, 10), None).unwrap();
    assert_eq!(serve(&mut s), blob(3, 10));
    // The re-armed inode watch follows the new inode.
    write_in_place(&target, &blob(4, 10));
    assert_eq!(serve(&mut s), blob(4, 10));
    // The link itself re-pointed.
    let other = real.join("other.bin");
    store::install(&other, &blob(5, 10), None).unwrap();
    relink(&other, &p);
    assert_eq!(serve(&mut s), blob(5, 10));
    write_in_place(&other, &blob(6, 10));
    assert_eq!(serve(&mut s), blob(6, 10));
    // The old target is no longer what the path names: its changes do not
    // matter, and must not cost a reload.
    let reloads = s.reloads();
    write_in_place(&target, &blob(7, 10));
    assert_eq!(serve(&mut s), blob(6, 10));
    assert_eq!(s.reloads(), reloads);
    drop(s);
    std::fs::remove_dir_all(&top).unwrap();
}

#[test]
fn write_through_another_hard_link_is_seen_at_once() {
    let _g = serial();
    let top = tmpdir("hardlink");
    let (d, elsewhere) = (top.join("served"), top.join("elsewhere"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let p = d.join("c");
    let other_name = elsewhere.join("alias");
    store::install(&p, &blob(1, 10), None).unwrap();
    std::fs::hard_link(&p, &other_name).unwrap();
    let mut s = BlobServer::new(&p).unwrap().with_revalidate(NO_BACKSTOP);
    assert_eq!(serve(&mut s), blob(1, 10));
    // Same inode, changed through a name in another directory (before:
    // served blob 1 forever).
    write_in_place(&other_name, &blob(2, 10));
    assert_eq!(serve(&mut s), blob(2, 10));
    write_in_place(&other_name, &blob(3, 20));
    assert_eq!(serve(&mut s), blob(3, 20));
    drop(s);
    std::fs::remove_dir_all(&top).unwrap();
}
