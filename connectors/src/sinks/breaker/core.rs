//! The breaker's state machine: pure, with time passed in, so every transition is tested
//! (and model-checked) without clocks or threads.
//!
//! ```text
//!            p99 > threshold, or N failed checks
//!   Closed ──────────────────────────────────────────> Open
//!     ^                                                │  ^
//!     │ probesToClose healthy probes                   │  │ slow or failed probe,
//!     │                                   cool-down,   │  │ or a failed check
//!     │                       or a passing check (*)   v  │
//!     └──────────────────────────────────────────── HalfOpen
//! ```
//! (*) A breaker opened by failed checks ignores the cool-down: the original table is known to
//! differ from the source, so only a passing check (or a human's promotion) moves it on.
//!
//! Every transition bumps `generation`. A write result is recorded against the ticket it was
//! routed with; a ticket from an older generation is ignored, so a slow write that started
//! while closed cannot count as a probe, and a probe that started before a check reopened the
//! breaker cannot close it.

use super::BreakerConfig;
use super::window::{FAILED, LatencyWindow};
use std::fmt;
use std::time::{Duration, Instant};

/// Where the breaker lets writes for its table go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Writes go to the original table; their latencies are watched.
    Closed,
    /// Writes go to the shadow table; the original is read-only for syncmesh.
    Open,
    /// Writes to the original are probes: healthy ones close the breaker, a bad one reopens it.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// The value of the `syncmesh_sink_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The window's p99 exceeded the threshold (`p99` is [`FAILED`] when writes failed).
    SlowWrites { p99: Duration, samples: usize },
    /// This many consecutive consistency checks failed.
    FailedChecks { consecutive: u32 },
    /// The cool-down after opening elapsed.
    CoolDownElapsed,
    /// A consistency check passed while the breaker was open because of checks.
    CheckPassed,
    /// A probe took too long (or failed: [`FAILED`]).
    BadProbe { latency: Duration },
    /// Enough consecutive probes were healthy.
    HealthyProbes { count: u32 },
    /// The state was read back from the sink database after a restart.
    Restored,
    /// A human promoted the shadow table, released or rolled it back.
    Manual { action: &'static str },
}

impl Cause {
    /// Whether the breaker was opened because checks failed (cool-down does not apply).
    pub fn is_checks(&self) -> bool {
        matches!(self, Cause::FailedChecks { .. })
    }
}

fn fmt_latency(d: Duration) -> String {
    if d == FAILED {
        "failed".into()
    } else {
        format!("{} ms", d.as_millis())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::SlowWrites { p99, samples } if *p99 == FAILED => {
                write!(f, "writes failing (p99 over {samples} writes)")
            }
            Cause::SlowWrites { p99, samples } => {
                write!(f, "write p99 {} over {samples} writes", fmt_latency(*p99))
            }
            Cause::FailedChecks { consecutive } => {
                write!(f, "{consecutive} consecutive consistency checks failed")
            }
            Cause::CoolDownElapsed => f.write_str("cool-down elapsed"),
            Cause::CheckPassed => f.write_str("a consistency check passed"),
            Cause::BadProbe { latency } => write!(f, "probe write {}", fmt_latency(*latency)),
            Cause::HealthyProbes { count } => write!(f, "{count} healthy probe writes"),
            Cause::Restored => f.write_str("restored from the sink database"),
            Cause::Manual { action } => write!(f, "{action} by an operator"),
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub cause: Cause,
    pub at: Instant,
    /// The generation the breaker is in after this transition.
    pub generation: u64,
}

/// Where one write goes, and the generation it was routed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub route: Route,
    pub generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the original table (breaker closed).
    Original,
    /// To the shadow table (breaker open).
    Shadow,
    /// To the original table as a probe (breaker half-open).
    Probe,
}

/// The state machine of one sink table's breaker.
#[derive(Debug, Clone)]
pub struct BreakerCore {
    state: BreakerState,
    generation: u64,
    /// When the breaker last opened, and why.
    opened: Option<(Instant, Cause)>,
    /// The cause of the last transition.
    cause: Option<Cause>,
    window: LatencyWindow,
    failed_checks: u32,
    healthy_probes: u32,
}

impl Default for BreakerCore {
    fn default() -> Self {
        Self::new()
    }
}

