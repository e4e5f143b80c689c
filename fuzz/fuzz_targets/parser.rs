//! The parser must give the same ops and the same error however the stream is cut into
//! reads, and must never panic.
//!
//! Input layout: byte 0 picks the configuration, byte 1 the number of cut points, then one
//! byte per cut point (chunk length - 1); everything after that is the stream.

#![no_main]

use std::ops::ControlFlow;

use libfuzzer_sys::fuzz_target;
use ringnats::proto::{Op, OwnedOp, Parsed, Parser, ParserConfig, ProtoError};

fn config(flags: u8) -> ParserConfig {
    ParserConfig {
        max_control_line: [1024, 64, 16, 4][(flags & 3) as usize],
        max_payload: [1024 * 1024, 100, 8, 0][((flags >> 2) & 3) as usize],
        headers: flags & 0x10 != 0,
        route: flags & 0x20 != 0,
        require_connect: flags & 0x40 != 0,
    }
}

fn run(cfg: ParserConfig, chunks: &[&[u8]]) -> (Vec<OwnedOp>, Option<ProtoError>) {
    let mut p = Parser::new(cfg);
    let mut ops = Vec::new();
    for chunk in chunks {
        let r = p.parse_with_config(chunk, |op, cfg| {
            if let Op::Connect(json) = op {
                if json.windows(7).any(|w| w == b"headers") {
                    cfg.headers = true;
                }
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
});
