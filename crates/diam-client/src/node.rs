//! [`Node`]: one Diameter identity, its listeners, and one peer table for
//! both directions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use diam_link::events::{ConnectionId, CustomEvent, Event, EventData, EventDispatcher, EventKind, ExecutorConfig};
use diam_link::Remote;
use diam_proto::check::{check_request, MandatoryAvps};
use diam_proto::peer::{is_identity, IdGenerator, PeerConfig, PeerInfo};
use diam_proto::psm::{PeerMachine, PeerSettings, ReconnectPolicy};
use diam_proto::uri::PeerAddr;
use diam_proto::{avps, commands, disconnect_cause, result_codes, Dictionary, Escaped, Message};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::driver::{close_stream, read_first, Inbound, PeerTask, TaskInit};
use crate::events::PeerFailure;
use crate::handle::{lock, PeerHandle, PeerShared, SharedInit};
use crate::limits::{BufferBudget, ConnectionLimits, Guarded};
use crate::tls::{TlsAcceptor, TlsConfig, TlsConnector, TlsHandle};
use crate::transport::{Acceptor, BoxFuture, Connection, Connector, TcpAcceptor, TcpConnector};
use crate::{Error, Handler, NodeConfig, TimerGrid};

/// Decides whether a peer that is not configured may connect: it gets the
/// CER's capabilities and the remote socket address.
pub type Authorizer = Arc<dyn Fn(&PeerInfo, Option<SocketAddr>) -> bool + Send + Sync>;

enum Authorize {
    /// Only configured peers and the allow-list (the default).
    Configured,
    /// Anyone with a valid CER.
    Any,
    /// Configured peers, and those the function accepts.
    Custom(Authorizer),
}

/// A seed for identifiers and jitter: diam-link's generator, seeded from
/// per-instance hashing keys and the clock, so peers differ.
pub(crate) fn seed() -> u64 {
    use diam_link::backoff::RandomSource;
    diam_link::backoff::SplitMix64::from_entropy().next_u64()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

struct Registered {
    handle: PeerHandle,
    inbound: mpsc::Sender<Box<Inbound>>,
    configured: bool,
}

#[derive(Default)]
struct Table {
    /// Peers reachable by identity (lowercase): configured ones, and those
    /// accepted from an inbound CER.
    by_identity: HashMap<String, Registered>,
    /// Every peer of the node, by id (address-keyed ones too).
    all: HashMap<ConnectionId, PeerHandle>,
}

/// What the peer tasks share with their node.
pub(crate) struct NodeShared {
    pub(crate) config: NodeConfig,
    pub(crate) peer_config: Arc<PeerConfig>,
    pub(crate) connector: Arc<dyn Connector>,
    handlers: HashMap<u32, Arc<dyn Handler>>,
    default_handler: Option<Arc<dyn Handler>>,
    authorize: Authorize,
    events: EventDispatcher,
    table: Mutex<Table>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    handshakes: Arc<Semaphore>,
    /// TLS credentials (listeners, `aaas://` dials, in-band TLS).
    pub(crate) tls: Option<TlsHandle>,
    /// Identities and `*.domain` patterns admitted besides configured peers.
    allow: Vec<AllowPattern>,
    limits: Arc<ConnectionLimits>,
    pub(crate) budget: Arc<BufferBudget>,
    /// Routing table and forwarding state (agents).
    pub(crate) agent: Arc<crate::agent::Agent>,
    /// The peers' deadlines on the coalescing grid.
    pub(crate) grid: TimerGrid,
}

/// An entry of the allow-list: an exact DiameterIdentity, or `*.domain`
/// for any identity under `domain` (not `domain` itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowPattern {
    Exact(String),
    Suffix(String),
}

impl AllowPattern {
    fn parse(p: &str) -> Result<AllowPattern, Error> {
        let bad = || Error::InvalidConfig(format!("allow pattern {:?}: not an identity or *.domain", Escaped(p)));
        match p.strip_prefix("*.") {
            Some(domain) if is_identity(domain) => {
                Ok(AllowPattern::Suffix(format!(".{}", domain.to_ascii_lowercase())))
            }
            Some(_) => Err(bad()),
            None if is_identity(p) => Ok(AllowPattern::Exact(p.to_ascii_lowercase())),
            None => Err(bad()),
        }
    }

    fn matches(&self, identity: &str) -> bool {
        let id = identity.to_ascii_lowercase();
        match self {
            AllowPattern::Exact(e) => *e == id,
            AllowPattern::Suffix(s) => id.len() > s.len() && id.ends_with(s.as_str()),
        }
    }
}

/// A peer to start.
pub(crate) struct PeerSpec {
    pub(crate) identity: Option<String>,
    pub(crate) targets: Vec<PeerAddr>,
    pub(crate) policy: Option<Box<dyn ReconnectPolicy>>,
    /// Dial on the first send rather than at once.
    pub(crate) lazy: bool,
    pub(crate) fail_fast_reconnecting: bool,
    /// Enter the identity table under the identity the first capabilities
    /// exchange reveals (a configured peer known by its address only).
    pub(crate) learn: bool,
}

