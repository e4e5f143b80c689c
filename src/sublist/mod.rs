//! The subscription index: which subscriptions match a published subject.
//!
//! # Structure
//! - A token trie ([`trie`]) holds every subscription. It sits behind a
//!   [`std::sync::RwLock`]: inserts and removes take the write side; a lookup that misses
//!   the cache takes the read side, so misses from different reactor threads walk the
//!   trie in parallel.
//! - A bounded result cache maps a published subject to its [`MatchResult`]. It is a
//!   lock-free `papaya` hash map with epoch-based reclamation, so a cache hit takes no
//!   lock of any kind: it pins an epoch, probes, and calls the caller's closure on the
//!   cached result in place.
//!
//! # Why the cache is never stale
//! A cache entry is only ever inserted by a lookup that computed it while holding the
//! trie's read lock, and the insertion happens before that lock is released. Writers
//! change the trie and then remove every cache entry their pattern matches while holding
//! the write lock. The two are mutually exclusive, so an entry either was computed after
//! the last write that concerns it, or was present in the cache when that write ran its
//! invalidation and was removed then. Consequently a thread that has returned from
//! `insert`/`remove` always observes its own change in later lookups, and once writers
//! are quiet every lookup equals a fresh trie walk.
//!
//! # Bounding the cache
//! The cache holds at most `cache_max` entries (plus at most one per thread concurrently
//! filling it). While it is less than half full, every miss is cached. Beyond that, a
//! miss is admitted only if its subject was seen recently by a small "doorkeeper" table
//! of hash fingerprints (i.e. it is at least the second recent miss on that subject), and
//! an admission into a full cache first evicts a random quarter of it. So a stream of
//! one-off subjects (request/reply inboxes) costs a fingerprint check per miss and does
//! not churn the cache, while a subject that keeps being published gets in on its second
//! miss. Eviction scans the cache once per `cache_max / 4` admissions: O(1) amortised.

mod trie;

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use smallvec::SmallVec;

use trie::{is_literal, pattern_matches, tokenize, valid_pattern, Level};

/// Default bound on cached subjects.
///
/// 4096 comfortably covers the set of subjects a busy server publishes on repeatedly
/// (gnatsd itself keeps about 1024), while keeping the cache small: with the typical
/// small fan-out an entry is a couple of hundred bytes, so the whole cache is around
/// 1 MiB and stays mostly in L2/L3. It also bounds the work of invalidating for a
/// wildcard subscribe/unsubscribe, which scans the cache, to tens of microseconds.
pub const DEFAULT_CACHE_MAX: usize = 4096;

/// What the index needs to know about a subscription.
pub trait SubEntry: Send + Sync + 'static {
    /// The subscription's subject pattern, e.g. `foo.*.bar`.
    fn subject(&self) -> &[u8];
    /// The queue group name, if this is a queue subscription. Must not change while the
    /// subscription is in a [`Sublist`].
    fn queue(&self) -> Option<&[u8]>;
}

/// The subscriptions matching one subject.
pub struct MatchResult<S> {
    /// Matching plain subscriptions: each gets a copy of the message.
    pub plain: SmallVec<[Arc<S>; 4]>,
    /// Matching queue subscriptions grouped by queue name across all matching patterns:
    /// one member of each group gets the message.
    pub queues: SmallVec<[QueueGroup<S>; 1]>,
}

/// Members of one queue group that match a subject.
pub struct QueueGroup<S> {
    pub name: Box<[u8]>,
    pub members: SmallVec<[Arc<S>; 4]>,
}

impl<S> MatchResult<S> {
    pub fn new() -> Self {
        MatchResult {
            plain: SmallVec::new(),
            queues: SmallVec::new(),
        }
    }

    /// No subscription matches.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }

    /// Number of deliveries one message causes: one per plain subscription plus one per
    /// queue group.
    pub fn fanout(&self) -> usize {
        self.plain.len() + self.queues.len()
    }
}

