//! Agents against real nodes on 127.0.0.1: a client node, an agent node
//! (relay, proxy, redirect routes) and one or two server nodes. What each
//! test asserts is counted where it happens (at the servers' handlers, at
//! the client) and checked against the agent's own counters.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestPeer;
use diam_client::{
    handler_fn, Action, Direction, Error, GroupConfig, Node, NodeConfig, PeerGroup, PeerHandle, PeerState, ProxyHook,
    RedirectTo, Response, RoutingTable,
};
use diam_link::balance::Strategy;
use diam_proto::peer::PeerInfo;
use diam_proto::routing::RedirectUsage;
use diam_proto::{apps, avps, Message};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

const AGENT: &str = "agent.test";
const AGENT_REALM: &str = "agents.test";
const SRV_REALM: &str = "srv.test";

fn config(host: &str, realm: &str, apps: &[u32]) -> NodeConfig {
    let mut c = NodeConfig::new(host, realm);
    c.connection.peer.auth_application_ids = apps.to_vec();
    c.connection.peer.watchdog.jitter = Duration::ZERO;
    c
}

/// How a server's handler behaves.
#[derive(Clone)]
enum Mode {
    /// Answers 2001 at once.
    Answer,
    /// Answers 2001 once the flag turns true.
    Hold(watch::Receiver<bool>),
    /// Never answers.
    Silent,
    /// Answers this (protocol error) Result-Code, with the E bit.
    Fail(u32),
}

/// A server node and what its handler saw.
struct Server {
    node: Node,
    addr: SocketAddr,
    /// Every request the handler got, in arrival order.
    seen: Arc<Mutex<Vec<Message>>>,
    /// Every answer the handler gave.
    answers: Arc<Mutex<Vec<Message>>>,
}

impl Server {
    async fn start(host: &'static str, realm: &'static str, mode: Mode) -> Server {
        let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
        let answers: Arc<Mutex<Vec<Message>>> = Arc::default();
        let (s, a) = (seen.clone(), answers.clone());
        let handler = handler_fn(move |req: Message| {
            // Counted as the request is dispatched, before any waiting.
            s.lock().unwrap().push(req.clone());
            let (mode, answers) = (mode.clone(), a.clone());
            async move {
                let fail = match &mode {
                    Mode::Fail(rc) => Some(*rc),
                    _ => None,
                };
                match mode {
                    Mode::Silent => return Response::NoAnswer,
                    Mode::Hold(mut rx) => {
                        let _ = rx.wait_for(|go| *go).await;
                    }
                    Mode::Answer | Mode::Fail(_) => {}
                }
                let (rc, e) = fail.map_or((2001, false), |rc| (rc, true));
                let ans = Message::answer_to(&req)
                    .error(e)
                    .avp(avps::RESULT_CODE, rc)
                    .avp(avps::ORIGIN_HOST, host)
                    .avp(avps::ORIGIN_REALM, realm)
                    .avp(avps::CLASS, format!("served-by-{host}").into_bytes())
                    .build();
                answers.lock().unwrap().push(ans.clone());
                Response::Answer(ans)
            }
        });
        let node = Node::builder(config(host, realm, &[4])).default_handler(handler).accept_any().build().unwrap();
        let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Server { node, addr, seen, answers }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn retransmits(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|m| m.flags().is_retransmit()).count()
    }
}

/// The agent's own handler (requests it serves locally).
fn agent_handler(served: Arc<AtomicUsize>) -> Arc<dyn diam_client::Handler> {
    handler_fn(move |req: Message| {
        served.fetch_add(1, Ordering::SeqCst);
        async move {
            Message::answer_to(&req)
                .avp(avps::RESULT_CODE, 2001u32)
                .avp(avps::ORIGIN_HOST, AGENT)
                .avp(avps::ORIGIN_REALM, AGENT_REALM)
                .build()
        }
    })
}

/// An agent node listening on 127.0.0.1 (it advertises the Relay
/// application), with a local handler counting what it serves.
async fn agent_with(c: NodeConfig) -> (Node, SocketAddr, Arc<AtomicUsize>) {
    let served = Arc::new(AtomicUsize::new(0));
    let node = Node::builder(c).default_handler(agent_handler(served.clone())).accept_any().build().unwrap();
    let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (node, addr, served)
}

async fn start_agent() -> (Node, SocketAddr, Arc<AtomicUsize>) {
    agent_with(config(AGENT, AGENT_REALM, &[apps::RELAY])).await
}

/// Waits (bounded) until `cond` holds, on whatever clock the test runs.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

async fn open(p: &PeerHandle) {
    let s = tokio::time::timeout(Duration::from_secs(5), p.wait_for_state(|s| s == PeerState::Open)).await;
    assert_eq!(s.expect("peer never opened"), PeerState::Open);
}

/// The agent's configured peer `identity` at `addr`, once open.
async fn upstream(agent: &Node, identity: &str, addr: SocketAddr) -> PeerHandle {
    let p = agent.add_peer(identity, [addr.into()]).unwrap();
    open(&p).await;
    p
}

/// A round-robin group of `peers`, once every member is usable.
async fn group(peers: Vec<PeerHandle>) -> PeerGroup {
    let g = PeerGroup::with_peers(peers, GroupConfig::balance(Strategy::RoundRobin)).unwrap();
    eventually("every member usable", || g.health_statistics().iter().all(|m| m.usable)).await;
    g
}

fn relay_to(realm: &str, g: &PeerGroup) -> RoutingTable {
    RoutingTable::new().route(realm, None, Action::Relay(g.clone())).unwrap()
}

