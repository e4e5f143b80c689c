//! Subscriptions and message delivery, shared by every connection kind.
//!
//! A [`Subscription`] knows where it leads ([`Origin`]): a local client, or a route (the
//! interest of a remote server, held by the route connection). Delivery applies the
//! cluster rules in one place, whatever wire the route speaks:
//! - a message from a **client** goes to every local plain subscriber, to each route at
//!   most once, and to one member of each queue group chosen among local and remote
//!   members (a remote member counts as many members as its weight);
//! - a message from a **route** goes to local clients and to routes of the *other* dialect
//!   only (one hop per cluster: never back into the cluster it came from). Queue groups are
//!   served only when the sender names them (a 2.x route's queue list, a 1.0 `QRSID`), by
//!   a member that is not in the sender's cluster.
//!
//! What goes to one route for one message is collected first ([`RouteTarget`]: its plain
//! subscription and the queue members chosen behind it); `conn::route` writes it in the
//! route's dialect.

use super::pub_run::PubRun;
use super::route::{self, Dialect};
use crate::cluster::Cluster;
use crate::outbound::{Outbound, WakeBatch};
use crate::sublist::{MatchResult, SubEntry, Sublist};
use rand::rngs::SmallRng;
use rand::Rng;
use smallvec::SmallVec;
use std::cell::{Cell, Ref, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Where a subscription's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client of this server, by connection id.
    Client { cid: u64 },
    /// A remote server's interest, held by the route connection `cid`, which speaks
    /// `dialect`.
    Route { cid: u64, dialect: Dialect },
}

impl Origin {
    /// The id of the connection that holds the subscription.
    pub fn cid(self) -> u64 {
        match self {
            Origin::Client { cid } | Origin::Route { cid, .. } => cid,
        }
    }

    /// The route dialect, for a route's subscription.
    pub fn dialect(self) -> Option<Dialect> {
        match self {
            Origin::Client { .. } => None,
            Origin::Route { dialect, .. } => Some(dialect),
        }
    }
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
    /// Queue members this entry stands for (a 2.x route's queue weight; 1 otherwise).
    pub(crate) weight: AtomicU32,
    /// The interest has been withdrawn from the routes (exactly once per subscription).
    pub(crate) withdrawn: AtomicBool,
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
            weight: AtomicU32::new(1),
            withdrawn: AtomicBool::new(false),
        }
    }

    /// Queue members this entry stands for.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
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
    pub(crate) fn unavailable(&self) -> bool {
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
    /// The MSG line around the sid, built once when the message goes to a second
    /// subscriber (fan-out), so each further one costs three copies.
    pub cache: EncodeCache,
}

/// Payloads up to this size are kept in the [`Template`] with the line, so a fan-out
/// copies each message in three pieces (before the sid, the sid, the rest).
const TEMPLATE_PAYLOAD_MAX: usize = 192;

/// Per-message encoding state; [`Default`] when a message is built.
#[derive(Default)]
pub struct EncodeCache {
    /// Deliveries encoded so far, counted up to 2 (the template is built at the second).
    encoded: Cell<u8>,
    /// Filled in place at the second delivery: building it on the stack and moving it in
    /// copied the whole inline buffer once per published message.
    tpl: RefCell<Template>,
}

/// `MSG <subject> ` and ` [reply ]<len>\r\n[<payload>\r\n]` of one plain MSG.
#[derive(Default)]
struct Template {
    bytes: SmallVec<[u8; 320]>,
    /// Length of the part before the sid.
    pre: usize,
    /// The payload and its CRLF are in `bytes`.
    whole: bool,
}

impl<'a> Message<'a> {
    /// A message with an empty encoding cache.
    pub fn new(
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        header_len: Option<usize>,
        payload: &'a [u8],
    ) -> Self {
        Message {
            subject,
            reply,
            header_len,
            payload,
            cache: EncodeCache::default(),
        }
    }

