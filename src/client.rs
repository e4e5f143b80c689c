//! Per-connection protocol state of a client, and message delivery.
//!
//! Sans-IO: [`Client`] takes parsed [`Op`]s and the current time and answers by appending
//! bytes to outbound queues (its own and its subscribers'). It never touches a socket or a
//! clock; the reactor feeds it and acts on [`Client::closing`].

use crate::outbound::{Outbound, WakeBatch};
use crate::proto::info::ConnectOpts;
use crate::proto::subject::{is_valid_literal_subject, subject_matches};
use crate::proto::{Op, ProtoError};
use crate::sublist::{MatchResult, Reader, SubEntry, Sublist};
use ahash::AHashMap;
use rand::rngs::SmallRng;
use rand::Rng;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A subscription of a local client. `max == 0` means no auto-unsubscribe limit.
pub struct Subscription {
    subject: Box<[u8]>,
    queue: Option<Box<[u8]>>,
    sid: Box<[u8]>,
    pub out: Arc<Outbound>,
    max: AtomicU64,
    delivered: AtomicU64,
}

impl SubEntry for Subscription {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}

impl Subscription {
    pub fn sid(&self) -> &[u8] {
        &self.sid
    }
    /// True once the auto-unsubscribe limit has been delivered.
    fn exhausted(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        max > 0 && self.delivered.load(Ordering::Relaxed) >= max
    }
}

/// Why a connection is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A protocol error; its `-ERR` lines have been queued.
    Protocol(ProtoError),
    /// The client sent `-ERR`.
    ClientError,
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
        if let Some(token) = &self.token {
            return opts.auth_token.as_deref() == Some(token.as_str());
        }
        if let Some(user) = &self.user {
            return opts.user.as_deref() == Some(user.as_str())
                && opts.pass.as_deref().unwrap_or("") == self.pass.as_deref().unwrap_or("");
        }
        true
    }
}

/// Settings every client of this server shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub auth: Auth,
    pub auth_timeout: Duration,
    pub ping_interval: Duration,
    pub ping_max: u32,
}

/// What a client needs from the world while handling one batch of input.
pub struct Env<'a> {
    /// Subscription lookups for this batch (one epoch guard for all of them).
    pub subs: Reader<'a, Subscription>,
    pub batch: &'a mut WakeBatch,
    pub rng: &'a mut SmallRng,
    pub now: Instant,
    pub cfg: &'a ClientConfig,
}

pub struct Client {
    pub out: Arc<Outbound>,
    pub opts: ConnectOpts,
    /// `ip:port - cid:N - `, gnatsd's per-connection log prefix.
    pub log_prefix: Box<str>,
    subs: AHashMap<Box<[u8]>, Arc<Subscription>>,
    auth_deadline: Option<Instant>,
    next_ping: Instant,
    pings_out: u32,
    closing: Option<CloseReason>,
}

const OK: &[u8] = b"+OK\r\n";
const PONG: &[u8] = b"PONG\r\n";
const PING: &[u8] = b"PING\r\n";

impl Client {
    pub fn new(out: Arc<Outbound>, log_prefix: String, now: Instant, cfg: &ClientConfig) -> Self {
        Client {
            out,
            opts: ConnectOpts::client_default(),
            log_prefix: log_prefix.into_boxed_str(),
            subs: AHashMap::new(),
            auth_deadline: cfg.auth.required().then(|| now + cfg.auth_timeout),
            next_ping: now + cfg.ping_interval,
            pings_out: 0,
            closing: None,
        }
    }

    pub fn closing(&self) -> Option<&CloseReason> {
        self.closing.as_ref()
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
        if !env.cfg.auth.check(&self.opts) {
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
        if let Some(existing) = self.subs.get(sid) {
            // gnatsd ignores a SUB that reuses a live sid. One whose auto-unsubscribe limit
            // was reached is already gone from the index, so the sid is free again.
            if !existing.exhausted() {
                self.ok(env);
                return ControlFlow::Continue(());
            }
        }
        let sub = Arc::new(Subscription {
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            out: Arc::clone(&self.out),
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        if env.subs.sublist().insert(Arc::clone(&sub)).is_err() {
            self.send(env, ProtoError::InvalidSubject.err_line());
            return ControlFlow::Continue(());
        }
        if let Some(old) = self.subs.insert(sid.into(), sub) {
            env.subs.sublist().remove(&old);
        }
        self.ok(env);
        ControlFlow::Continue(())
    }

    fn on_unsub(&mut self, sid: &[u8], max: Option<u64>, env: &mut Env<'_>) -> ControlFlow<()> {
        crate::trace!(
            "{}->> [UNSUB {}{}]",
            self.log_prefix,
            String::from_utf8_lossy(sid),
            max.map(|m| format!(" {m}")).unwrap_or_default()
        );
        let remove_now = match (self.subs.get(sid), max) {
            (None, _) => false,
            (Some(sub), Some(max)) if max > 0 => {
                sub.max.store(max, Ordering::Relaxed);
                sub.delivered.load(Ordering::Relaxed) >= max
            }
            (Some(_), _) => true,
        };
        if remove_now {
            if let Some(sub) = self.subs.remove(sid) {
                env.subs.sublist().remove(&sub);
            }
        }
        self.ok(env);
        ControlFlow::Continue(())
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
            subs, batch, rng, ..
        } = env;
        let mut targets = Targets {
            sublist: subs.sublist(),
            batch,
            rng,
        };
        let delivered =
            subs.match_with(subject, |result| deliver(&msg, result, skip, &mut targets));
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
            .find(|s| s.queue.is_none() && subject_matches(&s.subject, reply))
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
            if self.pings_out > env.cfg.ping_max {
                return self.fail(ProtoError::StaleConnection, env);
            }
            self.send(env, PING);
            self.next_ping = now + env.cfg.ping_interval;
        }
        ControlFlow::Continue(())
    }

    /// Removes every subscription from the index (the connection is going away).
    pub fn unsubscribe_all(&mut self, sublist: &Sublist<Subscription>) {
        let subs: Vec<_> = self.subs.drain().map(|(_, sub)| sub).collect();
        // One write lock for the whole connection, not one per subscription.
        sublist.remove_batch(&subs);
    }
}

/// A message being published.
pub struct Message<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    /// Length of the header block at the start of `payload` (HPUB), if any.
    pub header_len: Option<usize>,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// What this subscriber gets: HMSG if it has headers on, else MSG without the headers.
    #[inline]
    fn wire_form(&self, sub: &Subscription) -> (Option<usize>, &[u8]) {
        match self.header_len {
            Some(h) if sub.out.headers.load(Ordering::Relaxed) => (Some(h), self.payload),
            Some(h) => (None, &self.payload[h.min(self.payload.len())..]),
            None => (None, self.payload),
        }
    }

