//! From committed LogMiner rows to change events: table schemas (from the dictionary when
//! known, inferred from the statements otherwise), typed row images, DDL as schema versions.

use super::contents::{ContentRow, OpCode};
use super::sql_redo::{DmlKind, Literal, parse_redo};
use super::values::{OracleType, inferred_type, to_value};
use crate::event::{
    ChangeEvent, Column, Operation, Position, TableId, TableSchema, Transaction, Value,
};
use std::collections::HashMap;
use std::sync::Arc;

/// A table as the dictionary describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub table: TableId,
    /// Name, type, nullable; in column order.
    pub columns: Vec<(String, OracleType, bool)>,
    pub primary_key: Vec<String>,
}

struct Entry {
    schema: Arc<TableSchema>,
    /// The dictionary type per column; `None` where inferred from a literal.
    types: Vec<Option<OracleType>>,
}

/// A row that could not become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{locator}: column {column}{at}: {message}")]
pub struct RowError {
    pub locator: String,
    pub column: String,
    /// ` at byte N` within the column, when known.
    pub at: String,
    pub message: String,
}

/// Builds events, keeping one schema (and version) per table.
pub struct EventBuilder {
    source: Arc<str>,
    tables: HashMap<TableId, Entry>,
}

impl EventBuilder {
    pub fn new(source: impl Into<Arc<str>>) -> Self {
        Self {
            source: source.into(),
            tables: HashMap::new(),
        }
    }

    pub fn schema(&self, table: &TableId) -> Option<&Arc<TableSchema>> {
        self.tables.get(table).map(|e| &e.schema)
    }

    pub fn schemas(&self) -> impl Iterator<Item = &Arc<TableSchema>> {
        self.tables.values().map(|e| &e.schema)
    }

    /// Sets a table's definition from the dictionary. `bump` starts a new schema version
    /// (after DDL); otherwise the current version is kept (first load, or a refresh).
    pub fn define(&mut self, def: TableDef, bump: bool) -> Arc<TableSchema> {
        let version = match self.tables.get(&def.table) {
            Some(e) if bump => e.schema.version + 1,
            Some(e) => e.schema.version,
            None => 1,
        };
        let columns: Vec<Column> = def
            .columns
            .iter()
            .map(|(name, ty, nullable)| Column {
                name: name.clone(),
                column_type: ty.column_type(),
                nullable: *nullable,
            })
            .collect();
        let primary_key = def
            .primary_key
            .iter()
            .filter_map(|k| columns.iter().position(|c| c.name == *k))
            .collect();
        let schema = Arc::new(TableSchema {
            table: def.table.clone(),
            version,
            columns,
            primary_key,
        });
        self.tables.insert(
            def.table,
            Entry {
                schema: schema.clone(),
                types: def.columns.into_iter().map(|(_, t, _)| Some(t)).collect(),
            },
        );
        schema
    }

