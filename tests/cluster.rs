//! Black-box cluster tests: server processes joined by gnatsd 1.0 routes (reference §2), driven
//! through raw client sockets, a hand-written fake route, async-nats, and mixed clusters with
//! the real gnatsd 1.0.
//!
//! Nodes run the binary in `$RINGNATS_TEST_SERVER` (default: the ringnats cargo built). With
//! `RINGNATS_TEST_SERVER=../shared/peers/gnatsd-1.0.0` every test must pass against gnatsd 1.0
//! itself, except the `beyond_1_0_*` ones, which then skip with a printed reason.
//!
//! Waits are on events (a probe or sentinel message, a PONG, a log line), each bounded.

#[path = "common/cluster.rs"]
mod harness;

use harness::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// 3- and 5-node clusters

#[test]
fn three_node_mesh_delivers_exactly_once_between_every_pair() {
    let nodes = start_mesh(&ringnats_kinds(3));
    assert_exactly_once_all_pairs(&refs(&nodes), 200);
}

#[test]
fn five_node_seeded_cluster_delivers_exactly_once_between_every_pair() {
    let nodes = start_seeded(&ringnats_kinds(5));
    assert_exactly_once_all_pairs(&refs(&nodes), 100);
}

#[test]
fn wildcards_match_across_routes() {
    let nodes = start_mesh(&ringnats_kinds(3));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let w = unique("w");
    let mut sub = b.client();
    sub.sub(&format!("{w}.*"), "1");
    sub.sub(&format!("{w}.>"), "2");
    sub.sub(&format!("{w}.a.*"), "3");
    sub.sub(&format!("{w}.*.b.>"), "4");
    sub.flush();
    // subject suffix -> sids that match it
    let cases: [(&str, &[&str]); 6] = [
        ("a", &["1", "2"]),
        ("a.b", &["2", "3"]),
        ("x.b.c", &["2", "4"]),
        ("a.b.c", &["2", "4"]),
        ("b.c.d.e", &["2"]),
        ("", &[]),
    ];
    for origin in [a, c] {
        let mut p = origin.client();
        wait_path(&mut p, &mut sub);
        let mut want: Vec<(String, String)> = Vec::new();
        for (suffix, sids) in cases {
            let subject = if suffix.is_empty() {
                w.clone()
            } else {
                format!("{w}.{suffix}")
            };
            p.publish(&subject, origin.name().as_bytes());
            for sid in sids {
                want.push((subject.clone(), sid.to_string()));
            }
        }
        p.flush();
        let mut got: Vec<(String, String)> = sub
            .expect_msgs(want.len())
            .into_iter()
            .map(|m| {
                assert_eq!(m.text(), origin.name());
                (m.subject, m.sid)
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(
            got,
            want,
            "wildcard matches for messages from {}",
            origin.name()
        );
        sub.expect_no_more();
    }
}

#[test]
fn request_reply_across_routes() {
    let nodes = start_mesh(&ringnats_kinds(3));
    let svc = unique("svc");
    let mut responders: Vec<Client> = nodes
        .iter()
        .map(|y| {
            let mut c = y.client();
            c.sub(&format!("{svc}.{}", y.name()), "1");
            c.flush();
            c
        })
        .collect();
    for x in &nodes {
        let mut requester = x.client();
        for (yi, y) in nodes.iter().enumerate() {
            if x.name() == y.name() {
                continue;
            }
            wait_path(&mut requester, &mut responders[yi]);
            let inbox = unique(&format!("_INBOX.{}{}", x.name(), y.name()));
            requester.sub(&inbox, "9");
            for i in 0..5 {
                let body = format!("{}->{}:{i}", x.name(), y.name());
                requester.publish_reply(&format!("{svc}.{}", y.name()), &inbox, body.as_bytes());
                let req = responders[yi].expect_msg();
                assert_eq!(req.text(), body);
                assert_eq!(req.reply.as_deref(), Some(inbox.as_str()));
                responders[yi].publish(&inbox, format!("re:{body}").as_bytes());
                let resp = requester.expect_msg();
                assert_eq!(
                    (resp.subject.as_str(), resp.sid.as_str()),
                    (inbox.as_str(), "9")
                );
                assert_eq!(resp.text(), format!("re:{body}"));
            }
            requester.unsub("9");
            requester.expect_no_more();
        }
    }
    for r in &mut responders {
        r.expect_no_more();
    }
}

#[test]
fn queue_group_over_five_nodes_gets_each_message_exactly_once() {
    let nodes = start_mesh(&ringnats_kinds(5));
    const N: usize = 10_000;
    let subject = unique("jobs");
    let mut members = Vec::new();
    for y in &nodes {
        for _ in 0..2 {
            let mut c = y.client();
            c.qsub(&subject, "workers", "1");
            c.flush();
            members.push(c);
        }
    }
    let mut pubs: Vec<Client> = nodes.iter().map(|x| x.client()).collect();
    wait_paths(&mut pubs, &mut members);
    let check = |results: Vec<(Client, Vec<Msg>)>, base: usize, what: &str| -> Vec<Client> {
        let mut count = vec![0u8; N];
        let mut per_member = Vec::new();
        let mut clients = Vec::new();
        for (c, got) in results {
            per_member.push(got.len());
            for m in &got {
                let id: usize = m.text().parse().unwrap();
                count[id - base] += 1;
            }
            clients.push(c);
        }
        let missing = count.iter().filter(|&&c| c == 0).count();
        let dups = count.iter().filter(|&&c| c > 1).count();
        assert_eq!(
            (missing, dups),
            (0, 0),
            "{what}: every id exactly once (per member {per_member:?})"
        );
        assert!(
            per_member.iter().all(|&n| n > 0),
            "{what}: every member gets some: {per_member:?}"
        );
        clients
    };
    // All from one node.
    let results = gather(members, N, || {
        pubs[0].publish_ids(&subject, "", 0..N);
        pubs[0].flush();
    });
    let mut members = check(results, 0, "published on A");
    for m in &mut members {
        m.expect_no_more();
    }
    // Spread over every node.
    let results = gather(members, N, || {
        let per = N / pubs.len();
        for (i, p) in pubs.iter_mut().enumerate() {
            p.publish_ids(&subject, "", N + i * per..N + (i + 1) * per);
            p.flush();
        }
    });
    for mut m in check(results, N, "published on every node") {
        m.expect_no_more();
    }
}

#[test]
fn unsubscribe_propagates_across_routes() {
    let nodes = start_mesh(&ringnats_kinds(3));
    let (a, b) = (&nodes[0], &nodes[1]);
    let subject = unique("u");
    let qsubject = format!("{subject}.q");
    // Two plain subscribers on B, and a queue member on B with a sentinel member on A.
    let mut s1 = b.client();
    s1.sub(&subject, "1");
    s1.flush();
    let mut s2 = b.client();
    s2.sub(&subject, "1");
    s2.flush();
    let mut qb = b.client();
    qb.qsub(&qsubject, "g", "1");
    qb.flush();
    let mut qa = a.client();
    qa.qsub(&qsubject, "g", "1");
    qa.flush();
    let mut p = a.client();
    for c in [&mut s1, &mut s2, &mut qb, &mut qa] {
        wait_path(&mut p, c);
    }
    p.publish(&subject, b"first");
    p.flush();
    assert_eq!(s1.expect_msg().text(), "first");
    assert_eq!(s2.expect_msg().text(), "first");
    // S1 and B's queue member leave; B has processed it once the PONGs are back.
    s1.unsub("1");
    s1.flush();
    qb.unsub("1");
    qb.flush();
    // A probe subscribed by the same client after its UNSUB follows it on the route B->A:
    // once the probe passes, A has applied the UNSUB.
    wait_path(&mut p, &mut qb);
    wait_path(&mut p, &mut s1);
    const N: usize = 300;
    let results = gather(vec![s2, qa], 2 * N, || {
        p.publish_ids(&subject, "", 0..N);
        p.publish_ids(&qsubject, "", 0..N);
        p.flush();
    });
    for (i, (mut c, got)) in results.into_iter().enumerate() {
        let ids: Vec<usize> = got.iter().map(|m| m.text().parse().unwrap()).collect();
        let who = ["B's remaining subscriber", "A's queue member"][i];
        assert_eq!(
            ids,
            (0..N).collect::<Vec<_>>(),
            "{who} gets every message once (B's departed queue member is no longer chosen)"
        );
        c.expect_no_more();
    }
    s1.expect_no_more();
    qb.expect_no_more();
}

#[test]
fn auto_unsubscribe_limit_holds_across_routes() {
    let nodes = start_mesh(&ringnats_kinds(3));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let subject = unique("au");
    let mark = format!("{subject}.mark");
    // Plain: at most 5 for sid 1; sid 2 is the sentinel.
    let mut s = b.client();
    s.sub(&subject, "1");
    s.unsub_max("1", 5);
    s.sub(&mark, "2");
    s.flush();
    // Queue: B's member takes at most 5, A's member takes the rest.
    let qsubject = format!("{subject}.q");
    let mut qb = b.client();
    qb.qsub(&qsubject, "g", "1");
    qb.unsub_max("1", 5);
    qb.flush();
    let mut qa = a.client();
    qa.qsub(&qsubject, "g", "1");
    qa.flush();
    let mut pc = c.client();
    wait_path(&mut pc, &mut s);
    let mut pa = a.client();
    wait_path(&mut pa, &mut qb);
    wait_path(&mut pa, &mut qa);
    pc.publish_ids(&subject, "", 0..10);
    pc.publish(&mark, b"end");
    pc.flush();
    let got: Vec<String> = s.expect_msgs(6).iter().map(|m| m.text()).collect();
    assert_eq!(
        got,
        ["0", "1", "2", "3", "4", "end"],
        "exactly 5 across the route"
    );
    s.expect_no_more();
    const N: usize = 200;
    let results = gather(vec![qb, qa], N, || {
        pa.publish_ids(&qsubject, "", 0..N);
        pa.flush();
    });
    let mut seen = [0u8; N];
    let mut counts = Vec::new();
    for (mut cl, got) in results {
        counts.push(got.len());
        for m in &got {
            seen[m.text().parse::<usize>().unwrap()] += 1;
        }
        cl.expect_no_more();
    }
    assert_eq!(
        counts[0], 5,
        "B's member stops at its limit (counts {counts:?})"
    );
    assert!(
        seen.iter().all(|&n| n == 1),
        "no message lost to the exhausted remote member (counts {counts:?})"
    );
}

/// Publishes `batch` messages on A's side and a mark; returns how many of them the local
/// queue member `l` (which also subscribes to `mark` as sid 2) got before the mark.
fn local_share(p: &mut Client, l: &mut Client, subject: &str, mark: &str, batch: usize) -> usize {
    p.publish_ids(subject, "", 0..batch);
    p.publish(mark, b"mark");
    p.flush();
    for n in 0..=batch {
        if l.expect_msg().subject == mark {
            return n;
        }
    }
    panic!("more than {batch} messages before the mark");
}

/// Waits (at most 10 s) until the queue group on `subject` has no member left on other nodes,
/// as seen from A: a batch of 20 all reaches A's local member.
fn wait_remote_members_gone(p: &mut Client, l: &mut Client, subject: &str, mark: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..500 {
        if local_share(p, l, subject, mark, 20) == 20 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a departed remote member is still chosen after 10 s"
        );
    }
    panic!("a departed remote member is still chosen after 500 rounds");
}

#[test]
fn closed_client_interest_is_removed_remotely() {
    let nodes = start_mesh(&ringnats_kinds(2));
    let (a, b) = (&nodes[0], &nodes[1]);
    let subject = unique("cl");
    let mark = format!("{subject}.mark");
    let mut qb = b.client();
    qb.qsub(&subject, "g", "1");
    qb.flush();
    let mut l = a.client();
    l.qsub(&subject, "g", "1");
    l.sub(&mark, "2");
    l.flush();
    let mut p = a.client();
    wait_path(&mut p, &mut qb);
    wait_path(&mut p, &mut l);
    // While B's member is there, some messages go to it.
    assert!(local_share(&mut p, &mut l, &subject, &mark, 200) < 200);
    qb.close();
    wait_remote_members_gone(&mut p, &mut l, &subject, &mark);
    assert_eq!(local_share(&mut p, &mut l, &subject, &mark, 500), 500);
    l.expect_no_more();
}

// ---------------------------------------------------------------------------------------------
// Node failure

/// In a 3-node mesh, stops C with `sig` and starts it again on the same ports while A keeps
/// publishing to a subscriber on B: routes to C are back within 2 s of the restart, B gets every
/// message exactly once, and afterwards every pair delivers exactly once.
fn restart_under_load(sig: i32) {
    let mut nodes = start_mesh(&ringnats_kinds(3));
    assert_exactly_once_all_pairs(&refs(&nodes), 20);
    let subject = unique("rs");
    let mut s = nodes[1].client();
    s.sub(&subject, "1");
    s.flush();
    let mut p = nodes[0].client();
    wait_path(&mut p, &mut s);
    // A publishes to B's subscriber all through C's death and restart.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (stop, subject) = (stop.clone(), subject.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 500_000 {
                p.publish_ids(&subject, "", n..n + 50);
                p.flush();
                n += 50;
            }
            p.publish(&subject, b"end");
            p.flush();
            n
        })
    };
    let reader = std::thread::spawn(move || {
        let mut ids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let m = s.expect_msg();
            if m.payload == b"end" {
                return (s, ids);
            }
            ids.push(m.text().parse::<usize>().unwrap());
        }
        panic!("no end marker within 60 s");
    });
    nodes[2].signal_and_reap(sig);
    let restarted = Instant::now();
    nodes[2].restart();
    {
        let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
        for (x, y) in [(a, c), (c, a), (b, c), (c, b)] {
            wait_interest(x, y);
        }
    }
    let took = restarted.elapsed();
    println!("routes to the restarted node back after {took:?}");
    stop.store(true, Ordering::SeqCst);
    let published = publisher.join().expect("publisher");
    let (mut s, ids) = reader.join().expect("reader");
    assert!(
        took < Duration::from_secs(2),
        "routes to the restarted node took {took:?}"
    );
    println!("{published} messages published during the restart");
    assert!(published > 0);
    let first_bad = ids.iter().enumerate().find(|(i, &id)| *i != id);
    assert_eq!(
        (ids.len(), first_bad),
        (published, None),
        "B got every message of A exactly once, in order, while C restarted"
    );
    s.expect_no_more();
    assert_exactly_once_all_pairs(&refs(&nodes), 50);
}

