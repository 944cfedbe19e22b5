//! tokio driver for Diameter (RFC 6733): the node, its peers in both
//! directions, and the clients built on them.
//!
//! * [`Node`]: one Diameter identity, its listeners, and one peer table
//!   keyed by DiameterIdentity shared by both directions. Configured peers
//!   are kept connected; peers that connect to us are checked and
//!   authorized from their CER; election (RFC 6733 §5.6.4) keeps one
//!   connection when both sides dial. Inbound requests go to [`Handler`]s
//!   by Application-Id.
//! * [`PeerHandle`]: sends requests to one peer on whichever connection is
//!   open, inbound or outbound (a server sends RAR/ASR to a client that
//!   connected to it). Every request ends with its answer or a typed
//!   [`Error`] within its timeout.
//! * One task per peer owns its connections and its sans-IO
//!   [`diam_proto::psm::PeerMachine`] (peer states, election, the RFC 3539
//!   watchdog kept across connections, Origin-State-Id restarts, the one
//!   reconnect schedule). Callers submit through a bounded channel; the
//!   task coalesces every queued request into one write and decodes without
//!   copying. A malformed request gets its RFC 6733 §7 error answer and a
//!   malformed answer fails only its own request; only a corrupt stream
//!   closes a connection.
//! * [`transport`]: the task runs over any byte stream; [`Connector`] and
//!   [`Acceptor`] open and accept them: TCP, and TLS-first in [`tls`]
//!   (mutual authentication, the certificate checked against the peer's
//!   DiameterIdentity, credential reload). In-band TLS (Inband-Security-Id
//!   1) starts on the peer's task right after the CEA.
//! * Inbound connections are bounded (in all, per source address, waiting
//!   for their CER) and so are the bytes all of them hold for unfinished
//!   messages; a message must complete within a deadline once begun.
//! * [`AddressClient`]: the seed's client keyed by address: one connection
//!   per address, single-flight establishment, cleanup the moment a
//!   connection fails, reconnection with backoff, idle and lifetime limits,
//!   statistics, events, `on_failure`.
//! * [`PeerGroup`]: several peers for one destination (balancing in O(1),
//!   or primary/secondary failover with auto-failback; per-peer health from
//!   traffic and the watchdog, circuit breaker; retryable requests
//!   retransmitted with the T flag, RFC 6733 §5.5.4). [`Router`] picks the
//!   group by Destination-Realm.
//! * Agents ([`RoutingTable`], [`Node::set_routes`]): relay, proxy and
//!   redirect routes by realm and application (RFC 6733 §2.7, §6.1).
//!   Forwarding runs on the peer task that read the request (no task per
//!   request): Hop-by-Hop rewritten, End-to-End kept, Route-Record of
//!   the sending peer appended, loops refused (3005), a bounded forwarding table (3004),
//!   failover to an alternate with the T flag (§5.5.4), 3002/3003 when
//!   there is nowhere to go. [`Node::send`] routes as a client and follows
//!   a 3006 redirect once.
//! * [`events`]: the typed payloads of the node's events; listeners run on
//!   a bounded executor, never on a peer's task.
//!
//! # Choosing a runtime
//!
//! Every task a request passes through (the caller, the peer task, a
//! handler) is spawned on the runtime current when the [`Node`],
//! [`AddressClient`] or [`PeerGroup`] is built; they never start threads of
//! their own for the request path.
//!
//! * **Lowest latency, or a small machine**: a current-thread runtime
//!   (`tokio::runtime::Builder::new_current_thread`). A request and its
//!   answer cross no thread: the caller wakes the peer task, which writes
//!   and later wakes the caller, all on one thread, with no cross-thread
//!   wake-up on either side.
//! * **Throughput on several cores**: one current-thread runtime per core,
//!   each with its own client (a distinct Origin-Host for each, since a peer
//!   keeps one connection per identity) or its own node listening on the
//!   same port with [`TcpAcceptor::bind_shared`] (SO_REUSEPORT: the kernel
//!   spreads the connections). Traffic is split by connection, and nothing
//!   is shared on the request path. `diam serve --threads N` and
//!   `diam bench --threads N` are built that way.
//! * **Simplest**: the default multi-thread runtime. It balances uneven
//!   work across cores by itself, at the cost of wake-ups across threads
//!   (a few microseconds per request at low load), and suits nodes with
//!   slow handlers or many peers of unequal load, and agents, whose
//!   upstream and downstream peers must share one node.
//!
//! Dependencies: `tokio` (runtime, sockets, timers, channels), `tokio-util`
//! (reading into a `BytesMut` from a poll loop), `bytes`, `tracing` for
//! logs, `thiserror` for errors, `metrics` for counters, `rustls` (ring
//! provider) through `tokio-rustls` for TLS, `x509-parser` for certificate
//! subjects and names in reports, and this
//! workspace's `diam-proto` (the protocol) and `diam-link` (backoff,
//! events, health monitoring, circuit breakers, balancing, failover).
#![warn(missing_docs)]

mod agent;
mod config;
mod driver;
mod error;
pub mod events;
mod group;
mod handle;
mod handler;
mod limits;
mod node;
mod pool;
mod router;
mod timer_grid;
pub mod tls;
pub mod transport;

pub use agent::{Action, AgentStats, ProxyHook, RedirectTo, RoutingTable};
pub use config::{ConnectionConfig, NodeConfig, ReconnectConfig};
pub use error::Error;
pub use events::PeerFailure;
pub use group::{
    FailoverStatistics, GroupConfig, GroupMember, GroupMode, GroupStats, MemberHealth, MemberReconnection, PeerGroup,
    SendOptions,
};
pub use handle::{PeerHandle, PeerStats};
pub use handler::{handler_fn, sync_handler_fn, Handler, HandlerFuture, Response};
pub use node::{Authorizer, Node, NodeBuilder};
pub use pool::{AddressClient, ConnectionSnapshot, PoolConfig, PoolFailure, PoolStats};
pub use router::Router;
pub use timer_grid::TimerGrid;
pub use tls::{TlsAcceptor, TlsConfig, TlsConnector, TlsError, TlsHandle, TlsInfo};
pub use transport::{Acceptor, Connection, Connector, TcpAcceptor, TcpConnector, TransportKind};

pub use diam_proto::peer::{CloseReason, PeerInfo};
pub use diam_proto::psm::{Direction, PeerState};
pub use diam_proto::uri::PeerAddr;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
