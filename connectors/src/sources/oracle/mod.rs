//! Oracle CDC through LogMiner.
//!
//! Everything here is production code; the database is reached only through the narrow
//! [`session::OracleSession`] seam (run a statement, fetch rows).

pub mod buffer;
pub mod contents;
pub mod events;
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
