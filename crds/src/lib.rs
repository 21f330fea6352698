//! The `SyncPipeline` custom resource (`syncmesh.io/v1alpha1`): one manifest per pipeline.
//!
//! The doc comments on these types are the reference documentation: they become the CRD's
//! OpenAPI descriptions, so `kubectl explain syncpipeline.spec.sources` reads them.

mod manifest;
mod spec;
mod status;
mod validate;

pub use manifest::{ManifestError, parse_manifest};
pub use spec::*;
pub use status::*;
pub use validate::{FieldIssue, validate_spec};

/// The API group.
pub const GROUP: &str = "syncmesh.io";
/// The served version.
pub const VERSION: &str = "v1alpha1";
