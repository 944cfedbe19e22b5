//! The failover machine, driven with explicit `now` values (no sleeps).

use std::time::{Duration, Instant};

use diam_link::events::EventData;
use diam_link::failover::{Failover, FailoverConfig, FailoverEvent, FailoverReason, FailoverState};
use proptest::prelude::*;

use FailoverState::{FailingBack, FailingOver, Primary, Secondary, Unavailable};

const S: Duration = Duration::from_secs(1);

fn events(f: &mut Failover) -> Vec<(FailoverState, FailoverState, Option<usize>, FailoverReason)> {
    std::iter::from_fn(|| f.poll_event()).map(|e| (e.from(), e.to(), e.active(), e.reason())).collect()
}

/// Two members, both up, on the primary; events drained.
fn pair(config: FailoverConfig, t0: Instant) -> Failover {
    let mut f = Failover::new(2, config).unwrap();
    f.set_available(0, true, t0);
    f.set_available(1, true, t0);
    let _ = events(&mut f);
    f
}

#[test]
fn config_and_sizes_are_validated() {
    assert!(Failover::new(0, FailoverConfig::default()).is_err());
    assert!(Failover::new(65_537, FailoverConfig::default()).is_err());
    assert!(Failover::new(2, FailoverConfig::default().failback_after(Duration::ZERO)).is_err());
    let f = Failover::new(3, FailoverConfig::default()).unwrap();
    assert_eq!((f.state(), f.active(), f.members()), (Unavailable, None, 3));
    assert_eq!(f.poll_timeout(), None);
}

#[test]
fn start_up_prefers_the_primary_without_waiting() {
    let t0 = Instant::now();
    let mut f = Failover::new(2, FailoverConfig::default()).unwrap();
    // The secondary's connection opens first.
    f.set_available(1, true, t0);
    assert_eq!((f.state(), f.active()), (Secondary, Some(1)));
    f.set_available(0, true, t0 + S);
    assert_eq!((f.state(), f.active()), (FailingBack, Some(0)));
    f.confirm(0, t0 + S);
    assert_eq!(f.state(), Primary);
    assert_eq!(
        events(&mut f),
        [
            (Unavailable, Secondary, Some(1), FailoverReason::MemberUp(1)),
            (Secondary, FailingBack, Some(0), FailoverReason::MemberUp(0)),
            (FailingBack, Primary, Some(0), FailoverReason::Confirmed),
        ]
    );
    let stats = f.stats();
    assert_eq!((stats.failovers, stats.failbacks), (0, 0), "start-up is neither a failover nor a failback");
}

#[test]
fn primary_failure_fails_over_and_the_first_answer_completes_it() {
    let t0 = Instant::now();
    let mut f = pair(FailoverConfig::default(), t0);
    f.set_available(0, false, t0 + S);
    assert_eq!((f.state(), f.active()), (FailingOver, Some(1)));
    // An answer from the old primary (sent before the failure) changes nothing.
    f.confirm(0, t0 + S);
    assert_eq!(f.state(), FailingOver);
    f.confirm(1, t0 + 2 * S);
    assert_eq!((f.state(), f.active()), (Secondary, Some(1)));
    assert_eq!(
        events(&mut f),
        [
            (Primary, FailingOver, Some(1), FailoverReason::MemberDown(0)),
            (FailingOver, Secondary, Some(1), FailoverReason::Confirmed),
        ]
    );
    let stats = f.stats();
    assert_eq!((stats.failovers, stats.failbacks, stats.last_failover), (1, 0, Some(t0 + S)));
    assert_eq!(stats.since, Some(t0 + 2 * S));
}

