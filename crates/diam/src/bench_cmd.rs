//! `diam bench`: the standard workload (Credit-Control-Request, application
//! 4, command 272) through a [`PeerGroup`] on one [`AddressClient`].
//!
//! * The group spreads requests over the `--peer` list by `--strategy`
//!   (default round-robin), or with `--failover` sends them to the first
//!   peer and fails over to the next ones. When a connection fails,
//!   retryable requests (a `--retryable` fraction of them, all by default,
//!   with the P flag) are retransmitted to another peer with the T flag;
//!   the others fail with `connection_lost`.
//! * Closed loop (default): `--inflight` worker tasks, each sending back to
//!   back.
//! * Open loop (`--rate N`): requests are due at fixed intended times
//!   (`start + k / N`); at most `--inflight` are outstanding, so when the
//!   peer falls behind later requests go out late. Latency is measured from
//!   the intended time, so a stall shows in the percentiles (no coordinated
//!   omission).
//!
//! `requests` is counted when a request is submitted; its outcome is counted
//! separately, once, when it completes, as an answer (whatever its
//! Result-Code), an error (by [`Error::kind_name`], and by whether the
//! request was retryable) or a timeout; a retransmitted request is still one
//! request. The run waits for every outstanding request (each ends by its
//! timeout), so `requests == answers + errors + timeouts` is a check: a
//! request lost on the way breaks it.
//!
//! `--events FILE`: a listener on the pool's event dispatcher clones each
//! lifecycle event (cheap, no allocation) into a bounded channel; a writer
//! thread formats and appends the JSON lines, so file I/O never runs on a
//! connection task. A full channel drops the event and counts the drop.
//!
//! `--plot FILE`: answers per second and p50/p99 latency per 100 ms, with
//! lifecycle events marked, as an SVG (see [`crate::plot`]).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diam_client::{AddressClient, Error, GroupConfig, PeerAddr, PeerGroup, PeerState, PoolConfig, PoolFailure};
use diam_link::breaker::BreakerEvent;
use diam_link::events::{DisconnectReason, Event, EventData, EventKind, Subscription};
use diam_link::failover::{FailoverConfig, FailoverEvent};
use diam_link::health::HealthChange;
use diam_proto::peer::result_code;
use diam_proto::{apps, avps, commands, Message};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::{BenchArgs, Failure};

/// Service-Context-Id of the standard workload (3GPP TS 32.251's PS charging
/// context).
pub(crate) const SERVICE_CONTEXT: &str = "32251@3gpp.org";
/// Highest latency the histogram tracks exactly (larger values saturate).
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// How early the open loop may send (the tokio timer's resolution).
const TIMER_SLACK: Duration = Duration::from_millis(1);
/// Capacity of the event channel between the listener and the writer.
const EVENT_QUEUE: usize = 4096;
/// Failure callbacks kept for the report.
const MAX_FAILURES: usize = 100;
/// Event kinds written to `--events` and counted. Per-request kinds
/// (connection acquired/released) are left out: subscribing to them would
/// make the pool emit one event per request.
const EVENT_KINDS: [EventKind; 12] = [
    EventKind::ConnectionCreated,
    EventKind::Connected,
    EventKind::Reconnected,
    EventKind::Disconnected,
    EventKind::Error,
    EventKind::HealthCheck,
    EventKind::MarkedForReconnect,
    EventKind::ReconnectScheduled,
    EventKind::PoolCreated,
    EventKind::PoolExhausted,
    EventKind::PoolReset,
    EventKind::Custom,
];

// ---------------------------------------------------------------------------
// Outcome counting

/// Outcomes of completed requests.
struct Tally {
    /// Latency of answered requests, µs.
    hist: Histogram<u64>,
    answers: u64,
    timeouts: u64,
    errors: BTreeMap<&'static str, u64>,
    /// Errors of requests that were retryable, and of those that were not.
    errors_retryable: u64,
    errors_non_retryable: u64,
    /// Answers by Result-Code (`None`: the answer had none).
    result_codes: BTreeMap<Option<u32>, u64>,
    /// With `--plot`: outcomes per 100 ms.
    plot: Option<crate::plot::Buckets>,
}

