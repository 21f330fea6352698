//! Conditions and phase, derived from what the operator observed: the spec's problems, the
//! apply result, the worker Deployment and the status fields the worker writes. Pure, so
//! every branch is unit-tested without an API server.

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use std::time::Duration;
use syncmesh_crds::{Condition, FieldIssue, SyncPipelineStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const BREAKER_OPEN: &str = "BreakerOpen";
pub const SHADOW_PENDING: &str = "ShadowPending";
pub const CHECK_FAILED: &str = "CheckFailed";

pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
pub const REASON_APPLY_FAILED: &str = "ApplyFailed";
pub const REASON_WORKER_UNAVAILABLE: &str = "WorkerUnavailable";

/// Everything the conditions are derived from.
pub struct Observed<'a> {
    /// Semantic problems of the spec; any makes the pipeline invalid.
    pub issues: &'a [FieldIssue],
    /// Why applying the owned objects failed, if it did.
    pub apply_error: Option<&'a str>,
    /// The worker Deployment as last applied or read.
    pub deployment: Option<&'a Deployment>,
    /// The current status (its worker-written fields).
    pub status: &'a SyncPipelineStatus,
    pub now: DateTime<Utc>,
    /// A heartbeat older than this means the worker is not running.
    pub heartbeat_timeout: Duration,
}

/// A condition before its transition time is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    fn new(type_: &'static str, status: bool, reason: &'static str, message: String) -> Self {
        Self {
            type_,
            status,
            reason,
            message,
        }
    }

    /// Whether this state is one an operator of the cluster should look at.
    pub fn is_warning(&self) -> bool {
        match self.type_ {
            READY => !self.status,
            PROGRESSING => !self.status && self.reason != "RolledOut",
            _ => self.status,
        }
    }
}

/// The six conditions, in a fixed order.
pub fn derive(o: &Observed<'_>) -> Vec<Desired> {
    let invalid = (!o.issues.is_empty()).then(|| FieldIssue::join(o.issues));
    let rollout = rollout(o.deployment);
    let breaker = breaker_open(o.status);
    let check = check_failed(o.status);

    let ready = if let Some(msg) = &invalid {
        Desired::new(READY, false, REASON_INVALID_SPEC, msg.clone())
    } else if let Some(err) = o.apply_error {
        Desired::new(READY, false, REASON_APPLY_FAILED, err.to_string())
    } else {
        worker_ready(o, &rollout)
    };

    let progressing = if let Some(msg) = &invalid {
        Desired::new(PROGRESSING, false, REASON_INVALID_SPEC, msg.clone())
    } else if let Some(err) = o.apply_error {
        Desired::new(PROGRESSING, false, REASON_APPLY_FAILED, err.to_string())
    } else {
        match &rollout {
            Rollout::Missing => Desired::new(
                PROGRESSING,
                true,
                "Creating",
                "the worker Deployment is being created".into(),
            ),
            Rollout::InProgress(msg) => Desired::new(PROGRESSING, true, "RollingOut", msg.clone()),
            Rollout::Stalled(msg) => {
                Desired::new(PROGRESSING, false, "RolloutStalled", msg.clone())
            }
            Rollout::Complete(name) => Desired::new(
                PROGRESSING,
                false,
                "RolledOut",
                format!("Deployment {name} is up to date and available"),
            ),
        }
    };

    let degraded = if let Some(msg) = &invalid {
        Desired::new(DEGRADED, true, REASON_INVALID_SPEC, msg.clone())
    } else if let Some(err) = o.apply_error {
        Desired::new(DEGRADED, true, REASON_APPLY_FAILED, err.to_string())
    } else if let Rollout::Stalled(msg) = &rollout {
        Desired::new(DEGRADED, true, "RolloutStalled", msg.clone())
    } else if breaker.status {
        Desired::new(DEGRADED, true, BREAKER_OPEN, breaker.message.clone())
    } else if check.status {
        Desired::new(DEGRADED, true, check.reason, check.message.clone())
    } else {
        Desired::new(DEGRADED, false, "AsExpected", "nothing is degraded".into())
    };

    vec![
        ready,
        progressing,
        degraded,
        breaker,
        shadow_pending(o.status),
        check,
    ]
}

/// Pending, Running, Degraded or Failed, from the derived conditions.
pub fn phase(desired: &[Desired]) -> &'static str {
    let find = |t: &str| desired.iter().find(|d| d.type_ == t);
    match (find(READY), find(DEGRADED)) {
        (_, Some(d)) if d.status && d.reason == REASON_INVALID_SPEC => "Failed",
        (_, Some(d)) if d.status => "Degraded",
        (Some(r), _) if r.status => "Running",
        _ => "Pending",
    }
}

