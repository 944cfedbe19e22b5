//! Peer groups against real sockets on 127.0.0.1: strategies, circuit
//! breakers, failover and failback (on tokio's paused clock), retransmission
//! with the T flag, and realm routing.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestPeer;
use diam_client::{AddressClient, Error, GroupConfig, GroupMember, PeerGroup, PoolConfig, Router, SendOptions};
use diam_link::balance::Strategy;
use diam_link::breaker::{BreakerConfig, BreakerEvent, BreakerState};
use diam_link::events::{Event, EventData, EventKind};
use diam_link::failover::{FailoverConfig, FailoverEvent, FailoverState};
use diam_link::health::{HealthConfig, HealthStatus};
use diam_proto::{avps, Message};
use tokio::task::JoinSet;

fn pool() -> AddressClient {
    let mut c = PoolConfig::new("client.test", "test");
    c.connection.peer.auth_application_ids = vec![4];
    c.reconnect_interval = Duration::from_millis(50);
    c.max_reconnect_delay = Duration::from_millis(200);
    // Listeners inline: the tests read what they recorded right after
    // acting (on paused time, a worker thread would lag behind).
    AddressClient::with_events(c, diam_link::events::EventDispatcher::new()).unwrap()
}

fn ccr(n: u32, proxiable: bool) -> Message {
    Message::request(4, 272)
        .proxiable(proxiable)
        .avp(avps::SESSION_ID, format!("client.test;1;{n}"))
        .avp(avps::DESTINATION_REALM, "test")
        .avp(avps::CC_REQUEST_NUMBER, n)
        .build()
}

async fn peers(n: usize, delay: Duration) -> Vec<TestPeer> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TestPeer::start(delay).await);
    }
    v
}

fn addrs(peers: &[TestPeer]) -> Vec<SocketAddr> {
    peers.iter().map(|p| p.addr).collect()
}

