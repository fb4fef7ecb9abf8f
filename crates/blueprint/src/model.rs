//! The typed blueprint. `serde` reads it, `schemars` publishes its JSON Schema (`galley schema`),
//! and the validator checks raw YAML against that same schema first, so the published schema,
//! the error messages and the parser can never disagree.
//!
//! Every struct denies unknown fields: a misspelt key is an error with a "did you mean", never a
//! silently ignored setting.

use std::collections::BTreeMap;

use galley_core::PlatformId;
use galley_core::stages::DriftMethod;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use galley_core::ml::{Algorithm, ColumnRule, Data, Gate, PositiveWhen, Split, Task, VarValue};

pub const API_VERSION: &str = "galley/v1";

/// The platform of a blueprint that names none.
pub const DEFAULT_PLATFORM: PlatformId = PlatformId::from_static("local");

fn default_platform() -> PlatformId {
    DEFAULT_PLATFORM
}

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
    /// The default platform for every stage (`local` when absent); `--platform` overrides it.
    #[serde(default = "default_platform")]
    pub platform: PlatformId,
    /// Where Galley keeps its state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Values substituted for `${var.NAME}` anywhere in the blueprint.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub vars: IndexMap<String, VarValue>,
    pub data: Data,
    pub stages: Stages,
    /// Per-platform settings, `platforms.<platform>`. Each platform publishes the schema of its
    /// own section; only the platforms in use are read.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub platforms: IndexMap<String, serde_json::Value>,
    /// Named overlays (`--env prod`), merged over the blueprint before validation.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub environments: IndexMap<String, serde_json::Value>,
}

/// Where Galley keeps its state: `type: local` (a file, the default) or a backend a platform
/// offers (`type: s3` with the aws platform). Each backend publishes the schema of its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Backend {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    #[schemars(with = "IndexMap<String, serde_json::Value>")]
    pub settings: IndexMap<String, serde_json::Value>,
}

impl Backend {
    /// The type every galley has: a state file.
    pub const LOCAL: &'static str = "local";

    /// A backend field as a string.
    pub fn str(&self, field: &str) -> Option<&str> {
        self.settings.get(field).and_then(serde_json::Value::as_str)
    }

    /// The backend's fields as the type that reads them (its published schema checked them).
    pub fn settings_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let map: serde_json::Map<String, serde_json::Value> = self.settings.clone().into_iter().collect();
        serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| format!("backend `{}`: {e}", self.kind))
    }
}

/// Settings every stage shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageCommon {
    /// Run this stage on another platform than the blueprint's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformId>,
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
    /// A built-in algorithm. Give exactly one of `algorithm` and `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// Your training code instead of a built-in algorithm: the command line run in `code`
    /// (e.g. `python train.py --epochs 10`, split like a shell would, without a shell), under
    /// SageMaker's script-mode contract (`SM_MODEL_DIR`, `SM_CHANNEL_TRAIN`, `SM_HPS`, …), so a
    /// script written for SageMaker runs unchanged. It writes `model.onnx` (or an MLflow model
    /// with the ONNX flavor) to `SM_MODEL_DIR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The directory holding the training code, relative to the blueprint file (default: the
    /// blueprint's own directory). Its content is part of what decides a cached model is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A pip requirements file, relative to the blueprint file: the command runs in a virtualenv
    /// uv builds from it, cached by the file's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requirements: Option<String>,
    /// Algorithm parameters, e.g. `max_iterations`, `max_depth`; for `command:`, the
    /// hyperparameters the script reads from `SM_HPS`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, VarValue>,
    #[serde(default)]
    pub compute: Compute,
    /// Container image for `compute: managed`: it is run with SageMaker's training contract
    /// (`train` argument, `/opt/ml`), as Galley's own image does (`galley container train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The training is stopped after this long, e.g. `2h`: by the platform for `compute: managed`
    /// (default `24h`, SageMaker's own ceiling for a job without one), by Galley for a local
    /// `command:` (default: no limit).
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
    /// Instances per variant, at least.
    pub min: u32,
    /// Instances per variant, at most (each is billed while it runs).
    pub max: u32,
    /// Requests per instance per minute the platform adds or removes instances to hold.
    #[serde(default = "default_requests_per_minute")]
    pub requests_per_minute: f64,
}

/// SageMaker's own worked example of a target (`SageMakerVariantInvocationsPerInstance` 70):
/// a start, not a measurement. The plan shows it; a load test tells the right value.
pub const DEFAULT_REQUESTS_PER_MINUTE: f64 = 70.0;

fn default_requests_per_minute() -> f64 {
    DEFAULT_REQUESTS_PER_MINUTE
}

impl Autoscaling {
    /// The provider-neutral scaling every variant of the endpoint gets.
    pub fn scaling(&self) -> galley_core::stages::Scaling {
        galley_core::stages::Scaling { min_instances: self.min, max_instances: self.max, requests_per_minute: self.requests_per_minute }
    }
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

impl Blueprint {
    /// The platform a stage runs on: its own override, else the blueprint's.
    pub fn stage_platform(&self, stage: galley_core::Stage) -> PlatformId {
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

    /// `platforms.<platform>` read as the platform's settings type; `Ok(None)` when the
    /// section is absent. The platform's published schema has checked it during validation.
    pub fn platform_settings<T: serde::de::DeserializeOwned>(&self, platform: PlatformId) -> Result<Option<T>, String> {
        match self.platforms.get(platform.as_str()) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| format!("platforms.{platform}: {e}")),
        }
    }

    /// Every platform the blueprint uses: its own and each declared stage's, sorted.
    pub fn platforms_used(&self) -> Vec<PlatformId> {
        let mut used: Vec<PlatformId> = self.declared_stages().into_iter().map(|s| self.stage_platform(s)).collect();
        used.push(self.platform);
        used.sort();
        used.dedup();
        used
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
