//! In-process comparison: the standard workload through our stack and
//! through the `diameter` crate 0.7.1 (diameter-rs), in the same run, client
//! and server in this one process. `scripts/bench-compare.sh` runs the
//! separate-process comparison (client and server as separate processes,
//! as users run them, beside a raw TCP echo).
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
//! The closed-loop driver (`support/closed_loop.rs`) and the diameter-rs
//! side (`support/drs.rs`) are shared with `examples/compare_peer.rs`.
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

#[path = "support/closed_loop.rs"]
mod closed_loop;
#[path = "support/drs.rs"]
mod drs;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use closed_loop::{Cell, SendFn};
use diam_client::{handler_fn, AddressClient, ConnectionConfig, Node, NodeConfig, PoolConfig, Response};
use diam_proto::peer::result_code;
use diam_proto::{apps, avps, commands, result_codes, Message};
use drs::{CLIENT_HOST, CLIENT_REALM, SERVER_HOST, SERVER_REALM};

/// Our request timeout; a worker still stuck twice as long after the
/// window is aborted and counted as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `inflight` closed-loop workers over `send`.
async fn drive(send: SendFn, inflight: usize, warmup: Duration, window: Duration) -> Cell {
    closed_loop::drive(send, inflight, warmup, window, REQUEST_TIMEOUT * 2).await
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

async fn bench_theirs(inflight: usize, warmup: Duration, window: Duration) -> Cell {
    let dict = drs::dictionary();
    let (server, addr) = drs::bind("127.0.0.1:0".parse().unwrap()).await.expect("bind theirs");
    let answered = Arc::new(AtomicU64::new(0));
    let server_task = tokio::spawn(drs::serve(server, dict.clone(), answered.clone()));
    let client = Arc::new(drs::Client::connect(addr, dict).await.expect("connect (theirs)"));
    let c = client.clone();
    let send: SendFn = Arc::new(move |n| {
        let c = c.clone();
        Box::pin(async move { c.send(n).await })
    });
    let cell = drive(send, inflight, warmup, window).await;
    // Every 2001 the workers counted was produced by that server.
    let served = answered.load(Ordering::Relaxed);
    assert!(served >= cell.answers, "their server answered {served}, the client counted {}", cell.answers);
    drop(client);
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
