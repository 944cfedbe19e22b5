//! Many ports and many idle connections, through the CLI, as separate
//! processes:
//!
//! * `diam serve --listen 127.0.0.1:P1-P2` listens on every port of the
//!   range (one node per port) and lists them in its listening line;
//!   `diam bench --peer 127.0.0.1:P1-P2 --hold 2` then holds one connection
//!   to each port and reports the idle cost (`hold`: connections open,
//!   resident memory, CPU), checked against independent counts (the
//!   client's own TCP sockets in /proc, the server's answer count).
//! * The same range from `--config`'s `listen` key.
//! * `--threads N` on both: N single-threaded runtimes in each process;
//!   serve's share every port (SO_REUSEPORT), bench's each hold their own
//!   connection to every port under their own identity.
//! * Bad ranges and bad `--hold` / `--threads` values exit 2; a single port
//!   prints the listening line as before (no `addrs`).
//!
//! No tight performance numbers are asserted. Every child runs under
//! `timeout` and is killed on drop (see `common`).

mod common;

use std::net::TcpListener;
use std::sync::Mutex;
use std::time::Duration;

use common::{diam, run, Proc, TempDir};
use serde_json::Value;

const PORTS: u16 = 20;

/// Ranges handed out by this process, so concurrent tests never share one.
static TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

