//! Sinks: where change events land at the end of a path.

pub mod breaker;
pub mod table;
