//! [`PeerGroup`]: one logical destination served by several peers (see
//! the type's documentation).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use diam_link::backoff::{Backoff, Exponential, RandomSource, SplitMix64};
use diam_link::balance::{Balancer, Candidate, Strategy, Weighted};
use diam_link::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use diam_link::events::{ConnectionId, EventData};
use diam_link::failover::{Failover, FailoverConfig, FailoverState};
use diam_link::health::{ErrorCategory, HealthConfig, HealthMonitor, HealthStats, HealthStatus};
use diam_proto::peer::result_code;
use diam_proto::psm::PeerState;
use diam_proto::uri::PeerAddr;
use diam_proto::{result_codes, Message};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::handle::{Reply, Unanswered};
use crate::pool::Counted;
use crate::{AddressClient, Error, PeerHandle};

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
    /// How often the watchdog of a dead member is asked for an early DWR
    /// (a dead member gets no traffic, so only its DWAs can bring it back;
    /// each DWA that comes back asks for the next one at once, until it has
    /// recovered). The probes go through the peer's RFC 3539 watchdog: there
    /// is no second DWR stream, and healthy members are watched by their
    /// watchdog's own DWRs. Default 5 s; zero means the default.
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

#[derive(Debug, Clone)]
enum Target {
    Addr(PeerAddr),
    Peer(PeerHandle),
}

/// One member of a group: a peer (by address on an [`AddressClient`], or a
/// node's [`PeerHandle`]) and, for the weighted strategy, its relative
/// capacity.
#[derive(Debug, Clone)]
pub struct GroupMember {
    target: Target,
    weight: u32,
}

impl GroupMember {
    /// A member of weight 1 at `addr` (on the group's [`AddressClient`]).
    pub fn new(addr: impl Into<PeerAddr>) -> Self {
        GroupMember { target: Target::Addr(addr.into()), weight: 1 }
    }

    /// A member of weight 1: a peer of a [`Node`](crate::Node).
    pub fn peer(peer: PeerHandle) -> Self {
        GroupMember { target: Target::Peer(peer), weight: 1 }
    }

    /// Sets the weight (used by [`Strategy::Weighted`]).
    #[must_use]
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }
}

impl From<std::net::SocketAddr> for GroupMember {
    fn from(addr: std::net::SocketAddr) -> Self {
        GroupMember::new(addr)
    }
}

impl From<PeerAddr> for GroupMember {
    fn from(addr: PeerAddr) -> Self {
        GroupMember::new(addr)
    }
}

impl From<PeerHandle> for GroupMember {
    fn from(peer: PeerHandle) -> Self {
        GroupMember::peer(peer)
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
    /// The member (its identity once known, else its address).
    pub peer: String,
    /// The member's address, when it is dialled.
    pub addr: Option<PeerAddr>,
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
    /// The member (its identity once known, else its address).
    pub peer: String,
    /// The member's address, when it is dialled.
    pub addr: Option<PeerAddr>,
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
    /// The index of the member carrying traffic (failover mode).
    pub active: Option<usize>,
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
    peer: PeerHandle,
    weight: u32,
    in_flight: AtomicU32,
    counters: MemberCounters,
}

/// The part of a member that changes under the group lock.
struct MemberState {
    health: HealthMonitor,
    breaker: CircuitBreaker,
    /// The peer was `Open` at the last observation.
    open: bool,
    ever_open: bool,
    losses: u64,
    reopened: u64,
    failed_establishments: u64,
    last_error: Option<String>,
    /// Peer counters at the last observation (to see what changed).
    seen_dwas: u64,
    seen_downs: u64,
    seen_failed: u64,
    suspect: bool,
    /// Failure rate and latency, for the weighted strategy (refreshed on
    /// every outcome).
    failure_rate: f64,
    latency: Option<Duration>,
}

impl MemberState {
    /// Whether the timer task has anything to do for the member: a breaker
    /// that is open or probing, or a dead member to probe.
    fn needs_timer(&self) -> bool {
        self.breaker.state() != BreakerState::Closed || self.health.status() == HealthStatus::Dead
    }

    /// Whether the member can carry traffic: open, not dead, breaker not
    /// waiting out an open period (half-open counts: it is being probed).
    fn usable(&self, now: Instant) -> bool {
        let breaker_up = match self.breaker.state() {
            BreakerState::Open => self.breaker.poll_timeout().is_some_and(|until| now.into_std() >= until),
            _ => true,
        };
        breaker_up && self.health.status() != HealthStatus::Dead && self.open
    }
}

/// The members usable now, kept current as members change (never rebuilt
/// per request), so a pick is O(1) (O(log n) for the weighted strategy).
#[derive(Default)]
struct Usable {
    list: Vec<usize>,
    /// Position of each member in `list`, `usize::MAX` when absent.
    pos: Vec<usize>,
    /// Least recently used first (the LRU strategy).
    lru: VecDeque<usize>,
    /// Running sums of the configured weights along `list` (weighted
    /// strategy), rebuilt when the set changes.
    cumulative: Vec<u64>,
}

impl Usable {
    fn new(members: usize) -> Self {
        Usable {
            list: Vec::with_capacity(members),
            pos: vec![usize::MAX; members],
            lru: VecDeque::new(),
            cumulative: Vec::new(),
        }
    }

    fn rebuild_weights(&mut self, weight: impl Fn(usize) -> u32) {
        self.cumulative.clear();
        let mut total = 0u64;
        for &m in &self.list {
            total += u64::from(weight(m));
            self.cumulative.push(total);
        }
    }

