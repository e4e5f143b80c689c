//! Logging as an operator sees it: the log file reopened on SIGUSR1 (logrotate), syslog
//! messages on the wire (UDP, TCP, unix datagram), and a stuck log sink that never stalls
//! the clients.

#[path = "common/process.rs"]
mod process;

use process::{poll, Proc, TestDir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn read_file(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn sigusr1_reopens_the_log_file_at_its_path() {
    let dir = TestDir::new("reopen");
    let log = dir.path("server.log");
    let rotated = dir.path("server.log.1");
    let mut srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "-l", log.to_str().unwrap()],
    );
    poll(WAIT, "ready line in the log file", || {
        read_file(&log).contains("Server is ready").then_some(())
    });
    // What logrotate does: move the file away, then tell the server.
    std::fs::rename(&log, &rotated).unwrap();
    srv.signal(libc::SIGUSR1);
    let text = poll(WAIT, "a new log file", || {
        let t = read_file(&log);
        t.contains("File log re-opened").then_some(t)
    });
    let pid = format!("[{}] ", srv.pid());
    let line = text.lines().next().unwrap();
    assert!(line.starts_with(&pid), "{line}");
    assert!(line.ends_with(" [INF] File log re-opened"), "{line}");
    let old = read_file(&rotated);
    assert!(old.contains("Server is ready"), "{old}");
    assert!(!old.contains("re-opened"), "{old}");
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(WAIT).success());
    // The last words go to the new file too, flushed before the exit.
    assert!(read_file(&log).contains("[INF] Server Exiting.."));
}

#[test]
fn sigusr1_without_a_log_file_says_it_is_ignored() {
    let mut srv = Proc::start(&["-T=false"]);
    srv.signal(libc::SIGUSR1);
    let line = srv.wait_line("re-open", WAIT);
    assert_eq!(
        line,
        format!(
            "[{}] [INF] File log re-open ignored, not a file logger",
            srv.pid()
        )
    );
    srv.signal(libc::SIGINT);
    assert!(srv.wait_exit(WAIT).success());
}

/// `<30>2026-11-26T18:21:55+01:00 host ringnats[pid]: text\n`: DAEMON|INFO, RFC 3339 time,
/// host name, the executable's name and pid, as Go's log/syslog writes to a remote server.
fn assert_remote_syslog(msg: &str, pri: &str, pid: u32, text: &str) {
    assert!(msg.starts_with(pri), "{msg:?}");
    assert!(
        msg.ends_with(&format!(" ringnats[{pid}]: {text}\n")),
        "{msg:?}"
    );
    let mut parts = msg[pri.len()..].splitn(3, ' ');
    let time = parts.next().unwrap();
    assert_eq!(&time[4..5], "-", "{msg:?}");
    assert_eq!(&time[10..11], "T", "{msg:?}");
    let host = parts.next().unwrap();
    assert!(!host.is_empty() && !host.contains('['), "{msg:?}");
}

#[test]
fn remote_syslog_over_udp() {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("udp://{}", rx.local_addr().unwrap());
    let mut srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "-r", &url],
    );
    let mut buf = [0u8; 2048];
    let mut msgs = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !msgs.iter().any(|m: &String| m.contains("Server is ready")) {
        assert!(Instant::now() < deadline, "{msgs:?}");
        let n = rx.recv(&mut buf).expect("a syslog datagram");
        msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_remote_syslog(
        &msgs[0],
        "<30>",
        srv.child.id(),
        &format!("Starting ringnats version {}", env!("CARGO_PKG_VERSION")),
    );
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(WAIT).success());
    // Nothing went to stderr: syslog replaces it.
    let rest = srv.rest(WAIT);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn remote_syslog_over_tcp_one_line_per_message() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", l.local_addr().unwrap());
    let mut srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "--remote_syslog", &url, "-D"],
    );
    let (conn, _) = l.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut lines = BufReader::new(conn).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines.next().expect("a syslog line").unwrap();
        seen.push(line.clone());
        if line.contains("Server id is") {
            // Debug goes out at DAEMON|DEBUG.
            assert!(line.starts_with("<31>"), "{line}");
            break;
        }
    }
    assert!(seen[0].starts_with("<30>"), "{seen:?}");
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(WAIT).success());
}

#[test]
fn remote_syslog_over_a_unix_datagram_socket() {
    let dir = TestDir::new("syslog-unix");
    let path = dir.path("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("unix://{}", path.display());
    let srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "-r", &url],
    );
    let mut buf = [0u8; 2048];
    let n = rx.recv(&mut buf).expect("a syslog datagram");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_remote_syslog(
        &msg,
        "<30>",
        srv.child.id(),
        &format!("Starting ringnats version {}", env!("CARGO_PKG_VERSION")),
    );
}

