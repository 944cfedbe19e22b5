//! The per-peer machine on simulated time: every transition, the reconnect
//! schedule, the watchdog across reconnections, and election on every
//! interleaving of two nodes connecting to each other.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::watchdog::WatchdogConfig;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const S: Duration = Duration::from_secs(1);

fn config(host: &str, apps: &[u32]) -> Arc<PeerConfig> {
    Arc::new(PeerConfig {
        origin_host: host.into(),
        origin_realm: "example.com".into(),
        origin_state_id: 7,
        auth_application_ids: apps.to_vec(),
        watchdog: WatchdogConfig {
            interval: Duration::from_secs(30),
            jitter: Duration::ZERO,
            dwr_timeout: Duration::from_secs(10),
            max_dwr_failures: 3,
            reopen_dwas: 3,
            // The first DWR of a connection is spread (RFC 3539 jitter, widened).
            ..WatchdogConfig::default()
        },
        ..PeerConfig::default()
    })
}

/// Doubling delays from 1 s, reset after a connection open for 10 s; the
/// delays handed out are recorded.
#[derive(Clone, Default)]
struct Doubling {
    next: Arc<Mutex<Duration>>,
    given: Arc<Mutex<Vec<Duration>>>,
    limit: Option<usize>,
}

impl ReconnectPolicy for Doubling {
    fn next_delay(&mut self) -> Option<Duration> {
        let mut given = self.given.lock().unwrap();
        if self.limit.is_some_and(|l| given.len() >= l) {
            return None;
        }
        let mut next = self.next.lock().unwrap();
        if next.is_zero() {
            *next = S;
        }
        let d = *next;
        *next = (d * 2).min(Duration::from_secs(60));
        given.push(d);
        Some(d)
    }
    fn connection_ended(&mut self, uptime: Duration) {
        if uptime >= Duration::from_secs(10) {
            *self.next.lock().unwrap() = Duration::ZERO;
        }
    }
}

fn machine(host: &str, policy: Option<Doubling>) -> PeerMachine {
    PeerMachine::new(
        config(host, &[4]),
        PeerSettings::default(),
        policy.map(|p| Box::new(p) as Box<dyn ReconnectPolicy>),
        IdGenerator::new(1_700_000_000, 42),
        1,
    )
}

fn events(m: &mut PeerMachine) -> Vec<Event> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn transmits(m: &mut PeerMachine) -> Vec<(LinkId, Message)> {
    std::iter::from_fn(|| m.poll_transmit()).collect()
}

fn dial_of(evs: &[Event]) -> LinkId {
    evs.iter()
        .find_map(|e| match e {
            Event::Dial { link } => Some(*link),
            _ => None,
        })
        .expect("a Dial event")
}

fn cea_for(cer: &Message, rc: u32, host: &str) -> Message {
    Message::answer_to(cer)
        .avp(avps::RESULT_CODE, rc)
        .avp(avps::ORIGIN_HOST, host)
        .avp(avps::ORIGIN_REALM, "example.net")
        .avp(avps::HOST_IP_ADDRESS, LOCAL)
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "peer")
        .avp(avps::ORIGIN_STATE_ID, 1u32)
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build()
}

fn cer_from(host: &str, osi: u32) -> Message {
    Message::request(0, commands::CAPABILITIES_EXCHANGE)
        .hop_by_hop(900)
        .end_to_end(901)
        .avp(avps::ORIGIN_HOST, host)
        .avp(avps::ORIGIN_REALM, "example.net")
        .avp(avps::HOST_IP_ADDRESS, LOCAL)
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "peer")
        .avp(avps::ORIGIN_STATE_ID, osi)
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build()
}

/// Dials and opens an outbound link; returns it.
fn open_outbound(m: &mut PeerMachine, now: Instant) -> LinkId {
    m.connect(now);
    let link = dial_of(&events(m));
    m.handle_dialled(link, LOCAL, now);
    let (l, cer) = transmits(m).pop().expect("CER");
    assert_eq!(l, link);
    assert_eq!(cer.command_code(), commands::CAPABILITIES_EXCHANGE);
    assert!(matches!(m.handle_message(link, cea_for(&cer, 2001, "server.example.net"), now), Incoming::None));
    link
}

fn dwa_for(dwr: &Message) -> Message {
    Message::answer_to(dwr)
        .avp(avps::RESULT_CODE, 2001u32)
        .avp(avps::ORIGIN_HOST, "server.example.net")
        .avp(avps::ORIGIN_REALM, "example.net")
        .build()
}

