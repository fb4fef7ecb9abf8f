//! The typed blueprint. `serde` reads it, `schemars` publishes its JSON Schema (`galley schema`),
//! and the validator checks raw YAML against that same schema first, so the published schema,
//! the error messages and the parser can never disagree.
//!
//! Every struct denies unknown fields: a misspelt key is an error with a "did you mean", never a
//! silently ignored setting.

use std::collections::BTreeMap;

use galley_core::stages::DriftMethod;
use galley_core::{DType, PlatformKind};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "galley/v1";

/// A Galley blueprint: one ML system's whole MLOps stack and lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Blueprint {
    /// Always `galley/v1`.
    pub api_version: String,
    /// The system's name: lower-case letters, digits and `-`, 1 to 40 characters. Prefixes
    /// every physical resource name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The default platform for every stage; `--platform` overrides it.
    #[serde(default)]
    pub platform: PlatformKind,
    /// Where Galley keeps its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Values substituted for `${var.NAME}` anywhere in the blueprint.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, VarValue>,
    pub data: Data,
    pub stages: Stages,
    /// Per-platform settings; only the platforms in use are read.
    #[serde(default)]
    pub platforms: Platforms,
    /// Named overlays (`--env prod`), merged over the blueprint before validation.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub environments: IndexMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum VarValue {
    String(String),
    Number(f64),
    Bool(bool),
}

impl std::fmt::Display for VarValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarValue::String(s) => f.write_str(s),
            VarValue::Number(n) => write!(f, "{n}"),
            VarValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// State backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Backend {
    /// A local file (default `.galley/state.json`).
    Local {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// An S3 object, locked with a conditional write.
    S3 {
        bucket: String,
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    Gcs { bucket: String, key: String },
    Azblob { account: String, container: String, key: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    Classification,
    Regression,
}

/// The training data and how to read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// `builtin:winequality`, `builtin:iris`, `builtin:diabetes` (shipped with Galley, nothing is
    /// downloaded), or the path of a CSV file relative to the blueprint.
    pub source: String,
    /// The column to predict.
    pub target: String,
    #[serde(default)]
    pub task: Task,
    /// Turns a numeric target into a binary label (1 when the value is at least this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_when: Option<PositiveWhen>,
    /// Checks run on the extracted data before anything trains on it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub schema: IndexMap<String, ColumnRule>,
    #[serde(default)]
    pub split: Split,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PositiveWhen {
    pub at_least: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<DType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default)]
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Share of rows held out for evaluation, in (0, 1).
    #[serde(default = "default_test_size")]
    pub test_size: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_test_size() -> f64 {
    0.2
}
fn default_seed() -> u64 {
    42
}

impl Default for Split {
    fn default() -> Self {
        Split { test_size: default_test_size(), seed: default_seed() }
    }
}

/// Settings every stage shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCommon {
    /// Run this stage on another platform than the blueprint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformKind>,
    /// Refuse to destroy or replace this stage's resources unless `--force`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protect: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stages {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<FeaturesStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiments: Option<ExperimentsStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ServingStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringStage>,
}

/// Artifact storage: an S3 bucket, a GCS bucket, an Azure container or a local directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// Bucket / container / directory name: 3–63 lower-case letters, digits and `-`.
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<bool>,
}

/// A feature group with an offline and (optionally) an online store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturesStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// The feature group's name.
    pub group: String,
    /// The entity key column; `row_id` numbers the rows when the data has no key.
    #[serde(default = "default_entity")]
    pub entity: String,
    /// Feature columns; empty means every column but the target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Keep an online store for low-latency reads.
    #[serde(default = "yes")]
    pub online: bool,
    /// How long an online value stays valid, e.g. `30d`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

fn default_entity() -> String {
    "row_id".into()
}
fn yes() -> bool {
    true
}

/// Experiment tracking: every training run logs its params, metrics and lineage here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentsStage {
    #[serde(flatten)]
    pub common: StageCommon,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetrainTrigger {
    Schedule,
    NewData,
    Drift,
}

/// The retraining pipeline: schedule, triggers, caching and retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineStage {
    #[serde(flatten)]
    pub common: StageCommon,
    pub name: String,
    /// Five-field cron expression, e.g. `0 3 * * *`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retrain_on: Vec<RetrainTrigger>,
    /// Reuse a step's output when its inputs are unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
    /// Retries per step for retryable failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    LogisticRegression,
    DecisionTree,
    LinearRegression,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// Train in Galley's process.
    #[default]
    Local,
    /// Submit a training job to the platform (SageMaker, Vertex AI, Azure ML).
    Managed,
}

