//! Hostile and broken peers against the node: reconnect pacing on every
//! failure kind, the watchdog across reconnections, rotation with a dying
//! old connection, malformed answers and requests (RFC 6733 §7), and
//! election between two live nodes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::scripted::{Behaviour, Scripted};
use diam_client::{handler_fn, Direction, Error, Node, NodeConfig, PeerHandle, PeerState};
use diam_proto::{avps, AvpFlags, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

fn config(host: &str) -> NodeConfig {
    let mut c = NodeConfig::new(host, "test");
    c.connection.peer.auth_application_ids = vec![4];
    c.connection.peer.watchdog.jitter = Duration::ZERO;
    c
}

fn ccr(n: u32) -> Message {
    Message::request(4, 272)
        .proxiable(true)
        .avp(avps::SESSION_ID, format!("client.test;1;{n}"))
        .avp(avps::ORIGIN_HOST, "client.test")
        .avp(avps::ORIGIN_REALM, "test")
        .avp(avps::DESTINATION_REALM, "test")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .avp(avps::CC_REQUEST_TYPE, 1)
        .avp(avps::CC_REQUEST_NUMBER, n)
        .build()
}

fn scripted_node(host: &str, connector: Scripted) -> (Node, Arc<common::scripted::Log>) {
    let log = connector.log.clone();
    let node = Node::builder(config(host)).connector(Arc::new(connector)).build().unwrap();
    (node, log)
}

/// The storm regression: a peer that answers CEA 3010, a blackholed address,
/// a peer that closes right after its CEA, and a refusing one all see dials
/// spaced by the growing backoff, even while requests keep coming.
#[tokio::test(start_paused = true)]
async fn every_failure_kind_is_paced_by_one_growing_schedule() {
    for behaviour in [Behaviour::CeaAndClose(3010), Behaviour::Blackhole, Behaviour::OpenThenClose, Behaviour::Refuse] {
        let (node, log) = scripted_node("client.test", Scripted::new(move |_| behaviour));
        let peer = node.add_peer("scripted.test", ["127.0.0.1:3868".parse().unwrap()]).unwrap();
        // Callers keep sending meanwhile: they must not cause dials.
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..8)
            .map(|k| {
                let (p, stop) = (peer.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let r = p.send_with_timeout(ccr(k * 10_000 + n), Duration::from_millis(200)).await;
                        assert!(r.is_err(), "{behaviour:?}: nothing can answer");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        n += 1;
                    }
                })
            })
            .collect();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(120)).await;
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.await.unwrap();
        }
        let dials: Vec<Duration> = log.dials.lock().unwrap().iter().map(|t| *t - start).collect();
        // The pause between one attempt's end and the next dial (a
        // blackholed dial itself lasts the 10 s connect timeout).
        let attempt = if behaviour == Behaviour::Blackhole { Duration::from_secs(10) } else { Duration::ZERO };
        let gaps: Vec<Duration> = dials.windows(2).map(|w| w[1] - w[0] - attempt).collect();
        eprintln!("{behaviour:?}: {} dials in 120 s, gaps {gaps:?}", dials.len());
        // 1 s growing by 1.5 (equal jitter: each delay in [d/2, d]) up to
        // 60 s: at most 14 dials in 120 s, and the gaps grow.
        assert!((3..=14).contains(&dials.len()), "{behaviour:?}: {} dials: {dials:?}", dials.len());
        let (first, last) = (gaps[0], gaps[gaps.len() - 1]);
        assert!(last >= first * 4, "{behaviour:?}: the delay does not grow: {gaps:?}");
        assert!(
            gaps.iter().all(|g| *g >= Duration::from_millis(400)),
            "{behaviour:?}: a gap under the first delay: {gaps:?}"
        );
        node.shutdown(Duration::from_secs(1)).await;
    }
}

