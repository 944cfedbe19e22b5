//! Live interop with real Diameter peers: freeDiameterd 1.2.1 and an
//! Erlang/OTP `diameter` service (`interop/erlang/interop_peer.escript`),
//! plus tcpdump/tshark as an independent check of what went over the wire.
//!
//! Every process runs on 127.0.0.1 (freeDiameterd binds 0.0.0.0, see
//! `interop/README.md`; the tests only connect to 127.0.0.1), is bounded in
//! time and is killed when its test ends (`common::Proc`).
//!
//! Peers are required when `CI=true` or `DIAM_REQUIRE_PEERS=1`: a missing
//! one then fails the test. Otherwise the test prints `SKIPPED <test>: <peer>
//! not installed` and passes.
//!
//! * `probe_freediameter`: `diam probe` against freeDiameterd.
//! * `freediameter_watchdog_both_ways`: two library connections to
//!   freeDiameterd; on one we stay quiet so freeDiameterd sends DWRs and we
//!   answer, on the other we send DWRs every 2 s. Checked by connection
//!   counters, close reasons, freeDiameterd's log and (when tcpdump can
//!   capture) tshark.
//! * `erlang_answers_diam_send`: `diam send` (a CCR) and `diam probe`
//!   against the Erlang server.
//! * `erlang_client_against_diam_serve`: the Erlang client's CCRs against
//!   `diam serve`, then SIGTERM ends `diam serve` with exit 0.
//! * `serve_sends_dpr_on_sigterm`: freeDiameterd (connecting to `diam serve`
//!   itself) and a lingering Erlang client see `diam serve`'s DPR on SIGTERM.
//! * `tshark_sees_no_malformed_frames_in_our_traffic`: a capture of
//!   `diam probe` and `diam send` against `diam serve` has no malformed
//!   frame for tshark and holds CER/CEA, DWR/DWA, DPR/DPA and CCR/CCA.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers

/// Checks `diam probe` output: exit 0, 2001 for the three steps, and the
/// peer's Origin-Host when given.
fn assert_probe_ok(what: &str, f: &Finished, peer_host: Option<&str>) -> Value {
    assert_eq!(f.code(), Some(0), "{what}: diam probe failed\n{}", f.describe());
    let v = json_stdout(f);
    for step in ["cea", "dwa", "dpa"] {
        assert_eq!(v[step]["result_code"], 2001, "{what}: {step} result code in {v}\n{}", f.describe());
        assert!(v[step]["rtt_us"].is_u64(), "{what}: {step}.rtt_us is not a number in {v}");
    }
    if let Some(h) = peer_host {
        assert_eq!(v["peer_origin_host"], h, "{what}: peer_origin_host in {v}");
    }
    v
}

/// The value of the first top-level AVP named `name` in `diam decode` JSON.
fn avp<'a>(msg: &'a Value, name: &str) -> Option<&'a Value> {
    msg["avps"].as_array()?.iter().find(|a| a["name"] == name).map(|a| &a["value"])
}

fn started(test: &str) -> Instant {
    eprintln!("{test}: starting");
    Instant::now()
}