/// How and where the model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainingStage {
    #[serde(flatten)]
    pub common: StageCommon,
    pub algorithm: Algorithm,
    /// Algorithm parameters, e.g. `max_iterations`, `max_depth`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, VarValue>,
    #[serde(default)]
    pub compute: Compute,
    /// Container image for `compute: managed`: it is run with SageMaker's training contract
    /// (`train` argument, `/opt/ml`), as Galley's own image does (`galley container train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// For `compute: managed`: the platform stops the job after this long, e.g. `2h`
    /// (default `24h`, SageMaker's own ceiling for a job without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpu: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// Move the `champion` alias (MLflow, Vertex AI, local).
    Alias,
    /// Set the version's approval status to Approved (SageMaker).
    Approval,
    /// Move the version to the Production stage (Azure ML, MLflow stages).
    Stage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// The evaluation metric the gate reads: accuracy, f1, roc_auc, rmse, r2.
    pub metric: String,
    /// Absolute floor (for metrics where higher is better).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    /// Absolute ceiling (for errors such as rmse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    /// The candidate must beat the current champion by at least this margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_champion_by: Option<f64>,
}

/// The model registry: the quality gate and how a passing version is promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// The registered model's name.
    pub model: String,
    pub gate: Gate,
    /// How a version that passes the gate is promoted; by default the platform's native way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    AllAtOnce,
    Canary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub strategy: Strategy,
    /// For `canary`: the new version's share in percent, 1–99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The environment variable that holds the bearer token. The token itself never goes in
    /// a blueprint, a plan or the state.
    pub token_env: String,
}

/// The prediction endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingStage {
    #[serde(flatten)]
    pub common: StageCommon,
    /// Endpoint name: letters, digits and `-`, 1–63 characters.
    pub endpoint: String,
    /// The registered model to serve; usually `${stages.registry.outputs.model}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Address the local server binds (loopback by default). Any other address needs `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Port for the local server; 0 or absent picks a free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Autoscaling {
    pub min: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    #[serde(default = "default_method")]
    pub method: DriftMethod,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// No verdict before this many recorded predictions.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
}

fn default_method() -> DriftMethod {
    DriftMethod::Psi
}
fn default_threshold() -> f64 {
    0.2
}
fn default_min_samples() -> usize {
    100
}

impl Default for DriftSettings {
    fn default() -> Self {
        DriftSettings { method: default_method(), threshold: default_threshold(), min_samples: default_min_samples() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceMetric {
    LatencyP50,
    LatencyP99,
    ErrorRate,
    RequestRate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    pub metric: String,
    pub above: f64,
}

/// Drift detection and service metrics for the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonitoringStage {
    #[serde(flatten)]
    pub common: StageCommon,
    #[serde(default)]
    pub drift: DriftSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<ServiceMetric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<Alarm>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Platforms {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onprem: Option<OnpremSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// Where the local platform keeps its files, relative to the blueprint (default `.galley/local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnpremSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feast_repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub airflow_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    pub region: String,
    /// Override the service endpoint (emulators such as moto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Credentials profile; otherwise the standard chain (env, SSO, IMDS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The IAM role SageMaker assumes for training and serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcpSettings {
    pub project: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AzureSettings {
    pub subscription: String,
    pub resource_group: String,
    pub workspace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
}

impl Blueprint {
    /// The platform a stage runs on: its own override, else the blueprint's.
    pub fn stage_platform(&self, stage: galley_core::Stage) -> PlatformKind {
        use galley_core::Stage as S;
        let common = match stage {
            S::Artifacts => self.stages.artifacts.as_ref().map(|s| &s.common),
            S::Features => self.stages.features.as_ref().map(|s| &s.common),
            S::Experiments => self.stages.experiments.as_ref().map(|s| &s.common),
            S::Pipeline => self.stages.pipeline.as_ref().map(|s| &s.common),
            S::Training => self.stages.training.as_ref().map(|s| &s.common),
            S::Registry => self.stages.registry.as_ref().map(|s| &s.common),
            S::Serving => self.stages.serving.as_ref().map(|s| &s.common),
            S::Monitoring => self.stages.monitoring.as_ref().map(|s| &s.common),
        };
        common.and_then(|c| c.platform).unwrap_or(self.platform)
    }

    /// The stages the blueprint declares, in lifecycle order.
    pub fn declared_stages(&self) -> Vec<galley_core::Stage> {
        use galley_core::Stage as S;
        let s = &self.stages;
        [
            (S::Artifacts, s.artifacts.is_some()),
            (S::Features, s.features.is_some()),
            (S::Experiments, s.experiments.is_some()),
            (S::Pipeline, s.pipeline.is_some()),
            (S::Training, s.training.is_some()),
            (S::Registry, s.registry.is_some()),
            (S::Serving, s.serving.is_some()),
            (S::Monitoring, s.monitoring.is_some()),
        ]
        .into_iter()
        .filter_map(|(st, present)| present.then_some(st))
        .collect()
    }
}

/// Parameters as strings, for lineage and experiment params.
pub fn params_as_strings(params: &IndexMap<String, VarValue>) -> BTreeMap<String, String> {
    params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect()
}
