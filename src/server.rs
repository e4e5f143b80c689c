//! Start-up and shutdown: listeners (client port, route port), one reactor thread per
//! core, the cluster's first dials, the monitoring port's thread.
//!
//! [`Running`] keeps the shared state and the reactor handles; it owns no sockets once the
//! listeners have been handed to the reactors.

use crate::cluster::Cluster;
use crate::mailbox::ReactorHandle;
use crate::monitor::Monitor;
use crate::options::Options;
use crate::reactor::{Listeners, Reactor};
use crate::shared::{new_server_id, Live, Shared};
use crate::tls::{ClientTls, RouteTls};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running server: its threads and the addresses it listens on.
pub struct Running {
    pub server: Arc<Shared>,
    pub handles: Arc<[ReactorHandle]>,
    pub addr: SocketAddr,
    /// The route listener's address, when clustering is on.
    pub route_addr: Option<SocketAddr>,
    /// The monitoring port's address, when `-m` (or `-ms`, HTTPS) is set.
    pub http_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    monitor: Option<Monitor>,
}

impl Running {
    /// Asks every reactor to close its connections and stop.
    pub fn begin_shutdown(&self) {
        begin_shutdown(&self.server, &self.handles);
    }

    /// Lame duck mode: every reactor stops accepting clients, tells protocol-1 clients
    /// (INFO with `ldm`) and closes its clients over the configured duration. The caller
    /// shuts the server down afterwards.
    pub fn enter_lame_duck(&self) {
        self.server.lame_duck.store(true, Ordering::SeqCst);
        for h in self.handles.iter() {
            h.wake();
        }
    }

    /// Waits for every reactor to stop. Returns the first reactor error, if any.
    pub fn join(mut self) -> io::Result<()> {
        // The monitor goes first: it only reads what the reactors publish.
        drop(self.monitor.take());
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
        self.begin_shutdown();
        self.join()
    }
}

