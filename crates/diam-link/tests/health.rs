//! The health monitor, driven step by step with explicit `now` values.

use std::time::{Duration, Instant};

use diam_link::events::EventData;
use diam_link::health::{ErrorCategory, HealthChange, HealthConfig, HealthMonitor, HealthStatus, Outcome};
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn monitor(config: HealthConfig) -> HealthMonitor {
    HealthMonitor::new(config).unwrap()
}

fn to(change: Option<HealthChange>) -> Option<HealthStatus> {
    change.map(|c| c.to())
}

#[test]
fn first_success_leaves_unknown_by_latency() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default());
    assert_eq!(m.status(), HealthStatus::Unknown);
    assert_eq!(m.status_since(), None);
    let change = m.record_success(20 * MS, t0 + MS).unwrap();
    assert_eq!(change.from(), HealthStatus::Unknown);
    assert_eq!(change.to(), HealthStatus::Healthy);
    assert_eq!(change.at(), t0 + MS);
    assert_eq!(change.cause(), Outcome::Success(20 * MS));
    assert_eq!(m.status_since(), Some(t0 + MS));
    assert_eq!(m.record_success(20 * MS, t0 + 2 * MS), None);
    assert_eq!(m.status_since(), Some(t0 + MS));

    let mut slow = monitor(HealthConfig::default());
    assert_eq!(to(slow.record_success(600 * MS, t0)), Some(HealthStatus::Degraded));
}

#[test]
fn failure_streaks_reach_unhealthy_then_dead() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default().failure_threshold(3).dead_threshold(5));
    let _ = m.record_success(10 * MS, t0);
    let mut changes = Vec::new();
    for i in 1..=6u32 {
        let at = t0 + Duration::from_secs(u64::from(i));
        changes.push(m.record_failure(ErrorCategory::Timeout, at).map(|c| (i, c.from(), c.to(), c.at())));
    }
    let secs = |s| t0 + Duration::from_secs(s);
    assert_eq!(
        changes.into_iter().flatten().collect::<Vec<_>>(),
        [
            (3, HealthStatus::Healthy, HealthStatus::Unhealthy, secs(3)),
            (5, HealthStatus::Unhealthy, HealthStatus::Dead, secs(5)),
        ]
    );
    assert_eq!(m.stats().consecutive_failures, 6);
    assert_eq!(m.stats().last_failure, Some((ErrorCategory::Timeout, secs(6))));
}

#[test]
fn failures_from_unknown_go_straight_to_unhealthy() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default().failure_threshold(2));
    assert_eq!(m.record_failure(ErrorCategory::Refused, t0), None);
    assert_eq!(m.status(), HealthStatus::Unknown);
    let change = m.record_failure(ErrorCategory::Refused, t0).unwrap();
    assert_eq!((change.from(), change.to()), (HealthStatus::Unknown, HealthStatus::Unhealthy));
    assert_eq!(change.cause(), Outcome::Failure(ErrorCategory::Refused));
}

#[test]
fn recovery_needs_consecutive_successes() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default().failure_threshold(1).dead_threshold(2).recovery_threshold(3));
    let _ = m.record_failure(ErrorCategory::Reset, t0);
    assert_eq!(to(m.record_failure(ErrorCategory::Reset, t0)), Some(HealthStatus::Dead));
    assert_eq!(m.record_success(MS, t0), None);
    assert_eq!(m.record_success(MS, t0), None);
    // A failure breaks the streak; still Dead (Dead never improves through failures).
    assert_eq!(m.record_failure(ErrorCategory::Protocol, t0), None);
    assert_eq!(m.status(), HealthStatus::Dead);
    assert_eq!(m.record_success(MS, t0), None);
    assert_eq!(m.record_success(MS, t0), None);
    let change = m.record_success(MS, t0 + MS).unwrap();
    assert_eq!((change.from(), change.to()), (HealthStatus::Dead, HealthStatus::Healthy));
}

#[test]
fn failures_below_the_threshold_keep_the_status() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default().failure_threshold(3));
    let _ = m.record_success(MS, t0);
    assert_eq!(m.record_failure(ErrorCategory::Application(3002), t0), None);
    assert_eq!(m.record_failure(ErrorCategory::Application(3002), t0), None);
    assert_eq!(m.record_success(MS, t0), None);
    assert_eq!(m.record_failure(ErrorCategory::Application(3002), t0), None);
    assert_eq!(m.status(), HealthStatus::Healthy);
}

#[test]
fn latency_thresholds_follow_the_ewma() {
    let t0 = Instant::now();
    let config = HealthConfig::default()
        .degraded_latency(100 * MS)
        .unhealthy_latency(1000 * MS)
        .ewma_alpha(1.0)
        .recovery_threshold(5);
    let mut m = monitor(config);
    assert_eq!(to(m.record_success(50 * MS, t0)), Some(HealthStatus::Healthy));
    assert_eq!(to(m.record_success(100 * MS, t0)), Some(HealthStatus::Degraded));
    assert_eq!(to(m.record_success(1000 * MS, t0)), Some(HealthStatus::Unhealthy));
    // Unhealthy by latency alone: one fast answer is enough, no recovery streak needed.
    assert_eq!(to(m.record_success(10 * MS, t0)), Some(HealthStatus::Healthy));

    // With alpha 0.5 the EWMA halves the distance each time: 0 → 800 → 400 → 200 ms.
    let mut m = monitor(HealthConfig::default().degraded_latency(300 * MS).ewma_alpha(0.5));
    let _ = m.record_success(Duration::ZERO, t0);
    assert_eq!(to(m.record_success(1600 * MS, t0)), Some(HealthStatus::Degraded));
    assert_eq!(m.ewma_latency(), Some(800 * MS));
    assert_eq!(m.record_success(Duration::ZERO, t0), None);
    assert_eq!(m.ewma_latency(), Some(400 * MS));
    assert_eq!(to(m.record_success(Duration::ZERO, t0)), Some(HealthStatus::Healthy));
    assert_eq!(m.ewma_latency(), Some(200 * MS));
}

