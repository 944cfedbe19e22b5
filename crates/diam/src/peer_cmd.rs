//! `diam serve`, `diam probe` and `diam send`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diam_client::events::{PeerDown, PeerUp};
use diam_client::{CloseReason, ConnectionConfig, Error, Node, NodeConfig, PeerAddr, Response};
use diam_link::events::{Event, EventData, EventKind};
use diam_proto::peer::result_code;
use diam_proto::watchdog::MIN_WATCHDOG_INTERVAL;
use diam_proto::{apps, avps, commands, disconnect_cause, result_codes, Message};
use serde_json::json;

use crate::{Failure, IdentityArgs, ProbeArgs, SendArgs, ServeArgs, TlsArgs, TuningArgs};

/// Resolves a listening address (`HOST:PORT`, `[v6]:PORT`).
pub(crate) fn resolve(addr: &str) -> Result<SocketAddr, Failure> {
    let addr = addr.trim();
    if let Ok(a) = addr.parse() {
        return Ok(a);
    }
    match addr.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| Failure::input(format!("{addr}: no address"))),
        Err(e) => Err(Failure::input(format!("{addr}: expected HOST:PORT ({e})"))),
    }
}

/// Parses one peer (`host:port`, `[v6]:port`, `aaa://host[:port][;transport=tcp]`,
/// `aaas://host[:port]`); what this build cannot dial is refused here.
pub(crate) fn parse_peer(option: &str, peer: &str) -> Result<PeerAddr, Failure> {
    let addr: PeerAddr = peer.parse().map_err(|e| Failure::input(format!("{option} {e}")))?;
    if addr.transport() != diam_proto::uri::Transport::Tcp {
        return Err(Failure::input(format!("{option} {peer}: only TCP transport is available")));
    }
    Ok(addr)
}

/// Parses `IDENTITY=ADDRESS` or an address alone: `aaa://NAME…` and
/// `aaas://NAME…` name the peer's identity; a bare address leaves it to
/// the capabilities exchange.
pub(crate) fn parse_target(option: &str, item: &str) -> Result<(Option<String>, PeerAddr), Failure> {
    let (identity, addr) = match item.split_once('=') {
        Some((id, addr)) if !id.contains("://") && !id.contains(':') => (Some(id.to_string()), addr),
        _ => (None, item),
    };
    let addr = parse_peer(option, addr)?;
    let identity =
        identity.or_else(|| (item.contains("://") && addr.host_name().is_some()).then(|| addr.host().into_owned()));
    if let Some(id) = &identity {
        if !diam_proto::peer::is_identity(id) {
            return Err(Failure::input(format!("{option} {item}: {id} is not a valid DiameterIdentity")));
        }
    }
    Ok((identity, addr))
}

/// What `serve` and `relay` check of their inbound settings: `--allow`
/// patterns and `--max-connections`; without `--allow` they accept any
/// peer, and say so.
pub(crate) fn check_inbound(name: &str, allow: &[String], max_connections: usize) -> Result<(), Failure> {
    for p in allow {
        let domain = p.strip_prefix("*.").unwrap_or(p);
        if !diam_proto::peer::is_identity(domain) {
            return Err(Failure::input(format!("--allow {p}: expected an identity or *.DOMAIN")));
        }
    }
    if max_connections == 0 {
        return Err(Failure::input("--max-connections must be at least 1"));
    }
    if allow.is_empty() {
        eprintln!("{name}: no --allow given: accepting any peer whose CER passes the checks (a test tool; use --allow in production)");
    }
    Ok(())
}

/// `aaas://` peers need TLS credentials.
pub(crate) fn check_tls_peers<'a>(
    option: &str,
    peers: impl IntoIterator<Item = &'a PeerAddr>,
    tls: &TlsArgs,
) -> Result<(), Failure> {
    for p in peers {
        if p.is_tls() && tls.tls_cert.is_none() {
            return Err(Failure::input(format!("{option} {p}: TLS needs --tls-cert, --tls-key and --tls-ca")));
        }
    }
    Ok(())
}

/// The TLS credentials of `--tls-cert/--tls-key/--tls-ca`, with the key log
/// of `--tls-keylog` or `SSLKEYLOGFILE`.
pub(crate) fn load_tls(tls: &TlsArgs) -> Result<Option<diam_client::TlsConfig>, Failure> {
    crate::config_file::check_tls(tls)?;
    let (Some(cert), Some(key), Some(ca)) = (&tls.tls_cert, &tls.tls_key, &tls.tls_ca) else {
        return Ok(None);
    };
    let mut config =
        diam_client::TlsConfig::from_pem_files(cert, key, ca).map_err(|e| Failure::input(format!("TLS: {e}")))?;
    if let Some(path) = &tls.tls_keylog {
        let log = diam_client::tls::KeyLogToFile::open(path)
            .map_err(|e| Failure::input(format!("--tls-keylog {}: {e}", path.display())))?;
        config = config.with_key_log(Arc::new(log));
    } else if let Some(path) = std::env::var_os("SSLKEYLOGFILE") {
        eprintln!(
            "diam: warning: SSLKEYLOGFILE is set: TLS session secrets go to {} (debugging only)",
            std::path::Path::new(&path).display()
        );
        config = config.with_key_log(Arc::new(rustls::KeyLogFile::new()));
    }
    Ok(Some(config))
}

