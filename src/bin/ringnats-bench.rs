//! `ringnats-bench` — a standalone NATS load generator.
//!
//! It speaks the NATS text protocol itself over blocking sockets (one OS
//! thread per client) and does not depend on the `ringnats` library, so it can
//! be pointed at any NATS server (ringnats, nats-server, gnatsd) or at the
//! `ringnats-sink` discard server.
//!
//! Flags follow `nats-bench` (`-s -np -ns -n -ms -csv subject`); single-dash
//! long flags are rewritten to double-dash before clap parses them.
//!
//! Every message carries `[publisher index: u32 LE][sequence: u64 LE]` in its
//! first 12 payload bytes (when the size allows) and subscribers verify count,
//! loss, duplicates and per-publisher order. Exit codes: 0 ok, 1 verification
//! failure, 2 usage error, 3 timeout, 4 connection or protocol error.

use clap::{CommandFactory, Parser};
use hdrhistogram::Histogram;
use memchr::{memchr, memrchr};
use serde::Serialize;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a blocking socket call may sleep before we re-check flags.
const TICK: Duration = Duration::from_millis(100);
const CONNECT_LINE: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n";
/// Bytes in the verification header at the start of each payload.
const STAMP: usize = 12;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ringnats-bench",
    version,
    about = "NATS throughput / latency load generator (nats-bench compatible flags)",
    after_help = "Single-dash long flags (-np 4, -ns 1, -ms 16, -csv out.csv) are accepted like nats-bench.\n\
                  Exit codes: 0 ok, 1 verification failure (loss/dup/reorder), 2 usage, 3 timeout, 4 connection/protocol error."
)]
struct Args {
    /// Server URL (only the first of a comma-separated list is used)
    #[arg(short = 's', long = "server", default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// Subscribers and responders connect here instead of -s (publishers and
    /// requesters stay on -s); the run then starts only once a message
    /// published on -s reaches every subscriber, i.e. the route carries interest
    #[arg(long = "sub-url", value_name = "URL")]
    sub_url: Option<String>,
    /// With --sub-url: give up (exit 4) if interest has not crossed to -s within this many seconds
    #[arg(long = "sync-wait", value_name = "SECS", default_value_t = 10.0)]
    sync_wait: f64,
    /// Number of concurrent publishers (requesters with --req)
    #[arg(long = "np", default_value_t = 1)]
    np: usize,
    /// Number of concurrent subscribers (responders with --req)
    #[arg(long = "ns", default_value_t = 0)]
    ns: usize,
    /// Total number of messages to publish, split over the publishers
    #[arg(short = 'n', long = "msgs", default_value_t = 100_000)]
    msgs: u64,
    /// Payload size in bytes
    #[arg(long = "ms", default_value_t = 128)]
    ms: usize,
    /// Write per-client results in nats-bench CSV format to this file
    #[arg(long = "csv", value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Subscribers join this queue group (total delivered = msgs)
    #[arg(long = "queue", value_name = "GROUP")]
    queue: Option<String>,
    /// Publishers cycle over K subjects `<subject>.<i>`; subscribers use `<subject>.>`
    #[arg(long = "subjects", value_name = "K", default_value_t = 1)]
    subjects: u64,
    /// Request/reply mode: ns responders, np requesters, latency histogram
    #[arg(long = "req")]
    req: bool,
    /// Outstanding requests per requester in --req mode
    #[arg(long = "inflight", default_value_t = 1)]
    inflight: usize,
    /// Print one JSON summary object on stdout instead of the text line
    #[arg(long = "json")]
    json: bool,
    /// Give up (exit 3) after this many seconds
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
    /// Publishers send a PING after this many bytes and keep at most two outstanding (0 = off)
    #[arg(long = "flow-bytes", default_value_t = 1 << 20)]
    flow_bytes: usize,
    /// Publishers write in chunks of about this many bytes
    #[arg(long = "batch-bytes", default_value_t = 64 * 1024)]
    batch_bytes: usize,
    /// Seconds without deliveries (after all publishers flushed) before declaring loss
    #[arg(long = "drain-wait", value_name = "SECS", default_value_t = 3.0)]
    drain_wait: f64,
    /// Only open N idle connections (CONNECT+SUB), print "ready N" and hold them until killed or --timeout
    #[arg(long = "hold-idle", value_name = "N")]
    hold_idle: Option<usize>,
    /// Never print the live progress line
    #[arg(long = "no-progress")]
    no_progress: bool,
    /// Also open N subscribers on the same subject (on --sub-url if given) that never
    /// read after subscribing; they are not counted, and the summary says whether and
    /// when the server cut them (seen in /proc/net/tcp, without reading their data)
    #[arg(long = "stuck", value_name = "N", default_value_t = 0)]
    stuck: usize,
    /// SO_RCVBUF of the --stuck connections, set before connecting (the kernel doubles it)
    #[arg(long = "stuck-rcvbuf", value_name = "BYTES", default_value_t = 4096)]
    stuck_rcvbuf: usize,
    /// Subject to publish on
    #[arg(default_value = "bench")]
    subject: String,
}

/// Rewrites nats-bench style `-np 4` into `--np 4` for every long flag we know.
fn normalize_argv(raw: Vec<String>) -> Vec<String> {
    let cmd = Args::command();
    let longs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut passthrough = false;
    for (i, a) in raw.into_iter().enumerate() {
        if i == 0 || passthrough {
            out.push(a);
            continue;
        }
        if a == "--" {
            passthrough = true;
            out.push(a);
            continue;
        }
        if a.len() > 2 && a.starts_with('-') && !a.starts_with("--") {
            let name = a[1..].split('=').next().unwrap_or("");
            if name.len() > 1 && longs.iter().any(|l| l == name) {
                out.push(format!("-{a}"));
                continue;
            }
        }
        out.push(a);
    }
    out
}

fn resolve(url: &str) -> Result<SocketAddr, String> {
    let first = url.split(',').next().unwrap_or("").trim();
    let rest = first
        .strip_prefix("nats://")
        .or_else(|| first.strip_prefix("tcp://"))
        .unwrap_or(first);
    let rest = rest.rsplit('@').next().unwrap_or(rest);
    let rest = rest.trim_end_matches('/');
    let hostport = if rest.contains(':') && !rest.ends_with(']') {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    };
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("no address for {hostport}"))
}

// ---------------------------------------------------------------- failures

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Verify,
    Timeout,
    Io,
}

impl Failure {
    fn code(self) -> i32 {
        match self {
            Failure::Verify => 1,
            Failure::Timeout => 3,
            Failure::Io => 4,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Failure::Verify => "verification",
            Failure::Timeout => "timeout",
            Failure::Io => "io",
        }
    }
}

// ---------------------------------------------------------------- shared state

/// Start line: everybody connects and subscribes, then waits for `go`.
struct Gate {
    ready: Mutex<usize>,
    cv: Condvar,
    go: AtomicBool,
    start: OnceLock<Instant>,
}

struct Shared {
    args: Args,
    /// Publishers and requesters connect here.
    addr: SocketAddr,
    /// Subscribers and responders connect here (same as `addr` without --sub-url).
    sub_addr: SocketAddr,
    /// With --sub-url: subject of the start-line probe (see `route_barrier`).
    sync_subject: Option<String>,
    /// Subscribers/responders that received a probe message.
    synced: AtomicUsize,
    deadline: Instant,
    gate: Gate,
    abort: AtomicBool,
    stop: AtomicBool,
    reason: Mutex<Option<(Failure, String)>>,
    published: AtomicU64,
    delivered: AtomicU64,
    pubs_done: AtomicUsize,
    finished: AtomicUsize,
    /// The --stuck connections, held open (never read) until the process exits.
    stuck: Mutex<Vec<StuckConn>>,
    /// Tells the --stuck watcher that the measured clients are done.
    stuck_stop: AtomicBool,
}

