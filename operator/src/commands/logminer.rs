//! `syncmesh logminer ...`: LogMiner tools for DBAs and tests.

use crate::Failure;
use clap::Subcommand;
use std::io::{BufWriter, Write};
use syncmesh_connectors::event::to_debezium_json;
use syncmesh_connectors::sources::oracle::buffer::BufferConfig;
use syncmesh_connectors::sources::oracle::replay::replay_csv;
use syncmesh_connectors::sources::oracle::stream::Emitted;

#[derive(Subcommand)]
pub enum LogminerCommand {
    /// Replay V$LOGMNR_CONTENTS rows exported as CSV; print committed change events as JSON
    /// lines (Debezium envelopes, `ts_ms` = commit time) in commit order. Rows that cannot be
    /// read are reported on stderr with their row, column and byte, the rest is still
    /// printed, and the exit code is 2.
    Replay {
        /// The CSV export (header row with Oracle's column names: SCN, XID, OPERATION_CODE,
        /// SQL_REDO are required; START_SCN, COMMIT_SCN, TIMESTAMP, COMMIT_TIMESTAMP, CSF,
        /// ROLLBACK, RS_ID, SSN, ROW_ID, SEG_OWNER, TABLE_NAME, THREAD#, INFO are used when present).
        contents: std::path::PathBuf,
        /// Bytes one transaction may hold in memory before it spills to disk.
        #[arg(long, default_value_t = 64 << 20)]
        memory_limit: usize,
        /// Where large transactions spill (default: the system temp directory).
        #[arg(long)]
        spill_dir: Option<std::path::PathBuf>,
        /// Only emit transactions whose START row is in the export.
        #[arg(long)]
        require_start: bool,
        /// Print a summary (rows, events, transactions) on stderr at the end.
        #[arg(long)]
        summary: bool,
    },
}

pub fn run(cmd: LogminerCommand) -> Result<(), Failure> {
    match cmd {
        LogminerCommand::Replay {
            contents,
            memory_limit,
            spill_dir,
            require_start,
            summary,
        } => {
            let config = BufferConfig {
                memory_limit,
                spill_dir: spill_dir.unwrap_or_else(std::env::temp_dir),
                abandon_after: None,
                require_start,
                // LOB rows in the export are assembled into their events.
                lobs: true,
            };
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            let mut write_error = None;
            let report = replay_csv(&contents, config, |item| {
                if let Emitted::Event(event) = item {
                    let ts = event.commit_time().map_or(0, |t| t.timestamp_millis());
                    let line = to_debezium_json(&event, ts);
                    if let Err(e) = writeln!(out, "{line}")
                        && write_error.is_none()
                    {
                        write_error = Some(e);
                    }
                }
            })
            .map_err(Failure::bad_input)?;
            if let Some(e) = write_error {
                return Err(Failure::failed(e));
            }
            out.flush().map_err(Failure::failed)?;
            for bad in &report.bad_rows {
                eprintln!("bad row: {bad}");
            }
            if summary {
                eprintln!(
                    "{} rows, {} events, {} transactions committed, {} rolled back, {} still open at the end, {} bad rows",
                    report.rows,
                    report.events,
                    report.committed,
                    report.rolled_back,
                    report.open_transactions,
                    report.bad_rows.len()
                );
            }
            if report.bad_rows.is_empty() {
                Ok(())
            } else {
                Err(Failure::bad_input(anyhow::anyhow!(
                    "{}: {} bad rows (listed above); every other committed change was printed",
                    contents.display(),
                    report.bad_rows.len()
                )))
            }
        }
    }
}