    /// A usable member drawn with probability proportional to its weight
    /// (uniformly when every weight is 0).
    fn draw_weighted(&self, rng: &mut SplitMix64) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return self.list.get(st_index(rng, self.list.len())).copied();
        }
        let target = rng.next_u64() % total;
        let k = self.cumulative.partition_point(|&c| c <= target);
        self.list.get(k).copied()
    }

    fn set(&mut self, member: usize, usable: bool) {
        let present = self.pos[member] != usize::MAX;
        if usable && !present {
            self.pos[member] = self.list.len();
            self.list.push(member);
            self.lru.push_back(member);
        } else if !usable && present {
            let i = self.pos[member];
            self.list.swap_remove(i);
            if let Some(&moved) = self.list.get(i) {
                self.pos[moved] = i;
            }
            self.pos[member] = usize::MAX;
            self.lru.retain(|&m| m != member);
        }
    }

    fn len(&self) -> usize {
        self.list.len()
    }
}

struct GroupState {
    members: Vec<MemberState>,
    usable: Usable,
    strategy: Option<Strategy>,
    weighted: Option<Weighted<usize>>,
    failover: Option<Failover>,
    rng: SplitMix64,
    cursor: usize,
    /// Balancing: member losses another member could absorb.
    balance_failovers: u64,
    /// Balancing: times no member was usable.
    balance_unavailable: u64,
    any_usable: bool,
    /// The members the timer task visits: breaker not closed, or dead
    /// (waiting out an open breaker, or probed). Healthy members are not
    /// walked, so the timer's work does not grow with the group.
    timed: Vec<usize>,
    /// Whether each member is in `timed`.
    in_timed: Vec<bool>,
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
    config: GroupConfig,
    /// The client whose accounting group requests join, when built on one.
    client: Option<AddressClient>,
    request_timeout: Duration,
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
    next_probe_seed: AtomicUsize,
}

