//! `syncmesh`: run a pipeline embedded, validate manifests, print the CRD, decode flat files.

mod commands;
mod controller;
mod logging;
mod worker;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit codes: 0 success, 1 the job ran and failed (or found differences), 2 bad input
/// (manifest, file, arguments).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "syncmesh",
    version,
    about = "Sync operational databases and legacy files into an analytic store, and prove the copy equals the source"
)]
struct Cli {
    /// Log format: `text` (human, the default) or `json`.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one pipeline in-process from its manifest (no cluster needed).
    Run(commands::run::RunArgs),
    /// Check a manifest: schema, semantics and referenced layouts. Exit 2 with the field path on error.
    Validate(commands::validate::ValidateArgs),
    /// Print the SyncPipeline CustomResourceDefinition generated from the API types.
    Crd,
    /// Flat-file tools.
    #[command(subcommand)]
    Flatfile(commands::flatfile::FlatfileCommand),
    /// Oracle LogMiner tools.
    #[command(subcommand)]
    Logminer(commands::logminer::LogminerCommand),
    /// Check that sink tables equal their source; print a JSON report, exit 1 on differences.
    Check(commands::check::CheckArgs),
    /// Shadow tables: promote after the circuit breaker diverted writes.
    #[command(subcommand)]
    Shadow(commands::shadow::ShadowCommand),
    /// Run one SyncPipeline from the API server, writing its status (the operator's Deployment runs this).
    Worker(commands::worker::WorkerArgs),
    /// Run the SyncPipeline controller: workers, ConfigMaps, Services and status per pipeline.
    Operator(commands::operator::OperatorArgs),
}

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn bad_input(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_BAD_INPUT,
            error: error.into(),
        }
    }

    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: EXIT_FAILED,
            error: error.into(),
        }
    }
}

/// Runs an async command on a multi-threaded runtime.
fn block_on(job: impl std::future::Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(job),
        Err(e) => Err(Failure::failed(e)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.log_format);
    let result = match cli.command {
        Command::Crd => commands::crd::print(),
        Command::Validate(args) => commands::validate::validate(&args),
        Command::Flatfile(cmd) => commands::flatfile::run(cmd),
        Command::Logminer(cmd) => commands::logminer::run(cmd),
        Command::Run(args) => block_on(commands::run::run(args)),
        Command::Check(args) => block_on(commands::check::run(args)),
        Command::Shadow(cmd) => block_on(commands::shadow::run(cmd)),
        Command::Worker(args) => block_on(commands::worker::run(args)),
        Command::Operator(args) => block_on(commands::operator::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}