impl<S> Default for MatchResult<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Clone for MatchResult<S> {
    fn clone(&self) -> Self {
        MatchResult {
            plain: self.plain.clone(),
            queues: self.queues.clone(),
        }
    }
}

impl<S> Clone for QueueGroup<S> {
    fn clone(&self) -> Self {
        QueueGroup {
            name: self.name.clone(),
            members: self.members.clone(),
        }
    }
}

impl<S> fmt::Debug for MatchResult<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatchResult")
            .field("plain", &self.plain.len())
            .field(
                "queues",
                &self
                    .queues
                    .iter()
                    .map(|q| (String::from_utf8_lossy(&q.name), q.members.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The subject given to [`Sublist::insert`] is not a valid subscription subject: it is
/// empty, has an empty token, or has a token after `>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidSubject;

impl fmt::Display for InvalidSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid subject")
    }
}

impl std::error::Error for InvalidSubject {}

/// Counters describing a [`Sublist`] (the figures of gnatsd's `/subsz`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SublistStats {
    pub num_subscriptions: usize,
    pub num_cache: usize,
    pub num_inserts: u64,
    pub num_removes: u64,
    pub num_matches: u64,
    pub cache_hits: u64,
    /// `cache_hits / num_matches`, 0 when there was no match yet.
    pub cache_hit_rate: f64,
    /// Largest fan-out among cached results.
    pub max_fanout: usize,
    /// Mean fan-out of cached results.
    pub avg_fanout: f64,
}

/// Shards for the lookup counters, so that lookups on different threads do not contend
/// on one cache line. Threads are spread over the shards round-robin.
const COUNTER_SHARDS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct CounterShard {
    matches: AtomicU64,
    misses: AtomicU64,
}

fn counter_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Relaxed) % COUNTER_SHARDS;
            s.set(v);
        }
        v
    })
}

/// A value on cache lines of its own (128 bytes: the prefetcher pulls lines in pairs).
#[repr(align(128))]
struct OwnLine<T>(T);

type Cache<S> = papaya::HashMap<Box<[u8]>, MatchResult<S>, ahash::RandomState>;

/// Lookups for one batch, sharing one epoch guard. Cache entries removed while a `Reader`
/// lives are reclaimed only after it is dropped, so keep it to one batch (one received
/// buffer), not a connection's lifetime.
pub struct Reader<'a, S: SubEntry> {
    list: &'a Sublist<S>,
    guard: papaya::LocalGuard<'a>,
    matches: u64,
    misses: u64,
}

impl<'a, S: SubEntry> Reader<'a, S> {
    /// The index this reader looks up (for inserts and removes).
    pub fn sublist(&self) -> &'a Sublist<S> {
        self.list
    }

    /// The index's change count. Read it before a lookup: while it reads the same, the
    /// same lookup finds the same result, so a caller may keep what it found (a
    /// publisher's memo of its subject's one subscriber).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.list.generation()
    }

    /// A lookup answered from the caller's own memo of an earlier one (counted as a
    /// cache hit in the statistics).
    #[inline]
    pub fn count_memo_hit(&mut self) {
        self.matches += 1;
    }

    /// `n` lookups answered without the index (a run of messages to a subject looked up
    /// once), counted as cache hits.
    #[inline]
    pub fn count_hits(&mut self, n: u64) {
        self.matches += n;
    }

    /// As [`Sublist::match_with`], within this reader's epoch.
    #[inline]
    pub fn match_with<R>(&mut self, subject: &[u8], f: impl FnOnce(&MatchResult<S>) -> R) -> R {
        let (r, missed) = self.list.match_in(&self.guard, subject, f);
        self.matches += 1;
        self.misses += missed as u64;
        r
    }
}

