//! The circuit breaker of each sink table: closed, open, half-open.
//!
//! [`BreakerCore`] is the pure state machine (time passed in); [`Breaker`] wraps one in a
//! mutex so the applier (write latencies), the consistency checker ([`Breaker::record_check`])
//! and status readers can share it. Every call is one critical section that never awaits, so
//! concurrent calls are some order of whole calls: `model.rs` checks every such order of a set
//! of concurrent call sequences. Thresholds are one [`BreakerConfig`] per pipeline, swapped whole
//! through [`Breakers::set_config`] (arc-swap), never mutated in place.
//!
//! What the states mean for the data (shadow tables, the diversion journal, compensation)
//! lives in `paths::batch::applier`; see docs/breaker.md.

mod config;
mod core;
#[cfg(test)]
mod model;
mod window;

pub use self::core::{BreakerCore, BreakerState, Cause, Route, Ticket, Transition};
pub use config::{BreakerConfig, BreakerConfigError};
pub use window::{FAILED, LatencyWindow};

use arc_swap::ArcSwap;
use chrono::{DateTime, SecondsFormat, Utc};
use prometheus::{IntCounterVec, IntGaugeVec};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use syncmesh_crds::SinkTableStatus;

/// Where the breaker reads the time: the system clock, or a clock a test moves.
pub trait Clock: Send + Sync {
    fn now(&self) -> Instant;
}

/// `Instant::now()`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock {
    base: Instant,
    offset: Mutex<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        *lock(&self.offset) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + *lock(&self.offset)
    }
}

/// A poisoned lock only means another thread panicked mid-call; the state machine's fields are
/// always consistent between statements, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The shared, hot-swappable thresholds of a pipeline's breakers.
pub type BreakerConfigHandle = Arc<ArcSwap<BreakerConfig>>;

/// Prometheus series the breakers update.
#[derive(Clone)]
pub struct BreakerMetrics {
    pub pipeline: String,
    /// `syncmesh_sink_breaker_state{pipeline,table}`: 0 closed, 1 open, 2 half-open, 3 promoted.
    pub state: IntGaugeVec,
    /// `syncmesh_sink_breaker_transitions_total{pipeline,table,from,to}`.
    pub transitions: IntCounterVec,
    /// `syncmesh_sink_diverted_rows_total{pipeline,table}`.
    pub diverted_rows: IntCounterVec,
    /// `syncmesh_sink_replayed_events_total{pipeline,table}`.
    pub replayed_events: IntCounterVec,
}

impl BreakerMetrics {
    pub fn from_metrics(pipeline: &str, m: &crate::metrics::Metrics) -> Self {
        Self {
            pipeline: pipeline.to_string(),
            state: m.breaker_state.clone(),
            transitions: m.breaker_transitions.clone(),
            diverted_rows: m.sink_diverted_rows.clone(),
            replayed_events: m.sink_replayed_events.clone(),
        }
    }
}

/// How many transitions a breaker remembers (for status and debugging).
const HISTORY: usize = 32;

struct Inner {
    core: BreakerCore,
    since: Option<DateTime<Utc>>,
    /// The shadow replaced the table (until released or rolled back).
    promoted: bool,
    history: VecDeque<Transition>,
}

