//! The local platform as the engine sees it: each stage expands to one resource under the
//! platform's directory (`.galley/local` by default), a handler per resource kind, and the
//! runtime stage objects over them.
//!
//! Every resource records where it lives (`dir` / `db`) in its desired attributes, so moving the
//! platform directory is a visible replacement in the plan, never a silent fork of the data.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use galley_blueprint::Blueprint;
use galley_core::resource::{Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::stages::{ExperimentTracker, FeatureGroupSpec, FeatureStore, ModelRegistry, Orchestrator, PipelineSpec, Serving};
use galley_core::{Capabilities, Error, Result, Stage, StageSet};
use galley_engine::{Provider, ProviderContext};
use serde_json::{Value as Json, json};

use crate::artifacts::LocalArtifacts;
use crate::experiments::LocalExperiments;
use crate::features::LocalFeatures;
use crate::monitor::LocalMonitor;
use crate::orchestrator::LocalOrchestrator;
use crate::registry::LocalRegistry;
use crate::serving::LocalServing;

pub const ARTIFACT_STORE: &str = "local.artifact_store";
pub const FEATURE_GROUP: &str = "local.feature_group";
pub const EXPERIMENT: &str = "local.experiment";
pub const PIPELINE: &str = "local.pipeline";
pub const REGISTERED_MODEL: &str = "local.registered_model";
pub const ENDPOINT: &str = "local.endpoint";
pub const MONITOR: &str = "local.monitor";

/// Where the local platform keeps each stage's files, under one root.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn for_blueprint(bp: &Blueprint, ctx: &ProviderContext) -> Layout {
        // Validation checked `platforms.local` against its schema.
        let settings: crate::platform::LocalSettings = bp.platform_settings(crate::LOCAL).ok().flatten().unwrap_or_default();
        let root = match settings.dir {
            Some(dir) => ctx.project_dir.join(dir),
            None => ctx.work_dir.join("local"),
        };
        Layout { root }
    }
    pub fn artifacts(&self, bucket: &str) -> PathBuf {
        self.root.join("artifacts").join(bucket)
    }
    pub fn features_db(&self) -> PathBuf {
        self.root.join("features.db")
    }
    pub fn experiments_db(&self) -> PathBuf {
        self.root.join("experiments.db")
    }
    pub fn registry_db(&self) -> PathBuf {
        self.root.join("registry.db")
    }
    pub fn pipelines(&self) -> PathBuf {
        self.root.join("pipelines")
    }
    pub fn endpoints(&self) -> PathBuf {
        self.root.join("endpoints")
    }
    pub fn monitors(&self) -> PathBuf {
        self.root.join("monitors")
    }
    /// The artifact directory of `bp`: its bucket's, or the default one.
    pub fn artifacts_of(&self, bp: &Blueprint) -> PathBuf {
        bp.stages.artifacts.as_ref().map(|a| self.artifacts(&a.bucket)).unwrap_or_else(|| self.default_artifacts())
    }
    /// The artifact directory the lifecycle uses when the blueprint declares no artifacts stage.
    pub fn default_artifacts(&self) -> PathBuf {
        self.artifacts("default")
    }
}

/// Stages kept on servers rather than in files (onprem: MLflow's experiments and registry,
/// Feast's features).
pub struct Servers {
    pub experiments: Arc<dyn ExperimentTracker>,
    pub registry: Arc<dyn ModelRegistry>,
    pub features: Arc<dyn FeatureStore>,
}

pub struct LocalProvider {
    ctx: ProviderContext,
    /// How to start an endpoint server process: this galley's `__platform local endpoint`.
    server_command: Vec<OsString>,
    handlers: BTreeMap<&'static str, Arc<dyn ResourceHandler>>,
}

/// The first argument of [`Provider::process`] that runs an endpoint's model server.
pub const ENDPOINT_PROCESS: &str = "endpoint";

/// The local platform's provider, for the CLI's registry.
pub fn provider(ctx: ProviderContext) -> Arc<dyn Provider> {
    let mut command = ctx.process_command(crate::LOCAL);
    command.push(ENDPOINT_PROCESS.into());
    Arc::new(LocalProvider::new(ctx, command))
}

