//! Command-line options in gnatsd 1.0's spelling, merged over the config file.
//!
//! gnatsd uses Go's `flag` package, where `-port` and `--port` are the same flag and
//! booleans take `-T=false`. clap wants `--port`, so [`normalize_args`] rewrites gnatsd's
//! single-dash long forms before clap sees them.
//!
//! With `-c FILE`, the file is read ([`crate::config::parse_file`], the only I/O here) and
//! mapped to options ([`crate::config::server_options`]); then every flag given on the
//! command line wins over the file ([`Cli::merge`], gnatsd's `MergeOptions`, spec §4.3).

use crate::config::{self, FileCluster, FileOptions, Warning};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// gnatsd's defaults (`server/const.go`), plus the 2.x limits modern clients expect.
pub const DEFAULT_PORT: u16 = 4222;
pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// nats-server 2.x's limit (gnatsd 1.0 had 1024); 2.x clients may send longer lines than 1.0's.
pub const DEFAULT_MAX_CONTROL_LINE: usize = 4096;
pub const DEFAULT_MAX_CONNECTIONS: usize = 64 * 1024;
pub const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(120);
pub const DEFAULT_PING_MAX: u32 = 2;
pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_secs(2);
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(1);
/// gnatsd 1.0's `TLS_TIMEOUT` (2.x raised it to 2 s).
pub const DEFAULT_TLS_TIMEOUT: Duration = Duration::from_millis(500);
/// nats-server 2.x's lame duck defaults: clients are closed over two minutes, starting after
/// a ten-second grace period.
pub const DEFAULT_LAME_DUCK_DURATION: Duration = Duration::from_secs(120);
pub const DEFAULT_LAME_DUCK_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// Client TLS settings, as written (the files are read by [`crate::tls::server_config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// Require a client certificate, verified against `ca_file` (or the system roots).
    pub verify: bool,
    /// Handshake timeout, from the accept (INFO) to the handshake's end.
    pub timeout: Duration,
    /// Go cipher-suite names, in the server's order of preference; empty: the defaults.
    pub cipher_suites: Vec<String>,
    /// Go curve names (`CurveP256`, `CurveP384`, `CurveP521`, `X25519`); empty: the defaults.
    pub curve_preferences: Vec<String>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            cert_file: None,
            key_file: None,
            ca_file: None,
            verify: false,
            timeout: DEFAULT_TLS_TIMEOUT,
            cipher_suites: Vec::new(),
            curve_preferences: Vec::new(),
        }
    }
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "ringnats",
    version,
    disable_version_flag = true,
    about = "A NATS server (gnatsd 1.0 compatible) on io_uring"
)]
pub struct Cli {
    /// Bind to host address
    #[arg(short = 'a', long = "addr", visible_alias = "net", default_value = DEFAULT_HOST)]
    pub addr: String,
    /// Use port for clients (-1 for a random port)
    #[arg(short = 'p', long = "port", default_value_t = DEFAULT_PORT as i32, allow_negative_numbers = true)]
    pub port: i32,
    /// HTTP port for monitoring (-1 for a random port)
    #[arg(short = 'm', long = "http_port", allow_negative_numbers = true)]
    pub http_port: Option<i32>,
    /// HTTPS port for monitoring, also -ms (needs --tls; ignored with -c, as in gnatsd)
    #[arg(long = "https_port", alias = "ms", allow_negative_numbers = true)]
    pub https_port: Option<i32>,
    /// Configuration file (flags given on the command line win over it)
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// File to store the process id
    #[arg(short = 'P', long = "pid")]
    pub pid_file: Option<PathBuf>,
    /// File to redirect log output
    #[arg(short = 'l', long = "log")]
    pub log_file: Option<PathBuf>,
    /// Timestamp log entries (default: true)
    #[arg(short = 'T', long = "logtime", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true", action = ArgAction::Set)]
    pub logtime: bool,
    /// Enable debugging output
    #[arg(short = 'D', long = "debug", action = ArgAction::SetTrue)]
    pub debug: bool,
    /// Trace the raw protocol
    #[arg(short = 'V', long = "trace", action = ArgAction::SetTrue)]
    pub trace: bool,
    /// Log to the local syslog (ignored with -c, as in gnatsd)
    #[arg(short = 's', long = "syslog", action = ArgAction::SetTrue)]
    pub syslog: bool,
    /// Syslog server address: udp://host:port, tcp://host:port or unix:///path (ignored with
    /// -c, as in gnatsd)
    #[arg(short = 'r', long = "remote_syslog")]
    pub remote_syslog: Option<String>,
    /// Username required for connections
    #[arg(long = "user")]
    pub user: Option<String>,
    /// Password required for connections
    #[arg(long = "pass")]
    pub pass: Option<String>,
    /// Authorization token required for connections
    #[arg(long = "auth")]
    pub auth: Option<String>,
    /// Maximum payload size in bytes
    #[arg(long = "max_payload", default_value_t = DEFAULT_MAX_PAYLOAD)]
    pub max_payload: usize,
    /// Maximum control line length in bytes
    #[arg(long = "max_control_line", default_value_t = DEFAULT_MAX_CONTROL_LINE)]
    pub max_control_line: usize,
    /// Maximum number of client connections
    #[arg(long = "max_connections", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Maximum bytes queued for one client before it is cut off as a slow consumer
    #[arg(long = "max_pending", default_value_t = DEFAULT_MAX_PENDING)]
    pub max_pending: usize,
    /// Seconds between server PINGs
    #[arg(long = "ping_interval", default_value_t = 120.0)]
    pub ping_interval_secs: f64,
    /// Unanswered PINGs before the connection is closed as stale
    #[arg(long = "ping_max", default_value_t = 2)]
    pub ping_max: u32,
    /// Seconds a write may stall before the client is a slow consumer
    #[arg(long = "write_deadline", default_value_t = 2.0)]
    pub write_deadline_secs: f64,
    /// Seconds to wait for CONNECT when authorization is required
    #[arg(long = "auth_timeout", default_value_t = 1.0)]
    pub auth_timeout_secs: f64,
    /// Enable TLS, do not verify clients (needs --tlscert and --tlskey)
    #[arg(long = "tls", action = ArgAction::SetTrue)]
    pub tls: bool,
    /// Enable TLS, verify client certificates (against --tlscacert)
    #[arg(long = "tlsverify", action = ArgAction::SetTrue)]
    pub tlsverify: bool,
    /// Server certificate file (PEM)
    #[arg(long = "tlscert")]
    pub tlscert: Option<PathBuf>,
    /// Private key for the server certificate (PEM)
    #[arg(long = "tlskey")]
    pub tlskey: Option<PathBuf>,
    /// Client certificate CA for verification (PEM)
    #[arg(long = "tlscacert")]
    pub tlscacert: Option<PathBuf>,
    /// Cluster URL for solicited routes (nats-route://[user:pass@]host:port)
    #[arg(long = "cluster", visible_alias = "cluster_listen")]
    pub cluster: Option<String>,
    /// Routes to solicit and connect, comma-separated
    #[arg(long = "routes")]
    pub routes: Option<String>,
    /// Cluster name a nats-server 2.x peer must match (default: take the peer's)
    #[arg(long = "cluster_name")]
    pub cluster_name: Option<String>,
    /// Do not advertise known cluster information to clients
    #[arg(long = "no_advertise", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = ArgAction::Set)]
    pub no_advertise: Option<bool>,
    /// Number of connect retries for implicit routes
    #[arg(long = "connect_retries")]
    pub connect_retries: Option<u32>,
    /// Server name (default: the server id), sent to clients as INFO server_name
    #[arg(short = 'n', long = "name", visible_alias = "server_name")]
    pub server_name: Option<String>,
    /// Number of io_uring reactor threads (default: available cores)
    #[arg(long = "workers")]
    pub workers: Option<usize>,
    /// Send a signal to a running server: stop, quit, reopen, reload, ldm or term, optionally
    /// =PID (or =PIDFILE), also -sl
    #[arg(long = "signal", alias = "sl", value_name = "CMD[=PID]")]
    pub signal: Option<String>,
    /// Show version and exit
    #[arg(short = 'v', long = "version", action = ArgAction::SetTrue)]
    pub version: bool,
    /// `version` or `help`, as gnatsd accepts them
    #[arg(hide = true)]
    pub command: Option<String>,
}

