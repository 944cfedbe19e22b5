//! [`PeerGroup`]: one logical destination served by several peers (see
//! the type's documentation).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use diam_link::backoff::{Backoff, BackoffExt, Exponential, Jitter, SplitMix64};
use diam_link::balance::{Balancer, Candidate, Strategy};
use diam_link::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use diam_link::events::{ConnectionId, EventData};
use diam_link::failover::{Failover, FailoverConfig, FailoverState};
use diam_link::health::{ErrorCategory, HealthConfig, HealthMonitor, HealthStats, HealthStatus};
use diam_link::Remote;
use diam_proto::peer::result_code;
use diam_proto::{apps, avps, commands, result_codes, Message};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::conn::{Reply, Unanswered};
use crate::pool::{Counted, Entry, Slot};
use crate::{AddressClient, Error, Peer};

/// How a group spreads requests over its members.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GroupMode {
    /// Every usable member carries traffic; the strategy picks one per request.
    Balance(Strategy),
    /// The first member is the primary, the others secondaries in order of
    /// preference; one member carries traffic at a time.
    Failover(FailoverConfig),
}

/// Peer group settings. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Balancing or primary/secondary failover. Default balancing round-robin.
    pub mode: GroupMode,
    /// Health thresholds of each member. Default [`HealthConfig::default`]
    /// (Unhealthy after 3 failures in a row, Dead after 10, 2 successes to
    /// recover; Degraded from 500 ms latency EWMA, Unhealthy from 2 s).
    pub health: HealthConfig,
    /// When each member's circuit breaker opens. Default
    /// [`BreakerConfig::default`] (5 failures in a row, or half of at least
    /// 20 outcomes over 30 s; one half-open probe).
    pub breaker: BreakerConfig,
    /// First open wait of a tripped breaker. Default 1 s.
    pub breaker_open_min: Duration,
    /// Longest open wait; the wait doubles on every trip without a recovery
    /// in between. Default 60 s.
    pub breaker_open_max: Duration,
    /// Retransmit retryable requests to another member when their connection
    /// fails (RFC 6733 §5.5.4). Default true.
    pub retransmit: bool,
    /// Interval of the DWR health checks on each open member. Default 5 s
    /// (Tw itself is 30 s, RFC 3539; the checks are cheap and make a
    /// recovering member usable again sooner). Zero turns the periodic checks
    /// off, except for dead members (every 5 s): a dead member gets no
    /// traffic, so only checks can bring it back. Whatever the interval, a
    /// connection that opens is checked at once, and a dead member whose DWR
    /// is answered is checked again at once until it has recovered.
    pub check_interval: Duration,
    /// With no usable member, a request waits for one up to its timeout
    /// (true) or fails at once with [`Error::NoPeerAvailable`] (false).
    /// Default true.
    pub wait_for_peer: bool,
    /// Seed of the random and weighted strategies; `None` seeds from entropy.
    pub seed: Option<u64>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            mode: GroupMode::Balance(Strategy::RoundRobin),
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            breaker_open_min: Duration::from_secs(1),
            breaker_open_max: Duration::from_secs(60),
            retransmit: true,
            check_interval: Duration::from_secs(5),
            wait_for_peer: true,
            seed: None,
        }
    }
}

impl GroupConfig {
    /// Balancing with `strategy`, defaults elsewhere.
    pub fn balance(strategy: Strategy) -> Self {
        GroupConfig { mode: GroupMode::Balance(strategy), ..GroupConfig::default() }
    }

    /// Primary/secondary failover, defaults elsewhere.
    pub fn failover(failover: FailoverConfig) -> Self {
        GroupConfig { mode: GroupMode::Failover(failover), ..GroupConfig::default() }
    }

    fn breaker_backoff(&self) -> Result<Box<dyn Backoff + Send>, Error> {
        Exponential::new(self.breaker_open_min, self.breaker_open_max, 2.0)
            .map(|b| Box::new(b) as Box<dyn Backoff + Send>)
            .map_err(|e| Error::InvalidConfig(format!("breaker open wait: {e}")))
    }
}

/// One member of a group: its address and, for the weighted strategy, its
/// relative capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMember {
    addr: SocketAddr,
    weight: u32,
}

impl GroupMember {
    /// A member of weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        GroupMember { addr, weight: 1 }
    }

    /// Sets the weight (used by [`Strategy::Weighted`]).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl From<SocketAddr> for GroupMember {
    fn from(addr: SocketAddr) -> Self {
        GroupMember::new(addr)
    }
}

/// Per-request options of [`PeerGroup::send_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct SendOptions {
    timeout: Option<Duration>,
    retryable: Option<bool>,
}

impl SendOptions {
    /// The defaults: the connection's request timeout; retryable when the
    /// request has the P flag.
    pub fn new() -> Self {
        SendOptions::default()
    }

    /// The request's timeout, retransmission included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Whether the request may be retransmitted to another member after a
    /// connection failure, whatever its P flag.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = Some(retryable);
        self
    }
}

/// One member's health, breaker and traffic, as
/// [`PeerGroup::health_statistics`] reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemberHealth {
    /// The member's address.
    pub addr: SocketAddr,
    /// Health status and statistics.
    pub health: HealthStats,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
    /// Whether the connection is open.
    pub open: bool,
    /// Whether the member can take requests now (open, not dead, breaker not open).
    pub usable: bool,
    /// Requests in flight to it now.
    pub in_flight: u32,
    /// Requests sent to it (retransmissions included).
    pub requests: u64,
    /// Answers it gave.
    pub answers: u64,
    /// Requests to it that ended in an error other than a timeout.
    pub errors: u64,
    /// Requests to it that timed out.
    pub timeouts: u64,
    /// Retransmissions (T flag) it received for requests another member lost.
    pub retransmissions_received: u64,
}

