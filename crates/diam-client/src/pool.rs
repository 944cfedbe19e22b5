//! [`AddressClient`]: at most one connection per remote address, created on
//! demand, cleaned up the moment it fails, reconnected with backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use diam_link::backoff::{Backoff, BackoffExt, Exponential, Jitter, SplitMix64};
use diam_link::events::{ConnectionId, DisconnectReason, Event, EventData, EventDispatcher, EventKind};
use diam_link::Remote;
use diam_proto::peer::{CloseReason, PeerState};
use diam_proto::{disconnect_cause, Message};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{ConnectionConfig, ConnectionStats, Error, FailureInfo, Handler, Hooks, Peer};

/// Pool settings. Every field has a documented default.
#[derive(Clone)]
pub struct PoolConfig {
    /// Identity, capabilities, timeouts and watchdog of every connection.
    pub connection: ConnectionConfig,
    /// Reconnect a failed connection in place (true), or drop it so the next
    /// send dials afresh (false). Default true.
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
    /// Backstop sweep for dead entries, idle and lifetime checks.
    /// Default 30 s.
    pub health_check_interval: Duration,
    /// Most addresses held at once. Default 1024.
    pub max_connections: usize,
    /// Answers requests peers send us (e.g. RAR); none means 3001.
    pub handler: Option<Arc<dyn Handler>>,
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
            .field("busy_backoff", &self.busy_backoff)
            .field("fail_fast_while_reconnecting", &self.fail_fast_while_reconnecting)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("health_check_interval", &self.health_check_interval)
            .field("max_connections", &self.max_connections)
            .field("handler", &self.handler.is_some())
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
            busy_backoff: Duration::from_secs(60),
            fail_fast_while_reconnecting: false,
            idle_timeout: Duration::ZERO,
            max_lifetime: Duration::ZERO,
            health_check_interval: Duration::from_secs(30),
            max_connections: 1024,
            handler: None,
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
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.reconnect_interval.is_zero() || self.reconnect_interval > self.max_reconnect_delay {
            return bad("reconnect_interval must be positive and at most max_reconnect_delay");
        }
        if !(self.reconnect_backoff >= 1.0 && self.reconnect_backoff.is_finite()) {
            return bad("reconnect_backoff must be a finite number of at least 1");
        }
        if self.health_check_interval.is_zero() {
            return bad("health_check_interval must be positive");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        Ok(())
    }

    fn backoff(&self) -> Result<impl Backoff + Send, Error> {
        let exp = Exponential::new(self.reconnect_interval, self.max_reconnect_delay, self.reconnect_backoff)
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(exp
            .with_jitter(Jitter::Equal, SplitMix64::new(crate::peer::seed()))
            .max_attempts(self.max_reconnect_attempts))
    }
}

/// What a pool failure callback learns: the connection's failure plus how
/// the pool reacted.
#[derive(Debug, Clone)]
pub struct PoolFailure {
    /// The connection-level failure (id, address, origin host, reason,
    /// state, timestamp).
    pub info: FailureInfo,
    /// Reconnect attempts this address has needed so far (0 before the
    /// first reconnect).
    pub attempt: u32,
    /// Whether the pool is reconnecting (true) or dropped the entry.
    pub reconnecting: bool,
    /// Time from the failure's detection to the pool entry being updated.
    pub cleanup_latency: Duration,
}

/// A pool failure callback; it runs on tokio's blocking pool.
pub type PoolFailureCallback = Arc<dyn Fn(&PoolFailure) + Send + Sync>;

#[derive(Clone)]
pub(crate) enum Slot {
    Connecting,
    Ready(Peer),
    Reconnecting,
    Failed(Error),
}

