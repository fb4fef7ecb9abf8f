//! The ML lifecycle, written once against the stage traits so it runs on every platform:
//!
//! extract → validate_data → prepare → train → evaluate → validate_model → register → deploy → monitor
//!
//! [`Lifecycle`] is a [`StepExecutor`]: the platform's orchestrator walks the steps (with
//! retries, logs, history and caching of unchanged steps), and each step talks only to the
//! [`StageSet`] and to `galley-ml`. Intermediate results live in the artifact store under
//! content-derived keys, which is what makes a cached step's output valid in a later process.

pub mod actions;
pub mod remote;
mod script;
mod steps;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use galley_blueprint::{Blueprint, Promotion};
use galley_core::stages::{
    PipelineRun, PipelineSpec, RunState, StepExecutor, StepLogger, StepOutput, StepSpec, Trigger,
};
use galley_core::{Error, Result, StageSet};

pub use actions::{Observed, plan_actions};
pub use steps::{DEFAULT_MAX_RUNTIME, PREPARED_KEY_PARAM, PreparedRows, StepName, feature_group_spec, prepared_rows};

/// The model alias the gate moves on platforms with aliases.
pub const CHAMPION: &str = "champion";

/// One blueprint's lifecycle over one set of opened stages.
pub struct Lifecycle {
    bp: Arc<Blueprint>,
    stages: StageSet,
    project_dir: PathBuf,
    /// Galley's version and the blueprint's hash: recorded as lineage, folded into fingerprints.
    code_version: String,
    promotion: Option<Promotion>,
    /// The experiment run of the pipeline run in progress (runs of one pipeline never overlap).
    experiment_run: Mutex<Option<String>>,
    /// Steps from this one on run even if cached: `Train` for a drift-triggered retrain (data
    /// and code may be unchanged), `Extract` for `--no-cache`.
    force_from: Mutex<Option<StepName>>,
    /// The source as the extract step's fingerprint read it, for the extract run that follows.
    extracted: Mutex<Option<galley_ml::Dataset>>,
    /// One run at a time through this object: `experiment_run` and `force_from` belong to
    /// the run in progress (a second trigger waits, then finds the orchestrator free).
    running: tokio::sync::Mutex<()>,
    /// The orchestrator's id of the run in progress, and whether a cancel was asked before
    /// the run had one (for [`Lifecycle::cancel`]).
    pipeline_run: Mutex<(Option<String>, bool)>,
    /// Set by [`Lifecycle::with_remote_steps`]: runs go to the platform's engine when its
    /// orchestrator runs steps in containers; the credential settings the bundle leaves out.
    remote: Option<remote::BundleSettings>,
    blueprint_hash: String,
}

impl Lifecycle {
    pub fn new(bp: Arc<Blueprint>, stages: StageSet, project_dir: PathBuf, blueprint_hash: &str) -> Result<Self> {
        if bp.stages.training.is_none() {
            return Err(Error::invalid(
                "the blueprint has no `stages.training`, so there is nothing to run; add e.g. `training: { algorithm: logistic_regression }`",
            ));
        }
        let promotion = bp.stages.registry.as_ref().map(|_| galley_blueprint::effective_promotion(&bp, &stages.registry.capabilities()));
        Ok(Lifecycle {
            code_version: format!("galley-{}+{}", env!("CARGO_PKG_VERSION"), &blueprint_hash[..blueprint_hash.len().min(12)]),
            bp,
            stages,
            project_dir,
            promotion,
            experiment_run: Mutex::new(None),
            force_from: Mutex::new(None),
            extracted: Mutex::new(None),
            running: tokio::sync::Mutex::new(()),
            pipeline_run: Mutex::new((None, false)),
            remote: None,
            blueprint_hash: blueprint_hash.to_owned(),
        })
    }

