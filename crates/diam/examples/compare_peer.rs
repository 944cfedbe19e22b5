//! The non-diam halves of the separate-process comparison
//! (`scripts/bench-compare.sh`): a raw TCP echo, the physical reference, and
//! the `diameter` crate 0.7.1 (diameter-rs) running the standard workload,
//! each as its own server and client process.
//!
//! ```text
//! compare_peer raw-server --listen 127.0.0.1:0
//! compare_peer raw-client --peer 127.0.0.1:PORT --inflight N --duration S [--warmup-ms M]
//! compare_peer drs-server --listen 127.0.0.1:0
//! compare_peer drs-client --peer 127.0.0.1:PORT --inflight N --duration S [--warmup-ms M]
//! ```
//!
//! Servers print `{"event":"listening","addr":"127.0.0.1:PORT"}` once bound
//! and run until killed (SIGTERM's default action). Clients print one JSON
//! line: `{"impl":..,"inflight":N,"rps":..,"p50":..,"p99":..,"answers":..,
//! "failures":..}`, latencies in µs, counted after the warm-up only.
//! Everything binds and connects to 127.0.0.1 only.
//!
//! * raw: blocking std::net, no parsing. The server echoes whatever it reads
//!   (a thread per connection, 64 KiB reads, `write_all`). The client keeps
//!   N fixed 200-byte frames outstanding on one connection: it writes N
//!   frames at once, then on each read counts the frames completed (the
//!   echo keeps their order, so a FIFO of send instants gives each one's
//!   latency) and writes as many new frames in one write. With N = 1 this
//!   is a plain blocking ping-pong.
//! * diameter-rs: the code of `benches/support/drs.rs` (shared with the
//!   in-process `benches/compare.rs`) on tokio's default multi-thread
//!   runtime, as its users run it; the client's N closed-loop workers share
//!   its `DiameterClient` behind a mutex (`support/closed_loop.rs`).
//!
//! The unit tests below (frame accounting, and a short end-to-end run of
//! both pairs inside one test process) run with `cargo test -p diam`
//! (`test = true` in Cargo.toml) or `cargo test -p diam --examples`.

#[path = "../benches/support/closed_loop.rs"]
mod closed_loop;
#[path = "../benches/support/drs.rs"]
mod drs;

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use closed_loop::SendFn;
use serde_json::json;

/// Size of a raw frame: about a standard CCR's.
const FRAME: usize = 200;
/// The echo server's read buffer.
const ECHO_BUF: usize = 64 * 1024;
/// Most raw frames in flight: N × 200 bytes must fit the loopback socket
/// buffers on both sides, or the client's write and the server's write
/// could block each other.
const MAX_RAW_INFLIGHT: usize = 1024;
/// A raw echo (or a diameter-rs answer) that has not come by then is a
/// failure of the run.
const STALL: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(about = "Raw TCP echo and diameter-rs peers for scripts/bench-compare.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Blocking TCP echo, a thread per connection.
    RawServer(ServerArgs),
    /// Fixed 200-byte frames, N outstanding, over one connection.
    RawClient(ClientArgs),
    /// diameter-rs's DiameterServer answering the standard CCA.
    DrsServer(ServerArgs),
    /// diameter-rs's DiameterClient, N closed-loop workers.
    DrsClient(ClientArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// 127.0.0.1:PORT (port 0 picks one)
    #[arg(long)]
    listen: SocketAddr,
}

#[derive(Args)]
struct ClientArgs {
    /// 127.0.0.1:PORT
    #[arg(long)]
    peer: SocketAddr,
    /// Requests (frames) outstanding
    #[arg(long)]
    inflight: usize,
    /// Measurement window, seconds
    #[arg(long)]
    duration: f64,
    /// Warm-up before the window, ms
    #[arg(long, default_value_t = 500)]
    warmup_ms: u64,
}

/// What a client run reports.
#[derive(Debug)]
struct Report {
    rps: f64,
    p50: u64,
    p99: u64,
    answers: u64,
    failures: u64,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::RawServer(a) => loopback(a.listen).and_then(|addr| {
            let listener = TcpListener::bind(addr)?;
            announce(listener.local_addr()?)?;
            raw_serve(listener, &AtomicU64::new(0))
        }),
        Cmd::DrsServer(a) => loopback(a.listen).and_then(drs_server),
        Cmd::RawClient(a) => client_args(&a).and_then(|(peer, window, warmup)| {
            let r = raw_client(peer, a.inflight, warmup, window)?;
            eprintln!(
                "compare_peer raw-client: {} frames sent, {} echoed back, {} outstanding at the end",
                r.sent, r.completed, r.outstanding
            );
            print_report("raw-tcp", a.inflight, &r.report)
        }),
        Cmd::DrsClient(a) => client_args(&a).and_then(|(peer, window, warmup)| {
            let rt = tokio::runtime::Runtime::new()?;
            let r = rt.block_on(drs_client(peer, a.inflight, warmup, window))?;
            print_report("diameter-rs", a.inflight, &r)?;
            // Workers stuck on a lost answer were aborted; do not wait for
            // the reader task blocked on the socket.
            rt.shutdown_background();
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("compare_peer: {e}");
        std::process::exit(1);
    }
}

/// Refuses anything but 127.0.0.1: this tool only measures loopback.
fn loopback(addr: SocketAddr) -> io::Result<SocketAddr> {
    if addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        Ok(addr)
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: only 127.0.0.1 is allowed")))
    }
}

fn client_args(a: &ClientArgs) -> io::Result<(SocketAddr, Duration, Duration)> {
    let peer = loopback(a.peer)?;
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
    if a.inflight == 0 {
        return Err(invalid("--inflight must be at least 1"));
    }
    let window = Duration::try_from_secs_f64(a.duration)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| invalid("--duration must be a positive number of seconds"))?;
    Ok((peer, window, Duration::from_millis(a.warmup_ms)))
}

