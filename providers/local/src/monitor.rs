//! Drift monitoring on the local platform.
//!
//! Everything lives under `<root>/monitors/<name>/`:
//! - `baseline.json` — the training features and the model's predictions on them;
//! - `inferences.jsonl` — one JSON line per scored batch, appended by [`LocalMonitor::record`]
//!   and by the model server's background recorder (the same [`InferenceLine`] format; each
//!   batch is one `write` on an `O_APPEND` file, so the two writers never interleave lines);
//! - `metrics.json` / `metrics.prom` — gauges from [`LocalMonitor::publish`], the second in
//!   Prometheus text format, which the model server's `/metrics` appends to its own.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use galley_core::stages::{
    Described, DriftConfig, DriftMethod, DriftReport, FeatureDrift, Monitor, now_ms,
};
use galley_core::table::{Column, DType, Table, Value};
use galley_core::{Error, PlatformKind, Result, Stage};
use serde::{Deserialize, Serialize};

use crate::serving::config::write_atomic;

pub const BASELINE_FILE: &str = "baseline.json";
pub const INFERENCES_FILE: &str = "inferences.jsonl";
/// The previous inferences file: `inferences.jsonl` is rotated here past
/// [`MAX_INFERENCE_FILE_BYTES`], so recording never fills the disk.
pub const INFERENCES_ROTATED: &str = "inferences.1.jsonl";
pub const MAX_INFERENCE_FILE_BYTES: u64 = 64 * 1024 * 1024;
pub const METRICS_JSON: &str = "metrics.json";
pub const METRICS_PROM: &str = "metrics.prom";

/// Drift is computed over at most this many of the most recent recorded rows.
pub const MAX_WINDOW_ROWS: usize = 200_000;

/// One recorded batch, as written (borrowing) by the server and `record`.
#[derive(Debug, Serialize)]
pub struct InferenceLineRef<'a, R: Serialize> {
    pub ts_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    pub columns: &'a [String],
    pub rows: &'a R,
    pub predictions: &'a [f64],
}

/// One recorded batch, as read back.
#[derive(Debug, Deserialize)]
pub struct InferenceLine {
    pub ts_ms: i64,
    #[serde(default)]
    pub variant: Option<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// `null` where a prediction was not finite.
    pub predictions: Vec<Option<f64>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    predictions: Vec<f64>,
}

/// Appends `bytes` (whole lines) to `path` with one `write` on an `O_APPEND` file, rotating
/// the file to [`INFERENCES_ROTATED`] (replacing the older one) once it is past
/// [`MAX_INFERENCE_FILE_BYTES`].
pub fn append_lines(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(bytes)?;
    if file.metadata()?.len() > MAX_INFERENCE_FILE_BYTES {
        std::fs::rename(path, path.with_file_name(INFERENCES_ROTATED))?;
    }
    Ok(())
}

/// Serializes one batch as a JSON line into `out`.
pub fn encode_line<R: Serialize>(out: &mut Vec<u8>, line: &InferenceLineRef<'_, R>) {
    // Serializing plain numbers and strings into a Vec cannot fail.
    if serde_json::to_writer(&mut *out, line).is_ok() {
        out.push(b'\n');
    }
}

#[derive(Default)]
struct Recorded {
    columns: BTreeMap<String, Vec<f64>>,
    predictions: Vec<f64>,
    samples: usize,
}

pub struct LocalMonitor {
    /// Each monitor is a directory below this one.
    root: PathBuf,
}

