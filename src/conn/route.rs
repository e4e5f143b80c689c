//! The route connection kind, in two dialects: gnatsd 1.0's route protocol (§2 of the
//! reference, `docs/routes.md`) and the global account of nats-server 2.x's
//! (`docs/routes-2x.md`).
//!
//! A route shares the parser, the delivery path and the outbound queue with clients; what
//! differs is here: the handshake (INFO/CONNECT, the choice of dialect, cluster auth and
//! name, registration, duplicates, gossip), interest held for the remote server, messages
//! from a route delivered to local clients and to routes of the other dialect only (one hop
//! per cluster), and the lines a subscription change sends to every route.
//!
//! The dialect is chosen per route before any subscription traffic, and only this file
//! knows it: the accepting side holds its INFO until the dialler's CONNECT says which
//! dialect it speaks (2.x always sends `cluster`); the dialling side holds its CONNECT until
//! the acceptor's INFO (2.x sends `cluster` and `proto` 2), so a 2.x peer gets a CONNECT
//! with its own cluster name. Either side gives up waiting after a grace period and speaks
//! 1.0 (which is what two ringnats nodes without a cluster name then agree on).

use super::deliver::{
    deliver, deliver_one, deliver_to_member, put_usize, Message, RouteTarget, Source, Targets,
};
use super::{CloseReason, ConnConfig, Connection, Env, Kind, Subscription};
use crate::cluster::{ClosedRoute, Cluster, Dial, RegisterError};
use crate::outbound::{Outbound, WakeBatch};
use crate::proto::info::{ConnectOpts, RemoteInfo};
use crate::proto::{Op, ProtoError};
use ahash::AHashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The route protocol a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// gnatsd 1.0: `SUB`/`UNSUB` under `RSID:cid:sid`, `MSG`.
    V1,
    /// nats-server 2.x, global account `$G`: `RS+`/`RS-`, `RMSG`/`HMSG`.
    V2,
}

/// The global account: the only one this server routes.
const GLOBAL: &[u8] = b"$G";

/// How long the accepting side holds its INFO for the dialler's CONNECT (both server
/// kinds send theirs at once; a client library dialling the route port waits for INFO).
pub const ACCEPT_INFO_GRACE: Duration = Duration::from_millis(500);
/// How long the dialling side holds its CONNECT for the acceptor's INFO (gnatsd and
/// nats-server send theirs at once; a ringnats acceptor waits for our CONNECT).
pub const DIAL_CONNECT_GRACE: Duration = Duration::from_millis(50);

/// What a route connection knows beyond the shared connection state.
#[derive(Debug)]
pub struct RouteState {
    pub peer: SocketAddr,
    /// Set for a route this server dialled.
    pub dial: Option<Dial>,
    /// The remote server's id, from its CONNECT `name` or its INFO.
    pub remote_id: Option<String>,
    pub registered: bool,
    /// Reconnect even if we did not solicit it (our id sorts lower, §2.3).
    pub retry: bool,
    /// A route to self or a duplicate: closing it must not trigger a reconnect.
    pub no_reconnect: bool,
    /// The dialect, once the peer's first words chose it.
    pub dialect: Option<Dialect>,
    /// The cluster name this route carries (2.x).
    cluster_name: String,
    /// Our INFO has been sent.
    info_sent: bool,
    /// Dialling side: our CONNECT has been sent.
    connect_sent: bool,
    /// When to stop waiting for the peer's first words.
    greet_deadline: Option<Instant>,
    /// 2.x: interest key (`subject[ queue]`) → sid of the subscription that holds it here.
    keys: AHashMap<Box<[u8]>, Box<[u8]>>,
    next_sid: u64,
    /// 1.0: a message of this route's on its way to 2.x routes, not yet written.
    pub(super) held: Held,
}

impl Connection {
    /// A route connection: accepted (`dial == None`) or dialled by us. Its first words are
    /// scheduled by [`greet`](Self::greet).
    pub fn route(
        cid: u64,
        out: Arc<Outbound>,
        peer: SocketAddr,
        dial: Option<Dial>,
        auth_required: bool,
        now: Instant,
        cfg: &ConnConfig,
    ) -> Self {
        let auth_deadline = (dial.is_none() && auth_required).then(|| now + cfg.auth_timeout);
        let state = RouteState {
            peer,
            dial,
            remote_id: None,
            registered: false,
            retry: false,
            no_reconnect: false,
            dialect: None,
            cluster_name: String::new(),
            info_sent: false,
            connect_sent: false,
            greet_deadline: None,
            keys: AHashMap::new(),
            next_sid: 0,
            held: Held::default(),
        };
        Connection::with_kind(
            cid,
            out,
            peer,
            Kind::Route(Box::new(state)),
            ConnectOpts::default(),
            auth_deadline,
            now,
            now + cfg.ping_interval,
        )
    }

