//! The [`TableWriter`]: connection pools per dialect, batch planning (conversion and collapsing
//! to one change per key) and execution in one transaction.

use super::bind::{self, Bound, Kind};
use super::{
    ApplyStats, DdlOptions, Dialect, TableName, TableSinkError, TableSinkOptions, TableSinkUrl,
    WriteOp,
};
use crate::event::{ChangeEvent, ColumnType, Decimal, Operation, TableId, TableSchema, Value};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySql, MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Arguments, AssertSqlSafe, Executor, IntoArguments, Row};
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Rows of another table written in the same transaction as a batch: the diversion journal
/// and its deletions, control rows. Values are full rows of `schema` for upserts, and rows
/// whose key columns are set for deletes.
#[derive(Debug, Clone)]
pub struct SideRows {
    pub op: WriteOp,
    pub table: TableName,
    pub schema: Arc<TableSchema>,
    pub rows: Vec<Vec<Value>>,
}

/// A statement run first in a batch's transaction; when it updates no row the batch is
/// refused with [`TableSinkError::Fenced`] and nothing is written.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The table the guard updates (for errors).
    pub table: TableName,
    pub sql: String,
    pub(crate) args: Vec<Bound>,
    /// What the guard expects, for the error (`open or half-open`).
    pub expected: String,
}

impl Guard {
    pub fn new(
        table: TableName,
        sql: String,
        args: Vec<String>,
        expected: impl Into<String>,
    ) -> Self {
        Self {
            table,
            sql,
            args: args.into_iter().map(Bound::Text).collect(),
            expected: expected.into(),
        }
    }
}

/// How [`TableWriter::apply_with`] writes a batch: to another table than its own (a shadow),
/// with side rows before and after it, behind a guard. Everything runs in the batch's one
/// transaction (in this order: guard, `before`, the batch, `after`), or, on StarRocks, which
/// has none, statement by statement in that order.
#[derive(Debug, Clone, Default)]
pub struct WritePlan<'a> {
    pub target: Option<&'a TableName>,
    pub before: Vec<SideRows>,
    pub after: Vec<SideRows>,
    pub guard: Option<Guard>,
}

/// Whether [`TableWriter::ensure_table`] created the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureOutcome {
    Created,
    Existed,
}

