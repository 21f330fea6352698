//! The consistency checker against real MariaDB and PostgreSQL: the SQL-side digest equals the
//! Rust-side digest of the same rows; planted differences (deleted, added and altered rows with
//! NULLs, decimals, timestamps, unicode, binary, wide rows) are each found and named with fix
//! SQL that, once applied, makes the next check pass; the same data in MariaDB and PostgreSQL
//! checks equal in both directions. Between two MariaDB servers the CRC32C row hash is used
//! (and said in the report); it finds the same rows as MD5, down to look-alike values.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use std::collections::BTreeSet;
use std::sync::Arc;
use syncmesh_connectors::checker::compact::row_hash_of;
use syncmesh_connectors::checker::{
    CheckOptions, CheckReport, Database, Digest, HashMode, HashSql, KeyRange, RowHash, SqlSide,
    TableCheck, TableSide, resolve_schema,
};
use syncmesh_connectors::event::{
    ChangeEvent, Column, ColumnType, Decimal, Operation, Position, TableId, TableSchema, Value,
};
use syncmesh_connectors::sinks::table::{TableName, TableSinkOptions, TableWriter};
use syncmesh_tests::sql::{MysqlScratch, PgScratch};
use syncmesh_tests::{require, services};

const ROWS: i64 = 400;

fn col(name: &str, column_type: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        column_type,
        nullable,
    }
}

/// A table with every type the canonical encoding defines, and a wide text column.
fn schema(name: &str) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("check", name),
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
                "amount",
                ColumnType::Decimal {
                    precision: 18,
                    scale: 2,
                },
                true,
            ),
            col(
                "rate",
                ColumnType::Decimal {
                    precision: 38,
                    scale: 10,
                },
                true,
            ),
            col("flag", ColumnType::Bool, true),
            col("born", ColumnType::Date, true),
            col("seen", ColumnType::Timestamp, true),
            col("at", ColumnType::TimestampTz, true),
            col("photo", ColumnType::Bytes, true),
            col("body", ColumnType::String { max_length: None }, true),
        ],
        primary_key: vec![0],
    })
}

fn dec(s: &str) -> Value {
    Value::Decimal(Decimal::parse(s).expect("decimal"))
}

fn ts(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").expect("timestamp")
}

/// Row `id`: NULLs, empty strings, separators, unicode, negative and long decimals,
/// microsecond timestamps, binary with zero bytes, and every tenth row wide.
fn row(id: i64) -> Vec<Value> {
    let names = [
        "plain",
        "",
        "naïve ☃ 𝄞",
        "a|b",
        "N",
        "O'Brien \\ x",
        "日本語",
    ];
    let name = match id.rem_euclid(11) {
        3 => Value::Null,
        _ => Value::String(format!("{} {id}", names[(id.rem_euclid(7)) as usize])),
    };
    let amount = match id.rem_euclid(5) {
        0 => Value::Null,
        1 => dec("0.00"),
        2 => dec(&format!("-{id}.05")),
        _ => dec(&format!(
            "{}.{:02}",
            id.abs() * 1_000_003,
            id.rem_euclid(100)
        )),
    };
    let rate = if id.rem_euclid(6) == 0 {
        Value::Null
    } else {
        dec(&format!(
            "{}.{:010}",
            id.rem_euclid(1000),
            (id * 7919).rem_euclid(10_000_000_000)
        ))
    };
    let flag = match id.rem_euclid(3) {
        0 => Value::Null,
        1 => Value::Bool(true),
        _ => Value::Bool(false),
    };
    let born = NaiveDate::from_ymd_opt(
        1900 + (id.rem_euclid(200)) as i32,
        1 + (id.rem_euclid(12)) as u32,
        1 + (id.rem_euclid(28)) as u32,
    )
    .expect("date");
    let seen = ts(&format!(
        "2024-03-{:02} 12:34:56.{:06}",
        1 + id.rem_euclid(28),
        (id * 37).rem_euclid(1_000_000)
    ));
    let at = DateTime::parse_from_rfc3339(&format!(
        "2023-12-31T23:{:02}:00.123456+05:30",
        id.rem_euclid(60)
    ))
    .expect("tz");
    let photo = match id.rem_euclid(4) {
        0 => Value::Null,
        1 => Value::Bytes(Vec::new()),
        _ => Value::Bytes(vec![0, (id.rem_euclid(256)) as u8, 0xff, b'|']),
    };
    let body = if id.rem_euclid(10) == 0 {
        Value::String(format!("wide {id} ").repeat(2000) + "é")
    } else if id.rem_euclid(10) == 1 {
        Value::Null
    } else {
        Value::String(format!("body {id}"))
    };
    vec![
        Value::Int(id),
        name,
        amount,
        rate,
        flag,
        if id.rem_euclid(9) == 0 {
            Value::Null
        } else {
            Value::Date(born)
        },
        Value::Timestamp(seen),
        Value::TimestampTz(at),
        photo,
        body,
    ]
}

