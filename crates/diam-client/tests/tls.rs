//! TLS (RFC 6733 §13) and peer authorization: mutual authentication both
//! ways, the certificate identity check, in-band TLS, credential reload,
//! and every hostile case refused before an application request is served.

#[path = "common/certs.rs"]
mod certs;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use certs::{Leaf, Pki};
use diam_client::events::InboundRefused;
use diam_client::{handler_fn, Error, Node, NodeConfig, PeerAddr, TlsConfig};
use diam_link::events::{Event, EventData, EventKind};
use diam_proto::{avps, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVER: &str = "server.tls.test";
const CLIENT: &str = "client.tls.test";
const STEP: Duration = Duration::from_secs(5);

fn tls(pki: &Pki, leaf: &Leaf) -> TlsConfig {
    TlsConfig::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), pki.ca_pem.as_bytes()).unwrap()
}

fn config(host: &str) -> NodeConfig {
    let mut c = NodeConfig::new(host, "tls.test");
    c.connection.peer.auth_application_ids = vec![4];
    c.connection.peer.cer_timeout = Duration::from_secs(2);
    c.connection.connect_timeout = Duration::from_secs(2);
    c
}

fn ccr(origin: &str) -> Message {
    Message::request(4, 272)
        .proxiable(true)
        .avp(avps::SESSION_ID, format!("{origin};1"))
        .avp(avps::ORIGIN_HOST, origin)
        .avp(avps::ORIGIN_REALM, "tls.test")
        .avp(avps::DESTINATION_REALM, "tls.test")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build()
}

struct Server {
    node: Node,
    tls_addr: std::net::SocketAddr,
    tcp_addr: std::net::SocketAddr,
    served: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<InboundRefused>>>,
    _sub: diam_link::events::Subscription,
}

impl Server {
    async fn start(pki: &Pki, inband: bool) -> Server {
        let mut cfg = config(SERVER);
        cfg.connection.peer.inband_tls = inband;
        let served = Arc::new(AtomicUsize::new(0));
        let s = served.clone();
        let node = Node::builder(cfg)
            .handler(
                4,
                handler_fn(move |req: Message| {
                    s.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Message::answer_to(&req)
                            .avp(avps::RESULT_CODE, 2001u32)
                            .avp(avps::ORIGIN_HOST, SERVER)
                            .avp(avps::ORIGIN_REALM, "tls.test")
                            .build()
                    }
                }),
            )
            .allow("*.tls.test")
            .tls(tls(pki, &pki.leaf(&[SERVER])))
            .build()
            .unwrap();
        let refused: Arc<Mutex<Vec<InboundRefused>>> = Arc::default();
        let r = refused.clone();
        let _sub = node.events().subscribe(EventKind::Custom, move |ev: &Event| {
            if let EventData::Custom(c) = ev.data() {
                if let Some(x) = c.downcast_ref::<InboundRefused>() {
                    r.lock().unwrap().push(x.clone());
                }
            }
        });
        let tls_addr = node.listen_tls("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let tcp_addr = node.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        Server { node, tls_addr, tcp_addr, served, refused, _sub }
    }

