//! The lifecycle on the platform's own engine (SageMaker Pipelines): each step runs as a
//! container of Galley's image (`galley container step NAME`), in a process that has no
//! blueprint file and no project directory. What such a process needs travels as a
//! [`RunBundle`] in the artifact store: the blueprint as loaded (overlays merged, variables
//! substituted, credential settings removed), its hash, and the data file when the source is
//! one. `galley run` writes it before it starts a run; a run the platform starts by itself (a
//! schedule) reads the pipeline's current one ([`galley_core::stages::bundle_key`]).

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use galley_blueprint::Blueprint;
use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt};
use galley_core::{Error, Result};
use sha2::Digest;

pub use galley_core::stages::{PARAM_BUNDLE, PARAM_EXPERIMENT_RUN, PARAM_FORCE_FROM};

/// Bumped on any change a step container of another galley version could misread.
pub const BUNDLE_FORMAT: u32 = 1;

/// How a bundle's `platforms.<id>` settings differ from the blueprint's.
#[derive(Debug, Clone, Default)]
pub struct BundleSettings {
    /// Settings a bundle never carries: `(platform, field)` pairs of credential settings
    /// (`PlatformRules::credential_fields`) and of settings about the user's machine
    /// (`PlatformRules::machine_fields`, a credentials profile). A step container gets its
    /// credentials from the platform (SageMaker's execution role), never from a file in the bucket.
    pub omitted: Vec<(String, String)>,
    /// Whole `platforms.<id>` sections as resolved on this machine (`Provider::bundle_settings`:
    /// absolute paths, URLs read from the environment), which replace the blueprint's.
    pub resolved: Vec<(String, serde_json::Value)>,
}

/// What every platform `registry` knows says a bundle must leave out.
pub fn omitted_settings(registry: &galley_blueprint::PlatformRegistry) -> BundleSettings {
    let omitted = registry
        .all()
        .flat_map(|rules| {
            let platform = rules.id().as_str().to_owned();
            rules.credential_fields().iter().chain(rules.machine_fields()).map(move |f| (platform.clone(), (*f).to_owned())).collect::<Vec<_>>()
        })
        .collect();
    BundleSettings { omitted, resolved: Vec::new() }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunBundle {
    pub format: u32,
    /// The galley that wrote it; a step container of another version says so in its log.
    pub galley_version: String,
    pub blueprint: Blueprint,
    pub blueprint_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BundledData>,
}

/// A data file the blueprint reads, copied into the artifact store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BundledData {
    /// `data.source` as the blueprint names it.
    pub source: String,
    /// Where its bytes are (content-addressed).
    pub key: String,
}

impl RunBundle {
    /// The bundle of `bp` (read from `project_dir`), its data file stored under the pipeline.
    pub async fn write(
        bp: &Blueprint,
        blueprint_hash: &str,
        project_dir: &Path,
        pipeline: &str,
        settings: &BundleSettings,
        store: &dyn ArtifactStore,
    ) -> Result<(ArtifactKey, RunBundle)> {
        let mut blueprint = bp.clone();
        // Already merged and substituted into the fields; a variable may hold a secret.
        blueprint.vars.clear();
        blueprint.environments.clear();
        for (platform, resolved) in &settings.resolved {
            blueprint.platforms.insert(platform.clone(), resolved.clone());
        }
        for (platform, field) in &settings.omitted {
            if let Some(serde_json::Value::Object(settings)) = blueprint.platforms.get_mut(platform) {
                settings.remove(field);
            }
        }
        let data = if bp.data.source.starts_with(galley_ml::BUILTIN_PREFIX) {
            None
        } else {
            let path = project_dir.join(&bp.data.source);
            let bytes = std::fs::read(&path).map_err(|e| Error::from(e).resource(path.display().to_string()))?;
            let key = ArtifactKey::new(format!("galley/pipelines/{pipeline}/data/{}", hex::encode(sha2::Sha256::digest(&bytes))))?;
            store.put_bytes(&key, Bytes::from(bytes)).await?;
            Some(BundledData { source: bp.data.source.clone(), key: key.as_str().to_owned() })
        };
        let bundle = RunBundle {
            format: BUNDLE_FORMAT,
            galley_version: env!("CARGO_PKG_VERSION").to_owned(),
            blueprint,
            blueprint_hash: blueprint_hash.to_owned(),
            data,
        };
        let body = Bytes::from(serde_json::to_vec(&bundle)?);
        // The run's own copy (content-addressed, so a later `galley run` cannot change what a
        // run in progress reads) and the pipeline's current one, for runs the platform starts.
        let own = ArtifactKey::new(format!("galley/pipelines/{pipeline}/bundles/{}.json", hex::encode(sha2::Sha256::digest(&body))))?;
        store.put_bytes(&own, body.clone()).await?;
        store.put_bytes(&ArtifactKey::new(galley_core::stages::bundle_key(pipeline))?, body).await?;
        Ok((own, bundle))
    }

    pub fn parse(bytes: &[u8]) -> Result<RunBundle> {
        let probe: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("the run bundle is not JSON: {e}")))?;
        let format = probe.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format != u64::from(BUNDLE_FORMAT) {
            return Err(Error::invalid(format!(
                "the run bundle is format {format}, written by galley {}; this galley ({}) reads format {BUNDLE_FORMAT}: build the image from the same galley as the CLI",
                probe.get("galley_version").and_then(|v| v.as_str()).unwrap_or("?"),
                env!("CARGO_PKG_VERSION")
            )));
        }
        serde_json::from_value(probe).map_err(|e| Error::corrupt(format!("the run bundle is damaged: {e}")))
    }

    /// Puts the bundled data file under `project_dir` where the blueprint reads it, and returns
    /// the blueprint to run.
    pub async fn materialize(&self, store: &dyn ArtifactStore, project_dir: &Path) -> Result<Blueprint> {
        let mut bp = self.blueprint.clone();
        if let Some(data) = &self.data {
            let relative = contained(&data.source);
            let path = project_dir.join(&relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::from(e).resource(dir.display().to_string()))?;
            }
            let bytes = store.get_bytes(&ArtifactKey::new(data.key.clone())?).await?;
            std::fs::write(&path, &bytes).map_err(|e| Error::from(e).resource(path.display().to_string()))?;
            bp.data.source = relative.to_string_lossy().into_owned();
        }
        Ok(bp)
    }
}

/// `source` as a path inside the project directory: kept when it is relative and stays inside,
/// otherwise its file name under `data/`.
fn contained(source: &str) -> PathBuf {
    let path = Path::new(source);
    if path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return path.to_path_buf();
    }
    Path::new("data").join(path.file_name().unwrap_or(std::ffi::OsStr::new("source.csv")))
}

#[cfg(test)]
mod tests {
    use super::contained;
    use std::path::Path;

    #[test]
    fn a_bundled_data_file_stays_inside_the_project() {
        assert_eq!(contained("data/wine.csv"), Path::new("data/wine.csv"));
        assert_eq!(contained("../shared/wine.csv"), Path::new("data/wine.csv"));
        assert_eq!(contained("/abs/wine.csv"), Path::new("data/wine.csv"));
    }
}
