//! The standard workload through our stack and through the `diameter`
//! crate 0.7.1 (diameter-rs), in the same run.
//!
//! Each cell: a fresh server and client on 127.0.0.1 (one TCP connection),
//! N worker tasks each sending a Credit-Control-Request (application 4,
//! command 272: Session-Id, Origin-Host, Origin-Realm, Destination-Realm,
//! Auth-Application-Id, Service-Context-Id, CC-Request-Type,
//! CC-Request-Number) and awaiting its
//! answer back to back, so N requests are always in flight. Both servers
//! answer the same CCA (Session-Id, Result-Code 2001, Origin-Host,
//! Origin-Realm, Auth-Application-Id, CC-Request-Type, CC-Request-Number).
//! A warm-up, then a fixed measurement window; answers per second and the
//! p50/p99 latency (hdrhistogram, µs) are reported, with the ratio ours /
//! theirs.
//!
//! Implementations:
//! * `diam AddressClient`: our pool (`diam_client::AddressClient`, what
//!   `diam bench` uses) against a `diam_client::Node` serving the handler.
//! * `diam Peer`: a node's peer handle (`diam_client::PeerHandle`) against
//!   the same server, to show what the pool layer costs.
//! * `diameter 0.7.1`: its `DiameterClient` against its `DiameterServer`.
//!   Its `send_message` takes `&mut self`, so the workers share the client
//!   behind a `tokio::sync::Mutex` held only while the request is written;
//!   the answers are awaited outside the lock, so N stay outstanding.
//!
//! Everything runs on one tokio multi-thread runtime with 2 workers (this
//! machine's cores), client and server alike, for every implementation.
//!
//! Run: `cargo bench -p diam --bench compare` (about a minute). Environment:
//! `DIAM_COMPARE_SECS` (measurement per cell, default 2),
//! `DIAM_COMPARE_WARMUP_MS` (default 300), `DIAM_COMPARE_ROUNDS` (default
//! 3: each cell runs that many times, implementations interleaved, and the
//! median is reported, since a shared 2-core machine is noisy),
//! `DIAM_COMPARE_INFLIGHT` (default `1,16,256`), `DIAM_COMPARE_IMPLS`
//! (default `pool,peer,theirs`: which rows to run, e.g. for profiling).
//! Without `--bench` (e.g. `cargo test --benches`)
//! it runs a short smoke pass.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diam_client::{handler_fn, AddressClient, ConnectionConfig, Node, NodeConfig, PoolConfig, Response};
use diam_proto::peer::result_code;
use diam_proto::{apps, avps, commands, result_codes, Message};
use diameter::avp::flags::M;
use diameter::avp::Unsigned32 as DUnsigned32;
use diameter::avp::{Enumerated as DEnumerated, Identity as DIdentity, UTF8String as DUtf8String};
use diameter::dictionary::{Dictionary as DDictionary, DEFAULT_DICT_XML};
use diameter::transport::{DiameterClient, DiameterClientConfig, DiameterServer, DiameterServerConfig};
use diameter::{flags as dflags, ApplicationId, CommandCode, DiameterMessage};
use hdrhistogram::Histogram;

const CLIENT_HOST: &str = "client.example.com";
const CLIENT_REALM: &str = "example.com";
const SERVER_HOST: &str = "server.example.net";
const SERVER_REALM: &str = "example.net";
/// Our request timeout; a worker still stuck twice as long after the
/// window is aborted and counted as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type BoxFuture = Pin<Box<dyn Future<Output = bool> + Send>>;
/// Sends request number `n` and resolves to whether a 2001 answer came.
type SendFn = Arc<dyn Fn(u64) -> BoxFuture + Send + Sync>;

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Cell {
    rps: f64,
    p50: u64,
    p99: u64,
    failures: u64,
}

