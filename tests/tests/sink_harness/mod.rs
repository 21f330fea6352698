//! Shared by `breaker.rs` and `shadow.rs`: a sink database of the test's own (MariaDB database
//! or PostgreSQL schema), the product's writer and applier on it, generated change events and
//! a model of what the table must hold.
#![allow(dead_code)]

use anyhow::Context;
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use syncmesh_connectors::event::{
    ChangeEvent, Column, ColumnType, Decimal, Operation, Position, TableId, TableSchema, Value,
};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::paths::batch::{ShadowOptions, SinkApplier};
use syncmesh_connectors::sinks::breaker::{BreakerConfig, BreakerMetrics, Breakers, ManualClock};
use syncmesh_connectors::sinks::table::{ShadowTable, TableName, TableSinkOptions, TableWriter};
use syncmesh_tests::sql::{MysqlScratch, PgScratch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    MariaDb,
    Postgres,
}

enum Scratch {
    My(MysqlScratch),
    Pg(PgScratch, String),
}

/// A database of the test's own on one of the servers.
pub struct Sink {
    pub kind: Kind,
    scratch: Scratch,
}

impl Sink {
    pub async fn mariadb(server_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            kind: Kind::MariaDb,
            scratch: Scratch::My(MysqlScratch::create(server_url, "breaker").await?),
        })
    }

    pub async fn postgres(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            kind: Kind::Postgres,
            scratch: Scratch::Pg(PgScratch::create(url, "breaker").await?, url.to_string()),
        })
    }

    /// The URL and options the product's writer connects with.
    pub fn url_and_options(&self) -> (String, TableSinkOptions) {
        match &self.scratch {
            Scratch::My(s) => (s.url.clone(), TableSinkOptions::default()),
            Scratch::Pg(s, url) => (
                url.clone(),
                TableSinkOptions {
                    schema: Some(s.schema.clone()),
                    ..TableSinkOptions::default()
                },
            ),
        }
    }

    pub async fn writer(&self) -> anyhow::Result<Arc<TableWriter>> {
        let (url, options) = self.url_and_options();
        Ok(Arc::new(TableWriter::connect(&url, options).await?))
    }

    /// Runs one statement on the test's own connection.
    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        match &self.scratch {
            Scratch::My(s) => sqlx::query(AssertSqlSafe(sql.to_string()))
                .execute(&s.pool)
                .await
                .map(|_| ()),
            Scratch::Pg(s, _) => sqlx::query(AssertSqlSafe(sql.to_string()))
                .execute(&s.pool)
                .await
                .map(|_| ()),
        }
        .with_context(|| sql.to_string())
    }

    /// `SELECT COUNT(*)` on the test's own connection (used by the reader during swaps).
    pub async fn count(&self, table: &str) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        match &self.scratch {
            Scratch::My(s) => {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&s.pool)
                    .await
            }
            Scratch::Pg(s, _) => {
                sqlx::query_scalar(AssertSqlSafe(sql))
                    .fetch_one(&s.pool)
                    .await
            }
        }
    }

    /// Real latency in the sink: every write to `table` first sleeps `slow_cfg.ms` (per row on
    /// MariaDB, whose triggers are row triggers; per statement on PostgreSQL).
    pub async fn install_latency(&self, table: &str) -> anyhow::Result<()> {
        let cfg = self.qualified("slow_cfg");
        self.exec(&format!("CREATE TABLE {cfg} (ms INT NOT NULL)"))
            .await?;
        self.exec(&format!("INSERT INTO {cfg} VALUES (0)")).await?;
        match self.kind {
            Kind::MariaDb => {
                for op in ["INSERT", "UPDATE", "DELETE"] {
                    self.exec(&format!(
                        "CREATE TRIGGER {table}_slow_{op} BEFORE {op} ON {table} FOR EACH ROW \
                         SET @syncmesh_slept = SLEEP((SELECT ms FROM slow_cfg) / 1000)"
                    ))
                    .await?;
                }
            }
            Kind::Postgres => {
                self.exec(&format!(
                    "CREATE FUNCTION {} () RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN PERFORM pg_sleep((SELECT ms FROM {cfg}) / 1000.0); RETURN NULL; END $$",
                    self.qualified("slow_sink")
                ))
                .await?;
                self.exec(&format!(
                    "CREATE TRIGGER {table}_slow BEFORE INSERT OR UPDATE OR DELETE ON {table} \
                     FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                    self.qualified("slow_sink")
                ))
                .await?;
            }
        }
        Ok(())
    }

    /// `name` in the test's own schema (PostgreSQL: the writer's sessions do not search it).
    pub fn qualified(&self, name: &str) -> String {
        match &self.scratch {
            Scratch::My(_) => name.to_string(),
            Scratch::Pg(s, _) => format!("\"{}\".{name}", s.schema),
        }
    }

    /// Sets the injected latency: per row on MariaDB, per statement on PostgreSQL.
    pub async fn set_latency(&self, ms: u32) -> anyhow::Result<()> {
        self.exec(&format!(
            "UPDATE {} SET ms = {ms}",
            self.qualified("slow_cfg")
        ))
        .await
    }

    pub async fn drop(self) -> anyhow::Result<()> {
        match self.scratch {
            Scratch::My(s) => s.drop_database().await,
            Scratch::Pg(s, _) => s.drop_schema().await,
        }
    }
}