#[test]
fn failback_waits_for_the_whole_stable_period() {
    let t0 = Instant::now();
    let mut f = pair(FailoverConfig::default().failback_after(10 * S), t0);
    f.set_available(0, false, t0);
    f.confirm(1, t0);
    f.set_available(0, true, t0 + S);
    assert_eq!(f.poll_timeout(), Some(t0 + 11 * S));
    // Reporting the same availability again does not restart the period.
    f.set_available(0, true, t0 + 5 * S);
    assert_eq!(f.poll_timeout(), Some(t0 + 11 * S));
    f.handle_timeout(t0 + 11 * S - Duration::from_nanos(1));
    assert_eq!(f.state(), Secondary, "not a moment early");
    f.handle_timeout(t0 + 11 * S);
    assert_eq!((f.state(), f.active()), (FailingBack, Some(0)));
    assert_eq!(f.poll_timeout(), None);
    f.confirm(0, t0 + 11 * S);
    assert_eq!(f.state(), Primary);
    let evs = events(&mut f);
    assert_eq!(evs[2], (Secondary, FailingBack, Some(0), FailoverReason::PrimaryStable));
    assert_eq!(f.stats().failbacks, 1);
}

#[test]
fn a_flapping_primary_restarts_the_stable_period() {
    let t0 = Instant::now();
    let mut f = pair(FailoverConfig::default().failback_after(10 * S), t0);
    f.set_available(0, false, t0);
    f.set_available(0, true, t0 + S);
    f.set_available(0, false, t0 + 8 * S);
    assert_eq!(f.poll_timeout(), None);
    f.handle_timeout(t0 + 11 * S);
    assert_eq!(f.active(), Some(1));
    f.set_available(0, true, t0 + 9 * S);
    assert_eq!(f.poll_timeout(), Some(t0 + 19 * S));
}

#[test]
fn without_auto_failback_traffic_stays_on_the_secondary() {
    let t0 = Instant::now();
    let mut f = pair(FailoverConfig::default().auto_failback(false), t0);
    f.set_available(0, false, t0);
    f.set_available(0, true, t0 + S);
    assert_eq!(f.poll_timeout(), None);
    f.handle_timeout(t0 + 3600 * S);
    assert_eq!(f.active(), Some(1));
    assert!(f.failback(t0 + 3600 * S));
    assert_eq!((f.state(), f.active()), (FailingBack, Some(0)));
}

#[test]
fn manual_failover_holds_until_manual_failback() {
    let t0 = Instant::now();
    let mut f = pair(FailoverConfig::default().failback_after(S), t0);
    assert_eq!(f.failover(t0), Some(1));
    assert!(f.is_held());
    assert_eq!((f.state(), f.active()), (FailingOver, Some(1)));
    f.confirm(1, t0);
    // The primary is available throughout, yet no automatic failback.
    assert_eq!(f.poll_timeout(), None);
    f.handle_timeout(t0 + 60 * S);
    assert_eq!(f.active(), Some(1));
    // No other secondary to move to.
    assert_eq!(f.failover(t0 + 60 * S), None);
    assert!(f.failback(t0 + 61 * S));
    assert!(!f.is_held());
    assert_eq!(
        events(&mut f),
        [
            (Primary, FailingOver, Some(1), FailoverReason::ManualFailover),
            (FailingOver, Secondary, Some(1), FailoverReason::Confirmed),
            (Secondary, FailingBack, Some(0), FailoverReason::ManualFailback),
        ]
    );
    let stats = f.stats();
    assert_eq!((stats.failovers, stats.manual_failovers, stats.failbacks), (1, 1, 1));
}

#[test]
fn secondaries_are_tried_in_order_and_all_down_is_unavailable() {
    let t0 = Instant::now();
    let mut f = Failover::new(3, FailoverConfig::default()).unwrap();
    for m in 0..3 {
        f.set_available(m, true, t0);
    }
    f.set_available(0, false, t0);
    assert_eq!(f.active(), Some(1));
    // The new active one fails before answering: on to the next.
    f.set_available(1, false, t0 + S);
    assert_eq!((f.state(), f.active()), (FailingOver, Some(2)));
    f.set_available(2, false, t0 + 2 * S);
    assert_eq!((f.state(), f.active()), (Unavailable, None));
    assert_eq!(f.stats().unavailable, 1);
    // Whichever comes back first takes over at once.
    f.set_available(2, true, t0 + 3 * S);
    assert_eq!((f.state(), f.active()), (Secondary, Some(2)));
    // A down secondary that is not active changes nothing.
    f.set_available(1, true, t0 + 3 * S);
    f.set_available(1, false, t0 + 4 * S);
    assert_eq!(f.active(), Some(2));
}

