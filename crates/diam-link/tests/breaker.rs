//! The circuit breaker, driven with explicit `now` values (no sleeps).

use std::time::{Duration, Instant};

use diam_link::backoff::{Backoff, BackoffExt, Constant, Exponential};
use diam_link::breaker::{BreakerConfig, BreakerEvent, BreakerState, CircuitBreaker, TransitionReason};
use diam_link::events::EventData;
use proptest::prelude::*;

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn breaker<B: Backoff>(config: BreakerConfig, backoff: B) -> CircuitBreaker<B> {
    CircuitBreaker::new(config, backoff).unwrap()
}

fn events<B: Backoff>(
    b: &mut CircuitBreaker<B>,
) -> Vec<(BreakerState, BreakerState, TransitionReason, Option<Duration>)> {
    std::iter::from_fn(|| b.poll_event()).map(|e| (e.from(), e.to(), e.reason(), e.open_for())).collect()
}

use BreakerState::{Closed, HalfOpen, Open};

#[test]
fn consecutive_failures_open_for_the_backoff_delay() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(3), Constant::new(5 * S));
    for _ in 0..2 {
        assert!(b.allow(t0));
        b.on_failure(t0);
    }
    assert_eq!(b.state(), Closed);
    assert!(events(&mut b).is_empty());
    b.on_failure(t0 + S);
    assert_eq!(b.state(), Open);
    assert_eq!(b.poll_timeout(), Some(t0 + 6 * S));
    let event = b.poll_event().unwrap();
    assert_eq!((event.from(), event.to(), event.at()), (Closed, Open, t0 + S));
    assert_eq!(event.reason(), TransitionReason::ConsecutiveFailures(3));
    assert_eq!(event.open_for(), Some(5 * S));
    assert!(!b.allow(t0 + 6 * S - MS));
    assert!(!b.is_available(t0 + 6 * S - MS));
    assert!(b.is_available(t0 + 6 * S));
    assert_eq!(b.state(), Open, "is_available does not move the state");
    assert!(b.allow(t0 + 6 * S));
    assert_eq!(b.state(), HalfOpen);
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(events(&mut b), [(Open, HalfOpen, TransitionReason::WaitElapsed, None)]);
    b.on_success(t0 + 6 * S);
    assert_eq!(events(&mut b), [(HalfOpen, Closed, TransitionReason::ProbesSucceeded, None)]);
}

#[test]
fn a_success_breaks_the_streak() {
    let t0 = Instant::now();
    // A 2/3 failure rate stays under a 0.9 threshold.
    let mut b = breaker(BreakerConfig::default().consecutive_failures(3).failure_rate(0.9), Constant::new(S));
    for _ in 0..10 {
        b.on_failure(t0);
        b.on_failure(t0);
        b.on_success(t0);
    }
    assert_eq!(b.state(), Closed);
}

#[test]
fn failure_rate_over_the_window_with_a_minimum() {
    let t0 = Instant::now();
    let config = BreakerConfig::default().consecutive_failures(100).failure_rate(0.5).min_requests(10).window(10 * S);
    let mut b = breaker(config, Constant::new(S));
    for i in 0..4 {
        b.on_success(t0 + i * MS);
        b.on_failure(t0 + i * MS);
    }
    assert_eq!(b.state(), Closed, "8 requests are below the minimum");
    b.on_success(t0);
    b.on_failure(t0); // the 10th request and the 5th failure
    assert_eq!(b.state(), Open);
    assert_eq!(events(&mut b), [(Closed, Open, TransitionReason::FailureRate { failures: 5, requests: 10 }, Some(S))]);

    // Just under the rate: 4 failures in 10 requests at a threshold of 0.5.
    let config = BreakerConfig::default().consecutive_failures(100).failure_rate(0.5).min_requests(10);
    let mut b = breaker(config, Constant::new(S));
    for _ in 0..6 {
        b.on_success(t0);
    }
    for _ in 0..4 {
        b.on_failure(t0);
    }
    assert_eq!(b.state(), Closed);
    assert_eq!(b.window_counts(t0), (4, 10));
}

