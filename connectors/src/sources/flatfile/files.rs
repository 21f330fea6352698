//! Where a flat-file source finds its files: a local file or directory, or the objects under an
//! object-store prefix; and a `Read` over one object through bounded ranged GETs, so memory
//! stays flat whatever the object size.

use crate::paths::store::Store;
use bytes::Bytes;
use globset::GlobMatcher;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Handle;

/// Bytes fetched by one ranged GET.
pub(crate) const OBJECT_CHUNK: u64 = 8 << 20;
/// A dead letter for lost framing keeps at most this much of the rest of the file.
pub(crate) const MAX_RAW_REST: u64 = 1 << 20;

/// The files of a source.
pub(crate) enum Location {
    /// A local file, or a directory of files.
    Local(PathBuf),
    /// The objects directly under a prefix.
    Store(Store),
}

/// One file to read. Its id (the position's `file`) is the file name for local files and the
/// object key for objects.
pub(crate) enum Input {
    Local(PathBuf),
    Object { path: ObjectPath, size: u64 },
}

impl Input {
    pub(crate) fn describe(&self) -> String {
        match self {
            Input::Local(p) => p.display().to_string(),
            Input::Object { path, .. } => path.to_string(),
        }
    }
}

impl Location {
    /// The files whose names match `pattern` (names starting with `.` are skipped), as
    /// (id, input), in id order.
    pub(crate) fn list(
        &self,
        pattern: &GlobMatcher,
        handle: &Handle,
    ) -> io::Result<Vec<(String, Input)>> {
        let mut files = Vec::new();
        match self {
            Location::Local(root) => {
                if std::fs::metadata(root)?.is_file() {
                    let id = root
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    files.push((id, Input::Local(root.clone())));
                } else {
                    for entry in std::fs::read_dir(root)? {
                        let entry = entry?;
                        let id = entry.file_name().to_string_lossy().into_owned();
                        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
                        if is_file && !id.starts_with('.') && pattern.is_match(&id) {
                            files.push((id, Input::Local(entry.path())));
                        }
                    }
                }
            }
            Location::Store(store) => {
                let prefix = (!store.prefix.as_ref().is_empty()).then_some(&store.prefix);
                let listing = handle
                    .block_on(store.store.list_with_delimiter(prefix))
                    .map_err(io::Error::other)?;
                for object in listing.objects {
                    let name = object.location.filename().unwrap_or_default();
                    if !name.starts_with('.') && pattern.is_match(name) {
                        files.push((
                            object.location.to_string(),
                            Input::Object {
                                path: object.location,
                                size: object.size,
                            },
                        ));
                    }
                }
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(files)
    }

    /// Opens `input` positioned at byte `offset`.
    pub(crate) fn open(
        &self,
        input: &Input,
        offset: u64,
        handle: &Handle,
    ) -> io::Result<Box<dyn Read + Send>> {
        match (self, input) {
            (_, Input::Local(path)) => {
                let mut file = File::open(path)?;
                file.seek(SeekFrom::Start(offset))?;
                Ok(Box::new(file))
            }
            (Location::Store(store), Input::Object { path, size }) => Ok(Box::new(ObjectReader {
                store: store.store.clone(),
                path: path.clone(),
                pos: offset,
                size: *size,
                chunk_size: OBJECT_CHUNK,
                chunk: Bytes::new(),
                handle: handle.clone(),
            })),
            (Location::Local(_), Input::Object { .. }) => Err(io::Error::other(
                "an object listed for a local source (a bug)",
            )),
        }
    }

    /// Up to [`MAX_RAW_REST`] bytes of `input` from `offset`, and the bytes left in it.
    pub(crate) fn rest(
        &self,
        input: &Input,
        offset: u64,
        handle: &Handle,
    ) -> io::Result<(Vec<u8>, u64)> {
        let size = match input {
            Input::Local(path) => std::fs::metadata(path)?.len(),
            Input::Object { size, .. } => *size,
        };
        let left = size.saturating_sub(offset);
        let mut raw = Vec::new();
        self.open(input, offset, handle)?
            .take(left.min(MAX_RAW_REST))
            .read_to_end(&mut raw)?;
        Ok((raw, left))
    }
}

/// Reads one object sequentially, [`OBJECT_CHUNK`] bytes per ranged GET.
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    /// The next byte to fetch.
    pos: u64,
    /// The size the listing gave (objects do not change once written).
    size: u64,
    /// Bytes per GET.
    chunk_size: u64,
    chunk: Bytes,
    handle: Handle,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.chunk.is_empty() {
            if self.pos >= self.size {
                return Ok(0);
            }
            let end = (self.pos + self.chunk_size).min(self.size);
            self.chunk = self
                .handle
                .block_on(self.store.get_range(&self.path, self.pos..end))
                .map_err(io::Error::other)?;
            if self.chunk.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ends before its listed size {}", self.path, self.size),
                ));
            }
            self.pos += self.chunk.len() as u64;
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    /// An object read from several offsets in 7-byte GETs comes back whole; a listed size
    /// larger than the object is an error, not a hang.
    #[test]
    fn object_reader_reads_ranges_from_any_offset() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = ObjectPath::from("in/a.dat");
        let data: Vec<u8> = (0..100u8).collect();
        rt.block_on(store.put(&path, data.clone().into()))
            .expect("put");
        let reader = |pos: u64, size: u64| ObjectReader {
            store: store.clone(),
            path: path.clone(),
            pos,
            size,
            chunk_size: 7,
            chunk: Bytes::new(),
            handle: rt.handle().clone(),
        };
        for start in [0u64, 1, 6, 7, 8, 50, 99, 100] {
            let mut out = Vec::new();
            reader(start, 100).read_to_end(&mut out).expect("read");
            assert_eq!(out, data[start as usize..], "from {start}");
        }
        let mut out = Vec::new();
        assert!(reader(95, 120).read_to_end(&mut out).is_err());
    }

    #[test]
    fn lists_the_objects_directly_under_the_prefix_in_key_order() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        for key in [
            "in/b.dat",
            "in/a.dat",
            "in/.hidden.dat",
            "in/x.txt",
            "in/sub/c.dat",
            "out/d.dat",
        ] {
            rt.block_on(store.put(&ObjectPath::from(key), vec![1u8].into()))
                .expect("put");
        }
        let location = Location::Store(Store {
            store,
            prefix: ObjectPath::from("in/"),
            url: "memory:///in/".into(),
        });
        let pattern = globset::Glob::new("*.dat").expect("glob").compile_matcher();
        let ids: Vec<String> = location
            .list(&pattern, rt.handle())
            .expect("list")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["in/a.dat", "in/b.dat"]);
    }
}
