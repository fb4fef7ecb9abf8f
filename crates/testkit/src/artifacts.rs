//! The [`ArtifactStore`] contract: streamed, atomic, content-hashed objects under safe keys.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use galley_core::capability::Feature;
use galley_core::stages::{ArtifactKey, ArtifactMeta, ArtifactStore, ArtifactStoreExt, ByteStream};
use galley_core::{Error, ErrorKind};

use crate::runner::{Case, Report, TestResult, run_cases};
use crate::support::{expect_kind, sha256_hex, unique};
use crate::{case, ensure_eq};

type Store = Arc<dyn ArtifactStore>;

pub fn cases() -> Vec<Case<Store>> {
    vec![
        case!(put_get_roundtrip),
        case!(streamed_multi_megabyte_roundtrip),
        case!(empty_body_roundtrip),
        case!(head_reports_true_size_and_sha256),
        case!(head_of_missing_key_is_not_found),
        case!(get_of_missing_key_is_not_found),
        case!(list_by_prefix_is_sorted_and_exact),
        case!(list_prefix_cannot_escape_the_store),
        case!(delete_is_idempotent),
        case!(copy_duplicates_content),
        case!(copy_of_missing_key_is_not_found),
        case!(overwrite_replaces_content),
        case!(readers_never_see_a_partial_overwrite),
        case!(failed_upload_leaves_previous_content),
        case!(bad_keys_are_refused_before_any_call),
        case!(overwrites_keep_the_earlier_version, needs = [Feature::ArtifactVersioning]),
        case!(objects_are_encrypted_at_rest, needs = [Feature::ArtifactEncryption]),
    ]
}

pub async fn run_artifacts(store: Store) -> Report {
    let caps = store.capabilities();
    run_cases("artifacts", store, &caps, cases()).await
}

/// Every key a case writes lives under one fresh prefix, removed at the end.
struct Scratch {
    store: Store,
    prefix: String,
}

impl Scratch {
    fn new(store: &Store) -> Self {
        Scratch { store: store.clone(), prefix: format!("galley-testkit/{}", unique("run")) }
    }
    fn key(&self, rel: &str) -> ArtifactKey {
        ArtifactKey::new(format!("{}/{rel}", self.prefix)).expect("the suite's own keys are valid")
    }
    async fn cleanup(&self) {
        if let Ok(items) = self.store.list(&format!("{}/", self.prefix)).await {
            for m in items {
                if let Ok(k) = ArtifactKey::new(m.key) {
                    let _ = self.store.delete(&k).await;
                }
            }
        }
    }
    /// Runs `body`, then removes the scratch objects whatever the outcome.
    async fn run<F: Future<Output = TestResult>>(self, body: impl FnOnce(Store, Scratch) -> F) -> TestResult {
        let copy = Scratch { store: self.store.clone(), prefix: self.prefix.clone() };
        let out = body(self.store.clone(), copy).await;
        self.cleanup().await;
        out
    }
}

/// Deterministic pseudo-random bytes, so a bug that reorders or drops a chunk shows.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn chunked(data: &[u8], chunk: usize) -> ByteStream {
    let chunks: Vec<galley_core::Result<Bytes>> =
        data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks).boxed()
}

async fn read_all(store: &Store, key: &ArtifactKey) -> anyhow::Result<Vec<u8>> {
    let mut s = store.get(key).await?;
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn check_meta(meta: &ArtifactMeta, key: &ArtifactKey, content: &[u8], what: &str) -> TestResult {
    ensure_eq!(meta.key.as_str(), key.as_str(), "{what}: meta.key");
    ensure_eq!(meta.size, content.len() as u64, "{what}: meta.size");
    ensure_eq!(meta.sha256, sha256_hex(content), "{what}: meta.sha256 (hex SHA-256 of the content)");
    anyhow::ensure!(!meta.uri.is_empty(), "{what}: meta.uri is empty; it must say where the object lives");
    Ok(())
}

pub async fn put_get_roundtrip(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("hello.txt");
            let content = b"hello, galley".to_vec();
            let meta = store.put_bytes(&key, Bytes::from(content.clone())).await?;
            check_meta(&meta, &key, &content, "put")?;
            ensure_eq!(store.get_bytes(&key).await?.to_vec(), content, "get after put");
            Ok(())
        })
        .await
}

