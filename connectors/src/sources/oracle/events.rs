//! From committed LogMiner rows to change events: table schemas (from the dictionary when
//! known, inferred from the statements otherwise), typed row images, DDL as schema versions.

use super::contents::{ContentRow, OpCode};
use super::sql_redo::{DmlKind, Literal, parse_redo};
use super::values::{OracleType, ValueError, inferred_type, to_value};
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
    /// Column name to index, rebuilt when the schema changes (not per row).
    index: HashMap<String, usize>,
}

impl Entry {
    fn new(schema: TableSchema, types: Vec<Option<OracleType>>) -> Self {
        let index = column_index(&schema);
        Self {
            schema: Arc::new(schema),
            types,
            index,
        }
    }

    fn empty(table: TableId, version: u32) -> Self {
        Self::new(
            TableSchema {
                table,
                version,
                columns: Vec::new(),
                primary_key: Vec::new(),
            },
            Vec::new(),
        )
    }

    /// The column's index: LogMiner names columns in table order, so the slot after the
    /// previous column is tried before the map.
    #[inline]
    fn find(&self, name: &str, hint: usize) -> Option<usize> {
        match self.schema.columns.get(hint) {
            Some(c) if c.name == name => Some(hint),
            _ => self.index.get(name).copied(),
        }
    }
}

fn column_index(schema: &TableSchema) -> HashMap<String, usize> {
    (0..)
        .zip(&schema.columns)
        .map(|(i, c)| (c.name.clone(), i))
        .collect()
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
    tables: Vec<Entry>,
    /// Owner, then table name, to a place in `tables`: a row's names find their table
    /// without allocating.
    by_name: HashMap<String, HashMap<String, usize>>,
}

