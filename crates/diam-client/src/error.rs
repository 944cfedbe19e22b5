//! Errors of the Diameter driver.

use std::io;

use diam_proto::peer::CloseReason;
use diam_proto::psm::PeerState;
use diam_proto::DecodeError;

/// Why a request, a connection or a server operation failed.
///
/// Use the `is_*` helpers rather than matching where possible: variants may
/// be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The transport connection could not be made.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The transport connection was not made within the connect timeout.
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    /// A listening socket could not be opened.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The peer answered our CER with an error Result-Code (e.g. 5010 no
    /// common application, 3010 unknown peer).
    #[error("capabilities exchange refused with Result-Code {result_code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    HandshakeFailed {
        /// The CEA's Result-Code.
        result_code: u32,
        /// The CEA's Error-Message, if any.
        message: Option<String>,
    },
    /// No CEA arrived within the CER timeout.
    #[error("capabilities exchange timed out")]
    HandshakeTimeout,
    /// The connection failed while the request was outstanding (or before
    /// it could be sent).
    #[error("connection lost: {0}")]
    ConnectionLost(CloseReason),
    /// The connection is closed (locally, or cleanly by the peer).
    #[error("connection closed")]
    Closed,
    /// No answer within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The pending-request table is full (`try_send`).
    #[error("too many requests in flight")]
    Overloaded,
    /// The connection cannot carry requests right now (watchdog SUSPECT or
    /// REOPEN, or closing).
    #[error("connection not available for requests (state {})", .0.name())]
    NotAvailable(PeerState),
    /// The peer has no connection and none is coming: it connected to us
    /// and went away (we have no address to dial it).
    #[error("the peer is not connected")]
    NotConnected,
    /// The answer's AVPs are malformed (RFC 6733 §7): only this request
    /// fails; the connection stays up.
    #[error("malformed answer: {0}")]
    MalformedAnswer(DecodeError),
    /// The message is not a request, or is too large.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// The pool, or the peer group, is closed.
    #[error("the client pool is closed")]
    PoolClosed,
    /// No member of the peer group could take the request within its timeout
    /// (none open, or all dead or behind an open circuit breaker).
    #[error("no peer of the group is available")]
    NoPeerAvailable,
    /// The router has no group for the request's Destination-Realm (the
    /// realm, when the request has one).
    #[error("no route for Destination-Realm {}", .0.as_deref().unwrap_or("(none)"))]
    NoRoute(Option<String>),
    /// The connection to this address is being re-established and the pool
    /// is set to fail fast meanwhile.
    #[error("reconnecting to the peer")]
    Reconnecting,
    /// The operation was abandoned: the connection task ended without
    /// reporting an outcome (it was aborted, e.g. at runtime shutdown).
    #[error("cancelled")]
    Cancelled,
    /// The pool already holds its maximum number of addresses.
    #[error("the pool already holds its maximum of {0} connections")]
    PoolFull(usize),
    /// TLS failed: the handshake (an untrusted, expired or missing
    /// certificate, a plaintext peer), or in-band TLS was not agreed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The peer's certificate does not name its DiameterIdentity.
    #[error("the peer's certificate does not name {identity}")]
    CertificateMismatch {
        /// The identity the certificate should name.
        identity: String,
    },
}

/// Errors are cloned when one outcome reaches several callers (every caller
/// that waited on the same connection establishment gets the same error).
/// An I/O source is cloned as its kind and message.
impl Clone for Error {
    fn clone(&self) -> Self {
        match self {
            Error::InvalidConfig(s) => Error::InvalidConfig(s.clone()),
            Error::Connect { addr, source } => {
                Error::Connect { addr: addr.clone(), source: io::Error::new(source.kind(), source.to_string()) }
            }
            Error::ConnectTimeout(a) => Error::ConnectTimeout(a.clone()),
            Error::Listen { addr, source } => {
                Error::Listen { addr: *addr, source: io::Error::new(source.kind(), source.to_string()) }
            }
            Error::NotConnected => Error::NotConnected,
            Error::MalformedAnswer(e) => Error::MalformedAnswer(e.clone()),
            Error::HandshakeFailed { result_code, message } => {
                Error::HandshakeFailed { result_code: *result_code, message: message.clone() }
            }
            Error::HandshakeTimeout => Error::HandshakeTimeout,
            Error::ConnectionLost(r) => Error::ConnectionLost(r.clone()),
            Error::Closed => Error::Closed,
            Error::Timeout => Error::Timeout,
            Error::Overloaded => Error::Overloaded,
            Error::NotAvailable(s) => Error::NotAvailable(*s),
            Error::InvalidRequest(s) => Error::InvalidRequest(s),
            Error::PoolClosed => Error::PoolClosed,
            Error::Reconnecting => Error::Reconnecting,
            Error::PoolFull(n) => Error::PoolFull(*n),
            Error::Cancelled => Error::Cancelled,
            Error::NoPeerAvailable => Error::NoPeerAvailable,
            Error::NoRoute(r) => Error::NoRoute(r.clone()),
            Error::Tls(m) => Error::Tls(m.clone()),
            Error::CertificateMismatch { identity } => Error::CertificateMismatch { identity: identity.clone() },
        }
    }
}