impl BreakerCore {
    pub fn new() -> Self {
        Self {
            state: BreakerState::Closed,
            generation: 0,
            opened: None,
            cause: None,
            window: LatencyWindow::default(),
            failed_checks: 0,
            healthy_probes: 0,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn cause(&self) -> Option<&Cause> {
        self.cause.as_ref()
    }

    pub fn failed_checks(&self) -> u32 {
        self.failed_checks
    }

    pub fn window_len(&self) -> usize {
        self.window.len()
    }

    pub fn p99(&self) -> Option<Duration> {
        self.window.p99()
    }

    /// When an open breaker may probe; `None` when it is not open or waits for a check.
    pub fn probe_after(&self, config: &BreakerConfig) -> Option<Instant> {
        match (&self.state, &self.opened) {
            (BreakerState::Open, Some((at, cause))) if !cause.is_checks() => {
                Some(*at + config.cool_down)
            }
            _ => None,
        }
    }

    fn go(&mut self, to: BreakerState, cause: Cause, now: Instant) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.cause = Some(cause.clone());
        self.healthy_probes = 0;
        match to {
            BreakerState::Open => {
                self.opened = Some((now, cause.clone()));
                self.window.clear();
            }
            BreakerState::Closed => {
                self.opened = None;
                self.window.clear();
            }
            BreakerState::HalfOpen => {}
        }
        Transition {
            from,
            to,
            cause,
            at: now,
            generation: self.generation,
        }
    }

    /// Where a write starting `now` goes. An open breaker whose cool-down has elapsed turns
    /// half-open first (that transition is returned).
    pub fn route(&mut self, config: &BreakerConfig, now: Instant) -> (Ticket, Option<Transition>) {
        let mut transition = None;
        if let Some(at) = self.probe_after(config)
            && now >= at
        {
            transition = Some(self.go(BreakerState::HalfOpen, Cause::CoolDownElapsed, now));
        }
        let route = match self.state {
            BreakerState::Closed => Route::Original,
            BreakerState::Open => Route::Shadow,
            BreakerState::HalfOpen => Route::Probe,
        };
        (
            Ticket {
                route,
                generation: self.generation,
            },
            transition,
        )
    }

    /// Records a write routed with `ticket` that took `latency` ([`FAILED`] when it failed).
    pub fn record_write(
        &mut self,
        config: &BreakerConfig,
        now: Instant,
        ticket: Ticket,
        latency: Duration,
    ) -> Option<Transition> {
        if ticket.generation != self.generation {
            return None;
        }
        match self.state {
            BreakerState::Closed => {
                self.window
                    .push(now, latency, config.window, config.max_samples);
                if !config.enabled || self.window.len() < config.min_samples {
                    return None;
                }
                let p99 = self.window.p99()?;
                (p99 > config.latency_threshold).then(|| {
                    let samples = self.window.len();
                    self.go(BreakerState::Open, Cause::SlowWrites { p99, samples }, now)
                })
            }
            BreakerState::HalfOpen => {
                if latency > config.latency_threshold {
                    return Some(self.go(BreakerState::Open, Cause::BadProbe { latency }, now));
                }
                self.healthy_probes += 1;
                (self.healthy_probes >= config.probes_to_close).then(|| {
                    let count = self.healthy_probes;
                    self.go(BreakerState::Closed, Cause::HealthyProbes { count }, now)
                })
            }
            BreakerState::Open => None,
        }
    }

    /// Records the result of a consistency check of this table.
    pub fn record_check(
        &mut self,
        config: &BreakerConfig,
        now: Instant,
        passed: bool,
    ) -> Option<Transition> {
        if passed {
            self.failed_checks = 0;
            let waiting_for_check = matches!(&self.opened, Some((_, c)) if c.is_checks());
            return (self.state == BreakerState::Open && waiting_for_check)
                .then(|| self.go(BreakerState::HalfOpen, Cause::CheckPassed, now));
        }
        self.failed_checks = self.failed_checks.saturating_add(1);
        if !config.enabled || self.failed_checks < config.failed_checks {
            return None;
        }
        let cause = Cause::FailedChecks {
            consecutive: self.failed_checks,
        };
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => {
                Some(self.go(BreakerState::Open, cause, now))
            }
            BreakerState::Open => {
                // Already open (for latency): from now on it waits for a passing check.
                self.opened = Some((now, cause.clone()));
                self.cause = Some(cause);
                None
            }
        }
    }

    /// Opens the breaker because the sink database says it was open before a restart.
    pub fn restore_open(&mut self, now: Instant) -> Option<Transition> {
        (self.state != BreakerState::Open)
            .then(|| self.go(BreakerState::Open, Cause::Restored, now))
    }