/// A client node connected to the agent.
async fn client_of(agent_addr: SocketAddr) -> (Node, PeerHandle) {
    let node = Node::builder(config("client.test", "client.test", &[4])).build().unwrap();
    let peer = node.connect(agent_addr.into()).await.unwrap();
    (node, peer)
}

/// A proxiable CCR for `realm`, with End-to-End identifier `e2e`.
fn ccr_builder(n: u32, realm: &str) -> diam_proto::MessageBuilder {
    Message::request(4, 272)
        .proxiable(true)
        .end_to_end(0x00C0_0000 + n)
        .avp(avps::SESSION_ID, format!("client.test;1;{n}"))
        .avp(avps::ORIGIN_HOST, "client.test")
        .avp(avps::ORIGIN_REALM, "client.test")
        .avp(avps::DESTINATION_REALM, realm)
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .avp(avps::CC_REQUEST_TYPE, 1)
        .avp(avps::CC_REQUEST_NUMBER, n)
}

fn ccr(n: u32, realm: &str) -> Message {
    ccr_builder(n, realm).build()
}

fn rc(m: &Message) -> Option<u32> {
    m.get(avps::RESULT_CODE).unwrap()
}

fn route_records(m: &Message) -> Vec<String> {
    m.get_all(avps::ROUTE_RECORD).map(|r| r.unwrap().to_string()).collect()
}

/// Route-Record (282) naming `identity`, encoded by hand: code, M flag,
/// 24-bit length, data, padding to 4 octets.
fn route_record_bytes(identity: &str) -> Vec<u8> {
    let len = 8 + identity.len();
    let mut v = Vec::new();
    v.extend_from_slice(&282u32.to_be_bytes());
    v.push(0x40);
    v.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    v.extend_from_slice(identity.as_bytes());
    v.resize(len.div_ceil(4) * 4, 0);
    v
}

/// An answer the agent generated itself with `code`.
fn assert_agent_answer(ans: &Message, code: u32, req: &Message) {
    assert_eq!(rc(ans), Some(code), "{ans:?}");
    assert_eq!(ans.flags().is_error(), code / 1000 == 3, "E bit on protocol errors only: {ans:?}");
    assert_eq!(ans.get(avps::ERROR_REPORTING_HOST).unwrap(), Some(AGENT));
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some(AGENT));
    assert_eq!(ans.end_to_end(), req.end_to_end());
    assert_eq!(ans.get(avps::SESSION_ID).unwrap(), req.get(avps::SESSION_ID).unwrap(), "the request's Session-Id");
}

// ---- 1. relay basics --------------------------------------------------------

#[tokio::test]
async fn relay_appends_route_record_keeps_everything_else_and_returns_the_answer() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, served) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    const N: u32 = 50;
    let mut sent = Vec::new();
    let mut joins = JoinSet::new();
    for n in 0..N {
        // One Route-Record already there: ours must come after it.
        let req = ccr_builder(n, SRV_REALM).avp(avps::ROUTE_RECORD, "edge.test").build();
        sent.push(req.clone());
        let p = to_agent.clone();
        joins.spawn(async move { (n, p.send(req).await) });
    }
    let mut answered = 0;
    while let Some(j) = joins.join_next().await {
        let (n, ans) = j.unwrap();
        let ans = ans.unwrap();
        answered += 1;
        assert_eq!(rc(&ans), Some(2001));
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv1.test"));
        assert_eq!(ans.end_to_end(), sent[n as usize].end_to_end());
        // The answer is passed on unchanged but for Hop-by-Hop.
        let given = srv.answers.lock().unwrap().iter().find(|a| a.end_to_end() == ans.end_to_end()).cloned();
        let given = given.expect("the server gave this answer");
        assert_eq!(&ans.as_bytes()[20..], &given.as_bytes()[20..]);
        assert_eq!(&ans.as_bytes()[..12], &given.as_bytes()[..12]);
    }
    assert_eq!(answered, N);

    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), N as usize, "the server saw each request once");
    // RFC 6733 §6.1.9: the identity of the peer the request came from.
    let rr = route_record_bytes("client.test");
    for got in &seen {
        let n = got.get(avps::CC_REQUEST_NUMBER).unwrap().unwrap();
        let orig = &sent[n as usize];
        assert_eq!(got.end_to_end(), orig.end_to_end(), "End-to-End kept");
        assert_eq!(route_records(got), ["edge.test", "client.test"], "the sender's identity appended at the end");
        // Header: version, flags, command code, application, End-to-End the same.
        let (g, o) = (got.as_bytes(), orig.as_bytes());
        assert_eq!(g[0], o[0]);
        assert_eq!(&g[4..12], &o[4..12]);
        assert_eq!(&g[16..20], &o[16..20]);
        assert_eq!(got.len(), orig.len() + rr.len());
        // AVPs: the client's, byte for byte, then our Route-Record.
        assert_eq!(&g[20..o.len()], &o[20..]);
        assert_eq!(&g[o.len()..], &rr[..]);
    }
    let stats = agent.agent_stats();
    assert_eq!(stats.forwarded, seen.len() as u64);
    assert_eq!(stats.answered, answered as u64);
    assert_eq!((stats.local_answers, stats.retransmitted, stats.rerouted, stats.in_flight), (0, 0, 0, 0));
    assert_eq!(served.load(Ordering::SeqCst), 0, "nothing served locally");
}

// ---- 2. 3003 and local requests ---------------------------------------------

