//! [`TableCheck`]: chunk the table by key, compare chunk digests, bisect the chunks that
//! differ down to rows, and name each differing row with its fix.

use super::canonical::{Digest, RowHash, hash_values};
use super::fix::FixTarget;
use super::key::{Key, KeyRange};
use super::report::{CheckProgress, CheckReport, RowDifference, SideReport};
use super::side::{Database, HashMode, NativeTable, SqlSide, TableSide};
use super::sql::{Engine, SideColumn};
use super::{CheckError, CheckOptions};
use crate::event::{ColumnType, Value};
use crate::sinks::table::TableName;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The logical shape both sides are compared under: the source's columns and key, the names
/// each side uses for them, and the types that define the canonical encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSchema {
    /// Column names on the source.
    pub source_names: Vec<String>,
    /// The same columns' names on the sink.
    pub sink_names: Vec<String>,
    pub types: Vec<ColumnType>,
    /// Indexes into the columns, in key order.
    pub key: Vec<usize>,
    pub source_convert: Vec<bool>,
    pub sink_convert: Vec<bool>,
    /// Each column's declared type on the source and on the sink (lowercase).
    pub source_native: Vec<String>,
    pub sink_native: Vec<String>,
    /// Whether each column may be NULL on either side.
    pub nullable: Vec<bool>,
}

/// Matches the sink's columns to the source's (exactly, else ignoring case) and picks each
/// column's logical type: the source's, or the sink's where the source has none (an
/// unconstrained PostgreSQL `NUMERIC` takes the sink's scale). Extra sink columns are ignored.
pub fn resolve_schema(
    source_label: &str,
    source: &NativeTable,
    sink_label: &str,
    sink: &NativeTable,
) -> Result<ResolvedSchema, CheckError> {
    if source.primary_key.is_empty() {
        return Err(CheckError::NoPrimaryKey {
            side: source_label.to_string(),
        });
    }
    let mut missing = Vec::new();
    let mut out = ResolvedSchema {
        source_names: Vec::new(),
        sink_names: Vec::new(),
        types: Vec::new(),
        key: Vec::new(),
        source_convert: Vec::new(),
        sink_convert: Vec::new(),
        source_native: Vec::new(),
        sink_native: Vec::new(),
        nullable: Vec::new(),
    };
    for c in &source.columns {
        let on_sink = sink.columns.iter().find(|s| s.name == c.name).or_else(|| {
            sink.columns
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(&c.name))
        });
        let Some(s) = on_sink else {
            missing.push(c.name.clone());
            continue;
        };
        let unsupported =
            |side: &str, col: &super::side::NativeColumn| CheckError::UnsupportedType {
                side: side.to_string(),
                column: col.name.clone(),
                native: col.native.clone(),
            };
        let ty = match (&c.logical, &s.logical) {
            (
                Some(ColumnType::Decimal {
                    precision,
                    scale: u8::MAX,
                }),
                other,
            ) => match other {
                Some(ColumnType::Decimal { scale, .. }) if *scale != u8::MAX => {
                    ColumnType::Decimal {
                        precision: *precision,
                        scale: *scale,
                    }
                }
                _ => {
                    return Err(CheckError::Invalid(format!(
                        "{source_label}: column {} is a NUMERIC without a scale and the sink's \
                         column {} has none either; the checker compares decimals at a fixed scale",
                        c.name, s.name
                    )));
                }
            },
            (Some(ty), _) => ty.clone(),
            (None, Some(ty)) => ty.clone(),
            (None, None) => return Err(unsupported(source_label, c)),
        };
        out.source_names.push(c.name.clone());
        out.sink_names.push(s.name.clone());
        out.types.push(ty);
        out.source_convert.push(c.convert_to_utf8);
        out.sink_convert.push(s.convert_to_utf8);
        out.source_native.push(c.native.to_ascii_lowercase());
        out.sink_native.push(s.native.to_ascii_lowercase());
        out.nullable.push(c.nullable || s.nullable);
    }
    if !missing.is_empty() {
        return Err(CheckError::MissingColumns {
            side: sink_label.to_string(),
            columns: missing,
        });
    }
    for k in &source.primary_key {
        let i = out
            .source_names
            .iter()
            .position(|n| n == k)
            .ok_or_else(|| CheckError::NoPrimaryKey {
                side: source_label.to_string(),
            })?;
        out.key.push(i);
    }
    Ok(out)
}

