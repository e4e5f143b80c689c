//! Connections: the sans-IO state machine every connection kind shares.
//!
//! A [`Connection`] takes parsed [`Op`]s and the current time and answers by staging bytes
//! for outbound queues (its own, its subscribers', the routes'). It never touches a socket
//! or a clock; the reactor feeds it and acts on [`Connection::closing`]. The kinds differ
//! only in how some ops are handled: a client's in this file, a route's in [`route`]; both
//! share the parser, [`deliver`] and the outbound queue.

pub mod deliver;
mod memo;
pub mod pub_run;
pub mod route;

pub use deliver::{deliver, Message, Origin, Source, Subscription, Targets};
pub use route::RouteState;

use crate::auth::{
    check_secret, Check, Job, Permissions, Secret, SubmitError, User, VerifiedCache,
};
use crate::options::Options;
use crate::outbound::{Outbound, WakeBatch};
use crate::proto::info::ConnectOpts;
use crate::proto::subject::{is_valid_literal_subject, subject_matches};
use crate::proto::{Op, ProtoError};
use crate::shared::{Live, Shared};
use crate::stats::{ConnSnapshot, ConnStats, RouteSnapshot};
use crate::sublist::Reader;
use ahash::AHashMap;
use memo::{Ask, Goes};
use pub_run::PubRun;
use rand::rngs::SmallRng;
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A protocol error; its `-ERR` lines have been queued.
    Protocol(ProtoError),
    /// The peer sent `-ERR`.
    ClientError,
    /// A route to this server itself, or a second route to an already connected server.
    RouteRejected,
    /// The peer closed the connection.
    ClientClosed,
    /// Pending output passed `max_pending`, or a write stalled past `write_deadline`.
    SlowConsumer(SlowConsumer),
    WriteError,
    ServerShutdown,
}

/// Which limit a slow consumer hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    MaxPending,
    WriteDeadline,
    /// All pending output together passed the server's budget while this one was stuck.
    PendingBudget,
}

impl std::fmt::Display for CloseReason {
    /// The reason in words, as logs and monitoring show it (nats-server's spelling).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Protocol(ProtoError::AuthViolation | ProtoError::AuthTimeout) => {
                f.write_str("Authentication Failure")
            }
            CloseReason::Protocol(ProtoError::MaxConnections) => {
                f.write_str("Maximum Connections Exceeded")
            }
            CloseReason::Protocol(ProtoError::StaleConnection) => f.write_str("Stale Connection"),
            CloseReason::Protocol(ProtoError::MaxPayload) => {
                f.write_str("Maximum Payload Exceeded")
            }
            CloseReason::Protocol(_) => f.write_str("Protocol Violation"),
            CloseReason::ClientError => f.write_str("Client Closed (-ERR)"),
            CloseReason::RouteRejected => f.write_str("Duplicate Route"),
            CloseReason::ClientClosed => f.write_str("Client Closed"),
            CloseReason::SlowConsumer(SlowConsumer::MaxPending) => {
                f.write_str("Slow Consumer (Pending Bytes)")
            }
            CloseReason::SlowConsumer(SlowConsumer::WriteDeadline) => {
                f.write_str("Slow Consumer (Write Deadline)")
            }
            CloseReason::SlowConsumer(SlowConsumer::PendingBudget) => {
                f.write_str("Slow Consumer (Server Pending Budget)")
            }
            CloseReason::WriteError => f.write_str("Write Error"),
            CloseReason::ServerShutdown => f.write_str("Server Shutdown"),
        }
    }
}

/// Authorization settings shared by all clients: a users map (checked first), a token, or
/// gnatsd's single user (spec §7.1). Secrets that are bcrypt hashes are verified off the
/// reactor ([`crate::auth::AuthPool`]).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
    /// `authorization { users = [...] }`, by name, `default_permissions` already applied.
    pub users: AHashMap<String, Arc<User>>,
}

impl Auth {
    pub fn from_options(o: &Options) -> Self {
        let default = o.default_permissions.clone().map(Arc::new);
        let users = o
            .users
            .iter()
            .map(|u| {
                let user = User {
                    name: u.user.clone(),
                    pass: Secret::new(&u.pass),
                    permissions: u
                        .permissions
                        .clone()
                        .map(Arc::new)
                        .or_else(|| default.clone()),
                };
                (u.user.clone(), Arc::new(user))
            })
            .collect();
        Auth {
            user: o.user.clone(),
            pass: o.pass.clone(),
            token: o.token.clone(),
            users,
        }
    }

    pub fn required(&self) -> bool {
        self.user.is_some() || self.token.is_some() || !self.users.is_empty()
    }

    /// Checks a CONNECT's credentials: at once for plain secrets (constant time), through
    /// `cache` or a deferred bcrypt verification for hashes.
    pub fn check(&self, opts: &ConnectOpts, cache: &VerifiedCache) -> Check {
        use crate::cluster::ct_eq;
        if !self.users.is_empty() {
            let name = opts.user.as_deref().unwrap_or("");
            return match self.users.get(name) {
                Some(u) => check_secret(
                    &u.pass,
                    name,
                    opts.pass.as_deref(),
                    cache,
                    u.permissions.clone(),
                ),
                None => Check::Fail,
            };
        }
        if let Some(token) = &self.token {
            if opts.auth_token.is_none() {
                return Check::Fail;
            }
            return check_secret(
                &Secret::new(token),
                "",
                opts.auth_token.as_deref(),
                cache,
                None,
            );
        }
        if let Some(user) = &self.user {
            let given = opts.user.as_deref().unwrap_or("");
            if opts.user.is_none() || !ct_eq(given.as_bytes(), user.as_bytes()) {
                return Check::Fail;
            }
            let pass = self.pass.as_deref().unwrap_or("");
            return check_secret(&Secret::new(pass), user, opts.pass.as_deref(), cache, None);
        }
        Check::Ok(None)
    }
}