    /// The shared parts of a plain MSG, from the second delivery of this message on
    /// (a lone delivery encodes directly: building the template would only add copies).
    #[inline]
    fn template(&self) -> Option<Ref<'_, Template>> {
        if self.header_len.is_some() {
            return None;
        }
        match self.cache.encoded.get() {
            0 => {
                self.cache.encoded.set(1);
                return None;
            }
            1 => {
                self.cache.encoded.set(2);
                self.build_template(&mut self.cache.tpl.borrow_mut());
            }
            _ => {}
        }
        Some(self.cache.tpl.borrow())
    }

    #[cold]
    fn build_template(&self, t: &mut Template) {
        let bytes = &mut t.bytes;
        bytes.extend_from_slice(b"MSG ");
        bytes.extend_from_slice(self.subject);
        bytes.push(b' ');
        t.pre = bytes.len();
        bytes.push(b' ');
        if let Some(r) = self.reply {
            bytes.extend_from_slice(r);
            bytes.push(b' ');
        }
        let mut len = [0u8; 20];
        bytes.extend_from_slice(usize_text(self.payload.len(), &mut len));
        bytes.extend_from_slice(b"\r\n");
        t.whole = self.payload.len() <= TEMPLATE_PAYLOAD_MAX;
        if t.whole {
            bytes.extend_from_slice(self.payload);
            bytes.extend_from_slice(b"\r\n");
        }
    }

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
        if let Some(t) = self.template() {
            put(buf, &t.bytes[..t.pre]);
            put(buf, &sub.sid);
            put(buf, &t.bytes[t.pre..]);
            if !t.whole {
                put(buf, self.payload);
                put(buf, b"\r\n");
            }
            return;
        }
        let (hdr, body) = self.wire_form(sub);
        put(buf, if hdr.is_some() { b"HMSG " } else { b"MSG " });
        put(buf, self.subject);
        buf.push(b' ');
        put(buf, &sub.sid);
        buf.push(b' ');
        if let Some(r) = self.reply {
            put(buf, r);
            buf.push(b' ');
        }
        if let Some(h) = hdr {
            put_usize(buf, h);
            buf.push(b' ');
        }
        put_usize(buf, body.len());
        put(buf, b"\r\n");
        put(buf, body);
        put(buf, b"\r\n");
    }
}

/// What delivery touches besides the match result.
pub struct Targets<'a> {
    pub sublist: &'a Sublist<Subscription>,
    pub batch: &'a mut WakeBatch,
    pub rng: &'a mut SmallRng,
    /// Routes to tell when a local subscription reaches its auto-unsubscribe limit.
    pub cluster: Option<&'a Cluster>,
    /// A 1.0 route's message on its way to 2.x routes, held to merge with its `QRSID`
    /// twins (see [`route::Held`]); `None` everywhere else.
    pub held: Option<&'a mut route::Held>,
}

/// Where a message entered this server.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// From a local client; `skip` is its own queue when it asked for no echo.
    Client { skip: Option<&'a Arc<Outbound>> },
    /// From a route speaking `dialect`. `queues` names the queue groups the sender asks this
    /// server to serve, separated by blanks (a 2.x queue list; empty: none).
    Route { dialect: Dialect, queues: &'a [u8] },
}

/// What one route gets for one message: its first plain subscription that matched, and the
/// queue members chosen behind it.
pub struct RouteTarget<'r> {
    pub out: &'r Arc<Outbound>,
    pub plain: Option<&'r Arc<Subscription>>,
    pub queues: SmallVec<[&'r Arc<Subscription>; 2]>,
}

type RouteTargets<'r> = SmallVec<[RouteTarget<'r>; 4]>;

fn target_for<'t, 'r>(
    routes: &'t mut RouteTargets<'r>,
    sub: &'r Arc<Subscription>,
) -> &'t mut RouteTarget<'r> {
    let i = match routes.iter().position(|t| Arc::ptr_eq(t.out, &sub.out)) {
        Some(i) => i,
        None => {
            routes.push(RouteTarget {
                out: &sub.out,
                plain: None,
                queues: SmallVec::new(),
            });
            routes.len() - 1
        }
    };
    &mut routes[i]
}