/// One member's connection history, as [`PeerGroup::reconnection_statistics`]
/// reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemberReconnection {
    /// The member's address.
    pub addr: SocketAddr,
    /// Whether the connection is open now.
    pub open: bool,
    /// Times its open connection was lost.
    pub connections_lost: u64,
    /// Times it opened again after a loss.
    pub reopened: u64,
    /// First establishments that failed (the group dials again, paced).
    pub failed_establishments: u64,
    /// The last connection error (a lost connection's reason, or why an
    /// establishment failed), if any.
    pub last_error: Option<String>,
}

/// Failover and retransmission counters, as
/// [`PeerGroup::failover_statistics`] reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailoverStatistics {
    /// In failover mode, the machine's state; `None` when balancing.
    pub state: Option<FailoverState>,
    /// The member carrying traffic (failover mode).
    pub active: Option<SocketAddr>,
    /// Failover mode: switches away from the active member. Balancing: times a
    /// member was lost while another could take its traffic.
    pub failovers: u64,
    /// Manual failovers (failover mode).
    pub manual_failovers: u64,
    /// Switches back to the primary (failover mode).
    pub failbacks: u64,
    /// Times no member was usable.
    pub unavailable: u64,
    /// Requests re-sent with the T flag after their connection failed.
    pub retransmissions: u64,
    /// Of those, the ones that got an answer.
    pub retransmissions_answered: u64,
    /// Requests sent to another member because they never reached the first
    /// one's connection.
    pub reroutes: u64,
}

/// Group-wide totals, as [`PeerGroup::stats`] reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupStats {
    /// Requests submitted to the group.
    pub requests: u64,
    /// Requests that got an answer.
    pub answers: u64,
    /// Requests that ended in an error other than a timeout.
    pub errors: u64,
    /// Requests that timed out.
    pub timeouts: u64,
}

#[derive(Debug, Default)]
struct MemberCounters {
    requests: AtomicU64,
    answers: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    retransmissions_received: AtomicU64,
}

/// The fixed part of a member and its lock-free counters.
#[derive(Debug)]
struct Member {
    addr: SocketAddr,
    remote: Arc<Remote>,
    id: ConnectionId,
    weight: u32,
    in_flight: AtomicU32,
    counters: MemberCounters,
}

/// The part of a member that changes under the group lock.
struct MemberState {
    entry: Option<Arc<Entry>>,
    health: HealthMonitor,
    breaker: CircuitBreaker,
    open: bool,
    ever_open: bool,
    checking: bool,
    losses: u64,
    reopened: u64,
    failed_establishments: u64,
    last_error: Option<String>,
}

impl MemberState {
    /// Whether the member can carry traffic: open, not dead, breaker not
    /// waiting out an open period (half-open counts: it is being probed).
    fn usable(&self, now: Instant) -> bool {
        let breaker_up = match self.breaker.state() {
            BreakerState::Open => self.breaker.poll_timeout().is_some_and(|until| now.into_std() >= until),
            _ => true,
        };
        breaker_up && self.health.status() != HealthStatus::Dead && self.entry.as_ref().is_some_and(|e| e.is_open())
    }

    /// Whether a request may go to the member now: usable, and the breaker
    /// has room (a half-open breaker lets only its probes through).
    fn pickable(&self, now: Instant) -> bool {
        self.usable(now) && self.breaker.is_available(now.into_std())
    }
}

struct GroupState {
    members: Vec<MemberState>,
    /// Balancing mode's strategy (`None` in failover mode).
    balancer: Option<Box<dyn Balancer<usize> + Send>>,
    /// Whether the balancer uses failure rates and latencies (computing them
    /// costs a pass over each member's history, so only then).
    weighted: bool,
    failover: Option<Failover>,
    candidates: Vec<Candidate<usize>>,
    /// Balancing: member losses another member could absorb.
    balance_failovers: u64,
    /// Balancing: times no member was usable.
    balance_unavailable: u64,
    any_usable: bool,
}

/// Events produced under the lock, emitted after it is released.
#[derive(Default)]
struct Pending {
    events: Vec<(Option<usize>, EventData)>,
    /// A member may have become usable: wake waiting senders.
    wake: bool,
    /// A timer moved: wake the timer task.
    rearm: bool,
}

#[derive(Debug, Default)]
struct GroupCounters {
    requests: AtomicU64,
    answers: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    retransmissions: AtomicU64,
    retransmissions_answered: AtomicU64,
    reroutes: AtomicU64,
}

struct GroupInner {
    /// This group, for the tasks it spawns.
    me: Weak<GroupInner>,
    config: GroupConfig,
    client: AddressClient,
    members: Vec<Member>,
    state: Mutex<GroupState>,
    /// Signalled when a member may have become usable.
    usable: Notify,
    /// Signalled when a breaker or failover timer may have moved (shared
    /// with the timer task, which must not keep the group alive).
    rearm: Arc<Notify>,
    shutdown: watch::Sender<bool>,
    closed: AtomicBool,
    id: ConnectionId,
    counters: GroupCounters,
    /// `diam_group_retransmissions_total` and `diam_group_reroutes_total`.
    metrics: (metrics::Counter, metrics::Counter),
}

