//! The address-keyed pool against real sockets on 127.0.0.1.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::TestPeer;
use diam_client::{AddressClient, Error, PoolConfig, PoolFailure};
use diam_link::events::{EventData, EventKind};
use diam_proto::{avps, Message};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

fn config() -> PoolConfig {
    let mut c = PoolConfig::new("client.test", "test");
    c.connection.peer.auth_application_ids = vec![4];
    c.reconnect_interval = Duration::from_millis(50);
    c.max_reconnect_delay = Duration::from_millis(200);
    c
}

fn ccr(n: u32) -> Message {
    Message::request(4, 272).avp(avps::SESSION_ID, format!("client.test;1;{n}")).avp(avps::CC_REQUEST_NUMBER, n).build()
}

#[tokio::test]
async fn one_connection_per_address_with_single_flight_establishment() {
    let peer = TestPeer::start(Duration::ZERO).await;
    let client = AddressClient::new(config()).unwrap();
    let mut joins = JoinSet::new();
    for n in 0..1000 {
        let c = client.clone();
        let addr = peer.addr;
        joins.spawn(async move { c.send(addr, ccr(n)).await });
    }
    while let Some(r) = joins.join_next().await {
        assert_eq!(r.unwrap().unwrap().get(avps::RESULT_CODE).unwrap(), Some(2001));
    }
    assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
    let s = client.stats();
    assert_eq!((s.requests, s.answers, s.connections_created, s.active_connections), (1000, 1000, 1, 1));
    assert_eq!(client.list_connections(), vec![peer.addr.into()]);
    let snap = client.connection(peer.addr).unwrap();
    assert_eq!(snap.origin_host.as_deref(), Some("peer.test"));
    assert!(snap.stats.messages_sent >= 1001);
    let before = client.stats();
    client.close(Duration::from_secs(1)).await;
    let after = client.stats();
    assert!(after.messages_sent >= before.messages_sent, "traffic totals survive close: {after:?}");
    assert!(after.bytes_received >= before.bytes_received && after.bytes_received > 0);
    assert!(matches!(client.send(peer.addr, ccr(1)).await, Err(Error::PoolClosed)));
}