#[test]
fn killed_node_rejoins_within_two_seconds_without_loss_or_duplicates() {
    restart_under_load(libc::SIGKILL);
}

#[test]
fn terminated_node_rejoins_within_two_seconds_without_loss_or_duplicates() {
    restart_under_load(libc::SIGTERM);
}

// ---------------------------------------------------------------------------------------------
// Discovery

#[test]
fn seeded_nodes_discover_each_other_and_advertise_client_urls() {
    let nodes = start_seeded(&ringnats_kinds(4));
    let (b, c, d) = (&nodes[1], &nodes[2], &nodes[3]);
    // Routes carry one hop only, so these paths need direct routes B-C, C-D, D-B.
    for (x, y) in [(b, c), (c, d), (d, b), (c, b), (d, c), (b, d)] {
        wait_interest(x, y);
    }
    wait_full_mesh(&refs(&nodes));
    // A client of the seed learns the others' client URLs.
    let want: Vec<String> = nodes[1..].iter().map(|n| n.cfg.client_url()).collect();
    wait_connect_urls(&nodes[0], &want);
}

/// Polls (a new client every 20 ms, at most 10 s) until the client INFO of `node` lists every
/// URL of `want` in `connect_urls`.
fn wait_connect_urls(node: &Node, want: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = serde_json::Value::Null;
    for _ in 0..500 {
        last = node.client().info_json()["connect_urls"].clone();
        let urls: Vec<&str> = last
            .as_array()
            .map(|a| a.iter().filter_map(|u| u.as_str()).collect())
            .unwrap_or_default();
        if want.iter().all(|w| urls.contains(&w.as_str())) {
            return;
        }
        if Instant::now() > deadline {
            break;
        }
        // Pace of polling another process's state; nothing to wait on instead.
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{}'s client INFO connect_urls {last} does not list {want:?}",
        node.name()
    );
}

