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

/// One feature's drift scores. The scores are absent while the monitor has too few
/// inferences for a verdict (see [`DriftReport::enough_data`]): a PSI over three rows is noise.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    pub psi: Option<f64>,
    pub ks: Option<f64>,
    pub drifted: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DriftReport {
    pub monitor: String,
    pub computed_ms: TimestampMs,
    /// Inferences recorded since the baseline.
    pub samples: usize,
    /// Inferences needed before any verdict (the blueprint's `drift.min_samples`).
    pub min_samples: usize,
    pub features: Vec<FeatureDrift>,
    pub prediction: Option<FeatureDrift>,
    /// True when any feature or the prediction drifted past the threshold: the retraining
    /// trigger fires on this.
    pub drifted: bool,
}

/// Whether `samples` inferences are enough to judge drift (at least one, and `min_samples`).
pub fn enough_samples(samples: usize, min_samples: usize) -> bool {
    samples > 0 && samples >= min_samples
}

/// The gauge every monitor publishes with its verdict: 1 on drift, else 0. Platforms whose
/// drift trigger fires on their own side alarm on it.
pub const DRIFT_DETECTED: &str = "galley_drift_detected";

impl DriftReport {
    pub fn drifted_features(&self) -> Vec<&str> {
        self.features.iter().filter(|f| f.drifted).map(|f| f.feature.as_str()).collect()
    }

    /// Whether there were enough inferences for a verdict.
    pub fn enough_data(&self) -> bool {
        enough_samples(self.samples, self.min_samples)
    }

    /// The verdict in words: "DRIFT on alcohol", "no drift", "not enough data (1 of 100 inferences)".
    pub fn verdict(&self) -> String {
        if !self.enough_data() {
            format!("not enough data ({} of {} inferences)", self.samples, self.min_samples)
        } else if self.drifted {
            let mut on = self.drifted_features();
            if self.prediction.as_ref().is_some_and(|p| p.drifted) {
                on.push("the prediction");
            }
            format!("DRIFT on {}", on.join(", "))
        } else {
            "no drift".to_owned()
        }
    }

    /// The gauges a monitor publishes for this report, named by Prometheus's conventions
    /// (one family per statistic, the feature as a label). Scores are published only with a
    /// verdict behind them.
    pub fn gauges(&self) -> Vec<Gauge> {
        let mut out = vec![
            Gauge::new(DRIFT_DETECTED, "1 when the monitor reports drift on a feature or on the prediction, else 0", if self.drifted { 1.0 } else { 0.0 }),
            Gauge::new("galley_drift_samples", "Inferences recorded since the baseline", self.samples as f64),
            Gauge::new("galley_drift_min_samples", "Inferences needed before the monitor gives a verdict", self.min_samples as f64),
        ];
        for f in &self.features {
            if let Some(psi) = f.psi {
                out.push(Gauge::new("galley_drift_psi", "Population stability index of a feature against its baseline", psi).label("feature", &f.feature));
            }
            if let Some(ks) = f.ks {
                out.push(Gauge::new("galley_drift_ks_statistic", "Kolmogorov-Smirnov statistic of a feature against its baseline", ks).label("feature", &f.feature));
            }
        }
        if let Some(p) = &self.prediction {
            if let Some(psi) = p.psi {
                out.push(Gauge::new("galley_prediction_drift_psi", "Population stability index of the predictions against the baseline's", psi));
            }
            if let Some(ks) = p.ks {
                out.push(Gauge::new("galley_prediction_drift_ks_statistic", "Kolmogorov-Smirnov statistic of the predictions against the baseline's", ks));
            }
        }
        out
    }
}

/// One value a monitor publishes. `name` is a metric family in Prometheus's conventions
/// (`galley_` prefix, snake case, the unit in the name); what varies goes in `labels`, never
/// in the name; `help` says what it measures. Platforms map it to their own metric service
/// (CloudWatch: the name, the labels as dimensions).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gauge {
    pub name: String,
    pub help: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

impl Gauge {
    pub fn new(name: &str, help: &str, value: f64) -> Gauge {
        Gauge { name: name.to_owned(), help: help.to_owned(), labels: Default::default(), value }
    }

    pub fn label(mut self, key: &str, value: &str) -> Gauge {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }
}

#[async_trait]
pub trait Monitor: Described + Send + Sync {
    /// Stores the training baseline: the features and the model's predictions on them.
    async fn set_baseline(&self, monitor: &str, features: &Table, predictions: &[f64]) -> Result<()>;
    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()>;
    async fn drift(&self, monitor: &str, config: &DriftConfig) -> Result<DriftReport>;
    /// Publishes named gauges (drift scores, latency) to the platform's metrics system.
    async fn publish(&self, monitor: &str, gauges: &[Gauge]) -> Result<()>;
    async fn delete(&self, monitor: &str) -> Result<()>;
}
