//! Error types: [`ConfigError`] for bad input caught at construction, [`Error`] for
//! everything the reconnecting client reports at run time.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::sync::Arc;

/// A boxed error that can cross threads; what hooks and listeners return.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A configuration value was rejected at construction time.
///
/// Every constructor and builder in this crate that can be handed nonsense (a zero
/// timeout, a multiplier below one, an unparsable address) validates once and returns
/// this error, so a running client never meets an invalid setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A [`Remote`](crate::Remote) string could not be parsed.
    #[error("invalid remote {input:?}: {reason}")]
    #[non_exhaustive]
    InvalidRemote {
        /// The rejected input, verbatim.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A setting had a value outside its valid range.
    #[error("invalid {field}: {reason}")]
    #[non_exhaustive]
    InvalidValue {
        /// The setting's name, as in the builder method.
        field: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
}

impl ConfigError {
    pub(crate) fn remote(input: &str, reason: &'static str) -> Self {
        Self::InvalidRemote { input: input.to_owned(), reason }
    }

    pub(crate) fn value(field: &'static str, reason: &'static str) -> Self {
        Self::InvalidValue { field, reason }
    }
}

/// An error reported by the reconnecting client.
///
/// Opaque on purpose: ask it questions with the `is_*` methods and walk
/// [`source()`](StdError::source) for the cause. Cloning is cheap (one reference count),
/// so the same error can sit in an event, in [`err()`](crate::ReconnectingClient::err) and
/// in [`wait()`](crate::ReconnectingClient::wait) at once.
///
/// Errors are either *recoverable* (the next attempt may succeed: refused, reset,
/// timed out, socket file missing, a failed handshake or session) or *fatal* (bad
/// configuration, an explicit stop, the backoff giving up, cancellation). The default
/// [`Hooks::on_error`](crate::Hooks::on_error) retries the first kind and stops on the second.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: Kind,
    source: Option<BoxError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Config,
    Connect,
    DialTimeout,
    HandshakeTimeout,
    Handshake,
    Session,
    Stopped,
    Exhausted,
    Cancelled,
    AlreadyStarted,
    NoRuntime,
}

impl Error {
    pub(crate) fn new(kind: Kind, source: Option<BoxError>) -> Self {
        Self { inner: Arc::new(Inner { kind, source }) }
    }

    pub(crate) fn with_source(kind: Kind, source: impl Into<BoxError>) -> Self {
        Self::new(kind, Some(source.into()))
    }

    /// Wraps an error produced by a protocol layer built on this crate, so it can travel
    /// in an [`EventData::Error`](crate::events::EventData::Error) event. Classified like
    /// a failed session: recoverable.
    pub fn session(source: impl Into<BoxError>) -> Self {
        Self::with_source(Kind::Session, source)
    }

    /// `true` when another attempt may succeed (see the type docs); the opposite of
    /// [`is_fatal`](Self::is_fatal).
    pub fn is_recoverable(&self) -> bool {
        match self.inner.kind {
            Kind::Config
            | Kind::Stopped
            | Kind::Exhausted
            | Kind::Cancelled
            | Kind::AlreadyStarted
            | Kind::NoRuntime => false,
            Kind::DialTimeout | Kind::HandshakeTimeout | Kind::Handshake | Kind::Session => true,
            Kind::Connect => !matches!(
                self.io_error_kind(),
                Some(io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported)
            ),
        }
    }

    /// `true` when retrying cannot help: configuration, explicit stop, exhausted backoff,
    /// cancellation or misuse.
    pub fn is_fatal(&self) -> bool {
        !self.is_recoverable()
    }

    /// A dial or handshake timed out, or an I/O operation in the cause chain did.
    pub fn is_timeout(&self) -> bool {
        matches!(self.inner.kind, Kind::DialTimeout | Kind::HandshakeTimeout)
            || self.io_error_kind() == Some(io::ErrorKind::TimedOut)
    }

    /// The peer refused the connection (nothing listening on the port or socket file).
    pub fn is_refused(&self) -> bool {
        self.io_error_kind() == Some(io::ErrorKind::ConnectionRefused)
    }