    /// Runs on the platform's own engine (each step a container of Galley's image; the run goes
    /// on when this process ends) instead of in this process: for a pipeline platform whose
    /// rules declare `PlatformRules::remote_steps`, which is what the plan shows. `settings` says how the run
    /// bundle's platform settings differ from the blueprint's.
    pub fn with_remote_steps(mut self, settings: remote::BundleSettings) -> Self {
        self.remote = Some(settings);
        self
    }

    /// Whether [`Lifecycle::run`] hands the steps to the platform's engine.
    pub fn runs_remotely(&self) -> bool {
        self.remote.is_some()
    }

    /// One step of a run the platform's engine started, run here (`galley container step`):
    /// `experiment_run` and `force_from` are the run's parameters as `galley run` set them.
    pub async fn run_step_here(
        self: &Arc<Self>,
        run: &str,
        step: &str,
        experiment_run: Option<String>,
        force_from: Option<StepName>,
        trigger: Option<Trigger>,
    ) -> Result<galley_core::stages::StepRun> {
        StepName::parse(step)?;
        // A run the platform started on its own (its schedule, a drift alert) has no
        // experiment run from `galley run`: its steps share one, found by the run's id.
        let started_by_platform = experiment_run.is_none();
        let experiment_run = match experiment_run {
            Some(r) => Some(r),
            None => self.experiment_run_of(run, trigger).await?,
        };
        *self.experiment_run.lock().expect("experiment run lock") = experiment_run.clone();
        *self.force_from.lock().expect("force lock") = force_from;
        let spec = self.pipeline_spec();
        let done = self.stages.orchestrator.run_step_here(&spec, run, step, self.clone() as Arc<dyn StepExecutor>).await;
        if let (true, Some(id)) = (started_by_platform, &experiment_run) {
            let last = spec.steps.last().is_some_and(|s| s.name == step);
            let status = match &done {
                Ok(d) if d.state == RunState::Succeeded && !last => None,
                Ok(d) if d.state == RunState::Succeeded => Some(galley_core::stages::RunStatus::Finished),
                _ => Some(galley_core::stages::RunStatus::Failed),
            };
            if let Some(status) = status {
                self.stages.experiments.end_run(id, status).await?;
            }
        }
        done
    }

    /// The experiment run of platform run `run`: the one its first step began (tagged
    /// `galley.pipeline_run`), else a new one. `None` without an experiments stage.
    async fn experiment_run_of(&self, run: &str, trigger: Option<Trigger>) -> Result<Option<String>> {
        let Some(exp) = &self.bp.stages.experiments else { return Ok(None) };
        let query = galley_core::stages::RunQuery {
            tags: BTreeMap::from([("galley.pipeline_run".to_owned(), run.to_owned())]),
            limit: Some(1),
            ..Default::default()
        };
        if let Some(found) = self.stages.experiments.search_runs(&exp.name, &query).await?.into_iter().next() {
            return Ok(Some(found.id));
        }
        let Some(id) = self.begin_experiment_run(trigger).await? else { return Ok(None) };
        self.stages.experiments.set_tags(&id, &BTreeMap::from([("galley.pipeline_run".to_owned(), run.to_owned())])).await?;
        Ok(Some(id))
    }

    /// Refuses a remote run that would need a stage on Galley's machine, and writes the bundle
    /// the step containers read; returns the run's parameter naming it.
    async fn prepare_remote(&self, pipeline: &str, settings: &remote::BundleSettings) -> Result<String> {
        for stage in self.bp.declared_stages() {
            let platform = self.bp.stage_platform(stage);
            if platform.as_str() == "local" {
                return Err(Error::invalid(format!(
                    "stage `{}` runs on `local`, which the pipeline's steps on the platform's engine cannot reach; put the stage on the pipeline's platform, or run the steps in this process with `galley run --local-steps`",
                    stage.as_str()
                )));
            }
        }
        if let Some(t) = &self.bp.stages.training
            && t.command.is_some()
        {
            // The bundle carries the blueprint and the data, not the code directory, and Galley's
            // step image has no Python: the step container could not run the command.
            return Err(Error::unsupported(
                "`training.command` runs your code on this machine, and the platform's step containers do not carry it yet; \
                 run the steps in this process with `galley run --local-steps`",
            ));
        }
        let (key, _) = remote::RunBundle::write(&self.bp, &self.blueprint_hash, &self.project_dir, pipeline, settings, &*self.stages.artifacts).await?;
        Ok(key.as_str().to_owned())
    }

