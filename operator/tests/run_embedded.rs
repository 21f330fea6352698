//! `syncmesh run` end to end on the embedded default: the quickstart manifest, a restart, a
//! SIGKILL in the middle of a run, bad records and bad input.

mod common;

use common::{
    RECORD, bin, checkpointed_record_count, many_records, repo_root, run_and_kill_at, syncmesh,
    text,
};
use serde_json::Value as J;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use syncmesh_connectors::event::Value;
use syncmesh_connectors::sources::flatfile::{DecodeOptions, Layout, RecordDecoder};

/// A copy of the quickstart (manifest, copybook, data) in a temporary directory.
fn quickstart_copy(data_files: &[(&str, Vec<u8>)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let examples = repo_root().join("deploy/examples");
    std::fs::copy(examples.join("ledger.cpy"), dir.path().join("ledger.cpy")).expect("copy layout");
    let manifest = dir.path().join("quickstart.yaml");
    std::fs::copy(examples.join("quickstart.yaml"), &manifest).expect("copy manifest");
    std::fs::create_dir(dir.path().join("data")).expect("data dir");
    if data_files.is_empty() {
        for f in ["ledger-0001.dat", "ledger-0002.dat"] {
            std::fs::copy(
                examples.join("data").join(f),
                dir.path().join("data").join(f),
            )
            .expect("copy data");
        }
    }
    for (name, bytes) in data_files {
        std::fs::write(dir.path().join("data").join(name), bytes).expect("write data");
    }
    (dir, manifest)
}

/// What the sink must hold: the last record per ACCOUNT-ID, over the files in name order.
fn expected_rows(data: &Path) -> BTreeMap<i64, Vec<Value>> {
    let layout = Layout::load(repo_root().join("deploy/examples/ledger.cpy")).expect("layout");
    let decoder = RecordDecoder::new(&layout, DecodeOptions::default()).expect("decoder");
    let mut files: Vec<_> = std::fs::read_dir(data)
        .expect("data dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut rows = BTreeMap::new();
    for f in files {
        let bytes = std::fs::read(&f).expect("read data");
        for rec in bytes.chunks(RECORD) {
            if let Ok(values) = decoder.decode(rec) {
                let Value::Int(id) = values[0] else {
                    panic!("ACCOUNT-ID is an integer")
                };
                rows.insert(id, values);
            }
        }
    }
    rows
}

/// Every row of the sink table, as text, by ACCOUNT-ID.
fn sink_rows(db: &Path) -> BTreeMap<i64, Vec<String>> {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        use sqlx::{Row, sqlite::SqlitePoolOptions};
        let pool = SqlitePoolOptions::new()
            .connect(&format!("sqlite://{}?mode=ro", db.display()))
            .await
            .expect("open sink");
        let rows = sqlx::query("SELECT * FROM ledger")
            .fetch_all(&pool)
            .await
            .expect("select");
        let mut out = BTreeMap::new();
        for row in rows {
            let id: i64 = row.try_get(0).expect("id");
            let mut values = Vec::new();
            for i in 0..row.len() {
                let v: Result<String, _> = row.try_get(i);
                values.push(v.unwrap_or_else(|_| {
                    row.try_get::<i64, _>(i)
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                }));
            }
            assert!(out.insert(id, values).is_none(), "ACCOUNT-ID {id} twice");
        }
        out
    })
}

fn assert_sink_equals_source(dir: &Path) {
    let expected = expected_rows(&dir.join("data"));
    let actual = sink_rows(&dir.join("out/sink.db"));
    assert_eq!(actual.len(), expected.len(), "rows in the sink");
    for (id, values) in &expected {
        let row = actual
            .get(id)
            .unwrap_or_else(|| panic!("ACCOUNT-ID {id} missing from the sink"));
        // Column 4 is BALANCE (COMP-3, scale 2): exact decimal text.
        assert_eq!(row[4], values[4].key_text(), "BALANCE of {id}");
        assert_eq!(row[2], values[2].key_text(), "CUSTOMER-NAME of {id}");
    }
}

