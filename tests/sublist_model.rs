//! The subscription index checked against a naive model: a list of subscriptions
//! scanned linearly, with subject matching written independently of the trie.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use ringnats::sublist::{InvalidSubject, MatchResult, SubEntry, Sublist, DEFAULT_CACHE_MAX};

#[derive(Debug)]
struct TSub {
    id: u64,
    owner: usize,
    subject: Vec<u8>,
    queue: Option<Vec<u8>>,
}

impl SubEntry for TSub {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn tsub(owner: usize, subject: &str, queue: Option<&str>) -> Arc<TSub> {
    Arc::new(TSub {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        owner,
        subject: subject.as_bytes().to_vec(),
        queue: queue.map(|q| q.as_bytes().to_vec()),
    })
}

/// A match result in comparable form: sorted plain ids, and per queue name the sorted
/// member ids.
#[derive(Debug, PartialEq, Eq, Default)]
struct Norm {
    plain: Vec<u64>,
    queues: BTreeMap<Vec<u8>, Vec<u64>>,
}

fn norm_filtered(r: &MatchResult<TSub>, keep: impl Fn(&TSub) -> bool) -> Norm {
    let mut n = Norm {
        plain: r.plain.iter().filter(|s| keep(s)).map(|s| s.id).collect(),
        queues: BTreeMap::new(),
    };
    n.plain.sort_unstable();
    let mut names = Vec::new();
    for g in &r.queues {
        // A group name appears once per result.
        assert!(!names.contains(&g.name), "queue group listed twice");
        names.push(g.name.clone());
        assert!(!g.members.is_empty(), "empty queue group in result");
        let mut ids: Vec<u64> = g.members.iter().filter(|s| keep(s)).map(|s| s.id).collect();
        if ids.is_empty() {
            continue;
        }
        ids.sort_unstable();
        n.queues.insert(g.name.to_vec(), ids);
    }
    n
}

fn norm(r: &MatchResult<TSub>) -> Norm {
    norm_filtered(r, |_| true)
}

fn model_tokens_match(pattern: &[&[u8]], subject: &[&[u8]]) -> bool {
    match (pattern.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((p, _)), Some(_)) if *p == b">" => true,
        (Some((p, prest)), Some((s, srest))) => {
            (*p == b"*" || p == s) && model_tokens_match(prest, srest)
        }
        _ => false,
    }
}

fn model_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let p: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    let s: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
    model_tokens_match(&p, &s)
}

fn model_valid(pattern: &[u8]) -> bool {
    let toks: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    !pattern.is_empty()
        && toks.iter().all(|t| !t.is_empty())
        && toks.iter().rev().skip(1).all(|t| *t != b">")
}

fn model_match<'a>(subs: impl IntoIterator<Item = &'a Arc<TSub>>, subject: &[u8]) -> Norm {
    let mut n = Norm::default();
    for s in subs {
        if !model_matches(&s.subject, subject) {
            continue;
        }
        match &s.queue {
            None => n.plain.push(s.id),
            Some(q) => n.queues.entry(q.clone()).or_default().push(s.id),
        }
    }
    n.plain.sort_unstable();
    for v in n.queues.values_mut() {
        v.sort_unstable();
    }
    n
}

fn all_subjects(alphabet: &[&str], max_len: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut layer: Vec<String> = alphabet.iter().map(|s| s.to_string()).collect();
    for _ in 0..max_len {
        out.extend(layer.iter().cloned());
        layer = layer
            .iter()
            .flat_map(|p| alphabet.iter().map(move |a| format!("{p}.{a}")))
            .collect();
    }
    out
}

fn assert_all_equal_model(sl: &Sublist<TSub>, live: &[Arc<TSub>], subjects: &[String]) {
    for subj in subjects {
        let got = sl.match_with(subj.as_bytes(), norm);
        let want = model_match(live, subj.as_bytes());
        assert_eq!(got, want, "subject {subj}");
    }
}

// ---------------------------------------------------------------------------------
// Fixed examples

#[test]
fn sublist_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Sublist<TSub>>();
    check::<MatchResult<TSub>>();
}