impl LocalMonitor {
    /// Opens (creating it if needed) the directory holding one sub-directory per monitor.
    pub fn open(monitors: impl Into<PathBuf>) -> Result<LocalMonitor> {
        let root = monitors.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::from(e).resource(root.display().to_string()))?;
        Ok(LocalMonitor { root })
    }

    /// The directory of monitor `name` (the model server records there when its endpoint's
    /// monitor has the same name).
    pub fn monitor_dir(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    fn err(e: Error, op: &str, name: &str) -> Error {
        e.platform(PlatformKind::Local)
            .stage(Stage::Monitoring)
            .operation(op.to_owned())
            .resource(name.to_owned())
    }

    fn read_baseline(dir: &Path, name: &str) -> Result<Baseline> {
        let path = dir.join(BASELINE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "monitor `{name}` has no baseline ({} is missing); set a baseline before computing drift",
                    path.display()
                )));
            }
            Err(e) => return Err(Error::from(e).resource(path.display().to_string())),
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(format!(
                "baseline {} is damaged: {e}; set the baseline again",
                path.display()
            ))
        })
    }

    /// Reads the most recent recorded rows (at most [`MAX_WINDOW_ROWS`]) as numeric values by
    /// feature name, the predictions, and the number of rows.
    fn read_inferences(dir: &Path) -> Result<Recorded> {
        let mut batches = std::collections::VecDeque::new();
        let mut rows_held = 0usize;
        // Oldest first, so the window keeps the most recent rows.
        for path in [dir.join(INFERENCES_ROTATED), dir.join(INFERENCES_FILE)] {
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::from(e).resource(path.display().to_string())),
            };
            for line in std::io::BufReader::new(file).lines() {
                let line = line.map_err(|e| Error::from(e).resource(path.display().to_string()))?;
                // A line torn by a crash mid-write is skipped rather than failing the report.
                let Ok(batch) = serde_json::from_str::<InferenceLine>(&line) else {
                    continue;
                };
                rows_held += batch.rows.len();
                batches.push_back(batch);
                while rows_held > MAX_WINDOW_ROWS {
                    match batches.pop_front() {
                        Some(old) => rows_held -= old.rows.len(),
                        None => break,
                    }
                }
            }
        }
        let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut predictions = Vec::with_capacity(rows_held);
        for batch in &batches {
            for (j, name) in batch.columns.iter().enumerate() {
                let values = columns.entry(name.clone()).or_default();
                values.extend(
                    batch
                        .rows
                        .iter()
                        .filter_map(|r| r.get(j).and_then(Value::as_f64)),
                );
            }
            predictions.extend(batch.predictions.iter().flatten().copied());
        }
        Ok(Recorded {
            columns,
            predictions,
            samples: rows_held,
        })
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "monitor name `{name}` is not valid: use letters, digits, `-`, `_` and `.` (not first), at most 128"
        )))
    }
}

/// One feature's scores and verdict.
fn score(
    feature: &str,
    baseline: &[f64],
    current: &[f64],
    config: &DriftConfig,
    enough: bool,
) -> FeatureDrift {
    if baseline.is_empty() || current.is_empty() {
        return FeatureDrift {
            feature: feature.to_owned(),
            psi: 0.0,
            ks: 0.0,
            drifted: false,
        };
    }
    let psi = galley_ml::psi(baseline, current);
    let ks = galley_ml::ks(baseline, current);
    let s = match config.method {
        DriftMethod::Psi => psi,
        DriftMethod::Ks => ks,
    };
    FeatureDrift {
        feature: feature.to_owned(),
        psi,
        ks,
        drifted: enough && s.is_finite() && s > config.threshold,
    }
}

/// A Prometheus metric name from a free-form gauge name.
fn metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 7);
    out.push_str("galley_");
    for c in name.chars() {
        out.push(if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        });
    }
    out
}

fn render_prom(monitor: &str, gauges: &BTreeMap<String, f64>) -> String {
    let label = crate::serving::metrics::escape(monitor);
    let mut out = String::new();
    for (name, value) in gauges {
        let metric = metric_name(name);
        let value = if value.is_finite() {
            value.to_string()
        } else if value.is_nan() {
            "NaN".into()
        } else if *value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
        out.push_str(&format!(
            "# TYPE {metric} gauge\n{metric}{{monitor=\"{label}\"}} {value}\n"
        ));
    }
    out
}

impl Described for LocalMonitor {
    fn platform(&self) -> PlatformKind {
        PlatformKind::Local
    }
}

#[async_trait]
impl Monitor for LocalMonitor {
    async fn set_baseline(
        &self,
        monitor: &str,
        features: &Table,
        predictions: &[f64],
    ) -> Result<()> {
        let dir = self.monitor_dir(monitor)?;
        if predictions.len() != features.len() {
            return Err(Self::err(
                Error::invalid(format!(
                    "baseline has {} rows but {} predictions; give one prediction per row",
                    features.len(),
                    predictions.len()
                )),
                "set_baseline",
                monitor,
            ));
        }
        let baseline = Baseline {
            columns: features.columns.clone(),
            rows: features.rows.clone(),
            predictions: predictions.to_vec(),
        };
        let bytes = serde_json::to_vec(&baseline).map_err(|e| Error::internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || write_atomic(&dir.join(BASELINE_FILE), &bytes))
            .await
            .map_err(|e| Error::internal(e.to_string()))?
            .map_err(|e| Self::err(e, "set_baseline", monitor))
    }