fn event(schema: &Arc<TableSchema>, op: Operation, values: Vec<Value>, n: u64) -> ChangeEvent {
    let (before, after) = match op {
        Operation::Delete => (Some(values), None),
        _ => (None, Some(values)),
    };
    ChangeEvent {
        source: Arc::from("checker-test"),
        position: Position::File {
            file: "checker".into(),
            offset: n,
            length: 1,
            record: n,
        },
        transaction: None,
        schema: schema.clone(),
        op,
        before,
        after,
        ddl: None,
    }
}

/// Writes rows 1..=ROWS with the product's sink writer (which also creates the table).
async fn load(url: &str, schema: &Arc<TableSchema>, table: &str) -> anyhow::Result<TableWriter> {
    let mut options = TableSinkOptions::default();
    options
        .tables
        .insert(schema.table.clone(), TableName::new(table));
    let writer = TableWriter::connect(url, options).await?;
    let events: Vec<ChangeEvent> = (1..=ROWS)
        .map(|id| event(schema, Operation::Insert, row(id), id as u64))
        .collect();
    writer.apply(&events).await?;
    Ok(writer)
}

fn options(chunk_size: u64) -> CheckOptions {
    CheckOptions {
        chunk_size,
        leaf_rows: 8,
        ..CheckOptions::default()
    }
}

async fn check(
    source: &Database,
    sink: &Database,
    table: &str,
    opts: &CheckOptions,
) -> anyhow::Result<CheckReport> {
    let t = TableName::new(table);
    let check = TableCheck::prepare(source, &t, sink, &t, opts).await?;
    Ok(check.run(&|_| {}).await?)
}

/// The digest of `rows` computed here under `row_hash`, with the column types and NULL mask
/// the checker resolved.
fn rust_digest(
    row_hash: RowHash,
    types: &[ColumnType],
    nullable: &[bool],
    rows: impl Iterator<Item = Vec<Value>>,
) -> Digest {
    let types: Vec<&ColumnType> = types.iter().collect();
    let mut d = Digest::empty(row_hash);
    for r in rows {
        d.add_row(row_hash_of(row_hash, &types, nullable, &r).expect("canonical"));
    }
    d
}

