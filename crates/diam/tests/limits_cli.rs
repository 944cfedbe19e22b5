//! `diam serve` at its descriptor limit: attackers holding peers use up
//! every descriptor, a good probe fails meanwhile, and once the attackers
//! leave a probe succeeds again within a second; the accept failures in
//! between are logged at most about once a second.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{diam_bin, in_path, run_diam, Proc};
use diam_proto::{avps, FrameDecoder, Message};

/// The server's descriptor limit. `diam serve --max-connections 1000`
/// still caps connections from one source address at 64 (its
/// `max_connections_per_source` is min(64, --max-connections), with no
/// flag to raise it), and every attacker here comes from 127.0.0.1: under
/// a limit of 128 descriptors (about 116 connections after the 12 the
/// process holds itself) the per-source limit would close the 65th
/// connection and the descriptors would never run out. Under 64 they run
/// out at about 52 connections, before either connection limit.
const NOFILE: u32 = 64;

fn cer(host: &str) -> Message {
    Message::request(0, 257)
        .hop_by_hop(1)
        .end_to_end(1)
        .avp(avps::ORIGIN_HOST, host)
        .avp(avps::ORIGIN_REALM, "limits.test")
        .avp(avps::HOST_IP_ADDRESS, std::net::IpAddr::from([127, 0, 0, 1]))
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "attacker")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build()
}

/// `diam serve ARGS` under a descriptor limit of `nofile` (prlimit, or a
/// shell's ulimit without it); waits for its listening line.
fn start_limited_serve(nofile: u32, args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = if in_path("prlimit") {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nofile={nofile}:{nofile}")).arg(diam_bin());
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(r#"ulimit -n {nofile} && exec "$0" "$@""#)).arg(diam_bin());
        c
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    let proc = Proc::spawn("diam-serve", &cmd, false).expect("starting diam serve");
    let line = proc.out.wait_for(Duration::from_secs(15), |l| l.contains("\"listening\""));
    let Some(line) = line else { panic!("diam serve did not report listening\n{}", proc.dump()) };
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let addr: SocketAddr = v["addr"].as_str().and_then(|a| a.parse().ok()).expect("a listening address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    (proc, addr)
}

/// What became of an attacker's CER.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A CEA with this Result-Code.
    Cea(Option<u32>),
    /// Nothing within the wait (the connection sits in the accept queue).
    NoAnswer,
    /// Closed or reset.
    Closed,
}

fn attack(addr: SocketAddr, host: &str, wait: Duration) -> (TcpStream, Outcome) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(cer(host).as_bytes()).unwrap();
    let mut buf = bytes::BytesMut::new();
    let mut dec = FrameDecoder::new();
    let mut chunk = [0u8; 4096];
    let outcome = loop {
        if let Some(m) = dec.decode(&mut buf).expect("an undecodable frame from diam serve") {
            break Outcome::Cea(m.get(avps::RESULT_CODE).unwrap());
        }
        match s.read(&mut chunk) {
            Ok(0) => break Outcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break Outcome::NoAnswer
            }
            Err(_) => break Outcome::Closed,
        }
    };
    (s, outcome)
}

/// `line` without terminal colour sequences (tracing colours its fields).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn probe(addr: SocketAddr, timeout_ms: u64) -> common::Finished {
    run_diam(&["probe", "--peer", &addr.to_string(), "--timeout-ms", &timeout_ms.to_string()], 30)
}

/// Attackers (a valid CER each, distinct Origin-Hosts, each held as a
/// peer) connect until the server has no descriptor left: a new
/// connection gets no CEA, and a good `diam probe` fails. The attackers
/// leave; within 1 s a probe succeeds. The accept failures meanwhile
/// (EMFILE) are on stderr at most about once a second, not once per retry.
#[test]
fn a_node_at_its_fd_limit_serves_again_once_the_attackers_leave() {
    let started = Instant::now();
    let (mut serve, addr) =
        start_limited_serve(NOFILE, &["--max-connections", "1000", "--origin-host", "fd.limits.test"]);
    let ok = probe(addr, 2000);
    assert!(ok.success(), "a probe before the attack: {}\n{}", ok.describe(), serve.dump());

    let mut attackers = Vec::new();
    let stuck = loop {
        let i = attackers.len();
        assert!(i < 4 * NOFILE as usize, "{i} connections and the server still takes more\n{}", serve.dump());
        let (s, outcome) = attack(addr, &format!("attacker{i}.limits.test"), Duration::from_millis(500));
        match outcome {
            Outcome::Cea(Some(2001)) => attackers.push(s),
            Outcome::NoAnswer => {
                attackers.push(s);
                break Instant::now();
            }
            other => panic!("attacker {i}: {other:?}: refused, not out of descriptors\n{}", serve.dump()),
        }
    };
    let held = attackers.len() - 1;
    eprintln!("{held} attackers held as peers before the descriptors ran out");
    assert!(held >= 8 && held < NOFILE as usize, "{held} peers under a limit of {NOFILE} descriptors");

    // A good client cannot get in now.
    let blocked = probe(addr, 2000);
    assert!(!blocked.success(), "a probe succeeded with no descriptor left: {}", blocked.describe());
    let (_, again) = attack(addr, "late.limits.test", Duration::from_millis(300));
    assert_eq!(again, Outcome::NoAnswer, "still no descriptor");

    // The attackers leave.
    drop(attackers);
    let closed = Instant::now();
    let mut tries = 0;
    let recovered = loop {
        tries += 1;
        let p = probe(addr, 300);
        if p.success() {
            break closed.elapsed();
        }
        assert!(closed.elapsed() < Duration::from_secs(10), "no probe succeeded: {}\n{}", p.describe(), serve.dump());
    };
    eprintln!("a probe succeeded {recovered:?} after the attackers closed ({tries} tries)");
    assert!(recovered <= Duration::from_secs(1), "served again only {recovered:?} after the attackers left");
    let after = probe(addr, 2000);
    assert!(after.success(), "a probe after recovery: {}", after.describe());

    // Accept failures, rate-limited: at most one line a second while the
    // descriptors were out (plus one for a partial second at each end).
    let emfile_secs = (closed + recovered).duration_since(stuck).as_secs_f64() + 0.5;
    serve.terminate(Duration::from_secs(10));
    serve.all.wait_eof(Duration::from_secs(5));
    let lines = serve.err.count(|l| l.contains("accept failed"));
    let emfile = serve.err.count(|l| l.contains("accept failed") && l.contains("os error 24"));
    eprintln!("{lines} \"accept failed\" lines over about {emfile_secs:.1} s out of descriptors");
    assert!(emfile >= 1, "no EMFILE was logged: the descriptors never ran out?\n{}", serve.dump());
    let most = emfile_secs.ceil() as usize + 1;
    assert!(lines <= most, "{lines} \"accept failed\" lines in {emfile_secs:.1} s (at most {most})\n{}", serve.dump());
    // The retries in between were counted, not printed.
    let suppressed: u64 = serve
        .err
        .snapshot()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .filter_map(|l| strip_ansi(l).split("suppressed=").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    eprintln!("{suppressed} accept failures retried without a line of their own");
    assert!(suppressed >= 1, "the accept was not retried in between, or not rate-limited\n{}", serve.dump());
    eprintln!("total {:?}", started.elapsed());
}
