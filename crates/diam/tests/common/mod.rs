//! Shared helpers for tests that run real processes: the `diam` binary,
//! freeDiameterd, the Erlang/OTP `diameter` escript, tcpdump and tshark.
//!
//! * [`Proc`]: a child process with its stdout/stderr collected line by line
//!   by reader threads, bounded waits for a line or for the exit, and a
//!   `Drop` that kills its whole process group and reaps it. Every child
//!   also runs under coreutils `timeout`, so even a test process that dies
//!   without unwinding leaves nothing running for long.
//! * [`need`]: peer availability. With `CI=true` or `DIAM_REQUIRE_PEERS=1`
//!   a missing peer fails the test; otherwise the test prints a loud
//!   `SKIPPED` line and returns.
//! * Launchers: [`FreeDiameter`], [`start_erlang_server`],
//!   [`start_erlang_client`], [`start_serve`], the python-diameter client
//!   script ([`py_client_script`], [`python_diameter_available`]);
//!   [`Capture`] (tcpdump on `lo` with a port filter) and [`tshark_pdus`].
//!
//! All traffic is on 127.0.0.1 (freeDiameterd binds 0.0.0.0 because it
//! drops loopback `ListenOn` addresses; the tests only connect to
//! 127.0.0.1).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Upper bound on any child's lifetime (the `timeout` wrapper).
pub(crate) const CHILD_LIFETIME: Duration = Duration::from_secs(150);

// ---------------------------------------------------------------------------
// Paths and availability

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

pub(crate) fn fd_conf_script() -> PathBuf {
    repo_root().join("interop/freediameter/fd-conf.sh")
}

pub(crate) fn erlang_escript() -> PathBuf {
    repo_root().join("interop/erlang/interop_peer.escript")
}

/// The python-diameter client (`interop/python/py_client.py`).
pub(crate) fn py_client_script() -> PathBuf {
    repo_root().join("interop/python/py_client.py")
}

pub(crate) fn diam_bin() -> &'static str {
    env!("CARGO_BIN_EXE_diam")
}

/// A `diam` command.
pub(crate) fn diam() -> Command {
    Command::new(diam_bin())
}

/// Whether an executable named `name` is on `PATH`.
pub(crate) fn in_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else { return false };
    std::env::split_paths(&path)
        .any(|dir| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Peers are mandatory in CI (`CI=true`) or with `DIAM_REQUIRE_PEERS=1`.
pub(crate) fn peers_required() -> bool {
    std::env::var("CI").as_deref() == Ok("true") || std::env::var("DIAM_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// Returns whether the test can go on: `true` when `available`; otherwise
/// panics when peers are required, or prints a loud SKIPPED line (straight
/// to the stderr handle, which the test harness does not capture).
pub(crate) fn need(test: &str, peer: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if peers_required() {
        panic!("{test}: {peer} is not installed, but CI=true or DIAM_REQUIRE_PEERS=1 requires it");
    }
    // One write, so that parallel tests do not interleave their banners.
    let banner = format!(
        "\n==================================================================\n\
         SKIPPED {test}: {peer} not installed\n\
         ==================================================================\n"
    );
    let _ = std::io::stderr().write_all(banner.as_bytes());
    false
}

/// freeDiameterd and its acl_wl extension (fd-conf.sh finds the latter).
pub(crate) fn freediameter_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !in_path("freeDiameterd") || !fd_conf_script().exists() {
            return false;
        }
        let dir = TempDir::new("fd-check");
        let out = run(Command::new(fd_conf_script()).arg(dir.path()).args(["check.fd.test", "3868"]), 10);
        out.success()
    })
}

/// escript plus OTP's diameter application.
pub(crate) fn erlang_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !in_path("escript") || !in_path("erl") || !erlang_escript().exists() {
            return false;
        }
        let mut cmd = Command::new("erl");
        cmd.args(["-noshell", "-eval", "halt(case code:lib_dir(diameter) of {error, _} -> 1; _ -> 0 end)"]);
        run(&mut cmd, 30).success()
    })
}

/// python3 with python-diameter (PyPI `python-diameter`, module
/// `diameter`, whose `diameter.node` the client script uses).
pub(crate) fn python_diameter_available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if !in_path("python3") || !py_client_script().exists() {
            return false;
        }
        run(Command::new("python3").args(["-c", "import diameter.node"]), 30).success()
    })
}