/// Runs `inflight` closed-loop workers over `send`.
async fn drive(send: SendFn, inflight: usize, warmup: Duration, window: Duration) -> Cell {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let next = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..inflight {
        let (send, phase, next, failures) = (send.clone(), phase.clone(), next.clone(), failures.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut answers = 0u64;
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == STOP {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t0 = Instant::now();
                // No timer per request here (it would cost both sides a
                // timer-wheel insertion): ours times out by itself, and a
                // stuck worker is aborted below.
                let ok = send(n).await;
                let us = t0.elapsed().as_micros() as u64;
                if phase.load(Ordering::Relaxed) == MEASURE && p == MEASURE {
                    if ok {
                        answers += 1;
                        hist.saturating_record(us.max(1));
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if !ok {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (answers, hist)
        }));
    }
    tokio::time::sleep(warmup).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut answers = 0;
    let give_up = tokio::time::Instant::now() + REQUEST_TIMEOUT * 2;
    for mut w in workers {
        match tokio::time::timeout_at(give_up, &mut w).await {
            Ok(Ok((a, h))) => {
                answers += a;
                total.add(&h).unwrap();
            }
            _ => {
                // Stuck on a request that never got an answer.
                w.abort();
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let q = |q: f64| if total.is_empty() { 0 } else { total.value_at_quantile(q) };
    Cell {
        rps: answers as f64 / elapsed.as_secs_f64(),
        p50: q(0.5),
        p99: q(0.99),
        failures: failures.load(Ordering::Relaxed),
    }
}

// ----------------------------------------------------------------- ours

fn our_ccr(n: u64) -> Message {
    Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
        .proxiable(true)
        .avp(avps::SESSION_ID, format!("{CLIENT_HOST};1700000000;{n}"))
        .avp(avps::ORIGIN_HOST, CLIENT_HOST)
        .avp(avps::ORIGIN_REALM, CLIENT_REALM)
        .avp(avps::DESTINATION_REALM, SERVER_REALM)
        .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
        .avp(avps::SERVICE_CONTEXT_ID, "32251@3gpp.org")
        .avp(avps::CC_REQUEST_TYPE, 1i32)
        .avp(avps::CC_REQUEST_NUMBER, 0u32)
        .build()
}

/// The answer `diam serve` gives.
fn our_cca(req: &Message) -> Message {
    let mut b = Message::answer_to(req)
        .avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS)
        .avp(avps::ORIGIN_HOST, SERVER_HOST)
        .avp(avps::ORIGIN_REALM, SERVER_REALM);
    for key in [avps::AUTH_APPLICATION_ID, avps::CC_REQUEST_NUMBER] {
        if let Some(avp) = req.find(key) {
            b = b.copy_avp(&avp);
        }
    }
    if let Some(avp) = req.find(avps::CC_REQUEST_TYPE) {
        b = b.copy_avp(&avp);
    }
    b.build()
}

fn our_answer_ok(ans: &Message) -> bool {
    result_code(ans) == Some(2001)
}

/// Our server on an ephemeral port; dropping the node shuts it down.
async fn start_our_server() -> (SocketAddr, Node) {
    let mut config = NodeConfig::new(SERVER_HOST, SERVER_REALM);
    config.connection.peer.auth_application_ids = vec![apps::RELAY];
    config.connection.max_concurrent_handlers = 4096;
    let handler = handler_fn(|req: Message| async move { Response::Answer(our_cca(&req)) });
    let node = Node::builder(config).default_handler(handler).accept_any().build().expect("our server");
    let addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.expect("bind our server");
    (addr, node)
}

fn client_config() -> ConnectionConfig {
    let mut c = ConnectionConfig::new(CLIENT_HOST, CLIENT_REALM);
    c.peer.auth_application_ids = vec![apps::CREDIT_CONTROL];
    c.request_timeout = REQUEST_TIMEOUT;
    c
}

async fn bench_ours_pool(inflight: usize, warmup: Duration, window: Duration) -> Cell {
    let (addr, shutdown) = start_our_server().await;
    let client = AddressClient::new(PoolConfig { connection: client_config(), ..PoolConfig::default() }).unwrap();
    let first = client.send(addr, our_ccr(u64::MAX)).await.expect("first CCA (ours)");
    assert!(our_answer_ok(&first), "our server answers 2001: {first:?}");
    let c = client.clone();
    let send: SendFn = Arc::new(move |n| {
        let c = c.clone();
        Box::pin(async move { c.send(addr, our_ccr(n)).await.is_ok_and(|a| our_answer_ok(&a)) })
    });
    let cell = drive(send, inflight, warmup, window).await;
    client.close(Duration::from_secs(1)).await;
    drop(shutdown);
    cell
}

async fn bench_ours_peer(inflight: usize, warmup: Duration, window: Duration) -> Cell {
    let (addr, shutdown) = start_our_server().await;
    let node = Node::builder(NodeConfig { connection: client_config(), ..NodeConfig::default() }).build().unwrap();
    let peer = node.connect(addr.into()).await.expect("connect (ours)");
    let p = peer.clone();
    let send: SendFn = Arc::new(move |n| {
        let p = p.clone();
        Box::pin(async move { p.send(our_ccr(n)).await.is_ok_and(|a| our_answer_ok(&a)) })
    });
    let cell = drive(send, inflight, warmup, window).await;
    peer.close(diam_proto::disconnect_cause::REBOOTING).await;
    drop(shutdown);
    cell
}

// --------------------------------------------------------------- theirs

fn their_ccr(dict: &Arc<DDictionary>, seq: u32, n: u64) -> DiameterMessage {
    let mut m = DiameterMessage::new(
        CommandCode::CreditControl,
        ApplicationId::CreditControl,
        dflags::REQUEST | dflags::PROXYABLE,
        seq,
        seq,
        Arc::clone(dict),
    );
    m.add_avp(263, None, M, DUtf8String::new(&format!("{CLIENT_HOST};1700000000;{n}")).into());
    m.add_avp(264, None, M, DIdentity::new(CLIENT_HOST).into());
    m.add_avp(296, None, M, DIdentity::new(CLIENT_REALM).into());
    m.add_avp(283, None, M, DIdentity::new(SERVER_REALM).into());
    m.add_avp(258, None, M, DUnsigned32::new(4).into());
    m.add_avp(461, None, M, DUtf8String::new("32251@3gpp.org").into());
    m.add_avp(416, None, M, DEnumerated::new(1).into());
    m.add_avp(415, None, M, DUnsigned32::new(0).into());
    m
}

/// Their server's handler: a CEA for a CER, otherwise the standard CCA.
async fn their_answer(req: DiameterMessage, dict: Arc<DDictionary>) -> diameter::Result<DiameterMessage> {
    let mut res = DiameterMessage::new(
        req.get_command_code(),
        req.get_application_id(),
        req.get_flags() & !dflags::REQUEST,
        req.get_hop_by_hop_id(),
        req.get_end_to_end_id(),
        dict,
    );
    if let CommandCode::CapabilitiesExchange = req.get_command_code() {
        res.add_avp(268, None, M, DUnsigned32::new(2001).into());
        res.add_avp(264, None, M, DIdentity::new(SERVER_HOST).into());
        res.add_avp(296, None, M, DIdentity::new(SERVER_REALM).into());
        res.add_avp(266, None, M, DUnsigned32::new(0).into());
        res.add_avp(269, None, M, DUtf8String::new("diameter-rs").into());
        res.add_avp(258, None, M, DUnsigned32::new(4).into());
        return Ok(res);
    }
    if let Some(sid) = req.get_avp(263) {
        res.add_avp(263, None, M, sid.get_value().clone());
    }
    res.add_avp(268, None, M, DUnsigned32::new(2001).into());
    res.add_avp(264, None, M, DIdentity::new(SERVER_HOST).into());
    res.add_avp(296, None, M, DIdentity::new(SERVER_REALM).into());
    for code in [258, 416, 415] {
        if let Some(avp) = req.get_avp(code) {
            res.add_avp(code, None, M, avp.get_value().clone());
        }
    }
    Ok(res)
}

fn their_answer_ok(ans: &DiameterMessage) -> bool {
    ans.get_avp(268).and_then(|a| a.get_unsigned32()) == Some(2001)
}

async fn bench_theirs(inflight: usize, warmup: Duration, window: Duration) -> Cell {
    let dict = Arc::new(DDictionary::new(&[&DEFAULT_DICT_XML]));
    // Its server does not report its address: pick a free port first.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = DiameterServer::new(&addr, DiameterServerConfig { native_tls: None }).await.expect("bind theirs");
    let server_dict = dict.clone();
    let server_task = tokio::spawn(async move {
        let d = server_dict.clone();
        let _ = server
            .listen(
                move |req| {
                    let d = d.clone();
                    their_answer(req, d)
                },
                server_dict,
            )
            .await;
    });

    let mut client = DiameterClient::new(&addr, DiameterClientConfig { use_tls: false, verify_cert: false });
    let mut handler = client.connect().await.expect("connect (theirs)");
    let reader_dict = dict.clone();
    let reader = tokio::spawn(async move { DiameterClient::handle(&mut handler, reader_dict).await });
    // Capabilities exchange, as a real client would.
    let mut cer = DiameterMessage::new(
        CommandCode::CapabilitiesExchange,
        ApplicationId::Common,
        dflags::REQUEST,
        1,
        1,
        dict.clone(),
    );
    cer.add_avp(264, None, M, DIdentity::new(CLIENT_HOST).into());
    cer.add_avp(296, None, M, DIdentity::new(CLIENT_REALM).into());
    cer.add_avp(266, None, M, DUnsigned32::new(0).into());
    cer.add_avp(269, None, M, DUtf8String::new("compare").into());
    cer.add_avp(258, None, M, DUnsigned32::new(4).into());
    let cea = client.send_message(cer).await.expect("CER (theirs)").await.expect("CEA (theirs)");
    assert!(their_answer_ok(&cea), "their CEA: {cea}");
    let first = client.send_message(their_ccr(&dict, 2, u64::MAX)).await.unwrap().await.expect("first CCA (theirs)");
    assert!(their_answer_ok(&first), "their server answers 2001: {first}");
    assert!(first.get_avp(263).is_some() && first.get_avp(415).is_some(), "their CCA: {first}");

    let client = Arc::new(tokio::sync::Mutex::new(client));
    let seq = Arc::new(AtomicU32::new(3));
    let send: SendFn = Arc::new(move |n| {
        let (client, seq, dict) = (client.clone(), seq.clone(), dict.clone());
        Box::pin(async move {
            let req = their_ccr(&dict, seq.fetch_add(1, Ordering::Relaxed), n);
            let pending = {
                let mut c = client.lock().await;
                c.send_message(req).await
            };
            match pending {
                Ok(f) => f.await.is_ok_and(|a| their_answer_ok(&a)),
                Err(_) => false,
            }
        })
    });
    let cell = drive(send, inflight, warmup, window).await;
    reader.abort();
    server_task.abort();
    cell
}

// ------------------------------------------------------------------ main

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The implementations, in table order.
const IMPLS: [(&str, &str); 3] = [("pool", "diam AddressClient"), ("peer", "diam Peer"), ("theirs", "diameter 0.7.1")];

fn run_cell(rt: &tokio::runtime::Runtime, which: &str, n: usize, warmup: Duration, window: Duration) -> Cell {
    match which {
        "pool" => rt.block_on(bench_ours_pool(n, warmup, window)),
        "peer" => rt.block_on(bench_ours_peer(n, warmup, window)),
        _ => rt.block_on(bench_theirs(n, warmup, window)),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (secs_ms, warmup_ms, rounds) = if full {
        (
            env_u64("DIAM_COMPARE_SECS", 2) * 1000,
            env_u64("DIAM_COMPARE_WARMUP_MS", 300),
            env_u64("DIAM_COMPARE_ROUNDS", 3).max(1) as usize,
        )
    } else {
        (200, 50, 1)
    };
    let window = Duration::from_millis(secs_ms);
    let warmup = Duration::from_millis(warmup_ms);
    let levels: Vec<usize> = std::env::var("DIAM_COMPARE_INFLIGHT")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    let only = std::env::var("DIAM_COMPARE_IMPLS").unwrap_or_else(|_| "pool,peer,theirs".into());
    let impls: Vec<(&str, &str)> = IMPLS.iter().copied().filter(|(k, _)| only.contains(k)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    println!(
        "standard workload: CCR (app 4, cmd 272) -> CCA 2001, one TCP connection on 127.0.0.1, 2 runtime workers;\n\
         {rounds} round(s) per cell of {:.1} s after {} ms of warm-up, implementations interleaved; \
         the median round is shown (req/s range in brackets)\n",
        window.as_secs_f64(),
        warmup.as_millis()
    );
    println!(
        "{:>9}  {:<20} {:>10} {:>21} {:>8} {:>8} {:>7}",
        "in flight", "implementation", "req/s", "[min - max]", "p50 µs", "p99 µs", "failed"
    );
    let mut ratios = Vec::new();
    for &n in &levels {
        let mut cells: Vec<Vec<Cell>> = impls.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            // Rotate the order so no implementation always runs first.
            for k in 0..impls.len() {
                let i = (k + round) % impls.len();
                cells[i].push(run_cell(&rt, impls[i].0, n, warmup, window));
            }
        }
        let mut median = std::collections::HashMap::new();
        for ((key, name), mut runs) in impls.iter().zip(cells) {
            runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            let (lo, hi) = (runs[0].rps, runs[runs.len() - 1].rps);
            let failures: u64 = runs.iter().map(|c| c.failures).sum();
            let m = runs.swap_remove(runs.len() / 2);
            println!(
                "{n:>9}  {name:<20} {:>10.0} {:>21} {:>8} {:>8} {:>7}",
                m.rps,
                format!("[{lo:.0} - {hi:.0}]"),
                m.p50,
                m.p99,
                failures
            );
            median.insert(*key, m.rps);
        }
        if let Some(&theirs) = median.get("theirs") {
            let mut line = String::new();
            for (key, name) in &impls[..] {
                if let (true, Some(ours)) = (*key != "theirs", median.get(key)) {
                    line.push_str(&format!("  {name} {:.2}x", ours / theirs));
                }
            }
            println!("{:>9}  ratio ours/theirs (medians):{line}\n", "");
            if let Some(ours) = median.get("pool") {
                ratios.push((n, ours / theirs));
            }
        }
    }
    if !full {
        println!(
            "smoke pass (run without --bench): figures are not meaningful; use `cargo bench -p diam --bench compare`"
        );
        return;
    }
    let target = |n: usize| match n {
        1 => Some(2.0),
        256 => Some(5.0),
        _ => None,
    };
    for (n, r) in ratios {
        if let Some(t) = target(n) {
            let verdict = if r >= t { "met" } else { "MISSED" };
            println!("target at {n} in flight: AddressClient >= {t:.0}x the diameter crate: {r:.2}x ({verdict})");
        }
    }
}
