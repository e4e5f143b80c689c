//! The io_uring shell: one reactor per core moves bytes between sockets and the sans-IO
//! [`Connection`] state (clients and routes alike), and fires its timers.
//!
//! Per loop iteration: reap completions (multishot accept on the client and route ports,
//! route dials, multishot recv from the shared buffer ring, sends, the wake-up eventfd) → parse each received buffer in place and
//! recycle it → hand connections touched on other cores to their owners (one inbox push and
//! at most one wake per destination) → send each dirty connection's coalesced output with one
//! send → timers → sleep in the kernel only when there is nothing to do.

mod bufring;
mod slab;

use crate::cluster::{Dial, ROUTE_DIAL_TIMEOUT};
use crate::conn::pub_run::PubRun;
use crate::conn::{CloseReason, Connection, Env, SlowConsumer};
use crate::mailbox::{Mail, ReactorHandle};
use crate::outbound::{mono_ns, Direct, Outbound, Taken, WakeBatch};
use crate::proto::{Op, Parsed, Parser, ParserConfig, ProtoError};
use crate::shared::{ConnRef, Live, Shared};
use crate::stats::{self, LocalStats, ReactorSnapshot, SnapshotKind, SnapshotQuery};
use crate::tls::{Phase, ReadError, TlsSession};
use bufring::BufRing;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rustls::pki_types::ServerName;
use slab::Slab;
use smallvec::SmallVec;
use socket2::{Domain, SockAddr, Socket, Type};
use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
/// so a slow subscriber sets its publisher's pace only in part. A stuck one (no progress on
/// its socket for `STUCK_AFTER`, also 100 ms) pauses nobody once found, and is cut off by
/// the write deadline or max_pending.
const STALL_MAX: Duration = Duration::from_millis(100);
/// How often routes holding input for merging are looked at while they hold.
const HOLD_POLL: Duration = Duration::from_micros(200);
/// Output buffers bigger than this are released once drained.
const OUT_KEEP: usize = 256 * 1024;
/// Destinations on one sleeping reactor that a publishing reactor writes itself at the end
/// of a batch; with more, the owner is woken to share the work (a fan-out stays parallel).
const DIRECT_MAX: usize = 4;
/// A route's outbound queue may hold this many times `max_pending`: it carries a whole
/// server's traffic and must ride out bursts it can drain.
const ROUTE_PENDING_FACTOR: usize = 4;
/// Server-wide budget for pending output (all connections' queues together). When it is
/// passed, consumers that are stuck (not reading) are cut first, largest queue first.
pub const PENDING_BUDGET: usize = 1 << 30;
/// A stuck consumer is cut for the budget only if it holds at least this much.
const BUDGET_CUT_MIN: usize = 1 << 20;
/// Largest MSG payload taken from a route. gnatsd 1.0 checks none; a bound is still kept
/// so a broken peer cannot make the parser buffer without limit.
const ROUTE_MAX_PAYLOAD: usize = 64 * 1024 * 1024;

/// What a completion belongs to, in the top byte of its user data.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Kind {
    Accept = 1,
    Recv = 2,
    Send = 3,
    Wake = 4,
    Cancel = 5,
    RouteAccept = 6,
    Connect = 7,
}

fn user_data(kind: Kind, token: u64) -> u64 {
    ((kind as u64) << 56) | (token & 0x00ff_ffff_ffff_ffff)
}

fn split_user_data(ud: u64) -> (u8, u64) {
    ((ud >> 56) as u8, ud & 0x00ff_ffff_ffff_ffff)
}

/// One socket and the connection state it carries.
struct Slot {
    stream: TcpStream,
    conn: Connection,
    parser: Parser,
    /// Bytes being sent; swapped with the outbound queue's buffer so both keep capacity.
    sending: Vec<u8>,
    send_off: usize,
    send_inflight: bool,
    /// This reactor holds the queue's send claim (from taking bytes until all are sent).
    claimed: bool,
    send_started: Instant,
    /// The socket's unsent and unacknowledged bytes (`SIOCOUTQ`) at the last tick of the
    /// send in flight; 0 before the first.
    outq_seen: i32,
    recv_armed: bool,
    /// Subscribers this publisher is waiting on, and since when.
    stalled_on: Vec<Arc<Outbound>>,
    stalled_since: Option<Instant>,
    /// Buffers received while paused, parsed on resume (bounded by what was in flight).
    held: VecDeque<Vec<u8>>,
    /// Parser input that followed a CONNECT waiting for its bcrypt verdict (plaintext,
    /// also for TLS), parsed before `held` once the verdict arrives.
    held_plain: Vec<u8>,
    /// The peer closed (or reset) its side while its input was held: it is closed once the
    /// held input is parsed, so the messages it sent before it went are all delivered.
    peer_gone: bool,
    /// Closing: flush what is queued until this deadline, then shut the socket.
    close_deadline: Option<Instant>,
    shut: bool,
    /// Client TLS: received bytes are decrypted before the parser, the queue encrypted
    /// before the send. `None` (plain text) keeps the zero-copy path.
    tls: Option<Box<TlsSession>>,
}

/// Received bytes to parse: a buffer of the shared ring, or a copy held while paused.
enum Input {
    Ring(u16, usize),
    Held(Vec<u8>),
    /// Already decrypted (TLS) or plain text: straight to the parser.
    Plain(Vec<u8>),
}

/// The listening sockets one reactor accepts on.
pub struct Listeners {
    pub client: TcpListener,
    pub route: Option<TcpListener>,
}

/// A route being dialled: the socket and the address the connect SQE points at.
struct Dialing {
    socket: Socket,
    addr: Box<SockAddr>,
    dial: Dial,
    started: Instant,
    cancelled: bool,
}

/// Lame duck mode on one reactor: when it began here, and how many of its clients there were
/// then and have been closed since.
struct LameDuck {
    started: Instant,
    clients: usize,
    closed: usize,
}

pub struct Reactor {
    // Field order matters: the ring is dropped before the buffer memory it points at.
    ring: IoUring,
    bufs: BufRing,
    id: usize,
    server: Arc<Shared>,
    handles: Arc<[ReactorHandle]>,
    listener: Option<TcpListener>,
    route_listener: Option<TcpListener>,
    conns: Slab<Slot>,
    dials: Slab<Dialing>,
    batch: WakeBatch,
    /// The run of PUBs being held while one connection's input is parsed.
    pub_run: PubRun,
    /// Emptied copies of received buffers held while their publisher was paused, reused
    /// for the next ones (at most `HELD_SPARE_MAX`): allocated fresh and freed after each
    /// pause they cost page faults, a tenth of a 1:1 profile.
    held_spare: Vec<Vec<u8>>,
    /// Mail drained from the inbox, handled this iteration.
    mail: Vec<Mail>,
    /// Last cluster client-URL generation this reactor told its clients about.
    urls_gen: u64,
    /// Local connections with output to send this iteration.
    dirty: Vec<u64>,
    /// Routes holding a message to merge with its twin (see `conn::route::Held`): the loop
    /// sleeps at most `HOLD_MAX` while there are any, and releases what has waited that long.
    held_routes: Vec<u64>,
    stalled: Vec<u64>,
    closing: Vec<u64>,
    rng: SmallRng,
    wake_buf: Box<[u8; 8]>,
    now: Instant,
    next_tick: Instant,
    shutting_down: Option<Instant>,
    /// Lame duck mode, once this reactor has seen it.
    lame_duck: Option<LameDuck>,
    /// Accept back-off per listener (client, route) after running out of descriptors.
    accept_backoff: [Duration; 2],
    accept_resume: [Option<Instant>; 2],
    /// Counters for the monitoring port, published once per loop iteration.
    stats: LocalStats,
    /// Scratch buffer for direct sends to other reactors' connections.
    direct_buf: Vec<u8>,
    /// The reloadable options, taken from `server.live` at start and on `Mail::Reload`.
    live: Arc<Live>,
}