    fn route_state(&mut self) -> &mut RouteState {
        match &mut self.kind {
            Kind::Route(r) => r,
            Kind::Client => unreachable!("route handling on a client connection"),
        }
    }

    /// The route's first words. Both sides first wait for the peer's (see the module doc);
    /// this only starts the grace timer.
    pub fn greet(&mut self, env: &mut Env<'_>) {
        let now = env.now;
        if let Kind::Route(state) = &mut self.kind {
            let grace = if state.dial.is_some() {
                DIAL_CONNECT_GRACE
            } else {
                ACCEPT_INFO_GRACE
            };
            state.greet_deadline = Some(now + grace);
        }
    }

    /// The route's dialect, once chosen.
    pub fn route_dialect(&self) -> Option<Dialect> {
        match &self.kind {
            Kind::Route(r) => r.dialect,
            Kind::Client => None,
        }
    }

    /// What the cluster needs to decide on reconnecting once this route is gone.
    pub fn closed_route(&self) -> Option<ClosedRoute> {
        let Kind::Route(state) = &self.kind else {
            return None;
        };
        Some(ClosedRoute {
            cid: self.cid,
            remote_id: state.remote_id.clone(),
            url: state.dial.as_ref().map(|d| d.url.clone()),
            explicit: state.dial.as_ref().is_some_and(|d| d.explicit),
            retry: state.retry,
            no_reconnect: state.no_reconnect
                || matches!(self.closing, Some(CloseReason::RouteRejected)),
        })
    }
}

/// Timers of the handshake: the peer said nothing within the grace period.
pub(super) fn on_tick(conn: &mut Connection, env: &mut Env<'_>) {
    let now = env.now;
    let Kind::Route(state) = &mut conn.kind else {
        return;
    };
    if state.greet_deadline.is_none_or(|d| now < d) {
        return;
    }
    state.greet_deadline = None;
    let Some(cluster) = env.shared.cluster.as_ref() else {
        return;
    };
    if state.dial.is_some() {
        // No INFO yet: most likely a ringnats acceptor waiting for us. A configured
        // cluster name asks for the 2.x dialect, none for 1.0; its INFO will tell.
        if !state.connect_sent {
            send_connect(conn, cluster, env, cluster.name().map(|_| Dialect::V2));
        }
    } else if !state.info_sent {
        send_info(conn, cluster, env, Dialect::V1);
    }
}

/// The dialling side's CONNECT in `dialect` (`None`: not known yet, the 1.0 form).
fn send_connect(
    conn: &mut Connection,
    cluster: &Cluster,
    env: &mut Env<'_>,
    dialect: Option<Dialect>,
) {
    let prefix = conn.log_prefix.clone();
    let state = conn.route_state();
    let Some(dial) = &state.dial else {
        return;
    };
    let line = match dialect {
        Some(Dialect::V2) => {
            let name = cluster
                .name()
                .map(str::to_string)
                .unwrap_or_else(|| state.cluster_name.clone());
            state.cluster_name = name.clone();
            cluster.connect_line_v2(&dial.url, &name)
        }
        _ => cluster.connect_line(&dial.url),
    };
    state.connect_sent = true;
    env.batch.stage_bytes(&conn.out, &line);
    crate::debug!("{prefix}Route connect msg sent");
}

/// Our INFO in `dialect`, once per route.
fn send_info(conn: &mut Connection, cluster: &Cluster, env: &mut Env<'_>, dialect: Dialect) {
    let state = conn.route_state();
    if state.info_sent {
        return;
    }
    state.info_sent = true;
    match dialect {
        Dialect::V1 => env.batch.stage_bytes(&conn.out, &cluster.info_line()),
        Dialect::V2 => {
            let line = cluster.info_line_v2(&state.cluster_name);
            env.batch.stage_bytes(&conn.out, &line);
        }
    }
}

/// Sets the route's dialect (once). A 2.x route gets HMSG when the peer takes headers.
fn choose_dialect(conn: &mut Connection, dialect: Dialect, headers: bool) {
    let out = Arc::clone(&conn.out);
    let state = conn.route_state();
    if state.dialect.is_none() {
        state.dialect = Some(dialect);
        out.headers
            .store(dialect == Dialect::V2 && headers, Ordering::Relaxed);
    }
}

/// The peer's cluster name does not match the configured one: refused as 2.9 refuses it.
fn cluster_name_conflict(
    conn: &mut Connection,
    theirs: &str,
    ours: &str,
    env: &mut Env<'_>,
) -> ControlFlow<()> {
    let text = format!("Rejecting connection, cluster name {theirs:?} does not match {ours:?}");
    crate::error!("{}{text}", conn.log_prefix);
    env.batch
        .stage_bytes(&conn.out, format!("-ERR '{text}'\r\n").as_bytes());
    conn.close_with(CloseReason::RouteRejected)
}

