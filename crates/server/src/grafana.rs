//! A Grafana dashboard for one endpoint and its monitor: request rate, error ratio and p99
//! latency by variant (with the alert thresholds of `prometheus.rs` drawn on them), requests in
//! flight and the versions served; the drift verdict, per-feature PSI and KS statistics,
//! prediction drift and the samples counted toward a verdict.
//!
//! It is Grafana's dashboard JSON model (schema v1, what the UI's import, the HTTP API and file
//! provisioning read), checked against Grafana's own JSON Schemas in the tests. The data source
//! is a dashboard variable (`$datasource`, any Prometheus), so one file imports anywhere. The
//! queries read the raw series this server and the monitors export, not the recording rules, so
//! the dashboard works on a Prometheus that scrapes the endpoint without Galley's rules loaded.

use serde_json::{Value as Json, json};

use crate::prometheus::Thresholds;

/// The schema version of the dashboard model written (Grafana 10.4 and later read it as is).
pub const SCHEMA_VERSION: u32 = 39;
/// Grafana's limit on a dashboard uid.
const UID_MAX: usize = 40;

/// What the drift panels draw as the line past which the monitor calls drift.
#[derive(Debug, Clone, Copy)]
pub struct DriftLine {
    /// The blueprint's `monitoring.drift.threshold`, on the statistic its method computes.
    pub threshold: f64,
    /// True when the method is PSI (the threshold goes on the PSI panel), false for KS.
    pub psi: bool,
}

/// The dashboard for `endpoint` (its series carry `endpoint="…"`) and `monitor` (`monitor="…"`).
pub fn dashboard(endpoint: &str, monitor: &str, alerts: Thresholds, drift: DriftLine) -> Json {
    let e = matcher("endpoint", endpoint);
    let m = matcher("monitor", monitor);
    let requests =
        format!("sum by (variant) (rate(galley_requests_total{{{e}}}[$__rate_interval]))");
    let errors = format!(
        "sum by (variant) (rate(galley_requests_total{{{e},code=~\"5..\"}}[$__rate_interval]))"
    );
    let p99 = format!(
        "histogram_quantile(0.99, sum by (variant, le) (rate(galley_request_duration_seconds_bucket{{{e}}}[$__rate_interval])))"
    );
    let mut panels = Vec::new();
    let mut ids = 1..;
    let mut id = || ids.next().expect("unbounded");
    panels.push(row(id(), "Serving", 0));
    panels.push(timeseries(
        id(),
        "Requests per second",
        pos(0, 1, 8),
        "reqps",
        None,
        &[(&requests, "{{variant}}")],
    ));
    panels.push(timeseries(
        id(),
        "Error ratio (5xx)",
        pos(8, 1, 8),
        "percentunit",
        Some(alerts.error_ratio),
        &[(&format!("{errors} / {requests}"), "{{variant}}")],
    ));
    panels.push(timeseries(
        id(),
        "Latency p99",
        pos(16, 1, 8),
        "s",
        Some(alerts.latency_p99_seconds),
        &[(&p99, "{{variant}}")],
    ));
    panels.push(stat(
        id(),
        "Requests in flight",
        pos(0, 9, 6),
        "short",
        &[(
            &format!("sum(galley_requests_in_flight{{{e}}})"),
            "in flight",
        )],
        None,
    ));
    panels.push(stat(
        id(),
        "Versions served",
        pos(6, 9, 18),
        "short",
        &[(
            &format!("galley_model_info{{{e}}}"),
            "{{variant}} v{{version}}",
        )],
        None,
    ));
    panels.push(row(id(), "Drift", 14));
    let verdict = json!([{ "type": "value", "options": {
        "0": { "text": "no drift", "color": "green", "index": 0 },
        "1": { "text": "drift", "color": "red", "index": 1 },
    } }]);
    panels.push(stat(
        id(),
        "Drift verdict",
        pos(0, 15, 6),
        "none",
        &[(&format!("max(galley_drift_detected{{{m}}})"), "verdict")],
        Some(verdict),
    ));
    panels.push(stat(
        id(),
        "Samples toward a verdict",
        pos(6, 15, 6),
        "short",
        &[
            (&format!("max(galley_drift_samples{{{m}}})"), "recorded"),
            (&format!("max(galley_drift_min_samples{{{m}}})"), "needed"),
        ],
        None,
    ));
    panels.push(timeseries(
        id(),
        "Prediction drift (PSI)",
        pos(12, 15, 12),
        "none",
        drift.psi.then_some(drift.threshold),
        &[(
            &format!("max(galley_prediction_drift_psi{{{m}}})"),
            "predictions",
        )],
    ));
    panels.push(timeseries(
        id(),
        "Feature drift (PSI)",
        pos(0, 23, 12),
        "none",
        drift.psi.then_some(drift.threshold),
        &[(
            &format!("max by (feature) (galley_drift_psi{{{m}}})"),
            "{{feature}}",
        )],
    ));
    panels.push(timeseries(
        id(),
        "Feature drift (KS statistic)",
        pos(12, 23, 12),
        "none",
        (!drift.psi).then_some(drift.threshold),
        &[(
            &format!("max by (feature) (galley_drift_ks_statistic{{{m}}})"),
            "{{feature}}",
        )],
    ));
    json!({
        "uid": uid(endpoint),
        "title": format!("Galley · {endpoint}"),
        "description": format!("Serving and drift of Galley's endpoint `{endpoint}` (monitor `{monitor}`), written by `galley export grafana`."),
        "tags": ["galley", "mlops"],
        "timezone": "browser",
        "editable": true,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": { "from": "now-6h", "to": "now" },
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "templating": { "list": [{
            "type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
            "hide": 0, "refresh": 1, "current": { "text": "default", "value": "default" },
        }] },
        "annotations": { "list": [{
            "builtIn": 1, "name": "Annotations & Alerts", "enable": true, "hide": true,
            "iconColor": "rgba(0, 211, 255, 1)", "type": "dashboard",
            "datasource": { "type": "grafana", "uid": "-- Grafana --" },
        }] },
        "panels": panels,
    })
}

