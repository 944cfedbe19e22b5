//! `diam demo`: no arguments, no outside server, exit 0, and it tells the
//! whole story (kill, failure callback with its latency, reconnection,
//! stats table).

mod common;

use common::{diam, run};

/// The line containing `marker`, or a panic showing everything.
fn line<'a>(out: &'a str, marker: &str, all: &str) -> &'a str {
    out.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no line with {marker:?} in:\n{all}"))
}

/// Whether `text` names a duration the way the demo prints them.
fn has_duration(text: &str) -> bool {
    [" µs", " ms", " s "].iter().any(|u| text.contains(u)) || text.ends_with(" s")
}

#[test]
fn demo_runs_the_whole_story() {
    let f = run(diam().arg("demo"), 30);
    let all = f.describe();
    assert!(f.success(), "{all}");
    eprintln!("diam demo took {:?}", f.elapsed);
    let out = f.stdout.as_str();

    // Three peers, connected.
    for p in ["peer-a.demo.test", "peer-b.demo.test", "peer-c.demo.test"] {
        line(out, p, &all);
    }
    assert_eq!(out.lines().filter(|l| l.contains("event: connected to peer")).count(), 3, "{all}");
    // The server side talks back: a RAR over the client's own connection.
    let rar = line(out, "sends a Re-Auth-Request", &all);
    assert!(rar.contains("peer A"), "{rar}");
    let raa = line(out, "answered RAA 2001", &all);
    assert!(has_duration(raa), "{raa}");
    // Per-second traffic lines.
    assert!(out.lines().filter(|l| l.contains("] traffic ") && l.contains("answers/s")).count() >= 4, "{all}");

    // The kill, the callback and its timings.
    line(out, "peer B killed", &all);
    line(out, "event: disconnected from peer B", &all);
    line(out, "on_failure fired for peer B", &all);
    let detected = line(out, "failure detected", &all);
    assert!(has_duration(detected), "{detected}");
    let cleanup = line(out, "pool cleanup:", &all);
    assert!(cleanup.contains("RECONNECTING") && has_duration(cleanup), "{cleanup}");
    // Usually every request in flight fails fast; on a slow machine the
    // peer may have answered them all before its sockets closed.
    let lost = line(out, "ConnectionLost", &all);
    assert!(lost.contains("(ConnectionLost: 0)") || has_duration(lost), "{lost}");
    line(out, "event: reconnect attempt 1 to peer B", &all);

    // The restore and the reconnection.
    line(out, "peer B restored on the same address", &all);
    let back = line(out, "event: reconnected to peer B", &all);
    assert!(back.contains("after the peer was restored"), "{back}");

    // The stats table and the invariant.
    line(out, "final stats, per peer", &all);
    for p in ["A    127.0.0.1:", "B    127.0.0.1:", "C    127.0.0.1:"] {
        line(out, p, &all);
    }
    line(out, "pool totals", &all);
    for row in ["requests", "answers", "errors", "timeouts", "failed attempts", "connections lost", "bytes sent/recv"] {
        line(out, &format!("  {row} "), &all);
    }
    let inv = line(out, "invariant requests (counted at submission) == answers + errors + timeouts", &all);
    assert!(inv.ends_with("holds"), "{inv}");
    line(out, "demo complete", &all);
    // Nothing alarming on stderr (logs are at warn by default).
    assert!(!f.stderr.contains("panicked"), "{all}");
}