/// Handles one op from a route.
pub(super) fn on_op(conn: &mut Connection, op: Op<'_>, env: &mut Env<'_>) -> ControlFlow<()> {
    let dialect = conn.route_dialect();
    if !matches!(op, Op::Msg { .. }) {
        conn.route_state().held.flush(env);
    }
    match op {
        Op::Msg {
            subject,
            sid,
            reply,
            payload,
        } => {
            if dialect == Some(Dialect::V2) {
                return conn.fail(ProtoError::UnknownOp, env);
            }
            crate::trace!(
                "{}->> [MSG {} {} {}]",
                conn.log_prefix,
                String::from_utf8_lossy(subject),
                String::from_utf8_lossy(sid),
                payload.len()
            );
            conn.stats.in_msgs += 1;
            conn.stats.in_bytes += payload.len() as u64;
            let msg = Message::new(subject, reply, None, payload);
            let held = &mut conn.route_state().held;
            let twin = sid.starts_with(b"QRSID") && held.holds(&msg);
            if !twin {
                held.flush(env);
            }
            deliver_from_route(&msg, sid, held, env);
            ControlFlow::Continue(())
        }
        // 1.0 routes never send PUB, but its parser takes one: a plain local fan-out.
        Op::Pub {
            subject,
            reply,
            payload,
            ..
        } => {
            conn.stats.in_msgs += 1;
            conn.stats.in_bytes += payload.len() as u64;
            let msg = Message::new(subject, reply, None, payload);
            deliver_from_route(&msg, b"", &mut conn.route_state().held, env);
            ControlFlow::Continue(())
        }
        Op::Sub {
            subject,
            queue,
            sid,
        } => {
            if dialect == Some(Dialect::V2) {
                return conn.fail(ProtoError::UnknownOp, env);
            }
            crate::trace!(
                "{}->> [SUB {} {}{}]",
                conn.log_prefix,
                String::from_utf8_lossy(subject),
                queue
                    .map(|q| format!("{} ", String::from_utf8_lossy(q)))
                    .unwrap_or_default(),
                String::from_utf8_lossy(sid)
            );
            // Duplicate SUBs with the same rsid are ignored.
            if !conn.has_live_sub(sid) {
                match conn.add_sub(subject, queue, sid, env) {
                    Some(sub) => forward_sub(&sub, env),
                    None => crate::debug!(
                        "{}Invalid subject from route: {}",
                        conn.log_prefix,
                        String::from_utf8_lossy(subject)
                    ),
                }
            }
            ControlFlow::Continue(())
        }
        Op::Unsub { sid, max } => {
            if dialect == Some(Dialect::V2) {
                return conn.fail(ProtoError::UnknownOp, env);
            }
            crate::trace!(
                "{}->> [UNSUB {}]",
                conn.log_prefix,
                String::from_utf8_lossy(sid)
            );
            conn.unsubscribe(sid, max, env);
            ControlFlow::Continue(())
        }
        Op::RouteSub {
            account,
            subject,
            queue,
        } => {
            if dialect != Some(Dialect::V2) {
                return conn.fail(ProtoError::UnknownOp, env);
            }
            on_route_sub(conn, account, subject, queue, env);
            ControlFlow::Continue(())
        }
        Op::RouteUnsub {
            account,
            subject,
            queue,
        } => {
            if dialect != Some(Dialect::V2) {
                return conn.fail(ProtoError::UnknownOp, env);
            }
            crate::trace!(
                "{}->> [RS- {} {}{}]",
                conn.log_prefix,
                String::from_utf8_lossy(account),
                String::from_utf8_lossy(subject),
                queue
                    .map(|q| format!(" {}", String::from_utf8_lossy(q)))
                    .unwrap_or_default()
            );
            let key = interest_key(subject, queue);
            if let Some(sid) = conn.route_state().keys.remove(&key[..]) {
                conn.unsubscribe(&sid, None, env);
            }
            ControlFlow::Continue(())
        }
        Op::Rmsg {
            account,
            subject,
            reply,
            queues,
            header_len,
            payload,
        } => {
            if dialect != Some(Dialect::V2) {
                return conn.fail(ProtoError::UnknownOp, env);
            }
            crate::trace!(
                "{}->> [RMSG {} {} {}]",
                conn.log_prefix,
                String::from_utf8_lossy(account),
                String::from_utf8_lossy(subject),
                payload.len()
            );
            if account != GLOBAL {
                return ControlFlow::Continue(());
            }
            let msg = Message::new(subject, reply, header_len, payload);
            deliver_from_route_v2(&msg, queues, env);
            ControlFlow::Continue(())
        }
        Op::Ping => {
            conn.send(env, super::PONG);
            ControlFlow::Continue(())
        }
        Op::Pong => {
            conn.pings_out = 0;
            ControlFlow::Continue(())
        }
        Op::Connect(json) => on_connect(conn, json, env),
        Op::Info(json) => on_info(conn, json, env),
        Op::Ok => ControlFlow::Continue(()),
        Op::Err(text) => {
            crate::error!(
                "{}Route Error {}",
                conn.log_prefix,
                String::from_utf8_lossy(text)
            );
            conn.close_with(CloseReason::ClientError)
        }
        // Routes never send HPUB (2.x routes carry headers in HMSG).
        Op::Hpub { .. } => conn.fail(ProtoError::UnknownOp, env),
    }
}

