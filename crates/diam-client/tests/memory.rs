//! Client memory per connection: 1,000 connections, each after 1,000
//! requests, hold at most 24 KiB apiece in the client process.
//!
//! The server and the client run as separate processes (this test binary
//! re-run with a role in `DIAM_MEMTEST_ROLE`), under `ulimit -n 8192`, so
//! the client's resident memory is its own. The client reports VmRSS before
//! it opens any connection and once every connection has carried its
//! requests; the test checks the difference per connection.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use diam_client::{handler_fn, AddressClient, Node, NodeConfig, PoolConfig};
use diam_proto::{avps, Message};

const CONNECTIONS: usize = 1000;
const REQUESTS: u32 = 1000;
const MAX_PER_CONNECTION: u64 = 24 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn role() -> Option<String> {
    std::env::var("DIAM_MEMTEST_ROLE").ok()
}

/// Re-runs this binary as `role` (one test, its output on stdout).
fn spawn(role: &str, test: &str, extra: &[(&str, String)]) -> std::process::Child {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"ulimit -n 8192 2>/dev/null || ulimit -n 4096; exec "$0" "$@""#)
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("DIAM_MEMTEST_ROLE", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("re-running the test binary")
}

/// The server side (run only as a child): 1,000 nodes (a client may hold
/// one connection per server identity), one listener each, sharing one
/// event dispatcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn memtest_server() {
    if role().as_deref() != Some("server") {
        return;
    }
    let events = diam_link::events::EventDispatcher::new();
    let mut ports = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..CONNECTIONS {
        let mut c = NodeConfig::new(format!("server{i}.mem.test"), "mem.test");
        c.connection.peer.auth_application_ids = vec![4];
        let ok = handler_fn(|req: Message| async move {
            Message::answer_to(&req)
                .avp(avps::RESULT_CODE, 2001u32)
                .avp(avps::ORIGIN_HOST, "server.mem.test")
                .avp(avps::ORIGIN_REALM, "mem.test")
                .build()
        });
        let node = Node::builder(c).default_handler(ok).accept_any().events(events.clone()).build().unwrap();
        ports.push(node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap().port().to_string());
        nodes.push(node);
    }
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "PORTS {}", ports.join(","));
    let _ = stdout.flush();
    // Serve until the parent closes our stdin... or kills us.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// The client side (run only as a child): an address client, 1,000
/// connections, 1,000 requests on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memtest_client() {
    if role().as_deref() != Some("client") {
        return;
    }
    let ports: Vec<u16> = std::env::var("DIAM_MEMTEST_PORTS").unwrap().split(',').map(|p| p.parse().unwrap()).collect();
    let mut c = PoolConfig::new("client.mem.test", "mem.test");
    c.connection.peer.auth_application_ids = vec![4];
    c.max_connections = 2 * CONNECTIONS;
    c.connection.request_timeout = Duration::from_secs(60);
    let client = AddressClient::new(c).unwrap();
    // Warm the allocator and the runtime on one connection first.
    let warm: std::net::SocketAddr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    for n in 0..100 {
        client.send(warm, ccr(n)).await.unwrap();
    }
    let before = rss_bytes();
    let mut tasks = tokio::task::JoinSet::new();
    for &port in &ports[1..] {
        let client = client.clone();
        tasks.spawn(async move {
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            // Four in flight at a time on each connection.
            for batch in 0..REQUESTS / 4 {
                let sends = (0..4).map(|k| client.send(addr, ccr(batch * 4 + k)));
                for r in futures_join(sends).await {
                    r.expect("answer");
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_bytes();
    let stats = client.stats();
    println!(
        "RESULT connections={} answers={} rss_before={before} rss_after={after}",
        client.active_connections(),
        stats.answers
    );
}

/// Awaits every future (a small join_all, to keep dev-dependencies lean).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futs.map(Box::pin).collect();
    for h in handles {
        out.push(h.await);
    }
    out
}

fn ccr(n: u32) -> Message {
    Message::request(4, 272)
        .avp(avps::SESSION_ID, format!("client.mem.test;1;{n}"))
        .avp(avps::ORIGIN_HOST, "client.mem.test")
        .avp(avps::ORIGIN_REALM, "mem.test")
        .avp(avps::DESTINATION_REALM, "mem.test")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .avp(avps::SERVICE_CONTEXT_ID, "32251@3gpp.org")
        .avp(avps::CC_REQUEST_TYPE, 1)
        .avp(avps::CC_REQUEST_NUMBER, n)
        .build()
}

#[test]
fn a_thousand_connections_after_a_thousand_requests_each_stay_under_24_kib_apiece() {
    if role().is_some() || !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let mut server = spawn("server", "memtest_server", &[]);
    // The test harness prints its own lines first.
    let mut server_out = BufReader::new(server.stdout.take().unwrap());
    let ports = loop {
        let mut line = String::new();
        if server_out.read_line(&mut line).unwrap() == 0 {
            panic!("the server ended before listing its ports");
        }
        if let Some(i) = line.find("PORTS ") {
            break line[i + 6..].trim().to_string();
        }
    };
    let client = spawn("client", "memtest_client", &[("DIAM_MEMTEST_PORTS", ports)]);
    let out = client.wait_with_output().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    drop(server_out);
    let text = String::from_utf8_lossy(&out.stdout);
    let result = text
        .lines()
        .find_map(|l| l.find("RESULT ").map(|i| &l[i + 7..]))
        .unwrap_or_else(|| panic!("client said:\n{text}"));
    let field = |k: &str| -> u64 {
        result.split_whitespace().find_map(|kv| kv.strip_prefix(&format!("{k}="))).unwrap().parse().unwrap()
    };
    let conns = field("connections");
    assert_eq!(conns as usize, CONNECTIONS, "{result}");
    assert_eq!(field("answers"), 100 + (CONNECTIONS as u64 - 1) * u64::from(REQUESTS), "{result}");
    let grown = field("rss_after").saturating_sub(field("rss_before"));
    let per = grown / (CONNECTIONS as u64 - 1);
    eprintln!(
        "{} connections, {REQUESTS} requests each: client RSS grew {grown} bytes, {per} bytes per connection",
        conns - 1
    );
    assert!(per <= MAX_PER_CONNECTION, "{per} bytes per connection (at most {MAX_PER_CONNECTION}): {result}");
}