#[test]
fn invalid_subjects_are_rejected() {
    let sl = Sublist::new();
    for bad in [
        "",
        ".",
        "foo.",
        ".foo",
        "foo..bar",
        "foo.>.bar",
        ">.foo",
        "a.>.>",
    ] {
        assert_eq!(
            sl.insert(tsub(0, bad, None)),
            Err(InvalidSubject),
            "{bad:?}"
        );
        assert_eq!(sl.insert(tsub(0, bad, Some("q"))), Err(InvalidSubject));
    }
    assert_eq!(sl.count(), 0);
    for good in [
        "foo",
        "*",
        ">",
        "foo.>",
        "*.*",
        "foo.*bar",
        "foo.>bar.x",
        "a.b*.>",
    ] {
        assert_eq!(sl.insert(tsub(0, good, None)), Ok(()), "{good:?}");
    }
    assert_eq!(sl.count(), 8);
}

#[test]
fn wildcards_follow_the_2x_rule() {
    let sl = Sublist::new();
    let partial = tsub(0, "foo.*bar", None);
    let gtish = tsub(0, "foo.>bar", None);
    sl.insert(partial.clone()).unwrap();
    sl.insert(gtish.clone()).unwrap();
    assert!(sl.match_subject(b"foo.xyz").is_empty());
    assert!(sl.match_subject(b"foo.*").is_empty());
    assert_eq!(sl.match_subject(b"foo.*bar").plain.len(), 1);
    assert_eq!(sl.match_subject(b"foo.>bar").plain.len(), 1);
}

#[test]
fn wildcard_basics() {
    let sl = Sublist::new();
    let gt = tsub(0, "foo.>", None);
    let star = tsub(0, "*", None);
    let all = tsub(0, ">", None);
    let mid = tsub(0, "foo.*.baz", None);
    for s in [&gt, &star, &all, &mid] {
        sl.insert(s.clone()).unwrap();
    }
    let ids = |subj: &str| sl.match_with(subj.as_bytes(), norm).plain;
    assert_eq!(ids("foo"), vec![star.id, all.id]);
    assert_eq!(ids("foo.bar"), vec![gt.id, all.id]);
    assert_eq!(ids("foo.bar.baz"), vec![gt.id, all.id, mid.id]);
    assert_eq!(ids("foo.bar.baz.x"), vec![gt.id, all.id]);
    assert_eq!(ids("bar.bar.baz"), vec![all.id]);
}

#[test]
fn queue_groups_merge_across_patterns() {
    let sl = Sublist::new();
    let a = tsub(0, "foo.*", Some("q"));
    let b = tsub(0, "foo.bar", Some("q"));
    let c = tsub(0, "foo.bar", Some("r"));
    let d = tsub(0, "foo.bar", None);
    let e = tsub(0, ">", Some("q"));
    for s in [&a, &b, &c, &d, &e] {
        sl.insert(s.clone()).unwrap();
    }
    let r = sl.match_subject(b"foo.bar");
    assert_eq!(r.plain.len(), 1);
    assert_eq!(r.queues.len(), 2);
    assert_eq!(r.fanout(), 3);
    let n = norm(&r);
    assert_eq!(n.queues[&b"q"[..]], {
        let mut v = vec![a.id, b.id, e.id];
        v.sort_unstable();
        v
    });
    assert_eq!(n.queues[&b"r"[..]], vec![c.id]);
    assert!(sl.remove(&c));
    assert_eq!(sl.match_subject(b"foo.bar").queues.len(), 1);
}

#[test]
fn remove_is_by_identity_and_prunes() {
    let sl = Sublist::new();
    let a = tsub(0, "foo.bar.baz", None);
    let twin = tsub(0, "foo.bar.baz", None);
    sl.insert(a.clone()).unwrap();
    assert!(!sl.remove(&twin));
    assert!(!sl.remove(&tsub(0, "foo..bar", None)));
    // Duplicate insert of the same Arc: stored twice, removed one at a time.
    sl.insert(a.clone()).unwrap();
    assert_eq!(sl.match_subject(b"foo.bar.baz").plain.len(), 2);
    assert!(sl.remove(&a));
    assert_eq!(sl.match_subject(b"foo.bar.baz").plain.len(), 1);
    assert!(sl.remove(&a));
    assert!(!sl.remove(&a));
    assert_eq!(sl.count(), 0);
    assert!(sl.match_subject(b"foo.bar.baz").is_empty());
    // Re-inserting after pruning works.
    sl.insert(twin.clone()).unwrap();
    assert_eq!(sl.match_with(b"foo.bar.baz", norm).plain, vec![twin.id]);
    assert_eq!(sl.remove_batch(&[twin.clone(), a.clone(), twin.clone()]), 1);
    assert_eq!(sl.count(), 0);
}