// ---------------------------------------------------------------------------------------------
// Route auth

fn seed_with_route_auth() -> Node {
    let mut cfg = NodeConfig::ringnats("A");
    cfg.cluster_auth = Some(("ruser".into(), "rpass".into()));
    Node::start(cfg)
}

#[test]
fn route_auth_accepts_right_credentials() {
    let a = seed_with_route_auth();
    let mut cfg = NodeConfig::ringnats("B");
    cfg.routes = vec![a.cfg.route_url_as("ruser", "rpass")];
    let b = Node::start(cfg);
    wait_interest(&a, &b);
    wait_interest(&b, &a);
    assert_exactly_once_all_pairs(&[&a, &b], 50);
}

/// gnatsd 1.0's log lines for a rejected route: on the soliciting side and on the seed.
const REJECTED_BY_SEED: &str = "Route Error 'Authorization Violation'";
const SEED_REJECTS: &str = "- Authorization Error";

/// The route from `b` to the auth-requiring seed `a` is refused: both sides log it, and while
/// `b` is refused twice (a first attempt and a retry) no message crosses in either direction.
fn assert_route_rejected(a: &Node, b: &Node) {
    let subject = unique("deny");
    let mut on_a = a.client();
    on_a.sub(&subject, "1");
    on_a.flush();
    let mut on_b = b.client();
    on_b.sub(&subject, "1");
    on_b.flush();
    let mut pa = a.client();
    let mut pb = b.client();
    let count = |n: &Node, s: &str| n.log().lines().filter(|l| l.contains(s)).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..500 {
        pa.publish(&subject, b"from A");
        pb.publish(&subject, b"from B");
        pa.flush();
        pb.flush();
        // Local delivery: each publish reaches its own node's subscriber, and only that.
        for (c, own) in [(&mut on_a, "from A"), (&mut on_b, "from B")] {
            let m = c.expect_msg();
            assert_eq!(m.text(), own, "a message crossed the rejected route");
        }
        if let Some(m) = on_a.next_msg(PROBE_EVERY) {
            panic!("a message crossed the rejected route: {m:?}");
        }
        let rejections = count(a, SEED_REJECTS).max(count(b, REJECTED_BY_SEED));
        if rejections >= 2 {
            on_b.expect_no_more();
            on_a.expect_no_more();
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no two rejections logged within 10 s: {}'s log has no {REJECTED_BY_SEED:?} and {}'s no {SEED_REJECTS:?}",
            b.name(),
            a.name()
        );
    }
    panic!("no two rejections logged within 500 rounds");
}