/// A connection whose CONNECT waits for a bcrypt verdict ([`Connection::on_auth_done`]).
#[derive(Debug)]
struct AuthWait {
    permissions: Option<Arc<Permissions>>,
}

/// Published subjects whose permission check is remembered per connection.
const PUB_CACHE_MAX: usize = 256;

/// A CONNECT line for the trace, with `pass` and `auth_token` replaced by `[REDACTED]`
/// (as 2.x does). Text that is not a JSON object is shown only if it names no secret.
pub fn redact_connect(json: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(mut m)) => {
            for key in ["pass", "auth_token"] {
                if let Some(v) = m.get_mut(key) {
                    *v = serde_json::Value::String("[REDACTED]".into());
                }
            }
            serde_json::Value::Object(m).to_string()
        }
        _ => {
            let text = String::from_utf8_lossy(json);
            if text.contains("pass") || text.contains("auth_token") {
                "[REDACTED]".into()
            } else {
                text.into_owned()
            }
        }
    }
}

/// Settings every connection of this server shares.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub auth: Auth,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_max: u32,
}

impl ConnConfig {
    pub fn from_options(o: &Options) -> Self {
        ConnConfig {
            auth: Auth::from_options(o),
            auth_timeout: o.auth_timeout,
            ping_interval: o.ping_interval,
            ping_max: o.ping_max,
        }
    }
}

/// What a connection needs from the world while handling one batch of input.
pub struct Env<'a> {
    /// Subscription lookups for this batch (one epoch guard for all of them).
    pub subs: Reader<'a, Subscription>,
    pub batch: &'a mut WakeBatch,
    /// The publishing connection's run of PUBs to one subject, held until its input ends
    /// ([`Connection::input_done`]).
    pub run: &'a mut PubRun,
    pub rng: &'a mut SmallRng,
    pub now: Instant,
    pub shared: &'a Shared,
    /// The reloadable options, as the reactor last loaded them (once per reload, not per
    /// message).
    pub live: &'a Live,
}

impl<'a> Env<'a> {
    pub fn new(
        shared: &'a Shared,
        live: &'a Live,
        batch: &'a mut WakeBatch,
        run: &'a mut PubRun,
        rng: &'a mut SmallRng,
        now: Instant,
    ) -> Self {
        debug_assert!(run.is_empty(), "a run outlived its input");
        Env {
            subs: shared.sublist.reader(),
            batch,
            run,
            rng,
            now,
            shared,
            live,
        }
    }

    /// The index reader and what delivery writes to, borrowed apart (one match, many
    /// deliveries).
    pub(crate) fn delivery(&mut self) -> (&mut Reader<'a, Subscription>, Targets<'_>) {
        let targets = Targets {
            sublist: self.subs.sublist(),
            batch: &mut *self.batch,
            rng: &mut *self.rng,
            cluster: self.shared.cluster.as_ref(),
            held: None,
        };
        (&mut self.subs, targets)
    }

    fn cfg(&self) -> &'a ConnConfig {
        &self.live.conn_cfg
    }
}

/// The connection kinds.
pub enum Kind {
    Client,
    Route(Box<RouteState>),
}

pub struct Connection {
    /// Connection id (`cid` for clients, `rid` for routes: one counter for both).
    pub cid: u64,
    pub out: Arc<Outbound>,
    pub opts: ConnectOpts,
    /// `ip:port - cid:N - ` (or `rid:N`), gnatsd's per-connection log prefix.
    pub log_prefix: Box<str>,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Monitoring counters. Input is counted here; output by the owner when it sends.
    pub stats: ConnStats,
    pub kind: Kind,
    subs: AHashMap<Box<[u8]>, Arc<Subscription>>,
    /// Where this client's repeated subject goes, while nothing changed in the index.
    memo: memo::PubMemo,
    auth_deadline: Option<Instant>,
    next_ping: Instant,
    pings_out: u32,
    closing: Option<CloseReason>,
    /// The client answered PONG to its first PING (async INFO may go out at once).
    ponged: bool,
    /// An async INFO is owed after the first PONG (§1.14).
    info_owed: bool,
    /// The user's permissions (`None`: unrestricted).
    perms: Option<Arc<Permissions>>,
    /// Publish verdicts of `perms`, by subject (bounded).
    pub_allowed: AHashMap<Box<[u8]>, bool>,
    /// The CONNECT waits for a bcrypt verdict: no op is handled until it arrives.
    auth_wait: Option<AuthWait>,
    /// A reload's re-check of the stored credentials waits for a bcrypt verdict (the
    /// connection keeps working meanwhile); holds the permissions it would get.
    reauth_wait: Option<AuthWait>,
}

const OK: &[u8] = b"+OK\r\n";
const PONG: &[u8] = b"PONG\r\n";
const PING: &[u8] = b"PING\r\n";

