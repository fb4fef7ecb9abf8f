//! The onprem platform as the engine sees it. Experiments and the registered model are MLflow
//! resources (`onprem.mlflow_experiment`, `onprem.mlflow_registered_model`), read back from the
//! server and tagged with their owner; the feature group is a Feast feature view
//! (`onprem.feast_feature_view`), read back from Feast's registry; every other stage is kept under the shared directory by
//! the local platform's handlers and stage objects, renamed `onprem.*` and declaring onprem's
//! features. The MLflow server's URI is in each MLflow resource's desired attributes (without
//! credentials), so pointing the blueprint at another server is a visible replacement.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use galley_blueprint::Blueprint;
use galley_core::resource::{Observed, OwnerTag, ResourceHandler, ResourceSpec};
use galley_core::stages::{ExperimentTracker, FeatureGroupSpec, FeatureStore, ModelRegistry};
use galley_core::{Error, ErrorKind, Result, Stage, StageSet};
use galley_engine::{Provider, ProviderContext};
use galley_local::provider::{ARTIFACT_STORE, ENDPOINT, ENDPOINT_PROCESS, Layout, LocalProvider, MONITOR, PIPELINE, Servers};
use galley_mlflow::{Credentials, MlflowClient, MlflowExperiments, MlflowRegistry};
use serde_json::{Value as Json, json};

use crate::airflow::{AirflowConfig, AirflowCredentials, AirflowOrchestrator};
use crate::feast::{FeastConfig, FeastFeatures};
use crate::prometheus::PrometheusConfig;
use crate::platform::{
    AIRFLOW_DAGS_FOLDER_ENV, AIRFLOW_GALLEY_ENV, FEAST_PYTHON_ENV, FEAST_REPO_ENV, FEAST_SERVER_ENV, ONPREM, OnpremSettings, PROMETHEUS_CONFIG_DIR_ENV,
    PROMETHEUS_URL_ENV, TRACKING_URI_ENV,
};

pub const EXPERIMENT: &str = "onprem.mlflow_experiment";
pub const REGISTERED_MODEL: &str = "onprem.mlflow_registered_model";
pub const FEATURE_VIEW: &str = "onprem.feast_feature_view";
pub const AIRFLOW_DAG: &str = "onprem.airflow_dag";
pub const PROMETHEUS_RULES: &str = "onprem.prometheus_rules";

/// The local kinds onprem keeps under its shared directory.
const KEPT_LOCALLY: [&str; 4] = [ARTIFACT_STORE, PIPELINE, ENDPOINT, MONITOR];

/// `local.endpoint` → `onprem.endpoint`.
pub fn onprem_kind(local_kind: &str) -> String {
    local_kind.replacen("local.", "onprem.", 1)
}

pub struct OnpremProvider {
    ctx: ProviderContext,
    local: LocalProvider,
    handlers: BTreeMap<String, Arc<dyn ResourceHandler>>,
}

pub fn provider(ctx: ProviderContext) -> Arc<dyn Provider> {
    let mut command = ctx.process_command(ONPREM);
    command.push(ENDPOINT_PROCESS.into());
    Arc::new(OnpremProvider::new(ctx, command))
}

impl OnpremProvider {
    /// `server_command` starts an endpoint's model server (it gets `--config FILE` appended).
    pub fn new(ctx: ProviderContext, server_command: Vec<std::ffi::OsString>) -> Self {
        let local = LocalProvider::new(ctx.clone(), server_command);
        let mut handlers: BTreeMap<String, Arc<dyn ResourceHandler>> = BTreeMap::new();
        for kind in KEPT_LOCALLY {
            let inner = local.handler(kind).expect("the local provider handles its own kinds");
            handlers.insert(onprem_kind(kind), Arc::new(Renamed { kind: onprem_kind(kind), inner }));
        }
        handlers.insert(EXPERIMENT.into(), Arc::new(ExperimentHandler));
        handlers.insert(REGISTERED_MODEL.into(), Arc::new(RegisteredModelHandler));
        handlers.insert(FEATURE_VIEW.into(), Arc::new(FeatureViewHandler::default()));
        handlers.insert(AIRFLOW_DAG.into(), Arc::new(AirflowDagHandler));
        handlers.insert(PROMETHEUS_RULES.into(), Arc::new(crate::prometheus::RulesHandler));
        OnpremProvider { ctx, local, handlers }
    }

