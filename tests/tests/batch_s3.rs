//! The batch path against the real S3 server (moto) behind a TCP proxy that can cut it off:
//! a mid-run outage is retried and every event lands in a committed snapshot exactly once; an
//! outage longer than the retry bound fails the run without acknowledging what was not
//! committed, and the restarted run removes the orphans and completes, again exactly once.
//! Snapshots are read back through the product's reader (Parquet), which checks every file's
//! size and hash against its manifest.

use anyhow::Context;
use serde_json::Value as J;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use syncmesh_connectors::event::{TableId, Value};
use syncmesh_connectors::metrics::Metrics;
use syncmesh_connectors::paths::batch::{SnapshotKind, SnapshotWriter};
use syncmesh_connectors::paths::store::open_store;
use syncmesh_connectors::pipeline::{Pipeline, PipelineOptions};
use syncmesh_connectors::runtime::{RunSummary, StopSignal};
use syncmesh_crds::S3Spec;
use syncmesh_tests::pipeline::examples;
use syncmesh_tests::s3::TestBucket;
use syncmesh_tests::services::S3;
use syncmesh_tests::{require, services, unique_name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

const RECORD: usize = 100;
const RECORDS: usize = 12_000;
const FIRST_ID: u64 = 4_000_000_000;

/// A TCP proxy to the S3 server that fails on command: while down, it closes every accepted
/// connection at once and has cut the open ones, so clients see resets and refusals.
struct FaultProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    /// Requests that started with `PUT ` (counted per read, which is enough to trigger on).
    puts: Arc<AtomicU64>,
    /// Connections refused or cut while down.
    cut: Arc<AtomicU64>,
    tunnels: Arc<Mutex<Vec<AbortHandle>>>,
    trigger: Arc<Mutex<Option<Trigger>>>,
}

/// `(after this many PUTs, for how long; None: until told)`.
type Trigger = (u64, Option<Duration>);

impl FaultProxy {
    async fn start(upstream: &str) -> anyhow::Result<Arc<Self>> {
        let upstream: String = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let proxy = Arc::new(Self {
            addr: listener.local_addr()?,
            down: Arc::default(),
            puts: Arc::default(),
            cut: Arc::default(),
            tunnels: Arc::default(),
            trigger: Arc::default(),
        });
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.down.load(Ordering::SeqCst) {
                    p.cut.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let task = tokio::spawn(p.clone().tunnel(client, server));
                p.tunnels
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(task.abort_handle());
            }
        });
        Ok(proxy)
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn tunnel(self: Arc<Self>, client: TcpStream, server: TcpStream) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let me = self.clone();
        let up = async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if buf[..n].starts_with(b"PUT ") {
                    me.on_put();
                }
                if me.down.load(Ordering::SeqCst) || sw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        let down = async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
    }

    fn on_put(&self) {
        let n = self.puts.fetch_add(1, Ordering::SeqCst) + 1;
        let mut trigger = self.trigger.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((after, outage)) = *trigger
            && n >= after
        {
            *trigger = None;
            self.set_down(true);
            if let Some(outage) = outage {
                let down = self.down.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(outage).await;
                    down.store(false, Ordering::SeqCst);
                });
            }
        }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            let tunnels =
                std::mem::take(&mut *self.tunnels.lock().unwrap_or_else(|e| e.into_inner()));
            self.cut.fetch_add(tunnels.len() as u64, Ordering::SeqCst);
            for t in tunnels {
                t.abort();
            }
        }
    }

    fn fail_after_puts(&self, puts: u64, outage: Option<Duration>) {
        *self.trigger.lock().unwrap_or_else(|e| e.into_inner()) = Some((puts, outage));
    }
}