/// `subject` or `subject queue`: how 2.x keys route interest.
fn interest_key(subject: &[u8], queue: Option<&[u8]>) -> Vec<u8> {
    let mut key = Vec::with_capacity(subject.len() + queue.map_or(0, |q| q.len() + 1));
    key.extend_from_slice(subject);
    if let Some(q) = queue {
        key.push(b' ');
        key.extend_from_slice(q);
    }
    key
}

/// `RS+ <account> <subject> [<queue> <weight>]`: new interest, or a queue group's new
/// weight. Interest in other accounts (`$SYS`) is ignored: only `$G` is routed.
fn on_route_sub(
    conn: &mut Connection,
    account: &[u8],
    subject: &[u8],
    queue: Option<(&[u8], u32)>,
    env: &mut Env<'_>,
) {
    crate::trace!(
        "{}->> [RS+ {} {}{}]",
        conn.log_prefix,
        String::from_utf8_lossy(account),
        String::from_utf8_lossy(subject),
        queue
            .map(|(q, w)| format!(" {} {w}", String::from_utf8_lossy(q)))
            .unwrap_or_default()
    );
    if account != GLOBAL {
        return;
    }
    let key = interest_key(subject, queue.map(|(q, _)| q));
    let weight = queue.map_or(1, |(_, w)| w);
    if let Some(sid) = conn.route_state().keys.get(&key[..]).cloned() {
        if let Some(sub) = conn.subs.get(&sid[..]) {
            sub.weight.store(weight, Ordering::Relaxed);
        }
        return;
    }
    let state = conn.route_state();
    state.next_sid += 1;
    let mut sid = Vec::new();
    put_usize(&mut sid, state.next_sid as usize);
    match conn.add_sub(subject, queue.map(|(q, _)| q), &sid, env) {
        Some(sub) => {
            sub.weight.store(weight, Ordering::Relaxed);
            conn.route_state().keys.insert(key.into(), sid.into());
            forward_sub(&sub, env);
        }
        None => crate::debug!(
            "{}Invalid subject from route: {}",
            conn.log_prefix,
            String::from_utf8_lossy(subject)
        ),
    }
}

fn on_connect(conn: &mut Connection, json: &[u8], env: &mut Env<'_>) -> ControlFlow<()> {
    if crate::log::trace_enabled() {
        crate::trace!(
            "{}->> [CONNECT {}]",
            conn.log_prefix,
            super::redact_connect(json)
        );
    }
    if conn.opts.apply_json(json).is_err() {
        conn.auth_deadline = None;
        return conn.fail(ProtoError::ParserError, env);
    }
    // A client library dialled the route port.
    if conn.opts.lang.as_deref().is_some_and(|l| !l.is_empty()) {
        conn.auth_deadline = None;
        crate::error!("{}{}", conn.log_prefix, ProtoError::RouteConnect);
        if let Some(cluster) = env.shared.cluster.as_ref() {
            send_info(conn, cluster, env, Dialect::V1);
        }
        return conn.fail(ProtoError::RouteConnect, env);
    }
    let Some(cluster) = env.shared.cluster.as_ref() else {
        return ControlFlow::Continue(());
    };
    // The peer has spoken: the greeting grace no longer applies, also while a bcrypt
    // verdict is pending (the INFO then goes out with the verdict).
    conn.route_state().greet_deadline = None;
    let check = cluster.check_auth(&conn.opts, &env.shared.auth_pool.cache);
    // A rejected route is logged as gnatsd does ("Authorization Error"; the -ERR says
    // "Violation") and gets our INFO in the 1.0 dialect first ([`auth_failed`]); a bcrypt
    // password is verified off the reactor first.
    match conn.authorize(check, env) {
        Some(_) => connect_authorized(conn, env),
        None => ControlFlow::Break(()),
    }
}

/// A route's CONNECT was refused: our INFO (1.0 dialect) goes out before the `-ERR`, as
/// main's handshake always answered a CONNECT with it.
pub(super) fn auth_failed(conn: &mut Connection, env: &mut Env<'_>) {
    if let Some(cluster) = env.shared.cluster.as_ref() {
        send_info(conn, cluster, env, Dialect::V1);
    }
}

