//! Monitoring on aws: Galley computes drift itself (PSI and KS from `galley-ml`) from a
//! training baseline and the recorded inferences, both kept as JSON objects in the artifact
//! bucket under `galley/monitoring/<monitor>/`, and publishes gauges to CloudWatch
//! (PutMetricData, namespace `Galley`, dimension `Monitor`), where the blueprint's alarms
//! (PutMetricAlarm) watch them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricDatum, StandardUnit, Statistic};
use bytes::Bytes;
use galley_core::stages::{ArtifactKey, ArtifactStore, ArtifactStoreExt, Described, DriftConfig, DriftReport, Gauge, Monitor, now_ms};
use galley_core::table::Column;
use galley_core::{Error, ErrorKind, Result, Stage, Table, Value};
use serde::{Deserialize, Serialize};

use crate::artifacts::S3Artifacts;
use crate::error::sdk;

pub const NAMESPACE: &str = "Galley";
const ROOT: &str = "galley/monitoring";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Batch {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    predictions: Vec<f64>,
}

#[derive(Clone, Debug)]
pub struct AwsMonitor {
    store: S3Artifacts,
    cloudwatch: aws_sdk_cloudwatch::Client,
}

/// The CloudWatch name of the alarm Galley keeps for `metric` of `monitor`.
pub fn alarm_name(monitor: &str, metric: &str) -> String {
    format!("galley-{monitor}-{metric}")
}

impl AwsMonitor {
    pub fn new(store: S3Artifacts, cloudwatch: aws_sdk_cloudwatch::Client) -> Self {
        AwsMonitor { store, cloudwatch }
    }

    fn prefix(monitor: &str) -> Result<String> {
        let ok = !monitor.is_empty()
            && monitor.len() <= 200
            && monitor.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !monitor.starts_with('.');
        if !ok {
            return Err(Error::invalid(format!(
                "monitor name `{monitor}` is not valid: use letters, digits, `-`, `_` and `.` (not first)"
            )));
        }
        Ok(format!("{ROOT}/{monitor}"))
    }

    async fn read_batch(&self, key: &str) -> Result<Batch> {
        let bytes = self.store.get_bytes(&ArtifactKey::new(key)?).await?;
        serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(format!("{}: not a galley monitoring batch ({e})", self.store.uri(key))))
    }

    /// Creates or updates one alarm per (metric, threshold): above the threshold for one
    /// 5-minute period.
    pub async fn put_alarm(&self, monitor: &str, metric: &str, above: f64, owner: &str) -> Result<()> {
        let name = alarm_name(monitor, metric);
        self.cloudwatch
            .put_metric_alarm()
            .alarm_name(&name)
            .alarm_description(format!("galley: {metric} of `{monitor}` above {above} ({owner})"))
            .namespace(NAMESPACE)
            .metric_name(metric)
            .dimensions(Dimension::builder().name("Monitor").value(monitor).build())
            .statistic(Statistic::Maximum)
            .period(300)
            .evaluation_periods(1)
            .threshold(above)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .treat_missing_data("notBreaching")
            .tags(aws_sdk_cloudwatch::types::Tag::builder().key(galley_core::resource::OwnerTag::KEY).value(owner).build())
            .send()
            .await
            .map_err(sdk(Stage::Monitoring, "PutMetricAlarm", &name))?;
        Ok(())
    }

    /// The names of `names` that exist as alarms.
    pub async fn existing_alarms(&self, names: &[String]) -> Result<Vec<String>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .cloudwatch
            .describe_alarms()
            .set_alarm_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(sdk(Stage::Monitoring, "DescribeAlarms", &names.join(",")))?;
        Ok(out.metric_alarms().iter().filter_map(|a| a.alarm_name().map(str::to_owned)).collect())
    }

    pub async fn delete_alarms(&self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        self.cloudwatch
            .delete_alarms()
            .set_alarm_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(sdk(Stage::Monitoring, "DeleteAlarms", &names.join(",")))?;
        Ok(())
    }
}

fn check_batch(what: &str, monitor: &str, t: &Table, predictions: &[f64]) -> Result<()> {
    if t.len() != predictions.len() {
        return Err(Error::invalid(format!(
            "monitor `{monitor}`: {what} has {} rows but {} predictions",
            t.len(),
            predictions.len()
        )));
    }
    Ok(())
}