impl LocalProvider {
    /// `server_command` starts an endpoint's model server; it gets `--config FILE` appended.
    pub fn new(ctx: ProviderContext, server_command: Vec<OsString>) -> Self {
        let handlers: Vec<Arc<dyn ResourceHandler>> = vec![
            Arc::new(ArtifactStoreHandler),
            Arc::new(FeatureGroupHandler),
            Arc::new(ExperimentHandler),
            Arc::new(PipelineHandler),
            Arc::new(RegisteredModelHandler),
            Arc::new(EndpointHandler { server_command: server_command.clone() }),
            Arc::new(MonitorHandler),
        ];
        let handlers = handlers
            .into_iter()
            .map(|h| (kind_static(h.kind()), h))
            .collect();
        LocalProvider { ctx, server_command, handlers }
    }

    /// The runtime stage objects for a blueprint (also what `open` returns).
    pub fn stages(&self, bp: &Blueprint) -> Result<StageSet> {
        self.stages_at(bp, &Layout::for_blueprint(bp, &self.ctx), crate::capabilities(), None)
    }

    /// The stage objects over the files under `layout`, each declaring `declared`: how a
    /// platform that keeps stages the local way (onprem, on a shared directory) opens them.
    /// With `tracking`, those are the experiments and registry (no SQLite file is opened for them).
    pub fn stages_at(&self, bp: &Blueprint, layout: &Layout, declared: Capabilities, servers: Option<Servers>) -> Result<StageSet> {
        let servers = match servers {
            Some(s) => s,
            None => Servers {
                experiments: Arc::new(LocalExperiments::open(layout.experiments_db())?),
                registry: Arc::new(LocalRegistry::open(layout.registry_db())?),
                features: Arc::new(LocalFeatures::open(layout.features_db())?.declaring(declared.clone())),
            },
        };
        let artifacts_dir = layout.artifacts_of(bp);
        let serving = LocalServing::new(layout.endpoints(), layout.monitors(), self.server_command.clone());
        Ok(StageSet {
            artifacts: Arc::new(LocalArtifacts::open(artifacts_dir)?.declaring(declared.clone())),
            features: servers.features,
            experiments: servers.experiments,
            orchestrator: Arc::new(LocalOrchestrator::open(layout.pipelines())?.declaring(declared.clone())),
            registry: servers.registry,
            serving: Arc::new(serving.declaring(declared.clone())),
            monitor: Arc::new(LocalMonitor::open(layout.monitors())?.declaring(declared)),
        })
    }

