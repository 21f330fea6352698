//! Retries of object-storage calls: transient failures (5xx, timeouts, refused or reset
//! connections) are retried with exponential backoff until a total time bound; answers that
//! retrying cannot change (not found, already exists, denied, ...) are returned at once.
//!
//! The store client retries some requests itself; this loop sits above it so that a whole
//! step of a commit has one bound, and so that requests the client does not retry (a
//! conditional put) are retried too: the caller makes each step safe to repeat.

use object_store::Error as StoreError;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long and how often a step is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time a step may take, attempts and waits included.
    pub timeout: Duration,
    /// First wait; each next one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new(Duration::from_secs(300))
    }
}

/// A step that failed for good.
#[derive(Debug)]
pub struct Failed {
    pub attempts: u32,
    pub source: StoreError,
}

/// Whether retrying could change the answer.
pub fn is_transient(e: &StoreError) -> bool {
    !matches!(
        e,
        StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::Precondition { .. }
            | StoreError::NotModified { .. }
            | StoreError::NotImplemented { .. }
            | StoreError::NotSupported { .. }
            | StoreError::InvalidPath { .. }
            | StoreError::PermissionDenied { .. }
            | StoreError::Unauthenticated { .. }
            | StoreError::UnknownConfigurationKey { .. }
    )
}

/// Runs `op` until it succeeds, fails for good, or `policy.timeout` has passed. `on_retry`
/// is told about each transient failure before the wait (for logs and metrics).
pub async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    mut op: F,
    mut on_retry: impl FnMut(&StoreError, u32),
) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + policy.timeout;
    let mut backoff = policy.first_backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let err = match tokio::time::timeout(left, op()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if !is_transient(&e) => {
                return Err(Failed {
                    attempts,
                    source: e,
                });
            }
            Ok(Err(e)) => e,
            Err(_) => StoreError::Generic {
                store: "retry",
                source: format!("no answer within {:?}", policy.timeout).into(),
            },
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failed {
                attempts,
                source: StoreError::Generic {
                    store: "retry",
                    source: format!(
                        "gave up after {attempts} attempts in {:?}: {err}",
                        policy.timeout
                    )
                    .into(),
                },
            });
        }
        on_retry(&err, attempts);
        tokio::time::sleep(backoff.min(left)).await;
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> StoreError {
        StoreError::Generic {
            store: "S3",
            source: "HTTP 503 Slow Down".into(),
        }
    }

    fn fast(timeout_ms: u64) -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_millis(timeout_ms),
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(20),
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = AtomicU32::new(0);
        let mut seen = 0;
        let got = retry(
            fast(5_000),
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(transient())
                } else {
                    Ok(42)
                }
            },
            |_, _| seen += 1,
        )
        .await
        .unwrap();
        assert_eq!((got, calls.load(Ordering::SeqCst), seen), (42, 4, 3));
    }

    #[tokio::test]
    async fn permanent_failures_are_returned_at_once() {
        let calls = AtomicU32::new(0);
        let err = retry(
            fast(5_000),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(StoreError::AlreadyExists {
                    path: "m.json".into(),
                    source: "exists".into(),
                })
            },
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 1);
        assert!(matches!(err.source, StoreError::AlreadyExists { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn retrying_stops_at_the_time_bound() {
        let started = Instant::now();
        let err = retry(fast(200), || async { Err::<(), _>(transient()) }, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.attempts > 2, "{}", err.attempts);
        assert!(err.source.to_string().contains("gave up"), "{}", err.source);
        // An attempt that never answers is cut at the bound as well.
        let err = retry(fast(200), std::future::pending::<Result<(), _>>, |_, _| {})
            .await
            .unwrap_err();
        assert!(err.source.to_string().contains("gave up"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
