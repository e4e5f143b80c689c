//! The io_uring shell: one reactor per core moves bytes between sockets and the sans-IO
//! [`Client`] state, and fires its timers.
//!
//! Per loop iteration: reap completions (multishot accept, multishot recv from the shared
//! buffer ring, sends, the wake-up eventfd) → parse each received buffer in place and
//! recycle it → hand connections touched on other cores to their owners (one inbox push and
//! at most one wake per destination) → send each dirty connection's coalesced output with one
//! send → timers → sleep in the kernel only when there is nothing to do.

mod bufring;
mod slab;

use crate::client::{Client, CloseReason, Env, SlowConsumer};
use crate::outbound::{Outbound, WakeBatch};
use crate::proto::{Op, Parser, ParserConfig, ProtoError};
use crate::server::Server;
use bufring::BufRing;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Receive buffers per reactor and their size. 64 × 16 KiB = 1 MiB per reactor; only
/// the pages the kernel fills count toward RSS. See docs/reactor.md.
const RECV_BUFS: u16 = 64;
const RECV_BUF_SIZE: usize = 16 * 1024;
const RING_ENTRIES: u32 = 1024;
/// Completions handled per loop iteration before output is flushed (bounded work per turn).
const CQE_BUDGET: usize = 512;
/// Housekeeping period: keepalive, auth timeouts, write deadlines.
const TICK: Duration = Duration::from_millis(50);
/// A paused publisher is resumed after this long even if its subscriber has not drained,
/// so a stuck subscriber slows a publisher only briefly (the subscriber is cut off by the
/// write deadline or max_pending).
const STALL_MAX: Duration = Duration::from_millis(5);
/// Output buffers bigger than this are released once drained.
const OUT_KEEP: usize = 256 * 1024;

/// What a completion belongs to, in the top byte of its user data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Wake = 4,
    Cancel = 5,
}

fn user_data(kind: Kind, token: u64) -> u64 {
    ((kind as u64) << 56) | (token & 0x00ff_ffff_ffff_ffff)
}

fn split_user_data(ud: u64) -> (u8, u64) {
    ((ud >> 56) as u8, ud & 0x00ff_ffff_ffff_ffff)
}

/// The part of a reactor other threads may touch: its inbox of connections with new output
/// and the eventfd that wakes it.
pub struct ReactorHandle {
    inbox: Mutex<Vec<u64>>,
    sleeping: AtomicBool,
    eventfd: OwnedFd,
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
            // SAFETY: fd is a fresh descriptor we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
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

    /// Hands `tokens` to this reactor; wakes it only if it is (about to be) asleep.
    fn deliver(&self, tokens: &mut Vec<u64>) {
        {
            let mut inbox = self.inbox.lock().unwrap_or_else(|p| p.into_inner());
            inbox.append(tokens);
        }
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
    }
}

struct Conn {
    stream: TcpStream,
    client: Client,
    parser: Parser,
    /// Bytes being sent; swapped with the outbound queue's buffer so both keep capacity.
    sending: Vec<u8>,
    send_off: usize,
    send_inflight: bool,
    send_started: Instant,
    recv_armed: bool,
    /// Subscribers this publisher is waiting on, and since when.
    stalled_on: Vec<Arc<Outbound>>,
    stalled_since: Option<Instant>,
    /// Buffers received while paused, parsed on resume (bounded by what was in flight).
    held: VecDeque<(u16, u32)>,
    /// Closing: flush what is queued until this deadline, then shut the socket.
    close_deadline: Option<Instant>,
    shut: bool,
}

pub struct Reactor {
    // Field order matters: the ring is dropped before the buffer memory it points at.
    ring: IoUring,
    bufs: BufRing,
    id: usize,
    server: Arc<Server>,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    batch: WakeBatch,
    /// Local connections with output to send this iteration.
    dirty: Vec<u64>,
    stalled: Vec<u64>,
    closing: Vec<u64>,
    rng: SmallRng,
    wake_buf: Box<[u8; 8]>,
    now: Instant,
    next_tick: Instant,
    shutting_down: Option<Instant>,
}

