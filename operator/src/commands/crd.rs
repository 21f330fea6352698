//! `syncmesh crd`: the CRD YAML, generated from the Rust API types.

use crate::Failure;
use kube::CustomResourceExt;
use syncmesh_crds::SyncPipeline;

/// The CRD as YAML, exactly as committed under `deploy/` and `charts/`.
pub fn crd_yaml() -> Result<String, Failure> {
    serde_saphyr::to_string(&SyncPipeline::crd()).map_err(Failure::failed)
}

pub fn print() -> Result<(), Failure> {
    print!("{}", crd_yaml()?);
    Ok(())
}