impl<S: SubEntry> Drop for Reader<'_, S> {
    fn drop(&mut self) {
        if self.matches > 0 {
            let shard = &self.list.counters[counter_shard()];
            shard.matches.fetch_add(self.matches, Relaxed);
            shard.misses.fetch_add(self.misses, Relaxed);
        }
    }
}

/// The subscription index. `Send + Sync`; share it with an [`Arc`].
pub struct Sublist<S: SubEntry> {
    trie: RwLock<Level<S>>,
    cache: Cache<S>,
    cache_max: usize,
    /// Entries in `cache`; changed only together with a successful insert or remove.
    cache_len: AtomicUsize,
    /// Set while one thread evicts, so concurrent misses do not all scan the cache.
    evicting: AtomicBool,
    evictions: AtomicU64,
    /// Fingerprints of recently missed subjects, consulted when the cache is full.
    doorkeeper: Box<[AtomicU32]>,
    hasher: ahash::RandomState,
    count: AtomicUsize,
    inserts: AtomicU64,
    removes: AtomicU64,
    /// Bumped after every change (insert or remove, cache invalidated): while it reads
    /// the same, every lookup finds what it found before. Read for every published
    /// message, so it sits alone on its cache line: next to a counter another core
    /// writes, each read would be a cache miss.
    generation: OwnLine<AtomicU64>,
    counters: Box<[CounterShard]>,
}

impl<S: SubEntry> Default for Sublist<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: SubEntry> Sublist<S> {
    /// An empty index with a cache of [`DEFAULT_CACHE_MAX`] subjects.
    pub fn new() -> Self {
        Self::with_cache_max(DEFAULT_CACHE_MAX)
    }

    /// An empty index caching at most `max` subjects; 0 disables the cache.
    pub fn with_cache_max(max: usize) -> Self {
        let cache = papaya::HashMap::builder()
            .capacity(if max == 0 { 0 } else { max + max / 4 })
            .hasher(ahash::RandomState::new())
            .build();
        let door_len = if max == 0 {
            0
        } else {
            max.next_power_of_two().max(64)
        };
        Sublist {
            trie: RwLock::new(Level::new()),
            cache,
            cache_max: max,
            cache_len: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            doorkeeper: (0..door_len).map(|_| AtomicU32::new(0)).collect(),
            hasher: ahash::RandomState::new(),
            count: AtomicUsize::new(0),
            inserts: AtomicU64::new(0),
            removes: AtomicU64::new(0),
            generation: OwnLine(AtomicU64::new(0)),
            counters: (0..COUNTER_SHARDS)
                .map(|_| CounterShard::default())
                .collect(),
        }
    }

    fn read_trie(&self) -> RwLockReadGuard<'_, Level<S>> {
        // The trie is only mutated by code that cannot panic half-way, so a poisoned
        // lock (a panic elsewhere while holding it) still guards a consistent trie.
        self.trie.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_trie(&self) -> RwLockWriteGuard<'_, Level<S>> {
        self.trie.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a subscription under `sub.subject()` (and `sub.queue()`). Inserting the same
    /// `Arc` twice stores it twice; each [`remove`](Self::remove) takes one away.
    pub fn insert(&self, sub: Arc<S>) -> Result<(), InvalidSubject> {
        let subject = sub.subject();
        let tokens = tokenize(subject);
        if !valid_pattern(&tokens) {
            return Err(InvalidSubject);
        }
        let mut trie = self.write_trie();
        trie.insert(&tokens, sub.clone(), sub.queue());
        self.count.fetch_add(1, Relaxed);
        self.inserts.fetch_add(1, Relaxed);
        self.invalidate(subject, &tokens);
        self.generation.0.fetch_add(1, Release);
        drop(trie);
        Ok(())
    }

