//! The monitoring port (`-m`, or `-ms` over HTTPS): gnatsd 1.0's `/varz`, `/connz`, `/routez`, `/subsz` (and
//! `/subscriptionsz`), 2.x's `/healthz`, Prometheus `/metrics`, an index page at `/` and a
//! live page at `/live`.
//!
//! It runs on its own thread with a current-thread tokio runtime and hyper's HTTP/1.1
//! server, never on a reactor. Connections are bounded ([`MAX_CONNECTIONS`], more wait in
//! the listen backlog), and so are a request's head ([`MAX_REQUEST_BYTES`]), the time to
//! read it and a connection's lifetime. Server-wide figures come from the reactors'
//! published counters ([`crate::stats`]); connection lists from each reactor through a
//! snapshot request in its mailbox, waited for at most [`GATHER_WAIT`] (a reactor that
//! has not answered by then is left out of that answer), so a request never blocks the
//! data path.
//!
//! With `-ms` the same endpoints are served over HTTPS with the client TLS certificate
//! (gnatsd 1.0's way; client certificates are not asked for, even with `--tlsverify`). The
//! handshake runs in the connection's task, under the connection permit, bounded by
//! [`READ_TIMEOUT`].

pub mod endpoints;
pub mod json;
pub mod metrics;
pub mod pages;

use crate::mailbox::ReactorHandle;
use crate::shared::Shared;
use crate::stats::{self, ReactorSnapshot, SnapshotKind, SnapshotQuery, SnapshotRequest, SortKey};
use bytes::Bytes;
use endpoints::{ConnzParams, Usage};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, Semaphore};
use tokio_rustls::TlsAcceptor;

/// Monitoring connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head (request line and headers).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Time to send a request's head, and for HTTPS to finish the TLS handshake (gnatsd's
/// monitor has 2 s read and write timeouts).
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection is closed (gracefully, between requests) after this long.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a request waits for the reactors' connection snapshots.
pub const GATHER_WAIT: Duration = Duration::from_millis(50);

/// Paths counted in `/varz`'s `http_req_stats` (gnatsd 1.0's five) and the ones ringnats
/// adds (counted only in `/metrics`).
const PATHS: [&str; 8] = [
    "/", "/connz", "/routez", "/subsz", "/varz", "/healthz", "/metrics", "/live",
];
const GNATSD_PATHS: usize = 5;

struct State {
    shared: Arc<Shared>,
    handles: Arc<[ReactorHandle]>,
    addr: SocketAddr,
    requests: [AtomicU64; PATHS.len()],
}