#[test]
fn syslog_errors_stop_the_start() {
    let mut srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "-r", "http://127.0.0.1:9"],
    );
    assert_eq!(srv.wait_exit(WAIT).code(), Some(1));
    let out = srv.rest(WAIT);
    assert_eq!(out, ["ringnats: error invalid network type: \"http\""]);
}

/// With `-c`, gnatsd ignores `-s` and `-r` (spec §4.3): the config file's `remote_syslog`
/// applies, the flag does not.
#[test]
fn with_a_config_file_syslog_comes_from_the_file_only() {
    let dir = TestDir::new("syslog-conf");
    let from_file = UdpSocket::bind("127.0.0.1:0").unwrap();
    from_file.set_read_timeout(Some(WAIT)).unwrap();
    let from_flag = UdpSocket::bind("127.0.0.1:0").unwrap();
    from_flag.set_nonblocking(true).unwrap();
    let conf = dir.path("s.conf");
    std::fs::write(
        &conf,
        format!(
            "net: 127.0.0.1\nport: -1\nremote_syslog: \"udp://{}\"\n",
            from_file.local_addr().unwrap()
        ),
    )
    .unwrap();
    let flag_url = format!("udp://{}", from_flag.local_addr().unwrap());
    let _srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-c", conf.to_str().unwrap(), "-r", &flag_url],
    );
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline);
        let n = from_file.recv(&mut buf).expect("a syslog datagram");
        if String::from_utf8_lossy(&buf[..n]).contains("Server is ready") {
            break;
        }
    }
    // Every line was written by the one writer, in order: had the flag applied, the ready
    // line would have gone there instead.
    assert!(
        from_flag.recv(&mut buf).is_err(),
        "nothing for the flag's URL"
    );
}

/// A log sink that takes nothing (a syslog daemon that stopped reading) blocks only the log
/// writer: clients are served at full speed, trace lines beyond the queue are dropped and
/// counted, and the count is logged once the sink drains.
#[test]
fn a_stuck_log_sink_never_stalls_clients_and_drops_are_counted() {
    let dir = TestDir::new("syslog-stuck");
    let path = dir.path("log.sock");
    let rx = UnixDatagram::bind(&path).unwrap();
    let url = format!("unix://{}", path.display());
    let mut srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "-V", "-r", &url],
    );
    // Read until the client port is logged, then stop reading: the socket queue fills.
    rx.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let port: u16 = loop {
        let n = rx.recv(&mut buf).expect("a syslog datagram");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(a) = m
            .trim_end()
            .split("Listening for client connections on ")
            .nth(1)
        {
            break a.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "{line}");
    // 20 000 PUBs traced: two lines each, far past the queue and the socket's buffer.
    let started = Instant::now();
    let mut batch = Vec::new();
    batch.extend_from_slice(b"CONNECT {\"verbose\":false}\r\n");
    for i in 0..20_000 {
        batch.extend_from_slice(format!("PUB t.{i} 5\r\nhello\r\n").as_bytes());
    }
    batch.extend_from_slice(b"PING\r\n");
    c.write_all(&batch).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "PONG\r\n");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "served in {took:?}");
    // Now drain the sink: the writer catches up and reports what it dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        assert!(Instant::now() < deadline, "no drop report");
        let n = rx.recv(&mut buf).expect("a syslog datagram");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("log lines dropped") {
            break m;
        }
    };
    assert!(report.starts_with("<27>"), "an ERR line: {report}");
    let n: u64 = report
        .trim_end()
        .rsplit(": ")
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 0, "{report}");
    srv.signal(libc::SIGTERM);
    // The exit waits for the log queue a bounded time only, even with the sink stuck again.
    assert!(srv.wait_exit(WAIT).success());
    assert_eq!(c.read(&mut [0u8; 1]).unwrap_or(0), 0, "client sees EOF");
}

/// `-s` needs the local syslog daemon's socket; without one the start fails with gnatsd's
/// text instead of logging nowhere.
#[test]
fn local_syslog_without_a_daemon_is_a_startup_error() {
    if ["/dev/log", "/var/run/syslog", "/var/run/log"]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
    {
        eprintln!("skipped: this machine has a syslog socket");
        return;
    }
    let mut srv = Proc::spawn(
        std::path::Path::new(process::BIN),
        &["-a", "127.0.0.1", "-p", "-1", "-s"],
    );
    assert_eq!(srv.wait_exit(WAIT).code(), Some(1));
    let out = srv.rest(WAIT);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(
        out[0].starts_with("ringnats: error connecting to syslog: \""),
        "{out:?}"
    );
}