#[test]
fn route_auth_rejects_wrong_password() {
    let a = seed_with_route_auth();
    let mut cfg = NodeConfig::ringnats("B");
    cfg.routes = vec![a.cfg.route_url_as("ruser", "wrong")];
    let b = Node::start(cfg);
    assert_route_rejected(&a, &b);
}

#[test]
fn route_auth_rejects_missing_credentials() {
    let a = seed_with_route_auth();
    let mut cfg = NodeConfig::ringnats("B");
    cfg.routes = vec![a.cfg.route_url()];
    let b = Node::start(cfg);
    assert_route_rejected(&a, &b);
}

// ---------------------------------------------------------------------------------------------
// Route port, byte by byte

#[test]
fn client_dialing_the_route_port_is_refused() {
    let n = Node::start(NodeConfig::ringnats("A"));
    let mut f = FakeRoute::dial(&n);
    assert!(f.info_line.starts_with("INFO {"), "{:?}", f.info_line);
    f.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"go\",\"version\":\"1.2.2\",\"protocol\":1}\r\n");
    assert_eq!(
        f.wire.read_to_eof(),
        "-ERR 'Attempted To Connect To Route Port'\r\n"
    );
}

#[test]
fn fake_route_sees_the_gnatsd_1_0_route_protocol() {
    let mut cfg = NodeConfig::ringnats("A");
    cfg.cluster_auth = Some(("ruser".into(), "rpass".into()));
    let n = Node::start(cfg);
    let mut f = FakeRoute::dial(&n);

    // The route INFO: `INFO {...}\r\n`, no space before CRLF, gnatsd's fields in gnatsd's order.
    let line = f.info_line.clone();
    assert!(line.starts_with("INFO {\"server_id\":\""), "{line:?}");
    assert!(line.ends_with("}\r\n"), "no space before CRLF: {line:?}");
    let fields = [
        "server_id",
        "version",
        "go",
        "host",
        "port",
        "auth_required",
        "ssl_required",
        "tls_required",
        "tls_verify",
        "max_payload",
        "connect_urls",
    ];
    let mut at = 0;
    for k in fields {
        let pos = line[at..]
            .find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("field {k} missing or out of order in {line:?}"));
        at += pos + 1;
    }
    let info = f.info_json();
    assert!(!info["server_id"].as_str().unwrap().is_empty());
    assert!(
        info["version"].is_string() && info["go"].is_string(),
        "{info}"
    );
    assert_eq!(info["host"], "127.0.0.1");
    assert_eq!(info["port"], n.cfg.route_port);
    assert_eq!(info["auth_required"], true);
    assert_eq!(info["ssl_required"], false);
    assert_eq!(info["tls_required"], false);
    assert_eq!(info["tls_verify"], false);
    assert_eq!(info["max_payload"], 1048576);
    assert_eq!(
        info["connect_urls"],
        serde_json::json!([n.cfg.client_url()])
    );
    assert_eq!(info["server_id"], n.client().info_json()["server_id"]);

    // CONNECT + INFO as in the §2.10 transcript; the PONG says they were processed.
    let fake_client_url = format!("127.0.0.1:{}", free_port());
    f.handshake(Some(("ruser", "rpass")), free_port(), &fake_client_url);
    wait_connect_urls(&n, std::slice::from_ref(&fake_client_url));
    let mut c = n.client();

    // Local subscriptions reach the route with route sids.
    c.sub("baz", "7");
    c.qsub("baz", "q2", "8");
    c.sub("sentinel", "9");
    c.flush();
    let first = f.expect_line();
    let cid = first
        .strip_prefix("SUB baz  RSID:")
        .and_then(|r| r.strip_suffix(":7"))
        .unwrap_or_else(|| panic!("plain SUB on the route: {first:?}"));
    assert!(cid.parse::<u64>().is_ok(), "{first:?}");
    assert_eq!(f.expect_line(), format!("SUB baz q2 QRSID:{cid}:8"));
    assert_eq!(f.expect_line(), format!("SUB sentinel  RSID:{cid}:9"));

    // A local publish matching the route's plain and queue subscriptions.
    f.send(b"SUB foo RSID:9:1\r\nSUB foo grp QRSID:9:2\r\n");
    f.ping();
    c.publish_reply("foo", "reply.x", b"hi");
    c.flush();
    let mut got = vec![f.expect_line(), f.expect_line()];
    got.sort();
    assert_eq!(
        got,
        [
            "MSG foo QRSID:9:2 reply.x 2|hi".to_string(),
            "MSG foo RSID:9:1 reply.x 2|hi".to_string()
        ]
    );
    c.expect_no_more();

    // A plain MSG from the route fans out to local plain subscribers only.
    f.send(b"MSG baz RSID:9:1 2\r\nhi\r\nMSG sentinel RSID:9:1 2\r\nok\r\n");
    let m = c.expect_msg();
    assert_eq!(
        (m.subject.as_str(), m.sid.as_str(), m.text()),
        ("baz", "7", "hi".into())
    );
    let m = c.expect_msg();
    assert_eq!(
        (m.subject.as_str(), m.sid.as_str()),
        ("sentinel", "9"),
        "queue group skipped"
    );
    // A queue MSG goes to exactly the named subscription.
    f.send(
        format!("MSG baz QRSID:{cid}:8 2\r\nqq\r\nMSG sentinel RSID:9:1 2\r\nok\r\n").as_bytes(),
    );
    let m = c.expect_msg();
    assert_eq!(
        (m.subject.as_str(), m.sid.as_str(), m.text()),
        ("baz", "8", "qq".into())
    );
    let m = c.expect_msg();
    assert_eq!((m.subject.as_str(), m.sid.as_str()), ("sentinel", "9"));
    c.expect_no_more();

    // An auto-unsubscribe limit travels with the UNSUB; once the client has had its 3
    // messages, a plain UNSUB follows.
    c.sub("x", "10");
    c.unsub_max("10", 3);
    c.flush();
    assert_eq!(f.expect_line(), format!("SUB x  RSID:{cid}:10"));
    assert_eq!(f.expect_line(), format!("UNSUB RSID:{cid}:10 3"));
    f.send(b"MSG x RSID:9:1 1\r\na\r\nMSG x RSID:9:1 1\r\nb\r\nMSG x RSID:9:1 1\r\nc\r\nMSG x RSID:9:1 1\r\nd\r\n");
    let got: Vec<String> = c.expect_msgs(3).iter().map(|m| m.text()).collect();
    assert_eq!(got, ["a", "b", "c"]);
    assert_eq!(f.expect_line(), format!("UNSUB RSID:{cid}:10"));
    c.expect_no_more();

    // UNSUB and close propagate as UNSUB with the route sid (none for the finished sid 10).
    c.unsub("9");
    c.flush();
    assert_eq!(f.expect_line(), format!("UNSUB RSID:{cid}:9"));
    c.close();
    let mut got = vec![f.expect_line(), f.expect_line()];
    got.sort();
    assert_eq!(
        got,
        [
            format!("UNSUB QRSID:{cid}:8"),
            format!("UNSUB RSID:{cid}:7")
        ]
    );
    f.ping();
}

