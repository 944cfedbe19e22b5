//! Connection options.

use std::sync::Arc;
use std::time::Duration;

use diam_proto::check::MandatoryAvps;
use diam_proto::peer::PeerConfig;
use diam_proto::psm::ReconnectPolicy;
use diam_proto::Dictionary;

use crate::Error;

/// The longest timeout accepted (longer ones are configuration mistakes,
/// and deadlines must stay representable).
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 86_400);

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
    /// Maximum incoming requests handled concurrently per peer; beyond it
    /// requests get 3004 DIAMETER_TOO_BUSY. An agent applies it to the
    /// requests each peer has being forwarded too, so one peer cannot take
    /// the whole forwarding table. Default 1024.
    pub max_concurrent_handlers: usize,
    /// Maximum accepted message size. Default 1 MiB
    /// ([`diam_proto::DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: usize,
    /// How long a local close waits for outstanding answers before sending
    /// DPR. Default 2 s.
    pub drain_timeout: Duration,
    /// TCP_NODELAY. Default true (Diameter is request/answer traffic).
    pub nodelay: bool,
    /// Once a message's first bytes have arrived, the rest must follow
    /// within this, or the connection is closed (the clock restarts with
    /// each new message, and waits while we do not read because the peer
    /// is slow to take our answers) (a peer drip-feeding a message
    /// would otherwise hold its buffer until the watchdog gives up, about
    /// 2 minutes). Default 10 s: a 1 MiB message needs under 1 Mbit/s.
    pub message_timeout: Duration,
    /// Pause between the CEA and our TLS ClientHello when we start
    /// in-band TLS as the client. Default 50 ms: Erlang/OTP 25 mishandles
    /// a ClientHello that arrives the instant after it sent its CEA (its
    /// upgraded socket is left passive and the connection stalls); 10 ms
    /// was enough on an idle machine, not on a loaded one (1 in 3), and a
    /// connection is set up once.
    pub inband_tls_pause: Duration,
    /// Protocol timers at least 6 s away (the shortest Tw RFC 3539 allows:
    /// the watchdog's Tw and DWA timeout, long reconnect delays) fire on a
    /// process-wide grid of this step, rounded up, so that the watchdogs of
    /// many idle connections wake the process twice a second together
    /// rather than each on its own (10,000 peers at Tw 30 s would otherwise
    /// wake it over 300 times a second). CER timeouts, early reconnects and
    /// request, write and message deadlines are never rounded. Default
    /// 500 ms (inside the watchdog's ±2 s jitter, RFC 3539 §3.4.1); zero
    /// turns it off.
    pub timer_coalescing: Duration,
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
            message_timeout: Duration::from_secs(10),
            inband_tls_pause: Duration::from_millis(50),
            timer_coalescing: Duration::from_millis(500),
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
            ("message_timeout", self.message_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(Error::InvalidConfig(format!("{name} must be positive and at most 30 days")));
            }
        }
        if self.timer_coalescing > Duration::from_secs(1) {
            return Err(Error::InvalidConfig("timer_coalescing must be at most 1 s".into()));
        }
        if self.inband_tls_pause > Duration::from_secs(1) {
            return Err(Error::InvalidConfig("inband_tls_pause must be at most 1 s".into()));
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

/// How a peer is reconnected. Every field has a documented default.
///
/// One schedule per peer: the delay grows on every failure (a refused
/// dial, a CER timeout, a CEA other than 2001, a connection closed soon
/// after its CEA) and starts over only after a connection stayed open for
/// [`stable_after`](Self::stable_after).
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectConfig {
    /// Reconnect at all. Default true.
    pub enabled: bool,
    /// First delay. Default 1 s.
    pub initial: Duration,
    /// Longest delay. Default 60 s.
    pub max: Duration,
    /// Growth factor per attempt (at least 1). Default 1.5.
    pub factor: f64,
    /// Attempts before giving up; `None` retries forever. Default `None`
    /// for a node's configured peers.
    pub max_attempts: Option<u32>,
    /// How long a connection must stay open for the schedule to start
    /// over. Default 10 s.
    pub stable_after: Duration,
    /// Minimum delay after a DPR with BUSY or DO_NOT_WANT_TO_TALK_TO_YOU.
    /// Default 60 s (RFC 6733 §5.4.3: the node SHOULD NOT reconnect).
    pub busy_backoff: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            enabled: true,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 1.5,
            max_attempts: None,
            stable_after: Duration::from_secs(10),
            busy_backoff: Duration::from_secs(60),
        }
    }
}

impl ReconnectConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if self.initial.is_zero() || self.initial > self.max || self.max > MAX_TIMEOUT {
            return bad("reconnect: initial must be positive and at most max (at most 30 days)");
        }
        if !(self.factor >= 1.0 && self.factor.is_finite()) {
            return bad("reconnect: factor must be a finite number of at least 1");
        }
        if self.busy_backoff > MAX_TIMEOUT || self.stable_after > MAX_TIMEOUT {
            return bad("reconnect: busy_backoff and stable_after must be at most 30 days");
        }
        Ok(())
    }

    /// The machine's policy: exponential with equal jitter, diam-link's
    /// backoff strategies; `None` when reconnecting is off.
    pub(crate) fn policy(&self, seed: u64) -> Option<Box<dyn ReconnectPolicy>> {
        use diam_link::backoff::{BackoffExt, Exponential, Jitter, SplitMix64};
        if !self.enabled {
            return Some(Box::new(Never));
        }
        let exp = Exponential::new(self.initial, self.max, self.factor).ok()?;
        let jittered = exp.with_jitter(Jitter::Equal, SplitMix64::new(seed));
        Some(match self.max_attempts {
            Some(n) => Box::new(Backoff(jittered.max_attempts(n).reset_after(self.stable_after))),
            None => Box::new(Backoff(jittered.reset_after(self.stable_after))),
        })
    }
}