    /// Closes the breaker on a human's decision (promotion, release).
    pub fn force_close(&mut self, now: Instant, action: &'static str) -> Option<Transition> {
        (self.state != BreakerState::Closed)
            .then(|| self.go(BreakerState::Closed, Cause::Manual { action }, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> BreakerConfig {
        BreakerConfig {
            latency_threshold: ms(100),
            min_samples: 3,
            cool_down: Duration::from_secs(10),
            probes_to_close: 2,
            ..BreakerConfig::default()
        }
    }

    fn write(
        b: &mut BreakerCore,
        c: &BreakerConfig,
        now: Instant,
        latency: Duration,
    ) -> Option<Transition> {
        let (ticket, _) = b.route(c, now);
        b.record_write(c, now, ticket, latency)
    }

    #[test]
    fn trips_on_p99_only_with_enough_samples() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        assert_eq!(write(&mut b, &c, t0, ms(900)), None);
        assert_eq!(write(&mut b, &c, t0, ms(900)), None, "2 < minSamples");
        let t = write(&mut b, &c, t0, ms(5)).expect("trips");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert_eq!(
            t.cause,
            Cause::SlowWrites {
                p99: ms(900),
                samples: 3
            }
        );
        assert_eq!(b.route(&c, t0).0.route, Route::Shadow);
    }

    #[test]
    fn fast_writes_never_trip_and_old_slow_ones_age_out() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        for _ in 0..2 {
            write(&mut b, &c, t0, ms(900));
        }
        let later = t0 + c.window + ms(1);
        for _ in 0..50 {
            assert_eq!(write(&mut b, &c, later, ms(20)), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn cool_down_then_probes_close_or_reopen() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        for _ in 0..3 {
            write(&mut b, &c, t0, ms(500));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.route(&c, t0 + ms(9_999)).0.route, Route::Shadow);
        let (ticket, t) = b.route(&c, t0 + c.cool_down);
        assert_eq!(ticket.route, Route::Probe);
        assert_eq!(t.map(|t| t.cause), Some(Cause::CoolDownElapsed));
        // A slow probe reopens, and the cool-down restarts from then.
        let t1 = t0 + c.cool_down;
        let reopened = b.record_write(&c, t1, ticket, ms(101)).expect("reopens");
        assert_eq!(reopened.cause, Cause::BadProbe { latency: ms(101) });
        assert_eq!(b.route(&c, t1 + ms(9_999)).0.route, Route::Shadow);
        let t2 = t1 + c.cool_down;
        assert_eq!(b.route(&c, t2).0.route, Route::Probe);
        assert_eq!(write(&mut b, &c, t2, ms(10)), None);
        let closed = write(&mut b, &c, t2, ms(10)).expect("closes");
        assert_eq!(closed.cause, Cause::HealthyProbes { count: 2 });
        assert_eq!(b.route(&c, t2).0.route, Route::Original);
        assert_eq!(b.window_len(), 0, "closing starts a fresh window");
    }

    #[test]
    fn failed_probe_reopens() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        b.restore_open(t0);
        let (ticket, _) = b.route(&c, t0 + c.cool_down);
        let t = b
            .record_write(&c, t0 + c.cool_down, ticket, FAILED)
            .unwrap();
        assert_eq!(t.to, BreakerState::Open);
        assert_eq!(t.cause.to_string(), "probe write failed");
    }

    #[test]
    fn failed_checks_trip_and_wait_for_a_passing_check() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        assert_eq!(b.record_check(&c, t0, false), None);
        assert_eq!(
            b.record_check(&c, t0, true),
            None,
            "a pass resets the count"
        );
        assert_eq!(b.record_check(&c, t0, false), None);
        assert_eq!(b.record_check(&c, t0, false), None);
        let t = b
            .record_check(&c, t0, false)
            .expect("third consecutive failure trips");
        assert_eq!(t.cause, Cause::FailedChecks { consecutive: 3 });
        // No cool-down for a check trip.
        assert_eq!(
            b.route(&c, t0 + Duration::from_secs(3600)).0.route,
            Route::Shadow
        );
        let t = b
            .record_check(&c, t0, true)
            .expect("a passing check half-opens");
        assert_eq!(t.to, BreakerState::HalfOpen);
        assert_eq!(b.failed_checks(), 0);
    }

    #[test]
    fn a_latency_trip_turns_into_a_check_trip_on_failed_checks() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        for _ in 0..3 {
            write(&mut b, &c, t0, ms(500));
        }
        for _ in 0..3 {
            assert_eq!(b.record_check(&c, t0, false), None);
        }
        assert_eq!(b.probe_after(&c), None);
        assert_eq!(b.route(&c, t0 + c.cool_down * 5).0.route, Route::Shadow);
    }

    #[test]
    fn stale_tickets_are_ignored() {
        let c = config();
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        let (stale, _) = b.route(&c, t0);
        for _ in 0..3 {
            write(&mut b, &c, t0, ms(500));
        }
        let (probe, _) = b.route(&c, t0 + c.cool_down);
        assert_eq!(probe.route, Route::Probe);
        // A write routed while closed finishes now: it is not a probe.
        assert_eq!(b.record_write(&c, t0 + c.cool_down, stale, ms(1)), None);
        assert_eq!(b.record_write(&c, t0 + c.cool_down, stale, ms(1)), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn disabled_never_trips() {
        let c = BreakerConfig {
            enabled: false,
            ..config()
        };
        let t0 = Instant::now();
        let mut b = BreakerCore::new();
        for _ in 0..10 {
            assert_eq!(write(&mut b, &c, t0, FAILED), None);
            assert_eq!(b.record_check(&c, t0, false), None);
        }
    }
}