/// A prepared check of one table: both sides, the logical schema, the fix target.
pub struct TableCheck {
    name: String,
    source: Arc<dyn TableSide>,
    sink: Arc<dyn TableSide>,
    source_report: SideReport,
    sink_report: SideReport,
    schema: ResolvedSchema,
    fix: FixTarget,
    options: CheckOptions,
    row_hash: RowHash,
}

impl TableCheck {
    /// Describes both tables, resolves the schema and builds the sides.
    pub async fn prepare(
        source: &Database,
        source_table: &TableName,
        sink: &Database,
        sink_table: &TableName,
        options: &CheckOptions,
    ) -> Result<Self, CheckError> {
        options.validate()?;
        let source_label = format!("{} {source_table}", source.redacted_url());
        let sink_label = format!("{} {sink_table}", sink.redacted_url());
        let (src_native, sink_native) =
            futures::try_join!(source.describe(source_table), sink.describe(sink_table))?;
        let schema = resolve_schema(&source_label, &src_native, &sink_label, &sink_native)?;
        let side_columns =
            |names: &[String], convert: &[bool], native: &[String]| -> Vec<SideColumn> {
                (0..names.len())
                    .map(|i| SideColumn {
                        name: names[i].clone(),
                        ty: schema.types[i].clone(),
                        convert_to_utf8: convert[i],
                        native: native[i].clone(),
                        nullable: schema.nullable[i],
                    })
                    .collect()
            };
        // CRC32C when both servers compute it (MariaDB ≥ 10.8), else the cross-engine MD5.
        let row_hash = options.row_hash.unwrap_or(
            if source.crc_support().is_some() && sink.crc_support().is_some() {
                RowHash::Crc32c
            } else {
                RowHash::Md5
            },
        );
        let src_side = SqlSide::new(
            source.clone(),
            source_table.clone(),
            side_columns(
                &schema.source_names,
                &schema.source_convert,
                &schema.source_native,
            ),
            schema.key.clone(),
            options.hash_mode,
        )
        .with_row_hash(row_hash)?;
        let sink_side = SqlSide::new(
            sink.clone(),
            sink_table.clone(),
            side_columns(
                &schema.sink_names,
                &schema.sink_convert,
                &schema.sink_native,
            ),
            schema.key.clone(),
            options.hash_mode,
        )
        .with_row_hash(row_hash)?;
        let side_report = |db: &Database, table: &TableName, side: &SqlSide| SideReport {
            url: db.redacted_url(),
            table: table.to_string(),
            engine: db.engine(),
            rows: 0,
            hashed_in: if side.streams() { "rust" } else { "sql" },
        };
        let source_report = side_report(source, source_table, &src_side);
        let sink_report = side_report(sink, sink_table, &sink_side);
        let fix = FixTarget {
            engine: sink.engine(),
            table: sink_table.clone(),
            columns: schema
                .sink_names
                .iter()
                .cloned()
                .zip(schema.types.iter().cloned())
                .collect(),
            key: schema.key.clone(),
        };
        Ok(Self {
            name: source_table.to_string(),
            source: Arc::new(src_side),
            sink: Arc::new(sink_side),
            source_report,
            sink_report,
            schema,
            fix,
            options: options.clone(),
            row_hash,
        })
    }

