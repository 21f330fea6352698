//! The TiDB source against the real broker: a changefeed written the way TiCDC writes it
//! (canal-json with the TiDB extension, three partitions, watermarks, a DDL, every MySQL type
//! TiCDC emits, and resends after a TiCDC restart) goes through a pipeline into the real-time
//! path. The pipeline is killed twice mid-run (its task dropped with no drain: no flush, no
//! checkpoint save) and restarted; the output topic, read through the transaction markers,
//! must hold each change exactly once, in commit order, typed correctly.

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value as J, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::Pipeline;
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_tests::kafka::{create_topic, producer_config, read_partition};
use syncmesh_tests::pipeline::{metric_sum, options};
use syncmesh_tests::{poll_until, require, services, unique_name};

const PARTITIONS: i32 = 3;

/// A TiDB TSO for now: physical milliseconds shifted past the 18 logical bits.
fn now_tso() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ms << 18
}

/// The columns of `shop.orders` with the mysqlType TiCDC reports and the Java SQL type code.
const COLUMNS: &[(&str, &str, i32)] = &[
    ("id", "int", 4),
    ("qty", "smallint", 5),
    ("amount", "decimal", 3),
    ("price", "double", 8),
    ("name", "varchar", 12),
    ("note", "text", 2005),
    ("created", "datetime", 93),
    ("day", "date", 91),
    ("at", "timestamp", 93),
    ("dur", "time", 92),
    ("yr", "year", 12),
    ("payload", "blob", 2004),
    ("flag", "tinyint", -6),
    ("big", "bigint unsigned", 3),
    ("kind", "enum", 4),
    ("tags", "set", -7),
    ("bits", "bit", -7),
    ("doc", "json", 12),
];

