//! The table sink against real databases: SQLite always (a temp dir), MariaDB/MySQL when
//! `SYNCMESH_MYSQL_URL` is set, PostgreSQL when `SYNCMESH_POSTGRES_URL` is set. Without the
//! variables those tests print that they skipped, unless `SYNCMESH_REQUIRE_SERVICES=1`, which
//! makes a missing service a failure. Every test uses its own uniquely named tables.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use syncmesh_connectors::event::{
    ChangeEvent, Column, ColumnType, Decimal, Operation, Position, TableId, TableSchema,
    Transaction, Value,
};
use syncmesh_connectors::sinks::table::{
    Dialect, EnsureOutcome, TableName, TableSinkError, TableSinkOptions, TableWriter, WriteOp,
};

// ---------------------------------------------------------------------------------------------
// fixtures

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

fn col(name: &str, column_type: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        column_type,
        nullable,
    }
}

/// Every column type the event model has.
fn wide_schema(table: &str) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("bank", table),
        version: 1,
        columns: vec![
            col("id", ColumnType::Int, false),
            col(
                "name",
                ColumnType::String {
                    max_length: Some(100),
                },
                true,
            ),
            col(
                "balance",
                ColumnType::Decimal {
                    precision: 18,
                    scale: 2,
                },
                true,
            ),
            col(
                "big",
                ColumnType::Decimal {
                    precision: 38,
                    scale: 10,
                },
                true,
            ),
            col("photo", ColumnType::Bytes, true),
            col("born", ColumnType::Date, true),
            col("updated", ColumnType::Timestamp, true),
            col("seen", ColumnType::TimestampTz, true),
            col("active", ColumnType::Bool, true),
            col("score", ColumnType::Float, true),
            col(
                "tags",
                ColumnType::Array(Box::new(ColumnType::String { max_length: None })),
                true,
            ),
            col("note", ColumnType::String { max_length: None }, true),
        ],
        primary_key: vec![0],
    })
}

fn dec(text: &str) -> Value {
    Value::Decimal(Decimal::parse(text).unwrap())
}

fn ts(text: &str) -> Value {
    Value::Timestamp(NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").unwrap())
}

fn tstz(text: &str) -> Value {
    Value::TimestampTz(DateTime::parse_from_rfc3339(text).unwrap())
}

fn wide_row(id: i64) -> Vec<Value> {
    match id % 3 {
        0 => vec![
            Value::Int(id),
            Value::String(format!("Zürich — 東京 🚀 #{id}")),
            dec("-0.01"),
            dec("1234567890123456789012345678.0123456789"),
            Value::Bytes(vec![0, 255, 1, 254, b'\n', 0]),
            Value::Date(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            ts("2024-02-29 23:59:59.123456"),
            tstz("2024-03-31T01:30:00.654321+02:00"),
            Value::Bool(true),
            Value::Float(-1.5e-300),
            Value::Array(vec![
                Value::String("a\"b".into()),
                Value::Null,
                Value::String("ü".into()),
            ]),
            Value::String("it's a \\ 'quoted' \"note\"".into()),
        ],
        1 => vec![
            Value::Int(id),
            Value::String(String::new()),
            dec("12345678901.23"),
            dec("-0.0000000001"),
            Value::Bytes(Vec::new()),
            Value::Date(NaiveDate::from_ymd_opt(2999, 12, 31).unwrap()),
            ts("1999-12-31 00:00:00"),
            tstz("2000-01-01T00:00:00Z"),
            Value::Bool(false),
            Value::Float(0.1),
            Value::Array(Vec::new()),
            Value::String("x".repeat(3000)),
        ],
        _ => {
            let mut row = vec![Value::Null; 12];
            row[0] = Value::Int(id);
            row
        }
    }
}

fn event(
    schema: &Arc<TableSchema>,
    op: Operation,
    before: Option<Vec<Value>>,
    after: Option<Vec<Value>>,
    n: u64,
) -> ChangeEvent {
    ChangeEvent {
        source: Arc::from("test"),
        position: Position::tidb(n, 0),
        transaction: Some(Transaction {
            id: format!("tx{n}"),
            commit_time: None,
        }),
        schema: schema.clone(),
        op,
        before,
        after,
        ddl: None,
    }
}

fn insert(schema: &Arc<TableSchema>, row: Vec<Value>, n: u64) -> ChangeEvent {
    event(schema, Operation::Insert, None, Some(row), n)
}

fn update(schema: &Arc<TableSchema>, before: Vec<Value>, after: Vec<Value>, n: u64) -> ChangeEvent {
    event(schema, Operation::Update, Some(before), Some(after), n)
}

fn delete(schema: &Arc<TableSchema>, before: Vec<Value>, n: u64) -> ChangeEvent {
    event(schema, Operation::Delete, Some(before), None, n)
}

fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_key(|r| match r[0] {
        Value::Int(i) => i,
        _ => i64::MIN,
    });
    rows
}

// ---------------------------------------------------------------------------------------------
// services

enum Service {
    Sqlite(tempfile::TempDir),
    Url(String),
}

fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var("SYNCMESH_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} is not set and SYNCMESH_REQUIRE_SERVICES=1");
            }
            eprintln!("SKIPPED: {var} is not set (source /tmp/syncmesh-services/env.sh to run it)");
            None
        }
    }
}