#[test]
fn cache_is_filled_and_invalidated() {
    let sl = Sublist::new();
    let a = tsub(0, "foo.bar", None);
    sl.insert(a.clone()).unwrap();
    assert_eq!(sl.cache_len(), 0);
    assert_eq!(sl.match_subject(b"foo.bar").plain.len(), 1);
    assert_eq!(sl.match_subject(b"foo.baz").plain.len(), 0);
    assert_eq!(sl.cache_len(), 2);
    let st = sl.stats();
    assert_eq!((st.num_matches, st.cache_hits), (2, 0));
    assert_eq!(sl.match_subject(b"foo.bar").plain.len(), 1);
    let st = sl.stats();
    assert_eq!((st.num_matches, st.cache_hits), (3, 1));
    assert_eq!(st.num_inserts, 1);
    assert_eq!(st.num_cache, 2);
    assert_eq!(st.max_fanout, 1);
    assert!((st.cache_hit_rate - 1.0 / 3.0).abs() < 1e-9);
    // A literal insert drops only its own subject.
    sl.insert(tsub(0, "foo.bar", None)).unwrap();
    assert_eq!(sl.cache_len(), 1);
    assert_eq!(sl.match_subject(b"foo.bar").plain.len(), 2);
    // A wildcard insert drops every subject it matches.
    sl.match_subject(b"other");
    assert_eq!(sl.cache_len(), 3);
    sl.insert(tsub(0, "foo.*", None)).unwrap();
    assert_eq!(sl.cache_len(), 1);
    assert_eq!(sl.match_subject(b"foo.baz").plain.len(), 1);
    assert!(sl.remove(&a));
    assert_eq!(sl.stats().num_removes, 1);
    assert_eq!(sl.match_subject(b"foo.bar").plain.len(), 2);
}

#[test]
fn cache_is_bounded_and_admits_hot_subjects() {
    let sl = Sublist::with_cache_max(64);
    assert_eq!(sl.cache_max(), 64);
    let hot = tsub(0, "hot", None);
    sl.insert(hot.clone()).unwrap();
    sl.insert(tsub(0, "_INBOX.*", None)).unwrap();
    for i in 0..10_000 {
        let r = sl.match_subject(format!("_INBOX.{i}").as_bytes());
        assert_eq!(r.plain.len(), 1);
        assert!(sl.cache_len() <= 64);
    }
    // One-off subjects fill only the first half of the cache.
    assert_eq!(sl.cache_len(), 32);
    // Subjects published repeatedly get in, and the cache stays bounded.
    for round in 0..3 {
        for i in 0..500 {
            let subject = format!("_INBOX.again.{i}");
            let before = sl.stats().cache_hits;
            for _ in 0..3 {
                sl.match_subject(subject.as_bytes());
            }
            if round == 0 {
                assert_eq!(sl.stats().cache_hits, before + 1, "{subject}");
            }
            assert!(sl.cache_len() <= 64);
        }
    }
    // The cache is full of one-off subjects; a subject published again gets in.
    sl.match_subject(b"hot");
    sl.match_subject(b"hot");
    let before = sl.stats().cache_hits;
    sl.match_subject(b"hot");
    assert_eq!(sl.stats().cache_hits, before + 1);
    assert!(sl.cache_len() <= 64);

    let uncached = Sublist::with_cache_max(0);
    uncached.insert(hot.clone()).unwrap();
    for _ in 0..3 {
        assert_eq!(uncached.match_subject(b"hot").plain.len(), 1);
    }
    assert_eq!(uncached.cache_len(), 0);
    assert_eq!(uncached.stats().cache_hits, 0);
    assert_eq!(DEFAULT_CACHE_MAX, Sublist::<TSub>::new().cache_max());
}

// ---------------------------------------------------------------------------------
// Property test

#[derive(Debug, Clone)]
enum Op {
    Insert(String, Option<&'static str>),
    InsertAgain(usize),
    Remove(usize),
    RemoveBatch(Vec<usize>),
    Match(String),
}

fn pattern_strategy() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        4 => Just("a"), 3 => Just("b"), 2 => Just("c"),
        2 => Just("*"), 2 => Just(">"), 1 => Just(""), 1 => Just("a*"),
    ];
    prop::collection::vec(token, 1..5).prop_map(|t| t.join("."))
}

