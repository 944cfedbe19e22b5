//! A sans-IO circuit breaker: closed, open, half-open.
//!
//! [`CircuitBreaker`] guards one peer. While **closed** every request is allowed and
//! every outcome is counted; it **opens** after `consecutive_failures` failures in a row,
//! or when at least `min_requests` outcomes in the rolling `window` fail at
//! `failure_rate` or more. While open nothing is allowed; the open wait comes from a
//! [`Backoff`], so a peer that keeps failing its probes waits longer each time. Once the
//! wait has elapsed the breaker is **half-open**: up to `half_open_probes` requests are
//! let through, and when that many have succeeded it closes again (resetting the
//! backoff); a single failed probe opens it again.
//!
//! The breaker never reads the clock: [`allow`](CircuitBreaker::allow),
//! [`on_success`](CircuitBreaker::on_success) and [`on_failure`](CircuitBreaker::on_failure)
//! take `now`. Transitions queue up as [`BreakerEvent`]s for
//! [`poll_event`](CircuitBreaker::poll_event), and [`poll_timeout`](CircuitBreaker::poll_timeout)
//! tells when an open breaker will let a probe through.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use diam_link::backoff::Constant;
//! use diam_link::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
//!
//! let config = BreakerConfig::default().consecutive_failures(2);
//! let mut breaker = CircuitBreaker::new(config, Constant::new(Duration::from_secs(5)))?;
//! let t0 = Instant::now();
//! assert!(breaker.allow(t0));
//! breaker.on_failure(t0);
//! breaker.on_failure(t0);
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(!breaker.allow(t0 + Duration::from_secs(4)));
//! assert!(breaker.allow(t0 + Duration::from_secs(5))); // the probe
//! breaker.on_success(t0 + Duration::from_secs(5));
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! # Ok::<(), diam_link::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::error::ConfigError;
use crate::events::{CustomEvent, EventData};

/// The breaker's state, without its bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Requests flow; outcomes are counted.
    Closed,
    /// Requests are refused until the open wait elapses.
    Open,
    /// A bounded number of probes may go through.
    HalfOpen,
}

impl BreakerState {
    /// A short stable name: `closed`, `open` or `half_open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// Closed → open: this many failures in a row.
    ConsecutiveFailures(u32),
    /// Closed → open: the failure rate over the window reached the threshold.
    FailureRate {
        /// Failures in the window.
        failures: u32,
        /// Outcomes in the window.
        requests: u32,
    },
    /// Half-open → open: a probe failed.
    ProbeFailed,
    /// Open → half-open: the open wait elapsed.
    WaitElapsed,
    /// Half-open → closed: enough probes succeeded.
    ProbesSucceeded,
    /// Any → closed: [`CircuitBreaker::reset`].
    Reset,
    /// Any → open: [`CircuitBreaker::trip`].
    Tripped,
}

/// A state transition, queued for [`CircuitBreaker::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerEvent {
    from: BreakerState,
    to: BreakerState,
    at: Instant,
    reason: TransitionReason,
    open_for: Option<Duration>,
}

impl BreakerEvent {
    /// The name under which [`to_event`](Self::to_event) wraps a transition.
    pub const EVENT_NAME: &'static str = "circuit_breaker";

    /// The state before.
    pub const fn from(&self) -> BreakerState {
        self.from
    }

    /// The state after.
    pub const fn to(&self) -> BreakerState {
        self.to
    }

    /// The `now` of the call that caused the transition.
    pub const fn at(&self) -> Instant {
        self.at
    }

    /// Why it happened.
    pub const fn reason(&self) -> TransitionReason {
        self.reason
    }

    /// For a transition to open, how long the breaker stays open.
    pub const fn open_for(&self) -> Option<Duration> {
        self.open_for
    }

    /// The transition as a [`CustomEvent`] named [`EVENT_NAME`](Self::EVENT_NAME), for an
    /// [`EventDispatcher`](crate::events::EventDispatcher).
    pub fn to_event(&self) -> EventData {
        EventData::Custom(CustomEvent::new(Self::EVENT_NAME, *self))
    }
}

