//! S3 through object_store (as the product uses it) against the test server: put, get, list, a
//! ranged read, and a conditional put (`PutMode::Create`), in a bucket of the test's own.

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use syncmesh_tests::s3::TestBucket;
use syncmesh_tests::{require, services};

#[tokio::test]
async fn put_get_list_and_conditional_put() -> anyhow::Result<()> {
    let s3 = require!(services::s3());
    let bucket = TestBucket::create(&s3, "s3-smoke").await?;
    let store = bucket.store.clone();

    let one = Path::from("snapshots/t1/part-0001.jsonl");
    let two = Path::from("snapshots/t1/part-0002.jsonl");
    store
        .put(&one, PutPayload::from_static(b"{\"id\":1}\n"))
        .await?;
    store
        .put(&two, PutPayload::from_static(b"{\"id\":2}\n"))
        .await?;

    let got = store.get(&one).await?.bytes().await?;
    assert_eq!(&got[..], b"{\"id\":1}\n");
    let range = store.get_range(&two, 1..5).await?;
    assert_eq!(&range[..], b"\"id\"");

    let mut listed: Vec<String> = store
        .list(Some(&Path::from("snapshots/t1")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await?;
    listed.sort();
    assert_eq!(listed, [one.to_string(), two.to_string()]);

    // Conditional put: creating an existing key fails with AlreadyExists and leaves it as it was.
    let create = PutOptions::from(PutMode::Create);
    let err = store
        .put_opts(
            &one,
            PutPayload::from_static(b"overwritten"),
            create.clone(),
        )
        .await
        .expect_err("PutMode::Create on an existing key must fail");
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "expected AlreadyExists, got {err:?}"
    );
    assert_eq!(&store.get(&one).await?.bytes().await?[..], b"{\"id\":1}\n");
    let manifest = Path::from("snapshots/t1/_manifest.json");
    store
        .put_opts(&manifest, PutPayload::from_static(b"{}"), create)
        .await?;
    assert_eq!(&store.get(&manifest).await?.bytes().await?[..], b"{}");

    bucket.delete().await?;
    Ok(())
}
