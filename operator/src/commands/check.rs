//! `syncmesh check`: prove a sink table equals its source.
//!
//! `syncmesh check --source URL --sink URL --table T [--sink-table T2]` checks one table;
//! `syncmesh check PIPELINE.yaml [--table schema.table]` checks the tables of a pipeline
//! (`spec.check`: the source database and the tables; `spec.sink`: the sink). The JSON report
//! goes to stdout; exit 0 when equal, 1 on differences (or when a check could not run), 2 on
//! bad input.

use super::validate::{base_dir, load};
use crate::Failure;
use anyhow::anyhow;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;
use syncmesh_connectors::checker::{
    CheckOptions, CheckProgress, CheckReport, HashMode, RowHash, check_table, parse_table_name,
    tables_from_spec,
};
use syncmesh_connectors::sinks::table::TableName;

#[derive(Args)]
pub struct CheckArgs {
    /// The pipeline manifest whose tables to check (`spec.check.sourceUrl` against `spec.sink`).
    #[arg(conflicts_with_all = ["source", "sink", "sink_table"])]
    pub pipeline: Option<PathBuf>,
    /// The source database URL (`mysql://`, `mariadb://`, `postgres://`, `sqlite://`).
    #[arg(long, requires_all = ["sink", "table"])]
    pub source: Option<String>,
    /// The sink database URL.
    #[arg(long, requires = "source")]
    pub sink: Option<String>,
    /// The table, as `table` or `schema.table` (with a manifest: one of its source tables).
    #[arg(long)]
    pub table: Option<String>,
    /// The table's name on the sink, when it differs from `--table`.
    #[arg(long)]
    pub sink_table: Option<String>,
    /// Rows per primary-key chunk (default 10000, or `spec.check.chunkSize`).
    #[arg(long)]
    pub chunk_size: Option<u64>,
    /// Chunks digested at the same time, each on one connection per side.
    #[arg(long, default_value_t = CheckOptions::default().parallelism)]
    pub parallelism: usize,
    /// Differing rows listed with their fix SQL; beyond it they are only counted.
    #[arg(long, default_value_t = 1000)]
    pub max_differences: usize,
    /// Stream every row and hash it in syncmesh instead of in the databases' SQL.
    #[arg(long)]
    pub stream: bool,
    /// The per-row hash: `auto` (`crc32c-64` when both sides are MariaDB 10.8 or later, else
    /// `md5-64`), `md5-64` or `crc32c-64`.
    #[arg(long, default_value = "auto", value_parser = parse_hash)]
    pub hash: HashChoice,
    /// No progress display, even on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// `--hash`: a row hash, or `None` for auto.
#[derive(Clone, Copy, Debug)]
pub struct HashChoice(Option<RowHash>);

fn parse_hash(text: &str) -> Result<HashChoice, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(HashChoice(None));
    }
    RowHash::parse(text)
        .map(|h| HashChoice(Some(h)))
        .ok_or_else(|| format!("`{text}` is not a row hash (auto, md5-64, crc32c-64)"))
}

/// One table to check.
struct Job {
    name: String,
    source_url: String,
    source_table: TableName,
    sink_url: String,
    sink_table: TableName,
}

