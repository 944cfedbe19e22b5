//! Killing a real `diam serve` process mid-flight fails every pending
//! request at once (well under 100 ms) and fires `on_failure` once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diam_client::{CloseReason, Error, Node, NodeConfig};
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
    let addr: std::net::SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    let addr: diam_client::PeerAddr = addr.into();

    let failures = Arc::new(Mutex::new(Vec::new()));
    let f = failures.clone();
    let mut config = NodeConfig::new("client.test", "test");
    config.connection.peer.auth_application_ids = vec![4];
    config.connection.request_timeout = Duration::from_secs(20);
    let node = Node::builder(config).build().unwrap();
    let _sub = node.on_failure(move |info| f.lock().unwrap().push(info.clone()));
    let peer = node.connect(addr.clone()).await.unwrap();

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
    assert_eq!(failures[0].peer_address.as_ref(), Some(&addr));
    assert_eq!(failures[0].peer_origin_host.as_deref(), Some("diam.localdomain"));
}
