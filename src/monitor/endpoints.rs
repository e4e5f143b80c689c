//! The JSON documents of gnatsd 1.0's monitoring endpoints (§3 of the reference): field
//! names, order, types and omissions as a running 1.0 server writes them, built from the
//! server state, the summed reactor counters and the reactors' connection snapshots.
//! Pure functions: the caller gathers the inputs and passes the time.

use crate::shared::{runtime_version, Shared};
use crate::stats::{ConnSnapshot, SortKey};
use crate::sublist::SublistStats;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use super::json::{rfc3339_nano, uptime};

/// `/connz`'s default and largest page (gnatsd's `DefaultConnListSize`).
pub const DEFAULT_LIMIT: usize = 1024;

/// gnatsd 1.0's client TLS handshake timeout, shown in `/varz` (ringnats has no TLS yet).
const TLS_TIMEOUT_SECS: f64 = 0.5;

/// Process figures for `/varz`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Resident set size in bytes.
    pub mem: i64,
    /// CPU use in percent of one core over the process lifetime (as `ps -o pcpu`).
    pub cpu: f64,
    pub cores: usize,
}

#[derive(Serialize, Debug)]
pub struct VarzCluster {
    pub addr: String,
    pub cluster_port: u16,
    pub auth_timeout: f64,
}

/// `/varz`: gnatsd's Info, Options and runtime figures in one object.
#[derive(Serialize, Debug)]
pub struct Varz {
    pub server_id: String,
    pub version: &'static str,
    pub go: String,
    pub host: String,
    pub auth_required: bool,
    pub ssl_required: bool,
    pub tls_required: bool,
    pub tls_verify: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    pub addr: String,
    pub max_connections: usize,
    /// Nanoseconds (a Go `time.Duration`).
    pub ping_interval: u64,
    pub ping_max: u32,
    pub http_host: String,
    pub http_port: u16,
    pub https_port: u16,
    pub auth_timeout: f64,
    pub max_control_line: usize,
    pub cluster: VarzCluster,
    pub tls_timeout: f64,
    pub port: u16,
    pub max_payload: usize,
    pub start: String,
    pub now: String,
    pub uptime: String,
    pub mem: i64,
    pub cores: usize,
    pub cpu: f64,
    pub connections: usize,
    pub total_connections: u64,
    pub routes: usize,
    pub remotes: usize,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub slow_consumers: u64,
    pub subscriptions: usize,
    pub http_req_stats: BTreeMap<&'static str, u64>,
    pub config_load_time: String,
}

pub fn varz(
    shared: &Shared,
    http: SocketAddr,
    http_req_stats: BTreeMap<&'static str, u64>,
    usage: Usage,
    now: SystemTime,
) -> Varz {
    let live = shared.live();
    let o = &live.opts;
    let totals = shared.total_stats();
    let cluster_opts = o.cluster.clone().unwrap_or_default();
    let routes = shared.cluster.as_ref().map_or(0, |c| c.route_count());
    let start = rfc3339_nano(shared.started_wall);
    Varz {
        server_id: shared.server_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        go: runtime_version(),
        host: o.host.clone(),
        auth_required: o.auth_required(),
        ssl_required: live.tls.is_some(),
        tls_required: live.tls.is_some(),
        tls_verify: live.tls.as_ref().is_some_and(|t| t.verify),
        connect_urls: shared
            .cluster
            .as_ref()
            .map(|c| c.client_urls())
            .unwrap_or_default(),
        addr: o.host.clone(),
        max_connections: o.max_connections,
        ping_interval: o.ping_interval.as_nanos() as u64,
        ping_max: o.ping_max,
        http_host: http.ip().to_string(),
        // The port actually bound (gnatsd repeats the option, -1 included); the other is 0.
        http_port: if o.https_port.is_some() {
            0
        } else {
            http.port()
        },
        https_port: if o.https_port.is_some() {
            http.port()
        } else {
            0
        },
        auth_timeout: o.auth_timeout.as_secs_f64(),
        max_control_line: o.max_control_line,
        cluster: VarzCluster {
            addr: cluster_opts.host,
            cluster_port: cluster_opts.port,
            auth_timeout: cluster_opts.auth_timeout.as_secs_f64(),
        },
        tls_timeout: o
            .tls
            .as_ref()
            .map_or(TLS_TIMEOUT_SECS, |t| t.timeout.as_secs_f64()),
        port: shared.port,
        max_payload: o.max_payload,
        start: start.clone(),
        now: rfc3339_nano(now),
        uptime: uptime(now.duration_since(shared.started_wall).unwrap_or_default()),
        mem: usage.mem,
        cores: usage.cores,
        cpu: usage.cpu,
        connections: shared.conn_count.load(std::sync::atomic::Ordering::Relaxed),
        total_connections: totals.clients_accepted,
        routes,
        remotes: routes,
        in_msgs: totals.in_msgs,
        out_msgs: totals.out_msgs,
        in_bytes: totals.in_bytes,
        out_bytes: totals.out_bytes,
        slow_consumers: totals.slow_consumers,
        subscriptions: shared.sublist.count(),
        http_req_stats,
        config_load_time: rfc3339_nano(live.loaded_wall),
    }
}

