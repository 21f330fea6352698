//! The strategy decider: ordered rules choose the paths each event takes.
//!
//! The rule set is compiled once and swapped whole (`arc-swap`), so a reload never shows the
//! hot path half a rule set and reading it takes no lock.
//!
//! A health-aware fallback sits after the rules: while the real-time path reports itself
//! degraded, a pipeline whose policy is `batch` sends what the rules routed to real time to
//! the batch path instead; with `buffer` (the default) nothing changes and the real-time
//! path's queue holds the events (backpressure) until it recovers.

mod reload;

pub use reload::{ReloadError, Routes};

use crate::event::{ChangeEvent, Operation};
use crate::runtime::PathMask;
use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus::IntCounter;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use syncmesh_crds::{DailyWindow, OperationName, PathName, RouteSpec};

/// The paths a pipeline has, in index order (the bit of each in a `PathMask`).
pub const PATHS: [PathName; 2] = [PathName::Realtime, PathName::Batch];

/// The index of `path` in `PATHS` (and in a runtime's path slots).
pub const fn path_index(path: PathName) -> usize {
    match path {
        PathName::Realtime => 0,
        PathName::Batch => 1,
    }
}

pub const fn path_bit(path: PathName) -> PathMask {
    1 << path_index(path)
}

fn mask_of(paths: &[PathName]) -> PathMask {
    paths.iter().fold(0, |m, p| m | path_bit(*p))
}

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("spec.routes[{index}].match.tables: {source}")]
    Glob {
        index: usize,
        source: globset::Error,
    },
    #[error("spec.routes[{index}].match.timeWindow.{field}: {reason}")]
    TimeWindow {
        index: usize,
        field: &'static str,
        reason: String,
    },
}

struct Rule {
    name: String,
    sources: Vec<String>,
    tables: Option<GlobSet>,
    /// Bit per `Operation` (see `op_bit`); 0 means any.
    ops: u8,
    /// Inclusive bounds on the row's size in bytes.
    row_bytes: Option<(u64, u64)>,
    window: Option<DailyWindow>,
    to: PathMask,
}

fn op_bit(op: Operation) -> u8 {
    match op {
        Operation::Insert => 1,
        Operation::Update => 2,
        Operation::Delete => 4,
        Operation::Ddl => 8,
        Operation::Read => 16,
    }
}

fn op_name_bit(op: OperationName) -> u8 {
    match op {
        OperationName::Insert => 1,
        OperationName::Update => 2,
        OperationName::Delete => 4,
        OperationName::Ddl => 8,
        OperationName::Read => 16,
    }
}

/// The minute of the day at `now` on a clock `offset_seconds` east of UTC.
fn minute_of_day(now: DateTime<Utc>, offset_seconds: i32) -> u32 {
    ((now.timestamp() + i64::from(offset_seconds)).rem_euclid(86_400) / 60) as u32
}

impl Rule {
    /// Cheap conditions first; the row's size is only measured when a rule bounds it.
    fn matches(&self, event: &ChangeEvent, now: DateTime<Utc>) -> bool {
        (self.ops == 0 || self.ops & op_bit(event.op) != 0)
            && (self.sources.is_empty() || self.sources.iter().any(|s| **s == *event.source))
            && self
                .window
                .is_none_or(|w| w.contains(minute_of_day(now, w.offset_seconds)))
            && self
                .tables
                .as_ref()
                .is_none_or(|g| g.is_match(event.table().to_string()))
            && self.row_bytes.is_none_or(|(min, max)| {
                let size = event.row_bytes() as u64;
                (min..=max).contains(&size)
            })
    }
}

/// A compiled rule set.
pub struct RuleSet {
    rules: Vec<Rule>,
    default: PathMask,
    /// Decisions per rule, then one for the default route.
    counters: Vec<IntCounter>,
}