impl Drop for GroupInner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Several peers serving one destination.
///
/// A group routes each request to one of its members over the connections of an
/// [`AddressClient`], so applications stop caring which peer served them:
///
/// * **Choosing a peer.** In [`GroupMode::Balance`] every usable member carries
///   traffic and a [`Strategy`] picks one per request (round-robin, least recently
///   used, random, least outstanding, or weighted by an efficiency score). In
///   [`GroupMode::Failover`] the first member is the primary and the others are
///   secondaries in order; traffic goes to one member at a time, as the
///   [`Failover`] machine says (automatic failover, manual failover, optional
///   auto-failback after a stable period).
/// * **Usable** means: the connection is open (capabilities exchanged, watchdog
///   OKAY or a DWR outstanding), the member's health is not `Dead`, and its
///   circuit breaker lets requests through.
/// * **Health** per member ([`HealthMonitor`]) comes from live traffic (answers
///   with their latency, timeouts, 3xxx protocol-error answers), from each
///   connection loss or failed establishment (counted once, not once per request
///   it took down), and from a DWR sent every [`GroupConfig::check_interval`]
///   (and at once whenever a connection opens). A request that timed out
///   before it could be written (a local wait) says nothing about the peer.
/// * **Circuit breaker** per member ([`CircuitBreaker`]): opened by consecutive
///   failures or a failure rate, and at once by a connection loss; its open wait
///   grows from [`GroupConfig::breaker_open_min`] to
///   [`GroupConfig::breaker_open_max`]; half-open lets a probe through.
/// * **Retransmission** (RFC 6733 §5.5.4): when a connection fails with a request
///   outstanding and the request is retryable (the P flag, or
///   [`SendOptions::retryable`]), it is re-sent once to another member with the T
///   flag set and the same End-to-End identifier. Other requests fail with
///   [`Error::ConnectionLost`]. A request that never reached the connection's
///   write path (the connection was already failing) is sent to another member
///   as it is, once, retryable or not: no peer can have seen it.
///
/// # Duplicates
///
/// A retransmitted request may already have been processed by the peer that
/// failed (it can die after acting on the request, before its answer arrives).
/// So retryable requests are delivered *at least once*: the T flag and the
/// unchanged End-to-End identifier, with Origin-Host, are what lets the server
/// side detect the duplicate (RFC 6733 §3). Requests that are not retryable
/// are delivered *at most once*: they fail instead. Mark as retryable only
/// requests whose duplicates the servers handle (Credit-Control servers do, by
/// Session-Id and CC-Request-Number; RFC 4006 §5.5).
///
/// Every request ends with an answer or a typed error by its deadline; a
/// retransmission uses what is left of the original timeout.
///
/// Cloning is cheap; clones share the group. The connections belong to the
/// [`AddressClient`] the group was built on (several groups may share one).
///
/// ```no_run
/// # async fn run() -> Result<(), diam_client::Error> {
/// use diam_client::{AddressClient, GroupConfig, PeerGroup, PoolConfig};
/// use diam_link::balance::Strategy;
/// use diam_proto::{avps, Message};
///
/// let mut pool = PoolConfig::new("client.example.com", "example.com");
/// pool.connection.peer.auth_application_ids = vec![4];
/// let client = AddressClient::new(pool)?;
/// let peers: [std::net::SocketAddr; 2] = ["127.0.0.1:3868".parse().unwrap(), "127.0.0.1:3869".parse().unwrap()];
/// let group = PeerGroup::new(&client, peers, GroupConfig::balance(Strategy::LeastOutstanding))?;
/// let ccr = Message::request(4, 272).proxiable(true).avp(avps::SESSION_ID, "client.example.com;1;1").build();
/// let cca = group.send(ccr).await?; // whichever peer answered
/// # let _ = cca; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PeerGroup {
    inner: Arc<GroupInner>,
}

impl std::fmt::Debug for PeerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerGroup")
            .field("members", &self.members())
            .field("mode", &self.inner.config.mode)
            .finish_non_exhaustive()
    }
}

/// Most members of one group.
const MAX_MEMBERS: usize = 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is updated in short, non-panicking steps; a poisoned lock
    // still holds consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The health category of a failed establishment or lost connection.
fn category(e: &Error) -> ErrorCategory {
    match e {
        Error::Connect { .. } => ErrorCategory::Refused,
        Error::ConnectTimeout(_) | Error::HandshakeTimeout | Error::Timeout => ErrorCategory::Timeout,
        Error::HandshakeFailed { .. } | Error::InvalidRequest(_) => ErrorCategory::Protocol,
        _ => ErrorCategory::Reset,
    }
}

/// A request reserved on one member by [`GroupInner::pick`]: it holds the
/// member's in-flight count and, when the breaker was half-open, one of its
/// probes. Dropped without an outcome (the caller gave up on the request),
/// it frees both and wakes senders waiting for a usable member.
struct Attempt<'a> {
    group: &'a GroupInner,
    member: usize,
    peer: Peer,
    /// The breaker was half-open when this request was let through.
    probe: bool,
    recorded: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.group.members[self.member].in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.recorded && self.probe {
            lock(&self.group.state).members[self.member].breaker.on_abandoned();
            self.group.usable.notify_waiters();
        }
    }
}

/// A group request's place in the group's and the pool's accounting: its
/// outcome is counted exactly once, as cancelled when the caller drops the
/// future first.
struct Outcome<'a> {
    group: &'a GroupInner,
    pool: Option<Counted<'a>>,
}