fn subject_strategy() -> impl Strategy<Value = String> {
    let token = prop_oneof![4 => Just("a"), 3 => Just("b"), 2 => Just("c"), 1 => Just("a*")];
    prop::collection::vec(token, 1..5).prop_map(|t| t.join("."))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let queue = prop_oneof![3 => Just(None), 1 => Just(Some("q1")), 1 => Just(Some("q2"))];
    prop_oneof![
        4 => (pattern_strategy(), queue).prop_map(|(p, q)| Op::Insert(p, q)),
        1 => any::<usize>().prop_map(Op::InsertAgain),
        2 => any::<usize>().prop_map(Op::Remove),
        1 => prop::collection::vec(any::<usize>(), 0..4).prop_map(Op::RemoveBatch),
        6 => subject_strategy().prop_map(Op::Match),
    ]
}

fn run_model(cache_max: usize, ops: &[Op]) {
    let sl = Sublist::with_cache_max(cache_max);
    let mut live: Vec<Arc<TSub>> = Vec::new();
    for op in ops {
        match op {
            Op::Insert(p, q) => {
                let s = tsub(0, p, *q);
                let r = sl.insert(s.clone());
                if model_valid(p.as_bytes()) {
                    assert_eq!(r, Ok(()), "{p}");
                    live.push(s);
                } else {
                    assert_eq!(r, Err(InvalidSubject), "{p}");
                }
            }
            Op::InsertAgain(i) if !live.is_empty() => {
                let s = live[i % live.len()].clone();
                sl.insert(s.clone()).unwrap();
                live.push(s);
            }
            Op::Remove(i) if !live.is_empty() => {
                let s = live.swap_remove(i % live.len());
                assert!(sl.remove(&s));
            }
            Op::RemoveBatch(idx) => {
                let mut batch = Vec::new();
                for i in idx {
                    if !live.is_empty() {
                        batch.push(live.swap_remove(i % live.len()));
                    }
                }
                assert_eq!(sl.remove_batch(&batch), batch.len());
            }
            Op::Match(subj) => {
                let got = sl.match_with(subj.as_bytes(), norm);
                assert_eq!(got, model_match(&live, subj.as_bytes()), "{subj}");
            }
            _ => {}
        }
        assert_eq!(sl.count(), live.len());
        assert!(sl.cache_len() <= cache_max);
    }
    assert_all_equal_model(&sl, &live, &all_subjects(&["a", "b", "c", "a*"], 4));
    for s in live.clone() {
        assert!(sl.remove(&s));
    }
    assert_eq!(sl.count(), 0);
    assert!(sl.match_subject(b"a.b").is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn matches_model_default_cache(ops in prop::collection::vec(op_strategy(), 1..80)) {
        run_model(DEFAULT_CACHE_MAX, &ops);
    }

    #[test]
    fn matches_model_tiny_cache(ops in prop::collection::vec(op_strategy(), 1..80), max in 1usize..6) {
        run_model(max, &ops);
    }

    #[test]
    fn matches_model_uncached(ops in prop::collection::vec(op_strategy(), 1..80)) {
        run_model(0, &ops);
    }
}

// ---------------------------------------------------------------------------------
// Concurrency

const PATTERNS: &[&str] = &[
    "a", "a.b", "a.b.c", "a.*", "a.>", "*.b", ">", "*", "a.*.c", "b.*", "b.>", "*.*.c",
];

/// Several threads subscribe, unsubscribe and look up on overlapping subjects at the
/// same time. Each thread checks every lookup against its own model restricted to its
/// own subscriptions (a thread must always see its own completed writes); at the end
/// every lookup must equal the model of all remaining subscriptions.
fn concurrent_round(cache_max: usize, threads: usize, ops_per_thread: usize, seed: u64) {
    let sl = Arc::new(Sublist::with_cache_max(cache_max));
    let subjects = all_subjects(&["a", "b", "c"], 3);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let sl = sl.clone();
            let subjects = subjects.clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(t as u64));
                let mut mine: Vec<Arc<TSub>> = Vec::new();
                barrier.wait();
                for _ in 0..ops_per_thread {
                    match rng.gen_range(0..10) {
                        0..=1 => {
                            let p = PATTERNS[rng.gen_range(0..PATTERNS.len())];
                            let q = match rng.gen_range(0..4) {
                                0 => Some("q1"),
                                1 => Some("q2"),
                                _ => None,
                            };
                            let s = tsub(t, p, q);
                            sl.insert(s.clone()).unwrap();
                            mine.push(s);
                        }
                        2..=3 if !mine.is_empty() => {
                            let s = mine.swap_remove(rng.gen_range(0..mine.len()));
                            assert!(sl.remove(&s));
                        }
                        _ => {
                            let subj = &subjects[rng.gen_range(0..subjects.len())];
                            let got = sl.match_with(subj.as_bytes(), |r| {
                                norm_filtered(r, |s| s.owner == t)
                            });
                            assert_eq!(
                                got,
                                model_match(&mine, subj.as_bytes()),
                                "thread {t} subject {subj}"
                            );
                        }
                    }
                }
                mine
            })
        })
        .collect();
    let live: Vec<Arc<TSub>> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(sl.count(), live.len());
    assert!(sl.cache_len() <= cache_max + threads);
    // Twice: the first pass reads whatever the cache kept, the second reads what the
    // first pass filled.
    assert_all_equal_model(&sl, &live, &subjects);
    assert_all_equal_model(&sl, &live, &subjects);
}