#[tokio::test]
async fn unknown_realm_gets_3003_and_our_own_realm_is_served_locally() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, served) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    for (n, realm) in [(1, "unknown.test"), (2, "sub.srv.test"), (3, "UNKNOWN.test")] {
        let req = ccr(n, realm);
        let ans = to_agent.send(req.clone()).await.unwrap();
        assert_agent_answer(&ans, 3003, &req);
    }
    // Our realm, with no route for it: our handler.
    let req = ccr(4, AGENT_REALM);
    let ans = to_agent.send(req).await.unwrap();
    assert_eq!(rc(&ans), Some(2001));
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some(AGENT));
    assert!(ans.get(avps::ERROR_REPORTING_HOST).unwrap().is_none());
    // Destination-Host naming us, even for a routed realm: ours too.
    let req = ccr_builder(5, SRV_REALM).avp(avps::DESTINATION_HOST, AGENT).build();
    let ans = to_agent.send(req).await.unwrap();
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some(AGENT));
    // Not proxiable: for this node alone, whatever its realm.
    let req = Message::request(4, 272)
        .avp(avps::SESSION_ID, "client.test;1;6")
        .avp(avps::ORIGIN_HOST, "client.test")
        .avp(avps::ORIGIN_REALM, "client.test")
        .avp(avps::DESTINATION_REALM, SRV_REALM)
        .build();
    let ans = to_agent.send(req).await.unwrap();
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some(AGENT));

    assert_eq!(served.load(Ordering::SeqCst), 3);
    assert_eq!(srv.count(), 0, "nothing was forwarded");
    let stats = agent.agent_stats();
    assert_eq!((stats.local_answers, stats.forwarded, stats.answered), (3, 0, 0));
}

// ---- 3. 3005 -----------------------------------------------------------------

#[tokio::test]
async fn our_identity_in_route_record_gets_3005() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    for (n, rr) in [(1, AGENT), (2, "Agent.TEST")] {
        let req = ccr_builder(n, SRV_REALM)
            .avp(avps::ROUTE_RECORD, "edge.test")
            .avp(avps::ROUTE_RECORD, rr)
            .avp(avps::ROUTE_RECORD, "other.test")
            .build();
        let ans = to_agent.send(req.clone()).await.unwrap();
        assert_agent_answer(&ans, 3005, &req);
    }
    // Someone else's Route-Record is no loop.
    let ans = to_agent.send(ccr_builder(3, SRV_REALM).avp(avps::ROUTE_RECORD, "agent2.test").build()).await.unwrap();
    assert_eq!(rc(&ans), Some(2001));
    assert_eq!(srv.count(), 1, "the loops never reached the server");
    let stats = agent.agent_stats();
    assert_eq!((stats.local_answers, stats.forwarded, stats.answered), (2, 1, 1));
}

// ---- 4. 3004 -----------------------------------------------------------------

#[tokio::test]
async fn a_full_forwarding_table_gets_3004_and_its_places_come_back() {
    let (release, hold) = watch::channel(false);
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Hold(hold)).await;
    let mut c = config(AGENT, AGENT_REALM, &[apps::RELAY]);
    c.max_forwards = 2;
    let (agent, agent_addr, _) = agent_with(c).await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    let mut held = JoinSet::new();
    for n in 0..2 {
        let p = to_agent.clone();
        held.spawn(async move { p.send(ccr(n, SRV_REALM)).await });
    }
    eventually("two requests held at the server", || srv.count() == 2).await;
    assert_eq!(agent.agent_stats().in_flight, 2);
    for n in 2..5 {
        let req = ccr(n, SRV_REALM);
        let ans = to_agent.send(req.clone()).await.unwrap();
        assert_agent_answer(&ans, 3004, &req);
    }
    assert_eq!(srv.count(), 2, "refused requests never reached the server");
    release.send_replace(true);
    let mut ok = 0;
    while let Some(j) = held.join_next().await {
        assert_eq!(rc(&j.unwrap().unwrap()), Some(2001));
        ok += 1;
    }
    assert_eq!(ok, 2);
    eventually("the forwarding table empty", || agent.agent_stats().in_flight == 0).await;
    // Its places came back.
    let ans = to_agent.send(ccr(9, SRV_REALM)).await.unwrap();
    assert_eq!(rc(&ans), Some(2001));
    assert_eq!(srv.count(), 3);
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.local_answers), (3, 3, 3));
}

/// A graceful shutdown of the agent waits for the answers of what it is
/// forwarding before its DPRs: nothing under way is lost.
#[tokio::test]
async fn shutdown_waits_for_forwarded_answers() {
    let (release, hold) = watch::channel(false);
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Hold(hold)).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    let mut held = JoinSet::new();
    for n in 0..5 {
        let p = to_agent.clone();
        held.spawn(async move { p.send(ccr(n, SRV_REALM)).await });
    }
    eventually("five requests held at the server", || srv.count() == 5).await;
    let stopping = agent.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    release.send_replace(true);
    while let Some(j) = held.join_next().await {
        assert_eq!(rc(&j.unwrap().unwrap()), Some(2001), "answered through the agent shutting down");
    }
    shutdown.await.unwrap();
    let stats = agent.agent_stats();
    assert_eq!((stats.answered, stats.orphaned), (5, 0));
}

