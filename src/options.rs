//! Command-line options in gnatsd 1.0's spelling.
//!
//! gnatsd uses Go's `flag` package, where `-port` and `--port` are the same flag and
//! booleans take `-T=false`. clap wants `--port`, so [`normalize_args`] rewrites gnatsd's
//! single-dash long forms before clap sees them. This module only parses; it opens nothing.

use clap::{ArgAction, Parser};
use std::path::PathBuf;
use std::time::Duration;

/// gnatsd's defaults (`server/const.go`), plus the 2.x limits modern clients expect.
pub const DEFAULT_PORT: u16 = 4222;
pub const DEFAULT_HOST: &str = "0.0.0.0";
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
pub const DEFAULT_MAX_CONTROL_LINE: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 64 * 1024;
pub const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;

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
    /// HTTP port for monitoring (reserved: not served yet)
    #[arg(short = 'm', long = "http_port")]
    pub http_port: Option<i32>,
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
    /// Number of io_uring reactor threads (default: available cores)
    #[arg(long = "workers")]
    pub workers: Option<usize>,
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
    /// Monitoring port: accepted, not served yet.
    pub http_port: Option<i32>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_connections: usize,
    pub max_pending: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub write_deadline: Duration,
    pub auth_timeout: Duration,
    pub workers: usize,
    /// Routing: `None` when no cluster port is configured.
    pub cluster: Option<ClusterOptions>,
}

/// The `cluster` settings (`--cluster`, `--routes`, ... or the config file's `cluster {}`).
#[derive(Debug, Clone)]
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
    /// The cluster name 2.x routes carry (`--cluster_name`); `None`: each 2.x route takes
    /// its peer's.
    pub name: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            host: DEFAULT_HOST.to_string(),
            port: 0,
            user: None,
            pass: None,
            auth_timeout: Duration::from_secs(1),
            routes: Vec::new(),
            no_advertise: false,
            connect_retries: 0,
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
        let u = url::Url::parse(text).map_err(|e| format!("invalid route URL {text:?}: {e}"))?;
        let host = u
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("invalid route URL {text:?}: no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = u
            .port()
            .ok_or_else(|| format!("invalid route URL {text:?}: no port"))?;
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
            user: None,
            pass: None,
            token: None,
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending: DEFAULT_MAX_PENDING,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(2),
            auth_timeout: Duration::from_secs(1),
            workers: default_workers(),
            cluster: None,
        }
    }
}

impl Options {
    pub fn auth_required(&self) -> bool {
        self.user.is_some() || self.token.is_some()
    }
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// What `main` should do after parsing.
pub enum Command {
    Run(Box<Options>),
    Version,
}

/// gnatsd long flags that Go accepts with one dash. Rewritten to `--name` for clap.
const LONG_FLAGS: &[&str] = &[
    "addr",
    "net",
    "port",
    "http_port",
    "pid",
    "log",
    "logtime",
    "debug",
    "trace",
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
    "cluster",
    "cluster_listen",
    "routes",
    "cluster_name",
    "no_advertise",
    "connect_retries",
    "version",
    "help",
];

/// Rewrites `-port 4222` / `-port=4222` to `--port ...`, leaving short flags alone.
pub fn normalize_args<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .map(|a| {
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
    pub fn into_command(self) -> Result<Command, String> {
        if self.version {
            return Ok(Command::Version);
        }
        if let Some(cmd) = &self.command {
            match cmd.to_ascii_lowercase().as_str() {
                "version" => return Ok(Command::Version),
                _ => return Err(format!("Unrecognized command: \"{cmd}\"")),
            }
        }
        let port = match self.port {
            -1 => 0,
            p if (0..=65535).contains(&p) => p as u16,
            p => return Err(format!("invalid port: {p}")),
        };
        if self.max_payload == 0 {
            return Err("max_payload must be greater than 0".into());
        }
        if self.max_control_line < 16 {
            return Err("max_control_line must be at least 16".into());
        }
        if self.pass.is_some() && self.user.is_none() {
            return Err("--pass requires --user".into());
        }
        let workers = match self.workers {
            Some(0) => return Err("--workers must be at least 1".into()),
            Some(n) => n,
            None => default_workers(),
        };
        let mut cluster = cluster_options(
            self.cluster.as_deref(),
            self.routes.as_deref(),
            self.no_advertise,
            self.connect_retries,
        )?;
        if let Some(c) = cluster.as_mut() {
            c.name = self.cluster_name.filter(|n| !n.is_empty());
        }
        Ok(Command::Run(Box::new(Options {
            host: self.addr,
            port,
            debug: self.debug,
            trace: self.trace,
            logtime: self.logtime,
            log_file: self.log_file,
            pid_file: self.pid_file,
            http_port: self.http_port,
            user: self.user,
            pass: self.pass,
            token: self.auth,
            max_payload: self.max_payload,
            max_control_line: self.max_control_line,
            max_connections: self.max_connections,
            max_pending: self.max_pending,
            ping_interval: secs(self.ping_interval_secs, "ping_interval")?,
            ping_max: self.ping_max,
            write_deadline: secs(self.write_deadline_secs, "write_deadline")?,
            auth_timeout: secs(self.auth_timeout_secs, "auth_timeout")?,
            workers,
            cluster,
        })))
    }
}

/// Builds the cluster settings from `--cluster`, `--routes`, `--no_advertise` and
/// `--connect_retries`, with gnatsd 1.0's error texts.
fn cluster_options(
    listen: Option<&str>,
    routes: Option<&str>,
    no_advertise: Option<bool>,
    connect_retries: Option<u32>,
) -> Result<Option<ClusterOptions>, String> {
    let Some(listen) = listen else {
        if routes.is_some_and(|r| !r.trim().is_empty()) {
            return Err("Solicited routes require cluster capabilities, e.g. --cluster.".into());
        }
        return Ok(None);
    };
    let url = RouteUrl::parse(listen)?;
    if url.user.is_some() && url.pass.is_none() {
        return Err("Expected cluster password to be set.".into());
    }
    let routes = routes
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(RouteUrl::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(ClusterOptions {
        host: url.host,
        port: url.port,
        user: url.user,
        pass: url.pass,
        routes,
        no_advertise: no_advertise.unwrap_or(false),
        connect_retries: connect_retries.unwrap_or(0),
        ..ClusterOptions::default()
    }))
}

/// Parses a full argv (program name first).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, clap::Error> {
    let cli = Cli::try_parse_from(normalize_args(args))?;
    cli.into_command()
        .map_err(|msg| clap::Error::raw(clap::error::ErrorKind::ValueValidation, msg + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        let argv = std::iter::once("ringnats")
            .chain(args.iter().copied())
            .map(String::from);
        match parse_args(argv).unwrap() {
            Command::Run(o) => *o,
            Command::Version => panic!("expected run"),
        }
    }

    #[test]
    fn defaults_match_gnatsd() {
        let o = run(&[]);
        assert_eq!(o.host, "0.0.0.0");
        assert_eq!(o.port, 4222);
        assert_eq!(o.max_payload, 1048576);
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
}
