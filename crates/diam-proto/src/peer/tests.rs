//! Every transition of the peer state machine, on simulated time.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::types::AddressValue;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn config(apps: &[u32]) -> PeerConfig {
    PeerConfig {
        origin_host: "client.example.com".into(),
        origin_realm: "example.com".into(),
        vendor_id: 99,
        origin_state_id: 7,
        firmware_revision: Some(3),
        auth_application_ids: apps.to_vec(),
        watchdog: WatchdogConfig {
            interval: Duration::from_secs(30),
            jitter: Duration::ZERO,
            // These tests time the first DWR exactly.
            first_interval_spread: Duration::ZERO,
            dwr_timeout: Duration::from_secs(10),
            max_dwr_failures: 3,
            reopen_dwas: 3,
        },
        ..PeerConfig::default()
    }
}

fn conn(role: Role, apps: &[u32]) -> PeerConnection {
    PeerConnection::new(role, config(apps), IdGenerator::new(1_700_000_000, 42), 1)
}

fn transmits(c: &mut PeerConnection) -> Vec<Message> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events(c: &mut PeerConnection) -> Vec<PeerEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn cea_for(cer: &Message, rc: u32, apps: &[u32]) -> Message {
    let mut b = Message::answer_to(cer)
        .avp(avps::RESULT_CODE, rc)
        .avp(avps::ORIGIN_HOST, "server.example.net")
        .avp(avps::ORIGIN_REALM, "example.net")
        .avp(avps::HOST_IP_ADDRESS, LOCAL)
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "peer");
    for a in apps {
        b = b.avp(avps::AUTH_APPLICATION_ID, *a);
    }
    b.build()
}

/// Drives an initiator to OPEN; returns it with the open time.
fn open_initiator(apps: &[u32]) -> (PeerConnection, Instant) {
    let t0 = Instant::now();
    let mut c = conn(Role::Initiator, apps);
    c.handle_connecting();
    assert_eq!(c.state(), PeerState::Connecting);
    c.handle_connected(LOCAL, t0);
    let cer = transmits(&mut c).pop().unwrap();
    c.handle_message(cea_for(&cer, 2001, apps), t0);
    assert_eq!(c.state(), PeerState::Open);
    events(&mut c);
    (c, t0)
}

#[test]
fn initiator_sends_full_cer_and_opens_on_2001() {
    let t0 = Instant::now();
    let mut c = PeerConnection::new(
        Role::Initiator,
        PeerConfig {
            vendor_specific_application_ids: vec![VendorApp {
                vendor_id: 10415,
                application_id: 16_777_238,
                auth: true,
            }],
            acct_application_ids: vec![3],
            ..config(&[4])
        },
        IdGenerator::new(1_700_000_000, 42),
        1,
    );
    assert_eq!(c.state(), PeerState::Disconnected);
    c.handle_connected(LOCAL, t0);
    assert_eq!(c.state(), PeerState::CerSent);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    let out = transmits(&mut c);
    assert_eq!(out.len(), 1);
    let cer = &out[0];
    assert!(cer.is_request());
    assert_eq!((cer.command_code(), cer.application_id()), (257, 0));
    assert_eq!(cer.get(avps::ORIGIN_HOST).unwrap(), Some("client.example.com"));
    assert_eq!(cer.get(avps::ORIGIN_REALM).unwrap(), Some("example.com"));
    assert_eq!(cer.get(avps::HOST_IP_ADDRESS).unwrap(), Some(AddressValue::V4(Ipv4Addr::LOCALHOST)));
    assert_eq!(cer.get(avps::VENDOR_ID).unwrap(), Some(99));
    assert!(cer.get(avps::PRODUCT_NAME).unwrap().unwrap().starts_with("diam "));
    assert_eq!(cer.get(avps::ORIGIN_STATE_ID).unwrap(), Some(7));
    assert_eq!(cer.get(avps::FIRMWARE_REVISION).unwrap(), Some(3));
    assert_eq!(cer.get(avps::AUTH_APPLICATION_ID).unwrap(), Some(4));
    assert_eq!(cer.get(avps::ACCT_APPLICATION_ID).unwrap(), Some(3));
    assert_eq!(cer.get(avps::INBAND_SECURITY_ID).unwrap(), Some(0));
    let vsai = PeerInfo::from_message(cer).unwrap().vendor_specific_application_ids;
    assert_eq!(vsai, vec![VendorApp { vendor_id: 10415, application_id: 16_777_238, auth: true }]);
    assert!(!c.can_send());

    c.handle_message(cea_for(cer, 2001, &[4]), t0 + Duration::from_millis(3));
    assert_eq!(c.state(), PeerState::Open);
    assert!(c.can_send());
    let ev = events(&mut c);
    assert!(
        matches!(&ev[0], PeerEvent::Opened { peer, applications } if peer.origin_host == "server.example.net" && applications == &vec![4])
    );
    assert_eq!(c.peer_info().unwrap().product_name, "peer");
    // Only the watchdog timer remains.
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(3) + Duration::from_secs(30)));
}

