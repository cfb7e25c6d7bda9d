//! One inotify instance per process, shared by every [`BlobServer`](crate::store::BlobServer).
//!
//! A VMM runs one `BlobServer` per vCPU thread, and a host runs many VMMs as
//! one user. With an inotify instance per server, the default
//! `fs.inotify.max_user_instances` (128) ran out after 128 vCPUs (`EMFILE`).
//! Here all servers of a process share one instance:
//!
//! * The kernel returns the same watch descriptor (wd) for the same inode, so
//!   servers on the same directory or file share one kernel watch. The
//!   registry counts its users and calls `inotify_rm_watch` only when the last
//!   one goes. Every watch uses the same mask ([`MASK`]), because a second
//!   `inotify_add_watch` on an inode replaces the first one's mask.
//! * Events are read by whichever server checks first, under the registry's
//!   mutex, and turned into generation counters: one per watch for events with
//!   no name (the watched directory or file itself changed, moved, went away)
//!   and one per (directory watch, file name) for events naming a file in a
//!   watched directory. A server remembers the counters' values from when it
//!   armed its watches; a counter that moved means "reload". The read happens
//!   under the mutex, so a server that saw an empty queue after taking its
//!   lock knows every event queued before that moment has been counted (a
//!   read by another thread that raced with it finishes its counting before
//!   the mutex is released).
//! * A queue overflow, a failed or zero-byte read, or a malformed record moves
//!   the process-wide [`EPOCH`]: every server reloads.
//! * When the kernel drops a watch itself (`IN_IGNORED`: the directory or file
//!   is gone, or the file system unmounted) the registry forgets it after
//!   moving its counters, so a later watch that reuses the number is a new
//!   entry; each entry carries a unique id, and a server's drop only affects the
//!   entry it registered.
//!
//! No thread is spawned: the queue is read only when a server checks (one
//! `read()` returning `EAGAIN` on the fast path, as before, plus an uncontended
//! mutex).

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::errno::Errno;
use nix::libc;
use nix::sys::inotify::{InitFlags, Inotify};

/// Events that can change what a server must serve. On a directory: changes
/// to the files in it (write, attributes, close after writing, renames in and
/// out, create, delete) and to the directory itself (deleted, moved). On a
/// file: written, attributes or link count changed (a rename over one of its
/// names or an unlink drops the link count and raises `IN_ATTRIB`), closed
/// after writing, deleted, moved.
pub(crate) const MASK: u32 = libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// Size of `struct inotify_event` without its name.
const EVENT_HDR: usize = 16;

/// Moves when events may have been lost (overflow, read error, malformed
/// record): every server reloads.
static EPOCH: AtomicU64 = AtomicU64::new(0);

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();

type Counter = Arc<AtomicU64>;

struct Entry {
    /// Unique per registration of a wd, so a reused wd is a different entry.
    id: u64,
    /// Watches registered on this wd.
    users: usize,
    /// Events with no name: the watched inode itself.
    itself: Counter,
    /// Events naming a file in the watched directory, for the names servers
    /// asked for, with their number of users.
    names: HashMap<OsString, (usize, Counter)>,
}

struct Registry {
    inotify: Option<Inotify>,
    entries: HashMap<i32, Entry>,
    next_id: u64,
    buf: Vec<u8>,
}

fn registry() -> MutexGuard<'static, Registry> {
    let m = REGISTRY.get_or_init(|| {
        Mutex::new(Registry {
            inotify: None,
            entries: HashMap::new(),
            next_id: 0,
            buf: vec![0; 4096],
        })
    });
    // The registry's state stays consistent between statements (no panicking
    // code runs with it half-updated), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

/// Walks a buffer of `struct inotify_event` records, calling `f(wd, mask,
/// name)` for each (name without its NUL padding). `None` if the buffer is
/// malformed.
fn parse_events(mut buf: &[u8], mut f: impl FnMut(i32, u32, &[u8])) -> Option<()> {
    while !buf.is_empty() {
        let wd = i32::from_ne_bytes(buf.get(0..4)?.try_into().ok()?);
        let mask = u32::from_ne_bytes(buf.get(4..8)?.try_into().ok()?);
        let len = usize::try_from(u32::from_ne_bytes(buf.get(12..16)?.try_into().ok()?)).ok()?;
        let end = EVENT_HDR.checked_add(len)?;
        let raw_name = buf.get(EVENT_HDR..end)?;
        let name = raw_name.split(|&c| c == 0).next().unwrap_or(&[]);
        f(wd, mask, name);
        buf = buf.get(end..)?;
    }
    Some(())
}

/// Reads the queue with `read` until it is empty, passing every record to
/// `f`. Returns false if events may have been lost: a read error, a
/// malformed buffer, or a `read` that returns 0 (which inotify should never
/// do; it ends the loop instead of spinning on it).
fn drain_with(
    mut read: impl FnMut(&mut [u8]) -> Result<usize, Errno>,
    buf: &mut [u8],
    mut f: impl FnMut(i32, u32, &[u8]),
) -> bool {
    let mut ok = true;
    loop {
        let n = match read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(Errno::EAGAIN) => return ok,
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        };
        match buf.get(..n).and_then(|b| parse_events(b, &mut f)) {
            Some(()) => {}
            None => ok = false,
        }
    }
}

