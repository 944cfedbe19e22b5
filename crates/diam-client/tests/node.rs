//! Our node against our node and against scripted misbehaving peers, all on
//! 127.0.0.1: request/answer, handlers, errors, the watchdog through the
//! driver, and failure reporting.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use diam_client::{
    handler_fn, CloseReason, Direction, Error, Node, NodeConfig, PeerAddr, PeerFailure, PeerHandle, PeerState,
};
use diam_proto::{apps, avps, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn config(host: &str, apps: &[u32]) -> NodeConfig {
    let mut c = NodeConfig::new(host, "test");
    c.connection.peer.auth_application_ids = apps.to_vec();
    c.connection.peer.watchdog.jitter = Duration::ZERO;
    // These tests time the protocol's schedules to the millisecond.
    c.connection.timer_coalescing = Duration::ZERO;
    c
}

fn echo_handler(host: &'static str) -> Arc<dyn diam_client::Handler> {
    handler_fn(move |req: Message| async move {
        Some(
            Message::answer_to(&req)
                .avp(avps::RESULT_CODE, 2001u32)
                .avp(avps::ORIGIN_HOST, host)
                .avp(avps::ORIGIN_REALM, "test")
                .build(),
        )
    })
}

async fn server(apps: &[u32], handler: Arc<dyn diam_client::Handler>) -> (Node, std::net::SocketAddr) {
    let node = Node::builder(config("server.test", apps)).default_handler(handler).accept_any().build().unwrap();
    let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (node, addr)
}

fn client(apps: &[u32]) -> Node {
    Node::builder(config("client.test", apps)).build().unwrap()
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

fn failures(node: &Node) -> (Arc<Mutex<Vec<PeerFailure>>>, diam_link::events::Subscription) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let sub = node.on_failure(move |f| s.lock().unwrap().push(f.clone()));
    (seen, sub)
}

/// Waits (real time, bounded) until `cond` holds: callbacks run on the
/// dispatcher's own thread, which a loaded machine may delay.
async fn eventually(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn until_closed(p: &PeerHandle) -> CloseReason {
    p.wait_for_state(|s| matches!(s, PeerState::Closed | PeerState::Disconnected | PeerState::Reconnecting)).await;
    p.last_reason().expect("a close reason")
}

#[tokio::test]
async fn request_answer_round_trips_concurrently() {
    let (srv, addr) = server(&[apps::RELAY], echo_handler("server.test")).await;
    let node = client(&[4]);
    let peer = node.connect(addr.into()).await.unwrap();
    assert_eq!(peer.state(), PeerState::Open);
    assert_eq!(peer.identity().as_deref(), Some("server.test"));
    assert_eq!(peer.direction(), Some(Direction::Outbound));
    let mut joins = Vec::new();
    for n in 0..200 {
        let p = peer.clone();
        joins.push(tokio::spawn(async move { (n, p.send(ccr(n)).await) }));
    }
    for j in joins {
        let (n, ans) = j.await.unwrap();
        let ans = ans.unwrap();
        assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
        assert_eq!(ans.get(avps::SESSION_ID).unwrap(), Some(format!("client.test;1;{n}").as_str()));
    }
    assert_eq!(peer.in_flight(), 0);
    let stats = peer.stats();
    assert!(stats.messages_sent >= 201 && stats.messages_received >= 201, "{stats:?}");
    // The server sees the client as an inbound peer.
    let back = srv.peer("client.test").expect("inbound peer in the table");
    assert_eq!(back.direction(), Some(Direction::Inbound));
    peer.close(0).await;
    assert_eq!(peer.state(), PeerState::Closed);
    assert!(matches!(peer.send(ccr(1)).await, Err(Error::Closed)));
}

/// A server-side node sends a request (RAR) to the client that connected to
/// it, over that inbound connection, and the client's handler answers.
#[tokio::test]
async fn server_sends_a_request_to_a_client_that_connected_to_it() {
    let (srv, addr) = server(&[apps::RELAY], echo_handler("server.test")).await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let raa = handler_fn(move |req: Message| {
        g.lock().unwrap().push(req.command_code());
        async move {
            Message::answer_to(&req)
                .avp(avps::RESULT_CODE, 2001u32)
                .avp(avps::ORIGIN_HOST, "client.test")
                .avp(avps::ORIGIN_REALM, "test")
                .build()
        }
    });
    let node = Node::builder(config("client.test", &[4])).default_handler(raa).build().unwrap();
    let peer = node.connect(addr.into()).await.unwrap();
    let pcef = srv.peer("client.test").expect("the client is in the server's table");
    let rar = Message::request(4, 258)
        .proxiable(true)
        .avp(avps::SESSION_ID, "client.test;1;1")
        .avp(avps::ORIGIN_HOST, "server.test")
        .avp(avps::ORIGIN_REALM, "test")
        .avp(avps::DESTINATION_HOST, "client.test")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build();
    let ans = pcef.send(rar).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("client.test"));
    assert_eq!(*got.lock().unwrap(), vec![258]);
    // And the other way still works on the same connection.
    assert!(peer.send(ccr(1)).await.is_ok());
    assert_eq!(srv.peers().len(), 1);
}

#[tokio::test]
async fn no_common_application_fails_with_5010() {
    let (_srv, addr) = server(&[4], echo_handler("server.test")).await;
    let err = client(&[16_777_251]).connect(addr.into()).await.unwrap_err();
    assert_eq!(err.handshake_result_code(), Some(5010), "{err}");
}

#[tokio::test]
async fn an_unknown_peer_gets_3010_unless_admitted() {
    let node = Node::builder(config("server.test", &[apps::RELAY])).build().unwrap();
    let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let err = client(&[4]).connect(addr.into()).await.unwrap_err();
    assert_eq!(err.handshake_result_code(), Some(3010), "{err}");
    // An authorizer admits it.
    let node = Node::builder(config("server.test", &[apps::RELAY]))
        .authorize(|info, _| info.origin_host.ends_with(".test"))
        .build()
        .unwrap();
    let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(client(&[4]).connect(addr.into()).await.is_ok());
}

#[tokio::test]
async fn unsupported_application_and_missing_handler() {
    let (_srv, addr) = server(&[4, 16_777_251], handler_fn(|_req: Message| async { Option::<Message>::None })).await;
    let peer = client(&[4]).connect(addr.into()).await.unwrap();
    // Application not in common: 3007 from the connection itself.
    let ans = peer.send(Message::request(16_777_251, 316).avp(avps::SESSION_ID, "s").build()).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(3007));
    assert!(ans.flags().is_error());
    // Handler declines: 3001.
    let ans = peer.send(ccr(1)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(3001));
    assert_eq!(peer.state(), PeerState::Open, "errors never close the link");
}