impl Connection {
    /// The state shared by every kind; `first_ping` is when the first keepalive PING is due.
    #[allow(clippy::too_many_arguments)]
    fn with_kind(
        cid: u64,
        out: Arc<Outbound>,
        peer: SocketAddr,
        kind: Kind,
        opts: ConnectOpts,
        auth_deadline: Option<Instant>,
        now: Instant,
        first_ping: Instant,
    ) -> Self {
        let tag = if matches!(kind, Kind::Route(_)) {
            "rid"
        } else {
            "cid"
        };
        Connection {
            cid,
            out,
            opts,
            log_prefix: format!("{peer} - {tag}:{cid} - ").into_boxed_str(),
            peer,
            stats: ConnStats::new(now),
            kind,
            subs: AHashMap::new(),
            memo: memo::PubMemo::default(),
            auth_deadline,
            next_ping: first_ping,
            pings_out: 0,
            closing: None,
            ponged: false,
            info_owed: false,
            perms: None,
            pub_allowed: AHashMap::new(),
            auth_wait: None,
            reauth_wait: None,
        }
    }

    /// A client that just connected from `peer`.
    pub fn client(
        cid: u64,
        out: Arc<Outbound>,
        peer: SocketAddr,
        now: Instant,
        cfg: &ConnConfig,
    ) -> Self {
        let deadline = cfg.auth.required().then(|| now + cfg.auth_timeout);
        Connection::with_kind(
            cid,
            out,
            peer,
            Kind::Client,
            ConnectOpts::client_default(),
            deadline,
            now,
            now + cfg.ping_interval,
        )
    }

    /// The CONNECT waits for a bcrypt verdict: input must be held (in order) and reading
    /// stopped until [`on_auth_done`](Self::on_auth_done).
    pub fn auth_pending(&self) -> bool {
        self.auth_wait.is_some()
    }

    /// The TLS handshake is over: the authorization timer starts now, as in 1.0 (spec §1.12).
    pub fn tls_handshake_done(&mut self, now: Instant, cfg: &ConnConfig) {
        if self.auth_deadline.is_some() && matches!(self.kind, Kind::Client) {
            self.auth_deadline = Some(now + cfg.auth_timeout);
        }
    }

    pub fn is_route(&self) -> bool {
        matches!(self.kind, Kind::Route(_))
    }

    pub fn closing(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
    }

    /// Number of subscriptions this connection holds.
    pub fn sub_count(&self) -> usize {
        self.subs.len()
    }

    /// This connection as the monitor shows it. `unsent` is what the owner took from the
    /// queue and has not written yet; `user_auth` says the server authenticates by user
    /// name (so the name is worth showing).
    pub fn snapshot(
        &self,
        token: u64,
        unsent: usize,
        with_subs: bool,
        user_auth: bool,
    ) -> ConnSnapshot {
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let subscriptions_list = with_subs.then(|| {
            let mut list: Vec<String> = self
                .subs
                .values()
                .map(|s| String::from_utf8_lossy(&s.subject).into_owned())
                .collect();
            list.sort_unstable();
            list
        });
        let route = match &self.kind {
            Kind::Client => None,
            Kind::Route(r) => Some(RouteSnapshot {
                remote_id: r.remote_id.clone().unwrap_or_default(),
                did_solicit: r.dial.is_some(),
                is_configured: r.dial.as_ref().is_some_and(|d| d.explicit),
            }),
        };
        ConnSnapshot {
            cid: self.cid,
            token,
            peer: self.peer,
            stats: self.stats,
            pending_bytes: self.out.pending_len() + unsent,
            subscriptions: self.subs.len(),
            name: nonempty(&self.opts.name),
            lang: nonempty(&self.opts.lang),
            version: nonempty(&self.opts.version),
            authorized_user: if user_auth && route.is_none() {
                nonempty(&self.opts.user)
            } else {
                None
            },
            subscriptions_list,
            route,
        }
    }

    fn send(&self, env: &mut Env<'_>, bytes: &[u8]) {
        env.batch.stage_bytes(&self.out, bytes);
    }

    fn ok(&self, env: &mut Env<'_>) {
        if self.opts.verbose {
            self.send(env, OK);
        }
    }

    /// Queues the error's wire bytes and marks the connection closing.
    pub fn fail(&mut self, err: ProtoError, env: &mut Env<'_>) -> ControlFlow<()> {
        self.send(env, err.wire());
        crate::debug!("{}{}", self.log_prefix, err);
        self.close_with(CloseReason::Protocol(err))
    }