impl Registry {
    fn dispatch(entries: &mut HashMap<i32, Entry>, wd: i32, mask: u32, name: &[u8]) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            bump(&EPOCH);
            return;
        }
        let Some(e) = entries.get(&wd) else {
            return; // a watch we already removed
        };
        if name.is_empty() {
            bump(&e.itself);
        } else if let Some((_, c)) = e.names.get(OsStr::from_bytes(name)) {
            bump(c);
        }
        if mask & libc::IN_IGNORED != 0 {
            // The kernel dropped this watch: its users must re-arm, and the
            // number may be handed out again for another inode.
            bump(&e.itself);
            for (_, c) in e.names.values() {
                bump(c);
            }
            entries.remove(&wd);
        }
    }

    fn drain(&mut self) {
        let Registry {
            inotify,
            entries,
            buf,
            ..
        } = self;
        let Some(ino) = inotify.as_ref() else {
            return;
        };
        let fd = ino.as_fd();
        let ok = drain_with(
            |b| nix::unistd::read(fd, b),
            buf,
            |wd, mask, name| Registry::dispatch(entries, wd, mask, name),
        );
        if !ok {
            bump(&EPOCH);
        }
    }

    fn inotify(&mut self) -> io::Result<&Inotify> {
        if self.inotify.is_none() {
            let i = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
            self.inotify = Some(i);
        }
        self.inotify
            .as_ref()
            .ok_or_else(|| io::Error::other("inotify instance missing"))
    }
}

/// One server's registration on a watched directory (optionally for one file
/// name in it) or file. Dropping it unregisters; the kernel watch goes with
/// its last user.
pub(crate) struct Watch {
    wd: i32,
    id: u64,
    name: Option<OsString>,
    epoch: u64,
    itself: (Counter, u64),
    named: Option<(Counter, u64)>,
}