    fn settings(bp: &Blueprint) -> OnpremSettings {
        // Validation checked `platforms.onprem` against its schema.
        bp.platform_settings(ONPREM).ok().flatten().unwrap_or_default()
    }

    /// The shared directory.
    pub fn layout(&self, bp: &Blueprint) -> Layout {
        let root = match Self::settings(bp).dir {
            Some(dir) => self.ctx.project_dir.join(dir),
            None => self.ctx.work_dir.join("onprem"),
        };
        Layout { root }
    }

    /// The stage objects: MLflow for experiments and the registry, Feast for features, the
    /// shared directory for the rest.
    pub fn stages(&self, bp: &Blueprint) -> Result<StageSet> {
        let client = client(&tracking_uri(bp)?)?;
        let servers = Servers {
            experiments: Arc::new(MlflowExperiments::new(client.clone(), crate::capabilities())),
            registry: Arc::new(MlflowRegistry::new(client, crate::capabilities())),
            features: Arc::new(FeastFeatures::open(self.feast(bp), crate::capabilities()).map_err(|e| e.platform(ONPREM))?),
        };
        let layout = self.layout(bp);
        let mut set = self.local.stages_at(bp, &layout, crate::capabilities(), Some(servers))?;
        if let Some(prometheus) = self.prometheus(bp)? {
            set.serving = Arc::new(crate::prometheus::Scraped { inner: set.serving, prometheus });
        }
        if let Some(airflow) = self.airflow(bp)? {
            set.orchestrator = Arc::new(airflow_orchestrator(airflow, &layout.pipelines(), &layout.artifacts_of(bp))?);
        }
        Ok(set)
    }

    /// The blueprint's Airflow, else the environment's; `None` runs pipelines in Galley's process.
    pub fn airflow(&self, bp: &Blueprint) -> Result<Option<AirflowConfig>> {
        let Some(api_url) = crate::platform::airflow_api_url(bp) else { return Ok(None) };
        let settings = Self::settings(bp);
        let dags_folder = match settings.airflow_dags_folder.filter(|d| !d.is_empty()) {
            Some(d) => self.ctx.project_dir.join(d),
            None => env(AIRFLOW_DAGS_FOLDER_ENV).map(Into::into).ok_or_else(|| {
                Error::invalid(format!(
                    "pipelines on Airflow at {api_url} need its DAGs folder: set `platforms.onprem.airflow_dags_folder` or {AIRFLOW_DAGS_FOLDER_ENV}"
                ))
                .platform(ONPREM)
            })?,
        };
        let galley = settings.airflow_galley.filter(|g| !g.is_empty()).or_else(|| env(AIRFLOW_GALLEY_ENV)).map(Into::into).unwrap_or_else(|| self.ctx.galley_exe.clone());
        let prometheus_url = self.prometheus(bp)?.map(|p| p.url);
        Ok(Some(AirflowConfig { api_url, dags_folder: absolute(dags_folder), galley, parse_timeout: std::time::Duration::from_secs(120), prometheus_url }))
    }

    /// The blueprint's Prometheus, else the environment's; `None` leaves Prometheus out.
    pub fn prometheus(&self, bp: &Blueprint) -> Result<Option<PrometheusConfig>> {
        let settings = Self::settings(bp);
        let Some(url) = settings.prometheus_url.filter(|u| !u.trim().is_empty()).or_else(|| env(PROMETHEUS_URL_ENV)) else { return Ok(None) };
        let config_dir = match settings.prometheus_config_dir.filter(|d| !d.is_empty()) {
            Some(d) => self.ctx.project_dir.join(d),
            None => env(PROMETHEUS_CONFIG_DIR_ENV).map(Into::into).ok_or_else(|| {
                Error::invalid(format!(
                    "monitoring on Prometheus at {url} needs the directory its configuration reads rules and targets from: \
                     set `platforms.onprem.prometheus_config_dir` or {PROMETHEUS_CONFIG_DIR_ENV}"
                ))
                .platform(ONPREM)
            })?,
        };
        Ok(Some(PrometheusConfig { url: url.trim_end_matches('/').to_owned(), config_dir: absolute(config_dir) }))
    }

