//! A connection's outbound queue and the per-batch wake-up bookkeeping.
//!
//! Any reactor may append to any connection's [`Outbound`] (a publisher on core 0 delivering
//! to a subscriber owned by core 1). Only the owning reactor takes bytes out and sends them.
//! The queue is bounded by `max_pending`: past it the connection is marked a slow consumer
//! and the owner closes it; the publisher is never blocked on it.
//!
//! Writes produced while handling one received buffer are staged per destination in a
//! [`WakeBatch`] and appended with one lock per destination per batch.
//!
//! A connection is handed to its owner at most once per batch: the first append after the
//! owner last took the bytes returns [`Pushed::First`], and only then is the connection put
//! on a [`WakeBatch`]. At the end of its batch the publishing reactor moves each
//! destination's list into that reactor's inbox and wakes it only if it is about to sleep.
//!
//! Direct sends: waking a sleeping reactor costs 60-140 µs on these machines, so when the
//! owner sleeps, the publishing reactor may send a plain-text connection's bytes itself
//! ([`Outbound::send_direct`], one non-blocking `send`). Whoever sends holds the queue's
//! *send claim* (one atomic) from taking the bytes until they are all written, so sends never
//! interleave; the owner takes the claim for good before it closes the socket.

use crate::mailbox::Mail;
use ahash::AHashMap;
use std::io;
use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Pending output above which a publisher is paused until the subscriber drains (or a
/// quarter of `max_pending`, if that is smaller). Small enough that a fan-out's queues stay
/// in cache until the kernel copies them out (1:16 used 14-16 % less CPU than with 256 KiB).
pub const STALL_BYTES: usize = 128 * 1024;
/// A route's stall threshold: larger, as it carries a whole server's traffic.
pub const ROUTE_STALL_BYTES: usize = 4 * 1024 * 1024;
/// A send in flight for longer than this means the peer is not reading: the connection
/// is *stuck*, not slow, and pauses nobody (it is cut at `max_pending` or the write
/// deadline instead).
pub const STUCK_AFTER: Duration = Duration::from_millis(100);
/// Staged bytes for one destination above which they are appended at once, so one
/// received buffer cannot stage without bound before `max_pending` is checked.
pub const STAGE_MAX: usize = 256 * 1024;

/// Monotonic nanoseconds since the first call (never 0), for timestamps kept in atomics.
pub fn mono_ns(now: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
    now.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

pub struct Outbound {
    /// The connection id (`cid`), as shown in logs.
    pub cid: u64,
    /// Index of the reactor that owns the socket.
    pub reactor: usize,
    /// The owner's key for the connection (slot and generation), passed through wake batches.
    pub token: u64,
    /// The client negotiated headers (gets HMSG rather than MSG).
    pub headers: AtomicBool,
    max_pending: usize,
    stall_bytes: usize,
    /// Set once the queue stops accepting bytes; readable without the lock so delivery can
    /// skip (and a queue group pass over) a closing connection.
    dead: AtomicBool,
    /// When the owner's current send was submitted ([`mono_ns`]), 0 when none is in
    /// flight. Publishers read it to tell a stuck peer from a slow one.
    send_since_ns: AtomicU64,
    /// Mirror of the pending length, written under the queue lock, read without it.
    pending: AtomicUsize,
    queue: Mutex<Pending>,
    /// Who may send: [`CLAIM_FREE`], [`CLAIM_HELD`] (a send is being made, by the owner or by
    /// a direct sender) or [`CLAIM_CLOSED`] (the owner is closing the socket).
    claim: AtomicU8,
    /// The socket other reactors may send on directly, -1 when they may not (TLS, routes,
    /// closing). Read only while holding the claim.
    direct_fd: AtomicI32,
    /// Messages and payload bytes sent by direct senders, folded into the owner's
    /// per-connection counters when it next looks.
    direct_msgs: AtomicU64,
    direct_bytes: AtomicU64,
    /// Reactors (bit `r % 64`) with a publisher paused on this queue, to be nudged when its
    /// bytes are taken: without it they would poll for the drain.
    drain_watchers: AtomicU64,
}

const CLAIM_FREE: u8 = 0;
const CLAIM_HELD: u8 = 1;
const CLAIM_CLOSED: u8 = 2;

/// What [`Outbound::send_direct`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// Everything pending was written (possibly nothing): the owner need not be told.
    Sent(Taken),
    /// Not sent, or not all of it (the rest is back at the front of the queue), or more
    /// arrived meanwhile: the owner must be told as usual.
    Owner(Taken),
}

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// Messages in `buf` and their payload bytes (for the monitoring counters).
    msgs: u64,
    payload_bytes: u64,
    /// The owner has been told about this connection and has not yet taken the bytes.
    scheduled: bool,
    closed: bool,
    slow: bool,
}

/// What [`Outbound::take_counted`] took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taken {
    pub bytes: usize,
    /// Messages among those bytes, and their payload size.
    pub msgs: u64,
    pub payload_bytes: u64,
}