// ---------------------------------------------------------------------------------------------
// Beyond gnatsd 1.0

#[test]
fn beyond_1_0_queue_message_for_a_departed_member_goes_to_another_local_member() {
    if skip_beyond_1_0(
        "beyond_1_0_queue_message_for_a_departed_member_goes_to_another_local_member",
        "drops a queue message whose chosen member is gone",
    ) {
        return;
    }
    let n = Node::start(NodeConfig::ringnats("A"));
    let mut f = FakeRoute::dial(&n);
    f.handshake(None, free_port(), &format!("127.0.0.1:{}", free_port()));
    let cid_of = |line: String| -> String {
        line.strip_prefix("SUB jobs g QRSID:")
            .and_then(|r| r.strip_suffix(":1"))
            .unwrap_or_else(|| panic!("queue SUB on the route: {line:?}"))
            .to_string()
    };
    let mut members = Vec::new();
    let mut cids = Vec::new();
    for _ in 0..3 {
        let mut c = n.client();
        c.qsub("jobs", "g", "1");
        c.flush();
        cids.push(cid_of(f.expect_line()));
        members.push(c);
    }
    let mut closing = members.pop().unwrap();
    let mut gone = members.remove(0);
    let mut stays = members.pop().unwrap();
    // One member unsubscribes, one closes; the route hears of both.
    gone.unsub("1");
    gone.flush();
    assert_eq!(f.expect_line(), format!("UNSUB QRSID:{}:1", cids[0]));
    closing.flush();
    closing.close();
    assert_eq!(f.expect_line(), format!("UNSUB QRSID:{}:1", cids[2]));
    // Messages the origin had already addressed to them go to the member that is left.
    f.send(format!("MSG jobs QRSID:{}:1 2\r\nm1\r\n", cids[0]).as_bytes());
    f.send(format!("MSG jobs QRSID:{}:1 2\r\nm2\r\n", cids[2]).as_bytes());
    for want in ["m1", "m2"] {
        let m = stays.expect_msg();
        assert_eq!((m.sid.as_str(), m.text()), ("1", want.to_string()));
    }
    stays.expect_no_more();
    gone.expect_no_more();
}

