//! The standard workload on the `diameter` crate 0.7.1 (diameter-rs): its
//! CCR, its server's CEA/CCA handler and a client that closed-loop workers
//! share. Included (`#[path]`) by `benches/compare.rs` (in-process) and
//! `examples/compare_peer.rs` (separate processes), so both run exactly the
//! same diameter-rs code.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use diameter::avp::flags::M;
use diameter::avp::{Enumerated, Identity, UTF8String, Unsigned32};
use diameter::dictionary::{Dictionary, DEFAULT_DICT_XML};
use diameter::transport::{DiameterClient, DiameterClientConfig, DiameterServer, DiameterServerConfig};
use diameter::{flags, ApplicationId, CommandCode, DiameterMessage};

pub(crate) const CLIENT_HOST: &str = "client.example.com";
pub(crate) const CLIENT_REALM: &str = "example.com";
pub(crate) const SERVER_HOST: &str = "server.example.net";
pub(crate) const SERVER_REALM: &str = "example.net";

/// Its base dictionary (it decodes every AVP it knows).
pub(crate) fn dictionary() -> Arc<Dictionary> {
    Arc::new(Dictionary::new(&[&DEFAULT_DICT_XML]))
}

/// The standard CCR, hop-by-hop and end-to-end ids `seq`, session `n`.
fn ccr(dict: &Arc<Dictionary>, seq: u32, n: u64) -> DiameterMessage {
    let mut m = DiameterMessage::new(
        CommandCode::CreditControl,
        ApplicationId::CreditControl,
        flags::REQUEST | flags::PROXYABLE,
        seq,
        seq,
        Arc::clone(dict),
    );
    m.add_avp(263, None, M, UTF8String::new(&format!("{CLIENT_HOST};1700000000;{n}")).into());
    m.add_avp(264, None, M, Identity::new(CLIENT_HOST).into());
    m.add_avp(296, None, M, Identity::new(CLIENT_REALM).into());
    m.add_avp(283, None, M, Identity::new(SERVER_REALM).into());
    m.add_avp(258, None, M, Unsigned32::new(4).into());
    m.add_avp(461, None, M, UTF8String::new("32251@3gpp.org").into());
    m.add_avp(416, None, M, Enumerated::new(1).into());
    m.add_avp(415, None, M, Unsigned32::new(0).into());
    m
}

/// The server's handler: a CEA for a CER, otherwise the standard CCA
/// (Session-Id, Result-Code 2001, Origin-Host, Origin-Realm,
/// Auth-Application-Id, CC-Request-Type, CC-Request-Number), counted in
/// `answered`.
async fn answer(
    req: DiameterMessage,
    dict: Arc<Dictionary>,
    answered: Arc<AtomicU64>,
) -> diameter::Result<DiameterMessage> {
    let mut res = DiameterMessage::new(
        req.get_command_code(),
        req.get_application_id(),
        req.get_flags() & !flags::REQUEST,
        req.get_hop_by_hop_id(),
        req.get_end_to_end_id(),
        dict,
    );
    if let CommandCode::CapabilitiesExchange = req.get_command_code() {
        res.add_avp(268, None, M, Unsigned32::new(2001).into());
        res.add_avp(264, None, M, Identity::new(SERVER_HOST).into());
        res.add_avp(296, None, M, Identity::new(SERVER_REALM).into());
        res.add_avp(266, None, M, Unsigned32::new(0).into());
        res.add_avp(269, None, M, UTF8String::new("diameter-rs").into());
        res.add_avp(258, None, M, Unsigned32::new(4).into());
        return Ok(res);
    }
    if let Some(sid) = req.get_avp(263) {
        res.add_avp(263, None, M, sid.get_value().clone());
    }
    res.add_avp(268, None, M, Unsigned32::new(2001).into());
    res.add_avp(264, None, M, Identity::new(SERVER_HOST).into());
    res.add_avp(296, None, M, Identity::new(SERVER_REALM).into());
    for code in [258, 416, 415] {
        if let Some(avp) = req.get_avp(code) {
            res.add_avp(code, None, M, avp.get_value().clone());
        }
    }
    answered.fetch_add(1, Ordering::Relaxed);
    Ok(res)
}

