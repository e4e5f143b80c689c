//! Sans-IO tests of the route connection kind: the §2.10 two-server transcript replayed
//! byte for byte against one server, plus auth, duplicates and the queue rules.

use super::route::Dialect;
use super::tests::{drain, Harness, Peer};
use super::*;
use crate::cluster::{Cluster, Dial};
use crate::options::{ClusterOptions, RouteUrl};

const INFO_A: &str = "INFO {\"server_id\":\"A_ID\",\"version\":\"1.0.0\",\"go\":\"\",\"host\":\"127.0.0.1\",\"port\":36301,\"auth_required\":true,\"ssl_required\":false,\"tls_required\":false,\"tls_verify\":false,\"max_payload\":1048576,\"connect_urls\":[\"127.0.0.1:35301\"]}\r\n";
const FAKE_CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"ruser\",\"pass\":\"rpass\",\"tls_required\":false,\"name\":\"FAKE\"}\r\n";
const FAKE_INFO: &[u8] = b"INFO {\"server_id\":\"FAKE\",\"host\":\"127.0.0.1\",\"port\":36399,\"connect_urls\":[\"127.0.0.1:35399\"]}\r\n";

fn server_a() -> Harness {
    let copts = ClusterOptions {
        host: "127.0.0.1".into(),
        port: 36301,
        user: Some("ruser".into()),
        pass: Some("rpass".into()),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::new(
        copts,
        "A_ID".into(),
        "1.0.0",
        1 << 20,
        vec!["127.0.0.1:35301".into()],
        1,
    );
    let opts = crate::options::Options {
        host: "127.0.0.1".into(),
        port: 35301,
        ..crate::options::Options::default()
    };
    Harness::with_shared(Shared::new(opts, "A_ID".into(), 35301, Some(cluster)))
}

/// A client with verbose off.
fn quiet_client(h: &mut Harness, cid: u64) -> Peer {
    let mut c = h.peer(cid);
    h.feed(
        &mut c,
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\n",
    );
    c
}

fn registered_fake(h: &mut Harness) -> Peer {
    let mut fake = h.route_peer(1, None);
    assert_eq!(
        drain(&fake),
        "",
        "the accepting side holds its INFO until the CONNECT says which dialect"
    );
    h.feed(&mut fake, FAKE_CONNECT);
    assert_eq!(drain(&fake), INFO_A, "a 1.0 CONNECT: gnatsd 1.0's INFO");
    h.feed(&mut fake, FAKE_INFO);
    assert!(fake.conn.closing().is_none(), "{:?}", fake.conn.closing());
    fake
}

fn lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_inclusive("\r\n").map(String::from).collect();
    v.sort();
    v
}

#[test]
fn transcript_2_10_replayed() {
    let mut h = server_a();
    let mut fake = registered_fake(&mut h);
    assert_eq!(drain(&fake), "", "no local subscriptions to send yet");

    // The client INFO now carries FAKE's client URL, not our own.
    let info = String::from_utf8(h.shared.client_info(&h.live, 3, None)).unwrap();
    assert!(
        info.contains("\"connect_urls\":[\"127.0.0.1:35399\"]"),
        "{info}"
    );

    let mut client = quiet_client(&mut h, 3);
    h.feed(&mut client, b"SUB baz 7\r\nSUB baz q2 8\r\n");
    assert_eq!(
        drain(&fake),
        "SUB baz  RSID:3:7\r\nSUB baz q2 QRSID:3:8\r\n",
        "plain SUB keeps the empty queue field's space"
    );

    h.feed(&mut fake, b"SUB foo RSID:9:1\r\nSUB foo grp QRSID:9:2\r\n");
    h.feed(&mut client, b"PUB foo reply.x 2\r\nhi\r\n");
    assert_eq!(
        drain(&fake),
        "MSG foo RSID:9:1 reply.x 2\r\nhi\r\nMSG foo QRSID:9:2 reply.x 2\r\nhi\r\n",
        "one plain MSG for the remote server, one for its chosen queue member"
    );
    assert_eq!(drain(&client), "");

    h.feed(&mut fake, b"MSG baz RSID:9:1 2\r\nhi\r\n");
    assert_eq!(
        drain(&client),
        "MSG baz 7 2\r\nhi\r\n",
        "plain fan-out only: the origin already chose for queue groups"
    );
    assert_eq!(drain(&fake), "", "never routed back (one hop)");

    h.feed(&mut fake, b"MSG baz QRSID:3:8 2\r\nhi\r\n");
    assert_eq!(drain(&client), "MSG baz 8 2\r\nhi\r\n");

    h.close(&mut client);
    assert_eq!(
        lines(&drain(&fake)),
        lines("UNSUB RSID:3:7\r\nUNSUB QRSID:3:8\r\n")
    );
}