#[test]
fn outbound_open_carries_requests_and_answers() {
    let t0 = Instant::now();
    let mut m = machine("client.example.com", None);
    assert_eq!(m.state(), PeerState::Disconnected);
    m.connect(t0);
    assert_eq!(m.state(), PeerState::Connecting);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t0);
    assert_eq!((m.state(), m.rfc_state()), (PeerState::CerSent, RfcState::WaitICea));
    assert_eq!(m.sending_link(), None);
    let (_, cer) = transmits(&mut m).pop().unwrap();
    assert_eq!(cer.get(avps::HOST_IP_ADDRESS).unwrap().and_then(|a| a.ip()), Some(LOCAL));
    m.handle_message(link, cea_for(&cer, 2001, "server.example.net"), t0);
    assert_eq!((m.state(), m.rfc_state()), (PeerState::Open, RfcState::IOpen));
    assert_eq!(m.sending_link(), Some(link));
    assert_eq!(m.direction(), Some(Direction::Outbound));
    let evs = events(&mut m);
    assert!(evs.iter().any(|e| matches!(e, Event::Up { direction: Direction::Outbound, .. })));
    assert_eq!(m.peer_info().unwrap().origin_host, "server.example.net");

    let req = Message::request(4, 272).hop_by_hop(5).build();
    assert!(matches!(m.handle_message(link, req, t0), Incoming::Request(_)));
    let ans = Message::answer_to(&Message::request(4, 272).hop_by_hop(6).build()).build();
    assert!(matches!(m.handle_message(link, ans, t0), Incoming::Answer(a) if a.hop_by_hop() == 6));
    // Unsupported application: 3007; unknown base command: 3001.
    assert!(matches!(m.handle_message(link, Message::request(16_777_251, 316).build(), t0), Incoming::None));
    assert!(matches!(m.handle_message(link, Message::request(0, 999).build(), t0), Incoming::None));
    let codes: Vec<u32> = transmits(&mut m).iter().map(|(_, a)| a.get(avps::RESULT_CODE).unwrap().unwrap()).collect();
    assert_eq!(codes, vec![3007, 3001]);
}

