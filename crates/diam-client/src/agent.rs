//! Agents (RFC 6733 §2.8): the realm routing table, relay, proxy and
//! redirect routes, and the node's routed [`Node::send`] that follows
//! redirects.
//!
//! A node with a [`RoutingTable`] is an agent: each inbound application
//! request is either served locally (by the node's handlers) or forwarded,
//! on the peer task that read it, without a task per request (see the
//! driver). Matching itself is sans-IO, in [`diam_proto::routing`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diam_proto::peer::PeerInfo;
use diam_proto::routing::{redirect_of, AppMatch, RealmTable, RedirectUsage};
use diam_proto::uri::PeerAddr;
use diam_proto::{avps, Message};
use tokio::time::Instant;

use crate::handle::lock;
use crate::{Error, Node, PeerGroup, PeerHandle};

/// What a proxy route does to the requests it forwards and their answers
/// (policy enforcement: add, replace or remove AVPs). It runs on the peer
/// task, so it must be quick and must not block.
///
/// ```
/// use diam_client::ProxyHook;
/// use diam_proto::{avps, peer::PeerInfo, Message};
/// /// Stamps every forwarded request with our Origin-State-Id policy tag,
/// /// and refuses requests without a Session-Id.
/// struct Stamp;
/// impl ProxyHook for Stamp {
///     fn on_request(&self, request: Message, _from: &PeerInfo) -> Result<Message, u32> {
///         if request.find(avps::SESSION_ID).is_none() {
///             return Err(5005); // DIAMETER_MISSING_AVP
///         }
///         Ok(request.edit(|a| a.code() != avps::USER_NAME.code()).avp(avps::USER_NAME, "masked").build())
///     }
/// }
/// ```
pub trait ProxyHook: Send + Sync + 'static {
    /// Inspects, and may rewrite, a request before it is forwarded. `Err`
    /// answers it locally with that Result-Code instead (the request is not
    /// forwarded). The End-to-End identifier is kept whatever the hook
    /// returns.
    fn on_request(&self, request: Message, from: &PeerInfo) -> Result<Message, u32>;

    /// Inspects, and may rewrite, the answer before it goes back
    /// (`request` is what was forwarded). The Hop-by-Hop identifier is
    /// restored whatever the hook returns. Default: unchanged.
    fn on_answer(&self, answer: Message, request: &Message) -> Message {
        let _ = request;
        answer
    }
}

/// Where a redirect route sends clients (RFC 6733 §6.1.7).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedirectTo {
    /// Redirect-Host DiameterURIs (`aaa://host:port`), in order.
    pub hosts: Vec<String>,
    /// Redirect-Host-Usage: what clients may cache the redirect for.
    pub usage: RedirectUsage,
    /// Redirect-Max-Cache-Time.
    pub max_cache_time: Duration,
}

impl RedirectTo {
    /// A redirect to `hosts` (each a DiameterURI or `host:port`), cached for
    /// requests of the same realm and application for `max_cache_time`.
    pub fn new<I, S>(hosts: I, max_cache_time: Duration) -> Result<RedirectTo, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for h in hosts {
            let h = h.as_ref();
            let addr: PeerAddr = h.parse().map_err(|e| Error::InvalidConfig(format!("redirect host {h:?}: {e}")))?;
            out.push(addr.to_string());
        }
        if out.is_empty() {
            return Err(Error::InvalidConfig("a redirect route needs at least one host".into()));
        }
        Ok(RedirectTo { hosts: out, usage: RedirectUsage::RealmAndApplication, max_cache_time })
    }

    /// Sets Redirect-Host-Usage.
    #[must_use]
    pub fn usage(mut self, usage: RedirectUsage) -> Self {
        self.usage = usage;
        self
    }
}

