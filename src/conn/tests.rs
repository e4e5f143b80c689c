//! Sans-IO tests of the client state machine: bytes in, bytes queued out, no sockets.

use super::*;
use crate::proto::{Parser, ParserConfig};
use crate::shared::Shared;
use rand::SeedableRng;

pub(super) struct Harness {
    pub shared: Shared,
    /// The reloadable options the connections see (a reactor's cached copy).
    pub live: crate::shared::Live,
    pub batch: WakeBatch,
    run: PubRun,
    rng: SmallRng,
    pub now: Instant,
}

pub(super) struct Peer {
    pub conn: Connection,
    parser: Parser,
    stalled: Vec<Arc<Outbound>>,
}

impl Harness {
    pub fn new() -> Self {
        Harness::with_shared(Shared::new(Options::default(), "SERVER".into(), 4222, None))
    }

    pub fn with_shared(shared: Shared) -> Self {
        let mut live = crate::shared::Live::clone(&shared.live());
        live.conn_cfg.ping_interval = Duration::from_secs(120);
        Harness {
            shared,
            live,
            batch: WakeBatch::new(1),
            run: PubRun::default(),
            rng: SmallRng::seed_from_u64(7),
            now: Instant::now(),
        }
    }

    fn peer_addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    pub fn peer(&self, cid: u64) -> Peer {
        let out = Arc::new(Outbound::new(cid, 0, cid, 1 << 20));
        Peer {
            conn: Connection::client(cid, out, Self::peer_addr(), self.now, &self.live.conn_cfg),
            parser: Parser::new(ParserConfig {
                max_control_line: 1024,
                max_payload: 1 << 20,
                headers: true,
                route: false,
                require_connect: false,
            }),
            stalled: Vec::new(),
        }
    }

    /// A route connection: accepted, or dialled at `dial`.
    pub fn route_peer(&mut self, cid: u64, dial: Option<crate::cluster::Dial>) -> Peer {
        let out = Arc::new(Outbound::for_route(cid, 0, cid, 1 << 24));
        let auth = self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|c| c.auth_required());
        let mut peer = Peer {
            conn: Connection::route(
                cid,
                out,
                Self::peer_addr(),
                dial,
                auth,
                self.now,
                &self.live.conn_cfg,
            ),
            parser: Parser::new(ParserConfig {
                max_control_line: 4096,
                max_payload: 1 << 20,
                headers: false,
                route: true,
                require_connect: false,
            }),
            stalled: Vec::new(),
        };
        let mut env = self.env();
        peer.conn.greet(&mut env);
        drop(env);
        self.batch.flush(&mut peer.stalled);
        peer
    }

    pub fn env(&mut self) -> Env<'_> {
        Env::new(
            &self.shared,
            &self.live,
            &mut self.batch,
            &mut self.run,
            &mut self.rng,
            self.now,
        )
    }

    /// Parses `bytes` from `peer`; what a route holds for merging is released at the end,
    /// as the reactor does once it has waited long enough.
    pub fn feed(&mut self, peer: &mut Peer, bytes: &[u8]) {
        self.feed_with(peer, bytes, true);
    }

    /// Like [`feed`](Self::feed), but a route keeps what it holds (more input follows).
    pub fn feed_part(&mut self, peer: &mut Peer, bytes: &[u8]) {
        self.feed_with(peer, bytes, false);
    }

    fn feed_with(&mut self, peer: &mut Peer, bytes: &[u8], release: bool) {
        let mut env = self.env();
        let conn = &mut peer.conn;
        let parsed = peer.parser.parse(bytes, |op| conn.on_op(op, &mut env));
        conn.input_done(&mut env);
        if let Err(e) = parsed {
            let _ = conn.fail(e, &mut env);
        }
        if release {
            conn.end_of_input(&mut env);
        }
        drop(env);
        self.batch.flush(&mut peer.stalled);
    }

    pub fn tick(&mut self, peer: &mut Peer) {
        let mut env = self.env();
        let _ = peer.conn.on_tick(&mut env);
        drop(env);
        self.batch.flush(&mut peer.stalled);
    }

    pub fn close(&mut self, peer: &mut Peer) {
        let mut env = self.env();
        peer.conn.unsubscribe_all(&mut env);
        drop(env);
        self.batch.flush(&mut peer.stalled);
    }
}

pub(super) fn drain(peer: &Peer) -> String {
    let mut v = Vec::new();
    peer.conn.out.take(&mut v);
    String::from_utf8(v).unwrap()
}

#[test]
fn verbose_ok_and_delivery() {
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(&mut a, b"SUB foo 1\r\nPUB foo 2\r\nhi\r\n");
    assert_eq!(drain(&a), "+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\n");
}

