//! [`AddressClient`]: at most one connection per address, created on
//! demand, cleaned up the moment it fails, reconnected with backoff; a thin
//! layer over a [`Node`]'s peers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use diam_link::events::{EventDispatcher, Subscription};
use diam_proto::psm::PeerState;
use diam_proto::uri::PeerAddr;
use diam_proto::{disconnect_cause, Message};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::events::PeerFailure;
use crate::handle::lock;
use crate::{ConnectionConfig, Error, Handler, Node, NodeConfig, PeerHandle, PeerStats, ReconnectConfig};

/// Pool settings. Every field has a documented default.
#[derive(Clone)]
pub struct PoolConfig {
    /// Identity, capabilities, timeouts and watchdog of every connection.
    pub connection: ConnectionConfig,
    /// Reconnect a failed connection in place (true), or drop the entry so
    /// the next send dials afresh (false). Default true.
    pub reconnect_enabled: bool,
    /// First reconnect delay. Default 1 s.
    pub reconnect_interval: Duration,
    /// Longest reconnect delay. Default 60 s.
    pub max_reconnect_delay: Duration,
    /// Growth factor of the reconnect delay (at least 1). Default 1.5.
    pub reconnect_backoff: f64,
    /// Reconnect attempts before the entry is dropped (its waiters then get
    /// the last error). Default 100.
    pub max_reconnect_attempts: u32,
    /// How long a connection must stay open for the reconnect schedule to
    /// start over; shorter ones keep growing the delay. Default 10 s.
    pub reconnect_stable_after: Duration,
    /// Minimum delay before reconnecting to a peer that closed with DPR
    /// BUSY or DO_NOT_WANT_TO_TALK_TO_YOU (RFC 6733 §5.4.3). Default 60 s.
    pub busy_backoff: Duration,
    /// While reconnecting, sends fail at once with [`Error::Reconnecting`]
    /// (true) or wait up to their timeout (false). Default false.
    pub fail_fast_while_reconnecting: bool,
    /// Close connections idle this long; zero never does. Default zero.
    pub idle_timeout: Duration,
    /// Replace connections older than this (gracefully: the replacement is
    /// opened first, in-flight requests drain, then the old one gets DPR);
    /// zero keeps them. Default zero.
    pub max_lifetime: Duration,
    /// Sweep for idle and lifetime checks, and the metrics export.
    /// Default 30 s.
    pub health_check_interval: Duration,
    /// Most addresses held at once. Default 1024.
    pub max_connections: usize,
    /// Answers requests peers send us (e.g. RAR); none means 3001.
    pub handler: Option<Arc<dyn Handler>>,
    /// TLS credentials for `aaas://` addresses and in-band TLS
    /// ([`crate::ConnectionConfig`]'s `peer.inband_tls`). Default none.
    pub tls: Option<crate::TlsConfig>,
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("connection", &self.connection)
            .field("reconnect_enabled", &self.reconnect_enabled)
            .field("reconnect_interval", &self.reconnect_interval)
            .field("max_reconnect_delay", &self.max_reconnect_delay)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("reconnect_stable_after", &self.reconnect_stable_after)
            .field("busy_backoff", &self.busy_backoff)
            .field("fail_fast_while_reconnecting", &self.fail_fast_while_reconnecting)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("health_check_interval", &self.health_check_interval)
            .field("max_connections", &self.max_connections)
            .field("handler", &self.handler.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            connection: ConnectionConfig::default(),
            reconnect_enabled: true,
            reconnect_interval: Duration::from_secs(1),
            max_reconnect_delay: Duration::from_secs(60),
            reconnect_backoff: 1.5,
            max_reconnect_attempts: 100,
            reconnect_stable_after: Duration::from_secs(10),
            busy_backoff: Duration::from_secs(60),
            fail_fast_while_reconnecting: false,
            idle_timeout: Duration::ZERO,
            max_lifetime: Duration::ZERO,
            health_check_interval: Duration::from_secs(30),
            max_connections: 1024,
            handler: None,
            tls: None,
        }
    }
}

impl PoolConfig {
    /// Defaults with the given identity.
    pub fn new(origin_host: impl Into<String>, origin_realm: impl Into<String>) -> Self {
        PoolConfig { connection: ConnectionConfig::new(origin_host, origin_realm), ..PoolConfig::default() }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), Error> {
        self.connection.validate()?;
        self.reconnect(Some(self.max_reconnect_attempts)).validate()?;
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.health_check_interval.is_zero() {
            return bad("health_check_interval must be positive");
        }
        if self.max_connections == 0 || self.max_connections > 1 << 20 {
            return bad("max_connections must be between 1 and 1048576");
        }
        Ok(())
    }

