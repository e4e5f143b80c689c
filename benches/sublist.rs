//! Subscription index lookups: cache hits, trie walks (uncached), wildcard matches,
//! lookups while another thread subscribes/unsubscribes, and a stream of one-off
//! subjects (request/reply inboxes) against the bounded cache.
//!
//! Run: `cargo bench --bench sublist -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ringnats::sublist::{SubEntry, Sublist};

struct BSub {
    subject: Box<[u8]>,
    queue: Option<Box<[u8]>>,
}

impl SubEntry for BSub {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}

fn sub(subject: &str) -> Arc<BSub> {
    Arc::new(BSub {
        subject: subject.as_bytes().into(),
        queue: None,
    })
}

/// `n` literal subscriptions `s.<a>.<b>` (1000 per middle token), `n / 100` more under
/// `foo.<a>.<b>`, the wildcards `foo.*.baz` and `foo.>`, and one queue group on `s.>`.
/// The same subscriptions go into a default-cache list and an uncached one.
struct Fixture {
    cached: Arc<Sublist<BSub>>,
    uncached: Sublist<BSub>,
}

fn fixture(n: usize) -> Fixture {
    let start = Instant::now();
    let cached = Sublist::new();
    let uncached = Sublist::with_cache_max(0);
    let add = |s: Arc<BSub>| {
        cached.insert(s.clone()).unwrap();
        uncached.insert(s).unwrap();
    };
    for i in 0..n {
        add(sub(&format!("s.{}.{}", i / 1000, i % 1000)));
    }
    for i in 0..(n / 100).max(10) {
        add(sub(&format!("foo.{}.{}", i / 100, i % 100)));
    }
    add(sub("foo.*.baz"));
    add(sub("foo.>"));
    for _ in 0..3 {
        add(Arc::new(BSub {
            subject: (*b"s.>").into(),
            queue: Some((*b"workers").into()),
        }));
    }
    eprintln!(
        "fixture: {} subscriptions inserted twice in {:?}",
        cached.count(),
        start.elapsed()
    );
    Fixture {
        cached: Arc::new(cached),
        uncached,
    }
}

fn label(n: usize) -> &'static str {
    if n >= 1_000_000 {
        "1M"
    } else {
        "10k"
    }
}

/// 1024 subjects of existing literal subscriptions spread over the whole population.
fn literal_subjects(n: usize) -> Vec<Vec<u8>> {
    (0..1024)
        .map(|k| {
            let i = (k * 7919) % n;
            format!("s.{}.{}", i / 1000, i % 1000).into_bytes()
        })
        .collect()
}

/// 1024 subjects matched by `foo.*.baz` and `foo.>`.
fn wildcard_subjects() -> Vec<Vec<u8>> {
    (0..1024)
        .map(|k| format!("foo.{}.baz", k % 50).into_bytes())
        .chain((0..1024).map(|k| format!("foo.x{k}.baz").into_bytes()))
        .step_by(2)
        .collect()
}

fn lookup_loop(
    c: &mut Criterion,
    group: &str,
    name: &str,
    sl: &Sublist<BSub>,
    subjects: &[Vec<u8>],
) {
    let mut g = c.benchmark_group(group);
    let mut i = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) & (subjects.len() - 1);
            sl.match_with(black_box(&subjects[i]), |r| black_box(r.fanout()))
        })
    });
    g.finish();
}

fn bench_population(c: &mut Criterion, n: usize) {
    let fx = fixture(n);
    let lit = literal_subjects(n);
    let wild = wildcard_subjects();
    let l = label(n);

    for s in lit.iter().chain(&wild) {
        fx.cached.match_with(s, |r| assert!(r.fanout() > 0));
    }
    lookup_loop(c, "hit", l, &fx.cached, &lit);
    lookup_loop(c, "miss_uncached", l, &fx.uncached, &lit);
    lookup_loop(c, "wildcard_hit", l, &fx.cached, &wild);
    lookup_loop(c, "wildcard_miss_uncached", l, &fx.uncached, &wild);

    churn(
        c,
        "hit_under_disjoint_churn",
        l,
        &fx.cached,
        &lit,
        false,
        None,
    );
    churn(
        c,
        "lookup_under_overlapping_churn_100k",
        l,
        &fx.cached,
        &lit,
        true,
        Some(100),
    );
    churn(
        c,
        "lookup_under_overlapping_churn_max",
        l,
        &fx.cached,
        &lit,
        true,
        None,
    );
}