    /// The blueprint's Feast, else the environment's, else a repository under the shared
    /// directory and `python3`.
    pub fn feast(&self, bp: &Blueprint) -> FeastConfig {
        let settings = Self::settings(bp);
        let repo = match settings.feast_repo.filter(|r| !r.is_empty()) {
            Some(r) => self.ctx.project_dir.join(r),
            None => env(FEAST_REPO_ENV).map(Into::into).unwrap_or_else(|| self.layout(bp).root.join("feast")),
        };
        let python = settings.feast_python.filter(|p| !p.is_empty()).or_else(|| env(FEAST_PYTHON_ENV)).unwrap_or_else(|| "python3".into());
        let server_url = settings.feast_feature_server_url.filter(|u| !u.is_empty()).or_else(|| env(FEAST_SERVER_ENV));
        FeastConfig { repo, python: python.into(), server_url }
    }
}

/// The Airflow orchestrator over the shared directory's pipelines and artifacts.
fn airflow_orchestrator(config: AirflowConfig, pipelines: &Path, artifacts: &Path) -> Result<AirflowOrchestrator> {
    let files = Arc::new(galley_local::artifacts::LocalArtifacts::open(artifacts.to_path_buf())?.declaring(crate::capabilities()));
    let uri_of = { let files = files.clone(); Box::new(move |k: &galley_core::stages::ArtifactKey| files.uri_for(k)) };
    let local = galley_local::orchestrator::LocalOrchestrator::open(pipelines.to_path_buf())?.declaring(crate::capabilities());
    AirflowOrchestrator::new(config, AirflowCredentials::from_env(), files, uri_of, local, crate::capabilities()).map_err(|e| e.platform(ONPREM))
}

/// A setting's variable, when it is set to something.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn absolute(path: std::path::PathBuf) -> std::path::PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

/// The blueprint's MLflow server, or `MLFLOW_TRACKING_URI`.
pub fn tracking_uri(bp: &Blueprint) -> Result<String> {
    let from_env = || std::env::var(TRACKING_URI_ENV).ok().filter(|v| !v.is_empty());
    OnpremProvider::settings(bp).mlflow_tracking_uri.filter(|u| !u.is_empty()).or_else(from_env).ok_or_else(|| {
        Error::invalid(format!(
            "the onprem platform needs an MLflow tracking server: set `platforms.onprem.mlflow_tracking_uri` \
             or {TRACKING_URI_ENV} (`scripts/stack up onprem` starts one on this machine)"
        ))
        .platform(ONPREM)
    })
}

fn client(uri: &str) -> Result<MlflowClient> {
    MlflowClient::new(uri, Credentials::from_env()).map_err(|e| e.platform(ONPREM))
}

fn spec(address: &str, kind: &str, stage: Stage, name: &str, desired: Json, depends_on: &[&str], protect: bool) -> ResourceSpec {
    galley_engine::provider::resource(ONPREM, address, kind, stage, name, desired, depends_on, protect)
}

#[async_trait]
impl Provider for OnpremProvider {
    fn rules(&self) -> Arc<dyn galley_blueprint::PlatformRules> {
        crate::rules()
    }

    /// `endpoint --config FILE`: an endpoint's model server, as the serving stage spawns it.
    async fn process(&self, args: &[String]) -> Result<()> {
        match args {
            [cmd, flag, config] if cmd == ENDPOINT_PROCESS && flag == "--config" => galley_local::serving::run_server(Path::new(config)).await,
            _ => Err(Error::invalid(format!("the onprem platform has no process `{}`; expected `{ENDPOINT_PROCESS} --config FILE`", args.join(" ")))),
        }
    }