/// A ledger file of `RECORDS` records with unique ACCOUNT-IDs from `FIRST_ID`, and the layout.
fn ledger(dir: &Path) -> anyhow::Result<()> {
    let sample = std::fs::read(examples().join("data/ledger-0001.dat"))?;
    let mut bytes = Vec::with_capacity(RECORDS * RECORD);
    for i in 0..RECORDS {
        let rec = &sample[(i % (sample.len() / RECORD)) * RECORD..][..RECORD];
        bytes.extend_from_slice(format!("{:010}", FIRST_ID + i as u64).as_bytes());
        bytes.extend_from_slice(&rec[10..]);
    }
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::write(dir.join("data/ledger-0001.dat"), bytes)?;
    std::fs::copy(examples().join("ledger.cpy"), dir.join("ledger.cpy"))?;
    Ok(())
}

fn manifest(name: &str, url: &str, endpoint: &str, region: &str, retry_s: u64) -> String {
    format!(
        r#"
apiVersion: syncmesh.io/v1alpha1
kind: SyncPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: ledger
      flatFile:
        path: data
        pattern: "ledger-*.dat"
        layout: ledger.cpy
        table: bank.ledger
        primaryKey: [ACCOUNT-ID]
  defaultRoute: [batch]
  batch:
    url: {url}
    maxEvents: 400
    retryTimeoutSeconds: {retry_s}
    s3: {{endpoint: "{endpoint}", region: {region}, allowHttp: true}}
"#
    )
}

async fn run(dir: &Path, manifest: &str) -> anyhow::Result<RunSummary> {
    let pipeline = syncmesh_crds::parse_manifest(manifest)?;
    let options = PipelineOptions {
        base_dir: dir.to_path_buf(),
        state_dir: dir.join("state"),
        follow: None,
        channel_capacity: 4,
        checkpoint_interval: Duration::from_millis(50),
    };
    let built = Pipeline::build(&pipeline, &options, Arc::new(Metrics::new())).await?;
    let (stop_tx, stop) = StopSignal::new();
    Ok(built.run(stop_tx, stop).await?)
}

/// A reader on the bucket, straight to the server (not through the proxy).
fn reader(s3: &S3, url: &str) -> anyhow::Result<SnapshotWriter> {
    let spec = S3Spec {
        endpoint: Some(s3.endpoint.clone()),
        region: Some(s3.region.clone()),
        allow_http: true,
    };
    Ok(SnapshotWriter::new(open_store(
        url,
        Path::new("/"),
        Some(&spec),
    )?))
}

/// ACCOUNT-ID -> how many committed micro-batch snapshots hold it; and every data file under
/// the prefix that no manifest lists.
async fn committed(
    w: &SnapshotWriter,
    bucket: &TestBucket,
) -> anyhow::Result<(BTreeMap<u64, u32>, Vec<String>)> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let mut ids = BTreeMap::new();
    let mut listed = BTreeSet::new();
    for m in w.table_manifests(&TableId::new("bank", "ledger")).await? {
        assert_eq!(m.kind, SnapshotKind::Micro);
        listed.extend(m.files.iter().map(|f| f.path.clone()));
        // `read` checks each file's size and xxh3 against the manifest.
        for e in w.read(&m).await? {
            let Some(Value::Int(id)) = e.after.as_ref().and_then(|r| r.first()) else {
                anyhow::bail!("event without an integer ACCOUNT-ID: {e:?}");
            };
            *ids.entry(*id as u64).or_insert(0) += 1;
        }
    }
    let objects: Vec<_> = bucket.store.list(None).try_collect().await?;
    let orphans = objects
        .into_iter()
        .map(|o| o.location.to_string())
        .filter(|p| !p.contains("/_manifests/") && !listed.contains(p))
        .collect();
    Ok((ids, orphans))
}

fn assert_exactly_once(ids: &BTreeMap<u64, u32>) {
    let want: BTreeSet<u64> = (0..RECORDS as u64).map(|i| FIRST_ID + i).collect();
    let got: BTreeSet<u64> = ids.keys().copied().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    assert!(
        missing.is_empty(),
        "records missing from the snapshots: {missing:?}"
    );
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "records in more than one snapshot: {twice:?}"
    );
    assert_eq!(got.len(), RECORDS);
}