/// What a route does with the requests it matches (RFC 6733 §2.7:
/// Local-Action).
#[derive(Clone)]
#[non_exhaustive]
pub enum Action {
    /// Served here, by the node's handlers.
    Local,
    /// Forwarded to a peer of the group; nothing is changed but the
    /// Hop-by-Hop identifier and an appended Route-Record.
    Relay(PeerGroup),
    /// Forwarded like a relay, through the hook, which may change the
    /// request and its answer.
    Proxy(PeerGroup, Arc<dyn ProxyHook>),
    /// Answered with 3006 DIAMETER_REDIRECT_INDICATION.
    Redirect(RedirectTo),
}

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Local => f.write_str("Local"),
            Action::Relay(g) => f.debug_tuple("Relay").field(g).finish(),
            Action::Proxy(g, _) => f.debug_tuple("Proxy").field(g).finish_non_exhaustive(),
            Action::Redirect(r) => f.debug_tuple("Redirect").field(r).finish(),
        }
    }
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Local => "local",
            Action::Relay(_) => "relay",
            Action::Proxy(..) => "proxy",
            Action::Redirect(_) => "redirect",
        }
    }

    pub(crate) fn group(&self) -> Option<&PeerGroup> {
        match self {
            Action::Relay(g) | Action::Proxy(g, _) => Some(g),
            _ => None,
        }
    }

    pub(crate) fn hook(&self) -> Option<&Arc<dyn ProxyHook>> {
        match self {
            Action::Proxy(_, h) => Some(h),
            _ => None,
        }
    }
}

/// One route's metric handles (taken once, when the table is built).
pub(crate) struct RouteMetrics {
    pub(crate) forwarded: metrics::Counter,
    pub(crate) answered: metrics::Counter,
    pub(crate) retransmitted: metrics::Counter,
    pub(crate) latency: metrics::Histogram,
    /// Per group member, in the group's order.
    pub(crate) members: Vec<MemberMetrics>,
}

/// One route member's metric handles.
pub(crate) struct MemberMetrics {
    pub(crate) forwarded: metrics::Counter,
    pub(crate) answered: metrics::Counter,
    pub(crate) retransmitted: metrics::Counter,
    pub(crate) latency: metrics::Histogram,
}

/// One entry of the routing table.
pub(crate) struct Route {
    /// `realm`, `realm:app` or `default`: the `route` label of metrics.
    pub(crate) name: Arc<str>,
    pub(crate) action: Action,
    pub(crate) metrics: RouteMetrics,
}

