//! The reconnecting client: configuration, hooks, lifecycle and the reconnect loop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, BackoffExt, Exhausted, Exponential, Jitter};
use crate::error::{BoxError, ConfigError, Error, Kind};
use crate::events::{ConnectionId, DisconnectReason, Event, EventData, EventDispatcher};
use crate::remote::Remote;
use crate::stream::{dial, LinkStream, SocketRef};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Connection settings for a [`ReconnectingClient`].
///
/// Built from the [`Remote`] with documented defaults, adjusted with the chained setters,
/// validated once when the client is built (or [`reload`](ReconnectingClient::reload)ed).
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`dial_timeout`](Self::dial_timeout) | 2 s | resolving and connecting, per attempt |
/// | [`handshake_timeout`](Self::handshake_timeout) | 5 s | [`Hooks::on_connect`], per attempt |
/// | [`read_timeout`](Self::read_timeout) | off | a read pending this long fails with `TimedOut` |
/// | [`write_timeout`](Self::write_timeout) | 2 s | a write or flush pending this long fails with `TimedOut` |
/// | [`keepalive`](Self::keepalive) | 5 s | TCP keepalive idle time and probe interval |
/// | [`nodelay`](Self::nodelay) | on | `TCP_NODELAY` (no Nagle delay) |
/// | [`backoff`](Self::backoff) | exponential 100 ms → 30 s, ×2, equal jitter, reset after 5 s up | pacing between attempts |
///
/// The read timeout is off by default: request/answer protocols idle legitimately
/// between messages, and their liveness belongs to an application-level watchdog (for
/// Diameter, DWR/DWA every Tw = 30 s, RFC 3539 §3.4.1), not to a socket deadline.
pub struct ClientConfig {
    settings: Settings,
    backoff: Box<dyn Backoff + Send>,
}

/// The plain-data part of [`ClientConfig`], shared with the dialer (the backoff is
/// `Send` but not `Sync`, so it travels separately).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) remote: Remote,
    pub(crate) dial_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) read_timeout: Option<Duration>,
    pub(crate) write_timeout: Option<Duration>,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) nodelay: bool,
}

impl ClientConfig {
    /// The defaults in the table above, for `remote`.
    #[must_use]
    pub fn new(remote: Remote) -> Self {
        let backoff = Exponential::new(Duration::from_millis(100), Duration::from_secs(30), 2.0)
            .unwrap_or_else(|_| unreachable!("valid constants"))
            .jitter(Jitter::Equal)
            .reset_after(Duration::from_secs(5));
        Self {
            settings: Settings {
                remote,
                dial_timeout: Duration::from_secs(2),
                handshake_timeout: Duration::from_secs(5),
                read_timeout: None,
                write_timeout: Some(Duration::from_secs(2)),
                keepalive: Some(Duration::from_secs(5)),
                nodelay: true,
            },
            backoff: backoff.boxed(),
        }
    }

    /// Time allowed to resolve the host and connect, per attempt; must be non-zero.
    #[must_use]
    pub fn dial_timeout(mut self, timeout: Duration) -> Self {
        self.settings.dial_timeout = timeout;
        self
    }

    /// Time allowed for [`Hooks::on_connect`], per attempt; must be non-zero.
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.settings.handshake_timeout = timeout;
        self
    }

    /// Fail a read that stays pending this long (`None` disables); must be non-zero.
    #[must_use]
    pub fn read_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.read_timeout = timeout;
        self
    }

    /// Fail a write or flush that stays pending this long (`None` disables); must be non-zero.
    #[must_use]
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.write_timeout = timeout;
        self
    }

    /// TCP keepalive idle time and probe interval (`None` disables); at least one second,
    /// the kernel's resolution. Ignored for Unix sockets.
    #[must_use]
    pub fn keepalive(mut self, interval: Option<Duration>) -> Self {
        self.settings.keepalive = interval;
        self
    }

    /// Whether to set `TCP_NODELAY`. Ignored for Unix sockets.
    #[must_use]
    pub fn nodelay(mut self, nodelay: bool) -> Self {
        self.settings.nodelay = nodelay;
        self
    }

    /// The pacing strategy between attempts; see [`crate::backoff`].
    #[must_use]
    pub fn backoff(mut self, backoff: impl Backoff + Send + 'static) -> Self {
        self.backoff = Box::new(backoff);
        self
    }

    /// The peer to connect to.
    pub fn remote(&self) -> &Remote {
        &self.settings.remote
    }

    /// Checks every setting; the client calls this on construction and on reload.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.settings.dial_timeout.is_zero() {
            return Err(ConfigError::value("dial_timeout", "must be greater than zero"));
        }
        if self.settings.handshake_timeout.is_zero() {
            return Err(ConfigError::value("handshake_timeout", "must be greater than zero"));
        }
        if self.settings.read_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::value("read_timeout", "must be greater than zero (use None to disable)"));
        }
        if self.settings.write_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::value("write_timeout", "must be greater than zero (use None to disable)"));
        }
        if self.settings.keepalive.is_some_and(|t| t < Duration::from_secs(1)) {
            return Err(ConfigError::value("keepalive", "must be at least one second (use None to disable)"));
        }
        Ok(())
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("remote", &self.settings.remote)
            .field("dial_timeout", &self.settings.dial_timeout)
            .field("handshake_timeout", &self.settings.handshake_timeout)
            .field("read_timeout", &self.settings.read_timeout)
            .field("write_timeout", &self.settings.write_timeout)
            .field("keepalive", &self.settings.keepalive)
            .field("nodelay", &self.settings.nodelay)
            .finish_non_exhaustive()
    }
}