/// The last record number the checkpoint says is committed (0: none).
fn checkpointed_record(dir: &Path) -> anyhow::Result<u64> {
    let Ok(text) = std::fs::read_to_string(dir.join("state/checkpoint")) else {
        return Ok(0);
    };
    let (_, body) = text.split_once('\n').context("checkpoint header")?;
    let cp: J = serde_json::from_str(body)?;
    Ok(cp["sources"]["ledger"]["position"]["record"]
        .as_u64()
        .unwrap_or(0))
}

#[test]
fn s3_failures_are_retried_and_never_acknowledged_uncommitted() -> anyhow::Result<()> {
    let s3 = require!(services::s3());
    // The product reads S3 credentials from the environment (AmazonS3Builder::from_env).
    // SAFETY: this is the only test in this binary and it sets them before starting any
    // thread of its own (the runtime is built below).
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &s3.access_key);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &s3.secret_key);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // 1. An outage of 4 s in the middle of the run: retried, nothing lost or doubled.
        let bucket = TestBucket::create(&s3, "batch-outage").await?;
        let proxy = FaultProxy::start(&s3.endpoint).await?;
        let dir = tempfile::tempdir()?;
        ledger(dir.path())?;
        let url = bucket.url("snap");
        let m = manifest(
            &unique_name("bs3a", '-', 40),
            &url,
            &proxy.endpoint(),
            &s3.region,
            120,
        );
        proxy.fail_after_puts(12, Some(Duration::from_secs(4)));
        let summary = run(dir.path(), &m).await?;
        assert_eq!(summary.events_read, RECORDS as u64);
        assert!(
            proxy.cut.load(Ordering::SeqCst) > 0,
            "the outage hit the run (PUTs seen: {})",
            proxy.puts.load(Ordering::SeqCst)
        );
        let w = reader(&s3, &url)?;
        let (ids, orphans) = committed(&w, &bucket).await?;
        assert_exactly_once(&ids);
        assert!(
            orphans.is_empty(),
            "data files no manifest lists: {orphans:?}"
        );
        bucket.delete().await?;

        // 2. Down for good after a few snapshots, with a 3 s bound: the run fails, and the
        //    checkpoint never gets ahead of the committed snapshots.
        let bucket = TestBucket::create(&s3, "batch-down").await?;
        let proxy = FaultProxy::start(&s3.endpoint).await?;
        let dir = tempfile::tempdir()?;
        ledger(dir.path())?;
        let url = bucket.url("snap");
        let m = manifest(
            &unique_name("bs3b", '-', 40),
            &url,
            &proxy.endpoint(),
            &s3.region,
            3,
        );
        // PUTs alternate data file, manifest: the 14th is a manifest, cut before it reaches
        // the server, so its snapshot's data file is left behind as an orphan.
        proxy.fail_after_puts(14, None);
        let failed = run(dir.path(), &m).await;
        let err = failed
            .err()
            .context("the run fails once S3 stays down past the bound")?;
        let text = format!("{err:#}");
        assert!(
            text.contains("snapshot") && text.contains("attempts"),
            "{text}"
        );
        let w = reader(&s3, &url)?;
        let (ids, orphans) = committed(&w, &bucket).await?;
        assert_eq!(
            orphans.len(),
            1,
            "the uncommitted snapshot's data file: {orphans:?}"
        );
        let acked = checkpointed_record(dir.path())?;
        assert!(
            !ids.is_empty(),
            "some snapshots were committed before the outage"
        );
        assert!(
            acked <= ids.len() as u64,
            "checkpoint at record {acked} but only {} records are in committed snapshots",
            ids.len()
        );
        for i in 0..acked {
            assert!(
                ids.contains_key(&(FIRST_ID + i)),
                "record {} acknowledged but in no committed snapshot",
                i + 1
            );
        }

        // 3. S3 back: the restart removes the orphan, skips what was committed but not
        //    acknowledged, and completes.
        proxy.set_down(false);
        let summary = run(dir.path(), &m).await?;
        assert_eq!(summary.events_read, RECORDS as u64 - acked);
        let (ids, orphans) = committed(&w, &bucket).await?;
        assert_exactly_once(&ids);
        assert!(
            orphans.is_empty(),
            "data files no manifest lists: {orphans:?}"
        );
        bucket.delete().await?;
        anyhow::Ok(())
    })
}
