//! The breaker's bookkeeping in the sink database: the control row of each table, the
//! diversion journal, shadow creation, and guarded statement lists (promotion, rollback).

use super::bind::Bound;
use super::shadow::{DurableState, ShadowTable, control_schema, journal_schema};
use super::writer::{Backend, Pools, SideRows, WritePlan, exec_one, on_pool};
use super::{Dialect, TableName, TableSinkError, TableWriter, WriteOp};
use crate::event::{ChangeEvent, TableSchema, Value};
use chrono::{SecondsFormat, Utc};
use sqlx::{AssertSqlSafe, Executor, IntoArguments};

/// `state, shadow, old_table, reason` as read.
type RawControlRow = (String, String, String, Option<String>);

/// A table's row in the control table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRow {
    pub state: DurableState,
    pub shadow: String,
    pub old_table: String,
    pub reason: Option<String>,
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One statement with text or integer arguments.
pub(crate) type Statement = (String, Vec<Bound>);

pub(super) fn text(s: &str) -> Bound {
    Bound::Text(s.to_string())
}

impl TableWriter {
    /// Whether `table` exists.
    pub async fn table_exists(&self, table: &TableName) -> Result<bool, TableSinkError> {
        Ok(!self.existing_columns(table).await?.is_empty())
    }

    /// Creates the control table and the journal next to `st.table` if missing.
    pub async fn ensure_bookkeeping(&self, st: &ShadowTable) -> Result<(), TableSinkError> {
        self.ensure_table(&control_schema(), &st.control).await?;
        self.ensure_table(&journal_schema(), &st.journal).await?;
        Ok(())
    }

    /// The control row of `st`'s table; `None` when its breaker never opened.
    pub async fn control_row(
        &self,
        st: &ShadowTable,
    ) -> Result<Option<ControlRow>, TableSinkError> {
        if !self.table_exists(&st.control).await? {
            return Ok(None);
        }
        let sql = self.dialect.control_row_sql(&st.control);
        let key = st.key();
        let row: Result<Option<RawControlRow>, sqlx::Error> = on_pool!(&self.pools, p => sqlx::query_as(AssertSqlSafe(sql)).bind(key).fetch_optional(p).await);
        let row = row.map_err(|source| TableSinkError::Query {
            table: st.control.clone(),
            source,
        })?;
        row.map(|(state, shadow, old_table, reason)| {
            let state = DurableState::parse(&state).ok_or_else(|| TableSinkError::Bookkeeping {
                table: st.control.clone(),
                reason: format!("unknown breaker state `{state}` for table {}", st.key()),
            })?;
            Ok(ControlRow {
                state,
                shadow,
                old_table,
                reason,
            })
        })
        .transpose()
    }

    /// Writes (inserts or replaces) the control row of `st`'s table.
    pub async fn write_control(
        &self,
        st: &ShadowTable,
        state: DurableState,
        reason: &str,
    ) -> Result<(), TableSinkError> {
        let row = vec![
            Value::String(st.key().into()),
            Value::String(state.as_str().into()),
            Value::String(st.shadow.table.clone()),
            Value::String(st.old.table.clone()),
            Value::String(reason.chars().take(1000).collect()),
            Value::String(now_text()),
            Value::Int(0),
        ];
        let plan = WritePlan {
            after: vec![SideRows {
                op: WriteOp::Upsert,
                table: st.control.clone(),
                schema: control_schema(),
                rows: vec![row],
            }],
            ..WritePlan::default()
        };
        self.apply_with::<ChangeEvent>(&[], plan).await.map(|_| ())
    }

    /// The statement that moves the control row to `to` if it is in one of `from`.
    pub(crate) fn set_state_statement(
        &self,
        st: &ShadowTable,
        to: DurableState,
        reason: &str,
        from: &[DurableState],
    ) -> Statement {
        let mut args = vec![
            text(to.as_str()),
            text(&reason.chars().take(1000).collect::<String>()),
            text(&now_text()),
            text(st.key()),
        ];
        args.extend(from.iter().map(|s| text(s.as_str())));
        (self.dialect.set_state_sql(&st.control, from.len()), args)
    }

    /// Moves the control row to `to` if it is in one of `from`; false when it was not.
    pub async fn set_state(
        &self,
        st: &ShadowTable,
        to: DurableState,
        reason: &str,
        from: &[DurableState],
    ) -> Result<bool, TableSinkError> {
        let stmt = self.set_state_statement(st, to, reason, from);
        Ok(self
            .run_guarded(&st.control, &[stmt], false)
            .await?
            .is_some())
    }

    /// How many events the journal holds for `st`'s table, and its highest sequence number.
    pub async fn journal_stats(&self, st: &ShadowTable) -> Result<(u64, i64), TableSinkError> {
        if !self.table_exists(&st.journal).await? {
            return Ok((0, 0));
        }
        let sql = self.dialect.journal_stats_sql(&st.journal);
        let key = st.key();
        let row: Result<(i64, i64), sqlx::Error> = on_pool!(&self.pools, p => sqlx::query_as(AssertSqlSafe(sql)).bind(key).fetch_one(p).await);
        let (count, max) = row.map_err(|source| TableSinkError::Query {
            table: st.journal.clone(),
            source,
        })?;
        Ok((u64::try_from(count).unwrap_or(0), max))
    }

