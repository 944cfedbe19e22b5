//! TLS (RFC 6733 §13): credentials, the TLS-first [`TlsConnector`] and
//! [`TlsAcceptor`], and in-band TLS after CER/CEA (RFC 3588 §6.10 style).
//!
//! Built on rustls (ring provider) through tokio-rustls; certificates are
//! read by rustls' PEM reader and inspected with x509-parser. Nothing here
//! does cryptography or X.509 by hand.
//!
//! Mutual authentication is the default, as §13 requires: a server asks
//! for a client certificate and refuses a connection without one, a client
//! verifies the server, and both check the chain against the configured
//! CA. The Diameter identity check is on top: a peer's certificate must
//! name its DiameterIdentity in a DNS subjectAltName
//! ([`TlsInfo::names_identity`]), checked against the configured identity
//! before the CER (an outbound TLS-first connection verifies the server
//! name) and against the Origin-Host of the CER or CEA.
//!
//! TLS 1.3 and 1.2 are offered. [`TlsHandle::reload`] swaps credentials
//! for new connections while established ones carry on.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::{BoxFuture, BoxStream, Connection, TransportKind};

/// Why TLS credentials could not be loaded or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The PEM input holds nothing usable of the kind wanted.
    #[error("{what}: {message}")]
    Pem {
        /// Which input (a path, or "certificate", "key", "CA").
        what: String,
        /// Why.
        message: String,
    },
    /// rustls refused the credentials (a key that does not match the
    /// certificate, an unusable CA).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// TLS credentials of a node: its certificate chain and key, and the CA
/// its peers' certificates must chain to. One value gives both the client
/// side (dialling `aaas://` peers, in-band TLS as initiator) and the server
/// side (TLS listeners, in-band TLS as responder).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
/// use diam_client::{Node, NodeConfig, TlsConfig};
/// let tls = TlsConfig::from_pem_files(Path::new("hss.pem"), Path::new("hss.key"), Path::new("ca.pem"))?;
/// let node = Node::builder(NodeConfig::new("hss.example.net", "example.net"))
///     .tls(tls)
///     .allow("*.mme.example.net")
///     .build()?;
/// node.listen_tls("0.0.0.0:5658".parse()?).await?;
/// // Dialled TLS first; its certificate must name pcrf.example.net.
/// let pcrf = node.add_peer("pcrf.example.net", ["aaas://pcrf.example.net".parse()?])?;
/// # let _ = pcrf; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_err(what: &str, e: impl fmt::Display) -> TlsError {
    TlsError::Pem { what: what.to_string(), message: e.to_string() }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| pem_err(what, e))?;
    if certs.is_empty() {
        return Err(pem_err(what, "no CERTIFICATE block"));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads PEM files: `cert` (the chain, ours first), `key` (PKCS#8,
    /// PKCS#1 or SEC1) and `ca` (one or more trusted CA certificates).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<TlsConfig, TlsError> {
        let label = |p: &Path| p.display().to_string();
        let chain = certs(&read(cert)?, &label(cert))?;
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_err(&label(key), e))?;
        let roots = certs(&read(ca)?, &label(ca))?;
        TlsConfig::new(chain, key_der, roots)
    }

    /// [`from_pem_files`](Self::from_pem_files) from PEM text in memory.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsConfig, TlsError> {
        let chain = certs(cert, "certificate")?;
        let key_der = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_err("key", e))?;
        TlsConfig::new(chain, key_der, certs(ca, "CA")?)
    }

    /// From DER: our chain and key, and the trusted CA certificates.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca: Vec<CertificateDer<'static>>,
    ) -> Result<TlsConfig, TlsError> {
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| TlsError::Config(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("our certificate and key: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("our certificate and key: {e}")))?;
        Ok(TlsConfig { client: Arc::new(client), server: Arc::new(server) })
    }

    /// From rustls configurations built elsewhere (other verifiers, one
    /// TLS version only, session resumption settings…).
    pub fn from_rustls(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> TlsConfig {
        TlsConfig { client, server }
    }

    /// Logs the session secrets of every connection to `log` (NSS key log
    /// format, for Wireshark or tshark to decrypt a capture). For
    /// debugging only: anyone with the file reads the traffic.
    pub fn with_key_log(mut self, log: Arc<dyn rustls::KeyLog>) -> TlsConfig {
        Arc::make_mut(&mut self.client).key_log = log.clone();
        Arc::make_mut(&mut self.server).key_log = log;
        self
    }

    /// The client side.
    pub fn client(&self) -> &Arc<ClientConfig> {
        &self.client
    }

    /// The server side.
    pub fn server(&self) -> &Arc<ServerConfig> {
        &self.server
    }
}

/// Writes TLS secrets to a file in the NSS key log format
/// (`LABEL CLIENT_RANDOM SECRET`, hex), appending. rustls' own
/// `KeyLogFile` reads its path from `SSLKEYLOGFILE` only; this takes it
/// from configuration (`--tls-keylog`).
pub struct KeyLogToFile {
    file: Mutex<std::fs::File>,
}

impl fmt::Debug for KeyLogToFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLogToFile").finish_non_exhaustive()
    }
}

