//! Our client against our server and against scripted misbehaving peers,
//! all on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use diam_client::{handler_fn, CloseReason, ConnectionConfig, Error, FailureInfo, Hooks, Peer, PeerState, Server};
use diam_proto::{apps, avps, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

fn client_config(apps: &[u32]) -> ConnectionConfig {
    let mut c = ConnectionConfig::new("client.test", "test");
    c.peer.auth_application_ids = apps.to_vec();
    c.peer.watchdog.jitter = Duration::ZERO;
    c
}

fn echo_handler() -> Arc<dyn diam_client::Handler> {
    handler_fn(|req: Message| async move {
        Some(
            Message::answer_to(&req)
                .avp(avps::RESULT_CODE, 2001u32)
                .avp(avps::ORIGIN_HOST, "server.test")
                .avp(avps::ORIGIN_REALM, "test")
                .build(),
        )
    })
}

async fn start_server(
    apps: &[u32],
    handler: Arc<dyn diam_client::Handler>,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut config = ConnectionConfig::new("server.test", "test");
    config.peer.auth_application_ids = apps.to_vec();
    let server =
        Server::bind("127.0.0.1:0".parse().unwrap(), config, Hooks { handler: Some(handler), ..Hooks::default() })
            .await
            .unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop, task)
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

fn failures() -> (Arc<Mutex<Vec<FailureInfo>>>, Hooks) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let hooks = Hooks { on_failure: Some(Arc::new(move |f| s.lock().unwrap().push(f))), ..Hooks::default() };
    (seen, hooks)
}

#[tokio::test]
async fn request_answer_round_trips_concurrently() {
    let (addr, stop, task) = start_server(&[apps::RELAY], echo_handler()).await;
    let peer = Peer::connect(addr, client_config(&[4])).await.unwrap();
    assert_eq!(peer.state(), PeerState::Open);
    assert_eq!(peer.peer_info().unwrap().origin_host, "server.test");
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
    peer.close(0).await;
    assert_eq!(peer.state(), PeerState::Closed);
    assert!(matches!(peer.send(ccr(1)).await, Err(Error::Closed)));
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test]
async fn no_common_application_fails_with_5010() {
    let (addr, _stop, _task) = start_server(&[4], echo_handler()).await;
    let err = Peer::connect(addr, client_config(&[16_777_251])).await.unwrap_err();
    assert_eq!(err.handshake_result_code(), Some(5010), "{err}");
}

#[tokio::test]
async fn unsupported_application_and_missing_handler() {
    let (addr, _stop, _task) =
        start_server(&[4, 16_777_251], handler_fn(|_req: Message| async { Option::<Message>::None })).await;
    let peer = Peer::connect(addr, client_config(&[4])).await.unwrap();
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
    let (addr, _stop, _task) = start_server(
        &[apps::RELAY],
        handler_fn(|_req: Message| async {
            if true {
                panic!("handler bug");
            }
            None
        }),
    )
    .await;
    let peer = Peer::connect(addr, client_config(&[4])).await.unwrap();
    let ans = peer.send(ccr(1)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(5012));
    let ans = peer.send(ccr(2)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(5012), "the connection survives");
}

#[tokio::test]
async fn server_shutdown_sends_dpr() {
    let (addr, stop, task) = start_server(&[apps::RELAY], echo_handler()).await;
    let (seen, hooks) = failures();
    let peer = Peer::connect_with(addr, client_config(&[4]), hooks).await.unwrap();
    let _ = stop.send(());
    let reason = tokio::time::timeout(Duration::from_secs(5), peer.closed()).await.unwrap();
    assert_eq!(reason, CloseReason::PeerDisconnected { cause: Some(0) });
    task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// A scripted peer: answers the CER with `cea_code`, then behaves as told.
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
    let (seen, hooks) = failures();
    let peer = Peer::connect_with(addr, client_config(&[4]), hooks).await.unwrap();
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
    assert!(took < Duration::from_millis(100), "pending requests took {took:?} to fail");
    eprintln!("all 50 pending requests failed {took:?} after submission");
    assert_eq!(peer.state(), PeerState::Failed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "on_failure fires once");
    assert_eq!(seen[0].reason, CloseReason::TransportClosed);
    assert_eq!(seen[0].peer_address, addr);
    assert_eq!(seen[0].peer_origin_host.as_deref(), Some("scripted.test"));
}