/// Effective server options after parsing and validation.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    /// 0 means "pick a random port".
    pub port: u16,
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Monitoring port (`-m`, `http_port`): `Some(0)` for a random port, `None` when off.
    pub http_port: Option<u16>,
    /// HTTPS monitoring port (`-ms`, `https_port`), with the client TLS certificate.
    pub https_port: Option<u16>,
    /// The monitoring host of the config file's `http`/`https` (default: `host`).
    pub http_host: Option<String>,
    /// The config file's `prof_port`: accepted, not served.
    pub prof_port: Option<i32>,
    /// Syslog (`-s`, `-r`, `syslog`, `remote_syslog`): local, or a remote URL.
    pub syslog: bool,
    pub remote_syslog: Option<String>,
    /// Client TLS (the config file's `tls {}` or `--tls`/`--tlsverify`); `None`: plain text.
    pub tls: Option<TlsOptions>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// `authorization { users = [...] }`: checked before the token and the single user.
    pub users: Vec<crate::auth::UserConfig>,
    /// `default_permissions`: for users that have none of their own.
    pub default_permissions: Option<crate::auth::Permissions>,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_connections: usize,
    pub max_pending: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub write_deadline: Duration,
    pub auth_timeout: Duration,
    pub workers: usize,
    /// The name clients see in INFO (`server_name`); `None`: the server id.
    pub server_name: Option<String>,
    /// Routing: `None` when no cluster port is configured.
    pub cluster: Option<ClusterOptions>,
    /// Lame duck mode (SIGUSR2): the whole time over which clients are closed, and the wait
    /// before the first is closed.
    pub lame_duck_duration: Duration,
    pub lame_duck_grace_period: Duration,
}

/// The `cluster` settings (`--cluster`, `--routes`, ... or the config file's `cluster {}`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    pub host: String,
    /// 0 means "pick a random port".
    pub port: u16,
    /// Route authorization: what an inbound route must send in its CONNECT.
    pub user: Option<String>,
    pub pass: Option<String>,
    pub auth_timeout: Duration,
    /// Explicit (configured) routes, dialled forever.
    pub routes: Vec<RouteUrl>,
    pub no_advertise: bool,
    /// Extra dial attempts for implicit (gossiped) routes.
    pub connect_retries: u32,
    /// Route TLS (`cluster { tls {} }`): both sides present and verify certificates.
    pub tls: Option<TlsOptions>,
    /// The cluster name 2.x routes carry (`--cluster_name`, `cluster { name }`); `None`:
    /// each 2.x route takes its peer's.
    pub name: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            host: DEFAULT_HOST.to_string(),
            port: 0,
            user: None,
            pass: None,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            routes: Vec::new(),
            no_advertise: false,
            connect_retries: 0,
            tls: None,
            name: None,
        }
    }
}

/// A route URL: `nats-route://[user:pass@]host:port`. Only host, port and userinfo are used
/// (gnatsd does not check the scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUrl {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub pass: Option<String>,
}

impl RouteUrl {
    pub fn parse(text: &str) -> Result<RouteUrl, String> {
        let text = text.trim();
        RouteUrl::parse_reason(text).map_err(|why| format!("invalid route URL {text:?}: {why}"))
    }

