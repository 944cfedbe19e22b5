//! [`PeerHandle`]: how the application talks to one peer of a node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use diam_link::events::{ConnectionId, EventDispatcher};
use diam_link::Remote;
use diam_proto::peer::{CloseReason, PeerInfo};
use diam_proto::psm::{Direction, PeerState};
use diam_proto::uri::PeerAddr;
use diam_proto::Message;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::transport::TransportKind;
use crate::Error;

/// How a request ended without an answer.
#[derive(Debug)]
pub(crate) struct Unanswered {
    pub(crate) error: Error,
    /// The End-to-End identifier the request carried, when it had been
    /// written to a connection (so the peer may have received it); `None`
    /// when it never was.
    pub(crate) written: Option<u32>,
}

impl Unanswered {
    pub(crate) fn unsent(error: Error) -> Unanswered {
        Unanswered { error, written: None }
    }
}

/// What the peer task reports for one request.
pub(crate) type Reply = Result<Message, Unanswered>;

/// A message to the peer task.
#[derive(Debug)]
pub(crate) enum Command {
    /// Boxed: a channel allocates room for 32 items up front, and every peer
    /// has two channels (a 16-byte item keeps that under 1 KiB).
    Request(Box<RequestCmd>),
    /// Start dialling (a lazily connected peer's first send).
    Connect,
    /// Drain, DPR with `cause`, and stop for good.
    Close { cause: i32, done: oneshot::Sender<()> },
    /// Replace the connection gracefully (lifetime rotation).
    Rotate,
    /// Send a watchdog DWR now.
    Probe,
}

/// One request on its way to the peer task.
#[derive(Debug)]
pub(crate) struct RequestCmd {
    pub(crate) msg: Message,
    pub(crate) reply: ReplyTo,
    pub(crate) deadline: Instant,
    pub(crate) permit: OwnedSemaphorePermit,
    /// Bytes appended to the message as it is written (a relay's
    /// Route-Record AVP); the length is patched.
    pub(crate) append: Option<Bytes>,
    /// Written with the T flag (a retransmission after a failover).
    pub(crate) retransmit: bool,
}

/// A relayed request's outcome, for the peer task that forwarded it.
pub(crate) type Relayed = (u64, Reply);

/// Where the outcome of a request goes.
#[derive(Debug)]
pub(crate) enum ReplyTo {
    /// The caller waiting on a handle.
    Caller(oneshot::Sender<Reply>),
    /// The peer task that forwards it for an agent, by its token (no task
    /// or channel per request: one channel per forwarding task).
    Relay(mpsc::UnboundedSender<Relayed>, u64),
}

impl ReplyTo {
    pub(crate) fn send(self, reply: Reply) {
        match self {
            ReplyTo::Caller(tx) => {
                let _ = tx.send(reply);
            }
            ReplyTo::Relay(tx, token) => {
                let _ = tx.send((token, reply));
            }
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self {
            ReplyTo::Caller(tx) => tx.is_closed(),
            ReplyTo::Relay(tx, _) => tx.is_closed(),
        }
    }
}

/// Per-peer counters (lock-free; the peer task updates them).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) unknown_answers: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) malformed_answers: AtomicU64,
    pub(crate) rejected_requests: AtomicU64,
    pub(crate) watchdog_answers: AtomicU64,
    pub(crate) last_watchdog_rtt_us: AtomicU64,
    pub(crate) ups: AtomicU64,
    pub(crate) connections_opened: AtomicU64,
    pub(crate) downs: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) restarts: AtomicU64,
}

/// A snapshot of a peer's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PeerStats {
    /// Messages written (requests, answers, base protocol).
    pub messages_sent: u64,
    /// Messages read.
    pub messages_received: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Answers whose Hop-by-Hop id matched no pending request (dropped).
    pub unknown_answers: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Answers with malformed AVPs (each failed only its own request).
    pub malformed_answers: u64,
    /// Requests from the peer refused with an RFC 6733 §7 error answer.
    pub rejected_requests: u64,
    /// DWAs received for the watchdog's DWRs.
    pub watchdog_answers: u64,
    /// Round-trip time of the last watchdog DWR.
    pub last_watchdog_rtt: Duration,
    /// Times the peer came up.
    pub ups: u64,
    /// Connections that completed their capabilities exchange (each up, and
    /// each replacement of a rotation).
    pub connections_opened: u64,
    /// Times it went down after being up.
    pub downs: u64,
    /// Connection attempts that failed before the peer was up (dial or
    /// capabilities exchange).
    pub failed_attempts: u64,
    /// Origin-State-Id changes seen (peer restarts).
    pub restarts: u64,
}

