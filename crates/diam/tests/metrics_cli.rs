//! `diam serve --metrics ADDR` serves Prometheus text with the server's
//! counters.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{diam, free_port, run, start_serve, Proc};

/// GET /metrics over a plain HTTP/1.0 request; the body.
fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "not a 200 response: {head}");
    Ok(body.to_string())
}

/// The value of the sample line `series` (name plus labels, as printed).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes until `series` reaches `want` (bounded).
fn wait_for_sample(addr: SocketAddr, series: &str, want: f64, serve: &Proc) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape(addr).unwrap_or_default();
        if sample(&body, series) == Some(want) {
            return body;
        }
        if Instant::now() >= deadline {
            panic!("{series} never reached {want}; last scrape:\n{body}\n{}", serve.dump());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_exports_its_counters() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (serve, addr) = start_serve(&["--metrics", &metrics_addr.to_string(), "--origin-host", "metrics.test"]);
    for n in 0..5 {
        let f = run(
            diam().args(["send", "--peer", &addr.to_string(), "--app", "4", "--command", "272"]).args([
                "--avp",
                &format!("Session-Id=client.test;1;{n}"),
                "--avp",
                "CC-Request-Type=1",
                "--avp",
                &format!("CC-Request-Number={n}"),
            ]),
            30,
        );
        assert!(f.success(), "diam send #{n}: {}", f.describe());
    }
    let body = wait_for_sample(metrics_addr, "diam_serve_requests_total", 5.0, &serve);
    assert_eq!(sample(&body, "diam_serve_answers_total{result_code=\"2001\"}"), Some(5.0), "{body}");
    assert!(body.contains("# TYPE diam_serve_requests_total counter"), "{body}");
    assert!(body.contains("# HELP diam_serve_requests_total"), "{body}");
    // Registered up front, so it is exported (as 0) before anything is dropped.
    assert_eq!(sample(&body, "diam_serve_dropped_total"), Some(0.0), "nothing was dropped:\n{body}");
}

#[test]
fn serve_counts_dropped_requests() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (serve, addr) = start_serve(&["--metrics", &metrics_addr.to_string(), "--drop-rate", "1"]);
    for _ in 0..2 {
        let f = run(
            diam().args(["send", "--peer", &addr.to_string(), "--app", "4", "--command", "272", "--timeout-ms", "200"]),
            30,
        );
        assert_eq!(f.code(), Some(1), "an unanswered request fails: {}", f.describe());
    }
    let body = wait_for_sample(metrics_addr, "diam_serve_dropped_total", 2.0, &serve);
    assert_eq!(sample(&body, "diam_serve_requests_total"), Some(2.0), "{body}");
}

#[test]
fn metrics_address_in_use_fails_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let f = run(diam().args(["serve", "--listen", "127.0.0.1:0", "--metrics", &busy]), 30);
    assert_eq!(f.code(), Some(1), "{}", f.describe());
    assert!(f.stderr.contains("--metrics"), "{}", f.describe());
}

#[test]
fn metrics_address_must_be_an_address() {
    let f = run(diam().args(["serve", "--listen", "127.0.0.1:0", "--metrics", "nonsense"]), 30);
    assert_eq!(f.code(), Some(2), "{}", f.describe());
}

/// `diam bench --metrics`: a small pool publishes its traffic totals while
/// the run goes on (every second), not only at its 30 s sweep.
#[test]
fn bench_exports_pool_totals_during_the_run() {
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (serve, addr) = start_serve(&["--origin-host", "metrics.test"]);
    let mut cmd = diam();
    cmd.args(["bench", "--peer", &addr.to_string(), "--duration", "6", "--inflight", "4", "--json"])
        .args(["--metrics", &metrics_addr.to_string()]);
    let bench = Proc::spawn("bench", &cmd, false).expect("starting diam bench");
    let deadline = Instant::now() + Duration::from_secs(5);
    let sent = loop {
        let body = scrape(metrics_addr).unwrap_or_default();
        if let Some(n) = sample(&body, "diam_pool_messages_sent_total").filter(|&n| n > 0.0) {
            break n;
        }
        if Instant::now() >= deadline {
            panic!("no diam_pool_messages_sent_total within 5 s; last scrape:\n{body}\n{}", bench.dump());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(sent > 0.0);
    drop(bench);
    drop(serve);
}
