//! `diam bench` → `diam relay` → two `diam serve`, four separate processes;
//! one serve is SIGKILLed under load and the run goes on against the other.
//!
//! The relay routes `localdomain` (the bench's default Destination-Realm) to
//! both serves, round-robin. Once both carry traffic, serve B is SIGKILLed
//! with requests outstanding at it; the requests it never answered are
//! re-sent by the relay, once, to serve A with the T flag. When the bench
//! ends, the relay's `--metrics` endpoint is scraped, then the relay and A
//! are stopped with SIGTERM for their `stopped` summaries.
//!
//! Every figure compared below comes from a different process (or from
//! counters kept at different points of one process), never from a sum
//! computed out of the same figures (STYLE.md rule 18):
//!
//! 1. No request without an outcome: the bench's `requests` (counted at
//!    submission) equals `answers + errors + timeouts`; there are no
//!    timeouts and no errors (the bench's only connection, to the relay,
//!    never fails), and every answer is 2001 or the relay's own 3002.
//! 2. The client's 2001 count against the servers' and the relay's: exact
//!    where the protocol makes it so, bounded where it cannot (see
//!    [`check_run`] for the argument).
//! 3. A's T-flag count equals the relay's `retransmitted`, and is > 0 in at
//!    least one of up to three attempts (the kill must land with requests
//!    outstanding; the serves hold each request `DELAY_MS`, so with
//!    `INFLIGHT` requests in flight about half of them sit at B at any time).
//! 4. The relay answers 3002 only for requests it could not retransmit: no
//!    more than were outstanding at B when it died (at most `INFLIGHT`).
//!
//! The relay's per-peer series carry a stable `peer` label: the dial
//! address for peers given by address (never their Origin-Host, whenever
//! their capabilities exchange finished).
//!
//! No wall-clock bound is asserted: the kill waits for traffic on both
//! serves (scraped), not for a fixed time, and every wait is a generous
//! upper bound, so a loaded 2-core machine only makes the run slower.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{diam, free_port, scrape_metrics, start_serve, Proc};
use serde_json::Value;

/// Requests the bench keeps in flight.
const INFLIGHT: u64 = 64;
/// How long each serve holds a request before answering: keeps requests
/// outstanding at the server (not just queued in the relay) at the kill.
const DELAY_MS: &str = "10";
/// The bench's run; the kill comes as soon as both serves carry traffic.
const BENCH_SECONDS: &str = "4";
/// Answers each serve must have given (through the relay) before the kill.
const WARMUP_ANSWERS: f64 = 500.0;
const ROUTE: &str = "localdomain";

/// The samples of metric `name`: label set (as printed) → value.
fn samples(body: &str, name: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l.to_string(), v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => (String::new(), v),
                None => continue,
            },
        };
        if let Ok(v) = value.trim().parse() {
            out.insert(labels, v);
        }
    }
    out
}

/// The value of `name{labels}` (0 when the series is not exported, as a
/// counter that was never incremented may not be).
fn sample(body: &str, name: &str, labels: &str) -> f64 {
    samples(body, name).get(labels).copied().unwrap_or(0.0)
}

/// An upstream serve: its address and its Origin-Host.
#[derive(Clone, Copy)]
struct Upstream {
    addr: SocketAddr,
    identity: &'static str,
}

/// The value of a per-peer relay series (`diam_relay_peer_*_total`) for
/// `peer`, labelled by the address the route gave (see the module docs).
fn peer_sample(body: &str, name: &str, peer: Upstream) -> f64 {
    let all = samples(body, name);
    let by = |p: &str| all.get(&format!("route=\"{ROUTE}\",peer=\"{p}\"")).copied();
    assert!(by(peer.identity).is_none(), "{name}: {} labelled by its Origin-Host\n{body}", peer.identity);
    by(&peer.addr.to_string()).unwrap_or(0.0)
}

/// A whole count from a metric value.
fn count(v: f64) -> u64 {
    assert!(v >= 0.0 && v.fract() == 0.0, "not a count: {v}");
    v as u64
}

/// The JSON object of the first stdout line whose `event` is `event`.
fn event_line(p: &Proc, event: &str, timeout: Duration) -> Value {
    let tag = format!("\"event\":\"{event}\"");
    let line = p.out.wait_for(timeout, |l| l.contains(&tag));
    let Some(line) = line else { panic!("{} printed no {event} line\n{}", p.name, p.dump()) };
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", p.name))
}