impl Drop for GroupInner {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Several peers serving one destination.
///
/// A group routes each request to one of its members, so applications stop
/// caring which peer served them:
///
/// * **Members** are peers: addresses on an [`AddressClient`]
///   ([`PeerGroup::new`]) or a node's [`PeerHandle`]s
///   ([`PeerGroup::with_peers`]).
/// * **Choosing a peer.** In [`GroupMode::Balance`] every usable member carries
///   traffic and a [`Strategy`] picks one per request in O(1): the usable set
///   is kept current as members change, never rebuilt per request
///   (round-robin over it, least recently used, random, the less loaded of two
///   random members for least-outstanding, and for weighted the better of two
///   by diam-link's efficiency score). In [`GroupMode::Failover`] the first
///   member is the primary and the others are secondaries in order; traffic
///   goes to one member at a time, as the [`Failover`] machine says.
/// * **Usable** means: the peer is `Open` (capabilities exchanged, watchdog
///   OKAY: SUSPECT and REOPEN members get nothing), its health is not `Dead`,
///   and its circuit breaker lets requests through.
/// * **Health** per member ([`HealthMonitor`]) comes from live traffic (answers
///   with their latency, timeouts, 3xxx protocol-error answers), from the
///   peer's RFC 3539 watchdog (each DWA with its round-trip time, each SUSPECT),
///   and from each connection loss or failed attempt (counted once). A dead
///   member's watchdog is asked for early DWRs ([`GroupConfig::check_interval`]).
/// * **Circuit breaker** per member ([`CircuitBreaker`]): opened by consecutive
///   failures or a failure rate, and at once by a connection loss; its open wait
///   grows from [`GroupConfig::breaker_open_min`] to
///   [`GroupConfig::breaker_open_max`]; half-open lets a probe through.
/// * **Retransmission** (RFC 6733 §5.5.4): when a connection fails with a request
///   outstanding and the request is retryable (the P flag, or
///   [`SendOptions::retryable`]), it is re-sent once to another member with the T
///   flag set and the same End-to-End identifier. Other requests fail with
///   [`Error::ConnectionLost`]. A request that never reached a connection is
///   sent to another member as it is, once, retryable or not: no peer saw it.
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
/// Cloning is cheap; clones share the group.
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
const MAX_MEMBERS: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is updated in short, non-panicking steps; a poisoned lock
    // still holds consistent data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The health category of a failed attempt or lost connection.
fn category(e: Option<&Error>) -> ErrorCategory {
    match e {
        Some(Error::Connect { .. }) => ErrorCategory::Refused,
        Some(Error::ConnectTimeout(_) | Error::HandshakeTimeout | Error::Timeout) => ErrorCategory::Timeout,
        Some(Error::HandshakeFailed { .. } | Error::InvalidRequest(_)) => ErrorCategory::Protocol,
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

/// A group request's place in the group's and the client's accounting: its
/// outcome is counted exactly once, as cancelled when the caller drops the
/// future first.
struct Outcome<'a> {
    group: &'a GroupInner,
    pool: Option<Counted<'a>>,
    done: bool,
}

impl Outcome<'_> {
    fn finish(mut self, result: &Result<Message, Error>) {
        self.done = true;
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
        if !self.done {
            // Not finished: counted as an error here, as cancelled by the
            // client's own guard.
            self.group.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A member reserved for one request an agent forwards: like [`Attempt`],
/// but owning its group, so it can wait in a peer task's forwarding table.
pub(crate) struct Ticket {
    group: Arc<GroupInner>,
    member: usize,
    probe: bool,
    recorded: bool,
    started: Instant,
}

impl Ticket {
    /// The member's index in its group.
    pub(crate) fn member(&self) -> usize {
        self.member
    }

    /// Records the outcome, known at `now`, in the member's health and
    /// breaker.
    pub(crate) fn finish(mut self, outcome: &Reply, now: Instant) {
        self.recorded = true;
        let latency = now.saturating_duration_since(self.started);
        self.group.record_member(self.member, self.probe, outcome, latency, true, now);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.group.members[self.member].in_flight.fetch_sub(1, Ordering::Relaxed);
        if !self.recorded && self.probe {
            lock(&self.group.state).members[self.member].breaker.on_abandoned();
            self.group.usable.notify_waiters();
        }
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").field("member", &self.member).finish_non_exhaustive()
    }
}

impl PeerGroup {
    /// Reserves a usable member other than the peers in `tried`, for a
    /// request an agent forwards (no waiting: `None` when none is usable).
    pub(crate) fn reserve(&self, tried: &[ConnectionId], now: Instant) -> Option<(PeerHandle, Ticket)> {
        let g = &self.inner;
        if g.is_closed() {
            return None;
        }
        let mut excluded = [usize::MAX; MAX_ATTEMPTS];
        let mut n = 0;
        if !tried.is_empty() {
            for (i, m) in g.members.iter().enumerate() {
                if n < MAX_ATTEMPTS && tried.contains(&m.peer.shared.id) {
                    excluded[n] = i;
                    n += 1;
                }
            }
        }
        let attempt = g.pick_at(&excluded[..n], now)?;
        let (member, probe) = (attempt.member, attempt.probe);
        // The ticket takes over the attempt's reservation (and its release).
        std::mem::forget(attempt);
        let peer = g.members[member].peer.clone();
        Some((peer, Ticket { group: self.inner.clone(), member, probe, recorded: false, started: now }))
    }

    /// How many members the group has.
    pub(crate) fn member_count(&self) -> usize {
        self.inner.members.len()
    }

    /// Whether `id` is one of the group's peers.
    pub(crate) fn has_member(&self, id: ConnectionId) -> bool {
        self.inner.members.iter().any(|m| m.peer.shared.id == id)
    }

    /// A group of `members` (in order of preference for failover mode) on
    /// `client`'s connections: each address gets a connection of the client
    /// that is kept up (reconnected without giving up, never closed for
    /// idleness). Members may also be node peers ([`GroupMember::peer`]).
    /// Validates the configuration, then starts dialling every member; must be
    /// called inside a tokio runtime.
    ///
    /// Fails with [`Error::InvalidConfig`] for no members, more than 1024, a
    /// repeated member, or invalid health, breaker or failover settings.
    pub fn new<M: Into<GroupMember>>(
        client: &AddressClient,
        members: impl IntoIterator<Item = M>,
        config: GroupConfig,
    ) -> Result<PeerGroup, Error> {
        let members: Vec<GroupMember> = members.into_iter().map(Into::into).collect();
        let mut resolved = Vec::with_capacity(members.len());
        check_count(members.len())?;
        for m in members {
            let peer = match m.target {
                Target::Addr(a) => client.peer(a)?,
                Target::Peer(p) => p,
            };
            resolved.push((peer, m.weight));
        }
        Self::build(Some(client.clone()), resolved, config, client.config().connection.request_timeout)
    }

    /// A group of node peers (in order of preference for failover mode).
    pub fn with_peers<M: Into<GroupMember>>(
        members: impl IntoIterator<Item = M>,
        config: GroupConfig,
    ) -> Result<PeerGroup, Error> {
        let members: Vec<GroupMember> = members.into_iter().map(Into::into).collect();
        check_count(members.len())?;
        let mut resolved = Vec::with_capacity(members.len());
        for m in members {
            match m.target {
                Target::Peer(p) => resolved.push((p, m.weight)),
                Target::Addr(a) => {
                    return Err(Error::InvalidConfig(format!(
                        "{a}: an address member needs PeerGroup::new on a client"
                    )))
                }
            }
        }
        let timeout = resolved.first().map_or(Duration::from_secs(5), |(p, _)| p.shared.request_timeout);
        Self::build(None, resolved, config, timeout)
    }

    fn build(
        client: Option<AddressClient>,
        members: Vec<(PeerHandle, u32)>,
        config: GroupConfig,
        request_timeout: Duration,
    ) -> Result<PeerGroup, Error> {
        let mut seen = std::collections::HashSet::with_capacity(members.len());
        for (m, _) in &members {
            if !seen.insert(m.id()) {
                return Err(Error::InvalidConfig(format!("{} appears twice in the peer group", m.shared.label())));
            }
        }
        if config.breaker_open_min.is_zero() || config.breaker_open_min > config.breaker_open_max {
            return Err(Error::InvalidConfig("breaker_open_min must be positive and at most breaker_open_max".into()));
        }
        let invalid = |what: &str, e: diam_link::ConfigError| Error::InvalidConfig(format!("{what}: {e}"));
        let mut states = Vec::with_capacity(members.len());
        for _ in &members {
            states.push(MemberState {
                health: HealthMonitor::new(config.health.clone()).map_err(|e| invalid("health", e))?,
                breaker: CircuitBreaker::new(config.breaker.clone(), config.breaker_backoff()?)
                    .map_err(|e| invalid("breaker", e))?,
                open: false,
                ever_open: false,
                losses: 0,
                reopened: 0,
                failed_establishments: 0,
                last_error: None,
                seen_dwas: 0,
                seen_downs: 0,
                seen_failed: 0,
                suspect: false,
                failure_rate: 0.0,
                latency: None,
            });
        }
        let seed = config.seed.unwrap_or_else(crate::node::seed);
        let (strategy, weighted, failover) = match &config.mode {
            GroupMode::Balance(strategy) => {
                let w = (*strategy == Strategy::Weighted).then(|| Weighted::new(SplitMix64::new(seed ^ 0x5eed)));
                (Some(*strategy), w, None)
            }
            GroupMode::Failover(f) => {
                (None, None, Some(Failover::new(members.len(), f.clone()).map_err(|e| invalid("failover", e))?))
            }
        };
        let n = members.len();
        let inner = Arc::new(GroupInner {
            members: members
                .into_iter()
                .map(|(peer, weight)| Member {
                    peer,
                    weight,
                    in_flight: AtomicU32::new(0),
                    counters: MemberCounters::default(),
                })
                .collect(),
            state: Mutex::new(GroupState {
                members: states,
                usable: Usable::new(n),
                strategy,
                weighted,
                failover,
                rng: SplitMix64::new(seed),
                cursor: 0,
                balance_failovers: 0,
                balance_unavailable: 0,
                any_usable: false,
                timed: Vec::new(),
                in_timed: vec![false; n],
            }),
            config,
            client,
            request_timeout,
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
            next_probe_seed: AtomicUsize::new(0),
        });
        // One task watches every member: members queue their changes for it.
        let changes = Arc::new(MemberChanges::new(inner.members.len()));
        for (i, m) in inner.members.iter().enumerate() {
            let observer: Weak<MemberChanges> = Arc::downgrade(&changes);
            m.peer.observe(observer, i);
            m.peer.connect();
        }
        tokio::spawn(watch_members(Arc::downgrade(&inner), changes, inner.shutdown.subscribe()));
        tokio::spawn(timer(Arc::downgrade(&inner), inner.rearm.clone(), inner.shutdown.subscribe()));
        Ok(PeerGroup { inner })
    }

    /// The members' peers, in order.
    pub fn members(&self) -> Vec<PeerHandle> {
        self.inner.members.iter().map(|m| m.peer.clone()).collect()
    }

    /// Sends `request` to a member and waits for the answer, within the
    /// request timeout (waiting for a usable member and any retransmission
    /// included).
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
        let counted = Outcome { group: g, pool: g.client.as_ref().map(|c| c.start_request()), done: false };
        let timeout = options.timeout.unwrap_or(g.request_timeout);
        let retryable = options.retryable.unwrap_or_else(|| request.flags().is_proxiable());
        // Two clock readings per request: here (deadline, pick, start) and
        // when the outcome is in (latency, health, the next try).
        let now = Instant::now();
        let result = g.route(request, now, crate::handle::deadline_from(now, timeout), retryable).await;
        counted.finish(&result);
        result
    }

    /// Failover mode: moves traffic to the next usable secondary and keeps it
    /// off the primary until [`failback`](Self::failback). Returns the new
    /// active member's index; `None` when balancing or when no other
    /// secondary is usable.
    pub fn failover(&self) -> Option<usize> {
        self.inner.with_failover(|f, now| f.failover(now))?
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

    /// Failover mode: the index of the member carrying traffic.
    pub fn active(&self) -> Option<usize> {
        lock(&self.inner.state).failover.as_ref().and_then(Failover::active)
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
                peer: m.peer.shared.label().to_string(),
                addr: m.peer.address().cloned(),
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
                peer: m.peer.shared.label().to_string(),
                addr: m.peer.address().cloned(),
                open: s.open,
                connections_lost: s.losses,
                reopened: s.reopened,
                failed_establishments: s.failed_establishments,
                last_error: m.peer.last_error().map(|e| e.to_string()).or_else(|| s.last_error.clone()),
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
                (Some(s.state), s.active, s.failovers, s.manual_failovers, s.failbacks, s.unavailable)
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
    /// [`Error::PoolClosed`]. The peers stay up (close them through their
    /// client or node).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        self.inner.usable.notify_waiters();
    }
}

fn check_count(n: usize) -> Result<(), Error> {
    if n == 0 || n > MAX_MEMBERS {
        return Err(Error::InvalidConfig(format!("a peer group needs 1 to {MAX_MEMBERS} members")));
    }
    Ok(())
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
    /// The peer was not available for requests (watchdog SUSPECT).
    Refused,
    /// Nothing about the peer (a local wait ran out, a local close...).
    Neutral,
}

/// The verdict on a member for a request an agent forwarded: an answer
/// counts against the member only when the member itself says it cannot
/// take the request (3002 UNABLE_TO_DELIVER or 3004 TOO_BUSY, reported by
/// it: Error-Reporting-Host, or its Origin-Host when absent). Other 3xxx
/// answers are about the request, or come from beyond the member; counting
/// them would let a downstream client trip a route's breakers with requests
/// it knows will fail.
fn relayed_verdict(outcome: &Reply, member: &str) -> Verdict {
    let Ok(answer) = outcome else { return verdict(outcome) };
    let rc = result_code(answer);
    let busy = matches!(rc, Some(result_codes::DIAMETER_UNABLE_TO_DELIVER | result_codes::DIAMETER_TOO_BUSY));
    if !busy {
        return Verdict::Success;
    }
    let reporter = answer
        .get(diam_proto::avps::ERROR_REPORTING_HOST)
        .ok()
        .flatten()
        .or_else(|| answer.get(diam_proto::avps::ORIGIN_HOST).ok().flatten());
    if reporter.is_some_and(|h| h.eq_ignore_ascii_case(member)) {
        verdict(outcome)
    } else {
        Verdict::Success
    }
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
            (Error::MalformedAnswer(_), Some(_)) => Verdict::Failure(ErrorCategory::Protocol),
            (Error::ConnectionLost(_), Some(_)) => Verdict::Lost,
            (Error::NotAvailable(_), None) => Verdict::Refused,
            _ => Verdict::Neutral,
        },
    }
}

/// Most attempts of one request: the first, one reroute of a request that
/// never reached its connection, and one retransmission.
const MAX_ATTEMPTS: usize = 3;

/// How often dead members are probed when the check interval is zero.
const DEAD_CHECK_INTERVAL: Duration = Duration::from_secs(5);

impl GroupInner {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.client.as_ref().is_some_and(AddressClient::is_closed)
    }

    /// Routes one request: pick, send, and on a connection failure reroute or
    /// retransmit once, never to a member already tried.
    async fn route(
        &self,
        request: Message,
        now: Instant,
        deadline: Instant,
        retryable: bool,
    ) -> Result<Message, Error> {
        if !request.is_request() {
            return Err(Error::InvalidRequest("the message has no R flag"));
        }
        let mut message = request;
        let mut tried = [usize::MAX; MAX_ATTEMPTS];
        let mut attempts = 0;
        let (mut rerouted, mut retransmitted) = (false, false);
        let mut now = now;
        loop {
            let (attempt, started) = self.acquire(&tried[..attempts], deadline, now).await?;
            let member = attempt.member;
            tried[attempts] = member;
            attempts += 1;
            let (outcome, done) = self.attempt(attempt, message.clone(), deadline, started).await;
            now = done;
            let written = matches!(&outcome, Ok(_) | Err(Unanswered { written: Some(_), .. }));
            if retransmitted && written {
                // The T-flag copy reached this member.
                self.counters.retransmissions.fetch_add(1, Ordering::Relaxed);
                self.metrics.0.increment(1);
                self.members[member].counters.retransmissions_received.fetch_add(1, Ordering::Relaxed);
            }
            let more = attempts < MAX_ATTEMPTS && attempts < self.members.len() && done < deadline;
            match outcome {
                Ok(answer) => {
                    if retransmitted {
                        self.counters.retransmissions_answered.fetch_add(1, Ordering::Relaxed);
                    }
                    return Ok(answer);
                }
                // It never reached a connection: no peer saw it, so it may go
                // elsewhere as it is.
                Err(Unanswered {
                    error:
                        Error::NotAvailable(_)
                        | Error::Closed
                        | Error::ConnectionLost(_)
                        | Error::Overloaded
                        | Error::NotConnected,
                    written: None,
                }) if more && !rerouted => {
                    rerouted = true;
                    self.counters.reroutes.fetch_add(1, Ordering::Relaxed);
                    self.metrics.1.increment(1);
                }
                Err(Unanswered { error: Error::ConnectionLost(reason), written: Some(e2e) })
                    if more && retryable && self.config.retransmit && !retransmitted =>
                {
                    tracing::debug!(peer = %diam_proto::Escaped(&self.members[member].peer.shared.label()), %reason, end_to_end = e2e, "retransmitting");
                    message = message.retransmission(e2e);
                    retransmitted = true;
                }
                Err(u) => return Err(u.error),
            }
        }
    }

    /// Sends on a reserved member and records the outcome; also returns
    /// when it came (the one clock reading after `started`).
    async fn attempt(
        &self,
        mut attempt: Attempt<'_>,
        message: Message,
        deadline: Instant,
        started: Instant,
    ) -> (Reply, Instant) {
        let peer = &self.members[attempt.member].peer;
        // Straight to the peer task: the group already knows the member is
        // open, and must not wait for it here (a refusal reroutes instead).
        let outcome = peer.send_now(message, deadline).await;
        attempt.recorded = true;
        let done = Instant::now();
        let latency = done.saturating_duration_since(started);
        self.record_member(attempt.member, attempt.probe, &outcome, latency, false, done);
        (outcome, done)
    }

    /// A reserved usable member (not one of `tried`), waiting for one until
    /// `deadline` when the configuration says so; with the clock reading it
    /// was picked at (`now` when one was free at once).
    async fn acquire(&self, tried: &[usize], deadline: Instant, now: Instant) -> Result<(Attempt<'_>, Instant), Error> {
        if self.is_closed() {
            return Err(Error::PoolClosed);
        }
        // The common case first, without registering for a wake-up.
        if let Some(attempt) = self.pick_at(tried, now) {
            return Ok((attempt, now));
        }
        let mut now = now;
        loop {
            let notified = self.usable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return Err(Error::PoolClosed);
            }
            if let Some(attempt) = self.pick_at(tried, now) {
                return Ok((attempt, now));
            }
            if !self.config.wait_for_peer {
                return Err(Error::NoPeerAvailable);
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return Err(Error::NoPeerAvailable),
            }
            now = Instant::now();
        }
    }

