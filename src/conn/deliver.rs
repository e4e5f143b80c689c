//! Subscriptions and message delivery, shared by every connection kind.
//!
//! A [`Subscription`] knows where it leads ([`Origin`]): a local client, or a route (the
//! interest of a remote server, held under the route's sid `RSID:cid:sid`). Delivery
//! applies gnatsd 1.0's cluster rules in one place:
//! - a message from a **client** goes to every local plain subscriber, to each route at
//!   most once (the first matching route subscription's sid), and to one member of each
//!   queue group chosen among local and remote members;
//! - a message from a **route** goes to local client subscribers only (one hop: never back
//!   out to a route) and skips queue groups (the origin server already chose), except a
//!   `QRSID` message, which goes to exactly the member it names.

use crate::cluster::Cluster;
use crate::outbound::{Outbound, WakeBatch};
use crate::sublist::{MatchResult, SubEntry, Sublist};
use rand::rngs::SmallRng;
use rand::Rng;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where a subscription's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client of this server, by connection id.
    Client { cid: u64 },
    /// A remote server's interest, held by the route connection `cid`.
    Route { cid: u64 },
}

/// One subscription. `max == 0` means no auto-unsubscribe limit.
pub struct Subscription {
    pub(crate) subject: Box<[u8]>,
    pub(crate) queue: Option<Box<[u8]>>,
    /// The sid as the holder knows it: a client's own sid, or a route's `RSID:cid:sid`.
    pub(crate) sid: Box<[u8]>,
    pub origin: Origin,
    pub out: Arc<Outbound>,
    pub(crate) max: AtomicU64,
    pub(crate) delivered: AtomicU64,
}

impl SubEntry for Subscription {
    fn subject(&self) -> &[u8] {
        &self.subject
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}

impl Subscription {
    pub fn new(
        subject: &[u8],
        queue: Option<&[u8]>,
        sid: &[u8],
        origin: Origin,
        out: Arc<Outbound>,
    ) -> Self {
        Subscription {
            subject: subject.into(),
            queue: queue.map(Into::into),
            sid: sid.into(),
            origin,
            out,
            max: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        }
    }

    pub fn sid(&self) -> &[u8] {
        &self.sid
    }

    pub fn is_local(&self) -> bool {
        matches!(self.origin, Origin::Client { .. })
    }

    /// The auto-unsubscribe limit, 0 when none is set.
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::Relaxed)
    }

    /// Messages delivered so far (exact only when a limit is set).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// True once the auto-unsubscribe limit has been delivered.
    pub fn exhausted(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        max > 0 && self.delivered.load(Ordering::Relaxed) >= max
    }

    /// Delivery would be refused: the holder is closing or the limit was reached.
    fn unavailable(&self) -> bool {
        self.out.is_dead() || self.exhausted()
    }
}

/// A message being published.
pub struct Message<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    /// Length of the header block at the start of `payload` (HPUB), if any.
    pub header_len: Option<usize>,
    pub payload: &'a [u8],
}

impl Message<'_> {
    /// What this subscriber gets: HMSG if its connection has headers on, else MSG without
    /// the headers (1.0 routes and old clients).
    #[inline]
    fn wire_form(&self, sub: &Subscription) -> (Option<usize>, &[u8]) {
        match self.header_len {
            Some(h) if sub.out.headers.load(Ordering::Relaxed) => (Some(h), self.payload),
            Some(h) => (None, &self.payload[h.min(self.payload.len())..]),
            None => (None, self.payload),
        }
    }

    #[inline]
    pub(crate) fn encoded_len(&self, sub: &Subscription) -> usize {
        let (hdr, body) = self.wire_form(sub);
        let mut n = self.subject.len() + 1 + sub.sid.len() + 1 + digits(body.len()) + 2;
        n += body.len() + 2;
        if let Some(r) = self.reply {
            n += r.len() + 1;
        }
        match hdr {
            Some(h) => n + 5 + digits(h) + 1,
            None => n + 4,
        }
    }

    /// `MSG <subject> <sid> [reply] <len>\r\n<payload>\r\n`, or the HMSG form. The same
    /// bytes serve clients and routes: a route subscription's sid is its `RSID:...`.
    #[inline]
    pub(crate) fn encode(&self, sub: &Subscription, buf: &mut Vec<u8>) {
        let (hdr, body) = self.wire_form(sub);
        buf.extend_from_slice(if hdr.is_some() { b"HMSG " } else { b"MSG " });
        buf.extend_from_slice(self.subject);
        buf.push(b' ');
        buf.extend_from_slice(&sub.sid);
        buf.push(b' ');
        if let Some(r) = self.reply {
            buf.extend_from_slice(r);
            buf.push(b' ');
        }
        if let Some(h) = hdr {
            put_usize(buf, h);
            buf.push(b' ');
        }
        put_usize(buf, body.len());
        buf.extend_from_slice(b"\r\n");
        buf.extend_from_slice(body);
        buf.extend_from_slice(b"\r\n");
    }
}