#[tokio::test]
async fn panicking_handler_gets_5012() {
    let (_srv, addr) = server(
        &[apps::RELAY],
        handler_fn(|_req: Message| async {
            if true {
                panic!("handler bug");
            }
            None
        }),
    )
    .await;
    let peer = client(&[4]).connect(addr.into()).await.unwrap();
    let ans = peer.send(ccr(1)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(5012));
    let ans = peer.send(ccr(2)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(5012), "the connection survives");
}

#[tokio::test]
async fn server_shutdown_sends_dpr() {
    let (srv, addr) = server(&[apps::RELAY], echo_handler("server.test")).await;
    let node = client(&[4]);
    let (seen, _sub) = failures(&node);
    let peer = node.connect(addr.into()).await.unwrap();
    srv.shutdown(Duration::from_secs(2)).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), until_closed(&peer)).await.unwrap();
    assert_eq!(reason, CloseReason::PeerDisconnected { cause: Some(0) });
    eventually(|| !seen.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A scripted peer: answers the CER, then behaves as told.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Script {
    /// Never answer the CER.
    MuteHandshake,
    /// Read everything, answer nothing (not even DWR).
    Silent,
    /// Stop reading after the handshake.
    StopReading,
    /// Close the socket after receiving `n` requests.
    CloseAfter(usize),
    /// Answer every request twice, the second time with a bogus hop-by-hop.
    AnswerWithStray,
}

async fn scripted_peer(script: Script) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let mut dec = FrameDecoder::new();
        let mut requests = 0;
        loop {
            let m = loop {
                if let Some(m) = dec.decode(&mut buf).unwrap() {
                    break m;
                }
                if sock.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
            };
            if m.command_code() == 257 {
                if script == Script::MuteHandshake {
                    continue;
                }
                let cea = Message::answer_to(&m)
                    .avp(avps::RESULT_CODE, 2001u32)
                    .avp(avps::ORIGIN_HOST, "scripted.test")
                    .avp(avps::ORIGIN_REALM, "test")
                    .avp(avps::AUTH_APPLICATION_ID, 4u32)
                    .build();
                sock.write_all(cea.as_bytes()).await.unwrap();
                if script == Script::StopReading {
                    // Keep the socket open without reading.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                continue;
            }
            requests += 1;
            match script {
                Script::CloseAfter(n) if requests >= n => return,
                Script::AnswerWithStray => {
                    let ans = Message::answer_to(&m).avp(avps::RESULT_CODE, 2001u32).build();
                    let stray = ans.with_ids(m.hop_by_hop().wrapping_add(1000), m.end_to_end());
                    sock.write_all(stray.as_bytes()).await.unwrap();
                    sock.write_all(ans.as_bytes()).await.unwrap();
                }
                _ => {}
            }
        }
    });
    addr
}

