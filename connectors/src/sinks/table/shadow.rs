//! Shadow tables: names, and the SQL that creates, seeds, swaps, rolls back and releases them
//! per dialect. Pure functions, so StarRocks' `SWAP WITH` is tested without a server.
//!
//! Two bookkeeping tables live next to the sink tables (same schema/database):
//! - `_syncmesh_breaker`: one row per sink table whose breaker has opened: its durable state
//!   (`open`, `half-open`, `swapping`, `promoted`, `closed`), shadow and previous-table names.
//!   Every write that depends on the state first updates this row (a *guard*), so a promotion
//!   and a diverted write never interleave;
//! - `_syncmesh_diverted`: the diversion journal, every event written to a shadow table, in
//!   order, serialized; compensation replays it into the original table.

use super::{Dialect, TableName};
use crate::event::{Column, ColumnType, TableId, TableSchema};
use std::fmt;
use std::sync::Arc;

/// The control table of the breakers.
pub const CONTROL_TABLE: &str = "_syncmesh_breaker";
/// The diversion journal.
pub const JOURNAL_TABLE: &str = "_syncmesh_diverted";
/// Suffix of the shadow table.
pub const SHADOW_SUFFIX: &str = "_shadow";
/// Suffix of the table a promotion replaced, kept for rollback until released.
pub const OLD_SUFFIX: &str = "_old";

/// The durable state of a sink table's breaker, as kept in the control table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurableState {
    Closed,
    Open,
    HalfOpen,
    /// A promotion or rollback is between its steps (MySQL and StarRocks cannot rename inside
    /// a transaction): writers wait.
    Swapping,
    /// The shadow replaced the table; the old one is kept as `<table>_old`.
    Promoted,
}

impl DurableState {
    pub fn as_str(self) -> &'static str {
        match self {
            DurableState::Closed => "closed",
            DurableState::Open => "open",
            DurableState::HalfOpen => "half-open",
            DurableState::Swapping => "swapping",
            DurableState::Promoted => "promoted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "closed" => DurableState::Closed,
            "open" => DurableState::Open,
            "half-open" => DurableState::HalfOpen,
            "swapping" => DurableState::Swapping,
            "promoted" => DurableState::Promoted,
            _ => return None,
        })
    }

    /// Whether writes go to the shadow table (and the journal).
    pub fn diverting(self) -> bool {
        matches!(self, DurableState::Open | DurableState::HalfOpen)
    }
}

impl fmt::Display for DurableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sink table and its shadow, previous-table and bookkeeping tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowTable {
    pub table: TableName,
    pub shadow: TableName,
    pub old: TableName,
    pub control: TableName,
    pub journal: TableName,
}

impl ShadowTable {
    pub fn new(table: TableName) -> Self {
        let sibling = |name: String| TableName {
            schema: table.schema.clone(),
            table: name,
        };
        Self {
            shadow: sibling(format!("{}{SHADOW_SUFFIX}", table.table)),
            old: sibling(format!("{}{OLD_SUFFIX}", table.table)),
            control: sibling(CONTROL_TABLE.into()),
            journal: sibling(JOURNAL_TABLE.into()),
            table,
        }
    }

    /// The key of the table's rows in the control table and journal (the unqualified name).
    pub fn key(&self) -> &str {
        &self.table.table
    }

    /// Refuses names the database would truncate or reject (MySQL 64, PostgreSQL 63 bytes).
    pub fn check_names(&self, dialect: Dialect) -> Result<(), String> {
        let max = match dialect {
            Dialect::Postgres => 63,
            Dialect::MySql | Dialect::StarRocks => 64,
            Dialect::Sqlite => usize::MAX,
        };
        for name in [&self.shadow, &self.old] {
            if name.table.len() > max {
                return Err(format!(
                    "`{}` is longer than the {max} bytes {dialect} allows for a table name",
                    name.table
                ));
            }
        }
        Ok(())
    }
}

fn column(name: &str, column_type: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        column_type,
        nullable,
    }
}

fn text(max: u32) -> ColumnType {
    ColumnType::String {
        max_length: Some(max),
    }
}

