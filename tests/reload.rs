//! Config reload on SIGHUP through the real binary: raw sockets (exact bytes) and async-nats.
//! Every test edits the config file, sends SIGHUP, and waits (bounded) for the log line that
//! ends the reload before looking at its effect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringnats");
const WAIT: Duration = Duration::from_secs(10);
const RELOADED: &str = "[INF] Reloaded server configuration";
const FAILED: &str = "[ERR] Failed to reload server configuration: ";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server started with `-c <dir>/gnatsd.conf -l <dir>/log`; killed on drop.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// `conf` is the file's text; `host` and `port` lines (a free port) are put before it.
    fn start(name: &str, conf: &str, extra: &[&str]) -> Server {
        Server::start_with(name, Some(conf), extra)
    }

    /// `conf: None` starts without a config file (`-a`/`-p` flags instead).
    fn start_with(name: &str, conf: Option<&str>, extra: &[&str]) -> Server {
        let dir =
            std::env::temp_dir().join(format!("ringnats-reload-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let mut cmd = Command::new(BIN);
        match conf {
            Some(conf) => {
                std::fs::write(dir.join("gnatsd.conf"), with_port(port, conf)).unwrap();
                cmd.arg("-c").arg(dir.join("gnatsd.conf"));
            }
            None => {
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
            }
        }
        let child = cmd
            .arg("-l")
            .arg(dir.join("log"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ringnats");
        let server = Server { child, port, dir };
        server.wait_log("Server is ready", 1);
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Waits until `needle` occurs `times` times in the log; returns the log.
    fn wait_log(&self, needle: &str, times: usize) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= times {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} (x{times}) in the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Rewrites the config file (with the same `host` and `port` lines first).
    fn rewrite(&self, conf: &str) {
        self.rewrite_raw(&with_port(self.port, conf));
    }

    fn rewrite_raw(&self, text: &str) {
        std::fs::write(self.dir.join("gnatsd.conf"), text).unwrap();
    }

    /// Sends SIGHUP and waits for the next log line that ends a reload with `outcome`;
    /// returns the log.
    fn hup(&self, outcome: &str) -> String {
        let before = self.log().matches(outcome).count();
        // SAFETY: signalling the child this test spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        self.wait_log(outcome, before + 1)
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn with_port(port: u16, conf: &str) -> String {
    format!("host: 127.0.0.1\nport: {port}\n{conf}")
}

/// A raw client: reads and writes lines with a bounded read timeout.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
    info: String,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut r = Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            info: String::new(),
        };
        r.info = r.line();
        assert!(r.info.starts_with("INFO {"), "{}", r.info);
        r
    }

    /// Sends CONNECT (verbose off) and syncs with PING/PONG.
    fn login(port: u16, user: Option<(&str, &str)>) -> Raw {
        let mut r = Raw::connect(port);
        let creds = user
            .map(|(u, p)| format!(",\"user\":\"{u}\",\"pass\":\"{p}\""))
            .unwrap_or_default();
        r.send(&format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false{creds}}}\r\nPING\r\n"
        ));
        assert_eq!(r.line(), "PONG\r\n");
        r
    }

    fn send(&mut self, bytes: &str) {
        self.w.write_all(bytes.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        let _ = self.r.read_line(&mut l);
        l
    }

    /// PING, then everything up to the PONG.
    fn ping(&mut self) -> Vec<String> {
        self.send("PING\r\n");
        let mut got = Vec::new();
        for _ in 0..100 {
            let l = self.line();
            if l == "PONG\r\n" {
                return got;
            }
            assert!(!l.is_empty(), "connection closed; got {got:?}");
            got.push(l);
        }
        panic!("no PONG; got {got:?}");
    }

    /// Asserts the server closes the connection; returns what it sent before that.
    fn read_to_eof(&mut self) -> String {
        let mut rest = String::new();
        self.r
            .read_to_string(&mut rest)
            .expect("EOF within the read timeout");
        rest
    }

    fn info_json(&self) -> serde_json::Value {
        serde_json::from_str(self.info.trim_start_matches("INFO ").trim()).unwrap()
    }
}

fn pub_line(subject: &str, size: usize) -> String {
    format!("PUB {subject} {size}\r\n{}\r\n", "x".repeat(size))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_change_drops_a_client_that_no_longer_passes_and_keeps_one_that_does() {
    let alice_hash = bcrypt::hash("alicepw", 4).unwrap();
    let users = |bob_pass: &str| {
        format!(
            "authorization {{\n  users = [\n    {{user: alice, password: \"{alice_hash}\"}}\n    \
             {{user: bob, password: {bob_pass}}}\n  ]\n}}\n"
        )
    };
    let srv = Server::start("auth", &users("bobpw"), &[]);
    let mut bob = Raw::login(srv.port, Some(("bob", "bobpw")));
    let alice = tokio::time::timeout(
        WAIT,
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "alicepw".into())
            .connect(srv.addr()),
    )
    .await
    .unwrap()
    .unwrap();
    let mut sub = alice.subscribe("greet").await.unwrap();
    alice.flush().await.unwrap();

    srv.rewrite(&users("newbobpw"));
    let log = srv.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: authorization users"), "{log}");
    assert_eq!(
        bob.read_to_eof(),
        "-ERR 'Authorization Violation'\r\n",
        "bob's stored password no longer passes"
    );
    // Alice (bcrypt, unchanged) keeps her connection and her subscription.
    use futures::StreamExt;
    alice.publish("greet", "hi".into()).await.unwrap();
    alice.flush().await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"hi");
    assert_eq!(
        alice.connection_state(),
        async_nats::connection::State::Connected
    );
    // The new password works for a new connection.
    let mut bob2 = Raw::login(srv.port, Some(("bob", "newbobpw")));
    assert!(bob2.ping().is_empty());
}

