//! Oracle CDC through LogMiner.
//!
//! Everything here is production code; the database is reached only through the narrow
//! [`session::OracleSession`] seam (run a statement, fetch rows).

pub mod buffer;
pub mod contents;
pub mod events;
pub mod replay;
pub mod sql_redo;
pub mod stream;
pub mod values;
