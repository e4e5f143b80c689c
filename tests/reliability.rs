//! One misbehaving party costs nobody else: many paused publishers and a stuck subscriber
//! on the same core as a healthy pair, and running out of file descriptors.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 50 publishers blast a subscriber that never reads, all on one reactor, while a healthy
/// pair exchanges messages: the pair gets every message (the held input of paused
/// publishers does not starve the shared receive ring), and the stuck one is cut.
#[test]
fn paused_publishers_do_not_starve_a_healthy_pair_on_the_same_core() {
    let srv = start_with(|o| {
        o.workers = 1;
        o.max_pending = 4 * 1024 * 1024;
        o.write_deadline = Duration::from_secs(3);
    });
    let mut stuck = Raw::quiet(srv.addr);
    socket2::SockRef::from(&stuck.stream)
        .set_recv_buffer_size(4096)
        .unwrap();
    stuck.send(b"SUB flood 1\r\nPING\r\n");
    stuck.expect(b"PONG\r\n");
    let mut frame = b"PUB flood 512\r\n".to_vec();
    frame.extend_from_slice(&[b'x'; 512]);
    frame.extend_from_slice(b"\r\n");
    let burst = frame.repeat(200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..50)
        .map(|_| {
            let mut p = Raw::quiet(srv.addr);
            let burst = burst.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                p.stream
                    .set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                for _ in 0..100 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed)
                        || p.stream.write_all(&burst).is_err()
                    {
                        break;
                    }
                }
            })
        })
        .collect();
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB pair 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let mut publ = Raw::quiet(srv.addr);
    for i in 0..300 {
        let body = format!("{i:05}");
        publ.send(format!("PUB pair 5\r\n{body}\r\n").as_bytes());
        sub.expect(format!("MSG pair 1 5\r\n{body}\r\n").as_bytes());
    }
    sub.expect_nothing_then_pong();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
    drop(stuck);
}

/// A subscriber that keeps reading, only slower than its publisher writes, is slow and not
/// stuck even when its socket's send buffer has grown to megabytes (the kernel then lets a
/// send wait for a third of it to drain, longer than a stuck peer is given): its publisher
/// is paused until it catches up, its queue stays far below max_pending, and it gets every
/// message. Taken for stuck, its publisher would not be paused and its queue would pass
/// max_pending (three times over here), cutting it off as a slow consumer.
#[test]
fn a_slow_subscriber_that_keeps_reading_paces_its_publisher_and_is_not_cut() {
    slow_subscriber_paces_its_publisher(false);
}

/// As above, and the publisher closes its connection right after its last PUB, while it is
/// paused with input held: what it sent before it went is all delivered (gnatsd reads a
/// connection to its end too); closed at once, its held input was dropped.
#[test]
fn a_paused_publisher_that_closes_after_its_burst_has_every_message_delivered() {
    slow_subscriber_paces_its_publisher(true);
}

fn slow_subscriber_paces_its_publisher(close_publisher: bool) {
    const SIZE: usize = 1024;
    const COUNT: usize = 6 * 1024;
    let srv = start_with(|o| {
        o.workers = 1;
        o.max_pending = 2 * 1024 * 1024;
        o.write_deadline = Duration::from_secs(20);
    });
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB slow 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    let mut delivered = format!("MSG slow 1 {SIZE}\r\n").into_bytes();
    delivered.extend_from_slice(&[b'x'; SIZE]);
    delivered.extend_from_slice(b"\r\n");
    let expected = delivered.repeat(COUNT);
    let want = expected.len();
    // About 8 MB/s: 16 KiB every 2 ms, until everything came or the server hung up.
    let reader = {
        let mut s = sub.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::with_capacity(want);
            let mut buf = vec![0u8; 16 * 1024];
            let deadline = Instant::now() + Duration::from_secs(60);
            while got.len() < want && Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            got
        })
    };
    let mut publ = Raw::quiet(srv.addr);
    let mut frame = format!("PUB slow {SIZE}\r\n").into_bytes();
    frame.extend_from_slice(&[b'x'; SIZE]);
    frame.extend_from_slice(b"\r\n");
    let burst = frame.repeat(64);
    publ.stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for _ in 0..COUNT / 64 {
        publ.stream.write_all(&burst).unwrap();
    }
    if close_publisher {
        // FIN after the last byte (nothing unread on our side, so not a reset).
        publ.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let got = reader.join().unwrap();
    assert!(
        got == expected,
        "the slow subscriber got {} of {} bytes; it ends with {:?}",
        got.len(),
        want,
        String::from_utf8_lossy(&got[got.len().saturating_sub(80)..])
    );
    if !close_publisher {
        publ.send(b"PING\r\n");
        publ.expect(b"PONG\r\n");
    }
}

