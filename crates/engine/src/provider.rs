//! What a platform gives the engine: the expansion of its stages into resources, a handler per
//! resource kind, and the runtime stage objects once those resources exist.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use galley_blueprint::Blueprint;
use galley_core::resource::{ResourceHandler, ResourceSpec};
use galley_core::{PlatformKind, Result, Stage, StageSet};

/// Where the blueprint lives and where Galley may keep files for it.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The directory holding the blueprint; relative paths in it resolve from here.
    pub project_dir: PathBuf,
    /// `.galley` under the project directory: state, plans, the local platform's files.
    pub work_dir: PathBuf,
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn platform(&self) -> PlatformKind;

    /// The resources that make `stages` (the ones assigned to this platform) exist, with
    /// deterministic names and their dependencies.
    fn expand(&self, blueprint: &Blueprint, stages: &[Stage]) -> Result<Vec<ResourceSpec>>;

    /// The handler for a resource kind this provider expands to.
    fn handler(&self, kind: &str) -> Option<Arc<dyn ResourceHandler>>;

    /// Opens the runtime stage objects over the provisioned resources. `outputs` are the
    /// outputs of every resource in state, by address.
    async fn open(
        &self,
        blueprint: &Blueprint,
        outputs: &BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    ) -> Result<StageSet>;
}

/// The providers compiled into this binary, by platform.
#[derive(Default, Clone)]
pub struct Providers {
    by_platform: BTreeMap<PlatformKind, Arc<dyn Provider>>,
}

impl Providers {
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        self.by_platform.insert(provider.platform(), provider);
        self
    }

    pub fn get(&self, platform: PlatformKind) -> Result<&Arc<dyn Provider>> {
        self.by_platform.get(&platform).ok_or_else(|| {
            galley_core::Error::unsupported(format!(
                "platform `{platform}` is not built into this galley; rebuild with `--features {platform}`"
            ))
        })
    }

    pub fn platforms(&self) -> impl Iterator<Item = PlatformKind> + '_ {
        self.by_platform.keys().copied()
    }
}

/// A resource spec as providers write them: addresses and dependencies as `&str`.
#[allow(clippy::too_many_arguments)]
pub fn resource(
    platform: PlatformKind,
    address: &str,
    kind: &str,
    stage: Stage,
    name: &str,
    desired: serde_json::Value,
    depends_on: &[&str],
    protect: bool,
) -> ResourceSpec {
    ResourceSpec {
        address: address.to_owned(),
        kind: kind.to_owned(),
        platform,
        stage,
        name: name.to_owned(),
        desired,
        depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
        protect,
    }
}

/// The pipeline runs through the artifact store, feature group, experiment and registered
/// model, so its resource depends on whichever of them the blueprint declares (on any
/// platform). Every provider names those resources the same way.
pub fn pipeline_dependencies(blueprint: &Blueprint) -> Vec<&'static str> {
    let present = blueprint.declared_stages();
    [
        (Stage::Artifacts, "artifacts.store"),
        (Stage::Features, "features.group"),
        (Stage::Experiments, "experiments.experiment"),
        (Stage::Registry, "registry.model"),
    ]
    .into_iter()
    .filter_map(|(stage, address)| present.contains(&stage).then_some(address))
    .collect()
}
