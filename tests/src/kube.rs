//! Kubernetes helpers: a kube-rs client from the test kubeconfig, the SyncPipeline CRD applied
//! and Established, and namespaces of the test's own.

use crate::services::Kube;
use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt};
use std::time::Duration;

/// The field manager the tests apply with.
pub const FIELD_MANAGER: &str = "syncmesh-tests";

/// A client for the API server in `SYNCMESH_KUBECONFIG`.
pub async fn client(kube: &Kube) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(&kube.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kube.kubeconfig.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")?;
    Client::try_from(config).context("building the kube client")
}

/// Server-side applies the `SyncPipeline` CRD (from `syncmesh_crds::SyncPipeline::crd()`) and
/// polls until its condition `Established` is `True`. The API server's rejection, if any, is
/// returned verbatim. Idempotent: every test that needs the CRD can call it.
pub async fn apply_syncpipeline_crd(client: &Client) -> anyhow::Result<CustomResourceDefinition> {
    let crd = syncmesh_crds::SyncPipeline::crd();
    apply_crd(client, &crd).await
}

/// Server-side applies `crd` (forcing ownership) and polls until it is Established.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
) -> anyhow::Result<CustomResourceDefinition> {
    let name = crd
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow!("the CRD has no name"))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| anyhow!("the API server rejected CRD {name}: {e}"))?;
    crate::poll_until(
        Duration::from_secs(30),
        &format!("CRD {name} to be Established"),
        || async {
            let crd = api.get(&name).await?;
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                Ok(Some(crd))
            } else {
                Err(anyhow!(
                    "conditions {:?}",
                    conditions
                        .iter()
                        .map(|c| format!("{}={} ({:?})", c.type_, c.status, c.message))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// Creates namespace `<prefix>-<unique>` and returns its name.
pub async fn create_namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let name = crate::unique_namespace(prefix);
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("syncmesh.io/test".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(name)
}

/// Deletes namespace `name` (the controller manager, when running, empties and removes it).
pub async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    match Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting namespace {name}")),
    }
}
