//! Balancer strategies: exact orders where they are deterministic, distributions over
//! many picks with fixed seeds where they are random.

use std::time::{Duration, Instant};

use diam_link::backoff::SplitMix64;
use diam_link::balance::{
    Balancer, Candidate, LeastOutstanding, LeastRecentlyUsed, Random, RoundRobin, Strategy, Weighted, WeightedConfig,
};
use proptest::prelude::*;
use proptest::strategy::Strategy as _;

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

fn peers(n: u32) -> Vec<Candidate<u32>> {
    (0..n).map(Candidate::new).collect()
}

/// How often each candidate index was picked over `picks` picks.
fn counts(balancer: &mut dyn Balancer<u32>, candidates: &[Candidate<u32>], picks: usize, now: Instant) -> Vec<usize> {
    let mut counts = vec![0; candidates.len()];
    for _ in 0..picks {
        counts[balancer.pick(candidates, now).expect("a candidate is available")] += 1;
    }
    counts
}

fn assert_close(got: f64, expected: f64) {
    assert!((got - expected).abs() < 1e-9, "{got} is not {expected}");
}

fn all_strategies() -> Vec<Box<dyn Balancer<u32> + Send>> {
    Strategy::ALL.iter().map(|s| s.build(7)).collect()
}

#[test]
fn round_robin_is_exactly_even_and_in_order() {
    let t0 = Instant::now();
    let candidates = peers(3);
    let mut rr = RoundRobin::new();
    let order: Vec<_> = (0..6).map(|_| rr.pick(&candidates, t0).unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    assert_eq!(counts(&mut rr, &candidates, 3000, t0), [1000, 1000, 1000]);
}

#[test]
fn round_robin_skips_unavailable_candidates() {
    let t0 = Instant::now();
    let mut candidates = peers(4);
    candidates[1] = Candidate::new(1).available(false);
    let mut rr = RoundRobin::new();
    assert_eq!(counts(&mut rr, &candidates, 300, t0), [100, 0, 100, 100]);
}

#[test]
fn nothing_available_means_none() {
    let t0 = Instant::now();
    let none: Vec<_> = (0..3).map(|i| Candidate::new(i).available(false)).collect();
    for mut balancer in all_strategies() {
        assert_eq!(balancer.pick(&none, t0), None, "{}", balancer.name());
        assert_eq!(balancer.pick(&[], t0), None, "{}", balancer.name());
    }
}

#[test]
fn least_recently_used_cycles_and_prefers_newcomers() {
    let t0 = Instant::now();
    let mut lru = LeastRecentlyUsed::new();
    let mut candidates = peers(3);
    let order: Vec<_> = (0..5).map(|_| lru.pick(&candidates, t0).unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 0, 1]);
    candidates.push(Candidate::new(9));
    assert_eq!(lru.pick(&candidates, t0), Some(3), "never used goes first");
    assert_eq!(lru.pick(&candidates, t0), Some(2));
    // Peer 0 was out for a while: it is now the least recently used.
    candidates[0] = Candidate::new(0).available(false);
    assert_eq!(lru.pick(&candidates, t0), Some(1));
    candidates[0] = Candidate::new(0);
    assert_eq!(lru.pick(&candidates, t0), Some(0));
    assert_eq!(counts(&mut lru, &candidates, 4000, t0), [1000, 1000, 1000, 1000]);
}

#[test]
fn random_is_uniform_and_reproducible() {
    let t0 = Instant::now();
    let candidates = peers(4);
    let picks = 40_000;
    let got = counts(&mut Random::new(SplitMix64::new(42)), &candidates, picks, t0);
    for count in &got {
        let share = *count as f64 / picks as f64;
        assert!((share - 0.25).abs() < 0.01, "{got:?}");
    }
    assert_eq!(counts(&mut Random::new(SplitMix64::new(42)), &candidates, picks, t0), got);
    assert_ne!(counts(&mut Random::new(SplitMix64::new(43)), &candidates, picks, t0), got);
}

