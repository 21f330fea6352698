//! Breaker thresholds: one immutable value per pipeline, swapped whole when the manifest changes.

use std::time::Duration;

/// When a sink table's breaker trips, and how it recovers. Validated by [`BreakerConfig::validate`]
/// before use; swapped whole (never mutated in place) through [`super::BreakerConfigHandle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// When false, writes always go to the original table and nothing trips.
    pub enabled: bool,
    /// Trip when the p99 of write latencies in the window exceeds this (default 500 ms).
    pub latency_threshold: Duration,
    /// Write latencies older than this leave the window (default 60 s).
    pub window: Duration,
    /// The p99 is judged only once the window holds this many writes (default 5).
    pub min_samples: usize,
    /// The window keeps at most this many of the newest writes (default 1000).
    pub max_samples: usize,
    /// Trip after this many consecutive failed consistency checks (default 3).
    pub failed_checks: u32,
    /// Time an open breaker waits before probing the original table (default 30 s). A breaker
    /// opened by failed checks waits for a passing check instead.
    pub cool_down: Duration,
    /// Consecutive healthy probes (writes to the original within the threshold) that close a
    /// half-open breaker (default 3).
    pub probes_to_close: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            latency_threshold: Duration::from_millis(500),
            window: Duration::from_secs(60),
            min_samples: 5,
            max_samples: 1000,
            failed_checks: 3,
            cool_down: Duration::from_secs(30),
            probes_to_close: 3,
        }
    }
}

impl From<&syncmesh_crds::BreakerSpec> for BreakerConfig {
    fn from(spec: &syncmesh_crds::BreakerSpec) -> Self {
        Self {
            enabled: spec.enabled,
            latency_threshold: Duration::from_millis(spec.latency_threshold_ms),
            window: Duration::from_secs(spec.window_seconds),
            min_samples: spec.min_samples as usize,
            max_samples: spec.max_samples as usize,
            failed_checks: spec.failed_checks,
            cool_down: Duration::from_secs(spec.cool_down_seconds),
            probes_to_close: spec.probes_to_close,
        }
    }
}

/// A threshold that cannot work, with the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("breaker {field}: {reason}")]
pub struct BreakerConfigError {
    pub field: &'static str,
    pub reason: String,
}

impl BreakerConfig {
    /// Pure checks, separate from building anything.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        let bad = |field, reason: &str| {
            Err(BreakerConfigError {
                field,
                reason: reason.into(),
            })
        };
        if self.latency_threshold.is_zero() {
            return bad("latencyThresholdMs", "must be at least 1 ms");
        }
        if self.window.is_zero() {
            return bad("windowSeconds", "must be at least 1 s");
        }
        if self.min_samples == 0 {
            return bad("minSamples", "must be at least 1");
        }
        if self.max_samples < self.min_samples {
            return bad("maxSamples", "must be at least minSamples");
        }
        if self.failed_checks == 0 {
            return bad("failedChecks", "must be at least 1");
        }
        if self.probes_to_close == 0 {
            return bad("probesToClose", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_field() {
        assert_eq!(BreakerConfig::default().validate(), Ok(()));
        let c = BreakerConfig {
            max_samples: 2,
            min_samples: 3,
            ..BreakerConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "maxSamples");
        let c = BreakerConfig {
            failed_checks: 0,
            ..BreakerConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("failedChecks")
        );
    }
}
