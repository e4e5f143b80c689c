//! Cluster state every reactor shares: the table of registered routes, the client URLs
//! learned from peers, and the schedule of routes to dial.
//!
//! Plain data behind short locks: no sockets and no clock (callers pass `now`). Route
//! connections (`conn::route`) register and unregister here; reactors take due dials from
//! [`Cluster::take_due`] and report failures back. The rules are gnatsd 1.0's (§2.3, §2.6,
//! §2.7 of the reference): duplicates by server id, gossip of newcomers, explicit routes
//! dialled forever every second, implicit ones `connect_retries` more times.
//!
//! Routes of the two dialects (gnatsd 1.0, nats-server 2.x) share the table; gossip stays
//! within a dialect. The interest 2.x routes are told about is aggregated per subject and
//! queue group ([`Cluster::interest_v2`]), so its `RS+`/`RS-` lines are written straight to
//! each 2.x route's queue under one lock, in the order the counts changed.

use crate::auth::{check_secret, Check, Secret, VerifiedCache};
use crate::conn::route::Dialect;
use crate::options::{ClusterOptions, RouteUrl};
use crate::outbound::{Outbound, WakeBatch};
use crate::proto::info::{ConnectOpts, RemoteInfo};
use ahash::AHashMap;
use arc_swap::ArcSwap;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

/// Pause between dial attempts (gnatsd's `DEFAULT_ROUTE_CONNECT`).
pub const ROUTE_CONNECT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one dial may take.
pub const ROUTE_DIAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on routes waiting to be dialled (configured ones plus gossiped ones).
const MAX_DIALS: usize = 1024;

/// The route INFO fields, in gnatsd 1.0's order (no 2.x client fields).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub server_id: String,
    pub version: String,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub auth_required: bool,
    pub ssl_required: bool,
    pub tls_required: bool,
    pub tls_verify: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
}

impl RouteInfo {
    /// `INFO <json>\r\n` (no space before the CRLF on routes).
    pub fn line(&self) -> Vec<u8> {
        let mut out = b"INFO ".to_vec();
        out.extend_from_slice(&crate::proto::info::go_json(self));
        out.extend_from_slice(b"\r\n");
        out
    }

    /// What we tell other routes about a newcomer (§2.6): its INFO with `ip` set to the
    /// address it can be dialled at.
    pub fn gossip_of(remote: &RemoteInfo, peer_ip: &str) -> RouteInfo {
        let host = if peer_ip.contains(':') {
            format!("[{peer_ip}]")
        } else {
            peer_ip.to_string()
        };
        RouteInfo {
            server_id: remote.server_id.clone(),
            version: remote.version.clone(),
            go: remote.go.clone(),
            host: remote.host.clone(),
            port: remote.port.clamp(0, u16::MAX as i64) as u16,
            auth_required: remote.auth_required,
            ssl_required: remote.ssl_required,
            tls_required: remote.tls_required,
            tls_verify: remote.tls_verify,
            max_payload: remote.max_payload.max(0) as usize,
            ip: Some(format!("nats-route://{host}:{}/", remote.port)),
            connect_urls: remote.connect_urls.clone(),
        }
    }
}

/// The route INFO of the 2.x dialect, fields in nats-server 2.9's order (no nonce: 2.x does
/// not use it on routes; no `lnoc`: leaf-origin messages are not spoken here).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct RouteInfoV2 {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: i64,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub cluster: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
}

impl RouteInfoV2 {
    /// `INFO <json> \r\n` (2.9's first route INFO has the space before CRLF).
    pub fn line(&self) -> Vec<u8> {
        let mut out = b"INFO ".to_vec();
        out.extend_from_slice(&crate::proto::info::go_json(self));
        out.extend_from_slice(b" \r\n");
        out
    }

    /// What we tell other 2.x routes about a 2.x newcomer: its INFO with `ip` set (2.9
    /// forwards it without the space before CRLF).
    pub fn gossip_of(remote: &RemoteInfo, peer_ip: &str) -> Vec<u8> {
        let v1 = RouteInfo::gossip_of(remote, peer_ip);
        let info = RouteInfoV2 {
            server_id: remote.server_id.clone(),
            server_name: remote.server_name.clone(),
            version: remote.version.clone(),
            proto: remote.proto,
            go: remote.go.clone(),
            host: remote.host.clone(),
            port: v1.port,
            headers: remote.headers,
            auth_required: remote.auth_required,
            max_payload: v1.max_payload,
            ip: v1.ip,
            cluster: remote.cluster.clone().unwrap_or_default(),
            connect_urls: remote.connect_urls.clone(),
        };
        let mut out = b"INFO ".to_vec();
        out.extend_from_slice(&crate::proto::info::go_json(&info));
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The 2.x route CONNECT, fields in nats-server 2.9's order.
#[derive(Serialize)]
struct RouteConnectV2<'a> {
    echo: bool,
    verbose: bool,
    pedantic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    tls_required: bool,
    headers: bool,
    name: &'a str,
    cluster: &'a str,
}

/// The route CONNECT, fields in gnatsd 1.0's order.
#[derive(Serialize)]
struct RouteConnect<'a> {
    verbose: bool,
    pedantic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    tls_required: bool,
    name: &'a str,
}

