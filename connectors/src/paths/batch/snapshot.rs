//! Snapshots: data files first, the manifest last. A snapshot exists only once its manifest
//! does (written with a conditional put, so a snapshot is never committed twice); a writer that
//! crashes leaves data files without a manifest, and `remove_orphans` deletes them.
//!
//! Layout under the store's prefix:
//! `<schema.table>/dt=YYYY-MM-DD/<snapshot id>-part-NNNN.parquet` (or `.jsonl`) and
//! `<schema.table>/_manifests/<snapshot id>.json`. Snapshot ids start with the UTC time of the
//! commit in microseconds and increase within a writer, so their text order is commit order.

use super::columnar::{self, ColumnarError};
use super::retry::{Failed, RetryPolicy, retry};
use crate::event::{ChangeEvent, Position, TableId, write_debezium_json};
use crate::paths::store::Store;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Data files are cut at about this size.
const FILE_BYTES: usize = 64 << 20;
pub(super) const MANIFESTS: &str = "_manifests";
const FORMAT_PARQUET: &str = "parquet";
const FORMAT_JSONL: &str = "debezium-json-lines";
/// Micro-batch manifests per table read at start for the committed positions.
const RECENT_MANIFESTS: usize = 16;

/// How data files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotFormat {
    /// Envelope columns and the row's typed columns, zstd (see `columnar`).
    #[default]
    Parquet,
    /// One Debezium JSON envelope per line.
    Jsonl,
}

impl SnapshotFormat {
    fn name(self) -> &'static str {
        match self {
            SnapshotFormat::Parquet => FORMAT_PARQUET,
            SnapshotFormat::Jsonl => FORMAT_JSONL,
        }
    }

    fn extension(self) -> &'static str {
        match self {
            SnapshotFormat::Parquet => "parquet",
            SnapshotFormat::Jsonl => "jsonl",
        }
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// The events of one micro-batch, in source order.
    #[default]
    Micro,
    /// The latest row per key of the table (a `read` event each), as of `through`.
    Full,
}

/// One data file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// The object's key in the store (the prefix included).
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// xxh3-64 of the file's bytes, hex.
    pub xxh3: String,
}

/// The manifest: the commit record of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    pub snapshot_id: String,
    pub table: String,
    #[serde(default)]
    pub kind: SnapshotKind,
    pub created_at: DateTime<Utc>,
    /// `parquet`, or `debezium-json-lines` (one Debezium envelope per line).
    pub format: String,
    pub rows: u64,
    /// Sum of the files' bytes.
    #[serde(default)]
    pub bytes: u64,
    pub files: Vec<SnapshotFile>,
    /// Positions of the first and last event (none in a full snapshot of an empty table).
    pub first_position: Option<Position>,
    pub last_position: Option<Position>,
    /// The last position per source: a restarted path skips events at or before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub positions: BTreeMap<String, Position>,
    pub schema_version: u32,
    /// Full snapshots: the last micro-batch they include; later ones are not in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<String>,
    /// Full snapshots: the snapshots they were built from (the previous full one first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compacted: Vec<String>,
}

impl SnapshotManifest {
    pub fn path(&self) -> ObjectPath {
        manifest_path(&TableId::parse(&self.table), &self.snapshot_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "writing snapshot {snapshot} of {table} to {path} (after {attempts} attempts): {source}"
    )]
    Put {
        snapshot: String,
        table: String,
        path: String,
        attempts: u32,
        source: object_store::Error,
    },
    #[error("snapshot {snapshot} of {table}: manifest {path} already exists with other contents")]
    Conflict {
        snapshot: String,
        table: String,
        path: String,
    },
    #[error("listing {prefix} (after {attempts} attempts): {source}")]
    List {
        prefix: String,
        attempts: u32,
        source: object_store::Error,
    },
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("deleting {path} (after {attempts} attempts): {source}")]
    Delete {
        path: String,
        attempts: u32,
        source: object_store::Error,
    },
    #[error("reading manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error(transparent)]
    Columnar(#[from] ColumnarError),
    #[error("snapshot {snapshot}: {file} does not match its manifest ({reason})")]
    Corrupt {
        snapshot: String,
        file: String,
        reason: String,
    },
    #[error("snapshot {snapshot} is `{format}`: only Parquet snapshots are read back")]
    Unreadable { snapshot: String, format: String },
    #[error("encoding task: {0}")]
    Task(String),
}