fn finished(test: &str, t0: Instant) {
    eprintln!("{test}: done in {:.2} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------
// freeDiameterd

#[test]
fn probe_freediameter() {
    const T: &str = "probe_freediameter";
    if !need(T, "freeDiameterd", freediameter_available()) {
        return;
    }
    let t0 = started(T);
    let dir = TempDir::new("fd-probe");
    let fd = FreeDiameter::start(dir.path(), "peer1.fd.test", &["--allow", "fd.test", "--tw", "6"]);

    let out = run_diam(
        &[
            "probe",
            "--peer",
            &fd.addr(),
            "--origin-host",
            "client.fd.test",
            "--origin-realm",
            "fd.test",
            "--timeout-ms",
            "5000",
        ],
        30,
    );
    let v = assert_probe_ok(T, &out, Some("peer1.fd.test"));
    eprintln!("{T}: {v}");

    let open = fd.wait_open("client.fd.test", Duration::from_secs(2));
    assert!(open.is_some(), "{T}: freeDiameterd never logged client.fd.test in STATE_OPEN\n{}", fd.proc.dump());
    let dpr = fd.log().wait_for(Duration::from_secs(2), |l| l.contains("Peer 'client.fd.test' sent a DPR"));
    assert!(dpr.is_some(), "{T}: freeDiameterd never logged our DPR\n{}", fd.proc.dump());
    finished(T, t0);
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn freediameter_watchdog_both_ways() {
    use diam_client::{CloseReason, Node, NodeConfig, PeerState};

    const T: &str = "freediameter_watchdog_both_ways";
    if !need(T, "freeDiameterd", freediameter_available()) {
        return;
    }
    let t0 = started(T);
    let dir = TempDir::new("fd-watchdog");
    let fd = FreeDiameter::start(dir.path(), "peer2.fd.test", &["--allow", "fd.test", "--tw", "6"]);
    let capture = start_capture(T, dir.path(), &[fd.port]);
    let addr: std::net::SocketAddr = fd.addr().parse().unwrap();

    // freeDiameterd restarts its Tw on every message it receives, so on a
    // single connection only the side with the shorter timer ever sends a
    // DWR. Hence two connections: on "quiet" our Tw (30 s) is far above
    // freeDiameterd's (6 s, with up to +-2 s of jitter), so freeDiameterd
    // sends the DWRs and we answer; on "chatty" our Tw is 2 s, so we send.
    let config = |host: &str, tw: Duration| {
        let mut c = NodeConfig::new(host, "fd.test");
        c.connection.peer.auth_application_ids = vec![diam_proto::apps::RELAY];
        c.connection.peer.watchdog.interval = tw;
        c.connection.peer.watchdog.jitter = Duration::ZERO;
        c.connection.peer.watchdog.dwr_timeout = Duration::from_secs(3);
        c.connection.connect_timeout = Duration::from_secs(5);
        c
    };

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let result = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(45), async {
            let quiet = Node::builder(config("quiet.fd.test", Duration::from_secs(30)))
                .build()
                .unwrap()
                .connect(addr.into())
                .await
                .unwrap_or_else(|e| panic!("{T}: connecting quiet.fd.test: {e}"));
            let chatty = Node::builder(config("chatty.fd.test", Duration::from_secs(2)))
                .build()
                .unwrap()
                .connect(addr.into())
                .await
                .unwrap_or_else(|e| panic!("{T}: connecting chatty.fd.test: {e}"));
            let connected = Instant::now();
            assert_eq!(quiet.identity().as_deref(), Some("peer2.fd.test"));
            assert_eq!(chatty.identity().as_deref(), Some("peer2.fd.test"));

            // quiet: CEA + freeDiameterd's DWR received, CER + our DWA sent.
            let got_dwr = eventually(Duration::from_secs(20), || {
                let s = quiet.stats();
                s.messages_received >= 2 && s.messages_sent >= 2
            })
            .await;
            assert!(got_dwr, "{T}: no DWR from freeDiameterd within 20 s; quiet stats {:?}", quiet.stats());
            eprintln!("{T}: freeDiameterd's first DWR answered after {:?}", connected.elapsed());

            // chatty: CEA + at least two DWAs to our DWRs.
            let got_dwas = eventually(Duration::from_secs(10), || chatty.stats().messages_received >= 3).await;
            assert!(got_dwas, "{T}: fewer than two DWAs on chatty; stats {:?}", chatty.stats());
            assert_eq!(quiet.state(), PeerState::Open);
            assert_eq!(chatty.state(), PeerState::Open);
            let (q, c) = (quiet.stats(), chatty.stats());
            eprintln!("{T}: quiet {q:?}\n{T}: chatty {c:?}");

            // Graceful close: DPR, then the DPA ends the close.
            for (name, peer) in [("quiet", &quiet), ("chatty", &chatty)] {
                let before = peer.stats().messages_received;
                let reason =
                    tokio::time::timeout(Duration::from_secs(5), peer.close(diam_proto::disconnect_cause::REBOOTING))
                        .await
                        .unwrap_or_else(|_| panic!("{T}: {name}: close did not return within 5 s"));
                assert!(
                    matches!(reason, Some(CloseReason::LocalDisconnect { cause: 0, dpa_result_code: Some(2001) })),
                    "{T}: {name}: close reason {reason:?}"
                );
                assert!(peer.stats().messages_received > before, "{T}: {name}: no DPA counted");
            }
        })
        .await
    });
    drop(rt);
    if result.is_err() {
        panic!("{T}: the library part did not finish within 45 s\n{}", fd.proc.dump());
    }

    for host in ["quiet.fd.test", "chatty.fd.test"] {
        assert!(fd.wait_open(host, Duration::from_secs(1)).is_some(), "{T}: {host} never OPEN\n{}", fd.proc.dump());
        let dpr = format!("Peer '{host}' sent a DPR with cause: REBOOTING");
        assert!(
            fd.log().wait_for(Duration::from_secs(2), |l| l.contains(&dpr)).is_some(),
            "{T}: freeDiameterd did not log \"{dpr}\"\n{}",
            fd.proc.dump()
        );
    }

    if let Some(capture) = capture {
        let pcap = capture.stop();
        let ports = [fd.port];
        assert_no_frames(T, &pcap, &ports, "_ws.malformed");
        let pdus = tshark_pdus(&pcap, &ports);
        let port_of = |host: &str| {
            pdus.iter()
                .find(|p| p.code == 257 && p.request && p.origin_host == host)
                .map(|p| p.src_port)
                .unwrap_or_else(|| panic!("{T}: no CER from {host} in the capture: {pdus:?}"))
        };
        let (quiet, chatty) = (port_of("quiet.fd.test"), port_of("chatty.fd.test"));
        let count = |code: u32, request: bool, src: u16, dst: u16| {
            pdus.iter()
                .filter(|p| p.code == code && p.request == request && p.src_port == src && p.dst_port == dst)
                .count()
        };
        let fdp = fd.port;
        let checks = [
            ("DWR freeDiameterd -> quiet", count(280, true, fdp, quiet), 1),
            ("DWA quiet -> freeDiameterd", count(280, false, quiet, fdp), 1),
            ("DWR chatty -> freeDiameterd", count(280, true, chatty, fdp), 2),
            ("DWA freeDiameterd -> chatty", count(280, false, fdp, chatty), 2),
            ("DPR quiet -> freeDiameterd", count(282, true, quiet, fdp), 1),
            ("DPA freeDiameterd -> quiet", count(282, false, fdp, quiet), 1),
            ("DPR chatty -> freeDiameterd", count(282, true, chatty, fdp), 1),
            ("DPA freeDiameterd -> chatty", count(282, false, fdp, chatty), 1),
        ];
        for (what, n, min) in checks {
            eprintln!("{T}: tshark: {what}: {n}");
            assert!(n >= min, "{T}: tshark saw {n} x {what}, expected at least {min}\n{pdus:#?}");
        }
        // Every DWR on "quiet" came from freeDiameterd and every DWR on
        // "chatty" from us: the timers worked as configured.
        assert_eq!(count(280, true, quiet, fdp), 0, "{T}: quiet sent a DWR despite Tw = 30 s");
    }
    finished(T, t0);
}

