use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Described, TimestampMs};
use crate::table::Column;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    PendingManualApproval,
    Approved,
    Rejected,
}

/// Where a model version came from: enough to reproduce it and to explain it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lineage {
    pub run_id: Option<String>,
    /// SHA-256 of the training data as extracted.
    pub data_hash: Option<String>,
    /// Galley's version and the blueprint's hash.
    pub code_version: Option<String>,
    pub params: BTreeMap<String, String>,
}

/// The model's input contract, as MLflow's model signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signature {
    pub inputs: Vec<Column>,
    pub output: Option<Column>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewModelVersion {
    pub artifact_uri: String,
    pub metrics: BTreeMap<String, f64>,
    pub lineage: Lineage,
    pub signature: Signature,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelVersion {
    pub model: String,
    pub version: u64,
    pub artifact_uri: String,
    pub metrics: BTreeMap<String, f64>,
    pub lineage: Lineage,
    pub signature: Signature,
    pub approval: ApprovalStatus,
    pub aliases: Vec<String>,
    pub created_ms: TimestampMs,
}

#[async_trait]
pub trait ModelRegistry: Described + Send + Sync {
    /// Get-or-create a registered model (SageMaker: model package group).
    async fn create_model(&self, name: &str, description: Option<&str>) -> Result<()>;
    async fn delete_model(&self, name: &str) -> Result<()>;
    async fn model_exists(&self, name: &str) -> Result<bool>;
    /// Versions are numbered 1, 2, … per model.
    async fn register_version(&self, model: &str, version: &NewModelVersion) -> Result<ModelVersion>;
    async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion>;
    async fn list_versions(&self, model: &str) -> Result<Vec<ModelVersion>>;
    async fn set_approval(&self, model: &str, version: u64, status: ApprovalStatus) -> Result<()>;
    /// Moves `alias` to `version` (an alias names at most one version). `Unsupported` where
    /// the platform has no aliases (see the `ModelAliases` capability).
    async fn set_alias(&self, model: &str, alias: &str, version: u64) -> Result<()>;
    async fn remove_alias(&self, model: &str, alias: &str) -> Result<()>;
    async fn get_by_alias(&self, model: &str, alias: &str) -> Result<Option<ModelVersion>>;
}