pub(super) enum Pools {
    MySql(MySqlPool),
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$p` bound to the concrete pool; the body is compiled once per driver.
macro_rules! on_pool {
    ($pools:expr, $p:ident => $body:expr) => {
        match $pools {
            Pools::MySql($p) => $body,
            Pools::Postgres($p) => $body,
            Pools::Sqlite($p) => $body,
        }
    };
}
pub(super) use on_pool;

/// Applies change events to tables of one database. Cheap to share behind an `Arc`; `apply`
/// takes `&self` and batches from several tasks run in their own transactions.
pub struct TableWriter {
    url: TableSinkUrl,
    pub(super) dialect: Dialect,
    options: TableSinkOptions,
    pub(super) ddl: DdlOptions,
    pub(super) pools: Pools,
    /// Tables (and schema versions) already ensured. Two tasks may both ensure the same table;
    /// that is harmless because `CREATE TABLE IF NOT EXISTS` is idempotent.
    ensured: Mutex<HashSet<(TableName, u32)>>,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("url", &self.url)
            .field("dialect", &self.dialect)
            .finish_non_exhaustive()
    }
}

impl TableWriter {
    /// Connects to `url` (see [`TableSinkUrl`]). The dialect comes from the URL unless
    /// `options.dialect` overrides it (StarRocks over `mysql://`).
    pub async fn connect(url: &str, options: TableSinkOptions) -> Result<Self, TableSinkError> {
        let url = TableSinkUrl::parse(url)?;
        let dialect = options.dialect.unwrap_or(url.dialect());
        if dialect.is_mysql_protocol() != url.dialect().is_mysql_protocol() {
            return Err(TableSinkError::Url {
                url: url.redacted(),
                reason: format!("the {dialect} dialect needs a mysql:// URL"),
            });
        }
        let connect_err = |source| TableSinkError::Connect {
            url: url.redacted(),
            source,
        };
        let max = options.max_connections.max(1);
        let mut ddl = options.ddl.clone();
        let pools = match dialect {
            Dialect::MySql | Dialect::StarRocks => {
                let opts = MySqlConnectOptions::from_str(url.connect_str()).map_err(connect_err)?;
                let mut pool = MySqlPoolOptions::new().max_connections(max);
                if dialect == Dialect::MySql {
                    // Over-long or out-of-range values are errors, never silent truncation.
                    pool = pool.after_connect(|conn, _meta| {
                        Box::pin(async move {
                            conn.execute(
                                "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                            )
                            .await?;
                            Ok(())
                        })
                    });
                }
                let pool = pool.connect_with(opts).await.map_err(connect_err)?;
                if dialect == Dialect::MySql && ddl.mysql_collation.is_none() {
                    let version: String = sqlx::query_scalar("SELECT VERSION()")
                        .fetch_one(&pool)
                        .await
                        .map_err(connect_err)?;
                    ddl.mysql_collation = Some(binary_collation(&version).to_string());
                }
                Pools::MySql(pool)
            }
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(url.connect_str()).map_err(connect_err)?;
                let pool = PgPoolOptions::new()
                    .max_connections(max)
                    .connect_with(opts)
                    .await
                    .map_err(connect_err)?;
                Pools::Postgres(pool)
            }
            Dialect::Sqlite => {
                let mut opts =
                    SqliteConnectOptions::from_str(url.connect_str()).map_err(connect_err)?;
                if !url.connect_str().contains("mode=") {
                    opts = opts.create_if_missing(true);
                }
                let mut pool = SqlitePoolOptions::new().max_connections(max);
                if url.is_sqlite_memory() {
                    // An in-memory database lives in its connection: keep exactly one forever.
                    pool = pool
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                Pools::Sqlite(pool.connect_with(opts).await.map_err(connect_err)?)
            }
        };
        Ok(Self {
            url,
            dialect,
            options,
            ddl,
            pools,
            ensured: Mutex::new(HashSet::new()),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn options(&self) -> &TableSinkOptions {
        &self.options
    }

    /// The table options used by `CREATE TABLE` (with the collation detected at connect time).
    pub fn ddl_options(&self) -> &DdlOptions {
        &self.ddl
    }

    /// The target table for a source table.
    pub fn target_for(&self, source: &TableId) -> TableName {
        self.options.target_for(source)
    }

    /// Creates `target` from `schema` when it does not exist. When it exists, checks that it
    /// has every column of `schema` (extra columns are allowed) and leaves it alone.
    pub async fn ensure_table(
        &self,
        schema: &TableSchema,
        target: &TableName,
    ) -> Result<EnsureOutcome, TableSinkError> {
        if schema.primary_key.is_empty() {
            return Err(TableSinkError::NoPrimaryKey {
                table: target.clone(),
                source_table: schema.table.clone(),
            });
        }
        let existing = self.existing_columns(target).await?;
        if !existing.is_empty() {
            let fold = |s: &str| {
                if self.dialect.is_mysql_protocol() {
                    s.to_lowercase()
                } else {
                    s.to_string()
                }
            };
            let have: HashSet<String> = existing.iter().map(|c| fold(c)).collect();
            let missing: Vec<String> = schema
                .columns
                .iter()
                .filter(|c| !have.contains(&fold(&c.name)))
                .map(|c| c.name.clone())
                .collect();
            if !missing.is_empty() {
                return Err(TableSinkError::SchemaMismatch {
                    table: target.clone(),
                    missing,
                });
            }
            return Ok(EnsureOutcome::Existed);
        }
        let sql = self.dialect.create_table_sql(schema, target, &self.ddl);
        let result = on_pool!(&self.pools, p => sqlx::query(AssertSqlSafe(sql.clone())).execute(p).await.map(|_| ()));
        result.map_err(|source| TableSinkError::Create {
            table: target.clone(),
            sql,
            source,
        })?;
        Ok(EnsureOutcome::Created)
    }

    /// The column names of `target`; empty when the table does not exist.
    pub(super) async fn existing_columns(
        &self,
        target: &TableName,
    ) -> Result<Vec<String>, TableSinkError> {
        let schema = target.schema.as_deref();
        let table = target.table.as_str();
        let result: Result<Vec<String>, sqlx::Error> = match &self.pools {
            Pools::Sqlite(p) => {
                let q = match schema {
                    Some(s) => sqlx::query_scalar("SELECT name FROM pragma_table_info(?, ?)")
                        .bind(table)
                        .bind(s),
                    None => sqlx::query_scalar("SELECT name FROM pragma_table_info(?)").bind(table),
                };
                q.fetch_all(p).await
            }
            Pools::MySql(p) => {
                sqlx::query_scalar(
                    "SELECT CAST(column_name AS CHAR) FROM information_schema.columns \
                     WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?",
                )
                .bind(schema)
                .bind(table)
                .fetch_all(p)
                .await
            }
            Pools::Postgres(p) => {
                sqlx::query_scalar(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = COALESCE($1, current_schema()) AND table_name = $2",
                )
                .bind(schema)
                .bind(table)
                .fetch_all(p)
                .await
            }
        };
        result.map_err(|source| TableSinkError::Create {
            table: target.clone(),
            sql: "(existence check)".into(),
            source,
        })
    }

    async fn ensure_cached(
        &self,
        schema: &TableSchema,
        target: &TableName,
    ) -> Result<(), TableSinkError> {
        let key = (target.clone(), schema.version);
        if self.ensured.lock().expect("ensured set").contains(&key) {
            return Ok(());
        }
        self.ensure_table(schema, target).await?;
        self.ensured.lock().expect("ensured set").insert(key);
        Ok(())
    }

    /// Applies a batch (see the module docs). Returns after the batch's transaction committed;
    /// `ApplyStats::last_position` may then be acknowledged.
    pub async fn apply<E>(&self, events: &[E]) -> Result<ApplyStats, TableSinkError>
    where
        E: Borrow<ChangeEvent> + Sync,
    {
        self.apply_with(events, WritePlan::default()).await
    }

    /// [`apply`](Self::apply), with the batch redirected to `plan.target`, side rows written
    /// before and after it and a guard statement first, all in the batch's transaction (see
    /// [`WritePlan`]). `deleted_rows` counts the batch's deletes only.
    pub async fn apply_with<E>(
        &self,
        events: &[E],
        plan: WritePlan<'_>,
    ) -> Result<ApplyStats, TableSinkError>
    where
        E: Borrow<ChangeEvent> + Sync,
    {
        let mut stats = ApplyStats {
            events: events.len(),
            last_position: events.last().map(|e| e.borrow().position.clone()),
            ..ApplyStats::default()
        };
        if events.is_empty() && plan.before.is_empty() && plan.after.is_empty() {
            return Ok(stats);
        }
        let main = self.plan(events, plan.target, &mut stats)?;
        stats.tables = main.len();
        if self.options.create_tables {
            for p in &main {
                self.ensure_cached(&p.latest, &p.target).await?;
            }
        }
        for p in &main {
            for action in p.actions.iter().flatten() {
                match action.op {
                    WriteOp::Upsert => stats.upserts += 1,
                    WriteOp::Delete => stats.deletes += 1,
                }
            }
        }
        let before = self.side_plans(&plan.before)?;
        let after = self.side_plans(&plan.after)?;
        let main_from = before.len();
        let main_to = main_from + main.len();
        let plans: Vec<TablePlan> = before.into_iter().chain(main).chain(after).collect();
        let chunks = self.chunks(&plans);
        stats.statements = chunks.len();
        let dialect = self.dialect;
        let main_tables: Vec<&TableName> = plans[main_from..main_to]
            .iter()
            .map(|p| &p.target)
            .collect();
        let guard = plan.guard.as_ref();
        stats.deleted_rows =
            on_pool!(&self.pools, p => execute(p, dialect, &chunks, guard, &main_tables).await)?;
        Ok(stats)
    }

    /// Bound plans for side rows (journal and control rows).
    fn side_plans(&self, sides: &[SideRows]) -> Result<Vec<TablePlan>, TableSinkError> {
        let mut out = Vec::new();
        for side in sides {
            let mut plan = TablePlan::new(side.table.clone(), side.schema.clone());
            for row in &side.rows {
                let err = |reason: String| TableSinkError::Bookkeeping {
                    table: side.table.clone(),
                    reason,
                };
                let values = match side.op {
                    WriteOp::Upsert => side
                        .schema
                        .columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| bind::bind(self.dialect, c, v))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(err)?,
                    WriteOp::Delete => key_values(self.dialect, &side.schema, row).map_err(err)?,
                };
                let key = match side.op {
                    WriteOp::Upsert => key_of(&side.schema, |i| &values[i]),
                    WriteOp::Delete => key_of_keys(&values),
                }
                .map_err(err)?;
                let key_text = key.join("|");
                plan.record(
                    key,
                    Action {
                        op: side.op,
                        schema: side.schema.clone(),
                        key_text,
                        values,
                    },
                );
            }
            out.push(plan);
        }
        Ok(out)
    }

    /// Converts the batch and collapses it to one action per key, per target table.
    fn plan<E: Borrow<ChangeEvent>>(
        &self,
        events: &[E],
        redirect: Option<&TableName>,
        stats: &mut ApplyStats,
    ) -> Result<Vec<TablePlan>, TableSinkError> {
        // A DDL anywhere rejects the batch before anything is converted or written.
        if let Some(ddl) = events
            .iter()
            .map(Borrow::borrow)
            .find(|e| e.op == Operation::Ddl)
        {
            return Err(TableSinkError::Ddl {
                table: self.target_for(ddl.table()),
                source_table: ddl.table().clone(),
                position: Box::new(ddl.position.clone()),
                statement: ddl.ddl.as_deref().unwrap_or_default().into(),
            });
        }
        // Plans are per target table, so sources mapped onto one table collapse together.
        let mut plans: Vec<TablePlan> = Vec::new();
        let mut by_source: HashMap<&TableId, usize> = HashMap::new();
        let mut by_target: HashMap<TableName, usize> = HashMap::new();
        for event in events.iter().map(Borrow::borrow) {
            let i = match by_source.get(event.table()) {
                Some(i) => *i,
                None => {
                    let target = redirect
                        .cloned()
                        .unwrap_or_else(|| self.target_for(event.table()));
                    let i = *by_target.entry(target.clone()).or_insert_with(|| {
                        plans.push(TablePlan::new(target, event.schema.clone()));
                        plans.len() - 1
                    });
                    by_source.insert(event.table(), i);
                    i
                }
            };
            let plan = &mut plans[i];
            if plan.latest.version < event.schema.version {
                plan.latest = event.schema.clone();
            }
            if event.schema.primary_key.is_empty() {
                return Err(TableSinkError::NoPrimaryKey {
                    table: plan.target.clone(),
                    source_table: event.table().clone(),
                });
            }
            let row_error =
                |target: &TableName, op: &'static str, reason: String| TableSinkError::Row {
                    table: target.clone(),
                    op,
                    key: event.key_text(),
                    position: Box::new(event.position.clone()),
                    reason,
                };
            let schema = &event.schema;
            match event.op {
                Operation::Insert | Operation::Update | Operation::Read => {
                    let after = event.after.as_deref().ok_or_else(|| {
                        row_error(
                            &plan.target,
                            "upsert",
                            "the event has no after image".into(),
                        )
                    })?;
                    if after.len() != schema.columns.len() {
                        return Err(row_error(
                            &plan.target,
                            "upsert",
                            format!(
                                "the row has {} values for {} columns",
                                after.len(),
                                schema.columns.len()
                            ),
                        ));
                    }
                    let values = schema
                        .columns
                        .iter()
                        .zip(after)
                        .map(|(c, v)| bind::bind(self.dialect, c, v))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|reason| row_error(&plan.target, "upsert", reason))?;
                    let key = key_of(schema, |i| &values[i])
                        .map_err(|reason| row_error(&plan.target, "upsert", reason))?;
                    // An update that changes the key deletes the row under the old key.
                    if event.op == Operation::Update
                        && let Some(before) = event.before.as_deref()
                    {
                        let old = key_values(self.dialect, schema, before)
                            .map_err(|reason| row_error(&plan.target, "update", reason))?;
                        let old_key =
                            key_of_keys(&old).map_err(|r| row_error(&plan.target, "update", r))?;
                        if old_key != key {
                            let key_text = old_key.join("|");
                            stats.collapsed +=
                                plan.record(old_key, Action::delete(schema.clone(), key_text, old));
                        }
                    }
                    let key_text = key.join("|");
                    stats.collapsed += plan.record(
                        key,
                        Action {
                            op: WriteOp::Upsert,
                            schema: schema.clone(),
                            key_text,
                            values,
                        },
                    );
                }
                Operation::Delete => {
                    let before = event.before.as_deref().ok_or_else(|| {
                        row_error(
                            &plan.target,
                            "delete",
                            "the event has no before image".into(),
                        )
                    })?;
                    let values = key_values(self.dialect, schema, before)
                        .map_err(|reason| row_error(&plan.target, "delete", reason))?;
                    let key =
                        key_of_keys(&values).map_err(|r| row_error(&plan.target, "delete", r))?;
                    let key_text = key.join("|");
                    stats.collapsed +=
                        plan.record(key, Action::delete(schema.clone(), key_text, values));
                }
                Operation::Ddl => unreachable!("rejected above"),
            }
        }
        Ok(plans)
    }

    /// Splits the plans into statements: deletes, then upserts (their keys are disjoint after
    /// collapsing), grouped by schema version, chunked by bind parameters, rows and bytes.
    fn chunks<'p>(&self, plans: &'p [TablePlan]) -> Vec<Chunk<'p>> {
        let mut out = Vec::new();
        for plan in plans {
            for op in [WriteOp::Delete, WriteOp::Upsert] {
                let mut groups: Vec<(&'p Arc<TableSchema>, Vec<&'p Action>)> = Vec::new();
                for action in plan.actions.iter().flatten().filter(|a| a.op == op) {
                    match groups
                        .iter_mut()
                        .find(|(s, _)| Arc::ptr_eq(s, &action.schema) || **s == action.schema)
                    {
                        Some((_, rows)) => rows.push(action),
                        None => groups.push((&action.schema, vec![action])),
                    }
                }
                for (schema, rows) in groups {
                    let width = match op {
                        WriteOp::Upsert => schema.columns.len(),
                        WriteOp::Delete => schema.primary_key.len(),
                    }
                    .max(1);
                    let max_rows = (self.dialect.max_bind_params() / width)
                        .min(self.options.max_rows_per_statement)
                        .max(1);
                    let mut current: Vec<&Action> = Vec::new();
                    let mut bytes = 0usize;
                    for action in rows {
                        let size: usize = action.values.iter().map(Bound::size).sum();
                        if !current.is_empty()
                            && (current.len() >= max_rows
                                || bytes + size > self.options.max_statement_bytes)
                        {
                            out.push(Chunk::new(op, &plan.target, schema, current, max_rows));
                            current = Vec::new();
                            bytes = 0;
                        }
                        bytes += size;
                        current.push(action);
                    }
                    if !current.is_empty() {
                        out.push(Chunk::new(op, &plan.target, schema, current, max_rows));
                    }
                }
            }
        }
        out
    }

    /// The number of rows in `table`.
    pub async fn count_rows(&self, table: &TableName) -> Result<u64, TableSinkError> {
        let sql = self.dialect.count_sql(table);
        let count: Result<i64, sqlx::Error> = on_pool!(&self.pools, p =>
            sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(p).await);
        let count = count.map_err(|source| TableSinkError::Query {
            table: table.clone(),
            source,
        })?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// Reads every row of `table` back as values of `schema`'s columns, ordered by key.
    /// Decimals come back with the column's scale, timestamps with a zone as UTC instants
    /// (except on PostgreSQL, which also returns them in UTC).
    pub async fn fetch_rows(
        &self,
        schema: &TableSchema,
        table: &TableName,
    ) -> Result<Vec<Vec<Value>>, TableSinkError> {
        let sql = self.dialect.select_sql(table, schema);
        let dialect = self.dialect;
        let query_err = |source| TableSinkError::Query {
            table: table.clone(),
            source,
        };
        on_pool!(&self.pools, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await.map_err(query_err)?;
            rows.iter()
                .map(|row| {
                    schema
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| decode_value(row, i, &c.column_type, dialect))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err)
        })
    }

    /// `DROP TABLE IF EXISTS` (tests and tooling).
    pub async fn drop_table(&self, table: &TableName) -> Result<(), TableSinkError> {
        let sql = format!("DROP TABLE IF EXISTS {}", table.quoted(self.dialect));
        let result = on_pool!(&self.pools, p =>
            sqlx::query(AssertSqlSafe(sql)).execute(p).await.map(|_| ()));
        self.ensured
            .lock()
            .expect("ensured set")
            .retain(|(t, _)| t != table);
        result.map_err(|source| TableSinkError::Query {
            table: table.clone(),
            source,
        })
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        on_pool!(&self.pools, p => p.close().await)
    }
}

