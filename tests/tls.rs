//! Client TLS (spec §5): a real client (async-nats) over TLS, with and without client
//! certificates; the raw wire (INFO in clear, plain CONNECT refused, handshake timeout); the
//! binary's flags, config block and start-up errors. Certificates are generated per test
//! (rcgen: a throwaway CA, a server certificate for 127.0.0.1, a client certificate).

mod common;
use common::*;
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ringnats::options::{ClusterOptions, RouteUrl, TlsOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);
const BIN: &str = env!("CARGO_BIN_EXE_ringnats");

/// PEM files of one test's throwaway PKI, removed when dropped.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("ringnats-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ringnats test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = usages;
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    // Both usages: routes present the server certificate as a client too.
    let (srv, srv_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (cli, cli_key) = leaf(
        vec!["client".into()],
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    );
    let write = |file: &str, text: &str| {
        let p = dir.join(file);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        cert: write("server.pem", &srv),
        key: write("server-key.pem", &srv_key),
        client_cert: write("client.pem", &cli),
        client_key: write("client-key.pem", &cli_key),
        dir,
    }
}

fn tls_opts(p: &Pki, verify: bool) -> TlsOptions {
    TlsOptions {
        cert_file: Some(p.cert.clone()),
        key_file: Some(p.key.clone()),
        ca_file: Some(p.ca.clone()),
        verify,
        ..TlsOptions::default()
    }
}

async fn tls_client(
    addr: std::net::SocketAddr,
    p: &Pki,
    with_cert: bool,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut o = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(p.ca.clone());
    if with_cert {
        o = o.add_client_certificate(p.client_cert.clone(), p.client_key.clone());
    }
    timeout(T, o.connect(format!("nats://{addr}")))
        .await
        .expect("connect ends in time")
}

