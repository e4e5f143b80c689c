//! The cache's key: a subject's bytes, hashed in one pass and compared inline.
//!
//! A cache hit is one hash and one key compare per published message. With `Box<[u8]>`
//! as the key, the hash also mixed in the length (a second round) and the compare was a
//! call to `memcmp` for a subject of a few bytes; together they were 19 % of a
//! publish-only profile.

use std::hash::{Hash, Hasher};

/// A cached subject.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct CacheKey(pub(super) Box<[u8]>);

/// A subject being looked up, without copying it into a [`CacheKey`].
pub(super) struct Lookup<'a>(pub(super) &'a [u8]);

impl Hash for CacheKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One field, so no length prefix is needed to keep distinct keys apart.
        state.write(&self.0);
    }
}

impl Hash for Lookup<'_> {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `CacheKey` does.
        state.write(self.0);
    }
}

impl papaya::Equivalent<CacheKey> for Lookup<'_> {
    #[inline]
    fn equivalent(&self, key: &CacheKey) -> bool {
        same_bytes(self.0, &key.0)
    }
}

/// `a == b`, with subjects up to 16 bytes compared by two overlapping word loads each
/// instead of a `memcmp` call.
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
    fn lookup_hashes_as_the_key() {
        let s = ahash::RandomState::new();
        for subj in [
            &b""[..],
            b"a",
            b"foo.bar",
            b"a.very.long.subject.with.many.tokens",
        ] {
            assert_eq!(
                s.hash_one(Lookup(subj)),
                s.hash_one(CacheKey(subj.into())),
                "{subj:?}"
            );
        }
    }
}