#[test]
fn cross_client_delivery_marks_the_subscriber_once_per_batch() {
    let mut h = Harness::new();
    let mut sub = h.peer(1);
    let mut publ = h.peer(2);
    h.feed(&mut sub, b"CONNECT {\"verbose\":false}\r\nSUB a.* 9\r\n");
    h.batch.list_mut(0).clear();
    h.feed(
        &mut publ,
        b"CONNECT {\"verbose\":false}\r\nPUB a.b 1\r\nx\r\nPUB a.c r 1\r\ny\r\n",
    );
    assert_eq!(drain(&sub), "MSG a.b 9 1\r\nx\r\nMSG a.c 9 r 1\r\ny\r\n");
    let marks = h.batch.list_mut(0).clone();
    assert_eq!(
        marks,
        vec![crate::mailbox::Mail::Flush(1)],
        "subscriber marked once for two messages"
    );
}

#[test]
fn auto_unsubscribe_counts_deliveries() {
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(
        &mut a,
        b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\nUNSUB 1 1\r\n",
    );
    h.feed(&mut a, b"PUB s 1\r\na\r\nPUB s 1\r\nb\r\n");
    assert_eq!(drain(&a), "MSG s 1 1\r\na\r\n");
    assert_eq!(
        h.shared.sublist.count(),
        0,
        "removed from the index at the limit"
    );
}

#[test]
fn keepalive_pings_then_stale() {
    let mut h = Harness::new();
    h.live.conn_cfg.ping_interval = Duration::from_secs(1);
    let mut a = h.peer(1);
    for _ in 0..2 {
        h.now += Duration::from_secs(1);
        h.tick(&mut a);
    }
    assert!(a.conn.closing().is_none());
    h.now += Duration::from_secs(1);
    h.tick(&mut a);
    assert_eq!(drain(&a), "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n");
    assert_eq!(
        a.conn.closing(),
        Some(&CloseReason::Protocol(ProtoError::StaleConnection))
    );
}

#[test]
fn pong_resets_outstanding_pings() {
    let mut h = Harness::new();
    h.live.conn_cfg.ping_interval = Duration::from_secs(1);
    let mut a = h.peer(1);
    for _ in 0..6 {
        h.now += Duration::from_secs(1);
        h.tick(&mut a);
        h.feed(&mut a, b"PONG\r\n");
    }
    assert!(a.conn.closing().is_none());
}

#[test]
fn auth_timeout_fires_without_connect() {
    let mut h = Harness::new();
    h.live.conn_cfg.auth.token = Some("t".into());
    let mut a = h.peer(1);
    h.now += Duration::from_millis(999);
    h.tick(&mut a);
    assert!(a.conn.closing().is_none());
    h.now += Duration::from_millis(1);
    h.tick(&mut a);
    assert_eq!(drain(&a), "-ERR 'Authorization Timeout'\r\n");
}

#[test]
fn closing_client_removes_its_subscriptions() {
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(&mut a, b"SUB a 1\r\nSUB b q 2\r\n");
    assert_eq!(h.shared.sublist.count(), 2);
    h.close(&mut a);
    assert_eq!(h.shared.sublist.count(), 0);
}

#[test]
fn message_encoding_matches_length_estimate() {
    let out = Arc::new(Outbound::new(1, 0, 1, 1 << 20));
    let sub = Subscription::new(b"a.b", None, b"123", Origin::Client { cid: 1 }, out);
    for (reply, hdr, payload) in [
        (None, None, &b""[..]),
        (Some(&b"_INBOX.x"[..]), None, &b"0123456789"[..]),
        (Some(&b"r"[..]), Some(12), &b"NATS/1.0\r\n\r\nbody"[..]),
    ] {
        for headers in [false, true] {
            sub.out.headers.store(headers, Ordering::Relaxed);
            let m = Message::new(b"a.b", reply, hdr, payload);
            let mut buf = Vec::new();
            m.encode(&sub, &mut buf);
            assert_eq!(
                buf.len(),
                m.encoded_len(&sub),
                "{}",
                String::from_utf8_lossy(&buf)
            );
        }
    }
}

#[test]
fn fan_out_encoding_is_the_same_bytes_for_every_subscriber() {
    let subs: Vec<_> = [&b"1"[..], b"22", b"RSID:7:333"]
        .iter()
        .map(|sid| {
            let out = Arc::new(Outbound::new(1, 0, 1, 1 << 20));
            Subscription::new(b"a.*", None, sid, Origin::Client { cid: 1 }, out)
        })
        .collect();
    let big = vec![b'x'; 300];
    for (reply, payload) in [
        (None, &b"hello"[..]),
        (Some(&b"_INBOX.r"[..]), &b""[..]),
        (Some(&b"r"[..]), &big[..]),
    ] {
        // One message encoded for each subscriber in turn (the template from the second
        // on) against a fresh message per subscriber (always the direct encoding).
        let shared = Message::new(b"a.b", reply, None, payload);
        for sub in &subs {
            let mut got = Vec::new();
            shared.encode(sub, &mut got);
            let mut want = Vec::new();
            Message::new(b"a.b", reply, None, payload).encode(sub, &mut want);
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&got));
            assert_eq!(got.len(), shared.encoded_len(sub));
        }
    }
    let mut buf = Vec::new();
    let m = Message::new(b"a.b", Some(b"r"), None, b"hi");
    m.encode(&subs[0], &mut buf);
    m.encode(&subs[1], &mut buf);
    assert_eq!(buf, b"MSG a.b 1 r 2\r\nhi\r\nMSG a.b 22 r 2\r\nhi\r\n");
}

