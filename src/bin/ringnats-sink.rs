//! `ringnats-sink` — a discard server that looks like a NATS server to a
//! client: it sends an INFO line, answers every PING with PONG and throws
//! everything else away. PUB/HPUB payloads are skipped by length, so a
//! payload that happens to contain "PING" is never mistaken for one.
//!
//! Publishing against it shows the rate a load generator can reach on its
//! own: the "ceiling" of a benchmark run.

mod common;

use clap::Parser;
use common::{parse_len, read_loop, serve_each, Listen};
use memchr::{memchr, memrchr};
use std::io::{self, Write};
use std::net::TcpStream;

const INFO: &[u8] = b"INFO {\"server_id\":\"sink\",\"version\":\"0.0.0\",\"proto\":1,\"headers\":true,\"max_payload\":1048576} \r\n";
const MAX_LINE: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "ringnats-sink",
    version,
    about = "NATS-looking discard server: INFO, PING->PONG, drops everything else"
)]
struct Args {
    #[command(flatten)]
    listen: Listen,
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
    let mut sc = Scanner {
        skip: 0,
        totals: Totals::default(),
    };
    let mut out = Vec::with_capacity(1024);
    let failed = read_loop(&mut s, |s, data| {
        let k = sc.scan(data, &mut out)?;
        if !out.is_empty() {
            s.write_all(&out).map_err(|e| e.to_string())?;
            out.clear();
        }
        Ok(k)
    });
    if let (Some(e), true) = (failed, verbose) {
        eprintln!("ringnats-sink: conn {id}: {e}");
    }
    Ok(sc.totals)
}

fn main() {
    let args = Args::parse();
    let verbose = args.verbose;
    serve_each("ringnats-sink", &args.listen, move |s, id| {
        match serve(s, verbose, id) {
            Ok(t) if verbose => eprintln!(
                "ringnats-sink: conn {id} closed: {} msgs, {} payload bytes, {} pings",
                t.msgs, t.bytes, t.pings
            ),
            _ => {}
        }
    });
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