/// A route to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    pub url: RouteUrl,
    /// Configured (dialled forever) rather than learned by gossip or kept for `retry`.
    pub explicit: bool,
    /// Attempts left after this one, for routes that are not explicit.
    pub retries_left: u32,
    /// The server we expect there, when known (skip the dial once it is connected).
    pub remote_id: Option<String>,
    pub at: Instant,
    /// Which reactor dials it (spreads solicited routes over the cores).
    pub reactor: usize,
    /// The resolved address, once known (host names are resolved off the reactors).
    pub addr: Option<std::net::SocketAddr>,
}

/// What the table knows of one registered route.
struct Registered {
    cid: u64,
    out: Arc<Outbound>,
    /// The newcomer's INFO as gossiped to the others.
    gossip: Vec<u8>,
    /// Set when this side solicited the route (or took over a duplicate's record).
    url: Option<RouteUrl>,
    explicit: bool,
    dialect: Dialect,
}

/// Why registration failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The remote is this server.
    SelfRoute,
    /// That server is already connected by another route.
    Duplicate,
}

/// What a closing route leaves behind, to decide on reconnecting.
#[derive(Debug, Clone)]
pub struct ClosedRoute {
    pub cid: u64,
    pub remote_id: Option<String>,
    /// The URL this connection was dialled at (solicited routes).
    pub url: Option<RouteUrl>,
    pub explicit: bool,
    /// This side should reconnect even if it did not solicit (its id sorts lower).
    pub retry: bool,
    /// A route to self or a duplicate: never reconnect.
    pub no_reconnect: bool,
}

pub struct Cluster {
    /// Swapped by a reload (credentials, TLS, routes, `no_advertise`, `connect_retries`);
    /// read on route events, never per message.
    opts: ArcSwap<ClusterOptions>,
    /// The 2.x cluster name (not reloadable).
    name: Option<String>,
    pub server_id: String,
    info: ArcSwap<RouteInfo>,
    info_line: ArcSwap<Vec<u8>>,
    reactors: usize,
    table: Mutex<AHashMap<String, Registered>>,
    /// The registered routes' queues, for forwarding SUB/UNSUB (read per subscription
    /// change, rebuilt per registration).
    routes: RwLock<Arc<[Arc<Outbound>]>>,
    /// Other servers' client URLs (1.0 only ever adds to it).
    client_urls: Mutex<Vec<String>>,
    urls_gen: AtomicU64,
    dials: Mutex<Vec<Dial>>,
    /// Configured routes a reload removed: never dialled again (bounded, oldest dropped).
    removed: Mutex<Vec<RouteUrl>>,
    next_reactor: AtomicUsize,
    /// Queue groups of local members that left recently, so a `QRSID` message already on
    /// its way to one still reaches its group (bounded, oldest forgotten first).
    gone: Mutex<GoneMembers>,
    /// What 2.x routes are told: interest counted per subject and queue group.
    v2: Mutex<InterestV2>,
}

/// The interest advertised to 2.x routes: every subscription of a local client or of a
/// 1.0 route, counted per `subject[ queue]` (nats-server's route map). A plain subject is
/// announced when its count leaves 0 and withdrawn when it returns to 0; a queue group is
/// re-announced with its new weight on every change.
#[derive(Default)]
struct InterestV2 {
    counts: AHashMap<Box<[u8]>, u32>,
    routes: Vec<Arc<Outbound>>,
}

/// Bound on distinct subjects advertised to 2.x routes (each costs one map entry).
const INTEREST_V2_MAX: usize = 1 << 20;

/// `(cid, sid)` → queue name of recently removed local queue subscriptions.
#[derive(Default)]
struct GoneMembers {
    map: AHashMap<MemberKey, Box<[u8]>>,
    order: std::collections::VecDeque<MemberKey>,
}

/// A local subscription as routes name it: the client's cid and its sid.
type MemberKey = (u64, Box<[u8]>);

const GONE_MAX: usize = 4096;

