//! Peer health from request outcomes: a sans-IO [`HealthMonitor`].
//!
//! Feed it every outcome that says something about a peer (for Diameter: watchdog round
//! trips and live answers) with [`record_success`](HealthMonitor::record_success) and
//! [`record_failure`](HealthMonitor::record_failure). It keeps a bounded history, derives
//! a [`HealthStatus`] and returns a [`HealthChange`] on every transition. It never reads
//! the clock: every call takes `now`, so tests drive it step by step.
//!
//! The status rules, with the [`HealthConfig`] thresholds:
//!
//! * `failure_threshold` consecutive failures make the peer [`Unhealthy`](HealthStatus::Unhealthy),
//!   `dead_threshold` make it [`Dead`](HealthStatus::Dead). Fewer failures leave the status as it is.
//! * Leaving `Unhealthy` or `Dead` takes `recovery_threshold` consecutive successes.
//! * Otherwise a success sets the status from the latency EWMA: below `degraded_latency`
//!   [`Healthy`](HealthStatus::Healthy), below `unhealthy_latency` [`Degraded`](HealthStatus::Degraded),
//!   else `Unhealthy`.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use diam_link::health::{ErrorCategory, HealthConfig, HealthMonitor, HealthStatus};
//!
//! let mut monitor = HealthMonitor::new(HealthConfig::default().failure_threshold(2))?;
//! let t0 = Instant::now();
//! let change = monitor.record_success(Duration::from_millis(20), t0).unwrap();
//! assert_eq!((change.from(), change.to()), (HealthStatus::Unknown, HealthStatus::Healthy));
//! assert!(monitor.record_failure(ErrorCategory::Timeout, t0).is_none());
//! let change = monitor.record_failure(ErrorCategory::Timeout, t0).unwrap();
//! assert_eq!(change.to(), HealthStatus::Unhealthy);
//! # Ok::<(), diam_link::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::events::{CustomEvent, EventData};

/// How healthy a peer looks, from best to worst after `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum HealthStatus {
    /// Nothing recorded yet, or not enough to judge.
    Unknown,
    /// Answers arrive, fast enough.
    Healthy,
    /// Answers arrive, but slower than the degraded latency threshold.
    Degraded,
    /// Too many consecutive failures, or answers slower than the unhealthy latency threshold.
    Unhealthy,
    /// So many consecutive failures that the peer should not be used at all.
    Dead,
}

impl HealthStatus {
    /// A short stable name: `unknown`, `healthy`, `degraded`, `unhealthy` or `dead`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
            Self::Dead => "dead",
        }
    }

    /// `true` for `Healthy` and `Degraded`: the peer may carry traffic.
    pub const fn is_usable(self) -> bool {
        matches!(self, Self::Healthy | Self::Degraded)
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request or check failed, coarse enough to be protocol-agnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// No answer in time.
    Timeout,
    /// The peer refused the connection.
    Refused,
    /// The connection was reset or closed under the request.
    Reset,
    /// The peer broke the protocol (malformed message, unexpected command).
    Protocol,
    /// The peer answered with an application-level error code (for Diameter, a
    /// Result-Code such as 3002).
    Application(u32),
}

impl ErrorCategory {
    /// A short stable name: `timeout`, `refused`, `reset`, `protocol` or `application`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
            Self::Application(_) => "application",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Application(code) => write!(f, "application({code})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// Thresholds for a [`HealthMonitor`], validated by [`HealthMonitor::new`].
///
/// RFC 3539 §3.4.1 has the watchdog call a peer SUSPECT after one unanswered DWR and
/// down after a second; these thresholds also count live traffic, which fails more
/// often for reasons that are not the peer's, so the defaults are more patient.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct HealthConfig {
    failure_threshold: u32,
    dead_threshold: u32,
    recovery_threshold: u32,
    degraded_latency: Duration,
    unhealthy_latency: Duration,
    history: usize,
    ewma_alpha: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            dead_threshold: 10,
            recovery_threshold: 2,
            degraded_latency: Duration::from_millis(500),
            unhealthy_latency: Duration::from_secs(2),
            history: 100,
            ewma_alpha: 0.2,
        }
    }
}

