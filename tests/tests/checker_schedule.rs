//! Scheduled and on-demand checks on real databases: a trigger runs every table, each outcome
//! arrives on the channel (passed, then failed with its counts), metrics and OpenLineage
//! data-quality facets record it; and a pipeline with `spec.check` runs its checks on demand
//! while it follows its source.

use serde_json::Value as J;
use std::sync::Arc;
use std::time::Duration;
use syncmesh_connectors::checker::{CheckOptions, CheckScheduler, CheckVerdict, ScheduledTable};
use syncmesh_connectors::lineage::FileEmitter;
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::pipeline::{Pipeline, PipelineOptions};
use syncmesh_connectors::runtime::StopSignal;
use syncmesh_connectors::sinks::table::TableName;
use syncmesh_tests::sql::MysqlScratch;
use syncmesh_tests::{require, services};
use tokio::sync::broadcast;

async fn next_outcome(
    rx: &mut broadcast::Receiver<syncmesh_connectors::checker::CheckOutcome>,
) -> anyhow::Result<syncmesh_connectors::checker::CheckOutcome> {
    Ok(tokio::time::timeout(Duration::from_secs(60), rx.recv()).await??)
}

fn lineage_lines(path: &std::path::Path) -> Vec<J> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn on_demand_checks_report_outcomes_metrics_and_lineage() -> anyhow::Result<()> {
    let my = require!(services::mysql());
    let pg = require!(services::postgres());
    let scratch = MysqlScratch::create(&my.url, "ck_sched").await?;
    let table = syncmesh_tests::unique_table("ck_sched");
    let pg_pool = sqlx::PgPool::connect(&pg.url).await?;
    let ddl = format!("CREATE TABLE {table} (id BIGINT PRIMARY KEY, v VARCHAR(20))");
    let rows: Vec<String> = (1..=50).map(|i| format!("({i}, 'v{i}')")).collect();
    let insert = format!("INSERT INTO {table} VALUES {}", rows.join(", "));
    for sql in [&ddl, &insert] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&scratch.pool)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&pg_pool)
            .await?;
    }

    let dir = tempfile::tempdir()?;
    let lineage_path = dir.path().join("lineage.jsonl");
    let metrics = Metrics::new();
    let scheduler = CheckScheduler::new(
        "orders",
        None,
        vec![ScheduledTable {
            name: format!("shop.{table}"),
            source_url: scratch.url.clone(),
            source_table: TableName::new(&table),
            sink_url: pg.url.clone(),
            sink_table: TableName::new(&table),
        }],
        CheckOptions {
            chunk_size: 10,
            ..CheckOptions::default()
        },
        &metrics.registry,
        Arc::new(FileEmitter::open(&lineage_path).await?),
        "syncmesh-test",
    )?;
    let trigger = scheduler.trigger();
    let mut outcomes = scheduler.subscribe();
    let (stop_tx, stop) = StopSignal::new();
    let task = tokio::spawn(scheduler.run(stop));

    assert!(trigger.request());
    let passed = next_outcome(&mut outcomes).await?;
    assert_eq!(passed.verdict, CheckVerdict::Passed, "{passed:?}");
    assert_eq!((passed.source_rows, passed.sink_rows), (50, 50));
    assert_eq!(passed.table, format!("shop.{table}"));

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE id = 5; UPDATE {table} SET v = 'x' WHERE id = 6"
    )))
    .execute(&pg_pool)
    .await?;
    assert!(trigger.request());
    let failed = next_outcome(&mut outcomes).await?;
    match &failed.verdict {
        CheckVerdict::Failed {
            missing,
            extra,
            different,
            diff_ratio,
        } => {
            assert_eq!((*missing, *extra, *different), (1, 0, 1));
            assert!((diff_ratio - 2.0 / 50.0).abs() < 1e-12);
        }
        other => panic!("expected a failed check, got {other:?}"),
    }
    assert!(!failed.passed());

    let text = metrics.render();
    let series = format!("pipeline=\"orders\",table=\"shop.{table}\"");
    for want in [
        format!("syncmesh_check_last_result{{{series}}} 0"),
        format!("syncmesh_check_mismatched_rows{{{series}}} 2"),
        format!("syncmesh_check_duration_seconds_count{{{series}}} 2"),
        format!(
            "syncmesh_check_rows_compared_total{{pipeline=\"orders\",side=\"source\",table=\"shop.{table}\"}} 100"
        ),
        format!(
            "syncmesh_check_rows_compared_total{{pipeline=\"orders\",side=\"sink\",table=\"shop.{table}\"}} 99"
        ),
    ] {
        assert!(text.contains(&want), "missing `{want}` in\n{text}");
    }

    let events = lineage_lines(&lineage_path);
    let types: Vec<&str> = events
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .collect();
    assert_eq!(types, ["START", "COMPLETE", "START", "COMPLETE"]);
    let done = &events[3];
    assert_eq!(done["job"]["name"], "orders.check");
    assert_eq!(done["run"]["runId"], events[2]["run"]["runId"]);
    let source = &done["inputs"][0];
    let sink = &done["inputs"][1];
    assert_eq!(source["inputFacets"]["dataQualityMetrics"]["rowCount"], 50);
    assert_eq!(sink["inputFacets"]["dataQualityMetrics"]["rowCount"], 49);
    let assertions = &sink["inputFacets"]["dataQualityAssertions"];
    assert!(
        assertions["_schemaURL"]
            .as_str()
            .is_some_and(|u| u.ends_with(
                "DataQualityAssertionsDatasetFacet.json#/$defs/DataQualityAssertionsDatasetFacet"
            ))
    );
    assert!(assertions["_producer"].is_string());
    assert_eq!(assertions["assertions"][0]["assertion"], "row_count");
    assert_eq!(assertions["assertions"][0]["success"], false);
    assert_eq!(assertions["assertions"][1]["success"], false);
    assert_eq!(assertions["assertions"][1]["actual"], "2");
    assert_eq!(
        events[1]["inputs"][1]["inputFacets"]["dataQualityAssertions"]["assertions"][1]["success"],
        true
    );
    assert!(
        !sink["namespace"]
            .as_str()
            .unwrap_or("")
            .contains("syncmesh:"),
        "no credentials in namespaces"
    );

    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(10), task).await??;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&pg_pool)
        .await?;
    scratch.drop_database().await
}