    fn expand(&self, bp: &Blueprint, stages: &[Stage]) -> Result<Vec<ResourceSpec>> {
        let kept: Vec<Stage> = stages.iter().copied().filter(|s| !matches!(s, Stage::Experiments | Stage::Registry | Stage::Features)).collect();
        let mut out = self.local.expand_at(bp, &kept, &self.layout(bp))?;
        let airflow = self.airflow(bp)?;
        let layout = self.layout(bp);
        for s in &mut out {
            s.platform = ONPREM;
            s.kind = onprem_kind(&s.kind);
            if let (Some(a), PIPELINE) = (&airflow, s.kind.replacen("onprem.", "local.", 1).as_str()) {
                s.kind = AIRFLOW_DAG.into();
                let pipeline: galley_core::stages::PipelineSpec = serde_json::from_value(s.desired["spec"].clone())?;
                s.desired = json!({
                    "api_url": a.api_url,
                    "dags_folder": a.dags_folder.display().to_string(),
                    "galley": a.galley.display().to_string(),
                    "dir": s.desired["dir"],
                    "artifacts": layout.artifacts_of(bp).display().to_string(),
                    "prometheus_url": a.prometheus_url,
                    "spec": s.desired["spec"],
                    "triggers_on_airflow": crate::airflow::dag::triggers(&pipeline, a.prometheus_url.as_deref()),
                });
            }
        }
        if let (true, Some(prometheus), Some(sv)) = (stages.contains(&Stage::Monitoring), self.prometheus(bp)?, &bp.stages.serving) {
            let monitor = out.iter().find(|s| s.address == "monitoring.monitor").map(|s| s.name.clone()).unwrap_or_else(|| sv.endpoint.clone());
            let protect = bp.stages.monitoring.as_ref().is_some_and(|m| m.common.protect);
            out.push(spec("monitoring.prometheus", PROMETHEUS_RULES, Stage::Monitoring, &sv.endpoint,
                json!({
                    "url": prometheus.url,
                    "config_dir": prometheus.config_dir.display().to_string(),
                    "endpoint": sv.endpoint,
                    "monitor": monitor,
                    "loaded": true,
                }), &["monitoring.monitor"], protect));
        }
        if let (true, Some(f)) = (stages.contains(&Stage::Features), &bp.stages.features) {
            let features = galley_lifecycle::resolved_features(bp, &self.ctx.project_dir)?;
            let group = galley_lifecycle::feature_group_spec(bp, &features);
            let feast = self.feast(bp);
            out.push(spec("features.group", FEATURE_VIEW, Stage::Features, &f.group,
                json!({ "repo": feast.repo.display().to_string(), "python": feast.python.display().to_string(), "spec": group }),
                &[], f.common.protect));
        }
        let on_mlflow = |st: Stage| stages.contains(&st);
        if !(on_mlflow(Stage::Experiments) || on_mlflow(Stage::Registry)) {
            return Ok(out);
        }
        let uri = galley_mlflow::client::redact(&tracking_uri(bp)?);
        if let (true, Some(e)) = (on_mlflow(Stage::Experiments), &bp.stages.experiments) {
            out.push(spec("experiments.experiment", EXPERIMENT, Stage::Experiments, &e.name,
                json!({ "tracking_uri": uri, "name": e.name }), &[], e.common.protect));
        }
        if let (true, Some(r)) = (on_mlflow(Stage::Registry), &bp.stages.registry) {
            let deps: Vec<&str> = bp.declared_stages().contains(&Stage::Artifacts).then_some("artifacts.store").into_iter().collect();
            out.push(spec("registry.model", REGISTERED_MODEL, Stage::Registry, &r.model,
                json!({ "tracking_uri": uri, "model": r.model }), &deps, r.common.protect));
        }
        Ok(out)
    }

    fn handler(&self, kind: &str) -> Option<Arc<dyn ResourceHandler>> {
        self.handlers.get(kind).cloned()
    }

    async fn open(&self, bp: &Blueprint, _outputs: &BTreeMap<String, BTreeMap<String, Json>>) -> Result<StageSet> {
        self.stages(bp)
    }

