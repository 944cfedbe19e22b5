//! `diam relay` (RFC 6733 §2.8) between foreign Diameter stacks: Erlang/OTP
//! `diameter` (`interop/erlang/interop_peer.escript`), freeDiameterd 1.2.1,
//! python-diameter 0.9.0 (`interop/python/py_client.py`) and `diam serve`,
//! with tcpdump/tshark as an independent view of both sides of the relay.
//!
//! * `erlang_client_relay_erlang_server`: OTP client -> relay -> OTP server;
//!   the server sees the client's Origin-Host and a Route-Record naming the
//!   client (the peer the relay received it from, RFC 6733 §6.1.9), the
//!   client gets every CCA with 2001, and the relay's counts
//!   match.
//! * `erlang_client_relay_freediameter`: OTP client -> relay ->
//!   freeDiameterd (no application extension, so it answers with an error
//!   of its own): the answer that reaches the client is freeDiameterd's
//!   (its Origin-Host, not a local answer of the relay), and the capture on
//!   freeDiameterd's port shows the Route-Record in the forwarded CCRs.
//! * `python_client_relay_serve`: python-diameter CCRs through the relay
//!   to `diam serve`, all 2001; `diam serve` counts the same number.
//! * `inbound_peer_is_the_upstream_for_its_realm`: `diam serve --connect`
//!   dials the relay, and the relay's route names it by identity only.
//! * `python_client_gets_3005_for_a_loop`: a request whose Route-Record
//!   already names the relay gets 3005 with the E bit from the relay.
//! * `python_client_gets_3003_for_an_unknown_realm`: likewise 3003.
//! * `tshark_reads_both_sides_of_the_relay`: a capture of client -> relay
//!   -> serve has no malformed frame; the forwarded CCRs carry a
//!   Route-Record naming the client, new Hop-by-Hop ids and the client's End-to-End
//!   ids.
//! * `erlang_client_gets_3003_from_the_relay`: OTP, stricter than python,
//!   accepts the relay's own 3003 (one Session-Id, E bit,
//!   Error-Reporting-Host).
//!
//! Every process listens on and connects to 127.0.0.1 (freeDiameterd binds
//! 0.0.0.0, see `interop/README.md`), writes its configuration into the
//! test's own directory, and is killed when its test ends. Peers are
//! required with `CI=true` or `DIAM_REQUIRE_PEERS=1` (a missing one fails
//! the test); otherwise a test without its peer prints `SKIPPED` and passes.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The relay's identity when `--origin-host` is not given.
const RELAY: &str = "diam-relay.localdomain";
/// The Erlang/OTP client's identity: what the relay's Route-Record names
/// (RFC 6733 §6.1.9: the peer the request was received from).
const ERL_CLIENT: &str = "client.erl.test";

const ERLANG: &str = "Erlang/OTP diameter (escript)";
const PYTHON: &str = "python-diameter (pip install python-diameter==0.9.0)";

// ---------------------------------------------------------------------------
// Helpers

fn started(test: &str) -> Instant {
    eprintln!("{test}: starting");
    Instant::now()
}

fn finished(test: &str, t0: Instant) {
    eprintln!("{test}: done in {:.2} s", t0.elapsed().as_secs_f64());
}

/// Starts `diam relay --listen 127.0.0.1:0 ARGS` and waits for its
/// `{"event":"listening","addr":...}` line.
fn start_relay(args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = diam();
    cmd.args(["relay", "--listen", "127.0.0.1:0"]).args(args);
    let proc = Proc::spawn("diam-relay", &cmd, false).expect("starting diam relay");
    let line = proc.out.wait_for(Duration::from_secs(15), |l| l.contains("\"listening\""));
    let Some(line) = line else { panic!("diam relay did not report listening\n{}", proc.dump()) };
    let v: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("diam relay's first line is not JSON ({e}): {line}"));
    let addr: SocketAddr = v["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("diam relay's listening line has no addr: {line}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "diam relay listens on {addr}");
    (proc, addr)
}