/// The breaker of one sink table. Share it behind an `Arc` (see [`Breakers`]).
pub struct Breaker {
    table: String,
    shadow: String,
    inner: Mutex<Inner>,
    config: BreakerConfigHandle,
    clock: Arc<dyn Clock>,
    metrics: Option<BreakerMetrics>,
    diverted_rows: AtomicU64,
    pending_replay: AtomicU64,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("table", &self.table)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub fn new(
        table: impl Into<String>,
        shadow: impl Into<String>,
        config: BreakerConfigHandle,
        clock: Arc<dyn Clock>,
        metrics: Option<BreakerMetrics>,
    ) -> Self {
        let b = Self {
            table: table.into(),
            shadow: shadow.into(),
            inner: Mutex::new(Inner {
                core: BreakerCore::new(),
                since: None,
                promoted: false,
                history: VecDeque::new(),
            }),
            config,
            clock,
            metrics,
            diverted_rows: AtomicU64::new(0),
            pending_replay: AtomicU64::new(0),
        };
        b.set_gauge(BreakerState::Closed.gauge());
        b
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn state(&self) -> BreakerState {
        lock(&self.inner).core.state()
    }

    pub fn config(&self) -> Arc<BreakerConfig> {
        self.config.load_full()
    }

    /// Runs one operation on the state machine under the lock, then reports its transitions.
    fn step<R>(
        &self,
        f: impl FnOnce(&mut BreakerCore, &BreakerConfig, Instant) -> (R, Option<Transition>),
    ) -> R {
        let config = self.config.load();
        let now = self.clock.now();
        let (result, transition) = {
            let mut inner = lock(&self.inner);
            let (result, transition) = f(&mut inner.core, &config, now);
            if let Some(t) = &transition {
                inner.since = Some(Utc::now());
                if t.to == BreakerState::Closed {
                    inner.promoted = false;
                }
                if inner.history.len() == HISTORY {
                    inner.history.pop_front();
                }
                inner.history.push_back(t.clone());
            }
            (result, transition)
        };
        if let Some(t) = transition {
            self.report(&t);
        }
        result
    }

    fn report(&self, t: &Transition) {
        match t.to {
            BreakerState::Open => tracing::warn!(
                table = %self.table, from = %t.from, to = %t.to, cause = %t.cause,
                shadow = %self.shadow, "sink breaker opened: writes go to the shadow table"
            ),
            _ => tracing::info!(
                table = %self.table, from = %t.from, to = %t.to, cause = %t.cause,
                "sink breaker state changed"
            ),
        }
        if let Some(m) = &self.metrics {
            m.transitions
                .with_label_values(&[&m.pipeline, &self.table, t.from.as_str(), t.to.as_str()])
                .inc();
        }
        self.set_gauge(t.to.gauge());
    }

    fn set_gauge(&self, value: i64) {
        if let Some(m) = &self.metrics {
            m.state
                .with_label_values(&[&m.pipeline, &self.table])
                .set(value);
        }
    }

    /// Where the next write goes (an elapsed cool-down turns the breaker half-open here).
    pub fn route(&self) -> Ticket {
        self.step(|core, config, now| core.route(config, now))
    }

    /// Records how long a write routed with `ticket` took; `None` when it failed.
    pub fn record_write(&self, ticket: Ticket, latency: Option<Duration>) {
        let latency = latency.unwrap_or(FAILED);
        self.step(|core, config, now| ((), core.record_write(config, now, ticket, latency)));
    }

    /// Records a consistency check of this table: `failedChecks` consecutive failures trip
    /// the breaker; a pass resets the count and moves a breaker opened by checks to half-open.
    pub fn record_check(&self, passed: bool) {
        self.step(|core, config, now| ((), core.record_check(config, now, passed)));
    }

    /// Opens the breaker because the sink database says it was open before a restart.
    pub fn restore_open(&self) {
        self.step(|core, _, now| ((), core.restore_open(now)));
    }

    /// Closes the breaker on a human's decision.
    pub fn force_close(&self, action: &'static str) {
        self.step(|core, _, now| ((), core.force_close(now, action)));
    }

    /// Marks the shadow as promoted (the breaker is closed meanwhile) or not.
    pub fn set_promoted(&self, promoted: bool) {
        let changed = {
            let mut inner = lock(&self.inner);
            let changed = inner.promoted != promoted;
            inner.promoted = promoted;
            if changed {
                inner.since = Some(Utc::now());
            }
            changed
        };
        if changed {
            tracing::info!(table = %self.table, promoted, "sink table promotion state changed");
            self.set_gauge(if promoted { 3 } else { self.state().gauge() });
        }
    }

    pub fn is_promoted(&self) -> bool {
        lock(&self.inner).promoted
    }

    /// Counts rows written to the shadow instead of the table.
    pub fn add_diverted(&self, rows: u64) {
        self.diverted_rows.fetch_add(rows, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.diverted_rows
                .with_label_values(&[&m.pipeline, &self.table])
                .inc_by(rows);
        }
    }

    /// Counts diverted events replayed into the table.
    pub fn add_replayed(&self, events: u64) {
        if let Some(m) = &self.metrics {
            m.replayed_events
                .with_label_values(&[&m.pipeline, &self.table])
                .inc_by(events);
        }
    }

    /// Sets how many diverted events wait to be replayed.
    pub fn set_pending_replay(&self, events: u64) {
        self.pending_replay.store(events, Ordering::Relaxed);
    }

    pub fn pending_replay(&self) -> u64 {
        self.pending_replay.load(Ordering::Relaxed)
    }

    pub fn diverted_rows(&self) -> u64 {
        self.diverted_rows.load(Ordering::Relaxed)
    }

    /// The last transitions, oldest first.
    pub fn history(&self) -> Vec<Transition> {
        lock(&self.inner).history.iter().cloned().collect()
    }

    /// The status to copy into `SyncPipeline.status.sinkTables`.
    pub fn status(&self) -> SinkTableStatus {
        let inner = lock(&self.inner);
        let state = inner.core.state();
        SinkTableStatus {
            table: self.table.clone(),
            breaker: if inner.promoted {
                "promoted".into()
            } else {
                state.as_str().into()
            },
            reason: inner.core.cause().map(ToString::to_string),
            since: inner
                .since
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            shadow: (state != BreakerState::Closed || inner.promoted).then(|| self.shadow.clone()),
            diverted_rows: self.diverted_rows(),
            pending_replay: self.pending_replay(),
            failed_checks: inner.core.failed_checks(),
            write_p99_ms: inner
                .core
                .p99()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// The breakers of one pipeline, one per sink table, sharing one config and clock.
pub struct Breakers {
    config: BreakerConfigHandle,
    clock: Arc<dyn Clock>,
    metrics: Option<BreakerMetrics>,
    tables: Mutex<BTreeMap<String, Arc<Breaker>>>,
}

impl Breakers {
    /// `config` must be valid ([`BreakerConfig::validate`]).
    pub fn new(
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
        metrics: Option<BreakerMetrics>,
    ) -> Self {
        Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            clock,
            metrics,
            tables: Mutex::new(BTreeMap::new()),
        }
    }

    /// The breaker of `table` (its shadow is `shadow`), created on first use in one call.
    pub fn get_or_create(&self, table: &str, shadow: &str) -> Arc<Breaker> {
        lock(&self.tables)
            .entry(table.to_string())
            .or_insert_with(|| {
                Arc::new(Breaker::new(
                    table,
                    shadow,
                    self.config.clone(),
                    self.clock.clone(),
                    self.metrics.clone(),
                ))
            })
            .clone()
    }

    /// The breaker of `table`, if it was created.
    pub fn get(&self, table: &str) -> Option<Arc<Breaker>> {
        lock(&self.tables).get(table).cloned()
    }

    /// Replaces the thresholds of every breaker at once; an invalid config is refused and the
    /// old one stays.
    pub fn set_config(&self, config: BreakerConfig) -> Result<(), BreakerConfigError> {
        config.validate()?;
        self.config.store(Arc::new(config));
        Ok(())
    }

    pub fn config(&self) -> Arc<BreakerConfig> {
        self.config.load_full()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The status of every breaker, by table name.
    pub fn statuses(&self) -> Vec<SinkTableStatus> {
        let tables: Vec<Arc<Breaker>> = lock(&self.tables).values().cloned().collect();
        tables.iter().map(|b| b.status()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_swaps_whole_and_refuses_invalid() {
        let clock = Arc::new(ManualClock::default());
        let breakers = Breakers::new(BreakerConfig::default(), clock.clone(), None);
        let b = breakers.get_or_create("t", "t_shadow");
        assert!(Arc::ptr_eq(&b, &breakers.get_or_create("t", "t_shadow")));
        let strict = BreakerConfig {
            min_samples: 1,
            latency_threshold: Duration::from_millis(10),
            ..BreakerConfig::default()
        };
        breakers.set_config(strict).unwrap();
        assert!(
            breakers
                .set_config(BreakerConfig {
                    min_samples: 0,
                    ..BreakerConfig::default()
                })
                .is_err()
        );
        assert_eq!(
            breakers.config().min_samples,
            1,
            "the invalid config was not stored"
        );
        let ticket = b.route();
        b.record_write(ticket, Some(Duration::from_millis(11)));
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "the new thresholds apply at once"
        );
        let s = b.status();
        assert_eq!(s.breaker, "open");
        assert_eq!(s.shadow.as_deref(), Some("t_shadow"));
        assert!(s.reason.unwrap().contains("write p99 11 ms"));
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.route().route, Route::Probe);
        assert_eq!(b.history().len(), 2);
    }

    #[test]
    fn transitions_are_counted_in_metrics() {
        let m = crate::metrics::Metrics::new();
        let clock = Arc::new(ManualClock::default());
        let breakers = Breakers::new(
            BreakerConfig::default(),
            clock,
            Some(BreakerMetrics::from_metrics("p", &m)),
        );
        let b = breakers.get_or_create("t", "t_shadow");
        for _ in 0..3 {
            b.record_check(false);
        }
        let text = m.render();
        assert!(
            text.contains(
                "syncmesh_sink_breaker_transitions_total{from=\"closed\",pipeline=\"p\",table=\"t\",to=\"open\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("syncmesh_sink_breaker_state{pipeline=\"p\",table=\"t\"} 1"));
    }
}
