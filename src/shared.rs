//! Server state every reactor shares, below the reactors (it imports none of them): the
//! options, the subscription index, the cluster state, the connection registry and the
//! counters. Holds no sockets; the reactors' wake-up handles live in [`crate::mailbox`].

use crate::auth::AuthPool;
use crate::cluster::Cluster;
use crate::conn::{ConnConfig, Subscription};
use crate::options::Options;
use crate::proto::info::ServerInfo;
use crate::sublist::Sublist;
use ahash::AHashMap;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Where a connection lives: its owning reactor and its token there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub reactor: usize,
    pub token: u64,
    pub is_route: bool,
}

pub struct Shared {
    pub opts: Options,
    pub server_id: String,
    pub sublist: Sublist<Subscription>,
    pub conn_cfg: ConnConfig,
    /// The client port actually bound (differs from the option for `-p -1`).
    pub port: u16,
    /// Routing state; `None` without a cluster port.
    pub cluster: Option<Cluster>,
    /// Client connections (routes are not counted against `max_connections`).
    pub conn_count: AtomicUsize,
    next_cid: AtomicU64,
    pub shutdown: AtomicBool,
    /// cid → owning reactor, for `QRSID` lookups, monitoring and kills across cores.
    registry: Mutex<AHashMap<u64, ConnRef>>,
    /// Pending output per reactor (each written by its reactor once per tick).
    pending: Box<[AtomicUsize]>,
    /// bcrypt verifications off the reactors, and the cache of successful ones.
    pub auth_pool: AuthPool,
}

impl Shared {
    pub fn new(opts: Options, server_id: String, port: u16, cluster: Option<Cluster>) -> Self {
        Shared {
            conn_cfg: ConnConfig::from_options(&opts),
            server_id,
            sublist: Sublist::new(),
            port,
            cluster,
            conn_count: AtomicUsize::new(0),
            next_cid: AtomicU64::new(1),
            shutdown: AtomicBool::new(false),
            registry: Mutex::new(AHashMap::new()),
            pending: (0..opts.workers.max(1))
                .map(|_| AtomicUsize::new(0))
                .collect(),
            auth_pool: AuthPool::default(),
            opts,
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

    /// The INFO line sent to a client (with the cluster's client URLs, §1.14).
    pub fn client_info(&self, cid: u64) -> Vec<u8> {
        ServerInfo {
            server_id: self.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            go: format!("rust-{}", rustc_version()),
            host: self.opts.host.clone(),
            port: self.port,
            auth_required: self.opts.auth_required(),
            ssl_required: false,
            tls_required: false,
            tls_verify: false,
            max_payload: self.opts.max_payload,
            ip: None,
            connect_urls: self
                .cluster
                .as_ref()
                .map(Cluster::client_urls)
                .unwrap_or_default(),
            proto: 1,
            headers: true,
            client_id: cid,
        }
        .client_line()
    }
}

fn rustc_version() -> &'static str {
    option_env!("RINGNATS_RUSTC").unwrap_or("stable")
}

/// A 22-character random id, like gnatsd's NUID-based server id.
pub fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}
