//! Connections: the sans-IO state machine every connection kind shares.
//!
//! A [`Connection`] takes parsed [`Op`]s and the current time and answers by staging bytes
//! for outbound queues (its own, its subscribers', the routes'). It never touches a socket
//! or a clock; the reactor feeds it and acts on [`Connection::closing`]. The kinds differ
//! only in how some ops are handled: a client's in this file, a route's in [`route`]; both
//! share the parser, [`deliver`] and the outbound queue.

pub mod deliver;
pub mod route;

pub use deliver::{deliver, Message, Origin, Source, Subscription, Targets};
pub use route::RouteState;

use crate::options::Options;
use crate::outbound::{Outbound, WakeBatch};
use crate::proto::info::ConnectOpts;
use crate::proto::subject::{is_valid_literal_subject, subject_matches};
use crate::proto::{Op, ProtoError};
use crate::shared::Shared;
use crate::sublist::Reader;
use ahash::AHashMap;
use rand::rngs::SmallRng;
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
}

/// Authorization settings shared by all clients (gnatsd's single user or token).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    pub user: Option<String>,
    pub pass: Option<String>,
    pub token: Option<String>,
}

impl Auth {
    pub fn required(&self) -> bool {
        self.user.is_some() || self.token.is_some()
    }
    fn check(&self, opts: &ConnectOpts) -> bool {
        use crate::cluster::ct_eq;
        let given = |v: &Option<String>| v.as_deref().unwrap_or("").as_bytes().to_vec();
        if let Some(token) = &self.token {
            return opts.auth_token.is_some() && ct_eq(&given(&opts.auth_token), token.as_bytes());
        }
        if let Some(user) = &self.user {
            let pass = self.pass.as_deref().unwrap_or("").as_bytes();
            return opts.user.is_some()
                & ct_eq(&given(&opts.user), user.as_bytes())
                & ct_eq(&given(&opts.pass), pass);
        }
        true
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
            auth: Auth {
                user: o.user.clone(),
                pass: o.pass.clone(),
                token: o.token.clone(),
            },
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
    pub rng: &'a mut SmallRng,
    pub now: Instant,
    pub shared: &'a Shared,
}

impl<'a> Env<'a> {
    pub fn new(
        shared: &'a Shared,
        batch: &'a mut WakeBatch,
        rng: &'a mut SmallRng,
        now: Instant,
    ) -> Self {
        Env {
            subs: shared.sublist.reader(),
            batch,
            rng,
            now,
            shared,
        }
    }

    fn cfg(&self) -> &'a ConnConfig {
        &self.shared.conn_cfg
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
    pub kind: Kind,
    subs: AHashMap<Box<[u8]>, Arc<Subscription>>,
    auth_deadline: Option<Instant>,
    next_ping: Instant,
    pings_out: u32,
    closing: Option<CloseReason>,
    /// The client answered PONG to its first PING (async INFO may go out at once).
    ponged: bool,
    /// An async INFO is owed after the first PONG (§1.14).
    info_owed: bool,
}

const OK: &[u8] = b"+OK\r\n";
const PONG: &[u8] = b"PONG\r\n";
const PING: &[u8] = b"PING\r\n";

impl Connection {
    /// The state shared by every kind; `first_ping` is when the first keepalive PING is due.
    fn with_kind(
        cid: u64,
        out: Arc<Outbound>,
        log_prefix: String,
        kind: Kind,
        opts: ConnectOpts,
        auth_deadline: Option<Instant>,
        first_ping: Instant,
    ) -> Self {
        Connection {
            cid,
            out,
            opts,
            log_prefix: log_prefix.into_boxed_str(),
            kind,
            subs: AHashMap::new(),
            auth_deadline,
            next_ping: first_ping,
            pings_out: 0,
            closing: None,
            ponged: false,
            info_owed: false,
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
            format!("{peer} - cid:{cid} - "),
            Kind::Client,
            ConnectOpts::client_default(),
            deadline,
            now + cfg.ping_interval,
        )
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
    pub fn on_op(&mut self, op: Op<'_>, env: &mut Env<'_>) -> ControlFlow<()> {
        if self.closing.is_some() {
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
            } => self.on_pub(subject, reply, None, payload, env),
            Op::Hpub {
                subject,
                reply,
                header_len,
                payload,
            } => {
                if !self.opts.headers {
                    return self.fail(ProtoError::UnknownOp, env);
                }
                self.on_pub(subject, reply, Some(header_len), payload, env)
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
                    let info = env.shared.client_info(self.cid);
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
            // Only routes may send MSG; the client parser rejects it before we get here.
            Op::Msg { .. } => self.fail(ProtoError::UnknownOp, env),
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
            let info = env.shared.client_info(self.cid);
            self.send(env, &info);
        }
    }

    fn on_connect(&mut self, json: &[u8], env: &mut Env<'_>) -> ControlFlow<()> {
        crate::trace!(
            "{}->> [CONNECT {}]",
            self.log_prefix,
            String::from_utf8_lossy(json)
        );
        self.auth_deadline = None;
        if self.opts.apply_json(json).is_err() {
            return self.fail(ProtoError::ParserError, env);
        }
        if !env.cfg().auth.check(&self.opts) {
            return self.fail(ProtoError::AuthViolation, env);
        }
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
        let origin = match self.kind {
            Kind::Client => Origin::Client { cid: self.cid },
            Kind::Route(_) => Origin::Route { cid: self.cid },
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
                if sub.is_local() {
                    route::forward_unsub(&sub, None, env);
                }
            }
        } else if sub.is_local() {
            route::forward_unsub(sub, max, env);
        }
    }