pub fn schema() -> Arc<TableSchema> {
    let col = |name: &str, column_type, nullable| Column {
        name: name.into(),
        column_type,
        nullable,
    };
    Arc::new(TableSchema {
        table: TableId::new("bank", "accounts"),
        version: 1,
        columns: vec![
            col("id", ColumnType::Int, false),
            col(
                "name",
                ColumnType::String {
                    max_length: Some(40),
                },
                true,
            ),
            col(
                "balance",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 2,
                },
                true,
            ),
        ],
        primary_key: vec![0],
    })
}

/// Generates numbered events and keeps the model of the table they produce.
#[derive(Default, Clone)]
pub struct Events {
    n: u64,
    /// id → (name, balance): what the table must hold after every event so far.
    pub model: BTreeMap<i64, (String, String)>,
}

impl Events {
    fn event(&mut self, op: Operation, row: Vec<Value>) -> ChangeEvent {
        self.n += 1;
        let (before, after) = match op {
            Operation::Delete => (Some(row), None),
            _ => (None, Some(row)),
        };
        ChangeEvent {
            source: Arc::from("breaker-test"),
            position: Position::File {
                file: "breaker".into(),
                offset: self.n,
                length: 1,
                record: self.n,
            },
            transaction: None,
            schema: schema(),
            op,
            before,
            after,
            ddl: None,
        }
    }

    /// An upsert of `id` with a name and balance that depend on the event number (so every
    /// update changes the row).
    pub fn upsert(&mut self, id: i64) -> Arc<ChangeEvent> {
        let name = format!("acct-{id}-v{}-é", self.n + 1);
        let balance = format!("{}.{:02}", id * 100 + self.n as i64, self.n % 100);
        self.model.insert(id, (name.clone(), balance.clone()));
        let op = if self.model.len().is_multiple_of(2) {
            Operation::Update
        } else {
            Operation::Insert
        };
        let row = vec![
            Value::Int(id),
            Value::String(name),
            Value::Decimal(Decimal::parse(&balance).expect("generated decimal")),
        ];
        Arc::new(self.event(op, row))
    }

    pub fn delete(&mut self, id: i64) -> Arc<ChangeEvent> {
        self.model.remove(&id);
        Arc::new(self.event(
            Operation::Delete,
            vec![Value::Int(id), Value::Null, Value::Null],
        ))
    }