pub async fn streamed_multi_megabyte_roundtrip(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("big/model.bin");
            // 6 MiB plus an odd tail, in 64 KiB chunks: past any single-buffer or multipart
            // threshold a store might special-case.
            let content = noise(6 * 1024 * 1024 + 12_345, 42);
            let meta = store.put(&key, chunked(&content, 64 * 1024)).await?;
            check_meta(&meta, &key, &content, "put of 6 MiB")?;
            let back = read_all(&store, &key).await?;
            ensure_eq!(back.len(), content.len(), "streamed get length");
            anyhow::ensure!(back == content, "streamed get returned different bytes than were put");
            Ok(())
        })
        .await
}

pub async fn empty_body_roundtrip(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            // A stream with no chunks at all, and one with a single empty chunk.
            let none = s.key("empty-none");
            let meta = store.put(&none, futures::stream::empty().boxed()).await?;
            check_meta(&meta, &none, b"", "put of a stream with no chunks")?;
            ensure_eq!(read_all(&store, &none).await?, Vec::<u8>::new(), "get of the empty object");
            check_meta(&store.head(&none).await?, &none, b"", "head of the empty object")?;

            let one = s.key("empty-one");
            let meta = store.put_bytes(&one, Bytes::new()).await?;
            check_meta(&meta, &one, b"", "put of a single empty chunk")?;
            ensure_eq!(read_all(&store, &one).await?, Vec::<u8>::new(), "get of the empty object");
            Ok(())
        })
        .await
}

pub async fn head_reports_true_size_and_sha256(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("data/train.csv");
            let content = noise(300_001, 7);
            store.put(&key, chunked(&content, 10_000)).await?;
            check_meta(&store.head(&key).await?, &key, &content, "head")?;
            Ok(())
        })
        .await
}

pub async fn head_of_missing_key_is_not_found(store: Store) -> TestResult {
    let key = ArtifactKey::new(format!("galley-testkit/{}/absent", unique("run")))?;
    expect_kind(store.head(&key).await, ErrorKind::NotFound, "head of a key never written")
}

pub async fn get_of_missing_key_is_not_found(store: Store) -> TestResult {
    let key = ArtifactKey::new(format!("galley-testkit/{}/absent", unique("run")))?;
    // A store may fail at the call or, lazily, on the first chunk; either way it is NotFound.
    match store.get(&key).await {
        Err(e) => expect_kind::<()>(Err(e), ErrorKind::NotFound, "get of a key never written"),
        Ok(mut stream) => match stream.next().await {
            Some(Err(e)) => expect_kind::<()>(Err(e), ErrorKind::NotFound, "first chunk of a missing key"),
            Some(Ok(chunk)) => anyhow::bail!("get of a key never written yielded {} bytes", chunk.len()),
            None => anyhow::bail!("get of a key never written returned an empty object instead of NotFound"),
        },
    }
}

pub async fn list_by_prefix_is_sorted_and_exact(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            // Written out of order; `d2/` shares the string prefix `d` but not `d/`.
            let inside = ["d/c.bin", "d/a/deep.bin", "d/b.bin"];
            for (i, rel) in inside.iter().chain(["d2/x.bin", "top.bin"].iter()).enumerate() {
                store.put_bytes(&s.key(rel), Bytes::from(vec![b'x'; i + 1])).await?;
            }
            let prefix = format!("{}/d/", s.prefix);
            let listed = store.list(&prefix).await?;
            let keys: Vec<&str> = listed.iter().map(|m| m.key.as_str()).collect();
            let mut want: Vec<String> = inside.iter().map(|r| format!("{}/{r}", s.prefix)).collect();
            want.sort();
            ensure_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>(), "list({prefix}) sorted by key");
            for m in &listed {
                let content = store.get_bytes(&ArtifactKey::new(m.key.clone())?).await?;
                check_meta(m, &ArtifactKey::new(m.key.clone())?, &content, "listed meta")?;
            }
            let all = store.list(&format!("{}/", s.prefix)).await?;
            ensure_eq!(all.len(), 5, "objects listed under the whole scratch prefix");
            let nothing = store.list(&format!("{}/nothing-here/", s.prefix)).await?;
            anyhow::ensure!(nothing.is_empty(), "list of an empty prefix returned {nothing:?}");
            Ok(())
        })
        .await
}