    /// Waits for a refusal with `reason`.
    async fn refusal(&self, reason: &str) -> InboundRefused {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            if let Some(r) = self.refused.lock().unwrap().iter().find(|r| r.reason == reason) {
                return r.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no refusal {reason}; saw {:?}",
                self.refused.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn client(pki: &Pki, leaf: &Leaf, host: &str, inband: bool) -> Node {
    let mut cfg = config(host);
    cfg.connection.peer.inband_tls = inband;
    let answer = handler_fn(|req: Message| async move {
        Message::answer_to(&req)
            .avp(avps::RESULT_CODE, 2001u32)
            .avp(avps::ORIGIN_HOST, CLIENT)
            .avp(avps::ORIGIN_REALM, "tls.test")
            .build()
    });
    Node::builder(cfg).default_handler(answer).tls(tls(pki, leaf)).build().unwrap()
}

fn aaas(addr: std::net::SocketAddr) -> PeerAddr {
    format!("aaas://{addr}").parse().unwrap()
}

fn plain(addr: std::net::SocketAddr) -> PeerAddr {
    addr.to_string().parse().unwrap()
}

#[tokio::test]
async fn tls_first_both_ways_with_mutual_authentication() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, false).await;
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, false);
    let peer = c.connect_to(SERVER, aaas(server.tls_addr)).await.unwrap();
    let info = peer.tls().expect("TLS info");
    assert!(info.version == "TLSv1.3" || info.version == "TLSv1.2", "{info:?}");
    assert_eq!(info.peer_dns_names(), vec![SERVER.to_string()]);
    assert_eq!(info.peer_subject().as_deref(), Some("CN=server.tls.test"));
    let ans = peer.send(ccr(CLIENT)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
    // The server talks back over the client's TLS connection.
    let back = server.node.peer(CLIENT).expect("the client is in the server's table");
    assert_eq!(back.tls().map(|t| t.peer_dns_names()), Some(vec![CLIENT.to_string()]));
    let rar = Message::request(4, 258)
        .proxiable(true)
        .avp(avps::SESSION_ID, "s;1")
        .avp(avps::ORIGIN_HOST, SERVER)
        .avp(avps::ORIGIN_REALM, "tls.test")
        .avp(avps::DESTINATION_REALM, "tls.test")
        .avp(avps::DESTINATION_HOST, CLIENT)
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build();
    let raa = back.send(rar).await.unwrap();
    assert_eq!(raa.get(avps::RESULT_CODE).unwrap(), Some(2001));
}

#[tokio::test]
async fn tls_1_2_is_offered_and_works() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, false).await;
    let full = tls(&pki, &pki.leaf(&[CLIENT]));
    let mut only12 = (**full.client()).clone();
    // Rebuild the client side for TLS 1.2 only, with the same roots and key.
    only12.alpn_protocols.clear();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let leaf = pki.leaf(&[CLIENT]);
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let client12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let cfg = TlsConfig::from_rustls(Arc::new(client12), full.server().clone());
    let c = Node::builder(config(CLIENT)).tls(cfg).build().unwrap();
    let peer = c.connect_to(SERVER, aaas(server.tls_addr)).await.unwrap();
    assert_eq!(peer.tls().unwrap().version, "TLSv1.2");
    assert_eq!(peer.send(ccr(CLIENT)).await.unwrap().get(avps::RESULT_CODE).unwrap(), Some(2001));
}

#[tokio::test]
async fn in_band_tls_after_the_capabilities_exchange() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, true).await;
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, true);
    let peer = c.connect_to(SERVER, plain(server.tcp_addr)).await.unwrap();
    // The peer is open for its handles only once in-band TLS is up.
    assert!(peer.tls().is_some(), "connect returned before in-band TLS was up");
    assert_eq!(peer.peer_info().map(|i| i.origin_host.clone()).as_deref(), Some(SERVER));
    let ans = peer.send(ccr(CLIENT)).await.unwrap();
    assert_eq!(ans.get(avps::RESULT_CODE).unwrap(), Some(2001));
    let info = peer.tls().expect("in-band TLS is up");
    assert_eq!(info.peer_dns_names(), vec![SERVER.to_string()]);
    assert_eq!(server.node.peer(CLIENT).and_then(|p| p.tls()).map(|t| t.peer_dns_names()), Some(vec![CLIENT.into()]));
    assert_eq!(server.served.load(Ordering::SeqCst), 1);
}