impl Watch {
    /// Watches `path` (a directory, or a file; symbolic links are followed)
    /// with [`MASK`]. With `name`, events naming that file in the directory
    /// count too; events naming other files do not.
    pub(crate) fn new(path: &Path, name: Option<&OsStr>) -> io::Result<Watch> {
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL"))?;
        let mut reg = registry();
        // Count what is queued first, so that events from before this watch
        // do not make its server reload once more for nothing.
        reg.drain();
        let fd = reg.inotify()?.as_fd().as_raw_fd();
        // SAFETY: fd is the registry's open inotify descriptor (kept open
        // while the registry lock is held), cpath a valid NUL-terminated string.
        let wd = unsafe { libc::inotify_add_watch(fd, cpath.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        if !reg.entries.contains_key(&wd) {
            let id = reg.next_id;
            reg.next_id = id.wrapping_add(1);
            reg.entries.insert(
                wd,
                Entry {
                    id,
                    users: 0,
                    itself: Arc::new(AtomicU64::new(0)),
                    names: HashMap::new(),
                },
            );
        }
        let entry = reg
            .entries
            .get_mut(&wd)
            .ok_or_else(|| io::Error::other("inotify registry entry vanished"))?;
        entry.users = entry.users.saturating_add(1);
        let itself = Arc::clone(&entry.itself);
        let named = name.map(|n| {
            let slot = entry
                .names
                .entry(n.to_os_string())
                .or_insert_with(|| (0, Arc::new(AtomicU64::new(0))));
            slot.0 = slot.0.saturating_add(1);
            Arc::clone(&slot.1)
        });
        let id = entry.id;
        drop(reg);
        let seen = |c: Counter| {
            let v = c.load(Ordering::SeqCst);
            (c, v)
        };
        Ok(Watch {
            wd,
            id,
            name: name.map(OsStr::to_os_string),
            epoch: EPOCH.load(Ordering::SeqCst),
            itself: seen(itself),
            named: named.map(seen),
        })
    }

    /// True if an event that concerns this watch was counted since it was
    /// armed, or events may have been lost. Call [`drain`] first: it reads
    /// the queue once for all the watches a server checks.
    pub(crate) fn fired_no_drain(&self) -> bool {
        EPOCH.load(Ordering::SeqCst) != self.epoch
            || self.itself.0.load(Ordering::SeqCst) != self.itself.1
            || self
                .named
                .as_ref()
                .is_some_and(|(c, v)| c.load(Ordering::SeqCst) != *v)
    }
}

/// Reads the shared queue and counts its events.
pub(crate) fn drain() {
    registry().drain();
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut reg = registry();
        let Registry {
            inotify, entries, ..
        } = &mut *reg;
        let Some(e) = entries.get_mut(&self.wd) else {
            return; // already dropped by the kernel (IN_IGNORED)
        };
        if e.id != self.id {
            return; // the wd now belongs to a newer watch
        }
        if let Some(n) = &self.name {
            if let Some(slot) = e.names.get_mut(n) {
                slot.0 = slot.0.saturating_sub(1);
                if slot.0 == 0 {
                    e.names.remove(n);
                }
            }
        }
        e.users = e.users.saturating_sub(1);
        if e.users == 0 {
            entries.remove(&self.wd);
            if let Some(i) = inotify.as_ref() {
                // SAFETY: plain syscall on our inotify descriptor; an error
                // (EINVAL: the kernel already dropped the watch) is harmless.
                unsafe {
                    libc::inotify_rm_watch(i.as_fd().as_raw_fd(), self.wd);
                }
            }
        }
    }
}

/// Kernel watches the registry holds (for tests).
pub fn watch_count() -> usize {
    registry().entries.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(wd: i32, mask: u32, name: &[u8]) -> Vec<u8> {
        let padded = if name.is_empty() {
            0
        } else {
            (name.len() + 1).div_ceil(16) * 16
        };
        let mut v = Vec::new();
        v.extend_from_slice(&wd.to_ne_bytes());
        v.extend_from_slice(&mask.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&(padded as u32).to_ne_bytes());
        let mut n = name.to_vec();
        n.resize(padded, 0);
        v.extend(n);
        v
    }

    #[test]
    fn inotify_record_parsing() {
        let mut two = rec(3, 2, b"other");
        two.extend(rec(7, 0x400, b""));
        two.extend(rec(-1, libc::IN_Q_OVERFLOW, b""));
        let mut seen = Vec::new();
        assert_eq!(
            parse_events(&two, |wd, m, n| seen.push((wd, m, n.to_vec()))),
            Some(())
        );
        assert_eq!(
            seen,
            vec![
                (3, 2, b"other".to_vec()),
                (7, 0x400, vec![]),
                (-1, libc::IN_Q_OVERFLOW, vec![])
            ]
        );
        let bad = rec(1, 2, b"other");
        assert_eq!(parse_events(&bad[..bad.len() - 1], |_, _, _| {}), None);
        assert_eq!(parse_events(&bad[..10], |_, _, _| {}), None);
    }

    #[test]
    fn inotify_read_of_zero_bytes_ends_the_drain() {
        // A read() that keeps returning 0 must not make the per-request check spin.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut calls = 0u32;
            let mut buf = vec![0u8; 64];
            let ok = drain_with(
                |_| {
                    calls += 1;
                    Ok(0)
                },
                &mut buf,
                |_, _, _| {},
            );
            let _ = tx.send((ok, calls));
        });
        let (ok, calls) = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("drain spins on a zero-byte read");
        assert!(!ok, "a zero-byte read must count as lost events");
        assert_eq!(calls, 1);
        let mut buf = vec![0u8; 64];
        assert!(drain_with(|_| Err(Errno::EAGAIN), &mut buf, |_, _, _| {}));
        assert!(!drain_with(|_| Err(Errno::EIO), &mut buf, |_, _, _| {}));
    }

    #[test]
    fn dispatch_counts_by_watch_and_name_and_forgets_ignored_watches() {
        let mut entries = HashMap::new();
        let mk = || Arc::new(AtomicU64::new(0));
        let (a_self, a_c, a_d) = (mk(), mk(), mk());
        let mut names = HashMap::new();
        names.insert(OsString::from("c"), (1, Arc::clone(&a_c)));
        names.insert(OsString::from("d"), (1, Arc::clone(&a_d)));
        entries.insert(
            5,
            Entry {
                id: 1,
                users: 2,
                itself: Arc::clone(&a_self),
                names,
            },
        );
        let get = |c: &Counter| c.load(Ordering::SeqCst);
        Registry::dispatch(&mut entries, 5, libc::IN_MODIFY, b"c");
        assert_eq!((get(&a_self), get(&a_c), get(&a_d)), (0, 1, 0));
        Registry::dispatch(&mut entries, 5, libc::IN_MODIFY, b"other");
        Registry::dispatch(&mut entries, 9, libc::IN_MODIFY, b"c");
        assert_eq!((get(&a_self), get(&a_c), get(&a_d)), (0, 1, 0));
        Registry::dispatch(&mut entries, 5, libc::IN_MOVE_SELF, b"");
        assert_eq!((get(&a_self), get(&a_c), get(&a_d)), (1, 1, 0));
        let e0 = EPOCH.load(Ordering::SeqCst);
        Registry::dispatch(&mut entries, -1, libc::IN_Q_OVERFLOW, b"");
        assert!(EPOCH.load(Ordering::SeqCst) > e0);
        Registry::dispatch(&mut entries, 5, libc::IN_IGNORED, b"");
        assert!(get(&a_self) >= 2 && get(&a_c) == 2 && get(&a_d) == 1);
        assert!(entries.is_empty());
    }
}