#[tokio::test]
async fn one_peer_cannot_take_the_whole_forwarding_table() {
    let (release, hold) = watch::channel(false);
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Hold(hold)).await;
    let mut c = config(AGENT, AGENT_REALM, &[apps::RELAY]);
    c.connection.max_concurrent_handlers = 2;
    let (agent, agent_addr, _) = agent_with(c).await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_greedy, greedy) = client_of(agent_addr).await;
    let mut held = JoinSet::new();
    for n in 0..2 {
        let p = greedy.clone();
        held.spawn(async move { p.send(ccr(n, SRV_REALM)).await });
    }
    eventually("two requests held at the server", || srv.count() == 2).await;
    let req = ccr(2, SRV_REALM);
    assert_agent_answer(&greedy.send(req.clone()).await.unwrap(), 3004, &req);
    // Another peer still has its share.
    let other = Node::builder(config("other.test", "client.test", &[4])).build().unwrap();
    let to_agent = other.connect(agent_addr.into()).await.unwrap();
    let p = to_agent.clone();
    held.spawn(async move { p.send(ccr(3, SRV_REALM)).await });
    eventually("the other peer's request reached the server", || srv.count() == 3).await;
    release.send_replace(true);
    while let Some(j) = held.join_next().await {
        assert_eq!(rc(&j.unwrap().unwrap()), Some(2001));
    }
}

#[tokio::test]
async fn the_bytes_held_by_forwarded_requests_are_bounded_too() {
    let (release, hold) = watch::channel(false);
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Hold(hold)).await;
    let mut c = config(AGENT, AGENT_REALM, &[apps::RELAY]);
    c.connection.max_message_size = 8 * 1024;
    c.max_forward_bytes = 8 * 1024;
    let (agent, agent_addr, _) = agent_with(c).await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    // Two requests of 3 KiB fit in 8 KiB; a third does not.
    let big = |n: u32| ccr_builder(n, SRV_REALM).avp(avps::USER_NAME, "x".repeat(3000)).build();
    let mut held = JoinSet::new();
    for n in 0..2 {
        let (p, req) = (to_agent.clone(), big(n));
        held.spawn(async move { p.send(req).await });
    }
    eventually("two requests held at the server", || srv.count() == 2).await;
    let req = big(2);
    assert_agent_answer(&to_agent.send(req.clone()).await.unwrap(), 3004, &req);
    // A small one still fits beside them.
    let (p, small) = (to_agent.clone(), ccr(3, SRV_REALM));
    held.spawn(async move { p.send(small).await });
    eventually("the small request reached the server", || srv.count() == 3).await;
    release.send_replace(true);
    while let Some(j) = held.join_next().await {
        assert_eq!(rc(&j.unwrap().unwrap()), Some(2001));
    }
    eventually("the forwarding table empty", || agent.agent_stats().in_flight == 0).await;
    let req = big(4);
    assert_eq!(rc(&to_agent.send(req).await.unwrap()), Some(2001), "its bytes came back");
}

// ---- 5. 3002 -----------------------------------------------------------------

#[tokio::test]
async fn no_open_peer_in_the_group_gets_3002() {
    let (agent, agent_addr, _) = start_agent().await;
    // A peer that would connect in to us, and has not.
    let absent = agent.add_peer("absent.test", []).unwrap();
    let g = PeerGroup::with_peers([absent.clone()], GroupConfig::balance(Strategy::RoundRobin)).unwrap();
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    let start = Instant::now();
    for n in 0..3 {
        let req = ccr(n, SRV_REALM);
        let ans = to_agent.send(req.clone()).await.unwrap();
        assert_agent_answer(&ans, 3002, &req);
    }
    assert!(start.elapsed() < Duration::from_secs(1), "3002 at once, not after a timeout");
    assert_ne!(absent.state(), PeerState::Open);
    let stats = agent.agent_stats();
    assert_eq!((stats.local_answers, stats.forwarded, stats.in_flight), (3, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn upstream_timeout_gets_3002_at_the_agents_request_timeout() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Silent).await;
    let mut c = config(AGENT, AGENT_REALM, &[apps::RELAY]);
    c.connection.request_timeout = Duration::from_secs(1);
    let (agent, agent_addr, _) = agent_with(c).await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    let req = ccr(1, SRV_REALM);
    let start = Instant::now();
    let ans = to_agent.send_with_timeout(req.clone(), Duration::from_secs(10)).await.unwrap();
    let took = start.elapsed();
    assert_agent_answer(&ans, 3002, &req);
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(1200), "3002 after {took:?}");
    assert_eq!(srv.count(), 1, "the server got it and stayed silent");
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.local_answers, stats.in_flight), (1, 0, 1, 0));
}

