//! Checks the artifacts suite itself: a minimal in-memory store that keeps the contract passes
//! every case, and stores that each break one clause fail exactly the case that guards it.
//! The in-memory store is a test double for the suite, not a platform.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use galley_core::stages::{ArtifactKey, ArtifactMeta, ArtifactStore, ByteStream, Described, stream_from_bytes};
use galley_core::{Error, PlatformKind, Result};
use galley_testkit::run_artifacts;
use galley_testkit::support::sha256_hex;

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    None,
    ListUnsorted,
    DeleteNotIdempotent,
    PartialWriteOnError,
    WrongSha,
}

struct MemStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    flaw: Flaw,
}

impl MemStore {
    fn new(flaw: Flaw) -> Arc<dyn ArtifactStore> {
        Arc::new(MemStore { objects: Mutex::new(BTreeMap::new()), flaw })
    }
    fn meta(&self, key: &str, body: &Bytes) -> ArtifactMeta {
        let sha = if self.flaw == Flaw::WrongSha { sha256_hex(b"not the content") } else { sha256_hex(body) };
        ArtifactMeta { key: key.to_owned(), size: body.len() as u64, sha256: sha, uri: format!("mem://{key}"), modified_ms: 1 }
    }
}

impl Described for MemStore {
    fn platform(&self) -> PlatformKind {
        PlatformKind::Local
    }
}

#[async_trait]
impl ArtifactStore for MemStore {
    async fn put(&self, key: &ArtifactKey, mut body: ByteStream) -> Result<ArtifactMeta> {
        let mut buf = Vec::new();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => buf.extend_from_slice(&c),
                Err(e) => {
                    if self.flaw == Flaw::PartialWriteOnError {
                        self.objects.lock().unwrap().insert(key.to_string(), Bytes::from(buf));
                    }
                    return Err(e);
                }
            }
        }
        let body = Bytes::from(buf);
        self.objects.lock().unwrap().insert(key.to_string(), body.clone());
        Ok(self.meta(key.as_str(), &body))
    }
    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream> {
        let body = self.objects.lock().unwrap().get(key.as_str()).cloned();
        body.map(stream_from_bytes).ok_or_else(|| Error::not_found(format!("no artifact `{key}`")))
    }
    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta> {
        let body = self.objects.lock().unwrap().get(key.as_str()).cloned();
        body.map(|b| self.meta(key.as_str(), &b)).ok_or_else(|| Error::not_found(format!("no artifact `{key}`")))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>> {
        let objects = self.objects.lock().unwrap();
        let mut out: Vec<ArtifactMeta> =
            objects.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, b)| self.meta(k, b)).collect();
        if self.flaw == Flaw::ListUnsorted {
            out.reverse();
        }
        Ok(out)
    }
    async fn delete(&self, key: &ArtifactKey) -> Result<()> {
        let removed = self.objects.lock().unwrap().remove(key.as_str());
        if removed.is_none() && self.flaw == Flaw::DeleteNotIdempotent {
            return Err(Error::not_found(format!("no artifact `{key}`")));
        }
        Ok(())
    }
    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta> {
        let body = self.objects.lock().unwrap().get(from.as_str()).cloned();
        let body = body.ok_or_else(|| Error::not_found(format!("no artifact `{from}`")))?;
        self.objects.lock().unwrap().insert(to.to_string(), body.clone());
        Ok(self.meta(to.as_str(), &body))
    }
}

fn failed_names(r: &galley_testkit::Report) -> Vec<&str> {
    r.failed.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn a_faithful_store_passes_every_case() {
    let r = run_artifacts(MemStore::new(Flaw::None)).await;
    r.assert_ok();
    assert_eq!(r.passed.len(), galley_testkit::artifacts::cases().len());
}

#[tokio::test]
async fn each_broken_clause_fails_its_own_case() {
    let expectations = [
        (Flaw::ListUnsorted, vec!["artifacts::list_by_prefix_is_sorted_and_exact"]),
        (Flaw::DeleteNotIdempotent, vec!["artifacts::delete_is_idempotent"]),
        (Flaw::PartialWriteOnError, vec!["artifacts::failed_upload_leaves_previous_content"]),
    ];
    for (flaw, want) in expectations {
        let r = run_artifacts(MemStore::new(flaw)).await;
        assert_eq!(failed_names(&r), want, "{}", r.summary());
    }
    // A wrong digest shows wherever a digest is read.
    let r = run_artifacts(MemStore::new(Flaw::WrongSha)).await;
    let failed = failed_names(&r);
    assert!(failed.contains(&"artifacts::head_reports_true_size_and_sha256"), "{}", r.summary());
    assert!(failed.contains(&"artifacts::put_get_roundtrip"), "{}", r.summary());
    let (_, msg) = r.failed.iter().find(|(n, _)| n == "artifacts::head_reports_true_size_and_sha256").unwrap();
    assert!(msg.contains("meta.sha256"), "{msg}");
}
