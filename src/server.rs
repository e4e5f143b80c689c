//! Start-up and shutdown: listeners, one reactor thread per core, signals.
//!
//! [`Server`] holds what every reactor shares: options, the subscription index, the reactor
//! handles (for cross-core wake-ups) and counters. It owns no sockets of its own once the
//! listeners have been handed to the reactors.

use crate::client::{Auth, ClientConfig, Subscription};
use crate::options::Options;
use crate::proto::info::ServerInfo;
use crate::reactor::{Reactor, ReactorHandle};
use crate::sublist::Sublist;
use rand::Rng;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct Server {
    pub opts: Options,
    pub server_id: String,
    pub sublist: Sublist<Subscription>,
    pub reactors: Vec<ReactorHandle>,
    pub client_cfg: ClientConfig,
    /// The client port actually bound (differs from the option for `-p -1`).
    pub port: u16,
    pub conn_count: AtomicUsize,
    next_cid: AtomicU64,
    pub shutdown: AtomicBool,
}

impl Server {
    pub fn next_cid(&self) -> u64 {
        self.next_cid.fetch_add(1, Ordering::Relaxed)
    }

    /// The INFO line sent to a new client.
    pub fn client_info(&self, cid: u64) -> Vec<u8> {
        let auth = self.opts.auth_required();
        ServerInfo {
            server_id: self.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            go: format!("rust-{}", rustc_version()),
            host: self.opts.host.clone(),
            port: self.port,
            auth_required: auth,
            ssl_required: false,
            tls_required: false,
            tls_verify: false,
            max_payload: self.opts.max_payload,
            ip: None,
            connect_urls: Vec::new(),
            proto: 1,
            headers: true,
            client_id: cid,
        }
        .client_line()
    }

    /// Asks every reactor to close its connections and stop.
    pub fn begin_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for r in &self.reactors {
            r.wake();
        }
    }
}

fn rustc_version() -> &'static str {
    option_env!("RINGNATS_RUSTC").unwrap_or("stable")
}

/// A 22-character random id, like gnatsd's NUID-based server id.
fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..22)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A running server: its threads and the address clients connect to.
pub struct Running {
    pub server: Arc<Server>,
    pub addr: SocketAddr,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// Waits for every reactor to stop. Returns the first reactor error, if any.
    pub fn join(self) -> io::Result<()> {
        let mut first = Ok(());
        for t in self.threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("reactor thread panicked")));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    pub fn shutdown(self) -> io::Result<()> {
        self.server.begin_shutdown();
        self.join()
    }
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Binds the client port once per reactor (SO_REUSEPORT) and starts the reactor threads.
pub fn start(opts: Options) -> io::Result<Running> {
    let host_port = format!("{}:{}", opts.host, opts.port);
    let mut addr = host_port
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host_port}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::other(format!("cannot resolve {host_port}")))?;
    let workers = opts.workers.max(1);
    let mut listeners = Vec::with_capacity(workers);
    for _ in 0..workers {
        let l = bind_reuseport(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        // For `-p -1` the first bind picks the port; the others join it.
        addr = l.local_addr()?;
        listeners.push(l);
    }
    // Each reactor owns its ring, which must be created on its own thread (single issuer);
    // the handles (eventfd + inbox) are made here so every reactor can wake every other.
    let handles = (0..workers)
        .map(|_| ReactorHandle::new())
        .collect::<io::Result<Vec<_>>>()?;
    let server = Arc::new(Server {
        client_cfg: ClientConfig {
            auth: Auth {
                user: opts.user.clone(),
                pass: opts.pass.clone(),
                token: opts.token.clone(),
            },
            auth_timeout: opts.auth_timeout,
            ping_interval: opts.ping_interval,
            ping_max: opts.ping_max,
        },
        server_id: new_server_id(),
        sublist: Sublist::new(),
        reactors: handles,
        port: addr.port(),
        conn_count: AtomicUsize::new(0),
        next_cid: AtomicU64::new(1),
        shutdown: AtomicBool::new(false),
        opts,
    });

    // Build every ring before reporting success, so a missing io_uring is a clean start-up
    // error rather than a dead thread.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::with_capacity(workers);
    for (id, listener) in listeners.into_iter().enumerate() {
        let server = Arc::clone(&server);
        let ready = ready_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("reactor-{id}"))
            .spawn(move || {
                let mut reactor = match Reactor::new(id, server, listener) {
                    Ok(r) => {
                        let _ = ready.send(Ok(()));
                        r
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready.send(Err(e));
                        return Err(io::Error::other(msg));
                    }
                };
                drop(ready);
                reactor.run()
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                server.begin_shutdown();
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
            Err(_) => return Err(io::Error::other("reactor thread exited during start-up")),
        }
    }
    Ok(Running {
        server,
        addr,
        threads,
    })
}
