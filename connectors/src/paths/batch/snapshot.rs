//! Snapshots: data files first, the manifest last. A snapshot exists only once its manifest
//! does (written with a conditional put, so a snapshot is never committed twice); a writer that
//! crashes leaves data files without a manifest, and `remove_orphans` deletes them.

use crate::event::{ChangeEvent, Position, TableId, to_debezium_json};
use crate::paths::store::Store;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Data files are cut at about this size.
const FILE_BYTES: usize = 64 << 20;
const MANIFESTS: &str = "_manifests";

/// One data file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Path inside the store.
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
    pub created_at: DateTime<Utc>,
    /// `debezium-json-lines`: one Debezium envelope per line.
    pub format: String,
    pub rows: u64,
    pub files: Vec<SnapshotFile>,
    pub first_position: Position,
    pub last_position: Position,
    pub schema_version: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("writing snapshot {snapshot} of {table} to {path}: {source}")]
    Put {
        snapshot: String,
        table: String,
        path: String,
        source: object_store::Error,
    },
    #[error("listing {prefix}: {source}")]
    List {
        prefix: String,
        source: object_store::Error,
    },
    #[error("reading manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
}

pub struct SnapshotWriter {
    store: Store,
}

impl SnapshotWriter {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    fn table_dir(&self, table: &TableId) -> ObjectPath {
        self.store.prefix.clone().join(table.to_string())
    }

    /// Writes `events` (all of `table`, non-empty) as one snapshot and commits it.
    pub async fn commit(
        &self,
        table: &TableId,
        events: &[Arc<ChangeEvent>],
    ) -> Result<SnapshotManifest, SnapshotError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else {
            unreachable!("commit is only called with events");
        };
        let now = Utc::now();
        let snapshot_id = format!(
            "{}-{}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            uuid::Uuid::new_v4().simple()
        );
        let dir = self
            .table_dir(table)
            .join(format!("dt={}", now.format("%Y-%m-%d")));
        let now_ms = now.timestamp_millis();
        let mut files = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut rows = 0u64;
        for (i, event) in events.iter().enumerate() {
            // Serializing a serde_json::Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut buf, &to_debezium_json(event, now_ms));
            buf.push(b'\n');
            rows += 1;
            if buf.len() >= FILE_BYTES || i + 1 == events.len() {
                let path = dir
                    .clone()
                    .join(format!("{snapshot_id}-part-{:04}.jsonl", files.len()));
                let data = Bytes::from(std::mem::take(&mut buf));
                files.push(SnapshotFile {
                    path: path.to_string(),
                    rows,
                    bytes: data.len() as u64,
                    xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&data)),
                });
                self.put(&snapshot_id, table, &path, data, PutMode::Overwrite)
                    .await?;
                rows = 0;
            }
        }
        let manifest = SnapshotManifest {
            snapshot_id: snapshot_id.clone(),
            table: table.to_string(),
            created_at: now,
            format: "debezium-json-lines".into(),
            rows: files.iter().map(|f| f.rows).sum(),
            files,
            first_position: first.position.clone(),
            last_position: last.position.clone(),
            schema_version: last.schema.version,
        };
        let path = self
            .table_dir(table)
            .join(MANIFESTS)
            .join(format!("{snapshot_id}.json"));
        let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        self.put(
            &snapshot_id,
            table,
            &path,
            Bytes::from(body),
            PutMode::Create,
        )
        .await?;
        Ok(manifest)
    }

    async fn put(
        &self,
        snapshot: &str,
        table: &TableId,
        path: &ObjectPath,
        data: Bytes,
        mode: PutMode,
    ) -> Result<(), SnapshotError> {
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        self.store
            .store
            .put_opts(path, PutPayload::from_bytes(data), opts)
            .await
            .map_err(|source| SnapshotError::Put {
                snapshot: snapshot.into(),
                table: table.to_string(),
                path: path.to_string(),
                source,
            })?;
        Ok(())
    }

    /// Every object under the pipeline's prefix.
    async fn list(&self) -> Result<Vec<object_store::ObjectMeta>, SnapshotError> {
        self.store
            .store
            .list(Some(&self.store.prefix))
            .try_collect()
            .await
            .map_err(|source| SnapshotError::List {
                prefix: self.store.prefix.to_string(),
                source,
            })
    }

    /// Every committed manifest under the pipeline's prefix.
    pub async fn manifests(&self) -> Result<Vec<SnapshotManifest>, SnapshotError> {
        let objects = self.list().await?;
        let mut out = Vec::new();
        for meta in objects {
            if !is_manifest(&meta.location) {
                continue;
            }
            let path = meta.location.to_string();
            let bytes = self
                .store
                .store
                .get(&meta.location)
                .await
                .map_err(|e| SnapshotError::Manifest {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
                .bytes()
                .await
                .map_err(|e| SnapshotError::Manifest {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            out.push(
                serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Manifest {
                    path,
                    reason: e.to_string(),
                })?,
            );
        }
        out.sort_by(|a: &SnapshotManifest, b| a.snapshot_id.cmp(&b.snapshot_id));
        Ok(out)
    }

    /// Deletes data files that no manifest lists: what a crashed writer left behind.
    /// Returns how many were removed.
    pub async fn remove_orphans(&self) -> Result<usize, SnapshotError> {
        let listed: BTreeSet<String> = self
            .manifests()
            .await?
            .into_iter()
            .flat_map(|m| m.files.into_iter().map(|f| f.path))
            .collect();
        let objects = self.list().await?;
        let mut removed = 0;
        for meta in objects {
            let path = meta.location.to_string();
            if is_manifest(&meta.location) || !path.ends_with(".jsonl") || listed.contains(&path) {
                continue;
            }
            self.store
                .store
                .delete(&meta.location)
                .await
                .map_err(|source| SnapshotError::List {
                    prefix: path.clone(),
                    source,
                })?;
            tracing::info!(file = %path, "removed a data file no snapshot manifest lists");
            removed += 1;
        }
        Ok(removed)
    }
}

fn is_manifest(path: &ObjectPath) -> bool {
    let mut parts: Vec<_> = path.parts().collect();
    let file = parts.pop();
    parts.last().is_some_and(|p| p.as_ref() == MANIFESTS)
        && file.is_some_and(|f| f.as_ref().ends_with(".json"))
}