/// Returns once the server has handled everything `nc` sent before (async-nats's `flush`
/// only writes the socket): a message to itself through the server.
async fn synced(nc: &async_nats::Client) {
    let subject = nc.new_inbox();
    let mut sub = nc.subscribe(subject.clone()).await.unwrap();
    nc.publish(subject, "sync".into()).await.unwrap();
    timeout(T, sub.next()).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_nats_publishes_and_subscribes_over_tls() {
    let p = pki("pubsub");
    let srv = start_with(|o| o.tls = Some(tls_opts(&p, false)));
    let sub_nc = tls_client(srv.addr, &p, false).await.expect("TLS connect");
    let pub_nc = tls_client(srv.addr, &p, false).await.expect("TLS connect");
    let mut sub = sub_nc.subscribe("tls.>").await.unwrap();
    synced(&sub_nc).await;
    // Small and large messages: the large ones span many records and several sends.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..20u32 {
        pub_nc
            .publish(format!("tls.{i}"), format!("m{i}").into())
            .await
            .unwrap();
        pub_nc.publish("tls.big", big.clone().into()).await.unwrap();
    }
    pub_nc.flush().await.unwrap();
    for i in 0..20u32 {
        let m = timeout(T, sub.next()).await.unwrap().unwrap();
        assert_eq!(m.subject.as_str(), format!("tls.{i}"));
        assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
        let m = timeout(T, sub.next()).await.unwrap().unwrap();
        assert_eq!(m.payload.len(), big.len());
        assert!(m.payload[..] == big[..], "large payload intact");
    }
    // Request/reply too.
    let mut svc = sub_nc.subscribe("svc").await.unwrap();
    synced(&sub_nc).await;
    let responder = sub_nc.clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            if let Some(r) = m.reply {
                responder.publish(r, m.payload).await.unwrap();
            }
        }
    });
    let resp = timeout(T, pub_nc.request("svc", "ping".into()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("request: {e:?}"));
    assert_eq!(&resp.payload[..], b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bcrypt_user_connects_over_tls() {
    // The CONNECT waits for bcrypt while what followed it in the same TLS record (the
    // client's PING) is held as decrypted input, then parsed after the verdict.
    let p = pki("bcrypt");
    let hash = bcrypt::hash("alicepw", 6).unwrap();
    let srv = start_with(|o| {
        o.tls = Some(tls_opts(&p, false));
        o.users = vec![ringnats::auth::UserConfig {
            user: "alice".into(),
            pass: hash,
            permissions: None,
        }];
    });
    let connect = |pass: &str| {
        async_nats::ConnectOptions::with_user_and_password("alice".into(), pass.into())
            .require_tls(true)
            .add_root_certificates(p.ca.clone())
            .connect(format!("nats://{}", srv.addr))
    };
    let nc = timeout(T, connect("alicepw"))
        .await
        .expect("connect ends in time")
        .expect("bcrypt user over TLS");
    let mut sub = nc.subscribe("tls.auth").await.unwrap();
    synced(&nc).await;
    nc.publish("tls.auth", "hi".into()).await.unwrap();
    let m = timeout(T, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"hi");
    let refused = timeout(T, connect("wrong"))
        .await
        .expect("connect ends in time");
    assert!(refused.is_err(), "a wrong password is refused over TLS");
}

#[test]
fn info_is_sent_in_clear_and_plain_connect_is_refused() {
    let p = pki("plain");
    let srv = start_with(|o| o.tls = Some(tls_opts(&p, false)));
    let mut raw = Raw::connect(srv.addr);
    assert!(raw.info.contains("\"tls_required\":true"), "{}", raw.info);
    assert!(raw.info.contains("\"ssl_required\":true"), "{}", raw.info);
    assert!(raw.info.contains("\"tls_verify\":false"), "{}", raw.info);
    raw.send(b"CONNECT {\"verbose\":false}\r\nPING\r\n");
    raw.expect(b"-ERR 'Secure Connection - TLS Required'\r\n");
    raw.expect_eof();
}

#[test]
fn silent_client_is_closed_at_the_handshake_timeout() {
    let p = pki("timeout");
    let srv = start_with(|o| {
        o.tls = Some(TlsOptions {
            timeout: Duration::from_millis(200),
            ..tls_opts(&p, false)
        })
    });
    let started = Instant::now();
    let mut raw = Raw::connect(srv.addr);
    raw.expect(b"-ERR 'Secure Connection - TLS Required'\r\n");
    raw.expect_eof();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(180) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_requires_a_client_certificate_from_the_ca() {
    let p = pki("verify");
    let srv = start_with(|o| o.tls = Some(tls_opts(&p, true)));
    let raw = Raw::connect(srv.addr);
    assert!(raw.info.contains("\"tls_verify\":true"), "{}", raw.info);
    drop(raw);
    // With the client certificate: works.
    let nc = tls_client(srv.addr, &p, true).await.expect("TLS connect");
    let mut sub = nc.subscribe("v").await.unwrap();
    nc.publish("v", "ok".into()).await.unwrap();
    let m = timeout(T, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"ok");
    // Without one: refused (the handshake fails, or the first read after it).
    let refused = async {
        let nc = tls_client(srv.addr, &p, false).await?;
        nc.flush()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(
        timeout(T, refused).await.expect("ends in time").is_err(),
        "a client without a certificate must not get through"
    );
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn routes_run_over_mutually_verified_tls() {
    let p = pki("routes");
    let cluster = |routes: Vec<RouteUrl>| ClusterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        routes,
        tls: Some(tls_opts(&p, true)),
        ..ClusterOptions::default()
    };
    let a = start_with(|o| o.cluster = Some(cluster(Vec::new())));
    let a_route = a.route_addr.unwrap();
    // A plain-text peer on the route port is refused in clear, before any INFO.
    let mut plain = std::net::TcpStream::connect(a_route).unwrap();
    std::io::Write::write_all(&mut plain, b"CONNECT {}\r\n").unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    let mut got = String::new();
    plain.read_to_string(&mut got).unwrap();
    assert_eq!(got, "-ERR 'Secure Connection - TLS Required'\r\n");
    let url = RouteUrl::parse(&format!("nats-route://127.0.0.1:{}", a_route.port())).unwrap();
    let b = start_with(|o| o.cluster = Some(cluster(vec![url])));
    let routes = |s: &ringnats::server::Running| s.server.cluster.as_ref().unwrap().route_count();
    wait_until("the TLS route", || routes(&a) == 1 && routes(&b) == 1);
    let mut sub = Raw::quiet(a.addr);
    sub.send(b"SUB over.tls 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    wait_until("the SUB on B", || b.server.sublist.count() == 1);
    let mut publisher = Raw::quiet(b.addr);
    publisher.send(b"PUB over.tls 5\r\nhello\r\nPING\r\n");
    publisher.expect(b"PONG\r\n");
    sub.expect(b"MSG over.tls 1 5\r\nhello\r\n");
}

/// Publishes `PUB <subject> 2 hi` on `publisher` every 100 ms until `subscriber` (subscribed
/// with sid 1) gets the message: interest crosses a route asynchronously.
fn publish_until_received(subscriber: &mut Raw, publisher: &mut Raw, subject: &str) {
    let deadline = Instant::now() + T;
    let want = format!("MSG {subject} 1 2\r\nhi\r\n");
    let mut got = Vec::new();
    subscriber
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while !String::from_utf8_lossy(&got).contains(&want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?}, got {:?}",
            String::from_utf8_lossy(&got)
        );
        publisher.send(format!("PUB {subject} 2\r\nhi\r\n").as_bytes());
        let mut buf = [0u8; 4096];
        if let Ok(n) = subscriber.stream.read(&mut buf) {
            assert!(n > 0, "subscriber closed");
            got.extend_from_slice(&buf[..n]);
        }
    }
}

#[test]
fn routes_over_tls_interoperate_with_gnatsd_1_0() {
    let gnatsd = std::env::var_os("GNATSD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/gnatsd-1.0.0")
        });
    if !gnatsd.is_file() {
        println!("SKIP: no gnatsd 1.0 binary (set GNATSD_BIN)");
        return;
    }
    let p = pki("gnatsd");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    // gnatsd dials ringnats's route port: gnatsd is the TLS client, ringnats the server
    // (ringnats as the client is the route test above, and was checked by hand against gnatsd).
    let r = start_with(|o| {
        o.cluster = Some(ClusterOptions {
            host: "127.0.0.1".into(),
            port: 0,
            tls: Some(tls_opts(&p, true)),
            ..ClusterOptions::default()
        })
    });
    let r_route = r.route_addr.unwrap().port();
    let (client_port, route_port) = (free(), free());
    let conf = p.dir.join("gnatsd.conf");
    let text = format!(
        "listen: 127.0.0.1:{client_port}\ncluster {{\n  listen: 127.0.0.1:{route_port}\n  \
         routes: [ nats-route://127.0.0.1:{r_route} ]\n  \
         tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", timeout: 2 }}\n}}\n",
        path(&p.cert),
        path(&p.key),
        path(&p.ca)
    );
    std::fs::write(&conf, text).unwrap();
    /// Kills and reaps gnatsd when the test ends, passed or not.
    struct Gnatsd(std::process::Child);
    impl Drop for Gnatsd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _gnatsd = Gnatsd(
        Command::new(&gnatsd)
            .args(["-c", path(&conf)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let g_addr: std::net::SocketAddr = ([127, 0, 0, 1], client_port).into();
    wait_until("gnatsd to listen", || {
        std::net::TcpStream::connect(g_addr).is_ok()
    });
    let cluster = r.server.cluster.as_ref().unwrap();
    wait_until("the TLS route from gnatsd", || cluster.route_count() == 1);
    // Both directions, with interest crossing the route each way.
    let mut on_r = Raw::quiet(r.addr);
    let mut on_g = Raw::quiet(g_addr);
    on_r.send(b"SUB to.ringnats 1\r\nPING\r\n");
    on_r.expect(b"PONG\r\n");
    publish_until_received(&mut on_r, &mut on_g, "to.ringnats");
    let mut on_g2 = Raw::quiet(g_addr);
    on_g2.send(b"SUB to.gnatsd 1\r\nPING\r\n");
    on_g2.expect(b"PONG\r\n");
    publish_until_received(&mut on_g2, &mut on_r, "to.gnatsd");
}

// ---- the binary: flags, config block, start-up errors ----------------------------------------

/// Kills the server if a test fails half-way.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: signalling a child we spawned (harmless if it has already exited).
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
    }
}