impl HealthConfig {
    /// Consecutive failures that make a peer `Unhealthy`. Default 3; at least 1.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Consecutive failures that make a peer `Dead`. Default 10; at least `failure_threshold`.
    pub fn dead_threshold(mut self, failures: u32) -> Self {
        self.dead_threshold = failures;
        self
    }

    /// Consecutive successes that bring a peer back from `Unhealthy` or `Dead`. Default 2; at least 1.
    pub fn recovery_threshold(mut self, successes: u32) -> Self {
        self.recovery_threshold = successes;
        self
    }

    /// Latency EWMA at or above which a peer is `Degraded`. Default 500 ms; not zero.
    pub fn degraded_latency(mut self, latency: Duration) -> Self {
        self.degraded_latency = latency;
        self
    }

    /// Latency EWMA at or above which a peer is `Unhealthy`. Default 2 s; at least `degraded_latency`.
    pub fn unhealthy_latency(mut self, latency: Duration) -> Self {
        self.unhealthy_latency = latency;
        self
    }

    /// How many outcomes the history keeps for the rate and latency statistics.
    /// Default 100; from 1 to 65 536.
    pub fn history(mut self, outcomes: usize) -> Self {
        self.history = outcomes;
        self
    }

    /// Weight of the newest latency in the EWMA. Default 0.2; in `(0, 1]`.
    pub fn ewma_alpha(mut self, alpha: f64) -> Self {
        self.ewma_alpha = alpha;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::value("health failure threshold", "must be at least 1"));
        }
        if self.dead_threshold < self.failure_threshold {
            return Err(ConfigError::value("health dead threshold", "must be at least the failure threshold"));
        }
        if self.recovery_threshold == 0 {
            return Err(ConfigError::value("health recovery threshold", "must be at least 1"));
        }
        if self.degraded_latency.is_zero() {
            return Err(ConfigError::value("health degraded latency", "must be greater than zero"));
        }
        if self.unhealthy_latency < self.degraded_latency {
            return Err(ConfigError::value("health unhealthy latency", "must be at least the degraded latency"));
        }
        if !(1..=65_536).contains(&self.history) {
            return Err(ConfigError::value("health history", "must be between 1 and 65536"));
        }
        if !(self.ewma_alpha > 0.0 && self.ewma_alpha <= 1.0) {
            return Err(ConfigError::value("health ewma alpha", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// One recorded outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Answered after the given latency.
    Success(Duration),
    /// Failed.
    Failure(ErrorCategory),
}

/// An [`Outcome`] in 8 bytes instead of 16 (a monitor per peer keeps a
/// history of them): a success is its latency in nanoseconds (saturating
/// at 2^63 − 1, about 292 years); a failure has the top bit set, its
/// category in bits 32..40 and an application Result-Code in the low 32.
#[derive(Debug, Clone, Copy)]
struct Packed(u64);

impl Packed {
    const FAILURE: u64 = 1 << 63;

    fn pack(o: Outcome) -> Packed {
        match o {
            Outcome::Success(d) => Packed(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).min(Self::FAILURE - 1)),
            Outcome::Failure(c) => {
                let (kind, code) = match c {
                    ErrorCategory::Timeout => (0, 0),
                    ErrorCategory::Refused => (1, 0),
                    ErrorCategory::Reset => (2, 0),
                    ErrorCategory::Protocol => (3, 0),
                    ErrorCategory::Application(code) => (4, code),
                };
                Packed(Self::FAILURE | (kind << 32) | u64::from(code))
            }
        }
    }

    fn latency(self) -> Option<Duration> {
        (self.0 & Self::FAILURE == 0).then(|| Duration::from_nanos(self.0))
    }

    fn unpack(self) -> Outcome {
        match self.latency() {
            Some(d) => Outcome::Success(d),
            None => Outcome::Failure(match (self.0 >> 32) & 0xff {
                0 => ErrorCategory::Timeout,
                1 => ErrorCategory::Refused,
                2 => ErrorCategory::Reset,
                3 => ErrorCategory::Protocol,
                _ => ErrorCategory::Application(self.0 as u32),
            }),
        }
    }
}

/// A status transition, returned by the `record_*` call that caused it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthChange {
    from: HealthStatus,
    to: HealthStatus,
    at: Instant,
    cause: Outcome,
}