/// One row of the table as TiCDC writes it: every value a string.
fn row(id: i64, version: i64, with_extra: bool) -> BTreeMap<&'static str, J> {
    let mut r = BTreeMap::new();
    r.insert("id", json!(id.to_string()));
    r.insert("qty", json!((version % 30000).to_string()));
    r.insert(
        "amount",
        json!(format!("{}.{:04}", id * 7 - 5000, version % 10000)),
    );
    r.insert("price", json!(format!("{}.25", id)));
    r.insert("name", json!(format!("order-{id}-v{version}-ünï")));
    r.insert(
        "note",
        if version % 4 == 0 {
            J::Null
        } else {
            json!("a note")
        },
    );
    r.insert("created", json!("2024-02-29 23:59:58.123456"));
    r.insert("day", json!("1999-12-31"));
    r.insert("at", json!("2030-01-01 00:00:00"));
    r.insert("dur", json!("-838:59:59"));
    r.insert("yr", json!("2155"));
    // bytes 0, 10, 38 ('&'), 200, 255 the way TiCDC writes binary: one ISO-8859-1 char per byte
    r.insert("payload", json!("\u{0}\n&\u{c8}\u{ff}"));
    r.insert("flag", json!("-128"));
    r.insert("big", json!("18446744073709551615"));
    r.insert("kind", json!("2"));
    r.insert("tags", json!("5"));
    r.insert("bits", json!("9"));
    r.insert("doc", json!(r#"{"k": [1, 2]}"#));
    if with_extra {
        r.insert("extra", json!(format!("x{version}")));
    }
    r
}

fn types(with_extra: bool) -> (J, J) {
    let mut mysql = serde_json::Map::new();
    let mut sql = serde_json::Map::new();
    for (name, t, code) in COLUMNS {
        mysql.insert(name.to_string(), json!(t));
        sql.insert(name.to_string(), json!(code));
    }
    if with_extra {
        mysql.insert("extra".into(), json!("varchar"));
        sql.insert("extra".into(), json!(12));
    }
    (J::Object(mysql), J::Object(sql))
}

fn ordered(row: &BTreeMap<&'static str, J>) -> J {
    // TiCDC lists columns in table order; keep COLUMNS order, `extra` last.
    let mut m = serde_json::Map::new();
    for (name, ..) in COLUMNS {
        m.insert(name.to_string(), row[name].clone());
    }
    if let Some(x) = row.get("extra") {
        m.insert("extra".into(), x.clone());
    }
    J::Object(m)
}

fn dml(
    kind: &str,
    ts: u64,
    data: &BTreeMap<&'static str, J>,
    old: Option<&BTreeMap<&'static str, J>>,
) -> J {
    let with_extra = data.contains_key("extra");
    let (mysql, sql) = types(with_extra);
    json!({
        "id": 0, "database": "shop", "table": "orders", "pkNames": ["id"], "isDdl": false,
        "type": kind, "es": (ts >> 18) as i64, "ts": (ts >> 18) as i64 + 5, "sql": "",
        "sqlType": sql, "mysqlType": mysql,
        "data": [ordered(data)],
        "old": old.map(|o| json!([ordered(o)])),
        "_tidb": {"commitTs": ts}
    })
}

fn watermark(ts: u64) -> J {
    json!({
        "id": 0, "database": "", "table": "", "pkNames": null, "isDdl": false,
        "type": "TIDB_WATERMARK", "es": (ts >> 18) as i64, "ts": (ts >> 18) as i64,
        "sql": "", "sqlType": null, "mysqlType": null, "data": null, "old": null,
        "_tidb": {"watermarkTs": ts}
    })
}

/// A change the output must hold once: `(commit_ts, op, id)`.
type Change = (u64, &'static str, i64);

struct Feed {
    /// `(partition, message)` in the order TiCDC writes them.
    messages: Vec<(i32, J)>,
    /// Every distinct row change, in commit order.
    changes: Vec<Change>,
    ddl_ts: u64,
}

/// `txns` transactions of inserts, updates and deletes, keyed to partitions by id, with a
/// watermark on every partition every 40 transactions, a DDL halfway, and two TiCDC
/// restarts: one resends 60 transactions after their watermark, one resends the last 10
/// before the final watermark.
fn feed(txns: u64) -> Feed {
    let base = now_tso();
    let mut live: BTreeMap<i64, (i64, BTreeMap<&'static str, J>)> = BTreeMap::new();
    let mut messages = Vec::new();
    let mut changes = Vec::new();
    let mut by_txn: Vec<Vec<(i32, J)>> = Vec::new();
    let mut next_id = 1i64;
    let mut ddl_ts = 0;
    let mut rnd = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rnd ^= rnd << 13;
        rnd ^= rnd >> 7;
        rnd ^= rnd << 17;
        rnd
    };
    let part = |id: i64| (id % i64::from(PARTITIONS)) as i32;
    for t in 0..txns {
        let ts = base + (t + 1) * 1000;
        let extra = t >= txns / 2;
        if t == txns / 2 {
            ddl_ts = ts;
            messages.push((
                0,
                json!({
                    "id": 0, "database": "shop", "table": "orders", "pkNames": null,
                    "isDdl": true, "type": "ALTER", "es": (ts >> 18) as i64,
                    "ts": (ts >> 18) as i64, "sql": "ALTER TABLE `shop`.`orders` ADD COLUMN `extra` VARCHAR(10)",
                    "sqlType": null, "mysqlType": null, "data": null, "old": null,
                    "_tidb": {"commitTs": ts}
                }),
            ));
            by_txn.push(Vec::new());
            continue;
        }
        let mut txn = Vec::new();
        let mut touched = BTreeSet::new();
        for _ in 0..1 + next() % 3 {
            let choice = next() % 10;
            let existing: Vec<i64> = live.keys().copied().collect();
            if choice < 5 || existing.is_empty() {
                let id = next_id;
                next_id += 1;
                let data = row(id, 0, extra);
                txn.push((part(id), dml("INSERT", ts, &data, None)));
                live.insert(id, (0, data));
                changes.push((ts, "c", id));
                touched.insert(id);
            } else {
                let id = existing[(next() % existing.len() as u64) as usize];
                if !touched.insert(id) {
                    continue; // one change per row per transaction, as TiDB reports it
                }
                let (version, old) = live.remove(&id).unwrap_or_default();
                if choice < 8 {
                    let data = row(id, version + 1, extra);
                    txn.push((part(id), dml("UPDATE", ts, &data, Some(&old))));
                    live.insert(id, (version + 1, data));
                    changes.push((ts, "u", id));
                } else {
                    txn.push((part(id), dml("DELETE", ts, &old, None)));
                    changes.push((ts, "d", id));
                }
            }
        }
        messages.extend(txn.iter().cloned());
        by_txn.push(txn);
        let last = t + 1 == txns;
        if last {
            // TiCDC restarted before its final watermark: the last 10 transactions again.
            for txn in &by_txn[by_txn.len() - 10..] {
                messages.extend(txn.iter().cloned());
            }
        }
        if (t + 1) % 40 == 0 || last {
            for p in 0..PARTITIONS {
                messages.push((p, watermark(ts + 1)));
            }
        }
        if t + 1 == txns * 3 / 4 {
            // TiCDC restarted after a watermark: 60 transactions sent again, all below it.
            let n = by_txn.len();
            for txn in &by_txn[n - 60..n] {
                messages.extend(txn.iter().cloned());
            }
        }
    }
    Feed {
        messages,
        changes,
        ddl_ts,
    }
}

async fn produce(brokers: &str, topic: &str, messages: &[(i32, J)]) -> anyhow::Result<()> {
    let producer: FutureProducer = producer_config(brokers, None)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let mut pending = Vec::new();
    for (p, m) in messages {
        let payload = serde_json::to_vec(m)?;
        let producer = producer.clone();
        let topic = topic.to_string();
        let p = *p;
        pending.push(async move {
            producer
                .send(
                    FutureRecord::<(), _>::to(&topic)
                        .partition(p)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))
        });
        if pending.len() >= 500 {
            futures::future::try_join_all(pending.drain(..)).await?;
        }
    }
    futures::future::try_join_all(pending).await?;
    Ok(())
}

fn manifest(name: &str, brokers: &str, topic: &str, protocol: &str) -> String {
    format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: tidb
      tidb:
        brokers: "{brokers}"
        topics: ["{topic}"]
        protocol: {protocol}
        tables: ["shop.*"]
  defaultRoute: [realtime]
  realtime:
    brokers: "{brokers}"
    maxBatchEvents: 300
    lingerMs: 20
    partitions: 1
"#
    )
}