/// Delivers `msg` by the rules in the module doc. Returns how many subscriptions (a route
/// counting once) got it.
pub fn deliver(
    msg: &Message<'_>,
    result: &MatchResult<Subscription>,
    source: Source<'_>,
    env: &mut Targets<'_>,
) -> usize {
    let (skip, from, queues) = match source {
        Source::Client { skip } => (skip, None, None),
        Source::Route { dialect, queues } => (None, Some(dialect), Some(queues)),
    };
    let is_skipped = |sub: &Subscription| skip.is_some_and(|s| Arc::ptr_eq(s, &sub.out));
    let mut n = 0;
    let mut routes: RouteTargets<'_> = SmallVec::new();
    for sub in &result.plain {
        match sub.origin {
            Origin::Client { .. } => {
                if !is_skipped(sub) && deliver_one(msg, sub, env) {
                    n += 1;
                }
            }
            Origin::Route { dialect, .. } => {
                // One hop per cluster; one plain subscription per route.
                if from == Some(dialect) || sub.unavailable() {
                    continue;
                }
                let t = target_for(&mut routes, sub);
                if t.plain.is_none() {
                    t.plain = Some(sub);
                }
            }
        }
    }
    for group in &result.queues {
        let eligible = |s: &Subscription| match from {
            None => !is_skipped(s),
            Some(d) => s.origin.dialect() != Some(d),
        };
        if let Some(list) = queues {
            // From a route: only the groups it names (none for a 1.0 plain MSG).
            if !list
                .split(|&b| b == b' ' || b == b'\t')
                .any(|q| q == &*group.name)
            {
                continue;
            }
        }
        if deliver_to_group(msg, &group.members, eligible, env, &mut routes) {
            n += 1;
        }
    }
    for t in &routes {
        let absorbed = match env.held.as_deref_mut() {
            Some(held) => held.absorb(msg, t, holds_queue_member(result, t.out)),
            None => false,
        };
        let sent = absorbed || route::send_to_route(msg, t, env);
        if sent {
            n += 1;
        }
    }
    n
}

/// Whether a queue member behind the route `out` matched.
fn holds_queue_member(result: &MatchResult<Subscription>, out: &Arc<Outbound>) -> bool {
    result
        .queues
        .iter()
        .any(|g| g.members.iter().any(|m| Arc::ptr_eq(&m.out, out)))
}

/// Gives `msg` to one member of a queue group accepted by `eligible`: one picked at random
/// (weighted by [`Subscription::weight`]), or, if that one cannot take it (closing, past its
/// limit), the next, so the group does not lose it. A member behind a route is added to
/// `routes`. Returns whether a member got it.
fn deliver_to_group<'r>(
    msg: &Message<'_>,
    members: &'r [Arc<Subscription>],
    eligible: impl Fn(&Subscription) -> bool,
    env: &mut Targets<'_>,
    routes: &mut RouteTargets<'r>,
) -> bool {
    if members.is_empty() {
        return false;
    }
    let start = pick_weighted(members, &eligible, env.rng);
    (0..members.len()).any(|i| {
        let sub = &members[(start + i) % members.len()];
        if !eligible(sub) {
            return false;
        }
        match sub.origin {
            Origin::Client { .. } => deliver_one(msg, sub, env),
            Origin::Route { .. } => {
                if sub.unavailable() {
                    return false;
                }
                target_for(routes, sub).queues.push(sub);
                true
            }
        }
    })
}

/// A random index into `members`, each eligible member weighted by its weight (uniform when
/// all weigh 1).
fn pick_weighted(
    members: &[Arc<Subscription>],
    eligible: &impl Fn(&Subscription) -> bool,
    rng: &mut SmallRng,
) -> usize {
    let n = members.len();
    if n == 1 {
        return 0;
    }
    let total: u64 = members
        .iter()
        .filter(|m| eligible(m))
        .map(|m| u64::from(m.weight()))
        .sum();
    if total == 0 {
        return rng.gen_range(0..n);
    }
    let mut r = rng.gen_range(0..total);
    for (i, m) in members.iter().enumerate() {
        if !eligible(m) {
            continue;
        }
        let w = u64::from(m.weight());
        if r < w {
            return i;
        }
        r -= w;
    }
    n - 1
}