impl NodeShared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn dictionary(&self) -> &Dictionary {
        self.config.dictionary.as_deref().unwrap_or_else(|| Dictionary::base())
    }

    /// Whether unknown M-bit AVPs are refused: as configured, except on a
    /// node that advertises Relay, which forwards what it does not know
    /// (RFC 6733 §4.1).
    pub(crate) fn mandatory_avps(&self) -> MandatoryAvps {
        if self.peer_config.applications().any(|a| a == diam_proto::apps::RELAY) {
            MandatoryAvps::Ignore
        } else {
            self.config.mandatory_avps
        }
    }

    pub(crate) fn handler(&self, application_id: u32) -> Option<Arc<dyn Handler>> {
        self.handlers.get(&application_id).or(self.default_handler.as_ref()).cloned()
    }

    pub(crate) fn emit(&self, id: ConnectionId, remote: Option<Arc<Remote>>, data: EventData) {
        if self.events.has_listeners(data.kind()) {
            // Listener failures are the dispatcher's business (its error policy).
            let _ = self.events.emit(Event::new(id, remote, data));
        }
    }

    pub(crate) fn report_failure(&self, id: ConnectionId, remote: Option<Arc<Remote>>, failure: PeerFailure) {
        self.emit(id, remote, EventData::Custom(CustomEvent::new("peer_failure", failure)));
    }

    /// A peer task ended: it leaves the table.
    pub(crate) fn forget(&self, shared: &Arc<PeerShared>) {
        let mut t = lock(&self.table);
        t.all.remove(&shared.id);
        t.by_identity.retain(|_, r| !Arc::ptr_eq(&r.handle.shared, shared));
    }

    /// Starts a peer task.
    /// Starts a peer task and enters it in `table` (the caller holds the
    /// table's lock, so that checking and inserting are one step).
    fn spawn_peer_in(self: &Arc<Self>, table: &mut Table, spec: PeerSpec) -> (PeerHandle, mpsc::Sender<Box<Inbound>>) {
        let c = &self.config.connection;
        // Room for every request a caller may have in flight, plus control
        // commands (a close must always fit).
        let (tx, rx) = mpsc::channel(c.max_pending.min(65_536));
        let (ctx, crx) = mpsc::channel(16);
        let (itx, irx) = mpsc::channel(4);
        let label: Arc<str> = match (&spec.identity, spec.targets.first()) {
            (Some(id), _) => Arc::from(id.as_str()),
            (None, Some(a)) => Arc::from(a.to_string().as_str()),
            (None, None) => Arc::from("unknown"),
        };
        let remote = spec.targets.first().and_then(|a| Remote::tcp(a.host(), a.port()).ok()).map(Arc::new);
        let shared = PeerShared::new(SharedInit {
            label,
            target: spec.targets.first().cloned(),
            remote,
            events: self.events.clone(),
            commands: tx,
            control: ctx,
            max_pending: c.max_pending,
            request_timeout: c.request_timeout,
            fail_fast_reconnecting: spec.fail_fast_reconnecting,
            lazy: spec.lazy,
        });
        let seed = seed();
        let settings = PeerSettings { identity: spec.identity, busy_backoff: self.config.reconnect.busy_backoff };
        let machine =
            PeerMachine::new(self.peer_config.clone(), settings, spec.policy, IdGenerator::new(unix_now(), seed), seed);
        let handle = PeerHandle { shared: shared.clone(), owner: None };
        table.all.insert(shared.id, handle.clone());
        let task = PeerTask::new(TaskInit {
            node: self.clone(),
            shared,
            machine,
            targets: spec.targets,
            commands: rx,
            control: crx,
            inbound: irx,
            learn: spec.learn.then(|| itx.clone()),
        });
        tokio::spawn(task.run());
        (handle, itx)
    }

    /// A configured peer known by its address learned its identity: inbound
    /// connections from it go to it from now on (unless another configured
    /// peer has that identity).
    pub(crate) fn learned(&self, shared: &Arc<PeerShared>, identity: &str, inbound: mpsc::Sender<Box<Inbound>>) {
        let key = identity.to_ascii_lowercase();
        let mut t = lock(&self.table);
        if t.by_identity.get(&key).is_some_and(|r| r.configured) {
            return;
        }
        let handle = PeerHandle { shared: shared.clone(), owner: None };
        t.by_identity.insert(key, Registered { handle, inbound, configured: true });
    }

    /// Starts a peer task (taking the table's lock).
    pub(crate) fn spawn_peer(self: &Arc<Self>, spec: PeerSpec) -> (PeerHandle, mpsc::Sender<Box<Inbound>>) {
        let mut t = lock(&self.table);
        self.spawn_peer_in(&mut t, spec)
    }

    fn peer_count(&self) -> usize {
        lock(&self.table).all.len()
    }

    /// Hands an inbound connection whose CER passed every check to its
    /// peer, creating a dynamic peer for a new identity.
    fn route_inbound(self: &Arc<Self>, inbound: Box<Inbound>) -> Result<(), (Box<Inbound>, u32)> {
        let key = inbound.info.origin_host.to_ascii_lowercase();
        let tx = {
            let mut t = lock(&self.table);
            let live = t.by_identity.get(&key).filter(|r| !r.inbound.is_closed()).map(|r| r.inbound.clone());
            match live {
                Some(tx) => tx,
                None => {
                    let admitted = match self.authorize {
                        Authorize::Any | Authorize::Custom(_) => true,
                        Authorize::Configured => self.is_allowed(&inbound.info.origin_host),
                    };
                    if !admitted {
                        return Err((inbound, result_codes::DIAMETER_UNKNOWN_PEER));
                    }
                    if t.all.len() >= self.config.max_peers && !evict_one(&mut t) {
                        return Err((inbound, result_codes::DIAMETER_TOO_BUSY));
                    }
                    // Checked and entered under one lock: concurrent CERs of
                    // one new identity share one peer.
                    let spec = PeerSpec {
                        identity: Some(inbound.info.origin_host.clone()),
                        targets: Vec::new(),
                        policy: None,
                        lazy: false,
                        fail_fast_reconnecting: false,
                        learn: false,
                    };
                    let (handle, tx) = self.spawn_peer_in(&mut t, spec);
                    t.by_identity.insert(key, Registered { handle, inbound: tx.clone(), configured: false });
                    tx
                }
            }
        };
        tx.try_send(inbound).map_err(|e| match e {
            mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => {
                (i, result_codes::DIAMETER_TOO_BUSY)
            }
        })
    }

    /// The open peer `identity` names, if any.
    pub(crate) fn open_peer(&self, identity: &str) -> Option<PeerHandle> {
        let t = lock(&self.table);
        let r = if identity.bytes().any(|b| b.is_ascii_uppercase()) {
            t.by_identity.get(&identity.to_ascii_lowercase())
        } else {
            t.by_identity.get(identity)
        };
        r.map(|r| &r.handle).filter(|h| h.state() == diam_proto::psm::PeerState::Open).cloned()
    }

    /// Whether `identity` is on the allow-list.
    fn is_allowed(&self, identity: &str) -> bool {
        self.allow.iter().any(|p| p.matches(identity))
    }

    fn is_configured(&self, identity: &str) -> bool {
        lock(&self.table).by_identity.get(&identity.to_ascii_lowercase()).is_some_and(|r| r.configured)
    }

    /// Every peer gets DPR and stops; listeners stop.
    fn close_all(&self) {
        self.agent.clear();
        self.closed.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
        let peers: Vec<PeerHandle> = lock(&self.table).all.values().cloned().collect();
        for p in peers {
            let (done, _rx) = tokio::sync::oneshot::channel();
            let close = crate::handle::Command::Close { cause: disconnect_cause::REBOOTING, done };
            if let Err(mpsc::error::TrySendError::Full(close)) = p.shared.control.try_send(close) {
                // The control queue is full of hints (connect, probe): wait
                // for room rather than lose the close.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let control = p.shared.control.clone();
                    rt.spawn(async move {
                        let _ = control.send(close).await;
                    });
                }
            }
        }
    }
}

