//! Semantic checks that a schema cannot express: unique names, one kind per source, routes
//! that point at configured paths. Pure: no files, no network, so `syncmesh validate` and the
//! operator run the same checks anywhere.

use crate::{PathName, SOURCE_KINDS, SyncPipelineSpec};
use std::collections::BTreeSet;
use std::fmt;

/// A problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldIssue {
    /// The field path, e.g. `spec.routes[1].to[0]`.
    pub path: String,
    pub reason: String,
}

impl FieldIssue {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn join(issues: &[FieldIssue]) -> String {
        issues
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for FieldIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Every semantic problem in `spec`, in field order. Empty means valid.
pub fn validate_spec(spec: &SyncPipelineSpec) -> Vec<FieldIssue> {
    let mut issues = Vec::new();
    if spec.sources.is_empty() {
        issues.push(FieldIssue::new(
            "spec.sources",
            "at least one source is required",
        ));
    }
    let mut names = BTreeSet::new();
    for (i, source) in spec.sources.iter().enumerate() {
        let at = format!("spec.sources[{i}]");
        if !names.insert(source.name.as_str()) {
            issues.push(FieldIssue::new(
                format!("{at}.name"),
                format!("duplicate source name `{}`", source.name),
            ));
        }
        let kinds = source.kinds();
        if kinds.len() != 1 {
            let found = if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            };
            issues.push(FieldIssue::new(
                at.clone(),
                format!("set exactly one source kind ({SOURCE_KINDS}); found {found}"),
            ));
        }
        if let Some(ora) = &source.oracle {
            let at = format!("{at}.oracle");
            if !ora.url.starts_with("oracle://") || ora.url.contains('@') {
                issues.push(FieldIssue::new(
                    format!("{at}.url"),
                    "expected `oracle://host:port/service_name`, without credentials",
                ));
            }
            let c = &ora.credentials;
            if c.password_env.is_some() == c.secret_name.is_some() {
                issues.push(FieldIssue::new(
                    format!("{at}.credentials"),
                    "set exactly one of `passwordEnv` and `secretName`",
                ));
            }
            for (field, globs) in [("include", &ora.include), ("exclude", &ora.exclude)] {
                for (j, g) in globs.iter().enumerate() {
                    if !g.contains('.') {
                        issues.push(FieldIssue::new(
                            format!("{at}.{field}[{j}]"),
                            format!("expected `OWNER.TABLE`, found `{g}`"),
                        ));
                    } else if let Err(e) = globset::Glob::new(g) {
                        issues.push(FieldIssue::new(format!("{at}.{field}[{j}]"), e.to_string()));
                    }
                }
            }
            let w = &ora.window;
            if w.min == 0 || w.min > w.initial || w.initial > w.max {
                issues.push(FieldIssue::new(
                    format!("{at}.window"),
                    format!(
                        "expected 0 < min <= initial <= max, found {} / {} / {}",
                        w.min, w.initial, w.max
                    ),
                ));
            }
        }
        if let Some(tidb) = &source.tidb {
            for (j, table) in tidb.tables.iter().enumerate() {
                if let Err(e) = globset::Glob::new(table) {
                    issues.push(FieldIssue::new(
                        format!("{at}.tidb.tables[{j}]"),
                        e.to_string(),
                    ));
                }
            }
            if tidb.topics.iter().any(|t| t.trim().is_empty()) {
                issues.push(FieldIssue::new(
                    format!("{at}.tidb.topics"),
                    "a topic name is empty",
                ));
            }
        }
        match &source.flat_file {
            None => {}
            Some(ff) => {
                if ff.primary_key.is_empty() {
                    issues.push(FieldIssue::new(
                        format!("{at}.flatFile.primaryKey"),
                        "name at least one key field",
                    ));
                }
                if !ff.table.contains('.') {
                    issues.push(FieldIssue::new(
                        format!("{at}.flatFile.table"),
                        format!("expected `schema.table`, found `{}`", ff.table),
                    ));
                }
                if let Err(e) = globset::Glob::new(&ff.pattern) {
                    issues.push(FieldIssue::new(
                        format!("{at}.flatFile.pattern"),
                        e.to_string(),
                    ));
                }
                if let Some((scheme, _)) = ff.path.split_once("://")
                    && scheme != "file"
                    && scheme != "s3"
                {
                    issues.push(FieldIssue::new(
                        format!("{at}.flatFile.path"),
                        format!("unsupported scheme `{scheme}` (use a path, file:// or s3://)"),
                    ));
                }
                if ff.s3.is_some() && !ff.path.starts_with("s3://") {
                    issues.push(FieldIssue::new(
                        format!("{at}.flatFile.s3"),
                        "`s3` applies to an `s3://` path only",
                    ));
                }
            }
        }
    }
    let check_paths = |paths: &[PathName], at: &str, issues: &mut Vec<FieldIssue>| {
        for (j, path) in paths.iter().enumerate() {
            let configured = match path {
                PathName::Batch => spec.batch.is_some(),
                PathName::Realtime => spec.realtime.is_some(),
            };
            if !configured {
                issues.push(FieldIssue::new(
                    format!("{at}[{j}]"),
                    format!(
                        "route to `{}` but `spec.{}` is not configured",
                        path.as_str(),
                        path.as_str()
                    ),
                ));
            }
        }
    };
    let mut route_names = BTreeSet::new();
    for (i, route) in spec.routes.iter().enumerate() {
        let at = format!("spec.routes[{i}]");
        if !route_names.insert(route.name.as_str()) {
            issues.push(FieldIssue::new(
                format!("{at}.name"),
                format!("duplicate route name `{}`", route.name),
            ));
        }
        for (j, glob) in route.matches.tables.iter().enumerate() {
            if let Err(e) = globset::Glob::new(glob) {
                issues.push(FieldIssue::new(
                    format!("{at}.match.tables[{j}]"),
                    e.to_string(),
                ));
            }
        }
        if let Some(window) = &route.matches.time_window
            && let Err((field, reason)) = window.daily()
        {
            issues.push(FieldIssue::new(
                format!("{at}.match.timeWindow.{field}"),
                reason,
            ));
        }
        if let (Some(min), Some(max)) = (route.matches.min_row_bytes, route.matches.max_row_bytes)
            && min > max
        {
            issues.push(FieldIssue::new(
                format!("{at}.match.maxRowBytes"),
                format!("{max} is below minRowBytes {min}: the rule could never match"),
            ));
        }
        for (j, name) in route.matches.sources.iter().enumerate() {
            if !names.contains(name.as_str()) {
                issues.push(FieldIssue::new(
                    format!("{at}.match.sources[{j}]"),
                    format!("no source is named `{name}`"),
                ));
            }
        }
        check_paths(&route.to, &format!("{at}.to"), &mut issues);
    }
    check_paths(&spec.default_route, "spec.defaultRoute", &mut issues);
    if let Some(sink) = &spec.sink
        && sink.breaker.max_samples < sink.breaker.min_samples
    {
        issues.push(FieldIssue::new(
            "spec.sink.breaker.maxSamples",
            "must be at least minSamples",
        ));
    }
    if let Some(rt) = &spec.realtime
        && rt.fallback == crate::FallbackPolicy::Batch
        && spec.batch.is_none()
    {
        issues.push(FieldIssue::new(
            "spec.realtime.fallback",
            "`batch` needs a batch path: set spec.batch, or use `buffer`",
        ));
    }
    if let Some(lineage) = &spec.lineage
        && lineage.file.is_some() == lineage.http.is_some()
    {
        issues.push(FieldIssue::new(
            "spec.lineage",
            "set exactly one of `file` and `http`",
        ));
    }
    if let Some(check) = &spec.check {
        validate_check(check, spec.sink.is_some(), &mut issues);
    }
    if let Some(batch) = &spec.batch
        && batch.full_snapshot.enabled
        && let Err(e) = batch.full_snapshot.cron()
    {
        issues.push(FieldIssue::new("spec.batch.fullSnapshot.schedule", e));
    }
    issues
}

fn validate_check(check: &crate::CheckSpec, has_sink: bool, issues: &mut Vec<FieldIssue>) {
    if !has_sink {
        issues.push(FieldIssue::new(
            "spec.check",
            "checks compare the sink with its source: `spec.sink` is not configured",
        ));
    }
    if let Err(e) = check.cron() {
        issues.push(FieldIssue::new("spec.check.schedule", e));
    }
    for (i, table) in check.tables.iter().enumerate() {
        let ok = matches!(table.split_once('.'), Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.'));
        if !ok {
            issues.push(FieldIssue::new(
                format!("spec.check.tables[{i}]"),
                format!("expected `schema.table`, found `{table}`"),
            ));
        }
    }
    if check.source_url.trim().is_empty() {
        issues.push(FieldIssue::new("spec.check.sourceUrl", "is empty"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_manifest;

    fn issues(extra: &str) -> Vec<FieldIssue> {
        let text = format!(
            r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: t}}
spec:
  sources:
    - name: a
      flatFile: {{path: d, layout: l.cpy, table: s.t, primaryKey: [K]}}
{extra}"#
        );
        match parse_manifest(&text) {
            Ok(p) => validate_spec(&p.spec),
            Err(crate::ManifestError::Invalid(issues)) => issues,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn check_needs_a_sink_a_cron_schedule_and_qualified_tables() {
        let found = issues(
            "  batch: {url: out}\n  check: {sourceUrl: 'mysql://h/db', schedule: '0 2 * *', tables: [t]}",
        );
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.check", "spec.check.schedule", "spec.check.tables[0]"],
            "{found:?}"
        );
        let ok = issues(
            "  batch: {url: out}\n  sink: {url: 'sqlite://s.db'}\n  check: {sourceUrl: 'mysql://h/db'}",
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn full_snapshot_schedule_must_be_a_five_field_cron() {
        let found = issues("  batch: {url: out, fullSnapshot: {schedule: '0 2 * *'}}\n");
        let paths: Vec<_> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["spec.batch.fullSnapshot.schedule"]);
        assert!(
            issues("  batch: {url: out, fullSnapshot: {schedule: '*/15 * * * *'}}\n").is_empty()
        );
        // Disabled: the schedule is not used, so not checked.
        assert!(
            issues("  batch: {url: out, fullSnapshot: {enabled: false, schedule: x}}\n").is_empty()
        );
    }

    #[test]
    fn default_batch_route_needs_batch_settings() {
        let found = issues("");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "spec.defaultRoute[0]");
    }

    #[test]
    fn route_to_unconfigured_realtime_and_unknown_source_are_named() {
        let found = issues(
            "  batch: {url: out}\n  routes:\n    - name: r\n      match: {sources: [b]}\n      to: [realtime]\n",
        );
        let paths: Vec<_> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.routes[0].match.sources[0]", "spec.routes[0].to[0]"]
        );
    }

    #[test]
    fn route_windows_sizes_and_the_batch_fallback_are_checked() {
        let found = issues(
            "  routes:\n    - name: r\n      match: {minRowBytes: 10, maxRowBytes: 5, timeWindow: {start: '09:00', end: '17:00', utcOffset: '+8'}}\n      to: []\n  defaultRoute: [realtime]\n  realtime: {brokers: 'k:9092', fallback: batch}\n",
        );
        let paths: Vec<_> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.routes[0].match.timeWindow.utcOffset",
                "spec.routes[0].match.maxRowBytes",
                "spec.realtime.fallback",
            ]
        );
    }

    #[test]
    fn valid_spec_has_no_issues() {
        assert!(issues("  batch: {url: out}\n").is_empty());
    }

    #[test]
    fn oracle_sources_take_credentials_by_reference_only() {
        let manifest = |oracle: &str| {
            format!(
                "apiVersion: syncmesh.io/v1alpha1\nkind: SyncPipeline\nmetadata: {{name: t}}\n\
                 spec:\n  batch: {{url: out}}\n  sources:\n    - name: ora\n      oracle: {oracle}\n"
            )
        };
        let check = |oracle: &str| match parse_manifest(&manifest(oracle)) {
            Ok(p) => validate_spec(&p.spec),
            Err(crate::ManifestError::Invalid(issues)) => issues,
            Err(e) => panic!("{e}"),
        };
        let ok = "{url: 'oracle://db:1521/ORCLPDB1', credentials: {user: CDC, passwordEnv: ORA_PW}, include: [BANK.ACCOUNTS], dictionary: redoLogs, window: {min: 10, initial: 20, max: 40}}";
        assert_eq!(check(ok), vec![]);
        let paths = |o: &str| check(o).into_iter().map(|i| i.path).collect::<Vec<_>>();
        assert_eq!(
            paths(
                "{url: 'oracle://cdc:pw@db/X', credentials: {user: CDC}, include: [ACCOUNTS], window: {min: 50, initial: 20, max: 40}}"
            ),
            [
                "spec.sources[0].oracle.url",
                "spec.sources[0].oracle.credentials",
                "spec.sources[0].oracle.include[0]",
                "spec.sources[0].oracle.window",
            ]
        );
        assert!(
            parse_manifest(&manifest(
                "{url: 'oracle://db/X', credentials: {user: CDC, password: secret}}"
            ))
            .is_err(),
            "an inline password is an unknown field"
        );
    }

    #[test]
    fn lineage_needs_exactly_one_target() {
        let found = issues("  batch: {url: out}\n  lineage: {namespace: x}\n");
        assert_eq!(found[0].path, "spec.lineage");
    }
}
