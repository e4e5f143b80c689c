//! Signals as an operator sends them: `-sl/--signal`, SIGTERM's graceful shutdown, and
//! SIGUSR2's lame duck mode (with raw clients and with async-nats).

mod common;
#[path = "common/process.rs"]
mod process;

use process::{poll, Proc, TestDir};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// Runs `bin args` to its exit: (exit code, stderr).
fn run(bin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin).args(args).output().expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The binary under a name no other process on the machine has, so that `-sl` without a
/// pid finds only this test's servers. (A symlink: the kernel names the process after it.)
fn uniquely_named_binary(dir: &TestDir) -> (std::path::PathBuf, String) {
    let name = format!("rnsl{}", std::process::id() % 10_000_000);
    let link = dir.path(&name);
    std::os::unix::fs::symlink(process::BIN, &link).unwrap();
    (link, name)
}

#[test]
fn signal_flag_finds_the_server_by_name_and_signals_it() {
    let dir = TestDir::new("sl");
    let (bin, name) = uniquely_named_binary(&dir);
    let bin = bin.as_path();
    let (code, err) = run(bin, &["-sl", "reload"]);
    assert_eq!(
        (code, err.as_str()),
        (Some(1), &*format!("no {name} processes running\n"))
    );

    let log = dir.path("a.log");
    let pid_file = dir.path("a.pid");
    let mut a = Proc::spawn(
        bin,
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-l",
            log.to_str().unwrap(),
            "-P",
            pid_file.to_str().unwrap(),
        ],
    );
    poll(WAIT, "server a ready", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server is ready")
            .then_some(())
    });
    let reopened = |n: usize| {
        poll(WAIT, "re-open lines", || {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            (t.matches("File log re-opened").count() >= n).then_some(())
        })
    };
    // No pid: the one process with this name.
    assert_eq!(run(bin, &["-sl", "reopen"]), (Some(0), String::new()));
    reopened(1);
    // A pid, then a pid file (2.x).
    let pid = a.pid().to_string();
    assert_eq!(
        run(bin, &["--signal", &format!("reopen={pid}")]),
        (Some(0), String::new())
    );
    reopened(2);
    let by_file = format!("reopen={}", pid_file.display());
    assert_eq!(run(bin, &["-signal", &by_file]), (Some(0), String::new()));
    reopened(3);
    // gnatsd's error texts.
    assert_eq!(
        run(bin, &["-sl", &format!("bogus={pid}")]),
        (Some(1), "unknown signal \"bogus\"\n".into())
    );
    assert_eq!(
        run(bin, &["-sl", "reload=abc"]),
        (Some(1), "invalid pid: abc\n".into())
    );
    // Two servers: no guessing.
    let b = Proc::spawn(bin, &["-a", "127.0.0.1", "-p", "-1"]);
    let mut pids = [a.pid(), b.pid()];
    pids.sort_unstable();
    let (code, err) = poll(WAIT, "both servers seen", || {
        let r = run(bin, &["-sl", "reopen"]);
        r.1.starts_with("multiple").then_some(r)
    });
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!(
            "multiple {name} processes running:\n{}\n{}\n",
            pids[0], pids[1]
        )
    );
    // quit = SIGINT, term = SIGTERM (graceful, exit 0), stop = SIGKILL.
    assert_eq!(
        run(bin, &["-sl", &format!("quit={pid}")]),
        (Some(0), String::new())
    );
    assert!(a.wait_exit(WAIT).success());
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("[INF] Server Exiting.."));
    let mut b = b;
    b.wait_line("Server is ready", WAIT);
    assert_eq!(
        run(bin, &["-sl", &format!("stop={}", b.pid())]),
        (Some(0), String::new())
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(b.wait_exit(WAIT).signal(), Some(libc::SIGKILL));
}

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO {"), "{line}");
    (c, r)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    line
}