    /// `backend: { type: s3, endpoint_url: … }`: the state in an S3-compatible store.
    fn state_backend(&self, backend: &galley_blueprint::Backend, bp: &Blueprint) -> Option<Result<Box<dyn galley_engine::StateBackend>>> {
        #[cfg(feature = "s3")]
        return galley_aws::state_backend::open(backend, bp);
        #[cfg(not(feature = "s3"))]
        {
            let _ = bp;
            (backend.kind == galley_aws::platform::S3_BACKEND).then(|| {
                Err(Error::unsupported(
                    "this galley's onprem platform was built without S3 support: build it with `cargo install --path crates/cli --features onprem-s3`",
                ))
            })
        }
    }

    /// Every setting as this machine resolves it (the shared directory and Feast's repository
    /// as absolute paths, the servers' URLs from the environment), so an Airflow task reading
    /// the run bundle on a worker opens the same stack.
    fn bundle_settings(&self, bp: &Blueprint) -> Result<Option<Json>> {
        let feast = self.feast(bp);
        let airflow = self.airflow(bp)?;
        let prometheus = self.prometheus(bp)?;
        let settings = OnpremSettings {
            dir: Some(absolute(self.layout(bp).root).display().to_string()),
            mlflow_tracking_uri: Some(tracking_uri(bp)?),
            feast_repo: Some(absolute(feast.repo).display().to_string()),
            feast_python: Some(feast.python.display().to_string()),
            feast_feature_server_url: feast.server_url,
            airflow_api_url: airflow.as_ref().map(|a| a.api_url.clone()),
            airflow_dags_folder: airflow.as_ref().map(|a| a.dags_folder.display().to_string()),
            airflow_galley: airflow.as_ref().map(|a| a.galley.display().to_string()),
            prometheus_url: prometheus.as_ref().map(|p| p.url.clone()),
            prometheus_config_dir: prometheus.as_ref().map(|p| p.config_dir.display().to_string()),
        };
        Ok(Some(serde_json::to_value(settings)?))
    }
}

/// A local handler under an onprem kind.
struct Renamed {
    kind: String,
    inner: Arc<dyn ResourceHandler>,
}

#[async_trait]
impl ResourceHandler for Renamed {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn replace_on(&self) -> &[&str] {
        self.inner.replace_on()
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        self.inner.read(spec).await
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        self.inner.create(spec, owner).await
    }
    async fn update(&self, spec: &ResourceSpec, current: &Observed) -> Result<Observed> {
        self.inner.update(spec, current).await
    }
    async fn delete(&self, spec: &ResourceSpec, current: &Observed) -> Result<()> {
        self.inner.delete(spec, current).await
    }
}

fn attr<'a>(spec: &'a ResourceSpec, key: &str) -> Result<&'a str> {
    spec.desired.get(key).and_then(Json::as_str).ok_or_else(|| Error::internal(format!("resource `{}` has no `{key}` attribute", spec.address)))
}

fn spec_client(spec: &ResourceSpec) -> Result<MlflowClient> {
    client(attr(spec, "tracking_uri")?)
}

fn vanished(spec: &ResourceSpec) -> Error {
    Error::internal(format!("{} `{}` vanished from MLflow right after it was written", spec.kind, spec.name))
}

struct ExperimentHandler;

