//! The RFC 3539 §3.4 transport watchdog, sans-IO.
//!
//! [`Watchdog`] decides when to send a Device-Watchdog-Request, when a peer
//! is suspect, and when the connection must be closed. It reads no clock:
//! time comes in as `now`, and the caller asks [`Watchdog::poll_timeout`]
//! when to call [`Watchdog::handle_timeout`] next.
//!
//! The RFC algorithm is extended with two knobs that operators of Diameter
//! stacks expect: a DWR timeout (how long to wait for a DWA, instead of a
//! full Tw) and the number of consecutive unanswered DWRs that takes the
//! connection DOWN.
//!
//! | event | OKAY | SUSPECT | REOPEN |
//! |---|---|---|---|
//! | any message received | restart Tw | → OKAY | (DWA only counts) |
//! | Tw expires, no DWR pending | send DWR | – | send DWR |
//! | DWR timeout, misses < max | → SUSPECT, send DWR after Tw | send DWR after Tw | → DOWN |
//! | DWR timeout, misses = max | → DOWN | → DOWN | → DOWN |
//! | DWA received in REOPEN | | | 3rd consecutive → OKAY |
//!
//! DOWN closes the connection; when the transport is re-established the
//! watchdog enters REOPEN and application traffic waits until three DWAs
//! in a row have come back (RFC 3539 §3.4.1).
//!
//! Each Tw is drawn uniformly from `interval ± jitter` (RFC 3539 §3.4.1).
//! The first Tw of a connection is drawn from a wider window that reaches
//! further *down*, to `interval - first_interval_spread` (at most Tw/2; see
//! [`WatchdogConfig::first_interval_spread`]), so that many connections
//! opened together do not send their DWRs in phase ever after.

use std::time::{Duration, Instant};

/// Watchdog settings. Defaults follow RFC 3539 and common Diameter stacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Tw, the watchdog interval: DWR is sent after this much silence.
    /// Default 30 s (RFC 3539 §3.4.1 recommends 30 s; minimum 6 s).
    pub interval: Duration,
    /// Random jitter applied to each Tw, uniformly in ±`jitter`.
    /// Default 2 s (RFC 3539 §3.4.1).
    pub jitter: Duration,
    /// How much earlier than Tw the *first* DWR of a connection may be due.
    /// Default 15 s (half the default Tw).
    ///
    /// Until the first DWR of a connection goes out (after it opens, or
    /// after REOPEN has received its DWAs), each Tw is drawn uniformly from
    /// `[interval - s, interval + jitter]` with
    /// `s = max(jitter, min(first_interval_spread, interval / 2))`; every
    /// later Tw is `interval ± jitter` again. With the defaults the first
    /// DWR comes after 15 s to 32 s of silence, then every 28 s to 32 s.
    ///
    /// Why: RFC 3539 §3.4.1 jitters Tw by ±2 s "to avoid synchronization
    /// behaviors"; ±2 s is too narrow for thousands of connections opened
    /// at the same instant (a restart, a bench), whose watchdogs would fire
    /// within the same 4 s forever. The window is widened downwards only:
    /// a DWR earlier than Tw is one extra probe, which can only detect a
    /// failure sooner, while a later one would delay detection. Values
    /// above `interval / 2` act as `interval / 2`, so the spread never
    /// brings a DWR sooner than Tw/2 after the last message received (Tw
    /// may be as low as the 6 s minimum); zero makes the first Tw like the
    /// others.
    pub first_interval_spread: Duration,
    /// How long to wait for a DWA before counting the DWR as unanswered.
    /// Default 10 s.
    pub dwr_timeout: Duration,
    /// Consecutive unanswered DWRs that take the connection DOWN. The first
    /// one already makes it SUSPECT (no new requests are sent to it).
    /// Default 3.
    pub max_dwr_failures: u32,
    /// DWAs in a row needed in REOPEN before traffic resumes. RFC 3539
    /// §3.4.1 uses 3.
    pub reopen_dwas: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(2),
            first_interval_spread: Duration::from_secs(15),
            dwr_timeout: Duration::from_secs(10),
            max_dwr_failures: 3,
            reopen_dwas: 3,
        }
    }
}