    fn reconnect(&self, max_attempts: Option<u32>) -> ReconnectConfig {
        ReconnectConfig {
            enabled: self.reconnect_enabled,
            initial: self.reconnect_interval,
            max: self.max_reconnect_delay,
            factor: self.reconnect_backoff,
            max_attempts,
            stable_after: self.reconnect_stable_after,
            busy_backoff: self.busy_backoff,
        }
    }
}

/// What a failure callback learns: see [`PeerFailure`].
pub type PoolFailure = PeerFailure;

struct Entry {
    addr: PeerAddr,
    peer: PeerHandle,
    created: Instant,
    /// Held by a peer group: never closed for idleness.
    pinned: AtomicBool,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    answers: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    errors_by_kind: Mutex<HashMap<&'static str, u64>>,
    created: AtomicU64,
    closed: AtomicU64,
    idle_closures: AtomicU64,
    lifetime_expirations: AtomicU64,
    /// Traffic and attempts of entries already gone.
    retired: Mutex<PeerStats>,
}

/// Pool-wide counters (see [`AddressClient::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Requests submitted.
    pub requests: u64,
    /// Answers received.
    pub answers: u64,
    /// Requests that ended in an error other than a timeout.
    pub errors: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Errors (timeouts included) by [`Error::kind_name`].
    pub errors_by_kind: Vec<(&'static str, u64)>,
    /// Addresses with an entry now.
    pub active_connections: u64,
    /// Entries created.
    pub entries_created: u64,
    /// Connections opened (first and re-established).
    pub connections_created: u64,
    /// Connection attempts that failed (dial or capabilities exchange).
    pub failed_attempts: u64,
    /// Connections lost after opening.
    pub connections_lost: u64,
    /// Entries closed (idle, given up, or at shutdown).
    pub connections_closed: u64,
    /// Connections closed for idleness.
    pub idle_closures: u64,
    /// Connections replaced for reaching their maximum lifetime.
    pub lifetime_expirations: u64,
    /// Messages written, all connections.
    pub messages_sent: u64,
    /// Messages read, all connections.
    pub messages_received: u64,
    /// Bytes written, all connections.
    pub bytes_sent: u64,
    /// Bytes read, all connections.
    pub bytes_received: u64,
}

/// One address's connection, as [`AddressClient::connection`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionSnapshot {
    /// The remote address.
    pub addr: PeerAddr,
    /// The peer's state.
    pub state: PeerState,
    /// The peer's Origin-Host, once known.
    pub origin_host: Option<String>,
    /// Counters of the entry (all its connections).
    pub stats: PeerStats,
    /// Times the connection opened again after a loss.
    pub reconnects: u64,
    /// The last error seen on this address.
    pub last_error: Option<String>,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Age of the entry.
    pub age: Duration,
}

/// One request's place in the pool's accounting: its outcome is counted
/// exactly once, so `requests == answers + errors + timeouts` holds even when
/// a caller drops its future.
pub(crate) struct Counted<'a> {
    client: &'a AddressClient,
    done: bool,
}

impl Counted<'_> {
    /// Counts the outcome.
    pub(crate) fn finish(mut self, result: &Result<Message, Error>) {
        self.done = true;
        self.client.count_outcome(result);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.client.count_outcome(&Err(Error::Cancelled));
        }
    }
}

/// Handles of the per-request counters, resolved once (with a recorder
/// installed, `counter!` by name is a registry lookup on every call).
struct RequestMetrics {
    requests: metrics::Counter,
    answers: metrics::Counter,
    timeouts: metrics::Counter,
}

