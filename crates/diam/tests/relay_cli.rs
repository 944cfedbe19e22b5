//! `diam relay` and `--config`: the README's full configuration example
//! runs (TLS, peers, every route kind), bad routes and files exit 2, and a
//! flag overrides the file.

mod common;

#[path = "../../diam-client/tests/common/certs.rs"]
mod certs;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

fn listening(proc: &Proc, what: &str) -> SocketAddr {
    let line = proc.out.wait_for(Duration::from_secs(20), |l| l.contains("\"listening\""));
    let Some(line) = line else { panic!("{what} did not report listening\n{}", proc.dump()) };
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line is JSON");
    v["addr"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no addr: {line}"))
}

/// The first ```toml block after the `### The configuration file` heading.
fn readme_config() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let at = readme.find("### The configuration file").expect("README has the configuration section");
    let rest = &readme[at..];
    let start = rest.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = rest[start..].find("```").expect("the block ends");
    rest[start..start + end].to_string()
}

fn send(addr: SocketAddr, realm: &str) -> serde_json::Value {
    json_stdout(&send_to(&addr.to_string(), realm, &[]))
}

fn send_to(peer: &str, realm: &str, extra: &[String]) -> Finished {
    let mut args: Vec<String> = [
        "send",
        "--peer",
        peer,
        "--app",
        "4",
        "--command",
        "272",
        "--avp",
        "Session-Id=relay-cli;1",
        "--avp",
        &format!("Destination-Realm={realm}"),
        "--avp",
        "Auth-Application-Id=4",
        "--avp",
        "Service-Context-Id=32251@3gpp.org",
        "--avp",
        "CC-Request-Type=1",
        "--avp",
        "CC-Request-Number=0",
        "--timeout-ms",
        "8000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run_diam(&refs, 30)
}

fn result_code(answer: &serde_json::Value) -> Option<u64> {
    answer["avps"].as_array()?.iter().find(|a| a["code"] == 268)?["value"].as_u64()
}

fn avp_values(answer: &serde_json::Value, code: u64) -> Vec<String> {
    answer["avps"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["code"] == code).map(|a| a["value"].to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn the_readme_configuration_runs_and_its_routes_answer() {
    let dir = TempDir::new("relay-readme");
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let pki = certs::Pki::new("Relay Test CA");
    std::fs::write(tls.join("ca.pem"), &pki.ca_pem).unwrap();
    pki.leaf(&["dra.example.net"]).write(&tls, "dra");
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, readme_config()).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = diam();
    // Flags override the file: our own ports instead of the example's.
    cmd.args(["relay", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--metrics", &metrics])
        .args(["--allow", "diam-client.localdomain"]);
    let mut relay = Proc::spawn("diam-relay", &cmd, false).expect("starting diam relay");
    let addr = listening(&relay, "diam relay");
    let line = relay.out.find(|l| l.contains("\"listening\"")).unwrap();
    assert!(line.contains("tls_addr"), "the TLS listener from the file: {line}");
    assert!(!line.contains(":3868\""), "--listen overrides the file's listen: {line}");

    // A redirect route answers 3006 itself, with its Redirect-Host.
    let a = send(addr, "visited.roaming.example");
    assert_eq!(result_code(&a), Some(3006), "{a}");
    assert_eq!(a["flags"]["error"], true, "{a}");
    assert_eq!(avp_values(&a, 292), vec!["\"aaa://dra.roaming.example:3868\"".to_string()], "{a}");
    assert_eq!(avp_values(&a, 261), vec!["2".to_string()], "Redirect-Host-Usage ALL_REALM: {a}");
    assert_eq!(avp_values(&a, 262), vec!["600".to_string()], "{a}");
    assert_eq!(avp_values(&a, 294), vec!["\"dra.example.net\"".to_string()], "Error-Reporting-Host: {a}");
    // A relay route whose peers are not up: 3002 from the agent.
    let a = send(addr, "ocs.example.net");
    assert_eq!(result_code(&a), Some(3002), "{a}");
    // Metrics carry the local answers by route and Result-Code.
    let body = scrape_metrics(metrics.parse().unwrap()).unwrap_or_else(|e| panic!("scraping the relay: {e}"));
    assert!(
        body.lines().any(|l| l.starts_with("diam_relay_local_answers_total")
            && l.contains("route=\"*.roaming.example\"")
            && l.contains("result_code=\"3006\"")),
        "{body}"
    );
    relay.signal("TERM");
    assert!(relay.wait_exit(Duration::from_secs(15)).is_some(), "relay did not stop\n{}", relay.dump());
    let stopped = relay.out.find(|l| l.contains("\"stopped\"")).unwrap_or_else(|| panic!("{}", relay.dump()));
    let v: serde_json::Value = serde_json::from_str(&stopped).unwrap();
    assert_eq!(v["local_answers"], 2, "{stopped}");
    assert_eq!(v["forwarded"], 0, "{stopped}");
}

#[test]
fn relay_forwards_to_serve_and_serve_reads_its_config() {
    let dir = TempDir::new("serve-config");
    let config = dir.path().join("serve.toml");
    std::fs::write(
        &config,
        "origin_host = \"ocs.localdomain\"\nlisten = \"127.0.0.1:0\"\n[serve]\nresult_code = 5012\n",
    )
    .unwrap();
    let mut cmd = diam();
    cmd.args(["serve", "--config"]).arg(&config);
    let mut serve = Proc::spawn("diam-serve", &cmd, false).unwrap();
    let serve_addr = listening(&serve, "diam serve");
    let mut cmd = diam();
    // On a current-thread runtime (--threads 1): every peer task on one thread.
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--threads", "1", "--route", &format!("LocalDomain:4={serve_addr}")]);
    let mut relay = Proc::spawn("diam-relay", &cmd, false).unwrap();
    let relay_addr = listening(&relay, "diam relay");
    relay
        .out
        .wait_for(Duration::from_secs(20), |l| l.contains("\"peer_up\"") && l.contains("ocs.localdomain"))
        .unwrap_or_else(|| panic!("the relay did not reach serve\n{}", relay.dump()));
    // The file's result code, and its identity, through the relay.
    let a = send(relay_addr, "localdomain");
    assert_eq!(result_code(&a), Some(5012), "{a}");
    assert_eq!(avp_values(&a, 264), vec!["\"ocs.localdomain\"".to_string()], "{a}");
    // No route for another realm (matching is per realm and application).
    let a = send(relay_addr, "other.example");
    assert_eq!(result_code(&a), Some(3003), "{a}");
    assert_eq!(avp_values(&a, 294), vec!["\"diam-relay.localdomain\"".to_string()], "{a}");
    relay.signal("TERM");
    serve.signal("TERM");
    assert!(relay.wait_exit(Duration::from_secs(15)).is_some());
    assert!(serve.wait_exit(Duration::from_secs(15)).is_some());
    let stopped: serde_json::Value =
        serde_json::from_str(&relay.out.find(|l| l.contains("\"stopped\"")).unwrap()).unwrap();
    let served: serde_json::Value =
        serde_json::from_str(&serve.out.find(|l| l.contains("\"stopped\"")).unwrap()).unwrap();
    assert_eq!(stopped["forwarded"], 1, "{stopped}");
    assert_eq!(stopped["answered"], 1, "{stopped}");
    assert_eq!(stopped["local_answers"], 1, "{stopped}");
    assert_eq!(served["requests"], 1, "counted by serve itself: {served}");

    // A flag overrides the file.
    let mut cmd = diam();
    cmd.args(["serve", "--config"]).arg(&config).args(["--result-code", "2001"]);
    let mut serve = Proc::spawn("diam-serve", &cmd, false).unwrap();
    let addr = listening(&serve, "diam serve");
    assert_eq!(result_code(&send(addr, "localdomain")), Some(2001));
    serve.signal("TERM");
    assert!(serve.wait_exit(Duration::from_secs(15)).is_some());
}

/// SIGHUP to the relay itself: `Proc` runs it under `timeout`, which
/// would forward the signal but then arm its kill-after timer.
fn hangup(proc: &Proc) {
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", proc.pid())).unwrap_or_default();
    let pid: i64 = children.split_whitespace().next().and_then(|p| p.parse().ok()).expect("the relay under timeout");
    send_signal(pid, "HUP");
}

/// SIGHUP re-reads the file's routes: traffic moves to the new upstream,
/// and a file that does not parse keeps the old table.
#[test]
fn sighup_reloads_the_routes_of_the_file() {
    let dir = TempDir::new("relay-reload");
    let mut serves = Vec::new();
    for id in ["a.up.test", "b.up.test"] {
        let mut cmd = diam();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--origin-host", id, "--origin-realm", "up.test"]);
        let p = Proc::spawn(id, &cmd, false).unwrap();
        let addr = listening(&p, id);
        serves.push((p, addr));
    }
    let config = dir.path().join("relay.toml");
    let write = |to: SocketAddr| {
        std::fs::write(
            &config,
            format!("listen = \"127.0.0.1:0\"\n[[routes]]\nrealm = \"up.test\"\npeers = [\"{to}\"]\n"),
        )
        .unwrap()
    };
    write(serves[0].1);
    let mut cmd = diam();
    cmd.args(["relay", "--config"]).arg(&config);
    let mut relay = Proc::spawn("diam-relay", &cmd, false).unwrap();
    let addr = listening(&relay, "diam relay");
    relay
        .out
        .wait_for(Duration::from_secs(20), |l| l.contains("\"peer_up\"") && l.contains("a.up.test"))
        .unwrap_or_else(|| panic!("{}", relay.dump()));
    let origin = |a: &serde_json::Value| avp_values(a, 264);
    assert_eq!(origin(&send(addr, "up.test")), vec!["\"a.up.test\"".to_string()]);
    write(serves[1].1);
    hangup(&relay);
    relay
        .out
        .wait_for(Duration::from_secs(20), |l| l.contains("\"routes_reloaded\""))
        .unwrap_or_else(|| panic!("no reload\n{}", relay.dump()));
    relay
        .out
        .wait_for(Duration::from_secs(20), |l| l.contains("\"peer_up\"") && l.contains("b.up.test"))
        .unwrap_or_else(|| panic!("{}", relay.dump()));
    assert_eq!(origin(&send(addr, "up.test")), vec!["\"b.up.test\"".to_string()]);
    // A broken file keeps the table.
    std::fs::write(&config, "listen = [\n").unwrap();
    hangup(&relay);
    relay
        .err
        .wait_for(Duration::from_secs(20), |l| l.contains("keeping the old ones"))
        .unwrap_or_else(|| panic!("{}", relay.dump()));
    assert_eq!(origin(&send(addr, "up.test")), vec!["\"b.up.test\"".to_string()]);
    relay.signal("TERM");
    assert!(relay.wait_exit(Duration::from_secs(15)).is_some());
    for (mut p, _) in serves {
        p.signal("TERM");
        assert!(p.wait_exit(Duration::from_secs(15)).is_some());
    }
}

/// Agents face other operators: TLS on both sides of the relay, and only
/// the allowed client gets in.
#[test]
fn relay_over_tls_admits_only_the_allowed_client() {
    let dir = TempDir::new("relay-tls");
    let pki = certs::Pki::new("Relay TLS CA");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let tls = |id: &str| -> Vec<String> {
        let (cert, key) = pki.leaf(&[id]).write(dir.path(), id);
        vec![
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
            "--tls-ca".into(),
            ca.display().to_string(),
        ]
    };
    let mut cmd = diam();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--origin-host", "ocs.tls.test"])
        .args(["--origin-realm", "tls.test", "--allow", "relay.tls.test"])
        .args(tls("ocs.tls.test"));
    let mut serve = Proc::spawn("diam-serve", &cmd, false).unwrap();
    listening(&serve, "diam serve");
    let line = serve.out.find(|l| l.contains("\"listening\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let serve_tls = v["tls_addr"].as_str().unwrap().to_string();
    let mut cmd = diam();
    cmd.args(["relay", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"])
        .args(["--origin-host", "relay.tls.test", "--origin-realm", "tls.test", "--allow", "good.client.test"])
        .args(["--route", &format!("tls.test=ocs.tls.test=aaas://{serve_tls}")])
        .args(tls("relay.tls.test"));
    let mut relay = Proc::spawn("diam-relay", &cmd, false).unwrap();
    listening(&relay, "diam relay");
    let line = relay.out.find(|l| l.contains("\"listening\"")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let relay_tls = v["tls_addr"].as_str().unwrap().to_string();
    relay
        .out
        .wait_for(Duration::from_secs(20), |l| l.contains("\"peer_up\"") && l.contains("\"tls\""))
        .unwrap_or_else(|| panic!("the relay did not reach serve over TLS\n{}", relay.dump()));
    let peer = format!("relay.tls.test=aaas://{relay_tls}");
    let mut good = tls("good.client.test");
    good.extend([
        "--origin-host".to_string(),
        "good.client.test".into(),
        "--origin-realm".into(),
        "client.test".into(),
    ]);
    let f = send_to(&peer, "tls.test", &good);
    let a = json_stdout(&f);
    assert_eq!(result_code(&a), Some(2001), "{}", f.describe());
    assert_eq!(avp_values(&a, 264), vec!["\"ocs.tls.test\"".to_string()], "{a}");
    // A client with a valid certificate but not on the allow-list: 3010.
    let mut other = tls("other.client.test");
    other.extend([
        "--origin-host".to_string(),
        "other.client.test".into(),
        "--origin-realm".into(),
        "client.test".into(),
    ]);
    let f = send_to(&peer, "tls.test", &other);
    assert_ne!(f.code(), Some(0), "{}", f.describe());
    assert!(f.stderr.contains("3010"), "{}", f.describe());
    relay.signal("TERM");
    serve.signal("TERM");
    assert!(relay.wait_exit(Duration::from_secs(15)).is_some());
    assert!(serve.wait_exit(Duration::from_secs(15)).is_some());
    let stopped: serde_json::Value =
        serde_json::from_str(&relay.out.find(|l| l.contains("\"stopped\"")).unwrap()).unwrap();
    assert_eq!(stopped["forwarded"], 1, "{stopped}");
    assert_eq!(stopped["answered"], 1, "{stopped}");
}

#[test]
fn bad_routes_and_files_exit_2() {
    let dir = TempDir::new("relay-bad");
    let bad_key = dir.path().join("bad-key.toml");
    std::fs::write(&bad_key, "listen = \"127.0.0.1:0\"\nlisten_on = \"x\"\n").unwrap();
    let bad_action = dir.path().join("bad-action.toml");
    std::fs::write(
        &bad_action,
        "listen = \"127.0.0.1:0\"\n[[routes]]\nrealm = \"a.b\"\naction = \"teleport\"\npeers = [\"1.2.3.4:1\"]\n",
    )
    .unwrap();
    let relay_set = dir.path().join("relay-set.toml");
    std::fs::write(
        &relay_set,
        "listen = \"127.0.0.1:0\"\n[[routes]]\nrealm = \"a.b\"\npeers = [\"127.0.0.1:1\"]\nset = [\"User-Name=x\"]\n",
    )
    .unwrap();
    let serve_routes = dir.path().join("serve-routes.toml");
    std::fs::write(&serve_routes, "listen = \"127.0.0.1:0\"\n[[routes]]\nrealm = \"a.b\"\npeers = [\"127.0.0.1:1\"]\n")
        .unwrap();
    let p = |p: &std::path::Path| p.display().to_string();
    let cases: Vec<Vec<String>> = vec![
        vec!["relay".into(), "--listen".into(), "127.0.0.1:0".into()],
        vec!["relay".into(), "--route".into(), "a.b=127.0.0.1:1".into()],
        vec!["relay".into(), "--listen".into(), "127.0.0.1:0".into(), "--route".into(), "a.b".into()],
        vec!["relay".into(), "--listen".into(), "127.0.0.1:0".into(), "--route".into(), "a.b=".into()],
        vec!["relay".into(), "--listen".into(), "127.0.0.1:0".into(), "--route".into(), "*.=127.0.0.1:1".into()],
        vec!["relay".into(), "--listen".into(), "127.0.0.1:0".into(), "--route".into(), "a.b:x=127.0.0.1:1".into()],
        vec!["relay".into(), "--listen".into(), "127.0.0.1:0".into(), "--route".into(), "a.b=bad host!".into()],
        vec!["relay".into(), "--config".into(), p(&bad_key)],
        vec!["relay".into(), "--config".into(), p(&bad_action)],
        vec!["relay".into(), "--config".into(), p(&relay_set)],
        vec!["relay".into(), "--config".into(), p(&dir.path().join("missing.toml"))],
        vec!["serve".into(), "--config".into(), p(&serve_routes)],
        vec!["serve".into()],
        vec![
            "relay".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--route".into(),
            "a.b=127.0.0.1:1".into(),
            "--threads".into(),
            "0".into(),
        ],
    ];
    for args in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let f = run_diam(&refs, 20);
        assert_eq!(f.code(), Some(2), "diam {}: expected exit 2\n{}", args.join(" "), f.describe());
        assert!(f.stderr.contains("error"), "{}", f.describe());
    }
}
