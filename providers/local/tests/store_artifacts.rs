//! Local-specific behaviour of the content-addressed artifact store.

use bytes::Bytes;
use futures::StreamExt;
use galley_core::ErrorKind;
use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt, ByteStream};
use galley_local::artifacts::LocalArtifacts;
use sha2::{Digest, Sha256};

fn key(k: &str) -> ArtifactKey {
    ArtifactKey::new(k).unwrap()
}

/// A deterministic pseudo-random body of `len` bytes, produced in 1 MiB chunks so the test
/// itself never holds it whole either.
fn body(len: usize, seed: u64) -> (ByteStream, String) {
    let mut hasher = Sha256::new();
    let mut chunks = Vec::new();
    let mut state = seed;
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 20);
        let chunk: Vec<u8> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        hasher.update(&chunk);
        chunks.push(Ok(Bytes::from(chunk)));
        left -= n;
    }
    (futures::stream::iter(chunks).boxed(), hex::encode(hasher.finalize()))
}

fn blob_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[tokio::test]
async fn large_artifact_is_written_atomically_and_streamed_back_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    let size = 20 * 1024 * 1024;
    let (stream, expected) = body(size, 7);
    let meta = store.put(&key("models/big.bin"), stream).await.unwrap();
    assert_eq!(meta.size, size as u64);
    assert_eq!(meta.sha256, expected);
    assert!(meta.uri.starts_with("file:///"), "{}", meta.uri);

    // Nothing is left behind in the staging area.
    assert_eq!(std::fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);

    let mut stream = store.get(&key("models/big.bin")).await.unwrap();
    let mut hasher = Sha256::new();
    let (mut total, mut chunks, mut largest) = (0usize, 0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        chunks += 1;
        largest = largest.max(chunk.len());
        hasher.update(&chunk);
    }
    assert_eq!(total, size);
    assert_eq!(hex::encode(hasher.finalize()), expected);
    assert!(chunks >= 20 * 16, "read in {chunks} chunks");
    assert!(largest <= 64 * 1024, "a chunk of {largest} bytes");

    // The URI is an ordinary file holding the content, and maps back to the key.
    let path = meta.uri.strip_prefix("file://").unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), size as u64);
    assert_eq!(store.key_for_uri(&meta.uri), Some(key("models/big.bin")));
    assert_eq!(store.uri_for(&key("models/big.bin")), meta.uri);
    assert_eq!(store.key_for_uri("file:///etc/passwd"), None);
}

#[tokio::test]
async fn identical_content_is_stored_once_and_collected_with_its_last_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    let a = store.put_bytes(&key("a/model.json"), Bytes::from_static(b"{\"w\":1}")).await.unwrap();
    let b = store.put_bytes(&key("b/model.json"), Bytes::from_static(b"{\"w\":1}")).await.unwrap();
    assert_eq!(a.sha256, b.sha256);
    assert_eq!(blob_files(store.root()).len(), 1);

    let c = store.copy(&key("a/model.json"), &key("c/model.json")).await.unwrap();
    assert_eq!(c.sha256, a.sha256);
    assert_eq!(c.key, "c/model.json");
    assert_eq!(blob_files(store.root()).len(), 1);

    store.delete(&key("a/model.json")).await.unwrap();
    store.delete(&key("b/model.json")).await.unwrap();
    assert_eq!(blob_files(store.root()).len(), 1, "c still points at the blob");
    assert_eq!(store.get_bytes(&key("c/model.json")).await.unwrap(), Bytes::from_static(b"{\"w\":1}"));
    store.delete(&key("c/model.json")).await.unwrap();
    assert!(blob_files(store.root()).is_empty());
    // Idempotent.
    store.delete(&key("c/model.json")).await.unwrap();
}

