//! The per-peer state machine of RFC 6733 §5.6, sans-IO.
//!
//! A [`PeerMachine`] is everything a node knows about one peer: the §5.6
//! state with **election** (§5.6.4) when an inbound and an outbound
//! connection meet, the capabilities exchange on each connection, the
//! **RFC 3539 watchdog**, which lives here and survives reconnection (a
//! peer that went DOWN comes back through REOPEN and carries no traffic
//! until three DWAs have returned), **Origin-State-Id** change detection
//! (§8.16), and the peer's **one reconnect schedule**, which grows on every
//! kind of failure and honours Disconnect-Cause.
//!
//! It owns no socket and reads no clock. The driver feeds it with
//! `handle_*(…, now)` and drains [`poll_transmit`](PeerMachine::poll_transmit),
//! [`poll_event`](PeerMachine::poll_event) and
//! [`poll_timeout`](PeerMachine::poll_timeout). Each transport connection is
//! a *link* named by a [`LinkId`]; the machine tells the driver when to
//! dial ([`Event::Dial`]) and when to close a link ([`Event::CloseLink`]).
//!
//! # States
//!
//! | [`PeerState`] | RFC 6733 §5.6 |
//! |---|---|
//! | `Disconnected` | Closed, nothing scheduled |
//! | `Connecting` | Wait-Conn-Ack |
//! | `CerSent` | Wait-I-CEA |
//! | `Electing` | Wait-Conn-Ack/Elect, Wait-Returns |
//! | `Open`, `Suspect`, `Reopen` | I-Open / R-Open, with the watchdog OKAY, SUSPECT or REOPEN |
//! | `Closing` | Closing (DPR sent) |
//! | `Reconnecting` | Closed, a reconnection scheduled |
//! | `Closed` | Closed for good (stopped, or the reconnect schedule gave up) |
//!
//! Only `Open` carries application requests ([`PeerMachine::sending_link`]).
//!
//! # Election
//!
//! When a CER arrives on a new inbound connection while our own CER is
//! outstanding (Wait-I-CEA), or our dial is still under way
//! (Wait-Conn-Ack), the responder elects: it compares its Origin-Host with
//! the CER's as octet strings (§5.6.4). The higher identity wins and closes the connection *it*
//! initiated; both sides therefore keep the connection initiated by the
//! lower identity. The loser keeps the inbound CER unanswered until its own
//! CEA arrives, then closes the inbound connection (after a CEA with 4003
//! DIAMETER_ELECTION_LOST, as freeDiameter does); if its outbound
//! connection fails first, it answers the inbound CER and keeps that one.
//! A CER for a peer that is already open is refused with 5012
//! DIAMETER_UNABLE_TO_COMPLY (R-Reject).
//!
//! # Reconnection
//!
//! A peer with a [`ReconnectPolicy`] is kept connected: whenever it ends up
//! with no connection, the next dial is scheduled after the policy's next
//! delay. The policy starts over only after a connection that stayed open
//! for its stable period, so every kind of failure paces the next attempt:
//! a refused dial, a CER timeout, a CEA other than 2001, and a connection
//! closed soon after its CEA (a DPR, garbage, a reset). A DPR with
//! Disconnect-Cause BUSY or DO_NOT_WANT_TO_TALK_TO_YOU, after which RFC
//! 6733 §5.4.3 says a node SHOULD NOT reconnect, delays the next attempt by
//! at least [`PeerSettings::busy_backoff`].

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codes::{apps, avps, commands, disconnect_cause, result_codes};
use crate::message::{Message, MessageBuilder};
use crate::peer::{common_applications, CloseReason, IdGenerator, PeerConfig, PeerInfo};
use crate::watchdog::{Watchdog, WatchdogEvent, WatchdogState};

/// Where the delays between reconnection attempts come from (the driver
/// adapts its backoff strategy to this; the machine only asks).
pub trait ReconnectPolicy: Send {
    /// The delay before the next attempt, or `None` to give up.
    fn next_delay(&mut self) -> Option<Duration>;
    /// A connection that stayed open for `uptime` has closed. A policy
    /// starts over here when the connection was stable, and only then.
    fn connection_ended(&mut self, uptime: Duration);
}

/// Per-peer settings of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSettings {
    /// The DiameterIdentity the peer must present in its CER or CEA; `None`
    /// learns it from the first capabilities exchange (a peer known only by
    /// its address, or accepted dynamically).
    pub identity: Option<String>,
    /// Minimum delay before reconnecting after a DPR with Disconnect-Cause
    /// BUSY or DO_NOT_WANT_TO_TALK_TO_YOU. Default 60 s (RFC 6733 §5.4.3:
    /// the node SHOULD NOT reconnect; a configured peer is still retried,
    /// slowly).
    pub busy_backoff: Duration,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings { identity: None, busy_backoff: Duration::from_secs(60) }
    }
}

/// One transport connection of a peer, as the machine names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(u32);

impl LinkId {
    /// The number (unique within one machine, counting up from 1).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link {}", self.0)
    }
}

/// Which side opened a transport connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We dialled (we are the initiator, we send the CER).
    Outbound,
    /// The peer dialled (we are the responder, we answer its CER).
    Inbound,
}

impl Direction {
    /// `"out"` or `"in"`, as events print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "out",
            Direction::Inbound => "in",
        }
    }
}

/// The peer's state (see the [module docs](self) for the RFC 6733 §5.6
/// mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// No connection and none scheduled.
    Disconnected,
    /// Dialling.
    Connecting,
    /// CER sent, waiting for the CEA.
    CerSent,
    /// An inbound and an outbound connection met; election under way.
    Electing,
    /// Open, watchdog OKAY: requests may be sent.
    Open,
    /// Open, but a DWR went unanswered (watchdog SUSPECT): no new requests.
    Suspect,
    /// Reconnected after a failure, waiting for DWAs (watchdog REOPEN): no
    /// requests yet.
    Reopen,
    /// DPR sent, waiting for the DPA.
    Closing,
    /// No connection; the next dial is scheduled.
    Reconnecting,
    /// Closed for good: stopped locally, or the reconnect schedule gave up.
    Closed,
}

impl PeerState {
    /// All states, in declaration order (for compact storage).
    pub const ALL: [PeerState; 10] = [
        PeerState::Disconnected,
        PeerState::Connecting,
        PeerState::CerSent,
        PeerState::Electing,
        PeerState::Open,
        PeerState::Suspect,
        PeerState::Reopen,
        PeerState::Closing,
        PeerState::Reconnecting,
        PeerState::Closed,
    ];

