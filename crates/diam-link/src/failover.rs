//! Primary/secondary failover as a sans-IO state machine: [`Failover`].
//!
//! A [`Failover`] watches an ordered list of members: member 0 is the primary, the
//! others are secondaries in order of preference. The caller reports whether each
//! member can carry traffic ([`set_available`](Failover::set_available)) and which
//! member answered ([`confirm`](Failover::confirm)); the machine says which member
//! is [`active`](Failover::active) and queues a [`FailoverEvent`] on every change of
//! state.
//!
//! | state | meaning |
//! |---|---|
//! | [`Primary`](FailoverState::Primary) | the primary carries traffic |
//! | [`Secondary`](FailoverState::Secondary) | a secondary carries traffic |
//! | [`FailingOver`](FailoverState::FailingOver) | the active member failed (or a manual failover was asked for); traffic goes to a secondary that has not answered yet |
//! | [`FailingBack`](FailoverState::FailingBack) | traffic goes back to the primary, which has not answered yet |
//! | [`Unavailable`](FailoverState::Unavailable) | no member can carry traffic |
//!
//! The rules:
//!
//! * When the active member becomes unavailable, the most preferred available member
//!   takes over ([`preference`](Failover::preference): the primary first, then the
//!   secondaries in order; but when a secondary fails, or during a manual hold, the
//!   other secondaries come before the primary): `FailingOver` to a secondary,
//!   `FailingBack` to the primary. The first [`confirm`](Failover::confirm)ed
//!   answer from it completes the switch (`Secondary` or `Primary`). With no member
//!   available the state is `Unavailable`; the first member to become available then
//!   takes over directly.
//! * Auto-failback (on by default): once the primary has been available without a break
//!   for `failback_after`, traffic moves back to it (`FailingBack`). A primary that has
//!   never been available yet (start-up) takes over as soon as it is, with no wait: the
//!   stable period guards against a flapping primary, not a slow first connection.
//! * A [manual failover](Failover::failover) moves traffic to the best available
//!   secondary and holds it there: auto-failback stays off until a
//!   [manual failback](Failover::failback).
//!
//! Like the other machines in this crate it never reads the clock: every input takes
//! `now`, and [`poll_timeout`](Failover::poll_timeout) says when
//! [`handle_timeout`](Failover::handle_timeout) has work (a failback falling due).
//!
//! ```
//! use std::time::{Duration, Instant};
//! use diam_link::failover::{Failover, FailoverConfig, FailoverState};
//!
//! let config = FailoverConfig::default().failback_after(Duration::from_secs(30));
//! let mut f = Failover::new(2, config)?;
//! let t0 = Instant::now();
//! f.set_available(0, true, t0);
//! f.set_available(1, true, t0);
//! assert_eq!((f.state(), f.active()), (FailoverState::Primary, Some(0)));
//!
//! f.set_available(0, false, t0); // the primary's connection is lost
//! assert_eq!((f.state(), f.active()), (FailoverState::FailingOver, Some(1)));
//! f.confirm(1, t0); // the secondary answered
//! assert_eq!(f.state(), FailoverState::Secondary);
//!
//! let back = t0 + Duration::from_secs(5);
//! f.set_available(0, true, back); // the primary is back: failback in 30 s
//! assert_eq!(f.poll_timeout(), Some(back + Duration::from_secs(30)));
//! f.handle_timeout(back + Duration::from_secs(30));
//! assert_eq!((f.state(), f.active()), (FailoverState::FailingBack, Some(0)));
//! # Ok::<(), diam_link::ConfigError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::error::ConfigError;
use crate::events::{CustomEvent, EventData};

/// Where traffic goes; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailoverState {
    /// The primary carries traffic.
    Primary,
    /// A secondary carries traffic.
    Secondary,
    /// Switching to a secondary that has not answered yet.
    FailingOver,
    /// Switching back to the primary, which has not answered yet.
    FailingBack,
    /// No member can carry traffic.
    Unavailable,
}

