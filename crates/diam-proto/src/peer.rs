//! One Diameter peer connection, sans-IO: capabilities exchange (CER/CEA),
//! the RFC 3539 watchdog (DWR/DWA), disconnection (DPR/DPA), and the base
//! protocol answers a node gives on its own (RFC 6733 §5).
//!
//! The machine follows the quinn-proto shape: the driver feeds it with
//! `handle_*(…, now)` and drains `poll_transmit`, `poll_event` and
//! `poll_timeout`. It owns no socket and reads no clock.
//!
//! # States
//!
//! The user-visible [`PeerState`]s map onto RFC 6733 §5.6 as follows:
//!
//! | `PeerState` | RFC 6733 §5.6 |
//! |---|---|
//! | `Disconnected` | Closed (before any connection attempt) |
//! | `Connecting` | Wait-Conn-Ack (initiator), or waiting for the CER (responder) |
//! | `CerSent` | Wait-I-CEA |
//! | `Open` | I-Open / R-Open with the watchdog OKAY |
//! | `DwrSent` | I-Open / R-Open with a DWR outstanding (watchdog OKAY or SUSPECT) |
//! | `Closing` | Closing (DPR sent, waiting for the DPA) |
//! | `Failed` | Closed after an error (handshake, transport, watchdog DOWN) |
//! | `Reconnecting` | Closed, with a reconnection scheduled (set by the driver) |
//! | `Closed` | Closed after a clean DPR/DPA or local shutdown |
//!
//! Election (§5.6.4) is not needed: a connection is either initiated or
//! accepted, and the driver keeps one per peer.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::avp::AvpIter;
use crate::codes::{apps, avps, commands, disconnect_cause, result_codes};
use crate::message::{Message, MessageBuilder};
use crate::types::{AvpType, Unsigned32};
use crate::watchdog::{Watchdog, WatchdogConfig, WatchdogEvent, WatchdogState};

/// A Vendor-Specific-Application-Id entry (RFC 6733 §6.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VendorApp {
    /// Vendor-Id.
    pub vendor_id: u32,
    /// The application, with whether it is an Auth (true) or Acct one.
    pub application_id: u32,
    /// Auth-Application-Id (true) or Acct-Application-Id (false).
    pub auth: bool,
}

/// Local identity and capabilities advertised in CER/CEA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Origin-Host (an FQDN). Required.
    pub origin_host: String,
    /// Origin-Realm. Required.
    pub origin_realm: String,
    /// Host-IP-Address values; empty means "the socket's local address",
    /// which the driver passes to [`PeerConnection::handle_connected`].
    pub host_ip_addresses: Vec<IpAddr>,
    /// Vendor-Id (0 when the product has no IANA enterprise number).
    pub vendor_id: u32,
    /// Product-Name.
    pub product_name: String,
    /// Firmware-Revision, omitted when `None`.
    pub firmware_revision: Option<u32>,
    /// Origin-State-Id: changes each time the node restarts (RFC 6733
    /// §8.16). The driver sets it from the process start time.
    pub origin_state_id: u32,
    /// Auth-Application-Id values. `apps::RELAY` means "any application".
    pub auth_application_ids: Vec<u32>,
    /// Acct-Application-Id values.
    pub acct_application_ids: Vec<u32>,
    /// Vendor-Specific-Application-Id values.
    pub vendor_specific_application_ids: Vec<VendorApp>,
    /// Supported-Vendor-Id values.
    pub supported_vendor_ids: Vec<u32>,
    /// How long the initiator waits for the CEA, and the responder for the
    /// CER. Default 5 s.
    pub cer_timeout: Duration,
    /// How long to wait for the DPA after sending DPR. Default 2 s.
    pub dpa_timeout: Duration,
    /// Watchdog settings.
    pub watchdog: WatchdogConfig,
    /// Require in-band TLS on connections that are not TLS already: the
    /// CER offers only Inband-Security-Id TLS (1), a CER must offer it,
    /// and TLS starts on the socket right after the CEA (RFC 3588 §6.10;
    /// RFC 6733 §13 keeps it for compatibility). Default `false`
    /// (NO_INBAND_SECURITY; TLS-first connections need nothing here).
    pub inband_tls: bool,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            origin_host: String::new(),
            origin_realm: String::new(),
            host_ip_addresses: Vec::new(),
            vendor_id: 0,
            product_name: concat!("diam ", env!("CARGO_PKG_VERSION")).to_string(),
            firmware_revision: None,
            origin_state_id: 0,
            auth_application_ids: Vec::new(),
            acct_application_ids: Vec::new(),
            vendor_specific_application_ids: Vec::new(),
            supported_vendor_ids: Vec::new(),
            cer_timeout: Duration::from_secs(5),
            dpa_timeout: Duration::from_secs(2),
            watchdog: WatchdogConfig::default(),
            inband_tls: false,
        }
    }
}

