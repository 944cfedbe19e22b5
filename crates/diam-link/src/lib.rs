//! Connection lifecycle for any stream protocol over TCP or Unix-domain sockets.
//!
//! This crate knows nothing about the protocol it carries (the Diameter stack in this
//! workspace is one user). It provides:
//!
//! * [`Remote`]: `host:port`, `[v6]:port`, `unix:/path`, `/abs/path` or `*.sock*`, parsed
//!   and validated.
//! * [`ReconnectingClient`]: keeps one connection alive, paced by a [`backoff`] strategy,
//!   driving a protocol through [`Hooks`] (`on_socket`, `on_connect`, `on_session`,
//!   `on_disconnect`, `on_error`), with graceful [`shutdown`](ReconnectingClient::shutdown)
//!   and hot [`reload`](ReconnectingClient::reload).
//! * [`backoff`]: constant, exponential, linear and closure strategies; jitter, attempt
//!   limits and reset-after-stable combinators; any `Iterator<Item = Duration>` works too.
//! * [`events`]: typed lifecycle [`Event`](events::Event)s and an
//!   [`EventDispatcher`](events::EventDispatcher) with ordered, isolated listeners, an
//!   optional bounded executor, per-kind statistics and a broadcast stream.
//! * [`health`]: a sans-IO [`HealthMonitor`](health::HealthMonitor) turning request
//!   outcomes into Unknown / Healthy / Degraded / Unhealthy / Dead, with bounded history
//!   and latency statistics.
//! * [`breaker`]: a sans-IO [`CircuitBreaker`](breaker::CircuitBreaker) (closed, open,
//!   half-open) whose open wait comes from a [`backoff`] strategy.
//! * [`balance`]: the [`Balancer`](balance::Balancer) trait with round-robin,
//!   least-recently-used, random, least-outstanding and efficiency-weighted strategies.
//! * [`failover`]: a sans-IO primary/secondary [`Failover`](failover::Failover) machine
//!   (Primary, Secondary, FailingOver, FailingBack, Unavailable) with manual failover and
//!   auto-failback after a stable period.
//!
//! # A custom protocol in twenty lines
//!
//! Greet the server, then print every line it sends; reconnect whenever it goes away.
//!
//! ```no_run
//! use std::time::Duration;
//! use diam_link::{BoxError, CancelSignal, ClientConfig, Hooks, LinkStream, ReconnectingClient};
//! use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
//!
//! struct Lines;
//!
//! impl Hooks for Lines {
//!     async fn on_connect(&mut self, stream: &mut LinkStream) -> Result<(), BoxError> {
//!         Ok(stream.write_all(b"HELLO\n").await?) // a failed greeting is a failed attempt
//!     }
//!
//!     async fn on_session(&mut self, stream: LinkStream, cancel: CancelSignal) -> Result<(), BoxError> {
//!         let mut lines = BufReader::new(stream).lines();
//!         loop {
//!             tokio::select! {
//!                 () = cancel.cancelled() => return Ok(()),
//!                 line = lines.next_line() => match line? {
//!                     Some(line) => println!("{line}"),
//!                     None => return Ok(()), // the server closed: reconnect
//!                 },
//!             }
//!         }
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = ReconnectingClient::new(ClientConfig::new("127.0.0.1:7000".parse()?), Lines)?;
//! client.connect()?;
//! tokio::signal::ctrl_c().await?;
//! client.shutdown(Duration::from_secs(2)).await?;
//! # Ok(()) }
//! ```
//!
//! To watch the lifecycle, build the client with an
//! [`EventDispatcher`](events::EventDispatcher) through
//! [`ReconnectingClient::builder`]; `examples/unix_echo.rs` prints every event as a JSON
//! line.
//!
//! # Dependencies, and why
//!
//! * `tokio`: runtime, sockets, timers, `watch`/`broadcast` channels.
//! * `tokio-util`: `CancellationToken`, the tree of cancellation behind [`CancelSignal`].
//! * `tokio-stream` and `futures-core`: the broadcast wrapper behind
//!   [`EventStream`](events::EventStream) and the `Stream` trait it implements.
//! * `socket2`: TCP keepalive idle time and interval, which tokio does not expose.
//! * `thiserror`: error boilerplate; `tracing`: logs from the loop and the dispatcher.
//!
//! Not used on purpose: `rand` (jitter needs a few uniform numbers, which the ten-line
//! [`SplitMix64`](backoff::SplitMix64) gives without a dependency tree; the generator is
//! injectable through [`RandomSource`](backoff::RandomSource)), and `metrics` (the
//! dispatcher keeps its own per-kind statistics as plain snapshots; exporting them is
//! the application's choice).
//!
//! Unix-domain sockets need a Unix platform; elsewhere dialing one fails with `Unsupported`.

#![warn(missing_docs)]

pub mod backoff;
pub mod balance;
pub mod breaker;
mod client;
mod error;
pub mod events;
pub mod failover;
pub mod health;
mod remote;
mod stream;

pub use client::{CancelSignal, ClientBuilder, ClientConfig, ErrorAction, Hooks, ReconnectingClient, State};
pub use error::{BoxError, ConfigError, Error};
pub use events::DisconnectReason;
pub use remote::Remote;
pub use stream::{LinkStream, SocketRef};
