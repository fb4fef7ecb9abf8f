//! Intermediate results as JSON objects in the artifact store, under keys derived from their
//! content's inputs, so a cached step's output stays valid across processes.

use galley_core::stages::{ArtifactKey, ArtifactMeta, ArtifactStore, ArtifactStoreExt};
use galley_core::{Error, Result};
use sha2::{Digest, Sha256};

pub async fn put_json<T: serde::Serialize + ?Sized>(store: &dyn ArtifactStore, key: &str, value: &T) -> Result<ArtifactMeta> {
    let bytes = serde_json::to_vec(value)?;
    store.put_bytes(&ArtifactKey::new(key)?, bytes.into()).await
}

pub async fn get_json<T: serde::de::DeserializeOwned>(store: &dyn ArtifactStore, key: &str) -> Result<T> {
    let bytes = store.get_bytes(&ArtifactKey::new(key)?).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(format!("artifact `{key}` is not the JSON Galley wrote there; re-run with the cache off")).with_source(e))
}

/// Short hex digest of the given parts, for keys and fingerprints.
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}