    /// Chooses a member for the next request at `now` (the caller's clock
    /// reading) and reserves it (in-flight count, half-open probe). O(1) in
    /// the number of members (LRU: O(1) amortized; a member refused by its
    /// breaker costs one more draw).
    fn pick_at(&self, tried: &[usize], now: Instant) -> Option<Attempt<'_>> {
        let std_now = now.into_std();
        let mut out = Pending::default();
        let picked = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let mut chosen = None;
            // A few draws: an excluded member, or a half-open breaker already
            // busy probing, sends us to another one.
            for _ in 0..4 {
                let Some(i) = self.choose(st, tried, std_now) else { break };
                let s = &mut st.members[i];
                let probe = s.breaker.state() != BreakerState::Closed;
                if !s.breaker.allow(std_now) {
                    self.refresh_member(st, i, now, &mut out);
                    continue;
                }
                drain_breaker(i, &mut st.members[i].breaker, &mut out);
                chosen = Some((i, probe));
                break;
            }
            chosen.map(|(i, probe)| {
                self.members[i].in_flight.fetch_add(1, Ordering::Relaxed);
                self.members[i].counters.requests.fetch_add(1, Ordering::Relaxed);
                self.members[i].peer.shared.touch_at(now);
                Attempt { group: self, member: i, probe, recorded: false }
            })
        };
        self.flush(out);
        picked
    }

    /// One candidate per the mode and strategy.
    fn choose(&self, st: &mut GroupState, tried: &[usize], now: std::time::Instant) -> Option<usize> {
        let ok = |i: usize| !tried.contains(&i);
        if let Some(f) = &st.failover {
            // The active member; when it is excluded or unusable, the next
            // one in the machine's order.
            let usable = |i: usize| ok(i) && st.usable.pos[i] != usize::MAX;
            return match f.active() {
                Some(a) if usable(a) => Some(a),
                _ => f.preference().find(|&i| usable(i)),
            };
        }
        let n = st.usable.len();
        if n == 0 {
            return None;
        }
        let strategy = st.strategy.unwrap_or(Strategy::RoundRobin);
        let draw = |rng: &mut SplitMix64| st_index(rng, n);
        match strategy {
            Strategy::RoundRobin => {
                for k in 0..n.min(MAX_ATTEMPTS + 1) {
                    let i = st.usable.list[(st.cursor + k) % n];
                    if ok(i) {
                        st.cursor = (st.cursor + k + 1) % n.max(1);
                        return Some(i);
                    }
                }
                None
            }
            Strategy::LeastRecentlyUsed => {
                let pos = st.usable.lru.iter().position(|&i| ok(i))?;
                let i = st.usable.lru.remove(pos)?;
                st.usable.lru.push_back(i);
                Some(i)
            }
            Strategy::Weighted => {
                // Drawn in proportion to the configured weight, then kept with
                // a probability equal to the member's efficiency (diam-link's
                // score over its weight: failure rate, latency, recent
                // failures): a healthy group is split exactly by weight.
                let mut last = None;
                for _ in 0..4 {
                    let Some(i) = st.usable.draw_weighted(&mut st.rng) else { break };
                    if !ok(i) {
                        continue;
                    }
                    last = Some(i);
                    let weight = self.members[i].weight;
                    let candidate = Candidate::new(i)
                        .in_flight(self.members[i].in_flight.load(Ordering::Relaxed))
                        .weight(weight)
                        .failure_rate(st.members[i].failure_rate)
                        .latency(st.members[i].latency);
                    let w = st.weighted.as_ref()?;
                    let efficiency = if weight == 0 { 1.0 } else { w.score(&candidate, now) / f64::from(weight) };
                    let roll = (st.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    if roll < efficiency {
                        return Some(i);
                    }
                }
                last.or_else(|| st.usable.list.iter().copied().find(|&i| ok(i)))
            }
            Strategy::Random => {
                for _ in 0..4 {
                    let i = st.usable.list[draw(&mut st.rng)];
                    if ok(i) {
                        return Some(i);
                    }
                }
                st.usable.list.iter().copied().find(|&i| ok(i))
            }
            // Power of two choices on the requests in flight
            // (least-outstanding, and any strategy added later).
            _ => {
                let a = st.usable.list[draw(&mut st.rng)];
                let b = if n > 1 {
                    let mut j = draw(&mut st.rng);
                    if st.usable.list[j] == a {
                        j = (j + 1) % n;
                    }
                    st.usable.list[j]
                } else {
                    a
                };
                let pair: Vec<usize> = [a, b].into_iter().filter(|&i| ok(i)).collect();
                let (a, b) = match pair.as_slice() {
                    [] => return st.usable.list.iter().copied().find(|&i| ok(i)),
                    [x] => return Some(*x),
                    [x, y, ..] => (*x, *y),
                };
                if a == b {
                    return Some(a);
                }
                let flight = |i: usize| self.members[i].in_flight.load(Ordering::Relaxed);
                Some(if flight(b) < flight(a) { b } else { a })
            }
        }
    }

    /// Re-evaluates one member's usability and updates the usable set.
    fn refresh_member(&self, st: &mut GroupState, member: usize, now: Instant, out: &mut Pending) {
        let usable = st.members[member].usable(now);
        let was = st.usable.pos[member] != usize::MAX;
        if usable != was {
            st.usable.set(member, usable);
            if st.weighted.is_some() {
                st.usable.rebuild_weights(|m| self.members[m].weight);
            }
            if let Some(f) = &mut st.failover {
                f.set_available(member, usable, now.into_std());
                drain_failover(f, out);
            }
            out.wake |= usable;
            out.rearm = true;
        }
        if !st.in_timed[member] && st.members[member].needs_timer() {
            st.in_timed[member] = true;
            st.timed.push(member);
            out.rearm = true;
        }
    }

    /// Re-evaluates every member, and the whole group's usability.
    fn refresh(&self, st: &mut GroupState, now: Instant, out: &mut Pending) {
        for i in 0..st.members.len() {
            self.refresh_member(st, i, now, out);
        }
        self.refresh_group(st, now, out);
    }

    /// The timer's pass: re-evaluates only the members with a timer (see
    /// [`GroupState::timed`]), drops those that no longer need one, and
    /// the whole group's usability.
    fn refresh_timed(&self, st: &mut GroupState, now: Instant, out: &mut Pending) {
        let mut timed = std::mem::take(&mut st.timed);
        for &i in &timed {
            self.refresh_member(st, i, now, out);
        }
        timed.retain(|&i| {
            let keep = st.members[i].needs_timer();
            st.in_timed[i] = keep;
            keep
        });
        // Members refreshed meanwhile were already listed; keep any others.
        timed.append(&mut st.timed);
        st.timed = timed;
        self.refresh_group(st, now, out);
    }

    fn refresh_group(&self, st: &mut GroupState, now: Instant, out: &mut Pending) {
        if let Some(f) = &mut st.failover {
            f.handle_timeout(now.into_std());
            drain_failover(f, out);
        }
        self.note_usable(st);
        out.wake |= st.usable.len() > 0;
    }

    fn note_usable(&self, st: &mut GroupState) {
        let usable = st.usable.len() > 0;
        if st.any_usable && !usable && !self.is_closed() {
            if st.failover.is_none() {
                st.balance_unavailable += 1;
            }
            tracing::warn!(group = self.id.get(), "no member of the peer group is usable");
        }
        st.any_usable = usable;
    }

    /// Records one attempt's outcome in the member's health, breaker and
    /// balancer, and in the failover machine. `relayed`: the request was forwarded for an
    /// agent, so a 3xxx answer may come from further away than the member
    /// (see [`relayed_verdict`]).
    fn record_member(
        &self,
        member: usize,
        probe: bool,
        outcome: &Reply,
        latency: Duration,
        relayed: bool,
        now: Instant,
    ) {
        let c = &self.members[member].counters;
        match outcome {
            Ok(_) => c.answers.fetch_add(1, Ordering::Relaxed),
            Err(Unanswered { error: Error::Timeout, .. }) => c.timeouts.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.errors.fetch_add(1, Ordering::Relaxed),
        };
        let verdict = if relayed {
            relayed_verdict(outcome, &self.members[member].peer.shared.label())
        } else {
            verdict(outcome)
        };
        let std_now = now.into_std();
        let mut out = Pending::default();
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let weighted = st.weighted.is_some();
            let s = &mut st.members[member];
            // A request let through before the breaker tripped says nothing
            // about the probes now under way.
            let stale = s.breaker.state() == BreakerState::HalfOpen && !probe;
            let change = match verdict {
                Verdict::Success => {
                    if !stale {
                        s.breaker.on_success(std_now);
                    }
                    if let Some(f) = &mut st.failover {
                        f.confirm(member, std_now);
                    }
                    st.members[member].health.record_success(latency, std_now)
                }
                Verdict::Failure(category) => {
                    if !stale {
                        s.breaker.on_failure(std_now);
                    }
                    if let Some(w) = &mut st.weighted {
                        w.record(&member, false, std_now);
                    }
                    st.members[member].health.record_failure(category, std_now)
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
                    if probe {
                        s.breaker.on_abandoned();
                        out.wake = true;
                    }
                    None
                }
            };
            let s = &mut st.members[member];
            if weighted {
                s.failure_rate = 1.0 - s.health.success_rate().unwrap_or(1.0);
                s.latency = s.health.ewma_latency();
            }
            if let Some(change) = change {
                out.events.push((Some(member), change.to_event()));
            }
            drain_breaker(member, &mut st.members[member].breaker, &mut out);
            if let Some(f) = &mut st.failover {
                drain_failover(f, &mut out);
            }
            if !out.events.is_empty() || out.rearm {
                self.refresh_member(st, member, now, &mut out);
                self.note_usable(st);
            }
        }
        self.flush(out);
    }

    /// A member's peer changed (state, a watchdog answer, a loss): health,
    /// breaker and usability follow.
    fn observe(&self, member: usize) {
        let now = Instant::now();
        let std_now = now.into_std();
        let peer = &self.members[member].peer;
        let state = peer.state();
        let stats = peer.stats();
        let mut out = Pending::default();
        let probe;
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            let s = &mut st.members[member];
            let open = state == PeerState::Open;
            let local = self.is_closed() || matches!(state, PeerState::Closing | PeerState::Closed);
            let mut changes = Vec::new();
            if stats.downs > s.seen_downs {
                let lost = stats.downs - s.seen_downs;
                s.seen_downs = stats.downs;
                if !local {
                    s.losses += lost;
                    s.breaker.trip(std_now);
                    changes.extend(s.health.record_failure(ErrorCategory::Reset, std_now));
                    if st.failover.is_none() && st.usable.list.iter().any(|&i| i != member) {
                        st.balance_failovers += 1;
                    }
                    if let Some(w) = &mut st.weighted {
                        w.record(&member, false, std_now);
                    }
                }
            }
            let s = &mut st.members[member];
            if stats.failed_attempts > s.seen_failed {
                s.seen_failed = stats.failed_attempts;
                s.failed_establishments += 1;
                let err = peer.last_error();
                s.last_error = err.as_ref().map(ToString::to_string);
                changes.extend(s.health.record_failure(category(err.as_ref()), std_now));
            }
            if stats.watchdog_answers > s.seen_dwas {
                s.seen_dwas = stats.watchdog_answers;
                changes.extend(s.health.record_success(stats.last_watchdog_rtt, std_now));
            }
            let suspect = state == PeerState::Suspect;
            if suspect && !s.suspect {
                changes.extend(s.health.record_failure(ErrorCategory::Timeout, std_now));
            }
            s.suspect = suspect;
            if open && !s.open {
                if s.ever_open {
                    s.reopened += 1;
                }
                s.ever_open = true;
            }
            s.open = open;
            // A dead member gets no traffic: only its DWAs can revive it.
            probe = open && s.health.status() == HealthStatus::Dead;
            for change in changes {
                out.events.push((Some(member), change.to_event()));
            }
            drain_breaker(member, &mut st.members[member].breaker, &mut out);
            self.refresh_member(st, member, now, &mut out);
            self.note_usable(st);
        }
        self.flush(out);
        if probe {
            peer.probe();
        }
    }

    /// Runs `f` on the failover machine (failover mode only).
    fn with_failover<T>(&self, f: impl FnOnce(&mut Failover, std::time::Instant) -> T) -> Option<T> {
        let now = Instant::now();
        let mut out = Pending::default();
        let result = {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
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
            let (id, remote, events) = match member {
                Some(i) => {
                    let s = &self.members[i].peer.shared;
                    (s.id, s.remote.clone(), &s.events)
                }
                None => (self.id, None, &self.members[0].peer.shared.events),
            };
            if events.has_listeners(data.kind()) {
                // Listener failures are the dispatcher's business.
                let _ = events.emit(diam_link::events::Event::new(id, remote, data));
            }
        }
        if out.wake {
            self.usable.notify_waiters();
        }
        if out.rearm {
            self.rearm.notify_one();
        }
    }

    /// The earliest breaker or failover deadline after `now`.
    fn next_timer(&self, now: Instant) -> Option<Instant> {
        let st = lock(&self.state);
        let breakers = st.timed.iter().filter_map(|&i| st.members[i].breaker.poll_timeout());
        let failback = st.failover.as_ref().and_then(Failover::poll_timeout);
        breakers.chain(failback).map(Instant::from_std).filter(|t| *t > now).min()
    }

    /// Asks the watchdog of every dead, open member for an early DWR.
    fn probe_dead(&self) {
        let dead: Vec<usize> = {
            let st = lock(&self.state);
            st.timed
                .iter()
                .copied()
                .filter(|&i| st.members[i].open && st.members[i].health.status() == HealthStatus::Dead)
                .collect()
        };
        self.next_probe_seed.fetch_add(1, Ordering::Relaxed);
        for i in dead {
            self.members[i].peer.probe();
        }
    }

    fn check_period(&self) -> Duration {
        if self.config.check_interval.is_zero() {
            DEAD_CHECK_INTERVAL
        } else {
            self.config.check_interval
        }
    }
}

