//! The config file's keys as server options: one test per group of keys, the error texts, the
//! warnings, and a realistic gnatsd.conf.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::options::{RouteUrl, DEFAULT_MAX_PAYLOAD, DEFAULT_PORT};

const FILE: &str = "gnatsd.conf";

fn read(text: &str) -> FileOptions {
    let tree = parse(text, FILE, &MemResolver::new()).unwrap_or_else(|e| panic!("{e}"));
    server_options(&tree).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn opts(text: &str) -> crate::options::Options {
    let fo = read(text);
    assert!(fo.options.cluster.is_none());
    fo.options
}

fn error(text: &str) -> String {
    let tree = parse(text, FILE, &MemResolver::new()).unwrap_or_else(|e| panic!("{e}"));
    match server_options(&tree) {
        Ok(_) => panic!("{text:?} was accepted"),
        Err(e) => e.to_string(),
    }
}

fn warnings(text: &str) -> Vec<String> {
    read(text).warnings.iter().map(|w| w.to_string()).collect()
}

fn cluster(text: &str) -> FileCluster {
    read(text).cluster.expect("a cluster block")
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let o = opts("");
    assert_eq!((o.host.as_str(), o.port), ("0.0.0.0", 4222));
    assert!(o.logtime && !o.debug && !o.trace);
    assert_eq!(o.max_payload, DEFAULT_MAX_PAYLOAD);
    assert!(read("").cluster.is_none() && read("").warnings.is_empty());
}

#[test]
fn client_listen_address() {
    assert_eq!(opts("port: 5222").port, 5222);
    // -1 is a random port, 0 the default (as 1.0's processOptions).
    assert_eq!(opts("port: -1").port, 0);
    assert_eq!(opts("port: 0").port, DEFAULT_PORT);
    assert_eq!(opts("host: 127.0.0.1").host, "127.0.0.1");
    assert_eq!(opts("net: 10.0.0.1").host, "10.0.0.1");
    assert_eq!(opts("host: \"\"").host, "0.0.0.0");
    let o = opts("listen: 127.0.0.1:4333");
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4333));
    let o = opts("listen: \"[::1]:4333\"");
    assert_eq!((o.host.as_str(), o.port), ("::1", 4333));
    let o = opts("host: 127.0.0.1\nlisten: 4333");
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4333));
    let o = opts("host: 127.0.0.1\nlisten: \":4333\"");
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4333));
    assert_eq!(opts("listen: \"127.0.0.1:-1\"").port, 0);
    // File order: the later key wins (1.0's order is random).
    assert_eq!(opts("listen: 127.0.0.1:4333\nport: 4444").port, 4444);
    assert_eq!(opts("port: 4444\nlisten: 127.0.0.1:4333").port, 4333);
}

#[test]
fn keys_are_case_insensitive() {
    let o = opts("PORT: 5222\nDebug: true\nAuthorization { USER: a, Password: b }");
    assert_eq!(o.port, 5222);
    assert!(o.debug);
    assert_eq!(
        (o.user.as_deref(), o.pass.as_deref()),
        (Some("a"), Some("b"))
    );
    let c = cluster("CLUSTER { Listen: 127.0.0.1:6222, ROUTES: [nats://127.0.0.1:6223] }");
    assert_eq!((c.options.port, c.options.routes.len()), (6222, 1));
}

#[test]
fn monitoring_and_profiling_ports() {
    assert_eq!(opts("http_port: 8222").http_port, Some(8222));
    assert_eq!(opts("monitor_port: 8222").http_port, Some(8222));
    assert_eq!(opts("http_port: 0").http_port, None);
    assert_eq!(opts("https_port: 8443").https_port, Some(8443));
    let o = opts("http: 127.0.0.1:8222");
    assert_eq!(
        (o.http_host.as_deref(), o.http_port),
        (Some("127.0.0.1"), Some(8222))
    );
    let o = opts("http: 8222");
    assert_eq!((o.http_host, o.http_port), (None, Some(8222)));
    let o = opts("https: \"0.0.0.0:8443\"");
    assert_eq!(
        (o.http_host.as_deref(), o.https_port),
        (Some("0.0.0.0"), Some(8443))
    );
    assert_eq!(opts("prof_port: 6060").prof_port, Some(6060));
}

