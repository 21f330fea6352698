//! Helpers that find the services `tests/services/start.sh` started (from the environment
//! variables it exports) and give each test its own topic, table, bucket or namespace.
//!
//! # Finding services
//!
//! Each accessor in [`services`] reads its variables and returns `None` when the service is not
//! configured, after printing `SKIPPED: <service> not configured (run tests/run-all.sh)`; with
//! `SYNCMESH_REQUIRE_SERVICES=1` (CI) it panics instead, so a missing service can never make a
//! suite pass by skipping. Use [`require!`] to turn that into an early return:
//!
//! ```no_run
//! // In a test: `#[tokio::test] async fn smoke() -> anyhow::Result<()> { ... }`
//! async fn smoke() -> anyhow::Result<()> {
//!     let kafka = syncmesh_tests::require!(syncmesh_tests::services::kafka());
//!     let topic = syncmesh_tests::unique_topic("smoke");
//!     syncmesh_tests::kafka::create_topic(&kafka.brokers, &topic, 1).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Isolation
//!
//! Tests run in parallel against the same services, and some services keep their data between
//! runs (MariaDB, PostgreSQL, etcd). Every test therefore works in names of its own:
//! [`unique_topic`], [`unique_table`], [`unique_bucket`], [`unique_namespace`] (a suffix made of
//! the time, the process id and a per-process counter), and never looks at anything else.
//!
//! # Waiting
//!
//! Readiness and eventual conditions are polled with a deadline by [`poll_until`], never waited
//! for with a bare sleep; a timeout names what was awaited and the last thing observed.

pub mod broker;
pub mod kafka;
pub mod kube;
pub mod pipeline;
pub mod prometheus;
pub mod s3;
pub mod services;
pub mod sql;
pub mod ticdc;

pub use kafka::{CommittedRecord, committed_records};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a test function returns when it skips: `()` for plain tests, `Ok(())` for tests that
/// return a `Result`. Used by [`require!`].
pub trait SkipValue {
    fn skipped() -> Self;
}

impl SkipValue for () {
    fn skipped() -> Self {}
}

impl<E> SkipValue for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }
}

/// `require!(services::kafka())`: the service, or return from the test (it was reported as
/// SKIPPED, or — with `SYNCMESH_REQUIRE_SERVICES=1` — the accessor already panicked).
/// Works in tests returning `()` and `Result<(), E>`.
#[macro_export]
macro_rules! require {
    ($service:expr) => {
        match $service {
            ::std::option::Option::Some(service) => service,
            ::std::option::Option::None => return $crate::SkipValue::skipped(),
        }
    };
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A suffix no other test (in this process, a concurrent one, or an earlier run) uses: the time
/// in milliseconds, the process id and a per-process counter, in lowercase base 36, joined by
/// `sep`. About 16 characters.
pub fn unique_suffix(sep: char) -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}{sep}{}{sep}{}",
        base36(millis),
        base36(u64::from(std::process::id())),
        base36(n)
    )
}

/// `prefix` made safe (lowercase ASCII letters and digits, anything else becomes `sep`), plus a
/// [`unique_suffix`], at most `max_len` characters, starting with a letter.
pub fn unique_name(prefix: &str, sep: char, max_len: usize) -> String {
    let suffix = unique_suffix(sep);
    let mut p: String = prefix
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                sep
            }
        })
        .collect();
    if !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        p.insert(0, 't');
    }
    let room = max_len.saturating_sub(suffix.len() + 1).max(1);
    p.truncate(room);
    format!("{p}{sep}{suffix}")
}

/// A Kafka topic name of this test's own.
pub fn unique_topic(prefix: &str) -> String {
    unique_name(prefix, '-', 120)
}

/// A SQL identifier (table, MariaDB database, PostgreSQL schema) of this test's own:
/// `[a-z][a-z0-9_]*`, at most 60 characters, so it needs no quoting in MySQL or PostgreSQL.
pub fn unique_table(prefix: &str) -> String {
    unique_name(prefix, '_', 60)
}

/// An S3 bucket name of this test's own (3 to 63 lowercase letters, digits and hyphens).
pub fn unique_bucket(prefix: &str) -> String {
    unique_name(prefix, '-', 63)
}

/// A Kubernetes namespace (a DNS label) of this test's own.
pub fn unique_namespace(prefix: &str) -> String {
    unique_name(prefix, '-', 63)
}

/// Polls `f` until it yields a value, and fails `deadline` after the call.
///
/// `f` returns `Ok(Some(v))` when the condition holds (`poll_until` returns `v`), `Ok(None)` when
/// it does not hold yet, and `Err(e)` when it does not hold yet for a reason worth reporting (a
/// connection refused, the state seen so far): the last such reason is part of the timeout
/// error, which also names `what` was awaited. Polls start 50 ms apart and back off to 500 ms.
pub async fn poll_until<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let start = Instant::now();
    let mut interval = Duration::from_millis(50);
    let mut last: Option<anyhow::Error> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            let seen = match last {
                Some(e) => format!("; last observed: {e:#}"),
                None => String::new(),
            };
            anyhow::bail!(
                "timed out after {:.1}s ({attempts} polls) waiting for {what}{seen}",
                elapsed.as_secs_f64()
            );
        }
        tokio::time::sleep(interval.min(deadline - elapsed)).await;
        interval = (interval * 3 / 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn unique_names_are_valid_and_distinct() {
        let a = unique_table("My-Table.x");
        let b = unique_table("My-Table.x");
        assert_ne!(a, b);
        assert!(a.starts_with("my_table_x_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        let long = unique_namespace(&"n".repeat(200));
        assert!(long.len() <= 63, "{long}");
        assert!(unique_bucket("9x").starts_with("t9x-"));
        assert!(unique_topic("t").len() < 40);
    }

    #[tokio::test]
    async fn poll_until_returns_value_and_names_what_on_timeout() {
        let mut n = 0;
        let v = poll_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            let now = n;
            async move { Ok((now >= 3).then_some(now)) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);

        let err = poll_until(Duration::from_millis(200), "the impossible", || async {
            Err::<Option<()>, _>(anyhow::anyhow!("still nothing"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the impossible"), "{err}");
        assert!(err.contains("still nothing"), "{err}");
    }
}