#[tokio::test]
async fn peer_closing_mid_flight_fails_every_pending_request_fast() {
    let addr = scripted_peer(Script::CloseAfter(50)).await;
    let node = client(&[4]);
    let (seen, _sub) = failures(&node);
    let peer = node.connect(addr.into()).await.unwrap();
    let start = Instant::now();
    let mut joins = Vec::new();
    for n in 0..50 {
        let p = peer.clone();
        joins.push(tokio::spawn(async move { (p.send(ccr(n)).await, Instant::now()) }));
    }
    let mut latest = start;
    for j in joins {
        let (r, at) = j.await.unwrap();
        assert!(matches!(r, Err(Error::ConnectionLost(CloseReason::TransportClosed))), "{r:?}");
        latest = latest.max(at);
    }
    let took = latest - start;
    // The request timeout is 5 s; failing fast means the close, not it.
    assert!(took < Duration::from_millis(500), "pending requests took {took:?} to fail");
    assert_eq!(peer.state(), PeerState::Closed, "a one-off connection does not reconnect");
    eventually(|| !seen.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "on_failure fires once: {seen:?}");
    assert_eq!(seen[0].reason, CloseReason::TransportClosed);
    assert_eq!(seen[0].peer_address, Some(addr.into()));
    assert_eq!(seen[0].peer_origin_host.as_deref(), Some("scripted.test"));
    assert_eq!(seen[0].connection_id, peer.id(), "failures and events share the peer's id");
}

#[tokio::test(start_paused = true)]
async fn peer_never_answering_cer_times_out() {
    let addr = scripted_peer(Script::MuteHandshake).await;
    let start = Instant::now();
    let err = client(&[4]).connect(addr.into()).await.unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout), "{err}");
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn silent_peer_goes_suspect_then_down_by_watchdog_on_exact_schedule() {
    let addr = scripted_peer(Script::Silent).await;
    let mut c = config("client.test", &[4]);
    c.connection.peer.watchdog.interval = Duration::from_secs(30);
    c.connection.peer.watchdog.dwr_timeout = Duration::from_secs(10);
    c.connection.peer.watchdog.max_dwr_failures = 3;
    // The schedule below starts with the first DWR exactly at Tw.
    c.connection.peer.watchdog.first_interval_spread = Duration::ZERO;
    let node = Node::builder(c).build().unwrap();
    // The callback runs on the dispatcher's own thread: a channel, not
    // paused time, says when it ran.
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = Mutex::new(tx);
    let _sub = node.on_failure(move |f| {
        let _ = tx.lock().unwrap().send(f.reason.clone());
    });
    let peer = node.connect(addr.into()).await.unwrap();
    let opened = Instant::now();
    // SUSPECT is visible and stops new requests.
    assert_eq!(peer.wait_for_state(|s| s == PeerState::Suspect).await, PeerState::Suspect);
    assert_eq!(Instant::now() - opened, Duration::from_secs(40));
    let r = peer.send_with_timeout(ccr(1), Duration::from_secs(5)).await;
    assert!(matches!(r, Err(Error::Timeout)), "a SUSPECT peer takes no request: {r:?}");
    let reason = until_closed(&peer).await;
    assert_eq!(reason, CloseReason::WatchdogDown { unanswered: 3 });
    // DWR at 30 s, SUSPECT at 40 s; DWR at 70, 110; DOWN at 120 s.
    assert_eq!(Instant::now() - opened, Duration::from_secs(120));
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), CloseReason::WatchdogDown { unanswered: 3 });
    assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "on_failure fires once");
}