/// The watchdog survives reconnection: after a DOWN, the new connection is
/// REOPEN and carries no request until three DWAs came back on it.
#[tokio::test(start_paused = true)]
async fn reopen_needs_three_dwas_on_the_new_connection() {
    let connector = Scripted::new(|n| if n == 0 { Behaviour::IgnoreDwr } else { Behaviour::Serve });
    let log = connector.log.clone();
    let mut c = config("client.test");
    c.connection.peer.watchdog.interval = Duration::from_secs(6);
    c.connection.peer.watchdog.dwr_timeout = Duration::from_secs(2);
    c.connection.peer.watchdog.max_dwr_failures = 1;
    let node = Node::builder(c).connector(Arc::new(connector)).build().unwrap();
    let peer = node.add_peer("scripted.test", ["127.0.0.1:3868".parse().unwrap()]).unwrap();
    peer.wait_open(Duration::from_secs(5)).await.unwrap();
    // DWR at 6 s unanswered: DOWN at 8 s, a reconnection scheduled.
    assert_eq!(peer.wait_for_state(|s| s == PeerState::Reconnecting).await, PeerState::Reconnecting);
    assert!(matches!(peer.try_send(ccr(1)), Err(Error::NotAvailable(PeerState::Reconnecting))));
    // A request submitted now waits through the reconnection and REOPEN.
    let sent = {
        let p = peer.clone();
        tokio::spawn(async move { p.send(ccr(2)).await })
    };
    assert!(sent.await.unwrap().is_ok(), "the request waited for OKAY, then went out");
    let second: Vec<u32> = log.received_on(1).iter().filter(|(_, req)| *req).map(|(c, _)| *c).collect();
    assert_eq!(&second[..5], &[257, 280, 280, 280, 272], "CER, three DWRs, then the request: {second:?}");
    assert_eq!(peer.state(), PeerState::Open);
}