/// Waits (on whatever clock the test runs) until every member is usable.
async fn all_usable(group: &PeerGroup) {
    for _ in 0..2000 {
        if group.health_statistics().iter().all(|m| m.usable) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("members never became usable: {:?}", group.health_statistics());
}

fn answers_by_member(group: &PeerGroup) -> Vec<u64> {
    group.health_statistics().iter().map(|m| m.answers).collect()
}

async fn send_sequentially(group: &PeerGroup, n: u32) {
    for i in 0..n {
        let ans = group.send(ccr(i, true)).await.unwrap();
        assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    }
}

#[tokio::test]
async fn round_robin_and_lru_spread_evenly() {
    for strategy in [Strategy::RoundRobin, Strategy::LeastRecentlyUsed] {
        let servers = peers(3, Duration::ZERO).await;
        let client = pool();
        let group = PeerGroup::new(&client, addrs(&servers), GroupConfig::balance(strategy)).unwrap();
        all_usable(&group).await;
        send_sequentially(&group, 300).await;
        assert_eq!(answers_by_member(&group), [100, 100, 100], "{strategy}");
        assert_eq!(servers.iter().map(TestPeer::requests).collect::<Vec<_>>(), [100, 100, 100]);
        let s = group.stats();
        assert_eq!((s.requests, s.answers, s.errors, s.timeouts), (300, 300, 0, 0));
        // The pool counts the group's traffic too.
        assert_eq!(client.stats().answers, 300);
    }
}

#[tokio::test]
async fn random_and_weighted_follow_their_shares() {
    let servers = peers(3, Duration::ZERO).await;
    let client = pool();
    let mut config = GroupConfig::balance(Strategy::Random);
    config.seed = Some(7);
    let group = PeerGroup::new(&client, addrs(&servers), config).unwrap();
    all_usable(&group).await;
    send_sequentially(&group, 3000).await;
    for n in answers_by_member(&group) {
        assert!((850..=1150).contains(&n), "random: {:?}", answers_by_member(&group));
    }

    let members = servers.iter().zip([1, 1, 2]).map(|(p, w)| GroupMember::new(p.addr).weight(w));
    let mut config = GroupConfig::balance(Strategy::Weighted);
    config.seed = Some(11);
    let weighted = PeerGroup::new(&client, members, config).unwrap();
    all_usable(&weighted).await;
    send_sequentially(&weighted, 4000).await;
    let got = answers_by_member(&weighted);
    assert!((800..=1200).contains(&got[0]) && (800..=1200).contains(&got[1]), "weighted: {got:?}");
    assert!((1800..=2200).contains(&got[2]), "weight 2 gets half: {got:?}");
}

#[tokio::test(start_paused = true)]
async fn least_outstanding_avoids_the_busy_peer() {
    // The first member never answers within the test; the others at once.
    let mut servers = peers(1, Duration::from_secs(3600)).await;
    servers.extend(peers(2, Duration::ZERO).await);
    let client = pool();
    let group = PeerGroup::new(&client, addrs(&servers), GroupConfig::balance(Strategy::LeastOutstanding)).unwrap();
    all_usable(&group).await;
    // One request parks on the slow member (the fast ones answer the
    // others at once; ties are broken at random).
    let slow = loop {
        let g = group.clone();
        let h = tokio::spawn(async move { g.send_with_timeout(ccr(0, false), Duration::from_secs(7200)).await });
        while !h.is_finished() && group.health_statistics()[0].in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if group.health_statistics()[0].in_flight == 1 {
            break h;
        }
    };
    let before = group.health_statistics();
    send_sequentially(&group, 40).await;
    let stats = group.health_statistics();
    assert_eq!(stats[0].requests, 1, "nothing more went to the busy member: {stats:?}");
    let (d1, d2) = (stats[1].answers - before[1].answers, stats[2].answers - before[2].answers);
    assert_eq!(d1 + d2, 40);
    assert!(d1 >= 10 && d2 >= 10, "ties are broken at random: {stats:?}");
    slow.abort();
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_on_protocol_errors_and_recovers_after_its_wait() {
    let servers = peers(2, Duration::ZERO).await;
    let client = pool();
    let transitions: Arc<Mutex<Vec<(SocketAddr, BreakerState)>>> = Arc::default();
    let t = transitions.clone();
    let _sub = client.events().subscribe(EventKind::Custom, move |ev: &Event| {
        if let EventData::Custom(c) = ev.data() {
            if let (Some(b), Some(remote)) = (c.downcast_ref::<BreakerEvent>(), ev.remote()) {
                t.lock().unwrap().push((remote.to_string().parse().unwrap(), b.to()));
            }
        }
    });
    let mut config = GroupConfig::balance(Strategy::RoundRobin);
    config.breaker = BreakerConfig::default().consecutive_failures(3);
    config.breaker_open_min = Duration::from_secs(10);
    config.check_interval = Duration::ZERO;
    let group = PeerGroup::new(&client, addrs(&servers), config).unwrap();
    all_usable(&group).await;
    // Member 0 answers 3004 DIAMETER_TOO_BUSY: three of those open its breaker.
    servers[0].answer_with(3004);
    for n in 0..6 {
        let _ = group.send(ccr(n, true)).await.unwrap();
    }
    let stats = group.health_statistics();
    assert_eq!(stats[0].breaker, BreakerState::Open);
    assert!(!stats[0].usable);
    assert_eq!(stats[0].answers, 3);
    // While open, everything goes to member 1.
    send_sequentially(&group, 10).await;
    assert_eq!(servers[0].requests(), 3);
    assert_eq!(servers[1].requests(), 13);

    // The peer recovers; after the open wait one probe goes through and closes it.
    servers[0].answer_with(0);
    tokio::time::sleep(Duration::from_secs(9)).await;
    send_sequentially(&group, 4).await;
    assert_eq!(servers[0].requests(), 3, "still open before the wait is over");
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_sequentially(&group, 4).await;
    assert_eq!(group.health_statistics()[0].breaker, BreakerState::Closed);
    assert_eq!(servers[0].requests(), 5, "the probe, then round-robin again");
    let t = transitions.lock().unwrap().clone();
    let a = servers[0].addr;
    assert_eq!(t, [(a, BreakerState::Open), (a, BreakerState::HalfOpen), (a, BreakerState::Closed)]);
    // 3xxx answers count as failures in the member's health, too.
    assert!(group.health_statistics()[0].health.total_failures >= 3);
}

#[tokio::test(start_paused = true)]
async fn failover_then_failback_only_after_the_stable_period() {
    let mut servers = peers(2, Duration::ZERO).await;
    let client = pool();
    let seen: Arc<Mutex<Vec<FailoverState>>> = Arc::default();
    let s = seen.clone();
    let _sub = client.events().subscribe(EventKind::Custom, move |ev: &Event| {
        if let EventData::Custom(c) = ev.data() {
            if let Some(f) = c.downcast_ref::<FailoverEvent>() {
                s.lock().unwrap().push(f.to());
            }
        }
    });
    let mut config = GroupConfig::failover(FailoverConfig::default().failback_after(Duration::from_secs(60)));
    config.breaker_open_min = Duration::from_millis(100);
    let group = PeerGroup::new(&client, addrs(&servers), config).unwrap();
    all_usable(&group).await;
    send_sequentially(&group, 5).await;
    assert_eq!(group.failover_state(), Some(FailoverState::Primary));
    assert_eq!((servers[0].requests(), servers[1].requests()), (5, 0));

    servers[0].kill().await;
    send_sequentially(&group, 5).await;
    assert_eq!(servers[1].requests(), 5, "the secondary took over");
    assert_eq!(group.failover_state(), Some(FailoverState::Secondary));
    assert_eq!(group.active(), Some(1));

    servers[0].restart().await;
    // The primary reconnects (pool backoff) and its breaker lets it through.
    for _ in 0..100 {
        if group.health_statistics()[0].usable {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(group.health_statistics()[0].usable);
    tokio::time::sleep(Duration::from_secs(55)).await;
    send_sequentially(&group, 5).await;
    assert_eq!(servers[0].requests(), 5, "no failback before the stable period");
    assert_eq!(group.failover_state(), Some(FailoverState::Secondary));

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(group.failover_state(), Some(FailoverState::FailingBack), "the timer failed back");
    send_sequentially(&group, 5).await;
    assert_eq!((servers[0].requests(), servers[1].requests()), (10, 10));
    assert_eq!(group.failover_state(), Some(FailoverState::Primary));
    {
        use FailoverState::*;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[seen.len() - 4..], [FailingOver, Secondary, FailingBack, Primary], "{seen:?}");
    }
    let stats = group.failover_statistics();
    assert_eq!((stats.failovers, stats.failbacks), (1, 1), "{stats:?}");
    let reconnects = group.reconnection_statistics();
    assert_eq!((reconnects[0].connections_lost, reconnects[0].reopened), (1, 1));

    // Manual failover holds traffic on the secondary until a manual failback.
    assert_eq!(group.failover(), Some(1));
    tokio::time::sleep(Duration::from_secs(120)).await;
    send_sequentially(&group, 3).await;
    assert_eq!(servers[1].requests(), 13);
    assert!(group.failback());
    send_sequentially(&group, 3).await;
    assert_eq!(servers[0].requests(), 13);
}

#[tokio::test]
async fn a_lost_connection_retransmits_retryable_requests_with_the_t_flag() {
    // Member 0 holds its answers, so requests are pending when it dies.
    let mut slow = TestPeer::start(Duration::from_secs(30)).await;
    let fast = TestPeer::start(Duration::ZERO).await;
    let client = pool();
    let group = PeerGroup::new(&client, [slow.addr, fast.addr], GroupConfig::balance(Strategy::RoundRobin)).unwrap();
    all_usable(&group).await;
    let mut joins = JoinSet::new();
    for n in 0..40u32 {
        let g = group.clone();
        // A third proxiable (retryable by default), a third marked retryable,
        // a third neither.
        let opts = if n % 3 == 1 { SendOptions::new().retryable(true) } else { SendOptions::new() };
        joins.spawn(async move { (n, g.send_with(ccr(n, n % 3 == 0), opts).await) });
    }
    while slow.requests() < 20 || fast.requests() < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let on_slow: Vec<(u32, bool, Option<u32>)> = slow.seen.ids.lock().unwrap().clone();
    let slow_e2e: HashSet<u32> = on_slow.iter().map(|(e2e, _, _)| *e2e).collect();
    let retryable = |n: u32| n % 3 != 2;
    let expect_lost: HashSet<u32> = on_slow.iter().filter_map(|(_, _, n)| n.filter(|n| !retryable(*n))).collect();
    let expect_retransmitted = on_slow.len() - expect_lost.len();
    slow.kill().await;
    let mut lost = HashSet::new();
    while let Some(r) = joins.join_next().await {
        match r.unwrap() {
            (_, Ok(ans)) => assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001)),
            (n, Err(e)) => {
                assert!(!retryable(n), "request {n} was retryable, yet failed: {e}");
                assert!(e.is_connection_lost(), "{e}");
                lost.insert(n);
            }
        }
    }
    assert_eq!(on_slow.len(), 20);
    assert_eq!(lost, expect_lost, "exactly the non-retryable requests on the lost connection failed");
    assert_eq!(fast.retransmits(), expect_retransmitted, "the T flag arrived at the alternate");
    let retransmitted: Vec<u32> =
        fast.seen.ids.lock().unwrap().iter().filter(|(_, t, _)| *t).map(|(e2e, _, _)| *e2e).collect();
    assert!(retransmitted.iter().all(|e2e| slow_e2e.contains(e2e)), "same End-to-End ids as the first attempt");
    let n = expect_retransmitted as u64;
    let f = group.failover_statistics();
    assert_eq!((f.retransmissions, f.retransmissions_answered, f.failovers), (n, n, 1));
    assert_eq!(group.health_statistics()[1].retransmissions_received, n);
    let s = group.stats();
    assert_eq!(s.requests, s.answers + s.errors + s.timeouts);
}

#[tokio::test(start_paused = true)]
async fn no_usable_member_waits_up_to_the_timeout_or_fails_fast() {
    // Nothing listens on these ports.
    let dead: Vec<SocketAddr> = {
        let l: Vec<_> = (0..2).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        l.iter().map(|l| l.local_addr().unwrap()).collect()
    };
    let client = pool();
    let group = PeerGroup::new(&client, dead.clone(), GroupConfig::default()).unwrap();
    let started = tokio::time::Instant::now();
    let err = group.send_with_timeout(ccr(1, true), Duration::from_secs(3)).await.unwrap_err();
    assert!(matches!(err, Error::NoPeerAvailable), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    let config = GroupConfig { wait_for_peer: false, ..GroupConfig::default() };
    let fast = PeerGroup::new(&client, dead, config).unwrap();
    assert!(matches!(fast.send(ccr(2, true)).await, Err(Error::NoPeerAvailable)));
    let reconnects = group.reconnection_statistics();
    assert!(reconnects.iter().all(|r| r.failed_establishments >= 1), "{reconnects:?}");
    assert!(group.health_statistics().iter().all(|m| m.health.status >= HealthStatus::Unknown));
    let s = group.stats();
    assert_eq!((s.requests, s.errors), (1, 1));
}

#[tokio::test]
async fn router_picks_the_group_by_destination_realm() {
    let servers = peers(2, Duration::ZERO).await;
    let client = pool();
    let a = PeerGroup::new(&client, [servers[0].addr], GroupConfig::default()).unwrap();
    let b = PeerGroup::new(&client, [servers[1].addr], GroupConfig::default()).unwrap();
    let router = Router::new().route("Test", a).route("other.example", b.clone());
    let req = |realm: &str| {
        Message::request(4, 272).avp(avps::SESSION_ID, "client.test;1;1").avp(avps::DESTINATION_REALM, realm).build()
    };
    router.send(req("test")).await.unwrap();
    router.send(req("TEST")).await.unwrap();
    router.send(req("Other.Example")).await.unwrap();
    assert_eq!((servers[0].requests(), servers[1].requests()), (2, 1));
    let err = router.send(req("nowhere.example")).await.unwrap_err();
    assert!(matches!(&err, Error::NoRoute(Some(r)) if r == "nowhere.example"), "{err}");
    let no_realm = Message::request(4, 272).avp(avps::SESSION_ID, "client.test;1;2").build();
    assert!(matches!(router.send(no_realm.clone()).await, Err(Error::NoRoute(None))));
    let router = router.default_route(b);
    router.send(no_realm).await.unwrap();
    assert_eq!(servers[1].requests(), 2);
}

#[tokio::test]
async fn config_is_validated() {
    let client = pool();
    let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let none: [SocketAddr; 0] = [];
    assert!(PeerGroup::new(&client, none, GroupConfig::default()).unwrap_err().is_invalid_config());
    assert!(PeerGroup::new(&client, [a, a], GroupConfig::default()).unwrap_err().is_invalid_config());
    let c = GroupConfig { breaker_open_min: Duration::from_secs(100), ..GroupConfig::default() };
    assert!(PeerGroup::new(&client, [a], c).unwrap_err().is_invalid_config());
    let c = GroupConfig::failover(FailoverConfig::default().failback_after(Duration::ZERO));
    assert!(PeerGroup::new(&client, [a], c).unwrap_err().is_invalid_config());
}

#[tokio::test(start_paused = true)]
async fn a_dead_member_recovers_through_checks_even_with_periodic_checks_off() {
    let servers = peers(2, Duration::ZERO).await;
    let client = pool();
    let mut config = GroupConfig::balance(Strategy::RoundRobin);
    config.health = HealthConfig::default().failure_threshold(1).dead_threshold(2);
    config.check_interval = Duration::ZERO;
    let group = PeerGroup::new(&client, addrs(&servers), config).unwrap();
    all_usable(&group).await;
    servers[0].answer_with(3002); // DIAMETER_UNABLE_TO_DELIVER
    for n in 0..4 {
        let _ = group.send(ccr(n, true)).await.unwrap();
    }
    assert_eq!(group.health_statistics()[0].health.status, HealthStatus::Dead);
    servers[0].answer_with(0);
    send_sequentially(&group, 4).await;
    assert_eq!(servers[0].requests(), 2, "a dead member gets no traffic");
    // Dead members are still checked (every 5 s), back to back once they answer.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stats = group.health_statistics();
    assert_ne!(stats[0].health.status, HealthStatus::Dead, "{stats:?}");
    send_sequentially(&group, 4).await;
    assert_eq!(servers[0].requests(), 4, "back in the rotation");
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_probe_lets_the_next_request_through_at_once() {
    let server = TestPeer::start(Duration::from_secs(1)).await;
    let client = pool();
    let mut config = GroupConfig::balance(Strategy::RoundRobin);
    config.breaker = BreakerConfig::default().consecutive_failures(1);
    config.breaker_open_min = Duration::from_secs(10);
    config.check_interval = Duration::ZERO;
    let group = PeerGroup::new(&client, [server.addr], config).unwrap();
    all_usable(&group).await;
    server.answer_with(3004);
    let _ = group.send(ccr(0, true)).await.unwrap();
    assert_eq!(group.health_statistics()[0].breaker, BreakerState::Open);
    server.answer_with(0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The probe, whose caller will give up on it.
    let g = group.clone();
    let probe = tokio::spawn(async move { g.send_with_timeout(ccr(1, true), Duration::from_secs(60)).await });
    while server.requests() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let g = group.clone();
    let next = tokio::spawn(async move { g.send_with_timeout(ccr(2, true), Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.requests(), 2, "the next request waits while the probe is out");
    probe.abort();
    // Sent at once, not at the next timer (5 s away: dead-member checks).
    for _ in 0..50 {
        if server.requests() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(server.requests(), 3, "the freed probe slot went to the waiting request");
    let answer = next.await.unwrap().unwrap();
    assert_eq!(answer.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(group.health_statistics()[0].breaker, BreakerState::Closed);
    let s = group.stats();
    assert_eq!(s.requests, s.answers + s.errors + s.timeouts, "the abandoned request is counted: {s:?}");
}

#[tokio::test(start_paused = true)]
async fn every_request_is_counted_once_even_when_its_caller_gives_up() {
    let server = TestPeer::start(Duration::from_secs(3600)).await;
    let client = pool();
    let group = PeerGroup::new(&client, [server.addr], GroupConfig::default()).unwrap();
    all_usable(&group).await;
    for n in 0..5 {
        let r = tokio::time::timeout(Duration::from_millis(10), group.send(ccr(n, true))).await;
        assert!(r.is_err(), "the caller gave up");
    }
    let s = group.stats();
    assert_eq!((s.requests, s.errors), (5, 5), "{s:?}");
    let p = client.stats();
    assert_eq!(p.requests, p.answers + p.errors + p.timeouts, "{p:?}");
    assert_eq!(p.errors_by_kind, [("cancelled", 5)]);
    assert_eq!(group.health_statistics()[0].in_flight, 0);
    // A timeout too large to represent is "no deadline", not a panic.
    server.answer_with(0);
    let g = group.clone();
    let far = tokio::spawn(async move { g.send_with(ccr(9, true), SendOptions::new().timeout(Duration::MAX)).await });
    tokio::time::sleep(Duration::from_secs(7200)).await;
    assert!(far.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn group_traffic_keeps_idle_connections_alive() {
    let server = TestPeer::start(Duration::ZERO).await;
    let mut c = PoolConfig::new("client.test", "test");
    c.connection.peer.auth_application_ids = vec![4];
    c.idle_timeout = Duration::from_secs(60);
    let client = AddressClient::new(c).unwrap();
    let config = GroupConfig { check_interval: Duration::ZERO, ..GroupConfig::default() };
    let group = PeerGroup::new(&client, [server.addr], config).unwrap();
    all_usable(&group).await;
    for n in 0..18 {
        group.send(ccr(n, true)).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert_eq!(client.stats().idle_closures, 0);
    assert_eq!(server.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}