    /// The resources of `stages` with their files under `layout` (see [`Self::stages_at`]).
    pub fn expand_at(&self, bp: &Blueprint, stages: &[Stage], layout: &Layout) -> Result<Vec<ResourceSpec>> {
        let s = &bp.stages;
        let mut out = Vec::new();
        let declared = |st: Stage| stages.contains(&st);
        // Addresses of the stages present on *any* platform, for dependencies.
        let present: Vec<Stage> = bp.declared_stages();
        let dep = |st: Stage, addr: &'static str| present.contains(&st).then_some(addr);

        if let (true, Some(a)) = (declared(Stage::Artifacts), &s.artifacts) {
            out.push(spec("artifacts.store", ARTIFACT_STORE, Stage::Artifacts, &a.bucket,
                json!({ "dir": path_str(&layout.artifacts(&a.bucket)) }), &[], a.common.protect));
        }
        if let (true, Some(f)) = (declared(Stage::Features), &s.features) {
            let features = galley_lifecycle::resolved_features(bp, &self.ctx.project_dir)?;
            let group = galley_lifecycle::feature_group_spec(bp, &features);
            out.push(spec("features.group", FEATURE_GROUP, Stage::Features, &f.group,
                json!({ "db": path_str(&layout.features_db()), "spec": group }), &[], f.common.protect));
        }
        if let (true, Some(e)) = (declared(Stage::Experiments), &s.experiments) {
            out.push(spec("experiments.experiment", EXPERIMENT, Stage::Experiments, &e.name,
                json!({ "db": path_str(&layout.experiments_db()), "name": e.name }), &[], e.common.protect));
        }
        if let (true, Some(r)) = (declared(Stage::Registry), &s.registry) {
            let deps: Vec<&str> = dep(Stage::Artifacts, "artifacts.store").into_iter().collect();
            out.push(spec("registry.model", REGISTERED_MODEL, Stage::Registry, &r.model,
                json!({ "db": path_str(&layout.registry_db()), "model": r.model }), &deps, r.common.protect));
        }
        if let (true, Some(sv)) = (declared(Stage::Serving), &s.serving) {
            let deps: Vec<&str> = dep(Stage::Registry, "registry.model").into_iter().collect();
            out.push(spec("serving.endpoint", ENDPOINT, Stage::Serving, &sv.endpoint,
                json!({
                    "dir": path_str(&layout.endpoints()),
                    "monitors": path_str(&layout.monitors()),
                    "endpoint": sv.endpoint,
                    "bind": sv.bind.clone().unwrap_or_else(|| "127.0.0.1".into()),
                    "port": sv.port.unwrap_or(0),
                    // Only the variable's name: the token never enters a plan or the state.
                    "token_env": sv.auth.as_ref().map(|a| a.token_env.clone()),
                    "model": sv.model,
                }), &deps, sv.common.protect));
        }
        if let (true, Some(m)) = (declared(Stage::Monitoring), &s.monitoring) {
            let name = s.serving.as_ref().map(|sv| sv.endpoint.clone()).unwrap_or_else(|| bp.name.clone());
            let deps: Vec<&str> = dep(Stage::Serving, "serving.endpoint").into_iter().collect();
            out.push(spec("monitoring.monitor", MONITOR, Stage::Monitoring, &name,
                json!({ "dir": path_str(&layout.monitors()), "name": name, "drift": m.drift }), &deps, m.common.protect));
        }
        if declared(Stage::Pipeline) || (declared(Stage::Training) && s.pipeline.is_none()) {
            let p = galley_lifecycle::pipeline_spec(bp);
            let deps = galley_engine::provider::pipeline_dependencies(bp);
            let protect = s.pipeline.as_ref().map(|p| p.common.protect).unwrap_or(false);
            out.push(spec("pipeline.pipeline", PIPELINE, Stage::Pipeline, &p.name.clone(),
                json!({ "dir": path_str(&layout.pipelines()), "spec": p }), &deps, protect));
        }
        Ok(out)
    }
}

fn kind_static(kind: &str) -> &'static str {
    [ARTIFACT_STORE, FEATURE_GROUP, EXPERIMENT, PIPELINE, REGISTERED_MODEL, ENDPOINT, MONITOR]
        .into_iter()
        .find(|k| *k == kind)
        .expect("every handler's kind is one of the constants")
}

fn spec(address: &str, kind: &str, stage: Stage, name: &str, desired: Json, depends_on: &[&str], protect: bool) -> ResourceSpec {
    galley_engine::provider::resource(crate::platform::LOCAL, address, kind, stage, name, desired, depends_on, protect)
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[async_trait]
impl Provider for LocalProvider {
    fn rules(&self) -> Arc<dyn galley_blueprint::PlatformRules> {
        crate::rules()
    }

    /// `endpoint --config FILE`: an endpoint's model server, as [`LocalServing`] spawns it.
    async fn process(&self, args: &[String]) -> Result<()> {
        match args {
            [cmd, flag, config] if cmd == ENDPOINT_PROCESS && flag == "--config" => {
                crate::serving::run_server(Path::new(config)).await
            }
            _ => Err(Error::invalid(format!("the local platform has no process `{}`; expected `{ENDPOINT_PROCESS} --config FILE`", args.join(" ")))),
        }
    }

    fn expand(&self, bp: &Blueprint, stages: &[Stage]) -> Result<Vec<ResourceSpec>> {
        self.expand_at(bp, stages, &Layout::for_blueprint(bp, &self.ctx))
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn ResourceHandler>> {
        self.handlers.get(kind).cloned()
    }

    async fn open(&self, bp: &Blueprint, _outputs: &BTreeMap<String, BTreeMap<String, Json>>) -> Result<StageSet> {
        self.stages(bp)
    }
}

fn attr<'a>(spec: &'a ResourceSpec, key: &str) -> Result<&'a str> {
    spec.desired.get(key).and_then(Json::as_str).ok_or_else(|| {
        Error::internal(format!("resource `{}` has no `{key}` attribute", spec.address))
    })
}