#[test]
fn cea_failures_timeouts_and_wrong_identity_close_the_link() {
    for (rc, host) in [(3010u32, "server.example.net"), (5010, "server.example.net"), (2001, "impostor.example.net")] {
        let t0 = Instant::now();
        let mut m = PeerMachine::new(
            config("client.example.com", &[4]),
            PeerSettings { identity: Some("server.example.net".into()), ..PeerSettings::default() },
            None,
            IdGenerator::new(1, 2),
            1,
        );
        m.connect(t0);
        let link = dial_of(&events(&mut m));
        m.handle_dialled(link, LOCAL, t0);
        let (_, cer) = transmits(&mut m).pop().unwrap();
        m.handle_message(link, cea_for(&cer, rc, host), t0);
        let evs = events(&mut m);
        let reason = evs.iter().find_map(|e| match e {
            Event::CloseLink { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        match rc {
            2001 => assert!(matches!(reason, Some(CloseReason::IdentityMismatch { .. })), "{reason:?}"),
            _ => assert_eq!(reason, Some(CloseReason::HandshakeFailed { result_code: rc, message: None })),
        }
        assert_eq!(m.state(), PeerState::Disconnected, "no policy: no reconnect");
    }
    // No CEA within the CER timeout.
    let t0 = Instant::now();
    let mut m = machine("client.example.com", None);
    m.connect(t0);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t0);
    assert_eq!(m.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    // The CER timeout is not the watchdog's: a driver must keep it exactly.
    assert_eq!(m.poll_timeouts(), (None, Some(t0 + Duration::from_secs(5))));
    m.handle_timeout(t0 + Duration::from_secs(5));
    assert!(events(&mut m).contains(&Event::CloseLink { link, reason: CloseReason::HandshakeTimeout }));
    // Traffic before the CEA is a protocol error.
    let mut m = machine("client.example.com", None);
    m.connect(t0);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t0);
    m.handle_message(link, Message::request(4, 272).build(), t0);
    assert!(events(&mut m).iter().any(|e| matches!(e, Event::CloseLink { reason: CloseReason::ProtocolError(_), .. })));
}

#[test]
fn inbound_cer_is_answered_or_refused() {
    let t0 = Instant::now();
    let mut m = machine("server.example.net", None);
    let link = m
        .handle_inbound(
            cer_from("client.example.com", 3),
            PeerInfo::from_message(&cer_from("client.example.com", 3)).unwrap(),
            LOCAL,
            t0,
        )
        .unwrap();
    let (l, cea) = transmits(&mut m).pop().unwrap();
    assert_eq!((l, cea.get(avps::RESULT_CODE).unwrap()), (link, Some(2001)));
    assert_eq!((m.state(), m.rfc_state(), m.direction()), (PeerState::Open, RfcState::ROpen, Some(Direction::Inbound)));
    // A second inbound connection while open: R-Reject with 5012.
    let cer = cer_from("client.example.com", 3);
    let err = m.handle_inbound(cer.clone(), PeerInfo::from_message(&cer).unwrap(), LOCAL, t0).unwrap_err();
    assert_eq!(err.get(avps::RESULT_CODE).unwrap(), Some(5012));
    // No common application: 5010.
    let mut m = PeerMachine::new(
        config("server.example.net", &[16_777_251]),
        PeerSettings::default(),
        None,
        IdGenerator::new(1, 2),
        1,
    );
    let err = m.handle_inbound(cer.clone(), PeerInfo::from_message(&cer).unwrap(), LOCAL, t0).unwrap_err();
    assert_eq!(err.get(avps::RESULT_CODE).unwrap(), Some(5010));
    assert_eq!(m.state(), PeerState::Disconnected);
}

#[test]
fn watchdog_suspect_blocks_sends_and_reopen_needs_three_dwas_on_the_new_connection() {
    let t0 = Instant::now();
    let mut m = machine("client.example.com", Some(Doubling::default()));
    let link = open_outbound(&mut m, t0);
    events(&mut m);
    // Tw of silence (the first DWR is due by then, spread over [Tw/2, Tw]):
    // DWR; unanswered: SUSPECT, no sending link.
    m.handle_timeout(t0 + Duration::from_secs(30));
    let (_, dwr) = transmits(&mut m).pop().expect("DWR");
    assert_eq!(dwr.command_code(), commands::DEVICE_WATCHDOG);
    m.handle_timeout(t0 + Duration::from_secs(40));
    assert_eq!(m.state(), PeerState::Suspect);
    assert_eq!(m.sending_link(), None, "SUSPECT stops new requests");
    // Two more unanswered DWRs: DOWN, the link closes, a reconnect is scheduled.
    for t in [70, 80, 110, 120] {
        m.handle_timeout(t0 + Duration::from_secs(t));
    }
    let evs = events(&mut m);
    assert!(evs.contains(&Event::CloseLink { link, reason: CloseReason::WatchdogDown { unanswered: 3 } }), "{evs:?}");
    assert!(evs.iter().any(|e| matches!(e, Event::Down { .. })));
    assert_eq!(m.state(), PeerState::Reconnecting);
    assert_eq!(m.watchdog_state(), WatchdogState::Down);
    // The reconnect: the watchdog survived, so the new connection is REOPEN.
    let t1 = t0 + Duration::from_secs(121);
    m.handle_timeout(t1);
    let link2 = dial_of(&events(&mut m));
    m.handle_dialled(link2, LOCAL, t1);
    let (_, cer) = transmits(&mut m).pop().unwrap();
    m.handle_message(link2, cea_for(&cer, 2001, "server.example.net"), t1);
    assert_eq!(m.state(), PeerState::Reopen);
    assert_eq!(m.sending_link(), None, "REOPEN carries no traffic");
    for i in 1..=3u64 {
        let (l, dwr) = transmits(&mut m).pop().expect("REOPEN DWR");
        assert_eq!((l, dwr.command_code()), (link2, commands::DEVICE_WATCHDOG));
        // Application traffic does not count in REOPEN.
        m.handle_message(link2, Message::answer_to(&Message::request(4, 272).build()).build(), t1);
        m.handle_message(link2, dwa_for(&dwr), t1 + Duration::from_millis(i));
        if i < 3 {
            assert_eq!(m.state(), PeerState::Reopen, "after {i} DWAs");
        }
    }
    assert_eq!(m.state(), PeerState::Open);
    assert_eq!(m.sending_link(), Some(link2));
    let rtts: Vec<Duration> = events(&mut m)
        .into_iter()
        .filter_map(|e| match e {
            Event::WatchdogAnswered { rtt } => Some(rtt),
            _ => None,
        })
        .collect();
    // Each REOPEN DWR goes out when the previous DWA arrives.
    assert_eq!(rtts, vec![Duration::from_millis(1); 3]);
}

/// The reconnect schedule grows on every kind of failure.
#[test]
fn every_failure_kind_makes_the_next_delay_grow() {
    let policy = Doubling::default();
    let mut m = machine("client.example.com", Some(policy.clone()));
    let mut now = Instant::now();
    m.connect(now);
    for kind in 0..8 {
        let link = dial_of(&events(&mut m));
        match kind % 4 {
            // Refused dial.
            0 => m.handle_dial_failed(link, CloseReason::DialFailed { message: "refused".into() }, now),
            // CER timeout.
            1 => {
                m.handle_dialled(link, LOCAL, now);
                now += Duration::from_secs(5);
                m.handle_timeout(now);
            }
            // CEA 3010.
            2 => {
                m.handle_dialled(link, LOCAL, now);
                let (_, cer) = transmits(&mut m).pop().unwrap();
                m.handle_message(link, cea_for(&cer, 3010, "server.example.net"), now);
            }
            // Open, then DPR (REBOOTING) a moment later.
            _ => {
                m.handle_dialled(link, LOCAL, now);
                let (_, cer) = transmits(&mut m).pop().unwrap();
                m.handle_message(link, cea_for(&cer, 2001, "server.example.net"), now);
                now += Duration::from_millis(10);
                let dpr = Message::request(0, commands::DISCONNECT_PEER).avp(avps::DISCONNECT_CAUSE, 0).build();
                m.handle_message(link, dpr, now);
            }
        }
        assert_eq!(m.state(), PeerState::Reconnecting, "failure kind {kind}");
        transmits(&mut m);
        let at = m.poll_timeout().unwrap();
        now = at;
        m.handle_timeout(now);
    }
    let given = policy.given.lock().unwrap().clone();
    let secs: Vec<u64> = given.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60]);
}