impl PeerConfig {
    /// Checks required fields and timer values.
    pub fn validate(&self) -> Result<(), String> {
        if !is_identity(&self.origin_host) {
            return Err(format!("origin host {:?} is not a valid DiameterIdentity", self.origin_host));
        }
        if !is_identity(&self.origin_realm) {
            return Err(format!("origin realm {:?} is not a valid DiameterIdentity", self.origin_realm));
        }
        if self.cer_timeout.is_zero() || self.dpa_timeout.is_zero() {
            return Err("CER and DPA timeouts must be positive".into());
        }
        self.watchdog.validate().map_err(str::to_string)
    }

    /// Every application advertised (auth, acct and vendor-specific).
    pub fn applications(&self) -> impl Iterator<Item = u32> + '_ {
        all_applications(&self.auth_application_ids, &self.acct_application_ids, &self.vendor_specific_application_ids)
    }
}

fn all_applications<'a>(auth: &'a [u32], acct: &'a [u32], vendor: &'a [VendorApp]) -> impl Iterator<Item = u32> + 'a {
    auth.iter().chain(acct).copied().chain(vendor.iter().map(|v| v.application_id))
}

/// Whether `s` is a plausible DiameterIdentity: a non-empty FQDN of
/// letters, digits, hyphens and dots (RFC 6733 §4.3.1).
pub fn is_identity(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// What the remote peer advertised in its CER or CEA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Origin-Host.
    pub origin_host: String,
    /// Origin-Realm.
    pub origin_realm: String,
    /// Host-IP-Address values (IPv4/IPv6 only).
    pub host_ip_addresses: Vec<IpAddr>,
    /// Vendor-Id.
    pub vendor_id: u32,
    /// Product-Name.
    pub product_name: String,
    /// Origin-State-Id, when sent.
    pub origin_state_id: Option<u32>,
    /// Firmware-Revision, when sent.
    pub firmware_revision: Option<u32>,
    /// Auth-Application-Id values.
    pub auth_application_ids: Vec<u32>,
    /// Acct-Application-Id values.
    pub acct_application_ids: Vec<u32>,
    /// Vendor-Specific-Application-Id values.
    pub vendor_specific_application_ids: Vec<VendorApp>,
    /// Supported-Vendor-Id values.
    pub supported_vendor_ids: Vec<u32>,
}

impl PeerInfo {
    /// Reads the capabilities AVPs of a CER or CEA.
    pub fn from_message(m: &Message) -> Result<PeerInfo, crate::DecodeError> {
        let mut info = PeerInfo::default();
        for avp in m.avps() {
            let avp = avp?;
            if avp.vendor_id().is_some() {
                continue;
            }
            match avp.code() {
                264 => info.origin_host = avp.value::<crate::types::DiameterIdentity>()?.to_string(),
                296 => info.origin_realm = avp.value::<crate::types::DiameterIdentity>()?.to_string(),
                257 => {
                    if let Some(ip) = avp.value::<crate::types::Address>()?.ip() {
                        info.host_ip_addresses.push(ip);
                    }
                }
                266 => info.vendor_id = avp.value::<Unsigned32>()?,
                269 => info.product_name = avp.value::<crate::types::Utf8String>()?.to_string(),
                278 => info.origin_state_id = Some(avp.value::<Unsigned32>()?),
                267 => info.firmware_revision = Some(avp.value::<Unsigned32>()?),
                258 => info.auth_application_ids.push(avp.value::<Unsigned32>()?),
                259 => info.acct_application_ids.push(avp.value::<Unsigned32>()?),
                265 => info.supported_vendor_ids.push(avp.value::<Unsigned32>()?),
                260 => info.vendor_specific_application_ids.extend(vendor_apps(avp.group())?),
                _ => {}
            }
        }
        Ok(info)
    }

    /// Every application the peer advertised.
    pub fn applications(&self) -> impl Iterator<Item = u32> + '_ {
        all_applications(&self.auth_application_ids, &self.acct_application_ids, &self.vendor_specific_application_ids)
    }
}

fn vendor_apps(group: AvpIter<'_>) -> Result<Vec<VendorApp>, crate::DecodeError> {
    let mut vendor_id = 0;
    let mut found = Vec::new();
    for avp in group {
        let avp = avp?;
        match avp.code() {
            266 => vendor_id = avp.value::<Unsigned32>()?,
            258 => found.push((avp.value::<Unsigned32>()?, true)),
            259 => found.push((avp.value::<Unsigned32>()?, false)),
            _ => {}
        }
    }
    Ok(found.into_iter().map(|(application_id, auth)| VendorApp { vendor_id, application_id, auth }).collect())
}

