//! Syntax, error and example-config tests for the config parser, and round-trip properties.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const FILE: &str = "gnatsd.conf";

/// A tree without positions, written compactly: `{port: 4222, s: "x", a: [1, 2.5], m: {}}`.
fn show(m: &Map) -> String {
    let entries: Vec<String> = m
        .iter()
        .map(|e| format!("{}: {}", e.key, show_value(&e.value)))
        .collect();
    format!("{{{}}}", entries.join(", "))
}

fn show_value(v: &Value) -> String {
    match &v.kind {
        ValueKind::Map(m) => show(m),
        ValueKind::Array(a) => {
            let items: Vec<String> = a.iter().map(show_value).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Int(n) => n.to_string(),
        ValueKind::Float(f) => format!("{f:?}"),
        ValueKind::Bool(b) => b.to_string(),
    }
}

fn parse_with(text: &str, res: &MemResolver) -> Result<Map, Error> {
    parse(text, FILE, res)
}

/// The parsed tree of `text`, shown.
fn ok(text: &str) -> String {
    ok_with(text, &MemResolver::new())
}

fn ok_with(text: &str, res: &MemResolver) -> String {
    match parse_with(text, res) {
        Ok(m) => show(&m),
        Err(e) => panic!("{text:?}: {e}"),
    }
}

/// The error message for `text`.
fn err(text: &str) -> String {
    err_with(text, &MemResolver::new())
}

fn err_with(text: &str, res: &MemResolver) -> String {
    match parse_with(text, res) {
        Ok(m) => panic!("{text:?} parsed as {}", show(&m)),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_and_blank_files() {
    assert_eq!(ok(""), "{}");
    assert_eq!(ok("  \n\t\r\n"), "{}");
    assert_eq!(ok("# only a comment"), "{}");
    assert_eq!(ok("\u{feff}port: 1"), "{port: 1}");
}

#[test]
fn comments() {
    let text = "# hash comment\n// slash comment\nport: 4222 # after a value\nhost: h // also\n\
                m {\n  # in a map\n  a: 1 # after\n  // slashes\n  b: 2\n}\n\
                arr [\n  # in an array\n  1 # after\n  // slashes\n  2, # after a comma\n]\n";
    assert_eq!(
        ok(text),
        "{port: 4222, host: \"h\", m: {a: 1, b: 2}, arr: [1, 2]}"
    );
    // Inside an unquoted string a '#' is just a character (passwords use it).
    assert_eq!(ok("pass: ab#cd"), "{pass: \"ab#cd\"}");
    assert_eq!(ok("n: 4222#c"), "{n: 4222}");
}

#[test]
fn key_value_separators() {
    for text in [
        "a = 1",
        "a: 1",
        "a 1",
        "a=1",
        "a:1",
        "a\t1",
        "a   =   1",
        "a\n= 1",
        "a\n\n1",
    ] {
        assert_eq!(ok(text), "{a: 1}", "{text:?}");
    }
    // Only one separator is taken; a second one starts the value.
    assert_eq!(ok("a == "), "{a: \"=\"}");
    // In a map the value may also start on a later line.
    assert_eq!(ok("m {\n a =\n 1\n}"), "{m: {a: 1}}");
}

#[test]
fn top_level_terminators() {
    assert_eq!(ok("a=1;b=2"), "{a: 1, b: 2}");
    assert_eq!(ok("a=1, b=2"), "{a: 1, b: 2}");
    assert_eq!(ok("a=1\r\nb=2\r\n"), "{a: 1, b: 2}");
    assert_eq!(ok("a=1 ; b=2 ;"), "{a: 1, b: 2}");
    // A lone '/' after a value is skipped, as gnatsd does.
    assert_eq!(ok("a=1 /\nb=2"), "{a: 1, b: 2}");
}

#[test]
fn keys_quoted_cased_duplicated() {
    assert_eq!(
        ok("\"a b\" = 1\n'c:d': 2\n\"\" = 3"),
        "{a b: 1, c:d: 2, : 3}"
    );
    let m = parse("Port: 1\nDEBUG: true", FILE, &MemResolver::new()).unwrap();
    assert_eq!(m.get("port").map(|e| e.key.as_str()), Some("Port"));
    assert_eq!(m.get("debug").map(|e| e.key.as_str()), Some("DEBUG"));
    assert!(m.get_exact("port").is_none());
    // The last of duplicate keys wins, and takes the last place.
    assert_eq!(ok("a: 1\nb: 2\na: 3"), "{b: 2, a: 3}");
    // Keys differing in case are distinct, but `get` finds the last one.
    let m = parse("port: 1\nPORT: 2", FILE, &MemResolver::new()).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m.get_int("Port"), Ok(Some(2)));
}

#[test]
fn maps() {
    assert_eq!(ok("m {}"), "{m: {}}");
    assert_eq!(ok("m = {}"), "{m: {}}");
    assert_eq!(
        ok("m: { a: 1, b: 2; c: 3\n d: 4 }"),
        "{m: {a: 1, b: 2, c: 3, d: 4}}"
    );
    assert_eq!(ok("m {a=1,}"), "{m: {a: 1}}");
    assert_eq!(ok("m{a=b}"), "{m: {a: \"b\"}}");
    assert_eq!(ok("cluster{\n port: 1\n}"), "{cluster: {port: 1}}");
    assert_eq!(ok("cluster\n{\n port: 1\n}"), "{cluster: {port: 1}}");
    assert_eq!(ok("a { b { c { d: 1 } } }"), "{a: {b: {c: {d: 1}}}}");
    assert_eq!(ok("m { 'q k': 1, \"w\" 2 }"), "{m: {q k: 1, w: 2}}");
    // gnatsd quirks kept: a lone '/' separates map entries; a ',' can start a (junk) key.
    assert_eq!(ok("m { a = 1 / b = 2 }"), "{m: {a: 1, b: 2}}");
    assert_eq!(ok("m { a = 1,,b = 2 }"), "{m: {a: 1, ,b: 2}}");
}

#[test]
fn arrays() {
    assert_eq!(ok("a []"), "{a: []}");
    assert_eq!(ok("a [1, 2, 3]"), "{a: [1, 2, 3]}");
    assert_eq!(ok("a [1, 2, 3,]"), "{a: [1, 2, 3]}");
    assert_eq!(ok("a [\n  1\n  2\n\n  3\n]"), "{a: [1, 2, 3]}");
    assert_eq!(
        ok("a = [x, \"y\", 'z', 1.5, true, [1, [2]], {k: v}]"),
        "{a: [\"x\", \"y\", \"z\", 1.5, true, [1, [2]], {k: \"v\"}]}"
    );
    assert_eq!(
        ok("a [ {user: a}\n {user: b} ]"),
        "{a: [{user: \"a\"}, {user: \"b\"}]}"
    );
    assert_eq!(
        ok("a [nats://h:1,nats://h:2]"),
        "{a: [\"nats://h:1\", \"nats://h:2\"]}"
    );
}

#[test]
fn unquoted_strings() {
    assert_eq!(ok("a: hello"), "{a: \"hello\"}");
    assert_eq!(ok("a: localhost:4222"), "{a: \"localhost:4222\"}");
    assert_eq!(
        ok("a: nats-route://u:p@h:6222/x?y=z"),
        "{a: \"nats-route://u:p@h:6222/x?y=z\"}"
    );
    assert_eq!(ok("a: ./certs/server.pem"), "{a: \"./certs/server.pem\"}");
    assert_eq!(ok("a: -x"), "{a: \"-x\"}");
    assert_eq!(ok("a: héllo→"), "{a: \"héllo→\"}");
    // Escapes work in unquoted strings too, and make it a plain string.
    assert_eq!(ok("a: x\\ty"), "{a: \"x\\ty\"}");
    assert_eq!(ok("a: tru\\x65"), "{a: \"true\"}");
}

#[test]
fn an_unquoted_string_ending_at_a_quote() {
    // gnatsd ends an unquoted string at a single quote and drops the quote; what follows
    // must then be a valid value end.
    assert_eq!(ok("a: it'\n"), "{a: \"it\"}");
    assert_eq!(ok("a: true'\n"), "{a: \"true\"}");
    assert_eq!(ok("a: $X'\n"), "{a: \"$X\"}");
}

#[test]
fn quoted_strings() {
    assert_eq!(ok(r#"a: "x y""#), r#"{a: "x y"}"#);
    assert_eq!(
        ok(r#"a: "t\tn\nr\rq\"b\\h\x41""#),
        r#"{a: "t\tn\nr\rq\"b\\hA"}"#
    );
    assert_eq!(ok(r#"a: "caf\xc3\xa9""#), r#"{a: "café"}"#);
    assert_eq!(ok("a: \"two\nlines\""), r#"{a: "two\nlines"}"#);
    assert_eq!(
        ok(r#"a: 'raw \n \x zz " '"#),
        r#"{a: "raw \\n \\x zz \" "}"#
    );
    assert_eq!(ok("a: 'multi\nline'"), r#"{a: "multi\nline"}"#);
    assert_eq!(ok(r#"a: """#), r#"{a: ""}"#);
    // Quoted words are never booleans, numbers or variables.
    assert_eq!(
        ok(r#"a: "true", b: '1', c: "$X""#),
        r#"{a: "true", b: "1", c: "$X"}"#
    );
}

#[test]
fn block_strings() {
    assert_eq!(
        ok("a = (\nline one\nline two\n)\nb = 1"),
        r#"{a: "\nline one\nline two\n", b: 1}"#
    );
    // A ')' that is not alone on its line does not end the block.
    assert_eq!(ok("a = (\nx) (y)\n  )\n)\n"), r#"{a: "\nx) (y)\n  )\n"}"#);
    assert_eq!(ok("a = (\nend of file\n)"), r#"{a: "\nend of file\n"}"#);
    assert_eq!(ok("a = (\r\nwindows\r\n)\r\n"), r#"{a: "\r\nwindows\r\n"}"#);
    assert_eq!(
        ok("m { a = (\n{ not a map }\n)\n}"),
        r#"{m: {a: "\n{ not a map }\n"}}"#
    );
}

#[test]
fn booleans() {
    for (word, b) in [
        ("true", true),
        ("TRUE", true),
        ("True", true),
        ("yes", true),
        ("YeS", true),
        ("on", true),
        ("ON", true),
        ("false", false),
        ("False", false),
        ("no", false),
        ("NO", false),
        ("off", false),
        ("Off", false),
    ] {
        assert_eq!(ok(&format!("a: {word}")), format!("{{a: {b}}}"), "{word}");
    }
    assert_eq!(ok("a: [on, off]"), "{a: [true, false]}");
    assert_eq!(ok("a: trueish"), "{a: \"trueish\"}");
}

#[test]
fn numbers() {
    assert_eq!(ok("a: 0"), "{a: 0}");
    assert_eq!(ok("a: -1"), "{a: -1}");
    assert_eq!(ok("a: 1.5"), "{a: 1.5}");
    assert_eq!(ok("a: -0.5"), "{a: -0.5}");
    assert_eq!(
        ok("a: 1k, b: 1kb, c: 2M, d: 2MB, e: 3g, f: 3Gb"),
        "{a: 1000, b: 1024, c: 2000000, d: 2097152, e: 3000000000, f: 3221225472}"
    );
    assert_eq!(
        ok("a: 1ki, b: 1MiB, c: 1t, d: 1tb"),
        "{a: 1024, b: 1048576, c: 1000000000000, d: 1099511627776}"
    );
    assert_eq!(ok("a: -2k"), "{a: -2000}");
    assert_eq!(ok("a: [1k, 2kb]"), "{a: [1000, 2048]}");
    assert_eq!(ok("m {a: 1mb}"), "{m: {a: 1048576}}");
    // Look-alikes are strings.
    assert_eq!(ok("a: 127.0.0.1:4222"), "{a: \"127.0.0.1:4222\"}");
    assert_eq!(ok("a: 10.0.0.1"), "{a: \"10.0.0.1\"}");
    assert_eq!(
        ok("a: 2s, b: 500ms, c: 1.5s"),
        "{a: \"2s\", b: \"500ms\", c: \"1.5s\"}"
    );
    assert_eq!(
        ok("a: 2017-07-12T10:00:00Z"),
        "{a: \"2017-07-12T10:00:00Z\"}"
    );
    // `1m` is a size suffix, as in gnatsd: a million, not a minute.
    assert_eq!(ok("a: 1m"), "{a: 1000000}");
}

#[test]
fn cases_from_gnatsd_and_nats_server() {
    assert_eq!(
        ok("foo='1'; bar=2.2; baz=true; boo=22"),
        r#"{foo: "1", bar: 2.2, baz: true, boo: 22}"#
    );
    // Digits and a size letter followed by more are strings (nats-server #5186, #6891).
    for word in ["0K1abc", "8m4dwr", "5e7bcd-abc10", "4e2abc"] {
        assert_eq!(
            ok(&format!("password: {word}")),
            format!("{{password: {word:?}}}")
        );
    }
    assert_eq!(
        ok("authorization { user: foo, password: 4e2abc }"),
        r#"{authorization: {user: "foo", password: "4e2abc"}}"#
    );
    assert_eq!(
        ok("foo {\n  expr = '(true == \"false\")'\n  text = 'This is a multi-line\ntext block.'\n}"),
        r#"{foo: {expr: "(true == \"false\")", text: "This is a multi-line\ntext block."}}"#
    );
    assert_eq!(
        ok("accounts { users = [{}]}\n}\n"),
        "{accounts: {users: [{}]}}"
    );
    assert_eq!(
        ok("{\n  accounts { users = [{}]}\n}\n"),
        "{accounts: {users: [{}]}}"
    );
    assert!(err("a,a,a,a").ends_with("key \"a,a,a,a\": expected a value, found end of file"));
    assert_eq!(
        err("A@@F\u{f8}\u{f8}?:{\u{f8}\u{f8}"),
        "gnatsd.conf:1:12: key \"\u{f8}\u{f8}\": expected a value, found end of file"
    );
    assert_eq!(
        err("include \"9/\u{fffd}"),
        "gnatsd.conf:1:9: unterminated include path"
    );
}

#[test]
fn durations_are_strings_until_asked() {
    let m = parse(
        "write_deadline: \"2s\"\nping_interval: 60\nd: 500ms",
        FILE,
        &MemResolver::new(),
    )
    .unwrap();
    assert_eq!(m.get_str("write_deadline"), Ok(Some("2s")));
    assert_eq!(
        m.get_duration("write_deadline"),
        Ok(Some(Duration::from_secs(2)))
    );
    assert_eq!(
        m.get_duration("ping_interval"),
        Ok(Some(Duration::from_secs(60)))
    );
    assert_eq!(m.get_duration("d"), Ok(Some(Duration::from_millis(500))));
}

#[test]
fn json_like_file() {
    let text = r#"{
  "port": 4222,
  "debug": true,
  "cluster": {"port": 6222, "routes": ["nats://a:6222", "nats://b:6222"]}
}"#;
    assert_eq!(
        ok(text),
        r#"{port: 4222, debug: true, cluster: {port: 6222, routes: ["nats://a:6222", "nats://b:6222"]}}"#
    );
}

#[test]
fn positions() {
    let text = "port: 4222\n\tcluster {\n  routes = [\n    'nats://a:1', x\n  ]\n}\nné: é";
    let m = parse(text, FILE, &MemResolver::new()).unwrap();
    let port = m.get("port").unwrap();
    assert_eq!((port.key_pos.line, port.key_pos.col), (1, 1));
    assert_eq!((port.value.pos.line, port.value.pos.col), (1, 7));
    assert_eq!(&*port.value.pos.file, FILE);
    let cluster = m.get("cluster").unwrap();
    assert_eq!((cluster.key_pos.line, cluster.key_pos.col), (2, 2));
    assert_eq!((cluster.value.pos.line, cluster.value.pos.col), (2, 10));
    let routes = cluster.value.as_map().unwrap().get("routes").unwrap();
    assert_eq!((routes.key_pos.line, routes.key_pos.col), (3, 3));
    assert_eq!((routes.value.pos.line, routes.value.pos.col), (3, 12));
    let items = routes.value.as_array().unwrap();
    assert_eq!((items[0].pos.line, items[0].pos.col), (4, 5));
    assert_eq!((items[1].pos.line, items[1].pos.col), (4, 19));
    // Columns count characters, not bytes.
    let ne = m.get("né").unwrap();
    assert_eq!((ne.value.pos.line, ne.value.pos.col), (7, 5));
    assert_eq!(ne.value.pos.to_string(), "gnatsd.conf:7:5");
}

// ---------------------------------------------------------------------------------------------
// Variables
// ---------------------------------------------------------------------------------------------

#[test]
fn variables_from_earlier_keys() {
    assert_eq!(ok("a: 1\nb: $a"), "{a: 1, b: 1}");
    assert_eq!(ok("u: {x: 1}\nv: $u"), "{u: {x: 1}, v: {x: 1}}");
    assert_eq!(
        ok("l: [1, 2]\nv: [$l, $l]"),
        "{l: [1, 2], v: [[1, 2], [1, 2]]}"
    );
    // Innermost enclosing map first; arrays are not scopes; only keys above the reference.
    let text = "a: top\nm {\n  a: inner\n  b: $a\n  n { c: $a }\n  l: [ { d: $a } ]\n}\nc: $a";
    assert_eq!(
        ok(text),
        r#"{a: "top", m: {a: "inner", b: "inner", n: {c: "inner"}, l: [{d: "inner"}]}, c: "top"}"#
    );
    // A map's own keys can be used by the keys below them inside it, not outside.
    assert_eq!(err("m { x: 1 }\ny: $x"), "gnatsd.conf:2:4: key \"y\": variable reference for \"x\" can not be found (no earlier key in an enclosing map, no environment variable)");
    // Exact spelling.
    assert!(err("Abc: 1\nb: $abc").contains("variable reference for \"abc\" can not be found"));
    // The latest definition above the reference.
    assert_eq!(ok("a: 1\na: 2\nb: $a\na: 3"), "{b: 2, a: 3}");
}

#[test]
fn variables_are_marked_used() {
    let m = parse(
        "a: 1\nb: 2\nm { c: 3, d: $c, e: $a }\na: 4",
        FILE,
        &MemResolver::new(),
    )
    .unwrap();
    let used = |m: &Map, k: &str| m.get(k).unwrap().used_as_variable;
    let inner = m.get_map("m").unwrap().unwrap();
    assert!(used(inner, "c") && !used(inner, "d") && !used(inner, "e"));
    assert!(!used(&m, "b"));
    // The `a` that `$a` referred to was replaced by a later `a`, which nobody used.
    assert!(!used(&m, "a"));
    let m = parse("a: 1\nb: $a", FILE, &MemResolver::new()).unwrap();
    assert!(used(&m, "a"));
}

#[test]
fn variable_copies_are_positioned_at_the_reference() {
    let m = parse("p: \"abc\"\nport: $p", FILE, &MemResolver::new()).unwrap();
    assert_eq!(
        m.get_int("port").unwrap_err().to_string(),
        "gnatsd.conf:2:7: key \"port\": expected an integer, got string"
    );
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
    {user: joe,   password: $PASS}             # gets the default permissions
  ]
}
"#;
    let m = parse(text, FILE, &MemResolver::new()).unwrap();
    let auth = m.get_map("authorization").unwrap().unwrap();
    let users = auth.get_array("users").unwrap().unwrap();
    assert_eq!(users.len(), 3);
    let alice = users[0].as_map().unwrap();
    assert_eq!(alice.get_str("user"), Ok(Some("alice")));
    assert_eq!(
        show(alice.get_map("permissions").unwrap().unwrap()),
        r#"{publish: ">", subscribe: ">"}"#
    );
    let bob = users[1].as_map().unwrap();
    assert_eq!(
        show(bob.get_map("permissions").unwrap().unwrap()),
        r#"{publish: ["req.foo", "req.bar"], subscribe: "_INBOX.*"}"#
    );
    let joe = users[2].as_map().unwrap();
    assert_eq!(
        joe.get_str("password"),
        Ok(Some("abcdefghijklmnopqrstuvwxwz0123456789"))
    );
    assert!(joe.get("permissions").is_none());
    // Matched case-insensitively, the DEFAULT_PERMISSIONS block is `default_permissions`.
    let defaults = auth.get_map("default_permissions").unwrap().unwrap();
    assert_eq!(defaults.get_str("publish"), Ok(Some("SANDBOX.*")));
    // The reference's position is where `$ADMIN` was written.
    let perms = &alice.get("permissions").unwrap().value;
    assert_eq!((perms.pos.line, perms.pos.col), (8, 47));
}

#[test]
fn bcrypt_hashes_stay_literal() {
    let hash = "$2a$11$3kIDaCxw.Glsl1.u5nKa6eUnNDLV5HV9tIuUp7EHhMt6Nm9myW1aS";
    assert_eq!(
        ok(&format!("password: {hash}")),
        format!("{{password: {hash:?}}}")
    );
    assert_eq!(
        ok("p: [$2a$10$x, $2b$10$y, $2y$10$z, $2x$10$w]"),
        r#"{p: ["$2a$10$x", "$2b$10$y", "$2y$10$z", "$2x$10$w"]}"#
    );
    // Even if a key or variable of that name exists.
    let res = MemResolver::new().env("2a$x", "no");
    assert_eq!(ok_with("p: $2a$x", &res), r#"{p: "$2a$x"}"#);
}

#[test]
fn variables_from_the_environment() {
    let res = MemResolver::new()
        .env("PORT", "4333")
        .env("HOST", "example.com")
        .env("ROUTES", "[nats://a:1, nats://b:2]")
        .env("AUTH", "{user: a, pass: $SECRET}")
        .env("SECRET", "s3cr3t")
        .env("QUOTED", "\"a b\"")
        .env("SIZE", "8MB")
        .env("TRAILING", "1\nignored: here")
        .env("a", "from_env");
    assert_eq!(
        ok_with("port: $PORT\nhost: $HOST\nroutes: $ROUTES\nauth: $AUTH\nq: $QUOTED\ns: $SIZE\nt: $TRAILING", &res),
        r#"{port: 4333, host: "example.com", routes: ["nats://a:1", "nats://b:2"], auth: {user: "a", pass: "s3cr3t"}, q: "a b", s: 8388608, t: 1}"#
    );
    // Keys in the file come first.
    assert_eq!(ok_with("a: file\nb: $a", &res), r#"{a: "file", b: "file"}"#);
    assert_eq!(ok_with("b: $a", &res), r#"{b: "from_env"}"#);
    // Referenced twice: same value both times.
    assert_eq!(ok_with("x: [$PORT, $PORT]", &res), "{x: [4333, 4333]}");
}

#[test]
fn environment_errors() {
    let res = MemResolver::new()
        .env("BAD", "[1,")
        .env("EMPTY", "")
        .env("SELF", "$SELF")
        .env("PING", "[$PONG]")
        .env("PONG", "[$PING]")
        .env("MISSING", "$NOWHERE");
    assert_eq!(
        err_with("a: $BAD", &res),
        "gnatsd.conf:1:4: key \"a\": environment variable \"BAD\" is not a valid value: $BAD:1:1: array opened here is never closed (no ']')"
    );
    assert_eq!(
        err_with("a: $EMPTY", &res),
        "gnatsd.conf:1:4: key \"a\": environment variable \"EMPTY\" is not a valid value: $EMPTY:1:1: expected a value, found end of file"
    );
    assert_eq!(
        err_with("a: $SELF", &res),
        "gnatsd.conf:1:4: key \"a\": environment variable \"SELF\" is not a valid value: $SELF:1:1: environment variable \"SELF\" refers to itself"
    );
    assert!(err_with("a: $PING", &res)
        .ends_with("$PONG:1:2: environment variable \"PING\" refers to itself"));
    assert!(err_with("a: $MISSING", &res).ends_with("$MISSING:1:1: variable reference for \"NOWHERE\" can not be found (no earlier key in an enclosing map, no environment variable)"));

    let mut chain = MemResolver::new();
    for i in 0..20 {
        chain = chain.env(&format!("V{i}"), &format!("$V{}", i + 1));
    }
    let e = err_with("a: $V0", &chain.env("V20", "1"));
    assert!(
        e.ends_with("$V7:1:1: more than 8 environment variables refer to each other"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Includes
// ---------------------------------------------------------------------------------------------

#[test]
fn includes() {
    let res = MemResolver::new()
        .file("conf/main.conf", "port: 1\ninclude auth.conf\ncluster {\n  include 'sub/routes.conf'\n  port: 2\n}\nafter: $user")
        .file("conf/auth.conf", "user: alice\npass: secret\n")
        .file("conf/sub/routes.conf", "routes: [a, b]\n");
    let m = load("conf/main.conf", &res).unwrap();
    assert_eq!(
        show(&m),
        r#"{port: 1, user: "alice", pass: "secret", cluster: {routes: ["a", "b"], port: 2}, after: "alice"}"#
    );
    // Included values keep the included file's positions.
    let user = m.get("user").unwrap();
    assert_eq!(user.key_pos.to_string(), "conf/auth.conf:1:1");
    assert_eq!(user.value.pos.to_string(), "conf/auth.conf:1:7");
}

#[test]
fn include_forms() {
    let res = MemResolver::new()
        .file("a.conf", "a: 1")
        .file("b c.conf", "b: 2");
    assert_eq!(ok_with("include a.conf", &res), "{a: 1}");
    assert_eq!(ok_with("INCLUDE \"a.conf\"", &res), "{a: 1}");
    assert_eq!(ok_with("include 'b c.conf'", &res), "{b: 2}");
    assert_eq!(ok_with("include\ta.conf ; x: 1", &res), "{a: 1, x: 1}");
    assert_eq!(ok_with("include a.conf # comment", &res), "{a: 1}");
    assert_eq!(ok_with("m { include a.conf }", &res), "{m: {a: 1}}");
    assert_eq!(
        ok_with("m {include a.conf; x: 2}", &res),
        "{m: {a: 1, x: 2}}"
    );
    // `include` followed by a separator is an ordinary key.
    assert_eq!(ok_with("include: a.conf", &res), r#"{include: "a.conf"}"#);
    assert_eq!(ok_with("'include' a.conf", &res), r#"{include: "a.conf"}"#);
    // Later keys override included ones and the other way round.
    assert_eq!(ok_with("a: 0\ninclude a.conf", &res), "{a: 1}");
    assert_eq!(ok_with("include a.conf\na: 2", &res), "{a: 2}");
}

#[test]
fn included_files_do_not_see_the_includers_keys() {
    let res = MemResolver::new().file("a.conf", "b: $x").env("x", "env");
    // As in gnatsd, an included file is parsed on its own: only its keys and the environment.
    assert_eq!(
        ok_with("x: file\ninclude a.conf", &res),
        r#"{x: "file", b: "env"}"#
    );
    let res = MemResolver::new().file("a.conf", "b: $x");
    assert_eq!(
        err_with("x: 1\ninclude a.conf", &res),
        "a.conf:1:4: key \"b\": variable reference for \"x\" can not be found (no earlier key in an enclosing map, no environment variable)"
    );
}

#[test]
fn include_errors() {
    let res = MemResolver::new()
        .file("a.conf", "include b.conf")
        .file("b.conf", "include ./a.conf")
        .file("self.conf", "x: 1\ninclude self.conf")
        .file("bad.conf", "x: [1");
    assert_eq!(
        err_with("include nope.conf", &res),
        "gnatsd.conf:1:9: can not include \"nope.conf\": no such file"
    );
    assert_eq!(
        err_with("include a.conf", &res),
        "b.conf:1:9: include \"./a.conf\" forms a cycle (the file is already being read)"
    );
    assert_eq!(
        err_with("include self.conf", &res),
        "self.conf:2:9: include \"self.conf\" forms a cycle (the file is already being read)"
    );
    assert_eq!(
        err_with("include gnatsd.conf", &res),
        "gnatsd.conf:1:9: include \"gnatsd.conf\" forms a cycle (the file is already being read)"
    );
    assert_eq!(
        err_with("m {\ninclude bad.conf\n}", &res),
        "bad.conf:1:4: key \"x\": array opened here is never closed (no ']')"
    );
    // A key of the including file is not named for an error inside the included one.
    let res = res.file("syntax.conf", "x = 1 2");
    assert_eq!(
        err_with("m {\ninclude syntax.conf\n}", &res),
        "syntax.conf:1:7: expected a new line, ';', ',' or a comment after the value, found '2'"
    );
    assert_eq!(
        err("include [a]"),
        "gnatsd.conf:1:9: expected an include path, found '['"
    );
    assert_eq!(
        err("include {a}"),
        "gnatsd.conf:1:9: expected an include path, found '{'"
    );
    assert_eq!(
        err("include (a)"),
        "gnatsd.conf:1:9: expected an include path, found '('"
    );
    assert_eq!(
        err("include \\a"),
        "gnatsd.conf:1:9: expected an include path, found '\\'"
    );
    assert_eq!(
        err("include \n"),
        "gnatsd.conf:1:9: expected an include path, found new line"
    );
    assert_eq!(
        err("include \"a"),
        "gnatsd.conf:1:9: unterminated include path"
    );
    assert_eq!(
        err_with("include x.conf b", &MemResolver::new().file("x.conf", "")),
        "gnatsd.conf:1:16: expected a new line, ';', ',' or a comment after the value, found 'b'"
    );
}

#[test]
fn include_depth_and_count_are_bounded() {
    let mut res = MemResolver::new();
    for i in 0..40 {
        res = res.file(
            &format!("{i}.conf"),
            &format!("k{i}: {i}\ninclude {}.conf", i + 1),
        );
    }
    let e = err_with("include 0.conf", &res);
    assert_eq!(
        e,
        format!(
            "{}.conf:2:9: includes nest deeper than {MAX_INCLUDE_DEPTH} files",
            MAX_INCLUDE_DEPTH - 1
        )
    );
    // Exactly the limit is fine.
    let res = res.file(&format!("{}.conf", MAX_INCLUDE_DEPTH - 1), "end: 1");
    let m = parse_with("include 0.conf", &res).unwrap();
    assert_eq!(m.len(), MAX_INCLUDE_DEPTH);

    let res = MemResolver::new().file("e.conf", "");
    let many = "include e.conf\n".repeat(MAX_INCLUDES);
    assert_eq!(ok_with(&many, &res), "{}");
    let e = err_with(&format!("{many}include e.conf"), &res);
    assert_eq!(
        e,
        format!(
            "gnatsd.conf:{}:9: more than {MAX_INCLUDES} includes",
            MAX_INCLUDES + 1
        )
    );
}

#[test]
fn reading_the_main_file() {
    let res = MemResolver::new().file("a.conf", "port: 1");
    assert_eq!(show(&load("a.conf", &res).unwrap()), "{port: 1}");
    assert_eq!(
        load("missing.conf", &res).unwrap_err().to_string(),
        "missing.conf: can not read config file: no such file"
    );
}

#[test]
fn parse_file_reads_from_disk() {
    let dir = std::env::temp_dir().join(format!("ringnats-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("main.conf"), "port: 4222\ninclude sub/auth.conf\n").unwrap();
    std::fs::write(
        dir.join("sub/auth.conf"),
        "authorization { user: a, password: b }\n",
    )
    .unwrap();
    let m = parse_file(dir.join("main.conf"));
    let missing = parse_file(dir.join("missing.conf"));
    std::fs::remove_dir_all(&dir).unwrap();
    let m = m.unwrap();
    assert_eq!(
        show(&m),
        r#"{port: 4222, authorization: {user: "a", password: "b"}}"#
    );
    let auth = m.get("authorization").unwrap();
    assert!(
        auth.key_pos.file.ends_with("/sub/auth.conf"),
        "{}",
        auth.key_pos.file
    );
    let e = missing.unwrap_err().to_string();
    assert!(
        e.ends_with(
            "missing.conf: can not read config file: No such file or directory (os error 2)"
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Syntax errors, one test per class, exact messages
// ---------------------------------------------------------------------------------------------

#[test]
fn syntax_error_messages() {
    let cases = [
        ("a = 1 b", "gnatsd.conf:1:7: expected a new line, ';', ',' or a comment after the value, found 'b'"),
        ("a = {} {}", "gnatsd.conf:1:8: expected a new line, ';', ',' or a comment after the value, found '{'"),
        ("a =\nb = 1", "gnatsd.conf:1:4: key \"a\": expected a value, found new line"),
        ("a", "gnatsd.conf:1:2: key \"a\": expected a value, found end of file"),
        ("a =", "gnatsd.conf:1:4: key \"a\": expected a value, found end of file"),
        ("= 1", "gnatsd.conf:1:1: expected a key, found '='"),
        (": 1", "gnatsd.conf:1:1: expected a key, found ':'"),
        ("[1]", "gnatsd.conf:1:1: expected a key, found '['"),
        ("m { a = 1 b = 2 }", "gnatsd.conf:1:11: key \"m\": expected ',', ';', a new line or '}' after a map value, found 'b'"),
        ("m { a }", "gnatsd.conf:1:7: key \"a\": expected a value, found '}'"),
        ("m { a = , }", "gnatsd.conf:1:9: key \"a\": expected a value, found ','"),
        ("m { ] }", "gnatsd.conf:1:5: key \"m\": expected a key or '}', found ']'"),
        ("m { = 1 }", "gnatsd.conf:1:5: key \"m\": expected a key, found '='"),
        ("m { { } }", "gnatsd.conf:1:5: key \"m\": expected a key, found '{'"),
        ("a = [1,,2]", "gnatsd.conf:1:8: key \"a\": expected a value or ']', found ','"),
        ("a = [,]", "gnatsd.conf:1:6: key \"a\": expected a value or ']', found ','"),
        ("a = [1 2]", "gnatsd.conf:1:8: key \"a\": expected ',', a new line or ']' after an array value, found '2'"),
        ("a = [1; 2]", "gnatsd.conf:1:7: key \"a\": expected ',', a new line or ']' after an array value, found ';'"),
        ("a = [1}", "gnatsd.conf:1:7: key \"a\": expected ',', a new line or ']' after an array value, found '}'"),
        ("a = 1 \u{1}", "gnatsd.conf:1:7: expected a new line, ';', ',' or a comment after the value, found '\\u{1}'"),
    ];
    for (text, want) in cases {
        assert_eq!(err(text), want, "{text:?}");
    }
}

#[test]
fn unterminated_and_unclosed() {
    let cases = [
        (
            "a = \"abc",
            "gnatsd.conf:1:5: key \"a\": unterminated double-quoted string",
        ),
        (
            "a = \"abc\\",
            "gnatsd.conf:1:5: key \"a\": unterminated double-quoted string",
        ),
        (
            "a = 'abc",
            "gnatsd.conf:1:5: key \"a\": unterminated single-quoted string",
        ),
        (
            "a = (\nabc\n  )",
            "gnatsd.conf:1:5: key \"a\": unterminated block string",
        ),
        (
            "a = (abc)",
            "gnatsd.conf:1:5: key \"a\": unterminated block string",
        ),
        ("\"abc = 1", "gnatsd.conf:1:1: unterminated quoted key"),
        (
            "m { 'abc = 1 }",
            "gnatsd.conf:1:5: key \"m\": unterminated quoted key",
        ),
        (
            "m {\n  a = 1\n",
            "gnatsd.conf:1:3: key \"m\": map opened here is never closed (no '}')",
        ),
        (
            "m { a = 1",
            "gnatsd.conf:1:3: key \"m\": map opened here is never closed (no '}')",
        ),
        (
            "a = [1, 2",
            "gnatsd.conf:1:5: key \"a\": array opened here is never closed (no ']')",
        ),
        (
            "a = [1,\n",
            "gnatsd.conf:1:5: key \"a\": array opened here is never closed (no ']')",
        ),
        (
            "a { b { c = [ { d = 1 }",
            "gnatsd.conf:1:13: key \"c\": array opened here is never closed (no ']')",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(text), want, "{text:?}");
    }
}

#[test]
fn escape_and_number_errors() {
    let cases = [
        (
            r#"a = "\q""#,
            r#"gnatsd.conf:1:6: key "a": invalid escape: '\' followed by 'q'; only \xHH, \t, \n, \r, \" and \\ are allowed"#,
        ),
        (
            "a = x\\",
            r#"gnatsd.conf:1:6: key "a": invalid escape: '\' followed by end of file; only \xHH, \t, \n, \r, \" and \\ are allowed"#,
        ),
        (
            "a = \"\\\n\"",
            r#"gnatsd.conf:1:6: key "a": invalid escape: '\' followed by new line; only \xHH, \t, \n, \r, \" and \\ are allowed"#,
        ),
        (
            "a = C:\\path",
            r#"gnatsd.conf:1:7: key "a": invalid escape: '\' followed by 'p'; only \xHH, \t, \n, \r, \" and \\ are allowed"#,
        ),
        (
            r#"a = "\xZZ""#,
            r#"gnatsd.conf:1:6: key "a": expected two hexadecimal digits after '\x', found "ZZ""#,
        ),
        (
            r#"a = "\x4""#,
            r#"gnatsd.conf:1:6: key "a": expected two hexadecimal digits after '\x', found "4\"""#,
        ),
        (
            "a = \"\\x4\n\"",
            r#"gnatsd.conf:1:6: key "a": expected two hexadecimal digits after '\x', found "4""#,
        ),
        (
            r#"a = "\x+f""#,
            r#"gnatsd.conf:1:6: key "a": expected two hexadecimal digits after '\x', found "+f""#,
        ),
        (
            r#"a = "\xff""#,
            r#"gnatsd.conf:1:5: key "a": the \x escapes of this string are not valid UTF-8"#,
        ),
        (
            "a = .5",
            "gnatsd.conf:1:5: key \"a\": a float must start with a digit, not '.'",
        ),
        (
            "a = [.5]",
            "gnatsd.conf:1:6: key \"a\": a float must start with a digit, not '.'",
        ),
        (
            "a = 9223372036854775808",
            "gnatsd.conf:1:5: key \"a\": integer \"9223372036854775808\" is out of range",
        ),
        (
            "a = -9223372036854775809",
            "gnatsd.conf:1:5: key \"a\": integer \"-9223372036854775809\" is out of range",
        ),
        (
            "a = 9eb",
            "gnatsd.conf:1:5: key \"a\": integer \"9eb\" is out of range",
        ),
        (
            "a = 10000000000G",
            "gnatsd.conf:1:5: key \"a\": integer \"10000000000G\" is out of range",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(text), want, "{text:?}");
    }
    let huge = format!("a = 1{}.0", "0".repeat(400));
    assert_eq!(
        err(&huge),
        format!(
            "gnatsd.conf:1:5: key \"a\": float \"1{}.0\" is out of range",
            "0".repeat(400)
        )
    );
}

#[test]
fn nesting_is_bounded() {
    let depth = MAX_DEPTH as usize;
    let ok_text = format!("a = {}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(parse(&ok_text, FILE, &MemResolver::new()).is_ok());
    let ok_maps = format!("a {{{}x: 1{}", "b {".repeat(depth - 1), "}".repeat(depth));
    assert!(
        parse(&ok_maps, FILE, &MemResolver::new()).is_ok(),
        "{ok_maps}"
    );
    let deep = format!("a = {}{}", "[".repeat(depth + 1), "]".repeat(depth + 1));
    assert_eq!(
        err(&deep),
        format!(
            "gnatsd.conf:1:{}: key \"a\": maps and arrays nest deeper than 64 levels",
            5 + depth
        )
    );
    // Unclosed and very deep: the depth error comes first, at a bounded recursion.
    assert!(err(&format!("a={}", "[".repeat(100_000))).contains("nest deeper than 64 levels"));
    // Through variables too: a deep value copied into a deep place.
    let half = depth / 2 + 1;
    let text = format!(
        "v = {}{}\nw = {}$v{}",
        "[".repeat(half),
        "]".repeat(half),
        "[".repeat(half),
        "]".repeat(half)
    );
    assert!(
        err(&text).contains("nest deeper than 64 levels"),
        "{}",
        err(&text)
    );
    // And through includes: an included file sits at the depth of the including map.
    let res = MemResolver::new().file(
        "deep.conf",
        &format!("x = {}{}", "[".repeat(depth), "]".repeat(depth)),
    );
    assert!(parse_with("include deep.conf", &res).is_ok());
    assert!(err_with("m { include deep.conf }", &res).contains("nest deeper than 64 levels"));
}

#[test]
fn values_are_bounded() {
    // Each line doubles the size: 2^30 values without the bound.
    let mut text = String::from("v0 = [1, 1]\n");
    for i in 1..30 {
        text.push_str(&format!("v{i} = [$v{}, $v{}]\n", i - 1, i - 1));
    }
    let e = err(&text);
    assert!(
        e.ends_with(&format!(
            "more than {MAX_VALUES} values in the configuration"
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Example configs
// ---------------------------------------------------------------------------------------------

const CLUSTER_CONF: &str = r#"
# Cluster Server A

listen: 127.0.0.1:4222
http: 8222

cluster {
  listen: 127.0.0.1:4244

  authorization {
    user: route_user
    password: top_secret
    timeout: 0.5
  }

  # Routes are actively solicited and connected to from this server.
  # Other servers can connect to us if they supply the correct credentials
  # in their routes definitions from above.
  routes = [
    nats-route://route_user:top_secret@127.0.0.1:4245
    nats-route://route_user:top_secret@127.0.0.1:4246
  ]
  no_advertise: true
  connect_retries: 30
}
"#;

#[test]
fn example_cluster_conf() {
    let m = parse(CLUSTER_CONF, FILE, &MemResolver::new()).unwrap();
    assert_eq!(m.get_str("listen"), Ok(Some("127.0.0.1:4222")));
    assert_eq!(m.get_int("http"), Ok(Some(8222)));
    let cluster = m.get_map("cluster").unwrap().unwrap();
    assert_eq!(cluster.get_str("listen"), Ok(Some("127.0.0.1:4244")));
    let auth = cluster.get_map("authorization").unwrap().unwrap();
    assert_eq!(auth.get_str("user"), Ok(Some("route_user")));
    assert_eq!(auth.get_str("password"), Ok(Some("top_secret")));
    assert_eq!(auth.get_float("timeout"), Ok(Some(0.5)));
    let routes: Vec<&str> = cluster
        .get_array("routes")
        .unwrap()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            "nats-route://route_user:top_secret@127.0.0.1:4245",
            "nats-route://route_user:top_secret@127.0.0.1:4246"
        ]
    );
    assert_eq!(cluster.get_bool("no_advertise"), Ok(Some(true)));
    assert_eq!(cluster.get_int("connect_retries"), Ok(Some(30)));
    let routes_pos = &cluster.get("routes").unwrap().value.pos;
    assert_eq!(routes_pos.to_string(), "gnatsd.conf:19:12");
}

const SERVER_CONF: &str = r#"
# gnatsd configuration with most 1.0 keys

port: 4242      # port to listen for client connections
net: apcera.me  # net interface to listen

http_port: 8222

authorization {
  user:     derek
  password: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG
  timeout:  1
}

# logging options
debug:   false
trace:   true
logtime: false
log_file: "/tmp/gnatsd.log"
pid_file: '/tmp/gnatsd.pid'
syslog: no
remote_syslog: "udp://foo.com:33"

# Some system overides

# max_connections
max_connections: 100

# max_control_line
max_control_line: 2048

# maximum payload
max_payload: 1MB

# ping interval and no pong threshold
ping_interval: 60
ping_max: 3

# how long server can block on a socket write to a client
write_deadline: "3s"

tls {
  # Server cert
  cert_file: "./configs/certs/server-cert.pem"
  # Server private key
  key_file:  "./configs/certs/server-key.pem"
  # Specified time for handshake to complete
  timeout: 2
  # Optional certificate authority for clients
  ca_file:   "./configs/certs/ca.pem"
  # Require a client certificate
  verify:    true

  cipher_suites: [
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
  ]
  curve_preferences: ["CurveP256", "CurveP384"]
}
"#;

#[test]
fn example_server_conf() {
    let m = parse(SERVER_CONF, FILE, &MemResolver::new()).unwrap();
    assert_eq!(m.get_int("port"), Ok(Some(4242)));
    assert_eq!(m.get_str("net"), Ok(Some("apcera.me")));
    assert_eq!(m.get_int("http_port"), Ok(Some(8222)));
    let auth = m.get_map("authorization").unwrap().unwrap();
    assert_eq!(
        auth.get_str("password"),
        Ok(Some(
            "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
        ))
    );
    assert_eq!(auth.get_float("timeout"), Ok(Some(1.0)));
    assert_eq!(m.get_bool("debug"), Ok(Some(false)));
    assert_eq!(m.get_bool("trace"), Ok(Some(true)));
    assert_eq!(m.get_bool("logtime"), Ok(Some(false)));
    assert_eq!(m.get_str("log_file"), Ok(Some("/tmp/gnatsd.log")));
    assert_eq!(m.get_str("pid_file"), Ok(Some("/tmp/gnatsd.pid")));
    assert_eq!(m.get_bool("syslog"), Ok(Some(false)));
    assert_eq!(m.get_str("remote_syslog"), Ok(Some("udp://foo.com:33")));
    assert_eq!(m.get_int("max_connections"), Ok(Some(100)));
    assert_eq!(m.get_int("max_control_line"), Ok(Some(2048)));
    assert_eq!(m.get_size("max_payload"), Ok(Some(1024 * 1024)));
    assert_eq!(m.get_int("max_payload"), Ok(Some(1024 * 1024)));
    assert_eq!(
        m.get_duration("ping_interval"),
        Ok(Some(Duration::from_secs(60)))
    );
    assert_eq!(m.get_int("ping_max"), Ok(Some(3)));
    assert_eq!(
        m.get_duration("write_deadline"),
        Ok(Some(Duration::from_secs(3)))
    );
    let tls = m.get_map("tls").unwrap().unwrap();
    assert_eq!(
        tls.get_str("cert_file"),
        Ok(Some("./configs/certs/server-cert.pem"))
    );
    assert_eq!(
        tls.get_str("key_file"),
        Ok(Some("./configs/certs/server-key.pem"))
    );
    assert_eq!(tls.get_str("ca_file"), Ok(Some("./configs/certs/ca.pem")));
    assert_eq!(tls.get_float("timeout"), Ok(Some(2.0)));
    assert_eq!(tls.get_bool("verify"), Ok(Some(true)));
    assert_eq!(tls.get_array("cipher_suites").unwrap().unwrap().len(), 2);
    assert_eq!(
        tls.get_array("curve_preferences").unwrap().unwrap()[1].as_str(),
        Ok("CurveP384")
    );
}

#[test]
fn example_with_includes_and_sizes() {
    let res = MemResolver::new()
        .file(
            "/etc/nats/gnatsd.conf",
            "listen: 0.0.0.0:4222\nmax_payload: 64KB\nmax_control_line: 4k\n\
             authorization {\n  include \"users.conf\"\n  timeout: 2\n}\n",
        )
        .file(
            "/etc/nats/users.conf",
            "# generated\nPUB_ONLY = { publish: [\"metrics.>\"] }\nusers = [\n  { user: svc, password: \"p@ss\", permissions: $PUB_ONLY }\n  { user: ops, password: $OPS_PASS }\n]\n",
        )
        .env("OPS_PASS", "'from env'");
    let m = load("/etc/nats/gnatsd.conf", &res).unwrap();
    assert_eq!(m.get_size("max_payload"), Ok(Some(65536)));
    assert_eq!(m.get_int("max_control_line"), Ok(Some(4000)));
    let auth = m.get_map("authorization").unwrap().unwrap();
    let users = auth.get_array("users").unwrap().unwrap();
    assert_eq!(
        show_value(&users[0]),
        r#"{user: "svc", password: "p@ss", permissions: {publish: ["metrics.>"]}}"#
    );
    assert_eq!(
        users[1].as_map().unwrap().get_str("password"),
        Ok(Some("from env"))
    );
    assert_eq!(users[1].pos.to_string(), "/etc/nats/users.conf:5:3");
    let bad = users[0].as_map().unwrap().get_int("user").unwrap_err();
    assert_eq!(
        bad.to_string(),
        "/etc/nats/users.conf:4:11: key \"user\": expected an integer, got string"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// A tree without positions, for generating configs.
#[derive(Debug, Clone, PartialEq)]
enum Plain {
    Map(Vec<(String, Plain)>),
    Array(Vec<Plain>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

fn plain(v: &Value) -> Plain {
    match &v.kind {
        ValueKind::Map(m) => plain_map(m),
        ValueKind::Array(a) => Plain::Array(a.iter().map(plain).collect()),
        ValueKind::String(s) => Plain::Str(s.clone()),
        ValueKind::Int(n) => Plain::Int(*n),
        ValueKind::Float(f) => Plain::Float(*f),
        ValueKind::Bool(b) => Plain::Bool(*b),
    }
}

fn plain_map(m: &Map) -> Plain {
    Plain::Map(m.iter().map(|e| (e.key.clone(), plain(&e.value))).collect())
}

/// A small deterministic generator for the writer's style choices.
struct Styles(u64);

impl Styles {
    fn pick(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn is_plain_word(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-./@".contains(c))
        && !["true", "false", "yes", "no", "on", "off"].contains(&s.to_ascii_lowercase().as_str())
}

fn write_key(k: &str, st: &mut Styles, out: &mut String) {
    let bare =
        is_plain_word(k) && !k.contains(['.', '@', '/']) && !k.eq_ignore_ascii_case("include");
    match st.pick(3) {
        0 if bare => out.push_str(k),
        1 if !k.contains('\'') => out.push_str(&format!("'{k}'")),
        _ => out.push_str(&format!("\"{k}\"")),
    }
}

fn write_value(v: &Plain, st: &mut Styles, indent: usize, out: &mut String) {
    match v {
        Plain::Map(entries) => {
            out.push('{');
            write_entries(entries, st, indent + 2, false, out);
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            out.push('}');
        }
        Plain::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if st.pick(2) == 0 { "," } else { "\n" });
                }
                if st.pick(4) == 0 {
                    out.push_str(" # a comment\n");
                }
                out.push(' ');
                write_value(item, st, indent + 2, out);
            }
            if !items.is_empty() && st.pick(3) == 0 {
                out.push(',');
            }
            out.push_str(" ]");
        }
        Plain::Str(s) => match st.pick(3) {
            0 if is_plain_word(s) => out.push_str(s),
            1 if !s.contains('\'') => out.push_str(&format!("'{s}'")),
            _ => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        '\r' => out.push_str("\\r"),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
        },
        Plain::Int(n) => out.push_str(&n.to_string()),
        Plain::Float(f) => out.push_str(&format!("{f:?}")),
        Plain::Bool(b) => {
            let words = if *b {
                ["true", "TRUE", "yes", "On"]
            } else {
                ["false", "False", "no", "OFF"]
            };
            out.push_str(words[st.pick(4) as usize]);
        }
    }
}

fn write_entries(
    entries: &[(String, Plain)],
    st: &mut Styles,
    indent: usize,
    top: bool,
    out: &mut String,
) {
    for (k, v) in entries {
        out.push('\n');
        if st.pick(4) == 0 {
            out.push_str(&" ".repeat(indent));
            out.push_str(if st.pick(2) == 0 {
                "# comment\n"
            } else {
                "// comment\n"
            });
        }
        out.push_str(&" ".repeat(indent));
        write_key(k, st, out);
        let sep = [" = ", ": ", " ", "=", ":", "\t"][st.pick(6) as usize];
        out.push_str(sep);
        write_value(v, st, indent, out);
        match st.pick(if top { 3 } else { 4 }) {
            0 => out.push(';'),
            1 => out.push_str(" # trailing"),
            2 if !top => out.push(','),
            _ => {}
        }
    }
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z_][a-zA-Z0-9_]{0,8}", "[a-z0-9 .:=,;{}\\[\\]-]{1,8}"]
}

fn map_strategy(
    inner: impl Strategy<Value = Plain>,
) -> impl Strategy<Value = Vec<(String, Plain)>> {
    prop::collection::vec((key_strategy(), inner), 0..6).prop_map(|entries| {
        let mut seen = std::collections::HashSet::new();
        entries
            .into_iter()
            .filter(|(k, _)| seen.insert(k.clone()))
            .collect()
    })
}

fn plain_strategy() -> impl Strategy<Value = Plain> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Plain::Int),
        (-1_000_000i32..1_000_000).prop_map(|n| Plain::Float(f64::from(n) / 8.0)),
        any::<bool>().prop_map(Plain::Bool),
        "(\\PC|[\t\n\r]){0,12}".prop_map(Plain::Str),
        "[a-z][a-z0-9.-]{0,8}".prop_map(Plain::Str),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Plain::Array),
            map_strategy(inner).prop_map(Plain::Map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any tree, written in any mix of the syntax's styles, parses back to itself.
    #[test]
    fn written_trees_parse_back(entries in map_strategy(plain_strategy()), seed in 1u64..) {
        let mut text = String::new();
        write_entries(&entries, &mut Styles(seed), 0, true, &mut text);
        let parsed = parse(&text, FILE, &MemResolver::new());
        prop_assert!(parsed.is_ok(), "{}\n---\n{}", parsed.unwrap_err(), text);
        prop_assert_eq!(plain_map(&parsed.unwrap()), Plain::Map(entries), "{}", text);
    }

    /// Arbitrary text over the syntax's alphabet: a tree or an error, never a panic, and the
    /// error's position lies inside the text.
    #[test]
    fn arbitrary_text_never_panics(text in "[a-z0-9 \t\n{}\\[\\]=:,;#/\"'()$.\\\\-]{0,80}") {
        let res = MemResolver::new().file("a", "x: 1").env("E", "[1, {a: $E2}]").env("E2", "2");
        match parse(&text, FILE, &res) {
            Ok(m) => { let _ = show(&m); }
            Err(e) => {
                let lines = text.split('\n').count() as u32;
                prop_assert!(e.pos.line >= 1 && e.pos.line <= lines, "{e} in {text:?}");
                let _ = e.to_string();
            }
        }
    }

    /// Sizes written with a suffix read back as the number times the factor.
    #[test]
    fn size_suffixes_multiply(n in 0i64..1_000_000, suffix in prop::sample::select(vec!["", "k", "K", "kb", "KB", "m", "mb", "MB", "g", "gb"])) {
        let m = parse(&format!("s: {n}{suffix}"), FILE, &MemResolver::new()).unwrap();
        let want = n * size_multiplier(suffix).unwrap();
        prop_assert_eq!(m.get_int("s"), Ok(Some(want)));
        prop_assert_eq!(m.get_size("s"), Ok(Some(want as u64)));
        prop_assert_eq!(parse_size(&format!("{n}{suffix}")), Some(want));
    }
}