#[test]
fn statistics_cover_the_bounded_history() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default().history(4).ewma_alpha(0.5));
    let _ = m.record_success(900 * MS, t0); // falls out of the history
    let _ = m.record_failure(ErrorCategory::Timeout, t0); // falls out too
    let _ = m.record_success(10 * MS, t0);
    let _ = m.record_failure(ErrorCategory::Reset, t0);
    let _ = m.record_success(30 * MS, t0);
    let _ = m.record_success(20 * MS, t0);
    assert_eq!(m.history().len(), 4);
    assert_eq!(
        m.history().collect::<Vec<_>>(),
        [
            Outcome::Success(10 * MS),
            Outcome::Failure(ErrorCategory::Reset),
            Outcome::Success(30 * MS),
            Outcome::Success(20 * MS)
        ]
    );
    let stats = m.stats();
    assert_eq!(stats.total_successes, 4);
    assert_eq!(stats.total_failures, 2);
    assert_eq!(stats.consecutive_successes, 2);
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.success_rate, Some(0.75));
    assert_eq!(stats.avg_latency, Some(20 * MS));
    assert_eq!(stats.max_latency, Some(30 * MS));
    // 900 → 455 → 242.5 → 131.25 ms (failures do not move the EWMA).
    assert_eq!(stats.ewma_latency, Some(Duration::from_micros(131_250)));

    let empty = monitor(HealthConfig::default());
    assert_eq!(empty.success_rate(), None);
    assert_eq!(empty.avg_latency(), None);
    assert_eq!(empty.stats().max_latency, None);
}

#[test]
fn config_rejects_nonsense() {
    let bad = [
        HealthConfig::default().failure_threshold(0),
        HealthConfig::default().failure_threshold(5).dead_threshold(4),
        HealthConfig::default().recovery_threshold(0),
        HealthConfig::default().degraded_latency(Duration::ZERO),
        HealthConfig::default().degraded_latency(2 * MS).unhealthy_latency(MS),
        HealthConfig::default().history(0),
        HealthConfig::default().history(1 << 20),
        HealthConfig::default().ewma_alpha(0.0),
        HealthConfig::default().ewma_alpha(1.5),
        HealthConfig::default().ewma_alpha(f64::NAN),
    ];
    for config in bad {
        assert!(HealthMonitor::new(config.clone()).is_err(), "{config:?} accepted");
    }
    assert!(HealthMonitor::new(HealthConfig::default().failure_threshold(4).dead_threshold(4)).is_ok());
}

#[test]
fn changes_travel_as_custom_events() {
    let t0 = Instant::now();
    let mut m = monitor(HealthConfig::default());
    let change = m.record_success(MS, t0).unwrap();
    let EventData::Custom(custom) = change.to_event() else { panic!("not a custom event") };
    assert_eq!(custom.name(), HealthChange::EVENT_NAME);
    assert_eq!(custom.downcast_ref::<HealthChange>(), Some(&change));
    assert_eq!(HealthStatus::Degraded.to_string(), "degraded");
    assert_eq!(ErrorCategory::Application(5012).to_string(), "application(5012)");
    assert!(HealthStatus::Degraded.is_usable() && !HealthStatus::Unknown.is_usable());
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        (0u64..3_000).prop_map(|ms| Outcome::Success(Duration::from_millis(ms))),
        Just(Outcome::Failure(ErrorCategory::Timeout)),
        any::<u32>().prop_map(|code| Outcome::Failure(ErrorCategory::Application(code))),
    ]
}

proptest! {
    #[test]
    fn invariants_hold_for_any_sequence(
        outcomes in prop::collection::vec(outcome(), 0..300),
        history in 1usize..50,
        failure in 1u32..5,
        extra in 0u32..5,
    ) {
        let config = HealthConfig::default().history(history).failure_threshold(failure).dead_threshold(failure + extra);
        let mut m = monitor(config);
        let t0 = Instant::now();
        for (i, outcome) in outcomes.iter().enumerate() {
            let before = m.status();
            let now = t0 + Duration::from_millis(i as u64);
            match m.record(*outcome, now) {
                Some(change) => {
                    prop_assert_eq!(change.from(), before);
                    prop_assert_ne!(change.from(), change.to());
                    prop_assert_eq!(change.to(), m.status());
                    prop_assert_eq!(m.status_since(), Some(now));
                }
                None => prop_assert_eq!(m.status(), before),
            }
            let stats = m.stats();
            prop_assert!(m.history().len() <= history);
            if let Some(rate) = stats.success_rate {
                prop_assert!((0.0..=1.0).contains(&rate));
            }
            if let (Some(avg), Some(max)) = (stats.avg_latency, stats.max_latency) {
                prop_assert!(avg <= max);
            }
            if stats.consecutive_failures >= failure + extra {
                prop_assert_eq!(m.status(), HealthStatus::Dead);
            } else if stats.consecutive_failures >= failure {
                prop_assert!(m.status() >= HealthStatus::Unhealthy);
            }
        }
    }
}
