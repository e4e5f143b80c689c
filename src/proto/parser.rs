//! Incremental parser for the NATS text protocol (client and route side).
//!
//! Bytes go in as they arrive from the socket, in chunks of any size; complete ops come out
//! through a callback, borrowing from the input (or, for the one frame that was split
//! across reads, from a reused internal buffer). The result, ops and error alike, does not
//! depend on how the stream was cut into chunks.
//!
//! Error precedence for one op, in stream order: `AuthViolation` (first byte not `c`/`C`
//! while a CONNECT is required), `UnknownOp` (op name), `MaxControlLine` (line length),
//! argument errors (`ParserError`, `MaxPayload`), then `UnknownOp` for a bad payload trailer.
//!
//! The two bytes after a payload must be exactly `\r\n`, as in nats-server 2.x (gnatsd 1.0
//! checked only the `\n`). A wrong trailer byte is reported as soon as it arrives, before
//! the rest of the frame, and the op is not delivered.

use std::ops::ControlFlow;

use memchr::memchr;

use super::error::ProtoError;

/// Limits and modes of one connection's parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserConfig {
    /// Longest control line accepted, without its line ending.
    pub max_control_line: usize,
    /// Largest `PUB`/`HPUB`/`MSG` payload accepted.
    pub max_payload: usize,
    /// `HPUB` is accepted (the peer negotiated headers).
    pub headers: bool,
    /// Route ops are accepted: `MSG` (1.0 routes) and the 2.x route ops `RS+`, `RS-`,
    /// `RMSG` and `HMSG <account> ...` (route connections).
    pub route: bool,
    /// Authorization is pending: the first byte of every op must be `c`/`C`, else
    /// `AuthViolation`. Cleared by the parser itself when it delivers a CONNECT.
    pub require_connect: bool,
}

impl Default for ParserConfig {
    /// nats-server 2.x's limits: 4096-byte control lines, 1 MiB payloads.
    fn default() -> Self {
        ParserConfig {
            max_control_line: 4096,
            max_payload: 1024 * 1024,
            headers: false,
            route: false,
            require_connect: false,
        }
    }
}

/// One parsed operation. Slices borrow from the parsed input or the parser's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `CONNECT <json>`: the text after the op name and any spaces/tabs, final `\r` removed.
    Connect(&'a [u8]),
    /// `INFO <json>`, like `Connect`.
    Info(&'a [u8]),
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
        /// What follows the subject on the wire, ` [<reply> ]<size>\r\n<payload>\r\n`,
        /// when it is byte for byte what a MSG carries after its sid (single blanks, a
        /// CRLF line end, a size without leading zeros), so a delivery copies it whole.
        /// `None` when it is not, or not known (a frame split across reads).
        wire_tail: Option<&'a [u8]>,
    },
    Hpub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        /// Length of the header block at the start of `payload`.
        header_len: usize,
        /// Headers followed by the body (`total_len` bytes).
        payload: &'a [u8],
    },
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    Unsub {
        sid: &'a [u8],
        /// `None` when absent, not a number, or zero.
        max: Option<u64>,
    },
    /// Only parsed when `ParserConfig::route` is set.
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// `RS+ <account> <subject> [<queue> <weight>]` (2.x routes; only parsed when
    /// `ParserConfig::route` is set).
    RouteSub {
        account: &'a [u8],
        subject: &'a [u8],
        /// The queue group and its weight (members behind the route).
        queue: Option<(&'a [u8], u32)>,
    },
    /// `RS- <account> <subject> [<queue>]` (2.x routes).
    RouteUnsub {
        account: &'a [u8],
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
    },
    /// `RMSG <account> <subject> [+ <reply> <queue>... | <queue>... | <reply>] <size>`, or
    /// `HMSG` with `<hdr_size> <size>` (2.x routes).
    Rmsg {
        account: &'a [u8],
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        /// The queue groups the receiver must serve, separated by blanks (empty: none).
        queues: &'a [u8],
        /// `HMSG`: length of the header block at the start of `payload`.
        header_len: Option<usize>,
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Ok,
    /// `-ERR <text>` from the peer, text as sent (quotes included).
    Err(&'a [u8]),
}

/// An owned copy of an [`Op`], for tests and for keeping an op past the callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedOp {
    Connect(Vec<u8>),
    Info(Vec<u8>),
    Pub {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Hpub {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        header_len: usize,
        payload: Vec<u8>,
    },
    Sub {
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
        sid: Vec<u8>,
    },
    Unsub {
        sid: Vec<u8>,
        max: Option<u64>,
    },
    Msg {
        subject: Vec<u8>,
        sid: Vec<u8>,
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    RouteSub {
        account: Vec<u8>,
        subject: Vec<u8>,
        queue: Option<(Vec<u8>, u32)>,
    },
    RouteUnsub {
        account: Vec<u8>,
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
    },
    Rmsg {
        account: Vec<u8>,
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        queues: Vec<u8>,
        header_len: Option<usize>,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
    Ok,
    Err(Vec<u8>),
}

impl Op<'_> {
    /// Copies every borrowed slice.
    pub fn to_owned_op(&self) -> OwnedOp {
        let v = |s: &[u8]| s.to_vec();
        let o = |s: Option<&[u8]>| s.map(|s| s.to_vec());
        match *self {
            Op::Connect(j) => OwnedOp::Connect(v(j)),
            Op::Info(j) => OwnedOp::Info(v(j)),
            Op::Pub {
                subject,
                reply,
                payload,
                ..
            } => OwnedOp::Pub {
                subject: v(subject),
                reply: o(reply),
                payload: v(payload),
            },
            Op::Hpub {
                subject,
                reply,
                header_len,
                payload,
            } => OwnedOp::Hpub {
                subject: v(subject),
                reply: o(reply),
                header_len,
                payload: v(payload),
            },
            Op::Sub {
                subject,
                queue,
                sid,
            } => OwnedOp::Sub {
                subject: v(subject),
                queue: o(queue),
                sid: v(sid),
            },
            Op::Unsub { sid, max } => OwnedOp::Unsub { sid: v(sid), max },
            Op::Msg {
                subject,
                sid,
                reply,
                payload,
            } => OwnedOp::Msg {
                subject: v(subject),
                sid: v(sid),
                reply: o(reply),
                payload: v(payload),
            },
            Op::RouteSub {
                account,
                subject,
                queue,
            } => OwnedOp::RouteSub {
                account: v(account),
                subject: v(subject),
                queue: queue.map(|(q, w)| (v(q), w)),
            },
            Op::RouteUnsub {
                account,
                subject,
                queue,
            } => OwnedOp::RouteUnsub {
                account: v(account),
                subject: v(subject),
                queue: o(queue),
            },
            Op::Rmsg {
                account,
                subject,
                reply,
                queues,
                header_len,
                payload,
            } => OwnedOp::Rmsg {
                account: v(account),
                subject: v(subject),
                reply: o(reply),
                queues: v(queues),
                header_len,
                payload: v(payload),
            },
            Op::Ping => OwnedOp::Ping,
            Op::Pong => OwnedOp::Pong,
            Op::Ok => OwnedOp::Ok,
            Op::Err(t) => OwnedOp::Err(v(t)),
        }
    }
}

/// How a `parse` call ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// All input was consumed (a trailing partial frame is buffered).
    Done,
    /// The callback returned `Break`; the rest of the input was dropped. The bytes used
    /// up to and including the op that stopped are [`Parser::stopped_at`]; the parser is
    /// then between ops, so the caller may keep the rest and parse it later (a CONNECT
    /// waiting for a bcrypt verdict).
    Stopped,
}

/// Incremental protocol parser. See the module docs.
#[derive(Debug)]
pub struct Parser {
    cfg: ParserConfig,
    /// Bytes of the one frame that did not arrive whole: a partial control line, or a
    /// complete control line (with its `\n`) followed by part of its payload.
    buf: Vec<u8>,
    state: State,
    err: Option<ProtoError>,
    /// Input bytes used by the last `parse` call that returned `Stopped`.
    stopped_at: usize,
    /// The start of the last PUB line the fast path read, for the next one to match.
    last_pub: LastPub,
}

/// `PUB <subject> ` as it began the last PUB without a reply that the fast path read.
/// A publisher mostly repeats its subject: a line that starts with the same bytes
/// needs only its size read, not the token scan.
#[derive(Debug, Clone, Copy)]
struct LastPub {
    bytes: [u8; LAST_PUB_MAX],
    /// 0: none.
    len: usize,
}

/// Longest line start remembered (op name, subject and the blanks).
const LAST_PUB_MAX: usize = 32;

impl LastPub {
    const NONE: LastPub = LastPub {
        bytes: [0; LAST_PUB_MAX],
        len: 0,
    };

    /// Remembers `rest[..len]` (at least `PUB x `), if it fits.
    #[inline]
    fn set(&mut self, rest: &[u8], len: usize) {
        if len <= LAST_PUB_MAX {
            self.bytes[..len].copy_from_slice(&rest[..len]);
            self.len = len;
        }
    }

    /// Whether `rest` starts with the remembered bytes: two overlapping loads of each
    /// side, not a `memcmp` call.
    #[inline(always)]
    fn starts(&self, rest: &[u8]) -> bool {
        let n = self.len;
        if n == 0 || rest.len() < n {
            return false;
        }
        let (a, b) = (&self.bytes[..n], &rest[..n]);
        let w8 = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
        let w16 = |s: &[u8], at: usize| u128::from_le_bytes(s[at..at + 16].try_into().unwrap());
        let w4 = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
        match n {
            16..=LAST_PUB_MAX => w16(a, 0) == w16(b, 0) && w16(a, n - 16) == w16(b, n - 16),
            8..=15 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
            _ => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle,
    /// `buf` holds the start of a control line (no `\n` yet).
    Line,
    /// `buf` holds a parsed control line and part of its payload. The payload starts at
    /// `start`; the frame (payload plus 2-byte trailer) ends at `need`.
    Frame {
        head: HeadSpans,
        start: usize,
        need: usize,
    },
}

/// Buffers above this size are released once their frame is done.
const KEEP_BUFFER: usize = 64 * 1024;
/// Up-front reservation cap for a split frame; beyond it the buffer grows as bytes come.
const MAX_RESERVE: usize = 16 * 1024 * 1024;
/// Enough bytes of a line to decide its op name (longest: `CONNECT`, `UNSUB `).
const NAME_WINDOW: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pub,
    Hpub,
    Msg,
    Sub,
    Unsub,
    Connect,
    Info,
    Ping,
    Pong,
    Ok,
    Err,
    RouteSub,
    RouteUnsub,
    Rmsg,
    Hmsg,
}

#[derive(Clone, Copy)]
enum After {
    /// Needs a space or tab right after the name.
    Space,
    /// Spaces/tabs optional, the rest of the line is the argument.
    Optional,
    /// Anything up to the end of the line is ignored.
    Ignore,
}

/// The control line of a payload-carrying op.
#[derive(Clone, Copy)]
enum Head<'a> {
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        /// Where the op's wire tail starts in its frame (see `Op::Pub::wire_tail`).
        tail_at: Option<u32>,
    },
    Hpub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        header_len: usize,
    },
    Msg {
        subject: &'a [u8],
        sid: &'a [u8],
        reply: Option<&'a [u8]>,
    },
    Rmsg {
        account: &'a [u8],
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        queues: &'a [u8],
        header_len: Option<usize>,
    },
}

impl<'a> Head<'a> {
    /// The op, given its payload and its whole frame (from the op name to the payload's
    /// CRLF; only read for a PUB's wire tail).
    #[inline]
    fn with_payload(self, payload: &'a [u8], frame: &'a [u8]) -> Op<'a> {
        match self {
            Head::Pub {
                subject,
                reply,
                tail_at,
            } => Op::Pub {
                subject,
                reply,
                payload,
                wire_tail: tail_at.and_then(|at| frame.get(at as usize..)),
            },
            Head::Hpub {
                subject,
                reply,
                header_len,
            } => Op::Hpub {
                subject,
                reply,
                header_len,
                payload,
            },
            Head::Msg {
                subject,
                sid,
                reply,
            } => Op::Msg {
                subject,
                sid,
                reply,
                payload,
            },
            Head::Rmsg {
                account,
                subject,
                reply,
                queues,
                header_len,
            } => Op::Rmsg {
                account,
                subject,
                reply,
                queues,
                header_len,
                payload,
            },
        }
    }

    fn to_spans(self, base: &[u8]) -> HeadSpans {
        let s = |x: &[u8]| Span::of(base, x);
        let o = |x: Option<&[u8]>| x.map(|x| Span::of(base, x));
        match self {
            Head::Pub { subject, reply, .. } => HeadSpans::Pub {
                subject: s(subject),
                reply: o(reply),
            },
            Head::Hpub {
                subject,
                reply,
                header_len,
            } => HeadSpans::Hpub {
                subject: s(subject),
                reply: o(reply),
                header_len,
            },
            Head::Msg {
                subject,
                sid,
                reply,
            } => HeadSpans::Msg {
                subject: s(subject),
                sid: s(sid),
                reply: o(reply),
            },
            Head::Rmsg {
                account,
                subject,
                reply,
                queues,
                header_len,
            } => HeadSpans::Rmsg {
                account: s(account),
                subject: s(subject),
                reply: o(reply),
                queues: (!queues.is_empty()).then(|| s(queues)),
                header_len,
            },
        }
    }
}