pub(crate) struct Entry {
    addr: SocketAddr,
    remote: Arc<Remote>,
    id: ConnectionId,
    pub(crate) slot: watch::Sender<Slot>,
    created: Instant,
    opened: Mutex<Instant>,
    /// Microseconds from `created` to the last use (an atomic: every send
    /// updates it).
    last_used_us: AtomicU64,
    reconnects: AtomicU32,
    attempt: AtomicU32,
    last_error: Mutex<Option<String>>,
    /// Counters of connections this entry already replaced.
    retired: Mutex<ConnectionStats>,
    first_connected: AtomicBool,
}

/// The slot's connection, when it is open for requests.
fn open(slot: &Slot) -> Option<&Peer> {
    match slot {
        Slot::Ready(p) if matches!(p.state(), PeerState::Open | PeerState::DwrSent) => Some(p),
        _ => None,
    }
}

impl Entry {
    pub(crate) fn peer(&self) -> Option<Peer> {
        match &*self.slot.borrow() {
            Slot::Ready(p) => Some(p.clone()),
            _ => None,
        }
    }

    /// The connection, when it is open for requests (watchdog OKAY, or a DWR
    /// outstanding).
    pub(crate) fn open_peer(&self) -> Option<Peer> {
        open(&self.slot.borrow()).cloned()
    }

    /// Whether the connection is open for requests (without cloning it).
    pub(crate) fn is_open(&self) -> bool {
        open(&self.slot.borrow()).is_some()
    }

    /// The last error seen on this address.
    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Records a use now (for the idle timeout).
    pub(crate) fn touch(&self) {
        let us = u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_used_us.store(us, Ordering::Relaxed);
    }

