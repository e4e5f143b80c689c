//! `sublist_ops`: arbitrary insert / remove / match sequences against [`Sublist`], checked
//! against a linear model (a list of subscriptions scanned with its own subject matching,
//! as in `tests/sublist_model.rs`).
//!
//! Covers plain and queue subscriptions (groups merged across patterns), the same `Arc`
//! inserted twice, removal by identity (including of something already removed),
//! `remove_batch`, `for_each`, lookups through one [`Reader`](ringnats::sublist::Reader)
//! while inserts and removes go on (as a connection does within one received buffer),
//! and a cache of 0–8 entries or the default size, so admission, eviction and
//! invalidation run constantly. After every op: `count` equals the model, the cache is
//! within its bound; every lookup equals the model; at the end every subject is checked
//! and everything removed.
//!
//! Input layout: byte 0 = cache size; then ops, each a tag byte and its arguments
//! (missing bytes read as 0). See [`run`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ringnats::sublist::{InvalidSubject, MatchResult, SubEntry, Sublist, DEFAULT_CACHE_MAX};

/// Patterns subscribed to; the last five are invalid.
const PATTERNS: &[&str] = &[
    "a", "b", "a.b", "a.c", "b.c", "a.b.c", "*", ">", "a.*", "*.b", "a.>", "*.*", "a.*.c", "a.b.>",
    "a*", "a*.b", "a.>b", "a.*.b", "", "a..b", "a.>.b", ".a", "a.",
];
/// Subjects looked up: literals, tokens that only look like wildcards, wildcards taken
/// literally, an empty token, the empty subject.
const SUBJECTS: &[&str] = &[
    "a", "b", "c", "a.b", "a.c", "b.c", "a.b.c", "a.b.d", "a*", "a*.b", "a.>b", "a.*", ">", "a..b",
    "a.b.c.d", "b.b.b", "", "a.x.b",
];
const CACHES: &[usize] = &[DEFAULT_CACHE_MAX, 0, 2, 8, 1, 3];
const MAX_OPS: usize = 400;