/// The applications two advertisements have in common. Relay on either
/// side matches everything the other side advertised (or Relay itself).
pub fn common_applications(local: &PeerConfig, remote: &PeerInfo) -> Vec<u32> {
    let local_relay = local.applications().any(|a| a == apps::RELAY);
    let remote_relay = remote.applications().any(|a| a == apps::RELAY);
    let mut common: Vec<u32> = if local_relay {
        remote.applications().collect()
    } else if remote_relay {
        local.applications().collect()
    } else {
        local.applications().filter(|a| remote.applications().any(|r| r == *a)).collect()
    };
    common.sort_unstable();
    common.dedup();
    common
}

/// Connection states visible to users (see the module docs for the RFC
/// 6733 §5.6 mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Not connected, no attempt made.
    Disconnected,
    /// Transport being set up, or (responder) waiting for the CER.
    Connecting,
    /// CER sent, waiting for the CEA.
    CerSent,
    /// Open, watchdog OKAY.
    Open,
    /// Open with a DWR outstanding.
    DwrSent,
    /// DPR sent, waiting for the DPA.
    Closing,
    /// Closed by an error.
    Failed,
    /// Closed; the driver will reconnect.
    Reconnecting,
    /// Closed cleanly.
    Closed,
}

impl PeerState {
    /// The state's name as the CLI and events print it.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Disconnected => "disconnected",
            PeerState::Connecting => "connecting",
            PeerState::CerSent => "cer_sent",
            PeerState::Open => "open",
            PeerState::DwrSent => "dwr_sent",
            PeerState::Closing => "closing",
            PeerState::Failed => "failed",
            PeerState::Reconnecting => "reconnecting",
            PeerState::Closed => "closed",
        }
    }
}

/// Which side opened the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We connected and send the CER.
    Initiator,
    /// We accepted and wait for the CER.
    Responder,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer answered the CER with a Result-Code other than 2001, or we
    /// rejected its CER (5010 no common application, …).
    HandshakeFailed {
        /// The Result-Code.
        result_code: u32,
        /// Error-Message, when sent.
        message: Option<String>,
    },
    /// No CEA (initiator) or CER (responder) within the CER timeout.
    HandshakeTimeout,
    /// The watchdog took the connection DOWN.
    WatchdogDown {
        /// Consecutive unanswered DWRs.
        unanswered: u32,
    },
    /// The peer sent DPR.
    PeerDisconnected {
        /// Its Disconnect-Cause (RFC 6733 §5.4.3), if valid.
        cause: Option<i32>,
    },
    /// We sent DPR (and got the DPA, or gave up waiting).
    LocalDisconnect {
        /// Our Disconnect-Cause.
        cause: i32,
        /// The DPA's Result-Code; `None` when no DPA came (timeout, or the
        /// peer closed first) or we closed before the connection opened.
        dpa_result_code: Option<u32>,
    },
    /// The transport closed or failed.
    TransportClosed,
    /// The peer broke the protocol (e.g. traffic before the CER, or a
    /// corrupt frame).
    ProtocolError(String),
    /// A write made no progress within the write timeout (the peer stopped
    /// reading).
    WriteTimeout,
    /// The transport could not be opened (refused, unreachable, timed out,
    /// the name did not resolve).
    DialFailed {
        /// What the transport layer said.
        message: String,
    },
    /// Election (RFC 6733 §5.6.4): this connection was closed because the
    /// other connection to the same peer was kept.
    Election,
    /// The peer's Origin-Host is not the identity configured for it.
    IdentityMismatch {
        /// The configured identity.
        expected: String,
        /// What the peer sent.
        received: String,
    },
    /// This connection was replaced by a newer one to the same peer
    /// (lifetime rotation) and closed after draining.
    Replaced,
    /// TLS failed or was not agreed: a failed handshake, or a peer that
    /// did not take up the in-band TLS we require (RFC 6733 §13, RFC 3588
    /// §6.10).
    Tls {
        /// What went wrong.
        message: String,
    },
    /// The peer's certificate does not name its DiameterIdentity (no DNS
    /// subjectAltName matches the Origin-Host, RFC 6733 §13).
    CertificateMismatch {
        /// The Origin-Host the certificate should name.
        identity: String,
    },
}