#[tokio::test]
async fn peer_that_stops_reading_trips_the_write_timeout() {
    let addr = scripted_peer(Script::StopReading).await;
    let mut c = config("client.test", &[4]);
    c.connection.write_timeout = Duration::from_millis(300);
    c.connection.request_timeout = Duration::from_secs(30);
    let peer = Node::builder(c).build().unwrap().connect(addr.into()).await.unwrap();
    let big = vec![0u8; 64 * 1024];
    let mut joins = Vec::new();
    for n in 0..400u32 {
        let p = peer.clone();
        let req =
            Message::request(4, 272).avp(avps::SESSION_ID, format!("s;{n}")).avp(avps::CLASS, big.clone()).build();
        joins.push(tokio::spawn(async move { p.send(req).await }));
    }
    let reason = tokio::time::timeout(Duration::from_secs(10), until_closed(&peer)).await.expect("closed");
    assert_eq!(reason, CloseReason::WriteTimeout);
    for j in joins {
        let r = j.await.unwrap();
        assert!(
            matches!(
                r,
                Err(Error::ConnectionLost(CloseReason::WriteTimeout))
                    | Err(Error::Overloaded)
                    | Err(Error::HandshakeFailed { .. })
                    | Err(Error::ConnectionLost(_))
                    | Err(Error::Closed)
            ),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn stray_answers_are_dropped_and_counted() {
    let addr = scripted_peer(Script::AnswerWithStray).await;
    let peer = client(&[4]).connect(addr.into()).await.unwrap();
    for n in 0..5 {
        let ans = peer.send(ccr(n)).await.unwrap();
        assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    }
    assert_eq!(peer.stats().unknown_answers, 5);
    assert_eq!(peer.state(), PeerState::Open);
}

#[tokio::test(start_paused = true)]
async fn request_timeout_and_backpressure() {
    let addr = scripted_peer(Script::Silent).await;
    let mut c = config("client.test", &[4]);
    c.connection.max_pending = 2;
    c.connection.request_timeout = Duration::from_secs(2);
    let peer = Node::builder(c).build().unwrap().connect(addr.into()).await.unwrap();
    let a = peer.try_send(ccr(1)).unwrap();
    let b = peer.try_send(ccr(2)).unwrap();
    assert!(matches!(peer.try_send(ccr(3)), Err(Error::Overloaded)));
    assert_eq!(peer.in_flight(), 2);
    let start = Instant::now();
    // `send` waits for room, then its own deadline passes too.
    let waiting = peer.send_with_timeout(ccr(4), Duration::from_secs(1));
    let (ra, rb, rc) = tokio::join!(a, b, waiting);
    assert!(matches!(ra, Err(Error::Timeout)));
    assert!(matches!(rb, Err(Error::Timeout)));
    assert!(matches!(rc, Err(Error::Timeout)));
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    assert_eq!(peer.stats().timeouts, 2);
    assert_eq!(peer.in_flight(), 0);
    // Dropping a request future is safe: its slot comes back by its deadline.
    drop(peer.try_send(ccr(5)).unwrap());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(peer.in_flight(), 0);
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let mut c = config("client.test", &[4]);
    c.connection.max_pending = 0;
    assert!(matches!(Node::builder(c).build(), Err(Error::InvalidConfig(_))));
    let c = NodeConfig::new("bad host", "test");
    assert!(matches!(Node::builder(c).build(), Err(Error::InvalidConfig(_))));
    let node = client(&[4]);
    assert!(matches!(node.add_peer("bad host!", ["127.0.0.1:1".parse().unwrap()]), Err(Error::InvalidConfig(_))));
    assert!(matches!(node.add_peer("client.test", ["127.0.0.1:1".parse().unwrap()]), Err(Error::InvalidConfig(_))));
    let many: Vec<PeerAddr> = (1..=17).map(|p| format!("127.0.0.1:{p}").parse().unwrap()).collect();
    assert!(matches!(node.add_peer("ok.test", many), Err(Error::InvalidConfig(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_panicking_failure_callbacks_do_not_hold_anything_up() {
    let calls = Arc::new(Mutex::new(0usize));
    for panicking in [false, true] {
        let addr = scripted_peer(Script::CloseAfter(10)).await;
        let node = client(&[4]);
        let c = calls.clone();
        let _sub = node.on_failure(move |_info| {
            *c.lock().unwrap() += 1;
            if panicking {
                panic!("callback bug");
            }
            // A callback that blocks for a long time.
            std::thread::sleep(Duration::from_secs(1));
        });
        let peer = node.connect(addr.into()).await.unwrap();
        let start = Instant::now();
        let joins: Vec<_> = (0..10)
            .map(|n| {
                let p = peer.clone();
                tokio::spawn(async move { p.send(ccr(n)).await })
            })
            .collect();
        for j in joins {
            assert!(j.await.unwrap().unwrap_err().is_connection_lost());
        }
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        assert_eq!(until_closed(&peer).await, CloseReason::TransportClosed);
        let want = if panicking { 2 } else { 1 };
        eventually(|| *calls.lock().unwrap() >= want).await;
    }
    // The runtime still serves new connections after a callback panicked.
    let (_srv, addr) = server(&[apps::RELAY], echo_handler("server.test")).await;
    let peer = client(&[4]).connect(addr.into()).await.unwrap();
    assert!(peer.send(ccr(1)).await.is_ok());
    assert_eq!(*calls.lock().unwrap(), 2);
}
