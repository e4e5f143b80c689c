//! Parser throughput on streams of `PUB foo.bar <n>\r\n<payload>\r\n`, parsed in one call
//! and in 4 KiB chunks (like socket reads).

use std::hint::black_box;
use std::ops::ControlFlow;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringnats::proto::{Op, Parser, ParserConfig};

const SIZES: [usize; 3] = [16, 128, 1024];
const STREAM_BYTES: usize = 256 * 1024;
const CHUNK: usize = 4096;

/// A stream of about `STREAM_BYTES` of PUBs with `size`-byte payloads; returns it and the
/// number of ops in it.
fn stream(size: usize) -> (Vec<u8>, u64) {
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::with_capacity(STREAM_BYTES + 2048);
    let mut ops = 0;
    while out.len() < STREAM_BYTES {
        out.extend_from_slice(format!("PUB foo.bar {size}\r\n").as_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(b"\r\n");
        ops += 1;
    }
    (out, ops)
}

fn parse_whole(p: &mut Parser, s: &[u8]) -> usize {
    let mut n = 0usize;
    p.parse(s, |op| {
        if let Op::Pub { payload, .. } = op {
            n += black_box(payload).len();
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    n
}

fn parse_chunked(p: &mut Parser, s: &[u8]) -> usize {
    let mut n = 0usize;
    for chunk in s.chunks(CHUNK) {
        p.parse(chunk, |op| {
            if let Op::Pub { payload, .. } = op {
                n += black_box(payload).len();
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    n
}

fn bench(c: &mut Criterion) {
    let streams: Vec<(usize, Vec<u8>, u64)> = SIZES
        .iter()
        .map(|&size| {
            let (s, ops) = stream(size);
            (size, s, ops)
        })
        .collect();

    for (unit, name) in [(true, "parser_bytes"), (false, "parser_ops")] {
        let mut group = c.benchmark_group(name);
        for (size, s, ops) in &streams {
            group.throughput(if unit {
                Throughput::Bytes(s.len() as u64)
            } else {
                Throughput::Elements(*ops)
            });
            let mut p = Parser::new(ParserConfig::default());
            group.bench_with_input(BenchmarkId::new("whole", size), s, |b, s| {
                b.iter(|| parse_whole(&mut p, black_box(s)))
            });
            let mut p = Parser::new(ParserConfig::default());
            group.bench_with_input(BenchmarkId::new("chunked_4k", size), s, |b, s| {
                b.iter(|| parse_chunked(&mut p, black_box(s)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