#[test]
fn remote_interest_is_dropped_with_the_route() {
    let mut h = server_a();
    let mut fake = registered_fake(&mut h);
    h.feed(
        &mut fake,
        b"SUB foo RSID:9:1\r\nSUB foo RSID:9:1\r\nSUB bar q QRSID:9:2\r\n",
    );
    assert_eq!(h.shared.sublist.count(), 2, "a duplicate rsid is ignored");
    h.feed(&mut fake, b"UNSUB RSID:9:1\r\n");
    assert_eq!(h.shared.sublist.count(), 1);
    h.close(&mut fake);
    assert_eq!(h.shared.sublist.count(), 0);
    let mut client = quiet_client(&mut h, 3);
    h.feed(&mut client, b"PUB bar 1\r\nx\r\n");
    assert_eq!(drain(&fake), "");
}

#[test]
fn route_auto_unsubscribe_counts_messages_over_the_route() {
    let mut h = server_a();
    let mut fake = registered_fake(&mut h);
    h.feed(&mut fake, b"SUB foo RSID:9:1\r\nUNSUB RSID:9:1 2\r\n");
    let mut client = quiet_client(&mut h, 3);
    h.feed(
        &mut client,
        b"PUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\n",
    );
    assert_eq!(
        drain(&fake),
        "MSG foo RSID:9:1 1\r\na\r\nMSG foo RSID:9:1 1\r\nb\r\n"
    );
    assert_eq!(h.shared.sublist.count(), 0);
}

#[test]
fn client_unsub_with_pending_max_is_forwarded_with_it() {
    let mut h = server_a();
    let fake = registered_fake(&mut h);
    let mut client = quiet_client(&mut h, 3);
    h.feed(&mut client, b"SUB a 1\r\nUNSUB 1 5\r\n");
    assert_eq!(drain(&fake), "SUB a  RSID:3:1\r\nUNSUB RSID:3:1 5\r\n");
    // On close the removal is unconditional (1.0 kept the max and leaked the remote copy).
    h.close(&mut client);
    assert_eq!(drain(&fake), "UNSUB RSID:3:1\r\n");
}

#[test]
fn new_route_gets_every_local_subscription_and_is_gossiped() {
    let mut h = server_a();
    let mut client = quiet_client(&mut h, 3);
    h.feed(&mut client, b"SUB a 1\r\nSUB b.* q 2\r\n");
    let mut fake = h.route_peer(1, None);
    h.feed(&mut fake, FAKE_CONNECT);
    assert_eq!(drain(&fake), INFO_A);
    h.feed(&mut fake, FAKE_INFO);
    assert_eq!(
        lines(&drain(&fake)),
        lines("SUB a  RSID:3:1\r\nSUB b.* q QRSID:3:2\r\n")
    );
    // A second server joins: FAKE hears about it, with the address it can be dialled at.
    let mut other = h.route_peer(2, None);
    drain(&other);
    h.feed(
        &mut other,
        b"CONNECT {\"user\":\"ruser\",\"pass\":\"rpass\",\"name\":\"OTHER\"}\r\nINFO {\"server_id\":\"OTHER\",\"host\":\"0.0.0.0\",\"port\":7777}\r\n",
    );
    let gossip = drain(&fake);
    assert!(
        gossip.starts_with("INFO {\"server_id\":\"OTHER\""),
        "{gossip}"
    );
    assert!(
        gossip.contains("\"ip\":\"nats-route://127.0.0.1:7777/\""),
        "{gossip}"
    );
    assert!(gossip.ends_with("}\r\n"));
}

