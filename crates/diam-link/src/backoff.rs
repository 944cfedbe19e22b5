//! How long to wait before the next connection attempt.
//!
//! One object-safe trait, [`Backoff`], and a handful of strategies and combinators:
//!
//! | strategy | delays |
//! |---|---|
//! | [`Constant`] | `d, d, d, …` |
//! | [`Exponential`] | `initial, initial·m, initial·m², …` capped at `max` |
//! | [`Linear`] | `initial, initial+step, …` capped at `max` |
//! | [`FromFn`] | whatever a closure returns for attempt `0, 1, 2, …` |
//! | [`FailFast`] | none: the first failure ends the client with an error ("immediate error") |
//! | [`NoReconnect`] | none: connect once, finish when the session ends ("do not reconnect") |
//! | any `Iterator<Item = Duration>` | the iterator's items (it cannot be reset) |
//!
//! Combinators, from [`BackoffExt`]: [`with_jitter`](BackoffExt::with_jitter) (full,
//! equal or decorrelated, with an injectable [`RandomSource`]), [`max_attempts`](BackoffExt::max_attempts)
//! and [`reset_after`](BackoffExt::reset_after) (start over only once a connection has
//! stayed up for a while, so a peer that accepts and immediately drops us is still paced).
//!
//! Constructors reject nonsense with a [`ConfigError`] and every builder and combinator
//! is `#[must_use]`: a jitter that is built and then dropped by accident would silently
//! leave every client retrying in lockstep.
//!
//! ```
//! use std::time::Duration;
//! use diam_link::backoff::{Backoff, BackoffExt, Exponential, Jitter, SplitMix64};
//!
//! let mut backoff = Exponential::new(Duration::from_millis(50), Duration::from_secs(1), 2.0)?
//!     .with_jitter(Jitter::Equal, SplitMix64::new(1))
//!     .max_attempts(10);
//! let first = backoff.next_delay().unwrap();
//! assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50));
//! # Ok::<(), diam_link::ConfigError>(())
//! ```

mod rng;

use std::fmt;
use std::time::Duration;

pub use rng::{RandomSource, SplitMix64};

use crate::error::ConfigError;

/// A reconnection pacing strategy.
///
/// The client asks [`next_delay`](Backoff::next_delay) after every failed attempt and
/// after every session that ended; `None` means give up, and
/// [`exhausted`](Backoff::exhausted) says whether giving up is a failure. After a
/// session the client reports how long the connection lasted through
/// [`session_ended`](Backoff::session_ended), which by default starts the sequence over.
///
/// The trait is object safe (the client stores a `Box<dyn Backoff + Send>`); the
/// combinators live on [`BackoffExt`]. Every `Iterator<Item = Duration>` is a `Backoff`
/// whose `reset` does nothing:
///
/// ```
/// use std::time::Duration;
/// use diam_link::backoff::Backoff;
///
/// let mut three_tries = [10, 20, 40].map(Duration::from_millis).into_iter();
/// assert_eq!(three_tries.next_delay(), Some(Duration::from_millis(10)));
/// ```
pub trait Backoff {
    /// The delay before the next attempt, or `None` to stop reconnecting.
    fn next_delay(&mut self) -> Option<Duration>;

    /// Starts the sequence over, as if no attempt had failed yet.
    fn reset(&mut self);

    /// A connection that had stayed up for `uptime` has closed. Returns whether the
    /// strategy started over. The default resets unconditionally; see
    /// [`BackoffExt::reset_after`] for a strategy that insists on a stable connection.
    fn session_ended(&mut self, uptime: Duration) -> bool {
        let _ = uptime;
        self.reset();
        true
    }

    /// What giving up (`next_delay` returning `None`) means for the client.
    fn exhausted(&self) -> Exhausted {
        Exhausted::Fail
    }
}