impl KeyLogToFile {
    /// Opens (creates, appends to) `path`.
    pub fn open(path: &Path) -> io::Result<KeyLogToFile> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Secrets: readable by the owner only.
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(KeyLogToFile { file: Mutex::new(file) })
    }
}

impl rustls::KeyLog for KeyLogToFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        let mut line = String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            let _ = write!(line, "{b:02x}");
        }
        line.push(' ');
        for b in secret {
            let _ = write!(line, "{b:02x}");
        }
        line.push('\n');
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// The node's current TLS credentials, shared by its listeners and dials.
/// [`reload`](Self::reload) replaces them for connections made afterwards;
/// established connections keep theirs.
#[derive(Clone)]
pub struct TlsHandle(Arc<RwLock<Arc<TlsConfig>>>);

impl fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsHandle").finish_non_exhaustive()
    }
}

impl TlsHandle {
    /// A handle holding `config`.
    pub fn new(config: TlsConfig) -> TlsHandle {
        TlsHandle(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The credentials new connections use.
    pub fn current(&self) -> Arc<TlsConfig> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Uses `config` for every connection from now on.
    pub fn reload(&self, config: TlsConfig) {
        let mut g = match self.0.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *g = Arc::new(config);
    }
}

/// What a TLS connection negotiated, and who the peer proved to be.
#[derive(Clone)]
pub struct TlsInfo {
    /// `"TLSv1.3"` or `"TLSv1.2"`.
    pub version: &'static str,
    /// The cipher suite, as rustls names it (`TLS13_AES_256_GCM_SHA384`).
    pub cipher: String,
    /// The peer's certificate chain, end entity first (verified against
    /// the CA).
    pub peer_certificates: Arc<[CertificateDer<'static>]>,
}

impl fmt::Debug for TlsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsInfo")
            .field("version", &self.version)
            .field("cipher", &self.cipher)
            .field("peer_subject", &self.peer_subject())
            .finish()
    }
}

impl TlsInfo {
    fn of(common: &rustls::CommonState) -> TlsInfo {
        let version = match common.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher =
            common.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_else(|| "unknown".into());
        let peer_certificates = common.peer_certificates().map(|c| c.to_vec()).unwrap_or_default();
        TlsInfo { version, cipher, peer_certificates: peer_certificates.into() }
    }

    /// The peer certificate's subject (`CN=…, O=…`), when it parses.
    pub fn peer_subject(&self) -> Option<String> {
        let der = self.peer_certificates.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        Some(cert.subject().to_string())
    }

    /// The DNS names of the peer certificate's subjectAltName extension.
    pub fn peer_dns_names(&self) -> Vec<String> {
        let Some(der) = self.peer_certificates.first() else { return Vec::new() };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
        let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
        san.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect()
    }

    /// Whether the peer's certificate names `identity` in a DNS
    /// subjectAltName, as rustls checks a server name. A wildcard SAN
    /// (`*.example.net`) names every identity one label under it: issue
    /// such certificates only to peers trusted with all of them.
    pub fn names_identity(&self, identity: &str) -> bool {
        let Some(der) = self.peer_certificates.first() else { return false };
        let Ok(name) = ServerName::try_from(identity) else { return false };
        if !matches!(name, ServerName::DnsName(_)) {
            return false;
        }
        match rustls::server::ParsedCertificate::try_from(der) {
            Ok(cert) => rustls::client::verify_server_name(&cert, &name).is_ok(),
            Err(_) => false,
        }
    }
}

fn tls_error(e: io::Error) -> io::Error {
    // rustls reports alerts and verification failures as InvalidData.
    io::Error::new(e.kind(), format!("TLS handshake: {e}"))
}

/// Starts TLS as the client over `stream` (TLS-first after the dial, or
/// in-band after the CEA), verifying the server's certificate for
/// `server_name` (the peer's DiameterIdentity when known, else the host
/// it was dialled at).
pub async fn connect_tls(config: &TlsConfig, server_name: &str, stream: BoxStream) -> io::Result<(BoxStream, TlsInfo)> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{server_name:?} is not a TLS server name: {e}"))
    })?;
    let tls = tokio_rustls::TlsConnector::from(config.client.clone()).connect(name, stream).await.map_err(tls_error)?;
    let info = TlsInfo::of(tls.get_ref().1);
    Ok((Box::new(tls), info))
}

