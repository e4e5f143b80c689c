//! `ringnats-floor` — the least a NATS broker can do on this machine: a
//! thread per connection, blocking reads of up to 256 KiB (more for a long
//! payload), subject match against a per-thread copy of the subscription list,
//! `MSG` lines encoded into one buffer per destination, and one blocking
//! `write` per destination per read. No flow control, no limits, no auth, no
//! monitoring, no routes.
//!
//! It is a measuring stick, not a server: run it under `perf/profile --counts`
//! next to ringnats and gnatsd to see the CPU a delivery costs when nearly all
//! of it is the kernel's socket work (the "floor" of a benchmark run), as
//! `ringnats-sink` shows a generator's "ceiling".

mod common;

use clap::Parser;
use common::{parse_len, read_loop, serve_each, Listen};
use memchr::memchr;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

const INFO: &[u8] = b"INFO {\"server_id\":\"floor\",\"version\":\"1.0.0\",\"proto\":1,\"max_payload\":1048576} \r\n";
const MAX_LINE: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "ringnats-floor",
    version,
    about = "Minimal thread-per-connection NATS forwarder: the floor of a benchmark's CPU"
)]
struct Args {
    #[command(flatten)]
    listen: Listen,
}

/// A connection's write side, shared by its own thread (PONG) and publishers.
struct Writer {
    id: u64,
    sock: Mutex<TcpStream>,
}

#[derive(Clone)]
struct Sub {
    subject: Vec<u8>,
    sid: Vec<u8>,
    to: Arc<Writer>,
}

/// Every subscription of every connection, and a counter bumped on change so
/// the publishing threads know when to rebuild their match caches.
#[derive(Default)]
struct Subs {
    list: RwLock<Vec<Sub>>,
    generation: AtomicU64,
}