/// Most addresses one `HOST:P1-P2` range may expand to.
const MAX_RANGE: u32 = 8192;

/// `HOST:P1-P2` as `(HOST, P1, P2)`, checked (1 <= P1 <= P2, at most
/// [`MAX_RANGE`] ports); `None` when `item` is not a range (a URI, or a
/// single port).
fn port_range<'a>(option: &str, item: &'a str) -> Result<Option<(&'a str, u16, u16)>, Failure> {
    if item.contains("://") {
        return Ok(None);
    }
    let Some((host, ports)) = item.rsplit_once(':') else { return Ok(None) };
    let Some((a, b)) = ports.split_once('-') else { return Ok(None) };
    let bad = || {
        Failure::input(format!("{option} {item}: a port range is P1-P2 with 1 <= P1 <= P2, at most {MAX_RANGE} ports"))
    };
    let (lo, hi) = (a.trim().parse::<u16>().map_err(|_| bad())?, b.trim().parse::<u16>().map_err(|_| bad())?);
    if lo == 0 || lo > hi || u32::from(hi - lo) >= MAX_RANGE {
        return Err(bad());
    }
    Ok(Some((host, lo, hi)))
}

/// Resolves a listening address, `HOST:PORT` or `HOST:P1-P2` (one address
/// per port of the range, the host resolved once), and whether it was a
/// range.
pub(crate) fn resolve_listen(option: &str, addr: &str) -> Result<(Vec<SocketAddr>, bool), Failure> {
    let addr = addr.trim();
    match port_range(option, addr)? {
        Some((host, lo, hi)) => {
            let first =
                resolve(&format!("{host}:{lo}")).map_err(|f| Failure::input(format!("{option} {}", f.message)))?;
            Ok(((lo..=hi).map(|port| SocketAddr::new(first.ip(), port)).collect(), true))
        }
        None => Ok((vec![resolve(addr).map_err(|f| Failure::input(format!("{option} {}", f.message)))?], false)),
    }
}

/// Parses a list of peers, where `HOST:P1-P2` means every port in the range.
pub(crate) fn parse_peers(option: &str, list: &[String]) -> Result<Vec<PeerAddr>, Failure> {
    let mut out = Vec::new();
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match port_range(option, item)? {
            Some((host, lo, hi)) => {
                for port in lo..=hi {
                    out.push(parse_peer(option, &format!("{host}:{port}"))?);
                }
            }
            None => out.push(parse_peer(option, item)?),
        }
    }
    let mut seen = std::collections::HashSet::with_capacity(out.len());
    for a in &out {
        if !seen.insert(a) {
            return Err(Failure::input(format!("{option}: {a} is given twice")));
        }
    }
    Ok(out)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with(None)
}

/// The runtime for `--threads`: `None` a multi-thread runtime with a worker
/// per core, `Some(1)` a current-thread runtime (no cross-thread wake-ups:
/// every task on one thread), `Some(n)` a multi-thread runtime with `n`
/// workers.
pub(crate) fn runtime_with(threads: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    let mut b = match threads {
        Some(0) => return Err(Failure::input("--threads must be at least 1")),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.min(1024));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().build().map_err(|e| Failure::failed(format!("starting the runtime: {e}")))
}

/// `--threads N` beyond the first: N − 1 more current-thread runtimes, each
/// on its own thread, kept running until [`Lanes::stop`]. The first lane is
/// the command's own runtime ([`lanes_runtime`]). Work is put on a lane by
/// entering its handle (`handle.enter()`) while building nodes or clients,
/// whose tasks then stay on that lane's thread: a request never crosses
/// threads between the tasks it passes through.
pub(crate) struct Lanes {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Lanes {
    /// Starts `extra` runtimes (none for `None` or `Some(1)`).
    pub(crate) fn start(threads: Option<usize>, name: &str) -> Result<Lanes, Failure> {
        let extra = threads.unwrap_or(1).saturating_sub(1);
        let mut lanes = Lanes { handles: Vec::new(), stops: Vec::new(), threads: Vec::new() };
        for i in 1..=extra {
            let (htx, hrx) = std::sync::mpsc::sync_channel(1);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = htx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = htx.send(Ok(rt.handle().clone()));
                    rt.block_on(async move {
                        let _ = stopped.await;
                    });
                    rt.shutdown_timeout(Duration::from_secs(1));
                })
                .map_err(|e| Failure::failed(format!("starting runtime thread {i}: {e}")))?;
            lanes.threads.push(thread);
            lanes.stops.push(stop);
            match hrx.recv() {
                Ok(Ok(h)) => lanes.handles.push(h),
                Ok(Err(e)) => return Err(Failure::failed(format!("starting runtime {i}: {e}"))),
                Err(_) => return Err(Failure::failed(format!("runtime thread {i} ended at start"))),
            }
        }
        Ok(lanes)
    }

    /// The handles of every lane: the current runtime's first.
    pub(crate) fn all(&self) -> Vec<tokio::runtime::Handle> {
        std::iter::once(tokio::runtime::Handle::current()).chain(self.handles.iter().cloned()).collect()
    }

    /// Stops the extra runtimes (their remaining tasks are dropped) and
    /// waits for their threads.
    pub(crate) fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The command's own runtime for `--threads`: a multi-thread runtime with a
