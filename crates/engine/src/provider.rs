//! What a platform gives the engine and the CLI: its rules (what validation knows), the
//! expansion of its stages into resources, a handler per resource kind, the runtime stage
//! objects once those resources exist, the state backends it offers, and its own processes.
//! The CLI reaches a platform only through this trait.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use galley_blueprint::{Backend, Blueprint, PlatformRegistry, PlatformRules};
use galley_core::resource::{ResourceHandler, ResourceSpec};
use galley_core::{Error, PlatformId, Result, Stage, StageSet};

use crate::state::StateBackend;

/// Where the blueprint lives, where Galley may keep files for it, and how to start this galley
/// again for a platform's own processes.
#[derive(Debug, Clone)]
pub struct ProviderContext {
    /// The directory holding the blueprint; relative paths in it resolve from here.
    pub project_dir: PathBuf,
    /// `.galley` under the project directory: state, plans, the local platform's files.
    pub work_dir: PathBuf,
    /// The galley executable, for processes a platform spawns (a local endpoint's server).
    pub galley_exe: PathBuf,
}

impl ProviderContext {
    /// The command that runs `platform`'s [`Provider::process`] with the arguments appended:
    /// `galley __platform <platform> …`.
    pub fn process_command(&self, platform: PlatformId) -> Vec<OsString> {
        vec![self.galley_exe.clone().into_os_string(), "__platform".into(), platform.as_str().into()]
    }
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// What validation knows of this platform: the same rules the registry holds.
    fn rules(&self) -> Arc<dyn PlatformRules>;

    fn platform(&self) -> PlatformId {
        self.rules().id()
    }

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

    /// The state backend `backend` names, when this platform offers its type.
    fn state_backend(&self, backend: &Backend, blueprint: &Blueprint) -> Option<Result<Box<dyn StateBackend>>> {
        let _ = (backend, blueprint);
        None
    }

    /// Runs one of this platform's own processes inside the galley binary, with the arguments
    /// after `galley __platform <platform>` (the local platform's endpoint server).
    async fn process(&self, args: &[String]) -> Result<()> {
        Err(Error::unsupported(format!("platform `{}` runs no process of its own (asked: {})", self.platform(), args.join(" "))))
    }

    /// The container contract Galley's image implements for this platform's managed jobs and
    /// endpoints (e.g. `SageMaker`), if it has one: `galley container …` runs it.
    fn container_contract(&self) -> Option<&'static str> {
        None
    }

    /// `platforms.<id>` as this machine resolves them (paths absolute, defaults and the
    /// environment read in), for a run bundle: the step processes of the platform's engine
    /// read the blueprint alone, on another machine or in another directory. `None`: the
    /// blueprint's settings serve there as written. Never credentials.
    fn bundle_settings(&self, blueprint: &Blueprint) -> Result<Option<serde_json::Value>> {
        let _ = blueprint;
        Ok(None)
    }

    /// `galley container …`: the entrypoint of Galley's image on this platform.
    async fn container(&self, command: &ContainerCommand) -> Result<()> {
        let _ = command;
        Err(Error::unsupported(format!("platform `{}` has no container contract", self.platform())))
    }

    /// The bytes at `uri` in this platform's storage (`s3://bucket/key`), read with the
    /// credentials the container runs with: how `galley container step` gets its run bundle
    /// before it knows any blueprint.
    async fn read_uri(&self, uri: &str) -> Result<Vec<u8>> {
        Err(Error::unsupported(format!("platform `{}` reads no `{uri}`", self.platform())))
    }
}

/// What `galley container` is asked to do inside a platform's container.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerCommand {
    /// Train from the contract's input files under `root`, leaving the model where the
    /// platform collects it.
    Train { root: PathBuf },
    /// Serve the model under `root` on `bind:port`.
    Serve { root: PathBuf, bind: std::net::IpAddr, port: u16 },
}

/// The platforms this binary knows (every provider's rules) and the ones built in to run.
#[derive(Default, Clone)]
pub struct Providers {
    registry: PlatformRegistry,
    by_platform: BTreeMap<PlatformId, Arc<dyn Provider>>,
}

impl Providers {
    pub fn new(registry: PlatformRegistry) -> Self {
        Providers { registry, by_platform: BTreeMap::new() }
    }

    /// Adds a built-in provider (its rules join the registry if they are not there yet).
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Self {
        if self.registry.get(provider.platform()).is_none() {
            self.registry = self.registry.clone().with(provider.rules());
        }
        self.by_platform.insert(provider.platform(), provider);
        self
    }

    pub fn registry(&self) -> &PlatformRegistry {
        &self.registry
    }

    /// The provider of `platform`, or an error a user can act on: which build has it.
    pub fn get(&self, platform: PlatformId) -> Result<&Arc<dyn Provider>> {
        self.by_platform.get(&platform).ok_or_else(|| match self.registry.get(platform) {
            Some(rules) => Error::unsupported(format!(
                "platform `{platform}` is not built into this galley; build one that has it with \
                 `cargo install --path crates/cli --features {feature}` (or `cargo run --release --features {feature} -- …`)",
                feature = rules.cargo_feature()
            )),
            None => Error::unsupported(format!("unknown platform `{platform}`; this galley knows {}", self.registry.names().join(", "))),
        })
    }

    pub fn platforms(&self) -> impl Iterator<Item = PlatformId> + '_ {
        self.by_platform.keys().copied()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.by_platform.values()
    }

    /// The built-in provider whose container contract `galley container` runs.
    pub fn container(&self) -> Result<&Arc<dyn Provider>> {
        let with: Vec<(&Arc<dyn Provider>, &str)> =
            self.by_platform.values().filter_map(|p| p.container_contract().map(|c| (p, c))).collect();
        match with.as_slice() {
            [(p, _)] => Ok(p),
            [] => {
                let known: Vec<String> = self.registry.all().map(|r| format!("`{}` (feature `{}`)", r.id(), r.cargo_feature())).collect();
                Err(Error::unsupported(format!(
                    "`galley container` runs a platform's container contract, and none is built into this galley; \
                     build Galley's image with the platform it serves (platforms known: {})",
                    known.join(", ")
                )))
            }
            several => {
                let contracts: Vec<String> = several.iter().map(|(p, c)| format!("{c} (`{}`)", p.platform())).collect();
                Err(Error::unsupported(format!(
                    "this galley has more than one container contract ({}); build the image with one platform's feature",
                    contracts.join(", ")
                )))
            }
        }
    }
}

/// A resource spec as providers write them: addresses and dependencies as `&str`.
#[allow(clippy::too_many_arguments)]
pub fn resource(
    platform: PlatformId,
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