struct TSub {
    id: u64,
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

/// A match result in comparable form: sorted plain ids, per queue name the sorted member
/// ids.
#[derive(Debug, PartialEq, Eq, Default)]
struct Norm {
    plain: Vec<u64>,
    queues: BTreeMap<Vec<u8>, Vec<u64>>,
}

fn norm(r: &MatchResult<TSub>) -> Norm {
    let mut n = Norm {
        plain: r.plain.iter().map(|s| s.id).collect(),
        queues: BTreeMap::new(),
    };
    n.plain.sort_unstable();
    for g in &r.queues {
        assert!(!g.members.is_empty(), "empty queue group in a result");
        let mut ids: Vec<u64> = g.members.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        assert!(
            n.queues.insert(g.name.to_vec(), ids).is_none(),
            "queue group {} listed twice",
            String::from_utf8_lossy(&g.name)
        );
    }
    n
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

fn model_matches(pattern: &[u8], subject: &[u8]) -> bool {
    let p: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    let s: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
    tokens_match(&p, &s)
}

fn model_valid(pattern: &[u8]) -> bool {
    let toks: Vec<&[u8]> = pattern.split(|&b| b == b'.').collect();
    !pattern.is_empty()
        && toks.iter().all(|t| !t.is_empty())
        && toks[..toks.len() - 1].iter().all(|t| *t != b">")
}

fn model_match(live: &[Arc<TSub>], subject: &[u8]) -> Norm {
    let mut n = Norm::default();
    for s in live.iter().filter(|s| model_matches(&s.subject, subject)) {
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

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
    fn idx(&mut self, n: usize) -> usize {
        self.u8() as usize % n.max(1)
    }
    fn queue(&mut self) -> Option<&'static str> {
        match self.u8() % 4 {
            0 => Some("q1"),
            1 => Some("q2"),
            _ => None,
        }
    }
}

struct State {
    list: Sublist<TSub>,
    live: Vec<Arc<TSub>>,
    /// Subscriptions removed (or never stored): removing them again must fail.
    dead: Vec<Arc<TSub>>,
}

impl State {
    fn insert(&mut self, pattern: &str, queue: Option<&str>) {
        let s = Arc::new(TSub {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            subject: pattern.as_bytes().to_vec(),
            queue: queue.map(|q| q.as_bytes().to_vec()),
        });
        let r = self.list.insert(Arc::clone(&s));
        if model_valid(pattern.as_bytes()) {
            assert_eq!(r, Ok(()), "insert {pattern:?}");
            self.live.push(s);
        } else {
            assert_eq!(r, Err(InvalidSubject), "insert {pattern:?}");
            self.dead.push(s);
        }
    }

    fn insert_again(&mut self, i: usize) {
        if let Some(s) = self.live.get(i % self.live.len().max(1)).cloned() {
            self.list
                .insert(Arc::clone(&s))
                .expect("valid, stored before");
            self.live.push(s);
        }
    }

    fn remove(&mut self, i: usize) {
        if !self.live.is_empty() && i % 4 != 3 {
            let s = self.live.swap_remove(i % self.live.len());
            assert!(self.list.remove(&s), "remove of a stored subscription");
            if !self.live.iter().any(|x| Arc::ptr_eq(x, &s)) {
                self.dead.push(s);
            }
        } else if !self.dead.is_empty() {
            let s = &self.dead[i % self.dead.len()];
            assert!(!self.list.remove(s), "remove of a subscription not stored");
        }
    }

    fn check_match(&self, subject: &str, got: Norm) {
        let want = model_match(&self.live, subject.as_bytes());
        assert_eq!(got, want, "lookup of {subject:?}");
    }

    fn check_counts(&self) {
        assert_eq!(self.list.count(), self.live.len(), "count");
        let max = self.list.cache_max();
        assert!(self.list.cache_len() <= max, "cache past its bound");
    }

    fn check_for_each(&self) {
        let mut seen = Vec::new();
        self.list.for_each(|s| seen.push(s.id));
        seen.sort_unstable();
        let mut want: Vec<u64> = self.live.iter().map(|s| s.id).collect();
        want.sort_unstable();
        assert_eq!(seen, want, "for_each");
    }

    fn sweep(&self) {
        for s in SUBJECTS {
            self.check_match(s, self.list.match_with(s.as_bytes(), norm));
        }
        let st = self.list.stats();
        assert_eq!(st.num_subscriptions, self.live.len());
        assert!(st.num_cache <= self.list.cache_max());
    }
}

/// Runs one input; panics at the first difference from the model.
pub fn run(data: &[u8]) {
    let mut inp = Input { data, pos: 0 };
    let cache_max = CACHES[inp.idx(CACHES.len())];
    let mut st = State {
        list: Sublist::with_cache_max(cache_max),
        live: Vec::new(),
        dead: Vec::new(),
    };
    let mut ops = 0;
    while !inp.done() && ops < MAX_OPS {
        ops += 1;
        match inp.u8() % 9 {
            0 | 1 => {
                let p = PATTERNS[inp.idx(PATTERNS.len())];
                let q = inp.queue();
                st.insert(p, q);
            }
            2 => {
                let i = inp.u8() as usize;
                st.insert_again(i);
            }
            3 => {
                let i = inp.u8() as usize;
                st.remove(i);
            }
            4 => {
                let n = inp.u8() as usize % 5;
                let mut batch = Vec::new();
                for _ in 0..n {
                    let i = inp.u8() as usize;
                    if !st.live.is_empty() {
                        batch.push(st.live.swap_remove(i % st.live.len()));
                    }
                }
                // A subscription named twice (or stored twice) counts per stored copy.
                let stored = batch.len();
                if let Some(d) = st.dead.first().cloned() {
                    batch.push(d);
                }
                assert_eq!(st.list.remove_batch(&batch), stored, "remove_batch");
                for s in batch {
                    if !st.live.iter().any(|x| Arc::ptr_eq(x, &s)) {
                        st.dead.push(s);
                    }
                }
            }
            5 | 6 => {
                let s = SUBJECTS[inp.idx(SUBJECTS.len())];
                st.check_match(s, st.list.match_with(s.as_bytes(), norm));
            }
            7 => {
                // One reader for a few lookups with writes in between, as a connection
                // holds one for a whole received buffer.
                let n = 1 + inp.u8() as usize % 6;
                let list = std::mem::take(&mut st.list);
                {
                    let mut reader = list.reader();
                    let mut inner = State {
                        list: Sublist::with_cache_max(0),
                        live: std::mem::take(&mut st.live),
                        dead: std::mem::take(&mut st.dead),
                    };
                    for _ in 0..n {
                        match inp.u8() % 4 {
                            0 => {
                                let p = PATTERNS[inp.idx(PATTERNS.len() - 5)];
                                let q = inp.queue();
                                let s = Arc::new(TSub {
                                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                                    subject: p.as_bytes().to_vec(),
                                    queue: q.map(|q| q.as_bytes().to_vec()),
                                });
                                reader.sublist().insert(Arc::clone(&s)).expect("valid");
                                inner.live.push(s);
                            }
                            1 if !inner.live.is_empty() => {
                                let i = inp.u8() as usize % inner.live.len();
                                let s = inner.live.swap_remove(i);
                                assert!(reader.sublist().remove(&s));
                                if !inner.live.iter().any(|x| Arc::ptr_eq(x, &s)) {
                                    inner.dead.push(s);
                                }
                            }
                            _ => {
                                let s = SUBJECTS[inp.idx(SUBJECTS.len())];
                                let got = reader.match_with(s.as_bytes(), norm);
                                inner.check_match(s, got);
                            }
                        }
                    }
                    st.live = inner.live;
                    st.dead = inner.dead;
                }
                st.list = list;
            }
            _ => {
                st.check_for_each();
                st.sweep();
            }
        }
        st.check_counts();
    }
    st.check_for_each();
    st.sweep();
    // Twice: the first pass may fill the cache, the second reads what it filled.
    st.sweep();
    let all = std::mem::take(&mut st.live);
    assert_eq!(st.list.remove_batch(&all), all.len());
    assert_eq!(st.list.count(), 0);
    for s in SUBJECTS {
        assert!(
            st.list.match_subject(s.as_bytes()).is_empty(),
            "{s:?} still matches after everything was removed"
        );
    }
}
