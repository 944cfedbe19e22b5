//! Typed payloads of the Diameter events a node emits.
//!
//! The node emits diam-link's lifecycle events (`connection_created`,
//! `connected`, `reconnected`, `disconnected`, `reconnect_scheduled`,
//! `error`, `health_check` with each watchdog DWA's round-trip time) with
//! the peer's [`ConnectionId`] (the same across its reconnections and in
//! its [`PeerFailure`]s), and these [`CustomEvent`]s, whose values listeners
//! get back with [`CustomEvent::downcast_ref`]:
//!
//! | name | value |
//! |---|---|
//! | `peer_up` | [`PeerUp`] |
//! | `peer_down` | [`PeerDown`] |
//! | `watchdog` | [`WatchdogChange`] |
//! | `peer_restarted` | [`PeerRestarted`] |
//! | `election` | [`Election`] |
//! | `peer_failure` | [`PeerFailure`] |
//!
//! Listeners run on the dispatcher's bounded executor by default, never on
//! a peer's task.
//!
//! [`CustomEvent`]: diam_link::events::CustomEvent
//! [`CustomEvent::downcast_ref`]: diam_link::events::CustomEvent::downcast_ref

use std::net::SocketAddr;
use std::time::SystemTime;

use diam_link::events::ConnectionId;
use diam_proto::peer::CloseReason;
use diam_proto::psm::{Direction, PeerState};
use diam_proto::uri::PeerAddr;
use diam_proto::watchdog::WatchdogState;

use crate::transport::TransportKind;

/// A peer completed its capabilities exchange (`peer_up`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUp {
    /// Its Origin-Host.
    pub peer: String,
    /// Who dialled the connection.
    pub direction: Direction,
    /// What carries it.
    pub transport: TransportKind,
    /// Local socket address.
    pub local: Option<SocketAddr>,
    /// Remote socket address.
    pub remote: Option<SocketAddr>,
}

/// A peer lost its connection (`peer_down`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDown {
    /// Its Origin-Host (or address, before the first exchange).
    pub peer: String,
    /// Why.
    pub reason: CloseReason,
}

/// The watchdog of a peer changed state (`watchdog`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogChange {
    /// The peer.
    pub peer: String,
    /// Before.
    pub from: WatchdogState,
    /// After.
    pub to: WatchdogState,
}

/// A peer's Origin-State-Id changed: it restarted (`peer_restarted`, RFC
/// 6733 §8.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRestarted {
    /// The peer.
    pub peer: String,
    /// The old value.
    pub previous: u32,
    /// The new value.
    pub current: u32,
}

/// Both sides connected at once and the election ran (`election`, RFC 6733
/// §5.6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// The peer.
    pub peer: String,
    /// Whether we won (and closed the connection we dialled).
    pub won: bool,
}

/// A connection failed, or an attempt to open one did (`peer_failure`;
/// what [`Node::on_failure`](crate::Node::on_failure) and
/// [`AddressClient::on_failure`](crate::AddressClient::on_failure)
/// callbacks get). A local close is not a failure.
#[derive(Debug, Clone)]
pub struct PeerFailure {
    /// The peer's id: the same in its events and handle.
    pub connection_id: ConnectionId,
    /// The address it is dialled at, if any.
    pub peer_address: Option<PeerAddr>,
    /// Its Origin-Host, once known.
    pub peer_origin_host: Option<String>,
    /// Why the connection or attempt failed.
    pub reason: CloseReason,
    /// The peer's state right after the failure.
    pub state: PeerState,
    /// Reconnection attempts since the peer was last up.
    pub attempt: u32,
    /// Whether a reconnection follows.
    pub reconnecting: bool,
    /// When the failure was detected.
    pub timestamp: SystemTime,
}

/// An inbound connection refused before it reached a peer
/// (`inbound_refused`): over a limit, a failed TLS handshake, no CER in
/// time, a CER that fails the checks, an unknown peer, a certificate that
/// does not name the Origin-Host. Also counted in the metric
/// `diam_inbound_refused_total{reason}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRefused {
    /// Where it came from.
    pub remote: Option<std::net::SocketAddr>,
    /// The CER's Origin-Host, when one was read (print it escaped: it is
    /// the peer's text).
    pub origin_host: Option<String>,
    /// Why: `max_connections`, `max_connections_per_source`,
    /// `max_pending_handshakes`, `tls`, `no_cer`, `cer_timeout`, `not_cer`,
    /// `bad_cer`, `origin_host_missing`, `origin_host_duplicated`,
    /// `origin_host_invalid` (and the same for `origin_realm`), `own_identity`,
    /// `certificate_mismatch`, `unknown_peer`, `no_common_security`,
    /// `shutting_down`, `busy`.
    pub reason: &'static str,
    /// The Result-Code of the CEA sent, if one was.
    pub result_code: Option<u32>,
}