#[tokio::test]
async fn overwrite_replaces_content_and_collects_the_old_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    store.put_bytes(&key("m"), Bytes::from_static(b"one")).await.unwrap();
    let m = store.put_bytes(&key("m"), Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(store.get_bytes(&key("m")).await.unwrap(), Bytes::from_static(b"two"));
    assert_eq!(store.head(&key("m")).await.unwrap().sha256, m.sha256);
    assert_eq!(blob_files(store.root()).len(), 1);
    let view = m.uri.strip_prefix("file://").unwrap();
    assert_eq!(std::fs::read(view).unwrap(), b"two");
}

#[tokio::test]
async fn list_is_sorted_and_bounded_by_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    for k in ["runs/2/b", "runs/1/a", "runs/10/c", "other/x", "runsz"] {
        store.put_bytes(&key(k), Bytes::from(k.to_owned())).await.unwrap();
    }
    let keys: Vec<String> = store.list("runs/").await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(keys, ["runs/1/a", "runs/10/c", "runs/2/b"]);
    assert_eq!(store.list("").await.unwrap().len(), 5);
    assert!(store.list("zzz").await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_artifacts_and_bad_keys_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    for e in [
        store.get(&key("nope/model.bin")).await.err().unwrap(),
        store.head(&key("nope/model.bin")).await.unwrap_err(),
        store.copy(&key("nope/model.bin"), &key("x")).await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.message().contains("nope/model.bin"), "{e}");
        assert!(e.message().contains(&store.root().display().to_string()), "{e}");
    }
    for bad in ["../escape", "/etc/passwd", "a/../../b"] {
        assert_eq!(ArtifactKey::new(bad).unwrap_err().kind(), ErrorKind::InvalidInput);
    }
    // A key cannot be both a file and a folder.
    store.put_bytes(&key("a"), Bytes::from_static(b"x")).await.unwrap();
    let e = store.put_bytes(&key("a/b"), Bytes::from_static(b"y")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(store.head(&key("a/b")).await.is_err());
    assert_eq!(blob_files(store.root()).len(), 1, "the refused content is not kept");
    assert_eq!(std::fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn a_failed_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(galley_core::Error::new(ErrorKind::Unavailable, "connection dropped")),
    ])
    .boxed();
    assert!(store.put(&key("m"), failing).await.is_err());
    assert_eq!(store.head(&key("m")).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(std::fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    assert!(blob_files(store.root()).is_empty());
}

#[tokio::test]
async fn a_blob_altered_on_disk_is_reported_corrupt_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalArtifacts::open(dir.path().to_path_buf()).unwrap();
    store.put_bytes(&key("m.bin"), Bytes::from_static(b"original content")).await.unwrap();
    let blob = blob_files(store.root()).pop().unwrap();
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    // Same length, different bytes: only the hash can tell.
    std::fs::write(&blob, b"tampered content").unwrap();
    let mut stream = store.get(&key("m.bin")).await.unwrap();
    let mut error = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            error = Some(e);
        }
    }
    let e = error.expect("a corrupt blob must end the stream with an error");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.message().contains(&blob.display().to_string()), "{e}");

    // A truncated blob is caught before any byte is served.
    std::fs::write(&blob, b"short").unwrap();
    let e = store.get(&key("m.bin")).await.err().unwrap();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

/// An overwrite racing a read must never make the reader fail or see a mix: the read gets the
/// old or the new content whole (the old blob is collected only after the reader holds it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_overwrites_see_whole_objects() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LocalArtifacts::open(dir.path().to_path_buf()).unwrap());
    let contents = [Bytes::from(vec![b'a'; 200_000]), Bytes::from(vec![b'b'; 300_000])];
    store.put_bytes(&key("hot.bin"), contents[0].clone()).await.unwrap();
    let writer = {
        let (store, contents) = (store.clone(), contents.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                store.put_bytes(&key("hot.bin"), contents[i % 2].clone()).await.unwrap();
            }
        })
    };
    for _ in 0..60 {
        let got = store.get_bytes(&key("hot.bin")).await.unwrap();
        assert!(got == contents[0] || got == contents[1], "a read saw {} bytes of a mix", got.len());
    }
    writer.await.unwrap();
    assert_eq!(blob_files(store.root()).len(), 1);
}