    /// The connection was reset, aborted or cut short by the peer.
    pub fn is_reset(&self) -> bool {
        matches!(
            self.io_error_kind(),
            Some(
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        )
    }

    /// Dialing failed (socket creation, `on_socket`, resolution or `connect`).
    pub fn is_connect(&self) -> bool {
        matches!(self.inner.kind, Kind::Connect | Kind::DialTimeout)
    }

    /// The [`on_connect`](crate::Hooks::on_connect) handshake failed or timed out.
    pub fn is_handshake(&self) -> bool {
        matches!(self.inner.kind, Kind::Handshake | Kind::HandshakeTimeout)
    }

    /// The [`on_session`](crate::Hooks::on_session) hook returned an error.
    pub fn is_session(&self) -> bool {
        self.inner.kind == Kind::Session
    }

    /// A configuration value was rejected (see [`ConfigError`] in the source chain).
    pub fn is_config(&self) -> bool {
        self.inner.kind == Kind::Config
    }

    /// [`on_error`](crate::Hooks::on_error) returned [`ErrorAction::Stop`](crate::ErrorAction::Stop);
    /// the triggering error is the source.
    pub fn is_stopped(&self) -> bool {
        self.inner.kind == Kind::Stopped
    }

    /// The backoff strategy gave up; the last failure, if any, is the source.
    pub fn is_exhausted(&self) -> bool {
        self.inner.kind == Kind::Exhausted
    }

    /// The client was cancelled before it could finish on its own: a shutdown deadline
    /// passed, or the runtime went away.
    pub fn is_cancelled(&self) -> bool {
        self.inner.kind == Kind::Cancelled
    }

    /// [`connect()`](crate::ReconnectingClient::connect) was called twice, or without a
    /// tokio runtime.
    pub fn is_misuse(&self) -> bool {
        matches!(self.inner.kind, Kind::AlreadyStarted | Kind::NoRuntime)
    }

    /// The kind of the first [`io::Error`] in the cause chain, if there is one.
    pub fn io_error_kind(&self) -> Option<io::ErrorKind> {
        let mut next: Option<&(dyn StdError + 'static)> = self.source();
        while let Some(err) = next {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                return Some(io.kind());
            }
            if let Some(own) = err.downcast_ref::<Error>() {
                // A wrapped client error (e.g. the cause of `Stopped`) answers for itself.
                return own.io_error_kind();
            }
            next = err.source();
        }
        None
    }

    fn message(&self) -> &'static str {
        match self.inner.kind {
            Kind::Config => "invalid configuration",
            Kind::Connect => "connect failed",
            Kind::DialTimeout => "connect timed out",
            Kind::HandshakeTimeout => "handshake timed out",
            Kind::Handshake => "handshake failed",
            Kind::Session => "session failed",
            Kind::Stopped => "reconnection stopped by on_error",
            Kind::Exhausted => "backoff gave up reconnecting",
            Kind::Cancelled => "client cancelled before it finished",
            Kind::AlreadyStarted => "client already started",
            Kind::NoRuntime => "connect() needs a tokio runtime",
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = f.debug_tuple("diam_link::Error");
        t.field(&self.inner.kind);
        if let Some(source) = &self.inner.source {
            t.field(source);
        }
        t.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Self::with_source(Kind::Config, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn errors_are_send_sync_static() {
        assert_send_sync::<Error>();
        assert_send_sync::<ConfigError>();
    }

    #[test]
    fn classification() {
        let refused = Error::with_source(Kind::Connect, io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(refused.is_refused() && refused.is_recoverable() && refused.is_connect());
        let reset = Error::session(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(reset.is_reset() && reset.is_recoverable() && reset.is_session());
        let missing = Error::with_source(Kind::Connect, io::Error::from(io::ErrorKind::NotFound));
        assert!(missing.is_recoverable());
        let denied = Error::with_source(Kind::Connect, io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(denied.is_fatal());
        assert!(Error::new(Kind::DialTimeout, None).is_timeout());
        let config: Error = ConfigError::value("dial_timeout", "must be > 0").into();
        assert!(config.is_config() && config.is_fatal());
        let stopped = Error::with_source(Kind::Stopped, refused.clone());
        assert!(stopped.is_stopped() && stopped.is_fatal() && stopped.is_refused());
        assert!(Error::new(Kind::Cancelled, None).is_cancelled());
        assert!(Error::new(Kind::Exhausted, None).is_exhausted());
    }

    #[test]
    fn source_chain_is_kept() {
        let err = Error::with_source(Kind::Connect, io::Error::new(io::ErrorKind::ConnectionRefused, "nope"));
        assert_eq!(err.to_string(), "connect failed");
        assert_eq!(err.source().unwrap().to_string(), "nope");
    }
}
