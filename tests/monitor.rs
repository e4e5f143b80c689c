//! The monitoring port (`-m`), over HTTP as dashboards read it: every endpoint's fields and
//! types (against gnatsd 1.0 itself when its binary is there), counters that move by exactly
//! the messages sent, `/connz` paging and sorting over 200 connections on two reactors,
//! `/routez` on a 3-node cluster, `/metrics` through a Prometheus text parser, JSONP, 404.
//!
//! Waits poll an endpoint or a protocol event, each bounded in time.

mod common;
#[path = "common/cluster.rs"]
mod harness;

use common::{Raw, WAIT};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// HTTP

struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on its own connection (`Connection: close`), the response parsed by httparse.
fn request(addr: SocketAddr, method: &str, path: &str) -> Http {
    let mut s = TcpStream::connect(addr).expect("connect to the monitoring port");
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read the response");
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(&buf).expect("valid HTTP response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => panic!("incomplete response: {buf:?}"),
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let http = Http {
        status: resp.code.unwrap(),
        headers,
        body: String::from_utf8(buf[head..].to_vec()).expect("UTF-8 body"),
    };
    if method != "HEAD" {
        let len: usize = http
            .header("content-length")
            .expect("content-length")
            .parse()
            .unwrap();
        assert_eq!(len, http.body.len(), "content-length matches the body");
    }
    http
}

fn get(addr: SocketAddr, path: &str) -> Http {
    request(addr, "GET", path)
}

fn json(addr: SocketAddr, path: &str) -> Value {
    let r = get(addr, path);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    r.json()
}

/// Polls `f` every 10 ms until it returns `Some`, for at most 10 s.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..2000 {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("gave up waiting for {what}");
}

/// Keys in document order, as written (serde_json keeps them sorted, so read the text).
fn top_keys(body: &str, indent: usize) -> Vec<String> {
    let pad = " ".repeat(indent);
    body.lines()
        .filter(|l| l.starts_with(&format!("{pad}\"")))
        .map(|l| l.trim().split('"').nth(1).unwrap().to_string())
        .collect()
}

/// The JSON type of every field, recursively (arrays by their first element).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

fn cid_of(raw: &Raw) -> u64 {
    let info: Value = serde_json::from_str(raw.info.trim_start_matches("INFO ").trim()).unwrap();
    info["client_id"].as_u64().expect("client_id in INFO")
}

fn monitored() -> ringnats::server::Running {
    common::start_with(|o| o.http_port = Some(0))
}

const VARZ_KEYS: [&str; 39] = [
    "server_id",
    "version",
    "go",
    "host",
    "auth_required",
    "ssl_required",
    "tls_required",
    "tls_verify",
    "addr",
    "max_connections",
    "ping_interval",
    "ping_max",
    "http_host",
    "http_port",
    "https_port",
    "auth_timeout",
    "max_control_line",
    "cluster",
    "tls_timeout",
    "port",
    "max_payload",
    "start",
    "now",
    "uptime",
    "mem",
    "cores",
    "cpu",
    "connections",
    "total_connections",
    "routes",
    "remotes",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "slow_consumers",
    "subscriptions",
    "http_req_stats",
    "config_load_time",
];

const CONN_KEYS: [&str; 13] = [
    "cid",
    "ip",
    "port",
    "start",
    "last_activity",
    "uptime",
    "idle",
    "pending_bytes",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "subscriptions",
];

// ---------------------------------------------------------------------------------------------
// Fields, types, counters