/// SIGTERM, then the `stopped` summary (bounded waits).
fn stop(p: &mut Proc) -> Value {
    let status = p.terminate(Duration::from_secs(20));
    assert!(status.is_some(), "{} did not exit on SIGTERM\n{}", p.name, p.dump());
    let v = event_line(p, "stopped", Duration::from_secs(5));
    assert!(status.unwrap().success(), "{} exit {status:?}\n{}", p.name, p.dump());
    v
}

/// Starts `diam relay` routing `localdomain` to both serves, with
/// `--metrics`; waits for its listening line and for both upstream peers
/// to be up. Retries with another metrics port should the free one have
/// been taken meanwhile.
fn start_relay(a: Upstream, b: Upstream) -> (Proc, SocketAddr, SocketAddr) {
    let mut last = String::new();
    for _ in 0..3 {
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut cmd = diam();
        cmd.args(["relay", "--listen", "127.0.0.1:0", "--metrics", &metrics.to_string()])
            .arg("--route")
            .arg(format!("{ROUTE}={},{}", a.addr, b.addr));
        let mut p = Proc::spawn("diam-relay", &cmd, false).expect("starting diam relay");
        let line = p.out.wait_for(Duration::from_secs(15), |l| l.contains("\"listening\""));
        let Some(line) = line else {
            p.kill();
            last = p.dump();
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let addr: SocketAddr = v["addr"].as_str().and_then(|s| s.parse().ok()).expect("listening addr");
        for id in [a.identity, b.identity] {
            let tag = format!("\"peer\":\"{id}\"");
            let up = p.out.wait_for(Duration::from_secs(15), |l| l.contains("\"peer_up\"") && l.contains(&tag));
            assert!(up.is_some(), "the relay never had {id} up\n{}", p.dump());
        }
        return (p, addr, metrics);
    }
    panic!("diam relay did not start\n{last}");
}

/// What one attempt measured.
struct Run {
    bench: Value,
    relay: Value,
    survivor: Value,
    metrics: String,
    a: Upstream,
    b: Upstream,
}

/// One attempt: the four processes, the kill, the graceful stops. `None`
/// when the bench ended before the kill could land mid-run (a starved
/// machine): the attempt says nothing and is retried.
fn attempt(n: usize) -> Option<Run> {
    let serve = |identity: &'static str| {
        let (mut p, addr) = start_serve(&["--origin-host", identity, "--delay-ms", DELAY_MS]);
        p.name = identity.into();
        (p, Upstream { addr, identity })
    };
    let (mut serve_a, a) = serve("serve-a.localdomain");
    let (mut serve_b, b) = serve("serve-b.localdomain");
    let (mut relay, relay_addr, metrics) = start_relay(a, b);

    let mut cmd = diam();
    cmd.args(["bench", "--peer", &relay_addr.to_string(), "--duration", BENCH_SECONDS])
        .args(["--inflight", &INFLIGHT.to_string(), "--json"])
        // Longer than the relay's own 5 s: should anything stall, the
        // relay's 3002 (checked below) comes before the client's timeout.
        .args(["--request-timeout-ms", "20000"]);
    let mut bench = Proc::spawn("diam-bench", &cmd, false).expect("starting diam bench");

    // Kill B once both serves have answered some traffic through the relay.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = scrape_metrics(metrics).unwrap_or_default();
        let answered = |p| peer_sample(&body, "diam_relay_peer_answered_total", p);
        if answered(a) >= WARMUP_ANSWERS && answered(b) >= WARMUP_ANSWERS {
            break;
        }
        assert!(bench.try_status().is_none(), "diam bench ended before any load\n{}\n{}", bench.dump(), relay.dump());
        assert!(Instant::now() < deadline, "no load through the relay; last scrape:\n{body}\n{}", relay.dump());
        std::thread::sleep(Duration::from_millis(20));
    }
    serve_b.kill(); // SIGKILL to its process group (the `timeout` wrapper and diam serve).
    let mid_run = bench.try_status().is_none();

    let status = bench.wait_exit(Duration::from_secs(60));
    assert!(status.is_some(), "diam bench did not finish\n{}", bench.dump());
    bench.all.wait_eof(Duration::from_secs(5));
    assert!(status.unwrap().success(), "diam bench failed\n{}\n{}", bench.dump(), relay.dump());
    let line = bench.out.find(|l| !l.trim().is_empty()).unwrap_or_default();
    let report: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bench stdout is not JSON ({e})\n{}", bench.dump()));

    let metrics_body = scrape_metrics(metrics).unwrap_or_else(|e| panic!("scraping the relay: {e}\n{}", relay.dump()));
    let relay_stopped = stop(&mut relay);
    let survivor = stop(&mut serve_a);
    eprintln!("attempt {n}: bench {report}\nrelay {relay_stopped}\nsurvivor {survivor}");
    if !mid_run {
        eprintln!("attempt {n}: the bench ended before the kill landed; retrying");
        return None;
    }
    Some(Run { bench: report, relay: relay_stopped, survivor, metrics: metrics_body, a, b })
}

