use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Described, TimestampMs};
use crate::Result;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepSpec {
    pub name: String,
    pub depends_on: Vec<String>,
    /// Retries after the first attempt, for retryable failures.
    pub retries: u32,
    /// Reuse the previous output when the step's inputs hash is unchanged.
    pub cache: bool,
    /// The container image for platforms that run steps remotely; `None` runs in-process.
    pub image: Option<String>,
}

impl StepSpec {
    /// A step run in-process, without retries or caching.
    pub fn new(name: &str, depends_on: &[&str]) -> StepSpec {
        StepSpec {
            name: name.to_owned(),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            retries: 0,
            cache: false,
            image: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    NewData,
    Drift,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineSpec {
    pub name: String,
    pub steps: Vec<StepSpec>,
    /// Cron expression (5 fields), when scheduled.
    pub schedule: Option<String>,
    pub triggers: Vec<Trigger>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Not run because a dependency failed.
    Skipped,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Running)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepRun {
    pub name: String,
    pub state: RunState,
    pub attempts: u32,
    /// True when the output came from the cache.
    pub cached: bool,
    pub error: Option<String>,
    /// What the step handed on (fresh or from the cache), so callers can report on a run
    /// whose every step was cached.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PipelineRun {
    pub id: String,
    pub pipeline: String,
    pub state: RunState,
    pub trigger: Option<Trigger>,
    pub started_ms: TimestampMs,
    pub ended_ms: Option<TimestampMs>,
    pub steps: Vec<StepRun>,
    pub params: BTreeMap<String, String>,
}

#[async_trait]
pub trait Orchestrator: Described + Send + Sync {
    /// Creates or updates the pipeline definition.
    async fn upsert_pipeline(&self, spec: &PipelineSpec) -> Result<()>;
    async fn describe_pipeline(&self, name: &str) -> Result<Option<PipelineSpec>>;
    async fn delete_pipeline(&self, name: &str) -> Result<()>;
    /// Starts a run; returns its id at once (the run goes on in the background).
    async fn start(&self, pipeline: &str, trigger: Option<Trigger>, params: &BTreeMap<String, String>) -> Result<String>;
    async fn status(&self, run: &str) -> Result<PipelineRun>;
    async fn list_runs(&self, pipeline: &str) -> Result<Vec<PipelineRun>>;
    async fn logs(&self, run: &str, step: Option<&str>) -> Result<String>;
    async fn cancel(&self, run: &str) -> Result<()>;
    /// Gives a pipeline in-process step bodies. Platforms that run steps remotely (as
    /// containers) answer `Unsupported`.
    fn attach_executor(&self, pipeline: &str, executor: std::sync::Arc<dyn StepExecutor>) -> Result<()> {
        let _ = executor;
        Err(crate::Error::unsupported(format!(
            "pipeline `{pipeline}`: this platform's orchestrator does not run in-process steps"
        )))
    }
    /// Runs one training job on the platform's own compute (`training.compute: managed`) to
    /// the end and hands back the model file the container wrote. Platforms without managed
    /// training answer `Unsupported` (validate refuses such blueprints first).
    async fn run_training_job(&self, job: &TrainingJob, log: &dyn StepLogger) -> Result<TrainingJobResult> {
        let _ = log;
        Err(crate::Error::unsupported(format!(
            "training job `{}`: this platform's orchestrator does not run managed training jobs; use `training.compute: local`",
            job.name
        )))
    }
}

/// A training job for the platform's managed compute. The container contract is SageMaker's
/// (`/opt/ml/input/config/hyperparameters.json`, `/opt/ml/input/data/<channel>/`,
/// `/opt/ml/model/`), which Galley's own image implements (`galley container train`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingJob {
    /// Derived from the job's inputs, so a run restarted after a crash finds the job it
    /// started instead of paying for a second one.
    pub name: String,
    pub image: String,
    pub instance_type: Option<String>,
    /// Artifact-store prefix whose objects become the `train` input channel.
    pub input_prefix: String,
    /// Artifact-store prefix under which the platform writes what the job produced.
    pub output_prefix: String,
    /// The file, relative to the container's model directory, handed back as the model.
    pub model_file: String,
    /// Passed to the container as strings, as every managed training service does.
    pub hyperparameters: BTreeMap<String, String>,
    /// The platform stops the job (and its bill) after this long.
    pub max_runtime_secs: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainingJobResult {
    /// The platform's id for the job (an ARN on aws).
    pub job_id: String,
    /// The bytes of `TrainingJob::model_file`.
    pub model: Vec<u8>,
    /// Where the platform keeps the job's packed output.
    pub output_uri: String,
    /// True when the job had been started earlier with the same inputs and was reused.
    pub reused: bool,
    /// What the platform bills for, when it says.
    pub billable_seconds: Option<u64>,
}

/// The small JSON a step hands to the steps after it (keys of artifacts, metrics, versions).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepOutput {
    pub values: serde_json::Value,
}

/// Where a step writes its log lines (kept with the run, shown by `galley logs`).
pub trait StepLogger: Send + Sync {
    fn line(&self, message: &str);
}

/// In-process bodies of a pipeline's steps, for platforms whose orchestrator runs steps in
/// Galley's own process (the local DAG runner, and `compute: local` on every cloud).
#[async_trait]
pub trait StepExecutor: Send + Sync {
    /// A fingerprint of everything the step reads. With caching on, a step whose fingerprint
    /// equals that of its last successful run is not run again; its output is reused.
    async fn fingerprint(&self, step: &str, upstream: &BTreeMap<String, StepOutput>) -> Result<String>;
    async fn run(&self, step: &str, upstream: &BTreeMap<String, StepOutput>, log: &dyn StepLogger) -> Result<StepOutput>;
}
