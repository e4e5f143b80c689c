//! Raw-socket tests: exact bytes on the wire for each gnatsd 1.0 rule (reference §1,
//! Appendix B), plus the 2.x additions modern clients rely on.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn info_line_is_framed_like_gnatsd() {
    let srv = start();
    let raw = Raw::connect(srv.addr);
    assert!(
        raw.info.starts_with("INFO {\"server_id\":\""),
        "{}",
        raw.info
    );
    assert!(
        raw.info.ends_with("} \r\n"),
        "space before CRLF: {:?}",
        raw.info
    );
    let json: serde_json::Value =
        serde_json::from_str(raw.info.trim_start_matches("INFO ").trim_end()).unwrap();
    assert_eq!(json["port"], srv.addr.port());
    assert_eq!(json["host"], "127.0.0.1");
    assert_eq!(json["max_payload"], 1048576);
    assert_eq!(json["auth_required"], false);
    assert_eq!(json["tls_required"], false);
    assert_eq!(json["headers"], true);
    assert_eq!(json["proto"], 1);
    assert_eq!(json["server_id"].as_str().unwrap().len(), 22);
}

#[test]
fn verbose_is_on_without_connect() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"SUB foo 1\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PUB foo 5\r\nhello\r\n");
    c.expect(b"+OK\r\nMSG foo 1 5\r\nhello\r\n");
    c.send(b"CONNECT {}\r\n");
    c.expect(b"+OK\r\n");
    c.send(b"PUB foo bar.baz 1\r\nx\r\n");
    c.expect(b"+OK\r\nMSG foo 1 bar.baz 1\r\nx\r\n");
}

#[test]
fn ping_pong_ignore_trailing_bytes_and_get_no_ok() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"PING foo\r\nping\r\nPONG\r\n");
    c.expect(b"PONG\r\nPONG\r\n");
    c.expect_nothing_then_pong();
}

#[test]
fn unknown_op_sends_two_errors_and_closes() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"ZZZ\r\n");
    c.expect(b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n");
    c.expect_eof();
}

#[test]
fn client_msg_is_unknown_op() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"MSG foo 1 2\r\nok\r\n");
    c.expect(b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n");
    c.expect_eof();
}

#[test]
fn bad_payload_trailer_is_unknown_op() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    c.send(b"PUB foo 2\r\nokk\r\n");
    c.expect(b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n");
    c.expect_eof();
}

#[test]
fn payload_trailer_must_be_crlf_and_the_message_is_dropped() {
    let srv = start();
    let mut sub = Raw::quiet(srv.addr);
    sub.send(b"SUB a 1\r\nPING\r\n");
    sub.expect(b"PONG\r\n");
    for bad in [
        &b"PUB a 3\r\nabcX\nPING\r\n"[..],
        b"PUB a 3\r\nabc\rXPING\r\n",
        b"PUB a 3\r\nabc\n\nPING\r\n",
        b"PUB a 3\r\nabc\r\r\nPING\r\n",
    ] {
        let mut c = Raw::quiet(srv.addr);
        c.send(bad);
        c.expect(b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n");
        c.expect_eof();
    }
    // a wrong first trailer byte is refused without waiting for the second one
    let mut c = Raw::quiet(srv.addr);
    c.send(b"PUB a 3\r\nabc");
    c.send(b"X");
    c.expect(b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n");
    c.expect_eof();
    // none of them was delivered
    sub.expect_nothing_then_pong();
    sub.send(b"PUB a 3\r\nabc\r\n");
    sub.expect(b"MSG a 1 3\r\nabc\r\n");
}

#[test]
fn wrong_arguments_are_parser_errors() {
    let srv = start();
    for bad in [
        &b"PUB foo bar\r\n"[..],
        b"PUB foo\r\n",
        b"SUB foo\r\n",
        b"SUB a b c d\r\n",
        b"UNSUB \r\n",
        b"CONNECT {bad json\r\n",
    ] {
        let mut c = Raw::connect(srv.addr);
        c.send(bad);
        c.expect(b"-ERR 'Parser Error'\r\n");
        c.expect_eof();
    }
}

#[test]
fn max_payload_violation_closes() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"PUB foo 2000000\r\n");
    c.expect(b"-ERR 'Maximum Payload Violation'\r\n");
    c.expect_eof();
}

fn sub_line(subject_len: usize) -> Vec<u8> {
    let mut line = b"SUB ".to_vec();
    line.extend(std::iter::repeat_n(b'a', subject_len));
    line.extend_from_slice(b" 1\r\n");
    line
}