/// Waits for a `peer_up` line naming `peer` (and `direction`, when given).
fn wait_peer_up(test: &str, p: &Proc, peer: &str, direction: Option<&str>, timeout: Duration) {
    let up = p.out.wait_for(timeout, |l| {
        let Ok(v) = serde_json::from_str::<Value>(l) else { return false };
        v["event"] == "peer_up" && v["peer"] == peer && direction.is_none_or(|d| v["direction"] == d)
    });
    assert!(up.is_some(), "{test}: {} never reported peer_up {peer} {direction:?}\n{}", p.name, p.dump());
}

/// SIGTERM, a clean exit within 10 s, and the `{"event":"stopped",...}` line.
fn stop(test: &str, p: &mut Proc) -> Value {
    let status = p.terminate(Duration::from_secs(10));
    assert!(status.is_some(), "{test}: {} still running 10 s after SIGTERM\n{}", p.name, p.dump());
    assert_eq!(status.unwrap().code(), Some(0), "{test}: {} exit after SIGTERM\n{}", p.name, p.dump());
    p.all.wait_eof(Duration::from_secs(5));
    let line = p.out.find(|l| l.contains("\"stopped\""));
    let line = line.unwrap_or_else(|| panic!("{test}: {} printed no stopped line\n{}", p.name, p.dump()));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{test}: stopped line is not JSON ({e}): {line}"))
}

/// What the python-diameter client printed.
#[derive(Debug)]
struct PyRun {
    finished: Finished,
    answers: Vec<Value>,
}

impl PyRun {
    fn describe(&self) -> String {
        self.finished.describe()
    }
}

/// Runs the python-diameter client against 127.0.0.1:`port` (whose CEA
/// must name `peer_host`) to completion and collects its answer lines.
fn run_py_client(test: &str, port: u16, peer_host: &str, args: &[&str]) -> PyRun {
    let port = port.to_string();
    let mut cmd = Command::new("python3");
    cmd.arg(py_client_script()).args(["--port", &port, "--peer-host", peer_host, "--max-seconds", "40"]).args(args);
    let finished = run(&mut cmd, 50);
    let mut answers = Vec::new();
    let mut done = None;
    for line in finished.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{test}: py_client printed a non-JSON line ({e}): {line}"));
        match v["event"].as_str() {
            Some("answer") => answers.push(v),
            Some("done") => done = Some(v),
            _ => {}
        }
    }
    let run = PyRun { finished, answers };
    assert!(done.is_some(), "{test}: py_client did not finish its requests\n{}", run.describe());
    run
}

/// The `ANSWER <i> <rc>` lines of an escript client, in order.
fn erlang_answers(p: &Proc) -> Vec<String> {
    p.out.snapshot().into_iter().filter(|l| l.starts_with("ANSWER ")).collect()
}

/// The escript server's `REQUEST CCR ...` lines, each as key=value pairs.
fn erlang_requests(p: &Proc) -> Vec<std::collections::BTreeMap<String, String>> {
    p.out
        .snapshot()
        .iter()
        .filter_map(|l| l.strip_prefix("REQUEST CCR "))
        .map(|rest| {
            rest.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
        })
        .collect()
}

/// One Credit-Control PDU as tshark decoded it.
#[derive(Debug, Clone)]
struct CcPdu {
    src_port: u16,
    dst_port: u16,
    request: bool,
    hop_by_hop: u32,
    end_to_end: u32,
    route_record: Vec<String>,
    result_code: Option<u32>,
    origin_host: String,
}

fn hex_or_dec(s: &str) -> u32 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad tshark number {s}")),
        None => s.parse().unwrap_or_else(|_| panic!("bad tshark number {s}")),
    }
}

