//! The route connection kind: gnatsd 1.0's route protocol (§2 of the reference).
//!
//! A route shares the parser, the delivery path and the outbound queue with clients; what
//! differs is here: the handshake (INFO/CONNECT, cluster auth, registration, duplicates,
//! gossip), interest held under the remote's `RSID:cid:sid` sids, messages from a route
//! delivered to local clients only (one hop), and the SUB/UNSUB lines a client's interest
//! sends to every route.

use super::deliver::{deliver, deliver_to_member, put_usize, Message, Source, Targets};
use super::{CloseReason, ConnConfig, Connection, Env, Kind, Origin, Subscription};
use crate::auth::Check;
use crate::cluster::{ClosedRoute, Cluster, Dial, RegisterError};
use crate::outbound::{Outbound, WakeBatch};
use crate::proto::info::{ConnectOpts, RemoteInfo};
use crate::proto::{Op, ProtoError};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

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
}

impl Connection {
    /// A route connection: accepted (`dial == None`) or dialled by us. Its first bytes
    /// (INFO, or CONNECT then INFO) are staged with [`greet`](Self::greet).
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
        };
        Connection::with_kind(
            cid,
            out,
            format!("{peer} - rid:{cid} - "),
            Kind::Route(Box::new(state)),
            ConnectOpts::default(),
            auth_deadline,
            now + cfg.ping_interval,
        )
    }

    fn route_state(&mut self) -> &mut RouteState {
        match &mut self.kind {
            Kind::Route(r) => r,
            Kind::Client => unreachable!("route handling on a client connection"),
        }
    }

    /// The route's first words: the accepting side sends its INFO; the dialling side
    /// sends CONNECT, then its INFO (§2.2).
    pub fn greet(&mut self, env: &mut Env<'_>) {
        let Some(cluster) = env.shared.cluster.as_ref() else {
            return;
        };
        let Kind::Route(state) = &self.kind else {
            return;
        };
        if let Some(dial) = &state.dial {
            env.batch
                .stage_bytes(&self.out, &cluster.connect_line(&dial.url));
            crate::debug!("{}Route connect msg sent", self.log_prefix);
        }
        env.batch.stage_bytes(&self.out, cluster.info_line());
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

/// Handles one op from a route.
pub(super) fn on_op(conn: &mut Connection, op: Op<'_>, env: &mut Env<'_>) -> ControlFlow<()> {
    match op {
        Op::Msg {
            subject,
            sid,
            reply,
            payload,
        } => {
            crate::trace!(
                "{}->> [MSG {} {} {}]",
                conn.log_prefix,
                String::from_utf8_lossy(subject),
                String::from_utf8_lossy(sid),
                payload.len()
            );
            let msg = Message {
                subject,
                reply,
                header_len: None,
                payload,
            };
            deliver_from_route(&msg, sid, env);
            ControlFlow::Continue(())
        }
        // 1.0 routes never send PUB, but its parser takes one: a plain local fan-out.
        Op::Pub {
            subject,
            reply,
            payload,
        } => {
            let msg = Message {
                subject,
                reply,
                header_len: None,
                payload,
            };
            deliver_from_route(&msg, b"", env);
            ControlFlow::Continue(())
        }
        Op::Sub {
            subject,
            queue,
            sid,
        } => {
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
            if !conn.has_live_sub(sid) && conn.add_sub(subject, queue, sid, env).is_none() {
                crate::debug!(
                    "{}Invalid subject from route: {}",
                    conn.log_prefix,
                    String::from_utf8_lossy(subject)
                );
            }
            ControlFlow::Continue(())
        }
        Op::Unsub { sid, max } => {
            crate::trace!(
                "{}->> [UNSUB {}]",
                conn.log_prefix,
                String::from_utf8_lossy(sid)
            );
            conn.unsubscribe(sid, max, env);
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
        // Routes never negotiate headers in the 1.0 dialect.
        Op::Hpub { .. } => conn.fail(ProtoError::UnknownOp, env),
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
        return conn.fail(ProtoError::RouteConnect, env);
    }
    let check = match env.shared.cluster.as_ref() {
        Some(c) => c.check_auth(&conn.opts, &env.shared.auth_pool.cache),
        None => Check::Fail,
    };
    // A rejected route is logged as gnatsd does ("Authorization Error"; the -ERR says
    // "Violation"); a bcrypt password is verified off the reactor first.
    match conn.authorize(check, env) {
        Some(_) => connect_authorized(conn),
        None => ControlFlow::Break(()),
    }
}

/// The rest of a route's CONNECT once its credentials are accepted.
pub(super) fn connect_authorized(conn: &mut Connection) -> ControlFlow<()> {
    let name = conn.opts.name.clone().filter(|n| !n.is_empty());
    let state = conn.route_state();
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
    state.remote_id = Some(info.server_id.clone());
    let peer_ip = state.peer.ip().to_string();
    let (url, explicit) = match &state.dial {
        Some(d) => (Some(d.url.clone()), d.explicit),
        None => (None, false),
    };
    match cluster.register(&info, &peer_ip, conn.cid, &conn.out, url.as_ref(), explicit) {
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
            crate::debug!("{prefix}Registering remote route \"{}\"", info.server_id);
            send_local_subs(conn, env);
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

/// Sends every local client subscription to a newly registered route, in one flush.
fn send_local_subs(conn: &Connection, env: &mut Env<'_>) {
    let mut lines = Vec::new();
    env.shared.sublist.for_each(|sub| {
        if let Origin::Client { cid } = sub.origin {
            sub_line(&mut lines, sub, cid);
            // Beyond 1.0, which sends no limit here: what is left of a pending
            // auto-unsubscribe limit, so the new route cannot over-deliver.
            if sub.max() > 0 {
                let left = sub.max().saturating_sub(sub.delivered()).max(1);
                unsub_line(&mut lines, sub, cid, Some(left));
            }
        }
    });
    if !lines.is_empty() {
        env.batch.stage_bytes(&conn.out, &lines);
    }
}

/// `SUB <subject>  RSID:<cid>:<sid>` (the empty queue field keeps its space, as 1.0
/// writes it) or `SUB <subject> <queue> QRSID:<cid>:<sid>`.
fn sub_line(buf: &mut Vec<u8>, sub: &Subscription, cid: u64) {
    buf.extend_from_slice(b"SUB ");
    buf.extend_from_slice(&sub.subject);
    buf.push(b' ');
    if let Some(q) = &sub.queue {
        buf.extend_from_slice(q);
    }
    buf.push(b' ');
    route_sid(buf, sub, cid);
    buf.extend_from_slice(b"\r\n");
}

fn route_sid(buf: &mut Vec<u8>, sub: &Subscription, cid: u64) {
    buf.extend_from_slice(if sub.queue.is_some() {
        b"QRSID:"
    } else {
        b"RSID:"
    });
    put_usize(buf, cid as usize);
    buf.push(b':');
    buf.extend_from_slice(&sub.sid);
}

/// A local client subscribed: tell every route.
pub(super) fn forward_sub(sub: &Subscription, env: &mut Env<'_>) {
    let Some(cluster) = env.shared.cluster.as_ref() else {
        return;
    };
    let Origin::Client { cid } = sub.origin else {
        return;
    };
    let routes = cluster.routes();
    if routes.is_empty() {
        return;
    }
    let mut line = Vec::with_capacity(32 + sub.subject.len() + sub.sid.len());
    sub_line(&mut line, sub, cid);
    for r in routes.iter() {
        env.batch.stage_bytes(r, &line);
    }
}

/// A local client unsubscribed (`max`: a pending auto-unsubscribe limit) or closed.
pub(super) fn forward_unsub(sub: &Subscription, max: Option<u64>, env: &mut Env<'_>) {
    if let Some(cluster) = env.shared.cluster.as_ref() {
        withdraw(cluster, env.batch, sub, max);
    }
}

/// Stages `UNSUB <rsid>[ <max>]` for a local client subscription on every route.
pub(crate) fn withdraw(
    cluster: &Cluster,
    batch: &mut WakeBatch,
    sub: &Subscription,
    max: Option<u64>,
) {
    let Origin::Client { cid } = sub.origin else {
        return;
    };
    if max.is_none() {
        if let Some(q) = &sub.queue {
            cluster.remember_gone_member(cid, &sub.sid, q);
        }
    }
    let routes = cluster.routes();
    if routes.is_empty() {
        return;
    }
    let mut line = Vec::with_capacity(32 + sub.sid.len());
    unsub_line(&mut line, sub, cid, max);
    for r in routes.iter() {
        batch.stage_bytes(r, &line);
    }
}

fn unsub_line(buf: &mut Vec<u8>, sub: &Subscription, cid: u64, max: Option<u64>) {
    buf.extend_from_slice(b"UNSUB ");
    route_sid(buf, sub, cid);
    if let Some(max) = max {
        buf.push(b' ');
        put_usize(buf, max as usize);
    }
    buf.extend_from_slice(b"\r\n");
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

/// A message from a route: a `QRSID` one to exactly that local member (or another local
/// member of its group when it is gone), any other to local plain subscribers only.
fn deliver_from_route(msg: &Message<'_>, sid: &[u8], env: &mut Env<'_>) {
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
    if sid.starts_with(b"QRSID") {
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
        subs.match_with(msg.subject, |result| {
            deliver(msg, result, Source::Route, &mut targets)
        });
    }
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