    pub fn pipeline_name(&self) -> String {
        pipeline_name(&self.bp)
    }

    pub fn pipeline_spec(&self) -> PipelineSpec {
        pipeline_spec(&self.bp)
    }

    /// Registers this lifecycle as the pipeline's step bodies and runs it to the end.
    /// `no_cache` runs every step anew; a drift trigger retrains even on unchanged data and code.
    pub async fn run(self: &Arc<Self>, trigger: Option<Trigger>, no_cache: bool) -> Result<RunSummary> {
        self.run_with_progress(trigger, no_cache, &|_| {}).await
    }

    /// [`Lifecycle::run`], calling `on_step` each time a step changes state (for progress output).
    pub async fn run_with_progress(
        self: &Arc<Self>,
        trigger: Option<Trigger>,
        no_cache: bool,
        on_step: &(dyn Fn(&galley_core::stages::StepRun) + Send + Sync),
    ) -> Result<RunSummary> {
        let _one_at_a_time = self.running.lock().await;
        *self.pipeline_run.lock().expect("pipeline run lock") = (None, false);
        let orchestrator = self.stages.orchestrator.clone();
        let spec = self.pipeline_spec();
        orchestrator.upsert_pipeline(&spec).await?;
        let force_from = match (no_cache, trigger) {
            (true, _) => Some(StepName::Extract),
            (false, Some(Trigger::Drift)) => Some(StepName::Train),
            _ => None,
        };
        let mut params = BTreeMap::new();
        match &self.remote {
            Some(omitted) => {
                params.insert(remote::PARAM_BUNDLE.to_owned(), self.prepare_remote(&spec.name, omitted).await?);
                if let Some(from) = force_from {
                    params.insert(remote::PARAM_FORCE_FROM.to_owned(), from.as_str().to_owned());
                }
            }
            None => {
                orchestrator.attach_executor(&spec.name, self.clone() as Arc<dyn StepExecutor>)?;
                *self.force_from.lock().expect("force lock") = force_from;
            }
        }

        let run_id = self.begin_experiment_run(trigger).await?;
        if let Some(r) = &run_id {
            params.insert(remote::PARAM_EXPERIMENT_RUN.to_owned(), r.clone());
        }
        let run = match orchestrator.start(&spec.name, trigger, &params).await {
            Ok(id) => {
                let asked = {
                    let mut current = self.pipeline_run.lock().expect("pipeline run lock");
                    current.0 = Some(id.clone());
                    current.1
                };
                let run = match asked {
                    true => match orchestrator.cancel(&id).await {
                        Ok(()) => wait_for(&*orchestrator, &id, on_step).await,
                        Err(e) => Err(e),
                    },
                    false => wait_for(&*orchestrator, &id, on_step).await,
                };
                *self.pipeline_run.lock().expect("pipeline run lock") = (None, false);
                run
            }
            Err(e) => Err(e),
        };
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                // Never leave the experiment run open: it failed with the pipeline.
                let open = self.experiment_run.lock().expect("experiment run lock").take();
                if let Some(id) = open {
                    let _ = self.stages.experiments.end_run(&id, galley_core::stages::RunStatus::Failed).await;
                }
                return Err(e);
            }
        };
        self.end_experiment_run(&run).await?;
        Ok(RunSummary::from_run(run, run_id))
    }

    /// Asks the orchestrator to stop the run in progress (steps not started are cancelled, and
    /// platforms stop the managed training job in flight, which is billed while it runs). Asked
    /// before the run has started, it cancels the run as soon as it starts. The run's own call
    /// returns once it has stopped.
    pub async fn cancel(&self) -> Result<()> {
        let id = {
            let mut current = self.pipeline_run.lock().expect("pipeline run lock");
            current.1 = true;
            current.0.clone()
        };
        match id {
            Some(id) => self.stages.orchestrator.cancel(&id).await,
            None => Ok(()),
        }
    }

    /// A fingerprint of the source data as it is now: the `new_data` trigger compares it with
    /// the last run's.
    pub async fn source_hash(&self) -> Result<String> {
        let ds = galley_ml::load_source(&self.bp.data.source, &self.project_dir)?;
        Ok(ds.sha256)
    }

    /// The monitor's drift verdict on the inferences recorded since the baseline, published as
    /// gauges (`drift.psi.<feature>`, `drift.ks.<feature>`, `drift.detected`, `drift.samples`) to
    /// the platform's metrics system. `None` when the blueprint has no monitoring stage.
    pub async fn check_drift(&self) -> Result<Option<galley_core::stages::DriftReport>> {
        let Some(m) = &self.bp.stages.monitoring else { return Ok(None) };
        let config = galley_core::stages::DriftConfig {
            method: m.drift.method,
            threshold: m.drift.threshold,
            min_samples: m.drift.min_samples,
        };
        let name = self.monitor_name();
        let report = self.stages.monitor.drift(&name, &config).await?;
        let gauges = report.gauges();
        self.stages.monitor.publish(&name, &gauges).await?;
        Ok(Some(report))
    }

    async fn begin_experiment_run(&self, trigger: Option<Trigger>) -> Result<Option<String>> {
        let Some(exp) = &self.bp.stages.experiments else { return Ok(None) };
        let tracker = &self.stages.experiments;
        tracker.create_experiment(&exp.name).await?;
        let mut tags = BTreeMap::new();
        tags.insert("galley.blueprint".to_owned(), self.bp.name.clone());
        tags.insert("galley.code_version".to_owned(), self.code_version.clone());
        tags.insert(
            "galley.trigger".to_owned(),
            trigger.map(|t| format!("{t:?}").to_lowercase()).unwrap_or_else(|| "manual".into()),
        );
        let run = tracker.start_run(&exp.name, Some(&self.pipeline_name()), &tags).await?;
        *self.experiment_run.lock().expect("experiment run lock") = Some(run.clone());
        Ok(Some(run))
    }

    async fn end_experiment_run(&self, run: &PipelineRun) -> Result<()> {
        let Some(id) = self.experiment_run.lock().expect("experiment run lock").take() else { return Ok(()) };
        let mut tags = BTreeMap::new();
        tags.insert("galley.pipeline_run".to_owned(), run.id.clone());
        let cached: Vec<&str> = run.steps.iter().filter(|s| s.cached).map(|s| s.name.as_str()).collect();
        tags.insert("galley.cached_steps".to_owned(), cached.join(","));
        self.stages.experiments.set_tags(&id, &tags).await?;
        let status = if run.state == RunState::Succeeded {
            galley_core::stages::RunStatus::Finished
        } else {
            galley_core::stages::RunStatus::Failed
        };
        self.stages.experiments.end_run(&id, status).await
    }

    fn current_run(&self) -> Option<String> {
        self.experiment_run.lock().expect("experiment run lock").clone()
    }
}