/// What the client does when its [`Backoff`] returns `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exhausted {
    /// Stop with an error for which [`is_exhausted`](crate::Error::is_exhausted) holds;
    /// the last failure, if any, is its source.
    Fail,
    /// Stop quietly: `wait()` returns `Ok(())` when the last session ended cleanly, and the
    /// last failure otherwise.
    Finish,
}

impl<I: Iterator<Item = Duration>> Backoff for I {
    fn next_delay(&mut self) -> Option<Duration> {
        self.next()
    }

    fn reset(&mut self) {}
}

impl Backoff for Box<dyn Backoff + Send> {
    fn next_delay(&mut self) -> Option<Duration> {
        (**self).next_delay()
    }

    fn reset(&mut self) {
        (**self).reset();
    }

    fn session_ended(&mut self, uptime: Duration) -> bool {
        (**self).session_ended(uptime)
    }

    fn exhausted(&self) -> Exhausted {
        (**self).exhausted()
    }
}

/// Combinators for every [`Backoff`]; kept off the main trait so it stays object safe.
pub trait BackoffExt: Backoff + Sized {
    /// Spreads each delay with `jitter`, drawing from `rng`.
    #[must_use = "a jitter combinator does nothing unless it is used as the backoff"]
    fn with_jitter<R: RandomSource>(self, jitter: Jitter, rng: R) -> Jittered<Self, R> {
        Jittered { inner: self, jitter, rng, floor: None, prev: None }
    }

    /// [`with_jitter`](Self::with_jitter) with a [`SplitMix64`] seeded from entropy.
    #[must_use = "a jitter combinator does nothing unless it is used as the backoff"]
    fn jitter(self, jitter: Jitter) -> Jittered<Self, SplitMix64> {
        self.with_jitter(jitter, SplitMix64::from_entropy())
    }

    /// Gives up (with [`Exhausted::Fail`]) after `attempts` delays in a row; the count
    /// starts over whenever the inner strategy does. `0` never retries.
    #[must_use = "a max-attempts combinator does nothing unless it is used as the backoff"]
    fn max_attempts(self, attempts: u32) -> MaxAttempts<Self> {
        MaxAttempts { inner: self, max: attempts, used: 0, gave_up: false }
    }

    /// Starts over only after a connection that stayed up for at least `stable`; shorter
    /// connections leave the sequence where it was, so a flapping peer stays paced.
    #[must_use = "a reset-after combinator does nothing unless it is used as the backoff"]
    fn reset_after(self, stable: Duration) -> ResetAfter<Self> {
        ResetAfter { inner: self, stable }
    }

    /// Boxes the strategy for storage next to strategies of other types.
    #[must_use]
    fn boxed(self) -> Box<dyn Backoff + Send>
    where
        Self: Send + 'static,
    {
        Box::new(self)
    }
}

impl<B: Backoff> BackoffExt for B {}

/// The same delay every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Constant {
    delay: Duration,
}

impl Constant {
    /// Waits `delay` before every attempt (zero retries at once).
    pub const fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl Backoff for Constant {
    fn next_delay(&mut self) -> Option<Duration> {
        Some(self.delay)
    }

    fn reset(&mut self) {}
}

/// `initial`, then each delay times `multiplier`, never above `max`.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Exponential {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    current: Option<Duration>,
}

impl Exponential {
    /// Validates and builds the strategy.
    ///
    /// Rejects a zero `initial`, `initial > max`, and a `multiplier` that is below 1,
    /// NaN or infinite.
    pub fn new(initial: Duration, max: Duration, multiplier: f64) -> Result<Self, ConfigError> {
        if initial.is_zero() {
            return Err(ConfigError::value("exponential initial delay", "must be greater than zero"));
        }
        if initial > max {
            return Err(ConfigError::value("exponential initial delay", "must not exceed the maximum delay"));
        }
        if !multiplier.is_finite() {
            return Err(ConfigError::value("exponential multiplier", "must be a finite number"));
        }
        if multiplier < 1.0 {
            return Err(ConfigError::value("exponential multiplier", "must be at least 1"));
        }
        Ok(Self { initial, max, multiplier, current: None })
    }

