//! The connection task: one task owns each socket.
//!
//! Callers submit requests over a bounded channel. The task allocates
//! Hop-by-Hop identifiers, records each pending request with its deadline,
//! and appends every queued request to one write buffer, so a single
//! `write` carries all frames that queued meanwhile. Reads go into a
//! `BytesMut`; every complete frame is decoded (zero-copy) per read. The
//! protocol itself (CER/CEA, watchdog, DPR/DPA) is the sans-IO
//! [`PeerConnection`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::{Buf, BytesMut};
use diam_proto::peer::{CloseReason, PeerConnection, PeerEvent, PeerInfo, PeerState};
use diam_proto::{avps, result_codes, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use crate::{ConnectionConfig, Error, Handler, Response};

/// How a request ended without an answer.
#[derive(Debug)]
pub(crate) struct Unanswered {
    pub(crate) error: Error,
    /// The End-to-End identifier the request carried, when it had reached the
    /// connection's write path (so the peer may have received it); `None` when
    /// it was never written.
    pub(crate) written: Option<u32>,
}

impl Unanswered {
    pub(crate) fn unsent(error: Error) -> Unanswered {
        Unanswered { error, written: None }
    }
}

/// What the connection task reports for one request.
pub(crate) type Reply = Result<Message, Unanswered>;

/// A caller's message to the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Request { msg: Message, reply: oneshot::Sender<Reply>, deadline: Instant, permit: OwnedSemaphorePermit },
    Close { cause: i32, done: oneshot::Sender<()> },
}

/// What an `on_failure` callback learns about a failed connection.
#[derive(Debug, Clone)]
pub struct FailureInfo {
    /// Process-unique connection id.
    pub connection_id: u64,
    /// The peer's transport address.
    pub peer_address: SocketAddr,
    /// The peer's Origin-Host, when the capabilities exchange got that far.
    pub peer_origin_host: Option<String>,
    /// Why the connection failed.
    pub reason: CloseReason,
    /// The connection state after the failure.
    pub state: PeerState,
    /// When the failure was detected.
    pub timestamp: SystemTime,
}

/// A failure callback. It runs on tokio's blocking pool, so a slow or
/// panicking callback never delays I/O or takes the connection task down.
pub type FailureCallback = Arc<dyn Fn(FailureInfo) + Send + Sync>;

/// Optional behaviour attached to connections.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Answers application requests from the peer. Without one, they get
    /// 3001 DIAMETER_COMMAND_UNSUPPORTED.
    pub handler: Option<Arc<dyn Handler>>,
    /// Called once when a connection fails (anything but a local close).
    pub on_failure: Option<FailureCallback>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("handler", &self.handler.is_some())
            .field("on_failure", &self.on_failure.is_some())
            .finish()
    }
}

/// Per-connection counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) unknown_answers: AtomicU64,
    pub(crate) timeouts: AtomicU64,
}

/// A snapshot of a connection's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStats {
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
}

/// State shared between the task and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) remote: SocketAddr,
    state: AtomicU8,
    pub(crate) peer_info: OnceLock<PeerInfo>,
    pub(crate) counters: Counters,
    pub(crate) closed: watch::Sender<Option<CloseReason>>,
}

const STATES: [PeerState; 9] = [
    PeerState::Disconnected,
    PeerState::Connecting,
    PeerState::CerSent,
    PeerState::Open,
    PeerState::DwrSent,
    PeerState::Closing,
    PeerState::Failed,
    PeerState::Reconnecting,
    PeerState::Closed,
];

impl Shared {
    pub(crate) fn new(remote: SocketAddr) -> Arc<Shared> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            remote,
            state: AtomicU8::new(0),
            peer_info: OnceLock::new(),
            counters: Counters::default(),
            closed: watch::channel(None).0,
        })
    }
    pub(crate) fn state(&self) -> PeerState {
        STATES[usize::from(self.state.load(Ordering::Acquire)).min(STATES.len() - 1)]
    }
    fn set_state(&self, s: PeerState) {
        let i = STATES.iter().position(|x| *x == s).unwrap_or(0);
        self.state.store(i as u8, Ordering::Release);
    }
    pub(crate) fn stats(&self) -> ConnectionStats {
        let c = &self.counters;
        ConnectionStats {
            messages_sent: c.messages_sent.load(Ordering::Relaxed),
            messages_received: c.messages_received.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
            unknown_answers: c.unknown_answers.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
        }
    }
}