/// A `QRSID` message from a 1.0 route: exactly the named member (a local client's, or one
/// held for a route of the other dialect), or, when it is gone or cannot take it, another
/// member of the same group outside the 1.0 cluster (`group`, when the member is already
/// gone from the index). Returns whether a member got it.
pub fn deliver_to_member(
    msg: &Message<'_>,
    result: &MatchResult<Subscription>,
    cid: u64,
    sid: &[u8],
    gone_group: Option<&[u8]>,
    env: &mut Targets<'_>,
) -> bool {
    let outside = |s: &Subscription| s.origin.dialect() != Some(Dialect::V1);
    let named = |s: &Subscription| outside(s) && s.origin.cid() == cid && &*s.sid == sid;
    let found = result
        .queues
        .iter()
        .find_map(|g| g.members.iter().find(|s| named(s)).map(|s| (g, s)));
    let mut routes: RouteTargets<'_> = SmallVec::new();
    let group = match found {
        Some((g, sub)) => {
            if !sub.unavailable() {
                if sub.is_local() {
                    if deliver_one(msg, sub, env) {
                        return true;
                    }
                } else {
                    target_for(&mut routes, sub).queues.push(sub);
                    if env
                        .held
                        .as_deref_mut()
                        .is_some_and(|h| h.absorb(msg, &routes[0], false))
                    {
                        return true;
                    }
                    return route::send_to_route(msg, &routes[0], env);
                }
            }
            Some(g)
        }
        None => gone_group.and_then(|name| result.queues.iter().find(|g| &*g.name == name)),
    };
    let Some(g) = group else {
        return false;
    };
    if !deliver_to_group(msg, &g.members, outside, env, &mut routes) {
        return false;
    }
    for t in &routes {
        if !env
            .held
            .as_deref_mut()
            .is_some_and(|h| h.absorb(msg, t, false))
        {
            route::send_to_route(msg, t, env);
        }
    }
    true
}

#[inline]
pub(super) fn deliver_one(
    msg: &Message<'_>,
    sub: &Arc<Subscription>,
    env: &mut Targets<'_>,
) -> bool {
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
    if max > 0 && count == max && env.sublist.remove(sub) {
        // The limit is reached here: withdraw the interest from the routes at once, as
        // 1.0 does, rather than leaving them to count it down.
        if let Some(cluster) = env.cluster {
            route::withdraw(cluster, env.batch, sub, None);
        }
    }
    true
}

/// Whether no two of `subs` belong to the same connection.
pub(super) fn distinct_connections(subs: &[Arc<Subscription>]) -> bool {
    let key = |s: &Arc<Subscription>| Arc::as_ptr(&s.out) as usize;
    if subs.len() <= 32 {
        return subs
            .iter()
            .enumerate()
            .all(|(i, a)| subs[i + 1..].iter().all(|b| key(a) != key(b)));
    }
    let mut keys: Vec<usize> = subs.iter().map(key).collect();
    keys.sort_unstable();
    keys.windows(2).all(|w| w[0] != w[1])
}

/// Delivers a held run of messages to `subject` (see [`PubRun`]) to one local, plain
/// subscription: its share is written in one stretch, straight into its queue when
/// nothing is staged for it ([`WakeBatch::write_msgs`]). Returns whether it took them
/// (false when its connection is closing).
///
/// [`WakeBatch::write_msgs`]: crate::outbound::WakeBatch::write_msgs
pub(super) fn deliver_run(run: &PubRun, sub: &Arc<Subscription>, env: &mut Targets<'_>) -> bool {
    if sub.out.is_dead() {
        return false;
    }
    let n = run.len();
    if sub.max.load(Ordering::Relaxed) > 0 {
        // An auto-unsubscribe limit counts message by message.
        let mut any = false;
        for i in 0..n {
            any |= deliver_one(&run.message(i), sub, env);
        }
        return any;
    }
    // No limit set: as in `deliver_one`, a plain load and store.
    let c = sub.delivered.load(Ordering::Relaxed) + n as u64;
    sub.delivered.store(c, Ordering::Relaxed);
    let mut head = SmallVec::<[u8; 96]>::new();
    head.extend_from_slice(b"MSG ");
    head.extend_from_slice(run.subject());
    head.push(b' ');
    head.extend_from_slice(&sub.sid);
    let len = n * head.len() + run.tails_len();
    env.batch
        .write_msgs(&sub.out, len, n as u64, run.payload_bytes(), |b| {
            for tail in run.tails() {
                put(b, &head);
                put(b, tail);
            }
        });
    true
}