#[test]
fn a_stable_connection_resets_the_schedule_and_busy_waits_longer() {
    let policy = Doubling::default();
    let mut m = machine("client.example.com", Some(policy.clone()));
    let t0 = Instant::now();
    m.connect(t0);
    let link = dial_of(&events(&mut m));
    m.handle_dial_failed(link, CloseReason::DialFailed { message: "x".into() }, t0);
    m.handle_timeout(t0 + S);
    let link = dial_of(&events(&mut m));
    m.handle_dial_failed(link, CloseReason::DialFailed { message: "x".into() }, t0 + S);
    // Up for a minute, then the transport drops: back to the first delay.
    let t1 = t0 + 3 * S;
    m.handle_timeout(t1);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t1);
    let (_, cer) = transmits(&mut m).pop().unwrap();
    m.handle_message(link, cea_for(&cer, 2001, "server.example.net"), t1);
    let t2 = t1 + Duration::from_secs(60);
    m.handle_link_closed(link, t2);
    assert_eq!(m.poll_timeout(), Some(t2 + S));
    // DPR BUSY: at least the busy backoff (60 s).
    m.handle_timeout(t2 + S);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t2 + S);
    let (_, cer) = transmits(&mut m).pop().unwrap();
    m.handle_message(link, cea_for(&cer, 2001, "server.example.net"), t2 + S);
    let dpr = Message::request(0, commands::DISCONNECT_PEER).avp(avps::DISCONNECT_CAUSE, 1).build();
    m.handle_message(link, dpr, t2 + 2 * S);
    let (_, dpa) = transmits(&mut m).pop().unwrap();
    assert_eq!(dpa.command_code(), commands::DISCONNECT_PEER);
    assert!(!dpa.is_request());
    let delay = events(&mut m).into_iter().find_map(|e| match e {
        Event::ReconnectScheduled { delay, .. } => Some(delay),
        _ => None,
    });
    assert_eq!(delay, Some(Duration::from_secs(60)));
    assert_eq!(m.last_reason(), Some(&CloseReason::PeerDisconnected { cause: Some(1) }));
    // A clean close: the next open is OKAY at once, no REOPEN.
    assert_eq!(m.watchdog_state(), WatchdogState::Initial);
}

#[test]
fn the_schedule_can_give_up() {
    let policy = Doubling { limit: Some(2), ..Doubling::default() };
    let mut m = machine("client.example.com", Some(policy));
    let mut now = Instant::now();
    m.connect(now);
    for _ in 0..3 {
        let link = dial_of(&events(&mut m));
        m.handle_dial_failed(link, CloseReason::DialFailed { message: "x".into() }, now);
        if let Some(t) = m.poll_timeout() {
            now = t;
            m.handle_timeout(now);
        }
    }
    assert_eq!(m.state(), PeerState::Closed);
    assert!(m.is_stopped());
}

#[test]
fn origin_state_id_change_is_reported() {
    let t0 = Instant::now();
    let mut m = machine("server.example.net", None);
    let cer = cer_from("client.example.com", 3);
    let link = m.handle_inbound(cer.clone(), PeerInfo::from_message(&cer).unwrap(), LOCAL, t0).unwrap();
    events(&mut m);
    m.handle_link_closed(link, t0);
    let cer = cer_from("client.example.com", 4);
    let link = m.handle_inbound(cer.clone(), PeerInfo::from_message(&cer).unwrap(), LOCAL, t0 + S).unwrap();
    assert!(events(&mut m).contains(&Event::Restarted { previous: 3, current: 4 }));
    // Also seen in a DWR.
    let dwr = Message::request(0, commands::DEVICE_WATCHDOG).avp(avps::ORIGIN_STATE_ID, 9u32).build();
    m.handle_message(link, dwr, t0 + 2 * S);
    assert!(events(&mut m).contains(&Event::Restarted { previous: 4, current: 9 }));
}

#[test]
fn local_disconnect_waits_for_the_dpa_or_its_timeout() {
    let t0 = Instant::now();
    let mut m = machine("client.example.com", Some(Doubling::default()));
    let link = open_outbound(&mut m, t0);
    transmits(&mut m);
    events(&mut m);
    m.disconnect(disconnect_cause::REBOOTING, t0);
    assert_eq!(m.state(), PeerState::Closing);
    let (_, dpr) = transmits(&mut m).pop().unwrap();
    assert_eq!(dpr.get(avps::DISCONNECT_CAUSE).unwrap(), Some(0));
    let dpa = Message::answer_to(&dpr).avp(avps::RESULT_CODE, 2001u32).build();
    m.handle_message(link, dpa, t0);
    let evs = events(&mut m);
    assert!(evs.contains(&Event::CloseLink {
        link,
        reason: CloseReason::LocalDisconnect { cause: 0, dpa_result_code: Some(2001) }
    }));
    assert_eq!(m.state(), PeerState::Closed, "stopped: no reconnect");
    // Without a DPA: the DPA timeout.
    let mut m = machine("client.example.com", None);
    let link = open_outbound(&mut m, t0);
    m.disconnect(disconnect_cause::BUSY, t0);
    m.handle_timeout(t0 + Duration::from_secs(2));
    assert!(events(&mut m).contains(&Event::CloseLink {
        link,
        reason: CloseReason::LocalDisconnect { cause: 1, dpa_result_code: None }
    }));
}