#[test]
fn least_outstanding_takes_the_minimum_and_rotates_ties() {
    let t0 = Instant::now();
    let candidates = [
        Candidate::new(0).in_flight(3),
        Candidate::new(1).in_flight(1),
        Candidate::new(2).in_flight(0).available(false),
        Candidate::new(3).in_flight(1),
        Candidate::new(4).in_flight(2),
    ];
    let mut lo = LeastOutstanding::new();
    assert_eq!(counts(&mut lo, &candidates, 100, t0), [0, 50, 0, 50, 0]);

    // Fed back its own choices, it keeps the load level.
    let mut load = [0u32; 3];
    for _ in 0..300 {
        let candidates: Vec<_> = (0..3).map(|i| Candidate::new(i).in_flight(load[i as usize])).collect();
        load[lo.pick(&candidates, t0).unwrap()] += 1;
        assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1, "{load:?}");
    }
}

#[test]
fn weighted_follows_configured_weights() {
    let t0 = Instant::now();
    let candidates: Vec<_> = (1..=4).map(|w| Candidate::new(w).weight(w)).collect();
    let picks = 100_000;
    let got = counts(&mut Weighted::new(SplitMix64::new(1)), &candidates, picks, t0);
    for (i, count) in got.iter().enumerate() {
        let expected = (i + 1) as f64 / 10.0;
        let share = *count as f64 / picks as f64;
        assert!((share - expected).abs() < 0.01, "{got:?}");
    }
}

#[test]
fn weighted_scores_efficiency() {
    let t0 = Instant::now();
    let w = Weighted::<u32, _>::new(SplitMix64::new(1));
    assert_close(w.score(&Candidate::new(0).weight(3), t0), 3.0);
    // The default latency scale is 100 ms: an EWMA of 100 ms halves the score.
    assert_close(w.score(&Candidate::new(0).weight(2).latency(Some(100 * MS)), t0), 1.0);
    assert_close(w.score(&Candidate::new(0).weight(2).failure_rate(0.25), t0), 1.5);
    assert_close(w.score(&Candidate::new(0).weight(2).failure_rate(7.0), t0), 0.02);
    assert_close(w.score(&Candidate::new(0).weight(2).available(false), t0), 0.0);

    let candidates =
        [Candidate::new(0), Candidate::new(1).latency(Some(100 * MS)), Candidate::new(2).failure_rate(0.5)];
    let picks = 100_000;
    let got = counts(&mut Weighted::new(SplitMix64::new(9)), &candidates, picks, t0);
    for (count, expected) in got.iter().zip([0.5, 0.25, 0.25]) {
        assert!((*count as f64 / picks as f64 - expected).abs() < 0.01, "{got:?}");
    }
}

#[test]
fn weighted_recovers_gradually_after_failures() {
    let t0 = Instant::now();
    let mut w = Weighted::with_config(WeightedConfig::default().recovery(10 * S), SplitMix64::new(3)).unwrap();
    w.record(&1, true, t0);
    assert_eq!(w.recovery_factor(&1, t0), 1.0);
    w.record(&1, false, t0);
    assert_eq!(w.recovery_factor(&1, t0), 0.5);
    w.record(&1, false, t0);
    assert_eq!(w.recovery_factor(&1, t0), 0.25);
    assert_eq!(w.recovery_factor(&1, t0 + 5 * S), 0.625);
    assert_eq!(w.recovery_factor(&1, t0 + 10 * S), 1.0);
    assert_eq!(w.recovery_factor(&1, t0 + 100 * S), 1.0);
    assert_eq!(w.recovery_factor(&2, t0), 1.0);

    // The penalised peer's share: 0.25 / 1.25 = 20 % just after, 50 % once recovered.
    let candidates = peers(2);
    let picks = 50_000;
    let just_after = counts(&mut w, &candidates, picks, t0)[1] as f64 / picks as f64;
    let recovered = counts(&mut w, &candidates, picks, t0 + 10 * S)[1] as f64 / picks as f64;
    assert!((just_after - 0.2).abs() < 0.01, "{just_after}");
    assert!((recovered - 0.5).abs() < 0.01, "{recovered}");
}

