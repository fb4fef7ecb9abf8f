//! Pipelines on SageMaker Pipelines. The definition JSON is generated from the blueprint's
//! steps (one Processing step per Galley step, with its dependencies, retry policy and cache
//! config) and carries Galley's own spec under `Metadata.galley`, so `describe_pipeline`
//! round-trips exactly.
//!
//! Two ways to run:
//! - an executor is attached (what `galley run` does): Galley walks the DAG itself, with
//!   retries, caching of unchanged steps and cancellation; runs, step logs and the cache live
//!   in the artifact bucket under `galley/pipelines/`. No SageMaker execution starts, so
//!   nothing is billed for steps that run in Galley's process. With `training.compute:
//!   managed` the train step submits a SageMaker Training Job ([`crate::training`]).
//! - no executor (the pipeline started from SageMaker, e.g. by its schedule):
//!   StartPipelineExecution, then DescribePipelineExecution and ListPipelineExecutionSteps for
//!   status, ListPipelineExecutions for history.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use galley_core::stages::{
    ArtifactKey, ArtifactStore, ArtifactStoreExt, Described, Orchestrator, PipelineRun, PipelineSpec, RunState, StepExecutor,
    StepLogger, StepOutput, StepRun, TrainingJob, TrainingJobResult, Trigger, now_ms,
};
use galley_core::{Error, ErrorKind, PlatformKind, Result, RetryPolicy, Stage};
use serde_json::{Value as Json, json};

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
    cancels: Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>,
    /// Delay between retries of a failed step.
    retry: RetryPolicy,
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