/// Starts TLS as the server over `stream`, requiring and verifying a client
/// certificate.
pub async fn accept_tls(config: &TlsConfig, stream: BoxStream) -> io::Result<(BoxStream, TlsInfo)> {
    let tls = tokio_rustls::TlsAcceptor::from(config.server.clone()).accept(stream).await.map_err(tls_error)?;
    let info = TlsInfo::of(tls.get_ref().1);
    Ok((Box::new(tls), info))
}

/// A TLS-first listener: accepts TCP, then runs the TLS handshake in
/// [`establish`](crate::transport::Acceptor::establish), on the
/// connection's own task under the node's CER deadline.
#[derive(Debug)]
pub struct TlsAcceptor {
    tcp: crate::transport::TcpAcceptor,
    tls: TlsHandle,
}

impl TlsAcceptor {
    /// TLS over `tcp` with the credentials `tls` holds at each accept.
    pub fn new(tcp: crate::transport::TcpAcceptor, tls: TlsHandle) -> TlsAcceptor {
        TlsAcceptor { tcp, tls }
    }
}

impl crate::transport::Acceptor for TlsAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        self.tcp.accept()
    }

    fn establish(&self, conn: Connection) -> BoxFuture<'static, io::Result<Connection>> {
        let config = self.tls.current();
        Box::pin(async move {
            let (stream, info) = accept_tls(&config, conn.stream).await?;
            Ok(Connection { stream, kind: TransportKind::Tls, local: conn.local, remote: conn.remote, tls: Some(info) })
        })
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Dials `aaas://` peers with TLS first (after TCP) and the rest with
/// plain TCP.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tcp: crate::transport::TcpConnector,
    tls: TlsHandle,
    handshake_timeout: Duration,
}

impl TlsConnector {
    /// TLS over `tcp`; a handshake not done within `handshake_timeout`
    /// fails the dial.
    pub fn new(tcp: crate::transport::TcpConnector, tls: TlsHandle, handshake_timeout: Duration) -> TlsConnector {
        TlsConnector { tcp, tls, handshake_timeout }
    }
}

impl crate::transport::Connector for TlsConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a diam_proto::uri::PeerAddr,
        identity: Option<&'a str>,
    ) -> BoxFuture<'a, io::Result<Connection>> {
        Box::pin(async move {
            if !addr.is_tls() {
                return self.tcp.connect(addr, identity).await;
            }
            let conn = self.tcp.dial(addr).await?;
            let host = addr.host();
            let name = identity.unwrap_or(&host);
            let config = self.tls.current();
            let (stream, info) = tokio::time::timeout(self.handshake_timeout, connect_tls(&config, name, conn.stream))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{addr}: TLS handshake timed out")))??;
            Ok(Connection { stream, kind: TransportKind::Tls, local: conn.local, remote: conn.remote, tls: Some(info) })
        })
    }
}

/// A stream that yields `prefix` before reading from the inner stream:
/// bytes read past the CEA (or CER) belong to the TLS handshake that
/// follows and must reach it. Writes go straight through. (Small and ours:
/// hyper-util has the same type, but not public.)
pub(crate) struct Rewind {
    prefix: BytesMut,
    inner: BoxStream,
}

impl Rewind {
    pub(crate) fn new(prefix: BytesMut, inner: BoxStream) -> Rewind {
        Rewind { prefix, inner }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn rewind_yields_the_prefix_first_and_writes_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewind::new(BytesMut::from(&b"abc"[..]), Box::new(a));
        b.write_all(b"def").await.unwrap();
        let mut got = [0u8; 6];
        r.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdef");
        r.write_all(b"xyz").await.unwrap();
        let mut back = [0u8; 3];
        b.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"xyz");
    }

    #[test]
    fn errors_are_send_sync() {
        fn check<T: Send + Sync + 'static + std::error::Error>() {}
        check::<TlsError>();
    }
}