impl Shared {
    fn fail(&self, kind: Failure, msg: String) {
        let mut g = self.reason.lock().unwrap();
        if g.is_none() {
            *g = Some((kind, msg));
        }
        self.abort.store(true, Ordering::SeqCst);
    }
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
    /// Called whenever a socket call timed out: bails out on abort/deadline.
    fn check(&self) -> Result<(), String> {
        if self.aborted() {
            return Err("aborted".into());
        }
        if Instant::now() >= self.deadline {
            self.fail(
                Failure::Timeout,
                format!("timed out after {}s", self.args.timeout),
            );
            return Err("aborted".into());
        }
        Ok(())
    }
    fn arrive(&self) {
        let mut g = self.gate.ready.lock().unwrap();
        *g += 1;
        self.gate.cv.notify_all();
    }
    /// Worker side of the start line; returns the common start instant.
    fn wait_go(&self) -> Result<Instant, String> {
        let mut g = self.gate.ready.lock().unwrap();
        loop {
            if self.gate.go.load(Ordering::SeqCst) {
                return Ok(*self.gate.start.get().expect("start set before go"));
            }
            drop(g);
            self.check()?;
            g = self.gate.ready.lock().unwrap();
            g = self.gate.cv.wait_timeout(g, TICK).unwrap().0;
        }
    }
    /// Main side of the start line.
    fn release(&self, total: usize) -> Option<Instant> {
        let mut g = self.gate.ready.lock().unwrap();
        while *g < total {
            drop(g);
            self.check().ok()?;
            g = self.gate.ready.lock().unwrap();
            if *g < total {
                g = self.gate.cv.wait_timeout(g, TICK).unwrap().0;
            }
        }
        let now = Instant::now();
        let _ = self.gate.start.set(now);
        self.gate.go.store(true, Ordering::SeqCst);
        self.gate.cv.notify_all();
        Some(now)
    }
}

// ---------------------------------------------------------------- buffers & parsing

struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    fn new(cap: usize) -> Self {
        ReadBuf {
            buf: vec![0; cap],
            start: 0,
            end: 0,
        }
    }
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Reads more bytes; `want` is the size of the frame that is incomplete.
    /// Ok(true) = got data, Ok(false) = read timed out.
    fn fill(&mut self, s: &mut TcpStream, want: usize) -> io::Result<bool> {
        let pending = self.end - self.start;
        let free = self.buf.len() - self.end;
        if self.start > 0 && (free < self.buf.len() / 4 || pending + free < want) {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        if want > self.buf.len() {
            self.buf.resize(want.next_power_of_two(), 0);
        }
        match s.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            )),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Msg,
    Ping,
    Pong,
    Err,
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Frame {
    kind: Kind,
    /// Length of the control line without CR LF.
    line_len: usize,
    payload_off: usize,
    payload_len: usize,
    total: usize,
}

enum Parse {
    Frame(Frame),
    /// Incomplete: this many bytes are needed in total.
    Need(usize),
    Bad(String),
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u64;
    }
    Some(v)
}

