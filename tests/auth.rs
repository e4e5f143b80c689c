//! Authorization through the real binary and raw sockets: bcrypt users, permissions, the
//! CONNECT that waits for bcrypt (no stall of other clients, pipelined input kept in order),
//! secrets kept out of the trace, and route authorization with a bcrypt cluster password.

#[path = "common/process.rs"]
mod process;

use process::{poll, BIN};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server started from a config file; killed on drop.
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

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    /// Starts `ringnats -c <conf>` on a free client port with `extra` flags; the log goes to
    /// a file ([`Server::log`]).
    fn start(name: &str, conf: &str, extra: &[&str]) -> Server {
        let dir = std::env::temp_dir().join(format!("ringnats-auth-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf_path = dir.join("gnatsd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let port = free_port();
        let child = Command::new(BIN)
            .args(["-c", conf_path.to_str().unwrap()])
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn ringnats");
        let server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.log().contains("Server is ready") {
            assert!(Instant::now() < deadline, "not ready: {}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// A raw client that has read the INFO line.
    fn raw(&self) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let info = r.line();
        assert!(info.starts_with("INFO {"), "{info}");
        assert!(info.contains("\"auth_required\":true"), "{info}");
        r
    }
}

struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn send(&mut self, bytes: &str) {
        self.w.write_all(bytes.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }

    /// Reads exactly `want.len()` bytes and compares them.
    fn expect(&mut self, want: &str) {
        let mut got = vec![0u8; want.len()];
        self.r.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want);
    }

    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let n = self.r.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "{}", String::from_utf8_lossy(&rest));
    }
}

fn connect(user: &str, pass: &str, verbose: bool) -> String {
    format!("CONNECT {{\"verbose\":{verbose},\"pedantic\":false,\"user\":\"{user}\",\"pass\":\"{pass}\"}}\r\n")
}

fn users_conf(hash: &str) -> String {
    format!(
        "authorization {{\n  timeout: 10\n  users = [\n    \
         {{user: alice, password: \"{hash}\", permissions: {{publish: \"foo.*\", subscribe: \"foo.>\"}}}}\n    \
         {{user: bob, password: plainpw}}\n  ]\n}}\n"
    )
}