/// Every CCR/CCA in the capture, with the fields the relay must keep or
/// change. One line per PDU (`-Y` keeps frames with several PDUs whole, so
/// those are refused rather than guessed apart).
fn tshark_cc_pdus(test: &str, pcap: &Path, ports: &[u16]) -> Vec<CcPdu> {
    let out = tshark(
        pcap,
        ports,
        &[
            "-Y",
            "diameter.cmd.code == 272",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=|",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "diameter.flags.request",
            "-e",
            "diameter.hopbyhopid",
            "-e",
            "diameter.endtoendid",
            "-e",
            "diameter.Route-Record",
            "-e",
            "diameter.Result-Code",
            "-e",
            "diameter.Origin-Host",
        ],
    );
    let mut pdus = Vec::new();
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let multi =
            |i: usize| -> Vec<String> { get(i).split('|').filter(|s| !s.is_empty()).map(String::from).collect() };
        assert_eq!(
            multi(3).len(),
            1,
            "{test}: a frame with several Diameter PDUs; this check reads one per frame: {line}"
        );
        pdus.push(CcPdu {
            src_port: get(0).parse().unwrap_or(0),
            dst_port: get(1).parse().unwrap_or(0),
            request: matches!(get(2), "1" | "True" | "true"),
            hop_by_hop: hex_or_dec(get(3)),
            end_to_end: hex_or_dec(get(4)),
            route_record: multi(5),
            result_code: multi(6).first().map(|s| hex_or_dec(s)),
            origin_host: get(7).to_string(),
        });
    }
    pdus
}

// ---------------------------------------------------------------------------
// 1. Erlang/OTP client -> relay -> Erlang/OTP server, and -> freeDiameterd

#[test]
fn erlang_client_relay_erlang_server() {
    const T: &str = "erlang_client_relay_erlang_server";
    if !need(T, ERLANG, erlang_available()) {
        return;
    }
    let t0 = started(T);
    let (mut server, server_port) = start_erlang_server(&["--tw", "6000"]);
    let route = format!("erl.test=127.0.0.1:{server_port}");
    let (mut relay, relay_addr) = start_relay(&["--route", &route, "--allow", "*.erl.test"]);
    wait_peer_up(T, &relay, "server.erl.test", Some("out"), Duration::from_secs(15));

    let n = 4;
    let mut client = start_erlang_client(relay_addr.port(), n, &["--linger-ms", "100", "--answer-details"]);
    let status = client.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "{T}: the Erlang client did not finish\n{}\n{}", client.dump(), relay.dump());
    client.all.wait_eof(Duration::from_secs(5));
    assert_eq!(
        status.unwrap().code(),
        Some(0),
        "{T}: Erlang client failed\n{}\n{}\n{}",
        client.dump(),
        relay.dump(),
        server.dump()
    );
    let want: Vec<String> = (0..n).map(|i| format!("ANSWER {i} 2001")).collect();
    assert_eq!(erlang_answers(&client), want, "{T}\n{}", client.dump());
    // The CCAs are the server's, relayed back.
    for i in 0..n {
        let details = client.out.find(|l| l.starts_with(&format!("ANSWER_DETAILS {i} ")));
        let details = details.unwrap_or_else(|| panic!("{T}: no ANSWER_DETAILS {i}\n{}", client.dump()));
        assert!(details.contains("origin_host=server.erl.test error_bit=false"), "{T}: {details}");
    }

    // What the server saw: the client's own Origin-Host, the relay as the
    // transport peer, and exactly one Route-Record, naming the peer the
    // relay received the request from (RFC 6733 §6.1.9).
    let reqs = erlang_requests(&server);
    assert_eq!(reqs.len(), n as usize, "{T}: the Erlang server saw {} CCRs\n{}", reqs.len(), server.dump());
    for r in &reqs {
        assert_eq!(r.get("from").map(String::as_str), Some(RELAY), "{T}: {r:?}");
        assert_eq!(r.get("origin_host").map(String::as_str), Some("client.erl.test"), "{T}: {r:?}");
        assert_eq!(r.get("dest_realm").map(String::as_str), Some("erl.test"), "{T}: {r:?}");
        assert_eq!(r.get("route_record").map(String::as_str), Some(ERL_CLIENT), "{T}: Route-Record {r:?}");
    }
    let numbers: Vec<&str> = reqs.iter().filter_map(|r| r.get("number").map(String::as_str)).collect();
    assert_eq!(numbers, ["0", "1", "2", "3"], "{T}: CC-Request-Numbers in order");

    let stopped = stop(T, &mut relay);
    eprintln!("{T}: relay {stopped}");
    assert_eq!(stopped["forwarded"], n, "{T}: {stopped}");
    assert_eq!(stopped["answered"], n, "{T}: {stopped}");
    assert_eq!(stopped["local_answers"], 0, "{T}: {stopped}");
    assert_eq!(stopped["orphaned"], 0, "{T}: {stopped}");
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{T}: Erlang server exit {status:?}\n{}", server.dump());
    finished(T, t0);
}