/// Stale-failure regression: after a rotation, the old connection dying
/// (no DPA, just gone) leaves the replacement alone: no Down, no DPR on it,
/// no failure callback, and traffic carries on.
#[tokio::test]
async fn a_rotated_out_connection_failing_does_not_touch_its_replacement() {
    let (node, log) = scripted_node("client.test", Scripted::new(|_| Behaviour::DropOnDpr));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let f = failures.clone();
    let _sub = node.on_failure(move |x| f.lock().unwrap().push(x.reason.clone()));
    let peer = node.add_peer("scripted.test", ["127.0.0.1:3868".parse().unwrap()]).unwrap();
    peer.wait_open(Duration::from_secs(5)).await.unwrap();
    assert!(peer.send(ccr(1)).await.is_ok());
    assert!(peer.rotate());
    // The old connection is told DPR and dies without a DPA.
    let deadline = Instant::now() + Duration::from_secs(5);
    while log.received_on(0).iter().all(|(c, req)| !(*c == 282 && *req)) {
        assert!(Instant::now() < deadline, "no DPR on the old connection: {:?}", log.received_on(0));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in 2..20 {
        assert!(peer.send(ccr(n)).await.is_ok(), "request {n} after the rotation");
    }
    assert_eq!(peer.state(), PeerState::Open);
    assert_eq!(peer.stats().downs, 0, "the peer never went down");
    assert!(log.received_on(1).iter().all(|(c, _)| *c != 282), "the replacement got a DPR: {:?}", log.received_on(1));
    assert_eq!(log.connections.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(failures.lock().unwrap().is_empty(), "{:?}", failures.lock().unwrap());
}

/// A corrupt answer fails only its own request: 100 others in flight on the
/// same connection succeed, and the connection stays open.
#[tokio::test]
async fn a_corrupt_answer_fails_only_its_own_request() {
    let connector = Scripted::new(|_| Behaviour::Serve).with_answers(|req, ans| {
        let mut b = ans.as_bytes().to_vec();
        if req.get(avps::CC_REQUEST_NUMBER).ok().flatten() == Some(50) {
            // The last AVP claims to run 500 bytes past the message.
            let n = b.len();
            b[n - 12 + 5..n - 12 + 8].copy_from_slice(&500u32.to_be_bytes()[1..]);
        }
        b
    });
    let (node, _log) = scripted_node("client.test", connector);
    let peer = node.add_peer("scripted.test", ["127.0.0.1:3868".parse().unwrap()]).unwrap();
    peer.wait_open(Duration::from_secs(5)).await.unwrap();
    let joins: Vec<_> = (0..101)
        .map(|n| {
            let p = peer.clone();
            tokio::spawn(async move { (n, p.send(ccr(n)).await) })
        })
        .collect();
    let mut ok = 0;
    for j in joins {
        match j.await.unwrap() {
            (50, Err(Error::MalformedAnswer(_))) => {}
            (n, Ok(a)) if n != 50 => {
                assert_eq!(a.get(avps::SESSION_ID).unwrap(), Some(format!("client.test;1;{n}").as_str()));
                ok += 1;
            }
            (n, r) => panic!("request {n}: {r:?}"),
        }
    }
    assert_eq!(ok, 100);
    assert_eq!(peer.state(), PeerState::Open);
    assert_eq!(peer.stats().malformed_answers, 1);
    assert!(peer.send(ccr(200)).await.is_ok(), "the connection still carries traffic");
}

/// Requests with bad AVPs get their RFC 6733 §7 answers, with Failed-AVP,
/// and the good requests pipelined between them are answered too.
#[tokio::test]
async fn malformed_requests_get_rfc_6733_section_7_answers() {
    let ok = handler_fn(|req: Message| async move {
        Message::answer_to(&req)
            .avp(avps::RESULT_CODE, 2001u32)
            .avp(avps::ORIGIN_HOST, "server.test")
            .avp(avps::ORIGIN_REALM, "test")
            .build()
    });
    // Serving application 4 only (not a relay): unknown M-bit AVPs count.
    let node = Node::builder(config("server.test")).handler(4, ok).accept_any().build().unwrap();
    let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let cer = Message::request(0, 257)
        .hop_by_hop(1)
        .avp(avps::ORIGIN_HOST, "raw.test")
        .avp(avps::ORIGIN_REALM, "test")
        .avp(avps::HOST_IP_ADDRESS, std::net::IpAddr::from([127, 0, 0, 1]))
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "raw")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build();
    sock.write_all(cer.as_bytes()).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut dec = FrameDecoder::new();
    let mut read = async |sock: &mut tokio::net::TcpStream| loop {
        if let Some(m) = dec.decode(&mut buf).unwrap() {
            return m;
        }
        assert!(sock.read_buf(&mut buf).await.unwrap() > 0, "closed");
    };
    let cea = read(&mut sock).await;
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(2001));

    let base = |h: u32| ccr(h).with_ids(h, h);
    let lying_length = {
        let mut b = base(10).as_bytes().to_vec();
        let n = b.len();
        b[n - 12 + 5..n - 12 + 8].copy_from_slice(&200u32.to_be_bytes()[1..]);
        b
    };
    let bad_utf8 = Message::request(4, 272)
        .avp(avps::SESSION_ID, "raw;1")
        .raw_avp(avps::DESTINATION_REALM.code(), AvpFlags::from_bits(0x40), None, &[0xff, 0xfe])
        .build()
        .with_ids(12, 12);
    let reserved_bits =
        Message::request(4, 272).raw_avp(415, AvpFlags::from_bits(0x41), None, &[0, 0, 0, 1]).build().with_ids(13, 13);
    let e_bit = Message::request(4, 272).error(true).avp(avps::SESSION_ID, "raw;2").build().with_ids(14, 14);
    let unknown_m =
        Message::request(4, 272).raw_avp(99_999, AvpFlags::from_bits(0x40), None, b"x").build().with_ids(15, 15);
    let mut burst = Vec::new();
    burst.extend_from_slice(&lying_length);
    burst.extend_from_slice(base(11).as_bytes());
    burst.extend_from_slice(bad_utf8.as_bytes());
    burst.extend_from_slice(reserved_bits.as_bytes());
    burst.extend_from_slice(e_bit.as_bytes());
    burst.extend_from_slice(unknown_m.as_bytes());
    burst.extend_from_slice(base(16).as_bytes());
    sock.write_all(&burst).await.unwrap();
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..7 {
        let a = read(&mut sock).await;
        let failed = a.find(avps::FAILED_AVP).and_then(|g| g.group().next()).and_then(Result::ok).map(|a| a.code());
        got.insert(a.hop_by_hop(), (a.get(avps::RESULT_CODE).unwrap(), a.flags().is_error(), failed));
    }
    let want = [
        (10, (Some(5014), false, Some(415))),
        (11, (Some(2001), false, None)),
        (12, (Some(5004), false, Some(283))),
        (13, (Some(3009), true, Some(415))),
        (14, (Some(3008), true, None)),
        (15, (Some(5001), false, Some(99_999))),
        (16, (Some(2001), false, None)),
    ];
    for (hbh, expect) in want {
        assert_eq!(got.get(&hbh), Some(&expect), "request {hbh}: {got:?}");
    }
    // Still open: a DWR is answered.
    let dwr = Message::request(0, 280)
        .hop_by_hop(99)
        .avp(avps::ORIGIN_HOST, "raw.test")
        .avp(avps::ORIGIN_REALM, "test")
        .build();
    sock.write_all(dwr.as_bytes()).await.unwrap();
    let dwa = read(&mut sock).await;
    assert_eq!((dwa.hop_by_hop(), dwa.get(avps::RESULT_CODE).unwrap()), (99, Some(2001)));
    let peer = node.peer("raw.test").unwrap();
    assert_eq!(peer.stats().rejected_requests, 5);
}