impl Route {
    fn new(name: String, action: Action) -> Route {
        let name: Arc<str> = name.into();
        let r = name.to_string();
        let members = action
            .group()
            .map(|g| {
                g.members()
                    .iter()
                    .map(|p| {
                        let peer = p.shared.name.to_string();
                        let labels = [("route", r.clone()), ("peer", peer)];
                        MemberMetrics {
                            forwarded: metrics::counter!("diam_relay_peer_forwarded_total", &labels),
                            answered: metrics::counter!("diam_relay_peer_answered_total", &labels),
                            retransmitted: metrics::counter!("diam_relay_peer_retransmitted_total", &labels),
                            latency: metrics::histogram!("diam_relay_peer_latency_seconds", &labels),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metrics = RouteMetrics {
            forwarded: metrics::counter!("diam_relay_forwarded_total", "route" => r.clone()),
            answered: metrics::counter!("diam_relay_answered_total", "route" => r.clone()),
            retransmitted: metrics::counter!("diam_relay_retransmitted_total", "route" => r.clone()),
            latency: metrics::histogram!("diam_relay_latency_seconds", "route" => r),
            members,
        };
        Route { name, action, metrics }
    }

    /// Counts an answer the agent generated itself for this route.
    pub(crate) fn local_answer(&self, result_code: u32) {
        metrics::counter!("diam_relay_local_answers_total", "route" => self.name.to_string(), "result_code" => result_code.to_string())
            .increment(1);
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("name", &self.name).field("action", &self.action.name()).finish()
    }
}

/// The realm routing table of an agent (RFC 6733 §2.7): (Destination-Realm,
/// Application-Id or any) → [`Action`], plus a default route.
///
/// Realms match case-insensitively, exactly or as `*.realm` (any realm
/// under it); the exact realm beats a suffix, a longer suffix a shorter
/// one, and a route for the request's application one for any. A request
/// whose Destination-Host names an open peer of the node goes to that peer
/// first, whatever its realm. Without a matching route or default, requests
/// for our own realm are served locally and others get 3003
/// DIAMETER_REALM_NOT_SERVED.
///
/// Install, and replace at run time, with [`Node::set_routes`] (requests
/// being forwarded finish on the route they took). The table's groups hold
/// handles of the node's peers, so a node with routes runs until
/// [`Node::shutdown`] (which drops the table), not merely until its last
/// `Node` handle is dropped.
///
/// ```no_run
/// # fn run(node: diam_client::Node, ocs: diam_client::PeerGroup, hss: diam_client::PeerGroup) -> Result<(), diam_client::Error> {
/// use diam_client::{Action, RoutingTable};
/// let table = RoutingTable::new()
///     .route("ocs.example.net", Some(4), Action::Relay(ocs))?
///     .route("*.hss.example.net", None, Action::Relay(hss))?;
/// node.set_routes(table);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct RoutingTable {
    pub(crate) table: RealmTable<Arc<Route>>,
}

impl RoutingTable {
    /// A table with no routes.
    pub fn new() -> Self {
        RoutingTable::default()
    }

    /// Routes requests for `realm` (`example.net` or `*.example.net`) and
    /// application `app` (`None`: any) to `action`, replacing an earlier
    /// route for the same pair.
    pub fn route(mut self, realm: &str, app: Option<u32>, action: Action) -> Result<Self, Error> {
        let name = match app {
            Some(a) => format!("{}:{a}", realm.to_ascii_lowercase()),
            None => realm.to_ascii_lowercase(),
        };
        let m = app.map_or(AppMatch::Any, AppMatch::Id);
        self.table
            .insert(realm, m, Arc::new(Route::new(name, action)))
            .map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(self)
    }

    /// The route of requests no other route matches.
    pub fn default_route(mut self, action: Action) -> Self {
        self.table.set_default(Arc::new(Route::new("default".into(), action)));
        self
    }

    /// Number of routes (the default not counted).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are no routes and no default.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// An agent's counters (see [`Node::agent_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct AgentStats {
    /// Requests written to an upstream peer (retransmissions included).
    pub forwarded: u64,
    /// Upstream answers relayed back downstream.
    pub answered: u64,
    /// Requests re-sent with the T flag after their upstream connection
    /// failed (RFC 6733 §5.5.4).
    pub retransmitted: u64,
    /// Requests sent to an alternate peer (never written to the first, or a
    /// 3002 answer from it).
    pub rerouted: u64,
    /// Answers the agent generated itself (3002, 3003, 3004, 3005, 3006,
    /// proxy refusals).
    pub local_answers: u64,
    /// Answers that came back after their downstream connection was gone.
    pub orphaned: u64,
    /// Requests being forwarded now.
    pub in_flight: u64,
}

#[derive(Default)]
pub(crate) struct AgentCounters {
    pub(crate) forwarded: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) retransmitted: AtomicU64,
    pub(crate) rerouted: AtomicU64,
    pub(crate) local_answers: AtomicU64,
    pub(crate) orphaned: AtomicU64,
}

/// Most entries in the client-side redirect cache.
const MAX_REDIRECT_CACHE: usize = 4096;

/// Longest a redirect is cached, whatever Redirect-Max-Cache-Time says.
const MAX_REDIRECT_TTL: Duration = Duration::from_secs(86_400);

/// What a cached redirect applies to (RFC 6733 §6.13).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RedirectKey {
    Session(String),
    Realm(String),
    RealmApp(String, u32),
    App(u32),
    Host(String),
    User(String),
}

impl RedirectKey {
    fn of(usage: RedirectUsage, req: &Message) -> Option<RedirectKey> {
        let s = |k| req.get(k).ok().flatten().map(str::to_ascii_lowercase);
        Some(match usage {
            RedirectUsage::AllSession => RedirectKey::Session(req.get(avps::SESSION_ID).ok()??.to_string()),
            RedirectUsage::AllRealm => RedirectKey::Realm(s(avps::DESTINATION_REALM)?),
            RedirectUsage::RealmAndApplication => {
                RedirectKey::RealmApp(s(avps::DESTINATION_REALM)?, req.application_id())
            }
            RedirectUsage::AllApplication => RedirectKey::App(req.application_id()),
            RedirectUsage::AllHost => RedirectKey::Host(s(avps::DESTINATION_HOST)?),
            RedirectUsage::AllUser => RedirectKey::User(req.get(avps::USER_NAME).ok()??.to_string()),
            _ => return None,
        })
    }
}

const CACHED_USAGES: [RedirectUsage; 6] = [
    RedirectUsage::AllSession,
    RedirectUsage::AllUser,
    RedirectUsage::AllHost,
    RedirectUsage::RealmAndApplication,
    RedirectUsage::AllRealm,
    RedirectUsage::AllApplication,
];

/// What the peer tasks of an agent share.
pub(crate) struct Agent {
    routes: Mutex<Option<Arc<RoutingTable>>>,
    /// Bumped on every [`Node::set_routes`]; 0 while there is no table.
    pub(crate) generation: AtomicU64,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) max_forwards: usize,
    /// Bytes of the requests in the forwarding table (kept for
    /// retransmission), and their bound.
    bytes: AtomicUsize,
    max_bytes: usize,
    pub(crate) counters: AgentCounters,
    redirects: Mutex<HashMap<RedirectKey, (String, Instant)>>,
}

impl Agent {
    pub(crate) fn new(max_forwards: usize, max_bytes: usize) -> Agent {
        Agent {
            bytes: AtomicUsize::new(0),
            max_bytes,
            routes: Mutex::new(None),
            generation: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            max_forwards,
            counters: AgentCounters::default(),
            redirects: Mutex::new(HashMap::new()),
        }
    }

