//! Objects: streamed from the source's store into the target's (never whole in memory here),
//! a bounded number at once, checked end to end (the SHA-256 the target computed while writing
//! must be the source's), skipping any the target already holds with the same hash.

use std::collections::HashMap;

use futures::StreamExt;
use galley_core::stages::{ArtifactKey, ArtifactMeta, ArtifactStore};
use galley_core::{Error, Result};

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

/// What copying a store's objects did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Copied {
    pub copied: u64,
    pub present: u64,
    pub bytes_copied: u64,
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
    say(&format!("artifacts: {} objects", objects.len()));
    let (uris, done) = copy_objects(&*source.stages.artifacts, &*target.stages.artifacts, objects, journal, parallelism).await?;
    applied.objects_copied += done.copied;
    applied.objects_present += done.present;
    applied.bytes_copied += done.bytes_copied;
    say(&format!("artifacts: {} copied ({} bytes), {} already there", done.copied, done.bytes_copied, done.present));
    Ok(uris)
}

/// Copies `objects` of `from` into `to`, `parallelism` at a time, each recorded in `journal`
/// once the target has it (those the journal has are skipped). The migration's artifact step,
/// and what the migration benchmark times against rclone.
pub async fn copy_objects(
    from: &dyn ArtifactStore,
    to: &dyn ArtifactStore,
    objects: &[ArtifactMeta],
    journal: &mut Journal,
    parallelism: usize,
) -> Result<(UriMap, Copied)> {
    let mut uris = UriMap::default();
    let mut done = Copied::default();
    let mut todo = Vec::new();
    for meta in objects {
        match journal.done(Kind::Artifact, &meta.key) {
            Some(target_uri) => uris.record(&meta.key, &meta.uri, target_uri),
            None => todo.push(meta),
        }
    }
    // One listing of the target rather than a HEAD per object (as rclone's checkers do): on an
    // empty target that is one request instead of one per object.
    let mut there: HashMap<String, ArtifactMeta> = HashMap::new();
    if !todo.is_empty() {
        there = to.list("").await?.into_iter().map(|m| (m.key.clone(), m)).collect();
    }
    let (mut present, todo): (Vec<&ArtifactMeta>, Vec<&ArtifactMeta>) =
        todo.into_iter().partition(|m| there.get(&m.key).is_some_and(|t| t.sha256 == m.sha256));
    for meta in present.drain(..) {
        done.present += 1;
        let target_uri = &there[&meta.key].uri;
        journal.record(Kind::Artifact, &meta.key, target_uri)?;
        uris.record(&meta.key, &meta.uri, target_uri);
    }
    let mut copies = futures::stream::iter(todo.into_iter().map(|meta| copy_one(from, to, meta))).buffer_unordered(parallelism.max(1));
    while let Some(one) = copies.next().await {
        let (meta, target_meta) = one?;
        done.copied += 1;
        done.bytes_copied += meta.size;
        journal.record(Kind::Artifact, &meta.key, &target_meta.uri)?;
        uris.record(&meta.key, &meta.uri, &target_meta.uri);
    }
    journal.sync()?;
    Ok((uris, done))
}

/// Streams one object from `from` into `to` and checks the hash the target computed.
async fn copy_one<'a>(from: &dyn ArtifactStore, to: &dyn ArtifactStore, meta: &'a ArtifactMeta) -> Result<(&'a ArtifactMeta, ArtifactMeta)> {
    let key = ArtifactKey::new(&meta.key)?;
    let body = from.get(&key).await?;
    let written = to.put(&key, body).await?;
    crate::journal::crash_point();
    if written.sha256 != meta.sha256 {
        return Err(Error::corrupt(format!(
            "`{}`: the source records sha256 {} but {} bytes hashing to {} arrived on {}; the object changed during the copy or was damaged on the way. Run the migration again to copy it afresh",
            meta.key, meta.sha256, written.size, written.sha256, to.platform()
        )));
    }
    Ok((meta, written))
}