/// Trip and probe settings for a [`CircuitBreaker`], validated by [`CircuitBreaker::new`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct BreakerConfig {
    consecutive_failures: u32,
    failure_rate: f64,
    window: Duration,
    min_requests: u32,
    half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_requests: 20,
            half_open_probes: 1,
        }
    }
}

impl BreakerConfig {
    /// Failures in a row that open the breaker. Default 5; at least 1.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = failures;
        self
    }

    /// The failure rate over the window that opens the breaker. Default 0.5; in `(0, 1]`.
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }

    /// The rolling window for the failure rate. Default 30 s (the Diameter watchdog's
    /// Tw, RFC 3539 §3.4.1), kept in ten buckets; at least 10 ms.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The fewest outcomes in the window for the rate to count. Default 20; at least 1.
    pub fn min_requests(mut self, requests: u32) -> Self {
        self.min_requests = requests;
        self
    }

    /// Probes allowed while half-open, all of which must succeed to close. Default 1; at least 1.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.consecutive_failures == 0 {
            return Err(ConfigError::value("breaker consecutive failures", "must be at least 1"));
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err(ConfigError::value("breaker failure rate", "must be in (0, 1]"));
        }
        if self.window < Duration::from_millis(10) {
            return Err(ConfigError::value("breaker window", "must be at least 10 ms"));
        }
        if self.min_requests == 0 {
            return Err(ConfigError::value("breaker min requests", "must be at least 1"));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::value("breaker half-open probes", "must be at least 1"));
        }
        Ok(())
    }
}

const BUCKETS: u32 = 10;
const MAX_EVENTS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    successes: u32,
    failures: u32,
}

#[derive(Debug, Clone, Copy)]
enum Inner {
    Closed { consecutive: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// A circuit breaker for one peer; see the [module docs](self).
///
/// `B` is the open-wait strategy: each trip takes the next delay, and closing resets it.
/// When the strategy gives up (`None`), the last delay is used again, so the breaker
/// never stays open for good on its own.
pub struct CircuitBreaker<B = Box<dyn Backoff + Send>> {
    config: BreakerConfig,
    backoff: B,
    last_wait: Duration,
    state: Inner,
    buckets: VecDeque<Bucket>,
    events: VecDeque<BreakerEvent>,
}

impl<B> fmt::Debug for CircuitBreaker<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("last_wait", &self.last_wait)
            .finish_non_exhaustive()
    }
}