impl CloseReason {
    /// Whether this ends the connection cleanly (DPR/DPA) rather than by
    /// failure.
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            CloseReason::LocalDisconnect { .. }
                | CloseReason::PeerDisconnected { .. }
                | CloseReason::Election
                | CloseReason::Replaced
        )
    }

    /// A short stable name of the reason, for metrics and JSON:
    /// `handshake_failed`, `handshake_timeout`, `watchdog`, `peer_dpr`,
    /// `local_dpr`, `transport_closed`, `protocol_error`, `write_timeout`,
    /// `dial_failed`, `election`, `identity_mismatch`, `replaced`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CloseReason::HandshakeFailed { .. } => "handshake_failed",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::WatchdogDown { .. } => "watchdog",
            CloseReason::PeerDisconnected { .. } => "peer_dpr",
            CloseReason::LocalDisconnect { .. } => "local_dpr",
            CloseReason::TransportClosed => "transport_closed",
            CloseReason::ProtocolError(_) => "protocol_error",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::DialFailed { .. } => "dial_failed",
            CloseReason::Election => "election",
            CloseReason::IdentityMismatch { .. } => "identity_mismatch",
            CloseReason::Replaced => "replaced",
            CloseReason::Tls { .. } => "tls",
            CloseReason::CertificateMismatch { .. } => "certificate_mismatch",
        }
    }

    /// Whether the peer asked us not to come back soon: DPR with BUSY or
    /// DO_NOT_WANT_TO_TALK_TO_YOU. Reconnect pacing should back off longer.
    pub fn wants_long_backoff(&self) -> bool {
        matches!(
            self,
            CloseReason::PeerDisconnected {
                cause: Some(disconnect_cause::BUSY | disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU)
            }
        )
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::HandshakeFailed { result_code, message: Some(m) } => {
                write!(f, "capabilities exchange failed with Result-Code {result_code} ({})", crate::Escaped(m))
            }
            CloseReason::HandshakeFailed { result_code, message: None } => {
                write!(f, "capabilities exchange failed with Result-Code {result_code}")
            }
            CloseReason::HandshakeTimeout => f.write_str("capabilities exchange timed out"),
            CloseReason::WatchdogDown { unanswered } => {
                write!(f, "watchdog: {unanswered} consecutive DWRs unanswered")
            }
            CloseReason::PeerDisconnected { cause } => match cause.map(cause_name) {
                Some(name) => write!(f, "peer sent DPR ({name})"),
                None => f.write_str("peer sent DPR"),
            },
            CloseReason::LocalDisconnect { cause, .. } => write!(f, "local disconnect ({})", cause_name(*cause)),
            CloseReason::TransportClosed => f.write_str("transport closed"),
            CloseReason::ProtocolError(m) => write!(f, "protocol error: {}", crate::Escaped(m)),
            CloseReason::WriteTimeout => f.write_str("write timed out (peer not reading)"),
            CloseReason::DialFailed { message } => write!(f, "connecting failed: {message}"),
            CloseReason::Election => f.write_str("closed by election (the other connection to the peer was kept)"),
            CloseReason::IdentityMismatch { expected, received } => {
                write!(f, "the peer identifies as {} instead of {expected}", crate::Escaped(received))
            }
            CloseReason::Replaced => f.write_str("replaced by a newer connection"),
            CloseReason::Tls { message } => write!(f, "TLS: {}", crate::Escaped(message)),
            CloseReason::CertificateMismatch { identity } => {
                write!(f, "the peer's certificate does not name {}", crate::Escaped(identity))
            }
        }
    }
}

impl std::error::Error for CloseReason {}

/// The RFC 6733 name of a Disconnect-Cause value.
pub fn cause_name(cause: i32) -> &'static str {
    match cause {
        disconnect_cause::REBOOTING => "REBOOTING",
        disconnect_cause::BUSY => "BUSY",
        disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU => "DO_NOT_WANT_TO_TALK_TO_YOU",
        _ => "unknown cause",
    }
}

/// What the connection reports to its driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PeerEvent {
    /// Capabilities were exchanged; the connection is open.
    Opened {
        /// What the peer advertised.
        peer: Box<PeerInfo>,
        /// Applications in common.
        applications: Vec<u32>,
    },
    /// An application request for the handler. Answer it with
    /// [`PeerConnection::send_answer`] (or any transmit path).
    Request(Message),
    /// An answer to one of the driver's application requests.
    Answer(Message),
    /// The watchdog changed state.
    Watchdog {
        /// Previous state.
        from: WatchdogState,
        /// New state.
        to: WatchdogState,
    },
    /// The connection is over. Flush `poll_transmit` first (it may hold a
    /// DPA or CEA), then close the transport.
    Closed(CloseReason),
}

/// Hop-by-Hop and End-to-End identifier allocation (RFC 6733 §3).
///
/// End-to-End: the high 12 bits are the low 12 bits of the start time,
/// the low 20 bits a counter, so ids stay unique across restarts for a
/// while. Hop-by-Hop: a counter starting at a random value, unique per
/// connection.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    hop_by_hop: u32,
    e2e_high: u32,
    e2e_counter: u32,
}