    fn last_used(&self) -> Instant {
        self.created + Duration::from_micros(self.last_used_us.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    answers: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    errors_by_kind: Mutex<HashMap<&'static str, u64>>,
    created: AtomicU64,
    failed_establishments: AtomicU64,
    reconnect_attempts: AtomicU64,
    reconnects: AtomicU64,
    closed: AtomicU64,
    idle_closures: AtomicU64,
    lifetime_expirations: AtomicU64,
    failure_callbacks: AtomicU64,
    retired: Mutex<ConnectionStats>,
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
    /// Connections opened (first and re-established).
    pub connections_created: u64,
    /// First establishments that failed.
    pub failed_establishments: u64,
    /// Reconnect attempts made.
    pub reconnect_attempts: u64,
    /// Reconnects that succeeded.
    pub reconnects: u64,
    /// Connections closed (failed, idle, rotated or at shutdown).
    pub connections_closed: u64,
    /// Connections closed for idleness.
    pub idle_closures: u64,
    /// Connections replaced for reaching their maximum lifetime.
    pub lifetime_expirations: u64,
    /// Failure callbacks fired.
    pub failure_callbacks: u64,
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
    pub addr: SocketAddr,
    /// Connection state.
    pub state: PeerState,
    /// The peer's Origin-Host, when open.
    pub origin_host: Option<String>,
    /// Counters of the current connection.
    pub stats: ConnectionStats,
    /// Successful reconnects of this entry.
    pub reconnects: u32,
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

impl RequestMetrics {
    fn new() -> Self {
        RequestMetrics {
            requests: metrics::counter!("diam_client_requests_total"),
            answers: metrics::counter!("diam_client_answers_total"),
            timeouts: metrics::counter!("diam_client_timeouts_total"),
        }
    }
}

struct Inner {
    config: PoolConfig,
    metrics: RequestMetrics,
    entries: Mutex<HashMap<SocketAddr, Arc<Entry>>>,
    counters: Counters,
    events: EventDispatcher,
    on_failure: Mutex<Vec<PoolFailureCallback>>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    pool_id: ConnectionId,
}

/// A Diameter client pool keyed by remote address.
///
/// * At most one connection per address, dialled at the first send and
///   reused afterwards. Concurrent first sends share one establishment
///   (dial + CER/CEA); if it fails, all of them get the same error; if the
///   caller that started it is cancelled, it continues for the others.
/// * When a connection fails (read/write error, EOF, stalled write,
///   watchdog DOWN, DPR), its failure callback updates the pool at once:
///   the entry is reconnected in place with backoff
///   ([`PoolConfig::reconnect_enabled`]) or removed so the next send dials
///   afresh. A periodic sweep is only a backstop.
/// * Idle connections close and old ones are rotated gracefully
///   ([`PoolConfig::idle_timeout`], [`PoolConfig::max_lifetime`]).
/// * Every lifecycle step is a typed [`Event`] on [`events`](Self::events);
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
/// let cca = client.send("127.0.0.1:3868".parse().unwrap(), ccr).await?;
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
    /// A pool with `config` (validated here). Must be called inside a
    /// tokio runtime: it starts the health-check task. Install a `metrics`
    /// recorder before creating the pool for its counters to be exported.
    pub fn new(config: PoolConfig) -> Result<AddressClient, Error> {
        Self::with_events(config, EventDispatcher::new())
    }

    /// Like [`new`](Self::new), emitting lifecycle events on `events`
    /// (e.g. a dispatcher with a bounded executor for slow listeners).
    pub fn with_events(config: PoolConfig, events: EventDispatcher) -> Result<AddressClient, Error> {
        config.validate()?;
        config.backoff()?;
        let inner = Arc::new(Inner {
            config,
            metrics: RequestMetrics::new(),
            entries: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            events,
            on_failure: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            pool_id: ConnectionId::unique(),
        });
        inner.emit(inner.pool_id, None, EventData::PoolCreated);
        tokio::spawn(health_loop(Arc::downgrade(&inner)));
        Ok(AddressClient { inner })
    }

    /// The lifecycle event dispatcher: subscribe to connection events here.
    pub fn events(&self) -> &EventDispatcher {
        &self.inner.events
    }

    /// Adds a failure callback. It runs on tokio's blocking pool, after the
    /// pool has already reacted (entry removed or reconnecting), so a slow
    /// callback delays nothing.
    pub fn on_failure(&self, callback: impl Fn(&PoolFailure) + Send + Sync + 'static) {
        lock(&self.inner.on_failure).push(Arc::new(callback));
    }

    /// Sends `request` to `addr` and waits for the answer, within the
    /// connection's request timeout (establishment included).
    pub async fn send(&self, addr: SocketAddr, request: Message) -> Result<Message, Error> {
        self.send_with_timeout(addr, request, self.inner.config.connection.request_timeout).await
    }

    /// [`send`](Self::send) with an explicit timeout. Dropping the future
    /// is safe: the request's slot is freed by its answer or deadline, and
    /// an establishment it started goes on for other callers.
    pub async fn send_with_timeout(
        &self,
        addr: SocketAddr,
        request: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let counted = self.start_request();
        let result = self.send_inner(addr, request, timeout).await;
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

    /// The entry for `addr`, created (and its dial started) when there is none.
    pub(crate) fn entry_for(&self, addr: SocketAddr) -> Result<Arc<Entry>, Error> {
        self.inner.entry(addr)
    }

    /// The pool's settings.
    pub(crate) fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Emits a lifecycle event on the pool's dispatcher.
    pub(crate) fn emit(&self, id: ConnectionId, remote: Option<Arc<Remote>>, data: EventData) {
        self.inner.emit(id, remote, data);
    }

    /// Whether [`close`](Self::close) has been called.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    async fn send_inner(&self, addr: SocketAddr, request: Message, timeout: Duration) -> Result<Message, Error> {
        // Fast path: an open connection, no waiting, no timer.
        if let Ok(entry) = self.inner.entry(addr) {
            if let Some(peer) = entry.open_peer() {
                if !self.inner.events.has_listeners(EventKind::ConnectionAcquired) {
                    entry.touch();
                    return peer.send_with_timeout(request, timeout).await;
                }
            }
        }
        let deadline = crate::peer::deadline_after(timeout);
        let peer = match tokio::time::timeout_at(deadline, self.ready_peer(addr)).await {
            Ok(p) => p?,
            Err(_) => return Err(Error::Timeout),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        peer.send_with_timeout(request, remaining).await
    }

    /// Sends without waiting for the answer (it is dropped when it comes).
    /// Fails at once if the connection is not open or is saturated.
    ///
    /// The request still counts in [`stats`](Self::stats) (as an answer,
    /// an error or a timeout once it ends).
    pub fn send_no_wait(&self, addr: SocketAddr, request: Message) -> Result<(), Error> {
        let inner = &self.inner;
        inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        inner.metrics.requests.increment(1);
        let submitted = inner.entry(addr).and_then(|entry| {
            let peer = entry.peer().ok_or(Error::NotAvailable(PeerState::Connecting))?;
            entry.touch();
            peer.try_send(request)
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

    /// The open connection for `addr`, establishing it if needed.
    async fn ready_peer(&self, addr: SocketAddr) -> Result<Peer, Error> {
        let started = Instant::now();
        let entry = self.inner.entry(addr)?;
        let mut rx = entry.slot.subscribe();
        loop {
            let slot = rx.borrow_and_update().clone();
            match slot {
                Slot::Ready(peer) if matches!(peer.state(), PeerState::Open | PeerState::DwrSent) => {
                    entry.touch();
                    if self.inner.events.has_listeners(EventKind::ConnectionAcquired) {
                        self.inner.emit(
                            entry.id,
                            Some(entry.remote.clone()),
                            EventData::ConnectionAcquired { wait: started.elapsed() },
                        );
                    }
                    return Ok(peer);
                }
                Slot::Ready(_) | Slot::Connecting => {}
                Slot::Reconnecting if self.inner.config.fail_fast_while_reconnecting => {
                    return Err(Error::Reconnecting)
                }
                Slot::Reconnecting => {}
                Slot::Failed(e) => return Err(e),
            }
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(Error::PoolClosed);
            }
            if rx.changed().await.is_err() {
                return Err(Error::PoolClosed);
            }
        }
    }

    /// Counters of the whole pool.
    pub fn stats(&self) -> PoolStats {
        let c = &self.inner.counters;
        let entries: Vec<Arc<Entry>> = lock(&self.inner.entries).values().cloned().collect();
        let mut traffic = *lock(&c.retired);
        for e in &entries {
            add_stats(&mut traffic, &lock(&e.retired));
            if let Some(p) = e.peer() {
                add_stats(&mut traffic, &p.stats());
            }
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
            connections_created: c.created.load(Ordering::Relaxed),
            failed_establishments: c.failed_establishments.load(Ordering::Relaxed),
            reconnect_attempts: c.reconnect_attempts.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            connections_closed: c.closed.load(Ordering::Relaxed),
            idle_closures: c.idle_closures.load(Ordering::Relaxed),
            lifetime_expirations: c.lifetime_expirations.load(Ordering::Relaxed),
            failure_callbacks: c.failure_callbacks.load(Ordering::Relaxed),
            messages_sent: traffic.messages_sent,
            messages_received: traffic.messages_received,
            bytes_sent: traffic.bytes_sent,
            bytes_received: traffic.bytes_received,
        }
    }

    /// Number of addresses with an entry (open, connecting or reconnecting).
    pub fn active_connections(&self) -> usize {
        lock(&self.inner.entries).len()
    }

    /// The addresses with an entry.
    pub fn list_connections(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = lock(&self.inner.entries).keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// A snapshot of the connection to `addr`.
    pub fn connection(&self, addr: SocketAddr) -> Option<ConnectionSnapshot> {
        let e = lock(&self.inner.entries).get(&addr).cloned()?;
        let slot = e.slot.borrow().clone();
        let (state, peer) = match slot {
            Slot::Ready(p) => (p.state(), Some(p)),
            Slot::Connecting => (PeerState::Connecting, None),
            Slot::Reconnecting => (PeerState::Reconnecting, None),
            Slot::Failed(_) => (PeerState::Failed, None),
        };
        let last_error = lock(&e.last_error).clone();
        Some(ConnectionSnapshot {
            addr,
            state,
            origin_host: peer.as_ref().and_then(|p| p.peer_info().map(|i| i.origin_host.clone())),
            stats: peer.as_ref().map(Peer::stats).unwrap_or_default(),
            reconnects: e.reconnects.load(Ordering::Relaxed),
            last_error,
            in_flight: peer.as_ref().map_or(0, Peer::in_flight),
            age: e.created.elapsed(),
        })
    }

    /// Closes gracefully: no new sends, then every connection drains its
    /// outstanding answers and gets DPR (REBOOTING), all within `deadline`.
    pub async fn close(&self, deadline: Duration) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown.send_replace(true);
        let entries: Vec<Arc<Entry>> = lock(&self.inner.entries).drain().map(|(_, e)| e).collect();
        let mut closing = tokio::task::JoinSet::new();
        let mut closed_peers = Vec::new();
        for e in entries {
            add_stats(&mut lock(&self.inner.counters.retired), &lock(&e.retired));
            if let Some(p) = e.peer() {
                self.inner.counters.closed.fetch_add(1, Ordering::Relaxed);
                closed_peers.push(p.clone());
                closing.spawn(async move { p.close(disconnect_cause::REBOOTING).await });
            }
            e.slot.send_replace(Slot::Failed(Error::PoolClosed));
        }
        let _ = tokio::time::timeout(deadline, async { while closing.join_next().await.is_some() {} }).await;
        // Their traffic stays in the pool totals.
        for p in closed_peers {
            add_stats(&mut lock(&self.inner.counters.retired), &p.stats());
        }
        self.inner.emit(self.inner.pool_id, None, EventData::PoolReset);
    }
}

fn add_stats(total: &mut ConnectionStats, s: &ConnectionStats) {
    total.messages_sent += s.messages_sent;
    total.messages_received += s.messages_received;
    total.bytes_sent += s.bytes_sent;
    total.bytes_received += s.bytes_received;
    total.unknown_answers += s.unknown_answers;
    total.timeouts += s.timeouts;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent
    // data (plain inserts/removes), so poisoning is ignored.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn emit(&self, id: ConnectionId, remote: Option<Arc<Remote>>, data: EventData) {
        // Listener failures are the dispatcher's business (its error policy).
        let _ = self.events.emit(Event::new(id, remote, data));
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

    /// The entry for `addr`, creating it (and starting its establishment)
    /// when there is none.
    fn entry(self: &Arc<Self>, addr: SocketAddr) -> Result<Arc<Entry>, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::PoolClosed);
        }
        let mut entries = lock(&self.entries);
        if let Some(e) = entries.get(&addr) {
            return Ok(e.clone());
        }
        if entries.len() >= self.config.max_connections {
            return Err(Error::PoolFull(self.config.max_connections));
        }
        let now = Instant::now();
        let entry = Arc::new(Entry {
            addr,
            remote: Arc::new(Remote::from(addr)),
            id: ConnectionId::unique(),
            slot: watch::channel(Slot::Connecting).0,
            created: now,
            opened: Mutex::new(now),
            last_used_us: AtomicU64::new(0),
            reconnects: AtomicU32::new(0),
            attempt: AtomicU32::new(0),
            last_error: Mutex::new(None),
            retired: Mutex::new(ConnectionStats::default()),
            first_connected: AtomicBool::new(false),
        });
        entries.insert(addr, entry.clone());
        metrics::gauge!("diam_pool_active_connections").set(entries.len() as f64);
        drop(entries);
        // Detached: a cancelled first caller does not cancel the dial.
        tokio::spawn(establish(self.clone(), entry.clone()));
        Ok(entry)
    }

    /// Removes `entry` if it is still the one stored for its address.
    fn remove(&self, entry: &Arc<Entry>) -> bool {
        let mut entries = lock(&self.entries);
        let removed = match entries.get(&entry.addr) {
            Some(e) if Arc::ptr_eq(e, entry) => entries.remove(&entry.addr).is_some(),
            _ => false,
        };
        metrics::gauge!("diam_pool_active_connections").set(entries.len() as f64);
        removed
    }

    /// The pool's failure hook for `entry`'s connection; it runs inline in
    /// the connection task, so the entry is updated the moment the failure
    /// is detected.
    fn failure_hook(self: &Arc<Self>, entry: &Arc<Entry>) -> crate::FailureCallback {
        let pool = Arc::downgrade(self);
        let entry = Arc::downgrade(entry);
        Arc::new(move |info: FailureInfo| {
            if let (Some(pool), Some(entry)) = (pool.upgrade(), entry.upgrade()) {
                pool.connection_failed(&entry, info);
            }
        })
    }

    /// Opens one connection for `entry`.
    async fn dial(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<Peer, Error> {
        self.emit(entry.id, Some(entry.remote.clone()), EventData::ConnectionCreated);
        let hooks = Hooks { handler: self.config.handler.clone(), on_failure: None };
        let peer =
            Peer::connect_inner(entry.addr, self.config.connection.clone(), hooks, Some(self.failure_hook(entry)))
                .await?;
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        count_metric("diam_pool_connections_created_total");
        *lock(&entry.opened) = Instant::now();
        Ok(peer)
    }

    /// Called inline by the connection task the moment a connection fails;
    /// user callbacks then run on the blocking pool.
    fn connection_failed(self: &Arc<Self>, entry: &Arc<Entry>, info: FailureInfo) {
        let detected = info.timestamp;
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
        *lock(&entry.last_error) = Some(info.reason.to_string());
        if let Some(p) = entry.peer() {
            add_stats(&mut lock(&entry.retired), &p.stats());
        }
        let reconnecting = self.config.reconnect_enabled && !self.closed.load(Ordering::Acquire);
        let attempt = entry.attempt.load(Ordering::Relaxed);
        if reconnecting {
            entry.slot.send_replace(Slot::Reconnecting);
        } else {
            self.remove(entry);
            add_stats(&mut lock(&self.counters.retired), &lock(&entry.retired));
            entry.slot.send_replace(Slot::Failed(Error::ConnectionLost(info.reason.clone())));
        }
        let cleanup_latency = SystemTime::now().duration_since(detected).unwrap_or_default();
        let remote = Some(entry.remote.clone());
        let error = diam_link::Error::session(info.reason.to_string());
        self.emit(entry.id, remote.clone(), EventData::Disconnected { reason: DisconnectReason::Failed(error) });
        if reconnecting {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(reconnect(self.clone(), entry.clone(), info.reason.clone()));
            }
        }
        let failure = PoolFailure { info, attempt, reconnecting, cleanup_latency };
        self.counters.failure_callbacks.fetch_add(1, Ordering::Relaxed);
        count_metric("diam_pool_failure_callbacks_total");
        let callbacks = lock(&self.on_failure).clone();
        if !callbacks.is_empty() {
            // Off the connection task: a slow or panicking user callback
            // must not delay I/O; one panicking callback does not stop the others.
            tokio::task::spawn_blocking(move || {
                for cb in callbacks {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&failure)));
                }
            });
        }
    }
}