pub(crate) fn tshark_available() -> bool {
    in_path("tshark")
}

pub(crate) fn tcpdump_available() -> bool {
    in_path("tcpdump")
}

// ---------------------------------------------------------------------------
// Temporary directories and ports

/// A fresh directory under the system temp dir, removed on drop (kept, and
/// named on stderr, when the test is panicking).
#[derive(Debug)]
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let p = std::env::temp_dir().join(format!(
            "diam-interop-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(std::io::stderr(), "(kept {} for inspection)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read
/// it, release it), for peers that need a fixed port.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Collected output

#[derive(Debug, Default)]
struct LinesState {
    lines: Vec<String>,
    /// Writers (reader threads) still feeding this buffer.
    open: usize,
}

/// Lines collected from one or more output streams of a child.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lines(Arc<(Mutex<LinesState>, Condvar)>);

impl Lines {
    fn add_writer(&self) {
        self.0 .0.lock().unwrap().open += 1;
    }

    fn push(&self, line: String) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().lines.push(line);
        cv.notify_all();
    }

    fn close_writer(&self) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().open -= 1;
        cv.notify_all();
    }

    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().lines.clone()
    }

    pub(crate) fn text(&self) -> String {
        let mut s = self.snapshot().join("\n");
        s.push('\n');
        s
    }

    pub(crate) fn find(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.0 .0.lock().unwrap().lines.iter().find(|l| pred(l)).cloned()
    }

    pub(crate) fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.0 .0.lock().unwrap().lines.iter().filter(|l| pred(l)).count()
    }

    /// Waits up to `timeout` for a line matching `pred` (including lines
    /// already seen). Returns `None` on timeout or when every stream has
    /// ended without such a line.
    pub(crate) fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut st = m.lock().unwrap();
        loop {
            if let Some(l) = st.lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline || st.open == 0 {
                return None;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits up to `timeout` for every stream to end (EOF).
    pub(crate) fn wait_eof(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut st = m.lock().unwrap();
        while st.open > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }
}

/// Reads `r` line by line into every sink; `echo` prefixes and copies each
/// line to stderr (shown with `--nocapture`).
fn spawn_reader(r: impl Read + Send + 'static, sinks: Vec<Lines>, echo: Option<String>) {
    for s in &sinks {
        s.add_writer();
    }
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                    if let Some(tag) = &echo {
                        eprintln!("[{tag}] {line}");
                    }
                    for s in &sinks {
                        s.push(line.clone());
                    }
                }
            }
        }
        for s in &sinks {
            s.close_writer();
        }
    });
}

// ---------------------------------------------------------------------------
// Processes

/// Sends `signal` (a name such as `TERM`) to `pid`; a negative pid names a
/// process group.
pub(crate) fn send_signal(pid: i64, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A running child process (under `timeout`, in its own process group).
///
/// Dropping it kills the whole group with SIGKILL and reaps the child
/// (bounded); signals sent with [`Proc::signal`] go to the `timeout`
/// wrapper, which forwards them to the command.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    /// stdout lines.
    pub(crate) out: Lines,
    /// stderr lines.
    pub(crate) err: Lines,
    /// stdout and stderr lines, interleaved as they arrived.
    pub(crate) all: Lines,
    status: Option<ExitStatus>,
    started: Instant,
}

