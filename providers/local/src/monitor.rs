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
use std::io::BufRead;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use galley_core::stages::{Described, DriftConfig, DriftReport, Gauge, Monitor, now_ms};
use galley_core::table::{Column, Table, Value};
use galley_core::{Error, Result, Stage};
use serde::{Deserialize, Serialize};

use galley_server::capture::{INFERENCES_FILE, INFERENCES_ROTATED, InferenceLine, InferenceLineRef, METRICS_PROM, append_lines, encode_line};
use galley_core::fs::write_atomic;

pub const BASELINE_FILE: &str = "baseline.json";
pub const METRICS_JSON: &str = "metrics.json";

/// Drift is computed over at most this many of the most recent recorded rows.
pub const MAX_WINDOW_ROWS: usize = 200_000;

#[derive(Debug, Serialize, Deserialize)]
struct Baseline {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    predictions: Vec<f64>,
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
    /// What it declares: local's features, or those of a platform that keeps its monitors here.
    declared: galley_core::Capabilities,
}

impl LocalMonitor {
    /// The same object declared as `platform`'s: a platform that keeps this stage the local
    /// way (onprem's shared directory) proves the declaration with its own suite run.
    pub fn declaring(mut self, platform: galley_core::Capabilities) -> Self {
        self.declared = platform;
        self
    }

    /// Opens (creating it if needed) the directory holding one sub-directory per monitor.
    pub fn open(monitors: impl Into<PathBuf>) -> Result<LocalMonitor> {
        let root = monitors.into();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::from(e).resource(root.display().to_string()))?;
        Ok(LocalMonitor { root, declared: crate::platform::capabilities() })
    }

    /// The directory of monitor `name` (the model server records there when its endpoint's
    /// monitor has the same name).
    pub fn monitor_dir(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name))
    }

    fn err(e: Error, op: &str, name: &str) -> Error {
        e.platform(crate::platform::LOCAL)
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

/// Prometheus's metric and label name rule.
fn prometheus_name(name: &str, label: bool) -> bool {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (!label && c == ':'));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (!label && c == ':'))
}

fn check_gauge(g: &Gauge) -> Result<()> {
    if !prometheus_name(&g.name, false) {
        return Err(Error::invalid(format!("`{}` is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)", g.name)));
    }
    if let Some(l) = g.labels.keys().find(|l| !prometheus_name(l, true) || l.starts_with("__") || *l == "monitor") {
        return Err(Error::invalid(format!("gauge `{}`: `{l}` cannot be a label name here", g.name)));
    }
    Ok(())
}

fn prom_value(value: f64) -> String {
    if value.is_finite() {
        value.to_string()
    } else if value.is_nan() {
        "NaN".into()
    } else if value > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

/// The gauges in Prometheus's text format: each family once, with `# HELP` and `# TYPE`, every
/// series labelled with the monitor.
fn render_prom(monitor: &str, gauges: &[Gauge]) -> String {
    let escape = galley_server::metrics::escape;
    let mut families: BTreeMap<&str, Vec<&Gauge>> = BTreeMap::new();
    for g in gauges {
        families.entry(g.name.as_str()).or_default().push(g);
    }
    let mut out = String::new();
    for (name, series) in families {
        let help = series[0].help.replace('\\', "\\\\").replace('\n', "\\n");
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for g in series {
            let mut labels = format!("monitor=\"{}\"", escape(monitor));
            for (k, v) in &g.labels {
                labels.push_str(&format!(",{k}=\"{}\"", escape(v)));
            }
            out.push_str(&format!("{name}{{{labels}}} {}\n", prom_value(g.value)));
        }
    }
    out
}

impl Described for LocalMonitor {
    fn capabilities(&self) -> galley_core::Capabilities {
        self.declared.clone()
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
            let Baseline { columns, rows, predictions } = Self::read_baseline(&dir, &name)?;
            let Recorded {
                columns: current,
                predictions: current_predictions,
                samples,
            } = Self::read_inferences(&dir)?;
            let baseline = Table { columns, rows };
            Ok(galley_ml::drift_report(&name, &baseline, &predictions, &current, &current_predictions, samples, &config))
        })
        .await
        .map_err(|e| Error::internal(e.to_string()))?
        .map_err(|e| Self::err(e, "drift", monitor))
    }

    async fn publish(&self, monitor: &str, gauges: &[Gauge]) -> Result<()> {
        let dir = self.monitor_dir(monitor)?;
        for g in gauges {
            check_gauge(g).map_err(|e| Self::err(e, "publish", monitor))?;
        }
        let name = monitor.to_owned();
        let gauges = gauges.to_vec();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let json_path = dir.join(METRICS_JSON);
            // Gauges accumulate across calls: a later publish updates (same name and labels),
            // never forgets, the others.
            let mut all: Vec<Gauge> = match std::fs::read(&json_path) {
                Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            for g in gauges {
                match all.iter_mut().find(|o| o.name == g.name && o.labels == g.labels) {
                    Some(o) => *o = g,
                    None => all.push(g),
                }
            }
            let json = serde_json::to_vec_pretty(&all).map_err(|e| Error::internal(e.to_string()))?;
            write_atomic(&json_path, &json)?;
            write_atomic(&dir.join(METRICS_PROM), render_prom(&name, &all).as_bytes())
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
    fn gauges_render_one_family_each_with_help_and_labels() {
        let gauges = vec![
            Gauge::new("galley_drift_psi", "PSI", 0.5).label("feature", "a"),
            Gauge::new("galley_drift_psi", "PSI", 0.25).label("feature", "b\"c"),
            Gauge::new("galley_drift_detected", "1 on drift", 1.0),
        ];
        let text = render_prom("m\"1", &gauges);
        assert_eq!(text.matches("# HELP galley_drift_psi PSI").count(), 1, "{text}");
        assert!(text.contains("galley_drift_psi{monitor=\"m\\\"1\",feature=\"b\\\"c\"} 0.25"), "{text}");
        assert!(text.contains("# TYPE galley_drift_detected gauge\ngalley_drift_detected{monitor=\"m\\\"1\"} 1"), "{text}");
        assert!(check_gauge(&Gauge::new("drift.psi-x", "", 1.0)).is_err());
        assert!(check_gauge(&Gauge::new("galley_x", "", 1.0).label("monitor", "m")).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ok-name_1").is_ok());
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