/// First establishment of an entry.
async fn establish(pool: Arc<Inner>, entry: Arc<Entry>) {
    match pool.dial(&entry).await {
        Ok(peer) => {
            entry.first_connected.store(true, Ordering::Relaxed);
            entry.slot.send_replace(Slot::Ready(peer));
            pool.emit(entry.id, Some(entry.remote.clone()), EventData::Connected { first: true });
        }
        Err(e) => {
            pool.counters.failed_establishments.fetch_add(1, Ordering::Relaxed);
            count_metric("diam_pool_failed_establishments_total");
            *lock(&entry.last_error) = Some(e.to_string());
            pool.emit(
                entry.id,
                Some(entry.remote.clone()),
                EventData::Error { error: diam_link::Error::session(e.to_string()) },
            );
            pool.remove(&entry);
            entry.slot.send_replace(Slot::Failed(e));
        }
    }
}

/// Re-establishes a failed connection in place.
async fn reconnect(pool: Arc<Inner>, entry: Arc<Entry>, reason: CloseReason) {
    let mut backoff = match pool.config.backoff() {
        Ok(b) => b,
        Err(_) => return,
    };
    let mut shutdown = pool.shutdown.subscribe();
    let mut attempt = 0u32;
    loop {
        let Some(mut delay) = backoff.next_delay() else {
            let err = Error::ConnectionLost(reason.clone());
            pool.remove(&entry);
            entry.slot.send_replace(Slot::Failed(err));
            return;
        };
        if attempt == 0 && reason.wants_long_backoff() {
            delay = delay.max(pool.config.busy_backoff);
        }
        attempt += 1;
        entry.attempt.store(attempt, Ordering::Relaxed);
        entry.slot.send_replace(Slot::Reconnecting);
        pool.emit(entry.id, Some(entry.remote.clone()), EventData::ReconnectScheduled { attempt, delay });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if pool.closed.load(Ordering::Acquire) {
            return;
        }
        pool.counters.reconnect_attempts.fetch_add(1, Ordering::Relaxed);
        count_metric("diam_pool_reconnect_attempts_total");
        match pool.dial(&entry).await {
            Ok(peer) => {
                entry.reconnects.fetch_add(1, Ordering::Relaxed);
                entry.attempt.store(0, Ordering::Relaxed);
                pool.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                entry.slot.send_replace(Slot::Ready(peer));
                let remote = Some(entry.remote.clone());
                pool.emit(entry.id, remote.clone(), EventData::Connected { first: false });
                pool.emit(entry.id, remote, EventData::Reconnected { attempt });
                return;
            }
            Err(e) => {
                *lock(&entry.last_error) = Some(e.to_string());
                pool.emit(
                    entry.id,
                    Some(entry.remote.clone()),
                    EventData::Error { error: diam_link::Error::session(e.to_string()) },
                );
            }
        }
    }
}