async fn connect(service: &Service, options: TableSinkOptions) -> TableWriter {
    let url = match service {
        Service::Sqlite(dir) => format!("sqlite://{}", dir.path().join("sink.db").display()),
        Service::Url(url) => url.clone(),
    };
    TableWriter::connect(&url, options)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

// ---------------------------------------------------------------------------------------------
// the suite, run against each database

async fn suite(service: Service) {
    let writer = connect(&service, TableSinkOptions::default()).await;
    replay_upsert_delete_and_round_trip(&writer).await;
    collapsing_and_key_changes(&writer).await;
    composite_keys(&writer).await;
    ddl_and_bad_values_write_nothing(&writer).await;
    database_errors_name_the_key(&writer).await;
    ensure_table_checks_existing_tables(&writer).await;
    large_batches_are_chunked(&writer).await;
    writer.close().await;
}

async fn replay_upsert_delete_and_round_trip(writer: &TableWriter) {
    let name = unique("wide");
    let schema = wide_schema(&name);
    let target = writer.target_for(&schema.table);
    assert_eq!(target, TableName::new(name.clone()));
    writer.drop_table(&target).await.unwrap();

    let rows: Vec<Vec<Value>> = (1..=9).map(wide_row).collect();
    let batch: Vec<ChangeEvent> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| insert(&schema, r.clone(), i as u64))
        .collect();
    let stats = writer.apply(&batch).await.unwrap();
    assert_eq!(stats.upserts, 9);
    assert_eq!(stats.tables, 1);
    assert_eq!(stats.last_position, Some(Position::tidb(8, 0)));
    assert_eq!(writer.count_rows(&target).await.unwrap(), 9);
    let read = writer.fetch_rows(&schema, &target).await.unwrap();
    assert_eq!(
        read,
        sorted(rows.clone()),
        "{} round trip",
        writer.dialect()
    );

    // Replaying the same batch (Arc'd events this time) leaves the same rows.
    let arcs: Vec<Arc<ChangeEvent>> = batch.iter().cloned().map(Arc::new).collect();
    writer.apply(&arcs).await.unwrap();
    assert_eq!(writer.count_rows(&target).await.unwrap(), 9);
    assert_eq!(writer.fetch_rows(&schema, &target).await.unwrap(), read);

    // Upsert changes a row, delete removes one, replay of that batch changes nothing more.
    let mut changed = rows[0].clone();
    changed[1] = Value::String("renamed ✓".into());
    changed[2] = dec("999.99");
    changed[9] = Value::Null;
    let batch2 = vec![
        update(&schema, rows[0].clone(), changed.clone(), 100),
        delete(&schema, rows[1].clone(), 101),
        insert(&schema, wide_row(10), 102),
    ];
    let first = writer.apply(&batch2).await.unwrap();
    assert_eq!(
        (first.upserts, first.deletes, first.deleted_rows),
        (2, 1, 1)
    );
    let again = writer.apply(&batch2).await.unwrap();
    assert_eq!(again.deleted_rows, 0, "replayed delete finds nothing");
    let mut expected = rows.clone();
    expected[0] = changed;
    expected.remove(1);
    expected.push(wide_row(10));
    assert_eq!(writer.count_rows(&target).await.unwrap(), 9);
    assert_eq!(
        writer.fetch_rows(&schema, &target).await.unwrap(),
        sorted(expected)
    );
    writer.drop_table(&target).await.unwrap();
}

