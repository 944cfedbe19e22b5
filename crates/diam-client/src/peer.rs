//! The client side: one connection to one peer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diam_proto::peer::{CloseReason, IdGenerator, PeerConnection, PeerInfo, PeerState, Role};
use diam_proto::Message;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::conn::{Command, Reply, Shared, Task, Unanswered};
use crate::{ConnectionConfig, ConnectionStats, Error, Hooks};

/// A connection to one Diameter peer.
///
/// [`Peer::connect`] dials, exchanges capabilities and returns once the
/// connection is open. Cloning is cheap; every clone talks to the same
/// connection task. When the last clone is dropped the connection closes
/// gracefully (DPR).
///
/// ```no_run
/// # async fn run() -> Result<(), diam_client::Error> {
/// use diam_client::{ConnectionConfig, Peer};
/// use diam_proto::{avps, Message};
/// let mut config = ConnectionConfig::new("client.example.com", "example.com");
/// config.peer.auth_application_ids = vec![4];
/// let peer = Peer::connect("127.0.0.1:3868".parse().unwrap(), config).await?;
/// let ccr = Message::request(4, 272).avp(avps::SESSION_ID, "client.example.com;1;1").build();
/// let cca = peer.send(ccr).await?;
/// # let _ = cca; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    request_timeout: Duration,
    max_pending: usize,
}

/// A seed for identifiers and jitter: diam-link's generator, seeded from
/// per-instance hashing keys and the clock, so connections differ.
pub(crate) fn seed() -> u64 {
    use diam_link::backoff::RandomSource;
    diam_link::backoff::SplitMix64::from_entropy().next_u64()
}

/// `timeout` from now; a timeout too large to represent means "no
/// deadline" (a century).
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Starts the task for an established TCP stream; returns the handle parts.
pub(crate) fn spawn_connection(
    stream: TcpStream,
    remote: SocketAddr,
    role: Role,
    config: Arc<ConnectionConfig>,
    hooks: Hooks,
    inline_failure: Option<crate::FailureCallback>,
    opened: Option<oneshot::Sender<Result<(), Error>>>,
) -> (mpsc::Sender<Command>, Arc<Shared>, tokio::task::JoinHandle<()>) {
    let _ = stream.set_nodelay(config.nodelay);
    let (tx, rx) = mpsc::channel(config.max_pending.min(65_536));
    let shared = Shared::new(remote);
    let seed = seed();
    let mut proto = PeerConnection::new(role, config.peer.clone(), IdGenerator::new(unix_now(), seed), seed);
    proto.handle_connecting();
    let mut task = Task::new(proto, config, shared.clone(), rx, hooks, opened);
    task.inline_failure = inline_failure;
    let handle = tokio::spawn(task.run(stream));
    (tx, shared, handle)
}

impl Peer {
    /// Connects to `addr` and exchanges capabilities. Returns when the
    /// connection is open, or with the handshake's error (e.g.
    /// [`Error::HandshakeFailed`] with the CEA's Result-Code).
    pub async fn connect(addr: SocketAddr, config: ConnectionConfig) -> Result<Peer, Error> {
        Self::connect_with(addr, config, Hooks::default()).await
    }

    /// [`connect`](Self::connect) with a request handler and/or a failure
    /// callback.
    pub async fn connect_with(addr: SocketAddr, config: ConnectionConfig, hooks: Hooks) -> Result<Peer, Error> {
        Self::connect_inner(addr, config, hooks, None).await
    }