    fn on_pub(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        header_len: Option<usize>,
        payload: &[u8],
        env: &mut Env<'_>,
    ) -> ControlFlow<()> {
        crate::trace!(
            "{}->> [PUB {} {}{}]",
            self.log_prefix,
            String::from_utf8_lossy(subject),
            reply
                .map(|r| format!("{} ", String::from_utf8_lossy(r)))
                .unwrap_or_default(),
            payload.len()
        );
        if self.opts.pedantic && !is_valid_literal_subject(subject) {
            self.send(env, ProtoError::InvalidSubject.err_line());
            self.ok(env);
            return ControlFlow::Continue(());
        }
        if subject.starts_with(b"_SYS.") {
            let err = crate::proto::error::permission_violation_publish(subject);
            self.send(env, &err);
            return ControlFlow::Continue(());
        }
        self.ok(env);
        let msg = Message {
            subject,
            reply,
            header_len,
            payload,
        };
        let skip = (!self.opts.echo).then_some(&self.out);
        let Env {
            subs,
            batch,
            rng,
            shared,
            ..
        } = env;
        let mut targets = Targets {
            sublist: subs.sublist(),
            batch,
            rng,
            cluster: shared.cluster.as_ref(),
        };
        let delivered = subs.match_with(subject, |result| {
            deliver(&msg, result, Source::Client { skip }, &mut targets)
        });
        if delivered == 0 && reply.is_some() && self.opts.no_responders {
            self.no_responders(&msg, env);
        }
        ControlFlow::Continue(())
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
        let status = Message {
            subject: reply,
            reply: None,
            header_len: Some(header.len()),
            payload: &header,
        };
        env.batch
            .stage(&sub.out, status.encoded_len(sub), |b| status.encode(sub, b));
    }

    /// Timers: authorization timeout and keepalive PINGs. Call at least every few hundred ms.
    pub fn on_tick(&mut self, env: &mut Env<'_>) -> ControlFlow<()> {
        if self.closing.is_some() {
            return ControlFlow::Break(());
        }
        let now = env.now;
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

    /// Removes every subscription from the index (the connection is going away); a
    /// client's are withdrawn from the routes (without a pending limit: 1.0's leak is not
    /// copied).
    pub fn unsubscribe_all(&mut self, env: &mut Env<'_>) {
        let subs: Vec<_> = self.subs.drain().map(|(_, sub)| sub).collect();
        // One write lock for the whole connection, not one per subscription.
        env.subs.sublist().remove_batch(&subs);
        // Subscriptions past their limit were withdrawn when they reached it.
        for sub in subs.iter().filter(|s| s.is_local() && !s.exhausted()) {
            route::forward_unsub(sub, None, env);
        }
    }
}

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;