/// What a client needs from its reactor for one batch of input.
fn client_env<'a>(
    server: &'a Server,
    batch: &'a mut WakeBatch,
    rng: &'a mut SmallRng,
    now: Instant,
) -> Env<'a> {
    Env {
        subs: server.sublist.reader(),
        batch,
        rng,
        now,
        cfg: &server.client_cfg,
    }
}

/// Turns a ring set-up failure into a message that names the cause and the fix.
fn setup_error(e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOSYS) => "the kernel has no io_uring (Linux 6.1 or newer is needed)",
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "io_uring is blocked (seccomp, e.g. Docker's default profile, or sysctl kernel.io_uring_disabled); allow io_uring_setup or run outside the sandbox"
        }
        Some(libc::ENOMEM) => {
            "the locked-memory limit is too low for the ring; raise it (ulimit -l unlimited, or LimitMEMLOCK=infinity in the service unit)"
        }
        Some(libc::EINVAL) => "the kernel lacks a needed io_uring feature (Linux 6.1 or newer is needed)",
        _ => "io_uring could not be set up",
    };
    io::Error::new(e.kind(), format!("io_uring setup failed: {e}: {hint}"))
}

fn build_ring() -> io::Result<IoUring> {
    let fast = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(RING_ENTRIES * 4)
        .build(RING_ENTRIES);
    match fast {
        Ok(r) => Ok(r),
        // Older kernels lack DEFER_TASKRUN: fall back to a plain ring.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 4)
            .build(RING_ENTRIES),
        Err(e) => Err(e),
    }
}

impl Reactor {
    pub fn new(id: usize, server: Arc<Server>, listener: TcpListener) -> io::Result<Self> {
        let ring = build_ring().map_err(setup_error)?;
        let bufs = BufRing::new(&ring, 0, RECV_BUFS, RECV_BUF_SIZE).map_err(setup_error)?;
        let now = Instant::now();
        let reactors = server.reactors.len();
        Ok(Reactor {
            ring,
            bufs,
            id,
            listener: Some(listener),
            conns: Slab::new(),
            batch: WakeBatch::new(reactors),
            dirty: Vec::new(),
            stalled: Vec::new(),
            closing: Vec::new(),
            rng: SmallRng::from_entropy(),
            wake_buf: Box::new([0u8; 8]),
            now,
            next_tick: now + TICK,
            shutting_down: None,
            server,
        })
    }

    fn handle(&self) -> &ReactorHandle {
        &self.server.reactors[self.id]
    }

