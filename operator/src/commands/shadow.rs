//! `syncmesh shadow promote|rollback|release`: a human's decisions about the shadow table of
//! a sink table whose circuit breaker diverted writes (see docs/breaker.md). Each prints what
//! it did as JSON; a refusal (no shadow, breaker closed, already promoted, ...) exits 1 with
//! the reason; a bad URL exits 2.

use crate::Failure;
use anyhow::Context;
use clap::{Args, Subcommand};
use syncmesh_connectors::sinks::table::promote::{self, ShadowError, ShadowOutcome};
use syncmesh_connectors::sinks::table::{
    ShadowTable, TableName, TableSinkError, TableSinkOptions, TableWriter,
};

#[derive(Subcommand)]
pub enum ShadowCommand {
    /// Swap `<table>_shadow` in place of `<table>` atomically; the table is kept as
    /// `<table>_old` until `release` (or put back by `rollback`).
    Promote(ShadowArgs),
    /// Undo a promotion: `<table>_old` goes back in place, the promoted table becomes the
    /// shadow again and the breaker reopens (the journal replays into the table on recovery).
    Rollback(ShadowArgs),
    /// Confirm a promotion: drop `<table>_old` and the diversion journal; the breaker closes.
    Release(ShadowArgs),
}

#[derive(Args)]
pub struct ShadowArgs {
    /// The sink database URL (`mysql://`, `mariadb://`, `postgres://`, `sqlite://`,
    /// `starrocks://`).
    #[arg(long, env = "SYNCMESH_SINK_URL")]
    pub sink: String,
    /// The sink table (as the pipeline writes it, without `_shadow`).
    #[arg(long)]
    pub table: String,
    /// The schema (PostgreSQL) or database (MySQL) of the table; default: the connection's.
    #[arg(long)]
    pub schema: Option<String>,
}

pub async fn run(cmd: ShadowCommand) -> Result<(), Failure> {
    let (action, args): (&str, ShadowArgs) = match cmd {
        ShadowCommand::Promote(a) => ("promote", a),
        ShadowCommand::Rollback(a) => ("rollback", a),
        ShadowCommand::Release(a) => ("release", a),
    };
    if args.table.trim().is_empty() || args.table.ends_with("_shadow") {
        return Err(Failure::bad_input(anyhow::anyhow!(
            "--table: name the table itself (`accounts`), not its shadow: got `{}`",
            args.table
        )));
    }
    let writer = TableWriter::connect(&args.sink, TableSinkOptions::default())
        .await
        .map_err(|e| match e {
            TableSinkError::Url { .. } => Failure::bad_input(e),
            e => Failure::failed(e),
        })?;
    let st = ShadowTable::new(TableName {
        schema: args.schema.clone(),
        table: args.table.clone(),
    });
    let result = match action {
        "promote" => promote::promote(&writer, &st).await,
        "rollback" => promote::rollback(&writer, &st).await,
        _ => promote::release(&writer, &st).await,
    };
    writer.close().await;
    let outcome: ShadowOutcome = result.map_err(|e| match e {
        e @ ShadowError::Refused { .. } => Failure::failed(e),
        e => Failure::failed(anyhow::Error::new(e).context(format!("shadow {action}"))),
    })?;
    let json = serde_json::to_string_pretty(&outcome)
        .context("rendering the outcome")
        .map_err(Failure::failed)?;
    println!("{json}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, table: &str) -> ShadowArgs {
        ShadowArgs {
            sink: url.into(),
            table: table.into(),
            schema: None,
        }
    }

    #[tokio::test]
    async fn refusals_exit_1_and_bad_urls_exit_2() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sink.db").display());
        let f = run(ShadowCommand::Promote(args(&url, "accounts")))
            .await
            .unwrap_err();
        assert_eq!(f.code, crate::EXIT_FAILED);
        assert!(
            f.error.to_string().contains("never opened"),
            "{:#}",
            f.error
        );
        let f = run(ShadowCommand::Release(args("oracle://x/y", "accounts")))
            .await
            .unwrap_err();
        assert_eq!(f.code, crate::EXIT_BAD_INPUT);
        let f = run(ShadowCommand::Rollback(args(&url, "accounts_shadow")))
            .await
            .unwrap_err();
        assert_eq!(f.code, crate::EXIT_BAD_INPUT);
    }

    /// SQLite end to end: the product's applier diverts after three failed checks (the shadow
    /// is created from the source schema, SQLite having no `CREATE TABLE LIKE`, and seeded),
    /// then the command promotes it and releases the previous table.
    #[tokio::test]
    async fn promotes_and_releases_a_sqlite_shadow() {
        use std::sync::Arc;
        use syncmesh_connectors::event::{
            ChangeEvent, Column, ColumnType, Operation, Position, TableId, TableSchema, Value,
        };
        use syncmesh_connectors::metrics::Metrics;
        use syncmesh_connectors::paths::batch::{ShadowOptions, SinkApplier};
        use syncmesh_connectors::sinks::breaker::{BreakerConfig, Breakers, SystemClock};

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("sink.db").display());
        let schema = Arc::new(TableSchema {
            table: TableId::new("bank", "accounts"),
            version: 1,
            columns: vec![
                Column {
                    name: "name".into(),
                    column_type: ColumnType::String { max_length: None },
                    nullable: true,
                },
                Column {
                    name: "id".into(),
                    column_type: ColumnType::Int,
                    nullable: false,
                },
            ],
            primary_key: vec![1],
        });
        let event = |id: i64, name: &str| {
            Arc::new(ChangeEvent {
                source: Arc::from("t"),
                position: Position::File {
                    file: "f".into(),
                    offset: id as u64,
                    length: 1,
                    record: id as u64,
                },
                transaction: None,
                schema: schema.clone(),
                op: Operation::Insert,
                before: None,
                after: Some(vec![Value::String(name.into()), Value::Int(id)]),
                ddl: None,
            })
        };
        let writer = Arc::new(
            TableWriter::connect(&url, TableSinkOptions::default())
                .await
                .unwrap(),
        );
        let breakers = Arc::new(Breakers::new(
            BreakerConfig::default(),
            Arc::new(SystemClock),
            None,
        ));
        let mut applier = SinkApplier::new(
            writer.clone(),
            "p",
            Arc::new(Metrics::new()),
            breakers.clone(),
            ShadowOptions::default(),
        );
        let table = schema.table.clone();
        applier
            .apply_events(&table, &[event(1, "one"), event(2, "two")])
            .await
            .unwrap();
        let breaker = breakers.get_or_create("accounts", "accounts_shadow");
        for _ in 0..3 {
            breaker.record_check(false);
        }
        applier
            .apply_events(&table, &[event(2, "deux"), event(3, "trois")])
            .await
            .unwrap();
        let st = ShadowTable::new(TableName::new("accounts"));
        assert_eq!(writer.count_rows(&st.table).await.unwrap(), 2);
        assert_eq!(writer.count_rows(&st.shadow).await.unwrap(), 3);

        run(ShadowCommand::Promote(args(&url, "accounts")))
            .await
            .unwrap();
        let rows = writer.fetch_rows(&schema, &st.table).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1][0], Value::String("deux".into()));
        assert_eq!(writer.count_rows(&st.old).await.unwrap(), 2);
        run(ShadowCommand::Release(args(&url, "accounts")))
            .await
            .unwrap();
        assert!(!writer.table_exists(&st.old).await.unwrap());
        let f = run(ShadowCommand::Rollback(args(&url, "accounts")))
            .await
            .unwrap_err();
        assert!(
            f.error.to_string().contains("breaker is closed"),
            "{:#}",
            f.error
        );
    }
}
