//! Connection slots of one reactor, addressed by a token that carries a generation so a
//! completion for a closed connection can never reach the slot's next occupant.

/// Tokens fit in 56 bits (the top byte of io_uring user data says what the op was):
/// 32 bits of slot index and 24 bits of generation.
const GEN_MASK: u32 = 0x00ff_ffff;

struct Entry<T> {
    gen: u32,
    val: Option<T>,
}

pub struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

fn token(idx: u32, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

fn split(token: u64) -> (usize, u32) {
    (
        (token & 0xffff_ffff) as usize,
        (token >> 32) as u32 & GEN_MASK,
    )
}

impl<T> Slab<T> {
    pub fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Occupied slots with their tokens.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.val.as_ref().map(|v| (token(i as u32, e.gen), v)))
    }

    /// Occupied slots, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.entries
            .iter_mut()
            .enumerate()
            .filter_map(|(i, e)| e.val.as_mut().map(|v| (token(i as u32, e.gen), v)))
    }

    /// The token the next `insert` will return.
    pub fn vacant_token(&self) -> u64 {
        match self.free.last() {
            Some(&idx) => token(idx, self.entries[idx as usize].gen),
            None => token(self.entries.len() as u32, 0),
        }
    }

    pub fn insert(&mut self, val: T) -> u64 {
        self.len += 1;
        match self.free.pop() {
            Some(idx) => {
                let e = &mut self.entries[idx as usize];
                debug_assert!(e.val.is_none());
                e.val = Some(val);
                token(idx, e.gen)
            }
            None => {
                let idx = self.entries.len() as u32;
                self.entries.push(Entry {
                    gen: 0,
                    val: Some(val),
                });
                token(idx, 0)
            }
        }
    }

    pub fn get_mut(&mut self, token: u64) -> Option<&mut T> {
        let (idx, gen) = split(token);
        let e = self.entries.get_mut(idx)?;
        if e.gen != gen {
            return None;
        }
        e.val.as_mut()
    }

    pub fn get(&self, token: u64) -> Option<&T> {
        let (idx, gen) = split(token);
        let e = self.entries.get(idx)?;
        if e.gen != gen {
            return None;
        }
        e.val.as_ref()
    }

    pub fn remove(&mut self, token: u64) -> Option<T> {
        let (idx, gen) = split(token);
        let e = self.entries.get_mut(idx)?;
        if e.gen != gen {
            return None;
        }
        let val = e.val.take()?;
        e.gen = (e.gen + 1) & GEN_MASK;
        self.free.push(idx as u32);
        self.len -= 1;
        Some(val)
    }

    /// Tokens of all occupied slots (a snapshot, so the caller may mutate while iterating).
    pub fn tokens(&self) -> Vec<u64> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.val.is_some())
            .map(|(i, e)| token(i as u32, e.gen))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tokens_miss_reused_slots() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.vacant_token(), token(1, 0));
        assert_eq!(s.remove(a), Some("a"));
        let predicted = s.vacant_token();
        let b = s.insert("b");
        assert_eq!(predicted, b);
        assert_ne!(a, b, "same slot, new generation");
        assert!(s.get_mut(a).is_none());
        assert_eq!(s.get_mut(b), Some(&mut "b"));
        assert_eq!(s.tokens(), vec![b]);
        assert_eq!(
            s.iter().map(|(t, v)| (t, *v)).collect::<Vec<_>>(),
            vec![(b, "b")]
        );
        assert_eq!(s.len(), 1);
        assert!(b < (1 << 56));
    }
}