/// SIGTERM (2.x behaviour; 1.0 died at once): stop accepting, flush what was accepted to
/// the subscribers, close, exit 0 — within 5 s even with a client that never reads.
#[test]
fn sigterm_delivers_every_accepted_message_and_exits_despite_a_stuck_client() {
    // A long write deadline: only the shutdown's own bound may end the stuck client.
    let mut srv = Proc::start(&["--write_deadline", "30"]);
    let port = srv.port();
    // A small receive buffer, so most of what it is sent stays queued in the server.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut stuck: TcpStream = sock.into();
    stuck.set_read_timeout(Some(WAIT)).unwrap();
    let mut stuck_r = BufReader::new(stuck.try_clone().unwrap());
    assert!(read_line(&mut stuck_r).starts_with("INFO {"));
    stuck
        .write_all(b"CONNECT {\"verbose\":false}\r\nSUB t 1\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_line(&mut stuck_r), "PONG\r\n");
    let (mut sub, mut sub_r) = connect(port);
    sub.write_all(b"CONNECT {\"verbose\":false}\r\nSUB t 1\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_line(&mut sub_r), "PONG\r\n");
    const N: usize = 20_000;
    const SIZE: usize = 512;
    // The subscriber reads everything until the server closes it.
    let reader = std::thread::spawn(move || {
        let mut count = 0;
        let mut payload = vec![0u8; SIZE + 2];
        loop {
            let mut line = String::new();
            match sub_r.read_line(&mut line) {
                Ok(0) => return count,
                Ok(_) => {}
                Err(e) => panic!("subscriber read: {e} after {count}"),
            }
            if line.starts_with("MSG t 1 ") {
                sub_r.read_exact(&mut payload).unwrap();
                count += 1;
            }
        }
    });
    let (mut publ, mut pub_r) = connect(port);
    let mut batch = b"CONNECT {\"verbose\":false}\r\n".to_vec();
    let body = vec![b'x'; SIZE];
    for _ in 0..N {
        batch.extend_from_slice(format!("PUB t {SIZE}\r\n").as_bytes());
        batch.extend_from_slice(&body);
        batch.extend_from_slice(b"\r\n");
    }
    batch.extend_from_slice(b"PING\r\n");
    publ.write_all(&batch).unwrap();
    // Every message is accepted once the PONG comes back.
    assert_eq!(read_line(&mut pub_r), "PONG\r\n");
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(Duration::from_secs(5)).success());
    let took = t0.elapsed();
    assert_eq!(
        reader.join().unwrap(),
        N,
        "every accepted message delivered"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(stuck);
    let rest = srv.rest(WAIT);
    assert!(
        rest.iter().any(|l| l.ends_with("[INF] Server Exiting..")),
        "{rest:?}"
    );
}

/// A connect to the port is refused (all the reactors closed their listeners).
fn refused(port: u16) -> Option<()> {
    match TcpStream::connect(("127.0.0.1", port)) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Some(()),
        _ => None,
    }
}

/// SIGUSR2 (2.x's lame duck mode): new clients refused, `"ldm":true` INFO to protocol-1
/// clients, every client closed after the grace period and within the duration, exit 0.
#[test]
fn sigusr2_lame_duck_mode_informs_closes_and_exits() {
    let dir = TestDir::new("ldm");
    let conf = dir.path("ldm.conf");
    std::fs::write(
        &conf,
        "net: 127.0.0.1\nport: -1\nlame_duck_duration: \"2s\"\nlame_duck_grace_period: \"500ms\"\n",
    )
    .unwrap();
    let mut srv = Proc::spawn(Path::new(process::BIN), &["-c", conf.to_str().unwrap()]);
    let port = srv.port();
    srv.wait_line("Server is ready", WAIT);
    let (mut p1, mut p1_r) = connect(port);
    p1.write_all(b"CONNECT {\"verbose\":false,\"protocol\":1}\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_line(&mut p1_r), "PONG\r\n");
    let (mut p0, mut p0_r) = connect(port);
    p0.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_line(&mut p0_r), "PONG\r\n");
    // A few more clients, so that the closes are spread.
    let others: Vec<_> = (0..4)
        .map(|_| {
            let (mut c, mut r) = connect(port);
            c.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
                .unwrap();
            assert_eq!(read_line(&mut r), "PONG\r\n");
            (c, r)
        })
        .collect();
    let t0 = Instant::now();
    srv.signal(libc::SIGUSR2);
    let info = read_line(&mut p1_r);
    assert!(
        info.starts_with("INFO {") && info.ends_with(",\"ldm\":true} \r\n"),
        "{info}"
    );
    poll(WAIT, "connections refused", || refused(port));
    // Closed, not before the grace period; the protocol-0 client got no INFO.
    assert_eq!(read_line(&mut p1_r), "", "EOF");
    assert_eq!(read_line(&mut p0_r), "", "no INFO for protocol 0, then EOF");
    for (_, mut r) in others {
        assert_eq!(read_line(&mut r), "");
    }
    let closed_after = t0.elapsed();
    assert!(
        closed_after >= Duration::from_millis(500),
        "{closed_after:?}"
    );
    assert!(srv.wait_exit(WAIT).success());
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let log = srv.rest(WAIT);
    let pos = |needle: &str| {
        log.iter()
            .position(|l| l.ends_with(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {log:?}"))
    };
    let order = [
        pos("[INF] Entering lame duck mode, stop accepting new clients"),
        pos("[INF] Closing existing clients"),
        pos("[INF] Initiating Shutdown..."),
        pos("[INF] Server Exiting.."),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{log:?}");
}

/// Lame duck mode with no client: nothing to wait for, the server exits at once.
#[test]
fn lame_duck_without_clients_exits_at_once() {
    let mut srv = Proc::start(&[]);
    let t0 = Instant::now();
    srv.signal(libc::SIGUSR2);
    assert!(srv.wait_exit(WAIT).success());
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// A real client sees the lame duck INFO (async-nats reports `Event::LameDuckMode`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_sees_lame_duck_mode() {
    let srv = common::start_with(|o| {
        o.lame_duck_grace_period = Duration::from_millis(300);
        o.lame_duck_duration = Duration::from_secs(2);
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let nc = async_nats::ConnectOptions::new()
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ev);
            }
        })
        .retry_on_initial_connect()
        .connect(format!("nats://{}", srv.addr))
        .await
        .unwrap();
    nc.flush().await.unwrap();
    srv.enter_lame_duck();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut saw_ldm = false;
    while !saw_ldm {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(async_nats::Event::LameDuckMode)) => saw_ldm = true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no lame duck event"),
        }
    }
    // Then the server closes the connection.
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(async_nats::Event::Disconnected)) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("not disconnected"),
        }
    }
    assert!(refused(srv.addr.port()).is_some(), "no new clients");
    drop(nc);
    srv.shutdown().unwrap();
}