/// What carries the peer now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkMeta {
    pub(crate) direction: Direction,
    pub(crate) transport: TransportKind,
    pub(crate) local: Option<SocketAddr>,
    pub(crate) remote: Option<SocketAddr>,
}

/// Hears of a peer's changes (state, watchdog answers) as they happen, on
/// the peer's task: it must only take note and wake its own task.
pub(crate) trait Observer: Send + Sync {
    fn changed(&self, key: usize);
}

/// State shared between the peer task and its handles.
pub(crate) struct PeerShared {
    pub(crate) id: ConnectionId,
    /// The identity (once known) or the dial address: for events and logs.
    pub(crate) label: Mutex<Arc<str>>,
    /// The label the peer was created with (its configured identity, or
    /// its dial address), never changed: for metric labels, which must be
    /// stable.
    pub(crate) name: Arc<str>,
    /// Where the peer is dialled, if anywhere.
    pub(crate) target: Option<PeerAddr>,
    /// The same, as events carry it.
    pub(crate) remote: Option<Arc<Remote>>,
    /// The node's event dispatcher.
    pub(crate) events: EventDispatcher,
    state: AtomicU8,
    /// Bumped on every change handles may wait for (state, watchdog answers).
    changes: watch::Sender<u64>,
    /// Told of the same changes, each with its own key: the groups this
    /// peer is a member of (one task per group, not per member).
    observers: Mutex<Vec<(Weak<dyn Observer>, usize)>>,
    pub(crate) info: Mutex<Option<Arc<PeerInfo>>>,
    pub(crate) link: Mutex<Option<LinkMeta>>,
    /// What TLS negotiated on the open connection, if it is TLS.
    pub(crate) tls: Mutex<Option<Arc<crate::tls::TlsInfo>>>,
    pub(crate) commands: mpsc::Sender<Command>,
    /// Connect, close, rotate and probe: a queue of their own, read on every
    /// round, so a full request queue (a peer that stopped reading) never
    /// holds them up.
    pub(crate) control: mpsc::Sender<Command>,
    permits: Arc<Semaphore>,
    max_pending: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) counters: Counters,
    /// Why the last connection or attempt failed.
    pub(crate) last_error: Mutex<Option<Error>>,
    pub(crate) last_reason: Mutex<Option<CloseReason>>,
    /// While reconnecting, sends fail at once instead of waiting.
    pub(crate) fail_fast_reconnecting: bool,
    /// The peer is dialled only on its first send.
    pub(crate) lazy: bool,
    /// Run by the task when the peer is closed for good (owner bookkeeping,
    /// a few map operations).
    pub(crate) retire: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Microseconds since `epoch` of the last use, and of the last open.
    pub(crate) epoch: Instant,
    pub(crate) last_used_us: AtomicU64,
    pub(crate) opened_us: AtomicU64,
}

impl std::fmt::Debug for PeerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerShared")
            .field("id", &self.id)
            .field("label", &self.label())
            .field("state", &self.state())
            .finish()
    }
}

pub(crate) struct SharedInit {
    pub(crate) label: Arc<str>,
    pub(crate) target: Option<PeerAddr>,
    pub(crate) remote: Option<Arc<Remote>>,
    pub(crate) events: EventDispatcher,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) control: mpsc::Sender<Command>,
    pub(crate) max_pending: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) fail_fast_reconnecting: bool,
    pub(crate) lazy: bool,
}

