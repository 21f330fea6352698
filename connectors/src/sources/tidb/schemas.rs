//! Table schemas as the changefeed reveals them, with a version bumped on every change.
//!
//! TiCDC messages carry column names and types but no version; a DDL message announces a
//! change. A DDL bumps the table's version and the next row message defines its columns;
//! a row whose columns differ with no DDL seen (a DDL filtered upstream) bumps it too.
//! Versions are counted from 1 each time the worker starts.

use super::message::{DdlChange, RowChange};
use crate::event::{Column, TableId, TableSchema};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Schemas {
    tables: HashMap<TableId, Entry>,
}

struct Entry {
    schema: Arc<TableSchema>,
    /// A DDL was seen: the next row's columns belong to the DDL's version.
    after_ddl: bool,
}

impl Schemas {
    /// Installs a schema read from the database (exact types), used while the changefeed's
    /// rows show the same column names.
    pub fn seed(&mut self, schema: Arc<TableSchema>) {
        self.tables.entry(schema.table.clone()).or_insert(Entry {
            schema,
            after_ddl: false,
        });
    }

    pub fn for_row(&mut self, row: &RowChange) -> Arc<TableSchema> {
        let columns: Vec<Column> = row
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                column_type: c.column_type.clone(),
                nullable: !row.primary_key.contains(&c.name),
            })
            .collect();
        let primary_key: Vec<usize> = row
            .primary_key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect();
        match self.tables.get_mut(&row.table) {
            Some(e)
                if !e.after_ddl
                    && same_names(&e.schema.columns, &columns)
                    && e.schema.primary_key == primary_key =>
            {
                e.schema.clone()
            }
            Some(e) => {
                let version = if e.after_ddl {
                    e.schema.version
                } else {
                    e.schema.version + 1
                };
                e.schema = Arc::new(TableSchema {
                    table: row.table.clone(),
                    version,
                    columns,
                    primary_key,
                });
                e.after_ddl = false;
                e.schema.clone()
            }
            None => {
                let schema = Arc::new(TableSchema {
                    table: row.table.clone(),
                    version: 1,
                    columns,
                    primary_key,
                });
                self.tables.insert(
                    row.table.clone(),
                    Entry {
                        schema: schema.clone(),
                        after_ddl: false,
                    },
                );
                schema
            }
        }
    }

    /// The schema a DDL event is published with: the table's next version (columns as last
    /// known; the next row message brings the new ones).
    pub fn for_ddl(&mut self, ddl: &DdlChange) -> Arc<TableSchema> {
        let entry = self
            .tables
            .entry(ddl.table.clone())
            .or_insert_with(|| Entry {
                schema: Arc::new(TableSchema {
                    table: ddl.table.clone(),
                    version: 0,
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                }),
                after_ddl: false,
            });
        let mut next = (*entry.schema).clone();
        next.version += 1;
        entry.schema = Arc::new(next);
        entry.after_ddl = true;
        entry.schema.clone()
    }
}

/// Same column names in the same order: the schema has not changed, whatever each side
/// infers for the types (the database's exact types win over what the messages imply).
fn same_names(a: &[Column], b: &[Column]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ColumnType, Operation};
    use crate::sources::tidb::message::ColumnInfo;

    fn row(cols: &[&str]) -> RowChange {
        RowChange {
            commit_ts: 1,
            table: TableId::new("db", "t"),
            op: Operation::Insert,
            columns: cols
                .iter()
                .map(|c| ColumnInfo {
                    name: c.to_string(),
                    column_type: ColumnType::Int,
                })
                .collect(),
            primary_key: vec!["id".into()],
            before: None,
            after: None,
            event_time_ms: None,
        }
    }

    #[test]
    fn versions_follow_ddl_and_column_changes() {
        let mut s = Schemas::default();
        assert_eq!(s.for_row(&row(&["id", "a"])).version, 1);
        assert_eq!(s.for_row(&row(&["id", "a"])).version, 1);
        let ddl = DdlChange {
            commit_ts: 2,
            table: TableId::new("db", "t"),
            sql: "ALTER TABLE t ADD b INT".into(),
            event_time_ms: None,
        };
        assert_eq!(s.for_ddl(&ddl).version, 2);
        let v2 = s.for_row(&row(&["id", "a", "b"]));
        assert_eq!((v2.version, v2.columns.len()), (2, 3));
        assert_eq!(
            s.for_row(&row(&["id", "b"])).version,
            3,
            "a change with no DDL seen"
        );
    }
}