    /// A batch of upserts of `ids`.
    pub fn upserts(&mut self, ids: impl IntoIterator<Item = i64>) -> Vec<Arc<ChangeEvent>> {
        ids.into_iter().map(|id| self.upsert(id)).collect()
    }

    /// A mixed batch: updates of `update`, deletes of `delete`, inserts of `insert`.
    pub fn mixed(
        &mut self,
        update: &[i64],
        delete: &[i64],
        insert: &[i64],
    ) -> Vec<Arc<ChangeEvent>> {
        let mut out: Vec<_> = update.iter().map(|id| self.upsert(*id)).collect();
        out.extend(delete.iter().map(|id| self.delete(*id)));
        out.extend(insert.iter().map(|id| self.upsert(*id)));
        out
    }

    pub fn rows(&self) -> Vec<Vec<Value>> {
        self.model
            .iter()
            .map(|(id, (name, balance))| {
                vec![
                    Value::Int(*id),
                    Value::String(name.clone()),
                    Value::Decimal(Decimal::parse(balance).expect("model decimal")),
                ]
            })
            .collect()
    }
}

/// Every row of `table`, compared with `expected` row by row.
pub async fn assert_rows(
    writer: &TableWriter,
    table: &TableName,
    expected: &[Vec<Value>],
    what: &str,
) -> anyhow::Result<()> {
    let rows = writer.fetch_rows(&schema(), table).await?;
    if rows.len() != expected.len() {
        anyhow::bail!(
            "{what}: {table} holds {} rows, expected {}",
            rows.len(),
            expected.len()
        );
    }
    for (got, want) in rows.iter().zip(expected) {
        anyhow::ensure!(
            got == want,
            "{what}: {table} row {got:?}, expected {want:?}"
        );
    }
    Ok(())
}

pub struct Harness {
    pub writer: Arc<TableWriter>,
    pub clock: Arc<ManualClock>,
    pub breakers: Arc<Breakers>,
    pub metrics: Arc<Metrics>,
    pub applier: SinkApplier,
    pub st: ShadowTable,
}

/// Breaker thresholds of the tests: the latency threshold is far from both the healthy write
/// time and the injected latency, so a loaded machine does not flip the outcome.
pub fn config() -> BreakerConfig {
    BreakerConfig {
        latency_threshold: Duration::from_millis(400),
        min_samples: 2,
        window: Duration::from_secs(60),
        cool_down: Duration::from_secs(30),
        probes_to_close: 2,
        ..BreakerConfig::default()
    }
}

impl Harness {
    /// A fresh applier (and breakers, and clock) on `writer`: what a restarted worker has.
    pub fn new(writer: Arc<TableWriter>) -> Self {
        Self::with_config(writer, config())
    }

    pub fn with_config(writer: Arc<TableWriter>, config: BreakerConfig) -> Self {
        let clock = Arc::new(ManualClock::default());
        let metrics = Arc::new(Metrics::new());
        let breakers = Arc::new(Breakers::new(
            config,
            clock.clone(),
            Some(BreakerMetrics::from_metrics("breaker-test", &metrics)),
        ));
        let applier = SinkApplier::new(
            writer.clone(),
            "breaker-test",
            metrics.clone(),
            breakers.clone(),
            ShadowOptions {
                replay_page: 7,
                ..ShadowOptions::default()
            },
        );
        let st = ShadowTable::new(writer.target_for(&schema().table));
        Self {
            writer,
            clock,
            breakers,
            metrics,
            applier,
            st,
        }
    }

    pub async fn apply(&mut self, events: &[Arc<ChangeEvent>]) -> anyhow::Result<()> {
        self.applier
            .apply_events(&schema().table, events)
            .await
            .context("applying a batch")
    }

    pub fn breaker(&self) -> Arc<syncmesh_connectors::sinks::breaker::Breaker> {
        self.breakers
            .get_or_create(&self.st.table.to_string(), &self.st.shadow.to_string())
    }
}
