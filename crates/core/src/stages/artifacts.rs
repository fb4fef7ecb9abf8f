use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use super::{Described, TimestampMs};
use crate::{Error, Result};

/// A validated artifact key: a relative, `/`-separated path with no `..`, no empty or `.`
/// segments, no backslashes and no leading `/`, so no store can be tricked into writing outside
/// its root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ArtifactKey(String);

impl ArtifactKey {
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let refuse = |why: &str| Err(Error::invalid(format!("artifact key `{key}` is refused: {why}")));
        if key.is_empty() {
            return refuse("it is empty");
        }
        if key.starts_with('/') || key.contains(':') && key.chars().nth(1) == Some(':') {
            return refuse("absolute paths are not allowed; use a path relative to the store");
        }
        if key.contains('\\') {
            return refuse("backslashes are not allowed; separate segments with `/`");
        }
        if key.contains('\0') {
            return refuse("it contains a NUL byte");
        }
        for seg in key.split('/') {
            match seg {
                "" => return refuse("it has an empty segment (`//` or a trailing `/`)"),
                "." | ".." => return refuse("`.` and `..` segments are not allowed"),
                _ => {}
            }
        }
        Ok(ArtifactKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for ArtifactKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ArtifactKey::new(s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stream of byte chunks: artifacts are streamed, never required to fit in memory.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

pub fn stream_from_bytes(bytes: impl Into<Bytes>) -> ByteStream {
    futures::stream::once(futures::future::ready(Ok(bytes.into()))).boxed()
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactMeta {
    pub key: String,
    pub size: u64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    /// Where the platform keeps it (`file://…`, `s3://…`), for lineage and migration.
    pub uri: String,
    pub modified_ms: TimestampMs,
    /// The encryption at rest the store reports for the object (`AES256`, `aws:kms`), where
    /// the platform encrypts (the `ArtifactEncryption` feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
}

/// One stored version of a key, on a store that keeps versions (`ArtifactVersioning`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArtifactVersion {
    pub version_id: String,
    pub size: u64,
    pub modified_ms: TimestampMs,
    /// Whether a plain `get` returns this version.
    pub latest: bool,
}

#[async_trait]
pub trait ArtifactStore: Described + Send + Sync {
    /// Writes atomically: readers see the old object or the whole new one, never a part.
    async fn put(&self, key: &ArtifactKey, body: ByteStream) -> Result<ArtifactMeta>;
    async fn get(&self, key: &ArtifactKey) -> Result<ByteStream>;
    /// `NotFound` when absent.
    async fn head(&self, key: &ArtifactKey) -> Result<ArtifactMeta>;
    async fn list(&self, prefix: &str) -> Result<Vec<ArtifactMeta>>;
    /// Deleting an absent key succeeds (idempotent).
    async fn delete(&self, key: &ArtifactKey) -> Result<()>;
    async fn copy(&self, from: &ArtifactKey, to: &ArtifactKey) -> Result<ArtifactMeta>;

    /// Every stored version of `key`, newest first (`ArtifactVersioning`): an overwritten model
    /// or dataset can be read back as it was.
    async fn versions(&self, key: &ArtifactKey) -> Result<Vec<ArtifactVersion>> {
        Err(Error::unsupported(format!("artifact `{key}`: this store keeps no versions")))
    }

    /// One earlier version of `key`, by the id [`ArtifactStore::versions`] gave.
    async fn get_version(&self, key: &ArtifactKey, version_id: &str) -> Result<ByteStream> {
        let _ = version_id;
        Err(Error::unsupported(format!("artifact `{key}`: this store keeps no versions")))
    }
}

/// Convenience calls on top of the streaming trait, for small objects.
#[async_trait]
pub trait ArtifactStoreExt: ArtifactStore {
    async fn put_bytes(&self, key: &ArtifactKey, bytes: Bytes) -> Result<ArtifactMeta> {
        self.put(key, stream_from_bytes(bytes)).await
    }
    async fn get_bytes(&self, key: &ArtifactKey) -> Result<Bytes> {
        let mut s = self.get(key).await?;
        let mut out = Vec::new();
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.into())
    }
}
impl<T: ArtifactStore + ?Sized> ArtifactStoreExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_escape_the_root_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "a/", "./a", "a\\b", "C:/x"] {
            let e = ArtifactKey::new(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad}");
            assert!(e.message().contains("refused"), "{bad}: {e}");
        }
        for good in ["model.json", "runs/1/model.bin", "a..b/c"] {
            ArtifactKey::new(good).unwrap();
        }
    }
}
