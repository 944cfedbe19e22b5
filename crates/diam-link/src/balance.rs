//! Choosing a peer for the next request: the [`Balancer`] trait and its strategies.
//!
//! The caller describes each peer as a [`Candidate`] (an id, whether it may be used at
//! all, requests in flight, configured weight, failure rate and latency EWMA) and asks a
//! balancer to [`pick`](Balancer::pick) one. Only candidates marked
//! [`available`](Candidate::available) are ever chosen (the caller clears it for a peer
//! whose connection is not open, whose health is `Dead` or whose breaker is open); with
//! none available, `pick` returns `None`.
//!
//! | strategy | picks |
//! |---|---|
//! | [`RoundRobin`] | each available candidate in turn |
//! | [`LeastRecentlyUsed`] | the one picked longest ago (never-picked first) |
//! | [`Random`] | uniformly, from an injectable [`RandomSource`] |
//! | [`LeastOutstanding`] | the fewest requests in flight, rotating among ties |
//! | [`Weighted`] | randomly, in proportion to an efficiency score, with gradual recovery after failures |
//!
//! ```
//! use std::time::Instant;
//! use diam_link::balance::{Balancer, Candidate, LeastOutstanding};
//!
//! let peers = [
//!     Candidate::new("a").in_flight(4),
//!     Candidate::new("b").in_flight(1),
//!     Candidate::new("c").in_flight(0).available(false),
//! ];
//! let mut balancer = LeastOutstanding::new();
//! let chosen = balancer.pick(&peers, Instant::now()).unwrap();
//! assert_eq!(*peers[chosen].id(), "b");
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::backoff::{RandomSource, SplitMix64};
use crate::error::ConfigError;

/// What a balancer knows about one peer at the time of a pick.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Candidate<Id> {
    id: Id,
    available: bool,
    in_flight: u32,
    weight: u32,
    failure_rate: f64,
    latency: Option<Duration>,
}

impl<Id> Candidate<Id> {
    /// An available candidate with nothing in flight, weight 1, no failures and no latency yet.
    pub fn new(id: Id) -> Self {
        Self { id, available: true, in_flight: 0, weight: 1, failure_rate: 0.0, latency: None }
    }

    /// Whether the peer may be chosen at all.
    pub fn available(mut self, available: bool) -> Self {
        self.available = available;
        self
    }

    /// Requests sent to the peer and not yet answered.
    pub fn in_flight(mut self, requests: u32) -> Self {
        self.in_flight = requests;
        self
    }

    /// The configured weight (relative capacity); 0 is chosen by [`Weighted`] only when
    /// every available candidate scores 0.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Recent failures over recent requests, clamped to `[0, 1]` (NaN counts as 0).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) };
        self
    }

    /// The latency EWMA (e.g. from [`HealthMonitor::ewma_latency`](crate::health::HealthMonitor::ewma_latency)).
    pub fn latency(mut self, latency: Option<Duration>) -> Self {
        self.latency = latency;
        self
    }

    /// The id.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// Whether the candidate may be chosen.
    pub fn is_available(&self) -> bool {
        self.available
    }

    /// Requests in flight.
    pub fn outstanding(&self) -> u32 {
        self.in_flight
    }

    /// The configured weight.
    pub fn configured_weight(&self) -> u32 {
        self.weight
    }

    /// The failure rate, in `[0, 1]`.
    pub fn recent_failure_rate(&self) -> f64 {
        self.failure_rate
    }

    /// The latency EWMA, if known.
    pub fn latency_ewma(&self) -> Option<Duration> {
        self.latency
    }
}

/// A strategy for choosing among candidate peers.
///
/// Object safe: a peer group can hold a `Box<dyn Balancer<Id> + Send>` built from a
/// [`Strategy`].
pub trait Balancer<Id> {
    /// The index into `candidates` of the peer for the next request, or `None` when no
    /// candidate is available. A pick counts as a use (for [`LeastRecentlyUsed`] and the
    /// rotation of [`RoundRobin`]).
    fn pick(&mut self, candidates: &[Candidate<Id>], now: Instant) -> Option<usize>;

    /// Reports the outcome of a request to `id`. Only [`Weighted`] uses it, to lower a
    /// failed peer's share and let it recover gradually; the default ignores it.
    fn record(&mut self, id: &Id, success: bool, now: Instant) {
        let _ = (id, success, now);
    }