#[test]
fn old_outcomes_leave_the_window() {
    let t0 = Instant::now();
    let config = BreakerConfig::default().consecutive_failures(100).failure_rate(0.5).min_requests(10).window(10 * S);
    let mut b = breaker(config, Constant::new(S));
    for _ in 0..9 {
        b.on_failure(t0);
    }
    assert_eq!(b.window_counts(t0 + 9 * S), (9, 9));
    assert_eq!(b.window_counts(t0 + 10 * S), (0, 0));
    b.on_failure(t0 + 11 * S);
    assert_eq!(b.state(), Closed);
    assert_eq!(b.window_counts(t0 + 11 * S), (1, 1));
}

#[test]
fn open_wait_grows_with_repeated_trips_and_resets_when_closed() {
    let t0 = Instant::now();
    let backoff = Exponential::new(S, 8 * S, 2.0).unwrap();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1), backoff);
    let mut now = t0;
    b.on_failure(now);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let wait = b.poll_timeout().unwrap() - now;
        waits.push(wait);
        now += wait;
        assert!(b.allow(now));
        b.on_failure(now); // the probe fails
    }
    assert_eq!(waits, [1, 2, 4, 8, 8].map(|s| s * S));
    now = b.poll_timeout().unwrap();
    assert!(b.allow(now));
    b.on_success(now);
    assert_eq!(b.state(), Closed);
    let _ = events(&mut b);
    b.on_failure(now);
    assert_eq!(b.poll_timeout(), Some(now + S));
    assert_eq!(events(&mut b), [(Closed, Open, TransitionReason::ConsecutiveFailures(1), Some(S))]);
}

#[test]
fn probe_failure_reopens() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1), Constant::new(S));
    b.on_failure(t0);
    assert!(b.allow(t0 + S));
    b.on_failure(t0 + S);
    assert_eq!(b.state(), Open);
    assert_eq!(b.poll_timeout(), Some(t0 + 2 * S));
    assert_eq!(
        events(&mut b),
        [
            (Closed, Open, TransitionReason::ConsecutiveFailures(1), Some(S)),
            (Open, HalfOpen, TransitionReason::WaitElapsed, None),
            (HalfOpen, Open, TransitionReason::ProbeFailed, Some(S)),
        ]
    );
}

#[test]
fn half_open_admits_a_bounded_number_of_probes() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1).half_open_probes(2), Constant::new(S));
    b.on_failure(t0);
    let t1 = t0 + S;
    assert!(b.allow(t1));
    assert!(b.allow(t1));
    assert!(!b.allow(t1));
    assert!(!b.is_available(t1));
    b.on_success(t1);
    assert_eq!(b.state(), HalfOpen);
    assert!(!b.allow(t1), "one probe still out, one done: the budget is spent");
    b.on_success(t1);
    assert_eq!(b.state(), Closed);
    assert!(b.allow(t1));
}

#[test]
fn outcomes_while_open_are_stale() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1), Constant::new(S));
    b.on_failure(t0);
    let _ = events(&mut b);
    b.on_success(t0);
    b.on_failure(t0);
    assert_eq!(b.state(), Open);
    assert_eq!(b.poll_timeout(), Some(t0 + S));
    assert!(events(&mut b).is_empty());
}

#[test]
fn manual_trip_and_reset() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default(), Constant::new(S).boxed());
    b.trip(t0);
    b.trip(t0); // already open: no second event
    assert_eq!(b.poll_timeout(), Some(t0 + S));
    b.reset(t0);
    assert!(b.allow(t0));
    assert_eq!(
        events(&mut b),
        [(Closed, Open, TransitionReason::Tripped, Some(S)), (Open, Closed, TransitionReason::Reset, None)]
    );
}

#[test]
fn an_exhausted_backoff_repeats_its_last_delay() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1), [S, 3 * S].into_iter());
    let mut now = t0;
    let mut waits = Vec::new();
    b.on_failure(now);
    for _ in 0..4 {
        let until = b.poll_timeout().unwrap();
        waits.push(until - now);
        now = until;
        assert!(b.allow(now));
        b.on_failure(now);
    }
    assert_eq!(waits, [S, 3 * S, 3 * S, 3 * S]);
}

