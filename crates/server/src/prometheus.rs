//! What a Prometheus server needs to watch Galley's endpoints: a scrape job over file-based
//! service discovery (one targets file per endpoint, rewritten when the endpoint moves), the
//! recording rules for request rate, error ratio and p99 latency, the alerting rules for drift,
//! errors and latency, and unit tests of those rules for `promtool test rules`. Names follow
//! Prometheus's conventions (`level:metric:operations` for recording rules), and the series are
//! the ones this server and the monitors export (`metrics.rs`, `galley_core::stages::monitor`).

use serde_json::{Value as Json, json};

/// The scrape job's name, and the `job` label of every series it scrapes.
pub const JOB: &str = "galley";

/// An alert's thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Share of requests answered 5xx over 5 minutes.
    pub error_ratio: f64,
    /// p99 latency over 5 minutes, seconds.
    pub latency_p99_seconds: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { error_ratio: 0.05, latency_p99_seconds: 0.5 }
    }
}

/// `prometheus.yml`: the scrape job reading `targets/*.json` beside it, and the rule files.
pub fn config(scrape_interval_seconds: u32) -> Json {
    json!({
        "global": { "scrape_interval": format!("{scrape_interval_seconds}s"), "evaluation_interval": format!("{scrape_interval_seconds}s") },
        "rule_files": ["rules/galley.rules.yml"],
        "scrape_configs": [{
            "job_name": JOB,
            "metrics_path": "/metrics",
            "file_sd_configs": [{ "files": ["targets/*.json"], "refresh_interval": "30s" }],
        }],
    })
}

/// The `host:port` Prometheus scrapes for an endpoint served at `url` (`http://host:port/…`).
pub fn host_port(url: &str) -> Option<&str> {
    url.split("://").nth(1).and_then(|rest| rest.split('/').next()).filter(|hp| !hp.is_empty())
}

/// A file-SD targets file: the endpoint at `host_port`, labelled with its name.
pub fn targets(endpoint: &str, host_port: &str) -> Json {
    json!([{ "targets": [host_port], "labels": { "galley_endpoint": endpoint } }])
}

/// The recording and alerting rules over every endpoint and monitor the server scrapes (one
/// Prometheus per deployment: `galley export prometheus`).
pub fn rules(t: Thresholds) -> Json {
    rule_groups("galley", "", "", t)
}

/// The same rules for one endpoint and its monitor only, in groups named after the endpoint:
/// the file a shared Prometheus loads beside other teams' (onprem's `monitoring.prometheus`).
pub fn endpoint_rules(endpoint: &str, monitor: &str, t: Thresholds) -> Json {
    let quoted = |v: &str| serde_json::to_string(v).expect("a string serializes");
    rule_groups(&format!("galley-{endpoint}"), &format!("endpoint={}", quoted(endpoint)), &format!("monitor={}", quoted(monitor)), t)
}