    #[inline]
    fn encoded_len(&self, sub: &Subscription) -> usize {
        let (hdr, body) = self.wire_form(sub);
        let mut n = self.subject.len() + 1 + sub.sid.len() + 1 + digits(body.len()) + 2;
        n += body.len() + 2;
        if let Some(r) = self.reply {
            n += r.len() + 1;
        }
        match hdr {
            Some(h) => n + 5 + digits(h) + 1,
            None => n + 4,
        }
    }

    /// `MSG <subject> <sid> [reply] <len>\r\n<payload>\r\n`, or the HMSG form.
    #[inline]
    fn encode(&self, sub: &Subscription, buf: &mut Vec<u8>) {
        let (hdr, body) = self.wire_form(sub);
        buf.extend_from_slice(if hdr.is_some() { b"HMSG " } else { b"MSG " });
        buf.extend_from_slice(self.subject);
        buf.push(b' ');
        buf.extend_from_slice(&sub.sid);
        buf.push(b' ');
        if let Some(r) = self.reply {
            buf.extend_from_slice(r);
            buf.push(b' ');
        }
        if let Some(h) = hdr {
            put_usize(buf, h);
            buf.push(b' ');
        }
        put_usize(buf, body.len());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(body);
        buf.extend_from_slice(b"\r\n");
    }
}

/// What delivery touches besides the match result.
pub struct Targets<'a> {
    pub sublist: &'a Sublist<Subscription>,
    pub batch: &'a mut WakeBatch,
    pub rng: &'a mut SmallRng,
}

/// Delivers `msg` to every plain subscriber and one member of each queue group. `skip` is
/// the publisher's own queue when it asked for no echo. Returns how many got it.
pub fn deliver(
    msg: &Message<'_>,
    result: &MatchResult<Subscription>,
    skip: Option<&Arc<Outbound>>,
    env: &mut Targets<'_>,
) -> usize {
    let is_skipped = |sub: &Subscription| skip.is_some_and(|s| Arc::ptr_eq(s, &sub.out));
    let mut n = 0;
    for sub in &result.plain {
        if !is_skipped(sub) && deliver_one(msg, sub, env) {
            n += 1;
        }
    }
    for group in &result.queues {
        let members = &group.members;
        if members.is_empty() {
            continue;
        }
        // Start at a random member; if it cannot take the message (closing, or past its
        // auto-unsubscribe limit) try the next, so the group does not lose it.
        let start = env.rng.gen_range(0..members.len());
        for i in 0..members.len() {
            let sub = &members[(start + i) % members.len()];
            if !is_skipped(sub) && deliver_one(msg, sub, env) {
                n += 1;
                break;
            }
        }
    }
    n
}

#[inline]
fn deliver_one(msg: &Message<'_>, sub: &Arc<Subscription>, env: &mut Targets<'_>) -> bool {
    if sub.out.is_dead() {
        return false;
    }
    let max = sub.max.load(Ordering::Relaxed);
    let count = if max > 0 {
        // Exact: the limit decides what is delivered.
        sub.delivered.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        // No limit set: the count only matters if `UNSUB sid N` comes later. A plain
        // load/store keeps the hot path free of locked instructions; concurrent deliveries
        // from two cores may lose an increment, which can only let a later limit deliver
        // a message more.
        let c = sub.delivered.load(Ordering::Relaxed) + 1;
        sub.delivered.store(c, Ordering::Relaxed);
        c
    };
    if max > 0 && count > max {
        // Past its limit (a race with the removal below): dropped, as gnatsd does.
        env.sublist.remove(sub);
        return false;
    }
    env.batch
        .stage(&sub.out, msg.encoded_len(sub), |b| msg.encode(sub, b));
    if max > 0 && count == max {
        env.sublist.remove(sub);
    }
    true
}

#[inline]
fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[inline]
fn put_usize(buf: &mut Vec<u8>, n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

#[cfg(test)]
mod tests;