fn st_index(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

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

/// The members whose peer changed since the watcher last looked, each
/// queued at most once (so the queue is bounded by the members).
struct MemberChanges {
    queued: Vec<AtomicBool>,
    dirty: Mutex<Vec<usize>>,
    wake: Notify,
}

impl MemberChanges {
    fn new(members: usize) -> MemberChanges {
        MemberChanges {
            queued: (0..members).map(|_| AtomicBool::new(false)).collect(),
            dirty: Mutex::new(Vec::new()),
            wake: Notify::new(),
        }
    }
}

impl crate::handle::Observer for MemberChanges {
    fn changed(&self, member: usize) {
        let Some(queued) = self.queued.get(member) else { return };
        if !queued.swap(true, Ordering::AcqRel) {
            lock(&self.dirty).push(member);
            // Stores a permit when the watcher is busy: no change is lost.
            self.wake.notify_one();
        }
    }
}

/// Observes each member once, then every member whose peer changed (its
/// state, or a watchdog answer), in batches: one task for the whole group,
/// woken once for all the changes that came in since it last ran.
async fn watch_members(group: Weak<GroupInner>, changes: Arc<MemberChanges>, mut shutdown: watch::Receiver<bool>) {
    {
        let Some(g) = group.upgrade() else { return };
        for member in 0..g.members.len() {
            g.observe(member);
        }
    }
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            () = changes.wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        std::mem::swap(&mut batch, &mut *lock(&changes.dirty));
        let Some(g) = group.upgrade() else { return };
        for member in batch.drain(..) {
            // Cleared first (and with acquire, to see what the peer wrote
            // before it queued us): a change made while we observe queues
            // the member again.
            changes.queued[member].swap(false, Ordering::AcqRel);
            g.observe(member);
        }
    }
}