    /// Marks the connection closing. The reactor flushes what is staged and queued, then
    /// closes the outbound queue and the socket.
    pub fn close(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            self.closing = Some(reason);
        }
    }

    fn close_with(&mut self, reason: CloseReason) -> ControlFlow<()> {
        self.close(reason);
        ControlFlow::Break(())
    }

    /// Handles one parsed op.
    ///
    /// A client's PUB, the op of almost every frame, goes straight to `on_pub` from here,
    /// inlined into the parser's loop: through the general dispatch the op was written to
    /// memory and read back with wider loads, a store-forwarding stall per message (10 %
    /// of a publish-only profile).
    #[inline(always)]
    pub fn on_op(&mut self, op: Op<'_>, env: &mut Env<'_>) -> ControlFlow<()> {
        match op {
            Op::Pub {
                subject,
                reply,
                payload,
                wire_tail,
            } if self.plain_client() => {
                if env.run.continues(subject, payload) && !crate::log::trace_enabled() {
                    // The next message of the held run: its subject passed every check
                    // when the run's first message did (the run is this connection's,
                    // and nothing that changes the checks happens inside one read).
                    self.stats.in_msgs += 1;
                    self.stats.in_bytes += payload.len() as u64;
                    if env.run.push(subject, reply, payload, wire_tail) {
                        self.flush_run(env);
                    }
                    return ControlFlow::Continue(());
                }
                self.on_pub(subject, reply, None, payload, wire_tail, env)
            }
            op => {
                // The held PUBs go first: this op may answer the publisher (PONG, -ERR) or
                // change what it is subscribed to.
                self.flush_run(env);
                self.on_any_op(op, env)
            }
        }
    }

    /// The end of a received buffer (or of the part of it parsed now): the PUBs held for
    /// delivery as a run are delivered.
    pub fn input_done(&mut self, env: &mut Env<'_>) {
        self.flush_run(env);
    }

    /// Delivers the held run of PUBs, if any.
    #[inline]
    fn flush_run(&mut self, env: &mut Env<'_>) {
        if env.run.is_empty() {
            return;
        }
        let mut run = std::mem::take(&mut *env.run);
        self.publish_run(&run, env);
        run.clear();
        *env.run = run;
    }

    /// An open, authenticated client connection (what the PUB fast path requires).
    #[inline(always)]
    fn plain_client(&self) -> bool {
        self.closing.is_none()
            && self.auth_wait.is_none()
            && self.auth_deadline.is_none()
            && !self.is_route()
    }

    #[inline(never)]
    fn on_any_op(&mut self, op: Op<'_>, env: &mut Env<'_>) -> ControlFlow<()> {
        if self.closing.is_some() || self.auth_wait.is_some() {
            return ControlFlow::Break(());
        }
        if self.auth_deadline.is_some() && !matches!(op, Op::Connect(_)) {
            return self.fail(ProtoError::AuthViolation, env);
        }
        if self.is_route() {
            return route::on_op(self, op, env);
        }
        match op {
            Op::Pub {
                subject,
                reply,
                payload,
                wire_tail,
            } => self.on_pub(subject, reply, None, payload, wire_tail, env),
            Op::Hpub {
                subject,
                reply,
                header_len,
                payload,
            } => {
                if !self.opts.headers {
                    return self.fail(ProtoError::UnknownOp, env);
                }
                self.on_pub(subject, reply, Some(header_len), payload, None, env)
            }
            Op::Sub {
                subject,
                queue,
                sid,
            } => self.on_sub(subject, queue, sid, env),
            Op::Unsub { sid, max } => self.on_unsub(sid, max, env),
            Op::Ping => {
                crate::trace!("{}->> [PING]", self.log_prefix);
                self.send(env, PONG);
                self.ponged = true;
                if std::mem::take(&mut self.info_owed) && self.opts.protocol >= 1 {
                    let info = env
                        .shared
                        .client_info(env.live, self.cid, Some(self.peer.ip()));
                    self.send(env, &info);
                }
                ControlFlow::Continue(())
            }
            Op::Pong => {
                self.pings_out = 0;
                ControlFlow::Continue(())
            }
            Op::Connect(json) => self.on_connect(json, env),
            Op::Info(json) => {
                if serde_json::from_slice::<serde_json::Value>(json).is_err() {
                    return self.fail(ProtoError::ParserError, env);
                }
                ControlFlow::Continue(())
            }
            Op::Ok => ControlFlow::Continue(()),
            Op::Err(text) => {
                crate::error!(
                    "{}Client Error {}",
                    self.log_prefix,
                    String::from_utf8_lossy(text)
                );
                self.close_with(CloseReason::ClientError)
            }
            // Only routes may send these; the client parser rejects them before we get here.
            Op::Msg { .. } | Op::RouteSub { .. } | Op::RouteUnsub { .. } | Op::Rmsg { .. } => {
                self.fail(ProtoError::UnknownOp, env)
            }
        }
    }

    /// A route holds a message for merging (released by [`release_held`](Self::release_held)).
    pub fn holds_forward(&self) -> bool {
        matches!(&self.kind, Kind::Route(r) if r.held.is_holding())
    }

    /// A route's held message goes out once it has waited long enough for its twin;
    /// returns whether one is still held.
    pub fn release_held(&mut self, env: &mut Env<'_>) -> bool {
        match &mut self.kind {
            Kind::Route(r) => r.held.expire(env),
            Kind::Client => false,
        }
    }

    /// Whatever a route holds goes out now.
    pub fn end_of_input(&mut self, env: &mut Env<'_>) {
        if let Kind::Route(r) = &mut self.kind {
            r.held.flush(env);
        }
    }

    /// The cluster's client URLs changed: protocol-1 clients get an async INFO, now if
    /// they already had their first PONG, else right after it (§1.14).
    pub fn on_connect_urls_changed(&mut self, env: &mut Env<'_>) {
        if !matches!(self.kind, Kind::Client) || self.closing.is_some() {
            return;
        }
        if !self.ponged {
            self.info_owed = true;
        } else if self.opts.protocol >= 1 {
            let info = env
                .shared
                .client_info(env.live, self.cid, Some(self.peer.ip()));
            self.send(env, &info);
        }
    }

    fn on_connect(&mut self, json: &[u8], env: &mut Env<'_>) -> ControlFlow<()> {
        // The memo was found under the old options (echo).
        self.memo.forget();
        if crate::log::trace_enabled() {
            crate::trace!("{}->> [CONNECT {}]", self.log_prefix, redact_connect(json));
        }
        if self.opts.apply_json(json).is_err() {
            self.auth_deadline = None;
            return self.fail(ProtoError::ParserError, env);
        }
        let check = env
            .cfg()
            .auth
            .check(&self.opts, &env.shared.auth_pool.cache);
        match self.authorize(check, env) {
            Some(permissions) => self.connect_authorized(permissions, env),
            // Failed, or waiting for bcrypt: parsing stops after this CONNECT.
            None => ControlFlow::Break(()),
        }
    }

    /// Acts on a credentials check: `Some(permissions)` when accepted now; `None` when
    /// the connection failed (its `-ERR` is queued) or waits for a bcrypt verdict (then
    /// [`auth_pending`](Self::auth_pending) is true and the caller stops parsing).
    pub(crate) fn authorize(
        &mut self,
        check: Check,
        env: &mut Env<'_>,
    ) -> Option<Option<Arc<Permissions>>> {
        match check {
            Check::Ok(permissions) => {
                self.auth_deadline = None;
                Some(permissions)
            }
            Check::Fail => {
                self.auth_failed(env);
                None
            }
            Check::Bcrypt {
                hash,
                given,
                key,
                permissions,
            } => {
                match env
                    .shared
                    .auth_pool
                    .submit(self.bcrypt_job(hash, given, key))
                {
                    Ok(()) => {
                        // The auth timer keeps running: a verdict that takes too long
                        // ends in 'Authorization Timeout'.
                        self.auth_wait = Some(AuthWait { permissions });
                    }
                    Err(e) => {
                        let why = match e {
                            SubmitError::Full => "bcrypt verification queue full",
                            SubmitError::NotRunning => "bcrypt verification not running",
                        };
                        crate::error!("{}Authorization Error - {why}", self.log_prefix);
                        if self.is_route() {
                            route::auth_failed(self, env);
                        }
                        let _ = self.fail(ProtoError::AuthViolation, env);
                    }
                }
                None
            }
        }
    }

    /// Logs a rejected CONNECT as gnatsd does and fails the connection.
    /// A bcrypt check for the pool; its verdict comes back to this connection's reactor.
    fn bcrypt_job(&self, hash: Arc<str>, given: String, key: crate::auth::CacheKey) -> Job {
        Job {
            hash,
            given,
            key,
            reactor: self.out.reactor,
            token: self.out.token,
        }
    }

    fn auth_failed(&mut self, env: &mut Env<'_>) {
        self.auth_deadline = None;
        if self.is_route() {
            crate::error!("{}Authorization Error", self.log_prefix);
            route::auth_failed(self, env);
        } else if env.cfg().auth.users.is_empty() {
            crate::error!("{}Authorization Error", self.log_prefix);
        } else {
            crate::error!(
                "{}Authorization Error - User {:?}",
                self.log_prefix,
                self.opts.user.as_deref().unwrap_or("")
            );
        }
        let _ = self.fail(ProtoError::AuthViolation, env);
    }

    /// A reload changed the ping interval: the next keepalive PING is due no later than one
    /// new interval from `now`.
    pub fn ping_interval_changed(&mut self, now: Instant, interval: Duration) {
        self.next_ping = self.next_ping.min(now + interval);
    }

    /// A reload's re-check waits for a bcrypt verdict ([`on_auth_done`](Self::on_auth_done)
    /// takes it; input goes on being read meanwhile).
    pub fn reauth_pending(&self) -> bool {
        self.reauth_wait.is_some()
    }

    /// The authorization changed in a reload: checks this connection's stored CONNECT
    /// credentials again (spec §4.7). A client that no longer passes gets
    /// `Authorization Violation` and is closed; one that passes gets the new permissions,
    /// losing the subscriptions they no longer allow. An inbound route is checked against
    /// the cluster credentials. A connection whose CONNECT is still awaited is left to it.
    pub fn reauthorize(&mut self, env: &mut Env<'_>) {
        if self.closing.is_some()
            || self.auth_wait.is_some()
            || self.reauth_wait.is_some()
            || self.auth_deadline.is_some()
        {
            return;
        }
        let cache = &env.shared.auth_pool.cache;
        let check = match &self.kind {
            Kind::Client => env.cfg().auth.check(&self.opts, cache),
            // A route we dialled is checked by the peer, not by us.
            Kind::Route(r) if r.dial.is_some() => return,
            Kind::Route(_) => match env.shared.cluster.as_ref() {
                Some(cluster) => cluster.check_auth(&self.opts, cache),
                None => return,
            },
        };
        match check {
            Check::Ok(permissions) => self.set_permissions(permissions, env),
            Check::Fail => self.reauth_failed(env),
            Check::Bcrypt {
                hash,
                given,
                key,
                permissions,
            } => {
                match env
                    .shared
                    .auth_pool
                    .submit(self.bcrypt_job(hash, given, key))
                {
                    Ok(()) => self.reauth_wait = Some(AuthWait { permissions }),
                    Err(_) => {
                        // Unverified credentials keep nothing they had.
                        crate::error!(
                            "{}Authorization Error - bcrypt verification unavailable on reload",
                            self.log_prefix
                        );
                        self.reauth_failed(env);
                    }
                }
            }
        }
    }

    fn reauth_failed(&mut self, env: &mut Env<'_>) {
        if let Kind::Route(r) = &mut self.kind {
            // Closed for its credentials: not to be dialled again.
            r.no_reconnect = true;
            crate::error!("{}Authorization Error", self.log_prefix);
            let _ = self.fail(ProtoError::AuthViolation, env);
            return;
        }
        self.auth_failed(env);
    }

    /// New permissions for a client: the publish verdicts are forgotten and every
    /// subscription they no longer allow is removed (and withdrawn from the routes), with
    /// gnatsd's `-ERR` naming its subject and sid.
    fn set_permissions(&mut self, permissions: Option<Arc<Permissions>>, env: &mut Env<'_>) {
        if !matches!(self.kind, Kind::Client) {
            return;
        }
        self.perms = permissions;
        self.pub_allowed.clear();
        let Some(perms) = self.perms.clone() else {
            return;
        };
        let mut denied: Vec<Box<[u8]>> = self
            .subs
            .iter()
            // One past its auto-unsubscribe limit is already gone from the index.
            .filter(|(_, sub)| !sub.exhausted() && !perms.can_subscribe(&sub.subject))
            .map(|(sid, _)| sid.clone())
            .collect();
        denied.sort_unstable();
        for sid in denied {
            let Some(sub) = self.subs.remove(&sid) else {
                continue;
            };
            if env.subs.sublist().remove(&sub) {
                route::forward_unsub(&sub, None, env);
            }
            crate::error!(
                "{}Subscription Violation - User {:?}, Subject {:?}, SID {}",
                self.log_prefix,
                self.opts.user.as_deref().unwrap_or(""),
                String::from_utf8_lossy(&sub.subject),
                String::from_utf8_lossy(&sid)
            );
            let err =
                crate::proto::error::permission_violation_subscription_sid(&sub.subject, &sid);
            self.send(env, &err);
        }
    }

    /// The bcrypt verdict for the CONNECT this connection waits on. On success the CONNECT
    /// completes (`+OK` if verbose) and the caller goes on with the held input.
    pub fn on_auth_done(&mut self, ok: bool, env: &mut Env<'_>) -> ControlFlow<()> {
        if let Some(wait) = self.reauth_wait.take() {
            if self.closing.is_some() {
                return ControlFlow::Break(());
            }
            if ok {
                self.set_permissions(wait.permissions, env);
                return ControlFlow::Continue(());
            }
            self.reauth_failed(env);
            return ControlFlow::Break(());
        }
        let Some(wait) = self.auth_wait.take() else {
            return ControlFlow::Continue(());
        };
        if self.closing.is_some() {
            return ControlFlow::Break(());
        }
        if !ok {
            self.auth_failed(env);
            return ControlFlow::Break(());
        }
        self.auth_deadline = None;
        if self.is_route() {
            return route::connect_authorized(self, env);
        }
        self.connect_authorized(wait.permissions, env)
    }

    /// The rest of a client's CONNECT once its credentials are accepted.
    fn connect_authorized(
        &mut self,
        permissions: Option<Arc<Permissions>>,
        env: &mut Env<'_>,
    ) -> ControlFlow<()> {
        self.perms = permissions;
        self.pub_allowed.clear();
        if !(0..=1).contains(&self.opts.protocol) {
            return self.fail(ProtoError::InvalidProtocol, env);
        }
        if self.opts.no_responders && !self.opts.headers {
            return self.fail(ProtoError::NoRespondersRequiresHeaders, env);
        }
        self.out.headers.store(self.opts.headers, Ordering::Relaxed);
        self.ok(env);
        ControlFlow::Continue(())
    }

    /// Whether this client may publish to `subject` (cached per subject).
    fn can_publish(&mut self, subject: &[u8]) -> bool {
        let Some(perms) = &self.perms else {
            return true;
        };
        if let Some(&ok) = self.pub_allowed.get(subject) {
            return ok;
        }
        let ok = perms.can_publish(subject);
        if self.pub_allowed.len() >= PUB_CACHE_MAX {
            self.pub_allowed.clear();
        }
        self.pub_allowed.insert(subject.into(), ok);
        ok
    }

    fn on_sub(
        &mut self,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        env: &mut Env<'_>,
    ) -> ControlFlow<()> {
        crate::trace!(
            "{}->> [SUB {} {}{}]",
            self.log_prefix,
            String::from_utf8_lossy(subject),
            queue
                .map(|q| format!("{} ", String::from_utf8_lossy(q)))
                .unwrap_or_default(),
            String::from_utf8_lossy(sid)
        );
        // gnatsd ignores a SUB that reuses a live sid. One whose auto-unsubscribe limit
        // was reached is already gone from the index, so the sid is free again.
        if let Some(perms) = &self.perms {
            if !perms.can_subscribe(subject) {
                crate::error!(
                    "{}Subscription Violation - User {:?}, Subject {:?}, SID {}",
                    self.log_prefix,
                    self.opts.user.as_deref().unwrap_or(""),
                    String::from_utf8_lossy(subject),
                    String::from_utf8_lossy(sid)
                );
                let err = crate::proto::error::permission_violation_subscription(subject);
                self.send(env, &err);
                return ControlFlow::Continue(());
            }
        }
        if self.has_live_sub(sid) {
            self.ok(env);
            return ControlFlow::Continue(());
        }
        let Some(sub) = self.add_sub(subject, queue, sid, env) else {
            self.send(env, ProtoError::InvalidSubject.err_line());
            return ControlFlow::Continue(());
        };
        route::forward_sub(&sub, env);
        self.ok(env);
        ControlFlow::Continue(())
    }

    /// A subscription under `sid` that can still receive.
    fn has_live_sub(&self, sid: &[u8]) -> bool {
        self.subs.get(sid).is_some_and(|s| !s.exhausted())
    }

    /// Indexes a new subscription held by this connection under `sid` (replacing one past
    /// its limit). `None` if the subject is invalid.
    fn add_sub(
        &mut self,
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        env: &mut Env<'_>,
    ) -> Option<Arc<Subscription>> {
        let origin = match &self.kind {
            Kind::Client => Origin::Client { cid: self.cid },
            Kind::Route(r) => Origin::Route {
                cid: self.cid,
                dialect: r.dialect.unwrap_or(route::Dialect::V1),
            },
        };
        let out = Arc::clone(&self.out);
        let sub = Arc::new(Subscription::new(subject, queue, sid, origin, out));
        env.subs.sublist().insert(Arc::clone(&sub)).ok()?;
        if let Some(old) = self.subs.insert(sid.into(), Arc::clone(&sub)) {
            env.subs.sublist().remove(&old);
        }
        Some(sub)
    }

    fn on_unsub(&mut self, sid: &[u8], max: Option<u64>, env: &mut Env<'_>) -> ControlFlow<()> {
        crate::trace!(
            "{}->> [UNSUB {}{}]",
            self.log_prefix,
            String::from_utf8_lossy(sid),
            max.map(|m| format!(" {m}")).unwrap_or_default()
        );
        self.unsubscribe(sid, max, env);
        self.ok(env);
        ControlFlow::Continue(())
    }

    /// `UNSUB sid [max]` for any kind: sets the limit, or removes the subscription now.
    /// A client's change is forwarded to the routes.
    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>, env: &mut Env<'_>) {
        let Some(sub) = self.subs.get(sid) else {
            return;
        };
        if sub.exhausted() {
            // Gone at its limit: the delivery that hit it took it out of the index and
            // withdrew it from the routes. As in gnatsd the sid is free again and this
            // UNSUB changes nothing (a larger limit must not revive it). Only if no
            // delivery has removed it yet is that done here.
            if let Some(sub) = self.subs.remove(sid) {
                if env.subs.sublist().remove(&sub) && sub.is_local() {
                    route::forward_unsub(&sub, None, env);
                }
            }
            return;
        }
        let remove_now = match max {
            Some(max) if max > 0 => {
                sub.max.store(max, Ordering::Relaxed);
                sub.delivered.load(Ordering::Relaxed) >= max
            }
            _ => true,
        };
        if remove_now {
            if let Some(sub) = self.subs.remove(sid) {
                env.subs.sublist().remove(&sub);
                route::forward_unsub(&sub, None, env);
            }
        } else {
            route::forward_unsub(sub, max, env);
        }
    }

    fn on_pub(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        payload: &[u8],
        wire_tail: Option<&[u8]>,
        env: &mut Env<'_>,
    ) -> ControlFlow<()> {
        // Held in a run with the PUBs before it (one subject, small payload, no per-message
        // answer to the publisher), or delivered now, after the run.
        let held = header_len.is_none()
            && !self.opts.verbose
            && env.run.takes(subject, payload)
            && !crate::log::trace_enabled();
        if !held {
            self.flush_run(env);
        }
        if crate::log::trace_enabled() {
            self.trace_pub(subject, reply, header_len, payload);
        }
        if self.opts.pedantic && !is_valid_literal_subject(subject) {
            self.flush_run(env);
            self.send(env, ProtoError::InvalidSubject.err_line());
            self.ok(env);
            return ControlFlow::Continue(());
        }
        if subject.starts_with(b"_SYS.") {
            self.flush_run(env);
            let err = crate::proto::error::permission_violation_publish(subject);
            self.send(env, &err);
            return ControlFlow::Continue(());
        }
        self.stats.in_msgs += 1;
        self.stats.in_bytes += payload.len() as u64;
        if !self.can_publish(subject) {
            self.flush_run(env);
            crate::error!(
                "{}Publish Violation - User {:?}, Subject {:?}",
                self.log_prefix,
                self.opts.user.as_deref().unwrap_or(""),
                String::from_utf8_lossy(subject)
            );
            let err = crate::proto::error::permission_violation_publish(subject);
            self.send(env, &err);
            return ControlFlow::Continue(());
        }
        self.ok(env);
        if held {
            if reply.is_none()
                && env.run.is_empty()
                && matches!(
                    self.memo.get(subject, env.subs.generation()),
                    Some(Goes::Nowhere)
                )
            {
                // Known to go nowhere (a publisher without subscribers): nothing to hold.
                env.subs.count_memo_hit();
                return ControlFlow::Continue(());
            }
            if env.run.push(subject, reply, payload, wire_tail) {
                self.flush_run(env);
            }
            return ControlFlow::Continue(());
        }
        self.publish(&Message::new(subject, reply, header_len, payload), env);
        ControlFlow::Continue(())
    }

    /// Delivers one published message.
    fn publish(&mut self, msg: &Message<'_>, env: &mut Env<'_>) {
        let (subject, reply) = (msg.subject, msg.reply);
        let (subs, mut targets) = env.delivery();
        let generation = subs.generation();
        // Done from the memo, unless its subscriber did not take the message (closing, or
        // at its limit) or a request reached nobody: the lookup below decides those, and
        // answers the request.
        let done = match self.memo.get(subject, generation) {
            Some(Goes::To(sub)) => deliver::deliver_one(msg, sub, &mut targets),
            Some(Goes::Nowhere) => reply.is_none(),
            None => false,
        };
        if done {
            subs.count_memo_hit();
            return;
        }
        let skip = (!self.opts.echo).then_some(&self.out);
        let ask = self.memo.ask(subject, generation);
        let mut goes = None;
        let delivered = subs.match_with(subject, |result| {
            if ask == Ask::Learn {
                goes = Goes::of(result, skip);
            }
            deliver(msg, result, Source::Client { skip }, &mut targets)
        });
        self.memo.learn(subject, generation, ask, goes);
        if delivered == 0 && reply.is_some() && self.opts.no_responders {
            self.no_responders(msg, env);
        }
    }

    /// Delivers a run of held PUBs with one lookup: a subject that goes only to local,
    /// plain subscriptions (one per connection) gets each one's share in one stretch;
    /// anything else (queue groups, routes, requests that reach nobody) message by message,
    /// as if they had not been held. The lookup counts once per message in `/subsz`, as
    /// gnatsd's do.
    fn publish_run(&mut self, run: &PubRun, env: &mut Env<'_>) {
        let n = run.len();
        if n == 1 {
            self.publish(&run.message(0), env);
            return;
        }
        let subject = run.subject();
        let (subs, mut targets) = env.delivery();
        let generation = subs.generation();
        let done = match self.memo.get(subject, generation) {
            Some(Goes::To(sub)) => deliver::deliver_run(run, sub, &mut targets),
            Some(Goes::Nowhere) => !run.has_replies(),
            None => false,
        };
        if done {
            subs.count_hits(n as u64);
            return;
        }
        let skip = (!self.opts.echo).then_some(&self.out);
        let skipped = |s: &Subscription| skip.is_some_and(|o| Arc::ptr_eq(o, &s.out));
        let ask = self.memo.ask(subject, generation);
        let mut goes = None;
        // Requests that reached nobody, to be answered with no-responders.
        let mut unanswered = SmallVec::<[u16; 4]>::new();
        subs.match_with(subject, |result| {
            if ask == Ask::Learn {
                goes = Goes::of(result, skip);
            }
            let whole = result.queues.is_empty()
                && result.plain.iter().all(|s| s.is_local())
                && result.plain.iter().any(|s| !skipped(s) && !s.unavailable())
                && deliver::distinct_connections(&result.plain);
            if whole {
                for sub in result.plain.iter().filter(|s| !skipped(s)) {
                    deliver::deliver_run(run, sub, &mut targets);
                }
                return;
            }
            // Queue groups (a member per message), routes, a connection with several
            // matching subscriptions (its MSGs interleave per message), or nobody.
            for i in 0..n {
                let msg = run.message(i);
                let source = Source::Client { skip };
                if deliver(&msg, result, source, &mut targets) == 0 && msg.reply.is_some() {
                    unanswered.push(i as u16);
                }
            }
        });
        subs.count_hits(n as u64 - 1);
        self.memo.learn(subject, generation, ask, goes);
        if self.opts.no_responders {
            for i in unanswered {
                self.no_responders(&run.message(usize::from(i)), env);
            }
        }
    }

    /// `->> [PUB subj [reply] len]` (or `[HPUB subj [reply] hlen len]`), then the payload
    /// line, as gnatsd traces them.
    fn trace_pub(
        &self,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        payload: &[u8],
    ) {
        let mut args = String::from_utf8_lossy(subject).into_owned();
        if let Some(r) = reply {
            args.push(' ');
            args.push_str(&String::from_utf8_lossy(r));
        }
        if let Some(h) = header_len {
            args.push_str(&format!(" {h}"));
        }
        let op = if header_len.is_some() { "HPUB" } else { "PUB" };
        crate::trace!("{}->> [{op} {args} {}]", self.log_prefix, payload.len());
        crate::trace!(
            "{}->> MSG_PAYLOAD: [{}]",
            self.log_prefix,
            String::from_utf8_lossy(payload)
        );
    }

    /// Answers a request that reached nobody with a 503 status on the requester's own inbox
    /// subscription (nats-server 2.9's format).
    fn no_responders(&self, msg: &Message<'_>, env: &mut Env<'_>) {
        let Some(reply) = msg.reply else { return };
        let Some(sub) = self
            .subs
            .values()
            .find(|s| s.queue.is_none() && !s.exhausted() && subject_matches(&s.subject, reply))
        else {
            return;
        };
        let mut header = Vec::with_capacity(64 + msg.subject.len());
        header.extend_from_slice(b"NATS/1.0 503\r\nNats-Subject: ");
        header.extend_from_slice(msg.subject);
        header.extend_from_slice(b"\r\n\r\n");
        let status = Message::new(reply, None, Some(header.len()), &header);
        env.batch
            .stage_msg(&sub.out, status.encoded_len(sub), header.len(), |b| {
                status.encode(sub, b)
            });
    }

    /// Timers: authorization timeout and keepalive PINGs. Call at least every few hundred ms.
    pub fn on_tick(&mut self, env: &mut Env<'_>) -> ControlFlow<()> {
        if self.closing.is_some() {
            return ControlFlow::Break(());
        }
        let now = env.now;
        self.memo.expire(env.subs.generation());
        if self.is_route() {
            route::on_tick(self, env);
        }
        if let Some(deadline) = self.auth_deadline {
            if now >= deadline {
                return self.fail(ProtoError::AuthTimeout, env);
            }
        }
        if now >= self.next_ping {
            self.pings_out += 1;
            if self.pings_out > env.cfg().ping_max {
                return self.fail(ProtoError::StaleConnection, env);
            }
            self.send(env, PING);
            self.next_ping = now + env.cfg().ping_interval;
        }
        ControlFlow::Continue(())
    }

    /// Removes every subscription from the index (the connection is going away) and
    /// withdraws them from the routes they were advertised to (without a pending limit:
    /// 1.0's leak is not copied).
    pub fn unsubscribe_all(&mut self, env: &mut Env<'_>) {
        let subs: Vec<_> = self.subs.drain().map(|(_, sub)| sub).collect();
        // One write lock for the whole connection, not one per subscription.
        env.subs.sublist().remove_batch(&subs);
        // Subscriptions past their limit were withdrawn when they reached it.
        for sub in &subs {
            route::forward_unsub(sub, None, env);
        }
    }
}

#[cfg(test)]
mod route2x_tests;
#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
