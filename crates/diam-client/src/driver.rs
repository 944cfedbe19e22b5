//! The peer task: one task owns each peer, its connections and its
//! [`PeerMachine`].
//!
//! Callers submit requests over a bounded channel. The task allocates
//! Hop-by-Hop identifiers, records each pending request with its deadline
//! and the connection it was written on, and appends every queued request
//! to that connection's write buffer, so one `write` carries all the
//! frames that queued meanwhile. Reads are split into frames and decoded
//! without copying; a request or an answer with bad AVPs costs only that
//! transaction (RFC 6733 §7), a corrupt stream closes its connection.
//!
//! The task is one `poll` loop over `&mut` state (no `split()`, no borrow
//! held across the loop), generic over the transport: every connection is
//! a boxed [`Stream`](crate::transport::Stream). Buffers start small, grow
//! with bursts and shrink back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BytesMut};
use diam_link::events::{CustomEvent, DisconnectReason, EventData};
use diam_proto::check::{check_answer, check_request, error_answer};
use diam_proto::peer::{CloseReason, PeerInfo};
use diam_proto::psm::{Direction, Event, Incoming, LinkId, PeerMachine, PeerState};
use diam_proto::uri::PeerAddr;
use diam_proto::{disconnect_cause, result_codes, Escaped, FrameDecoder, Message};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use crate::events::{Election, PeerDown, PeerFailure, PeerRestarted, PeerUp, WatchdogChange};
use crate::handle::{lock, Command, LinkMeta, PeerShared, Relayed, ReplyTo, Unanswered};
use crate::node::NodeShared;
use crate::timer_grid::Slot;
use crate::tls::{accept_tls, connect_tls, Rewind, TlsInfo};
use crate::transport::{BoxFuture, BoxStream, Connection, TransportKind};
use crate::{Error, Response};

mod relay;

/// Most bytes gathered into one connection's write buffer; beyond it the
/// task stops taking requests and reading until the peer has read some.
const MAX_COALESCE: usize = 256 * 1024;
/// Read buffer size at start, and the room kept free before each read
/// (1 KiB: a CEA, a DWA or a few answers; reads that fill it double it).
const READ_CHUNK: usize = 1024;
/// The room an idle link reads into (a DWR or DWA is about 100 bytes; a
/// small block is cheap to take and give back at every watchdog exchange).
const IDLE_READ_CHUNK: usize = 256;
/// The most a single read asks for: reads that fill their room double the
/// next one up to this (a burst is read in few syscalls), and reads far
/// smaller bring it back down.
const MAX_READ_CHUNK: usize = 64 * 1024;
/// Buffers larger than this are given back once empty (after a burst).
const SHRINK_ABOVE: usize = 64 * 1024;
/// Protocol timers at least this far away are coalesced: 6 s, the shortest
/// Tw RFC 3539 §3.4.1 allows (a watchdog's Tw and DWA timeout, and long
/// reconnect delays; CER timeouts and early reconnects stay exact).
const COALESCE_FROM: Duration = Duration::from_secs(6);
/// The Command-Code of DWR/DWA.
const WATCHDOG: u32 = diam_proto::commands::DEVICE_WATCHDOG;

/// An inbound connection handed to its peer's task after its CER was read
/// (boxed in the channel: every peer has one, most never use it, and a
/// channel allocates room for 32 items up front).
pub(crate) struct Inbound {
    pub(crate) conn: Connection,
    /// Bytes read after the CER.
    pub(crate) rbuf: BytesMut,
    pub(crate) cer: Message,
    pub(crate) info: PeerInfo,
}

/// In-band TLS on a link (RFC 3588 §6.10 style).
enum Upgrade {
    /// Nothing to do: plain, or TLS from the start.
    None,
    /// Agreed in the capabilities exchange: no reads or writes until the
    /// handshake starts (what is read stays for it).
    Awaiting,
    /// The handshake runs.
    Running(BoxFuture<'static, io::Result<(BoxStream, TlsInfo)>>),
}

struct LinkIo {
    id: LinkId,
    upgrade: Upgrade,
    tls: Option<Arc<TlsInfo>>,
    stream: BoxStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Since when the write buffer has waited without progress.
    write_wait: Option<Instant>,
    /// A `poll_flush` is owed after the last write (TLS streams buffer).
    flush: bool,
    meta: LinkMeta,
    /// The capabilities exchange completed on it.
    up: bool,
    /// Frames may be waiting in `rbuf` (handed over with an inbound CER).
    buffered: bool,
    /// How much room the next read gets (adapts to the traffic).
    read_chunk: usize,
    /// Bytes of an unfinished message charged to the node's budget.
    charged: usize,
    /// Since when a message has been arriving (its first bytes are in).
    partial_since: Option<Instant>,
    /// Our CEA on an inbound link agreeing in-band TLS: the one message
    /// written in the clear before the handshake (anything else waits in
    /// `wbuf` for TLS).
    clear: BytesMut,
    /// The capabilities exchange completed, but in-band TLS and its
    /// certificate check have not: the peer is announced once they have.
    deferred_up: Option<Box<(Direction, PeerInfo, Vec<u32>)>>,
    /// Only watchdog messages since a DWR or DWA was written: the link is
    /// idle (a DWR goes out after Tw without traffic, and a peer's DWR
    /// says the same of its side), so its buffers are given back each
    /// time they run empty and an idle connection holds none. Cleared by
    /// the first other message either way.
    idle: bool,
}

impl LinkIo {
    fn new(id: LinkId, conn: Connection, direction: Direction, rbuf: BytesMut) -> LinkIo {
        LinkIo {
            id,
            upgrade: Upgrade::None,
            tls: conn.tls.map(Arc::new),
            stream: conn.stream,
            buffered: !rbuf.is_empty(),
            rbuf,
            wbuf: BytesMut::new(),
            write_wait: None,
            flush: false,
            meta: LinkMeta { direction, transport: conn.kind, local: conn.local, remote: conn.remote },
            up: false,
            read_chunk: READ_CHUNK,
            charged: 0,
            partial_since: None,
            clear: BytesMut::new(),
            deferred_up: None,
            idle: false,
        }
    }
}

struct Pending {
    reply: ReplyTo,
    deadline: Instant,
    end_to_end: u32,
    link: LinkId,
    _permit: OwnedSemaphorePermit,
}

struct Closing {
    cause: i32,
    waiters: Vec<oneshot::Sender<()>>,
    drain_until: Instant,
    dpr_sent: bool,
}

struct Dial {
    link: LinkId,
    addr: PeerAddr,
    fut: BoxFuture<'static, io::Result<Connection>>,
}

pub(crate) struct PeerTask {
    node: Arc<NodeShared>,
    shared: Arc<PeerShared>,
    machine: PeerMachine,
    targets: Vec<PeerAddr>,
    next_target: usize,
    links: Vec<LinkIo>,
    dials: Vec<Dial>,
    commands: mpsc::Receiver<Command>,
    commands_closed: bool,
    control: mpsc::Receiver<Command>,
    inbound: mpsc::Receiver<Box<Inbound>>,
    inbound_closed: bool,
    pending: HashMap<u32, Pending>,
    expiry: BinaryHeap<Reverse<(Instant, u32)>>,
    handlers: JoinSet<Response>,
    handler_requests: HashMap<tokio::task::Id, (LinkId, Message)>,
    /// Every deadline but those on the grid.
    timer: Pin<Box<Sleep>>,
    /// The machine's watchdog deadline, and its point on the timer grid
    /// when it lies far enough to be rounded.
    watchdog_grid: Option<(std::time::Instant, Option<Instant>)>,
    /// This peer's place on the node's [`TimerGrid`](crate::TimerGrid), the point it wants
    /// (set with the timer) and the point it is registered at.
    grid_slot: Arc<Slot>,
    grid_want: Option<Instant>,
    grid_at: Option<Instant>,
    closing: Option<Closing>,
    draining: Vec<(LinkId, Instant)>,
    first_up: bool,
    /// The last reconnect attempt scheduled (for the `reconnected` event).
    last_attempt: u32,
    /// What the peer advertised, for handlers (set at each Up).
    info: Option<Arc<PeerInfo>>,
    /// Links dialled to replace the open one (rotation).
    replacements: Vec<LinkId>,
    /// The peer refused a replacement connection: rotations stop.
    rotation_refused: bool,
    /// Enter the identity table once the identity is known (with our own
    /// inbound sender).
    learn: Option<mpsc::Sender<Box<Inbound>>>,
    /// Agents: requests this task forwards, by token, and their expiry.
    forwards: HashMap<u64, relay::Forward>,
    forward_expiry: BinaryHeap<Reverse<(Instant, u64)>>,
    next_token: u64,
    /// Outcomes of forwarded requests (made at the first forward).
    relayed: Option<(mpsc::UnboundedSender<Relayed>, mpsc::UnboundedReceiver<Relayed>)>,
    /// The node's routing table, with its generation.
    routes: Option<(u64, Arc<crate::agent::RoutingTable>)>,
    /// The Route-Record an agent appends to this peer's requests.
    route_record: Option<bytes::Bytes>,
}

pub(crate) struct TaskInit {
    pub(crate) node: Arc<NodeShared>,
    pub(crate) shared: Arc<PeerShared>,
    pub(crate) machine: PeerMachine,
    pub(crate) targets: Vec<PeerAddr>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) control: mpsc::Receiver<Command>,
    pub(crate) inbound: mpsc::Receiver<Box<Inbound>>,
    pub(crate) learn: Option<mpsc::Sender<Box<Inbound>>>,
}

