//! `syncmesh shadow ...`: promote or roll back a shadow table after the breaker diverted writes.

use crate::Failure;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ShadowCommand {
    /// Swap `<table>_shadow` in place of `<table>` atomically; the old table is kept for rollback.
    Promote {
        /// The sink database URL.
        #[arg(long)]
        sink: String,
        /// The table.
        #[arg(long)]
        table: String,
    },
}

pub async fn run(_cmd: ShadowCommand) -> Result<(), Failure> {
    Err(Failure::failed(anyhow::anyhow!("shadow: not built yet")))
}
