//! Killing a real `diam serve` process mid-flight fails every pending
//! request at once (well under 100 ms) and fires `on_failure` once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diam_client::{CloseReason, ConnectionConfig, Error, Hooks, Peer};
use diam_proto::{avps, Message};

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_fails_pending_requests_fast() {
    // Answers take 30 s, so every request is still pending at the kill.
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_diam"))
            .args(["serve", "--listen", "127.0.0.1:0", "--delay-ms", "30000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn diam serve"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line");
    let addr = v["addr"].as_str().unwrap().parse().unwrap();

    let failures = Arc::new(Mutex::new(Vec::new()));
    let f = failures.clone();
    let hooks = Hooks { on_failure: Some(Arc::new(move |info| f.lock().unwrap().push(info))), ..Hooks::default() };
    let mut config = ConnectionConfig::new("client.test", "test");
    config.peer.auth_application_ids = vec![4];
    config.request_timeout = Duration::from_secs(20);
    let peer = Peer::connect_with(addr, config, hooks).await.unwrap();

    let mut joins = Vec::new();
    for n in 0..100u32 {
        let p = peer.clone();
        let req = Message::request(4, 272).avp(avps::SESSION_ID, format!("client.test;1;{n}")).build();
        joins.push(tokio::spawn(async move { (p.send(req).await, Instant::now()) }));
    }
    // Let every request reach the server.
    while peer.stats().messages_sent < 101 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(peer.in_flight(), 100);

    let killed = Instant::now();
    child.0.kill().unwrap();
    let mut slowest = Duration::ZERO;
    for j in joins {
        let (r, at) = j.await.unwrap();
        assert!(matches!(r, Err(Error::ConnectionLost(CloseReason::TransportClosed))), "{r:?}");
        slowest = slowest.max(at.duration_since(killed));
    }
    eprintln!("100 pending requests all failed within {slowest:?} of SIGKILL");
    assert!(slowest < Duration::from_millis(100), "took {slowest:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1, "on_failure fires exactly once");
    assert_eq!(failures[0].peer_address, addr);
    assert_eq!(failures[0].peer_origin_host.as_deref(), Some("diam.localdomain"));
}
