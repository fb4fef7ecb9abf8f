//! The [`Monitor`] contract: drift against the training baseline flags exactly the features
//! whose distribution moved, gives no verdict below `min_samples`, and metrics publish.
//!
//! The data is drawn from seeded normals, so every run sees the same numbers: a moved feature
//! is shifted by three standard deviations (PSI ≫ 1, KS ≈ 0.87) and a still one is redrawn
//! from its own distribution (PSI ≈ 0.01, KS ≈ 0.05), far on either side of the thresholds.

use std::sync::Arc;

use galley_core::capability::Feature;
use galley_core::stages::{DriftConfig, DriftMethod, DriftReport, Monitor};
use galley_core::table::Column;
use galley_core::{DType, ErrorKind, Table, Value};

use crate::runner::{Case, Report, TestResult, run_cases};
use crate::support::{Normal, expect_kind, unique};
use crate::{case, ensure_eq};

type Mon = Arc<dyn Monitor>;

pub fn cases() -> Vec<Case<Mon>> {
    vec![
        case!(psi_flags_only_the_shifted_feature, needs = [Feature::DriftPsi]),
        case!(ks_flags_only_the_shifted_feature, needs = [Feature::DriftKs]),
        case!(unshifted_data_shows_no_drift, needs = [Feature::DriftPsi]),
        case!(no_verdict_below_min_samples, needs = [Feature::DriftPsi]),
        case!(prediction_drift_is_detected, needs = [Feature::PredictionDrift, Feature::DriftPsi]),
        case!(record_refuses_mismatched_predictions),
        case!(drift_without_baseline_is_not_found),
        case!(delete_forgets_the_monitor),
        case!(publish_is_accepted),
    ]
}

pub async fn run_monitor(monitor: Mon) -> Report {
    let caps = monitor.capabilities();
    run_cases("monitor", monitor, &caps, cases()).await
}

const STILL: &str = "alcohol";
const MOVED: &str = "sulphates";

fn psi(threshold: f64, min_samples: usize) -> DriftConfig {
    DriftConfig { method: DriftMethod::Psi, threshold, min_samples }
}

/// `n` rows of (STILL, MOVED) and predictions = 2·STILL + 1, so moving MOVED leaves the
/// predictions where they were.
fn sample(seed: u64, n: usize, moved_mean: f64) -> anyhow::Result<(Table, Vec<f64>)> {
    let mut rng = Normal::seeded(seed);
    let mut t = Table::new(vec![Column::new(STILL, DType::Float), Column::new(MOVED, DType::Float)]);
    let mut preds = Vec::with_capacity(n);
    for _ in 0..n {
        let (still, moved) = (rng.sample(10.0, 1.0), rng.sample(moved_mean, 1.0));
        t.push(vec![Value::Float(still), Value::Float(moved)])?;
        preds.push(2.0 * still + 1.0);
    }
    Ok((t, preds))
}

/// Sets a 2,000-row baseline on a fresh monitor, runs `body`, then deletes the monitor.
async fn with_baseline<F: Future<Output = TestResult>>(m: Mon, body: impl FnOnce(Mon, String) -> F) -> TestResult {
    let name = unique("gtk-mon-");
    let out = async {
        let (t, p) = sample(1, 2000, 0.0)?;
        m.set_baseline(&name, &t, &p).await?;
        body(m.clone(), name.clone()).await
    }
    .await;
    let _ = m.delete(&name).await;
    out
}

fn feature<'a>(r: &'a DriftReport, name: &str) -> anyhow::Result<&'a galley_core::stages::FeatureDrift> {
    r.features.iter().find(|f| f.feature == name).ok_or_else(|| {
        anyhow::anyhow!("the report has no entry for `{name}`; it has {:?}", r.features.iter().map(|f| &f.feature).collect::<Vec<_>>())
    })
}

async fn flags_only_the_shifted_feature(m: Mon, config: DriftConfig) -> TestResult {
    with_baseline(m, |m, name| async move {
        let (t, p) = sample(2, 1000, 3.0)?;
        m.record(&name, &t, &p).await?;
        let r = m.drift(&name, &config).await?;
        ensure_eq!(r.monitor, name, "report.monitor");
        ensure_eq!(r.samples, 1000, "report.samples");
        ensure_eq!(r.drifted_features(), vec![MOVED], "drifted features ({:?}, threshold {})", config.method, config.threshold);
        anyhow::ensure!(r.drifted, "report.drifted is false although `{MOVED}` drifted");
        let (still, moved) = (feature(&r, STILL)?, feature(&r, MOVED)?);
        let scores = |f: &galley_core::stages::FeatureDrift| -> anyhow::Result<(f64, f64)> {
            match (f.psi, f.ks) {
                (Some(p), Some(k)) => Ok((p, k)),
                _ => anyhow::bail!("`{}` has no scores over {} samples (min_samples {}): {f:?}", f.feature, r.samples, r.min_samples),
            }
        };
        let ((moved_psi, moved_ks), (still_psi, still_ks)) = (scores(moved)?, scores(still)?);
        let (score_moved, score_still) = match config.method {
            DriftMethod::Psi => (moved_psi, still_psi),
            DriftMethod::Ks => (moved_ks, still_ks),
        };
        anyhow::ensure!(score_moved > config.threshold, "`{MOVED}` scored {score_moved} ≤ threshold {}", config.threshold);
        anyhow::ensure!(score_still < config.threshold, "`{STILL}` scored {score_still} ≥ threshold {}", config.threshold);
        // Both statistics are reported whatever the method; a 3σ shift moves both.
        anyhow::ensure!(moved_psi > still_psi && moved_ks > still_ks, "scores of the moved vs still feature: {moved:?} vs {still:?}");
        anyhow::ensure!((0.0..=1.0).contains(&moved_ks), "a KS statistic must lie in [0, 1]; got {moved_ks}");
        if let Some(pred) = &r.prediction {
            anyhow::ensure!(!pred.drifted, "predictions depend only on `{STILL}` yet were flagged: {pred:?}");
        }
        Ok(())
    })
    .await
}