/// The RFC 3539 minimum for Tw.
pub const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_secs(6);

impl WatchdogConfig {
    /// Checks the settings: all durations positive, jitter below the
    /// interval, at least one DWR failure and one REOPEN DWA (any
    /// `first_interval_spread` is valid: it is capped at Tw/2). An interval
    /// under [`MIN_WATCHDOG_INTERVAL`] is allowed (tests need it); callers
    /// should warn about it.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.interval.is_zero() {
            return Err("watchdog interval must be positive");
        }
        if self.jitter >= self.interval {
            return Err("watchdog jitter must be smaller than the interval");
        }
        if self.dwr_timeout.is_zero() {
            return Err("DWR timeout must be positive");
        }
        if self.max_dwr_failures == 0 {
            return Err("max DWR failures must be at least 1");
        }
        if self.reopen_dwas == 0 {
            return Err("REOPEN needs at least one DWA");
        }
        Ok(())
    }
}

/// Watchdog states (RFC 3539 §3.4). `Initial` is before the first open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchdogState {
    /// No connection has been open yet.
    Initial,
    /// The peer answers; traffic flows.
    Okay,
    /// A DWR went unanswered; no new requests should be sent to this peer.
    Suspect,
    /// The connection is considered dead and must be closed.
    Down,
    /// Reconnected; waiting for consecutive DWAs before sending traffic.
    Reopen,
}

impl WatchdogState {
    /// Whether application requests may be sent in this state.
    pub fn can_send(self) -> bool {
        matches!(self, WatchdogState::Okay)
    }
}

/// What the watchdog wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogEvent {
    /// Send a Device-Watchdog-Request now.
    SendDwr,
    /// The state changed.
    StateChanged {
        /// Previous state.
        from: WatchdogState,
        /// New state.
        to: WatchdogState,
    },
    /// Close the transport connection (the state is now DOWN).
    CloseConnection,
}

/// The RFC 3539 watchdog for one peer (it survives reconnections, so that
/// a reconnected peer goes through REOPEN).
#[derive(Debug, Clone)]
pub struct Watchdog {
    config: WatchdogConfig,
    state: WatchdogState,
    /// When the next timer fires (Tw or DWR timeout).
    deadline: Option<Instant>,
    /// A DWR is outstanding.
    pending: bool,
    /// Consecutive unanswered DWRs.
    misses: u32,
    /// DWAs received in REOPEN.
    reopen_dwas: u32,
    /// No DWR has gone out since the connection opened (or REOPEN ended):
    /// Tw is drawn from the first interval's wider window.
    first_tw: bool,
    rng: u64,
    events: std::collections::VecDeque<WatchdogEvent>,
}

