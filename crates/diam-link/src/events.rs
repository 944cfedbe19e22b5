//! Typed lifecycle events and the dispatcher that delivers them.
//!
//! An [`Event`] is data, not a log line: what happened ([`EventData`], whose fieldless
//! twin is [`EventKind`]), when ([`SystemTime`]), to which connection ([`ConnectionId`])
//! and which peer ([`Remote`]). The reconnecting client emits the connection events; a
//! pool built on this crate emits the pool events; a protocol layer adds its own through
//! [`EventData::Custom`] (for Diameter: watchdog transitions, failover) without this crate
//! knowing about them.
//!
//! [`EventDispatcher`] delivers events to listeners registered per kind or for all kinds,
//! isolates panics and failures, can move listeners onto a bounded worker pool, keeps
//! per-kind timing statistics, and offers a broadcast [`EventStream`].

mod dispatch;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use dispatch::{
    DispatcherBuilder, ErrorPolicy, EventDispatcher, EventStream, ExecutorConfig, IntoListenerResult, KindStats,
    Lagged, ListenerError, Overflow, Subscription,
};

use crate::error::Error;
use crate::remote::Remote;

/// Identifies one logical connection (one reconnecting client, one pool slot) across its
/// reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// An id chosen by the caller.
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// A fresh id, unique within this process (counting up from 1).
    pub fn unique() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The kinds of [`EventData`], for subscribing and for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum EventKind {
    /// See [`EventData::ConnectionCreated`].
    ConnectionCreated,
    /// See [`EventData::Connected`].
    Connected,
    /// See [`EventData::Reconnected`].
    Reconnected,
    /// See [`EventData::Disconnected`].
    Disconnected,
    /// See [`EventData::Error`].
    Error,
    /// See [`EventData::HealthCheck`].
    HealthCheck,
    /// See [`EventData::MarkedForReconnect`].
    MarkedForReconnect,
    /// See [`EventData::ReconnectScheduled`].
    ReconnectScheduled,
    /// See [`EventData::PoolCreated`].
    PoolCreated,
    /// See [`EventData::ConnectionAcquired`].
    ConnectionAcquired,
    /// See [`EventData::ConnectionReleased`].
    ConnectionReleased,
    /// See [`EventData::PoolExhausted`].
    PoolExhausted,
    /// See [`EventData::PoolReset`].
    PoolReset,
    /// See [`EventData::Custom`].
    Custom,
}

impl EventKind {
    pub(crate) const COUNT: usize = 14;

    /// Every kind, in declaration order.
    pub const ALL: [EventKind; Self::COUNT] = [
        Self::ConnectionCreated,
        Self::Connected,
        Self::Reconnected,
        Self::Disconnected,
        Self::Error,
        Self::HealthCheck,
        Self::MarkedForReconnect,
        Self::ReconnectScheduled,
        Self::PoolCreated,
        Self::ConnectionAcquired,
        Self::ConnectionReleased,
        Self::PoolExhausted,
        Self::PoolReset,
        Self::Custom,
    ];

    /// The snake_case name (`"connected"`, `"reconnect_scheduled"`, …), stable for logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionCreated => "connection_created",
            Self::Connected => "connected",
            Self::Reconnected => "reconnected",
            Self::Disconnected => "disconnected",
            Self::Error => "error",
            Self::HealthCheck => "health_check",
            Self::MarkedForReconnect => "marked_for_reconnect",
            Self::ReconnectScheduled => "reconnect_scheduled",
            Self::PoolCreated => "pool_created",
            Self::ConnectionAcquired => "connection_acquired",
            Self::ConnectionReleased => "connection_released",
            Self::PoolExhausted => "pool_exhausted",
            Self::PoolReset => "pool_reset",
            Self::Custom => "custom",
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a connection ended, as carried by [`EventData::Disconnected`] and passed to
/// [`Hooks::on_disconnect`](crate::Hooks::on_disconnect).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The session returned `Ok`: the peer closed, or the protocol finished.
    Closed,
    /// The session returned an error (also reported as an [`EventData::Error`]).
    Failed(Error),
    /// The client is shutting down.
    Shutdown,
    /// [`mark_for_reconnect`](crate::ReconnectingClient::mark_for_reconnect) asked for a fresh connection.
    Reconnect,
}