/// Digests of one table on one database: in SQL, streamed, and from the known values, under
/// every row hash the database computes in SQL.
async fn sql_equals_rust(url: &str, db_label: &str) -> anyhow::Result<()> {
    let table = syncmesh_tests::unique_table("ck_hash");
    let s = schema(&table);
    let writer = load(url, &s, &table).await?;
    let db = Database::connect(url, 2).await?;
    let t = TableName::new(&table);
    let native = db.describe(&t).await?;
    let resolved = resolve_schema(db_label, &native, db_label, &native)?;
    let columns = |mode, row_hash| -> anyhow::Result<SqlSide> {
        let cols = (0..resolved.source_names.len())
            .map(|i| syncmesh_connectors::checker::SideColumn {
                name: resolved.source_names[i].clone(),
                ty: resolved.types[i].clone(),
                convert_to_utf8: resolved.source_convert[i],
                native: resolved.source_native[i].clone(),
                nullable: resolved.nullable[i],
            })
            .collect();
        Ok(
            SqlSide::new(db.clone(), t.clone(), cols, resolved.key.clone(), mode)
                .with_row_hash(row_hash)?,
        )
    };
    // With statistics, the integer key is cut by arithmetic: the chunks cover every row once.
    db.execute(&match db.engine() {
        syncmesh_connectors::checker::Engine::MySql => format!("ANALYZE TABLE `{table}`"),
        _ => format!("ANALYZE \"{table}\""),
    })
    .await?;
    let side = columns(HashMode::Auto, RowHash::Md5)?;
    let span = side.key_span().await?.expect("an integer key's span");
    assert_eq!((span.min, span.max), (1, ROWS), "{span:?}");
    assert!(span.estimated_rows > 0, "{span:?}");
    let bounds = span.chunk_bounds(64).expect("dense keys");
    assert!(bounds.len() >= 4, "{bounds:?}");
    let mut lower = None;
    let mut total = Digest::default();
    for bound in bounds.into_iter().map(Some).chain([None]) {
        let upper = bound.map(|b| syncmesh_connectors::checker::Key(vec![Value::Int(b)]));
        let range = KeyRange {
            lower: std::mem::replace(&mut lower, upper.clone()),
            upper,
        };
        let d = side.digest(&range).await?;
        total.rows += d.rows;
        total.hash = total.hash.wrapping_add(d.hash);
    }
    assert_eq!(total, side.digest(&KeyRange::default()).await?);

    let mut hashes = vec![RowHash::Md5];
    if db.crc_support().is_some() {
        hashes.push(RowHash::Crc32c);
    }
    // MariaDB keeps a zoned timestamp as DATETIME(6) in UTC: there it reads back naive.
    let logical = |r: Vec<Value>| -> Vec<Value> {
        r.into_iter()
            .zip(&resolved.types)
            .map(|(v, ty)| match (v, ty) {
                (Value::TimestampTz(t), ColumnType::Timestamp) => Value::Timestamp(t.naive_utc()),
                (v, _) => v,
            })
            .collect()
    };
    for row_hash in hashes {
        let in_sql = columns(HashMode::Auto, row_hash)?;
        let streamed = columns(HashMode::Stream, row_hash)?;
        assert!(!in_sql.streams() && streamed.streams());
        let digest_of = |ids: std::ops::RangeInclusive<i64>| {
            rust_digest(
                row_hash,
                &resolved.types,
                &resolved.nullable,
                ids.map(|id| logical(row(id))),
            )
        };
        let whole = KeyRange::default();
        let expected = digest_of(1..=ROWS);
        assert_eq!(expected.rows, ROWS as u64);
        assert_eq!(
            in_sql.digest(&whole).await?,
            expected,
            "{db_label} {row_hash}: SQL digest"
        );
        assert_eq!(
            streamed.digest(&whole).await?,
            expected,
            "{db_label} {row_hash}: streamed digest"
        );

        // A middle range, bounded on both sides, through the keyset boundary query.
        let lower = in_sql.boundary(None, 100).await?.expect("row 100");
        let upper = in_sql.boundary(Some(&lower), 50).await?.expect("row 150");
        assert_eq!(lower.0, vec![Value::Int(100)]);
        assert_eq!(upper.0, vec![Value::Int(150)]);
        // Fewer rows than asked follow: the last row's key.
        let last = in_sql.boundary(Some(&upper), 10 * ROWS as u64).await?;
        assert_eq!(last.map(|k| k.0), Some(vec![Value::Int(ROWS)]));
        let mid = KeyRange {
            lower: Some(lower),
            upper: Some(upper),
        };
        let expected = digest_of(101..=150);
        assert_eq!(
            in_sql.digest(&mid).await?,
            expected,
            "{db_label} {row_hash}: SQL digest of (100, 150]"
        );
        assert_eq!(streamed.digest(&mid).await?, expected);
        // The rows read back hash like the rows written.
        let back = in_sql.rows(&mid).await?;
        assert_eq!(
            rust_digest(
                row_hash,
                &resolved.types,
                &resolved.nullable,
                back.into_iter()
            ),
            expected
        );
    }

    writer.drop_table(&t).await?;
    writer.close().await;
    db.close().await;
    Ok(())
}

