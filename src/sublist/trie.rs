//! The token trie behind [`Sublist`](super::Sublist).
//!
//! A pattern such as `foo.*.bar` is stored as a path of nodes, one per token. Each
//! level keeps its literal children in a hash map and its `*` and `>` children in
//! dedicated slots, so a lookup visits at most three children per level. A node holds
//! the subscriptions whose pattern ends there: plain ones in a list, queue ones grouped
//! by queue name. Nodes that become empty are pruned on removal.

use std::sync::Arc;

use ahash::AHashMap;
use smallvec::SmallVec;

use super::{MatchResult, QueueGroup};

/// Tokens of a subject or pattern, split on `.`, without allocating for typical depths.
pub(crate) type Tokens<'a> = SmallVec<[&'a [u8]; 16]>;

pub(crate) fn tokenize(subject: &[u8]) -> Tokens<'_> {
    subject.split(|&b| b == b'.').collect()
}

/// A pattern is valid when it is non-empty, has no empty token, and `>` (if present) is
/// the last token. Only tokens that are exactly `*` or `>` are wildcards.
pub(crate) fn valid_pattern(tokens: &[&[u8]]) -> bool {
    let Some((last, init)) = tokens.split_last() else {
        return false;
    };
    !last.is_empty() && init.iter().all(|t| !t.is_empty() && *t != b">")
}

pub(crate) fn is_literal(tokens: &[&[u8]]) -> bool {
    tokens.iter().all(|t| *t != b"*" && *t != b">")
}