#[test]
fn logging_keys() {
    let o = opts("debug: true\ntrace: yes\nlogtime: false\nlog_file: /var/log/nats.log");
    assert!(o.debug && o.trace && !o.logtime);
    assert_eq!(o.log_file.as_deref(), Some(Path::new("/var/log/nats.log")));
    assert_eq!(
        opts("logfile: \"a b.log\"").log_file.as_deref(),
        Some(Path::new("a b.log"))
    );
    assert_eq!(opts("logfile: \"\"").log_file, None);
    assert_eq!(
        opts("pid_file: /run/nats.pid").pid_file.as_deref(),
        Some(Path::new("/run/nats.pid"))
    );
    assert_eq!(
        opts("pidfile: nats.pid").pid_file.as_deref(),
        Some(Path::new("nats.pid"))
    );
    let o = opts("syslog: true\nremote_syslog: \"udp://localhost:514\"");
    assert!(o.syslog);
    assert_eq!(o.remote_syslog.as_deref(), Some("udp://localhost:514"));
}

#[test]
fn limits_take_sizes() {
    assert_eq!(opts("max_payload: 65536").max_payload, 65536);
    assert_eq!(opts("max_payload: 2MB").max_payload, 2 << 20);
    assert_eq!(opts("max_payload: \"64KB\"").max_payload, 65536);
    assert_eq!(opts("max_payload: 0").max_payload, DEFAULT_MAX_PAYLOAD);
    assert_eq!(opts("max_control_line: 4096").max_control_line, 4096);
    assert_eq!(opts("max_control_line: 2kb").max_control_line, 2048);
    assert_eq!(opts("max_connections: 100").max_connections, 100);
    assert_eq!(opts("max_conn: 7").max_connections, 7);
    assert_eq!(opts("max_pending: 8MB").max_pending, 8 << 20);
}

#[test]
fn keepalive_and_deadlines_take_seconds_or_durations() {
    let s = Duration::from_secs;
    assert_eq!(opts("ping_interval: 30").ping_interval, s(30));
    assert_eq!(opts("ping_interval: \"1m\"").ping_interval, s(60));
    assert_eq!(opts("ping_interval: 0").ping_interval, s(120));
    assert_eq!(opts("ping_max: 5").ping_max, 5);
    assert_eq!(opts("ping_max: 0").ping_max, 2);
    assert_eq!(opts("write_deadline: \"5s\"").write_deadline, s(5));
    assert_eq!(
        opts("write_deadline: \"500ms\"").write_deadline,
        Duration::from_millis(500)
    );
    // An integer is seconds, with 1.0's warning.
    let fo = read("write_deadline: 3");
    assert_eq!(fo.options.write_deadline, s(3));
    assert_eq!(
        warnings("write_deadline: 3"),
        ["gnatsd.conf:1:1: write_deadline should be converted to a duration"]
    );
    assert!(warnings("write_deadline: \"3s\"").is_empty());
}

#[test]
fn authorization_single_user_and_token() {
    let o = opts("authorization { user: derek, password: T0pS3cr3t, timeout: 2 }");
    assert_eq!(o.user.as_deref(), Some("derek"));
    assert_eq!(o.pass.as_deref(), Some("T0pS3cr3t"));
    assert_eq!(o.token, None);
    assert_eq!(o.auth_timeout, Duration::from_secs(2));
    let o = opts("authorization { username: a, pass: b }");
    assert_eq!(
        (o.user.as_deref(), o.pass.as_deref()),
        (Some("a"), Some("b"))
    );
    let o = opts("authorization { token: s3cr3t, timeout: 0.5 }");
    assert_eq!(o.token.as_deref(), Some("s3cr3t"));
    assert_eq!(o.auth_timeout, Duration::from_millis(500));
    assert_eq!(
        opts("authorization { token: t, timeout: \"3s\" }").auth_timeout,
        Duration::from_secs(3)
    );
    assert_eq!(
        opts("authorization { token: t, timeout: 0 }").auth_timeout,
        Duration::from_secs(1)
    );
    // bcrypt hashes need no quotes.
    let o = opts("authorization { user: a, password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG }");
    assert!(o.pass.unwrap().starts_with("$2a$11$"));
    assert!(!opts("authorization { }").auth_required());
}