/// Result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Appended; the owner already knows. Carries the pending length after the append.
    Queued(usize),
    /// Appended, and this is the first append since the owner last took the bytes: the
    /// caller must put the connection on its wake batch.
    First(usize),
    /// The connection is closed or cut off as a slow consumer; nothing was appended.
    /// `First` semantics apply when `notify` is set (the owner must learn it went slow).
    Dropped { notify: bool },
}

impl Pushed {
    pub fn needs_schedule(self) -> bool {
        matches!(self, Pushed::First(_) | Pushed::Dropped { notify: true })
    }
    pub fn pending(self) -> usize {
        match self {
            Pushed::Queued(n) | Pushed::First(n) => n,
            Pushed::Dropped { .. } => 0,
        }
    }
}

impl Outbound {
    /// A route's queue: a larger stall threshold (a route carries a whole server's
    /// traffic); like any queue it pauses publishers only while it drains, never while it
    /// is stuck, so a backed-up peer cannot stall every publisher on every core. Bounded
    /// by its own `max_pending` and the write deadline.
    pub fn for_route(cid: u64, reactor: usize, token: u64, max_pending: usize) -> Self {
        Outbound {
            stall_bytes: ROUTE_STALL_BYTES.min(max_pending / 4),
            ..Outbound::new(cid, reactor, token, max_pending)
        }
    }

    pub fn new(cid: u64, reactor: usize, token: u64, max_pending: usize) -> Self {
        Outbound {
            cid,
            reactor,
            token,
            headers: AtomicBool::new(false),
            max_pending,
            stall_bytes: STALL_BYTES.min(max_pending / 4),
            dead: AtomicBool::new(false),
            send_since_ns: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            queue: Mutex::new(Pending::default()),
            claim: AtomicU8::new(CLAIM_FREE),
            direct_fd: AtomicI32::new(-1),
            direct_msgs: AtomicU64::new(0),
            direct_bytes: AtomicU64::new(0),
            drain_watchers: AtomicU64::new(0),
        }
    }

    /// Owner only: lets other reactors send on `fd` directly (a plain-text client socket,
    /// open until the owner closes the queue).
    pub fn allow_direct(&self, fd: i32) {
        self.direct_fd.store(fd, Ordering::SeqCst);
    }

    /// True when a direct send may be tried (a hint: [`send_direct`](Self::send_direct)
    /// checks again under the claim).
    #[inline]
    pub fn direct_allowed(&self) -> bool {
        self.direct_fd.load(Ordering::Relaxed) >= 0
    }