/// One condition that changed status or reason: what it was, and what it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: Option<(String, String)>,
    pub to: Desired,
}

/// Conditions as written to status: `lastTransitionTime` moves only when the status changes
/// (per the API conventions). Also returns the transitions (status or reason changed).
pub fn merge(
    old: &[Condition],
    desired: Vec<Desired>,
    now: DateTime<Utc>,
    generation: Option<i64>,
) -> (Vec<Condition>, Vec<Transition>) {
    let now_text = rfc3339(now);
    let mut conditions = Vec::with_capacity(desired.len());
    let mut transitions = Vec::new();
    for d in desired {
        let status = if d.status { "True" } else { "False" };
        let previous = old.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p
                .last_transition_time
                .clone()
                .or_else(|| Some(now_text.clone())),
            _ => Some(now_text.clone()),
        };
        if previous.is_none_or(|p| p.status != status || p.reason != d.reason) {
            transitions.push(Transition {
                from: previous.map(|p| (p.status.clone(), p.reason.clone())),
                to: d.clone(),
            });
        }
        conditions.push(Condition {
            type_: d.type_.to_string(),
            status: status.to_string(),
            reason: d.reason.to_string(),
            message: d.message,
            last_transition_time,
            observed_generation: generation,
        });
    }
    (conditions, transitions)
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

enum Rollout {
    Missing,
    InProgress(String),
    Stalled(String),
    /// The Deployment's name.
    Complete(String),
}

fn rollout(deployment: Option<&Deployment>) -> Rollout {
    let Some(d) = deployment else {
        return Rollout::Missing;
    };
    let name = d.metadata.name.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else {
        return Rollout::InProgress(format!("Deployment {name} has no status yet"));
    };
    let stalled = st.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = stalled {
        return Rollout::Stalled(format!(
            "Deployment {name}: {}",
            c.message.as_deref().unwrap_or("progress deadline exceeded")
        ));
    }
    if st.observed_generation < d.metadata.generation {
        return Rollout::InProgress(format!(
            "Deployment {name}: the controller has not seen the new template yet"
        ));
    }
    let updated = st.updated_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if updated < want || available < want {
        return Rollout::InProgress(format!(
            "Deployment {name}: {updated} of {want} replicas updated, {available} available"
        ));
    }
    Rollout::Complete(name)
}

fn worker_ready(o: &Observed<'_>, rollout: &Rollout) -> Desired {
    let heartbeat = o.status.heartbeat.as_deref();
    let parsed = heartbeat.and_then(|h| DateTime::parse_from_rfc3339(h).ok());
    let age = parsed.map(|t| o.now.signed_duration_since(t.with_timezone(&Utc)));
    let timeout = chrono::Duration::from_std(o.heartbeat_timeout).unwrap_or(chrono::Duration::MAX);
    if let (Some(h), Some(age)) = (heartbeat, age)
        && age <= timeout
    {
        return Desired::new(
            READY,
            true,
            "WorkerRunning",
            format!("the worker reported status at {h}"),
        );
    }
    let last = match heartbeat {
        Some(h) => format!("last worker heartbeat {h}"),
        None => "no worker heartbeat yet".to_string(),
    };
    let (reason, message) = match rollout {
        Rollout::Complete(name) => (
            "HeartbeatStale",
            format!(
                "Deployment {name} is available but the worker has not reported within {}s ({last})",
                o.heartbeat_timeout.as_secs()
            ),
        ),
        Rollout::Missing => (
            REASON_WORKER_UNAVAILABLE,
            format!("the worker Deployment does not exist yet ({last})"),
        ),
        Rollout::InProgress(msg) | Rollout::Stalled(msg) => {
            (REASON_WORKER_UNAVAILABLE, format!("{msg} ({last})"))
        }
    };
    Desired::new(READY, false, reason, message)
}

fn breaker_open(status: &SyncPipelineStatus) -> Desired {
    let tripped: Vec<String> = status
        .sink_tables
        .iter()
        .filter(|t| t.breaker == "open" || t.breaker == "half-open")
        .map(|t| match &t.reason {
            Some(r) => format!("{} {} ({r})", t.table, t.breaker),
            None => format!("{} {}", t.table, t.breaker),
        })
        .collect();
    if tripped.is_empty() {
        let message = if status.sink_tables.is_empty() {
            "no sink table reported yet".to_string()
        } else {
            format!("{} sink table(s), none tripped", status.sink_tables.len())
        };
        Desired::new(BREAKER_OPEN, false, "BreakersClosed", message)
    } else {
        Desired::new(BREAKER_OPEN, true, BREAKER_OPEN, tripped.join("; "))
    }
}

