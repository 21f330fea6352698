//! The strategy decider: ordered rules choose the paths each event takes.
//!
//! The rule set is compiled once and swapped whole (`arc-swap`), so a reload never shows the
//! hot path half a rule set and reading it takes no lock.

use crate::event::{ChangeEvent, Operation};
use crate::runtime::PathMask;
use arc_swap::ArcSwap;
use globset::{Glob, GlobSet, GlobSetBuilder};
use prometheus::IntCounter;
use std::sync::Arc;
use syncmesh_crds::{OperationName, PathName, RouteSpec};

/// The paths a pipeline has, in index order (the bit of each in a `PathMask`).
pub const PATHS: [PathName; 2] = [PathName::Realtime, PathName::Batch];

/// The index of `path` in `PATHS` (and in a runtime's path slots).
pub fn path_index(path: PathName) -> usize {
    match path {
        PathName::Realtime => 0,
        PathName::Batch => 1,
    }
}

pub fn path_bit(path: PathName) -> PathMask {
    1 << path_index(path)
}

fn mask_of(paths: &[PathName]) -> PathMask {
    paths.iter().fold(0, |m, p| m | path_bit(*p))
}

#[derive(Debug, thiserror::Error)]
#[error("spec.routes[{index}].match.tables: {source}")]
pub struct RuleError {
    index: usize,
    source: globset::Error,
}

struct Rule {
    name: String,
    sources: Vec<String>,
    tables: Option<GlobSet>,
    /// Bit per `Operation` (see `op_bit`); 0 means any.
    ops: u8,
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

impl Rule {
    fn matches(&self, event: &ChangeEvent) -> bool {
        (self.ops == 0 || self.ops & op_bit(event.op) != 0)
            && (self.sources.is_empty() || self.sources.iter().any(|s| **s == *event.source))
            && self
                .tables
                .as_ref()
                .is_none_or(|g| g.is_match(event.table().to_string()))
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
                    b.add(Glob::new(t).map_err(|source| RuleError { index, source })?);
                }
                Some(b.build().map_err(|source| RuleError { index, source })?)
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
        let hit = self.rules.iter().position(|r| r.matches(event));
        let idx = hit.unwrap_or(self.rules.len());
        self.counters[idx].inc();
        hit.map_or(self.default, |i| self.rules[i].to)
    }
}

/// The live decider: a rule set that can be replaced while events flow.
pub struct Decider {
    rules: ArcSwap<RuleSet>,
}

impl Decider {
    pub fn new(rules: RuleSet) -> Self {
        Self {
            rules: ArcSwap::from_pointee(rules),
        }
    }

    pub fn decide(&self, event: &ChangeEvent) -> PathMask {
        self.rules.load().decide(event)
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
}