impl Watchdog {
    /// A watchdog in state `Initial`. `seed` drives the Tw jitter, so a
    /// test can make it deterministic; pass something random in production.
    ///
    /// # Panics
    /// If `config` is invalid (check it with [`WatchdogConfig::validate`]).
    pub fn new(config: WatchdogConfig, seed: u64) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid watchdog config: {e}");
        }
        Watchdog {
            config,
            state: WatchdogState::Initial,
            deadline: None,
            pending: false,
            misses: 0,
            reopen_dwas: 0,
            first_tw: false,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            events: std::collections::VecDeque::with_capacity(4),
        }
    }

    /// The current state.
    pub fn state(&self) -> WatchdogState {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &WatchdogConfig {
        &self.config
    }

    /// Consecutive unanswered DWRs so far.
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// Whether a DWR is outstanding.
    pub fn dwr_pending(&self) -> bool {
        self.pending
    }

    /// splitmix64: a tiny, seedable generator for the jitter.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Tw with jitter: uniformly in `interval ± jitter`, or for the first
    /// Tw of a connection in `[interval - s, interval + jitter]` (`s` as
    /// documented on [`WatchdogConfig::first_interval_spread`]).
    fn jittered_interval(&mut self) -> Duration {
        let c = &self.config;
        let early = if self.first_tw { c.jitter.max(c.first_interval_spread.min(c.interval / 2)) } else { c.jitter };
        // Both below the interval (validated), so nothing underflows; the
        // window of a Tw in nanoseconds fits u64 for any sane Tw (584 years).
        let width = u64::try_from((early + c.jitter).as_nanos()).unwrap_or(u64::MAX - 1);
        let base = c.interval - early;
        if width == 0 {
            return base;
        }
        let offset = self.next_random() % (width + 1);
        base + Duration::from_nanos(offset)
    }

    fn set_state(&mut self, to: WatchdogState) {
        if self.state != to {
            let from = self.state;
            self.state = to;
            self.events.push_back(WatchdogEvent::StateChanged { from, to });
        }
    }

    fn arm_tw(&mut self, now: Instant) {
        let tw = self.jittered_interval();
        self.deadline = Some(now + tw);
    }

    fn send_dwr(&mut self, now: Instant) {
        self.first_tw = false;
        self.pending = true;
        self.deadline = Some(now + self.config.dwr_timeout);
        self.events.push_back(WatchdogEvent::SendDwr);
    }

    /// The transport is open and capabilities were exchanged.
    ///
    /// From `Initial` (or a clean close) the peer is OKAY at once. After a
    /// DOWN the peer goes to REOPEN and a DWR is sent immediately.
    pub fn handle_open(&mut self, now: Instant) {
        self.misses = 0;
        self.reopen_dwas = 0;
        self.pending = false;
        if self.state == WatchdogState::Down {
            self.set_state(WatchdogState::Reopen);
            self.send_dwr(now);
        } else {
            self.set_state(WatchdogState::Okay);
            self.first_tw = true;
            self.arm_tw(now);
        }
    }

    /// Any message arrived from the peer; `is_dwa` when it was a DWA
    /// answering our DWR.
    pub fn handle_received(&mut self, is_dwa: bool, now: Instant) {
        match self.state {
            WatchdogState::Okay | WatchdogState::Suspect => {
                if is_dwa || !self.pending {
                    // Liveness proven: forget misses, restart Tw.
                    self.pending = false;
                    self.misses = 0;
                    self.arm_tw(now);
                } else {
                    // Traffic while a DWR is outstanding proves liveness
                    // too: keep waiting for the DWA, with a fresh timeout.
                    self.misses = 0;
                    self.deadline = Some(now + self.config.dwr_timeout);
                }
                self.set_state(WatchdogState::Okay);
            }
            WatchdogState::Reopen => {
                if is_dwa && self.pending {
                    self.pending = false;
                    self.reopen_dwas += 1;
                    if self.reopen_dwas >= self.config.reopen_dwas {
                        self.misses = 0;
                        self.set_state(WatchdogState::Okay);
                        // Connections reopened together after an outage
                        // would otherwise be in phase too.
                        self.first_tw = true;
                        self.arm_tw(now);
                    } else {
                        // Next DWR straight away: reopening should not take
                        // three full Tw periods.
                        self.send_dwr(now);
                    }
                }
            }
            WatchdogState::Initial | WatchdogState::Down => {}
        }
    }

    /// The transport closed (for whatever reason). The watchdog stops its
    /// timer; a close seen while OKAY/SUSPECT/REOPEN counts as DOWN so that
    /// the next open goes through REOPEN.
    pub fn handle_closed(&mut self) {
        self.deadline = None;
        self.pending = false;
        self.first_tw = false;
        if self.state != WatchdogState::Initial {
            self.set_state(WatchdogState::Down);
        }
    }

    /// Forgets the connection after a clean close (DPR/DPA): back to
    /// `Initial`, so the next open is OKAY at once. Emits no event.
    pub fn reset(&mut self) {
        self.state = WatchdogState::Initial;
        self.deadline = None;
        self.pending = false;
        self.misses = 0;
        self.reopen_dwas = 0;
        self.first_tw = false;
    }

    /// Sends a DWR now, ahead of Tw, when the connection is OKAY or
    /// SUSPECT and no DWR is outstanding (a health check that stays within
    /// the RFC 3539 algorithm: its DWA counts like any other). Returns
    /// whether a DWR was requested.
    pub fn probe(&mut self, now: Instant) -> bool {
        if matches!(self.state, WatchdogState::Okay | WatchdogState::Suspect) && !self.pending {
            self.send_dwr(now);
            true
        } else {
            false
        }
    }

    /// The timer returned by [`poll_timeout`](Self::poll_timeout) fired.
    /// Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.deadline else { return };
        if now < deadline {
            return;
        }
        match self.state {
            WatchdogState::Okay | WatchdogState::Suspect => {
                if self.pending {
                    self.pending = false;
                    self.misses += 1;
                    if self.misses >= self.config.max_dwr_failures {
                        self.go_down();
                    } else {
                        self.set_state(WatchdogState::Suspect);
                        self.arm_tw(now);
                    }
                } else {
                    self.send_dwr(now);
                }
            }
            WatchdogState::Reopen => {
                if self.pending {
                    self.misses += 1;
                    self.go_down();
                } else {
                    self.send_dwr(now);
                }
            }
            WatchdogState::Initial | WatchdogState::Down => self.deadline = None,
        }
    }

    fn go_down(&mut self) {
        self.deadline = None;
        self.pending = false;
        self.set_state(WatchdogState::Down);
        self.events.push_back(WatchdogEvent::CloseConnection);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The next thing to do, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<WatchdogEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WatchdogEvent::*;
    use WatchdogState::*;

    fn cfg() -> WatchdogConfig {
        WatchdogConfig {
            interval: Duration::from_secs(30),
            jitter: Duration::ZERO,
            // These tests time the first DWR exactly.
            first_interval_spread: Duration::ZERO,
            dwr_timeout: Duration::from_secs(10),
            max_dwr_failures: 3,
            reopen_dwas: 3,
        }
    }

    fn drain(w: &mut Watchdog) -> Vec<WatchdogEvent> {
        std::iter::from_fn(|| w.poll_event()).collect()
    }

    fn fire(w: &mut Watchdog) -> (Instant, Vec<WatchdogEvent>) {
        let t = w.poll_timeout().expect("timer armed");
        w.handle_timeout(t);
        (t, drain(w))
    }

    #[test]
    fn okay_suspect_down_timings_are_exact() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), 1);
        w.handle_open(t0);
        assert_eq!(drain(&mut w), vec![StateChanged { from: Initial, to: Okay }]);
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(30)));

        // Tw of silence: DWR.
        let (t, ev) = fire(&mut w);
        assert_eq!(t, t0 + Duration::from_secs(30));
        assert_eq!(ev, vec![SendDwr]);
        // No DWA within the DWR timeout: SUSPECT.
        let (t, ev) = fire(&mut w);
        assert_eq!(t, t0 + Duration::from_secs(40));
        assert_eq!(ev, vec![StateChanged { from: Okay, to: Suspect }]);
        assert!(!w.state().can_send());
        // Second DWR after Tw, unanswered.
        let (t, ev) = fire(&mut w);
        assert_eq!((t, ev), (t0 + Duration::from_secs(70), vec![SendDwr]));
        let (t, ev) = fire(&mut w);
        assert_eq!((t, ev), (t0 + Duration::from_secs(80), vec![]));
        assert_eq!(w.misses(), 2);
        // Third DWR unanswered: DOWN and close.
        let (t, ev) = fire(&mut w);
        assert_eq!((t, ev), (t0 + Duration::from_secs(110), vec![SendDwr]));
        let (t, ev) = fire(&mut w);
        assert_eq!(t, t0 + Duration::from_secs(120));
        assert_eq!(ev, vec![StateChanged { from: Suspect, to: Down }, CloseConnection]);
        assert_eq!(w.poll_timeout(), None);
    }

    #[test]
    fn traffic_resets_tw_and_dwa_clears_suspect() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), 1);
        w.handle_open(t0);
        drain(&mut w);
        w.handle_received(false, t0 + Duration::from_secs(20));
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(50)));
        fire(&mut w); // DWR at 50
        fire(&mut w); // miss at 60 → SUSPECT
        assert_eq!(w.state(), Suspect);
        w.handle_received(true, t0 + Duration::from_secs(61));
        assert_eq!(drain(&mut w), vec![StateChanged { from: Suspect, to: Okay }]);
        assert_eq!(w.misses(), 0);
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(91)));

        // Traffic while a DWR is outstanding extends the wait for its DWA.
        fire(&mut w); // DWR at 91
        w.handle_received(false, t0 + Duration::from_secs(99));
        assert_eq!(w.poll_timeout(), Some(t0 + Duration::from_secs(109)));
        assert!(w.dwr_pending());
    }

    #[test]
    fn early_timeout_is_ignored() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), 1);
        w.handle_open(t0);
        drain(&mut w);
        w.handle_timeout(t0 + Duration::from_secs(29));
        assert!(drain(&mut w).is_empty());
    }

    #[test]
    fn reopen_needs_three_dwas() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig { max_dwr_failures: 1, ..cfg() }, 1);
        w.handle_open(t0);
        fire(&mut w); // DWR at 30
        let (_, ev) = fire(&mut w); // unanswered at 40: DOWN at once (max 1)
        assert!(ev.contains(&CloseConnection));
        let t1 = t0 + Duration::from_secs(45);
        w.handle_open(t1);
        assert_eq!(drain(&mut w), vec![StateChanged { from: Down, to: Reopen }, SendDwr]);
        assert!(!w.state().can_send());
        // Non-DWA traffic does not count in REOPEN.
        w.handle_received(false, t1);
        assert_eq!(w.state(), Reopen);
        for i in 1..=3u64 {
            w.handle_received(true, t1 + Duration::from_secs(i));
            let ev = drain(&mut w);
            if i < 3 {
                assert_eq!(ev, vec![SendDwr], "DWA {i}");
                assert_eq!(w.state(), Reopen);
            } else {
                assert_eq!(ev, vec![StateChanged { from: Reopen, to: Okay }]);
            }
        }
        assert_eq!(w.poll_timeout(), Some(t1 + Duration::from_secs(33)));
    }

    #[test]
    fn reopen_dwr_timeout_goes_down_again() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(cfg(), 1);
        w.handle_open(t0);
        w.handle_closed();
        assert_eq!(w.state(), Down);
        w.handle_open(t0);
        drain(&mut w);
        let (t, ev) = fire(&mut w);
        assert_eq!(t, t0 + Duration::from_secs(10));
        assert_eq!(ev, vec![StateChanged { from: Reopen, to: Down }, CloseConnection]);
    }

    #[test]
    fn jitter_stays_in_bounds_and_is_seeded() {
        let config = WatchdogConfig { jitter: Duration::from_secs(2), ..cfg() };
        let t0 = Instant::now();
        let mut seen = std::collections::HashSet::new();
        for seed in 0..200 {
            let mut w = Watchdog::new(config.clone(), seed);
            w.handle_open(t0);
            let d = w.poll_timeout().unwrap() - t0;
            assert!(d >= Duration::from_secs(28) && d <= Duration::from_secs(32), "{d:?}");
            seen.insert(d);
            let mut again = Watchdog::new(config.clone(), seed);
            again.handle_open(t0);
            assert_eq!(again.poll_timeout().unwrap() - t0, d, "same seed, same jitter");
        }
        assert!(seen.len() > 150, "jitter varies with the seed");
    }

    /// Opens one watchdog per seed at `t0`; returns each first DWR's delay.
    fn first_delays(config: &WatchdogConfig, t0: Instant, seeds: std::ops::Range<u64>) -> Vec<Duration> {
        seeds
            .map(|seed| {
                let mut w = Watchdog::new(config.clone(), seed);
                w.handle_open(t0);
                let (t, ev) = fire(&mut w);
                assert_eq!(ev, vec![StateChanged { from: Initial, to: Okay }, SendDwr], "seed {seed}");
                t - t0
            })
            .collect()
    }

    /// How many delays fall in each 100 ms bucket of `[lo, hi]`.
    fn buckets(delays: &[Duration], lo: Duration, hi: Duration) -> Vec<usize> {
        let n = ((hi - lo).as_millis() / 100) as usize + 1;
        let mut b = vec![0; n];
        for d in delays {
            b[((*d - lo).as_millis() / 100) as usize] += 1;
        }
        b
    }

    #[test]
    fn first_dwrs_of_watchdogs_opened_together_are_spread_over_tw_half_to_tw_plus_jitter() {
        // The defaults: Tw 30 s ± 2 s, first DWR in [15 s, 32 s].
        let config = WatchdogConfig::default();
        let (lo, hi) = (Duration::from_secs(15), Duration::from_secs(32));
        let t0 = Instant::now();
        let delays = first_delays(&config, t0, 0..1000);
        assert!(delays.iter().all(|d| (lo..=hi).contains(d)), "all in [15 s, 32 s]");
        let b = buckets(&delays, lo, hi);
        // 171 buckets, 5.8 expected in each: none holds more than 2 % (a
        // uniform draw exceeds that with odds below 1 in 1000; with ±2 s
        // only, the 40 buckets of 28..32 s would hold 2.5 % each on average,
        // and all the DWRs would sit in those 4 s).
        let max = *b.iter().max().unwrap();
        assert!(max <= 20, "a 100 ms bucket holds {max} of 1000 first DWRs: {b:?}");
        assert!(b.iter().filter(|&&n| n > 0).count() >= 160, "the whole range is used: {b:?}");
        // Any 4 s window (the width of plain ±2 s jitter) holds about 4/17.
        let most_in_4s = b.windows(40).map(|w| w.iter().sum::<usize>()).max().unwrap();
        assert!(most_in_4s <= 300, "{most_in_4s} first DWRs within 4 s");
        // Early and late halves are both populated (uniform, not skewed).
        let early = delays.iter().filter(|d| **d < Duration::from_millis(23_500)).count();
        assert!((400..=600).contains(&early), "{early} of 1000 before the midpoint");

        // Deterministic per seed: the same seeds give the same times.
        assert_eq!(first_delays(&config, t0, 0..1000), delays);

        // Without the spread, the first DWR keeps plain RFC 3539 jitter.
        let plain = WatchdogConfig { first_interval_spread: Duration::ZERO, ..config };
        let delays = first_delays(&plain, t0, 0..1000);
        assert!(delays.iter().all(|d| (Duration::from_secs(28)..=hi).contains(d)));
    }

    #[test]
    fn intervals_after_the_first_dwr_keep_tw_plus_minus_jitter() {
        let config = WatchdogConfig::default();
        let t0 = Instant::now();
        let tw = Duration::from_secs(28)..=Duration::from_secs(32);
        let rtt = Duration::from_millis(3);
        let mut later = std::collections::HashSet::new();
        for seed in 0..1000 {
            let mut w = Watchdog::new(config.clone(), seed);
            w.handle_open(t0);
            drain(&mut w);
            for round in 0..3 {
                let (t, ev) = fire(&mut w);
                assert_eq!(ev, vec![SendDwr], "seed {seed} round {round}");
                w.handle_received(true, t + rtt);
                let next = w.poll_timeout().unwrap() - (t + rtt);
                assert!(tw.contains(&next), "seed {seed} round {round}: {next:?}");
                later.insert(next);
            }
            // Traffic restarts Tw with plain jitter too.
            let t = w.poll_timeout().unwrap() - Duration::from_secs(1);
            w.handle_received(false, t);
            assert!(tw.contains(&(w.poll_timeout().unwrap() - t)));
            // An unanswered DWR: SUSPECT, the next DWR after Tw ± jitter.
            fire(&mut w);
            let (t, ev) = fire(&mut w);
            assert_eq!(ev, vec![StateChanged { from: Okay, to: Suspect }]);
            assert!(tw.contains(&(w.poll_timeout().unwrap() - t)));
        }
        assert!(later.len() > 2900, "the later intervals are jittered too");
    }

    #[test]
    fn traffic_before_the_first_dwr_keeps_the_wide_window() {
        // Connections that carried traffic and went quiet together are spread
        // as well: until the first DWR, every Tw restart uses the wide window.
        let config = WatchdogConfig::default();
        let t0 = Instant::now();
        let quiet = t0 + Duration::from_secs(5);
        let mut delays = Vec::new();
        for seed in 0..1000 {
            let mut w = Watchdog::new(config.clone(), seed);
            w.handle_open(t0);
            w.handle_received(false, t0 + Duration::from_secs(1));
            w.handle_received(false, quiet);
            delays.push(w.poll_timeout().unwrap() - quiet);
        }
        let (lo, hi) = (Duration::from_secs(15), Duration::from_secs(32));
        assert!(delays.iter().all(|d| (lo..=hi).contains(d)));
        let max = *buckets(&delays, lo, hi).iter().max().unwrap();
        assert!(max <= 20, "a 100 ms bucket holds {max} of 1000 first DWRs");
    }

    #[test]
    fn reopen_ends_with_a_spread_first_interval() {
        let config = WatchdogConfig { max_dwr_failures: 1, ..WatchdogConfig::default() };
        let t0 = Instant::now();
        let mut delays = Vec::new();
        for seed in 0..200 {
            let mut w = Watchdog::new(config.clone(), seed);
            w.handle_open(t0);
            w.handle_closed();
            let t1 = t0 + Duration::from_secs(1);
            w.handle_open(t1);
            for _ in 0..3 {
                w.handle_received(true, t1);
            }
            assert_eq!(w.state(), Okay);
            delays.push(w.poll_timeout().unwrap() - t1);
        }
        assert!(delays.iter().all(|d| (Duration::from_secs(15)..=Duration::from_secs(32)).contains(d)));
        assert!(delays.iter().any(|d| *d < Duration::from_secs(20)), "below plain jitter");
    }

    #[test]
    fn the_first_interval_spread_is_capped_at_half_tw() {
        // Tw 6 s (the RFC 3539 minimum), jitter 1 s, spread left at 15 s: the
        // first DWR is due in [3 s, 7 s], never sooner than Tw/2.
        let config = WatchdogConfig {
            interval: Duration::from_secs(6),
            jitter: Duration::from_secs(1),
            ..WatchdogConfig::default()
        };
        assert!(config.validate().is_ok());
        let delays = first_delays(&config, Instant::now(), 0..1000);
        assert!(delays.iter().all(|d| (Duration::from_secs(3)..=Duration::from_secs(7)).contains(d)));
        assert!(delays.iter().any(|d| *d < Duration::from_millis(3_100)));
        assert!(delays.iter().any(|d| *d > Duration::from_millis(6_900)));
        // A spread below the jitter changes nothing: Tw ± jitter.
        let narrow = WatchdogConfig { first_interval_spread: Duration::from_millis(500), ..config };
        let delays = first_delays(&narrow, Instant::now(), 0..1000);
        assert!(delays.iter().all(|d| (Duration::from_secs(5)..=Duration::from_secs(7)).contains(d)));
    }

    #[test]
    fn config_validation() {
        assert!(WatchdogConfig::default().validate().is_ok());
        assert!(WatchdogConfig { max_dwr_failures: 0, ..cfg() }.validate().is_err());
        assert!(WatchdogConfig { jitter: Duration::from_secs(30), ..cfg() }.validate().is_err());
        assert!(WatchdogConfig { interval: Duration::ZERO, ..cfg() }.validate().is_err());
        assert!(WatchdogConfig { dwr_timeout: Duration::ZERO, ..cfg() }.validate().is_err());
    }
}