/// What delivery touches besides the match result.
pub struct Targets<'a> {
    pub sublist: &'a Sublist<Subscription>,
    pub batch: &'a mut WakeBatch,
    pub rng: &'a mut SmallRng,
    /// Routes to tell when a local subscription reaches its auto-unsubscribe limit.
    pub cluster: Option<&'a Cluster>,
}

/// Where a message entered this server.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// From a local client; `skip` is its own queue when it asked for no echo.
    Client { skip: Option<&'a Arc<Outbound>> },
    /// From a route (plain `RSID` or any non-`QRSID` sid).
    Route,
}

/// Delivers `msg` by the rules in the module doc. Returns how many subscriptions got it.
pub fn deliver(
    msg: &Message<'_>,
    result: &MatchResult<Subscription>,
    source: Source<'_>,
    env: &mut Targets<'_>,
) -> usize {
    let (skip, from_route) = match source {
        Source::Client { skip } => (skip, false),
        Source::Route => (None, true),
    };
    let is_skipped = |sub: &Subscription| skip.is_some_and(|s| Arc::ptr_eq(s, &sub.out));
    let mut n = 0;
    // Routes already sent to for this message: one MSG per remote server.
    let mut routes_done: SmallVec<[*const Outbound; 4]> = SmallVec::new();
    for sub in &result.plain {
        match sub.origin {
            Origin::Client { .. } => {
                if !is_skipped(sub) && deliver_one(msg, sub, env) {
                    n += 1;
                }
            }
            Origin::Route { .. } => {
                if from_route {
                    continue;
                }
                let key = Arc::as_ptr(&sub.out);
                if !routes_done.contains(&key) && deliver_one(msg, sub, env) {
                    routes_done.push(key);
                    n += 1;
                }
            }
        }
    }
    if from_route {
        return n;
    }
    for group in &result.queues {
        if deliver_to_group(msg, &group.members, |s| !is_skipped(s), env) {
            n += 1;
        }
    }
    n
}

/// Gives `msg` to one member of a queue group accepted by `eligible`: a random one, or, if
/// that one cannot take it (closing, past its limit), the next, so the group does not lose
/// it. Returns whether a member got it.
pub fn deliver_to_group(
    msg: &Message<'_>,
    members: &[Arc<Subscription>],
    eligible: impl Fn(&Subscription) -> bool,
    env: &mut Targets<'_>,
) -> bool {
    if members.is_empty() {
        return false;
    }
    let start = env.rng.gen_range(0..members.len());
    (0..members.len()).any(|i| {
        let sub = &members[(start + i) % members.len()];
        eligible(sub) && deliver_one(msg, sub, env)
    })
}

/// A `QRSID` message from a route: exactly the named local member, or, when it is gone or
/// cannot take it, another local member of the same group (`group`, when the member is
/// already gone from the index). Returns whether a member got it.
pub fn deliver_to_member(
    msg: &Message<'_>,
    result: &MatchResult<Subscription>,
    cid: u64,
    sid: &[u8],
    group: Option<&[u8]>,
    env: &mut Targets<'_>,
) -> bool {
    let named = |s: &Subscription| s.origin == (Origin::Client { cid }) && &*s.sid == sid;
    let found = result
        .queues
        .iter()
        .find_map(|g| g.members.iter().find(|s| named(s)).map(|s| (g, s)));
    let group = match found {
        Some((_, sub)) if !sub.unavailable() && deliver_one(msg, sub, env) => return true,
        Some((g, _)) => Some(g),
        None => group.and_then(|name| result.queues.iter().find(|g| &*g.name == name)),
    };
    group.is_some_and(|g| deliver_to_group(msg, &g.members, Subscription::is_local, env))
}

#[inline]
fn deliver_one(msg: &Message<'_>, sub: &Arc<Subscription>, env: &mut Targets<'_>) -> bool {
    if sub.out.is_dead() {
        return false;
    }
    let max = sub.max.load(Ordering::Relaxed);
    let count = if max > 0 {
        // Exact: the limit decides what is delivered.
        sub.delivered.fetch_add(1, Ordering::Relaxed) + 1
    } else {
        // No limit set: the count only matters if `UNSUB sid N` comes later. A plain
        // load/store keeps the hot path free of locked instructions; concurrent deliveries
        // from two cores may lose an increment, which can only let a later limit deliver
        // a message more.
        let c = sub.delivered.load(Ordering::Relaxed) + 1;
        sub.delivered.store(c, Ordering::Relaxed);
        c
    };
    if max > 0 && count > max {
        // Past its limit (a race with the removal below): dropped, as gnatsd does.
        env.sublist.remove(sub);
        return false;
    }
    env.batch
        .stage_msg(&sub.out, msg.encoded_len(sub), msg.payload.len(), |b| {
            msg.encode(sub, b)
        });
    if max > 0 && count == max && env.sublist.remove(sub) && sub.is_local() {
        // The limit is reached here: withdraw the interest from the routes at once, as
        // 1.0 does, rather than leaving them to count it down.
        if let Some(cluster) = env.cluster {
            super::route::withdraw(cluster, env.batch, sub, None);
        }
    }
    true
}

#[inline]
pub(crate) fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

#[inline]
pub(crate) fn put_usize(buf: &mut Vec<u8>, n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}