#[test]
fn authorization_users_and_permissions() {
    use crate::auth::{Permissions, Rules};
    let text = "authorization {\n  default_permissions = { publish = \"SANDBOX.*\" }\n  \
                users = [\n    {user: alice, password: foo}\n    \
                {username: bob, pass: \"$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG\", \
                permission: { pub: [\"a\", \"b.>\"], sub: { allow: \"_INBOX.>\", deny: [\"_INBOX.x\"] } }}\n  ]\n}";
    let o = opts(text);
    assert!(o.auth_required());
    assert_eq!(o.users.len(), 2);
    assert_eq!(
        (o.users[0].user.as_str(), o.users[0].pass.as_str()),
        ("alice", "foo")
    );
    assert_eq!(o.users[0].permissions, None);
    assert!(o.users[1].pass.starts_with("$2a$11$"));
    assert_eq!(
        o.users[1].permissions,
        Some(Permissions {
            publish: Some(Rules {
                allow: Some(vec!["a".into(), "b.>".into()]),
                deny: vec![],
            }),
            subscribe: Some(Rules {
                allow: Some(vec!["_INBOX.>".into()]),
                deny: vec!["_INBOX.x".into()],
            }),
        })
    );
    assert_eq!(
        o.default_permissions,
        Some(Permissions {
            publish: Some(Rules {
                allow: Some(vec!["SANDBOX.*".into()]),
                deny: vec![],
            }),
            subscribe: None,
        })
    );
}

#[test]
fn authorization_users_errors() {
    for (text, want) in [
        (
            "authorization {\n  users = [ {user: a} ]\n}",
            r#"gnatsd.conf:2:13: key "users": User entry requires a user and a password"#,
        ),
        (
            "authorization {\n  users = [ 1 ]\n}",
            r#"gnatsd.conf:2:13: key "users": Expected user entry to be a map/struct, got integer"#,
        ),
        (
            "authorization {\n  users = [ {user: a, password: b, permissions: {publish: \"a..b\"}} ]\n}",
            r#"gnatsd.conf:2:59: key "publish": Subject "a..b" is not a valid subject"#,
        ),
        (
            "authorization {\n  users = [ {user: a, password: b, permissions: {send: x}} ]\n}",
            r#"gnatsd.conf:2:50: key "send": Unknown field send parsing permissions"#,
        ),
        (
            "authorization {\n  default_permissions = { publish = 5 }\n}",
            r#"gnatsd.conf:2:37: key "publish": expected a subject or an array of subjects, got integer"#,
        ),
    ] {
        assert_eq!(error(text), want, "{text}");
    }
}