/// The output records: `(change, record value)` from the committed view, in offset order.
async fn output(brokers: &str, topic: &str) -> anyhow::Result<Vec<(Change, J)>> {
    let view = read_partition(brokers, topic, 0).await?;
    let mut out = Vec::new();
    for r in view.committed {
        let value: J = serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
        let op = match value["op"].as_str() {
            Some("c") => "c",
            Some("u") => "u",
            Some("d") => "d",
            _ => "ddl",
        };
        let ts = value["source"]["commit_ts"].as_u64().unwrap_or(0);
        let image = if op == "d" {
            &value["before"]
        } else {
            &value["after"]
        };
        let id = image["id"].as_i64().unwrap_or(-1);
        out.push(((ts, op, id), value));
    }
    Ok(out)
}

/// Runs the pipeline until `until` output records exist, then drops it mid-flight (no drain).
async fn run_until_killed(
    dir: &Path,
    manifest: &str,
    brokers: &str,
    out_topic: &str,
    until: usize,
) -> anyhow::Result<()> {
    let pipeline = syncmesh_crds::parse_manifest(manifest)?;
    let built = Pipeline::build(&pipeline, &options(dir), Arc::new(Metrics::new())).await?;
    let (stop_tx, stop) = StopSignal::new();
    let task = tokio::spawn(async move { built.run(stop_tx, stop).await });
    let reached = poll_until(Duration::from_secs(90), "output to grow", || async {
        let n = read_partition(brokers, out_topic, 0)
            .await
            .map(|v| v.committed.len())
            .unwrap_or(0);
        Ok((n >= until || task.is_finished()).then_some(n))
    })
    .await;
    task.abort();
    let _ = task.await;
    let n = reached?;
    eprintln!("killed with {n} records out (target {until})");
    Ok(())
}