    fn grow(&self, from: Duration) -> Duration {
        if from >= self.max {
            return self.max;
        }
        // Integer nanoseconds keep the common cases exact (50 ms × 2 is 100 ms, not 99.999…).
        let next = (from.as_nanos() as f64 * self.multiplier).round();
        if next >= self.max.as_nanos() as f64 {
            self.max
        } else {
            Duration::from_nanos(next as u64)
        }
    }
}

impl Backoff for Exponential {
    fn next_delay(&mut self) -> Option<Duration> {
        let next = match self.current {
            None => self.initial,
            Some(current) => self.grow(current),
        };
        self.current = Some(next);
        Some(next)
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

/// `initial`, then each delay plus `step`, never above `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Linear {
    initial: Duration,
    step: Duration,
    max: Duration,
    current: Option<Duration>,
}

impl Linear {
    /// Validates and builds the strategy; rejects `initial > max`.
    pub fn new(initial: Duration, step: Duration, max: Duration) -> Result<Self, ConfigError> {
        if initial > max {
            return Err(ConfigError::value("linear initial delay", "must not exceed the maximum delay"));
        }
        Ok(Self { initial, step, max, current: None })
    }
}

impl Backoff for Linear {
    fn next_delay(&mut self) -> Option<Duration> {
        let next = match self.current {
            None => self.initial,
            Some(current) => current.saturating_add(self.step).min(self.max),
        };
        self.current = Some(next);
        Some(next)
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

/// Delays computed by a closure from the attempt number (`0` for the first delay after a
/// reset); the closure returns `None` to give up.
///
/// ```
/// use std::time::Duration;
/// use diam_link::backoff::{Backoff, FromFn};
///
/// let mut squares = FromFn::new(|n| Some(Duration::from_millis(u64::from(n * n))));
/// assert_eq!(squares.next_delay(), Some(Duration::ZERO));
/// assert_eq!(squares.next_delay(), Some(Duration::from_millis(1)));
/// ```
#[must_use]
pub struct FromFn<F> {
    f: F,
    attempt: u32,
}

impl<F: FnMut(u32) -> Option<Duration>> FromFn<F> {
    /// Wraps `f`.
    pub const fn new(f: F) -> Self {
        Self { f, attempt: 0 }
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").field("attempt", &self.attempt).finish_non_exhaustive()
    }
}

impl<F: FnMut(u32) -> Option<Duration>> Backoff for FromFn<F> {
    fn next_delay(&mut self) -> Option<Duration> {
        let delay = (self.f)(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Never waits and never retries: the first failure, or the end of the first session,
/// stops the client with an error ([`Exhausted::Fail`]). The "immediate error" strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct FailFast;

impl Backoff for FailFast {
    fn next_delay(&mut self) -> Option<Duration> {
        None
    }

    fn reset(&mut self) {}
}

/// Connects once and never reconnects: the client finishes when the first session ends,
/// with `Ok(())` if it ended cleanly ([`Exhausted::Finish`]). The "do not reconnect" strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct NoReconnect;

impl Backoff for NoReconnect {
    fn next_delay(&mut self) -> Option<Duration> {
        None
    }

    fn reset(&mut self) {}

    fn exhausted(&self) -> Exhausted {
        Exhausted::Finish
    }
}

/// How [`Jittered`] spreads each delay `d` of the strategy it wraps. None of them ever
/// exceeds `d`, so a capped strategy stays capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, d]`: the widest spread.
    Full,
    /// Uniform in `[d/2, d]`: spread, but never much sooner than planned.
    Equal,
    /// Uniform in `[floor, min(d, 3 × previous)]`, where `floor` is the wrapped strategy's
    /// first delay after a reset (AWS's "decorrelated" jitter, capped by `d`). The first
    /// delay is exactly `floor`; pair it with a growing strategy.
    Decorrelated,
}

/// A strategy whose delays are spread by a [`Jitter`]; see [`BackoffExt::with_jitter`].
#[derive(Debug, Clone)]
#[must_use]
pub struct Jittered<B, R> {
    inner: B,
    jitter: Jitter,
    rng: R,
    floor: Option<Duration>,
    prev: Option<Duration>,
}

impl<B: Backoff, R: RandomSource> Backoff for Jittered<B, R> {
    fn next_delay(&mut self) -> Option<Duration> {
        let d = self.inner.next_delay()?;
        let delay = match self.jitter {
            Jitter::Full => rng::uniform(&mut self.rng, Duration::ZERO, d),
            Jitter::Equal => rng::uniform(&mut self.rng, d / 2, d),
            Jitter::Decorrelated => {
                let floor = *self.floor.get_or_insert(d);
                let prev = self.prev.unwrap_or(floor);
                let hi = prev.saturating_mul(3).min(d);
                rng::uniform(&mut self.rng, floor.min(hi), hi)
            }
        };
        self.prev = Some(delay);
        Some(delay)
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.floor = None;
        self.prev = None;
    }

    fn session_ended(&mut self, uptime: Duration) -> bool {
        let reset = self.inner.session_ended(uptime);
        if reset {
            self.floor = None;
            self.prev = None;
        }
        reset
    }

    fn exhausted(&self) -> Exhausted {
        self.inner.exhausted()
    }
}

/// A strategy that gives up after a number of delays in a row; see [`BackoffExt::max_attempts`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MaxAttempts<B> {
    inner: B,
    max: u32,
    used: u32,
    gave_up: bool,
}

impl<B: Backoff> Backoff for MaxAttempts<B> {
    fn next_delay(&mut self) -> Option<Duration> {
        if self.used >= self.max {
            self.gave_up = true;
            return None;
        }
        let delay = self.inner.next_delay()?;
        self.used += 1;
        Some(delay)
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.used = 0;
        self.gave_up = false;
    }

    fn session_ended(&mut self, uptime: Duration) -> bool {
        let reset = self.inner.session_ended(uptime);
        if reset {
            self.used = 0;
            self.gave_up = false;
        }
        reset
    }

    fn exhausted(&self) -> Exhausted {
        if self.gave_up {
            Exhausted::Fail
        } else {
            self.inner.exhausted()
        }
    }
}

/// A strategy that starts over only after a stable connection; see [`BackoffExt::reset_after`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ResetAfter<B> {
    inner: B,
    stable: Duration,
}

impl<B: Backoff> Backoff for ResetAfter<B> {
    fn next_delay(&mut self) -> Option<Duration> {
        self.inner.next_delay()
    }

    fn reset(&mut self) {
        self.inner.reset();
    }

    fn session_ended(&mut self, uptime: Duration) -> bool {
        if uptime >= self.stable {
            self.inner.reset();
            true
        } else {
            false
        }
    }

    fn exhausted(&self) -> Exhausted {
        self.inner.exhausted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn take(b: &mut impl Backoff, n: usize) -> Vec<Duration> {
        (0..n).map_while(|_| b.next_delay()).collect()
    }

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn exponential_sequence_and_cap() {
        let mut b = Exponential::new(50 * MS, 1000 * MS, 2.0).unwrap();
        assert_eq!(take(&mut b, 7), ms(&[50, 100, 200, 400, 800, 1000, 1000]));
        b.reset();
        assert_eq!(b.next_delay(), Some(50 * MS));
        let mut b = Exponential::new(100 * MS, 1000 * MS, 1.5).unwrap();
        assert_eq!(take(&mut b, 4), [100_000, 150_000, 225_000, 337_500].map(Duration::from_micros));
    }

    #[test]
    fn linear_sequence_and_cap() {
        let mut b = Linear::new(100 * MS, 250 * MS, 600 * MS).unwrap();
        assert_eq!(take(&mut b, 4), ms(&[100, 350, 600, 600]));
    }

    #[test]
    fn constructors_reject_nonsense() {
        assert!(Exponential::new(50 * MS, 10 * MS, 2.0).is_err());
        assert!(Exponential::new(Duration::ZERO, 10 * MS, 2.0).is_err());
        assert!(Exponential::new(MS, 10 * MS, 0.5).is_err());
        assert!(Exponential::new(MS, 10 * MS, f64::NAN).is_err());
        assert!(Exponential::new(MS, 10 * MS, f64::INFINITY).is_err());
        assert!(Exponential::new(MS, MS, 1.0).is_ok());
        assert!(Linear::new(50 * MS, MS, 10 * MS).is_err());
    }

    #[test]
    fn iterators_and_closures_are_backoffs() {
        let mut it = ms(&[1, 2]).into_iter();
        assert_eq!(take(&mut it, 5), ms(&[1, 2]));
        let mut f = FromFn::new(|n| (n < 2).then(|| Duration::from_millis(u64::from(n) + 1)));
        assert_eq!(take(&mut f, 5), ms(&[1, 2]));
        f.reset();
        assert_eq!(f.next_delay(), Some(MS));
        let mut boxed = Constant::new(MS).max_attempts(1).boxed();
        assert_eq!(take(&mut boxed, 5), ms(&[1]));
        assert_eq!(boxed.exhausted(), Exhausted::Fail);
    }

    #[test]
    fn stop_strategies() {
        assert_eq!(FailFast.next_delay(), None);
        assert_eq!(FailFast.exhausted(), Exhausted::Fail);
        assert_eq!(NoReconnect.next_delay(), None);
        assert_eq!(NoReconnect.exhausted(), Exhausted::Finish);
    }

    #[test]
    fn max_attempts_counts_and_resets() {
        let mut b = Constant::new(MS).max_attempts(3);
        assert_eq!(take(&mut b, 10).len(), 3);
        assert_eq!(b.exhausted(), Exhausted::Fail);
        assert!(b.session_ended(Duration::ZERO));
        assert_eq!(take(&mut b, 10).len(), 3);
        // NoReconnect's own verdict survives when the limit was not what stopped it.
        assert_eq!(NoReconnect.max_attempts(3).exhausted(), Exhausted::Finish);
    }

    #[test]
    fn reset_after_needs_a_stable_connection() {
        let mut b = Exponential::new(10 * MS, 1000 * MS, 2.0).unwrap().reset_after(Duration::from_secs(5));
        assert_eq!(take(&mut b, 3), ms(&[10, 20, 40]));
        assert!(!b.session_ended(Duration::from_secs(1)));
        assert_eq!(b.next_delay(), Some(80 * MS));
        assert!(b.session_ended(Duration::from_secs(5)));
        assert_eq!(b.next_delay(), Some(10 * MS));
        // The order of combinators does not matter: the attempt counter follows the reset.
        let mut b = Constant::new(MS).reset_after(Duration::from_secs(5)).max_attempts(2);
        assert_eq!(take(&mut b, 5).len(), 2);
        assert!(!b.session_ended(Duration::from_secs(1)));
        assert_eq!(b.next_delay(), None);
        assert!(b.session_ended(Duration::from_secs(9)));
        assert_eq!(take(&mut b, 5).len(), 2);
    }

    /// Exact sequences on a seeded generator: a change in the jitter arithmetic or the
    /// generator shows up here as a diff of concrete numbers.
    #[test]
    fn seeded_jitter_sequences_are_exact() {
        let exp = || Exponential::new(50 * MS, 1000 * MS, 2.0).unwrap();
        let full: Vec<u128> = take(&mut exp().with_jitter(Jitter::Full, SplitMix64::new(42)), 6)
            .iter()
            .map(Duration::as_micros)
            .collect();
        let equal: Vec<u128> = take(&mut exp().with_jitter(Jitter::Equal, SplitMix64::new(42)), 6)
            .iter()
            .map(Duration::as_micros)
            .collect();
        let decorrelated: Vec<u128> = take(&mut exp().with_jitter(Jitter::Decorrelated, SplitMix64::new(42)), 6)
            .iter()
            .map(Duration::as_micros)
            .collect();
        assert_eq!(full, FULL_42);
        assert_eq!(equal, EQUAL_42);
        assert_eq!(decorrelated, DECORRELATED_42);
    }

    // Computed independently (a Python model of SplitMix64 and the documented jitter
    // formulas) over the delays 50, 100, 200, 400, 800, 1000 ms; in microseconds.
    const FULL_42: [u128; 6] = [37_078, 15_991, 55_720, 137_676, 30_424, 868_228];
    const EQUAL_42: [u128; 6] = [43_539, 57_995, 127_860, 268_838, 415_212, 934_114];
    const DECORRELATED_42: [u128; 6] = [50_000, 57_995, 84_542, 120_087, 61_799, 167_556];

    fn jitter_kind() -> impl Strategy<Value = Jitter> {
        prop_oneof![Just(Jitter::Full), Just(Jitter::Equal), Just(Jitter::Decorrelated)]
    }

    proptest! {
        #[test]
        fn exponential_is_monotone_and_capped(
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            multiplier in 1.0f64..10.0,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let mut b = Exponential::new(initial, max, multiplier).unwrap();
            let seq = take(&mut b, 64);
            prop_assert_eq!(seq[0], initial);
            prop_assert!(seq.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(seq.iter().all(|d| *d <= max));
            if multiplier >= 1.5 {
                prop_assert_eq!(*seq.last().unwrap(), max);
            }
        }

        #[test]
        fn linear_is_monotone_and_capped(initial_ms in 0u64..10_000, step_ms in 0u64..10_000, extra_ms in 0u64..100_000) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let mut b = Linear::new(initial, Duration::from_millis(step_ms), max).unwrap();
            let seq = take(&mut b, 64);
            prop_assert!(seq.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(seq.iter().all(|d| *d <= max));
        }

        #[test]
        fn jitter_stays_within_its_bounds(
            seed in any::<u64>(),
            jitter in jitter_kind(),
            initial_ms in 1u64..5_000,
            extra_ms in 0u64..60_000,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let plain = take(&mut Exponential::new(initial, max, 2.0).unwrap(), 32);
            let mut jittered = Exponential::new(initial, max, 2.0).unwrap().with_jitter(jitter, SplitMix64::new(seed));
            let spread = take(&mut jittered, 32);
            prop_assert_eq!(spread.len(), plain.len());
            for (i, (d, j)) in plain.iter().zip(&spread).enumerate() {
                prop_assert!(j <= d, "step {} jittered {:?} above {:?}", i, j, d);
                match jitter {
                    Jitter::Full => {}
                    Jitter::Equal => prop_assert!(*j >= *d / 2),
                    Jitter::Decorrelated => {
                        prop_assert!(*j >= initial.min(*d));
                        if i > 0 {
                            prop_assert!(*j <= spread[i - 1] * 3);
                        }
                    }
                }
            }
        }

        #[test]
        fn max_attempts_yields_exactly_n(n in 0u32..50) {
            let mut b = Constant::new(MS).max_attempts(n);
            prop_assert_eq!(take(&mut b, 100).len(), n as usize);
        }

        #[test]
        fn bad_multipliers_are_rejected(multiplier in prop_oneof![-1e9f64..0.999_999, Just(f64::NAN), Just(f64::NEG_INFINITY)]) {
            prop_assert!(Exponential::new(MS, Duration::from_secs(1), multiplier).is_err());
        }
    }
}