/// Adds what direct senders wrote to a connection's own counters (and counts it as
/// activity, as a send of its own would).
fn fold_direct_counts(conn: &mut Connection, now: Instant) {
    let (msgs, bytes) = conn.out.take_direct_counts();
    if msgs > 0 {
        conn.stats.out_msgs += msgs;
        conn.stats.out_bytes += bytes;
        conn.stats.last_activity = now;
    }
}

/// Drops what a TLS connection queued before its handshake failed (a route's INFO and
/// CONNECT, meant for the encrypted session): only the `-ERR` goes out, in clear.
fn discard_queued(out: &Outbound) {
    let mut queued = Vec::new();
    out.take(&mut queued);
}

/// Parses `data` for connection `c`; a parser error fails the connection. While `c`'s
/// CONNECT waits for a bcrypt verdict, `data` (or what follows that CONNECT in it) is kept,
/// in order, in `held_plain`, to be parsed after the verdict.
fn parse(
    parser: &mut Parser,
    c: &mut Connection,
    data: &[u8],
    env: &mut Env<'_>,
    held_plain: &mut Vec<u8>,
) {
    if c.auth_pending() {
        held_plain.extend_from_slice(data);
        return;
    }
    let is_route = c.is_route();
    let parsed = parser.parse_with_config(data, |op, cfg| {
        let is_connect = matches!(op, Op::Connect(_));
        let flow = c.on_op(op, env);
        if is_connect && !is_route {
            // HPUB is an op only for clients that asked for headers.
            cfg.headers = c.opts.headers;
        }
        flow
    });
    c.input_done(env);
    match parsed {
        Err(e) => {
            let _ = c.fail(e, env);
        }
        Ok(Parsed::Stopped) if c.auth_pending() => {
            held_plain.extend_from_slice(&data[parser.stopped_at()..]);
        }
        Ok(_) => {}
    }
}

/// A send waits for room in the socket, and the kernel wakes it only once a third of the
/// send buffer (autotuned up to megabytes) has drained: a subscriber reading steadily but
/// slower than its publisher can keep one send in flight for hundreds of milliseconds.
/// While the socket's queue shrinks from one tick to the next the peer is reading, so the
/// send counts as started now: its queue is slow, not stuck, and keeps pausing its
/// publishers (a stuck peer's socket queue does not shrink).
fn note_send_progress(conn: &mut Slot, now: Instant) {
    let mut outq: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for a TCP socket) writes one int through the pointer, which
    // points at `outq`; the descriptor is this slot's open socket.
    let r = unsafe { libc::ioctl(conn.stream.as_raw_fd(), libc::TIOCOUTQ, &mut outq) };
    if r != 0 {
        return;
    }
    if conn.outq_seen > 0 && outq < conn.outq_seen {
        conn.conn.out.send_started(now);
    }
    conn.outq_seen = outq;
}

/// Copies of received buffers kept for reuse by one reactor (see `Reactor::held_spare`):
/// each holds at most one ring buffer (`RECV_BUF_SIZE`), so the spares stay under 512 KiB.
const HELD_SPARE_MAX: usize = 16;

/// Gives a parsed input's buffer back: a ring buffer to the ring, a held copy to the spares.
fn recycle_input(input: Input, bufs: &mut BufRing, spare: &mut Vec<Vec<u8>>) {
    match input {
        Input::Ring(bid, _) => bufs.recycle(bid),
        Input::Held(mut v) if spare.len() < HELD_SPARE_MAX => {
            v.clear();
            spare.push(v);
        }
        Input::Held(_) | Input::Plain(_) => {}
    }
}

/// A client's parser limits under `live`.
fn client_parser_config(live: &Live) -> ParserConfig {
    ParserConfig {
        max_control_line: live.opts.max_control_line,
        max_payload: live.opts.max_payload,
        headers: false,
        route: false,
        require_connect: live.conn_cfg.auth.required(),
    }
}

/// A route's parser limits under `live` (never below what a peer may forward).
fn route_parser_config(live: &Live, require_connect: bool) -> ParserConfig {
    ParserConfig {
        max_control_line: live.opts.max_control_line.max(4096),
        max_payload: live.opts.max_payload.max(ROUTE_MAX_PAYLOAD),
        headers: false,
        route: true,
        require_connect,
    }
}

/// Resolves a route's host name off the reactor thread, then queues the dial again.
fn resolve_in_background(server: Arc<Shared>, mut dial: Dial) {
    let spawned = std::thread::Builder::new()
        .name("route-resolve".into())
        .spawn(move || {
            let Some(cluster) = server.cluster.as_ref() else {
                return;
            };
            let resolved = std::net::ToSocketAddrs::to_socket_addrs(&dial.url.host_port())
                .ok()
                .and_then(|mut a| a.next());
            match resolved {
                Some(a) => {
                    dial.addr = Some(a);
                    dial.at = Instant::now();
                    cluster.schedule(dial);
                }
                None => {
                    crate::debug!(
                        "Error trying to connect to route: cannot resolve {}",
                        dial.url
                    );
                    cluster.dial_failed(dial, Instant::now());
                }
            }
        });
    if let Err(e) = spawned {
        crate::error!("Cannot start a resolver thread: {e}");
    }
}