#[test]
fn erlang_client_relay_freediameter() {
    const T: &str = "erlang_client_relay_freediameter";
    if !need(T, "freeDiameterd", freediameter_available()) || !need(T, ERLANG, erlang_available()) {
        return;
    }
    let t0 = started(T);
    let dir = TempDir::new("relay-fd");
    // The relay's identity is in localdomain: whitelist it.
    let fd = FreeDiameter::start(dir.path(), "fd1.fd.test", &["--allow", "localdomain", "--tw", "6"]);
    let capture = start_capture(T, dir.path(), &[fd.port]);
    let route = format!("fd.test=127.0.0.1:{}", fd.port);
    let (mut relay, relay_addr) = start_relay(&["--route", &route]);
    wait_peer_up(T, &relay, "fd1.fd.test", Some("out"), Duration::from_secs(15));
    assert!(
        fd.wait_open(RELAY, Duration::from_secs(5)).is_some(),
        "{T}: fd never opened the relay\n{}",
        fd.proc.dump()
    );

    let n = 2;
    let mut client = start_erlang_client(
        relay_addr.port(),
        n,
        &["--dest-realm", "fd.test", "--linger-ms", "100", "--answer-details"],
    );
    let status = client.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "{T}: the Erlang client did not finish\n{}\n{}", client.dump(), relay.dump());
    client.all.wait_eof(Duration::from_secs(5));
    // freeDiameterd has no Credit-Control application: it answers with an
    // error of its own (3002 from its routing, in 1.2.1). Whatever the code,
    // it is freeDiameterd's answer that must come back through the relay.
    let answers = erlang_answers(&client);
    assert_eq!(answers.len(), n as usize, "{T}: answers {answers:?}\n{}\n{}", client.dump(), fd.proc.dump());
    let codes: BTreeSet<u32> = answers
        .iter()
        .map(|l| l.rsplit(' ').next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{T}: `{l}`")))
        .collect();
    assert_eq!(codes.len(), 1, "{T}: freeDiameterd answered {codes:?}");
    let code = *codes.iter().next().unwrap();
    eprintln!("{T}: freeDiameterd answered {code} through the relay");
    for i in 0..n {
        let details = client.out.find(|l| l.starts_with(&format!("ANSWER_DETAILS {i} ")));
        let details = details.unwrap_or_else(|| panic!("{T}: no ANSWER_DETAILS {i}\n{}", client.dump()));
        assert!(details.contains("origin_host=fd1.fd.test "), "{T}: not freeDiameterd's answer: {details}");
        assert!(!details.contains(&format!("error_reporting_host={RELAY}")), "{T}: a relay-made answer: {details}");
    }

    let stopped = stop(T, &mut relay);
    eprintln!("{T}: relay {stopped}");
    assert_eq!(stopped["forwarded"], n, "{T}: {stopped}");
    assert_eq!(stopped["answered"], n, "{T}: {stopped}");
    assert_eq!(stopped["local_answers"], 0, "{T}: {stopped}");

    if let Some(capture) = capture {
        let pcap = capture.stop();
        let ports = [fd.port];
        assert_no_frames(T, &pcap, &ports, "_ws.malformed");
        let pdus = tshark_cc_pdus(T, &pcap, &ports);
        let to_fd: Vec<&CcPdu> = pdus.iter().filter(|p| p.request && p.dst_port == fd.port).collect();
        let from_fd: Vec<&CcPdu> = pdus.iter().filter(|p| !p.request && p.src_port == fd.port).collect();
        assert_eq!(to_fd.len(), n as usize, "{T}: CCRs to freeDiameterd: {pdus:#?}");
        for p in &to_fd {
            assert_eq!(p.route_record, [ERL_CLIENT], "{T}: Route-Record of a forwarded CCR: {p:?}");
        }
        assert_eq!(from_fd.len(), n as usize, "{T}: CCAs from freeDiameterd: {pdus:#?}");
        for p in &from_fd {
            assert_eq!(p.result_code, Some(code), "{T}: {p:?}");
            assert_eq!(p.origin_host, "fd1.fd.test", "{T}: {p:?}");
        }
    } else {
        // Without a capture, freeDiameterd's own log of the routing error
        // dumps the request it received, Route-Record included.
        let rr = format!("'Route-Record'(282) l={} f=-M val=\"{ERL_CLIENT}\"", 8 + ERL_CLIENT.len());
        assert!(
            fd.log().find(|l| l.contains(&rr)).is_some(),
            "{T}: freeDiameterd logged no Route-Record {ERL_CLIENT}\n{}",
            fd.proc.dump()
        );
    }
    finished(T, t0);
}