/// Runs the binary expecting it to exit on its own; returns its status and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _reap = Reap(child.id());
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// Starts the binary; returns the child, its client port and whether it logged TLS.
fn spawn(args: &[&str]) -> (std::process::Child, u16, bool) {
    let mut child = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let (mut port, mut tls) = (None, false);
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.split("Listening for client connections on ").nth(1) {
            port = a.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        }
        tls |= line.contains("TLS required for client connections");
        if line.contains("Server is ready") {
            break;
        }
    }
    (child, port.expect("listen address logged"), tls)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tls_flags_need_a_certificate_and_a_key() {
    let (code, err) = run_to_exit(&["--tls"]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(1),
            "TLS Server certificate must be present and valid.\n"
        )
    );
    let (code, err) = run_to_exit(&["--tlsverify", "--tlscert", "c.pem"]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(1),
            "TLS Server private key must be present and valid.\n"
        )
    );
    let (code, err) = run_to_exit(&["--tls", "--tlscert", "/nope/c.pem", "--tlskey", "k.pem"]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(1),
            "error parsing X509 certificate/key pair: open /nope/c.pem: no such file or directory\n"
        )
    );
    let p = pki("badca");
    let junk = p.dir.join("junk.pem");
    std::fs::write(&junk, "junk\n").unwrap();
    let args = [
        "--tlsverify",
        "--tlscert",
        path(&p.cert),
        "--tlskey",
        path(&p.key),
        "--tlscacert",
        path(&junk),
    ];
    let (code, err) = run_to_exit(&args);
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "failed to parse root ca certificate\n")
    );
}