/// The control table's shape: `tbl` (key), `state`, `shadow`, `old_table`, `reason`,
/// `changed_at` (RFC 3339) and `writes` (bumped by every guarded write).
pub fn control_schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("syncmesh", CONTROL_TABLE),
        version: 1,
        columns: vec![
            column("tbl", text(255), false),
            column("state", text(16), false),
            column("shadow", text(255), false),
            column("old_table", text(255), false),
            column("reason", text(1000), true),
            column("changed_at", text(40), false),
            column("writes", ColumnType::Int, false),
        ],
        primary_key: vec![0],
    })
}

/// The journal's shape: `tbl`, `seq` (the key) and `event` (a serialized `ChangeEvent`).
pub fn journal_schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("syncmesh", JOURNAL_TABLE),
        version: 1,
        columns: vec![
            column("tbl", text(255), false),
            column("seq", ColumnType::Int, false),
            column("event", ColumnType::String { max_length: None }, false),
        ],
        primary_key: vec![0, 1],
    })
}

impl Dialect {
    /// `CREATE TABLE shadow LIKE table` (columns, keys, indexes; no data, no triggers).
    /// `None` on SQLite, which has no `LIKE`: the shadow is created from the source schema.
    pub fn create_like_sql(self, like: &TableName, new: &TableName) -> Option<String> {
        let (like, new) = (like.quoted(self), new.quoted(self));
        match self {
            Dialect::MySql | Dialect::StarRocks => {
                Some(format!("CREATE TABLE IF NOT EXISTS {new} LIKE {like}"))
            }
            Dialect::Postgres => Some(format!(
                "CREATE TABLE IF NOT EXISTS {new} (LIKE {like} INCLUDING ALL)"
            )),
            Dialect::Sqlite => None,
        }
    }

    /// Copies every row of `from` into `to` (the shadow starts as a full copy, so promoting it
    /// loses nothing). `columns` lists them explicitly where the two may differ in order.
    pub fn copy_rows_sql(
        self,
        from: &TableName,
        to: &TableName,
        columns: Option<&TableSchema>,
    ) -> String {
        match columns {
            Some(schema) => {
                let list = schema
                    .columns
                    .iter()
                    .map(|c| self.quote_ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "INSERT INTO {} ({list}) SELECT {list} FROM {}",
                    to.quoted(self),
                    from.quoted(self)
                )
            }
            None => format!(
                "INSERT INTO {} SELECT * FROM {}",
                to.quoted(self),
                from.quoted(self)
            ),
        }
    }

    /// The statements that put `incoming` in place of `current`'s name and keep `current` as
    /// `keep`, atomically for readers: one `RENAME TABLE` on MySQL/MariaDB; `SWAP WITH` then a
    /// rename of the swapped-out table on StarRocks; two renames that the caller runs in one
    /// transaction on PostgreSQL and SQLite.
    pub fn swap_sql(
        self,
        current: &TableName,
        incoming: &TableName,
        keep: &TableName,
    ) -> Vec<String> {
        match self {
            Dialect::MySql => vec![format!(
                "RENAME TABLE {} TO {}, {} TO {}",
                current.quoted(self),
                keep.quoted(self),
                incoming.quoted(self),
                current.quoted(self)
            )],
            Dialect::StarRocks => vec![
                format!(
                    "ALTER TABLE {} SWAP WITH {}",
                    current.quoted(self),
                    self.quote_ident(&incoming.table)
                ),
                format!(
                    "ALTER TABLE {} RENAME {}",
                    incoming.quoted(self),
                    self.quote_ident(&keep.table)
                ),
            ],
            Dialect::Postgres | Dialect::Sqlite => vec![
                format!(
                    "ALTER TABLE {} RENAME TO {}",
                    current.quoted(self),
                    self.quote_ident(&keep.table)
                ),
                format!(
                    "ALTER TABLE {} RENAME TO {}",
                    incoming.quoted(self),
                    self.quote_ident(&current.table)
                ),
            ],
        }
    }

    /// Whether DDL can run inside a transaction (so a swap and its bookkeeping commit together).
    pub fn transactional_ddl(self) -> bool {
        matches!(self, Dialect::Postgres | Dialect::Sqlite)
    }

    /// `DROP TABLE IF EXISTS`.
    pub fn drop_sql(self, table: &TableName) -> String {
        format!("DROP TABLE IF EXISTS {}", table.quoted(self))
    }

