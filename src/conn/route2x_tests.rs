//! Sans-IO tests of the 2.x route dialect: the nats-server 2.9.10 captures under
//! `tests/transcripts/` replayed byte for byte against one ringnats server standing in the
//! captured server's place. The fake route's and the client's recorded bytes go in as
//! recorded; what ringnats answers must be what nats-server answered, frame for frame,
//! except what is specific to that server (its INFO and CONNECT JSON, its `$SYS` account,
//! its keepalive PINGs). Interest that nats-server walks out of a hash map (the snapshot
//! for a new route, the withdrawal of a closed client) is compared as a set.

use super::route::Dialect;
use super::tests::{drain, Harness, Peer};
use super::*;
use crate::cluster::{Cluster, Dial};
use crate::options::{ClusterOptions, RouteUrl};

const FAKE_DIALS_SERVER: &str =
    include_str!("../../tests/transcripts/nats-server-2.9.10-fake-dials-server.txt");
const SERVER_DIALS_FAKE: &str =
    include_str!("../../tests/transcripts/nats-server-2.9.10-server-dials-fake.txt");
const CLUSTER_NAMES: &str =
    include_str!("../../tests/transcripts/nats-server-2.9.10-cluster-names.txt");
const GOSSIP: &str = include_str!("../../tests/transcripts/nats-server-2.9.10-gossip.txt");

/// One recorded frame: who sent it (`S` server → route, `F` route → server, `C` client →
/// server, `c` server → client) and its bytes.
struct Record {
    who: char,
    bytes: Vec<u8>,
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'\\') => out.push(b'\\'),
            other => panic!("bad escape {other:?}"),
        }
    }
    out
}

fn records(transcript: &str) -> Vec<Record> {
    transcript
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (who, rest) = l.split_once(": ").expect("record");
            Record {
                who: who.chars().next().unwrap(),
                bytes: unescape(rest),
            }
        })
        .collect()
}

/// Splits a byte stream into frames (a line, plus its payload for (R|H)MSG).
fn frames(mut s: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let line = std::str::from_utf8(&s[..eol]).unwrap();
        let op = line.split(' ').next().unwrap_or("");
        let mut end = eol + 2;
        if matches!(op, "MSG" | "RMSG" | "HMSG") {
            let size: usize = line.rsplit(' ').next().unwrap().parse().unwrap();
            end += size + 2;
        }
        out.push(String::from_utf8_lossy(&s[..end]).into_owned());
        s = &s[end..];
    }
    assert!(
        s.is_empty(),
        "trailing bytes {:?}",
        String::from_utf8_lossy(s)
    );
    out
}

/// What must match: no INFO/CONNECT (server specific, checked on their own), no `$SYS`
/// interest, no keepalive PING, no -ERR (checked on its own). Runs of interest lines are
/// sorted (nats-server walks them out of a hash map).
fn canonical(frames: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut run: Vec<String> = Vec::new();
    for f in frames {
        if f.starts_with("INFO ")
            || f.starts_with("CONNECT ")
            || f.starts_with("-ERR")
            || f == "PING\r\n"
            || f.contains(" $SYS ")
        {
            continue;
        }
        if f.starts_with("RS+ ") || f.starts_with("RS- ") {
            run.push(f);
            continue;
        }
        run.sort();
        out.append(&mut run);
        out.push(f);
    }
    run.sort();
    out.append(&mut run);
    out
}

