use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Described, TimestampMs};
use crate::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub step: i64,
    pub timestamp_ms: TimestampMs,
}

impl Metric {
    pub fn new(key: impl Into<String>, value: f64) -> Self {
        Metric { key: key.into(), value, step: 0, timestamp_ms: super::now_ms() }
    }
    pub fn at_step(mut self, step: i64) -> Self {
        self.step = step;
        self
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub id: String,
    pub experiment: String,
    pub name: Option<String>,
    pub status: RunStatus,
    pub start_ms: TimestampMs,
    pub end_ms: Option<TimestampMs>,
    pub params: BTreeMap<String, String>,
    /// The latest value of each metric.
    pub metrics: BTreeMap<String, f64>,
    pub tags: BTreeMap<String, String>,
    /// Artifact name → URI.
    pub artifacts: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Comparison {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

impl Comparison {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Comparison::Gt => left > right,
            Comparison::Ge => left >= right,
            Comparison::Lt => left < right,
            Comparison::Le => left <= right,
            Comparison::Eq => left == right,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunQuery {
    /// All must hold: (metric, comparison, value) on the latest metric value.
    pub metrics: Vec<(String, Comparison, f64)>,
    /// All must match exactly.
    pub tags: BTreeMap<String, String>,
    /// Order by this metric, descending when `descending`.
    pub order_by: Option<String>,
    pub descending: bool,
    pub limit: Option<usize>,
}

#[async_trait]
pub trait ExperimentTracker: Described + Send + Sync {
    /// Get-or-create by name; returns the experiment's id.
    async fn create_experiment(&self, name: &str) -> Result<String>;
    /// The experiment's id, or `None` when no experiment has that name. Never creates.
    async fn get_experiment(&self, name: &str) -> Result<Option<String>>;
    async fn delete_experiment(&self, name: &str) -> Result<()>;
    async fn start_run(&self, experiment: &str, name: Option<&str>, tags: &BTreeMap<String, String>) -> Result<String>;
    async fn log_params(&self, run: &str, params: &BTreeMap<String, String>) -> Result<()>;
    /// Batched: one call may carry thousands of points.
    async fn log_metrics(&self, run: &str, metrics: &[Metric]) -> Result<()>;
    async fn set_tags(&self, run: &str, tags: &BTreeMap<String, String>) -> Result<()>;
    async fn log_artifact(&self, run: &str, name: &str, uri: &str) -> Result<()>;
    async fn end_run(&self, run: &str, status: RunStatus) -> Result<()>;
    async fn get_run(&self, run: &str) -> Result<Run>;
    /// Every point logged for one metric, in step order.
    async fn metric_history(&self, run: &str, key: &str) -> Result<Vec<Metric>>;
    async fn search_runs(&self, experiment: &str, query: &RunQuery) -> Result<Vec<Run>>;
}