// ---- 6. redirect ---------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn redirect_answers_3006_and_node_send_follows_it_once_and_caches_it() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, served) = start_agent().await;
    let to = RedirectTo::new(["aaa://srv1.test:3868"], Duration::from_secs(30)).unwrap();
    agent.set_routes(RoutingTable::new().route(SRV_REALM, None, Action::Redirect(to)).unwrap());

    // A plain peer handle sees the redirect indication itself.
    let (_c, direct) = client_of(agent_addr).await;
    let req = ccr(1, SRV_REALM);
    let ans = direct.send(req.clone()).await.unwrap();
    assert_agent_answer(&ans, 3006, &req);
    let hosts: Vec<_> = ans.get_all(avps::REDIRECT_HOST).map(|h| h.unwrap().to_string()).collect();
    assert_eq!(hosts, ["aaa://srv1.test:3868"]);
    assert_eq!(ans.get(avps::REDIRECT_HOST_USAGE).unwrap(), Some(RedirectUsage::RealmAndApplication.value()));
    assert_eq!(ans.get(avps::REDIRECT_MAX_CACHE_TIME).unwrap(), Some(30));
    assert_eq!(agent.agent_stats().local_answers, 1);

    // A client node that knows srv1.test follows it, and caches it.
    let client = Node::builder(config("client2.test", "client.test", &[4])).build().unwrap();
    let via = upstream(&client, AGENT, agent_addr).await;
    let _to_srv = upstream(&client, "srv1.test", srv.addr).await;
    let g = group(vec![via.clone()]).await;
    client.set_routes(relay_to(SRV_REALM, &g));
    let ans = client.send(ccr(2, SRV_REALM)).await.unwrap();
    assert_eq!(rc(&ans), Some(2001));
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv1.test"));
    assert_eq!((agent.agent_stats().local_answers, srv.count()), (2, 1), "redirected once, then served");
    for n in 3..6 {
        let ans = client.send(ccr(n, SRV_REALM)).await.unwrap();
        assert_eq!(rc(&ans), Some(2001));
    }
    assert_eq!((agent.agent_stats().local_answers, srv.count()), (2, 4), "cached: straight to the target");
    // Another application is not covered by a realm-and-application entry.
    let other = Message::request(16_777_238, 272)
        .proxiable(true)
        .avp(avps::SESSION_ID, "client2.test;1;7")
        .avp(avps::ORIGIN_HOST, "client2.test")
        .avp(avps::ORIGIN_REALM, "client.test")
        .avp(avps::DESTINATION_REALM, SRV_REALM)
        .build();
    let _ = client.send(other).await;
    assert_eq!(agent.agent_stats().local_answers, 3);
    // After Redirect-Max-Cache-Time the agent is asked again.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let ans = client.send(ccr(8, SRV_REALM)).await.unwrap();
    assert_eq!(rc(&ans), Some(2001));
    assert_eq!(agent.agent_stats().local_answers, 4);
    assert_eq!(served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_to_an_unknown_host_is_not_followed() {
    let (agent, agent_addr, _) = start_agent().await;
    let to = RedirectTo::new(["aaa://stranger.test:3868"], Duration::from_secs(30)).unwrap();
    agent.set_routes(RoutingTable::new().route(SRV_REALM, None, Action::Redirect(to)).unwrap());
    let client = Node::builder(config("client2.test", "client.test", &[4])).build().unwrap();
    let g = group(vec![upstream(&client, AGENT, agent_addr).await]).await;
    client.set_routes(relay_to(SRV_REALM, &g));
    for n in 0..2 {
        let ans = client.send(ccr(n, SRV_REALM)).await.unwrap();
        assert_eq!(rc(&ans), Some(3006));
    }
    assert_eq!(agent.agent_stats().local_answers, 2, "nothing cached");
    assert!(matches!(client.send(ccr(3, "nowhere.test")).await, Err(Error::NoRoute(Some(r))) if r == "nowhere.test"));
}

// ---- 7. proxy hooks ------------------------------------------------------------

/// Masks User-Name and tags the request; tags the answer; refuses requests
/// with Class "refuse".
struct Policy {
    requests: AtomicUsize,
    answers: AtomicUsize,
}

impl ProxyHook for Policy {
    fn on_request(&self, request: Message, from: &PeerInfo) -> Result<Message, u32> {
        assert_eq!(from.origin_host, "client.test");
        self.requests.fetch_add(1, Ordering::SeqCst);
        if request.get(avps::CLASS).unwrap() == Some(&b"refuse"[..]) {
            return Err(5005);
        }
        Ok(request
            .edit(|a| a.code() != avps::USER_NAME.code())
            .avp(avps::USER_NAME, "masked")
            .avp(avps::PROXY_STATE, &b"policy"[..])
            .build())
    }

    fn on_answer(&self, answer: Message, request: &Message) -> Message {
        assert_eq!(request.get(avps::USER_NAME).unwrap(), Some("masked"));
        self.answers.fetch_add(1, Ordering::SeqCst);
        answer.edit(|a| a.code() != avps::CLASS.code()).avp(avps::CLASS, &b"proxied"[..]).build()
    }
}

#[tokio::test]
async fn proxy_hook_rewrites_request_and_answer_and_can_refuse() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    let policy = Arc::new(Policy { requests: AtomicUsize::new(0), answers: AtomicUsize::new(0) });
    agent.set_routes(RoutingTable::new().route(SRV_REALM, Some(4), Action::Proxy(g, policy.clone())).unwrap());
    let (_client, to_agent) = client_of(agent_addr).await;

    const N: u32 = 5;
    for n in 0..N {
        let req = ccr_builder(n, SRV_REALM).avp(avps::USER_NAME, "alice").build();
        let ans = to_agent.send(req.clone()).await.unwrap();
        assert_eq!(rc(&ans), Some(2001));
        assert_eq!(ans.end_to_end(), req.end_to_end());
        let classes: Vec<_> = ans.get_all(avps::CLASS).map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(classes, [b"proxied".to_vec()], "the server's Class replaced by the hook");
    }
    {
        let seen = srv.seen.lock().unwrap();
        assert_eq!(seen.len(), N as usize);
        for m in seen.iter() {
            let users: Vec<_> = m.get_all(avps::USER_NAME).map(|u| u.unwrap().to_string()).collect();
            assert_eq!(users, ["masked"]);
            assert_eq!(m.get(avps::PROXY_STATE).unwrap(), Some(&b"policy"[..]));
            assert_eq!(route_records(m), ["client.test"]);
            let n = m.get(avps::CC_REQUEST_NUMBER).unwrap().unwrap();
            assert_eq!(m.end_to_end(), ccr(n, SRV_REALM).end_to_end(), "End-to-End kept through the hook");
        }
    }
    // Refused by the hook: answered here, with its Result-Code.
    let req = ccr_builder(9, SRV_REALM).avp(avps::CLASS, &b"refuse"[..]).build();
    let ans = to_agent.send(req.clone()).await.unwrap();
    assert_agent_answer(&ans, 5005, &req);
    assert_eq!(srv.count(), N as usize, "the refused request was not forwarded");
    // Another application takes no route (and is not ours): 3003.
    let other = Message::request(16_777_238, 272)
        .proxiable(true)
        .end_to_end(0x00C0_0010)
        .avp(avps::SESSION_ID, "client.test;1;10")
        .avp(avps::DESTINATION_REALM, SRV_REALM)
        .build();
    let ans = to_agent.send(other.clone()).await.unwrap();
    assert_agent_answer(&ans, 3003, &other);

    assert_eq!(policy.requests.load(Ordering::SeqCst), N as usize + 1);
    assert_eq!(policy.answers.load(Ordering::SeqCst), N as usize);
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.local_answers), (N as u64, N as u64, 2));
}

