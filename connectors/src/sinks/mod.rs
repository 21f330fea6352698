//! Sinks: where change events land at the end of a path.

pub mod table;
pub mod breaker;