    async fn record(&self, monitor: &str, inputs: &Table, predictions: &[f64]) -> Result<()> {
        let dir = self.monitor_dir(monitor)?;
        if predictions.len() != inputs.len() {
            return Err(Self::err(
                Error::invalid(format!(
                    "{} input rows but {} predictions; give one prediction per row",
                    inputs.len(),
                    predictions.len()
                )),
                "record",
                monitor,
            ));
        }
        let columns: Vec<String> = inputs.columns.iter().map(|c| c.name.clone()).collect();
        let mut buf = Vec::new();
        encode_line(
            &mut buf,
            &InferenceLineRef {
                ts_ms: now_ms(),
                variant: None,
                columns: &columns,
                rows: &inputs.rows,
                predictions,
            },
        );
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            append_lines(&dir.join(INFERENCES_FILE), &buf)
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Self::err(e.into(), "record", monitor))
    }

    async fn drift(&self, monitor: &str, config: &DriftConfig) -> Result<DriftReport> {
        let dir = self.monitor_dir(monitor)?;
        let name = monitor.to_owned();
        let config = config.clone();
        tokio::task::spawn_blocking(move || -> Result<DriftReport> {
            let baseline = Self::read_baseline(&dir, &name)?;
            let Recorded {
                columns: current,
                predictions: current_predictions,
                samples,
            } = Self::read_inferences(&dir)?;
            let enough = samples >= config.min_samples && samples > 0;
            let mut features = Vec::new();
            for (j, column) in baseline.columns.iter().enumerate() {
                // Drift statistics here are numeric; string features are not scored.
                if column.dtype == DType::String {
                    continue;
                }
                let base: Vec<f64> = baseline
                    .rows
                    .iter()
                    .filter_map(|r| r.get(j).and_then(Value::as_f64))
                    .collect();
                let cur = current.get(&column.name).map(Vec::as_slice).unwrap_or(&[]);
                features.push(score(&column.name, &base, cur, &config, enough));
            }
            let prediction = (!baseline.predictions.is_empty()).then(|| {
                score(
                    "prediction",
                    &baseline.predictions,
                    &current_predictions,
                    &config,
                    enough,
                )
            });
            let drifted = features.iter().any(|f| f.drifted)
                || prediction.as_ref().is_some_and(|p| p.drifted);
            Ok(DriftReport {
                monitor: name,
                computed_ms: now_ms(),
                samples,
                features,
                prediction,
                drifted,
            })
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Self::err(e, "drift", monitor))
    }

    async fn publish(&self, monitor: &str, metrics: &[(String, f64)]) -> Result<()> {
        let dir = self.monitor_dir(monitor)?;
        let name = monitor.to_owned();
        let metrics = metrics.to_vec();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let json_path = dir.join(METRICS_JSON);
            // Gauges accumulate across calls: a later publish updates, never forgets, others.
            let mut gauges: BTreeMap<String, f64> = match std::fs::read(&json_path) {
                Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
                Err(_) => BTreeMap::new(),
            };
            for (k, v) in metrics {
                gauges.insert(k, v);
            }
            let json =
                serde_json::to_vec_pretty(&gauges).map_err(|e| Error::internal(e.to_string()))?;
            write_atomic(&json_path, &json)?;
            write_atomic(
                &dir.join(METRICS_PROM),
                render_prom(&name, &gauges).as_bytes(),
            )
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Self::err(e, "publish", monitor))
    }

    async fn delete(&self, monitor: &str) -> Result<()> {
        // Only this monitor's data: the directory may hold the provisioner's files too.
        let dir = self.monitor_dir(monitor)?;
        for file in [
            BASELINE_FILE,
            INFERENCES_FILE,
            INFERENCES_ROTATED,
            METRICS_JSON,
            METRICS_PROM,
        ] {
            let path = dir.join(file);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Self::err(
                        Error::from(e).resource(path.display().to_string()),
                        "delete",
                        monitor,
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_sanitized() {
        assert_eq!(metric_name("drift.psi-x"), "galley_drift_psi_x");
        let text = render_prom("m\"1", &BTreeMap::from([("a b".to_owned(), 1.5)]));
        assert!(
            text.contains("galley_a_b{monitor=\"m\\\"1\"} 1.5"),
            "{text}"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ok-name_1").is_ok());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