struct Inner {
    config: PoolConfig,
    node: Node,
    metrics: RequestMetrics,
    /// Read on every send, written when an entry comes or goes; the periodic
    /// sweep only reads, so it never holds a send up.
    entries: RwLock<HashMap<PeerAddr, Arc<Entry>>>,
    counters: Counters,
    subscriptions: Mutex<Vec<Subscription>>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A Diameter client keyed by remote address (the seed's API, over a
/// [`Node`]'s peers).
///
/// * At most one connection per address, dialled at the first send and
///   reused afterwards. Concurrent first sends share one establishment
///   (dial + CER/CEA); if it fails, all of them get the same error; if the
///   caller that started it is cancelled, it continues for the others.
/// * When a connection fails (read/write error, EOF, stalled write,
///   watchdog DOWN, DPR), the peer reconnects in place with backoff
///   ([`PoolConfig::reconnect_enabled`]) or its entry is removed at once so
///   the next send dials afresh. The reconnect delay grows on every failed
///   attempt, whatever its kind.
/// * Idle connections close and old ones are rotated gracefully
///   ([`PoolConfig::idle_timeout`], [`PoolConfig::max_lifetime`]).
/// * Every lifecycle step is a typed event on [`events`](Self::events);
///   counters go to [`stats`](Self::stats) and the `metrics` facade.
///
/// ```no_run
/// # async fn run() -> Result<(), diam_client::Error> {
/// use diam_client::{AddressClient, PoolConfig};
/// use diam_proto::{avps, Message};
/// let mut config = PoolConfig::new("client.example.com", "example.com");
/// config.connection.peer.auth_application_ids = vec![4];
/// let client = AddressClient::new(config)?;
/// let ccr = Message::request(4, 272).avp(avps::SESSION_ID, "client.example.com;1;1").build();
/// let cca = client.send("127.0.0.1:3868".parse::<std::net::SocketAddr>().unwrap(), ccr).await?;
/// # let _ = cca;
/// client.close(std::time::Duration::from_secs(2)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AddressClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AddressClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddressClient").field("connections", &self.active_connections()).finish()
    }
}

fn count_metric(name: &'static str) {
    metrics::counter!(name).increment(1);
}

impl AddressClient {
    /// A pool with `config` (validated here). Must be called inside a tokio
    /// runtime: it starts the sweep task. Install a `metrics` recorder before
    /// creating the pool for its counters to be exported.
    pub fn new(config: PoolConfig) -> Result<AddressClient, Error> {
        Self::build(config, None)
    }

    /// Like [`new`](Self::new), emitting lifecycle events on `events` (e.g.
    /// a dispatcher configured with its own executor).
    pub fn with_events(config: PoolConfig, events: EventDispatcher) -> Result<AddressClient, Error> {
        Self::build(config, Some(events))
    }

    fn build(config: PoolConfig, events: Option<EventDispatcher>) -> Result<AddressClient, Error> {
        config.validate()?;
        let node_config = NodeConfig {
            connection: config.connection.clone(),
            reconnect: config.reconnect(Some(config.max_reconnect_attempts)),
            max_peers: config.max_connections,
            ..NodeConfig::default()
        };
        let mut builder = Node::builder(node_config);
        if let Some(h) = &config.handler {
            builder = builder.default_handler(h.clone());
        }
        if let Some(e) = events {
            builder = builder.events(e);
        }
        if let Some(t) = &config.tls {
            builder = builder.tls(t.clone());
        }
        let node = builder.build()?;
        let inner = Arc::new(Inner {
            metrics: RequestMetrics {
                requests: metrics::counter!("diam_client_requests_total"),
                answers: metrics::counter!("diam_client_answers_total"),
                timeouts: metrics::counter!("diam_client_timeouts_total"),
            },
            config,
            node,
            entries: RwLock::new(HashMap::new()),
            counters: Counters::default(),
            subscriptions: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
        });
        let _ = inner.node.events().emit(diam_link::events::Event::new(
            diam_link::events::ConnectionId::unique(),
            None,
            diam_link::events::EventData::PoolCreated,
        ));
        tokio::spawn(sweep_loop(Arc::downgrade(&inner)));
        Ok(AddressClient { inner })
    }

    /// The node under the client (its peers are this client's connections).
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The lifecycle event dispatcher: subscribe to connection events here.
    pub fn events(&self) -> &EventDispatcher {
        self.inner.node.events()
    }

    /// Adds a failure callback: it runs for every connection failure and
    /// failed attempt, on the event dispatcher's executor, after the client
    /// has already reacted (entry removed or reconnecting), so a slow
    /// callback delays nothing. It lives as long as the client.
    pub fn on_failure(&self, callback: impl Fn(&PoolFailure) + Send + Sync + 'static) {
        let sub = self.inner.node.on_failure(callback);
        lock(&self.inner.subscriptions).push(sub);
    }

    /// Sends `request` to `addr` and waits for the answer, within the
    /// connection's request timeout (establishment included).
    pub async fn send(&self, addr: impl Into<PeerAddr>, request: Message) -> Result<Message, Error> {
        self.send_with_timeout(addr, request, self.inner.config.connection.request_timeout).await
    }

