use async_trait::async_trait;

use super::{Described, TimestampMs};
use crate::table::Table;
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriftMethod {
    /// Population stability index over baseline deciles.
    Psi,
    /// Two-sample Kolmogorov–Smirnov statistic.
    Ks,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftConfig {
    pub method: DriftMethod,
    /// Past this score a feature counts as drifted.
    pub threshold: f64,
    /// Fewer recorded inferences than this: no verdict.
    pub min_samples: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub psi: f64,
    pub ks: f64,
    pub drifted: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftReport {
    pub monitor: String,
    pub computed_ms: TimestampMs,
    pub samples: usize,
    pub features: Vec<FeatureDrift>,
    pub prediction: Option<FeatureDrift>,
    /// True when any feature or the prediction drifted past the threshold: the retraining
    /// trigger fires on this.
    pub drifted: bool,
}

impl DriftReport {
    pub fn drifted_features(&self) -> Vec<&str> {
        self.features.iter().filter(|f| f.drifted).map(|f| f.feature.as_str()).collect()
    }
}

#[async_trait]
pub trait Monitor: Described + Send + Sync {
    /// Stores the training baseline: the features and the model's predictions on them.
    async fn set_baseline(&self, monitor: &str, features: &Table, predictions: &[f64]) -> Result<()>;
    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()>;
    async fn drift(&self, monitor: &str, config: &DriftConfig) -> Result<DriftReport>;
    /// Publishes named gauges (drift scores, latency) to the platform's metrics system.
    async fn publish(&self, monitor: &str, metrics: &[(String, f64)]) -> Result<()>;
    async fn delete(&self, monitor: &str) -> Result<()>;
}
