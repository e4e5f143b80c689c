//! Log lines in gnatsd's format: `[pid] YYYY/MM/DD HH:MM:SS.micro [INF] message`.
//!
//! One process-wide logger, set once at start-up. Debug and trace are checked with a
//! relaxed atomic load so disabled levels cost nothing on the data path.

use std::fmt::Arguments;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static DEBUG: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
static LOGGER: OnceLock<Logger> = OnceLock::new();

struct Logger {
    pid: u32,
    logtime: bool,
    colors: bool,
    sink: Mutex<Sink>,
}

enum Sink {
    Stderr,
    File(File),
}

#[derive(Clone, Copy)]
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
}

/// Installs the logger. Returns an error naming the file if it cannot be opened.
pub fn init(debug: bool, trace: bool, logtime: bool, file: Option<&Path>) -> Result<(), String> {
    let sink = match file {
        Some(path) => Sink::File(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("error opening log file {}: {e}", path.display()))?,
        ),
        None => Sink::Stderr,
    };
    let colors = matches!(sink, Sink::Stderr) && std::io::stderr().is_terminal();
    DEBUG.store(debug, Ordering::Relaxed);
    TRACE.store(trace, Ordering::Relaxed);
    let _ = LOGGER.set(Logger {
        pid: std::process::id(),
        logtime,
        colors,
        sink: Mutex::new(sink),
    });
    Ok(())
}

#[inline]
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

#[inline]
pub fn trace_enabled() -> bool {
    TRACE.load(Ordering::Relaxed)
}

pub fn write(level: Level, args: Arguments<'_>) {
    let Some(logger) = LOGGER.get() else {
        // Not initialised (library use, tests): stay quiet except for errors.
        if matches!(level, Level::Error | Level::Fatal) {
            eprintln!("[{}] {}", level.label(), args);
        }
        return;
    };
    let mut line = format!("[{}] ", logger.pid);
    if logger.logtime {
        line.push_str(&timestamp());
        line.push(' ');
    }
    if logger.colors {
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
    line.push_str(&args.to_string());
    line.push('\n');
    let mut sink = logger.sink.lock().unwrap_or_else(|p| p.into_inner());
    let _ = match &mut *sink {
        Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
        Sink::File(f) => f.write_all(line.as_bytes()),
    };
}

/// Local time as `YYYY/MM/DD HH:MM:SS.micro`, as Go's log package prints it.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r writes only into the `tm` we pass; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros()
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
    #[test]
    fn timestamp_shape() {
        let t = super::timestamp();
        // 2026/11/25 04:42:32.123456
        assert_eq!(t.len(), 26, "{t}");
        assert_eq!(&t[4..5], "/");
        assert_eq!(&t[19..20], ".");
    }
}

// ---------------------------------------------------------------------------------------
// Minimal reload hook: toggles debug and trace only. The full version (logtime, log file,
// syslog, rebuilt writer) replaces this block.
// ---------------------------------------------------------------------------------------

/// The logging options a reload may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    pub log_file: Option<std::path::PathBuf>,
    pub syslog: bool,
    pub remote_syslog: Option<String>,
}

impl LogSettings {
    pub fn from_options(o: &crate::options::Options) -> Self {
        LogSettings {
            debug: o.debug,
            trace: o.trace,
            logtime: o.logtime,
            log_file: o.log_file.clone(),
            syslog: o.syslog,
            remote_syslog: o.remote_syslog.clone(),
        }
    }
}

/// Applies reloaded log settings (here: the debug and trace levels).
pub fn reconfigure(s: &LogSettings) -> Result<(), String> {
    DEBUG.store(s.debug, Ordering::Relaxed);
    TRACE.store(s.trace, Ordering::Relaxed);
    Ok(())
}