#[test]
fn cea_error_codes_fail_with_the_code() {
    for rc in [5010, 3010] {
        let t0 = Instant::now();
        let mut c = conn(Role::Initiator, &[4]);
        c.handle_connected(LOCAL, t0);
        let cer = transmits(&mut c).pop().unwrap();
        c.handle_message(cea_for(&cer, rc, &[]), t0);
        assert_eq!(c.state(), PeerState::Failed);
        assert_eq!(
            events(&mut c),
            vec![PeerEvent::Closed(CloseReason::HandshakeFailed { result_code: rc, message: None })]
        );
    }
}

#[test]
fn cea_timeout() {
    let t0 = Instant::now();
    let mut c = conn(Role::Initiator, &[4]);
    c.handle_connected(LOCAL, t0);
    c.handle_timeout(t0 + Duration::from_millis(4999));
    assert_eq!(c.state(), PeerState::CerSent);
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(c.state(), PeerState::Failed);
    assert_eq!(events(&mut c), vec![PeerEvent::Closed(CloseReason::HandshakeTimeout)]);
}

#[test]
fn cea_for_another_hop_by_hop_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut c = conn(Role::Initiator, &[4]);
    c.handle_connected(LOCAL, t0);
    let cer = transmits(&mut c).pop().unwrap();
    let stray = cea_for(&cer.with_ids(cer.hop_by_hop().wrapping_add(1), 0), 2001, &[4]);
    c.handle_message(stray, t0);
    assert_eq!(c.state(), PeerState::Failed);
    assert!(matches!(events(&mut c)[..], [PeerEvent::Closed(CloseReason::ProtocolError(_))]));
}

fn cer(apps: &[u32], host: &str) -> Message {
    let mut b = Message::request(0, 257).hop_by_hop(11).end_to_end(12).avp(avps::ORIGIN_HOST, host);
    if !host.is_empty() {
        b = b.avp(avps::ORIGIN_REALM, "example.org");
    }
    for a in apps {
        b = b.avp(avps::AUTH_APPLICATION_ID, *a);
    }
    b.build()
}

#[test]
fn responder_answers_cer() {
    let t0 = Instant::now();
    let mut c = conn(Role::Responder, &[4]);
    c.handle_connected(LOCAL, t0);
    assert_eq!(c.state(), PeerState::Connecting);
    assert!(transmits(&mut c).is_empty());
    c.handle_message(cer(&[4, 16_777_238], "peer.example.org"), t0);
    let cea = transmits(&mut c).pop().unwrap();
    assert!(!cea.is_request());
    assert_eq!(cea.hop_by_hop(), 11);
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(cea.get(avps::ORIGIN_HOST).unwrap(), Some("client.example.com"));
    assert_eq!(c.state(), PeerState::Open);
    assert_eq!(c.applications(), &[4]);
}

#[test]
fn responder_rejects_no_common_application_with_5010() {
    let t0 = Instant::now();
    let mut c = conn(Role::Responder, &[4]);
    c.handle_connected(LOCAL, t0);
    c.handle_message(cer(&[16_777_251], "peer.example.org"), t0);
    let cea = transmits(&mut c).pop().unwrap();
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(5010));
    assert_eq!(c.state(), PeerState::Failed);
    assert!(matches!(events(&mut c)[..], [PeerEvent::Closed(CloseReason::HandshakeFailed { result_code: 5010, .. })]));
}

