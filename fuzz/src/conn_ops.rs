//! `conn_ops`: arbitrary operation lists against the connection state machine, checked
//! step by step against a linear model.
//!
//! Several clients (3–5) and, when the cluster is on, one route peer (`FAKE`) are driven
//! through the real parser and [`Connection`] with a virtual clock, the way the reactor
//! drives them (`Reactor::feed`, `start_close`, the timer tick), but with no socket. The
//! model is a plain list of subscriptions per connection, scanned linearly, with its own
//! subject matching. After every step:
//! - every frame queued for every connection parses back (a small reader, independent of
//!   the server's parser), and equals what the model expects, op by op: each published
//!   message exactly once per matching live plain subscription of a live client
//!   (respecting echo, auto-unsubscribe limits, pedantic and `_SYS.` rejection, headers or
//!   not), exactly one member per matching queue group (local or remote), at most one
//!   copy per route; `+OK`, `PONG`, `PING`, `-ERR` and the SUB/UNSUB lines a route is sent;
//! - the index holds exactly the model's live subscriptions (subject, queue, sid, holder,
//!   limit and delivered count), its count agrees, and each connection holds its live
//!   subscriptions plus the ones that reached their limit and were not yet replaced;
//! - which connections are open agrees, and no queue is past its `max_pending`.
//!
//! At the end every connection is closed and the index must be empty.
//!
//! Published payloads end in `#<n>` with `n` unique per message, so a frame names the op
//! that produced it; that is how the model learns which queue member was picked.
//!
//! A connection that is cut as a slow consumer (small `max_pending`, or a client that
//! stops reading) may lose any frame of the step in which it was cut, and the route lines
//! of an auto-unsubscribe it sent in that step may take either form (deliveries to its dead
//! queue are not counted); everything else is still checked exactly.
//!
//! Input layout: byte 0 = cluster on, auth token, client count, cache size; bytes 1–2 =
//! per-client `max_pending`; then steps, each a tag byte and its arguments (missing bytes
//! read as 0). See [`decode`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::SeedableRng;
use ringnats::cluster::Cluster;
use ringnats::conn::pub_run::PubRun;
use ringnats::conn::{CloseReason, Connection, Env, Origin, SlowConsumer};
use ringnats::options::{ClusterOptions, Options};
use ringnats::outbound::{Outbound, WakeBatch};
use ringnats::proto::{Op, Parser, ParserConfig, ProtoError};
use ringnats::shared::{Live, Shared};
use ringnats::sublist::{SubEntry, Sublist};

/// Steps per input.
const MAX_STEPS: usize = 200;
const MAX_PAYLOAD: usize = 1024;
const PING_INTERVAL: Duration = Duration::from_millis(1000);
const PING_MAX: u32 = 2;
const AUTH_TIMEOUT: Duration = Duration::from_millis(1500);
const TOKEN: &str = "s3cret";
const BIG_PENDING: usize = 1 << 20;
const SMALL_PENDING: [usize; 4] = [200, 600, 2000, 8000];
/// The route peer's id on the wire.
const ROUTE_CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"FAKE\"}\r\n";
const ROUTE_INFO: &[u8] = b"INFO {\"server_id\":\"FAKE\",\"host\":\"127.0.0.1\",\"port\":36399,\"connect_urls\":[\"127.0.0.1:35399\"]}\r\n";

/// Patterns clients and the route subscribe to (the last four are invalid).
const SUB_SUBJECTS: &[&str] = &[
    "a",
    "b",
    "a.b",
    "a.c",
    "b.c",
    "a.b.c",
    "*",
    ">",
    "a.*",
    "*.b",
    "a.>",
    "*.*",
    "a.*.c",
    "a.b.>",
    "_INBOX.r1",
    "_INBOX.*",
    "_INBOX.>",
    "a*.b",
    "a..b",
    "a.>.b",
    ".a",
    "a.",
];
/// Subjects published to: literals, a wildcard, an empty token, a system subject.
const PUB_SUBJECTS: &[&str] = &[
    "a",
    "b",
    "a.b",
    "a.c",
    "b.c",
    "a.b.c",
    "c",
    "a.b.c.d",
    "_INBOX.r1",
    "_INBOX.r2",
    "a*.b",
    "a.*",
    "a..b",
    "_SYS.x",
    ">",
];
const REPLIES: &[&str] = &["_INBOX.r1", "_INBOX.r2", "a.b", "c"];
const SIDS: &[&str] = &["1", "2", "3", "4", "5"];
const QUEUES: &[&str] = &["q1", "q2"];
const RSIDS: &[&str] = &["RSID:9:1", "RSID:9:2", "RSID:9:3", "QRSID:9:4", "QRSID:9:5"];
/// First bytes that start no op (and are not `c`/`C`).
const GARBAGE_START: &[u8] = b"X%0@~\x00\xff;";

static QUIET: Once = Once::new();

/// Runs one input; panics with a description of the first broken invariant.
pub fn run(data: &[u8]) {
    QUIET.call_once(|| {
        // Error-level lines (a client's -ERR) would otherwise go to stderr on every run.
        let _ = ringnats::log::init(&ringnats::log::LogSettings {
            file: Some("/dev/null".into()),
            ..Default::default()
        });
    });
    let (setup, steps) = decode(data);
    let trace = std::env::var_os("CONN_OPS_TRACE").is_some();
    if trace {
        eprintln!("{setup:?}");
    }
    let mut sim = Sim::new(&setup);
    let mut model = Model::new(&setup, sim.now, sim.info_line());
    for (i, step) in steps.iter().enumerate() {
        let step = sim.resolve(step);
        let outcome = sim.apply(&step);
        if trace {
            eprintln!(
                "{i}: {}\n   closed {:?} slow {:?}",
                brief(&step),
                outcome.closed,
                outcome.slow
            );
            for (d, f) in &outcome.frames {
                eprintln!("   {d:?} {}", show(f));
            }
        }
        if let Err(e) = model
            .apply(&step, &outcome)
            .and_then(|()| check_state(&sim, &model))
        {
            panic!(
                "step {i} ({}): {e}\n(CONN_OPS_TRACE=1 prints every step)",
                brief(&step)
            );
        }
    }
    // Tear-down: everything closed, nothing left in the index or the cache.
    let outcome = sim.apply(&Step::CloseAll);
    if let Err(e) = model
        .apply(&Step::CloseAll, &outcome)
        .and_then(|()| check_state(&sim, &model))
    {
        panic!("tear-down: {e}\n(CONN_OPS_TRACE=1 prints every step)");
    }
    assert_eq!(sim.shared.sublist.count(), 0, "index not empty at the end");
    for s in PUB_SUBJECTS {
        assert!(
            sim.shared.sublist.match_subject(s.as_bytes()).is_empty(),
            "stale match for {s} after every connection closed"
        );
    }
}

/// A step for messages: payload bodies shown by length and tag.
fn brief(step: &Step) -> String {
    let s = format!("{step:?}");
    let mut out = String::new();
    let mut rest = s.as_str();
    // `body: [1, 2, …]` → `body: <n bytes>`
    while let Some(i) = rest.find("body: [") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 7..];
        let end = after.find(']').unwrap_or(after.len());
        let n = after[..end]
            .split(',')
            .filter(|x| !x.trim().is_empty())
            .count();
        out.push_str(&format!("body: <{n} bytes>"));
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Input decoding

/// Fixed per input.
#[derive(Debug, Clone)]
pub struct Setup {
    pub cluster: bool,
    pub auth: bool,
    pub clients: usize,
    pub cache_max: usize,
    pub max_pending: Vec<usize>,
}

/// One client op. Payload bodies already carry their unique `#<n>` tag.
#[derive(Debug, Clone)]
pub enum COp {
    Connect {
        verbose: bool,
        pedantic: bool,
        echo: bool,
        headers: bool,
        no_responders: bool,
        protocol: u8,
        token_ok: bool,
        bad_json: bool,
    },
    Sub {
        subject: &'static str,
        queue: Option<&'static str>,
        sid: &'static str,
    },
    /// `max == 0`: no limit given; `zero`: the limit is written as `0` (same meaning).
    Unsub {
        sid: &'static str,
        max: u64,
        zero: bool,
    },
    Pub {
        subject: &'static str,
        reply: Option<&'static str>,
        body: Vec<u8>,
    },
    Hpub {
        subject: &'static str,
        reply: Option<&'static str>,
        header: Vec<u8>,
        body: Vec<u8>,
    },
    Ping,
    Pong,
    Garbage(Vec<u8>),
}

