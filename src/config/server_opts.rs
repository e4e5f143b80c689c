//! What a gnatsd config file means: the tree of [`super::parse`] turned into server [`Options`].
//!
//! This is the one place that knows the 1.0 keys (`server/opts.go` `ProcessConfigFile`, spec
//! §4.2). It does no I/O and logs nothing: it returns the options, the `cluster {}` block on
//! its own (the command line may still give it a port, see [`FileCluster`]) and [`Warning`]s
//! for the caller to log. Merging the command line over the file is `options.rs`'s job.
//!
//! # Differences from gnatsd 1.0, all on the side of saying more
//! - A wrong type or an impossible value (`port: "abc"`, `port: 70000`, `max_payload: -1`) is a
//!   positioned [`Error`]; 1.0 panics on a wrong type.
//! - Keys are applied in file order, so of two keys that set the same thing (`listen` and
//!   `port`) the later one wins. 1.0 walks a Go map, whose order is random from run to run.
//! - Unknown keys are accepted, as in 1.0, but each one gives a warning (`unknown field "x"`),
//!   except keys used as `$variables` (2.x errors on them instead). The client `tls {}` block
//!   is checked as 1.0 does (an unknown key in it is an error), the cluster's too.
//! - 2.x spellings are accepted: duration strings (`"2s"`) for `ping_interval`,
//!   `write_deadline` and the authorization `timeout`, size strings (`"1MB"`) for the sizes.
//! - `authorization` with a password and no user is an error (1.0 silently turns
//!   authorization off).
//! - Permissions also take 2.x's `{ allow = [...], deny = [...] }` for each direction.
//!
//! As in 1.0, a zero means "the default" for `port`, `max_payload`, `max_control_line`,
//! `max_connections`, `ping_interval`, `ping_max`, `write_deadline` and the authorization
//! `timeout`; `port: -1` means a random port.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{Error, ErrorKind};
use super::{Entry, Map, Pos, Value, ValueKind};
use crate::auth::{Permissions, Rules, UserConfig};
use crate::options::{
    ClusterOptions, Options, RouteUrl, TlsOptions, DEFAULT_AUTH_TIMEOUT, DEFAULT_HOST,
    DEFAULT_LAME_DUCK_DURATION, DEFAULT_LAME_DUCK_GRACE_PERIOD, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONTROL_LINE, DEFAULT_MAX_PAYLOAD, DEFAULT_MAX_PENDING, DEFAULT_PING_INTERVAL,
    DEFAULT_PING_MAX, DEFAULT_PORT, DEFAULT_TLS_TIMEOUT, DEFAULT_WRITE_DEADLINE,
};
use crate::proto::subject::is_valid_subject;

/// The smallest `max_control_line` the parser can work with (as the command line requires).
pub const MIN_MAX_CONTROL_LINE: usize = 16;

/// Something in the file that is accepted but deserves a line in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

/// A config file, read.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Everything the file sets, [`Options::default`] for the rest. `cluster` is always `None`
    /// here: the block is in [`FileOptions::cluster`] until the command line is merged.
    pub options: Options,
    pub cluster: Option<FileCluster>,
    pub warnings: Vec<Warning>,
}

/// The `cluster {}` block. gnatsd routes only if the cluster has a port (from the block or from
/// `--cluster`), yet keeps the block's routes and authorization when `--cluster` supplies the
/// port, so the block is kept whole even without one.
#[derive(Debug, Clone)]
pub struct FileCluster {
    /// The block's settings; `options.port` means something only if `listens`.
    pub options: ClusterOptions,
    /// The block sets a port (`port` or `listen`) other than 0; `-1` (random) counts.
    pub listens: bool,
    /// Where the `cluster` key is.
    pub pos: Pos,
}