impl HealthChange {
    /// The name under which [`to_event`](Self::to_event) wraps a change.
    pub const EVENT_NAME: &'static str = "health";

    /// The status before.
    pub const fn from(&self) -> HealthStatus {
        self.from
    }

    /// The status after.
    pub const fn to(&self) -> HealthStatus {
        self.to
    }

    /// The `now` of the call that caused the change.
    pub const fn at(&self) -> Instant {
        self.at
    }

    /// The outcome that caused the change.
    pub const fn cause(&self) -> Outcome {
        self.cause
    }

    /// The change as a [`CustomEvent`] named [`EVENT_NAME`](Self::EVENT_NAME), for an
    /// [`EventDispatcher`](crate::events::EventDispatcher).
    pub fn to_event(&self) -> EventData {
        EventData::Custom(CustomEvent::new(Self::EVENT_NAME, *self))
    }
}

/// A snapshot of a monitor's statistics; rates and latencies cover the bounded history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HealthStats {
    /// The current status.
    pub status: HealthStatus,
    /// Successes ever recorded.
    pub total_successes: u64,
    /// Failures ever recorded.
    pub total_failures: u64,
    /// Failures in a row, up to now.
    pub consecutive_failures: u32,
    /// Successes in a row, up to now.
    pub consecutive_successes: u32,
    /// Successes over outcomes in the history; `None` when it is empty.
    pub success_rate: Option<f64>,
    /// Mean latency of the successes in the history.
    pub avg_latency: Option<Duration>,
    /// Largest latency of the successes in the history.
    pub max_latency: Option<Duration>,
    /// Exponentially weighted moving average of every latency recorded.
    pub ewma_latency: Option<Duration>,
    /// The most recent failure and when it happened.
    pub last_failure: Option<(ErrorCategory, Instant)>,
}

/// Derives a [`HealthStatus`] from recorded outcomes; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    config: HealthConfig,
    status: HealthStatus,
    since: Option<Instant>,
    history: VecDeque<Packed>,
    total_successes: u64,
    total_failures: u64,
    consecutive_failures: u32,
    consecutive_successes: u32,
    ewma_nanos: Option<f64>,
    last_failure: Option<(ErrorCategory, Instant)>,
    /// Set by a failure streak; cleared only by `recovery_threshold` successes in a row.
    tripped: bool,
}

impl HealthMonitor {
    /// A monitor in status `Unknown`; rejects an invalid `config`.
    pub fn new(config: HealthConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            history: VecDeque::with_capacity(config.history),
            config,
            status: HealthStatus::Unknown,
            since: None,
            total_successes: 0,
            total_failures: 0,
            consecutive_failures: 0,
            consecutive_successes: 0,
            ewma_nanos: None,
            last_failure: None,
            tripped: false,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The current status.
    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// When the current status began; `None` while it is still the initial `Unknown`.
    pub fn status_since(&self) -> Option<Instant> {
        self.since
    }

    /// Records an answer that took `latency`; returns the transition it caused, if any.
    pub fn record_success(&mut self, latency: Duration, now: Instant) -> Option<HealthChange> {
        let outcome = Outcome::Success(latency);
        self.push(outcome);
        self.total_successes += 1;
        self.consecutive_failures = 0;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        let sample = latency.as_nanos() as f64;
        let alpha = self.config.ewma_alpha;
        self.ewma_nanos = Some(match self.ewma_nanos {
            None => sample,
            Some(prev) => alpha * sample + (1.0 - alpha) * prev,
        });
        let next = if self.tripped && self.consecutive_successes < self.config.recovery_threshold {
            self.status
        } else {
            self.tripped = false;
            self.latency_status()
        };
        self.transition(next, outcome, now)
    }

    /// Records a failure; returns the transition it caused, if any.
    pub fn record_failure(&mut self, category: ErrorCategory, now: Instant) -> Option<HealthChange> {
        let outcome = Outcome::Failure(category);
        self.push(outcome);
        self.total_failures += 1;
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_failure = Some((category, now));
        let next = if self.consecutive_failures >= self.config.dead_threshold {
            self.tripped = true;
            HealthStatus::Dead
        } else if self.consecutive_failures >= self.config.failure_threshold {
            self.tripped = true;
            // Never improves a Dead peer: that takes successes.
            self.status.max(HealthStatus::Unhealthy)
        } else {
            self.status
        };
        self.transition(next, outcome, now)
    }

    /// Records `outcome`; see [`record_success`](Self::record_success) and
    /// [`record_failure`](Self::record_failure).
    pub fn record(&mut self, outcome: Outcome, now: Instant) -> Option<HealthChange> {
        match outcome {
            Outcome::Success(latency) => self.record_success(latency, now),
            Outcome::Failure(category) => self.record_failure(category, now),
        }
    }

    /// The outcomes in the history, oldest first.
    pub fn history(&self) -> impl ExactSizeIterator<Item = Outcome> + '_ {
        self.history.iter().map(|p| p.unpack())
    }