/// Runs the pipeline until the output holds `expected` records, then stops it cleanly;
/// returns the metrics it exported.
async fn run_to_end(
    dir: &Path,
    manifest: &str,
    brokers: &str,
    out_topic: &str,
    expected: usize,
) -> anyhow::Result<String> {
    let pipeline = syncmesh_crds::parse_manifest(manifest)?;
    let metrics = Arc::new(Metrics::new());
    let built = Pipeline::build(&pipeline, &options(dir), metrics.clone()).await?;
    let (stop_tx, stop) = StopSignal::new();
    let stopper = stop_tx.clone();
    let task = tokio::spawn(async move { built.run(stop_tx, stop).await });
    let waited = poll_until(
        Duration::from_secs(120),
        "every change in the output",
        || async {
            let n = read_partition(brokers, out_topic, 0)
                .await
                .map(|v| v.committed.len())
                .unwrap_or(0);
            Ok((n >= expected || task.is_finished()).then_some(()))
        },
    )
    .await;
    let _ = stopper.send(true);
    let summary = task.await?;
    waited?;
    summary?;
    Ok(metrics.render())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changefeed_with_restarts_and_resends_yields_each_change_once_typed() -> anyhow::Result<()>
{
    let kafka = require!(services::kafka());
    let name = unique_name("ticdc", '-', 40);
    let topic = format!("{name}-changefeed");
    create_topic(&kafka.brokers, &topic, PARTITIONS).await?;
    let feed = feed(3000);
    let dir = tempfile::tempdir()?;
    let manifest = manifest(&name, &kafka.brokers, &topic, "canal-json");
    let out_topic = format!("{name}.shop.orders");
    let expected = feed.changes.len() + 1; // and the DDL

    // TiCDC writes the changefeed in three parts; after each of the first two the pipeline
    // is killed as soon as its output grows, mid-stream, with changes held for watermarks.
    let (first, rest) = feed.messages.split_at(feed.messages.len() * 2 / 5);
    let (second, third) = rest.split_at(rest.len() / 2);
    produce(&kafka.brokers, &topic, first).await?;
    run_until_killed(dir.path(), &manifest, &kafka.brokers, &out_topic, 1).await?;
    let seen = read_partition(&kafka.brokers, &out_topic, 0)
        .await?
        .committed
        .len();
    produce(&kafka.brokers, &topic, second).await?;
    run_until_killed(dir.path(), &manifest, &kafka.brokers, &out_topic, seen + 1).await?;
    produce(&kafka.brokers, &topic, third).await?;
    let metrics = run_to_end(dir.path(), &manifest, &kafka.brokers, &out_topic, expected).await?;
    for metric in [
        "syncmesh_tidb_events_total",
        "syncmesh_tidb_duplicates_total",
        "syncmesh_tidb_resolved_ts",
    ] {
        let value = metric_sum(&metrics, metric);
        assert!(value > 0.0, "{metric} exported and counting: {value}");
    }

    let out = output(&kafka.brokers, &out_topic).await?;
    let got: Vec<Change> = out.iter().map(|(c, _)| *c).collect();
    let ddl: Vec<&Change> = got.iter().filter(|c| c.1 == "ddl").collect();
    assert_eq!(ddl.len(), 1, "the DDL once");
    assert_eq!(ddl[0].0, feed.ddl_ts);
    let rows: Vec<Change> = got.iter().filter(|c| c.1 != "ddl").copied().collect();
    assert_eq!(
        rows.len(),
        feed.changes.len(),
        "each change once: {} produced ({} with resends), {} out",
        feed.changes.len(),
        feed.messages.len(),
        rows.len()
    );
    let mut sorted_out = rows.clone();
    sorted_out.sort();
    let mut sorted_in = feed.changes.clone();
    sorted_in.sort();
    assert_eq!(sorted_out, sorted_in, "the same changes");
    assert!(
        got.windows(2).all(|w| w[0].0 <= w[1].0),
        "commit order across partitions"
    );

    // Typed as the mysqlType says, in the Debezium JSON of the output.
    let (_, first) = out
        .iter()
        .find(|((_, op, _), _)| *op == "c")
        .ok_or_else(|| anyhow::anyhow!("no insert"))?;
    let after = &first["after"];
    assert!(after["id"].is_i64(), "{after}");
    assert!(after["qty"].is_i64(), "{after}");
    assert_eq!(
        after["amount"]
            .as_str()
            .map(|s| s.split('.').nth(1).map(str::len)),
        Some(Some(4))
    );
    assert!(after["price"].is_f64(), "{after}");
    assert_eq!(after["created"], "2024-02-29T23:59:58.123456");
    assert_eq!(after["day"], "1999-12-31");
    assert_eq!(after["dur"], "-838:59:59");
    assert_eq!(after["yr"], 2155);
    assert_eq!(
        after["payload"], "AAomyP8=",
        "bytes 0,10,38,200,255 as base64"
    );
    assert_eq!(after["flag"], -128);
    assert_eq!(after["big"], "18446744073709551615");
    assert_eq!(after["kind"], 2);
    assert_eq!(after["doc"], r#"{"k": [1, 2]}"#);
    assert!(
        first["after"]["name"]
            .as_str()
            .unwrap_or("")
            .ends_with("ünï")
    );
    let late = out
        .iter()
        .find(|((ts, op, _), _)| *op == "c" && *ts > feed.ddl_ts)
        .ok_or_else(|| anyhow::anyhow!("no insert after the DDL"))?;
    assert_eq!(late.1["after"]["extra"], "x0", "the column the DDL added");
    Ok(())
}

/// TiCDC's debezium protocol, keyed by the primary key, through the same source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debezium_protocol_is_read_too() -> anyhow::Result<()> {
    let kafka = require!(services::kafka());
    let name = unique_name("ticdc-dbz", '-', 40);
    let topic = format!("{name}-changefeed");
    create_topic(&kafka.brokers, &topic, 1).await?;
    let base = now_tso();
    let schema = json!({"type": "struct", "fields": [
        {"type": "struct", "optional": true, "field": "before", "fields": [
            {"type": "int32", "optional": false, "field": "id"},
            {"type": "double", "optional": true, "field": "amount", "tidb_type": "DECIMAL"},
            {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "day"}]},
        {"type": "struct", "optional": true, "field": "after", "fields": [
            {"type": "int32", "optional": false, "field": "id"},
            {"type": "double", "optional": true, "field": "amount", "tidb_type": "DECIMAL"},
            {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "day"}]}]});
    let source = |ts: u64| {
        json!({"version": "2.4.0.Final", "connector": "TiCDC", "name": "c", "ts_ms": (ts >> 18) as i64,
               "snapshot": "false", "db": "shop", "table": "items", "server_id": 0, "gtid": null,
               "file": "", "pos": 0, "row": 0, "thread": 0, "query": null, "commit_ts": ts,
               "cluster_id": "c"})
    };
    let mut messages = Vec::new();
    for i in 1..=50i64 {
        let ts = base + i as u64 * 1000;
        let value = json!({"payload": {"source": source(ts), "ts_ms": 1, "transaction": null,
            "op": "c", "before": null, "after": {"id": i, "amount": 10.5, "day": 19000}},
            "schema": schema});
        messages.push((
            json!({"payload": {"id": i}, "schema": {"type": "struct", "fields": []}}),
            value,
        ));
    }
    let ts = base + 60_000;
    messages.push((
        json!({"payload": {}, "schema": {"type": "struct", "fields": []}}),
        json!({"payload": {"source": source(ts), "op": "m", "ts_ms": 1, "transaction": null}}),
    ));
    let producer: FutureProducer = producer_config(&kafka.brokers, None).create()?;
    for (key, value) in &messages {
        let (k, v) = (serde_json::to_vec(key)?, serde_json::to_vec(value)?);
        producer
            .send(
                FutureRecord::to(&topic).key(&k).payload(&v),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    }
    let dir = tempfile::tempdir()?;
    let out_topic = format!("{name}.shop.items");
    run_to_end(
        dir.path(),
        &manifest(&name, &kafka.brokers, &topic, "debezium"),
        &kafka.brokers,
        &out_topic,
        50,
    )
    .await?;
    let out = output(&kafka.brokers, &out_topic).await?;
    let ids: Vec<i64> = out.iter().map(|((_, _, id), _)| *id).collect();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    assert_eq!(out[0].1["after"]["amount"], "10.5");
    assert_eq!(out[0].1["after"]["day"], "2022-01-08");
    Ok(())
}