impl Tally {
    fn new(plot: Option<crate::plot::Clock>) -> Tally {
        Tally {
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            answers: 0,
            timeouts: 0,
            errors: BTreeMap::new(),
            errors_retryable: 0,
            errors_non_retryable: 0,
            result_codes: BTreeMap::new(),
            plot: plot.map(crate::plot::Buckets::new),
        }
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    fn outcomes(&self) -> u64 {
        self.answers + self.timeouts + self.errors_total()
    }

    /// One outcome; `done` is when it completed (for `--plot`).
    fn record(&mut self, outcome: &Result<Message, Error>, retryable: bool, latency: Duration, done: Instant) {
        if let Some(p) = &mut self.plot {
            let us = outcome.is_ok().then(|| u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
            p.record(done, us);
        }
        match outcome {
            Ok(answer) => {
                self.answers += 1;
                *self.result_codes.entry(result_code(answer)).or_default() += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.hist.saturating_record(us.max(1));
            }
            Err(Error::Timeout) => self.timeouts += 1,
            Err(e) => {
                *self.errors.entry(e.kind_name()).or_default() += 1;
                if retryable {
                    self.errors_retryable += 1;
                } else {
                    self.errors_non_retryable += 1;
                }
            }
        }
    }

    /// Moves everything from `other` into `self`, leaving `other` empty.
    fn absorb(&mut self, other: &mut Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        other.hist.reset();
        self.answers += std::mem::take(&mut other.answers);
        self.timeouts += std::mem::take(&mut other.timeouts);
        self.errors_retryable += std::mem::take(&mut other.errors_retryable);
        self.errors_non_retryable += std::mem::take(&mut other.errors_non_retryable);
        for (k, v) in std::mem::take(&mut other.errors) {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in std::mem::take(&mut other.result_codes) {
            *self.result_codes.entry(k).or_default() += v;
        }
        if let (Some(p), Some(o)) = (&mut self.plot, &mut other.plot) {
            p.absorb(o);
        }
    }

    fn latency_json(&self) -> Value {
        let h = &self.hist;
        let q = |q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        json!({
            "p50": q(0.50),
            "p90": q(0.90),
            "p99": q(0.99),
            "p999": q(0.999),
            "max": if h.is_empty() { 0 } else { h.max() },
            "min": if h.is_empty() { 0 } else { h.min() },
            "mean": if h.is_empty() { 0.0 } else { (h.mean() * 10.0).round() / 10.0 },
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// The workload

/// One runtime's client (`--threads N`: one per runtime; otherwise the
/// only one): its workers send through its group only.
struct Lane {
    client: AddressClient,
    group: PeerGroup,
    /// The runtime its tasks run on.
    handle: tokio::runtime::Handle,
    /// Its Origin-Host (also the Session-Id prefix).
    origin_host: String,
}

/// Lane `i`'s Origin-Host: the given one for the first, and the first label
/// with `-i` appended for the others (client.example.com →
/// client-1.example.com), since a peer keeps one connection per identity.
fn lane_identity(host: &str, i: usize) -> String {
    if i == 0 {
        return host.to_string();
    }
    match host.split_once('.') {
        Some((first, rest)) => format!("{first}-{i}.{rest}"),
        None => format!("{host}-{i}"),
    }
}

/// What every sender shares.
struct Ctx {
    /// Fraction of requests sent retryable (P flag set).
    retryable: f64,
    origin_realm: String,
    destination_realm: String,
    /// Makes Session-Ids unique across runs.
    boot: u64,
    /// Requests submitted, counted before each is sent (also the Session-Id
    /// suffix).
    next: AtomicU64,
    /// Outcomes, in shards: a worker records into its own shard (its
    /// lane's with `--threads N`, so on one thread and never contended),
    /// one histogram per shard rather than per worker (each is some
    /// 200 KiB: hundreds of them would miss the cache on every record).
    tallies: Vec<Mutex<Tally>>,
    stop: AtomicBool,
    /// A progress bar shows the figures so far (the shards are read every
    /// 250 ms); otherwise they are read once, at the end.
    live: bool,
}

impl Ctx {
    /// The next request and whether it is retryable: request `n` is when
    /// `floor((n + 1) × F)` exceeds `floor(n × F)`, which spreads exactly
    /// the `--retryable` fraction F evenly.
    ///
    /// Built into `scratch`: a worker's previous request is gone by the time
    /// it builds the next, so the room is taken back instead of allocated.
    fn next_request(&self, lane: &Lane, scratch: &mut Scratch) -> (Message, bool) {
        use std::fmt::Write as _;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let f = self.retryable;
        let retryable = f >= 1.0 || ((n + 1) as f64 * f).floor() > (n as f64 * f).floor();
        scratch.sid.clear();
        let _ = write!(scratch.sid, "{};{};{n}", lane.origin_host, self.boot);
        let mut room = std::mem::take(&mut scratch.room);
        room.reserve(512);
        let flags = diam_proto::CommandFlags::from_bits(diam_proto::CommandFlags::REQUEST);
        let (ccr, room) =
            diam_proto::MessageBuilder::new_in(room, flags, commands::CREDIT_CONTROL, apps::CREDIT_CONTROL)
                .proxiable(retryable)
                .avp(avps::SESSION_ID, scratch.sid.as_str())
                .avp(avps::ORIGIN_HOST, lane.origin_host.as_str())
                .avp(avps::ORIGIN_REALM, self.origin_realm.as_str())
                .avp(avps::DESTINATION_REALM, self.destination_realm.as_str())
                .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
                // RFC 4006 §3.1: every CCR carries it (python-diameter answers
                // 5005 without it).
                .avp(avps::SERVICE_CONTEXT_ID, SERVICE_CONTEXT)
                .avp(avps::CC_REQUEST_TYPE, 1i32) // INITIAL_REQUEST
                .avp(avps::CC_REQUEST_NUMBER, 0u32)
                .build_reusing();
        scratch.room = room;
        (ccr, retryable)
    }
}

/// A sender's reusable room for building requests.
#[derive(Default)]
struct Scratch {
    sid: String,
    room: bytes::BytesMut,
}

/// A pause after an error that came back at once (a dead peer refusing
/// connections), so workers do not spin on it.
async fn pace_fast_error(outcome: &Result<Message, Error>, latency: Duration) {
    if outcome.is_err() && latency < Duration::from_millis(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// One closed-loop worker: sends back to back until told to stop, then
/// returns once its last request has completed.
///
/// One clock reading per request: the time a request completes is the
/// time the next one starts (building a request takes well under the
/// histogram's 1 µs resolution). Outcomes go to shard `shard`.
async fn closed_worker(ctx: Arc<Ctx>, lane: Arc<Lane>, shard: usize) {
    let tally = &ctx.tallies[shard % ctx.tallies.len()];
    let mut started = Instant::now();
    let mut scratch = Scratch::default();
    while !ctx.stop.load(Ordering::Relaxed) {
        let (ccr, retryable) = ctx.next_request(&lane, &mut scratch);
        let outcome = lane.group.send(ccr).await;
        let done = Instant::now();
        let latency = done.saturating_duration_since(started);
        lock(tally).record(&outcome, retryable, latency, done);
        if outcome.is_err() && latency < Duration::from_millis(1) {
            pace_fast_error(&outcome, latency).await;
            started = Instant::now();
        } else {
            started = done;
        }
    }
}

/// The open loop: request `k` is due at `start + k / rate`. Returns how
/// many were due within the window.
/// Request `k` goes through lane `k mod lanes`, as a task on that lane's
/// runtime.
async fn open_loop(ctx: Arc<Ctx>, lanes: &[Arc<Lane>], rate: f64, inflight: usize, window: Duration) -> u64 {
    let permits = Arc::new(Semaphore::new(inflight));
    let start = Instant::now();
    let end = start + window;
    let mut k: u64 = 0;
    loop {
        let intended = start + Duration::from_secs_f64(k as f64 / rate);
        if intended >= end {
            break;
        }
        // The timer wakes on millisecond ticks, at or after its deadline:
        // aim up to 1 ms early so requests are not all sent late.
        if let Some(wake) = intended.checked_sub(TIMER_SLACK) {
            if wake > Instant::now() {
                tokio::time::sleep_until(wake).await;
            }
        }
        // Saturated: wait for a slot; the request goes out late, and its
        // latency still counts from `intended`.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = tokio::time::sleep_until(end) => break,
        };
        let shard = (k % lanes.len() as u64) as usize;
        let lane = lanes[shard].clone();
        k += 1;
        let ctx = ctx.clone();
        // Latency counts from the intended time, or from the actual send
        // when the timer let it go early.
        let origin = intended.min(Instant::now());
        lane.handle.clone().spawn(async move {
            let (ccr, retryable) = ctx.next_request(&lane, &mut Scratch::default());
            let outcome = lane.group.send(ccr).await;
            let latency = origin.elapsed();
            lock(&ctx.tallies[shard % ctx.tallies.len()]).record(&outcome, retryable, latency, origin + latency);
            drop(permit);
        });
    }
    // Every outstanding request ends by its timeout.
    let _ = permits.acquire_many(inflight as u32).await;
    let due = (window.as_secs_f64() * rate).ceil() as u64;
    due.max(k)
}

// ---------------------------------------------------------------------------
// Lifecycle events

fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// The detail of a `diam_link::Error` (its own Display is only the class,
/// e.g. "session failed"; the cause says what happened).
fn link_error_text(e: &diam_link::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => cause.to_string(),
        None => e.to_string(),
    }
}

/// One `--events` line; `peers` names the members that failover events
/// refer to by index.
fn event_json(ev: &Event, peers: &[String]) -> Value {
    let mut m = Map::new();
    m.insert("ts_us".into(), json!(unix_us(ev.timestamp())));
    m.insert("event".into(), json!(ev.kind().as_str()));
    m.insert("peer".into(), json!(ev.remote().map(ToString::to_string)));
    m.insert("connection_id".into(), json!(ev.connection_id().get()));
    match ev.data() {
        EventData::Connected { first } => {
            m.insert("first".into(), json!(first));
        }
        EventData::Reconnected { attempt } => {
            m.insert("attempt".into(), json!(attempt));
        }
        EventData::Disconnected { reason } => {
            let text = match reason {
                DisconnectReason::Failed(e) => link_error_text(e),
                other => other.as_str().to_string(),
            };
            m.insert("reason".into(), json!(text));
            m.insert("reason_kind".into(), json!(reason.as_str()));
        }
        EventData::Error { error } => {
            m.insert("reason".into(), json!(link_error_text(error)));
        }
        EventData::ReconnectScheduled { attempt, delay } => {
            m.insert("attempt".into(), json!(attempt));
            m.insert("delay_ms".into(), json!(delay.as_millis() as u64));
        }
        EventData::HealthCheck { healthy, latency } => {
            m.insert("healthy".into(), json!(healthy));
            m.insert("latency_us".into(), json!(latency.as_micros() as u64));
        }
        EventData::Custom(c) => {
            m.insert("name".into(), json!(c.name()));
            if let Some(h) = c.downcast_ref::<HealthChange>() {
                m.insert("from".into(), json!(h.from().as_str()));
                m.insert("to".into(), json!(h.to().as_str()));
                m.insert("reason".into(), json!(format!("{:?}", h.cause())));
            } else if let Some(b) = c.downcast_ref::<BreakerEvent>() {
                m.insert("from".into(), json!(b.from().as_str()));
                m.insert("to".into(), json!(b.to().as_str()));
                m.insert("reason".into(), json!(format!("{:?}", b.reason())));
            } else if let Some(f) = c.downcast_ref::<FailoverEvent>() {
                m.insert("from".into(), json!(f.from().as_str()));
                m.insert("to".into(), json!(f.to().as_str()));
                m.insert("reason".into(), json!(format!("{:?}", f.reason())));
                let active = f.active().and_then(|i| peers.get(i)).cloned();
                m.insert("peer".into(), json!(active));
            } else {
                m.insert("value".into(), json!(format!("{c:?}")));
            }
        }
        _ => {}
    }
    Value::Object(m)
}

enum WriterMsg {
    Event(Event),
    Stop,
}

/// Counts events by kind and, with `--events`, hands them to the writer.
struct EventLog {
    counts: [AtomicU64; EVENT_KINDS.len()],
    dropped: AtomicU64,
    tx: Option<SyncSender<WriterMsg>>,
    /// With `--plot`: the events marked on the chart.
    marks: Option<crate::plot::Marks>,
}

impl EventLog {
    fn on_event(&self, ev: &Event) {
        if let Some(i) = EVENT_KINDS.iter().position(|k| *k == ev.kind()) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = &self.marks {
            m.on_event(ev);
        }
        if let Some(tx) = &self.tx {
            // Never blocks the emitting (connection) task.
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                tx.try_send(WriterMsg::Event(ev.clone()))
            {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn counts_json(&self) -> Value {
        let mut m = Map::new();
        for (kind, n) in EVENT_KINDS.iter().zip(&self.counts) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                m.insert(kind.as_str().into(), json!(n));
            }
        }
        Value::Object(m)
    }
}

/// Appends event lines to `file`, flushing whenever the queue runs dry.
fn writer_thread(file: std::fs::File, rx: Receiver<WriterMsg>, peers: &[String]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(file);
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        while let Some(msg) = next.take() {
            match msg {
                WriterMsg::Event(ev) => {
                    serde_json::to_writer(&mut out, &event_json(&ev, peers))?;
                    out.write_all(b"\n")?;
                }
                WriterMsg::Stop => return out.flush(),
            }
            next = rx.try_recv().ok();
        }
        out.flush()?;
    }
    out.flush()
}

/// The running `--events` writer.
struct EventWriter {
    tx: SyncSender<WriterMsg>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl EventWriter {
    fn start(path: &Path, peers: Vec<String>) -> Result<EventWriter, Failure> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Failure::input(format!("--events {}: {e}", path.display())))?;
        let (tx, rx) = sync_channel(EVENT_QUEUE);
        let thread = std::thread::Builder::new()
            .name("diam-bench-events".into())
            .spawn(move || writer_thread(file, rx, &peers))
            .map_err(|e| Failure::failed(format!("starting the event writer: {e}")))?;
        Ok(EventWriter { tx, thread })
    }

    /// Writes what is queued, flushes and stops.
    fn finish(self) -> Result<(), String> {
        let _ = self.tx.send(WriterMsg::Stop);
        match self.thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the event writer panicked".into()),
        }
    }
}

/// Writes the `--plot` chart.
fn write_plot(
    out: crate::plot::Output,
    args: &BenchArgs,
    names: &[String],
    ran: Duration,
    t: &Tally,
    log: &EventLog,
) -> Result<(), String> {
    let path = out.path().display().to_string();
    let window = Duration::from_secs_f64(args.duration);
    let run = crate::plot::Run { peers: names, inflight: args.inflight, rate: args.rate, window, ran };
    let marks = log.marks.as_ref().expect("marks are collected with --plot");
    out.write(&run, t.plot.as_ref(), marks).map_err(|e| format!("--plot {path}: {e}"))
}

// ---------------------------------------------------------------------------
// Options

/// The pool configuration: identity and timers from the common options,
/// Credit-Control advertised, fast reconnection (100 ms growing to 1 s) so a
/// restarted peer is picked up at once.
fn pool_config(args: &BenchArgs, peers: usize) -> Result<PoolConfig, Failure> {
    let c = crate::peer_cmd::config(&args.identity.to_identity(), &args.tuning, &[apps::CREDIT_CONTROL], &args.tls)?;
    let tls = crate::peer_cmd::load_tls(&args.tls)?;
    let mut p = PoolConfig { connection: c, tls, ..PoolConfig::default() };
    // Room for every --peer (the pool's default is 1024 addresses).
    p.max_connections = p.max_connections.max(peers);
    p.reconnect_enabled = true;
    p.reconnect_interval = Duration::from_millis(100);
    p.max_reconnect_delay = Duration::from_secs(1);
    p.reconnect_backoff = 2.0;
    p.max_reconnect_attempts = u32::MAX;
    p.validate().map_err(|e| Failure::input(e.to_string()))?;
    Ok(p)
}

/// The group configuration: `--strategy` or `--failover`; breakers open for
/// 1 s growing to 5 s and DWR checks every second, so a restarted peer
/// rejoins within about a second of accepting connections again.
fn group_config(args: &BenchArgs) -> Result<GroupConfig, Failure> {
    let mut g = if args.failover {
        if args.failback_ms == 0 {
            return Err(Failure::input("--failback-ms must be positive"));
        }
        GroupConfig::failover(FailoverConfig::default().failback_after(Duration::from_millis(args.failback_ms)))
    } else {
        GroupConfig::balance(args.strategy)
    };
    g.breaker_open_min = Duration::from_secs(1);
    g.breaker_open_max = Duration::from_secs(5);
    g.check_interval = Duration::from_secs(1);
    Ok(g)
}

// ---------------------------------------------------------------------------
// Progress

fn progress_bar(window: Duration) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(window.as_millis() as u64), target);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>3} [{bar:20}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Updates the bar every 250 ms (when it shows): the send rate over the
/// last interval (from the live request counter), and the p99 and errors
/// so far (over every shard).
async fn progress(ctx: Arc<Ctx>, bar: ProgressBar, started: Instant) {
    let mut last = (Instant::now(), 0u64);
    let mut hist = Tally::new(None).hist;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !ctx.live {
            continue;
        }
        hist.reset();
        let (mut errors, mut timeouts) = (0, 0);
        for shard in &ctx.tallies {
            let t = lock(shard);
            // Same bounds: adding cannot fail.
            let _ = hist.add(&t.hist);
            errors += t.errors_total();
            timeouts += t.timeouts;
        }
        let p99 = if hist.is_empty() { 0 } else { hist.value_at_quantile(0.99) };
        let sent = ctx.next.load(Ordering::Relaxed);
        let now = Instant::now();
        let dt = now.duration_since(last.0).as_secs_f64();
        let rate = if dt > 0.0 { sent.saturating_sub(last.1) as f64 / dt } else { 0.0 };
        last = (now, sent);
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!("{rate:>7.0} req/s  p99 {p99} µs  errors {errors}  timeouts {timeouts}"));
    }
}

// ---------------------------------------------------------------------------
// `--hold S`: the idle cost of the connections

/// The `--hold` window, checked (positive, finite); `None` without it.
fn hold_window(hold: Option<f64>) -> Result<Option<Duration>, Failure> {
    match hold {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s <= 1e7 => Ok(Some(Duration::from_secs_f64(s))),
        Some(_) => Err(Failure::input("--hold must be a positive number of seconds")),
    }
}

/// Keeps the connections open for `window` with no traffic, then reports
/// `connections_open` (the pool's connections in an open state at the end),
/// `tcp_established` (this process's established TCP sockets, counted
/// independently from /proc), `rss_bytes` (VmRSS at the end) and
/// `cpu_percent` (user + system CPU time over the hold, divided by its wall
/// time, as a percentage of one core). A figure /proc cannot give is null.
async fn hold(lanes: &[Arc<Lane>], window: Duration) -> Value {
    let cpu_before = proc_cpu_ticks();
    let started = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let cpu_after = proc_cpu_ticks();
    let wall = started.elapsed().as_secs_f64();
    let connections_open: usize = lanes
        .iter()
        .map(|l| {
            let c = &l.client;
            c.list_connections()
                .into_iter()
                .filter(|a| c.connection(a.clone()).is_some_and(|c| c.state.is_connected()))
                .count()
        })
        .sum();
    let cpu_percent = match cpu_seconds(cpu_before, cpu_after) {
        Some(cpu) if wall > 0.0 => Some((cpu / wall * 1000.0).round() / 10.0),
        _ => None,
    };
    json!({
        "duration_s": (wall * 1000.0).round() / 1000.0,
        "connections_open": connections_open,
        "tcp_established": proc_tcp_established(),
        "rss_bytes": proc_rss_bytes(),
        "cpu_percent": cpu_percent,
    })
}

/// Waits until every member of every lane is open or has failed an attempt
/// (its first attempt is over, whatever the outcome), at most `limit`.
async fn settle(lanes: &[Arc<Lane>], limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let settled = lanes
            .iter()
            .all(|l| l.group.members().iter().all(|p| p.state() == PeerState::Open || p.stats().failed_attempts > 0));
        if settled || Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU seconds between two [`proc_cpu_ticks`] readings (10 ms resolution
/// at the usual 100 ticks a second).
fn cpu_seconds(before: Option<u64>, after: Option<u64>) -> Option<f64> {
    let (a, b) = (before?, after?);
    let cpu = b.saturating_sub(a) as f64 / clock_ticks_per_second() as f64;
    Some((cpu * 1000.0).round() / 1000.0)
}

/// utime + stime of this process, in clock ticks (/proc/self/stat fields 14
/// and 15; the command name, field 2, is in parentheses and may hold spaces).
fn proc_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    // After the name: field 3 (state) onwards, so utime is the 12th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The kernel's USER_HZ, from the auxiliary vector (AT_CLKTCK), else 100.
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: usize = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    let word = |c: &[u8]| c.try_into().map(usize::from_ne_bytes).unwrap_or(0);
    auxv.chunks_exact(2 * WORD)
        .find(|pair| word(&pair[..WORD]) == AT_CLKTCK)
        .map(|pair| word(&pair[WORD..]) as u64)
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// Resident set size (VmRSS in /proc/self/status).
fn proc_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// This process's TCP sockets in state ESTABLISHED: the socket inodes of
/// /proc/self/fd matched against /proc/self/net/tcp and tcp6.
fn proc_tcp_established() -> Option<usize> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_string());
        }
    }
    let mut established = 0;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "01" && inodes.contains(f[9]) {
                established += 1;
            }
        }
    }
    Some(established)
}