/// Makes room for one more peer by forgetting a dynamic one that is
/// disconnected. Whether it found one.
fn evict_one(t: &mut Table) -> bool {
    use diam_proto::psm::PeerState;
    let victim = t
        .by_identity
        .iter()
        .find(|(_, r)| !r.configured && r.handle.state() == PeerState::Disconnected)
        .map(|(k, _)| k.clone());
    match victim {
        Some(k) => {
            if let Some(r) = t.by_identity.remove(&k) {
                t.all.remove(&r.handle.shared.id);
            }
            true
        }
        None => false,
    }
}

/// Keeps the node's peers alive while a `Node` handle exists; the last one
/// dropped stops them (DPR, no reconnect) and the listeners.
struct Owner {
    shared: Arc<NodeShared>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Owner")
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.close_all();
    }
}

/// A Diameter node (RFC 6733): one identity, its listeners, and one peer
/// table keyed by DiameterIdentity shared by both directions.
///
/// * **Configured peers** ([`add_peer`](Self::add_peer)) are kept connected:
///   dialled at once, reconnected with the schedule of
///   [`NodeConfig::reconnect`]. If the peer connects to us meanwhile, the
///   election of RFC 6733 §5.6.4 keeps one connection.
/// * **Inbound peers**: a CER on a listener is checked (identity syntax, not
///   our own identity, the RFC 6733 §7 AVP checks), then authorized
///   (configured peers by default; [`NodeBuilder::accept_any`] or
///   [`NodeBuilder::authorize`] admit others). An unknown peer gets 3010
///   DIAMETER_UNKNOWN_PEER.
/// * **Peer handles** ([`peer`](Self::peer)) send requests on whichever
///   connection is open, so a server sends RAR/ASR to a client that
///   connected to it.
/// * **Handlers** answer inbound requests by Application-Id
///   ([`NodeBuilder::handler`]); requests of applications not in common get
///   3007, commands no handler serves get 3001.
/// * **Events** (diam-link's, plus the typed [`crate::events`]) go to a
///   dispatcher whose listeners run on a bounded executor, never on a
///   peer's task.
///
/// ```no_run
/// # async fn run() -> Result<(), diam_client::Error> {
/// use diam_client::{handler_fn, Node, NodeConfig};
/// use diam_proto::{apps, avps, Message};
/// let mut config = NodeConfig::new("ocs.example.net", "example.net");
/// config.connection.peer.auth_application_ids = vec![apps::CREDIT_CONTROL];
/// let node = Node::builder(config)
///     .handler(apps::CREDIT_CONTROL, handler_fn(|req: Message| async move {
///         Message::answer_to(&req).avp(avps::RESULT_CODE, 2001u32).build()
///     }))
///     .accept_any()
///     .build()?;
/// let addr = node.listen_tcp("127.0.0.1:3868".parse().unwrap()).await?;
/// // Keep a connection to the PCRF up (election if it connects to us too).
/// let pcrf = node.add_peer("pcrf.example.net", ["aaa://127.0.0.1:3870".parse().unwrap()])?;
/// # let _ = (addr, pcrf); Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("origin_host", &self.shared().peer_config.origin_host)
            .field("peers", &self.shared().peer_count())
            .finish()
    }
}

