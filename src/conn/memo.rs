//! A publisher's memo of where its subject goes, for a stream of PUBs to one subject.
//!
//! Most 1:1 traffic is one connection publishing to the same subject over and over, and
//! that subject has exactly one local, plain subscriber (or, publishing only, none).
//! Routing each message through the index (hash, probe, key compare) and the general
//! delivery loop (queue groups, routes, echo) was 30 % of a 1:1 profile. The memo keeps
//! where the subject went and the index's generation when that was found: while the
//! generation is unchanged, no subscription anywhere was added or removed, so the same
//! lookup would find the same thing.
//!
//! It is filled only on the second lookup in a row of one subject, so alternating
//! subjects cost a compare and a short copy, not reference-count traffic.

use super::deliver::Subscription;
use crate::outbound::Outbound;
use crate::sublist::MatchResult;
use smallvec::SmallVec;
use std::sync::Arc;

/// Subjects up to this long are held without a heap allocation.
const INLINE: usize = 48;

/// Where a memoized subject's messages go.
pub(crate) enum Goes {
    /// Nowhere: nothing matched.
    Nowhere,
    /// To this one local, plain subscription and nothing else.
    To(Arc<Subscription>),
}

impl Goes {
    /// What a lookup's `result` amounts to for a client's message, when it is that
    /// simple: nothing matched, or one plain subscription of a local client that is not
    /// the publisher skipped for `echo` (`skip`), and no queue group.
    pub fn of(result: &MatchResult<Subscription>, skip: Option<&Arc<Outbound>>) -> Option<Goes> {
        if !result.queues.is_empty() {
            return None;
        }
        match result.plain.as_slice() {
            [] => Some(Goes::Nowhere),
            [sub] if sub.is_local() && !skip.is_some_and(|s| Arc::ptr_eq(s, &sub.out)) => {
                Some(Goes::To(Arc::clone(sub)))
            }
            _ => None,
        }
    }
}

#[derive(Default)]
pub(crate) struct PubMemo {
    /// The memoized subject and where it goes, valid at `generation`.
    subject: SmallVec<[u8; INLINE]>,
    goes: Option<Goes>,
    generation: u64,
    /// The subject of the last publish that went through the index.
    last_lookup: SmallVec<[u8; INLINE]>,
    /// The generation at which `last_lookup` was found to go to more than the memo
    /// holds (a fan-out): it is not asked about again until the index changes.
    not_simple_at: Option<u64>,
}

/// What to do with a lookup through the index, by [`PubMemo::ask`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ask {
    /// A subject other than the previous lookup's: only remember it.
    New,
    /// The same subject again: offer the result to [`PubMemo::learn`].
    Learn,
    /// The same subject, known to fan out at this generation: nothing to do.
    Skip,
}

impl PubMemo {
    /// Where `subject` goes, if memoized and the index is still at the generation that
    /// was found in.
    #[inline]
    pub fn get(&self, subject: &[u8], generation: u64) -> Option<&Goes> {
        let goes = self.goes.as_ref()?;
        (self.generation == generation && same_bytes(&self.subject, subject)).then_some(goes)
    }

    /// Before a lookup through the index at `generation`: what to do with its result.
    #[inline]
    pub fn ask(&self, subject: &[u8], generation: u64) -> Ask {
        if !same_bytes(&self.last_lookup, subject) {
            Ask::New
        } else if self.not_simple_at == Some(generation) {
            Ask::Skip
        } else {
            Ask::Learn
        }
    }

    /// After a lookup through the index at `generation` (read before the lookup), as
    /// `ask` said: `goes` is what the result amounts to ([`Goes::of`]) when it was
    /// asked to learn and the result is that simple.
    #[inline]
    pub fn learn(&mut self, subject: &[u8], generation: u64, ask: Ask, goes: Option<Goes>) {
        match (ask, goes) {
            (Ask::Skip, _) => {}
            (Ask::New, _) => {
                self.last_lookup.clear();
                self.last_lookup.extend_from_slice(subject);
                self.not_simple_at = None;
                self.forget();
            }
            (Ask::Learn, Some(goes)) => {
                self.subject.clear();
                self.subject.extend_from_slice(subject);
                self.goes = Some(goes);
                self.generation = generation;
            }
            (Ask::Learn, None) => {
                self.not_simple_at = Some(generation);
                self.forget();
            }
        }
    }