pub async fn run(args: CheckArgs) -> Result<(), Failure> {
    let mut options = CheckOptions {
        parallelism: args.parallelism,
        max_differences: args.max_differences,
        hash_mode: if args.stream {
            HashMode::Stream
        } else {
            HashMode::Auto
        },
        row_hash: args.hash.0,
        ..CheckOptions::default()
    };
    let (pipeline, jobs) = match (&args.pipeline, &args.source, &args.sink) {
        (Some(path), None, None) => {
            let (name, jobs, chunk_size) = manifest_jobs(path, args.table.as_deref())?;
            options.chunk_size = chunk_size;
            (Some(name), jobs)
        }
        (None, Some(source), Some(sink)) => {
            let table = args.table.as_deref().unwrap_or_default();
            let source_table = parse_table_name(table).map_err(Failure::bad_input)?;
            let sink_table = match &args.sink_table {
                Some(t) => parse_table_name(t).map_err(Failure::bad_input)?,
                None => source_table.clone(),
            };
            let job = Job {
                name: source_table.to_string(),
                source_url: source.clone(),
                source_table,
                sink_url: sink.clone(),
                sink_table,
            };
            (None, vec![job])
        }
        _ => {
            return Err(Failure::bad_input(anyhow!(
                "give a pipeline manifest, or --source URL --sink URL --table T"
            )));
        }
    };
    if let Some(n) = args.chunk_size {
        options.chunk_size = n;
    }
    options.validate().map_err(Failure::bad_input)?;

    let mut reports = Vec::new();
    for job in &jobs {
        let bar = progress_bar(args.quiet, &job.name);
        let report = check_table(
            &job.source_url,
            &job.source_table,
            &job.sink_url,
            &job.sink_table,
            &options,
            &|p: CheckProgress| {
                if let Some(bar) = &bar {
                    bar.set_message(progress_text(&p));
                }
            },
        )
        .await;
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        let report = report.map_err(|e| {
            let bad = e.is_bad_input();
            let e = anyhow::Error::new(e).context(format!("checking {}", job.name));
            if bad {
                Failure::bad_input(e)
            } else {
                Failure::failed(e)
            }
        })?;
        let mut report = report;
        report.table = job.name.clone();
        reports.push(report);
    }

    let json = match &pipeline {
        None => serde_json::to_value(&reports[0]),
        Some(name) => serde_json::to_value(serde_json::json!({
            "pipeline": name,
            "equal": reports.iter().all(|r| r.equal),
            "tables": reports,
        })),
    }
    .map_err(Failure::failed)?;
    let text = serde_json::to_string_pretty(&json).map_err(Failure::failed)?;
    println!("{text}");
    let unequal: Vec<String> = reports.iter().filter(|r| !r.equal).map(summary).collect();
    if unequal.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(anyhow!(
            "differences found: {}",
            unequal.join("; ")
        )))
    }
}

fn summary(r: &CheckReport) -> String {
    format!(
        "{}: {} missing, {} extra, {} different (diff ratio {:.6})",
        r.table,
        r.missing.len(),
        r.extra.len(),
        r.different.len(),
        r.diff_ratio
    )
}

fn progress_bar(quiet: bool, table: &str) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar.set_prefix(table.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

fn progress_text(p: &CheckProgress) -> String {
    let phase = if p.locating {
        "locating differing rows; "
    } else {
        ""
    };
    format!(
        "{phase}{} chunks, {} / {} rows, {} mismatched",
        p.chunks, p.source_rows, p.sink_rows, p.mismatched_chunks
    )
}

/// The tables of a pipeline (see `tables_from_spec`), or only `--table`.
fn manifest_jobs(path: &Path, only: Option<&str>) -> Result<(String, Vec<Job>, u64), Failure> {
    let manifest = load(path)?;
    let name = manifest.metadata.name.clone().unwrap_or_default();
    let invalid = |field: &str, reason: &str| {
        Failure::bad_input(anyhow!("{field}: {reason}")).context_path(path)
    };
    let mut tables = tables_from_spec(&manifest.spec, &base_dir(path))
        .map_err(|(field, reason)| invalid(&field, &reason))?;
    if let Some(only) = only {
        let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        if !names.contains(&only) {
            return Err(invalid(
                "--table",
                &format!("`{only}` is not one of the pipeline's tables {names:?}"),
            ));
        }
        tables.retain(|t| t.name == only);
    }
    let chunk_size = manifest
        .spec
        .check
        .as_ref()
        .map_or(CheckOptions::default().chunk_size, |c| c.chunk_size);
    let jobs = tables
        .into_iter()
        .map(|t| Job {
            name: t.name,
            source_url: t.source_url,
            source_table: t.source_table,
            sink_url: t.sink_url,
            sink_table: t.sink_table,
        })
        .collect();
    Ok((name, jobs, chunk_size))
}

trait WithPath {
    fn context_path(self, path: &Path) -> Self;
}

impl WithPath for Failure {
    fn context_path(self, path: &Path) -> Self {
        Failure {
            code: self.code,
            error: self
                .error
                .context(format!("invalid manifest {}", path.display())),
        }
    }
}