/// worker per core without it, a current-thread runtime with it (the first
/// of the N lanes; [`Lanes::start`] starts the others).
pub(crate) fn lanes_runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    match threads {
        Some(0) => Err(Failure::input("--threads must be at least 1")),
        Some(n) if n > MAX_THREADS => Err(Failure::input(format!("--threads must be at most {MAX_THREADS}"))),
        Some(_) => runtime_with(Some(1)),
        None => runtime_with(None),
    }
}

/// Most runtime threads `--threads` starts.
pub(crate) const MAX_THREADS: usize = 256;

/// The connection config from the common options.
pub(crate) fn config(
    id: &IdentityArgs,
    tuning: &TuningArgs,
    apps_advertised: &[u32],
    tls: &TlsArgs,
) -> Result<ConnectionConfig, Failure> {
    let mut c = ConnectionConfig::new(id.origin_host.clone(), id.origin_realm.clone());
    c.peer.inband_tls = tls.inband_tls;
    c.peer.auth_application_ids = if apps_advertised.is_empty() { vec![apps::RELAY] } else { apps_advertised.to_vec() };
    c.peer.origin_state_id =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(1);
    let tw = Duration::from_millis(tuning.tw_ms);
    if tw < MIN_WATCHDOG_INTERVAL {
        eprintln!(
            "diam: warning: --tw-ms {} is below the RFC 3539 minimum of {} ms",
            tuning.tw_ms,
            MIN_WATCHDOG_INTERVAL.as_millis()
        );
    }
    c.peer.watchdog.interval = tw;
    // RFC 3539: ±2 s of jitter; scaled down for short test intervals.
    c.peer.watchdog.jitter = Duration::from_secs(2).min(tw / 4);
    c.peer.watchdog.dwr_timeout = Duration::from_millis(tuning.dwr_timeout_ms);
    c.peer.watchdog.max_dwr_failures = tuning.max_dwr_failures;
    c.request_timeout = Duration::from_millis(tuning.request_timeout_ms);
    c.max_pending = tuning.max_pending;
    c.validate().map_err(|e| Failure::input(e.to_string()))?;
    Ok(c)
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("writing output: {e}")))
}

/// A small xorshift generator for `--drop-rate` (chaos only).
fn chance(rate: f64, state: &AtomicU64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let mut x = state.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.store(x, Ordering::Relaxed);
    ((x >> 11) as f64 / (1u64 << 53) as f64) < rate
}