#[async_trait]
impl StepExecutor for Lifecycle {
    async fn fingerprint(&self, step: &str, upstream: &BTreeMap<String, StepOutput>) -> Result<String> {
        let name = StepName::parse(step)?;
        let mut fp = self.step_fingerprint(name, upstream).await?;
        if self.force_from.lock().expect("force lock").is_some_and(|from| name >= from) {
            // Forced on purpose (a drift retrain, `--no-cache`): never reuse an old output.
            fp.push_str(&format!(":forced@{}", galley_core::stages::now_ms()));
        }
        Ok(fp)
    }

    async fn run(&self, step: &str, upstream: &BTreeMap<String, StepOutput>, log: &dyn StepLogger) -> Result<StepOutput> {
        let name = StepName::parse(step)?;
        let started = std::time::Instant::now();
        let out = self.run_step(name, upstream, log).await?;
        if let Some(run) = self.current_run() {
            let m = galley_core::stages::Metric::new(format!("step.{}.seconds", name.as_str()), started.elapsed().as_secs_f64());
            self.stages.experiments.log_metrics(&run, &[m]).await?;
        }
        Ok(StepOutput { values: out })
    }
}

/// The monitor of a blueprint's model: named like the endpoint it watches (where the platform
/// captures the endpoint's traffic under that name), else like the blueprint.
pub fn monitor_name(bp: &Blueprint) -> String {
    bp.stages.serving.as_ref().map(|s| s.endpoint.clone()).unwrap_or_else(|| bp.name.clone())
}

