//! Drift statistics comparing a feature's training distribution (baseline) with what the
//! model sees in production (current). Non-finite values are ignored; an empty side gives NaN,
//! which callers treat as "not enough data" (monitors also wait for `min_samples`).

/// Share given to a bin with no values, so PSI stays finite (the usual choice in credit-risk
/// practice, where PSI comes from).
pub const PSI_EPSILON: f64 = 1e-4;

/// Population stability index over 10 bins cut at the baseline's deciles (linear
/// interpolation). Repeated decile values merge bins, so heavily discrete data is not split
/// into empty bins. Rule of thumb: < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 large shift.
pub fn psi(baseline: &[f64], current: &[f64]) -> f64 {
    let base = sorted_finite(baseline);
    let cur = sorted_finite(current);
    if base.is_empty() || cur.is_empty() {
        return f64::NAN;
    }
    let mut edges: Vec<f64> = (1..10).map(|k| quantile(&base, k as f64 / 10.0)).collect();
    edges.dedup();
    let b = bin_shares(&base, &edges);
    let c = bin_shares(&cur, &edges);
    b.iter()
        .zip(&c)
        .map(|(b, c)| {
            let (b, c) = (b.max(PSI_EPSILON), c.max(PSI_EPSILON));
            (c - b) * (c / b).ln()
        })
        .sum()
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical CDFs.
pub fn ks(baseline: &[f64], current: &[f64]) -> f64 {
    let a = sorted_finite(baseline);
    let b = sorted_finite(current);
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        // Step past every copy of the smaller value in both samples before comparing, so ties
        // across samples are handled as in the textbook definition.
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Asymptotic p-value of a two-sample KS statistic `d` for sample sizes `n` and `m`
/// (Kolmogorov distribution with Stephens' small-sample correction, as in Numerical Recipes).
pub fn ks_pvalue(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 || !d.is_finite() {
        return f64::NAN;
    }
    let en = ((n * m) as f64 / (n + m) as f64).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    if lambda < 1e-3 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut sign = 1.0;
    for j in 1..=100 {
        let term = sign * (-2.0 * (j * j) as f64 * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 {
            break;
        }
        sign = -sign;
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

fn sorted_finite(v: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Linear-interpolation quantile of sorted data (NumPy's default, "type 7").
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Shares of `sorted` in bins (-inf, e0], (e0, e1], …, (e_last, +inf).
fn bin_shares(sorted: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    for x in sorted {
        counts[edges.partition_point(|e| e < x)] += 1;
    }
    counts
        .into_iter()
        .map(|c| c as f64 / sorted.len() as f64)
        .collect()
}

/// The drift scorer every monitor uses: the baseline (rows the model was trained on, with
/// the model's predictions for them) against what was recorded since (numeric columns by name,
/// and the predictions), judged by `config`. Below `config.min_samples` inferences no score is
/// computed and nothing is drifted: the report says "not enough data" instead of a verdict.
/// String columns are not scored (the statistics are numeric).
pub fn drift_report(
    monitor: &str,
    baseline: &galley_core::Table,
    baseline_predictions: &[f64],
    current: &std::collections::BTreeMap<String, Vec<f64>>,
    current_predictions: &[f64],
    samples: usize,
    config: &galley_core::stages::DriftConfig,
) -> galley_core::stages::DriftReport {
    use galley_core::stages::{DriftMethod, DriftReport, FeatureDrift};
    let enough = galley_core::stages::enough_samples(samples, config.min_samples);
    let score = |feature: &str, base: &[f64], cur: &[f64]| {
        if !enough || base.is_empty() || cur.is_empty() {
            return FeatureDrift { feature: feature.to_owned(), psi: None, ks: None, drifted: false };
        }
        let (p, k) = (psi(base, cur), ks(base, cur));
        let s = match config.method {
            DriftMethod::Psi => p,
            DriftMethod::Ks => k,
        };
        let finite = |v: f64| v.is_finite().then_some(v);
        FeatureDrift { feature: feature.to_owned(), psi: finite(p), ks: finite(k), drifted: s.is_finite() && s > config.threshold }
    };
    let features: Vec<FeatureDrift> = baseline
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.dtype != galley_core::DType::String)
        .map(|(j, c)| {
            let base: Vec<f64> = baseline.rows.iter().filter_map(|r| r.get(j).and_then(galley_core::Value::as_f64)).collect();
            score(&c.name, &base, current.get(&c.name).map(Vec::as_slice).unwrap_or(&[]))
        })
        .collect();
    let prediction = (!baseline_predictions.is_empty()).then(|| score("prediction", baseline_predictions, current_predictions));
    let drifted = features.iter().any(|f| f.drifted) || prediction.as_ref().is_some_and(|p| p.drifted);
    DriftReport {
        monitor: monitor.to_owned(),
        computed_ms: galley_core::stages::now_ms(),
        samples,
        min_samples: config.min_samples,
        features,
        prediction,
        drifted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_the_same_distribution() {
        let base: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.7).sin()).collect();
        assert!(psi(&base, &base).abs() < 1e-12);
        // A different sample of the same shape stays well under the 0.1 "stable" line.
        let other: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.7 + 0.35).sin()).collect();
        assert!(psi(&base, &other) < 0.1, "{}", psi(&base, &other));
    }

    #[test]
    fn psi_matches_a_hand_computed_shift() {
        // Baseline 1..=10: deciles 1.9, 2.8, …, 9.1 put exactly one value (10%) in each bin.
        // Current: five 1s (first bin, 50%) and five 10s (last bin, 50%), eight empty bins.
        // PSI = 2 × (0.5 − 0.1) ln(0.5/0.1) + 8 × (1e-4 − 0.1) ln(1e-4/0.1)
        //     = 0.8 × 1.6094379 + 8 × 0.0999 × 6.9077553 = 1.2875503 + 5.5206780 = 6.8082283
        let base: Vec<f64> = (1..=10).map(f64::from).collect();
        let cur = [1.0, 1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 10.0, 10.0];
        assert!(
            (psi(&base, &cur) - 6.8082283).abs() < 1e-6,
            "{}",
            psi(&base, &cur)
        );
    }

    #[test]
    fn psi_is_large_for_a_shifted_distribution_and_nan_when_empty() {
        let base: Vec<f64> = (0..500).map(|i| i as f64 / 500.0).collect();
        let shifted: Vec<f64> = base.iter().map(|x| x + 0.5).collect();
        assert!(psi(&base, &shifted) > 0.25);
        assert!(psi(&[], &base).is_nan());
        // Constant baseline: all deciles equal, two bins; no panic and a shift is still seen.
        assert!(psi(&[3.0; 20], &[4.0; 20]) > 1.0);
    }

    #[test]
    fn ks_matches_hand_computed_values() {
        // F_a − F_b after 0.1: .25, 0.2: .5, 0.25: .5−.2, 0.3: .75−.2, 0.35: .75−.4, 0.4: 1−.4 = 0.6 (max)
        let a = [0.1, 0.2, 0.3, 0.4];
        let b = [0.25, 0.35, 0.45, 0.55, 0.65];
        assert!((ks(&a, &b) - 0.6).abs() < 1e-12);
        assert_eq!(ks(&a, &a), 0.0);
        assert_eq!(ks(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        // Ties across samples: both CDFs step together at 2.0.
        assert!((ks(&[1.0, 2.0], &[2.0, 3.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn ks_pvalue_matches_the_kolmogorov_distribution() {
        // Q_KS(1.358) ≈ 0.05 and Q_KS(1.628) ≈ 0.01 (the classic critical values).
        let en = (10_000.0f64 * 10_000.0 / 20_000.0).sqrt();
        let d_for = |lambda: f64| lambda / (en + 0.12 + 0.11 / en);
        assert!((ks_pvalue(d_for(1.358), 10_000, 10_000) - 0.05).abs() < 1e-3);
        assert!((ks_pvalue(d_for(1.628), 10_000, 10_000) - 0.01).abs() < 5e-4);
        assert_eq!(ks_pvalue(0.0, 10, 10), 1.0);
        assert!(ks_pvalue(1.0, 100, 100) < 1e-10);
    }
}