#[test]
fn weighted_uses_zero_weights_only_as_a_last_resort() {
    let t0 = Instant::now();
    let mut w = Weighted::new(SplitMix64::new(5));
    let candidates = [Candidate::new(0).weight(0), Candidate::new(1), Candidate::new(2).weight(0)];
    assert_eq!(counts(&mut w, &candidates, 1000, t0), [0, 1000, 0]);
    let zeros = [Candidate::new(0).weight(0), Candidate::new(1).weight(0)];
    let got = counts(&mut w, &zeros, 1000, t0);
    assert!(got.iter().all(|c| *c > 400), "{got:?}");
}

#[test]
fn weighted_config_rejects_nonsense() {
    let bad = [
        WeightedConfig::default().latency_scale(Duration::ZERO),
        WeightedConfig::default().failure_penalty(1.0),
        WeightedConfig::default().failure_penalty(-0.1),
        WeightedConfig::default().recovery(Duration::ZERO),
        WeightedConfig::default().min_factor(0.0),
        WeightedConfig::default().min_factor(f64::NAN),
    ];
    for config in bad {
        assert!(Weighted::<u32, _>::with_config(config.clone(), SplitMix64::new(0)).is_err(), "{config:?} accepted");
    }
}

#[test]
fn strategies_parse_and_print_their_names() {
    for strategy in Strategy::ALL {
        assert_eq!(strategy.as_str().parse::<Strategy>(), Ok(strategy));
        assert_eq!(strategy.build::<u32>(0).name(), strategy.to_string());
    }
    assert_eq!(
        ["round-robin", "lru", "random", "least-outstanding", "weighted"].map(|s| s.parse::<Strategy>().is_ok()),
        [true; 5]
    );
    assert!("fastest".parse::<Strategy>().is_err());
}

#[test]
fn balancers_are_send() {
    fn check<T: Send>() {}
    check::<Box<dyn Balancer<String> + Send>>();
    check::<Weighted<String>>();
    check::<LeastRecentlyUsed<String>>();
}

fn candidate_list() -> impl proptest::strategy::Strategy<Value = Vec<Candidate<u32>>> {
    prop::collection::vec((any::<bool>(), 0u32..20, 0u32..5, 0.0f64..=1.0, prop::option::of(0u64..1000)), 0..12)
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (available, in_flight, weight, rate, latency))| {
                    Candidate::new(i as u32)
                        .available(available)
                        .in_flight(in_flight)
                        .weight(weight)
                        .failure_rate(rate)
                        .latency(latency.map(Duration::from_millis))
                })
                .collect()
        })
}

proptest! {
    #[test]
    fn only_available_candidates_are_chosen(candidates in candidate_list(), seed in any::<u64>(), picks in 1usize..50) {
        let t0 = Instant::now();
        let any_available = candidates.iter().any(Candidate::is_available);
        for strategy in Strategy::ALL {
            let mut balancer = strategy.build::<u32>(seed);
            for i in 0..picks {
                let now = t0 + Duration::from_millis(i as u64);
                match balancer.pick(&candidates, now) {
                    Some(index) => {
                        prop_assert!(candidates[index].is_available(), "{} chose {}", strategy, index);
                        balancer.record(candidates[index].id(), i % 3 == 0, now);
                    }
                    None => prop_assert!(!any_available, "{} chose nothing", strategy),
                }
            }
        }
    }

    #[test]
    fn least_outstanding_always_takes_a_minimum(candidates in candidate_list(), picks in 1usize..20) {
        let t0 = Instant::now();
        let least = candidates.iter().filter(|c| c.is_available()).map(Candidate::outstanding).min();
        let mut lo = LeastOutstanding::new();
        for _ in 0..picks {
            let chosen = lo.pick(&candidates, t0).map(|i| candidates[i].outstanding());
            prop_assert_eq!(chosen, least);
        }
    }

    #[test]
    fn recovery_factor_stays_in_bounds(failures in prop::collection::vec(0u64..20_000, 0..30), probe in 0u64..60_000) {
        let t0 = Instant::now();
        let mut w = Weighted::<u32, _>::new(SplitMix64::new(0));
        let mut at = t0;
        for gap in failures {
            at += Duration::from_millis(gap);
            w.record(&0, false, at);
        }
        let factor = w.recovery_factor(&0, at + Duration::from_millis(probe));
        prop_assert!((0.01..=1.0).contains(&factor), "{}", factor);
    }
}