fn begin_shutdown(shared: &Shared, handles: &[ReactorHandle]) {
    shared.shutdown.store(true, Ordering::SeqCst);
    for h in handles {
        h.wake();
    }
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let host_port = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    host_port
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {host_port}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::other(format!("cannot resolve {host_port}")))
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Fails if another socket (another ringnats included: SO_REUSEPORT would let it share
/// the port silently) already listens on `addr`: a plain bind, without SO_REUSEPORT,
/// released at once.
///
/// A process killed a moment ago still holds its port for a few milliseconds while the
/// kernel tears its io_uring down (longer on a loaded machine), so `EADDRINUSE` is retried for up to
/// [`PORT_RELEASE_WAIT`] before it is reported (a restart on the same port just works).
fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + PORT_RELEASE_WAIT;
    loop {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        match socket.bind(&addr.into()) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

/// How long start-up waits for a port held by a process that just died.
const PORT_RELEASE_WAIT: Duration = Duration::from_millis(1500);

/// What a listener is for, to word start-up errors as gnatsd does.
#[derive(Clone, Copy)]
enum Port {
    Client,
    Route,
}

fn listen_error(what: Port, addr: SocketAddr, e: io::Error) -> io::Error {
    let cause = match e.raw_os_error() {
        Some(libc::EADDRINUSE) => "address already in use".to_string(),
        _ => e.to_string(),
    };
    let msg = match what {
        Port::Client => {
            format!("Error listening on port: {addr}, \"listen tcp {addr}: bind: {cause}\"")
        }
        Port::Route => format!(
            "Error listening on router port: {} - listen tcp {addr}: bind: {cause}",
            addr.port()
        ),
    };
    io::Error::new(e.kind(), msg)
}

/// One SO_REUSEPORT listener per reactor on `addr` (port 0: the first bind picks it).
fn bind_all(
    what: Port,
    mut addr: SocketAddr,
    n: usize,
) -> io::Result<(Vec<TcpListener>, SocketAddr)> {
    check_port_free(addr).map_err(|e| listen_error(what, addr, e))?;
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..n {
        let l = bind_reuseport(addr).map_err(|e| listen_error(what, addr, e))?;
        addr = l.local_addr()?;
        listeners.push(l);
    }
    Ok((listeners, addr))
}

/// This server's client URLs as routes advertise them (`connect_urls`): the bound address,
/// or for a wildcard host every non-loopback interface address.
fn client_urls(addr: SocketAddr) -> Vec<String> {
    if !addr.ip().is_unspecified() {
        return vec![addr.to_string()];
    }
    let urls: Vec<String> = interface_ips()
        .into_iter()
        .filter(|ip| !ip.is_loopback() && ip.is_ipv4() == addr.is_ipv4())
        .map(|ip| SocketAddr::new(ip, addr.port()).to_string())
        .collect();
    urls
}

fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below with freeifaddrs; every
    // node and its address are read only while the list is alive, and null-checked.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match (*a).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

/// Binds the client port (and the route port) once per reactor and starts the reactors.
pub fn start(mut opts: Options) -> io::Result<Running> {
    let workers = opts.workers.max(1);
    // HTTPS monitoring uses the client TLS certificate (gnatsd 1.0's StartMonitoring).
    let monitor_tls = match (opts.https_port, opts.tls.as_ref()) {
        (Some(_), None) => {
            return Err(io::Error::other(
                "Can't start monitoring: TLS cert and key required for HTTPS",
            ))
        }
        (Some(_), Some(t)) => Some(crate::tls::monitor_server_config(t).map_err(io::Error::other)?),
        (None, _) => None,
    };
    let tls = opts
        .tls
        .as_ref()
        .map(ClientTls::new)
        .transpose()
        .map_err(io::Error::other)?;
    let route_tls = opts
        .cluster
        .as_ref()
        .and_then(|c| c.tls.as_ref())
        .map(RouteTls::new)
        .transpose()
        .map_err(io::Error::other)?;
    let (clients, addr) = bind_all(Port::Client, resolve(&opts.host, opts.port)?, workers)?;
    let mut route_addr = None;
    let mut routes: Vec<Option<TcpListener>> = (0..workers).map(|_| None).collect();
    let server_id = new_server_id();
    let cluster = match opts.cluster.as_mut() {
        Some(c) => {
            let (ls, a) = bind_all(Port::Route, resolve(&c.host, c.port)?, workers)?;
            routes = ls.into_iter().map(Some).collect();
            route_addr = Some(a);
            c.port = a.port();
            Some(Cluster::new(
                c.clone(),
                server_id.clone(),
                env!("CARGO_PKG_VERSION"),
                opts.max_payload,
                client_urls(addr),
                workers,
            ))
        }
        None => None,
    };
    // Each reactor owns its ring, which must be created on its own thread (single issuer);
    // the handles (eventfd + inbox) are made here so every reactor can wake every other.
    let handles: Arc<[ReactorHandle]> = (0..workers)
        .map(|_| ReactorHandle::new())
        .collect::<io::Result<Vec<_>>>()?
        .into();
    let shared = Shared::new(opts, server_id, addr.port(), cluster);
    let mut live = Live::new(shared.opts.clone());
    live.tls = tls;
    live.route_tls = route_tls;
    live.loaded_wall = shared.started_wall;
    shared.live.store(Arc::new(live));
    let shared = Arc::new(shared);
    // bcrypt never runs on a reactor: two threads verify hashes and mail the verdicts.
    shared.auth_pool.start(Arc::clone(&handles));

    // Build every ring before reporting success, so a missing io_uring is a clean start-up
    // error rather than a dead thread.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::with_capacity(workers);
    for (id, (client, route)) in clients.into_iter().zip(routes).enumerate() {
        let shared = Arc::clone(&shared);
        let handles = Arc::clone(&handles);
        let ready = ready_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("reactor-{id}"))
            .spawn(move || {
                let listeners = Listeners { client, route };
                let mut reactor = match Reactor::new(id, shared, handles, listeners) {
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
                begin_shutdown(&shared, &handles);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e);
            }
            Err(_) => return Err(io::Error::other("reactor thread exited during start-up")),
        }
    }
    let monitor = match shared.opts.http_port.or(shared.opts.https_port) {
        Some(port) => {
            let started = resolve(&shared.opts.host, port).and_then(|a| {
                Monitor::start(Arc::clone(&shared), Arc::clone(&handles), a, monitor_tls)
            });
            match started {
                Ok(m) => Some(m),
                Err(e) => {
                    begin_shutdown(&shared, &handles);
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
            }
        }
        None => None,
    };
    if let Some(c) = &shared.cluster {
        c.start(Instant::now());
    }
    Ok(Running {
        server: shared,
        handles,
        addr,
        route_addr,
        http_addr: monitor.as_ref().map(Monitor::addr),
        threads,
        monitor,
    })
}