#[test]
fn config_rejects_nonsense() {
    let bad = [
        BreakerConfig::default().consecutive_failures(0),
        BreakerConfig::default().failure_rate(0.0),
        BreakerConfig::default().failure_rate(1.5),
        BreakerConfig::default().failure_rate(f64::NAN),
        BreakerConfig::default().window(MS),
        BreakerConfig::default().min_requests(0),
        BreakerConfig::default().half_open_probes(0),
    ];
    for config in bad {
        assert!(CircuitBreaker::new(config.clone(), Constant::new(S)).is_err(), "{config:?} accepted");
    }
}

#[test]
fn transitions_travel_as_custom_events() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1), Constant::new(S));
    b.on_failure(t0);
    let event = b.poll_event().unwrap();
    let EventData::Custom(custom) = event.to_event() else { panic!("not a custom event") };
    assert_eq!(custom.name(), BreakerEvent::EVENT_NAME);
    assert_eq!(custom.downcast_ref::<BreakerEvent>(), Some(&event));
    assert_eq!(BreakerState::HalfOpen.to_string(), "half_open");
}

#[test]
fn the_event_queue_is_bounded() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default(), Constant::new(S));
    for i in 0..100 {
        b.trip(t0 + i * MS);
        b.reset(t0 + i * MS);
    }
    assert_eq!(events(&mut b).len(), 16);
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Advance(u64),
    Allow,
    Success,
    Failure,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![(0u64..3_000).prop_map(Step::Advance), Just(Step::Allow), Just(Step::Success), Just(Step::Failure)]
}

proptest! {
    #[test]
    fn transitions_stay_consistent(steps in prop::collection::vec(step(), 0..400), probes in 1u32..4) {
        let config = BreakerConfig::default().consecutive_failures(3).min_requests(5).window(10 * S).half_open_probes(probes);
        let mut b = breaker(config, Exponential::new(100 * MS, 5 * S, 2.0).unwrap());
        let t0 = Instant::now();
        let mut now = t0;
        let mut state = Closed;
        let mut admitted_in_half_open = 0;
        for step in steps {
            match step {
                Step::Advance(ms) => now += Duration::from_millis(ms),
                Step::Allow => {
                    let was = b.state();
                    let open_until = b.poll_timeout();
                    let allowed = b.allow(now);
                    if let Some(until) = open_until {
                        prop_assert!(!(allowed && now < until));
                    }
                    if b.state() == HalfOpen {
                        if was != HalfOpen {
                            admitted_in_half_open = 0;
                        }
                        if allowed {
                            admitted_in_half_open += 1;
                            prop_assert!(admitted_in_half_open <= probes);
                        }
                    }
                }
                Step::Success => b.on_success(now),
                Step::Failure => b.on_failure(now),
            }
            while let Some(event) = b.poll_event() {
                prop_assert_eq!(event.from(), state);
                prop_assert_ne!(event.from(), event.to());
                prop_assert_eq!(event.at(), now);
                prop_assert_eq!(event.open_for().is_some(), event.to() == Open);
                state = event.to();
            }
            prop_assert_eq!(b.state(), state);
            let (failures, requests) = b.window_counts(now);
            prop_assert!(failures <= requests);
        }
    }
}

#[test]
fn an_abandoned_probe_frees_its_slot() {
    let t0 = Instant::now();
    let mut b = breaker(BreakerConfig::default().consecutive_failures(1), Constant::new(S));
    b.on_failure(t0);
    assert!(b.allow(t0 + S), "the probe");
    assert!(!b.allow(t0 + S), "only one probe at a time");
    b.on_abandoned();
    assert_eq!(b.state(), HalfOpen);
    assert!(b.allow(t0 + S), "the slot is free again");
    b.on_success(t0 + S);
    assert_eq!(b.state(), Closed);
    // Nothing to free while closed.
    b.on_abandoned();
    assert_eq!(b.state(), Closed);
}