/// The backstop sweep: dead entries, idle connections, lifetime rotation.
async fn health_loop(pool: Weak<Inner>) {
    let (interval, mut shutdown) = match pool.upgrade() {
        Some(p) => (sweep_interval(&p.config), p.shutdown.subscribe()),
        None => return,
    };
    // Traffic totals go to the metrics facade once a second (the
    // per-message counters live in the connections' atomics).
    let publish = Duration::from_secs(1).min(interval);
    let mut next_sweep = Instant::now() + interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(publish) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(pool) = pool.upgrade() else { return };
        publish_metrics(&AddressClient { inner: pool.clone() }.stats());
        if Instant::now() >= next_sweep {
            sweep(&pool).await;
            next_sweep = Instant::now() + interval;
        }
    }
}

fn publish_metrics(s: &PoolStats) {
    metrics::counter!("diam_pool_messages_sent_total").absolute(s.messages_sent);
    metrics::counter!("diam_pool_messages_received_total").absolute(s.messages_received);
    metrics::counter!("diam_pool_bytes_sent_total").absolute(s.bytes_sent);
    metrics::counter!("diam_pool_bytes_received_total").absolute(s.bytes_received);
    metrics::counter!("diam_pool_connections_closed_total").absolute(s.connections_closed);
    metrics::counter!("diam_pool_reconnects_total").absolute(s.reconnects);
    metrics::gauge!("diam_pool_active_connections").set(s.active_connections as f64);
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

async fn sweep(pool: &Arc<Inner>) {
    let entries: Vec<Arc<Entry>> = lock(&pool.entries).values().cloned().collect();
    let now = Instant::now();
    for entry in entries {
        let Some(peer) = entry.peer() else { continue };
        let state = peer.state();
        let healthy = matches!(state, PeerState::Open | PeerState::DwrSent);
        if pool.events.has_listeners(EventKind::HealthCheck) {
            pool.emit(
                entry.id,
                Some(entry.remote.clone()),
                EventData::HealthCheck { healthy, latency: Duration::ZERO },
            );
        }
        if matches!(state, PeerState::Failed | PeerState::Closed) {
            // The failure callback normally got here first.
            if !pool.config.reconnect_enabled && pool.remove(&entry) {
                pool.counters.closed.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        let idle = entry.last_used();
        if !pool.config.idle_timeout.is_zero()
            && now.duration_since(idle) >= pool.config.idle_timeout
            && peer.in_flight() == 0
            && pool.remove(&entry)
        {
            pool.counters.idle_closures.fetch_add(1, Ordering::Relaxed);
            pool.counters.closed.fetch_add(1, Ordering::Relaxed);
            count_metric("diam_pool_idle_closures_total");
            add_stats(&mut lock(&pool.counters.retired), &peer.stats());
            pool.emit(
                entry.id,
                Some(entry.remote.clone()),
                EventData::Disconnected { reason: DisconnectReason::Closed },
            );
            entry.slot.send_replace(Slot::Failed(Error::Closed));
            tokio::spawn(async move { peer.close(disconnect_cause::REBOOTING).await });
            continue;
        }
        let opened = *lock(&entry.opened);
        if !pool.config.max_lifetime.is_zero() && now.duration_since(opened) >= pool.config.max_lifetime {
            pool.emit(entry.id, Some(entry.remote.clone()), EventData::MarkedForReconnect);
            tokio::spawn(rotate(pool.clone(), entry.clone(), peer));
        }
    }
}

/// Replaces an old connection: open the new one first, switch senders to
/// it, then drain and DPR the old one. No request fails because of this.
async fn rotate(pool: Arc<Inner>, entry: Arc<Entry>, old: Peer) {
    // Push `opened` forward so the next sweep does not rotate again.
    *lock(&entry.opened) = Instant::now();
    match pool.dial(&entry).await {
        Ok(new) => {
            pool.counters.lifetime_expirations.fetch_add(1, Ordering::Relaxed);
            count_metric("diam_pool_lifetime_expirations_total");
            entry.slot.send_replace(Slot::Ready(new));
            pool.emit(entry.id, Some(entry.remote.clone()), EventData::Connected { first: false });
            // The old connection finishes what it has in flight, then DPR.
            let reason = old.close(disconnect_cause::REBOOTING).await;
            add_stats(&mut lock(&entry.retired), &old.stats());
            pool.counters.closed.fetch_add(1, Ordering::Relaxed);
            pool.emit(
                entry.id,
                Some(entry.remote.clone()),
                EventData::Disconnected { reason: DisconnectReason::Reconnect },
            );
            tracing::debug!(addr = %entry.addr, %reason, "rotated connection closed");
        }
        Err(e) => {
            // Keep the old one; try again at the next sweep.
            *lock(&entry.last_error) = Some(e.to_string());
        }
    }
}

/// Marks an address's connection as needing replacement (graceful, as for
/// the maximum lifetime).
impl AddressClient {
    /// Replaces the connection to `addr` gracefully (new one first, then
    /// drain and DPR the old). Returns false when there is no open one.
    pub fn rotate(&self, addr: SocketAddr) -> bool {
        let Some(entry) = lock(&self.inner.entries).get(&addr).cloned() else { return false };
        let Some(peer) = entry.peer() else { return false };
        self.inner.emit(entry.id, Some(entry.remote.clone()), EventData::MarkedForReconnect);
        tokio::spawn(rotate(self.inner.clone(), entry, peer));
        true
    }
}
