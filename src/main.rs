//! `ringnats`: parse flags, set up logging, start the reactors, wait for a signal.

use ringnats::options::{parse_args, Command};
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

fn main() -> ExitCode {
    let opts = match parse_args(std::env::args()) {
        Ok(Command::Run(o)) => *o,
        Ok(Command::Version) => {
            println!("ringnats version {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
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
    if let Some(port) = opts.https_port {
        info!(
            "HTTPS monitoring (-ms {port}) needs TLS, which is not supported yet; not serving it"
        );
    }
    let set = block_signals();
    let pid_file = opts.pid_file.clone();
    let running = match server::start(opts) {
        Ok(r) => r,
        Err(e) => {
            ringnats::fatal!("{e}");
            return ExitCode::FAILURE;
        }
    };
    info!("Listening for client connections on {}", running.addr);
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
            info!("Config reload is not supported yet; ignoring SIGHUP");
            continue;
        }
        info!("Server Exiting..");
        break;
    }
    let result = running.shutdown();
    if let Some(path) = &pid_file {
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