// ---------------------------------------------------------------------------
// The report of one lane

/// A lane's group and pool figures: failovers, retransmissions, per-peer
/// health and reconnections, and the pool's counters.
fn lane_report(lane: &Lane, names: &[String]) -> Map<String, Value> {
    let stats = lane.client.stats();
    let members = lane.group.health_statistics();
    let reconnections = lane.group.reconnection_statistics();
    let fo = lane.group.failover_statistics();
    let mut r = Map::new();
    r.insert("failovers".into(), json!(fo.failovers));
    r.insert("retransmissions".into(), json!(fo.retransmissions));
    r.insert("retransmissions_answered".into(), json!(fo.retransmissions_answered));
    r.insert("reroutes".into(), json!(fo.reroutes));
    if let Some(state) = fo.state {
        r.insert(
            "failover".into(),
            json!({
                "state": state.as_str(),
                "active": fo.active.and_then(|a| names.get(a)),
                "failbacks": fo.failbacks,
                "unavailable": fo.unavailable,
            }),
        );
    }
    let per_peer: Map<String, Value> = members
        .iter()
        .zip(&reconnections)
        .map(|(m, rc)| {
            let v = json!({
                "requests": m.requests,
                "answers": m.answers,
                "errors": m.errors,
                "timeouts": m.timeouts,
                "retransmissions_received": m.retransmissions_received,
                "health": m.health.status.as_str(),
                "breaker": m.breaker.as_str(),
                "connections_lost": rc.connections_lost,
                "reopened": rc.reopened,
                "failed_establishments": rc.failed_establishments,
            });
            (m.addr.as_ref().map_or_else(|| m.peer.clone(), ToString::to_string), v)
        })
        .collect();
    r.insert("per_peer".into(), Value::Object(per_peer));
    r.insert(
        "pool".into(),
        json!({
            "requests": stats.requests,
            "answers": stats.answers,
            "errors": stats.errors,
            "timeouts": stats.timeouts,
            "connections_created": stats.connections_created,
            "failed_attempts": stats.failed_attempts,
            "connections_lost": stats.connections_lost,
            "messages_sent": stats.messages_sent,
            "messages_received": stats.messages_received,
            "bytes_sent": stats.bytes_sent,
            "bytes_received": stats.bytes_received,
        }),
    );
    r
}