#[test]
fn bcrypt_user_connects_wrong_password_is_refused_and_secrets_stay_out_of_the_trace() {
    let hash = bcrypt::hash("alicepw", 6).unwrap();
    let s = Server::start("basic", &users_conf(&hash), &["-V"]);
    // Right password, twice (the second answered from the verification cache).
    for _ in 0..2 {
        let mut c = s.raw();
        c.send(&connect("alice", "alicepw", true));
        c.expect("+OK\r\n");
        c.send("PUB foo.bar 1\r\nx\r\nPUB bar 1\r\nx\r\nSUB foo.bar.* 1\r\nSUB foo 2\r\nPING\r\n");
        c.expect(
            "+OK\r\n-ERR 'Permissions Violation for Publish to \"bar\"'\r\n+OK\r\n\
             -ERR 'Permissions Violation for Subscription to \"foo\"'\r\nPONG\r\n",
        );
    }
    // Wrong password (bcrypt), wrong plain password, unknown user: refused and closed.
    for (user, pass) in [("alice", "nope"), ("bob", "nope"), ("eve", "plainpw")] {
        let mut c = s.raw();
        c.send(&connect(user, pass, true));
        c.expect("-ERR 'Authorization Violation'\r\n");
        c.expect_eof();
    }
    // All three rejections are logged (naming the user). The logger writes on its own
    // thread, so its lines may trail the -ERR the client already saw.
    let log = poll(
        Duration::from_secs(10),
        "three rejections in the log",
        || {
            let log = s.log();
            (log.matches("Authorization Error").count() >= 3).then_some(log)
        },
    );
    assert_eq!(log.matches("Authorization Error").count(), 3, "{log}");
    assert!(
        log.contains("Authorization Error - User \"alice\""),
        "{log}"
    );
    assert!(log.contains("[REDACTED]"), "{log}");
    for secret in ["alicepw", "plainpw", "nope"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[test]
fn pipelined_input_after_a_bcrypt_connect_is_processed_in_order() {
    let hash = bcrypt::hash("alicepw", 6).unwrap();
    let s = Server::start("pipelined", &users_conf(&hash), &[]);
    let mut c = s.raw();
    // One write: the CONNECT pauses the parser; what follows waits for the verdict.
    let mut burst = connect("alice", "alicepw", false);
    burst.push_str("SUB foo.a 1\r\nPUB foo.a 2\r\nhi\r\nPUB nope 0\r\n\r\nPING\r\n");
    c.send(&burst);
    c.expect(
        "MSG foo.a 1 2\r\nhi\r\n-ERR 'Permissions Violation for Publish to \"nope\"'\r\nPONG\r\n",
    );
    // A wrong password with pipelined ops: none of them runs.
    let mut bad = s.raw();
    let mut burst = connect("alice", "wrong", false);
    burst.push_str("PUB foo.a 5\r\nleak!\r\nPING\r\n");
    bad.send(&burst);
    bad.expect("-ERR 'Authorization Violation'\r\n");
    bad.expect_eof();
    c.send("PING\r\n");
    c.expect("PONG\r\n");
}

#[test]
fn pending_bcrypt_verifications_do_not_stall_other_clients() {
    // Cost 12 takes a few hundred ms per check: several of them keep both pool threads busy
    // for a while, during which bob (plain password, same reactor) must be served at once.
    // One check's duration on this machine right now (hashing costs the same as verifying):
    // the bounds below scale with it, so a loaded machine does not make the test flaky,
    // while a reactor that ran a check itself would still stall bob for a whole check.
    let t0 = Instant::now();
    let hash = bcrypt::hash("alicepw", 12).unwrap();
    let check = t0.elapsed();
    let s = Server::start("nostall", &users_conf(&hash), &["--workers", "1"]);
    let mut bob = s.raw();
    bob.send(&connect("bob", "plainpw", false));
    bob.send("SUB tick 1\r\nPING\r\n");
    bob.expect("PONG\r\n");
    let start = Instant::now();
    let mut pending: Vec<Raw> = (0..4)
        .map(|_| {
            let mut c = s.raw();
            // Wrong passwords: the cache cannot answer, each one is a real bcrypt check.
            let mut burst = connect("alice", "wrong", false);
            burst.push_str("PING\r\n");
            c.send(&burst);
            c
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut rounds = 0;
    while start.elapsed() < check {
        let t = Instant::now();
        bob.send("PUB tick 1\r\nx\r\nPING\r\n");
        bob.expect("MSG tick 1 1\r\nx\r\nPONG\r\n");
        worst = worst.max(t.elapsed());
        rounds += 1;
    }
    for c in &mut pending {
        c.expect("-ERR 'Authorization Violation'\r\n");
        c.expect_eof();
    }
    let all_done = start.elapsed();
    assert!(rounds >= 10, "{rounds} round trips");
    assert!(
        all_done > check,
        "the verifications overlapped the round trips ({all_done:?})"
    );
    assert!(
        worst < check * 6 / 10,
        "worst round trip {worst:?} while bcrypt was pending (one check takes {check:?})"
    );
}

#[test]
fn route_authorization_with_a_bcrypt_cluster_password() {
    let hash = bcrypt::hash("routepw", 6).unwrap();
    let route_port = free_port();
    let conf = format!(
        "cluster {{\n  listen: 127.0.0.1:{route_port}\n  \
         authorization {{ user: ruser, password: \"{hash}\", timeout: 5 }}\n}}\n\
         authorization {{ users = [ {{user: bob, password: plainpw}} ] }}\n"
    );
    let s = Server::start("route", &conf, &[]);
    let route = |user: &str, pass: &str| {
        let st = TcpStream::connect(("127.0.0.1", route_port)).unwrap();
        st.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = Raw {
            r: BufReader::new(st.try_clone().unwrap()),
            w: st,
        };
        let info = r.line();
        assert!(info.contains("\"auth_required\":true"), "{info}");
        // CONNECT and INFO in one write: the INFO waits for the verdict.
        r.send(&format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"user\":\"{user}\",\"pass\":\"{pass}\",\"name\":\"FAKE\"}}\r\n\
             INFO {{\"server_id\":\"FAKE\",\"host\":\"127.0.0.1\",\"port\":1,\"auth_required\":false,\"max_payload\":1048576}}\r\n"
        ));
        r
    };
    let mut bad = route("ruser", "wrong");
    bad.expect("-ERR 'Authorization Violation'\r\n");
    bad.expect_eof();
    let mut good = route("ruser", "routepw");
    // Registered: a client's subscription on the server is forwarded to the route.
    let mut c = s.raw();
    c.send(&connect("bob", "plainpw", false));
    c.send("SUB foo 1\r\nPING\r\n");
    c.expect("PONG\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = good.line();
        if l.starts_with("SUB foo ") {
            break;
        }
        assert!(
            !l.is_empty() && Instant::now() < deadline,
            "no SUB on the route: {l:?}"
        );
    }
    let log = s.log();
    assert!(!log.contains("routepw"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_bcrypt_user_requests_within_its_permissions() {
    use futures::StreamExt;
    let t = Duration::from_secs(10);
    let hash = bcrypt::hash("carolpw", 6).unwrap();
    let conf = format!(
        "authorization {{\n  users = [\n    \
         {{user: carol, password: \"{hash}\", permissions: {{publish: \"svc.*\", subscribe: \"_INBOX.>\"}}}}\n    \
         {{user: bob, password: plainpw}}\n  ]\n}}\n"
    );
    let s = Server::start("asyncnats", &conf, &[]);
    let url = format!("nats://127.0.0.1:{}", s.port);
    let connect = |user: &'static str, pass: &'static str| {
        let url = url.clone();
        async move {
            tokio::time::timeout(
                t,
                async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into())
                    .connect(url),
            )
            .await
            .expect("connect in time")
        }
    };
    let bob = connect("bob", "plainpw").await.expect("bob connects");
    let mut svc = bob.subscribe("svc.echo").await.unwrap();
    bob.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            if let Some(reply) = m.reply {
                bob.publish(reply, m.payload).await.unwrap();
                bob.flush().await.unwrap();
            }
        }
    });
    let carol = connect("carol", "carolpw").await.expect("carol connects");
    let answer = tokio::time::timeout(t, carol.request("svc.echo", "ping".into()))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(&answer.payload[..], b"ping");
    assert!(
        connect("carol", "wrong").await.is_err(),
        "a wrong password is refused"
    );
}