/// A node without in-band TLS answers a CER offering only TLS with 5017.
#[tokio::test]
async fn a_tls_only_cer_to_a_node_without_in_band_tls_gets_5017() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, false).await;
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, true);
    let e = c.connect_to(SERVER, plain(server.tcp_addr)).await.unwrap_err();
    assert_eq!(e.handshake_result_code(), Some(5017), "{e}");
    server.refusal("no_common_security").await;
    // And a node requiring it refuses a CER without it.
    let server2 = Server::start(&pki, true).await;
    let c2 = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, false);
    let e = c2.connect_to(SERVER, plain(server2.tcp_addr)).await.unwrap_err();
    assert_eq!(e.handshake_result_code(), Some(5017), "{e}");
    assert_eq!(server.served.load(Ordering::SeqCst) + server2.served.load(Ordering::SeqCst), 0);
}

/// A peer that requires in-band TLS closes a connection whose CEA says 2001
/// without Inband-Security-Id TLS (a peer that would carry on in the clear).
#[tokio::test]
async fn a_cea_without_in_band_tls_closes_the_connection_of_a_peer_requiring_it() {
    let pki = Pki::new("Test CA");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let downgrader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let cer = read_frame(&mut s).await.expect("a CER");
        let (_, tls_offered) = diam_proto::psm::inband_offer(&cer);
        let cea = Message::answer_to(&cer)
            .avp(avps::RESULT_CODE, 2001u32)
            .avp(avps::ORIGIN_HOST, SERVER)
            .avp(avps::ORIGIN_REALM, "tls.test")
            .avp(avps::HOST_IP_ADDRESS, std::net::IpAddr::from([127, 0, 0, 1]))
            .avp(avps::VENDOR_ID, 0u32)
            .avp(avps::PRODUCT_NAME, "downgrader")
            .avp(avps::AUTH_APPLICATION_ID, 4u32)
            .avp(avps::INBAND_SECURITY_ID, 0u32)
            .build();
        s.write_all(cea.as_bytes()).await.unwrap();
        // Whatever comes next must not be a request in the clear.
        let next = read_frame(&mut s).await;
        (tls_offered, next.map(|m| m.command_code()))
    });
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, true);
    let e = c.connect_to(SERVER, plain(addr)).await.unwrap_err();
    assert!(matches!(e, Error::Tls(_)), "{e}");
    let (tls_offered, next) = downgrader.await.unwrap();
    assert!(tls_offered, "the CER offered TLS");
    assert_eq!(next, None, "nothing in the clear after the CEA");
}

async fn read_frame(s: &mut TcpStream) -> Option<Message> {
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::new();
    loop {
        if let Ok(Some(m)) = dec.decode(&mut buf) {
            return Some(m);
        }
        match tokio::time::timeout(STEP, s.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
    }
}

/// What a raw connection gets back: a frame, or nothing before close.
async fn cea_for(addr: std::net::SocketAddr, cer: &Message) -> Option<Message> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(cer.as_bytes()).await.unwrap();
    read_frame(&mut s).await
}

fn cer_with(hosts: &[&[u8]], realm: Option<&str>) -> Message {
    let mut b = Message::request(0, 257).hop_by_hop(7).end_to_end(7);
    for h in hosts {
        b = b.raw_avp(avps::ORIGIN_HOST.code(), diam_proto::avp::AvpFlags::from_bits(0x40), None, h);
    }
    if let Some(r) = realm {
        b = b.avp(avps::ORIGIN_REALM, r);
    }
    b.avp(avps::HOST_IP_ADDRESS, std::net::IpAddr::from([127, 0, 0, 1]))
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "raw")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .build()
}

fn failed_avp_code(cea: &Message) -> Option<u32> {
    let f = cea.find(avps::FAILED_AVP)?;
    f.group().filter_map(Result::ok).map(|a| a.code()).next()
}