#[test]
fn tls_flags_and_config_block_start_a_tls_server() {
    let p = pki("bin");
    // Flags.
    let (child, port, logged) = spawn(&[
        "--tlsverify",
        "--tlscert",
        path(&p.cert),
        "--tlskey",
        path(&p.key),
        "--tlscacert",
        path(&p.ca),
    ]);
    let _reap = Reap(child.id());
    assert!(logged, "says TLS is required");
    let mut raw = Raw::connect(([127, 0, 0, 1], port).into());
    assert!(raw.info.contains("\"tls_verify\":true"), "{}", raw.info);
    raw.send(b"CONNECT {}\r\n");
    raw.expect(b"-ERR 'Secure Connection - TLS Required'\r\n");
    raw.expect_eof();
    // The config file's block.
    let conf = p.dir.join("gnatsd.conf");
    let text = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  timeout: 0.25\n}}\n",
        path(&p.cert),
        path(&p.key)
    );
    std::fs::write(&conf, text).unwrap();
    let (child, port, logged) = spawn(&["-c", path(&conf)]);
    let _reap2 = Reap(child.id());
    assert!(logged, "says TLS is required");
    let started = Instant::now();
    let mut raw = Raw::connect(([127, 0, 0, 1], port).into());
    assert!(raw.info.contains("\"tls_required\":true"), "{}", raw.info);
    assert!(raw.info.contains("\"tls_verify\":false"), "{}", raw.info);
    raw.expect(b"-ERR 'Secure Connection - TLS Required'\r\n");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A wrong path in the block: gnatsd's text, exit 1.
    std::fs::write(&conf, "tls { cert_file: /nope/c.pem, key_file: k.pem }\n").unwrap();
    let (code, err) = run_to_exit(&["-c", path(&conf)]);
    assert_eq!(
        (code, err.as_str()),
        (
            Some(1),
            "error parsing X509 certificate/key pair: open /nope/c.pem: no such file or directory\n"
        )
    );
}

// ---- HTTPS monitoring (-ms) ------------------------------------------------------------------

/// Starts the binary; returns the child and the address it logged for `Starting https monitor
/// on`.
fn spawn_https_monitor(args: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut addr = None;
    let mut line = String::new();
    for _ in 0..20 {
        line.clear();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(a) = line.split("Starting https monitor on ").nth(1) {
            addr = a.trim().parse().ok();
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    let addr = addr.expect("logs `Starting https monitor on <addr>`");
    (child, addr)
}

/// GET `path` over HTTPS with a rustls client trusting `ca`; returns the response.
fn https_get(addr: std::net::SocketAddr, ca: &Path, path: &str) -> String {
    use std::io::Write;
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(T)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    // The server may close without close_notify after `Connection: close`.
    let _ = tls.read_to_end(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn https_monitor_serves_varz_with_the_client_certificate() {
    let p = pki("https");
    // --tlsverify: the monitor still asks no client certificate (gnatsd 1.0 clears it).
    let (child, addr) = spawn_https_monitor(&[
        "-ms",
        "-1",
        "--tlsverify",
        "--tlscert",
        path(&p.cert),
        "--tlskey",
        path(&p.key),
        "--tlscacert",
        path(&p.ca),
    ]);
    let _reap = Reap(child.id());
    let resp = https_get(addr, &p.ca, "/varz");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    let body = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["https_port"], addr.port() as u64, "{body}");
    assert_eq!(v["tls_required"], true, "{body}");
    let resp = https_get(addr, &p.ca, "/healthz");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    // Plain HTTP on the HTTPS port gets no answer; the connection is closed.
    let mut plain = std::net::TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    std::io::Write::write_all(&mut plain, b"GET /varz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!String::from_utf8_lossy(&got).contains("server_id"));
    // A client that never starts its handshake is dropped at the read timeout.
    let started = Instant::now();
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // And the port still serves.
    let resp = https_get(addr, &p.ca, "/varz");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
}

#[test]
fn https_monitor_needs_tls() {
    // gnatsd 1.0: `[FTL] Can't start monitoring: TLS cert and key required for HTTPS`, exit 1.
    let (code, err) = run_to_exit(&["-ms", "-1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("[FTL] Can't start monitoring: TLS cert and key required for HTTPS\n"),
        "{err}"
    );
    assert!(!err.contains("Listening for client connections"), "{err}");
    // -m and -ms together stay refused.
    let p = pki("https-both");
    let (code, err) = run_to_exit(&[
        "-m",
        "-1",
        "-ms",
        "-1",
        "--tls",
        "--tlscert",
        path(&p.cert),
        "--tlskey",
        path(&p.key),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("can't specify both HTTP"), "{err}");
}