struct Pending {
    reply: oneshot::Sender<Reply>,
    deadline: Instant,
    end_to_end: u32,
    _permit: OwnedSemaphorePermit,
}

struct Closing {
    cause: i32,
    waiters: Vec<oneshot::Sender<()>>,
    drain_until: Instant,
    dpr_sent: bool,
}

/// Most bytes gathered into one write before writing.
const MAX_COALESCE: usize = 256 * 1024;

pub(crate) struct Task {
    pub(crate) peer: PeerConnection,
    pub(crate) config: Arc<ConnectionConfig>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) hooks: Hooks,
    /// Called inline (in the connection task) on failure: for the pool's
    /// own bookkeeping, which is a few map operations.
    pub(crate) inline_failure: Option<FailureCallback>,
    pub(crate) opened: Option<oneshot::Sender<Result<(), Error>>>,
    pending: HashMap<u32, Pending>,
    expiry: BinaryHeap<Reverse<(Instant, u32)>>,
    handlers: JoinSet<Response>,
    handler_requests: HashMap<tokio::task::Id, Message>,
    closing: Option<Closing>,
}

impl Task {
    pub(crate) fn new(
        peer: PeerConnection,
        config: Arc<ConnectionConfig>,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        hooks: Hooks,
        opened: Option<oneshot::Sender<Result<(), Error>>>,
    ) -> Task {
        Task {
            peer,
            config,
            shared,
            commands,
            hooks,
            inline_failure: None,
            opened,
            pending: HashMap::new(),
            expiry: BinaryHeap::new(),
            handlers: JoinSet::new(),
            handler_requests: HashMap::new(),
            closing: None,
        }
    }

