//! Full snapshots: the table as of a point in its change stream, one row per key.
//!
//! A CDC pipeline never re-reads its source, so "full" is built from what the batch path has
//! already committed: the previous full snapshot of the table, then every micro-batch after
//! it, in commit order; inserts, updates and reads set a key's row, deletes remove it. The
//! result is written as a snapshot of kind `full`: one `read` event per live key (with the
//! position, transaction and schema version of the change that set it), ordered by schema
//! version and key, and `through` naming the last micro-batch included. Micro-batches stay:
//! a full snapshot is a compaction, not a replacement.
//!
//! The merge holds the table's live rows in memory.

use super::snapshot::{SnapshotError, SnapshotKind, SnapshotManifest, SnapshotWriter};
use crate::event::{ChangeEvent, Operation, TableId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The identity of a row: its key values (the whole row where the table has no key).
fn row_key(e: &ChangeEvent) -> Option<String> {
    let row = e.row()?;
    let key: Vec<_> = if e.schema.primary_key.is_empty() {
        row.iter().collect()
    } else {
        e.key()
    };
    serde_json::to_string(&key).ok()
}

/// Applies one committed event to the merged state.
fn merge(state: &mut BTreeMap<String, ChangeEvent>, e: ChangeEvent) {
    let Some(key) = row_key(&e) else {
        return;
    };
    match e.op {
        Operation::Delete => {
            state.remove(&key);
        }
        Operation::Ddl => {}
        Operation::Insert | Operation::Update | Operation::Read => {
            if e.after.is_none() {
                return;
            }
            state.insert(
                key,
                ChangeEvent {
                    op: Operation::Read,
                    before: None,
                    ddl: None,
                    ..e
                },
            );
        }
    }
}

/// What to merge for `table`: the latest full snapshot (if any) and the micro-batches after it.
fn inputs(manifests: &[SnapshotManifest]) -> (Option<&SnapshotManifest>, Vec<&SnapshotManifest>) {
    let base = manifests
        .iter()
        .filter(|m| m.kind == SnapshotKind::Full)
        .max_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
    let after = base.and_then(|b| b.through.as_deref()).unwrap_or("");
    let micro = manifests
        .iter()
        .filter(|m| m.kind == SnapshotKind::Micro && m.snapshot_id.as_str() > after)
        .collect();
    (base, micro)
}

impl SnapshotWriter {
    /// Takes a full snapshot of `table` if micro-batches were committed since its last one.
    /// Returns the new manifest, or `None` when there was nothing new.
    pub async fn full_snapshot(
        &self,
        table: &TableId,
    ) -> Result<Option<SnapshotManifest>, SnapshotError> {
        let manifests = self.table_manifests(table).await?;
        let (base, micro) = inputs(&manifests);
        let Some(last) = micro.last() else {
            return Ok(None);
        };
        let mut state: BTreeMap<String, ChangeEvent> = BTreeMap::new();
        let mut compacted = Vec::with_capacity(micro.len() + 1);
        if let Some(base) = base {
            for e in self.read(base).await? {
                merge(&mut state, e);
            }
            compacted.push(base.snapshot_id.clone());
        }
        for m in &micro {
            for e in self.read(m).await? {
                merge(&mut state, e);
            }
            compacted.push(m.snapshot_id.clone());
        }
        let mut rows: Vec<Arc<ChangeEvent>> = state.into_values().map(Arc::new).collect();
        // Stable: keeps key order within a schema version, so files split only per version.
        rows.sort_by_key(|e| e.schema.version);
        let through = last.snapshot_id.clone();
        let manifest = self.write_full(table, &rows, through, compacted).await?;
        Ok(Some(manifest))
    }

    /// Full snapshots of every table that has micro-batches under the prefix.
    pub async fn full_snapshots(&self) -> Result<Vec<SnapshotManifest>, SnapshotError> {
        let tables: BTreeSet<String> = self
            .manifests()
            .await?
            .into_iter()
            .map(|m| m.table)
            .collect();
        let mut out = Vec::new();
        for table in tables {
            if let Some(m) = self.full_snapshot(&TableId::parse(&table)).await? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The table's rows as of its latest snapshot: the latest full snapshot merged with the
    /// micro-batches after it (what a reader of the store sees), ordered by key.
    pub async fn current_rows(&self, table: &TableId) -> Result<Vec<ChangeEvent>, SnapshotError> {
        let manifests = self.table_manifests(table).await?;
        let (base, micro) = inputs(&manifests);
        let mut state = BTreeMap::new();
        for m in base.into_iter().chain(micro) {
            for e in self.read(m).await? {
                merge(&mut state, e);
            }
        }
        Ok(state.into_values().collect())
    }
}
