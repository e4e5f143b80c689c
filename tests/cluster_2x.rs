//! Black-box tests of the nats-server 2.x route dialect: ringnats nodes routed with the real
//! nats-server 2.9.10 (Debian's `nats-server`, installed by the harness when missing; the
//! tests skip with a printed reason when it cannot be had), and a ringnats node bridging a
//! gnatsd 1.0 cluster and a nats-server 2.x cluster.
//!
//! Waits are on events (a probe message, a PONG), each bounded.

#[path = "common/cluster.rs"]
mod harness;

use harness::*;
use std::time::Duration;

fn nats(name: &str, test: &str) -> Option<NodeConfig> {
    let bin = nats_server_or_skip(test)?;
    Some(NodeConfig::new(name, Kind::NatsServer(bin)))
}

fn check(nodes: &[Node]) {
    let r = refs(nodes);
    wait_full_mesh(&r);
    assert_exactly_once_all_pairs(&r, 100);
    assert_queue_exactly_once(&r, 2, 200);
}

#[test]
fn ringnats_solicits_nats_server() {
    let Some(ncfg) = nats("N", "ringnats_solicits_nats_server") else {
        return;
    };
    let n = Node::start(ncfg);
    let mut cfg = NodeConfig::ringnats("R");
    cfg.routes = vec![n.cfg.route_url()];
    let r = Node::start(cfg);
    check(&[r, n]);
}

#[test]
fn nats_server_solicits_ringnats() {
    let Some(mut ncfg) = nats("N", "nats_server_solicits_ringnats") else {
        return;
    };
    let r = Node::start(NodeConfig::ringnats("R"));
    ncfg.routes = vec![r.cfg.route_url()];
    let n = Node::start(ncfg);
    check(&[r, n]);
}

#[test]
fn ringnats_with_a_cluster_name_solicits_nats_server() {
    let Some(ncfg) = nats("N", "ringnats_with_a_cluster_name_solicits_nats_server") else {
        return;
    };
    let n = Node::start(ncfg);
    let mut cfg = NodeConfig::ringnats("R");
    cfg.cluster_name = Some(CLUSTER_NAME.into());
    cfg.routes = vec![n.cfg.route_url()];
    let r = Node::start(cfg);
    check(&[r, n]);
}

/// ringnats with another cluster's name is refused by nats-server, and refuses it.
#[test]
fn cluster_name_mismatch_keeps_the_route_down() {
    let Some(ncfg) = nats("N", "cluster_name_mismatch_keeps_the_route_down") else {
        return;
    };
    let n = Node::start(ncfg);
    let mut cfg = NodeConfig::ringnats("R");
    cfg.cluster_name = Some("other".into());
    cfg.routes = vec![n.cfg.route_url()];
    let r = Node::start(cfg);
    let line = r
        .wait_log("does not match", ROUTE_WAIT)
        .expect("the mismatch is logged");
    assert!(
        line.contains("Rejecting connection, cluster name"),
        "{line}"
    );
    let mut p = n.client();
    let mut s = r.client();
    s.sub("x", "1");
    s.flush();
    for _ in 0..20 {
        p.publish("x", b"nope");
    }
    p.flush();
    assert!(s.next_msg(Duration::from_millis(300)).is_none());
}

fn mesh_r_n_n(test: &str) -> Option<Vec<Node>> {
    let bin = nats_server_or_skip(test)?;
    Some(start_mesh(&[
        Kind::NatsServer(bin.clone()),
        Kind::Ringnats,
        Kind::NatsServer(bin),
    ]))
}

#[test]
fn mesh_of_ringnats_and_two_nats_servers() {
    let Some(nodes) = mesh_r_n_n("mesh_of_ringnats_and_two_nats_servers") else {
        return;
    };
    check(&nodes);
}

#[test]
fn unsubscribe_propagates_between_ringnats_and_nats_server() {
    let Some(nodes) = mesh_r_n_n("unsubscribe_propagates_between_ringnats_and_nats_server") else {
        return;
    };
    wait_full_mesh(&refs(&nodes));
    for (sub_at, pub_at) in [(1, 0), (0, 1), (1, 2)] {
        let (x, y) = (&nodes[sub_at], &nodes[pub_at]);
        let subject = unique("u");
        let mut s = x.client();
        s.sub(&subject, "1");
        s.qsub(&subject, "g", "2");
        s.flush();
        let mut p = y.client();
        wait_path(&mut p, &mut s);
        p.publish(&subject, b"before");
        p.flush();
        let mut got: Vec<String> = s.expect_msgs(2).iter().map(|m| m.sid.clone()).collect();
        got.sort();
        assert_eq!(got, ["1", "2"], "{} -> {}", y.name(), x.name());
        s.unsub("1");
        s.unsub("2");
        // The sentinel's interest travels behind the withdrawals, on the same route.
        wait_path(&mut p, &mut s);
        p.publish(&subject, b"after");
        p.flush();
        s.expect_no_more();
        assert!(
            s.next_msg(Duration::from_millis(200)).is_none(),
            "{} -> {}: interest withdrawn",
            y.name(),
            x.name()
        );
    }
}

#[test]
fn nats_server_node_restarts_and_rejoins() {
    let Some(mut nodes) = mesh_r_n_n("nats_server_node_restarts_and_rejoins") else {
        return;
    };
    wait_full_mesh(&refs(&nodes));
    nodes[0].kill();
    {
        let rest = [&nodes[1], &nodes[2]];
        wait_full_mesh(&rest);
        assert_exactly_once_all_pairs(&rest, 50);
    }
    nodes[0].restart();
    check(&nodes);
}