/// Two of our nodes, each configured to connect to the other: exactly one
/// connection is left, both see it the same way, and when both were
/// connecting (an election), it is the one the lower identity dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_connecting_to_each_other_keep_one_connection() {
    let mut elected = 0;
    for run in 0..10 {
        let elections = Arc::new(Mutex::new(Vec::new()));
        let ok = |host: &'static str| {
            handler_fn(move |req: Message| async move {
                Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).avp(avps::ORIGIN_HOST, host).build()
            })
        };
        let inline = || diam_link::events::EventDispatcher::new();
        let a = Node::builder(config("aaa.test")).default_handler(ok("aaa.test")).events(inline()).build().unwrap();
        let b = Node::builder(config("bbb.test")).default_handler(ok("bbb.test")).events(inline()).build().unwrap();
        let mut subs = Vec::new();
        for n in [&a, &b] {
            let e = elections.clone();
            subs.push(n.events().subscribe(
                diam_link::events::EventKind::Custom,
                move |ev: &diam_link::events::Event| {
                    if let diam_link::events::EventData::Custom(c) = ev.data() {
                        if let Some(x) = c.downcast_ref::<diam_client::events::Election>() {
                            e.lock().unwrap().push(x.won);
                        }
                    }
                },
            ));
        }
        let addr_a = a.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr_b = b.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let to_b = a.add_peer("bbb.test", [addr_b.into()]).unwrap();
        let to_a = b.add_peer("aaa.test", [addr_a.into()]).unwrap();
        to_b.wait_open(Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("run {run}: {e}"));
        to_a.wait_open(Duration::from_secs(5)).await.unwrap_or_else(|e| panic!("run {run}: {e}"));
        // Let a losing connection finish closing.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stable = |p: &PeerHandle| (p.state(), p.stats().downs);
        assert_eq!(stable(&to_b), (PeerState::Open, 0), "run {run}");
        assert_eq!(stable(&to_a), (PeerState::Open, 0), "run {run}");
        let (da, db) = (to_b.direction(), to_a.direction());
        let one = matches!(
            (da, db),
            (Some(Direction::Outbound), Some(Direction::Inbound))
                | (Some(Direction::Inbound), Some(Direction::Outbound))
        );
        assert!(one, "run {run}: both sides see one connection: {da:?} / {db:?}");
        // With an election (both were connecting), aaa.test < bbb.test: the
        // connection aaa.test dialled survives. Without one (a CER reached a
        // node that was not connecting yet), it simply accepted it.
        if elections.lock().unwrap().len() >= 2 {
            assert_eq!(da, Some(Direction::Outbound), "run {run}: the lower identity's connection survives");
            elected += 1;
        }
        // Requests both ways on that one connection.
        assert!(to_b.send(ccr(1)).await.is_ok(), "run {run}");
        assert!(to_a.send(ccr(2)).await.is_ok(), "run {run}");
        a.shutdown(Duration::from_secs(1)).await;
        b.shutdown(Duration::from_secs(1)).await;
    }
    eprintln!("{elected} of 10 runs elected");
}

/// Lifetime rotation against an RFC-strict server (our own node refuses a
/// second connection from a peer that is open): the refusal is not a
/// failure, the connection carries on, and rotation is not retried in a
/// loop.
#[tokio::test]
async fn a_refused_rotation_is_not_a_failure() {
    let ok = handler_fn(|req: Message| async move {
        Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).avp(avps::ORIGIN_HOST, "server.test").build()
    });
    let server = Node::builder(config("server.test")).default_handler(ok).accept_any().build().unwrap();
    let addr = server.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut c = diam_client::PoolConfig::new("client.test", "test");
    c.connection.peer.auth_application_ids = vec![4];
    c.max_lifetime = Duration::from_millis(200);
    let client = diam_client::AddressClient::new(c).unwrap();
    let deadline = Instant::now() + Duration::from_millis(1200);
    let mut n = 0;
    while Instant::now() < deadline {
        client.send(addr, ccr(n)).await.expect("every request answered");
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = client.stats();
    assert_eq!((s.failed_attempts, s.connections_lost), (0, 0), "{s:?}");
    assert_eq!(s.requests, s.answers);
    assert_eq!(client.connection(addr).unwrap().state, PeerState::Open);
    let refused = server.peer("client.test").unwrap().stats();
    assert_eq!(refused.downs, 0, "the server's side never went down: {refused:?}");
}