fn peer_of(stream: &TcpStream) -> SocketAddr {
    stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
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
    pub fn new(
        id: usize,
        server: Arc<Shared>,
        handles: Arc<[ReactorHandle]>,
        listeners: Listeners,
    ) -> io::Result<Self> {
        let ring = build_ring().map_err(setup_error)?;
        let bufs = BufRing::new(&ring, 0, RECV_BUFS, RECV_BUF_SIZE).map_err(setup_error)?;
        let now = Instant::now();
        let reactors = handles.len();
        Ok(Reactor {
            ring,
            bufs,
            id,
            listener: Some(listeners.client),
            route_listener: listeners.route,
            conns: Slab::new(),
            dials: Slab::new(),
            batch: {
                let mut batch = WakeBatch::new(reactors);
                batch.set_home(id);
                batch
            },
            pub_run: PubRun::default(),
            held_spare: Vec::new(),
            direct_buf: Vec::new(),
            mail: Vec::new(),
            urls_gen: 0,
            handles,
            dirty: Vec::new(),
            held_routes: Vec::new(),
            stalled: Vec::new(),
            closing: Vec::new(),
            rng: SmallRng::from_entropy(),
            wake_buf: Box::new([0u8; 8]),
            now,
            next_tick: now + TICK,
            shutting_down: None,
            lame_duck: None,
            accept_backoff: [Duration::ZERO; 2],
            accept_resume: [None; 2],
            stats: LocalStats::default(),
            live: server.live(),
            server,
        })
    }

    fn handle(&self) -> &ReactorHandle {
        &self.handles[self.id]
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
            self.stats.submits += 1;
            if let Err(e) = self.ring.submit() {
                crate::error!("io_uring submit: {e}");
            }
        }
    }

    fn arm_accept(&mut self, kind: Kind) {
        let listener = match kind {
            Kind::RouteAccept => &self.route_listener,
            _ => &self.listener,
        };
        if let Some(l) = listener {
            let sqe = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
                .build()
                .user_data(user_data(kind, 0));
            self.push_sqe(sqe);
        }
    }

    fn arm_wake(&mut self) {
        let fd = self.handle().eventfd();
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
        self.arm_accept(Kind::Accept);
        self.arm_accept(Kind::RouteAccept);
        self.arm_wake();
        loop {
            if self.shutting_down.is_none() && self.server.shutdown.load(Ordering::Relaxed) {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutting_down {
                if (self.conns.is_empty() && self.dials.is_empty()) || self.now >= deadline {
                    return Ok(());
                }
            }
            self.wait()?;
            self.now = Instant::now();
            self.batch.set_now(self.now);
            self.reap();
            self.release_held();
            self.bufs.publish();
            self.hand_off();
            self.drain_inbox();
            self.flush_dirty();
            if !self.stalled.is_empty() && self.check_stalls() {
                // What the resumed publishers' held input produced goes out now, not when
                // something next wakes this reactor.
                self.hand_off();
                self.flush_dirty();
            }
            if self.now >= self.next_tick {
                self.next_tick = self.now + TICK;
                self.tick();
            }
            self.finish_closing();
            self.publish_stats();
        }
    }

    /// Writes out what routes have held for merging long enough.
    fn release_held(&mut self) {
        if self.held_routes.is_empty() {
            return;
        }
        let mut still = std::mem::take(&mut self.held_routes);
        still.retain(|&token| {
            let holds = self.with_env(token, |slot, env| slot.conn.release_held(env));
            self.batch.flush(&mut Vec::new());
            holds == Some(true)
        });
        self.held_routes = still;
    }

    /// Copies this iteration's counters where the monitor reads them (plain stores).
    fn publish_stats(&mut self) {
        let s = &mut self.stats;
        s.iterations += 1;
        s.paused_publishers = self.stalled.len() as u64;
        s.connections = self.conns.len() as u64;
        s.publish(&self.server.stats[self.id]);
    }

    /// Submits queued SQEs and sleeps in the kernel until a completion, the next tick, or
    /// a wake-up — unless completions or handed-off work are already waiting.
    fn wait(&mut self) -> io::Result<()> {
        self.stats.submits += 1;
        if !self.ring.completion().is_empty() {
            return self.ring.submit().map(|_| ());
        }
        let mut until = self.next_tick;
        if !self.held_routes.is_empty() {
            until = until.min(self.now + HOLD_POLL);
        }
        for c in self.stalled.iter().filter_map(|&t| self.conns.get(t)) {
            // A paused publisher resumes on its subscribers' drain (a send completion
            // here, or a nudge from their owner) or when its pause expires.
            if let Some(since) = c.stalled_since {
                until = until.min(since + STALL_MAX);
            }
        }
        let timeout = until.saturating_duration_since(Instant::now());
        let handle = &self.handles[self.id];
        if !handle.prepare_sleep() {
            return self.ring.submit().map(|_| ());
        }
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        let r = self.ring.submitter().submit_with_args(1, &args);
        handle.awake();
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
            self.stats.completions += 1;
            match kind {
                k if k == Kind::Recv as u8 => self.on_recv(token, res, flags),
                k if k == Kind::Send as u8 => self.on_send(token, res),
                k if k == Kind::Accept as u8 => self.on_accept(Kind::Accept, res, flags),
                k if k == Kind::RouteAccept as u8 => self.on_accept(Kind::RouteAccept, res, flags),
                k if k == Kind::Connect as u8 => self.on_connect(token, res),
                k if k == Kind::Wake as u8 && self.shutting_down.is_none() => {
                    self.stats.wakeups += 1;
                    self.arm_wake()
                }
                _ => {}
            }
        }
    }

    fn on_accept(&mut self, kind: Kind, res: i32, flags: u32) {
        let is_route = kind == Kind::RouteAccept;
        if matches!(
            -res,
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS
        ) {
            // Out of descriptors: back off (10 ms doubling to 1 s) instead of spinning on
            // the error, and say so once per back-off.
            let backoff = &mut self.accept_backoff[is_route as usize];
            *backoff = (*backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
            let err = io::Error::from_raw_os_error(-res);
            crate::error!(
                "Error accepting {} connection: {err}; retrying in {:?}",
                if is_route { "route" } else { "client" },
                *backoff
            );
            if !cqueue::more(flags) {
                self.accept_resume[is_route as usize] = Some(self.now + *backoff);
            }
            return;
        }
        if !cqueue::more(flags) && self.shutting_down.is_none() {
            self.arm_accept(kind);
        }
        if res < 0 {
            let err = io::Error::from_raw_os_error(-res);
            if self.shutting_down.is_none() && -res != libc::ECANCELED {
                crate::error!("Error accepting client connection: {err}");
            }
            return;
        }
        self.accept_backoff[is_route as usize] = Duration::ZERO;
        self.stats.clients_accepted += u64::from(!is_route);
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(res) };
        if self.shutting_down.is_some() {
            return;
        }
        if is_route {
            self.add_route(stream, None);
        } else {
            self.add_client(stream);
        }
    }

    /// Puts a connected socket and its connection state in a slot. `out` must have been
    /// made for the slot's token (`conns.vacant_token()`).
    fn add_slot(&mut self, stream: TcpStream, conn: Connection, parser: Parser) -> u64 {
        let _ = stream.set_nodelay(true);
        let token = self.conns.insert(Slot {
            stream,
            conn,
            parser,
            sending: Vec::new(),
            send_off: 0,
            send_inflight: false,
            claimed: false,
            send_started: self.now,
            outq_seen: 0,
            recv_armed: false,
            stalled_on: Vec::new(),
            stalled_since: None,
            held: VecDeque::new(),
            held_plain: Vec::new(),
            peer_gone: false,
            close_deadline: None,
            shut: false,
            tls: None,
        });
        self.dirty.push(token);
        token
    }

    fn add_client(&mut self, stream: TcpStream) {
        let peer = peer_of(&stream);
        let server = Arc::clone(&self.server);
        let cid = server.next_cid();
        let token = self.conns.vacant_token();
        let live = Arc::clone(&self.live);
        let out = Arc::new(Outbound::new(cid, self.id, token, server.opts.max_pending));
        let conn = Connection::client(cid, Arc::clone(&out), peer, self.now, &live.conn_cfg);
        let parser = Parser::new(client_parser_config(&live));
        let tls = match &live.tls {
            None => None,
            Some(t) => match TlsSession::new(Arc::clone(&t.config), self.now + t.timeout) {
                Ok(s) => Some(Box::new(s)),
                Err(e) => {
                    crate::error!("{peer} - cid:{cid} - TLS session error: {e}");
                    return;
                }
            },
        };
        let token = self.add_slot(stream, conn, parser);
        debug_assert_eq!(token, out.token);
        server.register_conn(
            cid,
            ConnRef {
                reactor: self.id,
                token,
                is_route: false,
            },
        );
        crate::debug!("{peer} - cid:{cid} - Client connection created");
        match (tls, self.conns.get_mut(token)) {
            // INFO goes out in clear before the handshake, ahead of anything queued.
            (Some(tls), Some(slot)) => {
                crate::debug!("{peer} - cid:{cid} - Starting TLS client connection handshake");
                slot.sending = server.client_info(&live, cid, Some(peer.ip()));
                slot.tls = Some(tls);
            }
            (None, Some(slot)) => {
                out.push(&server.client_info(&live, cid, Some(peer.ip())));
                // Plain text: a publishing reactor may write to this socket itself while
                // this one sleeps (`Outbound::send_direct`).
                out.allow_direct(slot.stream.as_raw_fd());
            }
            _ => {}
        }
        let count = server.conn_count.fetch_add(1, Ordering::Relaxed) + 1;
        if count > live.opts.max_connections {
            crate::error!("{peer} - cid:{cid} - Maximum Connections Exceeded");
            self.fail_conn(token, ProtoError::MaxConnections);
            return;
        }
        self.arm_recv(token);
    }

    /// A route connection: accepted on the route port, or dialled (`dial`).
    fn add_route(&mut self, stream: TcpStream, dial: Option<Dial>) {
        let server = Arc::clone(&self.server);
        let Some(cluster) = server.cluster.as_ref() else {
            return;
        };
        let peer = peer_of(&stream);
        let cid = server.next_cid();
        let token = self.conns.vacant_token();
        let limit = server.opts.max_pending.saturating_mul(ROUTE_PENDING_FACTOR);
        let out = Arc::new(Outbound::for_route(cid, self.id, token, limit));
        let solicited = dial.is_some();
        let auth = cluster.auth_required();
        // Route TLS starts at once (no clear INFO): the dialling side is the TLS client.
        let live = Arc::clone(&self.live);
        let tls = match &live.route_tls {
            None => None,
            Some(t) => {
                let deadline = self.now + t.timeout;
                let session = match &dial {
                    Some(d) => ServerName::try_from(d.url.host.clone())
                        .map_err(|e| rustls::Error::General(e.to_string()))
                        .and_then(|name| TlsSession::client(Arc::clone(&t.client), name, deadline)),
                    None => TlsSession::new(Arc::clone(&t.server), deadline),
                };
                match session {
                    Ok(s) => Some(Box::new(s)),
                    Err(e) => {
                        crate::error!("{peer} - rid:{cid} - TLS session error: {e}");
                        if let Some(d) = dial {
                            cluster.dial_failed(d, self.now);
                        }
                        return;
                    }
                }
            }
        };
        let conn = Connection::route(
            cid,
            Arc::clone(&out),
            peer,
            dial,
            auth,
            self.now,
            &live.conn_cfg,
        );
        let parser = Parser::new(route_parser_config(&live, auth && !solicited));
        let token = self.add_slot(stream, conn, parser);
        server.register_conn(
            cid,
            ConnRef {
                reactor: self.id,
                token,
                is_route: true,
            },
        );
        crate::info!("{peer} - rid:{cid} - Route connection created");
        if let Some(slot) = self.conns.get_mut(token) {
            if tls.is_some() {
                let side = if solicited { "client" } else { "server" };
                crate::debug!("{peer} - rid:{cid} - Starting TLS route {side} handshake");
            }
            slot.tls = tls;
        }
        self.with_env(token, |slot, env| slot.conn.greet(env));
        self.batch.flush(&mut Vec::new());
        self.arm_recv(token);
    }

    /// Runs `f` on connection `token` with the environment for one batch of its work
    /// (`None` if the slot is gone). The caller flushes the batch.
    fn with_env<R>(
        &mut self,
        token: u64,
        f: impl FnOnce(&mut Slot, &mut Env<'_>) -> R,
    ) -> Option<R> {
        let Reactor {
            conns,
            batch,
            pub_run,
            rng,
            server,
            now,
            live,
            ..
        } = self;
        let slot = conns.get_mut(token)?;
        let mut env = Env::new(server, live, batch, pub_run, rng, *now);
        Some(f(slot, &mut env))
    }

    /// Starts the dials that are due for this reactor (non-blocking connect on the ring).
    fn start_dials(&mut self) {
        let server = Arc::clone(&self.server);
        let Some(cluster) = server.cluster.as_ref() else {
            return;
        };
        for dial in cluster.take_due(self.id, self.now) {
            let addr = match (dial.addr, dial.url.host.parse::<std::net::IpAddr>()) {
                (Some(a), _) => a,
                (None, Ok(ip)) => SocketAddr::new(ip, dial.url.port),
                (None, Err(_)) => {
                    // Name resolution may block: it runs on its own thread, which
                    // queues the dial again with the address (or reports the failure).
                    resolve_in_background(Arc::clone(&server), dial);
                    continue;
                }
            };
            crate::debug!("Trying to connect to route on {}", dial.url.host_port());
            let socket = match Socket::new(Domain::for_address(addr), Type::STREAM, None) {
                Ok(s) => s,
                Err(e) => {
                    crate::error!("Error trying to connect to route: {e}");
                    cluster.dial_failed(dial, self.now);
                    continue;
                }
            };
            let addr = Box::new(SockAddr::from(addr));
            let (fd, ptr, len) = (socket.as_raw_fd(), addr.as_ptr(), addr.len());
            let token = self.dials.insert(Dialing {
                socket,
                addr,
                dial,
                started: self.now,
                cancelled: false,
            });
            let sqe = opcode::Connect::new(types::Fd(fd), ptr.cast(), len)
                .build()
                .user_data(user_data(Kind::Connect, token));
            self.push_sqe(sqe);
        }
    }

    /// Cancels dials that took longer than the dial timeout.
    fn expire_dials(&mut self) {
        let now = self.now;
        for token in self.dials.tokens() {
            let Some(d) = self.dials.get_mut(token) else {
                continue;
            };
            if !d.cancelled && now.duration_since(d.started) >= ROUTE_DIAL_TIMEOUT {
                d.cancelled = true;
                let sqe = opcode::AsyncCancel::new(user_data(Kind::Connect, token))
                    .build()
                    .user_data(user_data(Kind::Cancel, token));
                self.push_sqe(sqe);
            }
        }
    }

    fn on_connect(&mut self, token: u64, res: i32) {
        let Some(d) = self.dials.remove(token) else {
            return;
        };
        let server = Arc::clone(&self.server);
        let Some(cluster) = server.cluster.as_ref() else {
            return;
        };
        if res < 0 || self.shutting_down.is_some() {
            if self.shutting_down.is_none() {
                crate::debug!(
                    "Error trying to connect to route: {}",
                    io::Error::from_raw_os_error(-res)
                );
                cluster.dial_failed(d.dial, self.now);
            }
            return;
        }
        drop(d.addr);
        // SAFETY: the connected socket's descriptor moves from the socket2 wrapper into
        // the stream; nothing else owns it.
        let stream = unsafe { TcpStream::from_raw_fd(d.socket.into_raw_fd()) };
        self.add_route(stream, Some(d.dial));
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
            self.stats.enobufs += u64::from(-res == libc::ENOBUFS);
            // ENOBUFS: the buffer ring ran dry; buffers are recycled this iteration, so the
            // recv is simply re-armed below. ECANCELED: cancelled to pause a publisher.
            // Anything else (EOF, a socket error): the peer is gone, once what it sent
            // before is parsed (held while paused: see `after_input`).
            if !matches!(-res, libc::ENOBUFS | libc::ECANCELED) && conn.close_deadline.is_none() {
                if conn.stalled_since.is_some() || !conn.held.is_empty() || conn.conn.auth_pending()
                {
                    conn.peer_gone = true;
                } else {
                    conn.conn.close(CloseReason::ClientClosed);
                }
            }
        } else if let Some(bid) = bid {
            if conn.stalled_since.is_some() || !conn.held.is_empty() || conn.conn.auth_pending() {
                // Paused (a backed-up subscriber, or a CONNECT waiting for its bcrypt
                // verdict): data that was already in flight waits, in order, for the resume.
                // It is copied out so the shared ring is not starved by paused publishers
                // (bounded: only what was in flight when the recv was cancelled).
                let data = self.bufs.get(bid, res as usize);
                let mut copy = self.held_spare.pop().unwrap_or_default();
                // Exact, not amortized: a spare never grows past one ring buffer.
                copy.reserve_exact(data.len());
                copy.extend_from_slice(data);
                conn.held.push_back(copy);
                self.bufs.recycle(bid);
            } else {
                self.feed(token, Input::Ring(bid, res as usize));
            }
        }
        self.after_input(token);
    }

    /// Parses one received buffer for `token` (giving a ring buffer back afterwards); a TLS
    /// connection's is decrypted first.
    fn feed(&mut self, token: u64, input: Input) {
        let Reactor {
            conns,
            bufs,
            batch,
            pub_run,
            held_spare,
            rng,
            server,
            now,
            stalled,
            stats,
            dirty,
            held_routes,
            live,
            ..
        } = self;
        let Some(conn) = conns.get_mut(token) else {
            recycle_input(input, bufs, held_spare);
            return;
        };
        if conn.conn.closing().is_none() {
            let (msgs_before, bytes_before) = (conn.conn.stats.in_msgs, conn.conn.stats.in_bytes);
            conn.conn.stats.last_activity = *now;
            let data = match &input {
                Input::Ring(bid, len) => bufs.get(*bid, *len),
                Input::Held(v) | Input::Plain(v) => v.as_slice(),
            };
            let mut env = Env::new(server, live, batch, pub_run, rng, *now);
            let c = &mut conn.conn;
            match conn.tls.as_deref_mut() {
                Some(tls) if !matches!(input, Input::Plain(_)) => {
                    let (parser, held_plain) = (&mut conn.parser, &mut conn.held_plain);
                    let read = tls.read(data, |plain| {
                        parse(parser, c, plain, &mut env, held_plain);
                        if c.closing().is_some() {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        }
                    });
                    match read {
                        Ok(true) => {
                            // What was queued meanwhile (a route's INFO) goes out now; the
                            // queue's wake mark may be stale, as nothing was taken before.
                            dirty.push(token);
                            crate::debug!("{}TLS handshake complete", c.log_prefix);
                            crate::debug!("{}{}", c.log_prefix, tls.describe());
                            c.tls_handshake_done(*now, &live.conn_cfg);
                        }
                        Ok(false) => {}
                        Err(e @ (ReadError::NotTls | ReadError::Handshake(_))) => {
                            crate::debug!("{}TLS handshake error: {e}", c.log_prefix);
                            discard_queued(&c.out);
                            let _ = c.fail(ProtoError::TlsRequired, &mut env);
                        }
                        Err(e @ ReadError::Session(_)) => {
                            crate::debug!("{}TLS error: {e}", c.log_prefix);
                            c.close(CloseReason::ClientClosed);
                        }
                    }
                    if tls.wants_write() {
                        dirty.push(token);
                    }
                }
                // Plain text, or plaintext a TLS session decrypted before a CONNECT that
                // waited for bcrypt.
                _ => parse(&mut conn.parser, c, data, &mut env, &mut conn.held_plain),
            }
            if c.holds_forward() && !held_routes.contains(&token) {
                held_routes.push(token);
            }
            stats.in_msgs += c.stats.in_msgs - msgs_before;
            stats.in_bytes += c.stats.in_bytes - bytes_before;
        }
        recycle_input(input, bufs, held_spare);
        // A route is paused like a publisher: a local subscriber that reads, but slower
        // than the route brings its messages, is backed up to its stall threshold, not
        // cut at max_pending with the rest lost (gnatsd 1.0's route blocks on that
        // subscriber's write). One that has stopped reading is stuck and pauses nobody.
        batch.flush(&mut conn.stalled_on);
        if conn.conn.auth_pending() && conn.recv_armed {
            // No reading until the verdict: what is in flight is held (bounded).
            let sqe = opcode::AsyncCancel::new(user_data(Kind::Recv, token))
                .build()
                .user_data(user_data(Kind::Cancel, token));
            self.push_sqe(sqe);
            return;
        }
        if !conn.stalled_on.is_empty() && conn.stalled_since.is_none() {
            // A subscriber is backed up: stop reading this publisher until it drains.
            conn.stalled_since = Some(*now);
            stalled.push(token);
            stats.publisher_pauses += 1;
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
        let resumed = conn.stalled_since.is_none() && !conn.conn.auth_pending();
        if conn.peer_gone && resumed && conn.held.is_empty() && conn.conn.closing().is_none() {
            // Everything it sent before it went has been parsed.
            conn.conn.close(CloseReason::ClientClosed);
        }
        if conn.conn.closing().is_some() {
            conn.held.clear();
            conn.held_plain.clear();
            self.start_close(token);
        } else if !conn.recv_armed && resumed && !conn.peer_gone {
            self.arm_recv(token);
        }
    }

    /// Resumes paused publishers whose subscribers drained (or after STALL_MAX): first the
    /// buffers held while paused, then the recv. True if any was resumed.
    fn check_stalls(&mut self) -> bool {
        let now = self.now;
        let now_ns = mono_ns(now);
        let me = self.id;
        let mut resume = Vec::new();
        self.stalled.retain(|&token| {
            let Some(conn) = self.conns.get_mut(token) else {
                return false;
            };
            // Still waiting only on destinations that are backed up and draining; one
            // that got stuck meanwhile pauses nobody.
            conn.stalled_on.retain(|o| {
                if o.reactor != me {
                    // Its owner nudges us when it takes the bytes; ours are seen when our
                    // own send completes.
                    o.watch_drain(me);
                }
                !o.is_dead() && o.pending_hint() > o.stall_bytes() / 2 && !o.is_stuck(now_ns)
            });
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
        let resumed = !resume.is_empty();
        for token in resume {
            while let Some(data) = self
                .conns
                .get_mut(token)
                .filter(|c| c.stalled_since.is_none() && !c.conn.auth_pending())
                .and_then(|c| c.held.pop_front())
            {
                self.feed(token, Input::Held(data));
            }
            self.after_input(token);
        }
        resumed
    }

    fn on_send(&mut self, token: u64, res: i32) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        conn.send_inflight = false;
        conn.conn.out.send_done();
        if res < 0 {
            conn.sending.clear();
            conn.send_off = 0;
            if std::mem::take(&mut conn.claimed) {
                conn.conn.out.release_claim();
            }
            if conn.close_deadline.is_none() {
                conn.conn.close(CloseReason::WriteError);
                self.start_close(token);
            }
            return;
        }
        conn.send_off += res as usize;
        if conn.send_off >= conn.sending.len() {
            conn.sending.clear();
            conn.send_off = 0;
            if std::mem::take(&mut conn.claimed) {
                conn.conn.out.release_claim();
            }
            // Large buffers are given back only once the connection is idle: under steady
            // load the next send reuses this one, and freeing it each time cost a fresh
            // allocation, its reallocation copies and page faults on every send.
            if conn.sending.capacity() > OUT_KEEP && conn.conn.out.pending_hint() == 0 {
                conn.sending = Vec::new();
                conn.conn.out.shrink_idle(OUT_KEEP);
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
        if conn.conn.out.is_slow() && conn.close_deadline.is_none() {
            self.slow_consumer(token, SlowConsumer::MaxPending);
            return;
        }
        if conn.send_inflight || conn.shut {
            return;
        }
        if conn.sending.is_empty() {
            conn.send_off = 0;
            // A direct sender on another reactor may be writing this queue; it tells us
            // if bytes are left when it is done.
            if !conn.claimed {
                if !conn.conn.out.try_claim() {
                    return;
                }
                conn.claimed = true;
            }
            fold_direct_counts(&mut conn.conn, now);
            let taken = match conn.tls.as_deref_mut() {
                None => conn.conn.out.take_counted(&mut conn.sending),
                Some(tls) => {
                    let out = &conn.conn.out;
                    let closing = conn.conn.closing().is_some();
                    let mut counted = Taken::default();
                    let bytes = tls.write(
                        |buf| {
                            let t = out.take_counted(buf);
                            counted.msgs += t.msgs;
                            counted.payload_bytes += t.payload_bytes;
                            t.bytes
                        },
                        &mut conn.sending,
                        closing,
                    );
                    Taken { bytes, ..counted }
                }
            };
            nudge_drain_watchers(&self.handles, &conn.conn.out);
            if taken.bytes == 0 {
                if std::mem::take(&mut conn.claimed) {
                    conn.conn.out.release_claim();
                }
                return;
            }
            if taken.msgs > 0 {
                let c = &mut conn.conn.stats;
                c.out_msgs += taken.msgs;
                c.out_bytes += taken.payload_bytes;
                c.last_activity = now;
                self.stats.out_msgs += taken.msgs;
                self.stats.out_bytes += taken.payload_bytes;
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
        conn.outq_seen = 0;
        conn.conn.out.send_started(now);
        self.stats.sends += 1;
        self.stats.send_bytes += u64::from(len);
        self.push_sqe(sqe);
    }

    /// Moves this batch's cross-core marks to their owners' inboxes.
    fn hand_off(&mut self) {
        for r in 0..self.batch.reactors() {
            let (list, direct) = self.batch.lists_mut(r);
            if !direct.is_empty() {
                // The owner sleeps: waking it costs more than writing a few sockets from
                // here. Past DIRECT_MAX destinations it is woken to share the work.
                if r != self.id && direct.len() <= DIRECT_MAX && self.handles[r].is_sleeping() {
                    let mut sent = SmallVec::<[u64; DIRECT_MAX]>::new();
                    for out in direct.iter() {
                        let r = out.send_direct(&mut self.direct_buf);
                        nudge_drain_watchers(&self.handles, out);
                        let (Direct::Sent(t) | Direct::Owner(t)) = r;
                        self.stats.out_msgs += t.msgs;
                        self.stats.out_bytes += t.payload_bytes;
                        if let Direct::Sent(_) = r {
                            sent.push(out.token);
                            self.stats.direct_sends += 1;
                        }
                    }
                    // `list` holds a Flush for each candidate, in the same order.
                    let mut next = sent.iter().peekable();
                    list.retain(|m| match (m, next.peek()) {
                        (Mail::Flush(t), Some(&&s)) if *t == s => {
                            next.next();
                            false
                        }
                        _ => true,
                    });
                }
                direct.clear();
            }
            if list.is_empty() {
                continue;
            }
            if r == self.id {
                self.mail.append(list);
            } else {
                self.handles[r].post(list);
            }
        }
        self.handle_mail();
    }

    fn drain_inbox(&mut self) {
        self.handles[self.id].drain(&mut self.mail);
        self.handle_mail();
    }

    fn handle_mail(&mut self) {
        let mut mail = std::mem::take(&mut self.mail);
        let mut verdicts = Vec::new();
        for m in mail.drain(..) {
            match m {
                Mail::AuthDone { token, ok } => verdicts.push((token, ok)),
                Mail::Flush(token) => self.dirty.push(token),
                Mail::Close(token) => {
                    if let Some(slot) = self.conns.get_mut(token) {
                        slot.conn.close(CloseReason::ServerShutdown);
                        self.start_close(token);
                    }
                }
                Mail::Snapshot => self.answer_snapshots(),
                Mail::Reload => self.reload(),
            }
        }
        if self.mail.is_empty() {
            self.mail = mail;
        }
        if !verdicts.is_empty() {
            for (token, ok) in verdicts {
                self.auth_done(token, ok);
            }
            // Output of the resumed connections (and of what their held input published)
            // goes out this iteration.
            self.hand_off();
        }
    }

    /// A bcrypt verdict for a connection whose CONNECT waits: complete (or fail) it, then
    /// parse the input held meanwhile, in order, and read again.
    fn auth_done(&mut self, token: u64, ok: bool) {
        let Reactor {
            conns,
            batch,
            pub_run,
            rng,
            server,
            now,
            live,
            ..
        } = self;
        let Some(slot) = conns.get_mut(token) else {
            return;
        };
        if slot.conn.reauth_pending() {
            // A reload's re-check: the connection kept running; only its verdict is new.
            let mut env = Env::new(server, live, batch, pub_run, rng, *now);
            let _ = slot.conn.on_auth_done(ok, &mut env);
            drop(env);
            batch.flush(&mut slot.stalled_on);
            if slot.conn.closing().is_some() {
                self.after_input(token);
            }
            return;
        }
        if !slot.conn.auth_pending() {
            return;
        }
        let mut env = Env::new(server, live, batch, pub_run, rng, *now);
        let _ = slot.conn.on_auth_done(ok, &mut env);
        drop(env);
        batch.flush(&mut slot.stalled_on);
        if !slot.conn.auth_pending() && slot.conn.closing().is_none() && !slot.held_plain.is_empty()
        {
            // What followed the CONNECT in its buffer (decrypted, for TLS) comes first.
            let plain = std::mem::take(&mut slot.held_plain);
            self.feed(token, Input::Plain(plain));
        }
        while let Some(data) = self
            .conns
            .get_mut(token)
            .filter(|c| {
                c.stalled_since.is_none() && !c.conn.auth_pending() && c.conn.closing().is_none()
            })
            .and_then(|c| c.held.pop_front())
        {
            self.feed(token, Input::Held(data));
        }
        self.after_input(token);
    }

    /// The configuration was reloaded: take the new options and bring every connection in
    /// line (parser limits; the credentials again if the authorization changed), then
    /// close this reactor's share of the clients over a lowered `max_connections`.
    fn reload(&mut self) {
        let live = self.server.live();
        if Arc::ptr_eq(&live, &self.live) {
            return;
        }
        let old = std::mem::replace(&mut self.live, Arc::clone(&live));
        let reauth = old.auth_gen != live.auth_gen;
        let ping_changed = old.conn_cfg.ping_interval != live.conn_cfg.ping_interval;
        let mut clients = Vec::new();
        for token in self.conns.tokens() {
            let Some(slot) = self.conns.get_mut(token) else {
                continue;
            };
            if slot.close_deadline.is_some() {
                continue;
            }
            let route = slot.conn.is_route();
            let cfg = slot.parser.config_mut();
            let fresh = if route {
                route_parser_config(&live, cfg.require_connect)
            } else {
                client_parser_config(&live)
            };
            cfg.max_payload = fresh.max_payload;
            cfg.max_control_line = fresh.max_control_line;
            if !route {
                clients.push((slot.conn.cid, token));
            }
            if ping_changed {
                slot.conn
                    .ping_interval_changed(self.now, live.conn_cfg.ping_interval);
            }
            if reauth {
                let failed = self.with_env(token, |slot, env| {
                    slot.conn.reauthorize(env);
                    slot.conn.closing().is_some()
                });
                self.batch.flush(&mut Vec::new());
                if failed == Some(true) {
                    self.after_input(token);
                }
            }
        }
        // Newest first, as they would have been refused had the limit been in force.
        clients.sort_unstable_by_key(|&(cid, _)| std::cmp::Reverse(cid));
        for (_, token) in clients {
            // Clients that left meanwhile count: never close more than the excess left.
            if self.server.conn_count.load(Ordering::Relaxed) <= live.opts.max_connections {
                break;
            }
            let claimed = self
                .server
                .conn_excess
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if !claimed {
                break;
            }
            if let Some(slot) = self.conns.get(token) {
                if slot.close_deadline.is_some() || slot.conn.closing().is_some() {
                    continue;
                }
                crate::error!("{}Maximum Connections Exceeded", slot.conn.log_prefix);
            }
            self.fail_conn(token, ProtoError::MaxConnections);
        }
        // The -ERRs and route UNSUBs staged above go out this iteration.
        self.hand_off();
    }

    /// Answers the monitor's snapshot requests (between two iterations: a few µs per
    /// connection, only when asked).
    fn answer_snapshots(&mut self) {
        for req in self.handles[self.id].take_snapshot_requests() {
            let started = Instant::now();
            let snap = self.snapshot(&req.query);
            (req.reply)(snap);
            self.stats.snapshots += 1;
            self.stats.snapshot_ns += started.elapsed().as_nanos() as u64;
        }
    }

    fn snapshot(&mut self, q: &SnapshotQuery) -> ReactorSnapshot {
        let now = self.now;
        for (_, slot) in self.conns.iter_mut() {
            fold_direct_counts(&mut slot.conn, now);
        }
        let auth = &self.live.conn_cfg.auth;
        let user_auth = auth.user.is_some() || !auth.users.is_empty();
        let wanted = |slot: &Slot| {
            let c = &slot.conn;
            slot.close_deadline.is_none()
                && q.cid.is_none_or(|cid| cid == c.cid)
                && match (&c.kind, q.kind) {
                    (crate::conn::Kind::Client, SnapshotKind::Clients) => true,
                    (crate::conn::Kind::Route(r), SnapshotKind::Routes) => r.registered,
                    _ => false,
                }
        };
        let unsent = |slot: &Slot| slot.sending.len().saturating_sub(slot.send_off);
        let mut conns = Vec::new();
        for (token, slot) in self.conns.iter() {
            if wanted(slot) {
                conns.push(slot.conn.snapshot(token, unsent(slot), false, user_auth));
            }
        }
        let total = conns.len();
        stats::select(&mut conns, q.sort, q.keep);
        if q.subs {
            for c in &mut conns {
                if let Some(slot) = self.conns.get_mut(c.token) {
                    *c = slot.conn.snapshot(c.token, unsent(slot), true, user_auth);
                }
            }
        }
        ReactorSnapshot {
            reactor: self.id,
            total,
            conns,
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
        let deadline = self.live.opts.write_deadline;
        let tokens = self.conns.tokens();
        let mut closing = Vec::new();
        let mut tls_timeouts = Vec::new();
        for token in tokens {
            let Reactor {
                conns,
                batch,
                pub_run,
                rng,
                server,
                live,
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
            if conn.send_inflight {
                note_send_progress(conn, now);
            }
            if let Some(tls) = conn.tls.as_deref().filter(|t| t.phase() != Phase::Open) {
                // No keepalive or authorization timer before the handshake is over.
                if now >= tls.deadline {
                    tls_timeouts.push(token);
                }
                continue;
            }
            let mut env = Env::new(server, live, batch, pub_run, rng, now);
            if conn.conn.on_tick(&mut env).is_break() {
                closing.push(token);
            }
        }
        for token in tls_timeouts {
            if let Some(slot) = self.conns.get(token) {
                crate::debug!("{}TLS handshake timeout", slot.conn.log_prefix);
                discard_queued(&slot.conn.out);
            }
            self.fail_conn(token, ProtoError::TlsRequired);
        }
        self.announce_client_urls();
        self.lame_duck_step();
        self.enforce_pending_budget();
        self.batch.flush(&mut Vec::new());
        for token in closing {
            self.start_close(token);
        }
        for (i, kind) in [Kind::Accept, Kind::RouteAccept].into_iter().enumerate() {
            if self.accept_resume[i].is_some_and(|t| now >= t) && self.shutting_down.is_none() {
                self.accept_resume[i] = None;
                self.arm_accept(kind);
            }
        }
        if self.server.cluster.is_some() && self.shutting_down.is_none() {
            self.expire_dials();
            self.start_dials();
        }
        self.hand_off();
        self.flush_dirty();
    }

    /// Publishes this reactor's pending output total; when the server's total passes
    /// [`PENDING_BUDGET`], cuts this reactor's stuck consumers, largest first, until its
    /// share is back under its part of the budget.
    fn enforce_pending_budget(&mut self) {
        let now_ns = mono_ns(self.now);
        let mut mine = 0usize;
        let mut stuck = Vec::new();
        for token in self.conns.tokens() {
            let Some(slot) = self.conns.get(token) else {
                continue;
            };
            let pending = slot.conn.out.pending_hint() + slot.sending.len() - slot.send_off
                + slot.tls.as_ref().map_or(0, |t| t.pending_plain());
            mine += pending;
            if slot.close_deadline.is_none()
                && pending >= BUDGET_CUT_MIN
                && slot.conn.out.is_stuck(now_ns)
            {
                stuck.push((pending, token));
            }
        }
        let total = self.server.set_pending(self.id, mine);
        if total <= PENDING_BUDGET || stuck.is_empty() {
            return;
        }
        stuck.sort_unstable_by_key(|&(pending, _)| std::cmp::Reverse(pending));
        let share = PENDING_BUDGET / self.handles.len();
        for (pending, token) in stuck {
            if mine <= share {
                break;
            }
            self.slow_consumer(token, SlowConsumer::PendingBudget);
            mine -= pending;
        }
        self.server.set_pending(self.id, mine);
    }

    /// The cluster learned new client URLs: protocol-1 clients get an async INFO.
    fn announce_client_urls(&mut self) {
        let Some(gen) = self.server.cluster.as_ref().map(|c| c.urls_gen()) else {
            return;
        };
        if gen == self.urls_gen {
            return;
        }
        self.urls_gen = gen;
        for token in self.conns.tokens() {
            self.with_env(token, |slot, env| slot.conn.on_connect_urls_changed(env));
        }
    }

    fn slow_consumer(&mut self, token: u64, what: SlowConsumer) {
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        let detail = match what {
            SlowConsumer::MaxPending => {
                format!("MaxPending of {} Exceeded", self.server.opts.max_pending)
            }
            SlowConsumer::WriteDeadline => {
                format!(
                    "WriteDeadline of {:?} Exceeded",
                    self.live.opts.write_deadline
                )
            }
            SlowConsumer::PendingBudget => {
                format!("server pending output above {PENDING_BUDGET} bytes, consumer not reading")
            }
        };
        crate::info!("{}Slow Consumer Detected: {detail}", conn.conn.log_prefix);
        self.stats.slow_consumers += 1;
        conn.conn.close(CloseReason::SlowConsumer(what));
        self.start_close(token);
        // A slow consumer is not reading: do not wait to flush.
        if let Some(conn) = self.conns.get_mut(token) {
            conn.close_deadline = Some(self.now);
        }
    }

    fn fail_conn(&mut self, token: u64, err: ProtoError) {
        self.with_env(token, |slot, env| {
            let _ = slot.conn.fail(err, env);
        });
        self.batch.flush(&mut Vec::new());
        self.start_close(token);
    }

    /// First step of closing: drop subscriptions and the connection count, then flush.
    fn start_close(&mut self, token: u64) {
        let write_deadline = self.live.opts.write_deadline;
        let Some(conn) = self.conns.get_mut(token) else {
            return;
        };
        if conn.close_deadline.is_some() {
            return;
        }
        if conn.conn.closing().is_none() {
            conn.conn.close(CloseReason::ServerShutdown);
        }
        // Staged output (an -ERR) was flushed before this; nothing more is accepted.
        conn.conn.out.close();
        conn.close_deadline = Some(self.now + write_deadline);
        let server = &*self.server;
        let mut env = Env::new(
            server,
            &self.live,
            &mut self.batch,
            &mut self.pub_run,
            &mut self.rng,
            self.now,
        );
        conn.conn.unsubscribe_all(&mut env);
        drop(env);
        server.unregister_conn(conn.conn.cid);
        if let Some(closed) = conn.conn.closed_route() {
            crate::debug!("{}Router connection closed", conn.conn.log_prefix);
            if let Some(cluster) = &server.cluster {
                let shutting_down = self.shutting_down.is_some();
                if let Some(d) = cluster.route_closed(closed, self.now, shutting_down) {
                    crate::debug!(
                        "{}Attempting reconnect for solicited route {}",
                        conn.conn.log_prefix,
                        d.url
                    );
                }
            }
        } else {
            server.conn_count.fetch_sub(1, Ordering::Relaxed);
            crate::debug!(
                "{}Client connection closed: {}",
                conn.conn.log_prefix,
                conn.conn
                    .closing()
                    .cloned()
                    .unwrap_or(CloseReason::ServerShutdown)
            );
        }
        // The withdrawn interest (UNSUBs to routes) goes out with this batch.
        self.batch.flush(&mut Vec::new());
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
                && conn.conn.out.pending_len() == 0
                && conn
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.is_idle() || !t.is_open());
            let expired = conn.close_deadline.is_some_and(|d| now >= d);
            if !conn.shut && (flushed || expired) {
                // Wakes the armed recv (it completes with 0) and fails a stuck send.
                // SAFETY: shutdown on a socket we own.
                unsafe { libc::shutdown(conn.stream.as_raw_fd(), libc::SHUT_RDWR) };
                conn.shut = true;
            }
            // The fd is closed with the slot: first make sure no direct send is writing to
            // it, or can start to.
            if conn.shut
                && !conn.recv_armed
                && !conn.send_inflight
                && conn.conn.out.claim_for_close(conn.claimed)
            {
                done.push(token);
                false
            } else {
                true
            }
        });
        for token in done {
            if let Some(conn) = self.conns.remove(token) {
                conn.conn.out.release();
            }
        }
    }

    /// Stops accepting on one port: cancels the multishot accept and closes the listener.
    fn close_listener(&mut self, kind: Kind) {
        let listener = match kind {
            Kind::RouteAccept => self.route_listener.take(),
            _ => self.listener.take(),
        };
        if let Some(l) = listener {
            let sqe = opcode::AsyncCancel::new(user_data(kind, 0))
                .build()
                .user_data(user_data(Kind::Cancel, 0));
            self.push_sqe(sqe);
            let _ = self.ring.submit();
            drop(l);
        }
    }

    /// Lame duck mode (once per tick): on first sight, stop accepting clients and tell
    /// protocol-1 clients (INFO with `ldm`); after the grace period, close this reactor's
    /// clients evenly over the rest of the duration, so they do not all reconnect at once.
    /// Routes stay up until the shutdown that follows.
    fn lame_duck_step(&mut self) {
        if self.shutting_down.is_some() {
            return;
        }
        if self.lame_duck.is_none() {
            if !self.server.lame_duck.load(Ordering::Relaxed) {
                return;
            }
            self.close_listener(Kind::Accept);
            self.accept_resume[0] = None;
            let mut clients = 0;
            for token in self.conns.tokens() {
                let client = self.with_env(token, |slot, env| {
                    if slot.conn.is_route() || slot.close_deadline.is_some() {
                        return false;
                    }
                    // The INFO now carries `ldm` (Shared::client_info).
                    slot.conn.on_connect_urls_changed(env);
                    true
                });
                clients += usize::from(client == Some(true));
            }
            self.lame_duck = Some(LameDuck {
                started: self.now,
                clients,
                closed: 0,
            });
        }
        let Some(ld) = &self.lame_duck else {
            return;
        };
        let opts = &self.server.opts;
        let grace = opts.lame_duck_grace_period;
        let Some(elapsed) = self.now.checked_duration_since(ld.started + grace) else {
            return;
        };
        // As 2.x: the closes are spread over the duration minus the grace period (1 s at least).
        let spread = opts
            .lame_duck_duration
            .saturating_sub(grace)
            .max(Duration::from_secs(1));
        let all = elapsed >= spread;
        let due = if all {
            usize::MAX
        } else {
            let frac = elapsed.as_secs_f64() / spread.as_secs_f64();
            ((ld.clients as f64 * frac).ceil() as usize).max(1)
        };
        let mut to_close = due.saturating_sub(ld.closed);
        if to_close == 0 {
            return;
        }
        let mut closed = 0;
        for token in self.conns.tokens() {
            if to_close == 0 {
                break;
            }
            let Some(slot) = self.conns.get_mut(token) else {
                continue;
            };
            if slot.conn.is_route() || slot.close_deadline.is_some() {
                continue;
            }
            slot.conn.close(CloseReason::ServerShutdown);
            self.start_close(token);
            to_close -= 1;
            closed += 1;
        }
        if let Some(ld) = &mut self.lame_duck {
            ld.closed += closed;
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = Some(self.now + Duration::from_secs(2));
        // Closing the listener ends the multishot accept (it completes with an error).
        self.close_listener(Kind::Accept);
        self.close_listener(Kind::RouteAccept);
        for token in self.dials.tokens() {
            let sqe = opcode::AsyncCancel::new(user_data(Kind::Connect, token))
                .build()
                .user_data(user_data(Kind::Cancel, token));
            self.push_sqe(sqe);
        }
        for token in self.conns.tokens() {
            self.start_close(token);
        }
    }
}

/// After bytes of `out` were taken: nudges the reactors with a publisher paused on it. The
/// caller's own reactor may be one of them (a publisher that drained, by a direct send, a
/// queue it is paused on): its next sleep is then skipped, so it looks at its pauses again.
fn nudge_drain_watchers(handles: &[ReactorHandle], out: &Outbound) {
    let mask = out.take_drain_watchers();
    if mask == 0 {
        return;
    }
    for (r, h) in handles.iter().enumerate() {
        if mask & (1 << (r % 64)) != 0 {
            h.nudge();
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
