//! Oracle CDC through LogMiner.
//!
//! Everything here is production code; the database is reached only through the narrow
//! [`session::OracleSession`] seam (run a statement, fetch rows).

pub mod buffer;
pub mod contents;
pub mod events;
pub mod lob;
pub mod metrics;
pub mod miner;
pub mod recorded;
pub mod replay;
pub mod session;
pub mod source;
pub mod sql_redo;
pub mod stream;
pub mod thin;
pub mod values;

use crate::sources::oracle::source::{Connect, OracleSource, OracleSourceConfig};
use std::sync::Arc;
use std::time::Duration;
use syncmesh_crds as crd;

/// A manifest's Oracle source that cannot be built; `field` is its path.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct OracleBuildError {
    pub field: String,
    pub reason: String,
}

/// `oracle://host:port/service` → the driver's connect string `host:port/service`.
pub fn connect_string(url: &str) -> Option<String> {
    let rest = url.strip_prefix("oracle://")?;
    (!rest.is_empty() && !rest.contains('@')).then(|| rest.to_string())
}

/// Builds the source from its spec (`at` is its field path). The password is read from the
/// environment variable the spec names; `secretName` is resolved by the operator, which
/// passes it in that variable.
pub fn build_source(
    pipeline: &str,
    name: &str,
    spec: &crd::OracleSource,
    at: &str,
) -> Result<OracleSource, OracleBuildError> {
    let bad = |field: &str, reason: String| OracleBuildError {
        field: format!("{at}.oracle.{field}"),
        reason,
    };
    let cs = connect_string(&spec.url).ok_or_else(|| {
        bad(
            "url",
            "expected `oracle://host:port/service_name`, without credentials".into(),
        )
    })?;
    let env = spec.credentials.password_env.clone().unwrap_or_else(|| {
        // The operator mounts the Secret's `password` key as this variable.
        format!(
            "SYNCMESH_SECRET_{}",
            spec.credentials.secret_name.clone().unwrap_or_default()
        )
        .to_ascii_uppercase()
        .replace(['-', '.'], "_")
    });
    let password = std::env::var(&env).map_err(|_| {
        bad(
            "credentials",
            format!("the password variable `{env}` is not set"),
        )
    })?;
    let filter = stream::TableFilter::new(&spec.include, &spec.exclude)
        .map_err(|e| bad("include", e.to_string()))?;
    let config = OracleSourceConfig {
        filter,
        miner: miner::MinerConfig {
            dictionary: match spec.dictionary {
                crd::OracleDictionary::OnlineCatalog => miner::DictionaryMode::OnlineCatalog,
                crd::OracleDictionary::RedoLogs => miner::DictionaryMode::RedoLogs,
            },
            window_min: spec.window.min,
            window_max: spec.window.max,
            window_initial: spec.window.initial,
            ..Default::default()
        },
        buffer: buffer::BufferConfig {
            memory_limit: usize::try_from(spec.transaction_memory_limit_bytes)
                .unwrap_or(usize::MAX),
            spill_dir: spec
                .spill_dir
                .clone()
                .map_or_else(std::env::temp_dir, Into::into),
            abandon_after: (spec.abandon_after_seconds > 0).then(|| {
                chrono::Duration::seconds(
                    i64::try_from(spec.abandon_after_seconds).unwrap_or(i64::MAX),
                )
            }),
            require_start: false,
            lobs: spec.lob_enabled,
        },
        start_scn: spec.start_scn,
        poll_interval: Duration::from_millis(spec.poll_interval_ms),
        heartbeat_interval: (spec.heartbeat_interval_ms > 0)
            .then(|| Duration::from_millis(spec.heartbeat_interval_ms)),
    };
    let user = spec.credentials.user.clone();
    let connect: Connect = Arc::new(move || {
        let (cs, user, password) = (cs.clone(), user.clone(), password.clone());
        Box::pin(async move {
            let s = thin::ThinSession::connect(&cs, &user, &password).await?;
            Ok(Box::new(s) as Box<dyn session::OracleSession>)
        })
    });
    Ok(OracleSource::new(name, pipeline, config, connect))
}