// ---- 8. failover -----------------------------------------------------------------

/// `n` requests in flight from the client, split between a server that
/// never answers (`silent`) and one that does, then `kill` ends the silent
/// one: every request is answered by the other, with the T flag.
async fn failover_case(
    silent_identity: &str,
    silent_addr: SocketAddr,
    silent_count: impl Fn() -> usize,
    kill: impl std::future::Future<Output = ()>,
) {
    let good = Server::start("srv2.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let a = upstream(&agent, silent_identity, silent_addr).await;
    let b = upstream(&agent, "srv2.test", good.addr).await;
    let g = group(vec![a, b]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    const N: usize = 20;
    let mut joins = JoinSet::new();
    for n in 0..N as u32 {
        let p = to_agent.clone();
        joins.spawn(async move { (n, p.send(ccr(n, SRV_REALM)).await) });
    }
    eventually("every request at a server", || silent_count() + good.count() == N).await;
    let stuck = silent_count();
    assert!(stuck > 0 && good.count() > 0, "round robin used both: {stuck} / {}", good.count());
    assert_eq!(good.retransmits(), 0);
    let start = Instant::now();
    kill.await;
    let mut answered = 0;
    while let Some(j) = joins.join_next().await {
        let (n, r) = j.unwrap();
        let ans = r.unwrap_or_else(|e| panic!("request {n}: {e}"));
        assert_eq!(rc(&ans), Some(2001), "request {n}: {ans:?}");
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv2.test"));
        answered += 1;
    }
    assert_eq!(answered, N, "every request got an answer");
    assert!(start.elapsed() < Duration::from_secs(3), "failover took {:?}", start.elapsed());
    // Counted at the servers: the stuck ones came again to srv2, with the T
    // flag and the same End-to-End identifier, with one Route-Record.
    assert_eq!(good.count(), N);
    assert_eq!(good.retransmits(), stuck);
    let seen = good.seen.lock().unwrap().clone();
    let mut e2e: Vec<u32> = seen.iter().map(Message::end_to_end).collect();
    e2e.sort_unstable();
    e2e.dedup();
    assert_eq!(e2e.len(), N, "each request's End-to-End identifier kept");
    for m in seen.iter().filter(|m| m.flags().is_retransmit()) {
        assert_eq!(route_records(m), ["client.test"]);
    }
    let stats = agent.agent_stats();
    assert_eq!(stats.retransmitted, stuck as u64);
    assert_eq!(stats.forwarded, (N + stuck) as u64);
    assert_eq!(stats.answered, N as u64);
    assert_eq!((stats.local_answers, stats.in_flight), (0, 0));
}

#[tokio::test]
async fn failover_when_an_upstream_dies_with_requests_outstanding() {
    // Answers its CER and DWRs, never (within the test) its requests.
    let mut silent = TestPeer::start(Duration::from_secs(3600)).await;
    let seen = silent.seen.clone();
    let addr = silent.addr;
    failover_case("peer.test", addr, move || seen.requests.load(Ordering::SeqCst), async move {
        // Listener and every connection gone at once, like SIGKILL.
        silent.kill().await;
    })
    .await;
}

#[tokio::test]
async fn failover_when_an_upstream_shuts_down_with_requests_outstanding() {
    let silent = Server::start("srv1.test", SRV_REALM, Mode::Silent).await;
    let (node, addr, seen) = (silent.node.clone(), silent.addr, silent.seen.clone());
    failover_case("srv1.test", addr, move || seen.lock().unwrap().len(), async move {
        // Graceful: DPR, with the agent's requests unanswered.
        node.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

#[tokio::test]
async fn a_3002_from_upstream_is_tried_once_on_an_alternate() {
    let refusing = TestPeer::start(Duration::ZERO).await;
    refusing.answer_with(3002);
    let good = Server::start("srv2.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let a = upstream(&agent, "peer.test", refusing.addr).await;
    let b = upstream(&agent, "srv2.test", good.addr).await;
    let g = group(vec![a, b]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    const N: usize = 10;
    for n in 0..N as u32 {
        let ans = to_agent.send(ccr(n, SRV_REALM)).await.unwrap();
        assert_eq!(rc(&ans), Some(2001), "{ans:?}");
    }
    assert!(refusing.requests() > 0, "round robin tried the refusing peer");
    assert_eq!(good.count(), N);
    assert_eq!(good.retransmits(), 0, "re-sent as it was: no T flag");
    let stats = agent.agent_stats();
    assert_eq!(stats.rerouted, refusing.requests() as u64);
    assert_eq!(stats.forwarded, (N + refusing.requests()) as u64);
    assert_eq!((stats.answered, stats.local_answers, stats.retransmitted), (N as u64, 0, 0));

    // With no alternate left, the 3002 itself comes back.
    let (agent1, agent1_addr, _) = start_agent().await;
    let only = upstream(&agent1, "peer.test", refusing.addr).await;
    agent1.set_routes(relay_to(SRV_REALM, &group(vec![only]).await));
    let (_c1, to_agent1) = client_of(agent1_addr).await;
    let before = refusing.requests();
    let ans = to_agent1.send(ccr(99, SRV_REALM)).await.unwrap();
    assert_eq!(rc(&ans), Some(3002));
    assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("peer.test"), "upstream's answer, passed on");
    assert_eq!(refusing.requests(), before + 1, "tried once");
}

/// An upstream too busy (3004) has the request tried on an alternate.
#[tokio::test]
async fn a_3004_from_upstream_is_tried_on_an_alternate() {
    let busy = Server::start("srv1.test", SRV_REALM, Mode::Fail(3004)).await;
    let ok = Server::start("srv2.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g =
        group(vec![upstream(&agent, "srv1.test", busy.addr).await, upstream(&agent, "srv2.test", ok.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    for n in 0..10 {
        let ans = to_agent.send(ccr(n, SRV_REALM)).await.unwrap();
        assert_eq!(rc(&ans), Some(2001), "answered by the alternate");
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv2.test"));
    }
    assert!(busy.count() > 0, "the busy one was tried");
    assert_eq!(ok.count(), 10);
    assert_eq!(agent.agent_stats().rerouted, busy.count() as u64);
}

/// A client whose requests the upstream refuses with a 3xxx about the
/// request (here 3001) cannot trip the route's breaker or mark its peers
/// dead: the member stays usable for everyone.
#[tokio::test]
async fn relayed_protocol_errors_about_the_request_leave_the_member_usable() {
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Fail(3001)).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    for n in 0..40 {
        let ans = to_agent.send(ccr(n, SRV_REALM)).await.unwrap();
        assert_eq!(rc(&ans), Some(3001), "passed on, not replaced by the agent's 3002");
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv1.test"));
    }
    assert_eq!(srv.count(), 40, "every request reached the server");
    let h = g.health_statistics();
    assert!(h[0].usable, "{h:?}");
    assert_eq!(agent.agent_stats().local_answers, 0);
}

// ---- 9. Destination-Host and inbound upstreams --------------------------------

#[tokio::test]
async fn destination_host_naming_a_connected_peer_beats_the_realm_route() {
    let srv1 = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let srv2 = Server::start("srv2.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv1.addr).await]).await;
    let _p2 = upstream(&agent, "srv2.test", srv2.addr).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;

    for n in 0..4 {
        let ans =
            to_agent.send(ccr_builder(n, SRV_REALM).avp(avps::DESTINATION_HOST, "SRV2.test").build()).await.unwrap();
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv2.test"));
    }
    // Not for another realm: a Destination-Host cannot reach around the
    // routing table to any peer the agent knows.
    let req = ccr_builder(4, "elsewhere.test").avp(avps::DESTINATION_HOST, "srv2.test").build();
    assert_agent_answer(&to_agent.send(req.clone()).await.unwrap(), 3003, &req);
    let ans = to_agent.send(ccr_builder(20, SRV_REALM).avp(avps::DESTINATION_HOST, "srv2.test").build()).await;
    assert_eq!(ans.unwrap().get(avps::ORIGIN_HOST).unwrap(), Some("srv2.test"));
    // A Destination-Host that is not a peer: the realm's route.
    for n in 5..8 {
        let ans =
            to_agent.send(ccr_builder(n, SRV_REALM).avp(avps::DESTINATION_HOST, "srv9.test").build()).await.unwrap();
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv1.test"));
    }
    // ...and with no route for its realm, 3003.
    let req = ccr_builder(8, "elsewhere.test").avp(avps::DESTINATION_HOST, "srv9.test").build();
    assert_agent_answer(&to_agent.send(req.clone()).await.unwrap(), 3003, &req);
    assert_eq!((srv1.count(), srv2.count()), (3, 5));
    for m in srv2.seen.lock().unwrap().iter() {
        assert_eq!(route_records(m), ["client.test"]);
    }
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.local_answers), (8, 8, 2));
}

#[tokio::test]
async fn a_peer_that_connected_in_is_the_upstream_of_its_realm() {
    let srv3 = Server::start("srv3.test", "far.test", Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    // Known, never dialled: it connects in to us.
    let inbound = agent.add_peer("srv3.test", []).unwrap();
    let g = PeerGroup::with_peers([inbound.clone()], GroupConfig::balance(Strategy::RoundRobin)).unwrap();
    agent.set_routes(relay_to("far.test", &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    // Not connected yet: 3002.
    let req = ccr(0, "far.test");
    assert_agent_answer(&to_agent.send(req.clone()).await.unwrap(), 3002, &req);

    let out = srv3.node.add_peer(AGENT, [agent_addr.into()]).unwrap();
    open(&out).await;
    open(&inbound).await;
    assert_eq!(inbound.direction(), Some(Direction::Inbound));
    eventually("the inbound member usable", || g.health_statistics().iter().all(|m| m.usable)).await;
    for n in 1..6 {
        let ans = to_agent.send(ccr(n, "far.test")).await.unwrap();
        assert_eq!(rc(&ans), Some(2001));
        assert_eq!(ans.get(avps::ORIGIN_HOST).unwrap(), Some("srv3.test"));
    }
    assert_eq!(srv3.count(), 5);
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.local_answers), (5, 5, 1));
}

// ---- 10. set_routes at run time -------------------------------------------------

#[tokio::test]
async fn set_routes_while_traffic_flows_loses_nothing_and_moves_traffic() {
    let srv1 = Server::start("srv1.test", SRV_REALM, Mode::Answer).await;
    let srv2 = Server::start("srv2.test", SRV_REALM, Mode::Answer).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g1 = group(vec![upstream(&agent, "srv1.test", srv1.addr).await]).await;
    let g2 = group(vec![upstream(&agent, "srv2.test", srv2.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g1));
    let (_client, to_agent) = client_of(agent_addr).await;

    const WORKERS: u32 = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = JoinSet::new();
    for w in 0..WORKERS {
        let (p, stop) = (to_agent.clone(), stop.clone());
        workers.spawn(async move {
            let (mut sent, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let n = w * 100_000 + sent;
                sent += 1;
                match p.send(ccr(n, SRV_REALM)).await {
                    Ok(a) if rc(&a) == Some(2001) => {}
                    other => failed.push(format!("{other:?}")),
                }
            }
            (sent, failed)
        });
    }
    eventually("traffic on srv1", || srv1.count() >= 50).await;
    agent.set_routes(relay_to(SRV_REALM, &g2));
    let at_switch = srv1.count();
    eventually("traffic on srv2", || srv2.count() >= 50).await;
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    while let Some(j) = workers.join_next().await {
        let (sent, failed) = j.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        total += sent as usize;
    }
    assert_eq!(srv1.count() + srv2.count(), total, "every request reached one server once");
    assert!(srv1.count() - at_switch <= WORKERS as usize, "only those in flight at the switch went to srv1");
    let before = srv1.count();
    for n in 0..10 {
        assert_eq!(rc(&to_agent.send(ccr(900_000 + n, SRV_REALM)).await.unwrap()), Some(2001));
    }
    assert_eq!(srv1.count(), before, "the new route takes everything");
    let stats = agent.agent_stats();
    assert_eq!(stats.forwarded, (total + 10) as u64);
    assert_eq!(stats.answered, (total + 10) as u64);
    assert_eq!(stats.local_answers, 0);
}

#[tokio::test]
async fn an_upstream_lost_with_no_alternate_gets_3002_and_is_not_retried() {
    let mut silent = TestPeer::start(Duration::from_secs(3600)).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "peer.test", silent.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let (_client, to_agent) = client_of(agent_addr).await;
    const N: usize = 5;
    let mut joins = JoinSet::new();
    let mut sent = Vec::new();
    for n in 0..N as u32 {
        let (p, req) = (to_agent.clone(), ccr(n, SRV_REALM));
        sent.push(req.clone());
        joins.spawn(async move { (n, p.send(req).await) });
    }
    eventually("every request at the server", || silent.requests() == N).await;
    silent.kill().await;
    while let Some(j) = joins.join_next().await {
        let (n, r) = j.unwrap();
        assert_agent_answer(&r.unwrap(), 3002, &sent[n as usize]);
    }
    assert_eq!(silent.requests(), N, "never sent back to the peer that lost them");
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.retransmitted), (N as u64, 0, 0));
    assert_eq!((stats.local_answers, stats.in_flight), (N as u64, 0));
}

#[tokio::test]
async fn answers_whose_client_went_away_are_dropped_and_counted() {
    let (release, hold) = watch::channel(false);
    let srv = Server::start("srv1.test", SRV_REALM, Mode::Hold(hold)).await;
    let (agent, agent_addr, _) = start_agent().await;
    let g = group(vec![upstream(&agent, "srv1.test", srv.addr).await]).await;
    agent.set_routes(relay_to(SRV_REALM, &g));
    let mut c = config("client.test", "client.test", &[4]);
    c.connection.drain_timeout = Duration::from_millis(10);
    let client = Node::builder(c).build().unwrap();
    let to_agent = client.connect(agent_addr.into()).await.unwrap();
    let p = to_agent.clone();
    let pending = tokio::spawn(async move { p.send(ccr(1, SRV_REALM)).await });
    eventually("the request held at the server", || srv.count() == 1).await;
    assert_eq!(agent.agent_stats().in_flight, 1);
    // The client leaves (DPR after its short drain) with its request unanswered.
    to_agent.close(0).await;
    assert!(pending.await.unwrap().is_err());
    eventually("the forward dropped", || agent.agent_stats().in_flight == 0).await;
    release.send_replace(true);
    eventually("the server answered", || srv.answers.lock().unwrap().len() == 1).await;
    let stats = agent.agent_stats();
    assert_eq!((stats.forwarded, stats.answered, stats.orphaned), (1, 0, 1));
    // The agent still relays for the next client.
    let (_c2, again) = client_of(agent_addr).await;
    assert_eq!(rc(&again.send(ccr(2, SRV_REALM)).await.unwrap()), Some(2001));
    assert_eq!(agent.agent_stats().answered, 1);
}

/// RFC 6733 §6.2 and the commands' CCF: an answer carries Session-Id once.
/// Fails today: `diam_proto::check::error_answer` (which
/// `diam_proto::routing::agent_answer` builds on) copies the Session-Id that
/// `Message::answer_to` has already copied.
#[tokio::test]
async fn agent_answers_carry_exactly_one_session_id() {
    let (agent, agent_addr, _) = start_agent().await;
    agent.set_routes(RoutingTable::new());
    let (_client, to_agent) = client_of(agent_addr).await;
    let ans = to_agent.send(ccr(1, "unknown.test")).await.unwrap();
    assert_eq!(rc(&ans), Some(3003));
    let sids: Vec<_> = ans.get_all(avps::SESSION_ID).map(|s| s.unwrap().to_string()).collect();
    assert_eq!(sids, ["client.test;1;1"]);
}
