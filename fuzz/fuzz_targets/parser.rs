//! The parser must give the same ops and the same error however the stream is cut into
//! reads, must never panic, and turning on `route` or `headers` may only make it accept more.
//! A PUB's wire tail, when given, must be exactly a MSG's tail.
//!
//! Input layout: byte 0 picks the configuration, byte 1 the number of cut points, then one
//! byte per cut point (chunk length - 1); everything after that is the stream.
//!
//! Byte 0: bit 0 `route`, bit 1 `headers` (together the mode: client, client with headers,
//! route, route with headers), bit 2 `require_connect`, bits 3-4 `max_control_line`, bits 5-6
//! `max_payload`.
//!
//! `PARSER_FUZZ_MODE=client|client-headers|route|route-headers` pins the mode for a run:
//! inputs of the other modes return at once, so whatever such a run saves (corpus entries,
//! crashes) replays the same way without the variable.
//!
//! Seeds (one stream per mode) are in `fuzz/seeds/parser/`, tokens in `fuzz/parser.dict`:
//!
//! ```sh
//! RUSTC_BOOTSTRAP=1 PARSER_FUZZ_MODE=route cargo fuzz run parser fuzz/corpus/parser \
//!     fuzz/seeds/parser -- -dict=fuzz/parser.dict -max_total_time=60
//! ```

#![no_main]

use std::ops::ControlFlow;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringnats::proto::{Op, OwnedOp, Parsed, Parser, ParserConfig, ProtoError};

const ROUTE: u8 = 1;
const HEADERS: u8 = 2;
const MODE: u8 = ROUTE | HEADERS;

fn config(flags: u8) -> ParserConfig {
    ParserConfig {
        route: flags & ROUTE != 0,
        headers: flags & HEADERS != 0,
        require_connect: flags & 4 != 0,
        max_control_line: [4096, 64, 16, 4][((flags >> 3) & 3) as usize],
        max_payload: [1024 * 1024, 100, 8, 0][((flags >> 5) & 3) as usize],
    }
}

/// The mode bits `PARSER_FUZZ_MODE` pins, if set.
fn pinned_mode() -> Option<u8> {
    static MODE_BITS: OnceLock<Option<u8>> = OnceLock::new();
    *MODE_BITS.get_or_init(|| {
        let name = std::env::var("PARSER_FUZZ_MODE").ok()?;
        Some(match name.as_str() {
            "client" => 0,
            "client-headers" => HEADERS,
            "route" => ROUTE,
            "route-headers" => ROUTE | HEADERS,
            other => panic!(
                "PARSER_FUZZ_MODE={other:?}: want client, client-headers, route or route-headers"
            ),
        })
    })
}

type Outcome = (Vec<OwnedOp>, Option<ProtoError>);

/// What a MSG carries after its sid: ` [<reply> ]<size>\r\n<payload>\r\n`.
fn msg_tail(reply: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut t = b" ".to_vec();
    if let Some(r) = reply {
        t.extend_from_slice(r);
        t.push(b' ');
    }
    t.extend_from_slice(format!("{}\r\n", payload.len()).as_bytes());
    t.extend_from_slice(payload);
    t.extend_from_slice(b"\r\n");
    t
}

fn run(cfg: ParserConfig, chunks: &[&[u8]]) -> Outcome {
    let mut p = Parser::new(cfg);
    let mut ops = Vec::new();
    for chunk in chunks {
        let r = p.parse_with_config(chunk, |op, cfg| {
            if let Op::Connect(json) = op {
                if json.windows(7).any(|w| w == b"headers") {
                    cfg.headers = true;
                }
            }
            if let Op::Pub {
                reply,
                payload,
                wire_tail: Some(tail),
                ..
            } = op
            {
                assert_eq!(tail, msg_tail(reply, payload), "a wire tail is a MSG's tail");
            }
            ops.push(op.to_owned_op());
            ControlFlow::Continue(())
        });
        match r {
            Ok(Parsed::Done) => {}
            Ok(Parsed::Stopped) => unreachable!("the callback never stops"),
            Err(e) => {
                assert_eq!(p.parse(b"PING\r\n", |_| panic!("op after error")), Err(e));
                return (ops, Some(e));
            }
        }
    }
    (ops, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    if pinned_mode().is_some_and(|m| data[0] & MODE != m) {
        return;
    }
    let cfg = config(data[0]);
    let cuts = data[1] as usize % 32;
    if data.len() < 2 + cuts {
        return;
    }
    let sizes = &data[2..2 + cuts];
    let stream = &data[2 + cuts..];

    let whole = run(cfg, &[stream]);

    let mut chunks = Vec::new();
    let mut rest = stream;
    for &s in sizes {
        let n = (s as usize + 1).min(rest.len());
        chunks.push(&rest[..n]);
        rest = &rest[n..];
    }
    chunks.push(rest);
    assert_eq!(run(cfg, &chunks), whole, "chunked");

    if stream.len() <= 4096 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run(cfg, &bytes), whole, "one byte at a time");
    }

    // Route and headers only add ops: where this mode refused an op as unknown (a MSG or an
    // HPUB), the wider one may deliver it and go on; otherwise the outcome is the same.
    if data[0] & MODE != MODE {
        let wide = run(config(data[0] | MODE), &[stream]);
        match whole.1 {
            Some(ProtoError::UnknownOp) => assert!(wide.0.starts_with(&whole.0), "wider mode"),
            _ => assert_eq!(wide, whole, "wider mode"),
        }
    }
});
