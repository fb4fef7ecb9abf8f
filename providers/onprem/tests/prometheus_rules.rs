//! The rules file `monitoring.prometheus` loads into a shared Prometheus, checked by
//! Prometheus's own `promtool`: the same rule unit tests `galley export prometheus` ships pass
//! for the endpoint-scoped rules, and series of another endpoint and monitor on the same
//! server raise no alert in this endpoint's groups.

use galley_server::prometheus::{Thresholds, endpoint_rules, rule_tests};
use serde_json::json;

#[test]
fn endpoint_rules_pass_promtool_and_ignore_the_neighbours() {
    let promtool = std::env::var("GALLEY_PROMTOOL").expect("GALLEY_PROMTOOL (set by `scripts/stack up local`): Prometheus's promtool");
    let dir = tempfile::tempdir().unwrap();
    let t = Thresholds::default();
    std::fs::write(dir.path().join("galley.rules.yml"), galley_blueprint::emit::to_yaml(&endpoint_rules("e", "m", t))).unwrap();
    let mut tests = rule_tests(t);
    // A neighbour: endpoint `other` all 5xx, monitor `other` drifting. This file's alerts stay quiet.
    tests["tests"].as_array_mut().unwrap().push(json!({
        "interval": "1m",
        "input_series": [
            { "series": "galley_requests_total{endpoint=\"other\",variant=\"v1\",code=\"500\"}", "values": "0+600x30" },
            { "series": "galley_drift_detected{monitor=\"other\",job=\"galley\"}", "values": "1 1 1 1" },
        ],
        "alert_rule_test": [
            { "eval_time": "15m", "alertname": "GalleyHighErrorRate", "exp_alerts": [] },
            { "eval_time": "3m", "alertname": "GalleyDriftDetected", "exp_alerts": [] },
        ],
    }));
    std::fs::write(dir.path().join("tests.yml"), galley_blueprint::emit::to_yaml(&tests)).unwrap();
    let run = |args: &[&str]| std::process::Command::new(&promtool).current_dir(dir.path()).args(args).output().unwrap();
    let said = |o: &std::process::Output| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let checked = run(&["check", "rules", "galley.rules.yml"]);
    assert!(checked.status.success(), "{}", said(&checked));
    let tested = run(&["test", "rules", "tests.yml"]);
    assert!(tested.status.success(), "{}", said(&tested));

    // Teeth: the unscoped rules alert on the neighbour, so the same cases fail for them.
    std::fs::write(dir.path().join("galley.rules.yml"), galley_blueprint::emit::to_yaml(&galley_server::prometheus::rules(t))).unwrap();
    assert!(!run(&["test", "rules", "tests.yml"]).status.success(), "promtool passed unscoped rules against a neighbour's series");
}
