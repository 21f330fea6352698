//! Object storage from a URL: a local directory (the embedded default), `file:///…` or
//! `s3://bucket/prefix`.

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use std::path::Path;
use std::sync::Arc;
use syncmesh_crds::S3Spec;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object storage `{url}`: cannot create directory {dir}: {source}")]
    Dir {
        url: String,
        dir: String,
        source: std::io::Error,
    },
    #[error("object storage `{url}`: {source}")]
    Open {
        url: String,
        source: object_store::Error,
    },
    #[error("object storage `{url}`: unsupported scheme `{scheme}` (use a path, file:// or s3://)")]
    Scheme { url: String, scheme: String },
}

/// A store and the prefix inside it that the pipeline owns.
#[derive(Clone)]
pub struct Store {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: ObjectPath,
    /// The URL as the user wrote it, resolved (for lineage and logs).
    pub url: String,
}

/// Opens the store at `url`; relative local paths are resolved against `base`.
pub fn open_store(url: &str, base: &Path, s3: Option<&S3Spec>) -> Result<Store, StoreError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(s3) = s3 {
            if let Some(ep) = &s3.endpoint {
                b = b.with_endpoint(ep);
            }
            if let Some(region) = &s3.region {
                b = b.with_region(region);
            }
            b = b.with_allow_http(s3.allow_http);
        }
        let store = b.build().map_err(|source| StoreError::Open {
            url: url.into(),
            source,
        })?;
        return Ok(Store {
            store: Arc::new(store),
            prefix: ObjectPath::from(prefix),
            url: url.into(),
        });
    }
    let local = match url.split_once("://") {
        None => base.join(url),
        Some(("file", path)) => Path::new(path).to_path_buf(),
        Some((scheme, _)) => {
            return Err(StoreError::Scheme {
                url: url.into(),
                scheme: scheme.into(),
            });
        }
    };
    std::fs::create_dir_all(&local).map_err(|source| StoreError::Dir {
        url: url.into(),
        dir: local.display().to_string(),
        source,
    })?;
    let store = LocalFileSystem::new_with_prefix(&local).map_err(|source| StoreError::Open {
        url: url.into(),
        source,
    })?;
    let abs = std::fs::canonicalize(&local).unwrap_or(local);
    Ok(Store {
        store: Arc::new(store),
        prefix: ObjectPath::default(),
        url: format!("file://{}", abs.display()),
    })
}
