//! Harness for the black-box cluster tests: server processes on free ports (ringnats or the
//! real gnatsd 1.0), raw protocol clients, a hand-driven "fake route", and waits that poll an
//! event (a probe message arriving) instead of sleeping.
//!
//! Every wait is bounded in time and in iterations. Nodes are killed and reaped on drop, also
//! when a test panics; a failing test prints the log of every node it started.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long one expected protocol line or message may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a node may take to accept clients after it was spawned.
pub const READY_WAIT: Duration = Duration::from_secs(5);
/// How long an interest path may take to form (route connect, retries, SUB propagation).
pub const ROUTE_WAIT: Duration = Duration::from_secs(10);
/// Pace of the probe publisher while waiting for an interest path.
pub const PROBE_EVERY: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// Binaries

/// The binary used for "ringnats" nodes: `$RINGNATS_TEST_SERVER`, else the one cargo built.
pub fn ringnats_bin() -> PathBuf {
    match std::env::var_os("RINGNATS_TEST_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_ringnats")),
    }
}

/// The real gnatsd 1.0 binary: `$GNATSD_BIN`, else `../shared/peers/gnatsd-1.0.0` from the
/// project root. `None` when neither exists.
pub fn gnatsd_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GNATSD_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Some(p);
        }
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/gnatsd-1.0.0");
    p.is_file().then_some(p)
}

/// True when the server under test (the "ringnats" binary) is in fact gnatsd 1.x, as when the
/// tests themselves are validated with `RINGNATS_TEST_SERVER=.../gnatsd-1.0.0`.
pub fn under_test_is_gnatsd() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let bin = ringnats_bin();
        let out = Command::new(&bin)
            .arg("-v")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        text.contains("nats-server version 1.") || text.contains("gnatsd version 1.")
    })
}

/// For tests of behaviour that gnatsd 1.0 does not have: returns true (after printing why)
/// when the server under test is gnatsd 1.x, so the test returns early and passes.
pub fn skip_beyond_1_0(test: &str, reason: &str) -> bool {
    if under_test_is_gnatsd() {
        println!("SKIP {test}: the server under test is gnatsd 1.0, which {reason}");
        return true;
    }
    false
}

/// The real nats-server 2.x: `$NATS_SERVER_BIN`, else `nats-server` on the PATH or in
/// /usr/sbin (Debian's package). When it is missing, `apt-get install -y nats-server` is tried
/// once. `None` when it still is not there.
pub fn nats_server_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let find = || -> Option<PathBuf> {
            if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
                let p = PathBuf::from(p);
                return p.is_file().then_some(p);
            }
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
                .map(|d| d.join("nats-server"))
                .find(|p| p.is_file())
        };
        if let Some(p) = find() {
            return Some(p);
        }
        let installed = Command::new("apt-get")
            .args(["install", "-y", "nats-server"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if installed {
            find()
        } else {
            None
        }
    })
    .clone()
}

/// For tests that need a real nats-server 2.x peer: `None` (after printing why) when it is
/// absent and could not be installed.
pub fn nats_server_or_skip(test: &str) -> Option<PathBuf> {
    let bin = nats_server_bin();
    if bin.is_none() {
        println!(
            "SKIP {test}: no nats-server 2.x binary (apt-get install -y nats-server failed; set NATS_SERVER_BIN)"
        );
    }
    bin
}

/// For tests that need a real gnatsd 1.0 peer: `None` (after printing why) when it is absent.
pub fn gnatsd_or_skip(test: &str) -> Option<PathBuf> {
    let bin = gnatsd_bin();
    if bin.is_none() {
        println!(
            "SKIP {test}: no gnatsd 1.0 binary (set GNATSD_BIN or provide ../shared/peers/gnatsd-1.0.0)"
        );
    }
    bin
}

// ---------------------------------------------------------------------------------------------
// Ports and names