    /// The state's name as the CLI and events print it.
    pub fn name(self) -> &'static str {
        match self {
            PeerState::Disconnected => "disconnected",
            PeerState::Connecting => "connecting",
            PeerState::CerSent => "cer_sent",
            PeerState::Electing => "electing",
            PeerState::Open => "open",
            PeerState::Suspect => "suspect",
            PeerState::Reopen => "reopen",
            PeerState::Closing => "closing",
            PeerState::Reconnecting => "reconnecting",
            PeerState::Closed => "closed",
        }
    }

    /// Whether application requests may be sent.
    pub fn can_send(self) -> bool {
        self == PeerState::Open
    }

    /// Whether a connection is open (whatever the watchdog says).
    pub fn is_connected(self) -> bool {
        matches!(self, PeerState::Open | PeerState::Suspect | PeerState::Reopen | PeerState::Closing)
    }

    /// Its index in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The RFC 6733 §5.6 state proper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RfcState {
    /// Closed.
    Closed,
    /// Wait-Conn-Ack.
    WaitConnAck,
    /// Wait-I-CEA.
    WaitICea,
    /// Wait-Conn-Ack/Elect.
    WaitConnAckElect,
    /// Wait-Returns.
    WaitReturns,
    /// R-Open.
    ROpen,
    /// I-Open.
    IOpen,
    /// Closing.
    Closing,
}

/// What the machine reports to its driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Open a transport connection to the peer for `link`; report the
    /// outcome with [`PeerMachine::handle_dialled`] or
    /// [`PeerMachine::handle_dial_failed`].
    Dial {
        /// The link the connection will be.
        link: LinkId,
    },
    /// The peer is up on `link` (capabilities exchanged).
    Up {
        /// The link carrying the peer's traffic.
        link: LinkId,
        /// Who dialled it.
        direction: Direction,
        /// What the peer advertised.
        info: Box<PeerInfo>,
        /// Applications in common.
        applications: Vec<u32>,
    },
    /// The peer has no open connection any more.
    Down {
        /// Why its connection ended.
        reason: CloseReason,
    },
    /// Write what [`poll_transmit`](PeerMachine::poll_transmit) holds for
    /// `link`, then close its transport. The machine has forgotten the link;
    /// requests written on it have failed with `reason`.
    CloseLink {
        /// The link to close.
        link: LinkId,
        /// Why.
        reason: CloseReason,
    },
    /// The peer's state changed.
    StateChanged {
        /// Before.
        from: PeerState,
        /// After.
        to: PeerState,
    },
    /// The watchdog changed state.
    Watchdog {
        /// Before.
        from: WatchdogState,
        /// After.
        to: WatchdogState,
    },
    /// A DWA came back, `rtt` after its DWR.
    WatchdogAnswered {
        /// Round-trip time of the DWR.
        rtt: Duration,
    },
    /// The peer's Origin-State-Id changed: it restarted (RFC 6733 §8.16)
    /// and has lost its state (sessions, for instance).
    Restarted {
        /// The value seen before.
        previous: u32,
        /// The new value.
        current: u32,
    },
    /// The next dial is scheduled.
    ReconnectScheduled {
        /// The attempt number since the peer was last up, from 1.
        attempt: u32,
        /// How long until it.
        delay: Duration,
    },
    /// The reconnect schedule gave up; the peer stays closed.
    GaveUp,
    /// Election took place (RFC 6733 §5.6.4).
    Election {
        /// Whether we won (and so closed the connection we initiated).
        won: bool,
    },
    /// A newer connection took over from `old` (lifetime rotation): drain
    /// the requests written on `old`, then call
    /// [`PeerMachine::disconnect_link`] for it.
    Replaced {
        /// The connection being retired.
        old: LinkId,
        /// The one carrying traffic now.
        new: LinkId,
    },
}

/// An application message for the driver, returned by
/// [`PeerMachine::handle_message`].
#[derive(Debug)]
pub enum Incoming {
    /// An application request the local node must answer.
    Request(Message),
    /// An answer to one of the driver's requests (match its Hop-by-Hop id).
    Answer(Message),
    /// Handled by the machine (base protocol), or dropped.
    None,
}

#[derive(Debug)]
enum Phase {
    /// The transport is being set up.
    Dialling,
    /// CER sent.
    WaitCea { hbh: u32 },
    /// A processed inbound CER whose CEA waits for the election.
    HeldCer { cer: Box<Message>, info: Box<PeerInfo>, applications: Vec<u32> },
    /// Capabilities exchanged.
    Open,
    /// Replaced by a newer link; draining its requests before DPR.
    Draining,
    /// DPR sent.
    Closing { hbh: u32, cause: i32 },
}

#[derive(Debug)]
struct Link {
    id: LinkId,
    direction: Direction,
    phase: Phase,
    local_ip: Option<IpAddr>,
    /// CEA or DPA deadline.
    deadline: Option<Instant>,
    /// Outstanding DWR: Hop-by-Hop and when it was sent.
    dwr: Option<(u32, Instant)>,
    applications: Vec<u32>,
    /// A rotation's replacement (an extra outbound link while open).
    replacement: bool,
    /// The peer answered our CER with 4003 DIAMETER_ELECTION_LOST: it
    /// keeps the connection it dialled, which is on its way to us.
    peer_lost_election: bool,
    /// The transport is TLS already (TLS-first): no in-band TLS on it.
    secure: bool,
    /// In-band TLS was agreed in the capabilities exchange: TLS starts on
    /// the connection right after the CEA (RFC 3588 §6.10 style).
    inband_tls: bool,
}

/// The per-peer machine. See the [module docs](self).
pub struct PeerMachine {
    config: Arc<PeerConfig>,
    settings: PeerSettings,
    rfc: RfcState,
    state: PeerState,
    links: Vec<Link>,
    /// The link carrying traffic in I-Open / R-Open / Closing.
    active: Option<LinkId>,
    next_link: u32,
    watchdog: Watchdog,
    ids: IdGenerator,
    reconnect: Option<Box<dyn ReconnectPolicy>>,
    reconnect_at: Option<Instant>,
    attempt: u32,
    stopped: bool,
    /// The peer was up since the last Down.
    up: bool,
    opened_at: Option<Instant>,
    info: Option<PeerInfo>,
    origin_state_id: Option<u32>,
    transmit: VecDeque<(LinkId, Message)>,
    events: VecDeque<Event>,
    /// Why the last connection ended (for reports).
    last_reason: Option<CloseReason>,
    /// Waiting for the CER of a peer that won an election.
    election_grace: bool,
}

impl std::fmt::Debug for PeerMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerMachine")
            .field("identity", &self.settings.identity)
            .field("rfc", &self.rfc)
            .field("state", &self.state)
            .field("links", &self.links)
            .field("active", &self.active)
            .field("watchdog", &self.watchdog.state())
            .finish_non_exhaustive()
    }
}

/// Compares two DiameterIdentities as RFC 6733 §5.6.4 does: "as two
/// streams of octets", the higher value winning. Whether `local` wins.
pub fn wins_election(local: &str, remote: &str) -> bool {
    local.as_bytes() > remote.as_bytes()
}