impl PeerShared {
    pub(crate) fn new(init: SharedInit) -> Arc<PeerShared> {
        Arc::new(PeerShared {
            id: ConnectionId::unique(),
            name: init.label.clone(),
            label: Mutex::new(init.label),
            target: init.target,
            remote: init.remote,
            events: init.events,
            state: AtomicU8::new(PeerState::Disconnected.index() as u8),
            changes: watch::channel(0).0,
            observers: Mutex::new(Vec::new()),
            info: Mutex::new(None),
            link: Mutex::new(None),
            tls: Mutex::new(None),
            commands: init.commands,
            control: init.control,
            permits: Arc::new(Semaphore::new(init.max_pending)),
            max_pending: init.max_pending,
            request_timeout: init.request_timeout,
            counters: Counters::default(),
            last_error: Mutex::new(None),
            last_reason: Mutex::new(None),
            fail_fast_reconnecting: init.fail_fast_reconnecting,
            lazy: init.lazy,
            retire: OnceLock::new(),
            epoch: Instant::now(),
            last_used_us: AtomicU64::new(0),
            opened_us: AtomicU64::new(0),
        })
    }

    pub(crate) fn state(&self) -> PeerState {
        PeerState::ALL[usize::from(self.state.load(Ordering::Acquire)).min(PeerState::ALL.len() - 1)]
    }

    pub(crate) fn set_state(&self, s: PeerState) {
        self.state.store(s.index() as u8, Ordering::Release);
        self.changed();
    }

    /// Wakes whoever waits for a change, and tells the observers.
    pub(crate) fn changed(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        let mut observers = lock(&self.observers);
        let mut gone = false;
        for (observer, key) in observers.iter() {
            match observer.upgrade() {
                Some(o) => o.changed(*key),
                None => gone = true,
            }
        }
        if gone {
            observers.retain(|(o, _)| o.strong_count() > 0);
        }
    }

    /// Tells `observer` of every later change, with `key`, until it is
    /// dropped.
    pub(crate) fn observe(&self, observer: Weak<dyn Observer>, key: usize) {
        let mut observers = lock(&self.observers);
        observers.retain(|(o, _)| o.strong_count() > 0);
        observers.push((observer, key));
    }

    pub(crate) fn label(&self) -> Arc<str> {
        lock(&self.label).clone()
    }

    pub(crate) fn since_epoch_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub(crate) fn touch(&self) {
        self.last_used_us.store(self.since_epoch_us(), Ordering::Relaxed);
    }

    /// [`touch`](Self::touch) at `now` (the caller's clock reading).
    pub(crate) fn touch_at(&self, now: Instant) {
        let us = u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        self.last_used_us.store(us, Ordering::Relaxed);
    }

    pub(crate) fn idle_for(&self) -> Duration {
        Duration::from_micros(self.since_epoch_us().saturating_sub(self.last_used_us.load(Ordering::Relaxed)))
    }

    pub(crate) fn open_for(&self) -> Duration {
        Duration::from_micros(self.since_epoch_us().saturating_sub(self.opened_us.load(Ordering::Relaxed)))
    }

    pub(crate) fn stats(&self) -> PeerStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PeerStats {
            messages_sent: l(&c.messages_sent),
            messages_received: l(&c.messages_received),
            bytes_sent: l(&c.bytes_sent),
            bytes_received: l(&c.bytes_received),
            unknown_answers: l(&c.unknown_answers),
            timeouts: l(&c.timeouts),
            malformed_answers: l(&c.malformed_answers),
            rejected_requests: l(&c.rejected_requests),
            watchdog_answers: l(&c.watchdog_answers),
            last_watchdog_rtt: Duration::from_micros(l(&c.last_watchdog_rtt_us)),
            ups: l(&c.ups),
            connections_opened: l(&c.connections_opened),
            downs: l(&c.downs),
            failed_attempts: l(&c.failed_attempts),
            restarts: l(&c.restarts),
        }
    }

    /// The error a caller gets when the peer is closed for good.
    fn final_error(&self) -> Error {
        lock(&self.last_error).clone().unwrap_or(Error::Closed)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The data behind these short locks stays consistent (plain stores).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `timeout` from now; a timeout too large to represent means "no
/// deadline" (a century).
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    deadline_from(Instant::now(), timeout)
}