/// OTP, a strict decoder, accepts the relay's own error answer: a 3003
/// with the E bit, the relay as Origin-Host and Error-Reporting-Host, and
/// one Session-Id. (Before f7667ca those answers carried the Session-Id twice,
/// `check::error_answer` copying it after `Message::answer_to` had; OTP
/// counted the decode error and `diameter:call` returned `{error,failure}`,
/// while python-diameter did not mind.)
#[test]
fn erlang_client_gets_3003_from_the_relay() {
    const T: &str = "erlang_client_gets_3003_from_the_relay";
    if !need(T, ERLANG, erlang_available()) {
        return;
    }
    let t0 = started(T);
    let (mut serve, serve_addr) = start_serve(&["--origin-host", "srv.serve.test", "--origin-realm", "serve.test"]);
    let route = format!("serve.test={serve_addr}");
    let (mut relay, relay_addr) = start_relay(&["--route", &route]);
    let mut client = start_erlang_client(
        relay_addr.port(),
        1,
        &["--dest-realm", "nowhere.test", "--linger-ms", "100", "--answer-details"],
    );
    let status = client.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "{T}: the Erlang client did not finish\n{}", client.dump());
    client.all.wait_eof(Duration::from_secs(5));
    assert_eq!(erlang_answers(&client), ["ANSWER 0 3003"], "{T}\n{}", client.dump());
    let details = client.out.find(|l| l.starts_with("ANSWER_DETAILS 0 "));
    assert_eq!(
        details.as_deref(),
        Some(format!("ANSWER_DETAILS 0 origin_host={RELAY} error_bit=true error_reporting_host={RELAY}").as_str()),
        "{T}\n{}",
        client.dump()
    );
    let stopped = stop(T, &mut relay);
    assert_eq!(stopped["local_answers"], 1, "{T}: {stopped}");
    let served = stop(T, &mut serve);
    assert_eq!(served["requests"], 0, "{T}: {served}");
    finished(T, t0);
}

// ---------------------------------------------------------------------------
// 2. python-diameter client -> relay -> diam serve

#[test]
fn python_client_relay_serve() {
    const T: &str = "python_client_relay_serve";
    if !need(T, PYTHON, python_diameter_available()) {
        return;
    }
    let t0 = started(T);
    let (mut serve, serve_addr) = start_serve(&["--origin-host", "srv.serve.test", "--origin-realm", "serve.test"]);
    let route = format!("serve.test={serve_addr}");
    let (mut relay, relay_addr) = start_relay(&["--route", &route, "--allow", "*.py.test"]);
    wait_peer_up(T, &relay, "srv.serve.test", Some("out"), Duration::from_secs(15));

    let n = 5;
    let py = run_py_client(T, relay_addr.port(), RELAY, &["--dest-realm", "serve.test", "--count", &n.to_string()]);
    assert_eq!(py.finished.code(), Some(0), "{T}: py_client failed\n{}\n{}", py.describe(), relay.dump());
    assert_eq!(py.answers.len(), n, "{T}\n{}", py.describe());
    for (i, a) in py.answers.iter().enumerate() {
        assert_eq!(a["i"], i, "{T}: {a}");
        assert_eq!(a["command_code"], 272, "{T}: {a}");
        assert_eq!(a["result_code"], 2001, "{T}: {a}");
        assert_eq!(a["error_bit"], false, "{T}: {a}");
        assert_eq!(a["origin_host"], "srv.serve.test", "{T}: {a}");
        // The End-to-End id survives the relay both ways (RFC 6733 §6.1.5).
        assert_eq!(a["end_to_end"], a["sent_end_to_end"], "{T}: {a}");
        assert_eq!(a["session_id_count"], 1, "{T}: {a}");
    }
    wait_peer_down(T, &relay, "client.py.test");

    // Independent counts: the relay's, and what serve itself answered.
    let stopped = stop(T, &mut relay);
    eprintln!("{T}: relay {stopped}");
    assert_eq!(stopped["forwarded"], n, "{T}: {stopped}");
    assert_eq!(stopped["answered"], n, "{T}: {stopped}");
    assert_eq!(stopped["local_answers"], 0, "{T}: {stopped}");
    let served = stop(T, &mut serve);
    eprintln!("{T}: serve {served}");
    assert_eq!(served["requests"], n, "{T}: {served}");
    assert_eq!(served["answers"], n, "{T}: {served}");
    assert_eq!(served["retransmissions"], 0, "{T}: {served}");
    finished(T, t0);
}

