//! Server state every reactor shares, below the reactors (it imports none of them): the
//! options, the subscription index, the cluster state, the connection registry and the
//! counters. Holds no sockets; the reactors' wake-up handles live in [`crate::mailbox`].

use crate::auth::AuthPool;
use crate::cluster::Cluster;
use crate::conn::{ConnConfig, Subscription};
use crate::options::Options;
use crate::proto::info::ServerInfo;
use crate::stats::{LocalStats, ReactorStats};
use crate::sublist::Sublist;
use crate::tls::{ClientTls, RouteTls};
use ahash::AHashMap;
use arc_swap::ArcSwap;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

/// Where a connection lives: its owning reactor and its token there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub reactor: usize,
    pub token: u64,
    pub is_route: bool,
}

/// The options a reload may change, with what is derived from them. Reactors hold an
/// `Arc` of it and take the new one when told ([`crate::mailbox::Mail::Reload`]), so the
/// data path reads plain fields and never a lock.
#[derive(Debug, Clone)]
pub struct Live {
    /// Every option as last loaded (the non-reloadable ones equal [`Shared::opts`]).
    pub opts: Options,
    pub conn_cfg: ConnConfig,
    /// Client TLS; `None`: plain text.
    pub tls: Option<ClientTls>,
    /// Route TLS; `None`: plain text.
    pub route_tls: Option<RouteTls>,
    /// When these options were loaded (`/varz` `config_load_time`).
    pub loaded_wall: SystemTime,
    /// Bumped by a reload that changed client or route authorization: reactors then check
    /// every connection's credentials again.
    pub auth_gen: u64,
}

impl Live {
    pub fn new(opts: Options) -> Self {
        Live {
            conn_cfg: ConnConfig::from_options(&opts),
            opts,
            tls: None,
            route_tls: None,
            loaded_wall: SystemTime::now(),
            auth_gen: 0,
        }
    }
}

pub struct Shared {
    /// The options as started. Only the ones a reload cannot change are read from here;
    /// the others come from [`Shared::live`].
    pub opts: Options,
    pub server_id: String,
    pub sublist: Sublist<Subscription>,
    /// The reloadable options, swapped as a whole by a reload.
    pub live: ArcSwap<Live>,
    /// Clients a reload's lower `max_connections` leaves over the limit; reactors take
    /// from it and close that many of their newest clients.
    pub conn_excess: AtomicUsize,
    /// The client port actually bound (differs from the option for `-p -1`).
    pub port: u16,
    /// Routing state; `None` without a cluster port.
    pub cluster: Option<Cluster>,
    /// Client connections (routes are not counted against `max_connections`).
    pub conn_count: AtomicUsize,
    next_cid: AtomicU64,
    pub shutdown: AtomicBool,
    /// Lame duck mode (SIGUSR2): no new clients, INFO says `ldm`, clients are closed.
    pub lame_duck: AtomicBool,
    /// cid → owning reactor, for `QRSID` lookups, monitoring and kills across cores.
    registry: Mutex<AHashMap<u64, ConnRef>>,
    /// Pending output per reactor (each written by its reactor once per tick).
    pending: Box<[AtomicUsize]>,
    /// bcrypt verifications off the reactors, and the cache of successful ones.
    pub auth_pool: AuthPool,
    /// One counter block per reactor, each written only by its reactor.
    pub stats: Box<[ReactorStats]>,
    /// When the server started, by the monotonic clock and by the wall clock.
    pub started: Instant,
    pub started_wall: SystemTime,
}

impl Shared {
    pub fn new(opts: Options, server_id: String, port: u16, cluster: Option<Cluster>) -> Self {
        Shared {
            live: ArcSwap::from_pointee(Live::new(opts.clone())),
            conn_excess: AtomicUsize::new(0),
            server_id,
            sublist: Sublist::new(),
            port,
            cluster,
            conn_count: AtomicUsize::new(0),
            next_cid: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            lame_duck: AtomicBool::new(false),
            registry: Mutex::new(AHashMap::new()),
            pending: (0..opts.workers.max(1))
                .map(|_| AtomicUsize::new(0))
                .collect(),
            auth_pool: AuthPool::default(),
            stats: (0..opts.workers.max(1))
                .map(|_| ReactorStats::default())
                .collect(),
            started: Instant::now(),
            started_wall: SystemTime::now(),
            opts,
        }
    }

    /// Every reactor's last published counters, summed.
    pub fn total_stats(&self) -> LocalStats {
        let mut sum = LocalStats::default();
        for s in self.stats.iter() {
            sum.add(&s.load());
        }
        sum
    }

    /// The wall-clock time of a monotonic instant (for monitoring output).
    pub fn wall_time(&self, t: Instant) -> SystemTime {
        match t.checked_duration_since(self.started) {
            Some(d) => self.started_wall + d,
            None => self.started_wall - self.started.duration_since(t),
        }
    }

    pub fn next_cid(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }

    /// Records reactor `id`'s pending output; returns the server's total.
    pub fn set_pending(&self, id: usize, bytes: usize) -> usize {
        if let Some(slot) = self.pending.get(id) {
            slot.store(bytes, Ordering::Relaxed);
        }
        self.pending.iter().map(|p| p.load(Ordering::Relaxed)).sum()
    }

    pub fn register_conn(&self, cid: u64, at: ConnRef) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cid, at);
    }

    pub fn unregister_conn(&self, cid: u64) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&cid);
    }

    /// Where connection `cid` lives, if it is open.
    pub fn find_conn(&self, cid: u64) -> Option<ConnRef> {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cid)
            .copied()
    }

    /// The current reloadable options (not for the data path: reactors cache theirs).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The INFO line sent to a client at `ip` (with the cluster's client URLs, §1.14).
    pub fn client_info(&self, live: &Live, cid: u64, ip: Option<std::net::IpAddr>) -> Vec<u8> {
        ServerInfo {
            server_id: self.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            go: runtime_version(),
            host: self.opts.host.clone(),
            port: self.port,
            auth_required: live.opts.auth_required(),
            ssl_required: live.tls.is_some(),
            tls_required: live.tls.is_some(),
            tls_verify: live.tls.as_ref().is_some_and(|t| t.verify),
            max_payload: live.opts.max_payload,
            ip: None,
            connect_urls: self
                .cluster
                .as_ref()
                .map(Cluster::client_urls)
                .unwrap_or_default(),
            proto: 1,
            headers: true,
            client_id: cid,
            server_name: self
                .opts
                .server_name
                .clone()
                .unwrap_or_else(|| self.server_id.clone()),
            client_ip: ip.map(|ip| ip.to_string()),
            ldm: self.lame_duck.load(std::sync::atomic::Ordering::Relaxed),
        }
        .client_line()
    }
}

fn rustc_version() -> &'static str {
    option_env!("RINGNATS_RUSTC").unwrap_or("stable")
}

/// What INFO and `/varz` show in gnatsd's `go` field.
pub fn runtime_version() -> String {
    format!("rust-{}", rustc_version())
}

/// A 22-character random id, like gnatsd's NUID-based server id.
pub fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}