impl EventBuilder {
    pub fn new(source: impl Into<Arc<str>>) -> Self {
        Self {
            source: source.into(),
            tables: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    /// The source name events carry.
    pub fn source(&self) -> Arc<str> {
        self.source.clone()
    }

    fn slot(&self, schema: &str, table: &str) -> Option<usize> {
        self.by_name.get(schema)?.get(table).copied()
    }

    fn get(&self, table: &TableId) -> Option<&Entry> {
        self.slot(&table.schema, &table.table)
            .map(|i| &self.tables[i])
    }

    /// Sets the entry for `table` (replacing the one it had) and returns its place.
    fn put(&mut self, schema: &str, table: &str, entry: Entry) -> usize {
        match self.slot(schema, table) {
            Some(i) => {
                self.tables[i] = entry;
                i
            }
            None => {
                self.tables.push(entry);
                let i = self.tables.len() - 1;
                self.by_name
                    .entry(schema.to_string())
                    .or_default()
                    .insert(table.to_string(), i);
                i
            }
        }
    }

    fn get_or_insert(
        &mut self,
        schema: &str,
        table: &str,
        new: impl FnOnce() -> Entry,
    ) -> &mut Entry {
        let i = match self.slot(schema, table) {
            Some(i) => i,
            None => self.put(schema, table, new()),
        };
        &mut self.tables[i]
    }

    pub fn schema(&self, table: &TableId) -> Option<&Arc<TableSchema>> {
        self.get(table).map(|e| &e.schema)
    }

    pub fn schemas(&self) -> impl Iterator<Item = &Arc<TableSchema>> {
        self.tables.iter().map(|e| &e.schema)
    }

    /// Sets a table's definition from the dictionary. `bump` starts a new schema version
    /// (after DDL); otherwise the current version is kept (first load, or a refresh).
    pub fn define(&mut self, def: TableDef, bump: bool) -> Arc<TableSchema> {
        let version = match self.get(&def.table) {
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
        let entry = Entry::new(
            TableSchema {
                table: def.table.clone(),
                version,
                columns,
                primary_key,
            },
            def.columns.into_iter().map(|(_, t, _)| Some(t)).collect(),
        );
        let schema = entry.schema.clone();
        self.put(&def.table.schema, &def.table.table, entry);
        schema
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
        let entry = self.get_or_insert(st.schema, st.table, || {
            Entry::empty(TableId::new(st.schema, st.table), 1)
        });
        // Every named column is found first (the ones the schema lacks are added, as one
        // new version), then the literals are converted.
        let mut image = Image { entry, grown: None };
        for cols in [&st.before, &st.values] {
            let mut hint = 0;
            for (name, lit) in cols {
                hint = image.index(name, lit, hint) + 1;
            }
        }
        let schema = image.finish();
        let entry = &*image.entry;
        let fill = |mut out: Vec<Value>, cols: &[(&str, Literal<'_>)]| {
            out.resize(schema.columns.len(), Value::Null);
            let mut hint = 0;
            for (name, lit) in cols {
                // Found (or added) above.
                let Some(i) = entry.find(name, hint) else {
                    continue;
                };
                hint = i + 1;
                let ty = entry.types.get(i).and_then(Option::as_ref);
                out[i] = to_value(lit, ty)
                    .map_err(|e| err(&format!("SQL_REDO ({name})"), None, e.to_string()))?;
            }
            Ok::<_, RowError>(out)
        };
        // The where clause's before image (update, delete); the after image is the before
        // image overlaid with the set columns (update) or the inserted values.
        let before = match st.kind {
            DmlKind::Insert => None,
            _ => Some(fill(Vec::new(), &st.before)?),
        };
        let after = match st.kind {
            DmlKind::Insert => Some(fill(Vec::new(), &st.values)?),
            DmlKind::Update => Some(fill(before.clone().unwrap_or_default(), &st.values)?),
            DmlKind::Delete => None,
        };
        Ok(ChangeEvent {
            source: self.source.clone(),
            position,
            transaction: Some(txn.clone()),
            schema,
            op,
            before,
            after,
            ddl: None,
        })
    }

    /// The typed values of `cols` (a LOB locator's where clause) of `schema.table`, by the
    /// dictionary types when known, by the literals otherwise.
    pub fn typed_columns(
        &self,
        schema: &str,
        table: &str,
        cols: &[(&str, Literal<'_>)],
    ) -> Result<Vec<(String, Value)>, (String, ValueError)> {
        let entry = self.slot(schema, table).map(|i| &self.tables[i]);
        cols.iter()
            .map(|(name, lit)| {
                let ty = entry
                    .and_then(|e| e.find(name, 0).map(|i| (e, i)))
                    .and_then(|(e, i)| e.types.get(i))
                    .and_then(Option::as_ref);
                to_value(lit, ty)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| (name.to_string(), e))
            })
            .collect()
    }

    /// The table's schema with `column` in it: a LOB column that neither the dictionary nor
    /// any statement named so far is added (typed text, or bytes for a BLOB), as a new
    /// version.
    pub fn with_lob_column(
        &mut self,
        table: &TableId,
        column: &str,
        binary: bool,
    ) -> Arc<TableSchema> {
        let entry = self.get_or_insert(&table.schema, &table.table, || {
            Entry::empty(table.clone(), 1)
        });
        if entry.schema.column_index(column).is_none() {
            let mut schema = (*entry.schema).clone();
            if !schema.columns.is_empty() {
                schema.version += 1;
            }
            schema.columns.push(Column {
                name: column.to_string(),
                column_type: if binary {
                    crate::event::ColumnType::Bytes
                } else {
                    crate::event::ColumnType::String { max_length: None }
                },
                nullable: true,
            });
            entry.types.push(None);
            entry.index = column_index(&schema);
            entry.schema = Arc::new(schema);
        }
        entry.schema.clone()
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
                let entry = self.get_or_insert(&table.schema, &table.table, || {
                    Entry::empty(table.clone(), 0)
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

/// A statement's columns against its table's entry. A column the schema lacks is added
/// (typed from its literal) and the first addition starts a new schema version.
struct Image<'e> {
    entry: &'e mut Entry,
    /// The schema as extended by this statement, when it was.
    grown: Option<TableSchema>,
}

impl Image<'_> {
    fn columns(&self) -> &[Column] {
        match &self.grown {
            Some(s) => &s.columns,
            None => &self.entry.schema.columns,
        }
    }

    fn index(&mut self, name: &str, lit: &Literal<'_>, hint: usize) -> usize {
        if self.grown.is_none() {
            if let Some(i) = self.entry.find(name, hint) {
                return i;
            }
        } else if let Some(i) = self.columns().iter().position(|c| c.name == name) {
            return i;
        }
        let schema = self.grown.get_or_insert_with(|| {
            let mut s = (*self.entry.schema).clone();
            if !s.columns.is_empty() {
                s.version += 1;
            }
            s
        });
        schema.columns.push(Column {
            name: name.to_string(),
            column_type: inferred_type(lit),
            nullable: true,
        });
        self.entry.types.push(None);
        schema.columns.len() - 1
    }

    /// The schema the images follow; a grown one replaces the entry's.
    fn finish(&mut self) -> Arc<TableSchema> {
        if let Some(schema) = self.grown.take() {
            self.entry.index = column_index(&schema);
            self.entry.schema = Arc::new(schema);
        }
        self.entry.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ColumnType, Decimal};
    use std::collections::BTreeMap;

    fn row(op: OpCode, sql: &str) -> ContentRow {
        ContentRow {
            scn: 100,
            start_scn: None,
            commit_scn: None,
            timestamp: None,
            commit_timestamp: None,
            xid: "0A00".into(),
            op,
            sql_redo: sql.into(),
            csf: false,
            rollback: false,
            rs_id: String::new(),
            ssn: 0,
            row_id: String::new(),
            seg_owner: "HR".into(),
            table_name: "EMP".into(),
            thread: 1,
            info: String::new(),
            row: 4,
            line: 5,
        }
    }

    fn position() -> Position {
        Position::Oracle {
            scn: 100,
            commit_scn: 101,
            thread: 1,
            resume_scn: 100,
            committed: BTreeMap::new(),
            xid: "0A00".into(),
            index: 0,
        }
    }

    fn txn() -> Transaction {
        Transaction {
            id: "0A00".into(),
            commit_time: None,
        }
    }

    fn emp() -> TableDef {
        let number = |p, s| OracleType::Number {
            precision: Some(p),
            scale: Some(s),
        };
        TableDef {
            table: TableId::new("HR", "EMP"),
            columns: vec![
                ("ID".into(), number(10, 0), false),
                ("NAME".into(), OracleType::Text { max_length: None }, true),
                ("PAY".into(), number(12, 2), true),
            ],
            primary_key: vec!["ID".into()],
        }
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn typed_by_the_dictionary_in_any_column_order() {
        let mut b = EventBuilder::new("ora");
        b.define(emp(), false);
        // Columns out of table order: the index map, not the position, places them.
        let e = b
            .dml(
                &row(
                    OpCode::Insert,
                    r#"insert into "HR"."EMP"("PAY","ID","NAME") values ('5','7','Ann');"#,
                ),
                position(),
                &txn(),
            )
            .unwrap();
        assert_eq!(
            e.after.unwrap(),
            vec![
                Value::Int(7),
                s("Ann"),
                Value::Decimal(Decimal::new(500, 2))
            ]
        );
        assert_eq!(e.schema.version, 1);
        let e = b
            .dml(
                &row(
                    OpCode::Update,
                    r#"update "HR"."EMP" set "PAY" = '6.5' where "ID" = '7' and "NAME" = 'Ann' and "PAY" = '5';"#,
                ),
                position(),
                &txn(),
            )
            .unwrap();
        assert_eq!(
            e.before.unwrap(),
            vec![
                Value::Int(7),
                s("Ann"),
                Value::Decimal(Decimal::new(500, 2))
            ]
        );
        assert_eq!(
            e.after.unwrap(),
            vec![
                Value::Int(7),
                s("Ann"),
                Value::Decimal(Decimal::new(650, 2))
            ]
        );
    }

    #[test]
    fn unknown_columns_start_one_new_version() {
        let mut b = EventBuilder::new("ora");
        b.define(emp(), false);
        let e = b
            .dml(
                &row(
                    OpCode::Update,
                    r#"update "HR"."EMP" set "NEW1" = 'x', "NEW2" = 3 where "ID" = '7' and "NAME" IS NULL;"#,
                ),
                position(),
                &txn(),
            )
            .unwrap();
        assert_eq!(e.schema.version, 2);
        let names: Vec<&str> = e.schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ID", "NAME", "PAY", "NEW1", "NEW2"]);
        assert_eq!(
            e.schema.columns[4].column_type,
            ColumnType::Decimal {
                precision: 38,
                scale: 0
            }
        );
        assert_eq!(
            e.before.unwrap(),
            vec![
                Value::Int(7),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null
            ]
        );
        assert_eq!(
            e.after.unwrap(),
            vec![
                Value::Int(7),
                Value::Null,
                Value::Null,
                s("x"),
                Value::Decimal(Decimal::new(3, 0))
            ]
        );
        // The grown schema is the table's now: the same columns again add nothing.
        let e = b
            .dml(
                &row(
                    OpCode::Delete,
                    r#"delete from "HR"."EMP" where "ID" = '7' and "NEW2" = 3;"#,
                ),
                position(),
                &txn(),
            )
            .unwrap();
        assert_eq!(e.schema.version, 2);
        assert_eq!(b.schema(&TableId::new("HR", "EMP")).unwrap().version, 2);
        assert_eq!(b.schemas().count(), 1);
    }

    #[test]
    fn a_bad_value_names_its_column_and_keeps_the_table_whole() {
        let mut b = EventBuilder::new("ora");
        b.define(emp(), false);
        let e = b
            .dml(
                &row(
                    OpCode::Insert,
                    r#"insert into "HR"."EMP"("ID","EXTRA","PAY") values ('7','x','1x');"#,
                ),
                position(),
                &txn(),
            )
            .unwrap_err();
        assert_eq!(e.column, "SQL_REDO (PAY)");
        assert!(e.locator.starts_with("row 4 (line 5), SCN 100"), "{e}");
        // The column the failed row introduced is kept, and types stay aligned with it.
        let e = b
            .dml(
                &row(
                    OpCode::Insert,
                    r#"insert into "HR"."EMP"("ID","EXTRA","MORE","PAY") values ('8','y',TO_DATE('2024-01-02 03:04:05', 'YYYY-MM-DD HH24:MI:SS'),'2');"#,
                ),
                position(),
                &txn(),
            )
            .unwrap();
        assert_eq!(e.schema.version, 3);
        assert_eq!(
            e.after.unwrap(),
            vec![
                Value::Int(8),
                Value::Null,
                Value::Decimal(Decimal::new(200, 2)),
                s("y"),
                Value::Timestamp(
                    chrono::NaiveDate::from_ymd_opt(2024, 1, 2)
                        .unwrap()
                        .and_hms_opt(3, 4, 5)
                        .unwrap()
                ),
            ]
        );
        let e = b
            .dml(
                &row(
                    OpCode::Insert,
                    r#"insert into "HR"."EMP"("ID") values ('7';"#,
                ),
                position(),
                &txn(),
            )
            .unwrap_err();
        assert_eq!(
            (e.column.as_str(), e.at.as_str()),
            ("SQL_REDO", " at byte 40")
        );
    }
}