/// Configures a [`Node`]; see [`Node::builder`].
#[must_use]
pub struct NodeBuilder {
    config: NodeConfig,
    handlers: HashMap<u32, Arc<dyn Handler>>,
    default_handler: Option<Arc<dyn Handler>>,
    connector: Option<Arc<dyn Connector>>,
    authorize: Authorize,
    events: Option<EventDispatcher>,
    tls: Option<TlsConfig>,
    allow: Vec<String>,
    grid: Option<TimerGrid>,
}

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder").field("config", &self.config).finish_non_exhaustive()
    }
}

impl NodeBuilder {
    /// Answers requests of `application_id` with `handler`.
    pub fn handler(mut self, application_id: u32, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(application_id, handler);
        self
    }

    /// Answers requests of every application without a handler of its own.
    pub fn default_handler(mut self, handler: Arc<dyn Handler>) -> Self {
        self.default_handler = Some(handler);
        self
    }

    /// Opens outbound connections with `connector` (default: TCP with the
    /// configured connect timeout).
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// TLS credentials: for TLS listeners ([`Node::listen_tls`]), `aaas://`
    /// peers, and in-band TLS ([`diam_proto::peer::PeerConfig::inband_tls`]).
    /// Mutual authentication: peers must present a certificate from the CA
    /// that names their DiameterIdentity.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Admits peers whose Origin-Host is `pattern` (an exact identity,
    /// compared case-insensitively) or, for `*.domain`, any identity under
    /// `domain`, besides the configured peers. Others get 3010
    /// DIAMETER_UNKNOWN_PEER. Checked at [`build`](Self::build).
    pub fn allow(mut self, pattern: impl Into<String>) -> Self {
        self.allow.push(pattern.into());
        self
    }

    /// Accepts any peer whose CER passes the checks.
    pub fn accept_any(mut self) -> Self {
        self.authorize = Authorize::Any;
        self
    }

    /// Accepts configured peers, and those `f` admits.
    pub fn authorize(mut self, f: impl Fn(&PeerInfo, Option<SocketAddr>) -> bool + Send + Sync + 'static) -> Self {
        self.authorize = Authorize::Custom(Arc::new(f));
        self
    }

    /// Emits events on `events` instead of a fresh dispatcher (whose
    /// listeners run on one worker thread with a queue of 4096 events).
    pub fn events(mut self, events: EventDispatcher) -> Self {
        self.events = Some(events);
        self
    }

    /// Keeps the peers' deadlines on the coalescing grid (their watchdogs)
    /// in `grid` instead of a grid of the node's own: nodes whose peers run
    /// on one runtime can share one task and one timer (see [`TimerGrid`]).
    pub fn timer_grid(mut self, grid: TimerGrid) -> Self {
        self.grid = Some(grid);
        self
    }

    /// Validates the configuration and builds the node. Must be called
    /// inside a tokio runtime.
    pub fn build(self) -> Result<Node, Error> {
        self.config.validate()?;
        let c = &self.config.connection;
        if c.peer.inband_tls && self.tls.is_none() {
            return Err(Error::InvalidConfig("in-band TLS needs TLS credentials (NodeBuilder::tls)".into()));
        }
        let allow = self.allow.iter().map(|p| AllowPattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let tls = self.tls.map(TlsHandle::new);
        let tcp = TcpConnector::new(c.connect_timeout, c.nodelay);
        let connector = self.connector.unwrap_or_else(|| match &tls {
            Some(t) => Arc::new(TlsConnector::new(tcp, t.clone(), c.peer.cer_timeout)) as Arc<dyn Connector>,
            None => Arc::new(tcp) as Arc<dyn Connector>,
        });
        let events = match self.events {
            Some(e) => e,
            None => EventDispatcher::builder()
                .executor(ExecutorConfig::new(1, 4096))
                .build()
                .map_err(|e| Error::InvalidConfig(e.to_string()))?,
        };
        let limits =
            Arc::new(ConnectionLimits::new(self.config.max_connections, self.config.max_connections_per_source));
        let budget = Arc::new(BufferBudget::new(self.config.max_buffered_bytes));
        let agent = Arc::new(crate::agent::Agent::new(self.config.max_forwards, self.config.max_forward_bytes));
        let shared = Arc::new(NodeShared {
            peer_config: Arc::new(c.peer.clone()),
            handshakes: Arc::new(Semaphore::new(self.config.max_pending_handshakes)),
            config: self.config,
            connector,
            handlers: self.handlers,
            default_handler: self.default_handler,
            authorize: self.authorize,
            events,
            table: Mutex::new(Table::default()),
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            tls,
            allow,
            limits,
            budget,
            agent,
            grid: self.grid.unwrap_or_default(),
        });
        Ok(Node { owner: Arc::new(Owner { shared }) })
    }
}

impl Node {
    /// Starts configuring a node with `config`.
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            handlers: HashMap::new(),
            default_handler: None,
            connector: None,
            authorize: Authorize::Configured,
            events: None,
            tls: None,
            allow: Vec::new(),
            grid: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<NodeShared> {
        &self.owner.shared
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.shared().config
    }