    /// The oldest `limit` journal entries of `st`'s table, decoded, with their sequence numbers.
    pub async fn journal_page(
        &self,
        st: &ShadowTable,
        limit: usize,
    ) -> Result<Vec<(i64, ChangeEvent)>, TableSinkError> {
        let sql = self.dialect.journal_page_sql(&st.journal, limit.max(1));
        let key = st.key();
        let rows: Result<Vec<(i64, String)>, sqlx::Error> = on_pool!(&self.pools, p => sqlx::query_as(AssertSqlSafe(sql)).bind(key).fetch_all(p).await);
        let rows = rows.map_err(|source| TableSinkError::Query {
            table: st.journal.clone(),
            source,
        })?;
        rows.into_iter()
            .map(|(seq, json)| {
                serde_json::from_str(&json).map(|e| (seq, e)).map_err(|e| {
                    TableSinkError::Bookkeeping {
                        table: st.journal.clone(),
                        reason: format!("journal entry {} #{seq} cannot be read: {e}", st.key()),
                    }
                })
            })
            .collect()
    }

    /// Journal rows for `events`, numbered from `first_seq`.
    pub fn journal_rows(
        &self,
        st: &ShadowTable,
        events: &[impl std::borrow::Borrow<ChangeEvent>],
        first_seq: i64,
    ) -> Result<SideRows, TableSinkError> {
        let mut rows = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let json =
                serde_json::to_string(e.borrow()).map_err(|e| TableSinkError::Bookkeeping {
                    table: st.journal.clone(),
                    reason: format!("cannot serialize an event: {e}"),
                })?;
            rows.push(vec![
                Value::String(st.key().into()),
                Value::Int(first_seq + i as i64),
                Value::String(json),
            ]);
        }
        Ok(SideRows {
            op: WriteOp::Upsert,
            table: st.journal.clone(),
            schema: journal_schema(),
            rows,
        })
    }

    /// Deletions of the journal entries `seqs` of `st`'s table.
    pub fn journal_deletes(&self, st: &ShadowTable, seqs: &[i64]) -> SideRows {
        SideRows {
            op: WriteOp::Delete,
            table: st.journal.clone(),
            schema: journal_schema(),
            rows: seqs
                .iter()
                .map(|s| vec![Value::String(st.key().into()), Value::Int(*s), Value::Null])
                .collect(),
        }
    }

    /// The statement that deletes `st`'s whole journal.
    pub(crate) fn journal_clear_statement(&self, st: &ShadowTable) -> Statement {
        (
            self.dialect.journal_clear_sql(&st.journal),
            vec![text(st.key())],
        )
    }

    /// (Re)creates the shadow table like the original (from `schema` on SQLite) and, with
    /// `seed`, copies the original's rows into it.
    pub async fn create_shadow(
        &self,
        st: &ShadowTable,
        schema: &TableSchema,
        seed: bool,
    ) -> Result<(), TableSinkError> {
        let dialect = self.dialect;
        let mut stmts: Vec<Statement> = vec![(dialect.drop_sql(&st.shadow), vec![])];
        let create = dialect
            .create_like_sql(&st.table, &st.shadow)
            .unwrap_or_else(|| dialect.create_table_sql(schema, &st.shadow, &self.ddl));
        stmts.push((create, vec![]));
        if seed {
            let columns = (dialect == Dialect::Sqlite).then_some(schema);
            stmts.push((
                dialect.copy_rows_sql(&st.table, &st.shadow, columns),
                vec![],
            ));
        }
        // MySQL commits at each DDL anyway; PostgreSQL and SQLite create and seed atomically.
        self.run_guarded(&st.shadow, &stmts, dialect.transactional_ddl())
            .await
            .map(|_| ())
    }

    /// Runs `stmts` in order, in one transaction when `transaction` is true. If the first
    /// statement is an `UPDATE` that changes no row, the rest is not run (and the transaction
    /// is rolled back): returns `None`. Otherwise the rows each statement affected.
    pub(crate) async fn run_guarded(
        &self,
        about: &TableName,
        stmts: &[Statement],
        transaction: bool,
    ) -> Result<Option<Vec<u64>>, TableSinkError> {
        let result = on_pool!(&self.pools, p => run_all(p, stmts, transaction).await);
        result.map_err(|source| TableSinkError::Query {
            table: about.clone(),
            source,
        })
    }
}

fn guards(stmts: &[Statement]) -> bool {
    stmts
        .first()
        .is_some_and(|(sql, _)| sql.trim_start().to_ascii_uppercase().starts_with("UPDATE"))
}

async fn run_all<DB>(
    pool: &sqlx::Pool<DB>,
    stmts: &[Statement],
    transaction: bool,
) -> Result<Option<Vec<u64>>, sqlx::Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let guarded = guards(stmts);
    let mut out = Vec::with_capacity(stmts.len());
    if transaction {
        let mut tx = pool.begin().await?;
        for (i, (sql, args)) in stmts.iter().enumerate() {
            let n = exec_one::<DB>(&mut tx, sql, args).await?;
            if i == 0 && guarded && n == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            out.push(n);
        }
        tx.commit().await?;
    } else {
        let mut conn = pool.acquire().await?;
        for (i, (sql, args)) in stmts.iter().enumerate() {
            let n = exec_one::<DB>(&mut conn, sql, args).await?;
            if i == 0 && guarded && n == 0 {
                return Ok(None);
            }
            out.push(n);
        }
    }
    Ok(Some(out))
}
