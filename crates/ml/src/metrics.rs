//! Evaluation metrics. A metric that is undefined for the data (ROC AUC with one class in the
//! test set, R² of a constant target) is left out rather than reported as NaN, which JSON
//! cannot carry and a gate could not compare.

use std::collections::BTreeMap;

use galley_core::ml::Task;

use galley_core::Result;

use crate::formats::Model;
use crate::prepare::Frame;

/// Probabilities are clipped to [EPS, 1 - EPS] for log loss, as scikit-learn does.
const LOG_LOSS_EPS: f64 = 1e-15;

/// Classification: accuracy, precision, recall, f1, roc_auc, log_loss (positive class 1).
/// Regression: rmse, mae, r2. Scored through the same [`Model`] the endpoint serves, so the
/// gate judges exactly what is deployed; accuracy and its kin count the model's own labels.
pub fn evaluate(model: &Model, test: &Frame) -> Result<BTreeMap<String, f64>> {
    let scored = model.score_matrix(&test.x)?;
    Ok(match model.task() {
        Task::Classification => classification(&scored.scores, &scored.labels, &test.y),
        Task::Regression => regression(&scored.scores, &test.y),
    })
}

/// Whether a larger value of `metric` is better (false for error metrics).
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "rmse" | "mae" | "mse" | "log_loss")
}

/// Metrics from scores (probability of class 1), the model's 0/1 labels and the true 0/1 labels.
pub fn classification(scores: &[f64], labels: &[f64], y: &[f64]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if y.is_empty() {
        return m;
    }
    let (mut tp, mut fp, mut tn, mut fneg) = (0.0, 0.0, 0.0, 0.0);
    for (l, t) in labels.iter().zip(y) {
        match (*l == 1.0, *t == 1.0) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, false) => tn += 1.0,
            (false, true) => fneg += 1.0,
        }
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fneg);
    m.insert("accuracy".into(), (tp + tn) / y.len() as f64);
    m.insert("precision".into(), precision);
    m.insert("recall".into(), recall);
    m.insert(
        "f1".into(),
        ratio(2.0 * precision * recall, precision + recall),
    );
    if let Some(auc) = roc_auc(scores, y) {
        m.insert("roc_auc".into(), auc);
    }
    let log_loss = scores
        .iter()
        .zip(y)
        .map(|(s, t)| {
            let p = s.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
            -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
        })
        .sum::<f64>()
        / y.len() as f64;
    if log_loss.is_finite() {
        m.insert("log_loss".into(), log_loss);
    }
    m
}

/// Area under the ROC curve as the Mann–Whitney U statistic, ties counted half. None when the
/// labels hold only one class.
pub fn roc_auc(scores: &[f64], y: &[f64]) -> Option<f64> {
    let mut pairs: Vec<(f64, f64)> = scores.iter().copied().zip(y.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n_pos = pairs.iter().filter(|p| p.1 == 1.0).count() as f64;
    let n_neg = pairs.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return None;
    }
    // Sum of the (average, for ties) ranks of the positives.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += pairs[i..=j].iter().filter(|p| p.1 == 1.0).count() as f64 * avg_rank;
        i = j + 1;
    }
    Some((rank_sum - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg))
}

pub fn regression(pred: &[f64], y: &[f64]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if y.is_empty() {
        return m;
    }
    let n = y.len() as f64;
    let sse: f64 = pred.iter().zip(y).map(|(p, t)| (p - t).powi(2)).sum();
    m.insert("rmse".into(), (sse / n).sqrt());
    m.insert(
        "mae".into(),
        pred.iter().zip(y).map(|(p, t)| (p - t).abs()).sum::<f64>() / n,
    );
    let mean = y.iter().sum::<f64>() / n;
    let sst: f64 = y.iter().map(|t| (t - mean).powi(2)).sum();
    if sst > 0.0 {
        m.insert("r2".into(), 1.0 - sse / sst);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_metrics_match_hand_counts() {
        // tp = 2 (0.9, 0.6), fp = 1 (0.7), tn = 1 (0.2), fn = 1 (0.4)
        let s = [0.9, 0.6, 0.7, 0.2, 0.4];
        let y = [1.0, 1.0, 0.0, 0.0, 1.0];
        let labels: Vec<f64> = s.iter().map(|s| if *s >= 0.5 { 1.0 } else { 0.0 }).collect();
        let m = classification(&s, &labels, &y);
        assert!((m["accuracy"] - 0.6).abs() < 1e-12);
        assert!((m["precision"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m["recall"] - 2.0 / 3.0).abs() < 1e-12);
        assert!((m["f1"] - 2.0 / 3.0).abs() < 1e-12);
        // Positive/negative pairs ranked correctly: (0.9,0.7) (0.9,0.2) (0.6,0.2) (0.4,0.2) = 4 of 6.
        assert!((m["roc_auc"] - 4.0 / 6.0).abs() < 1e-12);
        let ll =
            -((0.9f64).ln() + (0.6f64).ln() + (0.3f64).ln() + (0.8f64).ln() + (0.4f64).ln()) / 5.0;
        assert!((m["log_loss"] - ll).abs() < 1e-12);
    }

    #[test]
    fn auc_counts_ties_half_and_is_undefined_for_one_class() {
        assert_eq!(roc_auc(&[0.5, 0.5], &[1.0, 0.0]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.9], &[1.0, 1.0]), None);
    }

    #[test]
    fn regression_metrics() {
        let m = regression(&[1.0, 2.0, 4.0], &[1.0, 3.0, 3.0]);
        assert!((m["rmse"] - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((m["mae"] - 2.0 / 3.0).abs() < 1e-12);
        // sst = (1-7/3)^2 + 2(3-7/3)^2 = 16/9 + 8/9 = 24/9; r2 = 1 - 2 / (24/9) = 0.25
        assert!((m["r2"] - 0.25).abs() < 1e-12);
        assert!(
            !higher_is_better("rmse") && !higher_is_better("log_loss") && higher_is_better("r2")
        );
    }
}