#[test]
fn relay_accepts_any_application() {
    let t0 = Instant::now();
    let mut c = conn(Role::Responder, &[apps::RELAY]);
    c.handle_connected(LOCAL, t0);
    c.handle_message(cer(&[16_777_251], "peer.example.org"), t0);
    assert_eq!(transmits(&mut c)[0].get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert!(c.supports(12345));
    // The client side advertising Relay also finds a common application.
    let mut c = conn(Role::Responder, &[4]);
    c.handle_connected(LOCAL, t0);
    c.handle_message(cer(&[apps::RELAY], "peer.example.org"), t0);
    assert_eq!(transmits(&mut c)[0].get(avps::RESULT_CODE).unwrap(), Some(2001));
}

#[test]
fn responder_missing_origin_and_cer_timeout() {
    let t0 = Instant::now();
    let mut c = conn(Role::Responder, &[4]);
    c.handle_connected(LOCAL, t0);
    c.handle_message(cer(&[4], ""), t0);
    assert_eq!(transmits(&mut c)[0].get(avps::RESULT_CODE).unwrap(), Some(5005));
    assert_eq!(c.state(), PeerState::Failed);

    let mut c = conn(Role::Responder, &[4]);
    c.handle_connected(LOCAL, t0);
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(events(&mut c), vec![PeerEvent::Closed(CloseReason::HandshakeTimeout)]);
}

#[test]
fn traffic_before_capabilities_exchange_is_a_protocol_error() {
    let t0 = Instant::now();
    let mut c = conn(Role::Responder, &[4]);
    c.handle_connected(LOCAL, t0);
    c.handle_message(Message::request(4, 272).build(), t0);
    assert_eq!(c.state(), PeerState::Failed);
    assert!(matches!(events(&mut c)[..], [PeerEvent::Closed(CloseReason::ProtocolError(_))]));
}

#[test]
fn answers_dwr_and_runs_the_watchdog() {
    let (mut c, t0) = open_initiator(&[4]);
    let dwr = Message::request(0, 280).hop_by_hop(77).avp(avps::ORIGIN_HOST, "x").avp(avps::ORIGIN_REALM, "y").build();
    c.handle_message(dwr, t0 + Duration::from_secs(1));
    let dwa = transmits(&mut c).pop().unwrap();
    assert_eq!((dwa.command_code(), dwa.is_request(), dwa.hop_by_hop()), (280, false, 77));
    assert_eq!(dwa.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(dwa.get(avps::ORIGIN_STATE_ID).unwrap(), Some(7));

    // Received DWR counts as traffic: our own DWR comes Tw after it.
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(31)));
    c.handle_timeout(t0 + Duration::from_secs(31));
    let ours = transmits(&mut c).pop().unwrap();
    assert!(ours.is_request() && ours.command_code() == 280);
    assert_eq!(c.state(), PeerState::DwrSent);
    let answer = Message::answer_to(&ours).avp(avps::RESULT_CODE, 2001u32).build();
    c.handle_message(answer, t0 + Duration::from_secs(32));
    assert_eq!(c.state(), PeerState::Open);
}

#[test]
fn silent_peer_goes_down_after_max_dwr_failures() {
    let (mut c, t0) = open_initiator(&[4]);
    let mut dwrs = 0;
    let mut now = t0;
    while c.state() != PeerState::Failed {
        now = c.poll_timeout().expect("a timer is armed until DOWN");
        c.handle_timeout(now);
        dwrs += transmits(&mut c).len();
    }
    assert_eq!(dwrs, 3);
    // Tw 30 + 10, then (Tw 30 + 10) twice: DOWN at 120 s.
    assert_eq!(now, t0 + Duration::from_secs(120));
    let ev = events(&mut c);
    assert!(ev.contains(&PeerEvent::Watchdog { from: WatchdogState::Okay, to: WatchdogState::Suspect }));
    assert_eq!(ev.last(), Some(&PeerEvent::Closed(CloseReason::WatchdogDown { unanswered: 3 })));
}

