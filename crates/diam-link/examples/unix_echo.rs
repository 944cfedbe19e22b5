//! A reconnecting client for a newline-echo server, printing one JSON line per
//! lifecycle event on stdout.
//!
//! ```text
//! cargo run -p diam-link --example unix_echo -- unix:/tmp/x.sock          # the client
//! cargo run -p diam-link --example unix_echo -- --serve unix:/tmp/x.sock  # an echo server
//! ```
//!
//! The remote is any [`Remote`] string (`unix:/path`, `/path`, `*.sock`, `host:port`,
//! `[v6]:port`). Start the client first: it prints `error` lines with growing, jittered
//! delays (exponential 50 ms → 1 s, equal jitter) until the server appears, then
//! `connected`; it sends a line every 100 ms; when the server dies it prints
//! `disconnected` and, once the server is back, `reconnected`. It runs until SIGINT.
//!
//! Line format: `{"ts_us":…, "event":…, "attempt":N, "delay_ms":N, "remote":"…"}` with
//! `ts_us` the event's wall-clock time in microseconds since the Unix epoch, `attempt`
//! the connection attempt the line is about (counted since the last connection; 0 when
//! none is in flight, as on `disconnected`), and `delay_ms` the pause before the next
//! attempt (only when the client is about to wait). Events: `connecting`, `connected`,
//! `reconnected`, `disconnected` (with `reason`), `error` (with `error`), `waiting`
//! (a pause after a disconnection), `stopped`.

use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use diam_link::backoff::{BackoffExt, Exponential, Jitter};
use diam_link::events::{Event, EventData, EventDispatcher};
use diam_link::{BoxError, CancelSignal, ClientConfig, Hooks, LinkStream, ReconnectingClient, Remote};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The protocol: a line out every 100 ms, echoes read back and discarded.
struct Pinger {
    sent: u64,
}

impl Hooks for Pinger {
    async fn on_session(&mut self, stream: LinkStream, cancel: CancelSignal) -> Result<(), BoxError> {
        let (read, mut write) = tokio::io::split(stream);
        let mut echoes = BufReader::new(read).lines();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    self.sent += 1;
                    write.write_all(format!("ping {}\n", self.sent).as_bytes()).await?;
                }
                echo = echoes.next_line() => if echo?.is_none() {
                    return Ok(()); // the server closed
                },
            }
        }
    }
}

/// Turns events into lines. An `Error` is held until the `ReconnectScheduled` that
/// follows it, so the error line carries the delay.
#[derive(Default)]
struct Printer {
    attempt: u32,
    pending_error: Option<Value>,
}

fn ts_us(event: &Event) -> u128 {
    event.timestamp().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()
}

fn line(event: &Event, name: &str, attempt: u32) -> Value {
    let remote = event.remote().map(ToString::to_string);
    json!({ "ts_us": ts_us(event), "event": name, "attempt": attempt, "remote": remote })
}

impl Printer {
    fn on_event(&mut self, event: &Event) {
        if !matches!(event.data(), EventData::ReconnectScheduled { .. }) {
            self.flush();
        }
        let out = match event.data() {
            EventData::ConnectionCreated => {
                self.attempt += 1;
                line(event, "connecting", self.attempt)
            }
            EventData::Connected { first: true } => line(event, "connected", self.attempt),
            // The `Reconnected` event that follows says it better.
            EventData::Connected { first: false } => return,
            EventData::Reconnected { attempt } => line(event, "reconnected", *attempt),
            EventData::Disconnected { reason } => {
                self.attempt = 0;
                let mut out = line(event, "disconnected", 0);
                out["reason"] = json!(reason.as_str());
                out
            }
            EventData::Error { error } => {
                let mut out = line(event, "error", self.attempt);
                out["error"] = json!(error_chain(error));
                self.pending_error = Some(out);
                return;
            }
            EventData::ReconnectScheduled { delay, .. } => {
                let mut out = self.pending_error.take().unwrap_or_else(|| line(event, "waiting", self.attempt));
                out["delay_ms"] = json!(delay.as_millis());
                out
            }
            other => line(event, other.kind().as_str(), self.attempt),
        };
        println!("{out}");
    }

    fn flush(&mut self) {
        if let Some(out) = self.pending_error.take() {
            println!("{out}");
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

async fn client(remote: Remote) -> Result<(), BoxError> {
    let backoff = Exponential::new(Duration::from_millis(50), Duration::from_secs(1), 2.0)?.jitter(Jitter::Equal);
    let config = ClientConfig::new(remote).dial_timeout(Duration::from_secs(1)).backoff(backoff);

    let events = EventDispatcher::new();
    let printer = Mutex::new(Printer::default());
    events.subscribe_all(move |event: &Event| printer.lock().unwrap().on_event(event)).detach();

    let client = ReconnectingClient::builder(config).events(events).build(Pinger { sent: 0 })?;
    client.connect()?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal?,
        () = client.done() => {}
    }
    let outcome = client.shutdown(Duration::from_secs(2)).await;
    let mut stopped = json!({ "ts_us": UNIX_EPOCH.elapsed().unwrap_or_default().as_micros(), "event": "stopped" });
    if let Err(err) = &outcome {
        stopped["error"] = json!(error_chain(err));
    }
    println!("{stopped}");
    Ok(outcome?)
}

/// A newline-echo server on `remote`, for trying the client by hand.
async fn serve(remote: Remote) -> Result<(), BoxError> {
    async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(stream: S) {
        let (read, mut write) = tokio::io::split(stream);
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if write.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                break;
            }
        }
    }
    let accept = async {
        match &remote {
            Remote::Unix { path, .. } => {
                let _ = std::fs::remove_file(path);
                let listener = tokio::net::UnixListener::bind(path)?;
                loop {
                    tokio::spawn(echo(listener.accept().await?.0));
                }
            }
            _ => {
                let (host, port) = (remote.host().unwrap_or("127.0.0.1"), remote.port().unwrap_or(0));
                let listener = tokio::net::TcpListener::bind((host, port)).await?;
                loop {
                    tokio::spawn(echo(listener.accept().await?.0));
                }
            }
        }
    };
    let result: Result<(), std::io::Error> = tokio::select! {
        r = accept => r,
        r = tokio::signal::ctrl_c() => r,
    };
    if let Some(path) = remote.path() {
        let _ = std::fs::remove_file(path);
    }
    Ok(result?)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (serving, target) = match args.as_slice() {
        [flag, target] if flag == "--serve" => (true, target),
        [target] if !target.starts_with("--") => (false, target),
        _ => {
            eprintln!("usage: unix_echo [--serve] REMOTE   (REMOTE: unix:/path, /path, *.sock, host:port, [v6]:port)");
            std::process::exit(2);
        }
    };
    let remote: Remote = match target.parse() {
        Ok(remote) => remote,
        Err(err) => {
            eprintln!("unix_echo: {err}");
            std::process::exit(2);
        }
    };
    let result = if serving { serve(remote).await } else { client(remote).await };
    if let Err(err) = result {
        eprintln!("unix_echo: {}", error_chain(&*err));
        std::process::exit(1);
    }
}