/// The collation that keeps keys exact: binary and, where the server has one, no-pad.
fn binary_collation(version: &str) -> &'static str {
    if version.to_ascii_lowercase().contains("mariadb") {
        return "utf8mb4_nopad_bin";
    }
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 8 {
        "utf8mb4_0900_bin"
    } else {
        "utf8mb4_bin"
    }
}

/// The last change for one key: an upsert (all columns) or a delete (key columns).
struct Action {
    op: WriteOp,
    schema: Arc<TableSchema>,
    key_text: String,
    values: Vec<Bound>,
}

impl Action {
    fn delete(schema: Arc<TableSchema>, key_text: String, values: Vec<Bound>) -> Self {
        Self {
            op: WriteOp::Delete,
            schema,
            key_text,
            values,
        }
    }
}

struct TablePlan {
    target: TableName,
    latest: Arc<TableSchema>,
    slots: HashMap<Vec<String>, usize>,
    actions: Vec<Option<Action>>,
}

impl TablePlan {
    fn new(target: TableName, schema: Arc<TableSchema>) -> Self {
        Self {
            target,
            latest: schema,
            slots: HashMap::new(),
            actions: Vec::new(),
        }
    }

    /// Records the action for `key`, superseding an earlier one; returns 1 if it did.
    fn record(&mut self, key: Vec<String>, action: Action) -> usize {
        self.actions.push(Some(action));
        match self.slots.insert(key, self.actions.len() - 1) {
            Some(old) => {
                self.actions[old] = None;
                1
            }
            None => 0,
        }
    }
}