impl FailoverState {
    /// A short stable name: `primary`, `secondary`, `failing_over`, `failing_back` or
    /// `unavailable`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Secondary => "secondary",
            Self::FailingOver => "failing_over",
            Self::FailingBack => "failing_back",
            Self::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for FailoverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the state or the active member changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailoverReason {
    /// This member, the active one, became unavailable.
    MemberDown(usize),
    /// This member became available while none was.
    MemberUp(usize),
    /// The new active member answered: the switch is complete.
    Confirmed,
    /// The primary has been available for the whole failback period.
    PrimaryStable,
    /// [`Failover::failover`] was called.
    ManualFailover,
    /// [`Failover::failback`] was called.
    ManualFailback,
}

/// A change of state or of active member, queued for [`Failover::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverEvent {
    from: FailoverState,
    to: FailoverState,
    previous: Option<usize>,
    active: Option<usize>,
    reason: FailoverReason,
    at: Instant,
}

impl FailoverEvent {
    /// The name under which [`to_event`](Self::to_event) wraps a change.
    pub const EVENT_NAME: &'static str = "failover";

    /// The state before.
    pub const fn from(&self) -> FailoverState {
        self.from
    }

    /// The state after.
    pub const fn to(&self) -> FailoverState {
        self.to
    }

    /// The active member before.
    pub const fn previous(&self) -> Option<usize> {
        self.previous
    }

    /// The active member after.
    pub const fn active(&self) -> Option<usize> {
        self.active
    }

    /// Why it happened.
    pub const fn reason(&self) -> FailoverReason {
        self.reason
    }

    /// The `now` of the call that caused it.
    pub const fn at(&self) -> Instant {
        self.at
    }

    /// The change as a [`CustomEvent`] named [`EVENT_NAME`](Self::EVENT_NAME), for an
    /// [`EventDispatcher`](crate::events::EventDispatcher).
    pub fn to_event(&self) -> EventData {
        EventData::Custom(CustomEvent::new(Self::EVENT_NAME, *self))
    }
}

/// Failback settings for a [`Failover`], validated by [`Failover::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct FailoverConfig {
    auto_failback: bool,
    failback_after: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self { auto_failback: true, failback_after: Duration::from_secs(30) }
    }
}

impl FailoverConfig {
    /// Whether traffic returns to the primary on its own once it has been available for
    /// [`failback_after`](Self::failback_after). Default true.
    pub fn auto_failback(mut self, on: bool) -> Self {
        self.auto_failback = on;
        self
    }

    /// How long the primary must stay available before an automatic failback. Default
    /// 30 s (one RFC 3539 watchdog interval Tw, so a primary that fails its first DWR
    /// does not take traffic back); not zero.
    pub fn failback_after(mut self, period: Duration) -> Self {
        self.failback_after = period;
        self
    }

    /// Whether automatic failback is on.
    pub fn is_auto_failback(&self) -> bool {
        self.auto_failback
    }

    /// The stable period before an automatic failback.
    pub fn failback_period(&self) -> Duration {
        self.failback_after
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.failback_after.is_zero() {
            return Err(ConfigError::value("failback period", "must be greater than zero"));
        }
        Ok(())
    }
}

/// Counters and the current position of a [`Failover`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailoverStats {
    /// The current state.
    pub state: FailoverState,
    /// The member carrying traffic.
    pub active: Option<usize>,
    /// When the current state began (`None` while still the initial `Unavailable`).
    pub since: Option<Instant>,
    /// Switches away from the active member to another one (automatic and manual).
    pub failovers: u64,
    /// Of those, the manual ones.
    pub manual_failovers: u64,
    /// Switches back to the primary (after its stable period, by hand, or because it was
    /// the only member left).
    pub failbacks: u64,
    /// Times no member could carry traffic.
    pub unavailable: u64,
    /// When the last failover began.
    pub last_failover: Option<Instant>,
    /// When the last failback began.
    pub last_failback: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    /// Available since; `None` while unavailable.
    up_since: Option<Instant>,
}