/// `t` rounded up to the process-wide grid of `step` when it is at least
/// [`COALESCE_FROM`] after `now` (see [`ConnectionConfig::timer_coalescing`]).
///
/// [`ConnectionConfig::timer_coalescing`]: crate::ConnectionConfig::timer_coalescing
fn coalesce(t: Instant, now: Instant, step: Duration) -> Instant {
    grid_point(t, now, step).unwrap_or(t)
}

/// The grid point `t` is rounded up to, if it lies far enough (at least
/// [`COALESCE_FROM`] after `now`) and the grid is on.
fn grid_point(t: Instant, now: Instant, step: Duration) -> Option<Instant> {
    // The grid's origin: a whole second of the wall clock, read at the
    // first use in the process. Processes on one machine (a client and its
    // servers) then share the grid: each wakes when the others send, and
    // finds them awake when it sends.
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    if step.is_zero() || t < now + COALESCE_FROM {
        return None;
    }
    let epoch = Instant::from_std(*EPOCH.get_or_init(|| {
        let now = std::time::Instant::now();
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.checked_sub(Duration::from_nanos(wall.subsec_nanos().into())).unwrap_or(now)
    }));
    let since = t.checked_duration_since(epoch)?;
    // Nanoseconds fit u64 for 584 years; the step is at most 1 s.
    let (Ok(since), Ok(step)) = (u64::try_from(since.as_nanos()), u64::try_from(step.as_nanos())) else { return None };
    Some(epoch + Duration::from_nanos(since.div_ceil(step) * step))
}

fn local_ip(conn_local: Option<std::net::SocketAddr>) -> IpAddr {
    conn_local.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
}

/// Writes what is left and closes a stream, off the peer task, bounded by
/// `timeout`.
pub(crate) fn close_stream(mut stream: BoxStream, wbuf: BytesMut, timeout: Duration) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, async {
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
            }
            stream.shutdown().await
        })
        .await;
    });
}

impl PeerTask {
    pub(crate) fn new(init: TaskInit) -> PeerTask {
        PeerTask {
            node: init.node,
            shared: init.shared,
            machine: init.machine,
            targets: init.targets,
            next_target: 0,
            links: Vec::with_capacity(1),
            dials: Vec::new(),
            commands: init.commands,
            commands_closed: false,
            control: init.control,
            inbound: init.inbound,
            inbound_closed: false,
            pending: HashMap::new(),
            expiry: BinaryHeap::new(),
            handlers: JoinSet::new(),
            handler_requests: HashMap::new(),
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            watchdog_grid: None,
            grid_slot: Arc::new(Slot::default()),
            grid_want: None,
            grid_at: None,
            closing: None,
            draining: Vec::new(),
            first_up: true,
            last_attempt: 0,
            info: None,
            replacements: Vec::new(),
            rotation_refused: false,
            learn: init.learn,
            forwards: HashMap::new(),
            forward_expiry: BinaryHeap::new(),
            next_token: 0,
            relayed: None,
            routes: None,
            route_record: None,
        }
    }

    /// Runs the peer until it is closed for good (or forgotten by its node).
    pub(crate) async fn run(mut self) {
        loop {
            self.process(Instant::now());
            if self.done() {
                break;
            }
            self.arm_timer();
            std::future::poll_fn(|cx| self.poll_once(cx)).await;
            // A peer that floods us through a stream outside tokio's
            // cooperative budget must not keep this worker to itself.
            tokio::task::consume_budget().await;
        }
        self.finish();
    }

    fn done(&self) -> bool {
        if !self.links.is_empty() || !self.dials.is_empty() {
            return false;
        }
        match self.machine.state() {
            PeerState::Closed => true,
            // A peer that cannot come back: nothing to dial, and its node no
            // longer routes inbound connections to it (evicted, or replaced
            // by a configured peer of the same identity).
            PeerState::Disconnected => self.inbound_closed && self.targets.is_empty(),
            _ => false,
        }
    }

    // ---- the poll loop -----------------------------------------------------