impl PeerMachine {
    /// A machine in state `Disconnected`. With a `reconnect` policy the peer
    /// is kept connected once [`connect`](Self::connect) has been called
    /// (and reconnected after any inbound connection it had ends); without
    /// one it connects only when told to, and stays down after a failure.
    /// `seed` drives the watchdog's jitter.
    ///
    /// # Panics
    /// If `config` fails [`PeerConfig::validate`].
    pub fn new(
        config: Arc<PeerConfig>,
        settings: PeerSettings,
        reconnect: Option<Box<dyn ReconnectPolicy>>,
        ids: IdGenerator,
        seed: u64,
    ) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid peer config: {e}");
        }
        let watchdog = Watchdog::new(config.watchdog.clone(), seed);
        PeerMachine {
            config,
            settings,
            rfc: RfcState::Closed,
            state: PeerState::Disconnected,
            links: Vec::with_capacity(2),
            active: None,
            next_link: 0,
            watchdog,
            ids,
            reconnect,
            reconnect_at: None,
            attempt: 0,
            stopped: false,
            up: false,
            opened_at: None,
            info: None,
            origin_state_id: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            last_reason: None,
            election_grace: false,
        }
    }

    // ---- observers -------------------------------------------------------

    /// The peer's state.
    pub fn state(&self) -> PeerState {
        self.state
    }

    /// The RFC 6733 §5.6 state.
    pub fn rfc_state(&self) -> RfcState {
        self.rfc
    }

    /// The watchdog's state.
    pub fn watchdog_state(&self) -> WatchdogState {
        self.watchdog.state()
    }

    /// The connection carrying the peer's traffic (open, or closing), if
    /// any.
    pub fn active_link(&self) -> Option<LinkId> {
        self.active
    }

    /// The link application requests go on, when the peer is `Open`.
    pub fn sending_link(&self) -> Option<LinkId> {
        (self.state == PeerState::Open).then_some(self.active).flatten()
    }

    /// What the peer advertised in its last CER or CEA.
    pub fn peer_info(&self) -> Option<&PeerInfo> {
        self.info.as_ref()
    }

    /// The identity configured for the peer, or learned from it.
    pub fn identity(&self) -> Option<&str> {
        self.settings.identity.as_deref().or(self.info.as_ref().map(|i| i.origin_host.as_str()))
    }

    /// The local configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Identifier allocation, for the driver's application requests.
    pub fn ids(&mut self) -> &mut IdGenerator {
        &mut self.ids
    }

    /// Why the last connection ended.
    pub fn last_reason(&self) -> Option<&CloseReason> {
        self.last_reason.as_ref()
    }

    /// Reconnection attempts since the peer was last up.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The direction of the link carrying traffic.
    pub fn direction(&self) -> Option<Direction> {
        self.active.and_then(|id| self.link(id)).map(|l| l.direction)
    }

    /// The links the machine knows (dialling, handshaking, open, draining,
    /// closing).
    pub fn links(&self) -> impl Iterator<Item = LinkId> + '_ {
        self.links.iter().map(|l| l.id)
    }

    /// Whether requests of `application_id` from the peer are accepted on
    /// `link`: we advertised Relay, or it is an application in common.
    pub fn supports(&self, link: LinkId, application_id: u32) -> bool {
        self.config.applications().any(|a| a == apps::RELAY)
            || self.link(link).is_some_and(|l| l.applications.contains(&application_id))
    }

    /// Whether the local side has stopped the peer (no more reconnects).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn link(&self, id: LinkId) -> Option<&Link> {
        self.links.iter().find(|l| l.id == id)
    }

    fn link_mut(&mut self, id: LinkId) -> Option<&mut Link> {
        self.links.iter_mut().find(|l| l.id == id)
    }

    fn find(&self, direction: Direction, pred: impl Fn(&Phase) -> bool) -> Option<LinkId> {
        self.links.iter().find(|l| l.direction == direction && !l.replacement && pred(&l.phase)).map(|l| l.id)
    }

    // ---- state bookkeeping -----------------------------------------------

    fn refresh(&mut self) {
        let to = match self.rfc {
            RfcState::Closed if self.stopped => PeerState::Closed,
            RfcState::Closed if self.reconnect_at.is_some() => PeerState::Reconnecting,
            RfcState::Closed => PeerState::Disconnected,
            RfcState::WaitConnAck => PeerState::Connecting,
            RfcState::WaitICea => PeerState::CerSent,
            RfcState::WaitConnAckElect | RfcState::WaitReturns => PeerState::Electing,
            RfcState::ROpen | RfcState::IOpen => match self.watchdog.state() {
                WatchdogState::Suspect => PeerState::Suspect,
                WatchdogState::Reopen => PeerState::Reopen,
                _ => PeerState::Open,
            },
            RfcState::Closing => PeerState::Closing,
        };
        if to != self.state {
            let from = self.state;
            self.state = to;
            self.events.push_back(Event::StateChanged { from, to });
        }
    }

    fn new_link(&mut self, direction: Direction, phase: Phase) -> LinkId {
        self.next_link = self.next_link.wrapping_add(1).max(1);
        let id = LinkId(self.next_link);
        self.links.push(Link {
            id,
            direction,
            phase,
            local_ip: None,
            deadline: None,
            dwr: None,
            applications: Vec::new(),
            replacement: false,
            peer_lost_election: false,
            secure: false,
            inband_tls: false,
        });
        id
    }

    fn set_security(&mut self, link: LinkId, secure: bool, inband_tls: bool) {
        if let Some(l) = self.link_mut(link) {
            l.secure = secure;
            l.inband_tls = inband_tls;
        }
    }

    /// Marks a dialled link (before [`handle_dialled`](Self::handle_dialled))
    /// as TLS already (TLS-first): its CER offers no in-band TLS.
    pub fn set_secure(&mut self, link: LinkId) {
        if let Some(l) = self.link_mut(link) {
            l.secure = true;
        }
    }

    /// Whether in-band TLS was agreed on `link`: the driver starts TLS on it
    /// right after the CEA, before any other message.
    pub fn inband_tls(&self, link: LinkId) -> bool {
        self.link(link).is_some_and(|l| l.inband_tls)
    }

    /// Forgets `id` and tells the driver to close it.
    fn drop_link(&mut self, id: LinkId, reason: CloseReason) {
        if let Some(i) = self.links.iter().position(|l| l.id == id) {
            self.links.remove(i);
            self.events.push_back(Event::CloseLink { link: id, reason });
        }
        if self.active == Some(id) {
            self.active = None;
        }
    }

    // ---- driver inputs: lifecycle ----------------------------------------

    /// Start (RFC 6733 §5.6): dial the peer now, unless it is already
    /// connected, connecting, or waiting out a reconnect delay. Clears a
    /// previous [`stop`](Self::stop).
    pub fn connect(&mut self, now: Instant) {
        self.stopped = false;
        if self.rfc == RfcState::Closed && self.reconnect_at.is_none() {
            self.start_dial(now);
        }
        self.refresh();
    }

    fn start_dial(&mut self, _now: Instant) {
        let link = self.new_link(Direction::Outbound, Phase::Dialling);
        self.rfc = RfcState::WaitConnAck;
        self.reconnect_at = None;
        self.events.push_back(Event::Dial { link });
    }

    /// Replaces the open outbound connection with a fresh one, gracefully:
    /// the new one is dialled and handshaken first; when it is open it takes
    /// the traffic ([`Event::Replaced`]) and the old one drains. Returns
    /// whether a replacement was started.
    pub fn rotate(&mut self, _now: Instant) -> bool {
        let open = matches!(self.rfc, RfcState::IOpen | RfcState::ROpen);
        if !open || self.state != PeerState::Open || self.stopped || self.links.iter().any(|l| l.replacement) {
            return false;
        }
        let link = self.new_link(Direction::Outbound, Phase::Dialling);
        if let Some(l) = self.link_mut(link) {
            l.replacement = true;
        }
        self.events.push_back(Event::Dial { link });
        true
    }

    /// I-Rcv-Conn-Ack: the transport for `link` is up; `local_ip` is the
    /// socket's local address (advertised as Host-IP-Address when the
    /// configuration has none). Sends the CER.
    pub fn handle_dialled(&mut self, link: LinkId, local_ip: IpAddr, now: Instant) {
        let Some(l) = self.link(link) else { return };
        if !matches!(l.phase, Phase::Dialling) {
            return;
        }
        let replacement = l.replacement;
        if self.stopped {
            self.drop_link(
                link,
                CloseReason::LocalDisconnect { cause: disconnect_cause::REBOOTING, dpa_result_code: None },
            );
            return;
        }
        let inband = if !l.secure && self.config.inband_tls { INBAND_TLS } else { INBAND_NONE };
        let hbh = self.ids.next_hop_by_hop();
        let e2e = self.ids.next_end_to_end();
        let cer = capabilities_with(
            &self.config,
            Message::request(apps::COMMON, commands::CAPABILITIES_EXCHANGE),
            Some(local_ip),
            inband,
        )
        .hop_by_hop(hbh)
        .end_to_end(e2e)
        .build();
        let deadline = now + self.config.cer_timeout;
        if let Some(l) = self.link_mut(link) {
            l.local_ip = Some(local_ip);
            l.phase = Phase::WaitCea { hbh };
            l.deadline = Some(deadline);
        }
        self.transmit.push_back((link, cer));
        if !replacement {
            match self.rfc {
                RfcState::WaitConnAck => self.rfc = RfcState::WaitICea,
                RfcState::WaitConnAckElect => {
                    self.rfc = RfcState::WaitReturns;
                    self.elect(now);
                }
                _ => {}
            }
        }
        self.refresh();
    }

    /// I-Rcv-Conn-Nack: the transport for `link` could not be opened.
    pub fn handle_dial_failed(&mut self, link: LinkId, reason: CloseReason, now: Instant) {
        let Some(l) = self.link(link) else { return };
        let replacement = l.replacement;
        self.links.retain(|l| l.id != link);
        if replacement {
            self.refresh();
            return;
        }
        match self.rfc {
            RfcState::WaitConnAck => {
                self.rfc = RfcState::Closed;
                self.closed(reason, now);
            }
            RfcState::WaitConnAckElect => self.accept_held(now),
            _ => {}
        }
        self.refresh();
    }

    /// R-Conn-CER: a CER arrived on a new inbound connection for this peer.
    /// `info` is [`PeerInfo::from_message`] of `cer`; `local_ip` is the
    /// socket's local address.
    ///
    /// `Ok(link)`: the connection is this peer's `link` now (its CEA, if any,
    /// is in [`poll_transmit`](Self::poll_transmit)). `Err(cea)`: the
    /// connection is refused; write `cea` on it and close it.
    pub fn handle_inbound(
        &mut self,
        cer: Message,
        info: PeerInfo,
        local_ip: IpAddr,
        now: Instant,
    ) -> Result<LinkId, Message> {
        self.handle_inbound_on(cer, info, local_ip, false, now)
    }

    /// [`handle_inbound`](Self::handle_inbound) on a connection that is
    /// already TLS (`secure`, TLS-first) or not. On a plain connection the
    /// CER's Inband-Security-Id offer decides ([`inband_choice`]): in-band
    /// TLS when we require it and it is offered; 5017
    /// DIAMETER_NO_COMMON_SECURITY when nothing offered is acceptable.
    pub fn handle_inbound_on(
        &mut self,
        cer: Message,
        info: PeerInfo,
        local_ip: IpAddr,
        secure: bool,
        now: Instant,
    ) -> Result<LinkId, Message> {
        let inband_tls = match inband_choice(&self.config, &cer, secure) {
            Ok(tls) => tls,
            Err(rc) => return Err(self.cea(&cer, rc, Some(local_ip))),
        };
        if let Some(expected) = &self.settings.identity {
            if !expected.eq_ignore_ascii_case(&info.origin_host) {
                return Err(self.cea(&cer, result_codes::DIAMETER_UNKNOWN_PEER, Some(local_ip)));
            }
        }
        let applications = common_applications(&self.config, &info);
        if applications.is_empty() {
            return Err(self.cea(&cer, result_codes::DIAMETER_NO_COMMON_APPLICATION, Some(local_ip)));
        }
        if self.stopped {
            return Err(self.cea(&cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, Some(local_ip)));
        }
        let held = |cer: Message, info: PeerInfo, applications: Vec<u32>| Phase::HeldCer {
            cer: Box::new(cer),
            info: Box::new(info),
            applications,
        };
        let link = match self.rfc {
            RfcState::Closed => {
                let link = self.new_link(Direction::Inbound, held(cer, info, applications));
                self.set_local_ip(link, local_ip);
                self.set_security(link, secure, inband_tls);
                self.accept_held(now);
                link
            }
            RfcState::WaitConnAck => {
                let link = self.new_link(Direction::Inbound, held(cer, info, applications));
                self.set_local_ip(link, local_ip);
                self.set_security(link, secure, inband_tls);
                self.rfc = RfcState::WaitConnAckElect;
                link
            }
            RfcState::WaitICea => {
                let link = self.new_link(Direction::Inbound, held(cer, info, applications));
                self.set_local_ip(link, local_ip);
                self.set_security(link, secure, inband_tls);
                self.rfc = RfcState::WaitReturns;
                self.elect(now);
                link
            }
            // R-Reject: a responder connection is already being elected over,
            // or the peer is open or closing.
            RfcState::WaitConnAckElect
            | RfcState::WaitReturns
            | RfcState::ROpen
            | RfcState::IOpen
            | RfcState::Closing => {
                return Err(self.cea(&cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, Some(local_ip)));
            }
        };
        self.refresh();
        Ok(link)
    }

    fn set_local_ip(&mut self, link: LinkId, ip: IpAddr) {
        if let Some(l) = self.link_mut(link) {
            l.local_ip = Some(ip);
        }
    }

    /// Elect (RFC 6733 §5.6.4), in Wait-Returns with a held inbound CER.
    fn elect(&mut self, now: Instant) {
        let Some(held) = self.find(Direction::Inbound, |p| matches!(p, Phase::HeldCer { .. })) else { return };
        let remote = match &self.link(held).map(|l| &l.phase) {
            Some(Phase::HeldCer { info, .. }) => info.origin_host.clone(),
            _ => return,
        };
        let won = wins_election(&self.config.origin_host, &remote);
        self.events.push_back(Event::Election { won });
        if won {
            // Win-Election: I-Disc, R-Snd-CEA → R-Open.
            if let Some(out) = self.find(Direction::Outbound, |p| matches!(p, Phase::WaitCea { .. } | Phase::Dialling))
            {
                self.drop_link(out, CloseReason::Election);
            }
            self.accept_held(now);
        }
    }

    /// R-Snd-CEA on the held inbound CER: the inbound link opens (R-Open).
    fn accept_held(&mut self, now: Instant) {
        let Some(id) = self.find(Direction::Inbound, |p| matches!(p, Phase::HeldCer { .. })) else {
            self.rfc = RfcState::Closed;
            return;
        };
        let Some(l) = self.link_mut(id) else { return };
        let Phase::HeldCer { cer, info, applications } = std::mem::replace(&mut l.phase, Phase::Open) else { return };
        let local_ip = l.local_ip;
        let inband = if l.inband_tls { INBAND_TLS } else { INBAND_NONE };
        let head = Message::answer_to(&cer).avp(avps::RESULT_CODE, result_codes::DIAMETER_SUCCESS);
        let cea = capabilities_with(&self.config, head, local_ip, inband).build();
        self.transmit.push_back((id, cea));
        self.open(id, *info, applications, now);
        self.rfc = RfcState::ROpen;
    }

    /// R-Disc of the held inbound connection after losing the election.
    fn reject_held(&mut self, result_code: u32) {
        let Some(id) = self.find(Direction::Inbound, |p| matches!(p, Phase::HeldCer { .. })) else { return };
        if let Some(Link { phase: Phase::HeldCer { cer, .. }, local_ip, .. }) = self.link(id) {
            let cea = self.cea(cer, result_code, *local_ip);
            self.transmit.push_back((id, cea));
        }
        self.drop_link(id, CloseReason::Election);
    }

    fn open(&mut self, link: LinkId, info: PeerInfo, applications: Vec<u32>, now: Instant) {
        let direction = match self.link_mut(link) {
            Some(l) => {
                l.phase = Phase::Open;
                l.deadline = None;
                l.applications = applications.clone();
                l.direction
            }
            None => return,
        };
        self.check_origin_state(info.origin_state_id);
        self.active = Some(link);
        self.up = true;
        self.attempt = 0;
        self.opened_at = Some(now);
        self.reconnect_at = None;
        self.election_grace = false;
        self.info = Some(info.clone());
        self.watchdog.handle_open(now);
        self.events.push_back(Event::Up { link, direction, info: Box::new(info), applications });
        self.drain_watchdog(now);
    }

    fn check_origin_state(&mut self, current: Option<u32>) {
        let Some(current) = current else { return };
        if let Some(previous) = self.origin_state_id {
            if previous != current {
                self.events.push_back(Event::Restarted { previous, current });
            }
        }
        self.origin_state_id = Some(current);
    }

    /// The peer has no usable connection any more (`rfc` already Closed):
    /// watchdog, Down event, and the next reconnection.
    fn closed(&mut self, reason: CloseReason, now: Instant) {
        self.went_down(reason.clone(), now);
        self.schedule(&reason, now);
        self.refresh();
    }

    /// The traffic-carrying connection is gone: the watchdog learns it, the
    /// driver gets `Down`, the reconnect policy the uptime.
    fn went_down(&mut self, reason: CloseReason, now: Instant) {
        // Only a connection that was up changes the watchdog: a failed or
        // refused handshake leaves it as it was (DOWN stays DOWN).
        if self.up {
            if reason.is_clean() {
                // A clean DPR/DPA close needs no REOPEN probation next time.
                self.watchdog.reset();
            } else {
                self.watchdog.handle_closed();
                self.drain_watchdog(now);
            }
        }
        if self.up {
            self.up = false;
            self.events.push_back(Event::Down { reason: reason.clone() });
        }
        if let Some(opened) = self.opened_at.take() {
            if let Some(p) = &mut self.reconnect {
                p.connection_ended(now.saturating_duration_since(opened));
            }
        }
        self.last_reason = Some(reason);
        self.active = None;
    }

    /// Schedules the next dial (or gives up), unless stopped.
    fn schedule(&mut self, reason: &CloseReason, now: Instant) {
        if self.stopped {
            self.reconnect_at = None;
            return;
        }
        let Some(policy) = &mut self.reconnect else { return };
        if *reason == CloseReason::Election && !self.election_grace {
            // The peer won an election and is connecting to us: give its
            // CER a CER timeout to arrive before anything else. When the
            // grace ends with no CER, the regular schedule takes over
            // (a peer that answers every CER with 4003 is paced like any
            // other failure).
            self.election_grace = true;
            self.reconnect_at = Some(now + self.config.cer_timeout);
            return;
        }
        self.election_grace = false;
        match policy.next_delay() {
            Some(mut delay) => {
                if reason.wants_long_backoff() {
                    delay = delay.max(self.settings.busy_backoff);
                }
                self.attempt = self.attempt.saturating_add(1);
                self.reconnect_at = Some(now + delay);
                self.events.push_back(Event::ReconnectScheduled { attempt: self.attempt, delay });
            }
            None => {
                self.stopped = true;
                self.reconnect_at = None;
                self.events.push_back(Event::GaveUp);
            }
        }
    }

    /// Stop (RFC 6733 §5.6): no more reconnects; DPR with `cause` on every
    /// open link (then the DPA wait); links still in their handshake close
    /// at once.
    pub fn disconnect(&mut self, cause: i32, now: Instant) {
        self.stop_reconnecting();
        let reason = CloseReason::LocalDisconnect { cause, dpa_result_code: None };
        let handshaking: Vec<LinkId> = self
            .links
            .iter()
            .filter(|l| matches!(l.phase, Phase::Dialling | Phase::WaitCea { .. } | Phase::HeldCer { .. }))
            .map(|l| l.id)
            .collect();
        for id in handshaking {
            if let Some(Link { phase: Phase::HeldCer { cer, .. }, local_ip, .. }) = self.link(id) {
                let cea = self.cea(cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, *local_ip);
                self.transmit.push_back((id, cea));
            }
            self.drop_link(id, reason.clone());
        }
        let open: Vec<LinkId> =
            self.links.iter().filter(|l| matches!(l.phase, Phase::Open | Phase::Draining)).map(|l| l.id).collect();
        for id in open {
            self.disconnect_link(id, cause, now);
        }
        if self.active.is_none() && self.rfc != RfcState::Closed {
            self.rfc = RfcState::Closed;
            self.closed(reason, now);
        }
        self.refresh();
    }

    /// No reconnects from now on: the next close is final (a local close
    /// that drains requests first calls this, then
    /// [`disconnect`](Self::disconnect)).
    pub fn stop_reconnecting(&mut self) {
        self.stopped = true;
        self.reconnect_at = None;
        self.refresh();
    }

    /// DPR with `cause` on one link (an open or draining one); a link still
    /// in its handshake is closed at once.
    pub fn disconnect_link(&mut self, link: LinkId, cause: i32, now: Instant) {
        let Some(l) = self.link(link) else { return };
        match l.phase {
            Phase::Open | Phase::Draining => {
                let hbh = self.ids.next_hop_by_hop();
                let e2e = self.ids.next_end_to_end();
                let dpr = Message::request(apps::COMMON, commands::DISCONNECT_PEER)
                    .hop_by_hop(hbh)
                    .end_to_end(e2e)
                    .avp(avps::ORIGIN_HOST, self.config.origin_host.as_str())
                    .avp(avps::ORIGIN_REALM, self.config.origin_realm.as_str())
                    .avp(avps::DISCONNECT_CAUSE, cause)
                    .build();
                self.transmit.push_back((link, dpr));
                let dpa_timeout = self.config.dpa_timeout;
                if let Some(l) = self.link_mut(link) {
                    l.phase = Phase::Closing { hbh, cause };
                    l.deadline = Some(now + dpa_timeout);
                }
                if self.active == Some(link) {
                    self.rfc = RfcState::Closing;
                }
            }
            Phase::Closing { .. } => {}
            Phase::Dialling | Phase::WaitCea { .. } | Phase::HeldCer { .. } => {
                let reason = CloseReason::LocalDisconnect { cause, dpa_result_code: None };
                self.link_gone(link, reason, now);
            }
        }
        self.refresh();
    }

    /// Sends a DWR now on the open link when none is outstanding (a health
    /// check within the watchdog, see [`Watchdog::probe`]).
    pub fn probe(&mut self, now: Instant) -> bool {
        if self.active.is_none() {
            return false;
        }
        let sent = self.watchdog.probe(now);
        self.drain_watchdog(now);
        sent
    }

    /// The transport of `link` closed (EOF, reset, read or write error).
    pub fn handle_link_closed(&mut self, link: LinkId, now: Instant) {
        let reason = match self.link(link).map(|l| &l.phase) {
            None => return,
            Some(Phase::Closing { cause, .. }) => CloseReason::LocalDisconnect { cause: *cause, dpa_result_code: None },
            Some(_) => CloseReason::TransportClosed,
        };
        self.link_gone(link, reason, now);
    }

    /// The driver detected a failure the protocol cannot see on `link` (a
    /// corrupt frame, a stalled write).
    pub fn fail_link(&mut self, link: LinkId, reason: CloseReason, now: Instant) {
        self.link_gone(link, reason, now);
    }

    /// A link ended with `reason`: the RFC transitions that follow.
    fn link_gone(&mut self, link: LinkId, reason: CloseReason, now: Instant) {
        let Some(l) = self.link(link) else { return };
        let direction = l.direction;
        let replacement = l.replacement;
        // Closed by a peer that lost the election: not a failure; its own
        // connection comes.
        let reason = if l.peer_lost_election && !matches!(reason, CloseReason::HandshakeTimeout) {
            CloseReason::Election
        } else {
            reason
        };
        let was_active = self.active == Some(link);
        let was_draining =
            matches!(l.phase, Phase::Draining) || (matches!(l.phase, Phase::Closing { .. }) && !was_active);
        self.drop_link(link, reason.clone());
        if replacement || was_draining {
            // A rotation's new link failed (the old one carries on), or an
            // old one finished draining: nothing changes for the peer.
            self.refresh();
            return;
        }
        match (self.rfc, direction) {
            (RfcState::WaitICea, Direction::Outbound) | (RfcState::WaitConnAck, Direction::Outbound) => {
                self.rfc = RfcState::Closed;
                self.closed(reason, now);
            }
            // I-Peer-Disc in Wait-Returns: R-Snd-CEA → R-Open.
            (RfcState::WaitReturns, Direction::Outbound) => self.accept_held(now),
            // R-Peer-Disc in Wait-Returns → Wait-I-CEA; in
            // Wait-Conn-Ack/Elect → Wait-Conn-Ack.
            (RfcState::WaitReturns, Direction::Inbound) => self.rfc = RfcState::WaitICea,
            (RfcState::WaitConnAckElect, Direction::Inbound) => self.rfc = RfcState::WaitConnAck,
            (RfcState::WaitConnAckElect, Direction::Outbound) => self.accept_held(now),
            (RfcState::IOpen | RfcState::ROpen | RfcState::Closing, _) if was_active => {
                // A rotation's replacement still in its handshake carries on
                // as an ordinary connection attempt.
                if let Some(r) = self.links.iter_mut().find(|l| l.replacement) {
                    r.replacement = false;
                    self.rfc = if matches!(r.phase, Phase::WaitCea { .. }) {
                        RfcState::WaitICea
                    } else {
                        RfcState::WaitConnAck
                    };
                    self.went_down(reason, now);
                } else {
                    self.rfc = RfcState::Closed;
                    self.closed(reason, now);
                }
            }
            _ => {}
        }
        self.refresh();
    }

    // ---- driver inputs: messages and time --------------------------------

    /// A message arrived on `link` that the driver handled itself (a request
    /// it refused, an answer to one of its requests that it could not use):
    /// it still proves the peer alive to the watchdog.
    pub fn handle_traffic(&mut self, link: LinkId, now: Instant) {
        if self.active == Some(link) {
            self.watchdog.handle_received(false, now);
            self.drain_watchdog(now);
            self.refresh();
        }
    }

    /// A message arrived on `link` (its frame intact, its AVPs checked by the
    /// driver). Base protocol messages are handled here; application
    /// traffic is returned.
    pub fn handle_message(&mut self, link: LinkId, msg: Message, now: Instant) -> Incoming {
        let Some(l) = self.link(link) else { return Incoming::None };
        let is_request = msg.is_request();
        let base = msg.application_id() == apps::COMMON;
        let code = msg.command_code();
        match l.phase {
            Phase::Open | Phase::Draining | Phase::Closing { .. } => {}
            Phase::WaitCea { hbh } => {
                if !is_request && code == commands::CAPABILITIES_EXCHANGE && msg.hop_by_hop() == hbh {
                    self.handle_cea(link, &msg, now);
                } else {
                    self.link_gone(
                        link,
                        CloseReason::ProtocolError(format!("command {code} received before the CEA")),
                        now,
                    );
                }
                return Incoming::None;
            }
            Phase::HeldCer { .. } | Phase::Dialling => {
                self.link_gone(
                    link,
                    CloseReason::ProtocolError(format!("command {code} received before the CEA was sent")),
                    now,
                );
                return Incoming::None;
            }
        }
        let active = self.active == Some(link);
        let is_dwa = !is_request
            && base
            && code == commands::DEVICE_WATCHDOG
            && l.dwr.is_some_and(|(h, _)| h == msg.hop_by_hop());
        // A DWA counts wherever it arrives: after a rotation the answer to a
        // DWR sent on the old link comes back on that link.
        if active || is_dwa {
            self.watchdog.handle_received(is_dwa, now);
        }
        if !base {
            if active {
                self.drain_watchdog(now);
            }
            return if is_request {
                if self.supports(link, msg.application_id()) {
                    Incoming::Request(msg)
                } else {
                    self.answer_base(link, &msg, result_codes::DIAMETER_APPLICATION_UNSUPPORTED);
                    Incoming::None
                }
            } else {
                Incoming::Answer(msg)
            };
        }
        let out = match (is_request, code) {
            (true, commands::DEVICE_WATCHDOG) => {
                self.check_origin_state(msg.get(avps::ORIGIN_STATE_ID).ok().flatten());
                let dwa = self
                    .answer(&msg, result_codes::DIAMETER_SUCCESS)
                    .avp(avps::ORIGIN_STATE_ID, self.config.origin_state_id)
                    .build();
                self.transmit.push_back((link, dwa));
                Incoming::None
            }
            (false, commands::DEVICE_WATCHDOG) if is_dwa => {
                let sent = self.link_mut(link).and_then(|l| l.dwr.take()).map(|(_, t)| t);
                if let Some(sent) = sent {
                    self.events.push_back(Event::WatchdogAnswered { rtt: now.saturating_duration_since(sent) });
                }
                self.check_origin_state(msg.get(avps::ORIGIN_STATE_ID).ok().flatten());
                Incoming::None
            }
            (true, commands::DISCONNECT_PEER) => {
                let cause = msg.get(avps::DISCONNECT_CAUSE).ok().flatten();
                let dpa = self.answer(&msg, result_codes::DIAMETER_SUCCESS).build();
                self.transmit.push_back((link, dpa));
                self.link_gone(link, CloseReason::PeerDisconnected { cause }, now);
                Incoming::None
            }
            (false, commands::DISCONNECT_PEER) => {
                if let Some(Link { phase: Phase::Closing { hbh, cause }, .. }) = self.link(link) {
                    if *hbh == msg.hop_by_hop() {
                        let cause = *cause;
                        let dpa_result_code = msg.get(avps::RESULT_CODE).ok().flatten();
                        self.link_gone(link, CloseReason::LocalDisconnect { cause, dpa_result_code }, now);
                    }
                }
                Incoming::None
            }
            (true, commands::CAPABILITIES_EXCHANGE) => {
                // A second CER on an open connection: refuse it, keep the link.
                self.answer_base(link, &msg, result_codes::DIAMETER_UNABLE_TO_COMPLY);
                Incoming::None
            }
            (true, _) => {
                self.answer_base(link, &msg, result_codes::DIAMETER_COMMAND_UNSUPPORTED);
                Incoming::None
            }
            // A stray DWA or CEA, or an answer to a base-application request
            // of the driver's own (a DWR the application sent).
            (false, _) => Incoming::Answer(msg),
        };
        if active || is_dwa {
            self.drain_watchdog(now);
        }
        self.refresh();
        out
    }

    fn handle_cea(&mut self, link: LinkId, cea: &Message, now: Instant) {
        let result_code = match cea.get(avps::RESULT_CODE) {
            Ok(Some(rc)) => rc,
            Ok(None) => {
                return self.cea_failed(link, CloseReason::ProtocolError("CEA without Result-Code".into()), now)
            }
            Err(e) => return self.cea_failed(link, CloseReason::ProtocolError(format!("CEA: {e}")), now),
        };
        if result_code == result_codes::ELECTION_LOST {
            // The peer lost an election on its side: it closes this
            // connection and keeps the one it dialled, whose CER is on its
            // way. Keep waiting (the CEA timeout still runs).
            if let Some(l) = self.link_mut(link) {
                l.peer_lost_election = true;
            }
            return;
        }
        if result_code != result_codes::DIAMETER_SUCCESS {
            let message = cea.get(avps::ERROR_MESSAGE).ok().flatten().map(str::to_string);
            return self.cea_failed(link, CloseReason::HandshakeFailed { result_code, message }, now);
        }
        if cea.get_all(avps::ORIGIN_HOST).count() != 1 {
            let reason = CloseReason::ProtocolError("a CEA must carry exactly one Origin-Host".into());
            return self.cea_failed(link, reason, now);
        }
        let info = match PeerInfo::from_message(cea) {
            Ok(info) if crate::peer::is_identity(&info.origin_host) && crate::peer::is_identity(&info.origin_realm) => {
                info
            }
            Ok(_) => {
                let reason = CloseReason::ProtocolError(
                    "CEA without an Origin-Host and Origin-Realm that are DiameterIdentities".into(),
                );
                return self.cea_failed(link, reason, now);
            }
            Err(e) => return self.cea_failed(link, CloseReason::ProtocolError(format!("CEA: {e}")), now),
        };
        if let Some(expected) = &self.settings.identity {
            if !expected.eq_ignore_ascii_case(&info.origin_host) {
                let reason = CloseReason::IdentityMismatch { expected: expected.clone(), received: info.origin_host };
                return self.cea_failed(link, reason, now);
            }
        }
        if self.link(link).is_some_and(|l| !l.secure) && self.config.inband_tls {
            let agreed = cea.get_all(avps::INBAND_SECURITY_ID).any(|v| v == Ok(INBAND_TLS));
            if !agreed {
                let reason = CloseReason::Tls {
                    message: "in-band TLS required, but the CEA has no Inband-Security-Id TLS".into(),
                };
                return self.cea_failed(link, reason, now);
            }
            if let Some(l) = self.link_mut(link) {
                l.inband_tls = true;
            }
        }
        let applications = common_applications(&self.config, &info);
        let replacement = self.link(link).is_some_and(|l| l.replacement);
        if replacement {
            // Rotation: the new link takes over, the old one drains.
            let Some(old) = self.active else { return };
            if let Some(l) = self.link_mut(old) {
                // Its outstanding DWR (if any) may still be answered on it.
                // A link already closing keeps its DPR and DPA deadline.
                if matches!(l.phase, Phase::Open) {
                    l.phase = Phase::Draining;
                    l.deadline = None;
                }
            }
            if let Some(l) = self.link_mut(link) {
                l.replacement = false;
                l.phase = Phase::Open;
                l.deadline = None;
                l.applications = applications;
            }
            self.check_origin_state(info.origin_state_id);
            self.info = Some(info);
            self.active = Some(link);
            self.opened_at = Some(now);
            self.events.push_back(Event::Replaced { old, new: link });
            self.refresh();
            return;
        }
        match self.rfc {
            RfcState::WaitICea => {
                self.open(link, info, applications, now);
                self.rfc = RfcState::IOpen;
            }
            RfcState::WaitReturns => {
                // I-Rcv-CEA in Wait-Returns (we lost the election): R-Disc,
                // then I-Open.
                self.reject_held(result_codes::ELECTION_LOST);
                self.open(link, info, applications, now);
                self.rfc = RfcState::IOpen;
            }
            _ => {}
        }
        self.refresh();
    }

    fn cea_failed(&mut self, link: LinkId, reason: CloseReason, now: Instant) {
        self.link_gone(link, reason, now);
    }

    /// Timers: CEA and DPA timeouts, the watchdog, the reconnect delay.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<LinkId> =
            self.links.iter().filter(|l| l.deadline.is_some_and(|d| now >= d)).map(|l| l.id).collect();
        for id in expired {
            let reason = match self.link(id).map(|l| &l.phase) {
                Some(Phase::Closing { cause, .. }) => {
                    CloseReason::LocalDisconnect { cause: *cause, dpa_result_code: None }
                }
                Some(Phase::WaitCea { .. }) => CloseReason::HandshakeTimeout,
                _ => continue,
            };
            if self.rfc == RfcState::WaitReturns && matches!(reason, CloseReason::HandshakeTimeout) {
                // Timeout in Wait-Returns: Error → Closed (both links go).
                if let Some(held) = self.find(Direction::Inbound, |p| matches!(p, Phase::HeldCer { .. })) {
                    self.drop_link(held, CloseReason::HandshakeTimeout);
                }
                self.drop_link(id, reason.clone());
                self.rfc = RfcState::Closed;
                self.closed(reason, now);
                continue;
            }
            self.link_gone(id, reason, now);
        }
        if self.active.is_some() {
            self.watchdog.handle_timeout(now);
            self.drain_watchdog(now);
        }
        if self.reconnect_at.is_some_and(|t| now >= t) && self.rfc == RfcState::Closed && !self.stopped {
            self.reconnect_at = None;
            if self.election_grace {
                // No CER came from the peer that said it won: back to the
                // schedule.
                self.schedule(&CloseReason::Election, now);
            } else {
                self.start_dial(now);
            }
        }
        self.refresh();
    }

    fn drain_watchdog(&mut self, now: Instant) {
        while let Some(ev) = self.watchdog.poll_event() {
            match ev {
                WatchdogEvent::SendDwr => {
                    let Some(link) = self.active else { continue };
                    if !matches!(self.link(link).map(|l| &l.phase), Some(Phase::Open)) {
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
                    if let Some(l) = self.link_mut(link) {
                        l.dwr = Some((hbh, now));
                    }
                    self.transmit.push_back((link, dwr));
                }
                WatchdogEvent::StateChanged { from, to } => self.events.push_back(Event::Watchdog { from, to }),
                WatchdogEvent::CloseConnection => {
                    let unanswered = self.watchdog.misses();
                    if let Some(link) = self.active {
                        self.link_gone(link, CloseReason::WatchdogDown { unanswered }, now);
                    }
                }
            }
        }
    }

    // ---- outputs -----------------------------------------------------------

    /// Queues an answer produced by the application on `link`.
    pub fn send_answer(&mut self, link: LinkId, answer: Message) {
        if self.link(link).is_some() {
            self.transmit.push_back((link, answer));
        }
    }

    /// The next message to write, and on which link.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(LinkId, Message)> {
        self.transmit.pop_front()
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (watchdog, other) = self.poll_timeouts();
        watchdog.into_iter().chain(other).min()
    }

    /// [`poll_timeout`](Self::poll_timeout) in two parts: the watchdog's
    /// deadline (Tw or the DWA timeout), and the earliest of all the others
    /// (capabilities exchange, DPA wait, reconnect).
    ///
    /// Tw is jittered by ±2 s (RFC 3539 §3.4.1), so a driver may fire the
    /// watchdog's deadline a little late to wake many peers together; the
    /// other deadlines are meant to be kept as they are.
    #[must_use]
    pub fn poll_timeouts(&self) -> (Option<Instant>, Option<Instant>) {
        let links = self.links.iter().filter_map(|l| l.deadline);
        let watchdog = self.active.and(self.watchdog.poll_timeout());
        (watchdog, links.chain(self.reconnect_at).min())
    }

    // ---- message building --------------------------------------------------

    /// A CEA to `cer` with `result_code` and our capabilities.
    pub fn cea(&self, cer: &Message, result_code: u32, local_ip: Option<IpAddr>) -> Message {
        cea(&self.config, cer, result_code, local_ip)
    }

    /// An answer to `req` with our Origin-Host/Realm and `result_code`.
    fn answer(&self, req: &Message, result_code: u32) -> MessageBuilder {
        Message::answer_to(req)
            .error(result_codes::class(result_code) == 3)
            .avp(avps::RESULT_CODE, result_code)
            .avp(avps::ORIGIN_HOST, self.config.origin_host.as_str())
            .avp(avps::ORIGIN_REALM, self.config.origin_realm.as_str())
    }

    fn answer_base(&mut self, link: LinkId, req: &Message, result_code: u32) {
        let ans = self.answer(req, result_code).build();
        self.transmit.push_back((link, ans));
    }
}