// ---- authorization: users, permissions (2.x wildcard rules), bcrypt off the reactor --------

fn users_harness(users: &[(&str, &str, Option<&str>)], default: Option<&str>) -> Harness {
    use crate::config::{parse, MemResolver};
    let mut text = String::from("authorization {\n");
    if let Some(d) = default {
        text.push_str(&format!("  default_permissions = {d}\n"));
    }
    text.push_str("  users = [\n");
    for (u, p, perms) in users {
        match perms {
            Some(perms) => text.push_str(&format!(
                "    {{user: {u}, password: \"{p}\", permissions: {perms}}}\n"
            )),
            None => text.push_str(&format!("    {{user: {u}, password: \"{p}\"}}\n")),
        }
    }
    text.push_str("  ]\n}\n");
    let tree = parse(&text, "t.conf", &MemResolver::new()).unwrap();
    let opts = crate::config::server_options(&tree).unwrap().options;
    Harness::with_shared(Shared::new(opts, "SERVER".into(), 4222, None))
}

fn connect_line(user: &str, pass: &str) -> Vec<u8> {
    format!("CONNECT {{\"verbose\":true,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\n").into_bytes()
}

#[test]
fn users_permissions_publish_and_subscribe() {
    let mut h = users_harness(
        &[
            (
                "alice",
                "foo",
                Some("{publish: \"foo.*\", subscribe: \"foo.>\"}"),
            ),
            ("bob", "bar", None),
        ],
        None,
    );
    let mut a = h.peer(1);
    h.feed(&mut a, &connect_line("alice", "foo"));
    assert_eq!(drain(&a), "+OK\r\n");
    h.feed(
        &mut a,
        b"PUB foo.bar 1\r\nx\r\nPUB bar 1\r\nx\r\nPUB foo.bar.baz 0\r\n\r\n",
    );
    assert_eq!(
        drain(&a),
        "+OK\r\n-ERR 'Permissions Violation for Publish to \"bar\"'\r\n\
         -ERR 'Permissions Violation for Publish to \"foo.bar.baz\"'\r\n"
    );
    assert!(
        a.conn.closing().is_none(),
        "a violation keeps the connection"
    );
    // 2.x: a SUB is allowed only if it is a subset of an allowed pattern.
    h.feed(
        &mut a,
        b"SUB foo.bar.* 1\r\nSUB foo.> 2\r\nSUB bar 3\r\nSUB > 4\r\nSUB foo q 5\r\n",
    );
    assert_eq!(
        drain(&a),
        "+OK\r\n+OK\r\n-ERR 'Permissions Violation for Subscription to \"bar\"'\r\n\
         -ERR 'Permissions Violation for Subscription to \">\"'\r\n\
         -ERR 'Permissions Violation for Subscription to \"foo\"'\r\n"
    );
    assert_eq!(h.shared.sublist.count(), 2);
    assert!(a.conn.closing().is_none());
    // bob has no permissions and no defaults: unrestricted.
    let mut b = h.peer(2);
    h.feed(&mut b, &connect_line("bob", "bar"));
    h.feed(&mut b, b"SUB > 1\r\nPUB any 0\r\n\r\n");
    assert_eq!(drain(&b), "+OK\r\n+OK\r\n+OK\r\nMSG any 1 0\r\n\r\n");
}

#[test]
fn reload_recheck_prunes_subscriptions_and_drops_failed_credentials() {
    let mut h = users_harness(
        &[
            ("alice", "apw", Some("{subscribe: [\"foo.>\", \"bar.>\"]}")),
            ("bob", "bpw", None),
        ],
        None,
    );
    let mut a = h.peer(1);
    let mut b = h.peer(2);
    h.feed(&mut a, &connect_line("alice", "apw"));
    h.feed(&mut a, b"SUB foo.x 1\r\nSUB bar.y 2\r\nSUB bar.z 3\r\n");
    h.feed(&mut b, &connect_line("bob", "bpw"));
    assert_eq!(drain(&a), "+OK\r\n+OK\r\n+OK\r\n+OK\r\n");
    assert_eq!(drain(&b), "+OK\r\n");
    // The reload: alice may subscribe to foo.> only, bob's password changed.
    let reloaded = users_harness(
        &[
            ("alice", "apw", Some("{subscribe: \"foo.>\"}")),
            ("bob", "new", None),
        ],
        None,
    );
    h.live.conn_cfg = reloaded.live.conn_cfg.clone();
    for p in [&mut a, &mut b] {
        let mut env = h.env();
        p.conn.reauthorize(&mut env);
        drop(env);
        h.batch.flush(&mut p.stalled);
    }
    assert_eq!(
        drain(&a),
        "-ERR 'Permissions Violation for Subscription to \"bar.y\" (sid 2)'\r\n\
         -ERR 'Permissions Violation for Subscription to \"bar.z\" (sid 3)'\r\n"
    );
    assert!(a.conn.closing().is_none());
    assert_eq!(a.conn.sub_count(), 1);
    assert_eq!(h.shared.sublist.count(), 1, "pruned from the index");
    assert_eq!(drain(&b), "-ERR 'Authorization Violation'\r\n");
    assert_eq!(
        b.conn.closing(),
        Some(&CloseReason::Protocol(ProtoError::AuthViolation))
    );
    // Still connected, alice gets the new rules for new SUBs too.
    h.feed(&mut a, b"SUB bar.w 4\r\n");
    assert_eq!(
        drain(&a),
        "-ERR 'Permissions Violation for Subscription to \"bar.w\"'\r\n"
    );
}