impl<B: Backoff> CircuitBreaker<B> {
    /// A closed breaker; rejects an invalid `config`.
    pub fn new(config: BreakerConfig, backoff: B) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            backoff,
            last_wait: Duration::ZERO,
            state: Inner::Closed { consecutive: 0 },
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
            events: VecDeque::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The current state. An open breaker whose wait has elapsed still reports `Open`
    /// until the next [`allow`](Self::allow) moves it to half-open.
    pub fn state(&self) -> BreakerState {
        match self.state {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a request may go to the peer now. While half-open a `true` reserves one of
    /// the probes: report its outcome with [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure).
    #[must_use = "a request must not be sent when the breaker refuses it"]
    pub fn allow(&mut self, now: Instant) -> bool {
        if let Inner::Open { until } = self.state {
            if now < until {
                return false;
            }
            self.set(Inner::HalfOpen { in_flight: 0, successes: 0 }, TransitionReason::WaitElapsed, now, None);
        }
        match &mut self.state {
            Inner::Closed { .. } => true,
            Inner::Open { .. } => false,
            Inner::HalfOpen { in_flight, successes } => {
                if *in_flight + *successes < self.config.half_open_probes {
                    *in_flight += 1;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Whether [`allow`](Self::allow) would return `true`, without reserving a probe or
    /// changing state: for filtering candidates before choosing one.
    pub fn is_available(&self, now: Instant) -> bool {
        match self.state {
            Inner::Closed { .. } => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { in_flight, successes } => in_flight + successes < self.config.half_open_probes,
        }
    }

    /// A request allowed earlier succeeded.
    pub fn on_success(&mut self, now: Instant) {
        match &mut self.state {
            Inner::Closed { consecutive } => {
                *consecutive = 0;
                self.count(now, true);
            }
            Inner::Open { .. } => {} // a request from before the trip: stale news
            Inner::HalfOpen { in_flight, successes } => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= self.config.half_open_probes {
                    self.close(TransitionReason::ProbesSucceeded, now);
                }
            }
        }
    }

    /// A request allowed earlier failed.
    pub fn on_failure(&mut self, now: Instant) {
        match &mut self.state {
            Inner::Closed { consecutive } => {
                *consecutive += 1;
                let consecutive = *consecutive;
                let (failures, requests) = self.count(now, false);
                if consecutive >= self.config.consecutive_failures {
                    self.open(TransitionReason::ConsecutiveFailures(consecutive), now);
                } else if requests >= self.config.min_requests
                    && f64::from(failures) >= self.config.failure_rate * f64::from(requests)
                {
                    self.open(TransitionReason::FailureRate { failures, requests }, now);
                }
            }
            Inner::Open { .. } => {}
            Inner::HalfOpen { .. } => self.open(TransitionReason::ProbeFailed, now),
        }
    }

    /// A request allowed earlier ended without an outcome (its caller gave up on it, or
    /// it was never sent). While half-open this frees the probe it reserved, so another
    /// request can probe; otherwise it changes nothing.
    pub fn on_abandoned(&mut self) {
        if let Inner::HalfOpen { in_flight, .. } = &mut self.state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    /// Opens the breaker now, whatever its state (e.g. the connection to the peer was lost).
    pub fn trip(&mut self, now: Instant) {
        if !matches!(self.state, Inner::Open { .. }) {
            self.open(TransitionReason::Tripped, now);
        }
    }

    /// Closes the breaker now, clearing the window and resetting the backoff.
    pub fn reset(&mut self, now: Instant) {
        self.close(TransitionReason::Reset, now);
    }

    /// Failures and outcomes in the rolling window ending at `now`.
    pub fn window_counts(&self, now: Instant) -> (u32, u32) {
        self.buckets
            .iter()
            .filter(|b| now.saturating_duration_since(b.start) < self.config.window)
            .fold((0, 0), |(f, n), b| (f + b.failures, n + b.failures + b.successes))
    }

    /// When an open breaker will let a probe through; `None` unless open.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    /// The oldest transition not yet polled. At most 16 are kept; older ones are dropped.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<BreakerEvent> {
        self.events.pop_front()
    }

    fn count(&mut self, now: Instant, success: bool) -> (u32, u32) {
        let width = self.config.window / BUCKETS;
        let window = self.config.window;
        while self.buckets.front().is_some_and(|b| now.saturating_duration_since(b.start) >= window) {
            self.buckets.pop_front();
        }
        let current = match self.buckets.back_mut() {
            Some(b) if now.saturating_duration_since(b.start) < width => b,
            _ => {
                self.buckets.push_back(Bucket { start: now, successes: 0, failures: 0 });
                self.buckets.back_mut().expect("just pushed")
            }
        };
        if success {
            current.successes += 1;
        } else {
            current.failures += 1;
        }
        self.window_counts(now)
    }

    fn open(&mut self, reason: TransitionReason, now: Instant) {
        if let Some(wait) = self.backoff.next_delay() {
            self.last_wait = wait;
        }
        let wait = self.last_wait;
        self.set(Inner::Open { until: now + wait }, reason, now, Some(wait));
    }

    fn close(&mut self, reason: TransitionReason, now: Instant) {
        self.backoff.reset();
        self.buckets.clear();
        self.set(Inner::Closed { consecutive: 0 }, reason, now, None);
    }

    fn set(&mut self, state: Inner, reason: TransitionReason, now: Instant, open_for: Option<Duration>) {
        let from = self.state();
        self.state = state;
        let to = self.state();
        if from == to {
            return;
        }
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(BreakerEvent { from, to, at: now, reason, open_for });
    }
}
