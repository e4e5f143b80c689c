//! The files in `scripts/` work as shipped: the sample config starts a server with no
//! warning and its bcrypt user connects; the systemd unit runs that config.

#[path = "common/process.rs"]
mod process;

use process::{poll, Proc, TestDir};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn script(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scripts")
            .join(name),
    )
    .unwrap()
}

/// Replaces `from` (which must be there) with `to`.
fn set(text: &mut String, from: &str, to: &str) {
    assert!(text.contains(from), "the sample has {from:?}");
    *text = text.replacen(from, to, 1);
}

#[test]
fn sample_config_starts_cleanly_and_its_bcrypt_user_connects() {
    let dir = TestDir::new("sample-conf");
    let log = dir.path("ringnats.log");
    let pid_file = dir.path("ringnats.pid");
    let port = free_port();
    // Only the machine-specific values change: ports and paths.
    let mut conf = script("ringnats.conf");
    set(
        &mut conf,
        "listen: 0.0.0.0:4222",
        &format!("listen: 127.0.0.1:{port}"),
    );
    set(
        &mut conf,
        "http: 127.0.0.1:8222",
        &format!("http: 127.0.0.1:{}", free_port()),
    );
    set(
        &mut conf,
        "/var/log/ringnats/ringnats.log",
        log.to_str().unwrap(),
    );
    set(
        &mut conf,
        "/run/ringnats/ringnats.pid",
        pid_file.to_str().unwrap(),
    );
    let path = dir.path("ringnats.conf");
    std::fs::write(&path, conf).unwrap();
    let mut srv = Proc::spawn(Path::new(process::BIN), &["-c", path.to_str().unwrap()]);
    let text = poll(WAIT, "the ready line in the log file", || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        t.contains("Server is ready").then_some(t)
    });
    assert!(!text.to_lowercase().contains("warning"), "{text}");
    assert!(!text.contains("[ERR]"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap(),
        srv.child.id().to_string()
    );

    let login = |pass: &str| {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        // bcrypt at cost 11 in a debug build takes a while.
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let mut info = String::new();
        r.read_line(&mut info).unwrap();
        assert!(info.contains("\"auth_required\":true"), "{info}");
        c.write_all(
            format!(
                "CONNECT {{\"verbose\":false,\"user\":\"app\",\"pass\":\"{pass}\"}}\r\nPING\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    };
    assert_eq!(login("change-me-s3cret"), "PONG\r\n");
    assert_eq!(login("wrong"), "-ERR 'Authorization Violation'\r\n");

    srv.signal(libc::SIGTERM);
    assert!(srv.wait_exit(WAIT).success());
    assert!(!pid_file.exists(), "pid file removed at exit");
}

#[test]
fn systemd_unit_runs_the_config_with_graceful_signals_and_limits() {
    let unit = script("ringnats.service");
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "ExecStart=/usr/local/bin/ringnats -c /etc/ringnats/ringnats.conf",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "LimitMEMLOCK=infinity",
    ] {
        assert!(lines.contains(&want), "{want} in\n{unit}");
    }
    assert!(
        lines.iter().any(|l| l.starts_with("LimitNOFILE=")),
        "{unit}"
    );
    // The install script puts the sample config where the unit looks for it.
    let install = script("install");
    assert!(install.contains("scripts/ringnats.conf /etc/ringnats/ringnats.conf"));
    assert!(install.contains("scripts/ringnats.service"));
}
