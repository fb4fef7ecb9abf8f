//! The ML problem as the blueprint states it and every crate reads it: the task, the data
//! contract (target, checks, split), the algorithm with its parameters, and the gate.
//!
//! These are plain data, shared by the blueprint language (which publishes their JSON Schema)
//! and by `galley-ml` (which trains and evaluates by them), so neither depends on the other.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::DType;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    LogisticRegression,
    DecisionTree,
    LinearRegression,
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