#[tokio::test]
async fn send_no_wait_keeps_the_accounting_invariant() {
    let peer = TestPeer::start(Duration::ZERO).await;
    let client = AddressClient::new(config()).unwrap();
    // Not open yet: a counted error.
    assert!(client.send_no_wait(peer.addr, ccr(0)).is_err());
    client.send(peer.addr, ccr(1)).await.unwrap();
    for n in 2..12 {
        client.send_no_wait(peer.addr, ccr(n)).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = client.stats();
    assert_eq!(s.requests, 12);
    assert_eq!(s.requests, s.answers + s.errors + s.timeouts, "{s:?}");
    assert_eq!(s.answers, 11);
}

#[tokio::test]
async fn failed_establishment_reaches_every_waiter_and_is_retried_next_time() {
    // A port with nothing listening.
    let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let client = AddressClient::new(config()).unwrap();
    let mut joins = JoinSet::new();
    for n in 0..20 {
        let c = client.clone();
        joins.spawn(async move { c.send(addr, ccr(n)).await });
    }
    while let Some(r) = joins.join_next().await {
        assert_eq!(r.unwrap().unwrap_err().kind_name(), "connect");
    }
    assert_eq!(client.stats().failed_attempts, 1, "one dial for all twenty");
    // The next send gets the error at once; the next dial waits for the
    // reconnect schedule (no dial per send).
    let started = Instant::now();
    assert_eq!(client.send(addr, ccr(1)).await.unwrap_err().kind_name(), "connect");
    assert!(started.elapsed() < Duration::from_millis(40), "{:?}", started.elapsed());
    assert_eq!(client.stats().failed_attempts, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.stats().failed_attempts >= 2, "the schedule dials again by itself");
    let s = client.stats();
    assert_eq!(s.requests, s.answers + s.errors + s.timeouts);
}

#[tokio::test]
async fn cancelled_first_caller_does_not_cancel_establishment() {
    let peer = TestPeer::start(Duration::ZERO).await;
    let client = AddressClient::new(config()).unwrap();
    let first = client.send(peer.addr, ccr(1));
    // Poll it once, then drop it.
    let _ = tokio::time::timeout(Duration::from_micros(1), first).await;
    let ans = client.send(peer.addr, ccr(2)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(client.stats().connections_created, 1);
    assert_eq!(peer.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failure_removes_the_entry_at_once_without_reconnect() {
    let mut peer = TestPeer::start(Duration::from_secs(10)).await;
    let mut c = config();
    c.reconnect_enabled = false;
    c.health_check_interval = Duration::from_secs(3600); // the sweep must not be what cleans up
    let client = AddressClient::new(c).unwrap();
    client.send(peer.addr, Message::request(0, 280).build()).await.ok();
    assert_eq!(client.active_connections(), 1);

    let seen: Arc<Mutex<Vec<PoolFailure>>> = Arc::default();
    let s = seen.clone();
    client.on_failure(move |f| s.lock().unwrap().push(f.clone()));
    let pending: Vec<_> = (0..10)
        .map(|n| {
            let c = client.clone();
            let addr = peer.addr;
            tokio::spawn(async move { c.send(addr, ccr(n)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let killed = Instant::now();
    peer.kill().await;
    for p in pending {
        assert!(p.await.unwrap().unwrap_err().is_connection_lost());
    }
    // The callback runs right after the pool reacted.
    while seen.lock().unwrap().is_empty() {
        assert!(killed.elapsed() < Duration::from_secs(1), "no failure callback");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let removed_after = killed.elapsed();
    assert_eq!(client.active_connections(), 0);
    let f = seen.lock().unwrap()[0].clone();
    assert!(!f.reconnecting);
    assert_eq!(f.peer_address, Some(peer.addr.into()));
    eprintln!("entry removed and callback run {removed_after:?} after the kill");
    assert!(removed_after < Duration::from_millis(200));
    assert_eq!(seen.lock().unwrap().len(), 1);

    // The next send dials afresh.
    peer.restart().await;
    assert!(client.send(peer.addr, Message::request(0, 280).build()).await.is_ok());
    assert_eq!(client.stats().connections_created, 2);
}

#[tokio::test]
async fn reconnects_in_place_and_reports_events() {
    let mut peer = TestPeer::start(Duration::ZERO).await;
    let client = AddressClient::with_events(config(), diam_link::events::EventDispatcher::new()).unwrap();
    let events: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let e = events.clone();
    let _sub = client.events().subscribe_all(move |ev: &diam_link::events::Event| {
        let name = match ev.data() {
            EventData::Connected { first: true } => "connected",
            EventData::Disconnected { .. } => "disconnected",
            EventData::Reconnected { .. } => "reconnected",
            EventData::ReconnectScheduled { .. } => "scheduled",
            _ => return,
        };
        e.lock().unwrap().push(name);
    });
    client.send(peer.addr, ccr(1)).await.unwrap();
    peer.kill().await;
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(client.active_connections(), 1, "the entry stays, reconnecting");
    peer.restart().await;
    // Sends during reconnection wait (within their timeout) and then succeed.
    let ans = client.send(peer.addr, ccr(2)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    let s = client.stats();
    assert_eq!(s.connections_created, 2);
    assert_eq!(s.connections_lost, 1);
    assert_eq!(client.connection(peer.addr).unwrap().reconnects, 1);
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.first(), Some(&"connected"));
    assert!(ev.contains(&"disconnected") && ev.contains(&"scheduled"));
    assert_eq!(ev.last(), Some(&"reconnected"));
    assert!(client.events().stats(EventKind::Reconnected).events >= 1);
}

#[tokio::test]
async fn fail_fast_while_reconnecting() {
    let mut peer = TestPeer::start(Duration::ZERO).await;
    let mut c = config();
    c.fail_fast_while_reconnecting = true;
    c.reconnect_interval = Duration::from_secs(5);
    c.max_reconnect_delay = Duration::from_secs(5);
    let client = AddressClient::new(c).unwrap();
    client.send(peer.addr, ccr(1)).await.unwrap();
    peer.kill().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let err = client.send(peer.addr, ccr(2)).await.unwrap_err();
    assert!(matches!(err, Error::Reconnecting), "{err}");
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close() {
    let peer = TestPeer::start(Duration::ZERO).await;
    let mut c = config();
    c.idle_timeout = Duration::from_secs(60);
    let client = AddressClient::new(c).unwrap();
    client.send(peer.addr, ccr(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(client.active_connections(), 1);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(client.active_connections(), 0);
    assert_eq!(client.stats().idle_closures, 1);
}

#[tokio::test]
async fn lifetime_rotation_loses_no_request() {
    let peer = TestPeer::start(Duration::from_millis(20)).await;
    let mut c = config();
    c.max_lifetime = Duration::from_millis(150);
    let client = AddressClient::new(c).unwrap();
    let deadline = Instant::now() + Duration::from_millis(700);
    let mut joins = JoinSet::new();
    for w in 0..8u32 {
        let c = client.clone();
        let addr = peer.addr;
        joins.spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                c.send(addr, ccr(w * 100_000 + n)).await.expect("no request fails because of rotation");
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(r) = joins.join_next().await {
        total += r.unwrap();
    }
    let s = client.stats();
    assert!(s.lifetime_expirations >= 2, "{s:?}");
    assert_eq!(s.requests, s.answers);
    assert_eq!(u64::from(total), s.answers);
    assert!(peer.connections.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn close_waits_for_pending_answers() {
    let peer = TestPeer::start(Duration::from_millis(100)).await;
    let client = AddressClient::new(config()).unwrap();
    client.send(peer.addr, Message::request(0, 280).build()).await.unwrap();
    let c = client.clone();
    let addr = peer.addr;
    let pending = tokio::spawn(async move { c.send(addr, ccr(1)).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.close(Duration::from_secs(2)).await;
    assert!(pending.await.unwrap().is_ok(), "the in-flight request was answered before DPR");
    assert_eq!(client.active_connections(), 0);
}

#[tokio::test]
async fn config_is_validated() {
    let mut c = config();
    c.reconnect_backoff = 0.5;
    assert!(AddressClient::new(c).unwrap_err().is_invalid_config());
    let mut c = config();
    c.reconnect_interval = Duration::from_secs(10);
    c.max_reconnect_delay = Duration::from_secs(1);
    assert!(AddressClient::new(c).unwrap_err().is_invalid_config());
    let mut c = config();
    c.max_connections = 0;
    assert!(AddressClient::new(c).unwrap_err().is_invalid_config());
}

#[tokio::test(start_paused = true)]
async fn lifetime_rotation_on_schedule() {
    let peer = TestPeer::start(Duration::ZERO).await;
    let mut c = config();
    c.max_lifetime = Duration::from_secs(600);
    let client = AddressClient::new(c).unwrap();
    client.send(peer.addr, ccr(1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(590)).await;
    assert_eq!(client.stats().lifetime_expirations, 0);
    tokio::time::sleep(Duration::from_secs(200)).await;
    let s = client.stats();
    assert_eq!(s.lifetime_expirations, 1, "{s:?}");
    assert_eq!(s.connections_created, 2);
    assert_eq!(client.active_connections(), 1, "the replacement took the old one's place");
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
    assert!(client.send(peer.addr, ccr(2)).await.is_ok());
}
