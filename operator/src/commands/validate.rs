//! `syncmesh validate PIPELINE.yaml`: the manifest's schema and semantics, then the files it
//! references (layouts, key fields), without reading data or connecting anywhere.

use crate::Failure;
use anyhow::Context;
use std::path::{Path, PathBuf};
use syncmesh_connectors::sources::flatfile::FlatFileSource;
use syncmesh_crds::{SyncPipeline, parse_manifest};

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The SyncPipeline manifest.
    pub pipeline: PathBuf,
}

/// Reads and parses a manifest; every error is bad input (exit 2).
pub fn load(path: &Path) -> Result<SyncPipeline, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))
        .map_err(Failure::bad_input)?;
    parse_manifest(&text)
        .with_context(|| format!("invalid manifest {}", path.display()))
        .map_err(Failure::bad_input)
}

/// The directory relative paths in a manifest are resolved against.
pub fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub fn validate(args: &ValidateArgs) -> Result<(), Failure> {
    let pipeline = load(&args.pipeline)?;
    let base = base_dir(&args.pipeline);
    for (i, source) in pipeline.spec.sources.iter().enumerate() {
        if let Some(ff) = &source.flat_file {
            FlatFileSource::new(&source.name, ff, &base, &format!("spec.sources[{i}]"))
                .with_context(|| format!("invalid manifest {}", args.pipeline.display()))
                .map_err(Failure::bad_input)?;
        }
    }
    println!(
        "{}: valid SyncPipeline `{}`",
        args.pipeline.display(),
        pipeline.metadata.name.unwrap_or_default()
    );
    Ok(())
}