/// Stale-failure regression: after a rotation, the old connection's end
/// does not touch the replacement.
#[test]
fn rotation_keeps_the_peer_up_and_the_old_link_failing_changes_nothing() {
    let t0 = Instant::now();
    let mut m = machine("client.example.com", Some(Doubling::default()));
    let old = open_outbound(&mut m, t0);
    transmits(&mut m);
    events(&mut m);
    assert!(m.rotate(t0));
    assert!(!m.rotate(t0), "one rotation at a time");
    let new = dial_of(&events(&mut m));
    m.handle_dialled(new, LOCAL, t0);
    assert_eq!(m.sending_link(), Some(old), "the old link carries traffic until the new one is open");
    let (_, cer) = transmits(&mut m).pop().unwrap();
    m.handle_message(new, cea_for(&cer, 2001, "server.example.net"), t0);
    assert!(events(&mut m).contains(&Event::Replaced { old, new }));
    assert_eq!(m.sending_link(), Some(new));
    // An answer still arrives on the old link.
    let ans = Message::answer_to(&Message::request(4, 272).hop_by_hop(77).build()).build();
    assert!(matches!(m.handle_message(old, ans, t0), Incoming::Answer(_)));
    // The old link fails (or is DPR'd): the peer stays open, no Down.
    m.handle_link_closed(old, t0 + S);
    let evs = events(&mut m);
    assert!(evs.contains(&Event::CloseLink { link: old, reason: CloseReason::TransportClosed }));
    assert!(!evs.iter().any(|e| matches!(e, Event::Down { .. } | Event::StateChanged { .. })), "{evs:?}");
    assert_eq!((m.state(), m.sending_link()), (PeerState::Open, Some(new)));
    // A failed replacement leaves the old one in place.
    assert!(m.rotate(t0 + 2 * S));
    let r = dial_of(&events(&mut m));
    m.handle_dial_failed(r, CloseReason::DialFailed { message: "x".into() }, t0 + 2 * S);
    assert_eq!((m.state(), m.sending_link()), (PeerState::Open, Some(new)));
}

// ---- election on every interleaving ----------------------------------------

/// One simulated TCP connection between nodes 0 and 1.
#[derive(Debug)]
struct Conn {
    initiator: usize,
    dialled: bool,
    /// The link each node has for it.
    link: [Option<LinkId>; 2],
    /// In flight towards each node: messages, then `None` for a FIN.
    to: [VecDeque<Option<Message>>; 2],
    /// Node closed its end.
    closed: [bool; 2],
}

struct Net {
    nodes: [PeerMachine; 2],
    conns: Vec<Conn>,
    now: Instant,
    elections: [Vec<bool>; 2],
    /// Application requests each node got from the other over an open link.
    delivered: [usize; 2],
}

impl Net {
    fn new(hosts: [&str; 2], connect: [bool; 2]) -> Net {
        let mk = |h: &str| machine(h, Some(Doubling::default()));
        let mut net = Net {
            nodes: [mk(hosts[0]), mk(hosts[1])],
            conns: Vec::new(),
            now: Instant::now(),
            elections: [Vec::new(), Vec::new()],
            delivered: [0, 0],
        };
        for (i, c) in connect.iter().enumerate() {
            if *c {
                net.nodes[i].connect(net.now);
                net.settle(i);
            }
        }
        net
    }

    fn conn_of(&self, node: usize, link: LinkId) -> Option<usize> {
        self.conns.iter().position(|c| c.link[node] == Some(link))
    }

    /// Moves node's transmits into the network and handles its events.
    fn settle(&mut self, node: usize) {
        loop {
            let mut progress = false;
            while let Some((link, msg)) = self.nodes[node].poll_transmit() {
                progress = true;
                if let Some(c) = self.conn_of(node, link) {
                    if !self.conns[c].closed[node] {
                        self.conns[c].to[1 - node].push_back(Some(msg));
                    }
                }
            }
            while let Some(ev) = self.nodes[node].poll_event() {
                progress = true;
                match ev {
                    Event::Dial { link } => self.conns.push(Conn {
                        initiator: node,
                        dialled: false,
                        link: if node == 0 { [Some(link), None] } else { [None, Some(link)] },
                        to: [VecDeque::new(), VecDeque::new()],
                        closed: [false, false],
                    }),
                    Event::CloseLink { link, .. } => {
                        // Transmits queued before the close go first.
                        while let Some((l, msg)) = self.nodes[node].poll_transmit() {
                            if let Some(c) = self.conn_of(node, l) {
                                if !self.conns[c].closed[node] {
                                    self.conns[c].to[1 - node].push_back(Some(msg));
                                }
                            }
                        }
                        if let Some(c) = self.conn_of(node, link) {
                            let conn = &mut self.conns[c];
                            conn.link[node] = None;
                            conn.closed[node] = true;
                            conn.to[1 - node].push_back(None);
                        }
                    }
                    Event::Election { won } => self.elections[node].push(won),
                    _ => {}
                }
            }
            if !progress {
                return;
            }
        }
    }

    /// The actions possible now.
    fn actions(&self) -> Vec<(usize, Option<usize>)> {
        let mut v = Vec::new();
        for (i, c) in self.conns.iter().enumerate() {
            if !c.dialled && c.link[c.initiator].is_some() {
                v.push((i, None));
            }
            for to in 0..2 {
                if !c.to[to].is_empty() {
                    v.push((i, Some(to)));
                }
            }
        }
        v
    }