/// `now + timeout`, saturating at a century.
pub(crate) fn deadline_from(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Waits for the peer task's reply, but never long past `deadline`: a
/// request still queued then (the task is not taking requests, e.g. its
/// peer stopped reading) was never written, and the task will not write it
/// any more (it checks deadlines before writing).
async fn bounded(reply: impl std::future::Future<Output = Reply>, deadline: Instant) -> Reply {
    /// Time for the task's own timeout report to arrive first.
    const GRACE: Duration = Duration::from_millis(50);
    match tokio::time::timeout_at(deadline + GRACE, reply).await {
        Ok(r) => r,
        Err(_) => Err(Unanswered::unsent(Error::Timeout)),
    }
}

/// One peer of a [`Node`](crate::Node): send requests to it, whichever
/// connection carries it now (one we dialled, or one it opened to us), and
/// watch its state.
///
/// Cloning is cheap; clones talk to the same peer task. Every request ends
/// with its answer or a typed [`Error`] within its timeout. While the peer
/// is connecting, reconnecting or in watchdog SUSPECT/REOPEN, a request
/// waits (within its timeout) for the peer to be `Open`.
///
/// ```no_run
/// # async fn run(node: diam_client::Node) -> Result<(), diam_client::Error> {
/// use diam_proto::{avps, Message};
/// // The PCEF that connected to us: send it a Re-Auth-Request.
/// let pcef = node.peer("pcef.example.com").expect("connected");
/// let rar = Message::request(16_777_238, 258).avp(avps::SESSION_ID, "pcef.example.com;1;1").build();
/// let raa = pcef.send(rar).await?;
/// # let _ = raa; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PeerHandle {
    pub(crate) shared: Arc<PeerShared>,
    /// Keeps the node running while the application holds the handle (the
    /// node's own references to its peers carry none).
    pub(crate) owner: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("id", &self.shared.id)
            .field("peer", &self.shared.label())
            .field("state", &self.state())
            .finish()
    }
}

impl PeerHandle {
    /// Sends a request and waits for its answer, within the configured
    /// request timeout (waiting for the peer to be open included).
    ///
    /// The Hop-by-Hop identifier is assigned by the connection; a zero
    /// End-to-End identifier is assigned too (a non-zero one is kept, for
    /// retransmissions).
    pub async fn send(&self, request: Message) -> Result<Message, Error> {
        self.send_with_timeout(request, self.shared.request_timeout).await
    }

    /// [`send`](Self::send) with an explicit timeout. Dropping the future
    /// cancels the request safely: its slot is freed by its answer or its
    /// deadline.
    pub async fn send_with_timeout(&self, request: Message, timeout: Duration) -> Result<Message, Error> {
        self.send_until(request, deadline_after(timeout)).await.map_err(|u| u.error)
    }

    /// Sends and waits until `deadline`, reporting whether an unanswered
    /// request was written (for retransmission decisions).
    pub(crate) async fn send_until(&self, request: Message, deadline: Instant) -> Reply {
        if !request.is_request() {
            return Err(Unanswered::unsent(Error::InvalidRequest("the message has no R flag")));
        }
        self.shared.touch();
        loop {
            if let Err(e) = self.wait_sendable(deadline).await {
                return Err(Unanswered::unsent(e));
            }
            let permit = match tokio::time::timeout_at(deadline, self.shared.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(Unanswered::unsent(Error::Closed)),
                Err(_) => return Err(Unanswered::unsent(Error::Timeout)),
            };
            let reply = match self.submit(request.clone(), deadline, permit) {
                Ok(r) => r,
                Err(e) => return Err(Unanswered::unsent(e)),
            };
            match bounded(reply, deadline).await {
                // The state moved between our check and the task: it was
                // never written, so wait for the peer again.
                Err(Unanswered { error: Error::NotAvailable(_), written: None }) if Instant::now() < deadline => {}
                other => return other,
            }
        }
    }

    /// Sends at once, without waiting for the peer to be open: a peer that
    /// is not open refuses with [`Error::NotAvailable`] (never written).
    pub(crate) async fn send_now(&self, request: Message, deadline: Instant) -> Reply {
        let permit = match tokio::time::timeout_at(deadline, self.shared.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(Unanswered::unsent(Error::Closed)),
            Err(_) => return Err(Unanswered::unsent(Error::Timeout)),
        };
        match self.submit(request, deadline, permit) {
            Ok(reply) => bounded(reply, deadline).await,
            Err(e) => Err(Unanswered::unsent(e)),
        }
    }