/// The running monitoring server. Stops (and joins its thread) when dropped.
pub struct Monitor {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Monitor {
    /// Binds `addr` (port 0: any free port) and starts serving on a new thread: HTTP, or
    /// HTTPS with `tls`.
    pub fn start(
        shared: Arc<Shared>,
        handles: Arc<[ReactorHandle]>,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Monitor> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        crate::info!("Starting {scheme} monitor on {addr}");
        let tls = tls.map(TlsAcceptor::from);
        let state = Arc::new(State {
            shared,
            handles,
            addr,
            requests: Default::default(),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || runtime.block_on(serve(listener, state, tls, stopped)))?;
        Ok(Monitor {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::error!("http monitor: {e}");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Take a permit first: over the bound, new connections wait in the backlog.
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = &mut stopped => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors or similar: say so and breathe.
                    crate::error!("http monitor: error accepting connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, state).await,
                Some(acceptor) => {
                    // A client that does not finish its handshake in time is dropped.
                    match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, state).await,
                        Ok(Err(e)) => crate::debug!("https monitor: TLS handshake error: {e}"),
                        Err(_) => crate::debug!("https monitor: TLS handshake timeout"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves one connection's requests until it closes or its lifetime is over.
async fn serve_connection<S>(stream: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(respond(&state, req).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_BYTES)
        .title_case_headers(true)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(READ_TIMEOUT, conn).await;
        }
    }
}

type Resp = Response<Full<Bytes>>;

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn not_found() -> Resp {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n",
    )
}

fn bad_request(text: String) -> Resp {
    response(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", text)
}

/// A JSONP callback name: a JavaScript identifier path (`cb`, `jQuery1_2.x`, `a[0]`).
/// gnatsd copies any value; anything else is refused here so the endpoint cannot be
/// made to serve arbitrary script.
fn valid_callback(cb: &str) -> bool {
    !cb.is_empty()
        && cb.len() <= 128
        && cb
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_$.[]".contains(&b))
}

/// JSON as gnatsd sends it, or `callback(<json>)` as JavaScript (JSONP).
fn json_response(status: StatusCode, body: Vec<u8>, callback: Option<&str>) -> Resp {
    match callback {
        Some(cb) => {
            let mut wrapped = Vec::with_capacity(body.len() + cb.len() + 2);
            wrapped.extend_from_slice(cb.as_bytes());
            wrapped.push(b'(');
            wrapped.extend_from_slice(&body);
            wrapped.push(b')');
            response(status, "application/javascript", wrapped)
        }
        None => response(status, "application/json", body),
    }
}

async fn respond(state: &State, req: Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "Method Not Allowed\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let path = req.uri().path();
    let path = if path == "/subscriptionsz" {
        "/subsz"
    } else {
        path
    };
    let Some(idx) = PATHS.iter().position(|p| *p == path) else {
        return not_found();
    };
    state.requests[idx].fetch_add(1, Ordering::Relaxed);
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let callback = get("callback").filter(|c| !c.is_empty());
    if callback.is_some_and(|c| !valid_callback(c)) {
        return bad_request("Invalid callback\n".into());
    }
    let shared = &*state.shared;
    match path {
        "/" => response(StatusCode::OK, "text/html; charset=utf-8", pages::INDEX),
        "/live" => response(StatusCode::OK, "text/html; charset=utf-8", pages::LIVE),
        "/varz" => {
            let v = endpoints::varz(
                shared,
                state.addr,
                gnatsd_request_stats(state),
                usage(shared),
                SystemTime::now(),
            );
            json_response(StatusCode::OK, json::pretty(&v), callback)
        }
        "/connz" => {
            let p = match ConnzParams::parse(get) {
                Ok(p) => p,
                Err(text) => return bad_request(text),
            };
            let query = SnapshotQuery {
                kind: SnapshotKind::Clients,
                sort: p.sort,
                keep: p.offset.saturating_add(p.limit),
                subs: p.subs,
                cid: p.cid,
            };
            let answers = gather(state, query).await;
            let (total, page) = stats::merge(answers, p.sort, p.offset, p.limit);
            let c = endpoints::connz(shared, &p, total, page, Instant::now(), SystemTime::now());
            json_response(StatusCode::OK, json::pretty(&c), callback)
        }
        "/routez" => {
            let subs = endpoints::flag(get("subs"));
            let routes = routes(state, subs).await;
            let r = endpoints::routez(routes, subs, SystemTime::now());
            json_response(StatusCode::OK, json::pretty(&r), callback)
        }
        "/subsz" => {
            let s = endpoints::Subsz::from(shared.sublist.stats());
            json_response(StatusCode::OK, json::pretty(&s), callback)
        }
        "/healthz" => {
            // 2.x's answer, compact as 2.x writes it.
            if shared.shutdown.load(Ordering::Relaxed) {
                let body = br#"{"status":"error","error":"server is shutting down"}"#;
                json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_vec(), callback)
            } else {
                json_response(StatusCode::OK, br#"{"status":"ok"}"#.to_vec(), callback)
            }
        }
        "/metrics" => {
            let routes = routes(state, false).await;
            let requests: Vec<(&'static str, u64)> = PATHS
                .iter()
                .zip(&state.requests)
                .map(|(p, n)| (*p, n.load(Ordering::Relaxed)))
                .collect();
            let text = metrics::render(
                shared,
                &metrics::Inputs {
                    routes: &routes,
                    sublist: shared.sublist.stats(),
                    http_requests: &requests,
                    now: SystemTime::now(),
                },
            );
            response(StatusCode::OK, metrics::CONTENT_TYPE, text)
        }
        _ => not_found(),
    }
}

fn gnatsd_request_stats(state: &State) -> BTreeMap<&'static str, u64> {
    PATHS[..GNATSD_PATHS]
        .iter()
        .zip(&state.requests)
        .map(|(p, n)| (*p, n.load(Ordering::Relaxed)))
        .collect()
}

/// Every registered route, from whichever reactors answer in time.
async fn routes(state: &State, subs: bool) -> Vec<stats::ConnSnapshot> {
    if state.shared.cluster.is_none() {
        return Vec::new();
    }
    let query = SnapshotQuery {
        kind: SnapshotKind::Routes,
        sort: SortKey::Cid,
        keep: usize::MAX,
        subs,
        cid: None,
    };
    gather(state, query)
        .await
        .into_iter()
        .flat_map(|a| a.conns)
        .collect()
}

/// Asks the reactors for snapshots (only the owner of `query.cid`, when set) and collects
/// the answers that arrive within [`GATHER_WAIT`].
async fn gather(state: &State, query: SnapshotQuery) -> Vec<ReactorSnapshot> {
    let targets: Vec<usize> = match query.cid {
        Some(cid) => match state.shared.find_conn(cid) {
            Some(at) => vec![at.reactor],
            None => return Vec::new(),
        },
        None => (0..state.handles.len()).collect(),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for &r in &targets {
        let tx = tx.clone();
        state.handles[r].request_snapshot(SnapshotRequest {
            query,
            reply: Box::new(move |snap| {
                let _ = tx.send(snap);
            }),
        });
    }
    // Requests refused or dropped unanswered drop their sender: recv then ends early.
    drop(tx);
    let deadline = tokio::time::Instant::now() + GATHER_WAIT;
    let mut answers = Vec::with_capacity(targets.len());
    while answers.len() < targets.len() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(a)) => answers.push(a),
            Ok(None) => break,
            Err(_) => {
                crate::debug!(
                    "http monitor: {} of {} reactors did not answer within {GATHER_WAIT:?}",
                    targets.len() - answers.len(),
                    targets.len()
                );
                break;
            }
        }
    }
    answers
}

/// Resident memory and lifetime CPU use of this process, from /proc.
fn usage(shared: &Shared) -> Usage {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as i64;
    // SAFETY: as above.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mem = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * page);
    let cpu_secs = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces): state is field 3,
            // utime 14, stime 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .unwrap_or(0.0);
    let elapsed = shared.started.elapsed().as_secs_f64();
    let cpu = if elapsed > 0.0 {
        // One decimal, as ps prints it.
        (cpu_secs / elapsed * 1000.0).round() / 10.0
    } else {
        0.0
    };
    Usage { mem, cpu, cores }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks_are_identifiers() {
        for ok in ["cb", "jQuery123_456", "a.b", "a[0]", "$x"] {
            assert!(valid_callback(ok), "{ok}");
        }
        for bad in ["", "alert(1)//", "<script>", "a b", &"x".repeat(129)] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }
}