/// A port that was free a moment ago (bound to 127.0.0.1:0 and released) and that no other
/// test in this process has been given.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no unused free port after 1000 tries");
}

/// A name unique in this process and across concurrent runs: `<prefix>.<pid>.<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}.{}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Nodes

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The server under test (`ringnats_bin()`).
    Ringnats,
    /// The real gnatsd 1.0 at this path.
    Gnatsd(PathBuf),
    /// The real nats-server 2.x at this path.
    NatsServer(PathBuf),
}

/// How to run one node. Ports are chosen when the config is made, so that peers can name each
/// other before any of them starts.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub kind: Kind,
    pub client_port: u16,
    pub route_port: u16,
    /// Route auth this node requires (`--cluster nats-route://user:pass@...`).
    pub cluster_auth: Option<(String, String)>,
    /// Route URLs this node solicits (`--routes`).
    pub routes: Vec<String>,
    pub connect_retries: Option<u32>,
    pub debug: bool,
    /// More flags, appended as given (e.g. `-m <port>`).
    pub extra_args: Vec<String>,
    /// `--cluster_name` (ringnats and nats-server; gnatsd 1.0 has none).
    pub cluster_name: Option<String>,
}

impl NodeConfig {
    pub fn new(name: &str, kind: Kind) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            kind: kind.clone(),
            client_port: free_port(),
            route_port: free_port(),
            cluster_auth: None,
            routes: Vec::new(),
            connect_retries: None,
            debug: true,
            extra_args: Vec::new(),
            cluster_name: match kind {
                Kind::NatsServer(_) => Some(CLUSTER_NAME.to_string()),
                _ => None,
            },
        }
    }

    pub fn ringnats(name: &str) -> NodeConfig {
        NodeConfig::new(name, Kind::Ringnats)
    }

    /// `nats-route://127.0.0.1:<route port>`, without credentials.
    pub fn route_url(&self) -> String {
        format!("nats-route://127.0.0.1:{}", self.route_port)
    }

    /// `nats-route://user:pass@127.0.0.1:<route port>`.
    pub fn route_url_as(&self, user: &str, pass: &str) -> String {
        format!("nats-route://{user}:{pass}@127.0.0.1:{}", self.route_port)
    }

    pub fn client_url(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn args(&self) -> Vec<String> {
        let mut cluster = match &self.cluster_auth {
            Some((u, p)) => self.route_url_as(u, p),
            None => self.route_url(),
        };
        if matches!(self.kind, Kind::NatsServer(_)) {
            cluster = cluster.replacen("nats-route://", "nats://", 1);
        }
        let mut a = vec![
            "-a".to_string(),
            "127.0.0.1".to_string(),
            "-p".to_string(),
            self.client_port.to_string(),
            "--cluster".to_string(),
            cluster,
        ];
        if !self.routes.is_empty() {
            a.push("--routes".to_string());
            a.push(self.routes.join(","));
        }
        if let Some(n) = self.connect_retries {
            a.push("--connect_retries".to_string());
            a.push(n.to_string());
        }
        if let Some(n) = &self.cluster_name {
            a.push("--cluster_name".to_string());
            a.push(n.clone());
        }
        if self.debug {
            a.push("-D".to_string());
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    fn bin(&self) -> PathBuf {
        match &self.kind {
            Kind::Ringnats => ringnats_bin(),
            Kind::Gnatsd(p) | Kind::NatsServer(p) => p.clone(),
        }
    }
}

/// A running (or stopped) server process. Killed and reaped on drop; its stderr goes to a log
/// file that is printed if the test panics and removed otherwise.
pub struct Node {
    pub cfg: NodeConfig,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Node {
    /// Spawns the node and waits (at most 5 s) until it accepts clients.
    pub fn start(cfg: NodeConfig) -> Node {
        let dir = std::env::temp_dir().join("ringnats-cluster-tests");
        std::fs::create_dir_all(&dir).expect("create log dir");
        let log_path = dir.join(format!("{}.log", unique(&cfg.name)));
        let mut node = Node {
            cfg,
            child: None,
            log_path,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.cfg.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open node log");
        let mut marker = log.try_clone().unwrap();
        let _ = writeln!(
            marker,
            "==== test harness: starting {} ({}) {}",
            self.cfg.name,
            self.cfg.bin().display(),
            self.cfg.args().join(" ")
        );
        let child = Command::new(self.cfg.bin())
            .args(self.cfg.args())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.cfg.bin().display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WAIT;
        for _ in 0..1000 {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // The log is printed when the node is dropped.
                panic!("{} exited during startup ({status})", self.cfg.name);
            }
            if let Ok(mut s) =
                TcpStream::connect_timeout(&self.client_addr(), Duration::from_millis(200))
            {
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() && &b == b"INFO " {
                    return;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            // Poll pace for a port that is not open yet (connect fails at once).
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "{} does not accept clients on {} within {READY_WAIT:?}",
            self.cfg.name,
            self.client_addr()
        );
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.cfg.client_port))
    }

    pub fn route_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.cfg.route_port))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A connected, quiet raw client.
    pub fn client(&self) -> Client {
        Client::connect(self.client_addr(), self.name())
    }

    /// Sends `sig` to the process by PID and reaps it (bounded wait).
    pub fn signal_and_reap(&mut self, sig: i32) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling a child we spawned and have not reaped yet, so the PID is ours.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().unwrap().is_some() {
                return;
            }
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
                panic!("{} did not exit within 10 s of signal {sig}", self.name());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn kill(&mut self) {
        self.signal_and_reap(libc::SIGKILL);
    }

    pub fn terminate(&mut self) {
        self.signal_and_reap(libc::SIGTERM);
    }

    /// Starts the node again on the same ports with the same flags.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// The node's log so far (all of its lifetimes).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_log(&self, needle: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        for _ in 0..10_000 {
            if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
                return Some(line.to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- log of node {} ({}) -----\n{}----- end of {} -----",
                self.cfg.name,
                self.log_path.display(),
                self.log(),
                self.cfg.name
            );
        } else {
            let _ = std::fs::remove_file(&self.log_path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clusters

/// The cluster name nats-server nodes are given (2.9 refuses routes from another cluster).
pub const CLUSTER_NAME: &str = "ringnats-test";

/// Node names used by the cluster builders.
pub const NAMES: [&str; 8] = ["A", "B", "C", "D", "E", "F", "G", "H"];

/// Full mesh: every node has `--routes` to all others. Nodes start one after another.
pub fn start_mesh(kinds: &[Kind]) -> Vec<Node> {
    let mut cfgs: Vec<NodeConfig> = kinds
        .iter()
        .enumerate()
        .map(|(i, k)| NodeConfig::new(NAMES[i], k.clone()))
        .collect();
    let urls: Vec<String> = cfgs.iter().map(|c| c.route_url()).collect();
    for (i, c) in cfgs.iter_mut().enumerate() {
        c.routes = urls
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, u)| u.clone())
            .collect();
    }
    cfgs.into_iter().map(Node::start).collect()
}

/// Seed style: node 0 has no routes, every other node has `--routes` to node 0 only.
pub fn start_seeded(kinds: &[Kind]) -> Vec<Node> {
    let seed = NodeConfig::new(NAMES[0], kinds[0].clone());
    let seed_url = seed.route_url();
    let mut nodes = vec![Node::start(seed)];
    for (i, k) in kinds.iter().enumerate().skip(1) {
        let mut c = NodeConfig::new(NAMES[i], k.clone());
        c.routes = vec![seed_url.clone()];
        nodes.push(Node::start(c));
    }
    nodes
}

pub fn ringnats_kinds(n: usize) -> Vec<Kind> {
    vec![Kind::Ringnats; n]
}

/// Waits until what `publ` publishes reaches `sub`: `sub` subscribes to a fresh probe subject
/// (after all of its earlier subscriptions, on the same connection), then `publ` publishes to it
/// every 20 ms (at most 10 s) until the probe arrives; then the probe is unsubscribed and its
/// stragglers dropped. Other messages `sub` gets meanwhile are kept, in order.
///
/// One client's SUB/UNSUB reach a route in order, so once the probe passes, `publ`'s node has
/// applied every subscription change `sub` made before this call, and `publ`'s later publishes
/// are matched against them. Returns how long it took.
pub fn wait_path(publ: &mut Client, sub: &mut Client) -> Duration {
    let start = Instant::now();
    let subject = unique("_probe");
    let sid = (900_000_000 + PROBE_SIDS.fetch_add(1, Ordering::Relaxed)).to_string();
    sub.sub(&subject, &sid);
    sub.flush();
    let deadline = start + ROUTE_WAIT;
    let max_rounds = (ROUTE_WAIT.as_millis() / PROBE_EVERY.as_millis()) as usize + 1;
    let mut other = Vec::new();
    let mut arrived = false;
    for _ in 0..max_rounds {
        publ.publish(&subject, b"probe");
        let round_end = Instant::now() + PROBE_EVERY;
        while let Some(m) = sub.next_msg(round_end.saturating_duration_since(Instant::now())) {
            if m.subject == subject {
                arrived = true;
                break;
            }
            other.push(m);
        }
        if arrived || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        arrived,
        "no message path {} -> {} within {ROUTE_WAIT:?}",
        publ.name, sub.name
    );
    sub.unsub(&sid);
    sub.flush();
    let rest: Vec<Msg> = sub
        .pending
        .drain(..)
        .filter(|m| m.subject != subject)
        .collect();
    sub.pending.extend(other);
    sub.pending.extend(rest);
    start.elapsed()
}

static PROBE_SIDS: AtomicUsize = AtomicUsize::new(0);

/// Waits until a message published on `from` reaches a new subscriber on `to` (fresh clients
/// on both): the route between them carries messages. Returns how long it took.
pub fn wait_interest(from: &Node, to: &Node) -> Duration {
    wait_path(&mut from.client(), &mut to.client())
}

/// `wait_path` for every publisher and every subscriber.
pub fn wait_paths(publishers: &mut [Client], subscribers: &mut [Client]) {
    for p in publishers.iter_mut() {
        for s in subscribers.iter_mut() {
            wait_path(p, s);
        }
    }
}

/// `wait_interest` for every ordered pair of distinct nodes.
pub fn wait_full_mesh(nodes: &[&Node]) {
    for x in nodes {
        for y in nodes {
            if x.name() != y.name() {
                wait_interest(x, y);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw client

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    pub subject: String,
    pub sid: String,
    pub reply: Option<String>,
    pub payload: Vec<u8>,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// One parsed server→client (or route→route) frame.
#[derive(Debug)]
pub enum Frame {
    Info(String),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    Err(String),
    /// Any other line (used by the fake route: SUB, UNSUB, CONNECT ...), without CRLF.
    Line(String),
}

pub enum ReadEnd {
    Timeout,
    Eof,
}

/// A byte stream split into NATS frames with bounded reads.
pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        stream.set_nodelay(true).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), ReadEnd> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadEnd::Timeout);
        }
        self.stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(ReadEnd::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(ReadEnd::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => Err(ReadEnd::Eof),
        }
    }

    /// Takes one complete frame from the buffer, if there is one.
    fn parse(&mut self) -> Option<Frame> {
        let eol = self.buf.windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&self.buf[..eol]).into_owned();
        if let Some(args) = line.strip_prefix("MSG ") {
            let a: Vec<&str> = args.split_whitespace().collect();
            let (subject, sid, reply, size) = match a.len() {
                3 => (a[0], a[1], None, a[2]),
                4 => (a[0], a[1], Some(a[2].to_string()), a[3]),
                _ => panic!("malformed MSG line {line:?}"),
            };
            let size: usize = size.parse().unwrap_or_else(|_| panic!("bad size {line:?}"));
            let end = eol + 2 + size + 2;
            if self.buf.len() < end {
                return None;
            }
            assert_eq!(
                &self.buf[end - 2..end],
                b"\r\n",
                "payload of {line:?} not followed by CRLF"
            );
            let payload = self.buf[eol + 2..end - 2].to_vec();
            let msg = Msg {
                subject: subject.to_string(),
                sid: sid.to_string(),
                reply,
                payload,
            };
            self.buf.drain(..end);
            return Some(Frame::Msg(msg));
        }
        self.buf.drain(..eol + 2);
        Some(if line.starts_with("INFO ") {
            Frame::Info(line)
        } else if line == "PING" {
            Frame::Ping
        } else if line == "PONG" {
            Frame::Pong
        } else if line == "+OK" {
            Frame::Ok
        } else if line.starts_with("-ERR") {
            Frame::Err(line)
        } else {
            Frame::Line(line)
        })
    }

    pub fn next_frame(&mut self, deadline: Instant) -> Result<Frame, ReadEnd> {
        loop {
            if let Some(f) = self.parse() {
                return Ok(f);
            }
            self.fill(deadline)?;
        }
    }

    /// The next raw line including CRLF (for exact-byte checks of INFO lines).
    pub fn read_raw_line(&mut self, deadline: Instant) -> Result<String, ReadEnd> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            self.fill(deadline)?;
        }
    }

    /// Asserts the next bytes are exactly `want`.
    pub fn expect_bytes(&mut self, want: &[u8]) {
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < want.len() {
            if self.fill(deadline).is_err() {
                break;
            }
        }
        let n = want.len().min(self.buf.len());
        let got: Vec<u8> = self.buf.drain(..n).collect();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "unexpected bytes"
        );
    }

    /// Asserts the peer closes the connection, and returns what it sent before that.
    pub fn read_to_eof(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.fill(deadline) {
                Ok(()) => {}
                Err(ReadEnd::Eof) => break,
                Err(ReadEnd::Timeout) => panic!(
                    "no EOF within {WAIT:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }
}

/// A quiet (verbose off) protocol-0 client that keeps received MSGs in order.
pub struct Client {
    pub wire: Wire,
    pub info: String,
    pub name: String,
    pending: VecDeque<Msg>,
}

impl Client {
    /// Connects, reads INFO, sends CONNECT (verbose and pedantic off) and syncs with PING.
    pub fn connect(addr: SocketAddr, node: &str) -> Client {
        let stream = TcpStream::connect_timeout(&addr, WAIT)
            .unwrap_or_else(|e| panic!("connect to {node} at {addr}: {e}"));
        let mut wire = Wire::new(stream);
        let info = match wire.next_frame(Instant::now() + WAIT) {
            Ok(Frame::Info(line)) => line,
            Ok(f) => panic!("first frame from {node} is not INFO: {f:?}"),
            Err(_) => panic!("no INFO from {node}"),
        };
        let mut c = Client {
            wire,
            info,
            name: node.to_string(),
            pending: VecDeque::new(),
        };
        c.send(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
        c.flush();
        c
    }

    /// The JSON of the INFO this client got on connect.
    pub fn info_json(&self) -> serde_json::Value {
        serde_json::from_str(self.info.trim_start_matches("INFO ").trim()).expect("INFO json")
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.wire.send(bytes);
    }

    pub fn sub(&mut self, subject: &str, sid: &str) {
        self.send(format!("SUB {subject} {sid}\r\n").as_bytes());
    }

    pub fn qsub(&mut self, subject: &str, queue: &str, sid: &str) {
        self.send(format!("SUB {subject} {queue} {sid}\r\n").as_bytes());
    }

    pub fn unsub(&mut self, sid: &str) {
        self.send(format!("UNSUB {sid}\r\n").as_bytes());
    }

    pub fn unsub_max(&mut self, sid: &str, max: u32) {
        self.send(format!("UNSUB {sid} {max}\r\n").as_bytes());
    }

    pub fn publish(&mut self, subject: &str, payload: &[u8]) {
        let mut b = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
        b.extend_from_slice(payload);
        b.extend_from_slice(b"\r\n");
        self.send(&b);
    }

    pub fn publish_reply(&mut self, subject: &str, reply: &str, payload: &[u8]) {
        let mut b = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        b.extend_from_slice(payload);
        b.extend_from_slice(b"\r\n");
        self.send(&b);
    }

    /// Publishes `<prefix><i>` for every i in `ids` to `subject`, in one write per 1000.
    pub fn publish_ids(&mut self, subject: &str, prefix: &str, ids: impl Iterator<Item = usize>) {
        let mut b = Vec::with_capacity(64 * 1024);
        for (n, i) in ids.enumerate() {
            let p = format!("{prefix}{i}");
            b.extend_from_slice(format!("PUB {subject} {}\r\n{p}\r\n", p.len()).as_bytes());
            if n % 1000 == 999 {
                self.send(&b);
                b.clear();
            }
        }
        self.send(&b);
    }

    fn frame(&mut self, deadline: Instant) -> Option<Frame> {
        match self.wire.next_frame(deadline) {
            Ok(Frame::Ping) => {
                self.send(b"PONG\r\n");
                Some(Frame::Ping)
            }
            Ok(Frame::Err(e)) => panic!("client on {} got {e}", self.name),
            Ok(f) => Some(f),
            Err(ReadEnd::Timeout) => None,
            Err(ReadEnd::Eof) => panic!("client on {} was disconnected", self.name),
        }
    }

    /// PING, then waits for the PONG, keeping every MSG that came before it.
    pub fn flush(&mut self) {
        self.send(b"PING\r\n");
        let deadline = Instant::now() + WAIT;
        loop {
            match self.frame(deadline) {
                Some(Frame::Pong) => return,
                Some(Frame::Msg(m)) => self.pending.push_back(m),
                Some(_) => {}
                None => panic!("no PONG from {} within {WAIT:?}", self.name),
            }
        }
    }

    /// The next MSG within `within`, if any.
    pub fn next_msg(&mut self, within: Duration) -> Option<Msg> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + within;
        loop {
            match self.frame(deadline)? {
                Frame::Msg(m) => return Some(m),
                _ => continue,
            }
        }
    }

    pub fn expect_msg(&mut self) -> Msg {
        self.next_msg(WAIT)
            .unwrap_or_else(|| panic!("no MSG on {} within {WAIT:?}", self.name))
    }

    /// Reads exactly `n` MSGs (each within `WAIT`).
    pub fn expect_msgs(&mut self, n: usize) -> Vec<Msg> {
        (0..n).map(|_| self.expect_msg()).collect()
    }

    /// Syncs with the server (PING/PONG) and asserts no MSG arrived that was not read.
    pub fn expect_no_more(&mut self) {
        self.flush();
        assert!(
            self.pending.is_empty(),
            "unexpected extra messages on {}: {:?}",
            self.name,
            self.pending
        );
    }

    /// Closes the connection (FIN) now.
    pub fn close(self) {
        let _ = self.wire.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads on every client at once (one thread each) while `during` runs on this thread, until
/// `want` MSGs have arrived in total or 30 s passed. Returns each client with what it got, in
/// the order given.
pub fn gather<F: FnOnce()>(
    clients: Vec<Client>,
    want: usize,
    during: F,
) -> Vec<(Client, Vec<Msg>)> {
    let total = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let total = total.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while total.load(Ordering::SeqCst) < want && Instant::now() < deadline {
                    if let Some(m) = c.next_msg(Duration::from_millis(50)) {
                        got.push(m);
                        total.fetch_add(1, Ordering::SeqCst);
                    }
                }
                (c, got)
            })
        })
        .collect();
    during();
    handles
        .into_iter()
        .map(|h| h.join().expect("reader thread"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Fake route

/// A hand-driven route connection to a node's route port, speaking the gnatsd 1.0 route
/// protocol line by line.
pub struct FakeRoute {
    pub wire: Wire,
    /// The node's route INFO line, exactly as received (with CRLF).
    pub info_line: String,
    pub server_id: String,
}

impl FakeRoute {
    /// Dials the route port and reads the INFO line; sends nothing.
    pub fn dial(node: &Node) -> FakeRoute {
        let stream = TcpStream::connect_timeout(&node.route_addr(), WAIT)
            .unwrap_or_else(|e| panic!("dial route port of {}: {e}", node.name()));
        let mut wire = Wire::new(stream);
        let info_line = wire
            .read_raw_line(Instant::now() + WAIT)
            .unwrap_or_else(|_| panic!("no route INFO from {}", node.name()));
        FakeRoute {
            wire,
            info_line,
            server_id: unique("FAKE").replace('.', "x"),
        }
    }

    pub fn info_json(&self) -> serde_json::Value {
        let json = self
            .info_line
            .strip_prefix("INFO ")
            .unwrap_or_else(|| panic!("not an INFO line: {:?}", self.info_line));
        serde_json::from_str(json.trim_end()).expect("route INFO json")
    }

    /// Sends the route CONNECT and our INFO (as gnatsd's soliciting side does), then syncs
    /// with PING/PONG so the node has registered us when this returns.
    pub fn handshake(&mut self, creds: Option<(&str, &str)>, route_port: u16, client_url: &str) {
        let auth = match creds {
            Some((u, p)) => format!(",\"user\":\"{u}\",\"pass\":\"{p}\""),
            None => String::new(),
        };
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false{auth},\"tls_required\":false,\"name\":\"{}\"}}\r\n",
            self.server_id
        );
        let info = format!(
            "INFO {{\"server_id\":\"{}\",\"host\":\"127.0.0.1\",\"port\":{route_port},\"connect_urls\":[\"{client_url}\"]}}\r\n",
            self.server_id
        );
        self.wire.send(connect.as_bytes());
        self.wire.send(info.as_bytes());
        self.ping();
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.wire.send(bytes);
    }

    /// PING, and waits for the PONG; any other line before it is a test failure.
    pub fn ping(&mut self) {
        self.wire.send(b"PING\r\n");
        match self.next_line() {
            Some(l) if l == "PONG" => {}
            other => panic!("fake route expected PONG, got {other:?}"),
        }
    }

    /// The next protocol line (CRLF stripped) that is not a PING (PINGs are answered). A MSG
    /// is rendered as `MSG ...` header line + `|` + payload.
    pub fn next_line(&mut self) -> Option<String> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.wire.next_frame(deadline) {
                Ok(Frame::Ping) => self.wire.send(b"PONG\r\n"),
                Ok(Frame::Pong) => return Some("PONG".into()),
                Ok(Frame::Ok) => return Some("+OK".into()),
                Ok(Frame::Info(l)) | Ok(Frame::Err(l)) | Ok(Frame::Line(l)) => return Some(l),
                Ok(Frame::Msg(m)) => {
                    let reply = m.reply.map(|r| format!(" {r}")).unwrap_or_default();
                    return Some(format!(
                        "MSG {} {}{} {}|{}",
                        m.subject,
                        m.sid,
                        reply,
                        m.payload.len(),
                        String::from_utf8_lossy(&m.payload)
                    ));
                }
                Err(ReadEnd::Timeout) => return None,
                Err(ReadEnd::Eof) => panic!("node closed the fake route"),
            }
        }
    }

    pub fn expect_line(&mut self) -> String {
        self.next_line()
            .unwrap_or_else(|| panic!("fake route got nothing within {WAIT:?}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Shared checks

pub fn refs(nodes: &[Node]) -> Vec<&Node> {
    nodes.iter().collect()
}

/// Parses a `<origin>:<n>` payload.
pub fn origin_and_id(m: &Msg) -> (String, usize) {
    let t = m.text();
    let (o, i) = t
        .split_once(':')
        .unwrap_or_else(|| panic!("payload {t:?} is not origin:id"));
    (o.to_string(), i.parse().expect("numeric id"))
}

/// One subscriber per node on its own subject; every node publishes `m` messages to every
/// node's subject (including its own). Each subscriber must get each (origin, id) exactly once,
/// in publish order per origin, and nothing more after a PING/PONG.
pub fn assert_exactly_once_all_pairs(nodes: &[&Node], m: usize) {
    let tag = unique("eo");
    let subject = |n: &Node| format!("{tag}.{}", n.name());
    let mut subs = Vec::new();
    for y in nodes {
        let mut c = y.client();
        c.sub(&subject(y), "1");
        c.flush();
        subs.push(c);
    }
    let mut pubs: Vec<Client> = nodes.iter().map(|x| x.client()).collect();
    wait_paths(&mut pubs, &mut subs);
    let n = nodes.len();
    let results = gather(subs, n * n * m, || {
        for (x, p) in nodes.iter().zip(pubs.iter_mut()) {
            for y in nodes {
                p.publish_ids(&subject(y), &format!("{}:", x.name()), 0..m);
            }
            p.flush();
        }
    });
    for ((mut c, got), y) in results.into_iter().zip(nodes) {
        let mut next: HashMap<String, usize> = HashMap::new();
        for msg in &got {
            assert_eq!(msg.subject, subject(y));
            assert_eq!(msg.sid, "1");
            let (origin, id) = origin_and_id(msg);
            let want = next.entry(origin.clone()).or_insert(0);
            assert_eq!(
                id,
                *want,
                "{origin} -> {}: in order, no loss, no duplicate",
                y.name()
            );
            *want += 1;
        }
        for x in nodes {
            assert_eq!(
                next.get(x.name()).copied().unwrap_or(0),
                m,
                "{} -> {}: every message exactly once",
                x.name(),
                y.name()
            );
        }
        c.expect_no_more();
    }
}

/// A queue group with `per_node` members on every node; every node publishes
/// `m` distinct ids. Every id is delivered exactly once cluster-wide, every member gets some,
/// and each member gets messages published on every node.
pub fn assert_queue_exactly_once(nodes: &[&Node], per_node: usize, m: usize) {
    let subject = unique("q");
    let mut members = Vec::new();
    for y in nodes {
        for _ in 0..per_node {
            let mut c = y.client();
            c.qsub(&subject, "workers", "1");
            c.flush();
            members.push(c);
        }
    }
    let mut pubs: Vec<Client> = nodes.iter().map(|x| x.client()).collect();
    wait_paths(&mut pubs, &mut members);
    let n = nodes.len();
    let results = gather(members, n * m, || {
        for (x, p) in nodes.iter().zip(pubs.iter_mut()) {
            p.publish_ids(&subject, &format!("{}:", x.name()), 0..m);
            p.flush();
        }
    });
    let mut seen: HashMap<(String, usize), usize> = HashMap::new();
    for (i, (mut c, got)) in results.into_iter().enumerate() {
        let home = nodes[i / per_node].name();
        let origins: HashSet<String> = got.iter().map(|m| origin_and_id(m).0).collect();
        for x in nodes {
            assert!(
                origins.contains(x.name()),
                "member {i} on {home} got nothing published on {} ({} msgs in all)",
                x.name(),
                got.len()
            );
        }
        for msg in &got {
            *seen.entry(origin_and_id(msg)).or_insert(0) += 1;
        }
        c.expect_no_more();
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &c)| c > 1).take(5).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    assert_eq!(seen.len(), n * m, "every message delivered once");
}
