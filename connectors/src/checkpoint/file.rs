//! A checkpoint file: a header line with a CRC-32 of the body, then the body as JSON.
//! Written to a temporary file, fsynced, renamed over the old one and the directory fsynced,
//! so a crash leaves either the old or the new checkpoint, never half of one.

use super::{Checkpoint, CheckpointError, CheckpointStore};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &str = "syncmesh-checkpoint v1 crc32=";

pub struct FileCheckpointStore {
    path: PathBuf,
    pipeline: String,
}

impl FileCheckpointStore {
    pub fn new(path: impl Into<PathBuf>, pipeline: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            pipeline: pipeline.into(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn display(&self) -> String {
        self.path.display().to_string()
    }

    fn corrupt(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.display(),
            reason: reason.into(),
        }
    }
}

impl CheckpointStore for FileCheckpointStore {
    fn load(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(self.corrupt("not UTF-8"));
            }
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: self.display(),
                    source,
                });
            }
        };
        let (header, body) = text
            .split_once('\n')
            .ok_or_else(|| self.corrupt("no header line"))?;
        let crc_hex = header
            .strip_prefix(MAGIC)
            .ok_or_else(|| self.corrupt("unknown header"))?;
        let expected =
            u32::from_str_radix(crc_hex, 16).map_err(|_| self.corrupt("unreadable checksum"))?;
        let actual = crc32fast::hash(body.as_bytes());
        if expected != actual {
            return Err(self.corrupt(format!(
                "checksum mismatch: header says {expected:08x}, body hashes to {actual:08x}"
            )));
        }
        let checkpoint: Checkpoint =
            serde_json::from_str(body).map_err(|e| self.corrupt(e.to_string()))?;
        if checkpoint.pipeline != self.pipeline {
            return Err(CheckpointError::WrongPipeline {
                path: self.display(),
                found: checkpoint.pipeline,
                expected: self.pipeline.clone(),
            });
        }
        Ok(Some(checkpoint))
    }

    fn save(&mut self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let write_err = |source| CheckpointError::Write {
            path: self.display(),
            source,
        };
        let body = serde_json::to_string_pretty(checkpoint)
            .map_err(|e| write_err(std::io::Error::other(e)))?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(write_err)?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut f = fs::File::create(&tmp).map_err(write_err)?;
            write!(f, "{MAGIC}{:08x}\n{body}", crc32fast::hash(body.as_bytes()))
                .map_err(write_err)?;
            f.sync_all().map_err(write_err)?;
        }
        fs::rename(&tmp, &self.path).map_err(write_err)?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Position;
    use crate::runtime::SourceProgress;

    fn sample() -> Checkpoint {
        let mut progress = SourceProgress {
            position: Some(Position::tidb(7, 0)),
            ..Default::default()
        };
        progress.completed.insert("a.dat".into());
        Checkpoint {
            pipeline: "p".into(),
            updated_at: chrono::Utc::now(),
            sources: [("s".to_string(), progress)].into(),
        }
    }

    #[test]
    fn round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = FileCheckpointStore::new(dir.path().join("cp"), "p");
        assert_eq!(store.load().unwrap(), None);
        let cp = sample();
        store.save(&cp).unwrap();
        store.save(&cp).unwrap();
        assert_eq!(store.load().unwrap(), Some(cp));
    }

    #[test]
    fn corruption_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        let mut store = FileCheckpointStore::new(&path, "p");
        store.save(&sample()).unwrap();
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"commit_ts\": 7", "\"commit_ts\": 8");
        fs::write(&path, text).unwrap();
        let err = store.load().unwrap_err();
        assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn another_pipelines_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp");
        FileCheckpointStore::new(&path, "p")
            .save(&sample())
            .unwrap();
        let err = FileCheckpointStore::new(&path, "q").load().unwrap_err();
        assert!(matches!(err, CheckpointError::WrongPipeline { .. }));
    }
}