/// Election (RFC 6733 §5.6.4) live against freeDiameterd: each side is
/// configured to connect to the other, and our dial is held back until
/// freeDiameterd's own connection has reached us, so both sides are
/// connecting at once and both elect. 20 runs, our identity alternately
/// below and above freeDiameterd's: each time exactly one connection stays
/// open (the one the lower identity dialled), and every request submitted
/// before and during the election is answered.
#[test]
fn election_against_freediameter() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use diam_client::transport::{BoxFuture, Connection, Connector, TcpAcceptor, TcpConnector};
    use diam_client::{Acceptor, Direction, Node, NodeConfig, PeerAddr, PeerState};

    const T: &str = "election_against_freediameter";
    if !need(T, "freeDiameterd", freediameter_available()) {
        return;
    }
    let t0 = started(T);

    /// Counts accepted connections and wakes the gated connector.
    struct Counting {
        inner: TcpAcceptor,
        accepted: Arc<AtomicUsize>,
        seen: Arc<tokio::sync::Notify>,
    }
    impl Acceptor for Counting {
        fn accept(&mut self) -> BoxFuture<'_, std::io::Result<Connection>> {
            Box::pin(async move {
                let c = self.inner.accept().await?;
                self.accepted.fetch_add(1, Ordering::SeqCst);
                self.seen.notify_waiters();
                Ok(c)
            })
        }
        fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
            self.inner.local_addr()
        }
    }
    /// Holds the first dial until the peer's connection has been accepted.
    struct Gated {
        inner: TcpConnector,
        accepted: Arc<AtomicUsize>,
        seen: Arc<tokio::sync::Notify>,
        first: AtomicBool,
        dials: Arc<AtomicUsize>,
    }
    impl Connector for Gated {
        fn connect<'a>(
            &'a self,
            addr: &'a PeerAddr,
            identity: Option<&'a str>,
        ) -> BoxFuture<'a, std::io::Result<Connection>> {
            Box::pin(async move {
                self.dials.fetch_add(1, Ordering::SeqCst);
                if self.first.swap(false, Ordering::SeqCst) {
                    let wait = async {
                        while self.accepted.load(Ordering::SeqCst) == 0 {
                            let n = self.seen.notified();
                            if self.accepted.load(Ordering::SeqCst) > 0 {
                                break;
                            }
                            n.await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
                    // freeDiameterd may dial us before its own listener is
                    // up (a loaded machine shows it): retry a refused dial
                    // for a moment, still well inside the election window.
                    let until = tokio::time::Instant::now() + Duration::from_secs(3);
                    loop {
                        match self.inner.connect(addr, identity).await {
                            Err(e)
                                if e.kind() == std::io::ErrorKind::ConnectionRefused
                                    && tokio::time::Instant::now() < until =>
                            {
                                tokio::time::sleep(Duration::from_millis(20)).await
                            }
                            other => return other,
                        }
                    }
                }
                self.inner.connect(addr, identity).await
            })
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut elections = 0;
    for run in 0..20 {
        let ours = if run % 2 == 0 { "aaa.fd.test" } else { "zzz.fd.test" };
        let theirs = "mmm.fd.test";
        let dir = TempDir::new("fd-election");
        let fd_port = free_port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(tokio::sync::Notify::new());
        let dials = Arc::new(AtomicUsize::new(0));
        let (node, our_port, to_fd, pending) = rt.block_on(async {
            let mut c = NodeConfig::new(ours, "fd.test");
            c.connection.peer.auth_application_ids = vec![diam_proto::apps::RELAY];
            c.connection.request_timeout = Duration::from_secs(20);
            let connector = Gated {
                inner: TcpConnector::new(Duration::from_secs(5), true),
                accepted: accepted.clone(),
                seen: seen.clone(),
                first: AtomicBool::new(true),
                dials: dials.clone(),
            };
            let node = Node::builder(c).connector(Arc::new(connector)).build().unwrap();
            let acceptor = TcpAcceptor::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            let our_port = node
                .listen(Counting { inner: acceptor, accepted: accepted.clone(), seen: seen.clone() })
                .unwrap()
                .port();
            let to_fd = node.add_peer(theirs, [format!("127.0.0.1:{fd_port}").parse().unwrap()]).unwrap();
            // Requests submitted before anything is connected: they wait.
            // (DWRs: freeDiameterd answers them without any extension.)
            let pending: Vec<_> = (0..20u32)
                .map(|_| {
                    let p = to_fd.clone();
                    tokio::spawn(async move {
                        let dwr = diam_proto::Message::request(0, 280)
                            .avp(diam_proto::avps::ORIGIN_HOST, ours)
                            .avp(diam_proto::avps::ORIGIN_REALM, "fd.test")
                            .build();
                        p.send(dwr).await
                    })
                })
                .collect();
            (node, our_port, to_fd, pending)
        });
        let connect = format!("{ours}:{our_port}");
        let fd =
            FreeDiameter::start_on(dir.path(), theirs, Some(fd_port), &["--allow", "fd.test", "--connect", &connect]);
        let outcome = rt.block_on(async {
            to_fd.wait_open(Duration::from_secs(20)).await.map_err(|e| format!("never open: {e}"))?;
            // Let the losing connection finish closing on both sides.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut answered = 0;
            for p in pending {
                match p.await.unwrap() {
                    Ok(a) if diam_proto::peer::result_code(&a) == Some(2001) => answered += 1,
                    other => return Err(format!("a request was lost: {other:?}")),
                }
            }
            Ok::<_, String>(answered)
        });
        let answered = outcome.unwrap_or_else(|e| panic!("{T} run {run} ({ours}): {e}\n{}", fd.proc.dump()));
        let elected = fd.log().find(|l| l.to_ascii_lowercase().contains("election")).is_some();
        elections += usize::from(elected);
        // Exactly one connection: ours is open, never went down, and the
        // connection the lower identity dialled is the one left.
        let expect = if ours < theirs { Direction::Outbound } else { Direction::Inbound };
        assert_eq!(to_fd.state(), PeerState::Open, "{T} run {run}\n{}", fd.proc.dump());
        assert_eq!(to_fd.direction(), Some(expect), "{T} run {run} ({ours}): surviving direction\n{}", fd.proc.dump());
        assert_eq!(to_fd.stats().downs, 0, "{T} run {run}: the peer went down\n{}", fd.proc.dump());
        assert_eq!(rt.block_on(async { node.peers().len() }), 1, "{T} run {run}: one peer in the table");
        let opens = fd.log().count(|l| l.contains("-> 'STATE_OPEN'") && l.contains(&format!("'{ours}'")));
        assert_eq!(opens, 1, "{T} run {run}: freeDiameterd opened {opens} times\n{}", fd.proc.dump());
        assert_eq!(answered, 20);
        eprintln!(
            "{T}: run {run} ({ours} vs {theirs}): open {expect:?}, {} dials, {} accepted, freeDiameterd elected: {elected}",
            dials.load(Ordering::SeqCst),
            accepted.load(Ordering::SeqCst)
        );
        rt.block_on(node.shutdown(Duration::from_secs(2)));
        drop(fd);
    }
    eprintln!("{T}: freeDiameterd logged an election in {elections} of 20 runs");
    assert!(elections >= 10, "{T}: the race was exercised in only {elections} runs");
    finished(T, t0);
}

// ---------------------------------------------------------------------------
// Erlang/OTP diameter

#[test]
fn erlang_answers_diam_send() {
    const T: &str = "erlang_answers_diam_send";
    if !need(T, "Erlang/OTP diameter (escript)", erlang_available()) {
        return;
    }
    let t0 = started(T);
    let (mut server, port) = start_erlang_server(&[]);
    let peer = format!("127.0.0.1:{port}");

    // OTP diameter 2.2.x (OTP 25) races with a request that follows the
    // CEA at once: the watchdog process looks the connection up in the
    // service's peer table before the service process has inserted it, and
    // silently discards the request (diameter_service:find_incoming_app/4
    // returns false). `diam send` sends right after the CEA, as RFC 6733
    // allows, so an attempt can time out with nothing reaching the escript's
    // handle_request. Only that case is retried, with a fresh Origin-Host
    // (a reconnecting identity would start in RFC 3539 REOPEN), and loudly.
    let mut attempt = 0;
    let (out, host) = loop {
        attempt += 1;
        let host = if attempt == 1 { "client.erl.test".to_string() } else { format!("client{attempt}.erl.test") };
        let out = run_diam(
            &[
                "send",
                "--peer",
                &peer,
                "--app",
                "4",
                "--command",
                "272",
                "--origin-host",
                &host,
                "--origin-realm",
                "erl.test",
                "--avp",
                "Destination-Realm=erl.test",
                "--avp",
                "Auth-Application-Id=4",
                // Mandatory in a CCR (RFC 4006 §3.1); OTP answers 5005 without it.
                "--avp",
                "Service-Context-Id=32251@3gpp.org",
                "--avp",
                "CC-Request-Type=INITIAL_REQUEST",
                "--avp",
                "CC-Request-Number=0",
                "--timeout-ms",
                "3000",
            ],
            30,
        );
        let from = format!("from={host} ");
        let seen =
            server.out.wait_for(Duration::from_millis(500), |l| l.starts_with("REQUEST CCR") && l.contains(&from));
        let dropped_by_otp = out.code() == Some(1) && out.stderr.contains("timed out") && seen.is_none();
        if !dropped_by_otp || attempt == 5 {
            break (out, host);
        }
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "WARNING {T}: attempt {attempt}: OTP discarded the CCR sent right after the CEA (known OTP \
                 diameter race, the request never reached the application); retrying\n"
            )
            .as_bytes(),
        );
    };
    assert_eq!(out.code(), Some(0), "{T}: diam send failed (attempt {attempt})\n{}\n{}", out.describe(), server.dump());
    let ans = json_stdout(&out);
    assert_eq!(ans["command_code"], 272, "{T}: {ans}");
    assert_eq!(ans["flags"]["request"], false, "{T}: {ans}");
    assert_eq!(ans["application_id"], 4, "{T}: {ans}");
    assert_eq!(avp(&ans, "Result-Code"), Some(&Value::from(2001)), "{T}: {ans}");
    let sid = avp(&ans, "Session-Id").and_then(Value::as_str).unwrap_or_default().to_string();
    assert!(!sid.is_empty(), "{T}: no Session-Id in the answer: {ans}");
    assert_eq!(avp(&ans, "Origin-Host"), Some(&Value::from("server.erl.test")), "{T}: {ans}");
    // The Session-Id the server received is the one in the answer.
    let from = format!("from={host} ");
    let req = server.out.wait_for(Duration::from_secs(2), |l| l.starts_with("REQUEST CCR") && l.contains(&from));
    let req = req.unwrap_or_else(|| panic!("{T}: the Erlang server logged no request\n{}", server.dump()));
    assert!(req.contains(&format!("session={sid} ")), "{T}: server saw `{req}`, answer has Session-Id {sid}");
    assert!(req.contains("type=1 number=0"), "{T}: {req}");

    let out = run_diam(&["probe", "--peer", &peer, "--app", "4", "--timeout-ms", "5000"], 30);
    let v = assert_probe_ok(T, &out, Some("server.erl.test"));
    eprintln!("{T}: {v}");

    let status = server.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{T}: Erlang server exit {status:?}\n{}", server.dump());
    finished(T, t0);
}