fn announce(addr: SocketAddr) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{}", json!({"event": "listening", "addr": addr.to_string()}))?;
    out.flush()
}

fn print_report(name: &str, inflight: usize, r: &Report) -> io::Result<()> {
    let line = json!({
        "impl": name,
        "inflight": inflight,
        "rps": (r.rps * 10.0).round() / 10.0,
        "p50": r.p50,
        "p99": r.p99,
        "answers": r.answers,
        "failures": r.failures,
    });
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

// ------------------------------------------------------------------- raw

/// Accepts forever; each connection echoes on a thread of its own. Bytes
/// read (and then echoed) are added to `echoed`: the tests' independent
/// count.
fn raw_serve(listener: TcpListener, echoed: &AtomicU64) -> io::Result<()> {
    std::thread::scope(|s| loop {
        let (stream, _) = listener.accept()?;
        s.spawn(move || {
            if let Err(e) = echo(stream, echoed) {
                eprintln!("compare_peer raw-server: connection: {e}");
            }
        });
    })
}

fn echo(mut stream: TcpStream, echoed: &AtomicU64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; ECHO_BUF];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // Counted before the echo, so a client that has read k bytes back
        // always finds at least k counted.
        echoed.fetch_add(n as u64, Ordering::Relaxed);
        stream.write_all(&buf[..n])?;
    }
}

/// The raw client's accounting of fixed-size frames over an echo. Sans-IO:
/// the caller reads the socket and the clock and reports bytes and instants.
#[derive(Debug)]
struct Ledger {
    frame: usize,
    /// Send instants of the outstanding frames, oldest first (an echo keeps
    /// their order). Never more than `cap`.
    outstanding: VecDeque<Instant>,
    cap: usize,
    /// Bytes of the oldest outstanding frame already received.
    partial: usize,
    sent: u64,
    completed: u64,
}

impl Ledger {
    fn new(frame: usize, cap: usize) -> Ledger {
        assert!(frame > 0 && cap > 0, "frame size and capacity must be positive");
        Ledger { frame, outstanding: VecDeque::with_capacity(cap), cap, partial: 0, sent: 0, completed: 0 }
    }

    /// `k` frames written at `now`.
    fn sent(&mut self, k: usize, now: Instant) -> Result<(), String> {
        if self.outstanding.len() + k > self.cap {
            return Err(format!("{k} more frames would exceed {} in flight", self.cap));
        }
        self.outstanding.extend(std::iter::repeat_n(now, k));
        self.sent += k as u64;
        Ok(())
    }

