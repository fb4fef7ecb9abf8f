//! Monitoring on aws: Galley computes drift itself (PSI and KS from `galley-ml`) from a
//! training baseline kept in the artifact bucket under `galley/monitoring/<monitor>/`, against
//! the traffic since that baseline was set: what SageMaker captured from the endpoint of the
//! same name (data capture, [`crate::capture`]) and any inferences recorded through
//! `Monitor::record`. It publishes gauges to CloudWatch (PutMetricData, namespace `Galley`,
//! dimension `Monitor`), where the blueprint's alarms (PutMetricAlarm) watch them.
//!
//! Memory stays bounded however much traffic there was: rows are read a capture file at a
//! time and kept by reservoir sampling (at most [`SAMPLE_ROWS`], seeded, so the same traffic
//! gives the same report); the sample count reported is every row seen.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricDatum, StandardUnit, Statistic};
use bytes::Bytes;
use galley_core::stages::{
    ArtifactKey, ArtifactStore, ArtifactStoreExt, Described, DriftConfig, DriftReport, Gauge, Monitor, TimestampMs, now_ms,
};
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
    /// When the baseline was set: traffic before it was served by another model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    set_ms: Option<TimestampMs>,
}

/// The most rows drift is computed over; past it, a uniform sample of everything seen.
pub const SAMPLE_ROWS: usize = 50_000;

/// One sampled row: (column id, value) pairs, and the prediction it got if known.
type SampledRow = (Vec<(usize, f64)>, Option<f64>);

/// Algorithm R over rows (named values) and their predictions.
struct Reservoir {
    seen: usize,
    rows: Vec<SampledRow>,
    names: Vec<String>,
    rng: fastrand::Rng,
}

impl Reservoir {
    fn new() -> Self {
        Reservoir { seen: 0, rows: Vec::new(), names: Vec::new(), rng: fastrand::Rng::with_seed(0x6a11e7) }
    }

    fn column(&mut self, name: &str) -> usize {
        match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_owned());
                self.names.len() - 1
            }
        }
    }

    /// Adds one batch: `rows[i]` holds the values of `columns`, `predictions` is empty or one per row.
    fn add(&mut self, columns: &[String], rows: impl IntoIterator<Item = Vec<f64>>, predictions: &[f64]) {
        let ids: Vec<usize> = columns.iter().map(|c| self.column(c)).collect();
        for (i, row) in rows.into_iter().enumerate() {
            self.seen += 1;
            let slot = if self.rows.len() < SAMPLE_ROWS { None } else { Some(self.rng.usize(..self.seen)) };
            if slot.is_some_and(|s| s >= SAMPLE_ROWS) {
                continue;
            }
            let values = ids.iter().zip(row).filter(|(_, v)| v.is_finite()).map(|(id, v)| (*id, v)).collect();
            let item = (values, predictions.get(i).copied());
            match slot {
                None => self.rows.push(item),
                Some(s) => self.rows[s] = item,
            }
        }
    }

    fn into_columns(self) -> (BTreeMap<String, Vec<f64>>, Vec<f64>, usize) {
        let mut current: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut predictions = Vec::new();
        for (values, prediction) in self.rows {
            for (id, v) in values {
                current.entry(self.names[id].clone()).or_default().push(v);
            }
            predictions.extend(prediction);
        }
        (current, predictions, self.seen)
    }
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

    /// The traffic SageMaker captured from the endpoint named like the monitor since `since_ms`,
    /// a file at a time.
    async fn add_captured(&self, endpoint: &str, since_ms: TimestampMs, baseline_columns: &[String], sample: &mut Reservoir) -> Result<()> {
        for key in self.store.keys(&crate::capture::endpoint_prefix(endpoint)).await? {
            if !key.ends_with(".jsonl") || !crate::capture::may_hold_records_since(&key, since_ms) {
                continue;
            }
            let bytes = self.store.get_bytes(&ArtifactKey::new(key.as_str())?).await?;
            for (n, line) in String::from_utf8_lossy(&bytes).lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let c = crate::capture::decode_line(line, baseline_columns)
                    .map_err(|e| Error::corrupt(format!("{} line {}: {}", self.store.uri(&key), n + 1, e.message())))?;
                if c.at_ms >= since_ms {
                    let predictions = if c.predictions.len() == c.rows.len() { c.predictions } else { Vec::new() };
                    sample.add(&c.columns, c.rows, &predictions);
                }
            }
        }
        Ok(())
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
        let batch =
            Batch { columns: features.columns.clone(), rows: features.rows.clone(), predictions: predictions.to_vec(), set_ms: Some(now_ms()) };
        self.store.put_bytes(&ArtifactKey::new(format!("{prefix}/baseline.json"))?, Bytes::from(serde_json::to_vec(&batch)?)).await?;
        Ok(())
    }

    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()> {
        let prefix = Self::prefix(monitor)?;
        check_batch("the recorded batch", monitor, inputs, predictions)?;
        let batch = Batch { columns: inputs.columns.clone(), rows: inputs.rows.clone(), predictions: predictions.to_vec(), set_ms: None };
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
        let mut sample = Reservoir::new();
        for key in self.store.keys(&format!("{prefix}/inferences/")).await? {
            let batch = self.read_batch(&key).await?;
            let columns: Vec<String> = batch.columns.iter().map(|c| c.name.clone()).collect();
            let rows = batch.rows.iter().map(|r| r.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect());
            sample.add(&columns, rows, &batch.predictions);
        }
        let baseline_columns: Vec<String> = baseline.columns.iter().map(|c| c.name.clone()).collect();
        self.add_captured(monitor, baseline.set_ms.unwrap_or(0), &baseline_columns, &mut sample).await?;
        let (current, current_predictions, samples) = sample.into_columns();
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
