//! What a check found, as the JSON `syncmesh check` prints.

use super::HashMode;
use super::canonical::RowHash;
use super::sql::Engine;
use serde::Serialize;

/// One side's totals.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SideReport {
    /// The database URL, password removed.
    pub url: String,
    pub table: String,
    pub engine: Engine,
    /// Rows counted over all chunks.
    pub rows: u64,
    /// `sql` when chunk digests were computed in the database, `rust` when rows were streamed
    /// and hashed by syncmesh.
    pub hashed_in: &'static str,
}

/// One differing row: its key, what differs and the statement that fixes the sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowDifference {
    /// The key columns and values (decimals as exact strings, bytes as base64, timestamps ISO).
    pub key: serde_json::Map<String, serde_json::Value>,
    /// The key as text, `7` or `7|EUR`.
    pub key_text: String,
    /// The differing columns (for `different` rows only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// `INSERT`, `DELETE` or `UPDATE` in the sink's dialect.
    pub fix: String,
}

/// The result of checking one table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// The source table, as named on the command line or in the manifest.
    pub table: String,
    pub source: SideReport,
    pub sink: SideReport,
    pub chunk_size: u64,
    /// Key-range chunks compared.
    pub chunks: u64,
    /// Chunks whose count or hash differed (each was bisected down to rows).
    pub mismatched_chunks: u64,
    /// Rows the source has and the sink lacks (fix: `INSERT`).
    pub missing: Vec<RowDifference>,
    /// Rows the sink has and the source lacks (fix: `DELETE`).
    pub extra: Vec<RowDifference>,
    /// Rows whose values differ (fix: `UPDATE` of the differing columns).
    pub different: Vec<RowDifference>,
    /// `missing + extra + different`.
    pub differing_rows: u64,
    /// `differingRows / max(source rows, sink rows)`; 0 for two empty tables.
    pub diff_ratio: f64,
    /// True when more differences existed than were located and listed (see `maxDifferences`).
    pub truncated: bool,
    pub equal: bool,
    pub hash_mode: HashMode,
    /// The per-row hash both sides used: `crc32c-64` (MariaDB ↔ MariaDB) or `md5-64`.
    pub hash: RowHash,
    pub elapsed_seconds: f64,
}

impl CheckReport {
    /// Every fix statement, missing rows first, then extra, then different.
    pub fn fix_sql(&self) -> Vec<&str> {
        self.missing
            .iter()
            .chain(&self.extra)
            .chain(&self.different)
            .map(|d| d.fix.as_str())
            .collect()
    }
}

/// Where a running check is, for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckProgress {
    pub chunks: u64,
    pub source_rows: u64,
    pub sink_rows: u64,
    pub mismatched_chunks: u64,
    /// True once every chunk is compared and mismatches are being bisected.
    pub locating: bool,
}