fn parse<T: serde::de::DeserializeOwned>(spec: &ResourceSpec, key: &str) -> Result<T> {
    let v = spec.desired.get(key).cloned().unwrap_or(Json::Null);
    serde_json::from_value(v).map_err(|e| Error::internal(format!("resource `{}`: bad `{key}`: {e}", spec.address)))
}

/// The file beside a resource that records which blueprint and lineage made it.
fn write_owner(dir: &Path, owner: &OwnerTag) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(".galley-owner"), serde_json::to_vec_pretty(owner)?)?;
    Ok(())
}

struct ArtifactStoreHandler;

#[async_trait]
impl ResourceHandler for ArtifactStoreHandler {
    fn kind(&self) -> &str {
        ARTIFACT_STORE
    }
    fn replace_on(&self) -> &[&str] {
        &["dir"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let Some((dir, store)) = existing(spec, "dir", LocalArtifacts::open)? else { return Ok(None) };
        Ok(Some(Observed {
            id: path_str(&dir),
            attributes: json!({ "dir": path_str(&dir) }),
            outputs: BTreeMap::from([
                ("uri".to_owned(), json!(format!("file://{}", path_str(store.root())))),
                ("bucket".to_owned(), json!(spec.name)),
            ]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let dir = PathBuf::from(attr(spec, "dir")?);
        LocalArtifacts::open(dir.clone())?;
        write_owner(&dir, owner)?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, _spec: &ResourceSpec, current: &Observed) -> Result<()> {
        remove_dir(Path::new(&current.id))
    }
}

/// The store at the resource's `key` path, or `None` when that path does not exist: then nothing
/// of the resource can exist either, and opening the store would create the file.
fn existing<T>(spec: &ResourceSpec, key: &str, open: impl FnOnce(PathBuf) -> Result<T>) -> Result<Option<(PathBuf, T)>> {
    let path = PathBuf::from(attr(spec, key)?);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some((path.clone(), open(path)?)))
}

/// What a create just made, read back.
fn created(observed: Option<Observed>, spec: &ResourceSpec) -> Result<Observed> {
    observed.ok_or_else(|| Error::internal(format!("{} `{}` vanished right after creation", spec.kind, spec.name)))
}

/// For kinds whose every attribute forces a replacement, an "update" only re-reads.
fn still_there(observed: Option<Observed>, spec: &ResourceSpec) -> Result<Observed> {
    observed.ok_or_else(|| {
        Error::not_found(format!("{} `{}` vanished outside galley; run `galley apply` to recreate it", spec.kind, spec.name))
    })
}

/// Removes `dir` with what it holds, then the folders above it that this left empty.
pub fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::from(e).resource(path_str(dir))),
        _ => {
            prune_empty(dir.parent());
            Ok(())
        }
    }
}

/// After the last resource under the platform's root is destroyed, nothing is left behind:
/// removes `dir` and then its parent when (and only when) they are empty. `remove_dir` refuses
/// a non-empty directory, so this can never delete anything but empty folders.
fn prune_empty(dir: Option<&Path>) {
    let mut next = dir;
    for _ in 0..2 {
        let Some(d) = next else { return };
        if std::fs::remove_dir(d).is_err() {
            return;
        }
        next = d.parent();
    }
}

/// Deletes a database file once its store holds nothing, then the folders above it if empty.
fn remove_db_if_empty(db: &Path, table: &'static str) -> Result<()> {
    if crate::db::remove_if_empty(db, table)? {
        prune_empty(db.parent());
    }
    Ok(())
}

struct FeatureGroupHandler;

#[async_trait]
impl ResourceHandler for FeatureGroupHandler {
    fn kind(&self) -> &str {
        FEATURE_GROUP
    }
    fn replace_on(&self) -> &[&str] {
        &["db", "spec"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let Some((db, store)) = existing(spec, "db", LocalFeatures::open)? else { return Ok(None) };
        Ok(store.describe_group(&spec.name).await?.map(|g| Observed {
            id: format!("{}#{}", path_str(&db), g.name),
            attributes: json!({ "db": path_str(&db), "spec": g }),
            outputs: BTreeMap::from([("group".to_owned(), json!(g.name))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        let group: FeatureGroupSpec = parse(spec, "spec")?;
        LocalFeatures::open(PathBuf::from(attr(spec, "db")?))?.create_group(&group).await?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let Some((db, store)) = existing(spec, "db", LocalFeatures::open)? else { return Ok(()) };
        store.delete_group(&spec.name).await?;
        remove_db_if_empty(&db, "feature_groups")
    }
}

struct ExperimentHandler;

#[async_trait]
impl ResourceHandler for ExperimentHandler {
    fn kind(&self) -> &str {
        EXPERIMENT
    }
    fn replace_on(&self) -> &[&str] {
        &["db", "name"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let Some((db, store)) = existing(spec, "db", LocalExperiments::open)? else { return Ok(None) };
        let name = attr(spec, "name")?;
        Ok(store.get_experiment(name).await?.map(|id| Observed {
            id: id.clone(),
            attributes: json!({ "db": path_str(&db), "name": name }),
            outputs: BTreeMap::from([("experiment_id".to_owned(), json!(id)), ("name".to_owned(), json!(name))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        LocalExperiments::open(PathBuf::from(attr(spec, "db")?))?.create_experiment(attr(spec, "name")?).await?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let Some((db, store)) = existing(spec, "db", LocalExperiments::open)? else { return Ok(()) };
        store.delete_experiment(attr(spec, "name")?).await?;
        remove_db_if_empty(&db, "experiments")
    }
}

struct RegisteredModelHandler;

#[async_trait]
impl ResourceHandler for RegisteredModelHandler {
    fn kind(&self) -> &str {
        REGISTERED_MODEL
    }
    fn replace_on(&self) -> &[&str] {
        &["db", "model"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let Some((db, registry)) = existing(spec, "db", LocalRegistry::open)? else { return Ok(None) };
        let model = attr(spec, "model")?;
        if !registry.model_exists(model).await? {
            return Ok(None);
        }
        Ok(Some(Observed {
            id: format!("{}#{model}", path_str(&db)),
            attributes: json!({ "db": path_str(&db), "model": model }),
            outputs: BTreeMap::from([
                ("model".to_owned(), json!(model)),
                ("model_id".to_owned(), json!(format!("local:{model}"))),
            ]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let description = format!("managed by galley ({})", owner.value());
        LocalRegistry::open(PathBuf::from(attr(spec, "db")?))?.create_model(attr(spec, "model")?, Some(&description)).await?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let Some((db, registry)) = existing(spec, "db", LocalRegistry::open)? else { return Ok(()) };
        registry.delete_model(attr(spec, "model")?).await?;
        remove_db_if_empty(&db, "models")
    }
}

struct PipelineHandler;

#[async_trait]
impl ResourceHandler for PipelineHandler {
    fn kind(&self) -> &str {
        PIPELINE
    }
    fn replace_on(&self) -> &[&str] {
        &["dir"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let Some((dir, orchestrator)) = existing(spec, "dir", LocalOrchestrator::open)? else { return Ok(None) };
        Ok(orchestrator.describe_pipeline(&spec.name).await?.map(|p| Observed {
            id: format!("{}#{}", path_str(&dir), p.name),
            attributes: json!({ "dir": path_str(&dir), "spec": p }),
            outputs: BTreeMap::from([("name".to_owned(), json!(p.name))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        let p: PipelineSpec = parse(spec, "spec")?;
        LocalOrchestrator::open(PathBuf::from(attr(spec, "dir")?))?.upsert_pipeline(&p).await?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        let p: PipelineSpec = parse(spec, "spec")?;
        LocalOrchestrator::open(PathBuf::from(attr(spec, "dir")?))?.upsert_pipeline(&p).await?;
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let Some((dir, orchestrator)) = existing(spec, "dir", LocalOrchestrator::open)? else { return Ok(()) };
        orchestrator.delete_pipeline(&spec.name).await?;
        // Destroying the pipeline takes its run history and logs with it, as deleting a
        // SageMaker or Vertex pipeline does; the experiment tracker keeps what was logged.
        remove_dir(&dir.join(&spec.name))
    }
}

struct EndpointHandler {
    server_command: Vec<OsString>,
}

#[async_trait]
impl ResourceHandler for EndpointHandler {
    fn kind(&self) -> &str {
        ENDPOINT
    }
    fn replace_on(&self) -> &[&str] {
        &["dir", "endpoint"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let serving = self.serving(spec)?;
        let Some(settings) = serving.settings(&spec.name)? else { return Ok(None) };
        let running = serving.describe(&spec.name).await?;
        let mut outputs = BTreeMap::from([("endpoint".to_owned(), json!(spec.name))]);
        if let Some(info) = &running {
            outputs.insert("url".to_owned(), json!(info.url));
            outputs.insert("signature".to_owned(), serde_json::to_value(&info.signature)?);
        }
        let mut attributes = spec.desired.clone();
        attributes["bind"] = json!(settings.bind.to_string());
        attributes["port"] = json!(settings.port);
        attributes["token_env"] = json!(settings.token_env);
        Ok(Some(Observed { id: path_str(&serving.endpoint_dir(&spec.name)), attributes, outputs }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let serving = self.serving(spec)?;
        serving.configure(&spec.name, &self.settings(spec)?)?;
        write_owner(&serving.endpoint_dir(&spec.name), owner)?;
        // An endpoint that served before (a re-apply after a crash or a reboot) comes back up.
        serving.resume(&spec.name).await?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        let serving = self.serving(spec)?;
        serving.configure(&spec.name, &self.settings(spec)?)?;
        serving.resume(&spec.name).await?;
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let serving = self.serving(spec)?;
        serving.undeploy(&spec.name).await?;
        remove_dir(&serving.endpoint_dir(&spec.name))
    }
}

impl EndpointHandler {
    fn serving(&self, spec: &ResourceSpec) -> Result<LocalServing> {
        Ok(LocalServing::new(PathBuf::from(attr(spec, "dir")?), PathBuf::from(attr(spec, "monitors")?), self.server_command.clone()))
    }
    fn settings(&self, spec: &ResourceSpec) -> Result<crate::serving::EndpointSettings> {
        let bind = attr(spec, "bind")?;
        Ok(crate::serving::EndpointSettings {
            bind: bind.parse().map_err(|_| Error::invalid(format!("endpoint `{}`: `{bind}` is not an IP address", spec.name)))?,
            port: spec.desired.get("port").and_then(Json::as_u64).unwrap_or(0) as u16,
            token_env: spec.desired.get("token_env").and_then(Json::as_str).map(str::to_owned),
        })
    }
}

struct MonitorHandler;

#[async_trait]
impl ResourceHandler for MonitorHandler {
    fn kind(&self) -> &str {
        MONITOR
    }
    fn replace_on(&self) -> &[&str] {
        &["dir", "name"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let dir = PathBuf::from(attr(spec, "dir")?).join(attr(spec, "name")?);
        if !dir.join("monitor.json").exists() {
            return Ok(None);
        }
        let settings: Json = serde_json::from_slice(&std::fs::read(dir.join("monitor.json"))?)?;
        Ok(Some(Observed {
            id: path_str(&dir),
            attributes: settings,
            outputs: BTreeMap::from([
                ("monitor".to_owned(), json!(spec.name)),
                ("metrics_file".to_owned(), json!(path_str(&dir.join("metrics.prom")))),
            ]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let dir = PathBuf::from(attr(spec, "dir")?).join(attr(spec, "name")?);
        write_owner(&dir, owner)?;
        std::fs::write(dir.join("monitor.json"), serde_json::to_vec_pretty(&spec.desired)?)?;
        created(self.read(spec).await?, spec)
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        let dir = PathBuf::from(attr(spec, "dir")?).join(attr(spec, "name")?);
        std::fs::write(dir.join("monitor.json"), serde_json::to_vec_pretty(&spec.desired)?)?;
        still_there(self.read(spec).await?, spec)
    }
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        use galley_core::Monitor as _;
        let dir = PathBuf::from(attr(spec, "dir")?);
        LocalMonitor::open(dir.clone())?.delete(attr(spec, "name")?).await?;
        remove_dir(&dir.join(attr(spec, "name")?))
    }
}