/// What the client does after a failure; returned by [`Hooks::on_error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Wait as the backoff says, then try again.
    Retry,
    /// Stop; [`ReconnectingClient::wait`] returns an error with
    /// [`is_stopped`](Error::is_stopped) whose source is the failure.
    Stop,
}

/// Fires when the session should end: on [`shutdown`](ReconnectingClient::shutdown) or
/// [`mark_for_reconnect`](ReconnectingClient::mark_for_reconnect).
///
/// A session should `select!` on [`cancelled`](Self::cancelled) next to its I/O, say
/// goodbye to the peer if its protocol has a way (Diameter: DPR), and return.
#[derive(Debug, Clone)]
pub struct CancelSignal {
    session: CancellationToken,
    root: CancellationToken,
}

impl CancelSignal {
    /// Completes once the session should end.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + '_ {
        self.session.cancelled()
    }

    /// Whether the session should end.
    pub fn is_cancelled(&self) -> bool {
        self.session.is_cancelled()
    }

    /// `true` when the whole client is shutting down (as opposed to a requested reconnect).
    pub fn is_shutdown(&self) -> bool {
        self.root.is_cancelled()
    }
}

/// The protocol plugged into a [`ReconnectingClient`]. Every method has a default, so an
/// implementation overrides only what it needs; the async ones are written as `async fn`.
///
/// Per attempt the client calls [`on_socket`](Self::on_socket) (each socket it creates),
/// [`on_connect`](Self::on_connect) (handshake), [`on_session`](Self::on_session) (the
/// protocol, until it returns), then [`on_disconnect`](Self::on_disconnect). After any
/// failure (dial, handshake, or a session error) it asks [`on_error`](Self::on_error)
/// whether to go on. All run on the client's task, one at a time, so `&mut self` state
/// needs no locks.
pub trait Hooks: Send + 'static {
    /// Sets options on a socket before it connects. An error fails the attempt.
    fn on_socket(&mut self, socket: SocketRef<'_>) -> std::io::Result<()> {
        let _ = socket;
        Ok(())
    }

    /// Runs once the stream is connected, before it counts as up (a handshake). An error
    /// or the [handshake timeout](ClientConfig::handshake_timeout) fails the attempt.
    fn on_connect(&mut self, stream: &mut LinkStream) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = stream;
        async { Ok(()) }
    }

    /// Runs the protocol until the session ends. `Ok` means it ended normally (the peer
    /// closed, or the work is done) and the client reconnects as the backoff says; `Err`
    /// goes to [`on_error`](Self::on_error). It must return soon after `cancel` fires.
    ///
    /// The default holds the connection open, discarding input, until the peer closes or
    /// the signal fires.
    fn on_session(
        &mut self,
        stream: LinkStream,
        cancel: CancelSignal,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        hold_open(stream, cancel)
    }

    /// Runs after every session, whatever ended it.
    fn on_disconnect(&mut self, reason: &DisconnectReason) {
        let _ = reason;
    }

    /// Decides what follows a failure. The default retries recoverable errors and stops
    /// on fatal ones.
    fn on_error(&mut self, error: &Error) -> ErrorAction {
        if error.is_recoverable() {
            ErrorAction::Retry
        } else {
            ErrorAction::Stop
        }
    }
}

async fn hold_open(mut stream: LinkStream, cancel: CancelSignal) -> Result<(), BoxError> {
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            read = stream.read(&mut buf) => if read? == 0 { return Ok(()) },
        }
    }
}