    /// Forgets where the subject went if the index moved on since (so a closed
    /// subscriber is not kept alive by an idle publisher).
    pub fn expire(&mut self, generation: u64) {
        if self.goes.is_some() && self.generation != generation {
            self.forget();
        }
    }

    #[inline]
    pub fn forget(&mut self) {
        self.goes = None;
    }
}

/// `a == b`, with subjects up to 16 bytes compared by two overlapping word loads each
/// rather than a `memcmp` call (this runs on every published message; also the subject
/// compare of a run of PUBs).
#[inline(always)]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap());
    let half = |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap());
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::deliver::Origin;
    use crate::outbound::Outbound;

    fn sub(sid: &[u8]) -> Arc<Subscription> {
        let out = Arc::new(Outbound::new(1, 0, 1, 1 << 20));
        Arc::new(Subscription::new(
            b"foo",
            None,
            sid,
            Origin::Client { cid: 1 },
            out,
        ))
    }

    #[test]
    fn filled_on_the_second_lookup_and_valid_only_at_its_generation() {
        let mut m = PubMemo::default();
        assert_eq!(m.ask(b"foo", 7), Ask::New, "first lookup of a subject");
        m.learn(b"foo", 7, Ask::New, None);
        assert_eq!(m.ask(b"foo", 7), Ask::Learn, "second lookup in a row");
        m.learn(b"foo", 7, Ask::Learn, Some(Goes::To(sub(b"1"))));
        assert!(matches!(m.get(b"foo", 7), Some(Goes::To(s)) if s.sid() == b"1"));
        assert!(
            m.get(b"foo", 8).is_none(),
            "a subscription changed somewhere"
        );
        assert!(m.get(b"fo", 7).is_none());
        assert!(m.get(b"foo.bar", 7).is_none());
    }

    #[test]
    fn a_lookup_without_a_single_subscriber_forgets() {
        let mut m = PubMemo::default();
        m.learn(b"foo", 1, Ask::New, None);
        m.learn(b"foo", 1, Ask::Learn, Some(Goes::To(sub(b"1"))));
        m.learn(b"foo", 2, Ask::Learn, None);
        assert!(m.get(b"foo", 2).is_none());
        assert!(m.get(b"foo", 1).is_none());
        assert_eq!(
            m.ask(b"foo", 2),
            Ask::Skip,
            "a fan-out is not asked about again"
        );
        assert_eq!(m.ask(b"foo", 3), Ask::Learn, "until the index changes");
        assert_eq!(m.ask(b"bar", 2), Ask::New);
    }

    #[test]
    fn alternating_subjects_never_ask_for_a_subscriber() {
        let mut m = PubMemo::default();
        for i in 0..10 {
            let s: &[u8] = if i % 2 == 0 { b"a" } else { b"b" };
            assert_eq!(m.ask(s, 1), Ask::New, "round {i}");
            m.learn(s, 1, Ask::New, None);
        }
        let long = vec![b'x'; 200];
        assert_eq!(m.ask(&long, 1), Ask::New);
        m.learn(&long, 1, Ask::New, None);
        assert_eq!(
            m.ask(&long, 1),
            Ask::Learn,
            "subjects longer than the inline space work too"
        );
    }

    #[test]
    fn same_bytes_agrees_with_eq_for_every_length_and_position() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| b'a' + i % 26).collect();
            assert!(same_bytes(&a, &a.clone()), "len {n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x20;
                assert!(!same_bytes(&a, &b), "len {n}, byte {i} differs");
            }
            let mut longer = a.clone();
            longer.push(b'x');
            assert!(!same_bytes(&a, &longer), "len {n} vs {}", n + 1);
        }
    }

    #[test]
    fn expire_drops_only_a_stale_subscriber() {
        let mut m = PubMemo::default();
        let s = sub(b"1");
        m.learn(b"foo", 3, Ask::Learn, Some(Goes::To(Arc::clone(&s))));
        m.expire(3);
        assert!(m.get(b"foo", 3).is_some());
        m.expire(4);
        assert!(m.get(b"foo", 3).is_none());
        assert_eq!(Arc::strong_count(&s), 1, "the memo let go of it");
    }
}