#[test]
fn losing_the_last_secondary_fails_back_to_an_unstable_primary() {
    let t0 = Instant::now();
    let mut f = pair(FailoverConfig::default().failback_after(60 * S), t0);
    f.set_available(0, false, t0);
    f.confirm(1, t0);
    f.set_available(0, true, t0 + S);
    f.set_available(1, false, t0 + 2 * S);
    assert_eq!((f.state(), f.active()), (FailingBack, Some(0)));
    assert_eq!(events(&mut f).last().map(|e| e.3), Some(FailoverReason::MemberDown(1)));
}

#[test]
fn events_are_bounded_and_wrap_as_custom_events() {
    let t0 = Instant::now();
    let mut f = Failover::new(2, FailoverConfig::default()).unwrap();
    f.set_available(1, true, t0);
    for i in 0..40u32 {
        f.set_available(1, i % 2 == 1, t0 + S * i);
    }
    let evs: Vec<FailoverEvent> = std::iter::from_fn(|| f.poll_event()).collect();
    assert_eq!(evs.len(), 16);
    let EventData::Custom(c) = evs[0].to_event() else { panic!("not a custom event") };
    assert_eq!(c.name(), FailoverEvent::EVENT_NAME);
    assert_eq!(c.downcast_ref::<FailoverEvent>(), Some(&evs[0]));
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize, bool),
    Confirm(usize),
    Tick,
    Failover,
    Failback,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4usize, any::<bool>()).prop_map(|(m, up)| Op::Set(m, up)),
        (0..4usize).prop_map(Op::Confirm),
        Just(Op::Tick),
        Just(Op::Failover),
        Just(Op::Failback),
    ]
}

proptest! {
    /// Whatever happens: the active member is available, `Unavailable` means no active
    /// member and no available one, the primary-side states mean member 0, and a member
    /// is available whenever any is.
    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut f = Failover::new(3, FailoverConfig::default().failback_after(5 * S)).unwrap();
        for (i, op) in ops.into_iter().enumerate() {
            let now = t0 + S * i as u32;
            match op {
                Op::Set(m, up) => f.set_available(m, up, now),
                Op::Confirm(m) => f.confirm(m, now),
                Op::Tick => f.handle_timeout(now),
                Op::Failover => { let _ = f.failover(now); }
                Op::Failback => { let _ = f.failback(now); }
            }
            let any_up = (0..3).any(|m| f.is_available(m));
            match f.active() {
                None => {
                    prop_assert_eq!(f.state(), Unavailable);
                    prop_assert!(!any_up);
                }
                Some(a) => {
                    prop_assert!(f.is_available(a));
                    prop_assert_eq!(matches!(f.state(), Primary | FailingBack), a == 0);
                }
            }
            if let Some(due) = f.poll_timeout() {
                prop_assert!(due > t0);
            }
        }
    }
}

#[test]
fn a_held_or_failed_secondary_prefers_the_other_secondaries() {
    let t0 = Instant::now();
    let mut f = Failover::new(3, FailoverConfig::default()).unwrap();
    for m in 0..3 {
        f.set_available(m, true, t0);
    }
    assert_eq!(f.preference().collect::<Vec<_>>(), [0, 1, 2]);
    // Held on member 1: when it fails, traffic goes to 2, not to the primary.
    assert_eq!(f.failover(t0), Some(1));
    assert_eq!(f.preference().collect::<Vec<_>>(), [1, 2, 0]);
    f.set_available(1, false, t0 + S);
    assert_eq!((f.state(), f.active()), (FailingOver, Some(2)));
    // Without a hold, a failing secondary also goes to the next secondary while
    // the primary serves out its stable period.
    let mut f = Failover::new(3, FailoverConfig::default()).unwrap();
    for m in 0..3 {
        f.set_available(m, true, t0);
    }
    f.set_available(0, false, t0);
    f.set_available(0, true, t0 + S);
    f.set_available(1, false, t0 + 2 * S);
    assert_eq!(f.active(), Some(2));
    // The last secondary gone: the primary it is.
    f.set_available(2, false, t0 + 3 * S);
    assert_eq!((f.state(), f.active()), (FailingBack, Some(0)));
}
