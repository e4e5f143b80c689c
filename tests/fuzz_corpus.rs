//! The fuzz targets' checks as ordinary tests: every committed seed of
//! `fuzz/corpus/<target>/` is replayed through the same check function the fuzz target
//! runs, plus a batch of pseudo-random inputs, so CI exercises them without cargo-fuzz.

#[path = "../fuzz/src/conn_ops.rs"]
#[allow(dead_code)]
mod conn_ops;
#[path = "../fuzz/src/sublist_ops.rs"]
#[allow(dead_code)]
mod sublist_ops;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        // FUZZ_SEED=<part of a name> replays only the matching seeds (with CONN_OPS_TRACE=1
        // to print every step).
        .filter(|(name, _)| std::env::var("FUZZ_SEED").map_or(true, |f| name.contains(&f)))
        .collect();
    v.sort();
    assert!(
        !v.is_empty() || std::env::var_os("FUZZ_SEED").is_some(),
        "no seeds in {}",
        dir.display()
    );
    v
}

fn random_inputs(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.gen_range(0..max_len);
            (0..len).map(|_| rng.gen()).collect()
        })
        .collect()
}

#[test]
fn conn_ops_seed_corpus() {
    for (name, data) in seeds("conn_ops") {
        eprintln!("{name}");
        conn_ops::run(&data);
    }
}

#[test]
fn conn_ops_random_inputs() {
    for data in random_inputs(1, 300, 600) {
        conn_ops::run(&data);
    }
}

#[test]
fn sublist_ops_seed_corpus() {
    for (name, data) in seeds("sublist_ops") {
        eprintln!("{name}");
        sublist_ops::run(&data);
    }
}

#[test]
fn sublist_ops_random_inputs() {
    for data in random_inputs(2, 300, 600) {
        sublist_ops::run(&data);
    }
}