    /// The table now (with its generation), if there is one.
    pub(crate) fn routes(&self) -> Option<(u64, Arc<RoutingTable>)> {
        let g = lock(&self.routes);
        g.as_ref().map(|t| (self.generation.load(Ordering::Acquire), t.clone()))
    }

    fn set(&self, table: RoutingTable) {
        let old = {
            let mut g = lock(&self.routes);
            let old = g.replace(Arc::new(table));
            self.generation.fetch_add(1, Ordering::AcqRel);
            old
        };
        // Dropped outside the lock: its groups may hold the last handles.
        drop(old);
    }

    /// Drops the table (the node is shutting down): its groups hold peer
    /// handles that would otherwise keep the node alive. Peer tasks drop
    /// their cached copy at their next request (the generation moves to one
    /// with no table).
    pub(crate) fn clear(&self) {
        let old = {
            let mut g = lock(&self.routes);
            let old = g.take();
            if old.is_some() {
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            old
        };
        drop(old);
    }

    /// Takes one place in the forwarding table for a request of `bytes`
    /// (`None` when the table, or the bytes its requests hold, are full).
    pub(crate) fn slot(self: &Arc<Self>, bytes: usize) -> Option<ForwardSlot> {
        let mut n = self.in_flight.load(Ordering::Relaxed);
        loop {
            if n >= self.max_forwards {
                return None;
            }
            match self.in_flight.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let mut held = self.bytes.load(Ordering::Relaxed);
        loop {
            if held + bytes > self.max_bytes {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            match self.bytes.compare_exchange_weak(held, held + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Some(ForwardSlot(self.clone(), bytes)),
                Err(now) => held = now,
            }
        }
    }

    fn cached_redirect(&self, req: &Message) -> Option<String> {
        let mut cache = lock(&self.redirects);
        if cache.is_empty() {
            return None;
        }
        let now = Instant::now();
        for usage in CACHED_USAGES {
            let Some(key) = RedirectKey::of(usage, req) else { continue };
            match cache.get(&key) {
                Some((host, until)) if *until > now => return Some(host.clone()),
                Some(_) => {
                    cache.remove(&key);
                }
                None => {}
            }
        }
        None
    }

    fn cache_redirect(&self, usage: RedirectUsage, req: &Message, host: &str, ttl: Duration) {
        let Some(key) = RedirectKey::of(usage, req) else { return };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut cache = lock(&self.redirects);
        if cache.len() >= MAX_REDIRECT_CACHE && !cache.contains_key(&key) {
            cache.retain(|_, (_, until)| *until > now);
            if cache.len() >= MAX_REDIRECT_CACHE {
                // Full of live entries (a redirect per session, say): the
                // one that expires first makes room.
                let first = cache.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| k.clone());
                if let Some(k) = first {
                    cache.remove(&k);
                }
            }
        }
        cache.insert(key, (host.to_string(), now + ttl.min(MAX_REDIRECT_TTL)));
    }
}

/// One place in the forwarding table, given back when dropped.
pub(crate) struct ForwardSlot(Arc<Agent>, usize);

impl Drop for ForwardSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.bytes.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// Most Redirect-Host entries tried when following one redirect.
const MAX_REDIRECT_HOSTS: usize = 8;

/// The identity a Redirect-Host URI names (its host), if it is a name.
fn redirect_identity(uri: &str) -> Option<String> {
    let addr: PeerAddr = uri.parse().ok()?;
    addr.host_name().map(|_| addr.host().into_owned())
}

impl Node {
    /// Replaces the routing table. Requests already being forwarded finish
    /// on the route they took; new ones use the new table at once.
    pub fn set_routes(&self, table: RoutingTable) {
        self.shared().agent.set(table);
    }

    /// The agent's counters (all zero on a node without routes).
    pub fn agent_stats(&self) -> AgentStats {
        let a = &self.shared().agent;
        let c = &a.counters;
        let l = |x: &AtomicU64| x.load(Ordering::Relaxed);
        AgentStats {
            forwarded: l(&c.forwarded),
            answered: l(&c.answered),
            retransmitted: l(&c.retransmitted),
            rerouted: l(&c.rerouted),
            local_answers: l(&c.local_answers),
            orphaned: l(&c.orphaned),
            in_flight: a.in_flight.load(Ordering::Relaxed) as u64,
        }
    }

    /// Sends a request the way the routing table says, as a client: to the
    /// open peer its Destination-Host names, else through the group of its
    /// Destination-Realm's relay or proxy route ([`Error::NoRoute`] when
    /// there is none; proxy hooks are for forwarded requests and do not
    /// run here).
    ///
    /// A 3006 DIAMETER_REDIRECT_INDICATION answer is followed once: the
    /// request goes to the first Redirect-Host that is a peer of this node
    /// and open, and the redirect is cached for Redirect-Max-Cache-Time (at
    /// most a day) as its Redirect-Host-Usage says (RFC 6733 §6.13; at most
    /// 4096 entries, the one expiring first makes room). An open
    /// Destination-Host peer comes before the cache. A redirect to a host
    /// the node does not know is not followed (a redirect agent must not
    /// make us dial arbitrary addresses): its answer is returned.
    pub async fn send(&self, request: Message) -> Result<Message, Error> {
        let agent = &self.shared().agent;
        let direct = self.destination_peer(&request);
        if direct.is_none() {
            if let Some(peer) = agent.cached_redirect(&request).and_then(|h| self.open_peer(&h)) {
                return peer.send(request).await;
            }
        }
        let answer = match direct {
            Some(peer) => peer.send(request.clone()).await?,
            None => {
                let realm = request.get(avps::DESTINATION_REALM).ok().flatten().map(str::to_string);
                let group = agent.routes().and_then(|(_, t)| {
                    let realm = realm.as_deref()?;
                    t.table.lookup(realm, request.application_id()).and_then(|r| r.action.group().cloned())
                });
                match group {
                    Some(g) => g.send(request.clone()).await?,
                    None => return Err(Error::NoRoute(realm)),
                }
            }
        };
        let Some(redirect) = redirect_of(&answer) else { return Ok(answer) };
        for host in redirect.hosts.iter().take(MAX_REDIRECT_HOSTS) {
            let Some(identity) = redirect_identity(host) else { continue };
            let Some(peer) = self.open_peer(&identity) else { continue };
            tracing::debug!(to = %diam_proto::Escaped(&identity), "following a redirect (3006)");
            agent.cache_redirect(
                redirect.usage,
                &request,
                &identity,
                Duration::from_secs(u64::from(redirect.max_cache_time)),
            );
            return peer.send(request).await;
        }
        Ok(answer)
    }

    /// The open peer `identity` names, if any.
    fn open_peer(&self, identity: &str) -> Option<PeerHandle> {
        self.peer(identity).filter(|p| p.state() == diam_proto::psm::PeerState::Open)
    }

    /// The open peer the request's Destination-Host names, if any.
    fn destination_peer(&self, request: &Message) -> Option<PeerHandle> {
        let host = request.get(avps::DESTINATION_HOST).ok().flatten()?;
        self.open_peer(host)
    }
}