/// `/connz` query parameters, read as gnatsd 1.0 reads them (bad numbers are 0, which
/// means the default), plus 2.x's `cid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnzParams {
    pub sort: SortKey,
    pub auth: bool,
    pub subs: bool,
    pub offset: usize,
    pub limit: usize,
    pub cid: Option<u64>,
}

/// `1` (gnatsd 1.0) or `true` (2.x) turns a flag on.
pub fn flag(v: Option<&str>) -> bool {
    matches!(v, Some("1") | Some("true"))
}

impl ConnzParams {
    /// `get` returns a query parameter's first value. `Err` is the 400 body.
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<ConnzParams, String> {
        let sort_text = get("sort").unwrap_or("");
        let sort = SortKey::parse(sort_text)
            .ok_or_else(|| format!("Invalid sorting option: {sort_text}"))?;
        let int = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        let limit = match int("limit") {
            l if l > 0 => l as usize,
            _ => DEFAULT_LIMIT,
        };
        Ok(ConnzParams {
            sort,
            auth: flag(get("auth")),
            subs: flag(get("subs")),
            offset: int("offset").max(0) as usize,
            limit,
            cid: get("cid").and_then(|v| v.parse().ok()).filter(|&c| c > 0),
        })
    }
}

#[derive(Serialize, Debug)]
pub struct ConnInfo {
    pub cid: u64,
    pub ip: String,
    pub port: u16,
    pub start: String,
    pub last_activity: String,
    pub uptime: String,
    pub idle: String,
    pub pending_bytes: usize,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub subscriptions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorized_user: Option<String>,
    #[serde(skip_serializing_if = "list_is_empty")]
    pub subscriptions_list: Option<Vec<String>>,
}

fn list_is_empty(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}

#[derive(Serialize, Debug)]
pub struct Connz {
    pub now: String,
    pub num_connections: usize,
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub connections: Vec<ConnInfo>,
}

/// gnatsd prints the peer's IP without the IPv4-mapped IPv6 prefix.
fn ip_string(peer: &SocketAddr) -> String {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_canonical().to_string(),
        ip => ip.to_string(),
    }
}

/// Builds `/connz` from one merged page. `now` and `now_wall` are the same moment.
pub fn connz(
    shared: &Shared,
    p: &ConnzParams,
    total: usize,
    page: Vec<ConnSnapshot>,
    now: Instant,
    now_wall: SystemTime,
) -> Connz {
    let connections: Vec<ConnInfo> = page
        .into_iter()
        .map(|c| ConnInfo {
            cid: c.cid,
            ip: ip_string(&c.peer),
            port: c.peer.port(),
            start: rfc3339_nano(shared.wall_time(c.stats.start)),
            last_activity: rfc3339_nano(shared.wall_time(c.stats.last_activity)),
            uptime: uptime(now.saturating_duration_since(c.stats.start)),
            idle: uptime(now.saturating_duration_since(c.stats.last_activity)),
            pending_bytes: c.pending_bytes,
            in_msgs: c.stats.in_msgs,
            out_msgs: c.stats.out_msgs,
            in_bytes: c.stats.in_bytes,
            out_bytes: c.stats.out_bytes,
            subscriptions: c.subscriptions,
            name: c.name,
            lang: c.lang,
            version: c.version,
            authorized_user: c.authorized_user.filter(|_| p.auth),
            subscriptions_list: c.subscriptions_list.filter(|_| p.subs),
        })
        .collect();
    Connz {
        now: rfc3339_nano(now_wall),
        num_connections: connections.len(),
        total,
        offset: p.offset,
        limit: p.limit,
        connections,
    }
}

