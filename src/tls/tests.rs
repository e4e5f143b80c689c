//! The session against an in-memory rustls client: no sockets, bytes moved by hand.

use super::*;
use crate::options::TlsOptions;
use rcgen::{CertificateParams, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::time::Duration;

struct Peer {
    server: TlsSession,
    client: ClientConnection,
    /// The server's outbound queue.
    queue: Vec<u8>,
    /// Plaintext the client received.
    got: Vec<u8>,
}

/// A server session for a fresh self-signed certificate, and a client that trusts it.
fn peer() -> Peer {
    peer_with(
        TlsOptions::default(),
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// As [`peer`], with the server's suites and curves from `opts` and the client's versions.
fn peer_with(opts: TlsOptions, versions: &[&'static rustls::SupportedProtocolVersion]) -> Peer {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!(
        "ringnats-tls-unit-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let cfg = server_config(&TlsOptions {
        cert_file: Some(c),
        key_file: Some(k),
        ..opts
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    Peer {
        server: TlsSession::new(cfg, Instant::now() + Duration::from_secs(1)).unwrap(),
        client: ClientConnection::new(Arc::new(client_cfg), name).unwrap(),
        queue: Vec::new(),
        got: Vec::new(),
    }
}

impl Peer {
    /// Client → server: everything the client has to send; returns the plaintext parsed.
    fn client_sends(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        let mut parsed = Vec::new();
        self.server
            .read(&wire, |p| {
                parsed.extend_from_slice(p);
                ControlFlow::Continue(())
            })
            .unwrap();
        parsed
    }

    /// Server → client, one send at a time; returns the sizes of the sends.
    fn server_sends(&mut self, closing: bool) -> Vec<usize> {
        let mut sends = Vec::new();
        loop {
            let mut sending = Vec::new();
            let queue = &mut self.queue;
            let n = self.server.write(
                |buf| {
                    std::mem::swap(queue, buf);
                    buf.len()
                },
                &mut sending,
                closing,
            );
            if n == 0 {
                return sends;
            }
            sends.push(n);
            let mut rd = sending.as_slice();
            while !rd.is_empty() {
                self.client.read_tls(&mut rd).unwrap();
                let state = self.client.process_new_packets().unwrap();
                let mut buf = vec![0; state.plaintext_bytes_to_read()];
                self.client.reader().read_exact(&mut buf).unwrap();
                self.got.extend_from_slice(&buf);
            }
        }
    }

    fn handshake(&mut self) {
        for _ in 0..4 {
            self.client_sends();
            self.server_sends(false);
        }
        assert!(self.server.is_open() && !self.client.is_handshaking());
    }
}

#[test]
fn handshake_then_plaintext_both_ways() {
    let mut p = peer();
    assert_eq!(p.server.phase(), Phase::Hello);
    p.handshake();
    assert!(p
        .server
        .describe()
        .starts_with("TLS version 1.3, cipher suite TLS13_"));
    p.client
        .writer()
        .write_all(b"CONNECT {}\r\nPING\r\n")
        .unwrap();
    assert_eq!(p.client_sends(), b"CONNECT {}\r\nPING\r\n");
    p.queue.extend_from_slice(b"PONG\r\n");
    p.server_sends(false);
    assert_eq!(p.got, b"PONG\r\n");
}

#[test]
fn output_is_encrypted_in_bounded_sends() {
    let mut p = peer();
    p.handshake();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    p.queue = big.clone();
    let sends = p.server_sends(false);
    assert!(sends.len() > 3, "{sends:?}");
    // One record's overshoot at most.
    assert!(sends.iter().all(|&n| n < SEND_MAX + 20 * 1024), "{sends:?}");
    assert_eq!(p.got, big);
    assert!(p.server.is_idle());
}

#[test]
fn closing_sends_the_queue_then_close_notify() {
    let mut p = peer();
    p.handshake();
    p.queue.extend_from_slice(b"-ERR 'Stale Connection'\r\n");
    p.server_sends(true);
    assert_eq!(p.got, b"-ERR 'Stale Connection'\r\n");
    let mut buf = [0u8; 1];
    assert_eq!(
        p.client.reader().read(&mut buf).unwrap(),
        0,
        "close_notify seen"
    );
}

#[test]
fn plain_text_first_is_not_tls_and_errors_go_out_in_clear() {
    let mut p = peer();
    let r = p
        .server
        .read(b"CONNECT {}\r\n", |_| ControlFlow::Continue(()));
    assert!(matches!(r, Err(ReadError::NotTls)));
    // Before the handshake the queue (the -ERR) is sent as it is, and only when closing.
    p.queue
        .extend_from_slice(b"-ERR 'Secure Connection - TLS Required'\r\n");
    let mut sending = Vec::new();
    let mut take = |buf: &mut Vec<u8>| {
        std::mem::swap(&mut p.queue, buf);
        buf.len()
    };
    assert_eq!(p.server.write(&mut take, &mut sending, false), 0);
    assert!(p.server.write(&mut take, &mut sending, true) > 0);
    assert_eq!(sending, b"-ERR 'Secure Connection - TLS Required'\r\n");
}

#[test]
fn a_broken_handshake_is_a_handshake_error() {
    let mut p = peer();
    let r = p.server.read(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5], |_| {
        ControlFlow::Continue(())
    });
    assert!(matches!(r, Err(ReadError::Handshake(_))), "{r:?}");
}

#[test]
fn configured_tls12_suite_and_curve_are_used() {
    let mut p = peer_with(
        TlsOptions {
            cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into()],
            curve_preferences: vec!["CurveP521".into(), "CurveP384".into()],
            ..TlsOptions::default()
        },
        &[&rustls::version::TLS12],
    );
    p.handshake();
    assert_eq!(
        p.server.describe(),
        "TLS version 1.2, cipher suite TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    );
    assert_eq!(
        p.client.negotiated_key_exchange_group().map(|g| g.name()),
        Some(rustls::NamedGroup::secp384r1)
    );
}

#[test]
fn unsupported_or_unknown_names_are_refused() {
    assert!(cipher_suite("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA")
        .unwrap_err()
        .contains("not supported"));
    assert_eq!(
        cipher_suite("NOPE").unwrap_err(),
        "Unrecognized cipher NOPE"
    );
    assert!(curve("CurveP521").unwrap().is_none(), "accepted, skipped");
    assert_eq!(
        curve("P999").err().unwrap(),
        "Unrecognized curve preference P999"
    );
}