    /// A check over sides of any kind (the seam for engines without a sqlx driver); both sides
    /// hash rows with `row_hash`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_sides(
        name: impl Into<String>,
        source: Arc<dyn TableSide>,
        source_report: SideReport,
        sink: Arc<dyn TableSide>,
        sink_report: SideReport,
        schema: ResolvedSchema,
        sink_engine: Engine,
        sink_table: TableName,
        options: CheckOptions,
        row_hash: RowHash,
    ) -> Self {
        let fix = FixTarget {
            engine: sink_engine,
            table: sink_table,
            columns: schema
                .sink_names
                .iter()
                .cloned()
                .zip(schema.types.iter().cloned())
                .collect(),
            key: schema.key.clone(),
        };
        Self {
            name: name.into(),
            source,
            sink,
            source_report,
            sink_report,
            schema,
            fix,
            options,
            row_hash,
        }
    }

    pub fn schema(&self) -> &ResolvedSchema {
        &self.schema
    }

    /// Runs the check. `progress` is called after every chunk and every located range.
    pub async fn run(
        &self,
        progress: &(dyn Fn(CheckProgress) + Send + Sync),
    ) -> Result<CheckReport, CheckError> {
        let started = Instant::now();
        let chunk_size = self.options.chunk_size;
        let parallelism = self.options.parallelism;
        // One task cuts chunks (by arithmetic on a dense integer key, else by walking the
        // source's key index) while up to `parallelism` chunks are digested on both sides as
        // tasks, so the cutting never waits for a digest and both databases stay busy.
        let (mut ranges_tx, ranges_rx) = futures::channel::mpsc::channel::<KeyRange>(parallelism);
        let source = self.source.clone();
        let walk = async move {
            let mut lower: Option<Key> = None;
            // A dense single integer key is cut by arithmetic, which costs no index walk.
            let bounds = source
                .key_span()
                .await?
                .and_then(|span| span.chunk_bounds(chunk_size));
            if let Some(bounds) = bounds {
                for bound in bounds.into_iter().map(Some).chain([None]) {
                    let upper = bound.map(|b| Key(vec![Value::Int(b)]));
                    let range = KeyRange {
                        lower: std::mem::replace(&mut lower, upper.clone()),
                        upper,
                    };
                    if ranges_tx.send(range).await.is_err() {
                        break;
                    }
                }
                return Ok(());
            }
            loop {
                let upper = source.boundary(lower.as_ref(), chunk_size).await?;
                let last = upper.is_none();
                let range = KeyRange {
                    lower: std::mem::replace(&mut lower, upper.clone()),
                    upper,
                };
                // A closed channel means the comparison stopped on an error of its own.
                if ranges_tx.send(range).await.is_err() || last {
                    return Ok::<(), CheckError>(());
                }
            }
        };
        let digests = ranges_rx
            .map(|range| {
                let (source, sink, r) = (self.source.clone(), self.sink.clone(), range.clone());
                let task =
                    tokio::spawn(
                        async move { futures::try_join!(source.digest(&r), sink.digest(&r)) },
                    );
                async move { (range, task.await) }
            })
            .buffered(parallelism);
        let compare = async {
            let mut p = CheckProgress::default();
            let mut mismatched = Vec::new();
            futures::pin_mut!(digests);
            while let Some((range, joined)) = digests.next().await {
                let (s, k) = joined
                    .map_err(|e| CheckError::Invalid(format!("a digest task failed: {e}")))??;
                p.chunks += 1;
                p.source_rows += s.rows;
                p.sink_rows += k.rows;
                if s != k {
                    p.mismatched_chunks += 1;
                    mismatched.push((range, s, k));
                }
                progress(p);
            }
            Ok((p, mismatched))
        };
        let ((), (mut p, mismatched)) = futures::try_join!(walk, compare)?;

        p.locating = true;
        let mut found = Findings::default();
        for (range, s, k) in &mismatched {
            self.locate(range.clone(), *s, *k, &mut found).await?;
            progress(p);
        }

        let (truncated, unlisted) = (found.truncated, found.unlisted);
        let (missing, extra, different) = self.reconcile(found);
        let differing = (missing.len() + extra.len() + different.len()) as u64 + unlisted;
        let denominator = p.source_rows.max(p.sink_rows);
        let mut source_report = self.source_report.clone();
        source_report.rows = p.source_rows;
        let mut sink_report = self.sink_report.clone();
        sink_report.rows = p.sink_rows;
        Ok(CheckReport {
            table: self.name.clone(),
            source: source_report,
            sink: sink_report,
            chunk_size,
            chunks: p.chunks,
            mismatched_chunks: p.mismatched_chunks,
            differing_rows: differing,
            diff_ratio: if denominator == 0 {
                0.0
            } else {
                differing as f64 / denominator as f64
            },
            truncated,
            equal: differing == 0,
            missing,
            extra,
            different,
            hash_mode: self.options.hash_mode,
            hash: self.row_hash,
            elapsed_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Narrows a differing range: split it at the middle row of the side with more rows,
    /// digest the left half on both sides and derive the right half by subtraction; recurse
    /// into the halves that differ; compare rows once a range is small.
    fn locate<'a>(
        &'a self,
        range: KeyRange,
        src: Digest,
        snk: Digest,
        found: &'a mut Findings,
    ) -> futures::future::BoxFuture<'a, Result<(), CheckError>> {
        Box::pin(async move {
            let n = src.rows.max(snk.rows);
            if found.listed() >= self.options.max_differences {
                // Still account for the rows by count, without locating them.
                found.truncated = true;
                found.unlisted += src.rows.abs_diff(snk.rows).max(1);
                return Ok(());
            }
            if n <= self.options.leaf_rows {
                return self.compare_rows(&range, found).await;
            }
            let side = if src.rows >= snk.rows {
                &self.source
            } else {
                &self.sink
            };
            let Some(mid) = side.boundary(range.lower.as_ref(), n / 2).await? else {
                return self.compare_rows(&range, found).await;
            };
            let (left, right) = range.split_at(mid);
            let (ls, lk) = futures::try_join!(self.source.digest(&left), self.sink.digest(&left))?;
            let (rs, rk) = (src.minus(ls), snk.minus(lk));
            if ls != lk {
                self.locate(left, ls, lk, found).await?;
            }
            if rs != rk {
                self.locate(right, rs, rk, found).await?;
            }
            Ok(())
        })
    }

    /// Fetches the rows of a small range on both sides and names every difference. Rows
    /// present on one side only are kept unnamed until the end ([`Self::reconcile`]).
    async fn compare_rows(&self, range: &KeyRange, found: &mut Findings) -> Result<(), CheckError> {
        let (src_rows, sink_rows) =
            futures::try_join!(self.source.rows(range), self.sink.rows(range))?;
        let mut on_sink: HashMap<Vec<Option<String>>, Canonical> = HashMap::new();
        for row in sink_rows {
            let c = self.canonical(&self.sink_report.table, row)?;
            // A sink without a key constraint can hold a key twice: the copy is extra.
            if let Some(duplicate) = on_sink.insert(c.key.clone(), c) {
                found.sink_only.push(duplicate);
            }
        }
        for row in src_rows {
            let c = self.canonical(&self.source_report.table, row)?;
            match on_sink.remove(&c.key) {
                None => found.source_only.push(c),
                Some(sink_row) => {
                    if let Some(d) = self.compare_pair(&c, &sink_row) {
                        found.different.push(d);
                    }
                }
            }
        }
        found.sink_only.extend(on_sink.into_values());
        Ok(())
    }

    fn canonical(&self, label: &str, row: Vec<Value>) -> Result<Canonical, CheckError> {
        let types: Vec<&ColumnType> = self.schema.types.iter().collect();
        let (fields, _) = hash_values(&types, &row)
            .map_err(|reason| CheckError::Invalid(format!("{label}: {reason}")))?;
        let key = self.schema.key.iter().map(|&i| fields[i].clone()).collect();
        Ok(Canonical { key, fields, row })
    }

    /// The `different` entry for a key both sides hold, `None` when the rows are equal.
    fn compare_pair(&self, src: &Canonical, snk: &Canonical) -> Option<RowDifference> {
        let differing: Vec<usize> = (0..src.fields.len())
            .filter(|&c| src.fields[c] != snk.fields[c])
            .collect();
        if differing.is_empty() {
            return None;
        }
        let names = differing
            .iter()
            .map(|&c| self.schema.source_names[c].clone())
            .collect();
        Some(self.difference(&src.row, names, self.fix.update(&src.row, &differing)))
    }

    /// Pairs rows found on one side only in one range with rows of the same key found in
    /// another range of the other side (which happens when the two databases order keys
    /// differently, e.g. text keys under different collations), then names the rest.
    fn reconcile(
        &self,
        found: Findings,
    ) -> (Vec<RowDifference>, Vec<RowDifference>, Vec<RowDifference>) {
        let mut different = found.different;
        let mut sink_only: HashMap<Vec<Option<String>>, Canonical> = found
            .sink_only
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect();
        let mut missing = Vec::new();
        for src in found.source_only {
            match sink_only.remove(&src.key) {
                Some(snk) => different.extend(self.compare_pair(&src, &snk)),
                None => {
                    missing.push(self.difference(&src.row, Vec::new(), self.fix.insert(&src.row)))
                }
            }
        }
        let mut rest: Vec<Canonical> = sink_only.into_values().collect();
        rest.sort_by(|a, b| a.key.cmp(&b.key));
        let extra = rest
            .iter()
            .map(|c| self.difference(&c.row, Vec::new(), self.fix.delete(&c.row)))
            .collect();
        (missing, extra, different)
    }

    fn difference(&self, row: &[Value], columns: Vec<String>, fix: String) -> RowDifference {
        let mut key = serde_json::Map::new();
        let mut text = Vec::new();
        for &i in &self.schema.key {
            key.insert(self.schema.source_names[i].clone(), row[i].to_json());
            text.push(row[i].key_text());
        }
        RowDifference {
            key,
            key_text: text.join("|"),
            columns,
            fix,
        }
    }
}

