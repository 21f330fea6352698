//! Paths: how events travel from the decider towards the sink. `batch` collects them into
//! snapshots in object storage; `realtime` produces them to Kafka in transactions that also
//! carry the source positions they reach.

pub mod batch;
pub mod realtime;
pub mod store;

/// Sleeps until `deadline`, or forever when there is none (a `select!` arm for "flush when the
/// oldest pending event is this old").
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
