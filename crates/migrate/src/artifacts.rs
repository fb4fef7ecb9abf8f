//! Objects: streamed from the source's store into the target's (never whole in memory here),
//! a bounded number at once, checked end to end (the SHA-256 the target computed while writing
//! must be the source's), skipping any the target already holds with the same hash.

use std::collections::HashMap;

use futures::StreamExt;
use galley_core::stages::{ArtifactKey, ArtifactMeta};
use galley_core::{Error, ErrorKind, Result};

use crate::journal::{Journal, Kind};
use crate::{Applied, Side};

/// Where each source object is on the target, by URI: what run artifacts and model versions
/// refer to, translated.
#[derive(Debug, Clone, Default)]
pub struct UriMap {
    to_target: HashMap<String, String>,
    key_of_target: HashMap<String, String>,
}

impl UriMap {
    /// The target's URI for a source URI; a URI outside the source's store is kept as it is.
    pub fn translate(&self, source_uri: &str) -> String {
        self.to_target.get(source_uri).cloned().unwrap_or_else(|| source_uri.to_owned())
    }

    /// The key of an object the target holds, by its URI there.
    pub fn target_key(&self, target_uri: &str) -> Option<&str> {
        self.key_of_target.get(target_uri).map(String::as_str)
    }

    pub(crate) fn record(&mut self, key: &str, source_uri: &str, target_uri: &str) {
        self.to_target.insert(source_uri.to_owned(), target_uri.to_owned());
        self.key_of_target.insert(target_uri.to_owned(), key.to_owned());
    }
}

pub(crate) async fn copy(
    source: &Side,
    target: &Side,
    objects: &[ArtifactMeta],
    journal: &mut Journal,
    parallelism: usize,
    applied: &mut Applied,
    say: &(dyn Fn(&str) + Sync),
) -> Result<UriMap> {
    let mut uris = UriMap::default();
    let mut todo = Vec::new();
    for meta in objects {
        match journal.done(Kind::Artifact, &meta.key) {
            Some(target_uri) => uris.record(&meta.key, &meta.uri, target_uri),
            None => todo.push(meta),
        }
    }
    say(&format!("artifacts: {} objects, {} to check or copy", objects.len(), todo.len()));
    let mut copies = futures::stream::iter(todo.into_iter().map(|meta| copy_one(source, target, meta))).buffer_unordered(parallelism.max(1));
    while let Some(done) = copies.next().await {
        let (meta, target_meta, copied) = done?;
        if copied {
            applied.objects_copied += 1;
            applied.bytes_copied += meta.size;
        } else {
            applied.objects_present += 1;
        }
        journal.record(Kind::Artifact, &meta.key, &target_meta.uri)?;
        uris.record(&meta.key, &meta.uri, &target_meta.uri);
    }
    say(&format!("artifacts: {} copied ({} bytes), {} already there", applied.objects_copied, applied.bytes_copied, applied.objects_present));
    Ok(uris)
}

/// Copies one object unless the target has it with the same hash; says whether it copied.
async fn copy_one<'a>(source: &Side, target: &Side, meta: &'a ArtifactMeta) -> Result<(&'a ArtifactMeta, ArtifactMeta, bool)> {
    let key = ArtifactKey::new(&meta.key)?;
    match target.stages.artifacts.head(&key).await {
        Ok(there) if there.sha256 == meta.sha256 => return Ok((meta, there, false)),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let body = source.stages.artifacts.get(&key).await?;
    let written = target.stages.artifacts.put(&key, body).await?;
    crate::journal::crash_point();
    if written.sha256 != meta.sha256 {
        return Err(Error::corrupt(format!(
            "`{}`: the source records sha256 {} but {} bytes hashing to {} arrived on {}; the object changed during the copy or was damaged on the way. Run the migration again to copy it afresh",
            meta.key, meta.sha256, written.size, written.sha256, target.label
        )));
    }
    Ok((meta, written, true))
}