    /// Removes the subscription that is this very `Arc` (pointer identity). Returns
    /// whether it was present.
    pub fn remove(&self, sub: &Arc<S>) -> bool {
        let subject = sub.subject();
        let tokens = tokenize(subject);
        if !valid_pattern(&tokens) {
            return false;
        }
        let mut trie = self.write_trie();
        if !trie.remove(&tokens, sub, sub.queue()) {
            return false;
        }
        self.count.fetch_sub(1, Relaxed);
        self.removes.fetch_add(1, Relaxed);
        self.invalidate(subject, &tokens);
        self.generation.0.fetch_add(1, Release);
        drop(trie);
        true
    }

    /// Removes several subscriptions under one acquisition of the write lock (e.g. when
    /// a connection closes). Returns how many were present.
    pub fn remove_batch(&self, subs: &[Arc<S>]) -> usize {
        let mut trie = self.write_trie();
        let mut n = 0;
        for sub in subs {
            let subject = sub.subject();
            let tokens = tokenize(subject);
            if valid_pattern(&tokens) && trie.remove(&tokens, sub, sub.queue()) {
                n += 1;
                self.invalidate(subject, &tokens);
            }
        }
        self.count.fetch_sub(n, Relaxed);
        self.removes.fetch_add(n as u64, Relaxed);
        if n > 0 {
            self.generation.0.fetch_add(1, Release);
        }
        drop(trie);
        n
    }

    /// Drops the cached results for subjects the pattern matches. Must be called with
    /// the trie's write lock held (see the module documentation).
    fn invalidate(&self, pattern: &[u8], tokens: &[&[u8]]) {
        if self.cache_len.load(Relaxed) == 0 {
            return;
        }
        let guard = self.cache.guard();
        if is_literal(tokens) {
            if self.cache.remove(pattern, &guard).is_some() {
                self.cache_len.fetch_sub(1, Relaxed);
            }
        } else {
            for (key, _) in self.cache.iter(&guard) {
                if pattern_matches(tokens, key) && self.cache.remove(&**key, &guard).is_some() {
                    self.cache_len.fetch_sub(1, Relaxed);
                }
            }
        }
    }

    /// Finds the subscriptions matching the published `subject` and calls `f` on them.
    ///
    /// A cache hit takes no lock. `f` runs with no lock held, so it may call back into
    /// this `Sublist`; while it runs, memory of cache entries removed meanwhile is not yet
    /// reclaimed, so keep it short. For many lookups in a row use a [`Reader`].
    pub fn match_with<R>(&self, subject: &[u8], f: impl FnOnce(&MatchResult<S>) -> R) -> R {
        self.reader().match_with(subject, f)
    }

