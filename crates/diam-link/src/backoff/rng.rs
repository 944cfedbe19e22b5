//! The random source behind jitter.
//!
//! Jitter needs a few uniformly spread numbers per reconnect, not cryptographic
//! quality, so this crate carries the ten-line SplitMix64 generator instead of
//! depending on `rand` (whose API and dependency tree move faster than this crate
//! wants to follow). The source is a trait, so tests inject a seeded generator and get
//! exact sequences, and callers can plug in any generator they already have.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of uniformly distributed 64-bit numbers for jitter.
///
/// Implemented by [`SplitMix64`] and by any `FnMut() -> u64` closure.
pub trait RandomSource {
    /// The next number; every bit should be equally likely to be set.
    fn next_u64(&mut self) -> u64;
}

impl<F: FnMut() -> u64> RandomSource for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// Steele, Lea and Flood's SplitMix64: fast, tiny, seedable, statistically fine for jitter.
///
/// ```
/// use diam_link::backoff::{RandomSource, SplitMix64};
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64()); // same seed, same sequence
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with a fixed seed: the same seed always yields the same sequence.
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the process's per-run hashing keys and the clock, so two
    /// clients started together still draw different delays.
    #[must_use]
    pub fn from_entropy() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        hasher.write_u128(nanos);
        Self::new(hasher.finish())
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A duration drawn uniformly from `[lo, hi]` (nanosecond resolution; spans beyond
/// `u64::MAX` ns, about 584 years, are clamped). `lo > hi` returns `lo`.
pub(crate) fn uniform(rng: &mut (impl RandomSource + ?Sized), lo: Duration, hi: Duration) -> Duration {
    let span = hi.saturating_sub(lo).as_nanos().min(u128::from(u64::MAX)) as u64;
    // Lemire's multiply-shift: maps 64 random bits onto [0, span] without division.
    let offset = ((u128::from(rng.next_u64()) * (u128::from(span) + 1)) >> 64) as u64;
    lo.saturating_add(Duration::from_nanos(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_vectors() {
        // First outputs for seed 0, as published with the reference C implementation.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn uniform_hits_both_ends() {
        let lo = Duration::from_millis(1);
        let hi = Duration::from_millis(2);
        assert_eq!(uniform(&mut || 0u64, lo, hi), lo);
        assert_eq!(uniform(&mut || u64::MAX, lo, hi), hi);
        assert_eq!(uniform(&mut || u64::MAX, hi, lo), hi);
        assert_eq!(uniform(&mut || u64::MAX, Duration::ZERO, Duration::MAX), Duration::from_nanos(u64::MAX));
    }
}