/// A gnatsd 1.0 cluster and a nats-server 2.x cluster joined by one ringnats node.
#[test]
fn ringnats_bridges_gnatsd_1_0_and_nats_server_2x() {
    let Some(g) = gnatsd_or_skip("ringnats_bridges_gnatsd_1_0_and_nats_server_2x") else {
        return;
    };
    let Some(ncfg) = nats("N", "ringnats_bridges_gnatsd_1_0_and_nats_server_2x") else {
        return;
    };
    let gn = Node::start(NodeConfig::new("G", Kind::Gnatsd(g)));
    let n = Node::start(ncfg);
    let mut cfg = NodeConfig::ringnats("R");
    cfg.routes = vec![gn.cfg.route_url(), n.cfg.route_url()];
    let r = Node::start(cfg);
    let nodes = [gn, r, n];
    let all = refs(&nodes);
    wait_full_mesh(&all);
    assert_exactly_once_all_pairs(&all, 100);
    assert_queue_exactly_once(&all, 1, 300);
    // The ends alone: each cluster sees the other's subscribers as the bridge's interest.
    let ends = [&nodes[0], &nodes[2]];
    assert_exactly_once_all_pairs(&ends, 100);
    assert_plain_and_queue_behind_bridge_once(&nodes[0], &nodes[2], 200);
}

/// A plain and a queue subscriber on the same subject at `far`, messages published at
/// `near` on the other side of the bridge: gnatsd 1.0 sends each as two MSGs (plain, then
/// the queue member's), which must not reach the plain subscriber twice.
fn assert_plain_and_queue_behind_bridge_once(near: &Node, far: &Node, m: usize) {
    let subject = unique("pq");
    let mut plain = far.client();
    plain.sub(&subject, "1");
    plain.flush();
    let mut member = far.client();
    member.qsub(&subject, "workers", "1");
    member.flush();
    let mut subs = vec![plain, member];
    let mut pubs = vec![near.client()];
    wait_paths(&mut pubs, &mut subs);
    let results = gather(subs, 2 * m, || {
        pubs[0].publish_ids(&subject, "G:", 0..m);
        pubs[0].flush();
    });
    for (i, (mut c, got)) in results.into_iter().enumerate() {
        let ids: Vec<usize> = got.iter().map(|msg| origin_and_id(msg).1).collect();
        assert_eq!(
            ids,
            (0..m).collect::<Vec<_>>(),
            "{} subscriber: every message once, in order",
            ["plain", "queue"][i]
        );
        c.expect_no_more();
    }
}

mod async_clients {
    use super::*;
    use futures::StreamExt;
    use tokio::time::timeout;

    const T: Duration = Duration::from_secs(10);

    async fn connect(n: &Node) -> async_nats::Client {
        async_nats::connect(n.cfg.client_url())
            .await
            .expect("connect")
    }

    /// Requests with headers, each way between ringnats and nats-server: the headers
    /// cross the 2.x route (HMSG) and so does the reply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn request_reply_with_headers_across_a_2x_route() {
        let Some(ncfg) = nats("N", "request_reply_with_headers_across_a_2x_route") else {
            return;
        };
        let nodes = tokio::task::block_in_place(|| {
            let n = Node::start(ncfg);
            let mut cfg = NodeConfig::ringnats("R");
            cfg.routes = vec![n.cfg.route_url()];
            let r = Node::start(cfg);
            wait_full_mesh(&[&r, &n]);
            vec![r, n]
        });
        for (req_at, svc_at) in [(0, 1), (1, 0)] {
            let requester = connect(&nodes[req_at]).await;
            let responder = connect(&nodes[svc_at]).await;
            let subject = unique("hsvc");
            let mut svc = responder
                .queue_subscribe(subject.clone(), "svc".into())
                .await
                .unwrap();
            responder.flush().await.unwrap();
            let r = responder.clone();
            tokio::spawn(async move {
                while let Some(m) = svc.next().await {
                    let Some(reply) = m.reply else { continue };
                    let id = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Req-Id").map(|v| v.to_string()))
                        .unwrap_or_default();
                    let mut h = async_nats::HeaderMap::new();
                    h.insert("Resp-Id", id.as_str());
                    let body = format!("echo:{}", String::from_utf8_lossy(&m.payload));
                    r.publish_with_headers(reply, h, body.into()).await.unwrap();
                }
            });
            // Until the service's interest has crossed the route.
            let mut ready = false;
            for _ in 0..200 {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Req-Id", "probe");
                let r = timeout(
                    Duration::from_millis(200),
                    requester.request_with_headers(subject.clone(), h, "p".into()),
                )
                .await;
                if matches!(r, Ok(Ok(_))) {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(ready, "service reachable from {}", nodes[req_at].name());
            for i in 0..30 {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Req-Id", format!("r{i}").as_str());
                let resp = timeout(
                    T,
                    requester.request_with_headers(subject.clone(), h, format!("{i}").into()),
                )
                .await
                .expect("reply in time")
                .expect("reply");
                assert_eq!(resp.payload, format!("echo:{i}").as_bytes());
                let got = resp
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Resp-Id").map(|v| v.to_string()));
                assert_eq!(got.as_deref(), Some(format!("r{i}").as_str()));
            }
        }
    }
}