    /// Waits until the peer is `Open`, or fails with why it will not be.
    async fn wait_sendable(&self, deadline: Instant) -> Result<(), Error> {
        if self.state() == PeerState::Open {
            return Ok(());
        }
        let mut rx = self.shared.changes.subscribe();
        loop {
            rx.borrow_and_update();
            match self.state() {
                PeerState::Open => return Ok(()),
                PeerState::Closed => return Err(self.shared.final_error()),
                // The first establishment failed: every waiter gets its error
                // now; the next attempt stays paced by the schedule.
                PeerState::Reconnecting | PeerState::Disconnected if self.never_up_and_failed() => {
                    return Err(self.shared.final_error())
                }
                PeerState::Disconnected if self.shared.lazy => self.connect(),
                PeerState::Disconnected if self.shared.target.is_none() => return Err(Error::NotConnected),
                PeerState::Reconnecting if self.shared.fail_fast_reconnecting => return Err(Error::Reconnecting),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(self.shared.final_error()),
                Err(_) => return Err(Error::Timeout),
            }
        }
    }

    fn never_up_and_failed(&self) -> bool {
        let c = &self.shared.counters;
        c.ups.load(Ordering::Relaxed) == 0 && c.failed_attempts.load(Ordering::Relaxed) > 0
    }

    /// Waits until the peer is open for requests, up to `timeout`; fails with
    /// why it is not (the handshake's error, a connect error, a timeout).
    pub async fn wait_open(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = deadline_after(timeout);
        let mut rx = self.shared.changes.subscribe();
        loop {
            rx.borrow_and_update();
            match self.state() {
                PeerState::Open => return Ok(()),
                PeerState::Closed => return Err(self.shared.final_error()),
                PeerState::Disconnected if !self.shared.lazy => {
                    if let Some(e) = crate::handle::lock(&self.shared.last_error).clone() {
                        return Err(e);
                    }
                }
                PeerState::Disconnected => self.connect(),
                _ => {}
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(self.shared.final_error()),
                Err(_) => {
                    return Err(crate::handle::lock(&self.shared.last_error).clone().unwrap_or(Error::Timeout));
                }
            }
        }
    }

    /// Waits until the peer's state satisfies `pred`, returning that state.
    pub async fn wait_for_state(&self, pred: impl Fn(PeerState) -> bool) -> PeerState {
        let mut rx = self.shared.changes.subscribe();
        loop {
            rx.borrow_and_update();
            let s = self.state();
            if pred(s) {
                return s;
            }
            if rx.changed().await.is_err() {
                return self.state();
            }
        }
    }

    /// Why the peer's last connection ended, once it has.
    pub fn last_reason(&self) -> Option<CloseReason> {
        lock(&self.shared.last_reason).clone()
    }