    /// Our Origin-Host.
    pub fn origin_host(&self) -> &str {
        &self.shared().peer_config.origin_host
    }

    /// The lifecycle event dispatcher (see [`crate::events`]).
    pub fn events(&self) -> &EventDispatcher {
        &self.shared().events
    }

    /// Calls `callback` for every connection failure and failed connection
    /// attempt (see [`PeerFailure`]), on the event dispatcher's executor.
    /// Returns the subscription; dropping it unsubscribes.
    pub fn on_failure(
        &self,
        callback: impl Fn(&PeerFailure) + Send + Sync + 'static,
    ) -> diam_link::events::Subscription {
        self.events().subscribe(EventKind::Custom, move |ev: &Event| {
            if let EventData::Custom(c) = ev.data() {
                if let Some(f) = c.downcast_ref::<PeerFailure>() {
                    callback(f);
                }
            }
        })
    }

    /// Accepts peers on `acceptor` until the node shuts down. Returns the
    /// address it listens on.
    pub fn listen(&self, acceptor: impl Acceptor) -> Result<SocketAddr, Error> {
        let addr = acceptor.local_addr().map_err(|source| Error::Listen { addr: unspecified(), source })?;
        tokio::spawn(accept_loop(self.shared().clone(), acceptor, addr));
        Ok(addr)
    }

    /// Binds a TCP listener on `addr` (port 0 picks one) and accepts peers
    /// on it.
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let acceptor = TcpAcceptor::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
        self.listen(acceptor)
    }

    /// Binds a TLS-first listener on `addr` (RFC 6733 §13; the IANA port
    /// for Diameter over TLS/TCP is 5658, RFC 6733 §11.4). Needs
    /// [`NodeBuilder::tls`].
    pub async fn listen_tls(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let Some(tls) = self.shared().tls.clone() else {
            return Err(Error::InvalidConfig("a TLS listener needs TLS credentials (NodeBuilder::tls)".into()));
        };
        let tcp = TcpAcceptor::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
        self.listen(TlsAcceptor::new(tcp, tls))
    }

    /// Replaces the TLS credentials (a renewed certificate, a new CA) for
    /// every connection made from now on; established ones keep theirs.
    pub fn reload_tls(&self, tls: TlsConfig) -> Result<(), Error> {
        match &self.shared().tls {
            Some(h) => {
                h.reload(tls);
                Ok(())
            }
            None => Err(Error::InvalidConfig("the node was built without TLS credentials".into())),
        }
    }

    /// Inbound connections open now (counted against
    /// [`NodeConfig::max_connections`]).
    pub fn inbound_connections(&self) -> usize {
        self.shared().limits.open()
    }

    /// Bytes all connections hold now for unfinished messages (against
    /// [`NodeConfig::max_buffered_bytes`]).
    pub fn buffered_bytes(&self) -> usize {
        self.shared().budget.used()
    }

    /// Adds a configured peer, kept connected at `addresses` (tried in turn)
    /// with the node's reconnect schedule. Its connections are accepted
    /// inbound too (election applies when both sides connect). With no
    /// address, the peer is never dialled: it is admitted (and its handle
    /// works) once it connects to us, as a client or a server behind a
    /// firewall does.
    ///
    /// Fails for an invalid identity, more than 16 addresses, a peer
    /// already configured, or a full table.
    pub fn add_peer(&self, identity: &str, addresses: impl IntoIterator<Item = PeerAddr>) -> Result<PeerHandle, Error> {
        let shared = self.shared();
        if shared.is_closed() {
            return Err(Error::PoolClosed);
        }
        if !is_identity(identity) {
            return Err(Error::InvalidConfig(format!("{} is not a valid DiameterIdentity", Escaped(identity))));
        }
        if identity.eq_ignore_ascii_case(&shared.peer_config.origin_host) {
            return Err(Error::InvalidConfig("a node cannot be its own peer".into()));
        }
        let targets: Vec<PeerAddr> = addresses.into_iter().collect();
        if targets.len() > 16 {
            return Err(Error::InvalidConfig(format!("peer {identity} has more than 16 addresses")));
        }
        let key = identity.to_ascii_lowercase();
        let handle = {
            let mut t = lock(&shared.table);
            if t.by_identity.get(&key).is_some_and(|r| r.configured) {
                return Err(Error::InvalidConfig(format!("peer {identity} is already configured")));
            }
            if t.all.len() >= shared.config.max_peers {
                return Err(Error::PoolFull(shared.config.max_peers));
            }
            let spec = PeerSpec {
                identity: Some(identity.to_string()),
                targets,
                policy: shared.config.reconnect.policy(seed()),
                lazy: false,
                fail_fast_reconnecting: false,
                learn: false,
            };
            let (handle, tx) = shared.spawn_peer_in(&mut t, spec);
            // A dynamic entry for the same identity keeps its connection until
            // it ends (its task then stops: nothing routes to it any more);
            // new inbound connections go to the configured peer.
            t.by_identity.insert(key, Registered { handle: handle.clone(), inbound: tx, configured: true });
            handle
        };
        handle.connect();
        Ok(self.owned(handle))
    }