fn lineage(dir: &Path) -> Vec<J> {
    std::fs::read_to_string(dir.join("out/lineage.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("lineage line is JSON"))
        .collect()
}

fn manifests_rows(dir: &Path) -> u64 {
    let mut rows = 0;
    let root = dir.join("out/snapshots/bank.ledger/_manifests");
    for entry in std::fs::read_dir(root).expect("manifests") {
        let m: J =
            serde_json::from_slice(&std::fs::read(entry.expect("entry").path()).expect("read"))
                .expect("json");
        let files = m["files"].as_array().expect("files");
        assert!(!files.is_empty());
        rows += m["rows"].as_u64().expect("rows");
    }
    rows
}

fn events_read(stdout: &str) -> u64 {
    stdout
        .split_whitespace()
        .skip_while(|w| !w.ends_with(':'))
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {stdout:?}"))
}

#[test]
fn quickstart_runs_end_to_end_and_a_rerun_adds_nothing() {
    let (dir, manifest) = quickstart_copy(&[]);
    let m = manifest.to_str().expect("utf-8 path");
    let out = syncmesh(&["run", m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let total_records = 10_500;
    assert_eq!(events_read(&text(&out.stdout)), total_records);
    assert_eq!(
        manifests_rows(dir.path()),
        total_records,
        "every record is in a committed snapshot"
    );
    assert_sink_equals_source(dir.path());

    let events = lineage(dir.path());
    let types: Vec<_> = events
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(types, ["START", "COMPLETE"]);
    assert_eq!(events[0]["run"]["runId"], events[1]["run"]["runId"]);
    assert_eq!(events[0]["job"]["name"], "quickstart");
    assert!(!events[0]["inputs"].as_array().expect("inputs").is_empty());
    assert!(
        events[1]["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .any(|o| o["outputFacets"]["outputStatistics"]["rowCount"] == total_records)
    );

    // Again: the checkpoint says every file is complete; nothing is read, nothing duplicated.
    let out = syncmesh(&["run", m]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(events_read(&text(&out.stdout)), 0);
    assert_sink_equals_source(dir.path());
    assert_eq!(lineage(dir.path()).len(), 4);
}

#[test]
fn sigkill_midway_then_restart_delivers_every_record_once() {
    const FILES: usize = 6;
    const PER_FILE: usize = 10_000;
    let total = (FILES * PER_FILE) as u64;
    let files = many_records(FILES, PER_FILE);
    let (dir, manifest) = quickstart_copy(
        &files
            .iter()
            .map(|(n, b)| (n.as_str(), b.clone()))
            .collect::<Vec<_>>(),
    );
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest)
            .expect("manifest")
            .replace("ledger-*.dat", "big-*.dat")
            .replace("maxEvents: 4000", "maxEvents: 1500"),
    )
    .expect("edit manifest");
    // Killed three times, in the first, the third and the fifth file; each restart resumes
    // from the checkpoint the previous run left, never from the start.
    let mut committed = 0;
    for threshold in [6_000, 25_000, 45_000] {
        let at_kill = run_and_kill_at(dir.path(), &manifest, "quickstart", threshold);
        assert!(at_kill < total, "killed at {at_kill}, before the end");
        assert!(
            at_kill >= committed,
            "the checkpoint went back from {committed} to {at_kill}"
        );
        committed = at_kill;
    }

    let out = syncmesh(&["run", manifest.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reread = events_read(&text(&out.stdout));
    assert!(
        reread <= total - committed,
        "resumed from the checkpoint: read {reread} after {committed} were committed"
    );
    assert_eq!(checkpointed_record_count(dir.path(), "quickstart"), total);
    // Every record in the sink exactly once (sink_rows fails on a repeated ACCOUNT-ID), with
    // the values of the last record per key.
    assert_sink_equals_source(dir.path());
    assert_eq!(
        sink_rows(&dir.path().join("out/sink.db")).len() as u64,
        total,
        "one row per record"
    );
    // Every record is in a committed snapshot (a replay after a kill may add it twice).
    assert!(manifests_rows(dir.path()) >= total);
    // Snapshots a killed writer left without a manifest were removed on restart.
    let listed: usize = std::fs::read_dir(dir.path().join("out/snapshots/bank.ledger/_manifests"))
        .expect("manifests")
        .count();
    let data_files = std::fs::read_dir(dir.path().join("out/snapshots/bank.ledger"))
        .expect("table dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("dt="))
        .flat_map(|d| {
            std::fs::read_dir(d.path())
                .expect("partition")
                .filter_map(Result::ok)
        })
        .count();
    assert_eq!(
        data_files, listed,
        "one data file per committed snapshot, no orphans"
    );
}

#[test]
fn a_bad_record_goes_to_dead_letters_and_the_run_goes_on() {
    let mut bytes =
        std::fs::read(repo_root().join("deploy/examples/data/ledger-0002.dat")).expect("sample");
    // Record 3: a letter inside the zoned OPEN-DATE field (bytes 69..77 of the record).
    bytes[2 * RECORD + 70] = b'X';
    let (dir, manifest) = quickstart_copy(&[("ledger-0001.dat", bytes)]);
    let out = syncmesh(&["run", manifest.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let letters =
        std::fs::read_to_string(dir.path().join("out/dead-letters.jsonl")).expect("dead letters");
    let lines: Vec<J> = letters
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 1);
    let reason = lines[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("record 3") && reason.contains("OPEN-DATE") && reason.contains("byte 200"),
        "{reason}"
    );
    assert_eq!(lines[0]["position"]["offset"], 200);
    assert_eq!(sink_rows(&dir.path().join("out/sink.db")).len(), 499);
}

#[test]
fn bad_input_is_a_one_line_error_with_exit_code_2() {
    let (dir, manifest) = quickstart_copy(&[]);
    let m = manifest.to_str().expect("utf-8");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    let cases = [
        (
            original.replace("primaryKey", "primaryKeys"),
            "spec.sources[0].flatFile.primaryKeys",
        ),
        (
            original.replace("maxEvents: 4000", "maxEvents: many"),
            "spec.batch.maxEvents",
        ),
        (
            original.replace("[ACCOUNT-ID]", "[ACCOUNT-NO]"),
            "spec.sources[0].flatFile.primaryKey[0]",
        ),
        (
            original.replace("layout: ledger.cpy", "layout: missing.cpy"),
            "spec.sources[0].flatFile.layout",
        ),
        (
            original.replace("path: data", "path: nowhere"),
            "spec.sources[0].flatFile.path",
        ),
    ];
    for (text_, path) in cases {
        std::fs::write(&manifest, &text_).expect("write");
        for cmd in ["validate", "run"] {
            let out = syncmesh(&[cmd, m]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{cmd} with {path}: {}",
                text(&out.stderr)
            );
            assert!(
                text(&out.stderr).contains(path),
                "{cmd}: {} should name {path}",
                text(&out.stderr)
            );
        }
    }
    std::fs::write(&manifest, &original).expect("write");
    let out = syncmesh(&["validate", m]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = syncmesh(&[
        "run",
        dir.path().join("absent.yaml").to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("absent.yaml"));

    // A corrupt checkpoint is reported, never silently reset.
    let out = syncmesh(&["run", m]);
    assert!(out.status.success());
    let cp = dir.path().join(".syncmesh/quickstart/checkpoint");
    let damaged = std::fs::read_to_string(&cp)
        .expect("checkpoint")
        .replace("ledger-0002", "ledger-0003");
    std::fs::write(&cp, damaged).expect("damage");
    let out = syncmesh(&["run", m]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("corrupt"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn follow_picks_up_new_files_and_sigterm_drains_cleanly() {
    let (dir, manifest) = quickstart_copy(&[]);
    // Start with only the first file; the second arrives while the pipeline follows.
    let second = dir.path().join("data/ledger-0002.dat");
    let held = std::fs::read(&second).expect("read");
    std::fs::remove_file(&second).expect("remove");
    let child = Command::new(bin())
        .args([
            "run",
            manifest.to_str().expect("utf-8"),
            "--follow",
            "--poll-ms",
            "100",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let wait_for = |records: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while checkpointed_record_count(dir.path(), "quickstart") < records {
            assert!(
                Instant::now() < deadline,
                "checkpoint never reached {records} records"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(10_000);
    // Write under a name the pattern ignores, then rename: the file appears whole.
    let tmp = dir.path().join("data/.incoming");
    std::fs::write(&tmp, &held).expect("write");
    std::fs::rename(&tmp, &second).expect("rename");
    wait_for(10_500);
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "drained and exited 0: {}",
        text(&out.stderr)
    );
    assert_eq!(events_read(&text(&out.stdout)), 10_500);
    assert_sink_equals_source(dir.path());
    let types: Vec<_> = lineage(dir.path())
        .iter()
        .map(|e| e["eventType"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        types,
        ["START", "ABORT"],
        "a stopped streaming run reports ABORT"
    );
}

/// SIGHUP applies the manifest's new routes to a following run without a restart: after the
/// quickstart's routes are changed to discard `bank.*`, a file that arrives is read but never
/// reaches the batch path, while what was routed before stays in the sink. A change to
/// anything else is refused and the running routes stay.
#[test]
fn sighup_reloads_the_routes_without_a_restart() {
    let (dir, manifest) = quickstart_copy(&[]);
    let second = dir.path().join("data/ledger-0002.dat");
    let held = std::fs::read(&second).expect("read");
    std::fs::remove_file(&second).expect("remove");
    let log = dir.path().join("run.log");
    let child = Command::new(bin())
        .args([
            "run",
            manifest.to_str().expect("utf-8"),
            "--follow",
            "--poll-ms",
            "100",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    let wait_until = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let logged = |needle: &str, times: usize| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(needle)
            .count()
            >= times
    };
    wait_until("the first file checkpointed", &|| {
        checkpointed_record_count(dir.path(), "quickstart") >= 10_000
    });

    // A change outside the routes is refused.
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        original.replace("maxEvents: 4000", "maxEvents: 3000"),
    )
    .expect("edit");
    signal("-HUP");
    wait_until("the refusal logged", &|| logged("routes not reloaded", 1));
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("spec.batch"),
        "the refusal names the field"
    );

    // New routes: bank.* is discarded from now on.
    let discard = original.replace("      to: [batch]\n", "      to: []\n");
    assert_ne!(discard, original, "the quickstart routes bank.* to batch");
    std::fs::write(&manifest, discard).expect("edit");
    signal("-HUP");
    wait_until("the reload logged", &|| {
        logged("SIGHUP: routes reloaded", 1)
    });

    let tmp = dir.path().join("data/.incoming");
    std::fs::write(&tmp, &held).expect("write");
    std::fs::rename(&tmp, &second).expect("rename");
    wait_until("the second file checkpointed", &|| {
        checkpointed_record_count(dir.path(), "quickstart") >= 10_500
    });
    signal("-TERM");
    let out = child.wait_with_output().expect("wait");
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "drained and exited 0: {stderr}");
    let stdout = text(&out.stdout);
    assert_eq!(events_read(&stdout), 10_500, "{stdout}");
    assert!(
        stdout.contains("batch     10000 events acknowledged"),
        "only the first file reached the batch path: {stdout}"
    );
    assert_eq!(manifests_rows(dir.path()), 10_000);
}

/// A PostgreSQL sink whose URL has no password: `spec.sink.passwordEnv` names the variable
/// that holds it. Without the variable the run stops before reading anything, naming the field
/// and the variable; with it, every ledger row is in the table.
#[test]
fn a_sink_password_comes_from_the_environment() {
    let Some(pg) = syncmesh_tests::services::postgres() else {
        assert!(
            std::env::var("SYNCMESH_REQUIRE_SERVICES").is_err(),
            "SYNCMESH_POSTGRES_URL is required"
        );
        return;
    };
    let mut url = url::Url::parse(&pg.url).expect("SYNCMESH_POSTGRES_URL parses");
    let password = url
        .password()
        .expect("the test database has a password")
        .to_string();
    url.set_password(None).expect("a URL with a host");
    let table = syncmesh_tests::unique_name("ledger_pwenv", '_', 40);
    let (dir, manifest) = quickstart_copy(&[]);
    let yaml = std::fs::read_to_string(&manifest).expect("manifest");
    let yaml = yaml.replace(
        "  sink:\n    url: sqlite://out/sink.db\n",
        &format!(
            "  sink:\n    url: \"{url}\"\n    passwordEnv: SYNCMESH_TEST_SINK_PASSWORD\n    tables: {{bank.ledger: {table}}}\n"
        ),
    );
    assert!(
        yaml.contains("passwordEnv"),
        "the quickstart's sink section moved"
    );
    std::fs::write(&manifest, yaml).expect("write manifest");
    let manifest = manifest.to_str().expect("utf-8 path");

    let without = Command::new(bin())
        .args(["run", manifest])
        .env_remove("SYNCMESH_TEST_SINK_PASSWORD")
        .output()
        .expect("run syncmesh");
    let stderr = text(&without.stderr);
    assert!(!without.status.success(), "ran without its password");
    assert!(
        stderr.contains("spec.sink.passwordEnv")
            && stderr.contains("`SYNCMESH_TEST_SINK_PASSWORD` is not set"),
        "{stderr}"
    );
    assert!(!stderr.contains(&password), "the error shows no password");

    let with = Command::new(bin())
        .args(["run", manifest])
        .env("SYNCMESH_TEST_SINK_PASSWORD", &password)
        .output()
        .expect("run syncmesh");
    assert!(with.status.success(), "{}", text(&with.stderr));
    let expected = expected_rows(&dir.path().join("data")).len() as i64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let rows: i64 = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url).await.expect("connect");
        let n = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .expect("count");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
            .execute(&pool)
            .await
            .expect("drop");
        n
    });
    assert_eq!(rows, expected);
}