fn answer_ok(ans: &DiameterMessage) -> bool {
    ans.get_avp(268).and_then(|a| a.get_unsigned32()) == Some(2001)
}

/// Binds its server on `addr`. Its server cannot report the port it bound,
/// so for port 0 a free port is picked first (bound and released, then
/// bound again: another process may take it in between, hence the retries).
pub(crate) async fn bind(addr: SocketAddr) -> io::Result<(DiameterServer, SocketAddr)> {
    let mut last = None;
    for _ in 0..16 {
        let addr = if addr.port() == 0 { TcpListener::bind(addr)?.local_addr()? } else { addr };
        match DiameterServer::new(&addr.to_string(), DiameterServerConfig { native_tls: None }).await {
            Ok(server) => return Ok((server, addr)),
            Err(diameter::Error::IoError(e)) if e.kind() == io::ErrorKind::AddrInUse && addr.port() != 0 => {
                last = Some(e);
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// Serves until the listener fails. Each connection is a task of its own
/// (the crate's design) that reads, answers and writes one request at a
/// time. CCAs sent are counted in `answered`.
pub(crate) async fn serve(
    mut server: DiameterServer,
    dict: Arc<Dictionary>,
    answered: Arc<AtomicU64>,
) -> io::Result<()> {
    let d = dict.clone();
    server
        .listen(
            move |req| {
                let (d, answered) = (d.clone(), answered.clone());
                answer(req, d, answered)
            },
            dict,
        )
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Its client on one connection, shared by closed-loop workers. Its
/// `send_message` takes `&mut self`, so the workers share it behind a
/// `tokio::sync::Mutex` held only while the request is written; the answers
/// are awaited outside the lock, so N stay outstanding.
pub(crate) struct Client {
    inner: tokio::sync::Mutex<DiameterClient>,
    dict: Arc<Dictionary>,
    seq: AtomicU32,
    reader: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Connects, exchanges capabilities as a real client would, and checks
    /// that a first CCA carries 2001, Session-Id and CC-Request-Number.
    pub(crate) async fn connect(addr: SocketAddr, dict: Arc<Dictionary>) -> Result<Client, String> {
        let mut client =
            DiameterClient::new(&addr.to_string(), DiameterClientConfig { use_tls: false, verify_cert: false });
        let mut handler = client.connect().await.map_err(|e| format!("connect to {addr}: {e}"))?;
        let reader_dict = dict.clone();
        let reader = tokio::spawn(async move { DiameterClient::handle(&mut handler, reader_dict).await });
        let mut cer = DiameterMessage::new(
            CommandCode::CapabilitiesExchange,
            ApplicationId::Common,
            flags::REQUEST,
            1,
            1,
            dict.clone(),
        );
        cer.add_avp(264, None, M, Identity::new(CLIENT_HOST).into());
        cer.add_avp(296, None, M, Identity::new(CLIENT_REALM).into());
        cer.add_avp(266, None, M, Unsigned32::new(0).into());
        cer.add_avp(269, None, M, UTF8String::new("compare").into());
        cer.add_avp(258, None, M, Unsigned32::new(4).into());
        let client = Client { inner: tokio::sync::Mutex::new(client), dict, seq: AtomicU32::new(2), reader };
        let cea = client.request(cer).await.map_err(|e| format!("CER: {e}"))?;
        if !answer_ok(&cea) {
            return Err(format!("CEA without 2001: {cea}"));
        }
        let first =
            client.request(ccr(&client.dict, client.next_seq(), u64::MAX)).await.map_err(|e| format!("CCR: {e}"))?;
        if !answer_ok(&first) || first.get_avp(263).is_none() || first.get_avp(415).is_none() {
            return Err(format!("unexpected first CCA: {first}"));
        }
        Ok(client)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    async fn request(&self, req: DiameterMessage) -> diameter::Result<DiameterMessage> {
        let pending = {
            let mut c = self.inner.lock().await;
            c.send_message(req).await
        };
        pending?.await
    }

    /// Sends CCR number `n`; whether a 2001 answer came.
    pub(crate) async fn send(&self, n: u64) -> bool {
        let req = ccr(&self.dict, self.next_seq(), n);
        self.request(req).await.is_ok_and(|a| answer_ok(&a))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