    /// [`connect_with`](Self::connect_with) plus a failure hook run inline
    /// in the connection task (for the pool's bookkeeping).
    pub(crate) async fn connect_inner(
        addr: SocketAddr,
        config: ConnectionConfig,
        hooks: Hooks,
        inline_failure: Option<crate::FailureCallback>,
    ) -> Result<Peer, Error> {
        config.validate()?;
        let stream = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(Error::Connect { addr, source }),
            Err(_) => return Err(Error::ConnectTimeout(addr)),
        };
        let config = Arc::new(config);
        let (opened_tx, opened_rx) = oneshot::channel();
        let (commands, shared, _task) =
            spawn_connection(stream, addr, Role::Initiator, config.clone(), hooks, inline_failure, Some(opened_tx));
        match opened_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Cancelled),
        }
        Ok(Peer {
            inner: Arc::new(Inner {
                commands,
                permits: Arc::new(Semaphore::new(config.max_pending)),
                shared,
                request_timeout: config.request_timeout,
                max_pending: config.max_pending,
            }),
        })
    }

    /// Sends a request and waits for its answer, up to the configured
    /// request timeout. Waits for room when `max_pending` requests are
    /// already in flight (within the same timeout).
    ///
    /// The Hop-by-Hop identifier is assigned by the connection; a zero
    /// End-to-End identifier is assigned too (a non-zero one is kept, for
    /// retransmissions).
    pub async fn send(&self, request: Message) -> Result<Message, Error> {
        self.send_with_timeout(request, self.inner.request_timeout).await
    }

    /// [`send`](Self::send) with an explicit timeout.
    ///
    /// Dropping the returned future cancels the request safely: its slot
    /// is released when the answer arrives or its deadline passes.
    pub async fn send_with_timeout(&self, request: Message, timeout: Duration) -> Result<Message, Error> {
        self.send_until(request, deadline_after(timeout)).await.map_err(|u| u.error)
    }

    /// Sends and waits for the answer until `deadline`, reporting whether an
    /// unanswered request was written (for retransmission decisions).
    pub(crate) async fn send_until(&self, request: Message, deadline: Instant) -> Reply {
        let permit = match tokio::time::timeout_at(deadline, self.inner.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Unanswered::unsent(Error::Closed)),
            Err(_) => return Err(Unanswered::unsent(Error::Timeout)),
        };
        match self.submit(request, deadline, permit) {
            Ok(reply) => reply.await,
            Err(e) => Err(Unanswered::unsent(e)),
        }
    }

    /// Sends without waiting for room: fails at once with
    /// [`Error::Overloaded`] when `max_pending` requests are in flight.
    /// The returned future resolves to the answer.
    pub fn try_send(
        &self,
        request: Message,
    ) -> Result<impl std::future::Future<Output = Result<Message, Error>> + Send + 'static, Error> {
        let permit = match self.inner.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(Error::Overloaded),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::Closed),
        };
        let reply = self.submit(request, deadline_after(self.inner.request_timeout), permit)?;
        Ok(async move { reply.await.map_err(|u| u.error) })
    }

    fn submit(
        &self,
        request: Message,
        deadline: Instant,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<impl std::future::Future<Output = Reply> + Send + 'static, Error> {
        if !request.is_request() {
            return Err(Error::InvalidRequest("the message has no R flag"));
        }
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Request { msg: request, reply, deadline, permit };
        match self.inner.commands.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(match self.inner.shared.closed.borrow().as_ref() {
                    Some(r) => Error::from_close(r),
                    None => Error::Closed,
                })
            }
        }
        Ok(async move { rx.await.unwrap_or(Err(Unanswered::unsent(Error::Cancelled))) })
    }

    /// Closes gracefully: stops taking requests, waits for outstanding
    /// answers (up to the drain timeout), sends DPR with `cause` (see
    /// [`diam_proto::disconnect_cause`]) and waits for the DPA (up to the
    /// DPA timeout).
    ///
    /// Returns how the connection ended: normally
    /// [`CloseReason::LocalDisconnect`] with the DPA's Result-Code.
    pub async fn close(&self, cause: i32) -> CloseReason {
        let (done, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Close { cause, done }).await.is_ok() {
            let _ = rx.await;
        }
        self.closed().await
    }

    /// Waits until the connection has closed, returning why.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.inner.shared.closed.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return CloseReason::TransportClosed;
            }
        }
    }

    /// The connection state.
    pub fn state(&self) -> PeerState {
        self.inner.shared.state()
    }

    /// What the peer advertised in its CEA.
    pub fn peer_info(&self) -> Option<&PeerInfo> {
        self.inner.shared.peer_info.get()
    }

    /// Process-unique connection id.
    pub fn id(&self) -> u64 {
        self.inner.shared.id
    }

    /// The peer's transport address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.shared.remote
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        self.inner.shared.stats()
    }

    /// Requests currently awaiting an answer (or queued to be sent).
    pub fn in_flight(&self) -> usize {
        self.inner.max_pending.saturating_sub(self.inner.permits.available_permits())
    }
}
