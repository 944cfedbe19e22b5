//! `diam demo`: a guided tour of the client pool's failure handling.
//!
//! Three embedded Diameter nodes, CCR traffic through one
//! [`AddressClient`], a server-side node sending a Re-Auth-Request to the
//! client that connected to it (and the client's handler answering), one
//! peer killed mid-traffic (failure callback, pool cleanup and fail-fast of
//! in-flight requests, each with its measured latency), the peer restored
//! on the same port (reconnection), and a final stats table. No arguments,
//! no outside server, about 8 s.
//!
//! Each embedded peer runs on its own tokio runtime. Killing it shuts that
//! runtime down with `shutdown_background()`: every task is dropped, so the
//! listener and every accepted connection close at once, without DPR — what
//! the client sees is what it would see if the peer's process died.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use diam_client::{handler_fn, AddressClient, Error, Node, NodeConfig, PoolConfig, PoolFailure};
use diam_link::events::{DisconnectReason, Event, EventData};
use diam_proto::peer::result_code;
use diam_proto::{apps, avps, commands, Message};
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};

use crate::Failure;

/// `println!` that ignores a closed stdout (`diam demo | head` must not
/// panic).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

const REALM: &str = "demo.test";
const CLIENT_HOST: &str = "demo-client.demo.test";
/// (letter, Origin-Host) of the embedded peers; the second one is killed.
const PEERS: [(&str, &str); 3] = [("A", "peer-a.demo.test"), ("B", "peer-b.demo.test"), ("C", "peer-c.demo.test")];
const VICTIM: usize = 1;
/// Concurrent senders per peer (closed loop: each waits for its answer).
const SENDERS_PER_PEER: usize = 16;
/// How long an embedded peer takes to answer.
const SERVICE_TIME: Duration = Duration::from_millis(1);
/// Traffic on all three peers before the kill.
const BEFORE_KILL: Duration = Duration::from_millis(3500);
/// How long the victim stays down.
const DOWNTIME: Duration = Duration::from_secs(2);
/// Traffic on all three peers after the reconnection.
const AFTER_RECONNECT: Duration = Duration::from_secs(2);
/// Longest acceptable wait for the failure callback after the kill.
const FAILURE_BOUND: Duration = Duration::from_secs(2);
/// Longest acceptable wait for the reconnection after the restore.
const RECONNECT_BOUND: Duration = Duration::from_secs(5);

pub(crate) fn demo() -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("demo-client")
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("starting the runtime: {e}")))?;
    rt.block_on(run())
}

/// Timestamps relative to the start of the demo.
struct Clock {
    start: Instant,
    start_wall: SystemTime,
}

impl Clock {
    fn stamp(&self) -> String {
        format!("[{:>7.3}s]", self.start.elapsed().as_secs_f64())
    }

    fn stamp_at(&self, t: SystemTime) -> String {
        let d = t.duration_since(self.start_wall).unwrap_or_default();
        format!("[{:>7.3}s]", d.as_secs_f64())
    }

    /// Prints `text` stamped with the current time; its further lines are
    /// indented under the first (one write, so other lines never land in
    /// between).
    fn say(&self, text: impl AsRef<str>) {
        say_at(&self.stamp(), text);
    }
}

fn say_at(stamp: &str, text: impl AsRef<str>) {
    out!("{stamp} {}", text.as_ref().replace('\n', "\n           "));
}

fn ms(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

/// 1234567 -> "1,234,567".
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Per-peer outcome counters, kept by the demo's own senders.
#[derive(Default)]
struct PeerTally {
    sent: AtomicU64,
    answers: AtomicU64,
    /// Answers with a Result-Code other than 2001.
    bad_answers: AtomicU64,
    /// In-flight requests failed by the connection loss.
    lost: AtomicU64,
    /// Sends refused at once while the pool reconnects.
    rejected: AtomicU64,
    /// Anything else (timeouts included).
    other: AtomicU64,
    last_other: Mutex<Option<String>>,
}

impl PeerTally {
    fn errors(&self) -> u64 {
        self.lost.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed) + self.other.load(Ordering::Relaxed)
    }
}

