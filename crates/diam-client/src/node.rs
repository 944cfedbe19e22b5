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
use crate::transport::{Acceptor, Connection, Connector, TcpAcceptor, TcpConnector};
use crate::{Error, Handler, NodeConfig};

/// Decides whether a peer that is not configured may connect: it gets the
/// CER's capabilities and the remote socket address.
pub type Authorizer = Arc<dyn Fn(&PeerInfo, Option<SocketAddr>) -> bool + Send + Sync>;

enum Authorize {
    /// Only configured peers (the default).
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
                    if !matches!(self.authorize, Authorize::Any | Authorize::Custom(_)) {
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

    fn is_configured(&self, identity: &str) -> bool {
        lock(&self.table).by_identity.get(&identity.to_ascii_lowercase()).is_some_and(|r| r.configured)
    }

    /// Every peer gets DPR and stops; listeners stop.
    fn close_all(&self) {
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

    /// Validates the configuration and builds the node. Must be called
    /// inside a tokio runtime.
    pub fn build(self) -> Result<Node, Error> {
        self.config.validate()?;
        let c = &self.config.connection;
        let connector = self
            .connector
            .unwrap_or_else(|| Arc::new(TcpConnector::new(c.connect_timeout, c.nodelay)) as Arc<dyn Connector>);
        let events = match self.events {
            Some(e) => e,
            None => EventDispatcher::builder()
                .executor(ExecutorConfig::new(1, 4096))
                .build()
                .map_err(|e| Error::InvalidConfig(e.to_string()))?,
        };
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

    /// Adds a configured peer, kept connected at `addresses` (tried in turn)
    /// with the node's reconnect schedule. Its connections are accepted
    /// inbound too (election applies when both sides connect).
    ///
    /// Fails for an invalid identity, no address, a peer already configured,
    /// or a full table.
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
        if targets.is_empty() || targets.len() > 16 {
            return Err(Error::InvalidConfig(format!("peer {identity} needs 1 to 16 addresses")));
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
        let shared = self.shared();
        if shared.is_closed() {
            return Err(Error::PoolClosed);
        }
        let mut never = shared.config.reconnect.clone();
        never.enabled = false;
        let spec = PeerSpec {
            identity: None,
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
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
}

async fn accept_loop(node: Arc<NodeShared>, mut acceptor: impl Acceptor, addr: SocketAddr) {
    let mut shutdown = node.shutdown.subscribe();
    let mut failures = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = acceptor.accept() => a,
        };
        match accepted {
            Ok(conn) => {
                failures = 0;
                let Ok(permit) = node.handshakes.clone().try_acquire_owned() else {
                    // Too many connections waiting for their CER: refuse this one.
                    tracing::debug!(%addr, remote = ?conn.remote, "too many pending handshakes: connection closed");
                    continue;
                };
                let node = node.clone();
                tokio::spawn(async move {
                    handshake(node, conn).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: pause rather than
                // spin, and log once per burst.
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%addr, error = %e, failures, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Refuses an inbound connection with a CEA.
fn refuse(node: &NodeShared, conn: Connection, cer: &Message, result_code: u32, why: &str) {
    tracing::debug!(remote = ?conn.remote, result_code, why = %Escaped(why), "inbound CER refused");
    let local = conn.local.map(|a| a.ip());
    let cea = diam_proto::psm::cea(&node.peer_config, cer, result_code, local);
    close_stream(conn.stream, BytesMut::from(cea.as_bytes()), node.config.connection.write_timeout);
}

/// Reads and checks an inbound connection's CER, then hands the connection
/// to its peer.
async fn handshake(node: Arc<NodeShared>, mut conn: Connection) {
    let c = &node.config.connection;
    let mut rbuf = BytesMut::with_capacity(4096);
    let first =
        tokio::time::timeout(c.peer.cer_timeout, read_first(&mut conn.stream, &mut rbuf, c.max_message_size)).await;
    let cer = match first {
        Ok(Ok(m)) => m,
        Ok(Err(why)) => {
            tracing::debug!(remote = ?conn.remote, why = %Escaped(&why), "inbound connection closed before its CER");
            return;
        }
        Err(_) => {
            tracing::debug!(remote = ?conn.remote, "no CER within the CER timeout: closed");
            return;
        }
    };
    if !(cer.is_request() && cer.application_id() == 0 && cer.command_code() == commands::CAPABILITIES_EXCHANGE) {
        tracing::debug!(remote = ?conn.remote, command = cer.command_code(), "first message is not a CER: closed");
        return;
    }
    if let Err(r) = check_request(&cer, node.dictionary(), MandatoryAvps::Enforce) {
        tracing::debug!(remote = ?conn.remote, rejection = %r, "CER refused (RFC 6733 §7)");
        let ans = r.answer(&cer, &node.peer_config.origin_host, &node.peer_config.origin_realm);
        close_stream(conn.stream, BytesMut::from(ans.as_bytes()), c.write_timeout);
        return;
    }
    let info = match PeerInfo::from_message(&cer) {
        Ok(i) => i,
        Err(e) => return refuse(&node, conn, &cer, result_codes::DIAMETER_INVALID_AVP_VALUE, &e.to_string()),
    };
    if cer.find(avps::ORIGIN_HOST).is_none() || cer.find(avps::ORIGIN_REALM).is_none() {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_MISSING_AVP, "no Origin-Host or Origin-Realm");
    }
    if !is_identity(&info.origin_host) || !is_identity(&info.origin_realm) {
        return refuse(
            &node,
            conn,
            &cer,
            result_codes::DIAMETER_INVALID_AVP_VALUE,
            "Origin-Host or Origin-Realm is not a DiameterIdentity",
        );
    }
    if info.origin_host.eq_ignore_ascii_case(&node.peer_config.origin_host) {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_UNKNOWN_PEER, "the CER carries our own identity");
    }
    let allowed = match &node.authorize {
        Authorize::Any => true,
        Authorize::Configured => node.is_configured(&info.origin_host),
        Authorize::Custom(f) => node.is_configured(&info.origin_host) || f(&info, conn.remote),
    };
    if !allowed {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_UNKNOWN_PEER, "not an authorized peer");
    }
    if node.is_closed() {
        return refuse(&node, conn, &cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, "shutting down");
    }
    if let Err((inb, rc)) = node.route_inbound(Box::new(Inbound { conn, rbuf, cer, info })) {
        let Inbound { conn, cer, .. } = *inb;
        refuse(&node, conn, &cer, rc, "the peer cannot take the connection")
    }
}

/// The default request timeout of the node's peers.
impl Node {
    /// The configured request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.shared().config.connection.request_timeout
    }
}