#[tokio::test]
async fn mariadb_sql_digest_equals_rust_digest() -> anyhow::Result<()> {
    let db = require!(services::mysql());
    // The test server is MariaDB 10.11: it must compute the CRC32C hash, in the one-pass form.
    let probe = Database::connect(&db.url, 1).await?;
    assert_eq!(probe.crc_support(), Some(HashSql::Crc32cOnce));
    probe.close().await;
    sql_equals_rust(&db.url, "mariadb").await
}

#[tokio::test]
async fn postgres_sql_digest_equals_rust_digest() -> anyhow::Result<()> {
    let db = require!(services::postgres());
    sql_equals_rust(&db.url, "postgres").await
}

/// What was planted on the sink, by key.
struct Planted {
    missing: BTreeSet<i64>,
    extra: BTreeSet<i64>,
    /// Key and the one column changed.
    different: Vec<(i64, &'static str)>,
}

/// Deletes, adds and alters sink rows through the sink writer.
async fn plant(sink: &TableWriter, s: &Arc<TableSchema>) -> anyhow::Result<Planted> {
    let mut events = Vec::new();
    let mut n = 10_000;
    let mut push = |op, values| {
        n += 1;
        events.push(event(s, op, values, n));
    };
    let missing: BTreeSet<i64> = [1, 57, 200, ROWS].into_iter().collect();
    for id in &missing {
        push(Operation::Delete, row(*id));
    }
    // Before the first key, between keys (none: keys are dense, so beyond), after the last.
    let extra: BTreeSet<i64> = [-5, ROWS + 1, ROWS + 1000].into_iter().collect();
    for id in &extra {
        push(Operation::Insert, row(*id));
    }
    let mut different = Vec::new();
    let mut alter = |id: i64, column: &'static str, f: &dyn Fn(&mut Vec<Value>)| {
        let mut r = row(id);
        f(&mut r);
        different.push((id, column));
        r
    };
    let altered = vec![
        // NULL to a value and a value to NULL.
        alter(3, "name", &|r| r[1] = Value::String("now set".into())),
        alter(12, "name", &|r| r[1] = Value::Null),
        // The empty string is not NULL.
        alter(33, "name", &|r| r[1] = Value::String(String::new())),
        // One cent, one unit in the 10th decimal.
        alter(42, "amount", &|r| r[2] = dec("-42.06")),
        alter(77, "rate", &|r| r[3] = dec("77.0000609764")),
        // One microsecond.
        alter(88, "seen", &|r| {
            if let Value::Timestamp(t) = r[6] {
                r[6] = Value::Timestamp(t + chrono::Duration::microseconds(1));
            }
        }),
        // Unicode: one character, same length in bytes.
        alter(9, "name", &|r| r[1] = Value::String("naïve ☃ 𝄟 9".into())),
        // One byte of a binary value.
        alter(102, "photo", &|r| {
            r[8] = Value::Bytes(vec![0, 102, 0xfe, b'|'])
        }),
        // The last character of a 16 KB text.
        alter(150, "body", &|r| {
            r[9] = Value::String(format!("wide {} ", 150).repeat(2000) + "e")
        }),
        alter(251, "flag", &|r| r[4] = Value::Bool(true)),
        alter(301, "born", &|r| r[5] = Value::Null),
        alter(333, "at", &|r| {
            r[7] = Value::TimestampTz(
                DateTime::parse_from_rfc3339("2023-12-31T18:03:00.123457Z").expect("tz"),
            )
        }),
    ];
    for r in altered {
        push(Operation::Update, r);
    }
    sink.apply(&events).await?;
    Ok(Planted {
        missing,
        extra,
        different,
    })
}

fn keys(diffs: &[syncmesh_connectors::checker::RowDifference]) -> BTreeSet<i64> {
    diffs
        .iter()
        .map(|d| d.key_text.parse::<i64>().expect("integer key"))
        .collect()
}