pub fn pipeline_name(bp: &Blueprint) -> String {
    bp.stages.pipeline.as_ref().map(|p| p.name.clone()).unwrap_or_else(|| format!("{}-lifecycle", bp.name))
}

/// The pipeline definition: the lifecycle's steps, in a chain, with the blueprint's retry,
/// cache, schedule and trigger settings. Provisioned by `apply`, run by `run`.
pub fn pipeline_spec(bp: &Blueprint) -> PipelineSpec {
    let p = bp.stages.pipeline.as_ref();
    let retries = p.and_then(|p| p.retries).unwrap_or(2);
    let cache = p.and_then(|p| p.cache).unwrap_or(true);
    let names = StepName::for_blueprint(bp);
    let steps = names
        .iter()
        .enumerate()
        .map(|(i, s)| StepSpec {
            name: s.as_str().to_owned(),
            depends_on: if i == 0 { vec![] } else { vec![names[i - 1].as_str().to_owned()] },
            retries,
            cache,
            image: bp.stages.training.as_ref().and_then(|t| t.image.clone()),
        })
        .collect();
    let triggers: Vec<Trigger> = p
        .map(|p| {
            p.retrain_on
                .iter()
                .map(|t| match t {
                    galley_blueprint::RetrainTrigger::Schedule => Trigger::Schedule,
                    galley_blueprint::RetrainTrigger::NewData => Trigger::NewData,
                    galley_blueprint::RetrainTrigger::Drift => Trigger::Drift,
                })
                .collect()
        })
        .unwrap_or_default();
    // The monitor is named only where drift starts runs: a platform that watches it itself
    // (an alarm) provisions what it names.
    let monitor = triggers.contains(&Trigger::Drift).then(|| monitor_name(bp));
    PipelineSpec { name: pipeline_name(bp), steps, schedule: p.and_then(|p| p.schedule.clone()), triggers, monitor }
}

/// The features the model trains on: the features stage's list, or every column of the source
/// but the target when the list is empty.
pub fn resolved_features(bp: &Blueprint, project_dir: &std::path::Path) -> Result<Vec<String>> {
    if let Some(f) = bp.stages.features.as_ref().filter(|f| !f.features.is_empty()) {
        return Ok(f.features.clone());
    }
    let ds = galley_ml::load_source(&bp.data.source, project_dir)?;
    Ok(ds.table.columns.iter().map(|c| c.name.clone()).filter(|c| *c != bp.data.target).collect())
}