#[test]
fn max_control_line_is_checked_on_every_line() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(&sub_line(5000));
    c.expect(b"-ERR 'Maximum Control Line Exceeded'\r\n");
    c.expect_eof();
}

#[test]
fn max_control_line_defaults_to_4096_and_is_configurable() {
    // 2.x's default: a 2000-byte line (over gnatsd 1.0's 1024) is fine, 4096 is the last
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(&sub_line(2000));
    c.expect(b"+OK\r\n");
    c.send(&sub_line(4090));
    c.expect(b"+OK\r\n");
    c.send(&sub_line(4091));
    c.expect(b"-ERR 'Maximum Control Line Exceeded'\r\n");
    c.expect_eof();

    let srv = start_with(|o| o.max_control_line = 1024);
    let mut c = Raw::connect(srv.addr);
    c.send(&sub_line(2000));
    c.expect(b"-ERR 'Maximum Control Line Exceeded'\r\n");
    c.expect_eof();
}

#[test]
fn pedantic_pub_to_wildcard_is_invalid_subject_then_ok() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"pedantic\":true,\"verbose\":true}\r\nSUB > 1\r\nPUB foo.* 2\r\nok\r\n");
    c.expect(b"+OK\r\n+OK\r\n-ERR 'Invalid Subject'\r\n+OK\r\n");
    // The message was dropped, the connection stays.
    c.expect_nothing_then_pong();
}

#[test]
fn invalid_sub_subject_keeps_connection() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    for bad in ["foo..bar", ".foo", "foo.", "foo.>.bar"] {
        c.send(format!("SUB {bad} 1\r\n").as_bytes());
        c.expect(b"-ERR 'Invalid Subject'\r\n");
    }
    c.expect_nothing_then_pong();
}

#[test]
fn client_err_closes_silently() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"-ERR 'x'\r\n");
    c.expect_eof();
}

#[test]
fn sys_publish_is_refused_but_connection_stays() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"SUB _SYS.> 1\r\nPUB _SYS.foo 2\r\nok\r\n");
    c.expect(b"+OK\r\n-ERR 'Permissions Violation for Publish to \"_SYS.foo\"'\r\n");
    c.expect_nothing_then_pong();
}

#[test]
fn invalid_protocol_closes() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"protocol\":2}\r\n");
    c.expect(b"-ERR 'Invalid Client Protocol'\r\n");
    c.expect_eof();
}

#[test]
fn auto_unsubscribe_delivers_exactly_max() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    c.send(b"SUB foo 1\r\nUNSUB 1 2\r\n");
    c.send(b"PUB foo 1\r\na\r\nPUB foo 1\r\nb\r\nPUB foo 1\r\nc\r\n");
    c.expect(b"MSG foo 1 1\r\na\r\nMSG foo 1 1\r\nb\r\n");
    c.expect_nothing_then_pong();
    // The sid is free again once the limit was reached.
    c.send(b"SUB foo 1\r\nPUB foo 1\r\nd\r\n");
    c.expect(b"MSG foo 1 1\r\nd\r\n");
}

#[test]
fn unsub_with_max_already_reached_removes_now() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    c.send(b"SUB foo 7\r\nPUB foo 1\r\na\r\nPUB foo 1\r\nb\r\n");
    c.expect(b"MSG foo 7 1\r\na\r\nMSG foo 7 1\r\nb\r\n");
    c.send(b"UNSUB 7 1\r\nPUB foo 1\r\nc\r\n");
    c.expect_nothing_then_pong();
}

#[test]
fn duplicate_sid_is_ignored_and_unknown_unsub_is_ok() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"SUB foo 1\r\nSUB bar 1\r\nUNSUB 99\r\n");
    c.expect(b"+OK\r\n+OK\r\n+OK\r\n");
    c.send(b"CONNECT {\"verbose\":false}\r\nPUB bar 1\r\nx\r\nPUB foo 1\r\ny\r\n");
    c.expect(b"MSG foo 1 1\r\ny\r\n");
    c.expect_nothing_then_pong();
}

#[test]
fn case_insensitive_ops_tabs_and_bare_newlines() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"connect\t{\"verbose\":false}\nsub\tfoo\t\t1\npUb foo  3\nabc\r\nPiNg\n");
    c.expect(b"MSG foo 1 3\r\nabc\r\nPONG\r\n");
}

#[test]
fn frames_split_one_byte_at_a_time() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    let stream = b"SUB foo.* 9\r\nPUB foo.bar reply 11\r\nhello world\r\nPING\r\n";
    for b in stream.iter() {
        c.send(std::slice::from_ref(b));
    }
    c.expect(b"MSG foo.bar 9 reply 11\r\nhello world\r\nPONG\r\n");
}