/// Publishers flood subscribers that read slower than they write, so the publishers are
/// paused and resumed over and over (resumed by the subscribers' owners
/// taking their bytes, on either reactor, by direct sends, or by the pause's expiry): every
/// subscriber still gets every message exactly once, in each publisher's order.
#[test]
fn paused_and_resumed_publishers_deliver_everything_once_in_order() {
    const PUBS: usize = 4;
    const SUBS: usize = 4;
    const N: usize = 4000;
    const SIZE: usize = 512;
    let srv = start_with(|o| {
        o.workers = 2;
        // Slow, not stuck: the readers below must never be cut, however loaded the machine.
        o.write_deadline = Duration::from_secs(30);
    });
    let addr = srv.addr;
    let readers: Vec<_> = (0..SUBS)
        .map(|_| {
            let mut sub = Raw::quiet(addr);
            sub.send(b"SUB flood 1\r\nPING\r\n");
            sub.expect(b"PONG\r\n");
            std::thread::spawn(move || {
                let mut next = [0usize; PUBS];
                let mut got = 0;
                let mut buf: Vec<u8> = Vec::new();
                let mut chunk = vec![0u8; 16 * 1024];
                let deadline = Instant::now() + Duration::from_secs(60);
                sub.stream
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                while got < PUBS * N && Instant::now() < deadline {
                    let n = sub.stream.read(&mut chunk).expect("read");
                    assert!(n > 0, "server closed the subscriber after {got} messages");
                    buf.extend_from_slice(&chunk[..n]);
                    let mut at = 0;
                    let head = format!("MSG flood 1 {SIZE}\r\n");
                    while buf.len() - at >= head.len() + SIZE + 2 {
                        assert_eq!(&buf[at..at + head.len()], head.as_bytes(), "frame {got}");
                        let body = &buf[at + head.len()..at + head.len() + SIZE];
                        let p: usize = std::str::from_utf8(&body[..2]).unwrap().parse().unwrap();
                        let seq: usize = std::str::from_utf8(&body[2..8]).unwrap().parse().unwrap();
                        assert_eq!(
                            seq, next[p],
                            "publisher {p}: in order, none lost or repeated"
                        );
                        next[p] += 1;
                        got += 1;
                        at += head.len() + SIZE + 2;
                    }
                    buf.drain(..at);
                    // Slower than the publishers: the server's queues for the readers back
                    // up past the pause threshold.
                    std::thread::sleep(Duration::from_micros(500));
                }
                (got, next)
            })
        })
        .collect();
    let writers: Vec<_> = (0..PUBS)
        .map(|p| {
            let mut publ = Raw::quiet(addr);
            std::thread::spawn(move || {
                let mut frames = Vec::with_capacity(N * (SIZE + 24));
                for seq in 0..N {
                    let mut body = format!("{p:02}{seq:06}").into_bytes();
                    body.resize(SIZE, b'x');
                    frames.extend_from_slice(format!("PUB flood {SIZE}\r\n").as_bytes());
                    frames.extend_from_slice(&body);
                    frames.extend_from_slice(b"\r\n");
                }
                publ.send(&frames);
                publ.send(b"PING\r\n");
                publ.expect(b"PONG\r\n");
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for r in readers {
        let (got, next) = r.join().unwrap();
        assert_eq!(got, PUBS * N);
        assert_eq!(next, [N; PUBS]);
    }
    let pauses: u64 = srv
        .server
        .stats
        .iter()
        .map(|s| s.load().publisher_pauses)
        .sum();
    assert!(
        pauses > 0,
        "the readers never backed up: nothing was paused"
    );
    let cut: u64 = srv
        .server
        .stats
        .iter()
        .map(|s| s.load().slow_consumers)
        .sum();
    assert_eq!(cut, 0, "a reader was cut");
}

fn spawn_with_fd_limit(
    limit: u64,
) -> (
    std::process::Child,
    u16,
    BufReader<std::process::ChildStderr>,
) {
    spawn_server(Some(limit), &["--workers", "1"])
}

/// The server binary on a free port with `extra` flags (and a descriptor limit); returns
/// the child, its port and its log (stderr), read up to "Server is ready".
fn spawn_server(
    fd_limit: Option<u64>,
    extra: &[&str],
) -> (
    std::process::Child,
    u16,
    BufReader<std::process::ChildStderr>,
) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringnats"));
    cmd.args(["-a", "127.0.0.1", "-p", "-1"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(limit) = fd_limit {
        // SAFETY: setrlimit is async-signal-safe; it only changes the child's own limit.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().expect("spawn ringnats");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut port = None;
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
    (child, port.expect("listen line"), err)
}

/// Kills the spawned server when a test ends, passed or not.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: signalling the child this test spawned.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// The server's log lines, as they come, from a reader thread.
fn log_lines(log: BufReader<std::process::ChildStderr>) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in log.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Out of descriptors, the accept loop backs off (one log line per back-off, not a flood)
/// and serves new clients again once descriptors are free.
#[test]
fn accept_backs_off_when_out_of_descriptors_and_recovers() {
    let (mut child, port, log) = spawn_with_fd_limit(48);
    let _reap = Reap(child.id());
    let rx = log_lines(log);
    // More connections than the server has descriptors for: the kernel completes the
    // handshakes (backlog), the server cannot accept them all.
    let mut held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    // Wait for the first back-off line, then let it run for a while.
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains("Error accepting") => break l,
            Ok(_) => {}
            Err(_) => panic!("no accept error logged"),
        }
    };
    assert!(first.contains("Too many open files"), "{first}");
    assert!(first.contains("retrying in"), "{first}");
    let window = Instant::now() + Duration::from_millis(500);
    let mut lines = 1;
    while let Ok(l) = rx.recv_timeout(window.saturating_duration_since(Instant::now())) {
        if l.contains("Error accepting") {
            lines += 1;
        }
    }
    assert!(lines < 20, "{lines} accept errors in 0.5 s: no back-off");
    // Free descriptors: a new client is served again.
    held.clear();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "not serving after descriptors freed"
        );
        if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 8];
            if c.read_exact(&mut buf).is_ok() && &buf[..5] == b"INFO " {
                c.write_all(b"PING\r\n").unwrap();
                break;
            }
        }
    }
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}

