//! What the stand-in servers (`ringnats-sink`, `ringnats-floor`) share: the listen
//! address flags, a thread per accepted connection, the read loop, and the PUB size
//! parser.

use clap::Args;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// `-a ADDR -p PORT`, as ringnats and gnatsd spell them.
#[derive(Args, Debug)]
pub struct Listen {
    /// Address to listen on
    #[arg(short = 'a', long = "addr", default_value = "127.0.0.1")]
    pub addr: String,
    /// Port to listen on
    #[arg(short = 'p', long = "port", default_value_t = 4222)]
    pub port: u16,
}

/// Binds `at` (or exits with a line naming `tool` and the cause), then runs `serve` on a
/// thread of its own for every accepted connection, numbered from 1.
pub fn serve_each<F>(tool: &str, at: &Listen, serve: F)
where
    F: Fn(TcpStream, u64) + Clone + Send + 'static,
{
    let listener = match TcpListener::bind((at.addr.as_str(), at.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{tool}: bind {}:{}: {e}", at.addr, at.port);
            std::process::exit(1);
        }
    };
    eprintln!("{tool}: listening on {}:{}", at.addr, at.port);
    let mut id = 0u64;
    for conn in listener.incoming() {
        let Ok(s) = conn else { continue };
        id += 1;
        let serve = serve.clone();
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || serve(s, id));
        if let Err(e) = spawned {
            eprintln!("{tool}: cannot spawn connection thread: {e}");
        }
    }
}

/// A decimal byte count of at most 12 digits.
pub fn parse_len(tok: &[u8]) -> Option<usize> {
    if tok.is_empty() || tok.len() > 12 {
        return None;
    }
    tok.iter().try_fold(0usize, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as usize)
    })
}

/// Reads `s` until EOF or an error, passing `step` everything received and not yet
/// consumed; `step` returns how much it consumed (a partial line or payload stays for the
/// next read) and may write to the socket. On `Err(text)` the client gets `-ERR 'text'`
/// and the loop ends, returning the text.
pub fn read_loop(
    s: &mut TcpStream,
    mut step: impl FnMut(&mut TcpStream, &[u8]) -> Result<usize, String>,
) -> Option<String> {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    loop {
        if buf.len() - end < 4096 && start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if end == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[end..]) {
            Ok(0) => return None,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        };
        end += n;
        match step(s, &buf[start..end]) {
            Ok(k) => start += k,
            Err(e) => {
                let _ = s.write_all(format!("-ERR '{e}'\r\n").as_bytes());
                return Some(e);
            }
        }
        if start == end {
            start = 0;
            end = 0;
        }
    }
}