fn shadow_pending(status: &SyncPipelineStatus) -> Desired {
    let pending: Vec<String> = status
        .sink_tables
        .iter()
        .filter_map(|t| {
            let shadow = t.shadow.as_deref().unwrap_or("its shadow table");
            if t.breaker == "promoted" {
                Some(format!(
                    "{}: promoted from {shadow}; the old table is kept until released or rolled back",
                    t.table
                ))
            } else if t.pending_replay > 0 {
                Some(format!(
                    "{}: {} diverted event(s) in {shadow} not yet replayed",
                    t.table, t.pending_replay
                ))
            } else {
                None
            }
        })
        .collect();
    if pending.is_empty() {
        Desired::new(
            SHADOW_PENDING,
            false,
            "NoShadowPending",
            "no shadow table holds unreplayed writes".into(),
        )
    } else {
        Desired::new(SHADOW_PENDING, true, SHADOW_PENDING, pending.join("; "))
    }
}

fn check_failed(status: &SyncPipelineStatus) -> Desired {
    let failed: Vec<String> = status
        .checks
        .iter()
        .filter(|c| c.result == "Failed")
        .map(|c| {
            format!(
                "{} vs {}: {} missing, {} extra, {} different (diff ratio {:.4}) at {}",
                c.table, c.sink_table, c.missing, c.extra, c.different, c.diff_ratio, c.finished_at
            )
        })
        .collect();
    if !failed.is_empty() {
        return Desired::new(CHECK_FAILED, true, CHECK_FAILED, failed.join("; "));
    }
    let errors: Vec<String> = status
        .checks
        .iter()
        .filter(|c| c.result == "Error")
        .map(|c| {
            format!(
                "{}: {}",
                c.table,
                c.message.as_deref().unwrap_or("the check could not run")
            )
        })
        .collect();
    if !errors.is_empty() {
        return Desired::new(CHECK_FAILED, true, "CheckError", errors.join("; "));
    }
    if status.checks.is_empty() {
        Desired::new(
            CHECK_FAILED,
            false,
            "NoChecks",
            "no check has run yet".into(),
        )
    } else {
        Desired::new(
            CHECK_FAILED,
            false,
            "ChecksPassed",
            format!("{} table(s) checked, all equal", status.checks.len()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use kube::api::ObjectMeta;
    use syncmesh_crds::{SinkTableStatus, TableCheckStatus};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn deployment(updated: i32, available: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("p-worker".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn observed<'a>(
        status: &'a SyncPipelineStatus,
        deployment: Option<&'a Deployment>,
        issues: &'a [FieldIssue],
    ) -> Observed<'a> {
        Observed {
            issues,
            apply_error: None,
            deployment,
            status,
            now: now(),
            heartbeat_timeout: Duration::from_secs(30),
        }
    }

    fn get<'a>(d: &'a [Desired], t: &str) -> &'a Desired {
        d.iter().find(|c| c.type_ == t).expect("condition present")
    }

    #[test]
    fn pods_that_never_start_leave_the_worker_unavailable_and_progressing() {
        let status = SyncPipelineStatus::default();
        let dep = deployment(1, 0);
        let d = derive(&observed(&status, Some(&dep), &[]));
        let ready = get(&d, READY);
        assert!(!ready.status);
        assert_eq!(ready.reason, REASON_WORKER_UNAVAILABLE);
        assert!(ready.message.contains("0 available"), "{}", ready.message);
        assert!(get(&d, PROGRESSING).status);
        assert!(!get(&d, DEGRADED).status);
        assert_eq!(phase(&d), "Pending");
        assert_eq!(d.len(), 6);
    }

    #[test]
    fn a_fresh_heartbeat_makes_it_ready_and_a_stale_one_does_not() {
        let dep = deployment(1, 1);
        let fresh = SyncPipelineStatus {
            heartbeat: Some("2026-01-01T11:59:50Z".into()),
            ..Default::default()
        };
        let d = derive(&observed(&fresh, Some(&dep), &[]));
        assert!(get(&d, READY).status);
        assert_eq!(get(&d, PROGRESSING).reason, "RolledOut");
        assert_eq!(phase(&d), "Running");

        let stale = SyncPipelineStatus {
            heartbeat: Some("2026-01-01T11:58:00Z".into()),
            ..Default::default()
        };
        let d = derive(&observed(&stale, Some(&dep), &[]));
        assert!(!get(&d, READY).status);
        assert_eq!(get(&d, READY).reason, "HeartbeatStale");
        assert_eq!(phase(&d), "Pending");
    }

    #[test]
    fn an_invalid_spec_fails_with_the_field_path() {
        let status = SyncPipelineStatus::default();
        let issues = vec![FieldIssue {
            path: "spec.routes[0].to[0]".into(),
            reason: "route to `realtime` but `spec.realtime` is not configured".into(),
        }];
        let d = derive(&observed(&status, None, &issues));
        for t in [READY, PROGRESSING, DEGRADED] {
            assert_eq!(get(&d, t).reason, REASON_INVALID_SPEC);
            assert!(get(&d, t).message.starts_with("spec.routes[0].to[0]: "));
        }
        assert!(get(&d, DEGRADED).status);
        assert!(!get(&d, READY).status);
        assert_eq!(phase(&d), "Failed");
    }

    #[test]
    fn breakers_shadows_and_checks_come_from_the_worker_status() {
        let status = SyncPipelineStatus {
            heartbeat: Some("2026-01-01T11:59:59Z".into()),
            sink_tables: vec![
                SinkTableStatus {
                    table: "orders".into(),
                    breaker: "open".into(),
                    reason: Some("p99 1200 ms > 400 ms".into()),
                    shadow: Some("orders_shadow".into()),
                    pending_replay: 12,
                    ..Default::default()
                },
                SinkTableStatus {
                    table: "accounts".into(),
                    breaker: "closed".into(),
                    ..Default::default()
                },
            ],
            checks: vec![TableCheckStatus {
                table: "bank.orders".into(),
                sink_table: "orders".into(),
                result: "Failed".into(),
                finished_at: "2026-01-01T02:00:00Z".into(),
                missing: 3,
                diff_ratio: 0.03,
                ..Default::default()
            }],
            ..Default::default()
        };
        let dep = deployment(1, 1);
        let d = derive(&observed(&status, Some(&dep), &[]));
        let breaker = get(&d, BREAKER_OPEN);
        assert!(breaker.status);
        assert_eq!(breaker.message, "orders open (p99 1200 ms > 400 ms)");
        let shadow = get(&d, SHADOW_PENDING);
        assert!(shadow.status);
        assert!(
            shadow
                .message
                .contains("12 diverted event(s) in orders_shadow")
        );
        let check = get(&d, CHECK_FAILED);
        assert!(check.status);
        assert!(check.message.contains("3 missing"), "{}", check.message);
        assert_eq!(get(&d, DEGRADED).reason, BREAKER_OPEN);
        assert!(get(&d, READY).status);
        assert_eq!(phase(&d), "Degraded");
    }

    #[test]
    fn check_errors_and_passes() {
        let mut status = SyncPipelineStatus::default();
        let d = derive(&observed(&status, None, &[]));
        assert_eq!(get(&d, CHECK_FAILED).reason, "NoChecks");
        status.checks.push(TableCheckStatus {
            table: "bank.a".into(),
            result: "Passed".into(),
            ..Default::default()
        });
        let d = derive(&observed(&status, None, &[]));
        assert_eq!(get(&d, CHECK_FAILED).reason, "ChecksPassed");
        assert!(!get(&d, CHECK_FAILED).status);
        status.checks.push(TableCheckStatus {
            table: "bank.b".into(),
            result: "Error".into(),
            message: Some("connection refused".into()),
            ..Default::default()
        });
        let d = derive(&observed(&status, None, &[]));
        assert_eq!(get(&d, CHECK_FAILED).reason, "CheckError");
        assert_eq!(get(&d, CHECK_FAILED).message, "bank.b: connection refused");
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let t0 = now();
        let t1 = t0 + chrono::Duration::seconds(60);
        let first = vec![Desired::new(READY, false, "WorkerUnavailable", "a".into())];
        let (c0, tr0) = merge(&[], first, t0, Some(1));
        assert_eq!(tr0.len(), 1);
        assert_eq!(
            c0[0].last_transition_time.as_deref(),
            Some("2026-01-01T12:00:00Z")
        );

        // Same status, new reason and message: time kept, still a transition (reason changed).
        let second = vec![Desired::new(READY, false, "HeartbeatStale", "b".into())];
        let (c1, tr1) = merge(&c0, second, t1, Some(2));
        assert_eq!(c1[0].last_transition_time, c0[0].last_transition_time);
        assert_eq!(c1[0].observed_generation, Some(2));
        assert_eq!(tr1.len(), 1);

        // Same status and reason: no transition.
        let third = vec![Desired::new(READY, false, "HeartbeatStale", "c".into())];
        let (_, tr2) = merge(&c1, third, t1, Some(2));
        assert!(tr2.is_empty());

        // Status flips: time moves.
        let fourth = vec![Desired::new(READY, true, "WorkerRunning", "d".into())];
        let (c3, tr3) = merge(&c1, fourth, t1, Some(2));
        assert_eq!(
            c3[0].last_transition_time.as_deref(),
            Some("2026-01-01T12:01:00Z")
        );
        assert_eq!(
            tr3[0].from,
            Some(("False".to_string(), "HeartbeatStale".to_string()))
        );
    }
}