/// The key columns of a full row image, bound.
fn key_values(dialect: Dialect, schema: &TableSchema, row: &[Value]) -> Result<Vec<Bound>, String> {
    schema
        .primary_key
        .iter()
        .map(|i| {
            let column = &schema.columns[*i];
            let value = row
                .get(*i)
                .ok_or_else(|| format!("the row image lacks key column `{}`", column.name))?;
            bind::bind(dialect, column, value)
        })
        .collect()
}

fn key_of<'a>(
    schema: &TableSchema,
    value: impl Fn(usize) -> &'a Bound,
) -> Result<Vec<String>, String> {
    schema
        .primary_key
        .iter()
        .map(|i| canonical_key_part(value(*i), &schema.columns[*i].name))
        .collect()
}

fn key_of_keys(values: &[Bound]) -> Result<Vec<String>, String> {
    values
        .iter()
        .map(|v| canonical_key_part(v, "key"))
        .collect()
}

fn canonical_key_part(value: &Bound, column: &str) -> Result<String, String> {
    match value {
        Bound::Null(_) => Err(format!("primary-key column `{column}` is NULL")),
        v => Ok(v.canonical()),
    }
}

/// One statement's worth of rows.
struct Chunk<'p> {
    op: WriteOp,
    table: &'p TableName,
    schema: &'p TableSchema,
    rows: Vec<&'p Action>,
    /// Full-size chunks are prepared once per connection and reused; the odd-sized last chunk
    /// of a batch is not cached.
    persistent: bool,
}