    /// The strategy's name, as [`Strategy`] spells it.
    fn name(&self) -> &'static str;
}

fn available_count<Id>(candidates: &[Candidate<Id>]) -> usize {
    candidates.iter().filter(|c| c.available).count()
}

/// The index of the `n`th available candidate.
fn nth_available<Id>(candidates: &[Candidate<Id>], n: usize) -> Option<usize> {
    candidates.iter().enumerate().filter(|(_, c)| c.available).nth(n).map(|(i, _)| i)
}

/// A uniform index in `0..n` (`n > 0`), by Lemire's multiply-shift.
fn below(rng: &mut (impl RandomSource + ?Sized), n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// A uniform `f64` in `[0, 1)`.
fn unit(rng: &mut (impl RandomSource + ?Sized)) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Forgets per-id state for ids no longer among the candidates, once the map has grown
/// well past the candidate list (keeps memory bounded when peers come and go).
fn prune<Id: Hash + Eq, V>(map: &mut HashMap<Id, V>, candidates: &[Candidate<Id>]) {
    if map.len() > 2 * candidates.len() + 16 {
        let present: HashSet<&Id> = candidates.iter().map(|c| &c.id).collect();
        map.retain(|id, _| present.contains(id));
    }
}

/// Each available candidate in turn; with a stable candidate list every one gets exactly
/// the same share.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// Starts with the first available candidate.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<Id> Balancer<Id> for RoundRobin {
    fn pick(&mut self, candidates: &[Candidate<Id>], _now: Instant) -> Option<usize> {
        let count = available_count(candidates);
        if count == 0 {
            return None;
        }
        let chosen = nth_available(candidates, self.next % count);
        self.next = self.next.wrapping_add(1);
        chosen
    }

    fn name(&self) -> &'static str {
        Strategy::RoundRobin.as_str()
    }
}

/// The available candidate picked longest ago; candidates never picked come first, in
/// slice order.
#[derive(Debug, Clone)]
pub struct LeastRecentlyUsed<Id> {
    last_used: HashMap<Id, u64>,
    tick: u64,
}

impl<Id> Default for LeastRecentlyUsed<Id> {
    fn default() -> Self {
        Self { last_used: HashMap::new(), tick: 0 }
    }
}

impl<Id> LeastRecentlyUsed<Id> {
    /// A balancer that has picked nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<Id: Hash + Eq + Clone> Balancer<Id> for LeastRecentlyUsed<Id> {
    fn pick(&mut self, candidates: &[Candidate<Id>], _now: Instant) -> Option<usize> {
        let (index, chosen) = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.available)
            .min_by_key(|(i, c)| (self.last_used.get(&c.id).copied().unwrap_or(0), *i))?;
        self.tick += 1;
        self.last_used.insert(chosen.id.clone(), self.tick);
        prune(&mut self.last_used, candidates);
        Some(index)
    }

    fn name(&self) -> &'static str {
        Strategy::LeastRecentlyUsed.as_str()
    }
}

/// A uniformly random available candidate.
#[derive(Debug, Clone)]
pub struct Random<R = SplitMix64> {
    rng: R,
}

impl<R: RandomSource> Random<R> {
    /// Draws from `rng`; pass a seeded [`SplitMix64`] for reproducible picks.
    pub fn new(rng: R) -> Self {
        Self { rng }
    }
}

impl<Id, R: RandomSource> Balancer<Id> for Random<R> {
    fn pick(&mut self, candidates: &[Candidate<Id>], _now: Instant) -> Option<usize> {
        let count = available_count(candidates);
        if count == 0 {
            return None;
        }
        nth_available(candidates, below(&mut self.rng, count))
    }

    fn name(&self) -> &'static str {
        Strategy::Random.as_str()
    }
}

/// The available candidate with the fewest requests in flight; ties are taken in turn,
/// so equally loaded peers share the traffic.
#[derive(Debug, Clone, Default)]
pub struct LeastOutstanding {
    tie: usize,
}