#[test]
fn wildcard_loophole_of_1_0_is_closed() {
    let mut h = users_harness(&[("bob", "bar", Some("{subscribe: \"_INBOX.*\"}"))], None);
    let mut b = h.peer(1);
    h.feed(&mut b, &connect_line("bob", "bar"));
    h.feed(&mut b, b"SUB _INBOX.* 1\r\nSUB _INBOX.> 2\r\n");
    assert_eq!(
        drain(&b),
        "+OK\r\n+OK\r\n-ERR 'Permissions Violation for Subscription to \"_INBOX.>\"'\r\n"
    );
}

#[test]
fn default_permissions_apply_to_users_without_their_own() {
    let mut h = users_harness(
        &[("joe", "pw", None), ("ann", "pw", Some("{publish: \">\"}"))],
        Some("{ publish = \"SANDBOX.*\", subscribe = [\"PUBLIC.>\", \"_INBOX.>\"] }"),
    );
    let mut j = h.peer(1);
    h.feed(&mut j, &connect_line("joe", "pw"));
    h.feed(
        &mut j,
        b"PUB SANDBOX.a 0\r\n\r\nPUB other 0\r\n\r\nSUB PUBLIC.x 1\r\nSUB x 2\r\n",
    );
    assert_eq!(
        drain(&j),
        "+OK\r\n+OK\r\n-ERR 'Permissions Violation for Publish to \"other\"'\r\n+OK\r\n\
         -ERR 'Permissions Violation for Subscription to \"x\"'\r\n"
    );
    let mut a = h.peer(2);
    h.feed(&mut a, &connect_line("ann", "pw"));
    // ann's own permissions only restrict publish; subscribe is not restricted.
    h.feed(&mut a, b"PUB other 0\r\n\r\nSUB x 1\r\n");
    assert_eq!(drain(&a), "+OK\r\n+OK\r\n+OK\r\n");
}

#[test]
fn wrong_password_or_unknown_user_is_an_authorization_violation() {
    for line in [connect_line("alice", "nope"), connect_line("eve", "foo")] {
        let mut h = users_harness(&[("alice", "foo", None)], None);
        let mut a = h.peer(1);
        h.feed(&mut a, &line);
        assert_eq!(drain(&a), "-ERR 'Authorization Violation'\r\n");
        assert!(a.conn.closing().is_some());
    }
}