impl Cluster {
    /// `opts.port` must be the bound port; `own_urls` are this server's client URLs.
    pub fn new(
        opts: ClusterOptions,
        server_id: String,
        version: &str,
        max_payload: usize,
        own_urls: Vec<String>,
        reactors: usize,
    ) -> Self {
        let info = RouteInfo {
            server_id: server_id.clone(),
            version: version.to_string(),
            go: String::new(),
            host: opts.host.clone(),
            port: opts.port,
            auth_required: opts.user.is_some(),
            ssl_required: opts.tls.is_some(),
            tls_required: opts.tls.is_some(),
            tls_verify: opts.tls.is_some(),
            max_payload,
            ip: None,
            connect_urls: own_urls,
        };
        Cluster {
            info_line: ArcSwap::from_pointee(info.line()),
            info: ArcSwap::from_pointee(info),
            server_id,
            name: opts.name.clone(),
            opts: ArcSwap::from_pointee(opts),
            reactors: reactors.max(1),
            table: Mutex::new(AHashMap::new()),
            routes: RwLock::new(Arc::from(Vec::new())),
            client_urls: Mutex::new(Vec::new()),
            urls_gen: AtomicU64::new(0),
            dials: Mutex::new(Vec::new()),
            removed: Mutex::new(Vec::new()),
            next_reactor: AtomicUsize::new(0),
            gone: Mutex::new(GoneMembers::default()),
            v2: Mutex::new(InterestV2::default()),
        }
    }

    fn lock_v2(&self) -> MutexGuard<'_, InterestV2> {
        self.v2.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster name configured for 2.x routes, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Our 2.x route INFO line, carrying `cluster` as the cluster name.
    pub fn info_line_v2(&self, cluster: &str) -> Vec<u8> {
        let i = self.info.load();
        RouteInfoV2 {
            server_id: i.server_id.clone(),
            server_name: i.server_id.clone(),
            version: i.version.clone(),
            proto: 2,
            go: i.go.clone(),
            host: i.host.clone(),
            port: i.port,
            headers: true,
            auth_required: i.auth_required,
            max_payload: i.max_payload,
            ip: None,
            cluster: cluster.to_string(),
            connect_urls: i.connect_urls.clone(),
        }
        .line()
    }