/// Waits (bounded) for a `peer_down` line naming `peer`: the client's DPR
/// was handled before the relay is stopped.
fn wait_peer_down(test: &str, p: &Proc, peer: &str) {
    let down = p.out.wait_for(Duration::from_secs(10), |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["event"] == "peer_down" && v["peer"] == peer)
    });
    assert!(down.is_some(), "{test}: {} never reported peer_down {peer}\n{}", p.name, p.dump());
}

// ---------------------------------------------------------------------------
// 3. A peer that connected in is the upstream for its realm

#[test]
fn inbound_peer_is_the_upstream_for_its_realm() {
    const T: &str = "inbound_peer_is_the_upstream_for_its_realm";
    if !need(T, PYTHON, python_diameter_available()) {
        return;
    }
    let t0 = started(T);
    // The route names the upstream by identity only: no address to dial.
    let (mut relay, relay_addr) = start_relay(&["--route", "in.test=srv.in.test"]);
    let relay_peer = relay_addr.to_string();
    let (mut serve, _) =
        start_serve(&["--connect", &relay_peer, "--origin-host", "srv.in.test", "--origin-realm", "in.test"]);
    wait_peer_up(T, &relay, "srv.in.test", Some("in"), Duration::from_secs(15));
    wait_peer_up(T, &serve, RELAY, Some("out"), Duration::from_secs(5));

    let n = 3;
    let py = run_py_client(T, relay_addr.port(), RELAY, &["--dest-realm", "in.test", "--count", &n.to_string()]);
    assert_eq!(py.finished.code(), Some(0), "{T}: py_client failed\n{}\n{}", py.describe(), relay.dump());
    assert_eq!(py.answers.len(), n, "{T}\n{}", py.describe());
    for a in &py.answers {
        assert_eq!(a["result_code"], 2001, "{T}: {a}");
        assert_eq!(a["origin_host"], "srv.in.test", "{T}: answered by the inbound peer: {a}");
    }
    wait_peer_down(T, &relay, "client.py.test");
    let stopped = stop(T, &mut relay);
    eprintln!("{T}: relay {stopped}");
    assert_eq!(stopped["forwarded"], n, "{T}: {stopped}");
    assert_eq!(stopped["answered"], n, "{T}: {stopped}");
    // The relay's DPR at shutdown took serve's connection down; serve's own
    // count of what it answered is the independent figure.
    let served = stop(T, &mut serve);
    eprintln!("{T}: serve {served}");
    assert_eq!(served["requests"], n, "{T}: {served}");
    finished(T, t0);
}

// ---------------------------------------------------------------------------
// 4. and 5. Answers the relay makes itself, to a foreign client

/// Checks one relay-made error answer seen by py_client.
fn assert_relay_error(test: &str, py: &PyRun, code: u32) {
    assert_eq!(py.finished.code(), Some(0), "{test}: py_client failed\n{}", py.describe());
    assert_eq!(py.answers.len(), 1, "{test}\n{}", py.describe());
    let a = &py.answers[0];
    assert_eq!(a["result_code"], code, "{test}: {a}");
    assert_eq!(a["error_bit"], true, "{test}: the E bit (RFC 6733 §7.1.3, a protocol error): {a}");
    assert_eq!(a["origin_host"], RELAY, "{test}: {a}");
    assert_eq!(a["error_reporting_host"], RELAY, "{test}: {a}");
    assert_eq!(a["end_to_end"], a["sent_end_to_end"], "{test}: {a}");
    assert_eq!(a["session_id_count"], 1, "{test}: one Session-Id (RFC 6733 §8.8): {a}");
    assert!(a["session_id"].as_str().is_some_and(|s| s.starts_with("client.py.test;")), "{test}: {a}");
}

