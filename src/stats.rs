//! Counters and connection snapshots for the monitoring port, below the reactors.
//!
//! **Counters.** Each reactor counts into a plain [`LocalStats`] (no atomics, no sharing)
//! and, once per loop iteration, copies it into its own cache-line-aligned [`ReactorStats`]
//! with relaxed stores. Nothing else writes a reactor's block; a monitoring request loads
//! every block and sums. So the data path pays a few plain adds per batch and ~20 stores per
//! loop iteration, never a locked read-modify-write per message.
//!
//! **Snapshots.** Per-connection figures live with the connection (`Connection::stats`),
//! owned by one reactor. `/connz` and `/routez` ask every reactor for a
//! [`ReactorSnapshot`] through its mailbox ([`SnapshotRequest`]); each reactor answers
//! between two loop iterations with its connections already cut to the page asked for
//! ([`select`]), and the monitor merges the answers.
//!
//! This module holds only data and pure functions: no sockets, no threads, no clock.

use std::cmp::Ordering as CmpOrdering;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

macro_rules! reactor_stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// One reactor's running totals, owned by that reactor alone (plain integers).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct LocalStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The published copy of a reactor's [`LocalStats`]: written only by that reactor
        /// (relaxed stores once per loop iteration), read by the monitor.
        #[repr(align(128))]
        #[derive(Debug, Default)]
        pub struct ReactorStats {
            $($name: AtomicU64,)*
        }

        impl LocalStats {
            /// Copies every counter into `to` (owner only; plain stores, no RMW).
            #[inline]
            pub fn publish(&self, to: &ReactorStats) {
                $(to.$name.store(self.$name, Ordering::Relaxed);)*
            }

            /// Field-wise sum, for server-wide totals.
            pub fn add(&mut self, other: &LocalStats) {
                $(self.$name += other.$name;)*
            }
        }

        impl ReactorStats {
            /// The last published values.
            pub fn load(&self) -> LocalStats {
                LocalStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

reactor_stats! {
    /// Event loop iterations.
    iterations,
    /// Completions reaped.
    completions,
    /// `io_uring_enter` calls that submitted (and possibly waited).
    submits,
    /// Wake-ups from other threads (eventfd reads completed).
    wakeups,
    /// Multishot receives that ended because the provided-buffer ring ran dry (ENOBUFS).
    enobufs,
    /// Times a publisher was paused because a subscriber was backed up.
    publisher_pauses,
    /// Publishers paused right now (a gauge).
    paused_publishers,
    /// Send operations started.
    sends,
    /// Bytes handed to those sends (divide by sends for bytes per send).
    send_bytes,
    /// Sends this reactor made itself on another (sleeping) reactor's connections.
    direct_sends,
    /// Messages received from clients and routes owned by this reactor.
    in_msgs,
    /// Payload bytes of those messages.
    in_bytes,
    /// Messages this reactor sent: to its own connections (counted when a send takes them)
    /// and, by direct sends, to other reactors' connections.
    out_msgs,
    /// Payload bytes of those messages.
    out_bytes,
    /// Connections closed as slow consumers.
    slow_consumers,
    /// Client connections accepted.
    clients_accepted,
    /// Connections (clients and routes) open on this reactor right now (a gauge).
    connections,
    /// Monitoring snapshot requests answered.
    snapshots,
    /// Time spent answering them, in nanoseconds (the data path's pause for monitoring).
    snapshot_ns,
}

/// Per-connection counters, kept by the owning reactor (plain integers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnStats {
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub start: Instant,
    /// Last time data was read from or messages were sent to the connection.
    pub last_activity: Instant,
}

impl ConnStats {
    pub fn new(now: Instant) -> Self {
        ConnStats {
            in_msgs: 0,
            in_bytes: 0,
            out_msgs: 0,
            out_bytes: 0,
            start: now,
            last_activity: now,
        }
    }
}

/// `/connz` sort keys: gnatsd 1.0's names. All but `cid` sort in descending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Cid,
    Subs,
    Pending,
    /// `msgs_to`: messages sent to the client.
    OutMsgs,
    /// `msgs_from`: messages received from the client.
    InMsgs,
    /// `bytes_to`
    OutBytes,
    /// `bytes_from`
    InBytes,
    /// `last`: most recent activity first.
    Last,
    /// `idle`: longest idle first.
    Idle,
}