#[tokio::test]
async fn bad_duplicated_missing_and_own_origin_hosts_are_refused_with_their_result_codes() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, false).await;
    let cases: Vec<(&str, Message, u32, Option<u32>)> = vec![
        ("space and bang", cer_with(&[b"bad host!.tls.test"], Some("tls.test")), 5004, Some(264)),
        ("NUL byte", cer_with(&[b"a\0b.tls.test"], Some("tls.test")), 5004, Some(264)),
        ("newline (log forging)", cer_with(&[b"x.tls.test\nINFO forged"], Some("tls.test")), 5004, Some(264)),
        ("10 KB name", cer_with(&[&[b'a'; 10_000]], Some("tls.test")), 5004, Some(264)),
        ("duplicated", cer_with(&[b"a.tls.test", b"b.tls.test"], Some("tls.test")), 5009, Some(264)),
        ("missing", cer_with(&[], Some("tls.test")), 5005, Some(264)),
        ("missing realm", cer_with(&[b"a.tls.test"], None), 5005, Some(296)),
        ("our own identity", cer_with(&[SERVER.as_bytes()], Some("tls.test")), 3010, None),
        ("unknown peer", cer_with(&[b"stranger.example.org"], Some("example.org")), 3010, None),
    ];
    for (what, cer, rc, failed) in cases {
        let cea = cea_for(server.tcp_addr, &cer).await.unwrap_or_else(|| panic!("{what}: no CEA"));
        assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(rc), "{what}");
        assert_eq!(failed_avp_code(&cea), failed, "{what}: Failed-AVP");
    }
    // A peer under the allowed domain gets in.
    let ok = cea_for(server.tcp_addr, &cer_with(&[b"fine.tls.test"], Some("tls.test"))).await.unwrap();
    assert_eq!(ok.get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(server.served.load(Ordering::SeqCst), 0);
    for reason in
        ["origin_host_invalid", "origin_host_duplicated", "origin_host_missing", "own_identity", "unknown_peer"]
    {
        server.refusal(reason).await;
    }
}

/// Sends a CER and a CCR over `stream`; whatever the server sends back.
async fn cer_then_ccr<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> Vec<u8> {
    let cer = cer_with(&[CLIENT.as_bytes()], Some("tls.test"));
    let _ = s.write_all(cer.as_bytes()).await;
    let _ = s.write_all(ccr(CLIENT).with_ids(9, 9).as_bytes()).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut got)).await;
    got
}

#[tokio::test]
async fn hostile_tls_peers_are_refused_before_any_request_is_served() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, false).await;

    // Plaintext to the TLS port: no CEA (what comes back, if anything, is
    // a TLS alert).
    let got = cer_then_ccr(TcpStream::connect(server.tls_addr).await.unwrap()).await;
    assert!(FrameDecoder::new().decode(&mut BytesMut::from(&got[..])).ok().flatten().is_none(), "{got:?}");
    server.refusal("tls").await;

    // A ClientHello to the plain port: not a Diameter frame, closed.
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, false);
    let e = c.connect_to(SERVER, format!("aaas://{}", server.tcp_addr).parse().unwrap()).await.unwrap_err();
    assert!(e.is_tls() || e.is_closed() || matches!(e, Error::Connect { .. }), "{e}");
    server.refusal("no_cer").await;

    // No client certificate.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap()).unwrap();
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER).unwrap();
    if let Ok(s) = tokio_rustls::TlsConnector::from(Arc::new(anonymous)).connect(name, tcp).await {
        let got = cer_then_ccr(s).await;
        assert!(got.is_empty(), "no CEA without a client certificate: {got:?}");
    }

    // A certificate from another CA, an expired one, and one that names
    // another identity than the Origin-Host.
    let other = Pki::new("Other CA");
    let leaf = other.leaf(&[CLIENT]);
    let foreign = TlsConfig::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), pki.ca_pem.as_bytes());
    let cases = [
        ("another CA", foreign.unwrap()),
        ("expired", tls(&pki, &pki.expired_leaf(&[CLIENT]))),
        ("SAN of another identity", tls(&pki, &pki.leaf(&["other.tls.test"]))),
    ];
    for (what, cfg) in cases {
        let c = Node::builder(config(CLIENT)).tls(cfg).build().unwrap();
        let e = c.connect_to(SERVER, aaas(server.tls_addr)).await.unwrap_err();
        assert!(!matches!(e, Error::HandshakeFailed { result_code: 2001, .. }), "{what}: {e}");
    }
    server.refusal("certificate_mismatch").await;

    // The server's certificate is checked too: a client expecting another
    // identity refuses it before the CER.
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, false);
    let e = c.connect_to("impostor.tls.test", aaas(server.tls_addr)).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. } | Error::Tls(_)), "{e}");

    assert_eq!(server.served.load(Ordering::SeqCst), 0, "no request was served");
    assert!(server.node.peer(CLIENT).is_none_or(|p| p.tls().is_none()));
}