impl Outcome<'_> {
    fn finish(mut self, result: &Result<Message, Error>) {
        let c = &self.group.counters;
        match result {
            Ok(_) => c.answers.fetch_add(1, Ordering::Relaxed),
            Err(Error::Timeout) => c.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(pool) = self.pool.take() {
            pool.finish(result);
        }
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if self.pool.is_some() {
            // Not finished: the pool's guard counts it as cancelled.
            self.group.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl PeerGroup {
    /// A group of `members` (in order of preference for failover mode) on
    /// `client`'s connections. Validates the configuration, then starts
    /// dialling every member; must be called inside a tokio runtime.
    ///
    /// Fails with [`Error::InvalidConfig`] for no members, more than 1024, a
    /// repeated address, or invalid health, breaker or failover settings.
    pub fn new<M: Into<GroupMember>>(
        client: &AddressClient,
        members: impl IntoIterator<Item = M>,
        config: GroupConfig,
    ) -> Result<PeerGroup, Error> {
        let members: Vec<GroupMember> = members.into_iter().map(Into::into).collect();
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return Err(Error::InvalidConfig(format!("a peer group needs 1 to {MAX_MEMBERS} members")));
        }
        for (i, m) in members.iter().enumerate() {
            if members[..i].iter().any(|o| o.addr == m.addr) {
                return Err(Error::InvalidConfig(format!("{} appears twice in the peer group", m.addr)));
            }
        }
        if config.breaker_open_min.is_zero() || config.breaker_open_min > config.breaker_open_max {
            return Err(Error::InvalidConfig("breaker_open_min must be positive and at most breaker_open_max".into()));
        }
        let invalid = |what: &str, e: diam_link::ConfigError| Error::InvalidConfig(format!("{what}: {e}"));
        let mut states = Vec::with_capacity(members.len());
        for _ in &members {
            states.push(MemberState {
                entry: None,
                health: HealthMonitor::new(config.health.clone()).map_err(|e| invalid("health", e))?,
                breaker: CircuitBreaker::new(config.breaker.clone(), config.breaker_backoff()?)
                    .map_err(|e| invalid("breaker", e))?,
                open: false,
                ever_open: false,
                checking: false,
                losses: 0,
                reopened: 0,
                failed_establishments: 0,
                last_error: None,
            });
        }
        let seed = config.seed.unwrap_or_else(crate::peer::seed);
        let (balancer, weighted, failover) = match &config.mode {
            GroupMode::Balance(strategy) => {
                (Some(strategy.build::<usize>(seed)), *strategy == Strategy::Weighted, None)
            }
            GroupMode::Failover(f) => {
                (None, false, Some(Failover::new(members.len(), f.clone()).map_err(|e| invalid("failover", e))?))
            }
        };
        let inner = Arc::new_cyclic(|me| GroupInner {
            me: me.clone(),
            members: members
                .iter()
                .map(|m| Member {
                    addr: m.addr,
                    remote: Arc::new(Remote::from(m.addr)),
                    id: ConnectionId::unique(),
                    weight: m.weight,
                    in_flight: AtomicU32::new(0),
                    counters: MemberCounters::default(),
                })
                .collect(),
            state: Mutex::new(GroupState {
                candidates: Vec::with_capacity(states.len()),
                members: states,
                balancer,
                weighted,
                failover,
                balance_failovers: 0,
                balance_unavailable: 0,
                any_usable: false,
            }),
            config,
            client: client.clone(),
            usable: Notify::new(),
            rearm: Arc::new(Notify::new()),
            shutdown: watch::channel(false).0,
            closed: AtomicBool::new(false),
            id: ConnectionId::unique(),
            counters: GroupCounters::default(),
            metrics: (
                metrics::counter!("diam_group_retransmissions_total"),
                metrics::counter!("diam_group_reroutes_total"),
            ),
        });
        for i in 0..inner.members.len() {
            tokio::spawn(watch_member(Arc::downgrade(&inner), i, inner.shutdown.subscribe()));
        }
        tokio::spawn(timer(Arc::downgrade(&inner), inner.rearm.clone(), inner.shutdown.subscribe()));
        Ok(PeerGroup { inner })
    }

    /// The members' addresses, in order.
    pub fn members(&self) -> Vec<SocketAddr> {
        self.inner.members.iter().map(|m| m.addr).collect()
    }

    /// Sends `request` to a member and waits for the answer, within the
    /// connection's request timeout (waiting for a usable member and any
    /// retransmission included).
    pub async fn send(&self, request: Message) -> Result<Message, Error> {
        self.send_with(request, SendOptions::new()).await
    }

    /// [`send`](Self::send) with an explicit timeout.
    pub async fn send_with_timeout(&self, request: Message, timeout: Duration) -> Result<Message, Error> {
        self.send_with(request, SendOptions::new().timeout(timeout)).await
    }

    /// [`send`](Self::send) with per-request options. Dropping the future is
    /// safe: the request's slot is freed by its answer or deadline.
    pub async fn send_with(&self, request: Message, options: SendOptions) -> Result<Message, Error> {
        let g = &*self.inner;
        g.counters.requests.fetch_add(1, Ordering::Relaxed);
        let counted = Outcome { group: g, pool: Some(g.client.start_request()) };
        let timeout = options.timeout.unwrap_or(g.client.config().connection.request_timeout);
        let retryable = options.retryable.unwrap_or_else(|| request.flags().is_proxiable());
        let result = g.route(request, crate::peer::deadline_after(timeout), retryable).await;
        counted.finish(&result);
        result
    }

    /// Failover mode: moves traffic to the next usable secondary and keeps it
    /// off the primary until [`failback`](Self::failback). Returns the new
    /// active member; `None` when balancing or when no other secondary is
    /// usable.
    pub fn failover(&self) -> Option<SocketAddr> {
        self.inner.with_failover(|f, now| f.failover(now))?.map(|i| self.inner.members[i].addr)
    }

    /// Failover mode: ends a manual failover and moves traffic back to the
    /// primary when it is usable. Returns whether traffic moved.
    pub fn failback(&self) -> bool {
        self.inner.with_failover(|f, now| f.failback(now)).unwrap_or(false)
    }

    /// Failover mode: the state; `None` when balancing.
    pub fn failover_state(&self) -> Option<FailoverState> {
        lock(&self.inner.state).failover.as_ref().map(Failover::state)
    }

    /// Failover mode: the member carrying traffic.
    pub fn active(&self) -> Option<SocketAddr> {
        let st = lock(&self.inner.state);
        st.failover.as_ref().and_then(Failover::active).map(|i| self.inner.members[i].addr)
    }

    /// Health, breaker and traffic of every member, in member order.
    pub fn health_statistics(&self) -> Vec<MemberHealth> {
        let now = Instant::now();
        let st = lock(&self.inner.state);
        self.inner
            .members
            .iter()
            .zip(&st.members)
            .map(|(m, s)| MemberHealth {
                addr: m.addr,
                health: s.health.stats(),
                breaker: s.breaker.state(),
                open: s.open,
                usable: s.usable(now),
                in_flight: m.in_flight.load(Ordering::Relaxed),
                requests: m.counters.requests.load(Ordering::Relaxed),
                answers: m.counters.answers.load(Ordering::Relaxed),
                errors: m.counters.errors.load(Ordering::Relaxed),
                timeouts: m.counters.timeouts.load(Ordering::Relaxed),
                retransmissions_received: m.counters.retransmissions_received.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Connection losses and re-openings of every member, in member order.
    pub fn reconnection_statistics(&self) -> Vec<MemberReconnection> {
        let st = lock(&self.inner.state);
        self.inner
            .members
            .iter()
            .zip(&st.members)
            .map(|(m, s)| MemberReconnection {
                addr: m.addr,
                open: s.open,
                connections_lost: s.losses,
                reopened: s.reopened,
                failed_establishments: s.failed_establishments,
                last_error: s.entry.as_ref().and_then(|e| e.last_error()).or_else(|| s.last_error.clone()),
            })
            .collect()
    }

    /// Failover and retransmission counters.
    pub fn failover_statistics(&self) -> FailoverStatistics {
        let g = &*self.inner;
        let c = &g.counters;
        let st = lock(&g.state);
        let (state, active, failovers, manual, failbacks, unavailable) = match &st.failover {
            Some(f) => {
                let s = f.stats();
                (
                    Some(s.state),
                    s.active.map(|i| g.members[i].addr),
                    s.failovers,
                    s.manual_failovers,
                    s.failbacks,
                    s.unavailable,
                )
            }
            None => (None, None, st.balance_failovers, 0, 0, st.balance_unavailable),
        };
        FailoverStatistics {
            state,
            active,
            failovers,
            manual_failovers: manual,
            failbacks,
            unavailable,
            retransmissions: c.retransmissions.load(Ordering::Relaxed),
            retransmissions_answered: c.retransmissions_answered.load(Ordering::Relaxed),
            reroutes: c.reroutes.load(Ordering::Relaxed),
        }
    }

    /// Group-wide request totals.
    pub fn stats(&self) -> GroupStats {
        let c = &self.inner.counters;
        GroupStats {
            requests: c.requests.load(Ordering::Relaxed),
            answers: c.answers.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
        }
    }

    /// Stops the group: its background tasks end and new sends fail with
    /// [`Error::PoolClosed`]. The connections stay with the client (close
    /// them with [`AddressClient::close`]).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        self.inner.usable.notify_waiters();
    }
}

/// What one attempt's outcome says about the member.
enum Verdict {
    /// An answer that is not a protocol error.
    Success,
    /// No answer in time, or a 3xxx protocol-error answer.
    Failure(ErrorCategory),
    /// The connection failed under a written request (recorded once per
    /// connection by the member watcher; here it only opens the breaker).
    Lost,
    /// The connection was not available for requests (watchdog SUSPECT).
    Refused,
    /// Nothing about the peer (a local wait ran out, a local close...).
    Neutral,
}

fn verdict(outcome: &Reply) -> Verdict {
    match outcome {
        Ok(answer) => match result_code(answer) {
            // Protocol errors (busy, unable to deliver, loop...) say something
            // about the peer; 4xxx and 5xxx are about the request.
            Some(rc) if result_codes::class(rc) == 3 => Verdict::Failure(ErrorCategory::Application(rc)),
            _ => Verdict::Success,
        },
        Err(u) => match (&u.error, u.written) {
            (Error::Timeout, Some(_)) => Verdict::Failure(ErrorCategory::Timeout),
            (Error::ConnectionLost(_), Some(_)) => Verdict::Lost,
            (Error::NotAvailable(_), None) => Verdict::Refused,
            _ => Verdict::Neutral,
        },
    }
}

/// Most attempts of one request: the first, one reroute of a request that
/// never reached its connection, and one retransmission.
const MAX_ATTEMPTS: usize = 3;

impl GroupInner {
    /// Routes one request: pick, send, and on a connection failure reroute or
    /// retransmit once, never to a member already tried.
    async fn route(&self, request: Message, deadline: Instant, retryable: bool) -> Result<Message, Error> {
        if !request.is_request() {
            return Err(Error::InvalidRequest("the message has no R flag"));
        }
        let mut message = request;
        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        let mut attempts = 0;
        let (mut rerouted, mut retransmitted) = (false, false);
        loop {
            let attempt = self.acquire(&tried[..attempts], deadline).await?;
            let member = attempt.member;
            tried[attempts] = member;
            attempts += 1;
            let outcome = self.attempt(attempt, message.clone(), deadline).await;
            let written = matches!(&outcome, Ok(_) | Err(Unanswered { written: Some(_), .. }));
            if retransmitted && written {
                // The T-flag copy reached this member.
                self.counters.retransmissions.fetch_add(1, Ordering::Relaxed);
                self.metrics.0.increment(1);
                self.members[member].counters.retransmissions_received.fetch_add(1, Ordering::Relaxed);
            }
            let more = attempts < MAX_ATTEMPTS && attempts < self.members.len() && Instant::now() < deadline;
            match outcome {
                Ok(answer) => {
                    if retransmitted {
                        self.counters.retransmissions_answered.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                // It never reached the connection: no peer saw it, so it
                // may go elsewhere as it is.
                Err(Unanswered {
                    error: Error::NotAvailable(_) | Error::Closed | Error::ConnectionLost(_) | Error::Overloaded,
                    written: None,
                }) if more && !rerouted => {
                    rerouted = true;
                    self.counters.reroutes.fetch_add(1, Ordering::Relaxed);
                    self.metrics.1.increment(1);
                }
                Err(Unanswered { error: Error::ConnectionLost(reason), written: Some(e2e) })
                    if more && retryable && self.config.retransmit && !retransmitted =>
                {
                    tracing::debug!(peer = %self.members[member].addr, %reason, end_to_end = e2e, "retransmitting");
                    message = message.retransmission(e2e);
                    retransmitted = true;
                }
                Err(u) => return Err(u.error),
            }
        }
    }

    /// Sends on a reserved member and records the outcome.
    async fn attempt(&self, mut attempt: Attempt<'_>, message: Message, deadline: Instant) -> Reply {
        let started = Instant::now();
        let outcome = attempt.peer.send_until(message, deadline).await;
        attempt.recorded = true;
        self.record(&attempt, &outcome, started.elapsed());
        outcome
    }

    /// A reserved usable member (not one of `tried`), waiting for one until
    /// `deadline` when the configuration says so.
    async fn acquire(&self, tried: &[usize], deadline: Instant) -> Result<Attempt<'_>, Error> {
        loop {
            let notified = self.usable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) || self.client.is_closed() {
                return Err(Error::PoolClosed);
            }
            if let Some(attempt) = self.pick(tried) {
                return Ok(attempt);
            }
            if !self.config.wait_for_peer {
                return Err(Error::NoPeerAvailable);
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return Err(Error::NoPeerAvailable),
            }
        }
    }

    /// Chooses a member for the next request and reserves it (in-flight
    /// count, half-open probe).
    fn pick(&self, tried: &[usize]) -> Option<Attempt<'_>> {
        let now = Instant::now();
        let std_now = now.into_std();
        let mut out = Pending::default();
        let picked = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            sync_failover(st, now, &mut out);
            let ok = |st: &GroupState, i: usize| !tried.contains(&i) && st.members[i].pickable(now);
            let chosen = match (&st.failover, &mut st.balancer) {
                // The active member; when it is excluded or its half-open
                // breaker is busy probing, the next one in the machine's order.
                (Some(f), _) => match f.active() {
                    Some(a) if ok(st, a) => Some(a),
                    _ => f.preference().find(|&i| ok(st, i)),
                },
                (None, Some(balancer)) => {
                    st.candidates.clear();
                    for (i, (m, s)) in self.members.iter().zip(&st.members).enumerate() {
                        let mut c = Candidate::new(i)
                            .available(!tried.contains(&i) && s.pickable(now))
                            .in_flight(m.in_flight.load(Ordering::Relaxed))
                            .weight(m.weight);
                        if st.weighted {
                            c = c
                                .failure_rate(1.0 - s.health.success_rate().unwrap_or(1.0))
                                .latency(s.health.ewma_latency());
                        }
                        st.candidates.push(c);
                    }
                    balancer.pick(&st.candidates, std_now).map(|k| *st.candidates[k].id())
                }
                (None, None) => None,
            };
            chosen.and_then(|i| {
                let s = &mut st.members[i];
                let entry = s.entry.as_ref()?;
                let peer = entry.open_peer()?;
                entry.touch();
                let probe = s.breaker.state() != BreakerState::Closed;
                if !s.breaker.allow(std_now) {
                    return None;
                }
                drain_breaker(i, &mut s.breaker, &mut out);
                self.members[i].in_flight.fetch_add(1, Ordering::Relaxed);
                self.members[i].counters.requests.fetch_add(1, Ordering::Relaxed);
                Some(Attempt { group: self, member: i, peer, probe, recorded: false })
            })
        };
        self.flush(out);
        picked
    }

    /// Records one attempt's outcome in the member's health, breaker and
    /// balancer, and in the failover machine.
    fn record(&self, attempt: &Attempt<'_>, outcome: &Reply, latency: Duration) {
        let member = attempt.member;
        let c = &self.members[member].counters;
        match outcome {
            Ok(_) => c.answers.fetch_add(1, Ordering::Relaxed),
            Err(Unanswered { error: Error::Timeout, .. }) => c.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
        };
        let verdict = verdict(outcome);
        let now = Instant::now();
        let std_now = now.into_std();
        let mut out = Pending::default();
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let s = &mut st.members[member];
            // A request let through before the breaker tripped says nothing
            // about the probes now under way.
            let stale = s.breaker.state() == BreakerState::HalfOpen && !attempt.probe;
            let change = match verdict {
                Verdict::Success => {
                    if !stale {
                        s.breaker.on_success(std_now);
                    }
                    if let Some(b) = &mut st.balancer {
                        b.record(&member, true, std_now);
                    }
                    if let Some(f) = &mut st.failover {
                        f.confirm(member, std_now);
                    }
                    s.health.record_success(latency, std_now)
                }
                Verdict::Failure(category) => {
                    if !stale {
                        s.breaker.on_failure(std_now);
                    }
                    if let Some(b) = &mut st.balancer {
                        b.record(&member, false, std_now);
                    }
                    s.health.record_failure(category, std_now)
                }
                Verdict::Lost => {
                    s.breaker.trip(std_now);
                    None
                }
                Verdict::Refused => {
                    if !stale {
                        s.breaker.on_failure(std_now);
                    }
                    None
                }
                Verdict::Neutral => {
                    if attempt.probe {
                        s.breaker.on_abandoned();
                        out.wake = true;
                    }
                    None
                }
            };
            if let Some(change) = change {
                out.events.push((Some(member), change.to_event()));
            }
            drain_breaker(member, &mut st.members[member].breaker, &mut out);
            if let Some(f) = &mut st.failover {
                drain_failover(f, &mut out);
            }
            if !out.events.is_empty() {
                self.refresh(st, now, &mut out);
            }
        }
        self.flush(out);
    }

    /// Re-evaluates every member's usability for the failover machine and
    /// runs its due timers.
    fn refresh(&self, st: &mut GroupState, now: Instant, out: &mut Pending) {
        let usable = st.members.iter().any(|m| m.usable(now));
        sync_failover(st, now, out);
        if st.any_usable && !usable && !self.closed.load(Ordering::Acquire) && !self.client.is_closed() {
            if st.failover.is_none() {
                st.balance_unavailable += 1;
            }
            tracing::warn!(group = self.id.get(), "no member of the peer group is usable");
        }
        st.any_usable = usable;
        out.wake |= usable;
        out.rearm = true;
    }

    /// A member's pool slot changed.
    fn observe(&self, member: usize, slot: &Slot, entry: &Arc<Entry>) {
        let now = Instant::now();
        let std_now = now.into_std();
        let mut out = Pending::default();
        let mut check = None;
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let s = &mut st.members[member];
            if !s.entry.as_ref().is_some_and(|e| Arc::ptr_eq(e, entry)) {
                s.entry = Some(entry.clone());
            }
            let open = entry.is_open();
            // Closed on purpose (idle timeout, pool or group closing): not a failure.
            let local = matches!(slot, Slot::Failed(Error::Closed | Error::PoolClosed))
                || self.closed.load(Ordering::Acquire)
                || self.client.is_closed();
            let mut change = None;
            let mut lost = false;
            if local {
                s.open = open;
            } else if open && !s.open {
                s.open = true;
                if s.ever_open {
                    s.reopened += 1;
                }
                s.ever_open = true;
                // Every connection that opens is checked at once, whatever
                // the check interval: a dead member recovers through it.
                if !s.checking {
                    check = entry.open_peer();
                    s.checking = check.is_some();
                }
            } else if !open && s.open {
                s.open = false;
                s.losses += 1;
                s.breaker.trip(std_now);
                change = s.health.record_failure(ErrorCategory::Reset, std_now);
                lost = true;
            } else if let Slot::Failed(e) = slot {
                s.failed_establishments += 1;
                s.last_error = Some(e.to_string());
                change = s.health.record_failure(category(e), std_now);
            }
            if lost {
                if let Some(b) = &mut st.balancer {
                    b.record(&member, false, std_now);
                    if st.members.iter().enumerate().any(|(i, m)| i != member && m.usable(now)) {
                        st.balance_failovers += 1;
                    }
                }
            }
            if let Some(change) = change {
                out.events.push((Some(member), change.to_event()));
            }
            drain_breaker(member, &mut st.members[member].breaker, &mut out);
            self.refresh(st, now, &mut out);
        }
        self.flush(out);
        if let Some(peer) = check {
            self.spawn_check(member, peer);
        }
    }

    /// Runs `f` on the failover machine (failover mode only).
    fn with_failover<T>(&self, f: impl FnOnce(&mut Failover, std::time::Instant) -> T) -> Option<T> {
        let now = Instant::now();
        let mut out = Pending::default();
        let result = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            st.failover.as_ref()?;
            sync_failover(st, now, &mut out);
            let machine = st.failover.as_mut()?;
            let result = f(machine, now.into_std());
            drain_failover(machine, &mut out);
            self.refresh(st, now, &mut out);
            result
        };
        self.flush(out);
        Some(result)
    }

    /// Emits collected events and wakes whoever needs it, outside the lock.
    fn flush(&self, out: Pending) {
        for (member, data) in out.events {
            let (id, remote) = match member {
                Some(i) => (self.members[i].id, Some(self.members[i].remote.clone())),
                None => (self.id, None),
            };
            self.client.emit(id, remote, data);
        }
        if out.wake {
            self.usable.notify_waiters();
        }
        if out.rearm {
            self.rearm.notify_one();
        }
    }

    /// The earliest breaker or failover deadline after `now` (an open breaker
    /// whose wait is over keeps reporting it until the next request).
    fn next_timer(&self, now: Instant) -> Option<Instant> {
        let st = lock(&self.state);
        let breakers = st.members.iter().filter_map(|m| m.breaker.poll_timeout());
        let failback = st.failover.as_ref().and_then(Failover::poll_timeout);
        breakers.chain(failback).map(Instant::from_std).filter(|t| *t > now).min()
    }

    /// One DWR health check on every open member not already being checked
    /// (only the dead ones with `dead_only`).
    fn check_all(&self, dead_only: bool) {
        let peers: Vec<(usize, Peer)> = {
            let mut st = lock(&self.state);
            st.members
                .iter_mut()
                .enumerate()
                .filter(|(_, s)| !s.checking && (!dead_only || s.health.status() == HealthStatus::Dead))
                .filter_map(|(i, s)| {
                    let peer = s.entry.as_ref()?.open_peer()?;
                    s.checking = true;
                    Some((i, peer))
                })
                .collect()
        };
        for (i, peer) in peers {
            self.spawn_check(i, peer);
        }
    }

    /// Sends a DWR to `member` on `peer`; its `checking` flag is already set.
    fn spawn_check(&self, member: usize, peer: Peer) {
        let c = &self.client.config().connection;
        let dwr = Message::request(apps::COMMON, commands::DEVICE_WATCHDOG)
            .avp(avps::ORIGIN_HOST, c.peer.origin_host.as_str())
            .avp(avps::ORIGIN_REALM, c.peer.origin_realm.as_str())
            .build();
        let timeout = c.peer.watchdog.dwr_timeout.min(self.check_period());
        let group = self.me.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome = peer.send_until(dwr, started + timeout).await;
            if let Some(g) = group.upgrade() {
                g.check_done(member, peer, &outcome, started.elapsed());
            }
        });
    }

    /// How often the timer runs checks: the check interval, or
    /// [`DEAD_CHECK_INTERVAL`] (dead members only) when checks are off.
    fn check_period(&self) -> Duration {
        if self.config.check_interval.is_zero() {
            DEAD_CHECK_INTERVAL
        } else {
            self.config.check_interval
        }
    }

    fn check_done(&self, member: usize, peer: Peer, outcome: &Reply, latency: Duration) {
        let now = Instant::now();
        let std_now = now.into_std();
        let mut out = Pending::default();
        let again;
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let s = &mut st.members[member];
            let change = match (outcome, verdict(outcome)) {
                (Ok(dwa), _) => match result_code(dwa) {
                    Some(rc) if result_codes::class(rc) == 2 => s.health.record_success(latency, std_now),
                    Some(rc) => s.health.record_failure(ErrorCategory::Application(rc), std_now),
                    None => s.health.record_failure(ErrorCategory::Protocol, std_now),
                },
                (Err(_), Verdict::Failure(category)) => s.health.record_failure(category, std_now),
                // A lost connection is the watcher's to record; local waits
                // say nothing about the peer.
                (Err(_), _) => None,
            };
            // A dead member that answered is checked again at once until it
            // has recovered (at most the health recovery threshold of DWRs).
            again = outcome.is_ok() && s.health.status() == HealthStatus::Dead && s.open;
            s.checking = again;
            if let Some(change) = change {
                out.events.push((Some(member), change.to_event()));
                self.refresh(st, now, &mut out);
            }
        }
        self.flush(out);
        if again {
            self.spawn_check(member, peer);
        }
    }
}