/// Plants differences on the sink, checks, applies the fix SQL, checks again; every report
/// names `row_hash`.
async fn find_and_fix(source_url: &str, sink_url: &str, row_hash: RowHash) -> anyhow::Result<()> {
    let table = syncmesh_tests::unique_table("ck_diff");
    let s = schema(&table);
    let src_writer = load(source_url, &s, &table).await?;
    let sink_writer = load(sink_url, &s, &table).await?;
    let source = Database::connect(source_url, 3).await?;
    let sink = Database::connect(sink_url, 3).await?;

    let clean = check(&source, &sink, &table, &options(64)).await?;
    assert!(clean.equal, "{}", serde_json::to_string_pretty(&clean)?);
    assert_eq!(clean.hash, row_hash);
    assert_eq!(clean.source.rows, ROWS as u64);
    assert_eq!(clean.sink.rows, ROWS as u64);
    assert!(clean.chunks >= 7, "{} chunks", clean.chunks);

    let planted = plant(&sink_writer, &s).await?;
    let report = check(&source, &sink, &table, &options(64)).await?;
    let json = serde_json::to_string_pretty(&report)?;
    assert!(!report.equal, "{json}");
    assert!(
        json.contains(&format!("\"hash\": \"{row_hash}\"")),
        "{json}"
    );
    assert_eq!(keys(&report.missing), planted.missing, "{json}");
    assert_eq!(keys(&report.extra), planted.extra, "{json}");
    let found: BTreeSet<(i64, String)> = report
        .different
        .iter()
        .map(|d| (d.key_text.parse().expect("key"), d.columns.join(",")))
        .collect();
    let want: BTreeSet<(i64, String)> = planted
        .different
        .iter()
        .map(|(k, c)| (*k, c.to_string()))
        .collect();
    assert_eq!(found, want, "{json}");
    let differing = planted.missing.len() + planted.extra.len() + planted.different.len();
    assert_eq!(report.differing_rows, differing as u64);
    let sink_rows = ROWS as usize - planted.missing.len() + planted.extra.len();
    let ratio = differing as f64 / sink_rows.max(ROWS as usize) as f64;
    assert!(
        (report.diff_ratio - ratio).abs() < 1e-12,
        "{}",
        report.diff_ratio
    );
    assert!(report.mismatched_chunks >= 1 && report.mismatched_chunks <= report.chunks);
    for d in &report.missing {
        assert!(d.fix.starts_with("INSERT INTO "), "{}", d.fix);
    }
    for d in &report.extra {
        assert!(d.fix.starts_with("DELETE FROM "), "{}", d.fix);
    }
    for d in &report.different {
        assert!(d.fix.starts_with("UPDATE "), "{}", d.fix);
    }

    for sql in report.fix_sql() {
        sink.execute(sql).await?;
    }
    let fixed = check(&source, &sink, &table, &options(64)).await?;
    assert!(fixed.equal, "{}", serde_json::to_string_pretty(&fixed)?);
    assert_eq!(fixed.differing_rows, 0);

    let t = TableName::new(&table);
    src_writer.drop_table(&t).await?;
    sink_writer.drop_table(&t).await?;
    source.close().await;
    sink.close().await;
    Ok(())
}

#[tokio::test]
async fn mariadb_to_mariadb_differences_are_found_and_fixed() -> anyhow::Result<()> {
    let db = require!(services::mysql());
    let src = MysqlScratch::create(&db.url, "ck_src").await?;
    let snk = MysqlScratch::create(&db.url, "ck_snk").await?;
    find_and_fix(&src.url, &snk.url, RowHash::Crc32c).await?;
    src.drop_database().await?;
    snk.drop_database().await
}

/// A PostgreSQL URL whose connections use `schema` as their search path.
fn pg_in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

#[tokio::test]
async fn postgres_to_postgres_differences_are_found_and_fixed() -> anyhow::Result<()> {
    let db = require!(services::postgres());
    let src = PgScratch::create(&db.url, "ck_src").await?;
    let snk = PgScratch::create(&db.url, "ck_snk").await?;
    find_and_fix(
        &pg_in_schema(&db.url, &src.schema),
        &pg_in_schema(&db.url, &snk.schema),
        RowHash::Md5,
    )
    .await?;
    src.drop_schema().await?;
    snk.drop_schema().await
}

#[tokio::test]
async fn mariadb_to_postgres_differences_are_found_and_fixed() -> anyhow::Result<()> {
    let my = require!(services::mysql());
    let pg = require!(services::postgres());
    find_and_fix(&my.url, &pg.url, RowHash::Md5).await
}