    /// A handle that keeps the node alive.
    fn owned(&self, mut handle: PeerHandle) -> PeerHandle {
        handle.owner = Some(self.owner.clone() as Arc<dyn std::any::Any + Send + Sync>);
        handle
    }

    /// Adds a configured peer known only by its address: kept connected like
    /// [`add_peer`](Self::add_peer), and entered in the identity table under
    /// the identity its first capabilities exchange reveals. Until then an
    /// inbound connection from it cannot be matched to it, so prefer
    /// [`add_peer`](Self::add_peer) where both sides connect (election).
    pub fn add_address_peer(&self, addr: PeerAddr) -> Result<PeerHandle, Error> {
        let shared = self.shared();
        if shared.is_closed() {
            return Err(Error::PoolClosed);
        }
        if shared.peer_count() >= shared.config.max_peers {
            return Err(Error::PoolFull(shared.config.max_peers));
        }
        let spec = PeerSpec {
            identity: None,
            targets: vec![addr],
            policy: shared.config.reconnect.policy(seed()),
            lazy: false,
            fail_fast_reconnecting: false,
            learn: true,
        };
        let (handle, _tx) = shared.spawn_peer(spec);
        handle.connect();
        Ok(self.owned(handle))
    }

    /// The peer with this identity (configured, or connected to us), if any.
    pub fn peer(&self, identity: &str) -> Option<PeerHandle> {
        let found =
            lock(&self.shared().table).by_identity.get(&identity.to_ascii_lowercase()).map(|r| r.handle.clone());
        found.map(|h| self.owned(h))
    }

    /// Every peer reachable by identity.
    pub fn peers(&self) -> Vec<PeerHandle> {
        let all: Vec<PeerHandle> = lock(&self.shared().table).by_identity.values().map(|r| r.handle.clone()).collect();
        all.into_iter().map(|h| self.owned(h)).collect()
    }

    /// Connects once to `addr` (no reconnection) and waits until the
    /// capabilities exchange is done: a one-off peer, e.g. for a probe.
    pub async fn connect(&self, addr: PeerAddr) -> Result<PeerHandle, Error> {
        self.connect_inner(None, addr).await
    }

    /// [`connect`](Self::connect) to a peer whose DiameterIdentity is
    /// known: its CEA must carry it, and over TLS its certificate must name
    /// it (checked before the CER).
    pub async fn connect_to(&self, identity: &str, addr: PeerAddr) -> Result<PeerHandle, Error> {
        if !is_identity(identity) {
            return Err(Error::InvalidConfig(format!("{:?} is not a DiameterIdentity", Escaped(identity))));
        }
        self.connect_inner(Some(identity.to_string()), addr).await
    }

    async fn connect_inner(&self, identity: Option<String>, addr: PeerAddr) -> Result<PeerHandle, Error> {
        let shared = self.shared();
        if shared.is_closed() {
            return Err(Error::PoolClosed);
        }
        let mut never = shared.config.reconnect.clone();
        never.enabled = false;
        let spec = PeerSpec {
            identity,
            targets: vec![addr],
            policy: never.policy(0),
            lazy: false,
            fail_fast_reconnecting: false,
            learn: false,
        };
        let (handle, _tx) = shared.spawn_peer(spec);
        handle.connect();
        let c = &shared.config.connection;
        let handle = self.owned(handle);
        if let Err(e) = handle.wait_open(c.connect_timeout + c.peer.cer_timeout + Duration::from_secs(1)).await {
            handle.close(disconnect_cause::REBOOTING).await;
            return Err(e);
        }
        Ok(handle)
    }

    /// Starts a peer known by its address only (the address client's).
    pub(crate) fn spawn_address_peer(
        &self,
        addr: PeerAddr,
        policy: Option<Box<dyn ReconnectPolicy>>,
        fail_fast_reconnecting: bool,
    ) -> PeerHandle {
        let spec =
            PeerSpec { identity: None, targets: vec![addr], policy, lazy: true, fail_fast_reconnecting, learn: false };
        let handle = self.shared().spawn_peer(spec).0;
        self.owned(handle)
    }

    /// Whether [`shutdown`](Self::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        self.shared().is_closed()
    }

    /// Shuts down gracefully: listeners stop, and every peer drains its
    /// outstanding answers and gets DPR (REBOOTING), all within `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        let shared = self.shared();
        let peers: Vec<PeerHandle> = lock(&shared.table).all.values().cloned().collect();
        shared.closed.store(true, Ordering::Release);
        shared.shutdown.send_replace(true);
        let mut closing = tokio::task::JoinSet::new();
        for p in peers {
            closing.spawn(async move { p.close(disconnect_cause::REBOOTING).await });
        }
        let _ = tokio::time::timeout(deadline, async { while closing.join_next().await.is_some() {} }).await;
        shared.agent.clear();
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