/// Appends our capabilities to `b`: Origin-Host, Origin-Realm, Host-IP-Address, Vendor-Id,
/// Product-Name, Origin-State-Id, the applications, Inband-Security-Id
/// and Firmware-Revision (CER/CEA body, RFC 6733 §5.3.1).
pub fn capabilities(c: &PeerConfig, b: MessageBuilder, local_ip: Option<IpAddr>) -> MessageBuilder {
    capabilities_with(c, b, local_ip, INBAND_NONE)
}

/// Inband-Security-Id NO_INBAND_SECURITY (RFC 6733 §6.10).
pub const INBAND_NONE: u32 = 0;
/// Inband-Security-Id TLS (RFC 6733 §6.10): TLS starts after the CEA.
pub const INBAND_TLS: u32 = 1;

/// Which Inband-Security-Id values a CER offers: (NO_INBAND_SECURITY, TLS).
/// A CER without any offers none only (RFC 6733 §6.10: absent means 0).
pub fn inband_offer(cer: &Message) -> (bool, bool) {
    let (mut none, mut tls, mut any) = (false, false, false);
    for v in cer.get_all(avps::INBAND_SECURITY_ID) {
        any = true;
        match v {
            Ok(INBAND_NONE) => none = true,
            Ok(INBAND_TLS) => tls = true,
            _ => {}
        }
    }
    (none || !any, tls)
}