    /// The schema for `table`, extended with any columns in `names` it lacks (typed from the
    /// literal); extending starts a new version.
    fn entry_for(&mut self, table: &TableId, cols: &[(&str, Literal<'_>)]) -> &Entry {
        let entry = self.tables.entry(table.clone()).or_insert_with(|| Entry {
            schema: Arc::new(TableSchema {
                table: table.clone(),
                version: 1,
                columns: Vec::new(),
                primary_key: Vec::new(),
            }),
            types: Vec::new(),
        });
        let missing: Vec<&(&str, Literal<'_>)> = cols
            .iter()
            .filter(|(n, _)| entry.schema.column_index(n).is_none())
            .collect();
        if !missing.is_empty() {
            let mut schema = (*entry.schema).clone();
            if !schema.columns.is_empty() {
                schema.version += 1;
            }
            for (name, lit) in missing {
                schema.columns.push(Column {
                    name: (*name).to_string(),
                    column_type: inferred_type(lit),
                    nullable: true,
                });
                entry.types.push(None);
            }
            entry.schema = Arc::new(schema);
        }
        entry
    }

    /// A DML row of a committed transaction as an event.
    pub fn dml(
        &mut self,
        row: &ContentRow,
        position: Position,
        txn: &Transaction,
    ) -> Result<ChangeEvent, RowError> {
        let err = |column: &str, at: Option<usize>, message: String| RowError {
            locator: row.locator(),
            column: column.to_string(),
            at: at.map(|b| format!(" at byte {b}")).unwrap_or_default(),
            message,
        };
        let st = parse_redo(&row.sql_redo).map_err(|e| {
            err(
                "SQL_REDO",
                Some(e.offset),
                format!("expected {}, found {}", e.expected, e.found),
            )
        })?;
        let table = TableId::new(st.schema, st.table);
        let after = st.after_image();
        let op = match st.kind {
            DmlKind::Insert => Operation::Insert,
            DmlKind::Update => Operation::Update,
            DmlKind::Delete => Operation::Delete,
        };
        if row.op.is_dml() && row.op != expected_code(st.kind) {
            return Err(err(
                "OPERATION_CODE",
                None,
                format!(
                    "{} does not match the {} statement in SQL_REDO",
                    row.op.code(),
                    st.kind
                ),
            ));
        }
        let mut all: Vec<(&str, Literal<'_>)> = st.before.clone();
        all.extend(after.iter().flatten().copied());
        let source = self.source.clone();
        let entry = self.entry_for(&table, &all);
        let image = |cols: &[(&str, Literal<'_>)]| -> Result<Vec<Value>, RowError> {
            let mut out = vec![Value::Null; entry.schema.columns.len()];
            for (name, lit) in cols {
                // entry_for added every column named in the statement.
                let Some(i) = entry.schema.column_index(name) else {
                    continue;
                };
                let ty = entry.types.get(i).and_then(Option::as_ref);
                out[i] = to_value(lit, ty)
                    .map_err(|e| err(&format!("SQL_REDO ({name})"), None, e.to_string()))?;
            }
            Ok(out)
        };
        let before = match st.kind {
            DmlKind::Insert => None,
            _ => Some(image(&st.before)?),
        };
        let after = after.map(|a| image(&a)).transpose()?;
        Ok(ChangeEvent {
            source,
            position,
            transaction: Some(txn.clone()),
            schema: entry.schema.clone(),
            op,
            before,
            after,
            ddl: None,
        })
    }

    /// A DDL row as a schema-change event with a new schema version. `def` is the table's
    /// dictionary definition after the DDL, when the source could read it.
    pub fn ddl(
        &mut self,
        row: &ContentRow,
        def: Option<TableDef>,
        position: Position,
        txn: &Transaction,
    ) -> ChangeEvent {
        let table = TableId::new(row.seg_owner.clone(), row.table_name.clone());
        let schema = match def {
            Some(def) => self.define(def, true),
            None => {
                let entry = self.tables.entry(table.clone()).or_insert_with(|| Entry {
                    schema: Arc::new(TableSchema {
                        table: table.clone(),
                        version: 0,
                        columns: Vec::new(),
                        primary_key: Vec::new(),
                    }),
                    types: Vec::new(),
                });
                let mut schema = (*entry.schema).clone();
                schema.version += 1;
                entry.schema = Arc::new(schema);
                entry.schema.clone()
            }
        };
        ChangeEvent {
            source: self.source.clone(),
            position,
            transaction: Some(txn.clone()),
            schema,
            op: Operation::Ddl,
            before: None,
            after: None,
            ddl: Some(row.sql_redo.trim().to_string()),
        }
    }
}

fn expected_code(kind: DmlKind) -> OpCode {
    match kind {
        DmlKind::Insert => OpCode::Insert,
        DmlKind::Update => OpCode::Update,
        DmlKind::Delete => OpCode::Delete,
    }
}