fn push_u64(buf: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Parses one server-to-client frame at the start of `d`.
#[inline]
fn parse_frame(d: &[u8]) -> Parse {
    let nl = match memchr(b'\n', d) {
        Some(i) => i,
        None => {
            if d.len() > 64 * 1024 {
                return Parse::Bad("control line longer than 64 KiB".into());
            }
            return Parse::Need(d.len() + 1);
        }
    };
    let line_len = if nl > 0 && d[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &d[..line_len];
    let op = if line.len() >= 4 { &line[..4] } else { line };
    let kind = match op {
        b"MSG " | b"HMSG" => Kind::Msg,
        b"PING" => Kind::Ping,
        b"PONG" => Kind::Pong,
        b"-ERR" => Kind::Err,
        _ => Kind::Other,
    };
    if kind != Kind::Msg {
        return Parse::Frame(Frame {
            kind,
            line_len,
            payload_off: nl + 1,
            payload_len: 0,
            total: nl + 1,
        });
    }
    // MSG <subject> <sid> [reply] <#bytes>  /  HMSG ... <#hdr> <#total>
    let size = match memrchr(b' ', line).and_then(|sp| parse_u64(&line[sp + 1..])) {
        Some(s) => s as usize,
        None => {
            return Parse::Bad(format!(
                "malformed MSG line: {}",
                String::from_utf8_lossy(line)
            ))
        }
    };
    let total = nl + 1 + size + 2;
    if d.len() < total {
        return Parse::Need(total);
    }
    if &d[total - 2..total] != b"\r\n" {
        return Parse::Bad("MSG payload not followed by CRLF".into());
    }
    Parse::Frame(Frame {
        kind,
        line_len,
        payload_off: nl + 1,
        payload_len: size,
        total,
    })
}

/// `write_all` that survives write timeouts and honours abort/deadline.
fn write_all(s: &mut TcpStream, mut buf: &[u8], sh: &Shared) -> Result<(), String> {
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err("connection closed while writing".into()),
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                sh.check()?
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

fn fill(s: &mut TcpStream, rb: &mut ReadBuf, want: usize, sh: &Shared) -> Result<bool, String> {
    match rb.fill(s, want) {
        Ok(true) => Ok(true),
        Ok(false) => {
            sh.check()?;
            Ok(false)
        }
        Err(e) => {
            if sh.aborted() {
                Err("aborted".into())
            } else {
                Err(format!("read: {e}"))
            }
        }
    }
}

fn err_text(d: &[u8], f: &Frame) -> String {
    format!(
        "server error: {}",
        String::from_utf8_lossy(&d[..f.line_len])
    )
}

/// Reads until `n` PONGs arrived, answering server PINGs. MSG frames are skipped.
fn read_pongs(s: &mut TcpStream, rb: &mut ReadBuf, n: usize, sh: &Shared) -> Result<(), String> {
    let mut got = 0;
    let mut pongs_to_send = 0;
    while got < n {
        let mut want = 0;
        loop {
            match parse_frame(rb.data()) {
                Parse::Frame(f) => {
                    match f.kind {
                        Kind::Pong => got += 1,
                        Kind::Ping => pongs_to_send += 1,
                        Kind::Err => return Err(err_text(rb.data(), &f)),
                        _ => {}
                    }
                    rb.consume(f.total);
                    if got == n {
                        break;
                    }
                }
                Parse::Need(w) => {
                    want = w;
                    break;
                }
                Parse::Bad(m) => return Err(m),
            }
        }
        for _ in 0..pongs_to_send {
            write_all(s, b"PONG\r\n", sh)?;
        }
        pongs_to_send = 0;
        if got < n {
            fill(s, rb, want, sh)?;
        }
    }
    Ok(())
}

/// Connects to `addr`, reads INFO, sends CONNECT + `extra` + PING and waits for the PONG.
fn open(
    sh: &Shared,
    addr: SocketAddr,
    extra: &[u8],
    rcap: usize,
) -> Result<(TcpStream, ReadBuf), String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    handshake(sh, s, extra, rcap)
}

/// The INFO / CONNECT + `extra` + PING / PONG exchange on a connected socket.
fn handshake(
    sh: &Shared,
    mut s: TcpStream,
    extra: &[u8],
    rcap: usize,
) -> Result<(TcpStream, ReadBuf), String> {
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(TICK)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(TICK)).map_err(|e| e.to_string())?;
    let mut rb = ReadBuf::new(rcap);
    loop {
        if let Some(nl) = memchr(b'\n', rb.data()) {
            if !rb.data().starts_with(b"INFO") {
                return Err(format!(
                    "expected INFO from server, got: {}",
                    String::from_utf8_lossy(&rb.data()[..nl])
                ));
            }
            rb.consume(nl + 1);
            break;
        }
        let w = rb.data().len() + 1;
        fill(&mut s, &mut rb, w, sh)?;
    }
    let mut w = Vec::with_capacity(CONNECT_LINE.len() + extra.len() + 6);
    w.extend_from_slice(CONNECT_LINE);
    w.extend_from_slice(extra);
    w.extend_from_slice(b"PING\r\n");
    write_all(&mut s, &w, sh)?;
    read_pongs(&mut s, &mut rb, 1, sh)?;
    Ok((s, rb))
}

fn payload_template(ms: usize) -> Vec<u8> {
    (0..ms).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Splits `total` over `n` clients like nats-bench does.
fn split(total: u64, n: usize) -> Vec<u64> {
    if n == 0 {
        return Vec::new();
    }
    let base = total / n as u64;
    let rem = total % n as u64;
    (0..n as u64)
        .map(|i| base + if i < rem { 1 } else { 0 })
        .collect()
}

// ---------------------------------------------------------------- publisher

struct ClientResult {
    msgs: u64,
    end: Option<Instant>,
}

fn publisher(sh: &Shared, idx: u32, count: u64) -> Result<ClientResult, String> {
    let a = &sh.args;
    let (mut s, mut rb) = open(sh, sh.addr, b"", 4096)?;
    sh.arrive();
    let _start = sh.wait_go()?;

    let ms = a.ms;
    let template = payload_template(ms);
    let stamp = ms >= STAMP;
    let mut size_str = Vec::new();
    push_u64(&mut size_str, ms as u64);
    let mut fixed_hdr = Vec::new();
    fixed_hdr.extend_from_slice(b"PUB ");
    fixed_hdr.extend_from_slice(a.subject.as_bytes());
    fixed_hdr.push(b' ');
    fixed_hdr.extend_from_slice(&size_str);
    fixed_hdr.extend_from_slice(b"\r\n");
    let multi = a.subjects > 1;
    let mut subj_prefix = Vec::new();
    subj_prefix.extend_from_slice(b"PUB ");
    subj_prefix.extend_from_slice(a.subject.as_bytes());
    subj_prefix.push(b'.');

    let batch = a.batch_bytes.max(1);
    let mut buf: Vec<u8> = Vec::with_capacity(batch + fixed_hdr.len() + 64 + ms);
    let idx_bytes = idx.to_le_bytes();
    let mut since_ping = 0usize;
    let mut outstanding = 0usize;
    let mut reported = 0u64;
    let mut subj_i = 0u64;

    for seq in 0..count {
        if multi {
            buf.extend_from_slice(&subj_prefix);
            push_u64(&mut buf, subj_i);
            subj_i += 1;
            if subj_i == a.subjects {
                subj_i = 0;
            }
            buf.push(b' ');
            buf.extend_from_slice(&size_str);
            buf.extend_from_slice(b"\r\n");
        } else {
            buf.extend_from_slice(&fixed_hdr);
        }
        if stamp {
            buf.extend_from_slice(&idx_bytes);
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&template[STAMP..]);
        } else {
            buf.extend_from_slice(&template);
        }
        buf.extend_from_slice(b"\r\n");
        if buf.len() >= batch {
            since_ping += buf.len();
            let ping = a.flow_bytes > 0 && since_ping >= a.flow_bytes;
            if ping {
                buf.extend_from_slice(b"PING\r\n");
            }
            write_all(&mut s, &buf, sh)?;
            buf.clear();
            sh.published
                .fetch_add(seq + 1 - reported, Ordering::Relaxed);
            reported = seq + 1;
            if ping {
                since_ping = 0;
                outstanding += 1;
                if outstanding > 1 {
                    read_pongs(&mut s, &mut rb, outstanding - 1, sh)?;
                    outstanding = 1;
                }
            }
            if sh.aborted() {
                return Err("aborted".into());
            }
        }
    }
    buf.extend_from_slice(b"PING\r\n");
    write_all(&mut s, &buf, sh)?;
    sh.published.fetch_add(count - reported, Ordering::Relaxed);
    read_pongs(&mut s, &mut rb, outstanding + 1, sh)?;
    let end = Instant::now();
    sh.pubs_done.fetch_add(1, Ordering::SeqCst);
    Ok(ClientResult {
        msgs: count,
        end: Some(end),
    })
}

// ---------------------------------------------------------------- subscriber

/// Per-subscriber delivery check: a bitset per publisher.
struct Verifier {
    enabled: bool,
    per_pub: Vec<u64>,
    bits: Vec<Vec<u64>>,
    next: Vec<u64>,
    received: u64,
    distinct: u64,
    dups: u64,
    reorders: u64,
    bad: u64,
}

impl Verifier {
    fn new(per_pub: &[u64], enabled: bool) -> Self {
        let bits = if enabled {
            per_pub
                .iter()
                .map(|&c| vec![0u64; c.div_ceil(64) as usize])
                .collect()
        } else {
            Vec::new()
        };
        Verifier {
            enabled,
            per_pub: per_pub.to_vec(),
            bits,
            next: vec![0; per_pub.len()],
            received: 0,
            distinct: 0,
            dups: 0,
            reorders: 0,
            bad: 0,
        }
    }
    #[inline]
    fn on_msg(&mut self, payload: &[u8]) {
        self.received += 1;
        if !self.enabled {
            return;
        }
        if payload.len() < STAMP {
            self.bad += 1;
            return;
        }
        let p = u32::from_le_bytes(payload[0..4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(payload[4..12].try_into().unwrap());
        if p >= self.per_pub.len() || seq >= self.per_pub[p] {
            self.bad += 1;
            return;
        }
        let w = &mut self.bits[p][(seq >> 6) as usize];
        let m = 1u64 << (seq & 63);
        if *w & m != 0 {
            self.dups += 1;
            return;
        }
        *w |= m;
        self.distinct += 1;
        if seq < self.next[p] {
            self.reorders += 1;
        } else {
            self.next[p] = seq + 1;
        }
    }
    /// Count that tells this subscriber it has everything.
    fn progress(&self) -> u64 {
        if self.enabled {
            self.distinct
        } else {
            self.received
        }
    }
}

struct SubResult {
    ver: Verifier,
    end: Option<Instant>,
    errors: Vec<String>,
}

fn subscriber(sh: &Shared, idx: usize, per_pub: &[u64]) -> Result<SubResult, String> {
    let a = &sh.args;
    let mut sub = Vec::new();
    sub.extend_from_slice(b"SUB ");
    sub.extend_from_slice(a.subject.as_bytes());
    if a.subjects > 1 {
        sub.extend_from_slice(b".>");
    }
    if let Some(q) = &a.queue {
        sub.push(b' ');
        sub.extend_from_slice(q.as_bytes());
    }
    sub.extend_from_slice(b" 1\r\n");
    sync_sub(sh, &mut sub);
    let (mut s, mut rb) = open(sh, sh.sub_addr, &sub, 1 << 20)?;
    await_sync(sh, &mut s, &mut rb)?;
    let queue = a.queue.is_some();
    let total: u64 = per_pub.iter().sum();
    let mut ver = Verifier::new(per_pub, a.ms >= STAMP);
    let mut errors = Vec::new();
    sh.arrive();
    let _start = sh.wait_go()?;
    let mut end = None;
    let mut pongs = 0usize;
    loop {
        let before = ver.received;
        let want;
        {
            let d = rb.data();
            let mut off = 0;
            loop {
                match parse_frame(&d[off..]) {
                    Parse::Frame(f) => {
                        match f.kind {
                            Kind::Msg => {
                                let p = off + f.payload_off;
                                ver.on_msg(&d[p..p + f.payload_len]);
                            }
                            Kind::Ping => pongs += 1,
                            Kind::Err if errors.len() < 8 => {
                                errors.push(err_text(&d[off..], &f));
                            }
                            _ => {}
                        }
                        off += f.total;
                    }
                    Parse::Need(w) => {
                        want = w;
                        break;
                    }
                    Parse::Bad(m) => return Err(format!("subscriber {idx}: {m}")),
                }
            }
            rb.consume(off);
        }
        if ver.received != before {
            end = Some(Instant::now());
            sh.delivered
                .fetch_add(ver.received - before, Ordering::Relaxed);
        }
        for _ in 0..pongs {
            write_all(&mut s, b"PONG\r\n", sh)?;
        }
        pongs = 0;
        if (!queue && ver.progress() >= total) || sh.stop.load(Ordering::Relaxed) {
            break;
        }
        if !fill(&mut s, &mut rb, want, sh)? && sh.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(SubResult { ver, end, errors })
}

// ---------------------------------------------------------------- route start line

/// Sid of the start-line probe subscription on subscriber/responder connections.
const SYNC_SID: &[u8] = b"2";

/// With --sub-url, adds the probe subscription after the client's own SUB.
/// A server handles one connection's SUBs in order and a route carries them in
/// order, so once the probe's interest has reached the publishers' server the
/// SUB before it has too.
fn sync_sub(sh: &Shared, sub: &mut Vec<u8>) {
    if let Some(subj) = &sh.sync_subject {
        sub.extend_from_slice(b"SUB ");
        sub.extend_from_slice(subj.as_bytes());
        sub.push(b' ');
        sub.extend_from_slice(SYNC_SID);
        sub.extend_from_slice(b"\r\n");
    }
}

/// With --sub-url: waits for one probe message, drops the probe subscription
/// and makes sure no probe message is still on its way to this connection.
/// Nothing else can arrive yet: publishers wait for the start line.
fn await_sync(sh: &Shared, s: &mut TcpStream, rb: &mut ReadBuf) -> Result<(), String> {
    if sh.sync_subject.is_none() {
        return Ok(());
    }
    let mut pongs = 0usize;
    'outer: loop {
        let want;
        loop {
            match parse_frame(rb.data()) {
                Parse::Frame(f) => {
                    let kind = f.kind;
                    if kind == Kind::Err {
                        return Err(err_text(rb.data(), &f));
                    }
                    rb.consume(f.total);
                    match kind {
                        Kind::Msg => break 'outer,
                        Kind::Ping => pongs += 1,
                        _ => {}
                    }
                }
                Parse::Need(w) => {
                    want = w;
                    break;
                }
                Parse::Bad(m) => return Err(m),
            }
        }
        for _ in 0..pongs {
            write_all(s, b"PONG\r\n", sh)?;
        }
        pongs = 0;
        fill(s, rb, want, sh)?;
    }
    let mut w = Vec::with_capacity(32);
    for _ in 0..pongs {
        w.extend_from_slice(b"PONG\r\n");
    }
    w.extend_from_slice(b"UNSUB ");
    w.extend_from_slice(SYNC_SID);
    w.extend_from_slice(b"\r\nPING\r\n");
    write_all(s, &w, sh)?;
    // Probe messages queued before the UNSUB come ahead of the PONG and are skipped.
    read_pongs(s, rb, 1, sh)?;
    sh.synced.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// With --sub-url: publishes probe messages on -s until every subscriber or
/// responder (connected to --sub-url) has received one, at most --sync-wait s.
fn route_barrier(sh: &Shared) -> Result<(), String> {
    let Some(subj) = &sh.sync_subject else {
        return Ok(());
    };
    let a = &sh.args;
    let (mut s, mut rb) = open(sh, sh.addr, b"", 4096)?;
    let mut probe = Vec::new();
    probe.extend_from_slice(b"PUB ");
    probe.extend_from_slice(subj.as_bytes());
    probe.extend_from_slice(b" 0\r\n\r\nPING\r\n");
    let begin = Instant::now();
    let limit = Duration::from_secs_f64(a.sync_wait.max(0.0));
    let want = a.ns + a.stuck;
    while sh.synced.load(Ordering::SeqCst) < want {
        if sh.aborted() {
            return Err("aborted".into());
        }
        if begin.elapsed() >= limit {
            return Err(format!(
                "no interest across servers: {} of {} {} on {} got a message published on {} within {}s (route not up?)",
                sh.synced.load(Ordering::SeqCst),
                want,
                if a.req { "responders" } else { "subscribers" },
                a.sub_url.as_deref().unwrap_or(""),
                a.server,
                a.sync_wait
            ));
        }
        write_all(&mut s, &probe, sh)?;
        read_pongs(&mut s, &mut rb, 1, sh)?;
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

// ---------------------------------------------------------------- stuck subscribers

/// A subscriber that stopped reading after its SUB was acknowledged.
struct StuckConn {
    /// Kept open, never read: the server's MSGs pile up in its small receive buffer,
    /// then in the server's send buffer, then in the server's own queue.
    _stream: TcpStream,
    /// `/proc/net/tcp` keys of our end and of the server's end of this connection.
    ours: TcpKey,
    theirs: TcpKey,
    /// Our end and the server's end were listed in `/proc/net/tcp` at the start (the
    /// server's end only in the same network namespace); what was not cannot be watched.
    ours_visible: bool,
    server_visible: bool,
    /// When the server was first seen to have closed or reset the connection.
    cut: Option<Instant>,
}

/// `local_address rem_address` of one `/proc/net/tcp{,6}` line, in its hex spelling.
#[derive(Clone, PartialEq, Eq, Debug)]
struct TcpKey {
    v6: bool,
    local: String,
    remote: String,
}

fn proc_addr(a: &SocketAddr) -> String {
    // The kernel prints each 32-bit word of the address in host byte order.
    let words: Vec<[u8; 4]> = match a {
        SocketAddr::V4(v) => vec![v.ip().octets()],
        SocketAddr::V6(v) => v
            .ip()
            .octets()
            .chunks(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect(),
    };
    let mut out = String::new();
    for w in words {
        out.push_str(&format!("{:08X}", u32::from_ne_bytes(w)));
    }
    out.push_str(&format!(":{:04X}", a.port()));
    out
}

/// What `/proc/net/tcp` says about one end of a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum TcpSeen {
    /// Not listed (closed and gone, or reset).
    Missing,
    /// ESTABLISHED and owned by a process.
    Open,
    /// Any other state, or orphaned (closed by its process, unsent data still queued).
    Closed,
}

/// Reads the state of each key from `/proc/net/tcp` and `/proc/net/tcp6`.
/// None when neither file can be read.
fn tcp_states(keys: &[&TcpKey]) -> Option<Vec<TcpSeen>> {
    let mut out = vec![TcpSeen::Missing; keys.len()];
    let mut any = false;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if !keys.iter().any(|k| k.v6 == v6) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        any = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().take(10).collect();
            if f.len() < 10 {
                continue;
            }
            for (i, k) in keys.iter().enumerate() {
                if k.v6 == v6 && f[1] == k.local && f[2] == k.remote {
                    // 01 = ESTABLISHED; inode 0 = no process holds it any more
                    out[i] = if f[3] == "01" && f[9] != "0" {
                        TcpSeen::Open
                    } else {
                        TcpSeen::Closed
                    };
                }
            }
        }
    }
    any.then_some(out)
}

/// Opens one never-reading subscriber: small receive buffer set before connecting,
/// CONNECT + SUB + PING, the PONG (and with --sub-url the start-line probe) read, then
/// nothing is read any more.
fn stuck_subscriber(sh: &Shared) -> Result<(), String> {
    use socket2::{Domain, Socket, Type};
    let a = &sh.args;
    let addr = sh.sub_addr;
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| format!("socket: {e}"))?;
    sock.set_recv_buffer_size(a.stuck_rcvbuf)
        .map_err(|e| format!("SO_RCVBUF: {e}"))?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let stream: TcpStream = sock.into();
    let mut sub = Vec::new();
    sub.extend_from_slice(b"SUB ");
    sub.extend_from_slice(a.subject.as_bytes());
    if a.subjects > 1 {
        sub.extend_from_slice(b".>");
    }
    sub.extend_from_slice(b" 1\r\n");
    sync_sub(sh, &mut sub);
    let (mut s, mut rb) = handshake(sh, stream, &sub, 4096)?;
    await_sync(sh, &mut s, &mut rb)?;
    let local = s.local_addr().map_err(|e| e.to_string())?;
    let peer = s.peer_addr().map_err(|e| e.to_string())?;
    let ours = TcpKey {
        v6: local.is_ipv6(),
        local: proc_addr(&local),
        remote: proc_addr(&peer),
    };
    let theirs = TcpKey {
        v6: peer.is_ipv6(),
        local: ours.remote.clone(),
        remote: ours.local.clone(),
    };
    let seen = tcp_states(&[&ours, &theirs]).unwrap_or_default();
    let visible = |i: usize| seen.get(i) == Some(&TcpSeen::Open);
    sh.stuck.lock().unwrap().push(StuckConn {
        _stream: s,
        ours,
        theirs,
        ours_visible: visible(0),
        server_visible: visible(1),
        cut: None,
    });
    sh.arrive();
    Ok(())
}

/// Watches the --stuck connections every 10 ms until the measured clients are done:
/// a connection is cut once the server's end is closed (orphaned, FIN queued behind the
/// unread data, or gone) or ours saw FIN/RST. Nothing is read from them.
/// Returns false when /proc/net/tcp cannot tell for some of them.
fn watch_stuck(sh: &Shared) -> bool {
    let usable = sh
        .stuck
        .lock()
        .unwrap()
        .iter()
        .all(|c| c.ours_visible || c.server_visible);
    loop {
        let stop = sh.stuck_stop.load(Ordering::SeqCst) || sh.aborted();
        let now = Instant::now();
        let mut g = sh.stuck.lock().unwrap();
        let open: Vec<usize> = (0..g.len())
            .filter(|&i| g[i].cut.is_none() && (g[i].ours_visible || g[i].server_visible))
            .collect();
        if open.is_empty() {
            return usable;
        }
        let mut keys = Vec::new();
        for &i in &open {
            keys.push(&g[i].ours);
            keys.push(&g[i].theirs);
        }
        let Some(states) = tcp_states(&keys) else {
            return false;
        };
        drop(keys);
        for (j, &i) in open.iter().enumerate() {
            let (o, t) = (states[2 * j], states[2 * j + 1]);
            let c = &mut g[i];
            if (c.ours_visible && o != TcpSeen::Open) || (c.server_visible && t != TcpSeen::Open) {
                c.cut = Some(now);
            }
        }
        drop(g);
        if stop {
            return usable;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- request / reply

fn responder(sh: &Shared) -> Result<ClientResult, String> {
    let a = &sh.args;
    let group = a
        .queue
        .clone()
        .unwrap_or_else(|| "ringnats-bench-responders".into());
    let mut sub = format!("SUB {} {} 1\r\n", a.subject, group).into_bytes();
    sync_sub(sh, &mut sub);
    let (mut s, mut rb) = open(sh, sh.sub_addr, &sub, 1 << 20)?;
    await_sync(sh, &mut s, &mut rb)?;
    sh.arrive();
    sh.wait_go()?;
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut served = 0u64;
    let mut end = None;
    loop {
        let want;
        {
            let d = rb.data();
            let mut off = 0;
            loop {
                match parse_frame(&d[off..]) {
                    Parse::Frame(f) => {
                        let line = &d[off..off + f.line_len];
                        match f.kind {
                            Kind::Msg => {
                                // MSG subject sid reply size
                                let mut toks = line.split(|&c| c == b' ').filter(|t| !t.is_empty());
                                let reply = toks.nth(3);
                                let has_size = toks.next().is_some();
                                if let (Some(reply), true) = (reply, has_size) {
                                    let p = off + f.payload_off;
                                    out.extend_from_slice(b"PUB ");
                                    out.extend_from_slice(reply);
                                    out.push(b' ');
                                    push_u64(&mut out, f.payload_len as u64);
                                    out.extend_from_slice(b"\r\n");
                                    out.extend_from_slice(&d[p..p + f.payload_len]);
                                    out.extend_from_slice(b"\r\n");
                                    served += 1;
                                }
                            }
                            Kind::Ping => out.extend_from_slice(b"PONG\r\n"),
                            Kind::Err => return Err(err_text(&d[off..], &f)),
                            _ => {}
                        }
                        off += f.total;
                    }
                    Parse::Need(w) => {
                        want = w;
                        break;
                    }
                    Parse::Bad(m) => return Err(format!("responder: {m}")),
                }
            }
            rb.consume(off);
        }
        if !out.is_empty() {
            write_all(&mut s, &out, sh)?;
            out.clear();
            end = Some(Instant::now());
        }
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        if !fill(&mut s, &mut rb, want, sh)? && sh.stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(ClientResult { msgs: served, end })
}

struct ReqResult {
    done: u64,
    end: Option<Instant>,
    hist: Histogram<u64>,
}

fn requester(sh: &Shared, idx: usize, count: u64) -> Result<ReqResult, String> {
    let a = &sh.args;
    let token: u64 = rand::random();
    let inbox = format!("_INBOX.{token:016x}{idx}.");
    let sub = format!("SUB {inbox}* 1\r\n");
    let (mut s, mut rb) = open(sh, sh.addr, sub.as_bytes(), 1 << 20)?;
    let window = a.inflight.max(1);
    let high = ((a.timeout + 1.0) * 1e9) as u64;
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, high.max(1_000_000), 3).map_err(|e| e.to_string())?;
    let template = payload_template(a.ms);
    let mut size_str = Vec::new();
    push_u64(&mut size_str, a.ms as u64);
    let mut slots: Vec<Option<(u64, Instant)>> = vec![None; window];
    let mut out: Vec<u8> = Vec::with_capacity(window * (a.ms + 128));
    sh.arrive();
    sh.wait_go()?;
    let (mut sent, mut done, mut outstanding) = (0u64, 0u64, 0usize);
    let mut end = None;
    while done < count {
        if outstanding < window && sent < count {
            let now = Instant::now();
            let burst_start = sent;
            while outstanding < window && sent < count {
                out.extend_from_slice(b"PUB ");
                out.extend_from_slice(a.subject.as_bytes());
                out.push(b' ');
                out.extend_from_slice(inbox.as_bytes());
                push_u64(&mut out, sent);
                out.push(b' ');
                out.extend_from_slice(&size_str);
                out.extend_from_slice(b"\r\n");
                if a.ms >= STAMP {
                    out.extend_from_slice(&(idx as u32).to_le_bytes());
                    out.extend_from_slice(&sent.to_le_bytes());
                    out.extend_from_slice(&template[STAMP..]);
                } else {
                    out.extend_from_slice(&template);
                }
                out.extend_from_slice(b"\r\n");
                slots[(sent % window as u64) as usize] = Some((sent, now));
                sent += 1;
                outstanding += 1;
            }
            write_all(&mut s, &out, sh)?;
            sh.published
                .fetch_add(sent - burst_start, Ordering::Relaxed);
            out.clear();
        }
        let want;
        let done_before = done;
        {
            let d = rb.data();
            let mut off = 0;
            loop {
                match parse_frame(&d[off..]) {
                    Parse::Frame(f) => {
                        match f.kind {
                            Kind::Msg => {
                                let line = &d[off..off + f.line_len];
                                let subj = line[4..].split(|&c| c == b' ').next().unwrap_or(b"");
                                let seq =
                                    memrchr(b'.', subj).and_then(|i| parse_u64(&subj[i + 1..]));
                                let Some(seq) = seq else {
                                    return Err("reply on unexpected subject".into());
                                };
                                if f.payload_len != a.ms {
                                    return Err(format!(
                                        "reply payload is {} bytes, expected {}",
                                        f.payload_len, a.ms
                                    ));
                                }
                                let slot = &mut slots[(seq % window as u64) as usize];
                                match *slot {
                                    Some((sq, t0)) if sq == seq => {
                                        let ns = t0.elapsed().as_nanos() as u64;
                                        hist.saturating_record(ns.max(1));
                                        *slot = None;
                                        outstanding -= 1;
                                        done += 1;
                                    }
                                    _ => {
                                        sh.fail(
                                            Failure::Verify,
                                            format!("requester {idx}: duplicate or unexpected reply {seq}"),
                                        );
                                        return Err("aborted".into());
                                    }
                                }
                            }
                            Kind::Ping => out.extend_from_slice(b"PONG\r\n"),
                            Kind::Err => return Err(err_text(&d[off..], &f)),
                            _ => {}
                        }
                        off += f.total;
                    }
                    Parse::Need(w) => {
                        want = w;
                        break;
                    }
                    Parse::Bad(m) => return Err(format!("requester {idx}: {m}")),
                }
            }
            rb.consume(off);
        }
        if done != done_before {
            end = Some(Instant::now());
            sh.delivered
                .fetch_add(done - done_before, Ordering::Relaxed);
        }
        if !out.is_empty() {
            write_all(&mut s, &out, sh)?;
            out.clear();
        }
        if done >= count {
            break;
        }
        if outstanding == window || sent == count {
            fill(&mut s, &mut rb, want, sh)?;
        }
    }
    sh.pubs_done.fetch_add(1, Ordering::SeqCst);
    Ok(ReqResult { done, end, hist })
}

// ---------------------------------------------------------------- idle holder

fn hold_idle(sh: &Shared, n: usize) -> Result<(), String> {
    let pid = std::process::id();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let sub = format!("SUB idle.{pid}.{i} 1\r\n");
        let (s, _rb) =
            open(sh, sh.addr, sub.as_bytes(), 512).map_err(|e| format!("idle conn {i}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        conns.push(s);
    }
    println!("ready {n}");
    let _ = io::stdout().flush();
    let mut buf = [0u8; 512];
    while Instant::now() < sh.deadline {
        thread::sleep(Duration::from_millis(500));
        // Answer the server's keep-alive PINGs so the connections stay open.
        for s in conns.iter_mut() {
            if let Ok(k) = s.read(&mut buf) {
                if k > 0 && memchr::memmem::find(&buf[..k], b"PING").is_some() {
                    let _ = s.write(b"PONG\r\n");
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- reporting

#[derive(Serialize)]
struct Latency {
    count: u64,
    min_us: f64,
    mean_us: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
}

#[derive(Serialize)]
struct Summary {
    ok: bool,
    error: Option<String>,
    failure: Option<&'static str>,
    mode: &'static str,
    server: String,
    sub_server: Option<String>,
    subject: String,
    np: usize,
    ns: usize,
    msgs: u64,
    size: usize,
    subjects: u64,
    queue: Option<String>,
    verified: bool,
    published: u64,
    delivered: u64,
    expected_delivered: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    duration_s: f64,
    pub_duration_s: f64,
    sub_duration_s: f64,
    pub_rate: f64,
    sub_rate: f64,
    pub_mb_s: f64,
    sub_mb_s: f64,
    latency: Option<Latency>,
    /// --stuck connections, how many of them the server cut during the run and when
    /// the last of those was seen cut (seconds after the start line).
    stuck: usize,
    stuck_cut: usize,
    stuck_cut_s: Option<f64>,
    /// "proc" when /proc/net/tcp showed the stuck connections, else "unavailable".
    stuck_watch: Option<&'static str>,
}

fn human(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn progress_loop(sh: &Shared, total_threads: usize, expected_delivered: u64) {
    let a = &sh.args;
    let tty = !a.no_progress && io::stderr().is_terminal();
    let begin = Instant::now();
    let mut last_print = begin;
    let mut last_delivered = 0u64;
    let mut last_change = Instant::now();
    let mut printed = false;
    loop {
        thread::sleep(Duration::from_millis(20));
        if sh.finished.load(Ordering::SeqCst) >= total_threads {
            break;
        }
        let now = Instant::now();
        if now >= sh.deadline && !sh.aborted() {
            sh.fail(Failure::Timeout, format!("timed out after {}s", a.timeout));
        }
        let delivered = sh.delivered.load(Ordering::Relaxed);
        if delivered != last_delivered {
            last_delivered = delivered;
            last_change = now;
        }
        let pubs_done = sh.pubs_done.load(Ordering::SeqCst);
        if a.req {
            if pubs_done >= a.np {
                sh.stop.store(true, Ordering::SeqCst);
            }
        } else if a.ns > 0 && pubs_done >= a.np {
            if a.queue.is_some() && delivered >= expected_delivered {
                sh.stop.store(true, Ordering::SeqCst);
            }
            let started = sh.gate.go.load(Ordering::SeqCst);
            if started && now.duration_since(last_change).as_secs_f64() > a.drain_wait {
                sh.stop.store(true, Ordering::SeqCst);
            }
        }
        if tty && now.duration_since(last_print) >= Duration::from_millis(500) {
            last_print = now;
            let t = sh
                .gate
                .start
                .get()
                .map(|s| now.duration_since(*s).as_secs_f64())
                .unwrap_or(0.0);
            let p = sh.published.load(Ordering::Relaxed);
            let r = if t > 0.0 { p as f64 / t } else { 0.0 };
            let dr = if t > 0.0 { delivered as f64 / t } else { 0.0 };
            eprint!(
                "\r[{t:6.1}s] pub {} ({} msgs/s)  sub {} ({} msgs/s)    ",
                human(p as f64),
                human(r),
                human(delivered as f64),
                human(dr)
            );
            printed = true;
        }
    }
    if printed {
        eprint!("\r{:100}\r", "");
    }
}

fn write_csv(path: &PathBuf, a: &Args, pubs: &[(u64, f64)], subs: &[(u64, f64)]) -> io::Result<()> {
    let run: u64 = rand::random();
    let mut f = std::fs::File::create(path)?;
    writeln!(
        f,
        "#RunID,ClientID,MsgCount,MsgBytes,MsgsPerSec,BytesPerSec,DurationSecs"
    )?;
    for (pre, rows) in [("P", pubs), ("S", subs)] {
        for (i, &(msgs, dur)) in rows.iter().enumerate() {
            let rate = if dur > 0.0 { msgs as f64 / dur } else { 0.0 };
            writeln!(
                f,
                "{run:016x},{pre}{i},{msgs},{},{},{:.6},{dur:.6}",
                msgs * a.ms as u64,
                rate as u64,
                rate * a.ms as f64
            )?;
        }
    }
    Ok(())
}

fn finish(sh: &Shared, mut sum: Summary) -> ! {
    let reason = sh.reason.lock().unwrap().clone();
    let mut code = 0;
    if let Some((kind, mut msg)) = reason {
        if kind == Failure::Timeout {
            msg.push_str(&format!(
                " (published {} of {}, delivered {} of {})",
                sh.published.load(Ordering::SeqCst),
                sh.args.msgs,
                sh.delivered.load(Ordering::SeqCst),
                sum.expected_delivered
            ));
        }
        sum.ok = false;
        sum.error = Some(msg);
        sum.failure = Some(kind.name());
        code = kind.code();
    }
    let a = &sh.args;
    if a.json {
        println!("{}", serde_json::to_string(&sum).unwrap());
    } else {
        let mut line = format!(
            "ringnats-bench: np={} ns={} n={} ms={}{}{}: ",
            a.np,
            a.ns,
            a.msgs,
            a.ms,
            if a.subjects > 1 {
                format!(" subjects={}", a.subjects)
            } else {
                String::new()
            },
            a.queue
                .as_ref()
                .map(|q| format!(" queue={q}"))
                .unwrap_or_default()
        );
        if let Some(l) = &sum.latency {
            line.push_str(&format!(
                "req {} req/s, latency us p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1}, {:.3} s",
                human(sum.sub_rate),
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                sum.duration_s
            ));
        } else {
            line.push_str(&format!(
                "pub {} msgs/s ({:.2} MB/s)",
                human(sum.pub_rate),
                sum.pub_mb_s
            ));
            if a.ns > 0 {
                line.push_str(&format!(
                    ", sub {} msgs/s delivered ({:.2} MB/s)",
                    human(sum.sub_rate),
                    sum.sub_mb_s
                ));
            }
            line.push_str(&format!(", {:.3} s", sum.duration_s));
            if sum.stuck > 0 {
                line.push_str(&match (sum.stuck_watch, sum.stuck_cut_s) {
                    (Some("proc"), Some(t)) => format!(
                        ", stuck {}: {} cut by the server (last at {t:.3} s)",
                        sum.stuck, sum.stuck_cut
                    ),
                    (Some("proc"), None) => {
                        format!(", stuck {}: none cut during the run", sum.stuck)
                    }
                    _ => format!(", stuck {}: cut not observable", sum.stuck),
                });
            }
        }
        if sum.ok {
            line.push_str(if sum.latency.is_some() {
                ", OK (every reply matched)"
            } else if a.ns == 0 {
                ", OK"
            } else if sum.verified {
                ", OK (count, loss, duplicates and order verified)"
            } else {
                ", OK (counted only: payload < 12 bytes)"
            });
        }
        println!("{line}");
    }
    if let Some(e) = &sum.error {
        eprintln!(
            "ringnats-bench: FAILED ({}): {e}",
            sum.failure.unwrap_or("?")
        );
    }
    let _ = io::stdout().flush();
    std::process::exit(code);
}

fn secs(t0: Instant, end: Option<Instant>) -> f64 {
    end.map(|e| e.duration_since(t0).as_secs_f64())
        .unwrap_or(0.0)
}

fn main() {
    let args = Args::parse_from(normalize_argv(std::env::args().collect()));
    let usage = |m: &str| -> ! {
        eprintln!("ringnats-bench: {m}");
        std::process::exit(2);
    };
    if args.subjects == 0 {
        usage("--subjects must be >= 1");
    }
    if args.hold_idle.is_none() && args.np == 0 {
        usage("-np must be >= 1");
    }
    if args.req && args.ns == 0 {
        usage("--req needs at least one responder (-ns >= 1)");
    }
    if args.stuck > 0 && (args.req || args.queue.is_some()) {
        usage("--stuck goes with plain publish/subscribe (no --req, no --queue)");
    }
    if args.msgs < args.np as u64 && args.hold_idle.is_none() {
        usage("-n must be >= -np");
    }
    let resolve_or_exit = |url: &str| match resolve(url) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringnats-bench: {e}");
            std::process::exit(4);
        }
    };
    let addr = resolve_or_exit(&args.server);
    let sub_addr = args.sub_url.as_deref().map_or(addr, resolve_or_exit);
    let sync_subject = args
        .sub_url
        .as_ref()
        .filter(|_| args.ns + args.stuck > 0 && args.hold_idle.is_none())
        .map(|_| format!("_RNBENCH.sync.{:016x}", rand::random::<u64>()));
    let deadline = Instant::now() + Duration::from_secs_f64(args.timeout.max(0.1));
    let sh = Arc::new(Shared {
        args: args.clone(),
        addr,
        sub_addr,
        sync_subject,
        synced: AtomicUsize::new(0),
        deadline,
        gate: Gate {
            ready: Mutex::new(0),
            cv: Condvar::new(),
            go: AtomicBool::new(false),
            start: OnceLock::new(),
        },
        abort: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        reason: Mutex::new(None),
        published: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        pubs_done: AtomicUsize::new(0),
        finished: AtomicUsize::new(0),
        stuck: Mutex::new(Vec::new()),
        stuck_stop: AtomicBool::new(false),
    });

    if let Some(n) = args.hold_idle {
        if let Err(e) = hold_idle(&sh, n) {
            eprintln!("ringnats-bench: {e}");
            std::process::exit(4);
        }
        return;
    }

    let per_pub = split(args.msgs, args.np);
    let queue = args.queue.is_some();
    let expected_delivered = if args.req || queue {
        args.msgs
    } else {
        args.msgs * args.ns as u64
    };

    // Wraps a worker so that every exit path is reported, and counted in `finished`
    // (which ends the run once all measured clients are done) when `counted`.
    fn spawn_as<T: Send + 'static>(
        sh: &Arc<Shared>,
        name: String,
        counted: bool,
        f: impl FnOnce(&Shared) -> Result<T, String> + Send + 'static,
    ) -> thread::JoinHandle<Option<T>> {
        let sh = Arc::clone(sh);
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let r = f(&sh);
                if let Err(e) = &r {
                    if e != "aborted" {
                        sh.fail(Failure::Io, format!("{name}: {e}"));
                    }
                }
                if counted {
                    sh.finished.fetch_add(1, Ordering::SeqCst);
                }
                r.ok()
            })
            .expect("spawn thread")
    }
    fn spawn<T: Send + 'static>(
        sh: &Arc<Shared>,
        name: String,
        f: impl FnOnce(&Shared) -> Result<T, String> + Send + 'static,
    ) -> thread::JoinHandle<Option<T>> {
        spawn_as(sh, name, true, f)
    }

    let total_threads = args.np + args.ns;
    let mut sub_handles = Vec::new();
    let mut resp_handles = Vec::new();
    let mut pub_handles = Vec::new();
    let mut req_handles = Vec::new();
    for i in 0..args.ns {
        if args.req {
            resp_handles.push(spawn(&sh, format!("responder {i}"), responder));
        } else {
            let pp = per_pub.clone();
            sub_handles.push(spawn(&sh, format!("subscriber {i}"), move |sh| {
                subscriber(sh, i, &pp)
            }));
        }
    }
    // Never-reading subscribers: set up before the start line, then only watched.
    let stuck_setup: Vec<_> = (0..args.stuck)
        .map(|i| {
            spawn_as(
                &sh,
                format!("stuck subscriber {i}"),
                false,
                stuck_subscriber,
            )
        })
        .collect();
    for (i, &count) in per_pub.iter().enumerate() {
        if args.req {
            req_handles.push(spawn(&sh, format!("requester {i}"), move |sh| {
                requester(sh, i, count)
            }));
        } else {
            pub_handles.push(spawn(&sh, format!("publisher {i}"), move |sh| {
                publisher(sh, i as u32, count)
            }));
        }
    }
    if let Err(e) = route_barrier(&sh) {
        if e != "aborted" {
            sh.fail(Failure::Io, e);
        }
    }
    let t0 = sh.release(total_threads + args.stuck);
    for h in stuck_setup {
        let _ = h.join();
    }
    let stuck_watch = (args.stuck > 0).then(|| {
        let sh = Arc::clone(&sh);
        thread::Builder::new()
            .name("stuck watcher".into())
            .spawn(move || watch_stuck(&sh))
            .expect("spawn thread")
    });
    progress_loop(&sh, total_threads, expected_delivered);
    let t0 = t0.unwrap_or_else(Instant::now);

    let pubs: Vec<Option<ClientResult>> = pub_handles
        .into_iter()
        .map(|h| h.join().ok().flatten())
        .collect();
    let subs: Vec<Option<SubResult>> = sub_handles
        .into_iter()
        .map(|h| h.join().ok().flatten())
        .collect();
    let resps: Vec<Option<ClientResult>> = resp_handles
        .into_iter()
        .map(|h| h.join().ok().flatten())
        .collect();
    let reqs: Vec<Option<ReqResult>> = req_handles
        .into_iter()
        .map(|h| h.join().ok().flatten())
        .collect();
    // The measured clients are done: whatever happens to the stuck ones from now on
    // does not count.
    sh.stuck_stop.store(true, Ordering::SeqCst);
    let stuck_watch = stuck_watch.map(|h| h.join().unwrap_or(false));
    let (stuck_cut, stuck_cut_s) = {
        let g = sh.stuck.lock().unwrap();
        let cuts: Vec<f64> = g
            .iter()
            .filter_map(|c| c.cut)
            .map(|c| secs(t0, Some(c)))
            .collect();
        let last = cuts
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        (cuts.len(), last)
    };

    let published = sh.published.load(Ordering::SeqCst);
    let mut pub_end = 0f64;
    let mut sub_end = 0f64;
    let mut pub_rows = Vec::new();
    let mut sub_rows = Vec::new();
    let mut delivered = 0u64;
    let (mut lost, mut dups, mut reorders, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let verified = args.ms >= STAMP;
    let mut latency = None;

    if args.req {
        let mut hist: Option<Histogram<u64>> = None;
        for r in reqs.iter() {
            if let Some(r) = r {
                let d = secs(t0, r.end);
                pub_end = pub_end.max(d);
                pub_rows.push((r.done, d));
                delivered += r.done;
                match &mut hist {
                    Some(h) => {
                        let _ = h.add(&r.hist);
                    }
                    None => hist = Some(r.hist.clone()),
                }
            } else {
                pub_rows.push((0, 0.0));
            }
        }
        for r in resps.iter().flatten() {
            sub_rows.push((r.msgs, secs(t0, r.end)));
        }
        sub_end = pub_end;
        if delivered < args.msgs {
            lost = args.msgs - delivered;
        }
        if let Some(h) = hist.filter(|h| !h.is_empty()) {
            let us = |v: u64| v as f64 / 1000.0;
            latency = Some(Latency {
                count: h.len(),
                min_us: us(h.min()),
                mean_us: h.mean() / 1000.0,
                p50_us: us(h.value_at_quantile(0.50)),
                p90_us: us(h.value_at_quantile(0.90)),
                p99_us: us(h.value_at_quantile(0.99)),
                p999_us: us(h.value_at_quantile(0.999)),
                max_us: us(h.max()),
            });
        }
    } else {
        for p in pubs.iter() {
            match p {
                Some(p) => {
                    let d = secs(t0, p.end);
                    pub_end = pub_end.max(d);
                    pub_rows.push((p.msgs, d));
                }
                None => pub_rows.push((0, 0.0)),
            }
        }
        let mut merged: Option<Vec<Vec<u64>>> = None;
        let mut sub_errors = Vec::new();
        let mut distinct_total = 0u64;
        for s in subs.iter().flatten() {
            let v = &s.ver;
            let d = secs(t0, s.end);
            sub_end = sub_end.max(d);
            sub_rows.push((v.received, d));
            delivered += v.received;
            dups += v.dups;
            reorders += v.reorders;
            bad += v.bad;
            sub_errors.extend(s.errors.iter().cloned());
            if queue {
                if verified {
                    match &mut merged {
                        None => merged = Some(v.bits.clone()),
                        Some(m) => {
                            for (mp, vp) in m.iter_mut().zip(v.bits.iter()) {
                                for (mw, vw) in mp.iter_mut().zip(vp.iter()) {
                                    dups += (*mw & *vw).count_ones() as u64;
                                    *mw |= *vw;
                                }
                            }
                        }
                    }
                } else {
                    distinct_total += v.received;
                }
            } else {
                let total: u64 = per_pub.iter().sum();
                lost += total.saturating_sub(v.progress());
            }
        }
        if !subs.is_empty() && subs.iter().any(|s| s.is_none()) {
            // A subscriber failed: its share is lost.
            let missing = subs.iter().filter(|s| s.is_none()).count() as u64;
            if !queue {
                lost += missing * args.msgs;
            }
        }
        if queue && args.ns > 0 {
            if let Some(m) = &merged {
                distinct_total = m
                    .iter()
                    .flat_map(|p| p.iter())
                    .map(|w| w.count_ones() as u64)
                    .sum();
            }
            lost = args.msgs.saturating_sub(distinct_total);
        }
        if !sub_errors.is_empty() && sh.reason.lock().unwrap().is_none() {
            sh.fail(Failure::Io, sub_errors.join("; "));
        }
    }

    if args.ns > 0 && (lost > 0 || dups > 0 || reorders > 0 || bad > 0) {
        let mut parts = Vec::new();
        if lost > 0 {
            parts.push(format!("{lost} lost"));
        }
        if dups > 0 {
            parts.push(format!("{dups} duplicated"));
        }
        if reorders > 0 {
            parts.push(format!("{reorders} out of order"));
        }
        if bad > 0 {
            parts.push(format!("{bad} with a bad payload stamp"));
        }
        let msg = format!(
            "{} (delivered {delivered} of {expected_delivered} expected)",
            parts.join(", ")
        );
        let mut g = sh.reason.lock().unwrap();
        match &mut *g {
            None => *g = Some((Failure::Verify, msg)),
            Some((_, m)) => m.push_str(&format!("; {msg}")),
        }
    }

    if let Some(path) = &args.csv {
        if let Err(e) = write_csv(path, &args, &pub_rows, &sub_rows) {
            eprintln!("ringnats-bench: cannot write {}: {e}", path.display());
        }
    }

    let duration = pub_end.max(sub_end);
    let rate = |n: u64, d: f64| if d > 0.0 { n as f64 / d } else { 0.0 };
    let ms = args.ms as f64;
    let summary = Summary {
        ok: true,
        error: None,
        failure: None,
        mode: if args.req { "req" } else { "pubsub" },
        server: args.server.clone(),
        sub_server: args.sub_url.clone(),
        subject: args.subject.clone(),
        np: args.np,
        ns: args.ns,
        msgs: args.msgs,
        size: args.ms,
        subjects: args.subjects,
        queue: args.queue.clone(),
        verified: verified && !args.req,
        published,
        delivered,
        expected_delivered: if args.ns > 0 { expected_delivered } else { 0 },
        lost,
        duplicates: dups,
        reordered: reorders,
        duration_s: duration,
        pub_duration_s: pub_end,
        sub_duration_s: sub_end,
        pub_rate: rate(published, pub_end),
        sub_rate: rate(delivered, sub_end),
        pub_mb_s: rate(published, pub_end) * ms / 1e6,
        sub_mb_s: rate(delivered, sub_end) * ms / 1e6,
        latency,
        stuck: args.stuck,
        stuck_cut,
        stuck_cut_s,
        stuck_watch: stuck_watch.map(|ok| if ok { "proc" } else { "unavailable" }),
    };
    finish(&sh, summary);
}