/// Counts and reports an inbound connection refused before it reached a
/// peer (`reason` is a metric label).
fn refused(
    node: &NodeShared,
    remote: Option<SocketAddr>,
    origin_host: Option<&str>,
    reason: &'static str,
    result_code: Option<u32>,
) {
    metrics::counter!("diam_inbound_refused_total", "reason" => reason).increment(1);
    let data = EventData::Custom(CustomEvent::new(
        "inbound_refused",
        crate::events::InboundRefused { remote, origin_host: origin_host.map(str::to_string), reason, result_code },
    ));
    node.emit(ConnectionId::unique(), None, data);
}

async fn accept_loop(node: Arc<NodeShared>, mut acceptor: impl Acceptor, addr: SocketAddr) {
    let mut shutdown = node.shutdown.subscribe();
    let mut failures = 0u32;
    let mut last_log: Option<tokio::time::Instant> = None;
    let mut suppressed = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = acceptor.accept() => a,
        };
        match accepted {
            Ok(conn) => {
                failures = 0;
                let slot = match node.limits.admit(conn.remote.map(|a| a.ip())) {
                    Ok(slot) => slot,
                    Err(why) => {
                        // Closed at once (dropping it): no CER is read.
                        tracing::debug!(%addr, remote = ?conn.remote, limit = why.as_str(), "inbound connection over the limit: closed");
                        refused(&node, conn.remote, None, why.as_str(), None);
                        continue;
                    }
                };
                let Ok(permit) = node.handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%addr, remote = ?conn.remote, "too many pending handshakes: connection closed");
                    refused(&node, conn.remote, None, "max_pending_handshakes", None);
                    continue;
                };
                let conn = Connection { stream: Box::new(Guarded::new(conn.stream, slot)), ..conn };
                let remote = conn.remote;
                let establishing = acceptor.establish(conn);
                let node = node.clone();
                tokio::spawn(async move {
                    handshake(node, remote, establishing).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off (10 ms
                // doubling to 160 ms, so descriptors freed are used again
                // within a fraction of a second) and log at most once a
                // second.
                failures = failures.saturating_add(1);
                let now = tokio::time::Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                    tracing::warn!(%addr, error = %e, suppressed, "accept failed; backing off");
                    last_log = Some(now);
                    suppressed = 0;
                } else {
                    suppressed += 1;
                }
                metrics::counter!("diam_accept_errors_total").increment(1);
                let pause = Duration::from_millis(10 << failures.min(5).saturating_sub(1));
                tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// Largest CER read from a connection not yet admitted: a capabilities
/// exchange is a few hundred bytes; 64 KiB leaves room for thousands of
/// applications and bounds what a pending handshake can hold.
const MAX_CER_SIZE: usize = 64 * 1024;

/// A CEA refusing `cer` with `result_code`, with a Failed-AVP when one is
/// at fault (RFC 6733 §7.5).
fn refusal(
    node: &NodeShared,
    conn: &Connection,
    cer: &Message,
    result_code: u32,
    failed: Option<(u32, &[u8])>,
) -> Message {
    let local = conn.local.map(|a| a.ip());
    let head = Message::answer_to(cer).error(result_codes::class(result_code) == 3).avp(avps::RESULT_CODE, result_code);
    let mut b = diam_proto::psm::capabilities(&node.peer_config, head, local);
    if let Some((code, data)) = failed {
        let data = &data[..data.len().min(diam_proto::check::MAX_FAILED_AVP_DATA)];
        b = b.group(avps::FAILED_AVP, |g| {
            g.raw_avp(code, diam_proto::avp::AvpFlags::from_bits(diam_proto::avp::AvpFlags::MANDATORY), None, data);
        });
    }
    b.build()
}

/// Refuses an inbound connection with a CEA.
fn refuse(
    node: &NodeShared,
    conn: Connection,
    cer: &Message,
    result_code: u32,
    why: &'static str,
    failed: Option<(u32, &[u8])>,
) {
    let host = cer.get(avps::ORIGIN_HOST).ok().flatten();
    tracing::debug!(remote = ?conn.remote, origin_host = %Escaped(host.unwrap_or("")), result_code, why, "inbound CER refused");
    refused(node, conn.remote, host, why, Some(result_code));
    let cea = refusal(node, &conn, cer, result_code, failed);
    close_stream(conn.stream, BytesMut::from(cea.as_bytes()), node.config.connection.write_timeout);
}

/// Checks that `cer` has exactly one `key` AVP holding a DiameterIdentity:
/// 5005 DIAMETER_MISSING_AVP without one (Failed-AVP: an empty one),
/// 5009 DIAMETER_AVP_OCCURS_TOO_MANY_TIMES for a second (Failed-AVP: the
/// second), 5004 DIAMETER_INVALID_AVP_VALUE for anything but an FQDN of at
/// most 255 octets (Failed-AVP: the value).
fn check_identity_avp(cer: &Message, code: u32) -> Result<(), (u32, &'static str, Vec<u8>)> {
    let mut found = cer.avps().filter_map(Result::ok).filter(|a| a.code() == code && a.vendor_id().is_none());
    let Some(first) = found.next() else {
        return Err((result_codes::DIAMETER_MISSING_AVP, "missing", Vec::new()));
    };
    if let Some(second) = found.next() {
        return Err((result_codes::DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, "duplicated", second.data().to_vec()));
    }
    match std::str::from_utf8(first.data()) {
        Ok(v) if is_identity(v) => Ok(()),
        _ => Err((result_codes::DIAMETER_INVALID_AVP_VALUE, "not a DiameterIdentity", first.data().to_vec())),
    }
}

/// Establishes an inbound connection (TLS handshake, if any), reads and
/// checks its CER, then hands it to its peer. All of it within the CER
/// timeout.
async fn handshake(
    node: Arc<NodeShared>,
    remote: Option<SocketAddr>,
    establishing: BoxFuture<'static, std::io::Result<Connection>>,
) {
    let c = &node.config.connection;
    let max_cer = c.max_message_size.min(MAX_CER_SIZE);
    let first = tokio::time::timeout(c.peer.cer_timeout, async {
        let mut conn = match establishing.await {
            Ok(conn) => conn,
            Err(e) => return Err(("tls", e.to_string())),
        };
        let mut rbuf = BytesMut::with_capacity(4096);
        match read_first(&mut conn.stream, &mut rbuf, max_cer).await {
            Ok(cer) => Ok((conn, rbuf, cer)),
            Err(why) => Err(("no_cer", why)),
        }
    })
    .await;
    let (conn, rbuf, cer) = match first {
        Ok(Ok(x)) => x,
        Ok(Err((reason, why))) => {
            tracing::debug!(?remote, why = %Escaped(&why), "inbound connection closed before its CER");
            refused(&node, remote, None, reason, None);
            return;
        }
        Err(_) => {
            tracing::debug!(?remote, "no CER within the CER timeout: closed");
            refused(&node, remote, None, "cer_timeout", None);
            return;
        }
    };
    if !(cer.is_request() && cer.application_id() == 0 && cer.command_code() == commands::CAPABILITIES_EXCHANGE) {
        tracing::debug!(?remote, command = cer.command_code(), "first message is not a CER: closed");
        refused(&node, remote, None, "not_cer", None);
        return;
    }
    for code in [avps::ORIGIN_HOST.code(), avps::ORIGIN_REALM.code()] {
        if let Err((rc, why, data)) = check_identity_avp(&cer, code) {
            let why = match (code == avps::ORIGIN_HOST.code(), why) {
                (true, "missing") => "origin_host_missing",
                (true, "duplicated") => "origin_host_duplicated",
                (true, _) => "origin_host_invalid",
                (false, "missing") => "origin_realm_missing",
                (false, "duplicated") => "origin_realm_duplicated",
                (false, _) => "origin_realm_invalid",
            };
            return refuse(&node, conn, &cer, rc, why, Some((code, &data)));
        }
    }
    if let Err(r) = check_request(&cer, node.dictionary(), MandatoryAvps::Enforce) {
        tracing::debug!(?remote, rejection = %r, "CER refused (RFC 6733 §7)");
        refused(&node, remote, cer.get(avps::ORIGIN_HOST).ok().flatten(), "bad_cer", Some(r.result_code()));
        let ans = r.answer(&cer, &node.peer_config.origin_host, &node.peer_config.origin_realm);
        close_stream(conn.stream, BytesMut::from(ans.as_bytes()), c.write_timeout);
        return;
    }
    let info = match PeerInfo::from_message(&cer) {
        Ok(i) => i,
        Err(_) => return refuse(&node, conn, &cer, result_codes::DIAMETER_INVALID_AVP_VALUE, "bad_cer", None),
    };
    if info.origin_host.eq_ignore_ascii_case(&node.peer_config.origin_host) {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_UNKNOWN_PEER, "own_identity", None);
    }
    if let Some(tls) = &conn.tls {
        if !tls.names_identity(&info.origin_host) {
            tracing::info!(?remote, origin_host = %Escaped(&info.origin_host), names = ?tls.peer_dns_names(), "certificate does not name the CER's Origin-Host: closed");
            refused(&node, remote, Some(&info.origin_host), "certificate_mismatch", None);
            return;
        }
    }
    let allowed = match &node.authorize {
        Authorize::Any => true,
        Authorize::Configured => node.is_configured(&info.origin_host) || node.is_allowed(&info.origin_host),
        Authorize::Custom(f) => {
            node.is_configured(&info.origin_host) || node.is_allowed(&info.origin_host) || f(&info, conn.remote)
        }
    };
    if !allowed {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_UNKNOWN_PEER, "unknown_peer", None);
    }
    if let Err(rc) = diam_proto::psm::inband_choice(&node.peer_config, &cer, conn.tls.is_some()) {
        return refuse(&node, conn, &cer, rc, "no_common_security", None);
    }
    if node.is_closed() {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, "shutting_down", None);
    }
    if let Err((inb, rc)) = node.route_inbound(Box::new(Inbound { conn, rbuf, cer, info })) {
        let Inbound { conn, cer, .. } = *inb;
        let why = if rc == result_codes::DIAMETER_UNKNOWN_PEER { "unknown_peer" } else { "busy" };
        refuse(&node, conn, &cer, rc, why, None)
    }
}

/// The default request timeout of the node's peers.
impl Node {
    /// The configured request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.shared().config.connection.request_timeout
    }
}