/// `prefix` names the groups; `endpoint` and `monitor` are label matchers (empty: every series).
fn rule_groups(prefix: &str, endpoint: &str, monitor: &str, t: Thresholds) -> Json {
    let all = |extra: &str| match (endpoint, extra) {
        ("", "") => String::new(),
        ("", x) => format!("{{{x}}}"),
        (e, "") => format!("{{{e}}}"),
        (e, x) => format!("{{{e},{x}}}"),
    };
    let monitor = if monitor.is_empty() { String::new() } else { format!("{{{monitor}}}") };
    json!({ "groups": [
        { "name": format!("{prefix}-serving"), "rules": [
            { "record": "endpoint_variant:galley_requests:rate5m",
              "expr": format!("sum by (endpoint, variant) (rate(galley_requests_total{}[5m]))", all("")) },
            { "record": "endpoint_variant:galley_requests_errors:ratio_rate5m",
              "expr": format!("sum by (endpoint, variant) (rate(galley_requests_total{}[5m])) / sum by (endpoint, variant) (rate(galley_requests_total{}[5m]))", all("code=~\"5..\""), all("")) },
            { "record": "endpoint_variant:galley_request_duration_seconds:p99_5m",
              "expr": format!("histogram_quantile(0.99, sum by (endpoint, variant, le) (rate(galley_request_duration_seconds_bucket{}[5m])))", all("")) },
            { "alert": "GalleyHighErrorRate",
              "expr": format!("endpoint_variant:galley_requests_errors:ratio_rate5m{} > {}", all(""), t.error_ratio),
              "for": "5m",
              "labels": { "severity": "page" },
              "annotations": { "summary": "Endpoint {{ $labels.endpoint }} variant {{ $labels.variant }} answers {{ $value | humanizePercentage }} of requests with 5xx" } },
            { "alert": "GalleyHighLatency",
              "expr": format!("endpoint_variant:galley_request_duration_seconds:p99_5m{} > {}", all(""), t.latency_p99_seconds),
              "for": "10m",
              "labels": { "severity": "warning" },
              "annotations": { "summary": "Endpoint {{ $labels.endpoint }} variant {{ $labels.variant }} has p99 latency {{ $value | humanizeDuration }}" } },
        ]},
        { "name": format!("{prefix}-drift"), "rules": [
            { "alert": DRIFT_ALERT,
              "expr": format!("max by (monitor) (galley_drift_detected{monitor}) == 1"),
              "labels": { "severity": "warning", "galley_trigger": "drift" },
              "annotations": { "summary": "Monitor {{ $labels.monitor }} reports drift: retraining is due" } },
        ]},
    ]})
}

/// The alert that says a monitor sees drift (its `monitor` label names which).
pub const DRIFT_ALERT: &str = "GalleyDriftDetected";

/// `promtool test rules` cases for [`rules`]: errors above the threshold page after five
/// minutes, below it they do not; drift alerts as soon as the gauge says so.
pub fn rule_tests(t: Thresholds) -> Json {
    // 200s at 10/s; 5xx at a rate just above (then just below) the threshold's share.
    let ok_per_min = 600.0;
    let bad_above = (ok_per_min * (t.error_ratio * 2.0) / (1.0 - t.error_ratio * 2.0)).ceil();
    let bad_below = (ok_per_min * (t.error_ratio / 2.0) / (1.0 - t.error_ratio / 2.0)).floor();
    let series = |code: &str, variant: &str, per_min: f64| {
        json!({ "series": format!("galley_requests_total{{endpoint=\"e\",variant=\"{variant}\",code=\"{code}\"}}"), "values": format!("0+{per_min}x30") })
    };
    json!({
        "rule_files": ["galley.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            { "interval": "1m",
              "input_series": [series("200", "v1", ok_per_min), series("500", "v1", bad_above), series("200", "v2", ok_per_min), series("500", "v2", bad_below)],
              "alert_rule_test": [
                  { "eval_time": "3m", "alertname": "GalleyHighErrorRate", "exp_alerts": [] },
                  { "eval_time": "15m", "alertname": "GalleyHighErrorRate", "exp_alerts": [{
                      "exp_labels": { "severity": "page", "endpoint": "e", "variant": "v1" },
                      "exp_annotations": { "summary": format!("Endpoint e variant v1 answers {} of requests with 5xx", humanize_percentage(bad_above / (ok_per_min + bad_above))) } }] },
              ] },
            { "interval": "1m",
              "input_series": [{ "series": "galley_drift_detected{monitor=\"m\",job=\"galley\"}", "values": "0 0 1 1" }],
              "alert_rule_test": [
                  { "eval_time": "1m", "alertname": "GalleyDriftDetected", "exp_alerts": [] },
                  { "eval_time": "2m", "alertname": "GalleyDriftDetected", "exp_alerts": [{
                      "exp_labels": { "severity": "warning", "galley_trigger": "drift", "monitor": "m" },
                      "exp_annotations": { "summary": "Monitor m reports drift: retraining is due" } }] },
              ] },
        ],
    })
}

/// Prometheus's `humanizePercentage`: the ratio × 100 with up to 4 significant digits and `%`.
fn humanize_percentage(ratio: f64) -> String {
    let v = ratio * 100.0;
    let digits = 4 - (v.abs().log10().floor() as i32 + 1);
    let s = format!("{:.*}", digits.max(0) as usize, v);
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s };
    format!("{s}%")
}