    /// [`send`](Self::send) with an explicit timeout. Dropping the future
    /// is safe: the request's slot is freed by its answer or deadline, and
    /// an establishment it started goes on for other callers.
    pub async fn send_with_timeout(
        &self,
        addr: impl Into<PeerAddr>,
        request: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let counted = self.start_request();
        let result = match self.entry(addr.into(), false) {
            Ok(entry) => entry.peer.send_with_timeout(request, timeout).await,
            Err(e) => Err(e),
        };
        counted.finish(&result);
        result
    }

    /// Counts a request submitted (through the pool or a group on it); its
    /// outcome is counted by [`Counted::finish`], or as cancelled when the
    /// caller drops the future first.
    pub(crate) fn start_request(&self) -> Counted<'_> {
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.requests.increment(1);
        Counted { client: self, done: false }
    }

    fn count_outcome(&self, result: &Result<Message, Error>) {
        match result {
            Ok(_) => {
                self.inner.counters.answers.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.answers.increment(1);
            }
            Err(e) => self.inner.count_error(e),
        }
    }

    /// The peer for `addr`, kept up for a peer group (reconnected without
    /// giving up, never closed for idleness).
    pub fn peer(&self, addr: impl Into<PeerAddr>) -> Result<PeerHandle, Error> {
        self.entry(addr.into(), true).map(|e| e.peer.clone())
    }

    /// The pool's settings.
    pub(crate) fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Whether [`close`](Self::close) has been called.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// The entry for `addr`, created when there is none (its dial starts on
    /// the first send).
    fn entry(&self, addr: PeerAddr, pinned: bool) -> Result<Arc<Entry>, Error> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::PoolClosed);
        }
        if let Some(e) = inner.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&addr) {
            if pinned {
                // A group takes it over: no idle closure from now on. (An
                // entry made by a plain send keeps its attempt limit.)
                e.pinned.store(true, Ordering::Relaxed);
            }
            return Ok(e.clone());
        }
        let mut entries = inner.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(e) = entries.get(&addr) {
            if pinned {
                e.pinned.store(true, Ordering::Relaxed);
            }
            return Ok(e.clone());
        }
        if entries.len() >= inner.config.max_connections {
            return Err(Error::PoolFull(inner.config.max_connections));
        }
        let reconnect = inner.config.reconnect(if pinned { None } else { Some(inner.config.max_reconnect_attempts) });
        let peer = inner.node.spawn_address_peer(
            addr.clone(),
            reconnect.policy(crate::node::seed()),
            inner.config.fail_fast_while_reconnecting,
        );
        let entry =
            Arc::new(Entry { addr: addr.clone(), peer, created: Instant::now(), pinned: AtomicBool::new(pinned) });
        // Cleanup the moment the peer is closed for good (it failed with
        // reconnecting off, or gave up): a few map operations, run by the
        // peer's task itself.
        let weak = Arc::downgrade(inner);
        let id = entry.peer.id();
        let _ = entry.peer.shared.retire.set(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.retire(&addr, id);
            }
        }));
        entries.insert(entry.addr.clone(), entry.clone());
        inner.counters.created.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("diam_pool_active_connections").set(entries.len() as f64);
        Ok(entry)
    }

    /// Sends without waiting for the answer (it is dropped when it comes).
    /// Fails at once if the connection is not open or is saturated.
    ///
    /// The request still counts in [`stats`](Self::stats) (as an answer,
    /// an error or a timeout once it ends).
    pub fn send_no_wait(&self, addr: impl Into<PeerAddr>, request: Message) -> Result<(), Error> {
        let inner = &self.inner;
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        inner.metrics.requests.increment(1);
        let submitted = self.entry(addr.into(), false).and_then(|entry| {
            entry.peer.connect();
            entry.peer.try_send(request)
        });
        match submitted {
            Ok(fut) => {
                let pool = inner.clone();
                tokio::spawn(async move {
                    match fut.await {
                        Ok(_) => {
                            pool.counters.answers.fetch_add(1, Ordering::Relaxed);
                            pool.metrics.answers.increment(1);
                        }
                        Err(e) => pool.count_error(&e),
                    }
                });
                Ok(())
            }
            Err(e) => {
                inner.count_error(&e);
                Err(e)
            }
        }
    }

    /// Counters of the whole pool.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats_over(&self.inner.snapshot())
    }

    /// Number of addresses with an entry (open, connecting or reconnecting).
    pub fn active_connections(&self) -> usize {
        self.inner.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The addresses with an entry.
    pub fn list_connections(&self) -> Vec<PeerAddr> {
        let mut v: Vec<_> = self.inner.snapshot().iter().map(|e| e.addr.clone()).collect();
        v.sort_unstable();
        v
    }

    /// A snapshot of the connection to `addr`.
    pub fn connection(&self, addr: impl Into<PeerAddr>) -> Option<ConnectionSnapshot> {
        let addr = addr.into();
        let e = self.inner.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&addr).cloned()?;
        let stats = e.peer.stats();
        Some(ConnectionSnapshot {
            addr,
            state: e.peer.state(),
            origin_host: e.peer.identity(),
            stats,
            reconnects: stats.ups.saturating_sub(1),
            last_error: e.peer.last_error().map(|e| e.to_string()),
            in_flight: e.peer.in_flight(),
            age: e.created.elapsed(),
        })
    }

    /// Replaces the connection to `addr` gracefully (new one first, then
    /// drain and DPR the old). Returns false when there is no open one.
    pub fn rotate(&self, addr: impl Into<PeerAddr>) -> bool {
        let addr = addr.into();
        let entry = self.inner.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&addr).cloned();
        match entry {
            Some(e) if e.peer.rotate() => {
                self.inner.counters.lifetime_expirations.fetch_add(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Closes gracefully: no new sends, then every connection drains its
    /// outstanding answers and gets DPR (REBOOTING), all within `deadline`.
    pub async fn close(&self, deadline: Duration) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown.send_replace(true);
        self.inner.node.shutdown(deadline).await;
        let _ = self.inner.node.events().emit(diam_link::events::Event::new(
            diam_link::events::ConnectionId::unique(),
            None,
            diam_link::events::EventData::PoolReset,
        ));
    }
}

pub(crate) fn add_stats(total: &mut PeerStats, s: &PeerStats) {
    total.messages_sent += s.messages_sent;
    total.messages_received += s.messages_received;
    total.bytes_sent += s.bytes_sent;
    total.bytes_received += s.bytes_received;
    total.unknown_answers += s.unknown_answers;
    total.timeouts += s.timeouts;
    total.malformed_answers += s.malformed_answers;
    total.rejected_requests += s.rejected_requests;
    total.watchdog_answers += s.watchdog_answers;
    total.ups += s.ups;
    total.connections_opened += s.connections_opened;
    total.downs += s.downs;
    total.failed_attempts += s.failed_attempts;
    total.restarts += s.restarts;
}

impl Inner {
    /// The pool's statistics, with the traffic of `entries` (a snapshot).
    fn stats_over(&self, entries: &[Arc<Entry>]) -> PoolStats {
        let c = &self.counters;
        let mut traffic = *lock(&c.retired);
        for e in entries {
            add_stats(&mut traffic, &e.peer.stats());
        }
        let mut errors_by_kind: Vec<_> = lock(&c.errors_by_kind).iter().map(|(k, v)| (*k, *v)).collect();
        errors_by_kind.sort_unstable();
        PoolStats {
            requests: c.requests.load(Ordering::Relaxed),
            answers: c.answers.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            errors_by_kind,
            active_connections: entries.len() as u64,
            entries_created: c.created.load(Ordering::Relaxed),
            connections_created: traffic.connections_opened,
            failed_attempts: traffic.failed_attempts,
            connections_lost: traffic.downs,
            connections_closed: c.closed.load(Ordering::Relaxed),
            idle_closures: c.idle_closures.load(Ordering::Relaxed),
            lifetime_expirations: c.lifetime_expirations.load(Ordering::Relaxed),
            messages_sent: traffic.messages_sent,
            messages_received: traffic.messages_received,
            bytes_sent: traffic.bytes_sent,
            bytes_received: traffic.bytes_received,
        }
    }

    fn snapshot(&self) -> Vec<Arc<Entry>> {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    fn retire(&self, addr: &PeerAddr, id: diam_link::events::ConnectionId) {
        let removed = {
            let mut entries = self.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            match entries.get(addr) {
                Some(e) if e.peer.id() == id => {
                    let e = entries.remove(addr);
                    metrics::gauge!("diam_pool_active_connections").set(entries.len() as f64);
                    e
                }
                _ => None,
            }
        };
        if let Some(e) = removed {
            add_stats(&mut lock(&self.counters.retired), &e.peer.stats());
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_error(&self, e: &Error) {
        let c = &self.counters;
        if matches!(e, Error::Timeout) {
            c.timeouts.fetch_add(1, Ordering::Relaxed);
            self.metrics.timeouts.increment(1);
        } else {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!("diam_client_errors_total", "kind" => e.kind_name()).increment(1);
        *lock(&c.errors_by_kind).entry(e.kind_name()).or_default() += 1;
    }
}

/// How often to sweep: the health-check interval, or more often when idle
/// or lifetime limits need finer checks.
fn sweep_interval(c: &PoolConfig) -> Duration {
    let mut d = c.health_check_interval;
    for limit in [c.idle_timeout, c.max_lifetime] {
        if !limit.is_zero() {
            d = d.min(limit / 4).max(Duration::from_millis(10));
        }
    }
    d
}

/// Pools of at most this many addresses publish their traffic totals every
/// second; larger ones once per sweep.
const PUBLISH_EVERY_SECOND_UP_TO: usize = 64;

/// Idle closures and lifetime rotation once per sweep (the health-check
/// interval, 30 s by default, one watchdog interval), and the traffic
/// totals for the `metrics` facade. Both walk every entry: the totals are
/// published every second for a small pool (at most
/// [`PUBLISH_EVERY_SECOND_UP_TO`] addresses), once per sweep for a larger
/// one, so that no pass over many peers runs more often than the sweep.
async fn sweep_loop(pool: Weak<Inner>) {
    let (interval, mut shutdown) = match pool.upgrade() {
        Some(p) => (sweep_interval(&p.config), p.shutdown.subscribe()),
        None => return,
    };
    let second = Duration::from_secs(1).min(interval);
    let mut next_sweep = Instant::now() + interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(second) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(pool) = pool.upgrade() else { return };
        let due = Instant::now() >= next_sweep;
        let small =
            pool.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner).len() <= PUBLISH_EVERY_SECOND_UP_TO;
        if due || small {
            // One snapshot for both passes.
            let entries = pool.snapshot();
            publish_metrics(&pool.stats_over(&entries));
            if due {
                sweep(&pool, entries);
                next_sweep = Instant::now() + interval;
            }
        }
    }
}

fn publish_metrics(s: &PoolStats) {
    metrics::counter!("diam_pool_messages_sent_total").absolute(s.messages_sent);
    metrics::counter!("diam_pool_messages_received_total").absolute(s.messages_received);
    metrics::counter!("diam_pool_bytes_sent_total").absolute(s.bytes_sent);
    metrics::counter!("diam_pool_bytes_received_total").absolute(s.bytes_received);
    metrics::counter!("diam_pool_connections_created_total").absolute(s.connections_created);
    metrics::counter!("diam_pool_failed_attempts_total").absolute(s.failed_attempts);
    metrics::counter!("diam_pool_connections_lost_total").absolute(s.connections_lost);
    metrics::counter!("diam_pool_connections_closed_total").absolute(s.connections_closed);
    metrics::gauge!("diam_pool_active_connections").set(s.active_connections as f64);
}

fn sweep(pool: &Arc<Inner>, entries: Vec<Arc<Entry>>) {
    let c = &pool.config;
    for entry in entries {
        let peer = &entry.peer;
        let idle = !c.idle_timeout.is_zero()
            && !entry.pinned.load(Ordering::Relaxed)
            && peer.shared.idle_for() >= c.idle_timeout;
        if idle && peer.in_flight() == 0 {
            let removed = {
                let mut entries = pool.entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                match entries.get(&entry.addr) {
                    Some(e) if Arc::ptr_eq(e, &entry) => entries.remove(&entry.addr).is_some(),
                    _ => false,
                }
            };
            if removed {
                pool.counters.idle_closures.fetch_add(1, Ordering::Relaxed);
                pool.counters.closed.fetch_add(1, Ordering::Relaxed);
                count_metric("diam_pool_idle_closures_total");
                let peer = peer.clone();
                let retired = Arc::downgrade(pool);
                tokio::spawn(async move {
                    peer.close(disconnect_cause::REBOOTING).await;
                    if let Some(p) = retired.upgrade() {
                        add_stats(&mut lock(&p.counters.retired), &peer.stats());
                    }
                });
            }
            continue;
        }
        if !c.max_lifetime.is_zero()
            && peer.state() == PeerState::Open
            && peer.shared.open_for() >= c.max_lifetime
            && peer.rotate()
        {
            pool.counters.lifetime_expirations.fetch_add(1, Ordering::Relaxed);
            count_metric("diam_pool_lifetime_expirations_total");
        }
    }
}
