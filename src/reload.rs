//! Config reload (SIGHUP, spec §4.7): read the config file again, merge the original
//! command-line flags over it exactly as at start-up, compare with the options in force,
//! and either apply the whole change or none of it.
//!
//! [`diff`] is the sans-IO part: two `Options` in, a [`Plan`] (what changed, the log lines)
//! or the first [`NotReloadable`] field out. [`Reloader::reload`] does the rest: it builds
//! the new TLS configurations (a bad certificate rejects the reload), swaps the reloadable
//! options ([`crate::shared::Live`]) in one store, updates the cluster, and mails every
//! reactor a [`Mail::Reload`]; each reactor then re-checks its own connections. It runs on
//! the thread that takes the signal, never on a reactor, and a failed reload leaves the
//! server running with its old options.

use crate::mailbox::{Mail, ReactorHandle};
use crate::options::{parse_args, ArgsError, ClusterOptions, Command, Options};
use crate::shared::{Live, Shared};
use crate::tls::{ClientTls, RouteTls};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// gnatsd 1.0's answer to a reload without a config file.
pub const NO_CONFIG_FILE: &str =
    "Can only reload config when a file is provided using -c or --config";

/// A changed option that only a restart can apply. `Display` is gnatsd 1.0's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReloadable {
    /// gnatsd's name for it (its Go field name, or `cluster host|port`).
    pub field: &'static str,
    pub old: String,
    pub new: String,
}

impl std::fmt::Display for NotReloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Config reload not supported for {}: old={}, new={}",
            self.field, self.old, self.new
        )
    }
}

/// What a reload changes, decided before anything is applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// One entry per applied change, as logged after `Reloaded: ` (gnatsd's wording).
    pub changes: Vec<String>,
    /// debug, trace, logtime, log_file, syslog or remote_syslog changed.
    pub log: bool,
    /// Client authorization changed (users, permissions, token, single user).
    pub client_auth: bool,
    pub client_tls: bool,
    /// Any reloadable cluster option changed.
    pub cluster: bool,
    pub cluster_auth: bool,
    pub cluster_tls: bool,
    pub max_connections: bool,
    pub pid_file: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Why a reload did not happen. `Display` is what follows
/// `Failed to reload server configuration: ` in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadError {
    NoConfigFile,
    /// The file (or a flag over it) is invalid: the message names file, line and key.
    Config(String),
    NotReloadable(NotReloadable),
    /// A new TLS certificate, key or CA file cannot be used.
    Tls(String),
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadError::NoConfigFile => f.write_str(NO_CONFIG_FILE),
            ReloadError::Config(m) | ReloadError::Tls(m) => f.write_str(m),
            ReloadError::NotReloadable(n) => write!(f, "{n}"),
        }
    }
}

/// A duration as Go prints it (`2s`, `2m0s`, `1.5s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let ms = d.as_secs_f64() * 1000.0;
        return format!("{}ms", trim_float(ms));
    }
    let total = d.as_secs();
    let (h, m) = (total / 3600, (total % 3600) / 60);
    let s = (total % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
    let s = trim_float(s);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

fn trim_float(v: f64) -> String {
    let t = format!("{v:.9}");
    let t = t.trim_end_matches('0').trim_end_matches('.');
    t.to_string()
}

fn opt_text<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|v| v.to_string()).unwrap_or_default()
}