#[tokio::test]
async fn postgres_to_mariadb_differences_are_found_and_fixed() -> anyhow::Result<()> {
    let my = require!(services::mysql());
    let pg = require!(services::postgres());
    find_and_fix(&pg.url, &my.url, RowHash::Md5).await
}

#[tokio::test]
async fn the_same_rows_in_mariadb_and_postgres_check_equal() -> anyhow::Result<()> {
    let my = require!(services::mysql());
    let pg = require!(services::postgres());
    let table = syncmesh_tests::unique_table("ck_cross");
    let s = schema(&table);
    let my_writer = load(&my.url, &s, &table).await?;
    let pg_writer = load(&pg.url, &s, &table).await?;
    let mariadb = Database::connect(&my.url, 3).await?;
    let postgres = Database::connect(&pg.url, 3).await?;
    for opts in [
        options(100),
        CheckOptions {
            hash_mode: HashMode::Stream,
            ..options(1000)
        },
    ] {
        let there = check(&mariadb, &postgres, &table, &opts).await?;
        assert!(there.equal, "{}", serde_json::to_string_pretty(&there)?);
        assert_eq!(there.source.rows, ROWS as u64);
        let back = check(&postgres, &mariadb, &table, &opts).await?;
        assert!(back.equal, "{}", serde_json::to_string_pretty(&back)?);
        assert_eq!(back.sink.rows, ROWS as u64);
        if opts.hash_mode == HashMode::Auto {
            assert_eq!(
                (there.source.hashed_in, there.sink.hashed_in),
                ("sql", "sql")
            );
        }
    }
    let t = TableName::new(&table);
    my_writer.drop_table(&t).await?;
    pg_writer.drop_table(&t).await?;
    Ok(())
}

/// A composite key (text, integer): expanded range predicates on MariaDB, row values on
/// PostgreSQL; a SQLite sink is streamed and hashed in Rust.
#[tokio::test]
async fn composite_keys_and_a_sqlite_sink() -> anyhow::Result<()> {
    let my = require!(services::mysql());
    let pg = require!(services::postgres());
    let table = syncmesh_tests::unique_table("ck_comp");
    let s = Arc::new(TableSchema {
        table: TableId::new("check", &table),
        version: 1,
        columns: vec![
            col(
                "region",
                ColumnType::String {
                    max_length: Some(20),
                },
                false,
            ),
            col("id", ColumnType::Int, false),
            col(
                "v",
                ColumnType::Decimal {
                    precision: 10,
                    scale: 3,
                },
                true,
            ),
        ],
        primary_key: vec![0, 1],
    });
    let regions = ["EU", "US", "ÅSIA", "eu"];
    let rows: Vec<Vec<Value>> = (0..300)
        .map(|i| {
            vec![
                Value::String(regions[i % 4].to_string()),
                Value::Int(i as i64 / 4),
                dec(&format!("{i}.{:03}", i % 1000)),
            ]
        })
        .collect();
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!("sqlite://{}", dir.path().join("sink.db").display());
    let mut writers = Vec::new();
    for url in [&my.url, &pg.url, &sqlite_url] {
        let mut o = TableSinkOptions::default();
        o.tables.insert(s.table.clone(), TableName::new(&table));
        let w = TableWriter::connect(url, o).await?;
        let events: Vec<ChangeEvent> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| event(&s, Operation::Insert, r.clone(), i as u64))
            .collect();
        w.apply(&events).await?;
        writers.push(w);
    }
    // Differences on PostgreSQL and SQLite only.
    for w in &writers[1..] {
        w.apply(&[
            event(&s, Operation::Delete, rows[10].clone(), 1000),
            event(
                &s,
                Operation::Insert,
                vec![Value::String("ZZ".into()), Value::Int(1), dec("1.000")],
                1001,
            ),
            event(
                &s,
                Operation::Update,
                vec![rows[123][0].clone(), rows[123][1].clone(), dec("0.001")],
                1002,
            ),
        ])
        .await?;
    }
    let mariadb = Database::connect(&my.url, 3).await?;
    for sink_url in [&pg.url, &sqlite_url] {
        let sink = Database::connect(sink_url, 3).await?;
        let report = check(&mariadb, &sink, &table, &options(32)).await?;
        let json = serde_json::to_string_pretty(&report)?;
        let named = |d: &[syncmesh_connectors::checker::RowDifference]| -> Vec<String> {
            d.iter().map(|d| d.key_text.clone()).collect()
        };
        assert_eq!(
            named(&report.missing),
            [format!("{}|{}", regions[10 % 4], 10 / 4)],
            "{json}"
        );
        assert_eq!(named(&report.extra), ["ZZ|1"], "{json}");
        assert_eq!(
            named(&report.different),
            [format!("{}|{}", regions[123 % 4], 123 / 4)],
            "{json}"
        );
        assert_eq!(report.different[0].columns, ["v"]);
        if sink_url == &sqlite_url {
            assert_eq!(report.sink.hashed_in, "rust");
        }
        for sql in report.fix_sql() {
            sink.execute(sql).await?;
        }
        let fixed = check(&mariadb, &sink, &table, &options(32)).await?;
        assert!(fixed.equal, "{}", serde_json::to_string_pretty(&fixed)?);
        sink.close().await;
    }
    let t = TableName::new(&table);
    for w in &writers {
        w.drop_table(&t).await?;
    }
    Ok(())
}