/// A byte range inside the frame buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The position of `part` inside `base` (`part` must be a sub-slice of `base`).
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        debug_assert!(start + part.len() <= base.len());
        Span {
            start,
            end: start + part.len(),
        }
    }

    #[inline]
    fn get(self, buf: &[u8]) -> &[u8] {
        &buf[self.start..self.end]
    }
}

/// `Head` with its slices stored as offsets into the frame buffer.
#[derive(Debug, Clone, Copy)]
enum HeadSpans {
    Pub {
        subject: Span,
        reply: Option<Span>,
    },
    Hpub {
        subject: Span,
        reply: Option<Span>,
        header_len: usize,
    },
    Msg {
        subject: Span,
        sid: Span,
        reply: Option<Span>,
    },
    Rmsg {
        account: Span,
        subject: Span,
        reply: Option<Span>,
        queues: Option<Span>,
        header_len: Option<usize>,
    },
}

impl HeadSpans {
    /// Inlined into `resume`: left out of line, it costs a call per split frame (callgrind).
    #[inline]
    fn resolve(self, buf: &[u8]) -> Head<'_> {
        match self {
            HeadSpans::Pub { subject, reply } => Head::Pub {
                subject: subject.get(buf),
                reply: reply.map(|r| r.get(buf)),
                tail_at: None,
            },
            HeadSpans::Hpub {
                subject,
                reply,
                header_len,
            } => Head::Hpub {
                subject: subject.get(buf),
                reply: reply.map(|r| r.get(buf)),
                header_len,
            },
            HeadSpans::Msg {
                subject,
                sid,
                reply,
            } => Head::Msg {
                subject: subject.get(buf),
                sid: sid.get(buf),
                reply: reply.map(|r| r.get(buf)),
            },
            HeadSpans::Rmsg {
                account,
                subject,
                reply,
                queues,
                header_len,
            } => Head::Rmsg {
                account: account.get(buf),
                subject: subject.get(buf),
                reply: reply.map(|r| r.get(buf)),
                queues: queues.map_or(&[][..], |q| q.get(buf)),
                header_len,
            },
        }
    }
}