pub async fn list_prefix_cannot_escape_the_store(store: Store) -> TestResult {
    for prefix in ["../", "../../etc/", "/etc/", "galley-testkit/../../"] {
        match store.list(prefix).await {
            Err(e) => {
                anyhow::ensure!(
                    e.kind() == ErrorKind::InvalidInput,
                    "list({prefix:?}) failed with {:?} ({e}); expected InvalidInput or an empty list",
                    e.kind()
                );
            }
            Ok(items) => {
                for m in items {
                    anyhow::ensure!(
                        m.key.starts_with(prefix) && ArtifactKey::new(m.key.clone()).is_ok(),
                        "list({prefix:?}) returned `{}`, which is outside the store or not under the prefix",
                        m.key
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn delete_is_idempotent(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("to-delete");
            store.put_bytes(&key, Bytes::from_static(b"bye")).await?;
            store.delete(&key).await?;
            expect_kind(store.head(&key).await, ErrorKind::NotFound, "head after delete")?;
            store.delete(&key).await.map_err(|e| anyhow::anyhow!("second delete of the same key: {e}"))?;
            store
                .delete(&s.key("never-written"))
                .await
                .map_err(|e| anyhow::anyhow!("delete of a key never written: {e}"))?;
            Ok(())
        })
        .await
}

pub async fn copy_duplicates_content(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let (from, to) = (s.key("src/model.bin"), s.key("dst/model.bin"));
            let content = noise(100_000, 3);
            let src_meta = store.put(&from, chunked(&content, 8192)).await?;
            let meta = store.copy(&from, &to).await?;
            check_meta(&meta, &to, &content, "copy")?;
            ensure_eq!(meta.sha256, src_meta.sha256, "copy's sha256 vs the source's");
            anyhow::ensure!(read_all(&store, &to).await? == content, "the copy's bytes differ from the source's");
            anyhow::ensure!(read_all(&store, &from).await? == content, "the source changed after a copy");
            Ok(())
        })
        .await
}

pub async fn copy_of_missing_key_is_not_found(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let to = s.key("dst");
            expect_kind(store.copy(&s.key("absent"), &to).await, ErrorKind::NotFound, "copy from a missing key")?;
            expect_kind(store.head(&to).await, ErrorKind::NotFound, "destination of a failed copy")
        })
        .await
}

pub async fn overwrite_replaces_content(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("model.json");
            store.put_bytes(&key, Bytes::from(vec![b'a'; 5000])).await?;
            let shorter = b"{\"v\":2}".to_vec();
            let meta = store.put_bytes(&key, Bytes::from(shorter.clone())).await?;
            check_meta(&meta, &key, &shorter, "overwrite")?;
            ensure_eq!(read_all(&store, &key).await?, shorter, "content after a shorter overwrite");
            check_meta(&store.head(&key).await?, &key, &shorter, "head after overwrite")?;
            ensure_eq!(store.list(&format!("{}/", s.prefix)).await?.len(), 1, "objects after overwrite");
            Ok(())
        })
        .await
}

pub async fn readers_never_see_a_partial_overwrite(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("contended.bin");
            let a = noise(1024 * 1024, 11);
            let b = noise(2 * 1024 * 1024 + 7, 12);
            store.put(&key, chunked(&a, 64 * 1024)).await?;

            let writer = {
                let (store, key, a, b) = (store.clone(), key.clone(), a.clone(), b.clone());
                tokio::spawn(async move {
                    for i in 0..8 {
                        let body = if i % 2 == 0 { &b } else { &a };
                        store.put(&key, chunked(body, 64 * 1024)).await?;
                    }
                    Ok::<_, Error>(())
                })
            };
            let mut readers = Vec::new();
            for _ in 0..3 {
                let (store, key, a, b) = (store.clone(), key.clone(), a.clone(), b.clone());
                readers.push(tokio::spawn(async move {
                    for _ in 0..8 {
                        let got = read_all(&store, &key).await?;
                        anyhow::ensure!(
                            got == a || got == b,
                            "a reader saw {} bytes that are neither the old nor the new object",
                            got.len()
                        );
                    }
                    Ok(())
                }));
            }
            writer.await??;
            for r in readers {
                r.await??;
            }
            Ok(())
        })
        .await
}