/// Which sid a route message names.
#[derive(Debug, Clone)]
pub enum SidSpec {
    /// Plain `RSID:…` (local plain subscribers only).
    Rsid(&'static str),
    /// `QRSID:<cid>:<sid>` of a client slot's current cid, or of a cid seen before.
    Qrsid { who: u8, sid: &'static str },
    /// Malformed `QRSID` (dropped).
    Bad(&'static str),
    /// Already resolved to bytes.
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum ROp {
    Sub {
        subject: &'static str,
        queue: Option<&'static str>,
        rsid: &'static str,
    },
    Unsub {
        rsid: &'static str,
        max: u64,
    },
    Msg {
        subject: &'static str,
        sid: SidSpec,
        reply: Option<&'static str>,
        body: Vec<u8>,
    },
    Pub {
        subject: &'static str,
        reply: Option<&'static str>,
        body: Vec<u8>,
    },
    Ping,
    Pong,
    Garbage(Vec<u8>),
}

/// How a step's bytes are cut into reads.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    Whole,
    At(u8),
    Bytewise,
}

#[derive(Debug, Clone)]
pub enum Step {
    Client {
        c: usize,
        ops: Vec<COp>,
        cut: Cut,
    },
    Open {
        c: usize,
    },
    Close {
        c: usize,
    },
    /// Toggles whether the client reads its output.
    Stall {
        c: usize,
    },
    Tick {
        ms: u64,
    },
    RouteOpen,
    Route {
        ops: Vec<ROp>,
        cut: Cut,
    },
    RouteClose,
    /// Closes everything (the end of every run).
    CloseAll,
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
    seq: u64,
}

impl<'a> Input<'a> {
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.u8() as usize % xs.len()]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let start = self.pos.min(self.data.len());
        let end = (self.pos + n).min(self.data.len());
        self.pos += n;
        self.data[start..end].to_vec()
    }
    /// A payload body: a length byte (mostly small, sometimes past `MAX_PAYLOAD`), one
    /// fill byte, and the unique tag.
    fn body(&mut self) -> Vec<u8> {
        let n = self.u8() as usize;
        let len = if n < 200 { n } else { (n - 200) * 25 };
        let fill = self.u8();
        let mut body = vec![fill; len];
        self.seq += 1;
        body.extend_from_slice(format!("#{}", self.seq).as_bytes());
        body
    }
    fn opt<T: Copy>(&mut self, xs: &[T]) -> Option<T> {
        let b = self.u8() as usize;
        (b % (xs.len() + 2) < xs.len()).then(|| xs[b % (xs.len() + 2)])
    }
    fn cut(&mut self) -> Cut {
        match self.u8() % 8 {
            0..=3 => Cut::Whole,
            4..=6 => Cut::At(self.u8()),
            _ => Cut::Bytewise,
        }
    }
}

fn decode_cop(inp: &mut Input<'_>, batch: bool) -> COp {
    match inp.u8() % if batch { 9 } else { 10 } {
        0 | 1 => COp::Sub {
            subject: inp.pick(SUB_SUBJECTS),
            queue: inp.opt(QUEUES),
            sid: inp.pick(SIDS),
        },
        2 => {
            let sid = inp.pick(SIDS);
            let m = inp.u8() % 6;
            COp::Unsub {
                sid,
                max: if m >= 2 { (m - 1) as u64 } else { 0 },
                zero: m == 1,
            }
        }
        3 | 4 => COp::Pub {
            subject: inp.pick(PUB_SUBJECTS),
            reply: inp.opt(REPLIES),
            body: inp.body(),
        },
        5 => {
            let subject = inp.pick(PUB_SUBJECTS);
            let reply = inp.opt(REPLIES);
            let n = inp.u8() % 3;
            let mut header = b"NATS/1.0\r\n".to_vec();
            for i in 0..n {
                header.extend_from_slice(format!("K{i}: v{i}\r\n").as_bytes());
            }
            header.extend_from_slice(b"\r\n");
            COp::Hpub {
                subject,
                reply,
                header,
                body: inp.body(),
            }
        }
        6 => {
            let f = inp.u8();
            let g = inp.u8();
            COp::Connect {
                verbose: f & 1 != 0,
                pedantic: f & 2 != 0,
                echo: f & 4 == 0,
                headers: f & 8 != 0,
                no_responders: f & 16 != 0,
                protocol: [1, 0, 1, 2][((f >> 5) & 3) as usize],
                token_ok: g % 16 != 15,
                bad_json: g % 32 == 14,
            }
        }
        7 => COp::Ping,
        8 => COp::Pong,
        _ => {
            let first = inp.pick(GARBAGE_START);
            let n = inp.u8() as usize % 16;
            let mut g = vec![first];
            g.extend(inp.bytes(n));
            g.extend_from_slice(b"\r\n");
            COp::Garbage(g)
        }
    }
}

fn decode_rop(inp: &mut Input<'_>) -> ROp {
    match inp.u8() % 10 {
        0 | 1 => ROp::Sub {
            subject: inp.pick(SUB_SUBJECTS),
            queue: inp.opt(QUEUES),
            rsid: inp.pick(RSIDS),
        },
        2 => ROp::Unsub {
            rsid: inp.pick(RSIDS),
            max: (inp.u8() % 4) as u64,
        },
        3..=5 => {
            let subject = inp.pick(PUB_SUBJECTS);
            let sid = match inp.u8() % 8 {
                0..=2 => SidSpec::Rsid(inp.pick(RSIDS)),
                3..=6 => SidSpec::Qrsid {
                    who: inp.u8(),
                    sid: inp.pick(SIDS),
                },
                _ => SidSpec::Bad(inp.pick(&["QRSID:x:1", "QRSID:1", "QRSID::1", "QRSIDX"])),
            };
            ROp::Msg {
                subject,
                sid,
                reply: inp.opt(REPLIES),
                body: inp.body(),
            }
        }
        6 => ROp::Pub {
            subject: inp.pick(PUB_SUBJECTS),
            reply: inp.opt(REPLIES),
            body: inp.body(),
        },
        7 => ROp::Ping,
        8 => ROp::Pong,
        _ => {
            if inp.u8().is_multiple_of(4) {
                let first = inp.pick(GARBAGE_START);
                ROp::Garbage(vec![first, b'\r', b'\n'])
            } else {
                ROp::Ping
            }
        }
    }
}

/// Decodes the setup and the step list (at most [`MAX_STEPS`]).
pub fn decode(data: &[u8]) -> (Setup, Vec<Step>) {
    let mut inp = Input {
        data,
        pos: 0,
        seq: 0,
    };
    let flags = inp.u8();
    let small = inp.u8();
    let sizes = inp.u8();
    let clients = 3 + (flags >> 2) as usize % 3;
    let setup = Setup {
        cluster: flags & 1 != 0,
        auth: flags & 2 != 0,
        clients,
        cache_max: [4096, 0, 2, 8][((flags >> 4) & 3) as usize],
        max_pending: (0..clients)
            .map(|i| {
                if small & (1 << i) != 0 {
                    SMALL_PENDING[((sizes >> (2 * (i % 4))) & 3) as usize]
                } else {
                    BIG_PENDING
                }
            })
            .collect(),
    };
    let mut steps = Vec::new();
    while !inp.done() && steps.len() < MAX_STEPS {
        let tag = inp.u8();
        let c = inp.u8() as usize % clients;
        let step = match tag % 16 {
            0..=5 => {
                let op = decode_cop(&mut inp, false);
                Step::Client {
                    c,
                    ops: vec![op],
                    cut: inp.cut(),
                }
            }
            6 | 7 => {
                let n = 2 + inp.u8() as usize % 5;
                let ops = (0..n).map(|_| decode_cop(&mut inp, true)).collect();
                Step::Client {
                    c,
                    ops,
                    cut: inp.cut(),
                }
            }
            8 => Step::Close { c },
            9 => Step::Open { c },
            10 => Step::Stall { c },
            11 => Step::Tick {
                ms: inp.u8() as u64 * 10,
            },
            12 | 13 => {
                let n = 1 + inp.u8() as usize % 4;
                let ops = (0..n).map(|_| decode_rop(&mut inp)).collect();
                Step::Route {
                    ops,
                    cut: inp.cut(),
                }
            }
            14 => Step::RouteOpen,
            _ => Step::RouteClose,
        };
        steps.push(step);
    }
    (setup, steps)
}

// ---------------------------------------------------------------------------------------
// Wire encoding of the ops

fn put(out: &mut Vec<u8>, s: String) {
    out.extend_from_slice(s.as_bytes());
}

fn cop_bytes(op: &COp, out: &mut Vec<u8>) {
    match op {
        COp::Connect {
            verbose,
            pedantic,
            echo,
            headers,
            no_responders,
            protocol,
            token_ok,
            bad_json,
        } => {
            if *bad_json {
                out.extend_from_slice(b"CONNECT {\"verbose\":\r\n");
                return;
            }
            let token = if *token_ok { TOKEN } else { "wrong" };
            put(
                out,
                format!(
                    "CONNECT {{\"verbose\":{verbose},\"pedantic\":{pedantic},\"echo\":{echo},\"headers\":{headers},\"no_responders\":{no_responders},\"protocol\":{protocol},\"auth_token\":\"{token}\"}}\r\n"
                ),
            );
        }
        COp::Sub {
            subject,
            queue,
            sid,
        } => {
            let q = queue.map(|q| format!("{q} ")).unwrap_or_default();
            put(out, format!("SUB {subject} {q}{sid}\r\n"));
        }
        COp::Unsub { sid, max, zero } => put(
            out,
            match (max, zero) {
                (0, false) => format!("UNSUB {sid}\r\n"),
                (0, true) => format!("UNSUB {sid} 0\r\n"),
                (m, _) => format!("UNSUB {sid} {m}\r\n"),
            },
        ),
        COp::Pub {
            subject,
            reply,
            body,
        } => {
            let r = reply.map(|r| format!("{r} ")).unwrap_or_default();
            put(out, format!("PUB {subject} {r}{}\r\n", body.len()));
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        COp::Hpub {
            subject,
            reply,
            header,
            body,
        } => {
            let r = reply.map(|r| format!("{r} ")).unwrap_or_default();
            let total = header.len() + body.len();
            put(
                out,
                format!("HPUB {subject} {r}{} {total}\r\n", header.len()),
            );
            out.extend_from_slice(header);
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        COp::Ping => out.extend_from_slice(b"PING\r\n"),
        COp::Pong => out.extend_from_slice(b"PONG\r\n"),
        COp::Garbage(g) => out.extend_from_slice(g),
    }
}

fn rop_bytes(op: &ROp, out: &mut Vec<u8>) {
    match op {
        ROp::Sub {
            subject,
            queue,
            rsid,
        } => {
            let q = queue.map(|q| format!("{q} ")).unwrap_or_default();
            put(out, format!("SUB {subject} {q}{rsid}\r\n"));
        }
        ROp::Unsub { rsid, max } => put(
            out,
            if *max == 0 {
                format!("UNSUB {rsid}\r\n")
            } else {
                format!("UNSUB {rsid} {max}\r\n")
            },
        ),
        ROp::Msg {
            subject,
            sid,
            reply,
            body,
        } => {
            let SidSpec::Raw(sid) = sid else {
                unreachable!("sids are resolved before encoding")
            };
            out.extend_from_slice(b"MSG ");
            out.extend_from_slice(subject.as_bytes());
            out.push(b' ');
            out.extend_from_slice(sid);
            let r = reply.map(|r| format!(" {r}")).unwrap_or_default();
            put(out, format!("{r} {}\r\n", body.len()));
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        ROp::Pub {
            subject,
            reply,
            body,
        } => {
            let r = reply.map(|r| format!("{r} ")).unwrap_or_default();
            put(out, format!("PUB {subject} {r}{}\r\n", body.len()));
            out.extend_from_slice(body);
            out.extend_from_slice(b"\r\n");
        }
        ROp::Ping => out.extend_from_slice(b"PING\r\n"),
        ROp::Pong => out.extend_from_slice(b"PONG\r\n"),
        ROp::Garbage(g) => out.extend_from_slice(g),
    }
}

// ---------------------------------------------------------------------------------------
// Reading frames back

/// One frame a connection was sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Frame {
    Msg {
        subject: Vec<u8>,
        sid: Vec<u8>,
        reply: Option<Vec<u8>>,
        /// Header length of an HMSG.
        hdr: Option<usize>,
        payload: Vec<u8>,
    },
    /// Any other line, without its CRLF (`INFO` lines are cut to `INFO`: their content
    /// is the INFO tests' business).
    Line(Vec<u8>),
}

fn line(s: &[u8]) -> Frame {
    Frame::Line(s.to_vec())
}

/// Splits queued output into frames; every byte must belong to a complete frame.
pub fn read_frames(mut b: &[u8]) -> Result<Vec<Frame>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| format!("incomplete line {:?}", String::from_utf8_lossy(b)))?;
        let l = &b[..nl];
        b = &b[nl + 2..];
        let (is_h, rest) = if let Some(r) = l.strip_prefix(b"MSG ") {
            (false, r)
        } else if let Some(r) = l.strip_prefix(b"HMSG ") {
            (true, r)
        } else {
            out.push(if l.starts_with(b"INFO ") {
                line(b"INFO")
            } else {
                line(l)
            });
            continue;
        };
        let toks: Vec<&[u8]> = rest.split(|&c| c == b' ').collect();
        let num = |t: &[u8]| -> Result<usize, String> {
            std::str::from_utf8(t)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad size in {:?}", String::from_utf8_lossy(l)))
        };
        let fixed = if is_h { 4 } else { 3 };
        if toks.len() != fixed && toks.len() != fixed + 1 {
            return Err(format!("bad frame line {:?}", String::from_utf8_lossy(l)));
        }
        let reply = (toks.len() == fixed + 1).then(|| toks[2].to_vec());
        let size = num(toks[toks.len() - 1])?;
        let hdr = if is_h {
            let h = num(toks[toks.len() - 2])?;
            if h > size {
                return Err(format!(
                    "header past total in {:?}",
                    String::from_utf8_lossy(l)
                ));
            }
            Some(h)
        } else {
            None
        };
        if b.len() < size + 2 || &b[size..size + 2] != b"\r\n" {
            return Err(format!(
                "payload of {:?} not followed by CRLF",
                String::from_utf8_lossy(l)
            ));
        }
        out.push(Frame::Msg {
            subject: toks[0].to_vec(),
            sid: toks[1].to_vec(),
            reply,
            hdr,
            payload: b[..size].to_vec(),
        });
        b = &b[size + 2..];
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The system under test, driven as the reactor drives it

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dest {
    Client(usize),
    Route,
}

struct Peer {
    conn: Connection,
    parser: Parser,
    reading: bool,
    /// Bytes at the front of the queue already read back (while not reading).
    seen: usize,
}

/// What one step did to the real connections.
pub struct Outcome {
    /// Frames each connection was sent during the step.
    frames: HashMap<Dest, Vec<Frame>>,
    /// Connections cut as slow consumers during the step.
    slow: Vec<Dest>,
    /// Connections closed during the step, in order.
    closed: Vec<Dest>,
}

struct Sim {
    shared: Shared,
    /// The reloadable options, as a reactor caches them.
    live: Live,
    batch: WakeBatch,
    run: PubRun,
    rng: SmallRng,
    now: Instant,
    clients: Vec<Option<Peer>>,
    route: Option<Peer>,
    max_pending: Vec<usize>,
    auth: bool,
    /// Every cid handed out (for QRSIDs naming gone clients).
    cids: Vec<u64>,
    next_cid: u64,
    urls_gen: u64,
}

fn peer_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

impl Sim {
    fn new(setup: &Setup) -> Self {
        let cluster = setup.cluster.then(|| {
            let copts = ClusterOptions {
                host: "127.0.0.1".into(),
                port: 36301,
                ..ClusterOptions::default()
            };
            Cluster::new(
                copts,
                "A_ID".into(),
                "1.0.0",
                MAX_PAYLOAD,
                vec!["127.0.0.1:35301".into()],
                1,
            )
        });
        // `Options::default()` probes the CPU count (cgroup files): once per process.
        static OPTS: OnceLock<Options> = OnceLock::new();
        let opts = OPTS
            .get_or_init(|| Options {
                host: "127.0.0.1".into(),
                port: 35301,
                max_payload: MAX_PAYLOAD,
                ..Options::default()
            })
            .clone();
        let mut shared = Shared::new(opts, "A_ID".into(), 35301, cluster);
        if setup.cache_max != shared.sublist.cache_max() {
            shared.sublist = Sublist::with_cache_max(setup.cache_max);
        }
        let mut live = Live::clone(&shared.live());
        live.conn_cfg.ping_interval = PING_INTERVAL;
        live.conn_cfg.ping_max = PING_MAX;
        live.conn_cfg.auth_timeout = AUTH_TIMEOUT;
        if setup.auth {
            live.conn_cfg.auth.token = Some(TOKEN.into());
        }
        let mut sim = Sim {
            shared,
            live,
            batch: WakeBatch::new(1),
            run: PubRun::default(),
            rng: SmallRng::seed_from_u64(7),
            now: Instant::now(),
            clients: Vec::new(),
            route: None,
            max_pending: setup.max_pending.clone(),
            auth: setup.auth,
            cids: Vec::new(),
            next_cid: 1,
            urls_gen: 0,
        };
        for c in 0..setup.clients {
            let p = sim.new_client(c);
            sim.clients.push(Some(p));
        }
        sim
    }

    fn info_line(&self) -> Option<Vec<u8>> {
        self.shared.cluster.as_ref().map(|c| c.info_line().to_vec())
    }

    fn new_cid(&mut self) -> u64 {
        let cid = self.next_cid;
        self.next_cid += 1;
        self.cids.push(cid);
        cid
    }

    fn new_client(&mut self, c: usize) -> Peer {
        let cid = self.new_cid();
        let out = Arc::new(Outbound::new(cid, 0, cid, self.max_pending[c]));
        Peer {
            conn: Connection::client(cid, out, peer_addr(), self.now, &self.live.conn_cfg),
            parser: Parser::new(ParserConfig {
                max_control_line: 1024,
                max_payload: MAX_PAYLOAD,
                headers: false,
                route: false,
                require_connect: self.auth,
            }),
            reading: true,
            seen: 0,
        }
    }

    fn peer(&mut self, d: Dest) -> Option<&mut Peer> {
        match d {
            Dest::Client(c) => self.clients[c].as_mut(),
            Dest::Route => self.route.as_mut(),
        }
    }

    fn dests(&self) -> Vec<Dest> {
        let mut v: Vec<Dest> = (0..self.clients.len())
            .filter(|&c| self.clients[c].is_some())
            .map(Dest::Client)
            .collect();
        if self.route.is_some() {
            v.push(Dest::Route);
        }
        v
    }

    /// Turns a route message's sid spec into bytes.
    fn resolve(&self, step: &Step) -> Step {
        let Step::Route { ops, cut } = step else {
            return step.clone();
        };
        let ops = ops
            .iter()
            .map(|op| match op {
                ROp::Msg {
                    subject,
                    sid,
                    reply,
                    body,
                } => {
                    let raw = match sid {
                        SidSpec::Rsid(s) | SidSpec::Bad(s) => s.as_bytes().to_vec(),
                        SidSpec::Qrsid { who, sid } => {
                            let n = self.clients.len();
                            let w = *who as usize;
                            let cid = if w.is_multiple_of(2) {
                                self.clients[(w / 2) % n].as_ref().map_or(0, |p| p.conn.cid)
                            } else {
                                self.cids[(w / 2) % self.cids.len()]
                            };
                            format!("QRSID:{cid}:{sid}").into_bytes()
                        }
                        SidSpec::Raw(r) => r.clone(),
                    };
                    ROp::Msg {
                        subject,
                        sid: SidSpec::Raw(raw),
                        reply: *reply,
                        body: body.clone(),
                    }
                }
                other => other.clone(),
            })
            .collect();
        Step::Route { ops, cut: *cut }
    }

    fn clear_mail(&mut self) {
        for r in 0..self.batch.reactors() {
            self.batch.list_mut(r).clear();
        }
    }

    fn flush(&mut self) {
        self.batch.flush(&mut Vec::new());
        self.clear_mail();
    }

    /// One received buffer, as `Reactor::feed` handles it.
    fn feed(&mut self, d: Dest, bytes: &[u8]) {
        let Sim {
            shared,
            live,
            batch,
            run,
            rng,
            now,
            clients,
            route,
            ..
        } = self;
        let peer = match d {
            Dest::Client(c) => clients[c].as_mut(),
            Dest::Route => route.as_mut(),
        };
        let Some(peer) = peer else { return };
        if peer.conn.closing().is_none() {
            let mut env = Env::new(shared, live, batch, run, rng, *now);
            let c = &mut peer.conn;
            let is_route = c.is_route();
            let parsed = peer.parser.parse_with_config(bytes, |op, cfg| {
                let is_connect = matches!(op, Op::Connect(_));
                let flow = c.on_op(op, &mut env);
                if is_connect && !is_route {
                    cfg.headers = c.opts.headers;
                }
                flow
            });
            c.input_done(&mut env);
            if let Err(e) = parsed {
                let _ = c.fail(e, &mut env);
            }
        }
        self.flush();
    }

    fn feed_cut(&mut self, d: Dest, bytes: &[u8], cut: Cut) {
        match cut {
            Cut::Whole => self.feed(d, bytes),
            Cut::At(b) => {
                let at = (b as usize * 131) % (bytes.len() + 1);
                self.feed(d, &bytes[..at]);
                self.feed(d, &bytes[at..]);
            }
            Cut::Bytewise => {
                for chunk in bytes.chunks(1) {
                    self.feed(d, chunk);
                }
            }
        }
    }

    /// `Reactor::start_close`, then the last bytes queued.
    fn close(&mut self, d: Dest, reason: CloseReason, got: &mut HashMap<Dest, Vec<u8>>) {
        let Sim {
            shared,
            live,
            batch,
            run,
            rng,
            now,
            clients,
            route,
            ..
        } = self;
        let slot = match d {
            Dest::Client(c) => &mut clients[c],
            Dest::Route => route,
        };
        let Some(mut peer) = slot.take() else { return };
        if peer.conn.closing().is_none() {
            peer.conn.close(reason);
        }
        peer.conn.out.close();
        let mut env = Env::new(shared, live, batch, run, rng, *now);
        peer.conn.unsubscribe_all(&mut env);
        drop(env);
        if let (Some(closed), Some(cluster)) = (peer.conn.closed_route(), &shared.cluster) {
            cluster.route_closed(closed, *now, false);
        }
        self.flush();
        let mut v = Vec::new();
        peer.conn.out.take(&mut v);
        got.entry(d)
            .or_default()
            .extend_from_slice(&v[peer.seen.min(v.len())..]);
    }

    /// Closes what the reactor would close after a step: connections marked closing
    /// (`first` first, then in order), then slow consumers.
    fn close_pending(
        &mut self,
        first: &[Dest],
        got: &mut HashMap<Dest, Vec<u8>>,
        outcome: &mut Outcome,
    ) {
        let mut order: Vec<Dest> = first.to_vec();
        order.extend(self.dests());
        for d in order {
            let closing = self.peer(d).is_some_and(|p| p.conn.closing().is_some());
            if closing && !outcome.closed.contains(&d) {
                if self.peer(d).is_some_and(|p| p.conn.out.is_slow()) {
                    // Cut as a slow consumer before it failed: it may have lost frames.
                    outcome.slow.push(d);
                }
                self.close(d, CloseReason::ClientClosed, got);
                outcome.closed.push(d);
            }
        }
        for d in self.dests() {
            let slow = self.peer(d).is_some_and(|p| p.conn.out.is_slow());
            if slow {
                outcome.slow.push(d);
                self.close(d, CloseReason::SlowConsumer(SlowConsumer::MaxPending), got);
                outcome.closed.push(d);
            }
        }
    }

    fn apply(&mut self, step: &Step) -> Outcome {
        let mut outcome = Outcome {
            frames: HashMap::new(),
            slow: Vec::new(),
            closed: Vec::new(),
        };
        let mut got: HashMap<Dest, Vec<u8>> = HashMap::new();
        let mut first = Vec::new();
        match step {
            Step::Client { c, ops, cut } => {
                if self.clients[*c].is_some() {
                    let mut bytes = Vec::new();
                    for op in ops {
                        cop_bytes(op, &mut bytes);
                    }
                    self.feed_cut(Dest::Client(*c), &bytes, *cut);
                    first.push(Dest::Client(*c));
                }
            }
            Step::Open { c } => {
                if self.clients[*c].is_none() {
                    let p = self.new_client(*c);
                    self.clients[*c] = Some(p);
                }
            }
            Step::Close { c } => {
                if self.clients[*c].is_some() {
                    self.close(Dest::Client(*c), CloseReason::ClientClosed, &mut got);
                    outcome.closed.push(Dest::Client(*c));
                }
            }
            Step::Stall { c } => {
                if let Some(p) = self.clients[*c].as_mut() {
                    p.reading = !p.reading;
                }
            }
            Step::Tick { ms } => {
                self.now += Duration::from_millis(*ms);
                let Sim {
                    shared,
                    live,
                    batch,
                    run,
                    rng,
                    now,
                    clients,
                    route,
                    ..
                } = self;
                for p in clients.iter_mut().flatten().chain(route.as_mut()) {
                    let mut env = Env::new(shared, live, batch, run, rng, *now);
                    let _ = p.conn.on_tick(&mut env);
                }
                self.flush();
            }
            Step::RouteOpen => {
                if self.shared.cluster.is_some() && self.route.is_none() {
                    let cid = self.new_cid();
                    let out = Arc::new(Outbound::for_route(cid, 0, cid, 1 << 24));
                    let mut peer = Peer {
                        conn: Connection::route(
                            cid,
                            out,
                            peer_addr(),
                            None,
                            false,
                            self.now,
                            &self.live.conn_cfg,
                        ),
                        parser: Parser::new(ParserConfig {
                            max_control_line: 4096,
                            max_payload: 1 << 20,
                            headers: false,
                            route: true,
                            require_connect: false,
                        }),
                        reading: true,
                        seen: 0,
                    };
                    let mut env = Env::new(
                        &self.shared,
                        &self.live,
                        &mut self.batch,
                        &mut self.run,
                        &mut self.rng,
                        self.now,
                    );
                    peer.conn.greet(&mut env);
                    drop(env);
                    self.flush();
                    self.route = Some(peer);
                    let mut hello = ROUTE_CONNECT.to_vec();
                    hello.extend_from_slice(ROUTE_INFO);
                    self.feed(Dest::Route, &hello);
                    first.push(Dest::Route);
                    self.announce_urls();
                }
            }
            Step::Route { ops, cut } => {
                if self.route.is_some() {
                    let mut bytes = Vec::new();
                    for op in ops {
                        rop_bytes(op, &mut bytes);
                    }
                    self.feed_cut(Dest::Route, &bytes, *cut);
                    first.push(Dest::Route);
                }
            }
            Step::RouteClose => {
                if self.route.is_some() {
                    self.close(Dest::Route, CloseReason::ClientClosed, &mut got);
                    outcome.closed.push(Dest::Route);
                }
            }
            Step::CloseAll => {
                for d in self.dests() {
                    self.close(d, CloseReason::ServerShutdown, &mut got);
                    outcome.closed.push(d);
                }
            }
        }
        self.close_pending(&first, &mut got, &mut outcome);
        // Read back what the live connections were sent.
        for d in self.dests() {
            let p = self.peer(d).expect("live");
            let mut v = Vec::new();
            p.conn.out.take(&mut v);
            let new = v[p.seen.min(v.len())..].to_vec();
            if p.reading {
                p.seen = 0;
            } else {
                // Not reading: the bytes stay queued (counted against max_pending).
                p.seen = v.len();
                let pushed = p.conn.out.push_vec(&mut v);
                assert!(
                    !matches!(pushed, ringnats::outbound::Pushed::Dropped { .. }),
                    "putting back unread bytes"
                );
            }
            got.entry(d).or_default().extend_from_slice(&new);
        }
        self.clear_mail();
        for (d, bytes) in got {
            match read_frames(&bytes) {
                Ok(f) => {
                    outcome.frames.insert(d, f);
                }
                Err(e) => panic!(
                    "{d:?} was sent unreadable output: {e}\n{:?}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        outcome
    }

    /// `Reactor::announce_client_urls`: the cluster learned new client URLs.
    fn announce_urls(&mut self) {
        let Some(gen) = self.shared.cluster.as_ref().map(|c| c.urls_gen()) else {
            return;
        };
        if gen == self.urls_gen {
            return;
        }
        self.urls_gen = gen;
        let Sim {
            shared,
            live,
            batch,
            run,
            rng,
            now,
            clients,
            route,
            ..
        } = self;
        for p in clients.iter_mut().flatten().chain(route.as_mut()) {
            let mut env = Env::new(shared, live, batch, run, rng, *now);
            p.conn.on_connect_urls_changed(&mut env);
        }
        self.flush();
    }
}

// ---------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
struct MSub {
    subject: Vec<u8>,
    queue: Option<Vec<u8>>,
    max: u64,
    delivered: u64,
    /// Given a limit in a step in which its client was cut: the server's delivered count
    /// may differ from the model's either way (it counts a delivery its dead queue then
    /// drops, and skips deliveries once the queue is dead), so whether and when the limit
    /// removed it is not known. Its route lines are optional until the close ends it.
    uncertain: bool,
}

#[derive(Debug, Clone)]
struct MConn {
    open: bool,
    cid: u64,
    verbose: bool,
    pedantic: bool,
    echo: bool,
    headers: bool,
    no_responders: bool,
    protocol: u8,
    auth_deadline: Option<Instant>,
    next_ping: Instant,
    pings_out: u32,
    ponged: bool,
    info_owed: bool,
    /// Live subscriptions by sid.
    subs: BTreeMap<Vec<u8>, MSub>,
    /// Sids whose subscription reached its limit: gone from the index, still held by the
    /// connection until the sid is reused, unsubscribed or the connection closes.
    lingering: BTreeSet<Vec<u8>>,
    /// An op failed (or a tick fired an error): closed after the step.
    failed: bool,
}

impl MConn {
    fn client(cid: u64, now: Instant, auth: bool) -> Self {
        MConn {
            open: true,
            cid,
            verbose: true,
            pedantic: true,
            echo: true,
            headers: false,
            no_responders: false,
            protocol: 0,
            auth_deadline: auth.then_some(now + AUTH_TIMEOUT),
            next_ping: now + PING_INTERVAL,
            pings_out: 0,
            ponged: false,
            info_owed: false,
            subs: BTreeMap::new(),
            lingering: BTreeSet::new(),
            failed: false,
        }
    }

    fn closed() -> Self {
        let mut c = MConn::client(0, Instant::now(), false);
        c.open = false;
        c
    }
}

struct Model {
    clients: Vec<MConn>,
    route: MConn,
    cluster: bool,
    auth: bool,
    /// (cid, sid) → queue of local queue members withdrawn from the routes.
    gone: HashMap<(u64, Vec<u8>), Vec<u8>>,
    /// Groups a subscription made by an uncertain SUB (see `Check::maybe_subs`) may have had
    /// under (cid, sid): after its close, the server may route that sid's `QRSID`s to any.
    gone_maybe: HashMap<(u64, Vec<u8>), BTreeSet<Vec<u8>>>,
    urls_learned: bool,
    now: Instant,
    next_cid: u64,
    has_info: bool,
}

/// The expectations of one step, and what actually arrived.
struct Check<'a> {
    actual: &'a HashMap<Dest, Vec<Frame>>,
    slow: &'a [Dest],
    /// (destination, op group, frame)
    expected: Vec<(Dest, usize, Frame)>,
    /// Frames that may or may not come (e.g. a 503 in a step where a consumer was cut).
    optional: Vec<(Dest, Frame)>,
    /// (destination, op group, candidates): exactly one of the candidates, in that op's
    /// frames. For choices that change no state and carry no unique tag (the 503).
    any_of: Vec<(Dest, usize, Vec<Frame>)>,
    group: usize,
    /// (client, sid) withdrawn with [`Model::withdraw_either`] in this step: the server
    /// may still hold the subscription (below its limit) until the close at the end of the
    /// step, so later UNSUBs and SUBs of that sid in the step may or may not reach the route.
    uncertain: BTreeSet<(usize, Vec<u8>)>,
    /// Subscriptions a SUB of an uncertain sid may have made at a client cut in this step:
    /// each may get messages (frames allowed, not required), and a queue one may be the
    /// member the server picks (its dead queue may swallow the message).
    maybe_subs: Vec<MaybeSub>,
    /// The last [`Check::choose`] fell back to a candidate cut as slow: which one the
    /// server picked is not known.
    picked_slow: bool,
}

struct MaybeSub {
    c: usize,
    sid: Vec<u8>,
    subject: Vec<u8>,
    queue: Option<Vec<u8>>,
}

fn count(v: &[Frame], f: &Frame) -> usize {
    v.iter().filter(|x| *x == f).count()
}

impl Check<'_> {
    fn expect(&mut self, d: Dest, f: Frame) {
        self.expected.push((d, self.group, f));
    }

    fn expect_lines(&mut self, d: Dest, wire: &[u8]) {
        for l in wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            self.expect(d, line(l));
        }
    }

    fn next_group(&mut self) {
        self.group += 1;
    }

    fn is_slow(&self, d: Dest) -> bool {
        self.slow.contains(&d)
    }

    /// Frames of `f` at `d` not yet accounted for.
    fn avail(&self, d: Dest, f: &Frame) -> usize {
        let got = self.actual.get(&d).map_or(0, |v| count(v, f));
        let want = self
            .expected
            .iter()
            .filter(|(x, _, y)| *x == d && y == f)
            .count();
        got.saturating_sub(want)
    }

    /// Exactly one of `cands` (all to one destination) is sent by the current op, which
    /// one does not matter to the model.
    fn expect_any(&mut self, d: Dest, cands: Vec<Frame>) {
        self.any_of.push((d, self.group, cands));
    }

    /// Exactly one of `cands` must have been sent (one queue member, one route sid):
    /// returns its index. The frames carry a unique tag, so two present means two
    /// deliveries. A candidate cut as slow may have swallowed it.
    ///
    /// With `phantom`, a member the model cannot name (see `Check::maybe_subs`) may
    /// have taken it: then none present is `None`.
    fn choose(&mut self, cands: &[(Dest, Frame)], phantom: bool) -> Result<Option<usize>, String> {
        let present: Vec<usize> = (0..cands.len())
            .filter(|&i| self.avail(cands[i].0, &cands[i].1) > 0)
            .collect();
        if present.len() > 1 {
            return Err(format!(
                "one message reached {} members of one group / route: {:?}",
                present.len(),
                present.iter().map(|&i| &cands[i]).collect::<Vec<_>>()
            ));
        }
        self.picked_slow = false;
        if let Some(&i) = present.first() {
            self.expect(cands[i].0, cands[i].1.clone());
            return Ok(Some(i));
        }
        if let Some(i) = (0..cands.len()).find(|&i| self.is_slow(cands[i].0)) {
            self.optional.push(cands[i].clone());
            self.picked_slow = (0..cands.len())
                .filter(|&j| self.is_slow(cands[j].0))
                .count()
                > 1;
            return Ok(Some(i));
        }
        if phantom {
            return Ok(None);
        }
        Err(format!("message lost: none of {cands:?} got it"))
    }

    fn verify(&self) -> Result<(), String> {
        let mut dests: BTreeSet<Dest> = self.actual.keys().copied().collect();
        dests.extend(self.expected.iter().map(|(d, _, _)| *d));
        let lenient = !self.slow.is_empty();
        for d in dests {
            let actual = self.actual.get(&d).cloned().unwrap_or_default();
            let mut groups: BTreeMap<usize, Vec<Frame>> = BTreeMap::new();
            for (x, g, f) in &self.expected {
                if *x == d {
                    groups.entry(*g).or_default().push(f.clone());
                }
            }
            let mut slots: BTreeMap<usize, Vec<Vec<Frame>>> = BTreeMap::new();
            for (x, g, c) in &self.any_of {
                if *x == d {
                    slots.entry(*g).or_default().push(c.clone());
                    groups.entry(*g).or_default();
                }
            }
            let mut optional: Vec<Frame> = self
                .optional
                .iter()
                .filter(|(x, _)| *x == d)
                .map(|(_, f)| f.clone())
                .collect();
            if lenient {
                optional.extend(slots.values().flatten().flatten().cloned());
            }
            let fail = |what: &str| {
                Err(format!(
                    "{d:?}: {what}\n  got:      {}\n  expected: {}{}",
                    show(&actual),
                    groups
                        .iter()
                        .map(|(g, fs)| format!("[{g}] {}", show(fs)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    if optional.is_empty() {
                        String::new()
                    } else {
                        format!("\n  optional: {}", show(&optional))
                    }
                ))
            };
            let mut all: Vec<Frame> = groups.values().flatten().cloned().collect();
            if lenient {
                // A step in which a consumer was cut: frames to it may be missing, and
                // a queue member / 503 decided by deliveries to it may differ.
                let mut pool = all.clone();
                pool.extend(optional.iter().cloned());
                pool.sort();
                let mut a = actual.clone();
                a.sort();
                if !is_sub_multiset(&a, &pool) {
                    return fail("unexpected frames");
                }
                if !self.is_slow(d) {
                    all.sort();
                    if !is_sub_multiset(&all, &a) {
                        return fail("missing frames");
                    }
                }
                continue;
            }
            // Each op's frames come before the next op's, in any order within one op.
            let mut at = 0;
            for (g, fs) in &groups {
                let any = slots.get(g).map_or(&[][..], Vec::as_slice);
                let len = fs.len() + any.len();
                if at + len > actual.len() {
                    return fail("missing frames");
                }
                let mut a = actual[at..at + len].to_vec();
                for f in fs {
                    match a.iter().position(|x| x == f) {
                        Some(i) => {
                            a.swap_remove(i);
                        }
                        None => return fail("frames differ"),
                    }
                }
                // What is left fills the one-of slots (at most one per op: no ambiguity).
                for cands in any {
                    match a.iter().position(|x| cands.contains(x)) {
                        Some(i) => {
                            a.swap_remove(i);
                        }
                        None => return fail("frames differ"),
                    }
                }
                at += len;
            }
            if at != actual.len() {
                return fail("unexpected frames");
            }
        }
        Ok(())
    }
}

fn is_sub_multiset(small: &[Frame], big: &[Frame]) -> bool {
    // Both sorted.
    let mut j = 0;
    for f in small {
        while j < big.len() && big[j] < *f {
            j += 1;
        }
        if j == big.len() || big[j] != *f {
            return false;
        }
        j += 1;
    }
    true
}

fn show(fs: &[Frame]) -> String {
    let parts: Vec<String> = fs
        .iter()
        .map(|f| match f {
            Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
            Frame::Msg {
                subject,
                sid,
                reply,
                hdr,
                payload,
            } => {
                let tag = payload
                    .iter()
                    .rposition(|&b| b == b'#')
                    .map(|i| String::from_utf8_lossy(&payload[i..]).into_owned())
                    .unwrap_or_else(|| format!("{}B", payload.len()));
                format!(
                    "{}MSG {} {}{}{}",
                    if hdr.is_some() { "H" } else { "" },
                    String::from_utf8_lossy(subject),
                    String::from_utf8_lossy(sid),
                    reply
                        .as_ref()
                        .map(|r| format!(" {}", String::from_utf8_lossy(r)))
                        .unwrap_or_default(),
                    format_args!(" {tag}")
                )
            }
        })
        .collect();
    format!("{parts:?}")
}

fn tokens_match(p: &[&[u8]], s: &[&[u8]]) -> bool {
    match (p.split_first(), s.split_first()) {
        (None, None) => true,
        (Some((t, rest)), Some(_)) if *t == b">" && rest.is_empty() => true,
        (Some((t, prest)), Some((u, srest))) => {
            (*t == b"*" || t == u) && tokens_match(prest, srest)
        }
        _ => false,
    }
}

/// Whether the subscription pattern matches the published subject (taken literally).
fn matches(pattern: &[u8], subject: &[u8]) -> bool {
    let p: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    let s: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
    tokens_match(&p, &s)
}

fn valid_pattern(p: &[u8]) -> bool {
    let toks: Vec<&[u8]> = p.split(|&b| b == b'.').collect();
    !p.is_empty()
        && toks.iter().all(|t| !t.is_empty())
        && toks[..toks.len() - 1].iter().all(|t| *t != b">")
}

fn valid_literal(s: &[u8]) -> bool {
    !s.is_empty()
        && s.split(|&b| b == b'.')
            .all(|t| !t.is_empty() && t != b"*" && t != b">" && !t.contains(&b' '))
}

fn parse_qrsid(sid: &[u8]) -> Option<(u64, Vec<u8>)> {
    let rest = sid.strip_prefix(b"QRSID:")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let (c, s) = (&rest[..colon], &rest[colon + 1..]);
    if c.is_empty() || s.is_empty() || !c.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(c).ok()?.parse().ok()?, s.to_vec()))
}

fn route_sid(cid: u64, sid: &[u8], queue: bool) -> Vec<u8> {
    let mut v = format!("{}:{cid}:", if queue { "QRSID" } else { "RSID" }).into_bytes();
    v.extend_from_slice(sid);
    v
}

/// A message as one subscriber gets it: HMSG with headers if it negotiated them, else MSG
/// with the body only.
fn msg_frame(
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    hdr: Option<usize>,
    payload: &[u8],
    headers_on: bool,
) -> Frame {
    let (hdr, payload) = match hdr {
        Some(h) if headers_on => (Some(h), payload),
        Some(h) => (None, &payload[h..]),
        None => (None, payload),
    };
    Frame::Msg {
        subject: subject.to_vec(),
        sid: sid.to_vec(),
        reply: reply.map(<[u8]>::to_vec),
        hdr,
        payload: payload.to_vec(),
    }
}

/// Where a message comes from.
#[derive(Clone, Copy)]
enum Src {
    Client(usize),
    Route,
}

/// A subscription that may receive: a client's (slot, sid) or the route's sid.
#[derive(Debug, Clone)]
enum Holder {
    Client(usize, Vec<u8>),
    Route(Vec<u8>),
}

impl Model {
    fn new(setup: &Setup, now: Instant, info: Option<Vec<u8>>) -> Self {
        Model {
            clients: (0..setup.clients)
                .map(|i| MConn::client(i as u64 + 1, now, setup.auth))
                .collect(),
            route: MConn::closed(),
            cluster: setup.cluster,
            auth: setup.auth,
            gone: HashMap::new(),
            gone_maybe: HashMap::new(),
            urls_learned: false,
            now,
            next_cid: setup.clients as u64 + 1,
            has_info: info.is_some(),
        }
    }

    fn conn(&mut self, d: Dest) -> &mut MConn {
        match d {
            Dest::Client(c) => &mut self.clients[c],
            Dest::Route => &mut self.route,
        }
    }

    fn fail(&mut self, ck: &mut Check<'_>, d: Dest, err: ProtoError) {
        ck.expect_lines(d, err.wire());
        self.conn(d).failed = true;
    }

    fn ok(&self, ck: &mut Check<'_>, c: usize) {
        if self.clients[c].verbose {
            ck.expect(Dest::Client(c), line(b"+OK"));
        }
    }

    /// A local client subscription is no longer live: tell the route (when it is not a
    /// pending limit, remember a queue member's group for QRSIDs still on their way).
    fn withdraw(
        &mut self,
        ck: &mut Check<'_>,
        c: usize,
        sid: &[u8],
        queue: Option<&[u8]>,
        max: Option<u64>,
    ) {
        if !self.cluster {
            return;
        }
        let cid = self.clients[c].cid;
        if let (None, Some(q)) = (max, queue) {
            self.gone.insert((cid, sid.to_vec()), q.to_vec());
        }
        if self.route.open {
            let mut l = b"UNSUB ".to_vec();
            l.extend_from_slice(&route_sid(cid, sid, queue.is_some()));
            if let Some(m) = max {
                l.extend_from_slice(format!(" {m}").as_bytes());
            }
            ck.expect(Dest::Route, Frame::Line(l));
        }
    }

    /// Like [`withdraw`](Self::withdraw) for a client cut in this step: the limit line and
    /// the removal line are both allowed, neither required.
    fn withdraw_either(
        &mut self,
        ck: &mut Check<'_>,
        c: usize,
        sid: &[u8],
        queue: Option<&[u8]>,
        max: u64,
    ) {
        if !self.cluster {
            return;
        }
        let cid = self.clients[c].cid;
        if let Some(q) = queue {
            self.gone.insert((cid, sid.to_vec()), q.to_vec());
        }
        ck.uncertain.insert((c, sid.to_vec()));
        if self.route.open {
            let mut l = b"UNSUB ".to_vec();
            l.extend_from_slice(&route_sid(cid, sid, queue.is_some()));
            ck.optional.push((Dest::Route, Frame::Line(l.clone())));
            l.extend_from_slice(format!(" {max}").as_bytes());
            ck.optional.push((Dest::Route, Frame::Line(l)));
        }
    }

    /// A SUB or UNSUB (with `max`) of a sid left uncertain by
    /// [`withdraw_either`](Self::withdraw_either): if the server still holds the old
    /// subscription the SUB is ignored and the UNSUB sends the limit again; if not, the SUB
    /// is a new subscription (withdrawn again at the close). Every such line may come.
    fn uncertain_op(
        &mut self,
        ck: &mut Check<'_>,
        c: usize,
        sid: &[u8],
        sub: Option<(&str, Option<&str>)>,
        max: u64,
    ) {
        if let Some((_, Some(q))) = sub {
            let cid = self.clients[c].cid;
            self.gone_maybe
                .entry((cid, sid.to_vec()))
                .or_default()
                .insert(q.as_bytes().to_vec());
        }
        if let Some((subject, queue)) = sub {
            ck.maybe_subs.push(MaybeSub {
                c,
                sid: sid.to_vec(),
                subject: subject.as_bytes().to_vec(),
                queue: queue.map(|q| q.as_bytes().to_vec()),
            });
        }
        if !self.cluster || !self.route.open {
            return;
        }
        let cid = self.clients[c].cid;
        let mut lines = Vec::new();
        for queued in [false, true] {
            let rsid = route_sid(cid, sid, queued);
            let mut l = b"UNSUB ".to_vec();
            l.extend_from_slice(&rsid);
            lines.push(l.clone());
            if max > 0 {
                l.extend_from_slice(format!(" {max}").as_bytes());
                lines.push(l);
            }
            if let Some((subject, queue)) = sub {
                if queue.is_some() == queued {
                    let mut l = format!("SUB {subject} {} ", queue.unwrap_or("")).into_bytes();
                    l.extend_from_slice(&rsid);
                    lines.push(l);
                }
            }
        }
        for l in lines {
            ck.optional.push((Dest::Route, Frame::Line(l)));
        }
    }

    /// After a choice among several members cut as slow (see `Check::picked_slow`): any of
    /// them may have been the one picked, so one with a limit may or may not have reached
    /// it. Each becomes uncertain (its limit and removal lines optional, and it may still
    /// take messages in this step).
    fn maybe_picked(&mut self, ck: &mut Check<'_>, members: &[Holder], frames: &[(Dest, Frame)]) {
        if !ck.picked_slow {
            return;
        }
        for (h, (d, _)) in members.iter().zip(frames) {
            let Holder::Client(c, sid) = h else { continue };
            if !ck.is_slow(*d) {
                continue;
            }
            let Some(s) = self.clients[*c].subs.get_mut(sid) else {
                continue;
            };
            if s.max == 0 || s.uncertain {
                continue;
            }
            s.uncertain = true;
            let (subject, queue, max) = (s.subject.clone(), s.queue.clone(), s.max);
            ck.maybe_subs.push(MaybeSub {
                c: *c,
                sid: sid.clone(),
                subject,
                queue: queue.clone(),
            });
            self.withdraw_either(ck, *c, sid, queue.as_deref(), max);
        }
    }

    /// Counts a delivery; at the limit the subscription leaves the index (and a client's
    /// leaves the route).
    fn delivered(&mut self, ck: &mut Check<'_>, h: &Holder) {
        let (conn, sid) = match h {
            Holder::Client(c, sid) => (&mut self.clients[*c], sid),
            Holder::Route(sid) => (&mut self.route, sid),
        };
        let s = conn
            .subs
            .get_mut(sid)
            .expect("delivered to a live subscription");
        s.delivered += 1;
        if s.max > 0 && s.delivered >= s.max {
            let s = conn.subs.remove(sid).expect("present");
            conn.lingering.insert(sid.clone());
            if let Holder::Client(c, sid) = h {
                if s.uncertain {
                    self.withdraw_either(ck, *c, sid, s.queue.as_deref(), s.max);
                } else {
                    self.withdraw(ck, *c, sid, s.queue.as_deref(), None);
                }
            }
        }
    }

    fn frame_for(
        &self,
        h: &Holder,
        subject: &[u8],
        reply: Option<&[u8]>,
        hdr: Option<usize>,
        payload: &[u8],
    ) -> (Dest, Frame) {
        match h {
            Holder::Client(c, sid) => (
                Dest::Client(*c),
                msg_frame(subject, sid, reply, hdr, payload, self.clients[*c].headers),
            ),
            // Routes never negotiate headers in the 1.0 dialect.
            Holder::Route(sid) => (
                Dest::Route,
                msg_frame(subject, sid, reply, hdr, payload, false),
            ),
        }
    }

    /// Local subscriptions matching `subject`: plain ones, or those of queue `queue`.
    fn local_matches(&self, subject: &[u8], queue: Option<Option<&[u8]>>) -> Vec<Holder> {
        let mut v = Vec::new();
        for (c, conn) in self.clients.iter().enumerate() {
            if !conn.open {
                continue;
            }
            for (sid, s) in &conn.subs {
                let q_ok = match queue {
                    None => s.queue.is_none(),
                    Some(q) => s.queue.is_some() && (q.is_none() || s.queue.as_deref() == q),
                };
                if q_ok && matches(&s.subject, subject) {
                    v.push(Holder::Client(c, sid.clone()));
                }
            }
        }
        v
    }

    /// Delivers a published message by the rules of `conn::deliver`. Returns how many
    /// subscriptions got it.
    fn publish(
        &mut self,
        ck: &mut Check<'_>,
        src: Src,
        subject: &[u8],
        reply: Option<&[u8]>,
        hdr: Option<usize>,
        payload: &[u8],
    ) -> Result<usize, String> {
        let skip = match src {
            Src::Client(p) if !self.clients[p].echo => Some(p),
            _ => None,
        };
        let skipped = |h: &Holder| matches!(h, Holder::Client(c, _) if Some(*c) == skip);
        self.allow_maybe_subs(ck, subject, reply, hdr, payload, skip, None);
        let mut n = 0;
        for h in self.local_matches(subject, None) {
            if skipped(&h) {
                continue;
            }
            let (d, f) = self.frame_for(&h, subject, reply, hdr, payload);
            ck.expect(d, f);
            self.delivered(ck, &h);
            n += 1;
        }
        if let Src::Route = src {
            return Ok(n);
        }
        // One copy per route: one of its matching plain subscriptions.
        if self.route.open {
            let cands: Vec<Holder> = self
                .route
                .subs
                .iter()
                .filter(|(_, s)| s.queue.is_none() && matches(&s.subject, subject))
                .map(|(sid, _)| Holder::Route(sid.clone()))
                .collect();
            if !cands.is_empty() {
                let frames: Vec<(Dest, Frame)> = cands
                    .iter()
                    .map(|h| self.frame_for(h, subject, reply, hdr, payload))
                    .collect();
                if let Some(i) = ck.choose(&frames, false)? {
                    self.delivered(ck, &cands[i]);
                }
                n += 1;
            }
        }
        // One member per queue group, local or remote.
        let mut groups: BTreeMap<Vec<u8>, Vec<Holder>> = BTreeMap::new();
        for h in self.local_matches(subject, Some(None)) {
            let Holder::Client(c, sid) = &h else {
                unreachable!()
            };
            let q = self.clients[*c].subs[sid].queue.clone().expect("queue");
            let members = groups.entry(q).or_default();
            if !skipped(&h) {
                members.push(h);
            }
        }
        if self.route.open {
            for (sid, s) in &self.route.subs {
                if let Some(q) = &s.queue {
                    if matches(&s.subject, subject) {
                        groups
                            .entry(q.clone())
                            .or_default()
                            .push(Holder::Route(sid.clone()));
                    }
                }
            }
        }
        for (q, members) in &groups {
            if members.is_empty() {
                continue;
            }
            let frames: Vec<(Dest, Frame)> = members
                .iter()
                .map(|h| self.frame_for(h, subject, reply, hdr, payload))
                .collect();
            let phantom = ck.maybe_subs.iter().any(|m| {
                m.queue.as_ref() == Some(q) && matches(&m.subject, subject) && skip != Some(m.c)
            });
            if let Some(i) = ck.choose(&frames, phantom)? {
                self.maybe_picked(ck, members, &frames);
                self.delivered(ck, &members[i]);
            }
            n += 1;
        }
        Ok(n)
    }

    fn client_op(&mut self, ck: &mut Check<'_>, c: usize, op: &COp) -> Result<(), String> {
        let d = Dest::Client(c);
        if self.clients[c].auth_deadline.is_some() && !matches!(op, COp::Connect { .. }) {
            self.fail(ck, d, ProtoError::AuthViolation);
            return Ok(());
        }
        match op {
            COp::Connect {
                verbose,
                pedantic,
                echo,
                headers,
                no_responders,
                protocol,
                token_ok,
                bad_json,
            } => {
                self.clients[c].auth_deadline = None;
                if *bad_json {
                    self.fail(ck, d, ProtoError::ParserError);
                } else if self.auth && !token_ok {
                    self.fail(ck, d, ProtoError::AuthViolation);
                } else if *protocol > 1 {
                    self.fail(ck, d, ProtoError::InvalidProtocol);
                } else if *no_responders && !headers {
                    self.fail(ck, d, ProtoError::NoRespondersRequiresHeaders);
                } else {
                    let m = &mut self.clients[c];
                    m.verbose = *verbose;
                    m.pedantic = *pedantic;
                    m.echo = *echo;
                    m.headers = *headers;
                    m.no_responders = *no_responders;
                    m.protocol = *protocol;
                    self.ok(ck, c);
                }
            }
            COp::Sub {
                subject,
                queue,
                sid,
            } => {
                let sid = sid.as_bytes();
                let m = &mut self.clients[c];
                let maybe_held = m.subs.get(sid).is_some_and(|s| s.uncertain)
                    || (!m.subs.contains_key(sid) && ck.uncertain.contains(&(c, sid.to_vec())));
                if maybe_held && !valid_pattern(subject.as_bytes()) {
                    // Ignored (+OK) if the server still holds the sid, else refused. The
                    // client is cut in this step: either reply may come, or none.
                    ck.optional.push((d, line(b"+OK")));
                    for l in ProtoError::InvalidSubject
                        .err_line()
                        .split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                    {
                        ck.optional
                            .push((d, line(l.strip_suffix(b"\r").unwrap_or(l))));
                    }
                } else if maybe_held {
                    // The server may have removed it at its limit (or the client's cut
                    // left it uncertain): then this is a new one, withdrawn at the close.
                    self.uncertain_op(ck, c, sid, Some((subject, queue.as_deref())), 0);
                    self.ok(ck, c);
                } else if m.subs.contains_key(sid) {
                    // A SUB reusing a live sid is ignored.
                    self.ok(ck, c);
                } else if !valid_pattern(subject.as_bytes()) {
                    ck.expect_lines(d, ProtoError::InvalidSubject.err_line());
                } else {
                    m.lingering.remove(sid);
                    m.subs.insert(
                        sid.to_vec(),
                        MSub {
                            subject: subject.as_bytes().to_vec(),
                            queue: queue.map(|q| q.as_bytes().to_vec()),
                            max: 0,
                            delivered: 0,
                            uncertain: false,
                        },
                    );
                    if self.cluster && self.route.open {
                        let mut l = format!("SUB {subject} {} ", queue.unwrap_or("")).into_bytes();
                        l.extend_from_slice(&route_sid(m.cid, sid, queue.is_some()));
                        ck.expect(Dest::Route, Frame::Line(l));
                    }
                    self.ok(ck, c);
                }
            }
            COp::Unsub { sid, max, .. } => {
                let sid = sid.as_bytes();
                let slow = ck.is_slow(Dest::Client(c));
                // Left uncertain earlier in this step: the server may hold a different
                // subscription under this sid (one a later SUB made), plain or queued.
                let was_uncertain = ck.uncertain.contains(&(c, sid.to_vec()));
                let m = &mut self.clients[c];
                if let Some(s) = m.subs.get_mut(sid) {
                    if *max > 0 && slow {
                        // Cut in this step: the server's count may differ from the model's
                        // (see `MSub::uncertain`), so the route may get the limit now and
                        // the removal at the close, or the removal now. The subscription
                        // stays a candidate (the server may still pick it, and the dead
                        // queue swallows the message) until the close.
                        s.max = *max;
                        s.uncertain = true;
                        let q = s.queue.clone();
                        self.withdraw_either(ck, c, sid, q.as_deref(), *max);
                    } else if *max > 0 && s.delivered < *max {
                        s.max = *max;
                        let q = s.queue.clone();
                        self.withdraw(ck, c, sid, q.as_deref(), Some(*max));
                    } else {
                        let s = m.subs.remove(sid).expect("present");
                        self.withdraw(ck, c, sid, s.queue.as_deref(), None);
                    }
                } else if !was_uncertain {
                    // Unknown, or already gone at its limit: nothing to do.
                    m.lingering.remove(sid);
                }
                if was_uncertain {
                    self.uncertain_op(ck, c, sid, None, *max);
                }
                if *max == 0 {
                    // Removed now whatever the server's count was: the sid is free.
                    ck.uncertain.remove(&(c, sid.to_vec()));
                }
                self.ok(ck, c);
            }
            COp::Pub {
                subject,
                reply,
                body,
            } => self.client_pub(ck, c, subject.as_bytes(), *reply, None, body)?,
            COp::Hpub {
                subject,
                reply,
                header,
                body,
            } => {
                if !self.clients[c].headers {
                    self.fail(ck, d, ProtoError::UnknownOp);
                } else {
                    let mut payload = header.clone();
                    payload.extend_from_slice(body);
                    self.client_pub(
                        ck,
                        c,
                        subject.as_bytes(),
                        *reply,
                        Some(header.len()),
                        &payload,
                    )?;
                }
            }
            COp::Ping => {
                ck.expect(d, line(b"PONG"));
                let m = &mut self.clients[c];
                m.ponged = true;
                if std::mem::take(&mut m.info_owed) && m.protocol >= 1 {
                    ck.expect(d, line(b"INFO"));
                }
            }
            COp::Pong => self.clients[c].pings_out = 0,
            COp::Garbage(_) => self.fail(ck, d, ProtoError::UnknownOp),
        }
        Ok(())
    }

    fn client_pub(
        &mut self,
        ck: &mut Check<'_>,
        c: usize,
        subject: &[u8],
        reply: Option<&str>,
        hdr: Option<usize>,
        payload: &[u8],
    ) -> Result<(), String> {
        let d = Dest::Client(c);
        if payload.len() > MAX_PAYLOAD {
            self.fail(ck, d, ProtoError::MaxPayload);
            return Ok(());
        }
        if self.clients[c].pedantic && !valid_literal(subject) {
            ck.expect_lines(d, ProtoError::InvalidSubject.err_line());
            self.ok(ck, c);
            return Ok(());
        }
        if subject.starts_with(b"_SYS.") {
            ck.expect_lines(
                d,
                &ringnats::proto::error::permission_violation_publish(subject),
            );
            return Ok(());
        }
        self.ok(ck, c);
        let reply = reply.map(str::as_bytes);
        let n = self.publish(ck, Src::Client(c), subject, reply, hdr, payload)?;
        let m = &self.clients[c];
        // Deliveries to a consumer cut in this step do not count: then a 503 may come.
        let maybe = !ck.slow.is_empty();
        if let (true, Some(r), true) = (n == 0 || maybe, reply, m.no_responders) {
            // 503 on one of the requester's own plain subscriptions matching the reply.
            let mut header = b"NATS/1.0 503\r\nNats-Subject: ".to_vec();
            header.extend_from_slice(subject);
            header.extend_from_slice(b"\r\n\r\n");
            let cands: Vec<Frame> = m
                .subs
                .iter()
                .filter(|(_, s)| s.queue.is_none() && matches(&s.subject, r))
                .map(|(sid, _)| msg_frame(r, sid, None, Some(header.len()), &header, m.headers))
                .collect();
            if !ck.slow.is_empty() {
                ck.optional.extend(cands.into_iter().map(|f| (d, f)));
            } else if !cands.is_empty() {
                ck.expect_any(d, cands);
            }
        }
        Ok(())
    }

    fn route_op(&mut self, ck: &mut Check<'_>, op: &ROp) -> Result<(), String> {
        let r = &mut self.route;
        match op {
            ROp::Sub {
                subject,
                queue,
                rsid,
            } => {
                let sid = rsid.as_bytes();
                if !r.subs.contains_key(sid) && valid_pattern(subject.as_bytes()) {
                    r.lingering.remove(sid);
                    r.subs.insert(
                        sid.to_vec(),
                        MSub {
                            subject: subject.as_bytes().to_vec(),
                            queue: queue.map(|q| q.as_bytes().to_vec()),
                            max: 0,
                            delivered: 0,
                            uncertain: false,
                        },
                    );
                }
            }
            ROp::Unsub { rsid, max } => {
                let sid = rsid.as_bytes();
                if let Some(s) = r.subs.get_mut(sid) {
                    if *max > 0 && s.delivered < *max {
                        s.max = *max;
                    } else {
                        r.subs.remove(sid);
                    }
                } else {
                    r.lingering.remove(sid);
                }
            }
            ROp::Msg {
                subject,
                sid,
                reply,
                body,
            } => {
                let SidSpec::Raw(sid) = sid else {
                    unreachable!()
                };
                let subject = subject.as_bytes();
                let reply = reply.map(str::as_bytes);
                if sid.starts_with(b"QRSID") {
                    self.route_qrsid(ck, subject, sid, reply, body)?;
                } else {
                    self.publish(ck, Src::Route, subject, reply, None, body)?;
                }
            }
            ROp::Pub {
                subject,
                reply,
                body,
            } => {
                self.publish(
                    ck,
                    Src::Route,
                    subject.as_bytes(),
                    reply.map(str::as_bytes),
                    None,
                    body,
                )?;
            }
            ROp::Ping => ck.expect(Dest::Route, line(b"PONG")),
            ROp::Pong => r.pings_out = 0,
            ROp::Garbage(_) => self.fail(ck, Dest::Route, ProtoError::UnknownOp),
        }
        Ok(())
    }

    /// Frames a subscription in [`Check::maybe_subs`] may get for this message (only the
    /// members of `group`, if given): allowed, not required.
    #[allow(clippy::too_many_arguments)]
    fn allow_maybe_subs(
        &self,
        ck: &mut Check<'_>,
        subject: &[u8],
        reply: Option<&[u8]>,
        hdr: Option<usize>,
        payload: &[u8],
        skip: Option<usize>,
        group: Option<&Vec<u8>>,
    ) {
        let mut frames = Vec::new();
        for m in &ck.maybe_subs {
            if Some(m.c) == skip || !matches(&m.subject, subject) {
                continue;
            }
            if group.is_some_and(|g| m.queue.as_ref() != Some(g)) {
                continue;
            }
            let headers = self.clients[m.c].headers;
            let f = msg_frame(subject, &m.sid, reply, hdr, payload, headers);
            frames.push((Dest::Client(m.c), f));
        }
        ck.optional.extend(frames);
    }

    /// A `QRSID` message: exactly the named local member, or another local member of its
    /// group when it is gone.
    fn route_qrsid(
        &mut self,
        ck: &mut Check<'_>,
        subject: &[u8],
        sid: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), String> {
        let Some((cid, csid)) = parse_qrsid(sid) else {
            return Ok(());
        };
        let named = self.clients.iter().position(|m| {
            m.open
                && m.cid == cid
                && m.subs
                    .get(&csid)
                    .is_some_and(|s| s.queue.is_some() && matches(&s.subject, subject))
        });
        let group = match named {
            Some(c) if !ck.is_slow(Dest::Client(c)) => {
                let h = Holder::Client(c, csid);
                let (d, f) = self.frame_for(&h, subject, reply, None, payload);
                ck.expect(d, f);
                self.delivered(ck, &h);
                return Ok(());
            }
            Some(c) => self.clients[c].subs[&csid].queue.clone(),
            None => {
                let maybe = self.gone_maybe.get(&(cid, csid.clone())).cloned();
                if let Some(mut groups) = maybe {
                    // Which subscription the server last held under this sid is not known.
                    groups.extend(self.gone.get(&(cid, csid)).cloned());
                    return self.route_qrsid_any(ck, subject, reply, payload, &groups);
                }
                self.gone.get(&(cid, csid)).cloned()
            }
        };
        let Some(group) = group else { return Ok(()) };
        self.allow_maybe_subs(ck, subject, reply, None, payload, None, Some(&group));
        let members = self.local_matches(subject, Some(Some(&group)));
        if members.is_empty() {
            return Ok(());
        }
        let frames: Vec<(Dest, Frame)> = members
            .iter()
            .map(|h| self.frame_for(h, subject, reply, None, payload))
            .collect();
        let phantom = ck
            .maybe_subs
            .iter()
            .any(|m| m.queue.as_ref() == Some(&group) && matches(&m.subject, subject));
        if let Some(i) = ck.choose(&frames, phantom)? {
            self.maybe_picked(ck, &members, &frames);
            self.delivered(ck, &members[i]);
        }
        Ok(())
    }

    /// A `QRSID` message whose group is one of `groups`, or none: at most one member of
    /// them gets it.
    fn route_qrsid_any(
        &mut self,
        ck: &mut Check<'_>,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
        groups: &BTreeSet<Vec<u8>>,
    ) -> Result<(), String> {
        let mut members = Vec::new();
        for g in groups {
            self.allow_maybe_subs(ck, subject, reply, None, payload, None, Some(g));
            members.extend(self.local_matches(subject, Some(Some(g))));
        }
        let frames: Vec<(Dest, Frame)> = members
            .iter()
            .map(|h| self.frame_for(h, subject, reply, None, payload))
            .collect();
        if let Some(i) = ck.choose(&frames, true)? {
            self.maybe_picked(ck, &members, &frames);
            self.delivered(ck, &members[i]);
        }
        Ok(())
    }

    /// A connection goes away: its subscriptions leave the index; a client's live ones
    /// are withdrawn from the route.
    fn close(&mut self, ck: &mut Check<'_>, d: Dest) {
        match d {
            Dest::Client(c) => {
                let subs = std::mem::take(&mut self.clients[c].subs);
                for (sid, s) in subs {
                    if s.uncertain {
                        self.withdraw_either(ck, c, &sid, s.queue.as_deref(), s.max);
                    } else {
                        self.withdraw(ck, c, &sid, s.queue.as_deref(), None);
                    }
                }
                self.clients[c].open = false;
            }
            Dest::Route => {
                self.route = MConn::closed();
            }
        }
    }

    fn tick(&mut self, ck: &mut Check<'_>, d: Dest) {
        let now = self.now;
        let m = self.conn(d);
        if !m.open {
            return;
        }
        if m.auth_deadline.is_some_and(|t| now >= t) {
            self.fail(ck, d, ProtoError::AuthTimeout);
            return;
        }
        if now >= m.next_ping {
            m.pings_out += 1;
            if m.pings_out > PING_MAX {
                self.fail(ck, d, ProtoError::StaleConnection);
                return;
            }
            m.next_ping = now + PING_INTERVAL;
            ck.expect(d, line(b"PING"));
        }
    }

    fn open_dests(&self) -> Vec<Dest> {
        let mut v: Vec<Dest> = (0..self.clients.len())
            .filter(|&c| self.clients[c].open)
            .map(Dest::Client)
            .collect();
        if self.route.open {
            v.push(Dest::Route);
        }
        v
    }

    fn apply(&mut self, step: &Step, outcome: &Outcome) -> Result<(), String> {
        let mut ck = Check {
            actual: &outcome.frames,
            slow: &outcome.slow,
            expected: Vec::new(),
            optional: Vec::new(),
            any_of: Vec::new(),
            group: 0,
            uncertain: BTreeSet::new(),
            maybe_subs: Vec::new(),
            picked_slow: false,
        };
        for m in self.clients.iter_mut().chain([&mut self.route]) {
            m.failed = false;
        }
        let mut first = Vec::new();
        let mut closes = Vec::new();
        match step {
            Step::Client { c, ops, .. } => {
                if self.clients[*c].open {
                    for op in ops {
                        self.client_op(&mut ck, *c, op)?;
                        ck.next_group();
                        if self.clients[*c].failed {
                            break;
                        }
                    }
                    first.push(Dest::Client(*c));
                }
            }
            Step::Open { c } => {
                if !self.clients[*c].open {
                    self.clients[*c] = MConn::client(self.next_cid, self.now, self.auth);
                    self.next_cid += 1;
                }
            }
            Step::Close { c } => {
                if self.clients[*c].open {
                    closes.push(Dest::Client(*c));
                }
            }
            Step::Stall { .. } => {}
            Step::Tick { ms } => {
                self.now += Duration::from_millis(*ms);
                for d in self.open_dests() {
                    self.tick(&mut ck, d);
                }
                ck.next_group();
            }
            Step::RouteOpen => {
                if self.cluster && !self.route.open {
                    let mut r = MConn::client(self.next_cid, self.now, false);
                    self.next_cid += 1;
                    r.verbose = false;
                    self.route = r;
                    if self.has_info {
                        ck.expect(Dest::Route, line(b"INFO"));
                    }
                    ck.next_group();
                    // Registration: every local subscription, with what is left of a limit.
                    for m in &self.clients {
                        if !m.open {
                            continue;
                        }
                        for (sid, s) in &m.subs {
                            let rsid = route_sid(m.cid, sid, s.queue.is_some());
                            let q = s.queue.clone().unwrap_or_default();
                            let mut l = b"SUB ".to_vec();
                            l.extend_from_slice(&s.subject);
                            l.push(b' ');
                            l.extend_from_slice(&q);
                            l.push(b' ');
                            l.extend_from_slice(&rsid);
                            ck.expect(Dest::Route, Frame::Line(l));
                            if s.max > 0 {
                                let left = s.max.saturating_sub(s.delivered).max(1);
                                let mut l = b"UNSUB ".to_vec();
                                l.extend_from_slice(&rsid);
                                l.extend_from_slice(format!(" {left}").as_bytes());
                                ck.expect(Dest::Route, Frame::Line(l));
                            }
                        }
                    }
                    ck.next_group();
                    first.push(Dest::Route);
                    if !self.urls_learned {
                        self.urls_learned = true;
                        for m in self.clients.iter_mut().filter(|m| m.open) {
                            if !m.ponged {
                                m.info_owed = true;
                            }
                        }
                        for c in 0..self.clients.len() {
                            let m = &self.clients[c];
                            if m.open && m.ponged && m.protocol >= 1 {
                                ck.expect(Dest::Client(c), line(b"INFO"));
                            }
                        }
                        ck.next_group();
                    }
                }
            }
            Step::Route { ops, .. } => {
                if self.route.open {
                    for op in ops {
                        self.route_op(&mut ck, op)?;
                        ck.next_group();
                        if self.route.failed {
                            break;
                        }
                    }
                    first.push(Dest::Route);
                }
            }
            Step::RouteClose => {
                if self.route.open {
                    closes.push(Dest::Route);
                }
            }
            Step::CloseAll => closes.extend(self.open_dests()),
        }
        // What the harness closes after the step, in its order: the actor first, then
        // every failed connection in order, then slow consumers.
        let mut order = first.clone();
        order.extend(self.open_dests());
        for d in order {
            if self.conn(d).open && self.conn(d).failed && !closes.contains(&d) {
                closes.push(d);
            }
        }
        for &d in &outcome.slow {
            if !closes.contains(&d) {
                closes.push(d);
            }
        }
        if closes != outcome.closed {
            return Err(format!(
                "closed {:?}, model expects {:?}",
                outcome.closed, closes
            ));
        }
        for d in closes {
            self.close(&mut ck, d);
            ck.next_group();
        }
        ck.verify()
    }
}

/// The index and the connections agree with the model.
fn check_state(sim: &Sim, model: &Model) -> Result<(), String> {
    for (c, (p, m)) in sim.clients.iter().zip(&model.clients).enumerate() {
        if p.is_some() != m.open {
            return Err(format!(
                "client {c}: open {} but model {}",
                p.is_some(),
                m.open
            ));
        }
        if let Some(p) = p {
            if p.conn.cid != m.cid {
                return Err(format!(
                    "client {c}: cid {} but model {}",
                    p.conn.cid, m.cid
                ));
            }
            let held = m.subs.len() + m.lingering.len();
            if p.conn.sub_count() != held {
                return Err(format!(
                    "client {c}: holds {} subscriptions, model {} live + {} at their limit",
                    p.conn.sub_count(),
                    m.subs.len(),
                    m.lingering.len()
                ));
            }
            let pending = p.conn.out.pending_len();
            if pending > sim.max_pending[c] {
                return Err(format!(
                    "client {c}: {pending} bytes pending past max_pending"
                ));
            }
        }
    }
    if sim.route.is_some() != model.route.open {
        return Err(format!(
            "route open {} but model {}",
            sim.route.is_some(),
            model.route.open
        ));
    }
    if let Some(p) = &sim.route {
        let held = model.route.subs.len() + model.route.lingering.len();
        if p.conn.sub_count() != held {
            return Err(format!(
                "route holds {} subscriptions, model {held}",
                p.conn.sub_count()
            ));
        }
    }
    // The index holds exactly the live subscriptions.
    type Key = (Dest, Vec<u8>, Vec<u8>, Option<Vec<u8>>, u64, u64);
    let mut got: Vec<Key> = Vec::new();
    let mut unknown = Vec::new();
    sim.shared.sublist.for_each(|s| {
        let d = match s.origin {
            Origin::Client { cid } => model
                .clients
                .iter()
                .position(|m| m.open && m.cid == cid)
                .map(Dest::Client),
            Origin::Route { cid, .. } => {
                (model.route.open && model.route.cid == cid).then_some(Dest::Route)
            }
        };
        match d {
            Some(d) => got.push((
                d,
                s.sid().to_vec(),
                s.subject().to_vec(),
                s.queue().map(<[u8]>::to_vec),
                s.max(),
                s.delivered(),
            )),
            None => unknown.push(format!(
                "{:?} {}",
                s.origin,
                String::from_utf8_lossy(s.sid())
            )),
        }
    });
    if !unknown.is_empty() {
        return Err(format!(
            "index holds subscriptions of closed connections: {unknown:?}"
        ));
    }
    let mut want: Vec<Key> = Vec::new();
    for (d, m) in (0..model.clients.len())
        .map(|c| (Dest::Client(c), &model.clients[c]))
        .chain([(Dest::Route, &model.route)])
    {
        if !m.open {
            continue;
        }
        for (sid, s) in &m.subs {
            want.push((
                d,
                sid.clone(),
                s.subject.clone(),
                s.queue.clone(),
                s.max,
                s.delivered,
            ));
        }
    }
    got.sort();
    want.sort();
    if got != want {
        return Err(format!(
            "index differs from the model:\n  index: {got:?}\n  model: {want:?}"
        ));
    }
    if sim.shared.sublist.count() != want.len() {
        return Err(format!(
            "index count {} but it holds {}",
            sim.shared.sublist.count(),
            want.len()
        ));
    }
    Ok(())
}