async fn collapsing_and_key_changes(writer: &TableWriter) {
    let name = unique("collapse");
    let schema = wide_schema(&name);
    let target = writer.target_for(&schema.table);
    let mut renamed = wide_row(101);
    renamed[1] = Value::String("last wins".into());
    let mut moved = wide_row(3);
    moved[0] = Value::Int(300);
    let batch = vec![
        // inserted, updated and deleted in one batch: absent
        insert(&schema, wide_row(100), 1),
        update(&schema, wide_row(100), wide_row(100), 2),
        delete(&schema, wide_row(100), 3),
        // inserted, deleted, inserted again: present with the last image
        insert(&schema, wide_row(101), 4),
        delete(&schema, wide_row(101), 5),
        insert(&schema, renamed.clone(), 6),
        // a key change: 3 becomes 300
        insert(&schema, wide_row(3), 7),
        update(&schema, wide_row(3), moved.clone(), 8),
    ];
    for _ in 0..2 {
        let stats = writer.apply(&batch).await.unwrap();
        assert_eq!(stats.collapsed, 5);
        assert_eq!(
            writer.fetch_rows(&schema, &target).await.unwrap(),
            vec![renamed.clone(), moved.clone()]
        );
    }
    writer.drop_table(&target).await.unwrap();
}

async fn composite_keys(writer: &TableWriter) {
    let name = unique("fx");
    let schema = Arc::new(TableSchema {
        table: TableId::new("bank", &name),
        version: 1,
        columns: vec![
            col(
                "ccy",
                ColumnType::String {
                    max_length: Some(3),
                },
                false,
            ),
            col("day", ColumnType::Date, false),
            col(
                "rate",
                ColumnType::Decimal {
                    precision: 12,
                    scale: 6,
                },
                false,
            ),
        ],
        primary_key: vec![0, 1],
    });
    let target = writer.target_for(&schema.table);
    let day = |d: u32| Value::Date(NaiveDate::from_ymd_opt(2024, 1, d).unwrap());
    let row = |ccy: &str, d: u32, rate: &str| vec![Value::String(ccy.into()), day(d), dec(rate)];
    let batch: Vec<ChangeEvent> = [("EUR", 1), ("EUR", 2), ("USD", 1), ("usd", 1)]
        .iter()
        .enumerate()
        .map(|(i, (c, d))| insert(&schema, row(c, *d, "1.000001"), i as u64))
        .collect();
    writer.apply(&batch).await.unwrap();
    // Keys that differ only in case are different rows, as in the source.
    assert_eq!(writer.count_rows(&target).await.unwrap(), 4);
    let batch2 = vec![
        delete(&schema, row("EUR", 2, "1.000001"), 10),
        update(&schema, row("USD", 1, "1.000001"), row("USD", 1, "0.5"), 11),
    ];
    writer.apply(&batch2).await.unwrap();
    writer.apply(&batch2).await.unwrap();
    let mut expected = vec![
        row("EUR", 1, "1.000001"),
        row("USD", 1, "0.500000"),
        row("usd", 1, "1.000001"),
    ];
    let mut read = writer.fetch_rows(&schema, &target).await.unwrap();
    // Ordering of text keys follows the database's collation; compare as sets.
    let key = |r: &Vec<Value>| format!("{:?}", r);
    expected.sort_by_key(key);
    read.sort_by_key(key);
    assert_eq!(read, expected);
    writer.drop_table(&target).await.unwrap();
}

