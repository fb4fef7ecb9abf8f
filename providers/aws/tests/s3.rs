//! S3 on moto: checksums as stored and the state backend (the artifact store's behaviour suite
//! runs in `tests/stages.rs`, with the rest of the platform's proof).

mod common;

use bytes::Bytes;
use galley_aws::{S3Artifacts, S3StateBackend};
use galley_core::ErrorKind;
use galley_core::stages::{ArtifactKey, ArtifactStoreExt};
use galley_engine::{LockInfo, State, StateBackend};

#[tokio::test]
async fn objects_carry_their_sha256_and_a_tampered_object_is_caught() {
    let Some(url) = common::moto_url() else { return };
    let c = common::clients(&url).await;
    let bucket = common::fresh_bucket(&c).await;
    let store = S3Artifacts::new(c.s3.clone(), &bucket);
    let key = ArtifactKey::new("models/m.json").unwrap();
    let meta = store.put_bytes(&key, Bytes::from_static(b"{\"w\":[1,2]}")).await.unwrap();
    assert_eq!(meta.uri, format!("s3://{bucket}/models/m.json"));
    let stored = store.object_metadata("models/m.json").await.unwrap();
    assert_eq!(stored.get("galley-sha256"), Some(&meta.sha256));

    // Someone rewrites the object outside Galley but keeps the old digest: reading it fails.
    c.s3.put_object()
        .bucket(&bucket)
        .key("models/m.json")
        .metadata("galley-sha256", &meta.sha256)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{\"w\":[6,6]}"))
        .send()
        .await
        .unwrap();
    let err = store.get_bytes(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn state_backend_saves_with_backup_and_locks_with_a_conditional_write() {
    let Some(url) = common::moto_url() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(async { common::fresh_bucket(&common::clients(&url).await).await });
    // Called from plain threads here; the engine may also call it from inside a runtime.
    let backend = S3StateBackend::connect(&common::config(&url), &bucket, "galley/demo/state.json").unwrap();
    assert_eq!(backend.describe(), format!("s3://{bucket}/galley/demo/state.json"));
    assert!(backend.load().unwrap().is_none());
    let mut s = State::new();
    backend.save(&s).unwrap();
    s.serial = 1;
    backend.save(&s).unwrap();
    assert_eq!(backend.load().unwrap().unwrap().serial, 1);

    let first = LockInfo::new("apply");
    backend.lock(&first).unwrap();
    let second = S3StateBackend::connect(&common::config(&url), &bucket, "galley/demo/state.json").unwrap();
    let e = second.lock(&LockInfo::new("apply")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(e.message().contains(&first.id), "{e}");
    assert_eq!(second.lock_holder().unwrap().unwrap().id, first.id);
    assert!(second.unlock("someone-else").is_err());
    backend.unlock(&first.id).unwrap();
    assert!(backend.lock_holder().unwrap().is_none());
    second.lock(&LockInfo::new("destroy")).unwrap();

    // The previous state is kept beside it.
    let backup = rt.block_on(async {
        let c = common::clients(&url).await;
        let o = c.s3.get_object().bucket(&bucket).key("galley/demo/state.json.backup").send().await.unwrap();
        o.body.collect().await.unwrap().into_bytes()
    });
    let backup: State = serde_json::from_slice(&backup).unwrap();
    assert_eq!(backup.serial, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_backend_works_when_called_from_inside_a_runtime() {
    let Some(url) = common::moto_url() else { return };
    let bucket = common::fresh_bucket(&common::clients(&url).await).await;
    let backend = S3StateBackend::connect(&common::config(&url), &bucket, "state.json").unwrap();
    backend.save(&State::new()).unwrap();
    assert!(backend.load().unwrap().is_some());
}

#[test]
fn corrupt_state_is_an_error_not_an_empty_state() {
    let Some(url) = common::moto_url() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(async {
        let c = common::clients(&url).await;
        let b = common::fresh_bucket(&c).await;
        c.s3.put_object().bucket(&b).key("state.json").body(aws_sdk_s3::primitives::ByteStream::from_static(b"{not json")).send().await.unwrap();
        b
    });
    let backend = S3StateBackend::connect(&common::config(&url), &bucket, "state.json").unwrap();
    let e = backend.load().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

/// A multipart upload into a versioned bucket leaves exactly one version behind: the object's.
/// The staging copy it goes through is deleted by version id, not hidden behind a delete marker
/// with its full-size bytes kept as a noncurrent version.
#[tokio::test]
async fn a_large_upload_leaves_no_staging_version_behind() {
    let Some(url) = common::moto_url() else { return };
    let c = common::clients(&url).await;
    let bucket = common::fresh_bucket(&c).await;
    c.s3.put_bucket_versioning()
        .bucket(&bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder().status(aws_sdk_s3::types::BucketVersioningStatus::Enabled).build(),
        )
        .send()
        .await
        .unwrap();
    let store = S3Artifacts::new(c.s3.clone(), &bucket);
    let body = Bytes::from(vec![7u8; galley_aws::artifacts::PART_SIZE + 1024]);
    let meta = store.put_bytes(&ArtifactKey::new("data/big.bin").unwrap(), body.clone()).await.unwrap();
    assert_eq!(meta.size, body.len() as u64);
    let listed = c.s3.list_object_versions().bucket(&bucket).send().await.unwrap();
    let keys: Vec<&str> = listed.versions().iter().filter_map(|v| v.key()).collect();
    let markers: Vec<&str> = listed.delete_markers().iter().filter_map(|m| m.key()).collect();
    assert_eq!((keys, markers), (vec!["data/big.bin"], vec![]), "only the object's own version remains");
}
