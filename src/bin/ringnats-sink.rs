//! `ringnats-sink` — a discard server that looks like a NATS server to a
//! client: it sends an INFO line, answers every PING with PONG and throws
//! everything else away. PUB/HPUB payloads are skipped by length, so a
//! payload that happens to contain "PING" is never mistaken for one.
//!
//! Publishing against it shows the rate a load generator can reach on its
//! own: the "ceiling" of a benchmark run.

use clap::Parser;
use memchr::{memchr, memrchr};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const INFO: &[u8] = b"INFO {\"server_id\":\"sink\",\"version\":\"0.0.0\",\"proto\":1,\"headers\":true,\"max_payload\":1048576} \r\n";
const MAX_LINE: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "ringnats-sink",
    version,
    about = "NATS-looking discard server: INFO, PING->PONG, drops everything else"
)]
struct Args {
    /// Address to listen on
    #[arg(short = 'a', long = "addr", default_value = "127.0.0.1")]
    addr: String,
    /// Port to listen on
    #[arg(short = 'p', long = "port", default_value_t = 4222)]
    port: u16,
    /// Print per-connection totals when a connection closes
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

#[derive(Default)]
struct Totals {
    msgs: u64,
    bytes: u64,
    pings: u64,
}

fn parse_len(tok: &[u8]) -> Option<usize> {
    if tok.is_empty() || tok.len() > 12 {
        return None;
    }
    tok.iter().try_fold(0usize, |v, &c| {
        c.is_ascii_digit().then(|| v * 10 + (c - b'0') as usize)
    })
}

/// Protocol state that survives across reads.
struct Scanner {
    /// Payload bytes (plus trailing CRLF) still to be skipped.
    skip: usize,
    totals: Totals,
}

impl Scanner {
    /// Consumes as much of `d` as possible; PONGs go to `out`.
    /// Returns bytes consumed or an error text.
    fn scan(&mut self, d: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut off = 0;
        loop {
            if self.skip > 0 {
                let k = self.skip.min(d.len() - off);
                off += k;
                self.skip -= k;
                if self.skip > 0 {
                    return Ok(off);
                }
            }
            let rest = &d[off..];
            let Some(nl) = memchr(b'\n', rest) else {
                if rest.len() > MAX_LINE {
                    return Err("control line too long".into());
                }
                return Ok(off);
            };
            let mut line = &rest[..nl];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            off += nl + 1;
            if line.len() < 4 {
                continue;
            }
            let mut op = [0u8; 4];
            op.copy_from_slice(&line[..4]);
            op.make_ascii_uppercase();
            match &op {
                b"PUB " | b"HPUB" => {
                    // PUB <subj> [reply] <#bytes>  /  HPUB <subj> [reply] <#hdr> <#total>
                    let n = memrchr(b' ', line)
                        .and_then(|sp| parse_len(&line[sp + 1..]))
                        .ok_or_else(|| {
                            format!("malformed line: {}", String::from_utf8_lossy(line))
                        })?;
                    self.skip = n + 2;
                    self.totals.msgs += 1;
                    self.totals.bytes += n as u64;
                }
                b"PING" => {
                    out.extend_from_slice(b"PONG\r\n");
                    self.totals.pings += 1;
                }
                _ => {}
            }
        }
    }
}

fn serve(mut s: TcpStream, verbose: bool, id: u64) -> io::Result<Totals> {
    s.set_nodelay(true)?;
    s.write_all(INFO)?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut sc = Scanner {
        skip: 0,
        totals: Totals::default(),
    };
    let mut out = Vec::with_capacity(1024);
    loop {
        if buf.len() - end < 4096 && start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        let n = match s.read(&mut buf[end..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        end += n;
        match sc.scan(&buf[start..end], &mut out) {
            Ok(k) => start += k,
            Err(e) => {
                let _ = s.write_all(format!("-ERR '{e}'\r\n").as_bytes());
                if verbose {
                    eprintln!("ringnats-sink: conn {id}: {e}");
                }
                break;
            }
        }
        if start == end {
            start = 0;
            end = 0;
        }
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
    }
    Ok(sc.totals)
}

fn main() {
    let args = Args::parse();
    let listener = match TcpListener::bind((args.addr.as_str(), args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ringnats-sink: bind {}:{}: {e}", args.addr, args.port);
            std::process::exit(1);
        }
    };
    eprintln!("ringnats-sink: listening on {}:{}", args.addr, args.port);
    let next_id = Arc::new(AtomicU64::new(0));
    for conn in listener.incoming() {
        let Ok(s) = conn else { continue };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let verbose = args.verbose;
        let spawned = thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || match serve(s, verbose, id) {
                Ok(t) if verbose => eprintln!(
                    "ringnats-sink: conn {id} closed: {} msgs, {} payload bytes, {} pings",
                    t.msgs, t.bytes, t.pings
                ),
                _ => {}
            });
        if let Err(e) = spawned {
            eprintln!("ringnats-sink: cannot spawn connection thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_inside_payload_is_skipped() {
        let mut sc = Scanner {
            skip: 0,
            totals: Totals::default(),
        };
        let mut out = Vec::new();
        let d = b"CONNECT {}\r\nPUB a 6\r\nPING\r\n\r\nPING\r\nHPUB b 2 8\r\nPI\r\nPING\r\n";
        let k = sc.scan(d, &mut out).unwrap();
        assert_eq!(k, d.len());
        assert_eq!(out, b"PONG\r\n");
        assert_eq!(sc.totals.msgs, 2);
    }

    #[test]
    fn split_reads() {
        let mut sc = Scanner {
            skip: 0,
            totals: Totals::default(),
        };
        let mut out = Vec::new();
        let d = b"PUB a 4\r\nPING\r\nPING\r\n";
        let k1 = sc.scan(&d[..5], &mut out).unwrap();
        assert_eq!(k1, 0);
        let k2 = sc.scan(&d[..12], &mut out).unwrap();
        assert_eq!(k2, 12);
        let k3 = sc.scan(&d[12..], &mut out).unwrap();
        assert_eq!(k3, d.len() - 12);
        assert_eq!(out, b"PONG\r\n");
    }
}