#[test]
fn varz_connz_subsz_fields_and_exact_counters() {
    let srv = monitored();
    let http = srv.http_addr.expect("monitoring port");
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB foo 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let mut publ = Raw::quiet(srv.addr);
    const N: u64 = 100;
    let one = b"PUB foo 10\r\n0123456789\r\n";
    publ.send(&one.repeat(N as usize));
    publ.send(b"PING\r\n");
    publ.expect(b"PONG\r\n");
    sub.expect(&b"MSG foo 1 10\r\n0123456789\r\n".repeat(N as usize));

    // Counters are published once per reactor loop iteration: wait for them, then they
    // must be exact.
    let counters = |v: &Value| {
        ["in_msgs", "out_msgs", "in_bytes", "out_bytes"].map(|k| v[k].as_u64().unwrap())
    };
    let varz = wait_for("varz counters", || {
        let r = get(http, "/varz");
        let v = r.json();
        (counters(&v) == [N, N, 10 * N, 10 * N]).then_some(r)
    });
    assert_eq!(varz.header("content-type"), Some("application/json"));
    assert_eq!(top_keys(&varz.body, 2), VARZ_KEYS);
    let v = varz.json();
    for k in [
        "server_id",
        "version",
        "go",
        "host",
        "addr",
        "http_host",
        "start",
        "now",
        "uptime",
        "config_load_time",
    ] {
        assert!(v[k].is_string(), "{k}: {}", v[k]);
    }
    for k in [
        "auth_required",
        "ssl_required",
        "tls_required",
        "tls_verify",
    ] {
        assert!(v[k].is_boolean(), "{k}");
    }
    for k in [
        "max_connections",
        "ping_interval",
        "ping_max",
        "http_port",
        "https_port",
        "max_control_line",
        "port",
        "max_payload",
        "mem",
        "cores",
        "connections",
        "total_connections",
        "routes",
        "remotes",
        "slow_consumers",
        "subscriptions",
    ] {
        assert!(v[k].is_u64(), "{k}: {}", v[k]);
    }
    assert!(v["auth_timeout"].is_number() && v["tls_timeout"].is_number() && v["cpu"].is_number());
    assert_eq!(v["ping_interval"], 120_000_000_000u64, "nanoseconds");
    assert_eq!(v["http_port"], http.port());
    assert_eq!(v["port"], srv.addr.port());
    assert_eq!(v["connections"], 2);
    assert_eq!(v["total_connections"], 2);
    assert_eq!(v["subscriptions"], 1);
    assert_eq!(
        (v["routes"].as_u64(), v["slow_consumers"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(
        top_keys(&varz.body, 4),
        [
            "addr",
            "cluster_port",
            "auth_timeout",
            "/",
            "/connz",
            "/routez",
            "/subsz",
            "/varz"
        ],
        "cluster and http_req_stats"
    );
    let cluster = v["cluster"].as_object().unwrap();
    assert_eq!(cluster.len(), 3);
    assert_eq!(
        v["http_req_stats"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["/", "/connz", "/routez", "/subsz", "/varz"]
    );
    assert!(v["http_req_stats"]["/varz"].as_u64().unwrap() >= 1);
    assert!(v["start"].as_str().unwrap().ends_with('Z'));

    // One more message moves every counter by exactly one message.
    publ.send(b"PUB foo 3\r\nabc\r\nPING\r\n");
    publ.expect(b"PONG\r\n");
    sub.expect(b"MSG foo 1 3\r\nabc\r\n");
    wait_for("one more message", || {
        let v = json(http, "/varz");
        (counters(&v) == [N + 1, N + 1, 10 * N + 3, 10 * N + 3]).then_some(())
    });

    // /connz: the publisher counted its input, the subscriber its output.
    let connz = get(http, "/connz");
    let c = connz.json();
    assert_eq!(
        top_keys(&connz.body, 2),
        [
            "now",
            "num_connections",
            "total",
            "offset",
            "limit",
            "connections"
        ]
    );
    assert_eq!(
        (c["num_connections"].as_u64(), c["total"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (c["offset"].as_u64(), c["limit"].as_u64()),
        (Some(0), Some(1024))
    );
    let entry = |cid: u64| {
        c["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["cid"] == cid)
            .unwrap_or_else(|| panic!("cid {cid} listed: {c}"))
            .clone()
    };
    let p = entry(cid_of(&publ));
    let s = entry(cid_of(&sub));
    let figures = |e: &Value| {
        [
            "in_msgs",
            "out_msgs",
            "in_bytes",
            "out_bytes",
            "subscriptions",
        ]
        .map(|k| e[k].as_u64().unwrap())
    };
    assert_eq!(figures(&p), [N + 1, 0, 10 * N + 3, 0, 0]);
    assert_eq!(figures(&s), [0, N + 1, 0, 10 * N + 3, 1]);
    let entry_text: Vec<String> = top_keys(&connz.body, 6);
    assert_eq!(
        &entry_text[..CONN_KEYS.len()],
        CONN_KEYS,
        "first entry's keys"
    );
    for k in ["ip", "start", "last_activity", "uptime", "idle"] {
        assert!(p[k].is_string(), "{k}");
    }
    assert_eq!(p["ip"], "127.0.0.1");
    assert!(
        p.get("name").is_none() && p.get("subscriptions_list").is_none(),
        "omitted when empty"
    );
    assert_eq!(p["pending_bytes"], 0);

    // /subsz
    let subsz = get(http, "/subsz");
    assert_eq!(
        top_keys(&subsz.body, 2),
        [
            "num_subscriptions",
            "num_cache",
            "num_inserts",
            "num_removes",
            "num_matches",
            "cache_hit_rate",
            "max_fanout",
            "avg_fanout"
        ]
    );
    let z = subsz.json();
    assert_eq!(z["num_subscriptions"], 1);
    assert_eq!(z["num_inserts"], 1);
    assert_eq!(z["max_fanout"], 1);
    assert!(z["num_matches"].as_u64().unwrap() >= 2);
    assert!(z["cache_hit_rate"].as_f64().unwrap() > 0.5);
    assert_eq!(get(http, "/subscriptionsz").json()["num_subscriptions"], 1);
    srv.shutdown().unwrap();
}

#[test]
fn connz_names_auth_subs_and_cid() {
    let srv = common::start_with(|o| {
        o.http_port = Some(0);
        o.user = Some("bob".into());
        o.pass = Some("s3cret".into());
    });
    let http = srv.http_addr.unwrap();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"user\":\"bob\",\"pass\":\"s3cret\",\"name\":\"svc\",\"lang\":\"rust\",\"version\":\"1.2\"}\r\nSUB b.> 1\r\nSUB a.* q 2\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    let cid = cid_of(&c);
    let plain = json(http, "/connz");
    let e = &plain["connections"][0];
    assert_eq!(
        (
            e["name"].as_str(),
            e["lang"].as_str(),
            e["version"].as_str()
        ),
        (Some("svc"), Some("rust"), Some("1.2"))
    );
    assert!(e.get("authorized_user").is_none(), "only with auth=1");
    let r = get(http, &format!("/connz?auth=1&subs=1&cid={cid}"));
    let keys = top_keys(&r.body, 6);
    assert_eq!(
        &keys[CONN_KEYS.len()..],
        [
            "name",
            "lang",
            "version",
            "authorized_user",
            "subscriptions_list"
        ]
    );
    let e = &r.json()["connections"][0];
    assert_eq!(e["authorized_user"], "bob");
    assert_eq!(e["subscriptions_list"], serde_json::json!(["a.*", "b.>"]));
    let none = json(http, "/connz?cid=999999");
    assert_eq!(
        (none["num_connections"].as_u64(), none["total"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(none["connections"], serde_json::json!([]));
    srv.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Paging and sorting

#[test]
fn connz_pages_and_sorts_200_connections_over_two_reactors() {
    let srv = monitored();
    let http = srv.http_addr.unwrap();
    const CONNS: usize = 200;
    // (cid, subs, in_msgs, in_bytes) as the server must report them.
    let mut expect: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CONNS {
        let mut c = Raw::connect(srv.addr);
        let subs = (i % 4) as u64;
        let (msgs, size) = ((i % 6) as u64, (i % 3 + 1) as u64);
        let mut b =
            format!("CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"c{i}\"}}\r\n")
                .into_bytes();
        for k in 0..subs {
            b.extend_from_slice(format!("SUB s.{i}.{k} {k}\r\n").as_bytes());
        }
        for _ in 0..msgs {
            b.extend_from_slice(
                format!("PUB nowhere {size}\r\n{}\r\n", "x".repeat(size as usize)).as_bytes(),
            );
        }
        b.extend_from_slice(b"PING\r\n");
        c.send(&b);
        c.expect(b"PONG\r\n");
        expect.push((cid_of(&c), subs, msgs, msgs * size));
        clients.push(c);
    }
    // Both reactors hold some of them.
    let metrics = get(http, "/metrics").body;
    for r in ["0", "1"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("ringnats_reactor_connections{{reactor=\"{r}\"}}")))
            .unwrap();
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 0, "reactor {r} has connections: {line}");
    }
    let connz = |q: &str| -> Value {
        // A reactor busy elsewhere on this shared machine may miss the 50 ms gather window:
        // retry until every connection is counted.
        wait_for("all connections in /connz", || {
            let v = json(http, &format!("/connz?{q}"));
            (v["total"] == CONNS).then_some(v)
        })
    };
    let cids = |v: &Value| -> Vec<u64> {
        v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["cid"].as_u64().unwrap())
            .collect()
    };
    let mut by_cid: Vec<u64> = expect.iter().map(|e| e.0).collect();
    by_cid.sort_unstable();

    let all = connz("");
    assert_eq!(all["num_connections"], CONNS);
    assert_eq!(cids(&all), by_cid, "default: every connection, by cid");
    for e in all["connections"].as_array().unwrap() {
        let want = expect
            .iter()
            .find(|x| x.0 == e["cid"].as_u64().unwrap())
            .unwrap();
        assert_eq!(
            (
                e["subscriptions"].as_u64().unwrap(),
                e["in_msgs"].as_u64().unwrap(),
                e["in_bytes"].as_u64().unwrap()
            ),
            (want.1, want.2, want.3)
        );
    }

    let mut paged = Vec::new();
    for offset in (0..CONNS).step_by(50) {
        let page = connz(&format!("limit=50&offset={offset}"));
        assert_eq!(
            (
                page["offset"].as_u64(),
                page["limit"].as_u64(),
                page["num_connections"].as_u64()
            ),
            (Some(offset as u64), Some(50), Some(50))
        );
        paged.extend(cids(&page));
    }
    assert_eq!(paged, by_cid, "pages join up to the whole list");
    let tail = connz("limit=50&offset=190");
    assert_eq!(cids(&tail), by_cid[190..]);
    let past = connz("offset=500");
    assert_eq!(past["num_connections"], 0);
    assert_eq!(past["connections"], serde_json::json!([]));

    type Key = fn(&(u64, u64, u64, u64)) -> u64;
    let sorts: [(&str, Key); 3] = [
        ("subs", |e| e.1),
        ("msgs_from", |e| e.2),
        ("bytes_from", |e| e.3),
    ];
    for (name, key) in sorts {
        let mut want = expect.clone();
        want.sort_by(|a, b| key(b).cmp(&key(a)).then(a.0.cmp(&b.0)));
        let want: Vec<u64> = want.iter().map(|e| e.0).collect();
        assert_eq!(cids(&connz(&format!("sort={name}"))), want, "sort={name}");
        let page = connz(&format!("sort={name}&limit=30&offset=20"));
        assert_eq!(cids(&page), want[20..50], "sort={name} page");
    }
    // The rest of gnatsd's keys are accepted; zeros everywhere fall back to cid order.
    for name in [
        "cid", "uptime", "pending", "msgs_to", "bytes_to", "last", "idle",
    ] {
        let v = connz(&format!("sort={name}&limit=5"));
        assert_eq!(v["num_connections"], 5, "sort={name}");
    }
    let one = json(http, &format!("/connz?cid={}&subs=1", expect[7].0));
    assert_eq!(cids(&one), [expect[7].0]);
    assert_eq!(
        one["connections"][0]["subscriptions_list"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(one["connections"][0]["name"], "c7");

    let bad = get(http, "/connz?sort=nope");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body, "Invalid sorting option: nope");
    drop(clients);
    srv.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Other endpoints, JSONP, errors

#[test]
fn index_live_healthz_jsonp_and_errors() {
    let srv = monitored();
    let http = srv.http_addr.unwrap();
    let index = get(http, "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    for link in [
        "/varz", "/connz", "/routez", "/subsz", "/healthz", "/metrics", "/live",
    ] {
        assert!(
            index.body.contains(&format!("href={link}>")),
            "{link} linked"
        );
    }
    let live = get(http, "/live");
    assert_eq!(live.status, 200);
    assert!(live.body.contains("fetch(\"/varz\""));
    assert!(
        !live.body.contains("http://") && !live.body.contains("https://"),
        "nothing fetched from elsewhere"
    );
    for id in [
        "in_rate",
        "out_rate",
        "connections",
        "routes",
        "slow_consumers",
    ] {
        assert!(live.body.contains(&format!("id=\"{id}\"")), "{id}");
    }

    let h = get(http, "/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "{\"status\":\"ok\"}"));

    let plain = get(http, "/subsz").body;
    let p = get(http, "/subsz?callback=cb");
    assert_eq!(p.header("content-type"), Some("application/javascript"));
    assert_eq!(p.body, format!("cb({plain})"));
    let v = get(http, "/varz?callback=jQuery_1.x");
    assert!(v.body.starts_with("jQuery_1.x({\n  \"server_id\"") && v.body.ends_with("})"));
    assert_eq!(get(http, "/varz?callback=alert(1)").status, 400);

    for missing in ["/nope", "/varz/", "/connz/x", "/stacksz"] {
        let r = get(http, missing);
        assert_eq!(r.status, 404, "{missing}");
        assert_eq!(r.body, "404 page not found\n");
    }
    let r = request(http, "POST", "/varz");
    assert_eq!(r.status, 405);
    let head = request(http, "HEAD", "/varz");
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let routez = get(http, "/routez");
    assert_eq!(
        routez.body.lines().skip(2).collect::<Vec<_>>(),
        ["  \"num_routes\": 0,", "  \"routes\": []", "}"]
    );
    srv.shutdown().unwrap();
}

/// `/healthz` stops answering OK once shutdown begins (so a load balancer drains it).
#[test]
fn healthz_fails_during_shutdown() {
    let srv = monitored();
    let http = srv.http_addr.unwrap();
    srv.server
        .shutdown
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let h = get(http, "/healthz");
    assert_eq!(h.status, 503);
    assert_eq!(h.json()["status"], "error");
    srv.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Prometheus

#[test]
fn metrics_parse_as_prometheus_text() {
    let srv = monitored();
    let http = srv.http_addr.unwrap();
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB m 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let mut publ = Raw::quiet(srv.addr);
    publ.send(&b"PUB m 4\r\nabcd\r\n".repeat(10));
    sub.expect(&b"MSG m 1 4\r\nabcd\r\n".repeat(10));
    // Each reactor publishes its counters once per loop iteration: wait for both sides.
    let resp = wait_for("metrics counters", || {
        let r = get(http, "/metrics");
        (r.body.contains("\nringnats_out_msgs_total 10\n")
            && r.body.contains("\nringnats_in_msgs_total 10\n"))
        .then_some(r)
    });
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.body;

    // Every sample belongs to a family announced just before by HELP then TYPE.
    let mut families = HashSet::new();
    let mut current: Option<String> = None;
    let mut sample_lines = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(name.starts_with("ringnats_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
            let ty = lines.next().expect("TYPE after HELP");
            assert!(
                ty == format!("# TYPE {name} counter") || ty == format!("# TYPE {name} gauge"),
                "{ty}"
            );
            assert_eq!(
                name.ends_with("_total"),
                ty.ends_with("counter"),
                "{name}: counters end in _total"
            );
            assert!(families.insert(name.clone()), "{name} declared once");
            current = Some(name);
        } else {
            let fam = current.as_deref().expect("a sample after a family");
            let name = line.split(['{', ' ']).next().unwrap();
            assert_eq!(name, fam, "{line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            sample_lines += 1;
        }
    }

    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "the parser read every sample"
    );
    for f in &families {
        assert!(scrape.docs.contains_key(f), "{f} documented");
    }
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("{name} {labels:?}"));
        match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert!(matches!(
        scrape
            .samples
            .iter()
            .find(|s| s.metric == "ringnats_in_msgs_total")
            .unwrap()
            .value,
        prometheus_parse::Value::Counter(_)
    ));
    assert_eq!(value("ringnats_in_msgs_total", &[]), 10.0);
    assert_eq!(value("ringnats_out_msgs_total", &[]), 10.0);
    assert_eq!(value("ringnats_in_bytes_total", &[]), 40.0);
    assert_eq!(value("ringnats_out_bytes_total", &[]), 40.0);
    assert_eq!(value("ringnats_connections", &[]), 2.0);
    assert_eq!(value("ringnats_subscriptions", &[]), 1.0);
    assert_eq!(value("ringnats_slow_consumers_total", &[]), 0.0);
    assert_eq!(value("ringnats_routes", &[]), 0.0);
    assert!(value("ringnats_http_requests_total", &[("path", "/metrics")]) >= 1.0);
    let mut reactor_sum = HashMap::new();
    for r in ["0", "1"] {
        for f in [
            "ringnats_reactor_loop_iterations_total",
            "ringnats_reactor_completions_total",
            "ringnats_reactor_submits_total",
            "ringnats_reactor_sends_total",
            "ringnats_reactor_out_msgs_total",
            "ringnats_reactor_wakeups_total",
            "ringnats_reactor_recv_enobufs_total",
            "ringnats_reactor_publisher_pauses_total",
            "ringnats_reactor_paused_publishers",
            "ringnats_reactor_connections",
        ] {
            *reactor_sum.entry(f).or_insert(0.0) += value(f, &[("reactor", r)]);
        }
    }
    assert!(reactor_sum["ringnats_reactor_loop_iterations_total"] > 0.0);
    assert_eq!(reactor_sum["ringnats_reactor_out_msgs_total"], 10.0);
    assert_eq!(reactor_sum["ringnats_reactor_connections"], 2.0);
    assert!(reactor_sum["ringnats_reactor_completions_total"] > 0.0);
    srv.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Requests under traffic

#[test]
fn request_storm_during_traffic_loses_nothing() {
    let srv = monitored();
    let http = srv.http_addr.unwrap();
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB t 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let mut publ = Raw::quiet(srv.addr);
    const N: usize = 20_000;
    const REQUESTS: usize = 1000;
    let storm = std::thread::spawn(move || {
        for i in 0..REQUESTS {
            let path = ["/varz", "/connz?subs=1", "/routez", "/subsz", "/metrics"][i % 5];
            assert_eq!(get(http, path).status, 200, "{path}");
        }
    });
    let msg = b"PUB t 8\r\n01234567\r\n";
    for _ in 0..N / 1000 {
        publ.send(&msg.repeat(1000));
    }
    let want = b"MSG t 1 8\r\n01234567\r\n".repeat(N);
    sub.expect(&want);
    storm.join().expect("every request answered");
    sub.expect_nothing_then_pong();
    wait_for("counters after the storm", || {
        let v = json(http, "/varz");
        (v["in_msgs"] == N && v["out_msgs"] == N).then_some(())
    });
    srv.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The binary

/// A spawned server, killed and reaped if a test fails half-way.
struct Reap(Option<std::process::Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the binary with `args` until "Server is ready"; returns it and its log lines.
fn spawn_logged(args: &[&str]) -> (Reap, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringnats"))
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringnats");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let reap = Reap(Some(child));
    let mut lines = Vec::new();
    let mut line = String::new();
    while !lines.iter().any(|l: &String| l.contains("Server is ready")) {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "log ended early: {lines:?}"
        );
        lines.push(line.trim().to_string());
        assert!(lines.len() < 20, "{lines:?}");
    }
    (reap, lines)
}

/// SIGTERM, and the server exits cleanly.
fn stop(mut reap: Reap) {
    let mut child = reap.0.take().unwrap();
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn flag_m_logs_before_listening_and_serves() {
    let (child, lines) = spawn_logged(&["-m", "-1"]);
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {lines:?}"))
    };
    assert!(at("Starting http monitor on 127.0.0.1:") < at("Listening for client connections on"));
    let hp: SocketAddr = lines[at("Starting http monitor on")]
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(get(hp, "/healthz").body, "{\"status\":\"ok\"}");
    stop(child);

    // -ms without client TLS: gnatsd 1.0's fatal error (HTTPS itself: tests/tls.rs).
    let out = Command::new(env!("CARGO_BIN_EXE_ringnats"))
        .args(["-a", "127.0.0.1", "-p", "-1", "-ms", "8443"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[FTL] Can't start monitoring: TLS cert and key required for HTTPS"),
        "{err}"
    );
    assert!(!err.contains("monitor on"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_ringnats"))
        .args(["-m", "8222", "-ms", "8443"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("can't specify both HTTP (8222) and HTTPs (8443) ports"));
}

// ---------------------------------------------------------------------------------------------
// Against gnatsd 1.0

/// Runs gnatsd 1.0 and ringnats side by side with the same client on each, and compares
/// every endpoint's keys (in order) and JSON types.
#[test]
fn same_shape_as_gnatsd_1_0() {
    let Some(gnatsd) = harness::gnatsd_or_skip("same_shape_as_gnatsd_1_0") else {
        return;
    };
    let (port, mport) = (harness::free_port(), harness::free_port());
    let child = Command::new(gnatsd)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &mport.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn gnatsd");
    let _reap = Reap(Some(child));
    let theirs = SocketAddr::from(([127, 0, 0, 1], mport));
    let their_client = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("gnatsd's monitor", || TcpStream::connect(theirs).ok());
    let srv = monitored();
    let ours = srv.http_addr.unwrap();
    let mut keep = Vec::new();
    for addr in [their_client, srv.addr] {
        let mut c = Raw::connect(addr);
        c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"n\",\"lang\":\"l\",\"version\":\"v\"}\r\nSUB a 1\r\nPUB a 2\r\nhi\r\nPING\r\n");
        c.expect(b"MSG a 1 2\r\nhi\r\nPONG\r\n");
        keep.push(c);
    }
    for path in ["/varz", "/connz", "/connz?subs=1", "/routez", "/subsz"] {
        let (a, b) = (get(theirs, path), get(ours, path));
        assert_eq!(
            (a.status, a.header("content-type")),
            (b.status, b.header("content-type")),
            "{path}"
        );
        for indent in [2, 4, 6] {
            assert_eq!(
                top_keys(&a.body, indent),
                top_keys(&b.body, indent),
                "{path}: keys at indent {indent}"
            );
        }
        assert_eq!(shape(&a.json()), shape(&b.json()), "{path}: types");
    }
    for path in ["/nope", "/connz?sort=bad"] {
        let (a, b) = (get(theirs, path), get(ours, path));
        assert_eq!((a.status, a.body), (b.status, b.body), "{path}");
    }
    let (a, b) = (
        get(theirs, "/varz?callback=f"),
        get(ours, "/varz?callback=f"),
    );
    assert_eq!(a.header("content-type"), b.header("content-type"));
    assert!(a.body.starts_with("f({") && b.body.starts_with("f({"));
    srv.shutdown().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Routes

#[test]
fn routez_on_a_three_node_cluster() {
    use harness::{Node, NodeConfig, NAMES};
    let mut cfgs: Vec<NodeConfig> = (0..3).map(|i| NodeConfig::ringnats(NAMES[i])).collect();
    let seed = cfgs[0].route_url();
    let http: Vec<SocketAddr> = cfgs
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let port = harness::free_port();
            c.extra_args = vec![
                "-m".into(),
                port.to_string(),
                "--workers".into(),
                "2".into(),
            ];
            if i > 0 {
                c.routes = vec![seed.clone()];
            }
            SocketAddr::from(([127, 0, 0, 1], port))
        })
        .collect();
    let nodes: Vec<Node> = cfgs.into_iter().map(Node::start).collect();
    let ids: Vec<String> = http
        .iter()
        .map(|&h| {
            wait_for("monitor up", || TcpStream::connect(h).ok());
            json(h, "/varz")["server_id"].as_str().unwrap().to_string()
        })
        .collect();
    let routez: Vec<Value> = http
        .iter()
        .map(|&h| {
            wait_for("a full mesh", || {
                let v = json(h, "/routez");
                (v["num_routes"] == 2).then_some(v)
            })
        })
        .collect();
    let route = |n: usize, to: usize| -> Value {
        routez[n]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["remote_id"] == ids[to])
            .unwrap_or_else(|| panic!("{} has a route to {}: {}", NAMES[n], NAMES[to], routez[n]))
            .clone()
    };
    let keys = [
        "rid",
        "remote_id",
        "did_solicit",
        "is_configured",
        "ip",
        "port",
        "pending_size",
        "in_msgs",
        "out_msgs",
        "in_bytes",
        "out_bytes",
        "subscriptions",
    ];
    let text = get(http[1], "/routez").body;
    assert_eq!(top_keys(&text, 6)[..keys.len()], keys);
    for (n, to) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)] {
        let r = route(n, to);
        assert_eq!(r["ip"], "127.0.0.1");
        assert!(r["rid"].is_u64() && r["port"].is_u64() && r["pending_size"].is_u64());
    }
    // The seed solicited nothing; the others dialled it as configured; B and C found each
    // other by gossip (implicit, so not configured).
    for to in [1, 2] {
        assert_eq!(
            (
                route(0, to)["did_solicit"].as_bool(),
                route(0, to)["is_configured"].as_bool()
            ),
            (Some(false), Some(false))
        );
        let r = route(to, 0);
        assert_eq!(
            (r["did_solicit"].as_bool(), r["is_configured"].as_bool()),
            (Some(true), Some(true))
        );
        assert_eq!(r["port"], nodes[0].cfg.route_port);
    }
    assert_eq!(route(1, 2)["is_configured"], false);
    assert_eq!(route(2, 1)["is_configured"], false);
    assert_eq!(json(http[0], "/varz")["routes"], 2);
    assert_eq!(json(http[0], "/varz")["remotes"], 2);

    // B's interest shows on A's route from B (subs=1), then A's messages are counted on
    // both ends of the A-B route, and not on A-C.
    let mut sub = nodes[1].client();
    sub.sub("rz.x", "1");
    sub.flush();
    wait_for("B's interest on A", || {
        let v = json(http[0], "/routez?subs=1");
        let r = v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["remote_id"] == ids[1])
            .cloned()?;
        (r["subscriptions_list"] == serde_json::json!(["rz.x"])).then_some(())
    });
    let mut publ = nodes[0].client();
    const N: u64 = 50;
    for _ in 0..N {
        publ.publish("rz.x", b"12345");
    }
    assert_eq!(sub.expect_msgs(N as usize).len(), N as usize);
    let figures = |h: SocketAddr, to: usize| {
        let v = json(h, "/routez");
        let r = v["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["remote_id"] == ids[to])
            .cloned()
            .unwrap();
        ["in_msgs", "out_msgs", "in_bytes", "out_bytes"].map(|k| r[k].as_u64().unwrap())
    };
    wait_for("route counters", || {
        (figures(http[0], 1) == [0, N, 0, 5 * N] && figures(http[1], 0) == [N, 0, 5 * N, 0])
            .then_some(())
    });
    assert_eq!(figures(http[0], 2), [0, 0, 0, 0]);
    assert_eq!(figures(http[2], 0), [0, 0, 0, 0]);
    let metrics = get(http[0], "/metrics").body;
    let line = format!(
        "ringnats_route_out_msgs_total{{rid=\"{}\",remote_id=\"{}\"}} {N}",
        route(0, 1)["rid"],
        ids[1]
    );
    assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    sub.expect_no_more();
}

// ---------------------------------------------------------------------------------------------
// The live page in a browser

/// Debian's headless Chromium, if installed (`scripts/test` installs it when it can).
fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

/// The text of the element `id="<id>"` in a dumped DOM.
fn element_text(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')? + open;
    Some(rest[open..close].to_string())
}

#[test]
fn live_page_shows_traffic_in_headless_chromium() {
    let Some(browser) = chromium() else {
        println!("SKIP live_page_shows_traffic_in_headless_chromium: no chromium (apt-get install chromium)");
        return;
    };
    let srv = monitored();
    let http = srv.http_addr.unwrap();
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB live 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    // 1:1 traffic, without pause, for as long as the browser looks (under a virtual time
    // budget its one-second polls come a few milliseconds apart in real time); the
    // subscriber drains on its own thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drain = {
        let mut stream = sub.stream.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = stream.read(&mut buf);
            }
        })
    };
    let publisher = {
        let addr = srv.addr;
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut publ = Raw::quiet(addr);
            let batch = b"PUB live 2\r\nhi\r\n".repeat(100);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                publ.send(&batch);
                publ.send(b"PING\r\n");
                publ.expect(b"PONG\r\n");
            }
        })
    };
    let profile = std::env::temp_dir().join(harness::unique("ringnats-chromium"));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=5000",
            "--dump-dom",
            &format!("http://{http}/live"),
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    drain.join().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout);
    let text = |id: &str| element_text(&dom, id).unwrap_or_else(|| panic!("#{id} in {dom}"));
    assert_eq!(text("connections"), "2", "{dom}");
    assert_eq!(text("routes"), "0");
    assert_eq!(text("slow_consumers"), "0");
    for id in ["in_rate", "out_rate"] {
        let rate = text(id);
        assert!(
            rate != "-" && rate != "0",
            "#{id} shows the traffic: {rate:?}"
        );
    }
    assert!(text("status").starts_with("updated"), "{}", text("status"));
    srv.shutdown().unwrap();
}
