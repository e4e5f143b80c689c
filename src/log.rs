//! Log lines in gnatsd's format: `[pid] YYYY/MM/DD HH:MM:SS.micro [INF] message`.
//!
//! One process-wide logger. A thread that logs (a reactor included) never writes: it hands
//! the message to a bounded queue ([`QUEUE_LINES`] lines, [`QUEUE_BYTES`] bytes) and goes
//! on; when the queue is full the line is dropped and counted ([`dropped`]). One writer
//! thread formats the lines and writes them to stderr, a file (`-l`, reopened on SIGUSR1)
//! or syslog (`-s` local, `-r` remote: RFC 3164 datagrams or TCP lines, written by this
//! module). Debug and trace are checked with a relaxed atomic load so disabled levels cost
//! nothing on the data path.

use std::fmt::Arguments;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use crate::options::Options;

/// Lines the queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 8192;
/// Bytes of message text the queue holds before new lines are dropped (long trace lines).
pub const QUEUE_BYTES: usize = 8 << 20;
/// How long [`flush`] waits for the writer to catch up.
const FLUSH_WAIT: Duration = Duration::from_secs(2);
/// Lines for stderr or a file are written in batches of up to this many bytes (and whenever
/// the queue is empty), one syscall per batch rather than per line.
const WRITE_BATCH: usize = 64 * 1024;
/// A TCP syslog server that does not take a line within this is given up on (the line is lost).
const SYSLOG_TCP_TIMEOUT: Duration = Duration::from_secs(1);

static DEBUG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static LOGGER: OnceLock<Logger> = OnceLock::new();

struct Logger {
    tx: SyncSender<Msg>,
    /// Bytes of message text waiting in the queue.
    queued_bytes: AtomicUsize,
    dropped: AtomicU64,
}

enum Msg {
    Line {
        level: Level,
        at: SystemTime,
        text: String,
    },
    /// SIGUSR1: reopen the log file.
    Reopen,
    /// A new sink and format (start-up, reload).
    Replace(Box<Output>),
    /// Answer once everything queued before has been written.
    Flush(SyncSender<()>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Debug,
    Error,
    Fatal,
    Trace,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Info => "INF",
            Level::Debug => "DBG",
            Level::Error => "ERR",
            Level::Fatal => "FTL",
            Level::Trace => "TRC",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Level::Info => "32",
            Level::Debug => "36",
            Level::Error | Level::Fatal => "31",
            Level::Trace => "33",
        }
    }
    /// Syslog severity (RFC 5424 numbers), as gnatsd's syslog logger maps its levels.
    fn severity(self) -> u8 {
        match self {
            Level::Fatal => 2, // crit
            Level::Error => 3, // err
            Level::Trace => 5, // notice
            Level::Info => 6,  // info
            Level::Debug => 7, // debug
        }
    }
}

/// syslog facility DAEMON (3), shifted into the PRI value.
const FACILITY_DAEMON: u8 = 3 << 3;

/// What the logger is configured with: the logging part of [`Options`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    pub file: Option<PathBuf>,
    /// Local syslog (`/dev/log`).
    pub syslog: bool,
    /// `udp://host:port`, `tcp://host:port` or `unix:///path`.
    pub remote_syslog: Option<String>,
}

impl LogSettings {
    pub fn from_options(o: &Options) -> LogSettings {
        LogSettings {
            debug: o.debug,
            trace: o.trace,
            logtime: o.logtime,
            file: o.log_file.clone(),
            syslog: o.syslog,
            remote_syslog: o.remote_syslog.clone(),
        }
    }
}

/// Where lines go, and how they are formatted there. Owned by the writer thread.
struct Output {
    sink: Sink,
    /// Formatted lines not yet written (stderr and file sinks).
    buf: Vec<u8>,
    pid: u32,
    logtime: bool,
    colors: bool,
}

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
    Syslog(Syslog),
}

/// A syslog connection and the header fields of each message.
struct Syslog {
    conn: SyslogConn,
    tag: String,
    /// Local syslog (`/dev/log`) takes the short header `<PRI>Mmm dd hh:mm:ss tag[pid]: `;
    /// a remote one also wants an RFC 3339 time and the host name, as Go's log/syslog writes.
    local: bool,
    hostname: String,
}

enum SyslogConn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
    Tcp {
        addr: String,
        stream: Option<TcpStream>,
    },
}