impl LeastOutstanding {
    /// A balancer that breaks its first tie with the first tied candidate.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<Id> Balancer<Id> for LeastOutstanding {
    fn pick(&mut self, candidates: &[Candidate<Id>], _now: Instant) -> Option<usize> {
        let least = candidates.iter().filter(|c| c.available).map(|c| c.in_flight).min()?;
        let mut tied = candidates.iter().enumerate().filter(|(_, c)| c.available && c.in_flight == least);
        let ties = tied.clone().count();
        let chosen = tied.nth(self.tie % ties).map(|(i, _)| i);
        self.tie = self.tie.wrapping_add(1);
        chosen
    }

    fn name(&self) -> &'static str {
        Strategy::LeastOutstanding.as_str()
    }
}

/// Settings for [`Weighted`], validated by [`Weighted::with_config`].
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct WeightedConfig {
    latency_scale: Duration,
    failure_penalty: f64,
    recovery: Duration,
    min_factor: f64,
}

impl Default for WeightedConfig {
    fn default() -> Self {
        Self {
            latency_scale: Duration::from_millis(100),
            failure_penalty: 0.5,
            recovery: Duration::from_secs(30),
            min_factor: 0.01,
        }
    }
}

impl WeightedConfig {
    /// The latency at which a peer's score halves: the latency factor is
    /// `scale / (scale + ewma)`. Default 100 ms; not zero.
    pub fn latency_scale(mut self, scale: Duration) -> Self {
        self.latency_scale = scale;
        self
    }

    /// What a recorded failure multiplies the peer's recovery factor by. Default 0.5; in `[0, 1)`.
    pub fn failure_penalty(mut self, penalty: f64) -> Self {
        self.failure_penalty = penalty;
        self
    }

    /// How long a penalised peer takes to climb back (linearly) to its full share.
    /// Default 30 s; not zero.
    pub fn recovery(mut self, recovery: Duration) -> Self {
        self.recovery = recovery;
        self
    }