/// Where the client is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Built, not yet [`connect`](ReconnectingClient::connect)ed.
    Idle,
    /// Dialing or handshaking.
    Connecting {
        /// Attempt number since the last connection, from 1.
        attempt: u32,
    },
    /// The session is running.
    Connected,
    /// Pausing before the next attempt.
    Waiting {
        /// The attempt that will follow.
        attempt: u32,
        /// The pause.
        delay: Duration,
    },
    /// Finished; see [`ReconnectingClient::wait`] for how.
    Stopped,
}

struct Shared {
    id: ConnectionId,
    remote: Mutex<Arc<Remote>>,
    reload: Mutex<Option<ClientConfig>>,
    root: CancellationToken,
    /// Interrupts the current session or pause, for `mark_for_reconnect`.
    current: Mutex<Option<CancellationToken>>,
    state: watch::Sender<State>,
    outcome: Mutex<Option<Result<(), Error>>>,
    events: Option<EventDispatcher>,
}

impl Shared {
    fn emit(&self, data: EventData) {
        let Some(events) = &self.events else { return };
        let remote = Arc::clone(&lock(&self.remote));
        if let Err(err) = events.emit(Event::new(self.id, Some(remote), data)) {
            tracing::debug!(connection = %self.id, error = %err, "event listener failed");
        }
    }

    fn set_state(&self, state: State) {
        self.state.send_replace(state);
    }

    /// Records the outcome once; later calls (a loop racing an aborting shutdown) are ignored.
    fn finish(&self, outcome: Result<(), Error>) {
        let mut slot = lock(&self.outcome);
        if slot.is_none() {
            *slot = Some(outcome);
            drop(slot);
            *lock(&self.current) = None;
            self.set_state(State::Stopped);
        }
    }
}

type RunLoop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds a [`ReconnectingClient`] with an event dispatcher or a chosen connection id.
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    config: ClientConfig,
    events: Option<EventDispatcher>,
    id: Option<ConnectionId>,
}

impl ClientBuilder {
    /// Emits lifecycle events to `dispatcher` (none by default).
    pub fn events(mut self, dispatcher: EventDispatcher) -> Self {
        self.events = Some(dispatcher);
        self
    }

    /// Uses `id` in events (default: [`ConnectionId::unique`]).
    pub fn connection_id(mut self, id: ConnectionId) -> Self {
        self.id = Some(id);
        self
    }

    /// Validates the config and builds the client around `hooks`; nothing runs until
    /// [`connect`](ReconnectingClient::connect).
    pub fn build<H: Hooks>(self, hooks: H) -> Result<ReconnectingClient, ConfigError> {
        self.config.validate()?;
        let (state, _) = watch::channel(State::Idle);
        let shared = Arc::new(Shared {
            id: self.id.unwrap_or_else(ConnectionId::unique),
            remote: Mutex::new(Arc::new(self.config.settings.remote.clone())),
            reload: Mutex::new(None),
            root: CancellationToken::new(),
            current: Mutex::new(None),
            state,
            outcome: Mutex::new(None),
            events: self.events,
        });
        let run: RunLoop = Box::pin(run(Arc::clone(&shared), self.config, hooks));
        Ok(ReconnectingClient { shared, pending: Mutex::new(Some(run)), task: Mutex::new(None) })
    }
}

