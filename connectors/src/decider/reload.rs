//! Changing a running pipeline's routes: `spec.routes` and `spec.defaultRoute` are the part of
//! a manifest that takes effect without a restart. The new rules are validated and compiled
//! off the hot path, then swapped in whole; events decided after the swap use them, events
//! decided before keep the paths they were given (nothing already routed is re-routed).

use super::{Decider, RuleError, RuleSet};
use prometheus::IntCounterVec;
use std::sync::{Arc, Mutex};
use syncmesh_crds::{SyncPipelineSpec, validate_spec};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new spec is invalid: {0}")]
    Invalid(String),
    #[error(
        "only spec.routes and spec.defaultRoute change without a restart, and {0} changed too: restart the pipeline to apply it"
    )]
    NeedsRestart(String),
    #[error(transparent)]
    Rules(#[from] RuleError),
}

/// The routes of a running pipeline, replaceable while events flow.
pub struct Routes {
    decider: Arc<Decider>,
    pipeline: String,
    decisions: IntCounterVec,
    reloads: IntCounterVec,
    /// The spec the pipeline runs with, routes as last applied.
    spec: Mutex<SyncPipelineSpec>,
}

impl Routes {
    pub(crate) fn new(
        decider: Arc<Decider>,
        pipeline: String,
        decisions: IntCounterVec,
        reloads: IntCounterVec,
        spec: SyncPipelineSpec,
    ) -> Self {
        Self {
            decider,
            pipeline,
            decisions,
            reloads,
            spec: Mutex::new(spec),
        }
    }

    /// Applies the routes of `spec` if they are all that differs from the running spec.
    /// `Ok(false)`: the routes are the same, nothing to do. On an error the running rules stay.
    pub fn reload(&self, spec: &SyncPipelineSpec) -> Result<bool, ReloadError> {
        let outcome = self.try_reload(spec);
        let label = match &outcome {
            Ok(true) => "applied",
            Ok(false) => "unchanged",
            Err(_) => "rejected",
        };
        self.reloads
            .with_label_values(&[self.pipeline.as_str(), label])
            .inc();
        outcome
    }

    fn try_reload(&self, spec: &SyncPipelineSpec) -> Result<bool, ReloadError> {
        let mut running = self.spec.lock().unwrap_or_else(|e| e.into_inner());
        let others = changed_besides_routes(&running, spec);
        if !others.is_empty() {
            return Err(ReloadError::NeedsRestart(others.join(", ")));
        }
        if running.routes == spec.routes && running.default_route == spec.default_route {
            return Ok(false);
        }
        let issues = validate_spec(spec);
        if !issues.is_empty() {
            let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
            return Err(ReloadError::Invalid(text.join("; ")));
        }
        let decisions = &self.decisions;
        let pipeline = &self.pipeline;
        let rules = RuleSet::compile(&spec.routes, &spec.default_route, |route| {
            decisions.with_label_values(&[pipeline.as_str(), route])
        })?;
        self.decider.reload(rules);
        running.routes = spec.routes.clone();
        running.default_route = spec.default_route.clone();
        tracing::info!(pipeline = %self.pipeline, routes = spec.routes.len(), "routes reloaded");
        Ok(true)
    }
}

/// The top-level `spec` fields other than the routes whose values differ, as `spec.<field>`.
fn changed_besides_routes(a: &SyncPipelineSpec, b: &SyncPipelineSpec) -> Vec<String> {
    let as_map = |s: &SyncPipelineSpec| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(a), as_map(b));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "routes" | "defaultRoute"))
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("spec.{k}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChangeEvent, Operation, Position, TableId, TableSchema};

    fn spec(yaml_rest: &str) -> SyncPipelineSpec {
        let manifest = format!(
            "apiVersion: syncmesh.io/v1alpha1\nkind: SyncPipeline\nmetadata: {{name: p}}\nspec:\n  sources:\n    - name: s\n      flatFile: {{path: d, layout: l.cpy, table: a.t, primaryKey: [ID]}}\n  batch: {{url: out}}\n  realtime: {{brokers: 'k:9092'}}\n{yaml_rest}"
        );
        syncmesh_crds::parse_manifest(&manifest)
            .expect("test manifest parses")
            .spec
    }

    fn event() -> ChangeEvent {
        ChangeEvent {
            source: "s".into(),
            position: Position::tidb(1, 0),
            transaction: None,
            schema: Arc::new(TableSchema {
                table: TableId::parse("a.t"),
                version: 1,
                columns: vec![],
                primary_key: vec![],
            }),
            op: Operation::Insert,
            before: None,
            after: Some(vec![]),
            ddl: None,
        }
    }

    fn routes(initial: &SyncPipelineSpec) -> (Routes, Arc<Decider>, IntCounterVec) {
        let decisions =
            IntCounterVec::new(prometheus::Opts::new("d", "d"), &["pipeline", "route"]).unwrap();
        let reloads =
            IntCounterVec::new(prometheus::Opts::new("r", "r"), &["pipeline", "outcome"]).unwrap();
        let rules = RuleSet::compile(&initial.routes, &initial.default_route, |r| {
            decisions.with_label_values(&["p", r])
        })
        .unwrap();
        let decider = Arc::new(Decider::new(rules));
        (
            Routes::new(
                decider.clone(),
                "p".into(),
                decisions,
                reloads.clone(),
                initial.clone(),
            ),
            decider,
            reloads,
        )
    }

    #[test]
    fn a_routes_change_is_applied_and_counted() {
        let old = spec("  defaultRoute: [batch]\n");
        let (routes, decider, reloads) = routes(&old);
        assert_eq!(decider.decide(&event()), 2);
        let new = spec(
            "  defaultRoute: [batch]\n  routes:\n    - name: live\n      match: {tables: ['a.*']}\n      to: [realtime]\n",
        );
        assert!(routes.reload(&new).unwrap());
        assert_eq!(decider.decide(&event()), 1);
        assert!(!routes.reload(&new).unwrap(), "the same routes again");
        assert_eq!(reloads.with_label_values(&["p", "applied"]).get(), 1);
        assert_eq!(reloads.with_label_values(&["p", "unchanged"]).get(), 1);
    }

    #[test]
    fn other_changes_and_invalid_routes_are_refused_and_the_rules_stay() {
        let old = spec("  defaultRoute: [batch]\n");
        let (routes, decider, reloads) = routes(&old);
        let mut other = spec("  defaultRoute: [realtime]\n");
        other.realtime.as_mut().unwrap().brokers = "elsewhere:9092".into();
        let err = routes.reload(&other).unwrap_err().to_string();
        assert!(err.contains("spec.realtime"), "{err}");
        let mut bad =
            spec("  routes:\n    - name: r\n      match: {sources: [s]}\n      to: [realtime]\n");
        bad.routes[0].matches.sources = vec!["nope".into()];
        let err = routes.reload(&bad).unwrap_err().to_string();
        assert!(err.contains("spec.routes[0].match.sources[0]"), "{err}");
        assert_eq!(decider.decide(&event()), 2, "the old rules still decide");
        assert_eq!(reloads.with_label_values(&["p", "rejected"]).get(), 2);
    }
}