    /// Sends without waiting for room: fails at once with
    /// [`Error::Overloaded`] when `max_pending` requests are in flight, and
    /// with [`Error::NotAvailable`] when the peer is not open. The returned
    /// future resolves to the answer.
    pub fn try_send(
        &self,
        request: Message,
    ) -> Result<impl std::future::Future<Output = Result<Message, Error>> + Send + 'static, Error> {
        if !request.is_request() {
            return Err(Error::InvalidRequest("the message has no R flag"));
        }
        let state = self.state();
        if !state.can_send() {
            return Err(Error::NotAvailable(state));
        }
        let permit = match self.shared.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(Error::Overloaded),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Error::Closed),
        };
        self.shared.touch();
        let reply = self.submit(request, deadline_after(self.shared.request_timeout), permit)?;
        Ok(async move { reply.await.map_err(|u| u.error) })
    }

    fn submit(
        &self,
        request: Message,
        deadline: Instant,
        permit: OwnedSemaphorePermit,
    ) -> Result<impl std::future::Future<Output = Reply> + Send + 'static, Error> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Request(Box::new(RequestCmd {
            msg: request,
            reply: ReplyTo::Caller(reply),
            deadline,
            permit,
            append: None,
            retransmit: false,
        }));
        match self.shared.commands.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(Error::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.shared.final_error()),
        }
        Ok(async move { rx.await.unwrap_or(Err(Unanswered::unsent(Error::Cancelled))) })
    }

    /// Submits a request an agent forwards, without waiting: its outcome
    /// goes to `reply`. Fails at once when the peer is not open, has no
    /// room for another request, or is closed.
    pub(crate) fn forward(
        &self,
        request: Message,
        deadline: Instant,
        reply: ReplyTo,
        append: Option<Bytes>,
        retransmit: bool,
    ) -> Result<(), Error> {
        if self.state() != PeerState::Open {
            return Err(Error::NotAvailable(self.state()));
        }
        let Ok(permit) = self.shared.permits.clone().try_acquire_owned() else {
            return Err(Error::Overloaded);
        };
        self.shared.touch();
        let cmd = Command::Request(Box::new(RequestCmd { msg: request, reply, deadline, permit, append, retransmit }));
        match self.shared.commands.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(Error::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(self.shared.final_error()),
        }
    }

    /// Starts dialling a peer that has an address and is not connected (a
    /// lazily connected peer does this on its first send).
    pub fn connect(&self) {
        if self.state() == PeerState::Disconnected {
            let _ = self.shared.control.try_send(Command::Connect);
        }
    }

    /// Closes the peer for good, gracefully: no new requests, outstanding
    /// answers are awaited (up to the drain timeout), DPR with `cause` (see
    /// [`diam_proto::disconnect_cause`]) then the DPA (up to the DPA
    /// timeout). No reconnection follows. Returns how the last connection
    /// ended.
    pub async fn close(&self, cause: i32) -> Option<CloseReason> {
        let (done, rx) = oneshot::channel();
        if self.shared.control.send(Command::Close { cause, done }).await.is_ok() {
            let _ = rx.await;
        }
        crate::handle::lock(&self.shared.last_reason).clone()
    }

    /// Replaces the connection gracefully (the new one first, then drain and
    /// DPR the old). Returns false when the peer is not open.
    pub fn rotate(&self) -> bool {
        self.state() == PeerState::Open && self.shared.control.try_send(Command::Rotate).is_ok()
    }

    /// Asks the watchdog to send a DWR now (a health check within RFC 3539).
    pub fn probe(&self) {
        let _ = self.shared.control.try_send(Command::Probe);
    }

    /// The peer's state.
    pub fn state(&self) -> PeerState {
        self.shared.state()
    }

    /// What the peer advertised in its last CER or CEA.
    pub fn peer_info(&self) -> Option<Arc<PeerInfo>> {
        lock(&self.shared.info).clone()
    }

    /// The peer's DiameterIdentity, once known.
    pub fn identity(&self) -> Option<String> {
        self.peer_info().map(|i| i.origin_host.clone())
    }

    /// The process-unique id of this peer, the same in its events and
    /// failure reports across reconnections.
    pub fn id(&self) -> ConnectionId {
        self.shared.id
    }

    /// Where the peer is dialled, if anywhere.
    pub fn address(&self) -> Option<&PeerAddr> {
        self.shared.target.as_ref()
    }

    /// Who opened the connection that carries the peer now.
    pub fn direction(&self) -> Option<Direction> {
        lock(&self.shared.link).map(|l| l.direction)
    }

    /// What carries the connection now.
    pub fn transport(&self) -> Option<TransportKind> {
        lock(&self.shared.link).map(|l| l.transport)
    }

    /// What TLS negotiated on the connection now (version, cipher, the
    /// peer's certificate), when it is TLS.
    pub fn tls(&self) -> Option<Arc<crate::tls::TlsInfo>> {
        lock(&self.shared.tls).clone()
    }

    /// The remote socket address of the connection now.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        lock(&self.shared.link).and_then(|l| l.remote)
    }

    /// Counters.
    pub fn stats(&self) -> PeerStats {
        self.shared.stats()
    }

    /// Why the last connection or attempt ended.
    pub fn last_error(&self) -> Option<Error> {
        lock(&self.shared.last_error).clone()
    }

    /// Requests awaiting an answer (or queued to be sent).
    pub fn in_flight(&self) -> usize {
        self.shared.max_pending.saturating_sub(self.shared.permits.available_permits())
    }

    /// Tells `observer` whenever the peer's state changes or a watchdog
    /// answer arrives, with `key`.
    pub(crate) fn observe(&self, observer: Weak<dyn Observer>, key: usize) {
        self.shared.observe(observer, key);
    }
}