impl IdGenerator {
    /// A generator for a node started at `unix_secs`, with `random` to pick
    /// the first Hop-by-Hop and End-to-End counter values.
    pub fn new(unix_secs: u64, random: u64) -> Self {
        IdGenerator {
            hop_by_hop: random as u32,
            e2e_high: ((unix_secs as u32) & 0xfff) << 20,
            e2e_counter: ((random >> 32) as u32) & 0xf_ffff,
        }
    }
    /// The next Hop-by-Hop identifier.
    pub fn next_hop_by_hop(&mut self) -> u32 {
        self.hop_by_hop = self.hop_by_hop.wrapping_add(1);
        self.hop_by_hop
    }
    /// The next End-to-End identifier.
    pub fn next_end_to_end(&mut self) -> u32 {
        self.e2e_counter = (self.e2e_counter + 1) & 0xf_ffff;
        self.e2e_high | self.e2e_counter
    }
}

/// One peer connection's protocol state.
#[derive(Debug)]
pub struct PeerConnection {
    role: Role,
    config: PeerConfig,
    state: PeerState,
    watchdog: Watchdog,
    ids: IdGenerator,
    /// CER/CEA or DPA deadline.
    deadline: Option<Instant>,
    /// Hop-by-Hop of our outstanding CER, DWR or DPR.
    cer_hbh: Option<u32>,
    dwr_hbh: Option<u32>,
    dpr: Option<(u32, i32)>,
    local_ip: Option<IpAddr>,
    peer: Option<PeerInfo>,
    applications: Vec<u32>,
    transmit: VecDeque<Message>,
    events: VecDeque<PeerEvent>,
}