    /// The mean latency of the successes in the history.
    pub fn avg_latency(&self) -> Option<Duration> {
        let (sum, n) = self.latencies().fold((0u128, 0u32), |(sum, n), l| (sum + l.as_nanos(), n + 1));
        (n > 0).then(|| Duration::from_nanos((sum / u128::from(n)) as u64))
    }

    /// The exponentially weighted moving average of every latency recorded.
    pub fn ewma_latency(&self) -> Option<Duration> {
        self.ewma_nanos.map(|n| Duration::from_nanos(n.round() as u64))
    }

    /// Successes over outcomes in the history; `None` when it is empty.
    pub fn success_rate(&self) -> Option<f64> {
        let successes = self.latencies().count();
        (!self.history.is_empty()).then(|| successes as f64 / self.history.len() as f64)
    }

    /// A snapshot of every statistic.
    pub fn stats(&self) -> HealthStats {
        HealthStats {
            status: self.status,
            total_successes: self.total_successes,
            total_failures: self.total_failures,
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
            success_rate: self.success_rate(),
            avg_latency: self.avg_latency(),
            max_latency: self.latencies().max(),
            ewma_latency: self.ewma_latency(),
            last_failure: self.last_failure,
        }
    }

    fn latencies(&self) -> impl Iterator<Item = Duration> + '_ {
        self.history.iter().filter_map(|p| p.latency())
    }

    fn push(&mut self, outcome: Outcome) {
        if self.history.len() == self.config.history {
            self.history.pop_front();
        }
        self.history.push_back(Packed::pack(outcome));
    }

    fn latency_status(&self) -> HealthStatus {
        let ewma = self.ewma_latency().unwrap_or_default();
        if ewma >= self.config.unhealthy_latency {
            HealthStatus::Unhealthy
        } else if ewma >= self.config.degraded_latency {
            HealthStatus::Degraded
        } else {
            HealthStatus::Healthy
        }
    }

    fn transition(&mut self, next: HealthStatus, cause: Outcome, now: Instant) -> Option<HealthChange> {
        if next == self.status {
            return None;
        }
        let change = HealthChange { from: self.status, to: next, at: now, cause };
        self.status = next;
        self.since = Some(now);
        Some(change)
    }
}

#[cfg(test)]
mod packed_tests {
    use super::*;

    #[test]
    fn outcomes_survive_packing() {
        let all = [
            Outcome::Success(Duration::ZERO),
            Outcome::Success(Duration::from_nanos(1)),
            Outcome::Success(Duration::from_micros(1234)),
            Outcome::Success(Duration::from_secs(3600)),
            Outcome::Failure(ErrorCategory::Timeout),
            Outcome::Failure(ErrorCategory::Refused),
            Outcome::Failure(ErrorCategory::Reset),
            Outcome::Failure(ErrorCategory::Protocol),
            Outcome::Failure(ErrorCategory::Application(0)),
            Outcome::Failure(ErrorCategory::Application(3002)),
            Outcome::Failure(ErrorCategory::Application(u32::MAX)),
        ];
        for o in all {
            assert_eq!(Packed::pack(o).unpack(), o);
        }
        assert_eq!(std::mem::size_of::<Packed>(), 8);
        // A latency beyond 2^63 ns saturates and stays a success.
        let huge = Packed::pack(Outcome::Success(Duration::MAX));
        assert!(huge.latency().is_some());
    }
}
