//! The promotion gate: absolute thresholds and "beat the champion by a margin".
//!
//! Every check adds a sentence to `reasons` whether it passes or fails, so the run log shows
//! why a version was (or was not) promoted.

use std::collections::BTreeMap;

use galley_core::ml::Gate;

use crate::metrics::higher_is_better;

/// Float noise (e.g. 0.1 + 0.2) must not fail a gate whose margin is met exactly.
const TOLERANCE: f64 = 1e-12;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GateDecision {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// Decides whether `candidate` may be promoted. `champion` is the current champion's version
/// number and metrics, if there is one.
pub fn decide(
    gate: &Gate,
    candidate: &BTreeMap<String, f64>,
    champion: Option<(u64, &BTreeMap<String, f64>)>,
) -> GateDecision {
    let metric = gate.metric.as_str();
    let Some(&value) = candidate.get(metric).filter(|v| v.is_finite()) else {
        let available: Vec<&str> = candidate.keys().map(String::as_str).collect();
        return GateDecision {
            passed: false,
            reasons: vec![format!(
                "the candidate has no value for `{metric}` (it has: {})",
                if available.is_empty() {
                    "none".to_owned()
                } else {
                    available.join(", ")
                }
            )],
        };
    };

    let mut passed = true;
    let mut reasons = Vec::new();
    if let Some(floor) = gate.at_least {
        let ok = value >= floor - TOLERANCE;
        passed &= ok;
        let op = if ok { "≥" } else { "<" };
        reasons.push(format!(
            "{metric} {} {op} {} (at_least)",
            num(value),
            num(floor)
        ));
    }
    if let Some(ceiling) = gate.at_most {
        let ok = value <= ceiling + TOLERANCE;
        passed &= ok;
        let op = if ok { "≤" } else { ">" };
        reasons.push(format!(
            "{metric} {} {op} {} (at_most)",
            num(value),
            num(ceiling)
        ));
    }
    if let Some(margin) = gate.beat_champion_by {
        match champion {
            None => reasons.push("no champion yet: nothing to beat".into()),
            Some((version, metrics)) => match metrics.get(metric).filter(|v| v.is_finite()) {
                None => reasons.push(format!(
                    "champion v{version} has no `{metric}` to compare with: comparison skipped"
                )),
                Some(&champ) => {
                    // Positive = better, whichever direction the metric runs.
                    let gain = if higher_is_better(metric) {
                        value - champ
                    } else {
                        champ - value
                    };
                    let ok = gain >= margin - TOLERANCE;
                    passed &= ok;
                    reasons.push(if ok {
                        format!(
                            "beats champion v{version} ({}) by {} ≥ {}",
                            num(champ),
                            num(gain),
                            num(margin)
                        )
                    } else {
                        format!(
                            "does not beat champion v{version} ({}): {metric} {} is {} {}, needs to be {} better",
                            num(champ),
                            num(value),
                            num(gain.abs()),
                            if gain >= 0.0 { "better" } else { "worse" },
                            num(margin)
                        )
                    });
                }
            },
        }
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "{metric} {}: the gate sets no threshold",
            num(value)
        ));
    }
    GateDecision { passed, reasons }
}

/// At most 4 decimals, at least 2: "0.70", "0.7412", "12.50".
fn num(v: f64) -> String {
    let s = format!("{v:.4}");
    let (int, frac) = s.split_once('.').unwrap_or((&s, ""));
    let frac = frac.trim_end_matches('0');
    format!("{int}.{frac:0<2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(metric: &str, at_least: Option<f64>, at_most: Option<f64>, beat: Option<f64>) -> Gate {
        Gate {
            metric: metric.into(),
            at_least,
            at_most,
            beat_champion_by: beat,
        }
    }
    fn m(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn absolute_thresholds() {
        let g = gate("accuracy", Some(0.70), None, None);
        let d = decide(&g, &m(&[("accuracy", 0.74)]), None);
        assert!(d.passed);
        assert_eq!(d.reasons, ["accuracy 0.74 ≥ 0.70 (at_least)"]);
        let d = decide(&g, &m(&[("accuracy", 0.6912)]), None);
        assert!(!d.passed);
        assert_eq!(d.reasons, ["accuracy 0.6912 < 0.70 (at_least)"]);
    }

    #[test]
    fn beat_champion_pass_and_fail() {
        let g = gate("accuracy", Some(0.70), None, Some(0.0));
        let champ = m(&[("accuracy", 0.72)]);
        let d = decide(&g, &m(&[("accuracy", 0.74)]), Some((2, &champ)));
        assert!(d.passed, "{:?}", d.reasons);
        assert_eq!(d.reasons[1], "beats champion v2 (0.72) by 0.02 ≥ 0.00");

        let g = gate("accuracy", None, None, Some(0.05));
        let d = decide(&g, &m(&[("accuracy", 0.74)]), Some((2, &champ)));
        assert!(!d.passed);
        assert!(
            d.reasons[0].contains("0.02 better, needs to be 0.05 better"),
            "{:?}",
            d.reasons
        );

        let d = decide(&g, &m(&[("accuracy", 0.74)]), None);
        assert!(d.passed);
        assert_eq!(d.reasons, ["no champion yet: nothing to beat"]);
    }

    #[test]
    fn lower_is_better_metrics_compare_the_other_way() {
        let g = gate("rmse", None, Some(0.7), Some(0.01));
        let champ = m(&[("rmse", 0.65)]);
        let d = decide(&g, &m(&[("rmse", 0.60)]), Some((3, &champ)));
        assert!(d.passed, "{:?}", d.reasons);
        assert_eq!(
            d.reasons,
            [
                "rmse 0.60 ≤ 0.70 (at_most)",
                "beats champion v3 (0.65) by 0.05 ≥ 0.01"
            ]
        );

        let d = decide(&g, &m(&[("rmse", 0.68)]), Some((3, &champ)));
        assert!(!d.passed);
        assert!(d.reasons[1].contains("0.03 worse"), "{:?}", d.reasons);

        let d = decide(
            &gate("rmse", None, Some(0.5), None),
            &m(&[("rmse", 0.6)]),
            None,
        );
        assert!(!d.passed);
        assert_eq!(d.reasons, ["rmse 0.60 > 0.50 (at_most)"]);
    }

    #[test]
    fn missing_metric_fails_and_names_what_exists() {
        let d = decide(
            &gate("f1", Some(0.5), None, None),
            &m(&[("accuracy", 0.9)]),
            None,
        );
        assert!(!d.passed);
        assert!(d.reasons[0].contains("no value for `f1`") && d.reasons[0].contains("accuracy"));
    }
}
