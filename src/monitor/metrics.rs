//! `/metrics`: Prometheus text exposition format 0.0.4, every family with HELP and TYPE.
//!
//! Server-wide figures, one series per route, and per reactor what only a thread-per-core
//! io_uring server can tell: loop iterations, completions and submits (their ratio is the
//! completions per `io_uring_enter`), messages and sends (messages per send), wake-ups from
//! other cores, provided-buffer exhaustion and paused publishers.

use crate::shared::Shared;
use crate::stats::{ConnSnapshot, LocalStats};
use crate::sublist::SublistStats;
use std::fmt::Write;
use std::time::SystemTime;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Text being built, one family at a time.
struct Text {
    out: String,
}

#[derive(Clone, Copy)]
enum Type {
    Counter,
    Gauge,
}

impl Text {
    fn family(&mut self, name: &str, kind: Type, help: &str) {
        let kind = match kind {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Type, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A float in the format's spelling (`NaN`, `+Inf` never occur here).
fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// What `/metrics` shows besides the shared state.
pub struct Inputs<'a> {
    pub routes: &'a [ConnSnapshot],
    pub sublist: SublistStats,
    pub http_requests: &'a [(&'static str, u64)],
    pub now: SystemTime,
}

pub fn render(shared: &Shared, inputs: &Inputs<'_>) -> String {
    let mut t = Text {
        out: String::with_capacity(8 * 1024),
    };
    let per_reactor: Vec<LocalStats> = shared.stats.iter().map(|s| s.load()).collect();
    let mut total = LocalStats::default();
    for s in &per_reactor {
        total.add(s);
    }
    let uptime = inputs
        .now
        .duration_since(shared.started_wall)
        .unwrap_or_default();
    let start = shared
        .started_wall
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();

    t.family(
        "ringnats_info",
        Type::Gauge,
        "Server identity; the value is always 1.",
    );
    t.sample(
        "ringnats_info",
        &[
            ("server_id", &shared.server_id),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    t.single(
        "ringnats_start_time_seconds",
        Type::Gauge,
        "Start time of the server since the Unix epoch, in seconds.",
        float(start.as_secs_f64()),
    );
    t.single(
        "ringnats_uptime_seconds",
        Type::Gauge,
        "Seconds since the server started.",
        float(uptime.as_secs_f64()),
    );
    t.single(
        "ringnats_connections",
        Type::Gauge,
        "Client connections open now.",
        shared.conn_count.load(std::sync::atomic::Ordering::Relaxed),
    );
    t.single(
        "ringnats_connections_total",
        Type::Counter,
        "Client connections accepted since start.",
        total.clients_accepted,
    );
    t.single(
        "ringnats_in_msgs_total",
        Type::Counter,
        "Messages received from clients and routes.",
        total.in_msgs,
    );
    t.single(
        "ringnats_out_msgs_total",
        Type::Counter,
        "Messages sent to clients and routes (one per subscriber copy).",
        total.out_msgs,
    );
    t.single(
        "ringnats_in_bytes_total",
        Type::Counter,
        "Payload bytes received from clients and routes.",
        total.in_bytes,
    );
    t.single(
        "ringnats_out_bytes_total",
        Type::Counter,
        "Payload bytes sent to clients and routes.",
        total.out_bytes,
    );
    t.single(
        "ringnats_slow_consumers_total",
        Type::Counter,
        "Connections closed as slow consumers.",
        total.slow_consumers,
    );
    t.single(
        "ringnats_subscriptions",
        Type::Gauge,
        "Subscriptions in the index, including those held for routes.",
        inputs.sublist.num_subscriptions,
    );
    t.single(
        "ringnats_subscription_cache_entries",
        Type::Gauge,
        "Subjects in the subscription match cache.",
        inputs.sublist.num_cache,
    );
    t.single(
        "ringnats_subscription_matches_total",
        Type::Counter,
        "Subject lookups in the subscription index.",
        inputs.sublist.num_matches,
    );
    t.single(
        "ringnats_subscription_cache_hits_total",
        Type::Counter,
        "Subject lookups answered by the match cache.",
        inputs.sublist.cache_hits,
    );
    t.single(
        "ringnats_routes",
        Type::Gauge,
        "Registered cluster routes.",
        shared.cluster.as_ref().map_or(0, |c| c.route_count()),
    );

    route_families(&mut t, inputs.routes);
    reactor_families(&mut t, &per_reactor);

    t.family(
        "ringnats_http_requests_total",
        Type::Counter,
        "Requests served by the monitoring port, by path.",
    );
    for (path, n) in inputs.http_requests {
        t.sample("ringnats_http_requests_total", &[("path", path)], n);
    }
    t.out
}

fn route_families(t: &mut Text, routes: &[ConnSnapshot]) {
    type Field = fn(&ConnSnapshot) -> u64;
    let families: [(&str, &str, Field); 4] = [
        (
            "ringnats_route_in_msgs_total",
            "Messages received from a route.",
            |c| c.stats.in_msgs,
        ),
        (
            "ringnats_route_out_msgs_total",
            "Messages sent to a route.",
            |c| c.stats.out_msgs,
        ),
        (
            "ringnats_route_in_bytes_total",
            "Payload bytes received from a route.",
            |c| c.stats.in_bytes,
        ),
        (
            "ringnats_route_out_bytes_total",
            "Payload bytes sent to a route.",
            |c| c.stats.out_bytes,
        ),
    ];
    for (name, help, field) in families {
        t.family(name, Type::Counter, help);
        for r in routes {
            let rid = r.cid.to_string();
            let remote = r.route.as_ref().map_or("", |x| x.remote_id.as_str());
            t.sample(name, &[("rid", &rid), ("remote_id", remote)], field(r));
        }
    }
    t.family(
        "ringnats_route_subscriptions",
        Type::Gauge,
        "Subscriptions a route's remote server registered here.",
    );
    for r in routes {
        let rid = r.cid.to_string();
        let remote = r.route.as_ref().map_or("", |x| x.remote_id.as_str());
        t.sample(
            "ringnats_route_subscriptions",
            &[("rid", &rid), ("remote_id", remote)],
            r.subscriptions,
        );
    }
}

fn reactor_families(t: &mut Text, per_reactor: &[LocalStats]) {
    type Field = fn(&LocalStats) -> u64;
    let families: [(&str, Type, &str, Field); 16] = [
        (
            "ringnats_reactor_loop_iterations_total",
            Type::Counter,
            "Event loop iterations of a reactor.",
            |s| s.iterations,
        ),
        (
            "ringnats_reactor_completions_total",
            Type::Counter,
            "io_uring completions reaped (divide by submits for completions per submit).",
            |s| s.completions,
        ),
        (
            "ringnats_reactor_submits_total",
            Type::Counter,
            "io_uring_enter calls (submit and wait).",
            |s| s.submits,
        ),
        (
            "ringnats_reactor_sends_total",
            Type::Counter,
            "Send operations started (divide out_msgs by sends for messages per send).",
            |s| s.sends,
        ),
        (
            "ringnats_reactor_send_bytes_total",
            Type::Counter,
            "Bytes handed to send operations (divide by sends for bytes per send).",
            |s| s.send_bytes,
        ),
        (
            "ringnats_reactor_direct_sends_total",
            Type::Counter,
            "Sends made on another, sleeping reactor's connection instead of waking it.",
            |s| s.direct_sends,
        ),
        (
            "ringnats_reactor_out_msgs_total",
            Type::Counter,
            "Messages sent to connections this reactor owns.",
            |s| s.out_msgs,
        ),
        (
            "ringnats_reactor_in_msgs_total",
            Type::Counter,
            "Messages received on connections this reactor owns.",
            |s| s.in_msgs,
        ),
        (
            "ringnats_reactor_wakeups_total",
            Type::Counter,
            "Wake-ups of a sleeping reactor by another thread (cross-core eventfd writes).",
            |s| s.wakeups,
        ),
        (
            "ringnats_reactor_recv_enobufs_total",
            Type::Counter,
            "Receives that found the provided-buffer ring empty (ENOBUFS).",
            |s| s.enobufs,
        ),
        (
            "ringnats_reactor_publisher_pauses_total",
            Type::Counter,
            "Times a publisher was paused behind a backed-up subscriber.",
            |s| s.publisher_pauses,
        ),
        (
            "ringnats_reactor_paused_publishers",
            Type::Gauge,
            "Publishers paused now.",
            |s| s.paused_publishers,
        ),
        (
            "ringnats_reactor_slow_consumers_total",
            Type::Counter,
            "Connections of this reactor closed as slow consumers.",
            |s| s.slow_consumers,
        ),
        (
            "ringnats_reactor_connections",
            Type::Gauge,
            "Connections (clients and routes) this reactor owns now.",
            |s| s.connections,
        ),
        (
            "ringnats_reactor_clients_accepted_total",
            Type::Counter,
            "Client connections this reactor accepted.",
            |s| s.clients_accepted,
        ),
        (
            "ringnats_reactor_snapshots_total",
            Type::Counter,
            "Connection snapshots this reactor made for /connz, /routez and /metrics.",
            |s| s.snapshots,
        ),
    ];
    for (name, kind, help, field) in families {
        t.family(name, kind, help);
        for (i, s) in per_reactor.iter().enumerate() {
            t.sample(name, &[("reactor", &i.to_string())], field(s));
        }
    }
    t.family(
        "ringnats_reactor_snapshot_seconds_total",
        Type::Counter,
        "Time this reactor spent on connection snapshots (its data path paused meanwhile).",
    );
    for (i, s) in per_reactor.iter().enumerate() {
        t.sample(
            "ringnats_reactor_snapshot_seconds_total",
            &[("reactor", &i.to_string())],
            float(s.snapshot_ns as f64 / 1e9),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut t = Text { out: String::new() };
        t.family("x_total", Type::Counter, "An x.");
        t.sample("x_total", &[("a", "1"), ("b", "q\"")], 5);
        assert_eq!(
            t.out,
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"1\",b=\"q\\\"\"} 5\n"
        );
    }
}