const MAX_MEMBERS: usize = 65_536;
const MAX_EVENTS: usize = 16;

/// The failover state machine; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Failover {
    config: FailoverConfig,
    members: Vec<Member>,
    state: FailoverState,
    active: Option<usize>,
    since: Option<Instant>,
    /// A manual failover holds traffic off the primary until a manual failback.
    held: bool,
    /// Set once the primary has been available: only then does failback wait.
    primary_seen: bool,
    failovers: u64,
    manual_failovers: u64,
    failbacks: u64,
    unavailable: u64,
    last_failover: Option<Instant>,
    last_failback: Option<Instant>,
    events: VecDeque<FailoverEvent>,
}

impl Failover {
    /// A machine over `members` members (member 0 the primary), all unavailable, in state
    /// `Unavailable`. Rejects zero or more than 65,536 members and an invalid `config`.
    pub fn new(members: usize, config: FailoverConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        if !(1..=MAX_MEMBERS).contains(&members) {
            return Err(ConfigError::value("failover members", "must be between 1 and 65536"));
        }
        Ok(Self {
            config,
            members: vec![Member { up_since: None }; members],
            state: FailoverState::Unavailable,
            active: None,
            since: None,
            held: false,
            primary_seen: false,
            failovers: 0,
            manual_failovers: 0,
            failbacks: 0,
            unavailable: 0,
            last_failover: None,
            last_failback: None,
            events: VecDeque::new(),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    /// The number of members.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The current state.
    pub fn state(&self) -> FailoverState {
        self.state
    }

    /// The member that should carry traffic now; `None` when `Unavailable`.
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Whether `member` is available, as last reported. Out of range is `false`.
    pub fn is_available(&self, member: usize) -> bool {
        self.members.get(member).is_some_and(|m| m.up_since.is_some())
    }

    /// Whether a manual failover holds traffic off the primary.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Reports whether `member` can carry traffic now. Repeating the same value changes
    /// nothing (in particular it does not restart the primary's stable period), so the
    /// caller may report every member on every check. Out-of-range members are ignored.
    pub fn set_available(&mut self, member: usize, available: bool, now: Instant) {
        let Some(m) = self.members.get_mut(member) else { return };
        if m.up_since.is_some() == available {
            return;
        }
        m.up_since = available.then_some(now);
        if available {
            let first_primary = member == 0 && !self.primary_seen;
            if member == 0 {
                self.primary_seen = true;
            }
            match self.active {
                None => {
                    let to = if member == 0 { FailoverState::Primary } else { FailoverState::Secondary };
                    self.set(to, Some(member), FailoverReason::MemberUp(member), now);
                }
                // A primary seen for the first time (start-up) takes over at once;
                // not counted as a failback, since nothing failed.
                Some(active) if first_primary && active != 0 && !self.held => {
                    self.set(FailoverState::FailingBack, Some(0), FailoverReason::MemberUp(0), now);
                }
                Some(_) => {}
            }
        } else if self.active == Some(member) {
            self.switch_away(member, FailoverReason::MemberDown(member), now);
        }
    }

    /// Reports an answer from `member`. It completes a switch in progress when `member`
    /// is the new active one; otherwise it changes nothing, so the caller may report every
    /// answer.
    pub fn confirm(&mut self, member: usize, now: Instant) {
        if self.active != Some(member) {
            return;
        }
        match self.state {
            FailoverState::FailingOver => {
                self.set(FailoverState::Secondary, Some(member), FailoverReason::Confirmed, now)
            }
            FailoverState::FailingBack => {
                self.set(FailoverState::Primary, Some(member), FailoverReason::Confirmed, now)
            }
            _ => {}
        }
    }

    /// Moves traffic to the most preferred available secondary other than the active
    /// member, and holds it off the primary until [`failback`](Self::failback). Returns
    /// the new active member, or `None` (and changes nothing) when no other secondary is
    /// available.
    pub fn failover(&mut self, now: Instant) -> Option<usize> {
        let current = self.active?;
        let next = (1..self.members.len()).find(|&i| i != current && self.members[i].up_since.is_some())?;
        self.held = true;
        self.manual_failovers += 1;
        self.begin_switch(next, FailoverReason::ManualFailover, now);
        Some(next)
    }

    /// Ends a manual hold and moves traffic back to the primary when it is available (at
    /// once, without the stable period). Returns whether traffic moved.
    pub fn failback(&mut self, now: Instant) -> bool {
        self.held = false;
        if self.active == Some(0) || !self.is_available(0) {
            return false;
        }
        self.failbacks += 1;
        self.last_failback = Some(now);
        self.set(FailoverState::FailingBack, Some(0), FailoverReason::ManualFailback, now);
        true
    }

    /// When an automatic failback falls due, if one is scheduled.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.config.auto_failback || self.held || matches!(self.active, None | Some(0)) {
            return None;
        }
        self.members[0].up_since.map(|since| since + self.config.failback_after)
    }

    /// Performs an automatic failback that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|due| now >= due) {
            self.failbacks += 1;
            self.last_failback = Some(now);
            self.set(FailoverState::FailingBack, Some(0), FailoverReason::PrimaryStable, now);
        }
    }

    /// The oldest change not yet polled. At most 16 are kept; older ones are dropped.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<FailoverEvent> {
        self.events.pop_front()
    }

    /// Counters and position.
    pub fn stats(&self) -> FailoverStats {
        FailoverStats {
            state: self.state,
            active: self.active,
            since: self.since,
            failovers: self.failovers,
            manual_failovers: self.manual_failovers,
            failbacks: self.failbacks,
            unavailable: self.unavailable,
            last_failover: self.last_failover,
            last_failback: self.last_failback,
        }
    }

    /// The members in the order they should take traffic now: the primary
    /// first, then the secondaries in order; but while traffic is on a
    /// secondary (or held off the primary by a manual failover) the other
    /// secondaries come before the primary, which only gets traffic back by a
    /// failback (or when no secondary is left). Use it to pick a substitute
    /// when the active member cannot take a particular request.
    pub fn preference(&self) -> impl Iterator<Item = usize> {
        let n = self.members.len();
        let primary_last = self.held || self.active.is_some_and(|a| a != 0);
        let (first, rest) = if primary_last { (1, 0..1) } else { (0, 0..0) };
        (first..n).chain(rest)
    }

    /// The most preferred available member, skipping `except`.
    fn best_available(&self, except: Option<usize>) -> Option<usize> {
        self.preference().find(|&i| Some(i) != except && self.members[i].up_since.is_some())
    }

    fn switch_away(&mut self, failed: usize, reason: FailoverReason, now: Instant) {
        match self.best_available(Some(failed)) {
            Some(next) => self.begin_switch(next, reason, now),
            None => {
                self.unavailable += 1;
                self.set(FailoverState::Unavailable, None, reason, now);
            }
        }
    }

    fn begin_switch(&mut self, next: usize, reason: FailoverReason, now: Instant) {
        if next == 0 {
            self.failbacks += 1;
            self.last_failback = Some(now);
            self.set(FailoverState::FailingBack, Some(0), reason, now);
        } else {
            self.failovers += 1;
            self.last_failover = Some(now);
            self.set(FailoverState::FailingOver, Some(next), reason, now);
        }
    }

    fn set(&mut self, to: FailoverState, active: Option<usize>, reason: FailoverReason, now: Instant) {
        let (from, previous) = (self.state, self.active);
        if from == to && previous == active {
            return;
        }
        self.state = to;
        self.active = active;
        self.since = Some(now);
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(FailoverEvent { from, to, previous, active, reason, at: now });
    }
}