/// A CloudWatch metric name from a free-form gauge name (CloudWatch allows 1–255 printable
/// ASCII characters; Galley keeps to a conservative set).
pub fn metric_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/') { c } else { '_' })
        .take(255)
        .collect();
    if cleaned.is_empty() { "unnamed".into() } else { cleaned }
}

impl Described for AwsMonitor {
    fn capabilities(&self) -> galley_core::Capabilities {
        crate::platform::capabilities()
    }
}

#[async_trait]
impl Monitor for AwsMonitor {
    async fn set_baseline(&self, monitor: &str, features: &Table, predictions: &[f64]) -> Result<()> {
        let prefix = Self::prefix(monitor)?;
        check_batch("the baseline", monitor, features, predictions)?;
        let batch = Batch { columns: features.columns.clone(), rows: features.rows.clone(), predictions: predictions.to_vec() };
        self.store.put_bytes(&ArtifactKey::new(format!("{prefix}/baseline.json"))?, Bytes::from(serde_json::to_vec(&batch)?)).await?;
        Ok(())
    }

    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()> {
        let prefix = Self::prefix(monitor)?;
        check_batch("the recorded batch", monitor, inputs, predictions)?;
        let batch = Batch { columns: inputs.columns.clone(), rows: inputs.rows.clone(), predictions: predictions.to_vec() };
        // Time-ordered, unique keys: concurrent recorders never overwrite each other.
        let key = format!("{prefix}/inferences/{:013}-{}.json", now_ms(), uuid::Uuid::new_v4().simple());
        self.store.put_bytes(&ArtifactKey::new(key)?, Bytes::from(serde_json::to_vec(&batch)?)).await?;
        Ok(())
    }

    async fn drift(&self, monitor: &str, config: &DriftConfig) -> Result<DriftReport> {
        let prefix = Self::prefix(monitor)?;
        let baseline = match self.read_batch(&format!("{prefix}/baseline.json")).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "monitor `{monitor}` has no baseline in {}; `galley run` sets it after training",
                    self.store.uri(&prefix)
                )));
            }
            Err(e) => return Err(e),
        };
        let mut current: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut current_predictions = Vec::new();
        let mut samples = 0usize;
        for meta in self.store.list(&format!("{prefix}/inferences/")).await? {
            let batch = self.read_batch(&meta.key).await?;
            samples += batch.rows.len();
            current_predictions.extend(batch.predictions);
            for (j, c) in batch.columns.iter().enumerate() {
                let col = current.entry(c.name.clone()).or_default();
                col.extend(batch.rows.iter().filter_map(|r| r.get(j).and_then(Value::as_f64)));
            }
        }
        let baseline_table = Table { columns: baseline.columns, rows: baseline.rows };
        Ok(galley_ml::drift_report(monitor, &baseline_table, &baseline.predictions, &current, &current_predictions, samples, config))
    }

    /// Each gauge as a CloudWatch metric of the same name, with the monitor and the gauge's
    /// labels as dimensions (CloudWatch's equivalent of Prometheus labels).
    async fn publish(&self, monitor: &str, gauges: &[Gauge]) -> Result<()> {
        Self::prefix(monitor)?;
        let data: Vec<MetricDatum> = gauges
            .iter()
            .filter(|g| g.value.is_finite())
            .map(|g| {
                let mut datum = MetricDatum::builder()
                    .metric_name(metric_name(&g.name))
                    .dimensions(Dimension::builder().name("Monitor").value(monitor).build())
                    .value(g.value)
                    .unit(StandardUnit::None);
                for (k, v) in &g.labels {
                    datum = datum.dimensions(Dimension::builder().name(k).value(v).build());
                }
                datum.build()
            })
            .collect();
        // PutMetricData takes at most 1,000 data points per call.
        for chunk in data.chunks(500) {
            self.cloudwatch
                .put_metric_data()
                .namespace(NAMESPACE)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(sdk(Stage::Monitoring, "PutMetricData", monitor))?;
        }
        Ok(())
    }

    async fn delete(&self, monitor: &str) -> Result<()> {
        let prefix = Self::prefix(monitor)?;
        for meta in self.store.list(&format!("{prefix}/")).await? {
            self.store.delete(&ArtifactKey::new(meta.key)?).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_names_are_cleaned() {
        assert_eq!(super::metric_name("drift psi{x}"), "drift_psi_x_");
        assert_eq!(super::metric_name(""), "unnamed");
        assert_eq!(super::alarm_name("wine", "latency_p99"), "galley-wine-latency_p99");
    }
}