#[test]
fn peer_dpr_is_answered_and_cause_exposed() {
    let (mut c, t0) = open_initiator(&[4]);
    let dpr = Message::request(0, 282)
        .hop_by_hop(5)
        .avp(avps::ORIGIN_HOST, "server.example.net")
        .avp(avps::ORIGIN_REALM, "example.net")
        .avp(avps::DISCONNECT_CAUSE, disconnect_cause::BUSY)
        .build();
    c.handle_message(dpr, t0);
    let dpa = transmits(&mut c).pop().unwrap();
    assert_eq!((dpa.command_code(), dpa.is_request()), (282, false));
    assert_eq!(dpa.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(c.state(), PeerState::Closed);
    let ev = events(&mut c);
    let Some(PeerEvent::Closed(reason)) = ev.last() else { panic!("{ev:?}") };
    assert_eq!(reason, &CloseReason::PeerDisconnected { cause: Some(1) });
    assert!(reason.wants_long_backoff());
    assert!(!CloseReason::PeerDisconnected { cause: Some(0) }.wants_long_backoff());
}

#[test]
fn local_disconnect_waits_for_dpa_or_timeout() {
    let (mut c, t0) = open_initiator(&[4]);
    c.disconnect(disconnect_cause::REBOOTING, t0);
    assert_eq!(c.state(), PeerState::Closing);
    let dpr = transmits(&mut c).pop().unwrap();
    assert_eq!(dpr.get(avps::DISCONNECT_CAUSE).unwrap(), Some(0));
    let dpa = Message::answer_to(&dpr).avp(avps::RESULT_CODE, 2001u32).build();
    c.handle_message(dpa, t0);
    assert_eq!(c.state(), PeerState::Closed);
    assert_eq!(
        events(&mut c),
        vec![PeerEvent::Closed(CloseReason::LocalDisconnect { cause: 0, dpa_result_code: Some(2001) })]
    );

    let (mut c, t0) = open_initiator(&[4]);
    c.disconnect(disconnect_cause::DO_NOT_WANT_TO_TALK_TO_YOU, t0);
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    c.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(c.state(), PeerState::Closed);
    // Before OPEN, disconnect closes at once.
    let mut c = conn(Role::Initiator, &[4]);
    c.disconnect(0, Instant::now());
    assert_eq!(c.state(), PeerState::Closed);
}

#[test]
fn unsupported_application_3007_and_unknown_base_command_3001() {
    let (mut c, t0) = open_initiator(&[4]);
    c.handle_message(Message::request(16_777_251, 316).hop_by_hop(9).avp(avps::SESSION_ID, "s").build(), t0);
    let ans = transmits(&mut c).pop().unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(3007));
    assert!(ans.flags().is_error());
    assert_eq!(ans.get(avps::SESSION_ID).unwrap(), Some("s"));
    c.handle_message(Message::request(0, 999).build(), t0);
    assert_eq!(transmits(&mut c).pop().unwrap().get(avps::RESULT_CODE).unwrap(), Some(3001));
    assert_eq!(c.state(), PeerState::Open, "the link stays up");

    c.handle_message(Message::request(4, 272).hop_by_hop(10).build(), t0);
    assert!(matches!(&events(&mut c)[..], [PeerEvent::Request(m)] if m.hop_by_hop() == 10));
    c.handle_message(Message::answer_to(&Message::request(4, 272).hop_by_hop(3).build()).build(), t0);
    assert!(matches!(&events(&mut c)[..], [PeerEvent::Answer(m)] if m.hop_by_hop() == 3));
}

#[test]
fn transport_loss_and_reopen() {
    let (mut c, t0) = open_initiator(&[4]);
    c.handle_transport_closed();
    assert_eq!(c.state(), PeerState::Failed);
    assert_eq!(c.watchdog_state(), WatchdogState::Down);
    assert!(events(&mut c).contains(&PeerEvent::Closed(CloseReason::TransportClosed)));
    // Reconnect: REOPEN until three DWAs.
    c.set_reconnecting();
    assert_eq!(c.state(), PeerState::Reconnecting);
    c.handle_connected(LOCAL, t0);
    let cer = transmits(&mut c).pop().unwrap();
    c.handle_message(cea_for(&cer, 2001, &[4]), t0);
    assert_eq!(c.watchdog_state(), WatchdogState::Reopen);
    assert!(!c.can_send());
    for _ in 0..3 {
        let dwr = transmits(&mut c).pop().expect("DWR in REOPEN");
        c.handle_message(Message::answer_to(&dwr).avp(avps::RESULT_CODE, 2001u32).build(), t0);
    }
    assert!(c.can_send());
}

#[test]
fn ids_follow_rfc_6733() {
    let mut ids = IdGenerator::new(0x1234_5abc, 0xffff_fffe);
    assert_eq!(ids.next_hop_by_hop(), 0xffff_ffff);
    assert_eq!(ids.next_hop_by_hop(), 0);
    let e = ids.next_end_to_end();
    assert_eq!(e >> 20, 0xabc);
    assert_eq!(ids.next_end_to_end(), (0xabc << 20) | ((e + 1) & 0xf_ffff));
}

#[test]
fn identities_and_result_codes() {
    assert!(is_identity("diam.localdomain"));
    assert!(!is_identity(""));
    assert!(!is_identity("a..b"));
    assert!(!is_identity("bad host"));
    let ans = Message::request(0, 1)
        .group(avps::EXPERIMENTAL_RESULT, |g| {
            g.avp(avps::VENDOR_ID, 10415u32).avp(avps::EXPERIMENTAL_RESULT_CODE, 5001u32);
        })
        .build();
    assert_eq!(result_code(&ans), Some(5001));
    assert!(config(&[]).validate().is_ok());
    assert!(PeerConfig::default().validate().is_err());
}

#[test]
fn a_dwr_sent_by_the_application_gets_its_answer() {
    let (mut c, t0) = open_initiator(&[4]);
    // The driver sent its own DWR (e.g. `diam probe`) with hop-by-hop 4242.
    let dwr = Message::request(0, 280).hop_by_hop(4242).build();
    let dwa = Message::answer_to(&dwr).avp(avps::RESULT_CODE, 2001u32).build();
    c.handle_message(dwa, t0);
    assert!(matches!(&events(&mut c)[..], [PeerEvent::Answer(m)] if m.hop_by_hop() == 4242));
    assert_eq!(c.state(), PeerState::Open);
}