#[test]
fn beyond_1_0_closed_client_with_pending_auto_unsubscribe_leaves_no_remote_interest() {
    if skip_beyond_1_0(
        "beyond_1_0_closed_client_with_pending_auto_unsubscribe_leaves_no_remote_interest",
        "sends `UNSUB <rsid> <max>` on close, so the remote copy of the subscription leaks",
    ) {
        return;
    }
    let nodes = start_mesh(&ringnats_kinds(2));
    let (a, b) = (&nodes[0], &nodes[1]);
    let subject = unique("leak");
    let mark = format!("{subject}.mark");
    let mut qb = b.client();
    qb.qsub(&subject, "g", "1");
    qb.unsub_max("1", 1_000_000);
    qb.flush();
    let mut l = a.client();
    l.qsub(&subject, "g", "1");
    l.sub(&mark, "2");
    l.flush();
    let mut p = a.client();
    wait_path(&mut p, &mut qb);
    wait_path(&mut p, &mut l);
    assert!(local_share(&mut p, &mut l, &subject, &mark, 200) < 200);
    qb.close();
    wait_remote_members_gone(&mut p, &mut l, &subject, &mark);
    assert_eq!(local_share(&mut p, &mut l, &subject, &mark, 500), 500);
}

// ---------------------------------------------------------------------------------------------
// async-nats

mod async_clients {
    use super::*;
    use futures::StreamExt;
    use tokio::time::timeout;

    const T: Duration = Duration::from_secs(10);

    async fn connect(n: &Node) -> async_nats::Client {
        timeout(
            T,
            async_nats::connect(format!("nats://{}", n.client_addr())),
        )
        .await
        .expect("connect in time")
        .expect("connect")
    }

    /// `wait_path` for async-nats clients: `sub` subscribes to a probe (after its earlier
    /// subscriptions), `publ` publishes it every 20 ms until it arrives (at most 10 s).
    async fn wait_path_async(publ: &async_nats::Client, sub: &async_nats::Client) {
        let subject = unique("_probe");
        let mut probe = sub.subscribe(subject.clone()).await.unwrap();
        sub.flush().await.unwrap();
        let deadline = Instant::now() + ROUTE_WAIT;
        for _ in 0..=ROUTE_WAIT.as_millis() / PROBE_EVERY.as_millis() {
            publ.publish(subject.clone(), "probe".into()).await.unwrap();
            publ.flush().await.unwrap();
            if timeout(PROBE_EVERY, probe.next()).await.is_ok() {
                probe.unsubscribe().await.unwrap();
                return;
            }
            if Instant::now() > deadline {
                break;
            }
        }
        panic!("no message path between the async clients within {ROUTE_WAIT:?}");
    }