impl<'p> Chunk<'p> {
    fn new(
        op: WriteOp,
        table: &'p TableName,
        schema: &'p TableSchema,
        rows: Vec<&'p Action>,
        max_rows: usize,
    ) -> Self {
        let persistent = rows.len() == max_rows || rows.len() == 1;
        Self {
            op,
            table,
            schema,
            rows,
            persistent,
        }
    }

    fn sql(&self, dialect: Dialect, rows: usize) -> String {
        match self.op {
            WriteOp::Upsert => dialect.upsert_sql(self.table, self.schema, rows),
            WriteOp::Delete => dialect.delete_sql(self.table, self.schema, rows),
        }
    }

    fn error(&self, key: Option<String>, source: sqlx::Error) -> TableSinkError {
        let first = self
            .rows
            .first()
            .map(|a| a.key_text.clone())
            .unwrap_or_default();
        let last = self
            .rows
            .last()
            .map(|a| a.key_text.clone())
            .unwrap_or_default();
        TableSinkError::Write {
            table: self.table.clone(),
            op: self.op,
            rows: self.rows.len(),
            key,
            keys: if first == last {
                first
            } else {
                format!("{first} … {last}")
            },
            source: Box::new(source),
        }
    }
}

/// What the executor needs from a driver beyond sqlx's generic traits.
pub(super) trait Backend: sqlx::Database + sqlx::database::HasStatementCache {
    fn add(args: &mut Self::Arguments, value: &Bound) -> Result<(), BoxDynError>;
    fn affected(result: &Self::QueryResult) -> u64;
}

