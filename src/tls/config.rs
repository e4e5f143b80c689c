//! Client TLS settings → a rustls [`ServerConfig`] (gnatsd 1.0's `GenTLSConfig`, spec §5).
//!
//! Reads the certificate, key and CA files (start-up only) and maps gnatsd's Go cipher-suite
//! and curve names to rustls with the `ring` provider. Differences from 1.0, all documented
//! in docs/config.md:
//! - Cipher suites: only the ECDHE AES-GCM and ChaCha20-Poly1305 suites exist in rustls; the
//!   RC4, 3DES, CBC and plain-RSA names 1.0 accepts are refused with a message naming the
//!   supported ones. TLS 1.3 (which 1.0's Go 1.8 could not do) is always offered, with its
//!   own three suites, as a recent Go build of 1.0 does.
//! - Curves: `CurveP521` is accepted and skipped (rustls with ring has no P-521).
//! - `verify` without `ca_file` is an error (1.0 falls back to the system roots).

use super::super::options::{go_io_reason, TlsOptions};
use rustls::crypto::ring::{cipher_suite as cs, default_provider, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The TLS 1.2 suites rustls has, in Go ≥ 1.8's default order (gnatsd 1.0's defaults).
const DEFAULT_TLS12: &[&str] = &[
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
];

/// Names gnatsd 1.0 accepts that no rustls provider implements.
const UNSUPPORTED: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
];

/// A Go cipher-suite name (as gnatsd's `cipher_suites` takes it) → the rustls suite.
pub fn cipher_suite(name: &str) -> Result<SupportedCipherSuite, String> {
    Ok(match name {
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        n if UNSUPPORTED.contains(&n) => {
            return Err(format!(
                "cipher suite {n} is not supported (no RC4, 3DES, CBC or RSA key exchange); \
                 supported: {}",
                DEFAULT_TLS12.join(", ")
            ))
        }
        n => return Err(format!("Unrecognized cipher {n}")),
    })
}

/// A Go curve name → the rustls key-exchange group; `None` for `CurveP521` (skipped).
pub fn curve(name: &str) -> Result<Option<&'static dyn SupportedKxGroup>, String> {
    Ok(match name {
        "CurveP256" => Some(kx_group::SECP256R1),
        "CurveP384" => Some(kx_group::SECP384R1),
        "X25519" => Some(kx_group::X25519),
        "CurveP521" => None,
        n => return Err(format!("Unrecognized curve preference {n}")),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path)
        .map_err(|e| format!("open {}: {}", path.display(), go_io_reason(&e.to_string())))
}

fn pair_error(why: impl std::fmt::Display) -> String {
    format!("error parsing X509 certificate/key pair: {why}")
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path).map_err(pair_error)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(pair_error)?;
    if certs.is_empty() {
        return Err(pair_error(
            "tls: failed to find any PEM data in certificate input",
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path).map_err(pair_error)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(pair_error)?
        .ok_or_else(|| pair_error("tls: failed to find any PEM data in key input"))
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|_| "failed to parse root ca certificate".to_string())?;
        roots
            .add(cert)
            .map_err(|_| "failed to parse root ca certificate".to_string())?;
    }
    if roots.is_empty() {
        return Err("failed to parse root ca certificate".into());
    }
    Ok(roots)
}

/// The crypto provider with the configured suites and curves (TLS 1.3 suites first).
fn provider(opts: &TlsOptions) -> Result<CryptoProvider, String> {
    let mut p = default_provider();
    let tls12: Vec<&str> = if opts.cipher_suites.is_empty() {
        DEFAULT_TLS12.to_vec()
    } else {
        opts.cipher_suites.iter().map(String::as_str).collect()
    };
    let mut suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    for name in tls12 {
        suites.push(cipher_suite(name)?);
    }
    p.cipher_suites = suites;
    if !opts.curve_preferences.is_empty() {
        let mut groups = Vec::new();
        for name in &opts.curve_preferences {
            if let Some(g) = curve(name)? {
                groups.push(g);
            }
        }
        if groups.is_empty() {
            return Err(
                "curve_preferences: CurveP521 is not supported; add CurveP384, CurveP256 or X25519"
                    .into(),
            );
        }
        p.kx_groups = groups;
    }
    Ok(p)
}

/// Reads the files and builds the server side of client TLS. Errors are gnatsd's texts
/// (`error parsing X509 certificate/key pair: open x.pem: no such file or directory`,
/// `failed to parse root ca certificate`, ...).
pub fn server_config(opts: &TlsOptions) -> Result<Arc<ServerConfig>, String> {
    let empty = Path::new("");
    let certs = load_certs(opts.cert_file.as_deref().unwrap_or(empty))?;
    let key = load_key(opts.key_file.as_deref().unwrap_or(empty))?;
    let roots = opts.ca_file.as_deref().map(load_roots).transpose()?;
    let provider = Arc::new(provider(opts)?);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if opts.verify {
        let roots = roots.ok_or(
            "TLS verify needs a CA file to check client certificates against (ca_file or --tlscacert)",
        )?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("failed to parse root ca certificate: {e}"))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder.with_single_cert(certs, key).map_err(pair_error)?;
    // 1.0 sets PreferServerCipherSuites.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// The server side of HTTPS monitoring (`-ms`): the client TLS certificate, suites and
/// curves, never asking for a client certificate (gnatsd 1.0 clears `ClientAuth`).
pub fn monitor_server_config(opts: &TlsOptions) -> Result<Arc<ServerConfig>, String> {
    let opts = TlsOptions {
        verify: false,
        ..opts.clone()
    };
    server_config(&opts)
}

/// Route TLS (spec §2.9): the same certificate on both sides of a route; the peer's is
/// always required and verified against `ca_file`, which is also the root pool for dialling.
#[derive(Debug, Clone)]
pub struct RouteTls {
    /// For accepted routes.
    pub server: Arc<ServerConfig>,
    /// For dialled routes (the route URL's host is the expected name).
    pub client: Arc<rustls::ClientConfig>,
    pub timeout: std::time::Duration,
}

impl RouteTls {
    pub fn new(opts: &TlsOptions) -> Result<RouteTls, String> {
        if opts.ca_file.is_none() {
            return Err(
                "cluster TLS needs a ca_file: route certificates are always verified".into(),
            );
        }
        let server = server_config(&TlsOptions {
            verify: true,
            ..opts.clone()
        })?;
        let empty = Path::new("");
        let certs = load_certs(opts.cert_file.as_deref().unwrap_or(empty))?;
        let key = load_key(opts.key_file.as_deref().unwrap_or(empty))?;
        let roots = load_roots(opts.ca_file.as_deref().unwrap_or(empty))?;
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider(opts)?))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(pair_error)?;
        Ok(RouteTls {
            server,
            client: Arc::new(client),
            timeout: opts.timeout,
        })
    }
}

/// Client TLS as the reactors use it.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<ServerConfig>,
    pub verify: bool,
    pub timeout: std::time::Duration,
}

impl ClientTls {
    pub fn new(opts: &TlsOptions) -> Result<ClientTls, String> {
        Ok(ClientTls {
            config: server_config(opts)?,
            verify: opts.verify,
            timeout: opts.timeout,
        })
    }
}