impl RuleSet {
    /// Compiles routes; `counter(route_name)` gives the decision counter for a route.
    pub fn compile(
        routes: &[RouteSpec],
        default: &[PathName],
        counter: impl Fn(&str) -> IntCounter,
    ) -> Result<Self, RuleError> {
        let mut rules = Vec::with_capacity(routes.len());
        for (index, route) in routes.iter().enumerate() {
            let tables = if route.matches.tables.is_empty() {
                None
            } else {
                let mut b = GlobSetBuilder::new();
                for t in &route.matches.tables {
                    b.add(Glob::new(t).map_err(|source| RuleError::Glob { index, source })?);
                }
                Some(
                    b.build()
                        .map_err(|source| RuleError::Glob { index, source })?,
                )
            };
            let window = match &route.matches.time_window {
                None => None,
                Some(w) => Some(w.daily().map_err(|(field, reason)| RuleError::TimeWindow {
                    index,
                    field,
                    reason,
                })?),
            };
            let row_bytes = match (route.matches.min_row_bytes, route.matches.max_row_bytes) {
                (None, None) => None,
                (min, max) => Some((min.unwrap_or(0), max.unwrap_or(u64::MAX))),
            };
            rules.push(Rule {
                name: route.name.clone(),
                sources: route.matches.sources.clone(),
                tables,
                ops: route
                    .matches
                    .operations
                    .iter()
                    .fold(0, |m, o| m | op_name_bit(*o)),
                row_bytes,
                window,
                to: mask_of(&route.to),
            });
        }
        let mut counters: Vec<IntCounter> = rules.iter().map(|r| counter(&r.name)).collect();
        counters.push(counter("default"));
        Ok(Self {
            rules,
            default: mask_of(default),
            counters,
        })
    }

    /// The paths `event` takes, counting the decision.
    pub fn decide(&self, event: &ChangeEvent) -> PathMask {
        self.decide_at(event, Utc::now())
    }

    /// [`RuleSet::decide`] with the wall clock given, for time windows.
    pub fn decide_at(&self, event: &ChangeEvent, now: DateTime<Utc>) -> PathMask {
        let hit = self.rules.iter().position(|r| r.matches(event, now));
        let idx = hit.unwrap_or(self.rules.len());
        self.counters[idx].inc();
        hit.map_or(self.default, |i| self.rules[i].to)
    }
}

/// Whether a path is degraded, as the path itself reports it; read per event without a lock.
#[derive(Debug, Default)]
pub struct PathHealth {
    degraded: AtomicBool,
    /// Wakes whoever waits in [`PathHealth::degraded`].
    became_degraded: tokio::sync::Notify,
}