pub(crate) fn serve(args: &ServeArgs, matches: &clap::ArgMatches) -> Result<(), Failure> {
    let mut args = args.clone();
    if let Some(path) = &args.config {
        use crate::config_file::{take, take_list};
        let file = crate::config_file::load(path)?;
        if !file.routes.is_empty() || file.default_route.is_some() {
            return Err(Failure::input("--config: routes are for diam relay; diam serve answers every request"));
        }
        let dir = path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        let m = matches;
        crate::config_file::apply_common(
            m,
            &file,
            &dir,
            (&mut args.identity.origin_host, &mut args.identity.origin_realm),
            &mut args.tuning,
            &mut args.tls,
        );
        take(m, "listen", &mut args.listen, file.listen.clone().map(Some));
        take(m, "tls_listen", &mut args.tls_listen, file.tls_listen.clone().map(Some));
        take_list(m, "allow", &mut args.allow, file.allow.clone());
        let peers: Vec<String> = crate::config_file::peer_items(&file)?;
        take_list(m, "connect", &mut args.connect, peers);
        if let Some(a) = &file.metrics {
            let a = a.parse().map_err(|e| Failure::input(format!("--config metrics {a}: {e}")))?;
            take(m, "metrics", &mut args.metrics, Some(Some(a)));
        }
        if let Some(l) = &file.limits {
            take(m, "max_connections", &mut args.max_connections, l.max_connections);
        }
        if let Some(s) = file.serve {
            take_list(m, "app", &mut args.app, s.apps);
            take(m, "result_code", &mut args.result_code, s.result_code);
            take(m, "delay_ms", &mut args.delay_ms, s.delay_ms);
            take(m, "drop_rate", &mut args.drop_rate, s.drop_rate);
        }
        crate::config_file::check_tls(&args.tls)?;
    }
    let args = &args;
    if !(0.0..=1.0).contains(&args.drop_rate) {
        return Err(Failure::input("--drop-rate must be between 0 and 1"));
    }
    let listen =
        args.listen.as_deref().ok_or_else(|| Failure::input("--listen is required (or listen in --config)"))?;
    // `HOST:P1-P2`: one listener per port.
    let (listen, listen_range) = resolve_listen("--listen", listen)?;
    // Each --connect: `aaa://NAME...` names the peer's identity; `NAME=ADDR`
    // gives it explicitly; a bare address learns it from the first
    // capabilities exchange.
    let mut connect = Vec::new();
    for c in &args.connect {
        connect.push(parse_target("--connect", c)?);
    }
    check_tls_peers("--connect", connect.iter().map(|(_, a)| a), &args.tls)?;
    let tls_listen = match &args.tls_listen {
        Some(a) => Some(resolve(a).map_err(|f| Failure::input(format!("--tls-listen {}", f.message)))?),
        None => None,
    };
    let tls = load_tls(&args.tls)?;
    if tls_listen.is_some() && tls.is_none() {
        return Err(Failure::input("--tls-listen needs --tls-cert, --tls-key and --tls-ca"));
    }
    check_inbound("diam serve", &args.allow, args.max_connections)?;
    let mut cfg = config(&args.identity, &args.tuning, &args.app, &args.tls)?;
    cfg.max_concurrent_handlers = cfg.max_pending.max(1024);
    let rc = args.result_code;
    let delay = Duration::from_millis(args.delay_ms);
    let drop_rate = args.drop_rate;
    let rng = Arc::new(AtomicU64::new(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id())));
    let rt = lanes_runtime(args.threads)?;
    if let Some(metrics_addr) = args.metrics {
        let _in_runtime = rt.enter();
        crate::metrics_export::install(metrics_addr)?;
    }
    let lanes = Lanes::start(args.threads, "diam-serve")?;
    let shared_port = args.threads.is_some_and(|n| n > 1);
    let answer = ServeAnswer {
        origin_host: args.identity.origin_host.clone().into(),
        origin_realm: args.identity.origin_realm.clone().into(),
        rc,
        delay,
        drop_rate,
        rng,
    };
    // Taken after the recorder is installed: handles taken before it stay
    // no-ops. Without --metrics they are no-ops anyway.
    let metrics = ServeMetrics {
        requests: metrics::counter!("diam_serve_requests_total"),
        answers: metrics::counter!("diam_serve_answers_total", "result_code" => rc.to_string()),
        dropped: metrics::counter!("diam_serve_dropped_total"),
        retransmissions: metrics::counter!("diam_serve_retransmissions_total"),
    };
    let lane_handles = {
        let _in_runtime = rt.enter();
        lanes.all()
    };
    let served = rt.block_on(async move {
        let max_connections = args.max_connections;
        let node_config = NodeConfig {
            connection: cfg,
            max_connections,
            max_connections_per_source: NodeConfig::default().max_connections_per_source.min(max_connections),
            ..NodeConfig::default()
        };
        // One node per listening port, with the same identity, handler and
        // counters, and one event dispatcher: a node keeps one connection
        // per peer identity (RFC 6733 §5.6.4; a second CER gets 5012), so a
        // range stands for as many servers, and one client identity (such
        // as `diam bench --peer HOST:P1-P2`) can hold a connection to each.
        // A single address is one node, as before. With --threads N, every
        // runtime has its own nodes on the same ports.
        // As a node's own: listeners on one worker thread, never on a
        // peer's task.
        let events = diam_link::events::EventDispatcher::builder()
            .executor(diam_link::events::ExecutorConfig::new(1, 4096))
            .build()
            .map_err(|e| Failure::failed(format!("event dispatcher: {e}")))?;
        let stop = shutdown_signal("diam serve");
        let mut nodes = Vec::with_capacity(listen.len());
        // Each lane's own counters (no cache line shared between threads on
        // the request path), summed at the end.
        let mut totals = Vec::new();
        let mut addrs = listen;
        for (lane, handle) in lane_handles.iter().enumerate() {
            let _in_lane = handle.enter();
            let lane_totals = Arc::new(ServeTotals::default());
            totals.push(lane_totals.clone());
            let handler = serve_handler(answer.clone(), metrics.clone(), lane_totals);
            // The lane's nodes share one timer for their watchdogs.
            let grid = diam_client::TimerGrid::new();
            for addr in addrs.iter_mut() {
                let mut builder = Node::builder(node_config.clone())
                    .default_handler(handler.clone())
                    .events(events.clone())
                    .timer_grid(grid.clone());
                if args.allow.is_empty() {
                    builder = builder.accept_any();
                }
                for p in &args.allow {
                    builder = builder.allow(p.clone());
                }
                if let Some(t) = &tls {
                    builder = builder.tls(t.clone());
                }
                let node = builder.build().map_err(|e| Failure::input(e.to_string()))?;
                // The first lane picks the ports (port 0); the others share them.
                let bound = if shared_port {
                    let acceptor = diam_client::TcpAcceptor::bind_shared(*addr)
                        .map_err(|e| Failure::failed(format!("listening on {addr}: {e}")))?;
                    node.listen(acceptor)
                } else {
                    node.listen_tcp(*addr).await
                };
                let bound = bound.map_err(|e| Failure::failed(e.to_string()))?;
                if lane == 0 {
                    *addr = bound;
                }
                nodes.push(node);
            }
        }
        let addrs = addrs;
        let node = nodes[0].clone();
        let out = Arc::new(Mutex::new(()));
        let _peer_events = peer_events(&node, out.clone());
        let addr = addrs[0];
        let tls_addr = match tls_listen {
            Some(a) => Some(node.listen_tls(a).await.map_err(|e| Failure::failed(e.to_string()))?),
            None => None,
        };
        {
            let _guard = out.lock();
            let mut line = json!({"event": "listening", "addr": addr.to_string()});
            if listen_range {
                line["addrs"] = addrs.iter().map(ToString::to_string).collect();
            }
            if let Some(t) = tls_addr {
                line["tls_addr"] = json!(t.to_string());
            }
            print_json(&line)?;
        }
        #[cfg(unix)]
        if args.tls.tls_cert.is_some() {
            reload_on_hangup(nodes.clone(), args.tls.clone(), "diam serve");
        }
        // Outbound peers belong to the first node (the others would be
        // refused by them as duplicates).
        for (identity, peer) in connect {
            let added = match identity {
                Some(id) => node.add_peer(&id, [peer.clone()]).map(drop),
                None => node.add_address_peer(peer.clone()).map(drop),
            };
            added.map_err(|e| Failure::input(format!("--connect {peer}: {e}")))?;
        }
        stop.await;
        let mut stopping = tokio::task::JoinSet::new();
        for n in nodes {
            stopping.spawn(async move { n.shutdown(Duration::from_secs(5)).await });
        }
        while stopping.join_next().await.is_some() {}
        // Let the last peer_down lines out before the summary.
        let _ = tokio::task::spawn_blocking(move || events.shutdown(Duration::from_secs(1))).await;
        let sum = |f: fn(&ServeTotals) -> &AtomicU64| totals.iter().map(|t| f(t).load(Ordering::Relaxed)).sum::<u64>();
        let mut line = json!({
            "event": "stopped",
            "addr": addr.to_string(),
            "requests": sum(|t| &t.requests),
            "answers": sum(|t| &t.answers),
            "dropped": sum(|t| &t.dropped),
            "retransmissions": sum(|t| &t.retransmissions),
        });
        if totals.len() > 1 {
            // How the kernel spread the work over the runtimes.
            line["lane_requests"] = totals.iter().map(|t| t.requests.load(Ordering::Relaxed)).collect();
        }
        let _guard = out.lock();
        print_json(&line)
    });
    lanes.stop();
    served
}

