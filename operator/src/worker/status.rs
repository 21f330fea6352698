//! The worker's part of `SyncPipeline.status`, computed from what the running pipeline shows:
//! its counters, the committed checkpoint, the sink tables' breakers and the checks' outcomes.
//! Pure functions here; `writer.rs` sends the result to the API server.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::BTreeMap;
use std::time::Duration;
use syncmesh_connectors::checker::{CheckOutcome, CheckVerdict};
use syncmesh_connectors::checkpoint::Checkpoint;
use syncmesh_crds::{SinkTableStatus, SourceStatus, SyncPipelineStatus, TableCheckStatus};

/// What the worker saw at one moment.
#[derive(Debug, Default)]
pub struct Observation {
    /// Events read from all sources in this run.
    pub events_read: u64,
    /// Source names (in spec order) and the events each has read in this run.
    pub sources: Vec<(String, u64)>,
    /// The last committed checkpoint, if any has been saved.
    pub checkpoint: Option<Checkpoint>,
    /// Per source, source commit time to acknowledgement of its newest committed event
    /// (`syncmesh_source_lag_seconds`); absent for sources whose events carry no commit time
    /// (flat files) and before the first acknowledgement.
    pub lags: BTreeMap<String, Duration>,
    /// Every sink table's breaker.
    pub sink_tables: Vec<SinkTableStatus>,
}

/// The most recent check of each table, and how many failed in a row.
#[derive(Debug, Default)]
pub struct CheckBook {
    tables: BTreeMap<String, TableCheckStatus>,
}

impl CheckBook {
    /// Records one table's outcome. A check that could not run is no verdict on the data: it
    /// neither counts as a failure nor resets the count (as the breaker sees it).
    pub fn record(&mut self, outcome: &CheckOutcome) {
        let previous = self
            .tables
            .get(&outcome.table)
            .map_or(0, |t| t.consecutive_failures);
        let (result, missing, extra, different, diff_ratio, failures, message) =
            match &outcome.verdict {
                CheckVerdict::Passed => ("Passed", 0, 0, 0, 0.0, 0, None),
                CheckVerdict::Failed {
                    missing,
                    extra,
                    different,
                    diff_ratio,
                } => (
                    "Failed",
                    *missing,
                    *extra,
                    *different,
                    *diff_ratio,
                    previous.saturating_add(1),
                    None,
                ),
                CheckVerdict::Error { message } => {
                    ("Error", 0, 0, 0, 0.0, previous, Some(message.clone()))
                }
            };
        self.tables.insert(
            outcome.table.clone(),
            TableCheckStatus {
                table: outcome.table.clone(),
                sink_table: outcome.sink_table.clone(),
                result: result.to_string(),
                finished_at: rfc3339(outcome.finished_at),
                source_rows: outcome.source_rows,
                sink_rows: outcome.sink_rows,
                missing,
                extra,
                different,
                diff_ratio,
                consecutive_failures: failures,
                message,
            },
        );
    }

    pub fn checks(&self) -> Vec<TableCheckStatus> {
        self.tables.values().cloned().collect()
    }

    /// `Failed` if any table's latest check found differences, else `Error` if any could not
    /// run, else `Passed`; `None` before the first check.
    pub fn summary(&self) -> Option<String> {
        let rank = |r: &str| match r {
            "Failed" => 2,
            "Error" => 1,
            _ => 0,
        };
        self.tables
            .values()
            .map(|t| t.result.as_str())
            .max_by_key(|r| rank(r))
            .map(str::to_string)
    }
}