/// Runs the group's timers: breaker open waits ending, failbacks falling
/// due, and the dead-member probes. It holds the group only between waits.
async fn timer(group: Weak<GroupInner>, rearm: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    let Some(period) = group.upgrade().map(|g| g.check_period()) else { return };
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
        g.refresh_timed(&mut lock(&g.state), now, &mut out);
        // The timer is re-armed by this loop itself.
        out.rearm = false;
        g.flush(out);
        if now >= next_check {
            g.probe_dead();
            next_check = now + period;
        }
    }
}

#[cfg(test)]
mod member_changes_tests {
    use super::*;
    use crate::handle::Observer;

    /// A member is queued once however often it changes before the watcher
    /// looks (the queue is bounded by the members), again once the watcher
    /// has taken it, and a key beyond the members is ignored.
    #[test]
    fn each_member_is_queued_at_most_once() {
        let c = MemberChanges::new(3);
        for _ in 0..100 {
            c.changed(1);
            c.changed(2);
        }
        c.changed(7);
        assert_eq!(*lock(&c.dirty), vec![1, 2]);
        // The watcher takes the batch and clears the flags as it observes.
        let batch = std::mem::take(&mut *lock(&c.dirty));
        for m in batch {
            assert!(c.queued[m].swap(false, Ordering::AcqRel));
        }
        c.changed(2);
        assert_eq!(*lock(&c.dirty), vec![2]);
    }
}