/// What `diam serve` answers with, and how.
#[derive(Clone)]
struct ServeAnswer {
    origin_host: Arc<str>,
    origin_realm: Arc<str>,
    rc: u32,
    delay: Duration,
    drop_rate: f64,
    rng: Arc<AtomicU64>,
}

impl ServeAnswer {
    /// The response to `req`, counted in `m` and `t`.
    fn respond(&self, req: &Message, m: &ServeMetrics, t: &ServeTotals) -> Response {
        if chance(self.drop_rate, &self.rng) {
            m.dropped.increment(1);
            t.dropped.fetch_add(1, Ordering::Relaxed);
            return Response::NoAnswer;
        }
        m.answers.increment(1);
        t.answers.fetch_add(1, Ordering::Relaxed);
        Response::Answer(ANSWER_BUF.with(|cell| {
            // Each answer is copied into its connection's write buffer and
            // dropped before the next request is read, so the room is taken
            // back by `reserve` instead of allocated again.
            let mut spare = cell.take();
            if spare.capacity() < 1024 {
                spare.reserve(ANSWER_BUF_SIZE);
            }
            let (answer, spare) =
                standard_answer_in(req, self.rc, &self.origin_host, &self.origin_realm, spare).build_reusing();
            cell.replace(spare);
            answer
        }))
    }
}

/// Room for answers, per thread (see [`ServeAnswer::respond`]).
const ANSWER_BUF_SIZE: usize = 64 * 1024;

thread_local! {
    static ANSWER_BUF: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::default();
}

/// The handler of one lane: counts, then answers at once (no delay: no
/// task, no allocation but the answer's room) or after `--delay-ms`.
fn serve_handler(
    answer: ServeAnswer,
    metrics: ServeMetrics,
    totals: Arc<ServeTotals>,
) -> Arc<dyn diam_client::Handler> {
    struct Serve(Arc<(ServeAnswer, ServeMetrics, Arc<ServeTotals>)>);
    impl diam_client::Handler for Serve {
        fn handle(&self, req: Message, _peer: &diam_proto::peer::PeerInfo) -> diam_client::HandlerFuture {
            let (answer, m, t) = &*self.0;
            m.requests.increment(1);
            t.requests.fetch_add(1, Ordering::Relaxed);
            if req.flags().is_retransmit() {
                m.retransmissions.increment(1);
                t.retransmissions.fetch_add(1, Ordering::Relaxed);
            }
            if answer.delay.is_zero() {
                return diam_client::HandlerFuture::ready(answer.respond(&req, m, t));
            }
            let state = self.0.clone();
            diam_client::HandlerFuture::new(async move {
                let (answer, m, t) = &*state;
                tokio::time::sleep(answer.delay).await;
                answer.respond(&req, m, t)
            })
        }
    }
    Arc::new(Serve(Arc::new((answer, metrics, totals))))
}

/// `diam serve`'s counters (exported with `--metrics`).
#[derive(Clone)]
struct ServeMetrics {
    /// Application requests handed to the handler.
    requests: metrics::Counter,
    /// Answers produced, labelled with their Result-Code.
    answers: metrics::Counter,
    /// Requests left unanswered (`--drop-rate`).
    dropped: metrics::Counter,
    /// Requests that arrived with the T flag (retransmitted after a failover).
    retransmissions: metrics::Counter,
}