/// The worker's fields of the status (no heartbeat: the writer stamps it when it writes).
/// `phase`, `conditions` and `observedGeneration` belong to the operator and stay unset.
pub fn worker_status(seen: &Observation, checks: &CheckBook) -> SyncPipelineStatus {
    let mut sources = Vec::with_capacity(seen.sources.len());
    let mut worst_lag: Option<Duration> = None;
    for (name, read) in &seen.sources {
        let position = seen
            .checkpoint
            .as_ref()
            .and_then(|c| c.sources.get(name))
            .and_then(|p| p.position.as_ref());
        let lag = seen.lags.get(name).copied();
        if let Some(l) = lag {
            worst_lag = Some(worst_lag.map_or(l, |w| w.max(l)));
        }
        sources.push(SourceStatus {
            name: name.clone(),
            position: position.map(ToString::to_string),
            lag: lag.map(format_lag),
            events_read: *read,
        });
    }
    SyncPipelineStatus {
        events_read: Some(seen.events_read),
        lag: worst_lag.map(format_lag),
        sources,
        sink_tables: seen.sink_tables.clone(),
        breaker: breaker_summary(&seen.sink_tables),
        last_check: checks.summary(),
        checks: checks.checks(),
        ..Default::default()
    }
}

/// `closed` when every breaker is closed; else the worst state and how many tables are in
/// it, e.g. `open (1/3)`; `None` without sink tables.
pub fn breaker_summary(tables: &[SinkTableStatus]) -> Option<String> {
    if tables.is_empty() {
        return None;
    }
    let rank = |s: &str| match s {
        "open" => 3,
        "half-open" => 2,
        "promoted" => 1,
        _ => 0,
    };
    let worst = tables
        .iter()
        .map(|t| t.breaker.as_str())
        .max_by_key(|s| rank(s))?;
    if rank(worst) == 0 {
        return Some("closed".into());
    }
    let n = tables.iter().filter(|t| t.breaker == worst).count();
    Some(format!("{worst} ({n}/{})", tables.len()))
}