/// Maps a parsed config file to server options. The first wrong value is the error.
pub fn server_options(tree: &Map) -> Result<FileOptions, Error> {
    let mut fo = FileOptions {
        options: Options::default(),
        cluster: None,
        warnings: Vec::new(),
    };
    let o = &mut fo.options;
    for e in tree {
        match e.key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = listen(e)?;
                if let Some(host) = host {
                    o.host = host;
                }
                o.port = client_port(port);
            }
            "port" => o.port = client_port(port(e, &e.value)?),
            "server_name" => o.server_name = non_empty(string(e)?).map(str::to_owned),
            "host" | "net" => o.host = non_empty(string(e)?).unwrap_or(DEFAULT_HOST).to_owned(),
            "http" => {
                let (host, port) = listen(e)?;
                o.http_host = host;
                o.http_port = monitor_port(port);
            }
            "https" => {
                let (host, port) = listen(e)?;
                o.http_host = host;
                o.https_port = monitor_port(port);
            }
            "http_port" | "monitor_port" => o.http_port = monitor_port(port(e, &e.value)?),
            "https_port" => o.https_port = monitor_port(port(e, &e.value)?),
            "prof_port" => o.prof_port = monitor_port(port(e, &e.value)?).map(i32::from),
            "debug" => o.debug = boolean(e)?,
            "trace" => o.trace = boolean(e)?,
            "logtime" => o.logtime = boolean(e)?,
            "logfile" | "log_file" => o.log_file = non_empty(string(e)?).map(PathBuf::from),
            "pidfile" | "pid_file" => o.pid_file = non_empty(string(e)?).map(PathBuf::from),
            "syslog" => o.syslog = boolean(e)?,
            "remote_syslog" => o.remote_syslog = non_empty(string(e)?).map(str::to_owned),
            "max_payload" => o.max_payload = size(e)?.unwrap_or(DEFAULT_MAX_PAYLOAD),
            "max_control_line" => {
                let n = size(e)?.unwrap_or(DEFAULT_MAX_CONTROL_LINE);
                if n < MIN_MAX_CONTROL_LINE {
                    return Err(invalid(e, "a size of at least 16 bytes", n.to_string()));
                }
                o.max_control_line = n;
            }
            "max_connections" | "max_conn" => {
                o.max_connections = count(e)?.unwrap_or(DEFAULT_MAX_CONNECTIONS as u64) as usize;
            }
            "max_pending" => o.max_pending = size(e)?.unwrap_or(DEFAULT_MAX_PENDING),
            "ping_interval" => {
                o.ping_interval = duration(e)?.unwrap_or(DEFAULT_PING_INTERVAL);
            }
            "ping_max" => {
                let n = count(e)?.unwrap_or(DEFAULT_PING_MAX.into());
                o.ping_max = u32::try_from(n).map_err(|_| invalid(e, "a smaller count", n))?;
            }
            "write_deadline" => {
                // 1.0 takes a duration string; an integer still works, with this warning.
                if matches!(e.value.kind, ValueKind::Int(_) | ValueKind::Float(_)) {
                    fo.warnings.push(Warning {
                        pos: e.key_pos.clone(),
                        message: "write_deadline should be converted to a duration".into(),
                    });
                }
                o.write_deadline = duration(e)?.unwrap_or(DEFAULT_WRITE_DEADLINE);
            }
            // nats-server 2.x keys, in its duration syntax.
            "lame_duck_duration" => {
                o.lame_duck_duration = duration(e)?.unwrap_or(DEFAULT_LAME_DUCK_DURATION);
            }
            "lame_duck_grace_period" => {
                o.lame_duck_grace_period = duration(e)?.unwrap_or(DEFAULT_LAME_DUCK_GRACE_PERIOD);
            }
            "authorization" => {
                let mut auth = authorization(e, &mut fo.warnings)?;
                if auth.users {
                    if auth.user.is_some() {
                        return Err(rejected(
                            e,
                            "Can not have a single user/pass and a users array",
                        ));
                    }
                    if auth.token.is_some() {
                        return Err(rejected(e, "Can not have a token and a users array"));
                    }
                }
                if (auth.user.is_some() || auth.pass.is_some()) && auth.token.is_some() {
                    return Err(rejected(e, "Cannot have a user/pass and token"));
                }
                // With `users`, a lone password means nothing (the users array wins in 1.0);
                // it is usually a variable spelled `PASS`, which the key matching takes for
                // `pass`, as 1.0 does (the README's permissions example).
                if auth.users {
                    auth.pass = None;
                } else if auth.pass.is_some() && auth.user.is_none() {
                    return Err(rejected(e, "a password needs a user"));
                }
                o.user = auth.user;
                o.pass = auth.pass;
                o.token = auth.token;
                o.users = auth.user_list;
                o.default_permissions = auth.default_permissions;
                o.auth_timeout = auth.timeout;
            }
            "cluster" => fo.cluster = Some(cluster(e, &mut fo.warnings)?),
            "tls" => o.tls = Some(tls(e)?),
            _ => unknown(e, &mut fo.warnings),
        }
    }
    Ok(fo)
}