    fn two_nodes() -> Vec<Node> {
        tokio::task::block_in_place(|| start_mesh(&ringnats_kinds(2)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_nats_pub_sub_across_nodes() {
        let nodes = two_nodes();
        let pc = connect(&nodes[0]).await;
        let sc = connect(&nodes[1]).await;
        let subject = unique("an");
        let mut plain = sc.subscribe(subject.clone()).await.unwrap();
        let mut wild = sc.subscribe(format!("{subject}.>")).await.unwrap();
        sc.flush().await.unwrap();
        wait_path_async(&pc, &sc).await;
        for i in 0..100 {
            pc.publish(subject.clone(), format!("{i}").into())
                .await
                .unwrap();
            pc.publish(format!("{subject}.x.{i}"), format!("w{i}").into())
                .await
                .unwrap();
        }
        pc.flush().await.unwrap();
        for i in 0..100 {
            let m = timeout(T, plain.next()).await.unwrap().unwrap();
            assert_eq!(m.payload, format!("{i}").as_bytes());
            let m = timeout(T, wild.next()).await.unwrap().unwrap();
            assert_eq!(m.subject.as_str(), format!("{subject}.x.{i}"));
            assert_eq!(m.payload, format!("w{i}").as_bytes());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn async_nats_request_reply_across_nodes() {
        let nodes = two_nodes();
        let requester = connect(&nodes[0]).await;
        let responder = connect(&nodes[1]).await;
        let subject = unique("svc");
        let mut svc = responder
            .queue_subscribe(subject.clone(), "svc".into())
            .await
            .unwrap();
        responder.flush().await.unwrap();
        wait_path_async(&requester, &responder).await;
        let r = responder.clone();
        tokio::spawn(async move {
            while let Some(m) = svc.next().await {
                if let Some(reply) = m.reply {
                    let mut body = b"echo:".to_vec();
                    body.extend_from_slice(&m.payload);
                    r.publish(reply, body.into()).await.unwrap();
                }
            }
        });
        for i in 0..50 {
            let resp = timeout(T, requester.request(subject.clone(), format!("{i}").into()))
                .await
                .expect("reply in time")
                .expect("reply");
            assert_eq!(resp.payload, format!("echo:{i}").as_bytes());
        }
    }

    /// The 1.0 route dialect has no HMSG: a request with headers crosses a route as a
    /// plain MSG (headers stripped, as for a client without headers), and the reply
    /// still comes back. (Headers across routes come with the 2.x dialect.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_with_headers_crosses_a_1_0_route_without_them() {
        let nodes = two_nodes();
        let requester = connect(&nodes[0]).await;
        let responder = connect(&nodes[1]).await;
        let subject = unique("hsvc");
        let mut svc = responder.subscribe(subject.clone()).await.unwrap();
        responder.flush().await.unwrap();
        wait_path_async(&requester, &responder).await;
        let r = responder.clone();
        tokio::spawn(async move {
            while let Some(m) = svc.next().await {
                let Some(reply) = m.reply else {
                    continue;
                };
                let had_headers = m
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.iter().next().is_some());
                let body = format!("{}:{had_headers}", String::from_utf8_lossy(&m.payload));
                r.publish(reply, body.into()).await.unwrap();
            }
        });
        for i in 0..20 {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Req-Id", format!("r{i}").as_str());
            let resp = timeout(
                T,
                requester.request_with_headers(subject.clone(), h, format!("{i}").into()),
            )
            .await
            .expect("reply in time")
            .expect("reply");
            assert_eq!(resp.payload, format!("{i}:false").as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mixed clusters with the real gnatsd 1.0

fn check_mixed(nodes: &[Node]) {
    let r = refs(nodes);
    assert_exactly_once_all_pairs(&r, 100);
    assert_queue_exactly_once(&r, 1, 300);
}

#[test]
fn mixed_ringnats_solicits_gnatsd() {
    let Some(g) = gnatsd_or_skip("mixed_ringnats_solicits_gnatsd") else {
        return;
    };
    let gn = Node::start(NodeConfig::new("G", Kind::Gnatsd(g)));
    let mut cfg = NodeConfig::ringnats("R");
    cfg.routes = vec![gn.cfg.route_url()];
    let rn = Node::start(cfg);
    check_mixed(&[rn, gn]);
}

#[test]
fn mixed_gnatsd_solicits_ringnats() {
    let Some(g) = gnatsd_or_skip("mixed_gnatsd_solicits_ringnats") else {
        return;
    };
    let rn = Node::start(NodeConfig::ringnats("R"));
    let mut cfg = NodeConfig::new("G", Kind::Gnatsd(g));
    cfg.routes = vec![rn.cfg.route_url()];
    let gn = Node::start(cfg);
    check_mixed(&[rn, gn]);
}

#[test]
fn mixed_mesh_two_ringnats_one_gnatsd() {
    let Some(g) = gnatsd_or_skip("mixed_mesh_two_ringnats_one_gnatsd") else {
        return;
    };
    let nodes = start_mesh(&[Kind::Ringnats, Kind::Gnatsd(g), Kind::Ringnats]);
    check_mixed(&nodes);
}

#[test]
fn mixed_mesh_one_ringnats_two_gnatsd() {
    let Some(g) = gnatsd_or_skip("mixed_mesh_one_ringnats_two_gnatsd") else {
        return;
    };
    let nodes = start_mesh(&[Kind::Gnatsd(g.clone()), Kind::Ringnats, Kind::Gnatsd(g)]);
    check_mixed(&nodes);
}

// ---------------------------------------------------------------------------------------------
// Flow control across a route

/// Two nodes, B soliciting A; B's subscribers limited to `max_pending` bytes where the server
/// has that limit (gnatsd 1.0 has none: it blocks on a slow subscriber instead).
fn pair_with_max_pending(max_pending: usize) -> (Node, Node) {
    let mut a = NodeConfig::ringnats("A");
    a.debug = false;
    let mut b = NodeConfig::ringnats("B");
    b.debug = false;
    b.routes = vec![a.route_url()];
    if !under_test_is_gnatsd() {
        b.extra_args = vec!["--max_pending".into(), max_pending.to_string()];
    }
    let a = Node::start(a);
    let b = Node::start(b);
    wait_interest(&a, &b);
    (a, b)
}

/// A raw subscriber: CONNECT, `SUB <subject> 1`, synced with PING/PONG. Its socket is returned
/// for the test to read at its own pace.
fn raw_subscriber(node: &Node, subject: &str) -> std::net::TcpStream {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::net::TcpStream::connect(node.client_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPING\r\n").as_bytes())
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        r.read_line(&mut line).unwrap();
    }
    assert_eq!(
        line,
        "PONG\r\n",
        "sync of a raw subscriber on {}",
        node.name()
    );
    s
}

/// `count` PUBs of `size` bytes to `subject`, written as fast as the server takes them; then
/// the connection is closed at once (FIN after the last byte: the INFO was read, so nothing
/// unread makes it a reset, which would discard what the server had not read yet).
fn flood(addr: std::net::SocketAddr, subject: &str, size: usize, count: usize) {
    use std::io::{BufRead, BufReader, Write};
    let mut p = std::net::TcpStream::connect(addr).unwrap();
    p.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    p.set_read_timeout(Some(WAIT)).unwrap();
    let mut info = String::new();
    BufReader::new(&p).read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "{info:?}");
    p.write_all(b"CONNECT {\"verbose\":false}\r\n").unwrap();
    let mut frame = format!("PUB {subject} {size}\r\n").into_bytes();
    frame.extend_from_slice(&vec![b'x'; size]);
    frame.extend_from_slice(b"\r\n");
    let burst = frame.repeat(64);
    for _ in 0..count / 64 {
        p.write_all(&burst).unwrap();
    }
}

/// A subscriber on B that reads steadily but slower than a publisher on A writes: the route
/// brings the messages faster than the subscriber takes them. It gets every message, in
/// order, and is not cut: the route's reads are paced by it (gnatsd 1.0 blocks its route on
/// the subscriber's write). Unpaced, B queued the backlog until the subscriber passed
/// max_pending (three times over here) and was cut, losing the rest.
#[test]
fn a_slow_subscriber_behind_a_route_paces_it_and_gets_every_message() {
    use std::io::Read;
    const SIZE: usize = 1024;
    const COUNT: usize = 6 * 1024;
    let (a, b) = pair_with_max_pending(2 * 1024 * 1024);
    let subject = unique("paced");
    let mut sub = raw_subscriber(&b, &subject);
    wait_path(&mut a.client(), &mut b.client());
    let mut one = format!("MSG {subject} 1 {SIZE}\r\n").into_bytes();
    one.extend_from_slice(&[b'x'; SIZE]);
    one.extend_from_slice(b"\r\n");
    let expected = one.repeat(COUNT);
    let want = expected.len();
    // About 8 MB/s: 16 KiB every 2 ms, until everything came or the server hung up.
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(want);
        let mut buf = vec![0u8; 16 * 1024];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < want && Instant::now() < deadline {
            match sub.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    });
    flood(a.client_addr(), &subject, SIZE, COUNT);
    let got = reader.join().unwrap();
    assert!(
        got == expected,
        "the slow subscriber got {} of {} bytes; it ends with {:?}\nB's log:\n{}",
        got.len(),
        want,
        String::from_utf8_lossy(&got[got.len().saturating_sub(80)..]),
        b.log()
    );
    assert!(!b.log().contains("Slow Consumer"), "B: {}", b.log());
}

/// A subscriber on B that reads nothing is no reason to hold the route: B's other subscriber
/// to the same subject gets every message, and the stuck one is cut (at max_pending here;
/// at the write deadline by gnatsd 1.0).
#[test]
fn a_stuck_subscriber_behind_a_route_does_not_hold_the_others() {
    const SIZE: usize = 1024;
    const COUNT: usize = 4 * 1024;
    let (a, b) = pair_with_max_pending(1024 * 1024);
    let subject = unique("stuck");
    let stuck = raw_subscriber(&b, &subject);
    let mut healthy = b.client();
    healthy.sub(&subject, "7");
    wait_path(&mut a.client(), &mut healthy);
    let publisher = {
        let (addr, subject) = (a.client_addr(), subject.clone());
        std::thread::spawn(move || flood(addr, &subject, SIZE, COUNT))
    };
    let got = healthy.expect_msgs(COUNT);
    publisher.join().unwrap();
    assert!(got.iter().all(|m| m.subject == subject && m.sid == "7"));
    healthy.expect_no_more();
    drop(stuck);
}