#[test]
fn python_client_gets_3005_for_a_loop() {
    const T: &str = "python_client_gets_3005_for_a_loop";
    if !need(T, PYTHON, python_diameter_available()) {
        return;
    }
    let t0 = started(T);
    let (mut serve, serve_addr) = start_serve(&["--origin-host", "srv.serve.test", "--origin-realm", "serve.test"]);
    let route = format!("serve.test={serve_addr}");
    let (mut relay, relay_addr) = start_relay(&["--route", &route]);
    wait_peer_up(T, &relay, "srv.serve.test", Some("out"), Duration::from_secs(15));

    // As if the request had passed this relay already (another hop first).
    let py = run_py_client(
        T,
        relay_addr.port(),
        RELAY,
        &["--dest-realm", "serve.test", "--route-record", "dra.other.test", "--route-record", RELAY],
    );
    assert_relay_error(T, &py, 3005);
    wait_peer_down(T, &relay, "client.py.test");
    let stopped = stop(T, &mut relay);
    eprintln!("{T}: relay {stopped}");
    assert_eq!(stopped["forwarded"], 0, "{T}: {stopped}");
    assert_eq!(stopped["local_answers"], 1, "{T}: {stopped}");
    let served = stop(T, &mut serve);
    assert_eq!(served["requests"], 0, "{T}: a looping request reached serve: {served}");
    finished(T, t0);
}

#[test]
fn python_client_gets_3003_for_an_unknown_realm() {
    const T: &str = "python_client_gets_3003_for_an_unknown_realm";
    if !need(T, PYTHON, python_diameter_available()) {
        return;
    }
    let t0 = started(T);
    let (mut serve, serve_addr) = start_serve(&["--origin-host", "srv.serve.test", "--origin-realm", "serve.test"]);
    let route = format!("serve.test={serve_addr}");
    let (mut relay, relay_addr) = start_relay(&["--route", &route]);
    wait_peer_up(T, &relay, "srv.serve.test", Some("out"), Duration::from_secs(15));

    let py = run_py_client(T, relay_addr.port(), RELAY, &["--dest-realm", "nowhere.test"]);
    assert_relay_error(T, &py, 3003);
    wait_peer_down(T, &relay, "client.py.test");
    let stopped = stop(T, &mut relay);
    eprintln!("{T}: relay {stopped}");
    assert_eq!(stopped["forwarded"], 0, "{T}: {stopped}");
    assert_eq!(stopped["local_answers"], 1, "{T}: {stopped}");
    let served = stop(T, &mut serve);
    assert_eq!(served["requests"], 0, "{T}: {served}");
    finished(T, t0);
}

// ---------------------------------------------------------------------------
// 6. tshark on both sides of the relay