/// Counts of what the writer retried, for metrics and tests.
#[derive(Debug, Default)]
pub struct RetryCounts {
    pub retries: AtomicU64,
}

/// Writes, lists, reads and cleans up the snapshots under one store prefix.
pub struct SnapshotWriter {
    store: Store,
    format: SnapshotFormat,
    retry: RetryPolicy,
    file_bytes: usize,
    /// Microseconds of the last snapshot id issued, so ids increase.
    last_id_us: AtomicI64,
    retries: Arc<RetryCounts>,
}

fn manifest_path(table: &TableId, snapshot_id: &str) -> ObjectPath {
    ObjectPath::from(table.to_string())
        .join(MANIFESTS)
        .join(format!("{snapshot_id}.json"))
}

impl SnapshotWriter {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            format: SnapshotFormat::default(),
            retry: RetryPolicy::default(),
            file_bytes: FILE_BYTES,
            last_id_us: AtomicI64::new(0),
            retries: Arc::default(),
        }
    }

    pub fn with_format(mut self, format: SnapshotFormat) -> Self {
        self.format = format;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Data files are cut at about this many bytes (default 64 MiB).
    pub fn with_file_bytes(mut self, bytes: usize) -> Self {
        self.file_bytes = bytes.max(1);
        self
    }

    pub fn format(&self) -> SnapshotFormat {
        self.format
    }

    pub fn retries(&self) -> Arc<RetryCounts> {
        self.retries.clone()
    }

    /// The store path of `path` (relative to the prefix).
    fn at(&self, path: &ObjectPath) -> ObjectPath {
        let mut full = self.store.prefix.clone();
        for part in path.parts() {
            full = full.join(part);
        }
        full
    }

    fn next_id(&self, now: DateTime<Utc>, kind: SnapshotKind) -> (String, DateTime<Utc>) {
        let mut us = now.timestamp_micros();
        let prev = self.last_id_us.fetch_max(us, Ordering::SeqCst);
        if prev >= us {
            us = self.last_id_us.fetch_add(1, Ordering::SeqCst) + 1;
        }
        let at = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(now);
        let tag = match kind {
            SnapshotKind::Micro => "",
            SnapshotKind::Full => "full-",
        };
        let id = format!(
            "{}-{tag}{}",
            at.format("%Y%m%dT%H%M%S%6fZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        (id, at)
    }

    /// Writes `events` (all of `table`, non-empty, in order) as one micro-batch snapshot and
    /// commits it.
    pub async fn commit(
        &self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
    ) -> Result<SnapshotManifest, SnapshotError> {
        let mut positions = BTreeMap::new();
        for e in events {
            positions.insert(e.source.to_string(), e.position.clone());
        }
        self.write(
            table,
            SnapshotKind::Micro,
            events,
            positions,
            None,
            Vec::new(),
        )
        .await
    }

    /// Encodes, writes the data files, then the manifest.
    async fn write(
        &self,
        table: &TableId,
        kind: SnapshotKind,
        events: &[Arc<ChangeEvent>],
        positions: BTreeMap<String, Position>,
        through: Option<String>,
        compacted: Vec<String>,
    ) -> Result<SnapshotManifest, SnapshotError> {
        let (snapshot_id, now) = self.next_id(Utc::now(), kind);
        let dir =
            ObjectPath::from(table.to_string()).join(format!("dt={}", now.format("%Y-%m-%d")));
        let encoded = self.encode(events).await?;
        let mut files = Vec::with_capacity(encoded.len());
        for (i, file) in encoded.into_iter().enumerate() {
            let path = self.at(&dir.clone().join(format!(
                "{snapshot_id}-part-{i:04}.{}",
                self.format.extension()
            )));
            files.push(SnapshotFile {
                path: path.to_string(),
                rows: file.rows,
                bytes: file.data.len() as u64,
                xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&file.data)),
            });
            self.put_data(&snapshot_id, table, &path, file.data).await?;
        }
        let schema_version = events.last().map_or(0, |e| e.schema.version);
        let manifest = SnapshotManifest {
            snapshot_id: snapshot_id.clone(),
            table: table.to_string(),
            kind,
            created_at: now,
            format: self.format.name().into(),
            rows: files.iter().map(|f| f.rows).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            files,
            first_position: events.first().map(|e| e.position.clone()),
            last_position: events.last().map(|e| e.position.clone()),
            positions,
            schema_version,
            through,
            compacted,
        };
        self.put_manifest(&manifest).await?;
        Ok(manifest)
    }

    async fn encode(
        &self,
        events: &[Arc<ChangeEvent>],
    ) -> Result<Vec<columnar::EncodedFile>, SnapshotError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        match self.format {
            SnapshotFormat::Parquet => {
                let events = events.to_vec();
                let max = self.file_bytes;
                // Encoding is CPU work: keep it off the async workers.
                tokio::task::spawn_blocking(move || columnar::encode(&events, max))
                    .await
                    .map_err(|e| SnapshotError::Task(e.to_string()))?
                    .map_err(Into::into)
            }
            SnapshotFormat::Jsonl => Ok(jsonl(events, self.file_bytes)),
        }
    }

    async fn put_data(
        &self,
        snapshot: &str,
        table: &TableId,
        path: &ObjectPath,
        data: Bytes,
    ) -> Result<(), SnapshotError> {
        let payload = PutPayload::from_bytes(data);
        // Overwriting a data file of this (uncommitted) snapshot is safe to repeat.
        retry(
            self.retry,
            || self.store.store.put(path, payload.clone()),
            |e, n| self.retried("put", path, e, n),
        )
        .await
        .map_err(|Failed { attempts, source }| SnapshotError::Put {
            snapshot: snapshot.into(),
            table: table.to_string(),
            path: path.to_string(),
            attempts,
            source,
        })?;
        Ok(())
    }

    /// The commit point. A retry after an attempt whose answer was lost finds the manifest
    /// already there: that is a success if it is this one, a conflict otherwise.
    async fn put_manifest(&self, manifest: &SnapshotManifest) -> Result<(), SnapshotError> {
        let path = self.at(&manifest.path());
        let body = Bytes::from(serde_json::to_vec_pretty(manifest).unwrap_or_default());
        let payload = PutPayload::from_bytes(body.clone());
        let opts = || PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let mut attempted = false;
        let result = retry(
            self.retry,
            || {
                let first = !attempted;
                attempted = true;
                let payload = payload.clone();
                let path = &path;
                async move {
                    match self.store.store.put_opts(path, payload, opts()).await {
                        Ok(_) => Ok(true),
                        Err(object_store::Error::AlreadyExists { .. }) if !first => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            },
            |e, n| self.retried("put", &path, e, n),
        )
        .await;
        let put_err = |Failed { attempts, source }| SnapshotError::Put {
            snapshot: manifest.snapshot_id.clone(),
            table: manifest.table.clone(),
            path: path.to_string(),
            attempts,
            source,
        };
        if result.map_err(put_err)? {
            return Ok(());
        }
        let existing = self.get(&path).await?;
        if existing == body {
            Ok(())
        } else {
            Err(SnapshotError::Conflict {
                snapshot: manifest.snapshot_id.clone(),
                table: manifest.table.clone(),
                path: path.to_string(),
            })
        }
    }

    fn retried(&self, op: &str, path: &ObjectPath, e: &object_store::Error, attempt: u32) {
        self.retries.retries.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%path, attempt, error = %e, "object storage {op} failed; retrying");
    }

    async fn get(&self, path: &ObjectPath) -> Result<Bytes, SnapshotError> {
        retry(
            self.retry,
            || async { self.store.store.get(path).await?.bytes().await },
            |e, n| self.retried("get", path, e, n),
        )
        .await
        .map_err(|f| SnapshotError::Read {
            path: path.to_string(),
            reason: format!("after {} attempts: {}", f.attempts, f.source),
        })
    }

    /// Every object under `dir` (relative to the prefix; `None`: the whole prefix).
    async fn list(&self, dir: Option<&ObjectPath>) -> Result<Vec<ObjectMeta>, SnapshotError> {
        let prefix = match dir {
            Some(d) => self.at(d),
            None => self.store.prefix.clone(),
        };
        retry(
            self.retry,
            || self.store.store.list(Some(&prefix)).try_collect::<Vec<_>>(),
            |e, n| self.retried("list", &prefix, e, n),
        )
        .await
        .map_err(|Failed { attempts, source }| SnapshotError::List {
            prefix: prefix.to_string(),
            attempts,
            source,
        })
    }

    async fn read_manifests(
        &self,
        objects: &[ObjectMeta],
    ) -> Result<Vec<SnapshotManifest>, SnapshotError> {
        let mut out = Vec::new();
        for meta in objects.iter().filter(|m| is_manifest(&m.location)) {
            let bytes = self.get(&meta.location).await?;
            out.push(
                serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Manifest {
                    path: meta.location.to_string(),
                    reason: e.to_string(),
                })?,
            );
        }
        out.sort_by(|a: &SnapshotManifest, b| a.snapshot_id.cmp(&b.snapshot_id));
        Ok(out)
    }

    /// Every committed manifest under the prefix, in commit order.
    pub async fn manifests(&self) -> Result<Vec<SnapshotManifest>, SnapshotError> {
        let objects = self.list(None).await?;
        self.read_manifests(&objects).await
    }

    /// The committed manifests of one table, in commit order.
    pub async fn table_manifests(
        &self,
        table: &TableId,
    ) -> Result<Vec<SnapshotManifest>, SnapshotError> {
        let dir = ObjectPath::from(table.to_string()).join(MANIFESTS);
        let objects = self.list(Some(&dir)).await?;
        self.read_manifests(&objects).await
    }

    /// Deletes data files that no manifest lists and that were last written before
    /// `before` (the start of this run): what a crashed writer left behind. Returns how many
    /// were removed. Works from one listing: a data file `<id>-part-NNNN.*` belongs to the
    /// snapshot whose manifest is `_manifests/<id>.json` next to its `dt=` directory.
    pub async fn remove_orphans(&self, before: DateTime<Utc>) -> Result<usize, SnapshotError> {
        let objects = self.list(None).await?;
        let committed: BTreeSet<(String, String)> = objects
            .iter()
            .filter_map(|m| manifest_key(&m.location))
            .collect();
        let mut removed = 0;
        for meta in objects {
            let Some(key) = data_file_key(&meta.location) else {
                continue;
            };
            if committed.contains(&key) || meta.last_modified >= before {
                continue;
            }
            let path = meta.location.to_string();
            let deleted = retry(
                self.retry,
                || self.store.store.delete(&meta.location),
                |e, n| self.retried("delete", &meta.location, e, n),
            )
            .await;
            match deleted {
                // Gone already: another start removed it.
                Ok(())
                | Err(Failed {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => {}
                Err(Failed { attempts, source }) => {
                    return Err(SnapshotError::Delete {
                        path,
                        attempts,
                        source,
                    });
                }
            }
            tracing::info!(file = %path, "removed a data file no snapshot manifest lists");
            removed += 1;
        }
        Ok(removed)
    }

    /// The last committed position per (table, source), from the newest micro-batch
    /// manifests of each table (`RECENT_MANIFESTS`): a restart replays only what was
    /// committed after the last checkpoint, which is in the newest snapshots.
    pub async fn committed_positions(
        &self,
    ) -> Result<HashMap<(TableId, String), Position>, SnapshotError> {
        let objects = self.list(None).await?;
        let mut by_table: BTreeMap<String, Vec<&ObjectMeta>> = BTreeMap::new();
        for meta in &objects {
            if let Some((table, id)) = manifest_key(&meta.location)
                && !id.contains("-full-")
            {
                by_table.entry(table).or_default().push(meta);
            }
        }
        let mut recent: Vec<ObjectMeta> = Vec::new();
        for (_, mut metas) in by_table {
            metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
            let skip = metas.len().saturating_sub(RECENT_MANIFESTS);
            recent.extend(metas.into_iter().skip(skip).cloned());
        }
        let mut out: HashMap<(TableId, String), Position> = HashMap::new();
        for m in self.read_manifests(&recent).await? {
            let table = TableId::parse(&m.table);
            for (source, pos) in m.positions {
                let key = (table.clone(), source);
                let later = out
                    .get(&key)
                    .is_none_or(|have| have.not_after(&pos) == Some(true));
                if later {
                    out.insert(key, pos);
                }
            }
        }
        Ok(out)
    }

    /// Reads a committed snapshot's events back, checking each file's size and hash.
    pub async fn read(
        &self,
        manifest: &SnapshotManifest,
    ) -> Result<Vec<ChangeEvent>, SnapshotError> {
        if manifest.format != FORMAT_PARQUET {
            return Err(SnapshotError::Unreadable {
                snapshot: manifest.snapshot_id.clone(),
                format: manifest.format.clone(),
            });
        }
        let mut out = Vec::with_capacity(manifest.rows as usize);
        for f in &manifest.files {
            let data = self.get(&ObjectPath::from(f.path.as_str())).await?;
            let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&data));
            if data.len() as u64 != f.bytes || hash != f.xxh3 {
                return Err(SnapshotError::Corrupt {
                    snapshot: manifest.snapshot_id.clone(),
                    file: f.path.clone(),
                    reason: format!(
                        "{} bytes, xxh3 {hash}; the manifest says {} bytes, xxh3 {}",
                        data.len(),
                        f.bytes,
                        f.xxh3
                    ),
                });
            }
            let path = f.path.clone();
            let events = tokio::task::spawn_blocking(move || columnar::decode(data, &path))
                .await
                .map_err(|e| SnapshotError::Task(e.to_string()))??;
            if events.len() as u64 != f.rows {
                return Err(SnapshotError::Corrupt {
                    snapshot: manifest.snapshot_id.clone(),
                    file: f.path.clone(),
                    reason: format!("{} rows; the manifest says {}", events.len(), f.rows),
                });
            }
            out.extend(events);
        }
        Ok(out)
    }

    /// Writes a full snapshot (see `full.rs`) of already merged rows.
    pub(super) async fn write_full(
        &self,
        table: &TableId,
        rows: &[Arc<ChangeEvent>],
        through: String,
        compacted: Vec<String>,
    ) -> Result<SnapshotManifest, SnapshotError> {
        let mut positions = BTreeMap::new();
        for e in rows {
            let key = e.source.to_string();
            let later = positions
                .get(&key)
                .is_none_or(|have: &Position| have.not_after(&e.position) == Some(true));
            if later {
                positions.insert(key, e.position.clone());
            }
        }
        self.write(
            table,
            SnapshotKind::Full,
            rows,
            positions,
            Some(through),
            compacted,
        )
        .await
    }
}

