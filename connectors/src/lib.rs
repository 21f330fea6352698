//! The syncmesh data plane.
//!
//! `sources` read changes, `decider` routes them, `paths` carry them (real-time to Kafka, batch
//! to object-storage snapshots), `sinks` apply them to tables, `runtime` wires a pipeline and
//! tracks acknowledged positions, `checkpoint` persists them, `lineage` reports runs.

pub mod checker;
pub mod checkpoint;
pub mod deadletter;
pub mod decider;
pub mod event;
pub mod lineage;
pub mod metrics;
pub mod paths;
pub mod pipeline;
pub mod runtime;
pub mod sinks;
pub mod sources;