#[inline]
pub(crate) fn digits(mut n: usize) -> usize {
    if n < 10 {
        return 1;
    }
    if n < 100 {
        return 2;
    }
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
    put(buf, usize_text(n, &mut tmp));
}

/// Appends `src` to `buf`. A MSG line is a handful of short pieces (subject, sid, length,
/// CRLF, a small payload); copied inline they cost a few instructions each, where
/// `extend_from_slice` called `memcpy` for every piece (12-14 % of a 1:1 profile).
#[inline(always)]
pub(crate) fn put(buf: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    if n > 32 {
        buf.extend_from_slice(src);
        return;
    }
    buf.reserve(n);
    let len = buf.len();
    // SAFETY: after `reserve(n)` the `n` bytes after `len` are allocated and writable; every
    // read below is within `src[..n]` and every write within `dst[..n]` (the two overlapping
    // words of a 2..=32-byte copy both end at or before `n`), and all `n` bytes are written
    // before `set_len` makes them part of the vector.
    unsafe {
        let d = buf.as_mut_ptr().add(len);
        let s = src.as_ptr();
        if n >= 16 {
            let a = s.cast::<u128>().read_unaligned();
            let b = s.add(n - 16).cast::<u128>().read_unaligned();
            d.cast::<u128>().write_unaligned(a);
            d.add(n - 16).cast::<u128>().write_unaligned(b);
        } else if n >= 8 {
            let a = s.cast::<u64>().read_unaligned();
            let b = s.add(n - 8).cast::<u64>().read_unaligned();
            d.cast::<u64>().write_unaligned(a);
            d.add(n - 8).cast::<u64>().write_unaligned(b);
        } else if n >= 4 {
            let a = s.cast::<u32>().read_unaligned();
            let b = s.add(n - 4).cast::<u32>().read_unaligned();
            d.cast::<u32>().write_unaligned(a);
            d.add(n - 4).cast::<u32>().write_unaligned(b);
        } else if n >= 2 {
            let a = s.cast::<u16>().read_unaligned();
            let b = s.add(n - 2).cast::<u16>().read_unaligned();
            d.cast::<u16>().write_unaligned(a);
            d.add(n - 2).cast::<u16>().write_unaligned(b);
        } else if n == 1 {
            *d = *s;
        }
        buf.set_len(len + n);
    }
}

/// "00" to "99": two digits per step when writing a number.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `n` in decimal, written at the end of `tmp`, two digits per step (a payload size is
/// written once per lone delivery).
#[inline]
pub(crate) fn usize_text(n: usize, tmp: &mut [u8; 20]) -> &[u8] {
    let pair = |v: usize| &DIGIT_PAIRS[v * 2..v * 2 + 2];
    let mut i = tmp.len();
    let mut v = n;
    while v >= 100 {
        i -= 2;
        tmp[i..i + 2].copy_from_slice(pair(v % 100));
        v /= 100;
    }
    if v >= 10 {
        i -= 2;
        tmp[i..i + 2].copy_from_slice(pair(v));
    } else {
        i -= 1;
        tmp[i] = b'0' + v as u8;
    }
    &tmp[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_appends_every_length_exactly() {
        let src: Vec<u8> = (0..=40u8).collect();
        for n in 0..=40 {
            for lead in [0, 3] {
                let mut buf = vec![0xee; lead];
                put(&mut buf, &src[..n]);
                assert_eq!(buf.len(), lead + n);
                assert!(buf[..lead].iter().all(|&b| b == 0xee));
                assert_eq!(&buf[lead..], &src[..n], "{n} after {lead}");
            }
        }
    }

    #[test]
    fn sizes_are_written_in_decimal() {
        let mut cases: Vec<usize> = (0..=1000).collect();
        let mut p = 1usize;
        while let Some(next) = p.checked_mul(10) {
            cases.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        cases.extend([usize::MAX, usize::MAX - 1, 1 << 20, 64 * 1024 * 1024]);
        for n in cases {
            let mut tmp = [0u8; 20];
            let text = n.to_string();
            assert_eq!(usize_text(n, &mut tmp), text.as_bytes(), "{n}");
            assert_eq!(digits(n), text.len(), "{n}");
        }
    }
}
