//! S3 helpers: a bucket of the test's own, and an object_store client on it (the crate the
//! product uses).
//!
//! object_store has no bucket API, so [`TestBucket::create`] sends `PUT /<bucket>` itself,
//! unsigned: the test server (moto in server mode) accepts unauthenticated bucket requests. A
//! server that insists on SigV4 for bucket creation answers 403, and the error says so.

use crate::services::S3;
use anyhow::{Context, bail};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;

/// An object_store S3 client on `bucket` of the test server (path-style, plain HTTP allowed).
pub fn store(s3: &S3, bucket: &str) -> anyhow::Result<AmazonS3> {
    AmazonS3Builder::new()
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_region(&s3.region)
        .with_access_key_id(&s3.access_key)
        .with_secret_access_key(&s3.secret_key)
        .with_bucket_name(bucket)
        .build()
        .with_context(|| format!("building the S3 client for bucket {bucket}"))
}

/// A bucket of the test's own.
pub struct TestBucket {
    pub name: String,
    /// `http://host:port`, as given by `SYNCMESH_S3_ENDPOINT`.
    pub endpoint: String,
    pub store: Arc<AmazonS3>,
}

impl TestBucket {
    /// Creates bucket `<prefix>-<unique>`.
    pub async fn create(s3: &S3, prefix: &str) -> anyhow::Result<Self> {
        let name = crate::unique_bucket(prefix);
        let url = format!("{}/{name}", s3.endpoint);
        let response = reqwest::Client::new()
            .put(&url)
            .send()
            .await
            .with_context(|| format!("PUT {url} (create bucket)"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("PUT {url} (create bucket) answered {status}: {body}");
        }
        Ok(Self {
            store: Arc::new(store(s3, &name)?),
            endpoint: s3.endpoint.clone(),
            name,
        })
    }

    /// `s3://<bucket>/<prefix>`, for code under test that takes URLs.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.name, prefix.trim_start_matches('/'))
    }

    /// Deletes every object, then the bucket.
    pub async fn delete(self) -> anyhow::Result<()> {
        let objects: Vec<_> = self.store.list(None).try_collect().await?;
        for o in objects {
            self.store
                .delete(&o.location)
                .await
                .with_context(|| format!("deleting {}", o.location))?;
        }
        let url = format!("{}/{}", self.endpoint, self.name);
        let response = reqwest::Client::new()
            .delete(&url)
            .send()
            .await
            .with_context(|| format!("DELETE {url}"))?;
        if !response.status().is_success() {
            bail!("DELETE {url} answered {}", response.status());
        }
        Ok(())
    }
}