impl PeerConnection {
    /// A connection in state `Disconnected`. `seed` drives the watchdog
    /// jitter; `ids` allocates message identifiers.
    ///
    /// # Panics
    /// If `config` fails [`PeerConfig::validate`].
    pub fn new(role: Role, config: PeerConfig, ids: IdGenerator, seed: u64) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid peer config: {e}");
        }
        let watchdog = Watchdog::new(config.watchdog.clone(), seed);
        PeerConnection {
            role,
            config,
            state: PeerState::Disconnected,
            watchdog,
            ids,
            deadline: None,
            cer_hbh: None,
            dwr_hbh: None,
            dpr: None,
            local_ip: None,
            peer: None,
            applications: Vec::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The user-visible state.
    pub fn state(&self) -> PeerState {
        match self.state {
            PeerState::Open if self.watchdog.dwr_pending() => PeerState::DwrSent,
            s => s,
        }
    }

    /// The watchdog state.
    pub fn watchdog_state(&self) -> WatchdogState {
        self.watchdog.state()
    }

    /// Whether application requests may be sent now: open, and the
    /// watchdog OKAY (not SUSPECT or REOPEN).
    pub fn can_send(&self) -> bool {
        self.state == PeerState::Open && self.watchdog.state().can_send()
    }

    /// What the peer advertised, once open.
    pub fn peer_info(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// Applications in common, once open.
    pub fn applications(&self) -> &[u32] {
        &self.applications
    }

    /// The local configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Identifier allocation, for the driver's application requests.
    pub fn ids(&mut self) -> &mut IdGenerator {
        &mut self.ids
    }

    /// The driver starts connecting the transport.
    pub fn handle_connecting(&mut self) {
        self.state = PeerState::Connecting;
    }

    /// The transport is connected; `local_ip` is the socket's local
    /// address (advertised as Host-IP-Address when the config has none).
    /// The initiator sends its CER; the responder starts waiting for one.
    pub fn handle_connected(&mut self, local_ip: IpAddr, now: Instant) {
        self.local_ip = Some(local_ip);
        self.deadline = Some(now + self.config.cer_timeout);
        match self.role {
            Role::Initiator => {
                let hbh = self.ids.next_hop_by_hop();
                let e2e = self.ids.next_end_to_end();
                let cer = self
                    .capabilities(Message::request(apps::COMMON, commands::CAPABILITIES_EXCHANGE))
                    .hop_by_hop(hbh)
                    .end_to_end(e2e)
                    .build();
                self.cer_hbh = Some(hbh);
                self.transmit.push_back(cer);
                self.state = PeerState::CerSent;
            }
            Role::Responder => self.state = PeerState::Connecting,
        }
    }

    /// Writes Origin-Host, Origin-Realm, Host-IP-Address, Vendor-Id,
    /// Product-Name, Origin-State-Id, the applications, Inband-Security-Id
    /// and Firmware-Revision (CER/CEA body, RFC 6733 §5.3.1).
    fn capabilities(&self, b: MessageBuilder) -> MessageBuilder {
        let c = &self.config;
        let mut b = b.avp(avps::ORIGIN_HOST, c.origin_host.as_str()).avp(avps::ORIGIN_REALM, c.origin_realm.as_str());
        if c.host_ip_addresses.is_empty() {
            if let Some(ip) = self.local_ip {
                b = b.avp(avps::HOST_IP_ADDRESS, ip);
            }
        }
        for ip in &c.host_ip_addresses {
            b = b.avp(avps::HOST_IP_ADDRESS, *ip);
        }
        b = b
            .avp(avps::VENDOR_ID, c.vendor_id)
            .avp(avps::PRODUCT_NAME, c.product_name.as_str())
            .avp(avps::ORIGIN_STATE_ID, c.origin_state_id);
        for v in &c.supported_vendor_ids {
            b = b.avp(avps::SUPPORTED_VENDOR_ID, *v);
        }
        for a in &c.auth_application_ids {
            b = b.avp(avps::AUTH_APPLICATION_ID, *a);
        }
        b = b.avp(avps::INBAND_SECURITY_ID, 0u32);
        for a in &c.acct_application_ids {
            b = b.avp(avps::ACCT_APPLICATION_ID, *a);
        }
        for v in &c.vendor_specific_application_ids {
            b = b.group(avps::VENDOR_SPECIFIC_APPLICATION_ID, |g| {
                g.avp(avps::VENDOR_ID, v.vendor_id);
                if v.auth {
                    g.avp(avps::AUTH_APPLICATION_ID, v.application_id);
                } else {
                    g.avp(avps::ACCT_APPLICATION_ID, v.application_id);
                }
            });
        }
        if let Some(fw) = c.firmware_revision {
            b = b.avp(avps::FIRMWARE_REVISION, fw);
        }
        b
    }

    /// An answer to `req` with our Origin-Host/Realm and `result_code`.
    fn answer(&self, req: &Message, result_code: u32) -> MessageBuilder {
        self.answer_head(req, result_code)
            .avp(avps::ORIGIN_HOST, self.config.origin_host.as_str())
            .avp(avps::ORIGIN_REALM, self.config.origin_realm.as_str())
    }

    fn close(&mut self, reason: CloseReason) {
        if matches!(self.state, PeerState::Failed | PeerState::Closed) {
            return;
        }
        self.state = if reason.is_clean() { PeerState::Closed } else { PeerState::Failed };
        self.deadline = None;
        if reason.is_clean() {
            // A clean DPR/DPA close needs no REOPEN probation next time.
            self.watchdog.reset();
        } else {
            self.watchdog.handle_closed();
            self.drain_watchdog();
        }
        self.events.push_back(PeerEvent::Closed(reason));
    }

    fn open(&mut self, info: PeerInfo, applications: Vec<u32>, now: Instant) {
        self.state = PeerState::Open;
        self.deadline = None;
        self.applications = applications.clone();
        self.peer = Some(info.clone());
        self.watchdog.handle_open(now);
        self.events.push_back(PeerEvent::Opened { peer: Box::new(info), applications });
        self.drain_watchdog();
    }

    /// A message arrived from the peer.
    pub fn handle_message(&mut self, msg: Message, now: Instant) {
        if matches!(self.state, PeerState::Failed | PeerState::Closed | PeerState::Disconnected) {
            return;
        }
        let is_request = msg.is_request();
        let base = msg.application_id() == apps::COMMON;
        let code = msg.command_code();
        let is_dwa = !is_request && code == commands::DEVICE_WATCHDOG && self.dwr_hbh == Some(msg.hop_by_hop());
        if matches!(self.state, PeerState::Open | PeerState::Closing) {
            if is_dwa {
                self.dwr_hbh = None;
            }
            self.watchdog.handle_received(is_dwa, now);
            self.drain_watchdog();
        }
        match (self.state, is_request, code) {
            (PeerState::CerSent, false, commands::CAPABILITIES_EXCHANGE) if self.cer_hbh == Some(msg.hop_by_hop()) => {
                self.handle_cea(&msg, now)
            }
            (PeerState::Connecting, true, commands::CAPABILITIES_EXCHANGE) if self.role == Role::Responder => {
                self.handle_cer(&msg, now)
            }
            (PeerState::Connecting | PeerState::CerSent, _, _) => {
                self.close(CloseReason::ProtocolError(format!(
                    "command {code} received before the capabilities exchange"
                )));
            }
            (_, true, commands::DEVICE_WATCHDOG) if base => {
                let dwa = self
                    .answer(&msg, result_codes::DIAMETER_SUCCESS)
                    .avp(avps::ORIGIN_STATE_ID, self.config.origin_state_id)
                    .build();
                self.transmit.push_back(dwa);
            }
            (_, false, commands::DEVICE_WATCHDOG) if base && is_dwa => {}
            (_, true, commands::DISCONNECT_PEER) if base => {
                let cause = msg.get(avps::DISCONNECT_CAUSE).ok().flatten();
                let dpa = self.answer(&msg, result_codes::DIAMETER_SUCCESS).build();
                self.transmit.push_back(dpa);
                self.close(CloseReason::PeerDisconnected { cause });
            }
            (PeerState::Closing, false, commands::DISCONNECT_PEER) => {
                if let Some((hbh, cause)) = self.dpr {
                    if hbh == msg.hop_by_hop() {
                        let dpa_result_code = msg.get(avps::RESULT_CODE).ok().flatten();
                        self.close(CloseReason::LocalDisconnect { cause, dpa_result_code });
                    }
                }
            }
            (_, true, commands::CAPABILITIES_EXCHANGE) if base => {
                // A second CER on an open connection (RFC 6733 §5.6.4 has no
                // transition for it): refuse it without dropping the link.
                let cea = self.answer(&msg, result_codes::DIAMETER_UNABLE_TO_COMPLY).build();
                self.transmit.push_back(cea);
            }
            (_, true, _) if base => {
                let ans = self.answer(&msg, result_codes::DIAMETER_COMMAND_UNSUPPORTED).build();
                self.transmit.push_back(ans);
            }
            (_, true, _) => {
                if self.supports(msg.application_id()) {
                    self.events.push_back(PeerEvent::Request(msg));
                } else {
                    let ans = self.answer(&msg, result_codes::DIAMETER_APPLICATION_UNSUPPORTED).build();
                    self.transmit.push_back(ans);
                }
            }
            (_, false, _) => self.events.push_back(PeerEvent::Answer(msg)),
        }
    }

    /// Whether requests of `application_id` are accepted on this
    /// connection: a common application, or we advertised Relay.
    pub fn supports(&self, application_id: u32) -> bool {
        self.config.applications().any(|a| a == apps::RELAY) || self.applications.contains(&application_id)
    }

    fn handle_cea(&mut self, cea: &Message, now: Instant) {
        self.cer_hbh = None;
        let result_code = match cea.get(avps::RESULT_CODE) {
            Ok(Some(rc)) => rc,
            Ok(None) => return self.close(CloseReason::ProtocolError("CEA without Result-Code".into())),
            Err(e) => return self.close(CloseReason::ProtocolError(format!("CEA: {e}"))),
        };
        if result_code != result_codes::DIAMETER_SUCCESS {
            let message = cea.get(avps::ERROR_MESSAGE).ok().flatten().map(str::to_string);
            return self.close(CloseReason::HandshakeFailed { result_code, message });
        }
        match PeerInfo::from_message(cea) {
            Ok(info) => {
                let common = common_applications(&self.config, &info);
                self.open(info, common, now);
            }
            Err(e) => self.close(CloseReason::ProtocolError(format!("CEA: {e}"))),
        }
    }

    fn handle_cer(&mut self, cer: &Message, now: Instant) {
        let info = match PeerInfo::from_message(cer) {
            Ok(info) if !info.origin_host.is_empty() && !info.origin_realm.is_empty() => info,
            Ok(_) => {
                let cea = self.capabilities(self.answer_head(cer, result_codes::DIAMETER_MISSING_AVP)).build();
                self.transmit.push_back(cea);
                return self.close(CloseReason::HandshakeFailed {
                    result_code: result_codes::DIAMETER_MISSING_AVP,
                    message: Some("CER without Origin-Host or Origin-Realm".into()),
                });
            }
            Err(e) => {
                let cea = self.capabilities(self.answer_head(cer, result_codes::DIAMETER_INVALID_AVP_VALUE)).build();
                self.transmit.push_back(cea);
                return self.close(CloseReason::ProtocolError(format!("CER: {e}")));
            }
        };
        let common = common_applications(&self.config, &info);
        if common.is_empty() {
            let rc = result_codes::DIAMETER_NO_COMMON_APPLICATION;
            let cea = self.capabilities(self.answer_head(cer, rc)).build();
            self.transmit.push_back(cea);
            return self.close(CloseReason::HandshakeFailed { result_code: rc, message: None });
        }
        let cea = self.capabilities(self.answer_head(cer, result_codes::DIAMETER_SUCCESS)).build();
        self.transmit.push_back(cea);
        self.open(info, common, now);
    }

    /// CEA head: Result-Code first, then the capabilities body (which
    /// writes Origin-Host/Realm itself).
    fn answer_head(&self, req: &Message, result_code: u32) -> MessageBuilder {
        Message::answer_to(req).error(result_codes::class(result_code) == 3).avp(avps::RESULT_CODE, result_code)
    }

    /// Starts a graceful close: DPR with `cause`, then wait for the DPA
    /// (up to the DPA timeout). Before the connection is open this closes
    /// at once.
    pub fn disconnect(&mut self, cause: i32, now: Instant) {
        match self.state {
            PeerState::Open => {
                let hbh = self.ids.next_hop_by_hop();
                let e2e = self.ids.next_end_to_end();
                let dpr = Message::request(apps::COMMON, commands::DISCONNECT_PEER)
                    .hop_by_hop(hbh)
                    .end_to_end(e2e)
                    .avp(avps::ORIGIN_HOST, self.config.origin_host.as_str())
                    .avp(avps::ORIGIN_REALM, self.config.origin_realm.as_str())
                    .avp(avps::DISCONNECT_CAUSE, cause)
                    .build();
                self.transmit.push_back(dpr);
                self.dpr = Some((hbh, cause));
                self.state = PeerState::Closing;
                self.deadline = Some(now + self.config.dpa_timeout);
            }
            PeerState::Closing | PeerState::Closed | PeerState::Failed => {}
            _ => self.close(CloseReason::LocalDisconnect { cause, dpa_result_code: None }),
        }
    }

    /// The driver detected a failure the protocol machine cannot see (a
    /// corrupt frame, a stalled write): the connection is over.
    pub fn fail(&mut self, reason: CloseReason) {
        self.close(reason);
    }

    /// The transport closed or failed.
    pub fn handle_transport_closed(&mut self) {
        match self.state {
            PeerState::Closing => {
                let cause = self.dpr.map_or(disconnect_cause::REBOOTING, |(_, c)| c);
                self.close(CloseReason::LocalDisconnect { cause, dpa_result_code: None });
            }
            _ => self.close(CloseReason::TransportClosed),
        }
    }

    /// Timers: CER/CEA and DPA timeouts, and the watchdog.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(d) = self.deadline {
            if now >= d {
                self.deadline = None;
                match self.state {
                    PeerState::Connecting | PeerState::CerSent => self.close(CloseReason::HandshakeTimeout),
                    PeerState::Closing => {
                        let cause = self.dpr.map_or(disconnect_cause::REBOOTING, |(_, c)| c);
                        self.close(CloseReason::LocalDisconnect { cause, dpa_result_code: None });
                    }
                    _ => {}
                }
            }
        }
        if matches!(self.state, PeerState::Open | PeerState::Closing) {
            self.watchdog.handle_timeout(now);
            self.drain_watchdog();
        }
    }

    fn drain_watchdog(&mut self) {
        while let Some(ev) = self.watchdog.poll_event() {
            match ev {
                WatchdogEvent::SendDwr => {
                    if self.state != PeerState::Open {
                        continue;
                    }
                    let hbh = self.ids.next_hop_by_hop();
                    let e2e = self.ids.next_end_to_end();
                    let dwr = Message::request(apps::COMMON, commands::DEVICE_WATCHDOG)
                        .hop_by_hop(hbh)
                        .end_to_end(e2e)
                        .avp(avps::ORIGIN_HOST, self.config.origin_host.as_str())
                        .avp(avps::ORIGIN_REALM, self.config.origin_realm.as_str())
                        .avp(avps::ORIGIN_STATE_ID, self.config.origin_state_id)
                        .build();
                    self.dwr_hbh = Some(hbh);
                    self.transmit.push_back(dwr);
                }
                WatchdogEvent::StateChanged { from, to } => self.events.push_back(PeerEvent::Watchdog { from, to }),
                WatchdogEvent::CloseConnection => {
                    let unanswered = self.watchdog.misses();
                    self.close(CloseReason::WatchdogDown { unanswered });
                }
            }
        }
    }

    /// Queues an answer produced by the application handler.
    pub fn send_answer(&mut self, answer: Message) {
        self.transmit.push_back(answer);
    }

    /// The next message to write, if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.transmit.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PeerEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.deadline, self.watchdog.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Marks the connection as waiting to reconnect (driver bookkeeping;
    /// the watchdog keeps its DOWN state so the next open goes through
    /// REOPEN).
    pub fn set_reconnecting(&mut self) {
        self.state = PeerState::Reconnecting;
        self.cer_hbh = None;
        self.dwr_hbh = None;
        self.dpr = None;
        self.deadline = None;
        self.peer = None;
        self.applications.clear();
        self.transmit.clear();
    }
}

/// Reads a Result-Code from an answer (top level, or inside
/// Experimental-Result).
pub fn result_code(answer: &Message) -> Option<u32> {
    if let Ok(Some(rc)) = answer.get(avps::RESULT_CODE) {
        return Some(rc);
    }
    let group = answer.find(avps::EXPERIMENTAL_RESULT)?;
    group
        .group()
        .flatten()
        .find(|a| a.code() == avps::EXPERIMENTAL_RESULT_CODE.code())
        .and_then(|a| Unsigned32::decode(&a).ok())
}

#[cfg(test)]
mod tests;