fn path_text(v: &Option<PathBuf>) -> String {
    v.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Compares the options in force with freshly loaded ones. Any change to an option only a
/// restart can apply rejects the whole reload (the first such field is named, in gnatsd's
/// order: the server's own fields, then the cluster's).
pub fn diff(old: &Options, new: &Options) -> Result<Plan, NotReloadable> {
    fn fixed<T: PartialEq + std::fmt::Display>(
        field: &'static str,
        old: T,
        new: T,
    ) -> Result<(), NotReloadable> {
        if old == new {
            return Ok(());
        }
        Err(NotReloadable {
            field,
            old: old.to_string(),
            new: new.to_string(),
        })
    }
    fixed("Host", &old.host, &new.host)?;
    fixed("Port", old.port, new.port)?;
    fixed(
        "HTTPHost",
        opt_text(&old.http_host),
        opt_text(&new.http_host),
    )?;
    fixed(
        "HTTPPort",
        opt_text(&old.http_port),
        opt_text(&new.http_port),
    )?;
    fixed(
        "HTTPSPort",
        opt_text(&old.https_port),
        opt_text(&new.https_port),
    )?;
    fixed(
        "ProfPort",
        opt_text(&old.prof_port),
        opt_text(&new.prof_port),
    )?;
    fixed("MaxPending", old.max_pending, new.max_pending)?;
    fixed("Workers", old.workers, new.workers)?;
    fixed(
        "LameDuckDuration",
        go_duration(old.lame_duck_duration),
        go_duration(new.lame_duck_duration),
    )?;
    fixed(
        "LameDuckGracePeriod",
        go_duration(old.lame_duck_grace_period),
        go_duration(new.lame_duck_grace_period),
    )?;
    fixed(
        "ServerName",
        opt_text(&old.server_name),
        opt_text(&new.server_name),
    )?;
    let none = ClusterOptions {
        host: String::new(),
        port: 0,
        ..ClusterOptions::default()
    };
    let (oc, nc) = (
        old.cluster.as_ref().unwrap_or(&none),
        new.cluster.as_ref().unwrap_or(&none),
    );
    fixed("cluster host", &oc.host, &nc.host)?;
    fixed("cluster port", oc.port, nc.port)?;
    fixed("cluster name", opt_text(&oc.name), opt_text(&nc.name))?;

    let mut p = Plan::default();
    let change = |p: &mut Plan, what: String| p.changes.push(what);
    if old.trace != new.trace {
        change(&mut p, format!("trace = {}", new.trace));
        p.log = true;
    }
    if old.debug != new.debug {
        change(&mut p, format!("debug = {}", new.debug));
        p.log = true;
    }
    if old.logtime != new.logtime {
        change(&mut p, format!("logtime = {}", new.logtime));
        p.log = true;
    }
    if old.log_file != new.log_file {
        change(&mut p, format!("log_file = {}", path_text(&new.log_file)));
        p.log = true;
    }
    if old.syslog != new.syslog {
        change(&mut p, format!("syslog = {}", new.syslog));
        p.log = true;
    }
    if old.remote_syslog != new.remote_syslog {
        change(
            &mut p,
            format!("remote_syslog = {}", opt_text(&new.remote_syslog)),
        );
        p.log = true;
    }
    if old.tls != new.tls {
        let state = if new.tls.is_some() {
            "enabled"
        } else {
            "disabled"
        };
        change(&mut p, format!("tls = {state}"));
        p.client_tls = true;
    }
    if old.user != new.user {
        change(&mut p, "authorization username".into());
        p.client_auth = true;
    }
    if old.pass != new.pass {
        change(&mut p, "authorization password".into());
        p.client_auth = true;
    }
    if old.token != new.token {
        change(&mut p, "authorization token".into());
        p.client_auth = true;
    }
    if old.users != new.users {
        change(&mut p, "authorization users".into());
        p.client_auth = true;
    }
    if old.default_permissions != new.default_permissions {
        change(&mut p, "authorization default_permissions".into());
        p.client_auth = true;
    }
    if old.auth_timeout != new.auth_timeout {
        change(
            &mut p,
            format!(
                "authorization timeout = {}",
                trim_float(new.auth_timeout.as_secs_f64())
            ),
        );
    }
    if old.cluster != new.cluster {
        p.cluster_auth = oc.user != nc.user || oc.pass != nc.pass;
        p.cluster_tls = oc.tls != nc.tls;
        let routes = oc.routes != nc.routes;
        let rest = ClusterOptions {
            routes: Vec::new(),
            ..oc.clone()
        } != ClusterOptions {
            routes: Vec::new(),
            ..nc.clone()
        };
        if rest {
            change(&mut p, "cluster".into());
        }
        if routes {
            change(&mut p, "cluster routes".into());
        }
        p.cluster = true;
    }
    if old.max_connections != new.max_connections {
        change(&mut p, format!("max_connections = {}", new.max_connections));
        p.max_connections = true;
    }
    if old.pid_file != new.pid_file {
        change(&mut p, format!("pid_file = {}", path_text(&new.pid_file)));
        p.pid_file = true;
    }
    if old.max_control_line != new.max_control_line {
        change(
            &mut p,
            format!("max_control_line = {}", new.max_control_line),
        );
    }
    if old.max_payload != new.max_payload {
        change(&mut p, format!("max_payload = {}", new.max_payload));
    }
    if old.ping_interval != new.ping_interval {
        change(
            &mut p,
            format!("ping_interval = {}", go_duration(new.ping_interval)),
        );
    }
    if old.ping_max != new.ping_max {
        change(&mut p, format!("ping_max = {}", new.ping_max));
    }
    if old.write_deadline != new.write_deadline {
        change(
            &mut p,
            format!("write_deadline = {}", go_duration(new.write_deadline)),
        );
    }
    Ok(p)
}

/// Reloads on demand: keeps the original command line (the flags keep winning over the
/// file) and the options of the last successful load.
pub struct Reloader {
    argv: Vec<String>,
    config: Option<PathBuf>,
    current: Options,
}

impl Reloader {
    /// `argv` is the full command line the server started with; `opts` what it produced
    /// (before start-up replaced random ports by bound ones).
    pub fn new(argv: Vec<String>, opts: Options) -> Self {
        use clap::Parser;
        let config = crate::options::Cli::try_parse_from(crate::options::normalize_args(
            argv.iter().cloned(),
        ))
        .ok()
        .and_then(|c| c.config);
        Reloader {
            argv,
            config,
            current: opts,
        }
    }

    /// The options of the last successful load.
    pub fn current(&self) -> &Options {
        &self.current
    }

    /// Reloads and logs the outcome as gnatsd does: each change, then
    /// `Reloaded server configuration`, or the reason nothing was applied.
    pub fn reload_and_log(&mut self, server: &Shared, handles: &[ReactorHandle]) {
        match self.reload(server, handles) {
            Ok(plan) => {
                for c in &plan.changes {
                    crate::info!("Reloaded: {c}");
                }
                crate::info!("Reloaded server configuration");
            }
            Err(e) => crate::error!("Failed to reload server configuration: {e}"),
        }
    }

    /// Loads the file again and applies the change as a whole, or nothing of it.
    pub fn reload(
        &mut self,
        server: &Shared,
        handles: &[ReactorHandle],
    ) -> Result<Plan, ReloadError> {
        if self.config.is_none() {
            return Err(ReloadError::NoConfigFile);
        }
        let (new, warnings) = match parse_args(self.argv.iter().cloned()) {
            Ok(Command::Run { opts, warnings }) => (*opts, warnings),
            Ok(Command::Version | Command::Signal { .. }) => {
                return Err(ReloadError::Config("unexpected command".into()))
            }
            Err(ArgsError::Config(m)) => return Err(ReloadError::Config(m)),
            Err(ArgsError::Clap(e)) => {
                return Err(ReloadError::Config(e.to_string().trim_end().to_string()))
            }
        };
        let plan = diff(&self.current, &new).map_err(ReloadError::NotReloadable)?;
        for w in &warnings {
            crate::info!("Config warning: {w}");
        }
        let old = server.live();
        // Everything that can fail is built before anything is applied.
        let tls = if plan.client_tls {
            new.tls
                .as_ref()
                .map(ClientTls::new)
                .transpose()
                .map_err(ReloadError::Tls)?
        } else {
            old.tls.clone()
        };
        let route_tls = if plan.cluster_tls {
            new.cluster
                .as_ref()
                .and_then(|c| c.tls.as_ref())
                .map(RouteTls::new)
                .transpose()
                .map_err(ReloadError::Tls)?
        } else {
            old.route_tls.clone()
        };
        if plan.log {
            if let Err(e) = crate::log::reconfigure(&crate::log::LogSettings::from_options(&new)) {
                crate::error!("Reloading the log settings: {e}");
            }
        }
        let mut live_opts = new.clone();
        // The cluster keeps the port it bound (the option may say "random").
        if let (Some(c), Some(bound)) = (live_opts.cluster.as_mut(), old.opts.cluster.as_ref()) {
            c.port = bound.port;
        }
        // What reactors may still close for an earlier reload is void now.
        let excess = if plan.max_connections {
            server
                .conn_count
                .load(Ordering::Relaxed)
                .saturating_sub(new.max_connections)
        } else {
            0
        };
        server.conn_excess.store(excess, Ordering::Relaxed);
        let live = Live {
            conn_cfg: crate::conn::ConnConfig::from_options(&live_opts),
            tls,
            route_tls,
            loaded_wall: SystemTime::now(),
            auth_gen: old.auth_gen + u64::from(plan.client_auth || plan.cluster_auth),
            opts: live_opts,
        };
        let cluster_opts = live.opts.cluster.clone();
        server.live.store(Arc::new(live));
        if plan.cluster {
            if let (Some(cluster), Some(c)) = (server.cluster.as_ref(), cluster_opts) {
                for cid in cluster.reload(c, Instant::now()) {
                    if let Some(at) = server.find_conn(cid) {
                        if let Some(h) = handles.get(at.reactor) {
                            h.post(&mut vec![Mail::Close(at.token)]);
                        }
                    }
                }
            }
        }
        if plan.pid_file {
            if let Some(path) = &new.pid_file {
                if let Err(e) = std::fs::write(path, std::process::id().to_string()) {
                    crate::error!("Could not write pidfile {}: {e}", path.display());
                }
            }
        }
        for h in handles {
            h.post(&mut vec![Mail::Reload]);
        }
        self.current = new;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::RouteUrl;

    fn base() -> Options {
        Options {
            port: 45304,
            ..Options::default()
        }
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let p = diff(&base(), &base()).unwrap();
        assert!(p.is_empty());
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn port_change_is_rejected_with_gnatsd_text() {
        let new = Options {
            port: 45305,
            max_payload: 1000,
            ..base()
        };
        let e = diff(&base(), &new).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Config reload not supported for Port: old=45304, new=45305"
        );
        assert_eq!(
            format!("Failed to reload server configuration: {}", ReloadError::NotReloadable(e)),
            "Failed to reload server configuration: Config reload not supported for Port: old=45304, new=45305"
        );
    }

    #[test]
    fn host_and_monitor_ports_are_not_reloadable() {
        let e = diff(
            &base(),
            &Options {
                host: "127.0.0.1".into(),
                ..base()
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "Host");
        let e = diff(
            &base(),
            &Options {
                http_port: Some(8222),
                ..base()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "Config reload not supported for HTTPPort: old=, new=8222"
        );
    }

    #[test]
    fn cluster_host_and_port_are_not_reloadable() {
        let c = ClusterOptions {
            host: "127.0.0.1".into(),
            port: 6222,
            ..ClusterOptions::default()
        };
        let old = Options {
            cluster: Some(c.clone()),
            ..base()
        };
        let new = Options {
            cluster: Some(ClusterOptions {
                port: 6223,
                ..c.clone()
            }),
            ..base()
        };
        assert_eq!(
            diff(&old, &new).unwrap_err().to_string(),
            "Config reload not supported for cluster port: old=6222, new=6223"
        );
        let new = Options {
            cluster: Some(ClusterOptions {
                host: "0.0.0.0".into(),
                ..c
            }),
            ..base()
        };
        assert_eq!(
            diff(&old, &new).unwrap_err().to_string(),
            "Config reload not supported for cluster host: old=127.0.0.1, new=0.0.0.0"
        );
    }

    #[test]
    fn reloadable_changes_are_listed_in_gnatsd_words() {
        let new = Options {
            debug: true,
            max_payload: 1000,
            max_connections: 10,
            ping_interval: Duration::from_secs(120),
            write_deadline: Duration::from_millis(1500),
            ping_max: 5,
            max_control_line: 512,
            ..base()
        };
        let old = Options {
            ping_interval: Duration::from_secs(60),
            ..base()
        };
        let p = diff(&old, &new).unwrap();
        assert_eq!(
            p.changes,
            [
                "debug = true",
                "max_connections = 10",
                "max_control_line = 512",
                "max_payload = 1000",
                "ping_interval = 2m0s",
                "ping_max = 5",
                "write_deadline = 1.5s",
            ]
        );
        assert!(p.log && p.max_connections);
        assert!(!p.client_auth && !p.cluster && !p.client_tls);
    }

    #[test]
    fn auth_changes_ask_for_a_recheck() {
        let new = Options {
            user: Some("derek".into()),
            pass: Some("x".into()),
            ..base()
        };
        let p = diff(&base(), &new).unwrap();
        assert!(p.client_auth);
        assert_eq!(
            p.changes,
            ["authorization username", "authorization password"]
        );
        // The password itself is never part of the log lines.
        assert!(p.changes.iter().all(|c| !c.contains('x')));
        let new = Options {
            default_permissions: Some(crate::auth::Permissions::default()),
            ..base()
        };
        assert!(diff(&base(), &new).unwrap().client_auth);
    }

    #[test]
    fn route_list_and_cluster_auth_changes() {
        let c = ClusterOptions {
            host: "127.0.0.1".into(),
            port: 6222,
            routes: vec![RouteUrl::parse("nats-route://127.0.0.1:6223").unwrap()],
            ..ClusterOptions::default()
        };
        let old = Options {
            cluster: Some(c.clone()),
            ..base()
        };
        let new = Options {
            cluster: Some(ClusterOptions {
                routes: vec![RouteUrl::parse("nats-route://127.0.0.1:6224").unwrap()],
                ..c.clone()
            }),
            ..base()
        };
        let p = diff(&old, &new).unwrap();
        assert_eq!(p.changes, ["cluster routes"]);
        assert!(p.cluster && !p.cluster_auth);
        let new = Options {
            cluster: Some(ClusterOptions {
                user: Some("ruser".into()),
                pass: Some("rpass".into()),
                no_advertise: true,
                ..c
            }),
            ..base()
        };
        let p = diff(&old, &new).unwrap();
        assert_eq!(p.changes, ["cluster"]);
        assert!(p.cluster && p.cluster_auth && !p.cluster_tls);
    }

    #[test]
    fn adding_a_cluster_is_a_port_change() {
        let new = Options {
            cluster: Some(ClusterOptions {
                host: "0.0.0.0".into(),
                port: 6222,
                ..ClusterOptions::default()
            }),
            ..base()
        };
        assert_eq!(
            diff(&base(), &new).unwrap_err().to_string(),
            "Config reload not supported for cluster host: old=, new=0.0.0.0"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
        assert_eq!(go_duration(Duration::from_secs(3725)), "1h2m5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn reload_without_config_file_says_so() {
        let mut r = Reloader::new(vec!["ringnats".into(), "-p".into(), "4333".into()], base());
        let shared = Shared::new(base(), "ID".into(), 45304, None);
        assert_eq!(
            r.reload(&shared, &[]).unwrap_err().to_string(),
            NO_CONFIG_FILE
        );
    }

    #[test]
    fn reload_applies_a_file_change_and_keeps_flags_winning() {
        let dir = std::env::temp_dir().join(format!("ringnats-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.conf");
        std::fs::write(&file, "port: 4555\nmax_payload: 2000\ndebug: false\n").unwrap();
        let argv: Vec<String> = ["ringnats", "-c", file.to_str().unwrap(), "-D"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Command::Run { opts, .. } = parse_args(argv.clone()).unwrap() else {
            panic!("expected run");
        };
        assert!(opts.debug);
        let shared = Shared::new((*opts).clone(), "ID".into(), 4555, None);
        let mut r = Reloader::new(argv, *opts);
        std::fs::write(&file, "port: 4555\nmax_payload: 1000\ndebug: false\n").unwrap();
        let plan = r.reload(&shared, &[]).unwrap();
        // -D still wins over the file's `debug: false`.
        assert_eq!(plan.changes, ["max_payload = 1000"]);
        assert_eq!(shared.live().opts.max_payload, 1000);
        // A port change rejects everything, including the payload change beside it.
        std::fs::write(&file, "port: 4556\nmax_payload: 500\n").unwrap();
        let e = r.reload(&shared, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Config reload not supported for Port: old=4555, new=4556"
        );
        assert_eq!(shared.live().opts.max_payload, 1000);
        // A parse error keeps the old options.
        std::fs::write(&file, "port: 4555\nmax_payload: \"abc\"\n").unwrap();
        let e = r.reload(&shared, &[]).unwrap_err();
        assert!(matches!(e, ReloadError::Config(_)), "{e:?}");
        assert!(e.to_string().contains("a.conf:2"), "{e}");
        assert_eq!(shared.live().opts.max_payload, 1000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
