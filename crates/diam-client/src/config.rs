//! Connection options.

use std::time::Duration;

use diam_proto::peer::PeerConfig;

use crate::Error;

/// The longest timeout accepted (longer ones are configuration mistakes,
/// and deadlines must stay representable).
const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

/// Options for one peer connection (client or server side).
///
/// Every field has a documented default; [`ConnectionConfig::validate`]
/// checks the whole set once, at construction.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Identity, capabilities and protocol timers (CER timeout, watchdog).
    pub peer: PeerConfig,
    /// TCP connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Default per-request timeout (from submission to answer). Default 5 s.
    pub request_timeout: Duration,
    /// A write that makes no progress for this long fails the connection
    /// (a peer that stops reading must not block us forever). Default 5 s.
    pub write_timeout: Duration,
    /// Maximum requests awaiting an answer; `send` waits for room,
    /// `try_send` fails with `Overloaded`. Default 4096.
    pub max_pending: usize,
    /// Maximum incoming requests handled concurrently; beyond it requests
    /// get 3004 DIAMETER_TOO_BUSY. Default 1024.
    pub max_concurrent_handlers: usize,
    /// Maximum accepted message size. Default 1 MiB
    /// ([`diam_proto::DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: usize,
    /// How long a local close waits for outstanding answers before sending
    /// DPR. Default 2 s.
    pub drain_timeout: Duration,
    /// TCP_NODELAY. Default true (Diameter is request/answer traffic).
    pub nodelay: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            peer: PeerConfig::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_pending: 4096,
            max_concurrent_handlers: 1024,
            max_message_size: diam_proto::DEFAULT_MAX_MESSAGE_SIZE,
            drain_timeout: Duration::from_secs(2),
            nodelay: true,
        }
    }
}

impl ConnectionConfig {
    /// A configuration with the given identity and defaults elsewhere.
    pub fn new(origin_host: impl Into<String>, origin_realm: impl Into<String>) -> Self {
        let mut c = ConnectionConfig::default();
        c.peer.origin_host = origin_host.into();
        c.peer.origin_realm = origin_realm.into();
        c
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), Error> {
        self.peer.validate().map_err(Error::InvalidConfig)?;
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("write_timeout", self.write_timeout),
            ("drain_timeout", self.drain_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(Error::InvalidConfig(format!("{name} must be positive and at most 30 days")));
            }
        }
        if self.max_pending == 0 || self.max_pending > (1 << 24) {
            return Err(Error::InvalidConfig("max_pending must be between 1 and 16777216".into()));
        }
        if self.max_concurrent_handlers == 0 {
            return Err(Error::InvalidConfig("max_concurrent_handlers must be at least 1".into()));
        }
        if self.max_message_size < diam_proto::HEADER_LEN || self.max_message_size > diam_proto::MAX_LENGTH_FIELD {
            return Err(Error::InvalidConfig("max_message_size must be between 20 bytes and 16 MiB".into()));
        }
        Ok(())
    }
}