/// The `authorization {}` block (top level or cluster).
struct Authorization {
    user: Option<String>,
    pass: Option<String>,
    token: Option<String>,
    timeout: Duration,
    /// A `users` array was given.
    users: bool,
    user_list: Vec<UserConfig>,
    default_permissions: Option<Permissions>,
}

fn authorization(e: &Entry, warnings: &mut Vec<Warning>) -> Result<Authorization, Error> {
    let mut auth = Authorization {
        user: None,
        pass: None,
        token: None,
        timeout: DEFAULT_AUTH_TIMEOUT,
        users: false,
        user_list: Vec::new(),
        default_permissions: None,
    };
    for e in block(e)? {
        match e.key.to_ascii_lowercase().as_str() {
            // An empty string is no value, as in 1.0.
            "user" | "username" => auth.user = non_empty(string(e)?).map(str::to_owned),
            "pass" | "password" => auth.pass = non_empty(string(e)?).map(str::to_owned),
            "token" => auth.token = non_empty(string(e)?).map(str::to_owned),
            "timeout" => auth.timeout = duration(e)?.unwrap_or(DEFAULT_AUTH_TIMEOUT),
            "users" => {
                auth.user_list = list(e)?
                    .iter()
                    .map(|v| user_entry(e, v, warnings))
                    .collect::<Result<_, _>>()?;
                auth.users = true;
            }
            "default_permission" | "default_permissions" => {
                auth.default_permissions = Some(permissions(e, &e.value)?);
            }
            // Not a 1.0 key at this level: accepted and ignored, as before.
            "permissions" => {
                block(e)?;
            }
            _ => unknown(e, warnings),
        }
    }
    Ok(auth)
}

/// An error about value `v` of key `e`.
fn rejected_value(e: &Entry, v: &Value, reason: String) -> Error {
    Error::new(v.pos.clone(), ErrorKind::Rejected { reason }).with_key(&e.key)
}

/// One entry of `users = [...]`: `{user, password, permissions}`.
fn user_entry(e: &Entry, v: &Value, warnings: &mut Vec<Warning>) -> Result<UserConfig, Error> {
    let ValueKind::Map(m) = &v.kind else {
        let got = v.type_name();
        return Err(rejected_value(
            e,
            v,
            format!("Expected user entry to be a map/struct, got {got}"),
        ));
    };
    let (mut user, mut pass, mut perms) = (None, None, None);
    for f in m {
        match f.key.to_ascii_lowercase().as_str() {
            "user" | "username" => user = non_empty(string(f)?).map(str::to_owned),
            "pass" | "password" => pass = non_empty(string(f)?).map(str::to_owned),
            "permission" | "permissions" | "authorization" => {
                perms = Some(permissions(f, &f.value)?)
            }
            _ => unknown(f, warnings),
        }
    }
    match (user, pass) {
        (Some(user), Some(pass)) => Ok(UserConfig {
            user,
            pass,
            permissions: perms,
        }),
        _ => Err(rejected_value(
            e,
            v,
            "User entry requires a user and a password".into(),
        )),
    }
}