/// Debezium JSON lines, cut at about `max` bytes.
fn jsonl(events: &[Arc<ChangeEvent>], max: usize) -> Vec<columnar::EncodedFile> {
    let now_ms = Utc::now().timestamp_millis();
    let mut files = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut rows = 0u64;
    for (i, event) in events.iter().enumerate() {
        write_debezium_json(event, now_ms, &mut buf);
        buf.push(b'\n');
        rows += 1;
        if buf.len() >= max || i + 1 == events.len() {
            files.push(columnar::EncodedFile {
                data: Bytes::from(std::mem::take(&mut buf)),
                rows,
            });
            rows = 0;
        }
    }
    files
}

fn is_manifest(path: &ObjectPath) -> bool {
    let mut parts: Vec<_> = path.parts().collect();
    let file = parts.pop();
    parts.last().is_some_and(|p| p.as_ref() == MANIFESTS)
        && file.is_some_and(|f| f.as_ref().ends_with(".json"))
}

/// `(table directory, snapshot id)` of a manifest `<table dir>/_manifests/<id>.json`.
fn manifest_key(path: &ObjectPath) -> Option<(String, String)> {
    let parts: Vec<_> = path.parts().collect();
    let [dir @ .., manifests, file] = parts.as_slice() else {
        return None;
    };
    let id = file.as_ref().strip_suffix(".json")?;
    (manifests.as_ref() == MANIFESTS).then(|| (join(dir), id.to_string()))
}

/// `(table directory, snapshot id)` of a data file this writer could have written:
/// `<table dir>/dt=.../<id>-part-NNNN.parquet|jsonl`.
fn data_file_key(path: &ObjectPath) -> Option<(String, String)> {
    let parts: Vec<_> = path.parts().collect();
    let [dir @ .., day, file] = parts.as_slice() else {
        return None;
    };
    let name = file.as_ref();
    if !day.as_ref().starts_with("dt=") || !(name.ends_with(".parquet") || name.ends_with(".jsonl"))
    {
        return None;
    }
    let (id, _) = name.rsplit_once("-part-")?;
    Some((join(dir), id.to_string()))
}

fn join(parts: &[object_store::path::PathPart<'_>]) -> String {
    parts
        .iter()
        .map(|p| p.as_ref())
        .collect::<Vec<_>>()
        .join("/")
}