/// A slow consumer that is cut gives its queue's memory back. Six subscribers that never
/// read are cut in turn while a publisher floods their subject: the server's RSS after the
/// last is where the first left it. (A cut consumer's queue, up to `max_pending`, used to
/// stay allocated while the subscription index's retired cache entries still referenced
/// the connection: tens of MB per cut, for as long as the server ran.)
#[test]
fn cut_slow_consumers_give_their_queue_memory_back() {
    let (mut child, port, log) = spawn_server(None, &["--write_deadline", "0.5"]);
    let _reap = Reap(child.id());
    let pid = child.id();
    let rx = log_lines(log);
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut healthy = Raw::quiet(addr);
    healthy.send(b"SUB flood 1\r\nPING\r\n");
    healthy.expect(b"PONG\r\n");
    let reader = {
        let mut s = healthy.stream.try_clone().unwrap();
        let stop = stop.clone();
        std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
        })
    };
    let publisher = {
        let mut p = Raw::quiet(addr);
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut frame = b"PUB flood 1024\r\n".to_vec();
            frame.extend_from_slice(&[b'x'; 1024]);
            frame.extend_from_slice(b"\r\n");
            let burst = frame.repeat(64);
            p.stream
                .set_write_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let _ = p.stream.write_all(&burst);
            }
        })
    };
    let mut after_first = 0;
    for i in 0..6 {
        let mut stuck = Raw::quiet(addr);
        socket2::SockRef::from(&stuck.stream)
            .set_recv_buffer_size(4096)
            .unwrap();
        stuck.send(b"SUB flood 1\r\nPING\r\n");
        stuck.expect(b"PONG\r\n");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("Slow Consumer Detected") => break,
                Ok(_) => {}
                Err(_) => panic!("stuck subscriber {i} not cut"),
            }
        }
        drop(stuck);
        // The slot is freed once the cut connection's socket is shut and its operations
        // are back (well within the write deadline).
        std::thread::sleep(Duration::from_millis(700));
        if i == 0 {
            after_first = rss_kib();
        }
    }
    let last = rss_kib();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();
    reader.join().unwrap();
    assert!(
        last < after_first + 24 * 1024,
        "RSS grew from {after_first} KiB after the first cut to {last} KiB after the sixth"
    );
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
}
