//! The connected stream handed to hooks, and dialing.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
#[cfg(unix)]
use tokio::net::{UnixSocket, UnixStream};
use tokio::time::{Instant, Sleep};

use crate::client::{Hooks, Settings};
use crate::error::{Error, Kind};
use crate::remote::Remote;

/// A socket created but not yet connected, handed to [`Hooks::on_socket`] so callers
/// can set options the config does not cover (buffer sizes, marks, `SO_BINDTODEVICE`…).
///
/// On Unix it implements [`AsFd`](std::os::fd::AsFd), so `socket2::SockRef::from(&socket)`
/// or `libc` calls work on it.
#[derive(Debug)]
#[non_exhaustive]
pub enum SocketRef<'a> {
    /// A TCP socket (keepalive already applied).
    Tcp(&'a TcpSocket),
    /// A Unix-domain stream socket.
    #[cfg(unix)]
    Unix(&'a UnixSocket),
}

#[cfg(unix)]
impl std::os::fd::AsFd for SocketRef<'_> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Tcp(socket) => socket.as_fd(),
            Self::Unix(socket) => socket.as_fd(),
        }
    }
}

enum Io {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(UnixStream),
}

/// Arms a timer when an operation first goes pending and fails it if the timer fires
/// before the operation makes progress.
struct Deadline {
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl Deadline {
    fn new(timeout: Option<Duration>) -> Option<Self> {
        timeout.map(|timeout| Self { timeout, sleep: Box::pin(tokio::time::sleep(timeout)), armed: false })
    }

    /// Called while the operation is pending: `true` once the timeout has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + self.timeout);
            self.armed = true;
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return true;
        }
        false
    }
}

fn settle<T>(
    deadline: &mut Option<Deadline>,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<T>>,
    what: &str,
) -> Poll<io::Result<T>> {
    let Some(deadline) = deadline else { return poll };
    if poll.is_ready() {
        deadline.armed = false;
        return poll;
    }
    if deadline.expired(cx) {
        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))));
    }
    Poll::Pending
}

/// A connected TCP or Unix-domain stream, as handed to
/// [`Hooks::on_connect`] and [`Hooks::on_session`].
///
/// It implements [`AsyncRead`] and [`AsyncWrite`] and enforces the config's read and
/// write timeouts: an operation that stays pending longer fails with
/// [`io::ErrorKind::TimedOut`]. Split it with [`tokio::io::split`] to read and write from
/// different tasks.
pub struct LinkStream {
    io: Io,
    remote: Arc<Remote>,
    read_deadline: Option<Deadline>,
    write_deadline: Option<Deadline>,
}

impl LinkStream {
    fn new(io: Io, remote: Arc<Remote>, config: &Settings) -> Self {
        Self {
            io,
            remote,
            read_deadline: Deadline::new(config.read_timeout),
            write_deadline: Deadline::new(config.write_timeout),
        }
    }

    /// The peer this stream is connected to.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// The TCP stream, when the remote is TCP (for `peer_addr`, `set_linger`…).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.io {
            Io::Tcp(stream) => Some(stream),
            #[cfg(unix)]
            Io::Unix(_) => None,
        }
    }

    /// The Unix-domain stream, when the remote is a Unix socket.
    #[cfg(unix)]
    pub fn as_unix(&self) -> Option<&UnixStream> {
        match &self.io {
            Io::Unix(stream) => Some(stream),
            Io::Tcp(_) => None,
        }
    }
}

impl std::fmt::Debug for LinkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStream")
            .field("remote", &self.remote)
            .field("read_timeout", &self.read_deadline.as_ref().map(|d| d.timeout))
            .field("write_timeout", &self.write_deadline.as_ref().map(|d| d.timeout))
            .finish_non_exhaustive()
    }
}

macro_rules! with_io {
    ($io:expr, $s:ident => $body:expr) => {
        match $io {
            Io::Tcp($s) => $body,
            #[cfg(unix)]
            Io::Unix($s) => $body,
        }
    };
}

impl AsyncRead for LinkStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = with_io!(&mut this.io, s => Pin::new(s).poll_read(cx, buf));
        settle(&mut this.read_deadline, cx, poll, "read")
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = with_io!(&mut this.io, s => Pin::new(s).poll_write(cx, buf));
        settle(&mut this.write_deadline, cx, poll, "write")
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = with_io!(&mut this.io, s => Pin::new(s).poll_write_vectored(cx, bufs));
        settle(&mut this.write_deadline, cx, poll, "write")
    }

    fn is_write_vectored(&self) -> bool {
        with_io!(&self.io, s => s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let poll = with_io!(&mut this.io, s => Pin::new(s).poll_flush(cx));
        settle(&mut this.write_deadline, cx, poll, "flush")
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_io!(&mut self.io, s => Pin::new(s).poll_shutdown(cx))
    }
}

fn connect_error(err: io::Error) -> Error {
    Error::with_source(Kind::Connect, err)
}

/// Opens a socket to `remote`, runs `on_socket`, and connects (no timeout: the caller adds it).
pub(crate) async fn dial<H: Hooks>(
    remote: &Arc<Remote>,
    config: &Settings,
    hooks: &mut H,
) -> Result<LinkStream, Error> {
    match &**remote {
        Remote::Tcp { host, port } => {
            let addrs = tokio::net::lookup_host((host.as_str(), *port)).await.map_err(connect_error)?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
            for addr in addrs {
                let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
                let attempt = async {
                    let socket = socket?;
                    if let Some(keepalive) = config.keepalive {
                        let params = socket2::TcpKeepalive::new().with_time(keepalive).with_interval(keepalive);
                        socket2::SockRef::from(&socket).set_tcp_keepalive(&params)?;
                    }
                    hooks.on_socket(SocketRef::Tcp(&socket))?;
                    let stream = socket.connect(addr).await?;
                    stream.set_nodelay(config.nodelay)?;
                    Ok::<_, io::Error>(stream)
                };
                match attempt.await {
                    Ok(stream) => return Ok(LinkStream::new(Io::Tcp(stream), Arc::clone(remote), config)),
                    Err(err) => last = err,
                }
            }
            Err(connect_error(last))
        }
        #[cfg(unix)]
        Remote::Unix { path } => {
            let socket = UnixSocket::new_stream().map_err(connect_error)?;
            hooks.on_socket(SocketRef::Unix(&socket)).map_err(connect_error)?;
            let stream = socket.connect(path).await.map_err(connect_error)?;
            Ok(LinkStream::new(Io::Unix(stream), Arc::clone(remote), config))
        }
        #[cfg(not(unix))]
        Remote::Unix { .. } => {
            Err(connect_error(io::Error::new(io::ErrorKind::Unsupported, "Unix sockets need a Unix platform")))
        }
    }
}