#[test]
fn concurrent_sub_unsub_lookup_matches_model() {
    for seed in 0..4 {
        concurrent_round(DEFAULT_CACHE_MAX, 4, 3000, seed);
        concurrent_round(4, 4, 3000, seed + 100);
    }
    concurrent_round(0, 3, 2000, 7);
}

/// Writers churn subscriptions that match the very subjects readers keep looking up,
/// so that cache misses race with invalidations as often as possible. After the
/// writers finish, no stale entry may remain.
#[test]
fn no_stale_cache_entries_after_writers_finish() {
    for round in 0..6u64 {
        let sl = Arc::new(Sublist::with_cache_max(if round % 2 == 0 {
            DEFAULT_CACHE_MAX
        } else {
            3
        }));
        let hot = ["a.b", "a.c", "b.b"];
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let sl = sl.clone();
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) || n < 1000 {
                        sl.match_with(hot[n % hot.len()].as_bytes(), |r| r.fanout());
                        n += 1;
                    }
                })
            })
            .collect();
        let writers: Vec<_> = (0..2)
            .map(|w| {
                let sl = sl.clone();
                thread::spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(round * 10 + w);
                    let mut mine: Vec<Arc<TSub>> = Vec::new();
                    for _ in 0..2000 {
                        if mine.len() < 4 || rng.gen_bool(0.5) {
                            let p = ["a.b", "a.*", "*.b", ">", "a.>", "b.b"][rng.gen_range(0..6)];
                            let s = tsub(
                                w as usize,
                                p,
                                if rng.gen_bool(0.3) { Some("q") } else { None },
                            );
                            sl.insert(s.clone()).unwrap();
                            mine.push(s);
                        } else {
                            let s = mine.swap_remove(rng.gen_range(0..mine.len()));
                            assert!(sl.remove(&s));
                        }
                    }
                    mine
                })
            })
            .collect();
        let live: Vec<Arc<TSub>> = writers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        // Writers are done; readers keep filling the cache for a while, then stop.
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let subjects: Vec<String> = all_subjects(&["a", "b", "c"], 3);
        assert_all_equal_model(&sl, &live, &subjects);
    }
}

/// `for_each` visits every stored subscription exactly once (route sync, `/subsz`).
#[test]
fn for_each_visits_every_subscription_once() {
    let list: Sublist<TSub> = Sublist::new();
    let subs: Vec<_> = [
        ("a", None),
        ("a.b", None),
        ("a.*", Some("q")),
        ("a.>", None),
        ("*.b", Some("q")),
        (">", None),
        ("a.b", Some("r")),
    ]
    .iter()
    .enumerate()
    .map(|(i, (s, q))| tsub(i, s, *q))
    .collect();
    for s in &subs {
        list.insert(Arc::clone(s)).unwrap();
    }
    list.insert(Arc::clone(&subs[0])).unwrap();
    let mut seen = Vec::new();
    list.for_each(|s| seen.push(Arc::as_ptr(s) as usize));
    seen.sort();
    let mut want: Vec<usize> = subs.iter().map(|s| Arc::as_ptr(s) as usize).collect();
    want.push(Arc::as_ptr(&subs[0]) as usize);
    want.sort();
    assert_eq!(seen, want);
}