/// Keeps the failover machine in step with the members' usability and runs
/// its due failback (failover mode only).
fn sync_failover(st: &mut GroupState, now: Instant, out: &mut Pending) {
    let std_now = now.into_std();
    if let Some(f) = &mut st.failover {
        for (i, m) in st.members.iter().enumerate() {
            f.set_available(i, m.usable(now), std_now);
        }
        f.handle_timeout(std_now);
        drain_failover(f, out);
    }
}

/// How often dead members are checked when the periodic checks are off.
const DEAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

fn drain_breaker(member: usize, breaker: &mut CircuitBreaker, out: &mut Pending) {
    while let Some(ev) = breaker.poll_event() {
        if ev.to() != BreakerState::Open {
            out.wake = true;
        }
        out.rearm = true;
        out.events.push((Some(member), ev.to_event()));
    }
}

fn drain_failover(f: &mut Failover, out: &mut Pending) {
    while let Some(ev) = f.poll_event() {
        tracing::info!(from = %ev.from(), to = %ev.to(), active = ?ev.active(), reason = ?ev.reason(), "peer group failover");
        out.rearm = true;
        out.wake = true;
        out.events.push((None, ev.to_event()));
    }
}

/// Keeps one member's pool entry alive: follows its slot, reports every
/// change to the group, and dials afresh (paced) when the pool gives up on it.
async fn watch_member(group: Weak<GroupInner>, member: usize, mut shutdown: watch::Receiver<bool>) {
    let Some(mut backoff) = group.upgrade().and_then(|g| {
        let c = g.client.config();
        Exponential::new(c.reconnect_interval, c.max_reconnect_delay, c.reconnect_backoff)
            .ok()
            .map(|b| b.with_jitter(Jitter::Equal, SplitMix64::new(crate::peer::seed())))
    }) else {
        return;
    };
    loop {
        let (entry, mut rx) = {
            let Some(g) = group.upgrade() else { return };
            match g.client.entry_for(g.members[member].addr) {
                Ok(entry) => {
                    let rx = entry.slot.subscribe();
                    (entry, rx)
                }
                Err(Error::PoolClosed) => return,
                Err(e) => {
                    tracing::warn!(peer = %g.members[member].addr, error = %e, "peer group member has no pool entry");
                    drop(g);
                    let delay = backoff.next_delay().unwrap_or(Duration::from_secs(1));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        loop {
            let slot = rx.borrow_and_update().clone();
            {
                let Some(g) = group.upgrade() else { return };
                g.observe(member, &slot, &entry);
            }
            match slot {
                Slot::Failed(_) => break,
                Slot::Ready(_) => backoff.reset(),
                _ => {}
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { break },
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
        // The pool dropped the entry (first establishment failed, or it gave
        // up reconnecting): dial again after a pause.
        let delay = backoff.next_delay().unwrap_or(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Runs the group's timers: breaker open waits ending, failbacks falling
/// due, and the periodic DWR checks. It holds the group only between waits.
async fn timer(group: Weak<GroupInner>, rearm: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let Some((interval, period)) = group.upgrade().map(|g| (g.config.check_interval, g.check_period())) else {
        return;
    };
    let mut next_check = Instant::now() + period;
    loop {
        let wake = match group.upgrade() {
            Some(g) => g.next_timer(Instant::now()).map_or(next_check, |t| t.min(next_check)),
            None => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            () = rearm.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let Some(g) = group.upgrade() else { return };
        let now = Instant::now();
        let mut out = Pending::default();
        g.refresh(&mut lock(&g.state), now, &mut out);
        // The timer is re-armed by this loop itself.
        out.rearm = false;
        g.flush(out);
        if now >= next_check {
            g.check_all(interval.is_zero());
            next_check = now + period;
        }
    }
}