#[test]
fn route_auth_and_client_on_route_port() {
    let mut h = server_a();
    let mut bad = h.route_peer(1, None);
    drain(&bad);
    h.feed(
        &mut bad,
        b"CONNECT {\"user\":\"ruser\",\"pass\":\"nope\",\"name\":\"X\"}\r\n",
    );
    assert_eq!(
        drain(&bad),
        format!("{INFO_A}-ERR 'Authorization Violation'\r\n")
    );
    assert!(bad.conn.closing().is_some());

    let mut early = h.route_peer(2, None);
    drain(&early);
    h.feed(&mut early, b"PING\r\n");
    assert_eq!(drain(&early), "-ERR 'Authorization Violation'\r\n");

    let mut client = h.route_peer(3, None);
    drain(&client);
    h.feed(
        &mut client,
        b"CONNECT {\"lang\":\"go\",\"user\":\"ruser\",\"pass\":\"rpass\"}\r\n",
    );
    assert_eq!(
        drain(&client),
        format!("{INFO_A}-ERR 'Attempted To Connect To Route Port'\r\n")
    );

    // A peer that says nothing gets gnatsd 1.0's INFO after the grace period, then the
    // auth timeout.
    let mut slow = h.route_peer(4, None);
    h.now += super::route::ACCEPT_INFO_GRACE;
    h.tick(&mut slow);
    assert_eq!(drain(&slow), INFO_A);
    h.now += std::time::Duration::from_secs(1);
    h.tick(&mut slow);
    assert_eq!(drain(&slow), "-ERR 'Authorization Timeout'\r\n");
}

#[test]
fn duplicate_and_self_routes_are_closed_without_reconnect() {
    let mut h = server_a();
    let fake = registered_fake(&mut h);
    let mut dup = h.route_peer(2, None);
    h.feed(&mut dup, FAKE_CONNECT);
    h.feed(&mut dup, FAKE_INFO);
    assert_eq!(dup.conn.closing(), Some(&CloseReason::RouteRejected));
    assert!(dup.conn.closed_route().unwrap().no_reconnect);
    assert!(fake.conn.closing().is_none());

    let mut me = h.route_peer(3, None);
    h.feed(
        &mut me,
        b"CONNECT {\"user\":\"ruser\",\"pass\":\"rpass\",\"name\":\"A_ID\"}\r\nINFO {\"server_id\":\"A_ID\"}\r\n",
    );
    assert_eq!(me.conn.closing(), Some(&CloseReason::RouteRejected));
}

#[test]
fn solicited_route_sends_connect_then_info() {
    let mut h = server_a();
    let dial = Dial {
        url: RouteUrl::parse("nats-route://u:p@127.0.0.1:36399").unwrap(),
        explicit: true,
        retries_left: 0,
        remote_id: None,
        at: h.now,
        reactor: 0,
        addr: None,
    };
    let mut out = h.route_peer(1, Some(dial.clone()));
    assert_eq!(drain(&out), "", "the dialler waits for the acceptor's INFO");
    // gnatsd 1.0 sends its INFO at once: CONNECT, then our INFO, in its dialect.
    h.feed(&mut out, FAKE_INFO);
    let connect = "CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"u\",\"pass\":\"p\",\"tls_required\":false,\"name\":\"A_ID\"}\r\n";
    assert_eq!(drain(&out), format!("{connect}{INFO_A}"));
    assert_eq!(out.conn.route_dialect(), Some(Dialect::V1));

    // A peer that says nothing (a ringnats acceptor waiting for our CONNECT) gets the 1.0
    // CONNECT after the grace period; our INFO follows its INFO.
    let mut quiet = h.route_peer(2, Some(dial));
    h.now += super::route::DIAL_CONNECT_GRACE;
    h.tick(&mut quiet);
    assert_eq!(drain(&quiet), connect);
    h.feed(
        &mut quiet,
        b"INFO {\"server_id\":\"QUIET\",\"host\":\"127.0.0.1\",\"port\":36398}\r\n",
    );
    assert_eq!(drain(&quiet), INFO_A);
}

