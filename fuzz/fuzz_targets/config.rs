//! The config parser must answer every input with a tree or an error: no panic, no hang, no
//! unbounded memory. The typed accessors and the mapping to server options must never panic
//! on what it returns.
//!
//! Input layout: parts separated by NUL bytes. Part 0 is the main file `gnatsd.conf`, parts
//! 1-3 are the files `1.conf`, `2.conf`, `3.conf` (so includes, nested and cyclic, are
//! exercised), parts 4-6 are environment variables `E1`, `E2`, `E3`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringnats::config::{self, Map, MemResolver, Value, ValueKind, MAX_DEPTH, MAX_VALUES};

/// Walks the tree, checking the bounds, and calls every accessor. Returns the value count.
fn check_value(v: &Value, level: u32) -> usize {
    assert!(v.pos.line >= 1 && v.pos.col >= 1);
    let _ = (
        v.as_int(),
        v.as_float(),
        v.as_bool(),
        v.as_str(),
        v.as_duration(),
        v.as_size(),
    );
    match &v.kind {
        ValueKind::Map(m) => {
            assert!(level <= MAX_DEPTH);
            1 + check_map(m, level)
        }
        ValueKind::Array(a) => {
            assert!(level <= MAX_DEPTH);
            1 + a.iter().map(|v| check_value(v, level + 1)).sum::<usize>()
        }
        _ => 1,
    }
}

fn check_map(m: &Map, level: u32) -> usize {
    let mut n = 0;
    for e in m {
        assert!(e.key_pos.line >= 1);
        assert!(m.get(&e.key).is_some());
        let _ = (
            m.get_int(&e.key),
            m.get_str(&e.key),
            m.get_duration(&e.key),
            m.get_size(&e.key),
        );
        n += check_value(&e.value, level + 1);
    }
    n
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<String> = data
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let mut res = MemResolver::new();
    for (i, part) in parts.iter().enumerate().skip(1).take(6) {
        res = if i <= 3 {
            res.file(&format!("{i}.conf"), part)
        } else {
            res.env(&format!("E{}", i - 3), part)
        };
    }
    let text = &parts[0];
    let first = config::parse(text, "gnatsd.conf", &res);
    match &first {
        Ok(m) => {
            assert!(check_map(m, 0) <= MAX_VALUES);
            // Any tree maps to server options or a positioned error, never a panic.
            match config::server_options(m) {
                Ok(fo) => fo.warnings.iter().for_each(|w| assert!(w.pos.line >= 1)),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(e.pos.line >= 1 || e.pos.col == 0);
        }
    }
    // No hidden state: the same input gives the same answer.
    assert_eq!(config::parse(text, "gnatsd.conf", &res), first);
    let _ = (config::parse_duration(text), config::parse_size(text));
});
