//! Paths: how events travel from the decider towards the sink. `batch` collects them into
//! snapshots in object storage; `realtime` produces them to Kafka in transactions that also
//! carry the source positions they reach.

pub mod batch;
pub mod realtime;
pub mod store;