#[test]
fn queue_message_for_a_departed_member_goes_to_its_group() {
    let mut h = server_a();
    let mut fake = registered_fake(&mut h);
    let mut gone = quiet_client(&mut h, 3);
    let mut stays = quiet_client(&mut h, 4);
    h.feed(&mut gone, b"SUB job workers 1\r\n");
    h.feed(&mut stays, b"SUB job workers 5\r\nSUB job 6\r\n");
    drain(&fake);
    h.close(&mut gone);
    h.feed(&mut fake, b"MSG job QRSID:3:1 2\r\nhi\r\n");
    assert_eq!(
        drain(&stays),
        "MSG job 5 2\r\nhi\r\n",
        "delivered to another local member of the group, not to the plain sub"
    );
    h.feed(
        &mut fake,
        b"MSG job QRSID:3 2\r\nhi\r\nMSG job QRSID:99:1 2\r\nhi\r\n",
    );
    assert_eq!(
        drain(&stays),
        "",
        "malformed or unknown members are dropped"
    );
}

#[test]
fn async_info_after_first_pong_for_protocol_1() {
    let mut h = server_a();
    let mut early = h.peer(5);
    let mut late = quiet_client(&mut h, 6);
    h.feed(&mut late, b"PING\r\n");
    drain(&late);
    let _fake = registered_fake(&mut h);
    let mut env = h.env();
    early.conn.on_connect_urls_changed(&mut env);
    late.conn.on_connect_urls_changed(&mut env);
    drop(env);
    h.batch.flush(&mut Vec::new());
    let got = drain(&late);
    assert!(got.starts_with("INFO {") && got.contains("35399"), "{got}");
    assert_eq!(drain(&early), "", "no INFO before its first PING");
    h.feed(
        &mut early,
        b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n",
    );
    let got = drain(&early);
    assert!(
        got.starts_with("PONG\r\nINFO {"),
        "PONG first, then INFO: {got}"
    );
}

#[test]
fn a_local_limit_reached_withdraws_the_interest_from_routes() {
    let mut h = server_a();
    let mut client = quiet_client(&mut h, 3);
    h.feed(&mut client, b"SUB a 1\r\nUNSUB 1 3\r\nPUB a 1\r\nx\r\n");
    // A route joining later learns the sub and what is left of its limit.
    let mut fake = registered_fake(&mut h);
    assert_eq!(drain(&fake), "SUB a  RSID:3:1\r\nUNSUB RSID:3:1 2\r\n");
    h.feed(
        &mut fake,
        b"MSG a RSID:3:1 1\r\ny\r\nMSG a RSID:3:1 1\r\nz\r\n",
    );
    assert_eq!(
        drain(&fake),
        "UNSUB RSID:3:1\r\n",
        "withdrawn when the limit is hit"
    );
    assert_eq!(h.shared.sublist.count(), 0);
}

#[test]
fn unsub_after_the_limit_is_not_sent_to_routes_again() {
    // Found by the conn_ops fuzz target: the sid was withdrawn when its limit was hit, and
    // a later UNSUB for it sent a second UNSUB to every route.
    let mut h = server_a();
    let fake = registered_fake(&mut h);
    let mut client = quiet_client(&mut h, 3);
    h.feed(&mut client, b"SUB a q 1\r\nUNSUB 1 1\r\nPUB a 1\r\nx\r\n");
    assert_eq!(
        drain(&fake),
        "SUB a q QRSID:3:1\r\nUNSUB QRSID:3:1 1\r\nUNSUB QRSID:3:1\r\n"
    );
    h.feed(&mut client, b"UNSUB 1\r\nUNSUB 1 4\r\n");
    assert_eq!(drain(&fake), "", "the sid is already gone");
    h.close(&mut client);
    assert_eq!(drain(&fake), "");
}