    /// The floor for the efficiency and recovery factors, so a struggling peer keeps a
    /// trickle of traffic. Default 0.01; in `(0, 1]`.
    pub fn min_factor(mut self, min: f64) -> Self {
        self.min_factor = min;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.latency_scale.is_zero() {
            return Err(ConfigError::value("weighted latency scale", "must be greater than zero"));
        }
        if !(0.0..1.0).contains(&self.failure_penalty) {
            return Err(ConfigError::value("weighted failure penalty", "must be in [0, 1)"));
        }
        if self.recovery.is_zero() {
            return Err(ConfigError::value("weighted recovery", "must be greater than zero"));
        }
        if !(self.min_factor > 0.0 && self.min_factor <= 1.0) {
            return Err(ConfigError::value("weighted min factor", "must be in (0, 1]"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct Penalty {
    factor: f64,
    at: Instant,
}

/// Random picks in proportion to an efficiency score:
///
/// `weight × max(min, (1 − failure rate) × scale / (scale + latency EWMA)) × recovery`
///
/// where `recovery` drops by `failure_penalty` on every [`record`](Balancer::record)ed
/// failure and climbs back linearly to 1 over the `recovery` period. Candidates scoring 0
/// (weight 0) are chosen only when every available candidate scores 0, uniformly then.
#[derive(Debug, Clone)]
pub struct Weighted<Id, R = SplitMix64> {
    config: WeightedConfig,
    rng: R,
    penalties: HashMap<Id, Penalty>,
}

impl<Id: Hash + Eq + Clone, R: RandomSource> Weighted<Id, R> {
    /// Default settings, drawing from `rng`.
    pub fn new(rng: R) -> Self {
        Self { config: WeightedConfig::default(), rng, penalties: HashMap::new() }
    }

    /// Validated settings, drawing from `rng`.
    pub fn with_config(config: WeightedConfig, rng: R) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config, rng, penalties: HashMap::new() })
    }

    /// The candidate's score at `now` (0 for an unavailable one); picks are proportional to it.
    pub fn score(&self, candidate: &Candidate<Id>, now: Instant) -> f64 {
        if !candidate.available {
            return 0.0;
        }
        let scale = self.config.latency_scale.as_secs_f64();
        let latency = candidate.latency.map_or(0.0, |l| l.as_secs_f64());
        let efficiency = ((1.0 - candidate.failure_rate) * scale / (scale + latency)).max(self.config.min_factor);
        f64::from(candidate.weight) * efficiency * self.recovery_factor(&candidate.id, now)
    }

    /// The recovery factor of `id` at `now`: 1 unless a failure was recorded within the
    /// recovery period.
    pub fn recovery_factor(&self, id: &Id, now: Instant) -> f64 {
        self.penalties.get(id).map_or(1.0, |p| self.factor_at(p, now))
    }

    fn factor_at(&self, penalty: &Penalty, now: Instant) -> f64 {
        let progress = now.saturating_duration_since(penalty.at).as_secs_f64() / self.config.recovery.as_secs_f64();
        (penalty.factor + (1.0 - penalty.factor) * progress.min(1.0)).min(1.0)
    }
}

impl<Id: Hash + Eq + Clone, R: RandomSource> Balancer<Id> for Weighted<Id, R> {
    fn pick(&mut self, candidates: &[Candidate<Id>], now: Instant) -> Option<usize> {
        let count = available_count(candidates);
        if count == 0 {
            return None;
        }
        let total: f64 = candidates.iter().map(|c| self.score(c, now)).sum();
        if !(total > 0.0 && total.is_finite()) {
            return nth_available(candidates, below(&mut self.rng, count));
        }
        let mut target = unit(&mut self.rng) * total;
        let mut last = None;
        for (i, c) in candidates.iter().enumerate() {
            let score = self.score(c, now);
            if score <= 0.0 {
                continue;
            }
            last = Some(i);
            if target < score {
                return Some(i);
            }
            target -= score;
        }
        last // rounding left `target` a hair above the last score
    }

    fn record(&mut self, id: &Id, success: bool, now: Instant) {
        if success {
            return;
        }
        let current = self.recovery_factor(id, now);
        let factor = (current * self.config.failure_penalty).max(self.config.min_factor);
        self.penalties.insert(id.clone(), Penalty { factor, at: now });
        let recovery = self.config.recovery;
        if self.penalties.len() > 64 {
            self.penalties.retain(|_, p| now.saturating_duration_since(p.at) < recovery);
        }
    }

    fn name(&self) -> &'static str {
        Strategy::Weighted.as_str()
    }
}

/// The strategies by name, for configuration and command lines.
///
/// ```
/// use std::time::Instant;
/// use diam_link::balance::{Candidate, Strategy};
///
/// let strategy: Strategy = "least-outstanding".parse()?;
/// let mut balancer = strategy.build::<u32>(42);
/// let peers = [Candidate::new(1).in_flight(3), Candidate::new(2)];
/// assert_eq!(balancer.pick(&peers, Instant::now()), Some(1));
/// # Ok::<(), diam_link::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// [`RoundRobin`], `round-robin`.
    RoundRobin,
    /// [`LeastRecentlyUsed`], `lru`.
    LeastRecentlyUsed,
    /// [`Random`], `random`.
    Random,
    /// [`LeastOutstanding`], `least-outstanding`.
    LeastOutstanding,
    /// [`Weighted`] with default settings, `weighted`.
    Weighted,
}

impl Strategy {
    /// Every strategy, in declaration order.
    pub const ALL: [Strategy; 5] =
        [Self::RoundRobin, Self::LeastRecentlyUsed, Self::Random, Self::LeastOutstanding, Self::Weighted];

    /// The name that [`FromStr`] accepts.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round-robin",
            Self::LeastRecentlyUsed => "lru",
            Self::Random => "random",
            Self::LeastOutstanding => "least-outstanding",
            Self::Weighted => "weighted",
        }
    }

    /// A boxed balancer of this strategy; `seed` feeds the [`SplitMix64`] of the random ones.
    #[must_use]
    pub fn build<Id: Hash + Eq + Clone + Send + 'static>(self, seed: u64) -> Box<dyn Balancer<Id> + Send> {
        match self {
            Self::RoundRobin => Box::new(RoundRobin::new()),
            Self::LeastRecentlyUsed => Box::new(LeastRecentlyUsed::new()),
            Self::Random => Box::new(Random::new(SplitMix64::new(seed))),
            Self::LeastOutstanding => Box::new(LeastOutstanding::new()),
            Self::Weighted => Box::new(Weighted::new(SplitMix64::new(seed))),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            ConfigError::value("balancer strategy", "must be round-robin, lru, random, least-outstanding or weighted")
        })
    }
}