impl Error {
    /// The request or handshake timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout | Error::HandshakeTimeout | Error::ConnectTimeout(_))
    }
    /// The connection or the pool is gone (lost or closed).
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::ConnectionLost(_) | Error::Closed | Error::PoolClosed | Error::NotConnected)
    }
    /// The configuration is invalid.
    pub fn is_invalid_config(&self) -> bool {
        matches!(self, Error::InvalidConfig(_))
    }
    /// TLS failed, or the peer's certificate does not name it.
    pub fn is_tls(&self) -> bool {
        matches!(self, Error::Tls(_) | Error::CertificateMismatch { .. })
    }
    /// The capabilities exchange failed or timed out.
    pub fn is_handshake(&self) -> bool {
        matches!(self, Error::HandshakeFailed { .. } | Error::HandshakeTimeout)
    }
    /// A short stable name of the error's kind, for metrics and reports:
    /// `timeout`, `connection_lost`, `closed`, `handshake`, `connect`,
    /// `overloaded`, `unavailable`, `invalid`, `pool_closed`, `cancelled`,
    /// `no_peer`, `no_route`, `not_connected`, `malformed_answer`, `listen`,
    /// `tls`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Timeout => "timeout",
            Error::ConnectionLost(_) => "connection_lost",
            Error::Closed => "closed",
            Error::HandshakeFailed { .. } | Error::HandshakeTimeout => "handshake",
            Error::Connect { .. } | Error::ConnectTimeout(_) => "connect",
            Error::Listen { .. } => "listen",
            Error::NotConnected => "not_connected",
            Error::MalformedAnswer(_) => "malformed_answer",
            Error::Overloaded | Error::PoolFull(_) => "overloaded",
            Error::NotAvailable(_) | Error::Reconnecting => "unavailable",
            Error::InvalidConfig(_) | Error::InvalidRequest(_) => "invalid",
            Error::PoolClosed => "pool_closed",
            Error::Cancelled => "cancelled",
            Error::NoPeerAvailable => "no_peer",
            Error::NoRoute(_) => "no_route",
            Error::Tls(_) | Error::CertificateMismatch { .. } => "tls",
        }
    }
    /// The connection failed under the request.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Error::ConnectionLost(_))
    }
    /// Backpressure: too many requests in flight.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Error::Overloaded)
    }
    /// The capabilities exchange failed; the Result-Code when the peer sent one.
    pub fn handshake_result_code(&self) -> Option<u32> {
        match self {
            Error::HandshakeFailed { result_code, .. } => Some(*result_code),
            _ => None,
        }
    }

    /// The error a connection-level [`CloseReason`] means for a caller.
    pub(crate) fn from_close(reason: &CloseReason) -> Error {
        match reason {
            CloseReason::HandshakeFailed { result_code, message } => {
                Error::HandshakeFailed { result_code: *result_code, message: message.clone() }
            }
            CloseReason::HandshakeTimeout => Error::HandshakeTimeout,
            CloseReason::LocalDisconnect { .. } => Error::Closed,
            CloseReason::DialFailed { message } => {
                Error::Connect { addr: String::new(), source: io::Error::other(message.clone()) }
            }
            CloseReason::Tls { message } => Error::Tls(message.clone()),
            CloseReason::CertificateMismatch { identity } => Error::CertificateMismatch { identity: identity.clone() },
            other => Error::ConnectionLost(other.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<Error>();
    }

    #[test]
    fn helpers() {
        assert!(Error::Timeout.is_timeout());
        assert!(Error::ConnectionLost(CloseReason::TransportClosed).is_closed());
        assert!(Error::Overloaded.is_overloaded());
        let e = Error::from_close(&CloseReason::HandshakeFailed { result_code: 5010, message: None });
        assert_eq!(e.handshake_result_code(), Some(5010));
        assert_eq!(e.to_string(), "capabilities exchange refused with Result-Code 5010");
    }
}