/// The same counts, per lane, for the summary printed at shutdown.
#[derive(Default)]
struct ServeTotals {
    requests: AtomicU64,
    answers: AtomicU64,
    dropped: AtomicU64,
    retransmissions: AtomicU64,
}

/// The answer `diam serve` gives: Session-Id (copied by `answer_to`),
/// Result-Code, Origin-Host/Realm, and the request's Auth-Application-Id,
/// CC-Request-Type and CC-Request-Number when present.
pub(crate) fn standard_answer(req: &Message, rc: u32, origin_host: &str, origin_realm: &str) -> Message {
    standard_answer_in(req, rc, origin_host, origin_realm, bytes::BytesMut::with_capacity(256)).build()
}

/// [`standard_answer`] encoded into `buf`, the request's AVPs read in one
/// pass.
fn standard_answer_in(
    req: &Message,
    rc: u32,
    origin_host: &str,
    origin_realm: &str,
    buf: bytes::BytesMut,
) -> diam_proto::MessageBuilder {
    let mut copied = [None, None, None];
    let keys = [avps::AUTH_APPLICATION_ID.code(), avps::CC_REQUEST_NUMBER.code(), avps::CC_REQUEST_TYPE.code()];
    for avp in req.avps().flatten() {
        if avp.vendor_id().is_none() {
            if let Some(i) = keys.iter().position(|&k| k == avp.code()) {
                copied[i].get_or_insert(avp);
            }
        }
    }
    let mut b = Message::answer_to_in(req, buf)
        .error(result_codes::class(rc) == 3)
        .avp(avps::RESULT_CODE, rc)
        .avp(avps::ORIGIN_HOST, origin_host)
        .avp(avps::ORIGIN_REALM, origin_realm);
    for avp in copied.iter().flatten() {
        b = b.copy_avp(avp);
    }
    b
}

/// Prints one JSON line per peer change (listeners run on the dispatcher's
/// thread, never on a peer's task); `out` serializes stdout lines.
pub(crate) fn peer_events(node: &Node, out: Arc<Mutex<()>>) -> diam_link::events::Subscription {
    node.events().subscribe(EventKind::Custom, move |ev: &Event| {
        let EventData::Custom(c) = ev.data() else { return };
        let line = if let Some(up) = c.downcast_ref::<PeerUp>() {
            json!({"event": "peer_up", "peer": up.peer, "direction": up.direction.as_str(), "transport": up.transport.as_str()})
        } else if let Some(down) = c.downcast_ref::<PeerDown>() {
            json!({"event": "peer_down", "peer": down.peer, "reason": down.reason.to_string(), "reason_kind": down.reason.kind_name()})
        } else {
            return;
        };
        let _guard = out.lock();
        let _ = print_json(&line);
    })
}

/// SIGHUP reloads the certificate, key and CA of every node in `nodes`
/// for new connections.
#[cfg(unix)]
pub(crate) fn reload_on_hangup(nodes: Vec<Node>, tls_args: TlsArgs, name: &'static str) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match load_tls(&tls_args) {
                Ok(Some(t)) => match nodes.iter().try_for_each(|node| node.reload_tls(t.clone())) {
                    Ok(()) => eprintln!("{name}: TLS credentials reloaded"),
                    Err(e) => eprintln!("{name}: TLS reload: {e}"),
                },
                Ok(None) => {}
                Err(f) => eprintln!("{name}: TLS reload failed, keeping the old credentials: {}", f.message),
            }
        }
    });
}

/// Resolves at SIGINT or SIGTERM. The handlers are installed when this is
/// called (not when it is first awaited): call it before announcing that
/// the node is listening, so a signal sent right after that line is seen.
pub(crate) fn shutdown_signal(name: &'static str) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::terminate()).ok(), signal(SignalKind::interrupt()).ok())
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Some(mut term), Some(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        eprintln!("{name}: shutting down, sending DPR to peers");
    }
}

fn step(result: Result<(u32, Duration), String>) -> (serde_json::Value, bool) {
    match result {
        Ok((rc, rtt)) => (json!({"result_code": rc, "rtt_us": rtt.as_micros() as u64}), rc == 2001),
        Err(e) => (json!({"result_code": null, "error": e}), false),
    }
}

/// A client node for one-off commands (probe, send).
fn one_off_node(cfg: ConnectionConfig, tls: Option<diam_client::TlsConfig>) -> Result<Node, Failure> {
    let mut b = Node::builder(NodeConfig { connection: cfg, ..NodeConfig::default() });
    if let Some(t) = tls {
        b = b.tls(t);
    }
    b.build().map_err(|e| Failure::input(e.to_string()))
}