/// The assertions on one run; returns the survivor's T-flag count.
///
/// Why (2) is exact, and where it is not: every request the client saw
/// answered 2001 was answered by A or B and passed on by the relay, which
/// counts the answer under the member it came from (`peer_answered`), so
/// `client_2001 == peer_answered[A] + peer_answered[B]` holds exactly
/// (the client's connection never closes, so nothing is orphaned).
///
/// A counts every answer it produces (`answers`). B's own count died with
/// it, and it is not the same as `peer_answered[B]`: B may have answered
/// requests whose answers never reached the relay (still in B's process,
/// or lost with the connection). The relay saw those as unanswered when
/// the connection failed and re-sent them to A with the T flag, so each is
/// answered once more by A and counted there, and not in
/// `peer_answered[B]`. That is why the check uses the relay's count for B
/// and never B's own: with it, each 2001 the client got is counted exactly
/// once, `client_2001 == A.answers + peer_answered[B]`.
///
/// The one way A's count can exceed what reached the client: an answer
/// from A that the relay discards because it had already given up on that
/// request (its 5 s forwarding deadline passed and it answered 3002). So
/// in general `client_2001 <= A.answers + peer_answered[B] <= client_2001 +
/// client_3002`, which is exact whenever the relay answered no 3002 (the
/// normal outcome, and then asserted with `assert_eq`).
fn check_run(run: &Run) -> u64 {
    let r = &run.bench;
    let ctx = format!(
        "bench {r}\nrelay {}\nsurvivor {}\n--- relay metrics ---\n{}",
        run.relay,
        run.survivor,
        run.metrics
            .lines()
            .filter(|l| l.starts_with("diam_relay_") && !l.contains("latency"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing\n{ctx}"));
    let m = |name: &str, labels: &str| count(sample(&run.metrics, name, labels));

    // (1) No request without an outcome.
    let requests = n(r, "requests");
    let answers = n(r, "answers");
    let errors = n(r, "errors_total");
    let timeouts = n(r, "timeouts");
    let by_kind: u64 = r["errors"].as_object().expect("errors object").values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(by_kind, errors, "errors by kind do not add up\n{ctx}");
    assert_eq!(requests, answers + errors + timeouts, "a request without an outcome\n{ctx}");
    assert_eq!(timeouts, 0, "the relay answers everything before the client's timeout\n{ctx}");
    // The client's one connection, to the relay, never fails: no error kind
    // is expected at all; the kill shows only as answers from the relay.
    assert_eq!(errors, 0, "errors {}\n{ctx}", r["errors"]);
    let codes = r["result_codes"].as_object().expect("result_codes object");
    for code in codes.keys() {
        assert!(code == "2001" || code == "3002", "unexpected Result-Code {code}\n{ctx}");
    }
    let code = |c: &str| codes.get(c).map_or(0, |v| v.as_u64().unwrap());
    let (ok, unable) = (code("2001"), code("3002"));
    assert_eq!(ok + unable, answers, "{ctx}");
    assert!(ok > 0, "{ctx}");
    // The relay counted the same outcomes on its side: answers passed on,
    // and its own 3002s (its only local answers).
    assert_eq!(n(&run.relay, "answered"), ok, "answers passed on by the relay vs 2001s at the client\n{ctx}");
    assert_eq!(n(&run.relay, "local_answers"), unable, "relay's own answers vs 3002s at the client\n{ctx}");
    assert_eq!(n(&run.relay, "orphaned"), 0, "{ctx}");
    let local = samples(&run.metrics, "diam_relay_local_answers_total");
    for (labels, v) in &local {
        let want = format!("route=\"{ROUTE}\",result_code=\"3002\"");
        assert!(*labels == want || *v == 0.0, "unexpected local answer {labels} = {v}\n{ctx}");
    }
    assert_eq!(
        m("diam_relay_local_answers_total", &format!("route=\"{ROUTE}\",result_code=\"3002\"")),
        unable,
        "{ctx}"
    );

    // (2) The client's 2001s against the servers' and the relay's counts.
    let pm = |name: &str, p: Upstream| count(peer_sample(&run.metrics, name, p));
    let answered_a = pm("diam_relay_peer_answered_total", run.a);
    let answered_b = pm("diam_relay_peer_answered_total", run.b);
    assert!(answered_b > 0, "B carried traffic before the kill\n{ctx}");
    assert_eq!(ok, answered_a + answered_b, "client 2001s vs the relay's per-peer answers\n{ctx}");
    let survivor_answers = n(&run.survivor, "answers");
    assert_eq!(n(&run.survivor, "dropped"), 0, "{ctx}");
    assert!(
        ok <= survivor_answers + answered_b && survivor_answers + answered_b <= ok + unable,
        "client 2001s {ok} vs survivor answers {survivor_answers} + killed peer's answers at the relay {answered_b}\n{ctx}"
    );
    if unable == 0 {
        assert_eq!(ok, survivor_answers + answered_b, "{ctx}");
    }

    // (3) The T flags A saw are the relay's retransmissions.
    let t_flags = n(&run.survivor, "retransmissions");
    let retransmitted = n(&run.relay, "retransmitted");
    // Counted by the relay as each retransmission is written upstream.
    assert_eq!(t_flags, m("diam_relay_retransmitted_total", &format!("route=\"{ROUTE}\"")), "{ctx}");
    // ... all of them to A, per the relay's per-peer series.
    assert_eq!(t_flags, pm("diam_relay_peer_retransmitted_total", run.a), "{ctx}");
    assert_eq!(pm("diam_relay_peer_retransmitted_total", run.b), 0, "never back to the peer that failed\n{ctx}");
    // The stopped line counts the decision to retransmit; one with no peer
    // left to take it becomes a 3002 instead.
    assert!(t_flags <= retransmitted && retransmitted <= t_flags + unable, "{ctx}");
    if unable == 0 {
        assert_eq!(t_flags, retransmitted, "{ctx}");
    }

    // (4) 3002 only for what B took down with it. Sent to B and never
    // answered by B: exactly the requests outstanding at B when it died
    // (the relay sends B nothing once it knows B is down).
    let lost_at_b = pm("diam_relay_peer_forwarded_total", run.b) - answered_b;
    assert!(lost_at_b <= INFLIGHT, "more outstanding at B than in flight: {lost_at_b}\n{ctx}");
    // Each ended retransmitted (written), rerouted (never written) or 3002.
    assert!(retransmitted <= lost_at_b, "{ctx}");
    assert!(lost_at_b <= retransmitted + n(&run.relay, "rerouted") + unable, "{ctx}");
    assert!(unable <= lost_at_b, "3002s beyond what B took down: {unable} > {lost_at_b}\n{ctx}");
    // Nothing sent to A went unanswered by A (it never failed).
    assert_eq!(pm("diam_relay_peer_forwarded_total", run.a), answered_a, "{ctx}");
    eprintln!(
        "client: {requests} requests, {ok} × 2001, {unable} × 3002; relay: {answered_a} answers from A, \
         {answered_b} from B, {lost_at_b} lost at B, {retransmitted} retransmitted; A: {survivor_answers} answers, \
         {t_flags} with the T flag"
    );
    t_flags
}

#[test]
fn relay_retransmits_what_a_sigkilled_upstream_took_down() {
    let mut t_flags = 0;
    for n in 1..=3 {
        let Some(run) = attempt(n) else { continue };
        t_flags = check_run(&run);
        if t_flags > 0 {
            break;
        }
        eprintln!("attempt {n}: the kill found nothing outstanding at B; retrying");
    }
    assert!(t_flags > 0, "in 3 attempts, the kill never landed with requests outstanding at the killed serve (no T flag at the survivor; see the attempts above)");
}