/// The rest of a route's CONNECT once its credentials are accepted: the dialect, the
/// cluster name check and our INFO.
pub(super) fn connect_authorized(conn: &mut Connection, env: &mut Env<'_>) -> ControlFlow<()> {
    let Some(cluster) = env.shared.cluster.as_ref() else {
        return ControlFlow::Continue(());
    };
    // 2.x always sends its cluster name; 1.x never does.
    let dialect = match &conn.opts.cluster {
        Some(theirs) => {
            if let Some(ours) = cluster.name() {
                if theirs != ours {
                    let theirs = theirs.clone();
                    send_info(conn, cluster, env, Dialect::V2);
                    return cluster_name_conflict(conn, &theirs, ours, env);
                }
            }
            let name = cluster.name().unwrap_or(theirs).to_string();
            conn.route_state().cluster_name = name;
            Dialect::V2
        }
        None => Dialect::V1,
    };
    if conn.route_state().dial.is_none() {
        let headers = conn.opts.headers;
        choose_dialect(conn, dialect, headers);
        let chosen = conn.route_dialect().unwrap_or(dialect);
        send_info(conn, cluster, env, chosen);
    }
    let name = conn.opts.name.clone().filter(|n| !n.is_empty());
    let state = conn.route_state();
    state.greet_deadline = None;
    if state.remote_id.is_none() {
        state.remote_id = name;
    }
    ControlFlow::Continue(())
}

fn on_info(conn: &mut Connection, json: &[u8], env: &mut Env<'_>) -> ControlFlow<()> {
    let Ok(info) = RemoteInfo::from_json(json) else {
        return conn.fail(ProtoError::ParserError, env);
    };
    let Some(cluster) = env.shared.cluster.as_ref() else {
        return ControlFlow::Continue(());
    };
    let prefix = conn.log_prefix.clone();
    let state = conn.route_state();
    let known = state.remote_id.clone();
    if known.as_deref().is_some_and(|id| id != info.server_id) || state.registered {
        if known.as_deref() == Some(info.server_id.as_str()) {
            // An update from the same server: only its client URLs matter.
            cluster.merge_client_urls(&info.connect_urls);
        } else if cluster.consider_implicit(&info, env.now).is_some() {
            crate::debug!("{prefix}Implicit route to {} scheduled", info.ip);
        }
        return ControlFlow::Continue(());
    }
    // The peer's first INFO: on the dialling side it chooses the dialect.
    state.greet_deadline = None;
    if state.dialect.is_none() {
        let dialect = if info.is_v2() {
            Dialect::V2
        } else {
            Dialect::V1
        };
        if dialect == Dialect::V2 {
            let theirs = info.cluster.clone().unwrap_or_default();
            if let Some(ours) = cluster.name() {
                if theirs != ours {
                    return cluster_name_conflict(conn, &theirs, ours, env);
                }
            }
            conn.route_state().cluster_name = cluster.name().unwrap_or(&theirs).to_string();
        }
        choose_dialect(conn, dialect, info.headers);
    }
    let dialect = conn.route_dialect().unwrap_or(Dialect::V1);
    if conn.route_state().dial.is_some() && !conn.route_state().connect_sent {
        send_connect(conn, cluster, env, Some(dialect));
    }
    send_info(conn, cluster, env, dialect);
    let state = conn.route_state();
    state.remote_id = Some(info.server_id.clone());
    let peer_ip = state.peer.ip().to_string();
    let (url, explicit) = match &state.dial {
        Some(d) => (Some(d.url.clone()), d.explicit),
        None => (None, false),
    };
    match cluster.register(
        &info,
        &peer_ip,
        conn.cid,
        &conn.out,
        url.as_ref(),
        explicit,
        dialect,
    ) {
        Err(RegisterError::SelfRoute) => {
            crate::debug!("{prefix}Detected route to self, ignoring");
            conn.route_state().no_reconnect = true;
            conn.close_with(CloseReason::RouteRejected)
        }
        Err(RegisterError::Duplicate) => {
            crate::debug!(
                "{prefix}Detected duplicate remote route \"{}\"",
                info.server_id
            );
            conn.route_state().no_reconnect = true;
            conn.close_with(CloseReason::RouteRejected)
        }
        Ok(others) => {
            let state = conn.route_state();
            state.registered = true;
            state.retry = cluster.server_id < info.server_id;
            match dialect {
                Dialect::V1 => {
                    crate::debug!("{prefix}Registering remote route \"{}\"", info.server_id)
                }
                Dialect::V2 => crate::debug!(
                    "{prefix}Registering remote route \"{}\" (nats-server 2.x protocol, cluster \"{}\")",
                    info.server_id,
                    conn.route_state().cluster_name
                ),
            }
            match dialect {
                Dialect::V1 => send_local_subs(conn, env),
                Dialect::V2 => {
                    // Our CONNECT/INFO go first: the interest snapshot is written to the
                    // queue directly.
                    env.batch.flush_one(&conn.out);
                    cluster.attach_v2(&conn.out, env.batch);
                }
            }
            crate::debug!("{prefix}Route sent local subscriptions");
            if let Some(gossip) = cluster.gossip_line(&info.server_id) {
                for other in &others {
                    env.batch.stage_bytes(other, &gossip);
                }
            }
            cluster.merge_client_urls(&info.connect_urls);
            ControlFlow::Continue(())
        }
    }
}