impl DisconnectReason {
    /// A short stable name: `closed`, `failed`, `shutdown` or `reconnect`.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Failed(_) => "failed",
            Self::Shutdown => "shutdown",
            Self::Reconnect => "reconnect",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(err) => write!(f, "failed: {err}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// An event defined by a layer above this crate, e.g. a Diameter watchdog moving from
/// OKAY to SUSPECT. It carries a stable `name` and any `Debug + Send + Sync` value,
/// which listeners get back with [`downcast_ref`](Self::downcast_ref).
///
/// ```
/// use diam_link::events::{CustomEvent, EventData};
///
/// #[derive(Debug, PartialEq)]
/// struct Watchdog { from: &'static str, to: &'static str }
///
/// let data = EventData::Custom(CustomEvent::new("watchdog", Watchdog { from: "okay", to: "suspect" }));
/// if let EventData::Custom(custom) = &data {
///     assert_eq!(custom.name(), "watchdog");
///     assert_eq!(custom.downcast_ref::<Watchdog>().unwrap().to, "suspect");
/// }
/// ```
#[derive(Clone)]
pub struct CustomEvent {
    name: &'static str,
    value: Arc<dyn Any + Send + Sync>,
    debug: fn(&(dyn Any + Send + Sync), &mut fmt::Formatter<'_>) -> fmt::Result,
}

impl CustomEvent {
    /// Wraps `value` under `name`.
    pub fn new<T: Any + fmt::Debug + Send + Sync>(name: &'static str, value: T) -> Self {
        fn debug<T: Any + fmt::Debug>(value: &(dyn Any + Send + Sync), f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match value.downcast_ref::<T>() {
                Some(value) => value.fmt(f),
                None => f.write_str("?"),
            }
        }
        Self { name, value: Arc::new(value), debug: debug::<T> }
    }

    /// The name given at construction.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The value, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.value.downcast_ref()
    }
}

impl fmt::Debug for CustomEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        (self.debug)(&*self.value, f)?;
        f.write_str(")")
    }
}

/// What happened. Connection events come from the reconnecting client, pool events from
/// a pool built on this crate, and [`Custom`](Self::Custom) from higher layers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EventData {
    /// A connection attempt is about to start.
    ConnectionCreated,
    /// A connection is up (after the handshake); `first` is true only for the first one.
    Connected {
        /// `true` for the first connection of this client.
        first: bool,
    },
    /// A connection is up again after a disconnection (follows a `Connected { first: false }`).
    Reconnected {
        /// Which attempt since the disconnection succeeded, from 1.
        attempt: u32,
    },
    /// A connection ended.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// An attempt or a session failed.
    Error {
        /// The failure.
        error: Error,
    },
    /// A health check ran.
    HealthCheck {
        /// Whether the peer passed.
        healthy: bool,
        /// How long the check took.
        latency: Duration,
    },
    /// A connection was marked to be replaced by a fresh one.
    MarkedForReconnect,
    /// The client will try again after `delay`.
    ReconnectScheduled {
        /// The number of the attempt that will run, from 1 (counted since the last connection).
        attempt: u32,
        /// How long the client waits first.
        delay: Duration,
    },
    /// A pool was created.
    PoolCreated,
    /// A connection was checked out of a pool.
    ConnectionAcquired {
        /// How long the caller waited for it.
        wait: Duration,
    },
    /// A connection was returned to a pool.
    ConnectionReleased,
    /// A pool had no connection to give.
    PoolExhausted,
    /// A pool dropped all its connections.
    PoolReset,
    /// An event defined by a higher layer.
    Custom(CustomEvent),
}

impl EventData {
    /// The kind of this event.
    pub const fn kind(&self) -> EventKind {
        match self {
            Self::ConnectionCreated => EventKind::ConnectionCreated,
            Self::Connected { .. } => EventKind::Connected,
            Self::Reconnected { .. } => EventKind::Reconnected,
            Self::Disconnected { .. } => EventKind::Disconnected,
            Self::Error { .. } => EventKind::Error,
            Self::HealthCheck { .. } => EventKind::HealthCheck,
            Self::MarkedForReconnect => EventKind::MarkedForReconnect,
            Self::ReconnectScheduled { .. } => EventKind::ReconnectScheduled,
            Self::PoolCreated => EventKind::PoolCreated,
            Self::ConnectionAcquired { .. } => EventKind::ConnectionAcquired,
            Self::ConnectionReleased => EventKind::ConnectionReleased,
            Self::PoolExhausted => EventKind::PoolExhausted,
            Self::PoolReset => EventKind::PoolReset,
            Self::Custom(_) => EventKind::Custom,
        }
    }
}

/// One lifecycle event: what, when, which connection, which peer.
///
/// Cloning is cheap and never allocates: the remote and any error or custom value are
/// reference counted.
#[derive(Debug, Clone)]
pub struct Event {
    data: EventData,
    timestamp: SystemTime,
    connection_id: ConnectionId,
    remote: Option<Arc<Remote>>,
}

impl Event {
    /// An event stamped with the current wall-clock time.
    pub fn new(connection_id: ConnectionId, remote: Option<Arc<Remote>>, data: EventData) -> Self {
        Self { data, timestamp: SystemTime::now(), connection_id, remote }
    }

    /// Replaces the timestamp (for replay and tests).
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The kind, for matching without the payload.
    pub const fn kind(&self) -> EventKind {
        self.data.kind()
    }

    /// The payload.
    pub const fn data(&self) -> &EventData {
        &self.data
    }

    /// When the event happened (wall clock, for correlation with other systems' logs).
    pub const fn timestamp(&self) -> SystemTime {
        self.timestamp
    }

    /// The connection the event is about.
    pub const fn connection_id(&self) -> ConnectionId {
        self.connection_id
    }

    /// The peer, when the event is about one.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_their_table() {
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        assert_eq!(EventData::Reconnected { attempt: 1 }.kind(), EventKind::Reconnected);
        assert_eq!(EventKind::ReconnectScheduled.to_string(), "reconnect_scheduled");
    }

    #[test]
    fn events_are_send_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Event>();
    }
}