/// A client that keeps a connection to one [`Remote`] alive, reconnecting with backoff,
/// running a protocol through [`Hooks`], and reporting every step as an [`Event`].
///
/// * [`connect`](Self::connect) spawns the loop on the current tokio runtime.
/// * [`wait`](Self::wait), [`done`](Self::done), [`err`](Self::err), [`state`](Self::state)
///   observe it.
/// * [`shutdown`](Self::shutdown) stops it gracefully within a deadline;
///   [`reload`](Self::reload) swaps the config at the next attempt;
///   [`mark_for_reconnect`](Self::mark_for_reconnect) replaces the connection now.
///
/// Dropping the client asks the loop to stop (as `shutdown` does) without waiting.
///
/// Events, in order: `ConnectionCreated` before each attempt; then `Connected { first }`
/// (and `Reconnected { attempt }` unless first) or `Error`; after a session
/// `Disconnected { reason }` (and `Error` if it failed); `ReconnectScheduled { attempt,
/// delay }` before each pause; `MarkedForReconnect` on request.
pub struct ReconnectingClient {
    shared: Arc<Shared>,
    pending: Mutex<Option<RunLoop>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl ReconnectingClient {
    /// A client for `config` and `hooks`, without events; see [`builder`](Self::builder).
    pub fn new<H: Hooks>(config: ClientConfig, hooks: H) -> Result<Self, ConfigError> {
        Self::builder(config).build(hooks)
    }

    /// Starts building a client.
    pub fn builder(config: ClientConfig) -> ClientBuilder {
        ClientBuilder { config, events: None, id: None }
    }

    /// Spawns the connect loop on the current tokio runtime and returns at once.
    ///
    /// Fails if called twice, after a shutdown, or outside a runtime.
    pub fn connect(&self) -> Result<(), Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::with_source(Kind::NoRuntime, e))?;
        let run = lock(&self.pending).take().ok_or_else(|| Error::new(Kind::AlreadyStarted, None))?;
        *lock(&self.task) = Some(runtime.spawn(run));
        Ok(())
    }

    /// Applies `config` from the next connection attempt on (the current session is not
    /// interrupted; pair with [`mark_for_reconnect`](Self::mark_for_reconnect) to apply now).
    /// The new backoff starts fresh.
    pub fn reload(&self, config: ClientConfig) -> Result<(), ConfigError> {
        config.validate()?;
        *lock(&self.shared.reload) = Some(config);
        Ok(())
    }

    /// Ends the current session (its [`CancelSignal`] fires) or pause, and connects again
    /// without waiting for the backoff. Returns `false` if there was nothing to interrupt
    /// (not started, connecting, or stopped).
    pub fn mark_for_reconnect(&self) -> bool {
        let current = lock(&self.shared.current).clone();
        match current {
            Some(token) => {
                self.shared.emit(EventData::MarkedForReconnect);
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Waits until the client stops, and returns how: `Ok` after a graceful shutdown or a
    /// clean finish, the error otherwise. Never returns if the client is never started.
    pub async fn wait(&self) -> Result<(), Error> {
        self.done().await;
        lock(&self.shared.outcome).clone().unwrap_or(Ok(()))
    }

    /// The error the client stopped with; `None` while it runs or after a clean stop.
    pub fn err(&self) -> Option<Error> {
        lock(&self.shared.outcome).clone().and_then(Result::err)
    }

    /// Completes when the client has stopped. Independent of `self`, so it can be moved
    /// into another task.
    pub fn done(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.shared.state.subscribe();
        async move {
            let _ = state.wait_for(|s| *s == State::Stopped).await;
        }
    }

    /// Stops the client: cancels the session (or the pause, or the attempt in progress),
    /// lets [`Hooks::on_disconnect`] run, and waits for the loop to end, at most `timeout`.
    ///
    /// Returns the client's outcome (`Ok` for a graceful stop). If the deadline passes,
    /// the loop is aborted where it stands (its `on_disconnect` does not run; a
    /// `Disconnected { Shutdown }` event is still emitted if it was connected) and the
    /// error has [`is_cancelled`](Error::is_cancelled).
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        self.shared.root.cancel();
        if lock(&self.pending).take().is_some() {
            self.shared.finish(Ok(()));
        }
        if tokio::time::timeout(timeout, self.done()).await.is_err() {
            if let Some(task) = lock(&self.task).take() {
                task.abort();
            }
            let was_connected = *self.shared.state.borrow() == State::Connected;
            let error = Error::new(Kind::Cancelled, None);
            self.shared.finish(Err(error));
            if was_connected {
                self.shared.emit(EventData::Disconnected { reason: DisconnectReason::Shutdown });
            }
        }
        lock(&self.shared.outcome).clone().unwrap_or(Ok(()))
    }

    /// The current state.
    pub fn state(&self) -> State {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every state change.
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// The id this client's events carry.
    pub fn connection_id(&self) -> ConnectionId {
        self.shared.id
    }

    /// The remote in use (it changes when a reloaded config takes effect).
    pub fn remote(&self) -> Arc<Remote> {
        Arc::clone(&lock(&self.shared.remote))
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        self.shared.root.cancel();
    }
}

impl fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("id", &self.shared.id)
            .field("remote", &*lock(&self.shared.remote))
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

async fn run<H: Hooks>(shared: Arc<Shared>, config: ClientConfig, hooks: H) {
    let outcome = drive(&shared, config, hooks).await;
    match &outcome {
        Ok(()) => tracing::debug!(connection = %shared.id, "client stopped"),
        Err(err) => tracing::info!(connection = %shared.id, error = %err, "client stopped"),
    }
    shared.finish(outcome);
}

/// Dial with the dial timeout, then the handshake with the handshake timeout.
async fn establish<H: Hooks>(remote: &Arc<Remote>, config: &Settings, hooks: &mut H) -> Result<LinkStream, Error> {
    let mut stream = tokio::time::timeout(config.dial_timeout, dial(remote, config, hooks))
        .await
        .map_err(|_| Error::new(Kind::DialTimeout, None))??;
    match tokio::time::timeout(config.handshake_timeout, hooks.on_connect(&mut stream)).await {
        Err(_) => Err(Error::new(Kind::HandshakeTimeout, None)),
        Ok(Err(err)) => Err(Error::with_source(Kind::Handshake, err)),
        Ok(Ok(())) => Ok(stream),
    }
}

/// The reconnect loop. Returns the client's outcome.
async fn drive<H: Hooks>(shared: &Shared, config: ClientConfig, mut hooks: H) -> Result<(), Error> {
    let ClientConfig { mut settings, mut backoff } = config;
    let root = &shared.root;
    // Attempts since the last connection (or the start).
    let mut attempt: u32 = 0;
    let mut connected_before = false;
    // The failure that led to the current pause, for the backoff's verdict.
    let mut last_failure: Option<Error>;
    loop {
        if let Some(reloaded) = lock(&shared.reload).take() {
            *lock(&shared.remote) = Arc::new(reloaded.settings.remote.clone());
            settings = reloaded.settings;
            backoff = reloaded.backoff;
        }
        if root.is_cancelled() {
            return Ok(());
        }
        attempt = attempt.saturating_add(1);
        shared.set_state(State::Connecting { attempt });
        shared.emit(EventData::ConnectionCreated);
        let remote = Arc::clone(&lock(&shared.remote));
        tracing::debug!(connection = %shared.id, %remote, attempt, "connecting");
        let established = tokio::select! {
            biased;
            () = root.cancelled() => return Ok(()),
            established = establish(&remote, &settings, &mut hooks) => established,
        };
        let mut skip_pause = false;
        match established {
            Err(error) => {
                tracing::debug!(connection = %shared.id, %remote, attempt, error = %error, "connect attempt failed");
                shared.emit(EventData::Error { error: error.clone() });
                if hooks.on_error(&error) == ErrorAction::Stop {
                    return Err(Error::with_source(Kind::Stopped, error));
                }
                last_failure = Some(error);
            }
            Ok(stream) => {
                let first = !connected_before;
                connected_before = true;
                let session = root.child_token();
                *lock(&shared.current) = Some(session.clone());
                shared.set_state(State::Connected);
                tracing::info!(connection = %shared.id, %remote, attempt, "connected");
                shared.emit(EventData::Connected { first });
                if !first {
                    shared.emit(EventData::Reconnected { attempt });
                }
                attempt = 0;
                let since = Instant::now();
                let signal = CancelSignal { session: session.clone(), root: root.clone() };
                let result = hooks.on_session(stream, signal).await;
                *lock(&shared.current) = None;
                let uptime = since.elapsed();
                let failure = result.err().map(Error::session);
                let reason = if root.is_cancelled() {
                    DisconnectReason::Shutdown
                } else if session.is_cancelled() {
                    DisconnectReason::Reconnect
                } else {
                    failure.clone().map_or(DisconnectReason::Closed, DisconnectReason::Failed)
                };
                tracing::info!(connection = %shared.id, %remote, ?uptime, reason = %reason, "disconnected");
                hooks.on_disconnect(&reason);
                let stopping = matches!(reason, DisconnectReason::Shutdown);
                skip_pause = matches!(reason, DisconnectReason::Reconnect);
                shared.emit(EventData::Disconnected { reason });
                backoff.session_ended(uptime);
                if stopping {
                    return Ok(());
                }
                last_failure = None;
                // A session interrupted on request may fail on the way out; that is not news.
                if let Some(error) = failure.filter(|_| !skip_pause) {
                    shared.emit(EventData::Error { error: error.clone() });
                    if hooks.on_error(&error) == ErrorAction::Stop {
                        return Err(Error::with_source(Kind::Stopped, error));
                    }
                    last_failure = Some(error);
                }
            }
        }
        if skip_pause {
            continue;
        }
        let Some(delay) = backoff.next_delay() else {
            return match backoff.exhausted() {
                Exhausted::Finish => last_failure.map_or(Ok(()), Err),
                _ => Err(Error::new(Kind::Exhausted, last_failure.map(|e| Box::new(e) as BoxError))),
            };
        };
        let next = attempt.saturating_add(1);
        let pause = root.child_token();
        *lock(&shared.current) = Some(pause.clone());
        shared.set_state(State::Waiting { attempt: next, delay });
        shared.emit(EventData::ReconnectScheduled { attempt: next, delay });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = pause.cancelled() => {}
        }
        *lock(&shared.current) = None;
    }
}