/// What a responder does with a CER's Inband-Security-Id offer on a
/// connection that is `secure` (TLS-first) or not: `Ok(true)` starts TLS
/// after the CEA, `Ok(false)` continues as is, `Err(5017)` is
/// DIAMETER_NO_COMMON_SECURITY. A TLS-first connection needs nothing more;
/// a node requiring in-band TLS ([`PeerConfig::inband_tls`]) takes only a
/// CER that offers TLS; any other node only one that offers (or implies)
/// NO_INBAND_SECURITY.
pub fn inband_choice(config: &PeerConfig, cer: &Message, secure: bool) -> Result<bool, u32> {
    if secure {
        return Ok(false);
    }
    let (none, tls) = inband_offer(cer);
    match (config.inband_tls, none, tls) {
        (true, _, true) => Ok(true),
        (false, true, _) => Ok(false),
        _ => Err(result_codes::DIAMETER_NO_COMMON_SECURITY),
    }
}

/// [`capabilities`] with the given Inband-Security-Id.
pub fn capabilities_with(c: &PeerConfig, b: MessageBuilder, local_ip: Option<IpAddr>, inband: u32) -> MessageBuilder {
    let mut b = b.avp(avps::ORIGIN_HOST, c.origin_host.as_str()).avp(avps::ORIGIN_REALM, c.origin_realm.as_str());
    if c.host_ip_addresses.is_empty() {
        if let Some(ip) = local_ip {
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
    b = b.avp(avps::INBAND_SECURITY_ID, inband);
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

/// A CEA to `cer` with `result_code` and the capabilities of `config`
/// (for connections refused before any peer machine sees them).
pub fn cea(config: &PeerConfig, cer: &Message, result_code: u32, local_ip: Option<IpAddr>) -> Message {
    let head = Message::answer_to(cer).error(result_codes::class(result_code) == 3).avp(avps::RESULT_CODE, result_code);
    capabilities(config, head, local_ip).build()
}

#[cfg(test)]
mod tests;