async fn ddl_and_bad_values_write_nothing(writer: &TableWriter) {
    let name = unique("reject");
    let schema = wide_schema(&name);
    let target = writer.target_for(&schema.table);
    writer
        .apply(&[insert(&schema, wide_row(1), 0)])
        .await
        .unwrap();

    let mut ddl = event(&schema, Operation::Ddl, None, None, 5);
    ddl.ddl = Some("ALTER TABLE bank.x ADD c INT".into());
    let err = writer
        .apply(&[insert(&schema, wide_row(2), 4), ddl])
        .await
        .unwrap_err();
    assert!(matches!(err, TableSinkError::Ddl { .. }), "{err}");
    assert_eq!(err.table(), Some(&target));
    assert!(err.to_string().contains(&name), "{err}");

    let mut bad = wide_row(4);
    bad[2] = dec("0.001"); // DECIMAL(18,2) cannot take it without rounding
    let err = writer
        .apply(&[insert(&schema, wide_row(3), 6), insert(&schema, bad, 7)])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TableSinkError::Row { .. }), "{text}");
    assert!(text.contains("key 4") && text.contains("balance"), "{text}");
    assert_eq!(
        writer.count_rows(&target).await.unwrap(),
        1,
        "nothing written"
    );
    writer.drop_table(&target).await.unwrap();
}