/// A row with its canonical fields and key.
struct Canonical {
    key: Vec<Option<String>>,
    fields: Vec<Option<String>>,
    row: Vec<Value>,
}

#[derive(Default)]
struct Findings {
    source_only: Vec<Canonical>,
    sink_only: Vec<Canonical>,
    different: Vec<RowDifference>,
    truncated: bool,
    /// Differing rows counted but not located (past `max_differences`).
    unlisted: u64,
}

impl Findings {
    fn listed(&self) -> usize {
        self.source_only.len() + self.sink_only.len() + self.different.len()
    }
}

/// Connects to both databases and checks one table (the CLI's `--source/--sink/--table`).
pub async fn check_table(
    source_url: &str,
    source_table: &TableName,
    sink_url: &str,
    sink_table: &TableName,
    options: &CheckOptions,
    progress: &(dyn Fn(CheckProgress) + Send + Sync),
) -> Result<CheckReport, CheckError> {
    options.validate()?;
    let connections = u32::try_from(options.parallelism + 1).unwrap_or(8);
    let (source, sink) = futures::try_join!(
        Database::connect(source_url, connections),
        Database::connect(sink_url, connections)
    )?;
    let result = async {
        TableCheck::prepare(&source, source_table, &sink, sink_table, options)
            .await?
            .run(progress)
            .await
    }
    .await;
    source.close().await;
    sink.close().await;
    result
}