pub(crate) fn probe(args: &ProbeArgs) -> Result<(), Failure> {
    let (identity, addr) = parse_target("--peer", &args.peer)?;
    check_tls_peers("--peer", [&addr], &args.tls)?;
    let tls = load_tls(&args.tls)?;
    let mut cfg = config(&args.identity.to_identity(), &TuningArgs::default(), &args.app, &args.tls)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    if timeout.is_zero() {
        return Err(Failure::input("--timeout-ms must be positive"));
    }
    cfg.connect_timeout = timeout;
    cfg.peer.cer_timeout = timeout;
    cfg.request_timeout = timeout;
    cfg.peer.dpa_timeout = timeout;
    let origin_host = args.identity.origin_host.clone();
    let origin_realm = args.identity.origin_realm.clone();
    let rt = runtime()?;
    let (report, ok) = rt.block_on(async move {
        let mut report = json!({"peer": addr.to_string(), "peer_origin_host": null});
        let node = match one_off_node(cfg, tls) {
            Ok(n) => n,
            Err(f) => return (json!({"error": f.message}), false),
        };
        let start = Instant::now();
        let connected = match &identity {
            Some(id) => node.connect_to(id, addr).await,
            None => node.connect(addr).await,
        };
        let peer = match connected {
            Ok(p) => p,
            Err(e) => {
                let cea = match &e {
                    Error::HandshakeFailed { result_code, .. } => {
                        json!({"result_code": result_code, "error": e.to_string()})
                    }
                    _ => json!({"result_code": null, "error": e.to_string()}),
                };
                report["cea"] = cea;
                return (report, false);
            }
        };
        let (cea, mut ok) = step(Ok((2001, start.elapsed())));
        report["cea"] = cea;
        report["peer_origin_host"] = json!(peer.peer_info().map(|p| p.origin_host.clone()));
        report["peer_product_name"] = json!(peer.peer_info().map(|p| p.product_name.clone()));

        let dwr = Message::request(apps::COMMON, commands::DEVICE_WATCHDOG)
            .avp(avps::ORIGIN_HOST, origin_host.as_str())
            .avp(avps::ORIGIN_REALM, origin_realm.as_str())
            .build();
        let t = Instant::now();
        let dwa = match peer.send(dwr).await {
            Ok(ans) => {
                result_code(&ans).ok_or_else(|| "DWA without Result-Code".to_string()).map(|rc| (rc, t.elapsed()))
            }
            Err(e) => Err(e.to_string()),
        };
        let (dwa, dwa_ok) = step(dwa);
        report["dwa"] = dwa;
        // After the DWA: in-band TLS is up by then.
        report["transport"] = json!(peer.transport().map(|t| t.as_str()));
        if let Some(tls) = peer.tls() {
            report["tls"] = json!({
                "version": tls.version,
                "cipher": tls.cipher,
                "peer_subject": tls.peer_subject(),
                "peer_dns_names": tls.peer_dns_names(),
            });
        }
        let t = Instant::now();
        let dpa = match peer.close(disconnect_cause::REBOOTING).await {
            Some(CloseReason::LocalDisconnect { dpa_result_code: Some(rc), .. }) => Ok((rc, t.elapsed())),
            Some(other) => Err(format!("no DPA: {other}")),
            None => Err("no DPA".to_string()),
        };
        let (dpa, dpa_ok) = step(dpa);
        report["dpa"] = dpa;
        ok &= dwa_ok && dpa_ok;
        (report, ok)
    });
    print_json(&report)?;
    if ok {
        Ok(())
    } else {
        Err(Failure::failed("probe: not every step answered 2001"))
    }
}