    /// Polls every source once; `Ready` when anything made progress.
    fn poll_once(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut progress = false;
        let now = Instant::now();
        // Reads (not while a write buffer is over its bound: a peer that
        // does not read our answers must not make us take more requests).
        let mut i = 0;
        while i < self.links.len() {
            if !matches!(self.links[i].upgrade, Upgrade::None) {
                progress |= self.poll_upgrade(i, cx, now);
                i += 1;
                continue;
            }
            if self.links[i].buffered {
                self.links[i].buffered = false;
                self.decode(i, now);
                progress = true;
            }
            if self.links[i].wbuf.len() < MAX_COALESCE {
                progress |= self.poll_read(i, cx, now);
            } else if let Some(t) = self.links[i].partial_since.as_mut() {
                // We do not read while the peer is slow to take our answers:
                // its message is not late for that.
                *t = now;
            }
            i += 1;
        }
        // Inbound connections for this peer.
        if !self.inbound_closed {
            for _ in 0..4 {
                match self.inbound.poll_recv(cx) {
                    Poll::Ready(Some(inb)) => {
                        self.on_inbound(inb, now);
                        // Our CEA goes into the write buffer before any
                        // request taken below.
                        self.process(now);
                        progress = true;
                    }
                    Poll::Ready(None) => {
                        self.inbound_closed = true;
                        progress = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        // Dials.
        let mut d = 0;
        while d < self.dials.len() {
            if let Poll::Ready(result) = self.dials[d].fut.as_mut().poll(cx) {
                let dial = self.dials.swap_remove(d);
                self.on_dialled(dial, result, now);
                progress = true;
            } else {
                d += 1;
            }
        }
        // Handlers that finished.
        while let Poll::Ready(Some(done)) = self.handlers.poll_join_next_with_id(cx) {
            self.handler_done(done);
            progress = true;
        }
        // Outcomes of requests we forwarded (agents).
        if self.relayed.is_some() {
            progress |= self.poll_relayed(cx, now);
        }
        // Control commands, on every round.
        while let Poll::Ready(Some(cmd)) = self.control.poll_recv(cx) {
            self.command(cmd, now);
            progress = true;
        }
        // Requests.
        if !self.commands_closed && self.sending_room() {
            loop {
                match self.commands.poll_recv(cx) {
                    Poll::Ready(Some(cmd)) => {
                        self.command(cmd, now);
                        progress = true;
                        if !self.sending_room() {
                            break;
                        }
                    }
                    Poll::Ready(None) => {
                        // Every handle is gone.
                        self.commands_closed = true;
                        if self.machine.state() != PeerState::Closed && !self.has_owner() {
                            self.begin_close(disconnect_cause::REBOOTING, None, now);
                        }
                        progress = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        let grid_due = self.poll_grid(cx);
        if self.timer.as_mut().poll(cx).is_ready() || grid_due {
            self.on_timer(Instant::now());
            progress = true;
        }
        self.process(now);
        // Writes.
        let mut i = 0;
        while i < self.links.len() {
            if matches!(self.links[i].upgrade, Upgrade::None) {
                progress |= self.poll_write(i, cx, now);
            }
            i += 1;
        }
        if progress {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether someone other than handles keeps the peer: a configured peer
    /// of a running node.
    fn has_owner(&self) -> bool {
        !self.inbound_closed && !self.node.is_closed()
    }

    fn sending_room(&self) -> bool {
        match self.machine.sending_link() {
            Some(id) => self.links.iter().find(|l| l.id == id).is_none_or(|l| l.wbuf.len() < MAX_COALESCE),
            None => true,
        }
    }

    fn poll_read(&mut self, i: usize, cx: &mut Context<'_>, now: Instant) -> bool {
        // Read until the socket has nothing more (or a few rounds), so that
        // a burst is decoded, answered and written back in one go.
        let mut progress = false;
        let mut failed_once = false;
        for _ in 0..4 {
            let link = &mut self.links[i];
            if !matches!(link.upgrade, Upgrade::None) {
                // In-band TLS was just agreed: the rest is the handshake's.
                return progress;
            }
            let want = link.read_chunk;
            let room = link.rbuf.capacity() - link.rbuf.len();
            // A large frame the decoder already made room for: read into
            // that room, never double a large buffer for its last bytes.
            let fits =
                link.rbuf.capacity() > MAX_READ_CHUNK && unfinished_frame(&link.rbuf).is_some_and(|rest| rest <= room);
            if !fits && room < want / 2 {
                link.rbuf.reserve(want);
            }
            let room = link.rbuf.capacity() - link.rbuf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut link.stream), cx, &mut link.rbuf) {
                Poll::Pending => return progress,
                // A TLS stream reports a reset before handing over what it
                // already decrypted (a DPA, say): read once more, the
                // socket gives EOF then and the plaintext comes first.
                Poll::Ready(Err(_)) if link.tls.is_some() && !failed_once => failed_once = true,
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    let id = link.id;
                    self.machine.handle_link_closed(id, now.into_std());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    progress = true;
                    if n >= room {
                        link.read_chunk = (want * 2).min(MAX_READ_CHUNK);
                    } else if n < want / 8 {
                        link.read_chunk = (want / 2).max(READ_CHUNK);
                    }
                    self.shared.counters.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
                    self.decode(i, now);
                    match self.links.get(i) {
                        // More may be waiting only when the read filled its room.
                        Some(l) if n >= room && l.wbuf.len() < MAX_COALESCE => {}
                        _ => return progress,
                    }
                }
            }
        }
        progress
    }

    /// Handles every whole frame in link `i`'s read buffer.
    fn decode(&mut self, i: usize, now: Instant) {
        if !matches!(self.links[i].upgrade, Upgrade::None) {
            return;
        }
        let id = self.links[i].id;
        let mut rbuf = std::mem::take(&mut self.links[i].rbuf);
        let mut decoder = FrameDecoder::with_max_size(self.node.config.connection.max_message_size);
        let mut decoded = false;
        let mut traffic = false;
        loop {
            match decoder.decode_frame(&mut rbuf) {
                Ok(Some(msg)) => {
                    decoded = true;
                    traffic |= msg.command_code() != WATCHDOG;
                    self.on_message(id, msg, now);
                    if self.machine.inband_tls(id) {
                        // The CEA agreed in-band TLS: what follows it is the
                        // TLS handshake's.
                        if let Some(l) = self.links.iter_mut().find(|l| l.id == id) {
                            if matches!(l.upgrade, Upgrade::None) && l.tls.is_none() {
                                l.upgrade = Upgrade::Awaiting;
                                break;
                            }
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream is corrupt: nothing after this can be framed.
                    rbuf.clear();
                    self.machine.fail_link(
                        id,
                        CloseReason::ProtocolError(format!("undecodable frame: {e}")),
                        now.into_std(),
                    );
                    break;
                }
            }
        }
        if let Some(l) = self.links.get_mut(i).filter(|l| l.id == id) {
            l.idle &= !traffic;
            // After a burst, give the room back (the read size has come
            // down again); an idle link keeps none.
            if rbuf.is_empty() && (l.idle || rbuf.capacity() > 2 * l.read_chunk) {
                rbuf = BytesMut::new();
                if l.idle {
                    l.read_chunk = IDLE_READ_CHUNK;
                }
            }
            // What is left is an unfinished message: it has until the
            // message deadline, and counts against the node's budget.
            let partial = rbuf.len();
            l.rbuf = rbuf;
            if partial == 0 {
                l.partial_since = None;
            } else if decoded || l.partial_since.is_none() {
                // A new message began in this read.
                l.partial_since = Some(now);
            }
            if !self.node.budget.recharge(&mut l.charged, partial) {
                metrics::counter!("diam_buffer_budget_exceeded_total").increment(1);
                let reason = CloseReason::ProtocolError(format!(
                    "unfinished messages of all connections would exceed {} bytes",
                    self.node.config.max_buffered_bytes
                ));
                self.machine.fail_link(id, reason, now.into_std());
            }
        }
    }

    /// Polls link `i`'s in-band TLS handshake.
    fn poll_upgrade(&mut self, i: usize, cx: &mut Context<'_>, now: Instant) -> bool {
        let link = &mut self.links[i];
        let Upgrade::Running(fut) = &mut link.upgrade else { return false };
        let Poll::Ready(result) = fut.as_mut().poll(cx) else { return false };
        link.upgrade = Upgrade::None;
        let id = link.id;
        match result {
            Ok((stream, info)) => {
                link.stream = stream;
                link.meta.transport = TransportKind::Tls;
                link.buffered = !link.rbuf.is_empty();
                let identity = self.info.as_ref().map(|i| i.origin_host.clone()).unwrap_or_default();
                if !info.names_identity(&identity) {
                    tracing::info!(peer = %Escaped(&identity), names = ?info.peer_dns_names(), "certificate does not name the peer: closed");
                    self.machine.fail_link(id, CloseReason::CertificateMismatch { identity }, now.into_std());
                    return true;
                }
                tracing::debug!(peer = %Escaped(&identity), version = info.version, "in-band TLS up");
                let info = Arc::new(info);
                link.tls = Some(info.clone());
                if let Some(up) = link.deferred_up.take() {
                    let (direction, peer, applications) = *up;
                    self.announce_up(id, direction, peer, applications);
                } else if self.machine.active_link() == Some(id) {
                    *lock(&self.shared.tls) = Some(info);
                    if let Some(m) = lock(&self.shared.link).as_mut() {
                        m.transport = TransportKind::Tls;
                    }
                }
            }
            Err(e) => {
                tracing::info!(peer = %Escaped(&self.shared.label()), error = %e, "in-band TLS failed");
                self.machine.fail_link(id, CloseReason::Tls { message: e.to_string() }, now.into_std());
            }
        }
        true
    }

    /// Starts in-band TLS on `link`, agreed in the exchange that just
    /// completed: as the client when we sent the CER, as the server when we
    /// answered it (after writing our CEA in the clear).
    fn start_upgrade(&mut self, link: LinkId) {
        let Some(l) = self.links.iter_mut().find(|l| l.id == link) else { return };
        if !matches!(l.upgrade, Upgrade::Awaiting) {
            return;
        }
        let Some(tls) = self.node.tls.as_ref().map(|t| t.current()) else {
            l.upgrade = Upgrade::None;
            let reason = CloseReason::Tls { message: "in-band TLS agreed, but the node has no TLS credentials".into() };
            self.machine.fail_link(link, reason, Instant::now().into_std());
            return;
        };
        let stream = std::mem::replace(&mut l.stream, Box::new(tokio::io::empty()));
        let prefix = std::mem::take(&mut l.rbuf);
        l.partial_since = None;
        self.node.budget.release(&mut l.charged);
        let outbound = l.meta.direction == Direction::Outbound;
        // Our CEA goes out in the clear, before the handshake; all else
        // waits for TLS.
        let clear = std::mem::take(&mut l.clear);
        let server_name = self.info.as_ref().map(|i| i.origin_host.clone()).unwrap_or_default();
        let c = &self.node.config.connection;
        let (timeout, pause) = (c.peer.cer_timeout, c.inband_tls_pause);
        let fut = async move {
            let handshake = async move {
                let mut stream = stream;
                if !clear.is_empty() {
                    stream.write_all(&clear).await?;
                    stream.flush().await?;
                }
                let stream: BoxStream = Box::new(Rewind::new(prefix, stream));
                if outbound {
                    // Erlang/OTP 25 loses a ClientHello that arrives the
                    // instant after its CEA; a short pause avoids it.
                    tokio::time::sleep(pause).await;
                    connect_tls(&tls, &server_name, stream).await
                } else {
                    accept_tls(&tls, stream).await
                }
            };
            tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "in-band TLS handshake timed out"))?
        };
        l.upgrade = Upgrade::Running(Box::pin(fut));
    }

    fn poll_write(&mut self, i: usize, cx: &mut Context<'_>, now: Instant) -> bool {
        let link = &mut self.links[i];
        let mut progress = false;
        while !link.wbuf.is_empty() {
            match Pin::new(&mut link.stream).poll_write(cx, &link.wbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    let id = link.id;
                    link.wbuf.clear();
                    self.machine.handle_link_closed(id, now.into_std());
                    return true;
                }
                Poll::Ready(Ok(n)) => {
                    link.wbuf.advance(n);
                    link.flush = true;
                    link.write_wait = None;
                    progress = true;
                }
                Poll::Pending => break,
            }
        }
        if link.wbuf.is_empty() {
            link.write_wait = None;
            if link.idle || link.wbuf.capacity() > SHRINK_ABOVE {
                link.wbuf = BytesMut::new();
            }
            if link.flush {
                if let Poll::Ready(r) = Pin::new(&mut link.stream).poll_flush(cx) {
                    link.flush = false;
                    if r.is_err() {
                        let id = link.id;
                        self.machine.handle_link_closed(id, now.into_std());
                        return true;
                    }
                }
            }
        } else if link.write_wait.is_none() {
            link.write_wait = Some(now);
        }
        progress
    }

    fn arm_timer(&mut self) {
        self.prune_expiry();
        let now = Instant::now();
        let step = self.node.config.connection.timer_coalescing;
        let (watchdog, other) = self.machine.poll_timeouts();
        let mut d = other.map(|t| coalesce(Instant::from_std(t), now, step));
        let soonest = |d: Option<Instant>, t: Instant| Some(d.map_or(t, |d| d.min(t)));
        self.grid_want = None;
        if let Some(t) = watchdog {
            // Placed once, when the deadline is new (it is then a whole Tw
            // away): a deadline first seen late (the task woke for an older
            // one that traffic had since moved) still lands on the grid,
            // with the other peers', instead of waking on its own.
            let point = match self.watchdog_grid {
                Some((raw, point)) if raw == t => point,
                _ => {
                    let point = grid_point(Instant::from_std(t), now, step);
                    self.watchdog_grid = Some((t, point));
                    point
                }
            };
            match point {
                Some(p) => self.grid_want = Some(p),
                None => d = soonest(d, Instant::from_std(t)),
            }
        }
        if let Some(Reverse((t, _))) = self.expiry.peek() {
            d = soonest(d, *t);
        }
        if let Some(t) = self.next_forward_expiry() {
            d = soonest(d, t);
        }
        let wt = self.node.config.connection.write_timeout;
        let mt = self.node.config.connection.message_timeout;
        for l in &self.links {
            if let Some(t) = l.write_wait {
                d = soonest(d, t + wt);
            }
            if let Some(t) = l.partial_since {
                d = soonest(d, t + mt);
            }
        }
        if let Some(c) = &self.closing {
            if !c.dpr_sent {
                d = soonest(d, c.drain_until);
            }
        }
        for (_, t) in &self.draining {
            d = soonest(d, *t);
        }
        let Some(d) = d else {
            // Nothing but the grid: a timer that fired is put far away
            // (polled again, it would be ready at once); one still pending
            // stays, and costs at most one early wake-up.
            if self.timer.is_elapsed() {
                self.timer.as_mut().reset(now + Duration::from_secs(3600));
            }
            return;
        };
        // Never re-arm in the past: that would spin. Re-arm only when the
        // next deadline comes sooner: deadlines that move later just cost
        // one early, harmless wake-up instead of a timer-wheel update.
        let d = d.max(now + Duration::from_micros(100));
        // An idle peer (only watchdog messages on its links) does move a
        // timer later: it would otherwise wake once more for nothing.
        let idle = !self.links.is_empty() && self.links.iter().all(|l| l.idle);
        let later = idle && d > self.timer.deadline() + Duration::from_secs(1);
        if self.timer.is_elapsed() || d < self.timer.deadline() || later {
            self.timer.as_mut().reset(d);
        }
    }

    /// Puts the point [`arm_timer`](Self::arm_timer) chose on the grid
    /// (with this task's waker), or takes the peer off it. A point that
    /// moved later stays registered while the peer has traffic (its
    /// watchdog restarts with every message: it wakes once at the old
    /// point and registers the new one then); an idle peer, which moves it
    /// once per Tw, registers the new one at once.
    fn poll_grid(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(at) = self.grid_at {
            if Instant::now() >= at {
                self.grid_at = None;
                return true;
            }
        }
        match (self.grid_want, self.grid_at) {
            (None, Some(_)) => {
                self.grid_slot.cancel();
                self.grid_at = None;
            }
            (Some(want), at) if at != Some(want) => {
                let idle = !self.links.is_empty() && self.links.iter().all(|l| l.idle);
                if at.is_none_or(|at| want < at || idle) {
                    self.node.grid.register(&self.grid_slot, want, cx.waker());
                    self.grid_at = Some(want);
                }
            }
            _ => {}
        }
        false
    }

    fn on_timer(&mut self, now: Instant) {
        self.machine.handle_timeout(now.into_std());
        self.expire(now);
        self.expire_forwards(now);
        let wt = self.node.config.connection.write_timeout;
        let stalled: Vec<LinkId> = self
            .links
            .iter()
            .filter(|l| l.write_wait.is_some_and(|t| now.duration_since(t) >= wt))
            .map(|l| l.id)
            .collect();
        for id in stalled {
            self.machine.fail_link(id, CloseReason::WriteTimeout, now.into_std());
        }
        let mt = self.node.config.connection.message_timeout;
        let dripping: Vec<LinkId> = self
            .links
            .iter()
            .filter(|l| l.partial_since.is_some_and(|t| now.duration_since(t) >= mt))
            .map(|l| l.id)
            .collect();
        for id in dripping {
            metrics::counter!("diam_message_timeouts_total").increment(1);
            tracing::debug!(peer = %Escaped(&self.shared.label()), "message not completed in time: connection closed");
            let reason = CloseReason::ProtocolError(format!("a message did not complete within {mt:?}"));
            self.machine.fail_link(id, reason, now.into_std());
        }
    }

    // ---- the machine's outputs ---------------------------------------------

    /// Moves the machine's transmits into write buffers and acts on its
    /// events, until it has nothing more to say.
    fn process(&mut self, now: Instant) {
        loop {
            self.start_dpr_if_drained(now);
            self.finish_drains(now);
            let mut any = false;
            while let Some((link, msg)) = self.machine.poll_transmit() {
                any = true;
                self.write_msg(link, &msg);
            }
            while let Some(ev) = self.machine.poll_event() {
                any = true;
                self.on_event(ev, now);
                // Transmits queued before the next event (a CloseLink) must
                // reach their link first.
                while let Some((link, msg)) = self.machine.poll_transmit() {
                    self.write_msg(link, &msg);
                }
            }
            if !any {
                break;
            }
        }
    }

    fn write_msg(&mut self, link: LinkId, msg: &Message) {
        let Some(l) = self.links.iter_mut().find(|l| l.id == link) else { return };
        let clear_cea = matches!(l.upgrade, Upgrade::Awaiting)
            && l.meta.direction == Direction::Inbound
            && l.clear.is_empty()
            && !msg.is_request()
            && msg.command_code() == diam_proto::commands::CAPABILITIES_EXCHANGE;
        if clear_cea {
            l.clear.extend_from_slice(msg.as_bytes());
        } else {
            l.wbuf.extend_from_slice(msg.as_bytes());
        }
        let was_idle = std::mem::replace(&mut l.idle, msg.command_code() == WATCHDOG);
        if l.idle && !was_idle {
            self.release_idle_tables();
        }
        self.shared.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.bytes_sent.fetch_add(msg.len() as u64, Ordering::Relaxed);
    }

    /// A link went idle: tables that grew with its traffic and are empty
    /// now are given back (an idle peer holds no room for a burst).
    fn release_idle_tables(&mut self) {
        if self.pending.is_empty() {
            // Only stale entries are left in the expiry heap.
            self.pending = HashMap::new();
            self.expiry = BinaryHeap::new();
        }
        if self.handler_requests.is_empty() {
            self.handler_requests = HashMap::new();
        }
        if self.forwards.is_empty() {
            self.forwards = HashMap::new();
            self.forward_expiry = BinaryHeap::new();
        }
    }

    fn emit(&self, data: EventData) {
        self.node.emit(self.shared.id, self.shared.remote.clone(), data);
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        match ev {
            Event::Dial { link } => self.start_dial(link, now),
            Event::StateChanged { from, to } => {
                tracing::debug!(peer = %Escaped(&self.shared.label()), from = from.name(), to = to.name(), "peer state");
                self.shared.set_state(self.shown_state(to));
            }
            Event::Up { link, direction, info, applications } => self.on_up(link, direction, *info, applications),
            Event::Down { reason } => self.on_down(reason),
            Event::CloseLink { link, reason } => self.on_close_link(link, reason, now),
            Event::Watchdog { from, to } => {
                tracing::info!(peer = %Escaped(&self.shared.label()), ?from, ?to, "watchdog");
                let peer = self.shared.label().to_string();
                self.emit(EventData::Custom(CustomEvent::new("watchdog", WatchdogChange { peer, from, to })));
            }
            Event::WatchdogAnswered { rtt } => {
                let c = &self.shared.counters;
                c.watchdog_answers.fetch_add(1, Ordering::Relaxed);
                c.last_watchdog_rtt_us.store(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                self.shared.changed();
                self.emit(EventData::HealthCheck { healthy: true, latency: rtt });
            }
            Event::Restarted { previous, current } => {
                self.shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %Escaped(&self.shared.label()), previous, current, "peer restarted (Origin-State-Id changed)");
                let peer = self.shared.label().to_string();
                self.emit(EventData::Custom(CustomEvent::new(
                    "peer_restarted",
                    PeerRestarted { peer, previous, current },
                )));
            }
            Event::ReconnectScheduled { attempt, delay } => {
                self.last_attempt = attempt;
                self.emit(EventData::ReconnectScheduled { attempt, delay });
            }
            Event::GaveUp => {
                tracing::info!(peer = %Escaped(&self.shared.label()), "reconnect schedule gave up");
            }
            Event::Election { won } => {
                tracing::info!(peer = %Escaped(&self.shared.label()), won, "election (RFC 6733 §5.6.4)");
                let peer = self.shared.label().to_string();
                self.emit(EventData::Custom(CustomEvent::new("election", Election { peer, won })));
            }
            Event::Replaced { old, new } => {
                tracing::debug!(peer = %Escaped(&self.shared.label()), %old, %new, "connection replaced");
                self.draining.push((old, now + self.node.config.connection.drain_timeout));
                self.shared.opened_us.store(self.shared.since_epoch_us(), Ordering::Relaxed);
                self.shared.counters.connections_opened.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = self.links.iter_mut().find(|l| l.id == new) {
                    l.up = true;
                    if matches!(l.upgrade, Upgrade::Awaiting) {
                        l.meta.transport = TransportKind::Tls;
                    }
                    *lock(&self.shared.link) = Some(l.meta);
                    *lock(&self.shared.tls) = l.tls.clone();
                }
                self.start_upgrade(new);
                self.emit(EventData::Connected { first: false });
            }
            _ => {}
        }
    }

    fn on_up(&mut self, link: LinkId, direction: Direction, info: PeerInfo, applications: Vec<u32>) {
        let Some(l) = self.links.iter_mut().find(|l| l.id == link) else { return };
        l.up = true;
        l.meta.direction = direction;
        if matches!(l.upgrade, Upgrade::Awaiting) {
            // In-band TLS first: the peer is announced (events, identity
            // table) only once TLS is up and its certificate names it.
            l.meta.transport = TransportKind::Tls;
            l.deferred_up = Some(Box::new((direction, info.clone(), applications)));
            self.info = Some(Arc::new(info));
            self.start_upgrade(link);
            self.shared.set_state(self.shown_state(self.machine.state()));
            return;
        }
        self.announce_up(link, direction, info, applications);
    }

    /// The state handles see: while in-band TLS of the connection that
    /// opened the peer is still under way, not open yet (handles wait, as
    /// they do for the CEA).
    fn shown_state(&self, state: PeerState) -> PeerState {
        let upgrading = self.links.iter().any(|l| l.deferred_up.is_some());
        match state {
            PeerState::Open | PeerState::Suspect | PeerState::Reopen if upgrading => PeerState::CerSent,
            s => s,
        }
    }

    fn announce_up(&mut self, link: LinkId, direction: Direction, info: PeerInfo, applications: Vec<u32>) {
        let Some((meta, tls)) = self.links.iter().find(|l| l.id == link).map(|l| (l.meta, l.tls.clone())) else {
            return;
        };
        tracing::info!(
            peer = %Escaped(&info.origin_host),
            direction = direction.as_str(),
            transport = meta.transport.as_str(),
            ?applications,
            "peer up"
        );
        let peer = info.origin_host.clone();
        if let Some(tx) = self.learn.take() {
            self.node.learned(&self.shared, &peer, tx);
        }
        *lock(&self.shared.label) = Arc::from(peer.as_str());
        let info = Arc::new(info);
        self.info = Some(info.clone());
        *lock(&self.shared.info) = Some(info);
        *lock(&self.shared.link) = Some(meta);
        *lock(&self.shared.tls) = tls;
        *lock(&self.shared.last_error) = None;
        self.shared.opened_us.store(self.shared.since_epoch_us(), Ordering::Relaxed);
        self.shared.set_state(self.shown_state(self.machine.state()));
        self.shared.counters.ups.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.connections_opened.fetch_add(1, Ordering::Relaxed);
        let first = std::mem::replace(&mut self.first_up, false);
        let attempt = std::mem::take(&mut self.last_attempt);
        self.emit(EventData::Connected { first });
        if !first {
            self.emit(EventData::Reconnected { attempt: attempt.max(1) });
        }
        let up = PeerUp { peer, direction, transport: meta.transport, local: meta.local, remote: meta.remote };
        self.emit(EventData::Custom(CustomEvent::new("peer_up", up)));
        self.shared.changed();
    }

    fn on_down(&mut self, reason: CloseReason) {
        tracing::info!(peer = %Escaped(&self.shared.label()), %reason, "peer down");
        self.shared.counters.downs.fetch_add(1, Ordering::Relaxed);
        *lock(&self.shared.link) = None;
        *lock(&self.shared.tls) = None;
        *lock(&self.shared.last_reason) = Some(reason.clone());
        *lock(&self.shared.last_error) = Some(Error::from_close(&reason));
        let local = matches!(reason, CloseReason::LocalDisconnect { .. });
        let data = if local {
            DisconnectReason::Closed
        } else {
            DisconnectReason::Failed(diam_link::Error::session(reason.clone()))
        };
        self.emit(EventData::Disconnected { reason: data });
        let peer = self.shared.label().to_string();
        self.emit(EventData::Custom(CustomEvent::new("peer_down", PeerDown { peer, reason: reason.clone() })));
        if !local {
            self.report_failure(reason);
        }
    }

    fn report_failure(&self, reason: CloseReason) {
        let failure = PeerFailure {
            connection_id: self.shared.id,
            peer_address: self.shared.target.clone(),
            peer_origin_host: lock(&self.shared.info).as_ref().map(|i| i.origin_host.clone()),
            reason,
            state: self.machine.state(),
            attempt: self.machine.attempt(),
            reconnecting: !self.machine.is_stopped() && !self.targets.is_empty(),
            timestamp: SystemTime::now(),
        };
        self.node.report_failure(self.shared.id, self.shared.remote.clone(), failure);
    }

    fn on_close_link(&mut self, link: LinkId, reason: CloseReason, now: Instant) {
        // Requests written on it end now.
        let lost: Vec<u32> = self.pending.iter().filter(|(_, p)| p.link == link).map(|(h, _)| *h).collect();
        for hbh in lost {
            if let Some(p) = self.pending.remove(&hbh) {
                let error = match &reason {
                    CloseReason::LocalDisconnect { .. } => Error::Closed,
                    r => Error::ConnectionLost(r.clone()),
                };
                p.reply.send(Err(Unanswered { error, written: Some(p.end_to_end) }));
            }
        }
        self.drop_forwards_of(link);
        self.dials.retain(|d| d.link != link);
        self.draining.retain(|(l, _)| *l != link);
        let replacement = self.replacements.contains(&link);
        self.replacements.retain(|l| *l != link);
        let Some(i) = self.links.iter().position(|l| l.id == link) else { return };
        let mut io = self.links.swap_remove(i);
        self.node.budget.release(&mut io.charged);
        if replacement && !io.up {
            // The peer refused a second connection (an RFC-strict one does):
            // the current one carries on; no failure, and no more rotations.
            tracing::debug!(peer = %Escaped(&self.shared.label()), %reason, "rotation refused; keeping the connection");
            self.rotation_refused = true;
        } else if !io.up && !reason.is_clean() && !matches!(reason, CloseReason::LocalDisconnect { .. }) {
            if io.meta.direction == Direction::Outbound {
                // Try the next address next time.
                self.next_target = self.next_target.wrapping_add(1);
            }
            // An attempt that never came up.
            self.shared.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
            *lock(&self.shared.last_error) = Some(Error::from_close(&reason));
            *lock(&self.shared.last_reason) = Some(reason.clone());
            tracing::debug!(peer = %Escaped(&self.shared.label()), %reason, "connection attempt failed");
            self.emit(EventData::Error { error: diam_link::Error::session(reason.clone()) });
            self.shared.changed();
        } else if io.up && self.machine.state().is_connected() {
            // A retired connection (rotation) finished.
            self.emit(EventData::Disconnected { reason: DisconnectReason::Reconnect });
        }
        let _ = now;
        let wbuf = match reason {
            // Nothing more for a peer whose TLS or certificate failed.
            CloseReason::TransportClosed
            | CloseReason::WriteTimeout
            | CloseReason::Tls { .. }
            | CloseReason::CertificateMismatch { .. } => BytesMut::new(),
            _ => io.wbuf,
        };
        close_stream(io.stream, wbuf, self.node.config.connection.write_timeout);
    }

    // ---- dialling and inbound connections ----------------------------------

    fn start_dial(&mut self, link: LinkId, now: Instant) {
        if self.machine.state().is_connected() {
            // A rotation's replacement.
            self.replacements.push(link);
        }
        if self.targets.is_empty() {
            let reason = CloseReason::DialFailed { message: "the peer has no address to dial".into() };
            self.machine.handle_dial_failed(link, reason, now.into_std());
            return;
        }
        let addr = self.targets[self.next_target % self.targets.len()].clone();
        self.emit(EventData::ConnectionCreated);
        let connector = self.node.connector.clone();
        let target = addr.clone();
        let identity = self.machine.identity().map(str::to_string);
        let fut = Box::pin(async move { connector.connect(&target, identity.as_deref()).await });
        self.dials.push(Dial { link, addr, fut });
    }

    fn on_dialled(&mut self, dial: Dial, result: io::Result<Connection>, now: Instant) {
        match result {
            Ok(conn) => {
                let ip = local_ip(conn.local);
                if conn.tls.is_some() {
                    self.machine.set_secure(dial.link);
                }
                self.links.push(LinkIo::new(dial.link, conn, Direction::Outbound, BytesMut::with_capacity(READ_CHUNK)));
                self.machine.handle_dialled(dial.link, ip, now.into_std());
            }
            Err(e) => {
                let addr = dial.addr.to_string();
                let error = if e.kind() == io::ErrorKind::TimedOut {
                    Error::ConnectTimeout(addr)
                } else {
                    Error::Connect { addr, source: e }
                };
                tracing::debug!(peer = %Escaped(&self.shared.label()), error = %error, "dial failed");
                self.next_target = self.next_target.wrapping_add(1);
                self.shared.counters.failed_attempts.fetch_add(1, Ordering::Relaxed);
                let reason = CloseReason::DialFailed { message: error.to_string() };
                *lock(&self.shared.last_reason) = Some(reason.clone());
                *lock(&self.shared.last_error) = Some(error.clone());
                self.emit(EventData::Error { error: diam_link::Error::session(error) });
                self.machine.handle_dial_failed(dial.link, reason, now.into_std());
                self.shared.changed();
            }
        }
    }

    fn on_inbound(&mut self, inb: Box<Inbound>, now: Instant) {
        let ip = local_ip(inb.conn.local);
        let Inbound { conn, rbuf, cer, info } = *inb;
        if self.closing.is_some() {
            let cea =
                diam_proto::psm::cea(self.machine.config(), &cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, Some(ip));
            close_stream(conn.stream, BytesMut::from(cea.as_bytes()), self.node.config.connection.write_timeout);
            return;
        }
        self.shared.counters.messages_received.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.bytes_received.fetch_add(cer.len() as u64, Ordering::Relaxed);
        let secure = conn.tls.is_some();
        match self.machine.handle_inbound_on(cer, info, ip, secure, now.into_std()) {
            Ok(link) => {
                let mut io = LinkIo::new(link, conn, Direction::Inbound, rbuf);
                if self.machine.inband_tls(link) {
                    io.upgrade = Upgrade::Awaiting;
                    io.buffered = false;
                }
                self.links.push(io);
            }
            Err(cea) => {
                tracing::debug!(peer = %Escaped(&self.shared.label()), result_code = ?diam_proto::peer::result_code(&cea), "inbound connection refused");
                close_stream(conn.stream, BytesMut::from(cea.as_bytes()), self.node.config.connection.write_timeout);
            }
        }
    }

    // ---- messages ------------------------------------------------------------

    fn on_message(&mut self, link: LinkId, msg: Message, now: Instant) {
        self.shared.counters.messages_received.fetch_add(1, Ordering::Relaxed);
        let std_now = now.into_std();
        if msg.is_request() {
            if let Err(rejection) = check_request(&msg, self.node.dictionary(), self.node.mandatory_avps()) {
                self.shared.counters.rejected_requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %Escaped(&self.shared.label()), %rejection, "request refused (RFC 6733 §7)");
                self.machine.handle_traffic(link, std_now);
                let c = &self.node.config.connection.peer;
                let answer = rejection.answer(&msg, &c.origin_host, &c.origin_realm);
                self.write_msg(link, &answer);
                return;
            }
            if let Incoming::Request(req) = self.machine.handle_message(link, msg, std_now) {
                self.dispatch(link, req, now);
            }
            return;
        }
        if msg.command_code() == diam_proto::commands::CAPABILITIES_EXCHANGE {
            if let Some(l) = self.links.iter().find(|l| l.id == link && !l.up) {
                if let Some(tls) = &l.tls {
                    let host = msg.get(diam_proto::avps::ORIGIN_HOST).ok().flatten().unwrap_or("").to_string();
                    if !tls.names_identity(&host) {
                        tracing::info!(peer = %Escaped(&host), names = ?tls.peer_dns_names(), "certificate does not name the peer's Origin-Host: closed");
                        self.machine.fail_link(link, CloseReason::CertificateMismatch { identity: host }, std_now);
                        return;
                    }
                }
            }
        }
        let hbh = msg.hop_by_hop();
        if self.pending.contains_key(&hbh) {
            if let Err(e) = check_answer(&msg) {
                self.shared.counters.malformed_answers.fetch_add(1, Ordering::Relaxed);
                self.machine.handle_traffic(link, std_now);
                if let Some(p) = self.pending.remove(&hbh) {
                    p.reply.send(Err(Unanswered { error: Error::MalformedAnswer(e), written: Some(p.end_to_end) }));
                }
                return;
            }
        }
        if let Incoming::Answer(ans) = self.machine.handle_message(link, msg, std_now) {
            match self.pending.remove(&ans.hop_by_hop()) {
                Some(p) => {
                    p.reply.send(Ok(ans));
                }
                None => {
                    self.shared.counters.unknown_answers.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(hop_by_hop = ans.hop_by_hop(), "answer for no pending request dropped");
                }
            }
        }
    }

    /// Runs the handler for an application request, or answers it directly.
    fn dispatch(&mut self, link: LinkId, req: Message, now: Instant) {
        // An agent forwards what is not for this node.
        let req = if self.node.agent.generation.load(Ordering::Relaxed) != 0 {
            match self.agent_route(link, req, now) {
                Some(req) => req,
                None => return,
            }
        } else {
            req
        };
        let (Some(handler), Some(info)) = (self.node.handler(req.application_id()), lock(&self.shared.info).clone())
        else {
            self.answer_error(link, &req, result_codes::DIAMETER_COMMAND_UNSUPPORTED);
            return;
        };
        if self.handlers.len() >= self.node.config.connection.max_concurrent_handlers {
            self.answer_error(link, &req, result_codes::DIAMETER_TOO_BUSY);
            return;
        }
        // A handler may panic before it returns its future, as well as in it.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(req.clone(), &info)));
        let Ok(mut fut) = made else {
            tracing::warn!(peer = %Escaped(&self.shared.label()), "request handler panicked");
            self.answer_error(link, &req, result_codes::DIAMETER_UNABLE_TO_COMPLY);
            return;
        };
        // Fast path: a handler that is ready at once answers inline, with
        // no task spawned (the common case for simple servers).
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(&mut fut).poll(&mut cx))) {
            Ok(Poll::Ready(resp)) => {
                self.respond(link, &req, Ok(resp));
                return;
            }
            Ok(Poll::Pending) => {}
            Err(_) => {
                self.answer_error(link, &req, result_codes::DIAMETER_UNABLE_TO_COMPLY);
                return;
            }
        }
        let abort = self.handlers.spawn(fut);
        self.handler_requests.insert(abort.id(), (link, req));
    }

    fn handler_done(&mut self, done: Result<(tokio::task::Id, Response), tokio::task::JoinError>) {
        let (id, answer) = match done {
            Ok((id, answer)) => (id, Ok(answer)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some((link, req)) = self.handler_requests.remove(&id) else { return };
        self.respond(link, &req, answer);
    }

    fn respond(&mut self, link: LinkId, req: &Message, answer: Result<Response, tokio::task::JoinError>) {
        match answer {
            Ok(Response::Answer(ans)) => self.machine.send_answer(link, ans),
            Ok(Response::CommandUnsupported) => {
                self.answer_error(link, req, result_codes::DIAMETER_COMMAND_UNSUPPORTED)
            }
            Ok(Response::NoAnswer) => {}
            Err(e) => {
                tracing::warn!(peer = %Escaped(&self.shared.label()), error = %e, "request handler failed");
                self.answer_error(link, req, result_codes::DIAMETER_UNABLE_TO_COMPLY);
            }
        }
    }

    fn answer_error(&mut self, link: LinkId, req: &Message, result_code: u32) {
        let c = &self.node.config.connection.peer;
        let ans = error_answer(req, result_code, &c.origin_host, &c.origin_realm).build();
        self.machine.send_answer(link, ans);
    }

    // ---- requests and commands -----------------------------------------------

    fn command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Request(r) => self.request(*r, now),
            Command::Connect => {
                if !self.targets.is_empty() && self.closing.is_none() {
                    self.machine.connect(now.into_std());
                }
            }
            Command::Close { cause, done } => self.begin_close(cause, Some(done), now),
            Command::Rotate => {
                // The lifetime restarts now, whatever happens to the attempt.
                self.shared.opened_us.store(self.shared.since_epoch_us(), Ordering::Relaxed);
                if !self.rotation_refused && self.machine.rotate(now.into_std()) {
                    self.emit(EventData::MarkedForReconnect);
                }
            }
            Command::Probe => {
                self.machine.probe(now.into_std());
            }
        }
    }

    fn request(&mut self, cmd: crate::handle::RequestCmd, now: Instant) {
        let crate::handle::RequestCmd { msg, reply, deadline, permit, append, retransmit } = cmd;
        if reply.is_closed() {
            return;
        }
        // Its caller's time ran out while it queued: the peer must not see
        // it (it would do work no one waits for).
        if deadline <= now {
            self.shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
            reply.send(Err(Unanswered::unsent(Error::Timeout)));
            return;
        }
        if self.closing.is_some() {
            reply.send(Err(Unanswered::unsent(Error::Closed)));
            return;
        }
        let Some(link) = self.machine.sending_link() else {
            reply.send(Err(Unanswered::unsent(Error::NotAvailable(self.machine.state()))));
            return;
        };
        let hbh = loop {
            let h = self.machine.ids().next_hop_by_hop();
            if !self.pending.contains_key(&h) {
                break h;
            }
        };
        let e2e = match msg.end_to_end() {
            // A forwarded request keeps its End-to-End identifier, even 0.
            0 if append.is_none() => self.machine.ids().next_end_to_end(),
            e => e,
        };
        let extra = append.as_ref().map_or(0, |a| a.len());
        if msg.len() + extra > diam_proto::MAX_LENGTH_FIELD {
            // The appended Route-Record would not fit the 24-bit length.
            reply.send(Err(Unanswered::unsent(Error::InvalidRequest("the message is too long to forward"))));
            return;
        }
        let Some(l) = self.links.iter_mut().find(|l| l.id == link) else {
            reply.send(Err(Unanswered::unsent(Error::NotAvailable(self.machine.state()))));
            return;
        };
        l.idle = false;
        let start = l.wbuf.len();
        l.wbuf.extend_from_slice(msg.as_bytes());
        l.wbuf[start + 12..start + 16].copy_from_slice(&hbh.to_be_bytes());
        l.wbuf[start + 16..start + 20].copy_from_slice(&e2e.to_be_bytes());
        if let Some(extra) = append {
            // A relay's Route-Record: appended, and the length patched
            // (the codec's frame limit bounds what arrived; 24 bits hold
            // it with room for one more AVP).
            l.wbuf.extend_from_slice(&extra);
            let len = (msg.len() + extra.len()) as u32;
            l.wbuf[start + 1..start + 4].copy_from_slice(&len.to_be_bytes()[1..]);
        }
        if retransmit {
            l.wbuf[start + 4] |= diam_proto::CommandFlags::RETRANSMIT;
        }
        self.shared.counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.shared.counters.bytes_sent.fetch_add((l.wbuf.len() - start) as u64, Ordering::Relaxed);
        self.pending.insert(hbh, Pending { reply, deadline, end_to_end: e2e, link, _permit: permit });
        self.expiry.push(Reverse((deadline, hbh)));
        if self.expiry.len() > 2 * self.pending.len() + 1024 {
            // Answered entries linger in the heap until their deadline;
            // rebuild so it stays O(pending).
            self.expiry = self.pending.iter().map(|(h, p)| Reverse((p.deadline, *h))).collect();
        }
    }

    fn begin_close(&mut self, cause: i32, done: Option<oneshot::Sender<()>>, now: Instant) {
        match &mut self.closing {
            Some(c) => c.waiters.extend(done),
            None => {
                self.machine.stop_reconnecting();
                self.closing = Some(Closing {
                    cause,
                    waiters: done.into_iter().collect(),
                    drain_until: now + self.node.config.connection.drain_timeout,
                    dpr_sent: false,
                });
            }
        }
    }

    /// Sends DPR once outstanding requests are answered (or the drain time
    /// is up).
    fn start_dpr_if_drained(&mut self, now: Instant) {
        let Some(c) = &mut self.closing else { return };
        let busy = !self.pending.is_empty() || !self.forwards.is_empty() || !self.handler_requests.is_empty();
        if c.dpr_sent || (busy && now < c.drain_until) {
            return;
        }
        c.dpr_sent = true;
        let cause = c.cause;
        self.machine.disconnect(cause, now.into_std());
    }

    /// Rotated-out links: DPR once their requests are answered.
    fn finish_drains(&mut self, now: Instant) {
        if self.draining.is_empty() {
            return;
        }
        let ready: Vec<LinkId> =
            self.draining.iter().filter(|(l, until)| now >= *until || !self.link_busy(*l)).map(|(l, _)| *l).collect();
        for l in ready {
            self.draining.retain(|(d, _)| *d != l);
            self.machine.disconnect_link(l, disconnect_cause::REBOOTING, now.into_std());
        }
    }

    /// Whether requests on `link` still wait: ours, or its peer's (being
    /// forwarded or in a handler), whose answers must go back on it.
    fn link_busy(&self, link: LinkId) -> bool {
        self.pending.values().any(|p| p.link == link)
            || self.forwards_on(link)
            || self.handler_requests.values().any(|(l, _)| *l == link)
    }

    /// Drops heap entries of requests already answered from the top, so the
    /// timer tracks the earliest real deadline.
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
                    p.reply.send(Err(Unanswered { error: Error::Timeout, written: Some(p.end_to_end) }));
                }
            }
        }
    }

    /// Completes everything that still waits on this peer.
    fn finish(mut self) {
        self.grid_slot.cancel();
        let error = lock(&self.shared.last_error).clone().unwrap_or(Error::Closed);
        for (_, p) in self.pending.drain() {
            p.reply.send(Err(Unanswered { error: error.clone(), written: Some(p.end_to_end) }));
        }
        self.commands.close();
        self.control.close();
        let queued: Vec<Command> = std::iter::from_fn(|| self.commands.try_recv().ok())
            .chain(std::iter::from_fn(|| self.control.try_recv().ok()))
            .collect();
        for cmd in queued {
            match cmd {
                Command::Request(r) => {
                    r.reply.send(Err(Unanswered::unsent(error.clone())));
                }
                Command::Close { done, .. } => {
                    let _ = done.send(());
                }
                _ => {}
            }
        }
        for l in &mut self.links {
            self.node.budget.release(&mut l.charged);
        }
        self.inbound.close();
        while let Ok(inb) = self.inbound.try_recv() {
            let cea =
                diam_proto::psm::cea(self.machine.config(), &inb.cer, result_codes::DIAMETER_UNABLE_TO_COMPLY, None);
            close_stream(inb.conn.stream, BytesMut::from(cea.as_bytes()), self.node.config.connection.write_timeout);
        }
        if let Some(c) = self.closing.take() {
            for w in c.waiters {
                let _ = w.send(());
            }
        }
        self.shared.set_state(PeerState::Closed);
        self.node.forget(&self.shared);
        if let Some(retire) = self.shared.retire.get() {
            retire();
        }
    }
}

