//! Tracking ingest: `metrics` points logged in batches of `batch` through the local tracker's
//! `ExperimentTracker::log_metrics`, as MLflow's `log_batch` does in `bench/peers/tracking.py`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use galley_core::Result;
use galley_core::stages::{ExperimentTracker, Metric};
use galley_local::experiments::LocalExperiments;
use serde_json::{Value, json};

/// Distinct metric keys; each step logs every key once, as a training loop does.
pub const KEYS: usize = 10;
/// A fixed start so both sides write identical timestamps.
const T0_MS: i64 = 1_700_000_000_000;

/// The batches, built before the clock starts (the peer builds its `Metric` objects first too).
pub fn batches(metrics: usize, batch: usize) -> Vec<Vec<Metric>> {
    let points: Vec<Metric> = (0..metrics)
        .map(|i| Metric {
            key: format!("m{}", i % KEYS),
            value: i as f64 * 0.001,
            step: (i / KEYS) as i64,
            timestamp_ms: T0_MS + i as i64,
        })
        .collect();
    points.chunks(batch).map(<[Metric]>::to_vec).collect()
}

pub async fn run(dir: &Path, metrics: usize, batch: usize) -> Result<Value> {
    std::fs::create_dir_all(dir).map_err(|e| galley_core::Error::from(e).resource(dir.display().to_string()))?;
    let db = dir.join("galley-tracking.db");
    let _ = std::fs::remove_file(&db);
    let tracker = LocalExperiments::open(db.clone())?;
    tracker.create_experiment("bench").await?;
    let run = tracker.start_run("bench", Some("ingest"), &BTreeMap::new()).await?;
    let batches = batches(metrics, batch);

    let started = Instant::now();
    for b in &batches {
        tracker.log_metrics(&run, b).await?;
    }
    let seconds = started.elapsed().as_secs_f64();

    // Read back what was written, so a tracker that dropped points cannot look fast.
    let history = tracker.metric_history(&run, "m0").await?;
    let expected = metrics.div_ceil(KEYS);
    if history.len() != expected {
        return Err(galley_core::Error::internal(format!(
            "the tracker in {} holds {} points of `m0`, expected {expected}",
            db.display(),
            history.len()
        )));
    }
    Ok(json!({
        "metrics": metrics,
        "batch": batch,
        "seconds": seconds,
        "metrics_per_s": metrics as f64 / seconds,
        "db": db,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_point_once() {
        let b = batches(2_500, 1_000);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), vec![1_000, 1_000, 500]);
        assert_eq!(b[0][0].key, "m0");
        assert_eq!(b[2][499].step, 249);
        assert_eq!(b[2][499].key, "m9");
    }

    #[tokio::test]
    async fn ingest_writes_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(dir.path(), 200, 50).await.unwrap();
        assert_eq!(report["metrics"], 200);
        assert!(report["metrics_per_s"].as_f64().unwrap() > 0.0);
        let tracker = LocalExperiments::open(dir.path().join("galley-tracking.db")).unwrap();
        let id = tracker.get_experiment("bench").await.unwrap();
        assert!(id.is_some());
    }
}