    fn step(&mut self, (c, to): (usize, Option<usize>)) {
        self.now += Duration::from_micros(1);
        let now = self.now;
        match to {
            None => {
                let node = self.conns[c].initiator;
                self.conns[c].dialled = true;
                if let Some(link) = self.conns[c].link[node] {
                    self.nodes[node].handle_dialled(link, LOCAL, now);
                }
                self.settle(node);
            }
            Some(node) => {
                let item = self.conns[c].to[node].pop_front().flatten();
                if self.conns[c].closed[node] {
                    return; // its end is closed: the bytes are discarded
                }
                match (item, self.conns[c].link[node]) {
                    (None, Some(link)) => {
                        self.conns[c].closed[node] = true;
                        self.conns[c].link[node] = None;
                        self.nodes[node].handle_link_closed(link, now);
                    }
                    (None, None) => self.conns[c].closed[node] = true,
                    (Some(msg), Some(link)) => {
                        if let Incoming::Request(_) = self.nodes[node].handle_message(link, msg, now) {
                            self.delivered[node] += 1;
                        }
                    }
                    (Some(cer), None) => {
                        // The acceptor's first message: the CER.
                        let info = PeerInfo::from_message(&cer).unwrap();
                        match self.nodes[node].handle_inbound(cer, info, LOCAL, now) {
                            Ok(link) => self.conns[c].link[node] = Some(link),
                            Err(cea) => {
                                let conn = &mut self.conns[c];
                                conn.to[1 - node].push_back(Some(cea));
                                conn.to[1 - node].push_back(None);
                                conn.closed[node] = true;
                            }
                        }
                    }
                }
                self.settle(node);
            }
        }
    }

    /// The connection both nodes hold open, checking that it is the only one.
    fn survivor(&self) -> Result<usize, String> {
        let open: Vec<usize> =
            (0..self.conns.len()).filter(|&i| self.conns[i].link.iter().any(Option::is_some)).collect();
        let [a, b] = &self.nodes;
        if a.state() != PeerState::Open || b.state() != PeerState::Open {
            return Err(format!("states {:?} / {:?}, conns {:?}", a.state(), b.state(), self.conns));
        }
        let ca = self.conn_of(0, a.sending_link().unwrap());
        let cb = self.conn_of(1, b.sending_link().unwrap());
        match (ca, cb, open.as_slice()) {
            (Some(x), Some(y), [z]) if x == y && y == *z => Ok(x),
            _ => Err(format!("not one shared connection: {ca:?} {cb:?} open {open:?}: {:?}", self.conns)),
        }
    }
}

/// Runs every interleaving of the actions from the start; returns how many
/// complete runs there were. `check` sees each quiescent network.
fn explore(hosts: [&str; 2], connect: [bool; 2], check: &mut dyn FnMut(&Net, &[usize])) -> usize {
    let mut runs = 0;
    let mut stack: Vec<Vec<usize>> = vec![Vec::new()];
    while let Some(prefix) = stack.pop() {
        let mut net = Net::new(hosts, connect);
        let mut path = prefix.clone();
        for &i in &prefix {
            let a = net.actions();
            net.step(a[i]);
        }
        loop {
            let actions = net.actions();
            if actions.is_empty() {
                runs += 1;
                check(&net, &path);
                break;
            }
            assert!(path.len() < 200, "runaway interleaving");
            for i in 1..actions.len() {
                let mut p = path.clone();
                p.push(i);
                stack.push(p);
            }
            path.push(0);
            net.step(actions[0]);
        }
    }
    runs
}

#[test]
fn election_keeps_exactly_one_connection_on_every_interleaving() {
    for hosts in [
        ["aaa.example.com", "bbb.example.com"],
        ["bbb.example.com", "aaa.example.com"],
        ["Node.Example", "node.example2"],
    ] {
        let lower = if wins_election(hosts[0], hosts[1]) { 1 } else { 0 };
        let mut elections = 0;
        let runs = explore(hosts, [true, true], &mut |net, path| {
            let c = net.survivor().unwrap_or_else(|e| panic!("{hosts:?} path {path:?}: {e}"));
            assert_eq!(
                net.conns[c].initiator, lower,
                "{hosts:?} path {path:?}: the connection initiated by the lower identity survives"
            );
            for node in 0..2 {
                // The winner of an election is the higher identity.
                for &won in &net.elections[node] {
                    assert_eq!(won, node != lower, "{hosts:?} path {path:?}");
                }
            }
            elections += usize::from(!net.elections[0].is_empty() || !net.elections[1].is_empty());
        });
        assert!(runs > 20, "{hosts:?}: only {runs} interleavings explored");
        assert_eq!(elections, runs, "{hosts:?}: both nodes connecting always elects");
    }
}

#[test]
fn one_side_connecting_opens_without_election() {
    let runs = explore(["aaa.example.com", "bbb.example.com"], [true, false], &mut |net, path| {
        let c = net.survivor().unwrap_or_else(|e| panic!("path {path:?}: {e}"));
        assert_eq!(net.conns[c].initiator, 0);
        assert!(net.elections.iter().all(Vec::is_empty));
    });
    assert_eq!(runs, 1);
}

