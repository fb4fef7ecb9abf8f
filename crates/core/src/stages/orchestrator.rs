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
    /// The monitor whose drift verdict starts a run ([`Trigger::Drift`]), where the platform
    /// watches it itself (a cloud alarm on the monitor's published drift gauge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<String>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<TimestampMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<TimestampMs>,
}

impl StepRun {
    /// A step of a run that has not started.
    pub fn pending(name: &str) -> StepRun {
        StepRun { name: name.to_owned(), state: RunState::Pending, attempts: 0, cached: false, error: None, output: None, started_ms: None, ended_ms: None }
    }
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

/// The artifact key of a pipeline's current run bundle: what a step running in a container
/// reads to become the lifecycle (`galley container step`). `galley run` writes it before it
/// starts a remote run; runs the platform starts on its own (a schedule) read it too.
pub fn bundle_key(pipeline: &str) -> String {
    format!("galley/pipelines/{pipeline}/bundle.json")
}

/// The run parameters `galley run` sets for a run on the platform's engine, which the
/// platform's pipeline definition declares and hands to each step container: the run
/// bundle's artifact key, the experiment run the steps log to, and the first step that must
/// not reuse a cached output (a drift retrain, `--no-cache`).
pub const PARAM_BUNDLE: &str = "bundle";
pub const PARAM_EXPERIMENT_RUN: &str = "experiment_run";
pub const PARAM_FORCE_FROM: &str = "force_from";
/// What started a run on the platform's engine (`schedule`, `new_data`, `drift`; empty for a
/// run started by hand), so a run a schedule or an alarm started says so in its history.
pub const PARAM_TRIGGER: &str = "trigger";

impl Trigger {
    /// The name a run parameter and a log line carry (`schedule`, `new_data`, `drift`).
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::NewData => "new_data",
            Trigger::Drift => "drift",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        [Trigger::Schedule, Trigger::NewData, Trigger::Drift].into_iter().find(|t| t.as_str() == s)
    }
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
    /// Watches `pipeline`'s triggers from this process (`galley watch`): each
    /// [`TriggerWatch::tick`] asks `probes`, and a due trigger starts a run through `launch`.
    /// Platforms whose triggers fire on the platform's side (a cloud scheduler) answer
    /// `Unsupported`.
    async fn watch_triggers(&self, pipeline: &str, probes: Probes, launch: Launch) -> Result<Box<dyn TriggerWatch>> {
        let _ = (probes, launch);
        Err(crate::Error::unsupported(format!(
            "pipeline `{pipeline}`: this platform's triggers fire on the platform itself, not from `galley watch`"
        )))
    }

    /// The body of `galley container step` (on platforms whose rules declare
    /// `PlatformRules::remote_steps`; a run started without an executor runs there): runs `step` of `run` (a run the platform's engine
    /// started) in this process through `executor`, reading its upstream steps' outputs from
    /// where this platform keeps a run's outputs and writing its own there, with the same
    /// cache and retry rules as in-process runs. Errors when the step fails.
    async fn run_step_here(&self, spec: &PipelineSpec, run: &str, step: &str, executor: std::sync::Arc<dyn StepExecutor>) -> Result<StepRun> {
        let _ = (spec, executor);
        Err(crate::Error::unsupported(format!(
            "step `{step}` of run `{run}`: this platform's orchestrator runs no steps in containers"
        )))
    }

    async fn run_training_job(&self, job: &TrainingJob, log: &dyn StepLogger) -> Result<TrainingJobResult> {
        let _ = log;
        Err(crate::Error::unsupported(format!(
            "training job `{}`: this platform's orchestrator does not run managed training jobs; use `training.compute: local`",
            job.name
        )))
    }
}

/// A training job for the platform's managed compute, in neutral terms: what to train and on
/// which rows. How the job receives them (files, channels, hyperparameters) is the platform's
/// container contract, which its provider owns (aws: SageMaker's `/opt/ml` layout, which
/// Galley's image implements).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingJob {
    /// Derived from the job's inputs, so a run restarted after a crash finds the job it
    /// started instead of paying for a second one.
    pub name: String,
    pub image: String,
    pub instance_type: Option<String>,
    /// The platform stops the job (and its bill) after this long.
    pub max_runtime_secs: u64,
    pub algorithm: crate::ml::Algorithm,
    pub params: indexmap::IndexMap<String, crate::ml::VarValue>,
    pub task: crate::ml::Task,
    pub data: TrainingData,
}

/// The training split a job learns from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainingData {
    /// The target column's name.
    pub label: String,
    /// Feature names, in the order of each row of `x`.
    pub features: Vec<String>,
    pub x: Vec<Vec<f64>>,
    pub y: Vec<f64>,
    /// The input signature the trained model must carry.
    pub signature: super::Signature,
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

/// Returns the content hash of the training data source; any string works, only a change
/// matters (the `new_data` trigger).
#[async_trait]
pub trait DataProbe: Send + Sync {
    async fn content_hash(&self) -> Result<String>;
}

/// Returns whether the monitor reports drift for the deployed model (the `drift` trigger).
#[async_trait]
pub trait DriftProbe: Send + Sync {
    async fn drifted(&self) -> Result<bool>;
}

#[async_trait]
impl<F, Fut> DataProbe for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<String>> + Send,
{
    async fn content_hash(&self) -> Result<String> {
        self().await
    }
}

#[async_trait]
impl<F, Fut> DriftProbe for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<bool>> + Send,
{
    async fn drifted(&self) -> Result<bool> {
        self().await
    }
}

/// The probes a pipeline's triggers need: `data` for `new_data`, `drift` for `drift`.
#[derive(Clone, Default)]
pub struct Probes {
    pub data: Option<std::sync::Arc<dyn DataProbe>>,
    pub drift: Option<std::sync::Arc<dyn DriftProbe>>,
}

/// Starts a run for a fired trigger (the lifecycle's run, with its experiment run and a forced
/// retrain on drift). The future is spawned, so it may wait for the run to end.
pub type Launch = std::sync::Arc<dyn Fn(Trigger) -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>;

/// The outcome of one [`TriggerWatch::tick`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Every trigger due at this tick, most urgent first.
    pub due: Vec<Trigger>,
    /// The trigger a run was launched for.
    pub fired: Option<Trigger>,
    /// The id of that run, when the orchestrator started it itself (not through a launcher).
    pub run: Option<String>,
    /// The active run the due triggers were folded into instead.
    pub coalesced_into: Option<String>,
    /// Probes that failed this tick (their trigger is skipped until the next one).
    pub probe_errors: Vec<String>,
}

/// One pipeline's triggers, evaluated by this process at times the caller gives.
#[async_trait]
pub trait TriggerWatch: Send + Sync {
    fn pipeline(&self) -> &str;
    /// One round at `now_ms`: ask the probes, decide what is due, launch at most one run.
    async fn tick(&self, now_ms: TimestampMs) -> Result<TickReport>;
    /// When the next round is worth doing (a schedule's next time), at most `poll` from `now_ms`.
    fn next_wake(&self, now_ms: TimestampMs, poll: std::time::Duration) -> TimestampMs;
}
