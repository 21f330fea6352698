//! Replaying a `V$LOGMNR_CONTENTS` CSV export through the same buffer and event builder as
//! the live source (`syncmesh logminer replay`).

use super::buffer::BufferConfig;
use super::contents::{ContentsCsv, CsvError};
use super::stream::{ChangeStream, Emitted, StreamError, TableFilter};
use std::path::Path;

/// What a replay found.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub rows: u64,
    pub events: u64,
    pub committed: u64,
    pub rolled_back: u64,
    /// Rows that could not be read or parsed, each naming its row, column and byte.
    pub bad_rows: Vec<String>,
    /// Transactions still open at the end of the export (not emitted).
    pub open_transactions: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Csv(#[from] CsvError),
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Reads `path` and hands every committed event (and bad row) to `emit`, in commit order.
pub fn replay_csv(
    path: &Path,
    buffer: BufferConfig,
    mut emit: impl FnMut(Emitted),
) -> Result<ReplayReport, ReplayError> {
    let mut csv = ContentsCsv::open(path)?;
    let mut stream = ChangeStream::new("logminer", buffer, TableFilter::default(), None);
    let mut report = ReplayReport::default();
    let mut no_dictionary = |_: &crate::event::TableId| None;
    while let Some(next) = csv.next_row() {
        match next {
            Ok((_, _, row)) => stream.push(row, &mut no_dictionary)?,
            Err(e @ CsvError::Row { .. }) => report.bad_rows.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
        for item in stream.drain() {
            if let Emitted::Bad { reason, .. } = &item {
                report.bad_rows.push(reason.clone());
            }
            emit(item);
        }
    }
    stream.end_window(&mut no_dictionary)?;
    for item in stream.drain() {
        if let Emitted::Bad { reason, .. } = &item {
            report.bad_rows.push(reason.clone());
        }
        emit(item);
    }
    let stats = stream.stats().clone();
    report.rows = stats.rows;
    report.events = stats.events;
    report.committed = stream.buffer().stats().committed;
    report.rolled_back = stream.buffer().stats().rolled_back;
    report.open_transactions = stream.buffer().active();
    Ok(report)
}