#[test]
fn wildcards_and_multiple_matching_sids() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    c.send(b"SUB foo.* 1\r\nSUB foo.> 2\r\nSUB > 3\r\nSUB foo.bar.baz 4\r\nPING\r\n");
    c.expect(b"PONG\r\n");
    c.send(b"PUB foo.bar.baz 1\r\nx\r\nPING\r\n");
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(c.read_line());
        assert_eq!(c.read_line(), "x\r\n");
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            "MSG foo.bar.baz 2 1\r\n",
            "MSG foo.bar.baz 3 1\r\n",
            "MSG foo.bar.baz 4 1\r\n"
        ]
    );
    c.expect(b"PONG\r\n");
    c.send(b"PUB foo 1\r\ny\r\nPING\r\n");
    c.expect(b"MSG foo 3 1\r\ny\r\nPONG\r\n");
}

#[test]
fn queue_group_gets_each_message_once() {
    let srv = start();
    let mut a = Raw::quiet(srv.addr);
    let mut b = Raw::quiet(srv.addr);
    let mut plain = Raw::quiet(srv.addr);
    a.send(b"SUB work q 1\r\nPING\r\n");
    a.expect(b"PONG\r\n");
    b.send(b"SUB work q 1\r\nPING\r\n");
    b.expect(b"PONG\r\n");
    plain.send(b"SUB work 5\r\nPING\r\n");
    plain.expect(b"PONG\r\n");
    let mut p = Raw::quiet(srv.addr);
    const N: usize = 200;
    for i in 0..N {
        p.send(format!("PUB work 3\r\n{i:03}\r\n").as_bytes());
    }
    p.expect_nothing_then_pong();
    // The plain subscriber sees every message in order.
    for i in 0..N {
        plain.expect(format!("MSG work 5 3\r\n{i:03}\r\n").as_bytes());
    }
    // Each message went to exactly one queue member.
    let mut seen = vec![0u32; N];
    for c in [&mut a, &mut b] {
        c.send(b"PING\r\n");
        loop {
            let line = c.read_line();
            if line == "PONG\r\n" {
                break;
            }
            assert_eq!(line, "MSG work 1 3\r\n");
            let body = c.read_line();
            seen[body.trim_end().parse::<usize>().unwrap()] += 1;
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
}

#[test]
fn echo_false_suppresses_own_messages() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"verbose\":false,\"echo\":false,\"protocol\":1}\r\nSUB foo 1\r\nPUB foo 1\r\nx\r\n");
    c.expect_nothing_then_pong();
    let mut other = Raw::quiet(srv.addr);
    other.send(b"PUB foo 1\r\ny\r\n");
    c.expect(b"MSG foo 1 1\r\ny\r\n");
}

#[test]
fn headers_hpub_to_hmsg_and_stripped_for_plain_subscribers() {
    let srv = start();
    let mut h = Raw::connect(srv.addr);
    h.send(b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\nSUB foo 1\r\nPING\r\n");
    h.expect(b"PONG\r\n");
    let mut plain = Raw::quiet(srv.addr);
    plain.send(b"SUB foo 2\r\nPING\r\n");
    plain.expect(b"PONG\r\n");
    h.send(b"HPUB foo rep 23 28\r\nNATS/1.0\r\nA: bcdefg\r\n\r\nhello\r\n");
    h.expect(b"HMSG foo 1 rep 23 28\r\nNATS/1.0\r\nA: bcdefg\r\n\r\nhello\r\n");
    plain.expect(b"MSG foo 2 rep 5\r\nhello\r\n");
}

#[test]
fn hpub_without_headers_negotiated_closes() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    c.send(b"HPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n");
    c.expect(b"-ERR 'Unknown Protocol Operation'\r\n");
}

#[test]
fn no_responders_gets_503_status() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\nSUB _INBOX.abc.* 9\r\nPUB svc _INBOX.abc.1 2\r\nhi\r\n");
    c.expect(b"HMSG _INBOX.abc.1 9 35 35\r\nNATS/1.0 503\r\nNats-Subject: svc\r\n\r\n\r\n");
    c.expect_nothing_then_pong();
}

#[test]
fn no_responders_requires_headers() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"no_responders\":true}\r\n");
    c.expect(b"-ERR 'no responders requires headers support'\r\n");
    c.expect_eof();
}