macro_rules! impl_backend {
    ($db:ty) => {
        impl Backend for $db {
            fn add(args: &mut Self::Arguments, value: &Bound) -> Result<(), BoxDynError> {
                match value {
                    Bound::Null(kind) => match kind {
                        Kind::Bool => args.add(None::<bool>),
                        Kind::Int => args.add(None::<i64>),
                        Kind::Float => args.add(None::<f64>),
                        Kind::Text => args.add(None::<String>),
                        Kind::Bytes => args.add(None::<Vec<u8>>),
                        Kind::Date => args.add(None::<NaiveDate>),
                        Kind::Timestamp => args.add(None::<NaiveDateTime>),
                        Kind::TimestampTz => args.add(None::<DateTime<Utc>>),
                    },
                    Bound::Bool(v) => args.add(*v),
                    Bound::Int(v) => args.add(*v),
                    Bound::Float(v) => args.add(*v),
                    Bound::Text(v) => args.add(v.as_str()),
                    Bound::Bytes(v) => args.add(v.as_slice()),
                    Bound::Date(v) => args.add(*v),
                    Bound::Timestamp(v) => args.add(*v),
                    Bound::TimestampTz(v) => args.add(*v),
                }
            }

            fn affected(result: &Self::QueryResult) -> u64 {
                result.rows_affected()
            }
        }
    };
}

