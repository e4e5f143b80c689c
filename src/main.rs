//! `ringnats`: parse flags (and the config file), set up logging, start the reactors, wait for
//! a signal.

use ringnats::log::LogSettings;
use ringnats::options::{parse_args, ArgsError, Command, Options};
use ringnats::reload::Reloader;
use ringnats::server::Running;
use ringnats::{error, info, server};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Blocks the signals the server acts on in this thread (and every thread it spawns later),
/// so they are taken synchronously with `sigwait` instead of interrupting a reactor.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, sig);
        }
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

/// A signal from `set`, or `None` after `timeout`.
fn wait_signal_for(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are valid for the call; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// What the signal loop does next.
enum After {
    Continue,
    Exit,
}

/// The signals every state handles alike: SIGHUP reloads, SIGUSR1 reopens the log file,
/// SIGINT and SIGTERM end the process (gracefully).
fn common_signal(sig: i32, running: &Running, reloader: &mut Reloader) -> After {
    match sig {
        libc::SIGHUP => reloader.reload_and_log(&running.server, &running.handles),
        libc::SIGUSR1 => ringnats::log::reopen(),
        libc::SIGINT | libc::SIGTERM => return After::Exit,
        _ => {}
    }
    After::Continue
}

/// SIGUSR2 (nats-server 2.x's lame duck mode): the reactors stop accepting clients, send
/// protocol-1 clients an INFO with `ldm`, and after the grace period close their clients
/// evenly over the rest of the duration; then the server shuts down. Other signals still
/// work meanwhile (SIGINT/SIGTERM cut it short).
fn lame_duck(running: &Running, set: &libc::sigset_t, reloader: &mut Reloader) {
    info!("Entering lame duck mode, stop accepting new clients");
    running.enter_lame_duck();
    let start = Instant::now();
    let opts = &running.server.opts;
    let grace = opts.lame_duck_grace_period;
    let spread = opts
        .lame_duck_duration
        .saturating_sub(grace)
        .max(Duration::from_secs(1));
    // The reactors close their last clients at grace + spread (to a tick); a little
    // slack, then shut down whatever is left.
    let end = start + grace + spread + Duration::from_millis(500);
    let mut closing_logged = false;
    loop {
        let now = Instant::now();
        if running.server.conn_count.load(Ordering::Relaxed) == 0 || now >= end {
            break;
        }
        if !closing_logged && now >= start + grace {
            info!("Closing existing clients");
            closing_logged = true;
        }
        let wait = Duration::from_millis(50).min(end - now);
        match wait_signal_for(set, wait) {
            Some(libc::SIGUSR2) | None => {}
            Some(sig) => {
                if let After::Exit = common_signal(sig, running, reloader) {
                    return;
                }
            }
        }
    }
    info!("Initiating Shutdown...");
}

/// Says which accepted settings do nothing yet.
fn log_unimplemented(opts: &Options) {
    if opts.prof_port.is_some() {
        info!("Profiling (prof_port) is not served yet; ignoring it");
    }
}

fn main() -> ExitCode {
    let code = run();
    // Every line queued (start-up errors, the last words) reaches the output before exit.
    ringnats::log::flush();
    code
}

fn run() -> ExitCode {
    // First, before any thread exists (the log writer included): every thread inherits
    // the mask, so no signal can land on a thread that would die of it.
    let set = block_signals();
    let argv: Vec<String> = std::env::args().collect();
    let (opts, warnings) = match parse_args(argv.iter().cloned()) {
        Ok(Command::Run { opts, warnings }) => (*opts, warnings),
        Ok(Command::Version) => {
            println!("ringnats version {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Command::Signal { command, pid }) => {
            let name = ringnats::control::process_name();
            return match ringnats::control::send(&command, pid.as_deref(), &name) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("{msg}");
                    ExitCode::FAILURE
                }
            };
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
    if let Err(e) = ringnats::log::init(&LogSettings::from_options(&opts)) {
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
    let pid_file = opts.pid_file.clone();
    let mut reloader = Reloader::new(argv, opts.clone());
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
        if sig == libc::SIGUSR2 {
            lame_duck(&running, &set, &mut reloader);
            break;
        }
        if let After::Exit = common_signal(sig, &running, &mut reloader) {
            break;
        }
    }
    info!("Server Exiting..");
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