    /// As [`RouteUrl::parse`], but the error only says what is wrong (the caller names the URL).
    pub fn parse_reason(text: &str) -> Result<RouteUrl, String> {
        let text = text.trim();
        let u = url::Url::parse(text).map_err(|e| e.to_string())?;
        let host = u.host_str().filter(|h| !h.is_empty()).ok_or("no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u.port().ok_or("no port")?;
        let user = (!u.username().is_empty()).then(|| percent_decode(u.username()));
        let pass = u.password().map(percent_decode);
        Ok(RouteUrl {
            host,
            port,
            user,
            pass,
        })
    }

    /// `host:port`, for dialling and logs.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Undoes the URL's percent-encoding of user info (`%40` → `@`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Display for RouteUrl {
    /// The URL without credentials, as logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "nats-route://{}/", self.host_port())
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
            debug: false,
            trace: false,
            logtime: true,
            log_file: None,
            pid_file: None,
            http_port: None,
            https_port: None,
            http_host: None,
            prof_port: None,
            syslog: false,
            remote_syslog: None,
            tls: None,
            user: None,
            pass: None,
            token: None,
            users: Vec::new(),
            default_permissions: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending: DEFAULT_MAX_PENDING,
            ping_interval: DEFAULT_PING_INTERVAL,
            ping_max: DEFAULT_PING_MAX,
            write_deadline: DEFAULT_WRITE_DEADLINE,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            workers: default_workers(),
            server_name: None,
            cluster: None,
            lame_duck_duration: DEFAULT_LAME_DUCK_DURATION,
            lame_duck_grace_period: DEFAULT_LAME_DUCK_GRACE_PERIOD,
        }
    }
}

impl Options {
    pub fn auth_required(&self) -> bool {
        self.user.is_some() || self.token.is_some() || !self.users.is_empty()
    }
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What `main` should do after parsing.
pub enum Command {
    /// Start a server. `warnings` are about the config file, for `main` to log.
    Run {
        opts: Box<Options>,
        warnings: Vec<Warning>,
    },
    Version,
    /// `-sl/--signal <cmd>[=<pid>]`: signal a running server and exit.
    Signal {
        command: String,
        pid: Option<String>,
    },
}

/// The flags given on the command line (clap argument ids, i.e. [`Cli`]'s field names), as
/// opposed to those left at their defaults. Only given flags win over the config file.
#[derive(Debug, Clone, Default)]
pub struct Given(Vec<String>);

impl Given {
    pub fn from_matches(m: &ArgMatches) -> Given {
        Given(
            m.ids()
                .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                .map(|id| id.as_str().to_owned())
                .collect(),
        )
    }

    pub fn has(&self, id: &str) -> bool {
        self.0.iter().any(|g| g == id)
    }
}

/// gnatsd long flags that Go accepts with one dash. Rewritten to `--name` for clap.
const LONG_FLAGS: &[&str] = &[
    "addr",
    "net",
    "port",
    "http_port",
    "https_port",
    "ms",
    "config",
    "pid",
    "log",
    "logtime",
    "debug",
    "trace",
    "syslog",
    "remote_syslog",
    "user",
    "pass",
    "auth",
    "max_payload",
    "max_control_line",
    "max_connections",
    "max_pending",
    "ping_interval",
    "ping_max",
    "write_deadline",
    "auth_timeout",
    "workers",
    "name",
    "server_name",
    "cluster",
    "cluster_listen",
    "routes",
    "cluster_name",
    "no_advertise",
    "connect_retries",
    "tls",
    "tlsverify",
    "tlscert",
    "tlskey",
    "tlscacert",
    "version",
    "help",
    // `-sl reload` must not be read as `-s -l reload` (syslog, log file "reload").
    "sl",
    "signal",
];

/// Rewrites `-port 4222` / `-port=4222` to `--port ...`, leaving short flags alone.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            // `-ms` is a two-letter flag in gnatsd; clap would read it as `-m s`.
            if a == "-ms" || a.starts_with("-ms=") {
                return a.replacen("-ms", "--https_port", 1);
            }
            if a.starts_with('-') && !a.starts_with("--") && a.len() > 2 {
                let body = &a[1..];
                let name = body.split('=').next().unwrap_or(body);
                if LONG_FLAGS.contains(&name) {
                    return format!("-{a}");
                }
            }
            a
        })
        .collect()
}