/// `name="value"`, the value quoted as PromQL reads a string (JSON's escapes are a subset).
fn matcher(name: &str, value: &str) -> String {
    format!(
        "{name}={}",
        serde_json::to_string(value).expect("a string serializes")
    )
}

/// A uid Grafana accepts (at most 40 of `[A-Za-z0-9_-]`), stable for the endpoint.
fn uid(endpoint: &str) -> String {
    let clean: String = endpoint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let uid = format!("galley-{clean}");
    if uid.len() <= UID_MAX && clean == endpoint {
        return uid;
    }
    // Too long or rewritten: a digest of the real name keeps two endpoints apart.
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(endpoint.as_bytes())[..4]);
    format!("{}-{digest}", &uid[..uid.len().min(UID_MAX - 9)])
}

fn pos(x: u32, y: u32, w: u32) -> Json {
    json!({ "x": x, "y": y, "w": w, "h": 8 })
}

fn row(id: u32, title: &str, y: u32) -> Json {
    json!({ "type": "row", "id": id, "title": title, "collapsed": false, "panels": [], "gridPos": { "x": 0, "y": y, "w": 24, "h": 1 } })
}

fn datasource() -> Json {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

fn targets(queries: &[(&str, &str)]) -> Json {
    let refs = ["A", "B", "C", "D"];
    queries
        .iter()
        .zip(refs)
        .map(|((expr, legend), ref_id)| json!({ "refId": ref_id, "datasource": datasource(), "expr": expr, "legendFormat": legend, "range": true, "editorMode": "code" }))
        .collect()
}

/// Green below `line`, red from it on (Grafana's first step has no value: everything below).
fn thresholds(line: Option<f64>) -> Json {
    let mut steps = vec![json!({ "value": null, "color": "green" })];
    steps.extend(line.map(|v| json!({ "value": v, "color": "red" })));
    json!({ "mode": "absolute", "steps": steps })
}

fn timeseries(
    id: u32,
    title: &str,
    grid: Json,
    unit: &str,
    line: Option<f64>,
    queries: &[(&str, &str)],
) -> Json {
    let style = if line.is_some() { "dashed" } else { "off" };
    json!({
        "type": "timeseries", "id": id, "title": title, "gridPos": grid, "datasource": datasource(),
        "targets": targets(queries),
        "options": {
            "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": [] },
            "tooltip": { "mode": "multi", "sort": "desc" },
        },
        "fieldConfig": {
            "defaults": {
                "unit": unit, "min": 0, "color": { "mode": "palette-classic" }, "thresholds": thresholds(line),
                "custom": { "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "thresholdsStyle": { "mode": style } },
            },
            "overrides": [],
        },
    })
}

fn stat(
    id: u32,
    title: &str,
    grid: Json,
    unit: &str,
    queries: &[(&str, &str)],
    mappings: Option<Json>,
) -> Json {
    let grid = json!({ "x": grid["x"], "y": grid["y"], "w": grid["w"], "h": 5 });
    json!({
        "type": "stat", "id": id, "title": title, "gridPos": grid, "datasource": datasource(),
        "targets": targets(queries),
        "options": {
            "graphMode": "none", "colorMode": "value", "justifyMode": "auto", "textMode": "value_and_name",
            "wideLayout": true, "showPercentChange": false, "percentChangeColorMode": "standard", "orientation": "auto",
            "reduceOptions": { "calcs": ["lastNotNull"], "values": false, "fields": "" },
        },
        "fieldConfig": {
            "defaults": { "unit": unit, "mappings": mappings.unwrap_or_else(|| json!([])), "thresholds": thresholds(None), "color": { "mode": "thresholds" } },
            "overrides": [],
        },
    })
}