#[test]
fn auth_token_rules() {
    let srv = start_with(|o| {
        o.token = Some("s3cret".into());
        o.auth_timeout = Duration::from_millis(300);
    });
    let mut c = Raw::connect(srv.addr);
    assert!(c.info.contains("\"auth_required\":true"));
    c.send(b"PING\r\n");
    c.expect(b"-ERR 'Authorization Violation'\r\n");
    c.expect_eof();

    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"auth_token\":\"wrong\"}\r\n");
    c.expect(b"-ERR 'Authorization Violation'\r\n");
    c.expect_eof();

    let mut c = Raw::connect(srv.addr);
    c.expect(b"-ERR 'Authorization Timeout'\r\n");
    c.expect_eof();

    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"auth_token\":\"s3cret\",\"verbose\":false}\r\nPING\r\n");
    c.expect(b"PONG\r\n");
}

#[test]
fn user_password_auth() {
    let srv = start_with(|o| {
        o.user = Some("derek".into());
        o.pass = Some("foo".into());
    });
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"user\":\"derek\",\"pass\":\"bar\"}\r\n");
    c.expect(b"-ERR 'Authorization Violation'\r\n");
    c.expect_eof();
    let mut c = Raw::connect(srv.addr);
    c.send(b"CONNECT {\"user\":\"derek\",\"pass\":\"foo\"}\r\n");
    c.expect(b"+OK\r\n");
}

#[test]
fn stale_connection_after_unanswered_pings() {
    let srv = start_with(|o| {
        o.ping_interval = Duration::from_millis(200);
        o.ping_max = 2;
    });
    let mut c = Raw::connect(srv.addr);
    c.expect(b"PING\r\nPING\r\n-ERR 'Stale Connection'\r\n");
    c.expect_eof();
}

#[test]
fn answered_pings_keep_connection() {
    let srv = start_with(|o| o.ping_interval = Duration::from_millis(100));
    let mut c = Raw::quiet(srv.addr);
    for _ in 0..5 {
        c.expect(b"PING\r\n");
        c.send(b"PONG\r\n");
    }
    c.expect_nothing_then_pong();
}

#[test]
fn max_connections_exceeded_after_info() {
    let srv = start_with(|o| o.max_connections = 2);
    let mut a = Raw::quiet(srv.addr);
    let _b = Raw::quiet(srv.addr);
    let mut c = Raw::connect(srv.addr);
    c.expect(b"-ERR 'Maximum Connections Exceeded'\r\n");
    c.expect_eof();
    a.expect_nothing_then_pong();
}

#[test]
fn closed_subscriber_is_unsubscribed() {
    let srv = start();
    let mut s = Raw::quiet(srv.addr);
    s.send(b"SUB foo 1\r\nPING\r\n");
    s.expect(b"PONG\r\n");
    drop(s);
    let mut p = Raw::quiet(srv.addr);
    // Wait (bounded) until the server noticed the close: the sub count drops to zero.
    let deadline = std::time::Instant::now() + WAIT;
    while srv.server.sublist.count() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "subscription not removed"
        );
        p.expect_nothing_then_pong();
    }
}

#[test]
fn graceful_shutdown_closes_clients() {
    let srv = start();
    let mut c = Raw::quiet(srv.addr);
    srv.shutdown().expect("clean shutdown");
    c.expect_eof();
}

#[test]
fn op_without_argument_separator_is_unknown_op() {
    let srv = start();
    let mut c = Raw::connect(srv.addr);
    c.send(b"UNSUB\r\n");
    c.expect(b"-ERR 'Unknown Protocol Operation'\r\n-ERR 'Parser Error'\r\n");
    c.expect_eof();
}

/// A subscriber that stops reading is cut off once its pending output passes max_pending;
/// the publisher and a healthy subscriber carry on and lose nothing.
#[test]
fn slow_consumer_is_cut_off_without_hurting_others() {
    let srv = start_with(|o| {
        o.max_pending = 256 * 1024;
        o.write_deadline = Duration::from_millis(500);
    });
    let mut slow = Raw::quiet(srv.addr);
    // A tiny receive buffer so the kernel cannot absorb the backlog for it.
    let sock = socket2::SockRef::from(&slow.stream);
    sock.set_recv_buffer_size(4096).unwrap();
    slow.send(b"SUB data 1\r\nPING\r\n");
    slow.expect(b"PONG\r\n");
    let mut good = Raw::quiet(srv.addr);
    good.send(b"SUB data 2\r\nPING\r\n");
    good.expect(b"PONG\r\n");

    let mut publisher = Raw::quiet(srv.addr);
    let payload = vec![b'x'; 1024];
    let mut frame = b"PUB data 1024\r\n".to_vec();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\n");
    // 12 MB: past max_pending plus what loopback socket buffers absorb (up to ~4 MB).
    const N: usize = 12000;
    let reader = std::thread::spawn(move || {
        for _ in 0..N {
            good.expect(b"MSG data 2 1024\r\n");
            good.expect(&payload);
            good.expect(b"\r\n");
        }
        good.expect_nothing_then_pong();
        good
    });
    for _ in 0..N {
        publisher.send(&frame);
    }
    publisher.expect_nothing_then_pong();
    let _good = reader.join().expect("healthy subscriber got every message");
    // The slow one is cut off by the server: only the publisher and the healthy
    // subscriber remain. (Draining its socket through a 4 KiB window would take minutes.)
    let deadline = std::time::Instant::now() + WAIT;
    while srv
        .server
        .conn_count
        .load(std::sync::atomic::Ordering::Relaxed)
        != 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slow consumer was not disconnected: {} connections",
            srv.server
                .conn_count
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        publisher.expect_nothing_then_pong();
    }
    drop(slow);
}