    /// A lookup handle for a batch of lookups (one received buffer): it enters the cache's
    /// epoch once and counts lookups locally, so a cache hit costs a hash lookup and no
    /// atomic read-modify-write at all.
    pub fn reader(&self) -> Reader<'_, S> {
        Reader {
            list: self,
            guard: self.cache.guard(),
            matches: 0,
            misses: 0,
        }
    }

    /// The lookup itself; returns whether it missed the cache.
    fn match_in<R>(
        &self,
        guard: &impl papaya::Guard,
        subject: &[u8],
        f: impl FnOnce(&MatchResult<S>) -> R,
    ) -> (R, bool) {
        if self.cache_max == 0 {
            let mut result = MatchResult::new();
            self.read_trie().collect(&tokenize(subject), &mut result);
            return (f(&result), true);
        }
        if let Some(hit) = self.cache.get(subject, guard) {
            return (f(hit), false);
        }
        let trie = self.read_trie();
        let mut result = MatchResult::new();
        trie.collect(&tokenize(subject), &mut result);
        if !self.admit(subject, guard) {
            drop(trie);
            return (f(&result), true);
        }
        match self.cache.try_insert(subject.into(), result, guard) {
            Ok(cached) => {
                self.cache_len.fetch_add(1, Relaxed);
                drop(trie);
                (f(cached), true)
            }
            Err(occupied) => {
                // Another miss on the same subject cached it meanwhile; both results
                // were computed under the read lock, so they are identical.
                drop(trie);
                (f(occupied.current), true)
            }
        }
    }

    /// Convenience wrapper returning an owned copy of the result.
    pub fn match_subject(&self, subject: &[u8]) -> MatchResult<S> {
        self.match_with(subject, MatchResult::clone)
    }

    /// Decides whether a freshly computed result for `subject` goes into the cache,
    /// evicting if needed. Called with the trie's read lock held.
    fn admit(&self, subject: &[u8], guard: &impl papaya::Guard) -> bool {
        let len = self.cache_len.load(Relaxed);
        if len < self.cache_max / 2 {
            return true;
        }
        let hash = self.hasher.hash_one(subject);
        let slot = &self.doorkeeper[(hash as usize) & (self.doorkeeper.len() - 1)];
        let fingerprint = ((hash >> 32) as u32) | 1;
        if slot.load(Relaxed) != fingerprint {
            slot.store(fingerprint, Relaxed);
            return false;
        }
        slot.store(0, Relaxed);
        len < self.cache_max || self.evict(guard)
    }

    /// Removes a random quarter (at least one) of the cached entries. Returns false if
    /// another thread is already evicting.
    fn evict(&self, guard: &impl papaya::Guard) -> bool {
        if self
            .evicting
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        let mut rng =
            SmallRng::seed_from_u64(self.hasher.hash_one(self.evictions.fetch_add(1, Relaxed)));
        let mut removed = 0usize;
        let mut first: Option<&Box<[u8]>> = None;
        for (key, _) in self.cache.iter(guard) {
            if first.is_none() {
                first = Some(key);
            }
            if rng.next_u32() & 3 == 0 && self.cache.remove(&**key, guard).is_some() {
                removed += 1;
            }
        }
        if removed == 0 {
            if let Some(key) = first {
                if self.cache.remove(&**key, guard).is_some() {
                    removed = 1;
                }
            }
        }
        self.cache_len.fetch_sub(removed, Relaxed);
        self.evicting.store(false, Relaxed);
        true
    }

    /// Calls `f` on every stored subscription, under the trie's read lock (so `f` must
    /// not insert or remove). For a new route's initial sync and `/subsz`.
    pub fn for_each(&self, mut f: impl FnMut(&Arc<S>)) {
        self.read_trie().walk(&mut f);
    }

    /// Changes so far (see [`Reader::generation`]).
    pub fn generation(&self) -> u64 {
        self.generation.0.load(Acquire)
    }

    /// Number of subscriptions stored.
    pub fn count(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Number of cached subjects.
    pub fn cache_len(&self) -> usize {
        self.cache_len.load(Relaxed)
    }

    /// The configured cache bound.
    pub fn cache_max(&self) -> usize {
        self.cache_max
    }

    /// A snapshot of the counters. Walks the cache for the fan-out figures.
    pub fn stats(&self) -> SublistStats {
        let (matches, misses) = self.counters.iter().fold((0u64, 0u64), |(m, x), s| {
            (m + s.matches.load(Relaxed), x + s.misses.load(Relaxed))
        });
        let cache_hits = matches.saturating_sub(misses);
        let guard = self.cache.guard();
        let (mut entries, mut total_fanout, mut max_fanout) = (0usize, 0usize, 0usize);
        for (_, r) in self.cache.iter(&guard) {
            entries += 1;
            total_fanout += r.fanout();
            max_fanout = max_fanout.max(r.fanout());
        }
        SublistStats {
            num_subscriptions: self.count(),
            num_cache: self.cache_len(),
            num_inserts: self.inserts.load(Relaxed),
            num_removes: self.removes.load(Relaxed),
            num_matches: matches,
            cache_hits,
            cache_hit_rate: if matches == 0 {
                0.0
            } else {
                cache_hits as f64 / matches as f64
            },
            max_fanout,
            avg_fanout: if entries == 0 {
                0.0
            } else {
                total_fanout as f64 / entries as f64
            },
        }
    }
}