/// Polls a run until it ends; the orchestrator drives it in the background.
async fn wait_for(
    orchestrator: &dyn galley_core::Orchestrator,
    id: &str,
    on_step: &(dyn Fn(&galley_core::stages::StepRun) + Send + Sync),
) -> Result<PipelineRun> {
    let mut delay = std::time::Duration::from_millis(5);
    let mut seen: BTreeMap<String, RunState> = BTreeMap::new();
    loop {
        let run = orchestrator.status(id).await?;
        for step in &run.steps {
            if seen.insert(step.name.clone(), step.state) != Some(step.state) && step.state != RunState::Pending {
                on_step(step);
            }
        }
        if run.state.is_terminal() {
            return Ok(run);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_millis(250));
    }
}

/// What a lifecycle run did, for the CLI and for library callers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    pub pipeline_run: String,
    pub state: RunState,
    pub experiment_run: Option<String>,
    pub steps: Vec<StepSummary>,
    pub data_hash: Option<String>,
    /// The stored train/test split, for sampling held-out rows.
    pub prepared_key: Option<String>,
    /// The platform's id of the managed training job that trained the model (`compute: managed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    pub gate: Option<GateSummary>,
    pub registered_version: Option<u64>,
    /// True when this run registered a new version (false when every step was cached).
    pub registered_new: bool,
    pub endpoint: Option<String>,
    pub endpoint_url: Option<String>,
    /// What the endpoint serves after the deploy step: the variants, versions and weights the
    /// plan's `shift_traffic` showed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<galley_core::stages::Variant>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StepSummary {
    pub name: String,
    pub state: RunState,
    pub cached: bool,
    pub attempts: u32,
    pub error: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GateSummary {
    pub passed: bool,
    pub reasons: Vec<String>,
}

impl RunSummary {
    fn from_run(run: PipelineRun, experiment_run: Option<String>) -> Self {
        let output = |name: StepName| {
            run.steps.iter().find(|s| s.name == name.as_str()).and_then(|s| s.output.clone())
        };
        let fresh = |name: StepName| run.steps.iter().any(|s| s.name == name.as_str() && !s.cached && s.state == RunState::Succeeded);
        let extract = output(StepName::Extract);
        let evaluate = output(StepName::Evaluate);
        let gate = output(StepName::ValidateModel);
        let register = output(StepName::Register);
        let deploy = output(StepName::Deploy);
        let registered_version = register.as_ref().and_then(|r| r.get("version")).and_then(|v| v.as_u64());
        RunSummary {
            pipeline_run: run.id.clone(),
            state: run.state,
            experiment_run,
            data_hash: extract.as_ref().and_then(|e| e.get("data_hash")).and_then(|v| v.as_str()).map(str::to_owned),
            prepared_key: output(StepName::Prepare)
                .as_ref()
                .and_then(|p| p.get("prepared_key"))
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            training_job: output(StepName::Train)
                .as_ref()
                .and_then(|t| t.get("training_job"))
                .and_then(|v| v.as_str())
                .map(str::to_owned),
            metrics: evaluate
                .as_ref()
                .and_then(|e| e.get("metrics"))
                .and_then(|m| serde_json::from_value(m.clone()).ok())
                .unwrap_or_default(),
            gate: gate.and_then(|g| serde_json::from_value(g).ok()),
            registered_new: registered_version.is_some()
                && fresh(StepName::Register)
                && register.as_ref().and_then(|r| r.get("new")).and_then(|v| v.as_bool()).unwrap_or(false),
            registered_version,
            endpoint: deploy.as_ref().and_then(|d| d.get("endpoint")).and_then(|v| v.as_str()).map(str::to_owned),
            endpoint_url: deploy.as_ref().and_then(|d| d.get("url")).and_then(|v| v.as_str()).map(str::to_owned),
            variants: deploy.as_ref().and_then(|d| d.get("variants")).and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default(),
            error: run.steps.iter().find_map(|s| s.error.clone()),
            steps: run
                .steps
                .into_iter()
                .map(|s| StepSummary { name: s.name, state: s.state, cached: s.cached, attempts: s.attempts, error: s.error })
                .collect(),
        }
    }
}