/// A diam-link backoff strategy as the per-peer machine's reconnect policy.
struct Backoff<B>(B);

impl<B: diam_link::backoff::Backoff + Send> ReconnectPolicy for Backoff<B> {
    fn next_delay(&mut self) -> Option<Duration> {
        self.0.next_delay()
    }
    fn connection_ended(&mut self, uptime: Duration) {
        self.0.session_ended(uptime);
    }
}

/// Reconnecting off: the first failure is final.
struct Never;

impl ReconnectPolicy for Never {
    fn next_delay(&mut self) -> Option<Duration> {
        None
    }
    fn connection_ended(&mut self, _: Duration) {}
}

/// A node's settings. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identity, capabilities, timers and bounds of every connection.
    pub connection: ConnectionConfig,
    /// How configured peers are reconnected.
    pub reconnect: ReconnectConfig,
    /// Most peers in the table (configured, and accepted from inbound CERs).
    /// A CER from a new peer beyond it gets 3004 DIAMETER_TOO_BUSY.
    /// Default 1024.
    pub max_peers: usize,
    /// Most inbound connections waiting for their CER at once; more are
    /// closed at accept. Default 256.
    pub max_pending_handshakes: usize,
    /// Most inbound connections open at once (waiting for their CER, or
    /// serving a peer); more are closed at accept. Default 1024: below a
    /// typical 4096-descriptor limit, so a flood cannot use up the
    /// descriptors that outbound connections and good peers need.
    pub max_connections: usize,
    /// Most inbound connections open at once from one source address.
    /// Default 64.
    pub max_connections_per_source: usize,
    /// Most bytes all connections together may hold for messages not yet
    /// complete (a header has arrived, the rest has not). A connection
    /// that would go beyond it is closed. Default 256 MiB: 256 peers each
    /// sending a maximum-size message at once.
    pub max_buffered_bytes: usize,
    /// Whether unknown AVPs with the M bit reject a request (5001
    /// DIAMETER_AVP_UNSUPPORTED, RFC 6733 §4.1). Default enforced; a node
    /// advertising Relay never enforces it (a relay forwards what it does
    /// not know).
    pub mandatory_avps: MandatoryAvps,
    /// The dictionary requests are checked against; `None` uses
    /// [`Dictionary::base`] (base protocol, Credit-Control, common 3GPP).
    pub dictionary: Option<Arc<Dictionary>>,
    /// Agents: most requests being forwarded at once, over all peers (the
    /// forwarding table). A request beyond it gets 3004
    /// DIAMETER_TOO_BUSY. Each entry lives until its answer or
    /// `connection.request_timeout`. Default 65,536.
    pub max_forwards: usize,
    /// Agents: most bytes the requests in the forwarding table hold
    /// together (each is kept until answered, for retransmission); a
    /// request beyond it gets 3004. Default 128 MiB.
    pub max_forward_bytes: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            connection: ConnectionConfig::default(),
            reconnect: ReconnectConfig::default(),
            max_peers: 1024,
            max_pending_handshakes: 256,
            max_connections: 1024,
            max_connections_per_source: 64,
            max_buffered_bytes: 256 << 20,
            mandatory_avps: MandatoryAvps::Enforce,
            dictionary: None,
            max_forwards: 65_536,
            max_forward_bytes: 128 << 20,
        }
    }
}

impl NodeConfig {
    /// Defaults with the given identity.
    pub fn new(origin_host: impl Into<String>, origin_realm: impl Into<String>) -> Self {
        NodeConfig { connection: ConnectionConfig::new(origin_host, origin_realm), ..NodeConfig::default() }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), Error> {
        self.connection.validate()?;
        self.reconnect.validate()?;
        if self.max_peers == 0 || self.max_peers > 1 << 20 {
            return Err(Error::InvalidConfig("max_peers must be between 1 and 1048576".into()));
        }
        if self.max_connections == 0 || self.max_connections_per_source == 0 {
            return Err(Error::InvalidConfig(
                "max_connections and max_connections_per_source must be at least 1".into(),
            ));
        }
        if self.max_buffered_bytes < self.connection.max_message_size {
            return Err(Error::InvalidConfig(
                "max_buffered_bytes must hold at least one max_message_size message".into(),
            ));
        }
        if self.max_forward_bytes < self.connection.max_message_size {
            return Err(Error::InvalidConfig(
                "max_forward_bytes must hold at least one max_message_size message".into(),
            ));
        }
        if self.max_forwards == 0 || self.max_forwards > 1 << 24 {
            return Err(Error::InvalidConfig("max_forwards must be between 1 and 16777216".into()));
        }
        if self.max_pending_handshakes == 0 {
            return Err(Error::InvalidConfig("max_pending_handshakes must be at least 1".into()));
        }
        Ok(())
    }
}