fn server(name: Option<&str>) -> Harness {
    let copts = ClusterOptions {
        host: "127.0.0.1".into(),
        port: 36301,
        name: name.map(Into::into),
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

fn dial(port: u16) -> Dial {
    Dial {
        url: RouteUrl::parse(&format!("nats-route://127.0.0.1:{port}")).unwrap(),
        explicit: true,
        retries_left: 0,
        remote_id: None,
        at: std::time::Instant::now(),
        reactor: 0,
        addr: None,
    }
}

/// Feeds every `F`/`C` record to `route`/`client` in order; returns what ringnats wrote to
/// each and what nats-server wrote (`S`, `c`), all as frames.
struct Replay {
    route_out: Vec<u8>,
    client_out: Vec<u8>,
    want_route: Vec<u8>,
    want_client: Vec<u8>,
}

fn replay(h: &mut Harness, route: &mut Peer, client: &mut Peer, recs: &[Record]) -> Replay {
    let mut r = Replay {
        route_out: Vec::new(),
        client_out: Vec::new(),
        want_route: Vec::new(),
        want_client: Vec::new(),
    };
    for rec in recs {
        match rec.who {
            'F' => h.feed(route, &rec.bytes),
            'C' => h.feed(client, &rec.bytes),
            'S' => r.want_route.extend_from_slice(&rec.bytes),
            'c' => r.want_client.extend_from_slice(&rec.bytes),
            'X' => h.close(client),
            w => panic!("unknown record kind {w}"),
        }
        r.route_out.extend_from_slice(drain(route).as_bytes());
        r.client_out.extend_from_slice(drain(client).as_bytes());
    }
    r
}

fn json_of(frame: &str, op: &str) -> serde_json::Value {
    let json = frame
        .strip_prefix(op)
        .unwrap_or_else(|| panic!("{frame:?} is not {op}"))
        .trim_end();
    serde_json::from_str(json).unwrap()
}

#[test]
fn replay_nats_server_2_9_10_as_the_accepting_server() {
    let recs = records(FAKE_DIALS_SERVER);
    // The capture ends with a malformed RS+: replayed on its own below.
    let (last, recs) = recs.split_last().unwrap();
    assert_eq!(last.bytes, b"RS+ $G a b\r\n");
    let mut h = server(None);
    let mut client = h.peer(3);
    let mut route = h.route_peer(1, None);
    assert_eq!(drain(&route), "", "INFO waits for the dialler's CONNECT");
    let r = replay(&mut h, &mut route, &mut client, recs);
    let ours = frames(&r.route_out);
    let theirs = frames(&r.want_route);
    assert_eq!(canonical(ours.clone()), canonical(theirs.clone()));
    assert_eq!(
        canonical(frames(&r.client_out)),
        canonical(frames(&r.want_client)),
        "what the local client got from the route"
    );
    assert_eq!(route.conn.route_dialect(), Some(Dialect::V2));

    // Our INFO: nats-server 2.9's fields in its order, where we have them, and the cluster
    // name of the dialler (none is configured here).
    let info = ours[0].clone();
    assert!(info.starts_with("INFO {\"server_id\":\"A_ID\",\"server_name\":\"A_ID\",\"version\":\"1.0.0\",\"proto\":2,\"go\":\"\",\"host\":\"127.0.0.1\",\"port\":36301,\"headers\":true,\"max_payload\":1048576,\"cluster\":\"C1\",\"connect_urls\":[\"127.0.0.1:35301\"]} \r\n"), "{info}");
    let (ours_j, theirs_j) = (json_of(&info, "INFO "), json_of(&theirs[0], "INFO "));
    let keys =
        |v: &serde_json::Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    for k in keys(&ours_j) {
        assert!(theirs_j.get(&k).is_some(), "2.9 sends {k} too");
    }

    // A malformed RS+ (three arguments) closes the route, as in 2.9.
    h.feed(&mut route, &last.bytes);
    assert!(route.conn.closing().is_some());
}

#[test]
fn replay_nats_server_2_9_10_as_the_dialling_server() {
    let recs = records(SERVER_DIALS_FAKE);
    let mut h = server(None);
    let mut client = h.peer(3);
    let mut route = h.route_peer(1, Some(dial(40955)));
    assert_eq!(drain(&route), "", "CONNECT waits for the acceptor's INFO");
    let r = replay(&mut h, &mut route, &mut client, &recs);
    let ours = frames(&r.route_out);
    let theirs = frames(&r.want_route);
    assert_eq!(canonical(ours.clone()), canonical(theirs.clone()));
    assert_eq!(
        canonical(frames(&r.client_out)),
        canonical(frames(&r.want_client))
    );
    // CONNECT as 2.9 sends it, less `lnoc` (we do not speak leaf-origin messages), with the
    // acceptor's cluster name; then our INFO.
    assert_eq!(
        ours[0],
        "CONNECT {\"echo\":true,\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"headers\":true,\"name\":\"A_ID\",\"cluster\":\"C1\"}\r\n"
    );
    let mut theirs_connect = json_of(&theirs[0], "CONNECT ");
    theirs_connect.as_object_mut().unwrap().remove("lnoc");
    theirs_connect["name"] = "A_ID".into();
    assert_eq!(json_of(&ours[0], "CONNECT "), theirs_connect);
    assert!(ours[1].starts_with("INFO {\"server_id\":\"A_ID\""));
}

#[test]
fn cluster_name_mismatch_is_refused_with_2_9s_text() {
    let recs = records(CLUSTER_NAMES);
    let want = recs
        .iter()
        .find(|r| r.who == 'S' && r.bytes.starts_with(b"-ERR"))
        .unwrap();
    let connect = recs
        .iter()
        .find(|r| r.who == 'F' && r.bytes.windows(12).any(|w| w == b"\"cluster\":\"C"))
        .unwrap();
    let mut h = server(Some("C1"));
    let mut route = h.route_peer(1, None);
    h.feed(&mut route, &connect.bytes);
    let got = drain(&route);
    let frames = frames(got.as_bytes());
    assert!(frames[0].starts_with("INFO {"), "{got}");
    assert_eq!(frames[1].as_bytes(), &want.bytes[..]);
    assert_eq!(route.conn.closing(), Some(&CloseReason::RouteRejected));

    // A 1.0 CONNECT (no cluster name) is a 1.0 route: served, not refused.
    let mut old = h.route_peer(2, None);
    h.feed(
        &mut old,
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"OLD\"}\r\n",
    );
    assert!(drain(&old).starts_with("INFO {\"server_id\":\"A_ID\",\"version\""));
    assert_eq!(old.conn.route_dialect(), Some(Dialect::V1));

    // Dialling a 2.x server of another cluster: refused on its INFO, nothing sent.
    let mut out = h.route_peer(3, Some(dial(1)));
    let info = recs.iter().find(|r| r.who == 'S').unwrap();
    let mut wrong = info.bytes.clone();
    let at = wrong
        .windows(14)
        .position(|w| w == b"\"cluster\":\"C1\"")
        .unwrap();
    wrong[at + 11] = b'X';
    wrong[at + 12] = b'1';
    h.feed(&mut out, &wrong);
    assert!(drain(&out)
        .starts_with("-ERR 'Rejecting connection, cluster name \"X1\" does not match \"C1\"'"));
}

#[test]
fn gossip_of_a_2x_newcomer_goes_to_2x_routes_only() {
    let recs = records(GOSSIP);
    let theirs = recs
        .iter()
        .rev()
        .find(|r| r.who == 'S' && r.bytes.starts_with(b"INFO"))
        .unwrap();
    let theirs = String::from_utf8(theirs.bytes.clone()).unwrap();
    let mut h = server(None);
    let v2 = |id: &str, port: u16| {
        format!("CONNECT {{\"echo\":true,\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"headers\":true,\"name\":\"{id}\",\"cluster\":\"C1\"}}\r\nINFO {{\"server_id\":\"{id}\",\"server_name\":\"{id}\",\"version\":\"2.9.10\",\"proto\":2,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\"max_payload\":1048576,\"cluster\":\"C1\",\"connect_urls\":[\"127.0.0.1:1\"]}} \r\n")
    };
    let mut first = h.route_peer(1, None);
    h.feed(&mut first, v2("N1", 7001).as_bytes());
    let mut old = h.route_peer(2, None);
    h.feed(
        &mut old,
        b"CONNECT {\"name\":\"OLD\"}\r\nINFO {\"server_id\":\"OLD\",\"host\":\"127.0.0.1\",\"port\":7003}\r\n",
    );
    drain(&first);
    drain(&old);
    let mut second = h.route_peer(3, None);
    h.feed(&mut second, v2("N2", 7002).as_bytes());
    let got = drain(&first);
    assert_eq!(
        got,
        "INFO {\"server_id\":\"N2\",\"server_name\":\"N2\",\"version\":\"2.9.10\",\"proto\":2,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":7002,\"headers\":true,\"max_payload\":1048576,\"ip\":\"nats-route://127.0.0.1:7002/\",\"cluster\":\"C1\",\"connect_urls\":[\"127.0.0.1:1\"]}\r\n"
    );
    // The same fields, in the same order, as 2.9's gossip (which adds `lnoc`).
    let order = |s: &str| -> Vec<String> {
        json_of(s, "INFO ")
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "lnoc")
            .cloned()
            .collect()
    };
    assert_eq!(order(&got), order(&theirs));
    assert_eq!(drain(&old), "", "a 1.0 route never hears of a 2.x server");
}

#[test]
fn bridge_forwards_one_hop_each_way() {
    let mut h = server(None);
    let mut v2 = h.route_peer(1, None);
    h.feed(
        &mut v2,
        b"CONNECT {\"headers\":true,\"name\":\"N1\",\"cluster\":\"C1\"}\r\nINFO {\"server_id\":\"N1\",\"proto\":2,\"headers\":true,\"cluster\":\"C1\",\"port\":7001}\r\n",
    );
    let mut v1 = h.route_peer(2, None);
    h.feed(
        &mut v1,
        b"CONNECT {\"name\":\"OLD\"}\r\nINFO {\"server_id\":\"OLD\",\"port\":7003}\r\n",
    );
    drain(&v2);
    drain(&v1);
    let mut client = h.peer(3);
    h.feed(
        &mut client,
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB loc 1\r\n",
    );
    assert_eq!(drain(&v1), "SUB loc  RSID:3:1\r\n");
    assert_eq!(drain(&v2), "RS+ $G loc\r\n");

    // 2.x interest reaches the 1.0 cluster as the bridge's, and back.
    h.feed(&mut v2, b"RS+ $G two\r\nRS+ $G two q 3\r\nRS+ $SYS x\r\n");
    assert_eq!(drain(&v1), "SUB two  RSID:1:1\r\nSUB two q QRSID:1:2\r\n");
    assert_eq!(drain(&v2), "", "never back into its own cluster");
    h.feed(
        &mut v1,
        b"SUB one RSID:9:1\r\nSUB one w QRSID:9:2\r\nSUB one w QRSID:9:3\r\n",
    );
    assert_eq!(
        drain(&v2),
        "RS+ $G one\r\nRS+ $G one w 1\r\nRS+ $G one w 2\r\n"
    );
    assert_eq!(drain(&v1), "");

    // Messages: 1.0 → 2.x and 2.x → 1.0, one hop each, queue choices kept.
    h.feed(&mut v1, b"MSG two RSID:1:1 r 2\r\nhi\r\n");
    assert_eq!(drain(&v2), "RMSG $G two r 2\r\nhi\r\n");
    h.feed(&mut v1, b"MSG two QRSID:1:2 2\r\nqq\r\n");
    assert_eq!(drain(&v2), "RMSG $G two | q 2\r\nqq\r\n");
    assert_eq!(drain(&v1), "");
    // 1.0 sends a message matching plain and queue interest as two MSGs; 2.x delivers
    // every RMSG to its plain subscribers, so the twins leave as one.
    h.feed(
        &mut v1,
        b"MSG two RSID:1:1 r 2\r\nhi\r\nMSG two QRSID:1:2 r 2\r\nhi\r\nPING\r\n",
    );
    assert_eq!(drain(&v2), "RMSG $G two + r q 2\r\nhi\r\n");
    assert_eq!(drain(&v1), "PONG\r\n");
    h.feed(
        &mut v1,
        b"MSG two RSID:1:1 2\r\nhi\r\nMSG two QRSID:1:2 2\r\nho\r\n",
    );
    assert_eq!(
        drain(&v2),
        "RMSG $G two 2\r\nhi\r\nRMSG $G two | q 2\r\nho\r\n",
        "different messages stay apart, in order"
    );
    // The pair split over two reads still merges; the plain one waits for its twin.
    h.feed_part(&mut v1, b"MSG two RSID:1:1 2\r\nhi\r\n");
    assert_eq!(drain(&v2), "", "held for a twin");
    h.feed(&mut v1, b"MSG two QRSID:1:2 2\r\nhi\r\n");
    assert_eq!(drain(&v2), "RMSG $G two | q 2\r\nhi\r\n");
    // No queue member behind the 2.x route matches: nothing to wait for.
    h.feed(&mut v2, b"RS+ $G solo\r\n");
    assert_eq!(drain(&v1), "SUB solo  RSID:1:3\r\n");
    h.feed_part(&mut v1, b"MSG solo RSID:1:3 2\r\nhi\r\n");
    assert_eq!(drain(&v2), "RMSG $G solo 2\r\nhi\r\n", "not held");
    h.feed(
        &mut v2,
        b"RMSG $G one + r w 2\r\nhi\r\nHMSG $G one 12 14\r\nNATS/1.0\r\n\r\nhh\r\n",
    );
    let got = drain(&v1);
    assert!(
        got.starts_with("MSG one RSID:9:1 r 2\r\nhi\r\nMSG one QRSID:9:"),
        "{got}"
    );
    assert!(
        got.ends_with("MSG one RSID:9:1 2\r\nhh\r\n"),
        "headers stripped for 1.0: {got}"
    );
    assert_eq!(drain(&v2), "");

    // The 2.x route goes: its interest leaves the 1.0 cluster.
    h.close(&mut v2);
    let mut got: Vec<String> = drain(&v1)
        .split_inclusive("\r\n")
        .map(String::from)
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "UNSUB QRSID:1:2\r\n",
            "UNSUB RSID:1:1\r\n",
            "UNSUB RSID:1:3\r\n"
        ]
    );
}