#[test]
fn permission_change_removes_a_subscription_with_its_sid() {
    let conf = |alice_subs: &str| {
        format!(
            "authorization {{\n  users = [\n    \
             {{user: alice, password: apw, permissions: {{subscribe: {alice_subs}}}}}\n    \
             {{user: bob, password: bpw}}\n  ]\n}}\n"
        )
    };
    let srv = Server::start("perms", &conf("[\"foo.>\", \"bar.>\"]"), &[]);
    let mut alice = Raw::login(srv.port, Some(("alice", "apw")));
    alice.send("SUB foo.a 1\r\nSUB bar.b 2\r\n");
    assert!(alice.ping().is_empty());
    let mut bob = Raw::login(srv.port, Some(("bob", "bpw")));

    srv.rewrite(&conf("\"foo.>\""));
    srv.hup(RELOADED);
    assert_eq!(
        alice.line(),
        "-ERR 'Permissions Violation for Subscription to \"bar.b\" (sid 2)'\r\n"
    );
    // The removed subscription no longer receives; the allowed one still does.
    bob.send(&pub_line("bar.b", 1));
    bob.send(&pub_line("foo.a", 2));
    assert!(bob.ping().is_empty());
    assert_eq!(alice.ping(), ["MSG foo.a 1 2\r\n", "xx\r\n"]);
    // A new SUB is checked against the new permissions.
    alice.send("SUB bar.c 3\r\n");
    assert_eq!(
        alice.ping(),
        ["-ERR 'Permissions Violation for Subscription to \"bar.c\"'\r\n"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_payload_change_reaches_live_clients_and_new_infos() {
    let srv = Server::start("payload", "max_payload: 1000\n", &[]);
    let mut live = Raw::login(srv.port, None);
    assert_eq!(live.info_json()["max_payload"], 1000);
    live.send(&pub_line("foo", 500));
    assert!(live.ping().is_empty());

    srv.rewrite("max_payload: 100\n");
    let log = srv.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: max_payload = 100"), "{log}");
    // A live client's next PUB over the new limit is refused and the client closed.
    live.send(&pub_line("foo", 200));
    assert_eq!(live.read_to_eof(), "-ERR 'Maximum Payload Violation'\r\n");
    // New clients are told the new limit.
    assert_eq!(Raw::connect(srv.port).info_json()["max_payload"], 100);
    let nc = tokio::time::timeout(WAIT, async_nats::connect(srv.addr()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(nc.server_info().max_payload, 100);
}

#[test]
fn lowering_max_connections_closes_the_excess() {
    let srv = Server::start("maxconn", "max_connections: 10\n", &[]);
    let mut clients: Vec<Raw> = (0..4).map(|_| Raw::login(srv.port, None)).collect();
    srv.rewrite("max_connections: 2\n");
    let log = srv.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: max_connections = 2"), "{log}");
    let mut kept = 0;
    let mut closed = 0;
    for c in &mut clients {
        c.send("PING\r\n");
        match c.line().as_str() {
            "PONG\r\n" => kept += 1,
            "-ERR 'Maximum Connections Exceeded'\r\n" => {
                assert_eq!(c.read_to_eof(), "");
                closed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((kept, closed), (2, 2));
    // A newcomer is over the limit too.
    let mut extra = Raw::connect(srv.port);
    assert_eq!(
        extra.read_to_eof(),
        "-ERR 'Maximum Connections Exceeded'\r\n"
    );
}

#[test]
fn a_port_change_rejects_the_whole_reload() {
    let srv = Server::start("port", "max_payload: 1000\n", &[]);
    let mut live = Raw::login(srv.port, None);
    let other = free_port();
    srv.rewrite_raw(&format!(
        "host: 127.0.0.1\nport: {other}\nmax_payload: 100\n"
    ));
    let log = srv.hup(FAILED);
    assert!(
        log.contains(&format!(
            "{FAILED}Config reload not supported for Port: old={}, new={other}",
            srv.port
        )),
        "{log}"
    );
    assert!(!log.contains("Reloaded: max_payload"), "{log}");
    // Nothing was applied: the old limit holds for live and new clients.
    live.send(&pub_line("foo", 500));
    assert!(live.ping().is_empty());
    assert_eq!(Raw::connect(srv.port).info_json()["max_payload"], 1000);
}

#[test]
fn a_parse_error_keeps_the_old_config() {
    let srv = Server::start("parse", "max_payload: 1000\n", &[]);
    srv.rewrite("max_payload: \"abc\"\n");
    let log = srv.hup(FAILED);
    let conf = srv.dir.join("gnatsd.conf");
    assert!(
        log.contains(&format!(
            "{FAILED}{}:3:14: key \"max_payload\": expected a size such as 1048576, 64KB or \"1MB\", got \"abc\"",
            conf.display()
        )),
        "{log}"
    );
    assert_eq!(Raw::connect(srv.port).info_json()["max_payload"], 1000);
    // Fixed, the next reload applies.
    srv.rewrite("max_payload: 100\n");
    srv.hup(RELOADED);
    assert_eq!(Raw::connect(srv.port).info_json()["max_payload"], 100);
}

#[test]
fn reload_without_a_config_file_is_refused() {
    let srv = Server::start_with("noconf", None, &[]);
    let log = srv.hup(FAILED);
    assert!(
        log.contains(&format!(
            "{FAILED}Can only reload config when a file is provided using -c or --config"
        )),
        "{log}"
    );
    // The server is still serving.
    assert!(Raw::login(srv.port, None).ping().is_empty());
}

#[test]
fn debug_toggled_on_shows_debug_lines() {
    let srv = Server::start("debug", "debug: false\n", &[]);
    let _ = Raw::login(srv.port, None);
    assert!(!srv.log().contains("[DBG]"), "{}", srv.log());
    srv.rewrite("debug: true\n");
    let log = srv.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: debug = true"), "{log}");
    // A new client's creation is a debug line now.
    let _c = Raw::login(srv.port, None);
    srv.wait_log("- Client connection created", 1);
    assert!(srv.log().contains("[DBG] "), "{}", srv.log());
}

/// `num_routes` from a node's `/routez`.
fn num_routes(http_port: u16) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /routez HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}"));
    v["num_routes"].as_u64().unwrap()
}

fn wait_routes(http_port: u16, want: u64) {
    let deadline = Instant::now() + WAIT;
    while num_routes(http_port) != want {
        assert!(Instant::now() < deadline, "routes never became {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn routes_added_are_solicited_and_removed_ones_closed_for_good() {
    let (b_route, a_route, a_http) = (free_port(), free_port(), free_port());
    let b = Server::start(
        "route-b",
        &format!("cluster {{\n  listen: 127.0.0.1:{b_route}\n}}\n"),
        &[],
    );
    let a_conf = |routes: &str| {
        format!("http_port: {a_http}\ncluster {{\n  listen: 127.0.0.1:{a_route}\n  routes: [{routes}]\n}}\n")
    };
    let a = Server::start("route-a", &a_conf(""), &[]);
    assert_eq!(num_routes(a_http), 0);
    let loaded_at_start = varz(a_http, "config_load_time");
    assert_eq!(loaded_at_start, varz(a_http, "start"));

    a.rewrite(&a_conf(&format!("nats-route://127.0.0.1:{b_route}")));
    let log = a.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: cluster routes"), "{log}");
    assert_ne!(varz(a_http, "config_load_time"), loaded_at_start);
    wait_routes(a_http, 1);
    // Messages cross the new route.
    let mut sub = Raw::login(b.port, None);
    sub.send("SUB over.route 1\r\n");
    assert!(sub.ping().is_empty());
    let mut publ = Raw::login(a.port, None);
    let deadline = Instant::now() + WAIT;
    loop {
        // Interest reaches A a moment after the SUB: publish until a message arrives.
        publ.send(&pub_line("over.route", 1));
        assert!(publ.ping().is_empty());
        if sub.ping().iter().any(|l| l == "MSG over.route 1 1\r\n") {
            break;
        }
        assert!(Instant::now() < deadline, "no message over the route");
        std::thread::sleep(Duration::from_millis(10));
    }

    a.rewrite(&a_conf(""));
    a.hup(RELOADED);
    wait_routes(a_http, 0);
    // Not redialled: the route stays gone for several reconnect intervals.
    let until = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < until {
        assert_eq!(num_routes(a_http), 0, "the removed route came back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of a node's `/varz`.
fn varz(http_port: u16, field: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /varz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}"));
    v[field].clone()
}

#[test]
fn a_route_failing_new_cluster_auth_is_closed_and_stays_out() {
    let (a_route, a_http, b_route) = (free_port(), free_port(), free_port());
    let a_conf = |pass: &str| {
        format!(
            "http_port: {a_http}\ncluster {{\n  listen: 127.0.0.1:{a_route}\n  \
             authorization {{ user: ruser, password: {pass} }}\n}}\n"
        )
    };
    let a = Server::start("cauth-a", &a_conf("rpass"), &[]);
    let _b = Server::start(
        "cauth-b",
        &format!(
            "cluster {{\n  listen: 127.0.0.1:{b_route}\n  \
             routes: [nats-route://ruser:rpass@127.0.0.1:{a_route}]\n}}\n"
        ),
        &[],
    );
    wait_routes(a_http, 1);
    a.rewrite(&a_conf("newpass"));
    let log = a.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: cluster"), "{log}");
    wait_routes(a_http, 0);
    // B keeps dialling with the old password and is refused each time.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(
            num_routes(a_http),
            0,
            "a route with old credentials is back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.log().contains("Authorization Error"), "{}", a.log());
}

#[test]
fn a_subscription_removed_by_new_permissions_is_withdrawn_from_routes() {
    let (a_route, b_route, b_http) = (free_port(), free_port(), free_port());
    let a_conf = |subs: &str| {
        format!(
            "authorization {{\n  users = [\n    \
             {{user: alice, password: apw, permissions: {{subscribe: {subs}}}}}\n  ]\n}}\n\
             cluster {{\n  listen: 127.0.0.1:{a_route}\n  \
             routes: [nats-route://127.0.0.1:{b_route}]\n}}\n"
        )
    };
    let b = Server::start(
        "withdraw-b",
        &format!("http_port: {b_http}\ncluster {{\n  listen: 127.0.0.1:{b_route}\n}}\n"),
        &[],
    );
    let a = Server::start("withdraw-a", &a_conf("[\"foo.>\", \"bar.>\"]"), &[]);
    wait_routes(b_http, 1);
    let mut alice = Raw::login(a.port, Some(("alice", "apw")));
    alice.send("SUB foo.a 1\r\nSUB bar.b 2\r\n");
    assert!(alice.ping().is_empty());
    let wait_subs = |want: u64| {
        let deadline = Instant::now() + WAIT;
        while varz(b_http, "subscriptions") != want {
            assert!(
                Instant::now() < deadline,
                "B never had {want} subscriptions"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_subs(2);
    a.rewrite(&a_conf("\"foo.>\""));
    a.hup(RELOADED);
    assert_eq!(
        alice.line(),
        "-ERR 'Permissions Violation for Subscription to \"bar.b\" (sid 2)'\r\n"
    );
    // B heard the UNSUB: only foo.a is left there.
    wait_subs(1);
    drop(b);
}

#[test]
fn client_tls_turned_on_applies_to_new_connections_only() {
    let srv = Server::start("tls", "", &[]);
    let mut plain = Raw::login(srv.port, None);
    assert_eq!(plain.info_json()["tls_required"], false);
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key_file) = (srv.dir.join("cert.pem"), srv.dir.join("key.pem"));
    std::fs::write(&cert, key.cert.pem()).unwrap();
    std::fs::write(&key_file, key.signing_key.serialize_pem()).unwrap();
    // A certificate that cannot be loaded refuses the reload.
    srv.rewrite(
        "tls {\n  cert_file: \"/nonexistent/cert.pem\"\n  key_file: \"/nonexistent/key.pem\"\n}\n",
    );
    srv.hup(FAILED);
    assert_eq!(Raw::connect(srv.port).info_json()["tls_required"], false);
    srv.rewrite(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        cert.display(),
        key_file.display()
    ));
    let log = srv.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: tls = enabled"), "{log}");
    let mut fresh = Raw::connect(srv.port);
    assert_eq!(fresh.info_json()["tls_required"], true);
    fresh.send("CONNECT {}\r\n");
    assert_eq!(
        fresh.read_to_eof(),
        "-ERR 'Secure Connection - TLS Required'\r\n"
    );
    // The client connected in clear before the reload keeps its connection.
    assert!(plain.ping().is_empty());
}

#[test]
fn bcrypt_rechecks_of_changed_hashes_keep_a_match_and_drop_a_mismatch() {
    let hash = |pw: &str| bcrypt::hash(pw, 4).unwrap();
    let conf = |alice: &str, bob: &str| {
        format!(
            "authorization {{\n  users = [\n    {{user: alice, password: \"{alice}\"}}\n    \
             {{user: bob, password: \"{bob}\"}}\n  ]\n}}\n"
        )
    };
    let srv = Server::start("bcrypt", &conf(&hash("apw"), &hash("bpw")), &[]);
    let mut alice = Raw::login(srv.port, Some(("alice", "apw")));
    let mut bob = Raw::login(srv.port, Some(("bob", "bpw")));
    // New hashes (new salts): nothing cached, both are verified again on the bcrypt pool.
    // Alice's still matches her password; bob's is of another one.
    srv.rewrite(&conf(&hash("apw"), &hash("other")));
    srv.hup(RELOADED);
    assert_eq!(bob.read_to_eof(), "-ERR 'Authorization Violation'\r\n");
    assert!(alice.ping().is_empty());
    alice.send("SUB x 1\r\nPUB x 2\r\nhi\r\n");
    assert_eq!(alice.ping(), ["MSG x 1 2\r\n", "hi\r\n"]);
}

#[test]
fn pid_file_is_written_where_the_reload_says() {
    let srv = Server::start("pid", "", &[]);
    let pid = srv.dir.join("ringnats.pid");
    srv.rewrite(&format!("pid_file: \"{}\"\n", pid.display()));
    srv.hup(RELOADED);
    assert_eq!(
        std::fs::read_to_string(&pid).unwrap(),
        srv.child.id().to_string()
    );
}

#[test]
fn a_shorter_ping_interval_reaches_live_clients() {
    let srv = Server::start("ping", "ping_interval: 600\n", &[]);
    let mut c = Raw::login(srv.port, None);
    srv.rewrite("ping_interval: 1\n");
    let log = srv.hup(RELOADED);
    assert!(log.contains("[INF] Reloaded: ping_interval = 1s"), "{log}");
    // Without the reload the first PING would be ten minutes away.
    assert_eq!(c.line(), "PING\r\n");
}