    /// Runs the connection until it closes.
    pub(crate) async fn run(mut self, mut stream: TcpStream) {
        let local_ip = stream.local_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.peer.handle_connected(local_ip, Instant::now().into_std());
        let (mut rd, mut wr) = stream.split();
        let mut rbuf = BytesMut::with_capacity(64 * 1024);
        let mut wbuf = BytesMut::with_capacity(64 * 1024);
        let mut decoder = FrameDecoder::with_max_size(self.config.max_message_size);
        // Since when the write buffer has waited without progress.
        let mut write_wait: Option<Instant> = None;
        // One timer, re-armed only when the next deadline moves.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);

        let reason = loop {
            self.take_transmits(&mut wbuf);
            if let Some(reason) = self.process_events() {
                break reason;
            }
            // Answers produced inline while processing events.
            self.take_transmits(&mut wbuf);
            if self.start_dpr_if_drained() {
                continue;
            }
            self.shared.set_state(self.peer.state());
            if wbuf.is_empty() {
                write_wait = None;
            } else if write_wait.is_none() {
                write_wait = Some(Instant::now());
            }
            self.prune_expiry();
            let deadline = self.next_deadline(write_wait);
            if timer.is_elapsed() || timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let accepting = self.closing.is_none();
            tokio::select! {
                biased;
                r = rd.read_buf(&mut rbuf), if wbuf.len() < MAX_COALESCE => match r {
                    Ok(0) | Err(_) => self.peer.handle_transport_closed(),
                    Ok(n) => {
                        self.shared.counters.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                        let now = Instant::now().into_std();
                        loop {
                            match decoder.decode(&mut rbuf) {
                                Ok(Some(m)) => {
                                    self.shared.counters.messages_received.fetch_add(1, Ordering::Relaxed);
                                    self.peer.handle_message(m, now);
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    self.peer.fail(CloseReason::ProtocolError(format!("undecodable frame: {e}")));
                                    break;
                                }
                            }
                        }
                    }
                },
                cmd = self.commands.recv(), if accepting && wbuf.len() < MAX_COALESCE => match cmd {
                    Some(cmd) => {
                        let now = Instant::now();
                        self.command(cmd, &mut wbuf, now);
                        // Coalesce everything already queued into this write.
                        while wbuf.len() < MAX_COALESCE && self.closing.is_none() {
                            match self.commands.try_recv() {
                                Ok(cmd) => self.command(cmd, &mut wbuf, now),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone: close gracefully.
                    None => self.begin_close(diam_proto::disconnect_cause::REBOOTING, None),
                },
                Some(done) = self.handlers.join_next_with_id(), if !self.handlers.is_empty() => {
                    self.handler_done(done);
                    while let Some(done) = self.handlers.try_join_next_with_id() {
                        self.handler_done(done);
                    }
                },
                () = &mut timer => {
                    let now = Instant::now();
                    self.peer.handle_timeout(now.into_std());
                    self.expire(now);
                    if write_wait.is_some_and(|t| now.duration_since(t) >= self.config.write_timeout) {
                        self.peer.fail(CloseReason::WriteTimeout);
                    }
                },
                r = wr.write(&wbuf), if !wbuf.is_empty() => match r {
                    Ok(0) | Err(_) => self.peer.handle_transport_closed(),
                    Ok(n) => {
                        wbuf.advance(n);
                        write_wait = if wbuf.is_empty() { None } else { Some(Instant::now()) };
                    }
                },
            }
        };

        // Flush what the protocol queued last (a DPA, a CEA with an error),
        // bounded by the write timeout, then close.
        self.take_transmits(&mut wbuf);
        if !wbuf.is_empty() && !matches!(reason, CloseReason::TransportClosed | CloseReason::WriteTimeout) {
            let _ = tokio::time::timeout(self.config.write_timeout, wr.write_all(&wbuf)).await;
        }
        let _ = tokio::time::timeout(self.config.write_timeout, wr.shutdown()).await;
        drop(stream);
        self.finish(reason);
    }

    /// Appends everything the protocol wants sent to the write buffer.
    fn take_transmits(&mut self, wbuf: &mut BytesMut) {
        while let Some(m) = self.peer.poll_transmit() {
            self.count_sent(&m);
            wbuf.extend_from_slice(m.as_bytes());
        }
    }

    fn count_sent(&self, m: &Message) {
        self.shared.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.bytes_sent.fetch_add(m.len() as u64, Ordering::Relaxed);
    }

    /// Handles protocol events; returns the close reason once closed.
    fn process_events(&mut self) -> Option<CloseReason> {
        while let Some(ev) = self.peer.poll_event() {
            match ev {
                PeerEvent::Opened { peer, applications } => {
                    tracing::info!(id = self.shared.id, peer = %self.shared.remote, origin_host = %peer.origin_host, ?applications, "peer open");
                    let _ = self.shared.peer_info.set(*peer);
                    self.shared.set_state(self.peer.state());
                    if let Some(tx) = self.opened.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                PeerEvent::Request(req) => self.dispatch(req),
                PeerEvent::Answer(ans) => match self.pending.remove(&ans.hop_by_hop()) {
                    Some(p) => {
                        let _ = p.reply.send(Ok(ans));
                    }
                    None => {
                        self.shared.counters.unknown_answers.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(
                            id = self.shared.id,
                            hop_by_hop = ans.hop_by_hop(),
                            "answer for no pending request dropped"
                        );
                    }
                },
                PeerEvent::Watchdog { from, to } => {
                    tracing::info!(id = self.shared.id, peer = %self.shared.remote, ?from, ?to, "watchdog");
                }
                PeerEvent::Closed(reason) => return Some(reason),
                _ => {}
            }
        }
        None
    }

    /// Runs the handler for an application request, or answers it directly.
    fn dispatch(&mut self, req: Message) {
        let (Some(handler), Some(info)) = (self.hooks.handler.clone(), self.shared.peer_info.get()) else {
            self.answer_error(&req, result_codes::DIAMETER_COMMAND_UNSUPPORTED);
            return;
        };
        if self.handlers.len() >= self.config.max_concurrent_handlers {
            self.answer_error(&req, result_codes::DIAMETER_TOO_BUSY);
            return;
        }
        let mut fut = handler.handle(req.clone(), info);
        // Fast path: a handler that is ready at once answers inline, with
        // no task spawned (the common case for simple servers).
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
            Ok(std::task::Poll::Ready(resp)) => {
                self.respond(&req, Ok(resp));
                return;
            }
            Ok(std::task::Poll::Pending) => {}
            Err(_) => {
                self.answer_error(&req, result_codes::DIAMETER_UNABLE_TO_COMPLY);
                return;
            }
        }
        let abort = self.handlers.spawn(fut);
        self.handler_requests.insert(abort.id(), req);
    }

    fn handler_done(&mut self, done: Result<(tokio::task::Id, Response), tokio::task::JoinError>) {
        let (id, answer) = match done {
            Ok((id, answer)) => (id, Ok(answer)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(req) = self.handler_requests.remove(&id) else { return };
        self.respond(&req, answer);
    }

    fn respond(&mut self, req: &Message, answer: Result<Response, tokio::task::JoinError>) {
        let req = req.clone();
        match answer {
            Ok(Response::Answer(ans)) => self.peer.send_answer(ans),
            Ok(Response::CommandUnsupported) => self.answer_error(&req, result_codes::DIAMETER_COMMAND_UNSUPPORTED),
            Ok(Response::NoAnswer) => {}
            Err(e) => {
                tracing::warn!(id = self.shared.id, error = %e, "request handler failed");
                self.answer_error(&req, result_codes::DIAMETER_UNABLE_TO_COMPLY);
            }
        }
    }

    fn answer_error(&mut self, req: &Message, result_code: u32) {
        let c = self.peer.config();
        let ans = Message::answer_to(req)
            .error(result_codes::class(result_code) == 3)
            .avp(avps::RESULT_CODE, result_code)
            .avp(avps::ORIGIN_HOST, c.origin_host.as_str())
            .avp(avps::ORIGIN_REALM, c.origin_realm.as_str())
            .build();
        self.peer.send_answer(ans);
    }

    fn command(&mut self, cmd: Command, wbuf: &mut BytesMut, now: Instant) {
        match cmd {
            Command::Request { msg, reply, deadline, permit } => {
                if reply.is_closed() {
                    return;
                }
                // Its caller's time ran out while it queued: the peer must
                // not see it (it would do work no one waits for).
                if deadline <= now {
                    self.shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(Unanswered::unsent(Error::Timeout)));
                    return;
                }
                if !self.peer.can_send() {
                    let _ = reply.send(Err(Unanswered::unsent(Error::NotAvailable(self.peer.state()))));
                    return;
                }
                let hbh = loop {
                    let h = self.peer.ids().next_hop_by_hop();
                    if !self.pending.contains_key(&h) {
                        break h;
                    }
                };
                let e2e = match msg.end_to_end() {
                    0 => self.peer.ids().next_end_to_end(),
                    e => e,
                };
                let start = wbuf.len();
                wbuf.extend_from_slice(msg.as_bytes());
                wbuf[start + 12..start + 16].copy_from_slice(&hbh.to_be_bytes());
                wbuf[start + 16..start + 20].copy_from_slice(&e2e.to_be_bytes());
                self.count_sent(&msg);
                self.pending.insert(hbh, Pending { reply, deadline, end_to_end: e2e, _permit: permit });
                self.expiry.push(Reverse((deadline, hbh)));
                if self.expiry.len() > 2 * self.pending.len() + 1024 {
                    // Answered entries linger in the heap until their
                    // deadline; rebuild so it stays O(pending).
                    self.expiry = self.pending.iter().map(|(h, p)| Reverse((p.deadline, *h))).collect();
                }
            }
            Command::Close { cause, done } => self.begin_close(cause, Some(done)),
        }
    }

    fn begin_close(&mut self, cause: i32, done: Option<oneshot::Sender<()>>) {
        match &mut self.closing {
            Some(c) => c.waiters.extend(done),
            None => {
                self.closing = Some(Closing {
                    cause,
                    waiters: done.into_iter().collect(),
                    drain_until: Instant::now() + self.config.drain_timeout,
                    dpr_sent: false,
                })
            }
        }
    }

    /// Sends DPR once outstanding requests are answered (or the drain time
    /// is up). Returns true when it did.
    fn start_dpr_if_drained(&mut self) -> bool {
        let Some(c) = &mut self.closing else { return false };
        if c.dpr_sent || (!self.pending.is_empty() && Instant::now() < c.drain_until) {
            return false;
        }
        c.dpr_sent = true;
        let cause = c.cause;
        self.peer.disconnect(cause, Instant::now().into_std());
        true
    }

    fn next_deadline(&self, write_wait: Option<Instant>) -> Instant {
        let far = Instant::now() + std::time::Duration::from_secs(3600);
        let mut d = self.peer.poll_timeout().map_or(far, Instant::from_std);
        if let Some(Reverse((t, _))) = self.expiry.peek() {
            d = d.min(*t);
        }
        if let Some(t) = write_wait {
            d = d.min(t + self.config.write_timeout);
        }
        if let Some(c) = &self.closing {
            if !c.dpr_sent {
                d = d.min(c.drain_until);
            }
        }
        d
    }

    /// Drops heap entries of requests already answered from the top, so the
    /// timer tracks the earliest real deadline (answers arrive mostly in
    /// submission order, so this keeps the heap small too).
    fn prune_expiry(&mut self) {
        while let Some(Reverse((t, hbh))) = self.expiry.peek().copied() {
            if self.pending.get(&hbh).is_some_and(|p| p.deadline == t) {
                break;
            }
            self.expiry.pop();
        }
    }

    /// Fails requests whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((t, hbh))) = self.expiry.peek().copied() {
            if t > now {
                break;
            }
            self.expiry.pop();
            if self.pending.get(&hbh).is_some_and(|p| p.deadline == t) {
                if let Some(p) = self.pending.remove(&hbh) {
                    self.shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                    let _ = p.reply.send(Err(Unanswered { error: Error::Timeout, written: Some(p.end_to_end) }));
                }
            }
        }
    }

    /// Completes everything that waits on this connection.
    fn finish(mut self, reason: CloseReason) {
        let state = self.peer.state();
        self.shared.set_state(state);
        tracing::info!(id = self.shared.id, peer = %self.shared.remote, %reason, "connection closed");
        for (_, p) in self.pending.drain() {
            let err = match &reason {
                CloseReason::LocalDisconnect { .. } => Error::Closed,
                r => Error::ConnectionLost(r.clone()),
            };
            let _ = p.reply.send(Err(Unanswered { error: err, written: Some(p.end_to_end) }));
        }
        // Requests still queued in the channel.
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Request { reply, .. } => {
                    let _ = reply.send(Err(Unanswered::unsent(Error::from_close(&reason))));
                }
                Command::Close { done, .. } => {
                    let _ = done.send(());
                }
            }
        }
        if let Some(tx) = self.opened.take() {
            let _ = tx.send(Err(Error::from_close(&reason)));
        }
        if let Some(c) = self.closing.take() {
            for w in c.waiters {
                let _ = w.send(());
            }
        }
        // Waiters learn of the close first, then the failure hooks run.
        self.shared.closed.send_replace(Some(reason.clone()));
        if !matches!(reason, CloseReason::LocalDisconnect { .. })
            && (self.inline_failure.is_some() || self.hooks.on_failure.is_some())
        {
            let info = FailureInfo {
                connection_id: self.shared.id,
                peer_address: self.shared.remote,
                peer_origin_host: self.shared.peer_info.get().map(|p| p.origin_host.clone()),
                reason,
                state,
                timestamp: SystemTime::now(),
            };
            if let Some(cb) = self.inline_failure.take() {
                let info = info.clone();
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(info))).is_err() {
                    tracing::error!(id = self.shared.id, "internal failure hook panicked");
                }
            }
            if let Some(cb) = self.hooks.on_failure.clone() {
                // The blocking pool isolates the callback: a slow one does not
                // hold a runtime worker, a panicking one only ends its own task.
                tokio::task::spawn_blocking(move || cb(info));
            }
        }
    }
}