/// Whether a subscription's interest goes to routes of `dialect`: a local client's goes to
/// every route, a route's only to routes of the other dialect (the bridge).
fn advertised_to(sub: &Subscription, dialect: Dialect) -> bool {
    sub.origin.dialect() != Some(dialect)
}

/// Sends the interest 1.0 routes see (local clients, 2.x routes) to a newly registered 1.0
/// route, in one flush.
fn send_local_subs(conn: &Connection, env: &mut Env<'_>) {
    let mut lines = Vec::new();
    env.shared.sublist.for_each(|sub| {
        if !advertised_to(sub, Dialect::V1) {
            return;
        }
        sub_line(&mut lines, sub);
        // Beyond 1.0, which sends no limit here: what is left of a pending
        // auto-unsubscribe limit, so the new route cannot over-deliver.
        if sub.max() > 0 {
            let left = sub.max().saturating_sub(sub.delivered()).max(1);
            unsub_line(&mut lines, sub, Some(left));
        }
    });
    if !lines.is_empty() {
        env.batch.stage_bytes(&conn.out, &lines);
    }
}

/// `SUB <subject>  RSID:<cid>:<sid>` (the empty queue field keeps its space, as 1.0
/// writes it) or `SUB <subject> <queue> QRSID:<cid>:<sid>`.
fn sub_line(buf: &mut Vec<u8>, sub: &Subscription) {
    buf.extend_from_slice(b"SUB ");
    buf.extend_from_slice(&sub.subject);
    buf.push(b' ');
    if let Some(q) = &sub.queue {
        buf.extend_from_slice(q);
    }
    buf.push(b' ');
    route_sid(buf, sub);
    buf.extend_from_slice(b"\r\n");
}

/// The 1.0 route sid of a subscription: its holder's connection id and its sid there.
fn route_sid(buf: &mut Vec<u8>, sub: &Subscription) {
    buf.extend_from_slice(if sub.queue.is_some() {
        b"QRSID:"
    } else {
        b"RSID:"
    });
    put_usize(buf, sub.origin.cid() as usize);
    buf.push(b':');
    buf.extend_from_slice(&sub.sid);
}

/// A subscription was added (a local client's, or a route's): tell the routes it is
/// advertised to.
pub(super) fn forward_sub(sub: &Subscription, env: &mut Env<'_>) {
    let Some(cluster) = env.shared.cluster.as_ref() else {
        return;
    };
    if advertised_to(sub, Dialect::V2) {
        let key = interest_key(&sub.subject, sub.queue.as_deref());
        cluster.interest_v2(&key, sub.queue.is_some(), 1, env.batch);
    }
    if advertised_to(sub, Dialect::V1) {
        let routes = cluster.routes();
        if routes.is_empty() {
            return;
        }
        let mut line = Vec::with_capacity(32 + sub.subject.len() + sub.sid.len());
        sub_line(&mut line, sub);
        for r in routes.iter() {
            env.batch.stage_bytes(r, &line);
        }
    }
}

/// A subscription was removed (`max: None`), or given an auto-unsubscribe limit.
pub(super) fn forward_unsub(sub: &Subscription, max: Option<u64>, env: &mut Env<'_>) {
    if let Some(cluster) = env.shared.cluster.as_ref() {
        withdraw(cluster, env.batch, sub, max);
    }
}

/// Withdraws a subscription's interest from the routes it was advertised to (once), or,
/// with `max`, tells 1.0 routes of a local client's pending limit (2.x has none).
pub(crate) fn withdraw(
    cluster: &Cluster,
    batch: &mut WakeBatch,
    sub: &Subscription,
    max: Option<u64>,
) {
    if max.is_some() && !sub.is_local() {
        return;
    }
    if max.is_none() {
        if sub.withdrawn.swap(true, Ordering::AcqRel) {
            return;
        }
        if advertised_to(sub, Dialect::V2) {
            let key = interest_key(&sub.subject, sub.queue.as_deref());
            cluster.interest_v2(&key, sub.queue.is_some(), -1, batch);
        }
        if let (Some(q), true) = (&sub.queue, advertised_to(sub, Dialect::V1)) {
            cluster.remember_gone_member(sub.origin.cid(), &sub.sid, q);
        }
    }
    if !advertised_to(sub, Dialect::V1) {
        return;
    }
    let routes = cluster.routes();
    if routes.is_empty() {
        return;
    }
    let mut line = Vec::with_capacity(32 + sub.sid.len());
    unsub_line(&mut line, sub, max);
    for r in routes.iter() {
        batch.stage_bytes(r, &line);
    }
}

fn unsub_line(buf: &mut Vec<u8>, sub: &Subscription, max: Option<u64>) {
    buf.extend_from_slice(b"UNSUB ");
    route_sid(buf, sub);
    if let Some(max) = max {
        buf.push(b' ');
        put_usize(buf, max as usize);
    }
    buf.extend_from_slice(b"\r\n");
}

