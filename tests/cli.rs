//! The `ringnats` binary as a user runs it: flags, log lines, signals.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ringnats");

/// Kills the server if a test fails half-way, so no orphan keeps the test's pipes open.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: signalling a child we spawned (harmless if it has already exited).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// Starts the server on a random port and returns it with the port read from its log.
fn spawn(extra: &[&str]) -> (Child, u16, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringnats");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut port = None;
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(addr) = line
            .trim()
            .split("Listening for client connections on ")
            .nth(1)
        {
            port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    let port = port.expect("log names the listen address");
    (child, port, err)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_closes_clients_and_exits_cleanly() {
    let (mut child, port, mut log) = spawn(&[]);
    let _reap = Reap(child.id());
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"INFO {"));
    c.write_all(b"PING\r\n").unwrap();
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"PONG\r\n");
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "client sees EOF");
    assert!(wait_exit(&mut child).success());
    let mut rest = String::new();
    log.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("[INF] Server Exiting.."), "{rest}");
}

#[test]
fn log_lines_have_gnatsd_format_and_go_to_the_log_file() {
    let dir = std::env::temp_dir().join(format!("ringnats-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("server.log");
    let mut child = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", "-1", "-D", "-l"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _reap = Reap(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("Server is ready") {
            break text;
        }
        assert!(Instant::now() < deadline, "no ready line in {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(wait_exit(&mut child).success());
    let first = text.lines().next().unwrap();
    // [pid] 2026/11/25 04:42:32.123456 [INF] Starting ringnats version x
    let pid = format!("[{}] ", child.id());
    assert!(first.starts_with(&pid), "{first}");
    let rest = &first[pid.len()..];
    assert_eq!(&rest[4..5], "/", "{first}");
    assert_eq!(&rest[26..33], " [INF] ", "{first}");
    assert!(text.contains("[DBG] Server id is "), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_and_bad_arguments() {
    let out = Command::new(BIN).arg("-v").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ringnats version "));
    let out = Command::new(BIN).arg("bogus").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unrecognized command: \"bogus\""));
    let out = Command::new(BIN)
        .args(["--port", "notaport"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn port_in_use_is_a_clear_startup_error() {
    // A plain listener (no SO_REUSEPORT) holds the port, so ringnats cannot share it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", &busy.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "[FTL] Error listening on port: 127.0.0.1:{busy}, \"listen tcp 127.0.0.1:{busy}: bind: address already in use\""
    );
    assert!(err.contains(&want), "{err}");
}

/// A second ringnats on a port a running ringnats holds refuses to start (SO_REUSEPORT
/// would otherwise let the two share it silently), for the client and the route port.
#[test]
fn a_second_ringnats_cannot_share_a_port() {
    let (first, port, _log) = spawn(&["--cluster", "nats-route://127.0.0.1:0"]);
    let _reap = Reap(first.id());
    let out = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("address already in use"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let out = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", "-1", "--cluster"])
        .arg(format!("nats-route://127.0.0.1:{busy}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "[FTL] Error listening on router port: {busy} - listen tcp 127.0.0.1:{busy}: bind: address already in use"
    );
    assert!(err.contains(&want), "{err}");
}

#[test]
fn slow_consumer_is_logged_and_cut_off() {
    let (mut child, port, log) = spawn(&["--max_pending", "262144"]);
    let _reap = Reap(child.id());
    // Lines of the log, read on a thread so the test never blocks on the pipe.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let connect = || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let _ = s.read(&mut buf).unwrap(); // INFO
        s.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n")
            .unwrap();
        s
    };
    let mut slow = connect();
    socket2::SockRef::from(&slow)
        .set_recv_buffer_size(4096)
        .unwrap();
    slow.write_all(b"SUB data 1\r\nPING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"PONG\r\n");
    let mut publisher = connect();
    let mut frame = b"PUB data 1024\r\n".to_vec();
    frame.extend_from_slice(&[b'x'; 1024]);
    frame.extend_from_slice(b"\r\n");
    let burst = frame.repeat(1000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    'outer: for _ in 0..30 {
        publisher.write_all(&burst).unwrap();
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(10)) {
            // Whichever limit trips first: max_pending or the 2 s write deadline.
            if line.contains("[INF]")
                && (line.contains("Slow Consumer Detected: MaxPending of 262144 Exceeded")
                    || line.contains("Slow Consumer Detected: WriteDeadline of 2s Exceeded"))
            {
                assert!(line.contains(" - cid:"), "{line}");
                seen = true;
                break 'outer;
            }
        }
        assert!(Instant::now() < deadline);
    }
    assert!(seen, "no slow consumer log line");
    // The publisher is unaffected.
    publisher.write_all(b"PING\r\n").unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"PONG\r\n") {
        let n = publisher.read(&mut buf).unwrap();
        assert!(n > 0, "publisher closed");
        got.extend_from_slice(&buf[..n]);
    }
    drop(slow);
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child).success());
}

/// `-V` traces HPUB as HPUB and the payload on its own line, as gnatsd does; a closed
/// connection's reason is logged in words (`-D`).
#[test]
fn trace_names_hpub_and_close_reasons_are_words() {
    let (mut child, port, mut log) = spawn(&["-DV"]);
    let _reap = Reap(child.id());
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let _ = c.read(&mut buf).unwrap();
    c.write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\nHPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n")
        .unwrap();
    let n = c.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"PONG\r\n");
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    let mut line = String::new();
    while !text.contains("Client connection closed") {
        assert!(Instant::now() < deadline, "no close line in {text}");
        line.clear();
        if log.read_line(&mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
    }
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_exit(&mut child);
    assert!(text.contains("->> [HPUB foo 12 14]"), "{text}");
    assert!(text.contains("->> MSG_PAYLOAD: [NATS/1.0"), "{text}");
    assert!(
        text.contains("Client connection closed: Client Closed"),
        "{text}"
    );
}

// ---- -c/--config ---------------------------------------------------------------------------

/// A port free at the time of the call (bound to 127.0.0.1, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A fresh directory for one test's files.
fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringnats-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary expecting it to exit on its own; returns its status and stderr.
fn run_to_exit(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _reap = Reap(child.id());
    let status = wait_exit(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

#[test]
fn config_file_with_a_wrong_type_is_a_positioned_error() {
    let dir = test_dir("badconf");
    let conf = dir.join("gnatsd.conf");
    std::fs::write(&conf, "# a comment\nport: \"abc\"\n").unwrap();
    let conf = conf.to_str().unwrap();
    let (status, err) = run_to_exit(&["-c", conf]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!("{conf}:2:7: key \"port\": expected an integer, got string\n")
    );
    let (status, err) = run_to_exit(&["-config", "/nonexistent/gnatsd.conf"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "error opening config file: open /nonexistent/gnatsd.conf: no such file or directory\n"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_with_a_cluster_starts_and_solicits_its_routes() {
    let dir = test_dir("cluster");
    // The seed the file's route points at: a plain listener that sees what the server sends.
    let seed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let seed_port = seed.local_addr().unwrap().port();
    let (client_port, route_port) = (free_port(), free_port());
    let conf = dir.join("gnatsd.conf");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\nport: {client_port}\nunknown_key: 1\n\
             cluster {{\n  listen: 127.0.0.1:{route_port}\n  \
             routes: [\n    nats-route://ruser:rpass@127.0.0.1:{seed_port}\n  ]\n}}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["-c", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _reap = Reap(child.id());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let log = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let want_route = format!("Listening for route connections on 127.0.0.1:{route_port}");
    let want_client = format!("Listening for client connections on 127.0.0.1:{client_port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains(&want_route)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no route listener line in {seen:#?}"),
        }
    }
    assert!(seen.iter().any(|l| l.contains(&want_client)), "{seen:#?}");
    assert!(
        seen.iter().any(|l| l.contains("[INF] Config warning: ")
            && l.ends_with(":3:1: unknown field \"unknown_key\"")),
        "{seen:#?}"
    );
    // The route from the file is dialled, with the URL's credentials.
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = conn_tx.send(seed.accept().map(|(s, _)| s));
    });
    let mut conn = conn_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the route was dialled")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first = String::new();
    BufReader::new(&mut conn).read_line(&mut first).unwrap();
    assert!(first.starts_with("CONNECT {"), "{first}");
    assert!(
        first.contains("\"user\":\"ruser\"") && first.contains("\"pass\":\"rpass\""),
        "{first}"
    );
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(wait_exit(&mut child).success());
    let _ = std::fs::remove_dir_all(&dir);
}