#[test]
fn client_tls_block() {
    let text = "tls {\n  cert_file: \"./certs/server.pem\"\n  key_file: \"./certs/key.pem\"\n  \
                ca_file: ./certs/ca.pem\n  verify: true\n  timeout: 2\n  \
                cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  \
                curve_preferences: [X25519, CurveP521]\n}\n";
    let fo = read(text);
    assert!(fo.warnings.is_empty());
    let t = fo.options.tls.expect("tls set");
    assert_eq!(t.cert_file.unwrap().to_str(), Some("./certs/server.pem"));
    assert_eq!(t.key_file.unwrap().to_str(), Some("./certs/key.pem"));
    assert_eq!(t.ca_file.unwrap().to_str(), Some("./certs/ca.pem"));
    assert!(t.verify);
    assert_eq!(t.timeout, Duration::from_secs(2));
    assert_eq!(t.cipher_suites, ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
    assert_eq!(t.curve_preferences, ["X25519", "CurveP521"]);
    let t = opts("tls { cert_file: a.pem, key_file: b.pem }")
        .tls
        .unwrap();
    assert_eq!(t.timeout, Duration::from_millis(500), "1.0's default");
    assert!(!t.verify);
    assert!(opts("").tls.is_none());
    // Route TLS: always verified (1.0 forces it).
    let c = cluster("cluster { port: 6222, tls { ca_file: ca.pem, verify: false } }");
    let t = c.options.tls.unwrap();
    assert!(t.verify);
    assert_eq!(t.ca_file.unwrap().to_str(), Some("ca.pem"));
}

#[test]
fn client_tls_block_errors_are_gnatsd_texts() {
    for (text, want) in [
        (
            "tls { cert_file: a.pem, bogus: 1 }",
            "error parsing tls config, unknown field [\"bogus\"]",
        ),
        (
            "tls { cert_file: 1 }",
            "error parsing tls config, expected 'cert_file' to be filename",
        ),
        (
            "tls { verify: \"yes\" }",
            "error parsing tls config, expected 'verify' to be a boolean",
        ),
        (
            "tls { cipher_suites: [] }",
            "error parsing tls config, 'cipher_suites' cannot be empty",
        ),
        (
            "tls { curve_preferences: [] }",
            "error parsing tls config, 'curve_preferences' cannot be empty",
        ),
        (
            "tls { cipher_suites: [TLS_NOPE] }",
            "Unrecognized cipher TLS_NOPE",
        ),
        (
            "tls { curve_preferences: [CurveP999] }",
            "Unrecognized curve preference CurveP999",
        ),
        (
            "tls { cipher_suites: [TLS_RSA_WITH_RC4_128_SHA] }",
            "cipher suite TLS_RSA_WITH_RC4_128_SHA is not supported",
        ),
    ] {
        let err = error(text);
        assert!(
            err.starts_with("gnatsd.conf:1:") && err.contains(want),
            "{text}: {err}"
        );
    }
}

#[test]
fn cluster_block() {
    let c = cluster(
        "cluster {\n  listen: 127.0.0.1:6222\n  authorization { user: ruser, password: T0p, \
         timeout: 0.5 }\n  routes = [\n    nats-route://ruser:T0p@127.0.0.1:6223\n    \
         nats://127.0.0.1:6224\n  ]\n  no_advertise: true\n  connect_retries: 5\n}",
    );
    assert!(c.listens);
    assert_eq!(c.pos.to_string(), "gnatsd.conf:1:1");
    let o = &c.options;
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 6222));
    assert_eq!(
        (o.user.as_deref(), o.pass.as_deref()),
        (Some("ruser"), Some("T0p"))
    );
    assert_eq!(o.auth_timeout, Duration::from_millis(500));
    assert_eq!(
        o.routes,
        [
            RouteUrl::parse("nats-route://ruser:T0p@127.0.0.1:6223").unwrap(),
            RouteUrl::parse("nats://127.0.0.1:6224").unwrap()
        ]
    );
    assert!(o.no_advertise);
    assert_eq!(o.connect_retries, 5);
    assert!(o.tls.is_none());

    let c = cluster("cluster { host: 127.0.0.1, port: 6222 }");
    assert!(c.listens);
    assert_eq!(
        (c.options.host.as_str(), c.options.port),
        ("127.0.0.1", 6222)
    );
    let c = cluster("cluster { net: 127.0.0.1, port: -1 }");
    assert!(c.listens);
    assert_eq!((c.options.host.as_str(), c.options.port), ("127.0.0.1", 0));
    let c = cluster("cluster { listen: 6222 }");
    assert_eq!((c.options.host.as_str(), c.options.port), ("0.0.0.0", 6222));
    // No port: kept (a --cluster flag may give one), not listening.
    let c = cluster("cluster { host: 127.0.0.1, routes: [nats://127.0.0.1:6223] }");
    assert!(!c.listens);
    assert_eq!(c.options.routes.len(), 1);
    assert!(!cluster("cluster { port: 0 }").listens);
    assert!(!cluster("cluster { listen: \"127.0.0.1:0\" }").listens);
}

#[test]
fn cluster_authorization_token_is_ignored_with_a_warning() {
    let text = "cluster {\n  port: 6222\n  authorization { token: x }\n}";
    assert_eq!(cluster(text).options.user, None);
    assert_eq!(
        warnings(text),
        ["gnatsd.conf:3:3: cluster authorization does not use a token: ignored"]
    );
}