/// Writes what one route gets for one message, in its dialect. 1.0: one `MSG` under the
/// plain subscription's sid and one per chosen queue member's `QRSID`. 2.x: one `RMSG` (or
/// `HMSG`) naming the queue groups the receiver must serve. Returns whether it was sent.
pub(super) fn send_to_route(msg: &Message<'_>, t: &RouteTarget<'_>, env: &mut Targets<'_>) -> bool {
    let Some(first) = t.plain.or(t.queues.first().copied()) else {
        return false;
    };
    match first.origin.dialect() {
        Some(Dialect::V2) => {
            if t.out.is_dead() {
                return false;
            }
            let mut head: smallvec::SmallVec<[u8; 160]> = smallvec::SmallVec::new();
            let (hdr, body) = match msg.header_len {
                Some(h) if t.out.headers.load(Ordering::Relaxed) => (Some(h), msg.payload),
                Some(h) => (None, &msg.payload[h.min(msg.payload.len())..]),
                None => (None, msg.payload),
            };
            head.extend_from_slice(if hdr.is_some() {
                b"HMSG $G "
            } else {
                b"RMSG $G "
            });
            head.extend_from_slice(msg.subject);
            head.push(b' ');
            if !t.queues.is_empty() {
                match msg.reply {
                    Some(r) => {
                        head.extend_from_slice(b"+ ");
                        head.extend_from_slice(r);
                        head.push(b' ');
                    }
                    None => head.extend_from_slice(b"| "),
                }
                for q in &t.queues {
                    head.extend_from_slice(q.queue.as_deref().unwrap_or_default());
                    head.push(b' ');
                }
            } else if let Some(r) = msg.reply {
                head.extend_from_slice(r);
                head.push(b' ');
            }
            let mut num = Vec::with_capacity(24);
            if let Some(h) = hdr {
                put_usize(&mut num, h);
                num.push(b' ');
            }
            put_usize(&mut num, body.len());
            head.extend_from_slice(&num);
            head.extend_from_slice(b"\r\n");
            env.batch.stage(t.out, head.len() + body.len() + 2, |b| {
                b.extend_from_slice(&head);
                b.extend_from_slice(body);
                b.extend_from_slice(b"\r\n");
            });
            true
        }
        _ => {
            let mut sent = false;
            if let Some(p) = t.plain {
                sent |= deliver_one(msg, p, env);
            }
            for q in &t.queues {
                sent |= deliver_one(msg, q, env);
            }
            sent
        }
    }
}

/// A 1.0 route's message bound for 2.x routes, held until the route's next op or the end
/// of its input. gnatsd 1.0 sends a message that matches both plain and queue subscriptions
/// behind this server as a plain `MSG` followed by one `QRSID` `MSG` per chosen queue member;
/// a 2.x receiver delivers every `RMSG` to its plain subscribers, so forwarding each as it
/// comes would give them the message twice. Held, the twins merge into one
/// `RMSG <subject> | <queues>` per 2.x route. Only a message that a twin can follow is held
/// (the 2.x route holds a queue member that matched it), until the route's next op or for
/// at most [`HOLD_MAX`]: gnatsd's flusher may write the pair in two pieces.
#[derive(Default)]
pub struct Held {
    /// A plain `MSG` adds routes; a `QRSID` one only merges into routes already held.
    collecting: bool,
    /// When the current op arrived.
    now: Option<Instant>,
    msg: Option<HeldMsg>,
}

/// How long a held message waits for its twin. 200 µs let twins through unmerged when the
/// machine was loaded (gnatsd's second write came later); the wait costs only the last
/// message of a burst (any next op of the route releases the hold).
pub const HOLD_MAX: Duration = Duration::from_millis(1);

struct HeldMsg {
    since: Instant,
    subject: Box<[u8]>,
    reply: Option<Box<[u8]>>,
    payload: Box<[u8]>,
    /// Per 2.x route: a subscription it holds (which route) and the queue members chosen.
    routes: smallvec::SmallVec<[HeldRoute; 2]>,
}

type HeldRoute = (Arc<Subscription>, Vec<Arc<Subscription>>);

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("routes", &self.msg.as_ref().map_or(0, |m| m.routes.len()))
            .finish()
    }
}

impl Held {
    pub(super) fn is_holding(&self) -> bool {
        self.msg.is_some()
    }

    /// The same message as the one held (a `QRSID` twin of the plain one).
    fn holds(&self, msg: &Message<'_>) -> bool {
        self.msg.as_ref().is_some_and(|h| {
            *h.subject == *msg.subject
                && h.reply.as_deref() == msg.reply
                && *h.payload == *msg.payload
        })
    }