impl Proc {
    /// Starts `cmd` (stdin null, stdout/stderr collected) under
    /// `timeout -k 5 LIFETIME`. With `echo`, output lines are copied to
    /// stderr prefixed with the name.
    pub(crate) fn spawn(name: &str, cmd: &Command, echo: bool) -> std::io::Result<Proc> {
        let mut w = Command::new("timeout");
        w.args(["-k", "5", &CHILD_LIFETIME.as_secs().to_string()]);
        w.arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => w.env(k, v),
                None => w.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            w.current_dir(d);
        }
        w.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = w.spawn()?;
        let (out, err, all) = (Lines::default(), Lines::default(), Lines::default());
        let tag = |s: &str| echo.then(|| format!("{name} {s}"));
        spawn_reader(child.stdout.take().unwrap(), vec![out.clone(), all.clone()], tag("out"));
        spawn_reader(child.stderr.take().unwrap(), vec![err.clone(), all.clone()], tag("err"));
        Ok(Proc { name: name.to_string(), child, out, err, all, status: None, started: Instant::now() })
    }

    pub(crate) fn pid(&self) -> i64 {
        i64::from(self.child.id())
    }

    pub(crate) fn signal(&self, signal: &str) {
        if self.status.is_none() {
            send_signal(self.pid(), signal);
        }
    }

    /// The exit status, if it has exited.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits up to `timeout` for the exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// Kills the process group and reaps the child (bounded). The group is
    /// only signalled while its leader is not yet reaped, so its id cannot
    /// have been reused.
    pub(crate) fn kill(&mut self) {
        if self.status.is_none() {
            send_signal(-self.pid(), "KILL");
            let _ = self.child.kill();
            self.wait_exit(Duration::from_secs(5));
        }
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Everything it printed, for failure messages.
    pub(crate) fn dump(&self) -> String {
        format!("--- {} stdout ---\n{}--- {} stderr ---\n{}", self.name, self.out.text(), self.name, self.err.text())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A finished command.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

impl Finished {
    pub(crate) fn success(&self) -> bool {
        self.status.success()
    }

    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "exit {:?} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status.code(),
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` to completion within `secs` seconds; panics (after killing
/// it) when it takes longer or cannot start.
pub(crate) fn run(cmd: &mut Command, secs: u64) -> Finished {
    let what = format!("{:?}", cmd);
    let mut p = Proc::spawn("run", cmd, false).unwrap_or_else(|e| panic!("starting {what}: {e}"));
    match p.wait_exit(Duration::from_secs(secs)) {
        Some(status) => {
            p.all.wait_eof(Duration::from_secs(5));
            Finished { status, stdout: p.out.text(), stderr: p.err.text(), elapsed: p.elapsed() }
        }
        None => {
            p.kill();
            panic!("{what} did not finish within {secs} s\n{}", p.dump());
        }
    }
}

// ---------------------------------------------------------------------------
// freeDiameterd

/// A running freeDiameterd, configured by `interop/freediameter/fd-conf.sh`.
#[derive(Debug)]
pub(crate) struct FreeDiameter {
    pub(crate) proc: Proc,
    pub(crate) port: u16,
    pub(crate) identity: String,
    pub(crate) conf: PathBuf,
}

impl FreeDiameter {
    /// Writes the configuration into `dir` (identity, a free port and the
    /// extra fd-conf.sh options such as `--allow fd.test`, `--connect ID:PORT`)
    /// and starts the daemon; returns once it logged "daemon initialized".
    /// Retries with another port when the first one was taken meanwhile.
    pub(crate) fn start(dir: &Path, identity: &str, conf_args: &[&str]) -> FreeDiameter {
        Self::start_on(dir, identity, None, conf_args)
    }

    /// [`start`](Self::start) on `port` when given (no retry on another port).
    pub(crate) fn start_on(dir: &Path, identity: &str, port: Option<u16>, conf_args: &[&str]) -> FreeDiameter {
        let mut last = String::new();
        for attempt in 0..3 {
            let port = port.unwrap_or_else(free_port);
            let out =
                run(Command::new(fd_conf_script()).arg(dir).arg(identity).arg(port.to_string()).args(conf_args), 10);
            assert!(out.success(), "fd-conf.sh failed: {}", out.describe());
            let conf = PathBuf::from(out.stdout.trim());
            let mut cmd = Command::new("freeDiameterd");
            cmd.arg("-c").arg(&conf);
            let proc = Proc::spawn(&format!("fd:{identity}"), &cmd, false).expect("starting freeDiameterd");
            let ready = proc.all.wait_for(Duration::from_secs(15), |l| l.contains("daemon initialized"));
            if ready.is_some() {
                return FreeDiameter { proc, port, identity: identity.to_string(), conf };
            }
            last = format!("attempt {attempt} on port {port}:\n{}", proc.dump());
        }
        panic!("freeDiameterd did not start\n{last}");
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn log(&self) -> &Lines {
        &self.proc.all
    }

    /// Waits for the log line of `peer` entering STATE_OPEN.
    pub(crate) fn wait_open(&self, peer: &str, timeout: Duration) -> Option<String> {
        let quoted = format!("'{peer}'");
        self.log().wait_for(timeout, |l| l.contains("-> 'STATE_OPEN'") && l.contains(&quoted))
    }
}

// ---------------------------------------------------------------------------
// Erlang/OTP diameter escript

fn escript_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("escript");
    cmd.arg(erlang_escript()).args(args);
    cmd
}

/// Starts `interop_peer.escript server 0 ARGS` and waits for `READY <port>`.
pub(crate) fn start_erlang_server(args: &[&str]) -> (Proc, u16) {
    let mut all = vec!["server", "0", "--max-seconds", "100"];
    all.extend_from_slice(args);
    let proc = Proc::spawn("erl-server", &escript_cmd(&all), false).expect("starting escript");
    let line = proc.out.wait_for(Duration::from_secs(30), |l| l.starts_with("READY "));
    let Some(line) = line else { panic!("the Erlang server did not print READY\n{}", proc.dump()) };
    let port = line["READY ".len()..].trim().parse().unwrap_or_else(|_| panic!("bad READY line: {line}"));
    (proc, port)
}

/// Starts `interop_peer.escript client PORT N ARGS` (does not wait).
pub(crate) fn start_erlang_client(port: u16, n: u32, args: &[&str]) -> Proc {
    let (port, n) = (port.to_string(), n.to_string());
    let mut all = vec!["client", &port, &n, "--max-seconds", "100"];
    all.extend_from_slice(args);
    Proc::spawn("erl-client", &escript_cmd(&all), false).expect("starting escript")
}

// ---------------------------------------------------------------------------
// diam serve

/// Starts `diam serve --listen 127.0.0.1:0 ARGS` and waits for its
/// `{"event":"listening","addr":...}` line.
pub(crate) fn start_serve(args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = diam();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(args);
    let proc = Proc::spawn("diam-serve", &cmd, false).expect("starting diam serve");
    let line = proc.out.wait_for(Duration::from_secs(15), |l| l.contains("\"listening\""));
    let Some(line) = line else { panic!("diam serve did not report listening\n{}", proc.dump()) };
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("diam serve's first line is not JSON ({e}): {line}"));
    assert_eq!(v["event"], "listening", "{line}");
    let addr: SocketAddr = v["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("diam serve's listening line has no addr: {line}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "diam serve listens on {addr}");
    (proc, addr)
}

/// Parses one JSON object printed on stdout.
pub(crate) fn json_stdout(f: &Finished) -> serde_json::Value {
    let line = f.stdout.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout is not a JSON object ({e})\n{}", f.describe()))
}

// ---------------------------------------------------------------------------
// Packet capture and tshark

/// tcpdump on `lo`, restricted to the given TCP ports.
#[derive(Debug)]
pub(crate) struct Capture {
    proc: Proc,
    pub(crate) path: PathBuf,
}

impl Capture {
    /// Starts tcpdump and waits until it is listening. An error (e.g. no
    /// permission to capture) is returned, not raised.
    pub(crate) fn start(dir: &Path, ports: &[u16]) -> Result<Capture, String> {
        let path = dir.join("capture.pcap");
        let filter = ports.iter().map(|p| format!("tcp port {p}")).collect::<Vec<_>>().join(" or ");
        let mut cmd = Command::new("tcpdump");
        // --immediate-mode: without it packets wait in the kernel ring until a
        // block fills or times out, and a SIGINT loses whatever is still there.
        cmd.args(["-i", "lo", "-n", "-U", "--immediate-mode", "-s", "0", "-w"]).arg(&path).arg(&filter);
        let mut proc = Proc::spawn("tcpdump", &cmd, false).map_err(|e| format!("starting tcpdump: {e}"))?;
        if proc.err.wait_for(Duration::from_secs(10), |l| l.contains("listening on")).is_none() {
            proc.kill();
            return Err(format!("tcpdump did not start capturing\n{}", proc.dump()));
        }
        // "listening on" is printed once the handle is active; a short grace
        // for the kernel filter.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Capture { proc, path })
    }

    /// Stops the capture (SIGINT, bounded) and returns the pcap path.
    pub(crate) fn stop(mut self) -> PathBuf {
        // Let the last segments reach the socket buffer.
        std::thread::sleep(Duration::from_millis(300));
        self.proc.signal("INT");
        let status = self.proc.wait_exit(Duration::from_secs(5));
        assert!(status.is_some(), "tcpdump did not stop on SIGINT\n{}", self.proc.dump());
        self.path.clone()
    }
}

/// Runs tshark on a capture, decoding the ports as Diameter.
pub(crate) fn tshark(pcap: &Path, ports: &[u16], args: &[&str]) -> Finished {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap);
    for p in ports {
        cmd.arg("-d").arg(format!("tcp.port=={p},diameter"));
    }
    cmd.args(args);
    let out = run(&mut cmd, 60);
    assert!(out.success(), "tshark failed: {}", out.describe());
    out
}

/// One Diameter PDU as tshark decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pdu {
    pub(crate) frame: u32,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) code: u32,
    pub(crate) request: bool,
    pub(crate) origin_host: String,
}

fn ts_bool(s: &str) -> bool {
    matches!(s, "1" | "True" | "true")
}

/// Every Diameter PDU in the capture (a frame may carry several).
pub(crate) fn tshark_pdus(pcap: &Path, ports: &[u16]) -> Vec<Pdu> {
    let out = tshark(
        pcap,
        ports,
        &[
            "-Y",
            "diameter",
            "-T",
            "fields",
            "-E",
            "separator=/t",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
            "-e",
            "frame.number",
            "-e",
            "tcp.srcport",
            "-e",
            "tcp.dstport",
            "-e",
            "diameter.cmd.code",
            "-e",
            "diameter.flags.request",
            "-e",
            "diameter.Origin-Host",
        ],
    );
    let mut pdus = Vec::new();
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        let codes: Vec<&str> = get(3).split(',').collect();
        let reqs: Vec<&str> = get(4).split(',').collect();
        let hosts: Vec<&str> = get(5).split(',').collect();
        for (i, code) in codes.iter().enumerate() {
            pdus.push(Pdu {
                frame: get(0).parse().unwrap_or(0),
                src_port: get(1).parse().unwrap_or(0),
                dst_port: get(2).parse().unwrap_or(0),
                code: code.trim().parse().unwrap_or_else(|_| panic!("bad tshark line: {line}")),
                request: ts_bool(reqs.get(i).copied().unwrap_or("")),
                // Origin-Host counts are per frame; with several PDUs in one
                // frame they line up only when every PDU has one.
                origin_host: if hosts.len() == codes.len() { hosts[i].to_string() } else { String::new() },
            });
        }
    }
    pdus
}

/// Runs `diam ARGS` to completion (bounded).
pub(crate) fn run_diam(args: &[&str], secs: u64) -> Finished {
    run(diam().args(args), secs)
}

// ---------------------------------------------------------------------------
// Captures and metrics

/// Whether tcpdump can capture here; in CI it must. `None` means: go on
/// without a capture (already reported on stderr).
pub(crate) fn start_capture(test: &str, dir: &Path, ports: &[u16]) -> Option<Capture> {
    if !tcpdump_available() || !tshark_available() {
        let missing = if tcpdump_available() { "tshark" } else { "tcpdump" };
        if peers_required() {
            panic!("{test}: {missing} is not installed, but CI=true or DIAM_REQUIRE_PEERS=1 requires it");
        }
        eprintln!("NOTE {test}: {missing} not installed; checking without a packet capture");
        return None;
    }
    match Capture::start(dir, ports) {
        Ok(c) => Some(c),
        Err(e) if peers_required() => panic!("{test}: cannot capture on lo: {e}"),
        Err(e) => {
            eprintln!("NOTE {test}: cannot capture on lo ({e}); checking without a packet capture");
            None
        }
    }
}

/// No frame matches the tshark display `filter` (e.g. `_ws.malformed`).
pub(crate) fn assert_no_frames(test: &str, pcap: &Path, ports: &[u16], filter: &str) {
    let bad = tshark(pcap, ports, &["-Y", filter]);
    assert!(bad.stdout.trim().is_empty(), "{test}: tshark finds frames matching `{filter}`:\n{}", bad.stdout);
}

/// GET /metrics over HTTP/1.0; the body.
pub(crate) fn scrape_metrics(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !(head.starts_with("HTTP/1.") && head.contains(" 200 ")) {
        return Err(std::io::Error::other(format!("not a 200 response: {head}")));
    }
    Ok(body.to_string())
}