impl SortKey {
    /// Parses gnatsd 1.0's `sort` values (`uptime` sorts like `cid`, as in 1.0).
    pub fn parse(s: &str) -> Option<SortKey> {
        Some(match s {
            "" | "cid" | "uptime" => SortKey::Cid,
            "subs" => SortKey::Subs,
            "pending" => SortKey::Pending,
            "msgs_to" => SortKey::OutMsgs,
            "msgs_from" => SortKey::InMsgs,
            "bytes_to" => SortKey::OutBytes,
            "bytes_from" => SortKey::InBytes,
            "last" => SortKey::Last,
            "idle" => SortKey::Idle,
            _ => return None,
        })
    }

    /// Total order on snapshots: the key, then the cid ascending (stable pages).
    pub fn cmp(self, a: &ConnSnapshot, b: &ConnSnapshot) -> CmpOrdering {
        let by = match self {
            SortKey::Cid => CmpOrdering::Equal,
            SortKey::Subs => b.subscriptions.cmp(&a.subscriptions),
            SortKey::Pending => b.pending_bytes.cmp(&a.pending_bytes),
            SortKey::OutMsgs => b.stats.out_msgs.cmp(&a.stats.out_msgs),
            SortKey::InMsgs => b.stats.in_msgs.cmp(&a.stats.in_msgs),
            SortKey::OutBytes => b.stats.out_bytes.cmp(&a.stats.out_bytes),
            SortKey::InBytes => b.stats.in_bytes.cmp(&a.stats.in_bytes),
            SortKey::Last => b.stats.last_activity.cmp(&a.stats.last_activity),
            SortKey::Idle => a.stats.last_activity.cmp(&b.stats.last_activity),
        };
        by.then(a.cid.cmp(&b.cid))
    }
}

/// Which connections a snapshot covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotKind {
    /// Client connections (`/connz`).
    Clients,
    /// Registered routes (`/routez`, `/metrics`).
    Routes,
}

/// What the monitor asks each reactor for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotQuery {
    pub kind: SnapshotKind,
    pub sort: SortKey,
    /// Connections to return at most, the first ones in `sort` order (offset + limit).
    pub keep: usize,
    /// Fill `subscriptions_list`.
    pub subs: bool,
    /// Only this connection (`/connz?cid=`).
    pub cid: Option<u64>,
}

/// What a route adds to its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSnapshot {
    pub remote_id: String,
    pub did_solicit: bool,
    pub is_configured: bool,
}

/// One connection as the monitor shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSnapshot {
    pub cid: u64,
    /// The owning reactor's key for the connection (not shown).
    pub token: u64,
    pub peer: SocketAddr,
    pub stats: ConnStats,
    /// Bytes queued and not yet written to the socket.
    pub pending_bytes: usize,
    pub subscriptions: usize,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    /// The user name it authenticated with (user/password auth only).
    pub authorized_user: Option<String>,
    /// Subjects of its subscriptions, when asked for.
    pub subscriptions_list: Option<Vec<String>>,
    pub route: Option<RouteSnapshot>,
}

/// One reactor's answer.
#[derive(Debug, Clone, Default)]
pub struct ReactorSnapshot {
    pub reactor: usize,
    /// Connections of the asked kind on this reactor, before cutting to `keep`.
    pub total: usize,
    /// At most `keep` of them, in sort order.
    pub conns: Vec<ConnSnapshot>,
}

/// A snapshot request and where its answer goes. `reply` is called once, on the reactor
/// thread; dropping the request unanswered is how a reactor says it will not answer.
pub struct SnapshotRequest {
    pub query: SnapshotQuery,
    pub reply: Box<dyn FnOnce(ReactorSnapshot) + Send>,
}

impl std::fmt::Debug for SnapshotRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotRequest")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// Keeps the first `keep` connections in `key` order, sorted. O(n) selection plus a sort
/// of what is kept, so a reactor with many connections answers a small page cheaply.
pub fn select(conns: &mut Vec<ConnSnapshot>, key: SortKey, keep: usize) {
    if keep == 0 {
        conns.clear();
        return;
    }
    if conns.len() > keep {
        conns.select_nth_unstable_by(keep - 1, |a, b| key.cmp(a, b));
        conns.truncate(keep);
    }
    conns.sort_unstable_by(|a, b| key.cmp(a, b));
}

