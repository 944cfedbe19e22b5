//! Transports: the byte streams a connection runs over, and how they are
//! opened ([`Connector`]) and accepted ([`Acceptor`]).
//!
//! The connection task is generic over any [`Stream`]
//! (`AsyncRead + AsyncWrite + Unpin + Send`); TCP is implemented here
//! ([`TcpConnector`], [`TcpAcceptor`]). TLS, in-band TLS and SCTP plug in
//! as further implementations of the two traits.

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
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("kind", &self.kind)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

/// Opens transport connections to peer addresses.
pub trait Connector: Send + Sync + 'static {
    /// Connects to `addr` (resolving its host name now, when it has one).
    fn connect<'a>(&'a self, addr: &'a PeerAddr) -> BoxFuture<'a, io::Result<Connection>>;
}

/// Accepts inbound transport connections.
pub trait Acceptor: Send + 'static {
    /// The next connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>>;
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

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a PeerAddr) -> BoxFuture<'a, io::Result<Connection>> {
        Box::pin(async move {
            if let Some(e) = unsupported(addr) {
                return Err(e);
            }
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
            Ok(Connection {
                local: stream.local_addr().ok(),
                remote: stream.peer_addr().ok(),
                stream: Box::new(stream),
                kind: TransportKind::Tcp,
            })
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
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
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
            Ok(Connection {
                local: stream.local_addr().ok(),
                remote: Some(remote),
                stream: Box::new(stream),
                kind: TransportKind::Tcp,
            })
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}