/// Checks the steps form a DAG over known names; returns them in a topological order that
/// keeps the spec's order where the dependencies allow.
pub fn topo_order(spec: &PipelineSpec) -> Result<Vec<usize>> {
    let names: BTreeSet<&str> = spec.steps.iter().map(|s| s.name.as_str()).collect();
    if names.len() != spec.steps.len() {
        return Err(Error::invalid(format!("pipeline `{}` has two steps with the same name", spec.name)));
    }
    for s in &spec.steps {
        for d in &s.depends_on {
            if !names.contains(d.as_str()) {
                let known: Vec<&str> = names.iter().copied().collect();
                return Err(Error::invalid(format!(
                    "pipeline `{}`: step `{}` depends on `{d}`, which is not a step (steps: {known:?})",
                    spec.name, s.name
                )));
            }
        }
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < spec.steps.len() {
        let next = spec
            .steps
            .iter()
            .enumerate()
            .find(|(i, s)| !order.contains(i) && s.depends_on.iter().all(|d| done.contains(d.as_str())));
        match next {
            Some((i, s)) => {
                order.push(i);
                done.insert(s.name.as_str());
            }
            None => {
                let stuck: Vec<&str> =
                    spec.steps.iter().filter(|s| !done.contains(s.name.as_str())).map(|s| s.name.as_str()).collect();
                return Err(Error::invalid(format!("pipeline `{}` has a dependency cycle among {stuck:?}", spec.name)));
            }
        }
    }
    Ok(order)
}

/// The names of every step `step` depends on, directly or not.
pub fn ancestors(spec: &PipelineSpec, step: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![step.to_owned()];
    while let Some(s) = todo.pop() {
        if let Some(st) = spec.steps.iter().find(|x| x.name == s) {
            for d in &st.depends_on {
                if out.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
    }
    out
}

/// The SageMaker Pipelines definition (schema 2020-12-01) for `spec`.
pub fn definition(spec: &PipelineSpec, image: &str, role: &str, instance_type: &str) -> Json {
    let steps: Vec<Json> = spec
        .steps
        .iter()
        .map(|s| {
            let mut step = json!({
                "Name": s.name,
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 30}},
                    "AppSpecification": {"ImageUri": s.image.as_deref().unwrap_or(image), "ContainerArguments": ["step", s.name]},
                    "RoleArn": role,
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
            if s.cache {
                step["CacheConfig"] = json!({"Enabled": true, "ExpireAfter": "P30D"});
            }
            step
        })
        .collect();
    json!({
        "Version": "2020-12-01",
        "Metadata": {"galley": spec},
        "Parameters": [],
        "Steps": steps,
    })
}

struct BufferLogger(Mutex<Vec<String>>);

impl StepLogger for BufferLogger {
    fn line(&self, message: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(message.to_owned());
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheEntry {
    fingerprint: String,
    output: StepOutput,
}

impl SageMakerPipelines {
    pub fn new(clients: AwsClients, store: S3Artifacts, image: Option<String>, instance_type: Option<String>) -> Self {
        SageMakerPipelines {
            clients,
            store,
            image,
            instance_type: instance_type.unwrap_or_else(|| "ml.m5.large".into()),
            executors: Default::default(),
            cancels: Default::default(),
            retry: RetryPolicy { max_attempts: 1, base_delay: std::time::Duration::from_millis(200), ..Default::default() },
            poll_delay: None,
            training_jobs: Default::default(),
        }
    }

    fn run_key(run: &str) -> Result<ArtifactKey> {
        if run.is_empty() || !run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::not_found(format!("run `{run}` does not exist (not a galley run id)")));
        }
        ArtifactKey::new(format!("{ROOT}/runs/{run}/run.json"))
    }

    async fn save_run(&self, run: &PipelineRun) -> Result<()> {
        self.store.put_bytes(&Self::run_key(&run.id)?, Bytes::from(serde_json::to_vec(run)?)).await?;
        Ok(())
    }

    async fn load_run(&self, run: &str) -> Result<PipelineRun> {
        match self.store.get_bytes(&Self::run_key(run)?).await {
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

    /// Walks the DAG in-process, saving the run record after every change.
    async fn execute(self, spec: PipelineSpec, mut run: PipelineRun, exec: Arc<dyn StepExecutor>, cancel: Arc<AtomicBool>) {
        let order = topo_order(&spec).unwrap_or_default();
        let mut outputs: BTreeMap<String, StepOutput> = BTreeMap::new();
        for i in order {
            let step = &spec.steps[i];
            let idx = run.steps.iter().position(|s| s.name == step.name).unwrap_or(0);
            let blocked = step.depends_on.iter().any(|d| !outputs.contains_key(d));
            if cancel.load(Ordering::SeqCst) {
                run.steps[idx].state = RunState::Cancelled;
                continue;
            }
            if blocked {
                run.steps[idx].state = RunState::Skipped;
                continue;
            }
            // Every ancestor's output, not only the direct dependencies': a step may read
            // what any step before it in its chain handed on.
            let upstream: BTreeMap<String, StepOutput> =
                ancestors(&spec, &step.name).into_iter().filter_map(|d| outputs.get(&d).map(|o| (d, o.clone()))).collect();
            let cache_key = ArtifactKey::new(format!("{ROOT}/{}/cache/{}.json", spec.name, step.name));
            let fingerprint = exec.fingerprint(&step.name, &upstream).await;
            if step.cache {
                if let (Ok(fp), Ok(key)) = (&fingerprint, &cache_key) {
                    if let Ok(bytes) = self.store.get_bytes(key).await {
                        if let Ok(entry) = serde_json::from_slice::<CacheEntry>(&bytes) {
                            if &entry.fingerprint == fp {
                                run.steps[idx].state = RunState::Succeeded;
                                run.steps[idx].cached = true;
                                run.steps[idx].output = Some(entry.output.values.clone());
                                outputs.insert(step.name.clone(), entry.output);
                                let _ = self.save_run(&run).await;
                                continue;
                            }
                        }
                    }
                }
            }
            run.steps[idx].state = RunState::Running;
            let _ = self.save_run(&run).await;
            let logger = BufferLogger(Mutex::new(Vec::new()));
            let mut result;
            let mut attempts = 0;
            loop {
                attempts += 1;
                result = exec.run(&step.name, &upstream, &logger).await;
                match &result {
                    Err(e) if e.is_retryable() && attempts <= step.retries && !cancel.load(Ordering::SeqCst) => {
                        logger.line(&format!("attempt {attempts} failed ({e}); retrying"));
                        tokio::time::sleep(self.retry.delay(attempts)).await;
                    }
                    _ => break,
                }
            }
            run.steps[idx].attempts = attempts;
            let log = logger.0.into_inner().unwrap_or_else(|p| p.into_inner()).join("\n");
            if let Ok(key) = ArtifactKey::new(format!("{ROOT}/runs/{}/logs/{}.log", run.id, step.name)) {
                let _ = self.store.put_bytes(&key, Bytes::from(log)).await;
            }
            match result {
                Ok(out) => {
                    if step.cache {
                        if let (Ok(fp), Ok(key)) = (&fingerprint, &cache_key) {
                            let entry = CacheEntry { fingerprint: fp.clone(), output: out.clone() };
                            if let Ok(bytes) = serde_json::to_vec(&entry) {
                                let _ = self.store.put_bytes(key, Bytes::from(bytes)).await;
                            }
                        }
                    }
                    run.steps[idx].state = if cancel.load(Ordering::SeqCst) { RunState::Cancelled } else { RunState::Succeeded };
                    run.steps[idx].output = Some(out.values.clone());
                    if run.steps[idx].state == RunState::Succeeded {
                        outputs.insert(step.name.clone(), out);
                    }
                }
                Err(e) => {
                    run.steps[idx].state = if cancel.load(Ordering::SeqCst) { RunState::Cancelled } else { RunState::Failed };
                    run.steps[idx].error = Some(e.to_string());
                }
            }
            let _ = self.save_run(&run).await;
        }
        run.state = if cancel.load(Ordering::SeqCst) {
            RunState::Cancelled
        } else if run.steps.iter().all(|s| s.state == RunState::Succeeded) {
            RunState::Succeeded
        } else {
            RunState::Failed
        };
        run.ended_ms = Some(now_ms().max(run.started_ms));
        let _ = self.save_run(&run).await;
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&run.id);
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
        Ok(PipelineRun {
            id: arn.to_owned(),
            pipeline,
            state: execution_state(d.pipeline_execution_status().map(|s| s.as_str()).unwrap_or("Executing")),
            trigger: None,
            started_ms: d.creation_time().and_then(|t| t.to_millis().ok()).unwrap_or(0),
            ended_ms: d.last_modified_time().and_then(|t| t.to_millis().ok()).filter(|_| {
                execution_state(d.pipeline_execution_status().map(|s| s.as_str()).unwrap_or("")).is_terminal()
            }),
            steps: steps
                .pipeline_execution_steps()
                .iter()
                .map(|s| StepRun {
                    name: s.step_name().unwrap_or_default().to_owned(),
                    state: execution_state(s.step_status().map(|x| x.as_str()).unwrap_or("Executing")),
                    attempts: s.attempt_count().unwrap_or(1).max(0) as u32,
                    cached: s.cache_hit_result().is_some(),
                    error: s.failure_reason().map(str::to_owned),
                    output: None,
                })
                .collect(),
            params: BTreeMap::new(),
        })
    }
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
    fn platform(&self) -> PlatformKind {
        PlatformKind::Aws
    }
}

#[async_trait]
impl Orchestrator for SageMakerPipelines {
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()> {
        topo_order(spec)?;
        let role = self.clients.role_arn(&format!("pipeline `{}`", spec.name))?;
        let body = definition(spec, &self.image(), &role, &self.instance_type).to_string();
        if self.pipeline_exists(&spec.name).await? {
            self.clients
                .sagemaker
                .update_pipeline()
                .pipeline_name(&spec.name)
                .pipeline_definition(body)
                .role_arn(role)
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "UpdatePipeline", &spec.name))?;
        } else {
            self.clients
                .sagemaker
                .create_pipeline()
                .pipeline_name(&spec.name)
                .pipeline_definition(body)
                .role_arn(role)
                .client_request_token(uuid::Uuid::new_v4().to_string())
                .send()
                .await
                .map_err(sdk(Stage::Pipeline, "CreatePipeline", &spec.name))?;
        }
        Ok(())
    }

    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>> {
        match self.clients.sagemaker.describe_pipeline().pipeline_name(name).send().await {
            Ok(d) => {
                let def: Json = serde_json::from_str(d.pipeline_definition().unwrap_or("{}"))
                    .map_err(|e| Error::corrupt(format!("pipeline `{name}`: its definition is not JSON ({e})")))?;
                match def.pointer("/Metadata/galley") {
                    Some(spec) => Ok(Some(serde_json::from_value(spec.clone()).map_err(|e| {
                        Error::corrupt(format!("pipeline `{name}`: the galley spec in its definition is damaged ({e})"))
                    })?)),
                    None => Err(Error::conflict(format!(
                        "pipeline `{name}` exists in SageMaker but was not made by galley; rename the blueprint's pipeline or delete it"
                    ))),
                }
            }
            Err(e) => {
                let e = sdk(Stage::Pipeline, "DescribePipeline", name)(e);
                if e.kind() == ErrorKind::NotFound { Ok(None) } else { Err(e) }
            }
        }
    }

    async fn delete_pipeline(&self, name: &str) -> Result<()> {
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
            let params: Vec<_> = params
                .iter()
                .map(|(k, v)| aws_sdk_sagemaker::types::Parameter::builder().name(k).value(v).build())
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
        let run = PipelineRun {
            id: id.clone(),
            pipeline: pipeline.to_owned(),
            state: RunState::Running,
            trigger,
            started_ms: now_ms(),
            ended_ms: None,
            steps: spec
                .steps
                .iter()
                .map(|s| StepRun { name: s.name.clone(), state: RunState::Pending, attempts: 0, cached: false, error: None, output: None })
                .collect(),
            params: params.clone(),
        };
        self.save_run(&run).await?;
        self.store.put_bytes(&ArtifactKey::new(format!("{ROOT}/{pipeline}/runs/{id}"))?, Bytes::new()).await?;
        let cancel = Arc::new(AtomicBool::new(false));
        self.cancels.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), cancel.clone());
        tokio::spawn(self.clone().execute(spec, run, exec, cancel));
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
                        trigger: None,
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
        let record = self.load_run(run).await?;
        let mut out = String::new();
        for s in &record.steps {
            if step.is_some_and(|want| want != s.name) {
                continue;
            }
            let key = ArtifactKey::new(format!("{ROOT}/runs/{run}/logs/{}.log", s.name))?;
            match self.store.get_bytes(&key).await {
                Ok(b) => {
                    if step.is_none() {
                        out.push_str(&format!("== {}\n", s.name));
                    }
                    out.push_str(&String::from_utf8_lossy(&b));
                    out.push('\n');
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
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
        let flag = self.cancels.lock().unwrap_or_else(|p| p.into_inner()).get(run).cloned();
        match flag {
            Some(f) => {
                f.store(true, Ordering::SeqCst);
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
        training.run(job, log).await.map_err(|e| e.platform(PlatformKind::Aws).stage(Stage::Training))
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
        let spec = PipelineSpec { name: "p".into(), steps: vec![step("a", &[]), step("b", &["a"])], schedule: None, triggers: vec![] };
        let d = definition(&spec, "img", "arn:role", "ml.m5.large");
        assert_eq!(d["Version"], "2020-12-01");
        assert_eq!(d["Steps"][1]["DependsOn"], json!(["a"]));
        assert_eq!(d["Steps"][1]["RetryPolicies"][0]["MaxAttempts"], 2);
        assert_eq!(d["Steps"][0]["Arguments"]["AppSpecification"]["ImageUri"], "img");
        let back: PipelineSpec = serde_json::from_value(d["Metadata"]["galley"].clone()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn cycles_and_unknown_dependencies_are_refused() {
        let mut spec = PipelineSpec { name: "p".into(), steps: vec![step("a", &["b"]), step("b", &["a"])], schedule: None, triggers: vec![] };
        assert_eq!(topo_order(&spec).unwrap_err().kind(), ErrorKind::InvalidInput);
        spec.steps = vec![step("a", &["zzz"])];
        assert!(topo_order(&spec).unwrap_err().message().contains("zzz"));
        spec.steps = vec![step("b", &["a"]), step("a", &[])];
        assert_eq!(topo_order(&spec).unwrap(), vec![1, 0]);
    }
}