/// Adds `other`'s counts into `into`, key by key (objects recursively);
/// anything that is not a count (a state, a name) stays `into`'s.
fn add_counts(into: &mut Map<String, Value>, other: &Map<String, Value>) {
    for (k, v) in other {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => add_counts(a, b),
            (Some(Value::Number(a)), Value::Number(b)) => {
                if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
                    *a = (x + y).into();
                }
            }
            (None, v) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The command

pub(crate) fn bench(args: &BenchArgs) -> Result<(), Failure> {
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 1e7) {
        return Err(Failure::input("--duration must be a positive number of seconds"));
    }
    if args.inflight == 0 || args.inflight > 1_000_000 {
        return Err(Failure::input("--inflight must be between 1 and 1000000"));
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(Failure::input("--rate must be a positive number of requests per second"));
        }
    }
    let hold_for = hold_window(args.hold)?;
    let peers: Vec<PeerAddr> = crate::peer_cmd::parse_peers("--peer", &args.peer)?;
    crate::peer_cmd::check_tls_peers("--peer", &peers, &args.tls)?;
    if peers.is_empty() {
        return Err(Failure::input("--peer needs at least one address"));
    }
    let names: Vec<String> = peers.iter().map(ToString::to_string).collect();
    let metrics_addr = match &args.metrics {
        Some(a) => Some(
            crate::peer_cmd::resolve(a).map_err(|_| Failure::input(format!("--metrics {a}: expected HOST:PORT")))?,
        ),
        None => None,
    };
    if !(0.0..=1.0).contains(&args.retryable) {
        return Err(Failure::input("--retryable must be a fraction between 0 and 1"));
    }
    let config = pool_config(args, peers.len())?;
    let group_config = group_config(args)?;
    let window = Duration::from_secs_f64(args.duration);
    let writer = args.events.as_deref().map(|p| EventWriter::start(p, names.clone())).transpose()?;
    // Opened now, so that a bad path fails before any traffic.
    let plot_out = args.plot.as_deref().map(crate::plot::Output::create).transpose()?;
    let rt = crate::peer_cmd::lanes_runtime(args.threads)?;
    let extra_lanes = crate::peer_cmd::Lanes::start(args.threads, "diam-bench")?;
    let lane_handles = {
        let _in_runtime = rt.enter();
        extra_lanes.all()
    };

    let report = rt.block_on(async {
        if let Some(addr) = metrics_addr {
            crate::metrics_export::install(addr)?;
        }
        let log = Arc::new(EventLog {
            counts: Default::default(),
            dropped: AtomicU64::new(0),
            tx: writer.as_ref().map(|w| w.tx.clone()),
            marks: plot_out.as_ref().map(|_| crate::plot::Marks::new()),
        });
        let failures: Arc<Mutex<Vec<Value>>> = Arc::default();
        let mut subscriptions: Vec<Subscription> = Vec::new();
        let mut lanes: Vec<Arc<Lane>> = Vec::with_capacity(lane_handles.len());
        for (i, handle) in lane_handles.iter().enumerate() {
            // Built inside the lane's runtime: the client's and the group's
            // tasks run there.
            let _in_lane = handle.enter();
            let origin_host = lane_identity(&args.identity.origin_host, i);
            let mut config = config.clone();
            config.connection.peer.origin_host = origin_host.clone();
            let client = AddressClient::new(config).map_err(|e| Failure::input(e.to_string()))?;
            // A HealthCheck event comes with every DWA: listened to only
            // when something records it.
            let wanted =
                |kind: &EventKind| *kind != EventKind::HealthCheck || args.events.is_some() || args.plot.is_some();
            subscriptions.extend(EVENT_KINDS.iter().filter(|k| wanted(k)).map(|&kind| {
                let log = log.clone();
                client.events().subscribe(kind, move |ev: &Event| log.on_event(ev))
            }));
            let f = failures.clone();
            client.on_failure(move |pf: &PoolFailure| {
                let mut v = lock(&f);
                if v.len() < MAX_FAILURES {
                    v.push(json!({
                        "peer": pf.peer_address.as_ref().map(ToString::to_string),
                        "reason": pf.reason.to_string(),
                        "detected_ts_us": unix_us(pf.timestamp),
                        "reconnecting": pf.reconnecting,
                        "attempt": pf.attempt,
                    }));
                }
            });
            let group = PeerGroup::new(&client, peers.iter().cloned(), group_config.clone())
                .map_err(|e| Failure::input(e.to_string()))?;
            lanes.push(Arc::new(Lane { client, group, handle: handle.clone(), origin_host }));
        }
        // Every peer's first connection attempt concludes (open, or failed
        // once) before the clock starts, so that connection setup is not
        // part of the measured window (bounded: 10 s).
        settle(&lanes, Duration::from_secs(10)).await;
        let plot_clock = plot_out.as_ref().map(|_| crate::plot::Clock::start(window));
        // A shard per lane, or per core on the multi-thread runtime.
        let shards = if args.threads.is_some() {
            lanes.len()
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        };
        let ctx = Arc::new(Ctx {
            retryable: args.retryable,
            origin_realm: args.identity.origin_realm.clone(),
            destination_realm: args.destination_realm.clone().unwrap_or_else(|| args.identity.origin_realm.clone()),
            boot: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            next: AtomicU64::new(0),
            tallies: (0..shards).map(|_| Mutex::new(Tally::new(plot_clock))).collect(),
            stop: AtomicBool::new(false),
            live: std::io::stderr().is_terminal(),
        });
        let bar = progress_bar(window);
        let cpu_start = proc_cpu_ticks();
        let started = Instant::now();
        let ticker = tokio::spawn(progress(ctx.clone(), bar.clone(), started));

        let mut due = None;
        match args.rate {
            None => {
                // An equal share of the workers on every lane.
                let workers: Vec<_> = (0..args.inflight)
                    .map(|w| {
                        let lane = lanes[w % lanes.len()].clone();
                        lane.handle.clone().spawn(closed_worker(ctx.clone(), lane, w))
                    })
                    .collect();
                tokio::time::sleep(window).await;
                ctx.stop.store(true, Ordering::Relaxed);
                // Each worker ends once its last request has (by its timeout).
                for w in workers {
                    let _ = w.await;
                }
            }
            Some(rate) => due = Some(open_loop(ctx.clone(), &lanes, rate, args.inflight, window).await),
        }
        let elapsed = started.elapsed();
        let cpu_s = cpu_seconds(cpu_start, proc_cpu_ticks());
        ticker.abort();
        bar.finish_and_clear();

        let held = match hold_for {
            Some(window) => Some(hold(&lanes, window).await),
            None => None,
        };
        // Every lane's figures: counts add up, states are the first lane's.
        let mut lane_reports = lanes.iter().map(|l| lane_report(l, &names));
        let mut merged = lane_reports.next().unwrap_or_default();
        for other in lane_reports {
            add_counts(&mut merged, &other);
        }
        let mut closing = tokio::task::JoinSet::new();
        for lane in &lanes {
            let (group, client) = (lane.group.clone(), lane.client.clone());
            closing.spawn_on(
                async move {
                    group.close();
                    client.close(Duration::from_secs(2)).await;
                },
                &lane.handle,
            );
        }
        while closing.join_next().await.is_some() {}
        drop(subscriptions);

        let mut t = Tally::new(plot_clock);
        for shard in &ctx.tallies {
            t.absorb(&mut lock(shard));
        }
        let secs = elapsed.as_secs_f64();
        let mut r = Map::new();
        r.insert("peers".into(), json!(names));
        r.insert("duration_s".into(), json!((secs * 1000.0).round() / 1000.0));
        r.insert("cpu_s".into(), json!(cpu_s));
        r.insert("inflight".into(), json!(args.inflight));
        // Counted at submission; outcomes below are counted at completion.
        let requests = ctx.next.load(Ordering::Relaxed);
        r.insert("requests".into(), json!(requests));
        r.insert("answers".into(), json!(t.answers));
        r.insert("errors".into(), json!(t.errors));
        r.insert("errors_total".into(), json!(t.errors_total()));
        r.insert("timeouts".into(), json!(t.timeouts));
        r.insert("errors_retryable".into(), json!(t.errors_retryable));
        r.insert("errors_non_retryable".into(), json!(t.errors_non_retryable));
        let codes: Map<String, Value> = t
            .result_codes
            .iter()
            .map(|(k, v)| (k.map_or_else(|| "none".to_string(), |c| c.to_string()), json!(v)))
            .collect();
        r.insert("result_codes".into(), Value::Object(codes));
        r.insert("rps".into(), json!((t.answers as f64 / secs).round() as u64));
        r.insert("latency_us".into(), t.latency_json());
        if let (Some(rate), Some(due)) = (args.rate, due) {
            r.insert("target_rate".into(), json!(rate));
            r.insert("achieved_rate".into(), json!((requests as f64 / secs * 10.0).round() / 10.0));
            r.insert("scheduled".into(), json!(due));
        }
        r.insert(
            "strategy".into(),
            json!(if args.failover { "failover".to_string() } else { args.strategy.to_string() }),
        );
        r.insert("retryable_fraction".into(), json!(args.retryable));
        for (k, v) in merged {
            r.insert(k, v);
        }
        r.insert("events".into(), log.counts_json());
        r.insert("events_dropped".into(), json!(log.dropped.load(Ordering::Relaxed)));
        r.insert("failures".into(), Value::Array(lock(&failures).clone()));
        if let Some(h) = held {
            r.insert("hold".into(), h);
        }
        // Answers with a 2xxx Result-Code.
        if requests != t.outcomes() {
            eprintln!("diam: warning: {requests} requests submitted but {} outcomes counted", t.outcomes());
        }
        let successes: u64 =
            t.result_codes.iter().filter(|(rc, _)| rc.is_some_and(|c| (2000..3000).contains(&c))).map(|(_, n)| n).sum();
        let plotted = plot_out.map(|out| write_plot(out, args, &names, elapsed, &t, &log));
        Ok::<_, Failure>((Value::Object(r), successes, plotted))
    });
    // The runtime's blocking pool may still hold a failure callback.
    rt.shutdown_timeout(Duration::from_secs(1));
    extra_lanes.stop();
    let (report, successes, plotted) = report?;
    if let Some(w) = writer {
        if let Err(e) = w.finish() {
            eprintln!("diam: warning: writing --events: {e}");
        }
    }
    let text = if args.json { serde_json::to_string(&report) } else { serde_json::to_string_pretty(&report) };
    let text = text.map_err(|e| Failure::failed(format!("formatting the report: {e}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("writing output: {e}")))?;
    if let Some(Err(e)) = plotted {
        return Err(Failure::failed(e));
    }
    if successes == 0 {
        return Err(Failure::failed("no request got a 2xxx answer"));
    }
    Ok(())
}