fn subject_matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut f = filter.split(|&c| c == b'.');
    let mut s = subject.split(|&c| c == b'.');
    loop {
        match (f.next(), s.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// One connection's reader: parses its input and stages what it publishes.
struct Conn {
    me: Arc<Writer>,
    subs: Arc<Subs>,
    /// Subject → matching subscriptions, valid for `cache_gen`.
    cache: HashMap<Vec<u8>, Vec<Sub>>,
    cache_gen: u64,
    /// Destination id → (writer, bytes staged during this read).
    staged: HashMap<u64, (Arc<Writer>, Vec<u8>)>,
    /// A PUB line whose payload has not fully arrived: (subject, reply, size).
    pending: Option<(Vec<u8>, Vec<u8>, usize)>,
    /// This connection has subscribed: its entries leave the list when it closes.
    subscribed: bool,
}

impl Conn {
    fn deliver(&mut self, subject: &[u8], reply: &[u8], payload: &[u8]) {
        let generation = self.subs.generation.load(Ordering::Acquire);
        if generation != self.cache_gen {
            self.cache.clear();
            self.cache_gen = generation;
        }
        if !self.cache.contains_key(subject) {
            let list = self.subs.list.read().unwrap_or_else(|e| e.into_inner());
            let hits: Vec<Sub> = list
                .iter()
                .filter(|s| subject_matches(&s.subject, subject))
                .cloned()
                .collect();
            self.cache.insert(subject.to_vec(), hits);
        }
        let size = payload.len().to_string();
        let size = size.as_bytes();
        for sub in &self.cache[subject] {
            let out = &mut self
                .staged
                .entry(sub.to.id)
                .or_insert_with(|| (sub.to.clone(), Vec::with_capacity(64 * 1024)))
                .1;
            out.extend_from_slice(b"MSG ");
            out.extend_from_slice(subject);
            out.push(b' ');
            out.extend_from_slice(&sub.sid);
            out.push(b' ');
            if !reply.is_empty() {
                out.extend_from_slice(reply);
                out.push(b' ');
            }
            out.extend_from_slice(size);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Consumes what it can of `d`; returns the bytes used.
    fn scan(&mut self, d: &[u8]) -> Result<usize, String> {
        let mut off = 0;
        loop {
            if let Some((subject, reply, n)) = self.pending.take() {
                if d.len() - off < n + 2 {
                    self.pending = Some((subject, reply, n));
                    return Ok(off);
                }
                self.deliver(&subject, &reply, &d[off..off + n]);
                off += n + 2;
            }
            let rest = &d[off..];
            let Some(nl) = memchr(b'\n', rest) else {
                if rest.len() > MAX_LINE {
                    return Err("control line too long".into());
                }
                return Ok(off);
            };
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            off += nl + 1;
            let mut args = line.split(|&c| c == b' ').filter(|t| !t.is_empty());
            let op = args.next().unwrap_or(b"").to_ascii_uppercase();
            let args: Vec<&[u8]> = args.collect();
            match (op.as_slice(), args.as_slice()) {
                (b"PUB", [subject, rest @ ..]) if !rest.is_empty() && rest.len() <= 2 => {
                    let n = parse_len(rest[rest.len() - 1]).ok_or("invalid size")?;
                    let reply = if rest.len() == 2 { rest[0] } else { b"" };
                    self.pending = Some((subject.to_vec(), reply.to_vec(), n));
                }
                (b"SUB", [subject, .., sid]) if args.len() <= 3 => {
                    let mut list = self.subs.list.write().unwrap_or_else(|e| e.into_inner());
                    list.push(Sub {
                        subject: subject.to_vec(),
                        sid: sid.to_vec(),
                        to: self.me.clone(),
                    });
                    self.subscribed = true;
                    self.subs.generation.fetch_add(1, Ordering::Release);
                }
                (b"UNSUB", [sid, ..]) => {
                    let mut list = self.subs.list.write().unwrap_or_else(|e| e.into_inner());
                    list.retain(|s| !(s.to.id == self.me.id && s.sid == *sid));
                    self.subs.generation.fetch_add(1, Ordering::Release);
                }
                (b"PING", []) => {
                    self.staged
                        .entry(self.me.id)
                        .or_insert_with(|| (self.me.clone(), Vec::new()))
                        .1
                        .extend_from_slice(b"PONG\r\n");
                }
                (b"PONG", []) | (b"CONNECT", _) => {}
                _ => return Err(format!("unknown: {}", String::from_utf8_lossy(line))),
            }
        }
    }

    /// Writes every staged buffer to its destination, blocking.
    fn flush(&mut self) {
        for (to, out) in self.staged.values_mut() {
            if out.is_empty() {
                continue;
            }
            let mut sock = to.sock.lock().unwrap_or_else(|e| e.into_inner());
            // A failed destination is closed by its own reader; drop its bytes.
            let _ = sock.write_all(out);
            drop(sock);
            out.clear();
        }
    }

    fn forget(&mut self) {
        let mut list = self.subs.list.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|s| s.to.id != self.me.id);
        self.subs.generation.fetch_add(1, Ordering::Release);
    }
}

fn serve(mut s: TcpStream, id: u64, subs: Arc<Subs>) -> io::Result<()> {
    s.set_nodelay(true)?;
    let me = Arc::new(Writer {
        id,
        sock: Mutex::new(s.try_clone()?),
    });
    me.sock
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .write_all(INFO)?;
    let mut conn = Conn {
        me,
        subs,
        cache: HashMap::new(),
        cache_gen: u64::MAX,
        staged: HashMap::new(),
        pending: None,
        subscribed: false,
    };
    read_loop(&mut s, |_, data| {
        let k = conn.scan(data)?;
        conn.flush();
        Ok(k)
    });
    if conn.subscribed {
        conn.forget();
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let subs = Arc::new(Subs::default());
    serve_each("ringnats-floor", &args.listen, move |s, id| {
        let _ = serve(s, id, subs.clone());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(subject_matches(b"a.*", b"a.b"));
        assert!(subject_matches(b"a.>", b"a.b.c"));
        assert!(!subject_matches(b"a.>", b"a"));
        assert!(!subject_matches(b"a.*", b"a.b.c"));
        assert!(subject_matches(b"a.b", b"a.b"));
        assert!(!subject_matches(b"a.b", b"a.c"));
    }
}