/// Whether the (valid) pattern matches `subject`, with exactly the semantics of
/// [`Level::collect`]. Used to find the cached results a write invalidates.
pub(crate) fn pattern_matches(pattern: &[&[u8]], subject: &[u8]) -> bool {
    let mut subject_tokens = subject.split(|&b| b == b'.');
    for p in pattern {
        if *p == b">" {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(t) if *p == b"*" || *p == t => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

struct QueueSubs<S> {
    name: Box<[u8]>,
    members: Vec<Arc<S>>,
}

struct Node<S> {
    next: Option<Box<Level<S>>>,
    plain: Vec<Arc<S>>,
    queues: Vec<QueueSubs<S>>,
}

impl<S> Node<S> {
    fn new() -> Self {
        Node {
            next: None,
            plain: Vec::new(),
            queues: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty() && self.next.is_none()
    }

    fn add(&mut self, sub: Arc<S>, queue: Option<&[u8]>) {
        match queue {
            None => self.plain.push(sub),
            Some(q) => match self.queues.iter_mut().find(|g| &*g.name == q) {
                Some(g) => g.members.push(sub),
                None => self.queues.push(QueueSubs {
                    name: q.into(),
                    members: vec![sub],
                }),
            },
        }
    }

    fn remove(&mut self, sub: &Arc<S>, queue: Option<&[u8]>) -> bool {
        match queue {
            None => remove_ptr(&mut self.plain, sub),
            Some(q) => {
                let Some(gi) = self.queues.iter().position(|g| &*g.name == q) else {
                    return false;
                };
                let removed = remove_ptr(&mut self.queues[gi].members, sub);
                if self.queues[gi].members.is_empty() {
                    self.queues.swap_remove(gi);
                }
                removed
            }
        }
    }

    fn append_to(&self, out: &mut MatchResult<S>) {
        out.plain.extend(self.plain.iter().cloned());
        for q in &self.queues {
            match out.queues.iter_mut().find(|g| g.name == q.name) {
                Some(g) => g.members.extend(q.members.iter().cloned()),
                None => out.queues.push(QueueGroup {
                    name: q.name.clone(),
                    members: q.members.iter().cloned().collect(),
                }),
            }
        }
    }

    fn walk(&self, f: &mut dyn FnMut(&Arc<S>)) {
        self.plain.iter().for_each(&mut *f);
        for q in &self.queues {
            q.members.iter().for_each(&mut *f);
        }
        if let Some(next) = &self.next {
            next.walk(f);
        }
    }

    fn visit(&self, rest: &[&[u8]], out: &mut MatchResult<S>) {
        if rest.is_empty() {
            self.append_to(out);
        } else if let Some(level) = &self.next {
            level.collect(rest, out);
        }
    }
}

fn remove_ptr<S>(list: &mut Vec<Arc<S>>, sub: &Arc<S>) -> bool {
    match list.iter().position(|s| Arc::ptr_eq(s, sub)) {
        Some(i) => {
            list.swap_remove(i);
            if list.is_empty() {
                *list = Vec::new();
            }
            true
        }
        None => false,
    }
}

pub(crate) struct Level<S> {
    literal: AHashMap<Box<[u8]>, Node<S>>,
    star: Option<Box<Node<S>>>,
    gt: Option<Box<Node<S>>>,
}

impl<S> Level<S> {
    pub(crate) fn new() -> Self {
        Level {
            literal: AHashMap::new(),
            star: None,
            gt: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.literal.is_empty() && self.star.is_none() && self.gt.is_none()
    }

    fn child_or_insert(&mut self, token: &[u8]) -> &mut Node<S> {
        match token {
            b"*" => self.star.get_or_insert_with(|| Box::new(Node::new())),
            b">" => self.gt.get_or_insert_with(|| Box::new(Node::new())),
            _ => {
                if !self.literal.contains_key(token) {
                    self.literal.insert(token.into(), Node::new());
                }
                self.literal
                    .get_mut(token)
                    .expect("literal child was just ensured")
            }
        }
    }

    fn child_mut(&mut self, token: &[u8]) -> Option<&mut Node<S>> {
        match token {
            b"*" => self.star.as_deref_mut(),
            b">" => self.gt.as_deref_mut(),
            _ => self.literal.get_mut(token),
        }
    }

    fn drop_child(&mut self, token: &[u8]) {
        match token {
            b"*" => self.star = None,
            b">" => self.gt = None,
            _ => {
                self.literal.remove(token);
                if self.literal.is_empty() {
                    self.literal = AHashMap::new();
                }
            }
        }
    }

    /// Adds `sub` under the valid, non-empty pattern `tokens`.
    pub(crate) fn insert(&mut self, tokens: &[&[u8]], sub: Arc<S>, queue: Option<&[u8]>) {
        let (last, init) = tokens.split_last().expect("pattern has a token");
        let mut level = self;
        for tok in init {
            level = level
                .child_or_insert(tok)
                .next
                .get_or_insert_with(|| Box::new(Level::new()));
        }
        level.child_or_insert(last).add(sub, queue);
    }

    /// Removes `sub` (by pointer identity) from the node of `tokens`, pruning nodes and
    /// levels left empty. Returns whether it was found.
    pub(crate) fn remove(&mut self, tokens: &[&[u8]], sub: &Arc<S>, queue: Option<&[u8]>) -> bool {
        let Some((tok, rest)) = tokens.split_first() else {
            return false;
        };
        let Some(node) = self.child_mut(tok) else {
            return false;
        };
        let removed = if rest.is_empty() {
            node.remove(sub, queue)
        } else {
            match node.next.as_deref_mut() {
                Some(next) => {
                    let removed = next.remove(rest, sub, queue);
                    if removed && next.is_empty() {
                        node.next = None;
                    }
                    removed
                }
                None => false,
            }
        };
        if removed && node.is_empty() {
            self.drop_child(tok);
        }
        removed
    }

    /// Appends every subscription whose pattern matches the subject `tokens` to `out`,
    /// merging queue subscriptions by queue name.
    pub(crate) fn collect(&self, tokens: &[&[u8]], out: &mut MatchResult<S>) {
        let Some((tok, rest)) = tokens.split_first() else {
            return;
        };
        if let Some(gt) = &self.gt {
            gt.append_to(out);
        }
        if let Some(star) = &self.star {
            star.visit(rest, out);
        }
        if !self.literal.is_empty() {
            if let Some(node) = self.literal.get(*tok) {
                node.visit(rest, out);
            }
        }
    }

    /// Calls `f` on every stored subscription (order unspecified).
    pub(crate) fn walk(&self, f: &mut dyn FnMut(&Arc<S>)) {
        for node in self.literal.values() {
            node.walk(f);
        }
        if let Some(star) = &self.star {
            star.walk(f);
        }
        if let Some(gt) = &self.gt {
            gt.walk(f);
        }
    }
}