/// A server-initiated request over an inbound connection: an Erlang/OTP
/// client connects to our node, and the node sends it a Re-Auth-Request on
/// that connection; the Erlang client's handler answers RAA 2001.
#[test]
fn server_sends_rar_to_an_erlang_client() {
    use diam_client::{handler_fn, Direction, Node, NodeConfig};
    use diam_proto::{apps, avps, commands, Message};

    const T: &str = "server_sends_rar_to_an_erlang_client";
    if !need(T, "Erlang/OTP diameter (escript)", erlang_available()) {
        return;
    }
    let t0 = started(T);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (node, port) = rt.block_on(async {
        let mut c = NodeConfig::new("server.erl.test", "erl.test");
        c.connection.peer.auth_application_ids = vec![apps::CREDIT_CONTROL];
        // The Erlang CCR carries vendor AVPs (Ericsson's Cost, with the M
        // bit) that our dictionary does not know: this application does its
        // own checks.
        c.mandatory_avps = diam_proto::check::MandatoryAvps::Ignore;
        let cca = handler_fn(|req: Message| async move { crate_answer(&req) });
        let node = Node::builder(c).handler(apps::CREDIT_CONTROL, cca).accept_any().build().unwrap();
        let port = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap().port();
        (node, port)
    });
    let mut client = start_erlang_client(port, 1, &["--tw", "3000", "--linger-ms", "8000"]);
    let answered = client.out.wait_for(Duration::from_secs(30), |l| l.starts_with("ANSWER 0 "));
    assert_eq!(answered.as_deref(), Some("ANSWER 0 2001"), "{T}\n{}", client.dump());
    let raa = rt.block_on(async {
        let pcef = node.peer("client.erl.test").expect("the Erlang client is in the node's table");
        assert_eq!(pcef.direction(), Some(Direction::Inbound));
        let rar = Message::request(apps::CREDIT_CONTROL, commands::RE_AUTH)
            .proxiable(true)
            .avp(avps::SESSION_ID, "server.erl.test;1;rar")
            .avp(avps::ORIGIN_HOST, "server.erl.test")
            .avp(avps::ORIGIN_REALM, "erl.test")
            .avp(avps::DESTINATION_REALM, "erl.test")
            .avp(avps::DESTINATION_HOST, "client.erl.test")
            .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
            .avp(avps::RE_AUTH_REQUEST_TYPE, 0)
            .build();
        pcef.send(rar).await
    });
    let raa = raa.unwrap_or_else(|e| panic!("{T}: RAR: {e}\n{}", client.dump()));
    assert_eq!(raa.get(avps::RESULT_CODE).unwrap(), Some(2001), "{T}: {raa:?}");
    assert_eq!(raa.get(avps::ORIGIN_HOST).unwrap(), Some("client.erl.test"));
    assert!(
        client.out.wait_for(Duration::from_secs(5), |l| l.starts_with("REQUEST RAR from=server.erl.test")).is_some(),
        "{T}: the Erlang client did not see the RAR\n{}",
        client.dump()
    );
    client.kill();
    rt.block_on(node.shutdown(Duration::from_secs(1)));
    finished(T, t0);
}