#[derive(Serialize, Debug)]
pub struct RouteInfo {
    pub rid: u64,
    pub remote_id: String,
    pub did_solicit: bool,
    pub is_configured: bool,
    pub ip: String,
    pub port: u16,
    pub pending_size: usize,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub subscriptions: usize,
    #[serde(skip_serializing_if = "list_is_empty")]
    pub subscriptions_list: Option<Vec<String>>,
}

#[derive(Serialize, Debug)]
pub struct Routez {
    pub now: String,
    pub num_routes: usize,
    pub routes: Vec<RouteInfo>,
}

/// Builds `/routez` from the reactors' route snapshots (any order; sorted by rid).
pub fn routez(mut routes: Vec<ConnSnapshot>, subs: bool, now_wall: SystemTime) -> Routez {
    routes.sort_unstable_by_key(|r| r.cid);
    let routes: Vec<RouteInfo> = routes
        .into_iter()
        .map(|c| {
            let r = c.route.unwrap_or_else(|| crate::stats::RouteSnapshot {
                remote_id: String::new(),
                did_solicit: false,
                is_configured: false,
            });
            RouteInfo {
                rid: c.cid,
                remote_id: r.remote_id,
                did_solicit: r.did_solicit,
                is_configured: r.is_configured,
                ip: ip_string(&c.peer),
                port: c.peer.port(),
                pending_size: c.pending_bytes,
                in_msgs: c.stats.in_msgs,
                out_msgs: c.stats.out_msgs,
                in_bytes: c.stats.in_bytes,
                out_bytes: c.stats.out_bytes,
                subscriptions: c.subscriptions,
                subscriptions_list: c.subscriptions_list.filter(|_| subs),
            }
        })
        .collect();
    Routez {
        now: rfc3339_nano(now_wall),
        num_routes: routes.len(),
        routes,
    }
}

/// `/subsz`: the subscription index and its match cache.
#[derive(Serialize, Debug, PartialEq)]
pub struct Subsz {
    pub num_subscriptions: usize,
    pub num_cache: usize,
    pub num_inserts: u64,
    pub num_removes: u64,
    pub num_matches: u64,
    pub cache_hit_rate: f64,
    pub max_fanout: usize,
    pub avg_fanout: f64,
}