/// How many bytes the frame at the start of `rbuf` still lacks, once its
/// header's length is in (`None` before that, or when it is complete).
fn unfinished_frame(rbuf: &BytesMut) -> Option<usize> {
    let len = rbuf.get(1..4).map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]) as usize)?;
    len.checked_sub(rbuf.len()).filter(|&rest| rest > 0)
}

/// Reads a stream until one whole frame is in `rbuf` (the inbound CER),
/// keeping what follows it.
pub(crate) async fn read_first<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    max_size: usize,
) -> Result<Message, String> {
    use tokio::io::AsyncReadExt;
    let mut decoder = FrameDecoder::with_max_size(max_size);
    loop {
        match decoder.decode_frame(rbuf) {
            Ok(Some(m)) => return Ok(m),
            Ok(None) => {}
            Err(e) => return Err(format!("undecodable frame: {e}")),
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        match stream.read_buf(rbuf).await {
            Ok(0) => return Err("closed before the CER".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod coalesce_tests {
    use super::*;

    /// Timers 6 s or more away land on the grid, never earlier and
    /// less than a step later; sooner ones and a zero step are untouched.
    #[test]
    fn long_timers_are_rounded_up_to_the_grid_and_short_ones_kept() {
        let step = Duration::from_millis(500);
        let now = Instant::now();
        let mut landed = std::collections::HashSet::new();
        for k in 0..1000u64 {
            let t = now + Duration::from_secs(30) + Duration::from_micros(k * 997);
            let c = coalesce(t, now, step);
            assert!(c >= t && c - t < step, "{k}: {:?} after", c - t);
            landed.insert(c);
        }
        // About 1 s of deadlines, on about 2 grid points.
        assert!((2..=3).contains(&landed.len()), "{} grid points", landed.len());
        let soon = now + Duration::from_millis(5_999);
        assert_eq!(coalesce(soon, now, step), soon);
        let t = now + Duration::from_secs(30) + Duration::from_micros(1);
        assert_eq!(coalesce(t, now, Duration::ZERO), t);
    }

    /// The grid lies on the wall clock's half seconds, in every process, so
    /// that a client and its servers on one machine wake together.
    #[test]
    fn the_grid_is_aligned_on_the_wall_clock() {
        let step = Duration::from_millis(500);
        for k in 0..20u64 {
            let now = Instant::now();
            let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
            let t = now + Duration::from_secs(30) + Duration::from_millis(k * 37);
            let c = coalesce(t, now, step);
            // The wall-clock time of `c`, in nanoseconds past its half second
            // (the two clocks are read a moment apart: allow 5 ms).
            let at = wall + (c - now);
            let off = u64::from(at.subsec_nanos()) % 500_000_000;
            let off = off.min(500_000_000 - off);
            assert!(off < 5_000_000, "{k}: {off} ns off the grid");
        }
    }
}