#[tokio::test(start_paused = true)]
async fn peer_never_answering_cer_times_out() {
    let addr = scripted_peer(Script::MuteHandshake).await;
    let start = Instant::now();
    let err = Peer::connect(addr, client_config(&[4])).await.unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout), "{err}");
    assert_eq!(Instant::now() - start, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn silent_peer_goes_down_by_watchdog_on_exact_schedule() {
    let addr = scripted_peer(Script::Silent).await;
    let (seen, hooks) = failures();
    let mut config = client_config(&[4]);
    config.peer.watchdog.interval = Duration::from_secs(30);
    config.peer.watchdog.dwr_timeout = Duration::from_secs(10);
    config.peer.watchdog.max_dwr_failures = 3;
    let peer = Peer::connect_with(addr, config, hooks).await.unwrap();
    let opened = Instant::now();
    let reason = peer.closed().await;
    assert_eq!(reason, CloseReason::WatchdogDown { unanswered: 3 });
    // DWR at 30 s, SUSPECT at 40 s; DWR at 70, 110; DOWN at 120 s.
    assert_eq!(Instant::now() - opened, Duration::from_secs(120));
    assert_eq!(peer.state(), PeerState::Failed);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn peer_that_stops_reading_trips_the_write_timeout() {
    let addr = scripted_peer(Script::StopReading).await;
    let mut config = client_config(&[4]);
    config.write_timeout = Duration::from_millis(300);
    config.request_timeout = Duration::from_secs(30);
    let peer = Peer::connect(addr, config).await.unwrap();
    let big = vec![0u8; 64 * 1024];
    let mut joins = Vec::new();
    for n in 0..400u32 {
        let p = peer.clone();
        let req =
            Message::request(4, 272).avp(avps::SESSION_ID, format!("s;{n}")).avp(avps::CLASS, big.clone()).build();
        joins.push(tokio::spawn(async move { p.send(req).await }));
    }
    let reason =
        tokio::time::timeout(Duration::from_secs(10), peer.closed()).await.expect("closed by the write timeout");
    assert_eq!(reason, CloseReason::WriteTimeout);
    for j in joins {
        let r = j.await.unwrap();
        assert!(matches!(r, Err(Error::ConnectionLost(CloseReason::WriteTimeout)) | Err(Error::Overloaded)), "{r:?}");
    }
}

#[tokio::test]
async fn stray_answers_are_dropped_and_counted() {
    let addr = scripted_peer(Script::AnswerWithStray).await;
    let peer = Peer::connect(addr, client_config(&[4])).await.unwrap();
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
    let mut config = client_config(&[4]);
    config.max_pending = 2;
    config.request_timeout = Duration::from_secs(2);
    let peer = Peer::connect(addr, config).await.unwrap();
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
    let mut c = client_config(&[4]);
    c.max_pending = 0;
    let err = Peer::connect("127.0.0.1:1".parse().unwrap(), c).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    let c = ConnectionConfig::new("bad host", "test");
    assert!(matches!(Peer::connect("127.0.0.1:1".parse().unwrap(), c).await, Err(Error::InvalidConfig(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_panicking_failure_callbacks_do_not_hold_anything_up() {
    let calls = Arc::new(Mutex::new(0usize));
    for panicking in [false, true] {
        let addr = scripted_peer(Script::CloseAfter(10)).await;
        let c = calls.clone();
        let hooks = Hooks {
            on_failure: Some(Arc::new(move |_info| {
                *c.lock().unwrap() += 1;
                if panicking {
                    panic!("callback bug");
                }
                // A callback that blocks for a long time.
                std::thread::sleep(Duration::from_secs(1));
            })),
            ..Hooks::default()
        };
        let peer = Peer::connect_with(addr, client_config(&[4]), hooks).await.unwrap();
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
        assert_eq!(peer.closed().await, CloseReason::TransportClosed);
    }
    // The runtime still serves new connections after a callback panicked.
    let (addr, _stop, _task) = start_server(&[apps::RELAY], echo_handler()).await;
    let peer = Peer::connect(addr, client_config(&[4])).await.unwrap();
    assert!(peer.send(ccr(1)).await.is_ok());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*calls.lock().unwrap(), 2);
}