impl_backend!(MySql);
impl_backend!(Postgres);
impl_backend!(Sqlite);

/// Runs the chunks, in one transaction where the dialect has them. Returns the rows deleted.
async fn execute<DB>(
    pool: &sqlx::Pool<DB>,
    dialect: Dialect,
    chunks: &[Chunk<'_>],
    guard: Option<&Guard>,
    main_tables: &[&TableName],
) -> Result<u64, TableSinkError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let counts =
        |chunk: &Chunk<'_>| chunk.op == WriteOp::Delete && main_tables.contains(&chunk.table);
    let mut deleted = 0;
    if !dialect.transactional() {
        let mut conn = pool
            .acquire()
            .await
            .map_err(|source| TableSinkError::Transaction {
                what: "acquire",
                source,
            })?;
        if let Some(guard) = guard {
            run_guard::<DB>(&mut conn, guard).await?;
        }
        for chunk in chunks {
            let n = run_chunk::<DB>(&mut conn, dialect, chunk, &chunk.rows, chunk.persistent)
                .await
                .map_err(|e| chunk.error(None, e))?;
            if counts(chunk) {
                deleted += n;
            }
        }
        return Ok(deleted);
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(|source| TableSinkError::Transaction {
            what: "begin",
            source,
        })?;
    if let Some(guard) = guard
        && let Err(e) = run_guard::<DB>(&mut tx, guard).await
    {
        let _ = tx.rollback().await;
        return Err(e);
    }
    for chunk in chunks {
        match run_chunk::<DB>(&mut tx, dialect, chunk, &chunk.rows, chunk.persistent).await {
            Ok(n) => {
                if counts(chunk) {
                    deleted += n;
                }
            }
            Err(e) => {
                let _ = tx.rollback().await;
                let key = if chunk.rows.len() > 1 {
                    diagnose::<DB>(pool, dialect, chunk).await
                } else {
                    chunk.rows.first().map(|a| a.key_text.clone())
                };
                return Err(chunk.error(key, e));
            }
        }
    }
    tx.commit()
        .await
        .map_err(|source| TableSinkError::Transaction {
            what: "commit",
            source,
        })?;
    Ok(deleted)
}

/// Runs the guard; no row updated means the state changed: [`TableSinkError::Fenced`].
async fn run_guard<DB>(conn: &mut DB::Connection, guard: &Guard) -> Result<(), TableSinkError>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let affected = exec_one::<DB>(conn, &guard.sql, &guard.args)
        .await
        .map_err(|source| TableSinkError::Query {
            table: guard.table.clone(),
            source,
        })?;
    if affected == 0 {
        return Err(TableSinkError::Fenced {
            table: guard.table.clone(),
            expected: guard.expected.clone(),
        });
    }
    Ok(())
}