/// A parsed control line.
enum Line<'a> {
    /// An op without payload, ready to deliver.
    Op(Op<'a>),
    /// An op whose payload of `size` bytes (plus a 2-byte trailer) follows the line.
    Head(Head<'a>, usize),
}

/// Outcome of finishing a frame that was buffered by an earlier call.
enum Resume {
    /// The frame is done; this many input bytes were used.
    Used(usize),
    /// All input was used and the frame is still incomplete.
    NeedMore,
    Stopped(usize),
}

impl Parser {
    pub fn new(cfg: ParserConfig) -> Self {
        Parser {
            cfg,
            buf: Vec::new(),
            state: State::Idle,
            err: None,
            stopped_at: 0,
            last_pub: LastPub::NONE,
        }
    }

    /// After `parse` returned `Parsed::Stopped`: how many bytes of that call's input were
    /// used (up to the end of the op whose callback returned `Break`).
    pub fn stopped_at(&self) -> usize {
        self.stopped_at
    }

    pub fn config(&self) -> &ParserConfig {
        &self.cfg
    }

    /// Changes apply from the next op that has not been started yet.
    pub fn config_mut(&mut self) -> &mut ParserConfig {
        &mut self.cfg
    }

    /// The error that killed this parser, if any; every later `parse` returns it again.
    pub fn error(&self) -> Option<ProtoError> {
        self.err
    }

    /// Bytes of an incomplete frame held from earlier calls.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Parses every complete op in `input`, calling `on_op` for each in order. Bytes of an
    /// incomplete trailing frame are copied into an internal buffer and completed by the
    /// next call. `on_op` returns `Break` to stop at once (the connection is closing); then
    /// `parse` returns `Ok(Parsed::Stopped)` and the rest of `input` is dropped.
    ///
    /// A delivered `CONNECT` clears `require_connect` before `on_op` sees it, so ops that
    /// follow it in the same read are not refused. To change other settings between ops
    /// of one read (e.g. `headers` after CONNECT), use [`Parser::parse_with_config`].
    pub fn parse<F>(&mut self, input: &[u8], mut on_op: F) -> Result<Parsed, ProtoError>
    where
        F: FnMut(Op<'_>) -> ControlFlow<()>,
    {
        self.parse_with_config(input, |op, _| on_op(op))
    }

    /// Like [`Parser::parse`], and `on_op` may change the configuration; the change
    /// applies to the ops after the one being delivered.
    pub fn parse_with_config<F>(&mut self, input: &[u8], mut on_op: F) -> Result<Parsed, ProtoError>
    where
        F: FnMut(Op<'_>, &mut ParserConfig) -> ControlFlow<()>,
    {
        if let Some(e) = self.err {
            return Err(e);
        }
        match self.run(input, &mut on_op) {
            Ok(p) => Ok(p),
            Err(e) => {
                self.err = Some(e);
                self.state = State::Idle;
                self.buf = Vec::new();
                Err(e)
            }
        }
    }

    fn run<F>(&mut self, input: &[u8], on_op: &mut F) -> Result<Parsed, ProtoError>
    where
        F: FnMut(Op<'_>, &mut ParserConfig) -> ControlFlow<()>,
    {
        let mut pos = match self.resume(input, on_op)? {
            Resume::Used(n) => n,
            Resume::NeedMore => return Ok(Parsed::Done),
            Resume::Stopped(used) => {
                self.stopped_at = used;
                return Ok(Parsed::Stopped);
            }
        };

        while pos < input.len() {
            let rest = &input[pos..];
            if let Some((at, size, start)) = repeated_pub(rest, &self.last_pub, &self.cfg) {
                // The op is built here, in registers, and goes straight to `on_op`.
                let end = frame_end(start, size);
                if end <= rest.len() {
                    if rest[end - 2] != b'\r' || rest[end - 1] != b'\n' {
                        return Err(ProtoError::UnknownOp);
                    }
                    pos += end;
                    let op = Op::Pub {
                        subject: &rest[4..at - 1],
                        reply: None,
                        payload: &rest[start..start + size],
                        wire_tail: Some(&rest[at - 1..end]),
                    };
                    if on_op(op, &mut self.cfg).is_break() {
                        self.stopped_at = pos;
                        return Ok(Parsed::Stopped);
                    }
                    continue;
                }
                // A frame that did not arrive whole: as any other below.
            }
            let fast = fast_head(rest, &self.cfg);
            if let Some((
                Head::Pub {
                    subject,
                    reply: None,
                    ..
                },
                _,
                _,
            )) = fast
            {
                self.last_pub.set(rest, 5 + subject.len());
            }
            let (line, next) = match fast {
                Some((head, size, next)) => (Line::Head(head, size), next),
                None => {
                    let window = line_window(&self.cfg).min(rest.len());
                    let Some(nl) = memchr(b'\n', &rest[..window]) else {
                        // Incomplete line (or one already too long): keep it for the next call.
                        self.buf.clear();
                        self.buf.extend_from_slice(&rest[..window]);
                        self.state = State::Line;
                        check_partial_line(&self.buf, &self.cfg)?;
                        debug_assert_eq!(window, rest.len());
                        return Ok(Parsed::Done);
                    };
                    (parse_line(&rest[..nl], &self.cfg)?, nl + 1)
                }
            };
            match line {
                Line::Op(op) => {
                    pos += next;
                    if deliver(op, &mut self.cfg, on_op).is_break() {
                        self.stopped_at = pos;
                        return Ok(Parsed::Stopped);
                    }
                }
                Line::Head(head, size) => {
                    let start = next;
                    let end = frame_end(start, size);
                    if end <= rest.len() {
                        if rest[end - 2] != b'\r' || rest[end - 1] != b'\n' {
                            return Err(ProtoError::UnknownOp);
                        }
                        pos += end;
                        let op = head.with_payload(&rest[start..start + size], &rest[..end]);
                        if on_op(op, &mut self.cfg).is_break() {
                            self.stopped_at = pos;
                            return Ok(Parsed::Stopped);
                        }
                    } else {
                        if rest.len() == end - 1 {
                            check_trailer_start(rest[end - 2])?;
                        }
                        let head = head.to_spans(rest);
                        self.buf.clear();
                        self.buf.reserve(end.min(MAX_RESERVE));
                        self.buf.extend_from_slice(rest);
                        self.state = State::Frame {
                            head,
                            start,
                            need: end,
                        };
                        return Ok(Parsed::Done);
                    }
                }
            }
        }
        Ok(Parsed::Done)
    }

    /// Completes the frame buffered by earlier calls, if any.
    fn resume<F>(&mut self, input: &[u8], on_op: &mut F) -> Result<Resume, ProtoError>
    where
        F: FnMut(Op<'_>, &mut ParserConfig) -> ControlFlow<()>,
    {
        let mut used = 0;
        if let State::Line = self.state {
            if input.is_empty() {
                return Ok(Resume::NeedMore);
            }
            let take = line_window(&self.cfg)
                .saturating_sub(self.buf.len())
                .min(input.len());
            let Some(nl) = memchr(b'\n', &input[..take]) else {
                self.buf.extend_from_slice(&input[..take]);
                check_partial_line(&self.buf, &self.cfg)?;
                debug_assert_eq!(take, input.len());
                return Ok(Resume::NeedMore);
            };
            self.buf.extend_from_slice(&input[..=nl]);
            used = nl + 1;
            let line_len = self.buf.len() - 1;
            match parse_line(&self.buf[..line_len], &self.cfg)? {
                Line::Op(op) => {
                    self.state = State::Idle;
                    let flow = deliver(op, &mut self.cfg, on_op);
                    self.buf.clear();
                    return Ok(if flow.is_break() {
                        Resume::Stopped(used)
                    } else {
                        Resume::Used(used)
                    });
                }
                Line::Head(head, size) => {
                    let start = self.buf.len();
                    let need = frame_end(start, size);
                    let head = head.to_spans(&self.buf);
                    self.buf.reserve((need - start).min(MAX_RESERVE));
                    self.state = State::Frame { head, start, need };
                }
            }
        }
        if let State::Frame { head, start, need } = self.state {
            let rest = &input[used..];
            let take = (need - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            used += take;
            if self.buf.len() < need {
                if self.buf.len() == need - 1 {
                    check_trailer_start(self.buf[need - 2])?;
                }
                return Ok(Resume::NeedMore);
            }
            if self.buf[need - 2] != b'\r' || self.buf[need - 1] != b'\n' {
                return Err(ProtoError::UnknownOp);
            }
            self.state = State::Idle;
            let head = head.resolve(&self.buf);
            let payload = &self.buf[start..need - 2];
            let flow = on_op(head.with_payload(payload, &[]), &mut self.cfg);
            self.buf.clear();
            if self.buf.capacity() > KEEP_BUFFER {
                self.buf = Vec::new();
            }
            if flow.is_break() {
                return Ok(Resume::Stopped(used));
            }
        }
        Ok(Resume::Used(used))
    }
}

/// How many bytes of a line to look at before deciding it is too long.
#[inline]
fn line_window(cfg: &ParserConfig) -> usize {
    cfg.max_control_line.saturating_add(2).max(NAME_WINDOW)
}

#[inline]
fn frame_end(payload_start: usize, size: usize) -> usize {
    payload_start.saturating_add(size).saturating_add(2)
}

/// The first byte of a payload trailer whose second byte has not arrived: a wrong one fails
/// now, as it would in a frame that arrived whole. Rare (once per read at most), so cold.
#[cold]
#[inline(never)]
fn check_trailer_start(b: u8) -> Result<(), ProtoError> {
    if b == b'\r' {
        Ok(())
    } else {
        Err(ProtoError::UnknownOp)
    }
}

/// Delivers a payload-free op. A CONNECT ends the "CONNECT required" phase first.
#[inline]
fn deliver<F>(op: Op<'_>, cfg: &mut ParserConfig, on_op: &mut F) -> ControlFlow<()>
where
    F: FnMut(Op<'_>, &mut ParserConfig) -> ControlFlow<()>,
{
    if let Op::Connect(_) = op {
        cfg.require_connect = false;
    }
    on_op(op, cfg)
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH: u64 = 0x8080_8080_8080_8080;
const BELOW_21: u64 = 0x5f5f_5f5f_5f5f_5f5f;

/// The high bit of every byte of `w` that is below 0x21 (space, tab, CR, LF and the other
/// controls); exact, no carries between bytes.
#[inline(always)]
fn low_bytes(w: u64) -> u64 {
    !(((w & LOW7) + BELOW_21) | w) & HIGH
}

/// Fast path for the ops that carry the traffic (PUB, and MSG / HPUB when enabled) in
/// their usual shape: one space between arguments, no other control bytes, a size of at
/// most 9 digits within the limits. It answers only when the general path would produce
/// exactly the same op, and returns `None` for everything else (errors included), which
/// then goes through the general path. Returns the head, payload size and the index just
/// after the line's `\n`.
#[inline(always)]
fn fast_head<'a>(rest: &'a [u8], cfg: &ParserConfig) -> Option<(Head<'a>, usize, usize)> {
    const PUB: u32 = u32::from_le_bytes(*b"pub ");
    const MSG: u32 = u32::from_le_bytes(*b"msg ");
    const HPUB: u32 = u32::from_le_bytes(*b"hpub");
    if cfg.require_connect {
        return None;
    }
    let w4 = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let (kind, at) = if w4 | 0x0020_2020 == PUB {
        (Kind::Pub, 4)
    } else if cfg.route && w4 | 0x0020_2020 == MSG {
        (Kind::Msg, 4)
    } else if cfg.headers && w4 | 0x2020_2020 == HPUB && rest.get(4) == Some(&b' ') {
        (Kind::Hpub, 5)
    } else {
        return None;
    };
    let mut t: [&[u8]; 4] = [&[]; 4];
    let limit = cfg.max_control_line.min(FAST_LINE_MAX);
    let (n, line_len, next) = fast_tokens(rest, at, limit, &mut t)?;
    if line_len > cfg.max_control_line {
        return None;
    }
    let (head, size) = match (kind, n) {
        (Kind::Pub, 2 | 3) => {
            let reply = if n == 3 { Some(t[1]) } else { None };
            let size = t[n - 1];
            // The tokens are one blank apart: with a CRLF and a size as a MSG writes it,
            // the rest of the frame from the blank after the subject is a MSG's tail.
            let canonical = next - line_len == 2 && (size.len() == 1 || size[0] != b'0');
            let head = Head::Pub {
                subject: t[0],
                reply,
                tail_at: canonical.then_some((at + t[0].len()) as u32),
            };
            (head, fast_size(size)?)
        }
        (Kind::Msg, 3 | 4) => {
            let reply = if n == 4 { Some(t[2]) } else { None };
            let head = Head::Msg {
                subject: t[0],
                sid: t[1],
                reply,
            };
            (head, fast_size(t[n - 1])?)
        }
        (Kind::Hpub, 3 | 4) => {
            let reply = if n == 4 { Some(t[1]) } else { None };
            let header_len = fast_size(t[n - 2])?;
            let size = fast_size(t[n - 1])?;
            if header_len > size {
                return None;
            }
            let head = Head::Hpub {
                subject: t[0],
                reply,
                header_len,
            };
            (head, size)
        }
        _ => return None,
    };
    if size > cfg.max_payload {
        return None;
    }
    Some((head, size, next))
}

/// A PUB line that starts as the last one did (`last`), then has only its size and a
/// CRLF: what [`fast_head`] would answer for it, without the token scan. Returns the
/// length of the line's start (`PUB <subject> `), the payload size and where the payload
/// starts. `None` for any other line, which then goes to `fast_head`.
#[inline(always)]
fn repeated_pub(rest: &[u8], last: &LastPub, cfg: &ParserConfig) -> Option<(usize, usize, usize)> {
    if !last.starts(rest) || cfg.require_connect {
        return None;
    }
    let at = last.len;
    let mut size = 0usize;
    let mut i = at;
    loop {
        let v = rest.get(i)?.wrapping_sub(b'0');
        if v > 9 {
            break;
        }
        size = size * 10 + v as usize;
        i += 1;
    }
    let digits = i - at;
    // A leading zero would change the wire tail: `fast_head` decides those.
    if digits == 0 || digits > 9 || (rest[at] == b'0' && digits > 1) {
        return None;
    }
    if rest[i] != b'\r' || rest.get(i + 1) != Some(&b'\n') {
        return None;
    }
    if i > cfg.max_control_line || size > cfg.max_payload {
        return None;
    }
    Some((at, size, i + 2))
}

/// Longest line the fast path scans.
const FAST_LINE_MAX: usize = 512;

/// Splits `rest[at..]` into single-space-separated tokens up to the line end, 8 bytes at a
/// time. `None` for anything unusual: an empty token (two blanks, a leading blank), a tab
/// or other control byte, a `\r` not followed by `\n`, more than 4 tokens, a line longer
/// than `limit`, or fewer than 8 bytes left to look at. Returns the token count, the line
/// length without its line ending, and the index after the `\n`.
#[inline(always)]
fn fast_tokens<'a>(
    rest: &'a [u8],
    at: usize,
    limit: usize,
    t: &mut [&'a [u8]; 4],
) -> Option<(usize, usize, usize)> {
    let mut tok = at;
    let mut n = 0;
    let mut i = at;
    while i <= limit {
        let w = u64::from_le_bytes(rest.get(i..i + 8)?.try_into().ok()?);
        let mut m = low_bytes(w);
        while m != 0 {
            let j = i + (m.trailing_zeros() / 8) as usize;
            m &= m - 1;
            if j == tok || n == t.len() {
                return None;
            }
            t[n] = rest.get(tok..j)?;
            n += 1;
            match rest[j] {
                b' ' => tok = j + 1,
                b'\n' => return Some((n, j, j + 1)),
                b'\r' if rest.get(j + 1) == Some(&b'\n') => return Some((n, j, j + 2)),
                _ => return None,
            }
        }
        i += 8;
    }
    None
}

/// 1 to 9 decimal digits.
#[inline(always)]
fn fast_size(d: &[u8]) -> Option<usize> {
    if d.is_empty() || d.len() > 9 {
        return None;
    }
    let mut n = 0usize;
    for &c in d {
        let v = c.wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        n = n * 10 + v as usize;
    }
    Some(n)
}

/// Checks the start of a line whose `\n` has not arrived: a definite op-name error is
/// reported now, and so is a line that is already too long.
fn check_partial_line(buf: &[u8], cfg: &ParserConfig) -> Result<(), ProtoError> {
    if buf.is_empty() || classify(buf, false, cfg)?.is_none() {
        return Ok(());
    }
    let len = match buf.last() {
        Some(b'\r') => buf.len() - 1,
        _ => buf.len(),
    };
    if len > cfg.max_control_line {
        return Err(ProtoError::MaxControlLine);
    }
    Ok(())
}

/// Decides the op of a line from its first bytes. For a partial line (`complete` false)
/// `Ok(None)` means "not decided yet". Returns the op and where its arguments start.
#[inline(always)]
fn classify(
    line: &[u8],
    complete: bool,
    cfg: &ParserConfig,
) -> Result<Option<(Kind, usize)>, ProtoError> {
    let undecided = || {
        if complete {
            Err(ProtoError::UnknownOp)
        } else {
            Ok(None)
        }
    };
    let Some(&b0) = line.first() else {
        if complete && cfg.require_connect {
            return Err(ProtoError::AuthViolation);
        }
        return undecided();
    };
    let b0 = b0.to_ascii_lowercase();
    if cfg.require_connect && b0 != b'c' {
        return Err(ProtoError::AuthViolation);
    }
    let (name, kind, after): (&[u8], Kind, After) = match b0 {
        b'p' => match line.get(1).map(u8::to_ascii_lowercase) {
            Some(b'u') => (b"pub", Kind::Pub, After::Space),
            Some(b'i') => (b"ping", Kind::Ping, After::Ignore),
            Some(b'o') => (b"pong", Kind::Pong, After::Ignore),
            Some(_) => return Err(ProtoError::UnknownOp),
            None => return undecided(),
        },
        b's' => (b"sub", Kind::Sub, After::Space),
        b'u' => (b"unsub", Kind::Unsub, After::Space),
        b'c' => (b"connect", Kind::Connect, After::Optional),
        b'i' => (b"info", Kind::Info, After::Optional),
        b'+' => (b"+ok", Kind::Ok, After::Ignore),
        b'-' => (b"-err", Kind::Err, After::Space),
        b'm' if cfg.route => (b"msg", Kind::Msg, After::Space),
        b'h' if cfg.route || cfg.headers => match line.get(1).map(u8::to_ascii_lowercase) {
            Some(b'p') if cfg.headers => (b"hpub", Kind::Hpub, After::Space),
            Some(b'm') if cfg.route => (b"hmsg", Kind::Hmsg, After::Space),
            Some(_) => return Err(ProtoError::UnknownOp),
            None => return undecided(),
        },
        b'r' if cfg.route => match (line.get(1), line.get(2)) {
            (Some(b'm' | b'M'), _) => (b"rmsg", Kind::Rmsg, After::Space),
            (Some(b's' | b'S'), Some(b'+')) => (b"rs+", Kind::RouteSub, After::Space),
            (Some(b's' | b'S'), Some(b'-')) => (b"rs-", Kind::RouteUnsub, After::Space),
            (Some(b's' | b'S'), None) | (None, _) => return undecided(),
            _ => return Err(ProtoError::UnknownOp),
        },
        _ => return Err(ProtoError::UnknownOp),
    };
    let n = name.len();
    let have = line.len().min(n);
    if !line[1..have]
        .iter()
        .zip(&name[1..have])
        .all(|(a, b)| a.to_ascii_lowercase() == *b)
    {
        return Err(ProtoError::UnknownOp);
    }
    if line.len() < n {
        return undecided();
    }
    let args = match after {
        After::Ignore => n,
        After::Optional => skip_blanks(line, n),
        After::Space => match line.get(n) {
            Some(b' ' | b'\t') => skip_blanks(line, n + 1),
            Some(_) => return Err(ProtoError::UnknownOp),
            None => return undecided(),
        },
    };
    Ok(Some((kind, args)))
}

#[inline]
fn skip_blanks(line: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t') = line.get(i) {
        i += 1;
    }
    i
}

/// Parses a complete control line (`raw` excludes the `\n`).
#[inline(always)]
fn parse_line<'a>(raw: &'a [u8], cfg: &ParserConfig) -> Result<Line<'a>, ProtoError> {
    let line = match raw.split_last() {
        Some((b'\r', head)) => head,
        _ => raw,
    };
    let (kind, at) = match classify(line, true, cfg)? {
        Some(x) => x,
        None => return Err(ProtoError::UnknownOp),
    };
    if line.len() > cfg.max_control_line {
        return Err(ProtoError::MaxControlLine);
    }
    let rest = &line[at..];
    Ok(match kind {
        Kind::Ping => Line::Op(Op::Ping),
        Kind::Pong => Line::Op(Op::Pong),
        Kind::Ok => Line::Op(Op::Ok),
        Kind::Connect => Line::Op(Op::Connect(rest)),
        Kind::Info => Line::Op(Op::Info(rest)),
        Kind::Err => Line::Op(Op::Err(rest)),
        Kind::Pub => {
            let mut a = [&[][..]; 3];
            let (subject, reply, size) = match split_args(rest, &mut a) {
                2 => (a[0], None, a[1]),
                3 => (a[0], Some(a[1]), a[2]),
                _ => return Err(ProtoError::ParserError),
            };
            let size = parse_size(size).ok_or(ProtoError::ParserError)?;
            if size > cfg.max_payload {
                return Err(ProtoError::MaxPayload);
            }
            Line::Head(
                Head::Pub {
                    subject,
                    reply,
                    tail_at: None,
                },
                size,
            )
        }
        Kind::Hpub => {
            let mut a = [&[][..]; 4];
            let (subject, reply, hdr, total) = match split_args(rest, &mut a) {
                3 => (a[0], None, a[1], a[2]),
                4 => (a[0], Some(a[1]), a[2], a[3]),
                _ => return Err(ProtoError::ParserError),
            };
            let header_len = parse_size(hdr).ok_or(ProtoError::ParserError)?;
            let size = parse_size(total).ok_or(ProtoError::ParserError)?;
            if header_len > size {
                return Err(ProtoError::ParserError);
            }
            if size > cfg.max_payload {
                return Err(ProtoError::MaxPayload);
            }
            Line::Head(
                Head::Hpub {
                    subject,
                    reply,
                    header_len,
                },
                size,
            )
        }
        Kind::Msg => {
            let mut a = [&[][..]; 4];
            let (subject, sid, reply, size) = match split_args(rest, &mut a) {
                3 => (a[0], a[1], None, a[2]),
                4 => (a[0], a[1], Some(a[2]), a[3]),
                _ => return Err(ProtoError::ParserError),
            };
            let size = parse_size(size).ok_or(ProtoError::ParserError)?;
            if size > cfg.max_payload {
                return Err(ProtoError::MaxPayload);
            }
            Line::Head(
                Head::Msg {
                    subject,
                    sid,
                    reply,
                },
                size,
            )
        }
        Kind::Rmsg | Kind::Hmsg => {
            let (head, size) = parse_rmsg(rest, kind == Kind::Hmsg)?;
            if size > cfg.max_payload {
                return Err(ProtoError::MaxPayload);
            }
            Line::Head(head, size)
        }
        Kind::RouteSub => {
            let mut a = [&[][..]; 4];
            match split_args(rest, &mut a) {
                2 => Line::Op(Op::RouteSub {
                    account: a[0],
                    subject: a[1],
                    queue: None,
                }),
                4 => {
                    let w = parse_u64(a[3]).ok_or(ProtoError::ParserError)?;
                    Line::Op(Op::RouteSub {
                        account: a[0],
                        subject: a[1],
                        queue: Some((a[2], w.min(u32::MAX as u64) as u32)),
                    })
                }
                _ => return Err(ProtoError::ParserError),
            }
        }
        Kind::RouteUnsub => {
            let mut a = [&[][..]; 3];
            match split_args(rest, &mut a) {
                2 | 3 => Line::Op(Op::RouteUnsub {
                    account: a[0],
                    subject: a[1],
                    queue: (!a[2].is_empty()).then_some(a[2]),
                }),
                _ => return Err(ProtoError::ParserError),
            }
        }
        Kind::Sub => {
            let mut a = [&[][..]; 3];
            match split_args(rest, &mut a) {
                2 => Line::Op(Op::Sub {
                    subject: a[0],
                    queue: None,
                    sid: a[1],
                }),
                3 => Line::Op(Op::Sub {
                    subject: a[0],
                    queue: Some(a[1]),
                    sid: a[2],
                }),
                _ => return Err(ProtoError::ParserError),
            }
        }
        Kind::Unsub => {
            let mut a = [&[][..]; 2];
            match split_args(rest, &mut a) {
                1 => Line::Op(Op::Unsub {
                    sid: a[0],
                    max: None,
                }),
                2 => Line::Op(Op::Unsub {
                    sid: a[0],
                    max: parse_u64(a[1]).filter(|&m| m > 0),
                }),
                _ => return Err(ProtoError::ParserError),
            }
        }
    })
}

/// The arguments of `RMSG`/`HMSG` on a 2.x route: `<account> <subject>`, then nothing, a
/// reply, `+ <reply> <queue>...` or `| <queue>...`, then (`HMSG`) the header size and the
/// size. The queue names come back as one slice of the line, blanks between them.
fn parse_rmsg(rest: &[u8], headers: bool) -> Result<(Head<'_>, usize), ProtoError> {
    let mut t: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
    let mut i = 0;
    while i < rest.len() {
        if is_arg_sep(rest[i]) {
            i += 1;
            continue;
        }
        let end = find_sep(rest, i + 1);
        t.push(&rest[i..end]);
        i = end;
    }
    let tail = if headers { 2 } else { 1 };
    if t.len() < 2 + tail {
        return Err(ProtoError::ParserError);
    }
    let size = parse_size(t[t.len() - 1]).ok_or(ProtoError::ParserError)?;
    let header_len = if headers {
        let h = parse_size(t[t.len() - 2]).ok_or(ProtoError::ParserError)?;
        if h > size {
            return Err(ProtoError::ParserError);
        }
        Some(h)
    } else {
        None
    };
    let middle = &t[2..t.len() - tail];
    let (reply, queues): (Option<&[u8]>, &[&[u8]]) = match middle {
        [] => (None, &[]),
        [reply] => (Some(reply), &[]),
        [b"+", reply, queues @ ..] => (Some(reply), queues),
        [b"|", queues @ ..] => (None, queues),
        _ => return Err(ProtoError::ParserError),
    };
    let queues = match (queues.first(), queues.last()) {
        (Some(first), Some(last)) => {
            let start = first.as_ptr() as usize - rest.as_ptr() as usize;
            let end = last.as_ptr() as usize - rest.as_ptr() as usize + last.len();
            &rest[start..end]
        }
        _ => &[][..],
    };
    let head = Head::Rmsg {
        account: t[0],
        subject: t[1],
        reply,
        queues,
        header_len,
    };
    Ok((head, size))
}

/// Splits on runs of spaces, tabs and stray `\r` (as Go's `splitArg`). Fills `out` and
/// returns the number of arguments; a count above `out.len()` means "too many".
#[inline]
fn split_args<'a, const N: usize>(s: &'a [u8], out: &mut [&'a [u8]; N]) -> usize {
    let mut count = 0;
    let mut i = 0;
    let len = s.len();
    loop {
        while i < len && is_arg_sep(s[i]) {
            i += 1;
        }
        if i == len {
            return count;
        }
        let end = find_sep(s, i + 1);
        if count == N {
            return N + 1;
        }
        out[count] = &s[i..end];
        count += 1;
        i = end;
    }
}

/// Index of the first argument separator in `s` at or after `i`, or `s.len()`.
///
/// Looks at 8 bytes at a time for any byte below 0x21; the lowest flagged byte of a word
/// is always a real one (a borrow only flags more significant bytes), and it is then
/// checked exactly, since other control bytes are not separators.
#[inline]
fn find_sep(s: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(word) = s.get(i..i + 8) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let m = w.wrapping_sub(ONES * 0x21) & !w & HIGH;
        if m == 0 {
            i += 8;
            continue;
        }
        let j = i + (m.trailing_zeros() / 8) as usize;
        if is_arg_sep(s[j]) {
            return j;
        }
        i = j + 1;
    }
    while i < s.len() {
        if is_arg_sep(s[i]) {
            return i;
        }
        i += 1;
    }
    s.len()
}

#[inline]
fn is_arg_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

/// Decimal digits only; saturates instead of overflowing (the caller's limit check then
/// rejects it).
#[inline]
fn parse_size(d: &[u8]) -> Option<usize> {
    if d.is_empty() {
        return None;
    }
    let mut n: usize = 0;
    for &c in d {
        let v = c.wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(v as usize);
    }
    Some(n)
}

#[inline]
fn parse_u64(d: &[u8]) -> Option<u64> {
    if d.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &c in d {
        let v = c.wrapping_sub(b'0');
        if v > 9 {
            return None;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(v));
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProtoError as E;

    fn cfg() -> ParserConfig {
        ParserConfig::default()
    }

    fn route() -> ParserConfig {
        ParserConfig {
            route: true,
            ..cfg()
        }
    }

    fn headers() -> ParserConfig {
        ParserConfig {
            headers: true,
            ..cfg()
        }
    }

    fn auth() -> ParserConfig {
        ParserConfig {
            require_connect: true,
            ..cfg()
        }
    }

    type Outcome = (Vec<OwnedOp>, Option<ProtoError>);

    /// Feeds `chunks` in order; a CONNECT that asks for headers turns HPUB on, like a client
    /// would. Stops at the first error.
    fn run_chunks(cfg: ParserConfig, chunks: &[&[u8]]) -> Outcome {
        let mut p = Parser::new(cfg);
        let mut ops = Vec::new();
        for chunk in chunks {
            let r = p.parse_with_config(chunk, |op, cfg| {
                if let Op::Connect(json) = op {
                    if json.windows(14).any(|w| w == b"\"headers\":true") {
                        cfg.headers = true;
                    }
                }
                ops.push(op.to_owned_op());
                ControlFlow::Continue(())
            });
            match r {
                Ok(Parsed::Done) => {}
                Ok(Parsed::Stopped) => unreachable!(),
                Err(e) => {
                    // a dead parser stays dead and delivers nothing more
                    let again = p.parse(b"PING\r\n", |_| panic!("op after error"));
                    assert_eq!(again, Err(e));
                    assert_eq!(p.error(), Some(e));
                    return (ops, Some(e));
                }
            }
        }
        (ops, None)
    }

    fn whole(cfg: ParserConfig, s: &[u8]) -> Outcome {
        run_chunks(cfg, &[s])
    }

    /// Same ops and error for: whole, every single split point, every pair of split points
    /// (short streams), and one byte at a time.
    fn check_splits(cfg: ParserConfig, s: &[u8]) -> Outcome {
        let expect = whole(cfg, s);
        let show = || String::from_utf8_lossy(s).into_owned();
        for i in 0..=s.len() {
            assert_eq!(
                run_chunks(cfg, &[&s[..i], &s[i..]]),
                expect,
                "split {i} of {:?}",
                show()
            );
        }
        if s.len() <= 80 {
            for i in 0..=s.len() {
                for j in i..=s.len() {
                    assert_eq!(
                        run_chunks(cfg, &[&s[..i], &s[i..j], &s[j..]]),
                        expect,
                        "splits {i},{j} of {:?}",
                        show()
                    );
                }
            }
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run_chunks(cfg, &bytes), expect, "bytewise {:?}", show());
        expect
    }

    fn pub_op(subject: &str, reply: Option<&str>, payload: &str) -> OwnedOp {
        OwnedOp::Pub {
            subject: subject.into(),
            reply: reply.map(Into::into),
            payload: payload.into(),
        }
    }

    fn sub_op(subject: &str, queue: Option<&str>, sid: &str) -> OwnedOp {
        OwnedOp::Sub {
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
        }
    }

    fn ok(ops: Vec<OwnedOp>) -> Outcome {
        (ops, None)
    }

    fn err(ops: Vec<OwnedOp>, e: ProtoError) -> Outcome {
        (ops, Some(e))
    }

    #[test]
    fn appendix_b_parsing_rows() {
        let c = cfg();
        assert_eq!(
            check_splits(c, b"SUB foo 1\r\n"),
            ok(vec![sub_op("foo", None, "1")])
        );
        assert_eq!(
            check_splits(c, b"PUB foo 5\r\nhello\r\n"),
            ok(vec![pub_op("foo", None, "hello")])
        );
        assert_eq!(
            check_splits(c, b"CONNECT {}\r\n"),
            ok(vec![OwnedOp::Connect(b"{}".to_vec())])
        );
        assert_eq!(check_splits(c, b"ZZZ\r\n"), err(vec![], E::UnknownOp));
        assert_eq!(
            check_splits(c, b"PUB foo bar\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(
                c,
                b"CONNECT {\"pedantic\":true,\"verbose\":true}\r\nSUB > 1\r\nPUB foo.* 2\r\nok\r\n"
            ),
            ok(vec![
                OwnedOp::Connect(b"{\"pedantic\":true,\"verbose\":true}".to_vec()),
                sub_op(">", None, "1"),
                pub_op("foo.*", None, "ok"),
            ])
        );
        assert_eq!(
            check_splits(c, b"SUB foo..bar 1\r\n"),
            ok(vec![sub_op("foo..bar", None, "1")])
        );
        assert_eq!(
            check_splits(c, b"-ERR 'x'\r\n"),
            ok(vec![OwnedOp::Err(b"'x'".to_vec())])
        );
        assert_eq!(
            check_splits(c, b"MSG foo 1 2\r\nok\r\n"),
            err(vec![], E::UnknownOp)
        );
        assert_eq!(
            check_splits(c, b"PUB _SYS.foo 2\r\nok\r\n"),
            ok(vec![pub_op("_SYS.foo", None, "ok")])
        );
        assert_eq!(
            check_splits(c, b"SUB foo 1\r\nUNSUB 1 2\r\nPUB foo 0\r\n\r\n"),
            ok(vec![
                sub_op("foo", None, "1"),
                OwnedOp::Unsub {
                    sid: b"1".to_vec(),
                    max: Some(2)
                },
                pub_op("foo", None, ""),
            ])
        );
        assert_eq!(
            check_splits(c, b"PUB foo 2\r\nokk\r\n"),
            err(vec![], E::UnknownOp)
        );
        assert_eq!(check_splits(c, b"PING foo\r\n"), ok(vec![OwnedOp::Ping]));
        assert_eq!(
            check_splits(c, b"PUB foo 2000000\r\n"),
            err(vec![], E::MaxPayload)
        );
        assert_eq!(
            check_splits(auth(), b"PING\r\n"),
            err(vec![], E::AuthViolation)
        );
        assert_eq!(
            check_splits(auth(), b"SUB foo 1\r\n"),
            err(vec![], E::AuthViolation)
        );
    }

    #[test]
    fn op_names_need_a_separator() {
        let c = cfg();
        for s in [
            &b"PUBS foo 2\r\nok\r\n"[..],
            b"SUBZZZ foo 1\r\n",
            b"UNSUBX 1\r\n",
            b"-ERRx\r\n",
            b"PUB\r\n",
            b"SUB\n",
            b"UNSUB\r\n",
            b"-ERR\r\n",
            b"PIN\r\n",
            b"PO\r\n",
            b"P\r\n",
            b"+O\r\n",
            b"CONNEC {}\r\n",
            b"INF {}\r\n",
            b"CPING\r\n",
            b"\r\n",
            b"\n",
            b" PING\r\n",
            b"\tSUB foo 1\r\n",
            b"HPUB foo 0 0\r\n\r\n",
            b"PUX foo 1\r\n",
            b"+KO\r\n",
        ] {
            assert_eq!(
                check_splits(c, s),
                err(vec![], E::UnknownOp),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn separators_tabs_and_line_ends() {
        let c = cfg();
        assert_eq!(
            check_splits(
                c,
                b"PUB\tfoo\t\t2\r\nok\r\nSUB \t foo\tq \t 1\nPUB foo  reply   2\nhi\r\n"
            ),
            ok(vec![
                pub_op("foo", None, "ok"),
                sub_op("foo", Some("q"), "1"),
                pub_op("foo", Some("reply"), "hi"),
            ])
        );
        // trailing blanks, and a stray \r inside the line separates arguments like Go's splitArg
        assert_eq!(
            check_splits(c, b"SUB foo 1 \t\r\nSUB foo\r2\r\n"),
            ok(vec![sub_op("foo", None, "1"), sub_op("foo", None, "2")])
        );
        // a bare \n ends a line; only one \r before it is dropped
        assert_eq!(
            check_splits(c, b"CONNECT {}\nCONNECT {}\r\r\n"),
            ok(vec![
                OwnedOp::Connect(b"{}".to_vec()),
                OwnedOp::Connect(b"{}\r".to_vec())
            ])
        );
        // the payload trailer is exactly \r\n (see `payload_trailer_is_exactly_crlf`)
        assert_eq!(
            check_splits(c, b"PUB foo 2\r\nok\r\r\n"),
            err(vec![], E::UnknownOp)
        );
        // payload shorter than declared is read as payload bytes; the trailer is wrong
        assert_eq!(
            check_splits(c, b"PUB foo 3\r\nok\r\nPING\r\n"),
            err(vec![], E::UnknownOp)
        );
        // payload may contain CR/LF
        assert_eq!(
            check_splits(c, b"PUB foo 4\r\n\r\n\r\n\r\n"),
            ok(vec![pub_op("foo", None, "\r\n\r\n")])
        );
    }

    #[test]
    fn payload_trailer_is_exactly_crlf() {
        let all = ParserConfig {
            headers: true,
            route: true,
            ..cfg()
        };
        let hpub = |payload: &str| OwnedOp::Hpub {
            subject: b"h".to_vec(),
            reply: None,
            header_len: 0,
            payload: payload.into(),
        };
        let msg = |payload: &str| OwnedOp::Msg {
            subject: b"m".to_vec(),
            sid: b"RSID:1:2".to_vec(),
            reply: None,
            payload: payload.into(),
        };
        let frames: [&[u8]; 3] = [
            b"PUB a 3\r\nabc\r\n",
            b"HPUB h 0 2\r\nhi\r\n",
            b"MSG m RSID:1:2 2\r\nhi\r\n",
        ];
        let good = frames.concat();
        let delivered = vec![pub_op("a", None, "abc"), hpub("hi"), msg("hi")];
        assert_eq!(check_splits(all, &good), ok(delivered.clone()));
        // every other value of either trailer byte of each op, followed by more ops
        let mut end = 0;
        for (i, frame) in frames.iter().enumerate() {
            end += frame.len();
            for at in [end - 2, end - 1] {
                for b in [b'\r', b'\n', b'X', b' ', b'\0', 0xff] {
                    if b == good[at] {
                        continue;
                    }
                    let mut s = good.clone();
                    s[at] = b;
                    s.extend_from_slice(b"PING\r\n");
                    assert_eq!(
                        check_splits(all, &s),
                        err(delivered[..i].to_vec(), E::UnknownOp),
                        "{:?}",
                        String::from_utf8_lossy(&s)
                    );
                }
            }
        }
        // the case from the bug report: not delivered, the PING is not reached
        let c = cfg();
        assert_eq!(
            check_splits(c, b"PUB a 3\r\nabcX\nPING\r\n"),
            err(vec![], E::UnknownOp)
        );
        for s in [
            &b"PUB a 3\r\nabc\n\n"[..],
            b"PUB a 3\r\nabc\nX",
            b"PUB a 3\r\nabcXY",
            b"PUB a 0\r\n\n\r\n",
            b"PUB a 0\r\nX",
            b"PUB a 3\r\nabc\r\r",
            b"PUB a 2\r\nok\r\nPUB a 3\r\nabc\n\r\n",
        ] {
            assert_eq!(
                check_splits(c, s).1,
                Some(E::UnknownOp),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
        // a wrong first trailer byte fails at once, before the second byte arrives
        let mut p = Parser::new(c);
        assert_eq!(p.parse(b"PUB a 3\r\nab", |_| panic!()), Ok(Parsed::Done));
        assert_eq!(p.parse(b"cX", |_| panic!()), Err(E::UnknownOp));
        let mut p = Parser::new(c);
        assert_eq!(p.parse(b"PUB a 3\r\nabcX", |_| panic!()), Err(E::UnknownOp));
        // a correct partial trailer waits for the rest
        for s in [&b"PUB a 3\r\nabc"[..], b"PUB a 3\r\nabc\r"] {
            assert_eq!(check_splits(c, s), ok(vec![]));
        }
    }

    #[test]
    fn case_insensitive_names() {
        let c = ParserConfig {
            headers: true,
            route: true,
            ..cfg()
        };
        assert_eq!(
            check_splits(
                c,
                b"pub a 1\r\nx\r\nPuB a 1\r\ny\r\nsUb a 1\r\nunSUB 1\r\nping\r\nPoNg\r\n+ok\r\n-eRr 'e'\r\n\
                  connect{}\r\nInFo {}\r\nmsg a 1 0\r\n\r\nhpub a 0 0\r\n\r\n"
            ),
            ok(vec![
                pub_op("a", None, "x"),
                pub_op("a", None, "y"),
                sub_op("a", None, "1"),
                OwnedOp::Unsub {
                    sid: b"1".to_vec(),
                    max: None
                },
                OwnedOp::Ping,
                OwnedOp::Pong,
                OwnedOp::Ok,
                OwnedOp::Err(b"'e'".to_vec()),
                OwnedOp::Connect(b"{}".to_vec()),
                OwnedOp::Info(b"{}".to_vec()),
                OwnedOp::Msg {
                    subject: b"a".to_vec(),
                    sid: b"1".to_vec(),
                    reply: None,
                    payload: vec![]
                },
                OwnedOp::Hpub {
                    subject: b"a".to_vec(),
                    reply: None,
                    header_len: 0,
                    payload: vec![]
                },
            ])
        );
    }

    #[test]
    fn ping_pong_ok_ignore_the_rest() {
        assert_eq!(
            check_splits(cfg(), b"PINGXYZ\r\nPONG foo bar\n+OK whatever\r\nPING\r\n"),
            ok(vec![
                OwnedOp::Ping,
                OwnedOp::Pong,
                OwnedOp::Ok,
                OwnedOp::Ping
            ])
        );
    }

    #[test]
    fn connect_and_info_text() {
        assert_eq!(
            check_splits(
                cfg(),
                b"CONNECT{\"a\":1}\r\nCONNECT \t {\"a\" : 1} \r\nCONNECT\r\nINFO\t{}\r\nINFOx\n"
            ),
            ok(vec![
                OwnedOp::Connect(b"{\"a\":1}".to_vec()),
                OwnedOp::Connect(b"{\"a\" : 1} ".to_vec()),
                OwnedOp::Connect(vec![]),
                OwnedOp::Info(b"{}".to_vec()),
                OwnedOp::Info(b"x".to_vec()),
            ])
        );
        assert_eq!(
            check_splits(cfg(), b"-ERR  'Unknown Protocol Operation'\r\n"),
            ok(vec![OwnedOp::Err(b"'Unknown Protocol Operation'".to_vec())])
        );
    }

    #[test]
    fn argument_errors() {
        let c = cfg();
        for s in [
            &b"PUB foo\r\n"[..],
            b"PUB \r\n",
            b"PUB a b c 1\r\n",
            b"PUB foo -1\r\n",
            b"PUB foo +1\r\n",
            b"PUB foo 1a\r\n",
            b"PUB foo 0x1\r\n",
            b"PUB foo bar baz\r\n",
            b"SUB foo\r\n",
            b"SUB \r\n",
            b"SUB a b c d\r\n",
            b"UNSUB \r\n",
            b"UNSUB 1 2 3\r\n",
        ] {
            assert_eq!(
                check_splits(c, s),
                err(vec![], E::ParserError),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
        // arg count and size are checked before max payload
        assert_eq!(
            check_splits(c, b"PUB a b c 2000000\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(c, b"PUB a 99999999999999999999999999\r\n"),
            err(vec![], E::MaxPayload)
        );
    }

    #[test]
    fn unsub_max() {
        let u = |sid: &str, max| OwnedOp::Unsub {
            sid: sid.into(),
            max,
        };
        assert_eq!(
            check_splits(
                cfg(),
                b"UNSUB 1\r\nUNSUB 2 0\r\nUNSUB 3 abc\r\nUNSUB 4 -5\r\nUNSUB 5 7\r\nUNSUB 6 99999999999999999999999\r\n"
            ),
            ok(vec![
                u("1", None),
                u("2", None),
                u("3", None),
                u("4", None),
                u("5", Some(7)),
                u("6", Some(u64::MAX)),
            ])
        );
    }

    #[test]
    fn route_sub_and_msg() {
        let r = route();
        assert_eq!(
            check_splits(
                r,
                b"SUB baz  RSID:3:7\r\nSUB baz q2 QRSID:3:8\r\nMSG foo RSID:9:1 reply.x 2\r\nhi\r\nMSG baz RSID:9:1 2\r\nhi\r\n"
            ),
            ok(vec![
                sub_op("baz", None, "RSID:3:7"),
                sub_op("baz", Some("q2"), "QRSID:3:8"),
                OwnedOp::Msg {
                    subject: b"foo".to_vec(),
                    sid: b"RSID:9:1".to_vec(),
                    reply: Some(b"reply.x".to_vec()),
                    payload: b"hi".to_vec()
                },
                OwnedOp::Msg {
                    subject: b"baz".to_vec(),
                    sid: b"RSID:9:1".to_vec(),
                    reply: None,
                    payload: b"hi".to_vec()
                },
            ])
        );
        assert_eq!(
            check_splits(r, b"MSG foo 1\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(r, b"MSG foo 1 a b 2\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(r, b"MSG foo 1 x\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(r, b"MSGfoo 1 1\r\n"),
            err(vec![], E::UnknownOp)
        );
        assert_eq!(
            check_splits(r, b"MSG foo 1 2\r\nokk\r\n"),
            err(vec![], E::UnknownOp)
        );
        assert_eq!(
            check_splits(cfg(), b"msg foo 1 2\r\nok\r\n"),
            err(vec![], E::UnknownOp)
        );
    }

    /// The exact lines routes exchange (reference §2.4, §2.5 and the §2.10 transcript).
    #[test]
    fn route_protocol_lines() {
        let msg = |subject: &str, sid: &str, reply: Option<&str>, payload: &str| OwnedOp::Msg {
            subject: subject.into(),
            sid: sid.into(),
            reply: reply.map(Into::into),
            payload: payload.into(),
        };
        let unsub = |sid: &str, max| OwnedOp::Unsub {
            sid: sid.into(),
            max,
        };
        let connect = br#"CONNECT {"verbose":false,"pedantic":false,"user":"ruser","pass":"rpass","tls_required":false,"name":"FAKE"}"#;
        let info = br#"INFO {"server_id":"FAKE","host":"127.0.0.1","port":36399,"connect_urls":["127.0.0.1:35399"]}"#;
        let cases: Vec<(&[u8], OwnedOp)> = vec![
            // the empty queue field of a plain route SUB: two spaces, no queue
            (b"SUB baz  RSID:3:7\r\n", sub_op("baz", None, "RSID:3:7")),
            (
                b"SUB baz q2 QRSID:3:8\r\n",
                sub_op("baz", Some("q2"), "QRSID:3:8"),
            ),
            (b"SUB foo RSID:9:1\r\n", sub_op("foo", None, "RSID:9:1")),
            (b"SUB foo  RSID:9:1\r\n", sub_op("foo", None, "RSID:9:1")),
            (
                b"SUB foo grp QRSID:9:2\r\n",
                sub_op("foo", Some("grp"), "QRSID:9:2"),
            ),
            (b"SUB foo \t RSID:9:1\r\n", sub_op("foo", None, "RSID:9:1")),
            (
                b"MSG foo RSID:9:1 reply.x 2\r\nhi\r\n",
                msg("foo", "RSID:9:1", Some("reply.x"), "hi"),
            ),
            (
                b"MSG foo RSID:2:1 reply.x 2\r\nhi\r\n",
                msg("foo", "RSID:2:1", Some("reply.x"), "hi"),
            ),
            (
                b"MSG foo QRSID:2:2 reply.x 2\r\nhi\r\n",
                msg("foo", "QRSID:2:2", Some("reply.x"), "hi"),
            ),
            (
                b"MSG baz RSID:9:1 2\r\nhi\r\n",
                msg("baz", "RSID:9:1", None, "hi"),
            ),
            (
                b"MSG baz QRSID:9:2 0\r\n\r\n",
                msg("baz", "QRSID:9:2", None, ""),
            ),
            // malformed route sids are the receiver's business, not the parser's
            (
                b"MSG baz QRSID:1: 2\r\nhi\r\n",
                msg("baz", "QRSID:1:", None, "hi"),
            ),
            (b"UNSUB RSID:3:7\r\n", unsub("RSID:3:7", None)),
            (b"UNSUB QRSID:3:8\r\n", unsub("QRSID:3:8", None)),
            (b"UNSUB RSID:3:7 5\r\n", unsub("RSID:3:7", Some(5))),
            (b"UNSUB QRSID:3:8 1\r\n", unsub("QRSID:3:8", Some(1))),
            (b"PING\r\n", OwnedOp::Ping),
            (b"PONG\r\n", OwnedOp::Pong),
        ];
        let mut all = Vec::new();
        let mut expect = Vec::new();
        for line in [&connect[..], info] {
            let mut l = line.to_vec();
            l.extend_from_slice(b"\r\n");
            all.extend_from_slice(&l);
        }
        expect.push(OwnedOp::Connect(connect[8..].to_vec()));
        expect.push(OwnedOp::Info(info[5..].to_vec()));
        for (line, op) in &cases {
            all.extend_from_slice(line);
            expect.push(op.clone());
        }
        for headers in [false, true] {
            let r = ParserConfig { headers, ..route() };
            for (line, op) in &cases {
                assert_eq!(
                    check_splits(r, line),
                    ok(vec![op.clone()]),
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
                if line.starts_with(b"MSG ") {
                    assert!(check_fast_agrees(&r, &[line, &b"xxxxxxxx"[..]].concat()));
                }
            }
            assert_eq!(check_splits(r, &all), ok(expect.clone()));
        }

        // SUB and UNSUB with route sids parse the same on a client connection; MSG does not
        for (line, op) in &cases {
            let got = check_splits(cfg(), line);
            if line.starts_with(b"MSG ") {
                assert_eq!(got, err(vec![], E::UnknownOp));
            } else {
                assert_eq!(got, ok(vec![op.clone()]));
            }
        }

        // route MSG framing errors
        let r = route();
        for (s, e) in [
            (&b"MSG baz RSID:9:1 2\r\nhiX\n"[..], E::UnknownOp),
            (b"MSG baz RSID:9:1 2\r\nhi\n\n", E::UnknownOp),
            (b"MSG baz RSID:9:1 2\r\nhi\rX", E::UnknownOp),
            (b"MSG baz RSID:9:1 1\r\nhi\r\n", E::UnknownOp),
            (b"MSG baz RSID:9:1\r\n", E::ParserError),
            (b"MSG baz RSID:9:1 reply.x extra 2\r\n", E::ParserError),
            (b"MSG baz RSID:9:1 -2\r\n", E::ParserError),
            (b"MSGbaz RSID:9:1 2\r\n", E::UnknownOp),
            (b"MSG baz RSID:9:1 2000000\r\n", E::MaxPayload),
        ] {
            assert_eq!(
                check_splits(r, s),
                err(vec![], e),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
    }

    #[test]
    fn route_2x_ops() {
        let r = route();
        let rmsg = |subject: &str,
                    reply: Option<&str>,
                    queues: &str,
                    hdr: Option<usize>,
                    payload: &str| {
            OwnedOp::Rmsg {
                account: b"$G".to_vec(),
                subject: subject.into(),
                reply: reply.map(Into::into),
                queues: queues.into(),
                header_len: hdr,
                payload: payload.into(),
            }
        };
        assert_eq!(
            check_splits(
                r,
                b"RS+ $G foo\r\nRS+ $G foo q 2\r\nrs- $G foo\r\nRS- $G foo q\r\n"
            ),
            ok(vec![
                OwnedOp::RouteSub {
                    account: b"$G".to_vec(),
                    subject: b"foo".to_vec(),
                    queue: None
                },
                OwnedOp::RouteSub {
                    account: b"$G".to_vec(),
                    subject: b"foo".to_vec(),
                    queue: Some((b"q".to_vec(), 2))
                },
                OwnedOp::RouteUnsub {
                    account: b"$G".to_vec(),
                    subject: b"foo".to_vec(),
                    queue: None
                },
                OwnedOp::RouteUnsub {
                    account: b"$G".to_vec(),
                    subject: b"foo".to_vec(),
                    queue: Some(b"q".to_vec())
                },
            ])
        );
        // The shapes nats-server 2.9.10 sends (tests/transcripts).
        assert_eq!(
            check_splits(
                r,
                b"RMSG $G rq 2\r\nhi\r\nRMSG $G rq _R.1 2\r\nhi\r\nRMSG $G rq | workers 2\r\nhi\r\nRMSG $G rq + _INBOX.1 a b 2\r\nhi\r\nHMSG $G rq + _INBOX.2 workers 12 14\r\nNATS/1.0\r\n\r\nhi\r\nHMSG $G rq 12 14\r\nNATS/1.0\r\n\r\nhi\r\n"
            ),
            ok(vec![
                rmsg("rq", None, "", None, "hi"),
                rmsg("rq", Some("_R.1"), "", None, "hi"),
                rmsg("rq", None, "workers", None, "hi"),
                rmsg("rq", Some("_INBOX.1"), "a b", None, "hi"),
                rmsg("rq", Some("_INBOX.2"), "workers", Some(12), "NATS/1.0\r\n\r\nhi"),
                rmsg("rq", None, "", Some(12), "NATS/1.0\r\n\r\nhi"),
            ])
        );
        for bad in [
            &b"RS+ $G a b\r\n"[..],
            b"RS+ $G\r\n",
            b"RS+ $G a q x\r\n",
            b"RS- $G\r\n",
            b"RS- $G a b c\r\n",
            b"RMSG $G 2\r\nhi\r\n",
            b"RMSG $G a x y 2\r\nhi\r\n",
            b"RMSG $G a b x\r\n",
            b"HMSG $G a 3 2\r\nhi\r\n",
        ] {
            assert_eq!(
                check_splits(r, bad),
                err(vec![], E::ParserError),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            &b"RSX $G a\r\n"[..],
            b"RS $G a\r\n",
            b"RMSGX\r\n",
            b"HMX a\r\n",
        ] {
            assert_eq!(check_splits(r, bad), err(vec![], E::UnknownOp));
        }
        assert_eq!(
            check_splits(r, b"RMSG $G a 2000000\r\n"),
            err(vec![], E::MaxPayload)
        );
        // Client connections know none of them; HPUB and HMSG are told apart by name.
        for op in [
            &b"RS+ $G a\r\n"[..],
            b"RMSG $G a 0\r\n\r\n",
            b"HMSG $G a 0 0\r\n\r\n",
        ] {
            assert_eq!(check_splits(headers(), op), err(vec![], E::UnknownOp));
        }
        let both = ParserConfig { headers: true, ..r };
        assert_eq!(
            whole(both, b"HPUB a 0 0\r\n\r\nHMSG $G a 0 0\r\n\r\n")
                .0
                .len(),
            2
        );
    }

    /// A PUB's wire tail: present only when it is exactly the bytes a MSG carries after
    /// its sid, and never for a frame split across reads.
    #[test]
    fn pub_wire_tail_is_what_a_msg_carries_after_its_sid() {
        let tail_of = |chunks: &[&[u8]]| {
            let mut p = Parser::new(cfg());
            let mut tails = Vec::new();
            for c in chunks {
                p.parse(c, |op| {
                    if let Op::Pub { wire_tail, .. } = op {
                        tails.push(wire_tail.map(<[u8]>::to_vec));
                    }
                    ControlFlow::Continue(())
                })
                .unwrap();
            }
            assert_eq!(tails.len(), 1);
            tails.pop().unwrap()
        };
        let some = |s: &[u8]| Some(s.to_vec());
        assert_eq!(
            tail_of(&[b"PUB foo 5\r\nhello\r\n"]),
            some(b" 5\r\nhello\r\n")
        );
        assert_eq!(
            tail_of(&[b"pub foo 0\r\n\r\nPING\r\n"]),
            some(b" 0\r\n\r\n")
        );
        assert_eq!(
            tail_of(&[b"PUB foo.bar _INBOX.1 12\r\nhello world!\r\n"]),
            some(b" _INBOX.1 12\r\nhello world!\r\n")
        );
        for other in [
            &b"PUB foo 05\r\nhello\r\n"[..],
            b"PUB foo 5\nhello\r\n",
            b"PUB foo  5\r\nhello\r\n",
            b"PUB\tfoo 5\r\nhello\r\n",
            b"PUB foo\t5\r\nhello\r\n",
            b"PUB foo 5 \r\nhello\r\n",
        ] {
            assert_eq!(
                tail_of(&[other]),
                None,
                "{:?}",
                String::from_utf8_lossy(other)
            );
        }
        assert_eq!(tail_of(&[b"PUB foo 5\r\nhel", b"lo\r\n"]), None);
        assert_eq!(tail_of(&[b"PUB foo", b" 5\r\nhello\r\n"]), None);
    }

    /// A PUB line that starts like the one before it takes the short path; whatever the
    /// rest of the line is, the ops (and wire tails) are those a fresh parser gives.
    #[test]
    fn repeated_pub_lines_parse_as_fresh_ones() {
        let first = &b"PUB foo.bar 3\r\nabc\r\n"[..];
        let nexts: &[&[u8]] = &[
            b"PUB foo.bar 5\r\nhello\r\n",
            b"PUB foo.bar 0\r\n\r\n",
            b"PUB foo.bar 05\r\nhello\r\n",
            b"PUB foo.bar 5\nhello\r\n",
            b"PUB foo.bar 5 \r\nhello\r\n",
            b"PUB foo.bar r 5\r\nhello\r\n",
            b"PUB foo.bar 5 6\r\nhello!\r\n",
            b"PUB foo.bar 1234567890\r\n",
            b"PUB foo.bar 2000000\r\n",
            b"PUB foo.bar 5x\r\nhello\r\n",
            b"PUB foo.bar \r\n",
            b"PUB foo.bar 5\r\nhelloXY",
            b"PUB foo.barr 1\r\nx\r\n",
            b"pub foo.bar 1\r\nx\r\n",
            b"PUB foo.ba 1\r\nx\r\n",
            b"PUB foo.bar\t1\r\nx\r\n",
            b"PING\r\n",
        ];
        let ops = |chunks: &[&[u8]]| {
            let mut p = Parser::new(cfg());
            let mut out = Vec::new();
            for c in chunks {
                let r = p.parse(c, |op| {
                    let tail = match op {
                        Op::Pub { wire_tail, .. } => wire_tail.map(<[u8]>::to_vec),
                        _ => None,
                    };
                    out.push((op.to_owned_op(), tail));
                    ControlFlow::Continue(())
                });
                if let Err(e) = r {
                    return (out, Some(e));
                }
            }
            (out, None)
        };
        // A wire tail, when given, is the MSG tail (a fresh parser may not know it: the
        // fast path wants 8 bytes past the line).
        let msg_tail = |op: &OwnedOp| match op {
            OwnedOp::Pub { reply, payload, .. } => {
                let r = reply
                    .as_ref()
                    .map(|r| format!("{} ", String::from_utf8_lossy(r)));
                let mut t = format!(" {}{}\r\n", r.unwrap_or_default(), payload.len());
                t.push_str(&String::from_utf8_lossy(payload));
                t.push_str("\r\n");
                t.into_bytes()
            }
            _ => unreachable!(),
        };
        type Seen = (Vec<(OwnedOp, Option<Vec<u8>>)>, Option<ProtoError>);
        let only_ops = |(v, e): Seen| {
            for (op, tail) in &v {
                if let Some(t) = tail {
                    assert_eq!(t, &msg_tail(op));
                }
            }
            (v.into_iter().map(|(op, _)| op).collect::<Vec<_>>(), e)
        };
        for next in nexts {
            let mut both = first.to_vec();
            both.extend_from_slice(next);
            let (mut want, err) = only_ops(ops(&[next]));
            want.insert(0, only_ops(ops(&[first])).0[0].clone());
            let name = String::from_utf8_lossy(next);
            assert_eq!(only_ops(ops(&[&both])), (want, err), "{name:?}");
        }
        for good in &nexts[..2] {
            let mut both = first.to_vec();
            both.extend_from_slice(good);
            assert!(ops(&[&both]).0.iter().all(|(_, tail)| tail.is_some()));
        }
        // Subjects of every length the short path remembers, and one past it.
        for n in 1..40 {
            let subject = "s".repeat(n);
            let line = format!("PUB {subject} 2\r\nhi\r\n");
            let three = line.repeat(3) + "PING\r\n";
            let (mut got, err) = ops(&[three.as_bytes()]);
            assert_eq!(err, None);
            assert_eq!(got.pop(), Some((OwnedOp::Ping, None)));
            assert_eq!(got.len(), 3);
            for (op, tail) in got {
                assert_eq!(op, pub_op(&subject, None, "hi"));
                assert_eq!(tail.as_deref(), Some(&b" 2\r\nhi\r\n"[..]));
            }
        }
        // The short path keeps the limits.
        let small = ParserConfig {
            max_control_line: 8,
            max_payload: 3,
            ..cfg()
        };
        let stream = b"PUB a 3\r\nabc\r\nPUB a 3\r\nabc\r\nPUB a 4\r\n";
        assert_eq!(
            whole(small, stream),
            err(vec![pub_op("a", None, "abc"); 2], E::MaxPayload)
        );
        let stream = b"PUB a 3\r\nabc\r\nPUB a 1234\r\n";
        assert_eq!(
            whole(small, stream),
            err(vec![pub_op("a", None, "abc")], E::MaxControlLine)
        );
    }

    #[test]
    fn hpub() {
        let h = headers();
        let hp = |subject: &str, reply: Option<&str>, header_len, payload: &str| OwnedOp::Hpub {
            subject: subject.into(),
            reply: reply.map(Into::into),
            header_len,
            payload: payload.into(),
        };
        assert_eq!(
            check_splits(
                h,
                b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nHPUB foo _INBOX.x 12 12\r\nNATS/1.0\r\n\r\n\r\n"
            ),
            ok(vec![
                hp("foo", None, 12, "NATS/1.0\r\n\r\nhi"),
                hp("foo", Some("_INBOX.x"), 12, "NATS/1.0\r\n\r\n"),
            ])
        );
        assert_eq!(
            check_splits(h, b"HPUB foo 13 12\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(h, b"HPUB foo 12\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(h, b"HPUB a b c 1 2\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(h, b"HPUB foo x 2\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(h, b"HPUB foo 1 x\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(h, b"HPUB foo 12 2000000\r\n"),
            err(vec![], E::MaxPayload)
        );
        assert_eq!(
            check_splits(h, b"HPUB foo 2000000 1\r\n"),
            err(vec![], E::ParserError)
        );
        assert_eq!(
            check_splits(h, b"HPUBfoo 1 1\r\n"),
            err(vec![], E::UnknownOp)
        );
        assert_eq!(
            check_splits(cfg(), b"HPUB foo 0 0\r\n\r\n"),
            err(vec![], E::UnknownOp)
        );
        // headers negotiated by a CONNECT earlier in the same read
        assert_eq!(
            check_splits(
                cfg(),
                b"CONNECT {\"headers\":true}\r\nHPUB foo 0 2\r\nhi\r\n"
            ),
            ok(vec![
                OwnedOp::Connect(b"{\"headers\":true}".to_vec()),
                hp("foo", None, 0, "hi"),
            ])
        );
    }

    #[test]
    fn payload_limits() {
        let c = ParserConfig {
            max_payload: 8,
            ..cfg()
        };
        assert_eq!(
            check_splits(c, b"PUB foo 8\r\n12345678\r\n"),
            ok(vec![pub_op("foo", None, "12345678")])
        );
        assert_eq!(
            check_splits(c, b"PUB foo 9\r\n123456789\r\n"),
            err(vec![], E::MaxPayload)
        );
        assert_eq!(
            check_splits(c, b"PUB foo 09\r\n"),
            err(vec![], E::MaxPayload)
        );
        assert_eq!(
            check_splits(c, b"PUB foo 008\r\n12345678\r\n"),
            ok(vec![pub_op("foo", None, "12345678")])
        );
        let r = ParserConfig { route: true, ..c };
        assert_eq!(
            check_splits(r, b"MSG foo 1 9\r\n"),
            err(vec![], E::MaxPayload)
        );

        // default limit, exactly 1 MiB
        let mut s = b"PUB big 1048576\r\n".to_vec();
        s.extend(std::iter::repeat_n(b'x', 1 << 20));
        s.extend_from_slice(b"\r\nPING\r\n");
        let expect = ok(vec![
            pub_op("big", None, &"x".repeat(1 << 20)),
            OwnedOp::Ping,
        ]);
        assert_eq!(whole(cfg(), &s), expect);
        let chunks: Vec<&[u8]> = s.chunks(4096).collect();
        assert_eq!(run_chunks(cfg(), &chunks), expect);
        let chunks: Vec<&[u8]> = s.chunks(1000).collect();
        assert_eq!(run_chunks(cfg(), &chunks), expect);
    }

    #[test]
    fn max_control_line() {
        let c = ParserConfig {
            max_control_line: 10,
            ..cfg()
        };
        // exactly 10 bytes before CRLF / LF
        assert_eq!(
            check_splits(c, b"SUB abc 12\r\nSUB abc 12\n"),
            ok(vec![sub_op("abc", None, "12"), sub_op("abc", None, "12")])
        );
        for s in [
            &b"SUB abc 123\r\n"[..],
            b"SUB abc 123\n",
            b"SUB abc 12\r\r\n",
            b"SUB abc 123",
            b"PING 12345678\r\n",
            b"CONNECT {\"verbose\":false}\r\n",
            b"PUB abc 1234\r\n",
        ] {
            assert_eq!(
                check_splits(c, s),
                err(vec![], E::MaxControlLine),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
        // an op-name error earlier in the line wins
        assert_eq!(
            check_splits(c, b"ZZZ 1234567890\r\n"),
            err(vec![], E::UnknownOp)
        );
        assert_eq!(
            check_splits(c, b"PUBX 1234567890"),
            err(vec![], E::UnknownOp)
        );
        // a partial line at the limit is kept, with or without a trailing \r
        assert_eq!(check_splits(c, b"SUB abc 12\r"), ok(vec![]));
        let mut p = Parser::new(c);
        assert_eq!(p.parse(b"SUB abc 12\r", |_| panic!()), Ok(Parsed::Done));
        assert_eq!(p.buffered(), 11);

        // default 4096 (nats-server 2.x): a 5000-byte PUB line fails, whole or as it
        // arrives; a 2000-byte one (over gnatsd 1.0's 1024) and one of exactly 4096 pass
        assert_eq!(cfg().max_control_line, 4096);
        let pub_line = |subject_len: usize| {
            let mut v = b"PUB ".to_vec();
            v.extend(std::iter::repeat_n(b'a', subject_len));
            v.extend_from_slice(b" 1\r\nx\r\n");
            v
        };
        let long = pub_line(5000);
        assert_eq!(check_splits(cfg(), &long), err(vec![], E::MaxControlLine));
        assert_eq!(
            check_splits(cfg(), &long[..4200]),
            err(vec![], E::MaxControlLine)
        );
        assert_eq!(check_splits(cfg(), &pub_line(2000)).1, None);
        let at_limit = pub_line(4090);
        assert_eq!(at_limit.iter().position(|&b| b == b'\r'), Some(4096));
        assert_eq!(check_splits(cfg(), &at_limit).1, None);
        assert_eq!(
            check_splits(cfg(), &pub_line(4091)),
            err(vec![], E::MaxControlLine)
        );
        // still configurable: 1024 rejects the 2000-byte line
        let c1024 = ParserConfig {
            max_control_line: 1024,
            ..cfg()
        };
        assert_eq!(
            check_splits(c1024, &pub_line(2000)),
            err(vec![], E::MaxControlLine)
        );

        // tiny limits stay consistent
        for mcl in 0..12 {
            let c = ParserConfig {
                max_control_line: mcl,
                ..cfg()
            };
            for s in [
                &b"PUX a 1\r\n"[..],
                b"PING\r\n",
                b"SUB a 1\r\n",
                b"\r\n",
                b"PUB",
            ] {
                check_splits(c, s);
            }
        }
    }

    #[test]
    fn auth_pending() {
        let a = auth();
        assert_eq!(
            check_splits(a, b"CONNECT {}\r\nPING\r\nSUB foo 1\r\n"),
            ok(vec![
                OwnedOp::Connect(b"{}".to_vec()),
                OwnedOp::Ping,
                sub_op("foo", None, "1")
            ])
        );
        assert_eq!(
            check_splits(a, b"connect {}\r\nPONG\r\n"),
            ok(vec![OwnedOp::Connect(b"{}".to_vec()), OwnedOp::Pong])
        );
        assert_eq!(check_splits(a, b"\r\n"), err(vec![], E::AuthViolation));
        assert_eq!(check_splits(a, b"CPING\r\n"), err(vec![], E::UnknownOp));
        assert_eq!(
            check_splits(a, b"PUB foo 1\r\n"),
            err(vec![], E::AuthViolation)
        );
        assert_eq!(check_splits(a, b"P"), err(vec![], E::AuthViolation));
        assert_eq!(check_splits(a, b"CONN"), ok(vec![]));
        let mut p = Parser::new(a);
        p.parse(b"CONNECT {}\r\n", |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(!p.config().require_connect);
    }

    #[test]
    fn stop_drops_the_rest() {
        let mut p = Parser::new(cfg());
        let mut n = 0;
        let r = p.parse(b"PING\r\nPING\r\nPING\r\n", |_| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        assert_eq!(r, Ok(Parsed::Stopped));
        assert_eq!(n, 2);

        // stopping on a frame completed from the buffer
        let mut p = Parser::new(cfg());
        assert_eq!(p.parse(b"PUB a 2\r\nh", |_| panic!()), Ok(Parsed::Done));
        let mut seen = Vec::new();
        let r = p.parse(b"i\r\nPING\r\n", |op| {
            seen.push(op.to_owned_op());
            ControlFlow::Break(())
        });
        assert_eq!(r, Ok(Parsed::Stopped));
        assert_eq!(seen, vec![pub_op("a", None, "hi")]);
        assert_eq!(p.stopped_at(), 3);
    }

    /// A stop after CONNECT (waiting for bcrypt) reports how much input was used, and the
    /// rest parses later as if it had never been interrupted, wherever the reads split.
    #[test]
    fn stopped_at_lets_the_caller_resume_after_connect() {
        let input: &[u8] = b"CONNECT {\"user\":\"a\"}\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nPING\r\n";
        let mut a = cfg();
        a.require_connect = true;
        for split in 1..input.len() {
            let mut p = Parser::new(a);
            let mut ops = Vec::new();
            let mut rest = Vec::new();
            for chunk in [&input[..split], &input[split..]] {
                if !rest.is_empty() {
                    rest.extend_from_slice(chunk);
                    continue;
                }
                let r = p.parse(chunk, |op| {
                    let stop = matches!(op, Op::Connect(_));
                    ops.push(op.to_owned_op());
                    if stop {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                });
                if r == Ok(Parsed::Stopped) {
                    rest.extend_from_slice(&chunk[p.stopped_at()..]);
                }
            }
            p.parse(&rest, |op| {
                ops.push(op.to_owned_op());
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(ops.len(), 4, "split at {split}: {ops:?}");
            assert_eq!(ops[1], sub_op("foo", None, "1"), "split at {split}");
            assert_eq!(ops[2], pub_op("foo", None, "hi"), "split at {split}");
            assert_eq!(ops[3], OwnedOp::Ping, "split at {split}");
        }
    }

    #[test]
    fn errors_after_valid_ops() {
        assert_eq!(
            check_splits(cfg(), b"SUB foo 1\r\nPING\r\nZZZ\r\nPING\r\n"),
            err(vec![sub_op("foo", None, "1"), OwnedOp::Ping], E::UnknownOp)
        );
        assert_eq!(
            check_splits(cfg(), b"PUB foo 2\r\nok\r\nPUB foo\r\n"),
            err(vec![pub_op("foo", None, "ok")], E::ParserError)
        );
    }

    #[test]
    fn payload_is_borrowed_in_place() {
        let input = b"PUB foo.bar reply 5\r\nhello\r\nPUB x 3\r\nabc\r\nPUB y 4\r\nab";
        let range = input.as_ptr_range();
        let mut p = Parser::new(cfg());
        let mut n = 0;
        p.parse(input, |op| {
            if let Op::Pub {
                subject, payload, ..
            } = op
            {
                assert!(range.contains(&subject.as_ptr()));
                assert!(range.contains(&payload.as_ptr()));
                n += 1;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(p.buffered(), 11);
        // the split frame is completed from the buffer, the next one is in place again
        let cap = p.buf.capacity();
        let second = b"cd\r\nPUB z 1\r\nq\r\n";
        let mut got = Vec::new();
        p.parse(second, |op| {
            got.push(op.to_owned_op());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(got, vec![pub_op("y", None, "abcd"), pub_op("z", None, "q")]);
        assert_eq!(p.buffered(), 0);
        assert_eq!(p.buf.capacity(), cap, "buffer kept for reuse");
    }

    #[test]
    fn big_buffers_are_released() {
        let mut p = Parser::new(cfg());
        let mut s = b"PUB big 200000\r\n".to_vec();
        s.extend(std::iter::repeat_n(b'x', 200_000));
        s.extend_from_slice(b"\r\n");
        for chunk in s.chunks(65536) {
            p.parse(chunk, |_| ControlFlow::Continue(())).unwrap();
        }
        assert_eq!(p.buffered(), 0);
        assert!(p.buf.capacity() <= KEEP_BUFFER);
    }

    /// Whenever the fast path answers, the general path gives the same op and line end.
    fn check_fast_agrees(cfg: &ParserConfig, rest: &[u8]) -> bool {
        let Some((head, size, next)) = fast_head(rest, cfg) else {
            return false;
        };
        let nl = memchr(b'\n', rest).expect("fast path found a line end");
        assert_eq!(nl + 1, next, "{:?}", String::from_utf8_lossy(rest));
        match parse_line(&rest[..nl], cfg) {
            Ok(Line::Head(h, sz)) => {
                assert_eq!(sz, size);
                // The general path never vouches for a wire tail; the rest is the same.
                assert_eq!(
                    h.with_payload(b"", b"").to_owned_op(),
                    head.with_payload(b"", b"").to_owned_op()
                );
            }
            _ => panic!(
                "general path disagrees on {:?}",
                String::from_utf8_lossy(rest)
            ),
        }
        true
    }

    #[test]
    fn fast_path_matches_general_path() {
        let c = ParserConfig {
            headers: true,
            route: true,
            ..cfg()
        };
        let lines: &[&[u8]] = &[
            b"PUB foo.bar 16\r\n0123456789abcdef\r\n",
            b"pub foo reply.to 5\nhello\r\n",
            b"PuB a 0\r\n\r\nxxxxxxxx",
            b"MSG foo RSID:1:2 reply 2\r\nhi\r\n",
            b"msg foo 1 2\r\nhi\r\nxxxxxx",
            b"HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            b"hpub foo r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
            b"PUB foo\xc3\xa9.\xff 3\r\nabc\r\nxxxxxxx",
        ];
        for line in lines {
            assert!(
                check_fast_agrees(&c, line),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // shapes the fast path leaves to the general one
        let general: &[&[u8]] = &[
            b"PUB  foo 1\r\nx\r\nxxxxxxxx",
            b"PUB\tfoo 1\r\nx\r\nxxxxxxxx",
            b"PUB foo\t1\r\nx\r\nxxxxxxxx",
            b"PUB foo 1 \r\nx\r\nxxxxxxxx",
            b"PUB foo 1\r\r\nx\r\nxxxxxxxx",
            b"PUB fo\x01o 1\r\nx\r\nxxxxxxxx",
            b"PUB foo 0123456789\r\nxxxxxxxx",
            b"PUB foo 1x\r\nxxxxxxxxxxx",
            b"PUB a b c 1\r\nxxxxxxxxxx",
            b"PUB foo 1\r\n",
            b"PUBS foo 1\r\nxxxxxxxxxx",
            b"HPUB foo 3 2\r\nxxxxxxxxxx",
        ];
        for line in general {
            assert!(
                !check_fast_agrees(&c, line),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let small = ParserConfig {
            max_payload: 4,
            max_control_line: 12,
            ..c
        };
        assert!(!check_fast_agrees(&small, b"PUB foo 5\r\nhello\r\nxxxxx"));
        assert!(!check_fast_agrees(
            &small,
            b"PUB foo.bar.baz 1\r\nx\r\nxxxxxx"
        ));
        assert!(check_fast_agrees(&small, b"PUB foo.ba 1\r\nx\r\nxxxxxx"));
        let auth = ParserConfig {
            require_connect: true,
            ..c
        };
        assert!(!check_fast_agrees(&auth, lines[0]));

        // random byte soup around the hot shapes
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let alphabet = b"PUBMSGHpubmsgh 0123456789\r\n\t.\x00\x80\xff!";
        let mut hits = 0;
        for _ in 0..200_000 {
            let mut v = lines[rng.below(lines.len())].to_vec();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(v.len());
                v[i] = alphabet[rng.below(alphabet.len())];
            }
            for c in [c, small] {
                if memchr(b'\n', &v).is_some() && check_fast_agrees(&c, &v) {
                    hits += 1;
                }
            }
        }
        assert!(hits > 1000);
    }

    #[test]
    fn find_sep_matches_bytewise() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..20_000 {
            let len = rng.below(40);
            let v: Vec<u8> = (0..len)
                .map(|_| match rng.below(6) {
                    0 => b" \t\r\n\x00\x1f\x20\x21\x7f\x80\xa0\xff"[rng.below(12)],
                    _ => b'a' + rng.below(26) as u8,
                })
                .collect();
            for from in 0..=len {
                let naive = (from..len).find(|&i| is_arg_sep(v[i])).unwrap_or(len);
                assert_eq!(find_sep(&v, from), naive, "{v:?} from {from}");
            }
            let mut a = [&[][..]; 3];
            let n = split_args(&v, &mut a);
            let naive: Vec<&[u8]> = v
                .split(|&b| is_arg_sep(b))
                .filter(|t| !t.is_empty())
                .collect();
            if naive.len() <= 3 {
                assert_eq!(n, naive.len());
                assert_eq!(&a[..n], &naive[..]);
            } else {
                assert_eq!(n, 4);
            }
        }
    }

    /// Small deterministic generator for random streams.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_stream(rng: &mut Rng) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"PUB foo 5\r\nhello\r\n",
            b"pub foo.bar r 0\r\n\r\n",
            b"PUB\tx\t3\nabc\r\n",
            b"SUB foo 1\r\n",
            b"SUB foo q 2\n",
            b"UNSUB 1 10\r\n",
            b"PING\r\n",
            b"PONG\r\n",
            b"+OK\r\n",
            b"CONNECT {\"headers\":true}\r\n",
            b"INFO {}\r\n",
            b"HPUB h 3 5\r\nabcde\r\n",
            b"MSG m 1 2\r\nhi\r\n",
            b"-ERR 'boom'\r\n",
            b"PUB foo 2\r\nokk\r\n",
            b"ZZZ\r\n",
            b"PUB foo x\r\n",
            b"\r\n",
            b"PUB foo 2000000\r\n",
            b"PUB foo 2\r\nokX\n",
            b"PUB foo 2\r\nok\n\n",
            b"SUB baz  RSID:3:7\r\n",
            b"SUB baz q2 QRSID:3:8\r\n",
            b"UNSUB RSID:3:7 5\r\n",
            b"MSG foo QRSID:2:2 reply.x 2\r\nhi\r\n",
        ];
        let mut s = Vec::new();
        for _ in 0..rng.below(8) {
            let piece = PIECES[rng.below(PIECES.len())];
            if rng.below(10) == 0 {
                // corrupt one byte
                let mut p = piece.to_vec();
                let i = rng.below(p.len());
                p[i] = b" \r\n\tPUBx1"[rng.below(9)];
                s.extend_from_slice(&p);
            } else {
                s.extend_from_slice(piece);
            }
        }
        if rng.below(4) == 0 && !s.is_empty() {
            s.truncate(rng.below(s.len()));
        }
        s
    }

    /// `wide` is the outcome of a configuration that only adds `route` and/or `headers` to
    /// the one that gave `narrow`: the same outcome, except that where `narrow` refused an
    /// op as unknown (a `MSG` or `HPUB`), `wide` may deliver it and go on.
    fn assert_accepts_more(narrow: &Outcome, wide: &Outcome, s: &[u8]) {
        let show = || String::from_utf8_lossy(s).into_owned();
        match narrow.1 {
            Some(E::UnknownOp) => assert!(wide.0.starts_with(&narrow.0), "{:?}", show()),
            _ => assert_eq!(wide, narrow, "{:?}", show()),
        }
    }

    #[test]
    fn random_streams_split_anywhere() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..400 {
            let s = random_stream(&mut rng);
            let mcl = [1024, 16, 12, 5][round % 4];
            for base in [cfg(), route(), auth()] {
                let c = ParserConfig {
                    max_control_line: mcl,
                    max_payload: [1024, 4, 2][round % 3],
                    ..base
                };
                let expect = whole(c, &s);
                for i in 0..=s.len() {
                    assert_eq!(
                        run_chunks(c, &[&s[..i], &s[i..]]),
                        expect,
                        "{:?}",
                        String::from_utf8_lossy(&s)
                    );
                }
                let bytes: Vec<&[u8]> = s.chunks(1).collect();
                assert_eq!(run_chunks(c, &bytes), expect);
                let wider = ParserConfig {
                    route: true,
                    headers: true,
                    ..c
                };
                assert_accepts_more(&expect, &whole(wider, &s), &s);
                let mut chunks = Vec::new();
                let mut rest = &s[..];
                while !rest.is_empty() {
                    let n = 1 + rng.below(rest.len().min(20));
                    chunks.push(&rest[..n]);
                    rest = &rest[n..];
                }
                assert_eq!(run_chunks(c, &chunks), expect);
            }
        }
    }
}