#[test]
fn tshark_reads_both_sides_of_the_relay() {
    const T: &str = "tshark_reads_both_sides_of_the_relay";
    if !need(T, "tshark", tshark_available())
        || !need(T, "tcpdump", tcpdump_available())
        || !need(T, ERLANG, erlang_available())
    {
        return;
    }
    let t0 = started(T);
    let dir = TempDir::new("relay-tshark");
    let (mut serve, serve_addr) = start_serve(&["--origin-host", "server.erl.test", "--origin-realm", "erl.test"]);
    // The capture filter needs the relay's port before the relay starts (so
    // that its CER/CEA upstream is in the capture too): a port that was free
    // a moment ago, and another one if the relay cannot bind it.
    let route = format!("erl.test={serve_addr}");
    let mut attempt = 0;
    let (capture, mut relay, relay_port) = loop {
        attempt += 1;
        let relay_port = free_port();
        let capture = match Capture::start(dir.path(), &[serve_addr.port(), relay_port]) {
            Ok(c) => c,
            Err(e) if peers_required() => panic!("{T}: cannot capture on lo: {e}"),
            Err(e) => {
                need(T, &format!("a working tcpdump ({e})"), false);
                return;
            }
        };
        let listen = format!("127.0.0.1:{relay_port}");
        let mut cmd = diam();
        cmd.args(["relay", "--listen", &listen, "--route", &route]);
        let relay = Proc::spawn("diam-relay", &cmd, false).expect("starting diam relay");
        if relay.out.wait_for(Duration::from_secs(15), |l| l.contains("\"listening\"")).is_some() {
            break (capture, relay, relay_port);
        }
        assert!(attempt < 3, "{T}: diam relay did not listen on {listen}\n{}", relay.dump());
        eprintln!("{T}: diam relay could not listen on {listen}; another port\n{}", relay.dump());
        drop(capture.stop());
    };
    wait_peer_up(T, &relay, "server.erl.test", Some("out"), Duration::from_secs(15));

    // The Erlang CCR is the rich one: grouped, vendor and unknown AVPs.
    let n = 3;
    let mut client = start_erlang_client(relay_port, n, &["--linger-ms", "100"]);
    let status = client.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "{T}: the Erlang client did not finish\n{}", client.dump());
    assert_eq!(status.unwrap().code(), Some(0), "{T}: Erlang client failed\n{}\n{}", client.dump(), relay.dump());
    let stopped = stop(T, &mut relay);
    let served = stop(T, &mut serve);
    assert_eq!(stopped["forwarded"], n, "{T}: {stopped}");
    assert_eq!(served["requests"], n, "{T}: {served}");
    let pcap = capture.stop();

    let (up, down) = (serve_addr.port(), relay_port);
    let ports = [up, down];
    assert_no_frames(T, &pcap, &ports, "_ws.malformed");
    assert_no_frames(T, &pcap, &ports, "_ws.expert.severity == error");
    let pdus = tshark_cc_pdus(T, &pcap, &ports);
    let client_ccrs: Vec<&CcPdu> = pdus.iter().filter(|p| p.request && p.dst_port == down).collect();
    let forwarded: Vec<&CcPdu> = pdus.iter().filter(|p| p.request && p.dst_port == up).collect();
    let served_ccas: Vec<&CcPdu> = pdus.iter().filter(|p| !p.request && p.src_port == up).collect();
    let relayed_ccas: Vec<&CcPdu> = pdus.iter().filter(|p| !p.request && p.src_port == down).collect();
    for (what, got) in [
        ("client -> relay CCRs", &client_ccrs),
        ("relay -> serve CCRs", &forwarded),
        ("serve -> relay CCAs", &served_ccas),
        ("relay -> client CCAs", &relayed_ccas),
    ] {
        assert_eq!(got.len(), n as usize, "{T}: tshark saw {} {what}: {pdus:#?}", got.len());
    }
    for (c, f) in client_ccrs.iter().zip(&forwarded) {
        assert!(c.route_record.is_empty(), "{T}: the client sent a Route-Record: {c:?}");
        assert_eq!(f.route_record, [ERL_CLIENT], "{T}: forwarded CCR's Route-Record: {f:?}");
        assert_eq!(f.end_to_end, c.end_to_end, "{T}: End-to-End changed by the relay: {c:?} -> {f:?}");
    }
    // Hop-by-Hop is per hop: the relay's own ids upstream, the client's
    // restored downstream.
    let hbh = |v: &[&CcPdu]| v.iter().map(|p| p.hop_by_hop).collect::<BTreeSet<u32>>();
    assert_eq!(hbh(&relayed_ccas), hbh(&client_ccrs), "{T}: answers to the client carry its Hop-by-Hop ids");
    assert_eq!(hbh(&served_ccas), hbh(&forwarded), "{T}: serve answered the relay's Hop-by-Hop ids");
    assert!(
        hbh(&forwarded).is_disjoint(&hbh(&client_ccrs)),
        "{T}: the relay reused the client's Hop-by-Hop ids upstream: {pdus:#?}"
    );
    for a in &relayed_ccas {
        assert_eq!(a.result_code, Some(2001), "{T}: {a:?}");
        assert_eq!(a.origin_host, "server.erl.test", "{T}: {a:?}");
    }
    eprintln!("{T}: tshark decoded {} CCR/CCA PDUs on ports {ports:?}, none malformed", pdus.len());
    finished(T, t0);
}