/// Runs one statement with bound arguments; returns the rows it affected.
pub(super) async fn exec_one<DB>(
    conn: &mut DB::Connection,
    sql: &str,
    args: &[Bound],
) -> Result<u64, sqlx::Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut a = DB::Arguments::default();
    for v in args {
        DB::add(&mut a, v).map_err(sqlx::Error::Encode)?;
    }
    let result = sqlx::query_with::<DB, _>(AssertSqlSafe(sql.to_string()), a)
        .execute(&mut *conn)
        .await?;
    Ok(DB::affected(&result))
}

/// Replays a failed chunk row by row in a transaction that is rolled back, to name the key the
/// database refuses. `None` when every row passes alone (the chunk failed as a whole).
async fn diagnose<DB>(pool: &sqlx::Pool<DB>, dialect: Dialect, chunk: &Chunk<'_>) -> Option<String>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let mut tx = pool.begin().await.ok()?;
    let mut culprit = None;
    for row in &chunk.rows {
        if run_chunk::<DB>(&mut tx, dialect, chunk, std::slice::from_ref(row), true)
            .await
            .is_err()
        {
            culprit = Some(row.key_text.clone());
            break;
        }
    }
    let _ = tx.rollback().await;
    culprit
}

async fn run_chunk<DB>(
    conn: &mut DB::Connection,
    dialect: Dialect,
    chunk: &Chunk<'_>,
    rows: &[&Action],
    persistent: bool,
) -> Result<u64, sqlx::Error>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
{
    let sql = chunk.sql(dialect, rows.len());
    let mut args = DB::Arguments::default();
    let width = rows.first().map_or(0, |r| r.values.len());
    args.reserve(
        rows.len() * width,
        rows.iter().flat_map(|r| &r.values).map(Bound::size).sum(),
    );
    for row in rows {
        for value in &row.values {
            DB::add(&mut args, value).map_err(sqlx::Error::Encode)?;
        }
    }
    let result = sqlx::query_with::<DB, _>(AssertSqlSafe(sql), args)
        .persistent(persistent)
        .execute(&mut *conn)
        .await?;
    Ok(DB::affected(&result))
}

/// Reads column `i` as a value of `ty`, undoing the storage choices of each dialect.
fn decode_value<R>(
    row: &R,
    i: usize,
    ty: &ColumnType,
    dialect: Dialect,
) -> Result<Value, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<NaiveDate>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<NaiveDateTime>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let decode_err = |reason: String| sqlx::Error::ColumnDecode {
        index: i.to_string(),
        source: reason.into(),
    };
    let value = match ty {
        ColumnType::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
        ColumnType::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
        ColumnType::Float => row.try_get::<Option<f64>, _>(i)?.map(Value::Float),
        ColumnType::Decimal { .. } => match row.try_get::<Option<String>, _>(i)? {
            Some(text) => Some(Value::Decimal(
                Decimal::parse(&text).map_err(|e| decode_err(e.to_string()))?,
            )),
            None => None,
        },
        ColumnType::String { .. } => row.try_get::<Option<String>, _>(i)?.map(Value::String),
        ColumnType::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
        ColumnType::Date => row.try_get::<Option<NaiveDate>, _>(i)?.map(Value::Date),
        ColumnType::Timestamp => row
            .try_get::<Option<NaiveDateTime>, _>(i)?
            .map(Value::Timestamp),
        ColumnType::TimestampTz => match bind::kind_of(dialect, ty) {
            Kind::Timestamp => row
                .try_get::<Option<NaiveDateTime>, _>(i)?
                .map(|t| Value::TimestampTz(t.and_utc().fixed_offset())),
            _ => row
                .try_get::<Option<DateTime<Utc>>, _>(i)?
                .map(|t| Value::TimestampTz(t.fixed_offset())),
        },
        ColumnType::Array(_) => match row.try_get::<Option<String>, _>(i)? {
            Some(text) => {
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| decode_err(e.to_string()))?;
                Some(bind::value_from_json(&json, ty).map_err(decode_err)?)
            }
            None => None,
        },
    };
    Ok(value.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::binary_collation;

    #[test]
    fn picks_a_no_pad_binary_collation() {
        assert_eq!(
            binary_collation("10.11.6-MariaDB-0+deb12u1"),
            "utf8mb4_nopad_bin"
        );
        assert_eq!(binary_collation("8.0.36"), "utf8mb4_0900_bin");
        assert_eq!(binary_collation("5.7.44-log"), "utf8mb4_bin");
    }
}