    /// Takes `t` if it is a 2.x route: merged into the held copy for the same route, or,
    /// while collecting and if a twin can follow (`twin`: the route holds a queue member
    /// that matched), held as a new one. Returns whether it was taken.
    pub(super) fn absorb(&mut self, msg: &Message<'_>, t: &RouteTarget<'_>, twin: bool) -> bool {
        let Some(via) = t.plain.or(t.queues.first().copied()) else {
            return false;
        };
        if via.origin.dialect() != Some(Dialect::V2) {
            return false;
        }
        let queues = t.queues.iter().map(|&q| Arc::clone(q));
        if let Some(h) = &mut self.msg {
            if let Some((_, qs)) = h
                .routes
                .iter_mut()
                .find(|(v, _)| Arc::ptr_eq(&v.out, t.out))
            {
                qs.extend(queues);
                return true;
            }
            if self.collecting && twin {
                h.routes.push((Arc::clone(via), queues.collect()));
                return true;
            }
            return false;
        }
        if !(self.collecting && twin) {
            return false;
        }
        self.msg = Some(HeldMsg {
            since: self.now.unwrap_or_else(Instant::now),
            subject: msg.subject.into(),
            reply: msg.reply.map(Into::into),
            payload: msg.payload.into(),
            routes: smallvec::smallvec![(Arc::clone(via), queues.collect())],
        });
        true
    }

    /// Writes the held message out if it has waited [`HOLD_MAX`]; returns whether one is
    /// still held.
    pub(super) fn expire(&mut self, env: &mut Env<'_>) -> bool {
        if self
            .msg
            .as_ref()
            .is_some_and(|h| env.now.saturating_duration_since(h.since) >= HOLD_MAX)
        {
            self.flush(env);
        }
        self.msg.is_some()
    }

    /// Writes the held message to its routes: one `RMSG` each, naming the merged queues.
    pub(super) fn flush(&mut self, env: &mut Env<'_>) {
        let Some(h) = self.msg.take() else {
            return;
        };
        let msg = Message::new(&h.subject, h.reply.as_deref(), None, &h.payload);
        let (_, mut targets) = env.delivery();
        for (via, queues) in &h.routes {
            let t = RouteTarget {
                out: &via.out,
                plain: Some(via),
                queues: queues.iter().collect(),
            };
            send_to_route(&msg, &t, &mut targets);
        }
    }
}

/// Parses `QRSID:<cid>:<sid>`; anything malformed is `None` (and the message dropped).
pub fn parse_qrsid(sid: &[u8]) -> Option<(u64, &[u8])> {
    let rest = sid.strip_prefix(b"QRSID:")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let (cid, sid) = (&rest[..colon], &rest[colon + 1..]);
    if cid.is_empty() || sid.is_empty() || !cid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let cid = std::str::from_utf8(cid).ok()?.parse().ok()?;
    Some((cid, sid))
}

/// A message from a 1.0 route: a `QRSID` one to exactly that member (or another member of
/// its group when it is gone), any other to local plain subscribers and 2.x routes only.
/// 2.x-bound copies are held in `held` (see [`Held`]).
fn deliver_from_route(msg: &Message<'_>, sid: &[u8], held: &mut Held, env: &mut Env<'_>) {
    let shared = env.shared;
    held.now = Some(env.now);
    let (subs, mut targets) = env.delivery();
    let is_queue = sid.starts_with(b"QRSID");
    held.collecting = !is_queue;
    targets.held = Some(held);
    if is_queue {
        let Some((cid, csid)) = parse_qrsid(sid) else {
            return;
        };
        let gone = shared
            .cluster
            .as_ref()
            .and_then(|c| c.gone_member_group(cid, csid));
        subs.match_with(msg.subject, |result| {
            deliver_to_member(msg, result, cid, csid, gone.as_deref(), &mut targets)
        });
    } else {
        let source = Source::Route {
            dialect: Dialect::V1,
            queues: b"",
        };
        subs.match_with(msg.subject, |result| {
            deliver(msg, result, source, &mut targets)
        });
    }
}

/// A message from a 2.x route: local clients and 1.0 routes; the queue groups it names are
/// served by a member outside the 2.x cluster.
fn deliver_from_route_v2(msg: &Message<'_>, queues: &[u8], env: &mut Env<'_>) {
    let (subs, mut targets) = env.delivery();
    let source = Source::Route {
        dialect: Dialect::V2,
        queues,
    };
    subs.match_with(msg.subject, |result| {
        deliver(msg, result, source, &mut targets)
    });
}

#[cfg(test)]
mod tests {
    use super::parse_qrsid;

    #[test]
    fn qrsid_parsing_drops_malformed_sids() {
        assert_eq!(parse_qrsid(b"QRSID:3:8"), Some((3, &b"8"[..])));
        assert_eq!(parse_qrsid(b"QRSID:12:a:b"), Some((12, &b"a:b"[..])));
        for bad in [
            &b"QRSID"[..],
            b"QRSID:1",
            b"QRSID:1:",
            b"QRSID::1",
            b"QRSID:x:1",
        ] {
            assert_eq!(parse_qrsid(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