#[async_trait]
impl ResourceHandler for ExperimentHandler {
    fn kind(&self) -> &str {
        EXPERIMENT
    }
    fn replace_on(&self) -> &[&str] {
        &["tracking_uri", "name"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let client = spec_client(spec)?;
        let name = attr(spec, "name")?;
        let tracker = MlflowExperiments::new(client.clone(), crate::capabilities());
        let Some(id) = tracker.get_experiment(name).await? else { return Ok(None) };
        Ok(Some(Observed {
            id: id.clone(),
            attributes: json!({ "tracking_uri": client.uri(), "name": name }),
            outputs: BTreeMap::from([
                ("experiment_id".to_owned(), json!(id)),
                ("url".to_owned(), json!(format!("{}/#/experiments/{id}", client.uri()))),
            ]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let client = spec_client(spec)?;
        let tracker = MlflowExperiments::new(client.clone(), crate::capabilities());
        let id = tracker.create_experiment(attr(spec, "name")?).await?;
        let tag = json!({ "experiment_id": id, "key": OwnerTag::KEY, "value": owner.value() });
        client.post("experiments/set-experiment-tag", &tag).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    /// MLflow keeps a deleted experiment (and its runs) restorable until its garbage collection
    /// (`mlflow gc`) runs; creating it again restores it.
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        let tracker = MlflowExperiments::new(spec_client(spec)?, crate::capabilities());
        tracker.delete_experiment(attr(spec, "name")?).await
    }
}

struct RegisteredModelHandler;

#[async_trait]
impl ResourceHandler for RegisteredModelHandler {
    fn kind(&self) -> &str {
        REGISTERED_MODEL
    }
    fn replace_on(&self) -> &[&str] {
        &["tracking_uri", "model"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let client = spec_client(spec)?;
        let model = attr(spec, "model")?;
        match client.get("registered-models/get", &[("name", model)]).await {
            Ok(_) => Ok(Some(Observed {
                id: model.to_owned(),
                attributes: json!({ "tracking_uri": client.uri(), "model": model }),
                outputs: BTreeMap::from([
                    ("model".to_owned(), json!(model)),
                    ("url".to_owned(), json!(format!("{}/#/models/{model}", client.uri()))),
                ]),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    async fn create(&self, spec: &ResourceSpec, owner: &OwnerTag) -> Result<Observed> {
        let client = spec_client(spec)?;
        let model = attr(spec, "model")?;
        MlflowRegistry::new(client.clone(), crate::capabilities()).create_model(model, Some("managed by Galley")).await?;
        client.post("registered-models/set-tag", &json!({ "name": model, "key": OwnerTag::KEY, "value": owner.value() })).await?;
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.read(spec).await?.ok_or_else(|| vanished(spec))
    }
    /// Deletes the registered model with its versions, as MLflow does.
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        MlflowRegistry::new(spec_client(spec)?, crate::capabilities()).delete_model(attr(spec, "model")?).await
    }
}

/// A pipeline as an Airflow DAG: the DAG file in the DAGs folder, read back through Airflow's
/// API. Another Airflow or DAGs folder is a replacement; another galley binary rewrites the file.
struct AirflowDagHandler;

impl AirflowDagHandler {
    fn orchestrator(spec: &ResourceSpec) -> Result<AirflowOrchestrator> {
        let config = AirflowConfig {
            api_url: attr(spec, "api_url")?.to_owned(),
            dags_folder: attr(spec, "dags_folder")?.into(),
            galley: attr(spec, "galley")?.into(),
            parse_timeout: std::time::Duration::from_secs(120),
            prometheus_url: spec.desired.get("prometheus_url").and_then(Json::as_str).map(str::to_owned),
        };
        airflow_orchestrator(config, Path::new(attr(spec, "dir")?), Path::new(attr(spec, "artifacts")?))
    }

    fn pipeline(spec: &ResourceSpec) -> Result<galley_core::stages::PipelineSpec> {
        serde_json::from_value(spec.desired["spec"].clone()).map_err(|e| Error::internal(format!("resource `{}`: its `spec` is not a pipeline: {e}", spec.address)))
    }
}

#[async_trait]
impl ResourceHandler for AirflowDagHandler {
    fn kind(&self) -> &str {
        AIRFLOW_DAG
    }
    fn replace_on(&self) -> &[&str] {
        &["api_url", "dags_folder"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        use galley_core::stages::Orchestrator;
        let orchestrator = Self::orchestrator(spec)?;
        let Some(parsed) = orchestrator.describe_pipeline(&spec.name).await? else { return Ok(None) };
        let mut attributes = spec.desired.clone();
        attributes["spec"] = serde_json::to_value(&parsed)?;
        attributes["triggers_on_airflow"] = json!(orchestrator.triggers_on_airflow(&parsed).await?);
        let url = orchestrator.client().url().to_owned();
        Ok(Some(Observed {
            id: format!("{url}#{}", parsed.name),
            attributes,
            outputs: BTreeMap::from([("name".to_owned(), json!(parsed.name)), ("url".to_owned(), json!(format!("{url}/dags/{}", parsed.name)))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        use galley_core::stages::Orchestrator;
        Self::orchestrator(spec)?.upsert_pipeline(&Self::pipeline(spec)?).await?;
        self.read(spec).await?.ok_or_else(|| Error::internal(format!("DAG `{}` vanished from Airflow right after it was loaded", spec.name)))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        use galley_core::stages::Orchestrator;
        Self::orchestrator(spec)?.upsert_pipeline(&Self::pipeline(spec)?).await?;
        self.read(spec).await?.ok_or_else(|| Error::internal(format!("DAG `{}` is no longer in Airflow", spec.name)))
    }
    /// Removes the DAG file and Airflow's record of the DAG with its run history, and the
    /// in-process runs' history under the shared directory, as destroying a local pipeline does.
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        use galley_core::stages::Orchestrator;
        Self::orchestrator(spec)?.delete_pipeline(&spec.name).await?;
        galley_local::provider::remove_dir(&Path::new(attr(spec, "dir")?).join(&spec.name))
    }
}

/// A feature group as a Feast feature view. The repository and the group's definition are
/// replacements; the Python that drives Feast is not (any Python with Feast will do).
#[derive(Default)]
struct FeatureViewHandler {
    /// One store (and so one Feast bridge, which takes seconds to start) per repository.
    stores: std::sync::Mutex<BTreeMap<(String, String), Arc<FeastFeatures>>>,
}

impl FeatureViewHandler {
    fn store(&self, spec: &ResourceSpec) -> Result<Arc<FeastFeatures>> {
        let (repo, python) = (attr(spec, "repo")?.to_owned(), attr(spec, "python")?.to_owned());
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(&(repo.clone(), python.clone())) {
            return Ok(s.clone());
        }
        let config = FeastConfig { repo: repo.clone().into(), python: python.clone().into(), server_url: None };
        let store = Arc::new(FeastFeatures::open(config, crate::capabilities()).map_err(|e| e.platform(ONPREM))?);
        stores.insert((repo, python), store.clone());
        Ok(store)
    }

    fn group(spec: &ResourceSpec) -> Result<FeatureGroupSpec> {
        let value = spec.desired.get("spec").cloned().unwrap_or(Json::Null);
        serde_json::from_value(value).map_err(|e| Error::internal(format!("resource `{}`: its `spec` is not a feature group: {e}", spec.address)))
    }
}

#[async_trait]
impl ResourceHandler for FeatureViewHandler {
    fn kind(&self) -> &str {
        FEATURE_VIEW
    }
    fn replace_on(&self) -> &[&str] {
        &["repo", "spec"]
    }
    async fn read(&self, spec: &ResourceSpec) -> Result<Option<Observed>> {
        let store = self.store(spec)?;
        let repo = store.config().repo.display().to_string();
        Ok(store.describe_group(&spec.name).await?.map(|g| Observed {
            id: format!("{repo}#{}", g.name),
            attributes: json!({ "repo": repo, "python": attr(spec, "python").unwrap_or_default(), "spec": g }),
            outputs: BTreeMap::from([("group".to_owned(), json!(g.name)), ("feast_repo".to_owned(), json!(repo))]),
        }))
    }
    async fn create(&self, spec: &ResourceSpec, _owner: &OwnerTag) -> Result<Observed> {
        self.store(spec)?.create_group(&Self::group(spec)?).await?;
        self.read(spec).await?.ok_or_else(|| Error::internal(format!("feature view `{}` vanished from Feast's registry right after it was applied", spec.name)))
    }
    async fn update(&self, spec: &ResourceSpec, _current: &Observed) -> Result<Observed> {
        self.read(spec).await?.ok_or_else(|| Error::internal(format!("feature view `{}` is no longer in Feast's registry", spec.name)))
    }
    /// Deletes the view with its online table and offline files.
    async fn delete(&self, spec: &ResourceSpec, _current: &Observed) -> Result<()> {
        self.store(spec)?.delete_group(&spec.name).await
    }
}