    /// The guard every state-dependent write starts with: bumps the table's control row if its
    /// state is one of `states` (bound after the table key). No row updated means another
    /// actor changed the state: the write is refused. On MySQL and PostgreSQL the updated row
    /// stays locked until the transaction ends, which is what serializes a promotion with
    /// writes in flight.
    pub fn guard_sql(self, control: &TableName, states: usize) -> String {
        let mut n = 1;
        let mut p = |sql: &mut String| {
            match self {
                Dialect::Postgres => sql.push_str(&format!("${n}")),
                _ => sql.push('?'),
            }
            n += 1;
        };
        let mut sql = format!(
            "UPDATE {} SET {w} = {w} + 1 WHERE {} = ",
            control.quoted(self),
            self.quote_ident("tbl"),
            w = self.quote_ident("writes"),
        );
        p(&mut sql);
        sql.push_str(&format!(" AND {} IN (", self.quote_ident("state")));
        for i in 0..states {
            if i > 0 {
                sql.push_str(", ");
            }
            p(&mut sql);
        }
        sql.push(')');
        sql
    }

    /// Sets the state (and reason, time) of a control row whose state is one of `states`.
    pub fn set_state_sql(self, control: &TableName, states: usize) -> String {
        let q = |s: &str| self.quote_ident(s);
        let ph = |n: usize| match self {
            Dialect::Postgres => format!("${n}"),
            _ => "?".into(),
        };
        let list = (0..states)
            .map(|i| ph(5 + i))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {} SET {} = {}, {} = {}, {} = {} WHERE {} = {} AND {} IN ({list})",
            control.quoted(self),
            q("state"),
            ph(1),
            q("reason"),
            ph(2),
            q("changed_at"),
            ph(3),
            q("tbl"),
            ph(4),
            q("state"),
        )
    }

    /// The control row of a table: `state, shadow, old_table, reason`.
    pub fn control_row_sql(self, control: &TableName) -> String {
        let q = |s: &str| self.quote_ident(s);
        format!(
            "SELECT {}, {}, {}, {} FROM {} WHERE {} = {}",
            q("state"),
            q("shadow"),
            q("old_table"),
            q("reason"),
            control.quoted(self),
            q("tbl"),
            if self == Dialect::Postgres { "$1" } else { "?" }
        )
    }

    /// The next `limit` journal entries of a table (`seq, event`), oldest first.
    pub fn journal_page_sql(self, journal: &TableName, limit: usize) -> String {
        let q = |s: &str| self.quote_ident(s);
        format!(
            "SELECT {}, {} FROM {} WHERE {} = {} ORDER BY {} LIMIT {limit}",
            q("seq"),
            q("event"),
            journal.quoted(self),
            q("tbl"),
            if self == Dialect::Postgres { "$1" } else { "?" },
            q("seq"),
        )
    }

    /// `COUNT(*)` and `MAX(seq)` of a table's journal.
    pub fn journal_stats_sql(self, journal: &TableName) -> String {
        let q = |s: &str| self.quote_ident(s);
        format!(
            "SELECT COUNT(*), COALESCE(MAX({}), 0) FROM {} WHERE {} = {}",
            q("seq"),
            journal.quoted(self),
            q("tbl"),
            if self == Dialect::Postgres { "$1" } else { "?" },
        )
    }

    /// Deletes a table's whole journal.
    pub fn journal_clear_sql(self, journal: &TableName) -> String {
        format!(
            "DELETE FROM {} WHERE {} = {}",
            journal.quoted(self),
            self.quote_ident("tbl"),
            if self == Dialect::Postgres { "$1" } else { "?" },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dialect_schema: Option<&str>) -> ShadowTable {
        ShadowTable::new(TableName {
            schema: dialect_schema.map(String::from),
            table: "accounts".into(),
        })
    }

    #[test]
    fn names_follow_the_table() {
        let n = names(Some("dw"));
        assert_eq!(n.shadow, TableName::with_schema("dw", "accounts_shadow"));
        assert_eq!(n.old, TableName::with_schema("dw", "accounts_old"));
        assert_eq!(n.control, TableName::with_schema("dw", "_syncmesh_breaker"));
        let long = ShadowTable::new(TableName::new("x".repeat(57)));
        assert!(
            long.check_names(Dialect::Postgres)
                .unwrap_err()
                .contains("63 bytes")
        );
        assert!(long.check_names(Dialect::MySql).is_ok());
    }

    #[test]
    fn starrocks_swaps_with_swap_with_then_renames_the_old_table() {
        let n = names(Some("dw"));
        assert_eq!(
            Dialect::StarRocks.swap_sql(&n.table, &n.shadow, &n.old),
            [
                "ALTER TABLE `dw`.`accounts` SWAP WITH `accounts_shadow`",
                "ALTER TABLE `dw`.`accounts_shadow` RENAME `accounts_old`",
            ]
        );
        // Rollback is the same swap the other way round.
        assert_eq!(
            Dialect::StarRocks.swap_sql(&n.table, &n.old, &n.shadow),
            [
                "ALTER TABLE `dw`.`accounts` SWAP WITH `accounts_old`",
                "ALTER TABLE `dw`.`accounts_old` RENAME `accounts_shadow`",
            ]
        );
        assert_eq!(
            Dialect::StarRocks
                .create_like_sql(&n.table, &n.shadow)
                .unwrap(),
            "CREATE TABLE IF NOT EXISTS `dw`.`accounts_shadow` LIKE `dw`.`accounts`"
        );
    }

    #[test]
    fn mysql_renames_both_in_one_statement() {
        let n = names(None);
        assert_eq!(
            Dialect::MySql.swap_sql(&n.table, &n.shadow, &n.old),
            ["RENAME TABLE `accounts` TO `accounts_old`, `accounts_shadow` TO `accounts`"]
        );
        assert!(!Dialect::MySql.transactional_ddl());
    }

    #[test]
    fn postgres_and_sqlite_rename_twice_in_a_transaction() {
        let n = names(Some("public"));
        assert_eq!(
            Dialect::Postgres.swap_sql(&n.table, &n.shadow, &n.old),
            [
                "ALTER TABLE \"public\".\"accounts\" RENAME TO \"accounts_old\"",
                "ALTER TABLE \"public\".\"accounts_shadow\" RENAME TO \"accounts\"",
            ]
        );
        assert!(Dialect::Postgres.transactional_ddl() && Dialect::Sqlite.transactional_ddl());
        assert_eq!(
            Dialect::Postgres
                .create_like_sql(&n.table, &n.shadow)
                .unwrap(),
            "CREATE TABLE IF NOT EXISTS \"public\".\"accounts_shadow\" (LIKE \"public\".\"accounts\" INCLUDING ALL)"
        );
        assert_eq!(Dialect::Sqlite.create_like_sql(&n.table, &n.shadow), None);
    }

    #[test]
    fn guards_and_state_updates() {
        let n = names(None);
        assert_eq!(
            Dialect::Postgres.guard_sql(&n.control, 2),
            "UPDATE \"_syncmesh_breaker\" SET \"writes\" = \"writes\" + 1 WHERE \"tbl\" = $1 AND \"state\" IN ($2, $3)"
        );
        assert_eq!(
            Dialect::MySql.set_state_sql(&n.control, 1),
            "UPDATE `_syncmesh_breaker` SET `state` = ?, `reason` = ?, `changed_at` = ? WHERE `tbl` = ? AND `state` IN (?)"
        );
        assert_eq!(
            Dialect::Postgres.set_state_sql(&n.control, 2),
            "UPDATE \"_syncmesh_breaker\" SET \"state\" = $1, \"reason\" = $2, \"changed_at\" = $3 WHERE \"tbl\" = $4 AND \"state\" IN ($5, $6)"
        );
        assert_eq!(
            Dialect::StarRocks.journal_page_sql(&n.journal, 500),
            "SELECT `seq`, `event` FROM `_syncmesh_diverted` WHERE `tbl` = ? ORDER BY `seq` LIMIT 500"
        );
        for s in ["closed", "open", "half-open", "swapping", "promoted"] {
            assert_eq!(DurableState::parse(s).map(|d| d.as_str()), Some(s));
        }
    }

    #[test]
    fn bookkeeping_tables_have_keys_every_dialect_can_index() {
        let c = Dialect::MySql.create_table_sql(
            &control_schema(),
            &names(None).control,
            &Default::default(),
        );
        assert!(c.contains("`tbl` VARCHAR(255) NOT NULL"), "{c}");
        assert!(c.contains("PRIMARY KEY (`tbl`)"), "{c}");
        let j = Dialect::StarRocks.create_table_sql(
            &journal_schema(),
            &names(None).journal,
            &Default::default(),
        );
        assert!(j.contains("PRIMARY KEY (`tbl`, `seq`)"), "{j}");
        assert!(j.contains("`event` STRING NOT NULL"), "{j}");
    }
}