#[test]
fn connect_trace_redacts_secrets() {
    let line =
        redact_connect(br#"{"user":"a","pass":"hunter2","auth_token":"tok","verbose":true}"#);
    assert!(
        !line.contains("hunter2") && !line.contains("tok\""),
        "{line}"
    );
    assert!(line.contains("\"pass\":\"[REDACTED]\""), "{line}");
    assert_eq!(redact_connect(br#"{"pass":"x""#), "[REDACTED]");
    assert_eq!(
        redact_connect(br#"{"verbose":true}"#),
        r#"{"verbose":true}"#
    );
}

#[test]
fn bcrypt_connect_waits_for_the_verdict_then_goes_on_in_order() {
    use crate::mailbox::{Mail, ReactorHandle};
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let mut h = users_harness(&[("alice", &hash, Some("{publish: \"ok\"}"))], None);
    let handles: Arc<[ReactorHandle]> = vec![ReactorHandle::new().unwrap()].into();
    h.shared.auth_pool.start(Arc::clone(&handles));
    let wait_mail = || {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.is_empty() && std::time::Instant::now() < deadline {
            handles[0].drain(&mut got);
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    };
    for (pass, ok) in [("s3cret", true), ("wrong", false), ("s3cret", true)] {
        let mut a = h.peer(7);
        let connect = connect_line("alice", pass);
        let mut input = connect.clone();
        input.extend_from_slice(b"PUB ok 0\r\n\r\nPUB no 0\r\n\r\nPING\r\n");
        // Asked before the CONNECT: the pool may cache this verification while the test runs.
        let cached = pass == "s3cret"
            && h.shared
                .auth_pool
                .cache
                .contains(&crate::auth::cache_key("alice", &hash, "s3cret"));
        h.feed(&mut a, &input);
        if cached {
            // Verified before: the cache answers at once, nothing is queued.
            assert!(!a.conn.auth_pending());
            assert_eq!(
                drain(&a),
                "+OK\r\n+OK\r\n-ERR 'Permissions Violation for Publish to \"no\"'\r\nPONG\r\n"
            );
            continue;
        }
        assert!(a.conn.auth_pending(), "waits for bcrypt");
        assert_eq!(
            a.parser.stopped_at(),
            connect.len(),
            "stopped right after CONNECT"
        );
        assert_eq!(drain(&a), "", "nothing answered yet");
        let mail = wait_mail();
        assert_eq!(mail, vec![Mail::AuthDone { token: 7, ok }]);
        let mut env = h.env();
        let flow = a.conn.on_auth_done(ok, &mut env);
        drop(env);
        h.batch.flush(&mut a.stalled);
        assert!(!a.conn.auth_pending());
        if ok {
            assert!(flow.is_continue());
            h.feed(&mut a, &input[connect.len()..]);
            assert_eq!(
                drain(&a),
                "+OK\r\n+OK\r\n-ERR 'Permissions Violation for Publish to \"no\"'\r\nPONG\r\n"
            );
        } else {
            assert_eq!(drain(&a), "-ERR 'Authorization Violation'\r\n");
            assert!(a.conn.closing().is_some());
        }
    }
}

#[test]
fn bcrypt_without_the_pool_fails_closed() {
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut h = users_harness(&[("u", &hash, None)], None);
    let mut a = h.peer(1);
    h.feed(&mut a, &connect_line("u", "pw"));
    assert_eq!(drain(&a), "-ERR 'Authorization Violation'\r\n");
    assert!(a.conn.closing().is_some() && !a.conn.auth_pending());
}

#[test]
fn a_full_bcrypt_queue_fails_the_connect() {
    use crate::mailbox::ReactorHandle;
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut h = users_harness(&[("u", &hash, None)], None);
    let handles: Arc<[ReactorHandle]> = vec![ReactorHandle::new().unwrap()].into();
    // No threads and room for one job: the second CONNECT finds the queue full.
    h.shared.auth_pool.start_with(handles, 0, 1);
    let mut a = h.peer(1);
    h.feed(&mut a, &connect_line("u", "pw"));
    assert!(a.conn.auth_pending() && a.conn.closing().is_none());
    let mut b = h.peer(2);
    h.feed(&mut b, &connect_line("u", "pw"));
    assert_eq!(drain(&b), "-ERR 'Authorization Violation'\r\n");
    assert!(b.conn.closing().is_some() && !b.conn.auth_pending());
}

#[test]
fn auth_timeout_fires_while_bcrypt_is_pending() {
    use crate::mailbox::ReactorHandle;
    let hash = bcrypt::hash("pw", 4).unwrap();
    let mut h = users_harness(&[("u", &hash, None)], None);
    let handles: Arc<[ReactorHandle]> = vec![ReactorHandle::new().unwrap()].into();
    h.shared.auth_pool.start_with(handles, 0, 4);
    let mut a = h.peer(1);
    h.feed(&mut a, &connect_line("u", "pw"));
    assert!(a.conn.auth_pending());
    h.now += h.live.conn_cfg.auth_timeout;
    h.tick(&mut a);
    assert_eq!(drain(&a), "-ERR 'Authorization Timeout'\r\n");
    // A verdict that arrives afterwards changes nothing.
    let mut env = h.env();
    assert!(a.conn.on_auth_done(true, &mut env).is_break());
    drop(env);
    h.batch.flush(&mut a.stalled);
    assert_eq!(drain(&a), "");
}

#[test]
fn unsub_with_a_larger_limit_after_the_limit_does_not_revive_the_sid() {
    // Found by the conn_ops fuzz target: `UNSUB 1 5` after sid 1 reached its limit of 1
    // made the connection hold it as live again although the index no longer did, so the
    // next `SUB .. 1` was ignored as a duplicate and the client got nothing. In gnatsd the
    // sid is gone at its limit: the UNSUB is a no-op and the SUB subscribes afresh.
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(
        &mut a,
        b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\nUNSUB 1 1\r\nPUB s 1\r\na\r\n",
    );
    assert_eq!(drain(&a), "MSG s 1 1\r\na\r\n");
    h.feed(&mut a, b"UNSUB 1 5\r\nSUB s 1\r\nPUB s 1\r\nb\r\n");
    assert_eq!(drain(&a), "MSG s 1 1\r\nb\r\n");
    assert_eq!(h.shared.sublist.count(), 1);
    assert_eq!(a.conn.sub_count(), 1);
}

#[test]
fn no_responders_status_skips_a_subscription_gone_at_its_limit() {
    // Found by the conn_ops fuzz target: the 503 went to a sid that had already reached
    // its auto-unsubscribe limit (the client has forgotten it).
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(
        &mut a,
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n\
          SUB _INBOX.* 1\r\nUNSUB 1 1\r\nPUB _INBOX.x 1\r\na\r\n",
    );
    assert_eq!(drain(&a), "MSG _INBOX.x 1 1\r\na\r\n");
    h.feed(&mut a, b"PUB nobody _INBOX.y 1\r\nb\r\n");
    assert_eq!(
        drain(&a),
        "",
        "no live subscription for the reply: no status"
    );
    h.feed(&mut a, b"SUB _INBOX.y 2\r\nPUB nobody _INBOX.y 1\r\nc\r\n");
    assert_eq!(
        drain(&a),
        "HMSG _INBOX.y 2 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n"
    );
}

/// `n` publishes of `subject`, each in its own read, so the publisher's memo is filled
/// by the second and used from the third on.
fn publish_each(h: &mut Harness, p: &mut Peer, subject: &str, n: usize) {
    for i in 0..n {
        let line = format!("PUB {subject} 1\r\n{}\r\n", i % 10);
        h.feed(p, line.as_bytes());
    }
}

const QUIET: &[u8] = b"CONNECT {\"verbose\":false}\r\n";

#[test]
fn repeated_subject_follows_every_subscription_change() {
    let mut h = Harness::new();
    let (mut a, mut b, mut publ) = (h.peer(1), h.peer(2), h.peer(3));
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB foo 1\r\n");
    h.feed(&mut publ, QUIET);
    publish_each(&mut h, &mut publ, "foo", 4);
    assert_eq!(drain(&a).matches("MSG foo 1 1\r\n").count(), 4);

    // A second subscriber anywhere: the next message reaches both.
    h.feed(&mut b, b"CONNECT {\"verbose\":false}\r\nSUB foo 2\r\n");
    publish_each(&mut h, &mut publ, "foo", 3);
    assert_eq!(drain(&a).matches("MSG foo 1 1\r\n").count(), 3);
    assert_eq!(drain(&b).matches("MSG foo 2 1\r\n").count(), 3);

    // The first leaves: only the second gets the next ones.
    h.feed(&mut a, b"UNSUB 1\r\n");
    publish_each(&mut h, &mut publ, "foo", 3);
    assert_eq!(drain(&a), "");
    assert_eq!(drain(&b).matches("MSG foo 2 1\r\n").count(), 3);

    // The second closes: nobody gets anything, and a new subscriber is found again.
    h.close(&mut b);
    publish_each(&mut h, &mut publ, "foo", 3);
    assert_eq!(drain(&b), "");
    h.feed(&mut a, b"SUB foo 5\r\n");
    publish_each(&mut h, &mut publ, "foo", 2);
    assert_eq!(drain(&a), "MSG foo 5 1\r\n0\r\nMSG foo 5 1\r\n1\r\n");
}

#[test]
fn repeated_subject_to_nobody_still_answers_requests() {
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(
        &mut a,
        b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\nSUB _INBOX.1 9\r\n",
    );
    publish_each(&mut h, &mut a, "nobody", 4);
    assert_eq!(drain(&a), "", "plain messages to nobody go nowhere");
    h.feed(&mut a, b"PUB nobody _INBOX.1 1\r\nx\r\n");
    assert_eq!(
        drain(&a),
        "HMSG _INBOX.1 9 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n"
    );
}

#[test]
fn repeated_subject_keeps_the_auto_unsubscribe_limit() {
    let mut h = Harness::new();
    let (mut a, mut publ) = (h.peer(1), h.peer(2));
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\n");
    h.feed(&mut publ, QUIET);
    publish_each(&mut h, &mut publ, "s", 3);
    h.feed(&mut a, b"UNSUB 1 5\r\n");
    publish_each(&mut h, &mut publ, "s", 6);
    assert_eq!(
        drain(&a).matches("MSG s 1 1\r\n").count(),
        5,
        "3 before the UNSUB, then 2 more up to its limit of 5"
    );
    assert_eq!(h.shared.sublist.count(), 0);
}

#[test]
fn repeated_subject_without_echo_skips_the_publisher_only() {
    let mut h = Harness::new();
    let (mut a, mut publ) = (h.peer(1), h.peer(2));
    h.feed(
        &mut publ,
        b"CONNECT {\"verbose\":false,\"echo\":false}\r\nSUB e 1\r\n",
    );
    publish_each(&mut h, &mut publ, "e", 3);
    assert_eq!(drain(&publ), "", "no echo");
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB e 7\r\n");
    publish_each(&mut h, &mut publ, "e", 3);
    assert_eq!(drain(&publ), "");
    assert_eq!(drain(&a).matches("MSG e 7 1\r\n").count(), 3);
}

#[test]
fn a_subscription_in_the_same_read_as_the_publish_gets_it() {
    let mut h = Harness::new();
    let (mut a, mut publ) = (h.peer(1), h.peer(2));
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB q 1\r\n");
    h.feed(&mut publ, QUIET);
    publish_each(&mut h, &mut publ, "q", 3);
    drain(&a);
    h.feed(&mut publ, b"SUB q 2\r\nPUB q 1\r\nz\r\n");
    assert_eq!(drain(&publ), "MSG q 2 1\r\nz\r\n");
    assert_eq!(drain(&a), "MSG q 1 1\r\nz\r\n");
}

#[test]
fn inline_copy_appends_every_length_exactly() {
    let src: Vec<u8> = (1..=40u8).collect();
    for n in 0..=src.len() {
        for prefix in [0usize, 1, 7, 15] {
            // A vector that is exactly full, so the copy has to grow it.
            let mut buf = vec![0xAAu8; prefix];
            buf.shrink_to_fit();
            super::deliver::put(&mut buf, &src[..n]);
            let mut want = vec![0xAAu8; prefix];
            want.extend_from_slice(&src[..n]);
            assert_eq!(buf, want, "n={n} prefix={prefix}");
        }
    }
    let mut buf = Vec::new();
    super::deliver::put_usize(&mut buf, 0);
    buf.push(b' ');
    super::deliver::put_usize(&mut buf, usize::MAX);
    assert_eq!(buf, format!("0 {}", usize::MAX).as_bytes());
}

/// `PUB subject len\r\npayload\r\n` for each payload, in one buffer (one read: a run).
fn pubs(subject: &str, reply: Option<&str>, payloads: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in payloads {
        let reply = reply.map(|r| format!("{r} ")).unwrap_or_default();
        v.extend_from_slice(format!("PUB {subject} {reply}{}\r\n{p}\r\n", p.len()).as_bytes());
    }
    v
}

#[test]
fn a_run_of_pubs_reaches_every_subscriber_in_order_with_one_mark_each() {
    let mut h = Harness::new();
    let (mut a, mut b, mut publ) = (h.peer(1), h.peer(2), h.peer(3));
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB s.* 1\r\n");
    h.feed(&mut b, b"CONNECT {\"verbose\":false}\r\nSUB s.x 22\r\n");
    h.feed(&mut publ, QUIET);
    h.batch.list_mut(0).clear();
    let mut input = pubs("s.x", None, &["one", ""]);
    input.extend_from_slice(&pubs("s.x", Some("r.1"), &["three"]));
    input.extend_from_slice(&pubs("s.x", None, &["4"]));
    h.feed(&mut publ, &input);
    let want = |sid: &str| {
        format!(
            "MSG s.x {sid} 3\r\none\r\nMSG s.x {sid} 0\r\n\r\n\
             MSG s.x {sid} r.1 5\r\nthree\r\nMSG s.x {sid} 1\r\n4\r\n"
        )
    };
    assert_eq!(drain(&a), want("1"));
    assert_eq!(drain(&b), want("22"));
    assert_eq!(drain(&publ), "");
    let mut marks = h.batch.list_mut(0).clone();
    marks.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(
        marks,
        vec![
            crate::mailbox::Mail::Flush(1),
            crate::mailbox::Mail::Flush(2)
        ]
    );
    assert_eq!(publ.conn.stats.in_msgs, 4);
    let z = h.shared.sublist.stats();
    assert_eq!(
        (z.num_matches, z.cache_hits),
        (4, 3),
        "a lookup per message"
    );
}

#[test]
fn a_run_keeps_one_connections_subscriptions_interleaved_per_message() {
    let mut h = Harness::new();
    let (mut a, mut publ) = (h.peer(1), h.peer(2));
    h.feed(
        &mut a,
        b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\nSUB > 2\r\n",
    );
    h.feed(&mut publ, QUIET);
    h.feed(&mut publ, &pubs("s", None, &["a", "b"]));
    // Both sids get `a` before either gets `b`, as when each message is delivered alone
    // (which sid comes first within a message is the index's order).
    let got = drain(&a);
    let lines: Vec<&str> = got.split("\r\n").collect();
    let mut first: Vec<(&str, &str)> = vec![(lines[0], lines[1]), (lines[2], lines[3])];
    let mut second: Vec<(&str, &str)> = vec![(lines[4], lines[5]), (lines[6], lines[7])];
    first.sort();
    second.sort();
    assert_eq!(first, [("MSG s 1 1", "a"), ("MSG s 2 1", "a")], "{got:?}");
    assert_eq!(second, [("MSG s 1 1", "b"), ("MSG s 2 1", "b")], "{got:?}");
    assert_eq!(lines.len(), 9);
}

#[test]
fn a_run_is_delivered_before_the_publishers_next_op_is_answered() {
    let mut h = Harness::new();
    let mut a = h.peer(1);
    let mut input = b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\n".to_vec();
    input.extend_from_slice(&pubs("s", None, &["a", "b"]));
    input.extend_from_slice(b"PING\r\n");
    input.extend_from_slice(&pubs("s", None, &["c", "d"]));
    input.extend_from_slice(b"UNSUB 1\r\n");
    input.extend_from_slice(&pubs("s", None, &["e", "f"]));
    input.extend_from_slice(b"SUB s 2\r\n");
    input.extend_from_slice(&pubs("s", None, &["g"]));
    h.feed(&mut a, &input);
    assert_eq!(
        drain(&a),
        "MSG s 1 1\r\na\r\nMSG s 1 1\r\nb\r\nPONG\r\nMSG s 1 1\r\nc\r\nMSG s 1 1\r\nd\r\n\
         MSG s 2 1\r\ng\r\n"
    );
}

#[test]
fn a_run_keeps_order_across_subjects_and_payloads_it_does_not_hold() {
    let mut h = Harness::new();
    let (mut a, mut publ) = (h.peer(1), h.peer(2));
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB > 1\r\n");
    h.feed(&mut publ, QUIET);
    let big = "x".repeat(super::pub_run::RUN_PAYLOAD_MAX + 1);
    let mut input = pubs("s", None, &["a", "b"]);
    input.extend_from_slice(&pubs("s", None, &[&big]));
    input.extend_from_slice(&pubs("s", None, &["c"]));
    input.extend_from_slice(&pubs("t", None, &["d", "e"]));
    input.extend_from_slice(&pubs("s", None, &["f"]));
    h.feed(&mut publ, &input);
    let got = drain(&a);
    let payloads: Vec<&str> = got
        .split("\r\n")
        .skip(1)
        .step_by(2)
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(payloads, ["a", "b", big.as_str(), "c", "d", "e", "f"]);
    assert!(got.contains("MSG t 1 1\r\nd\r\nMSG t 1 1\r\ne\r\nMSG s 1 1\r\nf\r\n"));
}

#[test]
fn a_run_longer_than_its_bound_arrives_whole_and_in_order() {
    let mut h = Harness::new();
    let (mut a, mut b, mut publ) = (h.peer(1), h.peer(2), h.peer(3));
    h.feed(&mut a, b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\n");
    h.feed(&mut b, b"CONNECT {\"verbose\":false}\r\nSUB s 2\r\n");
    h.feed(&mut publ, QUIET);
    let n = super::pub_run::RUN_MSGS_MAX * 2 + 7;
    let payloads: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    h.feed(&mut publ, &pubs("s", None, &refs));
    for (peer, sid) in [(&a, 1), (&b, 2)] {
        let want: String = payloads
            .iter()
            .map(|p| format!("MSG s {sid} {}\r\n{p}\r\n", p.len()))
            .collect();
        assert_eq!(drain(peer), want);
    }
}

#[test]
fn a_run_keeps_auto_unsubscribe_limits_queue_groups_and_echo() {
    let mut h = Harness::new();
    let (mut lim, mut q1, mut q2, mut publ) = (h.peer(1), h.peer(2), h.peer(3), h.peer(4));
    h.feed(
        &mut lim,
        b"CONNECT {\"verbose\":false}\r\nSUB s 1\r\nUNSUB 1 3\r\n",
    );
    h.feed(&mut q1, b"CONNECT {\"verbose\":false}\r\nSUB s g 1\r\n");
    h.feed(&mut q2, b"CONNECT {\"verbose\":false}\r\nSUB s g 1\r\n");
    h.feed(
        &mut publ,
        b"CONNECT {\"verbose\":false,\"echo\":false}\r\nSUB s 1\r\n",
    );
    let payloads: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    h.feed(&mut publ, &pubs("s", None, &refs));
    assert_eq!(
        drain(&lim),
        "MSG s 1 1\r\n0\r\nMSG s 1 1\r\n1\r\nMSG s 1 1\r\n2\r\n"
    );
    let (g1, g2) = (drain(&q1), drain(&q2));
    assert_eq!(
        g1.matches("MSG s 1 1\r\n").count() + g2.matches("MSG s 1 1\r\n").count(),
        10
    );
    assert_eq!(
        drain(&publ),
        "",
        "echo off: the publisher gets none of its own"
    );
    // Without the group and the limited one (gone at its limit), the run is delivered in
    // one stretch, still skipping the publisher.
    h.close(&mut q1);
    h.close(&mut q2);
    h.feed(&mut publ, &pubs("s", None, &["a", "b"]));
    assert_eq!(drain(&publ), "");
    assert_eq!(drain(&lim), "");
}

#[test]
fn requests_in_a_run_that_reach_nobody_get_no_responders_each() {
    let mut h = Harness::new();
    let mut a = h.peer(1);
    h.feed(
        &mut a,
        b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\nSUB _INBOX.1 9\r\n",
    );
    let mut input = pubs("nobody", Some("_INBOX.1"), &["x", "y"]);
    input.extend_from_slice(&pubs("nobody", None, &["z"]));
    h.feed(&mut a, &input);
    let status = "HMSG _INBOX.1 9 38 38\r\nNATS/1.0 503\r\nNats-Subject: nobody\r\n\r\n\r\n";
    assert_eq!(drain(&a), status.repeat(2));
    assert_eq!(h.shared.sublist.stats().num_matches, 3);
}