/// `850ms`, `1.2s`, `3m4s`, `2h5m`.
pub fn format_lag(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", d.as_secs_f64()),
        60_000..3_600_000 => format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1_000),
        _ => format!("{}h{}m", ms / 3_600_000, (ms % 3_600_000) / 60_000),
    }
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncmesh_connectors::event::Position;
    use syncmesh_connectors::runtime::SourceProgress;

    fn outcome(table: &str, verdict: CheckVerdict) -> CheckOutcome {
        CheckOutcome {
            pipeline: "p".into(),
            table: table.into(),
            sink_table: format!("{}_copy", table.rsplit('.').next().unwrap_or(table)),
            verdict,
            source_rows: 10,
            sink_rows: 9,
            finished_at: DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            duration: Duration::from_millis(3),
            report: None,
        }
    }

    fn file_position(file: &str, record: u64) -> Position {
        Position::File {
            file: file.into(),
            offset: (record - 1) * 100,
            length: 100,
            record,
        }
    }

    fn failed() -> CheckVerdict {
        CheckVerdict::Failed {
            missing: 1,
            extra: 2,
            different: 3,
            diff_ratio: 0.6,
        }
    }

    fn table(name: &str, breaker: &str) -> SinkTableStatus {
        SinkTableStatus {
            table: name.into(),
            breaker: breaker.into(),
            ..Default::default()
        }
    }

    #[test]
    fn failures_count_in_a_row_errors_neither_count_nor_reset() {
        let mut book = CheckBook::default();
        assert_eq!(book.summary(), None);
        book.record(&outcome("bank.ledger", failed()));
        book.record(&outcome(
            "bank.ledger",
            CheckVerdict::Error {
                message: "sink unreachable".into(),
            },
        ));
        let t = &book.checks()[0];
        assert_eq!((t.result.as_str(), t.consecutive_failures), ("Error", 1));
        assert_eq!(t.message.as_deref(), Some("sink unreachable"));
        book.record(&outcome("bank.ledger", failed()));
        let t = &book.checks()[0];
        assert_eq!(
            (t.consecutive_failures, t.missing, t.extra, t.different),
            (2, 1, 2, 3)
        );
        assert_eq!(t.finished_at, "2026-11-27T10:00:00Z");
        assert_eq!(t.sink_table, "ledger_copy");
        book.record(&outcome("bank.ledger", CheckVerdict::Passed));
        assert_eq!(book.checks()[0].consecutive_failures, 0);
        assert_eq!(book.summary().as_deref(), Some("Passed"));
    }

    #[test]
    fn the_summary_is_the_worst_latest_result() {
        let mut book = CheckBook::default();
        book.record(&outcome("bank.a", CheckVerdict::Passed));
        book.record(&outcome(
            "bank.b",
            CheckVerdict::Error {
                message: "x".into(),
            },
        ));
        assert_eq!(book.summary().as_deref(), Some("Error"));
        book.record(&outcome("bank.c", failed()));
        assert_eq!(book.summary().as_deref(), Some("Failed"));
        assert_eq!(book.checks().len(), 3);
    }

    #[test]
    fn breaker_summary_names_the_worst_state_and_its_count() {
        assert_eq!(breaker_summary(&[]), None);
        let closed = [table("a", "closed"), table("b", "closed")];
        assert_eq!(breaker_summary(&closed).as_deref(), Some("closed"));
        let mixed = [
            table("a", "closed"),
            table("b", "open"),
            table("c", "half-open"),
        ];
        assert_eq!(breaker_summary(&mixed).as_deref(), Some("open (1/3)"));
        let promoted = [table("a", "promoted"), table("b", "closed")];
        assert_eq!(
            breaker_summary(&promoted).as_deref(),
            Some("promoted (1/2)")
        );
    }

    #[test]
    fn lags_read_like_kubectl_durations() {
        assert_eq!(format_lag(Duration::from_millis(1_200)), "1.2s");
        assert_eq!(format_lag(Duration::from_millis(850)), "850ms");
        assert_eq!(format_lag(Duration::from_secs(184)), "3m4s");
        assert_eq!(format_lag(Duration::from_secs(7_500)), "2h5m");
    }

    #[test]
    fn status_carries_positions_counts_and_summaries_but_no_operator_fields() {
        let checkpoint = Checkpoint {
            pipeline: "p".into(),
            updated_at: Utc::now(),
            sources: [
                (
                    "ledger".to_string(),
                    SourceProgress {
                        position: Some(file_position("ledger-0001.dat", 10)),
                        ..Default::default()
                    },
                ),
                (
                    "orders".to_string(),
                    SourceProgress {
                        position: Some(Position::tidb(7 << 18, 0)),
                        ..Default::default()
                    },
                ),
            ]
            .into(),
        };
        let seen = Observation {
            events_read: 15,
            sources: vec![
                ("ledger".into(), 10),
                ("orders".into(), 5),
                ("idle".into(), 0),
            ],
            checkpoint: Some(checkpoint),
            lags: [
                ("orders".to_string(), Duration::from_millis(2_000)),
                ("idle".to_string(), Duration::from_millis(300)),
            ]
            .into(),
            sink_tables: vec![table("ledger", "open")],
        };
        let mut book = CheckBook::default();
        book.record(&outcome("bank.ledger", failed()));
        let s = worker_status(&seen, &book);
        assert_eq!(s.events_read, Some(15));
        assert_eq!(s.lag.as_deref(), Some("2.0s"));
        assert_eq!(s.sources.len(), 3);
        assert_eq!(s.sources[0].events_read, 10);
        assert!(
            s.sources[0]
                .position
                .as_deref()
                .is_some_and(|p| p.contains("ledger-0001.dat")),
            "{:?}",
            s.sources[0]
        );
        assert_eq!(s.sources[0].lag, None);
        assert_eq!(s.sources[1].lag.as_deref(), Some("2.0s"));
        assert_eq!(s.sources[2].position, None);
        assert_eq!(s.sources[2].lag.as_deref(), Some("300ms"));
        assert_eq!(s.breaker.as_deref(), Some("open (1/1)"));
        assert_eq!(s.last_check.as_deref(), Some("Failed"));
        assert_eq!(s.checks.len(), 1);
        assert_eq!((s.phase.clone(), s.observed_generation), (None, None));
        assert!(s.conditions.is_empty());
        let json = serde_json::to_value(&s).unwrap();
        for field in ["phase", "conditions", "observedGeneration", "heartbeat"] {
            assert!(json.get(field).is_none(), "{field} in {json}");
        }
    }
}