#[test]
fn election_comparison_is_octet_order() {
    assert!(wins_election("b.example", "a.example"));
    assert!(!wins_election("a.example", "b.example"));
    assert!(wins_election("a.example", "B.example"), "'a' (0x61) is above 'B' (0x42)");
    assert!(!wins_election("B.example", "a.example"));
    assert!(wins_election("aa", "a"), "a longer identity with the same prefix succeeds it");
    assert!(!wins_election("same", "same"), "equal identities: nobody wins");
}

fn inband_machine(host: &str, inband_tls: bool) -> PeerMachine {
    let mut c = (*config(host, &[4])).clone();
    c.inband_tls = inband_tls;
    PeerMachine::new(Arc::new(c), PeerSettings::default(), None, IdGenerator::new(1_700_000_000, 42), 1)
}

fn inband_ids(m: &Message) -> Vec<u32> {
    m.get_all(avps::INBAND_SECURITY_ID).filter_map(Result::ok).collect()
}

#[test]
fn in_band_tls_offer_and_choice_follow_rfc_3588_section_6_10() {
    let plain = |ids: &[u32]| {
        let mut b = Message::request(0, commands::CAPABILITIES_EXCHANGE).avp(avps::ORIGIN_HOST, "p.example.net");
        for id in ids {
            b = b.avp(avps::INBAND_SECURITY_ID, *id);
        }
        b.build()
    };
    let none = (*config("a", &[4])).clone();
    let tls = PeerConfig { inband_tls: true, ..none.clone() };
    assert_eq!(inband_offer(&plain(&[])), (true, false), "absent means NO_INBAND_SECURITY");
    assert_eq!(inband_offer(&plain(&[0, 1])), (true, true));
    assert_eq!(inband_choice(&none, &plain(&[]), false), Ok(false));
    assert_eq!(inband_choice(&none, &plain(&[0, 1]), false), Ok(false));
    assert_eq!(inband_choice(&none, &plain(&[1]), false), Err(5017), "TLS only, to a node without it");
    assert_eq!(inband_choice(&tls, &plain(&[0, 1]), false), Ok(true));
    assert_eq!(inband_choice(&tls, &plain(&[0]), false), Err(5017), "a node requiring TLS");
    assert_eq!(inband_choice(&tls, &plain(&[0]), true), Ok(false), "TLS-first needs nothing more");
    assert_eq!(inband_choice(&none, &plain(&[1]), true), Ok(false));
}

#[test]
fn in_band_tls_is_offered_agreed_and_required() {
    let t0 = Instant::now();
    // Initiator requiring TLS: the CER offers TLS only; a CEA with TLS
    // agrees; the link is marked for the upgrade.
    let mut m = inband_machine("client.example.com", true);
    m.connect(t0);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t0);
    let (_, cer) = transmits(&mut m).pop().expect("CER");
    assert_eq!(inband_ids(&cer), vec![INBAND_TLS]);
    let cea = {
        let b = Message::answer_to(&cer).avp(avps::RESULT_CODE, 2001u32);
        let peer = (*config("server.example.net", &[4])).clone();
        capabilities_with(&peer, b, Some(LOCAL), INBAND_TLS).build()
    };
    m.handle_message(link, cea, t0);
    assert!(m.inband_tls(link));
    assert_eq!(m.state(), PeerState::Open);

    // The same CEA without TLS closes the link.
    let mut m = inband_machine("client.example.com", true);
    m.connect(t0);
    let link = dial_of(&events(&mut m));
    m.handle_dialled(link, LOCAL, t0);
    let (_, cer) = transmits(&mut m).pop().expect("CER");
    m.handle_message(link, cea_for(&cer, 2001, "server.example.net"), t0);
    assert!(!m.inband_tls(link));
    assert_ne!(m.state(), PeerState::Open);
    assert!(events(&mut m).iter().any(|e| matches!(e, Event::CloseLink { reason: CloseReason::Tls { .. }, .. })));

    // A TLS-first link offers no in-band TLS.
    let mut m = inband_machine("client.example.com", true);
    m.connect(t0);
    let link = dial_of(&events(&mut m));
    m.set_secure(link);
    m.handle_dialled(link, LOCAL, t0);
    let (_, cer) = transmits(&mut m).pop().expect("CER");
    assert_eq!(inband_ids(&cer), vec![INBAND_NONE]);

    // Responder requiring TLS: a CER offering it gets a CEA with TLS; one
    // without gets 5017.
    let mut r = inband_machine("server.example.com", true);
    let offered = Message::request(0, commands::CAPABILITIES_EXCHANGE)
        .hop_by_hop(5)
        .avp(avps::ORIGIN_HOST, "client.example.net")
        .avp(avps::ORIGIN_REALM, "example.net")
        .avp(avps::HOST_IP_ADDRESS, LOCAL)
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "peer")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .avp(avps::INBAND_SECURITY_ID, INBAND_TLS)
        .build();
    let info = PeerInfo::from_message(&offered).unwrap();
    let link = r.handle_inbound(offered, info, LOCAL, t0).expect("accepted");
    let (_, cea) = transmits(&mut r).pop().expect("CEA");
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(inband_ids(&cea), vec![INBAND_TLS]);
    assert!(r.inband_tls(link));
    let mut r = inband_machine("server.example.com", true);
    let cer = cer_from("client.example.net", 1);
    let info = PeerInfo::from_message(&cer).unwrap();
    let refused = r.handle_inbound(cer, info, LOCAL, t0).expect_err("refused");
    assert_eq!(refused.get(avps::RESULT_CODE).unwrap(), Some(5017));
}