impl PathHealth {
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.store(degraded, Ordering::Relaxed);
        if degraded {
            self.became_degraded.notify_waiters();
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Returns once the path is degraded (at once if it is now).
    pub async fn degraded(&self) {
        let notified = self.became_degraded.notified();
        tokio::pin!(notified);
        // Registered before the check, so a change between the two is not missed.
        notified.as_mut().enable();
        if self.is_degraded() {
            return;
        }
        notified.await;
    }
}

/// The policy while the real-time path is degraded: divert its events to the batch path.
/// (The other policy, buffering, needs nothing here: it is the absence of a fallback.)
pub struct Fallback {
    pub realtime: Arc<PathHealth>,
    /// Counts each event diverted.
    pub diverted: IntCounter,
}

const REALTIME: PathMask = path_bit(PathName::Realtime);
const BATCH: PathMask = path_bit(PathName::Batch);

/// The live decider: a rule set that can be replaced while events flow.
pub struct Decider {
    rules: ArcSwap<RuleSet>,
    fallback: Option<Fallback>,
}

impl Decider {
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules: ArcSwap::from_pointee(rules),
            fallback: None,
        }
    }

    /// Diverts real-time events to the batch path while `fallback.realtime` is degraded.
    pub fn with_fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = Some(fallback);
        self
    }

    pub fn decide(&self, event: &ChangeEvent) -> PathMask {
        let mask = self.rules.load().decide(event);
        match &self.fallback {
            Some(f) if mask & REALTIME != 0 && f.realtime.is_degraded() => self.divert(mask),
            _ => mask,
        }
    }

    /// The real-time path's health when its events go to the batch path while it is
    /// degraded; `None` when they wait for it (`buffer`).
    pub fn fallback_health(&self) -> Option<&PathHealth> {
        self.fallback.as_ref().map(|f| &*f.realtime)
    }

    /// `mask` of an event decided for the real-time path, diverted to the batch path (decided
    /// while the path is degraded, or held back while it became so); counted as a fallback.
    pub fn divert(&self, mask: PathMask) -> PathMask {
        if let Some(f) = &self.fallback {
            f.diverted.inc();
        }
        (mask & !REALTIME) | BATCH
    }

    /// Replaces the whole rule set; events decided after this call use the new one.
    pub fn reload(&self, rules: RuleSet) {
        self.rules.store(Arc::new(rules));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Position, TableId, TableSchema};
    use syncmesh_crds::RouteMatch;

    fn event(table: &str, op: Operation) -> ChangeEvent {
        ChangeEvent {
            source: "src".into(),
            position: Position::tidb(1, 0),
            transaction: None,
            schema: Arc::new(TableSchema {
                table: TableId::parse(table),
                version: 1,
                columns: vec![],
                primary_key: vec![],
            }),
            op,
            before: None,
            after: Some(vec![]),
            ddl: None,
        }
    }

    fn route(name: &str, tables: &[&str], ops: &[OperationName], to: &[PathName]) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            matches: RouteMatch {
                sources: vec![],
                tables: tables.iter().map(|s| s.to_string()).collect(),
                operations: ops.to_vec(),
                ..RouteMatch::default()
            },
            to: to.to_vec(),
        }
    }

    #[test]
    fn first_matching_rule_wins_and_default_catches_the_rest() {
        let c =
            prometheus::IntCounterVec::new(prometheus::Opts::new("d", "d"), &["route"]).unwrap();
        let rules = RuleSet::compile(
            &[
                route(
                    "deletes",
                    &["bank.*"],
                    &[OperationName::Delete],
                    &[PathName::Realtime],
                ),
                route(
                    "bank",
                    &["bank.*"],
                    &[],
                    &[PathName::Realtime, PathName::Batch],
                ),
                route("drop-audit", &["*.audit_*"], &[], &[]),
            ],
            &[PathName::Batch],
            |r| c.with_label_values(&[r]),
        )
        .unwrap();
        let d = Decider::new(rules);
        assert_eq!(d.decide(&event("bank.ledger", Operation::Delete)), 1);
        assert_eq!(d.decide(&event("bank.ledger", Operation::Insert)), 3);
        assert_eq!(d.decide(&event("hr.audit_log", Operation::Insert)), 0);
        assert_eq!(d.decide(&event("hr.people", Operation::Update)), 2);
        assert_eq!(c.with_label_values(&["default"]).get(), 1);
        assert_eq!(c.with_label_values(&["bank"]).get(), 1);
    }

    #[test]
    fn reload_swaps_the_whole_rule_set() {
        let c = prometheus::IntCounter::new("x", "x").unwrap();
        let d = Decider::new(RuleSet::compile(&[], &[PathName::Batch], |_| c.clone()).unwrap());
        assert_eq!(d.decide(&event("a.b", Operation::Insert)), 2);
        d.reload(
            RuleSet::compile(
                &[route("rt", &[], &[], &[PathName::Realtime])],
                &[PathName::Batch],
                |_| c.clone(),
            )
            .unwrap(),
        );
        assert_eq!(d.decide(&event("a.b", Operation::Insert)), 1);
        assert_eq!(c.get(), 2);
    }

    fn counter() -> IntCounter {
        IntCounter::new("c", "c").unwrap()
    }

    fn with_row(mut e: ChangeEvent, row: Vec<crate::event::Value>) -> ChangeEvent {
        e.after = Some(row);
        e
    }

    #[test]
    fn row_size_bounds_match_inclusively_and_measure_the_row() {
        use crate::event::Value;
        let mut wide = route("wide", &[], &[], &[PathName::Batch]);
        wide.matches.min_row_bytes = Some(100);
        let rules = RuleSet::compile(&[wide], &[PathName::Realtime], |_| counter()).unwrap();
        let row = |text: usize| vec![Value::Int(1), Value::String("x".repeat(text))];
        // 8 bytes of integer plus the text.
        assert_eq!(
            rules.decide(&with_row(event("a.b", Operation::Insert), row(91))),
            1
        );
        assert_eq!(
            rules.decide(&with_row(event("a.b", Operation::Insert), row(92))),
            2
        );
        // A delete is measured by its before image.
        let mut delete = event("a.b", Operation::Delete);
        delete.before = Some(row(500));
        delete.after = None;
        assert_eq!(rules.decide(&delete), 2);

        let mut narrow = route("narrow", &[], &[], &[PathName::Realtime]);
        narrow.matches.max_row_bytes = Some(10);
        let rules = RuleSet::compile(&[narrow], &[PathName::Batch], |_| counter()).unwrap();
        assert_eq!(
            rules.decide(&with_row(event("a.b", Operation::Insert), row(2))),
            1
        );
        assert_eq!(
            rules.decide(&with_row(event("a.b", Operation::Insert), row(3))),
            2
        );
    }

    #[test]
    fn time_windows_follow_the_clock_offset_and_span_midnight() {
        use syncmesh_crds::TimeWindowSpec;
        let at = |h: u32, m: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
                .unwrap()
                .and_hms_opt(h, m, 0)
                .unwrap()
                .and_utc()
        };
        let mut night = route("night", &[], &[], &[PathName::Batch]);
        night.matches.time_window = Some(TimeWindowSpec {
            start: "22:00".into(),
            end: "06:00".into(),
            utc_offset: "+08:00".into(),
        });
        let rules = RuleSet::compile(&[night], &[PathName::Realtime], |_| counter()).unwrap();
        let e = event("a.b", Operation::Insert);
        // 14:00 UTC is 22:00 at +08:00: inside; 21:59 at +08:00 is not; 05:59 is, 06:00 is not.
        assert_eq!(rules.decide_at(&e, at(14, 0)), 2);
        assert_eq!(rules.decide_at(&e, at(13, 59)), 1);
        assert_eq!(rules.decide_at(&e, at(21, 59)), 2);
        assert_eq!(rules.decide_at(&e, at(22, 0)), 1);

        let mut bad = route("bad", &[], &[], &[]);
        bad.matches.time_window = Some(TimeWindowSpec {
            start: "24:00".into(),
            end: "06:00".into(),
            utc_offset: "+00:00".into(),
        });
        let err = RuleSet::compile(&[bad], &[], |_| counter())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("spec.routes[0].match.timeWindow.start:"),
            "{err}"
        );
    }

    #[test]
    fn a_degraded_realtime_path_diverts_to_batch_only_with_the_fallback() {
        let rules = || {
            RuleSet::compile(
                &[route(
                    "both",
                    &["x.*"],
                    &[],
                    &[PathName::Realtime, PathName::Batch],
                )],
                &[PathName::Realtime],
                |_| counter(),
            )
            .unwrap()
        };
        let health = Arc::new(PathHealth::default());
        let diverted = counter();
        let d = Decider::new(rules()).with_fallback(Fallback {
            realtime: health.clone(),
            diverted: diverted.clone(),
        });
        let buffering = Decider::new(rules());
        assert_eq!(d.decide(&event("a.b", Operation::Insert)), REALTIME);
        health.set_degraded(true);
        assert_eq!(d.decide(&event("a.b", Operation::Insert)), BATCH);
        assert_eq!(d.decide(&event("x.y", Operation::Insert)), BATCH);
        assert_eq!(buffering.decide(&event("a.b", Operation::Insert)), REALTIME);
        assert_eq!(diverted.get(), 2);
        health.set_degraded(false);
        assert_eq!(d.decide(&event("x.y", Operation::Insert)), REALTIME | BATCH);
        assert_eq!(diverted.get(), 2);
    }
}