pub async fn failed_upload_leaves_previous_content(store: Store) -> TestResult {
    Scratch::new(&store)
        .run(|store, s| async move {
            let key = s.key("survivor.bin");
            let old = b"the good version".to_vec();
            store.put_bytes(&key, Bytes::from(old.clone())).await?;
            let broken: ByteStream = futures::stream::iter(vec![
                Ok(Bytes::from(vec![b'n'; 70_000])),
                Err(Error::new(ErrorKind::Unavailable, "the upload's source went away")),
            ])
            .boxed();
            anyhow::ensure!(store.put(&key, broken).await.is_err(), "put of a stream that failed half-way succeeded");
            ensure_eq!(read_all(&store, &key).await?, old, "content after a failed overwrite");

            let fresh = s.key("never-completed.bin");
            let broken: ByteStream = futures::stream::iter(vec![
                Ok(Bytes::from(vec![b'n'; 70_000])),
                Err(Error::new(ErrorKind::Unavailable, "the upload's source went away")),
            ])
            .boxed();
            anyhow::ensure!(store.put(&fresh, broken).await.is_err(), "put of a stream that failed half-way succeeded");
            expect_kind(store.head(&fresh).await, ErrorKind::NotFound, "a key whose only upload failed")
        })
        .await
}

/// Keys are validated when built, so no store call can be made with one that escapes.
pub async fn bad_keys_are_refused_before_any_call(_store: Store) -> TestResult {
    for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/", "./a", "a\\b", "C:/x", "a\0b"] {
        expect_kind(ArtifactKey::new(bad), ErrorKind::InvalidInput, &format!("ArtifactKey::new({bad:?})"))?;
    }
    // Keys that arrive in a state or plan file go through the same gate.
    let parsed = serde_json::from_str::<ArtifactKey>("\"../../etc/shadow\"");
    anyhow::ensure!(parsed.is_err(), "an ArtifactKey deserialized from `../../etc/shadow`: {parsed:?}");
    Ok(())
}

/// A versioned store keeps what an overwrite replaced: both versions are listed, newest first,
/// and the earlier one reads back byte for byte.
pub async fn overwrites_keep_the_earlier_version(store: Store) -> TestResult {
    Scratch::new(&store).run(|store, s| async move {
        let key = s.key("versioned/model.json");
        let (first, second) = (Bytes::from_static(b"{\"model\": 1}"), Bytes::from_static(b"{\"model\": 2, \"better\": true}"));
        store.put_bytes(&key, first.clone()).await?;
        store.put_bytes(&key, second.clone()).await?;
        let versions = store.versions(&key).await?;
        anyhow::ensure!(versions.len() >= 2, "versions after one overwrite: {versions:?}");
        anyhow::ensure!(versions[0].latest && !versions[1].latest, "the newest version must come first and be the latest: {versions:?}");
        ensure_eq!(versions[0].size, second.len() as u64, "size of the latest version");
        ensure_eq!(versions[1].size, first.len() as u64, "size of the earlier version");
        let mut earlier = Vec::new();
        let mut stream = store.get_version(&key, &versions[1].version_id).await?;
        while let Some(chunk) = stream.next().await {
            earlier.extend_from_slice(&chunk?);
        }
        ensure_eq!(Bytes::from(earlier), first, "the earlier version's bytes");
        ensure_eq!(store.get_bytes(&key).await?, second, "a plain get after the overwrite");
        Ok(())
    })
    .await
}

/// An encrypting store says, per object, how the object is encrypted at rest.
pub async fn objects_are_encrypted_at_rest(store: Store) -> TestResult {
    Scratch::new(&store).run(|store, s| async move {
        let key = s.key("encrypted/data.csv");
        store.put_bytes(&key, Bytes::from_static(b"a,b\n1,2\n")).await?;
        let meta = store.head(&key).await?;
        anyhow::ensure!(
            meta.encryption.as_deref().is_some_and(|e| !e.is_empty()),
            "head of a new object reports no encryption at rest: {meta:?}"
        );
        Ok(())
    })
    .await
}