/// What the callbacks, the senders and the script share.
struct Shared {
    clock: Clock,
    /// "127.0.0.1:port" -> peer index.
    by_addr: HashMap<String, usize>,
    tallies: [PeerTally; 3],
    /// When the victim was killed (monotonic, wall clock).
    killed: Mutex<Option<(Instant, SystemTime)>>,
    /// When the victim was restored.
    restored: Mutex<Option<SystemTime>>,
    /// When the pool's next reconnect attempt to the victim is due.
    next_attempt: Mutex<Option<SystemTime>>,
    /// How long after the kill each in-flight request got ConnectionLost.
    lost_after_kill: Mutex<Vec<Duration>>,
    /// Failure callbacks seen, by peer index.
    failures: watch::Sender<Vec<usize>>,
    /// The victim's reconnection (event time).
    reconnected: watch::Sender<Option<SystemTime>>,
}

impl Shared {
    fn peer_of(&self, addr: impl ToString) -> Option<usize> {
        self.by_addr.get(&addr.to_string()).copied()
    }

    fn label(&self, addr: impl ToString) -> String {
        let addr = addr.to_string();
        match self.by_addr.get(&addr) {
            Some(&i) => format!("peer {} ({addr})", PEERS[i].0),
            None => addr,
        }
    }
}

// ---------------------------------------------------------------------------
// Embedded peers

/// A Diameter peer on its own runtime, answering like `diam serve`.
struct EmbeddedPeer {
    index: usize,
    addr: SocketAddr,
    runtime: Option<Runtime>,
    /// The peer's node (its tasks run on `runtime`).
    node: Option<Node>,
}

impl EmbeddedPeer {
    /// Starts the peer on a port outside the ephemeral range (so that while
    /// it is down no outgoing connection, ours included, can take its port).
    async fn start(index: usize) -> Result<EmbeddedPeer, Failure> {
        let mut last_error = String::new();
        for port in candidate_ports(index).into_iter().chain([0]) {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match start_server(index, addr).await {
                Ok((runtime, addr, node)) => {
                    return Ok(EmbeddedPeer { index, addr, runtime: Some(runtime), node: Some(node) })
                }
                Err(e) => last_error = e,
            }
        }
        Err(Failure::failed(format!("starting peer {}: {last_error}", PEERS[index].0)))
    }

