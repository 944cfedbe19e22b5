//! Transports: the byte streams a connection runs over, and how they are
//! opened ([`Connector`]) and accepted ([`Acceptor`]).
//!
//! The connection task is generic over any [`Stream`]
//! (`AsyncRead + AsyncWrite + Unpin + Send`); TCP is implemented here
//! ([`TcpConnector`], [`TcpAcceptor`]), TLS-first in [`crate::tls`]
//! ([`TlsConnector`](crate::tls::TlsConnector),
//! [`TlsAcceptor`](crate::tls::TlsAcceptor)). In-band TLS runs on the
//! connection task after the CEA; SCTP would be a further implementation.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use diam_proto::uri::{PeerAddr, Transport};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A byte stream a Diameter connection can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What carries a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl TransportKind {
    /// `"tcp"` or `"tls"`, as events print it.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
        }
    }
}

/// An open transport connection.
pub struct Connection {
    /// The byte stream.
    pub stream: BoxStream,
    /// What carries it.
    pub kind: TransportKind,
    /// The local socket address, when there is one.
    pub local: Option<SocketAddr>,
    /// The remote socket address, when there is one.
    pub remote: Option<SocketAddr>,
    /// What TLS negotiated, on a TLS connection.
    pub tls: Option<crate::tls::TlsInfo>,
}

impl Connection {
    /// A plain connection over `stream`.
    pub fn plain(stream: BoxStream, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Connection {
        Connection { stream, kind: TransportKind::Tcp, local, remote, tls: None }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.kind)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Opens transport connections to peer addresses.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `addr` (resolving its host name now, when it has one).
    /// `identity` is the peer's DiameterIdentity when it is configured: a
    /// TLS connector verifies the server's certificate for it (else for
    /// the host of `addr`).
    fn connect<'a>(&'a self, addr: &'a PeerAddr, identity: Option<&'a str>) -> BoxFuture<'a, io::Result<Connection>>;
}

/// Accepts inbound transport connections.
pub trait Acceptor: Send + 'static {
    /// The next connection, as the listener hands it over (cheap: no
    /// handshake, so one slow peer never holds up the others).
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>>;
    /// Finishes a connection [`accept`](Self::accept) returned (a TLS
    /// handshake); it runs on the connection's own task, within the node's
    /// CER deadline. The default hands it over as it is.
    fn establish(&self, conn: Connection) -> BoxFuture<'static, io::Result<Connection>> {
        Box::pin(async move { Ok(conn) })
    }
    /// The address it listens on.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// TCP: resolves host names at each dial, tries every address in turn
/// within the connect timeout, and sets TCP_NODELAY.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    connect_timeout: Duration,
    nodelay: bool,
}

impl TcpConnector {
    /// A connector giving up on each dial after `connect_timeout`.
    pub fn new(connect_timeout: Duration, nodelay: bool) -> Self {
        TcpConnector { connect_timeout, nodelay }
    }
}

fn unsupported(addr: &PeerAddr) -> Option<io::Error> {
    if addr.is_tls() {
        return Some(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{addr}: TLS (aaas://) needs a TLS connector; this one speaks plain TCP"),
        ));
    }
    if addr.transport() != Transport::Tcp {
        return Some(io::Error::new(io::ErrorKind::Unsupported, format!("{addr}: only TCP transport is supported")));
    }
    None
}

impl TcpConnector {
    /// The TCP connection under `addr`, whatever its scheme (TLS goes on
    /// top of it).
    pub(crate) async fn dial(&self, addr: &PeerAddr) -> io::Result<Connection> {
        if addr.transport() != Transport::Tcp {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("{addr}: only TCP transport is supported")));
        }
        {
            let attempt = async {
                let candidates: Vec<SocketAddr> = match addr.socket_addr() {
                    Some(a) => vec![a],
                    None => tokio::net::lookup_host((&*addr.host(), addr.port())).await?.collect(),
                };
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: the name has no address"));
                for a in candidates {
                    match TcpStream::connect(a).await {
                        Ok(s) => return Ok(s),
                        Err(e) => last = io::Error::new(e.kind(), format!("{a}: {e}")),
                    }
                }
                Err(last)
            };
            let stream = tokio::time::timeout(self.connect_timeout, attempt)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("{addr}: connect timed out")))??;
            let _ = stream.set_nodelay(self.nodelay);
            let (local, remote) = (stream_local(&stream), stream.peer_addr().ok());
            Ok(Connection::plain(Box::new(stream), local, remote))
        }
    }
}

fn stream_local(s: &TcpStream) -> Option<SocketAddr> {
    s.local_addr().ok()
}

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a PeerAddr, _identity: Option<&'a str>) -> BoxFuture<'a, io::Result<Connection>> {
        Box::pin(async move {
            if let Some(e) = unsupported(addr) {
                return Err(e);
            }
            self.dial(addr).await
        })
    }
}

/// Accepts TCP connections (TCP_NODELAY set on each).
#[derive(Debug)]
pub struct TcpAcceptor {
    listener: TcpListener,
    nodelay: bool,
}

/// Accept backlog of listening sockets: enough for a burst of thousands of
/// peers reconnecting at once (the kernel caps it at `somaxconn`).
pub const LISTEN_BACKLOG: u32 = 4096;

impl TcpAcceptor {
    /// Binds `addr` with a backlog of [`LISTEN_BACKLOG`].
    pub async fn bind(addr: SocketAddr) -> io::Result<TcpAcceptor> {
        Self::bind_socket(addr, false)
    }

    /// Binds `addr` with SO_REUSEPORT, so that several listeners (one per
    /// runtime thread, say) share the port and the kernel spreads incoming
    /// connections over them by their addresses. Every listener of the port
    /// must set it. Synchronous (binding never waits); call it inside the
    /// runtime that will accept on it.
    #[cfg(unix)]
    pub fn bind_shared(addr: SocketAddr) -> io::Result<TcpAcceptor> {
        Self::bind_socket(addr, true)
    }

    fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpAcceptor> {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        #[cfg(unix)]
        {
            socket.set_reuseaddr(true)?;
            if reuse_port {
                socket.set_reuseport(true)?;
            }
        }
        #[cfg(not(unix))]
        let _ = reuse_port;
        socket.bind(addr)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        Ok(TcpAcceptor { listener, nodelay: true })
    }

    /// Wraps a bound listener.
    pub fn from_listener(listener: TcpListener) -> Self {
        TcpAcceptor { listener, nodelay: true }
    }
}

impl Acceptor for TcpAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (stream, remote) = self.listener.accept().await?;
            let _ = stream.set_nodelay(self.nodelay);
            let local = stream_local(&stream);
            Ok(Connection::plain(Box::new(stream), local, Some(remote)))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