    /// `bytes` echoed bytes read at `now`: calls `each` with the latency of
    /// every frame they complete, oldest first, and returns how many. More
    /// bytes than are outstanding is an error (the peer is not an echo).
    fn received(&mut self, bytes: usize, now: Instant, mut each: impl FnMut(Duration)) -> Result<usize, String> {
        let pending = self.outstanding.len() * self.frame - self.partial;
        if bytes > pending {
            return Err(format!("{bytes} bytes read with only {pending} outstanding"));
        }
        let total = self.partial + bytes;
        let done = total / self.frame;
        self.partial = total % self.frame;
        for t in self.outstanding.drain(..done) {
            each(now.saturating_duration_since(t));
        }
        self.completed += done as u64;
        Ok(done)
    }

    fn in_flight(&self) -> usize {
        self.outstanding.len()
    }
}

/// A raw client run: the report plus the totals over the whole run (warm-up
/// included), for the tests' cross-checks.
#[derive(Debug)]
struct RawRun {
    report: Report,
    sent: u64,
    completed: u64,
    outstanding: usize,
}

fn raw_client(peer: SocketAddr, inflight: usize, warmup: Duration, window: Duration) -> io::Result<RawRun> {
    if inflight > MAX_RAW_INFLIGHT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raw-client: at most {MAX_RAW_INFLIGHT} frames in flight"),
        ));
    }
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut stream = TcpStream::connect(peer)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(STALL))?;
    let frames = vec![0xa5u8; inflight * FRAME];
    let mut buf = vec![0u8; ECHO_BUF];
    let mut ledger = Ledger::new(FRAME, inflight);
    let mut hist = closed_loop::histogram();
    let start = Instant::now();
    let (measure, end) = (start + warmup, start + warmup + window);
    stream.write_all(&frames)?;
    ledger.sent(inflight, start).map_err(bad)?;
    let mut answers = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the echo closed the connection")),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(e.kind(), format!("no echo for {STALL:?}")));
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        if now >= end {
            break;
        }
        let measuring = now >= measure;
        let done = ledger
            .received(n, now, |lat| {
                if measuring {
                    hist.saturating_record((lat.as_micros() as u64).max(1));
                }
            })
            .map_err(bad)?;
        if measuring {
            answers += done as u64;
        }
        if done > 0 {
            stream.write_all(&frames[..done * FRAME])?;
            ledger.sent(done, now).map_err(bad)?;
        }
    }
    let q = |q: f64| if hist.is_empty() { 0 } else { hist.value_at_quantile(q) };
    Ok(RawRun {
        report: Report { rps: answers as f64 / window.as_secs_f64(), p50: q(0.5), p99: q(0.99), answers, failures: 0 },
        sent: ledger.sent,
        completed: ledger.completed,
        outstanding: ledger.in_flight(),
    })
}

// ----------------------------------------------------------- diameter-rs

fn drs_server(addr: SocketAddr) -> io::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let (server, addr) = drs::bind(addr).await?;
        announce(addr)?;
        drs::serve(server, drs::dictionary(), Arc::new(AtomicU64::new(0))).await
    })
}

