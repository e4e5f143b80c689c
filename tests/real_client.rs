//! Tests with the official Rust client, async-nats: what a real application sees.

mod common;
use common::*;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn client(addr: std::net::SocketAddr) -> async_nats::Client {
    timeout(T, async_nats::connect(format!("nats://{addr}")))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Returns once the server has read everything `c` sent so far, its SUBs included (so
/// another connection's publish finds them): async-nats' `flush` only writes the client's
/// buffer out. A request nobody answers comes back (no responders) only after that.
async fn synced(c: &async_nats::Client) {
    let err = timeout(T, c.request("sync.nobody", "".into()))
        .await
        .expect("no-responders answer in time")
        .expect_err("nobody answers");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_and_wildcards() {
    let srv = start();
    let nc = client(srv.addr).await;
    let mut exact = nc.subscribe("orders.eu.new").await.unwrap();
    let mut star = nc.subscribe("orders.*.new").await.unwrap();
    let mut tail = nc.subscribe("orders.>").await.unwrap();
    nc.flush().await.unwrap();
    nc.publish("orders.eu.new", "a".into()).await.unwrap();
    nc.publish("orders.us.new", "b".into()).await.unwrap();
    nc.publish("orders.us.old.x", "c".into()).await.unwrap();
    nc.flush().await.unwrap();
    let m = timeout(T, exact.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"a");
    for want in ["a", "b"] {
        let m = timeout(T, star.next()).await.unwrap().unwrap();
        assert_eq!(&m.payload[..], want.as_bytes());
    }
    for want in ["a", "b", "c"] {
        let m = timeout(T, tail.next()).await.unwrap().unwrap();
        assert_eq!(&m.payload[..], want.as_bytes());
        assert!(m.subject.starts_with("orders."));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_and_no_responders() {
    let srv = start();
    let responder = client(srv.addr).await;
    let requester = client(srv.addr).await;
    let mut svc = responder.subscribe("svc.echo").await.unwrap();
    synced(&responder).await;
    let r2 = responder.clone();
    tokio::spawn(async move {
        while let Some(m) = svc.next().await {
            if let Some(reply) = m.reply {
                let mut body = b"echo:".to_vec();
                body.extend_from_slice(&m.payload);
                r2.publish(reply, body.into()).await.unwrap();
            }
        }
    });
    for i in 0..50 {
        let resp = timeout(T, requester.request("svc.echo", format!("{i}").into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.payload, format!("echo:{i}").as_bytes());
    }
    let err = timeout(T, requester.request("svc.nobody", "x".into()))
        .await
        .expect("no-responders answer arrives, not a timeout")
        .expect_err("no responders");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip() {
    let srv = start();
    let nc = client(srv.addr).await;
    let mut sub = nc.subscribe("h").await.unwrap();
    nc.flush().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Trace-Id", "abc123");
    nc.publish_with_headers("h", headers, "body".into())
        .await
        .unwrap();
    let m = timeout(T, sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"body");
    let h = m.headers.expect("headers delivered");
    assert_eq!(h.get("Trace-Id").map(|v| v.as_str()), Some("abc123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_members_share_the_work() {
    let srv = start();
    let pubc = client(srv.addr).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        let c = client(srv.addr).await;
        let s = c.queue_subscribe("jobs", "workers".into()).await.unwrap();
        synced(&c).await;
        members.push((c, s));
    }
    const N: usize = 300;
    for i in 0..N {
        pubc.publish("jobs", format!("{i}").into()).await.unwrap();
    }
    pubc.flush().await.unwrap();
    let mut seen = vec![0u8; N];
    let mut got = 0;
    let mut per_member = Vec::new();
    for (_c, s) in members.iter_mut() {
        let mut n = 0;
        while let Ok(Some(m)) = timeout(Duration::from_millis(500), s.next()).await {
            let i: usize = std::str::from_utf8(&m.payload).unwrap().parse().unwrap();
            seen[i] += 1;
            n += 1;
            got += 1;
            if got == N {
                break;
            }
        }
        per_member.push(n);
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "each job exactly once: {per_member:?}"
    );
    assert!(
        per_member.iter().filter(|&&n| n > 0).count() >= 2,
        "random choice spreads work: {per_member:?}"
    );
}

/// 200+ connections spread over both reactors, publishers and subscribers on different
/// cores: every message arrives exactly once and in order per publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_across_reactors_exactly_once_in_order() {
    let srv = start();
    const SUBS: usize = 160;
    const PUBS: usize = 48;
    const MSGS: usize = 100;
    let mut subs = Vec::new();
    for i in 0..SUBS {
        let c = client(srv.addr).await;
        let s = c.subscribe(format!("fan.{}", i % 4)).await.unwrap();
        synced(&c).await;
        subs.push((c, s));
    }
    let mut pubs = Vec::new();
    for _ in 0..PUBS {
        pubs.push(client(srv.addr).await);
    }
    let mut tasks = Vec::new();
    for (p, c) in pubs.iter().enumerate() {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..MSGS {
                c.publish(format!("fan.{}", p % 4), format!("{p}:{seq}").into())
                    .await
                    .unwrap();
            }
            c.flush().await.unwrap();
        }));
    }
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap();
    }
    // Subscriber i listens on fan.(i%4): it gets the messages of publishers p with p%4 == i%4.
    let per_topic_pubs = PUBS / 4;
    for (i, (_c, s)) in subs.iter_mut().enumerate() {
        let want = per_topic_pubs * MSGS;
        let mut next_seq: HashMap<usize, usize> = HashMap::new();
        for _ in 0..want {
            let m = timeout(T, s.next())
                .await
                .unwrap_or_else(|_| panic!("subscriber {i} timed out"))
                .unwrap();
            let text = std::str::from_utf8(&m.payload).unwrap();
            let (p, seq) = text.split_once(':').unwrap();
            let (p, seq): (usize, usize) = (p.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(p % 4, i % 4, "delivered to the right topic");
            let expected = next_seq.entry(p).or_insert(0);
            assert_eq!(
                seq, *expected,
                "in order per publisher, no loss, no duplicate"
            );
            *expected += 1;
        }
        assert!(
            timeout(Duration::from_millis(20), s.next()).await.is_err(),
            "no extra message"
        );
    }
}

/// Subscribers owned by another reactor that sleeps are written by the publishing reactor
/// itself (a direct send, no wake-up): every message still arrives once and in order, and
/// the server's counters still count each delivery once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_sends_to_a_sleeping_reactor_keep_order_and_counts() {
    const PAIRS: usize = 16;
    const N: usize = 300;
    // Two reactors: about half the pairs land on different ones.
    let srv = start_with(|o| o.http_port = Some(0));
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for i in 0..PAIRS {
        let s = client(srv.addr).await;
        let sub = s.subscribe(format!("direct.{i}")).await.unwrap();
        synced(&s).await;
        subs.push((s, sub));
        pubs.push(client(srv.addr).await);
    }
    let mut tasks = Vec::new();
    for (i, p) in pubs.iter().enumerate() {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..N {
                p.publish(format!("direct.{i}"), n.to_string().into())
                    .await
                    .unwrap();
                // Pauses let the reactors go to sleep between bursts.
                if n % 10 == 9 {
                    p.flush().await.unwrap();
                }
            }
            p.flush().await.unwrap();
        }));
    }
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap();
    }
    for (i, (_, sub)) in subs.iter_mut().enumerate() {
        for n in 0..N {
            let m = timeout(T, sub.next()).await.unwrap().unwrap();
            assert_eq!(&m.payload[..], n.to_string().as_bytes(), "pair {i}");
        }
    }
    // Nothing more: each message arrived exactly once.
    for (s, sub) in subs.iter_mut() {
        s.flush().await.unwrap();
        assert!(timeout(Duration::from_millis(50), sub.next())
            .await
            .is_err());
    }
    let totals = || {
        srv.server.stats.iter().fold((0, 0), |(o, d), s| {
            let l = s.load();
            (o + l.out_msgs, d + l.direct_sends)
        })
    };
    // Each subscriber also got one no-responders answer from `synced`.
    let expected = PAIRS * (N + 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (out_msgs, direct) = loop {
        let t = totals();
        if t.0 >= expected as u64 || std::time::Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(out_msgs, expected as u64, "each delivery counted once");
    assert!(direct > 0, "no pair was written by a direct send");
    // Per connection too: /connz gives each subscriber its N messages.
    let connz = http_get(srv.http_addr.unwrap(), "/connz?limit=1000");
    let v: serde_json::Value = serde_json::from_str(&connz).unwrap();
    let mut per_conn: Vec<u64> = v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["out_msgs"].as_u64().unwrap())
        .filter(|&n| n > 0)
        .collect();
    per_conn.sort_unstable();
    assert_eq!(per_conn, vec![N as u64 + 1; PAIRS], "{connz}");
}

/// The body of a plain HTTP/1.0 GET.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}