async fn database_errors_name_the_key(writer: &TableWriter) {
    let name = unique("notnull");
    let schema = Arc::new(TableSchema {
        table: TableId::new("bank", &name),
        version: 1,
        columns: vec![
            col("id", ColumnType::Int, false),
            col(
                "must",
                ColumnType::String {
                    max_length: Some(10),
                },
                false,
            ),
        ],
        primary_key: vec![0],
    });
    let target = writer.target_for(&schema.table);
    let row = |id: i64, v: Value| vec![Value::Int(id), v];
    let batch = vec![
        insert(&schema, row(1, Value::String("ok".into())), 1),
        insert(&schema, row(7, Value::Null), 2),
        insert(&schema, row(9, Value::String("ok".into())), 3),
    ];
    let err = writer.apply(&batch).await.unwrap_err();
    let text = err.to_string();
    match &err {
        TableSinkError::Write { op, key, rows, .. } if writer.dialect().transactional() => {
            assert_eq!(*op, WriteOp::Upsert);
            assert_eq!(*rows, 3);
            assert_eq!(key.as_deref(), Some("7"), "{text}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(text.contains(&name) && text.contains("key 7"), "{text}");
    assert_eq!(writer.count_rows(&target).await.unwrap(), 0, "rolled back");
    writer.drop_table(&target).await.unwrap();
}

async fn ensure_table_checks_existing_tables(writer: &TableWriter) {
    let name = unique("ensure");
    let schema = wide_schema(&name);
    let target = TableName {
        schema: writer.options().schema.clone(),
        table: format!("{name}_sink"),
    };
    assert_eq!(
        writer.ensure_table(&schema, &target).await.unwrap(),
        EnsureOutcome::Created
    );
    assert_eq!(
        writer.ensure_table(&schema, &target).await.unwrap(),
        EnsureOutcome::Existed
    );
    let mut wider = (*schema).clone();
    wider.columns.push(col("added", ColumnType::Int, true));
    let err = writer.ensure_table(&wider, &target).await.unwrap_err();
    match err {
        TableSinkError::SchemaMismatch { missing, .. } => assert_eq!(missing, vec!["added"]),
        other => panic!("unexpected error: {other}"),
    }
    writer.drop_table(&target).await.unwrap();
}

async fn large_batches_are_chunked(writer: &TableWriter) {
    let name = unique("bulk");
    let schema = wide_schema(&name);
    let target = writer.target_for(&schema.table);
    let batch: Vec<ChangeEvent> = (0..5000)
        .map(|i| insert(&schema, wide_row(i), i as u64))
        .collect();
    let started = Instant::now();
    let stats = writer.apply(&batch).await.unwrap();
    let took = started.elapsed();
    eprintln!(
        "{}: 5000 rows in {} statements, {:?} ({:.0} rows/s)",
        writer.dialect(),
        stats.statements,
        took,
        5000.0 / took.as_secs_f64()
    );
    assert!(stats.statements >= 5, "{stats:?}");
    assert!(stats.statements <= 60, "{stats:?}");
    assert_eq!(writer.count_rows(&target).await.unwrap(), 5000);
    writer.apply(&batch).await.unwrap();
    assert_eq!(writer.count_rows(&target).await.unwrap(), 5000);
    writer.drop_table(&target).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// entry points

#[tokio::test]
async fn sqlite_sink() {
    suite(Service::Sqlite(tempfile::tempdir().unwrap())).await;
}

#[tokio::test]
async fn mariadb_sink() {
    if let Some(url) = service("SYNCMESH_MYSQL_URL") {
        suite(Service::Url(url)).await;
    }
}

#[tokio::test]
async fn postgres_sink() {
    if let Some(url) = service("SYNCMESH_POSTGRES_URL") {
        suite(Service::Url(url)).await;
    }
}

#[tokio::test]
async fn sqlite_file_is_created_and_naming_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.db");
    let options = TableSinkOptions {
        naming: syncmesh_connectors::sinks::table::TableNaming::SchemaAndTable,
        ..TableSinkOptions::default()
    };
    let writer = TableWriter::connect(&format!("sqlite://{}", path.display()), options)
        .await
        .unwrap();
    assert!(path.exists());
    assert_eq!(writer.dialect(), Dialect::Sqlite);
    let schema = wide_schema("accounts");
    assert_eq!(
        writer.target_for(&schema.table),
        TableName::new("bank_accounts")
    );
    writer
        .apply(&[insert(&schema, wide_row(1), 1)])
        .await
        .unwrap();
    assert_eq!(
        writer
            .count_rows(&TableName::new("bank_accounts"))
            .await
            .unwrap(),
        1
    );

    let memory = TableWriter::connect("sqlite::memory:", TableSinkOptions::default())
        .await
        .unwrap();
    memory
        .apply(&[insert(&schema, wide_row(2), 1)])
        .await
        .unwrap();
    assert_eq!(
        memory
            .count_rows(&TableName::new("accounts"))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn statements_respect_row_and_byte_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("budget.db").display());
    let schema = wide_schema("budget");
    let batch: Vec<ChangeEvent> = (0..30)
        .map(|i| insert(&schema, wide_row(i), i as u64))
        .collect();

    let rows = TableSinkOptions {
        max_rows_per_statement: 7,
        ..TableSinkOptions::default()
    };
    let writer = TableWriter::connect(&url, rows).await.unwrap();
    let stats = writer.apply(&batch).await.unwrap();
    assert_eq!(stats.statements, 5, "30 rows by 7");
    writer.drop_table(&TableName::new("budget")).await.unwrap();

    // Rows with id % 3 == 1 carry a 3000-byte note: a 4 KB budget fits one of them at most.
    let bytes = TableSinkOptions {
        max_statement_bytes: 4096,
        ..TableSinkOptions::default()
    };
    let writer = TableWriter::connect(&url, bytes).await.unwrap();
    let stats = writer.apply(&batch).await.unwrap();
    assert!(stats.statements >= 10, "{stats:?}");
    assert_eq!(
        writer.count_rows(&TableName::new("budget")).await.unwrap(),
        30
    );
}

#[test]
fn apply_is_send() {
    fn assert_send<T: Send>(_: T) {}
    #[allow(clippy::diverging_sub_expression, unreachable_code, unused_variables)]
    let _ = || {
        let writer: &TableWriter = unimplemented!();
        let events: &[Arc<ChangeEvent>] = unimplemented!();
        assert_send(writer.apply(events));
    };
}

#[tokio::test]
async fn sources_mapped_onto_one_table_collapse_together() {
    let a = wide_schema("accounts");
    let mut b = (*wide_schema("accounts")).clone();
    b.table = TableId::new("branch2", "accounts");
    let b = Arc::new(b);
    let target = TableName::new("all_accounts");
    let mut options = TableSinkOptions::default();
    options.tables.insert(a.table.clone(), target.clone());
    options.tables.insert(b.table.clone(), target.clone());
    let writer = TableWriter::connect("sqlite::memory:", options)
        .await
        .unwrap();
    let batch = vec![
        insert(&a, wide_row(1), 1),
        insert(&a, wide_row(2), 2),
        delete(&b, wide_row(1), 3),
        insert(&b, wide_row(3), 4),
    ];
    let stats = writer.apply(&batch).await.unwrap();
    assert_eq!((stats.tables, stats.collapsed), (1, 1));
    let ids: Vec<Value> = writer
        .fetch_rows(&a, &target)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(ids, vec![Value::Int(2), Value::Int(3)]);
}
