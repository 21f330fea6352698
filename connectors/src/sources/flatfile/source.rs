//! The flat-file pipeline source: a file, a directory of files or the objects under an
//! object-store prefix, read in name order.
//!
//! Position contract: each event carries `file` (the file name, or the object key), the
//! record's byte `offset`, its framed `length` and its record number; resuming continues at
//! `offset + length` (a ranged GET for objects). A file read to its end is recorded as
//! completed and never read again, even if a file with a smaller name appears later (it is
//! read then, not skipped).

use super::files::{Input, Location};
use super::{
    DecodeOptions, Encoding, Layout, LayoutError, ReadError, RecordDecoder, RecordFormat,
    RecordReader, RowBuffer, SignConvention,
};
use crate::deadletter::DeadLetter;
use crate::event::{ChangeEvent, Operation, Position, TableId, TableSchema};
use crate::lineage::InputDataset;
use crate::paths::store::{StoreError, open_store};
use crate::runtime::{Emitter, Source, SourceError, SourceItem, SourceProgress, StopSignal};
use globset::{Glob, GlobMatcher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncmesh_crds as crd;
use tokio::runtime::Handle;

#[derive(Debug, thiserror::Error)]
pub enum FlatFileError {
    #[error("{field}: {source}")]
    Layout { field: String, source: LayoutError },
    #[error("{field}: no field `{name}` in layout {layout}")]
    UnknownKey {
        field: String,
        name: String,
        layout: String,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{field}: {source}")]
    Store { field: String, source: StoreError },
    #[error("source `{source_name}`: cannot read {path}: {error}")]
    Io {
        source_name: String,
        path: String,
        error: std::io::Error,
    },
}

/// Reads fixed-width records from files and emits them as `read` change events.
pub struct FlatFileSource {
    name: Arc<str>,
    location: Location,
    pattern: GlobMatcher,
    layout: Layout,
    decoder: RecordDecoder,
    format: RecordFormat,
    schema: Arc<TableSchema>,
    /// Keep watching the directory for new files.
    follow: Option<Duration>,
}

fn encoding(e: crd::FileEncoding) -> Encoding {
    match e {
        crd::FileEncoding::Ascii => Encoding::Ascii,
        crd::FileEncoding::Cp037 => Encoding::Cp037,
        crd::FileEncoding::Cp500 => Encoding::Cp500,
        crd::FileEncoding::Cp1047 => Encoding::Cp1047,
    }
}

fn sign(s: crd::SignConvention) -> SignConvention {
    match s {
        crd::SignConvention::Ibm => SignConvention::Ibm,
        crd::SignConvention::Mf => SignConvention::MicroFocus,
    }
}

fn format(f: crd::RecordFormat) -> RecordFormat {
    match f {
        crd::RecordFormat::Fixed => RecordFormat::Fixed,
        crd::RecordFormat::Lines => RecordFormat::Lines,
        crd::RecordFormat::Rdw => RecordFormat::Rdw,
    }
}

impl FlatFileSource {
    /// Builds the source from its spec; `at` is its field path (`spec.sources[0]`), used in
    /// errors; relative paths are resolved against `base`. Reads the layout, not the data.
    pub fn new(
        name: &str,
        spec: &crd::FlatFileSource,
        base: &Path,
        at: &str,
    ) -> Result<Self, FlatFileError> {
        let layout_path = base.join(&spec.layout);
        let layout = Layout::load(&layout_path).map_err(|source| FlatFileError::Layout {
            field: format!("{at}.flatFile.layout"),
            source,
        })?;
        let options = DecodeOptions {
            encoding: encoding(spec.encoding),
            sign_convention: sign(spec.sign_convention),
            allow_short_text: false,
        };
        let decoder =
            RecordDecoder::new(&layout, options).map_err(|source| FlatFileError::Layout {
                field: format!("{at}.flatFile.layout"),
                source,
            })?;
        let columns = decoder.columns();
        let mut primary_key = Vec::new();
        for (j, key) in spec.primary_key.iter().enumerate() {
            match columns.iter().position(|c| c.name == *key) {
                Some(i) => primary_key.push(i),
                None => {
                    return Err(FlatFileError::UnknownKey {
                        field: format!("{at}.flatFile.primaryKey[{j}]"),
                        name: key.clone(),
                        layout: layout_path.display().to_string(),
                    });
                }
            }
        }
        let pattern = Glob::new(&spec.pattern)
            .map_err(|e| FlatFileError::Invalid {
                field: format!("{at}.flatFile.pattern"),
                reason: e.to_string(),
            })?
            .compile_matcher();
        let location = match spec.path.split_once("://") {
            Some(("s3", _)) => {
                Location::Store(open_store(&spec.path, base, spec.s3.as_ref()).map_err(
                    |source| FlatFileError::Store {
                        field: format!("{at}.flatFile.path"),
                        source,
                    },
                )?)
            }
            Some(("file", path)) => Location::Local(path.into()),
            Some((scheme, _)) => {
                return Err(FlatFileError::Invalid {
                    field: format!("{at}.flatFile.path"),
                    reason: format!("unsupported scheme `{scheme}` (use a path, file:// or s3://)"),
                });
            }
            None => Location::Local(base.join(&spec.path)),
        };
        if let Location::Local(root) = &location
            && !root.exists()
        {
            return Err(FlatFileError::Invalid {
                field: format!("{at}.flatFile.path"),
                reason: format!("{} does not exist", root.display()),
            });
        }
        Ok(Self {
            name: name.into(),
            location,
            pattern,
            layout,
            decoder,
            format: format(spec.record_format),
            schema: Arc::new(TableSchema {
                table: TableId::parse(&spec.table),
                version: 1,
                columns,
                primary_key,
            }),
            follow: None,
        })
    }

    /// Keep polling the directory for new files every `interval` until stopped.
    pub fn follow(mut self, interval: Duration) -> Self {
        self.follow = Some(interval);
        self
    }

    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// The input dataset, for lineage: `file` and the absolute path, or `s3://bucket` and the
    /// prefix.
    pub fn input_dataset(&self) -> InputDataset {
        let dataset = match &self.location {
            Location::Local(root) => {
                let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
                InputDataset::new("file", root.display().to_string())
                    .with_data_source("file", format!("file://{}", root.display()))
            }
            Location::Store(store) => {
                let bucket = store.url.trim_start_matches("s3://");
                let bucket = bucket.split('/').next().unwrap_or_default();
                InputDataset::new(format!("s3://{bucket}"), store.prefix.to_string())
                    .with_data_source("s3", store.url.clone())
            }
        };
        dataset.with_schema(&self.schema)
    }

    fn io(&self, path: &str, error: std::io::Error) -> FlatFileError {
        FlatFileError::Io {
            source_name: self.name.to_string(),
            path: path.to_string(),
            error,
        }
    }

    /// Files to read, as (id, input), in name order, minus those already completed.
    fn pending_files(
        &self,
        progress: &SourceProgress,
        handle: &Handle,
    ) -> Result<Vec<(String, Input)>, FlatFileError> {
        let mut files = self.location.list(&self.pattern, handle).map_err(|e| {
            let at = match &self.location {
                Location::Local(root) => root.display().to_string(),
                Location::Store(store) => store.url.clone(),
            };
            self.io(&at, e)
        })?;
        files.retain(|(id, _)| !progress.completed.contains(id));
        Ok(files)
    }

    fn read_file(
        &self,
        id: &str,
        input: &Input,
        start: (u64, u64),
        out: &mut Emitter,
        stop: &StopSignal,
        handle: &Handle,
    ) -> Result<bool, SourceError> {
        let file = self
            .location
            .open(input, start.0, handle)
            .map_err(|e| self.io(&input.describe(), e))?;
        let mut reader = RecordReader::resume(
            file,
            self.format,
            self.layout.record_length,
            start.0,
            start.1,
        );
        let mut last = start;
        let mut row = RowBuffer::new();
        loop {
            let block = match reader.next_block() {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(ReadError::Io { offset, source }) => {
                    return Err(Box::new(self.io(
                        &input.describe(),
                        std::io::Error::new(source.kind(), format!("at byte {offset}: {source}")),
                    )));
                }
                Err(framing) => {
                    // Framing is lost: the rest of the file is one dead letter (its first MiB
                    // kept), and the file counts as read so the pipeline goes on.
                    let offset = framing.offset();
                    let (raw, left) = self
                        .location
                        .rest(input, offset, handle)
                        .map_err(|e| self.io(&input.describe(), e))?;
                    let position = Position::File {
                        file: id.into(),
                        offset,
                        length: left,
                        record: last.1,
                    };
                    out.push_blocking(SourceItem::Bad(DeadLetter {
                        source: self.name.to_string(),
                        position,
                        reason: format!("{id}: {framing}"),
                        raw,
                    }))?;
                    break;
                }
            };
            // A closed channel or a stop request ends the block early: the records after
            // it were not handed on, and resume from the last acknowledged position.
            let mut closed = None;
            let mut stopped = false;
            let length = block.record_length;
            self.decoder.decode_block(&block, &mut row, |i, decoded| {
                if closed.is_some() || stopped {
                    return;
                }
                let (offset, number) = block.position_of(i);
                let position = Position::File {
                    file: id.into(),
                    offset,
                    length: block.framed_length,
                    record: number,
                };
                let item = match decoded {
                    Ok(values) => SourceItem::Event(ChangeEvent {
                        source: self.name.clone(),
                        position,
                        transaction: None,
                        schema: self.schema.clone(),
                        op: Operation::Read,
                        before: None,
                        after: Some(values.to_values()),
                        ddl: None,
                    }),
                    Err(e) => SourceItem::Bad(DeadLetter {
                        source: self.name.to_string(),
                        reason: format!("{id}: record {number} at byte {offset}: {e}"),
                        raw: block
                            .data
                            .get(i * length..(i + 1) * length)
                            .unwrap_or_default()
                            .to_vec(),
                        position,
                    }),
                };
                if let Err(c) = out.push_blocking(item) {
                    closed = Some(c);
                    return;
                }
                last = (offset + block.framed_length, number + 1);
                stopped = number % 4096 == 0 && stop.is_stopped();
            });
            if let Some(c) = closed {
                return Err(c.into());
            }
            if stopped {
                return Ok(false);
            }
        }
        let (offset, number) = reader.position();
        out.push_blocking(SourceItem::Completed(Position::File {
            file: id.into(),
            offset,
            length: 0,
            record: number.saturating_sub(1),
        }))?;
        Ok(true)
    }

    fn read_all(
        self,
        progress: SourceProgress,
        mut out: Emitter,
        mut stop: StopSignal,
    ) -> Result<(), SourceError> {
        let mut progress = progress;
        let handle = Handle::current();
        loop {
            for (id, input) in self.pending_files(&progress, &handle)? {
                let start = match &progress.position {
                    Some(Position::File {
                        file,
                        offset,
                        length,
                        record,
                    }) if *file == id => (offset + length, record + 1),
                    _ => (0, 1),
                };
                if stop.is_stopped()
                    || !self.read_file(&id, &input, start, &mut out, &stop, &handle)?
                {
                    out.flush_blocking()?;
                    return Ok(());
                }
                progress.completed.insert(id);
            }
            out.flush_blocking()?;
            let Some(interval) = self.follow else {
                return Ok(());
            };
            // Wait for the next poll or a stop, whichever comes first.
            let stopped = handle.block_on(async {
                tokio::select! {
                    _ = stop.stopped() => true,
                    _ = tokio::time::sleep(interval) => false,
                }
            });
            if stopped {
                return Ok(());
            }
        }
    }
}

#[async_trait::async_trait]
impl Source for FlatFileSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        self: Box<Self>,
        resume: SourceProgress,
        out: Emitter,
        stop: StopSignal,
    ) -> Result<(), SourceError> {
        tokio::task::spawn_blocking(move || self.read_all(resume, out, stop))
            .await
            .map_err(|e| -> SourceError { format!("file reader panicked: {e}").into() })?
    }
}