/// Merges the reactors' answers into one page: `(total, page)`.
pub fn merge(
    answers: Vec<ReactorSnapshot>,
    key: SortKey,
    offset: usize,
    limit: usize,
) -> (usize, Vec<ConnSnapshot>) {
    let total = answers.iter().map(|a| a.total).sum();
    let mut all: Vec<ConnSnapshot> = answers.into_iter().flat_map(|a| a.conns).collect();
    select(&mut all, key, offset.saturating_add(limit));
    let page = all.into_iter().skip(offset).take(limit).collect();
    (total, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn conn(cid: u64, subs: usize, out_msgs: u64, last_ms: u64, base: Instant) -> ConnSnapshot {
        let mut stats = ConnStats::new(base);
        stats.out_msgs = out_msgs;
        stats.last_activity = base + Duration::from_millis(last_ms);
        ConnSnapshot {
            cid,
            token: cid,
            peer: SocketAddr::from(([127, 0, 0, 1], 1000 + cid as u16)),
            stats,
            pending_bytes: 0,
            subscriptions: subs,
            name: None,
            lang: None,
            version: None,
            authorized_user: None,
            subscriptions_list: None,
            route: None,
        }
    }

    fn cids(v: &[ConnSnapshot]) -> Vec<u64> {
        v.iter().map(|c| c.cid).collect()
    }

    #[test]
    fn sort_keys_are_gnatsd_names() {
        for (name, key) in [
            ("cid", SortKey::Cid),
            ("uptime", SortKey::Cid),
            ("subs", SortKey::Subs),
            ("pending", SortKey::Pending),
            ("msgs_to", SortKey::OutMsgs),
            ("msgs_from", SortKey::InMsgs),
            ("bytes_to", SortKey::OutBytes),
            ("bytes_from", SortKey::InBytes),
            ("last", SortKey::Last),
            ("idle", SortKey::Idle),
        ] {
            assert_eq!(SortKey::parse(name), Some(key), "{name}");
        }
        assert_eq!(SortKey::parse("CID"), None, "case matters, as in 1.0");
        assert_eq!(SortKey::parse("start"), None);
    }

    #[test]
    fn select_keeps_the_first_in_order_with_cid_tiebreak() {
        let t = Instant::now();
        let mut v: Vec<_> = (1..=10)
            .rev()
            .map(|cid| conn(cid, (cid % 3) as usize, 0, 0, t))
            .collect();
        select(&mut v, SortKey::Subs, 4);
        // subs 2: cids 2,5,8; subs 1: 1,4,7,10.
        assert_eq!(cids(&v), vec![2, 5, 8, 1]);
        let mut v: Vec<_> = (1..=5).map(|cid| conn(cid, 0, 0, cid * 10, t)).collect();
        select(&mut v, SortKey::Idle, 10);
        assert_eq!(cids(&v), vec![1, 2, 3, 4, 5], "longest idle first");
        select(&mut v, SortKey::Last, 2);
        assert_eq!(cids(&v), vec![5, 4]);
        select(&mut v, SortKey::Cid, 0);
        assert!(v.is_empty());
    }

    #[test]
    fn merge_pages_across_reactors() {
        let t = Instant::now();
        // Two reactors, cids interleaved, each already cut to offset + limit = 5.
        let answer = |r: usize, cids: Vec<u64>| {
            let mut conns: Vec<_> = cids.iter().map(|&c| conn(c, 0, c, 0, t)).collect();
            let total = conns.len();
            select(&mut conns, SortKey::OutMsgs, 5);
            ReactorSnapshot {
                reactor: r,
                total,
                conns,
            }
        };
        let answers = vec![
            answer(0, (1..=20).filter(|c| c % 2 == 0).collect()),
            answer(1, (1..=20).filter(|c| c % 2 == 1).collect()),
        ];
        let (total, page) = merge(answers, SortKey::OutMsgs, 2, 3);
        assert_eq!(total, 20);
        assert_eq!(cids(&page), vec![18, 17, 16]);
    }

    #[test]
    fn publish_copies_every_counter() {
        let local = LocalStats {
            iterations: 3,
            in_msgs: 7,
            connections: 2,
            ..LocalStats::default()
        };
        let shared = ReactorStats::default();
        local.publish(&shared);
        assert_eq!(shared.load(), local);
        let mut sum = local;
        sum.add(&local);
        assert_eq!(sum.in_msgs, 14);
    }
}
