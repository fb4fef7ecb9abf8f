//! Pipelines on SageMaker Pipelines. The definition JSON is generated from the blueprint's
//! steps ([`definition`]: one Processing step per Galley step, running Galley's image as
//! `galley container step NAME`, with its dependencies and retry policy) and carries Galley's
//! own spec under `Metadata.galley`, so `describe_pipeline` round-trips exactly.
//!
//! Two ways to run:
//! - on SageMaker (what `galley run` does on aws): StartPipelineExecution with the run's
//!   parameters (the run bundle's S3 URI, the experiment run, `--from`); SageMaker starts one
//!   Processing job per step in dependency order, and each container runs
//!   [`Orchestrator::run_step_here`]: it reads its ancestors' records under
//!   `galley/pipelines/runs/<execution id>/outputs/`, runs the step with Galley's retries and
//!   cache, and writes its own record and log there. Status is DescribePipelineExecution and
//!   ListPipelineExecutionSteps merged with those records; cancel is StopPipelineExecution.
//!   A run SageMaker starts on its own (console, schedule) uses the parameters' defaults: the
//!   pipeline's current bundle.
//! - in this process (`galley run --local-steps`, for debugging; an executor is attached):
//!   Galley's DAG runner (`galley-pipeline`) walks the steps here, with retries, caching of
//!   unchanged steps and cancellation; runs, step logs and the cache live in the artifact
//!   bucket under `galley/pipelines/` ([`StoredJournal`]). No SageMaker execution starts. With
//!   `training.compute: managed` the train step submits a SageMaker Training Job
//!   ([`crate::training`]) either way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use galley_core::stages::{
    ArtifactKey, ArtifactStore, ArtifactStoreExt, Described, Orchestrator, PARAM_BUNDLE, PARAM_EXPERIMENT_RUN, PARAM_FORCE_FROM, PARAM_TRIGGER,
    PipelineRun, PipelineSpec, RunState, StepExecutor, StepLogger, StepRun, TrainingJob, TrainingJobResult, Trigger,
    bundle_key, now_ms,
};
use galley_core::{Error, ErrorKind, Result, RetryPolicy, Stage};
use galley_pipeline::stored::{self, StoredJournal};
use galley_pipeline::{RunJournal, RunnerOptions, dag};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::artifacts::S3Artifacts;
use crate::config::AwsClients;
use crate::error::sdk;

const ROOT: &str = "galley/pipelines";

#[derive(Clone)]
pub struct SageMakerPipelines {
    clients: AwsClients,
    store: S3Artifacts,
    /// The container image written into the definition's steps.
    image: Option<String>,
    instance_type: String,
    executors: Arc<Mutex<HashMap<String, Arc<dyn StepExecutor>>>>,
    cancels: Arc<Mutex<HashMap<String, CancellationToken>>>,
    /// How the DAG runner runs steps in this process (backoff between a step's retries).
    runner: RunnerOptions,
    /// Overrides the training job waiter's delay (tests poll in milliseconds).
    pub poll_delay: Option<std::time::Duration>,
    /// Names of the training jobs this object is waiting for; `cancel` stops them.
    training_jobs: Arc<Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for SageMakerPipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SageMakerPipelines(s3://{})", self.store.bucket())
    }
}