fn secs(v: f64, flag: &str) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 {
        return Err(format!("invalid value for {flag}: {v}"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Cli {
    /// `Some(Version)` for `-v` or the word `version`, an error for another word, `None` to
    /// run. Decided before the config file is read, as gnatsd does.
    pub fn version_command(&self) -> Result<Option<Command>, String> {
        if self.version {
            return Ok(Some(Command::Version));
        }
        match &self.command {
            None => Ok(None),
            Some(cmd) if cmd.eq_ignore_ascii_case("version") => Ok(Some(Command::Version)),
            Some(cmd) => Err(format!("Unrecognized command: \"{cmd}\"")),
        }
    }

    /// The options: the config file's (or the defaults), then every flag in `given` over them,
    /// as gnatsd's `MergeOptions` does (spec §4.3), with these decisions:
    /// - A flag wins only if it was given, whatever its value (`-p 4222` beats `port: 5000`).
    ///   gnatsd 1.0 instead tests the flag's value, so a flag set to its zero value (`-p 0`,
    ///   `--no_advertise=false`) does not win there.
    /// - `-T`: gnatsd 1.0's `-T` defaults to true and a true flag always wins, so
    ///   `logtime: false` in the file never applies unless `-T=false` is passed (spec §4.4,
    ///   Appendix A.13). That is a bug, fixed in 2.x by tracking explicit flags; we do as
    ///   2.x: the file's `logtime` applies unless `-T` is given.
    /// - `-ms`, `-s` and `-r` are ignored when there is a config file, as in gnatsd.
    /// - `--routes` replaces the file's routes entirely; `--cluster` replaces the file's
    ///   cluster host, port and credentials (none in the URL clears the file's), and keeps
    ///   its routes, `no_advertise`, `connect_retries` and authorization timeout.
    /// - The flags only ringnats has (`--max_payload`, `--ping_interval`, `--workers`, ...)
    ///   win over the file's keys the same way.
    pub fn merge(
        self,
        given: &Given,
        file: Option<FileOptions>,
    ) -> Result<(Options, Vec<Warning>), String> {
        let from_file = file.is_some();
        let (mut o, file_cluster, mut warnings) = match file {
            Some(f) => (f.options, f.cluster, f.warnings),
            None => (Options::default(), None, Vec::new()),
        };
        let set = |id: &str| given.has(id);
        if set("addr") {
            o.host = self.addr;
        }
        if set("port") {
            o.port = match self.port {
                -1 => 0,
                p if (0..=65535).contains(&p) => p as u16,
                p => return Err(format!("invalid port: {p}")),
            };
        }
        if set("http_port") {
            o.http_port = monitor_port(self.http_port, "http_port")?;
        }
        if set("pid_file") {
            o.pid_file = self.pid_file;
        }
        if set("log_file") {
            o.log_file = self.log_file;
        }
        if set("logtime") {
            o.logtime = self.logtime;
        }
        if set("debug") {
            o.debug = self.debug;
        }
        if set("trace") {
            o.trace = self.trace;
        }
        if set("user") {
            o.user = self.user;
        }
        if set("pass") {
            o.pass = self.pass;
        }
        if set("auth") {
            o.token = self.auth;
        }
        if o.pass.is_some() && o.user.is_none() {
            return Err("--pass requires --user".into());
        }
        if set("max_payload") {
            if self.max_payload == 0 {
                return Err("max_payload must be greater than 0".into());
            }
            o.max_payload = self.max_payload;
        }
        if set("max_control_line") {
            if self.max_control_line < config::MIN_MAX_CONTROL_LINE {
                return Err("max_control_line must be at least 16".into());
            }
            o.max_control_line = self.max_control_line;
        }
        if set("max_connections") {
            o.max_connections = self.max_connections;
        }
        if set("max_pending") {
            o.max_pending = self.max_pending;
        }
        if set("ping_interval_secs") {
            o.ping_interval = secs(self.ping_interval_secs, "ping_interval")?;
        }
        if set("ping_max") {
            o.ping_max = self.ping_max;
        }
        if set("write_deadline_secs") {
            o.write_deadline = secs(self.write_deadline_secs, "write_deadline")?;
        }
        if set("auth_timeout_secs") {
            o.auth_timeout = secs(self.auth_timeout_secs, "auth_timeout")?;
        }
        if self.server_name.is_some() {
            o.server_name = self.server_name.clone();
        }
        if let Some(n) = self.workers {
            if n == 0 {
                return Err("--workers must be at least 1".into());
            }
            o.workers = n;
        }
        // gnatsd's configureTLS: --tls or --tlsverify replaces the file's client TLS (its
        // timeout is kept); without one of them the other TLS flags are ignored.
        if self.tls || self.tlsverify {
            o.tls = Some(TlsOptions {
                cert_file: self.tlscert,
                key_file: self.tlskey,
                ca_file: self.tlscacert,
                verify: self.tlsverify,
                timeout: o.tls.as_ref().map_or(DEFAULT_TLS_TIMEOUT, |t| t.timeout),
                ..TlsOptions::default()
            });
        }
        // gnatsd's MergeOptions does not copy these three: with -c they are ignored.
        if !from_file {
            o.https_port = monitor_port(self.https_port, "https_port")?;
            o.syslog = self.syslog;
            o.remote_syslog = self.remote_syslog;
        }
        o.cluster = cluster_options(
            self.cluster.as_deref(),
            self.routes.as_deref(),
            self.no_advertise,
            self.connect_retries,
            file_cluster,
            &mut warnings,
        )?;
        if let Some(c) = o.cluster.as_mut() {
            if let Some(name) = self.cluster_name.filter(|n| !n.is_empty()) {
                c.name = Some(name);
            }
        }
        if let (Some(h), Some(s)) = (o.http_port, o.https_port) {
            return Err(format!(
                "can't specify both HTTP ({h}) and HTTPs ({s}) ports"
            ));
        }
        Ok((o, warnings))
    }
}

/// Builds the cluster settings from the config file's `cluster {}` block and the flags
/// `--cluster`, `--routes`, `--no_advertise` and `--connect_retries` (each `None` when not
/// given), with gnatsd 1.0's rules and error texts.
/// A monitoring port flag: 0 (or absent) is off, -1 a random port (gnatsd's meaning).
pub fn monitor_port(v: Option<i32>, flag: &str) -> Result<Option<u16>, String> {
    match v {
        None | Some(0) => Ok(None),
        Some(-1) => Ok(Some(0)),
        Some(p) if (1..=65535).contains(&p) => Ok(Some(p as u16)),
        Some(p) => Err(format!("invalid value for {flag}: {p}")),
    }
}

fn cluster_options(
    listen: Option<&str>,
    routes: Option<&str>,
    no_advertise: Option<bool>,
    connect_retries: Option<u32>,
    file: Option<FileCluster>,
    warnings: &mut Vec<Warning>,
) -> Result<Option<ClusterOptions>, String> {
    let mut cluster = match (listen, file) {
        (Some(listen), file) => {
            let url = RouteUrl::parse(listen)?;
            if url.user.is_some() && url.pass.is_none() {
                return Err("Expected cluster password to be set.".into());
            }
            let mut c = file.map(|f| f.options).unwrap_or_default();
            c.host = url.host;
            c.port = url.port;
            c.user = url.user;
            c.pass = url.pass;
            Some(c)
        }
        (None, Some(f)) if f.listens => Some(f.options),
        (None, Some(f)) => {
            // gnatsd 1.0 routes only with a cluster port; it says nothing. We do.
            warnings.push(Warning {
                pos: f.pos,
                message: "cluster has no port (`listen` or `port`): routing is off".into(),
            });
            None
        }
        (None, None) => None,
    };
    // As gnatsd, an empty --routes leaves the file's routes alone.
    if let Some(routes) = routes.filter(|r| !r.trim().is_empty()) {
        let routes = routes
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(RouteUrl::parse)
            .collect::<Result<Vec<_>, _>>()?;
        match &mut cluster {
            Some(c) => c.routes = routes,
            None => {
                return Err("Solicited routes require cluster capabilities, e.g. --cluster.".into())
            }
        }
    }
    if let Some(c) = &mut cluster {
        if let Some(v) = no_advertise {
            c.no_advertise = v;
        }
        if let Some(n) = connect_retries {
            c.connect_retries = n;
        }
    }
    Ok(cluster)
}

/// Reads the config file and maps it to options. A file that cannot be opened gets gnatsd's
/// message (`error opening config file: open <path>: no such file or directory`); any other
/// error is positioned (`file:line:col: key "k": ...`).
pub fn read_config(path: &Path) -> Result<FileOptions, String> {
    let name = path.to_string_lossy();
    let map = config::parse_file(path).map_err(|e| match &e.kind {
        config::ErrorKind::Read { reason } if e.pos.line == 0 && *e.pos.file == *name => {
            format!(
                "error opening config file: open {name}: {}",
                go_io_reason(reason)
            )
        }
        _ => e.to_string(),
    })?;
    config::server_options(&map).map_err(|e| e.to_string())
}

/// Rust's `No such file or directory (os error 2)` as Go prints it: `no such file or directory`.
pub(crate) fn go_io_reason(reason: &str) -> String {
    let reason = match reason.rfind(" (os error ") {
        Some(i) if reason.ends_with(')') => &reason[..i],
        _ => reason,
    };
    let mut chars = reason.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Why the command line cannot be run.
#[derive(Debug)]
pub enum ArgsError {
    /// Bad flags or values, or `--help` (clap formats these; `use_stderr` says which).
    Clap(clap::Error),
    /// The config file cannot be read or has a bad value. gnatsd prints the message alone on
    /// stderr and exits with status 1.
    Config(String),
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::Clap(e) => write!(f, "{e}"),
            ArgsError::Config(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ArgsError {}

/// Parses a full argv (program name first), reading the config file if `-c` names one.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ArgsError> {
    let invalid = |msg: String| {
        ArgsError::Clap(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            msg + "\n",
        ))
    };
    let matches = Cli::command()
        .try_get_matches_from(normalize_args(args))
        .map_err(ArgsError::Clap)?;
    let given = Given::from_matches(&matches);
    let cli = Cli::from_arg_matches(&matches).map_err(ArgsError::Clap)?;
    if let Some(cmd) = cli.version_command().map_err(invalid)? {
        return Ok(cmd);
    }
    // As gnatsd: the signal is sent before the config file is read.
    if let Some(sig) = &cli.signal {
        let (command, pid) = match sig.split_once('=') {
            Some((c, p)) => (c.to_owned(), Some(p.to_owned())),
            None => (sig.clone(), None),
        };
        return Ok(Command::Signal { command, pid });
    }
    // gnatsd's texts, printed alone (PrintAndDie), before the config file is read.
    if cli.tls || cli.tlsverify {
        if cli.tlscert.is_none() {
            return Err(ArgsError::Config(
                "TLS Server certificate must be present and valid.".into(),
            ));
        }
        if cli.tlskey.is_none() {
            return Err(ArgsError::Config(
                "TLS Server private key must be present and valid.".into(),
            ));
        }
    }
    let file = match &cli.config {
        Some(path) => Some(read_config(path).map_err(ArgsError::Config)?),
        None => None,
    };
    let (opts, warnings) = cli.merge(&given, file).map_err(invalid)?;
    Ok(Command::Run {
        opts: Box::new(opts),
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        let argv = std::iter::once("ringnats")
            .chain(args.iter().copied())
            .map(String::from);
        match parse_args(argv).unwrap() {
            Command::Run { opts, .. } => *opts,
            Command::Version | Command::Signal { .. } => panic!("expected run"),
        }
    }

    #[test]
    fn tls_flags_are_triggered_by_tls_or_tlsverify() {
        assert!(run(&[]).tls.is_none());
        // Without --tls/--tlsverify the other TLS flags are ignored, as in gnatsd.
        assert!(run(&["--tlscert", "c.pem", "--tlskey", "k.pem"])
            .tls
            .is_none());
        let t = run(&["-tls", "-tlscert", "c.pem", "-tlskey", "k.pem"])
            .tls
            .unwrap();
        assert_eq!(t.cert_file.unwrap(), PathBuf::from("c.pem"));
        assert_eq!(t.key_file.unwrap(), PathBuf::from("k.pem"));
        assert!(!t.verify && t.ca_file.is_none());
        assert_eq!(t.timeout, DEFAULT_TLS_TIMEOUT);
        let t = run(&[
            "--tlsverify",
            "--tlscert",
            "c",
            "--tlskey",
            "k",
            "--tlscacert",
            "ca",
        ])
        .tls
        .unwrap();
        assert!(t.verify);
        assert_eq!(t.ca_file.unwrap(), PathBuf::from("ca"));
        let argv = ["ringnats", "--tls"].map(String::from);
        assert_eq!(
            parse_args(argv).err().unwrap().to_string(),
            "TLS Server certificate must be present and valid."
        );
        let argv = ["ringnats", "--tls", "--tlscert", "c"].map(String::from);
        assert_eq!(
            parse_args(argv).err().unwrap().to_string(),
            "TLS Server private key must be present and valid."
        );
    }

    #[test]
    fn tls_flags_replace_the_files_tls_but_keep_its_timeout() {
        let file = config::server_options(
            &config::parse(
                "tls { cert_file: f.pem, key_file: fk.pem, verify: true, timeout: 2 }",
                "gnatsd.conf",
                &config::MemResolver::new(),
            )
            .unwrap(),
        )
        .unwrap();
        let cli = |args: &[&str]| {
            let argv: Vec<String> = std::iter::once("ringnats")
                .chain(args.iter().copied())
                .map(String::from)
                .collect();
            let m = Cli::command()
                .try_get_matches_from(normalize_args(argv))
                .unwrap();
            (Given::from_matches(&m), Cli::from_arg_matches(&m).unwrap())
        };
        let (given, c) = cli(&["--tls", "--tlscert", "c.pem", "--tlskey", "k.pem"]);
        let t = c.merge(&given, Some(file.clone())).unwrap().0.tls.unwrap();
        assert_eq!(t.cert_file.unwrap(), PathBuf::from("c.pem"));
        assert!(!t.verify, "the file's verify is replaced too");
        assert_eq!(t.timeout, Duration::from_secs(2));
        let (given, c) = cli(&[]);
        let t = c.merge(&given, Some(file)).unwrap().0.tls.unwrap();
        assert_eq!(t.cert_file.unwrap(), PathBuf::from("f.pem"));
        assert!(t.verify);
    }

    #[test]
    fn defaults_match_gnatsd() {
        let o = run(&[]);
        assert_eq!(o.host, "0.0.0.0");
        assert_eq!(o.port, 4222);
        assert_eq!(o.max_payload, 1048576);
        assert_eq!(o.max_control_line, 4096);
        assert!(o.logtime);
        assert!(!o.debug && !o.trace);
    }

    #[test]
    fn go_style_single_dash_long_flags() {
        let o = run(&["-port", "5000", "-addr=127.0.0.1", "-DV", "-T=false"]);
        assert_eq!(o.port, 5000);
        assert_eq!(o.host, "127.0.0.1");
        assert!(o.debug && o.trace);
        assert!(!o.logtime);
    }

    #[test]
    fn max_control_line_is_configurable() {
        assert_eq!(run(&["--max_control_line", "1024"]).max_control_line, 1024);
        assert_eq!(run(&["-max_control_line=8192"]).max_control_line, 8192);
    }

    #[test]
    fn random_port_and_workers() {
        let o = run(&["-p", "-1", "--workers", "3"]);
        assert_eq!(o.port, 0);
        assert_eq!(o.workers, 3);
    }

    #[test]
    fn cluster_flags() {
        let o = run(&[
            "--cluster",
            "nats-route://ruser:rpass@127.0.0.1:6222",
            "-routes",
            "nats-route://a:b@127.0.0.1:6223, nats://127.0.0.1:6224",
            "--connect_retries",
            "3",
            "--no_advertise",
        ]);
        let c = o.cluster.unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 6222));
        assert_eq!(c.user.as_deref(), Some("ruser"));
        assert_eq!(c.pass.as_deref(), Some("rpass"));
        assert_eq!(c.connect_retries, 3);
        assert!(c.no_advertise);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[0].user.as_deref(), Some("a"));
        assert_eq!(c.routes[1].host_port(), "127.0.0.1:6224");
        assert_eq!(c.routes[1].to_string(), "nats-route://127.0.0.1:6224/");
        assert!(run(&[]).cluster.is_none());
    }

    #[test]
    fn cluster_errors_use_gnatsd_texts() {
        let err = |args: &[&str]| {
            let argv = std::iter::once("ringnats")
                .chain(args.iter().copied())
                .map(String::from);
            parse_args(argv).err().unwrap().to_string()
        };
        assert!(err(&["--routes", "nats-route://127.0.0.1:1"])
            .contains("Solicited routes require cluster capabilities, e.g. --cluster."));
        assert!(err(&["--cluster", "nats-route://u@127.0.0.1:1"])
            .contains("Expected cluster password to be set."));
    }

    #[test]
    fn signal_flag_is_a_command_not_short_flags() {
        for (args, cmd, p) in [
            (["ringnats", "-sl", "reload"], "reload", None),
            (["ringnats", "-signal", "stop=12"], "stop", Some("12")),
            (
                ["ringnats", "--signal", "ldm=/run/x.pid"],
                "ldm",
                Some("/run/x.pid"),
            ),
            (["ringnats", "-sl=quit", "-D"], "quit", None),
        ] {
            match parse_args(args.map(String::from)) {
                Ok(Command::Signal { command, pid }) => {
                    assert_eq!(command, cmd);
                    assert_eq!(pid.as_deref(), p);
                }
                _ => panic!("{args:?} is not a signal command"),
            }
        }
    }

    #[test]
    fn monitor_port_flags() {
        assert_eq!(run(&["-m", "8222"]).http_port, Some(8222));
        assert_eq!(run(&["--http_port=-1"]).http_port, Some(0), "random");
        assert_eq!(run(&["-m", "0"]).http_port, None, "0 is off");
        assert_eq!(run(&[]).http_port, None);
        let o = run(&["-ms", "8443"]);
        assert_eq!((o.http_port, o.https_port), (None, Some(8443)));
        assert_eq!(run(&["-ms=8444"]).https_port, Some(8444));
        assert_eq!(run(&["-https_port", "8445"]).https_port, Some(8445));
        let argv = ["ringnats", "-m", "8222", "-ms", "8443"].map(String::from);
        let err = parse_args(argv).err().unwrap().to_string();
        assert!(
            err.contains("can't specify both HTTP (8222) and HTTPs (8443) ports"),
            "{err}"
        );
        let argv = ["ringnats", "-m", "70000"].map(String::from);
        assert!(parse_args(argv).is_err());
    }

    #[test]
    fn unknown_command_is_an_error() {
        let argv = ["ringnats", "frobnicate"].map(String::from);
        let err = parse_args(argv).err().unwrap().to_string();
        assert!(
            err.contains("Unrecognized command: \"frobnicate\""),
            "{err}"
        );
        let argv = ["ringnats", "version"].map(String::from);
        assert!(matches!(parse_args(argv).unwrap(), Command::Version));
    }
    // ---- -c/--config and precedence ------------------------------------------------------

    /// The flags `args` merged over the config file `conf`, and the warnings, shown.
    fn merged(args: &[&str], conf: &str) -> Result<(Options, Vec<String>), String> {
        let argv = std::iter::once("ringnats")
            .chain(args.iter().copied())
            .map(String::from);
        let matches = Cli::command()
            .try_get_matches_from(normalize_args(argv))
            .unwrap();
        let given = Given::from_matches(&matches);
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let tree = config::parse(conf, "gnatsd.conf", &config::MemResolver::new()).unwrap();
        let file = config::server_options(&tree).unwrap();
        let (o, w) = cli.merge(&given, Some(file))?;
        Ok((o, w.iter().map(ToString::to_string).collect()))
    }

    fn with_file(args: &[&str], conf: &str) -> Options {
        merged(args, conf).unwrap().0
    }

    const FILE_CONF: &str = "port: 5000\nhost: 127.0.0.1\nhttp_port: 8222\ndebug: false\n\
                             trace: false\nlogtime: false\nlog_file: file.log\n\
                             pid_file: file.pid\nauthorization { user: fu, password: fp, \
                             timeout: 3 }\nmax_payload: 2000\nping_interval: 60\nping_max: 4\n\
                             write_deadline: \"9s\"\nmax_connections: 10\n\
                             max_control_line: 300\nmax_pending: 5000\n";

    #[test]
    fn the_file_applies_where_no_flag_is_given() {
        let o = with_file(&[], FILE_CONF);
        assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 5000));
        assert_eq!(o.http_port, Some(8222));
        assert!(!o.debug && !o.trace && !o.logtime);
        assert_eq!(o.log_file.as_deref(), Some(Path::new("file.log")));
        assert_eq!(o.pid_file.as_deref(), Some(Path::new("file.pid")));
        assert_eq!(
            (o.user.as_deref(), o.pass.as_deref()),
            (Some("fu"), Some("fp"))
        );
        assert_eq!(o.auth_timeout, Duration::from_secs(3));
        assert_eq!(o.max_payload, 2000);
        assert_eq!(o.ping_interval, Duration::from_secs(60));
        assert_eq!(o.ping_max, 4);
        assert_eq!(o.write_deadline, Duration::from_secs(9));
        assert_eq!(o.max_connections, 10);
        assert_eq!(o.max_control_line, 300);
        assert_eq!(o.max_pending, 5000);
        // Flags that are not about the file still apply.
        assert_eq!(with_file(&["--workers", "3"], FILE_CONF).workers, 3);
    }

    #[test]
    fn each_flag_given_wins_over_the_file() {
        let o = |args: &[&str]| with_file(args, FILE_CONF);
        assert_eq!(o(&["-p", "6000"]).port, 6000);
        assert_eq!(o(&["-port=6000"]).port, 6000);
        assert_eq!(o(&["--port", "-1"]).port, 0);
        // Even at its default value: the flag was given.
        assert_eq!(o(&["-p", "4222"]).port, 4222);
        assert_eq!(o(&["-a", "127.0.0.2"]).host, "127.0.0.2");
        assert_eq!(o(&["-net", "127.0.0.3"]).host, "127.0.0.3");
        assert_eq!(o(&["-m", "9000"]).http_port, Some(9000));
        assert!(o(&["-D"]).debug);
        assert!(o(&["-V"]).trace);
        let dv = o(&["-DV"]);
        assert!(dv.debug && dv.trace);
        assert_eq!(
            o(&["-l", "flag.log"]).log_file.as_deref(),
            Some(Path::new("flag.log"))
        );
        assert_eq!(
            o(&["-P", "flag.pid"]).pid_file.as_deref(),
            Some(Path::new("flag.pid"))
        );
        let u = o(&["--user", "cu", "--pass", "cp"]);
        assert_eq!(
            (u.user.as_deref(), u.pass.as_deref()),
            (Some("cu"), Some("cp"))
        );
        // Each one on its own, as MergeOptions does.
        let u = o(&["-pass", "cp"]);
        assert_eq!(
            (u.user.as_deref(), u.pass.as_deref()),
            (Some("fu"), Some("cp"))
        );
        let t = with_file(&["--auth", "ctok"], "authorization { token: ftok }");
        assert_eq!(t.token.as_deref(), Some("ctok"));
        // The flags only ringnats has win the same way.
        assert_eq!(o(&["--max_payload", "1000"]).max_payload, 1000);
        assert_eq!(o(&["--max_control_line", "64"]).max_control_line, 64);
        assert_eq!(o(&["--max_connections", "5"]).max_connections, 5);
        assert_eq!(o(&["--max_pending", "7"]).max_pending, 7);
        assert_eq!(
            o(&["--ping_interval", "5"]).ping_interval,
            Duration::from_secs(5)
        );
        assert_eq!(o(&["--ping_max", "9"]).ping_max, 9);
        assert_eq!(
            o(&["--write_deadline", "1.5"]).write_deadline,
            Duration::from_millis(1500)
        );
        assert_eq!(
            o(&["--auth_timeout", "0.5"]).auth_timeout,
            Duration::from_millis(500)
        );
        // And are checked as without a file.
        assert_eq!(
            merged(&["--max_payload", "0"], FILE_CONF).unwrap_err(),
            "max_payload must be greater than 0"
        );
        assert_eq!(
            merged(&["--pass", "p"], "port: 1").unwrap_err(),
            "--pass requires --user"
        );
    }

    #[test]
    fn debug_and_trace_in_the_file_stay_without_the_flags() {
        let o = with_file(&[], "debug: true\ntrace: true");
        assert!(o.debug && o.trace);
    }

    /// The -T decision (see `Cli::merge`): gnatsd 1.0 lets the default of -T beat
    /// `logtime: false`; we apply the file unless -T is given, as 2.x.
    #[test]
    fn logtime_from_the_file_applies_unless_t_is_given() {
        assert!(!with_file(&[], "logtime: false").logtime);
        assert!(with_file(&["-T"], "logtime: false").logtime);
        assert!(with_file(&["-T=true"], "logtime: false").logtime);
        assert!(!with_file(&["-T=false"], "logtime: true").logtime);
        assert!(!with_file(&["-logtime=false"], "").logtime);
        assert!(with_file(&[], "").logtime);
    }

    #[test]
    fn https_port_syslog_and_remote_syslog_flags_are_ignored_with_a_config_file() {
        let flags = ["-ms", "8443", "-s", "-r", "udp://localhost:514"];
        let o = with_file(&flags, "port: 5000");
        assert_eq!(o.https_port, None);
        assert!(!o.syslog);
        assert_eq!(o.remote_syslog, None);
        // The file's own values stay.
        let o = with_file(&flags, "https_port: 9443\nsyslog: true");
        assert_eq!(o.https_port, Some(9443));
        assert!(o.syslog);
        // Without a file they apply.
        let o = run(&flags);
        assert_eq!(o.https_port, Some(8443));
        assert!(o.syslog);
        assert_eq!(o.remote_syslog.as_deref(), Some("udp://localhost:514"));
        assert_eq!(run(&["-ms=9000"]).https_port, Some(9000));
        assert_eq!(run(&["--https_port", "9001"]).https_port, Some(9001));
    }

    const CLUSTER_CONF: &str = "cluster {\n  listen: 127.0.0.1:6222\n  \
                                authorization { user: fu, password: fp, timeout: 2 }\n  \
                                routes: [nats-route://127.0.0.1:6223, nats-route://127.0.0.1:6224]\n  \
                                no_advertise: true\n  connect_retries: 4\n}";

    #[test]
    fn cluster_from_the_file() {
        let c = with_file(&[], CLUSTER_CONF).cluster.unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 6222));
        assert_eq!(
            (c.user.as_deref(), c.pass.as_deref()),
            (Some("fu"), Some("fp"))
        );
        assert_eq!(c.auth_timeout, Duration::from_secs(2));
        assert_eq!(c.routes.len(), 2);
        assert!(c.no_advertise);
        assert_eq!(c.connect_retries, 4);
    }

    #[test]
    fn cluster_flag_replaces_address_and_credentials_and_keeps_the_rest() {
        let c = with_file(&["--cluster", "nats-route://127.0.0.1:7222"], CLUSTER_CONF)
            .cluster
            .unwrap();
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 7222));
        // No user info in the URL clears the file's (gnatsd's configureClusterOpts).
        assert_eq!((c.user, c.pass), (None, None));
        assert_eq!(c.routes.len(), 2);
        assert!(c.no_advertise);
        assert_eq!(c.connect_retries, 4);
        assert_eq!(c.auth_timeout, Duration::from_secs(2));
        let c = with_file(
            &["-cluster", "nats-route://cu:cp@127.0.0.1:7222"],
            CLUSTER_CONF,
        )
        .cluster
        .unwrap();
        assert_eq!(
            (c.user.as_deref(), c.pass.as_deref()),
            (Some("cu"), Some("cp"))
        );
        assert_eq!(
            merged(
                &["--cluster", "nats-route://cu@127.0.0.1:7222"],
                CLUSTER_CONF
            )
            .unwrap_err(),
            "Expected cluster password to be set."
        );
    }

    #[test]
    fn routes_flag_replaces_the_files_routes_entirely() {
        let c = with_file(&["--routes", "nats-route://127.0.0.1:7001"], CLUSTER_CONF)
            .cluster
            .unwrap();
        assert_eq!(
            c.routes,
            [RouteUrl::parse("nats-route://127.0.0.1:7001").unwrap()]
        );
        assert_eq!(c.port, 6222);
        // An empty --routes changes nothing, as in gnatsd.
        let c = with_file(&["--routes", ""], CLUSTER_CONF).cluster.unwrap();
        assert_eq!(c.routes.len(), 2);
        // No cluster anywhere: gnatsd's error.
        assert_eq!(
            merged(&["--routes", "nats-route://127.0.0.1:7001"], "port: 1").unwrap_err(),
            "Solicited routes require cluster capabilities, e.g. --cluster."
        );
    }

    #[test]
    fn no_advertise_and_connect_retries_flags_win() {
        let c = with_file(
            &["--no_advertise=false", "--connect_retries", "9"],
            CLUSTER_CONF,
        )
        .cluster
        .unwrap();
        assert!(!c.no_advertise);
        assert_eq!(c.connect_retries, 9);
        let c = with_file(&["-no_advertise"], "cluster { port: 6222 }")
            .cluster
            .unwrap();
        assert!(c.no_advertise);
    }

    #[test]
    fn a_cluster_block_without_a_port_needs_the_cluster_flag() {
        let conf = "cluster {\n  authorization { user: fu, password: fp }\n  \
                    routes: [nats-route://127.0.0.1:6223]\n}";
        let (o, warnings) = merged(&[], conf).unwrap();
        assert!(o.cluster.is_none());
        assert_eq!(
            warnings,
            ["gnatsd.conf:1:1: cluster has no port (`listen` or `port`): routing is off"]
        );
        let (o, warnings) = merged(&["--cluster", "nats-route://127.0.0.1:7222"], conf).unwrap();
        assert!(warnings.is_empty());
        let c = o.cluster.unwrap();
        assert_eq!((c.port, c.routes.len()), (7222, 1));
        assert_eq!(c.user, None);
    }

    #[test]
    fn config_flag_reads_the_file() {
        let dir = std::env::temp_dir().join(format!("ringnats-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gnatsd.conf");
        std::fs::write(&path, "port: 5001\ninclude auth.conf\nbogus: 1\n").unwrap();
        std::fs::write(dir.join("auth.conf"), "authorization { token: t }\n").unwrap();
        let path = path.to_str().unwrap();
        for flag in [
            vec!["-c", path],
            vec!["-config", path],
            vec!["--config", path],
        ] {
            let o = run(&flag);
            assert_eq!((o.port, o.token.as_deref()), (5001, Some("t")));
        }
        let argv = ["ringnats", "-c", path].map(String::from);
        let Command::Run { warnings, .. } = parse_args(argv).unwrap() else {
            panic!("expected run")
        };
        assert_eq!(
            warnings[0].to_string(),
            format!("{path}:3:1: unknown field \"bogus\"")
        );
        std::fs::write(dir.join("bad.conf"), "port: 5001\nmax_payload: [1]\n").unwrap();
        let bad = dir.join("bad.conf");
        let argv = [
            "ringnats".into(),
            "-c".into(),
            bad.to_string_lossy().into_owned(),
        ];
        let err = parse_args(argv).err().unwrap();
        assert!(matches!(err, ArgsError::Config(_)));
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2:14: key \"max_payload\": expected a size, got array",
                bad.display()
            )
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_config_file_is_reported_as_gnatsd_does() {
        let argv = ["ringnats", "-c", "/nonexistent/gnatsd.conf"].map(String::from);
        let err = parse_args(argv).err().unwrap();
        assert_eq!(
            err.to_string(),
            "error opening config file: open /nonexistent/gnatsd.conf: no such file or directory"
        );
        // -v is decided before the file is read.
        let argv = ["ringnats", "-v", "-c", "/nonexistent/gnatsd.conf"].map(String::from);
        assert!(matches!(parse_args(argv).unwrap(), Command::Version));
        assert_eq!(
            go_io_reason("Permission denied (os error 13)"),
            "permission denied"
        );
        assert_eq!(go_io_reason("odd"), "odd");
    }
}