/// INFO carries what modern clients read: `server_name` (the id unless named) and the
/// client's own address, beside every 1.0 field.
#[test]
fn info_has_server_name_and_client_ip() {
    let srv = start();
    let c = Raw::connect(srv.addr);
    let json: serde_json::Value =
        serde_json::from_str(c.info.trim_start_matches("INFO ").trim_end()).unwrap();
    assert_eq!(json["server_name"], json["server_id"]);
    assert_eq!(json["client_ip"], "127.0.0.1");
    for k in [
        "server_id",
        "version",
        "go",
        "host",
        "port",
        "auth_required",
        "max_payload",
    ] {
        assert!(json.get(k).is_some(), "{k} missing: {json}");
    }
    let named = start_with(|o| o.server_name = Some("edge-1".into()));
    let c = Raw::connect(named.addr);
    assert!(c.info.contains("\"server_name\":\"edge-1\""), "{}", c.info);
}

/// Sends `bytes` and a PING, and waits for the PONG: the server has handled them.
fn synced(c: &mut Raw, bytes: &[u8]) {
    c.send(bytes);
    c.send(b"PING\r\n");
    c.expect(b"PONG\r\n");
}

/// `n` messages on `subject`, payload `i % 10`, as one client writes them in a stream.
fn stream(subject: &str, n: usize) -> (Vec<u8>, impl Fn(&str) -> Vec<u8>) {
    let mut out = Vec::new();
    for i in 0..n {
        out.extend_from_slice(format!("PUB {subject} 1\r\n{}\r\n", i % 10).as_bytes());
    }
    let subject = subject.to_string();
    let delivered = move |sid: &str| {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend_from_slice(format!("MSG {subject} {sid} 1\r\n{}\r\n", i % 10).as_bytes());
        }
        v
    };
    (out, delivered)
}

#[test]
fn a_streaming_publisher_reaches_subscribers_as_they_join_and_leave() {
    // A publisher that repeats one subject skips the lookup while no subscription changed
    // anywhere; every SUB and UNSUB the server has answered must count from the next
    // message on, whichever core the connections landed on.
    let srv = start();
    let mut publ = Raw::quiet(srv.addr);
    let mut first = Raw::quiet(srv.addr);
    synced(&mut first, b"SUB memo.x 1\r\n");
    let (pubs, msgs) = stream("memo.x", 25);

    synced(&mut publ, &pubs);
    first.expect(&msgs("1"));

    let mut joined: Vec<Raw> = (0..4).map(|_| Raw::quiet(srv.addr)).collect();
    for j in &mut joined {
        synced(j, b"SUB memo.x 7\r\n");
    }
    synced(&mut publ, &pubs);
    first.expect(&msgs("1"));
    for j in &mut joined {
        j.expect(&msgs("7"));
    }

    synced(&mut first, b"UNSUB 1\r\n");
    for j in &mut joined[1..] {
        synced(j, b"UNSUB 7\r\n");
    }
    synced(&mut publ, &pubs);
    joined[0].expect(&msgs("7"));
    first.expect_nothing_then_pong();
    for j in &mut joined[1..] {
        j.expect_nothing_then_pong();
    }

    // The last one leaves: the stream goes nowhere, then reaches a newcomer at once.
    synced(&mut joined[0], b"UNSUB 7\r\n");
    synced(&mut publ, &pubs);
    joined[0].expect_nothing_then_pong();
    synced(&mut first, b"SUB memo.x 9\r\n");
    synced(&mut publ, &pubs);
    first.expect(&msgs("9"));
}