/// The SageMaker Pipelines definition (schema 2020-12-01) for `spec`: one Processing step per
/// Galley step, running Galley's image as `galley container step NAME` with the execution's
/// ARN and parameters (`{"Get": …}` expressions SageMaker resolves per execution). The
/// parameters' defaults serve runs SageMaker starts on its own (a schedule): the pipeline's
/// current bundle under `bucket`, no experiment run, nothing forced.
///
/// No `CacheConfig`: SageMaker would key it on the step's arguments, which name the
/// execution, so it could never hit; the step container applies Galley's own cache, keyed on
/// what the step reads, as in-process runs do.
pub fn definition(spec: &PipelineSpec, image: &str, role: &str, instance_type: &str, bucket: &str, region: &str) -> Json {
    let param = |name: &str| json!({"Get": format!("Parameters.{name}")});
    let steps: Vec<Json> = spec
        .steps
        .iter()
        .map(|s| {
            let mut step = json!({
                "Name": s.name,
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 30}},
                    "AppSpecification": {
                        "ImageUri": s.image.as_deref().unwrap_or(image),
                        "ContainerArguments": [
                            "step", s.name,
                            "--run", {"Get": "Execution.PipelineExecutionArn"},
                            "--bundle", param(PARAM_BUNDLE),
                            "--experiment-run", param(PARAM_EXPERIMENT_RUN),
                            "--force-from", param(PARAM_FORCE_FROM),
                        ],
                    },
                    "RoleArn": role,
                    // What the step container reads its run bundle with, before any blueprint.
                    "Environment": {"AWS_REGION": region},
                    "StoppingCondition": {"MaxRuntimeInSeconds": STEP_MAX_RUNTIME_SECS},
                },
            });
            if !s.depends_on.is_empty() {
                step["DependsOn"] = json!(s.depends_on);
            }
            if s.retries > 0 {
                step["RetryPolicies"] = json!([{
                    "ExceptionType": ["Step.SERVICE_FAULT", "Step.THROTTLING"],
                    "IntervalSeconds": 10, "BackoffRate": 2.0, "MaxAttempts": s.retries,
                }]);
            }
            step
        })
        .collect();
    json!({
        "Version": "2020-12-01",
        "Metadata": {"galley": spec},
        "Parameters": [
            {"Name": PARAM_BUNDLE, "Type": "String", "DefaultValue": format!("s3://{bucket}/{}", bundle_key(&spec.name))},
            {"Name": PARAM_EXPERIMENT_RUN, "Type": "String", "DefaultValue": ""},
            {"Name": PARAM_FORCE_FROM, "Type": "String", "DefaultValue": ""},
            // Set by the schedule and the drift rule (`crate::triggers`); empty by hand.
            {"Name": PARAM_TRIGGER, "Type": "String", "DefaultValue": ""},
        ],
        "Steps": steps,
    })
}

/// A step container is stopped (and its bill with it) after this long; a managed training job
/// the train step starts has its own limit (`training.max_runtime`).
const STEP_MAX_RUNTIME_SECS: u64 = 24 * 3600;

