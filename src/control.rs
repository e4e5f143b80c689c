//! `-sl/--signal <cmd>[=<pid>]`: signal a running server, as gnatsd's `ProcessSignal`.
//!
//! Without a pid the server is found by this executable's name among the running
//! processes (`/proc/*/comm`), leaving out this process. The pid may also be the path of
//! a pid file (`-P`), as nats-server 2.x accepts.

use std::path::Path;

/// The commands and their signals: gnatsd 1.0's four, and 2.x's `ldm` and `term`.
fn signal_of(command: &str) -> Option<i32> {
    Some(match command {
        "stop" => libc::SIGKILL,
        "quit" => libc::SIGINT,
        "reopen" => libc::SIGUSR1,
        "reload" => libc::SIGHUP,
        "ldm" => libc::SIGUSR2,
        "term" => libc::SIGTERM,
        _ => return None,
    })
}

/// The name this executable was started as (`argv[0]`'s file name, which is also the
/// kernel's `comm` for a process started by its path), at most 15 bytes as in `comm`.
pub fn process_name() -> String {
    let name = std::env::args()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ringnats".to_owned());
    // The kernel truncates comm to 15 bytes; compare like with like.
    name.chars().take(15).collect()
}

/// Sends the signal `command` names to `pid` (a number or a pid file), or to the one running
/// process named `name`. The error is the text to print (gnatsd's, with `name` in it).
pub fn send(command: &str, pid: Option<&str>, name: &str) -> Result<(), String> {
    let pid = match pid {
        Some(p) => parse_pid(p)?,
        None => {
            let pids = find_processes(name);
            match pids.as_slice() {
                [] => return Err(format!("no {name} processes running")),
                [one] => *one,
                many => {
                    let list: Vec<String> = many.iter().map(|p| p.to_string()).collect();
                    return Err(format!(
                        "multiple {name} processes running:\n{}",
                        list.join("\n")
                    ));
                }
            }
        }
    };
    let Some(sig) = signal_of(command) else {
        return Err(format!("unknown signal \"{command}\""));
    };
    // SAFETY: kill(2) with a checked positive pid; no memory is involved.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(errno_text(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A pid, or a pid file holding one.
fn parse_pid(s: &str) -> Result<i32, String> {
    let invalid = || format!("invalid pid: {s}");
    if let Ok(n) = s.trim().parse::<i32>() {
        return if n > 0 { Ok(n) } else { Err(invalid()) };
    }
    let path = Path::new(s);
    if path.is_file() {
        let text = std::fs::read_to_string(path).map_err(|_| invalid())?;
        return match text.trim().parse::<i32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("invalid pid: {}", text.trim())),
        };
    }
    Err(invalid())
}

/// Every live process named `name`, this one left out, in pid order.
fn find_processes(name: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let base = format!("/proc/{pid}");
            let comm = std::fs::read_to_string(format!("{base}/comm")).unwrap_or_default();
            comm.trim_end_matches('\n') == name && !is_zombie(&base)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// An exited process not yet reaped still has its name; it cannot take a signal.
fn is_zombie(base: &str) -> bool {
    let stat = std::fs::read_to_string(format!("{base}/stat")).unwrap_or_default();
    // `pid (comm) S ...`: the state follows the last ')'.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// The error as Go prints a syscall error (`no such process`), without Rust's suffix.
fn errno_text(e: std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ESRCH) => "no such process".to_owned(),
        Some(libc::EPERM) => "operation not permitted".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_gnatsd_words() {
        assert_eq!(
            send("reload", Some("abc"), "x").unwrap_err(),
            "invalid pid: abc"
        );
        assert_eq!(
            send("reload", Some("-3"), "x").unwrap_err(),
            "invalid pid: -3"
        );
        assert_eq!(
            send("bogus", Some("1"), "x").unwrap_err(),
            "unknown signal \"bogus\""
        );
        assert_eq!(
            send("reload", None, "no-such-name-x").unwrap_err(),
            "no no-such-name-x processes running"
        );
    }

    #[test]
    fn pid_file() {
        let dir = std::env::temp_dir().join(format!("ringnats-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.pid");
        std::fs::write(&f, "1234\n").unwrap();
        assert_eq!(parse_pid(f.to_str().unwrap()), Ok(1234));
        std::fs::write(&f, "x").unwrap();
        assert_eq!(parse_pid(f.to_str().unwrap()), Err("invalid pid: x".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