/// Lookups on `lit` while another thread subscribes and unsubscribes, with a wildcard
/// subscribe/unsubscribe every 64 operations. With `overlap`, the churned subjects are
/// the looked-up ones (each write invalidates cached results); otherwise they are
/// disjoint. `per_ms` throttles the other thread to about that many SUB+UNSUB pairs per
/// millisecond.
fn churn(
    c: &mut Criterion,
    group: &str,
    l: &str,
    sl: &Arc<Sublist<BSub>>,
    lit: &[Vec<u8>],
    overlap: bool,
    per_ms: Option<u32>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let handle = {
        let sl = sl.clone();
        let stop = stop.clone();
        let ops = ops.clone();
        let lit = lit.to_vec();
        thread::spawn(move || {
            let mut k = 0usize;
            let mut window = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let subject = match (overlap, k.is_multiple_of(64)) {
                    (true, true) => "s.*.999".to_string(),
                    (true, false) => String::from_utf8(lit[(k * 31) & 1023].clone()).unwrap(),
                    (false, true) => "c.*.x".to_string(),
                    (false, false) => format!("c.{}", k & 1023),
                };
                let s = sub(&subject);
                sl.insert(s.clone()).unwrap();
                sl.remove(&s);
                ops.fetch_add(2, Ordering::Relaxed);
                if let Some(per_ms) = per_ms {
                    if k.is_multiple_of(per_ms as usize) {
                        let next = window + Duration::from_millis(1);
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        }
                        window = next.max(now - Duration::from_millis(5));
                    }
                }
            }
        })
    };
    let before = sl.stats();
    let t0 = Instant::now();
    lookup_loop(c, group, l, sl, lit);
    stop.store(true, Ordering::Relaxed);
    handle.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let after = sl.stats();
    let matches = after.num_matches - before.num_matches;
    let hits = after.cache_hits - before.cache_hits;
    eprintln!(
        "{group}/{l}: other thread did {:.0} SUB+UNSUB ops/s; lookup hit rate {:.1}%",
        ops.load(Ordering::Relaxed) as f64 / secs,
        100.0 * hits as f64 / matches.max(1) as f64
    );
}

fn bench_10k(c: &mut Criterion) {
    bench_population(c, 10_000);
}

fn bench_1m(c: &mut Criterion) {
    bench_population(c, 1_000_000);
}

/// Miss path while the cache has room: each lookup computes and caches a new entry.
fn bench_fill(c: &mut Criterion) {
    let mut g = c.benchmark_group("miss_fill");
    g.bench_function("10k", |b| {
        b.iter_custom(|iters| {
            let iters = iters as usize;
            let sl = Sublist::with_cache_max(iters + 1);
            for i in 0..10_000 {
                sl.insert(sub(&format!("s.{}.{}", i / 1000, i % 1000)))
                    .unwrap();
            }
            sl.insert(sub("s.*.>")).unwrap();
            let subjects: Vec<Vec<u8>> = (0..iters)
                .map(|i| format!("s.{}.{}", i % 10, i).into_bytes())
                .collect();
            let t = Instant::now();
            for s in &subjects {
                sl.match_with(black_box(s), |r| black_box(r.fanout()));
            }
            t.elapsed()
        })
    });
    g.finish();
}

/// One million distinct publish subjects (request/reply inboxes), cycled, against the
/// bounded default cache and against no cache at all.
fn bench_unique_subjects(c: &mut Criterion) {
    let subjects: Vec<Box<[u8]>> = (0..1_000_000u32)
        .map(|i| {
            format!("_INBOX.r{}.{i}", i % 100)
                .into_bytes()
                .into_boxed_slice()
        })
        .collect();
    let setup = |cache: Option<usize>| {
        let sl = match cache {
            Some(m) => Sublist::with_cache_max(m),
            None => Sublist::new(),
        };
        for i in 0..10_000 {
            sl.insert(sub(&format!("s.{}.{}", i / 1000, i % 1000)))
                .unwrap();
        }
        for k in 0..100 {
            sl.insert(sub(&format!("_INBOX.r{k}.*"))).unwrap();
        }
        sl
    };
    let mut g = c.benchmark_group("unique_subjects_1M");
    for (name, cache) in [("default_cache", None), ("uncached", Some(0))] {
        let sl = setup(cache);
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(name), &(), |b, _| {
            b.iter(|| {
                i += 1;
                if i == subjects.len() {
                    i = 0;
                }
                sl.match_with(black_box(&subjects[i]), |r| black_box(r.fanout()))
            })
        });
        let st = sl.stats();
        eprintln!(
            "unique subjects, {name}: cache_len {} hit rate {:.2}%",
            st.num_cache,
            100.0 * st.cache_hit_rate
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench_10k, bench_fill, bench_unique_subjects, bench_1m
}
criterion_main!(benches);
