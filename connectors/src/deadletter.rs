//! The dead-letter destination: records that could not be read or applied, each with its
//! source, position and reason, so nothing is lost silently and the pipeline goes on.

use crate::event::Position;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One record that could not be processed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub source: String,
    pub position: Position,
    /// Why: names the field and the offset where the source knows them.
    pub reason: String,
    /// The raw record as read, base64 in JSON.
    #[serde(serialize_with = "as_base64")]
    pub raw: Vec<u8>,
}

fn as_base64<S: serde::Serializer>(raw: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::event::base64(raw))
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write dead letters to {path}: {source}")]
pub struct DeadLetterError {
    path: String,
    source: std::io::Error,
}

pub trait DeadLetterSink: Send {
    fn write(&mut self, letter: &DeadLetter) -> Result<(), DeadLetterError>;
    /// Makes every letter written so far durable; called before positions are committed.
    fn sync(&mut self) -> Result<(), DeadLetterError>;
}

/// Dead letters appended to a JSON-lines file.
pub struct FileDeadLetters {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl FileDeadLetters {
    /// The file is created on the first letter, so a clean run leaves none.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            out: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: std::io::Error) -> DeadLetterError {
        DeadLetterError {
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl DeadLetterSink for FileDeadLetters {
    fn write(&mut self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        if self.out.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| self.err(e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.err(e))?;
            self.out = Some(BufWriter::new(f));
        }
        let line = serde_json::to_string(letter).map_err(|e| self.err(std::io::Error::other(e)))?;
        let result = match self.out.as_mut() {
            Some(out) => writeln!(out, "{line}"),
            None => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }

    fn sync(&mut self) -> Result<(), DeadLetterError> {
        let result = match self.out.as_mut() {
            Some(out) => out.flush().and_then(|()| out.get_ref().sync_data()),
            None => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }
}