    /// Queues an SQE, flushing the submission queue first if it is full.
    fn push_sqe(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every SQE we build points only at memory that outlives the operation:
            // the listener and sockets (closed only after their ops complete), the buffer
            // ring (dropped after the ring), `wake_buf` and `Conn::sending` (not touched
            // while a send is in flight).
            let pushed = unsafe { self.ring.submission().push(&sqe).is_ok() };
            if pushed {
                return;
            }
            if let Err(e) = self.ring.submit() {
                crate::error!("io_uring submit: {e}");
            }
        }
    }

    fn arm_accept(&mut self) {
        if let Some(l) = &self.listener {
            let sqe = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
                .build()
                .user_data(user_data(Kind::Accept, 0));
            self.push_sqe(sqe);
        }
    }

    fn arm_wake(&mut self) {
        let fd = self.handle().eventfd.as_raw_fd();
        let sqe = opcode::Read::new(types::Fd(fd), self.wake_buf.as_mut_ptr(), 8)
            .build()
            .user_data(user_data(Kind::Wake, 0));
        self.push_sqe(sqe);
    }

    fn arm_recv(&mut self, token: u64) {
        let bgid = self.bufs.bgid();
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.recv_armed || conn.close_deadline.is_some() {
            return;
        }
        conn.recv_armed = true;
        let sqe = opcode::RecvMulti::new(types::Fd(conn.stream.as_raw_fd()), bgid)
            .build()
            .user_data(user_data(Kind::Recv, token));
        self.push_sqe(sqe);
    }

    pub fn run(&mut self) -> io::Result<()> {
        self.arm_accept();
        self.arm_wake();
        loop {
            if self.shutting_down.is_none() && self.server.shutdown.load(Ordering::Relaxed) {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutting_down {
                if self.conns.is_empty() || self.now >= deadline {
                    return Ok(());
                }
            }
            self.wait()?;
            self.now = Instant::now();
            self.reap();
            self.bufs.publish();
            self.hand_off();
            self.drain_inbox();
            self.flush_dirty();
            if !self.stalled.is_empty() {
                self.check_stalls();
            }
            if self.now >= self.next_tick {
                self.next_tick = self.now + TICK;
                self.tick();
            }
            self.finish_closing();
        }
    }

    /// Submits queued SQEs and sleeps in the kernel until a completion, the next tick, or
    /// a wake-up — unless completions or handed-off work are already waiting.
    fn wait(&mut self) -> io::Result<()> {
        if !self.ring.completion().is_empty() {
            return self.ring.submit().map(|_| ());
        }
        let timeout = if self.stalled.is_empty() {
            self.next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::from_micros(200)
        };
        let handle = &self.server.reactors[self.id];
        handle.sleeping.store(true, Ordering::SeqCst);
        if !handle
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            handle.sleeping.store(false, Ordering::SeqCst);
            return self.ring.submit().map(|_| ());
        }
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        let r = self.ring.submitter().submit_with_args(1, &args);
        handle.sleeping.store(false, Ordering::SeqCst);
        match r {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn reap(&mut self) {
        for _ in 0..CQE_BUDGET {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            let (kind, token) = split_user_data(cqe.user_data());
            let (res, flags) = (cqe.result(), cqe.flags());
            match kind {
                k if k == Kind::Recv as u8 => self.on_recv(token, res, flags),
                k if k == Kind::Send as u8 => self.on_send(token, res),
                k if k == Kind::Accept as u8 => self.on_accept(res, flags),
                k if k == Kind::Wake as u8 && self.shutting_down.is_none() => self.arm_wake(),
                _ => {}
            }
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) && self.shutting_down.is_none() {
            self.arm_accept();
        }
        if res < 0 {
            let err = io::Error::from_raw_os_error(-res);
            if self.shutting_down.is_none() && -res != libc::ECANCELED {
                crate::error!("Error accepting client connection: {err}");
            }
            return;
        }
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(res) };
        if self.shutting_down.is_some() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let server = Arc::clone(&self.server);
        let cid = server.next_cid();
        let token = self.conns.vacant_token();
        let out = Arc::new(Outbound::new(cid, self.id, token, server.opts.max_pending));
        let prefix = format!("{peer} - cid:{cid} - ");
        let client = Client::new(Arc::clone(&out), prefix, self.now, &server.client_cfg);
        let parser = Parser::new(ParserConfig {
            max_control_line: server.opts.max_control_line,
            max_payload: server.opts.max_payload,
            headers: false,
            route: false,
            require_connect: server.client_cfg.auth.required(),
        });
        let token = self.conns.insert(Conn {
            stream,
            client,
            parser,
            sending: Vec::new(),
            send_off: 0,
            send_inflight: false,
            send_started: self.now,
            recv_armed: false,
            stalled_on: Vec::new(),
            stalled_since: None,
            held: VecDeque::new(),
            close_deadline: None,
            shut: false,
        });
        debug_assert_eq!(token, out.token);
        crate::debug!("{peer} - cid:{cid} - Client connection created");
        out.push(&server.client_info(cid));
        self.dirty.push(token);
        let count = server.conn_count.fetch_add(1, Ordering::Relaxed) + 1;
        if count > server.opts.max_connections {
            crate::error!("{peer} - cid:{cid} - Maximum Connections Exceeded");
            self.fail_conn(token, ProtoError::MaxConnections);
            return;
        }
        self.arm_recv(token);
    }

    fn on_recv(&mut self, token: u64, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        let Some(conn) = self.conns.get_mut(token) else {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            return;
        };
        if !more {
            conn.recv_armed = false;
        }
        if res <= 0 {
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
            // ENOBUFS: the buffer ring ran dry; buffers are recycled this iteration, so the
            // recv is simply re-armed below. ECANCELED: cancelled to pause a publisher.
            // Anything else (EOF, a socket error): the peer is gone.
            if !matches!(-res, libc::ENOBUFS | libc::ECANCELED) && conn.close_deadline.is_none() {
                conn.client.close(CloseReason::ClientClosed);
            }
        } else if let Some(bid) = bid {
            if conn.stalled_since.is_some() || !conn.held.is_empty() {
                // Paused: data that was already in flight waits, in order, for the resume.
                conn.held.push_back((bid, res as u32));
            } else {
                self.feed(token, bid, res as usize);
            }
        }
        self.after_input(token);
    }

    /// Parses one received buffer for `token` and gives the buffer back to the ring.
    fn feed(&mut self, token: u64, bid: u16, len: usize) {
        let Reactor {
            conns,
            bufs,
            batch,
            rng,
            server,
            now,
            stalled,
            ..
        } = self;
        let Some(conn) = conns.get_mut(token) else {
            bufs.recycle(bid);
            return;
        };
        if conn.client.closing().is_none() {
            let data = bufs.get(bid, len);
            let mut env = client_env(server, batch, rng, *now);
            let client = &mut conn.client;
            let parsed = conn.parser.parse_with_config(data, |op, cfg| {
                let is_connect = matches!(op, Op::Connect(_));
                let flow = client.on_op(op, &mut env);
                if is_connect {
                    // HPUB is an op only for clients that asked for headers.
                    cfg.headers = client.opts.headers;
                }
                flow
            });
            if let Err(e) = parsed {
                let _ = client.fail(e, &mut env);
            }
        }
        bufs.recycle(bid);
        batch.flush(&mut conn.stalled_on);
        if !conn.stalled_on.is_empty() && conn.stalled_since.is_none() {
            // A subscriber is backed up: stop reading this publisher until it drains.
            conn.stalled_since = Some(*now);
            stalled.push(token);
            if conn.recv_armed {
                let sqe = opcode::AsyncCancel::new(user_data(Kind::Recv, token))
                    .build()
                    .user_data(user_data(Kind::Cancel, token));
                self.push_sqe(sqe);
            }
        }
    }

    /// After input for `token`: start closing, or keep the multishot recv armed.
    fn after_input(&mut self, token: u64) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.client.closing().is_some() {
            for (bid, _) in conn.held.drain(..) {
                self.bufs.recycle(bid);
            }
            self.start_close(token);
        } else if !conn.recv_armed && conn.stalled_since.is_none() {
            self.arm_recv(token);
        }
    }

    /// Resumes paused publishers whose subscribers drained (or after STALL_MAX): first the
    /// buffers held while paused, then the recv.
    fn check_stalls(&mut self) {
        let now = self.now;
        let mut resume = Vec::new();
        self.stalled.retain(|&token| {
            let Some(conn) = self.conns.get_mut(token) else {
                return false;
            };
            conn.stalled_on
                .retain(|o| !o.is_closed() && o.pending_len() > o.stall_bytes() / 2);
            let expired = conn
                .stalled_since
                .is_some_and(|since| now.duration_since(since) >= STALL_MAX);
            if conn.stalled_on.is_empty() || expired {
                conn.stalled_on.clear();
                conn.stalled_since = None;
                resume.push(token);
                false
            } else {
                true
            }
        });
        for token in resume {
            while let Some((bid, len)) = self
                .conns
                .get_mut(token)
                .filter(|c| c.stalled_since.is_none())
                .and_then(|c| c.held.pop_front())
            {
                self.feed(token, bid, len as usize);
            }
            self.after_input(token);
        }
    }

    fn on_send(&mut self, token: u64, res: i32) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.send_inflight = false;
        if res < 0 {
            conn.sending.clear();
            conn.send_off = 0;
            if conn.close_deadline.is_none() {
                conn.client.close(CloseReason::WriteError);
                self.start_close(token);
            }
            return;
        }
        conn.send_off += res as usize;
        if conn.send_off >= conn.sending.len() {
            conn.sending.clear();
            conn.send_off = 0;
            if conn.sending.capacity() > OUT_KEEP {
                conn.sending = Vec::new();
                conn.client.out.shrink_idle(OUT_KEEP);
            }
        }
        self.send_conn(token);
    }

    /// Starts a send of whatever `token` has queued, unless one is in flight.
    fn send_conn(&mut self, token: u64) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        // Checked first: a consumer past max_pending usually has a send stuck in flight.
        if conn.client.out.is_slow() && conn.close_deadline.is_none() {
            self.slow_consumer(token, SlowConsumer::MaxPending);
            return;
        }
        if conn.send_inflight || conn.shut {
            return;
        }
        if conn.sending.is_empty() {
            conn.send_off = 0;
            if conn.client.out.take(&mut conn.sending) == 0 {
                return;
            }
        }
        let rest = &conn.sending[conn.send_off..];
        let len = rest.len().min(u32::MAX as usize) as u32;
        let sqe = opcode::Send::new(types::Fd(conn.stream.as_raw_fd()), rest.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Kind::Send, token));
        conn.send_inflight = true;
        conn.send_started = now;
        self.push_sqe(sqe);
    }

    /// Moves this batch's cross-core marks to their owners' inboxes.
    fn hand_off(&mut self) {
        for r in 0..self.batch.reactors() {
            let list = self.batch.list_mut(r);
            if list.is_empty() {
                continue;
            }
            if r == self.id {
                self.dirty.append(list);
            } else {
                self.server.reactors[r].deliver(list);
            }
        }
    }

    fn drain_inbox(&mut self) {
        let mut inbox = self.server.reactors[self.id]
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !inbox.is_empty() {
            self.dirty.append(&mut inbox);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &token in &dirty {
            self.send_conn(token);
        }
        dirty.clear();
        // Keep the allocation for the next iteration.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    fn tick(&mut self) {
        let now = self.now;
        let deadline = self.server.opts.write_deadline;
        let tokens = self.conns.tokens();
        let mut closing = Vec::new();
        for token in tokens {
            let Reactor {
                conns,
                batch,
                rng,
                server,
                ..
            } = self;
            let Some(conn) = conns.get_mut(token) else {
                continue;
            };
            if conn.close_deadline.is_some() {
                continue;
            }
            if conn.send_inflight && now.duration_since(conn.send_started) >= deadline {
                self.slow_consumer(token, SlowConsumer::WriteDeadline);
                continue;
            }
            let mut env = client_env(server, batch, rng, now);
            if conn.client.on_tick(&mut env).is_break() {
                closing.push(token);
            }
        }
        self.batch.flush(&mut Vec::new());
        for token in closing {
            self.start_close(token);
        }
        self.hand_off();
        self.flush_dirty();
    }

    fn slow_consumer(&mut self, token: u64, what: SlowConsumer) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let opts = &self.server.opts;
        let detail = match what {
            SlowConsumer::MaxPending => format!("MaxPending of {} Exceeded", opts.max_pending),
            SlowConsumer::WriteDeadline => {
                format!("WriteDeadline of {:?} Exceeded", opts.write_deadline)
            }
        };
        crate::info!("{}Slow Consumer Detected: {detail}", conn.client.log_prefix);
        conn.client.close(CloseReason::SlowConsumer(what));
        self.start_close(token);
        // A slow consumer is not reading: do not wait to flush.
        if let Some(conn) = self.conns.get_mut(token) {
            conn.close_deadline = Some(self.now);
        }
    }

    fn fail_conn(&mut self, token: u64, err: ProtoError) {
        let Reactor {
            conns,
            batch,
            rng,
            server,
            now,
            ..
        } = self;
        if let Some(conn) = conns.get_mut(token) {
            let mut env = client_env(server, batch, rng, *now);
            let _ = conn.client.fail(err, &mut env);
        }
        self.batch.flush(&mut Vec::new());
        self.start_close(token);
    }

    /// First step of closing: drop subscriptions and the connection count, then flush.
    fn start_close(&mut self, token: u64) {
        let write_deadline = self.server.opts.write_deadline;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.close_deadline.is_some() {
            return;
        }
        if conn.client.closing().is_none() {
            conn.client.close(CloseReason::ServerShutdown);
        }
        // Staged output (an -ERR) was flushed before this; nothing more is accepted.
        conn.client.out.close();
        conn.client.unsubscribe_all(&self.server.sublist);
        conn.close_deadline = Some(self.now + write_deadline);
        self.server.conn_count.fetch_sub(1, Ordering::Relaxed);
        crate::debug!(
            "{}Client connection closed: {:?}",
            conn.client.log_prefix,
            conn.client.closing()
        );
        self.closing.push(token);
        self.dirty.push(token);
    }

    /// Last steps of closing: once output is flushed (or the deadline passed) shut the
    /// socket; once no operation is in flight, free the slot (closing the fd).
    fn finish_closing(&mut self) {
        if self.closing.is_empty() {
            return;
        }
        let now = self.now;
        let mut done = Vec::new();
        self.closing.retain(|&token| {
            let Some(conn) = self.conns.get_mut(token) else {
                return false;
            };
            let flushed = !conn.send_inflight
                && conn.sending.is_empty()
                && conn.client.out.pending_len() == 0;
            let expired = conn.close_deadline.is_some_and(|d| now >= d);
            if !conn.shut && (flushed || expired) {
                // Wakes the armed recv (it completes with 0) and fails a stuck send.
                // SAFETY: shutdown on a socket we own.
                unsafe { libc::shutdown(conn.stream.as_raw_fd(), libc::SHUT_RDWR) };
                conn.shut = true;
            }
            if conn.shut && !conn.recv_armed && !conn.send_inflight {
                done.push(token);
                false
            } else {
                true
            }
        });
        for token in done {
            self.conns.remove(token);
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = Some(self.now + Duration::from_secs(2));
        // Closing the listener ends the multishot accept (it completes with an error).
        if let Some(l) = self.listener.take() {
            let sqe = opcode::AsyncCancel::new(user_data(Kind::Accept, 0))
                .build()
                .user_data(user_data(Kind::Cancel, 0));
            self.push_sqe(sqe);
            let _ = self.ring.submit();
            drop(l);
        }
        for token in self.conns.tokens() {
            self.start_close(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_name_cause_and_fix() {
        let msg = setup_error(io::Error::from_raw_os_error(libc::ENOMEM)).to_string();
        assert!(msg.contains("LimitMEMLOCK=infinity"), "{msg}");
        let msg = setup_error(io::Error::from_raw_os_error(libc::EPERM)).to_string();
        assert!(msg.contains("seccomp"), "{msg}");
        let msg = setup_error(io::Error::from_raw_os_error(libc::ENOSYS)).to_string();
        assert!(msg.contains("Linux 6.1"), "{msg}");
        assert!(!msg.contains('\n'), "one line");
    }

    #[test]
    fn user_data_round_trips() {
        let token = (0x00ab_cdefu64 << 32) | 0x1234_5678;
        let ud = user_data(Kind::Send, token);
        assert_eq!(split_user_data(ud), (Kind::Send as u8, token));
    }
}