#[tokio::test]
async fn reloaded_credentials_apply_to_new_connections_only() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, false).await;
    let old = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, false);
    let established = old.connect_to(SERVER, aaas(server.tls_addr)).await.unwrap();

    let renewed = Pki::new("Renewed CA");
    server.node.reload_tls(tls(&renewed, &renewed.leaf(&[SERVER]))).unwrap();

    // A new connection with the old credentials fails ...
    let again = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, false);
    assert!(again.connect_to(SERVER, aaas(server.tls_addr)).await.is_err());
    // ... one with the new CA's works ...
    let fresh = client(&renewed, &renewed.leaf(&["client2.tls.test"]), "client2.tls.test", false);
    let p = fresh.connect_to(SERVER, aaas(server.tls_addr)).await.unwrap();
    assert_eq!(p.send(ccr("client2.tls.test")).await.unwrap().get(avps::RESULT_CODE).unwrap(), Some(2001));
    // ... and the established one carries on.
    assert_eq!(established.send(ccr(CLIENT)).await.unwrap().get(avps::RESULT_CODE).unwrap(), Some(2001));
    assert_eq!(server.served.load(Ordering::SeqCst), 2);
}

/// In-band TLS checks the certificate too, once TLS is up: a client whose
/// certificate names another identity than its Origin-Host is closed
/// before its request is served.
#[tokio::test]
async fn in_band_tls_with_a_certificate_for_another_identity_is_closed() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, true).await;
    let c = client(&pki, &pki.leaf(&["other.tls.test"]), CLIENT, true);
    let outcome = match c.connect_to(SERVER, plain(server.tcp_addr)).await {
        Ok(peer) => peer.send(ccr(CLIENT)).await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "a request went through");
    assert_eq!(server.served.load(Ordering::SeqCst), 0);
    let back = server.node.peer(CLIENT);
    assert!(back.is_none_or(|p| p.tls().is_none()), "the server kept a TLS connection to the impostor");
}

/// A raw in-band TLS client: CER offering TLS, the CEA in the clear, then
/// TLS on the same socket.
async fn raw_inband(
    addr: std::net::SocketAddr,
    cfg: &TlsConfig,
) -> std::io::Result<(tokio_rustls::client::TlsStream<TcpStream>, Message)> {
    let mut s = TcpStream::connect(addr).await?;
    let cer = Message::request(0, 257)
        .hop_by_hop(7)
        .end_to_end(7)
        .avp(avps::ORIGIN_HOST, CLIENT)
        .avp(avps::ORIGIN_REALM, "tls.test")
        .avp(avps::HOST_IP_ADDRESS, std::net::IpAddr::from([127, 0, 0, 1]))
        .avp(avps::VENDOR_ID, 0u32)
        .avp(avps::PRODUCT_NAME, "raw")
        .avp(avps::AUTH_APPLICATION_ID, 4u32)
        .avp(avps::INBAND_SECURITY_ID, 1u32)
        .build();
    s.write_all(cer.as_bytes()).await?;
    // Read the CEA byte by byte: nothing past it may be consumed here.
    let mut buf = BytesMut::new();
    let cea = loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes([0, buf[1], buf[2], buf[3]]) as usize;
            if buf.len() == len {
                break Message::decode(buf.split().freeze()).map_err(std::io::Error::other)?;
            }
        }
        let mut b = [0u8; 1];
        tokio::time::timeout(STEP, s.read_exact(&mut b)).await.map_err(std::io::Error::other)??;
        buf.extend_from_slice(&b);
    };
    let name = rustls::pki_types::ServerName::try_from(SERVER).unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg.client().clone()).connect(name, s).await?;
    Ok((tls, cea))
}