#[test]
fn queue_weight_spreads_messages_over_cluster_members() {
    let mut h = server(None);
    let mut v2 = h.route_peer(1, None);
    h.feed(
        &mut v2,
        b"CONNECT {\"headers\":true,\"name\":\"N1\",\"cluster\":\"C1\"}\r\nINFO {\"server_id\":\"N1\",\"proto\":2,\"headers\":true,\"cluster\":\"C1\",\"port\":7001}\r\n",
    );
    drain(&v2);
    let mut member = h.peer(3);
    h.feed(
        &mut member,
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB w q 1\r\n",
    );
    assert_eq!(drain(&v2), "RS+ $G w q 1\r\n");
    // Three members behind the route, one here: about three quarters go over the route.
    h.feed(&mut v2, b"RS+ $G w q 3\r\n");
    let mut publ = h.peer(4);
    h.feed(
        &mut publ,
        b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n",
    );
    let n = 4000;
    let mut pubs = Vec::new();
    for _ in 0..n {
        pubs.extend_from_slice(b"PUB w 1\r\nx\r\n");
    }
    h.feed(&mut publ, &pubs);
    let remote = drain(&v2).matches("RMSG $G w | q 1\r\n").count();
    let local = drain(&member).matches("MSG w 1 1\r\n").count();
    assert_eq!(remote + local, n, "each message exactly once");
    assert!(
        (2700..3300).contains(&remote),
        "weighted 3:1, got {remote}/{n}"
    );
    // The weight drops to 0 members there: everything stays here.
    h.feed(&mut v2, b"RS- $G w q\r\n");
    h.feed(&mut publ, b"PUB w 1\r\nx\r\n");
    assert_eq!(drain(&v2), "");
    assert_eq!(drain(&member), "MSG w 1 1\r\nx\r\n");
}
