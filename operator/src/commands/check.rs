//! `syncmesh check`: prove a sink table equals its source.

use crate::Failure;
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {
    /// The pipeline manifest whose tables to check.
    pub pipeline: Option<std::path::PathBuf>,
}

pub async fn run(_args: CheckArgs) -> Result<(), Failure> {
    Err(Failure::failed(anyhow::anyhow!("check: not built yet")))
}