/// The standard CCA for a CCR (what `diam serve` answers).
fn crate_answer(req: &diam_proto::Message) -> diam_proto::Message {
    use diam_proto::{avps, Message};
    let mut b = Message::answer_to(req)
        .avp(avps::RESULT_CODE, 2001u32)
        .avp(avps::ORIGIN_HOST, "server.erl.test")
        .avp(avps::ORIGIN_REALM, "erl.test");
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

#[test]
fn erlang_client_against_diam_serve() {
    const T: &str = "erlang_client_against_diam_serve";
    if !need(T, "Erlang/OTP diameter (escript)", erlang_available()) {
        return;
    }
    let t0 = started(T);
    let (mut serve, addr) = start_serve(&["--origin-host", "server.erl.test", "--origin-realm", "erl.test"]);
    let mut client = start_erlang_client(addr.port(), 3, &["--tw", "3000"]);
    // CER/CEA, 3 CCRs, linger Tw + 1.5 s for a DWR/DWA, DPR/DPA.
    let status = client.wait_exit(Duration::from_secs(30));
    assert!(status.is_some(), "{T}: the Erlang client did not finish in 30 s\n{}\n{}", client.dump(), serve.dump());
    assert_eq!(status.unwrap().code(), Some(0), "{T}: Erlang client failed\n{}\n{}", client.dump(), serve.dump());
    client.all.wait_eof(Duration::from_secs(5));
    for i in 0..3 {
        let want = format!("ANSWER {i} 2001");
        assert!(client.out.find(|l| l == want).is_some(), "{T}: no `{want}`\n{}", client.dump());
    }
    assert!(client.out.find(|l| l == "DONE").is_some(), "{T}: no DONE\n{}", client.dump());

    let status = serve.terminate(Duration::from_secs(5));
    assert!(status.is_some(), "{T}: diam serve still running 5 s after SIGTERM\n{}", serve.dump());
    assert_eq!(status.unwrap().code(), Some(0), "{T}: diam serve exit after SIGTERM\n{}", serve.dump());
    finished(T, t0);
}

#[test]
fn serve_sends_dpr_on_sigterm() {
    const T: &str = "serve_sends_dpr_on_sigterm";
    let have_fd = freediameter_available();
    let have_erl = erlang_available();
    if !need(T, "freeDiameterd", have_fd) || !need(T, "Erlang/OTP diameter (escript)", have_erl) {
        return;
    }
    let t0 = started(T);
    let dir = TempDir::new("serve-dpr");
    let (mut serve, addr) = start_serve(&["--origin-host", "serve.fd.test", "--origin-realm", "fd.test"]);
    // freeDiameterd connects to diam serve (ConnectPeer), so diam serve is
    // the responder on this connection.
    let connect = format!("serve.fd.test:{}", addr.port());
    let fd = FreeDiameter::start(dir.path(), "peer3.fd.test", &["--allow", "fd.test", "--connect", &connect]);
    let client = start_erlang_client(addr.port(), 1, &["--linger-ms", "20000"]);

    let open = fd.wait_open("serve.fd.test", Duration::from_secs(15));
    assert!(open.is_some(), "{T}: freeDiameterd never opened serve.fd.test\n{}\n{}", fd.proc.dump(), serve.dump());
    let answered = client.out.wait_for(Duration::from_secs(20), |l| l.starts_with("ANSWER 0 "));
    assert_eq!(answered.as_deref(), Some("ANSWER 0 2001"), "{T}: Erlang client\n{}", client.dump());

    let sent = Instant::now();
    let status = serve.terminate(Duration::from_secs(8));
    assert!(status.is_some(), "{T}: diam serve still running 8 s after SIGTERM\n{}", serve.dump());
    assert_eq!(status.unwrap().code(), Some(0), "{T}: diam serve exit after SIGTERM\n{}", serve.dump());
    eprintln!("{T}: diam serve exited {:?} after SIGTERM", sent.elapsed());

    let dpr = fd.log().wait_for(Duration::from_secs(3), |l| l.contains("Peer 'serve.fd.test' sent a DPR"));
    assert!(dpr.is_some(), "{T}: freeDiameterd logged no DPR from diam serve\n{}", fd.proc.dump());
    eprintln!("{T}: freeDiameterd: {}", dpr.unwrap());
    let down = client.out.wait_for(Duration::from_secs(3), |l| l.starts_with("PEER_DOWN"));
    assert_eq!(down.as_deref(), Some("PEER_DOWN serve.fd.test"), "{T}: Erlang client\n{}", client.dump());
    // The Erlang client lingers 20 s: it went down because of the DPR, not
    // because it finished.
    assert!(client.out.find(|l| l == "DONE").is_none(), "{T}: the Erlang client had already finished");
    finished(T, t0);
}

// ---------------------------------------------------------------------------
// tshark on our own traffic

#[test]
fn tshark_sees_no_malformed_frames_in_our_traffic() {
    const T: &str = "tshark_sees_no_malformed_frames_in_our_traffic";
    if !need(T, "tshark", tshark_available()) || !need(T, "tcpdump", tcpdump_available()) {
        return;
    }
    let t0 = started(T);
    let dir = TempDir::new("tshark-own");
    let (mut serve, addr) = start_serve(&["--origin-host", "server.own.test", "--origin-realm", "own.test"]);
    let port = addr.port();
    let capture = match Capture::start(dir.path(), &[port]) {
        Ok(c) => c,
        Err(e) if peers_required() => panic!("{T}: cannot capture on lo: {e}"),
        Err(e) => {
            need(T, &format!("a working tcpdump ({e})"), false);
            return;
        }
    };
    let peer = addr.to_string();

    let out =
        run_diam(&["probe", "--peer", &peer, "--origin-host", "client.own.test", "--origin-realm", "own.test"], 30);
    assert_probe_ok(T, &out, Some("server.own.test"));

    let ccr = [
        "send",
        "--peer",
        &peer,
        "--app",
        "4",
        "--command",
        "272",
        "--origin-host",
        "client.own.test",
        "--origin-realm",
        "own.test",
        "--avp",
        "Destination-Realm=own.test",
        "--avp",
        "Auth-Application-Id=4",
        "--avp",
        "Service-Context-Id=32251@3gpp.org",
        "--avp",
        "CC-Request-Type=INITIAL_REQUEST",
        "--avp",
        "CC-Request-Number=0",
        "--avp",
        "User-Name=alice@own.test",
        // A Grouped AVP, a vendor AVP (3GPP-IMSI-MCC-MNC, 8:10415) and an
        // unknown vendor AVP (hex).
        "--avp",
        r#"Subscription-Id=[{"name":"Subscription-Id-Type","value":"END_USER_IMSI"},{"name":"Subscription-Id-Data","value":"001010123456789"}]"#,
        "--avp",
        "8:10415=00101",
        "--avp",
        "7777:99999=deadbeef01",
    ];
    let out = run_diam(&ccr, 30);
    assert_eq!(out.code(), Some(0), "{T}: diam send failed\n{}", out.describe());
    let ans = json_stdout(&out);
    assert_eq!(avp(&ans, "Result-Code"), Some(&Value::from(2001)), "{T}: {ans}");

    let pcap = capture.stop();
    let status = serve.terminate(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{T}: diam serve exit after SIGTERM\n{}", serve.dump());

    assert_no_frames(T, &pcap, &[port], "_ws.malformed");
    // Nor anything tshark's expert system calls an error (bad AVP lengths,
    // answers to unknown requests, ...).
    assert_no_frames(T, &pcap, &[port], "_ws.expert.severity == error");
    let pdus = tshark_pdus(&pcap, &[port]);
    let seen: BTreeSet<(u32, bool)> = pdus
        .iter()
        .filter(|p| (p.request && p.dst_port == port) || (!p.request && p.src_port == port))
        .map(|p| (p.code, p.request))
        .collect();
    for code in [257, 280, 282, 272] {
        for request in [true, false] {
            assert!(
                seen.contains(&(code, request)),
                "{T}: tshark saw no {} {code} (requests to, answers from port {port}): {pdus:#?}",
                if request { "request" } else { "answer" }
            );
        }
    }
    eprintln!("{T}: tshark decoded {} PDUs, none malformed", pdus.len());
    finished(T, t0);
}
