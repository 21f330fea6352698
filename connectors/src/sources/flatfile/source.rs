//! The flat-file pipeline source: a file or a directory of files read in name order.
//!
//! Position contract: each event carries `file`, the record's byte `offset`, its framed
//! `length` and its record number; resuming continues at `offset + length`. A file read to its
//! end is recorded as completed and never read again, even if a file with a smaller name
//! appears later (it is read then, not skipped).

use super::{
    DecodeOptions, Encoding, Layout, LayoutError, ReadError, RecordDecoder, RecordFormat,
    RecordReader, RowBuffer, SignConvention,
};
use crate::deadletter::DeadLetter;
use crate::event::{ChangeEvent, Operation, Position, TableId, TableSchema};
use crate::runtime::{Emitter, Source, SourceError, SourceItem, SourceProgress, StopSignal};
use globset::{Glob, GlobMatcher};
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use syncmesh_crds as crd;

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
    root: PathBuf,
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
        let root = base.join(&spec.path);
        if !root.exists() {
            return Err(FlatFileError::Invalid {
                field: format!("{at}.flatFile.path"),
                reason: format!("{} does not exist", root.display()),
            });
        }
        Ok(Self {
            name: name.into(),
            root,
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

    /// The data location, for lineage.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn io(&self, path: &Path, error: std::io::Error) -> FlatFileError {
        FlatFileError::Io {
            source_name: self.name.to_string(),
            path: path.display().to_string(),
            error,
        }
    }

    /// Files to read, as (id, path), in name order, minus those already completed.
    fn pending_files(
        &self,
        progress: &SourceProgress,
    ) -> Result<Vec<(String, PathBuf)>, FlatFileError> {
        let meta = std::fs::metadata(&self.root).map_err(|e| self.io(&self.root, e))?;
        let mut files = Vec::new();
        if meta.is_file() {
            let id = self
                .root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((id, self.root.clone()));
        } else {
            for entry in std::fs::read_dir(&self.root).map_err(|e| self.io(&self.root, e))? {
                let entry = entry.map_err(|e| self.io(&self.root, e))?;
                let id = entry.file_name().to_string_lossy().into_owned();
                let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
                if is_file && !id.starts_with('.') && self.pattern.is_match(&id) {
                    files.push((id, entry.path()));
                }
            }
        }
        files.retain(|(id, _)| !progress.completed.contains(id));
        files.sort();
        Ok(files)
    }

    fn read_file(
        &self,
        id: &str,
        path: &Path,
        start: (u64, u64),
        out: &mut Emitter,
        stop: &StopSignal,
    ) -> Result<bool, SourceError> {
        let mut file = File::open(path).map_err(|e| self.io(path, e))?;
        file.seek(SeekFrom::Start(start.0))
            .map_err(|e| self.io(path, e))?;
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
            let record = match reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(ReadError::Io { offset, source }) => {
                    return Err(Box::new(self.io(
                        path,
                        std::io::Error::new(source.kind(), format!("at byte {offset}: {source}")),
                    )));
                }
                Err(framing) => {
                    // Framing is lost: the rest of the file is one dead letter, and the file
                    // counts as read so the pipeline goes on.
                    let offset = framing.offset();
                    let raw = std::fs::read(path)
                        .map(|b| {
                            b.get(offset as usize..)
                                .map(<[u8]>::to_vec)
                                .unwrap_or_default()
                        })
                        .unwrap_or_default();
                    let position = Position::File {
                        file: id.into(),
                        offset,
                        length: raw.len() as u64,
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
            // The framed length (terminator or RDW included) is known once the reader has
            // moved past the record; it is filled in below.
            let position = Position::File {
                file: id.into(),
                offset: record.offset,
                length: 0,
                record: record.number,
            };
            let number = record.number;
            let mut item = match self.decoder.decode_row(record.data, &mut row) {
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
                    reason: format!(
                        "{id}: record {} at byte {}: {e}",
                        record.number, record.offset
                    ),
                    raw: record.data.to_vec(),
                    position,
                }),
            };
            let (next_offset, next_number) = reader.position();
            let position = match &mut item {
                SourceItem::Event(e) => &mut e.position,
                SourceItem::Bad(d) => &mut d.position,
                SourceItem::Completed(p) => p,
            };
            if let Position::File { offset, length, .. } = position {
                *length = next_offset - *offset;
            }
            out.push_blocking(item)?;
            last = (next_offset, next_number);
            if number % 4096 == 0 && stop.is_stopped() {
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
        loop {
            for (id, path) in self.pending_files(&progress)? {
                let start = match &progress.position {
                    Some(Position::File {
                        file,
                        offset,
                        length,
                        record,
                    }) if *file == id => (offset + length, record + 1),
                    _ => (0, 1),
                };
                if stop.is_stopped() || !self.read_file(&id, &path, start, &mut out, &stop)? {
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
            let handle = tokio::runtime::Handle::current();
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