    /// Our 2.x route CONNECT line for a route dialled at `url`.
    pub fn connect_line_v2(&self, url: &RouteUrl, cluster: &str) -> Vec<u8> {
        let c = RouteConnectV2 {
            echo: true,
            verbose: false,
            pedantic: false,
            user: url.user.as_deref(),
            pass: url.pass.as_deref(),
            tls_required: false,
            headers: true,
            name: &self.server_id,
            cluster,
        };
        let mut out = b"CONNECT ".to_vec();
        out.extend_from_slice(&crate::proto::info::go_json(&c));
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A 2.x route registered: from now on it gets every interest change, starting with
    /// all the interest there is (one append, under the same lock as the changes).
    pub fn attach_v2(&self, out: &Arc<Outbound>, batch: &mut WakeBatch) {
        let mut v2 = self.lock_v2();
        let mut lines = Vec::new();
        for (key, &n) in &v2.counts {
            interest_line(&mut lines, key, n);
        }
        if !lines.is_empty() {
            batch.note(out, out.push(&lines));
        }
        v2.routes.push(Arc::clone(out));
    }

    fn detach_v2(&self, out: &Arc<Outbound>) {
        self.lock_v2().routes.retain(|o| !Arc::ptr_eq(o, out));
    }

    /// Interest under `key` (`subject` or `subject queue`) changed by `delta` subscriptions;
    /// `queue` tells which kind of key it is. 2.x routes hear of it at once, in order.
    pub fn interest_v2(&self, key: &[u8], queue: bool, delta: i32, batch: &mut WakeBatch) {
        let mut v2 = self.lock_v2();
        let before = v2.counts.get(key).copied().unwrap_or(0);
        let after = (i64::from(before) + i64::from(delta)).clamp(0, i64::from(u32::MAX)) as u32;
        if after == before {
            return;
        }
        if after == 0 {
            v2.counts.remove(key);
        } else if before == 0 && v2.counts.len() >= INTEREST_V2_MAX {
            crate::error!("Too many subjects to advertise to 2.x routes; dropping interest");
            return;
        } else {
            v2.counts.insert(key.into(), after);
        }
        // A plain subject matters only when it appears or disappears; a queue group's
        // weight is news on every change.
        if !queue && before != 0 && after != 0 {
            return;
        }
        if v2.routes.is_empty() {
            return;
        }
        let mut line = Vec::with_capacity(key.len() + 24);
        interest_line(&mut line, key, after);
        for r in &v2.routes {
            batch.note(r, r.push(&line));
        }
    }

    /// Remembers the group of a local queue member that is going away.
    pub fn remember_gone_member(&self, cid: u64, sid: &[u8], queue: &[u8]) {
        let mut g = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        let key = (cid, Box::<[u8]>::from(sid));
        if g.map.insert(key.clone(), queue.into()).is_none() {
            g.order.push_back(key);
        }
        while g.order.len() > GONE_MAX {
            if let Some(old) = g.order.pop_front() {
                g.map.remove(&old);
            }
        }
    }

    /// The group of a recently removed local queue member.
    pub fn gone_member_group(&self, cid: u64, sid: &[u8]) -> Option<Box<[u8]>> {
        let g = self.gone.lock().unwrap_or_else(|p| p.into_inner());
        g.map.get(&(cid, Box::<[u8]>::from(sid))).cloned()
    }

    fn lock_table(&self) -> MutexGuard<'_, AHashMap<String, Registered>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_dials(&self) -> MutexGuard<'_, Vec<Dial>> {
        self.dials.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Our route INFO line.
    pub fn info_line(&self) -> Arc<Vec<u8>> {
        self.info_line.load_full()
    }

    pub fn info(&self) -> Arc<RouteInfo> {
        self.info.load_full()
    }

    /// The cluster options in force.
    pub fn opts(&self) -> Arc<ClusterOptions> {
        self.opts.load_full()
    }

    /// A reload changed the reloadable cluster options (`new` keeps this cluster's bound
    /// host and port). Routes dropped from the list stop being dialled, added ones are
    /// scheduled now. Returns the cids of registered routes dialled at a removed URL, for
    /// the caller to close (they are not dialled again).
    pub fn reload(&self, new: ClusterOptions, now: Instant) -> Vec<u64> {
        let old = self.opts.load_full();
        let removed: Vec<RouteUrl> = old
            .routes
            .iter()
            .filter(|u| !new.routes.contains(u))
            .cloned()
            .collect();
        let added: Vec<RouteUrl> = new
            .routes
            .iter()
            .filter(|u| !old.routes.contains(u))
            .cloned()
            .collect();
        let mut info = RouteInfo::clone(&self.info.load());
        info.auth_required = new.user.is_some();
        info.ssl_required = new.tls.is_some();
        info.tls_required = new.tls.is_some();
        info.tls_verify = new.tls.is_some();
        self.info_line.store(Arc::new(info.line()));
        self.info.store(Arc::new(info));
        self.opts.store(Arc::new(new));
        {
            let mut gone = self.removed.lock().unwrap_or_else(|p| p.into_inner());
            gone.retain(|u| !added.contains(u));
            gone.extend(removed.iter().cloned());
            let excess = gone.len().saturating_sub(MAX_DIALS);
            gone.drain(..excess);
        }
        self.lock_dials()
            .retain(|d| !(d.explicit && removed.contains(&d.url)));
        let mut close = Vec::new();
        {
            let mut table = self.lock_table();
            for r in table.values_mut() {
                if r.explicit && r.url.as_ref().is_some_and(|u| removed.contains(u)) {
                    // Not re-solicited when it closes.
                    r.url = None;
                    close.push(r.cid);
                }
            }
        }
        for url in added {
            if self.is_self_url(&url) {
                continue;
            }
            let d = self.dial(url, true, 0, None, now);
            self.schedule(d);
        }
        close
    }

    /// An explicit route whose URL is no longer configured (removed by a reload).
    fn unconfigured(&self, url: &RouteUrl) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(url)
    }

    /// Our route CONNECT line for a route dialled at `url` (credentials from the URL).
    pub fn connect_line(&self, url: &RouteUrl) -> Vec<u8> {
        let c = RouteConnect {
            verbose: false,
            pedantic: false,
            user: url.user.as_deref(),
            pass: url.pass.as_deref(),
            tls_required: self.opts.load().tls.is_some(),
            name: &self.server_id,
        };
        let mut out = b"CONNECT ".to_vec();
        out.extend_from_slice(&crate::proto::info::go_json(&c));
        out.extend_from_slice(b"\r\n");
        out
    }

    pub fn auth_required(&self) -> bool {
        self.opts.load().user.is_some()
    }

    /// Checks an inbound route's CONNECT credentials (constant-time on plain secrets; a
    /// bcrypt password is deferred to the pool unless `cache` knows it).
    pub fn check_auth(&self, c: &ConnectOpts, cache: &VerifiedCache) -> Check {
        let opts = self.opts.load();
        let Some(user) = &opts.user else {
            return Check::Ok(None);
        };
        let pass = opts.pass.as_deref().unwrap_or("");
        let given = c.user.as_deref().unwrap_or("");
        if !ct_eq(given.as_bytes(), user.as_bytes()) {
            return Check::Fail;
        }
        check_secret(&Secret::new(pass), user, c.pass.as_deref(), cache, None)
    }

    /// Registers the route `cid` to `remote`, speaking `dialect`. On success returns the
    /// other routes of the same dialect, to which the caller gossips the newcomer.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        remote: &RemoteInfo,
        peer_ip: &str,
        cid: u64,
        out: &Arc<Outbound>,
        url: Option<&RouteUrl>,
        explicit: bool,
        dialect: Dialect,
    ) -> Result<Vec<Arc<Outbound>>, RegisterError> {
        if remote.server_id == self.server_id {
            return Err(RegisterError::SelfRoute);
        }
        let mut table = self.lock_table();
        if let Some(existing) = table.get_mut(&remote.server_id) {
            // The surviving connection takes over a solicited duplicate's record, so it is
            // re-solicited if it drops.
            if existing.url.is_none() {
                if let Some(u) = url {
                    existing.url = Some(u.clone());
                    existing.explicit = explicit;
                }
            }
            return Err(RegisterError::Duplicate);
        }
        let others: Vec<Arc<Outbound>> = table
            .values()
            .filter(|r| r.dialect == dialect)
            .map(|r| Arc::clone(&r.out))
            .collect();
        let gossip = match dialect {
            Dialect::V1 => RouteInfo::gossip_of(remote, peer_ip).line(),
            Dialect::V2 => RouteInfoV2::gossip_of(remote, peer_ip),
        };
        table.insert(
            remote.server_id.clone(),
            Registered {
                cid,
                out: Arc::clone(out),
                gossip,
                url: url.cloned(),
                explicit,
                dialect,
            },
        );
        self.publish_routes(&table);
        Ok(others)
    }