impl From<SublistStats> for Subsz {
    fn from(s: SublistStats) -> Self {
        Subsz {
            num_subscriptions: s.num_subscriptions,
            num_cache: s.num_cache,
            num_inserts: s.num_inserts,
            num_removes: s.num_removes,
            num_matches: s.num_matches,
            cache_hit_rate: s.cache_hit_rate,
            max_fanout: s.max_fanout,
            avg_fanout: s.avg_fanout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::json::pretty;
    use crate::options::Options;
    use crate::stats::ConnStats;
    use std::time::Duration;

    fn params(q: &[(&'static str, &'static str)]) -> Result<ConnzParams, String> {
        ConnzParams::parse(|k| q.iter().find(|(n, _)| *n == k).map(|(_, v)| *v))
    }

    #[test]
    fn connz_params_as_gnatsd_reads_them() {
        let p = params(&[]).unwrap();
        assert_eq!(
            p,
            ConnzParams {
                sort: SortKey::Cid,
                auth: false,
                subs: false,
                offset: 0,
                limit: 1024,
                cid: None
            }
        );
        let p = params(&[("limit", "-1"), ("offset", "-3"), ("subs", "1")]).unwrap();
        assert_eq!((p.limit, p.offset, p.subs), (1024, 0, true));
        let p = params(&[("limit", "abc"), ("offset", "5"), ("cid", "7")]).unwrap();
        assert_eq!((p.limit, p.offset, p.cid), (1024, 5, Some(7)));
        assert_eq!(
            params(&[("sort", "foo")]).unwrap_err(),
            "Invalid sorting option: foo"
        );
        assert_eq!(
            params(&[("sort", "bytes_to")]).unwrap().sort,
            SortKey::OutBytes
        );
    }

    fn shared() -> Shared {
        Shared::new(Options::default(), "SERVERID".into(), 4222, None)
    }

    #[test]
    fn varz_fields_in_gnatsd_order() {
        let s = shared();
        let v = varz(
            &s,
            "127.0.0.1:8222".parse().unwrap(),
            BTreeMap::from([("/varz", 1)]),
            Usage::default(),
            s.started_wall + Duration::from_secs(61),
        );
        let text = String::from_utf8(pretty(&v)).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  \"") && !l.starts_with("    "))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "server_id",
                "version",
                "go",
                "host",
                "auth_required",
                "ssl_required",
                "tls_required",
                "tls_verify",
                "addr",
                "max_connections",
                "ping_interval",
                "ping_max",
                "http_host",
                "http_port",
                "https_port",
                "auth_timeout",
                "max_control_line",
                "cluster",
                "tls_timeout",
                "port",
                "max_payload",
                "start",
                "now",
                "uptime",
                "mem",
                "cores",
                "cpu",
                "connections",
                "total_connections",
                "routes",
                "remotes",
                "in_msgs",
                "out_msgs",
                "in_bytes",
                "out_bytes",
                "slow_consumers",
                "subscriptions",
                "http_req_stats",
                "config_load_time"
            ]
        );
        assert!(text.contains("\"ping_interval\": 120000000000,"), "{text}");
        assert!(text.contains("\"auth_timeout\": 1,"), "{text}");
        assert!(text.contains("\"tls_timeout\": 0.5,"), "{text}");
        assert!(text.contains("\"uptime\": \"1m1s\","), "{text}");
        assert!(
            text.contains("\"cluster\": {\n    \"addr\": \"0.0.0.0\",\n    \"cluster_port\": 0,\n    \"auth_timeout\": 1\n  },"),
            "{text}"
        );
    }

    fn snap(cid: u64, start: Instant) -> ConnSnapshot {
        ConnSnapshot {
            cid,
            token: 0,
            peer: "[::ffff:127.0.0.1]:5000".parse().unwrap(),
            stats: ConnStats::new(start),
            pending_bytes: 3,
            subscriptions: 1,
            name: Some("n".into()),
            lang: None,
            version: None,
            authorized_user: Some("bob".into()),
            subscriptions_list: Some(vec!["foo".into()]),
            route: None,
        }
    }

    #[test]
    fn connz_entries_omit_what_gnatsd_omits() {
        let s = shared();
        let p = params(&[]).unwrap();
        let c = connz(
            &s,
            &p,
            5,
            vec![snap(3, s.started)],
            s.started + Duration::from_secs(2),
            s.started_wall + Duration::from_secs(2),
        );
        let text = String::from_utf8(pretty(&c)).unwrap();
        assert!(
            text.contains("\"num_connections\": 1,\n  \"total\": 5,"),
            "{text}"
        );
        assert!(text.contains("\"ip\": \"127.0.0.1\","), "{text}");
        assert!(text.contains("\"uptime\": \"2s\","), "{text}");
        assert!(text.contains("\"name\": \"n\""), "{text}");
        for absent in ["lang", "version", "authorized_user", "subscriptions_list"] {
            assert!(!text.contains(absent), "{absent} omitted: {text}");
        }
        let p = params(&[("auth", "1"), ("subs", "1")]).unwrap();
        let c = connz(
            &s,
            &p,
            1,
            vec![snap(3, s.started)],
            s.started,
            s.started_wall,
        );
        let text = String::from_utf8(pretty(&c)).unwrap();
        assert!(
            text.contains("\"authorized_user\": \"bob\",\n      \"subscriptions_list\": [\n        \"foo\"\n      ]"),
            "{text}"
        );
    }

    #[test]
    fn routez_without_routes_is_an_empty_list() {
        let r = routez(Vec::new(), false, std::time::UNIX_EPOCH);
        assert_eq!(
            String::from_utf8(pretty(&r)).unwrap(),
            "{\n  \"now\": \"1970-01-01T00:00:00Z\",\n  \"num_routes\": 0,\n  \"routes\": []\n}"
        );
    }
}