/// The execution id at the end of a pipeline execution ARN
/// (`arn:aws:sagemaker:REGION:ACCOUNT:pipeline/NAME/execution/ID`): where its outputs live.
pub fn execution_id(arn: &str) -> Result<&str> {
    arn.rsplit_once("/execution/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .ok_or_else(|| Error::invalid(format!("`{arn}` is not a SageMaker pipeline execution ARN")))
}

impl SageMakerPipelines {
    pub fn new(clients: AwsClients, store: S3Artifacts, image: Option<String>, instance_type: Option<String>) -> Self {
        SageMakerPipelines {
            clients,
            store,
            image,
            instance_type: instance_type.unwrap_or_else(|| crate::platform::DEFAULT_STEP_INSTANCE.into()),
            executors: Default::default(),
            cancels: Default::default(),
            runner: RunnerOptions {
                retry: RetryPolicy { base_delay: std::time::Duration::from_millis(200), ..Default::default() },
                ..RunnerOptions::default()
            },
            poll_delay: None,
            training_jobs: Default::default(),
        }
    }

    async fn load_run(&self, run: &str) -> Result<PipelineRun> {
        match self.store.get_bytes(&stored::run_key(run)?).await {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::corrupt(format!("run record of `{run}` is damaged ({e})"))),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::not_found(format!("pipeline run `{run}` does not exist"))),
            Err(e) => Err(e),
        }
    }

    async fn pipeline_exists(&self, name: &str) -> Result<bool> {
        Ok(self.describe_pipeline(name).await?.is_some())
    }

    fn image(&self) -> String {
        // The definition must name an image; with `compute: local` it is never run.
        self.image.clone().unwrap_or_else(|| "galley-step-runs-in-process".to_owned())
    }

    fn triggers(&self) -> crate::triggers::PipelineTriggers<'_> {
        crate::triggers::PipelineTriggers { clients: &self.clients }
    }

    async fn pipeline_arn(&self, name: &str) -> Result<String> {
        let d = self
            .clients
            .sagemaker
            .describe_pipeline()
            .pipeline_name(name)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "DescribePipeline", name))?;
        d.pipeline_arn().map(str::to_owned).ok_or_else(|| Error::internal(format!("SageMaker described pipeline `{name}` without its ARN")))
    }

    /// What started a managed execution: its `trigger` parameter (a schedule, the drift rule,
    /// or `galley run`'s own), absent or empty when started by hand.
    async fn execution_trigger(&self, arn: &str) -> Result<Option<Trigger>> {
        let out = self
            .clients
            .sagemaker
            .list_pipeline_parameters_for_execution()
            .pipeline_execution_arn(arn)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "ListPipelineParametersForExecution", arn))?;
        Ok(out.pipeline_parameters().iter().find(|p| p.name() == Some(PARAM_TRIGGER)).and_then(|p| p.value().and_then(Trigger::parse)))
    }

    /// Status of a managed execution from DescribePipelineExecution and
    /// ListPipelineExecutionSteps.
    async fn managed_status(&self, arn: &str) -> Result<PipelineRun> {
        let d = self
            .clients
            .sagemaker
            .describe_pipeline_execution()
            .pipeline_execution_arn(arn)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "DescribePipelineExecution", arn))?;
        let steps = self
            .clients
            .sagemaker
            .list_pipeline_execution_steps()
            .pipeline_execution_arn(arn)
            .send()
            .await
            .map_err(sdk(Stage::Pipeline, "ListPipelineExecutionSteps", arn))?;
        let pipeline = arn.split(":pipeline/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_owned();
        let id = execution_id(arn)?;
        let mut outputs = BTreeMap::new();
        for s in steps.pipeline_execution_steps() {
            let (Some(name), Some("Succeeded")) = (s.step_name(), s.step_status().map(|x| x.as_str())) else { continue };
            if let Some(done) = stored::step_record(&self.store, id, name).await? {
                outputs.insert(name.to_owned(), done);
            }
        }
        // SageMaker lists the newest step first; a run reads in the order its steps started.
        let mut run_steps: Vec<StepRun> = steps
            .pipeline_execution_steps()
            .iter()
            .map(|s| {
                let done = s.step_name().and_then(|n| outputs.get(n));
                StepRun {
                    name: s.step_name().unwrap_or_default().to_owned(),
                    state: execution_state(s.step_status().map(|x| x.as_str()).unwrap_or("Executing")),
                    // The container's own retries (Galley's policy) and SageMaker's.
                    attempts: (s.attempt_count().unwrap_or(1).max(0) as u32).max(done.map_or(0, |d| d.attempts)),
                    cached: s.cache_hit_result().is_some() || done.is_some_and(|d| d.cached),
                    error: s.failure_reason().map(str::to_owned),
                    output: done.and_then(|d| d.output.clone()),
                    started_ms: s.start_time().and_then(|t| t.to_millis().ok()),
                    ended_ms: s.end_time().and_then(|t| t.to_millis().ok()),
                }
            })
            .collect();
        run_steps.sort_by_key(|s| s.started_ms.unwrap_or(i64::MAX));
        Ok(PipelineRun {
            id: arn.to_owned(),
            pipeline,
            state: execution_state(d.pipeline_execution_status().map(|s| s.as_str()).unwrap_or("Executing")),
            trigger: self.execution_trigger(arn).await?,
            started_ms: d.creation_time().and_then(|t| t.to_millis().ok()).unwrap_or(0),
            ended_ms: d.last_modified_time().and_then(|t| t.to_millis().ok()).filter(|_| {
                execution_state(d.pipeline_execution_status().map(|s| s.as_str()).unwrap_or("")).is_terminal()
            }),
            steps: run_steps,
            params: BTreeMap::new(),
        })
    }
}

/// The spec kept in the definition, with its schedule and drift trigger as AWS really holds
/// them: a schedule deleted or changed outside Galley reads as such, so `plan` shows it.
fn with_registered(mut spec: PipelineSpec, registered: crate::triggers::Registered) -> PipelineSpec {
    spec.schedule = match (spec.schedule.take(), registered.schedule) {
        (Some(cron), Some(aws)) if crate::cron::aws_cron(&cron).as_deref() == Ok(aws.as_str()) => Some(cron),
        (_, aws) => aws,
    };
    match registered.drift_monitor.is_some() {
        true if !spec.triggers.contains(&Trigger::Drift) => spec.triggers.push(Trigger::Drift),
        false => spec.triggers.retain(|t| *t != Trigger::Drift),
        true => {}
    }
    spec.monitor = registered.drift_monitor;
    spec
}

