//! `ringnats`: parse flags (and the config file), set up logging, start the reactors, wait for
//! a signal.

use ringnats::options::{parse_args, ArgsError, Command};
use ringnats::{error, info, server};
use std::process::ExitCode;

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and every thread it spawns later), so
/// they can be taken synchronously with `sigwait` instead of interrupting a reactor.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is a valid, initialised signal set; `sig` is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Says which accepted settings do nothing yet.
fn log_unimplemented(opts: &ringnats::options::Options) {
    if opts.prof_port.is_some() {
        info!("Profiling (prof_port) is not served yet; ignoring it");
    }
    if opts.syslog || opts.remote_syslog.is_some() {
        info!("Syslog is not supported yet; logging as without it");
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let (opts, warnings) = match parse_args(argv.iter().cloned()) {
        Ok(Command::Run { opts, warnings }) => (*opts, warnings),
        Ok(Command::Version) => {
            println!("ringnats version {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Clap(e)) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(ArgsError::Config(msg)) => {
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    };
    // Certificate and key errors are gnatsd's texts, printed alone (PrintAndDie).
    if let Some(tls) = &opts.tls {
        if let Err(msg) = ringnats::tls::server_config(tls) {
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(tls) = opts.cluster.as_ref().and_then(|c| c.tls.as_ref()) {
        if let Err(msg) = ringnats::tls::RouteTls::new(tls) {
            eprintln!("{msg}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = ringnats::log::init(
        opts.debug,
        opts.trace,
        opts.logtime,
        opts.log_file.as_deref(),
    ) {
        eprintln!("ringnats: {e}");
        return ExitCode::FAILURE;
    }
    info!("Starting ringnats version {}", env!("CARGO_PKG_VERSION"));
    // gnatsd 1.0 ignores unknown config keys silently and has no warning level; they are
    // logged at INF so that a typo is visible without stopping the server.
    for w in &warnings {
        info!("Config warning: {w}");
    }
    log_unimplemented(&opts);
    let set = block_signals();
    let pid_file = opts.pid_file.clone();
    let mut reloader = ringnats::reload::Reloader::new(argv, opts.clone());
    let running = match server::start(opts) {
        Ok(r) => r,
        Err(e) => {
            ringnats::fatal!("{e}");
            return ExitCode::FAILURE;
        }
    };
    info!("Listening for client connections on {}", running.addr);
    if running.server.live().tls.is_some() {
        info!("TLS required for client connections");
    }
    ringnats::debug!("Server id is {}", running.server.server_id);
    ringnats::debug!("{} reactor threads", running.handles.len());
    if let Some(path) = &pid_file {
        if let Err(e) = std::fs::write(path, std::process::id().to_string()) {
            error!("Could not write pidfile {}: {e}", path.display());
        }
    }
    info!("Server is ready");
    if let Some(addr) = running.route_addr {
        info!("Listening for route connections on {addr}");
    }
    loop {
        let sig = wait_signal(&set);
        if sig == libc::SIGHUP {
            reloader.reload_and_log(&running.server, &running.handles);
            continue;
        }
        info!("Server Exiting..");
        break;
    }
    let result = running.shutdown();
    // A reload may have moved the pid file.
    if let Some(path) = reloader.current().pid_file.as_ref().or(pid_file.as_ref()) {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