/// After a connection lost uncleanly, the peer's watchdog opens the next
/// one with a REOPEN DWR: over in-band TLS it must wait for the handshake,
/// never precede it in the clear.
#[tokio::test]
async fn in_band_tls_reconnect_after_an_unclean_loss_sends_nothing_in_the_clear() {
    let pki = Pki::new("Test CA");
    let server = Server::start(&pki, true).await;
    let cfg = tls(&pki, &pki.leaf(&[CLIENT]));
    let (first, cea) = raw_inband(server.tcp_addr, &cfg).await.expect("first in-band connection");
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(2001));
    let peer = server.node.peer(CLIENT).expect("the client is a peer");
    drop(first); // no DPR: an unclean loss
    let deadline = tokio::time::Instant::now() + STEP;
    while peer.state() == diam_client::PeerState::Open {
        assert!(tokio::time::Instant::now() < deadline, "the server never noticed the loss");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut second, cea) = raw_inband(server.tcp_addr, &cfg).await.expect("the handshake after a reconnect");
    assert_eq!(cea.get(avps::RESULT_CODE).unwrap(), Some(2001));
    // The REOPEN DWR arrives inside TLS.
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::new();
    let dwr = loop {
        if let Some(m) = dec.decode(&mut buf).unwrap() {
            break m;
        }
        let n = tokio::time::timeout(STEP, second.read_buf(&mut buf)).await.expect("a message over TLS").unwrap();
        assert!(n > 0, "closed");
    };
    assert_eq!(dwr.command_code(), 280, "the first message over TLS");
    assert!(dwr.is_request());
}

/// A server whose CEA claims an identity its certificate does not name
/// (in-band, dialled by address): the connection fails, and the claimed
/// identity is neither announced nor entered in the peer table.
#[tokio::test]
async fn an_in_band_impostor_is_never_announced_or_learned() {
    let pki = Pki::new("Test CA");
    let mut cfg = config("hss.tls.test");
    cfg.connection.peer.inband_tls = true;
    let impostor = Node::builder(cfg).allow("*.tls.test").tls(tls(&pki, &pki.leaf(&[SERVER]))).build().unwrap();
    let addr = impostor.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let c = client(&pki, &pki.leaf(&[CLIENT]), CLIENT, true);
    let (ups, downs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (u, d) = (ups.clone(), downs.clone());
    let _sub = c.events().subscribe(EventKind::Custom, move |ev: &Event| {
        if let EventData::Custom(x) = ev.data() {
            if x.downcast_ref::<diam_client::events::PeerUp>().is_some() {
                u.fetch_add(1, Ordering::SeqCst);
            }
            if x.downcast_ref::<diam_client::events::PeerDown>().is_some() {
                d.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let h = c.add_address_peer(plain(addr)).unwrap();
    let deadline = tokio::time::Instant::now() + STEP;
    while !h.last_error().is_some_and(|e| e.is_tls()) {
        assert!(tokio::time::Instant::now() < deadline, "no TLS failure: {:?}", h.last_error());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(c.peer("hss.tls.test").is_none(), "the impostor's identity was learned");
    // Events are delivered in order: once the peer_down is in, a peer_up
    // would have been too.
    while downs.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no peer_down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ups.load(Ordering::SeqCst), 0, "the impostor was announced");
}