/// `n` consecutive ports that were free on 127.0.0.1 a moment ago (each
/// bound, then released). Chosen below Linux's ephemeral range (32768 and
/// up), so that outgoing connections do not take them meanwhile.
fn free_range(n: u16) -> u16 {
    const LO: u32 = 10_000;
    const HI: u32 = 32_000;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let span = HI - LO - u32::from(n);
    let start = (std::process::id().wrapping_mul(7919).wrapping_add(nanos)) % span;
    let mut taken = TAKEN.lock().unwrap();
    for i in 0..2000u32 {
        let base = (LO + (start + i * (u32::from(n) + 1)) % span) as u16;
        let end = base + n - 1;
        if taken.iter().any(|&(a, b)| base <= b && a <= end) {
            continue;
        }
        let bound: Result<Vec<TcpListener>, _> = (base..=end).map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if bound.is_ok() {
            taken.push((base, end));
            return base;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}

/// The JSON object on one line of output.
fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// A `diam serve` whose listening line has been printed.
struct Serve {
    proc: Proc,
    listening: Value,
}

/// Starts `diam serve` with `args`, the range `base..base+n` being what it
/// listens on; retries on a fresh range (from `args_for`) when a port was
/// taken between the check and the bind.
fn start_serve(n: u16, args_for: impl Fn(u16) -> Vec<String>) -> (Serve, u16) {
    for _ in 0..5 {
        let base = free_range(n);
        let mut cmd = diam();
        cmd.arg("serve").args(args_for(base));
        let mut proc = Proc::spawn("serve", &cmd, false).expect("starting diam serve");
        if let Some(line) = proc.out.wait_for(Duration::from_secs(20), |l| l.contains("\"listening\"")) {
            return (Serve { listening: json(&line), proc }, base);
        }
        let status = proc.wait_exit(Duration::from_secs(5));
        let dump = proc.dump();
        assert_eq!(status.and_then(|s| s.code()), Some(1), "diam serve printed no listening line\n{dump}");
        assert!(dump.contains("listening on"), "only a bind failure is retried\n{dump}");
        eprintln!("a port of {base}+{n} was taken meanwhile; another range");
    }
    panic!("diam serve could not bind a free range in 5 tries");
}

impl Serve {
    /// SIGTERM; the `stopped` line.
    fn stop(mut self) -> Value {
        let status = self.proc.terminate(Duration::from_secs(20)).expect("diam serve exits on SIGTERM");
        assert!(status.success(), "diam serve exit {status:?}\n{}", self.proc.dump());
        self.proc.out.wait_eof(Duration::from_secs(5));
        let line = self.proc.out.find(|l| l.contains("\"stopped\"")).unwrap_or_else(|| panic!("{}", self.proc.dump()));
        json(&line)
    }
}

fn addrs(base: u16, n: u16) -> Vec<Value> {
    (base..base + n).map(|p| Value::from(format!("127.0.0.1:{p}"))).collect()
}

#[test]
fn serve_on_a_port_range_and_bench_holding_a_connection_to_every_port() {
    let (serve, base) = start_serve(PORTS, |base| {
        vec![
            "--listen".into(),
            format!("127.0.0.1:{base}-{}", base + PORTS - 1),
            "--allow".into(),
            "*.localdomain".into(),
        ]
    });
    let l = &serve.listening;
    assert_eq!(l["addr"], format!("127.0.0.1:{base}"), "{l}");
    assert_eq!(l["addrs"].as_array().unwrap(), &addrs(base, PORTS), "{l}");

    let range = format!("127.0.0.1:{base}-{}", base + PORTS - 1);
    let bench = run(diam().args(["bench", "--peer", &range, "--duration", "1", "--hold", "2", "--json"]), 90);
    assert!(bench.success(), "diam bench: {}", bench.describe());
    let r = json(bench.stdout.lines().last().expect("the report"));
    let hold = &r["hold"];
    eprintln!("hold: {hold}");
    // Every port got its connection and carried traffic.
    assert_eq!(hold["connections_open"], u64::from(PORTS), "{hold}");
    let per_peer = r["per_peer"].as_object().unwrap();
    assert_eq!(per_peer.len(), usize::from(PORTS), "{r}");
    for (peer, p) in per_peer {
        assert!(p["answers"].as_u64().unwrap() > 0, "{peer} carried no traffic: {p}");
    }
    // The pool's count against the process's own established TCP sockets.
    assert_eq!(hold["tcp_established"], hold["connections_open"], "{hold}");
    assert!(hold["rss_bytes"].as_u64().unwrap() > 0, "{hold}");
    let cpu = hold["cpu_percent"].as_f64().unwrap();
    assert!((0.0..=200.0).contains(&cpu), "{hold}");
    assert!(hold["duration_s"].as_f64().unwrap() >= 1.99, "{hold}");
    assert_eq!(r["requests"], r["answers"], "every request answered: {r}");
    // CPU time over the traffic window: at most both cores over it.
    let cpu_s = r["cpu_s"].as_f64().unwrap_or_else(|| panic!("cpu_s: {r}"));
    assert!(cpu_s > 0.0 && cpu_s <= 2.0 * r["duration_s"].as_f64().unwrap() + 0.1, "{r}");

    let out = serve.proc.out.clone();
    let stopped = serve.stop();
    // The server counted the answers on its side.
    assert_eq!(stopped["answers"], r["answers"], "{stopped}");
    assert_eq!(stopped["addr"], format!("127.0.0.1:{base}"), "{stopped}");
    assert_eq!(out.count(|l| l.contains("\"peer_up\"")), usize::from(PORTS), "{}", out.text());
}

#[test]
fn threads_on_both_sides_share_the_ports_and_lose_nothing() {
    const N: u16 = 4;
    const LANES: usize = 3;
    let (serve, base) = start_serve(N, |base| {
        vec!["--listen".into(), format!("127.0.0.1:{base}-{}", base + N - 1), "--threads".into(), LANES.to_string()]
    });
    let range = format!("127.0.0.1:{base}-{}", base + N - 1);
    let bench = run(
        diam()
            .args(["bench", "--peer", &range, "--duration", "1", "--inflight", "12", "--hold", "0.5", "--json"])
            .args(["--threads", &LANES.to_string(), "--origin-host", "client.localdomain"]),
        90,
    );
    assert!(bench.success(), "diam bench: {}", bench.describe());
    let r = json(bench.stdout.lines().last().expect("the report"));
    // Every bench runtime has its own connection to every port.
    let conns = u64::from(N) * LANES as u64;
    assert_eq!(r["hold"]["connections_open"], conns, "{r}");
    assert_eq!(r["hold"]["tcp_established"], conns, "{r}");
    assert_eq!(r["requests"], r["answers"], "every request answered: {r}");
    assert!(r["answers"].as_u64().unwrap() > 0, "{r}");
    // The per-peer counts add up over the runtimes.
    let per_peer: u64 = r["per_peer"].as_object().unwrap().values().map(|p| p["answers"].as_u64().unwrap()).sum();
    assert_eq!(per_peer, r["answers"].as_u64().unwrap(), "{r}");
    assert_eq!(r["pool"]["answers"], r["answers"], "{r}");

    let out = serve.proc.out.clone();
    let stopped = serve.stop();
    assert_eq!(stopped["answers"], r["answers"], "the server's own count: {stopped}");
    // Each identity once per port: client.localdomain, client-1..., client-2...
    for id in ["client.localdomain", "client-1.localdomain", "client-2.localdomain"] {
        let ups = out.count(|l| l.contains("\"peer_up\"") && l.contains(&format!("\"peer\":\"{id}\"")));
        assert_eq!(ups, usize::from(N), "{id}: {}", out.text());
    }
    // 12 connections over 3 listeners of each port: all on one runtime
    // would happen about once in 10^5 runs.
    let lanes = stopped["lane_requests"].as_array().unwrap_or_else(|| panic!("{stopped}"));
    assert_eq!(lanes.len(), LANES, "{stopped}");
    let busy = lanes.iter().filter(|n| n.as_u64().unwrap() > 0).count();
    assert!(busy >= 2, "the kernel spread the connections: {stopped}");
}

#[test]
fn serve_reads_a_port_range_from_its_config_file() {
    let dir = TempDir::new("scale-config");
    let path = dir.path().join("serve.toml");
    let (serve, base) = start_serve(3, |base| {
        std::fs::write(&path, format!("listen = \"127.0.0.1:{base}-{}\"\n", base + 2)).unwrap();
        vec!["--config".into(), path.display().to_string()]
    });
    assert_eq!(serve.listening["addrs"].as_array().unwrap(), &addrs(base, 3), "{}", serve.listening);
    // Each port answers CER, DWR and DPR.
    for port in base..base + 3 {
        let probe = run(diam().args(["probe", "--peer", &format!("127.0.0.1:{port}")]), 30);
        assert!(probe.success(), "probe {port}: {}", probe.describe());
    }
    serve.stop();
}

#[test]
fn a_single_port_prints_the_listening_line_as_before() {
    let mut cmd = diam();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let serve = Proc::spawn("serve", &cmd, false).unwrap();
    let line = serve.out.wait_for(Duration::from_secs(20), |l| l.contains("\"listening\"")).expect("listening");
    let v = json(&line);
    let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["addr", "event"], "{line}");
    assert!(!v["addr"].as_str().unwrap().ends_with(":0"), "{line}");
    // Killed on drop: SIGTERM this early could come before serve has
    // installed its handler.
    drop(serve);
}

#[test]
fn bad_ranges_and_bad_hold_values_exit_2() {
    for range in
        ["127.0.0.1:0-5", "127.0.0.1:30010-30000", "127.0.0.1:40000-48192", "127.0.0.1:1-65535", "127.0.0.1:x-9"]
    {
        let r = run(diam().args(["serve", "--listen", range]), 20);
        assert_eq!(r.code(), Some(2), "--listen {range}: {}", r.describe());
        assert!(r.stderr.contains("port range"), "--listen {range}: {}", r.describe());
    }
    // A malformed port is bad input too.
    let r = run(diam().args(["serve", "--listen", "127.0.0.1:5-"]), 20);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    // The same check for the file's listen key.
    let dir = TempDir::new("scale-bad-config");
    let path = dir.path().join("serve.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:9-3\"\n").unwrap();
    let r = run(diam().args(["serve", "--config", path.to_str().unwrap()]), 20);
    assert_eq!(r.code(), Some(2), "{}", r.describe());
    // --threads: 1 to 256.
    for threads in ["0", "257", "x"] {
        let r = run(diam().args(["serve", "--listen", "127.0.0.1:0", &format!("--threads={threads}")]), 20);
        assert_eq!(r.code(), Some(2), "serve --threads {threads}: {}", r.describe());
        let r = run(
            diam().args(["bench", "--peer", "127.0.0.1:9", "--duration", "1", &format!("--threads={threads}")]),
            20,
        );
        assert_eq!(r.code(), Some(2), "bench --threads {threads}: {}", r.describe());
    }
    // --hold wants a positive number of seconds (checked before any dial).
    for hold in ["0", "-1", "nan", "inf", "soon"] {
        let r = run(diam().args(["bench", "--peer", "127.0.0.1:9", "--duration", "1", &format!("--hold={hold}")]), 20);
        assert_eq!(r.code(), Some(2), "--hold {hold}: {}", r.describe());
    }
}

/// The bench waits for every peer's first connection attempt before its
/// clock starts, but a refused peer ends that wait at once: a 1 s run
/// against a serving port and a closed one takes nowhere near the wait's
/// 10 s bound, and the serving peer carries the traffic.
#[test]
fn bench_does_not_wait_for_a_refusing_peer() {
    let (serve, base) = start_serve(1, |base| vec!["--listen".into(), format!("127.0.0.1:{base}")]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let peers = format!("127.0.0.1:{base},127.0.0.1:{closed}");
    let started = std::time::Instant::now();
    let bench = run(diam().args(["bench", "--peer", &peers, "--duration", "1", "--json"]), 60);
    let took = started.elapsed();
    assert!(bench.success(), "diam bench: {}", bench.describe());
    let r = json(bench.stdout.lines().last().expect("the report"));
    assert!(took < Duration::from_secs(8), "the run took {took:?}: {r}");
    let served = &r["per_peer"][format!("127.0.0.1:{base}")];
    assert!(served["answers"].as_u64().unwrap() > 0, "{r}");
    drop(serve);
}
