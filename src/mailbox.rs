//! Typed messages between reactors, and the handle that wakes a reactor.
//!
//! Any thread may post [`Mail`] to any reactor; the owner drains its inbox once per loop
//! iteration. A poster writes the reactor's eventfd only if the reactor flagged itself as
//! about to sleep, so a batch of mail costs at most one wake-up.
//!
//! Monitoring requests ([`SnapshotRequest`]) wait in a small bounded queue beside the inbox;
//! a [`Mail::Snapshot`] tells the owner to answer them.

use crate::stats::SnapshotRequest;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A message for the reactor that owns connection `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mail {
    /// The connection's outbound queue has new bytes (or went slow): send them.
    Flush(u64),
    /// Close the connection (a kill from another core, e.g. a replaced route).
    Close(u64),
    /// The bcrypt verdict for the connection `token` that waits on it after its CONNECT.
    AuthDone { token: u64, ok: bool },
    /// Monitoring requests are waiting: answer them ([`ReactorHandle::take_snapshot_requests`]).
    Snapshot,
    /// The configuration was reloaded: take the new options and apply them to every
    /// connection (limits, re-authorization, permissions).
    Reload,
}

/// Undelivered mail per reactor above which a post first coalesces duplicates, so the
/// inbox holds at most one message of each kind per connection (a reactor that fell
/// behind cannot grow it without bound; no message is lost).
const INBOX_MAX: usize = 1 << 20;

/// Monitoring requests waiting for one reactor. Past this the request is refused (dropped
/// unanswered), so a stuck reactor cannot make requests pile up.
const SNAPSHOTS_MAX: usize = 64;

/// The part of a reactor other threads may touch.
pub struct ReactorHandle {
    inbox: Mutex<Vec<Mail>>,
    sleeping: AtomicBool,
    /// Something the reactor waits for besides mail happened elsewhere (a subscriber a
    /// paused publisher waits on drained): its next sleep is skipped.
    nudged: AtomicBool,
    eventfd: OwnedFd,
    snapshots: Mutex<Vec<SnapshotRequest>>,
}

impl ReactorHandle {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ReactorHandle {
            inbox: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            nudged: AtomicBool::new(false),
            // SAFETY: fd is a fresh descriptor we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
            snapshots: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Mail>> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Wakes the reactor (one eventfd write).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// Posts `mail` (emptied) to this reactor; wakes it only if it is (about to be) asleep.
    pub fn post(&self, mail: &mut Vec<Mail>) {
        {
            let mut inbox = self.lock();
            if inbox.len() + mail.len() > INBOX_MAX {
                // Never drop mail (a lost Flush would strand bytes); the owner is behind,
                // so make sure it is awake and keep the overflow bounded by coalescing.
                inbox.sort_unstable_by_key(mail_key);
                inbox.dedup();
            }
            inbox.append(mail);
        }
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Tells the reactor to look again at what it waits for, waking it only if it sleeps.
    /// Never lost: either the reactor's `prepare_sleep` sees the flag, or this sees the
    /// reactor's sleeping flag and writes the eventfd.
    pub fn nudge(&self) {
        self.nudged.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }

    /// Owner only: moves every posted message into `into`.
    pub fn drain(&self, into: &mut Vec<Mail>) {
        let mut inbox = self.lock();
        if !inbox.is_empty() {
            into.append(&mut inbox);
        }
    }

    /// Queues a monitoring request and tells the reactor. Returns false (the request is
    /// dropped unanswered) when too many are already waiting.
    pub fn request_snapshot(&self, req: SnapshotRequest) -> bool {
        {
            let mut q = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= SNAPSHOTS_MAX {
                return false;
            }
            q.push(req);
        }
        self.post(&mut vec![Mail::Snapshot]);
        true
    }

    /// Owner only: the monitoring requests waiting.
    pub fn take_snapshot_requests(&self) -> Vec<SnapshotRequest> {
        std::mem::take(&mut *self.snapshots.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Owner only: flags the reactor as about to sleep. Returns false (and clears the flag)
    /// if mail or a nudge is already waiting, in which case the owner must not sleep.
    pub fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if self.nudged.swap(false, Ordering::SeqCst) || !self.lock().is_empty() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Owner only: the reactor is awake again.
    /// True while the reactor sleeps (or is about to): mail would cost it a wake-up.
    #[inline]
    pub fn is_sleeping(&self) -> bool {
        self.sleeping.load(Ordering::SeqCst)
    }

    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

fn mail_key(m: &Mail) -> (u8, u64) {
    match *m {
        Mail::Flush(t) => (0, t),
        Mail::Close(t) => (1, t),
        Mail::AuthDone { token, ok } => (2 + ok as u8, token),
        Mail::Snapshot => (4, 0),
        Mail::Reload => (5, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_wakes_only_a_sleeping_reactor() {
        let h = ReactorHandle::new().unwrap();
        let mut buf = [0u8; 8];
        let read = |buf: &mut [u8; 8]| {
            // SAFETY: reads at most 8 bytes into a valid buffer from our eventfd.
            unsafe { libc::read(h.eventfd(), buf.as_mut_ptr().cast(), 8) }
        };
        h.post(&mut vec![Mail::Flush(1)]);
        assert_eq!(read(&mut buf), -1, "awake reactor: no eventfd write");
        let mut got = Vec::new();
        h.drain(&mut got);
        assert_eq!(got, vec![Mail::Flush(1)]);
        assert!(h.prepare_sleep());
        h.post(&mut vec![Mail::Close(2)]);
        assert_eq!(read(&mut buf), 8, "sleeping reactor is woken");
        assert!(!h.prepare_sleep(), "mail waiting: do not sleep");
    }

    #[test]
    fn nudge_is_never_lost() {
        let h = ReactorHandle::new().unwrap();
        let mut buf = [0u8; 8];
        let read = |buf: &mut [u8; 8]| {
            // SAFETY: reads at most 8 bytes into a valid buffer from our eventfd.
            unsafe { libc::read(h.eventfd(), buf.as_mut_ptr().cast(), 8) }
        };
        // Nudged while awake: no eventfd write, but the next sleep is skipped (once).
        h.nudge();
        assert_eq!(read(&mut buf), -1, "awake reactor: no eventfd write");
        assert!(!h.prepare_sleep(), "nudged: look again before sleeping");
        assert!(h.prepare_sleep(), "the nudge is used up");
        // Nudged while asleep: woken.
        h.nudge();
        assert_eq!(read(&mut buf), 8, "sleeping reactor is woken");
        h.awake();
    }

    #[test]
    fn snapshot_requests_are_bounded() {
        use crate::stats::{SnapshotKind, SnapshotQuery, SortKey};
        let h = ReactorHandle::new().unwrap();
        let query = SnapshotQuery {
            kind: SnapshotKind::Clients,
            sort: SortKey::Cid,
            keep: 1,
            subs: false,
            cid: None,
        };
        let req = || SnapshotRequest {
            query,
            reply: Box::new(|_| {}),
        };
        for _ in 0..SNAPSHOTS_MAX {
            assert!(h.request_snapshot(req()));
        }
        assert!(!h.request_snapshot(req()), "refused past the bound");
        let mut got = Vec::new();
        h.drain(&mut got);
        assert!(got.iter().all(|m| *m == Mail::Snapshot));
        assert_eq!(h.take_snapshot_requests().len(), SNAPSHOTS_MAX);
        assert!(h.take_snapshot_requests().is_empty());
    }
}