pub(crate) fn send(args: &SendArgs) -> Result<(), Failure> {
    let (identity, addr) = parse_target("--peer", &args.peer)?;
    check_tls_peers("--peer", [&addr], &args.tls)?;
    let tls = load_tls(&args.tls)?;
    let dict = crate::codec_cmd::load_dictionary(&args.dict)?;
    if args.command > 0x00ff_ffff {
        return Err(Failure::input("--command must fit in 24 bits"));
    }
    let mut cfg = config(&args.identity.to_identity(), &args.tuning, &[args.app], &args.tls)?;
    cfg.request_timeout = Duration::from_millis(args.timeout_ms.unwrap_or(args.tuning.request_timeout_ms));
    let parsed: Vec<_> = args
        .avp
        .iter()
        .map(|a| crate::json::cli_avp(a, &dict))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::input(e.to_string()))?;
    let has = |code: u32| parsed.iter().any(|a| a.code == code && a.vendor_id.is_none());
    let mut b = Message::request(args.app, args.command).proxiable(true);
    if !has(avps::SESSION_ID.code()) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let sid = format!("{};{};{}", args.identity.origin_host, now.as_secs(), now.subsec_nanos());
        b = b.avp(avps::SESSION_ID, sid);
    }
    // Session-Id first (RFC 6733 §8.8), then identity, then the user's AVPs.
    for a in parsed.iter().filter(|a| a.code == avps::SESSION_ID.code() && a.vendor_id.is_none()) {
        b = crate::json::write_cli_avp(b, a, &dict).map_err(|e| Failure::input(e.to_string()))?;
    }
    if !has(avps::ORIGIN_HOST.code()) {
        b = b.avp(avps::ORIGIN_HOST, args.identity.origin_host.as_str());
    }
    if !has(avps::ORIGIN_REALM.code()) {
        b = b.avp(avps::ORIGIN_REALM, args.identity.origin_realm.as_str());
    }
    for a in parsed.iter().filter(|a| !(a.code == avps::SESSION_ID.code() && a.vendor_id.is_none())) {
        b = crate::json::write_cli_avp(b, a, &dict).map_err(|e| Failure::input(e.to_string()))?;
    }
    let request = b.build();
    let rt = runtime()?;
    let node = {
        let _in_runtime = rt.enter();
        one_off_node(cfg, tls)?
    };
    let answer = rt.block_on(async move {
        let peer = match &identity {
            Some(id) => node.connect_to(id, addr).await?,
            None => node.connect(addr).await?,
        };
        let answer = peer.send(request).await;
        peer.close(disconnect_cause::REBOOTING).await;
        answer
    });
    let answer = answer.map_err(|e| Failure::failed(format!("send: {e}")))?;
    let json = crate::json::message_to_json(&answer, &dict)
        .map_err(|e| Failure::failed(format!("the answer is malformed: {e}")))?;
    print_json(&json)?;
    match result_code(&answer) {
        Some(rc) if result_codes::class(rc) == 2 => Ok(()),
        Some(rc) => Err(Failure::failed(format!("the peer answered Result-Code {rc}"))),
        None => Err(Failure::failed("the answer has no Result-Code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ccr(n: u32) -> Message {
        Message::request(apps::CREDIT_CONTROL, commands::CREDIT_CONTROL)
            .avp(avps::SESSION_ID, format!("client.example.com;1;{n}"))
            .avp(avps::ORIGIN_HOST, "client.example.com")
            .avp(avps::ORIGIN_REALM, "example.com")
            .avp(avps::DESTINATION_REALM, "example.net")
            .avp(avps::AUTH_APPLICATION_ID, apps::CREDIT_CONTROL)
            .avp(avps::SERVICE_CONTEXT_ID, "32251@3gpp.org")
            .avp(avps::CC_REQUEST_TYPE, 1i32)
            .avp(avps::CC_REQUEST_NUMBER, n)
            .build()
    }

    fn serve_answer() -> (ServeAnswer, ServeMetrics, ServeTotals) {
        let answer = ServeAnswer {
            origin_host: "server.example.net".into(),
            origin_realm: "example.net".into(),
            rc: 2001,
            delay: Duration::ZERO,
            drop_rate: 0.0,
            rng: Arc::new(AtomicU64::new(1)),
        };
        let metrics = ServeMetrics {
            requests: metrics::Counter::noop(),
            answers: metrics::Counter::noop(),
            dropped: metrics::Counter::noop(),
            retransmissions: metrics::Counter::noop(),
        };
        (answer, metrics, ServeTotals::default())
    }

    #[test]
    fn the_answer_carries_what_the_workload_says_in_order() {
        let req = ccr(7);
        let a = standard_answer(&req, 2001, "server.example.net", "example.net");
        let codes: Vec<u32> = a.avps().flatten().map(|a| a.code()).collect();
        assert_eq!(
            codes,
            [
                avps::SESSION_ID.code(),
                avps::RESULT_CODE.code(),
                avps::ORIGIN_HOST.code(),
                avps::ORIGIN_REALM.code(),
                avps::AUTH_APPLICATION_ID.code(),
                avps::CC_REQUEST_NUMBER.code(),
                avps::CC_REQUEST_TYPE.code(),
            ]
        );
        assert_eq!(a.get(avps::CC_REQUEST_NUMBER).unwrap(), Some(7));
        assert_eq!(a.hop_by_hop(), req.hop_by_hop());
        // The reusing path encodes the same bytes.
        let (answer, m, t) = serve_answer();
        let Response::Answer(b) = answer.respond(&req, &m, &t) else { panic!("no answer") };
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(t.answers.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn answers_are_built_without_allocating() {
        let (answer, m, t) = serve_answer();
        let requests: Vec<Message> = (0..2000).map(ccr).collect();
        // The counter works: a plain allocation is seen.
        assert_eq!(crate::alloc_count::allocations_during(|| drop(std::hint::black_box(Box::new(1u8)))), 1);
        // The first answer takes the thread's room.
        drop(answer.respond(&requests[0], &m, &t));
        let mut bytes = 0;
        let n = crate::alloc_count::allocations_during(|| {
            for req in &requests {
                // As the connection does: the answer is written out (here:
                // measured) and dropped before the next request.
                match answer.respond(req, &m, &t) {
                    Response::Answer(a) => bytes += a.len(),
                    _ => panic!("no answer"),
                }
            }
        });
        assert_eq!(n, 0, "allocations for {} answers", requests.len());
        assert!(bytes > requests.len() * 100, "{bytes}");
        // Room is taken back, not grown: far more answer bytes than the
        // buffer holds went through it.
        assert!(bytes > 2 * ANSWER_BUF_SIZE, "{bytes}");
    }

    #[test]
    fn a_ready_handler_future_needs_no_allocation() {
        let (answer, m, t) = serve_answer();
        let h = serve_handler(answer, m, Arc::new(t));
        let info = diam_proto::peer::PeerInfo::default();
        let req = ccr(1);
        drop(h.handle(req.clone(), &info));
        let n = crate::alloc_count::allocations_during(|| {
            for _ in 0..100 {
                let mut fut = h.handle(req.clone(), &info);
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match std::future::Future::poll(std::pin::Pin::new(&mut fut), &mut cx) {
                    std::task::Poll::Ready(Response::Answer(_)) => {}
                    other => panic!("{other:?}"),
                }
            }
        });
        assert_eq!(n, 0);
    }
}