#[test]
fn wrong_types_name_file_line_column_and_key() {
    let cases = [
        (
            "port: \"abc\"",
            r#"gnatsd.conf:1:7: key "port": expected an integer, got string"#,
        ),
        (
            "port: 1.5",
            r#"gnatsd.conf:1:7: key "port": expected an integer, got float"#,
        ),
        (
            "\n  debug: 1",
            r#"gnatsd.conf:2:10: key "debug": expected a boolean, got integer"#,
        ),
        (
            "logtime: \"no\"",
            r#"gnatsd.conf:1:10: key "logtime": expected a boolean, got string"#,
        ),
        (
            "host: 127",
            r#"gnatsd.conf:1:7: key "host": expected a string, got integer"#,
        ),
        (
            "log_file: [a]",
            r#"gnatsd.conf:1:11: key "log_file": expected a string, got array"#,
        ),
        (
            "max_payload: true",
            r#"gnatsd.conf:1:14: key "max_payload": expected a size, got boolean"#,
        ),
        (
            "max_payload: \"lots\"",
            r#"gnatsd.conf:1:14: key "max_payload": expected a size such as 1048576, 64KB or "1MB", got "lots""#,
        ),
        (
            "max_payload: -1",
            r#"gnatsd.conf:1:14: key "max_payload": expected a non-negative size, got -1"#,
        ),
        (
            "max_connections: -5",
            r#"gnatsd.conf:1:18: key "max_connections": expected a non-negative integer, got -5"#,
        ),
        (
            "ping_interval: \"2x\"",
            r#"gnatsd.conf:1:16: key "ping_interval": expected a duration such as "2s", "500ms" or "1m", got "2x""#,
        ),
        (
            "write_deadline: {}",
            r#"gnatsd.conf:1:17: key "write_deadline": expected a duration, got map"#,
        ),
        (
            "authorization: 1",
            r#"gnatsd.conf:1:16: key "authorization": expected a map, got integer"#,
        ),
        (
            "authorization {\n  user: 12\n}",
            r#"gnatsd.conf:2:9: key "user": expected a string, got integer"#,
        ),
        (
            "authorization { token: t, timeout: yes }",
            r#"gnatsd.conf:1:36: key "timeout": expected a duration, got boolean"#,
        ),
        (
            "authorization { users: {} }",
            r#"gnatsd.conf:1:24: key "users": expected an array, got map"#,
        ),
        (
            "cluster: [1]",
            r#"gnatsd.conf:1:10: key "cluster": expected a map, got array"#,
        ),
        (
            "cluster {\n  port: true\n}",
            r#"gnatsd.conf:2:9: key "port": expected an integer, got boolean"#,
        ),
        (
            "cluster {\n  routes: \"nats://a:1\"\n}",
            r#"gnatsd.conf:2:11: key "routes": expected an array, got string"#,
        ),
        (
            "cluster {\n  routes: [nats://a:1, 7]\n}",
            r#"gnatsd.conf:2:24: key "routes": expected a string, got integer"#,
        ),
        (
            "cluster { no_advertise: 1 }",
            r#"gnatsd.conf:1:25: key "no_advertise": expected a boolean, got integer"#,
        ),
        (
            "tls: true",
            r#"gnatsd.conf:1:6: key "tls": expected a map, got boolean"#,
        ),
        (
            "listen: true",
            r#"gnatsd.conf:1:9: key "listen": expected a port or "host:port", got boolean"#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text:?}");
    }
}

#[test]
fn invalid_values_name_file_line_column_and_key() {
    let cases = [
        (
            "port: 70000",
            r#"gnatsd.conf:1:7: key "port": expected a port from 0 to 65535, or -1 for a random port, got 70000"#,
        ),
        (
            "http_port: -2",
            r#"gnatsd.conf:1:12: key "http_port": expected a port from 0 to 65535, or -1 for a random port, got -2"#,
        ),
        (
            "listen: localhost",
            r#"gnatsd.conf:1:9: key "listen": Could not parse address string "localhost""#,
        ),
        (
            "listen: \"::1:4222\"",
            r#"gnatsd.conf:1:9: key "listen": Could not parse address string "::1:4222""#,
        ),
        (
            "listen: \"0.0.0.0:XXXX\"",
            r#"gnatsd.conf:1:9: key "listen": Could not parse port "XXXX""#,
        ),
        (
            "http: \"0.0.0.0:99999\"",
            r#"gnatsd.conf:1:7: key "http": expected a port from 0 to 65535, or -1 for a random port, got 99999"#,
        ),
        (
            "max_control_line: 8",
            r#"gnatsd.conf:1:19: key "max_control_line": expected a size of at least 16 bytes, got 8"#,
        ),
        (
            "ping_max: 5000000000",
            r#"gnatsd.conf:1:11: key "ping_max": expected a smaller count, got 5000000000"#,
        ),
        (
            "write_deadline: -1",
            r#"gnatsd.conf:1:17: key "write_deadline": expected a non-negative duration, got -1"#,
        ),
        (
            "cluster {\n  listen: \"0.0.0.0:XXXX\"\n}",
            r#"gnatsd.conf:2:11: key "listen": Could not parse port "XXXX""#,
        ),
        (
            "cluster {\n  connect_retries: -1\n}",
            r#"gnatsd.conf:2:20: key "connect_retries": expected a non-negative integer, got -1"#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text:?}");
    }
}

#[test]
fn gnatsd_error_texts() {
    let cases = [
        (
            "authorization {\n  user: a\n  password: b\n  token: c\n}",
            r#"gnatsd.conf:1:1: key "authorization": Cannot have a user/pass and token"#,
        ),
        (
            "authorization {\n  user: a\n  users = [ {user: b, password: c} ]\n}",
            r#"gnatsd.conf:1:1: key "authorization": Can not have a single user/pass and a users array"#,
        ),
        (
            "authorization {\n  token: a\n  users = []\n}",
            r#"gnatsd.conf:1:1: key "authorization": Can not have a token and a users array"#,
        ),
        (
            "\ncluster {\n  authorization {\n    users = []\n  }\n}",
            r#"gnatsd.conf:3:3: key "authorization": Cluster authorization does not allow multiple users"#,
        ),
        (
            "cluster {\n  routes = [\n    \"0.0.0.0:XXXX\"\n  ]\n}",
            r#"gnatsd.conf:3:5: key "routes": error parsing route url ["0.0.0.0:XXXX"]: relative URL without a base"#,
        ),
        (
            "cluster {\n  routes = [ nats-route://127.0.0.1 ]\n}",
            r#"gnatsd.conf:2:14: key "routes": error parsing route url ["nats-route://127.0.0.1"]: no port"#,
        ),
        (
            "authorization { password: b }",
            r#"gnatsd.conf:1:1: key "authorization": a password needs a user"#,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(error(text), want, "{text:?}");
    }
}

#[test]
fn errors_in_included_files_name_that_file() {
    let res = MemResolver::new().file("cluster.conf", "port: 6222\nroutes: [nats://h:1, 2]");
    let tree = parse("cluster {\n  include cluster.conf\n}", FILE, &res).unwrap();
    assert_eq!(
        server_options(&tree).unwrap_err().to_string(),
        r#"cluster.conf:2:22: key "routes": expected a string, got integer"#
    );
}

#[test]
fn unknown_keys_are_warnings_but_not_variables() {
    let text = "port: 4222\nbogus: 1\nNATS_PORT = 4223\n\
                authorization {\n  PASS: abc\n  user: a\n  password: $PASS\n  extra: x\n}\n\
                cluster {\n  port: 6222\n  unknown_thing: {}\n}\n\
                SPARE = 1\n";
    assert_eq!(
        warnings(text),
        [
            r#"gnatsd.conf:2:1: unknown field "bogus""#,
            r#"gnatsd.conf:3:1: unknown field "NATS_PORT""#,
            r#"gnatsd.conf:8:3: unknown field "extra""#,
            r#"gnatsd.conf:12:3: unknown field "unknown_thing""#,
            r#"gnatsd.conf:14:1: unknown field "SPARE""#,
        ]
    );
    // Once used as $NATS_PORT it is a variable, not an unknown option.
    assert!(warnings("NATS_PORT = 4223\nport: $NATS_PORT").is_empty());
    assert_eq!(opts("NATS_PORT = 4223\nport: $NATS_PORT").port, 4223);
}

#[test]
fn readme_permissions_example() {
    let text = r#"
authorization {
  ADMIN     = { publish = ">", subscribe = ">" }
  REQUESTOR = { publish = ["req.foo", "req.bar"], subscribe = "_INBOX.*" }
  DEFAULT_PERMISSIONS = { publish = "SANDBOX.*", subscribe = ["PUBLIC.>", "_INBOX.>"] }
  PASS: abcdefghijklmnopqrstuvwxwz0123456789
  users = [
    {user: alice, password: foo, permissions: $ADMIN}
    {user: bob,   password: bar, permissions: $REQUESTOR}
    {user: joe,   password: $PASS}
  ]
}
"#;
    // Variables hold the permissions; `DEFAULT_PERMISSIONS` is the option itself (keys are
    // matched case-insensitively) and `PASS` is read as `pass`, which a users array ignores.
    let o = opts(text);
    assert_eq!(o.pass, None);
    let names: Vec<_> = o.users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(names, ["alice", "bob", "joe"]);
    assert_eq!(o.users[2].pass, "abcdefghijklmnopqrstuvwxwz0123456789");
    assert_eq!(o.users[2].permissions, None);
    let bob = o.users[1].permissions.as_ref().unwrap();
    assert_eq!(
        bob.subscribe.as_ref().unwrap().allow,
        Some(vec!["_INBOX.*".to_string()])
    );
    let cfg = crate::conn::ConnConfig::from_options(&o);
    let joe = &cfg.auth.users["joe"];
    let p = joe
        .permissions
        .as_ref()
        .expect("joe gets the default permissions");
    assert!(p.can_publish(b"SANDBOX.x") && !p.can_publish(b"foo"));
    assert!(p.can_subscribe(b"PUBLIC.a.b") && !p.can_subscribe(b"foo"));
    assert!(cfg.auth.users["alice"]
        .permissions
        .as_ref()
        .unwrap()
        .can_publish(b"any.thing"));
}

/// A production-style file: every 1.0 section once, comments, variables, mixed separators.
#[test]
fn realistic_gnatsd_conf() {
    let text = r#"
# Client port of 4242 on all interfaces
port: 4242
net: 127.0.0.1

# HTTP monitoring port
monitor_port: 8222

ROUTE_PASS = "T0pS3cr3tT00!"

# This is for clustering multiple servers together.
cluster {

  # Route connections to be received on any interface on port 6222
  port: 6222

  # Routes are protected, so need to use them with --routes flag
  # e.g. --routes=nats-route://ruser:T0pS3cr3t@otherdockerhost:6222
  authorization {
    user: ruser
    password: $ROUTE_PASS
    timeout: 0.75
  }

  # Routes are actively solicited and connected to from this server.
  # This Docker image has none by default, but you can pass a
  # flag to the gnatsd docker image to create one to an existing server.
  routes = [
    nats-route://ruser:T0pS3cr3tT00!@127.0.0.1:6223
    nats-route://ruser:T0pS3cr3tT00!@127.0.0.1:6224
  ]
  connect_retries: 3
}

authorization {
  user:     derek
  password: T0pS3cr3t
  timeout:  1
}

# logging options
debug:   false
trace:   true
logtime: false
log_file: "/tmp/gnatsd.log"
pid_file: '/tmp/gnatsd.pid'

# Some system overides

# max_connections
max_connections: 100

# maximum protocol control line
max_control_line: 512

# maximum payload
max_payload: 65536

# Duration the server can block on a socket write to a client.  Exceeding the
# deadline will designate a client as a slow consumer.
write_deadline: "2s"
ping_interval: 60
ping_max: 3
"#;
    let fo = read(text);
    assert!(fo.warnings.is_empty(), "{:?}", fo.warnings);
    let o = &fo.options;
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4242));
    assert_eq!(o.http_port, Some(8222));
    assert_eq!(
        (o.user.as_deref(), o.pass.as_deref()),
        (Some("derek"), Some("T0pS3cr3t"))
    );
    assert_eq!(o.auth_timeout, Duration::from_secs(1));
    assert!(!o.debug && o.trace && !o.logtime);
    assert_eq!(o.log_file.as_deref(), Some(Path::new("/tmp/gnatsd.log")));
    assert_eq!(o.pid_file.as_deref(), Some(Path::new("/tmp/gnatsd.pid")));
    assert_eq!(o.max_connections, 100);
    assert_eq!(o.max_control_line, 512);
    assert_eq!(o.max_payload, 65536);
    assert_eq!(o.write_deadline, Duration::from_secs(2));
    assert_eq!(o.ping_interval, Duration::from_secs(60));
    assert_eq!(o.ping_max, 3);
    let c = fo.cluster.unwrap();
    assert!(c.listens);
    let c = c.options;
    assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 6222));
    assert_eq!(
        (c.user.as_deref(), c.pass.as_deref()),
        (Some("ruser"), Some("T0pS3cr3tT00!"))
    );
    assert_eq!(c.auth_timeout, Duration::from_millis(750));
    assert_eq!(c.connect_retries, 3);
    let hosts: Vec<String> = c.routes.iter().map(RouteUrl::host_port).collect();
    assert_eq!(hosts, ["127.0.0.1:6223", "127.0.0.1:6224"]);
    assert_eq!(c.routes[0].pass.as_deref(), Some("T0pS3cr3tT00!"));
}