/// SageMaker's execution and step statuses as Galley's run states.
pub fn execution_state(status: &str) -> RunState {
    match status {
        "Succeeded" => RunState::Succeeded,
        "Failed" => RunState::Failed,
        "Stopped" | "Stopping" => RunState::Cancelled,
        "Starting" => RunState::Pending,
        _ => RunState::Running,
    }
}

impl Described for SageMakerPipelines {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl Orchestrator for SageMakerPipelines {
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        dag::validate(spec)?;
        let role = self.clients.role_arn(&format!("pipeline `{}`", spec.name))?;
        let body = definition(spec, &self.image(), &role, &self.instance_type, self.store.bucket(), self.clients.region()).to_string();
        let arn = if self.pipeline_exists(&spec.name).await? {
            self.clients
                .sagemaker
                .update_pipeline()
                .pipeline_name(&spec.name)
                .pipeline_definition(body)
                .role_arn(&role)
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "UpdatePipeline", &spec.name))?
                .pipeline_arn
        } else {
            self.clients
                .sagemaker
                .create_pipeline()
                .pipeline_name(&spec.name)
                .pipeline_definition(body)
                .role_arn(&role)
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "CreatePipeline", &spec.name))?
                .pipeline_arn
        };
        let arn = match arn {
            Some(arn) => arn,
            None => self.pipeline_arn(&spec.name).await?,
        };
        // The drift check runs Galley's image, as the steps do.
        let check = self.image.as_ref().map(|image| crate::triggers::DriftCheck {
            image: image.clone(),
            instance_type: self.instance_type.clone(),
            bundle_uri: format!("s3://{}/{}", self.store.bucket(), bundle_key(&spec.name)),
            region: self.clients.region().to_owned(),
        });
        self.triggers().apply(spec, &arn, &role, check.as_ref()).await
    }

    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        match self.clients.sagemaker.describe_pipeline().pipeline_name(name).send().await {
            Ok(d) => {
                let def: Json = serde_json::from_str(d.pipeline_definition().unwrap_or("{}"))
                    .map_err(|e| Error::corrupt(format!("pipeline `{name}`: its definition is not JSON ({e})")))?;
                let Some(spec) = def.pointer("/Metadata/galley") else {
                    return Err(Error::conflict(format!(
                        "pipeline `{name}` exists in SageMaker but was not made by galley; rename the blueprint's pipeline or delete it"
                    )));
                };
                let spec: PipelineSpec = serde_json::from_value(spec.clone())
                    .map_err(|e| Error::corrupt(format!("pipeline `{name}`: the galley spec in its definition is damaged ({e})")))?;
                let arn = d.pipeline_arn().map(str::to_owned).unwrap_or_default();
                let registered = self.triggers().read(name, &arn).await?;
                Ok(Some(with_registered(spec, registered)))
            }
            Err(e) => {
                let e = sdk(Stage::Pipeline, "DescribePipeline", name)(e);
                if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn delete_pipeline(&self, name: &str) -> Result<()> {
        // The triggers first: nothing may start a pipeline that is going away.
        self.triggers().remove(name).await?;
        match self
            .clients
            .sagemaker
            .delete_pipeline()
            .pipeline_name(name)
            .client_request_token(uuid::Uuid::new_v4().to_string())
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let e = sdk(Stage::Pipeline, "DeletePipeline", name)(e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
            }
        }
        self.executors.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
        // Run history, logs and cache go with the pipeline, as SageMaker's executions do.
        for marker in self.store.list(&format!("{ROOT}/{name}/")).await? {
            if let Some(run) = marker.key.strip_prefix(&format!("{ROOT}/{name}/runs/")) {
                for m in self.store.list(&format!("{ROOT}/runs/{run}/")).await? {
                    self.store.delete(&ArtifactKey::new(m.key)?).await?;
                }
            }
            self.store.delete(&ArtifactKey::new(marker.key)?).await?;
        }
        Ok(())
    }

    async fn start(&self, pipeline: &str, trigger: Option<Trigger>, params: &BTreeMap<String, String>) -> Result<String> {
        let Some(spec) = self.describe_pipeline(pipeline).await? else {
            return Err(Error::not_found(format!("pipeline `{pipeline}` does not exist; run `galley apply` first")));
        };
        let exec = self.executors.lock().unwrap_or_else(|p| p.into_inner()).get(pipeline).cloned();
        let Some(exec) = exec else {
            if self.image.is_none() && spec.steps.iter().any(|s| s.image.is_none()) {
                return Err(Error::invalid(format!(
                    "pipeline `{pipeline}`: SageMaker runs each step in Galley's image, and the blueprint names none; set `stages.training.image` (Galley's image in your ECR), or run the steps in this process with `galley run --local-steps`"
                )));
            }
            let mut params = params.clone();
            if let Some(t) = trigger {
                params.insert(PARAM_TRIGGER.to_owned(), t.as_str().to_owned());
            }
            let params: Vec<_> = params
                .iter()
                .map(|(k, v)| {
                    // The step container reads the bundle by its S3 URI.
                    let v = if k == PARAM_BUNDLE { format!("s3://{}/{v}", self.store.bucket()) } else { v.clone() };
                    aws_sdk_sagemaker::types::Parameter::builder().name(k).value(v).build()
                })
                .collect();
            let out = self
                .clients
                .sagemaker
                .start_pipeline_execution()
                .pipeline_name(pipeline)
                .set_pipeline_parameters((!params.is_empty()).then_some(params))
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "StartPipelineExecution", pipeline))?;
            return out
                .pipeline_execution_arn()
                .map(str::to_owned)
                .ok_or_else(|| Error::internal(format!("SageMaker started `{pipeline}` but returned no execution ARN")));
        };
        let id = format!("run-{}", uuid::Uuid::new_v4().simple());
        let run = galley_pipeline::new_run(&spec, &id, trigger, params, now_ms());
        let journal = Arc::new(StoredJournal::new(Arc::new(self.store.clone())));
        journal.save(&run).await?;
        self.store.put_bytes(&ArtifactKey::new(format!("{ROOT}/{pipeline}/runs/{id}"))?, Bytes::new()).await?;
        let cancel = CancellationToken::new();
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), cancel.clone());
        let (this, run_id) = (self.clone(), id.clone());
        tokio::spawn(async move {
            galley_pipeline::execute(&spec, run, exec, journal, &this.runner, cancel).await;
            this.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&run_id);
        });
        Ok(id)
    }

    async fn status(&self, run: &str) -> Result<PipelineRun> {
        if run.starts_with("arn:") {
            return self.managed_status(run).await;
        }
        self.load_run(run).await
    }

    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>> {
        let mut runs = Vec::new();
        for marker in self.store.list(&format!("{ROOT}/{pipeline}/runs/")).await? {
            let id = marker.key.rsplit('/').next().unwrap_or_default().to_owned();
            runs.push(self.load_run(&id).await?);
        }
        // Managed executions, when the pipeline exists in SageMaker.
        if let Ok(page) = self.clients.sagemaker.list_pipeline_executions().pipeline_name(pipeline).send().await {
            for s in page.pipeline_execution_summaries() {
                if let Some(arn) = s.pipeline_execution_arn() {
                    runs.push(PipelineRun {
                        id: arn.to_owned(),
                        pipeline: pipeline.to_owned(),
                        state: execution_state(s.pipeline_execution_status().map(|x| x.as_str()).unwrap_or("Executing")),
                        trigger: self.execution_trigger(arn).await?,
                        started_ms: s.start_time().and_then(|t| t.to_millis().ok()).unwrap_or(0),
                        ended_ms: None,
                        steps: Vec::new(),
                        params: BTreeMap::new(),
                    });
                }
            }
        }
        runs.sort_by_key(|r| r.started_ms);
        Ok(runs)
    }

    async fn logs(&self, run: &str, step: Option<&str>) -> Result<String> {
        let (record, run) = match run.starts_with("arn:") {
            // Each step container keeps its log with the run, as Galley's process does.
            true => (self.managed_status(run).await?, execution_id(run)?),
            false => (self.load_run(run).await?, run),
        };
        let steps: Vec<&str> = record.steps.iter().map(|s| s.name.as_str()).collect();
        stored::run_logs(&self.store, run, &steps, step).await
    }

    async fn cancel(&self, run: &str) -> Result<()> {
        if run.starts_with("arn:") {
            self.clients
                .sagemaker
                .stop_pipeline_execution()
                .pipeline_execution_arn(run)
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "StopPipelineExecution", run))?;
            return Ok(());
        }
        // Runs of one pipeline never overlap, so a training job in flight belongs to this run.
        crate::training::stop_jobs(&self.clients, &self.training_jobs).await?;
        let token = self.cancels.lock().unwrap_or_else(|p| p.into_inner()).get(run).cloned();
        match token {
            Some(t) => {
                t.cancel();
                Ok(())
            }
            // Finished already (or started by another process): nothing to stop here.
            None => self.load_run(run).await.map(|_| ()),
        }
    }

    async fn run_training_job(&self, job: &TrainingJob, log: &dyn StepLogger) -> Result<TrainingJobResult> {
        let training = crate::training::ManagedTraining {
            clients: &self.clients,
            bucket: self.store.bucket(),
            default_instance_type: &self.instance_type,
            poll_delay: self.poll_delay,
            in_flight: &self.training_jobs,
        };
        training.run(job, log).await.map_err(|e| e.platform(crate::AWS).stage(Stage::Training))
    }

    async fn run_step_here(&self, spec: &PipelineSpec, run: &str, step: &str, executor: Arc<dyn StepExecutor>) -> Result<StepRun> {
        let id = execution_id(run)?;
        stored::run_stored_step(Arc::new(self.store.clone()), spec, id, step, executor, &self.runner).await
    }

    fn attach_executor(&self, pipeline: &str, executor: Arc<dyn StepExecutor>) -> Result<()> {
        self.executors.lock().unwrap_or_else(|p| p.into_inner()).insert(pipeline.to_owned(), executor);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use galley_core::stages::StepSpec;

    fn step(name: &str, deps: &[&str]) -> StepSpec {
        StepSpec { retries: 2, cache: true, ..StepSpec::new(name, deps) }
    }

    #[test]
    fn definition_follows_the_steps_and_keeps_the_spec() {
        let spec = PipelineSpec { name: "p".into(), steps: vec![step("a", &[]), step("b", &["a"])], schedule: None, triggers: vec![], monitor: None };
        let d = definition(&spec, "img", "arn:role", "ml.m5.large", "bkt", "eu-west-1");
        assert_eq!(d["Version"], "2020-12-01");
        assert_eq!(d["Steps"][1]["DependsOn"], json!(["a"]));
        assert_eq!(d["Steps"][1]["RetryPolicies"][0]["MaxAttempts"], 2);
        assert_eq!(d["Steps"][0]["Arguments"]["AppSpecification"]["ImageUri"], "img");
        // Each step is `galley container step NAME` for this execution, with the run's bundle.
        let args = &d["Steps"][1]["Arguments"]["AppSpecification"]["ContainerArguments"];
        assert_eq!(args[0], "step");
        assert_eq!(args[1], "b");
        assert_eq!(args[3], json!({"Get": "Execution.PipelineExecutionArn"}));
        assert_eq!(args[5], json!({"Get": "Parameters.bundle"}));
        let bundle = d["Parameters"].as_array().unwrap().iter().find(|p| p["Name"] == "bundle").unwrap();
        assert_eq!(bundle["DefaultValue"], "s3://bkt/galley/pipelines/p/bundle.json");
        assert_eq!(d["Steps"][0]["Arguments"]["Environment"]["AWS_REGION"], "eu-west-1");
        // SageMaker's cache would key on arguments that name the execution: never a hit.
        assert!(d["Steps"][0].get("CacheConfig").is_none());
        let back: PipelineSpec = serde_json::from_value(d["Metadata"]["galley"].clone()).unwrap();
        assert_eq!(back, spec);
    }
}
