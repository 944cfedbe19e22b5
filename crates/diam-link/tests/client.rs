//! The reconnecting client against real local listeners (127.0.0.1 and temp-dir Unix
//! sockets) and, where only timers matter, on tokio's paused clock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diam_link::backoff::{BackoffExt, Constant, Exponential, FailFast, NoReconnect};
use diam_link::events::{Event, EventData, EventDispatcher, EventKind};
use diam_link::{
    BoxError, CancelSignal, ClientConfig, DisconnectReason, Error, ErrorAction, Hooks, LinkStream, ReconnectingClient,
    Remote, SocketRef, State,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);
const LIMIT: Duration = Duration::from_secs(10);

fn temp_socket(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("dl-{}-{n}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Records every event with the (possibly paused) tokio clock.
fn record(dispatcher: &EventDispatcher) -> Arc<Mutex<Vec<(Instant, Event)>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    dispatcher.subscribe_all(move |e: &Event| sink.lock().unwrap().push((Instant::now(), e.clone()))).detach();
    log
}

fn kinds(log: &Mutex<Vec<(Instant, Event)>>) -> Vec<EventKind> {
    log.lock().unwrap().iter().map(|(_, e)| e.kind()).collect()
}

/// Default hooks: hold the connection until the peer closes.
struct Hold;
impl Hooks for Hold {}

#[tokio::test(start_paused = true)]
async fn reconnect_loop_follows_the_backoff_on_paused_time() {
    let remote = Remote::unix(temp_socket("absent")).unwrap();
    let backoff = Exponential::new(100 * MS, 1000 * MS, 2.0).unwrap().max_attempts(5);
    let config = ClientConfig::new(remote).backoff(backoff);
    let events = EventDispatcher::new();
    let log = record(&events);
    let client = ReconnectingClient::builder(config).events(events.clone()).build(Hold).unwrap();
    assert_eq!(client.state(), State::Idle);
    let started = Instant::now();
    client.connect().unwrap();
    let err = client.wait().await.unwrap_err();
    assert!(err.is_exhausted() && err.is_fatal(), "{err:?}");
    assert_eq!(err.io_error_kind(), Some(std::io::ErrorKind::NotFound), "the last failure is the source");
    assert_eq!(client.err().unwrap().to_string(), err.to_string());
    assert_eq!(client.state(), State::Stopped);

    let log = log.lock().unwrap();
    let attempts: Vec<Duration> =
        log.iter().filter(|(_, e)| e.kind() == EventKind::ConnectionCreated).map(|(t, _)| *t - started).collect();
    let delays: Vec<(u32, Duration)> = log
        .iter()
        .filter_map(|(_, e)| match e.data() {
            EventData::ReconnectScheduled { attempt, delay } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [(2, 100 * MS), (3, 200 * MS), (4, 400 * MS), (5, 800 * MS), (6, 1000 * MS)]);
    // Attempts start exactly when the pauses end (the paused clock has 1 ms resolution).
    let expected = [0, 100, 300, 700, 1500, 2500];
    assert_eq!(attempts.len(), expected.len());
    for (at, ms) in attempts.iter().zip(expected) {
        assert!(*at >= ms * MS && *at <= (ms + 1) * MS, "attempt at {at:?}, expected {ms} ms");
    }
    assert_eq!(events.stats(EventKind::Error).events, 6);
    assert!(log
        .iter()
        .all(|(_, e)| e.remote().is_some_and(Remote::is_unix) && e.connection_id() == client.connection_id()));
}

/// Records the order in which hooks run, and fails the second session.
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    sessions: u32,
}

impl Recorder {
    fn push(&self, s: impl Into<String>) {
        self.log.lock().unwrap().push(s.into());
    }
}

impl Hooks for Recorder {
    fn on_socket(&mut self, socket: SocketRef<'_>) -> std::io::Result<()> {
        assert!(matches!(socket, SocketRef::Unix(_)));
        self.push("socket");
        Ok(())
    }

    async fn on_connect(&mut self, _stream: &mut LinkStream) -> Result<(), BoxError> {
        self.push("connect");
        Ok(())
    }

    async fn on_session(&mut self, mut stream: LinkStream, _cancel: CancelSignal) -> Result<(), BoxError> {
        self.sessions += 1;
        self.push(format!("session{}", self.sessions));
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        if self.sessions == 2 {
            return Err("protocol violation".into());
        }
        Ok(())
    }

    fn on_disconnect(&mut self, reason: &DisconnectReason) {
        self.push(format!("disconnect:{}", reason.as_str()));
    }

    fn on_error(&mut self, error: &Error) -> ErrorAction {
        self.push(format!("error:{}", if error.is_session() { "session" } else { "other" }));
        ErrorAction::Stop
    }
}

/// Accepts connections and closes each one at once; reports each accept.
fn closing_server(listener: UnixListener) -> mpsc::UnboundedReceiver<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test]
async fn hooks_run_in_order_and_on_error_stop_ends_the_client() {
    let path = temp_socket("hooks");
    let _accepts = closing_server(UnixListener::bind(&path).unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let events = EventDispatcher::new();
    let event_log = record(&events);
    let config = ClientConfig::new(Remote::unix(&path).unwrap()).backoff(Constant::new(5 * MS));
    let client = ReconnectingClient::builder(config)
        .events(events)
        .build(Recorder { log: Arc::clone(&log), sessions: 0 })
        .unwrap();
    client.connect().unwrap();
    assert!(client.connect().unwrap_err().is_misuse(), "connect twice");
    let err = tokio::time::timeout(LIMIT, client.wait()).await.unwrap().unwrap_err();
    assert!(err.is_stopped() && err.is_fatal(), "{err:?}");
    let source = std::error::Error::source(&err).unwrap().downcast_ref::<diam_link::Error>().unwrap();
    assert!(source.is_session());
    assert_eq!(std::error::Error::source(source).unwrap().to_string(), "protocol violation");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "socket",
            "connect",
            "session1",
            "disconnect:closed",
            "socket",
            "connect",
            "session2",
            "disconnect:failed",
            "error:session"
        ]
    );
    use EventKind::*;
    assert_eq!(
        kinds(&event_log),
        [
            ConnectionCreated,
            Connected,
            Disconnected,
            ReconnectScheduled,
            ConnectionCreated,
            Connected,
            Reconnected,
            Disconnected,
            Error
        ]
    );
    let firsts: Vec<bool> = event_log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e.data() {
            EventData::Connected { first } => Some(*first),
            _ => None,
        })
        .collect();
    assert_eq!(firsts, [true, false]);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn on_error_stop_after_a_failed_dial() {
    struct StopAtOnce(u32);
    impl Hooks for StopAtOnce {
        fn on_error(&mut self, error: &Error) -> ErrorAction {
            assert!(error.is_connect() && error.is_recoverable());
            self.0 += 1;
            ErrorAction::Stop
        }
    }
    let client =
        ReconnectingClient::new(ClientConfig::new(Remote::unix(temp_socket("none")).unwrap()), StopAtOnce(0)).unwrap();
    client.connect().unwrap();
    let err = client.wait().await.unwrap_err();
    assert!(err.is_stopped());
    assert_eq!(err.io_error_kind(), Some(std::io::ErrorKind::NotFound));
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_aborts_a_session_that_ignores_cancellation() {
    struct Stubborn(Arc<Mutex<Vec<&'static str>>>);
    impl Hooks for Stubborn {
        async fn on_session(&mut self, _stream: LinkStream, _cancel: CancelSignal) -> Result<(), BoxError> {
            self.0.lock().unwrap().push("session");
            std::future::pending::<()>().await;
            Ok(())
        }
        fn on_disconnect(&mut self, _reason: &DisconnectReason) {
            self.0.lock().unwrap().push("disconnect");
        }
    }
    let path = temp_socket("stubborn");
    let listener = UnixListener::bind(&path).unwrap();
    let hooks_log = Arc::new(Mutex::new(Vec::new()));
    let events = EventDispatcher::new();
    let log = record(&events);
    let config = ClientConfig::new(Remote::unix(&path).unwrap());
    let client = ReconnectingClient::builder(config).events(events).build(Stubborn(Arc::clone(&hooks_log))).unwrap();
    client.connect().unwrap();
    let (_server_side, _) = listener.accept().await.unwrap();
    let mut state = client.watch_state();
    state.wait_for(|s| *s == State::Connected).await.unwrap();

    let asked = Instant::now();
    let err = client.shutdown(Duration::from_millis(500)).await.unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert_eq!(asked.elapsed(), Duration::from_millis(500));
    assert_eq!(client.state(), State::Stopped);
    assert!(client.err().unwrap().is_cancelled());
    assert_eq!(*hooks_log.lock().unwrap(), ["session"], "aborted: on_disconnect did not run");
    let last = log.lock().unwrap().last().unwrap().1.clone();
    assert!(matches!(last.data(), EventData::Disconnected { reason: DisconnectReason::Shutdown }));
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_runs_on_disconnect() {
    let path = temp_socket("graceful");
    let listener = UnixListener::bind(&path).unwrap();
    let hooks_log = Arc::new(Mutex::new(Vec::new()));
    struct Polite(Arc<Mutex<Vec<String>>>);
    impl Hooks for Polite {
        async fn on_session(&mut self, _stream: LinkStream, cancel: CancelSignal) -> Result<(), BoxError> {
            cancel.cancelled().await;
            self.0.lock().unwrap().push(format!("cancelled shutdown={}", cancel.is_shutdown()));
            Ok(())
        }
        fn on_disconnect(&mut self, reason: &DisconnectReason) {
            self.0.lock().unwrap().push(format!("disconnect:{reason}"));
        }
    }
    let client =
        ReconnectingClient::new(ClientConfig::new(Remote::unix(&path).unwrap()), Polite(Arc::clone(&hooks_log)))
            .unwrap();
    client.connect().unwrap();
    let _conn = listener.accept().await.unwrap();
    client.watch_state().wait_for(|s| *s == State::Connected).await.unwrap();
    let asked = Instant::now();
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(asked.elapsed() < Duration::from_millis(5));
    assert_eq!(*hooks_log.lock().unwrap(), ["cancelled shutdown=true", "disconnect:shutdown"]);
    assert!(client.wait().await.is_ok() && client.err().is_none());
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(start_paused = true)]
async fn shutdown_interrupts_a_pause_and_works_before_connect() {
    let never = ReconnectingClient::new(ClientConfig::new(Remote::unix(temp_socket("x")).unwrap()), Hold).unwrap();
    never.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(never.state(), State::Stopped);
    assert!(never.connect().unwrap_err().is_misuse());

    let config = ClientConfig::new(Remote::unix(temp_socket("pause")).unwrap())
        .backoff(Constant::new(Duration::from_secs(3600)));
    let client = ReconnectingClient::new(config, Hold).unwrap();
    client.connect().unwrap();
    client.watch_state().wait_for(|s| matches!(s, State::Waiting { .. })).await.unwrap();
    let asked = Instant::now();
    client.shutdown(Duration::from_secs(1)).await.unwrap();
    assert!(asked.elapsed() < Duration::from_millis(5));
}

#[tokio::test(start_paused = true)]
async fn handshake_failures_and_timeouts_are_failed_attempts() {
    struct Flaky(u32);
    impl Hooks for Flaky {
        async fn on_connect(&mut self, _stream: &mut LinkStream) -> Result<(), BoxError> {
            self.0 += 1;
            match self.0 {
                1 => Err("bad greeting".into()),
                2 => std::future::pending().await,
                _ => Ok(()),
            }
        }
        async fn on_session(&mut self, _stream: LinkStream, _cancel: CancelSignal) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let path = temp_socket("handshake");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let events = EventDispatcher::new();
    let log = record(&events);
    let config = ClientConfig::new(Remote::unix(&path).unwrap())
        .handshake_timeout(Duration::from_millis(300))
        .backoff(FromThree::default());
    let client = ReconnectingClient::builder(config).events(events).build(Flaky(0)).unwrap();
    client.connect().unwrap();
    client.wait().await.unwrap();
    let errors: Vec<(bool, bool)> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e.data() {
            EventData::Error { error } => Some((error.is_handshake(), error.is_timeout())),
            _ => None,
        })
        .collect();
    assert_eq!(errors, [(true, false), (true, true)]);
    let _ = std::fs::remove_file(&path);
}

/// Two quick retries, then "do not reconnect" once a session has ended.
#[derive(Default)]
struct FromThree {
    used: u32,
}

impl diam_link::backoff::Backoff for FromThree {
    fn next_delay(&mut self) -> Option<Duration> {
        self.used += 1;
        (self.used <= 2).then_some(10 * MS)
    }
    fn reset(&mut self) {}
    fn session_ended(&mut self, _uptime: Duration) -> bool {
        self.used = u32::MAX - 1;
        false
    }
    fn exhausted(&self) -> diam_link::backoff::Exhausted {
        diam_link::backoff::Exhausted::Finish
    }
}

#[tokio::test]
async fn stop_strategies_finish_or_fail_after_one_session() {
    for (fail_fast, name) in [(false, "noreconnect"), (true, "failfast")] {
        let path = temp_socket(name);
        let _accepts = closing_server(UnixListener::bind(&path).unwrap());
        let config = ClientConfig::new(Remote::unix(&path).unwrap());
        let config = if fail_fast { config.backoff(FailFast) } else { config.backoff(NoReconnect) };
        let client = ReconnectingClient::new(config, Hold).unwrap();
        client.connect().unwrap();
        let outcome = tokio::time::timeout(LIMIT, client.wait()).await.unwrap();
        if fail_fast {
            assert!(outcome.unwrap_err().is_exhausted());
        } else {
            outcome.unwrap();
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Sends one line per session, reports the echo, then waits for cancellation.
struct EchoOnce {
    echoes: mpsc::UnboundedSender<String>,
    disconnects: mpsc::UnboundedSender<String>,
}

impl Hooks for EchoOnce {
    fn on_socket(&mut self, socket: SocketRef<'_>) -> std::io::Result<()> {
        if let SocketRef::Tcp(tcp) = socket {
            // Raw options go on before connect; read one back to prove the socket is live.
            tcp.set_recv_buffer_size(64 * 1024)?;
        }
        Ok(())
    }

    async fn on_connect(&mut self, stream: &mut LinkStream) -> Result<(), BoxError> {
        if let Some(tcp) = stream.as_tcp() {
            assert!(tcp.nodelay()?, "nodelay is on by default");
        }
        Ok(())
    }

    async fn on_session(&mut self, stream: LinkStream, cancel: CancelSignal) -> Result<(), BoxError> {
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(b"ping\n").await?;
        let mut line = String::new();
        stream.read_line(&mut line).await?;
        let _ = self.echoes.send(line.trim_end().to_owned());
        tokio::select! {
            () = cancel.cancelled() => Ok(()),
            n = stream.read_line(&mut line) => { n?; Ok(()) }
        }
    }

    fn on_disconnect(&mut self, reason: &DisconnectReason) {
        let _ = self.disconnects.send(reason.as_str().to_owned());
    }
}

fn echo_hooks() -> (EchoOnce, mpsc::UnboundedReceiver<String>, mpsc::UnboundedReceiver<String>) {
    let (echoes, echo_rx) = mpsc::unbounded_channel();
    let (disconnects, disc_rx) = mpsc::unbounded_channel();
    (EchoOnce { echoes, disconnects }, echo_rx, disc_rx)
}

async fn echo_connection<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
            break;
        }
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f).await.expect("bounded test step")
}

#[tokio::test]
async fn tcp_echo_kill_reconnect_mark_and_reload() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = Remote::from(listener.local_addr().unwrap());
    let events = EventDispatcher::new();
    let log = record(&events);
    let (hooks, mut echoes, mut disconnects) = echo_hooks();
    let config = ClientConfig::new(remote.clone()).backoff(Constant::new(5 * MS));
    let client = ReconnectingClient::builder(config).events(events).build(hooks).unwrap();
    client.connect().unwrap();

    // First connection: echo, then the server drops it ("kill").
    let (conn, _) = within(listener.accept()).await.unwrap();
    let server = tokio::spawn(echo_connection(conn));
    assert_eq!(within(echoes.recv()).await.unwrap(), "ping");
    server.abort();
    assert_eq!(within(disconnects.recv()).await.unwrap(), "closed");

    // The client comes back by itself.
    let (conn, _) = within(listener.accept()).await.unwrap();
    let server = tokio::spawn(echo_connection(conn));
    assert_eq!(within(echoes.recv()).await.unwrap(), "ping");

    // mark_for_reconnect replaces the connection without a pause.
    assert!(client.mark_for_reconnect());
    assert_eq!(within(disconnects.recv()).await.unwrap(), "reconnect");
    let (conn, _) = within(listener.accept()).await.unwrap();
    server.abort();
    let server = tokio::spawn(echo_connection(conn));
    assert_eq!(within(echoes.recv()).await.unwrap(), "ping");

    // reload: a new remote takes effect at the next attempt.
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_remote = Remote::from(other.local_addr().unwrap());
    client.reload(ClientConfig::new(other_remote.clone()).backoff(Constant::new(5 * MS))).unwrap();
    assert!(client.reload(ClientConfig::new(other_remote.clone()).dial_timeout(Duration::ZERO)).is_err());
    assert_eq!(*client.remote(), remote, "not before the next attempt");
    assert!(client.mark_for_reconnect());
    let (conn, _) = within(other.accept()).await.unwrap();
    server.abort();
    let _server = tokio::spawn(echo_connection(conn));
    assert_eq!(within(echoes.recv()).await.unwrap(), "ping");
    assert_eq!(*client.remote(), other_remote);

    client.shutdown(Duration::from_secs(2)).await.unwrap();
    assert_eq!(within(disconnects.recv()).await.unwrap(), "reconnect");
    assert_eq!(within(disconnects.recv()).await.unwrap(), "shutdown");

    let log = log.lock().unwrap();
    let reconnects: Vec<u32> = log
        .iter()
        .filter_map(|(_, e)| match e.data() {
            EventData::Reconnected { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(reconnects, [1, 1, 1]);
    assert_eq!(log.iter().filter(|(_, e)| e.kind() == EventKind::MarkedForReconnect).count(), 2);
    // A requested reconnect skips the pause.
    let after_mark: Vec<EventKind> = log
        .iter()
        .skip_while(|(_, e)| e.kind() != EventKind::MarkedForReconnect)
        .take(3)
        .map(|(_, e)| e.kind())
        .collect();
    assert_eq!(after_mark, [EventKind::MarkedForReconnect, EventKind::Disconnected, EventKind::ConnectionCreated]);
}

#[tokio::test]
async fn unix_echo_round_trip() {
    let path = temp_socket("echo");
    let listener = UnixListener::bind(&path).unwrap();
    let (hooks, mut echoes, mut disconnects) = echo_hooks();
    let client =
        ReconnectingClient::new(ClientConfig::new(format!("unix:{}", path.display()).parse().unwrap()), hooks).unwrap();
    client.connect().unwrap();
    let (conn, _) = within(listener.accept()).await.unwrap();
    let _server = tokio::spawn(echo_connection(conn));
    assert_eq!(within(echoes.recv()).await.unwrap(), "ping");
    client.shutdown(Duration::from_secs(2)).await.unwrap();
    assert_eq!(within(disconnects.recv()).await.unwrap(), "shutdown");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn read_timeout_fails_a_silent_session() {
    struct Reader;
    impl Hooks for Reader {
        async fn on_session(&mut self, mut stream: LinkStream, _cancel: CancelSignal) -> Result<(), BoxError> {
            let mut buf = [0u8; 16];
            let _read = stream.read(&mut buf).await?;
            Ok(())
        }
        fn on_error(&mut self, error: &Error) -> ErrorAction {
            assert!(error.is_timeout() && error.is_session() && error.is_recoverable(), "{error:?}");
            ErrorAction::Stop
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ClientConfig::new(listener.local_addr().unwrap().into()).read_timeout(Some(Duration::from_millis(50)));
    let client = ReconnectingClient::new(config, Reader).unwrap();
    client.connect().unwrap();
    let _conn = within(listener.accept()).await.unwrap();
    let err = within(client.wait()).await.unwrap_err();
    assert!(err.is_stopped() && err.is_timeout());
}

#[tokio::test]
async fn config_is_validated_at_construction() {
    let remote: Remote = "127.0.0.1:9".parse().unwrap();
    for config in [
        ClientConfig::new(remote.clone()).dial_timeout(Duration::ZERO),
        ClientConfig::new(remote.clone()).handshake_timeout(Duration::ZERO),
        ClientConfig::new(remote.clone()).read_timeout(Some(Duration::ZERO)),
        ClientConfig::new(remote.clone()).write_timeout(Some(Duration::ZERO)),
        ClientConfig::new(remote.clone()).keepalive(Some(Duration::from_millis(500))),
    ] {
        assert!(ReconnectingClient::new(config, Hold).is_err());
    }
    assert!(ReconnectingClient::new(ClientConfig::new(remote).read_timeout(None).keepalive(None), Hold).is_ok());
}

#[test]
fn connect_outside_a_runtime_is_misuse() {
    let client = ReconnectingClient::new(ClientConfig::new("127.0.0.1:9".parse().unwrap()), Hold).unwrap();
    assert!(client.connect().unwrap_err().is_misuse());
}