/// `{ publish = ..., subscribe = ... }`; each direction a subject, an array of subjects, or
/// (2.x) `{ allow = ..., deny = ... }`.
fn permissions(e: &Entry, v: &Value) -> Result<Permissions, Error> {
    let m = keyed(e, v.as_map())?;
    let mut p = Permissions::default();
    for f in m {
        match f.key.to_ascii_lowercase().as_str() {
            "publish" | "pub" => p.publish = Some(rules(f)?),
            "subscribe" | "sub" => p.subscribe = Some(rules(f)?),
            _ => {
                return Err(rejected(
                    f,
                    &format!("Unknown field {} parsing permissions", f.key),
                ))
            }
        }
    }
    Ok(p)
}

fn rules(e: &Entry) -> Result<Rules, Error> {
    match &e.value.kind {
        ValueKind::Map(m) => {
            let mut r = Rules::default();
            for f in m {
                match f.key.to_ascii_lowercase().as_str() {
                    "allow" => r.allow = Some(subjects(f, &f.value)?),
                    "deny" => r.deny = subjects(f, &f.value)?,
                    _ => {
                        return Err(rejected(
                            f,
                            &format!("Unknown field {} parsing permissions", f.key),
                        ))
                    }
                }
            }
            Ok(r)
        }
        _ => Ok(Rules {
            allow: Some(subjects(e, &e.value)?),
            deny: Vec::new(),
        }),
    }
}

/// A subject or an array of subjects, each valid (wildcards allowed).
fn subjects(e: &Entry, v: &Value) -> Result<Vec<String>, Error> {
    let one = |v: &Value| -> Result<String, Error> {
        let s = match &v.kind {
            ValueKind::String(s) => s,
            _ => {
                return Err(Error::new(
                    v.pos.clone(),
                    ErrorKind::WrongType {
                        expected: "a subject or an array of subjects",
                        got: v.type_name(),
                    },
                )
                .with_key(&e.key))
            }
        };
        if !is_valid_subject(s.as_bytes()) {
            return Err(rejected_value(
                e,
                v,
                format!("Subject {s:?} is not a valid subject"),
            ));
        }
        Ok(s.clone())
    };
    match &v.kind {
        ValueKind::Array(a) => a.iter().map(one).collect(),
        _ => Ok(vec![one(v)?]),
    }
}

/// The client `tls {}` block (1.0's `parseTLS`, with its texts). The files are read later
/// ([`crate::tls::server_config`]); cipher and curve names are checked here.
fn tls(e: &Entry) -> Result<TlsOptions, Error> {
    let mut t = TlsOptions::default();
    let tls_error = |e: &Entry, reason: String| {
        Error::new(e.value.pos.clone(), ErrorKind::Rejected { reason }).with_key(&e.key)
    };
    let names = |e: &Entry, what: &str| -> Result<Vec<String>, Error> {
        let items = list(e)?;
        if items.is_empty() {
            return Err(tls_error(
                e,
                format!("error parsing tls config, '{what}' cannot be empty"),
            ));
        }
        items
            .iter()
            .map(|v| keyed(e, v.as_str()).map(|s| s.trim().to_owned()))
            .collect()
    };
    for e in block(e)? {
        match e.key.to_ascii_lowercase().as_str() {
            k @ ("cert_file" | "key_file" | "ca_file") => {
                let ValueKind::String(path) = &e.value.kind else {
                    return Err(tls_error(
                        e,
                        format!("error parsing tls config, expected '{k}' to be filename"),
                    ));
                };
                let path = Some(PathBuf::from(path));
                match k {
                    "cert_file" => t.cert_file = path,
                    "key_file" => t.key_file = path,
                    _ => t.ca_file = path,
                }
            }
            "verify" => {
                let ValueKind::Bool(v) = e.value.kind else {
                    return Err(tls_error(
                        e,
                        "error parsing tls config, expected 'verify' to be a boolean".into(),
                    ));
                };
                t.verify = v;
            }
            "timeout" => t.timeout = duration(e)?.unwrap_or(DEFAULT_TLS_TIMEOUT),
            "cipher_suites" => {
                t.cipher_suites = names(e, "cipher_suites")?;
                for name in &t.cipher_suites {
                    crate::tls::cipher_suite(name).map_err(|why| tls_error(e, why))?;
                }
            }
            "curve_preferences" => {
                t.curve_preferences = names(e, "curve_preferences")?;
                for name in &t.curve_preferences {
                    crate::tls::curve(name).map_err(|why| tls_error(e, why))?;
                }
            }
            _ => {
                return Err(Error::new(
                    e.key_pos.clone(),
                    ErrorKind::Rejected {
                        reason: format!("error parsing tls config, unknown field [{:?}]", e.key),
                    },
                )
                .with_key(&e.key))
            }
        }
    }
    Ok(t)
}