async fn drs_client(peer: SocketAddr, inflight: usize, warmup: Duration, window: Duration) -> io::Result<Report> {
    let client = Arc::new(drs::Client::connect(peer, drs::dictionary()).await.map_err(io::Error::other)?);
    let send: SendFn = Arc::new(move |n| {
        let c = client.clone();
        Box::pin(async move { c.send(n).await })
    });
    let cell = closed_loop::drive(send, inflight, warmup, window, STALL).await;
    Ok(Report { rps: cell.rps, p50: cell.p50, p99: cell.p99, answers: cell.answers, failures: cell.failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, us: u64) -> Instant {
        base + Duration::from_micros(us)
    }

    #[test]
    fn partial_reads_complete_frames_in_order() {
        let t0 = Instant::now();
        let mut l = Ledger::new(200, 4);
        l.sent(4, t0).unwrap();
        let mut lats = Vec::new();
        // 199 bytes: nothing complete yet.
        assert_eq!(l.received(199, at(t0, 10), |d| lats.push(d)).unwrap(), 0);
        // 1 more: the first frame; 2 more bytes of the second.
        assert_eq!(l.received(3, at(t0, 20), |d| lats.push(d)).unwrap(), 1);
        assert_eq!(lats, [Duration::from_micros(20)]);
        // Refill one at 30 µs, then the rest of frames 2-4 and all of 5.
        l.sent(1, at(t0, 30)).unwrap();
        assert_eq!(l.in_flight(), 4);
        assert_eq!(l.received(198 + 400 + 200, at(t0, 100), |d| lats.push(d)).unwrap(), 4);
        let us: Vec<u128> = lats.iter().map(|d| d.as_micros()).collect();
        assert_eq!(us, [20, 100, 100, 100, 70]);
        assert_eq!(l.in_flight(), 0);
        assert_eq!((l.sent, l.completed), (5, 5));
    }

    #[test]
    fn byte_at_a_time_counts_every_frame_once() {
        let t0 = Instant::now();
        let mut l = Ledger::new(200, 3);
        l.sent(3, t0).unwrap();
        let mut done = 0;
        for i in 0..550 {
            done += l.received(1, at(t0, i), |_| {}).unwrap();
        }
        // 550 bytes: two frames and 150 bytes of the third.
        assert_eq!(done, 2);
        assert_eq!(l.completed, l.sent - l.in_flight() as u64);
        assert_eq!(l.in_flight(), 1);
    }

    #[test]
    fn more_than_outstanding_is_an_error() {
        let t0 = Instant::now();
        let mut l = Ledger::new(200, 2);
        l.sent(2, t0).unwrap();
        assert_eq!(l.received(150, t0, |_| {}).unwrap(), 0);
        // 250 bytes are outstanding; 251 is one too many.
        assert!(l.received(251, t0, |_| {}).is_err());
        assert_eq!(l.received(250, t0, |_| {}).unwrap(), 2);
        assert!(l.received(1, t0, |_| {}).is_err());
        // The window is bounded too.
        assert!(l.sent(3, t0).is_err());
        assert!(l.sent(2, t0).is_ok());
    }

    #[test]
    fn ragged_reads_conserve_frames() {
        // Reads of awkward sizes while refilling as frames complete, as the
        // client does: completed + in flight always equals sent.
        let t0 = Instant::now();
        let mut l = Ledger::new(200, 16);
        l.sent(16, t0).unwrap();
        let sizes = [1usize, 199, 200, 401, 7, 3193, 64, 136, 999, 1];
        let mut completed = 0u64;
        for (i, &s) in sizes.iter().cycle().take(200).enumerate() {
            let pending = l.in_flight() * 200 - l.partial;
            let done = l.received(s.min(pending), at(t0, i as u64), |_| {}).unwrap();
            completed += done as u64;
            l.sent(done, at(t0, i as u64)).unwrap();
            assert_eq!(l.completed + l.in_flight() as u64, l.sent);
        }
        assert_eq!(completed, l.completed);
        assert_eq!(l.in_flight(), 16);
    }

    #[test]
    fn raw_pair_end_to_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echoed: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        std::thread::spawn(move || raw_serve(listener, echoed));
        let run = raw_client(addr, 4, Duration::from_millis(50), Duration::from_millis(300)).unwrap();
        assert!(run.report.answers > 0 && run.report.p50 > 0, "{run:?}");
        assert!(run.report.answers <= run.completed);
        // The client stops with exactly `inflight` frames outstanding.
        assert_eq!(run.outstanding, 4);
        assert_eq!(run.completed + 4, run.sent);
        // The server read at least every completed frame, and at most what
        // was sent (it may not have read the last ones yet).
        let e = echoed.load(Ordering::Relaxed);
        assert!(e >= run.completed * 200 && e <= run.sent * 200, "echoed {e}, {run:?}");
    }

    #[test]
    fn drs_pair_end_to_end() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let answered = Arc::new(AtomicU64::new(0));
        let report = rt.block_on(async {
            let (server, addr) = drs::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
            tokio::spawn(drs::serve(server, drs::dictionary(), answered.clone()));
            drs_client(addr, 4, Duration::from_millis(50), Duration::from_millis(300)).await.unwrap()
        });
        assert!(report.answers > 0 && report.failures == 0, "{report:?}");
        // The server's own count covers the first CCA, the warm-up and
        // every answer the client counted.
        let served = answered.load(Ordering::Relaxed);
        assert!(served > report.answers, "served {served}, {report:?}");
        rt.shutdown_background();
    }

    #[test]
    fn only_loopback() {
        assert!(loopback("127.0.0.1:0".parse().unwrap()).is_ok());
        assert!(loopback("0.0.0.0:0".parse().unwrap()).is_err());
        assert!(loopback("[::1]:0".parse().unwrap()).is_err());
    }
}
