//! tokio driver for Diameter (RFC 6733): peer connections and a server.
//!
//! * [`Peer`]: a client connection. One task owns the socket; callers
//!   submit through a bounded channel and the task coalesces every queued
//!   request into one write. Pending requests are bounded (`max_pending`);
//!   each ends with its answer or a typed [`Error`] by its deadline. A
//!   failure (EOF, read or write error, a stalled write, watchdog DOWN, DPR)
//!   completes every pending request at once with
//!   [`Error::ConnectionLost`] and fires the `on_failure` callback.
//! * [`AddressClient`]: at most one connection per address, single-flight
//!   establishment, cleanup the moment a connection fails, reconnection
//!   with backoff, idle and lifetime limits, statistics and events.
//! * [`PeerGroup`]: several peers for one destination on an
//!   `AddressClient`: balancing (round-robin, least recently used, random,
//!   least outstanding, weighted) or primary/secondary failover with
//!   auto-failback; per-peer health and circuit breaker; retryable requests
//!   retransmitted with the T flag when their connection fails (RFC 6733
//!   §5.5.4). [`Router`] picks the group by Destination-Realm.
//! * [`Server`]: accepts connections and serves application requests with
//!   a [`Handler`]; shutdown sends DPR to every peer.
//!
//! The protocol logic (capabilities exchange, RFC 3539 watchdog, DPR/DPA)
//! is the sans-IO [`diam_proto::peer::PeerConnection`]; this crate adds
//! sockets and timers.
//!
//! Dependencies: `tokio` (runtime, sockets, timers, channels), `bytes`,
//! `tracing` for logs, `thiserror` for errors, `metrics` for counters, and
//! this workspace's `diam-link` for backoff, events, health monitoring,
//! circuit breakers, balancing and the failover machine.
#![warn(missing_docs)]

mod config;
mod conn;
mod error;
mod group;
mod handler;
mod peer;
mod pool;
mod router;
mod server;

pub use config::ConnectionConfig;
pub use conn::{ConnectionStats, FailureCallback, FailureInfo, Hooks};
pub use error::Error;
pub use group::{
    FailoverStatistics, GroupConfig, GroupMember, GroupMode, GroupStats, MemberHealth, MemberReconnection, PeerGroup,
    SendOptions,
};
pub use handler::{handler_fn, Handler, HandlerFuture, Response};
pub use peer::Peer;
pub use pool::{AddressClient, ConnectionSnapshot, PoolConfig, PoolFailure, PoolFailureCallback, PoolStats};
pub use router::Router;
pub use server::Server;

pub use diam_proto::peer::{CloseReason, PeerInfo, PeerState};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