    /// Takes the send claim; false when someone else holds it (or the socket is closing).
    #[inline]
    pub fn try_claim(&self) -> bool {
        self.claim
            .compare_exchange(CLAIM_FREE, CLAIM_HELD, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Gives the send claim back (after everything taken was written).
    #[inline]
    pub fn release_claim(&self) {
        self.claim.store(CLAIM_FREE, Ordering::SeqCst);
    }

    /// Owner only, before the socket is closed: takes the claim for good, so no direct send
    /// can start on the descriptor once it is closed (and possibly reused). False while a
    /// direct send holds it (try again later). `held_by_owner` says the owner itself holds it.
    pub fn claim_for_close(&self, held_by_owner: bool) -> bool {
        if held_by_owner {
            self.claim.store(CLAIM_CLOSED, Ordering::SeqCst);
            return true;
        }
        match self.claim.compare_exchange(
            CLAIM_FREE,
            CLAIM_CLOSED,
            Ordering::SeqCst,
            Ordering::Relaxed,
        ) {
            Ok(_) => true,
            Err(c) => c == CLAIM_CLOSED,
        }
    }

    /// Messages and payload bytes written by direct senders since the last call.
    pub fn take_direct_counts(&self) -> (u64, u64) {
        if self.direct_msgs.load(Ordering::Relaxed) == 0 {
            return (0, 0);
        }
        (
            self.direct_msgs.swap(0, Ordering::Relaxed),
            self.direct_bytes.swap(0, Ordering::Relaxed),
        )
    }

    /// Sends what is pending from the calling (non-owner) thread with one non-blocking
    /// `send(2)`, if the queue allows direct sends and nobody else is sending. `buf` is
    /// scratch space (returned empty, keeping its capacity). Never blocks: a full socket
    /// buffer leaves the rest at the front of the queue for the owner.
    pub fn send_direct(&self, buf: &mut Vec<u8>) -> Direct {
        if !self.try_claim() {
            return Direct::Owner(Taken::default());
        }
        let fd = self.direct_fd.load(Ordering::SeqCst);
        if fd < 0 || self.is_dead() {
            self.release_claim();
            return Direct::Owner(Taken::default());
        }
        buf.clear();
        let taken = self.take_counted(buf);
        let mut off = 0;
        while off < buf.len() {
            // SAFETY: `fd` is an open socket: the owner closes it only after taking the
            // claim for good (`claim_for_close`), and we hold the claim. The pointer and
            // length describe initialised bytes of `buf`.
            let n = unsafe {
                libc::send(
                    fd,
                    buf[off..].as_ptr().cast(),
                    buf.len() - off,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n <= 0 {
                if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            off += n as usize;
        }
        let all = off == buf.len();
        if !all {
            // Full socket buffer or an error: the owner sends the rest (and meets the error).
            self.put_back_front(&buf[off..]);
        }
        buf.clear();
        if taken.msgs > 0 {
            self.direct_msgs.fetch_add(taken.msgs, Ordering::Relaxed);
            self.direct_bytes
                .fetch_add(taken.payload_bytes, Ordering::Relaxed);
        }
        self.release_claim();
        // Bytes appended while we held the claim may have found the owner unable to send
        // (it could not claim): checked after the release, under the queue lock, so either
        // we see them here or their appender's owner finds the claim free.
        if all && self.pending_len() == 0 && !self.is_dead() {
            Direct::Sent(taken)
        } else {
            Direct::Owner(taken)
        }
    }

    /// Puts unsent bytes back in front of anything appended since they were taken.
    fn put_back_front(&self, rest: &[u8]) {
        let mut q = self.lock();
        q.buf.splice(0..0, rest.iter().copied());
        self.pending.store(q.buf.len(), Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock would be a bug elsewhere; the bytes are still valid.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `len` bytes written by `write`. `len` must be the exact number of bytes `write`
    /// appends; it is used for the `max_pending` check before anything is written.
    #[inline]
    pub fn push_with(&self, len: usize, write: impl FnOnce(&mut Vec<u8>)) -> Pushed {
        self.push_counted(len, 0, 0, write)
    }

    /// As [`push_with`](Self::push_with), for bytes that hold `msgs` messages carrying
    /// `payload_bytes` of payload (counted when the owner takes them).
    #[inline]
    fn push_counted(
        &self,
        len: usize,
        msgs: u64,
        payload_bytes: u64,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Pushed {
        let mut q = self.lock();
        if q.closed {
            return Pushed::Dropped { notify: false };
        }
        if q.buf.len() + len > self.max_pending {
            // The owner must hear about it even if it was already scheduled: its send may be
            // stuck, and only it can cut the connection.
            let notify = !q.slow;
            q.slow = true;
            q.closed = true;
            q.scheduled = true;
            self.dead.store(true, Ordering::Relaxed);
            return Pushed::Dropped { notify };
        }
        write(&mut q.buf);
        q.msgs += msgs;
        q.payload_bytes += payload_bytes;
        let n = q.buf.len();
        self.pending.store(n, Ordering::Relaxed);
        if q.scheduled {
            Pushed::Queued(n)
        } else {
            q.scheduled = true;
            Pushed::First(n)
        }
    }

    #[inline]
    pub fn push(&self, bytes: &[u8]) -> Pushed {
        self.push_with(bytes.len(), |b| b.extend_from_slice(bytes))
    }

    /// Appends a whole staged buffer. When nothing is pending and the queue's buffer is the
    /// smaller one, the buffers are swapped, so the bytes are not copied; otherwise they are
    /// copied into the queue's (warm, already grown) buffer, so a busy queue keeps one large
    /// allocation instead of regrowing a small one (reallocation copies and fresh pages cost
    /// more than the one copy). `bytes` comes back empty either way (keeping a capacity).
    pub fn push_vec(&self, bytes: &mut Vec<u8>) -> Pushed {
        self.push_vec_counted(bytes, 0, 0)
    }

    /// [`push_vec`](Self::push_vec) of bytes holding `msgs` messages of `payload_bytes`.
    pub fn push_vec_counted(&self, bytes: &mut Vec<u8>, msgs: u64, payload_bytes: u64) -> Pushed {
        let len = bytes.len();
        let pushed = self.push_counted(len, msgs, payload_bytes, |b| {
            if b.is_empty() && b.capacity() < bytes.capacity() {
                std::mem::swap(b, bytes);
            } else {
                b.extend_from_slice(bytes);
            }
        });
        bytes.clear();
        pushed
    }

    /// Owner only: swaps the pending bytes into `into` (which must be empty) and clears the
    /// scheduled mark. Returns the number of bytes taken.
    pub fn take(&self, into: &mut Vec<u8>) -> usize {
        self.take_counted(into).bytes
    }

    /// [`take`](Self::take), also returning (and resetting) the message counts.
    pub fn take_counted(&self, into: &mut Vec<u8>) -> Taken {
        debug_assert!(into.is_empty());
        let mut q = self.lock();
        q.scheduled = false;
        std::mem::swap(&mut q.buf, into);
        self.pending.store(0, Ordering::Relaxed);
        Taken {
            bytes: into.len(),
            msgs: std::mem::take(&mut q.msgs),
            payload_bytes: std::mem::take(&mut q.payload_bytes),
        }
    }

    /// Owner only: a send of this connection's bytes was submitted at `now`.
    pub fn send_started(&self, now: Instant) {
        self.send_since_ns.store(mono_ns(now), Ordering::Relaxed);
    }

    /// Owner only: the send completed (fully or in part).
    pub fn send_done(&self) {
        self.send_since_ns.store(0, Ordering::Relaxed);
    }

    /// The peer has not taken bytes for [`STUCK_AFTER`]: a send has been in flight that
    /// long. `now_ns` is [`mono_ns`].
    #[inline]
    pub fn is_stuck(&self, now_ns: u64) -> bool {
        let since = self.send_since_ns.load(Ordering::Relaxed);
        since != 0 && now_ns.saturating_sub(since) >= STUCK_AFTER.as_nanos() as u64
    }

    /// Reactor `reactor` has a publisher paused on this queue: [`take_drain_watchers`]
    /// will name it. Call before reading [`pending_hint`] to decide whether to stay paused,
    /// so a take in between is never missed.
    ///
    /// [`take_drain_watchers`]: Self::take_drain_watchers
    /// [`pending_hint`]: Self::pending_hint
    pub fn watch_drain(&self, reactor: usize) {
        self.drain_watchers
            .fetch_or(1 << (reactor % 64), Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// After bytes were taken: the reactors to nudge (and forgets them).
    #[inline]
    pub fn take_drain_watchers(&self) -> u64 {
        fence(Ordering::SeqCst);
        if self.drain_watchers.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.drain_watchers.swap(0, Ordering::SeqCst)
    }

    /// Pending bytes, read without the lock (may lag a concurrent append).
    #[inline]
    pub fn pending_hint(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Pending bytes above which publishers to this connection should pause.
    #[inline]
    pub fn stall_bytes(&self) -> usize {
        self.stall_bytes
    }

    /// Bytes waiting to be taken by the owner.
    pub fn pending_len(&self) -> usize {
        self.lock().buf.len()
    }

    /// Stops accepting appends and direct sends. Queued bytes stay so the owner can flush
    /// them (an -ERR).
    pub fn close(&self) {
        self.lock().closed = true;
        self.dead.store(true, Ordering::Relaxed);
        self.direct_fd.store(-1, Ordering::SeqCst);
    }

    /// Gives back the queue's memory once its connection is gone (the owner freed the slot:
    /// nothing more will be sent). The `Outbound` itself may live on for a while: the
    /// subscription index's retired cache entries hold its subscriptions until their
    /// deferred reclamation, and a cut slow consumer's queue can hold up to `max_pending`.
    pub fn release(&self) {
        let mut q = self.lock();
        debug_assert!(q.closed, "released before close");
        q.buf = Vec::new();
        q.msgs = 0;
        q.payload_bytes = 0;
        self.pending.store(0, Ordering::Relaxed);
    }

    /// True once the queue stopped accepting bytes (closing or cut off).
    #[inline]
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// True once an append overflowed `max_pending`.
    pub fn is_slow(&self) -> bool {
        self.lock().slow
    }

    /// Gives back a large idle buffer so a burst does not pin memory.
    pub fn shrink_idle(&self, keep: usize) {
        let mut q = self.lock();
        if q.buf.is_empty() && q.buf.capacity() > keep {
            q.buf = Vec::new();
        }
    }
}

/// Output produced while handling one batch of input (one received buffer), and the
/// connections whose owners must be told about it.
///
/// Writes are staged per destination and appended to each [`Outbound`] once per batch, so a
/// publisher's hundred messages to a subscriber cost one lock, not a hundred, and the lock's
/// cache line moves between cores once per batch. Everything for one destination goes
/// through the same staging buffer, so the order of a connection's own replies (`+OK`,
/// `PONG`) and the messages it receives is kept.
pub struct WakeBatch {
    per_reactor: Vec<Vec<Mail>>,
    /// The marked destinations of each other reactor that allow direct sends.
    direct: Vec<Vec<Arc<Outbound>>>,
    /// The reactor this batch belongs to (its own connections are never sent directly).
    home: usize,
    staged: Vec<Staged>,
    /// Destination (by `Arc` address) → index in `staged`.
    index: AHashMap<usize, usize>,
    /// Emptied staging buffers, reused so steady state allocates nothing.
    spare: Vec<Vec<u8>>,
    /// Total capacity held in `spare`.
    spare_bytes: usize,
    /// The batch's time ([`mono_ns`]), for telling stuck destinations from slow ones.
    now_ns: u64,
    /// Destinations found past their stall threshold by early appends.
    over: Vec<Arc<Outbound>>,
    /// Index in `staged` after the last destination looked up (the likeliest next one).
    next_hint: usize,
}

struct Staged {
    out: Arc<Outbound>,
    bytes: Vec<u8>,
    msgs: u64,
    payload_bytes: u64,
}

/// Staging buffers above this capacity are dropped rather than reused, and the pool of
/// reusable ones holds at most `SPARE_TOTAL` bytes, so a burst does not pin memory.
const SPARE_KEEP: usize = 256 * 1024;
const SPARE_TOTAL: usize = 1024 * 1024;

impl WakeBatch {
    pub fn new(reactors: usize) -> Self {
        WakeBatch {
            per_reactor: (0..reactors).map(|_| Vec::new()).collect(),
            direct: (0..reactors).map(|_| Vec::new()).collect(),
            home: usize::MAX,
            staged: Vec::new(),
            index: AHashMap::new(),
            spare: Vec::new(),
            spare_bytes: 0,
            now_ns: 0,
            over: Vec::new(),
            next_hint: 0,
        }
    }

    /// The reactor that owns this batch: only other reactors' destinations are candidates
    /// for direct sends.
    pub fn set_home(&mut self, reactor: usize) {
        self.home = reactor;
    }

    /// Sets the time of the batches that follow (once per loop iteration).
    pub fn set_now(&mut self, now: Instant) {
        self.now_ns = mono_ns(now);
    }

    /// Records that `out`'s owner must look at it after this batch.
    #[inline]
    pub fn mark(&mut self, out: &Arc<Outbound>) {
        self.per_reactor[out.reactor].push(Mail::Flush(out.token));
        if out.reactor != self.home && out.direct_allowed() {
            self.direct[out.reactor].push(Arc::clone(out));
        }
    }

    /// Pushes the result of an append and marks the connection if needed.
    #[inline]
    pub fn note(&mut self, out: &Arc<Outbound>, pushed: Pushed) -> Pushed {
        if pushed.needs_schedule() {
            self.mark(out);
        }
        pushed
    }

    /// Stages `len` bytes for `out`, written by `write` (which must write exactly `len`).
    #[inline]
    pub fn stage(&mut self, out: &Arc<Outbound>, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let idx = self.staged_idx(out);
        let bytes = &mut self.staged[idx].bytes;
        bytes.reserve(len);
        write(bytes);
        if bytes.len() >= STAGE_MAX {
            self.append(idx);
        }
    }

    /// Stages one message (`len` bytes on the wire, `payload` bytes of payload) for `out`;
    /// it is counted in the monitoring figures when the owner takes it.
    #[inline]
    pub fn stage_msg(
        &mut self,
        out: &Arc<Outbound>,
        len: usize,
        payload: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        self.stage_msgs(out, len, 1, payload as u64, write);
    }

    /// Stages `msgs` messages at once (`len` bytes on the wire, `payload` bytes of payload
    /// in all) for `out`, written by `write` (which must write exactly `len`).
    #[inline]
    pub fn stage_msgs(
        &mut self,
        out: &Arc<Outbound>,
        len: usize,
        msgs: u64,
        payload: u64,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let idx = self.staged_idx(out);
        let staged = &mut self.staged[idx];
        staged.msgs += msgs;
        staged.payload_bytes += payload;
        staged.bytes.reserve(len);
        write(&mut staged.bytes);
        if staged.bytes.len() >= STAGE_MAX {
            self.append(idx);
        }
    }

    /// Writes `msgs` messages (`len` bytes, `payload` bytes of payload) for `out` straight
    /// into its queue, under one lock, when nothing is staged for it (else they are staged
    /// behind what is, to keep the order). For a run's share of many messages: staged, the
    /// bytes were copied a second time into the queue at the end of the batch (a tenth of a
    /// 1:1 profile).
    pub fn write_msgs(
        &mut self,
        out: &Arc<Outbound>,
        len: usize,
        msgs: u64,
        payload: u64,
        write: impl FnOnce(&mut Vec<u8>),
    ) {
        let key = Arc::as_ptr(out) as usize;
        let staged = self
            .index
            .get(&key)
            .is_some_and(|&i| !self.staged[i].bytes.is_empty());
        if staged {
            self.stage_msgs(out, len, msgs, payload, write);
            return;
        }
        let pushed = out.push_counted(len, msgs, payload, |b| {
            b.reserve(len);
            write(b);
        });
        self.noted_append(out, pushed);
    }

    #[inline]
    fn staged_idx(&mut self, out: &Arc<Outbound>) -> usize {
        let key = Arc::as_ptr(out) as usize;
        // The last destination is the likeliest next one (1:1 traffic, a reply after a PUB);
        // in a fan-out the subscribers come in the same order for every message, so the one
        // after the previous destination is next: both checks spare the hash lookup.
        let at = |i: usize| {
            self.staged
                .get(i)
                .is_some_and(|s| Arc::as_ptr(&s.out) as usize == key)
        };
        let next = if self.next_hint >= self.staged.len() {
            0
        } else {
            self.next_hint
        };
        let idx = match () {
            _ if at(next) => next,
            _ if at(self.staged.len().wrapping_sub(1)) => self.staged.len() - 1,
            _ => match self.index.get(&key) {
                Some(&i) => i,
                None => {
                    let i = self.staged.len();
                    let bytes = match self.spare.pop() {
                        Some(b) => {
                            self.spare_bytes -= b.capacity();
                            b
                        }
                        None => Vec::new(),
                    };
                    self.staged.push(Staged {
                        out: Arc::clone(out),
                        bytes,
                        msgs: 0,
                        payload_bytes: 0,
                    });
                    self.index.insert(key, i);
                    i
                }
            },
        };
        self.next_hint = idx + 1;
        idx
    }

    /// Appends destination `idx`'s staged bytes to its queue now; a destination left past
    /// its stall threshold and still draining (not stuck) is remembered for the flush.
    fn append(&mut self, idx: usize) {
        let s = &mut self.staged[idx];
        let (msgs, payload) = (
            std::mem::take(&mut s.msgs),
            std::mem::take(&mut s.payload_bytes),
        );
        let pushed = s.out.push_vec_counted(&mut s.bytes, msgs, payload);
        let out = Arc::clone(&s.out);
        self.noted_append(&out, pushed);
    }

    /// After an append to `out`: marks it for its owner if needed, and remembers it when it
    /// is left past its stall threshold and still draining (not stuck).
    fn noted_append(&mut self, out: &Arc<Outbound>, pushed: Pushed) {
        self.note(out, pushed);
        if pushed.pending() > out.stall_bytes()
            && !out.is_stuck(self.now_ns)
            && !self.over.iter().any(|o| Arc::ptr_eq(o, out))
        {
            self.over.push(Arc::clone(out));
        }
    }

    /// Appends what is staged for `out` now, ahead of anything written to its queue
    /// directly after this call.
    pub fn flush_one(&mut self, out: &Arc<Outbound>) {
        let key = Arc::as_ptr(out) as usize;
        if let Some(&idx) = self.index.get(&key) {
            if !self.staged[idx].bytes.is_empty() {
                self.append(idx);
            }
        }
    }

    /// Stages a copy of `bytes` for `out`.
    #[inline]
    pub fn stage_bytes(&mut self, out: &Arc<Outbound>, bytes: &[u8]) {
        self.stage(out, bytes.len(), |b| b.extend_from_slice(bytes));
    }

    /// Appends everything staged to its destination (one lock each) and marks the
    /// destinations whose owners must be told. Destinations left past their stall threshold
    /// that are still draining are added to `stalled_on` (stuck ones pause nobody).
    pub fn flush(&mut self, stalled_on: &mut Vec<Arc<Outbound>>) {
        for idx in 0..self.staged.len() {
            let s = &self.staged[idx];
            if !s.bytes.is_empty() || s.msgs > 0 {
                self.append(idx);
            }
        }
        for out in self.over.drain(..) {
            if !stalled_on.iter().any(|o| Arc::ptr_eq(o, &out)) {
                stalled_on.push(out);
            }
        }
        for s in self.staged.drain(..) {
            let cap = s.bytes.capacity();
            if cap <= SPARE_KEEP && self.spare_bytes + cap <= SPARE_TOTAL {
                self.spare_bytes += cap;
                self.spare.push(s.bytes);
            }
        }
        self.index.clear();
    }

    /// True when nothing is staged.
    pub fn is_flushed(&self) -> bool {
        self.staged.is_empty()
    }

    /// The list for one reactor, to be drained by the caller.
    pub fn list_mut(&mut self, reactor: usize) -> &mut Vec<Mail> {
        &mut self.per_reactor[reactor]
    }

    /// One reactor's mail list and its destinations that allow direct sends (both to be
    /// drained by the caller; every direct candidate also has its `Flush` in the list).
    pub fn lists_mut(&mut self, reactor: usize) -> (&mut Vec<Mail>, &mut Vec<Arc<Outbound>>) {
        (&mut self.per_reactor[reactor], &mut self.direct[reactor])
    }

    pub fn reactors(&self) -> usize {
        self.per_reactor.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_push_schedules_once_per_take() {
        let out = Outbound::new(1, 0, 0, 1024);
        assert_eq!(out.push(b"abc"), Pushed::First(3));
        assert_eq!(out.push(b"de"), Pushed::Queued(5));
        let mut v = Vec::new();
        assert_eq!(out.take(&mut v), 5);
        assert_eq!(v, b"abcde");
        assert_eq!(out.push(b"x"), Pushed::First(1));
    }

    #[test]
    fn drain_watchers_are_named_once() {
        let out = Outbound::new(1, 0, 0, 1 << 20);
        assert_eq!(out.take_drain_watchers(), 0);
        out.watch_drain(1);
        out.watch_drain(3);
        out.watch_drain(1);
        assert_eq!(out.take_drain_watchers(), 0b1010);
        assert_eq!(out.take_drain_watchers(), 0, "forgotten once named");
        out.watch_drain(65);
        assert_eq!(out.take_drain_watchers(), 0b10, "reactor ids wrap at 64");
    }

    #[test]
    fn overflow_marks_slow_and_drops() {
        let out = Outbound::new(1, 0, 0, 8);
        assert!(out.push(b"12345").needs_schedule());
        let r = out.push(b"67890");
        assert_eq!(
            r,
            Pushed::Dropped { notify: true },
            "the owner is told once"
        );
        assert!(out.is_slow());
        assert_eq!(out.push(b"1"), Pushed::Dropped { notify: false });
        let mut v = Vec::new();
        assert_eq!(
            out.take(&mut v),
            5,
            "bytes before the overflow stay for the owner"
        );
    }

    #[test]
    fn overflow_notifies_owner_when_not_scheduled() {
        let out = Outbound::new(1, 0, 0, 4);
        let mut v = Vec::new();
        out.push(b"1234");
        out.take(&mut v);
        // The owner took everything and is not scheduled: an oversize append must wake it so
        // it can cut the client off.
        assert_eq!(out.push(b"12345"), Pushed::Dropped { notify: true });
        assert!(out.is_slow());
    }

    #[test]
    fn closed_queue_drops() {
        let out = Outbound::new(1, 0, 0, 1024);
        out.close();
        assert_eq!(out.push(b"a"), Pushed::Dropped { notify: false });
    }

    #[test]
    fn staging_keeps_order_and_takes_one_append_per_destination() {
        let a = Arc::new(Outbound::new(1, 0, 10, 1024));
        let b = Arc::new(Outbound::new(2, 1, 20, 1024));
        let mut batch = WakeBatch::new(2);
        batch.stage_bytes(&a, b"+OK\r\n");
        batch.stage_bytes(&b, b"x");
        batch.stage_bytes(&a, b"MSG\r\n");
        assert_eq!(
            a.pending_len(),
            0,
            "nothing reaches the queue before the flush"
        );
        let mut stalled = Vec::new();
        batch.flush(&mut stalled);
        assert!(batch.is_flushed());
        let mut v = Vec::new();
        a.take(&mut v);
        assert_eq!(v, b"+OK\r\nMSG\r\n");
        assert_eq!(batch.list_mut(0).as_slice(), &[Mail::Flush(10)]);
        assert_eq!(batch.list_mut(1).as_slice(), &[Mail::Flush(20)]);
        assert!(stalled.is_empty());
    }

    #[test]
    fn fan_out_staging_keeps_each_destination_apart_in_any_order() {
        let outs: Vec<_> = (0..4)
            .map(|i| Arc::new(Outbound::new(i, 0, i, 1024)))
            .collect();
        let mut batch = WakeBatch::new(1);
        // Same order twice (the hinted path), then a different order and a repeat.
        for round in [b'a', b'b'] {
            for o in &outs {
                batch.stage_bytes(o, &[round]);
            }
        }
        for i in [2, 0, 3, 3, 1] {
            batch.stage_bytes(&outs[i], b"c");
        }
        batch.flush(&mut Vec::new());
        let want: [&[u8]; 4] = [b"abc", b"abc", b"abc", b"abcc"];
        for (o, w) in outs.iter().zip(want) {
            let mut v = Vec::new();
            o.take(&mut v);
            assert_eq!(v, w, "destination {}", o.cid);
        }
    }

    #[test]
    fn staging_is_appended_early_past_the_cap() {
        let a = Arc::new(Outbound::new(1, 0, 10, 64 * 1024 * 1024));
        let mut batch = WakeBatch::new(1);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..4 {
            batch.stage_bytes(&a, &chunk);
        }
        assert_eq!(
            a.pending_len(),
            STAGE_MAX,
            "appended as soon as the cap is reached"
        );
        batch.stage_bytes(&a, b"tail");
        batch.flush(&mut Vec::new());
        assert_eq!(a.pending_len(), STAGE_MAX + 4, "order kept, nothing lost");
        assert_eq!(batch.list_mut(0).len(), 1, "marked once");
    }

    #[test]
    fn a_stuck_destination_pauses_nobody() {
        let a = Arc::new(Outbound::new(1, 0, 10, 4096)); // stall at 1024
        let t0 = Instant::now();
        a.send_started(t0);
        let mut batch = WakeBatch::new(1);
        batch.set_now(t0 + Duration::from_millis(1));
        batch.stage_bytes(&a, &[b'x'; 2000]);
        let mut stalled = Vec::new();
        batch.flush(&mut stalled);
        assert_eq!(stalled.len(), 1, "a send in flight briefly: slow, pause");
        batch.set_now(t0 + STUCK_AFTER);
        batch.stage_bytes(&a, &[b'x'; 10]);
        let mut stalled = Vec::new();
        batch.flush(&mut stalled);
        assert!(
            stalled.is_empty(),
            "in flight for STUCK_AFTER: stuck, no pause"
        );
        a.send_done();
        assert!(!a.is_stuck(mono_ns(t0 + Duration::from_secs(9))));
    }

    #[test]
    fn message_counts_travel_with_the_bytes() {
        let a = Arc::new(Outbound::new(1, 0, 10, 1024));
        let mut batch = WakeBatch::new(1);
        batch.stage_bytes(&a, b"+OK\r\n");
        batch.stage_msg(&a, 13, 2, |b| b.extend_from_slice(b"MSG x 1 2\r\nhi\r\n"));
        batch.stage_msg(&a, 12, 1, |b| b.extend_from_slice(b"MSG x 1 1\r\nh\r\n"));
        batch.flush(&mut Vec::new());
        batch.stage_msg(&a, 0, 5, |_| {});
        batch.flush(&mut Vec::new());
        let mut v = Vec::new();
        let taken = a.take_counted(&mut v);
        assert_eq!((taken.msgs, taken.payload_bytes), (3, 8));
        assert_eq!(taken.bytes, v.len());
        v.clear();
        assert_eq!(
            a.take_counted(&mut v),
            Taken::default(),
            "counts reset on take"
        );
        // Dropped messages (closed queue) are never counted.
        a.close();
        batch.stage_msg(&a, 1, 1, |b| b.push(b'x'));
        batch.flush(&mut Vec::new());
        assert_eq!(a.take_counted(&mut v), Taken::default());
    }

    #[test]
    fn flush_reports_destinations_past_their_stall_threshold() {
        let a = Arc::new(Outbound::new(1, 0, 10, 4096)); // stall at 1024
        let mut batch = WakeBatch::new(1);
        batch.stage_bytes(&a, &[b'x'; 2000]);
        let mut stalled = Vec::new();
        batch.flush(&mut stalled);
        assert_eq!(stalled.len(), 1);
        assert!(Arc::ptr_eq(&stalled[0], &a));
    }

    /// A connected pair of non-blocking stream sockets (the far end reads what was sent).
    fn socket_pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn read_all(s: &mut std::os::unix::net::UnixStream) -> Vec<u8> {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn direct_send_writes_pending_bytes_and_needs_no_owner() {
        use std::os::fd::AsRawFd;
        let (near, mut far) = socket_pair();
        let out = Arc::new(Outbound::new(1, 1, 10, 1 << 20));
        let mut scratch = Vec::new();
        assert_eq!(
            out.send_direct(&mut scratch),
            Direct::Owner(Taken::default()),
            "not allowed until the owner says so"
        );
        out.allow_direct(near.as_raw_fd());
        let mut batch = WakeBatch::new(2);
        batch.set_home(0);
        batch.stage_msg(&out, 5, 1, |b| b.extend_from_slice(b"MSG1\n"));
        batch.flush(&mut Vec::new());
        let (list, direct) = batch.lists_mut(1);
        assert_eq!(list.as_slice(), &[Mail::Flush(10)]);
        assert_eq!(
            direct.len(),
            1,
            "a plain queue of another reactor is a candidate"
        );
        let sent = out.send_direct(&mut scratch);
        assert_eq!(
            sent,
            Direct::Sent(Taken {
                bytes: 5,
                msgs: 1,
                payload_bytes: 1
            })
        );
        assert_eq!(read_all(&mut far), b"MSG1\n");
        assert_eq!(out.take_direct_counts(), (1, 1));
        // The claim was given back: the owner can send next.
        assert!(out.try_claim());
        out.release_claim();
        // A candidate of the batch's own reactor is never sent directly.
        let own = Arc::new(Outbound::new(2, 0, 20, 1024));
        own.allow_direct(near.as_raw_fd());
        batch.lists_mut(1).1.clear();
        batch.stage_bytes(&own, b"x");
        batch.flush(&mut Vec::new());
        assert!(batch.lists_mut(0).1.is_empty());
    }

    #[test]
    fn direct_send_leaves_what_the_socket_did_not_take_in_front_for_the_owner() {
        use std::os::fd::AsRawFd;
        let (near, mut far) = socket_pair();
        let out = Outbound::new(1, 1, 10, 64 << 20);
        out.allow_direct(near.as_raw_fd());
        // More than a socket buffer holds: the send is partial, never blocking.
        let big: Vec<u8> = (0..8 << 20).map(|i| (i % 251) as u8).collect();
        out.push(&big);
        let mut scratch = Vec::new();
        let r = out.send_direct(&mut scratch);
        assert!(
            matches!(r, Direct::Owner(t) if t.bytes == big.len()),
            "{r:?}"
        );
        let first = read_all(&mut far);
        assert!(!first.is_empty() && first.len() < big.len());
        // Bytes appended later go after the unsent rest.
        out.push(b"tail");
        let mut rest = Vec::new();
        assert!(out.try_claim(), "the direct sender gave the claim back");
        out.take(&mut rest);
        out.release_claim();
        let mut all = first;
        all.extend_from_slice(&rest);
        let mut want = big.clone();
        want.extend_from_slice(b"tail");
        assert!(all == want, "order kept across the partial direct send");
    }

    #[test]
    fn send_claim_keeps_one_sender_and_guards_the_close() {
        use std::os::fd::AsRawFd;
        let (near, mut far) = socket_pair();
        let out = Outbound::new(1, 1, 10, 1024);
        out.allow_direct(near.as_raw_fd());
        out.push(b"abc");
        // The owner is sending: a direct sender backs off without touching the queue.
        assert!(out.try_claim());
        let mut scratch = Vec::new();
        assert_eq!(
            out.send_direct(&mut scratch),
            Direct::Owner(Taken::default())
        );
        assert_eq!(out.pending_len(), 3);
        // Held by someone else, the close must wait; held by the closer, it proceeds.
        assert!(!out.claim_for_close(false));
        assert!(out.claim_for_close(true));
        assert!(
            !out.try_claim(),
            "nobody sends once the socket is being closed"
        );
        assert!(out.claim_for_close(false), "closing twice is fine");
        // A closed queue is never sent directly, even with the claim free.
        let q = Outbound::new(2, 1, 20, 1024);
        q.allow_direct(near.as_raw_fd());
        q.push(b"x");
        q.close();
        assert_eq!(q.send_direct(&mut scratch), Direct::Owner(Taken::default()));
        assert!(read_all(&mut far).is_empty());
    }
}