    /// Kills the peer abruptly: its runtime is shut down without waiting, so
    /// every task is dropped and with them the listener and every socket.
    /// No DPR, no goodbye.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        // Its tasks are gone with the runtime; the handle goes too (a
        // dropped node would otherwise try to say goodbye).
        if let Some(node) = self.node.take() {
            std::mem::forget(node);
        }
    }

    /// Starts a fresh peer on the same address (retrying a bind that races
    /// with the old sockets for up to a second).
    async fn restore(&mut self) -> Result<(), Failure> {
        let give_up = Instant::now() + Duration::from_secs(1);
        loop {
            match start_server(self.index, self.addr).await {
                Ok((rt, _, node)) => {
                    self.runtime = Some(rt);
                    self.node = Some(node);
                    return Ok(());
                }
                Err(e) if Instant::now() >= give_up => {
                    return Err(Failure::failed(format!(
                        "restoring peer {} on {}: {e}",
                        PEERS[self.index].0, self.addr
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

impl Drop for EmbeddedPeer {
    fn drop(&mut self) {
        // Dropping a runtime normally blocks, which is not allowed inside
        // the demo's own runtime.
        self.kill();
    }
}

/// Ports to try for peer `index`: below the kernel's ephemeral range, from a
/// per-run offset. Empty when that range leaves no room (port 0 is used).
fn candidate_ports(index: usize) -> Vec<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let low = range.as_deref().and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok()).unwrap_or(32_768);
    let (first, last) = (20_000u32, low.min(65_536).saturating_sub(1));
    if last <= first + 100 {
        return Vec::new();
    }
    let span = last - first;
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    (0..24u32).map(|k| (first + (seed.wrapping_add((index as u32) * 7919 + k * 104_729)) % span) as u16).collect()
}

/// One peer's runtime (one worker thread) with a bound, serving node.
async fn start_server(index: usize, addr: SocketAddr) -> Result<(Runtime, SocketAddr, Node), String> {
    let (letter, origin_host) = PEERS[index];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("demo-peer-{}", letter.to_ascii_lowercase()))
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    let mut config = NodeConfig::new(origin_host, REALM);
    config.connection.peer.auth_application_ids = vec![apps::RELAY];
    config.connection.max_concurrent_handlers = 4096;
    let host: Arc<str> = origin_host.into();
    let handler = handler_fn(move |req: Message| {
        let host = host.clone();
        async move {
            // Pretend backend work, so requests are really pending at the
            // peer when it dies (like `diam serve --delay-ms 1`).
            tokio::time::sleep(SERVICE_TIME).await;
            crate::peer_cmd::standard_answer(&req, 2001, &host, REALM)
        }
    });
    let (bound_tx, bound_rx) = oneshot::channel();
    rt.spawn(async move {
        let node = match Node::builder(config).default_handler(handler).accept_any().build() {
            Ok(n) => n,
            Err(e) => {
                let _ = bound_tx.send(Err(e.to_string()));
                return;
            }
        };
        match node.listen_tcp(addr).await {
            Ok(bound) => {
                let _ = bound_tx.send(Ok((bound, node)));
            }
            Err(e) => {
                let _ = bound_tx.send(Err(e.to_string()));
            }
        }
    });
    let result = match tokio::time::timeout(Duration::from_secs(2), bound_rx).await {
        Ok(Ok(Ok(bound))) => Ok(bound),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(_)) => Err("the peer task ended".to_string()),
        Err(_) => Err("binding timed out".to_string()),
    };
    match result {
        // Never shut down gracefully: the demo kills the runtime.
        Ok((bound, node)) => Ok((rt, bound, node)),
        Err(e) => {
            rt.shutdown_background();
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// Traffic

/// The standard workload's request: CCR (application 4, command 272).
fn ccr(sender: usize, n: u32) -> Message {
    Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
        .proxiable(true)
        .avp(avps::SESSION_ID, format!("{CLIENT_HOST};{sender};{n}"))
        .avp(avps::ORIGIN_HOST, CLIENT_HOST)
        .avp(avps::ORIGIN_REALM, REALM)
        .avp(avps::DESTINATION_REALM, REALM)
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .avp(avps::SERVICE_CONTEXT_ID, crate::bench_cmd::SERVICE_CONTEXT)
        .avp(avps::CC_REQUEST_TYPE, 1)
        .avp(avps::CC_REQUEST_NUMBER, n)
        .build()
}

/// Sends one request and books its outcome. Returns how long the sender
/// should pause before the next one (after an error, so that a peer that is
/// down does not turn the loop into a spin).
async fn send_one(client: &AddressClient, shared: &Shared, peer: usize, addr: SocketAddr, req: Message) -> Duration {
    let tally = &shared.tallies[peer];
    tally.sent.fetch_add(1, Ordering::Relaxed);
    match client.send(addr, req).await {
        Ok(answer) => {
            if result_code(&answer) == Some(2001) {
                tally.answers.fetch_add(1, Ordering::Relaxed);
            } else {
                tally.bad_answers.fetch_add(1, Ordering::Relaxed);
            }
            Duration::ZERO
        }
        Err(e) if e.is_connection_lost() => {
            tally.lost.fetch_add(1, Ordering::Relaxed);
            if let Some((at, _)) = *lock(&shared.killed) {
                lock(&shared.lost_after_kill).push(at.elapsed());
            }
            Duration::ZERO
        }
        Err(Error::Reconnecting) => {
            tally.rejected.fetch_add(1, Ordering::Relaxed);
            Duration::from_millis(100)
        }
        Err(e) => {
            tally.other.fetch_add(1, Ordering::Relaxed);
            *lock(&tally.last_other) = Some(e.to_string());
            Duration::from_millis(50)
        }
    }
}

async fn sender(
    client: AddressClient,
    shared: Arc<Shared>,
    peer: usize,
    addr: SocketAddr,
    id: usize,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_add(1);
        let pause = send_one(&client, &shared, peer, addr, ccr(id, n)).await;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Prints answers per second for each peer, once a second.
async fn ticker(shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let snapshot = |s: &Shared| -> [(u64, u64); 3] {
        std::array::from_fn(|i| (s.tallies[i].answers.load(Ordering::Relaxed), s.tallies[i].errors()))
    };
    let mut prev = snapshot(&shared);
    let mut prev_at = Instant::now();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = snapshot(&shared);
        let secs = prev_at.elapsed().as_secs_f64().max(1e-3);
        prev_at = Instant::now();
        let mut parts = Vec::new();
        let mut total = 0.0;
        for i in 0..3 {
            let rate = (now[i].0 - prev[i].0) as f64 / secs;
            total += rate;
            let errors = now[i].1 - prev[i].1;
            let mut p = format!("{} {:>7}/s", PEERS[i].0, num(rate.round() as u64));
            if errors > 0 {
                p.push_str(&format!(" ({errors} failed)"));
            }
            parts.push(p);
        }
        shared.clock.say(format!("traffic  {}   total {} answers/s", parts.join("   "), num(total.round() as u64)));
        prev = now;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Callbacks

/// The pool's failure callback: what failed, why, and how fast.
fn on_failure(shared: &Shared, f: &PoolFailure) {
    let called = SystemTime::now();
    let info = f;
    let address = info.peer_address.as_ref().map_or_else(|| "?".to_string(), ToString::to_string);
    let peer = shared.peer_of(&address);
    let name = peer.map_or("an unknown peer", |i| PEERS[i].0);
    let mut text = format!(
        "on_failure fired for peer {name} ({address}, Origin-Host {})\n\
         reason: {}; peer #{} is now {}; reconnect attempts so far: {}",
        info.peer_origin_host.as_deref().unwrap_or("unknown"),
        info.reason,
        info.connection_id,
        info.state.name(),
        f.attempt
    );
    if let Some((_, killed_wall)) = *lock(&shared.killed) {
        if peer == Some(VICTIM) {
            let detected = info.timestamp.duration_since(killed_wall).unwrap_or_default();
            let called_after = called.duration_since(killed_wall).unwrap_or_default();
            text.push_str(&format!(
                "\nfailure detected {} after the kill order (this includes the dying runtime's time to drop its sockets);\n\
                 this callback ran {} after the kill order",
                ms(detected),
                ms(called_after)
            ));
        }
    }
    let action = if f.reconnecting {
        "entry kept, switched to RECONNECTING (sends fail fast until it is back)"
    } else {
        "entry REMOVED (the next send dials afresh)"
    };
    // The peer's own task updates its state the moment it detects the
    // failure; the callback runs after, on the event executor.
    let after = called.duration_since(info.timestamp).unwrap_or_default();
    text.push_str(&format!("\npool cleanup: {action} at detection; this callback ran {} after detection", ms(after)));
    say_at(&shared.clock.stamp_at(called), text);
    if let Some(i) = peer {
        shared.failures.send_modify(|v| v.push(i));
    }
}

/// The message of the innermost cause (the pool wraps connection errors in a
/// generic "session failed").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// The lifecycle event listener: one line per interesting event.
fn on_event(shared: &Shared, ev: &Event) {
    let at = shared.clock.stamp_at(ev.timestamp());
    let who = ev.remote().map_or_else(|| "the pool".to_string(), |r| shared.label(r));
    let peer = ev.remote().and_then(|r| shared.peer_of(r));
    match ev.data() {
        EventData::Connected { first: true } => out!("{at} event: connected to {who} (CER/CEA done)"),
        EventData::Disconnected { reason } => {
            let why = match reason {
                DisconnectReason::Failed(e) => innermost(e),
                other => other.to_string(),
            };
            out!("{at} event: disconnected from {who}: {why}");
        }
        EventData::ReconnectScheduled { attempt, delay } => {
            out!("{at} event: reconnect attempt {attempt} to {who} scheduled in {}", ms(*delay));
            if peer == Some(VICTIM) {
                *lock(&shared.next_attempt) = Some(ev.timestamp() + *delay);
            }
        }
        EventData::Error { error } => out!("{at} event: {who}: {}", innermost(error)),
        EventData::Reconnected { attempt } => {
            let restored = *lock(&shared.restored);
            let since = restored
                .and_then(|r| ev.timestamp().duration_since(r).ok())
                .map(|d| format!(", {} after the peer was restored", ms(d)))
                .unwrap_or_default();
            out!("{at} event: reconnected to {who} on attempt {attempt}{since}");
            if peer == Some(VICTIM) {
                shared.reconnected.send_replace(Some(ev.timestamp()));
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// The script

async fn run() -> Result<(), Failure> {
    let clock = Clock { start: Instant::now(), start_wall: SystemTime::now() };
    out!("diam demo: a Diameter client pool losing a peer and getting it back.");
    out!("Times are seconds since the start. The demo takes about 8 s.");
    out!();

    // 1. Three embedded peers.
    let mut text =
        String::from("starting 3 embedded Diameter peers, each on its own tokio runtime (a process-equivalent):");
    let mut peers = Vec::new();
    for (i, (letter, origin_host)) in PEERS.iter().enumerate() {
        let peer = EmbeddedPeer::start(i).await?;
        text.push_str(&format!("\npeer {letter} listening on {}  Origin-Host {origin_host}", peer.addr));
        peers.push(peer);
    }
    clock.say(text);
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();

    // 2. The client pool, its failure callback and event listener.
    let mut config = PoolConfig::new(CLIENT_HOST, REALM);
    config.connection.peer.auth_application_ids = vec![apps::CREDIT_CONTROL];
    config.connection.request_timeout = Duration::from_secs(2);
    config.connection.connect_timeout = Duration::from_secs(1);
    config.connection.peer.cer_timeout = Duration::from_secs(1);
    config.reconnect_enabled = true;
    config.reconnect_interval = Duration::from_millis(200);
    config.max_reconnect_delay = Duration::from_secs(1);
    config.reconnect_backoff = 1.5;
    config.fail_fast_while_reconnecting = true;
    // The client answers the requests its servers send it (RAR here).
    let raa = handler_fn(|req: Message| async move {
        let mut b = Message::answer_to(&req)
            .avp(avps::RESULT_CODE, 2001u32)
            .avp(avps::ORIGIN_HOST, CLIENT_HOST)
            .avp(avps::ORIGIN_REALM, REALM);
        if let Some(app) = req.find(avps::AUTH_APPLICATION_ID) {
            b = b.copy_avp(&app);
        }
        b.build()
    });
    config.handler = Some(raa);
    let client = AddressClient::new(config).map_err(|e| Failure::failed(format!("creating the client: {e}")))?;
    let shared = Arc::new(Shared {
        clock,
        by_addr: addrs.iter().enumerate().map(|(i, a)| (a.to_string(), i)).collect(),
        tallies: Default::default(),
        killed: Mutex::new(None),
        restored: Mutex::new(None),
        next_attempt: Mutex::new(None),
        lost_after_kill: Mutex::new(Vec::new()),
        failures: watch::channel(Vec::new()).0,
        reconnected: watch::channel(None).0,
    });
    let clock = &shared.clock;
    {
        let s = shared.clone();
        client.on_failure(move |f| on_failure(&s, f));
    }
    let s = shared.clone();
    let subscription = client.events().subscribe_all(move |ev: &Event| on_event(&s, ev));
    clock.say(format!(
        "client pool {CLIENT_HOST} created: one connection per peer address, made on first send;\n\
         reconnect in place with backoff 200 ms x1.5 up to 1 s; sends fail fast while reconnecting"
    ));

    // First sends open the connections.
    for (i, &addr) in addrs.iter().enumerate() {
        let pause = send_one(&client, &shared, i, addr, ccr(0, i as u32)).await;
        if !pause.is_zero() || shared.tallies[i].answers.load(Ordering::Relaxed) != 1 {
            let why = lock(&shared.tallies[i].last_other).clone().unwrap_or_else(|| "no 2001 answer".into());
            return Err(Failure::failed(format!("first request to peer {}: {why}", PEERS[i].0)));
        }
    }

    // 3. The server side talks back: a server's node sends a request to the
    // client that connected to it, over that inbound connection.
    let server_a = peers[0].node.clone().ok_or_else(|| Failure::failed("peer A has no node"))?;
    let to_client = server_a
        .peer(CLIENT_HOST)
        .ok_or_else(|| Failure::failed(format!("peer A does not know {CLIENT_HOST} after its CER")))?;
    let rar = Message::request(apps::CREDIT_CONTROL, commands::RE_AUTH)
        .proxiable(true)
        .avp(avps::SESSION_ID, format!("{CLIENT_HOST};0;0"))
        .avp(avps::ORIGIN_HOST, PEERS[0].1)
        .avp(avps::ORIGIN_REALM, REALM)
        .avp(avps::DESTINATION_REALM, REALM)
        .avp(avps::DESTINATION_HOST, CLIENT_HOST)
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .avp(avps::RE_AUTH_REQUEST_TYPE, 0) // AUTHORIZE_ONLY
        .build();
    let t = Instant::now();
    let raa = to_client.send(rar).await.map_err(|e| Failure::failed(format!("peer A's RAR to the client: {e}")))?;
    let took = t.elapsed();
    let rc = result_code(&raa);
    clock.say(format!(
        "peer A (a server: the client connected to it) sends a Re-Auth-Request to {CLIENT_HOST} over that inbound connection;\n\
         the client's handler answered RAA {} in {} (direction {} from peer A's side)",
        rc.map_or_else(|| "without Result-Code".to_string(), |c| c.to_string()),
        ms(took),
        to_client.direction().map_or("?", |d| d.as_str()),
    ));
    if rc != Some(2001) {
        return Err(Failure::failed(format!("the client answered the RAR with {rc:?}")));
    }

    // 4. Traffic to all three.
    clock.say(format!(
        "traffic starts: {SENDERS_PER_PEER} concurrent senders per peer, each sending CCRs (app 4, cmd 272) back to back;\n\
         the peers answer after ~{} of pretend work",
        ms(SERVICE_TIME)
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (i, &addr) in addrs.iter().enumerate() {
        for k in 0..SENDERS_PER_PEER {
            let id = 1 + i * SENDERS_PER_PEER + k;
            senders.push(tokio::spawn(sender(client.clone(), shared.clone(), i, addr, id, stop.clone())));
        }
    }
    let ticker_task = tokio::spawn(ticker(shared.clone(), stop.clone()));
    tokio::time::sleep(BEFORE_KILL).await;

    // 5. Kill peer B.
    let victim = PEERS[VICTIM].0;
    let victim_addr = addrs[VICTIM];
    clock.say(format!(
        "peer {victim} killed (its process-equivalent: runtime shut down, listener + every connection dropped, no DPR)"
    ));
    *lock(&shared.killed) = Some((Instant::now(), SystemTime::now()));
    peers[VICTIM].kill();
    let killed_at = Instant::now();
    let mut failures = shared.failures.subscribe();
    // (The guard `wait_for` returns is dropped at once: holding it would
    // block the next callback's update.)
    let seen = tokio::time::timeout(FAILURE_BOUND, failures.wait_for(|v| v.contains(&VICTIM))).await.map(|r| r.is_ok());
    if seen != Ok(true) {
        stop.store(true, Ordering::Relaxed);
        return Err(Failure::failed(format!("no failure callback within {FAILURE_BOUND:?} of killing peer {victim}")));
    }
    // Let every in-flight request report back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lost = {
        let mut v = lock(&shared.lost_after_kill).clone();
        v.sort_unstable();
        v
    };
    if lost.is_empty() {
        clock.say(format!(
            "no request to peer {victim} was still waiting for its answer when the sockets closed (ConnectionLost: 0)"
        ));
    } else {
        clock.say(format!(
            "{} in flight to peer {victim} failed fast with ConnectionLost: median {}, slowest {} after the kill order",
            if lost.len() == 1 { "1 request".to_string() } else { format!("{} requests", lost.len()) },
            ms(lost[lost.len() / 2]),
            ms(lost[lost.len() - 1])
        ));
    }
    let state = client.connection(victim_addr).map_or_else(|| "gone".to_string(), |c| c.state.name().to_uppercase());
    clock.say(format!(
        "pool now: {} entries; peer {victim}'s is {state} (the entry stays, its connection is being re-established)\n\
         peers A and C keep their traffic; sends to peer {victim} are refused at once (Reconnecting)",
        client.active_connections(),
    ));

    // 6. Restore peer B on the same port.
    tokio::time::sleep(DOWNTIME.saturating_sub(killed_at.elapsed())).await;
    let stamp = clock.stamp();
    let now = SystemTime::now();
    *lock(&shared.restored) = Some(now);
    peers[VICTIM].restore().await?;
    let mut text = format!("peer {victim} restored on the same address {victim_addr} (fresh runtime, fresh listener)");
    if let Some(due) = *lock(&shared.next_attempt) {
        let wait = due.duration_since(now).unwrap_or_default();
        text.push_str(&format!("\nthe pool's next reconnect attempt (paced by its backoff) is due in {}", ms(wait)));
    }
    say_at(&stamp, text);
    let mut reconnected = shared.reconnected.subscribe();
    let back = tokio::time::timeout(RECONNECT_BOUND, reconnected.wait_for(Option::is_some)).await.map(|r| r.is_ok());
    if back != Ok(true) {
        stop.store(true, Ordering::Relaxed);
        return Err(Failure::failed(format!(
            "peer {victim} was not reconnected within {RECONNECT_BOUND:?} of its restore"
        )));
    }
    let answers_at_reconnect = shared.tallies[VICTIM].answers.load(Ordering::Relaxed);
    clock.say(format!("traffic to peer {victim} resumes on the new connection"));

    // 7. Traffic on all three, then stop and close.
    tokio::time::sleep(AFTER_RECONNECT).await;
    stop.store(true, Ordering::Relaxed);
    clock.say("traffic stops; waiting for every outstanding request to end");
    let join_deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for s in senders {
        if tokio::time::timeout_at(join_deadline, s).await.is_err() {
            return Err(Failure::failed("a sender did not finish within 5 s of the stop"));
        }
    }
    ticker_task.abort();
    let snapshots: Vec<_> = addrs.iter().map(|&a| client.connection(a)).collect();
    let stats = client.stats();
    let closing = Instant::now();
    client.close(Duration::from_secs(2)).await;
    clock.say(format!(
        "client.close(): DPR sent to every peer and answered, in {}; {} connections left",
        ms(closing.elapsed()),
        client.active_connections()
    ));
    drop(subscription);
    for p in &mut peers {
        p.kill();
    }

    // The tables.
    out!();
    out!(
        "final stats, per peer (demo's own count of outcomes + AddressClient::connection(addr) snapshot before close):"
    );
    out!(
        "  {:<4} {:<16} {:<17} {:<8} {:>9} {:>7} {:>21} {:>10}  last error",
        "peer",
        "address",
        "origin host",
        "state",
        "answers",
        "errors",
        "msgs sent/recv (conn)",
        "reconnects",
    );
    for (i, snap) in snapshots.iter().enumerate() {
        let t = &shared.tallies[i];
        let (state, host, msgs, reconnects, last_error) = match snap {
            Some(c) => (
                c.state.name().to_string(),
                c.origin_host.clone().unwrap_or_else(|| "-".into()),
                format!("{}/{}", num(c.stats.messages_sent), num(c.stats.messages_received)),
                c.reconnects.to_string(),
                c.last_error.clone().unwrap_or_else(|| "-".into()),
            ),
            None => ("gone".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        out!(
            "  {:<4} {:<16} {:<17} {:<8} {:>9} {:>7} {:>21} {:>10}  {}",
            PEERS[i].0,
            addrs[i].to_string(),
            host,
            state,
            num(t.answers.load(Ordering::Relaxed)),
            num(t.errors()),
            msgs,
            reconnects,
            last_error
        );
    }
    out!();
    out!("pool totals (AddressClient::stats() once the traffic had drained):");
    let by_kind: Vec<String> = stats.errors_by_kind.iter().map(|(k, n)| format!("{k} {}", num(*n))).collect();
    let rows: [(&str, String); 9] = [
        ("requests", num(stats.requests)),
        ("answers", num(stats.answers)),
        (
            "errors",
            format!(
                "{}{}",
                num(stats.errors),
                if by_kind.is_empty() { String::new() } else { format!("   by kind: {}", by_kind.join(", ")) }
            ),
        ),
        ("timeouts", num(stats.timeouts)),
        (
            "connections created",
            format!("{}   (first connections and re-establishments)", num(stats.connections_created)),
        ),
        ("failed attempts", format!("{}   (dials or handshakes that failed)", num(stats.failed_attempts))),
        ("connections lost", num(stats.connections_lost)),
        ("messages sent/recv", format!("{} / {}", num(stats.messages_sent), num(stats.messages_received))),
        ("bytes sent/recv", format!("{} / {}", num(stats.bytes_sent), num(stats.bytes_received))),
    ];
    for (k, v) in rows {
        out!("  {k:<22} {v}");
    }
    out!();

    // The checks: anything failing here is a real defect.
    let mut problems = Vec::new();
    let outcomes = stats.answers + stats.errors + stats.timeouts;
    let holds = stats.requests == outcomes;
    out!(
        "invariant requests (counted at submission) == answers + errors + timeouts (counted at completion): {} == {} + {} + {}  {}",
        num(stats.requests),
        num(stats.answers),
        num(stats.errors),
        num(stats.timeouts),
        if holds { "holds" } else { "BROKEN" }
    );
    if !holds {
        problems.push(format!("requests {} != answers + errors + timeouts {outcomes}", stats.requests));
    }
    let sent: u64 = shared.tallies.iter().map(|t| t.sent.load(Ordering::Relaxed)).sum();
    if sent != stats.requests {
        problems.push(format!("the demo sent {sent} requests but the pool counted {}", stats.requests));
    }
    for (i, (t, (letter, _))) in shared.tallies.iter().zip(PEERS).enumerate() {
        if i != VICTIM && t.errors() > 0 {
            let why = lock(&t.last_other).clone().unwrap_or_default();
            problems.push(format!("peer {letter} saw {} errors though it was never killed {why}", t.errors()));
        }
        if t.bad_answers.load(Ordering::Relaxed) > 0 {
            problems.push(format!("peer {letter} sent answers other than 2001"));
        }
    }
    if shared.tallies[VICTIM].answers.load(Ordering::Relaxed) <= answers_at_reconnect {
        problems.push(format!("peer {victim} answered nothing after its reconnection"));
    }
    let failed_peers = shared.failures.borrow().clone();
    if failed_peers.is_empty() || failed_peers.iter().any(|&p| p != VICTIM) {
        problems.push(format!("expected failure callbacks for peer {victim} only, got {failed_peers:?}"));
    }
    if problems.is_empty() {
        out!(
            "demo complete in {:.1} s: every request ended in an answer or a typed error.",
            clock.start.elapsed().as_secs_f64()
        );
        Ok(())
    } else {
        Err(Failure::failed(format!("demo checks failed: {}", problems.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(ms(Duration::from_micros(183)), "183 µs");
        assert_eq!(ms(Duration::from_micros(12_345)), "12.35 ms");
        assert_eq!(ms(Duration::from_millis(1500)), "1.50 s");
    }

    #[test]
    fn candidate_ports_avoid_the_ephemeral_range() {
        for p in candidate_ports(1) {
            assert!((20_000..60_999).contains(&p), "{p}");
        }
    }
}