/// Look-alike differences between two MariaDB tables whose columns are declared differently
/// (a wider decimal scale, latin1 against utf8mb4 text, a DATETIME against a DATE, a
/// TIMESTAMP(6) against a DATETIME(6), a case- and pad-insensitive collation), so the CRC
/// path reads some columns as they are and converts others. Both row hashes must name the
/// same rows, and the fix SQL must make the tables equal.
#[tokio::test]
async fn mariadb_crc_hash_finds_look_alike_differences() -> anyhow::Result<()> {
    let db = require!(services::mysql());
    let scratch = MysqlScratch::create(&db.url, "ck_crc").await?;
    let run = |sql: String| {
        let pool = scratch.pool.clone();
        async move {
            // One connection per call, in UTC, so TIMESTAMP values are stored as written.
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET time_zone = '+00:00'; {sql}"
            )))
            .execute(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("{sql}: {e}"))
        }
    };
    run("CREATE TABLE src (id BIGINT NOT NULL PRIMARY KEY, \
         name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
         label VARCHAR(40) CHARACTER SET latin1 NULL, amount DECIMAL(12,2) NULL, \
         at DATETIME(6) NULL, day DATE NULL, flag TINYINT(1) NULL, bin VARBINARY(16) NULL, \
         n INT NOT NULL)"
        .into())
    .await?;
    run("CREATE TABLE snk (id BIGINT NOT NULL PRIMARY KEY, \
         name VARCHAR(40) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, \
         label VARCHAR(40) CHARACTER SET utf8mb4 NULL, amount DECIMAL(14,4) NULL, \
         at TIMESTAMP(6) NULL, day DATETIME NULL, flag TINYINT(1) NULL, bin VARBINARY(16) NULL, \
         n BIGINT NULL)"
        .into())
    .await?;
    run(
        "INSERT INTO src SELECT seq, IF(seq MOD 7 = 0, NULL, CONCAT('näme ', seq)), \
         IF(seq MOD 5 = 0, NULL, CONCAT('café ', seq)), IF(seq MOD 6 = 0, NULL, seq * 1.25 - 100), \
         TIMESTAMP'2024-02-03 04:05:06' + INTERVAL seq * 1001 MICROSECOND, \
         DATE'2020-01-01' + INTERVAL seq DAY, IF(seq MOD 3 = 0, NULL, seq MOD 2), \
         IF(seq MOD 4 = 0, NULL, UNHEX(CONCAT('00FF', HEX(seq)))), seq * 3 FROM seq_1_to_300"
            .into(),
    )
    .await?;
    run("INSERT INTO snk SELECT * FROM src".into()).await?;
    // Statistics, so the key is cut by arithmetic.
    run("ANALYZE TABLE src".into()).await?;

    let source = Database::connect(&scratch.url, 3).await?;
    let sink = Database::connect(&scratch.url, 3).await?;
    let check_both = |opts: CheckOptions| {
        let (source, sink) = (source.clone(), sink.clone());
        async move {
            let (s, k) = (TableName::new("src"), TableName::new("snk"));
            let check = TableCheck::prepare(&source, &s, &sink, &k, &opts).await?;
            anyhow::Ok(check.run(&|_| {}).await?)
        }
    };
    let crc = options(32);
    let md5 = CheckOptions {
        row_hash: Some(RowHash::Md5),
        ..options(32)
    };
    let clean = check_both(crc.clone()).await?;
    assert!(clean.equal, "{}", serde_json::to_string_pretty(&clean)?);
    assert_eq!(clean.hash, RowHash::Crc32c);
    assert_eq!(clean.source.rows, 300);

    let plants = [
        ("DELETE FROM snk WHERE id = 5", "missing 5"),
        (
            "INSERT INTO snk (id, n) VALUES (1000, 1), (0, 0)",
            "extra 0, 1000",
        ),
        // NULL -> '' and '' -> NULL.
        ("UPDATE snk SET name = '' WHERE id = 7", "7 name"),
        ("UPDATE src SET name = '' WHERE id = 8", "src"),
        ("UPDATE snk SET name = NULL WHERE id = 8", "8 name"),
        // A trailing space the collation ignores, and a letter's case.
        (
            "UPDATE snk SET name = CONCAT(name, ' ') WHERE id = 10",
            "10 name",
        ),
        ("UPDATE snk SET name = 'NÄME 11' WHERE id = 11", "11 name"),
        // One unit in the source's last decimal place; more digits than it has are rounded.
        (
            "UPDATE snk SET amount = amount + 0.01 WHERE id = 20",
            "20 amount",
        ),
        (
            "UPDATE snk SET amount = amount + 0.004 WHERE id = 21",
            "equal",
        ),
        // Unicode: é -> e (latin1 on the source, utf8mb4 on the sink).
        ("UPDATE snk SET label = 'cafe 22' WHERE id = 22", "22 label"),
        // One microsecond, one day, a flag, one byte, empty binary vs NULL.
        (
            "UPDATE snk SET at = at + INTERVAL 1 MICROSECOND WHERE id = 30",
            "30 at",
        ),
        (
            "UPDATE snk SET day = day + INTERVAL 1 DAY WHERE id = 31",
            "31 day",
        ),
        ("UPDATE snk SET flag = 1 - flag WHERE id = 32", "32 flag"),
        (
            "UPDATE snk SET bin = UNHEX('00FE21') WHERE id = 33",
            "33 bin",
        ),
        ("UPDATE snk SET bin = '' WHERE id = 36", "36 bin"),
        // NOT NULL on the source, nullable on the sink.
        ("UPDATE snk SET n = NULL WHERE id = 40", "40 n"),
    ];
    for (sql, _) in &plants {
        run(sql.to_string()).await?;
    }
    let mut reports = Vec::new();
    for opts in [crc.clone(), md5.clone()] {
        let report = check_both(opts).await?;
        let json = serde_json::to_string_pretty(&report)?;
        assert_eq!(keys(&report.missing), BTreeSet::from([5]), "{json}");
        assert_eq!(keys(&report.extra), BTreeSet::from([0, 1000]), "{json}");
        let different: BTreeSet<(i64, String)> = report
            .different
            .iter()
            .map(|d| (d.key_text.parse().expect("key"), d.columns.join(",")))
            .collect();
        let want: BTreeSet<(i64, String)> = plants
            .iter()
            .filter_map(|(_, what)| {
                let (id, column) = what.split_once(' ')?;
                Some((id.parse().ok()?, column.to_string()))
            })
            .collect();
        assert_eq!(different, want, "{json}");
        reports.push(report);
    }
    assert_eq!(reports[0].hash, RowHash::Crc32c);
    assert_eq!(reports[1].hash, RowHash::Md5);
    assert_eq!(reports[0].differing_rows, reports[1].differing_rows);

    let sink_db = Database::connect(&scratch.url, 1).await?;
    for sql in reports[0].fix_sql() {
        sink_db.execute(sql).await?;
    }
    let fixed = check_both(crc).await?;
    assert!(fixed.equal, "{}", serde_json::to_string_pretty(&fixed)?);
    sink_db.close().await;
    source.close().await;
    sink.close().await;
    scratch.drop_database().await
}