fn cluster(e: &Entry, warnings: &mut Vec<Warning>) -> Result<FileCluster, Error> {
    let mut c = ClusterOptions::default();
    // gnatsd's "no port": the cluster does not listen and solicits nothing.
    let mut port_set: i64 = 0;
    for e in block(e)? {
        match e.key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = listen(e)?;
                if let Some(host) = host {
                    c.host = host;
                }
                port_set = port;
            }
            "port" => port_set = port(e, &e.value)?,
            "host" | "net" => c.host = non_empty(string(e)?).unwrap_or(DEFAULT_HOST).to_owned(),
            "authorization" => {
                let auth = authorization(e, warnings)?;
                if auth.users {
                    return Err(rejected(
                        e,
                        "Cluster authorization does not allow multiple users",
                    ));
                }
                if auth.token.is_some() {
                    warnings.push(Warning {
                        pos: e.key_pos.clone(),
                        message: "cluster authorization does not use a token: ignored".into(),
                    });
                }
                c.user = auth.user;
                c.pass = auth.pass;
                c.auth_timeout = auth.timeout;
            }
            "routes" => {
                c.routes = list(e)?
                    .iter()
                    .map(|v| {
                        let text = v.as_str().map_err(|err| err.with_key(&e.key))?;
                        RouteUrl::parse_reason(text).map_err(|why| {
                            Error::new(
                                v.pos.clone(),
                                ErrorKind::Rejected {
                                    reason: format!("error parsing route url [{text:?}]: {why}"),
                                },
                            )
                            .with_key(&e.key)
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "no_advertise" => c.no_advertise = boolean(e)?,
            // nats-server 2.x's cluster name, for routes of its dialect (docs/routes-2x.md).
            "name" => c.name = Some(string(e)?.to_string()).filter(|n| !n.is_empty()),
            "connect_retries" => {
                let n = count(e)?.unwrap_or(0);
                c.connect_retries =
                    u32::try_from(n).map_err(|_| invalid(e, "a smaller count", n))?;
            }
            // 1.0 always verifies route certificates, whatever `verify` says.
            "tls" => {
                c.tls = Some(TlsOptions {
                    verify: true,
                    ..tls(e)?
                })
            }
            _ => unknown(e, warnings),
        }
    }
    // -1 is "a random port", as for clients.
    c.port = u16::try_from(port_set.max(0)).unwrap_or(0);
    Ok(FileCluster {
        options: c,
        listens: port_set != 0,
        pos: e.key_pos.clone(),
    })
}

// ---- one value each ------------------------------------------------------------------------

fn unknown(e: &Entry, warnings: &mut Vec<Warning>) {
    if !e.used_as_variable {
        warnings.push(Warning {
            pos: e.key_pos.clone(),
            message: format!("unknown field {:?}", e.key),
        });
    }
}

fn keyed<T>(e: &Entry, r: Result<T, Error>) -> Result<T, Error> {
    r.map_err(|err| err.with_key(&e.key))
}

fn invalid(e: &Entry, expected: &'static str, got: impl ToString) -> Error {
    Error::new(
        e.value.pos.clone(),
        ErrorKind::InvalidValue {
            expected,
            got: got.to_string(),
        },
    )
    .with_key(&e.key)
}

/// An error about a whole block, positioned at its key.
fn rejected(e: &Entry, reason: &str) -> Error {
    Error::new(
        e.key_pos.clone(),
        ErrorKind::Rejected {
            reason: reason.to_owned(),
        },
    )
    .with_key(&e.key)
}

fn string(e: &Entry) -> Result<&str, Error> {
    keyed(e, e.value.as_str())
}

fn boolean(e: &Entry) -> Result<bool, Error> {
    keyed(e, e.value.as_bool())
}

fn block(e: &Entry) -> Result<&Map, Error> {
    keyed(e, e.value.as_map())
}

fn list(e: &Entry) -> Result<&[Value], Error> {
    keyed(e, e.value.as_array())
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A non-negative integer; `None` for 0 ("the default").
fn count(e: &Entry) -> Result<Option<u64>, Error> {
    let n = keyed(e, e.value.as_int())?;
    let n = u64::try_from(n).map_err(|_| invalid(e, "a non-negative integer", n))?;
    Ok((n != 0).then_some(n))
}

/// A size (`1MB`, `"64KB"`, 1048576); `None` for 0 ("the default").
fn size(e: &Entry) -> Result<Option<usize>, Error> {
    let n = keyed(e, e.value.as_size())?;
    let n = usize::try_from(n).map_err(|_| invalid(e, "a smaller size", n))?;
    Ok((n != 0).then_some(n))
}

/// Seconds (integer or float) or a duration string; `None` for zero ("the default").
fn duration(e: &Entry) -> Result<Option<Duration>, Error> {
    let d = keyed(e, e.value.as_duration())?;
    Ok((!d.is_zero()).then_some(d))
}

/// A port number as written: -1 (random), 0 (none / the default) or 1 to 65535.
fn port(e: &Entry, v: &Value) -> Result<i64, Error> {
    let n = keyed(e, v.as_int())?;
    if !(-1..=65535).contains(&n) {
        return Err(Error::new(
            v.pos.clone(),
            ErrorKind::InvalidValue {
                expected: "a port from 0 to 65535, or -1 for a random port",
                got: n.to_string(),
            },
        )
        .with_key(&e.key));
    }
    Ok(n)
}

/// The client port `Options::port` holds: 0 (random) for -1, the default for 0.
fn client_port(n: i64) -> u16 {
    match n {
        -1 => 0,
        0 => DEFAULT_PORT,
        n => n as u16,
    }
}

/// A monitoring/profiling port: `None` (off) for 0.
/// A monitoring port from the file: 0 is off, -1 a random port (`Some(0)`).
fn monitor_port(n: i64) -> Option<u16> {
    match n {
        0 => None,
        -1 => Some(0),
        n => u16::try_from(n).ok(),
    }
}

/// `listen` (and `http`, `https`): a port, or `"host:port"` as Go's `net.SplitHostPort` reads
/// it (`[::1]:4222` for IPv6, `:4222` for any host). The host is `None` when not given.
fn listen(e: &Entry) -> Result<(Option<String>, i64), Error> {
    let text = match &e.value.kind {
        ValueKind::Int(_) => return Ok((None, port(e, &e.value)?)),
        ValueKind::String(s) => s,
        _ => {
            return Err(Error::new(
                e.value.pos.clone(),
                ErrorKind::WrongType {
                    expected: "a port or \"host:port\"",
                    got: e.value.type_name(),
                },
            )
            .with_key(&e.key))
        }
    };
    let bad_address = || {
        Error::new(
            e.value.pos.clone(),
            ErrorKind::Rejected {
                reason: format!("Could not parse address string {text:?}"),
            },
        )
        .with_key(&e.key)
    };
    let (host, port_text) = text.rsplit_once(':').ok_or_else(bad_address)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad_address)?,
        None if host.contains([':', ']']) => return Err(bad_address()),
        None => host,
    };
    let n: i64 = port_text.parse().map_err(|_| {
        Error::new(
            e.value.pos.clone(),
            ErrorKind::Rejected {
                reason: format!("Could not parse port {port_text:?}"),
            },
        )
        .with_key(&e.key)
    })?;
    let value = Value {
        kind: ValueKind::Int(n),
        pos: e.value.pos.clone(),
    };
    Ok((non_empty(host).map(str::to_owned), port(e, &value)?))
}
