//! Paths: how events travel from the decider to the sink. `batch` collects them into
//! snapshots in object storage; the real-time path (Kafka) joins it in a later version.

pub mod batch;
pub mod realtime;
pub mod store;