/// Parses `schema.table` or `table` into a table name (`schema` is the MySQL database or
/// PostgreSQL schema; without it the connection's default is used).
pub fn parse_table_name(text: &str) -> Result<TableName, CheckError> {
    let t = text.trim();
    let bad = || {
        CheckError::Invalid(format!(
            "`{text}` is not a table name (expected `table` or `schema.table`)"
        ))
    };
    match t.split_once('.') {
        Some((s, n)) if !s.is_empty() && !n.is_empty() && !n.contains('.') => {
            Ok(TableName::with_schema(s, n))
        }
        None if !t.is_empty() => Ok(TableName::new(t)),
        _ => Err(bad()),
    }
}

impl HashMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HashMode::Auto => "auto",
            HashMode::Stream => "stream",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::side::NativeColumn;

    fn col(name: &str, logical: Option<ColumnType>) -> NativeColumn {
        NativeColumn {
            name: name.into(),
            native: "x".into(),
            logical,
            nullable: true,
            convert_to_utf8: false,
        }
    }

    #[test]
    fn schemas_resolve_by_name_and_fill_unknown_scales() {
        let source = NativeTable {
            columns: vec![
                col("ID", Some(ColumnType::Int)),
                col(
                    "amount",
                    Some(ColumnType::Decimal {
                        precision: 0,
                        scale: u8::MAX,
                    }),
                ),
            ],
            primary_key: vec!["ID".into()],
        };
        let sink = NativeTable {
            columns: vec![
                col(
                    "amount",
                    Some(ColumnType::Decimal {
                        precision: 12,
                        scale: 2,
                    }),
                ),
                col("extra", None),
                col("id", Some(ColumnType::Int)),
            ],
            primary_key: vec!["id".into()],
        };
        let r = resolve_schema("src", &source, "snk", &sink).unwrap();
        assert_eq!(r.sink_names, ["id", "amount"]);
        assert_eq!(
            r.types[1],
            ColumnType::Decimal {
                precision: 0,
                scale: 2
            }
        );
        assert_eq!(r.key, [0]);

        let mut no_key = source.clone();
        no_key.primary_key.clear();
        assert!(matches!(
            resolve_schema("src", &no_key, "snk", &sink),
            Err(CheckError::NoPrimaryKey { .. })
        ));
        let mut lacking = sink.clone();
        lacking.columns.pop();
        let err = resolve_schema("src", &source, "snk", &lacking).unwrap_err();
        assert!(err.to_string().contains("ID"), "{err}");
        assert!(err.is_bad_input());
    }

    #[test]
    fn table_names_parse() {
        assert_eq!(
            parse_table_name("a.b").unwrap(),
            TableName::with_schema("a", "b")
        );
        assert_eq!(parse_table_name("b").unwrap(), TableName::new("b"));
        assert!(parse_table_name("a.b.c").is_err());
        assert!(parse_table_name("").is_err());
    }
}
