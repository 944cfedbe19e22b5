//! Runs `examples/unix_echo` as a process against an echo server this test starts,
//! kills and restarts, and checks the acceptance sequence on its JSON lines:
//! errors with growing, capped delays while no server exists; `connected` once it
//! appears; `disconnected` within 50 ms of the kill; `reconnected` after the restart;
//! a clean exit on SIGINT. Once over a Unix socket, once over TCP on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// The example binary. `cargo test` builds examples next to the test binaries; when
/// only this test was built (`cargo test --test example_unix_echo`) or the binary is
/// older than its source, build it in a separate target directory (the outer cargo
/// holds the lock on the main one while tests run).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let built = profile_dir.join("examples").join("unix_echo");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/unix_echo.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if built.exists() && modified(&built) >= modified(&source) {
        return built;
    }
    let target = profile_dir.join("unix-echo-example");
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "diam-link", "--example", "unix_echo", "--target-dir"])
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the example");
    assert!(status.success(), "building the unix_echo example failed");
    target.join("debug/examples/unix_echo")
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The example process; killed if the test fails half-way.
struct Example {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Example {
    fn start(remote: &str) -> Self {
        let mut child = Command::new(example_binary())
            .arg(remote)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the example");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// The next line with `event == name`, within `limit`; earlier lines are kept in `seen`.
    fn expect(&mut self, name: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line["event"] == name {
                        return line;
                    }
                }
                Err(_) => panic!("no {name:?} line within {limit:?}; saw:\n{}", self.dump()),
            }
        }
    }

    fn dump(&self) -> String {
        self.seen.iter().map(Value::to_string).collect::<Vec<_>>().join("\n")
    }

    /// SIGINT, then wait (bounded) for a clean exit.
    fn interrupt(mut self) -> Vec<Value> {
        let status = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "the example ignored SIGINT");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(exit.success(), "exit status {exit}");
        self.seen.extend(self.lines.try_iter());
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the echo server listens.
#[derive(Clone)]
enum Place {
    Unix(PathBuf),
    Tcp(u16),
}

/// A newline-echo server; dropping the handle kills it and every connection at once.
struct EchoServer {
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    async fn start(place: &Place) -> Self {
        async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(stream: S) {
            let (read, mut write) = tokio::io::split(stream);
            let mut lines = tokio::io::BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        }
        let task = match place.clone() {
            Place::Unix(path) => {
                let _ = std::fs::remove_file(&path);
                let listener = tokio::net::UnixListener::bind(&path).unwrap();
                tokio::spawn(async move {
                    let mut conns = JoinSet::new();
                    while let Ok((stream, _)) = listener.accept().await {
                        conns.spawn(echo(stream));
                    }
                })
            }
            Place::Tcp(port) => {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
                tokio::spawn(async move {
                    let mut conns = JoinSet::new();
                    while let Ok((stream, _)) = listener.accept().await {
                        conns.spawn(echo(stream));
                    }
                })
            }
        };
        Self { task }
    }

    /// Kills the server (listener and connections); returns the time of the kill.
    async fn kill(self) -> i64 {
        let at = now_us();
        self.task.abort();
        let _ = self.task.await;
        at
    }
}

fn delay_ms(line: &Value) -> u64 {
    line["delay_ms"].as_u64().unwrap_or_else(|| panic!("no delay_ms in {line}"))
}

async fn acceptance(remote: &str, place: Place) {
    let mut example = tokio::task::block_in_place(|| Example::start(remote));
    let expect = |example: &mut Example, name: &str, secs: u64| {
        tokio::task::block_in_place(|| example.expect(name, Duration::from_secs(secs)))
    };

    // No server yet: error lines whose delays grow (equal jitter keeps the first five
    // steps, 25–50, 50–100, 100–200, 200–400, 400–800 ms, in order) and never pass 1 s.
    let errors: Vec<Value> = (0..5).map(|_| expect(&mut example, "error", 5)).collect();
    let delays: Vec<u64> = errors.iter().map(delay_ms).collect();
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "delays not growing: {delays:?}");
    assert!(delays[0] <= 50 && delays[4] >= 400 && delays.iter().all(|&d| d <= 1000), "{delays:?}");
    assert!(errors.iter().all(|e| e["remote"] == remote && e["ts_us"].as_i64().is_some()));
    let attempts: Vec<u64> = errors.iter().map(|e| e["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);

    // The server appears: connected.
    let server = EchoServer::start(&place).await;
    let connected = expect(&mut example, "connected", 5);
    assert_eq!(connected["remote"], remote);

    // Let a few lines go back and forth, then kill the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = server.kill().await;
    let disconnected = expect(&mut example, "disconnected", 5);
    let lag_us = disconnected["ts_us"].as_i64().unwrap() - killed_at;
    eprintln!("{remote}: delays {delays:?} ms; disconnected {lag_us} µs after the kill");
    assert!((0..50_000).contains(&lag_us), "disconnected {lag_us} µs after the kill");

    // While it is down the client keeps trying; then the server returns.
    expect(&mut example, "error", 5);
    let _server = EchoServer::start(&place).await;
    let reconnected = expect(&mut example, "reconnected", 5);
    assert!(reconnected["attempt"].as_u64().unwrap() >= 1);

    let lines = tokio::task::block_in_place(|| example.interrupt());
    let last_disconnect = lines.iter().rev().find(|l| l["event"] == "disconnected").unwrap();
    assert_eq!(last_disconnect["reason"], "shutdown");
    assert_eq!(lines.last().unwrap()["event"], "stopped");
    if let Place::Unix(path) = &place {
        let _ = std::fs::remove_file(path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_remote_acceptance() {
    let path = std::env::temp_dir().join(format!("dl-example-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    acceptance(&format!("unix:{}", path.display()), Place::Unix(path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_remote_acceptance() {
    // A free port on loopback: bind, note it, release it; the server takes it later.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    acceptance(&format!("127.0.0.1:{port}"), Place::Tcp(port)).await;
}
