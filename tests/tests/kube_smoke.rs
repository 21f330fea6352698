//! The SyncPipeline custom resource on a real API server (Kubernetes 1.20) through kube-rs: the
//! generated CRD is accepted and Established, objects are created and watched, and status is
//! written through the status subresource.

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use std::time::Duration;
use syncmesh_crds::{SyncPipeline, SyncPipelineSpec};
use syncmesh_tests::kube::{apply_syncpipeline_crd, client, create_namespace, delete_namespace};
use syncmesh_tests::{require, services};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn crd_watch_and_status_subresource() -> anyhow::Result<()> {
    let kube = require!(services::kube());
    let client = client(&kube).await?;
    // A rejection of the generated CRD fails here, with the API server's message.
    apply_syncpipeline_crd(&client).await?;

    let ns = create_namespace(&client, "kube-smoke").await?;
    let result = in_namespace(&client, &ns).await;
    let cleanup = delete_namespace(&client, &ns).await;
    result?;
    cleanup
}

type Events = mpsc::UnboundedReceiver<Result<watcher::Event<SyncPipeline>, watcher::Error>>;

async fn next_event(rx: &mut Events) -> anyhow::Result<watcher::Event<SyncPipeline>> {
    match tokio::time::timeout(TIMEOUT, rx.recv()).await {
        Ok(Some(Ok(e))) => Ok(e),
        Ok(Some(Err(e))) => Err(anyhow::anyhow!("watch error: {e}")),
        Ok(None) => Err(anyhow::anyhow!("watch ended")),
        Err(_) => Err(anyhow::anyhow!("no watch event within {TIMEOUT:?}")),
    }
}

async fn in_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let api: Api<SyncPipeline> = Api::namespaced(client.clone(), ns);

    // Start the watch and wait for its initial list before creating anything.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch = tokio::spawn({
        let api = api.clone();
        async move {
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = events.next().await {
                if tx.send(event).is_err() {
                    break;
                }
            }
        }
    });
    loop {
        match next_event(&mut rx).await? {
            watcher::Event::InitDone => break,
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
            other => anyhow::bail!("unexpected event before InitDone: {other:?}"),
        }
    }

    // Built from JSON, as a user writes it (and robust to optional fields added later).
    let spec: SyncPipelineSpec = serde_json::from_value(serde_json::json!({
        "sources": [{
            "name": "ledger",
            "flatFile": {
                "path": "/data/ledger",
                "pattern": "*.dat",
                "layout": "/data/ledger.cpy",
                "table": "bank.ledger",
                "primaryKey": ["ACCT-ID"]
            }
        }],
        "routes": [{ "name": "all-to-batch", "match": { "tables": ["bank.*"] }, "to": ["batch"] }],
        "defaultRoute": ["batch"]
    }))?;
    let created = api
        .create(
            &PostParams::default(),
            &SyncPipeline::new("ledger", spec.clone()),
        )
        .await?;
    assert_eq!(created.spec, spec, "the server stored the spec as sent");

    let watched = loop {
        match next_event(&mut rx).await? {
            watcher::Event::Apply(p) if p.metadata.name.as_deref() == Some("ledger") => break p,
            _ => {}
        }
    };
    assert_eq!(watched.spec, spec);
    assert_eq!(watched.metadata.uid, created.metadata.uid);

    // Status through the status subresource.
    let status = serde_json::json!({
        "status": {
            "observedGeneration": 1,
            "phase": "Running",
            "eventsRead": 42,
            "lag": "1.2s",
            "sources": [{ "name": "ledger", "position": "file 0001.dat offset 420" }],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "Running",
                "message": "reading",
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]
        }
    });
    api.patch_status("ledger", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let read = api.get_status("ledger").await?;
    let st = read.status.expect("status was written");
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.events_read, Some(42));
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.sources.len(), 1);
    assert_eq!(st.conditions.len(), 1);
    assert_eq!(st.conditions[0].type_, "Ready");
    assert_eq!(read.spec, spec, "a status write leaves the spec alone");

    // The status change reaches the watch too.
    loop {
        match next_event(&mut rx).await? {
            watcher::Event::Apply(p)
                if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") =>
            {
                break;
            }
            _ => {}
        }
    }
    watch.abort();
    Ok(())
}
