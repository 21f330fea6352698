//! `syncmesh logminer ...`: LogMiner tools for DBAs and tests.

use crate::Failure;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum LogminerCommand {
    /// Replay V$LOGMNR_CONTENTS rows exported as CSV; print committed change events as JSON lines.
    Replay {
        /// The CSV export (header row with Oracle's column names).
        contents: std::path::PathBuf,
    },
}

pub fn run(cmd: LogminerCommand) -> Result<(), Failure> {
    match cmd {
        LogminerCommand::Replay { contents } => Err(Failure::failed(anyhow::anyhow!(
            "logminer replay {}: not built yet",
            contents.display()
        ))),
    }
}