/// The quickstart pipeline with a `check` section: while it follows its files, an on-demand
/// check compares the sink it wrote with a source database (here the sink file itself, so
/// the outcome must pass with the rows the pipeline wrote).
#[tokio::test]
async fn a_following_pipeline_runs_its_checks_on_demand() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let examples = root.join("deploy/examples");
    let dir = tempfile::tempdir()?;
    std::fs::copy(examples.join("ledger.cpy"), dir.path().join("ledger.cpy"))?;
    std::fs::create_dir(dir.path().join("data"))?;
    std::fs::copy(
        examples.join("data/ledger-0001.dat"),
        dir.path().join("data/ledger-0001.dat"),
    )?;
    let text = std::fs::read_to_string(examples.join("quickstart.yaml"))?;
    let manifest = format!(
        "{}\n  check:\n    sourceUrl: sqlite://out/sink.db\n    schedule: '0 2 * * *'\n    chunkSize: 1000\n",
        text.trim_end()
    );
    let pipeline: syncmesh_crds::SyncPipeline = syncmesh_crds::parse_manifest(&manifest)?;
    let options = PipelineOptions {
        base_dir: dir.path().to_path_buf(),
        state_dir: dir.path().join("state"),
        follow: Some(Duration::from_millis(200)),
        channel_capacity: 16,
        checkpoint_interval: Duration::from_millis(200),
    };
    std::fs::create_dir_all(&options.state_dir)?;
    let metrics = Arc::new(Metrics::new());
    let built = Pipeline::build(&pipeline, &options, metrics.clone()).await?;
    let trigger = built.check_trigger().expect("spec.check makes a scheduler");
    let outcomes = built.check_outcomes().expect("outcomes");
    let (stop_tx, stop) = StopSignal::new();
    let run = tokio::spawn(built.run(stop_tx.clone(), stop));

    // Ask for checks until one passes over the rows the pipeline has applied by then.
    let outcome = syncmesh_tests::poll_until(
        Duration::from_secs(60),
        "a passing on-demand check over applied rows",
        || {
            let (trigger, mut rx) = (trigger.clone(), outcomes.resubscribe());
            async move {
                anyhow::ensure!(trigger.request(), "the scheduler is gone");
                let o = next_outcome(&mut rx).await?;
                if o.passed() && o.source_rows > 0 {
                    Ok(Some(o))
                } else {
                    Err(anyhow::anyhow!("last outcome: {:?}", o.verdict))
                }
            }
        },
    )
    .await?;
    assert_eq!(
        outcome.pipeline,
        pipeline.metadata.name.clone().unwrap_or_default()
    );
    assert_eq!(outcome.source_rows, outcome.sink_rows);
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(30), run).await???;
    Ok(())
}