    /// Gossip lines of every registered route other than `except` (for a newcomer: the
    /// servers it may not know yet). gnatsd sends only the newcomer to the others; a node
    /// joining through a seed learns the rest from their gossip about it.
    pub fn gossip_line(&self, remote_id: &str) -> Option<Vec<u8>> {
        self.lock_table().get(remote_id).map(|r| r.gossip.clone())
    }

    /// Publishes the 1.0 routes' queues (the ones `SUB`/`UNSUB` lines go to).
    fn publish_routes(&self, table: &AHashMap<String, Registered>) {
        let outs: Vec<Arc<Outbound>> = table
            .values()
            .filter(|r| r.dialect == Dialect::V1)
            .map(|r| Arc::clone(&r.out))
            .collect();
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(outs);
    }

    /// The registered 1.0 routes' queues.
    pub fn routes(&self) -> Arc<[Arc<Outbound>]> {
        Arc::clone(&self.routes.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn is_connected(&self, remote_id: &str) -> bool {
        self.lock_table().contains_key(remote_id)
    }

    /// Number of registered routes.
    pub fn route_count(&self) -> usize {
        self.lock_table().len()
    }

    /// A route connection closed: unregisters it (if it was the registered one) and
    /// schedules a reconnect by gnatsd's rules (§2.7). Returns the dial scheduled, if any.
    pub fn route_closed(
        &self,
        closed: ClosedRoute,
        now: Instant,
        shutting_down: bool,
    ) -> Option<Dial> {
        let mut url = closed.url.clone();
        let mut explicit = closed.explicit;
        if let Some(id) = &closed.remote_id {
            let mut table = self.lock_table();
            if table.get(id).is_some_and(|r| r.cid == closed.cid) {
                let r = table.remove(id).expect("checked above");
                if r.dialect == Dialect::V2 {
                    self.detach_v2(&r.out);
                }
                if url.is_none() {
                    url = r.url;
                    explicit = r.explicit;
                }
                self.publish_routes(&table);
            }
        }
        if shutting_down || closed.no_reconnect {
            return None;
        }
        if closed
            .remote_id
            .as_deref()
            .is_some_and(|id| self.is_connected(id))
        {
            return None;
        }
        let url = url?;
        if explicit && self.unconfigured(&url) {
            return None;
        }
        let dial = if explicit {
            self.dial(
                url,
                true,
                0,
                closed.remote_id,
                now + jitter(ROUTE_CONNECT_INTERVAL),
            )
        } else if closed.retry {
            let retries = self.opts.load().connect_retries;
            self.dial(url, false, retries, closed.remote_id, now)
        } else {
            // A solicited implicit route whose peer sorts lower: the peer reconnects.
            return None;
        };
        self.schedule(dial.clone());
        Some(dial)
    }

    fn dial(
        &self,
        url: RouteUrl,
        explicit: bool,
        retries_left: u32,
        remote_id: Option<String>,
        at: Instant,
    ) -> Dial {
        Dial {
            url,
            explicit,
            retries_left,
            remote_id,
            at,
            reactor: self.next_reactor.fetch_add(1, Ordering::Relaxed) % self.reactors,
            addr: None,
        }
    }

    /// Queues a dial (e.g. one whose host name was just resolved).
    pub fn schedule(&self, dial: Dial) {
        let mut dials = self.lock_dials();
        if dials.iter().any(|d| d.url == dial.url) {
            return;
        }
        if dials.len() >= MAX_DIALS {
            crate::error!(
                "Too many routes waiting to be dialled; dropping {}",
                dial.url
            );
            return;
        }
        dials.push(dial);
    }

    /// Schedules every configured route for now (start-up).
    pub fn start(&self, now: Instant) {
        for url in self.opts.load().routes.clone() {
            if self.is_self_url(&url) {
                crate::debug!("Removing self reference from routes: {url}");
                continue;
            }
            let d = self.dial(url, true, 0, None, now);
            self.schedule(d);
        }
    }

    /// A configured route that points at this server's own cluster port.
    fn is_self_url(&self, url: &RouteUrl) -> bool {
        let opts = self.opts.load();
        if url.port != opts.port {
            return false;
        }
        let h = url.host.to_ascii_lowercase();
        h == opts.host.to_ascii_lowercase()
            || matches!(h.as_str(), "localhost" | "127.0.0.1" | "::1" | "0.0.0.0")
                && matches!(
                    opts.host.as_str(),
                    "0.0.0.0" | "::" | "127.0.0.1" | "localhost"
                )
    }

    /// Removes and returns the dials due for `reactor` at `now`.
    pub fn take_due(&self, reactor: usize, now: Instant) -> Vec<Dial> {
        let mut dials = self.lock_dials();
        if dials.is_empty() {
            return Vec::new();
        }
        let mut due = Vec::new();
        dials.retain(|d| {
            if d.reactor == reactor && d.at <= now {
                due.push(d.clone());
                false
            } else {
                true
            }
        });
        drop(dials);
        due.retain(|d| {
            !d.remote_id
                .as_deref()
                .is_some_and(|id| self.is_connected(id))
        });
        due
    }

    /// A dial failed (refused, timed out): try again later if the route's rules say so.
    pub fn dial_failed(&self, mut dial: Dial, now: Instant) {
        if dial.explicit && self.unconfigured(&dial.url) {
            return;
        }
        if !dial.explicit {
            if dial.retries_left == 0 {
                return;
            }
            dial.retries_left -= 1;
        }
        dial.at = now + jitter(ROUTE_CONNECT_INTERVAL);
        dial.addr = None;
        self.schedule(dial);
    }

    /// An INFO about another server arrived over a route (§2.6): dial it unless it is
    /// ourselves, already connected, or one of our configured routes.
    pub fn consider_implicit(&self, info: &RemoteInfo, now: Instant) -> Option<Dial> {
        if info.server_id == self.server_id || self.is_connected(&info.server_id) {
            return None;
        }
        let opts = self.opts.load();
        if opts
            .routes
            .iter()
            .any(|r| r.host.eq_ignore_ascii_case(&info.host))
            && opts
                .routes
                .iter()
                .any(|r| r.port as i64 == info.port && r.host.eq_ignore_ascii_case(&info.host))
        {
            return None;
        }
        let mut url = RouteUrl::parse(&info.ip).ok()?;
        if info.auth_required {
            url.user = opts.user.clone();
            url.pass = opts.pass.clone();
        }
        let dial = self.dial(
            url,
            false,
            opts.connect_retries,
            Some(info.server_id.clone()),
            now,
        );
        self.schedule(dial.clone());
        Some(dial)
    }

    /// Merges a peer's client URLs into ours (never removes, as 1.0). Returns whether the
    /// list changed (then clients with protocol 1 get an async INFO).
    pub fn merge_client_urls(&self, urls: &[String]) -> bool {
        if self.opts.load().no_advertise || urls.is_empty() {
            return false;
        }
        let own = self.info.load().connect_urls.clone();
        let mut list = self.client_urls.lock().unwrap_or_else(|p| p.into_inner());
        let before = list.len();
        for u in urls {
            if !list.contains(u) && !own.contains(u) && list.len() < 1024 {
                list.push(u.clone());
            }
        }
        let changed = list.len() != before;
        if changed {
            self.urls_gen.fetch_add(1, Ordering::SeqCst);
        }
        changed
    }

    /// The client URLs learned from peers.
    pub fn client_urls(&self) -> Vec<String> {
        self.client_urls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Bumped each time [`client_urls`](Self::client_urls) changes.
    pub fn urls_gen(&self) -> u64 {
        self.urls_gen.load(Ordering::SeqCst)
    }
}

/// `RS+ $G <key>[ <weight>]` (a queue key has a space), or `RS- $G <key>` when `n` is 0.
fn interest_line(buf: &mut Vec<u8>, key: &[u8], n: u32) {
    buf.extend_from_slice(if n == 0 { b"RS- $G " } else { b"RS+ $G " });
    buf.extend_from_slice(key);
    if n > 0 && key.contains(&b' ') {
        buf.push(b' ');
        buf.extend_from_slice(n.to_string().as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
}

/// Compares two secrets in time that depends only on their lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// `d` plus up to a quarter of it, so two servers that dropped the same route at once do
/// not redial in lockstep (and collide as duplicates again).
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    let extra = rand::thread_rng().gen_range(0..=d.as_millis() as u64 / 4);
    d + Duration::from_millis(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(routes: &[&str]) -> Cluster {
        let opts = ClusterOptions {
            host: "127.0.0.1".into(),
            port: 6222,
            routes: routes.iter().map(|r| RouteUrl::parse(r).unwrap()).collect(),
            ..ClusterOptions::default()
        };
        Cluster::new(
            opts,
            "ME".into(),
            "1.0.0",
            1 << 20,
            vec!["127.0.0.1:4222".into()],
            2,
        )
    }

    fn remote(id: &str) -> RemoteInfo {
        RemoteInfo {
            server_id: id.into(),
            host: "127.0.0.1".into(),
            port: 7000,
            connect_urls: vec!["127.0.0.1:5000".into()],
            ..RemoteInfo::default()
        }
    }

    #[test]
    fn route_info_and_connect_lines_match_gnatsd() {
        let c = cluster(&[]);
        assert_eq!(
            String::from_utf8(c.info_line().to_vec()).unwrap(),
            "INFO {\"server_id\":\"ME\",\"version\":\"1.0.0\",\"go\":\"\",\"host\":\"127.0.0.1\",\"port\":6222,\"auth_required\":false,\"ssl_required\":false,\"tls_required\":false,\"tls_verify\":false,\"max_payload\":1048576,\"connect_urls\":[\"127.0.0.1:4222\"]}\r\n"
        );
        let url = RouteUrl::parse("nats-route://ruser:rpass@127.0.0.1:1").unwrap();
        assert_eq!(
            String::from_utf8(c.connect_line(&url)).unwrap(),
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"ruser\",\"pass\":\"rpass\",\"tls_required\":false,\"name\":\"ME\"}\r\n"
        );
        let url = RouteUrl::parse("nats-route://127.0.0.1:1").unwrap();
        assert_eq!(
            String::from_utf8(c.connect_line(&url)).unwrap(),
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"ME\"}\r\n"
        );
    }

    #[test]
    fn reload_dials_added_routes_and_drops_removed_ones_for_good() {
        let (kept, gone, added) = (
            "nats-route://127.0.0.1:7001",
            "nats-route://127.0.0.1:7002",
            "nats-route://127.0.0.1:7003",
        );
        let c = cluster(&[kept, gone]);
        let now = Instant::now();
        c.start(now);
        // The route to `gone` is up (registered, dialled by us); `kept` is still pending.
        let out = Arc::new(Outbound::new(9, 0, 9, 1 << 20));
        let gone_url = RouteUrl::parse(gone).unwrap();
        c.register(
            &remote("G"),
            "127.0.0.1",
            9,
            &out,
            Some(&gone_url),
            true,
            Dialect::V1,
        )
        .unwrap();
        let mut new = ClusterOptions::clone(&c.opts());
        new.routes = [kept, added]
            .iter()
            .map(|r| RouteUrl::parse(r).unwrap())
            .collect();
        new.user = Some("ruser".into());
        assert_eq!(c.reload(new, now), [9], "the removed route is to be closed");
        assert!(c.auth_required());
        assert!(String::from_utf8_lossy(&c.info_line()).contains("\"auth_required\":true"));
        let due: Vec<String> = (0..2)
            .flat_map(|r| c.take_due(r, now))
            .map(|d| d.url.to_string())
            .collect();
        // `kept` as scheduled at start, `added` now; the pending dial to `gone` is dropped.
        let mut due = due;
        due.sort();
        assert_eq!(due, [format!("{kept}/"), format!("{added}/")]);
        // Closed, it is not dialled again; a failed dial to it is not retried either.
        let closed = ClosedRoute {
            cid: 9,
            remote_id: Some("G".into()),
            url: Some(gone_url.clone()),
            explicit: true,
            retry: false,
            no_reconnect: false,
        };
        assert!(c.route_closed(closed, now, false).is_none());
        assert_eq!(c.route_count(), 0);
        let d = c.dial(gone_url, true, 0, None, now);
        c.dial_failed(d, now);
        assert!((0..2).all(|r| c.take_due(r, now + ROUTE_CONNECT_INTERVAL * 3).is_empty()));
    }

    #[test]
    fn route_auth_plain_and_bcrypt() {
        let with_pass = |pass: &str| {
            let opts = ClusterOptions {
                user: Some("ruser".into()),
                pass: Some(pass.into()),
                ..ClusterOptions::default()
            };
            Cluster::new(opts, "ME".into(), "1.0.0", 1 << 20, vec![], 1)
        };
        let creds = |user: &str, pass: &str| ConnectOpts {
            user: Some(user.into()),
            pass: Some(pass.into()),
            ..ConnectOpts::default()
        };
        let cache = VerifiedCache::default();
        let plain = with_pass("rpass");
        assert!(matches!(
            plain.check_auth(&creds("ruser", "rpass"), &cache),
            Check::Ok(None)
        ));
        assert!(matches!(
            plain.check_auth(&creds("ruser", "x"), &cache),
            Check::Fail
        ));
        assert!(matches!(
            plain.check_auth(&ConnectOpts::default(), &cache),
            Check::Fail
        ));
        let hashed = with_pass(&bcrypt::hash("rpass", 4).unwrap());
        // A hash is verified off the reactor; a wrong user fails at once.
        assert!(matches!(
            hashed.check_auth(&creds("ruser", "rpass"), &cache),
            Check::Bcrypt { .. }
        ));
        assert!(matches!(
            hashed.check_auth(&creds("other", "rpass"), &cache),
            Check::Fail
        ));
    }

    #[test]
    fn duplicates_self_and_takeover() {
        let c = cluster(&[]);
        let out = Arc::new(Outbound::new(1, 0, 1, 1024));
        assert_eq!(
            c.register(
                &remote("ME"),
                "127.0.0.1",
                1,
                &out,
                None,
                false,
                Dialect::V1
            )
            .err(),
            Some(RegisterError::SelfRoute)
        );
        assert!(c
            .register(&remote("B"), "127.0.0.1", 1, &out, None, false, Dialect::V1)
            .unwrap()
            .is_empty());
        let url = RouteUrl::parse("nats-route://127.0.0.1:7000").unwrap();
        assert_eq!(
            c.register(
                &remote("B"),
                "127.0.0.1",
                2,
                &out,
                Some(&url),
                true,
                Dialect::V1
            )
            .err(),
            Some(RegisterError::Duplicate)
        );
        assert_eq!(c.routes().len(), 1);
        // The surviving inbound route took over the duplicate's URL: it is re-dialled.
        let now = Instant::now();
        let closed = ClosedRoute {
            cid: 1,
            remote_id: Some("B".into()),
            url: None,
            explicit: false,
            retry: false,
            no_reconnect: false,
        };
        let d = c.route_closed(closed, now, false).expect("redial");
        assert!(d.explicit && d.url == url);
        assert!(d.at >= now + ROUTE_CONNECT_INTERVAL);
        assert_eq!(c.routes().len(), 0);
    }

    #[test]
    fn implicit_routes_skip_self_known_and_configured() {
        let c = cluster(&["nats-route://127.0.0.1:7000"]);
        let now = Instant::now();
        let mut info = remote("C");
        info.ip = "nats-route://127.0.0.1:7000/".into();
        assert!(c.consider_implicit(&info, now).is_none(), "configured");
        info.port = 7001;
        info.ip = "nats-route://127.0.0.1:7001/".into();
        let d = c.consider_implicit(&info, now).expect("dial");
        assert!(!d.explicit);
        assert_eq!(d.url.port, 7001);
        let mut me = remote("ME");
        me.ip = "nats-route://127.0.0.1:7002/".into();
        assert!(c.consider_implicit(&me, now).is_none(), "self");
        // Implicit dials stop after connect_retries (0) failures.
        let due: Vec<Dial> = (0..2).flat_map(|r| c.take_due(r, now)).collect();
        assert_eq!(due.len(), 1);
        c.dial_failed(due[0].clone(), now);
        let later = now + Duration::from_secs(5);
        assert!((0..2).all(|r| c.take_due(r, later).is_empty()));
    }

    #[test]
    fn explicit_routes_retry_forever_and_self_is_removed() {
        let c = cluster(&["nats-route://127.0.0.1:7000", "nats-route://127.0.0.1:6222"]);
        let now = Instant::now();
        c.start(now);
        let due: Vec<Dial> = (0..2).flat_map(|r| c.take_due(r, now)).collect();
        assert_eq!(due.len(), 1, "the route to our own port is dropped");
        let mut t = now;
        for _ in 0..3 {
            c.dial_failed(due[0].clone(), t);
            t += Duration::from_secs(2);
            let again: Vec<Dial> = (0..2).flat_map(|r| c.take_due(r, t)).collect();
            assert_eq!(again.len(), 1);
        }
    }

    #[test]
    fn client_urls_only_grow_and_skip_our_own() {
        let c = cluster(&[]);
        let g = c.urls_gen();
        assert!(c.merge_client_urls(&["127.0.0.1:5000".into(), "127.0.0.1:4222".into()]));
        assert!(!c.merge_client_urls(&["127.0.0.1:5000".into()]));
        assert_eq!(c.client_urls(), vec!["127.0.0.1:5000".to_string()]);
        assert_eq!(c.urls_gen(), g + 1);
    }

    #[test]
    fn constant_time_compare() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }
}