/// Builds the sink `s` describes (opening the file or the syslog socket). gnatsd's order:
/// a log file wins over remote syslog, which wins over local syslog.
fn open_output(s: &LogSettings) -> Result<Output, String> {
    let sink = if let Some(path) = &s.file {
        Sink::File {
            file: open_file(path)?,
            path: path.clone(),
        }
    } else if let Some(url) = &s.remote_syslog {
        Sink::Syslog(remote_syslog(url)?)
    } else if s.syslog {
        Sink::Syslog(local_syslog()?)
    } else {
        Sink::Stderr
    };
    let colors = matches!(sink, Sink::Stderr) && std::io::stderr().is_terminal();
    Ok(Output {
        sink,
        buf: Vec::with_capacity(WRITE_BATCH),
        pid: std::process::id(),
        logtime: s.logtime,
        colors,
    })
}

fn open_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("error opening log file {}: {e}", path.display()))
}

/// The executable's name, the syslog tag gnatsd uses.
fn exe_name() -> String {
    std::env::args()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ringnats".to_owned())
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "localhost".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn syslog_error(e: impl std::fmt::Display) -> String {
    format!("error connecting to syslog: \"{e}\"")
}

/// The local syslog daemon's datagram socket, where Go's log/syslog looks for it.
fn local_syslog() -> Result<Syslog, String> {
    let mut last = None;
    for path in ["/dev/log", "/var/run/syslog", "/var/run/log"] {
        let sock = UnixDatagram::unbound().map_err(syslog_error)?;
        match sock.connect(path) {
            Ok(()) => {
                return Ok(Syslog {
                    conn: SyslogConn::Unix(sock),
                    tag: exe_name(),
                    local: true,
                    hostname: String::new(),
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(syslog_error(last.map_or_else(
        || "Unix syslog delivery error".to_owned(),
        |e| e.to_string(),
    )))
}

/// `udp://host:port`, `tcp://host:port` or `unix:///path` (gnatsd's `getNetworkAndAddr`).
fn remote_syslog(url: &str) -> Result<Syslog, String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let conn = match scheme {
        "udp" => {
            let addr = host_port(rest)?;
            let target = addr
                .to_socket_addrs()
                .map_err(syslog_error)?
                .next()
                .ok_or_else(|| syslog_error(format!("cannot resolve {addr}")))?;
            let bind = if target.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let sock = UdpSocket::bind(bind).map_err(syslog_error)?;
            sock.connect(target).map_err(syslog_error)?;
            SyslogConn::Udp(sock)
        }
        "tcp" => {
            let addr = host_port(rest)?.to_owned();
            let stream = tcp_connect(&addr).map_err(syslog_error)?;
            SyslogConn::Tcp {
                addr,
                stream: Some(stream),
            }
        }
        "unix" => {
            let sock = UnixDatagram::unbound().map_err(syslog_error)?;
            sock.connect(rest).map_err(syslog_error)?;
            SyslogConn::Unix(sock)
        }
        other => return Err(format!("error invalid network type: \"{other}\"")),
    };
    Ok(Syslog {
        conn,
        tag: exe_name(),
        local: false,
        hostname: hostname(),
    })
}

/// The `host:port` of a URL's remainder (anything after a `/` is ignored, as a URL path).
fn host_port(rest: &str) -> Result<&str, String> {
    let hp = rest.split('/').next().unwrap_or("");
    if hp.is_empty() {
        return Err(syslog_error("missing address"));
    }
    Ok(hp)
}

fn tcp_connect(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::other(format!("cannot resolve {addr}"));
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, SYSLOG_TCP_TIMEOUT) {
            Ok(s) => {
                s.set_write_timeout(Some(SYSLOG_TCP_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Installs the logger and starts its writer thread. Returns an error naming the file (or the
/// syslog address) if it cannot be opened. A second call reconfigures instead.
pub fn init(settings: &LogSettings) -> Result<(), String> {
    let output = open_output(settings)?;
    if LOGGER.get().is_none() {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer(rx))
            .map_err(|e| format!("cannot start the log writer: {e}"))?;
        let _ = LOGGER.set(Logger {
            tx,
            queued_bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
    }
    install(settings, output);
    Ok(())
}

/// Rebuilds the sink and the levels at run time (config reload). On error nothing changes.
pub fn reconfigure(settings: &LogSettings) -> Result<(), String> {
    if LOGGER.get().is_none() {
        return init(settings);
    }
    let output = open_output(settings)?;
    install(settings, output);
    Ok(())
}

fn install(settings: &LogSettings, output: Output) {
    DEBUG.store(settings.debug, Ordering::Relaxed);
    TRACE.store(settings.trace, Ordering::Relaxed);
    // A control message, so it must not be dropped: wait (bounded) for room.
    send_control(Msg::Replace(Box::new(output)));
}

/// SIGUSR1: the writer reopens the log file and says so in it (or says it has none).
pub fn reopen() {
    send_control(Msg::Reopen);
}

/// Lines dropped so far because the queue was full.
pub fn dropped() -> u64 {
    LOGGER
        .get()
        .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
}

/// Waits (at most a couple of seconds) until every line queued so far has been written.
/// Called before the process exits, so start-up errors and FTL lines are not lost.
pub fn flush() {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    let deadline = Instant::now() + FLUSH_WAIT;
    let (ack_tx, ack_rx) = mpsc::sync_channel(1);
    if !send_until(logger, Msg::Flush(ack_tx), deadline) {
        return;
    }
    let _ = ack_rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

fn send_control(msg: Msg) {
    if let Some(logger) = LOGGER.get() {
        send_until(logger, msg, Instant::now() + FLUSH_WAIT);
    }
}

/// Queues a control message, retrying while the queue is full until `deadline`. Only
/// called from the main (signal) thread, never from a reactor.
fn send_until(logger: &Logger, mut msg: Msg, deadline: Instant) -> bool {
    loop {
        match logger.tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(m)) => {
                if Instant::now() >= deadline {
                    return false;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[inline]
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

#[inline]
pub fn trace_enabled() -> bool {
    TRACE.load(Ordering::Relaxed)
}

/// Queues one line; never blocks (a full queue drops the line and counts it). A fatal line
/// is flushed before this returns, since the process is about to exit.
pub fn write(level: Level, args: Arguments<'_>) {
    let Some(logger) = LOGGER.get() else {
        // Not initialised (library use, tests): stay quiet except for errors.
        if matches!(level, Level::Error | Level::Fatal) {
            eprintln!("[{}] {}", level.label(), args);
        }
        return;
    };
    let text = args.to_string();
    let len = text.len();
    if logger.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > QUEUE_BYTES {
        logger.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        logger.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let msg = Msg::Line {
        level,
        at: SystemTime::now(),
        text,
    };
    if logger.tx.try_send(msg).is_err() {
        logger.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        logger.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if level == Level::Fatal {
        flush();
    }
}

/// The writer thread: formats and writes every queued line, in order.
fn writer(rx: Receiver<Msg>) {
    let mut out: Option<Output> = None;
    let mut reported_drops = 0u64;
    loop {
        let msg = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                report_drops(&mut out, &mut reported_drops);
                if let Some(o) = &mut out {
                    o.flush();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match msg {
            Msg::Line { level, at, text } => {
                if let Some(l) = LOGGER.get() {
                    l.queued_bytes.fetch_sub(text.len(), Ordering::Relaxed);
                }
                emit(&mut out, level, at, &text);
            }
            Msg::Reopen => reopen_file(&mut out),
            Msg::Replace(o) => {
                if let Some(old) = &mut out {
                    old.flush();
                }
                out = Some(*o);
            }
            Msg::Flush(ack) => {
                report_drops(&mut out, &mut reported_drops);
                if let Some(o) = &mut out {
                    o.flush();
                }
                let _ = ack.try_send(());
            }
        }
        // Caught up: say how many lines were lost meanwhile (once per burst), write out.
        if caught_up() {
            report_drops(&mut out, &mut reported_drops);
            if let Some(o) = &mut out {
                o.flush();
            }
        }
    }
}

/// No line text waits in the queue (std's channel cannot be peeked; the byte count can).
fn caught_up() -> bool {
    LOGGER
        .get()
        .is_some_and(|l| l.queued_bytes.load(Ordering::Relaxed) == 0)
}

fn report_drops(out: &mut Option<Output>, reported: &mut u64) {
    let total = dropped();
    if total > *reported {
        let n = total - *reported;
        *reported = total;
        emit(
            out,
            Level::Error,
            SystemTime::now(),
            &format!("{n} log lines dropped"),
        );
    }
}

fn emit(out: &mut Option<Output>, level: Level, at: SystemTime, text: &str) {
    match out {
        Some(o) => o.write_line(level, at, text),
        None => {
            let _ = writeln!(std::io::stderr(), "[{}] {}", level.label(), text);
        }
    }
}

fn reopen_file(out: &mut Option<Output>) {
    let Some(o) = out else {
        return;
    };
    // What was logged before the signal belongs in the old file.
    o.flush();
    let reopened = match &mut o.sink {
        Sink::File { path, file } => match open_file(path) {
            Ok(f) => {
                *file = f;
                Ok(())
            }
            Err(e) => Err(e),
        },
        _ => {
            o.write_line(
                Level::Info,
                SystemTime::now(),
                "File log re-open ignored, not a file logger",
            );
            return;
        }
    };
    match reopened {
        Ok(()) => o.write_line(Level::Info, SystemTime::now(), "File log re-opened"),
        Err(e) => o.write_line(Level::Error, SystemTime::now(), &e),
    }
}

impl Output {
    fn write_line(&mut self, level: Level, at: SystemTime, text: &str) {
        let line = match &self.sink {
            Sink::Syslog(s) => s.format(level, at, text, self.pid),
            _ => format_line(self.pid, self.logtime, self.colors, level, at, text),
        };
        if let Sink::Syslog(s) = &mut self.sink {
            s.send(line.as_bytes());
            return;
        }
        self.buf.extend_from_slice(line.as_bytes());
        if self.buf.len() >= WRITE_BATCH {
            self.flush();
        }
    }

    /// Writes out the batched lines.
    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let _ = match &mut self.sink {
            Sink::Stderr => std::io::stderr().write_all(&self.buf),
            Sink::File { file, .. } => file.write_all(&self.buf),
            Sink::Syslog(_) => Ok(()),
        };
        self.buf.clear();
    }
}

/// `[pid] YYYY/MM/DD HH:MM:SS.micro [LVL] text\n` (spec §4.6).
fn format_line(
    pid: u32,
    logtime: bool,
    colors: bool,
    level: Level,
    at: SystemTime,
    text: &str,
) -> String {
    let mut line = String::with_capacity(48 + text.len());
    line.push_str(&format!("[{pid}] "));
    if logtime {
        line.push_str(&timestamp(at));
        line.push(' ');
    }
    if colors {
        line.push_str(&format!(
            "[\x1b[{}m{}\x1b[0m] ",
            level.color(),
            level.label()
        ));
    } else {
        line.push('[');
        line.push_str(level.label());
        line.push_str("] ");
    }
    line.push_str(text);
    line.push('\n');
    line
}

impl Syslog {
    /// One syslog message as Go's log/syslog writes it: `<PRI>Mmm dd hh:mm:ss tag[pid]: msg\n`
    /// locally, `<PRI>RFC3339 host tag[pid]: msg\n` to a remote server.
    fn format(&self, level: Level, at: SystemTime, text: &str, pid: u32) -> String {
        let pri = FACILITY_DAEMON | level.severity();
        if self.local {
            format!("<{pri}>{} {}[{pid}]: {text}\n", stamp(at), self.tag)
        } else {
            format!(
                "<{pri}>{} {} {}[{pid}]: {text}\n",
                rfc3339(at),
                self.hostname,
                self.tag
            )
        }
    }

    fn send(&mut self, msg: &[u8]) {
        match &mut self.conn {
            SyslogConn::Unix(s) => {
                let _ = s.send(msg);
            }
            SyslogConn::Udp(s) => {
                let _ = s.send(msg);
            }
            SyslogConn::Tcp { addr, stream } => {
                // One reconnect attempt per line after a failure, bounded by the timeouts.
                for _ in 0..2 {
                    if stream.is_none() {
                        *stream = tcp_connect(addr).ok();
                    }
                    let Some(s) = stream else {
                        return;
                    };
                    if s.write_all(msg).is_ok() {
                        return;
                    }
                    *stream = None;
                }
            }
        }
    }
}

fn local_tm(at: SystemTime) -> (libc::tm, u32) {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes only into the `tm` we pass; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    (tm, since.subsec_micros())
}

/// Local time as `YYYY/MM/DD HH:MM:SS.micro`, as Go's log package prints it.
fn timestamp(at: SystemTime) -> String {
    let (tm, micros) = local_tm(at);
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        micros
    )
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Jan _2 15:04:05` (Go's `time.Stamp`), the RFC 3164 timestamp.
fn stamp(at: SystemTime) -> String {
    let (tm, _) = local_tm(at);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[tm.tm_mon.clamp(0, 11) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Local time as RFC 3339 with the zone offset (Go's `time.RFC3339`).
fn rfc3339(at: SystemTime) -> String {
    let (tm, _) = local_tm(at);
    let off = tm.tm_gmtoff;
    let zone = if off == 0 {
        "Z".to_owned()
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! fatal { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Fatal, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::log::debug_enabled() { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) } } }
#[macro_export]
macro_rules! trace { ($($t:tt)*) => { if $crate::log::trace_enabled() { $crate::log::write($crate::log::Level::Trace, format_args!($($t)*)) } } }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_shape() {
        let t = timestamp(SystemTime::now());
        // 2026/11/25 04:42:32.123456
        assert_eq!(t.len(), 26, "{t}");
        assert_eq!(&t[4..5], "/");
        assert_eq!(&t[19..20], ".");
    }

    #[test]
    fn line_format_with_and_without_time_and_colours() {
        let at = SystemTime::now();
        let l = format_line(42, false, false, Level::Info, at, "hello");
        assert_eq!(l, "[42] [INF] hello\n");
        let l = format_line(42, false, true, Level::Error, at, "bad");
        assert_eq!(l, "[42] [\x1b[31mERR\x1b[0m] bad\n");
        let l = format_line(42, true, false, Level::Trace, at, "x");
        assert!(l.starts_with("[42] ") && l.ends_with(" [TRC] x\n"), "{l}");
        assert_eq!(l.len(), "[42] ".len() + 26 + " [TRC] x\n".len());
    }

    #[test]
    fn syslog_priorities_are_daemon_and_the_level() {
        let s = Syslog {
            conn: SyslogConn::Udp(UdpSocket::bind("127.0.0.1:0").unwrap()),
            tag: "ringnats".into(),
            local: true,
            hostname: String::new(),
        };
        let at = SystemTime::now();
        for (level, pri) in [
            (Level::Info, "<30>"),
            (Level::Debug, "<31>"),
            (Level::Error, "<27>"),
            (Level::Fatal, "<26>"),
            (Level::Trace, "<29>"),
        ] {
            let m = s.format(level, at, "text", 7);
            assert!(m.starts_with(pri), "{m}");
            assert!(m.ends_with(" ringnats[7]: text\n"), "{m}");
        }
    }

    /// The one test that installs the process-wide logger (other tests' lines may land in
    /// its sinks too, so it looks for its own lines only).
    #[test]
    fn reconfigure_switches_sink_and_levels_at_run_time() {
        let dir = std::env::temp_dir().join(format!("ringnats-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.log");
        init(&LogSettings {
            file: Some(file.clone()),
            ..LogSettings::default()
        })
        .unwrap();
        assert!(!debug_enabled());
        crate::info!("to the file");
        flush();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("[{}] [INF] to the file\n", std::process::id())),
            "{text}"
        );

        let sock_path = dir.join("log.sock");
        let rx = UnixDatagram::bind(&sock_path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let bad = LogSettings {
            remote_syslog: Some("ftp://x".into()),
            ..LogSettings::default()
        };
        assert!(reconfigure(&bad).is_err(), "a bad sink changes nothing");
        reconfigure(&LogSettings {
            debug: true,
            remote_syslog: Some(format!("unix://{}", sock_path.display())),
            ..LogSettings::default()
        })
        .unwrap();
        assert!(debug_enabled());
        crate::debug!("to syslog");
        flush();
        let mut buf = [0u8; 1024];
        let mut got = String::new();
        for _ in 0..100 {
            let n = rx.recv(&mut buf).unwrap();
            got = String::from_utf8_lossy(&buf[..n]).into_owned();
            if got.contains("to syslog") {
                break;
            }
        }
        assert!(
            got.starts_with("<31>") && got.ends_with("]: to syslog\n"),
            "{got}"
        );
        assert!(!std::fs::read_to_string(&file)
            .unwrap()
            .contains("to syslog"));
        reconfigure(&LogSettings::default()).unwrap();
        assert!(!debug_enabled());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn remote_syslog_urls() {
        let e = remote_syslog("http://x:1").err().unwrap();
        assert_eq!(e, "error invalid network type: \"http\"");
        assert!(remote_syslog("udp://").is_err());
        assert!(remote_syslog("udp://127.0.0.1:9").is_ok());
    }
}