pub async fn psi_flags_only_the_shifted_feature(m: Mon) -> TestResult {
    flags_only_the_shifted_feature(m, psi(0.2, 100)).await
}

pub async fn ks_flags_only_the_shifted_feature(m: Mon) -> TestResult {
    flags_only_the_shifted_feature(m, DriftConfig { method: DriftMethod::Ks, threshold: 0.15, min_samples: 100 }).await
}

pub async fn unshifted_data_shows_no_drift(m: Mon) -> TestResult {
    with_baseline(m, |m, name| async move {
        let (t, p) = sample(3, 1000, 0.0)?;
        m.record(&name, &t, &p).await?;
        let r = m.drift(&name, &psi(0.2, 100)).await?;
        ensure_eq!(r.drifted_features(), Vec::<&str>::new(), "drifted features of data from the baseline's distribution");
        anyhow::ensure!(!r.drifted, "report.drifted is true for unshifted data: {r:?}");
        ensure_eq!(r.features.len(), 2, "features in the report");
        Ok(())
    })
    .await
}

pub async fn no_verdict_below_min_samples(m: Mon) -> TestResult {
    with_baseline(m, |m, name| async move {
        let (t, p) = sample(4, 50, 3.0)?;
        m.record(&name, &t, &p).await?;
        let r = m.drift(&name, &psi(0.2, 100)).await?;
        ensure_eq!(r.samples, 50, "report.samples");
        ensure_eq!(r.min_samples, 100, "report.min_samples");
        anyhow::ensure!(!r.enough_data(), "enough_data() with 50 of 100 samples");
        anyhow::ensure!(!r.drifted, "a verdict of drift from 50 samples although min_samples is 100");
        ensure_eq!(r.drifted_features(), Vec::<&str>::new(), "drifted features below min_samples");
        // No scores either: a PSI over a handful of rows is noise, and must not be shown as one.
        anyhow::ensure!(r.features.iter().all(|f| f.psi.is_none() && f.ks.is_none()), "scores below min_samples: {:?}", r.features);
        anyhow::ensure!(r.verdict().contains("not enough data (50 of 100"), "verdict below min_samples: {}", r.verdict());

        // Past the minimum the same shifted data is a verdict.
        let (t, p) = sample(5, 100, 3.0)?;
        m.record(&name, &t, &p).await?;
        let r = m.drift(&name, &psi(0.2, 100)).await?;
        ensure_eq!(r.samples, 150, "report.samples after recording 100 more");
        ensure_eq!(r.drifted_features(), vec![MOVED], "drifted features at 150 samples");
        Ok(())
    })
    .await
}

pub async fn prediction_drift_is_detected(m: Mon) -> TestResult {
    with_baseline(m, |m, name| async move {
        // Inputs as in training, but the model now answers 5 higher: a broken deployment.
        let (t, p) = sample(6, 1000, 0.0)?;
        let shifted: Vec<f64> = p.iter().map(|x| x + 5.0).collect();
        m.record(&name, &t, &shifted).await?;
        let r = m.drift(&name, &psi(0.2, 100)).await?;
        let pred = r.prediction.as_ref().ok_or_else(|| anyhow::anyhow!("report.prediction is None on a platform with PredictionDrift"))?;
        anyhow::ensure!(pred.drifted, "predictions moved by 5σ but were not flagged: {pred:?}");
        anyhow::ensure!(r.drifted, "report.drifted is false although the predictions drifted");
        ensure_eq!(r.drifted_features(), Vec::<&str>::new(), "drifted input features");
        Ok(())
    })
    .await
}

pub async fn record_refuses_mismatched_predictions(m: Mon) -> TestResult {
    with_baseline(m, |m, name| async move {
        let (t, p) = sample(7, 10, 0.0)?;
        expect_kind(m.record(&name, &t, &p[..9]).await, ErrorKind::InvalidInput, "record of 10 rows with 9 predictions")
    })
    .await
}

pub async fn drift_without_baseline_is_not_found(m: Mon) -> TestResult {
    let name = unique("gtk-mon-");
    let out = expect_kind(m.drift(&name, &psi(0.2, 1)).await, ErrorKind::NotFound, "drift of a monitor with no baseline");
    let _ = m.delete(&name).await;
    out
}

pub async fn delete_forgets_the_monitor(m: Mon) -> TestResult {
    let name = unique("gtk-mon-");
    let (t, p) = sample(8, 200, 0.0)?;
    m.set_baseline(&name, &t, &p).await?;
    m.record(&name, &t, &p).await?;
    m.delete(&name).await?;
    expect_kind(m.drift(&name, &psi(0.2, 1)).await, ErrorKind::NotFound, "drift after delete")
}

pub async fn publish_is_accepted(m: Mon) -> TestResult {
    with_baseline(m, |m, name| async move {
        let (t, p) = sample(9, 200, 3.0)?;
        m.record(&name, &t, &p).await?;
        // The gauges the lifecycle publishes: what a real report gives, labels and all.
        let gauges = m.drift(&name, &psi(0.2, 100)).await?.gauges();
        anyhow::ensure!(gauges.iter().any(|g| g.name == "galley_drift_psi" && g.labels.get("feature").map(String::as_str) == Some(MOVED)), "{gauges:?}");
        m.publish(&name, &gauges).await?;
        // Publishing the same gauges again (the next monitoring tick) is fine too.
        m.publish(&name, &gauges).await?;
        Ok(())
    })
    .await
}