#[test]
fn a_cea_with_two_origin_hosts_or_a_bad_one_fails_the_connection() {
    let t0 = Instant::now();
    for hosts in [&["mme1.example.net", "hss.example.net"][..], &["bad host!.example.net"][..]] {
        let mut m = machine("client.example.com", None);
        m.connect(t0);
        let link = dial_of(&events(&mut m));
        m.handle_dialled(link, LOCAL, t0);
        let (_, cer) = transmits(&mut m).pop().expect("CER");
        let mut b = Message::answer_to(&cer).avp(avps::RESULT_CODE, 2001u32);
        for h in hosts {
            b = b.avp(avps::ORIGIN_HOST, *h);
        }
        let cea = b
            .avp(avps::ORIGIN_REALM, "example.net")
            .avp(avps::HOST_IP_ADDRESS, LOCAL)
            .avp(avps::VENDOR_ID, 0u32)
            .avp(avps::PRODUCT_NAME, "peer")
            .avp(avps::AUTH_APPLICATION_ID, 4u32)
            .build();
        m.handle_message(link, cea, t0);
        assert_ne!(m.state(), PeerState::Open, "{hosts:?}");
        assert!(
            events(&mut m).iter().any(|e| matches!(e, Event::CloseLink { reason: CloseReason::ProtocolError(_), .. })),
            "{hosts:?}"
        );
    }
}

/// 1,000 peers whose connections open at the same instant (a restart, a
/// bench) send their first DWRs spread over [Tw/2, Tw + jitter], drawn from
/// each machine's own seed; the following ones come every Tw ± jitter.
#[test]
fn first_dwrs_of_peers_opened_together_are_spread_then_tw_plus_minus_jitter() {
    let t0 = Instant::now();
    let config = config("client.example.com", &[4]);
    assert_eq!(config.watchdog, WatchdogConfig { jitter: Duration::ZERO, ..WatchdogConfig::default() });
    // The defaults of the RFC: ±2 s of jitter.
    let config = Arc::new(PeerConfig { watchdog: WatchdogConfig::default(), ..(*config).clone() });
    let (lo, hi) = (Duration::from_secs(15), Duration::from_secs(32));
    let mut buckets = vec![0usize; 171];
    let mut firsts = Vec::new();
    for seed in 0..1000u64 {
        let mut m = PeerMachine::new(
            config.clone(),
            PeerSettings::default(),
            None,
            IdGenerator::new(1_700_000_000, seed),
            seed,
        );
        let link = open_outbound(&mut m, t0);
        assert!(transmits(&mut m).is_empty());
        let due = m.poll_timeout().expect("the watchdog is armed");
        // Open and idle: the only deadline is the watchdog's.
        assert_eq!(m.poll_timeouts(), (Some(due), None), "seed {seed}");
        let d = due - t0;
        assert!((lo..=hi).contains(&d), "seed {seed}: first DWR after {d:?}");
        buckets[((d - lo).as_millis() / 100) as usize] += 1;
        firsts.push(d);
        // Nothing before it is due; then the DWR goes out on the link.
        m.handle_timeout(due - Duration::from_millis(1));
        assert!(transmits(&mut m).is_empty(), "seed {seed}: no DWR before it is due");
        m.handle_timeout(due);
        let (l, dwr) = transmits(&mut m).pop().expect("DWR");
        assert_eq!((l, dwr.command_code()), (link, commands::DEVICE_WATCHDOG));
        // Later intervals: Tw ± 2 s from each DWA.
        let (mut dwr, mut at) = (dwr, due + Duration::from_millis(5));
        for round in 0..3 {
            m.handle_message(link, dwa_for(&dwr), at);
            let next = m.poll_timeout().unwrap();
            assert!(
                (Duration::from_secs(28)..=Duration::from_secs(32)).contains(&(next - at)),
                "seed {seed} round {round}: {:?}",
                next - at
            );
            m.handle_timeout(next);
            dwr = transmits(&mut m).pop().expect("DWR").1;
            assert_eq!(dwr.command_code(), commands::DEVICE_WATCHDOG);
            at = next + Duration::from_millis(5);
        }
        assert_eq!(m.state(), PeerState::Open);
    }
    let max = *buckets.iter().max().unwrap();
    assert!(max <= 20, "a 100 ms bucket holds {max} of 1000 first DWRs: {buckets:?}");
    assert!(buckets.iter().filter(|&&n| n > 0).count() >= 160, "{buckets:?}");
    // The same seed draws the same first interval.
    let mut again = PeerMachine::new(config, PeerSettings::default(), None, IdGenerator::new(1_700_000_000, 7), 7);
    open_outbound(&mut again, t0);
    assert_eq!(again.poll_timeout().unwrap() - t0, firsts[7]);
}
